"""Python `requests` with one Session (one kept-alive connection per host, as
long-running services use it), through the proxy in HTTPS_PROXY.

    keepalive_client.py CAFILE URL|WAIT...

prints "STATUS" per URL; WAIT prints "waiting" and reads a line from stdin
before going on, with the connection kept open.
"""
import sys

import requests


def main() -> int:
    cafile, steps = sys.argv[1], sys.argv[2:]
    session = requests.Session()
    for step in steps:
        if step == "WAIT":
            print("waiting", flush=True)
            sys.stdin.readline()
            continue
        response = session.get(step, verify=cafile, timeout=20)
        print(response.status_code, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
