"""/v1/embeddings (--embeddings) through the official openai client on the real Qwen model,
against llama.cpp's embeddings of the same texts (tests/e2e/data/golden_embed.json, made by
scripts/make-golden.py --only embed): mean and last pooling, L2-normalized; list and token
inputs, base64, usage, and the errors (dimensions, no --embeddings, generation refused)."""
from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from serving import Server

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_embed.json").read_text())
TEXTS = [t["text"] for t in GOLDEN["texts"]]


@pytest.fixture(scope="module", params=["mean", "last"])
def srv(request, plumb_bin, qwen_model):
    s = Server(plumb_bin, qwen_model, "--parallel", "2", "-c", "512", "--embeddings", "--pooling", request.param)
    s.pooling = request.param
    yield s
    s.stop()


def test_embeddings_match_llama_cpp(srv):
    r = srv.client().embeddings.create(model="m", input=TEXTS)
    assert [d.index for d in r.data] == list(range(len(TEXTS))) and r.object == "list"
    for d, g in zip(r.data, GOLDEN["texts"]):
        got, want = np.array(d.embedding), np.array(g[srv.pooling])
        assert got.shape == want.shape == (896,)
        assert abs(np.linalg.norm(got) - 1) < 1e-5
        assert np.abs(got - want).max() < 1e-6, (g["text"], np.abs(got - want).max())
    assert r.usage.prompt_tokens == sum(len(g["ids"]) for g in GOLDEN["texts"]) == r.usage.total_tokens


def test_token_inputs_and_base64(srv):
    g = GOLDEN["texts"][0]
    by_text = srv.client().embeddings.create(model="m", input=g["text"]).data[0].embedding
    st, _, b = srv.post("/v1/embeddings", {"input": g["ids"]})
    assert st == 200 and np.allclose(b["data"][0]["embedding"], by_text, atol=1e-7)
    st, _, b = srv.post("/v1/embeddings", {"input": [g["ids"], GOLDEN["texts"][1]["ids"]], "encoding_format": "base64"})
    assert st == 200, b
    raw = base64.b64decode(b["data"][0]["embedding"])
    assert np.allclose(struct.unpack(f"<{len(raw) // 4}f", raw), by_text, atol=1e-7)


@pytest.mark.parametrize("body,param", [({"input": ""}, "input"), ({"input": []}, "input"), ({}, "input"),
                                        ({"input": "x", "dimensions": 64}, "dimensions"),
                                        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
                                        ({"input": [[1 << 30]]}, "input")])
def test_bad_embedding_requests(srv, body, param):
    st, _, b = srv.post("/v1/embeddings", body)
    assert st == 400 and b["error"]["param"] == param, b


def test_embeddings_server_does_not_generate(srv):
    st, _, b = srv.post("/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert st == 501 and "--embeddings" in b["error"]["message"]


def test_generation_server_has_no_embeddings(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "128")
    try:
        st, _, b = s.post("/v1/embeddings", {"input": "x"})
        assert st == 501 and "--embeddings" in b["error"]["message"]
    finally:
        s.stop()


def test_cli_embed(plumb_bin, qwen_model):
    import subprocess
    texts = TEXTS[:3]
    r = subprocess.run([str(plumb_bin), "embed", "-m", str(qwen_model), "--pooling", "last", *texts],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [x["index"] for x in rows] == [0, 1, 2]
    for x, g in zip(rows, GOLDEN["texts"]):
        assert x["tokens"] == len(g["ids"]) and np.abs(np.array(x["embedding"]) - g["last"]).max() < 1e-6
    r = subprocess.run([str(plumb_bin), "embed", "-m", str(qwen_model), "-"], input="\n".join(texts[:2]) + "\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = [json.loads(ln)["embedding"] for ln in r.stdout.splitlines()]
    assert len(got) == 2 and np.abs(np.array(got[1]) - GOLDEN["texts"][1]["mean"]).max() < 1e-6
    r = subprocess.run([str(plumb_bin), "embed", "-m", str(qwen_model), "--pooling", "max", "x"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "mean, last or cls" in r.stderr
