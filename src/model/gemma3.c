/* gemma3.c — the gemma3 architecture: scaled embeddings, Q/K RMS norms, post-attention and
 * post-FFN norms, a GELU(tanh)-gated FFN, sliding-window attention on 5 of every 6 layers
 * (RoPE base 10000 there, the file's base on global layers), NEOX RoPE, a tied head and an
 * optional final logit soft-cap. The converter already added 1 to every norm weight. */
#include "model/model.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static plumb_status gemma3_load(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    plumb_status st;
    hp->eps = 1e-6f;
    hp->rope_base = 1000000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->rope_base_swa = 10000.0f;
    hp->rope_freq_scale_swa = 1.0f;
    hp->swa_period = 6;
    hp->n_ctx_train = 32768;
    if ((st = plumb__model_common_hparams(m)) ||
        (st = plumb__model_u32(m, "attention.sliding_window", false, &hp->n_swa)) ||
        (st = plumb__model_f32(m, "final_logit_softcapping", false, &hp->final_softcap)) ||
        (st = plumb__model_rope_scaling(m, &hp->rope_freq_scale)))
        return st;
    /* 0 (or absent) is no cap; a negative one would flip the sign of every logit */
    if (hp->final_softcap < 0.0f)
        return plumb__model_bad_key(m, "final_logit_softcapping", hp->final_softcap, "must be positive (or 0: none)");
    hp->n_rot = hp->head_dim;
    hp->rope_mode = PLUMB_ROPE_NEOX;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = sqrtf((float)hp->n_embd);

    const int64_t E = hp->n_embd;
    if ((st = plumb__model_embeddings(m))) return st;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_layer_weights *L = &m->layers[il];
        if ((st = plumb__model_common_layer(m, il, L)) ||
            (st = plumb__model_layer_vector(m, il, "attn_q_norm.weight", hp->head_dim, false, &L->q_norm)) ||
            (st = plumb__model_layer_vector(m, il, "attn_k_norm.weight", hp->head_dim, false, &L->k_norm)) ||
            (st = plumb__model_layer_vector(m, il, "post_attention_norm.weight", E, false, &L->post_attn_norm)) ||
            (st = plumb__model_layer_vector(m, il, "post_ffw_norm.weight", E, false, &L->post_ffn_norm)))
            return st;
    }
    return PLUMB_OK;
}

static bool is_sliding(const plumb_hparams *hp, int il) {
    return hp->n_swa > 0 && il % hp->swa_period < hp->swa_period - 1;
}

static plumb_tensor *attention(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, int il,
                               plumb_tensor *h) {
    const plumb_hparams *hp = &m->hp;
    const plumb_layer_weights *L = &m->layers[il];
    const int64_t T = in->n_tokens, hd = hp->head_dim;
    const bool swa = is_sliding(hp, il);
    plumb_tensor *q = plumb__build_matmul(g, L->wq, h, NULL);
    plumb_tensor *k = plumb__build_matmul(g, L->wk, h, NULL);
    plumb_tensor *v = plumb__build_matmul(g, L->wv, h, NULL);
    int64_t qs[3] = {hd, hp->n_head, T}, ks[3] = {hd, hp->n_head_kv, T};
    q = plumb__build_norm(g, plumb_graph_view(g, q, 3, qs), L->q_norm, hp->eps);
    k = plumb__build_norm(g, plumb_graph_view(g, k, 3, ks), L->k_norm, hp->eps);
    v = plumb_graph_view(g, v, 3, ks);
    q = plumb_graph_op(g, PLUMB_OP_ROPE, 3, qs, q, in->pos, NULL);
    k = plumb_graph_op(g, PLUMB_OP_ROPE, 3, ks, k, in->pos, NULL);
    for (int i = 0; i < 2; i++) {
        plumb_tensor *r = i ? k : q;
        r->iparams[0] = hp->rope_mode;
        r->iparams[1] = hp->n_rot;
        r->fparams[0] = swa ? hp->rope_base_swa : hp->rope_base;
        r->fparams[1] = swa ? hp->rope_freq_scale_swa : hp->rope_freq_scale;
    }
    q = plumb_graph_op(g, PLUMB_OP_SCALE, 3, qs, q, NULL, NULL);
    q->fparams[0] = hp->attn_scale;
    int64_t os[2] = {hd * hp->n_head, T};
    plumb_tensor *a = plumb_graph_op(g, PLUMB_OP_ATTN, 2, os, q, k, v);
    plumb_attn_params *p = plumb_graph_attn_params(g);
    p->kv = in->kv;
    p->layer = il;
    p->n_swa = swa ? hp->n_swa : 0;
    p->pos = in->pos->data;
    p->seq = in->seq;
    a->pparams = p;
    a->fparams[0] = 1.0f;
    a = plumb__build_matmul(g, L->wo, a, NULL);
    return plumb__build_norm(g, a, L->post_attn_norm, hp->eps);
}

static plumb_tensor *gemma3_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in) {
    const plumb_hparams *hp = &m->hp;
    int64_t ne[2] = {hp->n_embd, in->n_tokens};
    plumb_tensor *x = plumb_graph_op(g, PLUMB_OP_GET_ROWS, 2, ne, m->token_embd, in->tokens, NULL);
    x = plumb_graph_op(g, PLUMB_OP_SCALE, 2, ne, x, NULL, NULL);
    x->fparams[0] = hp->embd_scale;
    for (int il = 0; il < hp->n_layer; il++) {
        const plumb_layer_weights *L = &m->layers[il];
        plumb_tensor *h = plumb__build_norm(g, x, L->attn_norm, hp->eps);
        x = plumb_graph_op(g, PLUMB_OP_ADD, 2, ne, x, attention(m, g, in, il, h), NULL);
        h = plumb__build_norm(g, x, L->ffn_norm, hp->eps);
        plumb_tensor *gate = plumb__build_matmul(g, L->ffn_gate, h, NULL);
        plumb_tensor *up = plumb__build_matmul(g, L->ffn_up, h, NULL);
        plumb_tensor *f = plumb_graph_op(g, PLUMB_OP_GELU_MUL, 2, gate->ne, gate, up, NULL);
        f = plumb__build_norm(g, plumb__build_matmul(g, L->ffn_down, f, NULL), L->post_ffn_norm, hp->eps);
        x = plumb_graph_op(g, PLUMB_OP_ADD, 2, ne, x, f, NULL);
    }
    return x;
}

const plumb_arch plumb__arch_gemma3 = {"gemma3", gemma3_load, gemma3_build};
