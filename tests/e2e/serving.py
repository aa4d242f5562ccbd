"""A running `plumb serve` for the end-to-end tests, and small helpers around it: streaming a
request by hand and waiting (bounded) for a condition."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest

from conftest import SAN_ENV


class Server:
    """A running `plumb serve` with its port and collected stderr."""

    def __init__(self, binary: Path, model: Path | str | None, *args, ready_timeout: float = 60.0,
                 wait_ready: bool = True, env: dict | None = None):
        """model None: no -m (a server with a model catalog given in args)."""
        argv = [str(binary), "serve", *(["-m", str(model)] if model else []), "--port", "0", "-t", "2",
                *[str(a) for a in args]]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env=dict(os.environ, **SAN_ENV, **(env or {})))
        self.lines: list[str] = []
        self.signalled = False
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_timeout
        while not self._listening.wait(0.05) and self.proc.poll() is None and time.monotonic() < deadline:
            pass
        if not self._listening.is_set():
            self.kill()
            pytest.fail("plumb serve did not start listening:\n" + self.stderr)
        m = re.search(r"listening on http://[^:]+:(\d+)", "\n".join(self.lines))
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        if wait_ready:
            deadline = time.monotonic() + ready_timeout
            while self.get("/health")[0] != 200:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    pytest.fail("plumb serve did not become ready:\n" + self.stderr)
                time.sleep(0.05)

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if "listening on" in line:
                self._listening.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 60.0):
        """(status, headers dict, body bytes); body may be bytes, str or a JSON-able object."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def get(self, path: str):
        try:
            s, _, b = self.request("GET", path, timeout=10)
            return s, b
        except OSError:
            return 0, b""

    def post(self, path: str, body, headers=None, timeout: float = 120.0):
        s, h, b = self.request("POST", path, body, headers, timeout)
        return s, h, (json.loads(b) if b.startswith(b"{") else b)

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0,
                             timeout=120.0, **kw)

    def metrics(self) -> dict[str, float]:
        s, b = self.get("/metrics")
        assert s == 200
        out = {}
        for line in b.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def sigterm(self):
        """Asks the server to stop (once: a second SIGTERM makes it stop at once)."""
        if not self.signalled and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.signalled = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self, timeout: float = 60.0) -> int:
        self.sigterm()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("plumb serve did not exit within %.0f s of SIGTERM:\n%s" % (timeout, self.stderr))
        self._reader.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def stream_raw(port: int, path: str, body: dict, timeout: float = 120.0):
    """Streams a request by hand: (list of decoded events, the raw text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.read()
    assert r.getheader("Content-Type").startswith("text/event-stream")
    raw = r.read().decode()
    c.close()
    events = [e[len("data: "):] for e in raw.split("\n\n") if e]
    return events, raw


class SlotHolder:
    """A streamed request that keeps a slot busy until the test hangs up on it (close()), so a test
    about queues and busy slots does not race a request that might finish on its own."""

    def __init__(self, port: int, path: str, body: dict):
        data = json.dumps({**body, "stream": True}).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data)) + data)

    def close(self):
        """Hangs up with a reset: the server cancels the request and frees the slot."""
        if self.sock.fileno() >= 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_together(fn, n: int, timeout: float = 120.0) -> list:
    """fn(0) .. fn(n - 1) on n threads at once; their results (an exception in place of the
    result of a call that raised), after asserting that every call finished in time."""
    results: list = [None] * n

    def one(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - the caller checks
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a call did not finish"
    return results


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def raw(port: int, data: bytes, *, source: str = "127.0.0.1", timeout: float = 10.0, half_close: bool = False) -> bytes:
    """Sends data on a new connection and reads until the server closes it (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not d:
                break
            out += d
        return out


def split_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    """The HTTP/1.1 responses in data, each (status, lower-cased fields, body) (Content-Length bodies)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data
        lines = head.decode("latin-1").split("\r\n")
        m = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", lines[0])
        assert m, lines[0]
        fields = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            assert k.lower() not in fields, ("field twice", k)
            fields[k.lower()] = v.strip()
        n = int(fields.get("content-length", "0"))
        out.append((int(m.group(1)), fields, rest[:n]))
        data = rest[n:]
    return out
