/* x86_q6k.h — the 6-bit codes of half a Q6_K super-block as bytes, for the x86 kernels that
 * read Q6_K (x86_avx2.c's dot product, x86_avx512_gemm_k.c's packing). Needs AVX2. */
#ifndef PLUMB_X86_Q6K_H
#define PLUMB_X86_Q6K_H

#include <immintrin.h>
#include <stdint.h>

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

#endif
