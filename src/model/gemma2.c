/* gemma2.c — the gemma2 architecture (Gemma 2 2B/9B/27B): gemma3's blocks (gemma3.c builds
 * them) without the Q/K norms, with attention logit soft-capping (default 50) and a final
 * logit soft-cap (default 30), a sliding window (default 4096) on the even layers, the same
 * RoPE base on every layer, and q scaled by 1/sqrt(head_dim) — by 1/sqrt(n_embd / n_head)
 * for the 46-layer 27B model, as llama.cpp does (query_pre_attn_scalar). The converter
 * already added 1 to every norm weight. */
#include "model/model.h"

#include "core/error.h"

#include <math.h>

static plumb_status gemma2_load(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    plumb_status st;
    hp->eps = 1e-6f;
    hp->rope_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->n_ctx_train = 8192;
    hp->n_swa = 4096;
    hp->swa_period = 2; /* layer il slides when il % 2 == 0 */
    hp->attn_softcap = 50.0f;
    hp->final_softcap = 30.0f;
    if ((st = plumb__model_common_hparams(m)) ||
        (st = plumb__model_u32(m, "attention.sliding_window", false, &hp->n_swa)) ||
        (st = plumb__model_f32(m, "attn_logit_softcapping", false, &hp->attn_softcap)) ||
        (st = plumb__model_f32(m, "final_logit_softcapping", false, &hp->final_softcap)) ||
        (st = plumb__model_rope_scaling(m, &hp->rope_freq_scale)))
        return st;
    /* the reference always caps both: 0 would divide by zero, a negative cap flip signs */
    if (!(hp->attn_softcap > 0.0f))
        return plumb__model_bad_key(m, "attn_logit_softcapping", hp->attn_softcap, "must be positive");
    if (!(hp->final_softcap > 0.0f))
        return plumb__model_bad_key(m, "final_logit_softcapping", hp->final_softcap, "must be positive");
    hp->rope_base_swa = hp->rope_base;
    hp->rope_freq_scale_swa = hp->rope_freq_scale;
    hp->n_rot = hp->head_dim;
    hp->rope_mode = PLUMB_ROPE_NEOX;
    hp->rope_attn_factor = 1.0f;
    if (hp->n_layer == 46 && hp->n_embd < hp->n_head) /* the 27B's scale would divide by zero */
        return plumb__model_bad_key(m, "embedding_length", hp->n_embd, "must be at least attention.head_count");
    hp->attn_scale = hp->n_layer == 46 ? 1.0f / sqrtf((float)(hp->n_embd / hp->n_head))
                                       : 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = sqrtf((float)hp->n_embd);
    return plumb__gemma_load_layers(m, false);
}

const plumb_arch plumb__arch_gemma2 = {"gemma2", gemma2_load, plumb__gemma_build};
