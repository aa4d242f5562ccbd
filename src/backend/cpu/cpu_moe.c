/* cpu_moe.c — the CPU backend's mixture-of-experts ops: the expert matmul (MUL_MAT_ID), top-k
 * selection, the routing weights and the weighted sum of the experts' outputs. Their numerics
 * are the reference engine's (llama.cpp's build_moe_ffn on ggml's CPU ops):
 *   - every (slot, token) row of the expert matmul is the dot product the dense matmul
 *     computes (the kernel set's vec_dot, or its 4-row and 2-row forms, which give the same
 *     bits), of the expert's weight row with the token's activation row quantized once;
 *   - the routing weights are the softmax probabilities of the chosen experts, divided by
 *     their sum (added in double, rounded to float, clamped below at 2^-14);
 *   - the outputs are weighted one product at a time and added in slot order.
 * A batch reads the weights of the experts it routes to and no others. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"

#include <string.h>


static size_t round64(size_t x) { return (x + 63) / 64 * 64; }

/* ---- MUL_MAT_ID ----------------------------------------------------------------------------
 * The slots of a batch (k per token) are grouped by expert: each thread makes the same table
 * for itself (a few hundred integers, no barrier needed), quantizes its share of the
 * activation rows straight into their expert's group (a row that several slots read is
 * quantized once per slot: cheap next to the dot products), and after one barrier the weight
 * rows of the routed experts go out in chunks to whichever thread is free. */

/* Scratch of one node: the gathered quantized rows, the 4-row kernels' preparation of every
 * whole group of 4 of them, then each thread's routing table. */
typedef struct mmid_layout {
    size_t xq, xsv, route; /* bytes of each part (route: per thread) */
} mmid_layout;

static mmid_layout mmid_sizes(const plumb_cpu_ctx *c, const plumb_tensor *n) {
    const plumb_tensor *w = n->src[0], *ids = n->src[2];
    const int64_t K = w->ne[0], E = w->ne[2], slots = ids->ne[0] * ids->ne[1];
    const int act = plumb__act_type(w->type);
    mmid_layout l;
    l.xq = round64(plumb__act_row_size(act, K) * (size_t)slots);
    l.xsv = act == PLUMB_ACT_Q8_0 ? round64((size_t)(slots / 4) * (size_t)(K / 32) * c->kernels->act4_block_bytes) : 0;
    l.route = round64((size_t)(4 * E + slots) * sizeof(int32_t));
    return l;
}

size_t plumb__cpu_mul_mat_id_scratch(const plumb_cpu_ctx *c, const plumb_tensor *n, int nth) {
    const mmid_layout l = mmid_sizes(c, n);
    return l.xq + l.xsv + l.route * (size_t)nth;
}

/* The slots grouped by expert. Gathered row g (expert e's rows are off[e] .. off[e] + cnt[e]
 * - 1, in token order, then slot order) is output column col[g] = t k + s; the whole groups
 * of 4 rows are numbered across the experts from grp[e] on. */
typedef struct moe_route {
    int32_t *cnt, *off, *grp; /* [E] */
    int32_t *act;             /* [n_act] experts with at least one slot, in index order */
    int32_t *col;             /* [k T] */
    int32_t n_act;
} moe_route;

static void route_build(moe_route *r, int32_t *mem, const int32_t *ids, int64_t E, int64_t slots) {
    r->cnt = mem, r->off = mem + E, r->grp = mem + 2 * E, r->act = mem + 3 * E, r->col = mem + 4 * E;
    memset(r->cnt, 0, (size_t)E * sizeof(int32_t));
    for (int64_t i = 0; i < slots; i++) r->cnt[ids[i]]++;
    int32_t at = 0, groups = 0;
    r->n_act = 0;
    for (int64_t e = 0; e < E; e++) {
        r->off[e] = r->grp[e] = at; /* grp is the fill cursor for now */
        at += r->cnt[e];
        if (r->cnt[e]) r->act[r->n_act++] = (int32_t)e;
    }
    for (int64_t i = 0; i < slots; i++) r->col[r->grp[ids[i]]++] = (int32_t)i;
    for (int64_t e = 0; e < E; e++) {
        r->grp[e] = groups;
        groups += r->cnt[e] / 4;
    }
}

void plumb__cpu_mul_mat_id(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *w = n->src[0], *x = n->src[1], *ids = n->src[2];
    const int64_t K = w->ne[0], N = w->ne[1], E = w->ne[2], B = x->ne[1], k = ids->ne[0], slots = k * ids->ne[1];
    const plumb_kernel_set *ks = c->kernels;
    const int act = plumb__act_type(w->type);
    const size_t arow = plumb__act_row_size(act, K);
    const plumb_vec_dot_fn dot = ks->vec_dot[w->type];
    const plumb_vec_dot2_fn dot2 = ks->vec_dot2[w->type];
    const plumb_vec_dot4_fn dot4 = ks->vec_dot4[w->type];
    const bool prep = dot4 && act == PLUMB_ACT_Q8_0; /* the 4-row kernels read act_prep4's scales */
    const size_t sv_tile = (size_t)(K / 32) * (ks->act4_block_bytes / sizeof(float)); /* floats per group */
    const mmid_layout l = mmid_sizes(c, n);
    uint8_t *xq = c->work;
    float *xsv = (float *)(c->work + l.xq);
    moe_route r;
    route_build(&r, (int32_t *)(c->work + l.xq + l.xsv + l.route * (size_t)ith), ids->data, E, slots);

    /* phase 1: this thread's units (an expert's group of up to 4 rows) quantized, and
     * prepared for the 4-row kernels when whole */
    int64_t units = 0, lo, hi;
    for (int32_t a = 0; a < r.n_act; a++) units += (r.cnt[r.act[a]] + 3) / 4;
    plumb__cpu_split(units, ith, nth, &lo, &hi);
    for (int32_t a = 0, u = 0; a < r.n_act && u < hi; a++) {
        const int32_t e = r.act[a], cnt = r.cnt[e];
        for (int32_t j = 0; j < (cnt + 3) / 4; j++, u++) {
            if (u < lo || u >= hi) continue;
            const int32_t g0 = r.off[e] + 4 * j, g1 = g0 + 4 < r.off[e] + cnt ? g0 + 4 : r.off[e] + cnt;
            for (int32_t gi = g0; gi < g1; gi++) {
                const int64_t t = r.col[gi] / k, s = r.col[gi] % k;
                const float *src = (const float *)x->data + (t * B + s % B) * K;
                ks->act_quantize[act](src, xq + (size_t)gi * arow, K);
            }
            if (prep && g1 - g0 == 4) ks->act_prep4(xq + (size_t)g0 * arow, arow, K, xsv + (size_t)(r.grp[e] + j) * sv_tile);
        }
    }
    plumb__cpu_barrier(c);

    /* phase 2: chunks of an expert's weight rows (about 8 per thread over all the routed
     * experts), each weight row read once for all the slots that expert serves */
    float *out = n->data;
    const uint8_t *wd = w->data;
    int64_t per = ((int64_t)r.n_act * N + 8 * nth - 1) / (8 * nth);
    per = (per + 1) / 2 * 2; /* whole pairs of rows for the two-row kernel */
    if (per > N) per = N;
    const int64_t per_expert = (N + per - 1) / per, n_chunks = r.n_act * per_expert;
    for (int64_t ch; (ch = plumb__cpu_next_chunk(c, ith, n_chunks)) >= 0;) {
        const int32_t e = r.act[ch / per_expert];
        const int64_t r0 = ch % per_expert * per, r1 = r0 + per < N ? r0 + per : N;
        const uint8_t *we = wd + (size_t)e * w->nb[2];
        const int32_t g0 = r.off[e], cnt = r.cnt[e], n4 = dot4 ? cnt / 4 * 4 : 0;
        for (int64_t row = r0; row < r1 && n4; row++) {
            const uint8_t *wr = we + (size_t)row * w->nb[1];
            for (int32_t j = 0; j < n4; j += 4) {
                float o4[4];
                dot4(K, wr, xq + (size_t)(g0 + j) * arow, arow, prep ? xsv + (size_t)(r.grp[e] + j / 4) * sv_tile : NULL, o4);
                for (int q = 0; q < 4; q++) out[(int64_t)r.col[g0 + j + q] * N + row] = o4[q];
            }
        }
        int64_t row = r0;
        if (dot2 && n4 < cnt) /* the rows left over from the groups of 4, two weight rows at a time */
            for (; row + 1 < r1; row += 2)
                for (int32_t j = n4; j < cnt; j++) {
                    float o2[2];
                    dot2(K, we + (size_t)row * w->nb[1], we + (size_t)(row + 1) * w->nb[1], xq + (size_t)(g0 + j) * arow, o2);
                    out[(int64_t)r.col[g0 + j] * N + row] = o2[0];
                    out[(int64_t)r.col[g0 + j] * N + row + 1] = o2[1];
                }
        for (; row < r1; row++)
            for (int32_t j = n4; j < cnt; j++)
                out[(int64_t)r.col[g0 + j] * N + row] = dot(K, we + (size_t)row * w->nb[1], xq + (size_t)(g0 + j) * arow);
    }
}

/* ---- routing -------------------------------------------------------------------------------- */

void plumb__cpu_top_k(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *x = n->src[0];
    const int64_t len = x->ne[0], k = n->ne[0];
    int64_t lo, hi;
    plumb__cpu_split(n->ne[1], ith, nth, &lo, &hi);
    for (int64_t row = lo; row < hi; row++) {
        const float *v = (const float *)x->data + row * len;
        int32_t *o = (int32_t *)n->data + row * k;
        /* o[0 .. m) stays sorted, largest first; a value enters ahead of smaller ones only
         * (equal ones keep the lower index first; a NaN never passes another value, so the k
         * indices are always distinct and in range) */
        int64_t m = 0;
        for (int64_t i = 0; i < len; i++) {
            if (m == k && !(v[i] > v[o[k - 1]])) continue;
            int64_t p = m < k ? m : k - 1;
            for (; p > 0 && v[i] > v[o[p - 1]]; p--) o[p] = o[p - 1];
            o[p] = (int32_t)i;
            if (m < k) m++;
        }
    }
}

void plumb__cpu_moe_weights(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *probs = n->src[0], *ids = n->src[1];
    const int64_t E = probs->ne[0], k = n->ne[0];
    const bool norm = n->params.moe_weights.norm;
    const float scale = n->params.moe_weights.scale;
    const float min_sum = 6.103515625e-5f; /* the smallest normal F16, as the reference clamps */
    int64_t lo, hi;
    plumb__cpu_split(n->ne[1], ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const float *p = (const float *)probs->data + t * E;
        const int32_t *id = (const int32_t *)ids->data + t * k;
        float *o = (float *)n->data + t * k;
        double sum = 0.0;
        for (int64_t s = 0; s < k; s++) {
            o[s] = p[id[s]];
            sum += (double)o[s];
        }
        if (norm) {
            float d = (float)sum;
            d = d > min_sum ? d : min_sum;
            for (int64_t s = 0; s < k; s++) o[s] = o[s] / d;
        }
        if (scale != 0.0f && scale != 1.0f)
            for (int64_t s = 0; s < k; s++) o[s] *= scale;
    }
}

void plumb__cpu_moe_sum(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *ex = n->src[0], *wt = n->src[1];
    const int64_t len = ex->ne[0], k = ex->ne[1];
    int64_t lo, hi;
    plumb__cpu_split(n->ne[1], ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const float *e = (const float *)ex->data + t * k * len, *wv = (const float *)wt->data + t * k;
        float *o = (float *)n->data + t * len;
        for (int64_t i = 0; i < len; i++) o[i] = e[i] * wv[0];
        for (int64_t s = 1; s < k; s++)
            for (int64_t i = 0; i < len; i++) {
                const float prod = e[s * len + i] * wv[s]; /* rounded, then added */
                o[i] = o[i] + prod;
            }
    }
}
