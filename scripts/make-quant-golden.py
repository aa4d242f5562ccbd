#!/usr/bin/env python3
"""make-quant-golden.py — regenerates the golden data of plumb's llama.cpp-compatible row
quantizers (src/quant/quantize_ggml*.c, tested by tests/unit/test_quantize_ref.c):

  tests/unit/data/quantize_ref.bin

For every input below, every type whose block size divides the row length (F16, BF16, Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and every importance matrix (none, or
one of the input's: random positive, random with zeros, uniform, and for a few inputs one
spanning many decades), the file holds the bytes llama.cpp's
ggml_quantize_chunk(type, rows, dst, 0, nrows, n_per_row, imatrix) writes — the function
behind llama_model_quantize. The inputs and importance matrices are stored in the file as
float32, so the C test does not depend on numpy's generator; identical outputs are stored
once (F16, BF16 and Q8_0 ignore the importance matrix).

Inputs: synthetic rows from numpy's default_rng with fixed seeds (normal, small-scale normal,
Student-t and Cauchy, outliers, zeros, constants, sparse rows, tiny values near the f16
subnormals and f32 subnormals, values beyond the f16 range, one-signed and alternating rows,
values on grids that produce rounding ties, magnitudes spread over 24 decades, f16/bf16
rounding ties, 4096-wide rows, rows whose length is a multiple of 32 but not of 256), for
F16/BF16 alone also infinities, NaNs and the ends of the ranges, and rows of real weights,
dequantized by gguf-py from the two models in models/ (`make model` and
scripts/get-model.sh fetch them). No input makes a block quantizer write a NaN scale: its
sign would be the CPU's default NaN's, which differs between x86 and Arm.

Run with the reference interpreter (llama-cpp-python built from source, see make-golden.py):
  .venv-ref/bin/python scripts/make-quant-golden.py [--out PATH] [--lib DIR]

File layout (little-endian):
  "PLQG" u32 version(1)
  u32 n_inputs;   per input:   u16 name_len, name, u32 nrows, u32 n_per_row, f32[nrows*n_per_row]
  u32 n_imatrix;  per imatrix: u16 name_len, name, u32 input, f32[n_per_row of that input]
  u32 n_outputs;  per output:  u32 size, bytes
  u32 n_cases;    per case:    u32 ggml type id, u32 input, i32 imatrix (-1: none), u32 output
"""
import argparse
import ctypes
import hashlib
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "unit", "data", "quantize_ref.bin")
MODELS = {
    "gemma": os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"),
    "qwen": os.path.join(ROOT, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
}

# inputs only F16 and BF16 are tested on (non-finite values: the block quantizers' NaN scales
# would carry the sign of the CPU's default NaN, which differs between x86 and Arm)
FLOAT_ONLY = {"fp_extremes"}

# ggml's type ids (ggml.h, enum ggml_type) and block sizes
TYPES = [("F16", 1, 1), ("BF16", 30, 1), ("Q4_0", 2, 32), ("Q4_1", 3, 32), ("Q5_0", 6, 32),
         ("Q5_1", 7, 32), ("Q8_0", 8, 32), ("Q2_K", 10, 256), ("Q3_K", 11, 256),
         ("Q4_K", 12, 256), ("Q5_K", 13, 256), ("Q6_K", 14, 256)]

# real rows: (model, tensor, row indices)
REAL_ROWS = [
    ("gemma", "blk.0.ffn_down.weight", [0, 337]),      # Q6_K in the file, rows of 2048
    ("gemma", "blk.3.attn_output.weight", [5, 600]),   # Q4_K, rows of 1024
    ("gemma", "blk.0.attn_q.weight", [1, 777]),        # Q5_0, rows of 640 (legacy types only)
    ("gemma", "token_embd.weight", [2, 106, 200000]),  # Q8_0, rows of 640
    ("gemma", "output_norm.weight", None),             # F32, one row of 640
    ("qwen", "blk.0.ffn_down.weight", [3]),            # Q6_K, rows of 4864
    ("qwen", "blk.5.ffn_gate.weight", [10, 4000]),     # Q5_0, rows of 896
    ("qwen", "blk.2.attn_k.weight", [0, 127]),         # Q5_0, rows of 896
]


def synthetic_inputs():
    """(name, rows[nrows, n_per_row] float32) of the synthetic inputs, deterministic."""
    out = []

    def rng(seed):
        return np.random.default_rng(seed)

    out.append(("normal", rng(1).standard_normal((4, 512))))
    out.append(("normal_small", rng(2).normal(0.0, 0.02, (4, 256))))
    out.append(("student_t3", rng(3).standard_t(3, (4, 512)) * 0.05))
    out.append(("student_t1", rng(4).standard_t(1, (2, 512)) * 0.01))  # Cauchy: wild outliers
    r = rng(5)
    x = r.normal(0.0, 0.03, (4, 512))
    for row in range(4):
        idx = r.choice(512, 6, replace=False)
        x[row, idx] = r.choice([-1.0, 1.0], 6) * r.uniform(1.0, 30.0, 6)
    out.append(("outliers", x))
    out.append(("zeros", np.zeros((2, 256))))
    x = np.empty((4, 256))
    x[0], x[1], x[2], x[3] = 0.5, -2.0, 1e-3, 3.0
    out.append(("constant", x))
    # rows that are zero except in a few sub-blocks, and blocks with a single non-zero
    r = rng(6)
    x = np.zeros((3, 512))
    x[0, 40:56] = r.normal(0.0, 1.0, 16)
    x[0, 300] = 0.7
    x[1, ::37] = r.normal(0.0, 1.0, x[1, ::37].shape)
    x[2, 256:] = r.normal(0.0, 0.1, 256)
    x[2, 3] = -1e-20
    out.append(("sparse", x))
    r = rng(7)
    x = np.empty((4, 256))
    x[0] = r.normal(0.0, 3e-6, 256)           # around the f16 subnormals (< 6.1e-5)
    x[1] = r.normal(0.0, 5e-8, 256)           # at the smallest f16 subnormal (6e-8)
    x[2] = r.normal(0.0, 1e-12, 256)          # below GROUP_MAX_EPS in parts
    x[3] = r.normal(0.0, 1e-39, 256)          # f32 subnormals
    out.append(("tiny", x))
    r = rng(8)
    x = np.empty((4, 256))
    x[0] = r.normal(0.0, 2e4, 256)            # scales near the f16 maximum
    x[1] = r.normal(0.0, 1e6, 256)            # scales beyond it: infinite f16 scales
    x[2] = r.uniform(6e4, 7e4, 256) * r.choice([-1.0, 1.0], 256)
    x[3] = r.normal(0.0, 1e12, 256)
    out.append(("huge", x))
    r = rng(9)
    x = np.empty((4, 256))
    x[0] = np.abs(r.normal(0.0, 1.0, 256))
    x[1] = -np.abs(r.normal(0.0, 1.0, 256)) - 0.5
    x[2] = np.where(np.arange(256) % 2 == 0, 1.0, -1.0) * r.uniform(0.1, 1.0, 256)
    x[3] = np.abs(r.normal(0.0, 1.0, 256)) + 5.0   # all positive, far from zero
    out.append(("signs", x))
    # values on grids: x * iscale lands on .5 ties and on exact integers
    x = np.empty((4, 256))
    x[0] = (np.arange(256) % 16) - 8.0
    x[1] = ((np.arange(256) % 33) - 16.0) * 0.5
    x[2] = ((np.arange(256) * 7) % 64 - 32.0) * 0.25
    x[3] = np.linspace(-1.0, 1.0, 256)
    out.append(("grid", x))
    # f16 and bf16 rounding ties (and their neighbours), normal and subnormal, both signs
    r = rng(10)
    h = r.integers(1, 0x7bff, 128, dtype=np.uint32)
    f16 = h.astype(np.uint16).view(np.float16).astype(np.float32)
    nxt = (h + 1).astype(np.uint16).view(np.float16).astype(np.float32)
    mid = ((f16.astype(np.float64) + nxt.astype(np.float64)) / 2).astype(np.float32)
    b = r.integers(0x0001, 0x5800, 128, dtype=np.uint32)  # below 2^49: squares stay finite
    bf = (b << 16).view(np.float32)
    bf_tie = ((b << 16) | 0x8000).view(np.float32)
    x = np.empty((2, 256), dtype=np.float32)
    x[0, :128] = mid
    x[0, 128:] = bf_tie
    x[1, :128] = -np.nextafter(mid, np.float32(np.inf))
    x[1, 128:] = -bf
    out.append(("fp_ties", x))
    # F16/BF16 only (FLOAT_ONLY): the ends of the ranges, overflow ties, signed zeros,
    # infinities and NaNs with payloads
    bits = [0x7f7fffff, 0x477ff000, 0x477fefff, 0x477fe000, 0x7f7f8000, 0x7f7f7fff, 0x80000000,
            0x00000001, 0x33000000, 0x33000001, 0x387fe000, 0x38800000, 0x7f800000, 0xff800000,
            0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000, 0xff812345, 0x7fffffff, 0x00800000,
            0x807fffff, 0x3f808000, 0x3f818000, 0xc7800000, 0x477fffff]
    x = np.zeros(64, dtype=np.uint32)
    x[:len(bits)] = bits
    r = rng(15)
    x[len(bits):] = r.integers(0, 2**32, 64 - len(bits), dtype=np.uint64).astype(np.uint32)
    out.append(("fp_extremes", x.view(np.float32).reshape(1, 64)))
    r = rng(13)
    out.append(("grid_random", r.integers(-16, 17, (4, 256)) * 0.125))
    # magnitudes spread over 24 decades within a block: the weighted searches' ties and
    # near-ties (their squares stay far below the float range)
    r = rng(14)
    out.append(("wide_range", r.standard_normal((4, 256)) * 10.0 ** r.uniform(-12, 12, (4, 256))))
    out.append(("wide4096", rng(11).normal(0.0, 0.05, (2, 4096))))
    out.append(("legacy160", rng(12).normal(0.0, 1.0, (3, 160))))  # 32 | n, 256 does not
    return [(n, a if a.dtype == np.float32 else np.ascontiguousarray(a, dtype=np.float32))
            for n, a in out]


def real_inputs():
    from gguf import GGUFReader
    from gguf.quants import dequantize
    out = []
    readers = {}
    for model, tname, rows in REAL_ROWS:
        path = MODELS[model]
        if model not in readers:
            if not os.path.exists(path):
                sys.exit(f"make-quant-golden: {path} is missing (make model fetches it)")
            readers[model] = GGUFReader(path)
        t = next(t for t in readers[model].tensors if t.name == tname)
        data = np.asarray(t.data)
        if rows is None:
            x = dequantize(data, t.tensor_type).reshape(1, -1)
        else:
            x = np.stack([dequantize(data[r], t.tensor_type).reshape(-1) for r in rows])
        out.append((f"{model}:{tname}", np.ascontiguousarray(x, dtype=np.float32)))
    return out


# inputs that also get an importance matrix spanning many decades (lognormal, sigma 8)
EXTREME_IMATRIX = {"normal", "student_t3", "outliers", "wide_range", "grid_random",
                   "gemma:blk.0.ffn_down.weight"}


def imatrices(index, name, x):
    """The importance matrices of input number index (n_per_row floats each): random
    positive, random with zeros, uniform, and for EXTREME_IMATRIX one of extreme range."""
    n = x.shape[1]
    r = np.random.default_rng(1000 + index)
    rand = r.lognormal(0.0, 1.5, n)
    zeros = r.lognormal(-1.0, 1.0, n)
    zeros[r.random(n) < 0.3] = 0.0
    zeros[:32] = 0.0  # a whole legacy block and two K sub-blocks without weight
    out = [("rand", rand), ("zeros", zeros), ("uniform", np.ones(n))]
    if name in EXTREME_IMATRIX:
        out.append(("extreme", np.random.default_rng(2000 + index).lognormal(0.0, 8.0, n)))
    return out


def load_ggml(libdir):
    if libdir is None:
        import llama_cpp
        libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def quantize(lib, type_id, x, imatrix):
    nrows, n = x.shape
    size = lib.ggml_row_size(type_id, n) * nrows
    dst = ctypes.create_string_buffer(size)
    src = np.ascontiguousarray(x, dtype=np.float32)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    got = lib.ggml_quantize_chunk(type_id, src.ctypes.data, dst, 0, nrows, n,
                                  None if im is None else im.ctypes.data)
    assert got == size, (type_id, got, size)
    return dst.raw


def name_bytes(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--lib", default=None, help="folder of libggml-base.so (default: llama_cpp's)")
    args = ap.parse_args()
    lib = load_ggml(args.lib)
    inputs = synthetic_inputs() + real_inputs()
    ims = []  # (name, input index, floats)
    for i, (iname, x) in enumerate(inputs):
        for name, w in imatrices(i, iname, x):
            ims.append((name, i, np.ascontiguousarray(w, dtype=np.float32)))
    outputs, out_index, cases = [], {}, []
    counts = {}
    for tname, tid, blk in TYPES:
        assert not lib.ggml_quantize_requires_imatrix(tid)
        for i, (iname, x) in enumerate(inputs):
            if x.shape[1] % blk or (iname in FLOAT_ONLY and blk != 1):
                continue
            variants = [(-1, None)] + [(k, w) for k, (_, ii, w) in enumerate(ims) if ii == i]
            for k, w in variants:
                q = quantize(lib, tid, x, w)
                h = hashlib.sha256(q).digest()
                if h not in out_index:
                    out_index[h] = len(outputs)
                    outputs.append(q)
                cases.append((tid, i, k, out_index[h]))
                counts[tname] = counts.get(tname, 0) + 1
    blob = bytearray(b"PLQG" + struct.pack("<I", 1))
    blob += struct.pack("<I", len(inputs))
    for name, x in inputs:
        blob += name_bytes(name) + struct.pack("<II", x.shape[0], x.shape[1]) + x.tobytes()
    blob += struct.pack("<I", len(ims))
    for name, i, w in ims:
        blob += name_bytes(name) + struct.pack("<I", i) + w.tobytes()
    blob += struct.pack("<I", len(outputs))
    for q in outputs:
        blob += struct.pack("<I", len(q)) + q
    blob += struct.pack("<I", len(cases))
    for c in cases:
        blob += struct.pack("<IIiI", *c)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(blob)
    print(f"{args.out}: {len(blob)} bytes, {len(inputs)} inputs, {len(ims)} importance matrices, "
          f"{len(outputs)} distinct outputs, {len(cases)} cases")
    print("cases per type: " + ", ".join(f"{t} {counts.get(t, 0)}" for t, _, _ in TYPES))


if __name__ == "__main__":
    main()
