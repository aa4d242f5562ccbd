/* cpu_ops.c — the CPU backend's ops. Each op computes thread ith's share of its output
 * (rows split evenly by (ith, nth)); ops with two phases (matmul: quantize activations,
 * then dot) use the barrier in between; attention is cpu_attn.c's, rope cpu_rope.c's.
 * All tensors here are contiguous; activations are F32. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"
#include "quant/fp16.h"
#include "quant/quant.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>



static int64_t n_rows(const plumb_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

/* ---- scratch sizing ------------------------------------------------------------------------- */


/* Up to this many activation rows, every thread quantizes them itself into its own scratch
 * (a few microseconds) instead of sharing the work and waiting at a barrier: this is the
 * decode case, where barriers are a large part of the time. */
#define MATMUL_PRIVATE_ROWS 4
/* Matmuls of that few rows stream their weights from memory, and a chunk of them spends its
 * first microseconds waiting for memory before the prefetches run ahead: so their chunks hold
 * at least this many bytes of weights (a small model's layer matmuls: a chunk or two a thread).
 * On an EPYC (Zen 5), two threads, tokens of each setting interleaved in one process, tg t/s
 * with chunks of 1/16 of a thread's share (56 KB for Gemma 3 270M's FFN) -> of 512 KB: Gemma
 * 160 -> 175 (AVX2 set 156 -> 175), Qwen2.5-Coder 0.5B 103 -> 108 (AVX2 set 78.5 -> 80.5); 1 MB
 * chunks: Qwen's 2.4 MB matmuls split in two chunks, and one late thread holds up the other. */
#define MATMUL_STREAM_CHUNK (512 * 1024)

/* per items of `bytes` each a chunk, raised to MATMUL_STREAM_CHUNK bytes but not past share. */
static int64_t matmul_stream_chunk(int64_t per, int64_t share, size_t bytes) {
    const int64_t stream = (int64_t)(MATMUL_STREAM_CHUNK / bytes) + 1;
    return per >= stream ? per : stream < share ? stream : share;
}

static size_t round64(size_t x) { return (x + 63) / 64 * 64; }

/* Scratch of a matmul: the quantized activations (one copy, or one per thread for a few
 * rows), then their block scales (matmul_scales_bytes). */
static size_t matmul_act_bytes(const plumb_tensor *n, int nth) {
    const size_t rows = (size_t)n_rows(n->src[1]);
    const size_t bytes = round64(plumb__act_row_size(plumb__act_type(n->src[0]->type), n->src[1]->ne[0]) * rows);
    return rows <= MATMUL_PRIVATE_ROWS ? bytes * (size_t)nth : bytes;
}

/* The kernel set's preparation (act_prep4: F32 block scales first) of every group of 4
 * activation rows (Q8_0 activations): one copy, or one per thread for a few rows. */
static size_t matmul_scales_bytes(const plumb_cpu_ctx *c, const plumb_tensor *n, int nth) {
    const size_t rows = (size_t)n_rows(n->src[1]);
    const size_t bytes = round64((size_t)(n->src[1]->ne[0] / 32) * c->kernels->act4_block_bytes * (rows / 4));
    return rows <= MATMUL_PRIVATE_ROWS ? bytes * (size_t)nth : bytes;
}

/* From this many activation rows on, weights with a wide layout (Q4_0, Q5_0, Q8_0, Q4_K) are
 * widened (plumb__widen) once per block of rows instead of being decoded again for every
 * group of 4 activation rows. */
#define MATMUL_WIDEN_ROWS 8
#define MATMUL_ROW_BLOCK 16384 /* bytes of weight rows that stay in L1 while the activations pass */

static bool matmul_widens(const plumb_cpu_ctx *c, const plumb_tensor *n) {
    const int type = n->src[0]->type;
    return n_rows(n->src[1]) >= MATMUL_WIDEN_ROWS && plumb__wide_row_size(type, n->src[0]->ne[0]) > 0 &&
           c->kernels->wide_dot[type];
}

/* From this many activation rows on, a weight type goes through the kernel set's register-tiled
 * GEMM where the set has one for it (kernels.h): weight rows are packed 16 (AVX2: 8) at a time,
 * and each packed group meets every activation row; with the context's block sums
 * (plumb_context_params.fast_gemm) the set's block-sum GEMM where there is one. */
#define MATMUL_GEMM_ROWS 8
/* ... and from this many for weights kept in its layout (cpu_repack.c), which have no packing to
 * amortize. On an EPYC (Zen 5), Gemma 3 270M: with 4 rows the GEMM from the kept layout takes
 * the Q8_0 head from 4.4 to 3.3 ms and Q5_0 640 x 2048 from 44 to 25 us (two threads, weights
 * in cache) against the four-row kernels; with one row (decoding, memory-bound) its prefetched
 * stream beats the one-row kernels: tg128 +15% on one thread, +6-17% on two. */
#define MATMUL_PACKED_ROWS 1

const plumb_gemm_ops *plumb__cpu_gemm_ops(const plumb_cpu_ctx *c, int type) {
    return c->no_repack ? NULL : c->block_sums && c->kernels->gemm_sums[type] ? c->kernels->gemm_sums[type] : c->kernels->gemm[type];
}

static const plumb_gemm_ops *matmul_gemm(const plumb_cpu_ctx *c, const plumb_tensor *n) {
    const plumb_gemm_ops *g = plumb__cpu_gemm_ops(c, n->src[0]->type);
    const int64_t T = n_rows(n->src[1]);
    if (!g || n->src[0]->ne[0] % g->block || T < MATMUL_PACKED_ROWS) return NULL;
    return T >= MATMUL_GEMM_ROWS || (T >= g->kept_min_rows && plumb__cpu_packed_rows(c, n->src[0])) ? g : NULL;
}

/* The GEMM's scratch: the prepared activation rows, then per thread a group of wide rows (for
 * the types packed from them) and its packed form. */
static size_t matmul_gemm_act_bytes(const plumb_gemm_ops *g, const plumb_tensor *n) {
    const size_t per = g->act_kept_bytes > g->act_bytes ? g->act_kept_bytes : g->act_bytes;
    return round64((size_t)(n->src[1]->ne[0] / g->block) * per * (size_t)n_rows(n->src[1]));
}
static size_t matmul_gemm_wide_bytes(const plumb_gemm_ops *g, const plumb_tensor *n) {
    return g->wide ? round64(plumb__wide_row_size(n->src[0]->type, n->src[0]->ne[0]) * (size_t)g->rows) : 0;
}
static size_t matmul_gemm_pack_bytes(const plumb_gemm_ops *g, const plumb_tensor *n) {
    return round64((size_t)(n->src[0]->ne[0] / g->block) * g->pack_bytes);
}
/* A thread packs up to this many bytes of groups at a time and runs them block of tokens by
 * block of tokens, each block's prepared activations about MATMUL_GEMM_ACT_TILE bytes (a
 * multiple of 30 tokens, which the GEMMs' tiles of 5 and 6 divide): both stay in the core's L2
 * while the block meets every packed group, where a group meeting all of a prompt's tokens at
 * once streams them from L3 (512 tokens of a K = 2048 Q4_K matmul: 2.4 MB). On an AVX-512 EPYC
 * (1 MB of L2 a core), pp512 of Qwen2.5-Coder 0.5B: 256 KB / 96 KB 413-418 t/s, 512 KB / 192 KB
 * 439-445, 1 MB / 384 KB 425-443; Gemma 3 270M alike within its noise. */
#define MATMUL_GEMM_CHUNK_PACKED (512 * 1024)
#define MATMUL_GEMM_ACT_TILE (192 * 1024)
#define MATMUL_GEMM_TOKEN_STEP 30
static int64_t matmul_gemm_chunk_groups(const plumb_gemm_ops *g, const plumb_tensor *n) {
    const int64_t k = (int64_t)(MATMUL_GEMM_CHUNK_PACKED / matmul_gemm_pack_bytes(g, n));
    return k > 1 ? k : 1;
}
static size_t matmul_gemm_thread_bytes(const plumb_gemm_ops *g, const plumb_tensor *n) {
    return matmul_gemm_wide_bytes(g, n) + matmul_gemm_pack_bytes(g, n) * (size_t)matmul_gemm_chunk_groups(g, n) +
           round64((size_t)(n->src[0]->ne[0] / g->block) * g->run_bytes);
}

/* Per-thread buffer for one block of widened weight rows. */
static size_t matmul_widen_bytes(const plumb_cpu_ctx *c, const plumb_tensor *n) {
    const size_t row = plumb__wide_row_size(n->src[0]->type, n->src[0]->ne[0]);
    return matmul_widens(c, n) ? round64(row > MATMUL_ROW_BLOCK ? row : MATMUL_ROW_BLOCK) : 0;
}

plumb_status plumb__cpu_reserve_work(plumb_cpu_ctx *c, const plumb_graph *g) {
    size_t need = 0;
    for (int32_t i = 0; i < g->n_nodes; i++) {
        const plumb_tensor *n = g->nodes[i];
        size_t s = 0;
        const plumb_gemm_ops *gm = n->op == PLUMB_OP_MUL_MAT ? matmul_gemm(c, n) : NULL;
        if (gm) {
            s = matmul_act_bytes(n, c->n_threads) + matmul_gemm_act_bytes(gm, n) + matmul_gemm_thread_bytes(gm, n) * (size_t)c->n_threads;
        } else if (n->op == PLUMB_OP_MUL_MAT) {
            s = matmul_act_bytes(n, c->n_threads) + matmul_scales_bytes(c, n, c->n_threads) +
                matmul_widen_bytes(c, n) * (size_t)c->n_threads;
        } else if (n->op == PLUMB_OP_ATTN) {
            s = plumb__cpu_attn_scratch(n, c->n_threads);
        } else if (n->op == PLUMB_OP_MUL_MAT_ID) {
            s = plumb__cpu_mul_mat_id_scratch(c, n, c->n_threads);
        }
        if (s > need) need = s;
    }
    plumb_status st = plumb__cpu_rope_reserve(c, g);
    if (st) return st;
    if ((size_t)g->n_nodes > c->act_ready_cap) {
        bool *a = realloc(c->act_ready, (size_t)g->n_nodes * sizeof *a);
        if (!a) return plumb__fail(PLUMB_E_NOMEM, "out of memory for %d nodes' plans", (int)g->n_nodes);
        c->act_ready = a, c->act_ready_cap = (size_t)g->n_nodes;
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
    plumb__cpu_split(ids->ne[0], ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)id[i] * w->nb[1];
        tr->dequantize(row, (float *)n->data + i * n->ne[0], w->ne[0]);
    }
}

/* op_mul_mat through the kernel set's GEMM (matmul_gemm): each thread quantizes and prepares its
 * share of the activation rows; then groups of the GEMM's rows go out in chunks to
 * whichever thread is free, which runs each against every activation row: straight from the
 * kept layout for batches of fewer than MATMUL_GEMM_ROWS, else after expanding the kept group or
 * packing (and widening) the file's rows. */
/* How a GEMM node prepares its activations: the function, and its bytes per activation row
 * (the kept layouts' own form for batches run from them). */
static plumb_gemm_prep_fn matmul_gemm_prep(const plumb_cpu_ctx *c, const plumb_gemm_ops *g, const plumb_tensor *n,
                                           size_t *prow) {
    const bool direct = n_rows(n->src[1]) < MATMUL_GEMM_ROWS && plumb__cpu_packed_rows(c, n->src[0]);
    *prow = (size_t)(n->src[0]->ne[0] / g->block) * (direct && g->prep_kept ? g->act_kept_bytes : g->act_bytes);
    return direct && g->prep_kept ? g->prep_kept : g->prep;
}

void plumb__cpu_plan_activations(plumb_cpu_ctx *c, const plumb_graph *g, int32_t first, int32_t end) {
    const plumb_tensor *prev = NULL;
    for (int32_t i = first; i < end; i++) {
        const plumb_tensor *n = g->nodes[i];
        c->act_ready[i] = false;
        if (n->op == PLUMB_OP_VIEW || n->op == PLUMB_OP_NONE || n->op == PLUMB_OP_COPY) continue; /* no work */
        const plumb_gemm_ops *gm = n->op == PLUMB_OP_MUL_MAT ? matmul_gemm(c, n) : NULL;
        const plumb_gemm_ops *gp = prev ? matmul_gemm(c, prev) : NULL;
        if (gm && gp && prev->src[1] == n->src[1] && prev->src[0]->ne[0] == n->src[0]->ne[0] &&
            plumb__act_type(prev->src[0]->type) == plumb__act_type(n->src[0]->type)) {
            size_t a, b;
            c->act_ready[i] = matmul_gemm_prep(c, gm, n, &a) == matmul_gemm_prep(c, gp, prev, &b) && a == b;
        }
        prev = n->op == PLUMB_OP_MUL_MAT ? n : NULL;
    }
}

static void op_mul_mat_gemm(plumb_cpu_ctx *c, const plumb_gemm_ops *g, plumb_tensor *n, int ith, int nth, bool act_ready) {
    const plumb_tensor *w = n->src[0], *x = n->src[1];
    const plumb_kernel_set *ks = c->kernels;
    const int64_t K = w->ne[0], N = w->ne[1], T = n_rows(x);
    const int act = plumb__act_type(w->type);
    const uint8_t *kept = plumb__cpu_packed_rows(c, w); /* the kept groups, one after the other */
    const bool direct = kept && T < MATMUL_GEMM_ROWS;
    size_t prow;
    const plumb_gemm_prep_fn prep = matmul_gemm_prep(c, g, n, &prow);
    const size_t arow = plumb__act_row_size(act, K);
    uint8_t *xq = c->work, *xp = c->work + matmul_act_bytes(n, nth);
    int64_t lo, hi;
    if (!act_ready) { /* else the previous node, a matmul of the same activations, left them in xp */
        plumb__cpu_split(T, ith, nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++) {
            ks->act_quantize[act]((const float *)x->data + t * K, xq + (size_t)t * arow, K);
            prep(xq + (size_t)t * arow, xp + (size_t)t * prow, K);
        }
        plumb__cpu_barrier(c);
    }
    uint8_t *wide = xp + matmul_gemm_act_bytes(g, n) + matmul_gemm_thread_bytes(g, n) * (size_t)ith;
    uint8_t *packed = wide + matmul_gemm_wide_bytes(g, n);
    uint8_t *run_scratch = packed + matmul_gemm_pack_bytes(g, n) * (size_t)matmul_gemm_chunk_groups(g, n);
    const size_t wrow = g->wide ? plumb__wide_row_size(w->type, K) : 0;
    const int64_t groups = (N + g->rows - 1) / g->rows;
    int64_t per = (groups + 8 * nth - 1) / (8 * nth);
    if (direct) per = matmul_stream_chunk(per, (groups + nth - 1) / nth, (size_t)(K / g->block) * g->keep_bytes);
    if (!direct && per > matmul_gemm_chunk_groups(g, n)) per = matmul_gemm_chunk_groups(g, n);
    if (!direct && g->run2 && per > 1) per &= ~(int64_t)1; /* whole pairs of groups for run2 */
    int64_t n_chunks = (groups + per - 1) / per;
    /* prompts: a count of chunks every thread can take as many of (19 chunks of 16 groups, as
     * Qwen2.5-Coder 0.5B's FFN had, left one of two threads idle for the last one: 20 of 15.2
     * groups, pp512 +1.6%), in whole units (run2's pairs) */
    const int64_t unit = !direct && g->run2 && per > 1 ? 2 : 1, units = (groups + unit - 1) / unit;
    if (!direct) {
        n_chunks = (n_chunks + nth - 1) / nth * nth;
        if (n_chunks > units) n_chunks = units;
    }
    const size_t pack_bytes = matmul_gemm_pack_bytes(g, n);
    int64_t tb = (int64_t)(MATMUL_GEMM_ACT_TILE / prow) / MATMUL_GEMM_TOKEN_STEP * MATMUL_GEMM_TOKEN_STEP;
    if (tb < MATMUL_GEMM_TOKEN_STEP) tb = MATMUL_GEMM_TOKEN_STEP;
    for (int64_t ch; (ch = plumb__cpu_next_chunk(c, ith, n_chunks)) >= 0;) {
        int64_t g0 = ch * per, g1 = (ch + 1) * per < groups ? (ch + 1) * per : groups;
        if (!direct) {
            g0 = units * ch / n_chunks * unit;
            g1 = units * (ch + 1) / n_chunks * unit < groups ? units * (ch + 1) / n_chunks * unit : groups;
        }
        if (direct) {
            for (int64_t gi = g0; gi < g1; gi++) {
                const int64_t r0 = gi * g->rows;
                g->run_kept(K, kept + (size_t)(K / g->block) * g->keep_bytes * (size_t)gi, xp, prow, T, (float *)n->data + r0,
                            (size_t)N, (int)(N - r0 < g->rows ? N - r0 : g->rows), run_scratch);
            }
            continue;
        }
        for (int64_t gi = g0; gi < g1; gi++) {
            const int64_t r0 = gi * g->rows;
            const int rows = (int)(N - r0 < g->rows ? N - r0 : g->rows);
            const uint8_t *wr = (const uint8_t *)w->data + (size_t)r0 * w->nb[1];
            uint8_t *pk = packed + pack_bytes * (size_t)(gi - g0);
            if (kept && g->unkeep) {
                g->unkeep(kept + (size_t)(K / g->block) * g->keep_bytes * (size_t)gi, pk, K);
            } else if (g->wide) {
                for (int r = 0; r < rows; r++) ks->widen(w->type, wr + (size_t)r * w->nb[1], wide + (size_t)r * wrow, K);
                g->pack(wide, wrow, rows, pk, K);
            } else {
                g->pack(wr, w->nb[1], rows, pk, K);
            }
        }
        for (int64_t t0 = 0; t0 < T; t0 += tb)
            for (int64_t gi = g0; gi < g1;) {
                const bool two = g->run2 && gi + 1 < g1; /* the next group too */
                const int64_t r0 = gi * g->rows, rl = (gi + two) * g->rows; /* the last group's first row */
                const uint8_t *pk = packed + pack_bytes * (size_t)(gi - g0);
                float *out = (float *)n->data + (size_t)t0 * (size_t)N + r0;
                const int64_t tn = T - t0 < tb ? T - t0 : tb;
                const int rows = (int)(N - rl < g->rows ? N - rl : g->rows);
                if (two) g->run2(K, pk, pack_bytes, xp + (size_t)t0 * prow, prow, tn, out, (size_t)N, rows, run_scratch);
                else g->run(K, pk, xp + (size_t)t0 * prow, prow, tn, out, (size_t)N, rows, run_scratch);
                gi += two ? 2 : 1;
            }
    }
}

static void op_mul_mat(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth, bool act_ready) {
    const plumb_gemm_ops *gm = matmul_gemm(c, n);
    if (gm) {
        op_mul_mat_gemm(c, gm, n, ith, nth, act_ready);
        return;
    }
    const plumb_tensor *w = n->src[0], *x = n->src[1];
    const int64_t K = w->ne[0], N = w->ne[1], T = n_rows(x);
    const int act = plumb__act_type(w->type);
    const size_t arow = plumb__act_row_size(act, K);
    plumb_vec_dot_fn dot = c->kernels->vec_dot[w->type];
    int64_t lo, hi;
    plumb_vec_dot4_fn dot4 = c->kernels->vec_dot4[w->type];
    plumb_vec_dot2_fn dot2 = c->kernels->vec_dot2[w->type];
    const bool widen = matmul_widens(c, n); /* then the weights are dotted in the wide layout */
    /* four columns' lanes, summed for many rows at once */
    plumb_vec_dot4_fn lanes4 = c->kernels->vec_dot4_lanes[w->type];
    plumb_vec_dot4x2_fn lanes4x2 = NULL; /* two weight rows at a time, where the set has it */
    if (widen) {
        dot = c->kernels->wide_dot[w->type];
        dot4 = c->kernels->wide_dot4[w->type];
        lanes4 = c->kernels->wide_dot4_lanes[w->type];
        lanes4x2 = c->kernels->wide_dot4x2_lanes[w->type];
        dot2 = NULL;
    }
    const int64_t T4 = dot4 ? T / 4 * 4 : 0;
    const size_t sv_tile = (size_t)(K / 32) * (c->kernels->act4_block_bytes / 4); /* floats prepared per 4 rows */
    const bool scales = T4 > 0 && act == PLUMB_ACT_Q8_0;
    uint8_t *xq = c->work;
    float *xsv = (float *)(c->work + matmul_act_bytes(n, nth));
    if (T <= MATMUL_PRIVATE_ROWS) {
        xq = c->work + round64(arow * (size_t)T) * (size_t)ith;
        xsv = (float *)((uint8_t *)xsv + matmul_scales_bytes(c, n, 1) * (size_t)ith);
        for (int64_t t = 0; t < T; t++) c->kernels->act_quantize[act]((const float *)x->data + t * K, xq + (size_t)t * arow, K);
        if (scales) c->kernels->act_prep4(xq, arow, K, xsv);
    } else {
        plumb__cpu_split(T, ith, nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++) c->kernels->act_quantize[act]((const float *)x->data + t * K, xq + (size_t)t * arow, K);
        plumb__cpu_barrier(c);
        if (scales) {
            plumb__cpu_split(T4 / 4, ith, nth, &lo, &hi);
            for (int64_t g = lo; g < hi; g++) c->kernels->act_prep4(xq + (size_t)(4 * g) * arow, arow, K, xsv + (size_t)g * sv_tile);
            plumb__cpu_barrier(c);
        }
    }
    /* the weight rows go out in chunks of whole row blocks, about 8 per thread, to whichever
     * thread is free: every weight byte is read once */
    float *out = n->data;
    const uint8_t *wd = w->data;
    size_t wrow = w->nb[1];
    uint8_t *wide = NULL;
    if (widen) {
        wide = c->work + matmul_act_bytes(n, nth) + matmul_scales_bytes(c, n, nth) + matmul_widen_bytes(c, n) * (size_t)ith;
        wrow = plumb__wide_row_size(w->type, K);
    }
    /* blocks of weight rows that stay in L1 while every group of 4 activation rows passes */
    int64_t rb = (int64_t)(MATMUL_ROW_BLOCK / wrow);
    if (rb < 1) rb = 1;
    int64_t per = (N + 8 * nth - 1) / (8 * nth);
    if (T <= MATMUL_PRIVATE_ROWS) per = matmul_stream_chunk(per, (N + nth - 1) / nth, w->nb[1]);
    per = (per + rb - 1) / rb * rb;
    const int64_t n_chunks = (N + per - 1) / per;
    for (int64_t ch; (ch = plumb__cpu_next_chunk(c, ith, n_chunks)) >= 0;) {
        lo = ch * per;
        hi = lo + per < N ? lo + per : N;
        for (int64_t r0 = lo; r0 < hi; r0 += rb) {
            const int64_t r1 = r0 + rb < hi ? r0 + rb : hi;
            const uint8_t *blk = wd + (size_t)r0 * wrow; /* row r is at blk + (r - r0) * wrow */
            if (wide) {
                for (int64_t r = r0; r < r1; r++)
                    c->kernels->widen(w->type, wd + (size_t)r * w->nb[1], wide + (size_t)(r - r0) * wrow, K);
                blk = wide;
            }
            for (int64_t t = 0; t < T4; t += 4) {
                if (lanes4) {
                    for (int64_t s0 = r0; s0 < r1; s0 += 16) {
                        const int64_t s1 = s0 + 16 < r1 ? s0 + 16 : r1;
                        float lanes[16 * 32], sums[16 * 4];
                        int64_t q = s0;
                        if (lanes4x2)
                            for (; q + 1 < s1; q += 2)
                                lanes4x2(K, blk + (size_t)(q - r0) * wrow, wrow, xq + (size_t)t * arow, arow,
                                         xsv + (size_t)(t / 4) * sv_tile, lanes + (q - s0) * 32);
                        for (; q < s1; q++)
                            lanes4(K, blk + (size_t)(q - r0) * wrow, xq + (size_t)t * arow, arow,
                                   xsv + (size_t)(t / 4) * sv_tile, lanes + (q - s0) * 32);
                        c->kernels->hsum8(lanes, (s1 - s0) * 4, sums);
                        for (q = s0; q < s1; q++)
                            for (int j = 0; j < 4; j++) out[(t + j) * N + q] = sums[(q - s0) * 4 + j];
                    }
                    continue;
                }
                for (int64_t r = r0; r < r1; r++) {
                    float o4[4];
                    dot4(K, blk + (size_t)(r - r0) * wrow, xq + (size_t)t * arow, arow, xsv + (size_t)(t / 4) * sv_tile, o4);
                    for (int j = 0; j < 4; j++) out[(t + j) * N + r] = o4[j];
                }
            }
            int64_t r = r0;
            if (dot2 && T4 < T) /* the rows left over from the groups of 4, two weight rows at a time */
                for (; r + 1 < r1; r += 2)
                    for (int64_t t = T4; t < T; t++) {
                        float o2[2];
                        dot2(K, blk + (size_t)(r - r0) * wrow, blk + (size_t)(r + 1 - r0) * wrow, xq + (size_t)t * arow, o2);
                        out[t * N + r] = o2[0], out[t * N + r + 1] = o2[1];
                    }
            for (; r < r1; r++)
                for (int64_t t = T4; t < T; t++) out[t * N + r] = dot(K, blk + (size_t)(r - r0) * wrow, xq + (size_t)t * arow);
        }
    }
}

static void op_binary(plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *a = n->src[0], *b = n->src[1];
    const int64_t ne0 = a->ne[0], rows = n_rows(a), brows = n_rows(b);
    int64_t lo, hi;
    plumb__cpu_split(rows, ith, nth, &lo, &hi);
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

/* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated as sqrt(2/pi) x (1 + 0.044715 x^2)
 * with the inner sum fused: the reference engine's order, whose F16 GELU table this matches
 * entry for entry */
static inline float gelu_tanh(float x) {
    const float k = 0.79788456080286535587989211986876f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * x * fmaf(0.044715f * x, x, 1.0f)));
}

/* GELU through F16, as the reference engine computes it: the input rounded to F16, the
 * result rounded to F16, looked up in a table of all 65536 inputs made once (outside
 * [-10, 10] GELU is 0 or x) */
static float gelu_f16_table[65536];
static pthread_once_t gelu_f16_once = PTHREAD_ONCE_INIT;

static void gelu_f16_init(void) {
    for (uint32_t i = 0; i < 65536; i++)
        gelu_f16_table[i] = plumb__f16_table[plumb__fp32_to_fp16(gelu_tanh(plumb__f16_table[i]))];
}

/* SiLU as the reference engine computes it: x / (1 + e^-x) with its vectorized e^x
 * (plumb__exp_poly, the kernel set's silu) over each row in groups of 16 lanes, and libm's
 * expf for the row's last n % 16 elements, its scalar tail. Which one an element gets depends
 * on its column. */
static inline float silu_tail(float x) { return x / (1.0f + expf(-x)); }

static void op_unary(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    const float *x = n->src[0]->data;
    const float *y = n->src[1] ? n->src[1]->data : NULL;
    float *o = n->data;
    const int64_t ne0 = n->ne[0], lanes = ne0 - ne0 % 16; /* a row's columns in whole groups of 16 */
    int64_t lo, hi;
    plumb__cpu_split(plumb_tensor_nelements(n), ith, nth, &lo, &hi);
    switch (n->op) {
    case PLUMB_OP_SCALE: {
        const float f = n->params.scale.s;
        for (int64_t i = lo; i < hi; i++) o[i] = x[i] * f;
        break;
    }
    case PLUMB_OP_SILU:
    case PLUMB_OP_SILU_MUL: /* each row: its groups of 16 by the kernel set, its tail by expf */
        for (int64_t i = lo; i < hi;) {
            const int64_t col = i % ne0, run = (col < lanes ? lanes : ne0) - col;
            const int64_t m = hi - i < run ? hi - i : run;
            if (col < lanes) c->kernels->silu(x + i, y ? y + i : NULL, o + i, m);
            else
                for (int64_t k = i; k < i + m; k++) o[k] = y ? silu_tail(x[k]) * y[k] : silu_tail(x[k]);
            i += m;
        }
        break;
    case PLUMB_OP_GELU_TANH:
        for (int64_t i = lo; i < hi; i++) o[i] = gelu_tanh(x[i]);
        break;

    case PLUMB_OP_GELU_MUL:
        pthread_once(&gelu_f16_once, gelu_f16_init);
        c->kernels->gelu_f16(gelu_f16_table, x + lo, y + lo, o + lo, hi - lo);
        break;
    case PLUMB_OP_SOFTCAP: { /* the reference's three ops: scale by 1/f, tanh, scale by f */
        const float f = n->params.softcap.cap, inv = 1.0f / f;
        for (int64_t i = lo; i < hi; i++) o[i] = tanhf(x[i] * inv) * f;
        break;
    }
    default: break;
    }
}

/* The scaling pass of a normalized row, o = x * scale (* w), also compiled for AVX2 and AVX-512
 * CPUs (the same products, so the same bits): the portable build's loop is 4 lanes wide. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NORM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NORM_CLONES
#endif
NORM_CLONES static void rms_scale_row(const float *x, const float *w, float scale, float *o, int64_t n) {
    if (w)
        for (int64_t i = 0; i < n; i++) o[i] = x[i] * scale * w[i];
    else
        for (int64_t i = 0; i < n; i++) o[i] = x[i] * scale;
}

static void op_rms_norm(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    const plumb_tensor *a = n->src[0];
    const float *w = n->src[1] ? n->src[1]->data : NULL;
    const int64_t ne0 = a->ne[0];
    const float eps = n->params.rms_norm.eps;
    int64_t lo, hi;
    plumb__cpu_split(n_rows(a), ith, nth, &lo, &hi);
    /* each row's sum of squares is one chain of double additions in element order (the
     * reference's), rows side by side (the kernel set's sum_squares); 16 rows at a time, which
     * are still in L1 when they are scaled (64 rows of Gemma 3 270M's 640 went to L2 and back;
     * with the 16-row sums and the vector scaling, the norms of its pp512 on an Ice Lake Xeon
     * took 3.5-3.7% of the time before, 3.0% after) */
    for (int64_t r0 = lo; r0 < hi; r0 += 16) {
        const int64_t nr = hi - r0 < 16 ? hi - r0 : 16;
        double sum[16];
        c->kernels->sum_squares((const float *)a->data + r0 * ne0, ne0, nr, sum);
        for (int64_t k = 0; k < nr; k++) {
            const float scale = 1.0f / sqrtf((float)(sum[k] / (double)ne0) + eps);
            rms_scale_row((const float *)a->data + (r0 + k) * ne0, w, scale, (float *)n->data + (r0 + k) * ne0, ne0);
        }
    }
}

static void op_soft_max(plumb_tensor *n, int ith, int nth) {
    const int64_t ne0 = n->ne[0];
    const float scale = n->params.soft_max.scale;
    int64_t lo, hi;
    plumb__cpu_split(n_rows(n), ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = (const float *)n->src[0]->data + r * ne0;
        float *o = (float *)n->data + r * ne0;
        float mx = -INFINITY;
        for (int64_t i = 0; i < ne0; i++) {
            const float v = x[i] * scale;
            mx = v > mx ? v : mx;
        }
        /* the reference's exponentials: its vectorized e^x (plumb__exp_poly) over whole groups
         * of 16, each group summed by plumb__sum16, then libm's expf for the last n % 16; the
         * sums added in double in order */
        double sum = 0.0;
        int64_t j = 0;
        for (; j + 16 <= ne0; j += 16) {
            for (int l = 0; l < 16; l++) o[j + l] = plumb__exp_poly(x[j + l] * scale - mx);
            sum += (double)plumb__sum16(o + j);
        }
        for (; j < ne0; j++) {
            o[j] = expf(x[j] * scale - mx);
            sum += o[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < ne0; i++) o[i] *= inv;
    }
}


void plumb__cpu_compute_node(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth, bool act_ready) {
    switch (n->op) {
    case PLUMB_OP_GET_ROWS: op_get_rows(n, ith, nth); break;
    case PLUMB_OP_MUL_MAT: op_mul_mat(c, n, ith, nth, act_ready); break;
    case PLUMB_OP_ADD:
    case PLUMB_OP_MUL: op_binary(n, ith, nth); break;
    case PLUMB_OP_SCALE:
    case PLUMB_OP_SILU:
    case PLUMB_OP_GELU_TANH:
    case PLUMB_OP_SILU_MUL:
    case PLUMB_OP_GELU_MUL:
    case PLUMB_OP_SOFTCAP: op_unary(c, n, ith, nth); break;
    case PLUMB_OP_RMS_NORM: op_rms_norm(c, n, ith, nth); break;
    case PLUMB_OP_ROPE: plumb__cpu_rope(c, n, ith, nth); break;
    case PLUMB_OP_SOFT_MAX: op_soft_max(n, ith, nth); break;
    case PLUMB_OP_ATTN: plumb__cpu_attn(c, n, ith, nth); break;
    case PLUMB_OP_MUL_MAT_ID: plumb__cpu_mul_mat_id(c, n, ith, nth); break;
    case PLUMB_OP_TOP_K: plumb__cpu_top_k(n, ith, nth); break;
    case PLUMB_OP_MOE_WEIGHTS: plumb__cpu_moe_weights(n, ith, nth); break;
    case PLUMB_OP_MOE_SUM: plumb__cpu_moe_sum(n, ith, nth); break;
    case PLUMB_OP_NONE:
    case PLUMB_OP_VIEW:
    case PLUMB_OP_COPY: /* the scheduler's */
    case PLUMB_OP_COUNT: break;
    }
}
