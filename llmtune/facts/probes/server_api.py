"""Ask the llmtune llama-server on this host whether it serves: /health, a real chat completion
with the API key, and the same request without it (which must be refused with 401).

Standard library only; run by python3 on the host (the API key file is readable by root and the
service user only, so run it as root). The key is sent, never printed.

    python3 server_api.py RECORD_JSON WAIT_S

RECORD_JSON is the service record the deploy writes (port, address, api_key_file, alias). WAIT_S:
how long to wait for /health to answer 200 (a model loading); 0 asks once. Every line starts with
``server-api``; it always exits 0:

- ``server-api unavailable REASON``: no record, nothing to ask.
- ``server-api target URL``
- ``server-api health status=N seconds=S body=...`` (status 0: no connection; ``error=``)
- ``server-api completion status=N seconds=S tokens=N error=...``
- ``server-api unauthorized status=N``: the request without a key (401 expected with a key).
- ``server-api key unreadable REASON`` / ``server-api key none``
"""

import json
import sys
import time
import urllib.error
import urllib.request

LOOPBACK_ANY = ("0.0.0.0", "::", "", "127.0.0.1", "localhost")


def say(*parts):
    print("server-api", *parts, flush=True)


def request(url, body=None, key=None, timeout=120.0):
    """(status, text, seconds): status 0 when there was no HTTP answer at all."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace"), time.monotonic() - start
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), time.monotonic() - start
    except (OSError, ValueError) as exc:
        return 0, "error=" + str(exc).replace("\n", " "), time.monotonic() - start


def one_line(text, limit=200):
    return " ".join(text.split())[:limit]


def main(record_path, wait_s):
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError) as exc:
        say("unavailable", f"no service record {record_path}: {exc}")
        return
    address = record.get("address", "127.0.0.1")
    host = "127.0.0.1" if address in LOOPBACK_ANY else address
    if ":" in host:
        host = "[" + host + "]"
    base = f"http://{host}:{record.get('port')}"
    say("target", base)

    deadline = time.monotonic() + wait_s
    while True:
        status, body, seconds = request(base + "/health", timeout=10.0)
        if status == 200 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    say("health", f"status={status}", f"seconds={seconds:.3f}", "body=" + one_line(body))
    if status != 200:
        return

    key = None
    key_file = record.get("api_key_file") or ""
    if key_file:
        try:
            with open(key_file) as f:
                # --api-key-file: one key per line, '#' starts a comment; the first key serves.
                keys = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
            key = keys[0] if keys else None
            if key is None:
                say("key", "unreadable", "the key file holds no key")
        except OSError as exc:
            say("key", "unreadable", str(exc))
    else:
        say("key", "none")

    body = {
        "model": record.get("alias") or "default",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "temperature": 0,
    }
    url = base + "/v1/chat/completions"
    status, text, seconds = request(url, body, key)
    tokens, error = 0, ""
    if status == 200:
        try:
            tokens = int(json.loads(text).get("usage", {}).get("completion_tokens", 0))
        except (ValueError, AttributeError, TypeError):
            error = "the answer is not a chat completion: " + one_line(text)
    else:
        error = one_line(text)
    say("completion", f"status={status}", f"seconds={seconds:.3f}", f"tokens={tokens}",
        "error=" + error)  # fmt: skip
    if key:
        status, _, _ = request(url, body, None)
        say("unauthorized", f"status={status}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
