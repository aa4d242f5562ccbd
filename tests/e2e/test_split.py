"""Split ("sharded") GGUF models in llama.cpp's gguf-split layout: every shard carries split.no
(u16, 0-based), split.count (u16) and split.tensors.count (i32, the tensors of all shards); the
first holds all the other metadata; the shards are named <prefix>-0000k-of-0000N.gguf.

The shards are written here with gguf-py: by its own GGUFWriter(split_max_tensors=...) (the
writer convert_hf_to_gguf.py splits with: the reference for the layout), and by a shard-by-shard
writer below whose split keys a test can set wrongly. Checked:
  * plumb on the split model gives the unsplit model's output: `plumb run` text (read into
    memory and mapped) and logits bit for bit, with the first shard's name or the explicit list
    (plumb_model_load_shards) of digest-named files, including a first shard without tensors;
  * llama.cpp (llama-cpp-python built from source, recorded by scripts/make-golden.py --only
    split in data/golden_split.json with the shards' SHA-256) loads the same split files, and
    its greedy tokens on them are its tokens on the unsplit file and plumb's;
  * hostile sets of shards (one missing, split.no wrong, a tensor in two shards, the tensor
    count wrong, split.count disagreeing, a shard other than the first given, a first shard
    not named by the convention) fail with one line naming a file, a non-zero exit and no
    crash, also under the sanitizers; running out of memory while loading one is clean
    (plumb_fault_check).
"""
import ctypes
import hashlib
import json
import shutil

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import conftest
import plumbffi
import synth
from ggufsplit import shard_names, split_with_gguf_py, thirds, write_shards

PROMPT = "The capital of France is"
GOLDEN_PROMPT_IDS = json.loads((conftest.E2E / "data" / "golden_gemma3.json").read_text())["prompts"][0]["prompt_ids"]




def digest_names(paths, d):
    """Copies of paths named like an OCI store's blobs (sha256-<hex digest>), in the same order."""
    out = []
    for p in paths:
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        q = d / f"sha256-{h}"
        shutil.copyfile(p, q)
        out.append(q)
    return out


# ---- the library through ctypes ---------------------------------------------------------------

class ModelInfo(ctypes.Structure):
    _fields_ = [("arch", ctypes.c_char_p), ("name", ctypes.c_char_p), ("n_params", ctypes.c_int64),
                ("file_size", ctypes.c_uint64)] + \
               [(f, ctypes.c_int32) for f in ("n_vocab", "n_ctx_train", "n_embd", "n_layer", "n_head", "n_head_kv",
                                               "head_dim", "n_ff", "pooling")]


class ModelParams(ctypes.Structure):
    _fields_ = [("use_mmap", ctypes.c_bool)]


def _lib():
    L = plumbffi.lib()
    L.plumb_model_load_shards.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.POINTER(ModelParams),
                                          ctypes.POINTER(ctypes.c_void_p)]
    L.plumb_model_load_params.argtypes = [ctypes.c_char_p, ctypes.POINTER(ModelParams), ctypes.POINTER(ctypes.c_void_p)]
    L.plumb_model_get_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(ModelInfo)]
    L.plumb_model_get_info.restype = None
    return L


def load_shards(paths, mmap=False):
    """plumb_model_load_shards over paths: (status, model handle or None, last error)."""
    L = _lib()
    arr = (ctypes.c_char_p * max(len(paths), 1))(*[str(p).encode() for p in paths])
    m = ctypes.c_void_p()
    st = L.plumb_model_load_shards(arr, len(paths), ctypes.byref(ModelParams(mmap)), ctypes.byref(m))
    return st, (m if st == 0 else None), L.plumb_last_error().decode(errors="replace")


def load_path(path, mmap=False):
    L = _lib()
    m = ctypes.c_void_p()
    st = L.plumb_model_load_params(str(path).encode(), ctypes.byref(ModelParams(mmap)), ctypes.byref(m))
    return st, (m if st == 0 else None), L.plumb_last_error().decode(errors="replace")


def info(m):
    out = ModelInfo()
    _lib().plumb_model_get_info(m, ctypes.byref(out))
    return out


class LoadedModel(plumbffi.Model):
    """plumbffi.Model over a model handle loaded here (by list or by path)."""

    def __init__(self, handle, n_ctx=256):
        L = plumbffi.lib()
        self.m = handle
        self.c = ctypes.c_void_p()
        p = plumbffi.ContextParams(n_ctx, 512, 2, 1)
        st = L.plumb_context_create(self.m, ctypes.byref(p), ctypes.byref(self.c))
        if st:
            L.plumb_model_free(self.m)
            raise plumbffi.PlumbError(st)


def greedy(model, ids, n_vocab, n):
    """The prompt's logits and n greedy tokens after it (argmax, ties to the lowest id)."""
    logits = model.decode(ids, n_vocab, all_logits=True)
    out, last = [], logits[-1]
    for _ in range(n):
        out.append(int(np.argmax(last)))
        last = model.decode([out[-1]], n_vocab, all_logits=False)[0]
    return logits, out


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_split(real_model, tmp_path_factory):
    """The real model split in three by gguf-py's writer."""
    d = tmp_path_factory.mktemp("split-real")
    n = len(gguf.GGUFReader(real_model).tensors)
    return split_with_gguf_py(real_model, d / "gemma.gguf", (n + 2) // 3)


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("split-synth")
    path = d / "llama.gguf"
    synth.write_model(path, "llama", n_embd=64, n_ff=96, n_layer=2, qtype=QT.Q8_0, tied=False)
    return path


def _one_line_error(r, *names):
    assert r.rc != 0 and not r.sanitizer_report, r.describe()
    lines = [line for line in r.stderr_lines if line.strip()]
    assert len(lines) == 1, r.describe()
    for name in names:
        assert str(name) in lines[0], (name, r.describe())
    return lines[0]


# ---- same output as the unsplit model ---------------------------------------------------------

def test_gguf_py_split_layout(real_split):
    """The reference writer's shards: metadata in the first only, the split keys in each."""
    first = gguf.GGUFReader(real_split[0])
    assert "tokenizer.ggml.tokens" in first.fields
    n_total = 0
    for i, p in enumerate(real_split):
        r = gguf.GGUFReader(p)
        assert r.fields["split.no"].contents() == i and r.fields["split.count"].contents() == 3
        assert r.fields["split.no"].types == [gguf.GGUFValueType.UINT16]
        n_total += len(r.tensors)
        if i:
            assert "tokenizer.ggml.tokens" not in r.fields
    assert first.fields["split.tensors.count"].contents() == n_total


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])
def test_run_text_identical(run, plumb_bin, real_model, real_split, mmap):
    args = ["-p", PROMPT, "-n", "16", "--temp", "0", "--no-stats", "-t", "2"] + (["--mmap"] if mmap else [])
    whole = run(plumb_bin, "run", "-m", real_model, *args, timeout=120)
    split = run(plumb_bin, "run", "-m", real_split[0], *args, timeout=120)
    assert whole.rc == 0 and split.rc == 0 and not split.sanitizer_report, (whole.describe(), split.describe())
    assert len(whole.stdout) > len(PROMPT) and split.stdout == whole.stdout


def test_real_model_logits_and_info(plumb_lib, real_model, real_split, tmp_path):
    """Bit-identical logits and greedy tokens, by the first shard's name and by a list of
    digest-named copies; get_info's file size is the sum of the shards'."""
    ids = GOLDEN_PROMPT_IDS
    n_vocab = 262144
    st, h, err = load_path(real_model)
    assert st == 0, err
    want_logits, want = greedy(LoadedModel(h), ids, n_vocab, 8)
    digests = digest_names(real_split, tmp_path)
    for how, res in (("by name", load_path(real_split[0])), ("by list", load_shards(digests, mmap=True))):
        st, h, err = res
        assert st == 0, (how, err)
        i = info(h)
        assert i.file_size == sum(p.stat().st_size for p in real_split), how
        assert i.arch == b"gemma3" and i.n_vocab == n_vocab
        m = LoadedModel(h)
        logits, got = greedy(m, ids, n_vocab, 8)
        m.close()
        assert got == want and np.array_equal(logits, want_logits), how


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])
def test_synthetic_split_logits_identical(plumb_lib, synth_model, tmp_path, mmap):
    """Shards by the shard-by-shard writer, by gguf-py's writer with a first shard that holds
    no tensors, and by list in order: the unsplit model's logits, bit for bit."""
    n = len(gguf.GGUFReader(synth_model).tensors)
    ours = write_shards(synth_model, shard_names(tmp_path, "ours", 3), thirds(n))
    d = tmp_path / "pysmall"
    d.mkdir()
    small = split_with_gguf_py(synth_model, d / "m.gguf", 5, small_first_shard=True)
    assert len(gguf.GGUFReader(small[0]).tensors) == 0
    ids = [1, 5, 9, 4, 7, 11, 3, 20]
    st, h, err = load_path(synth_model, mmap)
    assert st == 0, err
    want = LoadedModel(h).decode(ids, 300)
    for name, res in (("ours", load_path(ours[0], mmap)), ("small first", load_path(small[0], mmap)),
                      ("list", load_shards(ours, mmap)), ("list small first", load_shards(small, mmap))):
        st, h, err = res
        assert st == 0, (name, err)
        m = LoadedModel(h)
        got = m.decode(ids, 300)
        m.close()
        assert np.array_equal(got, want), name


def test_single_file_paths_unchanged(plumb_lib, synth_model):
    """An unsplit file loads by path and as a list of one, with its own file size."""
    for st, h, err in (load_path(synth_model), load_shards([synth_model])):
        assert st == 0, err
        assert info(h).file_size == synth_model.stat().st_size
        plumbffi.lib().plumb_model_free(h)


# ---- llama.cpp reads the same files -----------------------------------------------------------

GOLDEN_SPLIT = json.loads((conftest.E2E / "data" / "golden_split.json").read_text())


def test_llama_cpp_loads_split_files(plumb_lib, real_model, real_split):
    """llama.cpp (scripts/make-golden.py --only split, llama-cpp-python built from source) on
    these very shards: it gave its whole-file tokens, and plumb gives the same."""
    g = GOLDEN_SPLIT
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in real_split] == g["shards_sha256"]
    assert g["split"] == g["whole"] and g["prompt"] == PROMPT and len(g["split"]["greedy"]) == 16
    st, h, err = load_path(real_split[0])
    assert st == 0, err
    m = LoadedModel(h)
    _, ours = greedy(m, g["split"]["prompt_ids"], 262144, 16)
    m.close()
    assert ours == g["split"]["greedy"], f"plumb {ours} vs llama.cpp {g['split']['greedy']}"


# ---- hostile shards ---------------------------------------------------------------------------

def _cases(src, d):
    """name -> (the path to give plumb, the file names its error must mention), each case in
    its own directory."""
    n = len(gguf.GGUFReader(src).tensors)
    g = thirds(n)
    cases = {}

    def mk(name, groups=g, keys=None, prefix="m", count=3):
        sub = d / name
        sub.mkdir()
        return write_shards(src, shard_names(sub, prefix, count), groups, keys)

    p = mk("missing")
    p[2].unlink()
    cases["missing"] = (p[0], [p[2].name])
    p = mk("wrong-no", keys={1: {"split.no": 2}})
    cases["wrong-no"] = (p[0], [p[1].name, "split.no"])
    p = mk("no-key", keys={2: {"split.no": None}})
    cases["no-key"] = (p[0], [p[2].name, "split.no"])
    p = mk("duplicate", groups=[g[0], g[1] + [g[0][0]], g[2]])
    cases["duplicate"] = (p[0], [p[1].name, p[0].name, gguf.GGUFReader(src).tensors[g[0][0]].name])
    p = mk("count-short", keys={i: {"split.tensors.count": n + 1} for i in range(3)})
    cases["tensor-count"] = (p[0], [p[0].name, "split.tensors.count"])
    p = mk("dropped", groups=[g[0], g[1][1:], g[2]], keys={i: {"split.tensors.count": n} for i in range(3)})
    cases["tensor-missing"] = (p[0], [p[0].name, "split.tensors.count"])
    p = mk("count-differs", keys={2: {"split.count": 4}})
    cases["split-count"] = (p[0], [p[2].name, "split.count"])
    p = mk("second")
    cases["not-first"] = (p[1], [p[1].name, p[0].name])
    p = mk("badname")
    q = p[0].with_name("model.gguf")
    p[0].rename(q)
    cases["not-convention"] = (q, [q.name, "-00001-of-00003.gguf"])
    return cases


CASES = ["missing", "wrong-no", "no-key", "duplicate", "tensor-count", "tensor-missing", "split-count", "not-first",
         "not-convention"]


@pytest.fixture(scope="module")
def hostile(synth_model, tmp_path_factory):
    return _cases(synth_model, tmp_path_factory.mktemp("split-hostile"))


@pytest.mark.parametrize("case", CASES)
def test_hostile_shards_fail_cleanly(run, plumb_bin, plumb_san_bin, hostile, case):
    path, names = hostile[case]
    for exe in (plumb_bin, plumb_san_bin):
        for mmap in ([], ["--mmap"]):
            r = run(exe, "run", "-m", path, "-p", "hi", "-n", "2", *mmap, timeout=120)
            _one_line_error(r, *names)


@pytest.mark.parametrize("case", CASES)
def test_hostile_shards_by_library(plumb_lib, hostile, case):
    path, names = hostile[case]
    st, h, err = load_path(path)
    assert st < 0 and h is None and "\n" not in err, err
    for name in names:
        assert str(name) in err, (name, err)
    want = -1 if case == "not-first" else None
    if want is not None:
        assert st == want, err  # PLUMB_E_INVALID_ARG: the caller gave the wrong file


def test_list_errors(plumb_lib, synth_model, tmp_path):
    """The explicit list: its order, its length, NULL entries and a non-split file among several."""
    n = len(gguf.GGUFReader(synth_model).tensors)
    p = digest_names(write_shards(synth_model, shard_names(tmp_path, "m", 3), thirds(n)), tmp_path)
    st, h, err = load_shards(p)
    assert st == 0, err
    plumbffi.lib().plumb_model_free(h)
    for paths, status, mention in (([p[1], p[0], p[2]], -1, p[1].name),  # not the first shard first
                                   ([p[0], p[2], p[1]], -4, p[2].name),  # split.no 2 at place 1
                                   ([p[0], p[1]], -1, "split.count is 3"),
                                   ([p[0], p[1], p[2], p[2]], -1, "split.count is 3"),
                                   ([synth_model, p[1]], -1, "not a split model"),
                                   ([p[0], p[1], tmp_path / "absent"], -3, "absent"),
                                   ([], -1, "plumb_model_load_shards")):
        st, h, err = load_shards(paths)
        assert (st, h) == (status, None) and mention in err and "\n" not in err, (paths, err)
    L = _lib()
    arr = (ctypes.c_char_p * 3)(str(p[0]).encode(), None, str(p[2]).encode())
    m = ctypes.c_void_p()
    assert L.plumb_model_load_shards(arr, 3, None, ctypes.byref(m)) == -1 and not m


# ---- out of memory ----------------------------------------------------------------------------

@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])
def test_split_load_out_of_memory(run, plumb_san_bin, synth_model, tmp_path, mmap):
    """plumb_fault_check's load scenario over the first shard: every failing allocation, map or
    open ends in the reference result or a clean error, nothing leaked or left mapped."""
    exe = plumb_san_bin.parent / "plumb_fault_check"
    n = len(gguf.GGUFReader(synth_model).tensors)
    p = write_shards(synth_model, shard_names(tmp_path, "m", 3), thirds(n))
    r = run(exe, "load", p[0], *(["--mmap"] if mmap else []), timeout=600)
    assert r.rc == 0 and not r.sanitizer_report, r.describe()
    assert " 0 wrong" in r.stdout, r.stdout
    absorbed = set(r.stdout.split("absorbed:")[1].split())
    # read into memory: a shard whose memory cannot be had is mapped instead
    assert absorbed == (set() if mmap else {"mmap", "madvise", "mprotect", "fopen"}), r.stdout
