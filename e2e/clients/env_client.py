"""Python `requests` with nothing configured: the proxy and the CA bundle come
from the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE), as in an
injected pod.

    env_client.py URL...

Prints "STATUS BODY-BYTES" per URL, or "ERROR ...". EGRESS_TEST_RESOLVE=
host=addr,... stands in for cluster DNS (the proxy's Service name).
"""
import os
import socket
import sys

import requests

from fetch_each import fetch_each


def stand_in_for_cluster_dns():
    names = dict(
        pair.split("=", 1)
        for pair in os.environ.get("EGRESS_TEST_RESOLVE", "").split(",")
        if "=" in pair
    )
    resolve = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return resolve(names.get(host, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def main():
    stand_in_for_cluster_dns()
    fetch_each(
        sys.argv[1:],
        lambda url: requests.get(url, timeout=20),
        lambda response: f"{response.status_code} {len(response.content)}",
    )


if __name__ == "__main__":
    main()
