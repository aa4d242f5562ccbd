"""Usage errors of the plumb subcommands (run, chat, tokenize, inspect, bench, info): an option
at the end of the line without its value, bad values (chat formats, negative counts, numbers
with white space around them), prompt files that cannot be read, exit status 2 for usage
errors everywhere; and `plumb chat` going on after a message too long for its context."""
import os
import subprocess
import threading

import pytest

MISSING_MODEL = "/nonexistent/model.gguf"  # an error about it would mean the options were accepted


def _args(args, model):
    return [str(model) if a == "MODEL" else a for a in args]


# ---- an option without its value ----------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["run", "-m", "MODEL", "-p"],
    ["run", "-m", "MODEL", "--prompt"],
    ["run", "-m", "MODEL", "-f"],
    ["run", "-p", "x", "-m"],
    ["run", "-m", "MODEL", "-p", "x", "--temp"],
    ["chat", "-m", "MODEL", "--system"],
    ["chat", "-m", "MODEL", "--chat-format"],
    ["tokenize", "x", "-m"],
    ["tokenize", "--model"],
    ["inspect", "MODEL", "--array-items"],
    ["bench", "-m", "MODEL", "-t"],
    ["bench", "-m"],
], ids=" ".join)
def test_trailing_option_needs_a_value(run, plumb_bin, real_model, args):
    opt = args[-1]
    r = run(plumb_bin, *_args(args, real_model), timeout=60)
    assert r.rc == 2, r.describe()
    assert f"{opt} needs a value" in r.stderr and "unknown option" not in r.stderr, r.describe()
    assert len(r.stderr_lines) == 1 and r.stdout == "", r.describe()


def test_info_takes_no_arguments(run, plumb_bin):
    r = run(plumb_bin, "info", "-p")
    assert r.rc == 2 and r.stdout == "" and "'-p'" in r.stderr, r.describe()
    assert run(plumb_bin, "info", "--help").rc == 0


# ---- prompt files ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["directory", "missing"])
def test_unreadable_prompt_file_is_an_error(run, plumb_bin, real_model, tmp_path, kind):
    path = tmp_path / "prompts"
    if kind == "directory":
        path.mkdir()
    r = run(plumb_bin, "run", "-m", real_model, "-f", path, "-n", "4", timeout=60)
    assert r.rc in (1, 2) and r.stdout == "", r.describe()
    assert str(path) in r.stderr and len(r.stderr_lines) == 1, r.describe()


def test_prompt_from_a_pipe(plumb_bin, real_model, tmp_path):
    """A FIFO and /dev/stdin are read like a file: the same greedy text as -p."""
    prompt = "The capital of France is"
    base = ["run", "-m", str(real_model), "-n", "6", "--temp", "0", "--no-stats"]
    want = subprocess.run([str(plumb_bin), *base, "-p", prompt], capture_output=True, text=True, timeout=120)
    assert want.returncode == 0 and want.stdout.strip(), want.stderr

    stdin = subprocess.run([str(plumb_bin), *base, "-f", "/dev/stdin"], input=prompt, capture_output=True,
                           text=True, timeout=120)
    assert stdin.returncode == 0 and stdin.stdout == want.stdout, stdin.stderr

    fifo = tmp_path / "prompt.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w") as f:  # blocks until plumb opens the other end
            f.write(prompt)
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    piped = subprocess.run([str(plumb_bin), *base, "-f", str(fifo)], capture_output=True, text=True, timeout=120)
    writer.join(timeout=10)
    assert piped.returncode == 0 and piped.stdout == want.stdout, piped.stderr


# ---- bad values -----------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", ["chat", "run"])
def test_unknown_chat_format_is_rejected_before_loading(run, plumb_bin, cmd):
    extra = ["-p", "x"] if cmd == "run" else []
    r = run(plumb_bin, cmd, "-m", MISSING_MODEL, *extra, "--chat-format", "bogus")
    assert r.rc == 2 and len(r.stderr_lines) == 1, r.describe()
    assert "'bogus'" in r.stderr and all(f in r.stderr for f in ("gemma", "llama3", "chatml")), r.describe()


@pytest.mark.parametrize("value", ["-1", "-5", "x", "3x"])
def test_array_items_must_be_a_count(run, plumb_bin, real_model, value):
    r = run(plumb_bin, "inspect", real_model, "--array-items", value)
    assert r.rc == 2 and r.stdout == "" and "--array-items" in r.stderr, r.describe()


@pytest.mark.parametrize("args", [
    ["run", "-m", MISSING_MODEL, "-p", "x", "-n", " 5"],
    ["run", "-m", MISSING_MODEL, "-p", "x", "-n", "5 "],
    ["run", "-m", MISSING_MODEL, "-p", "x", "--top-k", "\t5"],
    ["run", "-m", MISSING_MODEL, "-p", "x", "--temp", " 0.5"],
    ["run", "-m", MISSING_MODEL, "-p", "x", "--temp", "0.5 "],
    ["run", "-m", MISSING_MODEL, "-p", "x", "--seed", " 3"],
    ["chat", "-m", MISSING_MODEL, "-c", " 64"],
    ["bench", "-m", MISSING_MODEL, "-t", " 1"],
    ["bench", "-m", MISSING_MODEL, "-t", "1, 2"],
    ["bench", "-m", MISSING_MODEL, "-p", "512 "],
    ["bench", "-m", MISSING_MODEL, "-r", " 3"],
    ["inspect", MISSING_MODEL, "--array-items", " 3"],
], ids=lambda a: " ".join(a[3:]) if a[0] == "run" else " ".join(a))
def test_numbers_with_white_space_are_rejected(run, plumb_bin, args):
    r = run(plumb_bin, *args)
    assert r.rc == 2 and len(r.stderr_lines) == 1, r.describe()
    assert "cannot open" not in r.stderr, r.describe()


@pytest.mark.parametrize("args", [
    ["--frobnicate"],
    ["-r", "0"],
    ["-o", "tsv"],
    ["-t", "x"],
    ["-p", "0", "-n", "0"],
    [],
], ids=lambda a: " ".join(a) or "no-model")
def test_bench_usage_errors_exit_2(run, plumb_bin, args):
    r = run(plumb_bin, "bench", *(["-m", MISSING_MODEL] if args else []), *args)
    assert r.rc == 2 and r.stdout == "" and len(r.stderr_lines) == 1, r.describe()
    assert r.stderr.startswith("plumb bench: "), r.describe()


# ---- chat: a message too long for the context -----------------------------------------------
def test_chat_drops_a_message_too_long_and_goes_on(plumb_bin, real_model):
    def chat(lines):
        return subprocess.run([str(plumb_bin), "chat", "-m", str(real_model), "-c", "64", "-n", "4", "--temp", "0"],
                              input="".join(l + "\n" for l in lines), capture_output=True, text=True, timeout=120)
    alone = chat(["Hi"])
    assert alone.returncode == 0 and alone.stdout.strip(), alone.stderr
    p = chat(["word " * 200, "Hi"])
    assert p.returncode == 0, p.stderr
    assert "context of 64" in p.stderr and "dropped" in p.stderr, p.stderr
    # the long message left no trace in the conversation: the reply is the one "Hi" gets alone
    assert p.stdout == alone.stdout, (p.stdout, alone.stdout)
