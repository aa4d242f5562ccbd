/* blocks.c — graph pieces the architectures share: the token embedding, the attention sublayer
 * (projections, fused or not; per-head q/k norms; RoPE; attention over the KV cache with its
 * scale, window and soft-cap; the output projection), the gated FFN (separate or fused
 * gate and up) and the whole pre-norm layer around them (optional post-norms, residuals, a
 * dense or mixture-of-experts FFN). An architecture file says what differs: its settings.
 * Each piece builds the reference engine's ops in its order, so results are its bits. */
#include "model/model.h"

#include "core/error.h"

plumb_attn_layer plumb__attn_layer_default(const plumb_model_t *m) {
    const plumb_hparams *hp = &m->hp;
    return (plumb_attn_layer){
        .rope_base = hp->rope_base,
        .rope_freq_scale = hp->rope_freq_scale,
        .rope_attn_factor = hp->rope_attn_factor,
        .rope_factors = m->rope_freqs,
        .n_swa = 0,
        .softcap = hp->attn_softcap,
        .scale_q = false,
    };
}

plumb_tensor *plumb__build_embd(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in) {
    plumb_tensor *x = plumb_graph_get_rows(g, m->token_embd, in->tokens); /* [n_embd, T] */
    if (m->hp.embd_scale != 1.0f) x = plumb_graph_scale(g, x, &(plumb_scale_params){.s = m->hp.embd_scale});
    return x;
}

plumb_tensor *plumb__build_rows(plumb_graph *g, const plumb_tensor *w, int64_t row0, int64_t n) {
    PLUMB_ASSERT(row0 >= 0 && n > 0 && row0 + n <= w->ne[1] && w->ne[2] == 1 && w->ne[3] == 1);
    const int64_t ne[2] = {w->ne[0], n};
    const size_t off = (size_t)row0 * w->nb[1];
    plumb_tensor *t = plumb_graph_leaf(g, w->type, 2, ne, w->data ? (uint8_t *)w->data + off : NULL);
    t->buf = w->buf;
    t->offs = w->offs + off;
    return t;
}

/* x [hd, heads, T] rotated as the layer says. */
static plumb_tensor *rope(plumb_graph *g, const plumb_hparams *hp, const plumb_graph_inputs *in,
                          const plumb_attn_layer *a, plumb_tensor *x) {
    return plumb_graph_rope(g, x, in->pos, a->rope_factors,
                            &(plumb_rope_params){
                                .mode = hp->rope_mode,
                                .n_rot = hp->n_rot,
                                .base = a->rope_base,
                                .freq_scale = a->rope_freq_scale,
                                .attn_factor = a->rope_attn_factor,
                            });
}

plumb_tensor *plumb__build_attention(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, int il,
                                     plumb_tensor *h, const plumb_attn_layer *a) {
    const plumb_hparams *hp = &m->hp;
    const plumb_layer_weights *L = &m->layers[il];
    const int64_t T = in->n_tokens, hd = hp->head_dim;
    const int64_t Q = hd * hp->n_head, KV = hd * hp->n_head_kv;
    plumb_tensor *wq = L->wq, *wk = L->wk, *wv = L->wv;
    if (L->wqkv) { /* rows: q, then k, then v (each row's dot product is the fused one's) */
        wq = plumb__build_rows(g, L->wqkv, 0, Q);
        wk = plumb__build_rows(g, L->wqkv, Q, KV);
        wv = plumb__build_rows(g, L->wqkv, Q + KV, KV);
    }
    int64_t qs[3] = {hd, hp->n_head, T}, ks[3] = {hd, hp->n_head_kv, T};
    plumb_tensor *q = plumb_graph_view(g, plumb__build_matmul(g, wq, h, L->bq), 3, qs);
    plumb_tensor *k = plumb_graph_view(g, plumb__build_matmul(g, wk, h, L->bk), 3, ks);
    plumb_tensor *v = plumb_graph_view(g, plumb__build_matmul(g, wv, h, L->bv), 3, ks);
    if (L->q_norm) q = plumb__build_norm(g, q, L->q_norm, hp->eps); /* over each head */
    if (L->k_norm) k = plumb__build_norm(g, k, L->k_norm, hp->eps);
    q = rope(g, hp, in, a, q);
    k = rope(g, hp, in, a, k);
    float scale = hp->attn_scale;
    if (a->scale_q) {
        q = plumb_graph_scale(g, q, &(plumb_scale_params){.s = hp->attn_scale});
        scale = 1.0f;
    }
    plumb_tensor *o = plumb_graph_attn(g, q, k, v,
                                       &(plumb_attn_params){
                                           .kv = in->kv,
                                           .layer = il,
                                           .n_swa = a->n_swa,
                                           .pos = in->pos->data,
                                           .seq = in->seq,
                                           .scale = scale,
                                           .softcap = a->softcap,
                                       }); /* [Q, T] */
    return plumb__build_matmul(g, L->wo, o, L->bo);
}

plumb_tensor *plumb__build_ffn(const plumb_model_t *m, plumb_graph *g, int il, plumb_tensor *h, plumb_op act) {
    const plumb_layer_weights *L = &m->layers[il];
    const int64_t n_ff = m->hp.n_ff;
    plumb_tensor *gate, *up;
    if (L->ffn_gate) {
        gate = plumb__build_matmul(g, L->ffn_gate, h, NULL);
        up = plumb__build_matmul(g, L->ffn_up, h, NULL);
    } else { /* fused: the gate's rows first */
        gate = plumb__build_matmul(g, plumb__build_rows(g, L->ffn_up, 0, n_ff), h, NULL);
        up = plumb__build_matmul(g, plumb__build_rows(g, L->ffn_up, n_ff, n_ff), h, NULL);
    }
    PLUMB_ASSERT(act == PLUMB_OP_SILU_MUL || act == PLUMB_OP_GELU_MUL);
    plumb_tensor *f = act == PLUMB_OP_GELU_MUL ? plumb_graph_gelu_mul(g, gate, up) : plumb_graph_silu_mul(g, gate, up);
    return plumb__build_matmul(g, L->ffn_down, f, NULL);
}

plumb_tensor *plumb__build_layer(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, int il,
                                 plumb_tensor *x, const plumb_attn_layer *a, plumb_op act) {
    const plumb_layer_weights *L = &m->layers[il];
    const float eps = m->hp.eps;
    plumb_graph_set_layer(g, il);
    plumb_tensor *h = plumb__build_attention(m, g, in, il, plumb__build_norm(g, x, L->attn_norm, eps), a);
    if (L->post_attn_norm) h = plumb__build_norm(g, h, L->post_attn_norm, eps);
    x = plumb_graph_add(g, x, h);
    h = plumb__build_norm(g, x, L->ffn_norm, eps);
    h = L->ffn_gate_inp ? plumb__build_moe_ffn(m, g, il, h) : plumb__build_ffn(m, g, il, h, act);
    if (L->post_ffn_norm) h = plumb__build_norm(g, h, L->post_ffn_norm, eps);
    return plumb_graph_add(g, x, h);
}
