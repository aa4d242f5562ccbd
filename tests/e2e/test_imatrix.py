"""`plumb imatrix` against llama.cpp's llama-imatrix (what it computed, recorded by
scripts/make-imatrix-golden.py in its reference configuration, where llama.cpp's activations
are plumb's bit for bit): Gemma 3 (BOS first) and Qwen2 (no BOS) over the GPL at -c 128 with
several batchings — chunks sharing a pass as sequences split into micro-batches the way
llama.cpp splits them, passes shorter than a chunk, and a final pass of 2 tokens, whose
matmuls llama-imatrix skips (under 16 rows).

The comparison: the file's metadata and tensor names, shapes and counts exactly; the sums (per
weight their total and 16 samples) to a relative 1e-5. The sums are float additions of x^2,
token after token; the tolerance covers another order of those additions (a different
batching or thread split changes the rounding of each addition by at most 2^-24 relative, and
over the ~1000 tokens here the sums' relative error stays far below 1e-5) — on this machine
they are in fact the same bits, which the separate byte-for-byte check of the whole file
asserts. Then: the file read back by gguf-py, the legacy .dat form and --in-file combining, and
the errors (a text too short, an output that cannot be written, leaving nothing behind, a
missing model)."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
TEXT = "/usr/share/common-licenses/GPL-3"
MODELS = {"gemma3": "real_model", "qwen2": "qwen_model"}
CASES = {  # name: model and the arguments both tools get
    "gemma3_c128_b512": {"model": "gemma3", "args": ["-c", "128", "--chunks", "6", "-b", "512"]},
    "gemma3_c128_b64": {"model": "gemma3", "args": ["-c", "128", "--chunks", "3", "-b", "64", "-ub", "32"]},
    "gemma3_c130_b128": {"model": "gemma3", "args": ["-c", "130", "--chunks", "3", "-b", "128"]},
    "qwen2_c128_b2048": {"model": "qwen2", "args": ["-c", "128", "--chunks", "5"]},
}
GOLDEN_PATH = DATA / "golden_imatrix.json"
REL = 1e-5


def summarize(path) -> dict:
    """The imatrix GGUF at path, compactly: its imatrix metadata, and per weight the shape of
    its sums, its counts, the sum of its sums and 16 of them at evenly spread places."""
    import gguf

    r = gguf.GGUFReader(str(path))
    kv = {}
    for f in r.fields.values():
        if f.name in ("general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"):
            v = f.contents()
            kv[f.name] = v if not isinstance(v, (np.generic,)) else v.item()
    tensors = {t.name: t for t in r.tensors}
    out = {}
    for name, t in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        base = name[: -len(".in_sum2")]
        c = tensors[base + ".counts"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and c.tensor_type == gguf.GGMLQuantizationType.F32
        sums = np.asarray(t.data, dtype=np.float32).ravel()
        at = np.linspace(0, sums.size - 1, 16).astype(int)
        out[base] = {
            "shape": [int(x) for x in t.shape],
            "counts": [int(x) for x in np.asarray(c.data).ravel()],
            "total": float(sums.astype(np.float64).sum()),
            "samples": [float(x) for x in sums[at]],
        }
    names = [t.name for t in r.tensors]
    return {"kv": kv, "order": names, "tensors": out}


def golden() -> dict:
    return json.loads(GOLDEN_PATH.read_text())


def imatrix(plumb_bin, *args, timeout=300):
    return subprocess.run([str(plumb_bin), "imatrix", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def close(a, b, rel=REL, abs_=1e-30):
    return abs(a - b) <= max(rel * abs(b), abs_)


_made: dict[str, tuple[Path, str]] = {}


@pytest.fixture(scope="module")
def made(plumb_bin, request, tmp_path_factory):
    """plumb's imatrix of a case (run once per module): the file and stdout."""
    def make(name):
        if name not in _made:
            c = CASES[name]
            out = tmp_path_factory.mktemp(name) / "imatrix.gguf"
            model = request.getfixturevalue(MODELS[c["model"]])
            r = imatrix(plumb_bin, "-m", model, "-f", TEXT, "-o", out, *c["args"], "-t", 2)
            assert r.returncode == 0, r.stderr
            _made[name] = (out, r.stdout)
        return _made[name]
    return make


@pytest.mark.parametrize("name", sorted(CASES))
def test_imatrix_is_llama_imatrixs(name, made):
    g = golden()["cases"][name]
    path, stdout = made(name)
    ppl = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", stdout)]
    assert len(ppl) == len(g["ppl"]) and all(close(a, b, 1e-4) for a, b in zip(ppl, g["ppl"])), (ppl, g["ppl"])
    s = summarize(path)
    assert s["kv"] == g["kv"]
    assert s["order"] == g["order"]  # names sorted, sums then counts
    assert set(s["tensors"]) == set(g["tensors"])
    worst = 0.0
    for w, want in g["tensors"].items():
        got = s["tensors"][w]
        assert got["shape"] == want["shape"] and got["counts"] == want["counts"], (w, got, want)
        for a, b in zip([got["total"], *got["samples"]], [want["total"], *want["samples"]]):
            assert close(a, b), (w, a, b)
            worst = max(worst, abs(a - b) / abs(b) if b else 0.0)
    print(f"{name}: {len(g['tensors'])} weights, max relative difference {worst:.3g}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_imatrix_file_is_llama_imatrixs_byte_for_byte(name, made):
    path, _ = made(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == golden()["cases"][name]["sha256"]


def test_file_as_gguf_py_reads_it(made):
    path, _ = made("qwen2_c128_b2048")
    s = summarize(path)
    assert s["kv"]["general.type"] == "imatrix" and s["kv"]["imatrix.datasets"] == [TEXT]
    assert s["kv"]["imatrix.chunk_count"] == 5 and s["kv"]["imatrix.chunk_size"] == 128
    weights = set(s["tensors"])
    # every layer's seven matmuls (the output head is the tied token_embd: not collected)
    assert weights == {f"blk.{i}.{m}.weight" for i in range(24)
                       for m in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    assert all(t["counts"] == [640] for t in s["tensors"].values())
    assert s["tensors"]["blk.0.attn_q.weight"]["shape"] == [896]
    assert s["tensors"]["blk.0.ffn_down.weight"]["shape"] == [4864]


def test_legacy_dat_round_trip_and_combining(plumb_bin, made, tmp_path):
    path, _ = made("gemma3_c128_b512")
    dat, back, twice = tmp_path / "im.dat", tmp_path / "back.gguf", tmp_path / "twice.gguf"
    r = imatrix(plumb_bin, "--in-file", path, "--output-format", "dat", "-o", dat, "-c", 128)
    assert r.returncode == 0, r.stderr
    raw = dat.read_bytes()
    n = int.from_bytes(raw[:4], "little", signed=True)
    assert n == len(summarize(path)["tensors"])
    # the dataset's name closes the legacy file
    assert raw.endswith(int.to_bytes(len(TEXT), 4, "little") + TEXT.encode())
    r = imatrix(plumb_bin, "--in-file", dat, "-o", back, "-c", 128)
    assert r.returncode == 0, r.stderr
    a, b = summarize(path), summarize(back)
    assert b["kv"]["imatrix.chunk_count"] == 6 and b["kv"]["imatrix.datasets"] == [TEXT]
    for w, t in a["tensors"].items():  # sum / count * ncall * chunk size: the sums again, rounded twice
        u = b["tensors"][w]
        assert u["counts"] == t["counts"] and all(close(x, y, 1e-6) for x, y in zip(u["samples"], t["samples"])), w
    r = imatrix(plumb_bin, "--in-file", path, "--in-file", path, "-o", twice, "-c", 128)
    assert r.returncode == 0, r.stderr
    c = summarize(twice)
    assert c["kv"]["imatrix.chunk_count"] == 12 and c["kv"]["imatrix.datasets"] == [TEXT, TEXT]
    for w, t in a["tensors"].items():  # doubling is exact in float
        u = c["tensors"][w]
        assert u["counts"] == [2 * x for x in t["counts"]] and u["samples"] == [2 * x for x in t["samples"]], w


def test_text_too_short_says_so_and_leaves_the_output(plumb_bin, real_model, tmp_path):
    out = tmp_path / "imatrix.gguf"
    out.write_bytes(b"before")
    r = imatrix(plumb_bin, "-m", real_model, "-f", TEXT, "-o", out, "-c", 4096)
    assert r.returncode == 1
    assert re.search(r"has \d+ tokens; at least 8192 \(two chunks of -c 4096\) are needed", r.stderr), r.stderr
    assert out.read_bytes() == b"before" and sorted(tmp_path.iterdir()) == [out]


def test_unwritable_output_is_an_error_with_nothing_left(plumb_bin, real_model, tmp_path):
    target = tmp_path / "a-directory"
    target.mkdir()
    r = imatrix(plumb_bin, "-m", real_model, "-f", TEXT, "-o", target, "-c", 128, "--chunks", 2)
    assert r.returncode == 1 and "cannot write" in r.stderr, r.stderr
    assert sorted(tmp_path.iterdir()) == [target] and not list(target.iterdir())
    r = imatrix(plumb_bin, "-m", real_model, "-f", TEXT, "-o", tmp_path / "no" / "such" / "x.gguf", "-c", 128,
                "--chunks", 2)
    assert r.returncode == 1 and "no/such/x.gguf" in r.stderr, r.stderr
    assert sorted(tmp_path.iterdir()) == [target]


def test_missing_model_and_bad_usage(plumb_bin, tmp_path):
    r = imatrix(plumb_bin, "-m", tmp_path / "nope.gguf", "-f", TEXT, "-o", tmp_path / "x.gguf")
    assert r.returncode == 1 and "nope.gguf" in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())
    r = imatrix(plumb_bin, "-f", TEXT)
    assert r.returncode == 2 and "-m MODEL" in r.stderr
    r = imatrix(plumb_bin, "--in-file", tmp_path / "none.gguf", "-o", tmp_path / "x.gguf")
    assert r.returncode == 1 and "none.gguf" in r.stderr
    r = imatrix(plumb_bin, "--output-format", "csv", "-f", TEXT)
    assert r.returncode == 2 and "gguf or dat" in r.stderr
