"""`plumb serve` on a remote device (`--device remote:127.0.0.1:PORT`) that goes away and comes back.
A `plumb rpc-server` killed with SIGKILL mid-stream ends that stream with a 503-type error event
("device_unavailable") and the request queued behind it with a 503, not a 500; the server stays
up, answers new requests with 503 and Retry-After within seconds while the device is down, and
/health says so; once an rpc-server listens on the same port again, the next request loads the
model again (which reconnects) and gets the same greedy text as before the fault. The server
runs under ASan/UBSan and must say nothing about it."""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time

from conftest import SAN_MARKERS
from serving import Server, wait_for

KEY = "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3RzLTEyMzQ1Njc4\n"
FIRST = {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}


def free_port() -> int:
    """A port nothing listens on now (bound to 0, then let go), used for every rpc-server of a test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RpcServer:
    """`plumb rpc-server` on a fixed port, so that a restarted one is the same device to the client."""

    def __init__(self, binary, key, port: int, log):
        self.log = log
        with open(log, "w") as f:
            self.proc = subprocess.Popen([str(binary), "rpc-server", "--key-file", str(key), "--port", str(port), "-t", "1"],
                                         stderr=f, stdout=subprocess.DEVNULL)
        wait_for(lambda: "listening on" in log.read_text() or self.proc.poll() is not None, 30, "rpc-server to listen")
        assert f"listening on 127.0.0.1:{port}" in log.read_text(), log.read_text()

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)


class Stream(threading.Thread):
    """A streamed completion read as it comes: the response's status and its `data:` payloads."""

    def __init__(self, port: int, body: dict):
        super().__init__(daemon=True)
        self.port, self.body = port, body
        self.status = 0
        self.events: list[str] = []
        self.error: Exception | None = None
        self.start()

    def run(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            c.request("POST", "/v1/completions", body=json.dumps({**self.body, "stream": True}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            self.status = r.status
            for line in r:
                line = line.decode().strip()
                if line.startswith("data: "):
                    self.events.append(line[len("data: "):])
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class Call(threading.Thread):
    """A request in the background: (status, headers, JSON body) once done, and when it ended."""

    def __init__(self, srv: Server, body: dict):
        super().__init__(daemon=True)
        self.srv, self.body = srv, body
        self.result = None
        self.ended = 0.0
        self.start()

    def run(self):
        self.result = self.srv.post("/v1/completions", self.body, timeout=120)
        self.ended = time.monotonic()


def test_serve_answers_503_while_a_remote_device_is_down_and_recovers(plumb_bin, plumb_san_bin, real_model, tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0o600)
    port = free_port()
    device = f"remote:127.0.0.1:{port}"
    rpc = RpcServer(plumb_bin, key, port, tmp_path / "rpc1.log")
    rpc2 = srv = None
    try:
        srv = Server(plumb_san_bin, real_model, "--device", device, "--remote-key-file", key, "--parallel", "1",
                     "-c", "1024", ready_timeout=180, env={"PLUMB_REMOTE_TIMEOUT": "5"})
        wait_for(lambda: "ready:" in srv.stderr, 10, "the ready line")
        assert f"device {device} (19/19 layers)" in srv.stderr, srv.stderr
        status, _, body = srv.post("/v1/completions", FIRST)
        assert status == 200, body
        before = body["choices"][0]["text"]
        assert before.strip(), body

        # a long stream holds the one slot; a second request waits in the queue behind it
        stream = Stream(srv.port, {"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0})
        wait_for(lambda: len(stream.events) >= 3 or not stream.is_alive(), 120, "the long stream's first tokens")
        assert stream.status == 200 and stream.is_alive(), (stream.status, stream.events, stream.error)
        queued = Call(srv, {"prompt": "A queued request", "max_tokens": 8, "temperature": 0})
        wait_for(lambda: srv.metrics()["plumb_queue_depth"] >= 1, 30, "the second request to queue")

        rpc.kill()  # the device dies mid-generation
        t_kill = time.monotonic()
        stream.join(30)
        assert not stream.is_alive() and stream.error is None, (stream.events[-3:], stream.error)
        assert stream.events[-1] == "[DONE]", stream.events[-3:]
        err = json.loads(stream.events[-2])["error"]
        assert err["type"] == "unavailable_error" and err["code"] == "device_unavailable", err
        assert err["message"].startswith(f"device unavailable: remote device 127.0.0.1:{port}"), err
        assert not any('"finish_reason":"stop"' in e or '"finish_reason":"length"' in e for e in stream.events)

        queued.join(30)
        assert queued.result is not None, "the queued request got no answer"
        q_status, q_headers, q_body = queued.result
        assert q_status == 503 and q_body["error"]["code"] == "device_unavailable", queued.result
        assert q_headers.get("retry-after") == "1" and queued.ended - t_kill < 15, (q_headers, queued.ended - t_kill)
        assert srv.proc.poll() is None, srv.stderr

        # while the device is down: 503 within seconds, and /health says why
        t0 = time.monotonic()
        status, headers, body = srv.post("/v1/completions", FIRST, timeout=30)
        took = time.monotonic() - t0
        assert status == 503 and took < 15, (status, took, body)
        assert body["error"]["code"] == "device_unavailable" and "cannot connect" in body["error"]["message"], body
        assert headers.get("retry-after") == "1", headers
        h_status, h_body = srv.get("/health")
        health = json.loads(h_body)
        assert h_status == 503 and health["status"] == "error" and health["code"] == "device_unavailable", h_body
        assert f"127.0.0.1:{port}" in health["message"], health
        m = srv.metrics()
        assert m["plumb_device_failures_total"] == 1 and m["plumb_device_available"] == 0, m
        assert 'plumb_requests_total{code="500"}' not in m, m

        # the device is back on the same port: the next request reloads the model and succeeds
        rpc2 = RpcServer(plumb_bin, key, port, tmp_path / "rpc2.log")
        status, _, body = srv.post("/v1/completions", FIRST, timeout=60)
        assert status == 200, body
        assert body["choices"][0]["text"] == before, (body, before)
        h_status, h_body = srv.get("/health")
        assert h_status == 200 and json.loads(h_body)["status"] == "ok", h_body
        m = srv.metrics()
        assert m["plumb_device_available"] == 1 and m["plumb_model_loads_total"] >= 2, m
        assert m["plumb_device_failures_total"] == 1, m
        assert "the device answers again" in srv.stderr, srv.stderr

        rc = srv.stop()
        assert rc == 0, srv.stderr[-3000:]
        assert not any(k in srv.stderr for k in SAN_MARKERS), srv.stderr[-6000:]
    finally:
        if srv:
            srv.kill()
        rpc.stop()
        if rpc2:
            rpc2.stop()


def test_a_device_restarted_while_idle_costs_the_next_request_only_a_reload(plumb_bin, real_model, tmp_path):
    """The server finds the device gone only when it next computes; the request that finds it has
    produced nothing yet, so it waits for the reload (at once) and is answered as if nothing
    happened."""
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0o600)
    port = free_port()
    rpc = RpcServer(plumb_bin, key, port, tmp_path / "rpc1.log")
    rpc2 = srv = None
    try:
        srv = Server(plumb_bin, real_model, "--device", f"remote:127.0.0.1:{port}", "--parallel", "2", "-c", "512",
                     env={"PLUMB_REMOTE_TIMEOUT": "5", "PLUMB_REMOTE_KEY_FILE": str(key)})
        status, _, body = srv.post("/v1/completions", FIRST)
        assert status == 200, body
        before = body["choices"][0]["text"]
        rpc.kill()
        rpc2 = RpcServer(plumb_bin, key, port, tmp_path / "rpc2.log")
        t0 = time.monotonic()
        status, _, body = srv.post("/v1/completions", FIRST, timeout=60)
        assert status == 200 and body["choices"][0]["text"] == before, body
        assert time.monotonic() - t0 < 30
        m = srv.metrics()
        assert m["plumb_device_failures_total"] == 1 and m["plumb_device_available"] == 1, m
        assert m["plumb_model_loads_total"] == 2 and m["plumb_model_load_failures_total"] == 0, m
        assert "device unavailable" in srv.stderr and "the device answers again" in srv.stderr, srv.stderr
        assert srv.stop() == 0, srv.stderr
    finally:
        if srv:
            srv.kill()
        rpc.stop()
        if rpc2:
            rpc2.stop()
