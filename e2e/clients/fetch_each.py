"""The loop the Python clients share: fetch each URL, print one line for it,
and exit 1 if any failed."""
import sys

import requests


def fetch_each(urls, get, describe):
    """Prints describe(response) for get(url) of each URL, or "ERROR" and
    why; exits with 1 if any request failed, else 0."""
    failed = False
    for url in urls:
        try:
            print(describe(get(url)))
        except requests.RequestException as error:
            print("ERROR", type(error).__name__, error)
            failed = True
    sys.exit(1 if failed else 0)
