"""The remote backend over loopback: `plumb rpc-server` serving this host's CPU, and models on
`--device remote:127.0.0.1:PORT`. The server runs the same CPU kernels, so the logits are the
local CPU's bit for bit, fully or half offloaded. A wrong key is refused before anything runs
(and the server goes on serving), a key file others can read is refused, and a server killed
mid-generation makes the client fail with one clear line instead of hanging."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

import logits_dump
from conftest import SAN_ENV, SAN_MARKERS

PROMPT = [2, 818, 5279, 529, 7001, 563, 9079, 236761, 669, 7488, 3207, 528]


def key_file(tmp_path, name="key", mode=0o600, text="c2VjcmV0LWtleS1mb3ItdGhlLXRlc3RzLTEyMzQ1Njc4\n"):
    p = tmp_path / name
    p.write_text(text)
    p.chmod(mode)
    return p


class RpcServer:
    def __init__(self, binary, key, *args, env=None):
        self.proc = subprocess.Popen([str(binary), "rpc-server", "--key-file", str(key), "--port", "0", "-t", "1", *args],
                                     stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, line + self.proc.stderr.read()
        self.port = int(m.group(1))

    @property
    def device(self):
        return f"remote:127.0.0.1:{self.port}"

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("rpc-server did not stop within 30 s of SIGTERM")
        return rc, self.proc.stderr.read()


def test_logits_through_the_remote_device_are_the_cpus_bits(plumb_bin, real_model, tmp_path, monkeypatch):
    key = key_file(tmp_path)
    srv = RpcServer(plumb_bin, key)
    try:
        monkeypatch.setenv("PLUMB_REMOTE_KEY_FILE", str(key))
        steps = [563, 9079]
        cpu = logits_dump.logits(real_model, None, -1, PROMPT, steps)
        for n_offload in (-1, 9):
            dev = logits_dump.logits(real_model, srv.device, n_offload, PROMPT, steps)
            assert np.array_equal(cpu, dev), n_offload
    finally:
        rc, err = srv.stop()
    assert rc == 0, err


def test_generation_and_wrong_keys(plumb_bin, real_model, tmp_path):
    key, wrong = key_file(tmp_path), key_file(tmp_path, "wrong", text="another-key-that-is-long-enough\n")
    srv = RpcServer(plumb_bin, key)
    run = [str(plumb_bin), "run", "-m", str(real_model), "-p", "The capital of France is", "-n", "8", "--temp", "0"]
    try:
        local = subprocess.run(run, capture_output=True, text=True, timeout=120)
        remote = subprocess.run(run + ["--device", srv.device, "--remote-key-file", str(key)], capture_output=True,
                                text=True, timeout=300)
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout == local.stdout
        assert f"device {srv.device} (19/19 layers)" in remote.stderr
        bad = subprocess.run(run + ["--device", srv.device, "--remote-key-file", str(wrong)], capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 1 and "proof" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        nokey = subprocess.run(run + ["--device", srv.device], capture_output=True, text=True, timeout=120,
                               env={k: v for k, v in os.environ.items() if k != "PLUMB_REMOTE_KEY_FILE"})
        assert nokey.returncode == 1 and "--remote-key-file" in nokey.stderr, nokey.stderr
        again = subprocess.run(run + ["--device", srv.device, "--remote-key-file", str(key)], capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0 and again.stdout == local.stdout, again.stderr  # still serving
    finally:
        rc, err = srv.stop()
    assert rc == 0, err
    assert "handshake ended" in err, err


def test_key_files_others_can_read_are_refused(plumb_bin, tmp_path):
    open_key = key_file(tmp_path, mode=0o644)
    p = subprocess.run([str(plumb_bin), "rpc-server", "--key-file", str(open_key), "--port", "0"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and "chmod 600" in p.stderr and str(open_key) in p.stderr, p.stderr
    short = key_file(tmp_path, "short", text="tiny\n")
    p = subprocess.run([str(plumb_bin), "rpc-server", "--key-file", str(short), "--port", "0"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and "128 bits" in p.stderr, p.stderr
    p = subprocess.run([str(plumb_bin), "rpc-server"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--key-file" in p.stderr, p.stderr


def test_server_killed_mid_generation_fails_the_client_cleanly(plumb_bin, plumb_san_bin, real_model, tmp_path):
    key = key_file(tmp_path)
    srv = RpcServer(plumb_bin, key)
    env = dict(os.environ, **SAN_ENV)
    client = subprocess.Popen([str(plumb_san_bin), "run", "-m", str(real_model), "-p", "Once upon a time", "-n", "400",
                               "--temp", "0", "--device", srv.device, "--remote-key-file", str(key)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(4)  # loaded and generating
        srv.proc.kill()
        out, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
        srv.proc.wait(10)
    assert client.returncode == 1, err[-2000:]
    assert "remote device 127.0.0.1" in err and not any(m in err for m in SAN_MARKERS), err[-2000:]
