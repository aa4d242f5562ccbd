/* x86_kquant.h — K-quant decoding shared by the x86 kernels (x86_avx2.c's dot products, the
 * GEMMs' packing and preparation): the 6-bit codes of half a Q6_K super-block as bytes, a Q4_K
 * super-block's scales and mins, a Q8_K block's sums and prepared tail, a whole super-block's
 * codes, scales and offsets (plumb__k_codes); with AVX-512 a 32-bit broadcast, the K lanes' fold
 * and the legacy GEMMs' scale products. Needs AVX2. */
#ifndef PLUMB_X86_KQUANT_H
#define PLUMB_X86_KQUANT_H

#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Half h of super-block a: q[k] holds the codes (0..63) of values 128 h + 32 k .. + 31: the low
 * nibbles of a + 64 h (k = 0, 1: the two 32-byte halves; k = 2, 3: their high nibbles), each
 * with two bits of a + 128 + 32 h (bits 2k, 2k + 1) on top. */
static inline void plumb__q6k_codes(const uint8_t *a, int h, __m256i q[4]) {
    const uint8_t *L = a + 64 * h, *H = a + 128 + 32 * h;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    const __m256i l0 = _mm256_loadu_si256((const __m256i *)L), l1 = _mm256_loadu_si256((const __m256i *)(L + 32));
    const __m256i hb = _mm256_loadu_si256((const __m256i *)H);
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
}

/* The eight 6-bit scales and mins of a Q4_K super-block from its 12 bytes at s. */
static inline void plumb__q4k_scales_mins(const uint8_t *s, int16_t *sc, int16_t *mn) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = s[j] & 63, mn[j] = s[j + 4] & 63;
        } else {
            sc[j] = (int16_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
            mn[j] = (int16_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
        }
    }
}

/* A Q8_K activation block's 16 sums of 16 values (int16, as stored) to bs and its 8 sums of 32
 * to s32. */
static inline void plumb__q8k_sums(const uint8_t *x, int16_t *bs, int16_t *s32) {
    memcpy(bs, x + 260, 32);
    for (int m = 0; m < 8; m++) s32[m] = (int16_t)(bs[2 * m] + bs[2 * m + 1]);
}

/* What the GEMMs' activation forms keep of a Q8_K block x besides its values: the 16 sums of 16
 * at bsums, the 8 sums of 32 at s32 (int16), d and -d at d. */
static inline void plumb__q8k_prep_tail(const uint8_t *x, uint8_t *bsums, uint8_t *s32, uint8_t *d) {
    int16_t bs[16], s[8];
    plumb__q8k_sums(x, bs, s);
    memcpy(bsums, bs, 32);
    memcpy(s32, s, 16);
    float v;
    memcpy(&v, x, 4);
    const float nv = -v;
    memcpy(d, &v, 4);
    memcpy(d + 4, &nv, 4);
}

/* A Q4_K (144 bytes) or Q6_K (210 bytes) super-block a taken apart for the GEMMs: its 256
 * codes, unsigned, in element order (Q4_K 0..15, Q6_K 0..63), d (and Q4_K's dmin; Q6_K 0), the
 * scale of each group (Q4_K: 8 sub-blocks of 32 values; Q6_K: 16 groups of 16, signed), and 8
 * int16 pairs: Q4_K the mins of sub-blocks 2k, 2k + 1 (k < 4; then zeros), Q6_K -32 times the
 * scales of groups 2l, 2l + 1. */
static inline void plumb__k_codes(bool q4k, const uint8_t *a, uint8_t codes[256], float *d, float *dmin, int16_t sc[16],
                                  int16_t extra[16]) {
    uint16_t h;
    if (q4k) {
        memcpy(&h, a, 2);
        *d = _cvtsh_ss(h);
        memcpy(&h, a + 2, 2);
        *dmin = _cvtsh_ss(h);
        int16_t mn[8];
        plumb__q4k_scales_mins(a + 4, sc, mn);
        for (int k = 0; k < 8; k++) extra[2 * k] = k < 4 ? mn[2 * k] : 0, extra[2 * k + 1] = k < 4 ? mn[2 * k + 1] : 0;
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(a + 16 + 32 * c));
            _mm256_storeu_si256((__m256i *)(codes + 64 * c), _mm256_and_si256(q, m4));
            _mm256_storeu_si256((__m256i *)(codes + 64 * c + 32), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
        }
        return;
    }
    memcpy(&h, a + 208, 2);
    *d = _cvtsh_ss(h);
    *dmin = 0.0f;
    const int8_t *s8 = (const int8_t *)(a + 192);
    for (int g = 0; g < 16; g++) sc[g] = s8[g];
    for (int l = 0; l < 8; l++) extra[2 * l] = (int16_t)(-32 * s8[2 * l]), extra[2 * l + 1] = (int16_t)(-32 * s8[2 * l + 1]);
    for (int hh = 0; hh < 2; hh++) {
        __m256i q[4];
        plumb__q6k_codes(a, hh, q);
        for (int k = 0; k < 4; k++) _mm256_storeu_si256((__m256i *)(codes + 128 * hh + 32 * k), q[k]);
    }
}

#if defined(__AVX512F__)
/* One output's lanes folded as hsum8 adds them, ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)), plus
 * (Q4_K, mins not NULL) its four lanes of min products as (m0 + m2) + (m1 + m3). */
static inline __m512 plumb__fold_k_lanes(const __m512 *l, const __m512 *mins) {
    const __m512 a = _mm512_add_ps(_mm512_add_ps(l[0], l[4]), _mm512_add_ps(l[2], l[6]));
    const __m512 b = _mm512_add_ps(_mm512_add_ps(l[1], l[5]), _mm512_add_ps(l[3], l[7]));
    const __m512 r = _mm512_add_ps(a, b);
    return mins ? _mm512_add_ps(r, _mm512_add_ps(_mm512_add_ps(mins[0], mins[2]), _mm512_add_ps(mins[1], mins[3]))) : r;
}

/* The 4 bytes at p in every 32-bit lane of a 512-bit register. */
static inline __m512i plumb__bcast32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* The legacy GEMMs' scale products of a block for TT tokens: d[t] = dw times token t's F32 scale
 * (at x + t xs + 64 in their prepared activations). */
static inline __attribute__((always_inline)) void plumb__scale_products(__m512 dw, const uint8_t *x, size_t xs, const int TT,
                                                                      __m512 *d) {
    for (int t = 0; t < TT; t++) {
        float dx;
        memcpy(&dx, x + (size_t)t * xs + 64, 4);
        d[t] = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
    }
}
#endif

#endif
