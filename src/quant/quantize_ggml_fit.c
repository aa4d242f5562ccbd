/* quantize_ggml_fit.c — the scale searches behind the llama.cpp-compatible quantizers
 * (quantize_ggml.h): given a group of values (and importance weights), choose the integer
 * levels and the scale (and offset) that the reference's search chooses.
 *
 * Everything here is float32 arithmetic whose order is part of the contract: every sum is
 * accumulated left to right, products are grouped as written — (w * x) * l, (w * l) * l —
 * and integer levels enter products as floats. A change of grouping changes some bytes of
 * the output, which the golden test catches. */
#include "quant/quant_fp_strict.h"

#include "quant/quantize_ggml.h"

#include "core/error.h"

#include <float.h>
#include <math.h>


static inline int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* The weight of value i: w[i], or x[i]^2 without weights. */
static inline float weight_at(const float *x, const float *w, int i) {
    return w ? w[i] : x[i] * x[i];
}

/* The value of largest magnitude (the first of equal ones), or 0 with *amax 0. */
static float signed_absmax(int n, const float *x, float *amax_out) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    *amax_out = amax;
    return max;
}

float plumb__ggml_fit_symmetric(int n, int nmax, const float *x, const float *w, int8_t *L) {
    float amax;
    const float max = signed_absmax(n, x, &amax);
    if (amax < PLUMB_GGML_GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -(float)nmax / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(plumb__ggml_nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float wi = weight_at(x, w, i);
        sumlx += wi * x[i] * (float)l;
        suml2 += wi * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    int8_t trial[32]; /* every caller's group: 16 or 32 values, or a block's 16 scales */
    PLUMB_ASSERT(n <= 32);
    for (int step = -9; step <= 9; step++) {
        if (step == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)step) / max;
        sumlx = 0.0f;
        suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(plumb__ggml_nearest(iscale * x[i]), -nmax, nmax - 1);
            trial[i] = (int8_t)(l + nmax);
            float wi = weight_at(x, w, i);
            sumlx += wi * x[i] * (float)l;
            suml2 += wi * (float)l * (float)l;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            memcpy(L, trial, (size_t)n);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

float plumb__ggml_fit_q3(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    const float max = signed_absmax(n, x, &amax);
    if (amax < PLUMB_GGML_GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float iscale = -(float)nmax / max;
    /* L holds the signed levels during the search and is offset by nmax at the end */
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(plumb__ggml_nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float wi = x[i] * x[i];
        sumlx += wi * x[i] * (float)l;
        suml2 += wi * (float)l * (float)l;
    }
    for (int round = 0; round < 5; round++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float wi = x[i] * x[i];
            float slx = sumlx - wi * x[i] * (float)L[i];
            if (!(slx > 0.0f)) continue;
            float sl2 = suml2 - wi * (float)L[i] * (float)L[i];
            int l = clamp_int(plumb__ggml_nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (l == L[i]) continue;
            slx += wi * x[i] * (float)l;
            sl2 += wi * (float)l * (float)l;
            if (sl2 > 0.0f && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)l;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (changed == 0) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float plumb__ggml_fit_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                          float *neg_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                          bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1.0f / iscale;
    float best_err = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(plumb__ggml_nearest(iscale * (x[i] - min)), 0, nmax);
        L[i] = (uint8_t)l;
        float diff = scale * (float)l + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_err += w[i] * diff;
    }
    if (nstep < 1) {
        *neg_min = -min;
        return scale;
    }
    for (int step = 0; step <= nstep; step++) {
        iscale = (rmin + rdelta * (float)step + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(plumb__ggml_nearest(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0.0f)) continue;
        /* weighted least-squares scale and offset for these levels; a positive offset is
         * not representable, so then the offset is 0 and the scale refit alone */
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0.0f) {
            this_min = 0.0f;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * (float)Laux[i] + this_min - x[i];
            diff = use_mad ? fabsf(diff) : diff * diff;
            err += w[i] * diff;
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

float plumb__ggml_fit_positive(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0.0f;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max < PLUMB_GGML_GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    /* first the best of 9 scales by weighted squared error; note the unclamped first guess
     * (stored wrapped to a byte) is what the other eight are measured against */
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; i++) L[i] = plumb__ggml_wrap_u8(plumb__ggml_nearest(iscale * x[i]));
    const float scale0 = 1.0f / iscale;
    float best_err = 0.0f;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale0 * (float)L[i];
        best_err += w[i] * diff * diff;
    }
    for (int step = -4; step <= 4; step++) {
        if (step == 0) continue;
        const float is = (0.1f * (float)step + (float)nmax) / max;
        const float s = 1.0f / is;
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = plumb__ggml_nearest(is * x[i]);
            if (l > nmax) l = nmax;
            float diff = x[i] - s * (float)l;
            err += w[i] * diff * diff;
        }
        if (err < best_err) {
            best_err = err;
            iscale = is;
        }
    }
    /* then up to 5 rounds of moving single values to a better level */
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = plumb__ggml_nearest(iscale * x[i]);
        if (l > nmax) l = nmax;
        L[i] = plumb__ggml_wrap_u8(l);
        sumlx += w[i] * x[i] * (float)l;
        suml2 += w[i] * (float)l * (float)l;
    }
    for (int round = 0; round < 5; round++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * (float)L[i];
            float sl2 = suml2 - w[i] * (float)L[i] * (float)L[i];
            if (!(slx > 0.0f && sl2 > 0.0f)) continue;
            int l = plumb__ggml_nearest(x[i] * sl2 / slx);
            if (l > nmax) l = nmax;
            if (l == L[i]) continue;
            slx += w[i] * x[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = plumb__ggml_wrap_u8(l);
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (changed == 0) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}
