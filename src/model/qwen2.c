/* qwen2.c — the qwen2 architecture (Qwen2, Qwen2.5 and their Coder/Math variants): llama's
 * blocks with NEOX RoPE and biases on the q, k and v projections (required, as llama.cpp
 * requires them), an untied or tied output head. */
#include "model/model.h"

#include "core/error.h"

static plumb_status qwen2_load(plumb_model_t *m) {
    plumb_status st = plumb__llama_load(m, PLUMB_ROPE_NEOX);
    if (st) return st;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const plumb_layer_weights *L = &m->layers[il];
        const char *missing = !L->bq ? "attn_q.bias" : !L->bk ? "attn_k.bias" : !L->bv ? "attn_v.bias" : NULL;
        if (missing) return plumb__fail(PLUMB_E_FORMAT, "%s: tensor 'blk.%d.%s' is missing (qwen2 has q/k/v biases)", m->name, il, missing);
    }
    return PLUMB_OK;
}

const plumb_arch plumb__arch_qwen2 = {"qwen2", qwen2_load, plumb__llama_build};
