"""Python `requests` through the gateway, for the integration tests.

    requests_client.py PROXY_URL CA_BUNDLE URL...

Prints "STATUS BODY" per URL (body on one line). The proxy may be http:// or
https:// (TLS to the proxy, verified with the same CA bundle).
"""
import sys

import requests


def main():
    proxy, bundle, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": proxy, "https": proxy}
    session.verify = bundle
    failed = False
    for url in urls:
        try:
            response = session.get(url, timeout=20)
            print(response.status_code, response.text.strip().replace("\n", " "))
        except requests.RequestException as error:
            print("ERROR", type(error).__name__, error)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
