/* quantize_ggml.c — plumb__quantize_rows (quantize_ggml.h): checks its arguments and hands
 * each row to the type's llama.cpp-compatible row quantizer (quantize_ggml_legacy.c,
 * quantize_ggml_k.c); the F16 and BF16 conversions, and the f16 scale fields those files
 * share. */
#include "quant/quantize_ggml.h"

#include "core/error.h"
#include "quant/quant.h"
#include "quant/quant_ref.h"

#include <stddef.h>

void plumb__ggml_put_f16(uint8_t *p, float v) {
    uint16_t h;
    if (v != v)
        h = (uint16_t)(((plumb__f32_bits(v) >> 16) & 0x8000u) | 0x7e00u);
    else
        h = plumb__fp32_to_fp16(v); /* round to nearest even, as the reference, for non-NaN */
    plumb__wr_u16(p, h);
}

float plumb__ggml_get_f16(const uint8_t *p) { return plumb__fp16_to_fp32(plumb__rd_u16(p)); }

static void row_f16(const float *x, uint8_t *y, int64_t n, const float *imatrix) {
    (void)imatrix;
    for (int64_t j = 0; j < n; j++) plumb__ggml_put_f16(y + 2 * j, x[j]);
}

static void row_bf16(const float *x, uint8_t *y, int64_t n, const float *imatrix) {
    (void)imatrix;
    /* round to nearest even; NaN quieted with its sign and top payload bits kept */
    for (int64_t j = 0; j < n; j++) plumb__wr_u16(y + 2 * j, plumb__fp32_to_bf16(x[j]));
}

static plumb__ggml_row_fn row_fn(int type) {
    switch (type) {
    case PLUMB_TYPE_F16: return row_f16;
    case PLUMB_TYPE_BF16: return row_bf16;
    case PLUMB_TYPE_Q4_0: return plumb__ggml_row_q4_0;
    case PLUMB_TYPE_Q4_1: return plumb__ggml_row_q4_1;
    case PLUMB_TYPE_Q5_0: return plumb__ggml_row_q5_0;
    case PLUMB_TYPE_Q5_1: return plumb__ggml_row_q5_1;
    case PLUMB_TYPE_Q8_0: return plumb__ggml_row_q8_0;
    case PLUMB_TYPE_Q2_K: return plumb__ggml_row_q2_k;
    case PLUMB_TYPE_Q3_K: return plumb__ggml_row_q3_k;
    case PLUMB_TYPE_Q4_K: return plumb__ggml_row_q4_k;
    case PLUMB_TYPE_Q5_K: return plumb__ggml_row_q5_k;
    case PLUMB_TYPE_Q6_K: return plumb__ggml_row_q6_k;
    default: return NULL;
    }
}

bool plumb__quantize_rows_supports(int type) { return row_fn(type) != NULL; }

plumb_status plumb__quantize_rows(int type, const float *src, void *dst, int64_t nrows,
                                  int64_t n_per_row, const float *imatrix) {
    static const char fn[] = "plumb__quantize_rows";
    const plumb__ggml_row_fn quantize = row_fn(type);
    const plumb_type_traits *t = plumb__type_traits(type);
    if (quantize == NULL || t == NULL)
        return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: cannot quantize to type %s (id %d)", fn,
                           t ? t->name : "unknown", type);
    if (n_per_row <= 0 || n_per_row % t->block_size != 0)
        return plumb__fail(PLUMB_E_INVALID_ARG,
                           "%s: %s: row length %lld is not a positive multiple of the block size %lld",
                           fn, t->name, (long long)n_per_row, (long long)t->block_size);
    if (nrows < 0)
        return plumb__fail(PLUMB_E_INVALID_ARG, "%s: %s: negative row count %lld", fn, t->name,
                           (long long)nrows);
    if (nrows > 0 && (src == NULL || dst == NULL))
        return plumb__fail(PLUMB_E_INVALID_ARG, "%s: %s: %s is NULL", fn, t->name,
                           src == NULL ? "src" : "dst");
    /* the caller holds both buffers in memory, so their sizes fit size_t; check all the same
     * that the row's byte count is representable before stepping by it */
    const uint64_t blocks = (uint64_t)(n_per_row / t->block_size);
    if (blocks > SIZE_MAX / t->block_bytes)
        return plumb__fail(PLUMB_E_INVALID_ARG, "%s: %s: row length %lld overflows the row size",
                           fn, t->name, (long long)n_per_row);
    const size_t row_bytes = (size_t)blocks * t->block_bytes;
    uint8_t *out = dst;
    for (int64_t r = 0; r < nrows; r++)
        quantize(src + r * n_per_row, out + (size_t)r * row_bytes, n_per_row, imatrix);
    return PLUMB_OK;
}
