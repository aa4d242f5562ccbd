"""Running out of memory is a clean error, never a crash, an abort or a leak: plumb_fault_check
(next to the sanitizer plumb, linked with the allocation functions, mmap, madvise, mprotect,
fopen, pthread_create and PCRE2's constructors wrapped) runs a scenario once per N, failing
its Nth such call, and checks that each run ends in the reference result or in a negative
status with a message, with nothing leaked (LeakSanitizer after every run), left mapped, open
or running. The scenarios: model load (synthetic SPM and BPE models and the real one, read
into memory and mapped), context create, decode, tokenization and the server's helpers over
it, the sampler, the chat formats, the GGUF writer and reader, and the server's request
parsers. Scenarios with many calls fail a sample of them, always including the first and the
last call of every call site."""
import re
import shutil
import subprocess

import pytest
from gguf import GGMLQuantizationType as QT

import synth

SUMMARY = re.compile(r"^(\w+): (\d+) calls at (\d+) sites, (\d+) runs: (\d+) failed cleanly, (\d+) succeeded, "
                     r"(\d+) wrong\nabsorbed:(.*)$", re.M)
# What plumb must survive and still succeed: huge pages are advice (madvise), and a model read
# into memory is mapped from its file instead when the anonymous memory (mmap, mprotect) or
# /proc/meminfo (fopen) cannot be had.
READ_FALLBACKS = {"mmap", "madvise", "mprotect", "fopen"}


def _sites(exe, text):
    """file:line of the call sites named in FAIL lines (addr2line), for the failure message."""
    offsets = sorted(set(re.findall(r"at exe\+(0x[0-9a-f]+)", text)))[:20]
    if not shutil.which("addr2line"):
        return ""
    out = []
    for o in offsets:
        p = subprocess.run(["addr2line", "-e", str(exe), "-f", "-i", "-p", o], capture_output=True, text=True)
        out.append(f"{o}: {p.stdout.strip()}")
    return "\n".join(out)


def _fault_check(run, san_bin, *args, timeout=300):
    """Runs plumb_fault_check with args; returns (runs, succeeded, absorbed kinds) once it
    found every run clean, else fails naming the runs, their call sites and what went wrong."""
    exe = san_bin.parent / "plumb_fault_check"
    r = run(exe, *args, timeout=timeout)
    m = SUMMARY.search(r.stdout)
    if r.rc != 0 or r.sanitizer_report or not m:
        runs = [line for line in r.stderr_lines if line.startswith("run ")]
        other = "\n".join(line for line in r.stderr_lines if not line.startswith("run "))
        pytest.fail(f"$ {' '.join(r.args)}\nexit {r.rc}\n{r.stdout[-6000:]}\n"
                    f"last run started: {runs[-1] if runs else '(none)'}\n"
                    f"call sites:\n{_sites(exe, r.stdout + (runs[-1] if runs else ''))}\n"
                    f"--- stderr\n{other[:6000]}", pytrace=False)
    calls, sites, runs, failed, ok, wrong = (int(g) for g in m.groups()[1:7])
    assert calls > 0 and runs >= sites > 0 and wrong == 0 and failed + ok == runs, r.stdout
    return runs, ok, set(m.group(8).split())


@pytest.fixture(scope="module")
def synth_models(tmp_path_factory):
    """A llama model with a SentencePiece vocabulary and a gemma3 one with a byte-level BPE
    vocabulary (PCRE2 pre-tokenizer regexes), both tiny."""
    d = tmp_path_factory.mktemp("oom")
    spm, bpe = d / "llama-spm.gguf", d / "gemma3-bpe.gguf"
    synth.write_model(spm, "llama", n_embd=64, n_ff=96, n_layer=2, qtype=QT.Q8_0)
    synth.write_model(bpe, "gemma3", n_embd=64, n_ff=96, n_layer=2, qtype=QT.Q4_0, n_swa=4, bpe=True)
    return {"spm": spm, "bpe": bpe}


@pytest.mark.parametrize("vocab", ["spm", "bpe"])
@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])
def test_synthetic_model_load(run, plumb_san_bin, synth_models, vocab, mmap):
    _, _, absorbed = _fault_check(run, plumb_san_bin, "load", synth_models[vocab], *(["--mmap"] if mmap else []))
    # read into memory: every huge-page and memory failure falls back and the load succeeds
    assert absorbed == (set() if mmap else READ_FALLBACKS)


@pytest.mark.parametrize("scenario", ["context", "decode", "tokenize", "gen"])
@pytest.mark.parametrize("vocab", ["spm", "bpe"])
def test_synthetic_model_use(run, plumb_san_bin, synth_models, scenario, vocab):
    # three threads: a compute thread that cannot start while another runs must be joined
    _fault_check(run, plumb_san_bin, scenario, synth_models[vocab], "--threads", "3")


def test_context_with_profiler(run, plumb_san_bin, synth_models, monkeypatch):
    # PLUMB_PROFILE makes the CPU backend allocate its op profile (without it, no profile)
    monkeypatch.setenv("PLUMB_PROFILE", "1")
    _, _, absorbed = _fault_check(run, plumb_san_bin, "context", synth_models["spm"], "--threads", "3")
    assert "calloc" in absorbed  # a profile that cannot be had is no profile


def test_real_model_load_mapped(run, plumb_san_bin, real_model):
    runs, _, absorbed = _fault_check(run, plumb_san_bin, "load", real_model, "--mmap")
    assert runs > 200 and absorbed == set()  # every call, the whole vocabulary's included


def test_real_model_load_read(run, plumb_san_bin, real_model):
    # each run that gets that far reads the whole file: the calls after the read are those of
    # the mapped load above, so a sample (every site's first and last call included) does
    _, ok, absorbed = _fault_check(run, plumb_san_bin, "load", real_model, "--max-runs", "50")
    assert absorbed == READ_FALLBACKS and ok == len(READ_FALLBACKS)


@pytest.mark.parametrize("scenario", ["context", "decode", "tokenize", "gen"])
def test_real_model_use(run, plumb_san_bin, real_model, scenario):
    _fault_check(run, plumb_san_bin, scenario, real_model)


@pytest.mark.parametrize("scenario", ["sampler", "chat", "request"])
def test_without_model(run, plumb_san_bin, scenario):
    _fault_check(run, plumb_san_bin, scenario)


def test_gguf_writer_and_reader(run, plumb_san_bin, gguf_dir):
    _, _, absorbed = _fault_check(run, plumb_san_bin, "gguf", gguf_dir)
    assert absorbed == READ_FALLBACKS  # plumb_gguf_open_ex(PLUMB_GGUF_OPEN_READ) falls back too


def test_usage(run, plumb_san_bin):
    r = run(plumb_san_bin.parent / "plumb_fault_check", "nonsense")
    assert r.rc == 2 and "usage" in r.stderr, r.describe()
