/* llama.c — the llama architecture (Llama 2/3, TinyLlama, SmolLM, Mistral): pre-norm
 * blocks with grouped-query attention, NORMAL RoPE (optional rope_freqs, linear scaling),
 * optional attention biases, a SiLU-gated FFN, and a separate or tied output head. Its
 * loader and builder are shared with the architectures that differ only in details
 * (qwen2.c, qwen3.c). */
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
    hp->rope_attn_factor = 1.0f;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = 1.0f;

    const int64_t Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    if ((st = plumb__model_embeddings(m)) ||
        (st = plumb__model_vector(m, "rope_freqs.weight", hp->n_rot / 2, true, &m->rope_freqs)))
        return st;
    if (!hp->n_ff_exp) hp->n_ff_exp = hp->n_ff; /* experts (if the arch read some) FFN-sized unless it says */
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_layer_weights *L = &m->layers[il];
        if ((st = hp->n_expert ? plumb__model_attn_tensors(m, il, L) : plumb__model_common_layer(m, il, L)) ||
            (hp->n_expert && (st = plumb__model_moe_layer(m, il, L))) ||
            (st = plumb__model_layer_vector(m, il, "attn_q.bias", Q, true, &L->bq)) ||
            (st = plumb__model_layer_vector(m, il, "attn_k.bias", KV, true, &L->bk)) ||
            (st = plumb__model_layer_vector(m, il, "attn_v.bias", KV, true, &L->bv)) ||
            (st = plumb__model_layer_vector(m, il, "attn_output.bias", hp->n_embd, true, &L->bo)))
            return st;
    }
    return PLUMB_OK;
}

plumb_tensor *plumb__llama_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in) {
    const plumb_attn_layer a = plumb__attn_layer_default(m);
    return plumb__llama_build_layers(m, g, in, &a);
}

plumb_tensor *plumb__llama_build_layers(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in,
                                        const plumb_attn_layer *a) {
    plumb_tensor *x = plumb__build_embd(m, g, in);
    for (int il = 0; il < m->hp.n_layer; il++) x = plumb__build_layer(m, g, in, il, x, a, PLUMB_OP_SILU_MUL);
    return x;
}

/* llama with expert_count > 0 (Mixtral-style) has mixture-of-experts FFNs (moe.c). */
static plumb_status llama_load(plumb_model_t *m) {
    plumb_status st = plumb__model_moe_hparams(m, false);
    return st ? st : plumb__llama_load(m, PLUMB_ROPE_NORMAL);
}

const plumb_arch plumb__arch_llama = {"llama", llama_load, plumb__llama_build};
