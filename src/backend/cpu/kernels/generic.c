/* generic.c — portable reference kernels: activation quantizers (Q8_0, Q8_1, Q8_K) and the
 * dot product of one weight row of every type with a quantized activation row.
 *
 * Each weight block is unpacked to small integers plus integer sub-block scales, multiplied
 * with the int8 activations in exact integer arithmetic, and scaled by the block's float
 * factors once. This is the reference every SIMD variant is tested against.
 */
#include "backend/cpu/kernels/kernels.h"

#include "quant/fp16.h"
#include "quant/quant.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

float plumb__f16_table[65536];

void plumb__f16_table_init(void) {
    for (uint32_t i = 0; i < 65536; i++) plumb__f16_table[i] = plumb__fp16_to_fp32((uint16_t)i);
}

/* The portable kernels are also compiled for x86-64-v3 (AVX2) and v4 (AVX-512) and picked
 * at load time by the CPU, so the compiler's vectorization of these loops pays everywhere;
 * hand-written SIMD kernels come in their own files. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PLUMB_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PLUMB_CLONES
#endif

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return plumb__f16_table[h];
}

int plumb__act_type(int type) {
    switch (type) {
    case PLUMB_TYPE_F32:
    case PLUMB_TYPE_F16:
    case PLUMB_TYPE_BF16: return PLUMB_ACT_F32;
    case PLUMB_TYPE_Q4_0:
    case PLUMB_TYPE_Q5_0:
    case PLUMB_TYPE_Q8_0: return PLUMB_ACT_Q8_0;
    case PLUMB_TYPE_Q4_1:
    case PLUMB_TYPE_Q5_1: return PLUMB_ACT_Q8_1;
    case PLUMB_TYPE_Q2_K:
    case PLUMB_TYPE_Q3_K:
    case PLUMB_TYPE_Q4_K:
    case PLUMB_TYPE_Q5_K:
    case PLUMB_TYPE_Q6_K:
    case PLUMB_TYPE_Q8_K: return PLUMB_ACT_Q8_K;
    default: return -1;
    }
}

size_t plumb__act_row_size(int act, int64_t n) {
    switch (act) {
    case PLUMB_ACT_F32: return (size_t)n * 4;
    case PLUMB_ACT_Q8_0: return (size_t)(n / 32) * 34;
    case PLUMB_ACT_Q8_1: return (size_t)(n / 32) * sizeof(plumb_q8_1_block);
    case PLUMB_ACT_Q8_K: return (size_t)(n / 256) * 292;
    default: return 0;
    }
}

/* ---- activation quantizers ------------------------------------------------------------ */

/* Round to nearest, ties to even, for |v| < 2^22. */
static inline int nearest_int(float v) {
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static void act_f32(const float *x, void *out, int64_t n) { memcpy(out, x, (size_t)n * 4); }

PLUMB_CLONES static void act_q8_0(const float *x, void *out, int64_t n) {
    uint8_t *o = out;
    for (int64_t b = 0; b < n / 32; b++, x += 32, o += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) { /* as fmaxf (a NaN is passed over), without the libm call */
            const float v = fabsf(x[j]);
            amax = v > amax ? v : amax;
        }
        /* scale 127/amax and ties to even: the reference engine's activation rounding */
        const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        uint16_t dh = plumb__fp32_to_fp16(d);
        memcpy(o, &dh, 2);
        for (int j = 0; j < 32; j++) o[2 + j] = (uint8_t)(int8_t)nearest_int(x[j] * id);
    }
}

PLUMB_CLONES static void act_q8_1(const float *x, void *out, int64_t n) {
    plumb_q8_1_block *o = out;
    for (int64_t b = 0; b < n / 32; b++, x += 32, o++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) { /* as fmaxf (a NaN is passed over), without the libm call */
            const float v = fabsf(x[j]);
            amax = v > amax ? v : amax;
        }
        const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            o->qs[j] = (int8_t)nearest_int(x[j] * id);
            sum += o->qs[j];
        }
        o->d = plumb__fp32_to_fp16(d);
        o->s = plumb__fp32_to_fp16((float)sum * d);
    }
}

PLUMB_CLONES static void act_q8_k(const float *x, void *out, int64_t n) {
    uint8_t *o = out;
    for (int64_t b = 0; b < n / 256; b++, x += 256, o += 292) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        int8_t *qs = (int8_t *)(o + 4);
        int16_t bsums[16];
        if (amax == 0.0f) {
            memset(o, 0, 292);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < 256; j++) {
            int v = nearest_int(iscale * x[j]);
            qs[j] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += qs[16 * g + j];
            bsums[g] = (int16_t)s;
        }
        float d = 1.0f / iscale;
        memcpy(o, &d, 4);
        memcpy(o + 260, bsums, sizeof bsums);
    }
}

/* ---- dot products: float weights ---------------------------------------------------------- */

/* F32 and F16 weights, as the reference's ggml_vec_dot_f32 and ggml_vec_dot_f16 (its
 * activations for F16 weights rounded to F16 first) compute them: 4 x 16 FMA lanes over
 * 64-element steps, folded (0+2, 1+3, then both) and summed by plumb__sum16; the last n % 64
 * products added one by one, for F32 each product rounded and then added to the float sum,
 * for F16 (as attn_dot) in double. */
PLUMB_CLONES static float dot_f32(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    float acc[4][16];
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++) acc[j][l] = 0.0f;
    const int64_t body = n & ~(int64_t)63;
    for (int64_t i = 0; i < body; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) acc[j][l] = fmaf(a[i + 16 * j + l], b[i + 16 * j + l], acc[j][l]);
    for (int l = 0; l < 16; l++) {
        acc[0][l] += acc[2][l];
        acc[1][l] += acc[3][l];
    }
    for (int l = 0; l < 16; l++) acc[0][l] += acc[1][l];
    float s = plumb__sum16(acc[0]);
    for (int64_t i = body; i < n; i++) {
        const float p = a[i] * b[i]; /* rounded, then added: not fused */
        s += p;
    }
    return s;
}

static inline float round_to_f16(float v) { return plumb__f16_table[plumb__fp32_to_fp16(v)]; }

PLUMB_CLONES static float dot_f16(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w;
    const float *b = x;
    float acc[4][16];
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++) acc[j][l] = 0.0f;
    const int64_t body = n & ~(int64_t)63;
    for (int64_t i = 0; i < body; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) {
                const int64_t e = i + 16 * j + l;
                acc[j][l] = fmaf(h2f(a + 2 * e), round_to_f16(b[e]), acc[j][l]);
            }
    for (int l = 0; l < 16; l++) {
        acc[0][l] += acc[2][l];
        acc[1][l] += acc[3][l];
    }
    for (int l = 0; l < 16; l++) acc[0][l] += acc[1][l];
    double s = plumb__sum16(acc[0]);
    for (int64_t i = body; i < n; i++) s += (double)(h2f(a + 2 * i) * round_to_f16(b[i]));
    return (float)s;
}

PLUMB_CLONES static float dot_bf16(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w;
    const float *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)(a[2 * i] | (a[2 * i + 1] << 8)) << 16;
        float f;
        memcpy(&f, &u, 4);
        s += f * b[i];
    }
    return s;
}

/* ---- legacy 32-element blocks ------------------------------------------------------------- */

static inline int dot32(const int8_t *q, const int8_t *y) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += q[j] * y[j];
    return s;
}

PLUMB_CLONES static float dot_q4_0(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, a += 18, b += 34) {
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)((a[2 + j] & 0xF) - 8);
            q[j + 16] = (int8_t)((a[2 + j] >> 4) - 8);
        }
        s += (float)dot32(q, (const int8_t *)(b + 2)) * (h2f(a) * h2f(b));
    }
    return s;
}

PLUMB_CLONES static float dot_q5_0(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, a += 22, b += 34) {
        uint32_t qh;
        memcpy(&qh, a + 2, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(((a[6 + j] & 0xF) | (((qh >> j) & 1) << 4)) - 16);
            q[j + 16] = (int8_t)(((a[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
        }
        s += (float)dot32(q, (const int8_t *)(b + 2)) * (h2f(a) * h2f(b));
    }
    return s;
}

PLUMB_CLONES static float dot_q8_0(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, a += 34, b += 34)
        s += (float)dot32((const int8_t *)(a + 2), (const int8_t *)(b + 2)) * (h2f(a) * h2f(b));
    return s;
}

PLUMB_CLONES static float dot_q4_1(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w;
    const plumb_q8_1_block *b = x;
    float s = 0.0f;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, a += 20, b++) {
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(a[4 + j] & 0xF);
            q[j + 16] = (int8_t)(a[4 + j] >> 4);
        }
        s += (float)dot32(q, b->qs) * (h2f(a) * plumb__f16_table[b->d]) + h2f(a + 2) * plumb__f16_table[b->s];
    }
    return s;
}

PLUMB_CLONES static float dot_q5_1(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w;
    const plumb_q8_1_block *b = x;
    float s = 0.0f;
    int8_t q[32];
    for (int64_t i = 0; i < n / 32; i++, a += 24, b++) {
        uint32_t qh;
        memcpy(&qh, a + 4, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)((a[8 + j] & 0xF) | (((qh >> j) & 1) << 4));
            q[j + 16] = (int8_t)((a[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        }
        s += (float)dot32(q, b->qs) * (h2f(a) * plumb__f16_table[b->d]) + h2f(a + 2) * plumb__f16_table[b->s];
    }
    return s;
}

/* ---- K blocks: 256 elements, 16 groups of 16 with integer scales ----------------------------- */

/* Sum over 16 groups of scale[g] * sum(q[16g..] * y[16g..]). */
static inline int dot256_scaled(const int8_t *q, const int8_t *y, const int *scale) {
    int total = 0;
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += q[16 * g + j] * y[16 * g + j];
        total += scale[g] * s;
    }
    return total;
}

static inline const int8_t *act_qs(const uint8_t *b) { return (const int8_t *)(b + 4); }
static inline float act_d(const uint8_t *b) {
    float d;
    memcpy(&d, b, 4);
    return d;
}
static inline int act_bsum(const uint8_t *b, int g) {
    int16_t v;
    memcpy(&v, b + 260 + 2 * g, 2);
    return v;
}

/* Q4_K / Q5_K 6-bit scale and min of sub-block s (0..7). */
static inline void scale_min_k4(const uint8_t *sc, int s, int *scale, int *min) {
    if (s < 4) {
        *scale = sc[s] & 63;
        *min = sc[s + 4] & 63;
    } else {
        *scale = (sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4);
        *min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}

/* One Q4_K super-block against a Q8_K block: nibbles qs, 6-bit scales and mins already
 * decoded, d and dmin as F32. */
static inline float q4k_block(const uint8_t *qs, const int *sc, const int *mn, float d, float dmin, const uint8_t *b) {
    int8_t q[256];
    int scale[16], mins = 0;
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (int8_t)(qs[32 * c + l] & 0xF);
            q[64 * c + 32 + l] = (int8_t)(qs[32 * c + l] >> 4);
        }
    }
    for (int sb = 0; sb < 8; sb++) {
        scale[2 * sb] = scale[2 * sb + 1] = sc[sb];
        mins += mn[sb] * (act_bsum(b, 2 * sb) + act_bsum(b, 2 * sb + 1));
    }
    const int sum = dot256_scaled(q, act_qs(b), scale);
    const float dy = act_d(b);
    return dy * d * (float)sum - dy * dmin * (float)mins;
}

PLUMB_CLONES static float dot_q4_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / 256; i++, a += 144, b += 292) {
        int sc[8], mn[8];
        for (int sb = 0; sb < 8; sb++) scale_min_k4(a + 4, sb, &sc[sb], &mn[sb]);
        s += q4k_block(a + 16, sc, mn, h2f(a), h2f(a + 2), b);
    }
    return s;
}

PLUMB_CLONES static float dot_q5_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    int8_t q[256];
    int scale[16];
    for (int64_t i = 0; i < n / 256; i++, a += 176, b += 292) {
        const uint8_t *qh = a + 16, *qs = a + 48;
        int mins = 0;
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] = (int8_t)((qs[32 * c + l] & 0xF) + ((qh[l] >> (2 * c)) & 1) * 16);
                q[64 * c + 32 + l] = (int8_t)((qs[32 * c + l] >> 4) + ((qh[l] >> (2 * c + 1)) & 1) * 16);
            }
        }
        for (int sb = 0; sb < 8; sb++) {
            int sc, mn;
            scale_min_k4(a + 4, sb, &sc, &mn);
            scale[2 * sb] = scale[2 * sb + 1] = sc;
            mins += mn * (act_bsum(b, 2 * sb) + act_bsum(b, 2 * sb + 1));
        }
        int sum = dot256_scaled(q, act_qs(b), scale);
        float dy = act_d(b);
        s += dy * h2f(a) * (float)sum - dy * h2f(a + 2) * (float)mins;
    }
    return s;
}

PLUMB_CLONES static float dot_q6_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    int8_t q[256];
    int scale[16];
    for (int64_t i = 0; i < n / 256; i++, a += 210, b += 292) {
        const uint8_t *ql = a, *qh = a + 128;
        const int8_t *sc = (const int8_t *)(a + 192);
        for (int h = 0; h < 2; h++) {
            const uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
            int8_t *o = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                o[l] = (int8_t)(((L[l] & 0xF) | (((H[l] >> 0) & 3) << 4)) - 32);
                o[l + 32] = (int8_t)(((L[l + 32] & 0xF) | (((H[l] >> 2) & 3) << 4)) - 32);
                o[l + 64] = (int8_t)(((L[l] >> 4) | (((H[l] >> 4) & 3) << 4)) - 32);
                o[l + 96] = (int8_t)(((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4)) - 32);
            }
        }
        for (int g = 0; g < 16; g++) scale[g] = sc[g];
        int sum = dot256_scaled(q, act_qs(b), scale);
        s += act_d(b) * h2f(a + 208) * (float)sum;
    }
    return s;
}

/* Q2_K and Q3_K walk 2-bit fields: half n, shift j, elements 128n + 32j + (0..31). */
PLUMB_CLONES static float dot_q2_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    int8_t q[256];
    int scale[16];
    for (int64_t i = 0; i < n / 256; i++, a += 84, b += 292) {
        const uint8_t *sc = a, *qs = a + 16;
        int mins = 0;
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) q[128 * h + 32 * j + l] = (int8_t)((qs[32 * h + l] >> (2 * j)) & 3);
        for (int g = 0; g < 16; g++) {
            scale[g] = sc[g] & 0xF;
            mins += (sc[g] >> 4) * act_bsum(b, g);
        }
        int sum = dot256_scaled(q, act_qs(b), scale);
        float dy = act_d(b);
        s += dy * h2f(a + 80) * (float)sum - dy * h2f(a + 82) * (float)mins;
    }
    return s;
}

PLUMB_CLONES static float dot_q3_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    int8_t q[256];
    int scale[16];
    for (int64_t i = 0; i < n / 256; i++, a += 110, b += 292) {
        const uint8_t *hm = a, *qs = a + 32, *sc = a + 96;
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++) {
                uint8_t m = (uint8_t)(1u << (4 * h + j));
                for (int l = 0; l < 32; l++)
                    q[128 * h + 32 * j + l] =
                        (int8_t)(((qs[32 * h + l] >> (2 * j)) & 3) - ((hm[l] & m) ? 0 : 4));
            }
        for (int k = 0; k < 16; k++) {
            int lo = k < 8 ? (sc[k] & 0xF) : (sc[k - 8] >> 4);
            int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
            scale[k] = (lo | (hi << 4)) - 32;
        }
        int sum = dot256_scaled(q, act_qs(b), scale);
        s += act_d(b) * h2f(a + 108) * (float)sum;
    }
    return s;
}

PLUMB_CLONES static float dot_q8_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / 256; i++, a += 292, b += 292) {
        int sum = 0;
        for (int j = 0; j < 256; j++) sum += act_qs(a)[j] * act_qs(b)[j];
        s += act_d(a) * act_d(b) * (float)sum;
    }
    return s;
}

void plumb__act_scales4(const void *x, size_t x_stride, int64_t n, float *xsv) {
    for (int64_t i = 0; i < n / 32; i++)
        for (int c = 0; c < 4; c++) {
            const float d = h2f((const uint8_t *)x + (size_t)c * x_stride + (size_t)i * 34);
            for (int l = 0; l < 8; l++) xsv[(4 * i + c) * 8 + l] = d;
        }
}

size_t plumb__wide_row_size(int type, int64_t n) {
    switch (type) {
    case PLUMB_TYPE_Q4_0:
    case PLUMB_TYPE_Q5_0:
    case PLUMB_TYPE_Q8_0: return (size_t)(n / 32) * PLUMB_WIDE_BLOCK;
    case PLUMB_TYPE_Q4_K: return (size_t)(n / 256) * PLUMB_WIDE_Q4K_BLOCK;
    case PLUMB_TYPE_Q6_K: return (size_t)(n / 256) * PLUMB_WIDE_Q6K_BLOCK;
    default: return 0;
    }
}

static void widen_q4_k(const uint8_t *a, uint8_t *o, int64_t n) {
    for (int64_t i = 0; i < n / 256; i++, a += 144, o += PLUMB_WIDE_Q4K_BLOCK) {
        const float d = h2f(a), dmin = h2f(a + 2);
        int16_t sc[8], mn[16];
        for (int k = 0; k < 8; k++) {
            int s, m;
            scale_min_k4(a + 4, k, &s, &m);
            sc[k] = (int16_t)s;
            mn[2 * k] = mn[2 * k + 1] = (int16_t)m;
        }
        memcpy(o, &d, 4);
        memcpy(o + 4, &dmin, 4);
        memcpy(o + 8, sc, 16);
        memcpy(o + 24, mn, 32);
        memcpy(o + 56, a + 16, 128);
    }
}

static void widen_q6_k(const uint8_t *a, uint8_t *o, int64_t n) {
    for (int64_t i = 0; i < n / 256; i++, a += 210, o += PLUMB_WIDE_Q6K_BLOCK) {
        const float d = h2f(a + 208);
        memcpy(o, &d, 4);
        memcpy(o + 4, a + 192, 16);
        uint8_t *q = o + 20;
        for (int h = 0; h < 2; h++) {
            const uint8_t *L = a + 64 * h, *H = a + 128 + 32 * h;
            uint8_t *e = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                e[l] = (uint8_t)((L[l] & 0xF) | (((H[l] >> 0) & 3) << 4));
                e[l + 32] = (uint8_t)((L[l + 32] & 0xF) | (((H[l] >> 2) & 3) << 4));
                e[l + 64] = (uint8_t)((L[l] >> 4) | (((H[l] >> 4) & 3) << 4));
                e[l + 96] = (uint8_t)((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4));
            }
        }
    }
}

void plumb__widen(int type, const void *w, void *out, int64_t n) {
    const uint8_t *a = w;
    uint8_t *o = out;
    if (type == PLUMB_TYPE_Q4_K) {
        widen_q4_k(a, o, n);
        return;
    }
    if (type == PLUMB_TYPE_Q6_K) {
        widen_q6_k(a, o, n);
        return;
    }
    const size_t wbytes = type == PLUMB_TYPE_Q8_0 ? 34 : type == PLUMB_TYPE_Q5_0 ? 22 : 18;
    for (int64_t i = 0; i < n / 32; i++, a += wbytes, o += PLUMB_WIDE_BLOCK) {
        int8_t *q = (int8_t *)(o + 4);
        const float d = h2f(a);
        memcpy(o, &d, 4);
        if (type == PLUMB_TYPE_Q8_0) {
            memcpy(q, a + 2, 32);
        } else if (type == PLUMB_TYPE_Q5_0) {
            uint32_t qh;
            memcpy(&qh, a + 2, 4);
            for (int j = 0; j < 16; j++) {
                q[j] = (int8_t)(((a[6 + j] & 0xF) | (((qh >> j) & 1) << 4)) - 16);
                q[j + 16] = (int8_t)(((a[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
            }
        } else {
            for (int j = 0; j < 16; j++) {
                q[j] = (int8_t)((a[2 + j] & 0xF) - 8);
                q[j + 16] = (int8_t)((a[2 + j] >> 4) - 8);
            }
        }
    }
}

/* dot_q6_k on a wide row: the same integer sums and float expression */
PLUMB_CLONES static float wide_dot_q6_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    int8_t q[256];
    int scale[16];
    for (int64_t i = 0; i < n / 256; i++, a += PLUMB_WIDE_Q6K_BLOCK, b += 292) {
        float d;
        memcpy(&d, a, 4);
        for (int e = 0; e < 256; e++) q[e] = (int8_t)(a[20 + e] - 32);
        for (int g = 0; g < 16; g++) scale[g] = ((const int8_t *)(a + 4))[g];
        int sum = dot256_scaled(q, act_qs(b), scale);
        s += act_d(b) * d * (float)sum;
    }
    return s;
}

/* dot_q4_k on a wide row: the same integer sums and float expression */
PLUMB_CLONES static float wide_dot_q4_k(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / 256; i++, a += PLUMB_WIDE_Q4K_BLOCK, b += 292) {
        float d, dmin;
        int16_t sc16[8], mn16[16];
        int sc[8], mn[8];
        memcpy(&d, a, 4);
        memcpy(&dmin, a + 4, 4);
        memcpy(sc16, a + 8, 16);
        memcpy(mn16, a + 24, 32);
        for (int sb = 0; sb < 8; sb++) sc[sb] = sc16[sb], mn[sb] = mn16[2 * sb];
        s += q4k_block(a + 56, sc, mn, d, dmin, b);
    }
    return s;
}

PLUMB_CLONES static float wide_dot(int64_t n, const void *w, const void *x) {
    const uint8_t *a = w, *b = x;
    float s = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, a += PLUMB_WIDE_BLOCK, b += 34) {
        float d;
        memcpy(&d, a, 4);
        s += (float)dot32((const int8_t *)(a + 4), (const int8_t *)(b + 2)) * (d * h2f(b));
    }
    return s;
}

PLUMB_CLONES static float attn_dot(const float *q, const uint16_t *k, int64_t n) {
    float acc[4][16];
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++) acc[j][l] = 0.0f;
    const int64_t body = n & ~(int64_t)63;
    for (int64_t i = 0; i < body; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) acc[j][l] = fmaf(q[i + 16 * j + l], plumb__f16_table[k[i + 16 * j + l]], acc[j][l]);
    for (int l = 0; l < 16; l++) {
        acc[0][l] += acc[2][l];
        acc[1][l] += acc[3][l];
    }
    for (int l = 0; l < 16; l++) acc[0][l] += acc[1][l];
    double s = plumb__sum16(acc[0]);
    for (int64_t i = body; i < n; i++) s += (double)(q[i] * plumb__f16_table[k[i]]);
    return (float)s;
}

PLUMB_CLONES static void attn_qk(const float *q, size_t qs, int nq, const uint16_t *k, size_t ks, int32_t nk,
                                 int64_t n, float scale, float *out, size_t os) {
    for (int i = 0; i < nq; i++)
        for (int32_t j = 0; j < nk; j++) out[(size_t)i * os + (size_t)j] = attn_dot(q + (size_t)i * qs, k + (size_t)j * ks, n) * scale;
}

PLUMB_CLONES static void silu(const float *x, const float *y, float *o, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] = plumb__silu_lane(x[i], y, i);
}

/* eight rows' chains side by side */
static void sum_squares(const float *x, int64_t ne0, int64_t nrows, double *sums) {
    for (int64_t r0 = 0; r0 < nrows; r0 += 8) {
        const int64_t nr = nrows - r0 < 8 ? nrows - r0 : 8;
        const float *xr = x + r0 * ne0;
        double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (int64_t i = 0; i < ne0; i++)
            for (int64_t k = 0; k < nr; k++) s[k] += (double)(xr[k * ne0 + i] * xr[k * ne0 + i]);
        memcpy(sums + r0, s, (size_t)nr * sizeof(double));
    }
}

static void gelu_f16(const float *table, const float *x, const float *y, float *o, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i], g = v <= -10.0f ? 0.0f : v >= 10.0f ? v : table[plumb__fp32_to_fp16(v)];
        o[i] = y ? g * y[i] : g;
    }
}

PLUMB_CLONES static double attn_exp(float *sc, int32_t first, int32_t pos, float mx, float *bsum) {
    double sum = 0.0;
    for (int32_t c0 = first / 16 * 16; c0 <= pos; c0 += 16) {
        const float b = plumb__attn_exp_block(sc, c0, first, pos, mx);
        if (bsum) *bsum++ = b;
        sum += (double)b;
    }
    return sum;
}

static void attn_softmax(float *sc, int32_t first, int32_t pos) {
    float mx = -INFINITY;
    for (int32_t j = 0; j <= pos - first; j++) mx = sc[j] > mx ? sc[j] : mx;
    const float inv = (float)(1.0 / attn_exp(sc, first, pos, mx, NULL));
    for (int32_t j = 0; j <= pos - first; j++) sc[j] = plumb__f16_table[plumb__fp32_to_fp16(sc[j] * inv)];
}

/* Lane l's positions are first + ((l - first) mod 64), then every 64th up to pos. Dimensions go
 * 64 at a time so the lanes of one chunk stay in L1. */
PLUMB_CLONES static void attn_pv_row(const float *p, size_t ps, int nh, const uint16_t *v, size_t vs, int32_t first,
                                     int32_t pos, int64_t hd, float *out, size_t os) {
    float lanes[64][64];
    for (int i = 0; i < nh; i++)
        for (int64_t d0 = 0; d0 < hd; d0 += 64) {
            const int64_t dn = hd - d0 < 64 ? hd - d0 : 64;
            for (int32_t l = 0; l < 64; l++) {
                float *acc = lanes[l];
                const int32_t j1 = first + ((l - first) & 63);
                if (j1 > pos) {
                    for (int64_t d = 0; d < dn; d++) acc[d] = 0.0f;
                    continue;
                }
                const float w1 = p[(size_t)i * ps + (size_t)(j1 - first)];
                const uint16_t *r1 = v + (size_t)j1 * vs + d0;
                for (int64_t d = 0; d < dn; d++) acc[d] = w1 * plumb__f16_table[r1[d]];
                for (int32_t j = j1 + 64; j <= pos; j += 64) {
                    const float w = p[(size_t)i * ps + (size_t)(j - first)];
                    const uint16_t *r = v + (size_t)j * vs + d0;
                    for (int64_t d = 0; d < dn; d++) acc[d] = fmaf(w, plumb__f16_table[r[d]], acc[d]);
                }
            }
            for (int64_t d = 0; d < dn; d++) {
                float r[16];
                for (int l = 0; l < 16; l++) r[l] = (lanes[l][d] + lanes[32 + l][d]) + (lanes[16 + l][d] + lanes[48 + l][d]);
                out[(size_t)i * os + (size_t)(d0 + d)] = plumb__sum16(r);
            }
        }
}

static void attn_pv(const plumb_attn_pv_row *rows, int nt, int nh, size_t ps, const uint16_t *v, size_t vs, int64_t hd,
                    size_t os, float *work) {
    (void)work;
    for (int t = 0; t < nt; t++) attn_pv_row(rows[t].p, ps, nh, v, vs, rows[t].first, rows[t].pos, hd, rows[t].out, os);
}

static void hsum8(const float *x, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i++, x += 8) out[i] = ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
}

static void f32_to_f16(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = plumb__fp32_to_fp16(x[i]);
}

static void round_f16(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = plumb__f16_table[plumb__fp32_to_fp16(x[i])];
}

static const plumb_kernel_set generic_set = {
    .name = "generic",
    .vec_dot =
        {
            [PLUMB_TYPE_F32] = dot_f32,   [PLUMB_TYPE_F16] = dot_f16,   [PLUMB_TYPE_BF16] = dot_bf16,
            [PLUMB_TYPE_Q4_0] = dot_q4_0, [PLUMB_TYPE_Q4_1] = dot_q4_1, [PLUMB_TYPE_Q5_0] = dot_q5_0,
            [PLUMB_TYPE_Q5_1] = dot_q5_1, [PLUMB_TYPE_Q8_0] = dot_q8_0, [PLUMB_TYPE_Q2_K] = dot_q2_k,
            [PLUMB_TYPE_Q3_K] = dot_q3_k, [PLUMB_TYPE_Q4_K] = dot_q4_k, [PLUMB_TYPE_Q5_K] = dot_q5_k,
            [PLUMB_TYPE_Q6_K] = dot_q6_k, [PLUMB_TYPE_Q8_K] = dot_q8_k,
        },
    .act_quantize = {[PLUMB_ACT_F32] = act_f32, [PLUMB_ACT_Q8_0] = act_q8_0, [PLUMB_ACT_Q8_1] = act_q8_1,
                     [PLUMB_ACT_Q8_K] = act_q8_k},
    .act_prep4 = plumb__act_scales4,
    .act4_block_bytes = 128,
    .widen = plumb__widen,
    .wide_dot = {[PLUMB_TYPE_Q4_0] = wide_dot, [PLUMB_TYPE_Q5_0] = wide_dot, [PLUMB_TYPE_Q8_0] = wide_dot,
                 [PLUMB_TYPE_Q4_K] = wide_dot_q4_k, [PLUMB_TYPE_Q6_K] = wide_dot_q6_k},
    .f32_to_f16 = f32_to_f16,
    .round_f16 = round_f16,
    .hsum8 = hsum8,
    .attn_dot = attn_dot,
    .attn_qk = attn_qk,
    .attn_exp = attn_exp,
    .attn_softmax = attn_softmax,
    .silu = silu,
    .gelu_f16 = gelu_f16,
    .sum_squares = sum_squares,
    .attn_pv = attn_pv,
};

const plumb_kernel_set *plumb__kernels_generic(void) { return &generic_set; }

static const plumb_kernel_set *chosen;

const plumb_kernel_set *plumb__kernels_avx2(void) {
    const plumb_cpu_features *f = plumb_cpu_get();
    return f->avx2 && f->fma && f->f16c ? plumb__kernels_avx2_build() : NULL;
}

const plumb_kernel_set *plumb__kernels_avx512vnni(void) {
    const plumb_cpu_features *f = plumb_cpu_get();
    return f->avx2 && f->fma && f->f16c && f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni
               ? plumb__kernels_avx512vnni_build()
               : NULL;
}

static void choose(void) {
    plumb__f16_table_init();
    const char *want = getenv("PLUMB_KERNELS");
    chosen = &generic_set;
    if (want && strcmp(want, "generic") == 0) return;
    if (plumb__kernels_avx2()) chosen = plumb__kernels_avx2();
    if (want && strcmp(want, "avx2") == 0) return;
    if (plumb__kernels_avx512vnni()) chosen = plumb__kernels_avx512vnni();
}

const plumb_kernel_set *plumb__kernels_get(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, choose);
    return chosen;
}
