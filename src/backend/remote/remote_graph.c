/* remote_graph.c — the COMPUTE message's graph: the client's encoder of one run of nodes and
 * the server's decoder (remote_graph.h has the format). The decoder trusts nothing: each record
 * is read with bounds checks, checked by its op's rule (the typed builder's assertions, plus what
 * the backend's kernel reads: types, parameter ranges, index data), its bytes resolved inside a
 * buffer of the connection, and only then built with the typed builder, whose assertions
 * therefore cannot fire. */
#include "backend/remote/remote_graph.h"

#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIM ((int64_t)1 << 40) /* any one extent; totals are bounded by the buffers */

/* ---- encoder ----------------------------------------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} wbuf;

static void put(wbuf *w, const void *src, size_t n) {
    if (w->oom) return;
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        while (cap < w->n + n) cap *= 2;
        uint8_t *p = realloc(w->p, cap);
        if (!p) {
            w->oom = true;
            return;
        }
        w->p = p, w->cap = cap;
    }
    memcpy(w->p + w->n, src, n);
    w->n += n;
}

static void put_u64(wbuf *w, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, (size_t)bytes);
}
static void put_u8(wbuf *w, uint8_t v) { put(w, &v, 1); }
static void put_u32(wbuf *w, uint32_t v) { put_u64(w, v, 4); }
static void put_i32(wbuf *w, int32_t v) { put_u64(w, (uint32_t)v, 4); }
static void put_i64(wbuf *w, int64_t v) { put_u64(w, (uint64_t)v, 8); }
static void put_f32(wbuf *w, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(w, v);
}

typedef struct enc {
    const plumb_graph *g;
    int32_t first, end;
    uint32_t (*buffer_id)(const plumb_buffer *b, void *ctx);
    void *ctx;
    wbuf w;
    int32_t n;              /* records written */
    int32_t *map;           /* [g->n_tensors]: record of each of g's tensors, -1 */
    const plumb_tensor **ext; /* tensors outside g->tensors (a model's weights), record ext_idx */
    int32_t *ext_idx;
    int32_t n_ext;
} enc;

static bool in_run(const enc *e, const plumb_tensor *t) {
    return t->op != PLUMB_OP_NONE && t->id >= e->first && t->id < e->end && e->g->nodes[t->id] == t;
}

static int32_t *slot_of(enc *e, const plumb_tensor *t) {
    if (t >= e->g->tensors && t < e->g->tensors + e->g->n_tensors) return &e->map[t - e->g->tensors];
    for (int32_t i = 0; i < e->n_ext; i++)
        if (e->ext[i] == t) return &e->ext_idx[i];
    return NULL;
}

static plumb_status put_where(enc *e, const plumb_tensor *t) {
    const plumb_tensor *r = t->buf || t->op != PLUMB_OP_VIEW ? t : plumb__graph_root((plumb_tensor *)t);
    const uint32_t id = r->buf ? e->buffer_id(r->buf, e->ctx) : UINT32_MAX;
    if (id == UINT32_MAX)
        return plumb__fail(PLUMB_E_INVALID_ARG, "COMPUTE graph: a tensor of op %s is not in a remote buffer",
                           plumb_op_name(t->op));
    put_u32(&e->w, id);
    put_u64(&e->w, r->offs, 8);
    return PLUMB_OK;
}

static void put_head(enc *e, plumb_op op, const plumb_tensor *t) {
    put_u8(&e->w, (uint8_t)op);
    put_u32(&e->w, (uint32_t)t->type);
    for (int d = 0; d < 4; d++) put_i64(&e->w, t->ne[d]);
}

static plumb_status put_leaf(enc *e, const plumb_tensor *t) {
    int32_t *slot = slot_of(e, t);
    if (slot && *slot >= 0) return PLUMB_OK;
    if (!slot) { /* outside the graph's tensors: remembered in ext */
        if ((e->n_ext & (e->n_ext - 1)) == 0) {
            const size_t cap = e->n_ext ? (size_t)e->n_ext * 2 : 16;
            const plumb_tensor **x = realloc(e->ext, cap * sizeof *x);
            if (x) e->ext = x;
            int32_t *xi = realloc(e->ext_idx, cap * sizeof *xi);
            if (xi) e->ext_idx = xi;
            if (!x || !xi) return plumb__fail(PLUMB_E_NOMEM, "out of memory encoding a COMPUTE graph");
        }
        e->ext[e->n_ext] = t;
        slot = &e->ext_idx[e->n_ext++];
    }
    put_head(e, PLUMB_OP_NONE, t);
    plumb_status st = put_where(e, t);
    if (st) return st;
    *slot = e->n++;
    return PLUMB_OK;
}

static plumb_status put_attn(enc *e, const plumb_tensor *t) {
    const plumb_attn_params *a = &t->params.attn;
    const plumb_kv_cache *kv = a->kv;
    wbuf *w = &e->w;
    put_i32(w, a->layer);
    put_i32(w, a->n_swa);
    put_f32(w, a->scale);
    put_f32(w, a->softcap);
    const int32_t geo[6] = {kv->n_layer, kv->n_seq, kv->n_ctx, kv->n_head, kv->n_head_kv, kv->head_dim};
    for (int i = 0; i < 6; i++) put_i32(w, geo[i]);
    const plumb_buffer *bufs[2] = {kv->k_buf ? kv->k_buf[a->layer] : NULL, kv->v_buf ? kv->v_buf[a->layer] : NULL};
    const size_t offs[2] = {bufs[0] ? kv->k_offs[a->layer] : 0, bufs[1] ? kv->v_offs[a->layer] : 0};
    for (int i = 0; i < 2; i++) {
        const uint32_t id = bufs[i] ? e->buffer_id(bufs[i], e->ctx) : UINT32_MAX;
        if (id == UINT32_MAX)
            return plumb__fail(PLUMB_E_INVALID_ARG, "COMPUTE graph: the cache of layer %d is not in a remote buffer",
                               a->layer);
        put_u32(w, id);
        put_u64(w, offs[i], 8);
    }
    const int64_t T = t->src[0]->ne[2];
    put_u32(w, (uint32_t)T);
    for (int64_t i = 0; i < T; i++) put_i32(w, a->pos[i]);
    for (int64_t i = 0; i < T; i++) put_i32(w, a->seq[i]);
    return PLUMB_OK;
}

static plumb_status put_node(enc *e, const plumb_tensor *t) {
    wbuf *w = &e->w;
    const plumb_op op = t->op;
    if (op <= PLUMB_OP_NONE || op >= PLUMB_OP_COPY)
        return plumb__fail(PLUMB_E_INVALID_ARG, "COMPUTE graph: node %d is a %s, which a remote run cannot hold",
                           t->id, plumb_op_name(op));
    if (op == PLUMB_OP_VIEW && !in_run(e, t->src[0])) return put_leaf(e, t); /* of data already there */
    const int n_src = plumb_op_n_src(op);
    for (int k = 0; k < n_src; k++) {
        const plumb_tensor *s = t->src[k];
        if (s && !in_run(e, s)) {
            plumb_status st = put_leaf(e, s);
            if (st) return st;
        }
    }
    put_head(e, op, t);
    for (int k = 0; k < n_src; k++) {
        const int32_t *slot = t->src[k] ? slot_of(e, t->src[k]) : NULL;
        put_i32(w, slot ? *slot : -1);
    }
    if (op != PLUMB_OP_VIEW) {
        plumb_status st = put_where(e, t);
        if (st) return st;
    }
    const plumb_op_params *p = &t->params;
    switch (op) {
    case PLUMB_OP_SCALE: put_f32(w, p->scale.s); break;
    case PLUMB_OP_RMS_NORM: put_f32(w, p->rms_norm.eps); break;
    case PLUMB_OP_SOFTCAP: put_f32(w, p->softcap.cap); break;
    case PLUMB_OP_SOFT_MAX: put_f32(w, p->soft_max.scale); break;
    case PLUMB_OP_TOP_K: put_i32(w, p->top_k.k); break;
    case PLUMB_OP_MOE_WEIGHTS:
        put_u8(w, p->moe_weights.norm ? 1 : 0);
        put_f32(w, p->moe_weights.scale);
        break;
    case PLUMB_OP_ROPE:
        put_i32(w, p->rope.mode);
        put_i32(w, p->rope.n_rot);
        put_f32(w, p->rope.base);
        put_f32(w, p->rope.freq_scale);
        put_f32(w, p->rope.attn_factor);
        break;
    case PLUMB_OP_ATTN: {
        plumb_status st = put_attn(e, t);
        if (st) return st;
        break;
    }
    default: break;
    }
    int32_t *slot = slot_of(e, t);
    if (slot) *slot = e->n;
    e->n++;
    return PLUMB_OK;
}

plumb_status plumb__rpc_graph_encode(const plumb_graph *g, int32_t first, int32_t end,
                                     uint32_t (*buffer_id)(const plumb_buffer *b, void *ctx), void *ctx,
                                     uint8_t **out, size_t *len) {
    *out = NULL, *len = 0;
    if (first < 0 || end > g->n_nodes || first > end)
        return plumb__fail(PLUMB_E_INVALID_ARG, "COMPUTE graph: nodes [%d, %d) of %d", first, end, g->n_nodes);
    enc e = {.g = g, .first = first, .end = end, .buffer_id = buffer_id, .ctx = ctx};
    e.map = malloc(((size_t)g->n_tensors + 1) * sizeof *e.map);
    if (!e.map) return plumb__fail(PLUMB_E_NOMEM, "out of memory encoding a COMPUTE graph");
    for (int32_t i = 0; i < g->n_tensors; i++) e.map[i] = -1;
    put_u32(&e.w, 0); /* the count, set below */
    plumb_status st = PLUMB_OK;
    for (int32_t i = first; i < end && !st; i++) st = put_node(&e, g->nodes[i]);
    if (!st && e.w.oom) st = plumb__fail(PLUMB_E_NOMEM, "out of memory encoding a COMPUTE graph");
    free(e.map);
    free(e.ext);
    free(e.ext_idx);
    if (st) {
        free(e.w.p);
        return st;
    }
    for (int i = 0; i < 4; i++) e.w.p[i] = (uint8_t)((uint32_t)e.n >> (8 * i));
    *out = e.w.p;
    *len = e.w.n;
    return PLUMB_OK;
}

/* ---- decoder ----------------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len, pos;
    bool short_; /* ran past the end */
} rd;

static uint64_t get_le(rd *r, int bytes) {
    if (r->short_ || r->len - r->pos < (size_t)bytes) {
        r->short_ = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)r->p[r->pos + (size_t)i] << (8 * i);
    r->pos += (size_t)bytes;
    return v;
}
static uint8_t get_u8(rd *r) { return (uint8_t)get_le(r, 1); }
static uint32_t get_u32(rd *r) { return (uint32_t)get_le(r, 4); }
static int32_t get_i32(rd *r) { return (int32_t)(uint32_t)get_le(r, 4); }
static int64_t get_i64(rd *r) { return (int64_t)get_le(r, 8); }
static uint64_t get_u64(rd *r) { return get_le(r, 8); }
static float get_f32(rd *r) {
    const uint32_t v = get_u32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* One record as read, before it is built. */
typedef struct rec {
    int32_t i; /* its index in the table */
    plumb_op op;
    int type;
    int64_t ne[4];
    plumb_tensor *s[3]; /* its sources (NULL: none) */
    plumb_op_params p;
    /* ATTN: the cache */
    int32_t geo[6]; /* n_layer, n_seq, n_ctx, n_head, n_head_kv, head_dim */
    uint32_t kv_id[2];
    uint64_t kv_off[2];
    uint32_t n_tok;
    size_t ints_at; /* where its pos array starts in the store */
} rec;

static plumb_status bad(const rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static plumb_status bad(const rec *r, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: tensor %d (%s): %s", r->i, plumb_op_name(r->op), msg);
}

static int64_t rows(const plumb_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }
static bool f32(const plumb_tensor *t) { return t->type == PLUMB_TYPE_F32; }
static bool i32(const plumb_tensor *t) { return t->type == PLUMB_TYPE_I32; }
static void shape(int64_t ne[4], int64_t a, int64_t b, int64_t c) { ne[0] = a, ne[1] = b, ne[2] = c, ne[3] = 1; }
static void shape_of(int64_t ne[4], const plumb_tensor *t) { memcpy(ne, t->ne, 4 * sizeof *ne); }

/* ---- one rule per op: its sources and parameters checked as its builder asserts and its
 * kernels read; ne gets the output's shape (the builder's). */

static plumb_status check_get_rows(const rec *r, int64_t ne[4]) {
    const plumb_tensor *w = r->s[0], *ids = r->s[1];
    if (!i32(ids) || rows(ids) != 1) return bad(r, "ids must be I32 [n] (type %d, %lld rows)", ids->type, (long long)rows(ids));
    shape(ne, w->ne[0], ids->ne[0], 1);
    return PLUMB_OK;
}

static plumb_status check_mul_mat(const rec *r, int64_t ne[4]) {
    const plumb_tensor *w = r->s[0], *x = r->s[1];
    if (!f32(x)) return bad(r, "x must be F32 (type %d)", x->type);
    if (x->ne[0] != w->ne[0]) return bad(r, "x has %lld columns, w %lld", (long long)x->ne[0], (long long)w->ne[0]);
    shape(ne, w->ne[1], rows(x), 1);
    return PLUMB_OK;
}

static plumb_status check_binary(const rec *r, int64_t ne[4]) {
    const plumb_tensor *a = r->s[0], *b = r->s[1];
    if (!f32(a) || !f32(b)) return bad(r, "sources must be F32 (types %d, %d)", a->type, b->type);
    if (b->ne[0] != a->ne[0] || (rows(b) != 1 && rows(b) != rows(a)))
        return bad(r, "b [%lld x %lld rows] does not fit a [%lld x %lld rows]", (long long)b->ne[0], (long long)rows(b),
                   (long long)a->ne[0], (long long)rows(a));
    shape_of(ne, a);
    return PLUMB_OK;
}

static plumb_status check_unary(const rec *r, int64_t ne[4]) {
    if (!f32(r->s[0])) return bad(r, "x must be F32 (type %d)", r->s[0]->type);
    if (r->op == PLUMB_OP_SOFTCAP && !(r->p.softcap.cap > 0.0f)) return bad(r, "cap %g is not > 0", (double)r->p.softcap.cap);
    shape_of(ne, r->s[0]);
    return PLUMB_OK;
}

static plumb_status check_rms_norm(const rec *r, int64_t ne[4]) {
    const plumb_tensor *x = r->s[0], *w = r->s[1];
    if (w && (!f32(w) || w->ne[0] != x->ne[0])) return bad(r, "w must be F32 [%lld]", (long long)x->ne[0]);
    return check_unary(r, ne);
}

static plumb_status check_glu(const rec *r, int64_t ne[4]) {
    const plumb_tensor *gate = r->s[0], *up = r->s[1];
    if (!f32(gate) || !f32(up)) return bad(r, "sources must be F32 (types %d, %d)", gate->type, up->type);
    if (plumb_tensor_nelements(gate) != plumb_tensor_nelements(up)) return bad(r, "gate and up differ in size");
    shape_of(ne, gate);
    return PLUMB_OK;
}

static plumb_status check_rope(const rec *r, int64_t ne[4]) {
    const plumb_tensor *x = r->s[0], *pos = r->s[1], *ff = r->s[2];
    const plumb_rope_params *p = &r->p.rope;
    if (!f32(x) || x->ne[3] != 1) return bad(r, "x must be F32 [hd, n_head, T]");
    if (!i32(pos) || pos->ne[0] != x->ne[2]) return bad(r, "positions must be I32 [%lld]", (long long)x->ne[2]);
    if (p->mode != PLUMB_ROPE_NORMAL && p->mode != PLUMB_ROPE_NEOX) return bad(r, "mode %d", p->mode);
    if (p->n_rot <= 0 || p->n_rot % 2 || p->n_rot > x->ne[0])
        return bad(r, "n_rot %d is not even in (0, %lld]", p->n_rot, (long long)x->ne[0]);
    if (ff && (!f32(ff) || ff->ne[0] < p->n_rot / 2)) return bad(r, "frequency factors must be F32 [>= %d]", p->n_rot / 2);
    shape_of(ne, x);
    return PLUMB_OK;
}

static plumb_status check_attn(const rec *r, int64_t ne[4]) {
    const plumb_tensor *q = r->s[0], *k = r->s[1], *v = r->s[2];
    const plumb_attn_params *p = &r->p.attn;
    if (!f32(q) || !f32(k) || !f32(v)) return bad(r, "q, k and v must be F32");
    if (k->ne[0] != q->ne[0] || v->ne[0] != q->ne[0] || k->ne[1] != v->ne[1] || k->ne[1] <= 0)
        return bad(r, "k and v must be [%lld, n_kv, T] alike", (long long)q->ne[0]);
    if (q->ne[1] % k->ne[1] || k->ne[2] != q->ne[2] || v->ne[2] != q->ne[2])
        return bad(r, "q [%lld, %lld, %lld] does not fit k [%lld, %lld, %lld]", (long long)q->ne[0], (long long)q->ne[1],
                   (long long)q->ne[2], (long long)k->ne[0], (long long)k->ne[1], (long long)k->ne[2]);
    const int32_t n_layer = r->geo[0], n_seq = r->geo[1], n_ctx = r->geo[2], n_head = r->geo[3], n_kv = r->geo[4],
                  hd = r->geo[5];
    if (n_layer < 1 || n_seq < 1 || n_ctx < 1) return bad(r, "cache of %d layers, %d sequences, %d positions", n_layer, n_seq, n_ctx);
    if (hd != q->ne[0] || n_head != q->ne[1] || n_kv != k->ne[1])
        return bad(r, "cache heads %d/%d of %d do not match q and k", n_head, n_kv, hd);
    if (p->layer < 0 || p->layer >= n_layer) return bad(r, "layer %d of %d", p->layer, n_layer);
    if (p->n_swa < 0) return bad(r, "window %d", p->n_swa);
    if ((int64_t)r->n_tok != q->ne[2]) return bad(r, "%u positions for %lld tokens", r->n_tok, (long long)q->ne[2]);
    shape(ne, q->ne[0] * q->ne[1], q->ne[2], 1);
    return PLUMB_OK;
}

static plumb_status check_mul_mat_id(const rec *r, int64_t ne[4]) {
    const plumb_tensor *w = r->s[0], *x = r->s[1], *ids = r->s[2];
    const int64_t k = ids->ne[0], T = ids->ne[1];
    if (!i32(ids) || ids->ne[2] != 1 || ids->ne[3] != 1) return bad(r, "ids must be I32 [k, T]");
    if (w->ne[3] != 1 || w->ne[2] < k || k < 1) return bad(r, "w must be [K, N, E >= %lld]", (long long)k);
    if (!f32(x) || x->ne[0] != w->ne[0] || x->ne[2] != T || x->ne[3] != 1 || (x->ne[1] != 1 && x->ne[1] != k))
        return bad(r, "x must be F32 [%lld, 1 or %lld, %lld]", (long long)w->ne[0], (long long)k, (long long)T);
    shape(ne, w->ne[1], k, T);
    return PLUMB_OK;
}

static plumb_status check_top_k(const rec *r, int64_t ne[4]) {
    const plumb_tensor *x = r->s[0];
    if (!f32(x)) return bad(r, "x must be F32");
    if (r->p.top_k.k < 1 || r->p.top_k.k > x->ne[0]) return bad(r, "k %d not in [1, %lld]", r->p.top_k.k, (long long)x->ne[0]);
    shape(ne, r->p.top_k.k, rows(x), 1);
    return PLUMB_OK;
}

static plumb_status check_moe_weights(const rec *r, int64_t ne[4]) {
    const plumb_tensor *probs = r->s[0], *ids = r->s[1];
    if (!f32(probs) || !i32(ids)) return bad(r, "probs must be F32 and ids I32");
    if (ids->ne[1] != probs->ne[1] || ids->ne[0] > probs->ne[0] || probs->ne[2] != 1 || ids->ne[2] != 1)
        return bad(r, "ids [%lld, %lld] do not fit probs [%lld, %lld]", (long long)ids->ne[0], (long long)ids->ne[1],
                   (long long)probs->ne[0], (long long)probs->ne[1]);
    shape_of(ne, ids);
    return PLUMB_OK;
}

static plumb_status check_moe_sum(const rec *r, int64_t ne[4]) {
    const plumb_tensor *ex = r->s[0], *wt = r->s[1];
    if (!f32(ex) || !f32(wt)) return bad(r, "sources must be F32");
    if (wt->ne[0] != ex->ne[1] || wt->ne[1] != ex->ne[2] || ex->ne[3] != 1) return bad(r, "weights do not fit experts");
    shape(ne, ex->ne[0], ex->ne[2], 1);
    return PLUMB_OK;
}

/* The rules: sources required (the first n_req; up to the op's n_src may follow, optional),
 * the check, the output type, and which source holds indices (-1: none). Ops without a rule
 * (NONE and VIEW are records of their own; COPY is the scheduler's) are refused as nodes. */
typedef struct op_rule {
    plumb_status (*check)(const rec *r, int64_t ne[4]);
    int n_req;
    int out_type;
    int idx_src; /* the source whose I32 values index another */
    int weight_src; /* the source whose type must be a supported weight (-1: none) */
} op_rule;

static const op_rule rules[PLUMB_OP_COUNT] = {
    [PLUMB_OP_GET_ROWS] = {check_get_rows, 2, PLUMB_TYPE_F32, 1, 0},
    [PLUMB_OP_MUL_MAT] = {check_mul_mat, 2, PLUMB_TYPE_F32, -1, 0},
    [PLUMB_OP_ADD] = {check_binary, 2, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_MUL] = {check_binary, 2, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_SCALE] = {check_unary, 1, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_RMS_NORM] = {check_rms_norm, 1, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_ROPE] = {check_rope, 2, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_ATTN] = {check_attn, 3, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_SILU] = {check_unary, 1, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_GELU_TANH] = {check_unary, 1, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_SILU_MUL] = {check_glu, 2, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_GELU_MUL] = {check_glu, 2, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_SOFTCAP] = {check_unary, 1, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_SOFT_MAX] = {check_unary, 1, PLUMB_TYPE_F32, -1, -1},
    [PLUMB_OP_MUL_MAT_ID] = {check_mul_mat_id, 3, PLUMB_TYPE_F32, 2, 0},
    [PLUMB_OP_TOP_K] = {check_top_k, 1, PLUMB_TYPE_I32, -1, -1},
    [PLUMB_OP_MOE_WEIGHTS] = {check_moe_weights, 2, PLUMB_TYPE_F32, 1, -1},
    [PLUMB_OP_MOE_SUM] = {check_moe_sum, 2, PLUMB_TYPE_F32, -1, -1},
};

/* The exclusive bound of an index source's values. */
static int64_t index_bound(const plumb_tensor *n) {
    switch (n->op) {
    case PLUMB_OP_GET_ROWS: return rows(n->src[0]);
    case PLUMB_OP_MUL_MAT_ID: return n->src[0]->ne[2];
    case PLUMB_OP_MOE_WEIGHTS: return n->src[0]->ne[0];
    default: return 0;
    }
}

static plumb_tensor *build(plumb_graph *g, const rec *r) {
    plumb_tensor *const *s = r->s;
    switch (r->op) {
    case PLUMB_OP_GET_ROWS: return plumb_graph_get_rows(g, s[0], s[1]);
    case PLUMB_OP_MUL_MAT: return plumb_graph_mul_mat(g, s[0], s[1]);
    case PLUMB_OP_ADD: return plumb_graph_add(g, s[0], s[1]);
    case PLUMB_OP_MUL: return plumb_graph_mul(g, s[0], s[1]);
    case PLUMB_OP_SCALE: return plumb_graph_scale(g, s[0], &r->p.scale);
    case PLUMB_OP_RMS_NORM: return plumb_graph_rms_norm(g, s[0], s[1], &r->p.rms_norm);
    case PLUMB_OP_ROPE: return plumb_graph_rope(g, s[0], s[1], s[2], &r->p.rope);
    case PLUMB_OP_ATTN: return plumb_graph_attn(g, s[0], s[1], s[2], &r->p.attn);
    case PLUMB_OP_SILU: return plumb_graph_silu(g, s[0]);
    case PLUMB_OP_GELU_TANH: return plumb_graph_gelu_tanh(g, s[0]);
    case PLUMB_OP_SILU_MUL: return plumb_graph_silu_mul(g, s[0], s[1]);
    case PLUMB_OP_GELU_MUL: return plumb_graph_gelu_mul(g, s[0], s[1]);
    case PLUMB_OP_SOFTCAP: return plumb_graph_softcap(g, s[0], &r->p.softcap);
    case PLUMB_OP_SOFT_MAX: return plumb_graph_soft_max(g, s[0], &r->p.soft_max);
    case PLUMB_OP_MUL_MAT_ID: return plumb_graph_mul_mat_id(g, s[0], s[1], s[2]);
    case PLUMB_OP_TOP_K: return plumb_graph_top_k(g, s[0], &r->p.top_k);
    case PLUMB_OP_MOE_WEIGHTS: return plumb_graph_moe_weights(g, s[0], s[1], &r->p.moe_weights);
    case PLUMB_OP_MOE_SUM: return plumb_graph_moe_sum(g, s[0], s[1]);
    default: return NULL;
    }
}

void plumb__rpc_graph_store_free(plumb__rpc_graph_store *s) {
    free(s->kv.k), free(s->kv.v), free(s->kv.k_buf), free(s->kv.v_buf), free(s->kv.k_offs), free(s->kv.v_offs);
    free(s->ints);
    free(s->pos_at);
    memset(s, 0, sizeof *s);
}

static plumb_status store_reserve(plumb__rpc_graph_store *s, int32_t slots) {
    if (slots <= s->cap_slots) return PLUMB_OK;
    const size_t n = (size_t)slots;
    plumb_kv_cache *kv = &s->kv;
    uint16_t **k = realloc(kv->k, n * sizeof *k);
    if (k) kv->k = k;
    uint16_t **v = realloc(kv->v, n * sizeof *v);
    if (v) kv->v = v;
    plumb_buffer **kb = realloc(kv->k_buf, n * sizeof *kb);
    if (kb) kv->k_buf = kb;
    plumb_buffer **vb = realloc(kv->v_buf, n * sizeof *vb);
    if (vb) kv->v_buf = vb;
    size_t *ko = realloc(kv->k_offs, n * sizeof *ko);
    if (ko) kv->k_offs = ko;
    size_t *vo = realloc(kv->v_offs, n * sizeof *vo);
    if (vo) kv->v_offs = vo;
    size_t *pa = realloc(s->pos_at, n * sizeof *pa);
    if (pa) s->pos_at = pa;
    if (!k || !v || !kb || !vb || !ko || !vo || !pa) return plumb__fail(PLUMB_E_NOMEM, "out of memory decoding a COMPUTE graph");
    s->cap_slots = slots;
    return PLUMB_OK;
}

/* Reads n pos and n seq values into the store. */
static plumb_status store_ints(plumb__rpc_graph_store *s, rd *in, uint32_t n, size_t *at) {
    const size_t need = 2 * (size_t)n;
    if (in->len - in->pos < need * 4) { /* checked first: a huge count allocates nothing */
        in->short_ = true;
        return PLUMB_OK;
    }
    if (s->n_ints + need > s->cap_ints) {
        size_t cap = s->cap_ints ? s->cap_ints : 256;
        while (cap < s->n_ints + need) cap *= 2;
        int32_t *p = realloc(s->ints, cap * sizeof *p);
        if (!p) return plumb__fail(PLUMB_E_NOMEM, "out of memory decoding a COMPUTE graph");
        s->ints = p, s->cap_ints = cap;
    }
    *at = s->n_ints;
    for (size_t i = 0; i < need; i++) s->ints[s->n_ints++] = get_i32(in);
    return PLUMB_OK;
}

/* Size in bytes of a tensor of type and shape, or an error naming what is wrong. */
static plumb_status tensor_bytes(const rec *r, uint64_t *out) {
    const int type = r->type;
    uint64_t row = 0;
    if (type == PLUMB_TYPE_I32) row = 4 * (uint64_t)r->ne[0];
    else if (!plumb_type_is_known(type) || plumb_type_row_bytes(type, r->ne[0], &row) != PLUMB_OK || row == 0)
        return bad(r, "type %d with rows of %lld", type, (long long)r->ne[0]);
    uint64_t n = row;
    for (int d = 1; d < 4; d++)
        if (__builtin_mul_overflow(n, (uint64_t)r->ne[d], &n) || n > ((uint64_t)1 << 60))
            return bad(r, "shape too large");
    *out = n;
    return PLUMB_OK;
}

/* A written region: a node's output or an attention layer's cache. */
typedef struct region {
    const plumb_buffer *buf;
    size_t off, n;
    const plumb_tensor *t; /* the node writing it (NULL: a cache) */
} region;

static bool overlaps(const region *a, const region *b) {
    return a->buf == b->buf && a->off < b->off + b->n && b->off < a->off + a->n;
}

/* Checks every index source's values (a leaf's now; a top_k's by its bound) and that nothing in
 * the run writes them before they are read. */
static plumb_status check_indices(plumb_graph *g, const region *writes, int32_t n_writes) {
    for (int32_t i = 0; i < g->n_nodes; i++) {
        const plumb_tensor *n = g->nodes[i];
        if (n->op == PLUMB_OP_VIEW || rules[n->op].idx_src < 0) continue;
        const plumb_tensor *ids = n->src[rules[n->op].idx_src], *root = plumb__graph_root((plumb_tensor *)ids);
        const int64_t bound = index_bound(n), count = plumb_tensor_nelements(ids);
        const region mine = {root->buf, root->offs, plumb_tensor_nbytes(root), root};
        for (int32_t w = 0; w < n_writes; w++) /* a node after this one may reuse the bytes */
            if (writes[w].t != root && !(writes[w].t && writes[w].t->id > i) && overlaps(&writes[w], &mine))
                return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: node %d (%s): its ids are overwritten in the run", i,
                                   plumb_op_name(n->op));
        if (root->op == PLUMB_OP_TOP_K) {
            if (root->src[0]->ne[0] > bound)
                return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: node %d (%s): top_k ids reach %lld, past %lld", i,
                                   plumb_op_name(n->op), (long long)root->src[0]->ne[0], (long long)bound);
            continue;
        }
        if (root->op != PLUMB_OP_NONE)
            return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: node %d (%s): ids from a %s", i, plumb_op_name(n->op),
                               plumb_op_name(root->op));
        const int32_t *v = ids->data;
        int32_t *copy = NULL;
        if (!v) {
            copy = malloc((size_t)count * 4);
            if (!copy) return plumb__fail(PLUMB_E_NOMEM, "out of memory checking ids");
            plumb_status st = ids->buf->backend->iface->buffer_get(ids->buf, ids->offs, copy, (size_t)count * 4);
            if (st) {
                free(copy);
                return st;
            }
            v = copy;
        }
        int64_t j = 0;
        for (int32_t x; j < count && (memcpy(&x, &v[j], 4), x >= 0 && x < bound); j++) {}
        free(copy);
        if (j < count)
            return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: node %d (%s): id %lld is out of [0, %lld)", i,
                               plumb_op_name(n->op), (long long)j, (long long)bound);
    }
    return PLUMB_OK;
}

/* resolve, with a message naming the tensor and the bytes. */
static plumb_status find(const rec *r, plumb__rpc_resolve resolve, void *ctx, uint32_t id, uint64_t off, uint64_t n,
                         plumb_buffer **buf) {
    plumb_status st = resolve(ctx, id, off, n, buf);
    if (st)
        return plumb__fail(st, "COMPUTE graph: tensor %d (%s): %llu bytes at %llu of buffer %u: %s", r->i,
                           plumb_op_name(r->op), (unsigned long long)n, (unsigned long long)off, id,
                           st == PLUMB_E_NOT_FOUND ? "no such buffer" : "not inside it");
    return PLUMB_OK;
}

static void place(plumb_tensor *t, plumb_buffer *buf, uint64_t off) {
    t->buf = buf;
    t->offs = (size_t)off;
    t->data = buf->base ? (uint8_t *)buf->base + off : NULL;
}

static plumb_status decode(const uint8_t *p, size_t len, plumb__rpc_resolve resolve, void *ctx, plumb_backend *b,
                           plumb_graph *g, plumb__rpc_graph_store *s, plumb_tensor **tab, region **writes_out,
                           int32_t *n_writes) {
    rd in = {.p = p, .len = len};
    const uint32_t n = get_u32(&in);
    if (in.short_) return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: %zu bytes", len);
    if (n == 0 || (uint64_t)n > (uint64_t)g->cap_tensors)
        return plumb__fail(PLUMB_E_RANGE, "COMPUTE graph: %u tensors (at most %d)", n, g->cap_tensors);
    if ((uint64_t)n * 41 > len) /* the smallest record (a view) is 41 bytes */
        return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: %u tensors in %zu bytes", n, len);
    plumb_status st = store_reserve(s, (int32_t)n);
    if (st) return st;
    region *writes = malloc((size_t)n * 3 * sizeof *writes);
    *writes_out = writes;
    if (!writes) return plumb__fail(PLUMB_E_NOMEM, "out of memory decoding a COMPUTE graph");
    int32_t n_slots = 0;
    for (int32_t i = 0; i < (int32_t)n; i++) {
        rec r = {.i = i, .op = PLUMB_OP_COUNT};
        const uint8_t op = get_u8(&in);
        r.op = op < PLUMB_OP_COUNT ? (plumb_op)op : PLUMB_OP_COUNT;
        r.type = (int)get_u32(&in);
        for (int d = 0; d < 4; d++) r.ne[d] = get_i64(&in);
        if (in.short_) return bad(&r, "truncated");
        if (r.op == PLUMB_OP_COUNT || (r.op > PLUMB_OP_VIEW && !rules[r.op].check)) return bad(&r, "op %u is not accepted", op);
        for (int d = 0; d < 4; d++)
            if (r.ne[d] < 1 || r.ne[d] > MAX_DIM) return bad(&r, "ne[%d] = %lld", d, (long long)r.ne[d]);
        uint64_t nbytes = 0;
        if ((st = tensor_bytes(&r, &nbytes))) return st;
        const int n_src = plumb_op_n_src(r.op);
        for (int k = 0; k < n_src; k++) {
            const int32_t si = get_i32(&in);
            if (in.short_) return bad(&r, "truncated");
            if (si == -1) continue;
            if (si < 0 || si >= i) return bad(&r, "source %d is %d, not an earlier tensor", k, si);
            r.s[k] = tab[si];
        }
        const int n_req = r.op == PLUMB_OP_VIEW ? 1 : r.op == PLUMB_OP_NONE ? 0 : rules[r.op].n_req;
        for (int k = 0; k < n_req; k++)
            if (!r.s[k]) return bad(&r, "source %d is missing", k);
        uint32_t id = 0;
        uint64_t off = 0;
        if (r.op != PLUMB_OP_VIEW) {
            id = get_u32(&in), off = get_u64(&in);
            if (off % 4) return bad(&r, "offset %llu is not a multiple of 4", (unsigned long long)off);
        }
        switch (r.op) {
        case PLUMB_OP_SCALE: r.p.scale.s = get_f32(&in); break;
        case PLUMB_OP_RMS_NORM: r.p.rms_norm.eps = get_f32(&in); break;
        case PLUMB_OP_SOFTCAP: r.p.softcap.cap = get_f32(&in); break;
        case PLUMB_OP_SOFT_MAX: r.p.soft_max.scale = get_f32(&in); break;
        case PLUMB_OP_TOP_K: r.p.top_k.k = get_i32(&in); break;
        case PLUMB_OP_MOE_WEIGHTS: {
            const uint8_t norm = get_u8(&in);
            if (norm > 1) return bad(&r, "norm %u", norm);
            r.p.moe_weights.norm = norm;
            r.p.moe_weights.scale = get_f32(&in);
            break;
        }
        case PLUMB_OP_ROPE:
            r.p.rope.mode = get_i32(&in);
            r.p.rope.n_rot = get_i32(&in);
            r.p.rope.base = get_f32(&in);
            r.p.rope.freq_scale = get_f32(&in);
            r.p.rope.attn_factor = get_f32(&in);
            break;
        case PLUMB_OP_ATTN:
            r.p.attn.layer = get_i32(&in);
            r.p.attn.n_swa = get_i32(&in);
            r.p.attn.scale = get_f32(&in);
            r.p.attn.softcap = get_f32(&in);
            for (int j = 0; j < 6; j++) r.geo[j] = get_i32(&in);
            for (int j = 0; j < 2; j++) r.kv_id[j] = get_u32(&in), r.kv_off[j] = get_u64(&in);
            r.n_tok = get_u32(&in);
            if (!in.short_ && (st = store_ints(s, &in, r.n_tok, &r.ints_at))) return st;
            break;
        default: break;
        }
        if (in.short_) return bad(&r, "truncated");
        if (g->n_tensors >= g->cap_tensors || g->n_nodes >= g->cap_nodes)
            return plumb__fail(PLUMB_E_RANGE, "COMPUTE graph: tensor %d is past the graph's capacity", i);

        if (r.op == PLUMB_OP_NONE) { /* a leaf */
            plumb_buffer *buf = NULL;
            if ((st = find(&r, resolve, ctx, id, off, nbytes, &buf))) return st;
            plumb_tensor *t = plumb_graph_leaf(g, r.type, 4, r.ne, NULL);
            place(t, buf, off);
            tab[i] = t;
            continue;
        }
        if (r.op == PLUMB_OP_VIEW) {
            const plumb_tensor *src = r.s[0];
            if (src->op == PLUMB_OP_NONE) return bad(&r, "a view of a leaf (send the leaf)");
            if (r.type != src->type) return bad(&r, "type %d, its source's %d", r.type, src->type);
            int64_t ne_n = 1;
            for (int d = 0; d < 4; d++) ne_n *= r.ne[d]; /* bounded by tensor_bytes */
            if (ne_n != plumb_tensor_nelements(src)) return bad(&r, "%lld elements, its source %lld", (long long)ne_n,
                                                               (long long)plumb_tensor_nelements(src));
            plumb_tensor *t = plumb_graph_view(g, r.s[0], 4, r.ne);
            const plumb_tensor *root = plumb__graph_root(t);
            t->buf = root->buf, t->offs = root->offs, t->data = root->data;
            tab[i] = t;
            continue;
        }
        const op_rule *rule = &rules[r.op];
        int64_t ne[4];
        if ((st = rule->check(&r, ne))) return st;
        if (r.type != rule->out_type) return bad(&r, "type %d, not %d", r.type, rule->out_type);
        for (int d = 0; d < 4; d++)
            if (ne[d] != r.ne[d])
                return bad(&r, "shape [%lld, %lld, %lld, %lld], not [%lld, %lld, %lld, %lld]", (long long)r.ne[0],
                           (long long)r.ne[1], (long long)r.ne[2], (long long)r.ne[3], (long long)ne[0],
                           (long long)ne[1], (long long)ne[2], (long long)ne[3]);
        if (rule->weight_src >= 0 && !plumb_type_is_known(r.s[rule->weight_src]->type))
            return bad(&r, "weights of type %d", r.s[rule->weight_src]->type);
        if (b && rule->weight_src >= 0 && !b->iface->supports_weight(b, r.s[rule->weight_src]->type))
            return bad(&r, "%s cannot read weights of type %d", b->iface->name, r.s[rule->weight_src]->type);
        plumb_buffer *buf = NULL;
        if ((st = find(&r, resolve, ctx, id, off, nbytes, &buf))) return st;
        region *mine = &writes[(*n_writes)++]; /* its tensor is set once built */
        *mine = (region){buf, (size_t)off, (size_t)nbytes, NULL};
        for (int k = 0; k < 3; k++) { /* kernels read their sources while they write (memcpy among them) */
            const region src = r.s[k] ? (region){r.s[k]->buf, r.s[k]->offs, plumb_tensor_nbytes(r.s[k]), NULL} : (region){0};
            if (r.s[k] && overlaps(mine, &src)) return bad(&r, "its output overlaps source %d", k);
        }
        if (r.op == PLUMB_OP_ATTN) {
            const int32_t *pos = s->ints + r.ints_at, *seq = pos + r.n_tok;
            for (uint32_t t = 0; t < r.n_tok; t++) {
                if (pos[t] < 0 || pos[t] >= r.geo[2]) return bad(&r, "token %u at position %d of %d", t, pos[t], r.geo[2]);
                if (seq[t] < 0 || seq[t] >= r.geo[1]) return bad(&r, "token %u in sequence %d of %d", t, seq[t], r.geo[1]);
            }
            if (n_slots > 0) { /* the store's n_layer counts its slots; the rest must agree */
                const int32_t have[5] = {s->kv.n_seq, s->kv.n_ctx, s->kv.n_head, s->kv.n_head_kv, s->kv.head_dim};
                if (memcmp(have, r.geo + 1, sizeof have)) return bad(&r, "a cache other than the run's first attention's");
            }
            s->kv.n_layer = r.geo[0], s->kv.n_seq = r.geo[1], s->kv.n_ctx = r.geo[2];
            s->kv.n_head = r.geo[3], s->kv.n_head_kv = r.geo[4], s->kv.head_dim = r.geo[5];
            const uint64_t cache = (uint64_t)r.geo[1] * (uint64_t)r.geo[2] * (uint64_t)r.geo[4] * (uint64_t)r.geo[5] * 2;
            /* < 2^31 each: the product of four is < 2^124 — checked in two steps */
            if ((uint64_t)r.geo[1] * (uint64_t)r.geo[2] > ((uint64_t)1 << 60) / ((uint64_t)r.geo[4] * (uint64_t)r.geo[5] * 2))
                return bad(&r, "cache too large");
            for (int j = 0; j < 2; j++) {
                plumb_buffer *cb = NULL;
                if (r.kv_off[j] % 4) return bad(&r, "cache offset %llu is not a multiple of 4", (unsigned long long)r.kv_off[j]);
                if ((st = find(&r, resolve, ctx, r.kv_id[j], r.kv_off[j], cache, &cb))) return st;
                writes[(*n_writes)++] = (region){cb, (size_t)r.kv_off[j], (size_t)cache, NULL};
                if (overlaps(mine, &writes[*n_writes - 1])) return bad(&r, "its output overlaps the cache");
                if (j == 0) s->kv.k_buf[n_slots] = cb, s->kv.k_offs[n_slots] = (size_t)r.kv_off[j];
                else s->kv.v_buf[n_slots] = cb, s->kv.v_offs[n_slots] = (size_t)r.kv_off[j];
                uint16_t *host = cb->base ? (uint16_t *)((uint8_t *)cb->base + r.kv_off[j]) : NULL;
                if (j == 0) s->kv.k[n_slots] = host;
                else s->kv.v[n_slots] = host;
            }
            s->pos_at[n_slots] = r.ints_at;
            r.p.attn.kv = &s->kv;
            r.p.attn.layer = n_slots++;
            s->kv.n_layer = n_slots;
            r.p.attn.pos = r.p.attn.seq = s->ints; /* set once the store stops growing */
        }
        plumb_tensor *t = build(g, &r);
        place(t, buf, off);
        mine->t = t;
        if (b && !b->iface->supports_op(b, t)) return bad(&r, "%s does not run it", b->iface->name);
        tab[i] = t;
    }
    if (in.pos != len) return plumb__fail(PLUMB_E_FORMAT, "COMPUTE graph: %zu bytes after the last tensor", len - in.pos);
    for (int32_t i = 0; i < g->n_nodes; i++) { /* the pos and seq arrays, now that they stay put */
        plumb_tensor *t = g->nodes[i];
        if (t->op != PLUMB_OP_ATTN) continue;
        t->params.attn.pos = s->ints + s->pos_at[t->params.attn.layer];
        t->params.attn.seq = t->params.attn.pos + t->src[0]->ne[2];
    }
    return check_indices(g, writes, *n_writes);
}

plumb_status plumb__rpc_graph_decode(const uint8_t *p, size_t len, plumb__rpc_resolve resolve, void *ctx,
                                     plumb_backend *b, plumb_graph *g, plumb__rpc_graph_store *store) {
    plumb_graph_reset(g);
    store->n_ints = 0;
    store->kv.n_layer = 0;
    plumb_tensor **tab = malloc(((size_t)g->cap_tensors + 1) * sizeof *tab);
    if (!tab) return plumb__fail(PLUMB_E_NOMEM, "out of memory decoding a COMPUTE graph");
    region *writes = NULL;
    int32_t n_writes = 0;
    plumb_status st = decode(p, len, resolve, ctx, b, g, store, tab, &writes, &n_writes);
    free(tab);
    free(writes);
    if (st) plumb_graph_reset(g);
    return st;
}
