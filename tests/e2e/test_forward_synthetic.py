"""Forward passes of synthetic llama and gemma3 models (random weights written with gguf-py)
against the independent numpy forward pass in synth.py: what the real Gemma 3 model does not
exercise — untied heads, GQA ratios 1/2/4/8, rope_freqs, linear rope scaling, a BPE
vocabulary, sliding windows, logit soft-capping, quantized weights. Also checks that logits
do not depend on how a sequence is split into batches (batch invariance)."""
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
    "gemma3_swa_softcap": dict(arch="gemma3", n_layer=6, n_head=4, n_head_kv=1, head_dim=32, n_swa=4,
                               softcap=30.0),
    "gemma3_global_rope_scale": dict(arch="gemma3", n_layer=2, n_head=2, n_head_kv=2, rope_scale=4.0),
}


def _rel_err(got, ref):
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_numpy_reference(tmp_path, name):
    cfg = dict(CASES[name])
    arch = cfg.pop("arch")
    path = str(tmp_path / (name + ".gguf"))
    hp, W = synth.write_model(path, arch, seed=hash(name) % 1000, **cfg)
    ref = synth.forward(hp, W, np.array(TOKENS))
    m = plumbffi.Model(path, n_ctx=64)
    try:
        got = m.decode(TOKENS, hp["n_vocab"])
    finally:
        m.close()
    # F32/F16 weights: activations stay float; the KV cache is F16 (relative error ~1e-3)
    assert _rel_err(got, ref) < 4e-3, name
    assert (got.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.9


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0, QT.Q5_0, QT.Q4_K, QT.Q6_K])
def test_quantized_weights_match_numpy_reference(tmp_path, qtype):
    # K types need rows that are multiples of 256
    path = str(tmp_path / "q.gguf")
    hp, W = synth.write_model(path, "gemma3", n_embd=256, n_ff=512, n_head=2, n_head_kv=1, head_dim=64,
                              qtype=qtype, seed=3)
    ref = synth.forward(hp, W, np.array(TOKENS))
    m = plumbffi.Model(path, n_ctx=64)
    try:
        got = m.decode(TOKENS, hp["n_vocab"])
    finally:
        m.close()
    # activations are quantized to 8 bits per op: errors of about 1% of the logit range
    assert _rel_err(got, ref) < 3e-2, qtype.name


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
    with pytest.raises(plumbffi.PlumbError, match=r"architecture 'mamba' is not supported \(supported: llama, gemma3\)"):
        plumbffi.Model(path)


def test_missing_or_misshapen_tensor_is_named(tmp_path):
    path = str(tmp_path / "missing.gguf")
    synth.write_model(path, "gemma3", drop=("blk.1.attn_k_norm.weight",))
    with pytest.raises(plumbffi.PlumbError, match=r"missing tensor 'blk.1.attn_k_norm.weight' \(architecture gemma3\)"):
        plumbffi.Model(path)
