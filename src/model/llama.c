/* llama.c — the llama architecture (Llama 2/3, TinyLlama, SmolLM, Mistral): pre-norm
 * blocks with grouped-query attention, NORMAL RoPE (optional rope_freqs, linear scaling),
 * optional attention biases, a SiLU-gated FFN, and a separate or tied output head. Its
 * loader and builder are shared with the architectures that differ only in details
 * (qwen2.c). */
#include "model/model.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

plumb_status plumb__llama_load(plumb_model_t *m, int rope_mode) {
    plumb_hparams *hp = &m->hp;
    plumb_status st;
    hp->rope_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->eps = 1e-5f;
    hp->n_ctx_train = 2048;
    if ((st = plumb__model_common_hparams(m))) return st;
    hp->n_rot = hp->head_dim;
    if ((st = plumb__model_u32(m, "rope.dimension_count", false, &hp->n_rot))) return st;
    if (hp->n_rot == 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2) {
        char why[96];
        snprintf(why, sizeof why, "must be even and 2 to the head size (%d)", hp->head_dim);
        return plumb__model_bad_key(m, "rope.dimension_count", hp->n_rot, why);
    }
    if ((st = plumb__model_rope_scaling(m, &hp->rope_freq_scale))) return st;
    hp->rope_mode = rope_mode;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = 1.0f;

    const int64_t Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    if ((st = plumb__model_embeddings(m)) ||
        (st = plumb__model_vector(m, "rope_freqs.weight", hp->n_rot / 2, true, &m->rope_freqs)))
        return st;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_layer_weights *L = &m->layers[il];
        if ((st = plumb__model_common_layer(m, il, L)) ||
            (st = plumb__model_layer_vector(m, il, "attn_q.bias", Q, true, &L->bq)) ||
            (st = plumb__model_layer_vector(m, il, "attn_k.bias", KV, true, &L->bk)) ||
            (st = plumb__model_layer_vector(m, il, "attn_v.bias", KV, true, &L->bv)) ||
            (st = plumb__model_layer_vector(m, il, "attn_output.bias", hp->n_embd, true, &L->bo)))
            return st;
    }
    return PLUMB_OK;
}

static plumb_tensor *attention(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, int il,
                               plumb_tensor *h) {
    const plumb_hparams *hp = &m->hp;
    const plumb_layer_weights *L = &m->layers[il];
    const int64_t T = in->n_tokens, hd = hp->head_dim;
    plumb_tensor *q = plumb__build_matmul(g, L->wq, h, L->bq);
    plumb_tensor *k = plumb__build_matmul(g, L->wk, h, L->bk);
    plumb_tensor *v = plumb__build_matmul(g, L->wv, h, L->bv);
    int64_t qs[3] = {hd, hp->n_head, T}, ks[3] = {hd, hp->n_head_kv, T};
    q = plumb_graph_view(g, q, 3, qs);
    k = plumb_graph_view(g, k, 3, ks);
    v = plumb_graph_view(g, v, 3, ks);
    q = plumb_graph_op(g, PLUMB_OP_ROPE, 3, qs, q, in->pos, m->rope_freqs);
    k = plumb_graph_op(g, PLUMB_OP_ROPE, 3, ks, k, in->pos, m->rope_freqs);
    for (int i = 0; i < 2; i++) {
        plumb_tensor *r = i ? k : q;
        r->iparams[0] = hp->rope_mode;
        r->iparams[1] = hp->n_rot;
        r->fparams[0] = hp->rope_base;
        r->fparams[1] = hp->rope_freq_scale;
    }
    int64_t os[2] = {hd * hp->n_head, T};
    plumb_tensor *a = plumb_graph_op(g, PLUMB_OP_ATTN, 2, os, q, k, v);
    plumb_attn_params *p = plumb_graph_attn_params(g);
    p->kv = in->kv;
    p->layer = il;
    p->n_swa = 0;
    p->pos = in->pos->data;
    p->seq = in->seq;
    a->pparams = p;
    a->fparams[0] = hp->attn_scale;
    return plumb__build_matmul(g, L->wo, a, L->bo);
}

plumb_tensor *plumb__llama_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in) {
    const plumb_hparams *hp = &m->hp;
    int64_t ne[2] = {hp->n_embd, in->n_tokens};
    plumb_tensor *x = plumb_graph_op(g, PLUMB_OP_GET_ROWS, 2, ne, m->token_embd, in->tokens, NULL);
    for (int il = 0; il < hp->n_layer; il++) {
        const plumb_layer_weights *L = &m->layers[il];
        plumb_tensor *h = plumb__build_norm(g, x, L->attn_norm, hp->eps);
        x = plumb_graph_op(g, PLUMB_OP_ADD, 2, ne, x, attention(m, g, in, il, h), NULL);
        h = plumb__build_norm(g, x, L->ffn_norm, hp->eps);
        plumb_tensor *gate = plumb__build_matmul(g, L->ffn_gate, h, NULL);
        plumb_tensor *up = plumb__build_matmul(g, L->ffn_up, h, NULL);
        plumb_tensor *f = plumb_graph_op(g, PLUMB_OP_SILU_MUL, 2, gate->ne, gate, up, NULL);
        x = plumb_graph_op(g, PLUMB_OP_ADD, 2, ne, x, plumb__build_matmul(g, L->ffn_down, f, NULL), NULL);
    }
    return x;
}

static plumb_status llama_load(plumb_model_t *m) { return plumb__llama_load(m, PLUMB_ROPE_NORMAL); }

const plumb_arch plumb__arch_llama = {"llama", llama_load, plumb__llama_build};
