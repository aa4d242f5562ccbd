"""logprobs through the official openai client: chat's logprobs + top_logprobs and the
completions endpoint's integer logprobs, whole and streamed, on the real Qwen model; each
token's log probability is the log-softmax of the model's logits (checked against plumb's own
logits through the library), the alternatives come most likely first."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from plumbffi import Model
from serving import stream_raw


@pytest.fixture
def srv(qwen_server):
    return qwen_server


MSGS = [{"role": "user", "content": "Name three colors."}]


def test_chat_logprobs(srv):
    r = srv.client().chat.completions.create(model="m", messages=MSGS, max_tokens=12, temperature=0, logprobs=True,
                                             top_logprobs=3)
    ch = r.choices[0]
    content = ch.logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == ch.message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        lps = [a.logprob for a in t.top_logprobs]
        assert lps == sorted(lps, reverse=True) and sum(math.exp(x) for x in lps) <= 1 + 1e-5
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == t.logprob  # greedy
        assert bytes(t.bytes) == t.token.encode()
    r = srv.client().chat.completions.create(model="m", messages=MSGS, max_tokens=4, temperature=0, logprobs=True)
    assert all(t.top_logprobs == [] for t in r.choices[0].logprobs.content)
    r = srv.client().chat.completions.create(model="m", messages=MSGS, max_tokens=4, temperature=0)
    assert r.choices[0].logprobs is None


def test_completion_logprobs_and_stream(srv):
    r = srv.client().completions.create(model="m", prompt="The capital of France is", max_tokens=6, temperature=0,
                                        logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == 6
    assert lp.text_offset == [sum(len(t.encode()) for t in lp.tokens[:i]) for i in range(6)]
    assert all(len(d) <= 2 and max(d.values()) == lp.token_logprobs[i] for i, d in enumerate(lp.top_logprobs))
    events, _ = stream_raw(srv.port, "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 6,
                                                         "temperature": 0, "logprobs": 2, "stream": True})
    got = []
    for e in events[:-1]:
        c = json.loads(e)["choices"][0]
        if c.get("logprobs"):
            got += c["logprobs"]["token_logprobs"]
    assert got == lp.token_logprobs
    events, _ = stream_raw(srv.port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 8, "temperature": 0,
                                                              "logprobs": True, "top_logprobs": 1, "stream": True})
    n = sum(len((json.loads(e)["choices"][0].get("logprobs") or {}).get("content", [])) for e in events[:-1])
    assert n == 8


def test_logprob_is_the_log_softmax_of_the_logits(srv, qwen_model):
    r = srv.post("/v1/completions", {"prompt": "1, 2, 3,", "max_tokens": 1, "temperature": 0, "logprobs": 5})[2]
    ids = srv.post("/tokenize", {"content": "1, 2, 3,"})[2]["tokens"]
    m = Model(str(qwen_model), n_ctx=64)
    try:
        logits = m.decode(ids, 151936, all_logits=False)[0].astype(np.float64)
    finally:
        m.close()
    ls = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
    want = sorted(ls, reverse=True)[:5]
    got = sorted(r["choices"][0]["logprobs"]["top_logprobs"][0].values(), reverse=True)
    assert np.allclose(got, want, atol=2e-4), (got, want)


@pytest.mark.parametrize("body,param", [({"logprobs": 2}, "logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                                        ({"top_logprobs": 2}, "top_logprobs")])
def test_bad_logprobs_fields(srv, body, param):
    st, _, b = srv.post("/v1/chat/completions", {"messages": MSGS, **body})
    assert st == 400 and b["error"]["param"] == param, b
