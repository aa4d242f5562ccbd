"""Whole models on the OpenCL backend (PoCL in `make test`, which installs it like any
device): fully offloaded and half offloaded, the logits of every position of a prompt and of
the decode steps after it (the KV cache on the device) against the CPU backend's, and the
server on OpenCL under concurrent requests.

How close is close enough. plumb's numerics are llama.cpp's: 8-bit activations, F16 keys,
queries and probabilities in attention, GELU through an F16 table. Each rounding to F16 turns a
difference in the last bits of a sum (another summation order) into a whole F16 step now and
then, and 18 to 24 layers amplify those: the CPU's own two kernel sets (the portable one and
this machine's SIMD one), both correct, already differ by up to 2.8% of the largest logit on
these prompts (measured: 0.56 of 22.5 for Gemma, 0.29 of 24.5 for Qwen), identical only while
attention has at most two positions. So a fixed 1e-2 of the largest logit is below what two
correct implementations reach, and the bound here is measured in the same run: the OpenCL
backend must stay within twice the CPU kernel sets' largest disagreement over the CPU's ten
largest logits (each implementation at most that far from exact arithmetic, so two at most
twice), and must pick the CPU's token wherever the CPU's margin over its second choice is
larger than that bound (a near-tie may go either way, as between the CPU's kernel sets)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import logits_dump
import plumbffi
from conftest import SAN_ENV, SAN_MARKERS
from serving import Server

HERE = Path(__file__).resolve().parent

PROMPT_GEMMA = [2, 818, 5279, 529, 7001, 563, 9079, 236761, 669, 7488, 3207, 528, 9405, 563, 15687, 236764, 532, 506, 8858, 600, 8784, 1343, 625, 563]
PROMPT_QWEN = [750, 75698, 1445, 982, 262, 421, 308, 366, 220, 17, 510, 286, 470, 308, 198, 262, 470]


def opencl_device() -> str:
    """The first OpenCL device; the test fails (not skips) without one: make test installs PoCL."""
    found = [d for d in plumbffi.devices() if d[0].startswith("opencl")]
    assert found, ("no OpenCL device: make test installs PoCL (pocl-opencl-icd); devices: %s"
                   % plumbffi.devices())
    return found[0][0]


def block_count(path) -> int:
    import gguf
    r = gguf.GGUFReader(str(path))
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    return int(r.fields[f"{arch}.block_count"].parts[-1][0])


def dump(path, device, n_offload, prompt, steps, env=None) -> np.ndarray:
    """The logits of a run in a process of its own (logits_dump.py)."""
    ids = lambda xs: ",".join(map(str, xs))  # noqa: E731
    out = subprocess.run([sys.executable, str(HERE / "logits_dump.py"), str(path), device, str(n_offload), ids(prompt),
                          ids(steps)], capture_output=True, env={**os.environ, **(env or {})}, timeout=600, cwd=HERE)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return np.load(io.BytesIO(out.stdout))


def top10_error(cpu: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per row: the largest difference over the CPU's ten largest logits."""
    top = np.argsort(-cpu, axis=1)[:, :10]
    return np.max(np.abs(np.take_along_axis(cpu, top, 1) - np.take_along_axis(other, top, 1)), axis=1)


@pytest.fixture(scope="module")
def references(real_model, qwen_model):
    """Per model: the prompt, the CPU's greedy steps, its logits, and the bound (twice the CPU
    kernel sets' largest top-10 disagreement)."""
    refs = {}
    for which, path, prompt in (("gemma", real_model, PROMPT_GEMMA), ("qwen", qwen_model, PROMPT_QWEN)):
        n_vocab = logits_dump.n_vocab_of(path)
        m = plumbffi.Model(path, n_ctx=128)
        try:  # the CPU's greedy continuation, fed to every run alike
            steps = [int(np.argmax(m.decode(prompt, n_vocab)[-1]))]
            for _ in range(5):
                steps.append(int(np.argmax(m.decode([steps[-1]], n_vocab)[-1])))
        finally:
            m.close()
        cpu = dump(path, "cpu", -1, prompt, steps)
        generic = dump(path, "cpu", -1, prompt, steps, env={"PLUMB_KERNELS": "generic"})
        spread = float(np.max(top10_error(cpu, generic)))
        assert spread > 0, "the two kernel sets agree bit for bit: a bound of zero would be the test to write"
        refs[which] = (path, prompt, steps, cpu, 2 * spread)
    return refs


@pytest.mark.parametrize("which", ["gemma", "qwen"])
@pytest.mark.parametrize("part", ["all", "half"])
def test_model_on_opencl_agrees_with_the_cpu(which, part, references):
    path, prompt, steps, cpu, bound = references[which]
    device = opencl_device()
    L = block_count(path)
    dev = dump(path, device, -1 if part == "all" else L // 2, prompt, steps)
    err = top10_error(cpu, dev)
    worst = int(np.argmax(err))
    assert err[worst] <= bound, (f"{which} on {device}, {part} offloaded: position {worst}'s top-10 logits differ by "
                                 f"{err[worst]:.4g}, more than {bound:.4g} (twice the CPU kernel sets' disagreement)")
    srt = np.sort(cpu, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    for t in range(cpu.shape[0]):
        if margin[t] > bound:
            assert np.argmax(dev[t]) == np.argmax(cpu[t]), (f"{which} on {device}, {part} offloaded, position {t}: "
                                                           f"token {np.argmax(dev[t])}, the CPU's {np.argmax(cpu[t])} "
                                                           f"(margin {margin[t]:.3g})")
    # what the numbers were, for the log
    print(f"{which} {part}: worst top-10 error {err[worst]:.4f} (bound {bound:.4f}), largest logit "
          f"{float(np.max(cpu[worst])):.2f}")


def test_offload_count_reaches_the_device(real_model):
    device = opencl_device()
    L = block_count(real_model)
    for n_offload, want in ((-1, L + 1), (L + 5, L + 1), (L // 2, L // 2), (L, L)):
        m = plumbffi.Model(real_model, n_ctx=32, device=device, n_offload=n_offload)
        try:
            assert m.device() == (device, want), (n_offload, m.device())
        finally:
            m.close()


def test_device_that_does_not_exist_names_the_ones_that_do(real_model):
    device = opencl_device()
    with pytest.raises(plumbffi.PlumbError) as e:
        plumbffi.Model(real_model, device="opencl:99")
    msg = str(e.value)
    assert "opencl:99" in msg and device in msg and "cpu" in msg, msg
    with pytest.raises(plumbffi.PlumbError) as e:
        plumbffi.Model(real_model, device="tpu")
    assert "tpu" in str(e.value) and device in str(e.value), str(e.value)


def test_server_on_opencl_under_concurrent_requests(plumb_bin, real_model):
    device = opencl_device()
    prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The three primary colors are"]
    expect = {}
    with Server(plumb_bin, real_model, "-np", "1", "-c", "256") as cpu:  # the CPU's greedy answers
        for p in prompts:
            st, _, j = cpu.post("/v1/completions", {"prompt": p, "max_tokens": 12, "temperature": 0})
            assert st == 200, j
            expect[p] = j["choices"][0]["text"]
    with Server(plumb_bin, real_model, "-np", "4", "-c", "1024", "--device", device) as s:
        got, errors = {}, []

        def ask(p):
            try:
                st, _, j = s.post("/v1/completions", {"prompt": p, "max_tokens": 12, "temperature": 0})
                got[p] = (st, j)
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(p,)) for p in prompts for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        for p in prompts:
            st, j = got[p]
            assert st == 200, j
            text = j["choices"][0]["text"]
            # the first tokens are the CPU's: near-ties later may go either way
            assert text[:8] == expect[p][:8], (p, text, expect[p])


def test_split_run_is_clean_under_the_sanitizers(plumb_san_bin, real_model):
    """Half the layers on OpenCL, under ASan/UBSan: no error, no leak of plumb's (the driver
    stack's own allocations are suppressed, tests/unit/lsan_opencl.supp)."""
    device = opencl_device()
    supp = HERE.parent / "unit" / "lsan_opencl.supp"
    env = dict(os.environ, **SAN_ENV, LSAN_OPTIONS=f"suppressions={supp}:use_tls=0")
    out = subprocess.run([str(plumb_san_bin), "run", "-m", str(real_model), "--device", device, "--offload", "9",
                          "-p", "The capital of France is", "-n", "4", "--temp", "0"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not any(mark in out.stderr for mark in SAN_MARKERS), out.stderr[-3000:]
    assert f"device {device} (9/" in out.stderr, out.stderr[-500:]


@pytest.fixture(scope="module")
def moe_files(tmp_path_factory):
    import make_moe_models
    return make_moe_models.build_all(tmp_path_factory.mktemp("moe"))


def test_mixture_of_experts_on_opencl(moe_files):
    """The synthetic mixture-of-experts models (F32, F16, Q8_0 and Q4_K experts) fully offloaded:
    the expert ops, which the OpenCL backend lacks, run on the CPU with their expert weights
    kept there, the rest on the device. These small models do not amplify rounding as the real
    ones do, so the fixed bound holds: the CPU's top token everywhere, and its ten largest
    logits within 1e-2 of the largest."""
    import json
    device = opencl_device()
    golden = json.loads((HERE / "data" / "golden_moe.json").read_text())
    for name, path in moe_files.items():
        entry = golden["models"][name]["prompts"][0]
        tokens = entry["prompt_ids"] + entry["greedy_ids"][:10]
        n_vocab = logits_dump.n_vocab_of(path)
        cpu = logits_dump.logits(path, None, -1, tokens, [])
        dev = logits_dump.logits(path, device, -1, tokens, [])
        assert (np.argmax(cpu, 1) == np.argmax(dev, 1)).all(), name
        rel = top10_error(cpu, dev) / np.abs(np.max(cpu, axis=1))
        assert float(rel.max()) <= 1e-2, (name, float(rel.max()))
        assert cpu.shape == (len(tokens), n_vocab)
