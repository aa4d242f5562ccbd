"""Agreement with llama.cpp on the real Gemma 3 270M model, from the golden data that
scripts/make-golden.py records (tests/e2e/data/golden_gemma3.json) with llama.cpp built from
source and run with its stock CPU kernels: no llamafile GEMM and no tiled K-quant GEMM
(GGML_CPU_TILED_MM=0). Both of those round differently from the one-row kernels, so with them
llama.cpp's prompt logits depend on how the prompt is batched (by up to 9% of the largest
logit on this model); without them it is batch-invariant, as plumb is.

plumb follows the reference's numerics (8-bit activations with its rounding, its per-lane
integer sums and float accumulation order in every quantized dot product, F16 attention with
its exponential and summation order, its RoPE and F16 GELU table), so the checks are the
issue's bars and the stronger one that holds:
  * tokenization is checked in test_tokenize.py;
  * the top-1 next token after every prompt is identical;
  * the top-10 logits after every prompt are within 1e-2 of the largest of them (relative),
    and in fact bit-identical;
  * plumb's own greedy continuation equals llama.cpp's for every recorded token (64, or up to
    an end-of-generation token), and at least 32 are recorded per prompt.
"""
import json
from pathlib import Path

import pytest

import agreement
import plumbffi

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_gemma3.json").read_text())
N_VOCAB = 262144


@pytest.fixture(scope="module")
def model(real_model, plumb_lib):
    m = plumbffi.Model(str(real_model), n_ctx=GOLDEN["settings"]["n_ctx"], n_threads=2)
    yield m
    m.close()


PROMPTS = GOLDEN["prompts"]
IDS = [p["name"] for p in PROMPTS]


def test_golden_settings():
    assert len(PROMPTS) >= 8
    assert GOLDEN["settings"]["environment"] == {"GGML_CPU_TILED_MM": "0"}
    assert "-DGGML_LLAMAFILE=OFF" in GOLDEN["settings"]["cmake_args"]


@pytest.mark.parametrize("entry", PROMPTS, ids=IDS)
def test_prompt_top1_and_top10(model, entry):
    agreement.check_top10(model, entry, N_VOCAB)


@pytest.mark.parametrize("entry", PROMPTS, ids=IDS)
def test_free_greedy_continuation(model, entry):
    assert len(entry["greedy_ids"]) >= 32
    agreement.check_greedy(model, entry, N_VOCAB)
