"""quantize_inputs.py — the inputs and cases of the quantize test (tests/e2e/test_quantize.py)
and of its golden generator (scripts/make-quantize-golden.py), made the same way by both:

  - gemma-f16 / qwen-f16: the real models dequantized to F16 (`quantize --allow-requantize
    MODEL OUT F16`; the generator runs llama-quantize, the test plumb, and the first golden
    check is that both wrote the same file);
  - synth-llama-f32 / synth-odd-f32: small random llama models in F32 (tests/e2e/synth.py),
    with 8 layers, grouped-query attention, an untied output, and row lengths that are not
    whole K blocks (96) or not even whole 32-blocks (80), which exercise the fallbacks;
  - importance matrices written from fixed formulas: llama-imatrix's GGUF layout and the
    legacy .dat layout, for the tensors of a model, and one for another model.

CASES lists (id, input, TYPE, extra options); an option naming an imatrix file names it
relative to the working directory (the tool records the name in the output's metadata).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import gguf

import synth

MODELS = {
    "gemma": "gemma-3-270m-q4_k_m.gguf",
    "qwen": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}

PRESETS = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
           "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16", "F32"]
PURE_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def cases() -> list[tuple[str, str, str, list[str]]]:
    c = []
    for t in PRESETS:
        c.append((f"gemma-{t}", "gemma-f16", t, []))
    for t in PURE_TYPES:
        c.append((f"gemma-pure-{t}", "gemma-f16", t, ["--pure"]))
    c.append(("gemma-Q4_K_M-out-q8_0-embd-q4_0", "gemma-f16", "Q4_K_M",
              ["--output-tensor-type", "q8_0", "--token-embedding-type", "q4_0"]))
    c.append(("gemma-Q5_K_S-embd-f16", "gemma-f16", "Q5_K_S", ["--token-embedding-type", "f16"]))
    c.append(("gemma-Q3_K-pure-out-q6_K", "gemma-f16", "Q3_K", ["--pure", "--output-tensor-type", "q6_K"]))
    for t in ["Q4_K_M", "Q4_0", "Q2_K", "Q3_K_S", "Q5_K_M", "Q6_K", "Q5_0", "Q4_1"]:
        c.append((f"gemma-{t}-imatrix", "gemma-f16", t, ["--imatrix", "imatrix-gemma.gguf"]))
    c.append(("gemma-Q2_K_S-imatrix", "gemma-f16", "Q2_K_S", ["--imatrix", "imatrix-gemma.gguf"]))
    c.append(("gemma-Q4_K_S-imatrix-dat", "gemma-f16", "Q4_K_S", ["--imatrix", "imatrix-gemma.dat"]))
    for t in ["Q4_K_M", "Q8_0", "Q3_K_M", "Q5_K_S", "Q4_0"]:
        c.append((f"qwen-{t}", "qwen-f16", t, []))
    c.append(("qwen-pure-Q4_K", "qwen-f16", "Q4_K", ["--pure"]))
    c.append(("qwen-Q4_K_M-imatrix", "qwen-f16", "Q4_K_M", ["--imatrix", "imatrix-qwen.gguf"]))
    for t in PRESETS:
        c.append((f"synth-llama-{t}", "synth-llama-f32", t, []))
    for t in ["Q4_K_M", "Q2_K", "Q6_K", "Q4_0", "F16"]:
        c.append((f"synth-odd-{t}", "synth-odd-f32", t, []))
    c.append(("synth-odd-pure-Q4_K", "synth-odd-f32", "Q4_K", ["--pure"]))
    c.append(("synth-llama-Q3_K_L-imatrix", "synth-llama-f32", "Q3_K_L", ["--imatrix", "imatrix-synth.gguf"]))
    return c


def make_synth(outdir: Path) -> dict[str, Path]:
    """The synthetic F32 models (deterministic bytes for a given gguf-py and numpy)."""
    p1 = outdir / "synth-llama-f32.gguf"
    synth.write_model(str(p1), "llama", n_vocab=300, n_embd=96, n_layer=8, n_head=4, n_head_kv=1,
                      n_ff=256, tied=False, seed=11)
    p2 = outdir / "synth-odd-f32.gguf"
    synth.write_model(str(p2), "llama", n_vocab=300, n_embd=80, n_layer=3, n_head=4, n_head_kv=2,
                      n_ff=96, tied=True, seed=12)
    return {"synth-llama-f32": p1, "synth-odd-f32": p2}


def weight_shapes(model: Path) -> list[tuple[str, int]]:
    """(name, ne0) of each 2-D weight of a model: the tensors an imatrix covers."""
    r = gguf.GGUFReader(str(model))
    out = []
    for t in r.tensors:
        shape = [int(x) for x in t.shape]
        if len([d for d in shape if d > 1]) >= 2 and t.name.endswith(".weight"):
            out.append((t.name, shape[0]))
    return out


def _sums(name: str, n: int) -> np.ndarray:
    """Fixed positive sums of squares for a weight: a smooth ramp and a name-keyed ripple."""
    h = zlib.crc32(name.encode()) % 997
    i = np.arange(n, dtype=np.float64)
    v = 40.0 * (1.0 + 0.5 * np.sin((i + h) * 0.37) + ((i * 7 + h) % 13) / 6.0)
    return v.astype(np.float32)


def write_imatrix_gguf(path: Path, shapes: list[tuple[str, int]], count: float = 40.0) -> None:
    w = gguf.GGUFWriter(str(path), arch="imatrix")
    w.add_array("imatrix.datasets", ["synthetic.txt"])
    w.add_uint32("imatrix.chunk_count", 10)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, n in shapes:
        w.add_tensor(name + ".in_sum2", _sums(name, n).reshape(1, n))
        w.add_tensor(name + ".counts", np.array([[count]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_imatrix_dat(path: Path, shapes: list[tuple[str, int]], ncall: int = 10) -> None:
    """The legacy layout: entries (name, call count, averages times the call count), then the
    chunk count and the dataset's name."""
    b = bytearray(struct.pack("<i", len(shapes)))
    for name, n in shapes:
        nb = name.encode()
        b += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, n)
        b += (_sums(name, n) / np.float32(4.0)).astype("<f4").tobytes()
    ds = b"synthetic.txt"
    b += struct.pack("<ii", ncall, len(ds)) + ds
    path.write_bytes(bytes(b))


def make_imatrices(workdir: Path, inputs: dict[str, Path]) -> None:
    """imatrix-{gemma,qwen,synth}.gguf and imatrix-gemma.dat in workdir."""
    g = weight_shapes(inputs["gemma-f16"])
    write_imatrix_gguf(workdir / "imatrix-gemma.gguf", g)
    write_imatrix_dat(workdir / "imatrix-gemma.dat", g)
    write_imatrix_gguf(workdir / "imatrix-qwen.gguf", weight_shapes(inputs["qwen-f16"]))
    write_imatrix_gguf(workdir / "imatrix-synth.gguf", weight_shapes(inputs["synth-llama-f32"]))
