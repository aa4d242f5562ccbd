#!/usr/bin/env python3
"""compare.py — plumb against llama.cpp on the same model and thread counts, the llama-bench
way, repetitions interleaved; prints one markdown table. bench/compare.sh is the entry point.

Method (the same on both sides, and the same as `plumb bench`):
  ppP  the sequence cleared and filled with D pseudo-random tokens (-d, default 0; untimed,
       in batches of up to max(P, 512)), then one decode of P pseudo-random prompt tokens in
       one batch (batch size >= P, only the last token's logits); t/s = P / time of that decode;
  tgN  the same D tokens, then N single-token decodes; t/s = N / their total time.
A depth above 0 names the test as llama-bench does: "pp512 @ d4096".
For each thread count both engines are warmed up once (pp: one batch, tg: one token), then
the repetitions alternate: llama.cpp pp and tg, plumb pp and tg, llama.cpp, plumb, ...
Results are the mean and sample standard deviation of the per-repetition t/s.

llama.cpp is llama-cpp-python (the version make-golden.py pins) built from source on this
machine in .venv-peer with llama.cpp's default CPU configuration: the instruction sets of the
CPU it is built on (GGML_NATIVE), its llamafile GEMM for prompt batches, OpenMP. That is the
build a user gets from `pip install llama-cpp-python`; the golden data's build (.venv-ref)
fixes its instruction sets to the golden machine's and turns fast paths off for
batch-invariant logits, so it is not the peer for speed (and may not even run on another
CPU). It is driven through its low-level API: model loaded with llama.cpp's default
parameters (repacked weight buffers on; --no-extra-bufts turns them off), a context with
n_ctx >= max(P, N), n_batch = n_ubatch >= P, n_threads = n_threads_batch = threads and a CPU
thread pool attached (as llama-bench does); everything else is the library's default,
GGML_CPU_TILED_MM removed from the environment.

plumb runs as `plumb bench ... -r 1 -o json --no-membw`, one process per repetition (which
warms up on its own before its timed repetition).

--isa avx2 measures both engines as on a CPU with AVX2 but no AVX-512 (a Zen 3, say) on a CPU
that has more: llama.cpp from .venv-peer-avx2, built with GGML_NATIVE off and AVX, AVX2, FMA,
F16C and BMI2 on (AVX-512 and AVX-VNNI off), plumb with PLUMB_KERNELS=avx2. Its speeds are that
emulation's, not a Zen 3's: the memory system and clocks are this machine's.

Weights: by default each engine holds them its own default way (llama.cpp maps the file;
plumb reads it into huge-page memory). --load mmap maps the file in both (plumb --mmap),
--load read reads it into memory in both (llama.cpp use_mmap = false), so the kernels can be
compared apart from where the weights live.
"""
import argparse
import importlib.util
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_FLAG = "PLUMB_COMPARE_CHILD"
DEFAULT_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
TOKEN_SEED = 0x5EED


def int_list(lo, hi):
    def parse(s):
        try:
            items = [int(x) for x in s.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{s}' is not a comma-separated list of integers")
        if not items or any(x < lo or x > hi for x in items):
            raise argparse.ArgumentTypeError(f"'{s}': every item must be in [{lo}, {hi}]")
        return items
    return parse


def parse_args():
    ap = argparse.ArgumentParser(prog="bench/compare.sh", description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL, help="GGUF model (default: %(default)s)")
    ap.add_argument("-p", "--n-prompt", type=int_list(0, 65536), default=[512], help="prompt lengths (0: no pp)")
    ap.add_argument("-n", "--n-gen", type=int_list(0, 65536), default=[128], help="generated lengths (0: no tg)")
    ap.add_argument("-d", "--n-depth", type=int_list(0, 65536), default=[0],
                    help="tokens in the context before each test (default 0)")
    ap.add_argument("-t", "--threads", type=int_list(1, 512), default=[1, 2], help="thread counts")
    ap.add_argument("-r", "--repetitions", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--plumb", default=os.environ.get("PLUMB_BIN", os.path.join(ROOT, "build", "plumb")),
                    help="plumb binary (default: $PLUMB_BIN or build/plumb)")
    ap.add_argument("--python", help="interpreter with llama_cpp (default: .venv-peer, created when missing)")
    ap.add_argument("--no-extra-bufts", dest="extra_bufts", action="store_false",
                    help="turn llama.cpp's extra weight buffers (repacked layouts) off")
    ap.add_argument("--fast-gemm", action="store_true",
                    help="plumb with --fast-gemm (prompt blocks summed in one integer: not llama.cpp's exact logits)")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: both engines limited to AVX2/FMA/F16C (an AVX2-only CPU's kernels) on this CPU")
    ap.add_argument("--load", choices=["default", "mmap", "read"], default="default",
                    help="how both engines hold the weights: each its default (llama.cpp maps the file, "
                         "plumb reads it into memory), both a file mapping, or both read into memory")
    args = ap.parse_args()
    if args.repetitions < 1:
        ap.error("-r must be at least 1")
    if not any(args.n_prompt) and not any(args.n_gen):
        ap.error("nothing to measure: every -p and -n length is 0")
    if not os.path.isfile(args.model):
        ap.error(f"{args.model} not found (run `make model`)")
    if not (os.path.isfile(args.plumb) and os.access(args.plumb, os.X_OK)):
        ap.error(f"{args.plumb} is not an executable plumb (run `make`, or pass --plumb)")
    return args


PEER_VENV = os.path.join(ROOT, ".venv-peer")
# --isa avx2: llama.cpp's instruction sets of an AVX2-only x86 CPU
AVX2_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
                   "-DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF")


def peer_python(isa="native"):
    """The .venv-peer (--isa avx2: .venv-peer-avx2) interpreter: llama-cpp-python built from
    source here (minutes, once)."""
    spec = importlib.util.spec_from_file_location("make_golden", os.path.join(ROOT, "scripts", "make-golden.py"))
    make_golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_golden)
    version = make_golden.LLAMA_CPP_PYTHON_VERSION
    venv = PEER_VENV + ("-avx2" if isa == "avx2" else "")
    py = os.path.join(venv, "bin", "python")
    probe = [py, "-c", "import llama_cpp; print(llama_cpp.__version__)"]
    if os.path.exists(py) and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == version:
        return py
    print(f"compare: building llama-cpp-python {version} from source in {venv} (this takes minutes)",
          file=sys.stderr)
    subprocess.check_call([sys.executable, "-m", "venv", venv])
    env = {k: v for k, v in os.environ.items() if k != "CMAKE_ARGS"}  # llama.cpp's own defaults
    if isa == "avx2":
        env["CMAKE_ARGS"] = AVX2_CMAKE_ARGS
    subprocess.check_call([py, "-m", "pip", "install", "-q", "--no-cache-dir", "--no-binary", "llama-cpp-python",
                           f"llama-cpp-python=={version}"], env=env)
    return py


# ---- llama.cpp -----------------------------------------------------------------------------


class Llama:
    """One model and, per thread count, one context with an attached CPU thread pool."""

    def __init__(self, path, extra_bufts, use_mmap=True):
        import ctypes
        import llama_cpp.llama_cpp as C
        self.ctypes, self.C = ctypes, C
        self._quiet = C.llama_log_callback(lambda level, text, user: None)  # kept alive with self
        C.llama_log_set(self._quiet, ctypes.c_void_p(0))
        C.llama_backend_init()
        mp = C.llama_model_default_params()
        mp.use_extra_bufts = extra_bufts
        mp.use_mmap = use_mmap
        self.model = C.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        vocab = C.llama_model_get_vocab(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(vocab)
        self.bos, self.eos = C.llama_vocab_bos(vocab), C.llama_vocab_eos(vocab)
        libdir = os.path.join(os.path.dirname(C.__file__), "lib")
        self.ggml_base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
        self.ggml_cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"))
        self.ggml_base.ggml_threadpool_params_init.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.ggml_cpu.ggml_threadpool_new.argtypes = [ctypes.c_void_p]
        self.ggml_cpu.ggml_threadpool_new.restype = ctypes.c_void_p
        self.ggml_cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
        self.ggml_cpu.ggml_threadpool_pause.argtypes = [ctypes.c_void_p]
        self.llama_lib = ctypes.CDLL(os.path.join(libdir, "libllama.so"))
        self.llama_lib.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.ctx = None
        self.pool = None

    def open(self, threads, n_ctx, n_batch):
        C, ctypes = self.C, self.ctypes
        self.close_context()
        cp = C.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = threads
        cp.no_perf = True
        self.ctx = C.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        # ggml_threadpool_params is filled by the library itself (its layout stays its own)
        params = ctypes.create_string_buffer(1 << 12)
        self.ggml_base.ggml_threadpool_params_init(params, threads)
        self.pool = self.ggml_cpu.ggml_threadpool_new(params)
        if not self.pool:
            raise RuntimeError("llama.cpp could not create a thread pool")
        self.llama_lib.llama_attach_threadpool(self.ctx, self.pool, self.pool)
        self.mem = C.llama_get_memory(self.ctx)

    def pause(self):
        """Parks the thread pool's workers (the next decode wakes them)."""
        self.ggml_cpu.ggml_threadpool_pause(self.pool)

    def close_context(self):
        if self.ctx:
            self.C.llama_free(self.ctx)
            self.ctx = None
        if self.pool:
            self.ggml_cpu.ggml_threadpool_free(self.pool)
            self.pool = None

    def close(self):
        self.close_context()
        self.C.llama_model_free(self.model)

    def tokens(self, n, seed=TOKEN_SEED):
        rng = random.Random(seed)
        out = []
        while len(out) < n:
            t = rng.randrange(self.n_vocab)
            if t not in (self.bos, self.eos):
                out.append(t)
        return out

    def _decode(self, arr, n):
        rc = self.C.llama_decode(self.ctx, self.C.llama_batch_get_one(arr, n))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def fill(self, depth, chunk):
        """Clears the sequence and decodes `depth` tokens, `chunk` per batch (untimed)."""
        self.C.llama_memory_clear(self.mem, True)
        toks = self.tokens(depth, seed=TOKEN_SEED + 1)
        for i in range(0, depth, chunk):
            part = toks[i:i + chunk]
            self._decode((self.C.llama_token * len(part))(*part), len(part))
        self.C.llama_synchronize(self.ctx)

    def pp(self, n, depth=0, chunk=512):
        ids = (self.C.llama_token * n)(*self.tokens(n))
        self.fill(depth, chunk)
        t0 = time.perf_counter()
        self._decode(ids, n)
        self.C.llama_synchronize(self.ctx)
        return n / (time.perf_counter() - t0)

    def tg(self, n, depth=0, chunk=512):
        one = [(self.C.llama_token * 1)(t) for t in self.tokens(n)]
        self.fill(depth, chunk)
        t0 = time.perf_counter()
        for arr in one:
            self._decode(arr, 1)
            self.C.llama_synchronize(self.ctx)
        return n / (time.perf_counter() - t0)


# ---- plumb ---------------------------------------------------------------------------------


def plumb_once(args, threads, p, n, d):
    """One `plumb bench -r 1` process: {"pp512": t/s, "tg128": t/s} (" @ dD" after each name
    for a depth D > 0)."""
    argv = [args.plumb, "bench", "-m", args.model, "-p", str(p), "-n", str(n), "-d", str(d), "-t", str(threads),
            "-r", "1", "-o", "json", "--no-membw"] + (["--mmap"] if args.load == "mmap" else []) + \
           (["--fast-gemm"] if args.fast_gemm else [])
    env = dict(os.environ, PLUMB_KERNELS="avx2") if args.isa == "avx2" else None
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return {row["test"]: row["avg_ts"] for row in json.loads(r.stdout)}


# ---- main ----------------------------------------------------------------------------------


def fmt(samples):
    mean = statistics.fmean(samples)
    sd = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return mean, f"{mean:.2f} ± {sd:.2f}"


def test_name(kind, k, d):
    return f"{kind}{k}" + (f" @ d{d}" if d > 0 else "")


def run(args):
    import llama_cpp
    depths = list(dict.fromkeys(args.n_depth))
    kinds = [("pp", p) for p in dict.fromkeys(args.n_prompt) if p > 0] + \
            [("tg", n) for n in dict.fromkeys(args.n_gen) if n > 0]
    tests = [(kind, k, d) for d in depths for kind, k in kinds]
    n_ctx = max(depths) + max([1] + args.n_prompt + args.n_gen)
    chunk = max([512] + args.n_prompt)  # depth tokens per decode, as plumb bench
    n_batch = max([1] + args.n_prompt + [min(max(depths), chunk)])
    plumb_version = subprocess.run([args.plumb, "--version"], capture_output=True, text=True).stdout.splitlines()
    llm = Llama(args.model, args.extra_bufts, use_mmap=args.load != "read")
    rows = []
    try:
        for threads in args.threads:
            llm.open(threads, n_ctx, n_batch)
            for kind, k, d in tests:  # warm-up, as llama-bench: a whole batch, one token
                llm.pp(k, d, chunk) if kind == "pp" else llm.tg(1, d, chunk)
            res = {t: {"llama": [], "plumb": []} for t in tests}
            for rep in range(args.repetitions):
                for kind, k, d in tests:
                    res[(kind, k, d)]["llama"].append(llm.pp(k, d, chunk) if kind == "pp" else llm.tg(k, d, chunk))
                llm.pause()  # its idle workers stay off the CPUs while plumb runs
                for d in depths:
                    for p, n in pairs(kinds):  # one plumb process measures one pp and one tg
                        got = plumb_once(args, threads, p, n, d)
                        if p:
                            res[("pp", p, d)]["plumb"].append(got[test_name("pp", p, d)])
                        if n:
                            res[("tg", n, d)]["plumb"].append(got[test_name("tg", n, d)])
                print(f"compare: threads {threads}: repetition {rep + 1}/{args.repetitions} done",
                      file=sys.stderr, flush=True)
            for kind, k, d in tests:
                lm, ls = fmt(res[(kind, k, d)]["llama"])
                pm, ps = fmt(res[(kind, k, d)]["plumb"])
                ratio = pm / lm if lm > 0 else math.nan
                rows.append((threads, test_name(kind, k, d), ls, ps, f"{ratio:.2f}"))
            llm.close_context()
    finally:
        llm.close()

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown")
    print(f"cpu: {cpu}, {os.cpu_count()} CPUs")
    print(f"model: {os.path.relpath(args.model, ROOT) if args.model.startswith(ROOT) else args.model}")
    print(f"weights: {'each engine its default (llama.cpp: file mapping; plumb: read into memory)' if args.load == 'default' else 'both ' + ('a file mapping' if args.load == 'mmap' else 'read into memory')}")
    if args.isa == "avx2":
        print("isa: both engines limited to an AVX2-only CPU's instruction sets on this CPU (llama.cpp: "
              f"{AVX2_CMAKE_ARGS}; plumb: PLUMB_KERNELS=avx2)")
    print(f"llama.cpp: llama-cpp-python {llama_cpp.__version__} (.venv-peer{'-avx2' if args.isa == 'avx2' else ''}), use_extra_bufts="
          f"{args.extra_bufts}, default kernels and context settings (flash attention: auto); "
          + llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip())
    print(f"plumb: {plumb_version[0] if plumb_version else args.plumb}{' --fast-gemm' if args.fast_gemm else ''}")
    print(f"{args.repetitions} interleaved repetitions, mean ± sd of t/s")
    print()
    print("| threads | test | llama.cpp t/s | plumb t/s | plumb/llama |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print("| %d | %s | %s | %s | %s |" % r)


def pairs(kinds):
    """(p, n) arguments for plumb processes covering every (kind, length) once: pp and tg
    lengths zipped, the shorter list padded with 0 (a 0 length runs no test)."""
    ps = [k for kind, k in kinds if kind == "pp"]
    ns = [k for kind, k in kinds if kind == "tg"]
    m = max(len(ps), len(ns))
    ps += [0] * (m - len(ps))
    ns += [0] * (m - len(ns))
    return list(zip(ps, ns))


def main():
    args = parse_args()
    if not os.environ.get(CHILD_FLAG):
        py = args.python or peer_python(args.isa)
        env = dict(os.environ, **{CHILD_FLAG: "1"})
        env.pop("GGML_CPU_TILED_MM", None)  # llama.cpp's default kernels
        sys.exit(subprocess.call([py, os.path.abspath(__file__)] + sys.argv[1:], env=env))
    run(args)


if __name__ == "__main__":
    main()
