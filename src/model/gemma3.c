/* gemma3.c — the gemma3 architecture: scaled embeddings, Q/K RMS norms, post-attention and
 * post-FFN norms, a GELU(tanh)-gated FFN, sliding-window attention on 5 of every 6 layers
 * (RoPE base 10000 there, the file's base on global layers), NEOX RoPE, a tied head and an
 * optional final logit soft-cap. The converter already added 1 to every norm weight. Its
 * builder serves gemma2 too (gemma2.c), which has no Q/K norms and other settings. */
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
    hp->rope_attn_factor = 1.0f;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = sqrtf((float)hp->n_embd);
    return plumb__gemma_load_layers(m, true);
}

plumb_status plumb__gemma_load_layers(plumb_model_t *m, bool qk_norm) {
    const plumb_hparams *hp = &m->hp;
    plumb_status st;
    const int64_t E = hp->n_embd;
    if ((st = plumb__model_embeddings(m))) return st;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_layer_weights *L = &m->layers[il];
        if ((st = plumb__model_common_layer(m, il, L)) ||
            (qk_norm && ((st = plumb__model_layer_vector(m, il, "attn_q_norm.weight", hp->head_dim, false, &L->q_norm)) ||
                         (st = plumb__model_layer_vector(m, il, "attn_k_norm.weight", hp->head_dim, false, &L->k_norm)))) ||
            (st = plumb__model_layer_vector(m, il, "post_attention_norm.weight", E, false, &L->post_attn_norm)) ||
            (st = plumb__model_layer_vector(m, il, "post_ffw_norm.weight", E, false, &L->post_ffn_norm)))
            return st;
    }
    return PLUMB_OK;
}

static bool is_sliding(const plumb_hparams *hp, int il) {
    return hp->n_swa > 0 && il % hp->swa_period < hp->swa_period - 1;
}

plumb_tensor *plumb__gemma_build(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in) {
    const plumb_hparams *hp = &m->hp;
    plumb_tensor *x = plumb__build_embd(m, g, in);
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_attn_layer a = plumb__attn_layer_default(m);
        a.scale_q = true;
        if (is_sliding(hp, il)) {
            a.rope_base = hp->rope_base_swa;
            a.rope_freq_scale = hp->rope_freq_scale_swa;
            a.n_swa = hp->n_swa;
        }
        x = plumb__build_layer(m, g, in, il, x, &a, PLUMB_OP_GELU_MUL);
    }
    return x;
}

const plumb_arch plumb__arch_gemma3 = {"gemma3", gemma3_load, plumb__gemma_build};
