"""Synthetic models for forward-pass tests: small llama and gemma3 GGUF files with random
weights written with gguf-py, and an independent numpy forward pass of both architectures
(written from the architecture description, sharing no code with plumb) that computes the
logits of every position of a token sequence from the dequantized weights."""
import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT


def _quantize(arr, qtype):
    """Returns (data, raw_dtype) for gguf-py's add_tensor, and the dequantized float32 array
    the reference uses (so both engines see exactly the same weights)."""
    arr = arr.astype(np.float32)
    if qtype == QT.F32:
        return arr, None, arr
    if qtype == QT.F16:
        h = arr.astype(np.float16)
        return h, None, h.astype(np.float32)
    try:
        q = gguf.quants.quantize(arr, qtype)
    except NotImplementedError:  # gguf-py has no K-type quantizers: use plumb's reference
        q = _plumb_quantize(arr, qtype)
    deq = gguf.quants.dequantize(q, qtype).reshape(arr.shape).astype(np.float32)
    return q, qtype, deq


def _plumb_quantize(arr, qtype):
    import ctypes
    import plumbffi
    L = plumbffi.lib()
    rows = arr.reshape(-1, arr.shape[-1])
    bs, bb = gguf.GGML_QUANT_SIZES[qtype]
    row_bytes = rows.shape[1] // bs * bb
    out = np.zeros((rows.shape[0], row_bytes), dtype=np.uint8)
    for i, r in enumerate(rows):
        r = np.ascontiguousarray(r, dtype=np.float32)
        st = L.plumb_quantize_row(int(qtype), r.ctypes.data_as(ctypes.c_void_p),
                                  out[i].ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(rows.shape[1]))
        assert st == 0
    return out.reshape(arr.shape[:-1] + (row_bytes,))


def _vocab(w, n_vocab, bpe=False):
    if bpe:
        # GPT-2 byte-level alphabet, two merges, two special tokens, fillers to n_vocab
        bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        cs, extra = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + extra)
                extra += 1
        alphabet = [chr(c) for _, c in sorted(zip(bs, cs))]
        toks = ["<|begin_of_text|>", "<|eot_id|>"] + alphabet + ["to", "tok"]
        toks += ["filler%d" % i for i in range(n_vocab - len(toks))]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(toks)
        w.add_token_types([3, 3] + [1] * (n_vocab - 2))
        w.add_token_merges(["t o", "to k"])
        w.add_bos_token_id(0)
        w.add_eos_token_id(1)
        return
    toks = ["<pad>", "<eos>", "<bos>", "<unk>"] + ["<0x%02X>" % b for b in range(256)]
    toks += ["\u2581w%d" % i for i in range(n_vocab - len(toks))]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * (n_vocab - 260))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)


def write_model(path, arch, *, n_vocab=300, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=96,
                head_dim=None, qtype=QT.F32, tied=True, rope_freqs=False, rope_scale=None,
                n_swa=0, softcap=None, bpe=False, embd_scale=0.5, seed=0, drop=()):
    """Writes a random-weight model and returns its hyperparameters and float weights.
    embd_scale is the standard deviation of the token embeddings: real llama models have
    small ones (~0.02), which makes the first attention norm's epsilon matter."""
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_head
    w = gguf.GGUFWriter(path, arch)
    hp = dict(arch=arch, n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
              n_head_kv=n_head_kv, n_ff=n_ff, hd=hd, eps=1e-6 if arch == "gemma3" else 1e-5,
              rope_base=10000.0 if arch == "llama" else 1e6, rope_scale=rope_scale,
              n_swa=n_swa, softcap=softcap, embd_scale=embd_scale)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(hp["eps"])
    w.add_rope_freq_base(hp["rope_base"])
    if arch == "gemma3" or head_dim:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if arch == "llama":
        w.add_rope_dimension_count(hd)
    if rope_scale:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope_scale)
    if arch == "gemma3" and n_swa:
        w.add_sliding_window(n_swa)
    if softcap:
        w.add_final_logit_softcapping(softcap)
    _vocab(w, n_vocab, bpe)

    weights = {}

    def add(name, shape, scale, qt=None, offset=0.0):
        # shape in gguf order (ne0 first); numpy arrays are reversed
        if name in drop:
            return
        a = (rng.standard_normal(shape[::-1]) * scale + offset).astype(np.float32)
        t = qt if qt is not None else QT.F32
        if t in (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K) and shape[0] % 256:
            t = QT.Q8_0  # as llama.cpp's quantizer does for rows that are not whole K blocks
        data, raw, deq = _quantize(a, t)
        w.add_tensor(name, data, raw_dtype=raw)
        weights[name] = deq

    add("token_embd.weight", (n_embd, n_vocab), embd_scale, qtype)
    add("output_norm.weight", (n_embd,), 0.1, offset=1.0)
    if not tied:
        add("output.weight", (n_embd, n_vocab), 0.2, qtype)
    if rope_freqs:
        ff = np.linspace(1.0, 8.0, hd // 2).astype(np.float32)
        w.add_tensor("rope_freqs.weight", ff)
        weights["rope_freqs.weight"] = ff
    for il in range(n_layer):
        p = "blk.%d." % il
        add(p + "attn_norm.weight", (n_embd,), 0.1, offset=1.0)
        add(p + "attn_q.weight", (n_embd, n_head * hd), n_embd ** -0.5, qtype)
        add(p + "attn_k.weight", (n_embd, n_head_kv * hd), n_embd ** -0.5, qtype)
        add(p + "attn_v.weight", (n_embd, n_head_kv * hd), n_embd ** -0.5, qtype)
        add(p + "attn_output.weight", (n_head * hd, n_embd), (n_head * hd) ** -0.5, qtype)
        add(p + "ffn_norm.weight", (n_embd,), 0.1, offset=1.0)
        add(p + "ffn_gate.weight", (n_embd, n_ff), n_embd ** -0.5, qtype)
        add(p + "ffn_up.weight", (n_embd, n_ff), n_embd ** -0.5, qtype)
        add(p + "ffn_down.weight", (n_ff, n_embd), n_ff ** -0.5, qtype)
        if arch == "gemma3":
            add(p + "attn_q_norm.weight", (hd,), 0.1, offset=1.0)
            add(p + "attn_k_norm.weight", (hd,), 0.1, offset=1.0)
            add(p + "post_attention_norm.weight", (n_embd,), 0.1, offset=1.0)
            add(p + "post_ffw_norm.weight", (n_embd,), 0.1, offset=1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hp, weights


def _rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, base, scale, neox, freq_factors=None):
    # x [T, H, hd]
    hd = x.shape[-1]
    i = np.arange(hd // 2, dtype=np.float64)
    inv = base ** (-2.0 * i / hd)
    if freq_factors is not None:
        inv = inv / freq_factors
    theta = pos[:, None].astype(np.float64) * scale * inv[None, :]  # [T, hd/2]
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    out = x.astype(np.float64).copy()
    if neox:
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        out[..., : hd // 2] = a * c - b * s
        out[..., hd // 2:] = a * s + b * c
    else:
        a, b = x[..., 0::2], x[..., 1::2]
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
    return out


def _gelu_tanh(z):
    return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))


def forward(hp, W, tokens):
    """Logits [T, n_vocab] for every position of tokens (one sequence from position 0)."""
    T = len(tokens)
    E, H, KV, hd = hp["n_embd"], hp["n_head"], hp["n_head_kv"], hp["hd"]
    gemma = hp["arch"] == "gemma3"
    pos = np.arange(T)
    x = W["token_embd.weight"][tokens].astype(np.float64)
    if gemma:
        x = x * np.sqrt(E)
    for il in range(hp["n_layer"]):
        p = "blk.%d." % il
        h = _rmsnorm(x, W[p + "attn_norm.weight"], hp["eps"])
        q = (h @ W[p + "attn_q.weight"].T).reshape(T, H, hd)
        k = (h @ W[p + "attn_k.weight"].T).reshape(T, KV, hd)
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, KV, hd)
        sliding = gemma and hp["n_swa"] and il % 6 < 5
        if gemma:
            q = _rmsnorm(q, W[p + "attn_q_norm.weight"], hp["eps"])
            k = _rmsnorm(k, W[p + "attn_k_norm.weight"], hp["eps"])
            base = 10000.0 if sliding else hp["rope_base"]
            scale = 1.0 if sliding or not hp["rope_scale"] else 1.0 / hp["rope_scale"]
            q = _rope(q, pos, base, scale, True)
            k = _rope(k, pos, base, scale, True)
        else:
            scale = 1.0 / hp["rope_scale"] if hp["rope_scale"] else 1.0
            ff = W.get("rope_freqs.weight")
            q = _rope(q, pos, hp["rope_base"], scale, False, ff)
            k = _rope(k, pos, hp["rope_base"], scale, False, ff)
        out = np.zeros((T, H, hd))
        for hh in range(H):
            kh = hh // (H // KV)
            s = q[:, hh, :] @ k[:, kh, :].T / np.sqrt(hd)  # [T, T]
            mask = pos[None, :] > pos[:, None]
            if sliding:
                mask |= (pos[:, None] - pos[None, :]) >= hp["n_swa"]
            s = np.where(mask, -np.inf, s)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            out[:, hh, :] = s @ v[:, kh, :]
        a = out.reshape(T, H * hd) @ W[p + "attn_output.weight"].T
        if gemma:
            a = _rmsnorm(a, W[p + "post_attention_norm.weight"], hp["eps"])
        x = x + a
        h = _rmsnorm(x, W[p + "ffn_norm.weight"], hp["eps"])
        g = h @ W[p + "ffn_gate.weight"].T
        u = h @ W[p + "ffn_up.weight"].T
        act = _gelu_tanh(g) if gemma else g / (1 + np.exp(-g))
        f = (act * u) @ W[p + "ffn_down.weight"].T
        if gemma:
            f = _rmsnorm(f, W[p + "post_ffw_norm.weight"], hp["eps"])
        x = x + f
    x = _rmsnorm(x, W["output_norm.weight"], hp["eps"])
    head = W.get("output.weight", W["token_embd.weight"])
    logits = x @ head.T
    if hp["softcap"]:
        logits = hp["softcap"] * np.tanh(logits / hp["softcap"])
    return logits
