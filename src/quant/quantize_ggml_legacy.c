/* quantize_ggml_legacy.c — the llama.cpp-compatible quantizers of the 32-element block
 * formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (quantize_ggml.h), one row at a time.
 *
 * Without an importance matrix each block is rounded on its own from its extreme value
 * (llama.cpp's deterministic reference path). With one, the scale (and offset) of each
 * block comes from the weighted searches of quantize_ggml_fit.c, the weight of value j
 * being imatrix[j] * sqrt(sigma2 + x[j]^2) with sigma2 the row's mean square. Q8_0 ignores
 * the importance matrix, as llama.cpp does.
 *
 * Layouts (little-endian, f16 scales): Q4_0 d, qs[16]; Q4_1 d, m, qs[16]; Q5_0 d, qh[4],
 * qs[16]; Q5_1 d, m, qh[4], qs[16]; Q8_0 d, qs[32]. Nibble j of a block holds element j
 * (low) and j + 16 (high); bit j of qh is the fifth bit of element j. */
#include "quant/quant_fp_strict.h"

#include "quant/quantize_ggml.h"

#include "quant/quant.h"
#include "quant/quant_ref.h"

#include <float.h>
#include <math.h>


#define QK PLUMB_QK

/* The row's mean square, the base of the importance weights: a left-to-right sum. */
static float row_mean_square(const float *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t j = 0; j < n; j++) sum += x[j] * x[j];
    return sum / (float)n;
}

static void importance_weights(const float *x, const float *qw, float sigma2, float *w) {
    for (int j = 0; j < QK; j++) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* The value of largest magnitude in a block (the first of equal magnitudes). */
static float block_signed_absmax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void block_min_max(const float *x, float *min_out, float *max_out) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    *min_out = min;
    *max_out = max;
}

/* Packs 32 5-bit levels: low nibbles into qs (j and j + 16 share a byte), fifth bits into
 * the 32-bit little-endian qh. */
static void pack_5bit(const uint8_t *lv, uint8_t *qh, uint8_t *qs) {
    uint32_t high = 0;
    for (int j = 0; j < QK / 2; j++) {
        qs[j] = (uint8_t)((lv[j] & 0x0fu) | ((lv[j + QK / 2] & 0x0fu) << 4));
        high |= ((uint32_t)(lv[j] & 0x10u) >> 4) << j;
        high |= ((uint32_t)(lv[j + QK / 2] & 0x10u) >> 4) << (j + QK / 2);
    }
    plumb__wr_u32(qh, high);
}

/* A block quantized on its own (no importance matrix), or from its importance weights w. */
typedef void (*block_plain)(const float *x, uint8_t *y);
typedef void (*block_weighted)(const float *x, const float *w, uint8_t *y);

/* A row of 32-element blocks of block_bytes each: block by block, plain without an importance
 * matrix, else weighted with imatrix[j] * sqrt(sigma2 + x[j]^2). */
static void row_blocks(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix, size_t block_bytes,
                       block_plain plain, block_weighted weighted) {
    const int64_t nb = n_per_row / QK;
    const float sigma2 = imatrix ? row_mean_square(x, n_per_row) : 0.0f;
    float w[QK];
    for (int64_t b = 0; b < nb; b++) {
        if (!imatrix) {
            plain(x + QK * b, y + block_bytes * (size_t)b);
            continue;
        }
        importance_weights(x + QK * b, imatrix + QK * b, sigma2, w);
        weighted(x + QK * b, w, y + block_bytes * (size_t)b);
    }
}

/* ---- Q4_0: d, 16 bytes of nibbles; x ~ d * (q - 8) ------------------------------------ */

static void q4_0_block_plain(const float *x, uint8_t *y) {
    const float max = block_signed_absmax(x);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    plumb__ggml_put_f16(y, d);
    for (int j = 0; j < QK / 2; j++) {
        int lo = plumb__ggml_to_i8(x[j] * id + 8.5f);
        int hi = plumb__ggml_to_i8(x[j + QK / 2] * id + 8.5f);
        lo = lo < 15 ? lo : 15;
        hi = hi < 15 ? hi : 15;
        /* a negative level (only from non-finite input) keeps its wrapped byte, as in the
         * reference, where the high nibble's shift also lands in the byte */
        y[2 + j] = plumb__ggml_wrap_u8(plumb__ggml_wrap_u8(lo) | (plumb__ggml_wrap_u8(hi) << 4));
    }
}

static void q4_0_block_weighted(const float *x, const float *w, uint8_t *y) {
    int8_t lv[QK];
    plumb__ggml_put_f16(y, plumb__ggml_fit_symmetric(QK, 8, x, w, lv));
    for (int j = 0; j < QK / 2; j++) y[2 + j] = (uint8_t)(lv[j] | (lv[j + QK / 2] << 4));
}

void plumb__ggml_row_q4_0(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    row_blocks(x, y, n_per_row, imatrix, PLUMB_Q4_0_BYTES, q4_0_block_plain, q4_0_block_weighted);
}

/* ---- Q4_1: d, m, 16 bytes of nibbles; x ~ d * q + m ------------------------------------ */

static void q4_1_block_plain(const float *x, uint8_t *y) {
    float min, max;
    block_min_max(x, &min, &max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    plumb__ggml_put_f16(y, d);
    plumb__ggml_put_f16(y + 2, min);
    for (int j = 0; j < QK / 2; j++) {
        int lo = plumb__ggml_to_i8((x[j] - min) * id + 0.5f);
        int hi = plumb__ggml_to_i8((x[j + QK / 2] - min) * id + 0.5f);
        lo = lo < 15 ? lo : 15;
        hi = hi < 15 ? hi : 15;
        y[4 + j] = plumb__ggml_wrap_u8(plumb__ggml_wrap_u8(lo) | (plumb__ggml_wrap_u8(hi) << 4));
    }
}

static void q4_1_block_weighted(const float *x, const float *w, uint8_t *y) {
    uint8_t lv[QK], aux[QK];
    float neg_min;
    const float d = plumb__ggml_fit_min(QK, 15, x, w, lv, &neg_min, aux, -0.9f, 0.05f, 36, false);
    plumb__ggml_put_f16(y, d);
    plumb__ggml_put_f16(y + 2, -neg_min);
    for (int j = 0; j < QK / 2; j++) y[4 + j] = (uint8_t)(lv[j] | (lv[j + QK / 2] << 4));
}

void plumb__ggml_row_q4_1(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    row_blocks(x, y, n_per_row, imatrix, PLUMB_Q4_1_BYTES, q4_1_block_plain, q4_1_block_weighted);
}

/* ---- Q5_0: d, qh, 16 bytes of nibbles; x ~ d * (q - 16) --------------------------------- */

static void q5_0_block_plain(const float *x, uint8_t *y) {
    const float max = block_signed_absmax(x);
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    plumb__ggml_put_f16(y, d);
    uint8_t lv[QK];
    for (int j = 0; j < QK; j++) {
        int l = plumb__ggml_to_i8(x[j] * id + 16.5f);
        lv[j] = plumb__ggml_wrap_u8(l < 31 ? l : 31);
    }
    pack_5bit(lv, y + 2, y + 6);
}

static void q5_0_block_weighted(const float *x, const float *w, uint8_t *y) {
    int8_t lv[QK];
    uint8_t levels[QK];
    plumb__ggml_put_f16(y, plumb__ggml_fit_symmetric(QK, 16, x, w, lv));
    for (int j = 0; j < QK; j++) levels[j] = (uint8_t)lv[j];
    pack_5bit(levels, y + 2, y + 6);
}

void plumb__ggml_row_q5_0(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    row_blocks(x, y, n_per_row, imatrix, PLUMB_Q5_0_BYTES, q5_0_block_plain, q5_0_block_weighted);
}

/* ---- Q5_1: d, m, qh, 16 bytes of nibbles; x ~ d * q + m --------------------------------- */

static void q5_1_block_plain(const float *x, uint8_t *y) {
    float min, max;
    block_min_max(x, &min, &max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    plumb__ggml_put_f16(y, d);
    plumb__ggml_put_f16(y + 2, min);
    uint8_t lv[QK];
    for (int j = 0; j < QK; j++) lv[j] = (uint8_t)plumb__ggml_to_u8((x[j] - min) * id + 0.5f);
    pack_5bit(lv, y + 4, y + 8);
}

static void q5_1_block_weighted(const float *x, const float *w, uint8_t *y) {
    uint8_t lv[QK], aux[QK];
    float neg_min;
    const float d = plumb__ggml_fit_min(QK, 31, x, w, lv, &neg_min, aux, -0.9f, 0.05f, 36, false);
    plumb__ggml_put_f16(y, d);
    plumb__ggml_put_f16(y + 2, -neg_min);
    pack_5bit(lv, y + 4, y + 8);
}

void plumb__ggml_row_q5_1(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    row_blocks(x, y, n_per_row, imatrix, PLUMB_Q5_1_BYTES, q5_1_block_plain, q5_1_block_weighted);
}

/* ---- Q8_0: d, 32 signed bytes; x ~ d * q ------------------------------------------------ */

void plumb__ggml_row_q8_0(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    (void)imatrix; /* llama.cpp's Q8_0 has no weighted variant */
    const int64_t nb = n_per_row / QK;
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + QK * b;
        uint8_t *yb = y + PLUMB_Q8_0_BYTES * b;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) {
            const float a = fabsf(xb[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        plumb__ggml_put_f16(yb, d);
        for (int j = 0; j < QK; j++) yb[2 + j] = (uint8_t)plumb__ggml_to_u8(roundf(xb[j] * id));
    }
}
