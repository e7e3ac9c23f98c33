"""A TLS client through a CONNECT tunnel, with Python's ssl module, that
chooses what a proxy must judge: the CONNECT target, the server name (SNI),
and how its ClientHello travels.

    tunnel_tls_client.py PROXY_HOST:PORT CONNECT_TARGET SNI CA_FILE [SPLIT]

SPLIT is how the ClientHello is sent: "whole" (default), "segments" (its
bytes in 40-byte TCP segments, 30 ms apart) or "records" (re-framed into
TLS records of 64 bytes each, then sent whole). After the handshake it
sends `GET / HTTP/1.1` for the SNI and prints the status line; or
"ERROR <what>" when the handshake or the request fails.
"""
import socket
import ssl
import sys
import time

from tunnel import connect_tunnel


def reframe(records, size):
    """The handshake bytes of `records` in new records of `size` bytes."""
    payload = b""
    while records:
        length = int.from_bytes(records[3:5], "big")
        payload += records[5 : 5 + length]
        records = records[5 + length :]
    out = b""
    for at in range(0, len(payload), size):
        chunk = payload[at : at + size]
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
    return out


def send_hello(sock, hello, split):
    if split == "records":
        sock.sendall(reframe(hello, 64))
    elif split == "segments":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for at in range(0, len(hello), 40):
            sock.sendall(hello[at : at + 40])
            time.sleep(0.03)
    else:
        sock.sendall(hello)


def main():
    proxy, target, sni, ca_file = sys.argv[1:5]
    split = sys.argv[5] if len(sys.argv) > 5 else "whole"
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    try:
        sock = connect_tunnel(proxy, target)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
        first = True
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if first:
                    send_hello(sock, pending, split)
                    first = False
                elif pending:
                    sock.sendall(pending)
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake")
                incoming.write(data)
        sock.sendall(outgoing.read())
        tls.write(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        sock.sendall(outgoing.read())
        response = b""
        while b"\r\n" not in response:
            try:
                response += tls.read(65536)
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                if not data:
                    break
                incoming.write(data)
        print(response.split(b"\r\n", 1)[0].decode())
    except (OSError, ssl.SSLError) as error:
        print("ERROR", type(error).__name__, error)
        sys.exit(1)


if __name__ == "__main__":
    main()
