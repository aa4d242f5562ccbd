/* blocks.c — graph pieces the architectures share: the token embedding, the attention sublayer
 * (projections, fused or not; per-head q/k norms; RoPE; attention over the KV cache with its
 * scale, window and soft-cap; the output projection) and the gated FFN (separate or fused
 * gate and up). An architecture file says what differs: its norms, residuals and settings.
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
    const int64_t ne[2] = {m->hp.n_embd, in->n_tokens};
    plumb_tensor *x = plumb_graph_op(g, PLUMB_OP_GET_ROWS, 2, ne, m->token_embd, in->tokens, NULL);
    if (m->hp.embd_scale != 1.0f) {
        x = plumb_graph_op(g, PLUMB_OP_SCALE, 2, ne, x, NULL, NULL);
        x->fparams[0] = m->hp.embd_scale;
    }
    return x;
}

plumb_tensor *plumb__build_rows(plumb_graph *g, const plumb_tensor *w, int64_t row0, int64_t n) {
    PLUMB_ASSERT(row0 >= 0 && n > 0 && row0 + n <= w->ne[1] && w->ne[2] == 1 && w->ne[3] == 1);
    const int64_t ne[2] = {w->ne[0], n};
    return plumb_graph_leaf(g, w->type, 2, ne, (uint8_t *)w->data + (size_t)row0 * w->nb[1]);
}

/* x [hd, heads, T] rotated as the layer says. */
static plumb_tensor *rope(plumb_graph *g, const plumb_hparams *hp, const plumb_graph_inputs *in,
                          const plumb_attn_layer *a, plumb_tensor *x) {
    plumb_tensor *r = plumb_graph_op(g, PLUMB_OP_ROPE, 3, x->ne, x, in->pos, a->rope_factors);
    r->iparams[0] = hp->rope_mode;
    r->iparams[1] = hp->n_rot;
    r->fparams[0] = a->rope_base;
    r->fparams[1] = a->rope_freq_scale;
    r->fparams[2] = a->rope_attn_factor;
    return r;
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
        q = plumb_graph_op(g, PLUMB_OP_SCALE, 3, qs, q, NULL, NULL);
        q->fparams[0] = hp->attn_scale;
        scale = 1.0f;
    }
    int64_t os[2] = {Q, T};
    plumb_tensor *o = plumb_graph_op(g, PLUMB_OP_ATTN, 2, os, q, k, v);
    plumb_attn_params *p = plumb_graph_attn_params(g);
    p->kv = in->kv;
    p->layer = il;
    p->n_swa = a->n_swa;
    p->pos = in->pos->data;
    p->seq = in->seq;
    o->pparams = p;
    o->fparams[0] = scale;
    o->fparams[1] = a->softcap;
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
    plumb_tensor *f = plumb_graph_op(g, act, 2, gate->ne, gate, up, NULL);
    return plumb__build_matmul(g, L->ffn_down, f, NULL);
}
