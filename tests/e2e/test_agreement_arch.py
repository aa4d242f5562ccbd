"""Agreement with llama.cpp on the architectures qwen3, gemma2 and phi3, through synthetic models
(random weights, small sizes, the real tokenizers of the models in models/) that
tests/e2e/make_arch_models.py writes: regenerated here, bit-identical to the files that
scripts/make-golden.py --only arch ran through llama.cpp (their SHA-256 is in the golden
file, tests/e2e/data/golden_arch.json). For every model and each of its 4 prompts, teacher-
forced on llama.cpp's 20 greedy tokens, at every position:
  * the logits of llama.cpp's top 10 are within 1e-2 of the largest of them (relative);
  * plumb's top-1 is llama.cpp's wherever llama.cpp's top-2 margin exceeds the difference;
  * stronger: the logits are bit-identical (Q4_0, Q5_0, Q8_0 and F16 weights);
with the whole sequence decoded as one batch, and again with the prompt as a batch and then
one token at a time (the decode path, where the threads share each attention item); and
plumb's own greedy continuation is llama.cpp's.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import make_arch_models
import plumbffi

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_arch.json").read_text())
MODELS = GOLDEN["models"]
TOP10_REL = 1e-2  # of the largest top-10 logit
N_CTX = GOLDEN["settings"]["n_ctx"]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, real_model, qwen_model):
    out = tmp_path_factory.mktemp("arch")
    return make_arch_models.build_all(str(out), {"gemma": str(real_model), "qwen": str(qwen_model)})


@pytest.fixture(scope="module")
def models(model_files, plumb_lib):
    """models(name): the plumb model of the file (loaded once), with the reference's context."""
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = plumbffi.Model(model_files[name], n_ctx=N_CTX, n_threads=2)
        return loaded[name]

    yield get
    for m in loaded.values():
        m.close()


def test_golden_settings():
    s = GOLDEN["settings"]
    assert s["environment"] == {"GGML_CPU_TILED_MM": "0"} and "-DGGML_LLAMAFILE=OFF" in s["cmake_args"]
    assert s["n_greedy"] == 20 and s["logits_all"]
    assert set(MODELS) == set(make_arch_models.MODELS)
    assert {e["arch"] for e in MODELS.values()} == {"qwen3", "gemma2", "phi3"}
    for e in MODELS.values():
        assert len(e["prompts"]) == 4
        for p in e["prompts"]:
            assert len(p["greedy_ids"]) == 20 and len(p["top10"]) == len(p["prompt_ids"]) + 20


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_file_is_the_recorded_one(model_files, name):
    """The generator is deterministic: the file plumb runs is the one llama.cpp ran."""
    digest = hashlib.sha256(Path(model_files[name]).read_bytes()).hexdigest()
    assert digest == MODELS[name]["sha256"], f"{name}: tests/e2e/make_arch_models.py no longer writes the " \
                                              "recorded file; rerun scripts/make-golden.py --only arch"


def _compare(name, entry, rows):
    """Checks plumb's logits rows[i] at every recorded position: the issue's bar, then bit
    identity."""
    worst, same = 0.0, True
    for i, ref in enumerate(entry["top10"]):
        got = rows[i]
        scale = max(abs(v) for _, v in ref)
        diff = max(abs(float(got[t]) - v) for t, v in ref)
        assert diff <= TOP10_REL * scale, (name, entry["name"], i, diff, scale)
        margin = ref[0][1] - ref[1][1]
        if margin > diff:
            assert int(np.argmax(got)) == ref[0][0], (name, entry["name"], i)
        worst = max(worst, diff / scale)
        same = same and all(got[t] == np.float32(v) for t, v in ref)
    assert same, f"{name}/{entry['name']}: not bit-identical (max relative difference {worst:.3g})"


CASES = [(name, i) for name in sorted(MODELS) for i in range(4)]
CASE_IDS = [f"{name}-{MODELS[name]['prompts'][i]['name']}" for name, i in CASES]


@pytest.mark.parametrize("name,i", CASES, ids=CASE_IDS)
def test_teacher_forced_one_batch(models, name, i):
    e, m = MODELS[name], models(name)
    entry = e["prompts"][i]
    plumbffi.lib().plumb_seq_truncate(m.c, 0, 0)
    rows = m.decode(entry["prompt_ids"] + entry["greedy_ids"], e["n_vocab"], all_logits=True)
    _compare(name, entry, rows)


@pytest.mark.parametrize("name,i", CASES, ids=CASE_IDS)
def test_teacher_forced_token_by_token_and_greedy(models, name, i):
    e, m = MODELS[name], models(name)
    entry = e["prompts"][i]
    plumbffi.lib().plumb_seq_truncate(m.c, 0, 0)
    rows = list(m.decode(entry["prompt_ids"], e["n_vocab"], all_logits=True))
    greedy = []
    for tok in entry["greedy_ids"]:
        greedy.append(int(np.argmax(rows[-1])))
        rows.append(m.decode([tok], e["n_vocab"], all_logits=True)[0])
    _compare(name, entry, rows)
    assert greedy == entry["greedy_ids"], f"{name}/{entry['name']}: plumb {greedy} vs llama.cpp {entry['greedy_ids']}"


@pytest.mark.parametrize("name,i", CASES, ids=CASE_IDS)
def test_prompt_tokenization(run, plumb_bin, model_files, name, i):
    """The tokenizers copied into the synthetic files tokenize each prompt as llama.cpp did."""
    entry = MODELS[name]["prompts"][i]
    r = run(plumb_bin, "tokenize", "-m", model_files[name], "--ids", *([] if entry["add_bos"] else ["--no-bos"]),
            entry["text"])
    assert r.rc == 0, r.describe()
    assert json.loads(r.stdout) == entry["prompt_ids"], (name, entry["name"])
