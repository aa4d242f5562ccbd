"""Corrupt-model matrix for model loading (src/model/), run through the release and the
ASan+UBSan plumb binaries.

Each case is a tiny valid model of an architecture (make_model_seeds.Model) with exactly one
fault: a key missing, of the wrong type or out of range, hyperparameters that disagree, a
tensor missing, misshapen, of the wrong type or misaligned. `plumb run -m FILE -p x -n 1`
must exit 1 with exactly one line on stderr, "plumb run: FILE: ...", naming the key or the
tensor, and leave no sanitizer report. The cases follow the error returns of src/model/*.c
one by one (the ids say which); the models they start from, and variants that must still be
accepted, run cleanly. Then: the fuzzer's committed seeds (fuzz/corpus-model) are what
make_model_seeds.py writes and get their verdicts, and seeded random mutations of a model's
metadata exit 0 or 1, never with a sanitizer report.
"""
from __future__ import annotations

import math
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import make_model_seeds as mms
from ggufcraft import BOOL, F16, F32, F32_V, I32, STRING, U32, U64
from make_model_seeds import Model, gemma2, gemma3, llama, phi3, qwen3

TIME_LIMIT = 5.0  # seconds per run, sanitizer build included
ARCHS = {"llama": llama, "gemma3": gemma3, "qwen3": qwen3, "gemma2": gemma2, "phi3": phi3}
BINARIES = ["release", "san"]


# ---- case builders ---------------------------------------------------------------------------
def no_key_length(m: Model) -> Model:
    """gemma3 and qwen3 models here carry attention.key_length; some cases need the derived head
    size."""
    return m.drop(".attention.key_length", ".attention.value_length") if m.arch in ("gemma3", "qwen3") else m


def phi3_split() -> Model:
    """A phi3 model with separate q, k and v projections instead of attn_qkv (zero weights)."""
    return (phi3().drop("blk.0.attn_qkv.weight").tensor("blk.0.attn_q.weight", ne=[8, 8])
            .tensor("blk.0.attn_k.weight", ne=[8, 4]).tensor("blk.0.attn_v.weight", ne=[8, 4]))


def f32s(*v: float) -> bytes:
    return struct.pack(f"<{len(v)}f", *v)


# The k projection (phi3: the fused q/k/v) with its rows and columns swapped, and the FFN's up
# projection's shape (phi3: gate and up fused), of the one-layer base models.
K_TRANSPOSED = {A: ("blk.0.attn_k.weight", [4, 8], "[8 x 4]") for A in ARCHS}
K_TRANSPOSED["phi3"] = ("blk.0.attn_qkv.weight", [16, 8], "[8 x 16]")
UP_SHAPE = {A: "[8 x 8]" for A in ARCHS}
UP_SHAPE["phi3"] = "[8 x 16]"


def misaligned(arch: str) -> bytes:
    """general.alignment 1 and a small tensor first, so token_embd.weight's F32 data starts
    2 bytes off a multiple of 4."""
    m = ARCHS[arch]()
    data_start = _with_pad(m, 1).gguf().set_alignment(1).build()[1].data_start
    n = 1 if data_start % 4 == 0 else 2  # F16 elements of the pad: token_embd at data_start + 2n
    assert (data_start + 2 * n) % 4 != 0
    return _with_pad(m, n).gguf().set_alignment(1).build()[0]


def _with_pad(m: Model, n: int) -> Model:
    m = m.copy()
    m.tensors = {"pad": dict(ne=[n], ttype=F16, data=bytes(2 * n)), **m.tensors}
    return m


def required_tensors(arch: str) -> list[str]:
    """Every tensor of the one-layer base model, all of which the architecture requires."""
    return list(ARCHS[arch]().tensors)


def moe(arch: str = "llama", n_expert: int = 4, n_used: int = 2, n_ff_exp: int | None = None, **kw) -> Model:
    """A model whose layers have mixture-of-experts FFNs in place of the dense one: llama with
    experts (Mixtral-style: experts of feed_forward_length rows) or qwen3moe (experts of
    expert_feed_forward_length, else feed_forward_length / expert_used_count; q/k norms)."""
    m = Model(arch, **kw)
    key = lambda k: m.kvs[f"{arch}.{k}"][1]  # noqa: E731
    d, n_ff, n_layer, hd = key("embedding_length"), key("feed_forward_length"), key("block_count"), \
        kw.get("head_dim") or key("embedding_length") // key("attention.head_count")
    m.kv(".expert_count", U32, n_expert).kv(".expert_used_count", U32, n_used)
    if n_ff_exp:
        m.kv(".expert_feed_forward_length", U32, n_ff_exp)
    f = n_ff if arch == "llama" else n_ff_exp or n_ff // n_used
    rng = np.random.default_rng(7)
    for il in range(n_layer):
        p = f"blk.{il}."
        m.drop(p + "ffn_gate.weight", p + "ffn_up.weight", p + "ffn_down.weight")
        for name, ne, offset in [("ffn_gate_inp.weight", [d, n_expert], 0.0), ("ffn_gate_exps.weight", [d, f, n_expert], 0.0),
                                 ("ffn_up_exps.weight", [d, f, n_expert], 0.0), ("ffn_down_exps.weight", [f, d, n_expert], 0.0)] + \
                ([("attn_q_norm.weight", [hd], 1.0), ("attn_k_norm.weight", [hd], 1.0)] if arch == "qwen3moe" else []):
            m.tensor(p + name, ne=ne, ttype=F32, data=mms._weights(rng, ne, F32, offset))
    return m


# (id, bytes-producing function, key words the message must contain)
CASES: list[tuple[str, object, list[str]]] = [
    # model.c: plumb__model_from_gguf
    ("no-architecture", lambda: llama().drop("general.architecture").build(), ["no general.architecture string"]),
    ("architecture-not-string", lambda: llama().kv("general.architecture", U32, 1).build(),
     ["no general.architecture string"]),
    ("unsupported-architecture", lambda: llama().kv("general.architecture", STRING, "mamba").build(),
     ["architecture 'mamba' is not supported", "(supported: llama, gemma3, qwen2, qwen3, gemma2, phi3, qwen3moe)"]),
    ("vocab-model-missing", lambda: llama().drop("tokenizer.ggml.model").build(),
     ["vocab: tokenizer.ggml.model is missing"]),
    ("vocab-scores-short", lambda: gemma3().kv("tokenizer.ggml.scores", 9, [0.0] * 3, F32_V).build(),
     ["tokenizer.ggml.scores has 3 entries for 16 tokens"]),
    # misaligned F32 weights (plumb__model_tensor)
    ("llama-f32-misaligned", lambda: misaligned("llama"),
     ["tensor 'token_embd.weight'", "F32 data is not 4-byte aligned", "general.alignment 1"]),
    ("gemma3-f32-misaligned", lambda: misaligned("gemma3"),
     ["tensor 'token_embd.weight'", "F32 data is not 4-byte aligned"]),
]

for A, make in ARCHS.items():
    CASES += [
        # plumb__model_u32 / plumb__model_f32: missing, wrong type, out of range, not finite
        *[(f"{A}-missing-key-{k}", (lambda make=make, k=k: make().drop("." + k).build()),
           [f"missing key '{A}.{k}'", f"(architecture {A})"])
          for k in ["embedding_length", "block_count", "feed_forward_length", "attention.head_count"]],
        (f"{A}-block-count-string", lambda make=make: make().kv(".block_count", STRING, "1").build(),
         [f"key '{A}.block_count' is a string, not a number"]),
        (f"{A}-head-count-bool", lambda make=make: make().kv(".attention.head_count", BOOL, True).build(),
         [f"key '{A}.attention.head_count' holds a bool"]),
        (f"{A}-head-count-negative", lambda make=make: make().kv(".attention.head_count", I32, -2).build(),
         [f"key '{A}.attention.head_count'", "-2 is negative"]),
        (f"{A}-embedding-length-over-int32", lambda make=make: make().kv(".embedding_length", U64, 2**31).build(),
         [f"{A}.embedding_length = 2147483648 is out of range"]),
        (f"{A}-epsilon-string", lambda make=make: make().kv(".attention.layer_norm_rms_epsilon", STRING, "1e-5").build(),
         [f"key '{A}.attention.layer_norm_rms_epsilon' is a string, not a number"]),
        (f"{A}-epsilon-nan", lambda make=make: make().kv(".attention.layer_norm_rms_epsilon", F32_V, math.nan).build(),
         [f"{A}.attention.layer_norm_rms_epsilon is not a finite number"]),
        (f"{A}-rope-base-inf", lambda make=make: make().kv(".rope.freq_base", F32_V, math.inf).build(),
         [f"{A}.rope.freq_base is not a finite number"]),
        # plumb__model_common_hparams: each count and value checked, naming its key
        (f"{A}-context-length-0", lambda make=make: make().kv(".context_length", U32, 0).build(),
         [f"{A}.context_length is 0, must be positive"]),
        (f"{A}-embedding-length-0", lambda make=make: make().kv(".embedding_length", U32, 0).build(),
         [f"{A}.embedding_length is 0, must be positive"]),
        (f"{A}-block-count-0", lambda make=make: make().kv(".block_count", U32, 0).build(),
         [f"{A}.block_count is 0, must be 1 to 512"]),
        (f"{A}-block-count-513", lambda make=make: make().kv(".block_count", U32, 513).build(),
         [f"{A}.block_count is 513, must be 1 to 512"]),
        (f"{A}-feed-forward-length-0", lambda make=make: make().kv(".feed_forward_length", U32, 0).build(),
         [f"{A}.feed_forward_length is 0, must be positive"]),
        (f"{A}-head-count-0", lambda make=make: make().kv(".attention.head_count", U32, 0).build(),
         [f"{A}.attention.head_count is 0, must be positive"]),
        (f"{A}-head-count-kv-0", lambda make=make: make().kv(".attention.head_count_kv", U32, 0).build(),
         [f"{A}.attention.head_count_kv is 0, must divide attention.head_count (2)"]),
        (f"{A}-head-count-kv-not-dividing", lambda make=make: make().kv(".attention.head_count_kv", U32, 3).build(),
         [f"{A}.attention.head_count_kv is 3, must divide attention.head_count (2)"]),
        (f"{A}-epsilon-0", lambda make=make: make().kv(".attention.layer_norm_rms_epsilon", F32_V, 0.0).build(),
         [f"{A}.attention.layer_norm_rms_epsilon is 0, must be positive"]),
        (f"{A}-epsilon-negative", lambda make=make: make().kv(".attention.layer_norm_rms_epsilon", F32_V, -1.0).build(),
         [f"{A}.attention.layer_norm_rms_epsilon is -1, must be positive"]),
        (f"{A}-rope-base-0", lambda make=make: make().kv(".rope.freq_base", F32_V, 0.0).build(),
         [f"{A}.rope.freq_base is 0, must be positive"]),
        (f"{A}-rope-base-negative", lambda make=make: make().kv(".rope.freq_base", F32_V, -10000.0).build(),
         [f"{A}.rope.freq_base is -10000, must be positive"]),
        (f"{A}-heads-do-not-divide-embedding",
         lambda make=make: no_key_length(make()).kv(".attention.head_count", U32, 3).build(),
         [f"{A}.embedding_length is 8, not a multiple of attention.head_count (3)", "key_length is absent"]),
        (f"{A}-derived-head-size-odd",
         lambda make=make: no_key_length(make()).kv(".attention.head_count", U32, 8).build(),
         [f"head size 1 ({A}.embedding_length / attention.head_count) is odd"]),
        (f"{A}-key-length-0", lambda make=make: make().kv(".attention.key_length", U32, 0).build(),
         [f"{A}.attention.key_length is 0, must be positive and even"]),
        (f"{A}-key-length-odd", lambda make=make: make().kv(".attention.key_length", U32, 3).build(),
         [f"{A}.attention.key_length is 3, must be positive and even"]),
        (f"{A}-value-length-differs", lambda make=make: make().kv(".attention.value_length", U32, 6).build(),
         [f"{A}.attention.value_length is 6, must equal the head size (4)"]),
        # plumb__model_rope_scaling
        (f"{A}-rope-scaling-type-u32", lambda make=make: make().kv(".rope.scaling.type", U32, 1).build(),
         [f"key '{A}.rope.scaling.type' is a u32, not a string"]),
        (f"{A}-rope-scaling-yarn", lambda make=make: make().kv(".rope.scaling.type", STRING, "yarn").build(),
         [f"{A}.rope.scaling.type 'yarn' is not supported (linear is)"]),
        (f"{A}-rope-scaling-factor-negative",
         lambda make=make: make().kv(".rope.scaling.factor", F32_V, -2.0).build(),
         [f"{A}.rope.scaling.factor is -2, must be positive (or 0: none)"]),
        (f"{A}-rope-scaling-factor-denormal",
         lambda make=make: make().kv(".rope.scaling.factor", F32_V, 1e-45).build(),
         [f"{A}.rope.scaling.factor is 1.4", "must be positive (or 0: none)"]),
        (f"{A}-rope-scaling-factor-string",
         lambda make=make: make().kv(".rope.scaling.factor", STRING, "8").build(),
         [f"key '{A}.rope.scaling.factor' is a string, not a number"]),
        # plumb__model_embeddings
        (f"{A}-embedding-rows-not-vocab", lambda make=make: make().tensor("token_embd.weight", ne=[8, 15]).build(),
         ["tensor 'token_embd.weight' has 15 rows but the vocabulary 16 tokens"]),
        (f"{A}-embedding-width", lambda make=make: make().tensor("token_embd.weight", ne=[6, 16]).build(),
         ["tensor 'token_embd.weight' has shape [6 x 16], expected [8 x *]"]),
        (f"{A}-output-rows", lambda make=make: make(tied=False).tensor("output.weight", ne=[8, 15]).build(),
         ["tensor 'output.weight' has shape [8 x 15], expected [8 x 16]"]),
        (f"{A}-output-norm-f16", lambda make=make: make().tensor("output_norm.weight", ttype=F16).build(),
         ["tensor 'output_norm.weight' has type F16, expected F32"]),
        # plumb__model_tensor / plumb__model_vector on the layers
        *[(f"{A}-missing-{name}", (lambda make=make, name=name: make().drop(name).build()),
           [f"missing tensor '{name}'", f"(architecture {A})"]) for name in required_tensors(A)],
        (f"{A}-missing-second-layer", lambda make=make: make().kv(".block_count", U32, 2).build(),
         ["missing tensor 'blk.1.attn_norm.weight'"]),
        (f"{A}-k-transposed", lambda make=make, k=K_TRANSPOSED[A]: make().tensor(k[0], ne=k[1]).build(),
         [f"tensor '{K_TRANSPOSED[A][0]}' has shape [{K_TRANSPOSED[A][1][0]} x {K_TRANSPOSED[A][1][1]}], "
          f"expected {K_TRANSPOSED[A][2]}"]),
        (f"{A}-up-extra-dim", lambda make=make: make().tensor("blk.0.ffn_up.weight", ne=[8, 8, 2]).build(),
         [f"tensor 'blk.0.ffn_up.weight' has shape [8 x 8 x 2], expected {UP_SHAPE[A]}"]),
        (f"{A}-down-flat", lambda make=make: make().tensor("blk.0.ffn_down.weight", ne=[64]).build(),
         ["tensor 'blk.0.ffn_down.weight' has shape [64], expected [8 x 8]"]),
        (f"{A}-attn-norm-length", lambda make=make: make().tensor("blk.0.attn_norm.weight", ne=[7]).build(),
         ["tensor 'blk.0.attn_norm.weight' has shape [7], expected [8]"]),
        (f"{A}-ffn-norm-f16", lambda make=make: make().tensor("blk.0.ffn_norm.weight", ttype=F16).build(),
         ["tensor 'blk.0.ffn_norm.weight' has type F16, expected F32"]),
    ]

CASES += [
    # llama.c: rope dimensions, biases, rope_freqs
    ("llama-rope-dims-0", lambda: llama().kv(".rope.dimension_count", U32, 0).build(),
     ["llama.rope.dimension_count is 0, must be even and 2 to the head size (4)"]),
    ("llama-rope-dims-odd", lambda: llama().kv(".rope.dimension_count", U32, 3).build(),
     ["llama.rope.dimension_count is 3, must be even"]),
    ("llama-rope-dims-over-head", lambda: llama().kv(".rope.dimension_count", U32, 6).build(),
     ["llama.rope.dimension_count is 6", "head size (4)"]),
    ("llama-bias-length", lambda: llama(biases=True).tensor("blk.0.attn_k.bias", ne=[8]).build(),
     ["tensor 'blk.0.attn_k.bias' has shape [8], expected [4]"]),
    ("llama-bias-f16", lambda: llama(biases=True).tensor("blk.0.attn_output.bias", ttype=F16).build(),
     ["tensor 'blk.0.attn_output.bias' has type F16, expected F32"]),
    ("llama-rope-freqs-length", lambda: llama(rope_freqs=True).tensor("rope_freqs.weight", ne=[4]).build(),
     ["tensor 'rope_freqs.weight' has shape [4], expected [2]"]),
    ("llama-rope-freqs-f16", lambda: llama(rope_freqs=True).tensor("rope_freqs.weight", ttype=F16).build(),
     ["tensor 'rope_freqs.weight' has type F16, expected F32"]),
    # gemma3.c: sliding window, soft-cap, Q/K and post norms
    ("gemma3-sliding-window-string", lambda: gemma3().kv(".attention.sliding_window", STRING, "512").build(),
     ["key 'gemma3.attention.sliding_window' is a string, not a number"]),
    ("gemma3-softcap-negative", lambda: gemma3().kv(".final_logit_softcapping", F32_V, -30.0).build(),
     ["gemma3.final_logit_softcapping is -30, must be positive (or 0: none)"]),
    ("gemma3-softcap-inf", lambda: gemma3().kv(".final_logit_softcapping", F32_V, math.inf).build(),
     ["gemma3.final_logit_softcapping is not a finite number"]),
    ("gemma3-q-norm-length", lambda: gemma3().tensor("blk.0.attn_q_norm.weight", ne=[8]).build(),
     ["tensor 'blk.0.attn_q_norm.weight' has shape [8], expected [4]"]),
    ("gemma3-post-ffw-norm-f16", lambda: gemma3().tensor("blk.0.post_ffw_norm.weight", ttype=F16).build(),
     ["tensor 'blk.0.post_ffw_norm.weight' has type F16, expected F32"]),
]

CASES += [
    # moe.c: expert counts (plumb__model_moe_hparams) and the router and expert tensors that
    # must fit them (plumb__model_moe_layer); qwen3moe.c
    ("llama-moe-used-over-count", lambda: moe().kv(".expert_used_count", U32, 5).build(),
     ["llama.expert_used_count is 5, must be 1 to expert_count (4)"]),
    ("llama-moe-used-0", lambda: moe().kv(".expert_used_count", U32, 0).build(),
     ["llama.expert_used_count is 0, must be 1 to expert_count (4)"]),
    ("llama-moe-used-missing", lambda: moe().drop(".expert_used_count").build(),
     ["missing key 'llama.expert_used_count'"]),
    ("llama-moe-count-over-tensors", lambda: moe().kv(".expert_count", U32, 8).build(),
     ["tensor 'blk.0.ffn_gate_inp.weight' holds 4 experts but llama.expert_count is 8"]),
    ("llama-moe-count-under-tensors", lambda: moe().kv(".expert_count", U32, 3).build(),
     ["tensor 'blk.0.ffn_gate_inp.weight' holds 4 experts but llama.expert_count is 3"]),
    ("llama-moe-count-over-cap", lambda: moe().kv(".expert_count", U32, 513).build(),
     ["llama.expert_count is 513, must be at most 512"]),
    ("llama-used-without-experts", lambda: llama().kv(".expert_used_count", U32, 2).build(),
     ["llama.expert_used_count is 2, must be 0 without experts (expert_count is 0)"]),
    ("llama-experts-without-tensors", lambda: llama().kv(".expert_count", U32, 4).kv(".expert_used_count", U32, 2).build(),
     ["missing tensor 'blk.0.ffn_gate_inp.weight'"]),
    ("llama-moe-up-exps-experts", lambda: moe().tensor("blk.0.ffn_up_exps.weight", ne=[8, 8, 3]).build(),
     ["tensor 'blk.0.ffn_up_exps.weight' holds 3 experts but llama.expert_count is 4"]),
    ("llama-moe-down-exps-size", lambda: moe().tensor("blk.0.ffn_down_exps.weight", ne=[6, 8, 4]).build(),
     ["tensor 'blk.0.ffn_down_exps.weight' has experts of size 6, but the expert size is 8 (llama.feed_forward_length)"]),
    ("llama-moe-gate-exps-flat", lambda: moe().tensor("blk.0.ffn_gate_exps.weight", ne=[8, 32]).build(),
     ["tensor 'blk.0.ffn_gate_exps.weight' has shape [8 x 32], expected [8 x 8 x 4]"]),
    ("llama-moe-missing-down-exps", lambda: moe().drop("blk.0.ffn_down_exps.weight").build(),
     ["missing tensor 'blk.0.ffn_down_exps.weight'"]),
    ("qwen3moe-missing-expert-count", lambda: moe("qwen3moe").drop(".expert_count").build(),
     ["missing key 'qwen3moe.expert_count'"]),
    ("qwen3moe-expert-count-0", lambda: moe("qwen3moe").kv(".expert_count", U32, 0).build(),
     ["qwen3moe.expert_count is 0, must be positive (qwen3moe is a mixture of experts)"]),
    # the used count sets the expert size when expert_feed_forward_length is absent
    ("qwen3moe-used-does-not-fit-experts", lambda: moe("qwen3moe").kv(".expert_used_count", U32, 4).build(),
     ["tensor 'blk.0.ffn_gate_exps.weight' has experts of size 4, but the expert size is 2",
      "(qwen3moe.feed_forward_length 8 / expert_used_count 4)"]),
    ("qwen3moe-expert-ff-key-does-not-fit", lambda: moe("qwen3moe", n_ff_exp=6).kv(".expert_feed_forward_length", U32, 5).build(),
     ["tensor 'blk.0.ffn_gate_exps.weight' has experts of size 6, but the expert size is 5",
      "(qwen3moe.expert_feed_forward_length)"]),
    ("qwen3moe-expert-size-0", lambda: moe("qwen3moe").kv(".feed_forward_length", U32, 1).build(),
     ["the expert size is 0: qwen3moe.expert_feed_forward_length is absent (or 0) and feed_forward_length 1 / "
      "expert_used_count 2 is 0"]),
    ("qwen3moe-missing-k-norm", lambda: moe("qwen3moe").drop("blk.0.attn_k_norm.weight").build(),
     ["missing tensor 'blk.0.attn_k_norm.weight'"]),
    ("qwen3moe-rope-dims-not-head", lambda: moe("qwen3moe").kv(".rope.dimension_count", U32, 2).build(),
     ["qwen3moe.rope.dimension_count is 2, must equal the head size (4)"]),
]

CASES += [
    # qwen3.c: the Q/K norms, RoPE over the whole head, a head size that does not fit the tensors
    ("qwen3-rope-dims-not-head", lambda: qwen3().kv(".rope.dimension_count", U32, 2).build(),
     ["qwen3.rope.dimension_count is 2, must equal the head size (4)"]),
    ("qwen3-q-norm-length", lambda: qwen3().tensor("blk.0.attn_q_norm.weight", ne=[8]).build(),
     ["tensor 'blk.0.attn_q_norm.weight' has shape [8], expected [4]"]),
    ("qwen3-k-norm-f16", lambda: qwen3().tensor("blk.0.attn_k_norm.weight", ttype=F16).build(),
     ["tensor 'blk.0.attn_k_norm.weight' has type F16, expected F32"]),
    ("qwen3-key-length-does-not-fit",
     lambda: qwen3().kv(".attention.key_length", U32, 8).kv(".attention.value_length", U32, 8).build(),
     ["tensor 'blk.0.attn_q.weight' has shape [8 x 8], expected [8 x 16]"]),
    ("qwen3-key-length-norms-do-not-fit",
     lambda: qwen3(head_dim=8).tensor("blk.0.attn_q_norm.weight", ne=[4]).build(),
     ["tensor 'blk.0.attn_q_norm.weight' has shape [4], expected [8]"]),
    # gemma2.c: the soft-caps, the window, the post norms
    ("gemma2-attn-softcap-0", lambda: gemma2().kv(".attn_logit_softcapping", F32_V, 0.0).build(),
     ["gemma2.attn_logit_softcapping is 0, must be positive"]),
    ("gemma2-attn-softcap-nan", lambda: gemma2().kv(".attn_logit_softcapping", F32_V, math.nan).build(),
     ["gemma2.attn_logit_softcapping is not a finite number"]),
    ("gemma2-final-softcap-negative", lambda: gemma2().kv(".final_logit_softcapping", F32_V, -30.0).build(),
     ["gemma2.final_logit_softcapping is -30, must be positive"]),
    ("gemma2-sliding-window-string", lambda: gemma2().kv(".attention.sliding_window", STRING, "4096").build(),
     ["key 'gemma2.attention.sliding_window' is a string, not a number"]),
    ("gemma2-post-attention-norm-length", lambda: gemma2().tensor("blk.0.post_attention_norm.weight", ne=[7]).build(),
     ["tensor 'blk.0.post_attention_norm.weight' has shape [7], expected [8]"]),
    ("gemma2-27b-scale-divides-by-zero",
     lambda: gemma2().kv(".block_count", U32, 46).kv(".attention.head_count", U32, 16)
     .kv(".attention.key_length", U32, 4).kv(".attention.value_length", U32, 4).build(),
     ["gemma2.embedding_length is 8, must be at least attention.head_count"]),
    ("gemma2-key-length-does-not-fit",
     lambda: gemma2().kv(".attention.key_length", U32, 2).kv(".attention.value_length", U32, 2).build(),
     ["tensor 'blk.0.attn_q.weight' has shape [8 x 8], expected [8 x 4]"]),
    # phi3.c: fused projections, partial RoPE, LongRoPE factors and attention factor
    ("phi3-rope-dims-0", lambda: phi3().kv(".rope.dimension_count", U32, 0).build(),
     ["phi3.rope.dimension_count is 0, must be even and 2 to the head size (4)"]),
    ("phi3-rope-dims-over-head", lambda: phi3().kv(".rope.dimension_count", U32, 6).build(),
     ["phi3.rope.dimension_count is 6", "head size (4)"]),
    ("phi3-attn-factor-0", lambda: phi3().kv(".rope.scaling.attn_factor", F32_V, 0.0).build(),
     ["phi3.rope.scaling.attn_factor is 0, must be positive"]),
    ("phi3-attn-factor-inf", lambda: phi3().kv(".rope.scaling.attn_factor", F32_V, math.inf).build(),
     ["phi3.rope.scaling.attn_factor is not a finite number"]),
    ("phi3-original-context-0", lambda: phi3().kv(".rope.scaling.original_context_length", U32, 0).build(),
     ["phi3.rope.scaling.original_context_length is 0, must be positive"]),
    ("phi3-sliding-window-string", lambda: phi3().kv(".attention.sliding_window", STRING, "2047").build(),
     ["key 'phi3.attention.sliding_window' is a string, not a number"]),
    ("phi3-rope-factors-length", lambda: phi3().tensor("rope_factors_long.weight", ne=[4], data=f32s(1, 2, 3, 4)).build(),
     ["tensor 'rope_factors_long.weight' has shape [4], expected [2]"]),
    ("phi3-rope-factors-f16", lambda: phi3().tensor("rope_factors_short.weight", ne=[2], ttype=F16).build(),
     ["tensor 'rope_factors_short.weight' has type F16, expected F32"]),
    ("phi3-partial-rope-factors-length",
     lambda: phi3().kv(".rope.dimension_count", U32, 2).tensor("rope_factors_long.weight", ne=[2], data=f32s(1, 2)).build(),
     ["tensor 'rope_factors_long.weight' has shape [2], expected [1]"]),
    ("phi3-qkv-rows", lambda: phi3().tensor("blk.0.attn_qkv.weight", ne=[8, 12]).build(),
     ["tensor 'blk.0.attn_qkv.weight' has shape [8 x 12], expected [8 x 16]"]),
    ("phi3-up-not-fused", lambda: phi3().tensor("blk.0.ffn_up.weight", ne=[8, 8]).build(),
     ["tensor 'blk.0.ffn_up.weight' has shape [8 x 8], expected [8 x 16]"]),
    ("phi3-key-length-does-not-fit",
     lambda: phi3().kv(".attention.key_length", U32, 8).kv(".attention.value_length", U32, 8).build(),
     ["tensor 'blk.0.attn_qkv.weight' has shape [8 x 16], expected [8 x 32]"]),
    ("phi3-split-missing-v", lambda: phi3_split().drop("blk.0.attn_v.weight").build(),
     ["missing tensor 'blk.0.attn_v.weight'", "(architecture phi3)"]),
    ("phi3-split-q-shape", lambda: phi3_split().tensor("blk.0.attn_q.weight", ne=[8, 4]).build(),
     ["tensor 'blk.0.attn_q.weight' has shape [8 x 4], expected [8 x 8]"]),
]

# Models that differ from the bases in ways the loader must accept.
ACCEPTED = [
    ("llama-base", lambda: llama().build()),
    ("gemma3-base", lambda: gemma3().build()),
    ("llama-no-optional-keys", lambda: llama(n_head_kv=2).drop(".context_length", ".attention.head_count_kv",
                                                    ".attention.layer_norm_rms_epsilon", ".rope.freq_base",
                                                    ".rope.dimension_count").build()),
    ("gemma3-no-optional-keys", lambda: gemma3().drop(".context_length", ".attention.layer_norm_rms_epsilon",
                                                      ".rope.freq_base", ".attention.value_length").build()),
    # the head size given, the embedding need not split evenly over the heads
    ("llama-key-length-not-embd-over-heads", lambda: llama(n_embd=10, n_head=4, n_head_kv=2, head_dim=4).build()),
    ("gemma3-key-length-not-embd-over-heads", lambda: gemma3(n_embd=10, n_head=4, n_head_kv=2, head_dim=4).build()),
    ("llama-rope-scaling-none-factor-0", lambda: llama().kv(".rope.scaling.type", STRING, "none")
     .kv(".rope.scaling.factor", F32_V, 0.0).build()),
    ("gemma3-rope-scaling-linear", lambda: gemma3(rope_scaling=8.0).build()),
    ("gemma3-softcap-0", lambda: gemma3().kv(".final_logit_softcapping", F32_V, 0.0).build()),
    ("llama-partial-rope", lambda: llama(rope_freqs=True).kv(".rope.dimension_count", U32, 2)
     .tensor("rope_freqs.weight", ne=[1], data=bytes.fromhex("0000803f")).build()),
    ("llama-f16-matrices-biases-head", lambda: llama(mat_type=F16, biases=True, tied=False).build()),
    ("gemma3-two-layers-swa", lambda: gemma3(n_layer=2, n_swa=2).build()),
    ("qwen3-base", lambda: qwen3().build()),
    ("gemma2-base", lambda: gemma2().build()),
    ("phi3-base", lambda: phi3().build()),
    ("qwen3-key-length-not-embd-over-heads", lambda: qwen3(n_embd=8, n_head=2, n_head_kv=1, head_dim=8).build()),
    ("gemma2-no-optional-keys", lambda: gemma2().drop(".context_length", ".attention.layer_norm_rms_epsilon",
                                                      ".rope.freq_base").build()),
    ("gemma2-two-layers-swa-softcaps", lambda: gemma2(n_layer=2, n_swa=2, softcap=20.0)
     .kv(".attn_logit_softcapping", F32_V, 10.0).build()),
    ("phi3-separate-qkv", lambda: phi3_split().build()),
    ("phi3-partial-rope-long-factors", lambda: phi3().kv(".rope.dimension_count", U32, 2)
     .kv(".rope.scaling.attn_factor", F32_V, 1.19).kv(".rope.scaling.original_context_length", U32, 16)
     .tensor("rope_factors_long.weight", ne=[1], data=f32s(4.0))
     .tensor("rope_factors_short.weight", ne=[1], data=f32s(1.5)).build()),
    ("phi3-sliding-window-ignored", lambda: phi3().kv(".attention.sliding_window", U32, 2).build()),
]
ACCEPTED += [
    ("llama-moe", lambda: moe().build()),
    ("llama-moe-all-used", lambda: moe(n_expert=3, n_used=3).build()),
    ("qwen3moe", lambda: moe("qwen3moe").build()),
    ("qwen3moe-expert-ff-key", lambda: moe("qwen3moe", n_ff_exp=6, n_layer=2, head_dim=6).build()),
]


# ---- running ---------------------------------------------------------------------------------
def write_case(directory: Path, name: str, raw: bytes) -> Path:
    p = directory / f"{name}.gguf"
    p.write_bytes(raw)
    return p


def binary(request, which: str) -> Path:
    return request.getfixturevalue("plumb_bin" if which == "release" else "plumb_san_bin")


def run_model(run, exe: Path, path: Path, timeout: float = 30):
    return run(exe, "run", "-m", path, "-p", "x", "-n", "1", "--temp", "0", "-t", "1", timeout=timeout)


def check_error_run(r, path: Path, needles=()) -> None:
    """The load failed cleanly: status 1, one stderr line about the file, no sanitizer report."""
    assert not r.sanitizer_report, r.describe()
    assert r.rc == 1, r.describe()
    assert len(r.stderr_lines) == 1, r.describe()
    assert r.stderr_lines[0].startswith(f"plumb run: {path}: "), r.describe()
    for w in needles:
        assert w in r.stderr_lines[0], f"missing {w!r} in the message\n" + r.describe()


def test_matrix_is_large_enough():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 100


def test_every_case_is_its_own_file():
    """Cases that should differ do produce different files (guards against a builder edit
    that silently does nothing)."""
    blobs = [make() for _, make, _ in CASES]
    assert len(set(blobs)) == len(blobs)
    bases = {make().build() for make in ARCHS.values()}
    assert not bases & set(blobs)


@pytest.mark.parametrize("which", BINARIES)
@pytest.mark.parametrize("name,make,needles", CASES, ids=[c[0] for c in CASES])
def test_corrupt_model(request, run, gguf_dir, which, name, make, needles):
    path = write_case(gguf_dir, name, make())
    r = run_model(run, binary(request, which), path)
    assert r.seconds < TIME_LIMIT, f"took {r.seconds:.3f} s\n" + r.describe()
    check_error_run(r, path, needles)


@pytest.mark.parametrize("which", BINARIES)
@pytest.mark.parametrize("name,make", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_model_runs(request, run, gguf_dir, which, name, make):
    """The bases every case starts from load and generate, as do the legal variants."""
    path = write_case(gguf_dir, name, make())
    r = run_model(run, binary(request, which), path)
    assert r.rc == 0 and not r.sanitizer_report, r.describe()
    assert "plumb run:" not in r.stderr, r.describe()


# ---- the fuzzer's seeds ----------------------------------------------------------------------
CORPUS = mms.REPO / "fuzz" / "corpus-model"
SEEDS = mms.seeds()


def test_seed_corpus_is_up_to_date():
    on_disk = {p.name[len("seed-"):-len(".gguf")]: p.read_bytes() for p in CORPUS.glob("seed-*.gguf")}
    assert set(on_disk) == set(SEEDS), "run: .venv/bin/python tests/e2e/make_model_seeds.py"
    for name, raw in SEEDS.items():
        assert on_disk[name] == raw, f"seed-{name}.gguf is stale; rerun make_model_seeds.py"


def test_seed_sizes():
    assert len(SEEDS) >= 10
    assert all(len(raw) < mms.MAX_SEED < 8192 for raw in SEEDS.values())
    assert {"llama", "gemma3"} <= {n.split("-")[1] for n in SEEDS if n.startswith("ok-")}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_verdict(plumb_san_bin, run, gguf_dir, name):
    path = write_case(gguf_dir, f"seed-{name}", SEEDS[name])
    r = run_model(run, plumb_san_bin, path)
    if name.startswith("ok-"):
        assert r.rc == 0 and not r.sanitizer_report and "plumb run:" not in r.stderr, r.describe()
    else:
        check_error_run(r, path)


# ---- random mutations of the metadata --------------------------------------------------------
def test_random_metadata_mutations(plumb_san_bin, run, gguf_dir):
    """Seeded random byte mutations of the metadata and tensor infos of small models of every
    architecture: exit 0 or 1 (with one message line), never a sanitizer report. The weights'
    bytes are left alone: the loader does not scan weights, and NaN in them is the kernels'
    business."""
    rng = random.Random(20250612)
    bases = [(arch, make(n_layer=2).gguf().build()) for arch, make in ARCHS.items()]
    paths = []
    for i in range(240):
        arch, (raw, lay) = bases[i % len(bases)]
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(24, lay.kv_end)  # metadata only: types and shapes of tensors stay
            kind = rng.random()
            if kind < 0.5:
                b[at] ^= 1 << rng.randrange(8)
            elif kind < 0.8:
                b[at] = rng.choice([0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF])
            else:
                b[at] = rng.randrange(256)
        p = gguf_dir / f"mut-{arch}-{i:03d}.gguf"
        p.write_bytes(bytes(b))
        paths.append(p)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        runs = list(ex.map(lambda p: run_model(run, plumb_san_bin, p, timeout=60), paths))
    outcomes = {0: 0, 1: 0}
    for p, r in zip(paths, runs):
        assert not r.sanitizer_report, r.describe()
        assert r.rc in (0, 1), r.describe()
        outcomes[r.rc] += 1
        if r.rc == 1:  # a load error names the file; a context of 1 refuses the prompt
            assert len(r.stderr_lines) == 1 and r.stderr.startswith("plumb run: "), r.describe()
    assert outcomes[0] > 10 and outcomes[1] > 10, outcomes
