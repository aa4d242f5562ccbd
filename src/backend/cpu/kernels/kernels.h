/* kernels.h — CPU kernels behind the matmul: activation quantizers and the dot products of
 * a weight row of each type with a quantized activation row.
 *
 * A weight type w has an activation ("vec dot") type: the legacy 4/5/8-bit formats dot
 * with Q8_0 (or Q8_1 for the ones with a min), the K formats with Q8_K, float formats with
 * F32. Activations are quantized once per op and reused by every weight row. Integer
 * products inside a block are exact; each block's result is added in a fixed order, so a
 * row's result does not depend on how many rows are computed with it.
 *
 * generic.c holds the portable reference; per-ISA variants (x86_avx2.c, x86_avx512.c) are
 * chosen at run time by plumb__kernels_get() and tested against the reference.
 */
#ifndef PLUMB_CPU_KERNELS_H
#define PLUMB_CPU_KERNELS_H

#include "plumb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

/* Activation block formats (not GGUF types). */
#define PLUMB_ACT_F32 0
#define PLUMB_ACT_Q8_0 1 /* f16 d, int8 qs[32]                      (34 bytes / 32) */
#define PLUMB_ACT_Q8_1 2 /* f16 d, f16 s = d * sum(qs), int8 qs[32]  (36 bytes / 32) */
#define PLUMB_ACT_Q8_K 3 /* f32 d, int8 qs[256], int16 bsums[16]     (292 bytes / 256) */

typedef struct plumb_q8_1_block {
    uint16_t d, s;
    int8_t qs[32];
} plumb_q8_1_block;

/* y = sum over k of w[k] * x[k] for one weight row of n elements. */
typedef float (*plumb_vec_dot_fn)(int64_t n, const void *w, const void *x);
/* Quantizes n floats into the activation format. */
typedef void (*plumb_act_quantize_fn)(const float *x, void *out, int64_t n);

/* The same dot product for 4 activation rows at once (x, x + x_stride, ...): out[c] is
 * bit for bit what vec_dot gives for row c; the weight row is decoded once. For Q8_0
 * activations, xsv holds their block scales as F32 (plumb__act_scales4), made once for many
 * weight rows; other formats ignore it. */
typedef void (*plumb_vec_dot4_fn)(int64_t n, const void *w, const void *x, size_t x_stride, const float *xsv,
                                  float *out);

/* vec_dot4 of two weight rows (w, w + w_stride) leaving lanes (see wide_dot4_lanes) */
typedef void (*plumb_vec_dot4x2_fn)(int64_t n, const void *w, size_t w_stride, const void *x, size_t x_stride,
                                    const float *xsv, float *out);

/* The dot products of two weight rows with one activation row: out[r] is bit for bit what
 * vec_dot gives for w_r (the activation row is read once for both). */
typedef void (*plumb_vec_dot2_fn)(int64_t n, const void *w0, const void *w1, const void *x, float *out);

/* The block scales of 4 rows of Q8_0 activations of n elements, as F32: for block i, row c,
 * 8 copies at xsv[(4 i + c) * 8] (n / 32 * 128 bytes). */
void plumb__act_scales4(const void *x, size_t x_stride, int64_t n, float *xsv);
/* The x86 sets' Q8_0 and Q8_K activation quantizers (x86_act.c, AVX2): the generic set's bytes. */
void plumb__act_q8_0_avx2(const float *x, void *out, int64_t n);
void plumb__act_q8_k_avx2(const float *x, void *out, int64_t n);
/* A kernel set's preparation of 4 Q8_0 activation rows for its 4-row kernels: n / 32 *
 * act4_block_bytes bytes at xsv that begin with plumb__act_scales4's; a set may add more
 * after them (the AVX2 and AVX-512 sets: the rows' values side by side per block; the
 * AVX-512 set also their sums). */
typedef void (*plumb_act_prep4_fn)(const void *x, size_t x_stride, int64_t n, float *xsv);

/* Wide layouts, made once per block of weight rows for large batches so that nibbles are not
 * unpacked, nor scales converted or decoded, again for every group of activation rows. A
 * legacy block (Q4_0, Q5_0, Q8_0) becomes F32 scale + 32 int8 values (36 bytes); a Q4_K
 * super-block becomes F32 d and dmin, its 8 sub-block scales as int16, its 8 mins as int16
 * pairs and its 128 bytes of nibbles (184 bytes); a Q6_K super-block becomes F32 d, its 16
 * int8 scales and its 256 6-bit codes one per byte, in element order (276 bytes). The wide kernels give the original type's
 * results bit for bit (the same integer sums, the same float operations: F32 copies of F16
 * scales are exact). */
#define PLUMB_WIDE_BLOCK 36
#define PLUMB_WIDE_Q4K_BLOCK 184
#define PLUMB_WIDE_Q6K_BLOCK 276
/* Bytes of a wide row of n weights of type (0 for a type without a wide layout). */
size_t plumb__wide_row_size(int type, int64_t n);
void plumb__widen(int type, const void *w, void *out, int64_t n);
typedef void (*plumb_widen_fn)(int type, const void *w, void *out, int64_t n);

/* The register-tiled prompt GEMM of a weight type (sets that have one): PLUMB_GEMM_ROWS weight
 * rows packed once per op (pack: interleaved so that one register holds the same lane of every
 * row), activation rows prepared once per op (prep, from the type's activation format), and run
 * giving out[t * os + r] for r < nrows, t < T: bit for bit vec_dot of weight row r with
 * activation row t. x86_avx512_gemm.c (Q4_0, Q5_0, Q8_0: packed from the set's wide rows),
 * x86_avx512_gemm_k.c (Q4_K, Q6_K: from the file's rows) and x86_avx2_gemm.c (the AVX2 set's,
 * 8 rows: Q4_0, Q5_0, Q8_0) describe the layouts. */
#define PLUMB_GEMM_ROWS 16 /* the most rows of any set's packed group */
#define PLUMB_GEMM8_ROWS 8
#define PLUMB_GEMM8_BLOCK (PLUMB_GEMM8_ROWS * 36)
#define PLUMB_GEMM8_ACT_BLOCK 40
#define PLUMB_GEMM_BLOCK (PLUMB_GEMM_ROWS * 72)
#define PLUMB_GEMM_ACT_BLOCK 72
#define PLUMB_GEMM_K_BLOCK 8832
#define PLUMB_GEMM_K_ACT_BLOCK 576
/* Rows ws bytes apart (rows from nrows on count as zero) to packed rows. */
typedef void (*plumb_gemm_pack_fn)(const void *w, size_t ws, int nrows, void *out, int64_t n);
/* One activation row of n values to the GEMM's form. */
typedef void (*plumb_gemm_prep_fn)(const void *xq, void *out, int64_t n);
/* scratch: run_bytes per block of the caller's memory, 64-byte aligned (a GEMM allocates
 * nothing) */
typedef void (*plumb_gemm_fn)(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                              int nrows, void *scratch);
/* run for two groups at once: the second one's packed rows at wp + gs, nrows the second's rows
 * (the first has PLUMB_GEMM_ROWS), its outputs from out + PLUMB_GEMM_ROWS; the scratch is run's
 * (run_bytes per block covers both). */
typedef void (*plumb_gemm2_fn)(int64_t n, const void *wp, size_t gs, const void *xp, size_t xps, int64_t T, float *out,
                               size_t os, int nrows, void *scratch);
/* A kept group (plumb_gemm_ops.keep's layout) to the packed one. */
typedef void (*plumb_gemm_unkeep_fn)(const void *kept, void *out, int64_t n);
typedef struct plumb_gemm_ops {
    int rows;          /* rows of a packed group: PLUMB_GEMM_ROWS or PLUMB_GEMM8_ROWS */
    bool wide;         /* pack takes the set's wide rows (widen) instead of the file's */
    int64_t block;     /* values per block */
    size_t pack_bytes; /* per block of PLUMB_GEMM_ROWS rows */
    size_t act_bytes;  /* per activation block */
    size_t run_bytes;  /* run's scratch per block */
    plumb_gemm_pack_fn pack;
    plumb_gemm_prep_fn prep;
    plumb_gemm_fn run;
    plumb_gemm2_fn run2; /* optional */
    /* Optional: a layout of the packed groups about as large as the file's rows, which a context
     * keeps for the model's lifetime (cpu_repack.c): keep makes it from the file's rows
     * (keep_bytes per block of rows), run_kept runs batches of fewer than 8 rows from it (with
     * activations from prep_kept, act_kept_bytes per block, where it has its own), unkeep (where
     * there is one; else run takes pack's groups of the file's rows) expands a group for run. */
    size_t keep_bytes;
    plumb_gemm_pack_fn keep;
    plumb_gemm_fn run_kept;
    plumb_gemm_unkeep_fn unkeep;
    plumb_gemm_prep_fn prep_kept;
    size_t act_kept_bytes;
    int kept_min_rows; /* run_kept from this many rows (0: 1); fewer go through the one-row kernels */
} plumb_gemm_ops;
void plumb__gemm8_pack(const void *wide, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm8_prep(const void *xq, void *out, int64_t n);
void plumb__gemm8(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                  void *scratch);
void plumb__gemm16_pack(const void *wide, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_prep(const void *xq, void *out, int64_t n);
void plumb__gemm16_prep_kept(const void *xq, void *out, int64_t n);
/* One packed block of 16 rows from their F32 scales and 8 lane registers of signed weights (64
 * bytes each): the layout x86_avx512_gemm.c describes. */
void plumb__gemm16_pack_block(const float *scales, const void *lanes, void *out);
void plumb__gemm16(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                   void *scratch);
void plumb__gemm16_block_sums(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                              int nrows, void *scratch);
void plumb__gemm16_pack_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_pack_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_prep_k(const void *xq, void *out, int64_t n);
void plumb__gemm16_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                        void *scratch);
void plumb__gemm32_q4_k(int64_t n, const void *wp, size_t gs, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                        int nrows, void *scratch);
void plumb__gemm32_q6_k(int64_t n, const void *wp, size_t gs, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                        int nrows, void *scratch);
void plumb__gemm16_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                        void *scratch);
/* x86_avx512_gemm_kept.c: the kept layout of Q4_0, Q5_0, Q8_0 */
void plumb__gemm16_keep_q4_0(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_keep_q5_0(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_keep_q8_0(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_unkeep_q4_0(const void *kept, void *out, int64_t n);
void plumb__gemm16_unkeep_q5_0(const void *kept, void *out, int64_t n);
void plumb__gemm16_unkeep_q8_0(const void *kept, void *out, int64_t n);
void plumb__gemm16_kept_q4_0(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch);
void plumb__gemm16_kept_q5_0(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch);
void plumb__gemm16_kept_q8_0(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch);
/* x86_avx512_gemm_kept_k.c: the kept layouts of Q4_K and Q6_K (bytes per super-block of 16 rows) */
#define PLUMB_GEMM_KEPT_K_BLOCK(q4k) ((q4k) ? 2368 : 3360)
#define PLUMB_GEMM_KEPT_K_RUN_BYTES 2048 /* its scratch per super-block; also the int16 GEMM's */
void plumb__gemm16_keep_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_keep_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_kept_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch);
void plumb__gemm16_kept_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch);
#define PLUMB_GEMM8_RUN_BYTES (8 * 32)     /* plumb__gemm8's scratch per block */
/* x86_avx512_gemm_ksum.c: the block-sum GEMM of Q4_K and Q6_K */
#define PLUMB_GEMM_KSUM_BLOCK 5760
#define PLUMB_GEMM_KSUM_ACT_BLOCK 320
/* ... which holds a Q8_K block's 256 int8 values in element order, then at these offsets its 16
 * sums of 16 and 8 sums of 32 (int16), d and -d (F32) (plumb__gemm16_prep_sums) */
#define PLUMB_KSUM_ACT_BSUMS 256
#define PLUMB_KSUM_ACT_S32 288
#define PLUMB_KSUM_ACT_D 304
void plumb__gemm16_pack_sums_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm16_pack_sums_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
/* x86_avx2_gemm_k.c: one Q8_K activation row (292-byte blocks) to PLUMB_GEMM_KSUM_ACT_BLOCK bytes
 * per super-block (the AVX-512 block-sum GEMM's, the kept K layouts' and the AVX2 K GEMM's
 * form) */
void plumb__gemm16_prep_sums(const void *xq, void *out, int64_t n);
/* ... and the AVX2 set's K-quant GEMM: 8 rows, PLUMB_GEMM8_K_BLOCK bytes per packed super-block */
#define PLUMB_GEMM8_K_BLOCK 2880
void plumb__gemm8_pack_q4_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm8_pack_q6_k(const void *w, size_t ws, int nrows, void *out, int64_t n);
void plumb__gemm8_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                       void *scratch);
void plumb__gemm8_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os, int nrows,
                       void *scratch);
void plumb__gemm16_sums_q4_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch);
void plumb__gemm16_sums_q6_k(int64_t n, const void *wp, const void *xp, size_t xps, int64_t T, float *out, size_t os,
                             int nrows, void *scratch);
#define PLUMB_GEMM_K_RUN_BYTES (2 * 8 * 64) /* plumb__gemm16_q4_k's and _q6_k's per super-block */

/* Converts n floats to F16 (to nearest, ties to even: plumb__fp32_to_fp16's bits). */
typedef void (*plumb_f32_to_f16_fn)(const float *x, uint16_t *y, int64_t n);
/* Rounds n floats to F16 values (to nearest, ties to even, as plumb__fp32_to_fp16), as F32. */
typedef void (*plumb_round_f16_fn)(const float *x, float *y, int64_t n);

/* Attention over an F16 KV cache, in the reference engine's F16 order (see cpu_ops.c):
 * attn_dot gives the dot product of n floats q with n F16 values k, accumulated in 4 x 16 lanes
 * over 64-element steps, folded (0+2, 1+3, then both) and summed in a fixed tree, the tail of
 * n % 64 added in double. attn_pv gives, for each of nt tokens (plumb_attn_pv_row: up to
 * PLUMB_PV_TOKENS, whose spans may differ) and each of its nh heads i, the probability-weighted
 * sum of the value rows of positions first..pos: out[i * os + d] is the F16 dot product over
 * positions of p[i * ps + (j - first)] and v[j * vs + d], in 64 lanes (lane j % 64 adds its
 * positions in increasing order, its first one by a product), the lanes no position reaches
 * zero, folded as attn_dot folds its lanes (0+32, 16+48, then plumb__sum16): each token's
 * results whatever the others. */
/* The fixed tree that sums 16 lanes: halves, quarters, then pairs (the reference engine's
 * reduction of its F16 accumulators). */
static inline float plumb__sum16(const float *a) {
    float t8[8], t4[4];
    for (int i = 0; i < 8; i++) t8[i] = a[8 + i] + a[i];
    for (int i = 0; i < 4; i++) t4[i] = t8[4 + i] + t8[i];
    return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

/* e^x (softmax arguments, which are <= 0, and SiLU's): x = n ln2 + b, e^b by a degree-5 polynomial, times 2^n
 * rounded once (as ldexpf); fmaf is exact, so every build gives the same bits. */
static inline float plumb__exp_poly(float x) {
    if (x != x) return x; /* NaN in, NaN out (and no NaN converted to an integer below) */
    const float shift = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, shift);
    const float n = z - shift;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    if (fabsf(n) > 192.0f) return n > 0.0f ? INFINITY : 0.0f;
    const float u = b * b;
    const float p = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                         fmaf(0x1.ffffecp-1f, b, 1.0f));
    /* p * 2^n rounded once to float (the product is exact in double) */
    const uint64_t bits = (uint64_t)((int64_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return (float)((double)p * scale);
}

/* One block of 16 positions from c0 for attn_exp, one score at a time: the scores of positions
 * in first..pos replaced by their exponentials; returns the block's plumb__sum16 (positions
 * outside add 0). */
static inline float plumb__attn_exp_block(float *sc, int32_t c0, int32_t first, int32_t pos, float mx) {
    float block[16];
    for (int l = 0; l < 16; l++) {
        const int32_t j = c0 + l;
        block[l] = 0.0f;
        if (j >= first && j <= pos) block[l] = sc[j - first] = plumb__exp_poly(sc[j - first] - mx);
    }
    return plumb__sum16(block);
}

typedef float (*plumb_attn_dot_fn)(const float *q, const uint16_t *k, int64_t n);
/* The scaled scores of nq query rows (q + i * qs, n floats each) against nk key rows (k + j *
 * ks, n F16 values each): out[i * os + j] = attn_dot(q_i, k_j, n) * scale, bit for bit. */
typedef void (*plumb_attn_qk_fn)(const float *q, size_t qs, int nq, const uint16_t *k, size_t ks, int32_t nk,
                                 int64_t n, float scale, float *out, size_t os);
/* Softmax exponentials of the scores of positions first..pos (sc[j - first]), in place:
 * e^(s - mx) by plumb__exp_poly; returns their sum taken in blocks of 16 positions counted from
 * 0 (positions outside first..pos add 0), each block summed by plumb__sum16, the blocks added
 * in double in order. Unless bsum is NULL, the block sums also go to bsum[0], bsum[1], ... (block
 * first / 16 first), so that a span cut at multiples of 16 can be summed as one. */
typedef double (*plumb_attn_exp_fn)(float *sc, int32_t first, int32_t pos, float mx, float *bsum);
/* A row's softmax in place, the scores of positions first..pos (sc[j - first]) to their
 * probabilities rounded to F16 values: their maximum mx (NaN scores skipped), attn_exp's
 * exponentials and sum, each times (float)(1 / sum), rounded as round_f16 rounds. */
typedef void (*plumb_attn_softmax_fn)(float *sc, int32_t first, int32_t pos);
#define PLUMB_PV_TOKENS 8
typedef struct plumb_attn_pv_row {
    const float *p; /* head i's probability of position j at p[i * ps + (j - first)] */
    int32_t first, pos;
    float *out; /* head i's sums at out[i * os + d] */
} plumb_attn_pv_row;
/* work: 64-byte aligned room for plumb__pv_work_floats(n) floats, where every row's positions
 * are below n (a set may lay the probabilities out again there); NULL: none. */
typedef void (*plumb_attn_pv_fn)(const plumb_attn_pv_row *rows, int nt, int nh, size_t ps, const uint16_t *v, size_t vs,
                                 int64_t hd, size_t os, float *work);
/* Rows of 64 positions (a lane's steps) that positions below n take, with room for a start
 * not on a multiple of 64 and a rounding up to 16. */
static inline size_t plumb__pv_steps(int32_t n) { return ((size_t)n / 64 + 2 + 15) / 16 * 16; }
/* attn_pv's work: PLUMB_PV_TOKENS x 4 heads' probabilities lane by lane, and one lane's value
 * rows of 64 dimensions as F32. */
static inline size_t plumb__pv_work_floats(int32_t n) { return ((size_t)PLUMB_PV_TOKENS * 4 + 1) * 64 * plumb__pv_steps(n); }

typedef struct plumb_kernel_set {
    const char *name; /* "generic", "avx2", "avx512" */
    plumb_vec_dot_fn vec_dot[PLUMB_TYPE_COUNT];
    plumb_vec_dot4_fn vec_dot4[PLUMB_TYPE_COUNT]; /* NULL: call vec_dot per row */
    plumb_vec_dot4_fn vec_dot4_lanes[PLUMB_TYPE_COUNT]; /* as wide_dot4_lanes, for vec_dot4 */
    plumb_vec_dot2_fn vec_dot2[PLUMB_TYPE_COUNT]; /* NULL: call vec_dot per row */
    plumb_act_quantize_fn act_quantize[4];
    plumb_act_prep4_fn act_prep4; /* the xsv of vec_dot4 and wide_dot4 for Q8_0 activations */
    size_t act4_block_bytes;      /* bytes act_prep4 writes per block of 32 */
    plumb_widen_fn widen; /* plumb__widen's bytes, faster where the set has a version */
    plumb_vec_dot_fn wide_dot[PLUMB_TYPE_COUNT]; /* wide rows of the type with its activations */
    plumb_vec_dot4_fn wide_dot4[PLUMB_TYPE_COUNT];
    /* wide_dot4 without its last step: out[8c .. 8c + 7] gets column c's eight float lanes,
     * which hsum8 then sums as the kernel would have (NULL where a type's kernel ends otherwise) */
    plumb_vec_dot4_fn wide_dot4_lanes[PLUMB_TYPE_COUNT];
    /* wide_dot4_lanes of two weight rows, w and w + w_stride: out[0..31] and out[32..63] are
     * what the two calls would give (NULL: call wide_dot4_lanes per row) */
    plumb_vec_dot4x2_fn wide_dot4x2_lanes[PLUMB_TYPE_COUNT];
    /* the prompt GEMM of each type (NULL: none) */
    const plumb_gemm_ops *gemm[PLUMB_TYPE_COUNT];
    /* the block-sum GEMM (plumb_context_params.fast_gemm): the generic set's vec_dot results,
     * faster, not the x86 reference's (NULL: none for the type) */
    const plumb_gemm_ops *gemm_sums[PLUMB_TYPE_COUNT];
    /* out[i] = the sum of the eight floats at x + 8i in the kernels' order:
     * ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)) */
    void (*hsum8)(const float *x, int64_t n, float *out);
    plumb_f32_to_f16_fn f32_to_f16;
    plumb_round_f16_fn round_f16;
    plumb_attn_dot_fn attn_dot;
    plumb_attn_qk_fn attn_qk;
    plumb_attn_exp_fn attn_exp;
    plumb_attn_softmax_fn attn_softmax;
    plumb_attn_pv_fn attn_pv;
    /* o[i] = x[i] / (1 + plumb__exp_poly(-x[i])) * (y ? y[i] : 1), i < n: SiLU (times y) of
     * the reference's vectorized lanes, bit for bit in every set */
    void (*silu)(const float *x, const float *y, float *o, int64_t n);
    /* o[i] = g(x[i]) * (y ? y[i] : 1), i < n, with g(v) = 0 for v <= -10, v for v >= 10, else
     * table[the F16 bits of v] (the reference's F16 GELU; NaN goes through the table) */
    void (*gelu_f16)(const float *table, const float *x, const float *y, float *o, int64_t n);
    /* sums[r] = the sum of (double)(x[r ne0 + i]^2) (the square in float) for i = 0, 1, ...,
     * ne0 - 1, added in that order from 0.0 (RMS norm's), for rows r < nrows */
    void (*sum_squares)(const float *x, int64_t ne0, int64_t nrows, double *sums);
} plumb_kernel_set;

/* One lane of the silu kernel. */
static inline float plumb__silu_lane(float x, const float *y, int64_t i) {
    const float s = x / (1.0f + plumb__exp_poly(-x));
    return y ? s * y[i] : s;
}

/* Activation format that weight type `type` dots with; -1 for an unknown type. */
int plumb__act_type(int type);
/* Bytes of an activation row of n elements in format act. */
size_t plumb__act_row_size(int act, int64_t n);

/* The portable reference set. */
const plumb_kernel_set *plumb__kernels_generic(void);
/* The AVX2 set (types without an AVX2 kernel use the generic ones), or NULL when this build
 * has none or the CPU lacks AVX2, FMA or F16C. */
const plumb_kernel_set *plumb__kernels_avx2(void);
/* The same kernels with AVX-512 VNNI (bit-identical results), or NULL when this build has
 * none or the CPU lacks any of AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI. */
const plumb_kernel_set *plumb__kernels_avx512vnni(void);
/* The builders behind them, compiled for their ISA: only to be called once cpuid says the
 * CPU has it (even building the table may use the ISA's instructions). */
const plumb_kernel_set *plumb__kernels_avx2_build(void);
const plumb_kernel_set *plumb__kernels_avx512vnni_build(void);
/* The best set for this CPU; PLUMB_KERNELS=generic in the environment forces the portable
 * reference. */
const plumb_kernel_set *plumb__kernels_get(void);

/* f16 -> f32 through a 64K-entry table (built on first use by plumb__kernels_get). */
extern float plumb__f16_table[65536];
void plumb__f16_table_init(void);

#endif
