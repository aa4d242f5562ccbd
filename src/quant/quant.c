/* quant.c — the tensor type-traits table (name, block size, block bytes, reference kernels
 * per GGUF type id) and the public plumb_type_* / plumb_dequantize_row / plumb_quantize_row
 * functions that check their arguments and dispatch through it. */
#include "quant/quant.h"

#include "core/error.h"
#include "quant/quant_ref.h"

#include <stddef.h>

static const plumb_type_traits type_traits[PLUMB_TYPE_COUNT] = {
    [PLUMB_TYPE_F32] = {"F32", 1, 4, plumb__dequantize_f32, plumb__quantize_f32},
    [PLUMB_TYPE_F16] = {"F16", 1, 2, plumb__dequantize_f16, plumb__quantize_f16},
    [PLUMB_TYPE_BF16] = {"BF16", 1, 2, plumb__dequantize_bf16, plumb__quantize_bf16},
    [PLUMB_TYPE_Q4_0] = {"Q4_0", PLUMB_QK, PLUMB_Q4_0_BYTES, plumb__dequantize_q4_0, plumb__quantize_q4_0},
    [PLUMB_TYPE_Q4_1] = {"Q4_1", PLUMB_QK, PLUMB_Q4_1_BYTES, plumb__dequantize_q4_1, plumb__quantize_q4_1},
    [PLUMB_TYPE_Q5_0] = {"Q5_0", PLUMB_QK, PLUMB_Q5_0_BYTES, plumb__dequantize_q5_0, plumb__quantize_q5_0},
    [PLUMB_TYPE_Q5_1] = {"Q5_1", PLUMB_QK, PLUMB_Q5_1_BYTES, plumb__dequantize_q5_1, plumb__quantize_q5_1},
    [PLUMB_TYPE_Q8_0] = {"Q8_0", PLUMB_QK, PLUMB_Q8_0_BYTES, plumb__dequantize_q8_0, plumb__quantize_q8_0},
    [PLUMB_TYPE_Q2_K] = {"Q2_K", PLUMB_QK_K, PLUMB_Q2_K_BYTES, plumb__dequantize_q2_k, plumb__quantize_q2_k},
    [PLUMB_TYPE_Q3_K] = {"Q3_K", PLUMB_QK_K, PLUMB_Q3_K_BYTES, plumb__dequantize_q3_k, plumb__quantize_q3_k},
    [PLUMB_TYPE_Q4_K] = {"Q4_K", PLUMB_QK_K, PLUMB_Q4_K_BYTES, plumb__dequantize_q4_k, plumb__quantize_q4_k},
    [PLUMB_TYPE_Q5_K] = {"Q5_K", PLUMB_QK_K, PLUMB_Q5_K_BYTES, plumb__dequantize_q5_k, plumb__quantize_q5_k},
    [PLUMB_TYPE_Q6_K] = {"Q6_K", PLUMB_QK_K, PLUMB_Q6_K_BYTES, plumb__dequantize_q6_k, plumb__quantize_q6_k},
    [PLUMB_TYPE_Q8_K] = {"Q8_K", PLUMB_QK_K, PLUMB_Q8_K_BYTES, plumb__dequantize_q8_k, plumb__quantize_q8_k},
};

const plumb_type_traits *plumb__type_traits(int id) {
    if (id < 0 || id >= PLUMB_TYPE_COUNT || type_traits[id].name == NULL) return NULL;
    return &type_traits[id];
}

bool plumb_type_is_known(int id) { return plumb__type_traits(id) != NULL; }

const char *plumb_type_name(int id) {
    const plumb_type_traits *t = plumb__type_traits(id);
    return t ? t->name : NULL;
}

/* ASCII case folding (independent of the C locale). */
static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }

static bool name_equal_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b)) return false;
    return *a == *b;
}

int plumb_type_from_name(const char *name) {
    if (name == NULL) return -1;
    for (int id = 0; id < PLUMB_TYPE_COUNT; id++)
        if (type_traits[id].name && name_equal_nocase(name, type_traits[id].name)) return id;
    return -1;
}

int64_t plumb_type_block_size(int id) {
    const plumb_type_traits *t = plumb__type_traits(id);
    return t ? t->block_size : 0;
}

size_t plumb_type_block_bytes(int id) {
    const plumb_type_traits *t = plumb__type_traits(id);
    return t ? t->block_bytes : 0;
}

/* The checks shared by row_bytes, dequantize_row and quantize_row. */
static plumb_status check_row(const char *fn, int id, int64_t n, const plumb_type_traits **tt,
                              uint64_t *bytes) {
    const plumb_type_traits *t = plumb__type_traits(id);
    if (t == NULL) return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: unknown tensor type id %d", fn, id);
    if (n < 0)
        return plumb__fail(PLUMB_E_RANGE, "%s: %s: negative element count %lld", fn, t->name,
                           (long long)n);
    if (n % t->block_size != 0)
        return plumb__fail(PLUMB_E_RANGE,
                           "%s: %s: element count %lld is not a multiple of the block size %lld",
                           fn, t->name, (long long)n, (long long)t->block_size);
    const uint64_t blocks = (uint64_t)(n / t->block_size);
    if (blocks > UINT64_MAX / t->block_bytes)
        return plumb__fail(PLUMB_E_RANGE, "%s: %s: %lld elements overflow the byte count", fn,
                           t->name, (long long)n);
    *tt = t;
    *bytes = blocks * t->block_bytes;
    return PLUMB_OK;
}

plumb_status plumb_type_row_bytes(int id, int64_t n, uint64_t *out) {
    const plumb_type_traits *t = NULL;
    uint64_t bytes = 0;
    if (out == NULL) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_type_row_bytes: out is NULL");
    plumb_status st = check_row("plumb_type_row_bytes", id, n, &t, &bytes);
    if (st != PLUMB_OK) return st;
    *out = bytes;
    return PLUMB_OK;
}

/* Rows are processed in memory, so their byte and float counts must also fit size_t. */
static plumb_status check_fits_memory(const char *fn, const plumb_type_traits *t, int64_t n,
                                      uint64_t bytes) {
    if (bytes > SIZE_MAX || (uint64_t)n > SIZE_MAX / sizeof(float))
        return plumb__fail(PLUMB_E_RANGE, "%s: %s: %lld elements do not fit in memory", fn,
                           t->name, (long long)n);
    return PLUMB_OK;
}

plumb_status plumb_dequantize_row(int id, const void *src, float *dst, int64_t n) {
    static const char fn[] = "plumb_dequantize_row";
    const plumb_type_traits *t = NULL;
    uint64_t bytes = 0;
    plumb_status st = check_row(fn, id, n, &t, &bytes);
    if (st != PLUMB_OK) return st;
    if (src == NULL || dst == NULL)
        return plumb__fail(PLUMB_E_INVALID_ARG, "%s: %s is NULL", fn, src == NULL ? "src" : "dst");
    st = check_fits_memory(fn, t, n, bytes);
    if (st != PLUMB_OK) return st;
    t->dequantize(src, dst, n);
    return PLUMB_OK;
}

plumb_status plumb_quantize_row(int id, const float *src, void *dst, int64_t n) {
    static const char fn[] = "plumb_quantize_row";
    const plumb_type_traits *t = NULL;
    uint64_t bytes = 0;
    plumb_status st = check_row(fn, id, n, &t, &bytes);
    if (st != PLUMB_OK) return st;
    if (src == NULL || dst == NULL)
        return plumb__fail(PLUMB_E_INVALID_ARG, "%s: %s is NULL", fn, src == NULL ? "src" : "dst");
    st = check_fits_memory(fn, t, n, bytes);
    if (st != PLUMB_OK) return st;
    t->quantize(src, dst, n);
    return PLUMB_OK;
}
