"""`plumb run` and `plumb chat` on the real Gemma 3 270M model: streaming output, timing
line, seeds, stop strings, the full-context policy, error exits, multi-turn chat that keeps
its KV cache, and a sanitizer run of the whole generation path."""
import re
import subprocess

import pytest

from conftest import SAN_ENV


def _stats(stderr):
    m = re.search(r"prompt (\d+) tokens, ([\d.]+) tokens/s \| generation (\d+) tokens, ([\d.]+) tokens/s \| "
                  r"peak RSS ([\d.]+) MiB", stderr)
    assert m, stderr
    return [float(x) for x in m.groups()]


def test_run_greedy_is_coherent_and_reports_speed(run, plumb_bin, real_model):
    r = run(plumb_bin, "run", "-m", real_model, "-p", "The capital of France is", "-n", "16", "--temp", "0",
            timeout=300)
    assert r.rc == 0, r.describe()
    # the default model is the pretrained (not instruction-tuned) Gemma 3 270M: it continues
    # text; agreement with llama.cpp's exact continuation is checked in test_agreement.py
    assert len(re.findall(r"[A-Za-z]+", r.stdout)) >= 5, r.stdout
    n_prompt, pp, n_gen, tg, rss = _stats(r.stderr)
    assert n_prompt == 6 and n_gen == 16 and pp > 0 and tg > 0 and 100 < rss < 2000
    assert re.search(r"load [\d.]+ s", r.stderr)


def test_same_seed_same_text_and_other_seed_differs(run, plumb_bin, real_model):
    args = ["run", "-m", real_model, "-p", "Once upon a time", "-n", "24", "--temp", "1.0", "--top-k", "0",
            "--top-p", "1", "--min-p", "0", "--no-stats"]
    a = run(plumb_bin, *args, "--seed", "7", timeout=300)
    b = run(plumb_bin, *args, "--seed", "7", timeout=300)
    c = run(plumb_bin, *args, "--seed", "8", timeout=300)
    assert a.rc == b.rc == c.rc == 0
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_stop_string_cuts_output(run, plumb_bin, real_model):
    base = run(plumb_bin, "run", "-m", real_model, "-p", "The capital of France is", "-n", "24", "--temp", "0",
               "--no-stats", timeout=300)
    assert base.rc == 0
    words = base.stdout.split()
    assert len(words) > 6
    stop = words[4]
    cut = run(plumb_bin, "run", "-m", real_model, "-p", "The capital of France is", "-n", "24", "--temp", "0",
              "--no-stats", "--stop", stop, timeout=300)
    assert cut.rc == 0
    assert cut.stdout.rstrip("\n") == base.stdout[: base.stdout.index(stop)]


def test_full_context_ends_generation_with_a_message(run, plumb_bin, real_model):
    r = run(plumb_bin, "run", "-m", real_model, "-p", "Count: one two three", "-n", "100", "--temp", "0",
            "--ctx-size", "16", timeout=300)
    assert r.rc == 0, r.describe()
    assert "context full (16 tokens)" in r.stderr
    n_prompt, _, n_gen, _, _ = _stats(r.stderr)
    assert n_prompt + n_gen <= 17


@pytest.mark.parametrize("args,rc,msg", [
    (["-m", "/nonexistent/model.gguf", "-p", "x"], 1, "cannot open"),
    (["-m", "__SELF__", "-p", "x"], 1, "bad magic"),
    (["-m", "__MODEL__", "-p", "word " * 40, "--ctx-size", "8"], 1, "too long for a context of 8"),
    (["-m", "__MODEL__", "-p", "x", "--temp", "abc"], 2, "bad value 'abc' for --temp"),
    (["-m", "__MODEL__", "--bogus"], 2, "unknown option '--bogus'"),
    (["-p", "x"], 2, "usage"),
])
def test_run_errors_exit_nonzero_with_one_clear_line(run, plumb_bin, real_model, args, rc, msg):
    args = [str(plumb_bin) if a == "__SELF__" else str(real_model) if a == "__MODEL__" else a for a in args]
    r = run(plumb_bin, "run", *args, timeout=120)
    assert r.rc == rc, r.describe()
    assert msg in r.stderr, r.describe()
    assert len(r.stderr.strip().splitlines()) == 1, r.describe()


def test_unsupported_architecture_is_named(run, plumb_bin, tmp_path):
    import gguf
    import numpy as np
    path = tmp_path / "rwkv.gguf"
    w = gguf.GGUFWriter(str(path), "rwkv6")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    r = run(plumb_bin, "run", "-m", path, "-p", "x")
    assert r.rc == 1
    assert "architecture 'rwkv6' is not supported (supported: llama, gemma3, qwen2, qwen3, gemma2, phi3, qwen3moe)" in r.stderr


def _chat(binary, model, lines, *extra, env=None, timeout=300):
    p = subprocess.run([str(binary), "chat", "-m", str(model), "--temp", "0", "--stats", "-n", "24", *extra],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=timeout, env=env)
    return p


def test_chat_multi_turn_reuses_the_cache(plumb_bin, real_model):
    p = _chat(plumb_bin, real_model, ["What is the capital of France?", "And of Italy?"])
    assert p.returncode == 0, p.stderr
    replies = [l for l in p.stdout.split("\n") if l.strip()]
    assert len(replies) >= 2, p.stdout
    stats = re.findall(r"prompt (\d+) tokens", p.stderr)
    assert len(stats) == 2, p.stderr
    first, total = int(stats[0]), int(stats[1])
    second = total - first
    # the second turn processes only what is new: the end of the reply, the new user turn
    assert 0 < second < first + 12, (first, second)


def test_chat_system_prompt_and_format_override(plumb_bin, real_model):
    """--system reaches the prompt as the model's own template places it (rendered here by
    jinja2): the first turn's prompt has exactly that many tokens, the reply is what `plumb
    run` gives for that text, and the second turn still reuses the cache."""
    from test_chat_format import GEMMA3_TEMPLATE, render_jinja
    system, user = "Answer in French, in one short sentence.", "Say hello."
    p = _chat(plumb_bin, real_model, [user, "Thanks."], "--system", system, "--chat-format", "gemma")
    assert p.returncode == 0, p.stderr
    text = render_jinja(GEMMA3_TEMPLATE, [{"role": "system", "content": system}, {"role": "user", "content": user}],
                        "<bos>", True)
    assert text.startswith("<bos>") and system in text
    tok = subprocess.run([str(plumb_bin), "tokenize", "-m", str(real_model), "--ids", text], capture_output=True,
                         text=True, timeout=60)
    assert tok.returncode == 0, tok.stderr
    want = [int(t) for t in re.findall(r"\d+", tok.stdout)]
    assert want[0] == want[1] == 2, want[:3]  # the text's <bos> and the one tokenize adds
    stats = [int(n) for n in re.findall(r"prompt (\d+) tokens", p.stderr)]
    assert stats[0] == len(want) - 1, (stats, len(want))
    assert 0 < stats[1] - stats[0] < stats[0], stats  # the second turn only adds what is new
    run = subprocess.run([str(plumb_bin), "run", "-m", str(real_model), "-p", text[len("<bos>"):], "--temp", "0",
                          "-n", "24", "--no-stats"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert p.stdout.split("\n")[0] == run.stdout.rstrip("\n").split("\n")[0], (p.stdout, run.stdout)
    without = _chat(plumb_bin, real_model, [user], "--chat-format", "gemma")
    assert int(re.findall(r"prompt (\d+) tokens", without.stderr)[0]) < stats[0]
    bad = _chat(plumb_bin, real_model, ["hi"], "--chat-format", "nope")
    assert bad.returncode == 2 and "bad value 'nope' for --chat-format" in bad.stderr


def test_generation_under_sanitizers(plumb_san_bin, real_model):
    import os
    env = dict(os.environ, **SAN_ENV)
    p = subprocess.run([str(plumb_san_bin), "run", "-m", str(real_model), "-p", "Hello <start_of_turn>", "-n", "3",
                        "--temp", "0.7", "--seed", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr
    c = _chat(plumb_san_bin, real_model, ["Hi", "Bye"], "-n", "2", env=env, timeout=600)
    assert c.returncode == 0, c.stderr[-3000:]
    assert "Sanitizer" not in c.stderr and "runtime error" not in c.stderr


def test_mmap_gives_the_same_text(run, plumb_bin, real_model):
    """Weights read into memory (default) or left in the file mapping (--mmap): the same
    bytes, so the same greedy text."""
    args = ["run", "-m", real_model, "-p", "The capital of France is", "-n", "16", "--temp", "0"]
    a, b = run(plumb_bin, *args), run(plumb_bin, *args, "--mmap")
    assert a.rc == 0 and b.rc == 0, a.describe() + b.describe()
    assert a.stdout == b.stdout and len(a.stdout.strip()) > 0


# ---- a base model in chat ------------------------------------------------------------------
BASE_WARNING = "plumb chat: warning: the model has no chat template (tokenizer.chat_template)"


def test_chat_on_a_base_model_warns(plumb_bin, real_model, qwen_model):
    """Gemma 3 270M (pretrained) has no tokenizer.chat_template: chat says it is likely not
    instruction-tuned and which format it uses; the instruct Qwen model carries its template
    and gets no such line."""
    p = _chat(plumb_bin, real_model, ["Hi"], "-n", "2")
    assert p.returncode == 0, p.stderr
    warn = [l for l in p.stderr.splitlines() if l.startswith(BASE_WARNING)]
    assert len(warn) == 1 and "not instruction-tuned" in warn[0] and "built-in gemma" in warn[0], p.stderr
    q = _chat(plumb_bin, qwen_model, ["Hi"], "-n", "2")
    assert q.returncode == 0 and "warning" not in q.stderr, q.stderr


# ---- progress of a long prompt --------------------------------------------------------------
PROGRESS = re.compile(r"^prompt: (\d+)/(\d+) tokens$", re.M)


def test_long_prompt_shows_progress(run, plumb_bin, real_model, tmp_path):
    """A prompt that takes more than a second (1500 tokens, one thread, 8 per batch) reports
    its progress on stderr, ending with the whole count; stdout carries only the text."""
    f = tmp_path / "long.txt"
    f.write_text("The quick brown fox jumps over the lazy dog. " * 150)
    r = run(plumb_bin, "run", "-m", real_model, "-f", f, "-n", "2", "--temp", "0", "-t", "1", "-b", "8", timeout=180)
    assert r.rc == 0, r.describe()
    counts = [(int(a), int(b)) for a, b in PROGRESS.findall(r.stderr)]
    prompt_tokens, prompt_seconds_rate = _stats(r.stderr)[0:2]
    if prompt_tokens / prompt_seconds_rate < 0.9:  # a machine this fast shows no progress at all
        assert not counts, r.describe()
        return
    assert counts, r.describe()
    assert all(total == prompt_tokens for _, total in counts)
    assert counts[-1][0] == prompt_tokens
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)
    assert "prompt:" not in r.stdout


def test_short_prompt_shows_no_progress(run, plumb_bin, real_model):
    r = run(plumb_bin, "run", "-m", real_model, "-p", "Hello", "-n", "2", "--temp", "0", timeout=60)
    assert r.rc == 0 and not PROGRESS.search(r.stderr), r.describe()
