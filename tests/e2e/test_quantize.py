"""plumb quantize: the same bytes as llama.cpp's llama-quantize for every file type, mixture
preset and option in tests/e2e/data/golden_quantize.json (scripts/make-quantize-golden.py),
on F16 versions of the real models (made here by plumb quantize itself, which must match
llama-quantize's F16 too) and on small synthetic F32 models; the outputs load and read back;
and bad input fails with a clear message and no file left behind.

By default a subset of the cases runs (every synthetic one, the main presets of both real
models, each option once); PLUMB_QUANTIZE_ALL=1 runs them all (about 3 more minutes).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import gguf
import pytest

import quantize_inputs as qi
from conftest import REPO, SAN_ENV

GOLDEN = json.loads((REPO / "tests" / "e2e" / "data" / "golden_quantize.json").read_text())
CASES = {c["id"]: c for c in GOLDEN["cases"]}

DEFAULT_CASES = {
    "gemma-Q4_K_M", "gemma-Q4_0", "gemma-Q8_0", "gemma-Q6_K", "gemma-Q5_K_M", "gemma-Q3_K_M", "gemma-Q2_K",
    "gemma-pure-Q4_K", "gemma-pure-Q3_K", "gemma-pure-Q5_1", "gemma-Q4_K_M-out-q8_0-embd-q4_0",
    "gemma-Q3_K-pure-out-q6_K", "gemma-Q4_K_M-imatrix", "gemma-Q2_K_S-imatrix", "gemma-Q4_K_S-imatrix-dat",
    "qwen-Q4_K_M", "qwen-pure-Q4_K",
}


def _selected(cid: str) -> bool:
    return os.environ.get("PLUMB_QUANTIZE_ALL") == "1" or cid.startswith("synth-") or cid in DEFAULT_CASES


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def quantize(binary: Path, cwd: Path, *args, timeout: float = 300.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, **SAN_ENV)
    return subprocess.run([str(binary), "quantize", *[str(a) for a in args]], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def work(tmp_path_factory, plumb_bin, real_model, qwen_model) -> Path:
    """A directory with every input of the golden cases, made without llama.cpp."""
    d = tmp_path_factory.mktemp("quantize")
    inputs = qi.make_synth(d)
    for key, model in (("gemma", real_model), ("qwen", qwen_model)):
        p = d / f"{key}-f16.gguf"
        r = quantize(plumb_bin, d, "-q", "--allow-requantize", model, p, "F16", "2")
        assert r.returncode == 0, r.stderr
        inputs[f"{key}-f16"] = p
    qi.make_imatrices(d, inputs)
    return d


def _input_sha(work: Path, name: str) -> str:
    return sha256(work / (name + ".gguf"))


@pytest.mark.parametrize("name", ["gemma-f16", "qwen-f16"])
def test_requantize_to_f16_matches_llama_cpp(work, name):
    # plumb's dequantization of Q4_K_M (and its F16 writer) give llama-quantize's file
    assert _input_sha(work, name) == GOLDEN["inputs"][name]["sha256"]


@pytest.mark.parametrize("cid", [c for c in CASES if _selected(c)])
def test_same_bytes_as_llama_quantize(work, plumb_bin, cid):
    c = CASES[cid]
    want_in = GOLDEN["inputs"][c["input"]]["sha256"]
    if _input_sha(work, c["input"]) != want_in:
        pytest.fail(f"input {c['input']} differs from the one the golden file was made from (gguf-py or "
                    f"numpy changed?): rerun scripts/make-quantize-golden.py")
    for opt in c["options"]:
        if opt.startswith("imatrix-"):
            assert sha256(work / opt) == GOLDEN["inputs"][opt]["sha256"]
    out = work / f"out-{cid}.gguf"
    r = quantize(plumb_bin, work, "-q", *c["options"], c["input"] + ".gguf", out.name, c["type"], "2")
    assert r.returncode == 0, r.stderr
    try:
        assert out.stat().st_size == c["size"]
        assert sha256(out) == c["sha256"], f"{cid}: output differs from llama-quantize's"
    finally:
        out.unlink(missing_ok=True)


def test_output_loads_and_reads_back(work, plumb_bin, run):
    out = work / "load-Q4_K_M.gguf"
    r = quantize(plumb_bin, work, "--imatrix", "imatrix-gemma.gguf", "gemma-f16.gguf", out.name, "Q4_K_M")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("[   1/ 236] ") and " f32 -> f32 " in lines[0]
    assert any("blk.0.attn_q.weight" in ln and "f16 -> q5_0" in ln and "[640 x 1024]" in ln for ln in lines), r.stdout
    assert lines[-1].startswith("quantized gemma-f16.gguf -> load-Q4_K_M.gguf (Q4_K_M): ")
    rd = gguf.GGUFReader(str(out))
    f = rd.fields
    assert int(f["general.file_type"].parts[-1][0]) == 15
    assert int(f["general.quantization_version"].parts[-1][0]) == 2
    assert bytes(f["quantize.imatrix.file"].parts[-1]).decode() == "imatrix-gemma.gguf"
    assert len(rd.tensors) == 236
    g = run(plumb_bin, "run", "-m", out, "-p", "The capital of France is", "-n", "4", "--temp", "0")
    assert g.rc == 0, g.describe()
    assert g.stdout.strip(), g.describe()
    out.unlink()


def _leftovers(d: Path, before: set[str]) -> set[str]:
    return {p.name for p in d.iterdir()} - before


def test_unknown_type_lists_valid_ones(work, plumb_bin):
    before = {p.name for p in work.iterdir()}
    r = quantize(plumb_bin, work, "synth-odd-f32.gguf", "x.gguf", "Q7_K")
    assert r.returncode == 2
    assert "unknown type 'Q7_K'" in r.stderr and "Q4_K_M" in r.stderr and "Q8_0" in r.stderr and "F16" in r.stderr
    r = quantize(plumb_bin, work, "--output-tensor-type", "q9", "synth-odd-f32.gguf", "x.gguf", "Q4_0")
    assert r.returncode == 2 and "q6_K" in r.stderr
    assert _leftovers(work, before) == set()


def test_requantize_needs_allow_requantize(work, plumb_bin, real_model):
    before = {p.name for p in work.iterdir()}
    r = quantize(plumb_bin, work, real_model, "x.gguf", "Q8_0")
    assert r.returncode == 1
    assert "already quantized" in r.stderr and "--allow-requantize" in r.stderr
    assert _leftovers(work, before) == set()


def test_imatrix_of_another_model(work, plumb_bin):
    before = {p.name for p in work.iterdir()}
    r = quantize(plumb_bin, work, "--imatrix", "imatrix-qwen.gguf", "gemma-f16.gguf", "x.gguf", "Q4_K_M")
    assert r.returncode == 1
    assert "imatrix-qwen.gguf" in r.stderr and "another model" in r.stderr
    r = quantize(plumb_bin, work, "--imatrix", "imatrix-qwen.gguf", "synth-odd-f32.gguf", "x.gguf", "Q4_K_M")
    assert r.returncode == 1 and "another model" in r.stderr
    assert _leftovers(work, before) == set()


def test_bad_imatrix_files(work, plumb_bin):
    good = (work / "imatrix-gemma.dat").read_bytes()
    bad = {
        "empty.dat": b"",
        "trunc.dat": good[:1000],
        "neg.dat": b"\xff\xff\xff\xff" + good[4:],
        "gguf-trunc.gguf": (work / "imatrix-synth.gguf").read_bytes()[:700],
    }
    for name, data in bad.items():
        (work / name).write_bytes(data)
        r = quantize(plumb_bin, work, "--imatrix", name, "synth-llama-f32.gguf", "x.gguf", "Q4_K_M")
        assert r.returncode == 1, (name, r.stderr)
        assert name in r.stderr and "Sanitizer" not in r.stderr, (name, r.stderr)
        assert not (work / "x.gguf").exists()
        (work / name).unlink()


def test_q2_k_s_needs_an_imatrix(work, plumb_bin):
    r = quantize(plumb_bin, work, "synth-llama-f32.gguf", "x.gguf", "Q2_K_S")
    assert r.returncode == 1 and "importance matrix" in r.stderr
    assert not (work / "x.gguf").exists()


def test_bad_input_and_unwritable_output(work, plumb_bin, tmp_path):
    before = {p.name for p in work.iterdir()}
    src = (work / "synth-odd-f32.gguf").read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(src[: len(src) // 2])
    (tmp_path / "garbage.gguf").write_bytes(b"not a gguf file at all" * 100)
    for name in ("trunc.gguf", "garbage.gguf"):
        r = quantize(plumb_bin, tmp_path, name, "x.gguf", "Q8_0")
        assert r.returncode == 1 and name in r.stderr, r.stderr
    assert not (tmp_path / "x.gguf").exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = quantize(plumb_bin, work, "synth-odd-f32.gguf", ro / "x.gguf", "Q8_0")
        if os.geteuid() != 0:  # root writes anywhere
            assert r.returncode == 1 and "x.gguf" in r.stderr
            assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
    r = quantize(plumb_bin, work, "synth-odd-f32.gguf", tmp_path / "no" / "such" / "x.gguf", "Q8_0")
    assert r.returncode == 1 and "cannot create" in r.stderr
    # the output may not be the input
    shutil.copy(work / "synth-odd-f32.gguf", tmp_path / "same.gguf")
    r = quantize(plumb_bin, tmp_path, "same.gguf", "./same.gguf", "Q8_0")
    assert r.returncode == 1 and "overwrite the input" in r.stderr
    assert sha256(tmp_path / "same.gguf") == sha256(work / "synth-odd-f32.gguf")
    assert _leftovers(work, before) == set()


def test_full_disk_leaves_nothing(work, plumb_bin, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True)
    if m.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {m.stderr.decode(errors='replace').strip()}")
    try:
        r = quantize(plumb_bin, work, "synth-llama-f32.gguf", small / "x.gguf", "Q8_0")
        assert r.returncode == 1, r.stdout
        assert "write failed" in r.stderr and "No space left" in r.stderr, r.stderr
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
