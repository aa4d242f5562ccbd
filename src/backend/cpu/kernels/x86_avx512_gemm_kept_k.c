/* x86_avx512_gemm_kept_k.c — the AVX-512 VNNI GEMM's kept layout of Q4_K weights, for batches
 * of fewer than 8 tokens (single tokens included): 16 rows interleaved with the file's bits, so
 * the copy a context keeps (cpu_repack.c) is 1.03 times the weights' size. Prompts still pack the
 * file's rows into x86_avx512_gemm_k.c's int16 layout.
 *
 * The reference arithmetic (x86_avx512_gemm_k.c): per super-block, lane l of an output is
 * L_l = sum over sub-blocks m of sc_m times the exact sum of the four products of values
 * 32 m + 4 l .. + 3; then fma(d_w d_x, (float)L_l, acc_l); the mins in four lanes, folded as
 * that kernel folds them. Here the four products of 16 rows come from one vpdpbusd of the
 * codes (unsigned, 0..15) with the token's four activation bytes, and one vpdpwssd multiplies
 * that (it fits int16) by the rows' scales (each as the pair (sc, 0)) and adds it to L_l: the
 * same integers, the same float steps, the same bits.
 *
 * A group of 16 rows, per super-block, in four planes:
 *   codes:  (l, m) at 256 l + 32 m: the nibbles of the register whose byte b = 4 r + e is row
 *           r's value 32 m + 4 l + e, byte j holding b = j (low) and b = j + 32 (high) (2048);
 *   scales: m at 16 m: the 16 rows' sc_m (128);
 *   mins:   k at 32 k: row r's (mn_2k, mn_2k+1) at 2 r (128);
 *   d:      the 16 d, then the 16 dmin, as F16 (64). */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>

#define ROWS PLUMB_GEMM_ROWS
#define CODES 2048
#define SCALES 128
#define MINS 128
#define DS 64
/* A prepared activation super-block: the 256 values (int8, element order), the 8 sums of 32
 * (int16), d and -d. */
#define ACT_S32 256
#define ACT_D 272

typedef struct planes {
    const uint8_t *codes, *scales, *mins, *d;
} planes;

static inline planes planes_of(const void *group, int64_t nsb) {
    const uint8_t *b = group;
    const size_t n = (size_t)nsb;
    return (planes){b, b + n * CODES, b + n * (CODES + SCALES), b + n * (CODES + SCALES + MINS)};
}

void plumb__gemm16_keep_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n) {
    const int64_t nsb = n / 256;
    const planes p = planes_of(out, nsb);
    uint8_t *codes = (uint8_t *)(uintptr_t)p.codes, *scales = (uint8_t *)(uintptr_t)p.scales;
    uint8_t *mins = (uint8_t *)(uintptr_t)p.mins, *ds = (uint8_t *)(uintptr_t)p.d;
    const __m512i rows64 = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(64));
    for (int64_t s = 0; s < nsb; s++) {
        _Alignas(64) uint32_t c[ROWS * 64]; /* row r's 256 codes at dwords 64 r .. */
        uint16_t d[2 * ROWS];
        for (int r = 0; r < ROWS; r++) {
            if (r >= nrows) {
                memset(c + 64 * r, 0, 256);
                d[r] = d[ROWS + r] = 0;
                for (int m = 0; m < 8; m++) scales[(size_t)s * SCALES + 16 * m + r] = 0;
                for (int k = 0; k < 4; k++) mins[(size_t)s * MINS + 32 * k + 2 * r] = mins[(size_t)s * MINS + 32 * k + 2 * r + 1] = 0;
                continue;
            }
            const uint8_t *a = (const uint8_t *)w + (size_t)r * ws + (size_t)s * 144;
            memcpy(&d[r], a, 2);
            memcpy(&d[ROWS + r], a + 2, 2);
            int16_t sc[8], mn[8];
            plumb__q4k_scales_mins(a + 4, sc, mn);
            for (int m = 0; m < 8; m++) scales[(size_t)s * SCALES + 16 * m + r] = (uint8_t)sc[m];
            for (int k = 0; k < 4; k++) {
                mins[(size_t)s * MINS + 32 * k + 2 * r] = (uint8_t)mn[2 * k];
                mins[(size_t)s * MINS + 32 * k + 2 * r + 1] = (uint8_t)mn[2 * k + 1];
            }
            const __m256i m4 = _mm256_set1_epi8(0x0F);
            for (int q = 0; q < 4; q++) { /* sub-blocks 2 q (low nibbles) and 2 q + 1 (high) */
                const __m256i v = _mm256_loadu_si256((const __m256i *)(a + 16 + 32 * q));
                _mm256_store_si256((__m256i *)(void *)(c + 64 * r + 16 * q), _mm256_and_si256(v, m4));
                _mm256_store_si256((__m256i *)(void *)(c + 64 * r + 16 * q + 8), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
            }
        }
        memcpy(ds + (size_t)s * DS, d, 64);
        for (int l = 0; l < 8; l++)
            for (int m = 0; m < 8; m++) { /* dword 8 m + l of every row */
                const __m512i reg = _mm512_i32gather_epi32(_mm512_add_epi32(rows64, _mm512_set1_epi32(8 * m + l)), c, 4);
                const __m256i lo = _mm512_castsi512_si256(reg), hi = _mm512_extracti64x4_epi64(reg, 1);
                _mm256_storeu_si256((__m256i *)(codes + (size_t)s * CODES + 256 * l + 32 * m),
                                    _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
            }
    }
}

/* One Q8_K activation row (292-byte blocks) to this kernel's form (PLUMB_GEMM_KEPT_K_ACT_BLOCK
 * bytes per super-block). */
void plumb__gemm16_prep_kept_k(const void *xq, void *out, int64_t n) {
    const uint8_t *x = xq;
    uint8_t *o = out;
    for (int64_t i = 0; i < n / 256; i++, x += 292, o += PLUMB_GEMM_KEPT_K_ACT_BLOCK) {
        memcpy(o, x + 4, 256);
        int16_t bs[16], s32[8];
        plumb__q8k_sums(x, bs, s32);
        memcpy(o + ACT_S32, s32, 16);
        float d;
        memcpy(&d, x, 4);
        const float nd = -d;
        memcpy(o + ACT_D, &d, 4);
        memcpy(o + ACT_D + 4, &nd, 4);
        memset(o + ACT_D + 8, 0, PLUMB_GEMM_KEPT_K_ACT_BLOCK - ACT_D - 8);
    }
}

/* The register of codes (l, m) of super-block s. */
static inline __m512i codes_reg(const planes *p, int64_t s, int l, int m) {
    const __m512i nib = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p->codes + (size_t)s * CODES + 256 * l + 32 * m)));
    return _mm512_and_si512(_mm512_srlv_epi64(nib, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)), _mm512_set1_epi8(0x0F));
}

#define TT_MAX 4
/* scratch per super-block: the scale products (d_w d_x, then -d_x dmin) per token, then the 8
 * scales as int32 */
#define RUN_DP 0
#define RUN_SC (2 * TT_MAX * 64)

/* 16 rows x TT tokens, one lane at a time over all super-blocks (x86_avx512_gemm_k.c's order of
 * float steps); ahead: the next group's distance, whose lines are prefetched on the way. */
static inline __attribute__((always_inline)) void tile(int64_t nsb, const planes *p, size_t ahead, const uint8_t *xp,
                                                       size_t xps, const int TT, float *out, size_t os, __mmask16 msk,
                                                       uint8_t *scratch) {
    __m512 lanes[12][TT_MAX];
    for (int64_t s = 0; s < nsb; s++) {
        __m512 *dp = (__m512 *)(void *)(scratch + (size_t)s * PLUMB_GEMM_K_RUN_BYTES + RUN_DP);
        __m512i *sc = (__m512i *)(void *)(scratch + (size_t)s * PLUMB_GEMM_K_RUN_BYTES + RUN_SC);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->d + (size_t)s * DS)));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->d + (size_t)s * DS + 32)));
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) {
            float dx[2];
            memcpy(dx, xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_KEPT_K_ACT_BLOCK + ACT_D, 8);
            dp[2 * t] = _mm512_mul_ps(dw, _mm512_set1_ps(dx[0]));
            dp[2 * t + 1] = _mm512_mul_ps(dmin, _mm512_set1_ps(dx[1]));
        }
#pragma GCC unroll 8
        for (int m = 0; m < 8; m++)
            sc[m] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p->scales + (size_t)s * SCALES + 16 * m)));
        _mm_prefetch((const char *)(p->scales + (size_t)s * SCALES + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(p->scales + (size_t)s * SCALES + 64 + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(p->mins + (size_t)s * MINS + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(p->mins + (size_t)s * MINS + 64 + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(p->d + (size_t)s * DS + ahead), _MM_HINT_T0);
    }
#pragma GCC unroll 1
    for (int l = 0; l < 8; l++) {
        __m512 acc[TT_MAX];
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) acc[t] = _mm512_setzero_ps();
        for (int64_t s = 0; s < nsb; s++) {
            const uint8_t *scr = scratch + (size_t)s * PLUMB_GEMM_K_RUN_BYTES;
            const __m512 *dp = (const __m512 *)(const void *)(scr + RUN_DP);
            const __m512i *sc = (const __m512i *)(const void *)(scr + RUN_SC);
            const uint8_t *lane_codes = p->codes + (size_t)s * CODES + 256 * l + ahead;
#pragma GCC unroll 4
            for (int o = 0; o < 256; o += 64) _mm_prefetch((const char *)(lane_codes + o), _MM_HINT_T0);
            __m512i si[TT_MAX];
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) si[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int m = 0; m < 8; m++) {
                const __m512i w = codes_reg(p, s, l, m);
#pragma GCC unroll 4
                for (int t = 0; t < TT; t++) {
                    const uint8_t *xb = xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_KEPT_K_ACT_BLOCK + 32 * m + 4 * l;
                    si[t] = _mm512_dpwssd_epi32(si[t], _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, plumb__bcast32(xb)), sc[m]);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) acc[t] = _mm512_fmadd_ps(dp[2 * t], _mm512_cvtepi32_ps(si[t]), acc[t]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) lanes[l][t] = acc[t];
    }
#pragma GCC unroll 1
    for (int k = 0; k < 4; k++) { /* the four lanes of min products */
        __m512 acc[TT_MAX];
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) acc[t] = _mm512_setzero_ps();
        for (int64_t s = 0; s < nsb; s++) {
            const __m512 *dp = (const __m512 *)(const void *)(scratch + (size_t)s * PLUMB_GEMM_K_RUN_BYTES + RUN_DP);
            const __m512i mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p->mins + (size_t)s * MINS + 32 * k)));
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) {
                const uint8_t *xs = xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_KEPT_K_ACT_BLOCK;
                acc[t] = _mm512_fmadd_ps(dp[2 * t + 1],
                                         _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(_mm512_setzero_si512(), mn, plumb__bcast32(xs + ACT_S32 + 4 * k))),
                                         acc[t]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) lanes[8 + k][t] = acc[t];
    }
#pragma GCC unroll 4
    for (int t = 0; t < TT; t++) {
        /* hsum8's order: ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)); plus (m0 + m2) + (m1 + m3) */
        const __m512 a = _mm512_add_ps(_mm512_add_ps(lanes[0][t], lanes[4][t]), _mm512_add_ps(lanes[2][t], lanes[6][t]));
        const __m512 b = _mm512_add_ps(_mm512_add_ps(lanes[1][t], lanes[5][t]), _mm512_add_ps(lanes[3][t], lanes[7][t]));
        const __m512 r = _mm512_add_ps(_mm512_add_ps(a, b),
                                       _mm512_add_ps(_mm512_add_ps(lanes[8][t], lanes[10][t]), _mm512_add_ps(lanes[9][t], lanes[11][t])));
        _mm512_mask_storeu_ps(out + (size_t)t * os, msk, r);
    }
}

void plumb__gemm16_kept_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch) {
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const int64_t nsb = n / 256;
    const planes p = planes_of(wp, nsb);
    const size_t group = (size_t)nsb * (CODES + SCALES + MINS + DS); /* the next group's distance */
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) tile(nsb, &p, group, x + (size_t)t * xps, xps, 4, out + (size_t)t * os, os, m, scratch);
    if (T - t == 3) tile(nsb, &p, group, x + (size_t)t * xps, xps, 3, out + (size_t)t * os, os, m, scratch);
    else if (T - t == 2) tile(nsb, &p, group, x + (size_t)t * xps, xps, 2, out + (size_t)t * os, os, m, scratch);
    else if (T - t == 1) tile(nsb, &p, group, x + (size_t)t * xps, xps, 1, out + (size_t)t * os, os, m, scratch);
}

#endif
