/* qwen3.c — the qwen3 architecture (Qwen3 0.6B-32B, dense): llama's blocks with NEOX RoPE,
 * no biases, and a per-head RMS norm of q and of k (attn_q_norm, attn_k_norm over the head
 * size) before RoPE. The head size is attention.key_length, which need not be n_embd / n_head
 * (Qwen3-0.6B: 1024 / 16 heads of 128); RoPE rotates all of it. */
#include "model/model.h"

#include "core/error.h"

#include <stdio.h>

plumb_status plumb__qwen3_load(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    plumb_status st = plumb__llama_load(m, PLUMB_ROPE_NEOX);
    if (st) return st;
    if (hp->n_rot != hp->head_dim) { /* llama.cpp asserts it */
        char why[64];
        snprintf(why, sizeof why, "must equal the head size (%d)", hp->head_dim);
        return plumb__model_bad_key(m, "rope.dimension_count", hp->n_rot, why);
    }
    for (int il = 0; il < hp->n_layer; il++) {
        plumb_layer_weights *L = &m->layers[il];
        if ((st = plumb__model_layer_vector(m, il, "attn_q_norm.weight", hp->head_dim, false, &L->q_norm)) ||
            (st = plumb__model_layer_vector(m, il, "attn_k_norm.weight", hp->head_dim, false, &L->k_norm)))
            return st;
    }
    return PLUMB_OK;
}

const plumb_arch plumb__arch_qwen3 = {"qwen3", plumb__qwen3_load, plumb__llama_build};
