/* fp16.h — inline IEEE half and bfloat16 <-> float conversions by bit manipulation, used by
 * the quantization kernels; fp16.c exports them as plumb_fp16_to_fp32 and friends.
 * Rounding is to nearest, ties to even. Half NaNs widen to float NaNs with the payload kept
 * bit for bit (as numpy does); float NaNs narrow to quiet half/bfloat16 NaNs that keep the
 * top payload bits and the sign. */
#ifndef PLUMB_QUANT_FP16_H
#define PLUMB_QUANT_FP16_H

#include <stdint.h>
#include <string.h>

static inline uint32_t plumb__f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float plumb__f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float plumb__fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1fu) {
        /* infinity or NaN: payload moved to the top of the float mantissa, unchanged */
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign; /* signed zero */
        } else {
            /* subnormal: mant * 2^-24; shift until the implicit bit (bit 10) is set */
            int32_t e = 1;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                e--;
            }
            mant &= 0x3ffu;
            /* value = 1.mant * 2^(e - 15), float bias 127 */
            bits = sign | ((uint32_t)(e + 112) << 23) | (mant << 13);
        }
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    return plumb__f32_from_bits(bits);
}

/* Shift m right by s (s >= 1) rounding to nearest, ties to even. */
static inline uint32_t plumb__shift_rne(uint32_t m, unsigned s) {
    uint32_t q = m >> s;
    uint32_t rem = m & ((1u << s) - 1u);
    uint32_t half = 1u << (s - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return q;
}

static inline uint16_t plumb__fp32_to_fp16(float f) {
    uint32_t x = plumb__f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        /* NaN: quiet, keep the top 9 payload bits */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x47800000u) {
        /* |f| >= 2^16 (or infinite): beyond the largest half even after rounding */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (ax >= 0x38800000u) {
        /* normal half range: rebias the exponent (127 -> 15) and round off 13 bits; a
         * carry out of the mantissa correctly bumps the exponent (up to infinity). */
        uint32_t h = plumb__shift_rne(ax - 0x38000000u, 13);
        return (uint16_t)(sign | h);
    }
    if (ax <= 0x33000000u) {
        /* |f| <= 2^-25: rounds to zero (2^-25 itself is a tie with the even zero) */
        return sign;
    }
    /* subnormal half: value = m * 2^(e - 150); in units of 2^-24 that is m >> (126 - e) */
    {
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t h = plumb__shift_rne(m, 126u - e);
        return (uint16_t)(sign | h);
    }
}

static inline float plumb__bf16_to_fp32(uint16_t h) {
    return plumb__f32_from_bits((uint32_t)h << 16);
}

static inline uint16_t plumb__fp32_to_bf16(float f) {
    uint32_t x = plumb__f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((x >> 16) | 0x40u); /* NaN: force quiet, keep sign and payload top */
    }
    /* round to nearest even on the 16 dropped bits; cannot overflow 32 bits */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

#endif
