/* x86_avx512_gemm_kept.c — the AVX-512 VNNI GEMM's kept layout of Q4_0, Q5_0 and Q8_0 weights:
 * groups of 16 rows interleaved lane by lane as plumb__gemm16's layout (x86_avx512_gemm.c), but
 * with the file's bits, so the copy a context keeps (cpu_repack.c) is exactly as large as the
 * weights.
 *
 A group of 16 rows of nb blocks (32 values each) is three planes, so that every register
 * loads from within one cache line:
 *   codes, per block:  Q4_0, Q5_0: 32 l: lane l's codes (values 4 l .. 4 l + 3 of the 16 rows:
 *                      byte b = 4 r + e of a lane register) as nibbles, byte j holding
 *                      b = j in its low and b = j + 32 in its high nibble (256 bytes);
 *                      Q8_0: 64 l: lane l's register (q + 128; 512);
 *   Q5_0, per block:   8 l: lane l's fifth bits, bit b for byte b (64 bytes);
 *   scales, per block: the 16 d as F16 (32 bytes).
 * 288, 352 and 544 bytes per block: 16 times the file's 18, 22 and 34.
 *
 * A lane's register is made in four operations (a broadcast load of the nibbles, a shift of
 * the upper half by 4, a mask, the fifth bits or-ed in under a mask register, and the offset
 * that makes it q + 128). Batches of a few tokens run from this layout directly
 * (plumb__gemm16_kept_*: every weight register serves each of the batch's tokens, the
 * activations' side giving each lane's bias, plumb__gemm16_prep_kept); prompts expand each group
 * once to plumb__gemm16's layout (plumb__gemm16_unkeep_*) and run that. Both give the one-row
 * kernels' bits: the same integer sums, the same float steps. */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>

#define ROWS PLUMB_GEMM_ROWS
enum { K_Q4_0, K_Q5_0, K_Q8_0 };

static size_t code_bytes(int kind) { return kind == K_Q8_0 ? 512 : 256; }

/* A group's planes for n values per row. */
typedef struct planes {
    uint8_t *codes, *bits, *scales;
} planes;
static inline planes planes_of(int kind, const void *group, int64_t n) {
    uint8_t *b = (uint8_t *)(uintptr_t)group;
    const size_t nb = (size_t)(n / 32);
    uint8_t *bits = b + nb * code_bytes(kind);
    return (planes){b, bits, bits + (kind == K_Q5_0 ? nb * 64 : 0)};
}

/* One row's block of the file as 32 codes (Q4_0: 0..15, Q5_0: 0..31, Q8_0: q + 128) in element
 * order, and its d. */
static inline __m256i codes(int kind, const uint8_t *b, uint16_t *d) {
    memcpy(d, b, 2);
    if (kind == K_Q8_0) return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(b + 2)), _mm256_set1_epi8((char)0x80));
    const uint8_t *qs = b + (kind == K_Q5_0 ? 6 : 2);
    const __m128i q = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(0x0F);
    __m256i c = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
    if (kind == K_Q5_0) { /* element j's fifth bit is bit j of qh */
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        c = _mm256_or_si256(c, _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(0x10)));
    }
    return c;
}

/* File rows (ws bytes apart; rows from nrows on zero) to the kept layout: each block's 16 rows
 * of codes, 8 dwords each, transposed so that register l holds dword l of every row. */
static void keep(int kind, const void *w, size_t ws, int nrows, void *out, int64_t n) {
    const size_t fb = kind == K_Q4_0 ? 18 : kind == K_Q5_0 ? 22 : 34;
    const planes p = planes_of(kind, out, n);
    const __m512i rows8 = _mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120);
    for (int64_t i = 0; i < n / 32; i++) {
        _Alignas(64) uint32_t c[ROWS * 8]; /* row r's codes at dwords 8 r .. 8 r + 7 */
        uint16_t d[ROWS];
        for (int r = 0; r < ROWS; r++) {
            d[r] = 0;
            const __m256i v = r < nrows ? codes(kind, (const uint8_t *)w + (size_t)r * ws + (size_t)i * fb, &d[r])
                                        : _mm256_set1_epi8(kind == K_Q8_0 ? (char)0x80 : kind == K_Q5_0 ? 16 : 8); /* q = 0 */
            _mm256_store_si256((__m256i *)(void *)(c + 8 * r), v);
        }
        memcpy(p.scales + (size_t)i * 32, d, 32);
        uint8_t *o = p.codes + (size_t)i * code_bytes(kind);
        for (int l = 0; l < 8; l++) {
            const __m512i reg = _mm512_i32gather_epi32(_mm512_add_epi32(rows8, _mm512_set1_epi32(l)), c, 4);
            if (kind == K_Q8_0) {
                _mm512_storeu_si512(o + 64 * l, reg);
                continue;
            }
            const __m256i lo = _mm512_castsi512_si256(reg), hi = _mm512_extracti64x4_epi64(reg, 1);
            const __m256i m4 = _mm256_set1_epi8(0x0F);
            _mm256_storeu_si256((__m256i *)(o + 32 * l),
                                _mm256_or_si256(_mm256_and_si256(lo, m4), _mm256_slli_epi16(_mm256_and_si256(hi, m4), 4)));
            if (kind == K_Q5_0) {
                const uint64_t hb = _mm512_test_epi8_mask(reg, _mm512_set1_epi8(0x10));
                memcpy(p.bits + (size_t)i * 64 + 8 * l, &hb, 8);
            }
        }
    }
}

/* Lane l's register of block i: q + 128 for the 16 rows' four values. */
static inline __attribute__((always_inline)) __m512i lane(int kind, const planes *p, int64_t i, int l) {
    const uint8_t *blk = p->codes + (size_t)i * code_bytes(kind);
    if (kind == K_Q8_0) return _mm512_loadu_si512(blk + 64 * l);
    const __m512i nib = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 32 * l)));
    /* the upper 32 bytes take the high nibbles */
    const __m512i sh = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    /* Q4_0 q = code - 8, Q5_0 q = code - 16 */
    __m512i v = _mm512_add_epi8(_mm512_and_si512(_mm512_srlv_epi64(nib, sh), _mm512_set1_epi8(0x0F)),
                                _mm512_set1_epi8(kind == K_Q5_0 ? 112 : 120));
    if (kind == K_Q5_0) {
        uint64_t hb;
        memcpy(&hb, p->bits + (size_t)i * 64 + 8 * l, 8);
        v = _mm512_mask_add_epi8(v, _cvtu64_mask64(hb), v, _mm512_set1_epi8(0x10));
    }
    return v;
}

static inline __attribute__((always_inline)) __m512 scales(const planes *p, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p->scales + (size_t)i * 32)));
}

/* A kept group to plumb__gemm16's layout: its scales, its lanes' weights (q + 128 here, signed
 * there) and their biases (plumb__gemm16_pack_block). */
static inline __attribute__((always_inline)) void unkeep(int kind, const void *kept, void *out, int64_t n) {
    const planes p = planes_of(kind, kept, n);
    for (int64_t i = 0; i < n / 32; i++) {
        _Alignas(64) float sc[ROWS];
        _Alignas(64) uint8_t lanes[8 * 64];
        _mm512_store_ps(sc, scales(&p, i));
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) _mm512_store_si512(lanes + 64 * l, _mm512_xor_si512(lane(kind, &p, i, l), _mm512_set1_epi8((char)0x80)));
        plumb__gemm16_pack_block(sc, lanes, (uint8_t *)out + (size_t)i * PLUMB_GEMM_BLOCK);
    }
}

/* Batches of a few tokens stream the weights from memory: a tile prefetches the block this many
 * bytes ahead (in blocks: 14 of Q4_0, 11 of Q5_0, 7 of Q8_0), in each of its three planes at
 * that block's place (the same distance in bytes added to every plane fetched fifth bits and
 * scales of blocks long past or not yet needed; Intel Xeon (Ice Lake), tokens interleaved in one
 * process: tg +2-3% for Qwen2.5-Coder 0.5B and Gemma 3 270M on one and two threads). */
#ifndef KEPT_PREFETCH
#define KEPT_PREFETCH 4096
#endif

static size_t block_bytes(int kind) { return code_bytes(kind) + (kind == K_Q5_0 ? 64 : 0) + 32; }

/* Block j's lines in every plane of the group of nb blocks at g, or, for j from nb on, of the
 * groups after it (a matmul's groups lie one after the other; the last one's prefetches past
 * its end are harmless). */
static inline __attribute__((always_inline)) void prefetch_block(int kind, const uint8_t *g, int64_t nb, int64_t j) {
    for (; j >= nb; j -= nb) g += (size_t)nb * block_bytes(kind);
    const planes q = planes_of(kind, g, nb * 32);
    const uint8_t *c = q.codes + (size_t)j * code_bytes(kind);
#pragma GCC unroll 8
    for (size_t o = 0; o < code_bytes(kind); o += 64) _mm_prefetch((const char *)(c + o), _MM_HINT_T0);
    if (kind == K_Q5_0) _mm_prefetch((const char *)(q.bits + (size_t)j * 64), _MM_HINT_T0);
    if (j % 2 == 0) _mm_prefetch((const char *)(q.scales + (size_t)j * 32), _MM_HINT_T0);
}

/* A line to L1, or to L2 only. */
static inline __attribute__((always_inline)) void fetch(const uint8_t *p, bool l2) {
    if (l2) _mm_prefetch((const char *)p, _MM_HINT_T1);
    else _mm_prefetch((const char *)p, _MM_HINT_T0);
}

/* Half h's lines (lanes 4 h .. 4 h + 3) of block j in every plane, as prefetch_block (to L2
 * only with l2): the two passes of tile4 stream their own halves of the group, each ahead of
 * itself. */
static inline __attribute__((always_inline)) void prefetch_half(int kind, const uint8_t *g, int64_t nb, int64_t j, int h,
                                                                bool l2) {
    for (; j >= nb; j -= nb) g += (size_t)nb * block_bytes(kind);
    const planes q = planes_of(kind, g, nb * 32);
    const size_t half = code_bytes(kind) / 2;
    const uint8_t *c = q.codes + (size_t)j * code_bytes(kind) + half * (size_t)h;
#pragma GCC unroll 4
    for (size_t o = 0; o < half; o += 64) fetch(c + o, l2);
    if (h == 0 && kind == K_Q5_0) fetch(q.bits + (size_t)j * 64, l2);
    if (h == 0 && j % 2 == 0) fetch(q.scales + (size_t)j * 32, l2);
}

static inline int32_t load_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 16 rows x TT tokens, the weight registers made from the kept block */
static inline __attribute__((always_inline)) void tile(int kind, int64_t nb, const planes *p, int64_t ahead,
                                                       const uint8_t *xp, size_t xps, const int TT, float *out, size_t os,
                                                       __mmask16 m) {
    __m512 acc[3][8];
#pragma GCC unroll 3
    for (int t = 0; t < TT; t++)
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) acc[t][l] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++, xp += PLUMB_GEMM_ACT_BLOCK) {
        /* the block ahead blocks on, in this group or the next */
        prefetch_block(kind, p->codes, nb, i + ahead);
        __m512 d[3];
        plumb__scale_products(scales(p, i), xp, xps, TT, d);
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            const __m512i w = lane(kind, p, i, l);
#pragma GCC unroll 3
            for (int t = 0; t < TT; t++) {
                const uint8_t *xb = xp + (size_t)t * xps;
                const __m512i s = _mm512_dpbusd_epi32(_mm512_set1_epi32(load_i32(xb + 32 + 4 * l)), w,
                                                      _mm512_set1_epi32(load_i32(xb + 4 * l)));
                acc[t][l] = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(s), acc[t][l]);
            }
        }
    }
#pragma GCC unroll 3
    for (int t = 0; t < TT; t++) {
        /* hsum8's order: ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)) */
        const __m512 a = _mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][4]), _mm512_add_ps(acc[t][2], acc[t][6]));
        const __m512 b = _mm512_add_ps(_mm512_add_ps(acc[t][1], acc[t][5]), _mm512_add_ps(acc[t][3], acc[t][7]));
        _mm512_mask_storeu_ps(out + (size_t)t * os, m, _mm512_add_ps(a, b));
    }
}

/* 16 rows x 4 tokens in two passes over the group's blocks, lanes 0-3 and then 4-7: 16
 * accumulators a pass, where all eight lanes of four tokens would need 32. Four tokens went as
 * tiles of 3 + 1 before, the second one reading the group again from the cache with the
 * weights' stream bunched into it; each pass here streams its own half of every block, ahead of
 * itself. Intel Xeon (Ice Lake), two threads, 4 tokens against 178 MB of weights, both forms
 * interleaved in one process: Q8_0 11.4 -> 10.1 ms, Q5_0 11.9 -> 9.6 ms (the same bits). The
 * first pass's lanes wait in memory for hsum8's fold. */
static inline __attribute__((always_inline)) void tile4(int kind, int64_t nb, const planes *p, int64_t ahead,
                                                        const uint8_t *xp, size_t xps, float *out, size_t os, __mmask16 m) {
    __m512 first[4][4], acc[4][4];
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++)
#pragma GCC unroll 4
            for (int l = 0; l < 4; l++) acc[t][l] = _mm512_setzero_ps();
        const uint8_t *x = xp;
        for (int64_t i = 0; i < nb; i++, x += PLUMB_GEMM_ACT_BLOCK) {
            prefetch_half(kind, p->codes, nb, i + ahead, h, false);
            /* Q8_0's stream (the most bytes for its work) also to L2 twice as far ahead: Gemma 3
             * 270M's head, four tokens, two threads of an Ice Lake Xeon, 9.5-10.4 -> 8.6-10.0 ms
             * (Q5_0, whose four tokens are bound by the lanes' making, gains nothing) */
            if (kind == K_Q8_0 && ahead != nb) prefetch_half(kind, p->codes, nb, i + 2 * ahead, h, true);
            __m512 d[4];
            plumb__scale_products(scales(p, i), x, xps, 4, d);
#pragma GCC unroll 4
            for (int l4 = 0; l4 < 4; l4++) {
                const int l = 4 * h + l4;
                const __m512i w = lane(kind, p, i, l);
#pragma GCC unroll 4
                for (int t = 0; t < 4; t++) {
                    const uint8_t *xb = x + (size_t)t * xps;
                    const __m512i s = _mm512_dpbusd_epi32(_mm512_set1_epi32(load_i32(xb + 32 + 4 * l)), w,
                                                          _mm512_set1_epi32(load_i32(xb + 4 * l)));
                    acc[t][l4] = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(s), acc[t][l4]);
                }
            }
        }
        if (h == 0)
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++)
#pragma GCC unroll 4
                for (int l = 0; l < 4; l++) first[t][l] = acc[t][l];
    }
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++) {
        /* hsum8's order: ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)) */
        const __m512 a = _mm512_add_ps(_mm512_add_ps(first[t][0], acc[t][0]), _mm512_add_ps(first[t][2], acc[t][2]));
        const __m512 b = _mm512_add_ps(_mm512_add_ps(first[t][1], acc[t][1]), _mm512_add_ps(first[t][3], acc[t][3]));
        _mm512_mask_storeu_ps(out + (size_t)t * os, m, _mm512_add_ps(a, b));
    }
}

static inline __attribute__((always_inline)) void run(int kind, int64_t n, const void *wp, const void *xp, size_t xps, int64_t T,
                                                      float *out, size_t os, int nrows) {
    const int64_t nb = n / 32;
    const __mmask16 m = nrows >= ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nrows) - 1);
    const planes p = planes_of(kind, wp, n);
    /* the first tile prefetches KEPT_PREFETCH bytes ahead; the others, which find the group in
     * the cache, the next group's blocks. Tiles of four tokens while four remain, then of three
     * (three tokens went as 2 + 1 before: on an Ice Lake Xeon one tile of three is 15-22% faster
     * for the server's three streams, Gemma 3 270M and Qwen2.5-Coder 0.5B on two threads) */
    const int64_t first = (int64_t)(KEPT_PREFETCH / block_bytes(kind));
    const uint8_t *x = xp;
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) tile4(kind, nb, &p, t ? nb : first, x + (size_t)t * xps, xps, out + (size_t)t * os, os, m);
    for (; t + 3 <= T; t += 3) tile(kind, nb, &p, t ? nb : first, x + (size_t)t * xps, xps, 3, out + (size_t)t * os, os, m);
    for (; t + 2 <= T; t += 2) tile(kind, nb, &p, t ? nb : first, x + (size_t)t * xps, xps, 2, out + (size_t)t * os, os, m);
    for (; t < T; t++) tile(kind, nb, &p, t ? nb : first, x + (size_t)t * xps, xps, 1, out + (size_t)t * os, os, m);
}

#define KEPT_FUNCS(name, kind)                                                                                          \
    void plumb__gemm16_keep_##name(const void *w, size_t ws, int nrows, void *out, int64_t n) {                        \
        keep(kind, w, ws, nrows, out, n);                                                                              \
    }                                                                                                                  \
    void plumb__gemm16_unkeep_##name(const void *kept, void *out, int64_t n) { unkeep(kind, kept, out, n); }           \
    void plumb__gemm16_kept_##name(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out,       \
                                   size_t os, int nrows, void *scratch) {                                              \
        (void)scratch;                                                                                                 \
        run(kind, n, wp, xp, xps, T, out, os, nrows);                                                                  \
    }
KEPT_FUNCS(q4_0, K_Q4_0)
KEPT_FUNCS(q5_0, K_Q5_0)
KEPT_FUNCS(q8_0, K_Q8_0)

#endif
