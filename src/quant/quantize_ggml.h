/* quantize_ggml.h — row quantizers that write exactly the bytes llama.cpp writes
 * (ggml_quantize_chunk, the function behind llama_model_quantize) for F16, BF16, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, with or without an importance matrix.
 * They are a different idea from the reference kernels of quant_legacy.c / quant_k.c (which
 * quantize activations and tests' data their own way): what a model file written by plumb
 * quantize holds must match, byte for byte, what llama-quantize would have written.
 *
 * Bit-identity rests on evaluating the same float32 operations in the same order as the
 * reference, without fused multiply-adds, and on reproducing its integer conversions where
 * they leave the range of the target type (x86-64's truncating conversions, int to
 * uint8/int8 wrap-around); the files implementing them say so where it matters.
 * tests/unit/test_quantize_ref.c checks them against llama.cpp's output on committed data
 * (scripts/make-quant-golden.py). Internal to src/quant. */
#ifndef PLUMB_QUANT_QUANTIZE_GGML_H
#define PLUMB_QUANT_QUANTIZE_GGML_H

#include "plumb.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Quantizes nrows rows of n_per_row floats from src (nrows x n_per_row, row-major) into dst
 * (nrows rows of plumb_type_row_bytes(type, n_per_row) bytes each), as llama.cpp's
 * ggml_quantize_chunk does. imatrix: NULL, or n_per_row importance weights, one per column
 * (ignored by F16, BF16 and Q8_0, as llama.cpp ignores it). Rows are independent, so a
 * caller may split a tensor's rows between threads. Returns PLUMB_E_UNSUPPORTED for a type
 * this file does not quantize, PLUMB_E_INVALID_ARG when n_per_row is not a positive
 * multiple of the type's block size, nrows is negative, or src/dst is NULL with nrows > 0.
 * Writes nothing on failure. */
plumb_status plumb__quantize_rows(int type, const float *src, void *dst, int64_t nrows,
                                  int64_t n_per_row, const float *imatrix);

/* Whether plumb__quantize_rows quantizes type. */
bool plumb__quantize_rows_supports(int type);

/* ---- shared by the quantize_ggml*.c files ------------------------------------------------ */

/* One row of n_per_row floats to one row of blocks; imatrix NULL or n_per_row weights. */
typedef void (*plumb__ggml_row_fn)(const float *x, uint8_t *y, int64_t n_per_row,
                                   const float *imatrix);

void plumb__ggml_row_q4_0(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q4_1(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q5_0(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q5_1(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q8_0(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q2_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q3_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q4_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q5_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);
void plumb__ggml_row_q6_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix);

/* Groups whose largest magnitude is below this are all-zero to the scale searches. */
#define PLUMB_GGML_GROUP_EPS 1e-15f

/* Round to nearest, ties to even, by adding 1.5 * 2^23 and reading the low mantissa bits:
 * exact for |v| < 2^22; beyond that (and for NaN/inf) it gives the same wrapped value as the
 * reference instead of a proper rounding, which is what bit-identity needs. */
static inline int plumb__ggml_nearest(float v) {
    float biased = v + 12582912.0f;
    int32_t bits;
    memcpy(&bits, &biased, sizeof bits);
    return (int)(bits & 0x007fffff) - 0x00400000;
}

/* A float converted to int32 as x86-64's cvttss2si/cvttps2dq do (C leaves out-of-range
 * conversions undefined): truncation toward zero, and INT32_MIN for NaN and for values
 * outside the int32 range. The reference's float-to-int8/uint8 casts compile to this
 * followed by keeping the low 8 bits. */
static inline int32_t plumb__ggml_trunc_i32(float v) {
    if (!(v >= -2147483648.0f && v < 2147483648.0f)) return INT32_MIN;
    return (int32_t)v;
}

/* (int8_t)v in the reference: the low byte of the truncated value, read as signed. */
static inline int plumb__ggml_to_i8(float v) {
    int low = (int)((uint32_t)plumb__ggml_trunc_i32(v) & 0xffu);
    return low >= 128 ? low - 256 : low;
}

/* (uint8_t)v in the reference. */
static inline int plumb__ggml_to_u8(float v) {
    return (int)((uint32_t)plumb__ggml_trunc_i32(v) & 0xffu);
}

/* An int stored into an int8_t / uint8_t field: wraps modulo 256. */
static inline int plumb__ggml_wrap_i8(int v) {
    int low = (int)((unsigned)v & 0xffu);
    return low >= 128 ? low - 256 : low;
}
static inline uint8_t plumb__ggml_wrap_u8(int v) { return (uint8_t)((unsigned)v & 0xffu); }

/* Writes v as the reference's f16 scale field: round to nearest even, overflow to infinity,
 * and NaN as the quiet NaN 0x7e00 with v's sign (plumb__fp32_to_fp16 keeps NaN payloads). */
void plumb__ggml_put_f16(uint8_t *p, float v);
/* An f16 field as float. */
float plumb__ggml_get_f16(const uint8_t *p);

/* The scale searches (quantize_ggml_fit.c). Each fits n values x to integer levels L with a
 * scale (and, for fit_min, an offset), minimizing a weighted error the way the reference
 * does, and returns the scale.
 *
 * fit_symmetric: levels -nmax..nmax-1, stored in L offset by nmax (0..2*nmax-1); weights
 *   w (NULL: x*x); tries 18 scales around nmax/max|x| and keeps the best by the weighted
 *   least-squares criterion.
 * fit_q3: the same levels with weights x*x, refined by up to 5 rounds of moving single
 *   values to a better level (Q3_K without an importance matrix).
 * fit_min: levels 0..nmax with an offset min <= 0 (*neg_min = -min); weights w; tries
 *   nstep + 1 scales (nmax + rmin + rdelta*is) over (max - min), each refit by weighted
 *   least squares, keeping the one of least weighted absolute (use_mad) or squared error.
 *   Laux: n bytes of scratch.
 * fit_positive: non-negative values x to levels 0..nmax with weights w (the K formats'
 *   6- and 4-bit scales of scales); levels of negative x wrap as in the reference. */
float plumb__ggml_fit_symmetric(int n, int nmax, const float *x, const float *w, int8_t *L);
float plumb__ggml_fit_q3(int n, int nmax, const float *x, int8_t *L);
float plumb__ggml_fit_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                          float *neg_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                          bool use_mad);
float plumb__ggml_fit_positive(int n, int nmax, const float *x, uint8_t *L, const float *w);

#endif
