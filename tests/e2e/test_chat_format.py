"""Chat formats against their reference Jinja templates: plumb_chat_apply (called through
ctypes on the shared library, PLUMB_LIB) must give, byte for byte, what jinja2 renders from
the template the model family ships, for many conversations (with and without a system
message, multi-turn, whitespace to trim, Unicode), with and without BOS and generation
prompt; where the template raises (Gemma's role alternation), plumb must refuse too.

The templates are written out below. The Gemma 3 one is the template published with the
Gemma 3 instruction-tuned models (HF tokenizer_config.json `chat_template`); the GGUF this
project tests with carries no `tokenizer.chat_template` (test_model_template checks that
fact, and checks the file's template instead if a future file has one). Llama 3 is the
Meta-Llama-3-Instruct template, ChatML the common one. They are rendered the way
transformers renders chat templates: a sandboxed environment with trim_blocks and
lstrip_blocks, and a raise_exception global.
"""
from __future__ import annotations

import ctypes
import functools
import random

import jinja2
import jinja2.sandbox
import pytest

GEMMA = 0
LLAMA3 = 1
CHATML = 2
PLUMB_OK = 0
PLUMB_E_INVALID_ARG = -1

GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

FORMATS = {
    GEMMA: ("gemma", GEMMA3_TEMPLATE, "<bos>"),
    LLAMA3: ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>"),
    CHATML: ("chatml", CHATML_TEMPLATE, ""),
}


class TemplateRaised(Exception):
    pass


def _raise_exception(message):
    raise TemplateRaised(message)


_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
_ENV.globals["raise_exception"] = _raise_exception


@functools.lru_cache(maxsize=None)
def _compiled(template: str):
    return _ENV.from_string(template)


def render_jinja(template: str, messages, bos_token: str, add_generation_prompt: bool) -> str:
    return _compiled(template).render(messages=messages, bos_token=bos_token,
                                             add_generation_prompt=add_generation_prompt)


class Msg(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


@pytest.fixture(scope="module")
def lib(plumb_lib):
    so = ctypes.CDLL(str(plumb_lib))
    so.plumb_chat_apply.argtypes = [ctypes.c_int, ctypes.POINTER(Msg), ctypes.c_size_t, ctypes.c_bool,
                                    ctypes.c_bool, ctypes.POINTER(ctypes.c_void_p),
                                    ctypes.POINTER(ctypes.c_size_t)]
    so.plumb_chat_apply.restype = ctypes.c_int
    so.plumb_chat_format_detect.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    so.plumb_chat_format_detect.restype = ctypes.c_int
    so.plumb_last_error.argtypes = []
    so.plumb_last_error.restype = ctypes.c_char_p
    return so


_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None


def plumb_apply(lib, fmt: int, messages, add_bos: bool, add_generation_prompt: bool):
    """(status, text or None, last error)."""
    arr = (Msg * max(1, len(messages)))()
    keep = []  # the encoded strings must outlive the call
    for i, m in enumerate(messages):
        role, content = m["role"].encode(), m["content"].encode()
        keep += [role, content]
        arr[i] = Msg(role, content)
    out = ctypes.c_void_p()
    out_len = ctypes.c_size_t(0)
    st = lib.plumb_chat_apply(fmt, arr, len(messages), add_bos, add_generation_prompt, ctypes.byref(out),
                              ctypes.byref(out_len))
    if st != PLUMB_OK:
        assert not out.value, "output pointer set on failure"
        return st, None, lib.plumb_last_error().decode("utf-8", "replace")
    try:
        raw = ctypes.string_at(out.value, out_len.value)
        assert ctypes.string_at(out.value, out_len.value + 1)[-1:] == b"\0", "not NUL-terminated"
    finally:
        _libc.free(out.value)
    return st, raw.decode("utf-8"), ""


# Pieces of message text: plain, whitespace at either end (ASCII and the Unicode spaces that
# Jinja's trim, i.e. Python's str.strip, removes), multi-line, non-ASCII, template-looking and
# special-token-looking text, empty.
PIECES = [
    "Hello", "What is 2+2?", "  leading spaces", "trailing spaces   ", "\n\nnewlines around\n\n",
    "\t tabbed \t", "multi\nline\n\ntext", "  inner  spaces  kept  ", "", " ", "\n", "h\u00e9llo w\u00f6rld",
    "\u65e5\u672c\u8a9e\u306e\u6587", "emoji \U0001F600 \U0001F9EA", "\u00a0nbsp around\u00a0",
    "\u3000ideographic space\u3000", "\u2028line sep\u2029", "\x85next line\x1c\x1d\x1e\x1f",
    "\u200bzero width stays\ufeff", "{{ not a template }} {% raw %}", "<start_of_turn>user\nfake",
    "<|im_start|>system", "quotes ' \" and \\ backslash", "\r\nwindows\r\n", "\u2000\u2001\u200a en/em\u205f",
    "\u202fnarrow\u1680ogham",
]


def random_content(rng: random.Random) -> str:
    k = rng.choice([1, 1, 2, 3])
    return rng.choice(["", " ", "\n"]).join(rng.choice(PIECES) for _ in range(k))


def random_conversation(rng: random.Random, alternate: bool):
    """A conversation of 1..7 messages: when `alternate`, an optional system message then
    user/assistant turns starting with user (what Gemma accepts); otherwise any roles."""
    msgs = []
    if alternate:
        if rng.random() < 0.5:
            msgs.append({"role": "system", "content": random_content(rng)})
        for i in range(rng.randint(0 if msgs else 1, 6)):
            msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": random_content(rng)})
    else:
        for _ in range(rng.randint(1, 6)):
            msgs.append({"role": rng.choice(["system", "user", "assistant"]), "content": random_content(rng)})
    return msgs


HAND_WRITTEN = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "  Be terse.  "}, {"role": "user", "content": "  Why?  "},
     {"role": "assistant", "content": "\nBecause.\n"}, {"role": "user", "content": "ok"}],
    [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
    [{"role": "system", "content": "only a system message"}],
    [{"role": "user", "content": "\u00bfQu\u00e9 tal? \U0001F60A"}, {"role": "assistant", "content": "\u3000Bien\u3000"},
     {"role": "user", "content": "\u65e5\u672c\u8a9e"}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],          # Gemma: must alternate
    [{"role": "assistant", "content": "first"}],                                     # Gemma: must start with user
    [{"role": "user", "content": "a"}, {"role": "system", "content": "late system"}],  # Gemma: cannot express
]


def conversations():
    rng = random.Random(20250101)
    convs = [list(c) for c in HAND_WRITTEN]
    convs += [random_conversation(rng, alternate=True) for _ in range(1500)]
    convs += [random_conversation(rng, alternate=False) for _ in range(1500)]
    return convs


def late_system(messages) -> bool:
    """A system message after the first position: Gemma's template writes it as a
    `<start_of_turn>system` turn (when it lands where an assistant turn may be), which Gemma
    was not trained on; plumb refuses it as a role the format cannot express."""
    return any(m["role"] == "system" for m in messages[1:])


@pytest.mark.parametrize("fmt", [GEMMA, LLAMA3, CHATML], ids=lambda f: FORMATS[f][0])
def test_matches_jinja(lib, fmt):
    name, template, bos_text = FORMATS[fmt]
    compared = refused = 0
    for messages in conversations():
        for add_bos in (True, False):
            for gen in (True, False):
                try:
                    want = render_jinja(template, messages, bos_text if add_bos else "", gen)
                except TemplateRaised:
                    want = None
                st, got, err = plumb_apply(lib, fmt, messages, add_bos, gen)
                where = f"{name} add_bos={add_bos} gen={gen} messages={messages!r}"
                if fmt == GEMMA and late_system(messages):
                    assert st == PLUMB_E_INVALID_ARG, f"{where}: plumb accepted a late system message"
                    assert "system" in err
                    refused += 1
                elif want is None:
                    assert st == PLUMB_E_INVALID_ARG, f"{where}: the template raises but plumb gave {got!r}"
                    assert "alternate" in err
                    refused += 1
                else:
                    assert st == PLUMB_OK, f"{where}: plumb failed ({st}: {err}); jinja2 gave {want!r}"
                    assert got == want, f"{where}:\n plumb  {got!r}\n jinja2 {want!r}"
                    compared += 1
    # the generator must have exercised both sides
    assert compared > 3000
    if fmt == GEMMA:
        assert refused > 1000
    else:
        assert refused == 0


def test_detect_reference_templates(lib):
    for fmt, (name, template, _) in FORMATS.items():
        raw = template.encode()
        assert lib.plumb_chat_format_detect(raw, len(raw)) == fmt, name
    other = b"{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    assert lib.plumb_chat_format_detect(other, len(other)) == -1


class PlumbStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_uint64)]


def test_model_template(lib, real_model):
    """The real model's own template, when the file has one, is detected as Gemma and
    renders like plumb; the file used today has none (so the published template above is
    the reference), and this pins that fact down. Read with plumb's GGUF reader (gguf-py
    takes half a minute over this file's 262144-entry vocabulary)."""
    lib.plumb_gguf_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.plumb_gguf_open.restype = ctypes.c_int
    lib.plumb_gguf_free.argtypes = [ctypes.c_void_p]
    lib.plumb_gguf_get_str.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(PlumbStr)]
    lib.plumb_gguf_get_str.restype = ctypes.c_int
    g = ctypes.c_void_p()
    assert lib.plumb_gguf_open(str(real_model).encode(), ctypes.byref(g)) == PLUMB_OK, lib.plumb_last_error()
    try:
        s = PlumbStr()
        st = lib.plumb_gguf_get_str(g, b"tokenizer.chat_template", ctypes.byref(s))
        if st != PLUMB_OK:
            assert st == -6, lib.plumb_last_error()  # PLUMB_E_NOT_FOUND: the file has no template
            assert lib.plumb_gguf_get_str(g, b"tokenizer.ggml.model", ctypes.byref(s)) == PLUMB_OK
            return
        template = ctypes.string_at(s.ptr, s.len).decode("utf-8")
    finally:
        lib.plumb_gguf_free(g)
    raw = template.encode()
    assert lib.plumb_chat_format_detect(raw, len(raw)) == GEMMA
    rng = random.Random(7)
    for _ in range(300):
        messages = random_conversation(rng, alternate=True)
        want = render_jinja(template, messages, "<bos>", True)
        st, got, err = plumb_apply(lib, GEMMA, messages, True, True)
        assert st == PLUMB_OK, err
        assert got == want, f"{messages!r}"
