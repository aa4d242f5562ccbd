/* x86_avx2_gemm.c — the register-tiled prompt GEMM of the AVX2 set for the legacy weight types
 * (Q4_0, Q5_0, Q8_0) with Q8_0 activations: x86_avx512_gemm.c's idea with 256-bit registers and
 * without VNNI.
 *
 * Eight weight rows are interleaved so that one register holds lane l (a block's values
 * 4l .. 4l + 3) of all eight rows. Per lane and token, the token's four activation bytes
 * (broadcast) take the sign of the weights, maddubs multiplies them by the weights' magnitudes
 * (each pair of products fits int16: |q| <= 128, |x| <= 127) and madd adds the pairs: the
 * reference's int32 lane sum of eight rows at once; then the convert and the FMA with the scale
 * products, in the reference's order. A lane's float chain over the blocks does not depend on
 * the other lanes, so each lane runs over all blocks with 8 tokens' accumulators, every weight
 * register serving 8 tokens; the lanes are added as hsum8 adds them at the end. */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#define ROWS PLUMB_GEMM8_ROWS
#define TT_MAX 8

/* Wide rows (F32 scale + 32 int8 per block) to PLUMB_GEMM8_BLOCK bytes per block: the 8 rows'
 * scales, then lane l's 8 x 4 bytes at 32 + 32 l; rows from nrows on are zero. */
void plumb__gemm8_pack(const void *wide, size_t ws, int nrows, void *out, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++) {
        uint8_t *o = (uint8_t *)out + (size_t)i * PLUMB_GEMM8_BLOCK;
        for (int r = 0; r < ROWS; r++) {
            const uint8_t *b = (const uint8_t *)wide + (size_t)r * ws + (size_t)i * PLUMB_WIDE_BLOCK;
            for (int l = 0; l < 8; l++) {
                if (r < nrows) memcpy(o + 32 + 32 * l + 4 * r, b + 4 + 4 * l, 4);
                else memset(o + 32 + 32 * l + 4 * r, 0, 4);
            }
            if (r < nrows) memcpy(o + 4 * r, b, 4);
            else memset(o + 4 * r, 0, 4);
        }
    }
}

/* One Q8_0 activation row to PLUMB_GEMM8_ACT_BLOCK bytes per block: its 32 values, its scale as
 * F32. */
void plumb__gemm8_prep(const void *xq, void *out, int64_t n) {
    const uint8_t *x = xq;
    uint8_t *o = out;
    for (int64_t i = 0; i < n / 32; i++, x += 34, o += PLUMB_GEMM8_ACT_BLOCK) {
        memcpy(o, x + 2, 32);
        uint16_t h;
        memcpy(&h, x, 2);
        const float d = _cvtsh_ss(h);
        memcpy(o + 32, &d, 4);
        memset(o + 36, 0, PLUMB_GEMM8_ACT_BLOCK - 36);
    }
}

static inline __m256i bcast(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* 8 rows x TT tokens; dp[b * TT_MAX + t] holds block b's scale products for token t. */
static inline __attribute__((always_inline)) void tile(int64_t nb, const uint8_t *wp, const uint8_t *xp, size_t xps,
                                                       const int TT, float *out, size_t os, int nrows, __m256 *dp) {
    for (int64_t b = 0; b < nb; b++)
#pragma GCC unroll 8
        for (int t = 0; t < TT; t++) {
            float dx;
            memcpy(&dx, xp + (size_t)t * xps + (size_t)b * PLUMB_GEMM8_ACT_BLOCK + 32, 4);
            dp[b * TT_MAX + t] = _mm256_mul_ps(_mm256_loadu_ps((const float *)(const void *)(wp + (size_t)b * PLUMB_GEMM8_BLOCK)),
                                               _mm256_set1_ps(dx));
        }
    __m256 lanes[8][TT_MAX];
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 1
    for (int l = 0; l < 8; l++) {
        __m256 acc[TT_MAX];
#pragma GCC unroll 8
        for (int t = 0; t < TT; t++) acc[t] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            const __m256i w = _mm256_loadu_si256((const __m256i *)(wp + (size_t)b * PLUMB_GEMM8_BLOCK + 32 + 32 * l));
            const __m256i aw = _mm256_sign_epi8(w, w);
            const uint8_t *xb = xp + (size_t)b * PLUMB_GEMM8_ACT_BLOCK + 4 * l;
#pragma GCC unroll 8
            for (int t = 0; t < TT; t++) {
                const __m256i s = _mm256_sign_epi8(bcast(xb + (size_t)t * xps), w);
                const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, s), ones);
                acc[t] = _mm256_fmadd_ps(dp[b * TT_MAX + t], _mm256_cvtepi32_ps(p), acc[t]);
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < TT; t++) lanes[l][t] = acc[t];
    }
#pragma GCC unroll 8
    for (int t = 0; t < TT; t++) {
        /* hsum8's order: ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)) */
        const __m256 a = _mm256_add_ps(_mm256_add_ps(lanes[0][t], lanes[4][t]), _mm256_add_ps(lanes[2][t], lanes[6][t]));
        const __m256 c = _mm256_add_ps(_mm256_add_ps(lanes[1][t], lanes[5][t]), _mm256_add_ps(lanes[3][t], lanes[7][t]));
        const __m256 r = _mm256_add_ps(a, c);
        if (nrows >= ROWS) {
            _mm256_storeu_ps(out + (size_t)t * os, r);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, r);
            memcpy(out + (size_t)t * os, tmp, sizeof(float) * (size_t)nrows);
        }
    }
}

void plumb__gemm8(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                  void *scratch) {
    const int64_t nb = n / 32;
    __m256 *dp = scratch; /* PLUMB_GEMM8_RUN_BYTES per block */
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + TT_MAX <= T; t += TT_MAX) tile(nb, wp, x + (size_t)t * xps, xps, TT_MAX, out + (size_t)t * os, os, nrows, dp);
    for (; t + 4 <= T; t += 4) tile(nb, wp, x + (size_t)t * xps, xps, 4, out + (size_t)t * os, os, nrows, dp);
    for (; t < T; t++) tile(nb, wp, x + (size_t)t * xps, xps, 1, out + (size_t)t * os, os, nrows, dp);
}

#endif
