/* quant_legacy.c — scalar reference kernels of the plain float types (F32, F16, BF16) and
 * the 32-element legacy block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
 *
 * Dequantization is bit-exact with gguf-py's numpy code (gguf.quants): the same float32
 * operations in the same order (Q4_0/Q5_0/Q8_0: d * q; Q4_1/Q5_1: (d * q) + m). The
 * products are exact (an f16 scale times an integer below 2^8 fits in 24 bits), so only the
 * final addition rounds; fused multiply-adds are switched off below all the same, so that
 * the equivalence never rests on that.
 * Quantization follows the classic round-to-nearest scheme of those formats (the same one
 * gguf-py implements), which makes its output byte-identical to gguf.quants.quantize for
 * inputs whose scale is a normal float. One deliberate difference: scales beyond the f16
 * range saturate to +-65504 (gguf-py writes infinity), so finite input always decodes to
 * finite output. */
#include "quant/quant_fp_strict.h"

#include "quant/quant_ref.h"

#include <float.h>
#include <string.h>


/* ---- plain float types ---------------------------------------------------------------- */

void plumb__dequantize_f32(const void *src, float *dst, int64_t k) {
    memcpy(dst, src, (size_t)k * sizeof(float));
}

void plumb__quantize_f32(const float *src, void *dst, int64_t k) {
    memcpy(dst, src, (size_t)k * sizeof(float));
}

void plumb__dequantize_f16(const void *src, float *dst, int64_t k) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < k; i++) dst[i] = plumb__rd_f16(p + 2 * i);
}

void plumb__quantize_f16(const float *src, void *dst, int64_t k) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < k; i++) plumb__wr_u16(p + 2 * i, plumb__fp32_to_fp16(src[i]));
}

void plumb__dequantize_bf16(const void *src, float *dst, int64_t k) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < k; i++) dst[i] = plumb__bf16_to_fp32(plumb__rd_u16(p + 2 * i));
}

void plumb__quantize_bf16(const float *src, void *dst, int64_t k) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < k; i++) plumb__wr_u16(p + 2 * i, plumb__fp32_to_bf16(src[i]));
}

/* ---- helpers for the 32-element blocks -------------------------------------------------- */

/* The element of largest magnitude, with its sign (the first one on ties). */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, m = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            m = x[i];
        }
    }
    if (amax == 0.0f) m = x[0]; /* all zeros: keep the sign of the first, as argmax does */
    return m;
}

static void min_max(const float *x, int n, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    *mn = lo;
    *mx = hi;
}

/* ---- Q4_0: d, qs[16]; y = (nibble - 8) d ---------------------------------------------- */

void plumb__dequantize_q4_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q4_0_BYTES, dst += PLUMB_QK) {
        const float d = plumb__rd_f16(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < PLUMB_QK / 2; j++) {
            dst[j] = d * (float)((qs[j] & 0x0f) - 8);
            dst[j + 16] = d * (float)((qs[j] >> 4) - 8);
        }
    }
}

/* The extreme element maps to -8 exactly; the others round half up, clamped to 15. */
void plumb__quantize_q4_0(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q4_0_BYTES, src += PLUMB_QK) {
        const float d = signed_absmax(src, PLUMB_QK) / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        plumb__wr_u16(b, plumb__scale_to_fp16(d));
        for (int j = 0; j < PLUMB_QK / 2; j++) {
            int q0 = plumb__trunc_clamp(src[j] * id + 8.5f, 0, 15);
            int q1 = plumb__trunc_clamp(src[j + 16] * id + 8.5f, 0, 15);
            b[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ---- Q4_1: d, m, qs[16]; y = nibble d + m --------------------------------------------- */

void plumb__dequantize_q4_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q4_1_BYTES, dst += PLUMB_QK) {
        const float d = plumb__rd_f16(b);
        const float m = plumb__rd_f16(b + 2);
        const uint8_t *qs = b + 4;
        for (int j = 0; j < PLUMB_QK / 2; j++) {
            const float t0 = d * (float)(qs[j] & 0x0f);
            const float t1 = d * (float)(qs[j] >> 4);
            dst[j] = t0 + m;
            dst[j + 16] = t1 + m;
        }
    }
}

void plumb__quantize_q4_1(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q4_1_BYTES, src += PLUMB_QK) {
        float mn, mx;
        min_max(src, PLUMB_QK, &mn, &mx);
        const float d = (mx - mn) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        plumb__wr_u16(b, plumb__scale_to_fp16(d));
        plumb__wr_u16(b + 2, plumb__scale_to_fp16(mn));
        for (int j = 0; j < PLUMB_QK / 2; j++) {
            int q0 = plumb__trunc_clamp((src[j] - mn) * id + 0.5f, 0, 15);
            int q1 = plumb__trunc_clamp((src[j + 16] - mn) * id + 0.5f, 0, 15);
            b[4 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ---- Q5_0 / Q5_1: 5-bit values, the 5th bits in a little-endian u32 qh ---------------- */

static inline int q5_value(const uint8_t *qs, uint32_t qh, int j) {
    int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
    return lo | (int)(((qh >> j) & 1u) << 4);
}

static void pack_q5(const int *q, uint8_t *qh4, uint8_t *qs) {
    uint32_t qh = 0;
    for (int j = 0; j < PLUMB_QK; j++) qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    plumb__wr_u32(qh4, qh);
    for (int j = 0; j < PLUMB_QK / 2; j++) qs[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
}

void plumb__dequantize_q5_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q5_0_BYTES, dst += PLUMB_QK) {
        const float d = plumb__rd_f16(b);
        const uint32_t qh = plumb__rd_u32(b + 2);
        for (int j = 0; j < PLUMB_QK; j++) dst[j] = d * (float)(q5_value(b + 6, qh, j) - 16);
    }
}

void plumb__quantize_q5_0(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q5_0_BYTES, src += PLUMB_QK) {
        const float d = signed_absmax(src, PLUMB_QK) / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[PLUMB_QK];
        for (int j = 0; j < PLUMB_QK; j++) q[j] = plumb__trunc_clamp(src[j] * id + 16.5f, 0, 31);
        plumb__wr_u16(b, plumb__scale_to_fp16(d));
        pack_q5(q, b + 2, b + 6);
    }
}

void plumb__dequantize_q5_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q5_1_BYTES, dst += PLUMB_QK) {
        const float d = plumb__rd_f16(b);
        const float m = plumb__rd_f16(b + 2);
        const uint32_t qh = plumb__rd_u32(b + 4);
        for (int j = 0; j < PLUMB_QK; j++) {
            const float t = d * (float)q5_value(b + 8, qh, j);
            dst[j] = t + m;
        }
    }
}

void plumb__quantize_q5_1(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q5_1_BYTES, src += PLUMB_QK) {
        float mn, mx;
        min_max(src, PLUMB_QK, &mn, &mx);
        const float d = (mx - mn) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[PLUMB_QK];
        for (int j = 0; j < PLUMB_QK; j++) q[j] = plumb__trunc_clamp((src[j] - mn) * id + 0.5f, 0, 31);
        plumb__wr_u16(b, plumb__scale_to_fp16(d));
        plumb__wr_u16(b + 2, plumb__scale_to_fp16(mn));
        pack_q5(q, b + 4, b + 8);
    }
}

/* ---- Q8_0: d, qs[32] int8; y = q d ---------------------------------------------------- */

void plumb__dequantize_q8_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q8_0_BYTES, dst += PLUMB_QK) {
        const float d = plumb__rd_f16(b);
        for (int j = 0; j < PLUMB_QK; j++) dst[j] = (float)(int8_t)b[2 + j] * d;
    }
}

void plumb__quantize_q8_0(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < k / PLUMB_QK; i++, b += PLUMB_Q8_0_BYTES, src += PLUMB_QK) {
        float amax = 0.0f;
        for (int j = 0; j < PLUMB_QK; j++) {
            float a = fabsf(src[j]);
            if (a > amax) amax = a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        plumb__wr_u16(b, plumb__scale_to_fp16(d));
        for (int j = 0; j < PLUMB_QK; j++) {
            int q = plumb__round_clamp(src[j] * id, -127, 127);
            b[2 + j] = (uint8_t)(int8_t)q;
        }
    }
}
