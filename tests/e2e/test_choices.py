"""n > 1 choices through the official openai client: several answers to one prompt, which is
processed once (the other choices copy its KV cache); greedy choices equal the single answer
(so the copied cache is the prompt's), sampled ones follow their own seeds; streamed chunks
carry each choice's index."""
from __future__ import annotations

import json

import pytest

from serving import stream_raw

MSGS = [{"role": "user", "content": "Write one short sentence about the sea."}]


@pytest.fixture
def srv(qwen_server):
    return qwen_server


def test_greedy_choices_equal_the_single_answer(srv):
    one = srv.client().chat.completions.create(model="m", messages=MSGS, max_tokens=24, temperature=0)
    many = srv.client().chat.completions.create(model="m", messages=MSGS, max_tokens=24, temperature=0, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert all(c.message.content == one.choices[0].message.content for c in many.choices)
    assert many.usage.prompt_tokens == one.usage.prompt_tokens
    assert many.usage.completion_tokens == 3 * one.usage.completion_tokens


def test_sampled_choices_differ_and_are_reproducible(srv):
    kw = dict(model="m", messages=MSGS, max_tokens=24, temperature=1.0, seed=11, n=4)
    a = srv.client().chat.completions.create(**kw)
    b = srv.client().chat.completions.create(**kw)
    texts = [c.message.content for c in a.choices]
    assert texts == [c.message.content for c in b.choices]
    assert len(set(texts)) > 1, texts


def test_more_choices_than_slots(srv):
    r = srv.client().completions.create(model="m", prompt="The sea is", max_tokens=8, temperature=0, n=6)
    assert len(r.choices) == 6 and len({c.text for c in r.choices}) == 1


def test_streamed_choices(srv):
    events, _ = stream_raw(srv.port, "/v1/chat/completions", {"messages": MSGS, "max_tokens": 16, "temperature": 0,
                                                              "n": 2, "stream": True,
                                                              "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts, finished = {0: "", 1: ""}, set()
    for c in chunks:
        for ch in c["choices"]:
            texts[ch["index"]] += ch["delta"].get("content") or ""
            if ch["finish_reason"]:
                finished.add(ch["index"])
    assert finished == {0, 1} and texts[0] == texts[1] and texts[0]
    u = chunks[-1]["usage"]["completion_tokens"]  # two identical greedy choices
    assert 0 < u <= 32 and u % 2 == 0, u


def test_choices_with_logprobs_and_tools(srv):
    r = srv.client().chat.completions.create(model="m", messages=MSGS, max_tokens=6, temperature=0, n=2, logprobs=True,
                                             top_logprobs=2)
    assert [len(c.logprobs.content) for c in r.choices] == [6, 6]
    assert r.choices[0].logprobs.content[0].logprob == r.choices[1].logprobs.content[0].logprob
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["x"], "additionalProperties": False}}}]
    r = srv.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "Call f with x=3."}],
                                             tools=tools, tool_choice="required", n=2, temperature=0, max_tokens=60)
    assert [c.finish_reason for c in r.choices] == ["tool_calls", "tool_calls"]
    assert all(json.loads(c.message.tool_calls[0].function.arguments)["x"] in range(10) for c in r.choices)
