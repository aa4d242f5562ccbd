/* x86_avx512_gemm_k.c — the register-tiled prompt GEMM of the AVX-512 VNNI set for Q4_K and
 * Q6_K weights with Q8_K activations.
 *
 * The reference arithmetic (x86_avx2.c's dot_k4 and dot_q6_k) gives each output, per 256-value
 * super-block, eight exact int32 lane sums: lane l takes the values whose index is 4l .. 4l + 3
 * modulo 32, each product times its sub-block's scale (Q6_K: less 32 times the scales times the
 * activation's 16-value sums, gathered into the lanes in another pattern, which only moves exact
 * integers); then fma(d_w d_x, (float)lane, acc_l), and the eight float lanes are added as
 * hsum8 adds them (Q4_K: plus its four lanes of min products, fma(-d_x dmin, ..), folded).
 *
 * Here 16 weight rows are interleaved so that one 512-bit register holds two consecutive values
 * of a lane for all 16 rows, as int16 already multiplied by their scale (|q sc| <= 945 for Q4_K,
 * <= 8064 for Q6_K); vpdpwssd with the token's two int16 activation values (broadcast) adds both
 * products to 16 rows' lane sums. Sixteen of them give a lane's sum for a super-block, so no
 * multiply by the scales remains; the float steps then run on 16 outputs at once, in the
 * reference's order, and the results are bit-identical to the one-row kernels. */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>

#define ROWS PLUMB_GEMM_ROWS
/* A packed super-block of 16 rows: d (F32 x 16), dmin (Q4_K; F32 x 16), 8 registers of int16
 * pairs per row (Q4_K: the mins of sub-blocks 2k, 2k + 1, k < 4; Q6_K: -32 times the scales of
 * 16-value groups 2l, 2l + 1), then the 128 weight registers, (lane l, sub-block m, pair p) at
 * 16 l + 2 m + p. */
#define OFF_EXTRA 128
#define OFF_W 640
/* A prepared activation super-block: its values as int16 in lane order (lane l, sub-block m,
 * element e at 32 l + 4 m + e), the 16 sums of 16 (int16), the 8 sums of 32 (int16), d, -d. */
#define ACT_BSUMS 512
#define ACT_S32 544
#define ACT_D 560

/* One row's super-block decoded: its 256 values times their scales as int16 in element order,
 * its 8 extra int16 pairs (see above), d and dmin. */
static void decode_q4_k(const uint8_t *a, int16_t *w, int32_t *extra, float *d, float *dmin) {
    uint16_t h;
    memcpy(&h, a, 2);
    *d = _cvtsh_ss(h);
    memcpy(&h, a + 2, 2);
    *dmin = _cvtsh_ss(h);
    int16_t sc[8], mn[8];
    plumb__q4k_scales_mins(a + 4, sc, mn);
    for (int k = 0; k < 8; k++) extra[k] = k < 4 ? (int32_t)((uint32_t)(uint16_t)mn[2 * k] | (uint32_t)(uint16_t)mn[2 * k + 1] << 16) : 0;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int c = 0; c < 4; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(a + 16 + 32 * c));
        const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        _mm512_storeu_si512(w + 64 * c, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(lo), _mm512_set1_epi16(sc[2 * c])));
        _mm512_storeu_si512(w + 64 * c + 32, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(hi), _mm512_set1_epi16(sc[2 * c + 1])));
    }
}

static void decode_q6_k(const uint8_t *a, int16_t *w, int32_t *extra, float *d, float *dmin) {
    uint16_t h;
    memcpy(&h, a + 208, 2);
    *d = _cvtsh_ss(h);
    *dmin = 0.0f;
    const int8_t *sc = (const int8_t *)(a + 192);
    for (int l = 0; l < 8; l++)
        extra[l] = (int32_t)((uint32_t)(uint16_t)(int16_t)(-32 * sc[2 * l]) | (uint32_t)(uint16_t)(int16_t)(-32 * sc[2 * l + 1]) << 16);
    for (int hh = 0; hh < 2; hh++) {
        __m256i q[4];
        plumb__q6k_codes(a, hh, q);
        for (int k = 0; k < 4; k++) { /* values 128 hh + 32 k .. + 31: groups g (first 16) and g + 1 */
            const int g = 8 * hh + 2 * k;
            const __m512i s = _mm512_inserti64x4(_mm512_set1_epi16(sc[g]), _mm256_set1_epi16(sc[g + 1]), 1);
            _mm512_storeu_si512(w + 128 * hh + 32 * k, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(q[k]), s));
        }
    }
}

/* Rows of the file's layout (ws bytes apart; rows from nrows on count as zero) to packed
 * super-blocks. */
static void pack_k(bool q4k, const void *w, size_t ws, int nrows, void *out, int64_t n) {
    const size_t wbytes = q4k ? 144 : 210;
    _Alignas(64) int16_t vals[ROWS * 256];
    _Alignas(64) int32_t extra[ROWS * 8];
    /* dword j of row r at r * 128 + j */
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(128));
    const __m512i rows8 = _mm512_srli_epi32(rows, 4); /* r * 8 */
    for (int64_t s = 0; s < n / 256; s++) {
        uint8_t *o = (uint8_t *)out + (size_t)s * PLUMB_GEMM_K_BLOCK;
        float *d = (float *)(void *)o, *dmin = d + ROWS;
        for (int r = 0; r < ROWS; r++) {
            if (r >= nrows) {
                memset(vals + r * 256, 0, 512);
                memset(extra + r * 8, 0, 32);
                d[r] = dmin[r] = 0.0f;
                continue;
            }
            const uint8_t *a = (const uint8_t *)w + (size_t)r * ws + (size_t)s * wbytes;
            if (q4k)
                decode_q4_k(a, vals + r * 256, extra + r * 8, &d[r], &dmin[r]);
            else
                decode_q6_k(a, vals + r * 256, extra + r * 8, &d[r], &dmin[r]);
        }
        for (int k = 0; k < 8; k++)
            _mm512_storeu_si512(o + OFF_EXTRA + 64 * k, _mm512_i32gather_epi32(_mm512_add_epi32(rows8, _mm512_set1_epi32(k)), extra, 4));
        /* register 16 l + 2 m + p: the values 32 m + 4 l + 2 p and the next, dword 16 m + 2 l + p */
        for (int l = 0; l < 8; l++)
            for (int m = 0; m < 8; m++)
                for (int p = 0; p < 2; p++)
                    _mm512_storeu_si512(o + OFF_W + 64 * (16 * l + 2 * m + p),
                                        _mm512_i32gather_epi32(_mm512_add_epi32(rows, _mm512_set1_epi32(16 * m + 2 * l + p)), vals, 4));
    }
}

void plumb__gemm16_pack_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n) { pack_k(true, w, ws, nrows, out, n); }
void plumb__gemm16_pack_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n) { pack_k(false, w, ws, nrows, out, n); }

/* One Q8_K activation row (292-byte blocks: F32 d, 256 int8, 16 int16 sums of 16) to the
 * GEMM's form (PLUMB_GEMM_K_ACT_BLOCK bytes per super-block). */
void plumb__gemm16_prep_k(const void *xq, void *out, int64_t n) {
    const uint8_t *x = xq;
    uint8_t *o = out;
    /* int16 lane order: byte 32 m + 4 l + e to position 32 l + 4 m + e: a 4-byte transpose */
    for (int64_t i = 0; i < n / 256; i++, x += 292, o += PLUMB_GEMM_K_ACT_BLOCK) {
        /* dword 8 m + l of the values to dword 8 l + m, two lanes a gather, widened */
        const __m512i idx = _mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 33, 41, 49, 57);
        for (int l = 0; l < 8; l += 2) {
            const __m512i v = _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(l)), x + 4, 4);
            _mm512_storeu_si512(o + 64 * l, _mm512_cvtepi8_epi16(_mm512_castsi512_si256(v)));
            _mm512_storeu_si512(o + 64 * l + 64, _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(v, 1)));
        }
        plumb__q8k_prep_tail(x, o + ACT_BSUMS, o + ACT_S32, o + ACT_D);
        memset(o + ACT_D + 8, 0, PLUMB_GEMM_K_ACT_BLOCK - ACT_D - 8);
    }
}

/* G (1 or 2) groups of 16 rows (the second's weights at wp + gs) x TT tokens, one lane at a
 * time: a lane's float chain over the super-blocks does not depend on the other lanes, so each
 * lane runs over all super-blocks with G TT accumulators, and each broadcast activation pair
 * serves both groups' weight registers (two groups of 6 tokens: 8 loads per 12 vpdpwssd, one
 * group of 8: 9 per 8); the lanes' sums wait in lanes[] for the final folds. dp holds the scale
 * products d_w d_x (and for Q4_K -d_x dmin) of every group, super-block and token. */
#define TT_MAX 8
#define DP(g, s, h, t) dp[(((size_t)(g) * (size_t)nsb + (size_t)(s)) * 2 + (h)) * TT_MAX + (t)]
static inline __attribute__((always_inline)) void tile(const int G, int64_t nsb, const uint8_t *wp, size_t gs,
                                                       const uint8_t *xp, size_t xps, const int TT, const bool q4k,
                                                       float *out, size_t os, __mmask16 msk2, __m512 *dp) {
    __m512 lanes[2][TT_MAX][12];
    for (int64_t s = 0; s < nsb; s++)
        for (int g = 0; g < G; g++)
#pragma GCC unroll 8
            for (int t = 0; t < TT; t++) {
                const uint8_t *x = xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_K_ACT_BLOCK;
                const uint8_t *w = wp + (size_t)g * gs + (size_t)s * PLUMB_GEMM_K_BLOCK;
                float dx[2];
                memcpy(dx, x + ACT_D, 8);
                DP(g, s, 0, t) = _mm512_mul_ps(_mm512_loadu_ps(w), _mm512_set1_ps(dx[0]));
                if (q4k) DP(g, s, 1, t) = _mm512_mul_ps(_mm512_loadu_ps(w + 64), _mm512_set1_ps(dx[1]));
            }
#pragma GCC unroll 1
    for (int l = 0; l < 8; l++) {
        __m512 acc[2][TT_MAX];
        for (int g = 0; g < G; g++)
#pragma GCC unroll 8
            for (int t = 0; t < TT; t++) acc[g][t] = _mm512_setzero_ps();
        for (int64_t s = 0; s < nsb; s++) {
            const uint8_t *ws = wp + (size_t)s * PLUMB_GEMM_K_BLOCK, *xs = xp + (size_t)s * PLUMB_GEMM_K_ACT_BLOCK;
            __m512i si[2][TT_MAX];
#pragma GCC unroll 8
            for (int t = 0; t < TT; t++) {
                const __m512i b = plumb__bcast32(xs + (size_t)t * xps + ACT_BSUMS + 4 * l);
                for (int g = 0; g < G; g++)
                    si[g][t] = q4k ? _mm512_setzero_si512()
                                   : _mm512_dpwssd_epi32(_mm512_setzero_si512(),
                                                         _mm512_loadu_si512(ws + (size_t)g * gs + OFF_EXTRA + 64 * l), b);
            }
            const uint8_t *W = ws + OFF_W + 64 * 16 * l;
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) {
                __m512i w[2];
                for (int g = 0; g < G; g++) w[g] = _mm512_loadu_si512(W + (size_t)g * gs + 64 * j);
#pragma GCC unroll 8
                for (int t = 0; t < TT; t++) {
                    const __m512i b = plumb__bcast32(xs + (size_t)t * xps + 64 * l + 4 * j);
                    for (int g = 0; g < G; g++) si[g][t] = _mm512_dpwssd_epi32(si[g][t], w[g], b);
                }
            }
            for (int g = 0; g < G; g++)
#pragma GCC unroll 8
                for (int t = 0; t < TT; t++) acc[g][t] = _mm512_fmadd_ps(DP(g, s, 0, t), _mm512_cvtepi32_ps(si[g][t]), acc[g][t]);
        }
        for (int g = 0; g < G; g++)
#pragma GCC unroll 8
            for (int t = 0; t < TT; t++) lanes[g][t][l] = acc[g][t];
    }
    if (q4k) /* the four lanes of min products */
#pragma GCC unroll 1
        for (int k = 0; k < 4; k++) {
            __m512 acc[2][TT_MAX];
            for (int g = 0; g < G; g++)
#pragma GCC unroll 8
                for (int t = 0; t < TT; t++) acc[g][t] = _mm512_setzero_ps();
            for (int64_t s = 0; s < nsb; s++) {
                const uint8_t *ws = wp + (size_t)s * PLUMB_GEMM_K_BLOCK, *xs = xp + (size_t)s * PLUMB_GEMM_K_ACT_BLOCK;
#pragma GCC unroll 8
                for (int t = 0; t < TT; t++) {
                    const __m512i b = plumb__bcast32(xs + (size_t)t * xps + ACT_S32 + 4 * k);
                    for (int g = 0; g < G; g++)
                        acc[g][t] = _mm512_fmadd_ps(
                            DP(g, s, 1, t),
                            _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(_mm512_setzero_si512(),
                                                                   _mm512_loadu_si512(ws + (size_t)g * gs + OFF_EXTRA + 64 * k), b)),
                            acc[g][t]);
                }
            }
            for (int g = 0; g < G; g++)
#pragma GCC unroll 8
                for (int t = 0; t < TT; t++) lanes[g][t][8 + k] = acc[g][t];
        }
    for (int g = 0; g < G; g++)
#pragma GCC unroll 8
        for (int t = 0; t < TT; t++)
            _mm512_mask_storeu_ps(out + (size_t)t * os + (size_t)g * ROWS, g == G - 1 ? msk2 : (__mmask16)0xFFFF,
                                  plumb__fold_k_lanes(lanes[g][t], q4k ? lanes[g][t] + 8 : NULL));
}
#undef DP

/* nrows: the rows of the last group */
static inline __attribute__((always_inline)) void gemm_k(bool q4k, const int G, int64_t n, const void *wp, size_t gs,
                                                         const void *xp, size_t xps, int64_t T, float *out, size_t os,
                                                         int nrows, void *scratch) {
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const uint8_t *x = xp;
    const int64_t nsb = n / 256;
    __m512 *dp = scratch; /* PLUMB_GEMM_K_RUN_BYTES per super-block and group */
    int64_t t = 0;
    if (G == 1) {
        for (; t + TT_MAX <= T; t += TT_MAX) tile(1, nsb, wp, gs, x + (size_t)t * xps, xps, TT_MAX, q4k, out + (size_t)t * os, os, m, dp);
        for (; t + 4 <= T; t += 4) tile(1, nsb, wp, gs, x + (size_t)t * xps, xps, 4, q4k, out + (size_t)t * os, os, m, dp);
    } else {
        for (; t + 6 <= T; t += 6) tile(2, nsb, wp, gs, x + (size_t)t * xps, xps, 6, q4k, out + (size_t)t * os, os, m, dp);
        for (; t + 3 <= T; t += 3) tile(2, nsb, wp, gs, x + (size_t)t * xps, xps, 3, q4k, out + (size_t)t * os, os, m, dp);
    }
    for (; t < T; t++) tile(G, nsb, wp, gs, x + (size_t)t * xps, xps, 1, q4k, out + (size_t)t * os, os, m, dp);
}

void plumb__gemm16_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                        void *scratch) {
    gemm_k(true, 1, n, wp, 0, xp, xps, T, out, os, nrows, scratch);
}
void plumb__gemm16_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                        void *scratch) {
    gemm_k(false, 1, n, wp, 0, xp, xps, T, out, os, nrows, scratch);
}
void plumb__gemm32_q4_k(int64_t n, const void *wp, size_t gs, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                        int nrows, void *scratch) {
    gemm_k(true, 2, n, wp, gs, xp, xps, T, out, os, nrows, scratch);
}
void plumb__gemm32_q6_k(int64_t n, const void *wp, size_t gs, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                        int nrows, void *scratch) {
    gemm_k(false, 2, n, wp, gs, xp, xps, T, out, os, nrows, scratch);
}

#endif
