"""The remote device across real network hops: `plumb rpc-server` in one network namespace,
listening on its veth address (--host), and its clients in others, every host joined by a
switch (tests/e2e/netns.py builds it and deletes it whatever happens; it needs root, and a
missing root fails, never skips):

- the logits through the remote device are the local CPU's bit for bit, fully remote and split;
- weights go by content hash: with --cache-dir the first run uploads them, a second run (and a
  run against a restarted server) sends under 1% of that, and every output is the local one;
- kill -9 of the server, and a link cut mid-generation (the packets dropped in silence, or the
  server's link down) with PLUMB_REMOTE_TIMEOUT=3, make the client (the sanitizer build) fail
  with one line naming the remote device, within a bound, and with no sanitizer report;
- connections that never finish a handshake take no place from real clients: those over the
  per-address limit are closed at once, the rest after the 5 s handshake deadline, a client
  from another address runs meanwhile; a wrong key is refused and the server goes on;
- the protocol, spoken by a Python client written from docs/remote-protocol.md (rpc_proto.py):
  another version gets an ERROR naming both versions, a replayed handshake is refused (the
  server's fresh nonce makes the recorded proof wrong) before anything runs, and a bad tag or
  sequence number (a replayed frame) ends the connection.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import E2E, SAN_ENV, SAN_MARKERS, Run
from netns import Net, NetnsUnavailable

PORT = 50052
PROMPT_TEXT = "The capital of France is"
PROMPT = [2, 818, 5279, 529, 7001, 563, 9079, 236761, 669, 7488, 3207, 528]
STEPS = [563, 9079]
LINE = re.compile(r"plumb: remote device: (\d+) bytes sent, (\d+) received, (\d+) round trips")


def key_file(tmp_path: Path, name="key", text="c2VjcmV0LWtleS1mb3ItdGhlLXRlc3RzLTEyMzQ1Njc4\n") -> Path:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(0o600)
    return p


@pytest.fixture
def net():
    """A server host "srv" and client hosts "cli" and "oth" on one switch."""
    try:
        n = Net(("srv", "cli", "oth"))
    except NetnsUnavailable as e:
        pytest.fail(f"the remote-device network tests need network namespaces: {e}", pytrace=False)
    with n:
        yield n


class NsServer:
    """`plumb rpc-server` on host's address in net (its stderr in a file)."""

    def __init__(self, net: Net, binary, key, log: Path, *args, host="srv"):
        self.net, self.addr, self.log_path = net, net.addr(host), log
        with open(log, "ab") as f:
            self.proc = net.popen(host, [binary, "rpc-server", "--key-file", key, "--host", self.addr, "--port", PORT,
                                         "-t", "1", *args], stderr=f, stdin=subprocess.DEVNULL)
        self.wait_log(rf"listening on {re.escape(self.addr)}:{PORT}\b", 30)

    @property
    def device(self) -> str:
        return f"remote:{self.addr}:{PORT}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float, count: int = 1) -> float:
        """Waits until the log has count lines matching pattern; returns the seconds waited."""
        t0 = time.monotonic()
        while len(re.findall(pattern, self.log())) < count:
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise AssertionError(f"rpc-server log has no {count} x {pattern!r} after {timeout} s "
                                     f"(exit {self.proc.poll()}):\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail("rpc-server did not stop within 30 s of SIGTERM")


def client(net: Net, binary, *args, host="cli", timeout=120.0, env=None) -> Run:
    """Runs `binary ARGS` on host (sanitizer options set)."""
    argv = net.cmd(host, [binary, *args])
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, env={**os.environ, **SAN_ENV, **(env or {})})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"$ {' '.join(argv)} did not finish within {timeout} s; stderr: {(e.stderr or b'')[-2000:]!r}")
    return Run(argv, p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"),
               time.monotonic() - t0)


def gen_args(model, *extra, n=16):
    return ["run", "-m", model, "-p", PROMPT_TEXT, "-n", n, "--temp", "0", "-t", "1", *extra]


def traffic(r: Run) -> tuple[int, int, int]:
    m = LINE.search(r.stderr)
    assert m, "no `plumb: remote device:` line:\n" + r.describe()
    return int(m[1]), int(m[2]), int(m[3])


def proto(net: Net, *args, host="cli", timeout=60) -> dict:
    """rpc_proto.py ARGS on host; its JSON."""
    p = net.run(host, [sys.executable, E2E / "rpc_proto.py", *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------------------------

# Run inside the client host: the CPU's logits and the remote device's (all layers, then 9),
# saved as one .npz on stdout (logits_dump does the runs; the vocabulary is read once).
DUMP = """
import io, json, sys
import numpy as np
import logits_dump
model, device, prompt, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
n_vocab = logits_dump.n_vocab_of(model)
logits_dump.n_vocab_of = lambda path: n_vocab
out = {"cpu": logits_dump.logits(model, None, -1, prompt, steps)}
for n in (-1, 9):
    out[f"remote{n}"] = logits_dump.logits(model, device, n, prompt, steps)
buf = io.BytesIO()
np.savez(buf, **out)
sys.stdout.buffer.write(buf.getvalue())
"""


def test_logits_across_the_network_are_the_cpus_bits(net, plumb_bin, plumb_lib, real_model, tmp_path):
    key = key_file(tmp_path)
    srv = NsServer(net, plumb_bin, key, tmp_path / "srv.log")
    env = dict(os.environ, PLUMB_LIB=str(plumb_lib), PLUMB_REMOTE_KEY_FILE=str(key), PYTHONPATH=str(E2E))
    try:
        p = net.run("cli", [sys.executable, "-c", DUMP, real_model, srv.device, PROMPT, STEPS], capture_output=True,
                    timeout=240, env=env)
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
        got = np.load(io.BytesIO(p.stdout))
        cpu = got["cpu"]
        assert cpu.shape[0] == len(PROMPT) + len(STEPS) and np.isfinite(cpu).all()
        for n_offload in (-1, 9):
            dev = got[f"remote{n_offload}"]
            assert dev.shape == cpu.shape and np.array_equal(cpu, dev), \
                f"n_offload {n_offload}: max |diff| {np.abs(cpu - dev).max()}"
        # both remote runs crossed the network: the server saw them from the client host's address
        srv.wait_log(rf"{re.escape(net.addr('cli'))}: connection ended", 10, count=2)
    finally:
        rc = srv.stop()
    assert rc == 0, srv.log()


def test_weights_go_by_content_hash_and_the_cache_outlives_the_server(net, plumb_bin, real_model, tmp_path):
    # 19/19 layers: the 18 blocks and the output head (tied to token_embd): every weight
    info = subprocess.run([str(plumb_bin), "inspect", str(real_model)], capture_output=True, text=True, timeout=30)
    weight_bytes = int(re.search(r"tensor bytes: +(\d+)", info.stdout)[1])
    assert weight_bytes > 200e6, info.stdout[:2000]
    key, cache = key_file(tmp_path), tmp_path / "cache"
    local = client(net, plumb_bin, *gen_args(real_model), host="cli")
    assert local.rc == 0 and local.stdout.strip(), local.describe()
    srv = NsServer(net, plumb_bin, key, tmp_path / "srv.log", "--cache-dir", cache)
    remote = gen_args(real_model, "--device", srv.device, "--remote-key-file", key)
    try:
        first = client(net, plumb_bin, *remote)
        assert first.rc == 0 and first.stdout == local.stdout, first.describe()
        sent1 = traffic(first)[0]
        assert sent1 > weight_bytes, f"the first run sent {sent1} bytes, the weights are {weight_bytes}"
        second = client(net, plumb_bin, *remote)
        assert second.rc == 0 and second.stdout == local.stdout, second.describe()
        sent2 = traffic(second)[0]
        assert sent2 < sent1 / 100, f"the second run sent {sent2} bytes of the first's {sent1}: the cache was not used"
        srv.wait_log(r"connection ended: .*\(weights: 0\.0 MiB received, [1-9][0-9.]* MiB from the cache\)", 10)
    finally:
        rc = srv.stop()
    assert rc == 0, srv.log()
    assert any(cache.iterdir()), "the cache folder is empty"
    srv = NsServer(net, plumb_bin, key, tmp_path / "srv2.log", "--cache-dir", cache)  # a new process, the same disk
    try:
        third = client(net, plumb_bin, *remote)
        assert third.rc == 0 and third.stdout == local.stdout, third.describe()
        sent3 = traffic(third)[0]
        assert sent3 < sent1 / 100, f"after the restart a run sent {sent3} bytes of {sent1}: the cache was not kept on disk"
    finally:
        rc = srv.stop()
    assert rc == 0, srv.log()


class Streaming:
    """A client generating in the background on net's "cli" host; started() once it has printed
    text (it is past the load, generating)."""

    def __init__(self, net: Net, binary, *args, env=None):
        self.argv = net.cmd("cli", [binary, *args])
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **SAN_ENV, **(env or {})})
        self.out = bytearray()
        self.err = b""
        self.t_end = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read(self):
        while chunk := self.proc.stdout.read1(4096):
            self.out += chunk

    def _read_err(self):
        self.err = self.proc.stderr.read()

    def wait_generating(self, timeout=60.0, n_bytes=20):
        t0 = time.monotonic()
        while len(self.out) < n_bytes:
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                self.proc.kill()
                self.proc.wait()
                self.err_reader.join(10)
                pytest.fail(f"the client did not start generating (exit {self.proc.poll()}): {self.err[-2000:]!r}")
            time.sleep(0.02)

    def wait(self, timeout: float) -> tuple[int, float, str]:
        """The exit status, the seconds it took from now, stderr."""
        t0 = time.monotonic()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.err_reader.join(10)
            pytest.fail(f"the client still ran {timeout} s after the failure (a hang); stderr: {self.err[-2000:]!r}")
        dt = time.monotonic() - t0
        self.err_reader.join(10)
        return rc, dt, self.err.decode(errors="replace")


def test_server_killed_mid_generation(net, plumb_bin, plumb_san_bin, real_model, tmp_path):
    key = key_file(tmp_path)
    srv = NsServer(net, plumb_bin, key, tmp_path / "srv.log")
    c = Streaming(net, plumb_san_bin, *gen_args(real_model, "--device", srv.device, "--remote-key-file", key, n=1000))
    try:
        c.wait_generating()
        srv.proc.kill()
        rc, dt, err = c.wait(30)
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
        srv.proc.kill()
        srv.proc.wait(10)
    assert rc == 1, err[-3000:]
    assert not any(m in err for m in SAN_MARKERS), err[-6000:]
    lines = [ln for ln in err.splitlines() if f"remote device {srv.addr}:{PORT}" in ln]
    assert len(lines) == 1, err[-3000:]
    assert dt < 10, f"the client took {dt:.1f} s to fail after the server's kill: {lines}"
    print(f"\nserver killed: the client failed in {dt:.2f} s: {lines[0]}")


@pytest.mark.parametrize("how", ["drop", "down"])
def test_link_cut_mid_generation(net, plumb_bin, plumb_san_bin, real_model, tmp_path, how):
    """The link to the server cut ("drop": the switch drops its packets in silence, no RST;
    "down": the server's eth0 down) while the client generates: with PLUMB_REMOTE_TIMEOUT=3,
    the client fails within 3 s and a margin, with one line naming the device and the limit."""
    key = key_file(tmp_path)
    srv = NsServer(net, plumb_bin, key, tmp_path / "srv.log")
    c = Streaming(net, plumb_san_bin, *gen_args(real_model, "--device", srv.device, "--remote-key-file", key, n=1000),
                  env={"PLUMB_REMOTE_TIMEOUT": "3"})
    try:
        c.wait_generating()
        net.cut("srv", how)
        rc, dt, err = c.wait(60)
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
        srv.proc.kill()
        srv.proc.wait(10)
    assert rc == 1, err[-3000:]
    assert not any(m in err for m in SAN_MARKERS), err[-6000:]
    lines = [ln for ln in err.splitlines() if f"remote device {srv.addr}:{PORT}" in ln]
    assert len(lines) == 1 and "timed out" in lines[0] and "PLUMB_REMOTE_TIMEOUT" in lines[0], err[-3000:]
    assert 2.5 < dt < 15, f"the client failed {dt:.1f} s after the cut (PLUMB_REMOTE_TIMEOUT=3): {lines[0]}"
    print(f"\nlink cut ({how}): the client failed in {dt:.2f} s: {lines[0]}")


def test_handshakes_that_never_finish_crowd_out_nobody(net, plumb_bin, real_model, tmp_path):
    key, wrong = key_file(tmp_path), key_file(tmp_path, "wrong", text="another-key-that-is-long-enough\n")
    srv = NsServer(net, plumb_bin, key, tmp_path / "srv.log", "--cache-dir", tmp_path / "cache")
    local = client(net, plumb_bin, *gen_args(real_model, n=8))
    remote = gen_args(real_model, "--device", srv.device, "--remote-key-file", key, n=8)
    hold = net.popen("oth", [sys.executable, E2E / "rpc_proto.py", "hold", srv.addr, PORT, 10, 12],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "open", hold.stderr.read()
        # while oth's connections sit silent, a client from another address runs
        t0 = time.monotonic()
        during = client(net, plumb_bin, *remote)
        assert during.rc == 0 and during.stdout == local.stdout, during.describe()
        out, err = hold.communicate(timeout=30)
        assert hold.returncode == 0, err
        closed = json.loads(out.splitlines()[-1])["closed_after"]
    finally:
        if hold.poll() is None:
            hold.kill()
            hold.wait()
    # 4 handshake places per address: 6 closed at once, 4 at the 5 s handshake deadline
    assert None not in closed, f"connections still open after 12 s: {closed}"
    at_once = sorted(t for t in closed if t < 1.0)
    deadline = sorted(t for t in closed if 4.5 <= t <= 8.0)
    assert len(at_once) == 6 and len(deadline) == 4, f"seconds until each silent connection was closed: {closed}"
    assert time.monotonic() - t0 < 30
    srv.wait_log(rf"{re.escape(net.addr('oth'))}: handshake ended: .*timed out", 10, count=4)
    # oth's places are free again; a wrong key is refused and the server goes on serving
    after = client(net, plumb_bin, *remote, host="oth")
    assert after.rc == 0 and after.stdout == local.stdout, after.describe()
    bad = client(net, plumb_bin, *gen_args(real_model, "--device", srv.device, "--remote-key-file", wrong, n=8))
    assert bad.rc == 1 and "proof" in bad.stderr and "remote device" in bad.stderr, bad.describe()
    again = client(net, plumb_bin, *remote)
    assert again.rc == 0 and again.stdout == local.stdout, again.describe()
    rc = srv.stop()
    assert rc == 0, srv.log()
    log = srv.log()
    # the client found the server's proof wrong (mutual authentication) and hung up
    assert re.search(rf"{re.escape(net.addr('cli'))}: handshake ended: rpc: authentication failed: the client hung up", log), log


def test_protocol_versions_replays_tags_and_sequence_numbers(net, plumb_bin, real_model, tmp_path):
    key = key_file(tmp_path)
    srv = NsServer(net, plumb_bin, key, tmp_path / "srv.log")
    addr = [srv.addr, str(PORT)]
    try:
        # another version: an ERROR frame naming both, then the server hangs up
        r = proto(net, "hello", *addr, 3)
        assert r["type"] == 4 and r["version"] == 2 and r["seq"] == 0 and r["zero_tag"], r
        assert r["code"] == -5 and "version 3" in r["text"] and "version 2" in r["text"] and r["closed"], r
        # the Python client is right: its handshake and tagged frames are answered
        r = proto(net, "session", *addr, key, "good")
        assert [(x["type"], x["seq"], x["len"], x["tag_ok"]) for x in r["replies"]] == [(5, 0, 272, True), (5, 1, 272, True)], r
        assert not r["closed"], r
        # one bit of a tag, a sequence number skipped, a frame sent twice: hung up, nothing answered
        for mode, n_replies in (("bad-tag", 0), ("bad-seq", 0), ("replay-frame", 1)):
            r = proto(net, "session", *addr, key, mode)
            assert len(r["replies"]) == n_replies and r["closed"], (mode, r)
        # a real client's handshake recorded through a relay, then replayed on a new connection
        relay = net.popen("cli", [sys.executable, E2E / "rpc_proto.py", "relay", "127.0.0.1", 7000, *addr,
                                  tmp_path / "recorded"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert relay.stdout.readline().strip() == "ready", relay.stderr.read()
            ok = client(net, plumb_bin, *gen_args(real_model, "--device", "remote:127.0.0.1:7000", "--remote-key-file",
                                                 key, n=2))
            assert ok.rc == 0, ok.describe()
            relay.communicate(timeout=30)
        finally:
            if relay.poll() is None:
                relay.kill()
                relay.wait()
        recorded = (tmp_path / "recorded").read_bytes()
        assert recorded[:4] == b"PLRB" and recorded[4:6] == b"\x02\x00" and recorded[6:8] == b"\x01\x00", recorded[:64]  # a HELLO first
        n_before = len(re.findall(r"ended:", srv.log()))
        r = proto(net, "replay", *addr, tmp_path / "recorded")
        assert [f["type"] for f in r["frames"]] == [2] and r["closed"], r  # a fresh CHALLENGE, then the end
        srv.wait_log(r"ended:", 10, count=n_before + 1)
    finally:
        rc = srv.stop()
    assert rc == 0, srv.log()
    log = srv.log()
    cli = re.escape(net.addr("cli"))
    for pattern in (r"handshake ended: rpc: protocol version mismatch: the client speaks version 3, this server speaks version 2",
                    r"connection ended: rpc frame: the tag does not match",
                    r"connection ended: rpc frame: sequence number 1, expected 0",
                    r"connection ended: rpc frame: sequence number 0, expected 1",
                    r"handshake ended: rpc: authentication failed: the client's proof is wrong.*"
                    r"\(weights: 0\.0 MiB received, 0\.0 MiB from the cache\)"):
        assert re.search(rf"{cli}: {pattern}", log), f"no {pattern!r} in the server's log:\n{log}"
    # the replayed connection (the last one) executed nothing
    last = [ln for ln in log.splitlines() if "ended:" in ln][-1]
    assert "proof is wrong" in last and "0.0 MiB received" in last, log
