"""End-to-end tests of `plumb serve --models-dir DIR`: a server with a model catalog (the GGUF
files of a directory) serves several models, one in memory at a time, chosen by each request's
"model" field. GET /v1/models lists them; greedy replies of alternating requests equal those of
a single-model server; concurrent requests for two models all complete, with fewer switches
than requests; requests for the loaded model queue behind a pending switch (no starvation);
unknown models get one clear 404; a server started without -m loads the first model named; a
file copied in while serving is listed; a corrupt GGUF fails only the requests naming it; the
CLI refuses what it cannot do; and a switching run of the sanitizer build is clean.
Servers bind 127.0.0.1 on a port the kernel picks and every wait is bounded; --mmap keeps the
many model loads cheap.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import SAN_MARKERS
from serving import Server, SlotHolder, stream_raw, wait_for

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSGS = [{"role": "user", "content": "Name three colors."}]
N_PREDICT = 8


class CatalogServer(Server):
    """`plumb serve --models-dir DIR` (no DIR: another catalog given in args, such as --store;
    with -m only when model is given), otherwise as Server."""

    def __init__(self, binary: Path, models_dir: Path | None, *args, model: Path | str | None = None,
                 ready_timeout: float = 60.0, env: dict | None = None):
        super().__init__(binary, model, *(["--models-dir", models_dir] if models_dir else []), *args,
                         ready_timeout=ready_timeout, env=env)

    def health(self) -> dict:
        s, b = self.get("/health")
        assert s == 200, (s, b)
        return json.loads(b)

    def models(self) -> dict[str, bool]:
        """id -> loaded, in the order listed."""
        s, _, b = self.request("GET", "/v1/models")
        assert s == 200, b
        j = json.loads(b)
        assert j["object"] == "list"
        for m in j["data"]:
            assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"], m
        ids = [m["id"] for m in j["data"]]
        assert len(ids) == len(set(ids)), ids
        return {m["id"]: m["loaded"] for m in j["data"]}

    def chat(self, model: str | None, n: int = N_PREDICT, **kw):
        body = {"messages": MSGS, "max_tokens": n, "temperature": 0, **kw}
        if model is not None:
            body["model"] = model
        return self.post(CHAT, body)


@pytest.fixture
def models_dir(tmp_path, real_model, qwen_model) -> Path:
    """A directory with the two real models (symbolic links) under short names, and things a
    catalog must not list: a sub-directory named like a model, a text file, a hidden file and
    a name with a space."""
    d = tmp_path / "models"
    d.mkdir()
    (d / "gemma.gguf").symlink_to(real_model)
    (d / "qwen.gguf").symlink_to(qwen_model)
    (d / "sub.gguf").mkdir()
    (d / "sub.gguf" / "inner.gguf").symlink_to(real_model)
    (d / "notes.txt").write_text("not a model")
    (d / ".hidden.gguf").symlink_to(real_model)
    (d / "odd name.gguf").symlink_to(real_model)
    (d / "dangling.gguf").symlink_to(tmp_path / "missing.gguf")
    return d


@pytest.fixture(scope="module")
def reference(plumb_bin, real_model, qwen_model) -> dict[str, str]:
    """The greedy chat reply of each model on a single-model server."""
    out = {}
    for name, path in (("gemma", real_model), ("qwen", qwen_model)):
        s = Server(plumb_bin, path, "--mmap", "-np", "2")
        try:
            st, _, j = s.post(CHAT, {"messages": MSGS, "max_tokens": N_PREDICT, "temperature": 0})
            assert st == 200, j
            out[name] = j["choices"][0]["message"]["content"]
        finally:
            assert s.stop() == 0, s.stderr
    assert out["gemma"] != out["qwen"]
    return out


def loads(s: Server) -> float:
    return s.metrics()["plumb_model_loads_total"]


# ---- listing, loading on first use, switching ---------------------------------------------------

def test_no_model_at_start_then_first_request_loads(plumb_bin, models_dir, reference):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "2")
    try:
        assert s.health() == {"status": "ok", "model": None, "loaded": False, "slots_idle": 2, "slots_total": 2}
        assert s.models() == {"gemma": False, "qwen": False}
        m = s.metrics()
        assert m["plumb_model_loads_total"] == 0 and not any(k.startswith("plumb_model_loaded{") for k in m)
        # nothing loaded and no model named: nothing to use
        st, _, j = s.chat(None)
        assert st == 400 and j["error"]["code"] == "model_not_loaded" and "GET /v1/models" in j["error"]["message"], j
        st, _, j = s.post("/tokenize", {"content": "hi"})
        assert st == 400 and j["error"]["code"] == "model_not_loaded", j
        st, _, j = s.chat("qwen")
        assert st == 200 and j["model"] == "qwen", j
        assert j["choices"][0]["message"]["content"] == reference["qwen"]
        assert s.health() == {"status": "ok", "model": "qwen", "loaded": True, "slots_idle": 2, "slots_total": 2}
        assert s.models() == {"qwen": True, "gemma": False}
        m = s.metrics()
        assert m["plumb_model_loads_total"] == 1 and m['plumb_model_loaded{model="qwen"}'] == 1
        # no model named: the loaded one, without a switch
        st, _, j = s.chat(None)
        assert st == 200 and j["model"] == "qwen" and j["choices"][0]["message"]["content"] == reference["qwen"]
        st, _, j = s.chat("")
        assert st == 200 and j["model"] == "qwen"
        # the file's name is an alias; the id is what answers
        st, _, j = s.post(COMP, {"model": "gemma.gguf", "prompt": "Once upon", "max_tokens": 2})
        assert st == 200 and j["model"] == "gemma", j
        assert s.request("GET", "/v1/models/gemma")[0] == 200
        assert json.loads(s.request("GET", "/v1/models/gemma")[2])["loaded"] is True
        assert loads(s) == 2
    finally:
        assert s.stop() == 0, s.stderr


def test_alternating_models_match_single_model_servers(plumb_bin, models_dir, reference):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "2")
    try:
        for name in ("gemma", "qwen", "gemma", "qwen"):
            st, _, j = s.chat(name)
            assert st == 200 and j["model"] == name, j
            assert j["choices"][0]["message"]["content"] == reference[name], name
        # streamed, after a switch
        events, _ = stream_raw(s.port, CHAT, {"model": "gemma", "messages": MSGS, "max_tokens": N_PREDICT,
                                              "temperature": 0, "stream": True})
        chunks = [json.loads(e) for e in events if e != "[DONE]"]
        assert all(c["model"] == "gemma" for c in chunks)
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == reference["gemma"]
        assert loads(s) == 5
        assert "loaded model 'qwen'" in s.stderr and "unloading model 'qwen' for 'gemma'" in s.stderr
    finally:
        assert s.stop() == 0, s.stderr


def test_each_model_renders_its_own_chat_template(plumb_bin, models_dir, tmp_path):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "1")
    try:
        body = {"messages": MSGS}
        st, _, g = s.post("/apply-template", dict(body, model="gemma"))
        assert st == 200 and "<start_of_turn>user" in g["prompt"], g
        st, _, q = s.post("/apply-template", dict(body, model="qwen"))
        assert st == 200 and "<|im_start|>user" in q["prompt"], q
        st, _, t = s.post("/tokenize", {"model": "gemma", "content": "hello"})
        assert st == 200 and t["tokens"], t
        st, _, t = s.post("/detokenize", {"model": "qwen", "tokens": [14990]})
        assert st == 200 and isinstance(t["content"], str), t
        st, _, p = s.request("GET", "/props")
        assert st == 200 and json.loads(p)["model_alias"] == "qwen"
    finally:
        assert s.stop() == 0, s.stderr
    tmpl = tmp_path / "t.jinja"
    tmpl.write_text("[{% for m in messages %}{{ m['content'] }}{% endfor %}]")
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "1", "--chat-template-file", tmpl)
    try:
        for name in ("gemma", "qwen"):
            st, _, j = s.post("/apply-template", {"model": name, "messages": MSGS})
            assert st == 200 and j["prompt"].endswith("[Name three colors.]"), j
    finally:
        assert s.stop() == 0, s.stderr


def test_concurrent_requests_for_two_models_all_complete(plumb_bin, models_dir, reference):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "2")
    names = ["gemma", "qwen"] * 4
    results: list = [None] * len(names)

    def one(i):
        body = {"model": names[i], "messages": MSGS, "max_tokens": N_PREDICT, "temperature": 0}
        if i % 3 == 2:
            events, _ = stream_raw(s.port, CHAT, dict(body, stream=True), timeout=120)
            chunks = [json.loads(e) for e in events if e != "[DONE]"]
            results[i] = (200, chunks[0]["model"],
                          "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]))
        else:
            st, _, j = s.post(CHAT, body, timeout=120)
            results[i] = (st, j.get("model"), j["choices"][0]["message"]["content"] if st == 200 else j)

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        assert not any(t.is_alive() for t in threads), "a request hangs"
        for name, r in zip(names, results):
            assert r == (200, name, reference[name]), (name, r)
        # waiting requests for a model are served together once it is loaded: fewer switches than requests
        assert 2 <= loads(s) < len(names), s.stderr
        wait_for(lambda: s.metrics()["plumb_slots_busy"] == 0, 10, "idle slots")
    finally:
        assert s.stop() == 0, s.stderr


def test_pending_switch_is_not_starved_and_health_shows_loading(plumb_bin, models_dir):
    """Requests for the loaded model that come after a request for another one wait behind it."""
    s = CatalogServer(plumb_bin, models_dir, "-np", "2", model=models_dir / "qwen.gguf")  # no --mmap: a slow load
    done: dict[str, float] = {}

    def req(key, model, n):
        st, _, j = s.post(COMP, {"model": model, "prompt": "Count: 1, 2, 3,", "max_tokens": n, "temperature": 0},
                          timeout=120)
        assert st == 200 and j["model"] == model, j
        done[key] = time.monotonic()

    try:
        assert s.health()["model"] == "qwen"
        first = threading.Thread(target=req, args=("qwen1", "qwen", 32))
        first.start()
        wait_for(lambda: s.metrics()["plumb_slots_busy"] == 1, 20, "the first request to run")
        switch = threading.Thread(target=req, args=("gemma", "gemma", 2))
        switch.start()
        time.sleep(0.3)  # the switch is pending now: qwen1 still runs
        later = threading.Thread(target=req, args=("qwen2", "qwen", 2))
        later.start()
        seen = set()
        deadline = time.monotonic() + 60
        while "gemma" not in done and time.monotonic() < deadline:
            h = s.health()
            seen.add((h["status"], h["model"], h["loaded"]))
            time.sleep(0.01)
        for t in (first, switch, later):
            t.join(120)
        assert done["qwen1"] < done["gemma"] < done["qwen2"], done
        assert ("loading", "gemma", False) in seen, seen
        assert loads(s) == 3
    finally:
        assert s.stop() == 0, s.stderr


def test_requests_waiting_for_a_switch_are_bounded_by_the_queue(plumb_bin, models_dir):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "1", "--queue", "0", model=models_dir / "qwen.gguf")
    # a streamed request that holds the one slot until this test hangs up on it
    long = SlotHolder(s.port, COMP, {"model": "qwen", "prompt": "Count: 1, 2,", "max_tokens": 1500, "temperature": 0})
    try:
        wait_for(lambda: s.metrics()["plumb_slots_busy"] == 1, 20, "the long request to run")
        # a client that leaves while waiting for its model gives its place back
        cancelled = s.metrics()["plumb_requests_cancelled_total"]
        body = json.dumps({"model": "gemma", "messages": MSGS, "max_tokens": 2}).encode()
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            time.sleep(0.3)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset on close
        wait_for(lambda: s.metrics()["plumb_requests_cancelled_total"] == cancelled + 1, 10, "the waiting client to be gone")
        waiting = []
        t = threading.Thread(target=lambda: waiting.append(s.chat("gemma", 2)))
        t.start()
        time.sleep(0.3)
        st, h, j = s.chat("gemma", 2)  # the one place to wait is taken
        assert st == 503 and j["error"]["code"] == "server_busy" and h.get("retry-after"), j
        assert not waiting and s.health()["model"] == "qwen"  # the long request still runs
        long.close()  # the slot frees, and the waiting request switches the model
        t.join(60)
        assert waiting[0][0] == 200 and waiting[0][2]["model"] == "gemma", waiting
    finally:
        long.close()
        assert s.stop() == 0, s.stderr


# ---- names, the directory, failures ------------------------------------------------------------

def test_unknown_model_is_one_clear_404(plumb_bin, models_dir):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "1")
    try:
        for name in ("nope", "sub", "notes", "../models/gemma", "odd name", ".hidden", "dangling", "x" * 600):
            st, _, j = s.chat(name)
            assert st == 404, (name, j)
            e = j["error"]
            assert e["code"] == "model_not_found" and e["param"] == "model" and "GET /v1/models" in e["message"], e
            assert s.post("/tokenize", {"model": name, "content": "x"})[0] == 404
        st, _, b = s.request("GET", "/v1/models/nope")
        assert st == 404 and json.loads(b)["error"]["code"] == "model_not_found"
        st, _, j = s.chat(7)
        assert st == 400 and j["error"]["param"] == "model"
        assert loads(s) == 0 and s.health()["loaded"] is False
    finally:
        assert s.stop() == 0, s.stderr


def test_model_added_while_serving_is_listed(plumb_bin, models_dir, real_model):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "1")
    try:
        assert list(s.models()) == ["gemma", "qwen"]
        shutil.copyfile(real_model, models_dir / "copy.part")
        os.rename(models_dir / "copy.part", models_dir / "gemma-copy.gguf")
        assert list(s.models()) == ["gemma", "gemma-copy", "qwen"]
        st, _, j = s.post(COMP, {"model": "gemma-copy", "prompt": "Once", "max_tokens": 2})
        assert st == 200 and j["model"] == "gemma-copy", j
        os.remove(models_dir / "gemma-copy.gguf")  # loaded, then gone from the directory: still listed while loaded
        assert s.models() == {"gemma-copy": True, "gemma": False, "qwen": False}
        st, _, j = s.post(COMP, {"model": "gemma-copy", "prompt": "Once", "max_tokens": 2})
        assert st == 200, j
    finally:
        assert s.stop() == 0, s.stderr


def test_corrupt_model_fails_its_requests_only(plumb_bin, models_dir, real_model):
    (models_dir / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    (models_dir / "cut.gguf").write_bytes(real_model.read_bytes()[:1 << 20])
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "2")
    try:
        assert list(s.models()) == ["broken", "cut", "gemma", "qwen"]
        st, _, j = s.chat("gemma", 2)
        assert st == 200
        for name in ("broken", "cut", "broken"):  # each try loads again, and fails again
            st, _, j = s.chat(name, 2)
            assert st == 500 and j["error"]["code"] == "model_load_failed", j
            assert f"cannot load model '{name}'" in j["error"]["message"], j
            assert f"{name}.gguf" in j["error"]["message"] and str(models_dir) not in j["error"]["message"], j
            assert s.health() == {"status": "ok", "model": None, "loaded": False, "slots_idle": 2,
                                  "slots_total": 2}
        st, _, j = s.chat(None)
        assert st == 400 and j["error"]["code"] == "model_not_loaded"
        st, _, j = s.chat("qwen", 2)
        assert st == 200 and j["model"] == "qwen", j
        m = s.metrics()
        assert m["plumb_model_load_failures_total"] == 3 and m["plumb_model_loads_total"] == 2
        assert "cannot load model 'cut'" in s.stderr
    finally:
        assert s.stop() == 0, s.stderr


def test_m_with_models_dir_lists_and_loads_it_first(plumb_bin, models_dir, qwen_model):
    s = CatalogServer(plumb_bin, models_dir, "--mmap", "-np", "1", "--alias", "coder", model=qwen_model)
    try:
        assert s.health() == {"status": "ok", "model": "coder", "loaded": True, "slots_idle": 1, "slots_total": 1}
        assert s.models() == {"coder": True, "gemma": False, "qwen": False}
        st, _, j = s.chat("coder", 2)
        assert st == 200 and j["model"] == "coder"
        assert loads(s) == 1
        st, _, j = s.chat("gemma", 2)
        assert st == 200 and j["model"] == "gemma"
        assert s.models() == {"gemma": True, "coder": False, "qwen": False}
        st, _, j = s.chat("coder", 2)  # back to the -m model
        assert st == 200 and j["model"] == "coder" and loads(s) == 3
    finally:
        assert s.stop() == 0, s.stderr


# ---- the command ------------------------------------------------------------------------------

def test_cli_models_dir_options(plumb_bin, models_dir, tmp_path):
    h = subprocess.run([str(plumb_bin), "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert h.returncode == 0 and "--models-dir DIR" in h.stdout and "PLUMB_ARG_MODELS_DIR" in h.stdout
    assert "one model is in memory at a time" in h.stdout
    cases = [
        (["--models-dir", str(models_dir), "--embeddings"], 2, "--embeddings"),
        (["--models-dir", str(tmp_path / "none")], 1, "No such file or directory"),
        (["--models-dir", str(models_dir / "notes.txt")], 1, "Not a directory"),
        (["--models-dir", ""], 2, "bad value"),
        (["--models-dir", str(models_dir), "--alias", "x"], 2, "--alias names the -m model"),
        ([], 2, "usage"),
    ]
    for args, rc, words in cases:
        p = subprocess.run([str(plumb_bin), "serve", "--port", "0", *args], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == rc and words in p.stderr, (args, p.returncode, p.stderr)
    # from the environment, like every option
    env = dict(os.environ, PLUMB_ARG_MODELS_DIR=str(models_dir))
    p = subprocess.Popen([str(plumb_bin), "serve", "--port", "0"], stderr=subprocess.PIPE, env=env)
    try:
        line = p.stderr.readline().decode()
        assert "listening on" in line and str(models_dir) in line, line
    finally:
        p.terminate()
        assert p.wait(30) == 0


# ---- the sanitizer build ----------------------------------------------------------------------

def test_sanitizer_build_switching_models(plumb_san_bin, models_dir):
    (models_dir / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    s = CatalogServer(plumb_san_bin, models_dir, "--mmap", "-np", "2", "-c", "256", ready_timeout=120)
    try:
        results = []

        def one(name):
            results.append((name, s.post(COMP, {"model": name, "prompt": "Once", "max_tokens": 2}, timeout=300)[0]))

        threads = [threading.Thread(target=one, args=(n,)) for n in ("gemma", "qwen", "gemma", "broken")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert sorted(results) == [("broken", 500), ("gemma", 200), ("gemma", 200), ("qwen", 200)], results
        assert s.chat("nope")[0] == 404
        assert "gemma" in s.models()
    finally:
        rc = s.stop(120)
    assert rc == 0 and not any(m in s.stderr for m in SAN_MARKERS), s.stderr
