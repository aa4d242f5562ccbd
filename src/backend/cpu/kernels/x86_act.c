/* x86_act.c — the activation quantizers of the x86 sets (AVX2; the AVX-512 set uses them too):
 * Q8_0 and Q8_K rows with generic.c's bytes exactly, for every input, NaN and infinity
 * included. A prompt quantizes every matmul's activation rows, one pass over them per matmul;
 * the scalar loops took about 8% of a prompt's time (the Q8_K one tracks its signed maximum
 * element by element).
 *
 * The block maximum of |x| is order-free: _mm256_max_ps(v, m) is `v > m ? v : m`, which passes
 * over a NaN just as the scalar loop does, and the maximum of numbers does not depend on the
 * order it is taken in. Q8_K's signed maximum is the first element whose |x| equals it (the
 * scalar loop replaces only on a strictly greater value). The rounding is the scalar one, lane
 * by lane: add 1.5 * 2^23, keep the low 23 bits, less 2^22. */
#include "backend/cpu/kernels/kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>
#include <string.h>

static inline __m256 abs_ps(__m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

/* max |x| over 8 k floats, NaNs passed over (0 when all are) */
static inline float abs_max(const float *x, int k) {
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < k; i++) m = _mm256_max_ps(abs_ps(_mm256_loadu_ps(x + 8 * i)), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* nearest_int(v * s) of generic.c for 8 floats */
static inline __m256i round_scaled(const float *x, __m256 s) {
    const __m256 f = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x), s), _mm256_set1_ps(12582912.0f));
    return _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(f), _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
}

/* 32 int32 (four registers, already in [-128, 255] after the caller's clamp or mask) to bytes
 * in order: packs work within 128-bit halves, the permute puts the dwords back in order */
static inline void store_bytes(__m256i a, __m256i b, __m256i c, __m256i d, void *out) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i q = _mm256_packs_epi16(ab, cd);
    _mm256_storeu_si256(out, _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/* the low byte of each int32 as a signed value: the scalar (int8_t) cast */
static inline __m256i low_byte(__m256i v) { return _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24); }

void plumb__act_q8_0_avx2(const float *x, void *out, int64_t n) {
    uint8_t *o = out;
    for (int64_t b = 0; b < n / 32; b++, x += 32, o += 34) {
        const float amax = abs_max(x, 4);
        const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const uint16_t dh = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        memcpy(o, &dh, 2);
        const __m256 s = _mm256_set1_ps(id);
        store_bytes(low_byte(round_scaled(x, s)), low_byte(round_scaled(x + 8, s)), low_byte(round_scaled(x + 16, s)),
                    low_byte(round_scaled(x + 24, s)), o + 2);
    }
}

static inline int hsum_epi32(__m256i v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    return _mm_cvtsi128_si32(h);
}

void plumb__act_q8_k_avx2(const float *x, void *out, int64_t n) {
    uint8_t *o = out;
    const __m256i lo = _mm256_set1_epi32(-128), hi = _mm256_set1_epi32(127);
    for (int64_t b = 0; b < n / 256; b++, x += 256, o += 292) {
        const float amax = abs_max(x, 32);
        if (amax == 0.0f) {
            memset(o, 0, 292);
            continue;
        }
        float max = 0.0f;
        const __m256 am = _mm256_set1_ps(amax);
        for (int i = 0; i < 32; i++) {
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + 8 * i)), am, _CMP_EQ_OQ));
            if (hit) {
                max = x[8 * i + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 s = _mm256_set1_ps(iscale);
        int16_t bsums[16];
        for (int g = 0; g < 8; g++) { /* 32 values: two sums of 16 */
            __m256i q[4];
            for (int k = 0; k < 4; k++) q[k] = _mm256_min_epi32(_mm256_max_epi32(round_scaled(x + 32 * g + 8 * k, s), lo), hi);
            bsums[2 * g] = (int16_t)hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            bsums[2 * g + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(q[2], q[3]));
            store_bytes(q[0], q[1], q[2], q[3], o + 4 + 32 * g);
        }
        const float d = 1.0f / iscale;
        memcpy(o, &d, 4);
        memcpy(o + 260, bsums, sizeof bsums);
    }
}

#endif
