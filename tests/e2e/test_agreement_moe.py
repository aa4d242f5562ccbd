"""Agreement with llama.cpp on synthetic mixture-of-experts models (qwen3moe, and llama with
experts, Mixtral-style), from the golden data that scripts/make-golden.py --only moe records
(tests/e2e/data/golden_moe.json) with llama.cpp built from source and its stock CPU kernels
(see test_agreement.py). The models are written again here by tests/e2e/make_moe_models.py
(random weights, byte for byte the files the golden data came from: their SHA-256 is checked);
F32, F16, Q8_0 and Q4_K experts, 8 to 20 experts with 2 to 4 used, and 4 prompts each
followed by llama.cpp's 20 greedy tokens.

Teacher-forced, the whole sequence in one batch, at every position:
  * the top-10 logits are within 1e-2 of the largest of them (relative);
  * plumb's top-1 token is llama.cpp's wherever llama.cpp's margin between its first and
    second token exceeds the largest difference observed at that position;
  * in fact the logits are bit-identical, every model (F32 and F16 weights, the router
    included, dot in the reference's order too), and plumb's own greedy continuation (prompt
    as one batch, then token by token) is llama.cpp's.
The same positions decoded token by token give the batch's bits (the routing of one token does
not depend on the batch).
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import plumbffi

sys.path.insert(0, str(Path(__file__).parent))
import make_moe_models  # noqa: E402

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_moe.json").read_text())
TOP10_REL = 1e-2
BIT_IDENTICAL = set(make_moe_models.MODELS)
CASES = [(name, i) for name in GOLDEN["models"] for i in range(len(GOLDEN["models"][name]["prompts"]))]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return make_moe_models.build_all(tmp_path_factory.mktemp("moe"))


@pytest.fixture(scope="module")
def models(model_files, plumb_lib):
    opened = {}
    yield lambda name: opened.setdefault(name, plumbffi.Model(str(model_files[name]), n_ctx=256, n_threads=2))
    for m in opened.values():
        m.close()


def test_golden_settings_and_models():
    assert set(GOLDEN["models"]) == set(make_moe_models.MODELS)
    assert GOLDEN["settings"]["environment"] == {"GGML_CPU_TILED_MM": "0"}
    assert "-DGGML_LLAMAFILE=OFF" in GOLDEN["settings"]["cmake_args"]
    for name, entry in GOLDEN["models"].items():
        assert [p["prompt_ids"] for p in entry["prompts"]] == make_moe_models.PROMPTS, name
        for p in entry["prompts"]:
            assert len(p["greedy_ids"]) == GOLDEN["settings"]["n_greedy"] == 20
            assert len(p["top10"]) == len(p["prompt_ids"]) + 20


@pytest.mark.parametrize("name", sorted(make_moe_models.MODELS))
def test_models_are_the_golden_files(model_files, name):
    """The regenerated files are the ones llama.cpp ran (else the generator or numpy changed)."""
    assert make_moe_models.sha256(model_files[name]) == GOLDEN["models"][name]["sha256"], \
        f"{name}: run scripts/make-golden.py --only moe again"


def _sequence(entry):
    return entry["prompt_ids"] + entry["greedy_ids"]


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_teacher_forced_top10(models, model_files, name, i):
    assert make_moe_models.sha256(model_files[name]) == GOLDEN["models"][name]["sha256"]
    entry = GOLDEN["models"][name]["prompts"][i]
    m = models(name)
    plumbffi.lib().plumb_seq_truncate(m.c, 0, 0)
    seq = _sequence(entry)
    logits = m.decode(seq, make_moe_models.N_VOCAB, all_logits=True)
    assert logits.shape[0] == len(seq) == len(entry["top10"])
    worst = 0.0
    for pos, top10 in enumerate(entry["top10"]):
        row = logits[pos]
        scale = max(abs(v) for _, v in top10)
        diffs = [abs(float(row[t]) - v) for t, v in top10]
        worst = max(worst, max(diffs) / scale)
        for (t, v), d in zip(top10, diffs):
            assert d <= TOP10_REL * scale, (name, i, pos, t, float(row[t]), v)
        margin = top10[0][1] - top10[1][1]
        if margin > max(diffs):
            assert int(np.argmax(row)) == top10[0][0], (name, i, pos, margin, max(diffs))
        if name in BIT_IDENTICAL:
            assert [np.float32(v) for _, v in top10] == [row[t] for t, _ in top10], (name, i, pos)
    if name in BIT_IDENTICAL:
        assert worst == 0.0


@pytest.mark.parametrize("name", sorted(BIT_IDENTICAL))
def test_greedy_continuation_is_llama_cpp(models, name):
    """Prompt as one batch, then plumb's own greedy tokens one by one: llama.cpp's tokens."""
    m = models(name)
    for entry in GOLDEN["models"][name]["prompts"]:
        plumbffi.lib().plumb_seq_truncate(m.c, 0, 0)
        logits = m.decode(entry["prompt_ids"], make_moe_models.N_VOCAB, all_logits=False)[0]
        got = []
        for _ in entry["greedy_ids"]:
            got.append(int(np.argmax(logits)))
            logits = m.decode([got[-1]], make_moe_models.N_VOCAB, all_logits=False)[0]
        assert got == entry["greedy_ids"], name


@pytest.mark.parametrize("name", sorted(make_moe_models.MODELS))
def test_token_by_token_equals_batch(models, name):
    """Routing is per token: decoding one token at a time gives the batch's logits bit for bit
    (the expert matmul groups a batch's rows by expert; a decode has one row per expert)."""
    m = models(name)
    seq = _sequence(GOLDEN["models"][name]["prompts"][3])
    plumbffi.lib().plumb_seq_truncate(m.c, 0, 0)
    batch = m.decode(seq, make_moe_models.N_VOCAB, all_logits=True)
    plumbffi.lib().plumb_seq_truncate(m.c, 0, 0)
    one = np.stack([m.decode([t], make_moe_models.N_VOCAB, all_logits=True)[0] for t in seq])
    assert np.array_equal(batch, one), name
