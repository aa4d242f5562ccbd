/* moe.c — mixture-of-experts FFNs shared by the architectures that have them (llama with
 * experts, Mixtral-style; qwen3moe): the expert hyperparameters and their checks, the router
 * and expert weights, and the FFN block, which follows llama.cpp's build_moe_ffn with softmax
 * gating op for op so that its results are the reference's bits. */
#include "model/model.h"

#include "core/error.h"

#include <stdio.h>

plumb_status plumb__model_moe_hparams(plumb_model_t *m, bool required) {
    plumb_hparams *hp = &m->hp;
    plumb_status st;
    char why[128];
    hp->n_expert = hp->n_expert_used = 0;
    if ((st = plumb__model_u32(m, "expert_count", required, &hp->n_expert))) return st;
    if (hp->n_expert > PLUMB_MAX_EXPERTS) {
        snprintf(why, sizeof why, "must be at most %d", PLUMB_MAX_EXPERTS);
        return plumb__model_bad_key(m, "expert_count", hp->n_expert, why);
    }
    if (required && hp->n_expert == 0) {
        snprintf(why, sizeof why, "must be positive (%s is a mixture of experts)", m->arch->name);
        return plumb__model_bad_key(m, "expert_count", 0, why);
    }
    if ((st = plumb__model_u32(m, "expert_used_count", hp->n_expert > 0, &hp->n_expert_used))) return st;
    if (hp->n_expert == 0 && hp->n_expert_used != 0)
        return plumb__model_bad_key(m, "expert_used_count", hp->n_expert_used, "must be 0 without experts (expert_count is 0)");
    if (hp->n_expert > 0 && (hp->n_expert_used == 0 || hp->n_expert_used > hp->n_expert)) {
        snprintf(why, sizeof why, "must be 1 to expert_count (%d)", hp->n_expert);
        return plumb__model_bad_key(m, "expert_used_count", hp->n_expert_used, why);
    }
    /* both of llama.cpp's graphs (llama, qwen3moe) renormalize and do not scale, whatever the
     * file says */
    hp->expert_weights_norm = true;
    hp->expert_weights_scale = 0.0f;
    return PLUMB_OK;
}

/* Where n_ff_exp came from, for messages: "<arch>.<key>" (or the quotient qwen3moe takes). */
static void expert_size_source(const plumb_model_t *m, char *buf, size_t cap) {
    int32_t v = -1;
    if (plumb__model_u32(m, "expert_feed_forward_length", false, &v) == PLUMB_OK && v == m->hp.n_ff_exp)
        snprintf(buf, cap, "%s.expert_feed_forward_length", m->arch->name);
    else if (m->hp.n_ff_exp == m->hp.n_ff)
        snprintf(buf, cap, "%s.feed_forward_length", m->arch->name);
    else
        snprintf(buf, cap, "%s.feed_forward_length %d / expert_used_count %d", m->arch->name, m->hp.n_ff,
                 m->hp.n_expert_used);
}

/* Looks up expert tensor "blk.<il>.<suffix>" of shape ne (n_dims dims: the experts along
 * the last, the expert size along fdim, or fdim -1 for the router). A tensor that exists
 * with another number of experts, or experts of another size, is reported with the
 * hyperparameter it contradicts. */
static plumb_status expert_tensor(plumb_model_t *m, int il, const char *suffix, int n_dims, const int64_t *ne, int fdim,
                                  plumb_tensor **out) {
    char name[96], src[160];
    snprintf(name, sizeof name, "blk.%d.%s", il, suffix);
    const int64_t i = plumb_gguf_find_tensor(m->gguf, name);
    const int edim = n_dims - 1, ddim = fdim == 0 ? 1 : 0; /* experts; n_embd */
    if (i >= 0) {
        plumb_gguf_tensor_info info;
        plumb_gguf_tensor(m->gguf, i, &info);
        if ((int)info.n_dims == n_dims && info.ne[ddim] == ne[ddim] && info.ne[edim] != ne[edim])
            return plumb__fail(PLUMB_E_FORMAT, "%s: tensor '%s' holds %lld experts but %s.expert_count is %d", m->name, name,
                               (long long)info.ne[edim], m->arch->name, m->hp.n_expert);
        if (fdim >= 0 && (int)info.n_dims == n_dims && info.ne[ddim] == ne[ddim] && info.ne[fdim] != ne[fdim]) {
            expert_size_source(m, src, sizeof src);
            return plumb__fail(PLUMB_E_FORMAT, "%s: tensor '%s' has experts of size %lld, but the expert size is %lld (%s)",
                               m->name, name, (long long)info.ne[fdim], (long long)ne[fdim], src);
        }
    }
    return plumb__model_tensor(m, name, n_dims, ne, false, out);
}

plumb_status plumb__model_moe_layer(plumb_model_t *m, int il, plumb_layer_weights *L) {
    const plumb_hparams *hp = &m->hp;
    const int64_t D = hp->n_embd, F = hp->n_ff_exp, E = hp->n_expert;
    const int64_t router[2] = {D, E}, up[3] = {D, F, E}, down[3] = {F, D, E};
    plumb_status st;
    if ((st = expert_tensor(m, il, "ffn_gate_inp.weight", 2, router, -1, &L->ffn_gate_inp)) ||
        (st = expert_tensor(m, il, "ffn_gate_exps.weight", 3, up, 1, &L->ffn_gate_exps)) ||
        (st = expert_tensor(m, il, "ffn_up_exps.weight", 3, up, 1, &L->ffn_up_exps)) ||
        (st = expert_tensor(m, il, "ffn_down_exps.weight", 3, down, 0, &L->ffn_down_exps)))
        return st;
    return PLUMB_OK;
}

plumb_tensor *plumb__build_moe_ffn(const plumb_model_t *m, plumb_graph *g, int il, plumb_tensor *h) {
    const plumb_hparams *hp = &m->hp;
    const plumb_layer_weights *L = &m->layers[il];
    const int64_t T = h->ne[1];
    /* routing: the probabilities of every expert, the chosen ones, their weights */
    plumb_tensor *probs = plumb__build_matmul(g, L->ffn_gate_inp, h, NULL); /* [n_expert, T] */
    probs = plumb_graph_soft_max(g, probs, &(plumb_soft_max_params){.scale = 1.0f});
    plumb_tensor *ids = plumb_graph_top_k(g, probs, &(plumb_top_k_params){.k = hp->n_expert_used}); /* [k, T] */
    plumb_tensor *w = plumb_graph_moe_weights(
        g, probs, ids, &(plumb_moe_weights_params){.norm = hp->expert_weights_norm, .scale = hp->expert_weights_scale});
    /* the routed experts: every slot of a token reads its one row of h */
    const int64_t xs[3] = {hp->n_embd, 1, T};
    plumb_tensor *x = plumb_graph_view(g, h, 3, xs);
    plumb_tensor *up = plumb_graph_mul_mat_id(g, L->ffn_up_exps, x, ids);     /* [n_ff_exp, k, T] */
    plumb_tensor *gate = plumb_graph_mul_mat_id(g, L->ffn_gate_exps, x, ids); /* [n_ff_exp, k, T] */
    plumb_tensor *f = plumb_graph_silu_mul(g, gate, up);
    plumb_tensor *down = plumb_graph_mul_mat_id(g, L->ffn_down_exps, f, ids); /* [n_embd, k, T] */
    return plumb_graph_moe_sum(g, down, w);
}
