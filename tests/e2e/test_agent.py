"""The server's signals for a balancer (HAProxy): the agent-check port (`--agent-port`), which
answers one line in HAProxy's agent protocol and closes ("down #loading" while the model loads,
"up ready W% maxconn:SLOTS" while serving, with W from the free slots, "drain" once SIGTERM
came); the free-slot counts in /health and /metrics; GET /slots with each slot's cached
prompt-prefix hash; and draining on SIGTERM: /health and new requests answer 503 while the
requests in flight finish, then the server exits 0. Garbage, floods and silent clients on the
agent port change nothing. Every wait is bounded; everything runs on loopback."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import SAN_MARKERS
from serving import Server, wait_for

COMP = "/v1/completions"
WORD = re.compile(r"[ \t,]+")


def agent_port(s: Server) -> int:
    m = re.search(r"agent-check on \S+:(\d+)", s.stderr)
    assert m, s.stderr
    return int(m.group(1))


def ask(port: int, send: bytes = b"", timeout: float = 5.0) -> str:
    """One agent check as HAProxy makes it: connect, send agent-send's text (if any), read the
    line until the agent closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        if send:
            c.sendall(send)
        out = b""
        while True:
            d = c.recv(4096)
            if not d:
                break
            out += d
    return out.decode("ascii")


def words(line: str) -> list[str]:
    """The words of an agent line as HAProxy splits them (before any '#' description)."""
    assert line.endswith("\n") and line.count("\n") == 1, repr(line)
    return [w for w in WORD.split(line[:-1].split("#", 1)[0]) if w]


def serving_line(line: str) -> tuple[int, int]:
    """(weight percent, maxconn) of an "up ready W% maxconn:N" line."""
    m = re.fullmatch(r"up ready (\d+)% maxconn:(\d+)\n", line)
    assert m, repr(line)
    return int(m.group(1)), int(m.group(2))


def health(s: Server) -> tuple[int, dict]:
    st, body = s.get("/health")
    return st, json.loads(body)


def fnv1a64(ids: list[int]) -> str:
    h = 0xCBF29CE484222325
    for t in ids:
        for b in int(t).to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def start_stream(port: int, prompt: str, max_tokens: int) -> socket.socket:
    """A streamed completion on a raw socket, returned once its first event has arrived."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stop": [], "stream": True})
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    c.sendall(f"POST {COMP} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    got = b""
    while b"data: " not in got:
        d = c.recv(4096)
        assert d, got
        got += d
    assert got.startswith(b"HTTP/1.1 200"), got
    return c


def read_all(c: socket.socket) -> bytes:
    out = b""
    while True:
        d = c.recv(65536)
        if not d:
            return out
        out += d


@pytest.fixture(scope="module")
def server(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "2", "-c", "1024", "--slots", "--agent-port", "0")
    yield s
    assert s.stop() == 0, s.stderr


# ---- loading ---------------------------------------------------------------------------------------

def test_agent_says_down_while_loading_then_up(plumb_bin, real_model, tmp_path):
    """A model whose open() is held (the tests' LD_PRELOAD library) keeps the server loading:
    the agent says down (with why, which HAProxy shows); once let go, up with all slots free.
    The port comes from the environment here (PLUMB_ARG_AGENT_PORT)."""
    lib = plumb_bin.parent / "libplumb_hold_open.so"
    assert lib.exists(), f"{lib} is built with plumb"
    held = tmp_path / "m.held.gguf"
    held.symlink_to(real_model)
    s = Server(plumb_bin, held, "--parallel", "3", "-c", "256", wait_ready=False,
               env={"LD_PRELOAD": str(lib), "PLUMB_ARG_AGENT_PORT": "0"})
    try:
        port = agent_port(s)
        for _ in range(3):
            line = ask(port)
            assert line == "down #loading\n" and words(line) == ["down"], repr(line)
            time.sleep(0.05)
        assert s.get("/health") == (503, b'{"status":"loading"}')
        Path(str(held) + ".go").touch()
        wait_for(lambda: s.get("/health")[0] == 200, 60, "the model to load")
        assert ask(port) == "up ready 100% maxconn:3\n"
    finally:
        assert s.stop() == 0, s.stderr


# ---- serving: weights from free slots ---------------------------------------------------------------

def test_idle_server_is_up_with_full_weight(server):
    port = agent_port(server)
    line = ask(port)
    assert line == "up ready 100% maxconn:2\n", repr(line)
    assert words(line) == ["up", "ready", "100%", "maxconn:2"]
    assert ask(port, b"plumb-backend/node1\n") == line  # HAProxy's agent-send text is read and dropped
    assert health(server) == (200, {"status": "ok", "slots_idle": 2, "slots_total": 2})
    m = server.metrics()
    assert m["plumb_slots_idle"] == 2 and m["plumb_slots_total"] == 2 and m["plumb_slots_busy"] == 0


def test_weight_falls_as_slots_fill(server):
    """One generating request takes half the weight; two take all but the 1% floor (0% would
    drain the server in HAProxy). Freed slots bring the weight back."""
    port = agent_port(server)
    a = start_stream(server.port, "Once upon a time", 900)
    try:
        assert serving_line(ask(port)) == (50, 2)
        assert health(server) == (200, {"status": "ok", "slots_idle": 1, "slots_total": 2})
        assert server.metrics()["plumb_slots_idle"] == 1
        busy = [x for x in json.loads(server.get("/slots")[1]) if x["is_processing"]]
        assert len(busy) == 1 and busy[0]["state"] in ("prompt", "generating"), busy
        b = start_stream(server.port, "The weather today", 900)
        try:
            assert serving_line(ask(port)) == (1, 2)
            assert health(server) == (200, {"status": "ok", "slots_idle": 0, "slots_total": 2})
            assert server.metrics()["plumb_slots_idle"] == 0
        finally:
            b.close()
    finally:
        a.close()
    wait_for(lambda: ask(port) == "up ready 100% maxconn:2\n", 10, "the slots to be freed")
    assert health(server)[1]["slots_idle"] == 2


# ---- GET /slots ------------------------------------------------------------------------------------------

def test_slots_show_cached_prefix_hash(server):
    """prefix_hash is FNV-1a 64 over the first min(n_cached, 256) token ids (4 bytes each, least
    significant first): a client can match its own prompt, tokenized by POST /tokenize."""
    prompt = "A short prompt about lighthouses"
    st, _, j = server.post(COMP, {"prompt": prompt, "max_tokens": 1, "temperature": 0})
    assert st == 200
    ids = server.post("/tokenize", {"content": prompt, "add_special": True})[2]["tokens"]
    assert len(ids) == j["usage"]["prompt_tokens"], (ids, j["usage"])
    slots = json.loads(server.get("/slots")[1])
    assert len(slots) == 2
    for x in slots:
        assert set(x) >= {"id", "state", "is_processing", "n_ctx", "n_cached", "prefix_hash", "prefix_hash_tokens"}, x
        assert x["prefix_hash_tokens"] == min(x["n_cached"], 256), x
        assert (x["prefix_hash"] is None) == (x["n_cached"] == 0), x
    mine = [x for x in slots if x["prefix_hash"] == fnv1a64(ids)]
    assert len(mine) == 1 and mine[0]["n_cached"] == len(ids) and mine[0]["state"] == "idle", (slots, ids)

    long_prompt = " ".join(f"item{i}" for i in range(200))  # well past 256 tokens
    st, _, j = server.post(COMP, {"prompt": long_prompt, "max_tokens": 1, "temperature": 0})
    assert st == 200 and j["usage"]["prompt_tokens"] > 256
    ids = server.post("/tokenize", {"content": long_prompt, "add_special": True})[2]["tokens"]
    slots = json.loads(server.get("/slots")[1])
    mine = [x for x in slots if x["n_cached"] == len(ids)]
    assert len(mine) == 1 and mine[0]["prefix_hash_tokens"] == 256, slots
    assert mine[0]["prefix_hash"] == fnv1a64(ids[:256])


# ---- hostile clients on the agent port ------------------------------------------------------------------

def test_agent_shrugs_off_garbage_floods_and_silence(server):
    port = agent_port(server)
    good = "up ready 100% maxconn:2\n"
    # HTTP, binary and overlong input: the line is sent anyway, nothing else (never HTTP)
    assert ask(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == good
    assert ask(port, bytes(range(256)) * 2) == good
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        try:
            c.sendall(b"x" * 200000)  # no newline, far past the read cap: the agent hangs up
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            got = read_all(c)
            assert got in (b"", good.encode()), got
        except ConnectionResetError:
            pass
    # a flood of silent connections that never read: later checks are still answered at once
    flood = []
    try:
        for _ in range(300):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        t0 = time.monotonic()
        assert ask(port) == good
        assert time.monotonic() - t0 < 1.0
        assert health(server)[0] == 200
    finally:
        for c in flood:
            c.close()
    # a silent client is answered and let go after a short read timeout
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        t0 = time.monotonic()
        assert read_all(c) == good.encode()
        assert time.monotonic() - t0 < 3.0
    # many checks at once, from threads
    results = []

    def check():
        for _ in range(20):
            results.append(ask(port))

    ts = [threading.Thread(target=check) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == [good] * 160


def test_agent_port_errors(plumb_bin, real_model, server):
    p = subprocess.run([str(plumb_bin), "serve", "-m", str(real_model), "--agent-port", "70000"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "--agent-port" in p.stderr, p.stderr
    p = subprocess.run([str(plumb_bin), "serve", "-m", str(real_model), "--port", "0", "--agent-port",
                        str(agent_port(server))], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "agent-check" in p.stderr and "Address already in use" in p.stderr, p.stderr


# ---- SIGTERM: drain --------------------------------------------------------------------------------------

def drain_scenario(s: Server, max_tokens: int):
    """SIGTERM with a request in flight: the agent says drain at once, /health and new requests
    answer 503 (Retry-After) on the still open listener, the request in flight finishes
    normally, then the server exits 0 and the ports close."""
    port = agent_port(s)
    c = start_stream(s.port, "Once upon a time", max_tokens)
    fresh = socket.create_connection(("127.0.0.1", s.port), timeout=10)  # opened, nothing sent yet
    kept = socket.create_connection(("127.0.0.1", s.port), timeout=10)  # kept alive after an answer
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while not got.endswith(b"}"):  # the whole answer (a JSON body), so that nothing is left to read
        got += kept.recv(4096)
    assert got.startswith(b"HTTP/1.1 200"), got
    try:
        assert serving_line(ask(port))[0] < 100
        s.sigterm()
        wait_for(lambda: ask(port) == "drain\n", 5, "the agent to say drain")
        assert words("drain\n") == ["drain"]
        assert read_all(kept) == b""  # an idle kept-alive connection is closed
        # a request on a connection that had sent nothing yet gets a clean 503, not a reset
        fresh.sendall(f"POST {COMP} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        got = read_all(fresh)
        assert got.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in got and b"shutting_down" in got, got
        st, h = health(s)
        assert st == 503 and h == {"status": "draining", "slots_idle": 1, "slots_total": 2}, h
        st, hd, j = s.post(COMP, {"prompt": "Hi", "max_tokens": 2})
        assert st == 503 and hd["retry-after"] == "1" and hd["connection"] == "close", (st, hd)
        assert j["error"]["code"] == "shutting_down", j
        assert s.proc.poll() is None  # the request in flight holds it
        raw = read_all(c).decode()
    finally:
        for x in (c, fresh, kept):
            x.close()
    events = [e[len("data: "):] for e in re.findall(r"data: [^\r\n]*", raw)]
    assert events[-1] == "[DONE]", raw[-500:]
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert s.stop(60) == 0, s.stderr
    for p in (port, s.port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=2).recv(1)


def test_sigterm_drains_then_exits(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "2", "-c", "512", "--agent-port", "0")
    try:
        drain_scenario(s, 480)
    finally:
        s.kill()


def test_drain_delay_serves_on_until_the_balancer_has_seen_it(plumb_bin, real_model):
    """--drain-delay 3: after SIGTERM the agent says drain and /health 503 at once, but new
    requests are still answered for the delay (a balancer that has not checked yet loses none);
    then the server drains as without a delay and exits."""
    s = Server(plumb_bin, real_model, "--parallel", "2", "-c", "512", "--agent-port", "0", "--drain-delay", "3")
    try:
        port = agent_port(s)
        s.sigterm()
        t0 = time.monotonic()
        wait_for(lambda: ask(port) == "drain\n", 2, "the agent to say drain")
        assert health(s)[0] == 503
        st, _, j = s.post(COMP, {"prompt": "Hi", "max_tokens": 2})
        assert st == 200 and time.monotonic() - t0 < 3, (st, j)  # served within the delay
        assert s.stop(30) == 0, s.stderr  # nothing in flight: it exits once the delay is over
        assert time.monotonic() - t0 >= 2.9
    finally:
        s.kill()


def test_sigterm_as_the_model_becomes_ready_drains(plumb_bin, real_model):
    """A SIGTERM that comes the moment /health first says 200 is a normal stop (drain, agent
    "drain", exit 0 after "finishing requests in flight"), not the stop of a server still
    loading: the load can finish while the command waits for a signal. Sent again and again
    right at readiness so that the moment is hit."""
    for _ in range(8):
        s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "256", wait_ready=False)
        try:
            while s.get("/health")[0] != 200:
                assert s.proc.poll() is None, s.stderr
            s.sigterm()
            assert s.stop(30) == 0, s.stderr
            assert "finishing requests in flight" in s.stderr and "while loading" not in s.stderr, s.stderr
        finally:
            s.kill()


# ---- the sanitizer build ---------------------------------------------------------------------------------

def test_sanitizer_build_agent_and_drain(plumb_san_bin, real_model):
    s = Server(plumb_san_bin, real_model, "--parallel", "2", "-c", "512", "--slots", "--agent-port", "0",
               ready_timeout=120)
    try:
        port = agent_port(s)
        assert ask(port) == "up ready 100% maxconn:2\n"
        assert ask(port, b"\x00\xff garbage\r\n" * 50) == "up ready 100% maxconn:2\n"
        flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
        for c in flood:
            c.close()
        st, _, _ = s.post(COMP, {"prompt": "Hello", "max_tokens": 2, "temperature": 0}, timeout=120)
        assert st == 200
        assert any(x["prefix_hash"] for x in json.loads(s.get("/slots")[1]))
        drain_scenario(s, 150)
    finally:
        s.kill()
    assert not any(m in s.stderr for m in SAN_MARKERS), s.stderr
