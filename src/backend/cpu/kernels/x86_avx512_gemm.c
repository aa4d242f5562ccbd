/* x86_avx512_gemm.c — the register-tiled prompt GEMM of the AVX-512 VNNI set for the legacy
 * weight types (Q4_0, Q5_0, Q8_0) with Q8_0 activations.
 *
 * The reference arithmetic of one output is eight float lanes per row: block by block, lane l
 * gets fma(d_w d_x, (float)s_l, lane), where s_l is the exact int32 sum of the products of the
 * block's values 4l .. 4l + 3; the lanes are then added as hsum8 adds them. Here 16 weight rows
 * are interleaved so that one 512-bit register holds lane l of all 16 rows: for each group of
 * four values, the 16 rows' four bytes side by side. One dpbusd of that register with the
 * token's four activation bytes (broadcast) gives s_l of 16 rows; one multiply gives the 16
 * scale products of a block; the convert and the FMA then run on 16 outputs at once, and
 * nothing is summed across a register until the end. The integer sums, float operations and
 * their order are those of every other kernel set's vec_dot, so results are bit-identical.
 *
 * dpbusd multiplies unsigned by signed bytes: the activations are prepared as x + 128 and the
 * weights packed as they are, each lane's register followed by its biases, -128 times each
 * row's sum of the four weights, from which the lane's sum starts: the result is the signed sum
 * exactly. A bias register serves all of a tile's tokens (a bias from the activations' side
 * would be one more broadcast load per token and lane). A packed block of 16 rows: their F32
 * scales; at 64 + 128 l lane l's weights, at 128 + 128 l its biases (int32); at 1088 the sums
 * of the eight lanes' biases (for the block-sum GEMM). */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>

#define ROWS PLUMB_GEMM_ROWS

/* A lane register of signed weights to its biases: -128 times each row's sum of four. */
static inline __m512i lane_bias(__m512i w) {
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), w));
}

void plumb__gemm16_pack_block(const float *scales, const void *lanes, void *out) {
    uint8_t *o = out;
    __m512i total = _mm512_setzero_si512();
    _mm512_storeu_ps(o, _mm512_loadu_ps(scales));
    for (int l = 0; l < 8; l++) {
        const __m512i w = _mm512_loadu_si512((const uint8_t *)lanes + 64 * l), b = lane_bias(w);
        _mm512_storeu_si512(o + 64 + 128 * l, w);
        _mm512_storeu_si512(o + 128 + 128 * l, b);
        total = _mm512_add_epi32(total, b);
    }
    _mm512_storeu_si512(o + 1088, total);
}

/* Wide rows (plumb__widen's legacy layout: F32 scale + 32 int8 per block) to the packed
 * layout of PLUMB_GEMM_ROWS rows; rows from nrows on are zero. */
void plumb__gemm16_pack(const void *wide, size_t ws, int nrows, void *out, int64_t n) {
    const int64_t nb = n / 32;
    /* dword k of row r lands at dword 16 k + r of the block's values */
    const __m512i idx = _mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120);
    for (int64_t i = 0; i < nb; i++) {
        _Alignas(64) uint32_t vals[ROWS * 8];
        _Alignas(64) float scales[ROWS];
        _Alignas(64) uint8_t lanes[8 * 64];
        for (int r = 0; r < ROWS; r++) {
            if (r < nrows) {
                const uint8_t *b = (const uint8_t *)wide + (size_t)r * ws + (size_t)i * PLUMB_WIDE_BLOCK;
                memcpy(&scales[r], b, 4);
                memcpy(&vals[r * 8], b + 4, 32);
            } else {
                scales[r] = 0.0f;
                memset(&vals[r * 8], 0, 32);
            }
        }
        for (int k = 0; k < 8; k++)
            _mm512_store_si512(lanes + 64 * k, _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(k)), vals, 4));
        plumb__gemm16_pack_block(scales, lanes, (uint8_t *)out + (size_t)i * PLUMB_GEMM_BLOCK);
    }
}

/* One Q8_0 activation row (34-byte blocks) to the packed GEMMs' form (PLUMB_GEMM_ACT_BLOCK bytes
 * per block): its 32 values plus 128 (unsigned), its scale as F32 at 64. */
void plumb__gemm16_prep(const void *xq, void *out, int64_t n) {
    const uint8_t *x = xq;
    uint8_t *o = out;
    for (int64_t i = 0; i < n / 32; i++, x += 34, o += PLUMB_GEMM_ACT_BLOCK) {
        memset(o, 0, PLUMB_GEMM_ACT_BLOCK);
        _mm256_storeu_si256((__m256i *)o, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x + 2)), _mm256_set1_epi8((char)0x80)));
        uint16_t h;
        memcpy(&h, x, 2);
        const float d = _cvtsh_ss(h);
        memcpy(o + 64, &d, 4);
    }
}

/* ... and to the kept layouts' form (their weights are q + 128): its 32 values, the 8 sums of
 * four times -128 as int32 (the lanes' biases), its scale as F32 at 64. */
void plumb__gemm16_prep_kept(const void *xq, void *out, int64_t n) {
    const uint8_t *x = xq;
    uint8_t *o = out;
    const __m256i m128 = _mm256_set1_epi8((char)0x80);
    for (int64_t i = 0; i < n / 32; i++, x += 34, o += PLUMB_GEMM_ACT_BLOCK) {
        const __m256i y = _mm256_loadu_si256((const __m256i *)(x + 2));
        _mm256_storeu_si256((__m256i *)o, y);
        const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), m128, y); /* 128 * sums of four */
        _mm256_storeu_si256((__m256i *)(o + 32), _mm256_sub_epi32(_mm256_setzero_si256(), s));
        uint16_t h;
        memcpy(&h, x, 2);
        const float d = _cvtsh_ss(h);
        memcpy(o + 64, &d, 4);
        memset(o + 68, 0, 4);
    }
}

static inline int32_t load_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The exact GEMM: 16 rows x TT tokens in two passes over the blocks, lanes 0-3 and then 4-7, so
 * that 4 TT accumulators, TT scale products and a lane's weight and bias registers fit the 32
 * registers with TT = 5: per lane, 7 loads for 5 vpdpbusd (with all eight lanes at once only 3
 * tokens fit, and the biases, 8 more registers, would not: 7 loads for 3). The first pass's
 * lanes wait in memory for the final fold, hsum8's order. */
#define TT_MAX 5
static inline __attribute__((always_inline)) void tile(int64_t nb, const uint8_t *wp, const uint8_t *xp, size_t xps,
                                                       const int TT, float *out, size_t os, __mmask16 m) {
    __m512 first[TT_MAX][4], acc[TT_MAX][4];
    for (int half = 0; half < 2; half++) {
#pragma GCC unroll 5
        for (int t = 0; t < TT; t++)
#pragma GCC unroll 4
            for (int l = 0; l < 4; l++) acc[t][l] = _mm512_setzero_ps();
        const uint8_t *x = xp, *w = wp;
        for (int64_t i = 0; i < nb; i++, x += PLUMB_GEMM_ACT_BLOCK, w += PLUMB_GEMM_BLOCK) {
            __m512 d[TT_MAX];
            plumb__scale_products(_mm512_loadu_ps(w), x, xps, TT, d);
#pragma GCC unroll 4
            for (int l4 = 0; l4 < 4; l4++) {
                const int l = 4 * half + l4;
                const __m512i wl = _mm512_loadu_si512(w + 64 + 128 * l), bias = _mm512_loadu_si512(w + 128 + 128 * l);
                const uint8_t *xl = x + 4 * l; /* stepped token by token: no table of token addresses */
#pragma GCC unroll 5
                for (int t = 0; t < TT; t++, xl += xps) {
                    const __m512i s = _mm512_dpbusd_epi32(bias, _mm512_set1_epi32(load_i32(xl)), wl);
                    acc[t][l4] = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(s), acc[t][l4]);
                }
            }
        }
        if (half == 0)
#pragma GCC unroll 5
            for (int t = 0; t < TT; t++)
#pragma GCC unroll 4
                for (int l = 0; l < 4; l++) first[t][l] = acc[t][l];
    }
#pragma GCC unroll 5
    for (int t = 0; t < TT; t++) {
        /* hsum8's order: ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)) */
        const __m512 a = _mm512_add_ps(_mm512_add_ps(first[t][0], acc[t][0]), _mm512_add_ps(first[t][2], acc[t][2]));
        const __m512 b = _mm512_add_ps(_mm512_add_ps(first[t][1], acc[t][1]), _mm512_add_ps(first[t][3], acc[t][3]));
        _mm512_mask_storeu_ps(out + (size_t)t * os, m, _mm512_add_ps(a, b));
    }
}

void plumb__gemm16(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                   void *scratch) {
    (void)scratch;
    const int64_t nb = n / 32;
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + TT_MAX <= T; t += TT_MAX) tile(nb, wp, x + (size_t)t * xps, xps, TT_MAX, out + (size_t)t * os, os, m);
    for (; t + 3 <= T; t += 3) tile(nb, wp, x + (size_t)t * xps, xps, 3, out + (size_t)t * os, os, m);
    for (; t < T; t++) tile(nb, wp, x + (size_t)t * xps, xps, 1, out + (size_t)t * os, os, m);
}
#undef TT_MAX


/* The block-sum GEMM (plumb_context_params.fast_gemm): the same packed rows and prepared
 * activations, but each block's 32 products summed into one int32 (all eight lanes' vpdpbusd
 * into one register, started at the sum of the lanes' biases), then, as the portable kernels do,
 * (float)sum * (d_w d_x) added to the row's sum: 11 operations per 16 rows, token and block
 * instead of 25, and the results of the generic set's vec_dot bit for bit, not the x86
 * reference's. Tiles of 16 rows x 12 tokens. */
static inline __attribute__((always_inline)) void tile_sums(int64_t nb, const uint8_t *wp, const uint8_t *xp, size_t xps,
                                                            const int TT, float *out, size_t os, __mmask16 m) {
    __m512 acc[12];
#pragma GCC unroll 12
    for (int t = 0; t < TT; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++, wp += PLUMB_GEMM_BLOCK, xp += PLUMB_GEMM_ACT_BLOCK) {
        __m512i s[12];
        const __m512i bias = _mm512_loadu_si512(wp + 1088);
#pragma GCC unroll 12
        for (int t = 0; t < TT; t++) s[t] = bias;
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            const __m512i w = _mm512_loadu_si512(wp + 64 + 128 * l);
#pragma GCC unroll 12
            for (int t = 0; t < TT; t++) s[t] = _mm512_dpbusd_epi32(s[t], _mm512_set1_epi32(load_i32(xp + (size_t)t * xps + 4 * l)), w);
        }
        const __m512 dw = _mm512_loadu_ps(wp);
#pragma GCC unroll 12
        for (int t = 0; t < TT; t++) {
            float dx;
            memcpy(&dx, xp + (size_t)t * xps + 64, 4);
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_cvtepi32_ps(s[t]), _mm512_mul_ps(dw, _mm512_set1_ps(dx))));
        }
    }
#pragma GCC unroll 12
    for (int t = 0; t < TT; t++) _mm512_mask_storeu_ps(out + (size_t)t * os, m, acc[t]);
}

void plumb__gemm16_block_sums(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                              int nrows, void *scratch) {
    (void)scratch;
    const int64_t nb = n / 32;
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + 12 <= T; t += 12) tile_sums(nb, wp, x + (size_t)t * xps, xps, 12, out + (size_t)t * os, os, m);
    for (; t + 4 <= T; t += 4) tile_sums(nb, wp, x + (size_t)t * xps, xps, 4, out + (size_t)t * os, os, m);
    for (; t < T; t++) tile_sums(nb, wp, x + (size_t)t * xps, xps, 1, out + (size_t)t * os, os, m);
}

#endif
