"""A steady client: Python `requests` in a loop for a while, through the
proxy the environment names (as in an injected pod), one Session so
connections are kept alive and reused the way long-running services do.

    load_client.py SECONDS URL

Prints one JSON line: how many requests got a 200, how many did not, the
status codes and the first errors. Anything but a 200 is a failed request.
"""
import json
import sys
import time

import requests


def main():
    seconds, url = float(sys.argv[1]), sys.argv[2]
    session = requests.Session()
    ok, failed, statuses, errors = 0, 0, {}, []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            response = session.get(url, timeout=10)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                ok += 1
                continue
            error = f"status {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        failed += 1
        if len(errors) < 10:
            errors.append(f"{time.monotonic() - started:.1f}s {error}")
    print(json.dumps({
        "ok": ok,
        "failed": failed,
        "statuses": statuses,
        "errors": errors,
        "seconds": round(time.monotonic() - started, 1),
    }))


if __name__ == "__main__":
    main()
