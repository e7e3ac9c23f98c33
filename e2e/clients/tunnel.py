"""A CONNECT tunnel through a proxy, for the TLS clients beside this file."""
import socket


def connect_tunnel(proxy, target):
    """A socket to `target` (host:port) through `proxy` (host:port), its
    CONNECT answered with 200; ConnectionError otherwise."""
    host, port = proxy.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("proxy closed before answering the CONNECT")
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode()
    if " 200" not in status:
        raise ConnectionError(f"CONNECT refused: {status}")
    return sock
