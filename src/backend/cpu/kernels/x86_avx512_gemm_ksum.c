/* x86_avx512_gemm_ksum.c — the block-sum GEMM (plumb_context_params.fast_gemm) of the AVX-512
 * VNNI set for Q4_K and Q6_K weights with Q8_K activations, in the portable kernels' order:
 * per super-block one exact int32 sum of the scaled products (and for Q4_K one of the min
 * products), then generic.c's float steps, so that results are the generic set's vec_dot bit for
 * bit.
 *
 * 16 weight rows are interleaved as unsigned codes (Q4_K 0..15, Q6_K 0..63), four consecutive
 * values of every row per 512-bit register; vpdpbusd with the token's four activation bytes
 * (broadcast) adds a scale group's products of 16 rows, one multiply by the rows' scales
 * (vpmulld) folds the group into the super-block's sum. Q6_K's -32 offset and Q4_K's mins go
 * through the activation's 16-value sums with vpdpwssd, as in x86_avx512_gemm_k.c. */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>

#define ROWS PLUMB_GEMM_ROWS
/* A packed super-block: d (F32 x 16), dmin (Q4_K), 8 registers of int16 pairs per row (Q4_K:
 * the mins of sub-blocks 2k, 2k + 1, k < 4; Q6_K: -32 times the scales of groups 2l, 2l + 1),
 * the scale of each group per row as int32 (Q4_K 8 groups of 32 values, Q6_K 16 of 16), then the
 * codes: register e / 4 holds values e .. e + 3 of every row. */
#define OFF_EXTRA 128
#define OFF_SC 640
#define OFF_Q (640 + 16 * 64)
/* A prepared activation super-block: its 256 int8 values, the 16 sums of 16 (int16), the 8 sums
 * of 32 (int16), d. */
#define ACT_BSUMS PLUMB_KSUM_ACT_BSUMS
#define ACT_S32 PLUMB_KSUM_ACT_S32
#define ACT_D PLUMB_KSUM_ACT_D

static void pack_sums(bool q4k, const void *w, size_t ws, int nrows, void *out, int64_t n) {
    const size_t wbytes = q4k ? 144 : 210;
    for (int64_t s = 0; s < n / 256; s++) {
        uint8_t *o = (uint8_t *)out + (size_t)s * PLUMB_GEMM_KSUM_BLOCK;
        memset(o, 0, PLUMB_GEMM_KSUM_BLOCK);
        float *d = (float *)(void *)o, *dmin = d + ROWS;
        int16_t *extra = (int16_t *)(void *)(o + OFF_EXTRA); /* register k: row r's pair at 2 r */
        int32_t *sc = (int32_t *)(void *)(o + OFF_SC);       /* group g: row r at 16 g + r */
        for (int r = 0; r < nrows && r < ROWS; r++) {
            const uint8_t *a = (const uint8_t *)w + (size_t)r * ws + (size_t)s * wbytes;
            _Alignas(32) uint8_t codes[256];
            int16_t s16[16], ex[16];
            plumb__k_codes(q4k, a, codes, &d[r], &dmin[r], s16, ex);
            for (int g = 0; g < (q4k ? 8 : 16); g++) sc[16 * g + r] = s16[g];
            for (int k = 0; k < (q4k ? 4 : 8); k++) extra[32 * k + 2 * r] = ex[2 * k], extra[32 * k + 2 * r + 1] = ex[2 * k + 1];
            for (int e = 0; e < 256; e += 4) memcpy(o + OFF_Q + 16 * e + 4 * r, codes + e, 4);
        }
    }
}

void plumb__gemm16_pack_sums_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n) {
    pack_sums(true, w, ws, nrows, out, n);
}
void plumb__gemm16_pack_sums_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n) {
    pack_sums(false, w, ws, nrows, out, n);
}

#define TT_MAX 8

/* 16 rows x TT tokens, super-block by super-block. */
static inline __attribute__((always_inline)) void tile(int64_t nsb, const uint8_t *wp, const uint8_t *xp, size_t xps,
                                                       const int TT, const bool q4k, float *out, size_t os, __mmask16 msk) {
    const int G = q4k ? 8 : 16, C = q4k ? 8 : 4; /* scale groups, and registers of codes per group */
    __m512 acc[TT_MAX];
#pragma GCC unroll 8
    for (int t = 0; t < TT; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < nsb; s++, wp += PLUMB_GEMM_KSUM_BLOCK, xp += PLUMB_GEMM_KSUM_ACT_BLOCK) {
        __m512i tot[TT_MAX];
#pragma GCC unroll 8
        for (int t = 0; t < TT; t++) {
            tot[t] = _mm512_setzero_si512();
            if (!q4k) /* -32 times the scales times the 16-value sums */
                for (int l = 0; l < 8; l++)
                    tot[t] = _mm512_dpwssd_epi32(tot[t], _mm512_loadu_si512(wp + OFF_EXTRA + 64 * l),
                                                 plumb__bcast32(xp + (size_t)t * xps + ACT_BSUMS + 4 * l));
        }
        for (int g = 0; g < G; g++) {
            __m512i sg[TT_MAX];
#pragma GCC unroll 8
            for (int t = 0; t < TT; t++) sg[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int c = 0; c < C; c++) {
                const int e = g * 4 * C + 4 * c; /* the register's first value */
                const __m512i w = _mm512_loadu_si512(wp + OFF_Q + 16 * e);
#pragma GCC unroll 8
                for (int t = 0; t < TT; t++) sg[t] = _mm512_dpbusd_epi32(sg[t], w, plumb__bcast32(xp + (size_t)t * xps + e));
            }
            const __m512i sc = _mm512_loadu_si512(wp + OFF_SC + 64 * g);
#pragma GCC unroll 8
            for (int t = 0; t < TT; t++) tot[t] = _mm512_add_epi32(tot[t], _mm512_mullo_epi32(sg[t], sc));
        }
        const __m512 d = _mm512_loadu_ps(wp), dmin = _mm512_loadu_ps(wp + 64);
#pragma GCC unroll 8
        for (int t = 0; t < TT; t++) {
            float dy;
            memcpy(&dy, xp + (size_t)t * xps + ACT_D, 4);
            const __m512 vy = _mm512_set1_ps(dy);
            /* generic.c: dy * d * (float)sum, less dy * dmin * (float)mins for Q4_K */
            __m512 r = _mm512_mul_ps(_mm512_mul_ps(vy, d), _mm512_cvtepi32_ps(tot[t]));
            if (q4k) {
                __m512i mins = _mm512_setzero_si512();
                for (int k = 0; k < 4; k++)
                    mins = _mm512_dpwssd_epi32(mins, _mm512_loadu_si512(wp + OFF_EXTRA + 64 * k),
                                               plumb__bcast32(xp + (size_t)t * xps + ACT_S32 + 4 * k));
                r = _mm512_sub_ps(r, _mm512_mul_ps(_mm512_mul_ps(vy, dmin), _mm512_cvtepi32_ps(mins)));
            }
            acc[t] = _mm512_add_ps(acc[t], r);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < TT; t++) _mm512_mask_storeu_ps(out + (size_t)t * os, msk, acc[t]);
}

static inline __attribute__((always_inline)) void gemm_sums(bool q4k, int64_t n, const void *wp, const void *xp, size_t xps,
                                                            int64_t T, float *out, size_t os, int nrows) {
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + TT_MAX <= T; t += TT_MAX) tile(n / 256, wp, x + (size_t)t * xps, xps, TT_MAX, q4k, out + (size_t)t * os, os, m);
    for (; t + 4 <= T; t += 4) tile(n / 256, wp, x + (size_t)t * xps, xps, 4, q4k, out + (size_t)t * os, os, m);
    for (; t < T; t++) tile(n / 256, wp, x + (size_t)t * xps, xps, 1, q4k, out + (size_t)t * os, os, m);
}

void plumb__gemm16_sums_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch) {
    (void)scratch;
    gemm_sums(true, n, wp, xp, xps, T, out, os, nrows);
}
void plumb__gemm16_sums_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch) {
    (void)scratch;
    gemm_sums(false, n, wp, xp, xps, T, out, os, nrows);
}

#endif
