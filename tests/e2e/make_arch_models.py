#!/usr/bin/env python3
"""make_arch_models.py — writes the synthetic models of the architecture agreement test
(tests/e2e/test_agreement_arch.py): small qwen3, gemma2 and phi3 GGUF files with random
weights, written with gguf-py, that carry the real tokenizers of the models `make model`
fetches (Qwen2.5-Coder's byte-level BPE for qwen3 and phi3, Gemma 3's SentencePiece vocabulary
for gemma2), copied key by key from those files.

Each model exercises what its architecture adds: qwen3 a head size that is not n_embd / n_head
and the per-head q/k norms (and an untied head); gemma2 the attention and final logit soft-caps, sliding layers
(even ones) with a window shorter than the prompts, and, in a 46-layer variant, the 27B's
query scale 1/sqrt(n_embd / n_head); phi3 the fused attn_qkv and gate+up, partial RoPE, the
LongRoPE factors (long ones chosen at a 2048 context: original_context_length 1024) with an
attention factor, and a variant with separate q/k/v, the short factors and F16 weights over
Gemma's SentencePiece vocabulary. The first is named "synthetic-phi3", which makes llama.cpp
drop the whitespace after special tokens (a rule it keys on general.name); the variant is not
(llama.cpp's rule looks up <unk>, <s> and </s>, which Gemma's vocabulary lacks).

Deterministic: the same inputs give the same bytes (scripts/make-golden.py records each
file's SHA-256 and the test checks it). Weights are sized so that each file stays small; the
tokenizer (about 6 MB) and the embedding (n_vocab rows) are most of it.

    .venv/bin/python tests/e2e/make_arch_models.py OUTDIR   -> OUTDIR/<name>.gguf
scripts/make-golden.py and the test import build_all().
"""
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCABS = {
    "qwen": os.path.join(REPO, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    "gemma": os.path.join(REPO, "models", "gemma-3-270m-q4_k_m.gguf"),
}

# name: architecture, vocabulary source, sizes, keys and tensor types. Matrices are `mat`
# unless `types` names the tensor (by suffix); the embedding and the head (tied unless `tied`
# is False) are `embd`.
MODELS = {
    "qwen3": dict(arch="qwen3", vocab="qwen", n_embd=32, n_layer=2, n_head=4, n_head_kv=2, head_dim=64, n_ff=96,
                  embd=QT.Q4_0, mat=QT.Q8_0, tied=False, rope_base=1e6, eps=1e-6, seed=1),
    "gemma2": dict(arch="gemma2", vocab="gemma", n_embd=32, n_layer=4, n_head=2, n_head_kv=1, head_dim=64, n_ff=96,
                   embd=QT.Q4_0, mat=QT.Q8_0, types={"attn_q.weight": QT.Q5_0, "attn_k.weight": QT.Q5_0},
                   rope_base=10000.0, eps=1e-6, n_swa=8, attn_softcap=8.0, final_softcap=20.0, seed=2),
    "gemma2_27b_scale": dict(arch="gemma2", vocab="gemma", n_embd=32, n_layer=46, n_head=2, n_head_kv=2,
                             head_dim=32, n_ff=64, embd=QT.Q4_0, mat=QT.Q8_0, rope_base=10000.0, eps=1e-6,
                             n_swa=6, attn_softcap=50.0, final_softcap=30.0, seed=3),
    "phi3": dict(arch="phi3", vocab="qwen", n_embd=64, n_layer=2, n_head=2, n_head_kv=1, head_dim=32, n_ff=96,
                 n_rot=24, embd=QT.Q4_0, mat=QT.Q8_0, types={"ffn_up.weight": QT.Q4_0, "ffn_down.weight": QT.Q5_0},
                 rope_base=10000.0, eps=1e-5, fused=True, rope_factors=True, attn_factor=1.1902381,
                 orig_ctx=1024, n_swa=2047, seed=4),
    "phi3_split": dict(arch="phi3", vocab="gemma", n_embd=32, n_layer=2, n_head=2, n_head_kv=2, head_dim=16, n_ff=64,
                       n_rot=16, embd=QT.Q4_0, mat=QT.F16, rope_base=10000.0, eps=1e-5, fused=False,
                       rope_factors=True, orig_ctx=4096, seed=5, general_name="synthetic-split-qkv"),
}


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _read_value(buf, at, vtype):
    """(value, next offset) of a GGUF metadata value of type vtype at buf[at:]; strings stay
    bytes."""
    if vtype == 8:
        n = struct.unpack_from("<Q", buf, at)[0]
        return bytes(buf[at + 8:at + 8 + n]), at + 8 + n
    if vtype == 9:
        sub, n = struct.unpack_from("<IQ", buf, at)
        at += 12
        if sub == 8:
            out = []
            for _ in range(n):
                k = struct.unpack_from("<Q", buf, at)[0]
                out.append(bytes(buf[at + 8:at + 8 + k]))
                at += 8 + k
            return (sub, out), at
        fmt = _SCALARS[sub]
        size = struct.calcsize(fmt)
        return (sub, list(np.frombuffer(buf, dtype=np.dtype(fmt), count=n, offset=at).tolist())), at + n * size
    fmt = _SCALARS[vtype]
    return struct.unpack_from(fmt, buf, at)[0], at + struct.calcsize(fmt)


def copy_tokenizer(w, src):
    """Adds every tokenizer.* key of the GGUF file src to the writer w with its type and value
    (strings as their bytes); returns the number of tokens. (A small reader of the metadata:
    gguf-py's reader takes seconds over a 262144-token vocabulary.)"""
    with open(src, "rb") as f:
        buf = f.read(64 << 20)
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
    assert magic == b"GGUF" and version in (2, 3), src
    at, n_tokens = 24, None
    for _ in range(n_kv):
        k = struct.unpack_from("<Q", buf, at)[0]
        key = buf[at + 8:at + 8 + k].decode("utf-8")
        vtype = struct.unpack_from("<I", buf, at + 8 + k)[0]
        val, at = _read_value(buf, at + 12 + k, vtype)
        if not key.startswith("tokenizer."):
            continue
        if vtype == 9:
            sub, items = val
            w.add_key_value(key, items, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType(sub))
            if key == "tokenizer.ggml.tokens":
                n_tokens = len(items)
        else:
            w.add_key_value(key, val, gguf.GGUFValueType(vtype))
    assert n_tokens, src
    return n_tokens


def _tensor(w, rng, name, shape, scale, qtype, offset=0.0):
    """Random N(offset, scale^2) values of gguf shape `shape` (ne0 first) as qtype."""
    a = (rng.standard_normal(shape[::-1]) * scale + offset).astype(np.float32)
    if qtype == QT.F32:
        w.add_tensor(name, a)
    elif qtype == QT.F16:
        w.add_tensor(name, a.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)


def build(name, outdir, vocabs=None):
    """Writes OUTDIR/<name>.gguf; returns its path."""
    s = MODELS[name]
    vocabs = vocabs or VOCABS
    path = os.path.join(outdir, name + ".gguf")
    arch, E, H, KV, hd, F = s["arch"], s["n_embd"], s["n_head"], s["n_head_kv"], s["head_dim"], s["n_ff"]
    rng = np.random.default_rng(s["seed"])
    w = gguf.GGUFWriter(path, arch)
    w.add_name(s.get("general_name", "synthetic-" + name))
    w.add_context_length(4096)
    w.add_embedding_length(E)
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_rope_freq_base(s["rope_base"])
    w.add_rope_dimension_count(s.get("n_rot", hd))
    if "n_swa" in s:
        w.add_sliding_window(s["n_swa"])
    if "attn_softcap" in s:
        w.add_attn_logit_softcapping(s["attn_softcap"])
        w.add_final_logit_softcapping(s["final_softcap"])
    if "attn_factor" in s:
        w.add_rope_scaling_attn_factors(s["attn_factor"])
    if "orig_ctx" in s:
        w.add_rope_scaling_orig_ctx_len(s["orig_ctx"])
    n_vocab = copy_tokenizer(w, vocabs[s["vocab"]])

    def mat(tname, shape):
        qt = next((t for suffix, t in s.get("types", {}).items() if tname.endswith(suffix)), s["mat"])
        _tensor(w, rng, tname, shape, shape[0] ** -0.5, qt)

    def norm(tname, n):
        _tensor(w, rng, tname, (n,), 0.1, QT.F32, offset=1.0)

    _tensor(w, rng, "token_embd.weight", (E, n_vocab), 0.5, s["embd"])
    norm("output_norm.weight", E)
    if not s.get("tied", True):
        _tensor(w, rng, "output.weight", (E, n_vocab), E ** -0.5 * 2.0, s["embd"])
    if s.get("rope_factors"):
        n = s.get("n_rot", hd) // 2
        w.add_tensor("rope_factors_long.weight", np.linspace(1.0, 6.0, n, dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.linspace(1.0, 1.5, n, dtype=np.float32))
    Q, K = H * hd, KV * hd
    for il in range(s["n_layer"]):
        p = "blk.%d." % il
        norm(p + "attn_norm.weight", E)
        if s.get("fused"):
            mat(p + "attn_qkv.weight", (E, Q + 2 * K))
        else:
            mat(p + "attn_q.weight", (E, Q))
            mat(p + "attn_k.weight", (E, K))
            mat(p + "attn_v.weight", (E, K))
        mat(p + "attn_output.weight", (Q, E))
        if arch == "qwen3":
            norm(p + "attn_q_norm.weight", hd)
            norm(p + "attn_k_norm.weight", hd)
        if arch == "gemma2":
            norm(p + "post_attention_norm.weight", E)
        norm(p + "ffn_norm.weight", E)
        if arch == "phi3":
            mat(p + "ffn_up.weight", (E, 2 * F))
        else:
            mat(p + "ffn_gate.weight", (E, F))
            mat(p + "ffn_up.weight", (E, F))
        mat(p + "ffn_down.weight", (F, E))
        if arch == "gemma2":
            norm(p + "post_ffw_norm.weight", E)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_all(outdir, vocabs=None):
    """Writes every model into outdir; returns {name: path}."""
    return {name: build(name, outdir, vocabs) for name in MODELS}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(sys.argv[1], exist_ok=True)
    for n, p in build_all(sys.argv[1]).items():
        print(p, os.path.getsize(p))
