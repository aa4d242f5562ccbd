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

/* ROPE modes */
#define PLUMB_ROPE_NORMAL 0 /* rotate pairs (x[2i], x[2i+1]) */
#define PLUMB_ROPE_NEOX 1   /* rotate (x[i], x[i + n_rot/2]) */

#define PLUMB_MAX_SRC 4

typedef struct plumb_kv_cache plumb_kv_cache;
typedef struct plumb_buffer plumb_buffer; /* a backend's memory (backend/backend.h) */

/* ---- op parameters: one struct per op that has any; a node holds its op's in its params union.
 * Fields are read by name by the backends, and every field's meaning is stated here. */

/* The ops without parameters. */
typedef struct plumb_no_params {
    char unused;
} plumb_no_params;

typedef struct plumb_scale_params {
    float s; /* out = x * s */
} plumb_scale_params;

typedef struct plumb_rms_norm_params {
    float eps; /* each row: x / sqrt(mean(x^2) + eps) */
} plumb_rms_norm_params;

typedef struct plumb_rope_params {
    int32_t mode;      /* PLUMB_ROPE_NORMAL or PLUMB_ROPE_NEOX */
    int32_t n_rot;     /* dimensions rotated at the start of each head (even); the rest pass */
    float base;        /* theta_i = pos * base^(-2i / n_rot) */
    float freq_scale;  /* theta times this (1: none) */
    float attn_factor; /* scales cos and sin (0 or 1: none) */
} plumb_rope_params;

/* src0 q [hd, n_head, T], src1 k [hd, n_kv, T], src2 v [hd, n_kv, T], out [hd * n_head, T].
 * Token t is at position pos[t] of sequence seq[t]: its k and v are written into layer
 * `layer` of the cache, then it attends to positions [lo, pos[t]] of its sequence, where
 * lo = pos[t] - n_swa + 1 when n_swa > 0 (sliding window), else 0. The cache and the pos/seq
 * arrays are borrowed: they must outlive the graph's compute. */
typedef struct plumb_attn_params {
    plumb_kv_cache *kv;
    int32_t layer;
    int32_t n_swa;      /* 0: no window */
    const int32_t *pos; /* [T] */
    const int32_t *seq; /* [T] */
    float scale;        /* softmax scale of q.k */
    float softcap;      /* logits: tanh(x / softcap) * softcap before the scale; 0: none */
} plumb_attn_params;

typedef struct plumb_softcap_params {
    float cap; /* out = tanh(x * (1 / cap)) * cap; cap > 0 */
} plumb_softcap_params;

typedef struct plumb_soft_max_params {
    float scale; /* each row: softmax(x * scale) */
} plumb_soft_max_params;

typedef struct plumb_top_k_params {
    int32_t k; /* 1 to the row length */
} plumb_top_k_params;

typedef struct plumb_moe_weights_params {
    bool norm;   /* divide the chosen probabilities by their sum (added in double, at least 2^-14) */
    float scale; /* then times this unless it is 0 or 1 */
} plumb_moe_weights_params;

/* The op table: X(ENUM, name, n_src, params). ENUM makes PLUMB_OP_<ENUM>; name is the op's
 * name (plumb_op_name) and its member of plumb_op_params; n_src the most sources it reads
 * (the builders say which are optional); params its parameter struct. A new op is one row
 * here, its builder below, and a case in each backend (which supports_op declines until then). */
#define PLUMB_OP_TABLE(X)                                                                                             \
    /* leaf: data set by the caller */                                                                                \
    X(NONE, none, 0, plumb_no_params)                                                                                 \
    /* a reshaped view of src0's data (no compute) */                                                                 \
    X(VIEW, view, 1, plumb_no_params)                                                                                 \
    /* out[:, i] = dequant(src0[:, ids[i]]); src1: I32 ids */                                                         \
    X(GET_ROWS, get_rows, 2, plumb_no_params)                                                                         \
    /* out[n, t] = sum_k src0[k, n] * src1[k, t]; src0 any type, src1 F32 */                                          \
    X(MUL_MAT, mul_mat, 2, plumb_no_params)                                                                           \
    /* out = src0 + src1 (src1 broadcast over rows when it has one row) */                                            \
    X(ADD, add, 2, plumb_no_params)                                                                                   \
    /* out = src0 * src1 (broadcast likewise) */                                                                      \
    X(MUL, mul, 2, plumb_no_params)                                                                                   \
    X(SCALE, scale, 1, plumb_scale_params)                                                                            \
    /* then * src1 (a row) when given */                                                                              \
    X(RMS_NORM, rms_norm, 2, plumb_rms_norm_params)                                                                   \
    /* src0 [hd, n_head, T], src1 I32 positions [T], src2 optional frequency factors [n_rot / 2] */                   \
    X(ROPE, rope, 3, plumb_rope_params)                                                                               \
    /* fused KV-cache write + masked softmax attention */                                                             \
    X(ATTN, attn, 3, plumb_attn_params)                                                                               \
    /* out = x * sigmoid(x) */                                                                                        \
    X(SILU, silu, 1, plumb_no_params)                                                                                 \
    /* out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */                                                       \
    X(GELU_TANH, gelu_tanh, 1, plumb_no_params)                                                                       \
    /* out = silu(src0) * src1 (gated FFN) */                                                                         \
    X(SILU_MUL, silu_mul, 2, plumb_no_params)                                                                         \
    /* out = gelu_tanh(src0) * src1 */                                                                                \
    X(GELU_MUL, gelu_mul, 2, plumb_no_params)                                                                         \
    X(SOFTCAP, softcap, 1, plumb_softcap_params)                                                                      \
    X(SOFT_MAX, soft_max, 1, plumb_soft_max_params)                                                                   \
    /* out[:, s, t] = src0[:, :, src2[s, t]] x src1[:, s % B, t] */                                                   \
    X(MUL_MAT_ID, mul_mat_id, 3, plumb_no_params)                                                                     \
    /* I32 out[:, r]: the indices of row r's k largest values, largest first */                                       \
    X(TOP_K, top_k, 1, plumb_top_k_params)                                                                            \
    /* out[s, t] = src0[src1[s, t], t], renormalized and scaled */                                                    \
    X(MOE_WEIGHTS, moe_weights, 2, plumb_moe_weights_params)                                                          \
    /* out[:, t] = sum over s, in order, of src0[:, s, t] * src1[s, t] */                                             \
    X(MOE_SUM, moe_sum, 2, plumb_no_params)                                                                           \
    /* out = src0's bytes, moved from another backend's buffer (the scheduler inserts and runs it) */                 \
    X(COPY, copy, 1, plumb_no_params)

typedef enum plumb_op {
#define PLUMB_X(e, name, n_src, params) PLUMB_OP_##e,
    PLUMB_OP_TABLE(PLUMB_X)
#undef PLUMB_X
    PLUMB_OP_COUNT
} plumb_op;

/* A node's parameters: the member named after its op (node->params.rope, .attn, ...). */
typedef union plumb_op_params {
#define PLUMB_X(e, name, n_src, params) params name;
    PLUMB_OP_TABLE(PLUMB_X)
#undef PLUMB_X
} plumb_op_params;

/* The op's name ("rope"), or "?" out of range. */
const char *plumb_op_name(plumb_op op);
/* The most sources the op reads. */
int plumb_op_n_src(plumb_op op);

typedef struct plumb_tensor {
    int type; /* plumb_type; activations are F32, ids and positions are I32 (PLUMB_TYPE_I32) */
    int64_t ne[4];
    size_t nb[4];
    void *data;         /* host address of the data when the host can read it (see buf), else NULL */
    plumb_buffer *buf;  /* the backend buffer holding the data (NULL: host memory at data) */
    size_t offs;        /* byte offset of the data in buf */
    plumb_op op;
    struct plumb_tensor *src[PLUMB_MAX_SRC];
    plumb_op_params params; /* the member of op (set by its builder) */
    const char *name;
    /* planner state */
    int32_t id;       /* index in the graph's node list, -1 for leaves */
    int32_t last_use; /* index of the last node reading this tensor */
    bool is_output;   /* kept alive to the end of the graph */
    int16_t layer;    /* the model layer whose part of the graph made it; -1: before the first
                         layer (embeddings), n_layer: the output head */
    int8_t backend;   /* the scheduler's choice: an index into plumb_sched.backends */
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
    int16_t layer; /* the layer new tensors belong to (plumb_graph_set_layer; -1 after reset) */
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
/* Tensors made from here on belong to model layer il (-1: the embeddings, n_layer: the output
 * head): the scheduler places them by it. */
void plumb_graph_set_layer(plumb_graph *g, int il);

/* Leaves: a tensor of type and shape whose data the caller sets (weights, inputs).
 * Graphs are sized for the model when created: running out of tensors is a bug (assert). */
plumb_tensor *plumb_graph_leaf(plumb_graph *g, int type, int n_dims, const int64_t *ne, void *data);
plumb_tensor *plumb_graph_view(plumb_graph *g, plumb_tensor *src, int n_dims, const int64_t *ne);

/* ---- typed builders: one per op. Each makes an F32 node (I32 for top_k) whose buffer the
 * planner places, copies its parameters into the node, and asserts the shapes it is given
 * (a mismatch is a bug in the model code). Sources marked "or NULL" are optional. */

/* F32 [w->ne[0], ids->ne[0]]: rows ids (I32 [n]) of w (any type), dequantized. */
plumb_tensor *plumb_graph_get_rows(plumb_graph *g, plumb_tensor *w, plumb_tensor *ids);
/* F32 [w->ne[1], rows of x]: w [K, N] (any type) times each row of x (F32, ne[0] K). */
plumb_tensor *plumb_graph_mul_mat(plumb_graph *g, plumb_tensor *w, plumb_tensor *x);
/* a + b and a * b, b of a's row length and a's rows or one row (broadcast); a's shape. */
plumb_tensor *plumb_graph_add(plumb_graph *g, plumb_tensor *a, plumb_tensor *b);
plumb_tensor *plumb_graph_mul(plumb_graph *g, plumb_tensor *a, plumb_tensor *b);
plumb_tensor *plumb_graph_scale(plumb_graph *g, plumb_tensor *x, const plumb_scale_params *p);
/* Each row of x normed, then times w (F32 [x->ne[0]], or NULL). */
plumb_tensor *plumb_graph_rms_norm(plumb_graph *g, plumb_tensor *x, plumb_tensor *w, const plumb_rms_norm_params *p);
/* x [hd, n_head, T] rotated at positions pos (I32 [T]); freq_factors F32 [n_rot / 2] or NULL
 * (theta divided by them). */
plumb_tensor *plumb_graph_rope(plumb_graph *g, plumb_tensor *x, plumb_tensor *pos, plumb_tensor *freq_factors,
                               const plumb_rope_params *p);
/* [hd * n_head, T] from q [hd, n_head, T], k and v [hd, n_kv, T] (n_head a multiple of n_kv). */
plumb_tensor *plumb_graph_attn(plumb_graph *g, plumb_tensor *q, plumb_tensor *k, plumb_tensor *v,
                               const plumb_attn_params *p);
plumb_tensor *plumb_graph_silu(plumb_graph *g, plumb_tensor *x);
plumb_tensor *plumb_graph_gelu_tanh(plumb_graph *g, plumb_tensor *x);
/* act(gate) * up, both of one shape. */
plumb_tensor *plumb_graph_silu_mul(plumb_graph *g, plumb_tensor *gate, plumb_tensor *up);
plumb_tensor *plumb_graph_gelu_mul(plumb_graph *g, plumb_tensor *gate, plumb_tensor *up);
plumb_tensor *plumb_graph_softcap(plumb_graph *g, plumb_tensor *x, const plumb_softcap_params *p);
plumb_tensor *plumb_graph_soft_max(plumb_graph *g, plumb_tensor *x, const plumb_soft_max_params *p);

/* Mixture-of-experts builders (graph_moe.c).
 * mul_mat_id: w [K, N, E] (any weight type, one [K, N] matrix per expert), x F32 [K, B, T]
 * with B 1 (every slot reads the token's one row) or k, ids I32 [k, T] (each in [0, E));
 * returns F32 [N, k, T]: slot s of token t is expert ids[s, t]'s matrix times x[:, s % B, t],
 * each dot product the one MUL_MAT computes (the same kernels, so the same bits). Only the
 * experts that ids names are read. */
plumb_tensor *plumb_graph_mul_mat_id(plumb_graph *g, plumb_tensor *w, plumb_tensor *x, plumb_tensor *ids);
/* I32 [k, rows]: the indices of the k largest values of each row of x (F32 [n, rows]), largest
 * first, equal values by lower index. */
plumb_tensor *plumb_graph_top_k(plumb_graph *g, plumb_tensor *x, const plumb_top_k_params *p);
/* F32 [k, T]: probs[ids[s, t], t], normalized and scaled as p says. */
plumb_tensor *plumb_graph_moe_weights(plumb_graph *g, plumb_tensor *probs, plumb_tensor *ids,
                                      const plumb_moe_weights_params *p);
/* F32 [n, T] from experts [n, k, T] and weights [k, T]: ((e0 w0 + e1 w1) + e2 w2) + ..., each
 * product rounded before it is added. */
plumb_tensor *plumb_graph_moe_sum(plumb_graph *g, plumb_tensor *experts, plumb_tensor *weights);

/* For the builders (graph.c, graph_moe.c) only: a new node of op with type F32 and the given
 * shape, sources (at most the op's n_src, the rest NULL) and parameters (the op's struct, or
 * NULL for none). */
plumb_tensor *plumb__graph_node(plumb_graph *g, plumb_op op, int n_dims, const int64_t *ne, plumb_tensor *a,
                                plumb_tensor *b, plumb_tensor *c, const void *params);

/* Places every op output in g->pool, reusing memory of values no later node reads. If the
 * pool is too small it is grown (this happens while the largest batch is first seen, not
 * per token). Outputs marked is_output stay valid after compute. For graphs that run on the
 * CPU alone (the op tests); the scheduler places graphs that span devices. */
plumb_status plumb_graph_plan(plumb_graph *g);
/* The planner over several pools: node i (not a view) gets bytes [g->plan_offs[i], + its
 * size) of pool nodes[i]->backend, reusing memory of values no later node reads; need[p] is
 * the bytes pool p needs (n_pools of them). */
void plumb_graph_plan_pools(plumb_graph *g, int n_pools, size_t *need);
/* The tensor a chain of views ends at (t itself when it is no view). */
plumb_tensor *plumb__graph_root(plumb_tensor *t);
/* For the scheduler: a new COPY tensor of src's type and shape, not yet in the node list
 * (the caller places it). */
plumb_tensor *plumb__graph_copy_of(plumb_graph *g, plumb_tensor *src);

/* Bytes of a tensor's data (contiguous). */
size_t plumb_tensor_nbytes(const plumb_tensor *t);
int64_t plumb_tensor_nelements(const plumb_tensor *t);
/* Row size in bytes of type for ne0 elements (I32 included). */
size_t plumb_row_size(int type, int64_t ne0);

#endif
