/* sched.c — the scheduler: which backend runs each node of a graph, the copies where a value
 * crosses between backends, where every output lives, and the graph's run, one backend's
 * consecutive nodes at a time.
 *
 * A node goes to the device (backends[1]) when its layer is in the offloaded range and the
 * device supports it, else to the CPU; a view goes with what it views, and a leaf lives
 * where its buffer is (weights were placed at load, inputs are host arrays). A node that
 * reads a value held by another backend reads a COPY of it, made once per value and backend
 * right before the first reader, so the copies of one boundary are all made between the two
 * runs. Each backend's outputs are planned into its own pool, which only grows. */
#include "backend/backend.h"

#include "core/error.h"
#include "core/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#define POOL_ALIGN 64

void plumb_sched_free(plumb_sched *s) {
    for (int b = 0; b < PLUMB_MAX_BACKENDS; b++) plumb_buffer_free(s->pools[b]);
    free(s->stage);
    free(s->scratch);
    free(s->reads);
    s->reads = NULL, s->reads_cap = 0;
    memset(s->pools, 0, sizeof s->pools);
    memset(s->pool_size, 0, sizeof s->pool_size);
    s->stage = NULL, s->stage_size = 0;
    s->scratch = NULL, s->scratch_cap = 0;
}

/* Which backend holds a leaf's data: its buffer's, or the CPU for host memory. */
static int leaf_backend(const plumb_sched *s, const plumb_tensor *t) {
    if (!t->buf) return 0;
    for (int b = 0; b < s->n_backends; b++)
        if (s->backends[b] == t->buf->backend) return b;
    PLUMB_ASSERT(!"a tensor lives in a backend the scheduler does not have");
    return 0;
}

static int holder(const plumb_sched *s, plumb_tensor *t) {
    t = plumb__graph_root(t);
    return t->op == PLUMB_OP_NONE ? leaf_backend(s, t) : t->backend;
}

static plumb_status assign(plumb_sched *s, plumb_graph *g) {
    for (int32_t i = 0; i < g->n_nodes; i++) {
        plumb_tensor *n = g->nodes[i];
        if (n->op == PLUMB_OP_VIEW) {
            n->backend = (int8_t)holder(s, n->src[0]);
            continue;
        }
        int b = 0;
        if (s->n_backends > 1 && n->layer >= s->layer_first && n->layer < s->layer_end) b = 1;
        if (n->op == PLUMB_OP_ATTN) { /* where the layer's cache is */
            const plumb_attn_params *a = &n->params.attn;
            const plumb_buffer *k = a->kv->k_buf ? a->kv->k_buf[a->layer] : NULL;
            b = k ? leaf_backend(s, &(plumb_tensor){.buf = (plumb_buffer *)k}) : 0;
            if (!s->backends[b]->iface->supports_op(s->backends[b], n))
                return plumb__fail(PLUMB_E_UNSUPPORTED, "%s cannot run the attention of layer %d (head size %lld)",
                                   s->backends[b]->iface->name, a->layer, (long long)n->src[0]->ne[0]);
        } else if (b && !s->backends[b]->iface->supports_op(s->backends[b], n)) {
            b = 0;
        }
        n->backend = (int8_t)b;
    }
    return PLUMB_OK;
}

static plumb_status reserve_scratch(plumb_sched *s, size_t n) {
    if (n <= s->scratch_cap) return PLUMB_OK;
    plumb_tensor **p = realloc(s->scratch, n * sizeof *p);
    if (!p) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the scheduler");
    s->scratch = p, s->scratch_cap = n;
    return PLUMB_OK;
}

/* Rewrites g's node list with a COPY of each value a node reads from another backend: a
 * leaf's (inputs such as positions) at the start of the graph, a node's right before its
 * first reader on that backend. */
static plumb_status insert_copies(plumb_sched *s, plumb_graph *g) {
    const size_t nb = (size_t)s->n_backends, cap = (size_t)g->cap_tensors, cap_nodes = (size_t)g->cap_nodes;
    plumb_status st = reserve_scratch(s, 2 * cap_nodes + cap * nb);
    if (st) return st;
    plumb_tensor **order = s->scratch, **front = s->scratch + cap_nodes, **copies = s->scratch + 2 * cap_nodes;
    memset(copies, 0, cap * nb * sizeof *copies);
    int32_t n = 0, n_front = 0;
    s->n_copies = 0;
    for (int32_t i = 0; i < g->n_nodes; i++) {
        plumb_tensor *node = g->nodes[i];
        for (int k = 0; k < PLUMB_MAX_SRC && node->op != PLUMB_OP_VIEW; k++) {
            plumb_tensor *src = node->src[k];
            if (!src || holder(s, src) == node->backend) continue;
            plumb_tensor *found = NULL, **slot = &found;
            if (src >= g->tensors && src < g->tensors + g->n_tensors)
                slot = &copies[(size_t)(src - g->tensors) * nb + (size_t)node->backend];
            else /* a model's weight, placed on another backend: rare, so searched */
                for (int32_t j = 0; j < n_front && !found; j++)
                    if (front[j]->src[0] == src && front[j]->backend == node->backend) found = front[j];
            if (!*slot) {
                if (g->n_tensors >= g->cap_tensors || (size_t)(n + n_front + 1) >= cap_nodes)
                    return plumb__fail(PLUMB_E_NOMEM, "graph too large for its copies between devices");
                *slot = plumb__graph_copy_of(g, src);
                (*slot)->backend = node->backend;
                if (plumb__graph_root(src)->op == PLUMB_OP_NONE) front[n_front++] = *slot;
                else order[n++] = *slot;
                s->n_copies++;
            }
            node->src[k] = *slot;
        }
        if ((size_t)(n + n_front) >= cap_nodes) return plumb__fail(PLUMB_E_NOMEM, "graph too large for its copies between devices");
        order[n++] = node;
    }
    memcpy(g->nodes, front, (size_t)n_front * sizeof *front);
    memcpy(g->nodes + n_front, order, (size_t)n * sizeof *order);
    g->n_nodes = n_front + n;
    for (int32_t i = 0; i < g->n_nodes; i++) g->nodes[i]->id = i;
    return PLUMB_OK;
}

/* Plans every backend's outputs into its pool (grown when short) and binds the nodes. */
static plumb_status place(plumb_sched *s, plumb_graph *g) {
    size_t need[PLUMB_MAX_BACKENDS] = {0};
    plumb_graph_plan_pools(g, s->n_backends, need);
    for (int b = 0; b < s->n_backends; b++) {
        if (need[b] <= s->pool_size[b] && s->pools[b]) continue;
        plumb_buffer_free(s->pools[b]);
        s->pools[b] = NULL;
        s->pool_size[b] = 0;
        const size_t size = (need[b] + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN + POOL_ALIGN;
        plumb_status st = s->backends[b]->iface->buffer_alloc(s->backends[b], size, &s->pools[b]);
        if (st) return st;
        s->pool_size[b] = size;
    }
    for (int32_t i = 0; i < g->n_nodes; i++) {
        plumb_tensor *n = g->nodes[i];
        if (n->op == PLUMB_OP_VIEW) continue;
        plumb_buffer *pool = s->pools[n->backend];
        n->buf = pool;
        n->offs = g->plan_offs[i];
        n->data = pool->base ? (uint8_t *)pool->base + n->offs : NULL;
    }
    for (int32_t i = 0; i < g->n_nodes; i++) { /* views after their roots are placed */
        plumb_tensor *n = g->nodes[i];
        if (n->op != PLUMB_OP_VIEW) continue;
        const plumb_tensor *r = plumb__graph_root(n);
        n->buf = r->buf, n->offs = r->offs, n->data = r->data;
    }
    return PLUMB_OK;
}

/* The bytes of a COPY node's source into the node. */
static plumb_status run_copy(plumb_sched *s, plumb_tensor *c) {
    const plumb_tensor *src = c->src[0];
    const size_t n = plumb_tensor_nbytes(c);
    plumb_buffer *dst = c->buf;
    if (src->data) return dst->backend->iface->buffer_set(dst, c->offs, src->data, n);
    if (c->data) return plumb_tensor_get(src, 0, c->data, n);
    if (n > s->stage_size) { /* device to device: through the host */
        uint8_t *p = realloc(s->stage, n);
        if (!p) return plumb__fail(PLUMB_E_NOMEM, "out of memory for a copy of %zu bytes", n);
        s->stage = p, s->stage_size = n;
    }
    plumb_status st = plumb_tensor_get(src, 0, s->stage, n);
    return st ? st : dst->backend->iface->buffer_set(dst, c->offs, s->stage, n);
}

/* A copy that reads back from backend b into host memory: one of b's run's reads. */
static bool is_read(const plumb_sched *s, plumb_tensor *c, int b) {
    return c->op == PLUMB_OP_COPY && c->data && holder(s, c->src[0]) == b;
}

static plumb_status add_read(plumb_sched *s, int32_t *n, const plumb_tensor *t, void *dst, size_t bytes) {
    if (*n == s->reads_cap) {
        const int32_t cap = s->reads_cap ? 2 * s->reads_cap : 16;
        plumb_read *p = realloc(s->reads, (size_t)cap * sizeof *p);
        if (!p) return plumb__fail(PLUMB_E_NOMEM, "out of memory for the scheduler");
        s->reads = p, s->reads_cap = cap;
    }
    s->reads[(*n)++] = (plumb_read){.buf = t->buf, .off = t->offs, .dst = dst, .n = bytes};
    return PLUMB_OK;
}

/* Runs nodes [first, end) on backend b, then the copies that follow them up to *next (the
 * next run). When b has graph_compute_read, the copies back to host memory, and out when this
 * is b's last run, are its reads (*out_done then set). */
static plumb_status run(plumb_sched *s, plumb_graph *g, int b, int32_t first, int32_t end, int32_t next,
                        const plumb_tensor *out, void *dst, size_t n, bool last, bool *out_done) {
    plumb_backend *be = s->backends[b];
    const bool reads = be->iface->graph_compute_read != NULL;
    int32_t n_reads = 0;
    plumb_status st = PLUMB_OK;
    for (int32_t j = end; reads && j < next && !st; j++)
        if (is_read(s, g->nodes[j], b)) st = add_read(s, &n_reads, g->nodes[j]->src[0], g->nodes[j]->data, plumb_tensor_nbytes(g->nodes[j]));
    if (reads && out && last && !*out_done && holder(s, (plumb_tensor *)out) == b && !st) {
        st = add_read(s, &n_reads, out, dst, n);
        *out_done = !st;
    }
    if (st) return st;
    st = n_reads ? be->iface->graph_compute_read(be, g, first, end, s->reads, n_reads) : be->iface->graph_compute(be, g, first, end);
    s->n_splits++;
    for (int32_t j = end; j < next && !st; j++) {
        plumb_tensor *c = g->nodes[j];
        if (c->op == PLUMB_OP_COPY && !(reads && is_read(s, c, b))) st = run_copy(s, c);
    }
    return st;
}

/* With an observer: shows it node i when it looks at it (its sources are ready: the run
 * starts there), and ends the run [i, *end) before the next node it looks at. */
static plumb_status observed_end(plumb_sched *s, plumb_graph *g, int32_t i, int32_t *end) {
    int r = s->observer(g->nodes[i], false, s->observer_user);
    if (r > 0 && (r = s->observer(g->nodes[i], true, s->observer_user)) > 0) r = 0;
    if (r < 0) return (plumb_status)r;
    for (int32_t j = i + 1; j < *end; j++) {
        if (g->nodes[j]->op == PLUMB_OP_VIEW) continue;
        if ((r = s->observer(g->nodes[j], false, s->observer_user)) < 0) return (plumb_status)r;
        if (r > 0) {
            *end = j;
            break;
        }
    }
    return PLUMB_OK;
}

/* out bound to dst when its backend works in host memory (host_data), dst is aligned as a pool
 * is, and no other node reads it: the backend then writes it there, with no copy after (a
 * decode step's logits: 4 MB for four sequences over Gemma 3's 262144 tokens, which the
 * scheduler's thread copied while the backend's other threads waited). */
static bool bind_output(const plumb_sched *s, plumb_graph *g, const plumb_tensor *out, void *dst, size_t n) {
    plumb_tensor *o = (plumb_tensor *)out;
    if (!dst || (uintptr_t)dst % POOL_ALIGN || o->op == PLUMB_OP_VIEW || o->op == PLUMB_OP_NONE || o->op == PLUMB_OP_COPY ||
        n != plumb_tensor_nbytes(o) || !s->backends[o->backend]->iface->host_data)
        return false;
    for (int32_t i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < PLUMB_MAX_SRC; k++)
            if (g->nodes[i]->src[k] && plumb__graph_root(g->nodes[i]->src[k]) == o) return false;
    o->data = dst;
    return true;
}

plumb_status plumb_sched_compute(plumb_sched *s, plumb_graph *g, const plumb_tensor *out, void *dst, size_t n) {
    plumb_status st = assign(s, g);
    if (!st && s->n_backends > 1) st = insert_copies(s, g);
    if (!st) st = place(s, g);
    if (st) return st;
    s->n_splits = 0;
    int32_t last[PLUMB_MAX_BACKENDS] = {0}; /* where each backend's last run starts */
    for (int32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i]->op != PLUMB_OP_VIEW && g->nodes[i]->op != PLUMB_OP_COPY) last[g->nodes[i]->backend] = i;
    bool out_done = out && bind_output(s, g, out, dst, n);
    int32_t i = 0;
    while (i < g->n_nodes && !st) { /* the copies before the first run, then run by run */
        plumb_tensor *node = g->nodes[i];
        if (node->op == PLUMB_OP_VIEW || node->op == PLUMB_OP_COPY) {
            if (node->op == PLUMB_OP_COPY) st = run_copy(s, node);
            i++;
            continue;
        }
        const int b = node->backend;
        int32_t end = i + 1, next;
        while (end < g->n_nodes && (g->nodes[end]->op == PLUMB_OP_VIEW || (g->nodes[end]->op != PLUMB_OP_COPY && g->nodes[end]->backend == b)))
            end++;
        if (s->observer && (st = observed_end(s, g, i, &end))) break;
        for (next = end; next < g->n_nodes && (g->nodes[next]->op == PLUMB_OP_VIEW || g->nodes[next]->op == PLUMB_OP_COPY); next++) {}
        st = run(s, g, b, i, end, next, out, dst, n, last[b] >= i && last[b] < end, &out_done);
        i = next;
    }
    if (!st && out && !out_done) st = plumb_tensor_get(out, 0, dst, n);
    return st;
}
