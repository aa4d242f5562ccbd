"""Fill-in-the-middle on the real Qwen2.5-Coder model (a FIM model): llama-server's /infill and
the `suffix` of /v1/completions build <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>
(plus <|file_sep|> files from input_extra) and the model writes the middle; a model without
FIM tokens gets a clear 400."""
from __future__ import annotations

import pytest

from serving import Server

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\n\nprint(add(2, 3))\n"


@pytest.fixture
def qwen(qwen_server):
    return qwen_server


def test_completions_suffix_fills_the_middle(qwen):
    st, _, b = qwen.post("/v1/completions", {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 16, "temperature": 0})
    assert st == 200, b
    middle = b["choices"][0]["text"]
    assert "a + b" in middle.replace("a+b", "a + b"), middle
    assert b["choices"][0]["finish_reason"] == "stop", b   # ends at the FIM end, not at max_tokens
    # the prompt is the FIM layout: 3 FIM tokens around the two texts
    ids = lambda t: qwen.post("/tokenize", {"content": t, "parse_special": False})[2]["tokens"]
    assert b["usage"]["prompt_tokens"] == len(ids(PREFIX)) + len(ids(SUFFIX)) + 3


def test_infill_endpoint(qwen):
    st, _, b = qwen.post("/infill", {"input_prefix": PREFIX, "input_suffix": SUFFIX, "max_tokens": 16, "temperature": 0})
    assert st == 200, b
    assert "a + b" in b["content"].replace("a+b", "a + b") and b["content"] == b["choices"][0]["text"], b
    extra = [{"filename": "util.py", "text": "def mul(a, b):\n    return a * b\n"}]
    st, _, b2 = qwen.post("/infill", {"input_prefix": "from util import mul\n\nx = ", "input_suffix": "\nprint(x)\n",
                                      "input_extra": extra, "max_tokens": 12, "temperature": 0})
    assert st == 200, b2
    assert b2["usage"]["prompt_tokens"] > 20 and b2["content"], b2
    for bad, param in (({"input_prefix": 3}, "input_prefix"), ({"input_extra": [{"text": 1}]}, "input_extra"),
                       ({"input_extra": "x"}, "input_extra")):
        st, _, e = qwen.post("/infill", bad)
        assert st == 400 and e["error"]["param"] == param, e


def test_suffix_needs_text_and_completions(qwen):
    st, _, b = qwen.post("/v1/completions", {"prompt": [1, 2, 3], "suffix": "x"})
    assert st == 400 and b["error"]["param"] == "suffix"
    st, _, b = qwen.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "suffix": "x"})
    assert st == 400 and b["error"]["param"] == "suffix"


def test_model_without_fim_tokens_is_400(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "256")
    try:
        st, _, b = s.post("/v1/completions", {"prompt": "a", "suffix": "b"})
        assert st == 400 and "fill-in-the-middle" in b["error"]["message"] and b["error"]["param"] == "suffix", b
        st, _, b = s.post("/infill", {"input_prefix": "a", "input_suffix": "b"})
        assert st == 400 and b["error"]["param"] == "input_suffix", b
    finally:
        s.stop()
