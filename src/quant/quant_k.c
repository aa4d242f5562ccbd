/* quant_k.c — scalar reference kernels of the 256-element "K" block formats: Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K (sub-block scales quantized against an f16 super-block scale) and Q8_K
 * (f32 scale, int8 values and per-16 sums, the activation format of the K dot products).
 *
 * Dequantization is bit-exact with gguf-py (gguf.quants): the sub-block scale is formed
 * first as one float32 product (d * sc, dmin * m), then y = (that * q) - (dmin * m) or
 * y = (d * sc) * q, each operation rounded on its own (no fused multiply-add). d * sc is
 * exact (11 + 8 bits); (d * sc) * q rounds only for Q6_K and Q8_K.
 *
 * Quantization (our own): every sub-block gets a continuous least-squares scale (and min),
 * the super-block scale(s) are derived from the largest of them, the integer sub-block
 * scales are searched around the nearest value, and the super-block scale(s) are refitted
 * by least squares a few times. Among these candidate encodings the one with the smallest
 * squared error wins, but only if every element stays within the a-priori error bound of the
 * plain "cover the range, round to nearest" encoding (kmin_bound/ksym_bound); that plain
 * encoding is always a candidate, so the bound is a guarantee. Super-block scales saturate
 * at +-65504, so finite input beyond the f16 range still decodes to finite (clipped) values. */
#include "quant/quant_fp_strict.h"

#include "quant/quant_ref.h"

#include <float.h>
#include <string.h>


#define QK_K PLUMB_QK_K
#define TWO_M24 5.9604644775390625e-08 /* 2^-24, the smallest f16 subnormal */
#define TWO_M20 9.5367431640625e-07
/* Encodings are accepted a hair inside the documented bound, so that a test recomputing the
 * bound with other rounding still sees them within it. The plain encoding meets even this
 * (its derivation has a 2^-8 relative slack against a 2^-11 f16 rounding). */
#define BOUND_MARGIN (1.0 - 1.0 / 4096.0)

/* ---------------------------------------------------------------------------------------- */
/* Dequantization                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* 6-bit scale and min of sub-block s (0..7) from the 12 packed bytes of Q4_K/Q5_K. */
static inline void get_scale_min_k4(int s, const uint8_t *sc, int *scale, int *min) {
    if (s < 4) {
        *scale = sc[s] & 63;
        *min = sc[s + 4] & 63;
    } else {
        *scale = (sc[s + 4] & 0x0f) | ((sc[s - 4] >> 6) << 4);
        *min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}

/* Signed 6-bit scale k (0..15) of Q3_K. */
static inline int get_scale_q3(int k, const uint8_t *sc) {
    int lo = k < 8 ? (sc[k] & 0x0f) : (sc[k - 8] >> 4);
    int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. */
void plumb__dequantize_q2_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q2_K_BYTES, dst += QK_K) {
        const uint8_t *scales = b, *qs = b + 16;
        const float d = plumb__rd_f16(b + 80), dmin = plumb__rd_f16(b + 82);
        for (int n = 0; n < 2; n++) {
            const uint8_t *q = qs + 32 * n;
            for (int j = 0; j < 4; j++) {
                for (int h = 0; h < 2; h++) { /* the two 16-element sub-blocks */
                    const uint8_t sc = scales[8 * n + 2 * j + h];
                    const float dl = d * (float)(sc & 0x0f);
                    const float ml = dmin * (float)(sc >> 4);
                    float *y = dst + 128 * n + 32 * j + 16 * h;
                    for (int l = 0; l < 16; l++) {
                        const float t = dl * (float)((q[16 * h + l] >> (2 * j)) & 3);
                        y[l] = t - ml;
                    }
                }
            }
        }
    }
}

/* Q3_K: hmask[32], qs[64], scales[12], d. */
void plumb__dequantize_q3_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q3_K_BYTES, dst += QK_K) {
        const uint8_t *hmask = b, *qs = b + 32, *scales = b + 96;
        const float d = plumb__rd_f16(b + 108);
        for (int n = 0; n < 2; n++) {
            const uint8_t *q = qs + 32 * n;
            for (int j = 0; j < 4; j++) {
                const uint8_t m = (uint8_t)(1u << (4 * n + j));
                for (int h = 0; h < 2; h++) {
                    const float dl = d * (float)get_scale_q3(8 * n + 2 * j + h, scales);
                    float *y = dst + 128 * n + 32 * j + 16 * h;
                    for (int l = 0; l < 16; l++) {
                        const int ll = 16 * h + l;
                        const int v = ((q[ll] >> (2 * j)) & 3) - ((hmask[ll] & m) ? 0 : 4);
                        y[l] = dl * (float)v;
                    }
                }
            }
        }
    }
}

/* Q4_K: d, dmin, scales[12], qs[128]. */
void plumb__dequantize_q4_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q4_K_BYTES, dst += QK_K) {
        const float d = plumb__rd_f16(b), dmin = plumb__rd_f16(b + 2);
        const uint8_t *scales = b + 4, *qs = b + 16;
        for (int s = 0; s < 8; s++) {
            int sc, mn;
            get_scale_min_k4(s, scales, &sc, &mn);
            const float d1 = d * (float)sc;
            const float m1 = dmin * (float)mn;
            const uint8_t *q = qs + 32 * (s / 2);
            const int shift = 4 * (s % 2);
            float *y = dst + 32 * s;
            for (int l = 0; l < 32; l++) {
                const float t = d1 * (float)((q[l] >> shift) & 0x0f);
                y[l] = t - m1;
            }
        }
    }
}

/* Q5_K: d, dmin, scales[12], qh[32], qs[128]. */
void plumb__dequantize_q5_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q5_K_BYTES, dst += QK_K) {
        const float d = plumb__rd_f16(b), dmin = plumb__rd_f16(b + 2);
        const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 48;
        for (int s = 0; s < 8; s++) {
            int sc, mn;
            get_scale_min_k4(s, scales, &sc, &mn);
            const float d1 = d * (float)sc;
            const float m1 = dmin * (float)mn;
            const uint8_t *q = qs + 32 * (s / 2);
            const int shift = 4 * (s % 2);
            float *y = dst + 32 * s;
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> shift) & 0x0f) | (((qh[l] >> s) & 1) << 4);
                const float t = d1 * (float)v;
                y[l] = t - m1;
            }
        }
    }
}

/* Q6_K: ql[128], qh[64], scales[16] int8, d. */
void plumb__dequantize_q6_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q6_K_BYTES, dst += QK_K) {
        const float d = plumb__rd_f16(b + 208);
        for (int n = 0; n < 2; n++) {
            const uint8_t *L = b + 64 * n, *H = b + 128 + 32 * n;
            const int8_t *S = (const int8_t *)(b + 192 + 8 * n);
            float *y = dst + 128 * n;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((L[l] & 0x0f) | (((H[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((L[l + 32] & 0x0f) | (((H[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((L[l] >> 4) | (((H[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4)) - 32;
                y[l] = (d * (float)S[is]) * (float)q1;
                y[l + 32] = (d * (float)S[is + 2]) * (float)q2;
                y[l + 64] = (d * (float)S[is + 4]) * (float)q3;
                y[l + 96] = (d * (float)S[is + 6]) * (float)q4;
            }
        }
    }
}

/* Q8_K: d (f32), qs[256] int8, bsums[16] int16. */
void plumb__dequantize_q8_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q8_K_BYTES, dst += QK_K) {
        const float d = plumb__f32_from_bits(plumb__rd_u32(b));
        for (int l = 0; l < QK_K; l++) dst[l] = d * (float)(int8_t)b[4 + l];
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Shared pieces of the quantizers                                                          */
/* ---------------------------------------------------------------------------------------- */

/* f16 rounding of a scale (saturated to +-65504); *h gets the bits, the result is the value
 * the decoder sees. */
static float round_f16(double v, uint16_t *h) {
    if (v > 65504.0) v = 65504.0;
    if (v < -65504.0) v = -65504.0;
    *h = plumb__fp32_to_fp16((float)v);
    return plumb__fp16_to_fp32(*h);
}

static double absmax_of(const float *x, int n) {
    double a = 0.0;
    for (int i = 0; i < n; i++) {
        double v = fabs((double)x[i]);
        if (v > a) a = v;
    }
    return a;
}

/* ---- scale + min formats (Q2_K, Q4_K, Q5_K): y = (d sc) q - (dmin m), q in [0, L] ------ */

typedef struct kmin_cfg {
    int nsub;   /* sub-blocks per block */
    int sublen; /* elements per sub-block */
    int qmax;   /* L: largest quant */
    int scmax;  /* largest integer sub-block scale / min */
} kmin_cfg;

typedef struct kmin_enc {
    uint16_t dh, dminh; /* f16 bits of the super-block scales */
    float d, dmin;      /* their values */
    uint8_t sc[16], mn[16];
    uint8_t q[QK_K];
    double sse;
    int feasible; /* every element within its bound */
} kmin_enc;

/* Error of quant v for x on the float grid y(v) = (ds v) - dm, exactly as dequantized. */
static inline double kmin_err(float x, float ds, float dm, int v) {
    const float t = ds * (float)v;
    const float y = t - dm;
    return fabs((double)y - (double)x);
}

/* Quants of one sub-block for the float grid y(q) = ds q - dm; returns the squared error and
 * the largest absolute error through *sse and *maxerr. */
static void kmin_assign(const float *x, int n, float ds, float dm, int L, uint8_t *q,
                        double *sse, double *maxerr) {
    double s2 = 0.0, me = 0.0;
    const float ids = ds > 0.0f ? 1.0f / ds : 0.0f;
    for (int i = 0; i < n; i++) {
        int v = 0;
        double e;
        float r = (x[i] + dm) * ids;
        if (!(r > 0.0f)) { /* also NaN */
            v = 0;
            e = kmin_err(x[i], ds, dm, 0);
        } else if (r >= (float)L) {
            v = L;
            e = kmin_err(x[i], ds, dm, L);
        } else {
            v = (int)(r + 0.5f);
            e = kmin_err(x[i], ds, dm, v);
            /* near a tie the rounded quotient may pick the worse neighbour: look at both */
            const float f = r - (float)(int)r;
            if (fabsf(f - 0.5f) < 1.0e-3f) {
                for (int w = v - 1; w <= v + 1; w += 2) {
                    if (w < 0 || w > L) continue;
                    const double ew = kmin_err(x[i], ds, dm, w);
                    if (ew < e) {
                        e = ew;
                        v = w;
                    }
                }
            }
        }
        q[i] = (uint8_t)v;
        s2 += e * e;
        if (e > me) me = e;
    }
    *sse = s2;
    *maxerr = me;
}

/* A-priori error bound of each sub-block for the plain encoding (derivation in the tests):
 *   range_j = max x - min(0, min x),  s_j = range_j / L,  m_j = -min(0, min x),
 *   d = max s_j / scmax,  dmin = max m_j / scmax;
 *   |err| <= range_j / (2L) + (L/2 + 1/4) d + dmin / 2   (+ f16 and float slack). */
static void kmin_bound(const float *x, const kmin_cfg *c, double *B) {
    double range[16], dA = 0.0, dminA = 0.0, amax = absmax_of(x, c->nsub * c->sublen);
    for (int j = 0; j < c->nsub; j++) {
        const float *xs = x + j * c->sublen;
        double lo = 0.0, hi = xs[0];
        for (int i = 0; i < c->sublen; i++) {
            if (xs[i] < lo) lo = xs[i];
            if (xs[i] > hi) hi = xs[i];
        }
        range[j] = hi - lo;
        if (range[j] / c->qmax > dA) dA = range[j] / c->qmax;
        if (-lo > dminA) dminA = -lo;
    }
    dA /= c->scmax;
    dminA /= c->scmax;
    for (int j = 0; j < c->nsub; j++) {
        B[j] = ((range[j] / (2.0 * c->qmax) + (c->qmax / 2.0 + 0.25) * dA + dminA / 2.0) *
                    (1.0 + 1.0 / 256.0) +
                (c->qmax + 1) * c->scmax * TWO_M24 + amax * TWO_M20) *
               BOUND_MARGIN;
    }
}

/* Candidate order: feasible beats infeasible; then less squared error (feasible) or less
 * max error (infeasible). */
static int candidate_better(int have, int feas, double sse, double me, int best_feas,
                            double best_sse, double best_me) {
    if (!have) return 1;
    if (feas != best_feas) return feas;
    return feas ? sse < best_sse : me < best_me;
}

/* Integer sub-block scales/mins for the super-block scales dh, dminh (f16 bits): for each
 * sub-block try the nearest integers to the targets and their neighbours, keep the one with
 * the least squared error among those within the bound (or the smallest max error). */
static void kmin_choose(const float *x, const kmin_cfg *c, const double *s_t, const double *m_t,
                        const double *B, uint16_t dh, uint16_t dminh, kmin_enc *e) {
    const float d = plumb__fp16_to_fp32(dh), dmin = plumb__fp16_to_fp32(dminh);
    e->dh = dh;
    e->dminh = dminh;
    e->d = d;
    e->dmin = dmin;
    e->sse = 0.0;
    e->feasible = 1;
    for (int j = 0; j < c->nsub; j++) {
        const float *xs = x + j * c->sublen;
        const int sc0 = d > 0.0f ? plumb__round_clamp((float)(s_t[j] / d), 0, c->scmax) : 0;
        const int mn0 = dmin > 0.0f ? plumb__round_clamp((float)(m_t[j] / dmin), 0, c->scmax) : 0;
        int have = 0, best_feas = 0;
        double best_sse = 0.0, best_me = 0.0;
        uint8_t qtmp[32];
        for (int sc = sc0 - 1; sc <= sc0 + 1; sc++) {
            if (sc < 0 || sc > c->scmax || (d <= 0.0f && sc != 0)) continue;
            for (int mn = mn0 - 1; mn <= mn0 + 1; mn++) {
                if (mn < 0 || mn > c->scmax || (dmin <= 0.0f && mn != 0)) continue;
                double sse, me;
                kmin_assign(xs, c->sublen, d * (float)sc, dmin * (float)mn, c->qmax, qtmp, &sse,
                            &me);
                const int feas = me <= B[j];
                if (candidate_better(have, feas, sse, me, best_feas, best_sse, best_me)) {
                    have = 1;
                    best_feas = feas;
                    best_sse = sse;
                    best_me = me;
                    e->sc[j] = (uint8_t)sc;
                    e->mn[j] = (uint8_t)mn;
                    memcpy(e->q + j * c->sublen, qtmp, (size_t)c->sublen);
                }
            }
        }
        e->sse += best_sse;
        if (!best_feas) e->feasible = 0;
    }
}

/* Encoding from continuous per-sub-block targets: super-block scales from the largest. */
static void kmin_from_targets(const float *x, const kmin_cfg *c, const double *s_t,
                              const double *m_t, const double *B, kmin_enc *e) {
    double smax = 0.0, mmax = 0.0;
    for (int j = 0; j < c->nsub; j++) {
        if (s_t[j] > smax) smax = s_t[j];
        if (m_t[j] > mmax) mmax = m_t[j];
    }
    uint16_t dh, dminh;
    round_f16(smax / c->scmax, &dh);
    round_f16(mmax / c->scmax, &dminh);
    kmin_choose(x, c, s_t, m_t, B, dh, dminh, e);
}

/* Continuous least-squares scale s and min m (y = s q - m, m >= 0) of one sub-block: the
 * quants are taken from a range of trial scales around range / L, then (s, m) is refitted
 * to them and the quants reassigned; the best squared error wins. */
static void kmin_fit_sub(const float *x, int n, int L, double *s_out, double *m_out) {
    double lo = 0.0, hi = x[0];
    for (int i = 0; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    double best_s = (hi - lo) / L, best_m = -lo;
    *s_out = best_s;
    *m_out = best_m;
    if (!(hi > lo)) return;
    double best_sse = 0.0;
    for (int i = 0; i < n; i++) {
        double q = floor((x[i] - lo) / best_s + 0.5);
        q = q < 0 ? 0 : (q > L ? L : q);
        double e = best_s * q - best_m - x[i];
        best_sse += e * e;
    }
    for (int k = -6; k <= 12; k++) {
        const double iscale = L * (1.0 + 0.02 * k) / (hi - lo);
        double Sq = 0, Sqq = 0, Sx = 0, Sqx = 0;
        for (int i = 0; i < n; i++) {
            double q = floor((x[i] - lo) * iscale + 0.5);
            q = q < 0 ? 0 : (q > L ? L : q);
            Sq += q;
            Sqq += q * q;
            Sx += x[i];
            Sqx += q * x[i];
        }
        const double det = n * Sqq - Sq * Sq;
        if (!(det > 0)) continue;
        double s = (n * Sqx - Sq * Sx) / det;
        double off = (Sx - s * Sq) / n; /* y = s q + off, off = -m must be <= 0 */
        if (off > 0) {
            off = 0;
            s = Sqx / Sqq;
        }
        if (!(s > 0)) continue;
        double sse = 0;
        const double is = 1.0 / s;
        for (int i = 0; i < n; i++) {
            double q = floor((x[i] - off) * is + 0.5);
            q = q < 0 ? 0 : (q > L ? L : q);
            double e = s * q + off - x[i];
            sse += e * e;
        }
        if (sse < best_sse) {
            best_sse = sse;
            best_s = s;
            best_m = -off;
        }
    }
    *s_out = best_s;
    *m_out = best_m;
}

/* Least-squares refit of (d, dmin) for fixed integer scales/mins and quants, then a new
 * integer choice around them. Returns 0 when the system is degenerate. */
static int kmin_refit(const float *x, const kmin_cfg *c, const double *B, const kmin_enc *in,
                      kmin_enc *out) {
    double Saa = 0, Sab = 0, Sbb = 0, Sax = 0, Sbx = 0;
    for (int j = 0; j < c->nsub; j++) {
        const double b = in->mn[j];
        for (int i = 0; i < c->sublen; i++) {
            const int e = j * c->sublen + i;
            const double a = (double)in->sc[j] * in->q[e];
            Saa += a * a;
            Sab += a * b;
            Sbb += b * b;
            Sax += a * x[e];
            Sbx += b * x[e];
        }
    }
    double D, M;
    if (Sbb == 0.0) {
        if (!(Saa > 0.0)) return 0;
        D = Sax / Saa;
        M = in->dmin;
    } else {
        const double det = Sab * Sab - Saa * Sbb;
        if (!(fabs(det) > 1e-12 * Saa * Sbb)) return 0;
        D = (Sab * Sbx - Sax * Sbb) / det;
        M = (Saa * Sbx - Sab * Sax) / det;
    }
    if (!(D >= 0.0) || !(M >= 0.0) || D > 65504.0 || M > 65504.0) return 0;
    double s_t[16], m_t[16];
    for (int j = 0; j < c->nsub; j++) {
        s_t[j] = in->sc[j] * D;
        m_t[j] = in->mn[j] * M;
    }
    uint16_t dh, dminh;
    round_f16(D, &dh);
    round_f16(M, &dminh);
    kmin_choose(x, c, s_t, m_t, B, dh, dminh, out);
    return 1;
}

static int kmin_better(const kmin_enc *a, const kmin_enc *b) {
    if (a->feasible != b->feasible) return a->feasible;
    return a->sse < b->sse;
}

/* The best encoding of one 256-element block. */
static void kmin_quantize_block(const float *x, const kmin_cfg *c, kmin_enc *best) {
    double B[16], s_t[16], m_t[16];
    kmin_bound(x, c, B);

    /* the plain encoding: cover [min(0, min x), max x] of each sub-block */
    for (int j = 0; j < c->nsub; j++) {
        const float *xs = x + j * c->sublen;
        double lo = 0.0, hi = xs[0];
        for (int i = 0; i < c->sublen; i++) {
            if (xs[i] < lo) lo = xs[i];
            if (xs[i] > hi) hi = xs[i];
        }
        s_t[j] = (hi - lo) / c->qmax;
        m_t[j] = -lo;
    }
    kmin_from_targets(x, c, s_t, m_t, B, best);

    /* least-squares sub-block targets, then refits of the super-block scales */
    kmin_enc cand, next;
    for (int j = 0; j < c->nsub; j++) kmin_fit_sub(x + j * c->sublen, c->sublen, c->qmax, &s_t[j], &m_t[j]);
    kmin_from_targets(x, c, s_t, m_t, B, &cand);
    if (kmin_better(&cand, best)) *best = cand;
    cand = *best;
    for (int it = 0; it < 4; it++) {
        if (!kmin_refit(x, c, B, &cand, &next)) break;
        if (kmin_better(&next, best)) *best = next;
        cand = next;
    }
}

/* ---- symmetric formats (Q3_K, Q6_K): y = (d sc) q, q in [-qn, qp], sc in [-scn, scp] ---- */

typedef struct ksym_cfg {
    int nsub, sublen;
    int qn, qp;   /* quant range [-qn, qp] */
    int scn, scp; /* integer scale range [-scn, scp] */
} ksym_cfg;

typedef struct ksym_enc {
    uint16_t dh;
    float d;
    int8_t sc[16];
    int8_t q[QK_K];
    double sse;
    int feasible;
} ksym_enc;

static inline double ksym_err(float x, float ds, int v) {
    return fabs((double)(ds * (float)v) - (double)x);
}

/* Quants of one sub-block for the float grid y(q) = ds q (ds may be negative). */
static void ksym_assign(const float *x, int n, float ds, int qn, int qp, int8_t *q, double *sse,
                        double *maxerr) {
    double s2 = 0.0, me = 0.0;
    const float ids = ds != 0.0f ? 1.0f / ds : 0.0f;
    for (int i = 0; i < n; i++) {
        int v;
        double e;
        const float r = x[i] * ids;
        if (!(r > (float)-qn)) { /* also NaN */
            v = r != r ? 0 : -qn;
            e = ksym_err(x[i], ds, v);
        } else if (r >= (float)qp) {
            v = qp;
            e = ksym_err(x[i], ds, qp);
        } else {
            const float fl = floorf(r);
            const float f = r - fl;
            v = (int)fl + (f >= 0.5f);
            e = ksym_err(x[i], ds, v);
            if (fabsf(f - 0.5f) < 1.0e-3f) { /* near a tie: check both neighbours */
                for (int w = v - 1; w <= v + 1; w += 2) {
                    if (w < -qn || w > qp) continue;
                    const double ew = ksym_err(x[i], ds, w);
                    if (ew < e) {
                        e = ew;
                        v = w;
                    }
                }
            }
        }
        q[i] = (int8_t)v;
        s2 += e * e;
        if (e > me) me = e;
    }
    *sse = s2;
    *maxerr = me;
}

/* A-priori error bound of each sub-block for the plain encoding (derivation in the tests):
 *   M_j = the element of largest magnitude, s_j = M_j / -qn (M_j maps to -qn),
 *   d = max |s_j| / scn;   |err| <= |M_j| / qn + qn d   (+ f16 and float slack). */
static void ksym_bound(const float *x, const ksym_cfg *c, double *B) {
    double am[16], dA = 0.0, amax = absmax_of(x, c->nsub * c->sublen);
    for (int j = 0; j < c->nsub; j++) {
        am[j] = absmax_of(x + j * c->sublen, c->sublen);
        if (am[j] > dA) dA = am[j];
    }
    dA /= (double)c->qn * c->scn;
    for (int j = 0; j < c->nsub; j++) {
        B[j] = ((am[j] / c->qn + c->qn * dA) * (1.0 + 1.0 / 256.0) +
                (c->qn + c->qp + 2) * c->scn * TWO_M24 + amax * TWO_M20) *
               BOUND_MARGIN;
    }
}

static void ksym_choose(const float *x, const ksym_cfg *c, const double *s_t, const double *B,
                        uint16_t dh, ksym_enc *e) {
    const float d = plumb__fp16_to_fp32(dh);
    e->dh = dh;
    e->d = d;
    e->sse = 0.0;
    e->feasible = 1;
    for (int j = 0; j < c->nsub; j++) {
        const float *xs = x + j * c->sublen;
        const int sc0 = d != 0.0f ? plumb__round_clamp((float)(s_t[j] / d), -c->scn, c->scp) : 0;
        int have = 0, best_feas = 0;
        double best_sse = 0.0, best_me = 0.0;
        int8_t qtmp[32];
        for (int sc = sc0 - 1; sc <= sc0 + 1; sc++) {
            if (sc < -c->scn || sc > c->scp || (d == 0.0f && sc != 0)) continue;
            double sse, me;
            ksym_assign(xs, c->sublen, d * (float)sc, c->qn, c->qp, qtmp, &sse, &me);
            const int feas = me <= B[j];
            if (candidate_better(have, feas, sse, me, best_feas, best_sse, best_me)) {
                have = 1;
                best_feas = feas;
                best_sse = sse;
                best_me = me;
                e->sc[j] = (int8_t)sc;
                memcpy(e->q + j * c->sublen, qtmp, (size_t)c->sublen);
            }
        }
        e->sse += best_sse;
        if (!best_feas) e->feasible = 0;
    }
}

/* Super-block scale from the sub-block target of largest magnitude, which maps to -scn. */
static void ksym_from_targets(const float *x, const ksym_cfg *c, const double *s_t,
                              const double *B, ksym_enc *e) {
    double S = 0.0;
    for (int j = 0; j < c->nsub; j++)
        if (fabs(s_t[j]) > fabs(S)) S = s_t[j];
    uint16_t dh;
    round_f16(S / -c->scn, &dh);
    ksym_choose(x, c, s_t, B, dh, e);
}

/* Continuous least-squares scale of one sub-block: trial scales that put the largest element
 * near -qn (or near +qp), quants assigned, scale refitted, quants reassigned. */
static double ksym_fit_sub(const float *x, int n, int qn, int qp) {
    double M = 0.0;
    for (int i = 0; i < n; i++)
        if (fabs(x[i]) > fabs(M)) M = x[i];
    double best_s = M / -qn;
    if (M == 0.0) return 0.0;
    double best_sse = -1.0;
    for (int side = 0; side < 2; side++) {
        for (int k = -6; k <= 12; k++) {
            const double t = (side == 0 ? -qn : qp) * (1.0 + 0.02 * k);
            double s = M / t;
            double Sqq = 0, Sqx = 0;
            const double is0 = t / M;
            for (int i = 0; i < n; i++) {
                double q = floor(x[i] * is0 + 0.5);
                q = q < -qn ? -qn : (q > qp ? qp : q);
                Sqq += q * q;
                Sqx += q * x[i];
            }
            if (Sqq > 0 && Sqx != 0) s = Sqx / Sqq;
            double sse = 0;
            const double is = 1.0 / s;
            for (int i = 0; i < n; i++) {
                double q = floor(x[i] * is + 0.5);
                q = q < -qn ? -qn : (q > qp ? qp : q);
                double e = s * q - x[i];
                sse += e * e;
            }
            if (best_sse < 0 || sse < best_sse) {
                best_sse = sse;
                best_s = s;
            }
        }
    }
    return best_s;
}

static int ksym_refit(const float *x, const ksym_cfg *c, const double *B, const ksym_enc *in,
                      ksym_enc *out) {
    double Saa = 0, Sax = 0;
    for (int e = 0; e < c->nsub * c->sublen; e++) {
        const double a = (double)in->sc[e / c->sublen] * in->q[e];
        Saa += a * a;
        Sax += a * x[e];
    }
    if (!(Saa > 0.0)) return 0;
    const double D = Sax / Saa;
    if (!(fabs(D) <= 65504.0)) return 0;
    double s_t[16];
    for (int j = 0; j < c->nsub; j++) s_t[j] = in->sc[j] * D;
    uint16_t dh;
    round_f16(D, &dh);
    ksym_choose(x, c, s_t, B, dh, out);
    return 1;
}

static int ksym_better(const ksym_enc *a, const ksym_enc *b) {
    if (a->feasible != b->feasible) return a->feasible;
    return a->sse < b->sse;
}

static void ksym_quantize_block(const float *x, const ksym_cfg *c, ksym_enc *best) {
    double B[16], s_t[16];
    ksym_bound(x, c, B);

    /* the plain encoding: the largest element of each sub-block maps to -qn */
    for (int j = 0; j < c->nsub; j++) {
        const float *xs = x + j * c->sublen;
        double M = 0.0;
        for (int i = 0; i < c->sublen; i++)
            if (fabs(xs[i]) > fabs(M)) M = xs[i];
        s_t[j] = M / -c->qn;
    }
    ksym_from_targets(x, c, s_t, B, best);

    ksym_enc cand, next;
    for (int j = 0; j < c->nsub; j++) s_t[j] = ksym_fit_sub(x + j * c->sublen, c->sublen, c->qn, c->qp);
    ksym_from_targets(x, c, s_t, B, &cand);
    if (ksym_better(&cand, best)) *best = cand;
    cand = *best;
    for (int it = 0; it < 4; it++) {
        if (!ksym_refit(x, c, B, &cand, &next)) break;
        if (ksym_better(&next, best)) *best = next;
        cand = next;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Quantizers: encode, then pack                                                            */
/* ---------------------------------------------------------------------------------------- */

static const kmin_cfg Q2_K_CFG = {16, 16, 3, 15};
static const kmin_cfg Q4_K_CFG = {8, 32, 15, 63};
static const kmin_cfg Q5_K_CFG = {8, 32, 31, 63};
static const ksym_cfg Q3_K_CFG = {16, 16, 4, 3, 32, 31};
static const ksym_cfg Q6_K_CFG = {16, 16, 32, 31, 128, 127};

void plumb__quantize_q2_k(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    kmin_enc e;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q2_K_BYTES, src += QK_K) {
        kmin_quantize_block(src, &Q2_K_CFG, &e);
        memset(b, 0, PLUMB_Q2_K_BYTES);
        for (int j = 0; j < 16; j++) b[j] = (uint8_t)(e.sc[j] | (e.mn[j] << 4));
        for (int el = 0; el < QK_K; el++) {
            const int n = el / 128, j = (el % 128) / 32, l = el % 32;
            b[16 + 32 * n + l] |= (uint8_t)(e.q[el] << (2 * j));
        }
        plumb__wr_u16(b + 80, e.dh);
        plumb__wr_u16(b + 82, e.dminh);
    }
}

/* The 12 packed bytes of eight 6-bit scales and mins (inverse of get_scale_min_k4). */
static void pack_scale_min_k4(const uint8_t *sc, const uint8_t *mn, uint8_t *out) {
    for (int s = 0; s < 4; s++) {
        out[s] = (uint8_t)((sc[s] & 63) | ((sc[s + 4] >> 4) << 6));
        out[s + 4] = (uint8_t)((mn[s] & 63) | ((mn[s + 4] >> 4) << 6));
        out[s + 8] = (uint8_t)((sc[s + 4] & 0x0f) | ((mn[s + 4] & 0x0f) << 4));
    }
}

void plumb__quantize_q4_k(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    kmin_enc e;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q4_K_BYTES, src += QK_K) {
        kmin_quantize_block(src, &Q4_K_CFG, &e);
        plumb__wr_u16(b, e.dh);
        plumb__wr_u16(b + 2, e.dminh);
        pack_scale_min_k4(e.sc, e.mn, b + 4);
        uint8_t *qs = b + 16;
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                qs[32 * c + l] = (uint8_t)(e.q[64 * c + l] | (e.q[64 * c + 32 + l] << 4));
    }
}

void plumb__quantize_q5_k(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    kmin_enc e;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q5_K_BYTES, src += QK_K) {
        kmin_quantize_block(src, &Q5_K_CFG, &e);
        plumb__wr_u16(b, e.dh);
        plumb__wr_u16(b + 2, e.dminh);
        pack_scale_min_k4(e.sc, e.mn, b + 4);
        uint8_t *qh = b + 16, *qs = b + 48;
        memset(qh, 0, 32);
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int q0 = e.q[64 * c + l], q1 = e.q[64 * c + 32 + l];
                qs[32 * c + l] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
                qh[l] |= (uint8_t)(((q0 >> 4) << (2 * c)) | ((q1 >> 4) << (2 * c + 1)));
            }
        }
    }
}

void plumb__quantize_q3_k(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    ksym_enc e;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q3_K_BYTES, src += QK_K) {
        ksym_quantize_block(src, &Q3_K_CFG, &e);
        memset(b, 0, PLUMB_Q3_K_BYTES);
        uint8_t *hmask = b, *qs = b + 32, *scales = b + 96;
        for (int el = 0; el < QK_K; el++) {
            const int n = el / 128, j = (el % 128) / 32, l = el % 32;
            const int u = e.q[el] + 4; /* 0..7: low 2 bits in qs, bit 2 in hmask */
            qs[32 * n + l] |= (uint8_t)((u & 3) << (2 * j));
            hmask[l] |= (uint8_t)((u >> 2) << (4 * n + j));
        }
        for (int s = 0; s < 16; s++) {
            const int u = e.sc[s] + 32; /* 0..63 */
            if (s < 8)
                scales[s] |= (uint8_t)(u & 0x0f);
            else
                scales[s - 8] |= (uint8_t)((u & 0x0f) << 4);
            scales[8 + s % 4] |= (uint8_t)((u >> 4) << (2 * (s / 4)));
        }
        plumb__wr_u16(b + 108, e.dh);
    }
}

void plumb__quantize_q6_k(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    ksym_enc e;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q6_K_BYTES, src += QK_K) {
        ksym_quantize_block(src, &Q6_K_CFG, &e);
        memset(b, 0, PLUMB_Q6_K_BYTES);
        for (int el = 0; el < QK_K; el++) {
            const int n = el / 128, s = (el % 128) / 32, l = el % 32;
            const int u = e.q[el] + 32; /* 0..63: 4 low bits in ql, 2 high bits in qh */
            uint8_t *L = b + 64 * n, *H = b + 128 + 32 * n;
            const int li = l + 32 * (s & 1);
            L[li] |= (uint8_t)((u & 0x0f) << (4 * (s >> 1)));
            H[l] |= (uint8_t)((u >> 4) << (2 * s));
        }
        for (int s = 0; s < 16; s++) b[192 + s] = (uint8_t)e.sc[s];
        plumb__wr_u16(b + 208, e.dh);
    }
}

/* Q8_K: d = amax / 127 (f32), q = round(x / d), bsums = sums of 16 consecutive quants. */
void plumb__quantize_q8_k(const float *src, void *dst, int64_t k) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < k / QK_K; i++, b += PLUMB_Q8_K_BYTES, src += QK_K) {
        float amax = 0.0f;
        for (int l = 0; l < QK_K; l++) {
            const float a = fabsf(src[l]);
            if (a > amax) amax = a;
        }
        float d = amax / 127.0f;
        if (isinf(d * 127.0f)) d = nextafterf(d, 0.0f); /* keep 127 d finite near FLT_MAX */
        /* the inverse in double: 127 / amax overflows float for subnormal amax */
        const double id = amax > 0.0f ? 127.0 / amax : 0.0;
        plumb__wr_u32(b, plumb__f32_bits(d));
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int l = 16 * g; l < 16 * g + 16; l++) {
                double v = round(src[l] * id);
                const int q = v != v ? 0 : (v < -127.0 ? -127 : (v > 127.0 ? 127 : (int)v));
                b[4 + l] = (uint8_t)(int8_t)q;
                sum += q;
            }
            plumb__wr_u16(b + 260 + 2 * g, (uint16_t)(int16_t)sum);
        }
    }
}
