/* test_backend_ops.c — the OpenCL backend against the CPU backend, op by op, in the manner of
 * ggml's test-backend-ops. Every op the OpenCL backend supports is built into small graphs
 * over random inputs of many shapes (odd row lengths and row counts, every weight type, batches
 * of 1 to 64 tokens, weights read through a leaf at a row offset inside another, as the model's
 * fused-QKV row views, and inputs through reshaped views of other nodes), computed by the CPU
 * backend (the reference) and by the OpenCL backend, and every output element is compared
 * within a bound derived from the op's arithmetic on both backends (each op's derivation is at
 * its bound below). Attention also compares the KV cache its write leaves, bit for bit. One
 * line per op gives the cases and the worst error as a fraction of its bound.
 *
 * The device is opencl:0, or the one PLUMB_OPENCL_TEST_DEVICE names by index. Without OpenCL
 * (compiled out, or no platform or device) the tests are skipped saying why, or fail when
 * PLUMB_REQUIRE_OPENCL=1 is set. */
#include "test.h"

#include "backend/backend.h"
#include "backend/opencl/opencl.h"
#include "core/error.h"
#include "core/graph.h"
#include "core/kv_cache.h"
#include "quant/fp16.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- error terms -------------------------------------------------------------------------
 * U is float's unit roundoff: a correctly rounded operation errs by at most U relative. An
 * error of n ulp is at most 2nU relative. The functions' accuracies, as relative errors:
 *   OpenCL (OpenCL 1.2 section 7.4, full profile): exp 3 ulp, tanh 5 ulp, sin and cos 4 ulp;
 *   the backend builds with correctly rounded division and square root where the device offers
 *   them (CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT), which these bounds assume.
 *   CPU: glibc expf 1 ulp, tanhf 2 ulp, sinf and cosf 1 ulp (glibc's documented bounds);
 *   plumb__exp_poly 2.5 ulp (its worst case over every 7th float in [-104, 0] and a sweep of
 *   [0, 88] is 2.23 ulp).
 * Results below FLT_MIN may be flushed to zero by a device (the full profile allows it), so
 * transcendental ops get FLT_MIN of absolute slack. A sum of terms in any order errs by at
 * most (the most additions any term passes through) * U * (the sum of the terms' magnitudes),
 * to first order; SLACK covers the higher orders. */
#define U 0x1p-24
#define EXP_OCL (6 * U)
#define TANH_OCL (10 * U)
#define TRIG_OCL (8 * U)
#define EXP_CPU (5 * U)
#define TANH_CPU (4 * U)
#define TRIG_CPU (2 * U)
#define SLACK 1.001
#define TINY ((double)FLT_MIN)

static int log2i(int n) {
    int l = 0;
    while ((1 << l) < n) l++;
    return l;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- random inputs ------------------------------------------------------------------------ */

static uint64_t rng = 0x243F6A8885A308D3ull;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static float frand(void) { return (float)((next() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; } /* [-1, 1) */
static int irand(int n) { return (int)((next() >> 33) % (uint64_t)n); }

static double f16_round(float v) { return plumb__fp16_to_fp32(plumb__fp32_to_fp16(v)); }

/* ---- the two backends ----------------------------------------------------------------------- */

typedef struct env {
    plumb_backend *cpu, *dev;
} env;

/* The OpenCL device under test: PLUMB_OPENCL_TEST_DEVICE, else 0. */
static int test_device(void) {
    const char *v = getenv("PLUMB_OPENCL_TEST_DEVICE");
    return v ? atoi(v) : 0;
}

/* Opens both backends, or says why OpenCL cannot be tested here. */
static const char *env_open(env *e) {
    memset(e, 0, sizeof *e);
#ifndef PLUMB_HAVE_OPENCL
    return "OpenCL NOT TESTED: plumb was built without OpenCL (CMake found no OpenCL headers and ICD loader)";
#else
    static char why[1200];
    const char *reason = NULL;
    if (plumb__backend_opencl.device_count(&reason) == 0) {
        snprintf(why, sizeof why, "OpenCL NOT TESTED: %s", reason ? reason : "no OpenCL device");
        return why;
    }
    if (plumb__backend_opencl.create(test_device(), 1, &e->dev) != PLUMB_OK) {
        snprintf(why, sizeof why, "OpenCL NOT TESTED: device %d cannot be used: %s", test_device(), plumb_last_error());
        return why;
    }
    CHECK_STATUS(plumb_backend_cpu_create(2, &e->cpu), PLUMB_OK);
    return NULL;
#endif
}

static void env_close(env *e) {
    plumb_backend_free(e->dev);
    plumb_backend_free(e->cpu);
}

/* Opens the backends into e, or ends the test: skipped saying why, or failed when the
 * environment requires OpenCL. */
#define OPEN_OR_SKIP(e)                                                                                                \
    do {                                                                                                               \
        const char *why_ = env_open(&(e));                                                                             \
        if (why_) {                                                                                                    \
            const char *req_ = getenv("PLUMB_REQUIRE_OPENCL");                                                         \
            if (req_ && strcmp(req_, "1") == 0) {                                                                      \
                plumb_test_fail(__FILE__, __LINE__, "PLUMB_REQUIRE_OPENCL=1, but %s", why_);                           \
                return;                                                                                                \
            }                                                                                                          \
            PLUMB_TEST_SKIP(why_);                                                                                     \
        }                                                                                                              \
    } while (0)

/* ---- one case: a graph computed on both backends ------------------------------------------- */

#define MAX_REGIONS 8

typedef struct bcase {
    plumb_graph g;
    struct {
        uint8_t *p;
        size_t n;
        plumb_buffer *buf; /* its OpenCL copy */
    } reg[MAX_REGIONS];
    int n_reg;
    plumb_buffer *pool; /* the OpenCL copy of the CPU's activation pool */
} bcase;

static void case_init(bcase *c) {
    memset(c, 0, sizeof *c);
    CHECK_STATUS(plumb_graph_init(&c->g, 64), PLUMB_OK);
}

/* n bytes of zeroed host memory for leaves: uploaded to a buffer of its own for OpenCL. */
static void *case_mem(bcase *c, size_t n) {
    PLUMB_ASSERT(c->n_reg < MAX_REGIONS);
    c->reg[c->n_reg].p = calloc(1, n ? n : 1);
    PLUMB_ASSERT(c->reg[c->n_reg].p);
    c->reg[c->n_reg].n = n;
    return c->reg[c->n_reg++].p;
}

static float *case_floats(bcase *c, int64_t n, float scale) {
    float *x = case_mem(c, (size_t)n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = frand() * scale;
    return x;
}

static plumb_tensor *leaf(bcase *c, int type, int nd, int64_t ne0, int64_t ne1, int64_t ne2, void *data) {
    const int64_t ne[3] = {ne0, ne1, ne2};
    return plumb_graph_leaf(&c->g, type, nd, ne, data);
}

/* An F32 leaf of shape ne reached through a node and a reshape (scaled by 1, viewed as ne),
 * so that the op reads a VIEW of another node's output. */
static plumb_tensor *viewed(bcase *c, int nd, const int64_t *ne, float *data) {
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= ne[d];
    const int64_t flat[2] = {ne[0], n / ne[0]};
    plumb_tensor *x = plumb_graph_leaf(&c->g, PLUMB_TYPE_F32, 2, flat, data);
    return plumb_graph_view(&c->g, plumb_graph_scale(&c->g, x, &(plumb_scale_params){.s = 1.0f}), nd, ne);
}

/* Computes the graph on the CPU (the outputs stay in the pool), then on OpenCL: every host
 * region in a buffer of its own (a leaf's offset is where its data lies in its region), the
 * pool mirrored by one buffer at the same offsets, attention nodes pointed at kv_dev. */
static bool case_run(env *e, bcase *c, plumb_kv_cache *kv_dev) {
    CHECK_STATUS(plumb_graph_plan(&c->g), PLUMB_OK);
    CHECK_STATUS(e->cpu->iface->graph_compute(e->cpu, &c->g, 0, c->g.n_nodes), PLUMB_OK);
    const plumb_backend_iface *o = e->dev->iface;
    for (int r = 0; r < c->n_reg; r++) {
        CHECK_STATUS(o->buffer_alloc(e->dev, c->reg[r].n, &c->reg[r].buf), PLUMB_OK);
        CHECK_STATUS(o->buffer_set(c->reg[r].buf, 0, c->reg[r].p, c->reg[r].n), PLUMB_OK);
    }
    CHECK_STATUS(o->buffer_alloc(e->dev, c->g.pool_size, &c->pool), PLUMB_OK);
    for (int32_t i = 0; i < c->g.n_tensors; i++) {
        plumb_tensor *t = &c->g.tensors[i];
        if (t->op != PLUMB_OP_NONE) {
            t->buf = c->pool;
            t->offs = (size_t)((uint8_t *)t->data - c->g.pool);
            if (t->op == PLUMB_OP_ATTN) t->params.attn.kv = kv_dev;
            continue;
        }
        for (int r = 0; r < c->n_reg; r++)
            if ((uint8_t *)t->data >= c->reg[r].p &&
                (uint8_t *)t->data < c->reg[r].p + (c->reg[r].n ? c->reg[r].n : 1)) {
                t->buf = c->reg[r].buf;
                t->offs = (size_t)((uint8_t *)t->data - c->reg[r].p);
            }
        CHECK(t->buf != NULL);
    }
    const plumb_status st = o->graph_compute(e->dev, &c->g, 0, c->g.n_nodes);
    if (st) plumb_test_fail(__FILE__, __LINE__, "OpenCL graph_compute: %s", plumb_last_error());
    return st == PLUMB_OK;
}

/* The OpenCL result of node t. */
static float *case_result(const bcase *c, const plumb_tensor *t) {
    (void)c;
    float *out = malloc(plumb_tensor_nbytes(t));
    PLUMB_ASSERT(out);
    CHECK_STATUS(plumb_tensor_get(t, 0, out, plumb_tensor_nbytes(t)), PLUMB_OK);
    return out;
}

static void case_free(bcase *c) {
    for (int r = 0; r < c->n_reg; r++) {
        plumb_buffer_free(c->reg[r].buf);
        free(c->reg[r].p);
    }
    plumb_buffer_free(c->pool);
    plumb_graph_free(&c->g);
}

/* ---- comparison ----------------------------------------------------------------------------- */

typedef struct opstat {
    const char *name;
    int cases;
    double worst; /* the largest error / bound */
    bool inexact; /* some bound is not 0 */
    int failures;
} opstat;

/* Compares n results with the CPU's: |dev - cpu| <= bound[i], and the same bits where the
 * bound is 0. */
static void compare(opstat *s, const char *what, const float *cpu, const float *dev, const double *bound, int64_t n) {
    s->cases++;
    for (int64_t i = 0; i < n; i++) {
        const double err = fabs((double)dev[i] - (double)cpu[i]);
        double r;
        if (bound[i] == 0.0) {
            r = memcmp(&cpu[i], &dev[i], sizeof(float)) == 0 ? 0.0 : INFINITY;
        } else {
            s->inexact = true;
            r = err / bound[i];
            if (r != r) r = INFINITY;
        }
        if (r > s->worst) s->worst = r;
        if (r <= 1.0) continue;
        if (s->failures++ < 8)
            plumb_test_fail(__FILE__, __LINE__, "%s %s: element %lld: OpenCL %.9g, CPU %.9g: error %.3g, bound %.3g",
                            s->name, what, (long long)i, dev[i], cpu[i], err, bound[i]);
    }
}

static void report(const opstat *s) {
    if (!s->inexact)
        printf("  opencl %-11s %4d cases, every bit the CPU's\n", s->name, s->cases);
    else
        printf("  opencl %-11s %4d cases, worst error %.3g of its bound\n", s->name, s->cases, s->worst);
}

/* ---- matmul and get_rows ---------------------------------------------------------------------- */

static const int weight_types[] = {PLUMB_TYPE_F32,  PLUMB_TYPE_F16,  PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q4_1,
                                   PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q5_1, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q2_K,
                                   PLUMB_TYPE_Q3_K, PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q5_K, PLUMB_TYPE_Q6_K};

static bool k_type(int type) { return type >= PLUMB_TYPE_Q2_K && type <= PLUMB_TYPE_Q8_K; }

/* Row lengths to test for a type: odd ones for the float types, whole blocks for the rest; the
 * last of each has more 32-element chunks than a matmul work-group has work-items. */
static int row_lengths(int type, int64_t *out) {
    static const int64_t f[] = {1, 3, 17, 64, 257, 1100}, legacy[] = {32, 96, 1056}, k[] = {256, 1280};
    const int64_t *src = type <= PLUMB_TYPE_F16 ? f : k_type(type) ? k : legacy;
    const int n = type <= PLUMB_TYPE_F16 ? 6 : k_type(type) ? 2 : 3;
    memcpy(out, src, (size_t)n * sizeof *out);
    return n;
}

/* Where a block type keeps the scale of its minimum (Q4_1, Q5_1: the min itself; the K types
 * with mins: dmin), so that the test can dequantize a row without it; -1 for none. */
static int min_field(int type) {
    switch (type) {
    case PLUMB_TYPE_Q4_1:
    case PLUMB_TYPE_Q5_1:
    case PLUMB_TYPE_Q4_K:
    case PLUMB_TYPE_Q5_K: return 2;
    case PLUMB_TYPE_Q2_K: return 82;
    default: return -1;
    }
}

/* |w| split into its parts: a[i] = |d sc q_i| + |min part| (|w_i| for types without a min),
 * from the row dequantized with and without its minimum. */
static void weight_parts(int type, const uint8_t *row, int64_t K, double *a) {
    float *w = malloc((size_t)K * 4), *w0 = malloc((size_t)K * 4);
    const size_t bytes = plumb_row_size(type, K), bb = plumb_type_block_bytes(type);
    uint8_t *z = malloc(bytes);
    memcpy(z, row, bytes);
    if (min_field(type) >= 0)
        for (size_t b = 0; b < bytes; b += bb) z[b + (size_t)min_field(type)] = z[b + (size_t)min_field(type) + 1] = 0;
    CHECK_STATUS(plumb_dequantize_row(type, row, w, K), PLUMB_OK);
    CHECK_STATUS(plumb_dequantize_row(type, z, w0, K), PLUMB_OK);
    for (int64_t i = 0; i < K; i++) a[i] = fabs((double)w0[i]) + fabs((double)w0[i] - (double)w[i]);
    free(w), free(w0), free(z);
}

/* The bound of out[n, t] = sum_i w_i x_i, as OpenCL computes it (mul_mat.cl) against the CPU:
 *  Block types: both backends quantize the activations to the same bits (act.cl repeats the
 *  CPU's act_q8_0 / act_q8_1 / act_q8_k operation for operation, correctly rounded), x^_i with
 *  |x^_i| <= |x_i| + amax/127 of its block of 32 (256 for the K types). Within a block the
 *  integer sums are exact; each backend forms a block's (chunk's) value with at most 6 rounded
 *  float operations, erring by <= 6U of sum a_i |x^_i| over it (a_i: weight_parts). The CPU adds
 *  its nb blocks in order or in 8 lanes (each value through <= nb + 3 additions); OpenCL adds
 *  each work-item's chunks in order, then the MM_WG partial sums (<= ceil(nc / MM_WG) + MM_WG).
 *  F32: products rounded (U each side), added through <= K/64 + 6 + K%64 additions on the CPU
 *  (16 x 4 lanes over 64-element steps, folded; the tail in order) and <= 32 ceil(nc / MM_WG) +
 *  MM_WG on OpenCL. F16: x rounded to F16 on both, so the products are exact; the same sums. */
static double mul_mat_bound(int type, const double *a, const float *x, int64_t K) {
    const int64_t nc = ceil_div(K, 32);
    double sum = 0.0, c;
    if (type == PLUMB_TYPE_F32 || type == PLUMB_TYPE_F16) {
        for (int64_t i = 0; i < K; i++)
            sum += a[i] * (type == PLUMB_TYPE_F16 ? fabs(f16_round(x[i])) : fabs((double)x[i]));
        c = (double)(K / 64 + 6 + K % 64) + (double)(32 * ceil_div(nc, PLUMB_OPENCL_MM_WG) + PLUMB_OPENCL_MM_WG) +
            (type == PLUMB_TYPE_F32 ? 2.0 : 0.0);
    } else {
        const int64_t blk = k_type(type) ? 256 : 32;
        for (int64_t b0 = 0; b0 < K; b0 += blk) {
            double amax = 0.0;
            for (int64_t i = b0; i < b0 + blk; i++) amax = fmax(amax, fabs((double)x[i]));
            for (int64_t i = b0; i < b0 + blk; i++) sum += a[i] * (fabs((double)x[i]) + amax / 127.0);
        }
        c = 12.0 + (double)(K / blk + 3) + (double)(ceil_div(nc, PLUMB_OPENCL_MM_WG) + PLUMB_OPENCL_MM_WG);
    }
    return c * U * sum * SLACK;
}

/* One matmul case: w [K, N] of type times x [K, T]; with views, w is rows [3, 3 + N) of a
 * larger weight and x reaches the matmul through a reshape of another node. */
static void mul_mat_case(env *e, opstat *s, int type, int64_t K, int64_t N, int64_t T, bool views) {
    bcase c;
    case_init(&c);
    const int64_t skip = views ? 3 : 0, NW = N + (views ? 5 : 0);
    const size_t row = plumb_row_size(type, K);
    float *wf = malloc((size_t)(K * NW) * 4);
    for (int64_t i = 0; i < K * NW; i++) wf[i] = frand();
    uint8_t *wq = case_mem(&c, row * (size_t)NW);
    CHECK_STATUS(plumb_quantize_row(type, wf, wq, K * NW), PLUMB_OK);
    free(wf);
    static const float scales[] = {1.0f, 0.01f, 30.0f};
    float *x = case_floats(&c, K * T, scales[irand(3)]);
    plumb_tensor *w = leaf(&c, type, 2, K, N, 1, wq + (size_t)skip * row);
    const int64_t ne3[3] = {K, 1, T};
    plumb_tensor *xt = views ? viewed(&c, 3, ne3, x) : leaf(&c, PLUMB_TYPE_F32, 2, K, T, 1, x);
    plumb_tensor *y = plumb_graph_mul_mat(&c.g, w, xt);
    y->is_output = true;
    if (case_run(e, &c, NULL)) {
        float *got = case_result(&c, y);
        double *bound = malloc((size_t)(N * T) * sizeof *bound), *a = malloc((size_t)K * sizeof *a);
        for (int64_t n = 0; n < N; n++) {
            weight_parts(type, wq + (size_t)(skip + n) * row, K, a);
            for (int64_t t = 0; t < T; t++) bound[t * N + n] = mul_mat_bound(type, a, x + t * K, K);
        }
        char what[96];
        snprintf(what, sizeof what, "%s K %lld N %lld T %lld%s", plumb_type_name(type), (long long)K, (long long)N,
                 (long long)T, views ? " (views)" : "");
        compare(s, what, y->data, got, bound, N * T);
        free(got), free(bound), free(a);
    }
    case_free(&c);
}

TEST(backend_opencl_mul_mat) {
    env e;
    OPEN_OR_SKIP(e);
    opstat s = {.name = "mul_mat"};
    static const int64_t Ns[] = {1, 7, 33}, Ts[] = {1, 2, 5, 13, 64}; /* 13: a partial second token group */
    int views = 0;
    for (size_t ti = 0; ti < sizeof weight_types / sizeof weight_types[0]; ti++) {
        int64_t Ks[8];
        const int nk = row_lengths(weight_types[ti], Ks);
        for (int ki = 0; ki < nk; ki++)
            for (int ni = 0; ni < 3; ni++)
                for (int tj = 0; tj < 5; tj++)
                    mul_mat_case(&e, &s, weight_types[ti], Ks[ki], Ns[ni], Ts[tj], views++ % 2);
    }
    report(&s);
    env_close(&e);
}

/* get_rows: OpenCL forms each element with the operations of the CPU's dequantization (the same
 * correctly rounded products and sums, no contraction), so every bit must agree. */
TEST(backend_opencl_get_rows) {
    env e;
    OPEN_OR_SKIP(e);
    opstat s = {.name = "get_rows"};
    static const int64_t counts[] = {1, 7, 33};
    for (size_t ti = 0; ti < sizeof weight_types / sizeof weight_types[0]; ti++) {
        const int type = weight_types[ti];
        int64_t lens[8];
        const int nl = row_lengths(type, lens);
        for (int li = 0; li < nl; li++)
            for (int ci = 0; ci < 3; ci++) {
                const int64_t K = lens[li], rows = 40, n = counts[ci], skip = ci; /* rows [skip, 40) */
                bcase c;
                case_init(&c);
                const size_t row = plumb_row_size(type, K);
                float *wf = malloc((size_t)(K * rows) * 4);
                for (int64_t i = 0; i < K * rows; i++) wf[i] = frand() * 3.0f;
                uint8_t *wq = case_mem(&c, row * (size_t)rows);
                CHECK_STATUS(plumb_quantize_row(type, wf, wq, K * rows), PLUMB_OK);
                free(wf);
                int32_t *ids = case_mem(&c, (size_t)n * 4);
                for (int64_t i = 0; i < n; i++) ids[i] = irand((int)(rows - skip));
                plumb_tensor *w = leaf(&c, type, 2, K, rows - skip, 1, wq + (size_t)skip * row);
                plumb_tensor *y = plumb_graph_get_rows(&c.g, w, leaf(&c, PLUMB_TYPE_I32, 1, n, 1, 1, ids));
                y->is_output = true;
                if (case_run(&e, &c, NULL)) {
                    float *got = case_result(&c, y);
                    double *zero = calloc((size_t)(K * n), sizeof *zero);
                    compare(&s, plumb_type_name(type), y->data, got, zero, K * n);
                    free(got), free(zero);
                }
                case_free(&c);
            }
    }
    report(&s);
    env_close(&e);
}

/* ---- elementwise ops ------------------------------------------------------------------------- */

static const int64_t row_lens[] = {1, 3, 17, 257}, row_counts[] = {1, 7, 33};

/* The bound of 0.5 x (1 + tanh(z)) between the backends: z is the same bits on both (the same
 * correctly rounded operations, fma included); tanh differs by TANH_OCL + TANH_CPU of |t|;
 * 1 + t and the product round once each on each side. */
static double gelu_bound(double x) {
    const double k = 0.79788456080286535587989211986876;
    const double t = tanh(k * x * (1.0 + 0.044715 * x * x));
    return 0.5 * fabs(x) *
           ((TANH_OCL + TANH_CPU) * fabs(t) + 4 * U * (fabs(1.0 + t) + fabs(t) * (TANH_OCL + TANH_CPU)));
}

/* The spacing of F16 values at magnitude v. */
static double f16_spacing(double v) { return v < 0x1p-14 ? 0x1p-24 : ldexp(1.0, ilogb(v) - 10); }

/* The bound of each unary op's element i (x, y the inputs, o the CPU's result):
 *  SCALE: one rounded product on both: the same bits.
 *  SILU (x / (1 + e^-x)) [* y]: e^-x differs by EXP_OCL + EXP_CPU relative (the CPU uses
 *    plumb__exp_poly or expf), which moves 1 + e^-x by no more (relative); the sum, the
 *    division [and the product] round once each on each side: + 4U [+ 2U].
 *  GELU_TANH: gelu_bound.
 *  GELU_MUL: the F16-rounded input is the same on both; the GELUs of it differ by gelu_bound,
 *    and their F16 roundings by that plus one F16 spacing; times y, rounded on each side. Inputs
 *    at or beyond +-10 take the same exact path on both: the same bits.
 *  SOFTCAP (tanh(x / cap) * cap): x / cap is the same bits (x times the same 1 / cap); tanh
 *    differs by TANH_OCL + TANH_CPU of |t|; times cap rounded on each side. */
static double unary_bound(plumb_op op, float cap, float x, float y, float o) {
    const double ao = fabs((double)o);
    switch (op) {
    case PLUMB_OP_SCALE: return 0.0;
    case PLUMB_OP_SILU: return ao * (EXP_OCL + EXP_CPU + 4 * U) * SLACK + TINY;
    case PLUMB_OP_SILU_MUL: return ao * (EXP_OCL + EXP_CPU + 6 * U) * SLACK + TINY * fabs((double)y);
    case PLUMB_OP_GELU_TANH: return (gelu_bound(x) + 2 * U * ao) * SLACK + TINY;
    case PLUMB_OP_GELU_MUL: {
        if (x <= -10.0f || x >= 10.0f) return 0.0;
        const double xr = f16_round(x),
                     g = 0.5 * xr * (1.0 + tanh(0.79788456080286535587989211986876 * xr * (1.0 + 0.044715 * xr * xr)));
        const double dg = gelu_bound(xr) + 2 * U * fabs(g);
        return (fabs((double)y) * (dg + f16_spacing(fabs(g) + dg)) + 2 * U * ao) * SLACK + TINY * fabs((double)y);
    }
    default: { /* SOFTCAP */
        const double t = tanh((double)x / cap);
        return (cap * fabs(t) * (TANH_OCL + TANH_CPU) + 2 * U * ao) * SLACK + TINY;
    }
    }
}

TEST(backend_opencl_elementwise) {
    env e;
    OPEN_OR_SKIP(e);
    static const plumb_op ops[] = {PLUMB_OP_ADD,      PLUMB_OP_MUL,       PLUMB_OP_SCALE,    PLUMB_OP_SILU,
                                   PLUMB_OP_SILU_MUL, PLUMB_OP_GELU_TANH, PLUMB_OP_GELU_MUL, PLUMB_OP_SOFTCAP};
    static const float scales[] = {1.0f, 8.0f, 30.0f};
    for (size_t oi = 0; oi < sizeof ops / sizeof ops[0]; oi++) {
        const plumb_op op = ops[oi];
        opstat s = {.name = plumb_op_name(op)};
        int k = 0;
        for (int li = 0; li < 4; li++)
            for (int ri = 0; ri < 3; ri++)
                for (int vi = 0; vi < 2; vi++, k++) {
                    const int64_t ne0 = row_lens[li], rows = row_counts[ri], n = ne0 * rows;
                    const bool bcast = (op == PLUMB_OP_ADD || op == PLUMB_OP_MUL) && vi == 1;
                    bcase c;
                    case_init(&c);
                    float *x = case_floats(&c, n, scales[k % 3]), *y = case_floats(&c, bcast ? ne0 : n, 2.0f);
                    const int64_t ne[2] = {ne0, rows};
                    plumb_tensor *xt = vi ? viewed(&c, 2, ne, x) : leaf(&c, PLUMB_TYPE_F32, 2, ne0, rows, 1, x);
                    plumb_tensor *yt = leaf(&c, PLUMB_TYPE_F32, 2, ne0, bcast ? 1 : rows, 1, y);
                    const float cap = 5.0f + 20.0f * (float)(k % 2);
                    plumb_tensor *o;
                    switch (op) {
                    case PLUMB_OP_ADD: o = plumb_graph_add(&c.g, xt, yt); break;
                    case PLUMB_OP_MUL: o = plumb_graph_mul(&c.g, xt, yt); break;
                    case PLUMB_OP_SCALE: o = plumb_graph_scale(&c.g, xt, &(plumb_scale_params){.s = 0.37f}); break;
                    case PLUMB_OP_SILU: o = plumb_graph_silu(&c.g, xt); break;
                    case PLUMB_OP_SILU_MUL: o = plumb_graph_silu_mul(&c.g, xt, yt); break;
                    case PLUMB_OP_GELU_TANH: o = plumb_graph_gelu_tanh(&c.g, xt); break;
                    case PLUMB_OP_GELU_MUL: o = plumb_graph_gelu_mul(&c.g, xt, yt); break;
                    default: o = plumb_graph_softcap(&c.g, xt, &(plumb_softcap_params){.cap = cap}); break;
                    }
                    o->is_output = true;
                    CHECK(e.dev->iface->supports_op(e.dev, o));
                    if (case_run(&e, &c, NULL)) {
                        float *got = case_result(&c, o);
                        double *bound = malloc((size_t)n * sizeof *bound);
                        /* ADD and MUL: one correctly rounded operation on both: the same bits */
                        for (int64_t i = 0; i < n; i++)
                            bound[i] = op == PLUMB_OP_ADD || op == PLUMB_OP_MUL
                                           ? 0.0
                                           : unary_bound(op, cap, x[i], y[i], ((float *)o->data)[i]);
                        char what[64];
                        snprintf(what, sizeof what, "[%lld, %lld]%s", (long long)ne0, (long long)rows,
                                 bcast ? " broadcast" : "");
                        compare(&s, what, o->data, got, bound, n);
                        free(got), free(bound);
                    }
                    case_free(&c);
                }
        report(&s);
    }
    env_close(&e);
}

/* ---- row ops --------------------------------------------------------------------------------- */

/* rms_norm: both square (U), sum (the CPU in double: ~0; OpenCL through <= ceil(ne0 / WG) +
 * log2 WG additions), divide by ne0 and add eps (2U), take the square root (half the relative
 * error of its argument, + U) and its reciprocal (U), then multiply by x and w (2U). */
static double rms_norm_rel(int64_t ne0) {
    const double ocl = 3.0 + (double)(ceil_div(ne0, PLUMB_OPENCL_WG) + log2i(PLUMB_OPENCL_WG)), cpu = 4.0;
    return (0.5 * (ocl + cpu) + 8.0) * U * SLACK;
}

/* soft_max: x * scale - max is the same bits on both; the exponentials differ by EXP_OCL +
 * EXP_CPU relative, and so does their sum, which also rounds in its additions (OpenCL: <=
 * ceil(ne0 / WG) + log2 WG; the CPU: its 16-element trees, then double) ; 1 / sum and the
 * product round once each on each side. */
static double soft_max_rel(int64_t ne0) {
    const double adds = (double)(ceil_div(ne0, PLUMB_OPENCL_WG) + log2i(PLUMB_OPENCL_WG)) + 5.0;
    return (2.0 * (EXP_OCL + EXP_CPU) + (adds + 4.0) * U) * SLACK;
}

TEST(backend_opencl_rms_norm_soft_max) {
    env e;
    OPEN_OR_SKIP(e);
    static const int64_t lens[] = {1, 3, 17, 257, 1000};
    for (int which = 0; which < 2; which++) {
        opstat s = {.name = which ? "soft_max" : "rms_norm"};
        for (int li = 0; li < 5; li++)
            for (int ri = 0; ri < 3; ri++)
                for (int vi = 0; vi < 2; vi++) {
                    const int64_t ne0 = lens[li], rows = row_counts[ri], n = ne0 * rows;
                    bcase c;
                    case_init(&c);
                    float *x = case_floats(&c, n, which ? 10.0f : 3.0f), *w = case_floats(&c, ne0, 2.0f);
                    const int64_t ne[2] = {ne0, rows};
                    plumb_tensor *xt = vi ? viewed(&c, 2, ne, x) : leaf(&c, PLUMB_TYPE_F32, 2, ne0, rows, 1, x);
                    plumb_tensor *o =
                        which ? plumb_graph_soft_max(&c.g, xt, &(plumb_soft_max_params){.scale = vi ? 0.125f : 1.0f})
                              : plumb_graph_rms_norm(&c.g, xt, vi ? leaf(&c, PLUMB_TYPE_F32, 1, ne0, 1, 1, w) : NULL,
                                                     &(plumb_rms_norm_params){.eps = 1e-6f});
                    o->is_output = true;
                    if (case_run(&e, &c, NULL)) {
                        float *got = case_result(&c, o);
                        double *bound = malloc((size_t)n * sizeof *bound);
                        const double rel = which ? soft_max_rel(ne0) : rms_norm_rel(ne0);
                        for (int64_t i = 0; i < n; i++) bound[i] = fabs((double)((float *)o->data)[i]) * rel + TINY;
                        char what[64];
                        snprintf(what, sizeof what, "[%lld, %lld]", (long long)ne0, (long long)rows);
                        compare(&s, what, o->data, got, bound, n);
                        free(got), free(bound);
                    }
                    case_free(&c);
                }
        report(&s);
    }
    env_close(&e);
}

/* ---- rope ------------------------------------------------------------------------------------ */

/* rope: theta, and so the angle th, is the same bits on both (the same rounded products from
 * the same theta_scale, the division by the factor correctly rounded); cos and sin differ by
 * TRIG_OCL + TRIG_CPU relative, + 2U for their products with mscale. Output a = x0 cs - x1 sn
 * (fused, x1 sn rounded) errs by (|x0 cs| + |x1 sn|) (that) + 2U (|x1 sn| + |a|), b alike. The
 * dimensions past n_rot are copied: the same bits. */
TEST(backend_opencl_rope) {
    env e;
    OPEN_OR_SKIP(e);
    opstat s = {.name = "rope"};
    static const int64_t hds[] = {64, 128, 256, 6}, heads[] = {1, 3, 8}, Ts[] = {1, 2, 5, 64};
    int k = 0;
    for (int hi = 0; hi < 4; hi++)
        for (int ni = 0; ni < 3; ni++)
            for (int ti = 0; ti < 4; ti++, k++) {
                const int64_t hd = hds[hi], nh = heads[ni], T = Ts[ti], n = hd * nh * T;
                const plumb_rope_params p = {
                    .mode = k % 2 ? PLUMB_ROPE_NEOX : PLUMB_ROPE_NORMAL,
                    .n_rot = (int32_t)(k % 3 == 2 ? hd / 2 - (hd / 2) % 2 : hd),
                    .base = k % 4 < 2 ? 10000.0f : 1000000.0f,
                    .freq_scale = k % 5 == 4 ? 0.25f : 1.0f,
                    .attn_factor = k % 3 == 1 ? 1.2f : 0.0f,
                };
                const bool ff = k % 4 == 3;
                bcase c;
                case_init(&c);
                float *x = case_floats(&c, n, 2.0f), *f = case_mem(&c, (size_t)hd / 2 * 4);
                int32_t *pos = case_mem(&c, (size_t)T * 4);
                for (int64_t i = 0; i < hd / 2; i++) f[i] = 1.0f + 10.0f * (frand() + 1.0f);
                for (int64_t t = 0; t < T; t++) pos[t] = irand(k % 2 ? 5000 : 100);
                const int64_t ne[3] = {hd, nh, T};
                plumb_tensor *xt = k % 3 == 0 ? viewed(&c, 3, ne, x) : leaf(&c, PLUMB_TYPE_F32, 3, hd, nh, T, x);
                plumb_tensor *o = plumb_graph_rope(&c.g, xt, leaf(&c, PLUMB_TYPE_I32, 1, T, 1, 1, pos),
                                                   ff ? leaf(&c, PLUMB_TYPE_F32, 1, hd / 2, 1, 1, f) : NULL, &p);
                o->is_output = true;
                if (case_run(&e, &c, NULL)) {
                    float *got = case_result(&c, o);
                    double *bound = calloc((size_t)n, sizeof *bound);
                    const float ts = powf(p.base, -2.0f / (float)p.n_rot);
                    const double ms = p.attn_factor > 0.0f ? p.attn_factor : 1.0, trig = TRIG_OCL + TRIG_CPU + 2 * U;
                    for (int64_t r = 0; r < nh * T; r++) {
                        float theta = (float)pos[r / nh];
                        for (int i = 0; i < p.n_rot / 2; i++, theta *= ts) {
                            const float th = p.freq_scale * (ff ? theta / f[i] : theta);
                            const double cs = cos(th) * ms, sn = sin(th) * ms;
                            const int64_t ia = p.mode == PLUMB_ROPE_NEOX ? i : 2 * i;
                            const int64_t ib = p.mode == PLUMB_ROPE_NEOX ? i + p.n_rot / 2 : 2 * i + 1;
                            const double x0 = x[r * hd + ia], x1 = x[r * hd + ib];
                            const double oa = fabs(((float *)o->data)[r * hd + ia]),
                                         ob = fabs(((float *)o->data)[r * hd + ib]);
                            bound[r * hd + ia] =
                                ((fabs(x0 * cs) + fabs(x1 * sn)) * trig + 2 * U * (fabs(x1 * sn) + oa)) * SLACK + TINY;
                            bound[r * hd + ib] =
                                ((fabs(x0 * sn) + fabs(x1 * cs)) * trig + 2 * U * (fabs(x1 * cs) + ob)) * SLACK + TINY;
                        }
                    }
                    char what[96];
                    snprintf(what, sizeof what, "hd %lld n_rot %d heads %lld T %lld %s%s", (long long)hd, p.n_rot,
                             (long long)nh, (long long)T, p.mode ? "neox" : "normal", ff ? " factors" : "");
                    compare(&s, what, o->data, got, bound, n);
                    free(got), free(bound);
                }
                case_free(&c);
            }
    report(&s);
    env_close(&e);
}

/* ---- attention ---------------------------------------------------------------------------------- */

#define N_LAYER 2 /* the cases use layer 1, so the layer's offsets matter */
#define N_SEQ 3
#define N_CTX 128

/* A KV cache of both backends, filled with the same random F16 values: host arrays for the
 * CPU (with host buffers over them), and one OpenCL buffer holding every layer's keys, then
 * every layer's values, after 64 bytes of padding (so the offsets are not 0). */
typedef struct kv_pair {
    plumb_kv_cache cpu, dev;
    uint16_t *k[N_LAYER], *v[N_LAYER];
    plumb_buffer *kb[N_LAYER], *vb[N_LAYER], *dk[N_LAYER], *dv[N_LAYER];
    size_t koff[N_LAYER], voff[N_LAYER], zero[N_LAYER];
    plumb_buffer *devbuf;
    size_t layer_bytes;
} kv_pair;

static void kv_init(env *e, kv_pair *p, int n_head, int n_kv, int hd) {
    memset(p, 0, sizeof *p);
    const size_t elems = (size_t)N_SEQ * N_CTX * (size_t)(n_kv * hd);
    p->layer_bytes = elems * 2;
    CHECK_STATUS(e->dev->iface->buffer_alloc(e->dev, 64 + 2 * N_LAYER * p->layer_bytes, &p->devbuf), PLUMB_OK);
    for (int l = 0; l < N_LAYER; l++) {
        p->k[l] = malloc(p->layer_bytes), p->v[l] = malloc(p->layer_bytes);
        for (size_t i = 0; i < elems; i++)
            p->k[l][i] = plumb__fp32_to_fp16(frand()), p->v[l][i] = plumb__fp32_to_fp16(frand());
        CHECK_STATUS(plumb_buffer_host(e->cpu, p->k[l], p->layer_bytes, &p->kb[l]), PLUMB_OK);
        CHECK_STATUS(plumb_buffer_host(e->cpu, p->v[l], p->layer_bytes, &p->vb[l]), PLUMB_OK);
        p->koff[l] = 64 + (size_t)l * p->layer_bytes;
        p->voff[l] = 64 + (size_t)(N_LAYER + l) * p->layer_bytes;
        p->dk[l] = p->dv[l] = p->devbuf;
        CHECK_STATUS(e->dev->iface->buffer_set(p->devbuf, p->koff[l], p->k[l], p->layer_bytes), PLUMB_OK);
        CHECK_STATUS(e->dev->iface->buffer_set(p->devbuf, p->voff[l], p->v[l], p->layer_bytes), PLUMB_OK);
    }
    const plumb_kv_cache shape = {
        .n_layer = N_LAYER, .n_seq = N_SEQ, .n_ctx = N_CTX, .n_head = n_head, .n_head_kv = n_kv, .head_dim = hd};
    p->cpu = shape;
    p->cpu.k = p->k, p->cpu.v = p->v, p->cpu.k_buf = p->kb, p->cpu.v_buf = p->vb, p->cpu.k_offs = p->zero,
    p->cpu.v_offs = p->zero;
    p->dev = shape;
    p->dev.k_buf = p->dk, p->dev.v_buf = p->dv, p->dev.k_offs = p->koff, p->dev.v_offs = p->voff;
}

static void kv_free(kv_pair *p) {
    for (int l = 0; l < N_LAYER; l++) {
        plumb_buffer_free(p->kb[l]);
        plumb_buffer_free(p->vb[l]);
        free(p->k[l]);
        free(p->v[l]);
    }
    plumb_buffer_free(p->devbuf);
}

/* The bound of one token's output of one query head (hd values into bound), given its F16
 * query qr, the cache rows of its KV head (k, v; kv_dim apart; after the write, which the test
 * has found equal on both), the positions lo..pos and the op's parameters:
 *  scores: the products of F16 values are exact; their sums pass through <= hd/64 + 6 +
 *    hd%64 additions on the CPU and hd/4 + 2 on OpenCL: dr_j <= (that) U S_j, S_j = sum |q k|.
 *    Then times scale (2U of |s|), or with a soft-cap: z = r / cap moves by dr/cap + 2U|z|,
 *    tanh by (1 - t^2) dz + (TANH_OCL + TANH_CPU)|t|, times cap and scale by cap scale dt +
 *    4U|s|. E = the largest score error; the maxima differ by <= E.
 *  exponentials of s_j - max: arguments differ by <= 2E + 2U |s_j - max|; e_j by rho_j =
 *    expm1(that) + EXP_OCL + EXP_CPU relative; their sum by the largest rho + its additions
 *    (OpenCL ceil(n / WG) + log2 WG, the CPU 5); probabilities p_j = e_j / sum by pi_j = rho_j +
 *    rho_sum + 4U (1 / sum and the product on each side), composed.
 *  F16 rounding of p_j: the two roundings may fall on neighbouring F16 values: dp16_j <=
 *    pi_j p_j + 2^-10 p_j + 2^-24 (p_j bounded by the exact value times 1 + pi_j).
 *  outputs: products of F16 values, exact, added through <= n positions on OpenCL and n/64 + 6
 *    on the CPU: bound_d = sum_j dp16_j |v_jd| + (both) U sum_j p16_j |v_jd|. */
static void attn_bound(const double *qr, const uint16_t *k, const uint16_t *v, size_t kv_dim, int hd, int lo, int pos,
                       float scale, float softcap, double *bound) {
    const int n = pos - lo + 1;
    double *sc = malloc((size_t)n * sizeof *sc), *ds = malloc((size_t)n * sizeof *ds);
    const double dots = (double)(hd / 64 + 6 + hd % 64 + hd / 4 + 2) * U;
    const float inv_cap = softcap > 0.0f ? 1.0f / softcap : 0.0f;
    double E = 0.0, mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        const uint16_t *kr = k + (size_t)(lo + j) * kv_dim;
        double r = 0.0, S = 0.0;
        for (int d = 0; d < hd; d++) {
            const double p = qr[d] * plumb__fp16_to_fp32(kr[d]);
            r += p, S += fabs(p);
        }
        const double dr = dots * S;
        if (softcap > 0.0f) {
            const double z = r * inv_cap, t = tanh(z), dz = dr * fabs(inv_cap) + 2 * U * fabs(z);
            sc[j] = t * softcap * scale;
            ds[j] = softcap * scale * ((1.0 - t * t) * dz + (TANH_OCL + TANH_CPU) * fabs(t)) + 4 * U * fabs(sc[j]);
        } else {
            sc[j] = r * scale;
            ds[j] = scale * dr + 2 * U * fabs(sc[j]);
        }
        E = fmax(E, ds[j]);
        mx = fmax(mx, sc[j]);
    }
    double sum = 0.0, rho_max = 0.0;
    for (int j = 0; j < n; j++) {
        sum += exp(sc[j] - mx);
        rho_max = fmax(rho_max, expm1(2 * E + 2 * U * fabs(sc[j] - mx)) + EXP_OCL + EXP_CPU);
    }
    const double rho_sum = rho_max + (double)(ceil_div(n, PLUMB_OPENCL_WG) + log2i(PLUMB_OPENCL_WG) + 5) * U;
    const double pv = (double)(n + n / 64 + 6) * U;
    for (int d = 0; d < hd; d++) bound[d] = 0.0;
    for (int j = 0; j < n; j++) {
        const double rho = expm1(2 * E + 2 * U * fabs(sc[j] - mx)) + EXP_OCL + EXP_CPU;
        const double pi = (1.0 + rho) * (1.0 + rho_sum) * (1.0 + 4 * U) - 1.0;
        const double p = exp(sc[j] - mx) / sum * (1.0 + pi);
        const double dp = pi * p + 0x1p-10 * p + 0x1p-24, p16 = p * (1.0 + 0x1p-11) + 0x1p-25;
        const uint16_t *vr = v + (size_t)(lo + j) * kv_dim;
        for (int d = 0; d < hd; d++) {
            const double av = fabs((double)plumb__fp16_to_fp32(vr[d]));
            bound[d] += dp * av + pv * p16 * av;
        }
    }
    for (int d = 0; d < hd; d++) bound[d] = bound[d] * SLACK + TINY;
    free(sc), free(ds);
}

typedef struct attn_shape {
    int hd, n_head, n_kv, T, n_swa;
    float softcap;
} attn_shape;

static void attn_case(env *e, opstat *s, opstat *sc, const attn_shape *a) {
    kv_pair kv;
    kv_init(e, &kv, a->n_head, a->n_kv, a->hd);
    const int layer = 1, hd = a->hd, T = a->T, nh = a->n_head, nkv = a->n_kv, kv_dim = nkv * hd;
    /* each sequence continues from a position its cache already holds (up to 100, so that
     * tokens attend to more positions than a work-group has work-items); tokens go round them */
    int32_t pos[64], seq[64], next_pos[N_SEQ];
    for (int q = 0; q < N_SEQ; q++) next_pos[q] = irand(100);
    for (int t = 0; t < T; t++) {
        seq[t] = T == 1 ? irand(N_SEQ) : t % N_SEQ;
        pos[t] = next_pos[seq[t]]++;
    }
    bcase c;
    case_init(&c);
    float *q = case_floats(&c, (int64_t)hd * nh * T, 1.0f), *k = case_floats(&c, (int64_t)kv_dim * T, 1.0f),
          *v = case_floats(&c, (int64_t)kv_dim * T, 1.0f);
    const int64_t nq[3] = {hd, nh, T}, nk[3] = {hd, nkv, T};
    const bool views = a->T % 2 == 1;
    plumb_tensor *qt = views ? viewed(&c, 3, nq, q) : leaf(&c, PLUMB_TYPE_F32, 3, hd, nh, T, q);
    plumb_tensor *kt = views ? viewed(&c, 3, nk, k) : leaf(&c, PLUMB_TYPE_F32, 3, hd, nkv, T, k);
    plumb_tensor *vt = views ? viewed(&c, 3, nk, v) : leaf(&c, PLUMB_TYPE_F32, 3, hd, nkv, T, v);
    const plumb_attn_params p = {.kv = &kv.cpu,
                                 .layer = layer,
                                 .n_swa = a->n_swa,
                                 .pos = pos,
                                 .seq = seq,
                                 .scale = 1.0f / sqrtf((float)hd),
                                 .softcap = a->softcap};
    plumb_tensor *o = plumb_graph_attn(&c.g, qt, kt, vt, &p);
    o->is_output = true;
    CHECK(e->dev->iface->supports_op(e->dev, o));
    char what[128];
    snprintf(what, sizeof what, "hd %d heads %d/%d T %d window %d softcap %g", hd, nh, nkv, T, a->n_swa, a->softcap);
    if (case_run(e, &c, &kv.dev)) {
        /* the caches after the write: every layer, keys and values, bit for bit */
        uint16_t *back = malloc(kv.layer_bytes);
        for (int l = 0; l < N_LAYER; l++)
            for (int which = 0; which < 2; which++) {
                const uint16_t *host = which ? kv.v[l] : kv.k[l];
                CHECK_STATUS(
                    plumb_tensor_get(&(plumb_tensor){.buf = kv.devbuf, .offs = which ? kv.voff[l] : kv.koff[l]}, 0,
                                     back, kv.layer_bytes),
                    PLUMB_OK);
                const size_t n = kv.layer_bytes / 2;
                float *hf = malloc(n * 4), *bf = malloc(n * 4);
                double *zero = calloc(n, sizeof *zero);
                for (size_t i = 0; i < n; i++)
                    hf[i] = plumb__fp16_to_fp32(host[i]), bf[i] = plumb__fp16_to_fp32(back[i]);
                CHECK(memcmp(host, back, kv.layer_bytes) == 0);
                compare(sc, what, hf, bf, zero, (int64_t)n);
                free(hf), free(bf), free(zero);
            }
        free(back);
        float *got = case_result(&c, o);
        double *bound = malloc((size_t)(hd * nh * T) * sizeof *bound), *qr = malloc((size_t)hd * sizeof *qr);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++) {
                const int lo = a->n_swa > 0 && pos[t] - a->n_swa + 1 > 0 ? pos[t] - a->n_swa + 1 : 0;
                const size_t base = (size_t)seq[t] * N_CTX * (size_t)kv_dim + (size_t)(h / (nh / nkv) * hd);
                for (int d = 0; d < hd; d++) qr[d] = f16_round(q[((size_t)t * nh + h) * hd + d]);
                attn_bound(qr, kv.k[layer] + base, kv.v[layer] + base, (size_t)kv_dim, hd, lo, pos[t], p.scale,
                           p.softcap, bound + ((size_t)t * nh + h) * hd);
            }
        compare(s, what, o->data, got, bound, (int64_t)hd * nh * T);
        free(got), free(bound), free(qr);
    }
    case_free(&c);
    kv_free(&kv);
}

TEST(backend_opencl_attn) {
    env e;
    OPEN_OR_SKIP(e);
    opstat s = {.name = "attn"}, sc = {.name = "attn cache"};
    static const int hds[] = {64, 128, 256}, groups[][2] = {{4, 4}, {4, 2}, {8, 2}}, Ts[] = {1, 2, 5, 64};
    static const int windows[] = {0, 0, 5, 32};
    int k = 0;
    for (int hi = 0; hi < 3; hi++)
        for (int gi = 0; gi < 3; gi++)
            for (int ti = 0; ti < 4; ti++, k++) {
                const attn_shape a = {.hd = hds[hi],
                                      .n_head = groups[gi][0],
                                      .n_kv = groups[gi][1],
                                      .T = Ts[ti],
                                      .n_swa = windows[k % 4],
                                      .softcap = k % 3 == 1 ? 50.0f : 0.0f};
                attn_case(&e, &s, &sc, &a);
            }
    report(&s);
    report(&sc);
    env_close(&e);
}

/* ---- the device, and its failures ---------------------------------------------------------------- */

TEST(backend_opencl_device_build_log_and_max_alloc) {
    env e;
    OPEN_OR_SKIP(e);
#ifdef PLUMB_HAVE_OPENCL
    plumb_device_info info;
    CHECK_STATUS(plumb__backend_opencl.device_info(test_device(), &info), PLUMB_OK);
    CHECK(info.name[0] && info.driver[0] && info.memory > 0 && info.max_alloc > 0);
    printf("  opencl device %d: %s (%s), %llu MiB, largest buffer %llu MiB\n", test_device(), info.name, info.driver,
           (unsigned long long)(info.memory >> 20), (unsigned long long)(info.max_alloc >> 20));
    CHECK_EQ_INT(plumb__backend_opencl.device_info(plumb__backend_opencl.device_count(NULL), &info), PLUMB_E_NOT_FOUND);
    /* a kernel that does not compile: the error carries the driver's log (naming the culprit) */
    CHECK_STATUS(
        plumb__opencl_build_source(e.dev, "kernel void broken(global float *x) { x[0] = undeclared_name_42; }"),
        PLUMB_E_UNSUPPORTED);
    CHECK(strstr(plumb_last_error(), "build log") != NULL);
    CHECK(strstr(plumb_last_error(), "undeclared_name_42") != NULL);
    CHECK_STATUS(plumb__opencl_build_source(e.dev, "kernel void fine(global float *x) { x[0] = 1.0f; }"), PLUMB_OK);
    /* one byte more than the device allows in one buffer: out of memory, naming both sizes */
    plumb_buffer *buf = NULL;
    char want[2][32];
    snprintf(want[0], sizeof want[0], "%llu", (unsigned long long)info.max_alloc + 1);
    snprintf(want[1], sizeof want[1], "%llu", (unsigned long long)info.max_alloc);
    CHECK_STATUS(e.dev->iface->buffer_alloc(e.dev, (size_t)info.max_alloc + 1, &buf), PLUMB_E_NOMEM);
    CHECK(strstr(plumb_last_error(), want[0]) != NULL);
    CHECK(strstr(plumb_last_error(), want[1]) != NULL);
    /* a fresh buffer reads back as zeros; copies within and between buffers, overlapping too */
    plumb_buffer *a = NULL, *b = NULL;
    uint8_t bytes[300], back[300];
    CHECK_STATUS(e.dev->iface->buffer_alloc(e.dev, sizeof bytes, &a), PLUMB_OK);
    CHECK_STATUS(e.dev->iface->buffer_alloc(e.dev, sizeof bytes, &b), PLUMB_OK);
    CHECK(a->base == NULL && a->size == sizeof bytes);
    CHECK_STATUS(e.dev->iface->buffer_get(a, 0, back, sizeof back), PLUMB_OK);
    for (size_t i = 0; i < sizeof back; i++) CHECK_EQ_INT(back[i], 0);
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)(i * 7 + 1);
    CHECK_STATUS(e.dev->iface->buffer_set(a, 0, bytes, sizeof bytes), PLUMB_OK);
    CHECK_STATUS(e.dev->iface->buffer_copy(b, 10, a, 3, 200), PLUMB_OK);
    CHECK_STATUS(e.dev->iface->buffer_get(b, 10, back, 200), PLUMB_OK);
    CHECK(memcmp(back, bytes + 3, 200) == 0);
    CHECK_STATUS(e.dev->iface->buffer_copy(a, 5, a, 0, 250), PLUMB_OK); /* memmove semantics */
    CHECK_STATUS(e.dev->iface->buffer_get(a, 5, back, 250), PLUMB_OK);
    CHECK(memcmp(back, bytes, 250) == 0);
    plumb_buffer_free(a);
    plumb_buffer_free(b);
    /* what it runs: the dense ops, not the mixture-of-experts ones */
    CHECK(e.dev->iface->supports_weight(e.dev, PLUMB_TYPE_Q4_K) &&
          !e.dev->iface->supports_weight(e.dev, PLUMB_TYPE_BF16));
    const plumb_tensor moe = {.op = PLUMB_OP_TOP_K};
    CHECK(!e.dev->iface->supports_op(e.dev, &moe));
#endif
    env_close(&e);
}
