"""Forward passes of synthetic llama and gemma3 models (random weights written with gguf-py)
against the independent numpy forward pass in synth.py: what the real Gemma 3 model does not
exercise — untied heads, GQA ratios 1/2/4/8, rope_freqs, linear rope scaling, a BPE
vocabulary, sliding windows, logit soft-capping, quantized weights. Also checks that logits
do not depend on how a sequence is split into batches (batch invariance)."""
import math
import zlib

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import plumbffi
import synth

TOKENS = [2, 17, 203, 5, 99, 260, 33, 33, 150, 7, 281, 64, 12, 200]

CASES = {
    "llama_gqa1_tied": dict(arch="llama", n_head=4, n_head_kv=4),
    "llama_gqa2_untied": dict(arch="llama", n_head=4, n_head_kv=2, tied=False),
    "llama_gqa4_rope_freqs": dict(arch="llama", n_head=8, n_head_kv=2, n_embd=128, rope_freqs=True),
    "llama_gqa8_linear_rope": dict(arch="llama", n_head=8, n_head_kv=1, n_embd=128, rope_scale=2.0),
    "llama_bpe_vocab": dict(arch="llama", n_head=4, n_head_kv=2, bpe=True),
    "llama_f16": dict(arch="llama", n_head=4, n_head_kv=2, qtype=QT.F16),
    # embeddings as small as real llama models' (std ~0.02): the first attention norm's
    # epsilon (1e-5) is then a few percent of the mean square it is added to
    "llama_small_embd": dict(arch="llama", n_head=4, n_head_kv=2, tied=False, embd_scale=0.02),
    "gemma3_swa_softcap": dict(arch="gemma3", n_layer=6, n_head=4, n_head_kv=1, head_dim=32, n_swa=4,
                               softcap=30.0),
    "gemma3_global_rope_scale": dict(arch="gemma3", n_layer=2, n_head=2, n_head_kv=2, rope_scale=4.0),
}

QUANT_TYPES = [QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_K, QT.Q6_K]
# K types need rows that are multiples of 256
QUANT_MODEL = dict(arch="gemma3", n_embd=256, n_ff=512, n_head=2, n_head_kv=1, head_dim=64)

SEEDS_PER_CASE = 3


def _seeds(name):
    """Fixed seeds of a case (zlib.crc32 does not change between runs, unlike hash())."""
    return [zlib.crc32(("%s/%d" % (name, i)).encode()) for i in range(SEEDS_PER_CASE)]


# ---- error bounds -----------------------------------------------------------------------------
# synth.forward computes in float64 from exactly the weights plumb reads (F16 and quantized
# weights dequantized), so plumb's logits differ from it only where plumb rounds activations;
# everything else is F32 (a relative 2^-24 per operation: negligible here).
#
# 1. Attention. The KV cache is F16, the query is rounded to F16 for its dot products with
#    the keys, and the probabilities are rounded to F16 before they weight the values. An F16
#    rounding multiplies a value by (1 + e), |e| <= u = 2^-11.
#    - V: a head's output a = sum_j p_j v_j becomes sum_j p_j (1 + e_j) v_j; the e_j are
#      independent, so |da| <= u sqrt(sum_j p_j^2 |v_j|^2) ~ u |a| (the v_j are independent, so
#      |a|^2 ~ sum_j p_j^2 |v_j|^2): a relative u.
#    - P: the same form: a relative u.
#    - q and K: a score s_j = c q.k_j moves by c sum_i q_i k_ji (e_qi + e_kji), u s_scale for
#      each of q and K, where s_scale, the spread of the scores, is 1 here (q and k have
#      unit rms elements, c = 1/sqrt(head_dim)); then da = sum_j p_j ds_j (v_j - a): a relative
#      u each.
#    Independent, the four add in quadrature: 2u on the attention output (and on W_o a).
# 2. FFN. llama's SiLU is F32: no error. gemma3's GELU goes through an F16 table: its input and
#    its output are rounded, a relative sqrt(c^2 + 1) u, where c^2 = E[(g f'(g))^2] / E[f(g)^2] is
#    1.36 for GELU (1.45 for SiLU) over the gate's values g ~ N(0, 1).
# 3. Quantized weights. plumb quantizes each matmul's input to Q8_0 (blocks of 32 with a step
#    d = amax / 127 stored as F16) for Q4_0, Q5_0 and Q8_0 weights, or to Q8_K (blocks of 256,
#    d = amax / 127 in F32) for K weights. Rounding to the step moves an element by at most
#    d / 2: a relative A / 254 of the input's rms (plus u for Q8_0's F16 step), where A is
#    a block's rms amax over the input's rms: 2.39 (32) and 3.07 (256) for Gaussian inputs
#    (norm outputs, attention outputs), 4.04 (32) and 6.82 (256) for the down projection's
#    input, f(g) times the up projection's output (heavier tails; Monte Carlo over 2e6
#    values). The matmul's output, a random map of its input, carries the same relative error.
#    Per sublayer: q and k (through the scores, as above), v and o; gate (times c: 1.17 for
#    GELU, 1.20 for SiLU), up and down; and the output head's input.
# 4. Propagation. A sublayer's relative error enters the residual stream scaled by rho =
#    |sublayer output| / |residual|, and the residual's relative error passes through later
#    layers unchanged (a norm makes each sublayer depend only on its input's direction, and
#    adding nearly orthogonal vectors keeps |dx| / |x|). llama: rho <= 1. gemma3: the post-norms
#    give every sublayer output rms 1.005 (weights 1 + 0.1 N(0, 1)) against a residual of rms
#    at least the scaled embedding's, embd_scale sqrt(n_embd). The logits are linear in the
#    normalized final state: their error relative to the logits' spread is that state's
#    relative error. With independent sources in quadrature:
#        R = sqrt(head^2 + n_layer rho^2 (attn^2 + ffn^2))
#    Soft-capping only shrinks errors (its slope is at most 1) and barely changes the spread of
#    logits well inside the cap.
# Every rounding is taken at its largest (u, d / 2), not its rms (0.43 u, d / sqrt(12)): that
# factor (2.3 and 1.7) is the room for attention sharper than s_scale = 1, partial cancellation
# in sum_j p_j v_j, and the few hundred blocks a model samples. Measured over seeds 0-99 of
# every case, rms(err) / sigma is 0.17-0.59 R for llama (R = 1.38e-3), 0.28-0.46 R for gemma3
# (7.6e-4, 4.4e-4), 0.53-0.61 R for Q4_0/Q5_0/Q8_0 (1.07e-2), 0.51-0.66 R for Q4_K/Q6_K
# (1.40e-2), and the largest |err| at most 0.54 Z R sigma. What the checks catch, over the same
# seeds: llama's attention-norm epsilon x10 (llama_small_embd: 74-185 R) or x100 (every case,
# 1.49-3.5 R; llama_small_embd > 300 R), its attention scale x1.01 (2.6-8.3 R), gemma3's soft-cap
# x1.01 (1.25-1.75 R), a sliding window one position wider (> 200 R).
#
# Checks, with sigma = 1.4826 median|ref| (the logits' spread, robust to the one large logit
# of each row's own token that a tied head gives):
# - rms(err) <= R sigma;
# - every |err| <= Z R sigma, Z = 6: an error is a sum of many independent roundings, so
#   Gaussian, and 6 standard deviations are a 2e-9 chance per logit;
# - the same argmax in every row whose top-2 margin in the reference exceeds 2 Z R sigma.
U = 2.0 ** -11
Z = 6.0
_ACT_C2 = {"llama": 1.45, "gemma3": 1.36}           # c^2 of SiLU / GELU
_AMAX = {32: (2.39, 4.04), 256: (3.07, 6.82)}      # A: (Gaussian input, down projection input)
_K_TYPES = (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)


def _act_err(qtype, n, heavy=False):
    """Largest relative error of a matmul input of n elements for weights of type qtype."""
    if qtype in (QT.F32, QT.F16):
        return 0.0  # float weights dot F32 activations
    if qtype in _K_TYPES and n % 256 == 0:
        return _AMAX[256][heavy] / (2 * 127)
    # Q8_0 activations (also for K weights whose rows are not whole K blocks: synth writes Q8_0)
    return math.hypot(_AMAX[32][heavy] / (2 * 127), U)


def _error_bound(hp, qtype):
    """R above: the largest rms error of the logits over their spread, for weights of qtype."""
    E, H, hd, ff = hp["n_embd"], hp["n_head"], hp["hd"], hp["n_ff"]
    gemma = hp["arch"] == "gemma3"
    e_in = _act_err(qtype, E)
    attn2 = 4 * U ** 2 + 3 * e_in ** 2 + _act_err(qtype, H * hd) ** 2
    ffn2 = (_ACT_C2[hp["arch"]] + 1) * e_in ** 2 + _act_err(qtype, ff, heavy=True) ** 2
    if gemma:
        ffn2 += (_ACT_C2["gemma3"] + 1) * U ** 2
    rho = 1.005 / (hp["embd_scale"] * math.sqrt(E)) if gemma else 1.0
    return math.sqrt(e_in ** 2 + hp["n_layer"] * rho ** 2 * (attn2 + ffn2))


def _check(got, ref, bound, what):
    sigma = 1.4826 * float(np.median(np.abs(ref)))
    err = got - ref
    rms = float(np.sqrt(np.mean(err ** 2)))
    assert rms <= bound * sigma, "%s: rms error %.3g sigma > bound %.3g" % (what, rms / sigma, bound)
    worst = float(np.max(np.abs(err)))
    assert worst <= Z * bound * sigma, "%s: max error %.3g sigma > %g x bound %.3g" % (what, worst / sigma, Z, bound)
    top2 = np.sort(ref, axis=1)[:, -2:]
    sure = top2[:, 1] - top2[:, 0] > 2 * Z * bound * sigma
    assert sure.any(), what
    rows = np.flatnonzero(sure)
    bad = rows[got[rows].argmax(axis=1) != ref[rows].argmax(axis=1)]
    assert not bad.size, "%s: rows %s have another argmax than the reference" % (what, bad.tolist())


def _decode(path, hp):
    m = plumbffi.Model(path, n_ctx=64)
    try:
        return m.decode(TOKENS, hp["n_vocab"])
    finally:
        m.close()


def _params(cases):
    """(case, seed) pairs for parametrize, named case-0, case-1, ..."""
    return [pytest.param(c, s, id="%s-%d" % (getattr(c, "name", c), i)) for c in cases
            for i, s in enumerate(_seeds(getattr(c, "name", c)))]


@pytest.mark.parametrize("name,seed", _params(sorted(CASES)))
def test_logits_match_numpy_reference(tmp_path, name, seed):
    cfg = dict(CASES[name])
    arch = cfg.pop("arch")
    path = str(tmp_path / (name + ".gguf"))
    hp, W = synth.write_model(path, arch, seed=seed, **cfg)
    ref = synth.forward(hp, W, np.array(TOKENS))
    _check(_decode(path, hp), ref, _error_bound(hp, cfg.get("qtype", QT.F32)), "%s seed %d" % (name, seed))


@pytest.mark.parametrize("qtype,seed", _params(QUANT_TYPES))
def test_quantized_weights_match_numpy_reference(tmp_path, qtype, seed):
    cfg = dict(QUANT_MODEL)
    arch = cfg.pop("arch")
    path = str(tmp_path / "q.gguf")
    hp, W = synth.write_model(path, arch, qtype=qtype, seed=seed, **cfg)
    ref = synth.forward(hp, W, np.array(TOKENS))
    _check(_decode(path, hp), ref, _error_bound(hp, qtype), "%s seed %d" % (qtype.name, seed))


def test_batch_split_and_incremental_decode_are_bitwise_identical(tmp_path):
    path = str(tmp_path / "m.gguf")
    hp, _ = synth.write_model(path, "gemma3", n_layer=6, n_head=4, n_head_kv=2, head_dim=16, n_swa=3, seed=9)
    n_vocab = hp["n_vocab"]
    whole = plumbffi.Model(path, n_ctx=64, n_batch=512)
    split = plumbffi.Model(path, n_ctx=64, n_batch=3, n_threads=1)
    step = plumbffi.Model(path, n_ctx=64)
    try:
        a = whole.decode(TOKENS, n_vocab)
        b = split.decode(TOKENS, n_vocab)
        c = np.concatenate([step.decode([t], n_vocab) for t in TOKENS])
    finally:
        whole.close(), split.close(), step.close()
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.array_equal(a.view(np.uint32), c.view(np.uint32))


@pytest.mark.parametrize("threads", [2, 3])
def test_decode_with_threads_sharing_each_token_is_bitwise_identical(tmp_path, threads):
    """One token at a time, the threads share each token's attention: scores and exponentials
    split by blocks of 16 positions, values by output dimension. Spans of up to 200 positions
    (many blocks, uneven splits), a sliding window whose first position is not a multiple of
    16, and 3 query heads per KV head: the logits must be the batch's and one thread's, bit for
    bit."""
    path = str(tmp_path / "m.gguf")
    hp, _ = synth.write_model(path, "gemma3", n_layer=6, n_head=6, n_head_kv=2, head_dim=48, n_swa=37, seed=11)
    n_vocab = hp["n_vocab"]
    toks = [int(t) for t in np.random.default_rng(5).integers(3, n_vocab, 200)]
    whole = plumbffi.Model(path, n_ctx=256, n_batch=512, n_threads=threads)
    one = plumbffi.Model(path, n_ctx=256, n_threads=1)
    shared = plumbffi.Model(path, n_ctx=256, n_threads=threads)
    try:
        a = whole.decode(toks, n_vocab)
        b = np.concatenate([one.decode([t], n_vocab) for t in toks])
        c = np.concatenate([shared.decode([t], n_vocab) for t in toks])
    finally:
        whole.close(), one.close(), shared.close()
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert np.array_equal(a.view(np.uint32), c.view(np.uint32))


def test_sequences_are_independent(tmp_path):
    path = str(tmp_path / "m.gguf")
    hp, _ = synth.write_model(path, "llama", n_head=4, n_head_kv=2, seed=4)
    n_vocab = hp["n_vocab"]
    m = plumbffi.Model(path, n_ctx=32, n_seq=2)
    alone = plumbffi.Model(path, n_ctx=32)
    try:
        s0, s1 = TOKENS[:5], TOKENS[5:9]
        # interleave two sequences in one batch
        toks = [s0[0], s1[0], s0[1], s1[1], s0[2], s1[2], s0[3], s1[3], s0[4]]
        seq = [0, 1, 0, 1, 0, 1, 0, 1, 0]
        pos = [0, 0, 1, 1, 2, 2, 3, 3, 4]
        both = m.decode(toks, n_vocab, pos=pos, seq=seq)
        ref0 = alone.decode(s0, n_vocab)
    finally:
        m.close(), alone.close()
    assert np.array_equal(both[[0, 2, 4, 6, 8]].view(np.uint32), ref0.view(np.uint32))


def test_bad_batches_are_rejected(tmp_path):
    path = str(tmp_path / "m.gguf")
    hp, _ = synth.write_model(path, "llama", seed=5)
    m = plumbffi.Model(path, n_ctx=8)
    try:
        with pytest.raises(plumbffi.PlumbError, match="outside the vocabulary"):
            m.decode([hp["n_vocab"]], hp["n_vocab"])
        with pytest.raises(plumbffi.PlumbError, match="does not continue"):
            m.decode([1, 2], hp["n_vocab"], pos=[0, 5])
        with pytest.raises(plumbffi.PlumbError, match="sequence 3 does not exist"):
            m.decode([1], hp["n_vocab"], seq=[3])
        m.decode(list(range(5, 13)), hp["n_vocab"])  # fills all 8 positions
        with pytest.raises(plumbffi.PlumbError, match="context full"):
            m.decode([5], hp["n_vocab"])
    finally:
        m.close()


def test_missing_tensor_and_unknown_architecture(tmp_path):
    import gguf
    path = str(tmp_path / "x.gguf")
    w = gguf.GGUFWriter(path, "mamba")
    w.add_tensor("t", np.zeros(4, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(plumbffi.PlumbError, match=r"architecture 'mamba' is not supported \(supported: llama, gemma3, qwen2, qwen3, gemma2, phi3, qwen3moe\)"):
        plumbffi.Model(path)


def test_missing_or_misshapen_tensor_is_named(tmp_path):
    path = str(tmp_path / "missing.gguf")
    synth.write_model(path, "gemma3", drop=("blk.1.attn_k_norm.weight",))
    with pytest.raises(plumbffi.PlumbError, match=r"missing tensor 'blk.1.attn_k_norm.weight' \(architecture gemma3\)"):
        plumbffi.Model(path)
