/* quant_ref.h — the scalar reference kernels of every tensor type (quant_legacy.c,
 * quant_k.c) and the little helpers they share: little-endian field access, f16 scale
 * fields, NaN-safe float-to-int rounding. Internal to src/quant. */
#ifndef PLUMB_QUANT_QUANT_REF_H
#define PLUMB_QUANT_QUANT_REF_H

#include "quant/fp16.h"
#include "quant/quant.h"

#include <math.h>
#include <stdint.h>

/* Block sizes in bytes (spec section 2). */
#define PLUMB_Q4_0_BYTES 18
#define PLUMB_Q4_1_BYTES 20
#define PLUMB_Q5_0_BYTES 22
#define PLUMB_Q5_1_BYTES 24
#define PLUMB_Q8_0_BYTES 34
#define PLUMB_Q2_K_BYTES 84
#define PLUMB_Q3_K_BYTES 110
#define PLUMB_Q4_K_BYTES 144
#define PLUMB_Q5_K_BYTES 176
#define PLUMB_Q6_K_BYTES 210
#define PLUMB_Q8_K_BYTES 292

static inline uint16_t plumb__rd_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t plumb__rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline void plumb__wr_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xffu);
    p[1] = (uint8_t)(v >> 8);
}
static inline void plumb__wr_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)((v >> (8 * i)) & 0xffu);
}
/* An f16 field as float. */
static inline float plumb__rd_f16(const uint8_t *p) { return plumb__fp16_to_fp32(plumb__rd_u16(p)); }

/* A scale to f16, saturated to +-65504 so that finite input beyond the f16 range gives
 * finite (clipped) output instead of infinite scales. */
static inline uint16_t plumb__scale_to_fp16(float v) {
    if (v > 65504.0f) v = 65504.0f;
    if (v < -65504.0f) v = -65504.0f;
    return plumb__fp32_to_fp16(v);
}

/* Round to nearest (ties away from zero, as roundf) and clamp to [lo, hi]; NaN gives 0
 * clamped. Never converts an out-of-range float to int (undefined behaviour in C). */
static inline int plumb__round_clamp(float v, int lo, int hi) {
    if (v != v) v = 0.0f;
    if (v <= (float)lo) return lo;
    if (v >= (float)hi) return hi;
    int q = (int)roundf(v);
    return q < lo ? lo : (q > hi ? hi : q);
}
/* Truncate toward zero and clamp to [lo, hi]; NaN gives 0 clamped. */
static inline int plumb__trunc_clamp(float v, int lo, int hi) {
    if (v != v) v = 0.0f;
    if (v <= (float)lo) return lo;
    if (v >= (float)hi) return hi;
    return (int)v;
}

/* quant_legacy.c */
void plumb__dequantize_f32(const void *src, float *dst, int64_t k);
void plumb__quantize_f32(const float *src, void *dst, int64_t k);
void plumb__dequantize_f16(const void *src, float *dst, int64_t k);
void plumb__quantize_f16(const float *src, void *dst, int64_t k);
void plumb__dequantize_bf16(const void *src, float *dst, int64_t k);
void plumb__quantize_bf16(const float *src, void *dst, int64_t k);
void plumb__dequantize_q4_0(const void *src, float *dst, int64_t k);
void plumb__quantize_q4_0(const float *src, void *dst, int64_t k);
void plumb__dequantize_q4_1(const void *src, float *dst, int64_t k);
void plumb__quantize_q4_1(const float *src, void *dst, int64_t k);
void plumb__dequantize_q5_0(const void *src, float *dst, int64_t k);
void plumb__quantize_q5_0(const float *src, void *dst, int64_t k);
void plumb__dequantize_q5_1(const void *src, float *dst, int64_t k);
void plumb__quantize_q5_1(const float *src, void *dst, int64_t k);
void plumb__dequantize_q8_0(const void *src, float *dst, int64_t k);
void plumb__quantize_q8_0(const float *src, void *dst, int64_t k);

/* quant_k.c */
void plumb__dequantize_q2_k(const void *src, float *dst, int64_t k);
void plumb__quantize_q2_k(const float *src, void *dst, int64_t k);
void plumb__dequantize_q3_k(const void *src, float *dst, int64_t k);
void plumb__quantize_q3_k(const float *src, void *dst, int64_t k);
void plumb__dequantize_q4_k(const void *src, float *dst, int64_t k);
void plumb__quantize_q4_k(const float *src, void *dst, int64_t k);
void plumb__dequantize_q5_k(const void *src, float *dst, int64_t k);
void plumb__quantize_q5_k(const float *src, void *dst, int64_t k);
void plumb__dequantize_q6_k(const void *src, float *dst, int64_t k);
void plumb__quantize_q6_k(const float *src, void *dst, int64_t k);
void plumb__dequantize_q8_k(const void *src, float *dst, int64_t k);
void plumb__quantize_q8_k(const float *src, void *dst, int64_t k);

#endif
