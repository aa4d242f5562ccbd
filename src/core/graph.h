/* graph.h — tensors and compute graphs.
 *
 * A model builds, for each batch, a graph of ops over tensors: leaves are weights (data in
 * the model file's mapping) and inputs (token ids, positions); every other node is an op
 * whose output buffer the graph's planner places in one reusable pool, reusing memory once
 * a value is dead. Backends (src/backend/) execute graphs. Tensors are up to 4-D with
 * ne[0] fastest; a row is ne[0] elements of one type; nb[] are strides in bytes.
 */
#ifndef PLUMB_CORE_GRAPH_H
#define PLUMB_CORE_GRAPH_H

#include "plumb.h"

#include <stddef.h>

typedef enum plumb_op {
    PLUMB_OP_NONE,      /* leaf: data set by the caller */
    PLUMB_OP_VIEW,      /* a reshaped view of src[0]'s data (no compute) */
    PLUMB_OP_GET_ROWS,  /* out[:, i] = dequant(src0[:, ids[i]]); src1: I32 ids */
    PLUMB_OP_MUL_MAT,   /* out[n, t] = sum_k src0[k, n] * src1[k, t]; src0 any type, src1 F32 */
    PLUMB_OP_ADD,       /* out = src0 + src1 (src1 broadcast over rows when it has one row) */
    PLUMB_OP_MUL,       /* out = src0 * src1 (broadcast likewise) */
    PLUMB_OP_SCALE,     /* out = src0 * f[0] */
    PLUMB_OP_RMS_NORM,  /* each row: x / sqrt(mean(x^2) + f[0]); then * src1 (row) when given */
    PLUMB_OP_ROPE,      /* src0 [hd, n_head, T], src1 I32 positions [T], src2 optional freq factors;
                         * i[0] mode, i[1] n_rot, f[0] base, f[1] freq scale, f[2] attn factor
                         * (scales cos and sin; 0 = 1) */
    PLUMB_OP_ATTN,      /* fused KV-cache write + masked softmax attention; see plumb_attn_params;
                         * f[0] softmax scale, f[1] logit soft-cap (0 = none) */
    PLUMB_OP_SILU,      /* out = x * sigmoid(x) */
    PLUMB_OP_GELU_TANH, /* out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    PLUMB_OP_SILU_MUL,  /* out = silu(src0) * src1 (gated FFN) */
    PLUMB_OP_GELU_MUL,  /* out = gelu_tanh(src0) * src1 */
    PLUMB_OP_SOFTCAP,   /* out = tanh(x * (1 / f[0])) * f[0] */
    PLUMB_OP_SOFT_MAX,  /* each row: softmax(x * f[0]) */
    /* mixture of experts (typed builders below) */
    PLUMB_OP_MUL_MAT_ID,     /* out[:, s, t] = src0[:, :, src2[s, t]] x src1[:, s % B, t] (plumb_graph_mul_mat_id) */
    PLUMB_OP_TOP_K,          /* I32 out[:, r]: the indices of row r's k largest values, largest first */
    PLUMB_OP_MOE_WEIGHTS,    /* out[s, t] = src0[src1[s, t], t], renormalized and scaled (plumb_graph_moe_weights) */
    PLUMB_OP_MOE_SUM,        /* out[:, t] = sum over s, in order, of src0[:, s, t] * src1[s, t] */
    PLUMB_OP_COUNT
} plumb_op;

/* ROPE modes */
#define PLUMB_ROPE_NORMAL 0 /* rotate pairs (x[2i], x[2i+1]) */
#define PLUMB_ROPE_NEOX 1   /* rotate (x[i], x[i + n_rot/2]) */

#define PLUMB_MAX_SRC 4

typedef struct plumb_kv_cache plumb_kv_cache;

/* Parameters of PLUMB_OP_ATTN (held by the graph, pointed to by the node).
 * src0 q [hd, n_head, T] (already scaled), src1 k [hd, n_kv, T], src2 v [hd, n_kv, T],
 * out [hd * n_head, T]. Token t is at position pos[t] of sequence seq[t]: its k and v are
 * written into the cache, then it attends to positions [lo, pos[t]] of its sequence, where
 * lo = pos[t] - n_swa + 1 when n_swa > 0 (sliding window), else 0. */
typedef struct plumb_attn_params {
    plumb_kv_cache *kv;
    int layer;
    int n_swa;
    const int32_t *pos; /* [T] */
    const int32_t *seq; /* [T] */
} plumb_attn_params;

typedef struct plumb_tensor {
    int type; /* plumb_type; activations are F32, ids and positions are I32 (PLUMB_TYPE_I32) */
    int64_t ne[4];
    size_t nb[4];
    void *data;
    plumb_op op;
    struct plumb_tensor *src[PLUMB_MAX_SRC];
    float fparams[8];
    int32_t iparams[8];
    const void *pparams; /* op-specific struct (plumb_attn_params) */
    const char *name;
    /* planner state */
    int32_t id;       /* index in the graph's node list, -1 for leaves */
    int32_t last_use; /* index of the last node reading this tensor */
    bool is_output;   /* kept alive to the end of the graph */
} plumb_tensor;

/* I32 is an internal activation type (not a GGUF tensor type). */
#define PLUMB_TYPE_I32 (PLUMB_TYPE_COUNT + 1)

/* A graph: nodes in execution order plus the tensor structs it made. Built anew for each
 * batch in memory reserved once (plumb_graph_reset keeps the allocations). */
typedef struct plumb_graph {
    plumb_tensor *tensors; /* every tensor struct made by this graph */
    int32_t n_tensors, cap_tensors;
    plumb_tensor **nodes; /* op nodes in execution order */
    int32_t n_nodes, cap_nodes;
    plumb_attn_params *attn; /* parameter blocks for ATTN nodes */
    int32_t n_attn, cap_attn;
    uint8_t *pool;    /* activation memory for op outputs */
    size_t pool_size; /* bytes in pool */
    size_t pool_need; /* bytes the last plan needed */
    /* the planner's working arrays, sized for cap_nodes once, so that planning a graph (once
     * per decode) allocates nothing */
    void *plan_free;       /* free blocks of the pool, cap_nodes + 2 */
    size_t *plan_offs;     /* [cap_nodes] */
    int32_t *plan_order;   /* [cap_nodes] */
    int32_t *plan_head;    /* [cap_nodes + 1] */
} plumb_graph;

plumb_status plumb_graph_init(plumb_graph *g, int32_t max_tensors);
void plumb_graph_free(plumb_graph *g);
/* Forgets all tensors and nodes (memory kept). */
void plumb_graph_reset(plumb_graph *g);

/* Leaves: a tensor of type and shape whose data the caller sets (weights, inputs).
 * Graphs are sized for the model when created: running out of tensors is a bug (assert). */
plumb_tensor *plumb_graph_leaf(plumb_graph *g, int type, int n_dims, const int64_t *ne, void *data);
/* A new F32 op node of the given shape with sources; its buffer is placed by the planner. */
plumb_tensor *plumb_graph_op(plumb_graph *g, plumb_op op, int n_dims, const int64_t *ne, plumb_tensor *a,
                             plumb_tensor *b, plumb_tensor *c);
plumb_tensor *plumb_graph_view(plumb_graph *g, plumb_tensor *src, int n_dims, const int64_t *ne);
plumb_attn_params *plumb_graph_attn_params(plumb_graph *g);

/* Mixture-of-experts builders (graph_moe.c); each asserts the shapes it is given.
 * mul_mat_id: w [K, N, E] (any weight type, one [K, N] matrix per expert), x F32 [K, B, T]
 * with B 1 (every slot reads the token's one row) or k, ids I32 [k, T] (each in [0, E));
 * returns F32 [N, k, T]: slot s of token t is expert ids[s, t]'s matrix times x[:, s % B, t],
 * each dot product the one MUL_MAT computes (the same kernels, so the same bits). Only the
 * experts that ids names are read. */
plumb_tensor *plumb_graph_mul_mat_id(plumb_graph *g, plumb_tensor *w, plumb_tensor *x, plumb_tensor *ids);
/* I32 [k, rows]: the indices of the k largest values of each row of x (F32 [n, rows]), largest
 * first, equal values by lower index. */
plumb_tensor *plumb_graph_top_k(plumb_graph *g, plumb_tensor *x, int k);
/* F32 [k, T]: probs[ids[s, t], t]; when norm, divided by their sum (added in double, rounded
 * to float, at least 2^-14); then times scale unless scale is 0 or 1. */
plumb_tensor *plumb_graph_moe_weights(plumb_graph *g, plumb_tensor *probs, plumb_tensor *ids, bool norm, float scale);
/* F32 [n, T] from experts [n, k, T] and weights [k, T]: ((e0 w0 + e1 w1) + e2 w2) + ..., each
 * product rounded before it is added. */
plumb_tensor *plumb_graph_moe_sum(plumb_graph *g, plumb_tensor *experts, plumb_tensor *weights);

/* Places every op output in g->pool, reusing memory of values no later node reads. If the
 * pool is too small it is grown (this happens while the largest batch is first seen, not
 * per token). Outputs marked is_output stay valid after compute. */
plumb_status plumb_graph_plan(plumb_graph *g);

/* Bytes of a tensor's data (contiguous). */
size_t plumb_tensor_nbytes(const plumb_tensor *t);
int64_t plumb_tensor_nelements(const plumb_tensor *t);
/* Row size in bytes of type for ne0 elements (I32 included). */
size_t plumb_row_size(int type, int64_t ne0);

#endif
