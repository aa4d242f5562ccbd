/* x86_avx2.c — AVX2 (and, through x86_avx512.c, AVX-512 VNNI) dot products for the weight types of common GGUF files (Q4_0, Q5_0,
 * Q8_0 with Q8_0 activations; Q4_1, Q5_1 with Q8_1; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K with Q8_K activations). Compiled with -mavx2 -mfma
 * -mf16c and used only when cpuid reports those features; every function is tested against
 * generic.c. Integer sums inside a block are exact (no int16 saturation is possible with
 * these ranges); block results are accumulated in a fixed order per row. */
#include "backend/cpu/kernels/kernels.h"

/* x86_avx512.c compiles this file again with AVX-512 VNNI enabled under another name. */
#ifndef PLUMB_X86_SET
#define PLUMB_X86_SET plumb__kernels_avx2_build
#define PLUMB_X86_SET_NAME "avx2"
#endif

/* Bytes ahead of the block being read that the decode kernels prefetch: decoding streams
 * each weight row once, and the hardware prefetcher alone keeps too few lines in flight (the
 * output head takes twice as long without). All measured on Zen 3 with plumb's per-op profile
 * (PLUMB_PROFILE=1, tg128, medians of interleaved runs). The legacy one-row and four-row
 * kernels, and the AVX-512 set's two-row ones, use PLUMB_PREFETCH. */
#ifndef PLUMB_PREFETCH
#define PLUMB_PREFETCH 1024
#endif
/* The one-row Q8_0 kernel, which decodes the output head (680-byte rows, most of the bytes
 * read per token) as one stream: 3072 takes the head from 11.6 to 9.2 ms on two threads and
 * from 18.7 to 16.1 ms on one, against the two-row kernel at 1024 (whose two streams were best
 * at 1024, 2048 being 20% slower); 1536 to 6144 come within 10%. */
#ifndef PLUMB_PREFETCH_Q8
#define PLUMB_PREFETCH_Q8 3072
#endif
/* The K-quant one-row and four-row kernels, whose super-blocks (144 and 210 bytes) are
 * prefetched whole (prefetch_block): against one line per block at 1024, 2048 takes
 * Q4_K 1024 x 640 from 50 to 32 us and Q6_K 2048 x 640 from 91 to 77 us on two threads (85 to
 * 47 and 175 to 123 on one); 1024 and 1536 come within a few percent. */
#ifndef PLUMB_PREFETCH_K
#define PLUMB_PREFETCH_K 2048
#endif
/* The AVX2 set's two-row Q4_0/Q5_0 kernels, which are slower per byte than memory: 2048
 * against 1024 takes Q5_0 640 x 2048 from 68 to 64 us on two threads, 128 to 118 on one (their
 * one-row kernel, one stream at 3072, is slower still: 79 us). */
#ifndef PLUMB_PREFETCH_L
#define PLUMB_PREFETCH_L 2048
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include "backend/cpu/kernels/x86_kquant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Prefetches the `bytes` of a K-quant super-block PLUMB_PREFETCH_K bytes ahead of a, every
 * cache line of it: one line per block would leave about half of a 144- or 210-byte block's
 * lines to the hardware, and single-token matmuls of these types wait on memory. */
static inline void prefetch_block(const uint8_t *a, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)a + PLUMB_PREFETCH_K + o, _MM_HINT_T0);
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Sum of products of 32 signed bytes, as 8 int32 lanes (lane l: bytes 4l..4l+3). VNNI's
 * dpbusd forms the same four-byte sums in one instruction. */
static inline __m256i dot_s8(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x), sy = _mm256_sign_epi8(y, x);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1));
#endif
}

/* acc + madd(p, s): int16 pairs multiplied and summed into int32 lanes (one dpwssd with VNNI;
 * the same integers either way). */
static inline __m256i madd_acc(__m256i acc, __m256i p, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpwssd_epi32(acc, p, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
#endif
}

/* Q4_K mins times the activation's 16-value sums, for the four pairs of 32-value sub-blocks:
 * lane k = mn[2k] (bs[4k] + bs[4k+1]) + mn[2k+1] (bs[4k+2] + bs[4k+3]). mins16 holds each
 * sub-block's min twice (one per 16-value sum). */
static inline __m128i q4k_min_products(const uint8_t *bsums, __m256i mins16) {
    const __m256i l = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), mins16);
    return _mm_hadd_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1));
}

/* An F16 value at p, converted exactly, in all 8 lanes (a broadcast load and one conversion). */
static inline __m256 bcast_h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* The product of two F16 block scales, in all 8 lanes: each converted exactly, then one
 * float multiply (as h2f(a) * h2f(b)), without a trip through scalar registers. */
static inline __m256 scale2(const uint8_t *a, const uint8_t *b) {
    uint16_t ha, hb;
    memcpy(&ha, a, 2);
    memcpy(&hb, b, 2);
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_set1_epi16((short)ha)), _mm256_cvtph_ps(_mm_set1_epi16((short)hb)));
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles. */
static inline __m256i unpack_nibbles(const uint8_t *p) {
    /* the 16 bytes in both halves, the upper half shifted down a nibble */
    const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi64(t, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 32 bytes, 0xFF where the bit is set. */
static inline __m256i bits_to_bytes(const uint8_t *p) {
    uint32_t x;
    memcpy(&x, p, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)x), _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

static float dot_q8_0(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++, a += 34, b += 34) {
        _mm_prefetch((const char *)a + PLUMB_PREFETCH_Q8, _MM_HINT_T0);
        const __m256i p = dot_s8(_mm256_loadu_si256((const __m256i *)(a + 2)), _mm256_loadu_si256((const __m256i *)(b + 2)));
        acc = _mm256_fmadd_ps(scale2(a, b), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum(acc);
}

static float dot_q4_0(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t i = 0; i < n / 32; i++, a += 18, b += 34) {
        _mm_prefetch((const char *)a + PLUMB_PREFETCH, _MM_HINT_T0);
        const __m256i q = _mm256_sub_epi8(unpack_nibbles(a + 2), eight);
        const __m256i p = dot_s8(q, _mm256_loadu_si256((const __m256i *)(b + 2)));
        acc = _mm256_fmadd_ps(scale2(a, b), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum(acc);
}

/* Q5_0 values of a block: nibble + 16 * bit - 16, i.e. where the bit is clear, add -16
 * (0xF0 as int8). AVX-512 BW/VL take the 32 bits as a byte mask directly. */
static inline __m256i decode_q5_0(const uint8_t *a) {
    const __m256i nib = unpack_nibbles(a + 6), minus16 = _mm256_set1_epi8((char)0xF0);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    uint32_t bits;
    memcpy(&bits, a + 2, 4);
    return _mm256_mask_blend_epi8((__mmask32)bits, _mm256_or_si256(nib, minus16), nib);
#else
    return _mm256_or_si256(nib, _mm256_andnot_si256(bits_to_bytes(a + 2), minus16));
#endif
}

static float dot_q5_0(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++, a += 22, b += 34) {
        _mm_prefetch((const char *)a + PLUMB_PREFETCH, _MM_HINT_T0);
        const __m256i q = decode_q5_0(a);
        const __m256i p = dot_s8(q, _mm256_loadu_si256((const __m256i *)(b + 2)));
        acc = _mm256_fmadd_ps(scale2(a, b), _mm256_cvtepi32_ps(p), acc);
    }
    return hsum(acc);
}

/* plumb__widen for the legacy types with the decoders above (the same bytes). */
static void widen(int type, const void *w, void *out, int64_t n) {
    const uint8_t *a = w;
    uint8_t *o = out;
    const size_t wbytes = type == PLUMB_TYPE_Q8_0 ? 34 : type == PLUMB_TYPE_Q5_0 ? 22 : 18;
    if (type != PLUMB_TYPE_Q4_0 && type != PLUMB_TYPE_Q5_0 && type != PLUMB_TYPE_Q8_0) {
        plumb__widen(type, w, out, n);
        return;
    }
    for (int64_t i = 0; i < n / 32; i++, a += wbytes, o += PLUMB_WIDE_BLOCK) {
        const __m256i q = type == PLUMB_TYPE_Q8_0   ? _mm256_loadu_si256((const __m256i *)(a + 2))
                          : type == PLUMB_TYPE_Q5_0 ? decode_q5_0(a)
                                                    : _mm256_sub_epi8(unpack_nibbles(a + 2), _mm256_set1_epi8(8));
        const float d = h2f(a);
        memcpy(o, &d, 4);
        _mm256_storeu_si256((__m256i *)(o + 4), q);
    }
}

static float wide_dot(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++, a += PLUMB_WIDE_BLOCK, b += 34) {
        const __m256i p = dot_s8(_mm256_loadu_si256((const __m256i *)(a + 4)), _mm256_loadu_si256((const __m256i *)(b + 2)));
        const __m256 sc = _mm256_mul_ps(_mm256_broadcast_ss((const float *)a), _mm256_set1_ps(h2f(b)));
        acc = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), acc);
    }
    return hsum(acc);
}

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* The AVX-512 set's act_prep4: after plumb__act_scales4's scales (n / 32 * 128 bytes), the four
 * rows' values interleaved per block (block i: rows 0-3's 32 bytes each, 128 bytes), then per
 * block and row the eight sums of four values times -128 as int32 (128 bytes per block). With
 * them wide_dot4 takes a weight block as unsigned bytes q + 128 (dpbusd's unsigned operand,
 * no sign fix per column) and starts each column's sums at -128 * (its sums of four):
 * sum((q + 128) y) - 128 sum(y) is the signed lane sum exactly. */
#define ACT4_AVX512_BLOCK_BYTES 384
static void act_prep4(const void *x, size_t xs, int64_t n, float *xsv) {
    plumb__act_scales4(x, xs, n, xsv);
    const int64_t nb = n / 32;
    int8_t *yi = (int8_t *)(xsv + nb * 32);
    int32_t *nc = (int32_t *)(xsv + nb * 64);
    const __m256i m128 = _mm256_set1_epi8((char)0x80);
    for (int64_t i = 0; i < nb; i++)
        for (int c = 0; c < 4; c++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)((const uint8_t *)x + (size_t)c * xs + (size_t)i * 34 + 2));
            _mm256_storeu_si256((__m256i *)(yi + 128 * i + 32 * c), y);
            const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), m128, y); /* 128 * sums of four */
            _mm256_storeu_si256((__m256i *)(nc + 32 * i + 8 * c), _mm256_sub_epi32(_mm256_setzero_si256(), s));
        }
}

/* Wide weight rows with 4 activation rows, two columns per 512-bit register (one in each
 * half), from act_prep4's interleaved values and sums: each column's lanes get the one-row
 * kernel's integer sums and float operations, in its order. */
static inline __attribute__((always_inline)) void wide_dot4_acc(int64_t n, const void *w, const void *x, size_t xs,
                                                                const float *xsv, __m256 *acc) {
    (void)x, (void)xs;
    const int64_t nb = n / 32;
    const uint8_t *a = w;
    const int8_t *yi = (const int8_t *)(xsv + nb * 32);
    const int32_t *nc = (const int32_t *)(xsv + nb * 64);
    const __m512i m128 = _mm512_set1_epi8((char)0x80);
    __m512 acc01 = _mm512_setzero_ps(), acc23 = acc01;
    for (int64_t i = 0; i < nb; i++, a += PLUMB_WIDE_BLOCK, xsv += 32, yi += 128, nc += 32) {
        const __m512i qu = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a + 4))), m128);
        const __m512 dw = _mm512_set1_ps(*(const float *)a);
        const __m512i p01 = _mm512_dpbusd_epi32(_mm512_loadu_si512(nc), qu, _mm512_loadu_si512(yi));
        const __m512i p23 = _mm512_dpbusd_epi32(_mm512_loadu_si512(nc + 16), qu, _mm512_loadu_si512(yi + 64));
        acc01 = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_loadu_ps(xsv)), _mm512_cvtepi32_ps(p01), acc01);
        acc23 = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_loadu_ps(xsv + 16)), _mm512_cvtepi32_ps(p23), acc23);
    }
    acc[0] = _mm512_castps512_ps256(acc01);
    acc[1] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc01), 1));
    acc[2] = _mm512_castps512_ps256(acc23);
    acc[3] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc23), 1));
}

/* wide_dot4_lanes of two weight rows (w, w + ws) at once: the activation loads are shared and
 * four accumulator chains run side by side; out[0..31] is row 0's lanes, out[32..63] row 1's. */
static void wide_dot4x2_lanes(int64_t n, const void *w, size_t ws, const void *x, size_t xs, const float *xsv,
                              float *out) {
    (void)x, (void)xs;
    const int64_t nb = n / 32;
    const uint8_t *a = w, *a1 = a + ws;
    const int8_t *yi = (const int8_t *)(xsv + nb * 32);
    const int32_t *nc = (const int32_t *)(xsv + nb * 64);
    const __m512i m128 = _mm512_set1_epi8((char)0x80);
    __m512 r0c01 = _mm512_setzero_ps(), r0c23 = r0c01, r1c01 = r0c01, r1c23 = r0c01;
    for (int64_t i = 0; i < nb; i++, a += PLUMB_WIDE_BLOCK, a1 += PLUMB_WIDE_BLOCK, xsv += 32, yi += 128, nc += 32) {
        const __m512i q0 = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a + 4))), m128);
        const __m512i q1 = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a1 + 4))), m128);
        const __m512i y01 = _mm512_loadu_si512(yi), y23 = _mm512_loadu_si512(yi + 64);
        const __m512i n01 = _mm512_loadu_si512(nc), n23 = _mm512_loadu_si512(nc + 16);
        const __m512 s01 = _mm512_loadu_ps(xsv), s23 = _mm512_loadu_ps(xsv + 16);
        const __m512 d0 = _mm512_set1_ps(*(const float *)a), d1 = _mm512_set1_ps(*(const float *)a1);
        r0c01 = _mm512_fmadd_ps(_mm512_mul_ps(d0, s01), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(n01, q0, y01)), r0c01);
        r0c23 = _mm512_fmadd_ps(_mm512_mul_ps(d0, s23), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(n23, q0, y23)), r0c23);
        r1c01 = _mm512_fmadd_ps(_mm512_mul_ps(d1, s01), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(n01, q1, y01)), r1c01);
        r1c23 = _mm512_fmadd_ps(_mm512_mul_ps(d1, s23), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(n23, q1, y23)), r1c23);
    }
    _mm512_storeu_ps(out, r0c01), _mm512_storeu_ps(out + 16, r0c23);
    _mm512_storeu_ps(out + 32, r1c01), _mm512_storeu_ps(out + 48, r1c23);
}
#define PLUMB_HAVE_WIDE_DOT4X2 1
#else
/* The AVX2 set's act_prep4: after plumb__act_scales4's scales (n / 32 * 128 bytes), the four
 * rows' 32 values of each block side by side (128 bytes per block), so that the wide kernel
 * reads them in whole, aligned 32-byte pieces instead of across the 34-byte blocks' cache
 * lines (3-5% off the Q5_0 and Q8_0 prompt matmuls on Zen 3, per-op profile). */
#define ACT4_AVX2_BLOCK_BYTES 256
static void act_prep4(const void *x, size_t xs, int64_t n, float *xsv) {
    plumb__act_scales4(x, xs, n, xsv);
    int8_t *yi = (int8_t *)(xsv + n / 32 * 32);
    for (int64_t i = 0; i < n / 32; i++)
        for (int c = 0; c < 4; c++) memcpy(yi + 128 * i + 32 * c, (const uint8_t *)x + (size_t)c * xs + (size_t)i * 34 + 2, 32);
}

/* Wide weight rows with 4 activation rows (act_prep4's): the weight's |q| and sign pattern are
 * shared, each column runs the one-row kernel's operations. (Four named accumulators: an array
 * of them is stored back to the stack on every block by GCC.) */
static inline __attribute__((always_inline)) void wide_dot4_acc(int64_t n, const void *w, const void *x, size_t xs,
                                                                const float *xsv, __m256 *acc) {
    (void)x, (void)xs;
    const uint8_t *a = w;
    const __m256i *yv = (const __m256i *)(const void *)(xsv + n / 32 * 32);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t i = 0; i < n / 32; i++, a += PLUMB_WIDE_BLOCK, xsv += 32, yv += 4) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(a + 4));
        const __m256i ax = _mm256_sign_epi8(q, q);
        const __m256 dw = _mm256_broadcast_ss((const float *)a);
#define WIDE_COL(acc, k)                                                                                         \
    acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_loadu_ps(xsv + 8 * (k))),                                    \
                          _mm256_cvtepi32_ps(_mm256_madd_epi16(                                                 \
                              _mm256_maddubs_epi16(ax, _mm256_sign_epi8(_mm256_loadu_si256(yv + (k)), q)),      \
                              _mm256_set1_epi16(1))),                                                          \
                          acc)
        WIDE_COL(acc0, 0);
        WIDE_COL(acc1, 1);
        WIDE_COL(acc2, 2);
        WIDE_COL(acc3, 3);
#undef WIDE_COL
    }
    acc[0] = acc0, acc[1] = acc1, acc[2] = acc2, acc[3] = acc3;
}
#endif

static void wide_dot4(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {
    __m256 acc[4];
    wide_dot4_acc(n, w, x, xs, xsv, acc);
    out[0] = hsum(acc[0]), out[1] = hsum(acc[1]), out[2] = hsum(acc[2]), out[3] = hsum(acc[3]);
}

/* Leaving the four sums to hsum8, over many calls at once, keeps their dependency chains off
 * the path from one weight row to the next. */
static void wide_dot4_lanes(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {
    __m256 acc[4];
    wide_dot4_acc(n, w, x, xs, xsv, acc);
    for (int c = 0; c < 4; c++) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

/* Eight lane sets at a time: an 8 x 8 transpose, then hsum's additions across registers. */
/* col[j] lane k = r[k] lane j: an 8 x 8 transpose in three steps of shuffles. */
static inline void transpose8(const __m256 r[8], __m256 col[8]) {
    __m256 t[8], u[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        col[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        col[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

static void hsum8(const float *x, int64_t n, float *out) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8, x += 64) {
        __m256 r[8], col[8]; /* col[j] lane k = element j of set k */
        for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(x + 8 * k);
        transpose8(r, col);
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(col[0], col[4]), _mm256_add_ps(col[2], col[6])),
                                                _mm256_add_ps(_mm256_add_ps(col[1], col[5]), _mm256_add_ps(col[3], col[7]))));
    }
    for (; i < n; i++, x += 8) out[i] = hsum(_mm256_loadu_ps(x));
}

/* The 12 packed scale bytes of a Q4_K/Q5_K super-block as 16 bytes: the eight 6-bit scales,
 * then the eight 6-bit mins (sub-blocks 0-3 keep the low 6 bits of bytes 0-3 and 4-7; 4-7 take
 * a nibble of bytes 8-11 and the top 2 bits of bytes 0-3 or 4-7). Four words of bit
 * arithmetic instead of sixteen byte-by-byte decodes. */
static inline __m128i k4_scales_mins(const uint8_t *p) {
    uint32_t u[3];
    memcpy(u, p, 12);
    const uint32_t low6 = 0x3f3f3f3fu, nib = 0x0f0f0f0fu, top2 = 0x03030303u;
    const uint32_t sc_lo = u[0] & low6, mn_lo = u[1] & low6;
    const uint32_t sc_hi = (u[2] & nib) | (((u[0] >> 6) & top2) << 4);
    const uint32_t mn_hi = ((u[2] >> 4) & nib) | (((u[1] >> 6) & top2) << 4);
    return _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi);
}

/* Each sub-block's min twice as int16 (once per 16-value activation sum), for
 * q4k_min_products, from k4_scales_mins. */
static inline __m256i k4_mins_pairs(__m128i sm) { return _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)); }

/* The eight scales as int16, each broadcast to a register, from k4_scales_mins. */
static inline void k4_scale_vectors(__m128i sm, __m256i *sv) {
    const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    for (int k = 0; k < 8; k++) sv[k] = _mm256_shuffle_epi8(s16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * k)));
}

/* Q4_K, and Q5_K when qh: the same super-block layout with, for Q5_K, a fifth bit per value
 * from the 32 bytes at a + 16 (bit 2c of byte l for the low nibbles of chunk c, bit 2c + 1 for
 * the high ones; values 0..31 stay unsigned for maddubs). The mins as the reference's AVX2
 * kernels take them: Q4_K's in four float lanes of sub-block pairs, summed after the eight;
 * Q5_K's super-block total (an exact integer) fused into one scalar, added last (its compiler
 * fuses summs += dmin * total). */
static inline __attribute__((always_inline)) float dot_k4(int64_t n, const uint8_t *a, const uint8_t *b,
                                                          size_t wbytes, bool qh) {
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps(); /* Q4_K's mins, four lanes of sub-block pairs */
    float summs = 0.0f;              /* Q5_K's mins */
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < n / 256; i++, a += wbytes, b += 292) {
        prefetch_block(a, wbytes);
        float dy;
        memcpy(&dy, b, 4);
        const uint8_t *qs = a + (qh ? 48 : 16);
        const __m256i hb = qh ? _mm256_loadu_si256((const __m256i *)(a + 16)) : _mm256_setzero_si256();
        const int8_t *y = (const int8_t *)(b + 4);
        const __m128i sm = k4_scales_mins(a + 4);
        __m256i sv[8];
        k4_scale_vectors(sm, sv);
        const __m128i mp = q4k_min_products(b + 260, k4_mins_pairs(sm));
        if (qh) { /* Q5_K: the whole super-block's min products as one integer, fused into summs */
            const __m128i t = _mm_add_epi32(mp, _mm_unpackhi_epi64(mp, mp));
            summs = fmaf(-dy * h2f(a + 2), (float)_mm_cvtsi128_si32(_mm_add_epi32(t, _mm_srli_epi64(t, 32))), summs);
        } else {
            acc_m = _mm_fmadd_ps(_mm_set1_ps(-dy * h2f(a + 2)), _mm_cvtepi32_ps(mp), acc_m);
        }
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (qh) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
            }
            const __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(y + 64 * c)));
            const __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 64 * c + 32)));
            sumi = madd_acc(sumi, p0, sv[2 * c]);
            sumi = madd_acc(sumi, p1, sv[2 * c + 1]);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dy * h2f(a)), _mm256_cvtepi32_ps(sumi), acc);
    }
    if (qh) return hsum(acc) + summs;
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    return hsum(acc) + _mm_cvtss_f32(acc_m);
}

static float dot_q4_k(int64_t n, const void *w, const void *x) { return dot_k4(n, w, x, 144, false); }
static float dot_q5_k(int64_t n, const void *w, const void *x) { return dot_k4(n, w, x, 176, true); }

/* Q4_1 with Q8_1 activations: unsigned nibbles times int8, plus the min times the
 * activation block's precomputed d * sum. */
static float dot_q4_1(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w;
    const plumb_q8_1_block *b = x;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, a += 20, b++) {
        _mm_prefetch((const char *)a + PLUMB_PREFETCH, _MM_HINT_T0);
        const __m256i q = unpack_nibbles(a + 4);
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)b->qs)),
                                            _mm256_set1_epi16(1));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(a) * _cvtsh_ss(b->d)), _mm256_cvtepi32_ps(p), acc);
        summs += h2f(a + 2) * _cvtsh_ss(b->s);
    }
    return hsum(acc) + summs;
}

/* F32 and F16 weights as generic.c's dot_f32 and dot_f16 (the reference's order): acc[2 j + h]
 * holds lanes 16 j + 8 h .. + 7 of its 4 x 16 accumulators; F16 weights dot with the
 * activations rounded to F16. */
static inline float fold_sum16(__m256 *acc) {
    for (int h = 0; h < 2; h++) {
        acc[h] = _mm256_add_ps(acc[h], acc[4 + h]);         /* 0 + 2 */
        acc[2 + h] = _mm256_add_ps(acc[2 + h], acc[6 + h]); /* 1 + 3 */
        acc[h] = _mm256_add_ps(acc[h], acc[2 + h]);
    }
    const __m256 t8 = _mm256_add_ps(acc[1], acc[0]);
    const __m128 t4 = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
    const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4)); /* (t4[0] + t4[2]) + (t4[1] + t4[3]) */
    return _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)));
}

static float dot_f32(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    __m256 acc[8];
    for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
    const int64_t body = n & ~(int64_t)63;
    for (int64_t i = 0; i < body; i += 64)
        for (int k = 0; k < 8; k++) acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * k), _mm256_loadu_ps(b + i + 8 * k), acc[k]);
    float s = fold_sum16(acc);
    for (int64_t i = body; i < n; i++) {
        const float p = a[i] * b[i]; /* rounded, then added: not fused */
        s += p;
    }
    return s;
}

static float dot_f16(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    __m256 acc[8];
    for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
    const int64_t body = n & ~(int64_t)63;
    for (int64_t i = 0; i < body; i += 64)
        for (int k = 0; k < 8; k++) {
            const __m256 xr = _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(b + i + 8 * k), _MM_FROUND_TO_NEAREST_INT));
            acc[k] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8 * k))), xr, acc[k]);
        }
    double s = (double)fold_sum16(acc);
    for (int64_t i = body; i < n; i++)
        s += (double)(_cvtsh_ss(a[i]) * _cvtsh_ss(_cvtss_sh(b[i], _MM_FROUND_TO_NEAREST_INT)));
    return (float)s;
}

/* Q6_K: the weights' -32 offset is taken out once per block through the activations' 16-value
 * sums (32 * sum_g scale_g * bsum_g, lane l holding groups 2l and 2l+1), as the reference
 * engine does, so that every int32 lane, and so the float sums, match it bit for bit. */
static float dot_q6_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++, a += 210, b += 292) {
        prefetch_block(a, 210);
        float dy;
        memcpy(&dy, b, 4);
        const int8_t *y = (const int8_t *)(b + 4);
        const int8_t *sc = (const int8_t *)(a + 192);
        const __m256i bsums = _mm256_loadu_si256((const __m256i *)(b + 260));
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            plumb__q6k_codes(a, h, q);
            for (int k = 0; k < 4; k++) {
                const int g = 8 * h + 2 * k; /* two 16-element groups per 32 values */
                const __m256i yk = _mm256_loadu_si256((const __m256i *)(y + 128 * h + 32 * k));
                const __m256i p = _mm256_maddubs_epi16(q[k], yk); /* unsigned 6-bit codes times int8 */
                const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s));
            }
        }
        sumi = _mm256_sub_epi32(sumi, offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dy * h2f(a + 208)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum(acc);
}


/* ---- Q5_1, Q2_K and Q3_K: the reference engine's AVX2 arithmetic ---------------------------
 * As its x86 kernels for these types compute them (ggml_vec_dot_q5_1_q8_1, _q2_K_q8_K and
 * _q3_K_q8_K), which differ from generic.c's order: per block (super-block) eight int32 lanes,
 * lane l holding values 4l..4l+3 of each 32 (exact, however formed), converted and fused into
 * eight float lanes, summed by hsum at the end. Q5_1 adds its min terms m * s into a scalar
 * (a product of two F16 values, exact in F32, so fused or not alike), after the lanes. Q2_K's min
 * term goes into the same lanes first, each lane l the products of 16-value sums 2l and
 * 2l + 1. The four-row kernels decode a block once and run each column's operations as the
 * one-row kernel does. */

/* Sums of four products of unsigned bytes (at most 127 here: no maddubs saturation) with int8,
 * as 8 int32 lanes: dpbusd with VNNI, the same integers either way. */
static inline __m256i dot_u8(__m256i q, __m256i y) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, y);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1));
#endif
}

/* Q5_1 values of a block: nibble + 16 * bit, 0..31. */
static inline __m256i decode_q5_1(const uint8_t *a) {
    const __m256i nib = unpack_nibbles(a + 8), b16 = _mm256_set1_epi8(0x10);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    uint32_t bits;
    memcpy(&bits, a + 4, 4);
    return _mm256_mask_blend_epi8((__mmask32)bits, nib, _mm256_or_si256(nib, b16));
#else
    return _mm256_or_si256(nib, _mm256_and_si256(bits_to_bytes(a + 4), b16));
#endif
}

typedef struct q5_1_acc {
    __m256 acc;
    float summs;
} q5_1_acc;

static inline __attribute__((always_inline)) q5_1_acc q5_1_col(q5_1_acc s, __m256i q, float dw, float mw,
                                                               const plumb_q8_1_block *b) {
    const __m256i p = dot_u8(q, _mm256_loadu_si256((const __m256i *)b->qs));
    s.acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * _cvtsh_ss(b->d)), s.acc);
    s.summs = fmaf(mw, _cvtsh_ss(b->s), s.summs);
    return s;
}

static float dot_q5_1(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w;
    const plumb_q8_1_block *b = x;
    q5_1_acc s = {_mm256_setzero_ps(), 0.0f};
    for (int64_t i = 0; i < n / 32; i++, a += 24, b++) {
        _mm_prefetch((const char *)a + PLUMB_PREFETCH, _MM_HINT_T0);
        s = q5_1_col(s, decode_q5_1(a), h2f(a), h2f(a + 2), b);
    }
    return hsum(s.acc) + s.summs;
}

static void dot4_q5_1(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {
    (void)xsv;
    const uint8_t *a = w;
    const uint8_t *b = x;
    q5_1_acc s0 = {_mm256_setzero_ps(), 0.0f}, s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < n / 32; i++, a += 24, b += sizeof(plumb_q8_1_block)) {
        _mm_prefetch((const char *)a + PLUMB_PREFETCH, _MM_HINT_T0);
        const __m256i q = decode_q5_1(a);
        const float dw = h2f(a), mw = h2f(a + 2);
        s0 = q5_1_col(s0, q, dw, mw, (const plumb_q8_1_block *)b);
        s1 = q5_1_col(s1, q, dw, mw, (const plumb_q8_1_block *)(b + xs));
        s2 = q5_1_col(s2, q, dw, mw, (const plumb_q8_1_block *)(b + 2 * xs));
        s3 = q5_1_col(s3, q, dw, mw, (const plumb_q8_1_block *)(b + 3 * xs));
    }
    out[0] = hsum(s0.acc) + s0.summs, out[1] = hsum(s1.acc) + s1.summs;
    out[2] = hsum(s2.acc) + s2.summs, out[3] = hsum(s3.acc) + s3.summs;
}

/* The scale pair of 32-value chunk g as int16 multipliers for madd: sc[2g] in the low half
 * (lanes 0-3, values 0..15 of the chunk), sc[2g + 1] in the high half. */
static inline __m256i chunk_scales(int sc_lo, int sc_hi) {
    return _mm256_set_m128i(_mm_set1_epi16((short)sc_hi), _mm_set1_epi16((short)sc_lo));
}

/* A Q2_K super-block (84 bytes: 16 scale/min bytes, 64 bytes of 2-bit codes, F16 d, dmin):
 * chunk g = 4h + k of 32 values is bits 2k of bytes 32h.. of the codes. */
typedef struct q2k_block {
    __m256i q[8], sv[8], mins16;
    float d, dmin;
} q2k_block;

static inline __attribute__((always_inline)) void q2k_decode(const uint8_t *a, q2k_block *k) {
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(a + 16 + 32 * h));
        for (int j = 0; j < 4; j++) k->q[4 * h + j] = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
    }
    const __m128i sm = _mm_loadu_si128((const __m128i *)a);
    k->mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(0x0F)));
    for (int g = 0; g < 8; g++) k->sv[g] = chunk_scales(a[2 * g] & 0xF, a[2 * g + 1] & 0xF);
    k->d = h2f(a + 80), k->dmin = h2f(a + 82);
}

static inline __attribute__((always_inline)) __m256 q2k_col(__m256 acc, const q2k_block *k, const uint8_t *bc) {
    float dy;
    memcpy(&dy, bc, 4);
    const int8_t *y = (const int8_t *)(bc + 4);
    const __m256i prod = _mm256_madd_epi16(k->mins16, _mm256_loadu_si256((const __m256i *)(bc + 260)));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(-dy * k->dmin), _mm256_cvtepi32_ps(prod), acc);
    __m256i sumi = _mm256_setzero_si256();
    for (int g = 0; g < 8; g++)
        sumi = madd_acc(sumi, _mm256_maddubs_epi16(k->q[g], _mm256_loadu_si256((const __m256i *)(y + 32 * g))), k->sv[g]);
    return _mm256_fmadd_ps(_mm256_set1_ps(dy * k->d), _mm256_cvtepi32_ps(sumi), acc);
}

/* The one-row and four-row kernels of a K type from its super-block decoder (pre##_decode into
 * a pre##_block) and its column step (pre##_col): the block is decoded once for the 4 rows. */
#define K_DOT_PAIR(name, pre, wbytes)                                                                     \
    static float dot_##name(int64_t n, const void *w, const void *x) {                                   \
        const uint8_t *a = w, *b = x;                                                                    \
        __m256 acc = _mm256_setzero_ps();                                                                \
        for (int64_t i = 0; i < n / 256; i++, a += (wbytes), b += 292) {                                 \
            prefetch_block(a, (wbytes));                                                                 \
            pre##_block k;                                                                               \
            pre##_decode(a, &k);                                                                         \
            acc = pre##_col(acc, &k, b);                                                                 \
        }                                                                                                \
        return hsum(acc);                                                                                \
    }                                                                                                    \
    static void dot4_##name(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) { \
        (void)xsv;                                                                                       \
        const uint8_t *a = w, *b = x;                                                                    \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                        \
        for (int64_t i = 0; i < n / 256; i++, a += (wbytes), b += 292) {                                 \
            prefetch_block(a, (wbytes));                                                                 \
            pre##_block k;                                                                               \
            pre##_decode(a, &k);                                                                         \
            acc0 = pre##_col(acc0, &k, b);                                                               \
            acc1 = pre##_col(acc1, &k, b + xs);                                                          \
            acc2 = pre##_col(acc2, &k, b + 2 * xs);                                                      \
            acc3 = pre##_col(acc3, &k, b + 3 * xs);                                                      \
        }                                                                                                \
        out[0] = hsum(acc0), out[1] = hsum(acc1), out[2] = hsum(acc2), out[3] = hsum(acc3);              \
    }

K_DOT_PAIR(q2_k, q2k, 84)

/* A Q3_K super-block (110 bytes: 32 bytes of high bits, 64 of 2-bit codes, 12 of 6-bit scales,
 * F16 d). Value = code - 4 where its high bit is clear: as the reference, the code and the 4
 * are multiplied separately (both unsigned for maddubs, no saturation) and subtracted as
 * int16, so every lane is exact for any int8 activation. */
typedef struct q3k_block {
    __m256i ql[8], qh[8], sv[8];
    float d;
} q3k_block;

static inline __attribute__((always_inline)) void q3k_decode(const uint8_t *a, q3k_block *k) {
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4), hb = _mm256_loadu_si256((const __m256i *)a);
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(a + 32 + 32 * h));
        for (int j = 0; j < 4; j++) {
            const __m256i m = _mm256_set1_epi8((char)(1 << (4 * h + j)));
            k->ql[4 * h + j] = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
            k->qh[4 * h + j] = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, m), _mm256_setzero_si256()), four);
        }
    }
    /* the 16 6-bit scales: low nibbles from bytes 0-7 (scales 0-7) and their high nibbles
     * (8-15), the top two bits from bytes 8-11, two bits per scale */
    uint32_t u[3];
    memcpy(u, a + 96, 12);
    const uint32_t nib = 0x0f0f0f0fu, two = 0x03030303u;
    const __m128i sc = _mm_sub_epi8(_mm_setr_epi32((int)((u[0] & nib) | ((u[2] & two) << 4)),
                                                   (int)((u[1] & nib) | (((u[2] >> 2) & two) << 4)),
                                                   (int)(((u[0] >> 4) & nib) | (((u[2] >> 4) & two) << 4)),
                                                   (int)(((u[1] >> 4) & nib) | (((u[2] >> 6) & two) << 4))),
                                    _mm_set1_epi8(32));
    int8_t s[16];
    _mm_storeu_si128((__m128i *)s, sc);
    for (int g = 0; g < 8; g++) k->sv[g] = chunk_scales(s[2 * g], s[2 * g + 1]);
    k->d = h2f(a + 108);
}

static inline __attribute__((always_inline)) __m256 q3k_col(__m256 acc, const q3k_block *k, const uint8_t *bc) {
    float dy;
    memcpy(&dy, bc, 4);
    const int8_t *y = (const int8_t *)(bc + 4);
    __m256i sumi = _mm256_setzero_si256();
    for (int g = 0; g < 8; g++) {
        const __m256i yg = _mm256_loadu_si256((const __m256i *)(y + 32 * g));
        const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(k->ql[g], yg), _mm256_maddubs_epi16(k->qh[g], yg));
        sumi = madd_acc(sumi, p, k->sv[g]);
    }
    return _mm256_fmadd_ps(_mm256_set1_ps(dy * k->d), _mm256_cvtepi32_ps(sumi), acc);
}

K_DOT_PAIR(q3_k, q3k, 110)

/* ---- four activation rows per weight row --------------------------------------------------
 * Each column keeps its own accumulator and sees exactly the operations of the one-row
 * kernel above, in the same order; only the weight decoding is shared. */

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* Two columns per 512-bit register, one in each half: every lane sees the 256-bit kernel's
 * operations (the sign of y taken from the weight by a mask instead of vpsignb), so the
 * results are the same bits with half the instructions. */

static inline float hsum_lo(__m512 v) { return hsum(_mm512_castps512_ps256(v)); }
static inline float hsum_hi(__m512 v) { return hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }

#define DOT4_LEGACY(name, wbytes, decode)                                                                    \
    static void name(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {    \
        const uint8_t *a = w, *b = x;                                                                        \
        __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};                                          \
        for (int64_t i = 0; i < n / 32; i++, a += (wbytes), b += 34) {                                       \
            _mm_prefetch((const char *)a + PLUMB_PREFETCH, _MM_HINT_T0);                                     \
            const __m256i q = decode;                                                                        \
            const __m512i qq = _mm512_inserti64x4(_mm512_castsi256_si512(q), q, 1);                          \
            const __m512i ax = _mm512_abs_epi8(qq);                                                          \
            const __mmask64 neg = _mm512_movepi8_mask(qq);                                                   \
            const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)(a[0] | a[1] << 8)));                 \
            for (int pr = 0; pr < 2; pr++) {                                                                 \
                const uint8_t *b0 = b + (size_t)(2 * pr) * xs, *b1 = b0 + xs;                                \
                const __m512i y = _mm512_inserti64x4(                                                        \
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),                   \
                    _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);                                       \
                const __m512i sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);                  \
                const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy);                       \
                const __m512 sc = _mm512_mul_ps(dw, _mm512_loadu_ps(xsv + (4 * i + 2 * pr) * 8));           \
                acc[pr] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc[pr]);                               \
            }                                                                                                \
        }                                                                                                    \
        out[0] = hsum_lo(acc[0]), out[1] = hsum_hi(acc[0]);                                                  \
        out[2] = hsum_lo(acc[1]), out[3] = hsum_hi(acc[1]);                                                  \
    }
#else
#define DOT4_LEGACY_COL(acc, bc, k)                                                                            \
    acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_loadu_ps(xsv + (4 * i + (k)) * 8)),                          \
                          _mm256_cvtepi32_ps(dot_s8(q, _mm256_loadu_si256((const __m256i *)((bc) + 2)))), acc)
/* ... and name_lanes, which leaves the four sums to hsum8 (see wide_dot4_lanes) */
#define DOT4_LEGACY(name, wbytes, decode)                                                                    \
    static inline __attribute__((always_inline)) void name##_body(int64_t n, const void *w, const void *x,  \
                                                                  size_t xs, const float *xsv, float *out, \
                                                                  bool lanes) {                            \
        const uint8_t *a = w, *b0 = x, *b1 = b0 + xs, *b2 = b1 + xs, *b3 = b2 + xs;                          \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                            \
        for (int64_t i = 0; i < n / 32; i++, a += (wbytes), b0 += 34, b1 += 34, b2 += 34, b3 += 34) {         \
            _mm_prefetch((const char *)a + PLUMB_PREFETCH, _MM_HINT_T0);                                     \
            const __m256i q = decode;                                                                        \
            const __m256 dw = _mm256_cvtph_ps(_mm_set1_epi16((short)(a[0] | a[1] << 8)));                   \
            DOT4_LEGACY_COL(acc0, b0, 0);                                                                    \
            DOT4_LEGACY_COL(acc1, b1, 1);                                                                    \
            DOT4_LEGACY_COL(acc2, b2, 2);                                                                    \
            DOT4_LEGACY_COL(acc3, b3, 3);                                                                    \
        }                                                                                                    \
        if (lanes) {                                                                                         \
            _mm256_storeu_ps(out, acc0), _mm256_storeu_ps(out + 8, acc1);                                    \
            _mm256_storeu_ps(out + 16, acc2), _mm256_storeu_ps(out + 24, acc3);                              \
        } else                                                                                               \
            out[0] = hsum(acc0), out[1] = hsum(acc1), out[2] = hsum(acc2), out[3] = hsum(acc3);              \
    }                                                                                                        \
    static void name(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {    \
        name##_body(n, w, x, xs, xsv, out, false);                                                           \
    }                                                                                                        \
    static void name##_lanes(int64_t n, const void *w, const void *x, size_t xs, const float *xsv,          \
                             float *out) {                                                                   \
        name##_body(n, w, x, xs, xsv, out, true);                                                            \
    }
#define PLUMB_HAVE_DOT4_LANES 1
#endif


#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
/* Two weight rows per 512-bit register against one activation row (decode: one token). Each
 * half runs the one-row kernel's operations in its order. */
#define DOT2_LEGACY(name, wbytes, decode)                                                                    \
    static void name(int64_t n, const void *w0, const void *w1, const void *x, float *out) {                \
        const uint8_t *a0 = w0, *a1 = w1, *b = x;                                                            \
        __m512 acc = _mm512_setzero_ps();                                                                    \
        for (int64_t i = 0; i < n / 32; i++, a0 += (wbytes), a1 += (wbytes), b += 34) {                       \
            _mm_prefetch((const char *)a0 + PLUMB_PREFETCH, _MM_HINT_T0);                                    \
            _mm_prefetch((const char *)a1 + PLUMB_PREFETCH, _MM_HINT_T0);                                    \
            const uint8_t *a = a0;                                                                           \
            const __m256i q0 = decode;                                                                       \
            a = a1;                                                                                          \
            const __m256i q1 = decode;                                                                       \
            const __m512i qq = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);                        \
            const __m512i y = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 2)));          \
            const __m512i sy = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(qq), _mm512_setzero_si512(), y);  \
            const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(qq), sy);          \
            const __m256i hw = _mm256_set_m128i(_mm_set1_epi16((short)(a1[0] | a1[1] << 8)),                 \
                                                _mm_set1_epi16((short)(a0[0] | a0[1] << 8)));                \
            const __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(hw), _mm512_set1_ps(h2f(b)));                    \
            acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(p), acc);                                           \
        }                                                                                                    \
        out[0] = hsum_lo(acc), out[1] = hsum_hi(acc);                                                        \
    }


DOT2_LEGACY(dot2_q8_0, 34, _mm256_loadu_si256((const __m256i *)(a + 2)))
DOT2_LEGACY(dot2_q4_0, 18, _mm256_sub_epi8(unpack_nibbles(a + 2), _mm256_set1_epi8(8)))
DOT2_LEGACY(dot2_q5_0, 22, decode_q5_0(a))
#define PLUMB_HAVE_DOT2_Q8_0 1
#else
/* (Q8_0 has no two-row kernel in the AVX2 set: two rows read side by side are two streams,
 * and on Zen 3 the one-row kernel, one stream prefetched PLUMB_PREFETCH_Q8 ahead, decodes the
 * output head 20% faster.) */
/* Q5_0 values without their offset: nibble + 16 * bit, 0..31. */
static inline __m256i decode_q5_0_unsigned(const uint8_t *a) {
    return _mm256_or_si256(unpack_nibbles(a + 6), _mm256_and_si256(bits_to_bytes(a + 2), _mm256_set1_epi8(16)));
}

/* Two rows of a type stored as unsigned codes minus `offset` (Q4_0: nibble - 8; Q5_0: 5 bits
 * - 16): the codes are maddubs' unsigned operand as they are (no sign fix per row), and
 * offset * (sum of each 4 activations), computed once per block for both rows, is taken off
 * the exact integer lane sums. Each row then runs the one-row kernel's float operations. */
#define DOT2_OFFSET(name, wbytes, decode, offset)                                                            \
    static void name(int64_t n, const void *w0, const void *w1, const void *x, float *out) {                \
        const uint8_t *a0 = w0, *a1 = w1, *b = x;                                                            \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;                                                      \
        const __m256i ones = _mm256_set1_epi16(1), off = _mm256_set1_epi8(offset);                          \
        for (int64_t i = 0; i < n / 32; i++, a0 += (wbytes), a1 += (wbytes), b += 34) {                       \
            _mm_prefetch((const char *)a0 + PLUMB_PREFETCH_L, _MM_HINT_T0);                                  \
            _mm_prefetch((const char *)a1 + PLUMB_PREFETCH_L, _MM_HINT_T0);                                  \
            const __m256i y = _mm256_loadu_si256((const __m256i *)(b + 2));                                  \
            const __m256 dy = bcast_h2f(b);                                                                  \
            const __m256i corr = _mm256_madd_epi16(_mm256_maddubs_epi16(off, y), ones);                      \
            const uint8_t *a = a0;                                                                           \
            const __m256i q0 = decode;                                                                       \
            a = a1;                                                                                          \
            const __m256i q1 = decode;                                                                       \
            const __m256i p0 = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q0, y), ones), corr);  \
            const __m256i p1 = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q1, y), ones), corr);  \
            const __m256 s0 = _mm256_mul_ps(bcast_h2f(a0), dy);                                              \
            const __m256 s1 = _mm256_mul_ps(bcast_h2f(a1), dy);                                              \
            acc0 = _mm256_fmadd_ps(s0, _mm256_cvtepi32_ps(p0), acc0);                                        \
            acc1 = _mm256_fmadd_ps(s1, _mm256_cvtepi32_ps(p1), acc1);                                        \
        }                                                                                                    \
        out[0] = hsum(acc0), out[1] = hsum(acc1);                                                            \
    }

DOT2_OFFSET(dot2_q4_0, 18, unpack_nibbles(a + 2), 8)
DOT2_OFFSET(dot2_q5_0, 22, decode_q5_0_unsigned(a), 16)
#endif
#define PLUMB_HAVE_DOT2 1

DOT4_LEGACY(dot4_q8_0, 34, _mm256_loadu_si256((const __m256i *)(a + 2)))
DOT4_LEGACY(dot4_q4_0, 18, _mm256_sub_epi8(unpack_nibbles(a + 2), _mm256_set1_epi8(8)))
DOT4_LEGACY(dot4_q5_0, 22, decode_q5_0(a))

/* One activation column of dot4_q4_k: the one-row kernel's operations on its own sums. */
typedef struct q4k_acc {
    __m256 acc;
    __m128 acc_m;
} q4k_acc;

static inline __attribute__((always_inline)) q4k_acc q4k_col(q4k_acc s, const uint8_t *bc, const __m256i *lo,
                                                             const __m256i *hi, const __m256i *sv, __m256i mins16,
                                                             float dw, float dmin) {
    float dy;
    memcpy(&dy, bc, 4);
    const int8_t *y = (const int8_t *)(bc + 4);
    const __m128i prod = q4k_min_products(bc + 260, mins16);
    s.acc_m = _mm_fmadd_ps(_mm_set1_ps(-dy * dmin), _mm_cvtepi32_ps(prod), s.acc_m);
    __m256i sumi = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        const __m256i p0 = _mm256_maddubs_epi16(lo[k], _mm256_loadu_si256((const __m256i *)(y + 64 * k)));
        const __m256i p1 = _mm256_maddubs_epi16(hi[k], _mm256_loadu_si256((const __m256i *)(y + 64 * k + 32)));
        sumi = madd_acc(sumi, p0, sv[2 * k]);
        sumi = madd_acc(sumi, p1, sv[2 * k + 1]);
    }
    s.acc = _mm256_fmadd_ps(_mm256_set1_ps(dy * dw), _mm256_cvtepi32_ps(sumi), s.acc);
    return s;
}

static float q4k_finish(q4k_acc s) {
    __m128 m = _mm_add_ps(s.acc_m, _mm_movehl_ps(s.acc_m, s.acc_m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    return hsum(s.acc) + _mm_cvtss_f32(m);
}

static void dot4_q4_k(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {
    (void)xsv;
    const uint8_t *a = w, *b = x;
    q4k_acc s0 = {_mm256_setzero_ps(), _mm_setzero_ps()}, s1 = s0, s2 = s0, s3 = s0;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < n / 256; i++, a += 144, b += 292) {
        prefetch_block(a, 144);
        const uint8_t *qs = a + 16;
        const __m128i sm = k4_scales_mins(a + 4);
        __m256i lo[4], hi[4], sv[8];
        for (int k = 0; k < 4; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
            lo[k] = _mm256_and_si256(q, m4);
            hi[k] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        k4_scale_vectors(sm, sv);
        const __m256i mins16 = k4_mins_pairs(sm);
        const float dw = h2f(a), dmin = h2f(a + 2);
        s0 = q4k_col(s0, b, lo, hi, sv, mins16, dw, dmin);
        s1 = q4k_col(s1, b + xs, lo, hi, sv, mins16, dw, dmin);
        s2 = q4k_col(s2, b + 2 * xs, lo, hi, sv, mins16, dw, dmin);
        s3 = q4k_col(s3, b + 3 * xs, lo, hi, sv, mins16, dw, dmin);
    }
    out[0] = q4k_finish(s0), out[1] = q4k_finish(s1), out[2] = q4k_finish(s2), out[3] = q4k_finish(s3);
}

/* dot_q4_k and dot4_q4_k on wide rows (plumb__widen): scales, mins and F32 d, dmin loaded
 * instead of decoded; the same operations otherwise. */
static inline __attribute__((always_inline)) void wide_q4k_load(const uint8_t *a, __m256i *lo, __m256i *hi, __m256i *sv,
                                                                __m256i *mins16, float *dw, float *dmin) {
    memcpy(dw, a, 4);
    memcpy(dmin, a + 4, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    int16_t sc[8];
    memcpy(sc, a + 8, 16);
    for (int k = 0; k < 4; k++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(a + 56 + 32 * k));
        lo[k] = _mm256_and_si256(q, m4);
        hi[k] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    for (int k = 0; k < 8; k++) sv[k] = _mm256_set1_epi16(sc[k]);
    *mins16 = _mm256_loadu_si256((const __m256i *)(a + 24));
}

static float wide_dot_q4_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    q4k_acc s0 = {_mm256_setzero_ps(), _mm_setzero_ps()};
    for (int64_t i = 0; i < n / 256; i++, a += PLUMB_WIDE_Q4K_BLOCK, b += 292) {
        __m256i lo[4], hi[4], sv[8], mins16;
        float dw, dmin;
        wide_q4k_load(a, lo, hi, sv, &mins16, &dw, &dmin);
        s0 = q4k_col(s0, b, lo, hi, sv, mins16, dw, dmin);
    }
    return q4k_finish(s0);
}

static void wide_dot4_q4_k(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {
    (void)xsv;
    const uint8_t *a = w, *b = x;
    q4k_acc s0 = {_mm256_setzero_ps(), _mm_setzero_ps()}, s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < n / 256; i++, a += PLUMB_WIDE_Q4K_BLOCK, b += 292) {
        __m256i lo[4], hi[4], sv[8], mins16;
        float dw, dmin;
        wide_q4k_load(a, lo, hi, sv, &mins16, &dw, &dmin);
        s0 = q4k_col(s0, b, lo, hi, sv, mins16, dw, dmin);
        s1 = q4k_col(s1, b + xs, lo, hi, sv, mins16, dw, dmin);
        s2 = q4k_col(s2, b + 2 * xs, lo, hi, sv, mins16, dw, dmin);
        s3 = q4k_col(s3, b + 3 * xs, lo, hi, sv, mins16, dw, dmin);
    }
    out[0] = q4k_finish(s0), out[1] = q4k_finish(s1), out[2] = q4k_finish(s2), out[3] = q4k_finish(s3);
}

/* One activation column of dot4_q6_k: the one-row kernel's operations on its own sums. */
static inline __attribute__((always_inline)) __m256 q6k_col(__m256 acc, const uint8_t *bc, const __m256i *q,
                                                            const __m256i *sv, __m256i sc16, float dw) {
    float dy;
    memcpy(&dy, bc, 4);
    const int8_t *y = (const int8_t *)(bc + 4);
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(bc + 260)), sc16), 5);
    __m256i sumi = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++)
        sumi = madd_acc(sumi, _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)(y + 32 * k))), sv[k]);
    sumi = _mm256_sub_epi32(sumi, offset);
    return _mm256_fmadd_ps(_mm256_set1_ps(dy * dw), _mm256_cvtepi32_ps(sumi), acc);
}

static void dot4_q6_k(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {
    (void)xsv;
    const uint8_t *a = w, *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / 256; i++, a += 210, b += 292) {
        prefetch_block(a, 210);
        const int8_t *sc = (const int8_t *)(a + 192);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        __m256i q[8];
        for (int h = 0; h < 2; h++) {
            const uint8_t *L = a + 64 * h, *H = a + 128 + 32 * h;
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)L), l1 = _mm256_loadu_si256((const __m256i *)(L + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i *)H);
            q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
            q[4 * h + 1] =
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
            q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
            q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
        }
        __m256i sv[8];
        for (int k = 0; k < 8; k++) sv[k] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
        const float dw = h2f(a + 208);
        acc0 = q6k_col(acc0, b, q, sv, sc16, dw);
        acc1 = q6k_col(acc1, b + xs, q, sv, sc16, dw);
        acc2 = q6k_col(acc2, b + 2 * xs, q, sv, sc16, dw);
        acc3 = q6k_col(acc3, b + 3 * xs, q, sv, sc16, dw);
    }
    out[0] = hsum(acc0), out[1] = hsum(acc1), out[2] = hsum(acc2), out[3] = hsum(acc3);
}

/* dot_q6_k and dot4_q6_k on wide rows (plumb__widen): the 6-bit codes and F32 d loaded. */
/* A wide Q6_K super-block's codes, scale pairs and int16 scales; returns its F32 d. */
static inline __attribute__((always_inline)) float wide_q6k_load(const uint8_t *a, __m256i *q, __m256i *sv, __m256i *sc16) {
    const int8_t *sc = (const int8_t *)(a + 4);
    *sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
    for (int k = 0; k < 8; k++) {
        q[k] = _mm256_loadu_si256((const __m256i *)(a + 20 + 32 * k));
        sv[k] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
    }
    float dw;
    memcpy(&dw, a, 4);
    return dw;
}

static float wide_dot_q6_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++, a += PLUMB_WIDE_Q6K_BLOCK, b += 292) {
        __m256i q[8], sv[8], sc16;
        const float dw = wide_q6k_load(a, q, sv, &sc16);
        acc = q6k_col(acc, b, q, sv, sc16, dw);
    }
    return hsum(acc);
}

static void wide_dot4_q6_k(int64_t n, const void *w, const void *x, size_t xs, const float *xsv, float *out) {
    (void)xsv;
    const uint8_t *a = w, *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t i = 0; i < n / 256; i++, a += PLUMB_WIDE_Q6K_BLOCK, b += 292) {
        __m256i q[8], sv[8], sc16;
        const float dw = wide_q6k_load(a, q, sv, &sc16);
        acc0 = q6k_col(acc0, b, q, sv, sc16, dw);
        acc1 = q6k_col(acc1, b + xs, q, sv, sc16, dw);
        acc2 = q6k_col(acc2, b + 2 * xs, q, sv, sc16, dw);
        acc3 = q6k_col(acc3, b + 3 * xs, q, sv, sc16, dw);
    }
    out[0] = hsum(acc0), out[1] = hsum(acc1), out[2] = hsum(acc2), out[3] = hsum(acc3);
}

static void f32_to_f16(const float *x, uint16_t *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

static void round_f16(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) y[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

/* acc[2 j + h] holds lanes 16 j + 8 h .. + 7 of the reference order's 4 x 16 accumulators. */
static float attn_dot(const float *q, const uint16_t *k, int64_t n) {
    __m256 acc[8];
    for (int a = 0; a < 8; a++) acc[a] = _mm256_setzero_ps();
    const int64_t body = n & ~(int64_t)63;
    for (int64_t i = 0; i < body; i += 64)
        for (int a = 0; a < 8; a++)
            acc[a] = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8 * a),
                                     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i + 8 * a))), acc[a]);
    for (int h = 0; h < 2; h++) {
        acc[h] = _mm256_add_ps(acc[h], acc[4 + h]);         /* 0 + 2 */
        acc[2 + h] = _mm256_add_ps(acc[2 + h], acc[6 + h]); /* 1 + 3 */
        acc[h] = _mm256_add_ps(acc[h], acc[2 + h]);
    }
    const __m256 t8 = _mm256_add_ps(acc[1], acc[0]);
    const __m128 t4 = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
    /* (t4[0] + t4[2]) + (t4[1] + t4[3]) */
    const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
    double s = (double)_mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)));
    for (int64_t i = body; i < n; i++) s += (double)(q[i] * _cvtsh_ss(k[i]));
    return (float)s;
}

/* attn_dot's lane group a (lanes 8a .. 8a + 7 of its 64; register acc[a] there) for G query
 * rows and one key row, each from zero: the key's values are converted once for all G. */
static inline __attribute__((always_inline)) void qk_lanes(const float *q, size_t qs, const int G, const uint16_t *kr,
                                                           int64_t n, int a, __m256 *acc) {
    for (int i = 0; i < G; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t s = 8 * a; s < n; s += 64) {
        const __m256 kv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr + s)));
        for (int i = 0; i < G; i++) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)i * qs + s), kv, acc[i]);
    }
}

/* qk_row for rows of S <= 4 whole steps, the lane groups unrolled: each group's S converted
 * key pieces stay in registers and every query's chain runs over them, a chain starting as
 * fma(q, k, 0) as from zeroed accumulators; then qk_row's folds (below). The same operations in the
 * same order, about 10% faster on Zen 3 (head size 256, 4 queries). */
#define CVT8(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
static inline __attribute__((always_inline)) void qk_row_short(const float *q, size_t qs, const int G,
                                                               const uint16_t *kr, const int S, float *t8) {
    __m256 r[8][4];
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int a = 0; a < 8; a++) {
        const __m256 k0 = CVT8(kr + 8 * a);
        const __m256 k1 = S > 1 ? CVT8(kr + 64 + 8 * a) : zero;
        const __m256 k2 = S > 2 ? CVT8(kr + 128 + 8 * a) : zero;
        const __m256 k3 = S > 3 ? CVT8(kr + 192 + 8 * a) : zero;
        for (int i = 0; i < G; i++) {
            const float *qi = q + (size_t)i * qs + 8 * a;
            __m256 x = _mm256_fmadd_ps(_mm256_loadu_ps(qi), k0, zero);
            if (S > 1) x = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 64), k1, x);
            if (S > 2) x = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 128), k2, x);
            if (S > 3) x = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 192), k3, x);
            r[a][i] = x;
        }
    }
    for (int i = 0; i < G; i++) {
        const __m256 h0 = _mm256_add_ps(_mm256_add_ps(r[0][i], r[4][i]), _mm256_add_ps(r[2][i], r[6][i]));
        const __m256 h1 = _mm256_add_ps(_mm256_add_ps(r[1][i], r[5][i]), _mm256_add_ps(r[3][i], r[7][i]));
        _mm256_storeu_ps(t8 + 8 * i, _mm256_add_ps(h1, h0));
    }
}
#undef CVT8

#if defined(__AVX512F__)
/* qk_row_short with 512-bit registers: R[j] holds lanes 16 j .. 16 j + 15 of the 64 (ymm
 * registers 2 j and 2 j + 1 above), so the chains are the same; the folds (0 + 4, 2 + 6 and
 * 1 + 5, 3 + 7 of the ymm registers, each half) are (R0 + R2) + (R1 + R3), whose upper and lower
 * 256 bits are the two halves qk_row_short adds last. */
#define CVT16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
static inline __attribute__((always_inline)) void qk_sums16(const float *q, size_t qs, const int G, const uint16_t *kr,
                                                            const int S, __m512 *c) {
    __m512 r[4][4];
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int a = 0; a < 4; a++) {
        const __m512 k0 = CVT16(kr + 16 * a);
        const __m512 k1 = S > 1 ? CVT16(kr + 64 + 16 * a) : zero;
        const __m512 k2 = S > 2 ? CVT16(kr + 128 + 16 * a) : zero;
        const __m512 k3 = S > 3 ? CVT16(kr + 192 + 16 * a) : zero;
        for (int i = 0; i < G; i++) {
            const float *qi = q + (size_t)i * qs + 16 * a;
            __m512 x = _mm512_fmadd_ps(_mm512_loadu_ps(qi), k0, zero);
            if (S > 1) x = _mm512_fmadd_ps(_mm512_loadu_ps(qi + 64), k1, x);
            if (S > 2) x = _mm512_fmadd_ps(_mm512_loadu_ps(qi + 128), k2, x);
            if (S > 3) x = _mm512_fmadd_ps(_mm512_loadu_ps(qi + 192), k3, x);
            r[a][i] = x;
        }
    }
    for (int i = 0; i < G; i++) c[i] = _mm512_add_ps(_mm512_add_ps(r[0][i], r[2][i]), _mm512_add_ps(r[1][i], r[3][i]));
}

static inline __attribute__((always_inline)) void qk_row_short16(const float *q, size_t qs, const int G,
                                                                 const uint16_t *kr, const int S, float *t8) {
    __m512 c[4];
    qk_sums16(q, qs, G, kr, S, c);
    for (int i = 0; i < G; i++) {
        const __m256 lo = _mm512_castps512_ps256(c[i]), hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(c[i]), 1));
        _mm256_storeu_ps(t8 + 8 * i, _mm256_add_ps(hi, lo));
    }
}

/* qk_sums16's G sums, before the halves meet: to cb + i * 256 + 16 slot. */
static inline __attribute__((always_inline)) void qk_c16(const float *q, size_t qs, const int G, const uint16_t *kr,
                                                         const int S, float *cb, int slot) {
    __m512 c[4];
    qk_sums16(q, qs, G, kr, S, c);
    for (int i = 0; i < G; i++) _mm512_store_ps(cb + (size_t)i * 256 + 16 * slot, c[i]);
}

/* The last steps of 16 (query, key) pairs at once: c[k] holds pair k's 16 lanes; the result's
 * lane p is ((t0 + t4) + (t2 + t6)) + ((t1 + t5) + (t3 + t7)), t_l = c[l] + c[8 + l] (hsum8 of
 * qk_row_short16's halves) of pair 4 (p % 4) + p / 4 (so a pair j put in slot 4 (j % 4) + j / 4
 * comes out in lane j). */
static inline __m512 qk_reduce16(const float *c) {
#define SEL(a, b, c_, d) ((a) | (b) << 2 | (c_) << 4 | (d) << 6)
    __m512 v[8], w[4], z[2];
    for (int k = 0; k < 8; k++) {
        const __m512 a = _mm512_load_ps(c + 32 * k), b = _mm512_load_ps(c + 32 * k + 16);
        v[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, SEL(0, 1, 0, 1)), _mm512_shuffle_f32x4(a, b, SEL(2, 3, 2, 3)));
    }
    for (int m = 0; m < 4; m++)
        w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], SEL(0, 2, 0, 2)),
                             _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], SEL(1, 3, 1, 3)));
    for (int m = 0; m < 2; m++)
        z[m] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * m], w[2 * m + 1], SEL(0, 1, 0, 1)),
                             _mm512_shuffle_ps(w[2 * m], w[2 * m + 1], SEL(2, 3, 2, 3)));
    return _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], SEL(0, 2, 0, 2)), _mm512_shuffle_ps(z[0], z[1], SEL(1, 3, 1, 3)));
#undef SEL
}

/* Four queries against four keys of a block converted to F32 (kf, 256 floats a key), one of the
 * four 16-lane accumulators at a time (its S steps: 16 live registers, 8 loads for 16 FMAs), in
 * the order 0, 2, 1, 3 so that (r0 + r2) + (r1 + r3) is formed as the classes finish: r0 and r1
 * wait in t0 and t1. The sums go to cb as qk_c16 leaves them (key j of the block at slot
 * 4 (j % 4) + j / 4). */
static inline __attribute__((always_inline)) void qk_c16_4x4(const float *q, size_t qs, const float *kf, const int S,
                                                             float *cb, int jb) {
    _Alignas(64) float t0[16][16], t1[16][16];
    static const int order[4] = {0, 2, 1, 3};
#pragma GCC unroll 4
    for (int oi = 0; oi < 4; oi++) {
        const int a = order[oi];
        /* each accumulator its own zeroing idiom: from one shared zero register (or
         * fma(q, k, zero)) the compiler copies a register for every chain, 64 moves a call; these
         * cost no port (the scores 6-9% faster on an Ice Lake Xeon) */
        __m512 acc[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) __asm__ volatile("vpxord %x0, %x0, %x0" : "=v"(acc[i][j]));
#pragma GCC unroll 4
        for (int st = 0; st < S; st++) {
            __m512 qv[4], kv[4];
            for (int i = 0; i < 4; i++) qv[i] = _mm512_loadu_ps(q + (size_t)i * qs + 64 * st + 16 * a);
            for (int j = 0; j < 4; j++) kv[j] = _mm512_load_ps(kf + (size_t)j * 256 + 64 * st + 16 * a);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(qv[i], kv[j], acc[i][j]);
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                float *T0 = t0[4 * i + j], *T1 = t1[4 * i + j];
                if (a == 0) _mm512_store_ps(T0, acc[i][j]);
                else if (a == 2) _mm512_store_ps(T0, _mm512_add_ps(_mm512_load_ps(T0), acc[i][j]));
                else if (a == 1) _mm512_store_ps(T1, acc[i][j]);
                else {
                    const int key = 4 * jb + j;
                    _mm512_store_ps(cb + (size_t)i * 256 + 16 * (4 * (key % 4) + key / 4),
                                    _mm512_add_ps(_mm512_load_ps(T0), _mm512_add_ps(_mm512_load_ps(T1), acc[i][j])));
                }
            }
    }
}

/* ... out of line, so that the compiler keeps each call's registers to itself instead of
 * hoisting the queries' pieces across calls (and spilling them) */
static __attribute__((noinline)) void qk_4x4(const float *q, size_t qs, const float *kf, const int S, float *cb, int jb) {
    switch (S) {
    case 4: qk_c16_4x4(q, qs, kf, 4, cb, jb); break;
    case 3: qk_c16_4x4(q, qs, kf, 3, cb, jb); break;
    case 2: qk_c16_4x4(q, qs, kf, 2, cb, jb); break;
    default: qk_c16_4x4(q, qs, kf, 1, cb, jb);
    }
}

/* attn_qk for n = 64 S (S <= 4): blocks of 16 keys against groups of 4 queries, each query's 16
 * scores reduced and scaled in registers and stored at once. The block's keys are converted to
 * F32 once for all groups of four queries (qk_4x4: on an Intel Xeon (Ice Lake) 27% faster
 * than two queries against two keys converted on the fly, with the same sums); a last group of
 * fewer queries converts them as it goes. */
static void qk_blocks16(const float *q, size_t qs, int nq, const uint16_t *k, size_t ks, int32_t nk, const int S,
                        float scale, float *out, size_t os) {
    _Alignas(64) float cb[4 * 256];
    _Alignas(64) float kf[16 * 256];
    const __m512 sv = _mm512_set1_ps(scale);
    for (int32_t j0 = 0; j0 < nk; j0 += 16) {
        const int32_t jn = nk - j0 < 16 ? nk - j0 : 16;
        const __mmask16 m = (__mmask16)((1u << jn) - 1);
        if (nq >= 4)
            for (int j = 0; j < 16; j++)
                for (int c = 0; c < 4 * S; c++)
                    _mm512_store_ps(kf + 256 * j + 16 * c,
                                    j < jn ? CVT16(k + (size_t)(j0 + j) * ks + 16 * c) : _mm512_setzero_ps());
        for (int i0 = 0; i0 < nq; i0 += 4) {
            const int g = nq - i0 < 4 ? nq - i0 : 4;
            const float *qg = q + (size_t)i0 * qs;
            if (g == 4)
                for (int jb = 0; jb < 4; jb++) qk_4x4(qg, qs, kf + 1024 * jb, S, cb, jb);
            else {
                if (jn < 16) memset(cb, 0, sizeof cb);
                for (int32_t j = 0; j < jn; j++) {
                    const uint16_t *kr = k + (size_t)(j0 + j) * ks;
                    const int slot = 4 * (j % 4) + j / 4;
                    switch (g) {
                    case 1: qk_c16(qg, qs, 1, kr, S, cb, slot); break;
                    case 2: qk_c16(qg, qs, 2, kr, S, cb, slot); break;
                    default: qk_c16(qg, qs, 3, kr, S, cb, slot);
                    }
                }
            }
            for (int i = 0; i < g; i++)
                _mm512_mask_storeu_ps(out + (size_t)(i0 + i) * os + (size_t)j0, m, _mm512_mul_ps(qk_reduce16(cb + (size_t)i * 256), sv));
        }
    }
}
#undef CVT16
#define qk_row_short qk_row_short16
#endif

/* G query rows against one key row (n a multiple of 64): attn_dot's folds of its eight
 * registers (0 + 4, 2 + 6, their sum; for both halves; then 1 + 0), leaving for each query
 * the eight lanes its last steps (hsum8's order) sum, at t8 + 8 i. */
static inline __attribute__((always_inline)) void qk_row(const float *q, size_t qs, const int G, const uint16_t *kr,
                                                         int64_t n, float *t8) {
    switch (n) {
    case 256: qk_row_short(q, qs, G, kr, 4, t8); return;
    case 192: qk_row_short(q, qs, G, kr, 3, t8); return;
    case 128: qk_row_short(q, qs, G, kr, 2, t8); return;
    case 64: qk_row_short(q, qs, G, kr, 1, t8); return;
    default: break;
    }
    __m256 half[2][4];
    for (int h = 0; h < 2; h++) {
        __m256 x[4], y[4];
        qk_lanes(q, qs, G, kr, n, h, x);
        qk_lanes(q, qs, G, kr, n, 4 + h, y);
        for (int i = 0; i < G; i++) x[i] = _mm256_add_ps(x[i], y[i]);
        __m256 z[4];
        qk_lanes(q, qs, G, kr, n, 2 + h, y);
        qk_lanes(q, qs, G, kr, n, 6 + h, z);
        for (int i = 0; i < G; i++) half[h][i] = _mm256_add_ps(x[i], _mm256_add_ps(y[i], z[i]));
    }
    for (int i = 0; i < G; i++) _mm256_storeu_ps(t8 + 8 * i, _mm256_add_ps(half[1][i], half[0][i]));
}

/* Queries four at a time against blocks of 16 keys; the last horizontal steps of 64 (query,
 * key) pairs go through hsum8 together. Lengths that are not whole 64-element steps take
 * attn_dot per pair. */
static void attn_qk(const float *q, size_t qs, int nq, const uint16_t *k, size_t ks, int32_t nk, int64_t n,
                    float scale, float *out, size_t os) {
    if (n % 64 != 0) {
        for (int i = 0; i < nq; i++)
            for (int32_t j = 0; j < nk; j++)
                out[(size_t)i * os + (size_t)j] = attn_dot(q + (size_t)i * qs, k + (size_t)j * ks, n) * scale;
        return;
    }
#if defined(__AVX512F__)
    switch (n) {
    case 256: qk_blocks16(q, qs, nq, k, ks, nk, 4, scale, out, os); return;
    case 192: qk_blocks16(q, qs, nq, k, ks, nk, 3, scale, out, os); return;
    case 128: qk_blocks16(q, qs, nq, k, ks, nk, 2, scale, out, os); return;
    case 64: qk_blocks16(q, qs, nq, k, ks, nk, 1, scale, out, os); return;
    default: break;
    }
#endif
    float t8[64 * 8], sums[64];
    /* each block of 16 keys stays in L1 while every group of queries passes */
    for (int32_t j0 = 0; j0 < nk; j0 += 16) {
        const int32_t jn = nk - j0 < 16 ? nk - j0 : 16;
        for (int i0 = 0; i0 < nq; i0 += 4) {
            const int g = nq - i0 < 4 ? nq - i0 : 4;
            const float *qg = q + (size_t)i0 * qs;
            for (int32_t j = 0; j < jn; j++) {
                const uint16_t *kr = k + (size_t)(j0 + j) * ks;
                float *t = t8 + (size_t)j * (size_t)g * 8;
                switch (g) {
                case 1: qk_row(qg, qs, 1, kr, n, t); break;
                case 2: qk_row(qg, qs, 2, kr, n, t); break;
                case 3: qk_row(qg, qs, 3, kr, n, t); break;
                default: qk_row(qg, qs, 4, kr, n, t);
                }
            }
            hsum8(t8, (int64_t)jn * g, sums);
            for (int32_t j = 0; j < jn; j++)
                for (int i = 0; i < g; i++) out[(size_t)(i0 + i) * os + (size_t)(j0 + j)] = sums[j * g + i] * scale;
        }
    }
}

/* The set's widest float registers, PV_W floats (the exponentials and the value kernels). */
#if defined(__AVX512F__)
typedef __m512 pv_vec;
#define PV_W 16
#define PV_LAID_NV 4 /* pv_tile_laid's registers per head: 64 dimensions */
static inline pv_vec pv_load(const float *p) { return _mm512_load_ps(p); }
static inline pv_vec pv_loadu(const float *p) { return _mm512_loadu_ps(p); }
static inline pv_vec pv_const(float x) { return _mm512_set1_ps(x); }
static inline pv_vec pv_sub(pv_vec a, pv_vec b) { return _mm512_sub_ps(a, b); }
static inline pv_vec pv_fnmadd(pv_vec a, pv_vec b, pv_vec c) { return _mm512_fnmadd_ps(a, b, c); }
static inline void pv_store(float *p, pv_vec x) { _mm512_store_ps(p, x); }
static inline void pv_storeu(float *p, pv_vec x) { _mm512_storeu_ps(p, x); }
static inline pv_vec pv_add(pv_vec a, pv_vec b) { return _mm512_add_ps(a, b); }
static inline pv_vec pv_mul(pv_vec a, pv_vec b) { return _mm512_mul_ps(a, b); }
static inline pv_vec pv_fmadd(pv_vec a, pv_vec b, pv_vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline pv_vec pv_set1(const float *p) { return _mm512_set1_ps(*p); }
static inline pv_vec pv_zero(void) { return _mm512_setzero_ps(); }
static inline pv_vec pv_half(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
#else
typedef __m256 pv_vec;
#define PV_W 8
#define PV_LAID_NV 2 /* 16 dimensions */
static inline pv_vec pv_load(const float *p) { return _mm256_load_ps(p); }
static inline pv_vec pv_loadu(const float *p) { return _mm256_loadu_ps(p); }
static inline pv_vec pv_const(float x) { return _mm256_set1_ps(x); }
static inline pv_vec pv_sub(pv_vec a, pv_vec b) { return _mm256_sub_ps(a, b); }
static inline pv_vec pv_fnmadd(pv_vec a, pv_vec b, pv_vec c) { return _mm256_fnmadd_ps(a, b, c); }
static inline void pv_store(float *p, pv_vec x) { _mm256_store_ps(p, x); }
static inline void pv_storeu(float *p, pv_vec x) { _mm256_storeu_ps(p, x); }
static inline pv_vec pv_add(pv_vec a, pv_vec b) { return _mm256_add_ps(a, b); }
static inline pv_vec pv_mul(pv_vec a, pv_vec b) { return _mm256_mul_ps(a, b); }
static inline pv_vec pv_fmadd(pv_vec a, pv_vec b, pv_vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline pv_vec pv_set1(const float *p) { return _mm256_broadcast_ss(p); }
static inline pv_vec pv_zero(void) { return _mm256_setzero_ps(); }
static inline pv_vec pv_half(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
#endif

/* plumb__exp_poly on PV_W lanes: the same operations. p * 2^n, rounded once to float: with
 * AVX-512 by vscalefps (to nearest even, subnormals included, as the double product converted
 * to float; Intel Xeon (Ice Lake), Gemma 3 270M pp512 after 4096 tokens: attention 38.0% ->
 * 36.8% of the time), with AVX2 as that double product. */
static inline pv_vec exp_poly_vec(pv_vec x) {
    const pv_vec shift = pv_const(0x1.8p23f);
    const pv_vec n = pv_sub(pv_fmadd(x, pv_const(0x1.715476p+0f), shift), shift);
    const pv_vec b = pv_fnmadd(n, pv_const(0x1.7f7d1cp-20f), pv_fnmadd(n, pv_const(0x1.62e4p-1f), x));
    const pv_vec u = pv_mul(b, b);
    const pv_vec p = pv_fmadd(pv_fmadd(pv_fmadd(pv_const(0x1.0e4020p-7f), b, pv_const(0x1.573e2ep-5f)), u,
                                       pv_fmadd(pv_const(0x1.555e66p-3f), b, pv_const(0x1.fffdb6p-2f))),
                              u, pv_fmadd(pv_const(0x1.ffffecp-1f), b, pv_const(1.0f)));
    /* |n| > 192: infinity for n > 0, else 0 (NaN compares false and stays NaN) */
#if defined(__AVX512F__)
    const __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0f), _CMP_GT_OQ);
    const __mmask16 up = _mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_GT_OQ);
    return _mm512_mask_blend_ps(big, _mm512_scalef_ps(p, n), _mm512_maskz_mov_ps(up, _mm512_set1_ps(INFINITY)));
#else
    const __m256i ni = _mm256_cvtps_epi32(n); /* n is a whole number */
    const __m256i bias = _mm256_set1_epi64x(1023);
    const __m256d s_lo = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(ni)), bias), 52));
    const __m256d s_hi = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(ni, 1)), bias), 52));
    const __m128 r_lo = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(p)), s_lo));
    const __m128 r_hi = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)), s_hi));
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 big = _mm256_cmp_ps(_mm256_andnot_ps(sign, n), _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 special = _mm256_and_ps(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_set1_ps(INFINITY));
    return _mm256_blendv_ps(_mm256_set_m128(r_hi, r_lo), special, big);
#endif
}

/* Whole blocks of 16 positions a register or two at a time, the 16-lane tree across them. */
static double attn_exp(float *sc, int32_t first, int32_t pos, float mx, float *bsum) {
    double sum = 0.0;
    const pv_vec m = pv_const(mx);
    for (int32_t c0 = first / 16 * 16; c0 <= pos; c0 += 16) {
        if (c0 >= first && c0 + 15 <= pos) {
            float *p = sc + (c0 - first);
            pv_vec e[16 / PV_W];
            for (int h = 0; h < 16 / PV_W; h++) pv_storeu(p + PV_W * h, e[h] = exp_poly_vec(pv_sub(pv_loadu(p + PV_W * h), m)));
#if defined(__AVX512F__)
            const __m256 e0 = _mm512_castps512_ps256(e[0]), e1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e[0]), 1));
#else
            const __m256 e0 = e[0], e1 = e[1];
#endif
            const __m256 t8 = _mm256_add_ps(e1, e0);
            const __m128 t4 = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
            const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
            const float b = _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)));
            if (bsum) *bsum++ = b;
            sum += (double)b;
            continue;
        }
        const float b = plumb__attn_exp_block(sc, c0, first, pos, mx);
        if (bsum) *bsum++ = b;
        sum += (double)b;
    }
    return sum;
}

/* The maximum eight lanes at a time (which of two equal zeros it keeps does not change any
 * s - mx; a NaN score makes the sum, and so every probability, NaN whatever the maximum), then
 * the scaling and the rounding together. */
static void attn_softmax(float *sc, int32_t first, int32_t pos) {
    const int64_t n = (int64_t)pos - first + 1;
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) m8 = _mm256_max_ps(_mm256_loadu_ps(sc + j), m8);
    float m[8], mx;
    _mm256_storeu_ps(m, m8);
    mx = m[0];
    for (int l = 1; l < 8; l++) mx = m[l] > mx ? m[l] : mx;
    for (; j < n; j++) mx = sc[j] > mx ? sc[j] : mx;
    const float inv = (float)(1.0 / attn_exp(sc, first, pos, mx, NULL));
    const __m256 iv = _mm256_set1_ps(inv);
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(sc + j, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(sc + j), iv), _MM_FROUND_TO_NEAREST_INT)));
    for (; j < n; j++) sc[j] = _cvtsh_ss(_cvtss_sh(sc[j] * inv, _MM_FROUND_TO_NEAREST_INT));
}

/* attn_pv walks each lane's positions 64 rows apart, which the hardware prefetchers do not
 * follow: the value rows this many of a lane's positions ahead are prefetched (Intel Xeon (Ice
 * Lake), Gemma 3 270M pp512 after 4096 tokens: +4% on two threads, the op alone 10-30% faster;
 * 2 and 8 ahead gain less). */
#define PV_AHEAD 4

/* The fold of the 64 lanes of NH heads' NV x 8 dimensions from d0, lanes[64][NH * NV][8]:
 * (l + (l + 32)) + ((l + 16) + (l + 48)), then plumb__sum16's tree, into out (heads os apart). */
static inline __attribute__((always_inline)) void pv_fold8(const float *lanes, const int NH, const int NV, int64_t d0, float *out,
                                                           size_t os) {
    const size_t lw = (size_t)(NH * NV) * 8;
    for (int i = 0; i < NH; i++)
        for (int k = 0; k < NV; k++) {
            const float *L = lanes + (size_t)(i * NV + k) * 8;
            __m256 t[16];
            for (int l = 0; l < 16; l++)
                t[l] = _mm256_add_ps(_mm256_add_ps(_mm256_load_ps(L + l * lw), _mm256_load_ps(L + (32 + l) * lw)),
                                     _mm256_add_ps(_mm256_load_ps(L + (16 + l) * lw), _mm256_load_ps(L + (48 + l) * lw)));
            for (int l = 0; l < 8; l++) t[l] = _mm256_add_ps(t[8 + l], t[l]);
            for (int l = 0; l < 4; l++) t[l] = _mm256_add_ps(t[4 + l], t[l]);
            _mm256_storeu_ps(out + (size_t)i * os + (size_t)d0 + 8 * (size_t)k,
                             _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3])));
        }
}

/* attn_pv for NH heads and NV x 8 dimensions from d0: each lane's positions are accumulated in
 * registers (NH * NV <= 8 of them) and stored once into lanes[64][NH * NV][8], which the fold
 * then reads; the value piece of a position is converted once for all NH heads. */
static inline __attribute__((always_inline)) void pv_chunk(const float *p, size_t ps, const int NH, const int NV,
                                                           const uint16_t *v, size_t vs, int32_t first, int32_t pos,
                                                           int64_t d0, float *out, size_t os, float *lanes) {
    const int W = NH * NV;
    for (int32_t l = 0; l < 64; l++) {
        float *L = lanes + (size_t)l * (size_t)W * 8;
        const int32_t j1 = first + ((l - first) & 63);
        if (j1 > pos) {
            for (int k = 0; k < W; k++) _mm256_store_ps(L + 8 * k, _mm256_setzero_ps());
            continue;
        }
        __m256 acc[8], vv[8];
        const uint16_t *r = v + (size_t)j1 * vs + d0;
        for (int k = 0; k < NV; k++) vv[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8 * k)));
        for (int i = 0; i < NH; i++) {
            const __m256 w = _mm256_broadcast_ss(p + (size_t)i * ps + (size_t)(j1 - first));
            for (int k = 0; k < NV; k++) acc[i * NV + k] = _mm256_mul_ps(w, vv[k]);
        }
        for (int32_t j = j1 + 64; j <= pos; j += 64) {
            r = v + (size_t)j * vs + d0;
            for (int k = 0; k < NV; k += 4) _mm_prefetch((const char *)(r + (size_t)PV_AHEAD * 64 * vs + 8 * k), _MM_HINT_T0);
            for (int k = 0; k < NV; k++) vv[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8 * k)));
            for (int i = 0; i < NH; i++) {
                const __m256 w = _mm256_broadcast_ss(p + (size_t)i * ps + (size_t)(j - first));
                for (int k = 0; k < NV; k++) acc[i * NV + k] = _mm256_fmadd_ps(w, vv[k], acc[i * NV + k]);
            }
        }
        for (int k = 0; k < W; k++) _mm256_store_ps(L + 8 * k, acc[k]);
    }
    pv_fold8(lanes, NH, NV, d0, out, os);
}

/* The fold of a tile's lanes group by group (pv_tile16, pv_tile_laid): after lane group n (its
 * n-th in pv_order) of every token, tmp holds the group's four lanes, [nt][4][W][PV_W] (W
 * registers of PV_W dimensions each, NV of them a head); the sums wait in part[nt][W][4][PV_W]
 * and the last group's go out. */
static inline __attribute__((always_inline)) void pv_fold(const plumb_attn_pv_row *rows, int nt, int n, int i0, const int NV,
                                                          size_t W, int64_t d0, size_t os, float *part, const float *tmp) {
    for (int t = 0; t < nt; t++)
        for (size_t k = 0; k < W; k++) {
            const float *L = tmp + ((size_t)t * 4 * W + k) * PV_W;
            float *S = part + ((size_t)t * W + k) * 4 * PV_W;
            const pv_vec x = pv_add(pv_add(pv_load(L), pv_load(L + 2 * W * PV_W)),
                                    pv_add(pv_load(L + W * PV_W), pv_load(L + 3 * W * PV_W)));
            if (n % 2 == 0) { /* group l, whose partner l + 8 comes next */
                pv_store(S, x);
                continue;
            }
            const pv_vec a = pv_add(x, pv_load(S)); /* halves: (l + 8) + l */
            if (n % 4 == 1) {
                pv_store(S + PV_W, a);
                continue;
            }
            const pv_vec b = pv_add(a, pv_load(S + PV_W)); /* quarters: (l + 4) + l */
            if (n % 8 == 3) {
                pv_store(S + 2 * PV_W, b);
                continue;
            }
            const pv_vec c = pv_add(pv_load(S + 2 * PV_W), b); /* pairs: 0 + 2, then 1 + 3 */
            if (n == 7) {
                pv_store(S + 3 * PV_W, c);
                continue;
            }
            const int i = (int)k / NV, kk = (int)k % NV;
            pv_storeu(rows[t].out + (size_t)(i0 + i) * os + (size_t)d0 + PV_W * (size_t)kk, pv_add(pv_load(S + 3 * PV_W), c));
        }
}

static const int8_t pv_order[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};

/* Tiles of two or more tokens over spans of PV_LAID_STEPS or more lanes' steps lay their
 * probabilities out lane by lane first (pv_lay) and take each lane's value rows into a buffer
 * once for all tokens (pv_fill). pv_lane16 reads a probability 64 positions on at each step, a
 * cache line of its own: a tile's (4 tokens x 4 heads x 4352 positions, 278 KB) went from L2
 * to L1 again for every group of lanes, sixteen times per 64 dimensions; and the lane's value
 * rows, 32 KB apart, all fall in the same sets of L1, so the tile's other tokens found them
 * evicted (and converted them again). Same sums in the same order: Intel Xeon (Ice Lake),
 * 4 tokens x 4 heads of 256 dimensions: 4352 positions 0.46 -> 0.36 ms (AVX-512), 1.31 ->
 * 0.70-0.95 ms (AVX2); 8200 positions (AVX2) 2.5 -> 1.3 ms. One token stays with pv_tile16 /
 * pv_chunk (the layout costs more than it saves). */
#if defined(__AVX512F__)
#define PV_LAID_STEPS 8
#else
#define PV_LAID_STEPS 24 /* 256-bit registers: below ~1500 positions the layout costs more than it saves */
#endif

#if defined(__AVX512F__)
/* Lane l's sums of one token for NH heads and NV x 16 dimensions from d0 (pv_chunk's with
 * 512-bit registers), to L[NH * NV][16]; a lane no position reaches gives zeros. The first
 * token of a tile prefetches the rows ahead; the others find them in L1. */
static inline __attribute__((always_inline)) void pv_lane16(const float *p, size_t ps, const int NH, const int NV,
                                                            const uint16_t *v, size_t vs, int32_t first, int32_t pos,
                                                            int32_t l, int64_t d0, bool fetch, float *L) {
    const int W = NH * NV;
    const int32_t j1 = first + ((l - first) & 63);
    if (j1 > pos) {
        for (int k = 0; k < W; k++) _mm512_store_ps(L + 16 * k, _mm512_setzero_ps());
        return;
    }
    __m512 acc[16], vv[4];
    const uint16_t *r = v + (size_t)j1 * vs + d0;
    for (int k = 0; k < NV; k++) vv[k] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r + 16 * k)));
    for (int i = 0; i < NH; i++) {
        const __m512 w = _mm512_set1_ps(p[(size_t)i * ps + (size_t)(j1 - first)]);
        for (int k = 0; k < NV; k++) acc[i * NV + k] = _mm512_mul_ps(w, vv[k]);
    }
    for (int32_t j = j1 + 64; j <= pos; j += 64) {
        r = v + (size_t)j * vs + d0;
        if (fetch)
            for (int k = 0; k < NV; k += 2) _mm_prefetch((const char *)(r + (size_t)PV_AHEAD * 64 * vs + 16 * k), _MM_HINT_T0);
        for (int k = 0; k < NV; k++) vv[k] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r + 16 * k)));
        for (int i = 0; i < NH; i++) {
            const __m512 w = _mm512_set1_ps(p[(size_t)i * ps + (size_t)(j - first)]);
            for (int k = 0; k < NV; k++) acc[i * NV + k] = _mm512_fmadd_ps(w, vv[k], acc[i * NV + k]);
        }
    }
    for (int k = 0; k < W; k++) _mm512_store_ps(L + 16 * k, acc[k]);
}

/* The value sums of nt tokens for heads i0 .. i0 + NH - 1, NV x 16 dimensions from d0, lane by
 * lane with every token in turn: a lane's rows (64 apart) come from memory for the first token
 * and from L1 for the others, where token by token each one's whole span of values went through
 * the caches again (4352 positions of 256 dimensions: 2.2 MB a token, from L3). Lanes go in the
 * fold's groups (l, l + 16, l + 32, l + 48), each folded when done, (l + (l + 32)) + ((l + 16)
 * + (l + 48)), and the groups in an order that lets the rest of the fold (halves, quarters,
 * pairs) go on as they come, so that a sum waits in one of four slots, part[t][NH * NV][4][16],
 * rather than all sixteen. tmp: [nt][4][NH * NV][16]. */
static inline __attribute__((always_inline)) void pv_tile16(const plumb_attn_pv_row *rows, int nt, size_t ps, int i0,
                                                            const int NH, const int NV, const uint16_t *v, size_t vs,
                                                            int64_t d0, size_t os, float *part, float *tmp) {
    const size_t W = (size_t)(NH * NV);
    for (int n = 0; n < 16; n++) {
        const int g = pv_order[n];
        for (int q = 0; q < 4; q++)
            for (int t = 0; t < nt; t++)
                pv_lane16(rows[t].p + (size_t)i0 * ps, ps, NH, NV, v, vs, rows[t].first, rows[t].pos, g + 16 * q, d0, t == 0,
                          tmp + ((size_t)t * 4 + (size_t)q) * W * 16);
        pv_fold(rows, nt, n, i0, NV, W, d0, os, part, tmp);
    }
}

#endif

/* One (token, head) row of probabilities (positions first .. pos at p[j - first]) lane by lane:
 * o[l * steps + m] is that of position base + 64 m + l (base a multiple of 64), 0 outside the
 * span; steps a multiple of 8 (8 x 8 blocks, transpose8). */
static void pv_lay(const float *p, int32_t first, int32_t pos, int32_t base, int32_t steps, float *o) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i below = _mm256_set1_epi32(first - 1), above = _mm256_set1_epi32(pos + 1);
    for (int32_t m0 = 0; m0 < steps; m0 += 8)
        for (int l0 = 0; l0 < 64; l0 += 8) {
            __m256 r[8];
            for (int k = 0; k < 8; k++) {
                const int32_t j = base + 64 * (m0 + k) + l0;
                const __m256i jj = _mm256_add_epi32(_mm256_set1_epi32(j), iota);
                const __m256i in = _mm256_and_si256(_mm256_cmpgt_epi32(jj, below), _mm256_cmpgt_epi32(above, jj));
                r[k] = _mm256_testz_si256(in, in) ? _mm256_setzero_ps() : _mm256_maskload_ps(p + ((ptrdiff_t)j - first), in);
            }
            __m256 col[8];
            transpose8(r, col);
            for (int k = 0; k < 8; k++) _mm256_store_ps(o + (size_t)(l0 + k) * (size_t)steps + m0, col[k]);
        }
}

/* Rows r0 + 64 m (m = lo .. hi) of the values, PV_LAID_NV registers of dimensions from d0, as
 * F32 into buf[m - lo][PV_LAID_NV * PV_W]. */
static inline void pv_fill(const uint16_t *v, size_t vs, int32_t r0, int32_t lo, int32_t hi, int64_t d0, float *buf) {
    for (int32_t m = lo; m <= hi; m++) {
        const uint16_t *r = v + (size_t)(r0 + 64 * m) * vs + d0;
        for (int o = 0; o < PV_LAID_NV * PV_W; o += 32) _mm_prefetch((const char *)(r + (size_t)PV_AHEAD * 64 * vs + o), _MM_HINT_T0);
        for (int k = 0; k < PV_LAID_NV; k++) pv_store(buf + ((size_t)(m - lo) * PV_LAID_NV + (size_t)k) * PV_W, pv_half(r + PV_W * k));
    }
}

/* One token's lane (NH heads, PV_LAID_NV registers of dimensions) from the laid-out
 * probabilities (pt: its lane's row of head 0; heads hs apart) and the buffered rows (buf from
 * step lo), steps ms .. me, its first by a product; none: zeros. To L[NH * PV_LAID_NV][PV_W]. */
static inline __attribute__((always_inline)) void pv_walk(const float *pt, size_t hs, const int NH, const float *buf, int32_t lo,
                                                          int32_t ms, int32_t me, float *L) {
    enum { NV = PV_LAID_NV };
    const int W = NH * NV;
    if (ms > me) {
        for (int k = 0; k < W; k++) pv_store(L + PV_W * k, pv_zero());
        return;
    }
    pv_vec acc[4 * NV];
    const float *b = buf + (size_t)(ms - lo) * NV * PV_W;
    for (int i = 0; i < NH; i++) {
        const pv_vec w = pv_set1(pt + (size_t)i * hs + (size_t)ms);
        for (int k = 0; k < NV; k++) acc[i * NV + k] = pv_mul(w, pv_load(b + PV_W * k));
    }
    for (int32_t m = ms + 1; m <= me; m++) {
        b += NV * PV_W;
        for (int i = 0; i < NH; i++) {
            const pv_vec w = pv_set1(pt + (size_t)i * hs + (size_t)m);
            for (int k = 0; k < NV; k++) acc[i * NV + k] = pv_fmadd(w, pv_load(b + PV_W * k), acc[i * NV + k]);
        }
    }
    for (int k = 0; k < W; k++) pv_store(L + PV_W * k, acc[k]);
}

/* The tile's sums for NH heads from i0, PV_LAID_NV registers of dimensions from d0, from the
 * layout pv_lay made at pt (token t's head i lane l at pt[((t * 4 + i) * 64 + l) * steps]), each
 * lane's rows converted once into buf for all the tokens, folded as pv_tile16 folds. */
static inline __attribute__((always_inline)) void pv_tile_laid(const plumb_attn_pv_row *rows, int nt, int i0, const int NH,
                                                               const uint16_t *v, size_t vs, int64_t d0, size_t os, int32_t base,
                                                               int32_t steps, const float *pt, float *buf, float *part, float *tmp) {
    const size_t W = (size_t)NH * PV_LAID_NV, hs = (size_t)64 * (size_t)steps;
    for (int n = 0; n < 16; n++)
        for (int q = 0; q < 4; q++) {
            const int l = pv_order[n] + 16 * q;
            int32_t ms[PLUMB_PV_TOKENS], me[PLUMB_PV_TOKENS], lo = INT32_MAX, hi = -1;
            for (int t = 0; t < nt; t++) { /* the token's first and last steps in the lane */
                const int32_t f = rows[t].first - base - l, e = rows[t].pos - base - l;
                ms[t] = f <= 0 ? 0 : (f + 63) / 64;
                me[t] = e < 0 ? -1 : e / 64;
                if (ms[t] <= me[t]) lo = ms[t] < lo ? ms[t] : lo, hi = me[t] > hi ? me[t] : hi;
            }
            if (lo <= hi) pv_fill(v, vs, base + l, lo, hi, d0, buf);
            for (int t = 0; t < nt; t++)
                pv_walk(pt + ((size_t)t * 4 * 64 + (size_t)l) * (size_t)steps, hs, NH, buf, lo, ms[t], me[t],
                        tmp + ((size_t)t * 4 + (size_t)q) * W * PV_W);
            if (q == 3) pv_fold(rows, nt, n, i0, PV_LAID_NV, W, d0, os, part, tmp);
        }
}

/* Heads four at a time: a tile over a long span laid out (pv_tile_laid: 64 dimensions at a time
 * with 512-bit registers, 16 with AVX2); with 512-bit registers 64 dimensions at a time for all
 * the tokens together (pv_tile16), then 16; then token by token as many dimensions per chunk as
 * keep 8 accumulators busy, then 8 at a time, then one at a time. */
static void attn_pv(const plumb_attn_pv_row *rows, int nt, int nh, size_t ps, const uint16_t *v, size_t vs, int64_t hd,
                    size_t os, float *work) {
    /* pv_tile16's slots, and pv_chunk's lanes after it */
    _Alignas(64) float part[PLUMB_PV_TOKENS * 16 * 4 * 16];
    int32_t fmin = rows[0].first, pmax = rows[0].pos;
    for (int t = 1; t < nt; t++) {
        fmin = rows[t].first < fmin ? rows[t].first : fmin;
        pmax = rows[t].pos > pmax ? rows[t].pos : pmax;
    }
    const int32_t base = fmin & ~63, steps = ((pmax - base) / 64 + 1 + 15) / 16 * 16; /* base <= fmin <= pmax */
    const int64_t laid_dims = PV_LAID_NV * PV_W;
    const bool laid = work && nt >= 2 && hd >= laid_dims && (pmax - base) / 64 + 1 >= PV_LAID_STEPS;
    float *buf = laid ? work + (size_t)PLUMB_PV_TOKENS * 4 * 64 * (size_t)steps : NULL;
    _Alignas(64) float tmp[PLUMB_PV_TOKENS * 4 * 16 * 16]; /* a lane group's sums, [nt][4][16 registers][PV_W] at most */
    for (int i0 = 0; i0 < nh; i0 += 4) {
        const int g = nh - i0 < 4 ? nh - i0 : 4;
        int64_t dt = 0;
        if (laid) {
            for (int t = 0; t < nt; t++)
                for (int i = 0; i < g; i++)
                    pv_lay(rows[t].p + (size_t)(i0 + i) * ps, rows[t].first, rows[t].pos, base, steps,
                           work + ((size_t)t * 4 + (size_t)i) * 64 * (size_t)steps);
            for (; dt + laid_dims <= hd; dt += laid_dims) switch (g) {
                case 1: pv_tile_laid(rows, nt, i0, 1, v, vs, dt, os, base, steps, work, buf, part, tmp); break;
                case 2: pv_tile_laid(rows, nt, i0, 2, v, vs, dt, os, base, steps, work, buf, part, tmp); break;
                case 3: pv_tile_laid(rows, nt, i0, 3, v, vs, dt, os, base, steps, work, buf, part, tmp); break;
                default: pv_tile_laid(rows, nt, i0, 4, v, vs, dt, os, base, steps, work, buf, part, tmp);
                }
        }
#if defined(__AVX512F__)
        switch (g) {
        case 1:
            for (; dt + 64 <= hd; dt += 64) pv_tile16(rows, nt, ps, i0, 1, 4, v, vs, dt, os, part, tmp);
            break;
        case 2:
            for (; dt + 64 <= hd; dt += 64) pv_tile16(rows, nt, ps, i0, 2, 4, v, vs, dt, os, part, tmp);
            break;
        case 3:
            for (; dt + 64 <= hd; dt += 64) pv_tile16(rows, nt, ps, i0, 3, 4, v, vs, dt, os, part, tmp);
            break;
        default:
            for (; dt + 64 <= hd; dt += 64) pv_tile16(rows, nt, ps, i0, 4, 4, v, vs, dt, os, part, tmp);
        }
        for (; dt + 16 <= hd; dt += 16) pv_tile16(rows, nt, ps, i0, g, 1, v, vs, dt, os, part, tmp);
#endif
        for (int t = 0; t < nt; t++) {
            const float *pg = rows[t].p + (size_t)i0 * ps;
            float *og = rows[t].out + (size_t)i0 * os;
            const int32_t first = rows[t].first, pos = rows[t].pos;
            float *lanes = part;
            int64_t d0 = dt;
            switch (g) {
            case 1:
                for (; d0 + 64 <= hd; d0 += 64) pv_chunk(pg, ps, 1, 8, v, vs, first, pos, d0, og, os, lanes);
                break;
            case 2:
                for (; d0 + 32 <= hd; d0 += 32) pv_chunk(pg, ps, 2, 4, v, vs, first, pos, d0, og, os, lanes);
                break;
            case 3:
                for (; d0 + 16 <= hd; d0 += 16) pv_chunk(pg, ps, 3, 2, v, vs, first, pos, d0, og, os, lanes);
                break;
            default:
                for (; d0 + 16 <= hd; d0 += 16) pv_chunk(pg, ps, 4, 2, v, vs, first, pos, d0, og, os, lanes);
            }
            for (; d0 + 8 <= hd; d0 += 8)
                for (int i = 0; i < g; i++) pv_chunk(pg + (size_t)i * ps, ps, 1, 1, v, vs, first, pos, d0, og + (size_t)i * os, os, lanes);
            for (; d0 < hd; d0++)
                for (int i = 0; i < g; i++) {
                    float lane[64], u[16];
                    for (int32_t l = 0; l < 64; l++) {
                        const int32_t j1 = first + ((l - first) & 63);
                        lane[l] = 0.0f;
                        if (j1 > pos) continue;
                        lane[l] = pg[(size_t)i * ps + (size_t)(j1 - first)] * _cvtsh_ss(v[(size_t)j1 * vs + (size_t)d0]);
                        for (int32_t j = j1 + 64; j <= pos; j += 64)
                            lane[l] = fmaf(pg[(size_t)i * ps + (size_t)(j - first)], _cvtsh_ss(v[(size_t)j * vs + (size_t)d0]), lane[l]);
                    }
                    for (int l = 0; l < 16; l++) u[l] = (lane[l] + lane[32 + l]) + (lane[16 + l] + lane[48 + l]);
                    og[(size_t)i * os + (size_t)d0] = plumb__sum16(u);
                }
        }
    }
}

/* silu eight lanes at a time: plumb__exp_poly's operations in the same order (fma is exact
 * either way), and 2^n as a float where the result stays normal (|n| <= 125), which makes
 * p * 2^n exact as the scalar's double product is; lanes outside that range, or NaN, are
 * done one at a time by the scalar code. */
static void silu(const float *x, const float *y, float *o, int64_t n) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f), one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(125.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i), a = _mm256_sub_ps(_mm256_setzero_ps(), xv); /* -x */
        const __m256 z = _mm256_fmadd_ps(a, _mm256_set1_ps(0x1.715476p+0f), shift);
        const __m256 nv = _mm256_sub_ps(z, shift);
        const __m256 b = _mm256_fnmadd_ps(nv, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(nv, _mm256_set1_ps(0x1.62e4p-1f), a));
        const __m256 u = _mm256_mul_ps(b, b);
        const __m256 p = _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                            _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
            u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, one));
        /* in range: |n| <= 125 (false for NaN too) */
        const __m256 ok = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), nv), lim, _CMP_LE_OQ);
        const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nv), _mm256_set1_epi32(127)), 23);
        const __m256 ex = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
        __m256 r = _mm256_div_ps(xv, _mm256_add_ps(one, ex));
        if (y) r = _mm256_mul_ps(r, _mm256_loadu_ps(y + i));
        _mm256_storeu_ps(o + i, r);
        const int bad = ~_mm256_movemask_ps(ok) & 0xFF;
        if (bad)
            for (int l = 0; l < 8; l++)
                if (bad >> l & 1) o[i + l] = plumb__silu_lane(x[i + l], y, i + l);
    }
    for (; i < n; i++) o[i] = plumb__silu_lane(x[i], y, i);
}

/* The F16 GELU table looked up by a gather, 16 (AVX-512) or 8 lanes at a time; the ends by
 * compares, as the scalar tail does one at a time. */
static void gelu_f16(const float *table, const float *x, const float *y, float *o, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m512i h = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        __m512 g = _mm512_i32gather_ps(h, table, 4);
        g = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_set1_ps(10.0f), _CMP_GE_OQ), g, v);
        g = _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(v, _mm512_set1_ps(-10.0f), _CMP_LE_OQ), g);
        if (y) g = _mm512_mul_ps(g, _mm512_loadu_ps(y + i));
        _mm512_storeu_ps(o + i, g);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        __m256 g = _mm256_i32gather_ps(table, h, 4);
        g = _mm256_blendv_ps(g, v, _mm256_cmp_ps(v, _mm256_set1_ps(10.0f), _CMP_GE_OQ));
        g = _mm256_andnot_ps(_mm256_cmp_ps(v, _mm256_set1_ps(-10.0f), _CMP_LE_OQ), g);
        if (y) g = _mm256_mul_ps(g, _mm256_loadu_ps(y + i));
        _mm256_storeu_ps(o + i, g);
    }
    for (; i < n; i++) {
        const float v = x[i], g = v <= -10.0f ? 0.0f : v >= 10.0f ? v : table[_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT)];
        o[i] = y ? g * y[i] : g;
    }
}

/* Eight rows at a time: 8 x 8 blocks transposed so that a register holds one column of the
 * eight rows, squared in float, widened and added to the rows' double chains in column order
 * (two chains of four rows each); the other columns and rows one at a time. */
#if defined(__AVX512F__)
/* A 16 x 16 block of floats transposed: col[c] lane k is r[k] lane c (unpacks within 128-bit
 * lanes, then the 128-bit lanes gathered in two steps). */
static inline void transpose16(const __m512 r[16], __m512 col[16]) {
#define SEL(a, b, c_, d) ((a) | (b) << 2 | (c_) << 4 | (d) << 6)
    __m512 t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int j = 0; j < 4; j++) { /* u[4 j + e], 128-bit lane L: element 4 L + e of rows 4 j .. 4 j + 3 */
        const __m512d a = _mm512_castps_pd(t[4 * j]), b = _mm512_castps_pd(t[4 * j + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * j + 2]), d = _mm512_castps_pd(t[4 * j + 3]);
        u[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int e = 0; e < 4; e++) {
        const __m512 p0 = _mm512_shuffle_f32x4(u[e], u[4 + e], SEL(0, 1, 0, 1)), p1 = _mm512_shuffle_f32x4(u[e], u[4 + e], SEL(2, 3, 2, 3));
        const __m512 q0 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], SEL(0, 1, 0, 1));
        const __m512 q1 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], SEL(2, 3, 2, 3));
        col[e] = _mm512_shuffle_f32x4(p0, q0, SEL(0, 2, 0, 2));
        col[4 + e] = _mm512_shuffle_f32x4(p0, q0, SEL(1, 3, 1, 3));
        col[8 + e] = _mm512_shuffle_f32x4(p1, q1, SEL(0, 2, 0, 2));
        col[12 + e] = _mm512_shuffle_f32x4(p1, q1, SEL(1, 3, 1, 3));
    }
#undef SEL
}
#endif

static void sum_squares(const float *x, int64_t ne0, int64_t nrows, double *sums) {
    int64_t r = 0;
#if defined(__AVX512F__)
    /* sixteen rows at a time: 16 x 16 blocks transposed, each row's chain a double lane (two
     * chains of eight rows): fewer shuffles an element and twice the rows a chain step of the
     * eight-row form */
    for (; r + 16 <= nrows; r += 16) {
        const float *xr = x + r * ne0;
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        int64_t i = 0;
        for (; i + 16 <= ne0; i += 16) {
            __m512 m[16], col[16];
            for (int k = 0; k < 16; k++) m[k] = _mm512_loadu_ps(xr + k * ne0 + i);
            transpose16(m, col);
            for (int c = 0; c < 16; c++) {
                const __m512 sq = _mm512_mul_ps(col[c], col[c]);
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
                hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sq), 1))));
            }
        }
        double s[16];
        _mm512_storeu_pd(s, lo);
        _mm512_storeu_pd(s + 8, hi);
        for (int k = 0; k < 16; k++) {
            for (int64_t j = i; j < ne0; j++) s[k] += (double)(xr[k * ne0 + j] * xr[k * ne0 + j]);
            sums[r + k] = s[k];
        }
    }
#endif
    for (; r + 8 <= nrows; r += 8) {
        const float *xr = x + r * ne0;
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
        int64_t i = 0;
        for (; i + 8 <= ne0; i += 8) {
            __m256 m[8], col[8]; /* col[c]: column i + c of the eight rows */
            for (int k = 0; k < 8; k++) m[k] = _mm256_loadu_ps(xr + k * ne0 + i);
            transpose8(m, col);
            for (int c = 0; c < 8; c++) {
                const __m256 v = col[c];
                const __m256 sq = _mm256_mul_ps(v, v);
                lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
                hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
            }
        }
        double s[8];
        _mm256_storeu_pd(s, lo);
        _mm256_storeu_pd(s + 4, hi);
        for (int k = 0; k < 8; k++) {
            for (int64_t j = i; j < ne0; j++) s[k] += (double)(xr[k * ne0 + j] * xr[k * ne0 + j]);
            sums[r + k] = s[k];
        }
    }
    for (; r < nrows; r++) {
        double s = 0.0;
        for (int64_t j = 0; j < ne0; j++) s += (double)(x[r * ne0 + j] * x[r * ne0 + j]);
        sums[r] = s;
    }
}

/* A GEMM without a kept layout */
#define GEMM_OPS(r, w, b, pb, ab, rb, pk, pr, rn)                                                                      \
    {.rows = (r), .wide = (w), .block = (b), .pack_bytes = (pb), .act_bytes = (ab), .run_bytes = (rb), .pack = (pk),  \
     .prep = (pr), .run = (rn)}
/* a K-quant GEMM on plumb__gemm16_prep_sums's activations */
#define KSUM_ACT_OPS(r, pb, pk, rn) GEMM_OPS(r, false, 256, pb, PLUMB_GEMM_KSUM_ACT_BLOCK, 0, pk, plumb__gemm16_prep_sums, rn)

const plumb_kernel_set *PLUMB_X86_SET(void) {
    static plumb_kernel_set set;
    static int init;
    if (!init) {
        set = *plumb__kernels_generic();
        set.name = PLUMB_X86_SET_NAME;
        set.vec_dot[PLUMB_TYPE_Q4_0] = dot_q4_0;
        set.vec_dot[PLUMB_TYPE_Q5_0] = dot_q5_0;
        set.vec_dot[PLUMB_TYPE_Q8_0] = dot_q8_0;
        set.vec_dot[PLUMB_TYPE_Q4_K] = dot_q4_k;
        set.vec_dot[PLUMB_TYPE_Q6_K] = dot_q6_k;
        set.vec_dot[PLUMB_TYPE_Q5_K] = dot_q5_k;
        set.vec_dot[PLUMB_TYPE_Q4_1] = dot_q4_1;
        set.vec_dot[PLUMB_TYPE_Q5_1] = dot_q5_1;
        set.vec_dot[PLUMB_TYPE_Q2_K] = dot_q2_k;
        set.vec_dot[PLUMB_TYPE_Q3_K] = dot_q3_k;
        set.vec_dot4[PLUMB_TYPE_Q5_1] = dot4_q5_1;
        set.vec_dot4[PLUMB_TYPE_Q2_K] = dot4_q2_k;
        set.vec_dot4[PLUMB_TYPE_Q3_K] = dot4_q3_k;
        set.vec_dot[PLUMB_TYPE_F32] = dot_f32;
        set.vec_dot[PLUMB_TYPE_F16] = dot_f16;
#ifdef PLUMB_HAVE_DOT2
        set.vec_dot2[PLUMB_TYPE_Q4_0] = dot2_q4_0;
        set.vec_dot2[PLUMB_TYPE_Q5_0] = dot2_q5_0;
#ifdef PLUMB_HAVE_DOT2_Q8_0
        set.vec_dot2[PLUMB_TYPE_Q8_0] = dot2_q8_0;
#endif
#endif
        set.vec_dot4[PLUMB_TYPE_Q4_0] = dot4_q4_0;
        set.vec_dot4[PLUMB_TYPE_Q5_0] = dot4_q5_0;
        set.vec_dot4[PLUMB_TYPE_Q8_0] = dot4_q8_0;
#ifdef PLUMB_HAVE_DOT4_LANES
        set.vec_dot4_lanes[PLUMB_TYPE_Q4_0] = dot4_q4_0_lanes;
        set.vec_dot4_lanes[PLUMB_TYPE_Q5_0] = dot4_q5_0_lanes;
        set.vec_dot4_lanes[PLUMB_TYPE_Q8_0] = dot4_q8_0_lanes;
#endif
        set.vec_dot4[PLUMB_TYPE_Q4_K] = dot4_q4_k;
        set.vec_dot4[PLUMB_TYPE_Q6_K] = dot4_q6_k;
        set.widen = widen;
#ifdef PLUMB_HAVE_WIDE_DOT4X2
        set.wide_dot4x2_lanes[PLUMB_TYPE_Q4_0] = set.wide_dot4x2_lanes[PLUMB_TYPE_Q5_0] =
            set.wide_dot4x2_lanes[PLUMB_TYPE_Q8_0] = wide_dot4x2_lanes;
        /* the exact GEMM (run) and the block-sum one (plumb_context_params.fast_gemm) per type, its
         * kept layout differing; both run batches of under 8 rows exactly from it, as the one- and
         * four-row kernels would */
#define LEGACY(t, b, r)                                                                                                \
    {.rows = PLUMB_GEMM_ROWS, .wide = true, .block = 32, .pack_bytes = PLUMB_GEMM_BLOCK,                              \
     .act_bytes = PLUMB_GEMM_ACT_BLOCK, .pack = plumb__gemm16_pack, .prep = plumb__gemm16_prep, .run = (r),           \
     .keep_bytes = (b)*PLUMB_GEMM_ROWS, .keep = plumb__gemm16_keep_##t, .run_kept = plumb__gemm16_kept_##t,         \
     .unkeep = plumb__gemm16_unkeep_##t, .prep_kept = plumb__gemm16_prep_kept, .act_kept_bytes = PLUMB_GEMM_ACT_BLOCK}
        static const plumb_gemm_ops legacy_q4_0 = LEGACY(q4_0, 18, plumb__gemm16), legacy_q5_0 = LEGACY(q5_0, 22, plumb__gemm16),
                                    legacy_q8_0 = LEGACY(q8_0, 34, plumb__gemm16);
        static const plumb_gemm_ops sums_q4_0 = LEGACY(q4_0, 18, plumb__gemm16_block_sums),
                                    sums_q5_0 = LEGACY(q5_0, 22, plumb__gemm16_block_sums),
                                    sums_q8_0 = LEGACY(q8_0, 34, plumb__gemm16_block_sums);
#undef LEGACY
        /* Q4_K, Q6_K: prompts pack the file's rows to int16 per op; batches of under 8 rows run
         * from their kept layouts */
#define KQUANT(t, q4k)                                                                                                 \
    {.rows = PLUMB_GEMM_ROWS, .wide = false, .block = 256, .pack_bytes = PLUMB_GEMM_K_BLOCK,                          \
     .act_bytes = PLUMB_GEMM_K_ACT_BLOCK, .run_bytes = PLUMB_GEMM_KEPT_K_RUN_BYTES, .pack = plumb__gemm16_pack_##t,   \
     .prep = plumb__gemm16_prep_k, .run = plumb__gemm16_##t, .run2 = plumb__gemm32_##t, .keep_bytes = PLUMB_GEMM_KEPT_K_BLOCK(q4k),             \
     .keep = plumb__gemm16_keep_##t, .run_kept = plumb__gemm16_kept_##t, .prep_kept = plumb__gemm16_prep_sums,      \
     .act_kept_bytes = PLUMB_GEMM_KSUM_ACT_BLOCK, .kept_min_rows = (q4k) ? 1 : 2}
        /* Q6_K's single tokens: its one-row kernel streams a large matrix faster (Llama-sized
         * 4096 x 32000 head, two threads: 2.0 ms against 2.6-3.2 from the kept layout, whose
         * two masked adds per register for the fifth and sixth bits bound it) */
        static const plumb_gemm_ops q4k = KQUANT(q4_k, true), q6k = KQUANT(q6_k, false);
#undef KQUANT

        set.gemm[PLUMB_TYPE_Q4_0] = &legacy_q4_0;
        set.gemm[PLUMB_TYPE_Q5_0] = &legacy_q5_0;
        set.gemm[PLUMB_TYPE_Q8_0] = &legacy_q8_0;
        set.gemm_sums[PLUMB_TYPE_Q4_0] = &sums_q4_0;
        set.gemm_sums[PLUMB_TYPE_Q5_0] = &sums_q5_0;
        set.gemm_sums[PLUMB_TYPE_Q8_0] = &sums_q8_0;
        static const plumb_gemm_ops sums_q4k = KSUM_ACT_OPS(PLUMB_GEMM_ROWS, PLUMB_GEMM_KSUM_BLOCK, plumb__gemm16_pack_sums_q4_k,
                                                            plumb__gemm16_sums_q4_k);
        static const plumb_gemm_ops sums_q6k = KSUM_ACT_OPS(PLUMB_GEMM_ROWS, PLUMB_GEMM_KSUM_BLOCK, plumb__gemm16_pack_sums_q6_k,
                                                            plumb__gemm16_sums_q6_k);
        set.gemm_sums[PLUMB_TYPE_Q4_K] = &sums_q4k;
        set.gemm_sums[PLUMB_TYPE_Q6_K] = &sums_q6k;
        set.gemm[PLUMB_TYPE_Q4_K] = &q4k;
        set.gemm[PLUMB_TYPE_Q6_K] = &q6k;
#endif
#ifdef ACT4_AVX512_BLOCK_BYTES
        set.act_prep4 = act_prep4;
        set.act4_block_bytes = ACT4_AVX512_BLOCK_BYTES;
#else
        set.act_prep4 = act_prep4;
        set.act4_block_bytes = ACT4_AVX2_BLOCK_BYTES;
        static const plumb_gemm_ops legacy8 = GEMM_OPS(PLUMB_GEMM8_ROWS, true, 32, PLUMB_GEMM8_BLOCK, PLUMB_GEMM8_ACT_BLOCK,
                                               PLUMB_GEMM8_RUN_BYTES, plumb__gemm8_pack, plumb__gemm8_prep, plumb__gemm8);
        set.gemm[PLUMB_TYPE_Q4_0] = set.gemm[PLUMB_TYPE_Q5_0] = set.gemm[PLUMB_TYPE_Q8_0] = &legacy8;
        static const plumb_gemm_ops k8_q4k = KSUM_ACT_OPS(PLUMB_GEMM8_ROWS, PLUMB_GEMM8_K_BLOCK, plumb__gemm8_pack_q4_k, plumb__gemm8_q4_k);
        static const plumb_gemm_ops k8_q6k = KSUM_ACT_OPS(PLUMB_GEMM8_ROWS, PLUMB_GEMM8_K_BLOCK, plumb__gemm8_pack_q6_k, plumb__gemm8_q6_k);
        set.gemm[PLUMB_TYPE_Q4_K] = &k8_q4k;
        set.gemm[PLUMB_TYPE_Q6_K] = &k8_q6k;
#endif
        set.wide_dot[PLUMB_TYPE_Q4_0] = set.wide_dot[PLUMB_TYPE_Q5_0] = set.wide_dot[PLUMB_TYPE_Q8_0] = wide_dot;
        set.wide_dot4[PLUMB_TYPE_Q4_0] = set.wide_dot4[PLUMB_TYPE_Q5_0] = set.wide_dot4[PLUMB_TYPE_Q8_0] = wide_dot4;
        set.wide_dot[PLUMB_TYPE_Q4_K] = wide_dot_q4_k;
        set.wide_dot4[PLUMB_TYPE_Q4_K] = wide_dot4_q4_k;
        set.wide_dot[PLUMB_TYPE_Q6_K] = wide_dot_q6_k;
        set.wide_dot4[PLUMB_TYPE_Q6_K] = wide_dot4_q6_k;
        set.act_quantize[PLUMB_ACT_Q8_0] = plumb__act_q8_0_avx2;
        set.act_quantize[PLUMB_ACT_Q8_K] = plumb__act_q8_k_avx2;
        set.f32_to_f16 = f32_to_f16;
        set.round_f16 = round_f16;
        set.attn_dot = attn_dot;
        set.attn_qk = attn_qk;
        set.hsum8 = hsum8;
        set.wide_dot4_lanes[PLUMB_TYPE_Q4_0] = set.wide_dot4_lanes[PLUMB_TYPE_Q5_0] = set.wide_dot4_lanes[PLUMB_TYPE_Q8_0] = wide_dot4_lanes;
        set.attn_exp = attn_exp;
        set.attn_softmax = attn_softmax;
        set.attn_pv = attn_pv;
        set.silu = silu;
        set.gelu_f16 = gelu_f16;
        set.sum_squares = sum_squares;
        init = 1;
    }
    return &set;
}

#else
const plumb_kernel_set *PLUMB_X86_SET(void) { return NULL; }
#endif
