"""Generating a token allocates nothing: build/plumb_alloc_check (next to plumb, linked with
the allocation functions wrapped) counts every allocation plumb's code makes while it decodes
single tokens (greedy and sampled with every sampler stage on) and a prompt again, after a
warm-up, and exits 1 when there is any."""
import re
import subprocess

import pytest
from gguf import GGMLQuantizationType as QT

import synth


def _check(plumb_bin, model, threads):
    exe = plumb_bin.parent / "plumb_alloc_check"
    r = subprocess.run([str(exe), str(model), str(threads)], capture_output=True, text=True, timeout=300)
    m = re.fullmatch(r"allocations: load (\d+), warm-up (\d+), 16 greedy tokens (\d+), a 24-token prompt again "
                     r"(\d+), 16 sampled tokens (\d+)\n", r.stdout)
    assert m, (r.returncode, r.stdout, r.stderr)
    load, _, greedy, prompt, sampled = (int(g) for g in m.groups())
    assert load > 10, r.stdout  # the counter sees plumb's own allocations
    assert [greedy, prompt, sampled] == [0, 0, 0], r.stdout
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("threads", [1, 2])
def test_real_model_decodes_without_allocating(plumb_bin, real_model, threads):
    _check(plumb_bin, real_model, threads)


@pytest.mark.parametrize("arch,qtype", [("llama", QT.Q4_0), ("gemma3", QT.Q8_0)])
def test_synthetic_models_decode_without_allocating(plumb_bin, gguf_dir, arch, qtype):
    path = gguf_dir / f"{arch}.gguf"
    synth.write_model(path, arch, n_embd=64, n_ff=96, n_layer=2, qtype=qtype, n_swa=4 if arch == "gemma3" else 0)
    _check(plumb_bin, path, 2)


def test_bad_model_path_is_an_error(plumb_bin):
    exe = plumb_bin.parent / "plumb_alloc_check"
    r = subprocess.run([str(exe), "/nonexistent.gguf"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "nonexistent" in r.stderr, (r.stdout, r.stderr)
