/* qwen3moe.c — the qwen3moe architecture (Qwen3-30B-A3B, Qwen3-235B-A22B, Qwen3-Coder-30B-A3B):
 * qwen3's attention (NEOX RoPE over the whole head, attention.key_length the head size, per-head
 * RMS norms of q and k before RoPE, no biases) with a mixture-of-experts FFN in every layer:
 * a router over expert_count experts, expert_used_count of them per token, each an SiLU-gated
 * FFN of expert_feed_forward_length (absent: feed_forward_length / expert_used_count, as
 * llama.cpp takes it). The graph is llama's (plumb__llama_build), which takes the q/k norms
 * and the experts wherever a layer has them. */
#include "model/model.h"

#include "core/error.h"

static plumb_status qwen3moe_load(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    int32_t n_ff = 0;
    plumb_status st;
    if ((st = plumb__model_moe_hparams(m, true)) ||
        (st = plumb__model_u32(m, "feed_forward_length", true, &n_ff)) ||
        (st = plumb__model_u32(m, "expert_feed_forward_length", false, &hp->n_ff_exp)))
        return st;
    if (n_ff == 0) return plumb__model_bad_key(m, "feed_forward_length", 0, "must be positive");
    if (hp->n_ff_exp == 0) hp->n_ff_exp = n_ff / hp->n_expert_used;
    if (hp->n_ff_exp == 0)
        return plumb__fail(PLUMB_E_FORMAT,
                           "%s: the expert size is 0: qwen3moe.expert_feed_forward_length is absent (or 0) and "
                           "feed_forward_length %d / expert_used_count %d is 0",
                           m->name, n_ff, hp->n_expert_used);
    return plumb__qwen3_load(m);
}

const plumb_arch plumb__arch_qwen3moe = {"qwen3moe", qwen3moe_load, plumb__llama_build};
