"""A bounded soak of the sanitizer build of `plumb serve`: normal clients (chat and
completions, streamed and whole), hostile ones (broken framing, bad JSON, random bytes),
slow ones (a header line now and then) and ones that leave mid-answer, all at once for
PLUMB_SOAK_SECONDS (default 30), each group from its own loopback address. It fails on any
sanitizer report, any normal request that does not succeed, or /health not answering within
a second at any moment."""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time

import openai

from conftest import SAN_MARKERS
from hostile_requests import FRAMING, JSON_BODIES
from serving import Server, raw, split_responses, stream_raw

SECONDS = float(os.environ.get("PLUMB_SOAK_SECONDS", "30"))


def test_soak_sanitizer_server_under_mixed_clients(plumb_san_bin, real_model):
    s = Server(plumb_san_bin, real_model, "--parallel", "2", "-c", "512", "--queue", "64", "--request-timeout", "3",
               "--max-connections", "48", "--max-connections-per-client", "24", ready_timeout=180)
    stop = threading.Event()
    failures: list[str] = []
    counts = {"normal": 0, "hostile": 0, "slow": 0, "leaving": 0, "health": 0}
    lock = threading.Lock()

    def fail(msg):
        with lock:
            failures.append(msg)

    def count(k):
        with lock:
            counts[k] += 1

    def normal(seed):
        rng = random.Random(seed)
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120.0)
        while not stop.is_set():
            try:
                kind = rng.randrange(3)
                if kind == 0:
                    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Name a fruit."}],
                                                  max_tokens=rng.randrange(1, 12), temperature=0.7, seed=rng.randrange(99))
                    assert r.choices[0].finish_reason in ("stop", "length")
                elif kind == 1:
                    r = c.completions.create(model="x", prompt="Once upon a time", max_tokens=rng.randrange(1, 12))
                    assert r.usage.completion_tokens >= 1
                else:
                    events, _ = stream_raw(s.port, "/v1/completions", {"prompt": "The sea", "max_tokens": 6,
                                                                       "stream": True})
                    assert events[-1] == "[DONE]", events
                count("normal")
            except Exception as e:  # noqa: BLE001 - every failure of a normal request is reported
                fail(f"normal request failed: {e!r}")

    def hostile(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            pick = rng.randrange(3)
            if pick == 0:
                data = rng.choice(FRAMING)[1]
            elif pick == 1:
                body = rng.choice(JSON_BODIES)[1]
                data = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            else:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
            try:
                got = raw(s.port, data, source="127.0.0.2", timeout=8)
                if got:
                    st = split_responses(got)[0][0]
                    if not 400 <= st < 600:
                        fail(f"hostile request got {st}: {data[:60]!r}")
            except OSError:
                pass
            count("hostile")

    def slow():
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", s.port), timeout=10, source_address=("127.0.0.3", 0)) as c:
                    c.sendall(b"POST /v1/completions HTTP/1.1\r\n")
                    for i in range(10):
                        if stop.is_set():
                            break
                        c.sendall(b"X-%d: 1\r\n" % i)
                        time.sleep(0.5)
            except OSError:
                pass  # cut off at the request deadline, as it should be
            count("slow")

    def leaving(seed):
        """Clients that leave mid-answer the ways a server can see: a stream whose socket is
        closed (the next write fails) or a reset. (A client that only shuts down its sending
        side is still waiting for its answer, and gets it: test_serve_hardening.py.)"""
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", s.port), timeout=30, source_address=("127.0.0.4", 0)) as c:
                    stream = rng.random() < 0.6
                    body = json.dumps({"prompt": "Once", "max_tokens": 200, "stream": stream})
                    c.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                              f"{body}".encode())
                    time.sleep(rng.random() * 0.5)
                    if not stream or rng.random() < 0.5:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            count("leaving")

    def health():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                st, _ = raw_get(s.port, "/health")
                took = time.monotonic() - t0
                if st != 200 or took > 1.0:
                    fail(f"/health answered {st} after {took:.2f} s")
            except OSError as e:
                fail(f"/health did not answer within a second: {e!r}")
            count("health")
            time.sleep(0.2)

    threads = ([threading.Thread(target=normal, args=(i,)) for i in range(2)] +
               [threading.Thread(target=hostile, args=(10 + i,)) for i in range(2)] +
               [threading.Thread(target=slow) for _ in range(4)] +
               [threading.Thread(target=leaving, args=(20 + i,)) for i in range(2)] +
               [threading.Thread(target=health)])
    try:
        for t in threads:
            t.start()
        time.sleep(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(150)
        rc = s.stop(180)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    assert not failures, failures[:10]
    assert rc == 0, s.stderr[-4000:]
    assert not any(m in s.stderr for m in SAN_MARKERS), s.stderr[-8000:]
    assert counts["normal"] >= 3 and counts["hostile"] >= 20 and counts["health"] >= SECONDS * 2, counts


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET with a one-second budget for connecting and answering, from the checker's address."""
    with socket.create_connection(("127.0.0.1", port), timeout=1.0, source_address=("127.0.0.5", 0)) as c:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        out = b""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            d = c.recv(4096)
            if not d:
                break
            out += d
    st, _, body = split_responses(out)[0]
    return st, body
