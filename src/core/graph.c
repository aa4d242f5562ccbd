/* graph.c — the op table's names and sizes, the typed builders of the dense ops (the
 * mixture-of-experts ones are in graph_moe.c), and the memory planner that places op
 * outputs in one pool, reusing the memory of values whose last reader has run. */
#include "core/graph.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

#define POOL_ALIGN 64

static const char *const op_names[PLUMB_OP_COUNT] = {
#define PLUMB_X(e, name, n_src, params) #name,
    PLUMB_OP_TABLE(PLUMB_X)
#undef PLUMB_X
};

static const int op_n_src[PLUMB_OP_COUNT] = {
#define PLUMB_X(e, name, n_src, params) n_src,
    PLUMB_OP_TABLE(PLUMB_X)
#undef PLUMB_X
};

static const size_t op_params_size[PLUMB_OP_COUNT] = {
#define PLUMB_X(e, name, n_src, params) sizeof(params),
    PLUMB_OP_TABLE(PLUMB_X)
#undef PLUMB_X
};

const char *plumb_op_name(plumb_op op) { return (int)op >= 0 && op < PLUMB_OP_COUNT ? op_names[op] : "?"; }
int plumb_op_n_src(plumb_op op) { return (int)op >= 0 && op < PLUMB_OP_COUNT ? op_n_src[op] : 0; }

size_t plumb_row_size(int type, int64_t ne0) {
    if (type == PLUMB_TYPE_I32) return (size_t)ne0 * 4;
    uint64_t n = 0;
    if (plumb_type_row_bytes(type, ne0, &n) != PLUMB_OK) return 0;
    return (size_t)n;
}

int64_t plumb_tensor_nelements(const plumb_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

size_t plumb_tensor_nbytes(const plumb_tensor *t) { return t->nb[1] * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]); }

/* A free span of the activation pool (the planner's). */
typedef struct block {
    size_t off, size;
} block;

plumb_status plumb_graph_init(plumb_graph *g, int32_t max_tensors) {
    memset(g, 0, sizeof *g);
    g->tensors = calloc((size_t)max_tensors, sizeof *g->tensors);
    g->nodes = calloc((size_t)max_tensors, sizeof *g->nodes);
    g->plan_free = calloc((size_t)max_tensors + 2, sizeof(block));
    g->plan_offs = calloc((size_t)max_tensors, sizeof *g->plan_offs);
    g->plan_order = calloc((size_t)max_tensors, sizeof *g->plan_order);
    g->plan_head = calloc((size_t)max_tensors + 1, sizeof *g->plan_head);
    if (!g->tensors || !g->nodes || !g->plan_free || !g->plan_offs || !g->plan_order || !g->plan_head) {
        plumb_graph_free(g);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory for a graph of %d tensors", max_tensors);
    }
    g->cap_tensors = g->cap_nodes = max_tensors;
    g->layer = -1;
    return PLUMB_OK;
}

void plumb_graph_free(plumb_graph *g) {
    free(g->tensors);
    free(g->nodes);
    free(g->pool);
    free(g->plan_free);
    free(g->plan_offs);
    free(g->plan_order);
    free(g->plan_head);
    memset(g, 0, sizeof *g);
}

void plumb_graph_reset(plumb_graph *g) {
    g->n_tensors = 0;
    g->n_nodes = 0;
    g->layer = -1;
}

void plumb_graph_set_layer(plumb_graph *g, int il) { g->layer = (int16_t)il; }

static plumb_tensor *new_tensor(plumb_graph *g, int type, int n_dims, const int64_t *ne) {
    PLUMB_ASSERT(g->n_tensors < g->cap_tensors); /* graphs are sized for the model up front */
    plumb_tensor *t = &g->tensors[g->n_tensors++];
    memset(t, 0, sizeof *t);
    t->type = type;
    for (int d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nb[0] = type == PLUMB_TYPE_I32 ? 4 : (size_t)(plumb_type_block_bytes(type) / (size_t)plumb_type_block_size(type));
    t->nb[1] = plumb_row_size(type, t->ne[0]);
    t->nb[2] = t->nb[1] * (size_t)t->ne[1];
    t->nb[3] = t->nb[2] * (size_t)t->ne[2];
    t->id = -1;
    t->last_use = -1;
    t->layer = g->layer;
    return t;
}

plumb_tensor *plumb_graph_leaf(plumb_graph *g, int type, int n_dims, const int64_t *ne, void *data) {
    plumb_tensor *t = new_tensor(g, type, n_dims, ne);
    t->data = data;
    return t;
}

static plumb_tensor *add_node(plumb_graph *g, plumb_tensor *t) {
    PLUMB_ASSERT(g->n_nodes < g->cap_nodes);
    t->id = g->n_nodes;
    g->nodes[g->n_nodes++] = t;
    return t;
}

plumb_tensor *plumb__graph_copy_of(plumb_graph *g, plumb_tensor *src) {
    plumb_tensor *t = new_tensor(g, src->type, 4, src->ne);
    t->op = PLUMB_OP_COPY;
    t->src[0] = src;
    t->layer = src->layer;
    return t;
}

plumb_tensor *plumb__graph_node(plumb_graph *g, plumb_op op, int n_dims, const int64_t *ne, plumb_tensor *a,
                                plumb_tensor *b, plumb_tensor *c, const void *params) {
    PLUMB_ASSERT(op > PLUMB_OP_VIEW && op < PLUMB_OP_COUNT);
    PLUMB_ASSERT((c ? 3 : b ? 2 : a ? 1 : 0) <= op_n_src[op]);
    plumb_tensor *t = new_tensor(g, PLUMB_TYPE_F32, n_dims, ne);
    t->op = op;
    t->src[0] = a;
    t->src[1] = b;
    t->src[2] = c;
    if (params) memcpy(&t->params, params, op_params_size[op]);
    return add_node(g, t);
}

plumb_tensor *plumb_graph_view(plumb_graph *g, plumb_tensor *src, int n_dims, const int64_t *ne) {
    plumb_tensor *t = new_tensor(g, src->type, n_dims, ne);
    PLUMB_ASSERT(plumb_tensor_nelements(t) == plumb_tensor_nelements(src));
    t->op = PLUMB_OP_VIEW;
    t->src[0] = src;
    if (src->op == PLUMB_OP_NONE) { /* a view of a leaf is itself a leaf */
        t->op = PLUMB_OP_NONE;
        t->data = src->data;
        t->buf = src->buf;
        t->offs = src->offs;
        return t;
    }
    return add_node(g, t);
}

/* ---- typed builders ------------------------------------------------------------------------ */

static int64_t rows_of(const plumb_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

plumb_tensor *plumb_graph_get_rows(plumb_graph *g, plumb_tensor *w, plumb_tensor *ids) {
    PLUMB_ASSERT(ids->type == PLUMB_TYPE_I32 && rows_of(ids) == 1);
    const int64_t ne[2] = {w->ne[0], ids->ne[0]};
    return plumb__graph_node(g, PLUMB_OP_GET_ROWS, 2, ne, w, ids, NULL, NULL);
}

plumb_tensor *plumb_graph_mul_mat(plumb_graph *g, plumb_tensor *w, plumb_tensor *x) {
    PLUMB_ASSERT(x->type == PLUMB_TYPE_F32 && x->ne[0] == w->ne[0]);
    const int64_t ne[2] = {w->ne[1], rows_of(x)};
    return plumb__graph_node(g, PLUMB_OP_MUL_MAT, 2, ne, w, x, NULL, NULL);
}

/* An elementwise node of x's shape. */
static plumb_tensor *like(plumb_graph *g, plumb_op op, plumb_tensor *x, plumb_tensor *y, const void *params) {
    PLUMB_ASSERT(x->type == PLUMB_TYPE_F32 && (!y || y->type == PLUMB_TYPE_F32));
    return plumb__graph_node(g, op, 4, x->ne, x, y, NULL, params);
}

static plumb_tensor *binary(plumb_graph *g, plumb_op op, plumb_tensor *a, plumb_tensor *b) {
    PLUMB_ASSERT(b->ne[0] == a->ne[0] && (rows_of(b) == 1 || rows_of(b) == rows_of(a)));
    return like(g, op, a, b, NULL);
}

plumb_tensor *plumb_graph_add(plumb_graph *g, plumb_tensor *a, plumb_tensor *b) { return binary(g, PLUMB_OP_ADD, a, b); }
plumb_tensor *plumb_graph_mul(plumb_graph *g, plumb_tensor *a, plumb_tensor *b) { return binary(g, PLUMB_OP_MUL, a, b); }

plumb_tensor *plumb_graph_scale(plumb_graph *g, plumb_tensor *x, const plumb_scale_params *p) {
    return like(g, PLUMB_OP_SCALE, x, NULL, p);
}

plumb_tensor *plumb_graph_rms_norm(plumb_graph *g, plumb_tensor *x, plumb_tensor *w, const plumb_rms_norm_params *p) {
    PLUMB_ASSERT(!w || (w->type == PLUMB_TYPE_F32 && w->ne[0] == x->ne[0]));
    return like(g, PLUMB_OP_RMS_NORM, x, w, p);
}

plumb_tensor *plumb_graph_rope(plumb_graph *g, plumb_tensor *x, plumb_tensor *pos, plumb_tensor *freq_factors,
                               const plumb_rope_params *p) {
    PLUMB_ASSERT(x->type == PLUMB_TYPE_F32 && x->ne[3] == 1);
    PLUMB_ASSERT(pos->type == PLUMB_TYPE_I32 && pos->ne[0] == x->ne[2]);
    PLUMB_ASSERT(p->n_rot > 0 && p->n_rot % 2 == 0 && p->n_rot <= x->ne[0]);
    PLUMB_ASSERT(!freq_factors || (freq_factors->type == PLUMB_TYPE_F32 && freq_factors->ne[0] >= p->n_rot / 2));
    return plumb__graph_node(g, PLUMB_OP_ROPE, 3, x->ne, x, pos, freq_factors, p);
}

plumb_tensor *plumb_graph_attn(plumb_graph *g, plumb_tensor *q, plumb_tensor *k, plumb_tensor *v,
                               const plumb_attn_params *p) {
    PLUMB_ASSERT(p->kv && p->pos && p->seq);
    PLUMB_ASSERT(k->ne[0] == q->ne[0] && v->ne[0] == q->ne[0] && k->ne[1] == v->ne[1] && k->ne[1] > 0);
    PLUMB_ASSERT(q->ne[1] % k->ne[1] == 0 && k->ne[2] == q->ne[2] && v->ne[2] == q->ne[2]);
    const int64_t ne[2] = {q->ne[0] * q->ne[1], q->ne[2]};
    return plumb__graph_node(g, PLUMB_OP_ATTN, 2, ne, q, k, v, p);
}

plumb_tensor *plumb_graph_silu(plumb_graph *g, plumb_tensor *x) { return like(g, PLUMB_OP_SILU, x, NULL, NULL); }
plumb_tensor *plumb_graph_gelu_tanh(plumb_graph *g, plumb_tensor *x) { return like(g, PLUMB_OP_GELU_TANH, x, NULL, NULL); }

plumb_tensor *plumb_graph_silu_mul(plumb_graph *g, plumb_tensor *gate, plumb_tensor *up) {
    PLUMB_ASSERT(plumb_tensor_nelements(up) == plumb_tensor_nelements(gate));
    return like(g, PLUMB_OP_SILU_MUL, gate, up, NULL);
}

plumb_tensor *plumb_graph_gelu_mul(plumb_graph *g, plumb_tensor *gate, plumb_tensor *up) {
    PLUMB_ASSERT(plumb_tensor_nelements(up) == plumb_tensor_nelements(gate));
    return like(g, PLUMB_OP_GELU_MUL, gate, up, NULL);
}

plumb_tensor *plumb_graph_softcap(plumb_graph *g, plumb_tensor *x, const plumb_softcap_params *p) {
    PLUMB_ASSERT(p->cap > 0.0f);
    return like(g, PLUMB_OP_SOFTCAP, x, NULL, p);
}

plumb_tensor *plumb_graph_soft_max(plumb_graph *g, plumb_tensor *x, const plumb_soft_max_params *p) {
    return like(g, PLUMB_OP_SOFT_MAX, x, NULL, p);
}

/* ---- planner ----------------------------------------------------------------------------- */

typedef struct allocator {
    block *free; /* sorted by offset, coalesced */
    int n_free, cap_free;
    size_t top; /* high-water mark */
} allocator;

static size_t alloc_block(allocator *a, size_t size) {
    int best = -1;
    for (int i = 0; i < a->n_free; i++) /* best fit */
        if (a->free[i].size >= size && (best < 0 || a->free[i].size < a->free[best].size)) best = i;
    if (best >= 0) {
        size_t off = a->free[best].off;
        a->free[best].off += size;
        a->free[best].size -= size;
        if (a->free[best].size == 0) {
            memmove(&a->free[best], &a->free[best + 1], (size_t)(a->n_free - best - 1) * sizeof(block));
            a->n_free--;
        }
        return off;
    }
    /* grow at the top, absorbing a free block that ends at the top */
    if (a->n_free && a->free[a->n_free - 1].off + a->free[a->n_free - 1].size == a->top) {
        size_t off = a->free[a->n_free - 1].off;
        a->n_free--;
        a->top = off + size;
        return off;
    }
    size_t off = a->top;
    a->top += size;
    return off;
}

static void free_block(allocator *a, size_t off, size_t size) {
    int i = 0;
    while (i < a->n_free && a->free[i].off < off) i++;
    PLUMB_ASSERT(a->n_free < a->cap_free);
    memmove(&a->free[i + 1], &a->free[i], (size_t)(a->n_free - i) * sizeof(block));
    a->free[i] = (block){off, size};
    a->n_free++;
    if (i + 1 < a->n_free && a->free[i].off + a->free[i].size == a->free[i + 1].off) { /* merge next */
        a->free[i].size += a->free[i + 1].size;
        memmove(&a->free[i + 1], &a->free[i + 2], (size_t)(a->n_free - i - 2) * sizeof(block));
        a->n_free--;
    }
    if (i > 0 && a->free[i - 1].off + a->free[i - 1].size == a->free[i].off) { /* merge previous */
        a->free[i - 1].size += a->free[i].size;
        memmove(&a->free[i], &a->free[i + 1], (size_t)(a->n_free - i - 1) * sizeof(block));
        a->n_free--;
    }
}

static plumb_tensor *root_of(plumb_tensor *t) {
    while (t->op == PLUMB_OP_VIEW) t = t->src[0];
    return t;
}

static size_t aligned_size(const plumb_tensor *t) {
    return (plumb_tensor_nbytes(t) + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN;
}

plumb_tensor *plumb__graph_root(plumb_tensor *t) { return root_of(t); }

void plumb_graph_plan_pools(plumb_graph *g, int n_pools, size_t *need) {
    for (int32_t i = 0; i < g->n_nodes; i++) g->nodes[i]->last_use = i;
    for (int32_t i = 0; i < g->n_nodes; i++) {
        plumb_tensor *n = g->nodes[i];
        for (int s = 0; s < PLUMB_MAX_SRC; s++) {
            if (!n->src[s]) continue;
            plumb_tensor *r = root_of(n->src[s]);
            if (r->id >= 0 && r->last_use < i) r->last_use = i;
        }
        if (n->op == PLUMB_OP_VIEW) { /* a view keeps its root alive as long as itself */
            plumb_tensor *r = root_of(n);
            if (n->is_output) r->is_output = true;
        }
    }
    /* propagate view lifetimes to roots (views are read later than they are made) */
    for (int32_t i = g->n_nodes - 1; i >= 0; i--) {
        plumb_tensor *n = g->nodes[i];
        if (n->op != PLUMB_OP_VIEW) continue;
        plumb_tensor *r = root_of(n);
        if (r->last_use < n->last_use) r->last_use = n->last_use;
    }
    size_t *offs = g->plan_offs;
    /* head[i], then order[] from it: the nodes whose memory is released after node i */
    int32_t *order = g->plan_order, *head = g->plan_head;
    for (int pool = 0; pool < n_pools; pool++) {
        allocator a = {0};
        a.cap_free = g->n_nodes + 2;
        a.free = g->plan_free;
        for (int32_t i = 0; i <= g->n_nodes; i++) head[i] = -1;
        for (int32_t i = 0; i < g->n_nodes; i++) {
            plumb_tensor *n = g->nodes[i];
            if (n->op == PLUMB_OP_VIEW || n->is_output || n->backend != pool) continue;
            order[i] = head[n->last_use];
            head[n->last_use] = i;
        }
        for (int32_t i = 0; i < g->n_nodes; i++) {
            plumb_tensor *n = g->nodes[i];
            if (n->op != PLUMB_OP_VIEW && n->backend == pool) offs[i] = alloc_block(&a, aligned_size(n));
            for (int32_t j = head[i]; j >= 0; j = order[j]) free_block(&a, offs[j], aligned_size(g->nodes[j]));
        }
        need[pool] = a.top;
    }
}

plumb_status plumb_graph_plan(plumb_graph *g) {
    for (int32_t i = 0; i < g->n_nodes; i++) g->nodes[i]->backend = 0;
    plumb_graph_plan_pools(g, 1, &g->pool_need);
    if (g->pool_need > g->pool_size) {
        free(g->pool);
        size_t size = (g->pool_need + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN;
        g->pool = aligned_alloc(POOL_ALIGN, size ? size : POOL_ALIGN);
        g->pool_size = g->pool ? size : 0;
        if (!g->pool) {
            return plumb__fail(PLUMB_E_NOMEM, "out of memory for %zu bytes of activations", size);
        }
    }
    for (int32_t i = 0; i < g->n_nodes; i++) {
        plumb_tensor *n = g->nodes[i];
        if (n->op != PLUMB_OP_VIEW) n->data = g->pool + g->plan_offs[i];
    }
    for (int32_t i = 0; i < g->n_nodes; i++) { /* views after their roots have data */
        plumb_tensor *n = g->nodes[i];
        if (n->op == PLUMB_OP_VIEW) n->data = root_of(n)->data;
    }
    return PLUMB_OK;
}
