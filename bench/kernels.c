/* kernels.c — plumb_kernel_bench: G MAC/s of the prompt (4-column) matmul kernels of every
 * kernel set this CPU runs, for the weight types of Gemma 3 270M Q4_K_M, in two settings:
 *   l1      16 widened weight rows and one group of 4 activation rows, all in L1: the kernel;
 *   matmul  the matmul's own loop (cpu_ops.c): a block of weight rows kept in L1 while 128
 *           groups of 4 activation rows (a pp512 batch) stream past, sums batched by hsum8.
 * A gap between the two says the time goes to memory or to the loop, not to the arithmetic.
 *   gemm    the register-tiled GEMM where the set has one for the type: 16 (AVX2: 8) packed rows, 512
 *           prepared activation rows; and the packing's share of that group's time; then the
 *           block-sum GEMM (--fast-gemm) where there is one.
 * Then the machine's int8 peak (512-bit vpdpbusd) where the CPU has AVX-512 VNNI.
 * One thread; the best of 5 timed passes.
 *
 *   build/plumb_kernel_bench            (PLUMB_KERNELS=avx2 limits the sets as plumb does) */
#include "backend/cpu/kernels/kernels.h"
#include "quant/quant.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define GROUPS 128 /* groups of 4 activation rows in the matmul setting: 512 tokens */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint32_t rng = 12345;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((int32_t)(rng >> 8) - (1 << 23)) / (float)(1 << 23);
}

/* One pass over `rows` widened rows and `groups` activation groups, as op_mul_mat does. */
static float pass(const plumb_kernel_set *k, int type, int64_t n, const uint8_t *wide, size_t wr, int rows,
                  const uint8_t *x, size_t xs, const float *prep, size_t tile, int groups) {
    plumb_vec_dot4_fn l4 = k->wide_dot4_lanes[type], d4 = k->wide_dot4[type];
    plumb_vec_dot4x2_fn x2 = k->wide_dot4x2_lanes[type];
    float lanes[16 * 32], o[64], sink = 0.0f;
    for (int g = 0; g < groups; g++) {
        const uint8_t *xg = x + (size_t)(4 * g) * xs;
        const float *pg = (const float *)((const uint8_t *)prep + (size_t)g * tile);
        for (int s0 = 0; s0 < rows; s0 += 16) {
            const int s1 = s0 + 16 < rows ? s0 + 16 : rows;
            if (l4) {
                int r = s0;
                if (x2)
                    for (; r + 1 < s1; r += 2) x2(n, wide + (size_t)r * wr, wr, xg, xs, pg, lanes + (r - s0) * 32);
                for (; r < s1; r++) l4(n, wide + (size_t)r * wr, xg, xs, pg, lanes + (r - s0) * 32);
                k->hsum8(lanes, (s1 - s0) * 4, o);
            } else {
                for (int r = s0; r < s1; r++) d4(n, wide + (size_t)r * wr, xg, xs, pg, o + 4 * (r - s0));
            }
            sink += o[0];
        }
    }
    return sink;
}

static int run(const plumb_kernel_set *k, int type, int64_t n, bool matmul) {
    const int rows = matmul ? (int)(16384 / plumb__wide_row_size(type, n) > 0 ? 16384 / plumb__wide_row_size(type, n) : 1)
                            : 16;
    const int groups = matmul ? GROUPS : 1;
    uint64_t wb;
    if (plumb_type_row_bytes(type, n, &wb) || !k->wide_dot4[type]) return 0;
    const size_t wr = plumb__wide_row_size(type, n);
    const int act = plumb__act_type(type);
    const size_t xs = plumb__act_row_size(act, n), tile = (size_t)(n / 32) * k->act4_block_bytes;
    float *f = malloc((size_t)n * sizeof *f);
    uint8_t *w = malloc(wb), *wide = malloc(wr * (size_t)rows), *x = malloc(xs * 4 * (size_t)groups);
    float *prep = aligned_alloc(64, (tile * (size_t)groups + 63) / 64 * 64);
    if (!f || !w || !wide || !x || !prep) {
        fprintf(stderr, "plumb_kernel_bench: out of memory\n");
        return 1;
    }
    for (int r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++) f[i] = frand();
        plumb_quantize_row(type, f, w, n);
        k->widen(type, w, wide + (size_t)r * wr, n);
    }
    for (int c = 0; c < 4 * groups; c++) {
        for (int64_t i = 0; i < n; i++) f[i] = frand();
        k->act_quantize[act](f, x + (size_t)c * xs, n);
    }
    if (act == PLUMB_ACT_Q8_0)
        for (int g = 0; g < groups; g++)
            k->act_prep4(x + (size_t)(4 * g) * xs, xs, n, (float *)((uint8_t *)prep + (size_t)g * tile));
    const double macs = (double)rows * (double)n * 4.0 * groups;
    const int iters = (int)(1e9 / macs) + 1;
    double best = 0.0;
    float sink = 0.0f;
    for (int p = 0; p < 5; p++) {
        const double t0 = now();
        for (int i = 0; i < iters; i++) sink += pass(k, type, n, wide, wr, rows, x, xs, prep, tile, groups);
        const double g = macs * iters / (now() - t0) * 1e-9;
        if (g > best) best = g;
    }
    printf("| %s | %s | %lld | %s | %d x %d | %.1f |%s\n", k->name, plumb_type_name(type), (long long)n,
           matmul ? "matmul" : "l1", rows, 4 * groups, best, sink != sink ? " (NaN)" : "");
    free(f), free(w), free(wide), free(x), free(prep);
    return 0;
}

/* The register-tiled GEMM (kernels.h) of a type: 16 packed weight rows against 512 prepared
 * activation rows (a pp512 batch), the packing of the group timed apart. */
static int run_gemm(const plumb_kernel_set *k, int type, int64_t n, bool sums) {
    const plumb_gemm_ops *g = sums ? k->gemm_sums[type] : k->gemm[type];
    if (!g) return 0;
    enum { T = 512 };
    uint64_t wb;
    plumb_type_row_bytes(type, n, &wb);
    const int act = plumb__act_type(type);
    const size_t xs = plumb__act_row_size(act, n), prow = (size_t)(n / g->block) * g->act_bytes;
    const size_t wr = g->wide ? plumb__wide_row_size(type, n) : (size_t)wb;
    const int R = g->rows;
    float *f = malloc((size_t)n * sizeof *f), *out = malloc(sizeof(float) * T * (size_t)R);
    /* the matmul's scratch is 64-byte aligned: so are these */
    uint8_t *w = malloc(wb * (size_t)R), *src = malloc(wr * (size_t)R), *x = malloc(xs);
    uint8_t *xp = aligned_alloc(64, (prow * T + 63) / 64 * 64);
    uint8_t *packed = aligned_alloc(64, ((size_t)(n / g->block) * g->pack_bytes + 63) / 64 * 64);
    void *scratch = aligned_alloc(64, ((size_t)(n / g->block) * g->run_bytes + 64) / 64 * 64);
    if (!f || !out || !w || !src || !x || !xp || !packed || !scratch) {
        fprintf(stderr, "plumb_kernel_bench: out of memory\n");
        return 1;
    }
    for (int r = 0; r < R; r++) {
        for (int64_t i = 0; i < n; i++) f[i] = frand();
        plumb_quantize_row(type, f, w + (size_t)r * wb, n);
        if (g->wide) k->widen(type, w + (size_t)r * wb, src + (size_t)r * wr, n);
        else memcpy(src + (size_t)r * wr, w + (size_t)r * wb, wb);
    }
    for (int t = 0; t < T; t++) {
        for (int64_t i = 0; i < n; i++) f[i] = frand();
        k->act_quantize[act](f, x, n);
        g->prep(x, xp + (size_t)t * prow, n);
    }
    const double macs = (double)R * (double)n * T;
    const int iters = (int)(2e9 / macs) + 1;
    double best = 0.0, pack_best = 1e30;
    for (int p = 0; p < 5; p++) {
        double t0 = now();
        for (int i = 0; i < 64; i++) g->pack(src, wr, R, packed, n);
        const double tp = (now() - t0) / 64;
        if (tp < pack_best) pack_best = tp;
        t0 = now();
        for (int i = 0; i < iters; i++) g->run(n, packed, xp, prow, T, out, (size_t)R, R, scratch);
        const double gm = macs * iters / (now() - t0) * 1e-9;
        if (gm > best) best = gm;
    }
    printf("| %s | %s | %lld | gemm%s (packing: %.1f%% of the group's time) | %d x %d | %.1f |%s\n", k->name,
           plumb_type_name(type), (long long)n, sums ? ", block sums (--fast-gemm)" : "", 100.0 * pack_best / (macs / best * 1e-9), R,
           T, best, out[0] != out[0] ? " (NaN)" : "");
    if (!sums && g->run2) { /* two packed groups at a time, as prompts run them */
        const size_t pb = ((size_t)(n / g->block) * g->pack_bytes + 63) / 64 * 64;
        uint8_t *two = aligned_alloc(64, 2 * pb);
        float *out2 = malloc(sizeof(float) * T * 2 * (size_t)R);
        if (!two || !out2) {
            fprintf(stderr, "plumb_kernel_bench: out of memory\n");
            return 1;
        }
        memcpy(two, packed, pb), memcpy(two + pb, packed, pb);
        double best2 = 0.0;
        for (int p = 0; p < 5; p++) {
            const double t0 = now();
            for (int i = 0; i < iters; i++) g->run2(n, two, pb, xp, prow, T, out2, 2 * (size_t)R, R, scratch);
            const double gm = 2 * macs * iters / (now() - t0) * 1e-9;
            if (gm > best2) best2 = gm;
        }
        printf("| %s | %s | %lld | gemm, two groups at a time (prompts) | %d x %d | %.1f |%s\n", k->name, plumb_type_name(type),
               (long long)n, 2 * R, T, best2, out2[0] != out2[0] ? " (NaN)" : "");
        free(two), free(out2);
    }
    free(f), free(out), free(w), free(src), free(x), free(xp), free(packed), free(scratch);
    return 0;
}

/* The machine's int8 peak for the comparison: dependent-free 512-bit vpdpbusd (64 MACs each)
 * in 12 chains, one thread. */
__attribute__((target("avx512f,avx512vnni"))) static double int8_peak(void) {
    __m512i q[12];
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
    for (int i = 0; i < 12; i++) q[i] = _mm512_set1_epi32(i);
    const long N = 20000000;
    const double t0 = now();
    for (long i = 0; i < N; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) q[j] = _mm512_dpbusd_epi32(q[j], a, b);
        __asm__ volatile("" ::"v"(q[0]), "v"(q[1]), "v"(q[2]), "v"(q[3]), "v"(q[4]), "v"(q[5]), "v"(q[6]), "v"(q[7]), "v"(q[8]),
                         "v"(q[9]), "v"(q[10]), "v"(q[11]));
    }
    return (double)N * 12 * 64 / (now() - t0) * 1e-9;
}

int main(void) {
    const plumb_kernel_set *best = plumb__kernels_get();
    /* the SIMD sets this CPU runs, as far as PLUMB_KERNELS lets plumb use them (the generic
     * set has no 4-column kernels) */
    const plumb_kernel_set *sets[] = {best == plumb__kernels_generic() ? NULL : plumb__kernels_avx2(),
                                      best == plumb__kernels_avx512vnni() ? best : NULL};
    static const struct {
        int type;
        int64_t n;
    } shapes[] = {{PLUMB_TYPE_Q5_0, 640}, {PLUMB_TYPE_Q8_0, 640}, {PLUMB_TYPE_Q4_K, 1024}, {PLUMB_TYPE_Q4_K, 2048},
                  {PLUMB_TYPE_Q6_K, 2048}};
    if (!sets[0] && !sets[1]) {
        printf("plumb_kernel_bench: no SIMD kernel set in use (%s)\n", best->name);
        return 0;
    }
    printf("| set | type | k | setting | rows x columns | G MAC/s |\n| --- | --- | ---: | --- | --- | ---: |\n");
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++)
        for (size_t i = 0; sets[s] && i < sizeof shapes / sizeof shapes[0]; i++) {
            for (int m = 0; m < 2; m++)
                if (run(sets[s], shapes[i].type, shapes[i].n, m == 1)) return 1;
            if (run_gemm(sets[s], shapes[i].type, shapes[i].n, false) || run_gemm(sets[s], shapes[i].type, shapes[i].n, true))
                return 1;
        }
    if (sets[1])
        printf("\nint8 peak of this core (512-bit vpdpbusd, 12 independent chains): %.1f G MAC/s\n", int8_peak());
    else
        printf("\nint8 peak: not measured (the AVX-512 VNNI set is not in use)\n");
    return 0;
}
