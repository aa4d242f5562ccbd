/* quantize_ggml_k.c — the llama.cpp-compatible quantizers of the 256-element K formats Q2_K,
 * Q3_K, Q4_K, Q5_K and Q6_K (quantize_ggml.h), one row at a time.
 *
 * Each super-block of 256 values is cut into groups (16 of 16 values for Q2_K, Q3_K, Q6_K;
 * 8 of 32 for Q4_K, Q5_K). Every group gets a scale (and, for Q2_K/Q4_K/Q5_K, an offset)
 * from a search in quantize_ggml_fit.c; the group scales are then themselves quantized to 4,
 * 6 or 8 bits against one f16 super-block scale, and finally every value is re-rounded
 * against the scale it will actually be decoded with.
 *
 * Without an importance matrix this follows llama.cpp's reference path (per-group weights
 * from the values themselves, the largest group scale setting the super-block scale).
 * With one, the value weights are imatrix[j] * sqrt(sigma2 + x[j]^2) (Q6_K: imatrix[j]
 * alone) and the group scales are quantized by a weighted search too.
 *
 * Layouts (little-endian, f16 scales):
 *   Q2_K (84 B):  scales[16] (low nibble scale, high nibble min), qs[64], d, dmin
 *   Q3_K (110 B): hmask[32], qs[64], scales[12] (16 6-bit scales), d
 *   Q4_K (144 B): d, dmin, scales[12] (8 6-bit scales and 8 6-bit mins), qs[128]
 *   Q5_K (176 B): d, dmin, scales[12], qh[32], qs[128]
 *   Q6_K (210 B): ql[128], qh[64], scales[16] (int8), d */
#include "quant/quant_fp_strict.h"

#include "quant/quantize_ggml.h"

#include "quant/quant.h"
#include "quant/quant_ref.h"

#include <float.h>
#include <math.h>


#define QK_K PLUMB_QK_K

static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

static float block_sum_squares(const float *x, int n) {
    float sum = 0.0f;
    for (int j = 0; j < n; j++) sum += x[j] * x[j];
    return sum;
}

/* Packs 256 2-bit levels: byte l of each 32-byte run holds elements l, l+32, l+64, l+96 of
 * its 128-element half, lowest bits first. */
static void pack_2bit(const uint8_t *lv, uint8_t *qs) {
    for (int half = 0; half < QK_K; half += 128) {
        for (int l = 0; l < 32; l++) {
            qs[half / 4 + l] = (uint8_t)(lv[half + l] | (lv[half + l + 32] << 2) |
                                         (lv[half + l + 64] << 4) | (lv[half + l + 96] << 6));
        }
    }
}

/* ---- Q2_K ------------------------------------------------------------------------------ */

/* Re-rounds each group of 16 against its decoded scale and min (groups whose scale decodes
 * to 0 keep the levels of the search). */
static void q2_k_requantize(const float *x, const uint8_t *scales, float d, float dmin,
                            uint8_t *lv) {
    for (int g = 0; g < QK_K / 16; g++) {
        const float dg = d * (float)(scales[g] & 0xf);
        if (dg == 0.0f) continue;
        const float mg = dmin * (float)(scales[g] >> 4);
        for (int i = 0; i < 16; i++)
            lv[16 * g + i] = (uint8_t)clamp_int(plumb__ggml_nearest((x[16 * g + i] + mg) / dg), 0, 3);
    }
}

static void q2_k_block_plain(const float *x, uint8_t *y) {
    uint8_t *scales = y, *qs = y + 16, *dd = y + 80;
    uint8_t lv[QK_K], aux[16];
    float w[16], gscale[QK_K / 16], gmin[QK_K / 16];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int g = 0; g < QK_K / 16; g++) {
        for (int i = 0; i < 16; i++) w[i] = fabsf(x[16 * g + i]);
        gscale[g] = plumb__ggml_fit_min(16, 3, x + 16 * g, w, lv + 16 * g, &gmin[g], aux, -0.5f,
                                        0.1f, 15, true);
        if (gscale[g] > max_scale) max_scale = gscale[g];
        if (gmin[g] > max_min) max_min = gmin[g];
    }
    if (max_scale > 0.0f) {
        const float iscale = 15.0f / max_scale;
        for (int g = 0; g < QK_K / 16; g++)
            scales[g] = plumb__ggml_wrap_u8(plumb__ggml_nearest(iscale * gscale[g]));
        plumb__ggml_put_f16(dd, max_scale / 15.0f);
    } else {
        memset(scales, 0, QK_K / 16);
        plumb__ggml_put_f16(dd, 0.0f);
    }
    if (max_min > 0.0f) {
        const float iscale = 15.0f / max_min;
        for (int g = 0; g < QK_K / 16; g++) {
            const int l = plumb__ggml_nearest(iscale * gmin[g]);
            scales[g] = plumb__ggml_wrap_u8(scales[g] | (int)((unsigned)l << 4));
        }
        plumb__ggml_put_f16(dd + 2, max_min / 15.0f);
    } else {
        plumb__ggml_put_f16(dd + 2, 0.0f);
    }
    q2_k_requantize(x, scales, plumb__ggml_get_f16(dd), plumb__ggml_get_f16(dd + 2), lv);
    pack_2bit(lv, qs);
}

static void q2_k_block_weighted(const float *x, const float *qw, uint8_t *y) {
    uint8_t *scales = y, *qs = y + 16, *dd = y + 80;
    uint8_t lv[QK_K], aux[16], ls[QK_K / 16], lm[QK_K / 16];
    float w[16], gscale[QK_K / 16], gmin[QK_K / 16], gw[QK_K / 16];
    const float sigma2 = block_sum_squares(x, QK_K) / (float)QK_K;
    for (int g = 0; g < QK_K / 16; g++) {
        for (int i = 0; i < 16; i++)
            w[i] = qw[16 * g + i] * sqrtf(sigma2 + x[16 * g + i] * x[16 * g + i]);
        float sw = 0.0f;
        for (int i = 0; i < 16; i++) sw += w[i];
        gw[g] = sw;
        gscale[g] = plumb__ggml_fit_min(16, 3, x + 16 * g, w, lv + 16 * g, &gmin[g], aux, -0.9f,
                                        0.05f, 36, false);
    }
    const float dm = plumb__ggml_fit_positive(QK_K / 16, 15, gscale, ls, gw);
    const float mm = plumb__ggml_fit_positive(QK_K / 16, 15, gmin, lm, gw);
    plumb__ggml_put_f16(dd, dm);
    plumb__ggml_put_f16(dd + 2, mm);
    for (int g = 0; g < QK_K / 16; g++) scales[g] = plumb__ggml_wrap_u8(ls[g] | (lm[g] << 4));
    q2_k_requantize(x, scales, plumb__ggml_get_f16(dd), plumb__ggml_get_f16(dd + 2), lv);
    pack_2bit(lv, qs);
}

void plumb__ggml_row_q2_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    for (int64_t b = 0; b < n_per_row / QK_K; b++) {
        if (imatrix)
            q2_k_block_weighted(x + QK_K * b, imatrix + QK_K * b, y + PLUMB_Q2_K_BYTES * b);
        else
            q2_k_block_plain(x + QK_K * b, y + PLUMB_Q2_K_BYTES * b);
    }
}

/* ---- Q3_K ------------------------------------------------------------------------------ */

/* Stores 16 6-bit scale codes (0..63): low nibbles of 0..7 in bytes 0..7, of 8..15 in the
 * high nibbles of the same bytes, the top two bits of code g in bits 2*(g/4) of byte 8+g%4. */
static void q3_k_put_scales(const int *code, uint8_t *scales) {
    memset(scales, 0, 12);
    for (int g = 0; g < QK_K / 16; g++) {
        const int c = code[g];
        if (g < 8)
            scales[g] = (uint8_t)(c & 0xf);
        else
            scales[g - 8] = plumb__ggml_wrap_u8(scales[g - 8] | ((c & 0xf) << 4));
        scales[8 + g % 4] = plumb__ggml_wrap_u8(scales[8 + g % 4] | ((c >> 4) << (2 * (g / 4))));
    }
}

/* Re-rounds against the decoded group scales, then writes hmask (the third bit of element
 * j in bit j/32 of byte j%32) and the 2-bit low parts. */
static void q3_k_finish(const float *x, int8_t *lv, uint8_t *y) {
    uint8_t *hmask = y, *qs = y + 32, *scales = y + 96;
    const float d = plumb__ggml_get_f16(y + 108);
    for (int g = 0; g < QK_K / 16; g++) {
        int sc = g < 8 ? (scales[g] & 0xf) : (scales[g - 8] >> 4);
        sc = (sc | (((scales[8 + g % 4] >> (2 * (g / 4))) & 3) << 4)) - 32;
        const float dg = d * (float)sc;
        if (dg == 0.0f) continue;
        for (int i = 0; i < 16; i++)
            lv[16 * g + i] = (int8_t)(clamp_int(plumb__ggml_nearest(x[16 * g + i] / dg), -4, 3) + 4);
    }
    memset(hmask, 0, QK_K / 8);
    uint8_t low[QK_K];
    for (int j = 0; j < QK_K; j++) {
        int l = lv[j];
        if (l > 3) {
            hmask[j % 32] = (uint8_t)(hmask[j % 32] | (1u << (j / 32)));
            l -= 4;
        }
        low[j] = (uint8_t)l;
    }
    pack_2bit(low, qs);
}

static void q3_k_block_plain(const float *x, uint8_t *y) {
    int8_t lv[QK_K];
    float gscale[QK_K / 16];
    float max_scale = 0.0f, amax = 0.0f;
    for (int g = 0; g < QK_K / 16; g++) {
        gscale[g] = plumb__ggml_fit_q3(16, 4, x + 16 * g, lv + 16 * g);
        const float a = fabsf(gscale[g]);
        if (a > amax) {
            amax = a;
            max_scale = gscale[g];
        }
    }
    if (max_scale != 0.0f) {
        const float iscale = -32.0f / max_scale;
        int code[QK_K / 16];
        for (int g = 0; g < QK_K / 16; g++) {
            /* the rounded scale passes through an int8 before clamping */
            const int l = plumb__ggml_wrap_i8(plumb__ggml_nearest(iscale * gscale[g]));
            code[g] = clamp_int(l, -32, 31) + 32;
        }
        q3_k_put_scales(code, y + 96);
        plumb__ggml_put_f16(y + 108, 1.0f / iscale);
    } else {
        memset(y + 96, 0, 12);
        plumb__ggml_put_f16(y + 108, 0.0f);
    }
    q3_k_finish(x, lv, y);
}

static void q3_k_block_weighted(const float *x, const float *qw, uint8_t *y) {
    int8_t lv[QK_K], ls[QK_K / 16];
    float w[16], gscale[QK_K / 16], gw[QK_K / 16];
    const float sigma2 = 2.0f * block_sum_squares(x, QK_K) / (float)QK_K;
    for (int g = 0; g < QK_K / 16; g++) {
        for (int i = 0; i < 16; i++)
            w[i] = qw[16 * g + i] * sqrtf(sigma2 + x[16 * g + i] * x[16 * g + i]);
        float sw = 0.0f;
        for (int i = 0; i < 16; i++) sw += w[i];
        gw[g] = sw;
        gscale[g] = plumb__ggml_fit_symmetric(16, 4, x + 16 * g, w, lv + 16 * g);
    }
    const float d = plumb__ggml_fit_symmetric(QK_K / 16, 32, gscale, gw, ls);
    int code[QK_K / 16];
    for (int g = 0; g < QK_K / 16; g++) code[g] = ls[g];
    q3_k_put_scales(code, y + 96);
    plumb__ggml_put_f16(y + 108, d);
    q3_k_finish(x, lv, y);
}

void plumb__ggml_row_q3_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    for (int64_t b = 0; b < n_per_row / QK_K; b++) {
        if (imatrix)
            q3_k_block_weighted(x + QK_K * b, imatrix + QK_K * b, y + PLUMB_Q3_K_BYTES * b);
        else
            q3_k_block_plain(x + QK_K * b, y + PLUMB_Q3_K_BYTES * b);
    }
}

/* ---- Q4_K and Q5_K: groups of 32 with 6-bit scales and mins ----------------------------- */

/* Stores 8 6-bit scales and 8 6-bit mins in 12 bytes: groups 0..3 whole in bytes 0..3
 * (scales) and 4..7 (mins); groups 4..7 as nibbles in bytes 8..11 (scale low, min high)
 * with their top two bits in bits 6..7 of bytes 0..3 (scales) and 4..7 (mins). */
static void k_put_scales_mins(const uint8_t *ls, const uint8_t *lm, uint8_t *s) {
    for (int g = 0; g < QK_K / 32; g++) {
        if (g < 4) {
            s[g] = ls[g];
            s[g + 4] = lm[g];
        } else {
            s[g + 4] = (uint8_t)((ls[g] & 0xf) | ((lm[g] & 0xf) << 4));
            s[g - 4] = plumb__ggml_wrap_u8(s[g - 4] | ((ls[g] >> 4) << 6));
            s[g] = plumb__ggml_wrap_u8(s[g] | ((lm[g] >> 4) << 6));
        }
    }
}

static void k_get_scale_min(int g, const uint8_t *s, int *sc, int *m) {
    if (g < 4) {
        *sc = s[g] & 63;
        *m = s[g + 4] & 63;
    } else {
        *sc = (s[g + 4] & 0xf) | ((s[g - 4] >> 6) << 4);
        *m = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
}

/* Re-rounds each group of 32 to 0..nmax against its decoded scale and min. dd: d, dmin. */
static void k_requantize(const float *x, const uint8_t *dd, const uint8_t *s, int nmax,
                         uint8_t *lv) {
    const float d = plumb__ggml_get_f16(dd), dmin = plumb__ggml_get_f16(dd + 2);
    for (int g = 0; g < QK_K / 32; g++) {
        int sc, m;
        k_get_scale_min(g, s, &sc, &m);
        const float dg = d * (float)sc;
        if (dg == 0.0f) continue;
        const float mg = dmin * (float)m;
        for (int i = 0; i < 32; i++)
            lv[32 * g + i] = (uint8_t)clamp_int(plumb__ggml_nearest((x[32 * g + i] + mg) / dg), 0, nmax);
    }
}

/* The reference path's scales: per group, weights av + |x| with av the group's RMS, then the
 * largest scale and min set d and dmin and every group's is rounded to 6 bits against them. */
static void k_block_plain(const float *x, uint8_t *y, int nmax, float rmin, float rdelta,
                          int nstep, uint8_t *lv) {
    uint8_t aux[32], ls[QK_K / 32], lm[QK_K / 32];
    float w[32], gscale[QK_K / 32], gmin[QK_K / 32];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int g = 0; g < QK_K / 32; g++) {
        const float *xg = x + 32 * g;
        const float av = sqrtf(block_sum_squares(xg, 32) / 32.0f);
        for (int i = 0; i < 32; i++) w[i] = av + fabsf(xg[i]);
        gscale[g] = plumb__ggml_fit_min(32, nmax, xg, w, lv + 32 * g, &gmin[g], aux, rmin, rdelta,
                                        nstep, false);
        if (gscale[g] > max_scale) max_scale = gscale[g];
        if (gmin[g] > max_min) max_min = gmin[g];
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int g = 0; g < QK_K / 32; g++) {
        const uint8_t s = plumb__ggml_wrap_u8(plumb__ggml_nearest(inv_scale * gscale[g]));
        const uint8_t m = plumb__ggml_wrap_u8(plumb__ggml_nearest(inv_min * gmin[g]));
        ls[g] = s < 63 ? s : 63;
        lm[g] = m < 63 ? m : 63;
    }
    k_put_scales_mins(ls, lm, y + 4);
    plumb__ggml_put_f16(y, max_scale / 63.0f);
    plumb__ggml_put_f16(y + 2, max_min / 63.0f);
    k_requantize(x, y, y + 4, nmax, lv);
}

/* The weighted path: weights imatrix * sqrt(sigma2 + x^2), sigma2 twice the block's mean
 * square; group scales and mins quantized by fit_positive weighted by the groups' weight
 * sums. clip63: Q5_K clips the 6-bit codes at 63, Q4_K does not (a wrapped code would spill
 * into the neighbouring bits, as in the reference). */
static void k_block_weighted(const float *x, const float *qw, uint8_t *y, int nmax, bool clip63,
                             uint8_t *lv) {
    uint8_t aux[32], ls[QK_K / 32], lm[QK_K / 32];
    float w[32], gscale[QK_K / 32], gmin[QK_K / 32], gw[QK_K / 32];
    const float sigma2 = 2.0f * block_sum_squares(x, QK_K) / (float)QK_K;
    for (int g = 0; g < QK_K / 32; g++) {
        const float *xg = x + 32 * g;
        for (int i = 0; i < 32; i++) w[i] = qw[32 * g + i] * sqrtf(sigma2 + xg[i] * xg[i]);
        float sw = 0.0f;
        for (int i = 0; i < 32; i++) sw += w[i];
        gw[g] = sw;
        gscale[g] = plumb__ggml_fit_min(32, nmax, xg, w, lv + 32 * g, &gmin[g], aux, -0.9f, 0.05f,
                                        36, false);
    }
    const float d = plumb__ggml_fit_positive(QK_K / 32, 63, gscale, ls, gw);
    const float m = plumb__ggml_fit_positive(QK_K / 32, 63, gmin, lm, gw);
    if (clip63) {
        for (int g = 0; g < QK_K / 32; g++) {
            if (ls[g] > 63) ls[g] = 63;
            if (lm[g] > 63) lm[g] = 63;
        }
    }
    k_put_scales_mins(ls, lm, y + 4);
    plumb__ggml_put_f16(y, d);
    plumb__ggml_put_f16(y + 2, m);
    k_requantize(x, y, y + 4, nmax, lv);
}

/* Q4_K: 4-bit levels, byte l of each 32-byte run holding elements l (low) and l + 32 (high)
 * of its 64-element pair of groups. */
void plumb__ggml_row_q4_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    uint8_t lv[QK_K];
    for (int64_t b = 0; b < n_per_row / QK_K; b++) {
        const float *xb = x + QK_K * b;
        uint8_t *yb = y + PLUMB_Q4_K_BYTES * b;
        if (imatrix)
            k_block_weighted(xb, imatrix + QK_K * b, yb, 15, false, lv);
        else
            k_block_plain(xb, yb, 15, -1.0f, 0.1f, 20, lv);
        uint8_t *qs = yb + 16;
        for (int j = 0; j < QK_K; j += 64)
            for (int l = 0; l < 32; l++) qs[j / 2 + l] = (uint8_t)(lv[j + l] | (lv[j + l + 32] << 4));
    }
}

/* Q5_K: as Q4_K for the low 4 bits; the fifth bit of element l + 64*p goes to bit 2p of
 * qh[l], of element l + 32 + 64*p to bit 2p + 1. */
void plumb__ggml_row_q5_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    uint8_t lv[QK_K];
    for (int64_t b = 0; b < n_per_row / QK_K; b++) {
        const float *xb = x + QK_K * b;
        uint8_t *yb = y + PLUMB_Q5_K_BYTES * b;
        if (imatrix)
            k_block_weighted(xb, imatrix + QK_K * b, yb, 31, true, lv);
        else
            k_block_plain(xb, yb, 31, -0.5f, 0.1f, 15, lv);
        uint8_t *qh = yb + 16, *qs = yb + 48;
        memset(qh, 0, QK_K / 8);
        for (int p = 0; p < QK_K / 64; p++) {
            for (int l = 0; l < 32; l++) {
                int lo = lv[64 * p + l], hi = lv[64 * p + l + 32];
                if (lo > 15) {
                    lo -= 16;
                    qh[l] = (uint8_t)(qh[l] | (1u << (2 * p)));
                }
                if (hi > 15) {
                    hi -= 16;
                    qh[l] = (uint8_t)(qh[l] | (2u << (2 * p)));
                }
                qs[32 * p + l] = plumb__ggml_wrap_u8(lo | (hi << 4));
            }
        }
    }
}

/* ---- Q6_K: groups of 16 with int8 scales ------------------------------------------------ */

void plumb__ggml_row_q6_k(const float *x, uint8_t *y, int64_t n_per_row, const float *imatrix) {
    for (int64_t b = 0; b < n_per_row / QK_K; b++) {
        const float *xb = x + QK_K * b;
        uint8_t *yb = y + PLUMB_Q6_K_BYTES * b;
        uint8_t *ql = yb, *qh = yb + 128, *scales = yb + 192;
        int8_t lv[QK_K];
        float gscale[QK_K / 16];
        float max_scale = 0.0f, max_abs = 0.0f;
        for (int g = 0; g < QK_K / 16; g++) {
            const float *w = imatrix ? imatrix + QK_K * b + 16 * g : NULL;
            gscale[g] = plumb__ggml_fit_symmetric(16, 32, xb + 16 * g, w, lv + 16 * g);
            const float a = fabsf(gscale[g]);
            if (a > max_abs) {
                max_abs = a;
                max_scale = gscale[g];
            }
        }
        if (max_abs < PLUMB_GGML_GROUP_EPS) {
            memset(yb, 0, PLUMB_Q6_K_BYTES);
            continue;
        }
        const float iscale = -128.0f / max_scale;
        plumb__ggml_put_f16(yb + 208, 1.0f / iscale);
        for (int g = 0; g < QK_K / 16; g++) {
            const int l = plumb__ggml_nearest(iscale * gscale[g]);
            scales[g] = plumb__ggml_wrap_u8(l < 127 ? l : 127);
        }
        const float d = plumb__ggml_get_f16(yb + 208);
        for (int g = 0; g < QK_K / 16; g++) {
            const float dg = d * (float)plumb__ggml_wrap_i8(scales[g]);
            if (dg == 0.0f) continue;
            for (int i = 0; i < 16; i++)
                lv[16 * g + i] = (int8_t)(clamp_int(plumb__ggml_nearest(xb[16 * g + i] / dg), -32, 31) + 32);
        }
        /* per 128-element half: ql byte l holds the low nibbles of elements l and l + 64,
         * byte l + 32 those of l + 32 and l + 96; qh byte l their top two bits */
        for (int half = 0; half < 2; half++) {
            const int8_t *h = lv + 128 * half;
            uint8_t *qlh = ql + 64 * half, *qhh = qh + 32 * half;
            for (int l = 0; l < 32; l++) {
                qlh[l] = (uint8_t)((h[l] & 0xf) | ((h[l + 64] & 0xf) << 4));
                qlh[l + 32] = (uint8_t)((h[l + 32] & 0xf) | ((h[l + 96] & 0xf) << 4));
                qhh[l] = (uint8_t)((h[l] >> 4) | ((h[l + 32] >> 4) << 2) | ((h[l + 64] >> 4) << 4) |
                                   ((h[l + 96] >> 4) << 6));
            }
        }
    }
}
