"""Command-line conventions shared by every subcommand: GNU-style `--name=VALUE` for every
valued long option (short options take their value as the next argument only), the
environment defaults of `plumb serve` (PLUMB_ARG_<LONG NAME>, the command line winning, a bad
value naming its variable), and --help texts whose defaults are the code's."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from conftest import SAN_ENV
from serving import Server, wait_for

PROMPT = "The capital of France is"


def gen(run, plumb_bin, model, *args):
    r = run(plumb_bin, "run", "-m", model, "-p", PROMPT, "--no-stats", *args, timeout=120)
    assert r.rc == 0, r.describe()
    return r.stdout


def test_equals_form_matches_separate_value(plumb_bin, run, real_model):
    spaced = gen(run, plumb_bin, real_model, "--temp", "0", "--n-predict", "6", "--top-k", "5")
    joined = gen(run, plumb_bin, real_model, "--temp=0", "--n-predict=6", "--top-k=5")
    assert spaced == joined and spaced.strip()
    # sampling options too: the same seed and settings, the same text either way
    a = gen(run, plumb_bin, real_model, "-n", "6", "--seed", "7", "--temp", "1.2", "--top-p", "0.9")
    b = gen(run, plumb_bin, real_model, "-n", "6", "--seed=7", "--temp=1.2", "--top-p=0.9")
    assert a == b


def test_n_predict_equals(plumb_bin, run, real_model):
    r = run(plumb_bin, "run", "-m", real_model, "-p", PROMPT, "--n-predict=4", "--temp=0", timeout=120)
    assert r.rc == 0 and re.search(r"generation 4 tokens", r.stderr), r.describe()


def test_model_equals_in_every_subcommand(plumb_bin, run, real_model):
    assert run(plumb_bin, "tokenize", f"--model={real_model}", "--ids", "Hello").rc == 0
    r = run(plumb_bin, "bench", f"--model={real_model}", "--n-prompt=8", "--n-gen=0", "--repetitions=1",
            "--threads=1", "--no-membw", "--output=json", timeout=120)
    assert r.rc == 0 and json.loads(r.stdout)[0]["test"] == "pp8", r.describe()
    assert run(plumb_bin, "inspect", real_model, "--array-items=2", "--json").rc == 0


@pytest.mark.parametrize("args, message", [
    (["--temp="], "bad value '' for --temp"),
    (["--top-k=x"], "bad value 'x' for --top-k"),
    (["--chat-format=nope"], "bad value 'nope' for --chat-format"),
    (["-n=4"], "unknown option '-n=4'"),  # short options take the next argument, nothing glued on
])
def test_bad_equals_values(plumb_bin, run, real_model, args, message):
    r = run(plumb_bin, "run", "-m", real_model, "-p", "x", *args)
    assert r.rc == 2 and message in r.stderr, r.describe()


def test_flags_take_no_value(plumb_bin, run, real_model):
    r = run(plumb_bin, "run", "-m", real_model, "-p", "x", "--mmap=1")
    assert r.rc == 2 and "unknown option '--mmap=1'" in r.stderr, r.describe()


# ---- serve: environment defaults ------------------------------------------------------------
def serve_options(plumb_bin, run) -> list[str]:
    """The long options `plumb serve --help` lists."""
    r = run(plumb_bin, "serve", "--help")
    assert r.rc == 0, r.describe()
    usage = r.stdout.split("\n\n")[0]
    return re.findall(r"^\s+(?:-\w+, )?(--[a-z-]+)", usage, re.M), r.stdout


def test_serve_help_lists_a_variable_per_option(plumb_bin, run):
    opts, text = serve_options(plumb_bin, run)
    assert len(opts) >= 20 and "--port" in opts and "--log" in opts
    names = set(re.findall(r"PLUMB_ARG_[A-Z_]+", text))
    want = {"PLUMB_ARG_" + o[2:].upper().replace("-", "_") for o in opts}
    assert want <= names, sorted(want - names)


def test_serve_takes_alias_from_environment(plumb_bin, qwen_model):
    s = Server(plumb_bin, qwen_model, env={"PLUMB_ARG_ALIAS": "from-env", "PLUMB_ARG_PARALLEL": "2"})
    try:
        status, body = s.get("/v1/models")
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["from-env"], body
        wait_for(lambda: "ready: 2 slots" in s.stderr, 10, "the ready line with PLUMB_ARG_PARALLEL's slots")
    finally:
        s.stop()


def test_serve_command_line_wins(plumb_bin, qwen_model):
    s = Server(plumb_bin, qwen_model, "--alias=from-cli", env={"PLUMB_ARG_ALIAS": "from-env"})
    try:
        status, body = s.get("/v1/models")
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["from-cli"], body
    finally:
        s.stop()


def test_serve_port_from_environment(plumb_bin, qwen_model):
    """PLUMB_ARG_PORT=0 (any free port) instead of the default 8080, with no --port given."""
    env = dict(os.environ, **SAN_ENV, PLUMB_ARG_PORT="0", PLUMB_ARG_MODEL=str(qwen_model), PLUMB_ARG_THREADS="1")
    p = subprocess.Popen([str(plumb_bin), "serve"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    try:
        line = b""
        deadline = time.monotonic() + 30
        while b"listening on" not in line and time.monotonic() < deadline and p.poll() is None:
            line = p.stderr.readline()
        m = re.search(rb"listening on http://127\.0\.0\.1:(\d+) \(loading (.*)\)", line)
        assert m and int(m.group(1)) not in (0, 8080) and m.group(2) == str(qwen_model).encode(), line
    finally:
        p.kill()
        p.wait(10)


@pytest.mark.parametrize("var, value", [
    ("PLUMB_ARG_PORT", "http"),
    ("PLUMB_ARG_PARALLEL", "0"),
    ("PLUMB_ARG_CHAT_FORMAT", "nope"),
    ("PLUMB_ARG_LOG", "yes please"),
])
def test_serve_bad_environment_value(plumb_bin, run, real_model, var, value, monkeypatch):
    monkeypatch.setenv(var, value)
    r = run(plumb_bin, "serve", "-m", real_model, "--port", "0")
    assert r.rc == 2 and var in r.stderr and f"'{value}'" in r.stderr, r.describe()
    assert len(r.stderr_lines) == 1, r.describe()


def test_serve_bad_environment_value_even_when_overridden(plumb_bin, run, real_model, monkeypatch):
    """A broken default is reported rather than hidden by the option that overrides it."""
    monkeypatch.setenv("PLUMB_ARG_PORT", "-1")
    r = run(plumb_bin, "serve", "-m", real_model, "--port", "0")
    assert r.rc == 2 and "PLUMB_ARG_PORT" in r.stderr, r.describe()


# ---- help texts and the code's defaults -----------------------------------------------------
def test_help_defaults_of_n_predict(plumb_bin, run):
    run_help = run(plumb_bin, "run", "--help").stdout
    chat_help = run(plumb_bin, "chat", "--help").stdout
    assert re.search(r"--n-predict N +tokens to generate \(default 256;", run_help), run_help
    assert re.search(r"--n-predict N +tokens to generate \(default -1: until end of generation\)", chat_help), chat_help


def test_chat_reply_is_not_cut_at_256_tokens(plumb_bin, real_model):
    """chat's default -n is -1, as its help says: a reply runs past 256 tokens, to the end of
    its turn or of the context (greedy Gemma 3 270M, a base model, loops until the end)."""
    p = subprocess.run([str(plumb_bin), "chat", "-m", str(real_model), "--temp", "0", "-c", "400", "--stats",
                        "--chat-format", "gemma"], input=b"Count from one to one thousand in words.\n",
                       capture_output=True, timeout=300, env=dict(os.environ, **SAN_ENV))
    err = p.stderr.decode()
    assert p.returncode == 0, err
    m = re.search(r"generation (\d+) tokens", err)
    if "context full" in err:
        return  # ran to the end of the context: not cut at 256
    assert m, err
    n = int(m.group(1))  # greedy and bit-exact on every kernel set: the same reply everywhere
    assert n > 256, f"the reply stopped after {n} tokens, not past the old default of 256"


def test_help_defaults_of_sampling(plumb_bin, run):
    text = run(plumb_bin, "run", "--help").stdout
    for pat in [r"--temp T +temperature \(default 0\.8;", r"--top-k N +\(default 40;", r"--top-p P +\(default 0\.95;",
                r"--min-p P +\(default 0\.05;", r"--repeat-last-n N +penalty window \(default 64;",
                r"--batch-size N +prompt tokens per forward pass \(default 512\)", r"--seed N +sampling seed \(default \d+;"]:
        assert re.search(pat, text), f"{pat!r} not in\n{text}"


def test_bench_help_default_threads(plumb_bin, run):
    text = run(plumb_bin, "bench", "--help").stdout
    assert "--threads LIST" in text and "(default 1,2)" not in text
    assert "csv" in text
