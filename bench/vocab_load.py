#!/usr/bin/env python3
"""vocab_load.py — how long loading a model's vocabulary takes: plumb_vocab_create on an open
GGUF (best of -r runs), beside llama.cpp loading the same file with vocab_only when
llama-cpp-python is importable (bench/compare.sh builds it into .venv-peer: run this with
.venv-peer/bin/python to see both).

    bench/vocab_load.py [-m MODEL] [-r 5] [--lib build/libplumb.so]
"""
import argparse
import ctypes
import os
import platform
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def plumb_seconds(lib_path: str, model: str, reps: int) -> float:
    L = ctypes.CDLL(lib_path)
    L.plumb_gguf_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    L.plumb_gguf_free.argtypes = [ctypes.c_void_p]
    L.plumb_vocab_create.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    L.plumb_vocab_free.argtypes = [ctypes.c_void_p]
    g = ctypes.c_void_p()
    if L.plumb_gguf_open(model.encode(), ctypes.byref(g)):
        raise SystemExit(f"cannot open {model}")
    best = float("inf")
    try:
        for _ in range(reps):
            v = ctypes.c_void_p()
            t0 = time.perf_counter()
            if L.plumb_vocab_create(g, ctypes.byref(v)):
                raise SystemExit("plumb_vocab_create failed")
            best = min(best, time.perf_counter() - t0)
            L.plumb_vocab_free(v)
    finally:
        L.plumb_gguf_free(g)
    return best


def llama_seconds(model: str, reps: int):
    try:
        import llama_cpp
    except ImportError:
        return None
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        m = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
        best = min(best, time.perf_counter() - t0)
        del m
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=os.path.join(ROOT, "models/gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--lib", default=os.environ.get("PLUMB_LIB", os.path.join(ROOT, "build/libplumb.so")))
    a = ap.parse_args()
    p = plumb_seconds(a.lib, a.model, a.reps)
    q = llama_seconds(a.model, a.reps)
    print(f"CPU: {cpu_model()}")
    print("| engine | vocabulary load ms (best of %d) |" % a.reps)
    print("| --- | ---: |")
    print(f"| plumb (plumb_vocab_create; the file already open) | {p * 1000:.1f} |")
    if q is None:
        print("| llama.cpp | not measured: llama_cpp is not importable here (use .venv-peer/bin/python) |")
    else:
        print(f"| llama.cpp (Llama(vocab_only=True): opens and reads the file too) | {q * 1000:.1f} |")


if __name__ == "__main__":
    main()
