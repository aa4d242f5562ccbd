/* x86_avx2_gemm_k.c — the register-tiled prompt GEMM of the AVX2 set for Q4_K and Q6_K weights
 * with Q8_K activations (x86_avx512_gemm_k.c's arithmetic with 256-bit registers and without
 * VNNI), and the Q8_K activations' prepared form that it, the AVX-512 block-sum GEMM and the
 * AVX-512 kept K layouts read.
 *
 * The reference arithmetic (x86_avx2.c's dot_k4 and dot_q6_k): per 256-value super-block,
 * eight exact int32 lane sums, lane l taking the values whose index is 4l .. 4l + 3 modulo 32,
 * each product times its group's scale (Q6_K: less 32 times the scales times the activation's
 * sums of 16); then fma(d_w d_x, (float)lane, acc_l), and the lanes added as hsum8 adds them
 * (Q4_K: plus its four lanes of min products, fma(-d_x dmin, ..), folded).
 *
 * Here 8 weight rows are interleaved as unsigned codes (Q4_K 0..15, Q6_K 0..63), one 256-bit
 * register holding a lane's four values of one 32-value sub-block for all 8 rows; maddubs with
 * the token's four activation bytes (broadcast) gives each row's two pair sums (|63 x -128 x 2|
 * fits int16), and madd with the rows' scales, each as the int16 pair (sc, sc), the scaled sum of
 * the four in int32: the same integers as the reference, so the same float steps give the same
 * bits. Tiles of 8 rows x 6 tokens, super-block after super-block, the 8 (Q4_K 12) float lane
 * chains of every token in memory between super-blocks. */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>

#define ROWS PLUMB_GEMM8_ROWS
/* A packed super-block of 8 rows: d (F32 x 8), dmin (Q4_K; F32 x 8), 8 registers of int16
 * pairs per row dword (plumb__k_codes's extra pairs), the scale registers (group g: row r's
 * (sc, sc) at dword r; Q4_K 8 groups, Q6_K 16), then the codes: register 8 l + m holds values
 * 32 m + 4 l .. + 3 of row r at bytes 4 r .. 4 r + 3. */
#define OFF_DMIN 32
#define OFF_EXTRA 64
#define OFF_SC 320
#define OFF_Q 832
#define TT_MAX 6

void plumb__gemm16_prep_sums(const void *xq, void *out, int64_t n) {
    const uint8_t *x = xq;
    uint8_t *o = out;
    for (int64_t i = 0; i < n / 256; i++, x += 292, o += PLUMB_GEMM_KSUM_ACT_BLOCK) {
        memcpy(o, x + 4, 256);
        plumb__q8k_prep_tail(x, o + PLUMB_KSUM_ACT_BSUMS, o + PLUMB_KSUM_ACT_S32, o + PLUMB_KSUM_ACT_D);
        memset(o + PLUMB_KSUM_ACT_D + 8, 0, PLUMB_GEMM_KSUM_ACT_BLOCK - PLUMB_KSUM_ACT_D - 8);
    }
}

/* Rows of the file's layout (ws bytes apart; rows from nrows on count as zero) to packed
 * super-blocks. */
static void pack8_k(bool q4k, const void *w, size_t ws, int nrows, void *out, int64_t n) {
    const size_t wbytes = q4k ? 144 : 210;
    for (int64_t s = 0; s < n / 256; s++) {
        uint8_t *o = (uint8_t *)out + (size_t)s * PLUMB_GEMM8_K_BLOCK;
        memset(o, 0, PLUMB_GEMM8_K_BLOCK);
        float *d = (float *)(void *)o, *dmin = (float *)(void *)(o + OFF_DMIN);
        int16_t *extra = (int16_t *)(void *)(o + OFF_EXTRA), *sc = (int16_t *)(void *)(o + OFF_SC);
        for (int r = 0; r < nrows && r < ROWS; r++) {
            _Alignas(32) uint8_t codes[256];
            int16_t s16[16], ex[16];
            plumb__k_codes(q4k, (const uint8_t *)w + (size_t)r * ws + (size_t)s * wbytes, codes, &d[r], &dmin[r], s16, ex);
            for (int k = 0; k < 8; k++) extra[16 * k + 2 * r] = ex[2 * k], extra[16 * k + 2 * r + 1] = ex[2 * k + 1];
            for (int g = 0; g < (q4k ? 8 : 16); g++) sc[16 * g + 2 * r] = sc[16 * g + 2 * r + 1] = s16[g];
            for (int l = 0; l < 8; l++)
                for (int m = 0; m < 8; m++) memcpy(o + OFF_Q + 32 * (8 * l + m) + 4 * r, codes + 32 * m + 4 * l, 4);
        }
    }
}

void plumb__gemm8_pack_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n) { pack8_k(true, w, ws, nrows, out, n); }
void plumb__gemm8_pack_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n) { pack8_k(false, w, ws, nrows, out, n); }

static inline __m256i bcast(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* 8 rows x TT tokens. */
static inline __attribute__((always_inline)) void tile(bool q4k, int64_t nsb, const uint8_t *wp, const uint8_t *xp, size_t xps,
                                                       const int TT, float *out, size_t os, int nrows) {
    __m256 lane[12][TT_MAX]; /* lanes 8 .. 11: Q4_K's min products */
    for (int l = 0; l < (q4k ? 12 : 8); l++)
#pragma GCC unroll 6
        for (int t = 0; t < TT; t++) lane[l][t] = _mm256_setzero_ps();
    for (int64_t s = 0; s < nsb; s++, wp += PLUMB_GEMM8_K_BLOCK, xp += PLUMB_GEMM_KSUM_ACT_BLOCK) {
        __m256 dp[TT_MAX];
        const __m256 dw = _mm256_loadu_ps((const float *)(const void *)wp);
#pragma GCC unroll 6
        for (int t = 0; t < TT; t++) {
            float dx;
            memcpy(&dx, xp + (size_t)t * xps + PLUMB_KSUM_ACT_D, 4);
            dp[t] = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
        }
#pragma GCC unroll 1
        for (int l = 0; l < 8; l++) {
            __m256i si[TT_MAX];
            const __m256i ex = _mm256_loadu_si256((const __m256i *)(wp + OFF_EXTRA + 32 * l));
#pragma GCC unroll 6
            for (int t = 0; t < TT; t++)
                si[t] = q4k ? _mm256_setzero_si256() : _mm256_madd_epi16(ex, bcast(xp + (size_t)t * xps + PLUMB_KSUM_ACT_BSUMS + 4 * l));
#pragma GCC unroll 8
            for (int m = 0; m < 8; m++) {
                const __m256i w = _mm256_loadu_si256((const __m256i *)(wp + OFF_Q + 32 * (8 * l + m)));
                const __m256i sc = _mm256_loadu_si256((const __m256i *)(wp + OFF_SC + 32 * (q4k ? m : 2 * m + l / 4)));
#pragma GCC unroll 6
                for (int t = 0; t < TT; t++)
                    si[t] = _mm256_add_epi32(si[t],
                                             _mm256_madd_epi16(_mm256_maddubs_epi16(w, bcast(xp + (size_t)t * xps + 32 * m + 4 * l)), sc));
            }
#pragma GCC unroll 6
            for (int t = 0; t < TT; t++) lane[l][t] = _mm256_fmadd_ps(dp[t], _mm256_cvtepi32_ps(si[t]), lane[l][t]);
        }
        if (q4k) {
            const __m256 dmin = _mm256_loadu_ps((const float *)(const void *)(wp + OFF_DMIN));
#pragma GCC unroll 6
            for (int t = 0; t < TT; t++) {
                float ndx;
                memcpy(&ndx, xp + (size_t)t * xps + PLUMB_KSUM_ACT_D + 4, 4);
                dp[t] = _mm256_mul_ps(dmin, _mm256_set1_ps(ndx));
            }
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m256i ex = _mm256_loadu_si256((const __m256i *)(wp + OFF_EXTRA + 32 * k));
#pragma GCC unroll 6
                for (int t = 0; t < TT; t++)
                    lane[8 + k][t] = _mm256_fmadd_ps(
                        dp[t], _mm256_cvtepi32_ps(_mm256_madd_epi16(ex, bcast(xp + (size_t)t * xps + PLUMB_KSUM_ACT_S32 + 4 * k))),
                        lane[8 + k][t]);
            }
        }
    }
#pragma GCC unroll 6
    for (int t = 0; t < TT; t++) {
        /* hsum8's order: ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)); the mins (0 + 2) + (1 + 3) */
        const __m256 a = _mm256_add_ps(_mm256_add_ps(lane[0][t], lane[4][t]), _mm256_add_ps(lane[2][t], lane[6][t]));
        const __m256 b = _mm256_add_ps(_mm256_add_ps(lane[1][t], lane[5][t]), _mm256_add_ps(lane[3][t], lane[7][t]));
        __m256 r = _mm256_add_ps(a, b);
        if (q4k) r = _mm256_add_ps(r, _mm256_add_ps(_mm256_add_ps(lane[8][t], lane[10][t]), _mm256_add_ps(lane[9][t], lane[11][t])));
        if (nrows >= ROWS) {
            _mm256_storeu_ps(out + (size_t)t * os, r);
        } else {
            float tmp[ROWS];
            _mm256_storeu_ps(tmp, r);
            memcpy(out + (size_t)t * os, tmp, sizeof(float) * (size_t)nrows);
        }
    }
}

static inline __attribute__((always_inline)) void gemm8_k(bool q4k, int64_t n, const void *wp, const void *xp, size_t xps,
                                                          int64_t T, float *out, size_t os, int nrows) {
    const int64_t nsb = n / 256;
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + TT_MAX <= T; t += TT_MAX) tile(q4k, nsb, wp, x + (size_t)t * xps, xps, TT_MAX, out + (size_t)t * os, os, nrows);
    for (; t + 3 <= T; t += 3) tile(q4k, nsb, wp, x + (size_t)t * xps, xps, 3, out + (size_t)t * os, os, nrows);
    for (; t < T; t++) tile(q4k, nsb, wp, x + (size_t)t * xps, xps, 1, out + (size_t)t * os, os, nrows);
}

void plumb__gemm8_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                       void *scratch) {
    (void)scratch;
    gemm8_k(true, n, wp, xp, xps, T, out, os, nrows);
}
void plumb__gemm8_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                       void *scratch) {
    (void)scratch;
    gemm8_k(false, n, wp, xp, xps, T, out, os, nrows);
}

#endif
