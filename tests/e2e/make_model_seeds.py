"""Tiny llama, gemma3, qwen3, gemma2 and phi3 models written field by field with ggufcraft, and
the seed corpus of the model-loading fuzzer (fuzz/corpus-model/seed-*.gguf) made from them.

`Model` holds a model as editable metadata entries and tensors, so the corrupt-model matrix
(test_model_corrupt.py) can change exactly one key or tensor of a valid model; gguf-py is
too careful a writer for that (it will not write a bool where a count belongs). The weights
are small deterministic pseudo-random values; the vocabulary is a 16-token SentencePiece
one, enough for `plumb run -p x`.

Seeds: seed-ok-* load and generate; seed-bad-* are each one fault away from valid. Every seed
is under MAX_SEED bytes, below the fuzzer's -max_len (8192, the Makefile's fuzz-smoke).
Deterministic: running it again rewrites the same bytes.

    .venv/bin/python tests/e2e/make_model_seeds.py [OUTDIR]     (default fuzz/corpus-model)
"""
from __future__ import annotations

import copy
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ggufcraft as gc  # noqa: E402
from ggufcraft import ARRAY, F16, F32, F32_V, I32, Q4_0, Q8_0, STRING, U32, Gguf  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MAX_SEED = 7168  # leaves the fuzzer room to grow a seed below its -max_len of 8192

# The vocabulary every model here carries: control tokens, a few pieces, fillers.
_PIECES = ["<unk>", "<s>", "</s>", "\u2581", "x", "\u2581x", "a", "b", "\u2581a", "ab", "<0x0A>"]


def vocab_tokens(n: int) -> list[str]:
    return (_PIECES + ["\u2581w%d" % i for i in range(n)])[:n]


def _weights(rng: np.random.Generator, ne: list[int], ttype: int, offset: float = 0.0) -> bytes:
    """Bytes of a tensor of shape ne (ne[0] first) and type ttype with small values; quantized
    blocks get a small F16 scale so nothing overflows to inf."""
    n = int(np.prod(ne))
    if ttype == F32:
        return (rng.standard_normal(n) * 0.3 + offset).astype("<f4").tobytes()
    if ttype == F16:
        return (rng.standard_normal(n) * 0.3 + offset).astype("<f2").tobytes()
    name, bs, bb = gc.TENSOR_TYPES[ttype]
    out = bytearray()
    for _ in range(n // bs):
        out += np.float16(0.02).tobytes() + rng.integers(0, 256, bb - 2, dtype=np.uint8).tobytes()
    return bytes(out)


class Model:
    """A model as ordered metadata entries {key: (vtype, value, elem_type)} and tensors
    {name: dict(ne, ttype, data)}; build() writes the GGUF bytes. Edits return self."""

    def __init__(self, arch: str = "llama", *, n_vocab: int = 16, n_embd: int = 8, n_layer: int = 1,
                 n_head: int = 2, n_head_kv: int = 1, n_ff: int = 8, head_dim: int | None = None,
                 mat_type: int = F32, types: dict[str, int] | None = None, tied: bool = True, biases: bool = False, rope_freqs: bool = False,
                 rope_scaling: float | None = None, n_swa: int = 0, softcap: float | None = None, seed: int = 0):
        self.arch = arch
        self.kvs: dict[str, tuple] = {}
        self.tensors: dict[str, dict] = {}
        hd = head_dim or n_embd // n_head
        rng = np.random.default_rng(seed)
        self.kv("general.architecture", STRING, arch)
        self.kv("general.name", STRING, f"tiny-{arch}")
        self.kv(".context_length", U32, 64)
        self.kv(".embedding_length", U32, n_embd)
        self.kv(".block_count", U32, n_layer)
        self.kv(".feed_forward_length", U32, n_ff)
        self.kv(".attention.head_count", U32, n_head)
        self.kv(".attention.head_count_kv", U32, n_head_kv)
        self.kv(".attention.layer_norm_rms_epsilon", F32_V, 1e-6 if arch == "gemma3" else 1e-5)
        self.kv(".rope.freq_base", F32_V, 10000.0)
        if head_dim or arch in ("gemma3", "qwen3"):
            self.kv(".attention.key_length", U32, hd)
            self.kv(".attention.value_length", U32, hd)
        if arch in ("llama", "phi3"):
            self.kv(".rope.dimension_count", U32, hd)
        if rope_scaling:
            self.kv(".rope.scaling.type", STRING, "linear")
            self.kv(".rope.scaling.factor", F32_V, rope_scaling)
        if n_swa:
            self.kv(".attention.sliding_window", U32, n_swa)
        if softcap:
            self.kv(".final_logit_softcapping", F32_V, softcap)
        toks = vocab_tokens(n_vocab)
        self.kv("tokenizer.ggml.model", STRING, "llama")
        self.kv("tokenizer.ggml.tokens", ARRAY, toks, STRING)
        self.kv("tokenizer.ggml.scores", ARRAY, [-float(i) for i in range(n_vocab)], F32_V)
        self.kv("tokenizer.ggml.token_type", ARRAY, [2, 3, 3] + [1] * (n_vocab - 3), I32)
        self.kv("tokenizer.ggml.bos_token_id", U32, 1)
        self.kv("tokenizer.ggml.eos_token_id", U32, 2)

        def add(name, ne, ttype=F32, offset=0.0):
            for suffix, t in (types or {}).items():  # per-tensor types, as quantizers mix them
                if name.endswith(suffix):
                    ttype = t
            self.tensors[name] = dict(ne=list(ne), ttype=ttype, data=_weights(rng, ne, ttype, offset))

        q, kv = n_head * hd, n_head_kv * hd
        add("token_embd.weight", [n_embd, n_vocab], mat_type)
        add("output_norm.weight", [n_embd], offset=1.0)
        if not tied:
            add("output.weight", [n_embd, n_vocab], mat_type)
        if rope_freqs:
            add("rope_freqs.weight", [hd // 2], offset=2.0)
        for il in range(n_layer):
            p = f"blk.{il}."
            add(p + "attn_norm.weight", [n_embd], offset=1.0)
            if arch == "phi3":  # q, k and v in one matrix
                add(p + "attn_qkv.weight", [n_embd, q + 2 * kv], mat_type)
            else:
                add(p + "attn_q.weight", [n_embd, q], mat_type)
                add(p + "attn_k.weight", [n_embd, kv], mat_type)
                add(p + "attn_v.weight", [n_embd, kv], mat_type)
            add(p + "attn_output.weight", [q, n_embd], mat_type)
            if biases:
                add(p + "attn_q.bias", [q])
                add(p + "attn_k.bias", [kv])
                add(p + "attn_v.bias", [kv])
                add(p + "attn_output.bias", [n_embd])
            add(p + "ffn_norm.weight", [n_embd], offset=1.0)
            if arch == "phi3":  # gate and up in one matrix
                add(p + "ffn_up.weight", [n_embd, 2 * n_ff], mat_type)
            else:
                add(p + "ffn_gate.weight", [n_embd, n_ff], mat_type)
                add(p + "ffn_up.weight", [n_embd, n_ff], mat_type)
            add(p + "ffn_down.weight", [n_ff, n_embd], mat_type)
            if arch == "gemma3":
                add(p + "attn_q_norm.weight", [hd], offset=1.0)
                add(p + "attn_k_norm.weight", [hd], offset=1.0)
                add(p + "post_attention_norm.weight", [n_embd], offset=1.0)
                add(p + "post_ffw_norm.weight", [n_embd], offset=1.0)
            if arch == "qwen3":
                add(p + "attn_q_norm.weight", [hd], offset=1.0)
                add(p + "attn_k_norm.weight", [hd], offset=1.0)
            if arch == "gemma2":
                add(p + "post_attention_norm.weight", [n_embd], offset=1.0)
                add(p + "post_ffw_norm.weight", [n_embd], offset=1.0)

    def _key(self, key: str) -> str:
        """'.suffix' names the architecture's own key."""
        return self.arch + key if key.startswith(".") else key

    def kv(self, key: str, vtype: int, value, elem_type: int | None = None) -> "Model":
        """Sets (adds or replaces, in place) a metadata entry."""
        self.kvs[self._key(key)] = (vtype, value, elem_type)
        return self

    def drop(self, *names: str) -> "Model":
        """Removes metadata keys or tensors."""
        for n in names:
            k = self._key(n)
            assert k in self.kvs or k in self.tensors, k
            self.kvs.pop(k, None)
            self.tensors.pop(k, None)
        return self

    def tensor(self, name: str, ne: list[int] | None = None, ttype: int | None = None,
               data: bytes | None = None) -> "Model":
        """Changes (or adds) a tensor; a new shape or type without data gets zero bytes of the
        right size."""
        t = self.tensors.setdefault(name, dict(ne=[1], ttype=F32, data=b""))
        if ne is not None:
            t["ne"] = list(ne)
        if ttype is not None:
            t["ttype"] = ttype
        if data is not None:
            t["data"] = data
        elif ne is not None or ttype is not None:
            t["data"] = bytes(gc.row_bytes(t["ttype"], t["ne"]))
        return self

    def copy(self) -> "Model":
        return copy.deepcopy(self)

    def gguf(self) -> Gguf:
        g = Gguf()
        for key, (vtype, value, elem_type) in self.kvs.items():
            g.kv(key, vtype, value, elem_type=elem_type)
        for name, t in self.tensors.items():
            g.tensor(name, t["ne"], t["ttype"], data=t["data"])
        return g

    def build(self) -> bytes:
        return self.gguf().build()[0]


def llama(**kw) -> Model:
    return Model("llama", **kw)


def gemma3(**kw) -> Model:
    return Model("gemma3", **kw)


def qwen3(**kw) -> Model:
    return Model("qwen3", **kw)


def gemma2(**kw) -> Model:
    return Model("gemma2", **kw)


def phi3(**kw) -> Model:
    return Model("phi3", **kw)


def seeds() -> dict[str, bytes]:
    out: dict[str, Model | bytes] = {
        "ok-llama-f32": llama(n_layer=2),
        "ok-llama-f16-head-bias-ropefreqs": llama(mat_type=F16, tied=False, biases=True, rope_freqs=True,
                                                 rope_scaling=2.0, seed=1),
        "ok-llama-gqa-keylength": llama(n_embd=8, n_head=4, n_head_kv=2, head_dim=4, n_ff=12, seed=2),
        "ok-llama-q4_0": llama(n_embd=32, n_ff=32, n_head=4, n_head_kv=2, n_vocab=12, mat_type=Q4_0, seed=3),
        "ok-gemma3-f16-swa": gemma3(n_layer=2, mat_type=F16, n_swa=2, softcap=30.0, seed=4),
        "ok-gemma3-f16-keylength": gemma3(mat_type=F16, head_dim=6, n_head=2, n_head_kv=2, seed=5),
        "ok-gemma3-q8_0-q4_0": gemma3(n_embd=32, n_ff=32, n_head=1, n_head_kv=1, head_dim=8, n_vocab=12, mat_type=Q8_0,
                                      types={"attn_output.weight": F16, "ffn_gate.weight": Q4_0,
                                             "ffn_up.weight": Q4_0, "ffn_down.weight": Q4_0}, seed=6),
        "bad-llama-missing-ffn-down": llama().drop("blk.0.ffn_down.weight"),
        "bad-llama-transposed-q": llama(n_head=2, n_head_kv=1).tensor("blk.0.attn_k.weight", ne=[4, 8]),
        "bad-gemma3-norm-f16": gemma3().tensor("blk.0.post_ffw_norm.weight", ttype=F16),
        "bad-gemma3-embd-rows": gemma3().tensor("token_embd.weight", ne=[8, 15]),
        "bad-llama-heads": llama().kv(".attention.head_count_kv", U32, 3),
        "ok-qwen3-keylength": qwen3(n_embd=8, n_head=2, n_head_kv=1, head_dim=8, seed=7),
        "ok-gemma2-swa": gemma2(n_layer=2, n_swa=2, seed=8),
        "ok-phi3-rope-factors": phi3(seed=9).kv(".rope.dimension_count", U32, 2)
        .tensor("rope_factors_short.weight", ne=[1], data=bytes.fromhex("0000c03f")),
        "bad-phi3-qkv-rows": phi3().tensor("blk.0.attn_qkv.weight", ne=[8, 12]),
        "bad-qwen3-key-length": qwen3().kv(".attention.key_length", U32, 8),
    }
    return {name: (v if isinstance(v, bytes) else v.build()) for name, v in out.items()}


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else REPO / "fuzz" / "corpus-model"
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("seed-*.gguf"):
        old.unlink()
    all_seeds = seeds()
    for name, raw in all_seeds.items():
        assert len(raw) < MAX_SEED, f"{name}: {len(raw)} bytes"
        (outdir / f"seed-{name}.gguf").write_bytes(raw)
    print(f"make_model_seeds: wrote {len(all_seeds)} seeds to {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
