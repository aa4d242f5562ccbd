/* opencl_ops.c — the OpenCL backend's ops: which nodes and weight types it runs, and graph
 * compute, which queues the kernels of each node (a matmul's activation preparation then its
 * product, attention's cache write then its attention) on the in-order queue and waits once
 * at the end. Tensors are passed as their buffer's cl_mem and their byte offset in it; the
 * kernels are described in their files under kernels/. */
#include "backend/opencl/opencl_internal.h"

#include "core/error.h"
#include "core/kv_cache.h"

#include <math.h>
#include <stdio.h>

static bool weight_type(int type) {
    switch (type) {
    case PLUMB_TYPE_F32:
    case PLUMB_TYPE_F16:
    case PLUMB_TYPE_Q4_0:
    case PLUMB_TYPE_Q4_1:
    case PLUMB_TYPE_Q5_0:
    case PLUMB_TYPE_Q5_1:
    case PLUMB_TYPE_Q8_0:
    case PLUMB_TYPE_Q2_K:
    case PLUMB_TYPE_Q3_K:
    case PLUMB_TYPE_Q4_K:
    case PLUMB_TYPE_Q5_K:
    case PLUMB_TYPE_Q6_K: return true;
    default: return false;
    }
}

bool plumb__opencl_supports_weight(plumb_backend *b, int type) {
    (void)b;
    return weight_type(type);
}

static bool f32(const plumb_tensor *t) { return t && t->type == PLUMB_TYPE_F32; }

bool plumb__opencl_supports_op(plumb_backend *b, const plumb_tensor *n) {
    (void)b;
    const plumb_tensor *s0 = n->src[0], *s1 = n->src[1], *s2 = n->src[2];
    switch (n->op) {
    case PLUMB_OP_NONE:
    case PLUMB_OP_VIEW: return true;
    case PLUMB_OP_MUL_MAT: return weight_type(s0->type) && f32(s1);
    case PLUMB_OP_GET_ROWS: return weight_type(s0->type) && s1->type == PLUMB_TYPE_I32;
    case PLUMB_OP_ADD:
    case PLUMB_OP_MUL:
    case PLUMB_OP_SILU_MUL:
    case PLUMB_OP_GELU_MUL: return f32(s0) && f32(s1);
    case PLUMB_OP_SCALE:
    case PLUMB_OP_SILU:
    case PLUMB_OP_GELU_TANH:
    case PLUMB_OP_SOFTCAP:
    case PLUMB_OP_SOFT_MAX: return f32(s0);
    case PLUMB_OP_RMS_NORM: return f32(s0) && (!s1 || f32(s1));
    case PLUMB_OP_ROPE: return f32(s0) && s1->type == PLUMB_TYPE_I32 && (!s2 || f32(s2));
    case PLUMB_OP_ATTN: {
        const plumb_kv_cache *kv = n->params.attn.kv;
        const int64_t hd = s0->ne[0];
        return f32(s0) && f32(s1) && f32(s2) && hd <= PLUMB_OPENCL_ATTN_MAX_HD && hd % 4 == 0 && kv &&
               kv->head_dim == hd && kv->k_buf && kv->v_buf;
    }
    default: return false; /* the mixture-of-experts ops, and COPY (the scheduler's) */
    }
}

/* ---- kernel launches -------------------------------------------------------------------- */

/* One kernel's arguments, set in order; the first failure is kept and reported at run(). */
typedef struct launch {
    plumb_backend *b;
    cl_kernel k;
    const plumb_tensor *node;
    cl_uint n;
    cl_int err;
    plumb_status st;
} launch;

static launch start(plumb_backend *b, const plumb_tensor *node, plumb_opencl_kernel id) {
    return (launch){.b = b, .k = ((plumb_opencl_ctx *)b->ctx)->kernels[id], .node = node};
}

static void arg(launch *l, size_t size, const void *v) {
    const cl_int err = clSetKernelArg(l->k, l->n++, size, v);
    if (err && !l->err) l->err = err;
}

static void arg_i(launch *l, int64_t v) {
    const cl_int x = (cl_int)v;
    arg(l, sizeof x, &x);
}

static void arg_f(launch *l, float v) {
    const cl_float x = v;
    arg(l, sizeof x, &x);
}

static void arg_u(launch *l, size_t v) {
    const cl_ulong x = v;
    arg(l, sizeof x, &x);
}

/* A cl_mem and a byte offset into it. */
static void arg_mem(launch *l, cl_mem m, size_t off) {
    arg(l, sizeof m, &m);
    arg_u(l, off);
}

/* Tensor t's buffer and offset: t's data must lie in a buffer of this backend, at an offset
 * its kernels can read (F32 and I32 at multiples of 4 bytes, F16 and blocks of 2). */
static void arg_t(launch *l, const plumb_tensor *t) {
    const size_t align = t->type == PLUMB_TYPE_F32 || t->type == PLUMB_TYPE_I32 ? 4 : 2;
    const char *why = !t->buf || t->buf->backend != l->b ? "is not in a buffer of this backend"
                      : t->offs % align                  ? "starts at an offset its kernels cannot read"
                      : t->offs > t->buf->size || plumb_tensor_nbytes(t) > t->buf->size - t->offs
                          ? "lies past its buffer's end"
                          : NULL;
    if (why && !l->st)
        l->st = plumb__fail(PLUMB_E_INVALID_ARG, "OpenCL %s: tensor %s %s (offset %zu)", plumb_op_name(l->node->op),
                            t->name ? t->name : "?", why, t->offs);
    arg_mem(l, why ? NULL : (cl_mem)t->buf->handle, t->offs);
}

/* Queues the kernel over global[0..dims) in work-groups of local[0..dims). */
static plumb_status run(launch *l, cl_uint dims, const size_t *global, const size_t *local) {
    if (l->st) return l->st;
    if (l->err) return plumb__opencl_check(l->err, "clSetKernelArg");
    for (cl_uint d = 0; d < dims; d++)
        if (global[d] == 0) return PLUMB_OK;
    plumb_opencl_ctx *c = l->b->ctx;
    const cl_int err = clEnqueueNDRangeKernel(c->queue, l->k, dims, NULL, global, local, 0, NULL, NULL);
    if (err == CL_SUCCESS) return PLUMB_OK;
    char what[64];
    snprintf(what, sizeof what, "queueing the %s kernel", plumb_op_name(l->node->op));
    return plumb__opencl_check(err, what);
}

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* Runs over n work-items in work-groups of PLUMB_OPENCL_WG. */
static plumb_status run1(launch *l, size_t n) {
    const size_t global = round_up(n, PLUMB_OPENCL_WG), local = PLUMB_OPENCL_WG;
    return run(l, 1, &global, &local);
}

/* Runs over (n0, n1) work-items in work-groups of (PLUMB_OPENCL_WG, 1). */
static plumb_status run2(launch *l, size_t n0, size_t n1) {
    const size_t global[2] = {round_up(n0, PLUMB_OPENCL_WG), n1}, local[2] = {PLUMB_OPENCL_WG, 1};
    return run(l, 2, global, local);
}

static int64_t rows(const plumb_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

/* ---- matmul ------------------------------------------------------------------------------ */

/* How a weight type's activations are prepared (act.cl). */
typedef enum { ACT_NONE, ACT_F16, ACT_Q8, ACT_Q8_S, ACT_Q8_K } act_kind;

static act_kind act_of(int type) {
    switch (type) {
    case PLUMB_TYPE_F32: return ACT_NONE;
    case PLUMB_TYPE_F16: return ACT_F16;
    case PLUMB_TYPE_Q4_0:
    case PLUMB_TYPE_Q5_0:
    case PLUMB_TYPE_Q8_0: return ACT_Q8;
    case PLUMB_TYPE_Q4_1:
    case PLUMB_TYPE_Q5_1: return ACT_Q8_S;
    default: return ACT_Q8_K;
    }
}

/* Where the prepared activations of K x T values lie in the scratch: the values (int8, or F32
 * for F16 rounding), the scales, the sums (Q8_S: one float per 32 values; Q8_K: one int per
 * 16); returns the bytes needed. */
static size_t act_layout(act_kind a, int64_t K, int64_t T, size_t *q, size_t *d, size_t *s) {
    const size_t n = (size_t)(K * T), blocks = (size_t)(K / (a == ACT_Q8_K ? 256 : 32)) * (size_t)T;
    *q = 0;
    *d = round_up(a == ACT_F16 ? 4 * n : n, 64);
    *s = *d + round_up(4 * blocks, 64);
    switch (a) {
    case ACT_NONE: return 0;
    case ACT_F16: return *d;
    case ACT_Q8_S: return *s + round_up(4 * blocks, 64);
    case ACT_Q8_K: return *s + round_up(n / 16 * 4, 64);
    default: return *s;
    }
}

static plumb_opencl_kernel mul_mat_kernel(int type) {
    switch (type) {
    case PLUMB_TYPE_F32: return OPENCL_K_MUL_MAT_F32;
    case PLUMB_TYPE_F16: return OPENCL_K_MUL_MAT_F16;
    case PLUMB_TYPE_Q4_0: return OPENCL_K_MUL_MAT_Q4_0;
    case PLUMB_TYPE_Q4_1: return OPENCL_K_MUL_MAT_Q4_1;
    case PLUMB_TYPE_Q5_0: return OPENCL_K_MUL_MAT_Q5_0;
    case PLUMB_TYPE_Q5_1: return OPENCL_K_MUL_MAT_Q5_1;
    case PLUMB_TYPE_Q8_0: return OPENCL_K_MUL_MAT_Q8_0;
    case PLUMB_TYPE_Q2_K: return OPENCL_K_MUL_MAT_Q2_K;
    case PLUMB_TYPE_Q3_K: return OPENCL_K_MUL_MAT_Q3_K;
    case PLUMB_TYPE_Q4_K: return OPENCL_K_MUL_MAT_Q4_K;
    case PLUMB_TYPE_Q5_K: return OPENCL_K_MUL_MAT_Q5_K;
    default: return OPENCL_K_MUL_MAT_Q6_K;
    }
}

static plumb_status op_mul_mat(plumb_backend *b, const plumb_tensor *n) {
    plumb_opencl_ctx *c = b->ctx;
    const plumb_tensor *w = n->src[0], *x = n->src[1];
    const int64_t K = w->ne[0], N = w->ne[1], T = rows(x);
    const act_kind a = act_of(w->type);
    size_t aq, ad, as;
    act_layout(a, K, T, &aq, &ad, &as);
    plumb_status st = PLUMB_OK;
    if (a != ACT_NONE) { /* the activations, prepared into the scratch */
        launch l = start(b, n,
                         a == ACT_F16    ? OPENCL_K_ACT_F16
                         : a == ACT_Q8_K ? OPENCL_K_QUANTIZE_Q8_K
                                         : OPENCL_K_QUANTIZE_Q8);
        arg_t(&l, x);
        if (a == ACT_F16) {
            arg_u(&l, (size_t)(K * T));
            arg_mem(&l, c->act, aq);
        } else {
            arg_i(&l, K);
            arg_i(&l, T);
            if (a != ACT_Q8_K) arg_i(&l, a == ACT_Q8_S);
            arg_mem(&l, c->act, aq);
            arg_u(&l, ad);
            arg_u(&l, as);
        }
        st = run1(&l, a == ACT_F16 ? (size_t)(K * T) : (size_t)(K / (a == ACT_Q8_K ? 256 : 32) * T));
    }
    if (st) return st;
    launch l = start(b, n, mul_mat_kernel(w->type));
    arg_t(&l, w);
    arg_u(&l, w->nb[1]);
    arg_i(&l, K);
    arg_i(&l, N);
    if (a == ACT_NONE) {
        arg_t(&l, x);
    } else if (a == ACT_F16) {
        arg_mem(&l, c->act, aq);
    } else {
        arg_mem(&l, c->act, aq);
        arg_u(&l, ad);
        arg_u(&l, as);
    }
    arg_i(&l, T);
    arg_t(&l, n);
    /* at most 32 work-groups per compute unit, each taking every so many row groups */
    size_t groups = (size_t)(N + PLUMB_OPENCL_MM_ROWS - 1) / PLUMB_OPENCL_MM_ROWS;
    if (groups > 32 * (size_t)c->compute_units) groups = 32 * (size_t)c->compute_units;
    const size_t global[2] = {groups * PLUMB_OPENCL_MM_WG,
                              (size_t)(T + PLUMB_OPENCL_MM_TOKENS - 1) / PLUMB_OPENCL_MM_TOKENS};
    const size_t local[2] = {PLUMB_OPENCL_MM_WG, 1};
    return run(&l, 2, global, local);
}

/* ---- the other ops ------------------------------------------------------------------------ */

static plumb_status op_get_rows(plumb_backend *b, const plumb_tensor *n) {
    const plumb_tensor *w = n->src[0], *ids = n->src[1];
    launch l = start(b, n, OPENCL_K_GET_ROWS);
    arg_i(&l, w->type);
    arg_t(&l, w);
    arg_u(&l, w->nb[1]);
    arg_i(&l, w->ne[0]);
    arg_t(&l, ids);
    arg_t(&l, n);
    return run2(&l, (size_t)(w->ne[0] + 31) / 32, (size_t)ids->ne[0]);
}

static plumb_status op_binary(plumb_backend *b, const plumb_tensor *n) {
    launch l = start(b, n, OPENCL_K_BINARY);
    arg_i(&l, n->op);
    arg_t(&l, n->src[0]);
    arg_t(&l, n->src[1]);
    arg_u(&l, (size_t)n->ne[0]);
    arg_i(&l, rows(n->src[1]) == 1);
    arg_u(&l, (size_t)plumb_tensor_nelements(n));
    arg_t(&l, n);
    return run1(&l, (size_t)plumb_tensor_nelements(n));
}

static plumb_status op_unary(plumb_backend *b, const plumb_tensor *n) {
    float p0 = 0.0f, p1 = 0.0f;
    if (n->op == PLUMB_OP_SCALE) p0 = n->params.scale.s;
    if (n->op == PLUMB_OP_SOFTCAP) p0 = 1.0f / n->params.softcap.cap, p1 = n->params.softcap.cap;
    launch l = start(b, n, OPENCL_K_UNARY);
    arg_i(&l, n->op);
    arg_f(&l, p0);
    arg_f(&l, p1);
    arg_t(&l, n->src[0]);
    arg_t(&l, n->src[1] ? n->src[1] : n->src[0]);
    arg_u(&l, (size_t)plumb_tensor_nelements(n));
    arg_t(&l, n);
    return run1(&l, (size_t)plumb_tensor_nelements(n));
}

static plumb_status op_rms_norm(plumb_backend *b, const plumb_tensor *n) {
    launch l = start(b, n, OPENCL_K_RMS_NORM);
    arg_t(&l, n->src[0]);
    arg_t(&l, n->src[1] ? n->src[1] : n->src[0]);
    arg_i(&l, n->src[1] != NULL);
    arg_i(&l, n->ne[0]);
    arg_f(&l, n->params.rms_norm.eps);
    arg_t(&l, n);
    return run1(&l, (size_t)rows(n) * PLUMB_OPENCL_WG);
}

static plumb_status op_soft_max(plumb_backend *b, const plumb_tensor *n) {
    launch l = start(b, n, OPENCL_K_SOFT_MAX);
    arg_t(&l, n->src[0]);
    arg_i(&l, n->ne[0]);
    arg_f(&l, n->params.soft_max.scale);
    arg_t(&l, n);
    return run1(&l, (size_t)rows(n) * PLUMB_OPENCL_WG);
}

static plumb_status op_rope(plumb_backend *b, const plumb_tensor *n) {
    const plumb_rope_params *p = &n->params.rope;
    const plumb_tensor *x = n->src[0];
    launch l = start(b, n, OPENCL_K_ROPE);
    arg_t(&l, x);
    arg_t(&l, n->src[1]);
    arg_t(&l, n->src[2] ? n->src[2] : x);
    arg_i(&l, n->src[2] != NULL);
    arg_i(&l, x->ne[0]);
    arg_i(&l, x->ne[1]);
    arg_i(&l, p->mode);
    arg_i(&l, p->n_rot);
    arg_f(&l, powf(p->base, -2.0f / (float)p->n_rot)); /* the CPU's theta_scale, bit for bit */
    arg_f(&l, p->freq_scale);
    arg_f(&l, p->attn_factor > 0.0f ? p->attn_factor : 1.0f);
    arg_t(&l, n);
    return run2(&l, (size_t)x->ne[0], (size_t)(x->ne[1] * x->ne[2]));
}

/* The layer's cache buffer and offset as a kernel argument (its buffers are this backend's). */
static void arg_cache(launch *l, plumb_buffer *buf, size_t off) {
    if ((!buf || buf->backend != l->b || off % 2) && !l->st)
        l->st =
            plumb__fail(PLUMB_E_INVALID_ARG, "OpenCL attn: the layer's KV cache is not in a buffer of this backend");
    arg_mem(l, buf && buf->backend == l->b ? (cl_mem)buf->handle : NULL, off);
}

static plumb_status op_attn(plumb_backend *b, const plumb_tensor *n) {
    plumb_opencl_ctx *c = b->ctx;
    const plumb_attn_params *p = &n->params.attn;
    const plumb_kv_cache *kv = p->kv;
    const plumb_tensor *q = n->src[0], *k = n->src[1];
    const int64_t hd = q->ne[0], n_head = q->ne[1], n_kv = k->ne[1], T = q->ne[2];
    /* a device does not check its writes: every row must lie in the layer's cache */
    const size_t layer = (size_t)kv->n_seq * (size_t)kv->n_ctx * (size_t)(n_kv * hd) * 2;
    for (int w = 0; w < 2; w++) {
        const plumb_buffer *buf = (w ? kv->v_buf : kv->k_buf)[p->layer];
        const size_t off = (w ? kv->v_offs : kv->k_offs)[p->layer];
        if (buf && (off > buf->size || layer > buf->size - off))
            return plumb__fail(PLUMB_E_INVALID_ARG, "OpenCL attn: layer %d's cache is larger than its buffer",
                               p->layer);
    }
    for (int64_t t = 0; t < T; t++)
        if (p->pos[t] < 0 || p->pos[t] >= kv->n_ctx || p->seq[t] < 0 || p->seq[t] >= kv->n_seq)
            return plumb__fail(PLUMB_E_RANGE,
                               "OpenCL attn: token %lld at position %d of sequence %d is outside the cache",
                               (long long)t, p->pos[t], p->seq[t]);
    /* positions and sequence ids from the host, in queue order before the kernels */
    const size_t bytes = (size_t)T * sizeof(int32_t);
    cl_int err = clEnqueueWriteBuffer(c->queue, c->ids, CL_FALSE, 0, bytes, p->pos, 0, NULL, NULL);
    if (!err) err = clEnqueueWriteBuffer(c->queue, c->ids, CL_FALSE, bytes, bytes, p->seq, 0, NULL, NULL);
    if (err) return plumb__opencl_check(err, "clEnqueueWriteBuffer (attention positions)");
    launch l = start(b, n, OPENCL_K_KV_STORE);
    arg_t(&l, k);
    arg_t(&l, n->src[2]);
    arg_mem(&l, c->ids, 0);
    arg_i(&l, T);
    arg_i(&l, n_kv * hd);
    arg_i(&l, kv->n_ctx);
    arg_cache(&l, kv->k_buf[p->layer], kv->k_offs[p->layer]);
    arg_cache(&l, kv->v_buf[p->layer], kv->v_offs[p->layer]);
    plumb_status st = run2(&l, (size_t)(n_kv * hd), (size_t)T);
    if (st) return st;
    l = start(b, n, OPENCL_K_ATTN);
    arg_t(&l, q);
    arg_cache(&l, kv->k_buf[p->layer], kv->k_offs[p->layer]);
    arg_cache(&l, kv->v_buf[p->layer], kv->v_offs[p->layer]);
    arg_mem(&l, c->ids, 0);
    arg_i(&l, T);
    arg_i(&l, n_head);
    arg_i(&l, n_kv);
    arg_i(&l, hd);
    arg_i(&l, kv->n_ctx);
    arg_i(&l, p->n_swa);
    arg_f(&l, p->scale);
    arg_f(&l, p->softcap);
    arg_f(&l, p->softcap > 0.0f ? 1.0f / p->softcap : 0.0f);
    arg_t(&l, n);
    const size_t global[3] = {PLUMB_OPENCL_WG, (size_t)n_head, (size_t)T}, local[3] = {PLUMB_OPENCL_WG, 1, 1};
    return run(&l, 3, global, local);
}

/* ---- graph compute ------------------------------------------------------------------------- */

static plumb_status compute_node(plumb_backend *b, const plumb_tensor *n) {
    switch (n->op) {
    case PLUMB_OP_MUL_MAT: return op_mul_mat(b, n);
    case PLUMB_OP_GET_ROWS: return op_get_rows(b, n);
    case PLUMB_OP_ADD:
    case PLUMB_OP_MUL: return op_binary(b, n);
    case PLUMB_OP_SCALE:
    case PLUMB_OP_SILU:
    case PLUMB_OP_GELU_TANH:
    case PLUMB_OP_SILU_MUL:
    case PLUMB_OP_GELU_MUL:
    case PLUMB_OP_SOFTCAP: return op_unary(b, n);
    case PLUMB_OP_RMS_NORM: return op_rms_norm(b, n);
    case PLUMB_OP_SOFT_MAX: return op_soft_max(b, n);
    case PLUMB_OP_ROPE: return op_rope(b, n);
    case PLUMB_OP_ATTN: return op_attn(b, n);
    case PLUMB_OP_NONE:
    case PLUMB_OP_VIEW:
    case PLUMB_OP_COPY: return PLUMB_OK;
    default: return plumb__fail(PLUMB_E_UNSUPPORTED, "the OpenCL backend has no %s op", plumb_op_name(n->op));
    }
}

plumb_status plumb__opencl_graph_compute(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end) {
    plumb_opencl_ctx *c = b->ctx;
    size_t act = 0, ids = 0, q, d, s;
    for (int32_t i = first; i < end; i++) { /* the scratch the nodes need, made before any is queued */
        const plumb_tensor *n = g->nodes[i];
        size_t need = 0;
        if (n->op == PLUMB_OP_MUL_MAT)
            need = act_layout(act_of(n->src[0]->type), n->src[0]->ne[0], rows(n->src[1]), &q, &d, &s);
        if (need > act) act = need;
        if (n->op == PLUMB_OP_ATTN && 2 * sizeof(int32_t) * (size_t)n->ne[1] > ids)
            ids = 2 * sizeof(int32_t) * (size_t)n->ne[1];
    }
    plumb_status st = plumb__opencl_reserve(c, &c->act, &c->act_size, act ? act : 64);
    if (!st) st = plumb__opencl_reserve(c, &c->ids, &c->ids_size, ids ? ids : 64);
    for (int32_t i = first; i < end && !st; i++) st = compute_node(b, g->nodes[i]);
    const cl_int err = clFinish(c->queue); /* also when a node failed: nothing stays queued */
    if (!st) st = plumb__opencl_check(err, "clFinish");
    return st;
}
