"""The checks of plumb against llama.cpp's recorded prompts (golden_*.json written by
scripts/make-golden.py), shared by the real models' agreement tests: the top-10 logits after a
prompt and the free greedy continuation, each at the issue's bar and, stronger, bit for bit."""
import numpy as np

import plumbffi

TOP10_REL = 1e-2  # of the largest top-10 logit


def prompt_logits(model, ids, n_vocab):
    plumbffi.lib().plumb_seq_truncate(model.c, 0, 0)
    return model.decode(ids, n_vocab, all_logits=False)[0]


def check_top10(model, entry, n_vocab):
    """Top-1 identical, the top-10 within TOP10_REL of the largest, and bit-identical."""
    logits = prompt_logits(model, entry["prompt_ids"], n_vocab)
    top10 = entry["top10"]
    assert int(np.argmax(logits)) == top10[0][0], entry["name"]
    scale = max(abs(v) for _, v in top10)
    for tok, ref in top10:
        assert abs(logits[tok] - ref) <= TOP10_REL * scale, (entry["name"], tok, float(logits[tok]), ref)
    # stronger than the bar above: the same float, bit for bit
    assert [np.float32(v) for _, v in top10] == [logits[t] for t, _ in top10], entry["name"]


def check_greedy(model, entry, n_vocab):
    """plumb's own greedy continuation equals every recorded token, with each step's top 5
    logits bit-identical."""
    want, steps = entry["greedy_ids"], entry["steps"]
    assert len(steps) == len(want)
    logits = prompt_logits(model, entry["prompt_ids"], n_vocab)
    got = []
    for i in range(len(want)):
        got.append(int(np.argmax(logits)))
        assert [np.float32(v) for _, v in steps[i]["top5"]] == [logits[t] for t, _ in steps[i]["top5"]], \
            (entry["name"], i)
        if i + 1 < len(want):
            logits = model.decode([got[-1]], n_vocab, all_logits=False)[0]
    assert got == want, f"{entry['name']}: plumb {got} vs llama.cpp {want}"
