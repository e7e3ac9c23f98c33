"""Sessions resumed through a CONNECT tunnel, with Python's ssl module: one
session is kept from the first handshake, OTHERS more handshakes of their
own follow (each a new session the proxy may keep), then the first one is
offered again.

    resuming_tls_client.py PROXY_HOST:PORT TARGET_HOST:PORT CA_FILE OTHERS

Prints "first reused=<bool>" for the last handshake (whether the proxy took
the first session back), or "ERROR <what>".
"""
import ssl
import sys

from tunnel import connect_tunnel


def exchange(context, proxy, target, session=None):
    """One request on a new tunnel; the TLS connection's session after it
    (TLS 1.3 sends tickets after the handshake: a response is read first)."""
    host = target.rsplit(":", 1)[0]
    sock = connect_tunnel(proxy, target)
    with context.wrap_socket(sock, server_hostname=host, session=session) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        while tls.recv(4096):
            pass
        return tls.session, tls.session_reused


def main():
    proxy, target, ca_file, others = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    context = ssl.create_default_context(cafile=ca_file)
    try:
        first, _ = exchange(context, proxy, target)
        for _ in range(others):
            exchange(context, proxy, target)
        _, reused = exchange(context, proxy, target, session=first)
        print(f"first reused={reused}")
    except (OSError, ssl.SSLError) as error:
        print("ERROR", type(error).__name__, error)
        sys.exit(1)


if __name__ == "__main__":
    main()
