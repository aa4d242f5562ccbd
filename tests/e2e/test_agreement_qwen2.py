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

import numpy as np
import pytest

import plumbffi

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_qwen2.json").read_text())
N_VOCAB = 151936
TOP10_REL = 1e-2  # of the largest top-10 logit


@pytest.fixture(scope="module")
def model(qwen_model, plumb_lib):
    assert GOLDEN["model"] == qwen_model.name
    m = plumbffi.Model(str(qwen_model), n_ctx=GOLDEN["settings"]["n_ctx"], n_threads=2)
    yield m
    m.close()


def _prompt_logits(model, ids):
    plumbffi.lib().plumb_seq_truncate(model.c, 0, 0)
    return model.decode(ids, N_VOCAB, all_logits=False)[0]


PROMPTS = GOLDEN["prompts"]
IDS = [p["name"] for p in PROMPTS]


def test_golden_settings():
    assert len(PROMPTS) >= 8 and sum(p["name"].startswith("chat") for p in PROMPTS) >= 4
    assert GOLDEN["settings"]["environment"] == {"GGML_CPU_TILED_MM": "0"}
    assert "-DGGML_LLAMAFILE=OFF" in GOLDEN["settings"]["cmake_args"]


@pytest.mark.parametrize("entry", PROMPTS, ids=IDS)
def test_prompt_top1_and_top10(model, entry):
    logits = _prompt_logits(model, entry["prompt_ids"])
    top10 = entry["top10"]
    assert int(np.argmax(logits)) == top10[0][0], entry["name"]
    scale = max(abs(v) for _, v in top10)
    for tok, ref in top10:
        assert abs(logits[tok] - ref) <= TOP10_REL * scale, (entry["name"], tok, float(logits[tok]), ref)
    # stronger than the bar above: the same float, bit for bit
    assert [np.float32(v) for _, v in top10] == [logits[t] for t, _ in top10], entry["name"]


@pytest.mark.parametrize("entry", PROMPTS, ids=IDS)
def test_free_greedy_continuation(model, entry):
    want, steps = entry["greedy_ids"], entry["steps"]
    assert len(steps) == len(want) and (len(want) == 64 or entry["stop"] == "eog"), entry["name"]
    logits = _prompt_logits(model, entry["prompt_ids"])
    got = []
    for i in range(len(want)):
        got.append(int(np.argmax(logits)))
        assert [np.float32(v) for _, v in steps[i]["top5"]] == [logits[t] for t, _ in steps[i]["top5"]], \
            (entry["name"], i)
        if i + 1 < len(want):
            logits = model.decode([got[-1]], N_VOCAB, all_logits=False)[0]
    assert got == want, f"{entry['name']}: plumb {got} vs llama.cpp {want}"
