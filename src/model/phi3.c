/* phi3.c — the phi3 architecture (Phi-3, Phi-3.5 and Phi-4 mini): llama's pre-norm blocks with
 * a fused q/k/v projection (attn_qkv: the q rows, then k, then v; separate attn_q/k/v are
 * accepted too), a fused gate and up projection (ffn_up of 2 n_ff rows: the gate's first),
 * NEOX RoPE over the first rope.dimension_count dimensions of each head, LongRoPE frequency
 * factors (rope_factors_long when the context exceeds rope.scaling.original_context_length,
 * else rope_factors_short) with rope.scaling.attn_factor scaling cos and sin, and q scaled
 * by 1/sqrt(head_dim) before attention. attention.sliding_window is read and not applied:
 * llama.cpp disables Phi's sliding window (its converters wrote wrong values), and plumb
 * computes what it computes. */
#include "model/model.h"

#include "core/error.h"
#include "core/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Layer il's q, k and v weights: the fused attn_qkv, else the three separate ones. */
static plumb_status load_qkv(plumb_model_t *m, int il, plumb_layer_weights *L) {
    const plumb_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t qkv[2] = {E, Q + 2 * KV}, q[2] = {E, Q}, kv[2] = {E, KV};
    plumb_status st;
    if ((st = plumb__model_layer_tensor(m, il, "attn_qkv.weight", 2, qkv, true, &L->wqkv))) return st;
    if (L->wqkv) return PLUMB_OK;
    if ((st = plumb__model_layer_tensor(m, il, "attn_q.weight", 2, q, true, &L->wq))) return st;
    if (!L->wq)
        return plumb__fail(PLUMB_E_FORMAT,
                           "%s: the model is missing tensor 'blk.%d.attn_qkv.weight' (architecture phi3) and has no "
                           "separate attn_q, attn_k and attn_v", m->name, il);
    if ((st = plumb__model_layer_tensor(m, il, "attn_k.weight", 2, kv, false, &L->wk)) ||
        (st = plumb__model_layer_tensor(m, il, "attn_v.weight", 2, kv, false, &L->wv)))
        return st;
    return PLUMB_OK;
}

static plumb_status phi3_load(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    plumb_status st;
    char why[96];
    hp->rope_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->rope_attn_factor = 1.0f;
    hp->eps = 1e-5f;
    hp->n_ctx_train = 4096;
    if ((st = plumb__model_common_hparams(m))) return st;
    hp->n_rot = hp->head_dim;
    hp->n_ctx_orig = hp->n_ctx_train;
    int32_t n_swa = 0; /* read for its type, not applied (see above) */
    if ((st = plumb__model_u32(m, "rope.dimension_count", false, &hp->n_rot)) ||
        (st = plumb__model_rope_scaling(m, &hp->rope_freq_scale)) ||
        (st = plumb__model_f32(m, "rope.scaling.attn_factor", false, &hp->rope_attn_factor)) ||
        (st = plumb__model_u32(m, "rope.scaling.original_context_length", false, &hp->n_ctx_orig)) ||
        (st = plumb__model_u32(m, "attention.sliding_window", false, &n_swa)))
        return st;
    if (hp->n_rot == 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2) {
        snprintf(why, sizeof why, "must be even and 2 to the head size (%d)", hp->head_dim);
        return plumb__model_bad_key(m, "rope.dimension_count", hp->n_rot, why);
    }
    if (!(hp->rope_attn_factor > 0.0f))
        return plumb__model_bad_key(m, "rope.scaling.attn_factor", hp->rope_attn_factor, "must be positive");
    if (hp->n_ctx_orig == 0)
        return plumb__model_bad_key(m, "rope.scaling.original_context_length", 0, "must be positive");
    hp->rope_mode = PLUMB_ROPE_NEOX;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = 1.0f;

    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim;
    const int64_t o[2] = {Q, E}, up[2] = {E, 2 * (int64_t)hp->n_ff}, down[2] = {hp->n_ff, E};
    if ((st = plumb__model_embeddings(m)) ||
        (st = plumb__model_vector(m, "rope_factors_long.weight", hp->n_rot / 2, true, &m->rope_long)) ||
        (st = plumb__model_vector(m, "rope_factors_short.weight", hp->n_rot / 2, true, &m->rope_short)))
        return st;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_layer_weights *L = &m->layers[il];
        if ((st = plumb__model_layer_vector(m, il, "attn_norm.weight", E, false, &L->attn_norm)) ||
            (st = load_qkv(m, il, L)) ||
            (st = plumb__model_layer_tensor(m, il, "attn_output.weight", 2, o, false, &L->wo)) ||
            (st = plumb__model_layer_vector(m, il, "ffn_norm.weight", E, false, &L->ffn_norm)) ||
            (st = plumb__model_layer_tensor(m, il, "ffn_up.weight", 2, up, false, &L->ffn_up)) ||
            (st = plumb__model_layer_tensor(m, il, "ffn_down.weight", 2, down, false, &L->ffn_down)))
            return st;
    }
    return PLUMB_OK;
}

static plumb_tensor *phi3_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in) {
    plumb_attn_layer a = plumb__attn_layer_default(m);
    a.scale_q = true;
    /* llama.cpp's choice of factors, from the context per sequence rounded up to a multiple
     * of 256 (as it rounds it) */
    const int64_t n_ctx = ((int64_t)in->kv->n_ctx + 255) / 256 * 256;
    a.rope_factors = n_ctx > m->hp.n_ctx_orig ? m->rope_long : m->rope_short;
    return plumb__llama_build_layers(m, g, in, &a);
}

const plumb_arch plumb__arch_phi3 = {"phi3", phi3_load, phi3_build};
