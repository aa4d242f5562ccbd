"""make_moe_models.py — small mixture-of-experts GGUF models with random weights, written with
gguf-py, byte for byte the same on every run (numpy's seeded generator, gguf-py's writer and
quantizers, and a Q4_K packer here): the inputs of the MoE agreement test. scripts/make-golden.py
--only moe runs them through llama.cpp and records its logits (tests/e2e/data/golden_moe.json,
with each file's SHA-256); tests/e2e/test_agreement_moe.py writes them again, checks the
hashes and compares plumb's logits.

  qwen3moe-f32     qwen3moe, 8 experts (2 used) of expert_feed_forward_length 40 (SiLU's scalar
                   tail), head size 32 from attention.key_length (n_embd 64 / 4 heads would be 16)
  qwen3moe-q4k     qwen3moe, 20 experts (4 used: the router's softmax takes one vectorized block
                   of 16 and a tail of 4), Q4_K experts of feed_forward_length / expert_used_count
                   (no expert_feed_forward_length key), Q8_0 attention and head
  llama-moe-f16    llama with experts (Mixtral-style), NORMAL RoPE, 8 experts (2 used), F16
  llama-moe-q8_0   llama with 16 experts (2 used), Q8_0 everything but the norms and the router

Every model carries a 512-token SentencePiece vocabulary; the prompts are token ids.

    .venv/bin/python tests/e2e/make_moe_models.py OUTDIR
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

N_VOCAB = 512
BOS, EOS = 2, 1

MODELS = {
    "qwen3moe-f32": dict(arch="qwen3moe", n_embd=64, n_head=4, n_head_kv=2, head_dim=32, n_layer=2, n_ff=96,
                         n_ff_exp=40, n_expert=8, n_used=2, types={}, seed=11),
    "qwen3moe-q4k": dict(arch="qwen3moe", n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_layer=2, n_ff=1024,
                         n_ff_exp=None, n_expert=20, n_used=4, seed=12,
                         types={"_exps.weight": QT.Q4_K, "attn_q.weight": QT.Q8_0, "attn_k.weight": QT.Q8_0,
                                "attn_v.weight": QT.Q8_0, "attn_output.weight": QT.Q8_0, "output.weight": QT.Q8_0,
                                "token_embd.weight": QT.Q8_0}),
    "llama-moe-f16": dict(arch="llama", n_embd=64, n_head=4, n_head_kv=2, head_dim=None, n_layer=2, n_ff=48,
                          n_ff_exp=None, n_expert=8, n_used=2, seed=13,
                          types={"_exps.weight": QT.F16, "attn_": QT.F16, "token_embd.weight": QT.F16}),
    "llama-moe-q8_0": dict(arch="llama", n_embd=128, n_head=4, n_head_kv=4, head_dim=None, n_layer=2, n_ff=96,
                           n_ff_exp=None, n_expert=16, n_used=2, seed=14,
                           types={"_exps.weight": QT.Q8_0, "attn_": QT.Q8_0, "token_embd.weight": QT.Q8_0,
                                  "output.weight": QT.Q8_0}),
}

# Prompts (token ids, BOS first) for every model: 4 of different lengths.
PROMPTS = [[BOS] + [int(t) for t in np.random.default_rng(100 + i).integers(260, N_VOCAB, n)]
           for i, n in enumerate((4, 7, 11, 16))]


def _q4_k(a: np.ndarray) -> np.ndarray:
    """Q4_K blocks of the rows of a (ne[0] a multiple of 256): per sub-block of 32 a 6-bit scale
    and min against the super-block's F16 d and dmin, 4-bit codes. Any valid encoding does: the
    test compares engines on the same bytes."""
    rows = a.reshape(-1, 256).astype(np.float32)  # one super-block per row
    sub = rows.reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0.0)
    hi = sub.max(axis=2)
    scale = np.maximum((hi - lo) / 15.0, 1e-8)
    mins = -lo
    d = (scale.max(axis=1) / 63.0).astype(np.float16)
    dmin = (mins.max(axis=1) / 63.0).astype(np.float16)
    df, dminf = d.astype(np.float32), dmin.astype(np.float32)
    sc = np.clip(np.rint(scale / np.where(df > 0, df, 1)[:, None]), 1, 63).astype(np.uint8)
    mn = np.clip(np.rint(mins / np.where(dminf > 0, dminf, 1)[:, None]), 0, 63).astype(np.uint8)
    eff_scale = df[:, None] * sc
    eff_min = dminf[:, None] * mn
    q = np.clip(np.rint((sub + eff_min[:, :, None]) / eff_scale[:, :, None]), 0, 15).astype(np.uint8)
    packed = np.zeros((rows.shape[0], 12), dtype=np.uint8)
    for j in range(4):
        packed[:, j] = (sc[:, j] & 63) | ((sc[:, j + 4] >> 4) << 6)
        packed[:, j + 4] = (mn[:, j] & 63) | ((mn[:, j + 4] >> 4) << 6)
        packed[:, j + 8] = (sc[:, j + 4] & 0xF) | ((mn[:, j + 4] & 0xF) << 4)
    qs = np.zeros((rows.shape[0], 128), dtype=np.uint8)
    for c in range(4):
        qs[:, 32 * c:32 * c + 32] = q[:, 2 * c, :] | (q[:, 2 * c + 1, :] << 4)
    blocks = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), packed, qs], axis=1)
    return blocks.reshape(a.shape[:-1] + (a.shape[-1] // 256 * 144,))


def _encode(a: np.ndarray, qtype):
    """(data, raw_dtype) for gguf-py's add_tensor."""
    if qtype == QT.F32:
        return a.astype(np.float32), None
    if qtype == QT.F16:
        return a.astype(np.float16), None
    if qtype == QT.Q4_K:
        return _q4_k(a), qtype
    return gguf.quants.quantize(a.astype(np.float32), qtype), qtype


def _vocab(w: gguf.GGUFWriter) -> None:
    toks = ["<pad>", "<eos>", "<bos>", "<unk>"] + ["<0x%02X>" % b for b in range(256)]
    toks += ["\u2581w%d" % i for i in range(N_VOCAB - len(toks))]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([-float(i) for i in range(N_VOCAB)])
    w.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * (N_VOCAB - 260))
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_unk_token_id(3)


def write_model(path: str | Path, name: str) -> None:
    c = MODELS[name]
    arch, E, H, KV = c["arch"], c["n_embd"], c["n_head"], c["n_head_kv"]
    hd = c["head_dim"] or E // H
    n_ff_exp = c["n_ff_exp"] or (c["n_ff"] if arch == "llama" else c["n_ff"] // c["n_used"])
    rng = np.random.default_rng(c["seed"])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_context_length(256)
    w.add_embedding_length(E)
    w.add_block_count(c["n_layer"])
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1e6)
    w.add_expert_count(c["n_expert"])
    w.add_expert_used_count(c["n_used"])
    if c["n_ff_exp"]:
        w.add_expert_feed_forward_length(c["n_ff_exp"])
    if c["head_dim"]:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if arch == "llama":
        w.add_rope_dimension_count(hd)
    _vocab(w)

    def add(tname, shape, scale, offset=0.0):
        """shape in GGUF order (ne[0] first)."""
        a = (rng.standard_normal(shape[::-1]) * scale + offset).astype(np.float32)
        qtype = QT.F32
        if len(shape) > 1:
            for suffix, t in c["types"].items():
                if suffix in tname:
                    qtype = t
        data, raw = _encode(a, qtype)
        w.add_tensor(tname, data, raw_dtype=raw)

    Xe = c["n_expert"]
    add("token_embd.weight", (E, N_VOCAB), 0.5)
    add("output_norm.weight", (E,), 0.1, 1.0)
    add("output.weight", (E, N_VOCAB), E ** -0.5)
    for il in range(c["n_layer"]):
        p = f"blk.{il}."
        add(p + "attn_norm.weight", (E,), 0.1, 1.0)
        add(p + "attn_q.weight", (E, H * hd), E ** -0.5)
        add(p + "attn_k.weight", (E, KV * hd), E ** -0.5)
        add(p + "attn_v.weight", (E, KV * hd), E ** -0.5)
        add(p + "attn_output.weight", (H * hd, E), (H * hd) ** -0.5)
        if arch == "qwen3moe":
            add(p + "attn_q_norm.weight", (hd,), 0.1, 1.0)
            add(p + "attn_k_norm.weight", (hd,), 0.1, 1.0)
        add(p + "ffn_norm.weight", (E,), 0.1, 1.0)
        add(p + "ffn_gate_inp.weight", (E, Xe), 2.0 * E ** -0.5)  # spread-out routing
        add(p + "ffn_gate_exps.weight", (E, n_ff_exp, Xe), E ** -0.5)
        add(p + "ffn_up_exps.weight", (E, n_ff_exp, Xe), E ** -0.5)
        add(p + "ffn_down_exps.weight", (n_ff_exp, E, Xe), n_ff_exp ** -0.5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_all(outdir: str | Path) -> dict[str, Path]:
    """Writes every model into outdir; returns {name: path}."""
    out = {}
    for name in MODELS:
        path = Path(outdir) / f"{name}.gguf"
        write_model(path, name)
        out[name] = path
    return out


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


if __name__ == "__main__":
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    outdir.mkdir(parents=True, exist_ok=True)
    for n, p in build_all(outdir).items():
        print(f"{p}  {p.stat().st_size} bytes  sha256 {sha256(p)[:16]}")
