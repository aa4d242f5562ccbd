"""Agreement with llama.cpp on the real Qwen2.5-Coder-0.5B-Instruct model (qwen2: NEOX RoPE,
q/k/v biases, an untied Q8_0 head, Q5_0/Q6_K/Q8_0 weights), from the golden data that
scripts/make-golden.py --only qwen2 records (tests/e2e/data/golden_qwen2.json) with llama.cpp
built from source and run with its stock CPU kernels (see test_agreement.py for why). Plain,
fill-in-the-middle and ChatML-formatted prompts:
  * the top-1 next token after every prompt is identical;
  * the top-10 logits after every prompt are within 1e-2 of the largest of them (relative),
    and in fact bit-identical (SiLU follows the reference's vectorized exponential);
  * plumb's own greedy continuation equals llama.cpp's for every recorded token (64, or up to
    an end-of-generation token), with the top 5 logits of every step bit-identical.
"""
import json
from pathlib import Path

import pytest

import agreement
import plumbffi

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_qwen2.json").read_text())
N_VOCAB = 151936


@pytest.fixture(scope="module")
def model(qwen_model, plumb_lib):
    assert GOLDEN["model"] == qwen_model.name
    m = plumbffi.Model(str(qwen_model), n_ctx=GOLDEN["settings"]["n_ctx"], n_threads=2)
    yield m
    m.close()


PROMPTS = GOLDEN["prompts"]
IDS = [p["name"] for p in PROMPTS]


def test_golden_settings():
    assert len(PROMPTS) >= 8 and sum(p["name"].startswith("chat") for p in PROMPTS) >= 4
    assert GOLDEN["settings"]["environment"] == {"GGML_CPU_TILED_MM": "0"}
    assert "-DGGML_LLAMAFILE=OFF" in GOLDEN["settings"]["cmake_args"]


@pytest.mark.parametrize("entry", PROMPTS, ids=IDS)
def test_prompt_top1_and_top10(model, entry):
    agreement.check_top10(model, entry, N_VOCAB)


@pytest.mark.parametrize("entry", PROMPTS, ids=IDS)
def test_free_greedy_continuation(model, entry):
    assert len(entry["greedy_ids"]) == 64 or entry["stop"] == "eog", entry["name"]
    agreement.check_greedy(model, entry, N_VOCAB)
