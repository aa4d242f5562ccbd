/* cpu_ops.c — the CPU backend's ops. Each op computes thread ith's share of its output
 * (rows split evenly by (ith, nth)); ops with two phases (matmul: quantize activations,
 * then dot; attention: write the KV cache, then attend) use the barrier in between.
 * All tensors here are contiguous; activations are F32. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"
#include "core/kv_cache.h"
#include "quant/fp16.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline void split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

static int64_t n_rows(const plumb_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

/* ---- scratch sizing ------------------------------------------------------------------------- */

static size_t attn_scratch_per_thread(const plumb_tensor *n) {
    const plumb_attn_params *p = n->pparams;
    /* scores [n_ctx], then double sums [hd], then q in F16 precision [hd] */
    size_t bytes = ((size_t)p->kv->n_ctx + 4 * (size_t)p->kv->head_dim + 16) * sizeof(float);
    return (bytes + 63) / 64 * 64; /* each thread's part starts on a cache line */
}

plumb_status plumb__cpu_reserve_work(plumb_cpu_ctx *c, const plumb_graph *g) {
    size_t need = 0;
    for (int32_t i = 0; i < g->n_nodes; i++) {
        const plumb_tensor *n = g->nodes[i];
        size_t s = 0;
        if (n->op == PLUMB_OP_MUL_MAT) {
            int act = plumb__act_type(n->src[0]->type);
            s = plumb__act_row_size(act, n->src[1]->ne[0]) * (size_t)n_rows(n->src[1]);
        } else if (n->op == PLUMB_OP_ATTN) {
            s = attn_scratch_per_thread(n) * (size_t)c->n_threads;
        }
        if (s > need) need = s;
    }
    if (need <= c->work_size) return PLUMB_OK;
    free(c->work);
    size_t size = (need + 63) / 64 * 64;
    c->work = aligned_alloc(64, size);
    c->work_size = c->work ? size : 0;
    if (!c->work) return plumb__fail(PLUMB_E_NOMEM, "out of memory for %zu bytes of compute scratch", size);
    return PLUMB_OK;
}

/* ---- ops ------------------------------------------------------------------------------------ */

static void op_get_rows(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *w = n->src[0], *ids = n->src[1];
    const plumb_type_traits *tr = plumb__type_traits(w->type);
    const int32_t *id = ids->data;
    int64_t lo, hi;
    split(ids->ne[0], ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)id[i] * w->nb[1];
        tr->dequantize(row, (float *)n->data + i * n->ne[0], w->ne[0]);
    }
}

static void op_mul_mat(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *w = n->src[0], *x = n->src[1];
    const int64_t K = w->ne[0], N = w->ne[1], T = n_rows(x);
    const int act = plumb__act_type(w->type);
    const size_t arow = plumb__act_row_size(act, K);
    const plumb_vec_dot_fn dot = c->kernels->vec_dot[w->type];
    int64_t lo, hi;
    split(T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) c->kernels->act_quantize[act]((const float *)x->data + t * K, c->work + (size_t)t * arow, K);
    plumb__cpu_barrier(c);
    /* each thread owns a contiguous range of weight rows: every weight byte is read once */
    split(N, ith, nth, &lo, &hi);
    float *out = n->data;
    const uint8_t *wd = w->data;
    for (int64_t r = lo; r < hi; r++) {
        const uint8_t *wr = wd + (size_t)r * w->nb[1];
        for (int64_t t = 0; t < T; t++) out[t * N + r] = dot(K, wr, c->work + (size_t)t * arow);
    }
}

static void op_binary(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *a = n->src[0], *b = n->src[1];
    const int64_t ne0 = a->ne[0], rows = n_rows(a), brows = n_rows(b);
    int64_t lo, hi;
    split(rows, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = (const float *)a->data + r * ne0;
        const float *y = (const float *)b->data + (brows == 1 ? 0 : r) * ne0;
        float *o = (float *)n->data + r * ne0;
        if (n->op == PLUMB_OP_ADD)
            for (int64_t i = 0; i < ne0; i++) o[i] = x[i] + y[i];
        else
            for (int64_t i = 0; i < ne0; i++) o[i] = x[i] * y[i];
    }
}

static inline float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* GELU through F16, as the reference engine computes it: the input rounded to F16, the
 * result rounded to F16 (outside [-10, 10] GELU is 0 or x) */
static inline float gelu_tanh_f16(float x) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    const float xh = plumb__f16_table[plumb__fp32_to_fp16(x)];
    return plumb__f16_table[plumb__fp32_to_fp16(gelu_tanh(xh))];
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

static void op_unary(plumb_tensor *n, int ith, int nth) {
    const float *x = n->src[0]->data;
    const float *y = n->src[1] ? n->src[1]->data : NULL;
    float *o = n->data;
    const float f = n->fparams[0];
    int64_t lo, hi;
    split(plumb_tensor_nelements(n), ith, nth, &lo, &hi);
    switch (n->op) {
    case PLUMB_OP_SCALE:
        for (int64_t i = lo; i < hi; i++) o[i] = x[i] * f;
        break;
    case PLUMB_OP_SILU:
        for (int64_t i = lo; i < hi; i++) o[i] = silu(x[i]);
        break;
    case PLUMB_OP_GELU_TANH:
        for (int64_t i = lo; i < hi; i++) o[i] = gelu_tanh(x[i]);
        break;
    case PLUMB_OP_SILU_MUL:
        for (int64_t i = lo; i < hi; i++) o[i] = silu(x[i]) * y[i];
        break;
    case PLUMB_OP_GELU_MUL:
        for (int64_t i = lo; i < hi; i++) o[i] = gelu_tanh_f16(x[i]) * y[i];
        break;
    case PLUMB_OP_SOFTCAP:
        for (int64_t i = lo; i < hi; i++) o[i] = f * tanhf(x[i] / f);
        break;
    default: break;
    }
}

static void op_rms_norm(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *a = n->src[0];
    const float *w = n->src[1] ? n->src[1]->data : NULL;
    const int64_t ne0 = a->ne[0];
    const float eps = n->fparams[0];
    int64_t lo, hi;
    split(n_rows(a), ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = (const float *)a->data + r * ne0;
        float *o = (float *)n->data + r * ne0;
        double sum = 0.0;
        for (int64_t i = 0; i < ne0; i++) sum += (double)(x[i] * x[i]);
        const float scale = 1.0f / sqrtf((float)(sum / (double)ne0) + eps);
        if (w)
            for (int64_t i = 0; i < ne0; i++) o[i] = x[i] * scale * w[i];
        else
            for (int64_t i = 0; i < ne0; i++) o[i] = x[i] * scale;
    }
}

static void op_rope(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *a = n->src[0];
    const int32_t *pos = n->src[1]->data;
    const float *ff = n->src[2] ? n->src[2]->data : NULL;
    const int mode = n->iparams[0], n_rot = n->iparams[1];
    const float base = n->fparams[0], freq_scale = n->fparams[1];
    const int64_t hd = a->ne[0], n_head = a->ne[1], T = a->ne[2];
    const float theta_scale = powf(base, -2.0f / (float)n_rot);
    int64_t lo, hi;
    split(T * n_head, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const int64_t t = r / n_head;
        const float *x = (const float *)a->data + r * hd;
        float *o = (float *)n->data + r * hd;
        memcpy(o + n_rot, x + n_rot, (size_t)(hd - n_rot) * sizeof(float));
        float theta = (float)pos[t];
        for (int i0 = 0; i0 < n_rot; i0 += 2) {
            const float th = freq_scale * (ff ? theta / ff[i0 / 2] : theta);
            const float cs = cosf(th), sn = sinf(th);
            const int64_t i_a = mode == PLUMB_ROPE_NEOX ? i0 / 2 : i0;
            const int64_t i_b = mode == PLUMB_ROPE_NEOX ? i0 / 2 + n_rot / 2 : i0 + 1;
            const float x0 = x[i_a], x1 = x[i_b];
            o[i_a] = x0 * cs - x1 * sn;
            o[i_b] = x0 * sn + x1 * cs;
            theta *= theta_scale;
        }
    }
}

static void op_soft_max(plumb_tensor *n, int ith, int nth) {
    const int64_t ne0 = n->ne[0];
    const float scale = n->fparams[0];
    int64_t lo, hi;
    split(n_rows(n), ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = (const float *)n->src[0]->data + r * ne0;
        float *o = (float *)n->data + r * ne0;
        float mx = -INFINITY;
        for (int64_t i = 0; i < ne0; i++) mx = fmaxf(mx, x[i] * scale);
        double sum = 0.0;
        for (int64_t i = 0; i < ne0; i++) {
            o[i] = expf(x[i] * scale - mx);
            sum += o[i];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < ne0; i++) o[i] *= inv;
    }
}

static void op_attn(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    const plumb_attn_params *p = n->pparams;
    const plumb_kv_cache *kv = p->kv;
    const plumb_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2];
    const int64_t hd = kv->head_dim, n_head = q->ne[1], n_kv = k->ne[1], T = q->ne[2];
    const int64_t kv_dim = n_kv * hd;
    const float scale = n->fparams[0];
    uint16_t *kc = kv->k[p->layer], *vc = kv->v[p->layer];
    int64_t lo, hi;
    /* phase 1: write this batch's keys and values into the cache */
    split(T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const size_t row = ((size_t)p->seq[t] * (size_t)kv->n_ctx + (size_t)p->pos[t]) * (size_t)kv_dim;
        const float *ks = (const float *)k->data + t * kv_dim, *vs = (const float *)v->data + t * kv_dim;
        for (int64_t i = 0; i < kv_dim; i++) {
            kc[row + (size_t)i] = plumb__fp32_to_fp16(ks[i]);
            vc[row + (size_t)i] = plumb__fp32_to_fp16(vs[i]);
        }
    }
    plumb__cpu_barrier(c);
    /* phase 2: each (token, head) attends over its sequence's positions [lo, pos] */
    float *scores = (float *)(c->work + attn_scratch_per_thread(n) * (size_t)ith);
    double *accd = (double *)(scores + kv->n_ctx + (kv->n_ctx & 1)); /* [hd], 8-byte aligned */

    float *acc = (float *)(accd + kv->head_dim);
    const int64_t group = n_head / n_kv;
    split(T * n_head, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const int64_t t = r / n_head, h = r % n_head, hk = h / group;
        const int32_t pos = p->pos[t];
        const int32_t first = p->n_swa > 0 && pos - p->n_swa + 1 > 0 ? pos - p->n_swa + 1 : 0;
        /* The F16 cache sets the numerics, as in the reference engine: q is rounded to F16
         * for its dot products with the keys, the probabilities are rounded to F16 before
         * they weight the values, and each product is summed in double precision in
         * position order, so a result does not depend on the batch it was computed in. */
        float *qv = acc;
        for (int64_t d = 0; d < hd; d++)
            qv[d] = plumb__f16_table[plumb__fp32_to_fp16(((const float *)q->data)[r * hd + d])];
        const size_t seq_base = (size_t)p->seq[t] * (size_t)kv->n_ctx;
        float mx = -INFINITY;
        for (int32_t j = first; j <= pos; j++) {
            const uint16_t *kr = kc + (seq_base + (size_t)j) * (size_t)kv_dim + hk * hd;
            double sd = 0.0;
            for (int64_t d = 0; d < hd; d++) sd += (double)(qv[d] * plumb__f16_table[kr[d]]);
            const float s = (float)sd * scale;
            scores[j - first] = s;
            mx = fmaxf(mx, s);
        }
        double sum = 0.0;
        for (int32_t j = first; j <= pos; j++) {
            const float e = expf(scores[j - first] - mx);
            scores[j - first] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t d = 0; d < hd; d++) accd[d] = 0.0;
        for (int32_t j = first; j <= pos; j++) {
            const uint16_t *vr = vc + (seq_base + (size_t)j) * (size_t)kv_dim + hk * hd;
            const float w = plumb__f16_table[plumb__fp32_to_fp16(scores[j - first] * inv)];
            for (int64_t d = 0; d < hd; d++) accd[d] += (double)(w * plumb__f16_table[vr[d]]);
        }
        float *o = (float *)n->data + t * (n_head * hd) + h * hd;
        for (int64_t d = 0; d < hd; d++) o[d] = (float)accd[d];
    }
}

void plumb__cpu_compute_node(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    switch (n->op) {
    case PLUMB_OP_GET_ROWS: op_get_rows(n, ith, nth); break;
    case PLUMB_OP_MUL_MAT: op_mul_mat(c, n, ith, nth); break;
    case PLUMB_OP_ADD:
    case PLUMB_OP_MUL: op_binary(n, ith, nth); break;
    case PLUMB_OP_SCALE:
    case PLUMB_OP_SILU:
    case PLUMB_OP_GELU_TANH:
    case PLUMB_OP_SILU_MUL:
    case PLUMB_OP_GELU_MUL:
    case PLUMB_OP_SOFTCAP: op_unary(n, ith, nth); break;
    case PLUMB_OP_RMS_NORM: op_rms_norm(n, ith, nth); break;
    case PLUMB_OP_ROPE: op_rope(n, ith, nth); break;
    case PLUMB_OP_SOFT_MAX: op_soft_max(n, ith, nth); break;
    case PLUMB_OP_ATTN: op_attn(c, n, ith, nth); break;
    case PLUMB_OP_NONE:
    case PLUMB_OP_VIEW:
    case PLUMB_OP_COUNT: break;
    }
}
