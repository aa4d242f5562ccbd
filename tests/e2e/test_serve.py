"""End-to-end tests of `plumb serve` on the real model: the official `openai` client for chat,
streaming, completions and errors; greedy replies under continuous batching equal the same
request run alone; a matrix of malformed requests; client disconnects free their slot; a full
queue answers 503; Bearer auth; graceful SIGTERM; and a smoke run of the sanitizer build.
Servers bind 127.0.0.1 on a port the kernel picks (--port 0) and every wait is bounded.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from pathlib import Path

import openai
import pytest

from conftest import SAN_MARKERS
from serving import Server, SlotHolder, run_together, stream_raw, wait_for


@pytest.fixture(scope="module")
def server(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "4", "-c", "1024", "--alias", "gemma-test")
    yield s
    assert s.stop() == 0, s.stderr


# ---- the openai client ------------------------------------------------------------------------

def test_models_and_health(server):
    assert server.get("/health") == (200, b'{"status":"ok","slots_idle":4,"slots_total":4}')
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["gemma-test"]


def test_chat_completion(server):
    r = server.client().chat.completions.create(
        model="gemma-test", messages=[{"role": "user", "content": "Name a color."}], max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    ch = r.choices[0]
    assert ch.message.role == "assistant" and isinstance(ch.message.content, str) and ch.message.content
    assert ch.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_matches_whole(server):
    c = server.client()
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to five."}]
    whole = c.chat.completions.create(model="x", messages=msgs, max_tokens=12, temperature=0)
    chunks = list(c.chat.completions.create(model="x", messages=msgs, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completion_equals_plumb_run(server, plumb_bin, real_model, run):
    prompt = "The capital of France is"
    r = server.client().completions.create(model="x", prompt=prompt, max_tokens=10, temperature=0)
    cli = run(plumb_bin, "run", "-m", real_model, "-p", prompt, "-n", "10", "--temp", "0", "--no-stats", "-t", "2")
    assert cli.rc == 0, cli.describe()
    assert r.choices[0].text == cli.stdout[:-1]  # the CLI ends with a newline
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 10


def test_completion_stream_and_token_prompt(server):
    c = server.client()
    ids = server.post("/tokenize", {"content": "Once upon a time", "add_special": True})[2]
    whole = c.completions.create(model="x", prompt="Once upon a time", max_tokens=8, temperature=0)
    by_ids = c.completions.create(model="x", prompt=ids["tokens"], max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == whole.choices[0].text
    text = "".join(ch.choices[0].text for ch in c.completions.create(model="x", prompt="Once upon a time",
                                                                       max_tokens=8, temperature=0, stream=True))
    assert text == whole.choices[0].text


def test_stop_strings(server):
    c = server.client()
    base = c.completions.create(model="x", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0).choices[0].text
    assert " 6" in base, base
    r = c.completions.create(model="x", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[" 6", "zzz"])
    assert r.choices[0].text == base[:base.index(" 6")]
    assert r.choices[0].finish_reason == "stop"
    s = "".join(ch.choices[0].text for ch in c.completions.create(model="x", prompt="1, 2, 3, 4,", max_tokens=12,
                                                                    temperature=0, stop=" 6", stream=True))
    assert s == r.choices[0].text


def test_sampling_fields_and_seed(server):
    c = server.client()
    kw = dict(model="x", prompt="My favourite animal is", max_tokens=10, temperature=1.0, top_p=0.9, seed=1234,
              presence_penalty=0.5, frequency_penalty=0.5, extra_body={"top_k": 20, "min_p": 0.05})
    a, b = c.completions.create(**kw), c.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text  # same seed, same text


# each sampling field of a request and the `plumb run` option that means the same
SAMPLING_FIELDS = [
    ("top_k", 3, "--top-k"),
    ("min_p", 0.3, "--min-p"),
    ("top_p", 0.5, "--top-p"),
    ("presence_penalty", 1.8, "--presence-penalty"),
    ("frequency_penalty", 1.8, "--frequency-penalty"),
    ("seed", 7, "--seed"),
    ("temperature", 0.2, "--temp"),
]


@pytest.mark.parametrize("field,value,option", SAMPLING_FIELDS, ids=[f[0] for f in SAMPLING_FIELDS])
def test_sampling_field_acts_as_the_cli_option(server, plumb_bin, real_model, run, field, value, option):
    """Each field changes the text exactly as the CLI's option does: the server with the field
    gives `plumb run`'s text with the option, and another text without it. (OpenAI's
    penalties look at the whole completion: --repeat-last-n -1.)"""
    prompt, n = "My favourite animal is the", 24
    base = {"prompt": prompt, "max_tokens": n, "temperature": 1.4, "seed": 1234, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    cli = ["run", "-m", real_model, "-p", prompt, "-n", str(n), "--temp", "1.4", "--seed", "1234", "--top-k", "0",
           "--top-p", "1", "--min-p", "0", "--repeat-last-n", "-1", "--no-stats", "-t", "2"]

    def served(req):
        st, _, j = server.post("/v1/completions", req)
        assert st == 200, j
        return j["choices"][0]["text"]

    with_field = served(dict(base, **{field: value}))
    r = run(plumb_bin, *cli, option, str(value))
    assert r.rc == 0, r.describe()
    assert with_field == r.stdout[:-1], (field, with_field, r.stdout)
    assert with_field != served(base), f"'{field}' did not change the text"
    r0 = run(plumb_bin, *cli)
    assert served(base) == r0.stdout[:-1]


def test_openai_errors(server):
    c = server.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], temperature=5)
    assert e.value.status_code == 400 and "temperature" in str(e.value)
    assert e.value.body["param"] == "temperature" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="x", prompt="word " * 2000, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=[{"role": "assistant", "content": "hi"}])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.InternalServerError) as e:  # a generation server: 501, as llama-server answers
        c.embeddings.create(model="x", input="hi")
    assert e.value.status_code == 501 and "--embeddings" in str(e.value)


def test_multi_turn_reuses_prefix(server):
    c = server.client()
    msgs = [{"role": "user", "content": "Tell me about the sea in one sentence."}]
    r1 = c.chat.completions.create(model="x", messages=msgs, max_tokens=16, temperature=0)
    msgs += [{"role": "assistant", "content": r1.choices[0].message.content},
             {"role": "user", "content": "And about the mountains?"}]
    r2 = c.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert cached >= r1.usage.prompt_tokens, (cached, r1.usage)


def test_tokenize_detokenize(server, plumb_bin, real_model, run):
    text = "Hello world, ünïcödé 🙂"
    s, _, j = server.post("/tokenize", {"content": text})
    assert s == 200
    cli = run(plumb_bin, "tokenize", "-m", real_model, "--ids", "--no-bos", text)
    assert cli.rc == 0, cli.describe()
    assert j["tokens"] == [int(x) for x in re.findall(r"-?\d+", cli.stdout)]
    s, _, d = server.post("/detokenize", {"tokens": j["tokens"]})
    assert s == 200 and d["content"] == text


def test_page_is_served(server):
    s, h, b = server.request("GET", "/")
    assert s == 200 and h["content-type"].startswith("text/html")
    assert b"/v1/chat/completions" in b and b"<script" in b
    assert b"http://" not in b and b"https://" not in b  # nothing external


# ---- continuous batching -------------------------------------------------------------------------

PROMPTS = ["The sun rises in the", "A recipe for bread:", "def fibonacci(n):", "Paris is known for",
           "The quick brown fox", "In 1492, Columbus", "Water boils at", "My favourite book is"]


def test_eight_streams_on_four_slots_match_alone(server):
    body = lambda p: {"prompt": p, "max_tokens": 12, "temperature": 0, "stream": True}

    def text_of(events):
        assert events[-1] == "[DONE]"
        return "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])

    alone = [text_of(stream_raw(server.port, "/v1/completions", body(p))[0]) for p in PROMPTS]
    results: list = [None] * len(PROMPTS)

    def worker(i):
        try:
            results[i] = text_of(stream_raw(server.port, "/v1/completions", body(PROMPTS[i]))[0])
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a stream did not finish"
    assert results == alone


def test_long_prompt_prefill_is_chunked_and_exact(server, plumb_bin, real_model, run):
    """A prompt longer than two prefill chunks, fed while another stream runs, gives the same
    greedy text as `plumb run` alone (the prompt is new to the server, so nothing is reused)."""
    long_prompt = " ".join(f"entry {i}," for i in range(30))
    cli = run(plumb_bin, "run", "-m", real_model, "-p", long_prompt, "-n", "6", "--temp", "0", "--no-stats", "-t", "2")
    assert cli.rc == 0, cli.describe()
    bg = threading.Thread(target=stream_raw, args=(server.port, "/v1/completions",
                                                    {"prompt": "Once", "max_tokens": 30, "temperature": 0, "stream": True}))
    bg.start()
    wait_for(lambda: server.metrics()["plumb_slots_busy"] >= 1, 10, "the background stream")
    s, _, j = server.post("/v1/completions", {"prompt": long_prompt, "max_tokens": 6, "temperature": 0})
    bg.join(120)
    assert s == 200 and j["choices"][0]["text"] == cli.stdout[:-1]
    assert j["usage"]["prompt_tokens"] > 128 and j["usage"]["prompt_tokens_details"]["cached_tokens"] <= 1


def test_disconnect_frees_slot(server):
    wait_for(lambda: server.metrics()["plumb_slots_busy"] == 0, 30, "idle slots")
    before = server.metrics()["plumb_generated_tokens_total"]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 800, "temperature": 0, "stream": True})
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    got = b""
    while got.count(b"data: ") < 3:
        got += sock.recv(4096)
    assert server.metrics()["plumb_slots_busy"] == 1
    sock.close()
    wait_for(lambda: server.metrics()["plumb_slots_busy"] == 0, 30, "the slot to be freed after the disconnect")
    # the condition itself rather than a time: generation stopped long before its 800 tokens
    generated = server.metrics()["plumb_generated_tokens_total"] - before
    assert generated < 200, f"{generated} tokens were generated for a client that left"


# ---- malformed input -----------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
OK_MSGS = [{"role": "user", "content": "hi"}]
MALFORMED = [
    # (name, path, raw body or object, status, param the error names)
    ("not json", CHAT, b"{not json", 400, None),
    ("empty body", CHAT, b"", 400, None),
    ("json array", CHAT, b"[1,2]", 400, None),
    ("trailing data", CHAT, b'{"messages": []} x', 400, None),
    ("truncated", COMP, b'{"prompt": "abc', 400, None),
    ("messages missing", CHAT, {}, 400, "messages"),
    ("messages not array", CHAT, {"messages": "hi"}, 400, "messages"),
    ("messages empty", CHAT, {"messages": []}, 400, "messages"),
    ("message not object", CHAT, {"messages": [1]}, 400, "messages[0]"),
    ("role missing", CHAT, {"messages": [{"content": "hi"}]}, 400, "messages[0].role"),
    ("role unknown", CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ("content number", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ("content image part", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages[0].content"),
    ("bad role order", CHAT, {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, 400,
     "messages"),
    ("prompt missing", COMP, {}, 400, "prompt"),
    ("prompt number", COMP, {"prompt": 5}, 400, "prompt"),
    ("prompt several", COMP, {"prompt": ["a", "b"]}, 400, "prompt"),
    ("prompt bad id", COMP, {"prompt": [1, -3]}, 400, "prompt"),
    ("prompt id past vocab", COMP, {"prompt": [2, 99999999]}, 400, "prompt"),
    ("temperature string", CHAT, {"messages": OK_MSGS, "temperature": "hot"}, 400, "temperature"),
    ("temperature too high", CHAT, {"messages": OK_MSGS, "temperature": 9}, 400, "temperature"),
    ("top_p range", CHAT, {"messages": OK_MSGS, "top_p": 1.5}, 400, "top_p"),
    ("top_k float", CHAT, {"messages": OK_MSGS, "top_k": 2.5}, 400, "top_k"),
    ("min_p negative", CHAT, {"messages": OK_MSGS, "min_p": -0.1}, 400, "min_p"),
    ("max_tokens zero", CHAT, {"messages": OK_MSGS, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens past 32 bits", CHAT, {"messages": OK_MSGS, "max_tokens": 10 ** 12}, 400, "max_tokens"),
    ("max_completion_tokens string", CHAT, {"messages": OK_MSGS, "max_completion_tokens": "5"}, 400,
     "max_completion_tokens"),
    ("seed float", CHAT, {"messages": OK_MSGS, "seed": 1.5}, 400, "seed"),
    ("stop number", CHAT, {"messages": OK_MSGS, "stop": 3}, 400, "stop"),
    ("stop list of numbers", CHAT, {"messages": OK_MSGS, "stop": ["a", 3]}, 400, "stop"),
    ("too many stops", CHAT, {"messages": OK_MSGS, "stop": ["s%d" % i for i in range(40)]}, 400, "stop"),
    ("stream string", CHAT, {"messages": OK_MSGS, "stream": "yes"}, 400, "stream"),
    ("stream_options array", CHAT, {"messages": OK_MSGS, "stream_options": []}, 400, "stream_options"),
    ("include_usage number", CHAT, {"messages": OK_MSGS, "stream": True, "stream_options": {"include_usage": 1}}, 400,
     "stream_options.include_usage"),
    ("presence_penalty range", CHAT, {"messages": OK_MSGS, "presence_penalty": 3}, 400, "presence_penalty"),
    ("frequency_penalty string", CHAT, {"messages": OK_MSGS, "frequency_penalty": "x"}, 400, "frequency_penalty"),
    ("n too many", CHAT, {"messages": OK_MSGS, "n": 17}, 400, "n"),
    ("model number", CHAT, {"messages": OK_MSGS, "model": 7}, 400, "model"),
    ("logprobs string", CHAT, {"messages": OK_MSGS, "logprobs": "yes"}, 400, "logprobs"),
    ("logprobs number in chat", CHAT, {"messages": OK_MSGS, "logprobs": 2}, 400, "logprobs"),
    ("completion logprobs too many", "/v1/completions", {"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ("completion logprobs string", "/v1/completions", {"prompt": "x", "logprobs": "2"}, 400, "logprobs"),
    ("logit_bias", CHAT, {"messages": OK_MSGS, "logit_bias": {"1": 3}}, 400, "logit_bias"),
    ("functions", CHAT, {"messages": OK_MSGS, "functions": [{"name": "f"}]}, 400, "functions"),
    ("audio modality", CHAT, {"messages": OK_MSGS, "modalities": ["text", "audio"]}, 400, "modalities"),
    ("suffix", "/v1/completions", {"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ("tokenize content missing", "/tokenize", {}, 400, "content"),
    ("detokenize not ids", "/detokenize", {"tokens": ["a"]}, 400, "tokens"),
    ("detokenize past vocab", "/detokenize", {"tokens": [1 << 30]}, 400, "tokens"),
]


@pytest.mark.parametrize("name,path,body,status,param", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed(server, name, path, body, status, param):
    s, h, j = server.post(path, body, {"Content-Type": "application/json"})
    assert s == status, (s, j)
    assert h["content-type"] == "application/json"
    err = j["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param, err


def test_http_level_errors(server):
    assert server.request("GET", "/nope")[0] == 404
    s, _, b = server.request("GET", CHAT)
    assert s == 405 and json.loads(b)["error"]["message"]
    # a body over the cap is refused from its Content-Length, before it is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST {COMP} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 << 20}\r\n\r\n".encode() + b"x" * 1000)
        got = b""
        while b'"}}' not in got:  # the whole JSON error: head and body may come apart
            d = sock.recv(65536)
            if not d:
                break
            got += d
        head = got.decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert '"code":"body_too_large"' in head
    # an oversized header block is refused before any handler runs
    s, _, _ = server.request("GET", "/health", headers={"X-Big": "a" * 40000})
    assert s in (413, 431)
    assert server.get("/health")[0] == 200  # still serving


# ---- servers with other settings ----------------------------------------------------------------

def test_queue_full_gives_503(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "1", "--queue", "0", "-c", "512")
    try:
        holder = SlotHolder(s.port, COMP, {"prompt": "Once", "max_tokens": 400, "temperature": 0})
        wait_for(lambda: s.metrics()["plumb_slots_busy"] == 1, 10, "the slot to be busy")
        busy_before = s.metrics().get('plumb_requests_total{code="503"}', 0)  # /health said 503 while loading
        st, h, j = s.post(COMP, {"prompt": "Hi", "max_tokens": 2})
        assert st == 503 and h["retry-after"] == "1" and j["error"]["code"] == "server_busy"
        with pytest.raises(openai.InternalServerError):
            s.client().completions.create(model="x", prompt="Hi", max_tokens=2)
        holder.close()
        assert s.metrics()['plumb_requests_total{code="503"}'] == busy_before + 2
    finally:
        assert s.stop() == 0, s.stderr


def test_api_key(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "256", "--api-key", "sekret")
    try:
        assert s.request("GET", "/v1/models")[0] == 401
        assert s.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert s.request("GET", "/v1/models", headers={"Authorization": "Bearer sekret"})[0] == 200
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").completions.create(model="x", prompt="Hi", max_tokens=1)
        r = s.client(api_key="sekret").completions.create(model="x", prompt="Hi", max_tokens=2, temperature=0)
        assert r.usage.completion_tokens >= 1
        assert s.get("/health")[0] == 200  # open without a key
        # everything else that reads the model or the server's state needs the key
        for method, path, body in [("GET", "/metrics", None), ("POST", "/tokenize", {"content": "hi"}),
                                   ("POST", "/detokenize", {"tokens": [1, 2]})]:
            assert s.request(method, path, body)[0] == 401, path
            assert s.request(method, path, body, headers={"Authorization": "Bearer wrong"})[0] == 401, path
            for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme is case-insensitive (RFC 9110)
                assert s.request(method, path, body, headers={"Authorization": f"{scheme} sekret"})[0] == 200, path
        # the crash of a detokenize past the vocabulary is behind the key too, and answers 400
        st, _, b = s.request("POST", "/detokenize", {"tokens": [1 << 30]}, headers={"Authorization": "Bearer sekret"})
        assert st == 400 and b"past the vocabulary" in b
    finally:
        assert s.stop() == 0, s.stderr
    # --public-metrics opens /metrics alone
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "256", "--api-key", "sekret", "--public-metrics")
    try:
        assert s.get("/metrics")[0] == 200
        assert s.request("POST", "/tokenize", {"content": "hi"})[0] == 401
    finally:
        assert s.stop() == 0, s.stderr


def test_unloadable_model_exits_1(plumb_bin):
    """A model that cannot be loaded ends the server with exit 1 and a message."""
    s = Server(plumb_bin, Path("/nonexistent/model.gguf"), wait_ready=False)
    rc = s.proc.wait(30)
    s._reader.join(5)
    assert rc == 1 and "cannot load the model" in s.stderr


def test_sigterm_finishes_in_flight(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "2", "-c", "256")
    out = {}
    t = threading.Thread(target=lambda: out.update(r=stream_raw(s.port, COMP, {"prompt": "Once", "max_tokens": 200,
                                                                                 "temperature": 0, "stream": True,
                                                                                 "stop": []})))
    t.start()
    wait_for(lambda: s.metrics()["plumb_generated_tokens_total"] >= 2, 30, "generation to start")
    s.sigterm()
    # draining: still listening, but health checks and new work get a clean 503
    wait_for(lambda: s.get("/health")[0] == 503, 5, "the server to drain")
    st, h, j = s.post(COMP, {"prompt": "Hi", "max_tokens": 2})
    assert st == 503 and h["retry-after"] == "1" and j["error"]["code"] == "shutting_down", (st, j)
    t.join(60)
    assert s.stop() == 0, s.stderr
    events, _ = out["r"]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


def test_sanitizer_build_serves_cleanly(plumb_san_bin, real_model):
    s = Server(plumb_san_bin, real_model, "--parallel", "2", "-c", "256", ready_timeout=120)
    try:
        c = s.client()
        r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                      temperature=0)
        assert r.choices[0].message.content is not None
        events, _ = stream_raw(s.port, COMP, {"prompt": "Once", "max_tokens": 4, "stream": True,
                                              "stream_options": {"include_usage": True}, "stop": ["zz"]})
        assert events[-1] == "[DONE]"
        for name, path, body, status, _ in MALFORMED[:12]:
            assert s.post(path, body)[0] == status, name
        assert s.post("/detokenize", {"tokens": [2, 100, 5000]})[0] == 200
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        body = json.dumps({"prompt": "Once", "max_tokens": 100, "stream": True})
        sock.sendall(f"POST {COMP} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        sock.recv(100)
        sock.close()
        wait_for(lambda: s.metrics()["plumb_slots_busy"] == 0, 10, "the slot to be freed")
    finally:
        rc = s.stop(120)
    assert rc == 0 and not any(m in s.stderr for m in SAN_MARKERS), s.stderr


def test_request_timeout_gives_504_and_frees_the_slot(plumb_bin, real_model):
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "2048", "--timeout", "1")
    try:
        t0 = time.monotonic()
        st, _, j = s.post(COMP, {"prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0,
                                 "stop": []})
        took = time.monotonic() - t0
        assert st == 504 and j["error"]["type"] == "timeout_error", (st, j)
        assert 0.9 <= took < 10, took
        wait_for(lambda: s.metrics()["plumb_slots_busy"] == 0, 5, "the slot to be freed")
        st, _, j = s.post(COMP, {"prompt": "Hi", "max_tokens": 2, "temperature": 0})
        assert st == 200 and j["usage"]["completion_tokens"] >= 1
    finally:
        assert s.stop() == 0, s.stderr


def test_chunked_body_over_the_cap_gives_413(plumb_bin, real_model):
    """A body sent without Content-Length (chunked) is capped like any other."""
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "256", "--max-body", "2000")
    try:
        pad = "x" * 6000
        chunks = [json.dumps({"prompt": pad, "max_tokens": 1})[i:i + 500].encode() for i in range(0, 6100, 500)]
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        c.request("POST", COMP, body=iter([ch for ch in chunks if ch]), headers={"Content-Type": "application/json"},
                  encode_chunked=True)
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        assert r.status == 413 and body["error"]["type"], (r.status, body)
        small = [json.dumps({"prompt": "Hi", "max_tokens": 1, "temperature": 0}).encode()]
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        c.request("POST", COMP, body=iter(small), headers={"Content-Type": "application/json"}, encode_chunked=True)
        r = c.getresponse()
        assert r.status == 200, r.read()
        c.close()
    finally:
        assert s.stop() == 0, s.stderr


def _histogram(m: dict, name: str) -> tuple[list[float], float, float]:
    """(cumulative bucket counts in bound order ending with +Inf, _count, _sum) of a histogram."""
    buckets = sorted(((float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items()
                      if k.startswith(name + "_bucket")), key=lambda kv: kv[0])
    return [v for _, v in buckets], m[name + "_count"], m[name + "_sum"]


def test_metrics_every_family(plumb_bin, real_model):
    """Every metric family against what the requests did: token counters equal the usage the
    answers reported, the latency histograms count one first token per request and one gap
    per later token with monotone buckets, the queue depth shows waiting requests, and the
    slot gauges the configuration."""
    s = Server(plumb_bin, real_model, "--parallel", "1", "--queue", "4", "-c", "512")
    try:
        m = s.metrics()
        assert m["plumb_slots_total"] == 1 and m["plumb_slots_busy"] == 0 and m["plumb_queue_depth"] == 0
        usages = []
        for prompt, n in [("Once upon a time", 5), ("The capital of France is", 7), ("Once upon a time", 3)]:
            st, _, j = s.post(COMP, {"prompt": prompt, "max_tokens": n, "temperature": 0, "stop": []})
            assert st == 200, j
            usages.append(j["usage"])
        m = s.metrics()
        gen = sum(u["completion_tokens"] for u in usages)
        assert m["plumb_generated_tokens_total"] == gen
        assert m["plumb_prompt_tokens_total"] == sum(u["prompt_tokens"] for u in usages)
        cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
        assert cached > 0 and m["plumb_prompt_tokens_cached_total"] == cached  # the third reuses the first's prefix
        for name, count in [("plumb_time_to_first_token_seconds", 3), ("plumb_inter_token_latency_seconds", gen - 3)]:
            cum, total, seconds = _histogram(m, name)
            assert total == count and cum[-1] == count, (name, cum, total)
            assert all(a <= b for a, b in zip(cum, cum[1:])), (name, cum)
            assert seconds > 0
        assert m['plumb_requests_total{code="200"}'] >= 3 and m["plumb_requests_cancelled_total"] == 0
        # the queue: one long request holds the only slot while two wait
        holder = SlotHolder(s.port, COMP, {"prompt": "Once", "max_tokens": 400, "temperature": 0, "stop": []})
        wait_for(lambda: s.metrics()["plumb_slots_busy"] == 1, 20, "the slot to be busy")
        waiting = [threading.Thread(target=s.post, args=(COMP, {"prompt": "Hi", "max_tokens": 2})) for _ in range(2)]
        for t in waiting:
            t.start()
        wait_for(lambda: s.metrics()["plumb_queue_depth"] == 2, 20, "two queued requests")
        holder.close()
        for t in waiting:
            t.join(120)
        wait_for(lambda: s.metrics()["plumb_queue_depth"] == 0 and s.metrics()["plumb_slots_busy"] == 0, 20, "idle")
    finally:
        assert s.stop() == 0, s.stderr


def test_max_tokens_past_the_context_is_capped(plumb_bin, real_model):
    """max_tokens larger than what fits runs to the end of the context: finish_reason "length",
    as llama-server does; only a prompt that does not fit is an error."""
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "64")
    try:
        for path, body in (("/v1/completions", {"prompt": "Once upon a time"}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell a story."}]})):
            st, _, b = s.post(path, dict(body, max_tokens=10 ** 9, temperature=0))
            assert st == 200, b
            ch, u = b["choices"][0], b["usage"]
            assert ch["finish_reason"] == "length", b
            # every position of the context holds a token, and the last one sampled needs none
            assert u["prompt_tokens"] + u["completion_tokens"] == 64 + 1, u
        st, _, b = s.post("/v1/completions", {"prompt": "word " * 200, "max_tokens": 5})
        assert st == 400 and b["error"]["code"] == "context_length_exceeded", b
    finally:
        s.stop()


def test_timings_and_access_log(plumb_bin, real_model):
    """llama-server's "timings" on completions (whole and the last streamed chunk; "timings":
    false leaves them out), and --log's line per request with tokens, time to first token and
    the client."""
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "256", "--log")
    try:
        st, _, b = s.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})
        assert st == 200, b
        t = b["timings"]
        assert t["prompt_n"] + t["cache_n"] == b["usage"]["prompt_tokens"] and t["predicted_n"] == b["usage"]["completion_tokens"]
        assert t["prompt_ms"] > 0 and t["predicted_ms"] > 0 and t["predicted_per_second"] > 0
        assert abs(t["predicted_per_token_ms"] * t["predicted_n"] - t["predicted_ms"]) < 1e-6 * t["predicted_ms"] + 1e-9
        st, _, b = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                                                   "timings": False})
        assert st == 200 and "timings" not in b, b
        events, _ = stream_raw(s.port, "/v1/completions", {"prompt": "Hello", "max_tokens": 4, "stream": True})
        last = json.loads(events[-2])
        assert last["choices"][0]["finish_reason"] and last["timings"]["predicted_n"] == 4, last
        wait_for(lambda: sum("POST /v1/completions 200" in ln for ln in s.lines) >= 1, 10, "the access log line")
        line = next(ln for ln in s.lines if "POST /v1/completions 200" in ln)
        assert re.search(r"prompt \d+ \(\d+ cached\) gen 8 ttft [0-9.]+ s total [0-9.]+ s 127\.0\.0\.1", line), line
    finally:
        s.stop()
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "256", "--log", "--log-format", "json")
    try:
        st, _, b = s.post("/v1/completions", {"prompt": "One two", "max_tokens": 3})
        assert st == 200
        wait_for(lambda: any('"path":"/v1/completions"' in ln for ln in s.lines), 10, "the JSON access log line")
        rec = json.loads(next(ln[ln.index("{"):] for ln in s.lines if '"path":"/v1/completions"' in ln))
        assert rec["status"] == 200 and rec["completion_tokens"] == 3 and rec["ttft_s"] > 0 and rec["client"] == "127.0.0.1"
        assert rec["method"] == "POST" and rec["prompt_tokens"] >= 2 and rec["total_s"] >= rec["ttft_s"]
    finally:
        s.stop()


def test_first_requests_after_start_are_exact(plumb_bin, real_model, run):
    """The server warms up at load (a token of every slot's sequence decoded, then the caches
    emptied): right after start every slot holds nothing, and the first requests, four at once,
    each give `plumb run`'s greedy text."""
    prompts = PROMPTS[:4]
    want = []
    for p in prompts:
        cli = run(plumb_bin, "run", "-m", real_model, "-p", p, "-n", "8", "--temp", "0", "--no-stats", "-t", "2")
        assert cli.rc == 0, cli.describe()
        want.append(cli.stdout[:-1])
    s = Server(plumb_bin, real_model, "--parallel", "4", "-c", "256", "--slots")
    try:
        st, _, b = s.request("GET", "/slots")
        slots = json.loads(b)
        assert st == 200 and len(slots) == 4 and all(x["n_cached"] == 0 and x["state"] == "idle" for x in slots), slots
        results = run_together(lambda i: s.post("/v1/completions", {"prompt": prompts[i], "max_tokens": 8, "temperature": 0}), 4)
        for r, w in zip(results, want):
            assert not isinstance(r, Exception), r
            assert r[0] == 200 and r[2]["choices"][0]["text"] == w, r
    finally:
        assert s.stop() == 0, s.stderr


def test_introspection(plumb_bin, real_model):
    """GET /v1/models/{id}, /props and /slots (on with --slots, behind the API key)."""
    s = Server(plumb_bin, real_model, "--parallel", "2", "-c", "256", "--alias", "g3", "--slots", "--api-key", "k")
    try:
        auth = {"Authorization": "Bearer k"}
        st, _, b = s.request("GET", "/v1/models/g3", headers=auth)
        m = json.loads(b)
        assert st == 200 and m["id"] == "g3" and m["object"] == "model", b
        st, _, b = s.request("GET", "/v1/models/other", headers=auth)
        assert st == 404 and json.loads(b)["error"]["code"] == "model_not_found"
        st, _, b = s.request("GET", "/props", headers=auth)
        p = json.loads(b)
        assert st == 200 and p["total_slots"] == 2 and p["default_generation_settings"]["n_ctx"] == 256
        assert p["model"]["architecture"] == "gemma3" and p["build_info"].startswith("plumb ") and "chat_template" in p
        assert s.request("GET", "/slots")[0] == 401
        st, _, b = s.request("GET", "/slots", headers=auth)
        slots = json.loads(b)
        assert st == 200 and [x["id"] for x in slots] == [0, 1] and all(x["state"] == "idle" for x in slots)
        st, _, b = s.post("/v1/completions", {"prompt": "Hello there", "max_tokens": 3, "temperature": 0}, headers=auth)
        assert st == 200
        slots = json.loads(s.request("GET", "/slots", headers=auth)[2])
        assert max(x["n_cached"] for x in slots) >= b["usage"]["prompt_tokens"], slots
        # the client's model
        assert [m.id for m in s.client(api_key="k").models.list()] == ["g3"]
        assert s.client(api_key="k").models.retrieve("g3").id == "g3"
    finally:
        s.stop()
    s = Server(plumb_bin, real_model, "--parallel", "1", "-c", "128")
    try:
        st, _, b = s.request("GET", "/slots")
        assert st == 501 and "--slots" in json.loads(b)["error"]["message"]
    finally:
        s.stop()
