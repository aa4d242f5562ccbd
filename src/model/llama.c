/* llama.c — the llama architecture (Llama 2/3, TinyLlama, SmolLM, Mistral): pre-norm
 * blocks with grouped-query attention, NORMAL RoPE (optional rope_freqs, linear scaling),
 * a SiLU-gated FFN, and a separate or tied output head. */
#include "model/model.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static plumb_status llama_load(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    plumb_status st;
    hp->rope_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->eps = 1e-5f;
    hp->n_ctx_train = 2048;
    if ((st = plumb__model_common_hparams(m))) return st;
    if (hp->n_embd % hp->n_head != 0)
        return plumb__fail(PLUMB_E_FORMAT, "%s: embedding %d is not a multiple of %d heads", m->name, hp->n_embd, hp->n_head);
    hp->n_rot = hp->head_dim;
    if ((st = plumb__model_u32(m, "rope.dimension_count", false, &hp->n_rot))) return st;
    if (hp->head_dim <= 0 || hp->head_dim % 2 || hp->n_rot <= 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return plumb__fail(PLUMB_E_FORMAT, "%s: bad head size %d / rope dimensions %d", m->name, hp->head_dim, hp->n_rot);
    float factor = 0.0f;
    plumb_str type;
    char key[96];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch->name);
    if (plumb_gguf_get_str(m->gguf, key, &type) == PLUMB_OK && !(type.len == 6 && !memcmp(type.ptr, "linear", 6)) &&
        !(type.len == 4 && !memcmp(type.ptr, "none", 4)))
        return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: rope scaling '%.*s' is not supported (linear is)", m->name,
                           (int)(type.len > 32 ? 32 : type.len), type.ptr);
    if ((st = plumb__model_f32(m, "rope.scaling.factor", false, &factor))) return st;
    if (factor > 0.0f) hp->rope_freq_scale = 1.0f / factor;
    hp->rope_mode = PLUMB_ROPE_NORMAL;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = 1.0f;

    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t ne[2] = {E, -1};
    if ((st = plumb__model_tensor(m, "token_embd.weight", 2, ne, false, &m->token_embd))) return st;
    hp->n_vocab = (int32_t)m->token_embd->ne[1];
    int64_t ne_out[2] = {E, hp->n_vocab}, ne_e[1] = {E}, ne_rf[1] = {hp->n_rot / 2};
    if ((st = plumb__model_tensor(m, "output_norm.weight", 1, ne_e, false, &m->output_norm))) return st;
    if ((st = plumb__model_tensor(m, "output.weight", 2, ne_out, true, &m->output))) return st;
    if ((st = plumb__model_tensor(m, "rope_freqs.weight", 1, ne_rf, true, &m->rope_freqs))) return st;
    if (m->rope_freqs && m->rope_freqs->type != PLUMB_TYPE_F32)
        return plumb__fail(PLUMB_E_FORMAT, "%s: rope_freqs.weight must be F32", m->name);
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_layer_weights *L = &m->layers[il];
        int64_t bq[1] = {Q}, bkv[1] = {KV};
        if ((st = plumb__model_common_layer(m, il, L)) ||
            (st = plumb__model_layer_tensor(m, il, "attn_q.bias", 1, bq, true, &L->bq)) ||
            (st = plumb__model_layer_tensor(m, il, "attn_k.bias", 1, bkv, true, &L->bk)) ||
            (st = plumb__model_layer_tensor(m, il, "attn_v.bias", 1, bkv, true, &L->bv)) ||
            (st = plumb__model_layer_tensor(m, il, "attn_output.bias", 1, ne_e, true, &L->bo)))
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

static plumb_tensor *llama_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in) {
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

const plumb_arch plumb__arch_llama = {"llama", llama_load, llama_build};
