"""Writes the seed corpus of the GGUF fuzzer (fuzz/corpus/seed-*.gguf): small valid files
(seed-ok-*) covering every value type, array kind, tensor type, alignment and version, and
near-valid ones (seed-bad-*) each one fault away from valid. Every seed is under 4 KiB, the
fuzzer's -max_len. Deterministic: running it again rewrites the same bytes.

    .venv/bin/python tests/e2e/make_fuzz_seeds.py [OUTDIR]     (default fuzz/corpus)
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ggufcraft as gc  # noqa: E402
from ggufcraft import (ARRAY, BOOL, F16, F32, F32_V, F64_V, I8, I16, I32, I64, Q4_0, Q8_0,  # noqa: E402
                       STRING, U8, U16, U32, U64, Gguf)

REPO = Path(__file__).resolve().parents[2]
MAX_SEED = 4096


def arch(name: str = "test") -> Gguf:
    g = Gguf()
    g.kv("general.architecture", STRING, name)
    return g


def every_scalar() -> Gguf:
    g = arch()
    for i, (t, v) in enumerate([(U8, 255), (I8, -128), (U16, 65535), (I16, -32768), (U32, 2**32 - 1),
                                (I32, -2**31), (F32_V, 1.5), (BOOL, 1), (STRING, "s\u00e9"),
                                (U64, 2**64 - 1), (I64, -2**63), (F64_V, -0.25)]):
        g.kv(f"s.{gc.VALUE_TYPE_NAMES[t]}", t, v)
    return g


def every_array() -> Gguf:
    g = arch()
    items = {U8: [0, 255], I8: [-1, 1], U16: [1, 2], I16: [-3, 3], U32: [7], I32: [-7], F32_V: [0.5, 2.0],
             BOOL: [0, 1], STRING: ["", "ab", "\u65e5"], U64: [2**63], I64: [-2], F64_V: [1e-9]}
    for t, v in items.items():
        g.kv(f"a.{gc.VALUE_TYPE_NAMES[t]}", ARRAY, v, elem_type=t)
    g.kv("a.empty", ARRAY, [], elem_type=U32)
    g.kv("a.empty_str", ARRAY, [], elem_type=STRING)
    return g


def every_tensor_type() -> Gguf:
    g = arch()
    for ttype, (name, bs, bb) in sorted(gc.TENSOR_TYPES.items()):
        g.tensor(name.lower(), [bs], ttype, data=bytes((i * 37) & 0xFF for i in range(bb)))
    return g


def tokenizer_like() -> Gguf:
    g = arch("llama")
    g.kv("llama.block_count", U32, 1)
    g.kv("llama.context_length", U32, 64)
    g.kv("llama.embedding_length", U32, 8)
    g.kv("llama.attention.head_count", U32, 2)
    g.kv("llama.attention.layer_norm_rms_epsilon", F32_V, 1e-6)
    g.kv("tokenizer.ggml.model", STRING, "llama")
    toks = ["<unk>", "<s>", "</s>", "\u2581a", "\u2581b", "ab", "<0x0A>", "\u2581"]
    g.kv("tokenizer.ggml.tokens", ARRAY, toks, elem_type=STRING)
    g.kv("tokenizer.ggml.scores", ARRAY, [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0], elem_type=F32_V)
    g.kv("tokenizer.ggml.token_type", ARRAY, [2, 3, 3, 1, 1, 1, 6, 1], elem_type=I32)
    g.kv("tokenizer.ggml.bos_token_id", U32, 1)
    g.kv("tokenizer.ggml.eos_token_id", U32, 2)
    g.kv("tokenizer.ggml.add_bos_token", BOOL, True)
    g.tensor("token_embd.weight", [8, 8], F32, data=struct.pack("<64f", *[i / 64 for i in range(64)]))
    g.tensor("output_norm.weight", [8], F32, data=struct.pack("<8f", *([1.0] * 8)))
    g.tensor("blk.0.attn_q.weight", [32, 1], Q8_0)
    g.tensor("blk.0.ffn_up.weight", [32, 1], Q4_0)
    return g


def bpe_vocab() -> Gguf:
    """A byte-level BPE vocabulary (printable ASCII only, to stay small) with merges and
    special tokens, for the tokenizer fuzzer."""
    g = arch("llama")
    toks = ["<|begin_of_text|>", "<|eot_id|>"] + [chr(c) for c in range(33, 127)] + ["\u0120", "\u010a"]
    toks += ["he", "ll", "hell", "hello", "\u0120w", "or", "\u0120wor"]
    g.kv("tokenizer.ggml.model", STRING, "gpt2")
    g.kv("tokenizer.ggml.pre", STRING, "llama-bpe")
    g.kv("tokenizer.ggml.tokens", ARRAY, toks, elem_type=STRING)
    g.kv("tokenizer.ggml.token_type", ARRAY, [3, 3] + [1] * (len(toks) - 2), elem_type=I32)
    g.kv("tokenizer.ggml.merges", ARRAY, ["h e", "l l", "he ll", "hell o", "\u0120 w", "o r", "\u0120w or"],
         elem_type=STRING)
    g.kv("tokenizer.ggml.bos_token_id", U32, 0)
    g.kv("tokenizer.ggml.eos_token_id", U32, 1)
    return g


def aligned(a: int) -> Gguf:
    g = arch()
    g.set_alignment(a)
    g.tensor("x", [3], F32, data=struct.pack("<3f", 1, 2, 3))
    g.tensor("y", [5], F16, data=bytes(10))
    return g


def with_fault(make, fault) -> Gguf:
    g = make()
    fault(g)
    return g


def seeds() -> dict[str, bytes]:
    out: dict[str, Gguf | bytes] = {
        "ok-header-only": Gguf(),
        "ok-small": gc.small_valid(),
        "ok-tiny": gc.tiny_valid(),
        "ok-every-scalar": every_scalar(),
        "ok-every-array": every_array(),
        "ok-every-tensor-type": every_tensor_type(),
        "ok-tokenizer-like": tokenizer_like(),
        "ok-vocab-bpe": bpe_vocab(),
        "ok-align-1": aligned(1),
        "ok-align-128": aligned(128),
        "ok-version-2": with_fault(gc.small_valid, lambda g: setattr(g, "version", 2)),
        "ok-4d-and-empty-tensor": with_fault(arch, lambda g: (g.tensor("t4", [2, 1, 2, 2], F32),
                                                              g.tensor("e", [0, 3], F16, offset=32))),
        "bad-bool-2": with_fault(arch, lambda g: g.kv("b", BOOL, 2)),
        "bad-misaligned": with_fault(arch, lambda g: g.tensor("m", [4], F32, offset=8)),
        "bad-overlap": with_fault(arch, lambda g: (g.tensor("p", [16], F32), g.tensor("q", [8], F32, offset=32))),
        "bad-block-multiple": with_fault(arch, lambda g: g.tensor("r", [48], Q8_0, data=bytes(68))),
        "bad-truncated-data": gc.small_valid().build()[0][:-9],
        "bad-dup-key": with_fault(arch, lambda g: g.kv("general.architecture", STRING, "again")),
    }
    return {name: (v if isinstance(v, bytes) else v.build()[0]) for name, v in out.items()}


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else REPO / "fuzz" / "corpus"
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("seed-*.gguf"):
        old.unlink()
    for name, raw in seeds().items():
        assert len(raw) < MAX_SEED, f"{name}: {len(raw)} bytes"
        (outdir / f"seed-{name}.gguf").write_bytes(raw)
    print(f"make_fuzz_seeds: wrote {len(seeds())} seeds to {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
