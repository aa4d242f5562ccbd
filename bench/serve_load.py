#!/usr/bin/env python3
"""serve_load.py — load generator for `plumb serve`: N concurrent clients each send M streamed
completion requests; prints requests/s, aggregate generated tokens/s and the p50/p95 time to
first token and inter-token latency (from the SSE events as they arrive; one event is one
token unless the client lags). Talks to --url, or starts build/plumb serve itself on a free
127.0.0.1 port when --model is given (stopped with SIGTERM at the end). Standard library only.

  bench/serve_load.py --model models/gemma-3-270m-q4_k_m.gguf -c 4 -n 3 --max-tokens 64
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

PROMPTS = ["The history of the printing press", "A guide to growing tomatoes", "Why the sky is blue",
           "The rules of chess", "How bridges are built", "A short story about a lighthouse keeper",
           "The life cycle of stars", "An introduction to rivers"]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def sse_events(r):
    """The JSON events of a streamed OpenAI answer r (an http.client response), in order, up to
    "data: [DONE]"; returns True when [DONE] came (False: the stream ended early)."""
    while True:
        line = r.readline()
        if not line:
            return False
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            return True
        yield json.loads(data)


def one_request(host, port, prompt, max_tokens, timeout):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.monotonic()
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    times, tokens = [], 0
    for ev in sse_events(r):
        if ev.get("usage"):
            tokens = ev["usage"]["completion_tokens"]
        elif ev["choices"] and ev["choices"][0]["text"]:
            times.append(time.monotonic())
    c.close()
    ttft = times[0] - t0 if times else float("nan")
    itl = [b - a for a, b in zip(times, times[1:])]
    return ttft, itl, tokens, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a running server (default: start one with --model)")
    ap.add_argument("--model", help="GGUF model for a server started here")
    ap.add_argument("--binary", default="build/plumb")
    ap.add_argument("--parallel", type=int, default=4, help="slots of a server started here")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("-c", "--clients", type=int, default=4)
    ap.add_argument("-n", "--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    proc = None
    if not a.url:
        if not a.model:
            ap.error("give --url or --model")
        argv = [a.binary, "serve", "-m", a.model, "--port", "0", "--parallel", str(a.parallel), "-c", "1024"]
        if a.threads:
            argv += ["-t", str(a.threads)]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        port = None
        for line in proc.stderr:
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                port = int(m.group(1))
            if "ready" in line or "cannot" in line:
                break
        if port is None or proc.poll() is not None:
            sys.exit("serve_load: the server did not start")
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        a.url = f"http://127.0.0.1:{port}"
    u = urlparse(a.url)
    results, errors = [], []
    lock = threading.Lock()

    def client(i):
        for k in range(a.requests):
            try:
                r = one_request(u.hostname, u.port, PROMPTS[(i + k) % len(PROMPTS)] + f" (part {k + 1})",
                                a.max_tokens, a.timeout)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(repr(e))

    try:
        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)
    ttfts = [r[0] for r in results]
    itls = [x for r in results for x in r[1]]
    tokens = sum(r[2] for r in results)
    print(f"clients {a.clients} x requests {a.requests}, max_tokens {a.max_tokens}: {len(results)} ok, "
          f"{len(errors)} failed in {wall:.1f} s")
    print(f"  requests/s        {len(results) / wall:.2f}")
    print(f"  generated tok/s   {tokens / wall:.1f} (aggregate, {tokens} tokens)")
    print(f"  TTFT p50 / p95    {pct(ttfts, 50) * 1000:.0f} / {pct(ttfts, 95) * 1000:.0f} ms")
    print(f"  ITL  p50 / p95    {pct(itls, 50) * 1000:.1f} / {pct(itls, 95) * 1000:.1f} ms")
    for e in errors[:5]:
        print("  error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
