"""Structured output and tool calls on the real Qwen2.5-Coder model through the official
`openai` client: every answer constrained by a JSON Schema parses and validates (checked with
the `jsonschema` package), tool calls come back as OpenAI tool_calls whose arguments validate
against each tool's parameters (streamed and not, tool_choice auto/required/named), and bad
schemas, grammars and tool settings are refused with 400s naming the place."""
from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from serving import Server, stream_raw

SEED = 7


@pytest.fixture(scope="module")
def srv(plumb_bin, qwen_model):
    s = Server(plumb_bin, qwen_model, "--parallel", "2", "-c", "2048", "--log")
    yield s
    s.stop()


def chat(srv, messages, **kw):
    return srv.client().chat.completions.create(model="m", messages=messages, temperature=0, seed=SEED, **kw)


# ---- JSON Schema: 12 schemas x 5 prompts = 60 pairs ------------------------------------------

NAME = {"type": "string", "minLength": 1, "maxLength": 30}
SCHEMAS = {
    "person": {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 130}},
               "required": ["name", "age"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"name": NAME, "email": {"type": "string", "format": "email"}},
                 "required": ["name", "email"], "additionalProperties": False},
        "active": {"type": "boolean"}}, "required": ["user", "active"], "additionalProperties": False},
    "tags": {"type": "object", "properties": {"tags": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 4}},
             "required": ["tags"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]},
                                              "size": {"type": "string", "enum": ["S", "M", "L"]}},
             "required": ["color", "size"], "additionalProperties": False},
    "refs": {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -100, "maximum": 100},
                                                                "y": {"type": "integer", "minimum": -100, "maximum": 100}},
                                 "required": ["x", "y"], "additionalProperties": False}},
             "type": "object", "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
             "required": ["start", "end"], "additionalProperties": False},
    "pattern": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                                                 "phone": {"type": "string", "pattern": "^\\+?[0-9]{7,12}$"}},
                "required": ["code", "phone"], "additionalProperties": False},
    "date": {"type": "object", "properties": {"event": NAME, "date": {"type": "string", "format": "date"},
                                              "id": {"type": "string", "format": "uuid"}},
             "required": ["event", "date", "id"], "additionalProperties": False},
    "list_of_objects": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {"title": NAME, "done": {"type": "boolean"}}, "required": ["title", "done"],
        "additionalProperties": False}},
    "anyof": {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999},
                                                                  {"type": "string", "maxLength": 20}, {"type": "null"}]}},
              "required": ["value"], "additionalProperties": False},
    "const_and_number": {"type": "object", "properties": {"kind": {"const": "measurement"}, "value": {"type": "number"},
                                                          "unit": {"enum": ["cm", "kg", "s"]}},
                         "required": ["kind", "value", "unit"], "additionalProperties": False},
    "optional": {"type": "object", "properties": {"city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                                                  "country": NAME}, "required": ["city"], "additionalProperties": False},
    "recursive": {"$defs": {"node": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12},
        "children": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/node"}}},
        "required": ["name"], "additionalProperties": False}}, "$ref": "#/$defs/node"},
}
PROMPTS = [
    "Describe a fictional person as JSON.",
    "Give me an example record as JSON for a small app.",
    "Return JSON about the weather in Paris.",
    "Make up some data about a cat named Tom, as JSON.",
    "Produce a JSON object for a unit test fixture.",
]
# A recursive schema lets a small model nest without end (greedy, "Paris" inside "Paris" ...):
# prompts for it whose answers this model finishes.
TREE_PROMPTS = [PROMPTS[0], PROMPTS[1], PROMPTS[3], "Describe a small folder tree as JSON.",
                "Describe a tiny company with a boss and two employees as JSON."]
PAIRS = [(name, p) for name in SCHEMAS for p in (TREE_PROMPTS if name == "recursive" else PROMPTS)]


def test_at_least_fifty_pairs():
    assert len(PAIRS) >= 50


@pytest.mark.parametrize("name,prompt", PAIRS, ids=[f"{n}-{i}" for n in SCHEMAS for i in range(len(PROMPTS))])
def test_response_format_json_schema_validates(srv, name, prompt):
    schema = SCHEMAS[name]
    r = chat(srv, [{"role": "user", "content": prompt}], max_tokens=400,
             response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
    ch = r.choices[0]
    assert ch.finish_reason == "stop", ch
    jsonschema.validate(json.loads(ch.message.content), schema)


def test_json_object_is_an_object(srv):
    for prompt in PROMPTS[:3]:
        r = chat(srv, [{"role": "user", "content": prompt}], max_tokens=300, response_format={"type": "json_object"})
        assert r.choices[0].finish_reason == "stop"
        assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_llama_server_json_schema_and_grammar_fields(srv):
    s, _, b = srv.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Pick a color."}], "temperature": 0, "max_tokens": 50,
        "json_schema": SCHEMAS["enum"]})
    assert s == 200, b
    jsonschema.validate(json.loads(b["choices"][0]["message"]["content"]), SCHEMAS["enum"])
    s, _, b = srv.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Is the sky blue? Answer yes or no."}], "temperature": 0,
        "max_tokens": 10, "grammar": 'root ::= ("yes" | "no") "."'})
    assert s == 200, b
    assert b["choices"][0]["message"]["content"] in ("yes.", "no.")


def test_completions_endpoint_takes_a_grammar(srv):
    s, _, b = srv.post("/v1/completions", {"prompt": "The answer to 6 * 7 is", "temperature": 0, "max_tokens": 8,
                                           "grammar": 'root ::= " " [0-9]{1,3}'})
    assert s == 200, b
    text = b["choices"][0]["text"]
    assert text[0] == " " and text[1:].isdigit() and 1 <= len(text[1:]) <= 3


def test_streamed_json_schema_validates(srv):
    events, _ = stream_raw(srv.port, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": PROMPTS[0]}], "temperature": 0, "max_tokens": 300, "stream": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMAS["person"]}}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    jsonschema.validate(json.loads(text), SCHEMAS["person"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_dead_end_stops_cleanly(srv):
    s, _, b = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10,
                                                "grammar": "root ::= []"})
    assert s == 200, b
    assert b["choices"][0]["finish_reason"] == "stop" and b["choices"][0]["message"]["content"] == ""
    assert "dead end" in srv.stderr
    assert srv.get("/health")[0] == 200


# ---- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("schema,keyword", [
    ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
    ({"type": "object", "minProperties": 2}, "minProperties"),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"type": "string", "format": "hostname-idn"}, "format"),
])
def test_unsupported_schema_keyword_is_refused(srv, schema, keyword):
    s, _, b = srv.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert s == 400, b
    assert keyword in b["error"]["message"], b
    assert b["error"]["param"] == "response_format.json_schema.schema"


@pytest.mark.parametrize("body,param,words", [
    ({"grammar": 'root ::= "a" foo'}, "grammar", "1:"),
    ({"grammar": "root ::= root \"x\""}, "grammar", "left-recursive"),
    ({"grammar": 5}, "grammar", "GBNF"),
    ({"grammar": 'root ::= "a"', "json_schema": {"type": "string"}}, "grammar", "only one"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "json_schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "schema"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "tool_choice", "'g'"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]", "function"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name", "letters"),
    ({"tool_choice": "required"}, "tool_choice", "tools"),
    ({"logit_bias": {"1": 5}}, "logit_bias", "not supported"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "grammar": 'root ::= "a"'}, "grammar", "tools"),
])
def test_bad_constraint_fields_are_400(srv, body, param, words):
    s, _, b = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, **body})
    assert s == 400, b
    assert b["error"]["param"] == param, b
    assert words in b["error"]["message"], b


# ---- tool calls ------------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the current local time in a time zone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}},
                   "required": ["timezone"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                                    "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                   "required": ["a", "b"], "additionalProperties": False}}}
TOOLSETS = {1: [WEATHER], 2: [WEATHER, TIME], 3: [WEATHER, TIME, ADD]}
ASK = "What is the weather like in Berlin right now? Use celsius."


def check_calls(calls, tools):
    assert calls, "no tool call"
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_")
        assert c.function.name in by_name
        jsonschema.validate(json.loads(c.function.arguments), by_name[c.function.name])


@pytest.mark.parametrize("n_tools", [1, 2, 3])
@pytest.mark.parametrize("choice", ["auto", "required", "named"])
def test_tool_calls(srv, n_tools, choice):
    tools = TOOLSETS[n_tools]
    tc = {"type": "function", "function": {"name": "get_weather"}} if choice == "named" else choice
    r = chat(srv, [{"role": "user", "content": ASK}], tools=tools, tool_choice=tc, max_tokens=200)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls", ch
    check_calls(ch.message.tool_calls, tools)
    if choice == "named":
        assert all(c.function.name == "get_weather" for c in ch.message.tool_calls)


def test_required_forces_a_call_even_when_not_asked(srv):
    tools = TOOLSETS[3]
    r = chat(srv, [{"role": "user", "content": "Tell me a joke."}], tools=tools, tool_choice="required", max_tokens=200)
    assert r.choices[0].finish_reason == "tool_calls"
    check_calls(r.choices[0].message.tool_calls, tools)


def test_named_add_call(srv):
    r = chat(srv, [{"role": "user", "content": "What is 17 plus 25?"}], tools=TOOLSETS[3],
             tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=100)
    calls = r.choices[0].message.tool_calls
    check_calls(calls, TOOLSETS[3])
    assert calls[0].function.name == "add"


def test_tool_choice_none_answers_in_text(srv):
    r = chat(srv, [{"role": "user", "content": "Say hello."}], tools=TOOLSETS[1], tool_choice="none", max_tokens=20)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_streamed_tool_call_deltas(srv, choice):
    tools = TOOLSETS[2]
    events, _ = stream_raw(srv.port, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": ASK}], "tools": tools, "tool_choice": choice, "temperature": 0,
        "seed": SEED, "max_tokens": 200, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    calls: dict[int, dict] = {}
    for c in chunks:
        for d in c["choices"][0]["delta"].get("tool_calls") or []:
            cur = calls.setdefault(d["index"], {"id": None, "name": None, "arguments": "", "pieces": 0})
            cur["pieces"] += 1
            if "id" in d:
                assert cur["id"] is None and d["type"] == "function"
                cur["id"], cur["name"] = d["id"], d["function"]["name"]
            cur["arguments"] += d["function"].get("arguments", "")
    assert calls and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for c in calls.values():
        assert c["id"].startswith("call_")
        jsonschema.validate(json.loads(c["arguments"]), by_name[c["name"]])
        assert c["pieces"] > 3, c  # the arguments stream as they are written, not in one piece
    # the same through the openai client's stream
    stream = srv.client().chat.completions.create(model="m", messages=[{"role": "user", "content": ASK}], tools=tools,
                                                  tool_choice=choice, temperature=0, seed=SEED, max_tokens=200, stream=True)
    got = {}
    for ev in stream:
        for d in ev.choices[0].delta.tool_calls or []:
            g = got.setdefault(d.index, {"name": None, "arguments": ""})
            if d.function.name:
                g["name"] = d.function.name
            g["arguments"] += d.function.arguments or ""
    assert [(g["name"], json.loads(g["arguments"])) for g in got.values()] == \
        [(c["name"], json.loads(c["arguments"])) for c in calls.values()]


def test_tool_results_in_the_history(srv):
    tools = TOOLSETS[1]
    first = chat(srv, [{"role": "user", "content": ASK}], tools=tools, tool_choice="required", max_tokens=200)
    call = first.choices[0].message.tool_calls[0]
    history = [{"role": "user", "content": ASK},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                                   "arguments": call.function.arguments}}]},
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
    s, _, b = srv.post("/apply-template", {"messages": history, "tools": tools})
    assert s == 200, b
    prompt = b["prompt"]
    assert "<tool_response>" in prompt and '"temperature": 21' in prompt and "<tool_call>" in prompt
    r = chat(srv, history, tools=tools, max_tokens=60)
    assert r.choices[0].finish_reason in ("stop", "tool_calls", "length")
    if r.choices[0].message.tool_calls is None:
        assert "21" in r.choices[0].message.content


def test_tool_parameters_with_unsupported_keyword_are_400(srv):
    bad = copy.deepcopy(WEATHER)
    bad["function"]["parameters"]["properties"]["city"]["patternProperties"] = {"x": {}}
    s, _, b = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": ASK}], "tools": [bad],
                                                "tool_choice": "required"})
    assert s == 400 and "patternProperties" in b["error"]["message"], b


# ---- other tool syntaxes: Llama 3.x and Mistral templates, and models with none (generic) -------

@pytest.mark.parametrize("family,marker", [("LLAMA32", '"parameters"'), ("MISTRAL_V03", "[AVAILABLE_TOOLS]")])
def test_other_family_syntaxes(plumb_bin, qwen_model, tmp_path, family, marker):
    """The Qwen model run with another family's template: the tools are shown that family's way
    and the call, constrained to that family's syntax, comes back as OpenAI tool_calls."""
    import test_jinja
    tmpl = tmp_path / "t.jinja"
    tmpl.write_text(getattr(test_jinja, family))
    s = Server(plumb_bin, qwen_model, "--parallel", "1", "-c", "2048", "--chat-template-file", tmpl)
    try:
        tools = TOOLSETS[2]
        st, _, b = s.post("/apply-template", {"messages": [{"role": "user", "content": ASK}], "tools": tools})
        assert st == 200 and marker in b["prompt"], b
        for choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
            r = chat(s, [{"role": "user", "content": ASK}], tools=tools, tool_choice=choice, max_tokens=200)
            assert r.choices[0].finish_reason == "tool_calls", r
            check_calls(r.choices[0].message.tool_calls, tools)
            if isinstance(choice, dict):
                assert r.choices[0].message.tool_calls[0].function.name == "get_time"
    finally:
        s.stop()


def test_generic_syntax_for_a_model_without_tool_support(plumb_bin, real_model):
    """Gemma 3's template has no tool syntax: the tools are explained in a system message and
    the answer is constrained to {"tool_calls": [...]}."""
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "2048")
    try:
        tools = TOOLSETS[3]
        for choice in ("required", "auto"):
            r = chat(s, [{"role": "user", "content": "What is 2 plus 3? Use the add tool."}], tools=tools,
                     tool_choice=choice, max_tokens=200, parallel_tool_calls=False)
            ch = r.choices[0]
            if choice == "required" or ch.message.tool_calls:
                assert ch.finish_reason == "tool_calls", ch
                check_calls(ch.message.tool_calls, tools)
            else:
                assert ch.finish_reason == "stop" and isinstance(ch.message.content, str)
    finally:
        s.stop()
