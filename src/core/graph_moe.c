/* graph_moe.c — typed builders of the mixture-of-experts ops (see graph.h): the expert
 * matmul that reads only the routed experts, top-k selection, the routing weights and the
 * weighted sum of the experts' outputs. Shapes are checked here, once, so the backends can
 * trust them. */
#include "core/graph.h"

#include "core/error.h"

plumb_tensor *plumb_graph_mul_mat_id(plumb_graph *g, plumb_tensor *w, plumb_tensor *x, plumb_tensor *ids) {
    const int64_t k = ids->ne[0], T = ids->ne[1];
    PLUMB_ASSERT(ids->type == PLUMB_TYPE_I32 && ids->ne[2] == 1 && ids->ne[3] == 1);
    PLUMB_ASSERT(w->ne[3] == 1 && w->ne[2] >= k && k >= 1);
    PLUMB_ASSERT(x->type == PLUMB_TYPE_F32 && x->ne[0] == w->ne[0] && x->ne[2] == T && x->ne[3] == 1);
    PLUMB_ASSERT(x->ne[1] == 1 || x->ne[1] == k);
    const int64_t ne[3] = {w->ne[1], k, T};
    return plumb__graph_node(g, PLUMB_OP_MUL_MAT_ID, 3, ne, w, x, ids, NULL);
}

plumb_tensor *plumb_graph_top_k(plumb_graph *g, plumb_tensor *x, const plumb_top_k_params *p) {
    PLUMB_ASSERT(x->type == PLUMB_TYPE_F32 && p->k >= 1 && p->k <= x->ne[0]);
    const int64_t ne[2] = {p->k, x->ne[1] * x->ne[2] * x->ne[3]};
    plumb_tensor *t = plumb__graph_node(g, PLUMB_OP_TOP_K, 2, ne, x, NULL, NULL, p);
    t->type = PLUMB_TYPE_I32; /* 4-byte elements like F32: the strides stay */
    return t;
}

plumb_tensor *plumb_graph_moe_weights(plumb_graph *g, plumb_tensor *probs, plumb_tensor *ids,
                                      const plumb_moe_weights_params *p) {
    PLUMB_ASSERT(probs->type == PLUMB_TYPE_F32 && ids->type == PLUMB_TYPE_I32);
    PLUMB_ASSERT(ids->ne[1] == probs->ne[1] && ids->ne[0] <= probs->ne[0] && probs->ne[2] == 1 && ids->ne[2] == 1);
    return plumb__graph_node(g, PLUMB_OP_MOE_WEIGHTS, 2, ids->ne, probs, ids, NULL, p);
}

plumb_tensor *plumb_graph_moe_sum(plumb_graph *g, plumb_tensor *experts, plumb_tensor *weights) {
    PLUMB_ASSERT(experts->type == PLUMB_TYPE_F32 && weights->type == PLUMB_TYPE_F32);
    PLUMB_ASSERT(weights->ne[0] == experts->ne[1] && weights->ne[1] == experts->ne[2] && experts->ne[3] == 1);
    const int64_t ne[2] = {experts->ne[0], experts->ne[2]};
    return plumb__graph_node(g, PLUMB_OP_MOE_SUM, 2, ne, experts, weights, NULL, NULL);
}
