"""A WebSocket round trip through the gateway with the `websockets` library.

    websocket_echo.py PROXY_URL CLIENT_CA SERVER_CERT SERVER_KEY HOST

Starts a TLS WebSocket echo server on 127.0.0.1 (certificate for HOST), then
connects to wss://HOST:PORT/ through the proxy (the gateway pins HOST to
127.0.0.1), trusting CLIENT_CA, sends messages and checks the echoes.
Prints "echo ok PORT" on success.
"""
import asyncio
import os
import ssl
import sys

import websockets


async def echo(connection):
    async for message in connection:
        await connection.send(message)


async def main():
    proxy, client_ca, cert, key, host = sys.argv[1:6]
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with websockets.serve(echo, "127.0.0.1", 0, ssl=server_tls) as server:
        port = server.sockets[0].getsockname()[1]
        client_tls = ssl.create_default_context(cafile=client_ca)
        async with websockets.connect(f"wss://{host}:{port}/", ssl=client_tls, proxy=proxy) as ws:
            # Random bytes: permessage-deflate cannot shrink them, so the
            # gateway's byte counts can be checked.
            for message in ["hello", "through the proxy", os.urandom(70000)]:
                await ws.send(message)
                reply = await asyncio.wait_for(ws.recv(), 10)
                assert reply == message, (len(reply), len(message))
        print("echo ok", port)


asyncio.run(main())
