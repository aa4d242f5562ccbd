/* x86_avx512_gemm_kept_k.c — the AVX-512 VNNI GEMM's kept layouts of Q4_K and Q6_K weights, for
 * batches of fewer than 8 tokens (single tokens included): 16 rows interleaved with the file's
 * bits, so the copy a context keeps (cpu_repack.c) is 1.03 (Q4_K) and 1.00 (Q6_K) times the
 * weights' size. Prompts still pack the file's rows into x86_avx512_gemm_k.c's int16 layout.
 *
 * The reference arithmetic (x86_avx512_gemm_k.c): per super-block, lane l of an output is
 * L_l = sum over sub-blocks m of sc_m times the exact sum of the four products of values
 * 32 m + 4 l .. + 3; then fma(d_w d_x, (float)L_l, acc_l); the mins in four lanes, folded as
 * that kernel folds them. Here the four products of 16 rows come from one vpdpbusd of the
 * codes (unsigned, 0..15) with the token's four activation bytes, and one vpdpwssd multiplies
 * that (it fits int16) by the rows' scales (each as the pair (sc, 0)) and adds it to L_l: the
 * same integers, the same float steps, the same bits. Q6_K: codes 0..63, scales per 16 values
 * (signed), and each lane started at -32 times its two scales times the activation's sums of
 * 16, as that kernel starts it.
 *
 * A group of 16 rows, per super-block, in four planes:
 *   codes:  (l, m) at 256 l + 32 m: the nibbles of the register whose byte b = 4 r + e is row
 *           r's value 32 m + 4 l + e, byte j holding b = j (low) and b = j + 32 (high) (2048);
 *   scales: m at 16 m: the 16 rows' sc_m (128);
 *   mins:   k at 32 k: row r's (mn_2k, mn_2k+1) at 2 r (128);
 *   d:      the 16 d, then the 16 dmin, as F16 (64).
 * Q6_K, per super-block: the codes' low four bits as above (2048); (l, m) at 128 l + 16 m: the
 * register's fifth and sixth bits as two 64-bit masks (1024); group g (16 values) at 16 g: the
 * 16 rows' scales (256); the 16 d as F16 (32). */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>

#define ROWS PLUMB_GEMM_ROWS
#define CODES 2048
/* per super-block: Q4_K's scales, mins, d and dmin; Q6_K's high bits, scales, d */
#define SCALES(q4k) ((q4k) ? 128 : 256)
#define MINS 128
#define HIGH 1024
#define DS(q4k) ((q4k) ? 64 : 32)
/* A prepared activation super-block (plumb__gemm16_prep_sums's): the 256 values (int8, element
 * order), the 16 sums of 16 and the 8 sums of 32 (int16), d and -d. */
#define ACT_BSUMS PLUMB_KSUM_ACT_BSUMS
#define ACT_S32 PLUMB_KSUM_ACT_S32
#define ACT_D PLUMB_KSUM_ACT_D

typedef struct planes {
    const uint8_t *codes, *high, *scales, *mins, *d;
} planes;

static inline planes planes_of(bool q4k, const void *group, int64_t nsb) {
    const uint8_t *b = group;
    const size_t n = (size_t)nsb;
    if (q4k) return (planes){b, NULL, b + n * CODES, b + n * (CODES + 128), b + n * (CODES + 128 + MINS)};
    return (planes){b, b + n * CODES, b + n * (CODES + HIGH), NULL, b + n * (CODES + HIGH + 256)};
}

static void keep(bool q4k, const void *w, size_t ws, int nrows, void *out, int64_t n) {
    const int64_t nsb = n / 256;
    const planes p = planes_of(q4k, out, nsb);
    uint8_t *codes = (uint8_t *)(uintptr_t)p.codes, *high = (uint8_t *)(uintptr_t)p.high;
    uint8_t *scales = (uint8_t *)(uintptr_t)p.scales, *mins = (uint8_t *)(uintptr_t)p.mins, *ds = (uint8_t *)(uintptr_t)p.d;
    const size_t sb = SCALES(q4k), ngroups = q4k ? 8 : 16;
    const __m512i rows64 = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(64));
    for (int64_t s = 0; s < nsb; s++) {
        _Alignas(64) uint32_t c[ROWS * 64]; /* row r's 256 codes at dwords 64 r .. */
        uint16_t d[2 * ROWS];
        for (int r = 0; r < ROWS; r++) {
            if (r >= nrows) {
                memset(c + 64 * r, 0, 256);
                d[r] = d[ROWS + r] = 0;
                for (size_t g = 0; g < ngroups; g++) scales[(size_t)s * sb + 16 * g + (size_t)r] = 0;
                for (int k = 0; k < 4 && q4k; k++) mins[(size_t)s * MINS + 32 * k + 2 * r] = mins[(size_t)s * MINS + 32 * k + 2 * r + 1] = 0;
                continue;
            }
            const uint8_t *a = (const uint8_t *)w + (size_t)r * ws + (size_t)s * (q4k ? 144 : 210);
            if (q4k) {
                memcpy(&d[r], a, 2);
                memcpy(&d[ROWS + r], a + 2, 2);
                int16_t sc[8], mn[8];
                plumb__q4k_scales_mins(a + 4, sc, mn);
                for (int m = 0; m < 8; m++) scales[(size_t)s * sb + 16 * m + r] = (uint8_t)sc[m];
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
            } else {
                memcpy(&d[r], a + 208, 2);
                for (int g = 0; g < 16; g++) scales[(size_t)s * sb + 16 * (size_t)g + (size_t)r] = a[192 + g];
                for (int h = 0; h < 2; h++) {
                    __m256i q[4];
                    plumb__q6k_codes(a, h, q);
                    for (int k = 0; k < 4; k++) _mm256_store_si256((__m256i *)(void *)(c + 64 * r + 32 * h + 8 * k), q[k]);
                }
            }
        }
        memcpy(ds + (size_t)s * DS(q4k), d, (size_t)DS(q4k));
        for (int l = 0; l < 8; l++)
            for (int m = 0; m < 8; m++) { /* dword 8 m + l of every row */
                const __m512i reg = _mm512_i32gather_epi32(_mm512_add_epi32(rows64, _mm512_set1_epi32(8 * m + l)), c, 4);
                const __m256i m4 = _mm256_set1_epi8(0x0F);
                const __m256i lo = _mm256_and_si256(_mm512_castsi512_si256(reg), m4), hi = _mm256_and_si256(_mm512_extracti64x4_epi64(reg, 1), m4);
                _mm256_storeu_si256((__m256i *)(codes + (size_t)s * CODES + 256 * l + 32 * m), _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
                if (!q4k) {
                    const uint64_t b4 = _mm512_test_epi8_mask(reg, _mm512_set1_epi8(0x10)), b5 = _mm512_test_epi8_mask(reg, _mm512_set1_epi8(0x20));
                    memcpy(high + (size_t)s * HIGH + 128 * l + 16 * m, &b4, 8);
                    memcpy(high + (size_t)s * HIGH + 128 * l + 16 * m + 8, &b5, 8);
                }
            }
    }
}

void plumb__gemm16_keep_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n) { keep(true, w, ws, nrows, out, n); }
void plumb__gemm16_keep_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n) { keep(false, w, ws, nrows, out, n); }

/* The register of codes (l, m) of super-block s (Q6_K: with its fifth and sixth bits added). */
static inline __attribute__((always_inline)) __m512i codes_reg(bool q4k, const planes *p, int64_t s, int l, int m) {
    const __m512i nib = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p->codes + (size_t)s * CODES + 256 * l + 32 * m)));
    __m512i v = _mm512_and_si512(_mm512_srlv_epi64(nib, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)), _mm512_set1_epi8(0x0F));
    if (!q4k) {
        uint64_t b[2];
        memcpy(b, p->high + (size_t)s * HIGH + 128 * l + 16 * m, 16);
        v = _mm512_mask_add_epi8(v, _cvtu64_mask64(b[0]), v, _mm512_set1_epi8(0x10));
        v = _mm512_mask_add_epi8(v, _cvtu64_mask64(b[1]), v, _mm512_set1_epi8(0x20));
    }
    return v;
}

#define TT_MAX 4
/* scratch per super-block (PLUMB_GEMM_KEPT_K_RUN_BYTES): the scale products (d_w d_x, then
 * -d_x dmin) per token; the scales as the int32 (sc, 0) (Q4_K 8, Q6_K 16); Q6_K's 8 lanes'
 * starting pairs (-32 sc_2l, -32 sc_2l+1) */
#define RUN_DP 0
#define RUN_SC (2 * TT_MAX * 64)
#define RUN_EXTRA (RUN_SC + 16 * 64)

/* 16 rows x TT tokens, one lane at a time over all super-blocks (x86_avx512_gemm_k.c's order of
 * float steps); ahead: the next group's distance, whose lines are prefetched on the way. */
static inline __attribute__((always_inline)) void tile(bool q4k, int64_t nsb, const planes *p, size_t ahead,
                                                       const uint8_t *xp, size_t xps, const int TT, float *out, size_t os,
                                                       __mmask16 msk, uint8_t *scratch) {
    __m512 lanes[TT_MAX][12];
    const size_t sb = SCALES(q4k);
    for (int64_t s = 0; s < nsb; s++) {
        uint8_t *scr = scratch + (size_t)s * PLUMB_GEMM_KEPT_K_RUN_BYTES;
        __m512 *dp = (__m512 *)(void *)(scr + RUN_DP);
        __m512i *sc = (__m512i *)(void *)(scr + RUN_SC), *extra = (__m512i *)(void *)(scr + RUN_EXTRA);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->d + (size_t)s * DS(q4k))));
        const __m512 dmin = q4k ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->d + (size_t)s * DS(q4k) + 32))) : dw;
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) {
            float dx[2];
            memcpy(dx, xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_KSUM_ACT_BLOCK + ACT_D, 8);
            dp[2 * t] = _mm512_mul_ps(dw, _mm512_set1_ps(dx[0]));
            if (q4k) dp[2 * t + 1] = _mm512_mul_ps(dmin, _mm512_set1_ps(dx[1]));
        }
        const uint8_t *scs = p->scales + (size_t)s * sb;
        if (q4k) {
#pragma GCC unroll 8
            for (int m = 0; m < 8; m++) sc[m] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(scs + 16 * m)));
            _mm_prefetch((const char *)(p->mins + (size_t)s * MINS + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(p->mins + (size_t)s * MINS + 64 + ahead), _MM_HINT_T0);
        } else {
            const __m512i lo16 = _mm512_set1_epi32(0xFFFF), m32 = _mm512_set1_epi32(-32);
#pragma GCC unroll 16
            for (int g = 0; g < 16; g++)
                sc[g] = _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(scs + 16 * g))), lo16);
#pragma GCC unroll 8
            for (int l = 0; l < 8; l++) { /* (-32 sc_2l, -32 sc_2l+1) as int16 pairs */
                const __m512i a = _mm512_mullo_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(scs + 32 * l))), m32);
                const __m512i b = _mm512_mullo_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(scs + 32 * l + 16))), m32);
                extra[l] = _mm512_or_si512(_mm512_and_si512(a, lo16), _mm512_slli_epi32(b, 16));
            }
            _mm_prefetch((const char *)(scs + 128 + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(scs + 192 + ahead), _MM_HINT_T0);
        }
        _mm_prefetch((const char *)(scs + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(scs + 64 + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(p->d + (size_t)s * DS(q4k) + ahead), _MM_HINT_T0);
    }
#pragma GCC unroll 1
    for (int l = 0; l < 8; l++) {
        __m512 acc[TT_MAX];
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) acc[t] = _mm512_setzero_ps();
        for (int64_t s = 0; s < nsb; s++) {
            const uint8_t *scr = scratch + (size_t)s * PLUMB_GEMM_KEPT_K_RUN_BYTES;
            const __m512 *dp = (const __m512 *)(const void *)(scr + RUN_DP);
            const __m512i *sc = (const __m512i *)(const void *)(scr + RUN_SC);
            const uint8_t *lane_codes = p->codes + (size_t)s * CODES + 256 * l + ahead;
#pragma GCC unroll 4
            for (int o = 0; o < 256; o += 64) _mm_prefetch((const char *)(lane_codes + o), _MM_HINT_T0);
            if (!q4k) {
                _mm_prefetch((const char *)(p->high + (size_t)s * HIGH + 128 * l + ahead), _MM_HINT_T0);
                _mm_prefetch((const char *)(p->high + (size_t)s * HIGH + 128 * l + 64 + ahead), _MM_HINT_T0);
            }
            __m512i si[TT_MAX];
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++)
                si[t] = q4k ? _mm512_setzero_si512()
                            : _mm512_dpwssd_epi32(_mm512_setzero_si512(), ((const __m512i *)(const void *)(scr + RUN_EXTRA))[l],
                                                  plumb__bcast32(xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_KSUM_ACT_BLOCK +
                                                                 ACT_BSUMS + 4 * l));
#pragma GCC unroll 8
            for (int m = 0; m < 8; m++) {
                const __m512i w = codes_reg(q4k, p, s, l, m);
                const __m512i scale = q4k ? sc[m] : sc[2 * m + l / 4]; /* Q6_K: 16 values a scale */
#pragma GCC unroll 4
                for (int t = 0; t < TT; t++) {
                    const uint8_t *xb = xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_KSUM_ACT_BLOCK + 32 * m + 4 * l;
                    si[t] = _mm512_dpwssd_epi32(si[t], _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, plumb__bcast32(xb)), scale);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) acc[t] = _mm512_fmadd_ps(dp[2 * t], _mm512_cvtepi32_ps(si[t]), acc[t]);
        }
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) lanes[t][l] = acc[t];
    }
    if (q4k)
#pragma GCC unroll 1
        for (int k = 0; k < 4; k++) { /* the four lanes of min products */
            __m512 acc[TT_MAX];
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) acc[t] = _mm512_setzero_ps();
            for (int64_t s = 0; s < nsb; s++) {
                const __m512 *dp = (const __m512 *)(const void *)(scratch + (size_t)s * PLUMB_GEMM_KEPT_K_RUN_BYTES + RUN_DP);
                const __m512i mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p->mins + (size_t)s * MINS + 32 * k)));
#pragma GCC unroll 4
                for (int t = 0; t < TT; t++) {
                    const uint8_t *xs = xp + (size_t)t * xps + (size_t)s * PLUMB_GEMM_KSUM_ACT_BLOCK;
                    acc[t] = _mm512_fmadd_ps(
                        dp[2 * t + 1],
                        _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(_mm512_setzero_si512(), mn, plumb__bcast32(xs + ACT_S32 + 4 * k))),
                        acc[t]);
                }
            }
#pragma GCC unroll 4
            for (int t = 0; t < TT; t++) lanes[t][8 + k] = acc[t];
        }
#pragma GCC unroll 4
    for (int t = 0; t < TT; t++) _mm512_mask_storeu_ps(out + (size_t)t * os, msk, plumb__fold_k_lanes(lanes[t], q4k ? lanes[t] + 8 : NULL));
}

/* Super-block j's lines in every plane of the group of nsb super-blocks at g, or, for j from nsb
 * on, of the groups after it (they lie one after the other). */
static inline __attribute__((always_inline)) void prefetch_sb(bool q4k, const uint8_t *g, int64_t nsb, int64_t j) {
    for (; j >= nsb; j -= nsb) g += (size_t)nsb * (size_t)PLUMB_GEMM_KEPT_K_BLOCK(q4k);
    const planes q = planes_of(q4k, g, nsb);
    const size_t s = (size_t)j;
    for (int o = 0; o < CODES; o += 64) _mm_prefetch((const char *)(q.codes + s * CODES + o), _MM_HINT_T0);
    if (!q4k)
        for (int o = 0; o < HIGH; o += 64) _mm_prefetch((const char *)(q.high + s * HIGH + o), _MM_HINT_T0);
    for (int o = 0; o < SCALES(q4k); o += 64) _mm_prefetch((const char *)(q.scales + s * SCALES(q4k) + o), _MM_HINT_T0);
    if (q4k)
        for (int o = 0; o < MINS; o += 64) _mm_prefetch((const char *)(q.mins + s * MINS + o), _MM_HINT_T0);
    _mm_prefetch((const char *)(q.d + s * DS(q4k)), _MM_HINT_T0);
}

/* One token, super-block after super-block (the group is read once, in order, prefetched
 * KEPT_K_AHEAD super-blocks ahead, the next group's first ones at the end): the twelve lanes'
 * float chains in registers, each over the super-blocks in order as tile's. */
#define KEPT_K_AHEAD 4
static inline __attribute__((always_inline)) void tile1(bool q4k, int64_t nsb, const planes *p, const uint8_t *x, float *out,
                                                        __mmask16 msk) {
    __m512 lane[12];
#pragma GCC unroll 12
    for (int l = 0; l < 12; l++) lane[l] = _mm512_setzero_ps();
    const size_t sb = SCALES(q4k);
    for (int64_t s = 0; s < nsb; s++) {
        prefetch_sb(q4k, p->codes, nsb, s + KEPT_K_AHEAD);
        const uint8_t *xs = x + (size_t)s * PLUMB_GEMM_KSUM_ACT_BLOCK, *scs = p->scales + (size_t)s * sb;
        float dx[2];
        memcpy(dx, xs + ACT_D, 8);
        const __m512 dp = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->d + (size_t)s * DS(q4k)))),
                                        _mm512_set1_ps(dx[0]));
        const __m512i lo16 = _mm512_set1_epi32(0xFFFF), m32 = _mm512_set1_epi32(-32);
        __m512i sc[16]; /* the scales as int32 (sc, 0) */
        for (int g = 0; g < (q4k ? 8 : 16); g++)
            sc[g] = q4k ? _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(scs + 16 * g)))
                        : _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(scs + 16 * g))), lo16);
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            __m512i si = _mm512_setzero_si512();
            if (!q4k) { /* (-32 sc_2l, -32 sc_2l+1) with the sums of 16 2l, 2l + 1 */
                const __m512i a = _mm512_mullo_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(scs + 32 * l))), m32);
                const __m512i b = _mm512_mullo_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(scs + 32 * l + 16))), m32);
                si = _mm512_dpwssd_epi32(si, _mm512_or_si512(_mm512_and_si512(a, lo16), _mm512_slli_epi32(b, 16)),
                                         plumb__bcast32(xs + ACT_BSUMS + 4 * l));
            }
#pragma GCC unroll 8
            for (int m = 0; m < 8; m++) {
                si = _mm512_dpwssd_epi32(si, _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes_reg(q4k, p, s, l, m), plumb__bcast32(xs + 32 * m + 4 * l)),
                                         sc[q4k ? m : 2 * m + l / 4]);
            }
            lane[l] = _mm512_fmadd_ps(dp, _mm512_cvtepi32_ps(si), lane[l]);
        }
        if (q4k) {
            const __m512 dpm = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->d + (size_t)s * DS(q4k) + 32))),
                                             _mm512_set1_ps(dx[1]));
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m512i mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p->mins + (size_t)s * MINS + 32 * k)));
                lane[8 + k] = _mm512_fmadd_ps(
                    dpm, _mm512_cvtepi32_ps(_mm512_dpwssd_epi32(_mm512_setzero_si512(), mn, plumb__bcast32(xs + ACT_S32 + 4 * k))), lane[8 + k]);
            }
        }
    }
    _mm512_mask_storeu_ps(out, msk, plumb__fold_k_lanes(lane, q4k ? lane + 8 : NULL));
}

static inline __attribute__((always_inline)) void run(bool q4k, int64_t n, const void *wp, const void *xp, size_t xps,
                                                      int64_t T, float *out, size_t os, int nrows, void *scratch) {
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const int64_t nsb = n / 256;
    const planes p = planes_of(q4k, wp, nsb);
    const size_t group = (size_t)nsb * (size_t)PLUMB_GEMM_KEPT_K_BLOCK(q4k); /* the next group's distance */
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) tile(q4k, nsb, &p, group, x + (size_t)t * xps, xps, 4, out + (size_t)t * os, os, m, scratch);
    if (T - t == 3) tile(q4k, nsb, &p, group, x + (size_t)t * xps, xps, 3, out + (size_t)t * os, os, m, scratch);
    else if (T - t == 2) tile(q4k, nsb, &p, group, x + (size_t)t * xps, xps, 2, out + (size_t)t * os, os, m, scratch);
    else if (T - t == 1) tile1(q4k, nsb, &p, x + (size_t)t * xps, out + (size_t)t * os, m);
}

void plumb__gemm16_kept_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch) {
    run(true, n, wp, xp, xps, T, out, os, nrows, scratch);
}
void plumb__gemm16_kept_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch) {
    run(false, n, wp, xp, xps, T, out, os, nrows, scratch);
}

#endif
