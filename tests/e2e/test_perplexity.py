"""`plumb perplexity` against llama.cpp's llama-perplexity (the numbers it printed, recorded by
scripts/make-perplexity-golden.py in its reference configuration, where llama.cpp's logits are
plumb's bit for bit): the running and final perplexity of Gemma 3 (BOS first) and Qwen2 (no
BOS) at several context sizes and batchings, of Gemma 3 quantized to the low-bit K types, the KL-divergence base file byte for byte, and
every statistic of a perturbed model against that base. The issue's bar is 4 significant
digits; the checks hold to the digits printed (the sums' order is llama.cpp's thread order).
Then the errors: a text shorter than two chunks, a base file that is not one or was made for
another vocabulary, a missing text."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import perturb

DATA = Path(__file__).parent / "data"
GOLDEN = json.loads((DATA / "golden_perplexity.json").read_text())
TEXT = GOLDEN["text"]
MODELS = {"gemma3": "real_model", "qwen2": "qwen_model"}


def ppl(plumb_bin, *args, timeout=600):
    return subprocess.run([str(plumb_bin), "perplexity", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def parse_ppl(out):
    chunks = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", out)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    assert m, out
    return chunks, float(m.group(1)), float(m.group(2))


def close(a, b, rel=1e-4, abs_=1e-6):
    return abs(a - b) <= max(rel * abs(b), abs_)


def assert_golden(r, g):
    """A perplexity run r printed the recorded chunks, final value and error of g."""
    assert r.returncode == 0, r.stderr
    chunks, value, err = parse_ppl(r.stdout)
    assert len(chunks) == len(g["chunks"]), r.stdout
    assert all(close(a, b) for a, b in zip(chunks, g["chunks"])), (chunks, g["chunks"])
    assert close(value, g["ppl"]) and close(err, g["err"], rel=1e-3), (value, err, g)


@pytest.mark.parametrize("name", sorted(GOLDEN["cases"]))
def test_perplexity_is_llama_perplexitys(name, plumb_bin, request):
    g = GOLDEN["cases"][name]
    model = request.getfixturevalue(MODELS[g["model"]])
    assert_golden(ppl(plumb_bin, "-m", model, "-f", TEXT, "-c", g["ctx"], "--chunks", g["n_chunks"], "-b", g["batch"], "-t", 2), g)


@pytest.mark.parametrize("fixture", ["real_model", "qwen_model"])
def test_no_repack_gives_the_same_bytes(fixture, plumb_bin, request, tmp_path):
    """--no-repack (the prompt matmuls without the CPU's interleaved GEMM) changes speed, not
    results: the same output and the same log-probabilities, byte for byte, with the batches of
    512 tokens that the GEMM takes (four chunks of 128 per pass)."""
    model = request.getfixturevalue(fixture)
    runs = []
    for i, extra in enumerate([[], ["--no-repack"]]):
        base = tmp_path / f"base{i}.bin"
        r = ppl(plumb_bin, "-m", model, "-f", TEXT, "-c", 128, "--chunks", 4, "-b", 512, "-t", 2,
                "--kl-divergence-base", base, *extra)
        assert r.returncode == 0, r.stderr
        runs.append((parse_ppl(r.stdout), base.read_bytes()))
    assert runs[0] == runs[1]


QUANT = GOLDEN["quantized"]


@pytest.fixture(scope="module")
def gemma_f16(plumb_bin, real_model, tmp_path_factory):
    """Gemma 3 270M dequantized to F16 by plumb quantize (llama-quantize's file byte for byte)."""
    out = tmp_path_factory.mktemp("quantized") / "f16.gguf"
    r = subprocess.run([str(plumb_bin), "quantize", "-q", "--allow-requantize", str(real_model), str(out), "F16", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("name", sorted(QUANT["cases"]))
def test_quantized_perplexity_is_llama_perplexitys(name, plumb_bin, gemma_f16, tmp_path):
    """Q2_K, Q3_K_S, Q5_K_S and pure Q5_1 (with the Q4_0 and Q5_1 fallbacks of their rows that are
    not whole K blocks): the x86 kernels of these types in the reference's arithmetic give its
    perplexity digit for digit."""
    g = QUANT["cases"][name]
    model = tmp_path / "model.gguf"
    r = subprocess.run([str(plumb_bin), "quantize", "-q", *g["options"], str(gemma_f16), str(model), g["type"], "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_golden(ppl(plumb_bin, "-m", model, "-f", TEXT, "-c", QUANT["ctx"], "--chunks", QUANT["chunks"], "-b", QUANT["batch"],
                      "-t", 2), g)


@pytest.mark.parametrize("fixture", ["real_model", "qwen_model"])
def test_fast_gemm_is_the_portable_kernels_arithmetic(fixture, plumb_bin, request, tmp_path):
    """--fast-gemm sums each block (Q4_0, Q5_0, Q8_0) or super-block (Q4_K, Q6_K) as one integer,
    in the portable (generic) kernels' order: batched prompts of the Gemma and Qwen models (Q5_0,
    Q8_0, Q4_K and Q6_K weights) give, byte for byte, the log-probabilities of the generic kernel
    set (PLUMB_KERNELS=generic), and not those of the default, which follows llama.cpp's x86
    order. Only the AVX-512 VNNI set has block-sum GEMMs; with another set (an AVX2-only CPU, or
    PLUMB_KERNELS=avx2) the flag changes nothing, which is checked instead."""
    model = request.getfixturevalue(fixture)
    info = subprocess.run([str(plumb_bin), "info"], capture_output=True, text=True, timeout=60, env=os.environ)
    assert info.returncode == 0, info.stderr
    block_sums = "avx512vnni kernels" in info.stdout  # the set with block-sum GEMMs
    files = {}
    for name, extra, env in [("fast", ["--fast-gemm"], {}), ("generic", [], {"PLUMB_KERNELS": "generic"}),
                             ("default", [], {})]:
        base = tmp_path / f"{name}.kld"
        r = subprocess.run([str(plumb_bin), "perplexity", "-m", str(model), "-f", TEXT, "-c", "128", "--chunks", "4",
                            "-b", "512", "-t", "2", "--kl-divergence-base", str(base), *extra],
                           capture_output=True, text=True, timeout=600, env={**os.environ, **env})
        assert r.returncode == 0, r.stderr
        files[name] = base.read_bytes()
    if block_sums:
        assert files["fast"] == files["generic"]
        assert files["fast"] != files["default"]
    else:  # a kernel set without block-sum GEMMs (AVX2): the flag is taken and changes nothing
        assert files["fast"] == files["default"]
        assert files["fast"] != files["generic"]


def kld_stats(out):
    stats = {}
    for line in out.splitlines():
        m = re.match(r"^(Mean PPL\(Q\)|Mean PPL\(base\)|Mean    KLD|Maximum KLD|Median  KLD|99\.0%   KLD|Mean    Δp|RMS Δp|"
                     r"Same top p)\s*:\s*(-?[0-9.]+)", line)
        if m:
            stats[" ".join(m.group(1).split())] = float(m.group(2))
    return stats


def test_kl_divergence_base_file_and_statistics_are_llama_perplexitys(plumb_bin, real_model, tmp_path):
    g = GOLDEN["kld"]
    base, other = tmp_path / "base.kld", tmp_path / "perturbed.gguf"
    common = ["-c", g["ctx"], "--chunks", g["chunks"], "-b", g["batch"], "-t", 2]
    r = ppl(plumb_bin, "-m", real_model, "-f", TEXT, *common, "--kl-divergence-base", base)
    assert r.returncode == 0, r.stderr
    assert close(parse_ppl(r.stdout)[1], g["base_ppl"])
    assert base.stat().st_size == g["base_bytes"]
    # the same logits, the same records: the file either tool writes, the other reads
    assert hashlib.sha256(base.read_bytes()).hexdigest() == g["base_sha256"]
    assert not list(tmp_path.glob("*.part"))
    perturb.perturb(real_model, other)
    r = ppl(plumb_bin, "-m", other, *common, "--kl-divergence-base", base, "--kl-divergence")
    assert r.returncode == 0, r.stderr
    stats = kld_stats(r.stdout)
    assert set(stats) == set(g["stats"]), (stats, r.stdout)
    for k, want in g["stats"].items():
        # printed to 6 decimals (3 for percentages): equal to the last digit or one off
        step = 1e-3 if "Δp" in k or "top" in k else 1e-6
        assert abs(stats[k] - want) <= max(1e-4 * abs(want), 1.01 * step), (k, stats[k], want)
    assert re.search(r"^   4 +\d+\.\d{4} ± +\d+\.\d{4}", r.stdout, re.M), r.stdout  # the running table's last row


def test_perplexity_errors(plumb_bin, real_model, qwen_model, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.\n")
    r = ppl(plumb_bin, "-m", real_model, "-f", short)
    assert r.returncode == 1 and "at least 1024" in r.stderr and "two chunks" in r.stderr, r.stderr
    r = ppl(plumb_bin, "-m", real_model, "-f", tmp_path / "missing.txt")
    assert r.returncode == 1 and "missing.txt" in r.stderr, r.stderr
    r = ppl(plumb_bin, "-m", real_model, "--kl-divergence")
    assert r.returncode == 2 and "--kl-divergence-base" in r.stderr, r.stderr
    junk = tmp_path / "junk.kld"
    junk.write_bytes(b"not a logits file at all, just bytes" * 10)
    r = ppl(plumb_bin, "-m", real_model, "--kl-divergence-base", junk, "--kl-divergence")
    assert r.returncode == 1 and "is not a --kl-divergence-base file" in r.stderr, r.stderr
    # a real base, truncated; and one made for another vocabulary
    base = tmp_path / "base.kld"
    r = ppl(plumb_bin, "-m", real_model, "-f", TEXT, "-c", 64, "--chunks", 2, "--kl-divergence-base", base)
    assert r.returncode == 0, r.stderr
    cut = tmp_path / "cut.kld"
    cut.write_bytes(base.read_bytes()[: base.stat().st_size // 2])
    r = ppl(plumb_bin, "-m", real_model, "--kl-divergence-base", cut, "--kl-divergence")
    assert r.returncode == 1 and "ends early" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = ppl(plumb_bin, "-m", qwen_model, "--kl-divergence-base", base, "--kl-divergence")
    assert r.returncode == 1 and "vocabulary of 262144" in r.stderr and "151936" in r.stderr, r.stderr
    # an unwritable base path: an error, and nothing left behind
    r = ppl(plumb_bin, "-m", real_model, "-f", TEXT, "-c", 64, "--chunks", 2, "--kl-divergence-base", tmp_path / "no" / "b")
    assert r.returncode == 1 and "cannot write" in r.stderr, r.stderr
