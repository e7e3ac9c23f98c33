"""Python `requests` through the gateway, for the integration tests.

    requests_client.py PROXY_URL CA_BUNDLE URL...

Prints "STATUS BODY" per URL (body on one line). The proxy may be http:// or
https:// (TLS to the proxy, verified with the same CA bundle).
"""
import sys

import requests

from fetch_each import fetch_each


def main():
    proxy, bundle, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": proxy, "https": proxy}
    session.verify = bundle
    fetch_each(
        urls,
        lambda url: session.get(url, timeout=20),
        lambda response: f"{response.status_code} "
        + response.text.strip().replace("\n", " "),
    )


if __name__ == "__main__":
    main()
