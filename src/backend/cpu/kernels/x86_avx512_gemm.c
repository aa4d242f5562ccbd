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
 * dpbusd multiplies unsigned by signed bytes: the weights are packed as q + 128, and each lane's
 * sum starts at -128 times the token's sum of the four activation values (prepared once per
 * activation row), which makes the result the signed sum exactly. */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

#include <immintrin.h>

#define ROWS PLUMB_GEMM_ROWS

/* Wide rows (plumb__widen's legacy layout: F32 scale + 32 int8 per block) to the packed
 * layout of PLUMB_GEMM_ROWS rows; rows from nrows on are zero. */
void plumb__gemm16_pack(const void *wide, size_t ws, int nrows, void *out, int64_t n) {
    const int64_t nb = n / 32;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    /* dword k of row r lands at dword 16 k + r of the block's values */
    const __m512i idx = _mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120);
    for (int64_t i = 0; i < nb; i++) {
        uint8_t *o = (uint8_t *)out + (size_t)i * PLUMB_GEMM_BLOCK;
        _Alignas(64) uint32_t vals[ROWS * 8];
        float *scales = (float *)(void *)o;
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
        for (int k = 0; k < 8; k++) {
            const __m512i v = _mm512_i32gather_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(k)), vals, 4);
            _mm512_storeu_si512(o + 64 + 64 * k, _mm512_xor_si512(v, flip));
        }
    }
}

/* One Q8_0 activation row (34-byte blocks) to the GEMM's form (PLUMB_GEMM_ACT_BLOCK bytes per
 * block): its 32 values, the 8 sums of four times -128 as int32, its scale as F32, and (for
 * plumb__gemm16_block_sums) the sum of the 8 as int32. */
void plumb__gemm16_prep(const void *xq, void *out, int64_t n) {
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
        int32_t nc[8], total = 0;
        _mm256_storeu_si256((__m256i *)(void *)nc, _mm256_sub_epi32(_mm256_setzero_si256(), s));
        for (int l = 0; l < 8; l++) total += nc[l];
        memcpy(o + 68, &total, 4);
    }
}

static inline int32_t load_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* plumb__gemm16, the exact GEMM on this layout, runs in x86_avx512_gemm_kept.c with the kept
 * layouts' tiles. */

/* The block-sum GEMM (plumb_context_params.fast_gemm): the same packed rows and prepared
 * activations, but each block's 32 products summed into one int32 (all eight lanes' vpdpbusd
 * into one register, started at the block's whole bias), then, as the portable kernels do,
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
#pragma GCC unroll 12
        for (int t = 0; t < TT; t++) s[t] = _mm512_set1_epi32(load_i32(xp + (size_t)t * xps + 68));
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            const __m512i w = _mm512_loadu_si512(wp + 64 + 64 * l);
#pragma GCC unroll 12
            for (int t = 0; t < TT; t++) s[t] = _mm512_dpbusd_epi32(s[t], w, _mm512_set1_epi32(load_i32(xp + (size_t)t * xps + 4 * l)));
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
