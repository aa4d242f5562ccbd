/* test_moe.c — the CPU backend's mixture-of-experts ops against straightforward references:
 * the expert matmul (MUL_MAT_ID) equals, bit for bit, the kernel set's one-row dot product of
 * each routed expert's weight row with the slot's quantized activation row, and the dense
 * MUL_MAT of that expert's matrix, for every weight type, one or k activation rows per
 * token, 1 to 13 tokens and 1 to 3 threads, under every kernel set this CPU runs; it reads no
 * expert that the batch does not route to (those pages are unreadable); and the routing ops
 * (softmax, top-k, the weights, the weighted sum) follow their definitions in graph.h and the
 * reference engine's order.
 *
 * Kernel tests (KERNEL_TEST) name every kernel set they checked, as test_ops.c does, for the
 * run's "kernel sets:" line; a set the CPU lacks is reported NOT TESTED with the reason. */
#include "test.h"

#include "cpu_fixture.h"

#include "backend/backend.h"
#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/kernels/kernels.h"
#include "core/graph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static uint32_t urand(uint32_t n) { return (uint32_t)((frand() + 1.0f) * 0.5f * (float)n) % n; }

enum { KS_GENERIC, KS_AVX2, KS_AVX512VNNI, KS_COUNT };
static const char *const ks_label[KS_COUNT] = {"generic", "avx2", "avx512vnni"};

/* The kernel sets this machine runs (NULL where the CPU or the build lacks one, named for the
 * "kernel sets:" line with why). */
static void kernel_sets(const plumb_kernel_set *out[KS_COUNT]) {
    plumb__kernels_get();
    const plumb_cpu_features *f = plumb_cpu_get();
    const bool base = f->avx2 && f->fma && f->f16c;
    const bool wide = base && f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni;
    out[KS_GENERIC] = plumb__kernels_generic();
    out[KS_AVX2] = base ? plumb__kernels_avx2() : NULL;
    out[KS_AVX512VNNI] = wide ? plumb__kernels_avx512vnni() : NULL;
    for (int i = 0; i < KS_COUNT; i++) {
        const bool cpu_has = i == KS_GENERIC || (i == KS_AVX2 ? base : wide);
        plumb_test_kernel_set(ks_label[i], out[i] ? "" : cpu_has ? "not in this build"
                                                   : i == KS_AVX2 ? "CPU lacks AVX2/FMA/F16C"
                                                                  : "CPU lacks AVX2/FMA/F16C or AVX-512 F/BW/VL/VNNI");
    }
}

static size_t row_bytes(int type, int64_t n) {
    uint64_t b = 0;
    plumb_type_row_bytes(type, n, &b);
    return (size_t)b;
}

/* E experts of [K, N] weights of type `type`, expert e at w + e * stride. */
static void fill_experts(uint8_t *w, size_t stride, int type, int64_t K, int64_t N, int64_t E) {
    float *row = malloc((size_t)K * sizeof *row);
    for (int64_t e = 0; e < E; e++)
        for (int64_t r = 0; r < N; r++) {
            for (int64_t i = 0; i < K; i++) row[i] = frand() * 0.5f;
            CHECK_STATUS(plumb_quantize_row(type, row, w + (size_t)e * stride + (size_t)r * row_bytes(type, K), K), PLUMB_OK);
        }
    free(row);
}

/* ids [k, T]: k distinct experts per token, or (repeat) the same expert twice in a row. */
static void fill_ids(int32_t *ids, int64_t k, int64_t T, int64_t E, bool repeat) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t s = 0; s < k; s++) {
            int32_t e;
            bool again;
            do {
                e = (int32_t)urand((uint32_t)E);
                again = false;
                for (int64_t q = 0; q < s; q++) again |= ids[t * k + q] == e;
            } while (again && !repeat);
            ids[t * k + s] = e;
        }
}

/* Runs MUL_MAT_ID(w, x, ids) with the given threads and kernel set; returns the output
 * [N, k, T] (malloc'd). w's experts are `stride` bytes apart. */
static float *run_mmid(const plumb_kernel_set *ks, int threads, int type, const void *w, size_t stride, int64_t K,
                       int64_t N, int64_t E, const float *x, int64_t B, const int32_t *ids, int64_t k, int64_t T) {
    fixture f;
    fixture_init(&f, threads, ks);
    const int64_t ne_w[3] = {K, N, E}, ne_x[3] = {K, B, T}, ne_ids[2] = {k, T};
    plumb_tensor *wt = plumb_graph_leaf(&f.g, type, 3, ne_w, (void *)w);
    wt->nb[2] = stride;
    wt->nb[3] = stride * (size_t)E;
    plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_x, (void *)x);
    plumb_tensor *it = plumb_graph_leaf(&f.g, PLUMB_TYPE_I32, 2, ne_ids, (void *)ids);
    plumb_tensor *y = plumb_graph_mul_mat_id(&f.g, wt, xt, it);
    y->is_output = true;
    fixture_run(&f);
    const size_t bytes = (size_t)(N * k * T) * sizeof(float);
    float *out = malloc(bytes);
    memcpy(out, y->data, bytes);
    fixture_free(&f);
    return out;
}

/* The dense MUL_MAT of expert e's matrix with one activation row, through the same kernels. */
static void dense_row(const plumb_kernel_set *ks, int type, const uint8_t *we, int64_t K, int64_t N, const float *xrow,
                      float *out) {
    fixture f;
    fixture_init(&f, 1, ks);
    const int64_t ne_w[2] = {K, N}, ne_x[2] = {K, 1};
    plumb_tensor *wt = plumb_graph_leaf(&f.g, type, 2, ne_w, (void *)we);
    plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_x, (void *)xrow);
    plumb_tensor *y = plumb_graph_mul_mat(&f.g, wt, xt);
    y->is_output = true;
    fixture_run(&f);
    memcpy(out, y->data, (size_t)N * sizeof(float));
    fixture_free(&f);
}

static const int mmid_types[] = {PLUMB_TYPE_F32,  PLUMB_TYPE_F16,  PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q4_1, PLUMB_TYPE_Q5_0,
                                 PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q2_K, PLUMB_TYPE_Q3_K, PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q5_K,
                                 PLUMB_TYPE_Q6_K};

KERNEL_TEST(mul_mat_id_equals_per_row_dot_and_dense_matmul) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    const int64_t K = 256, N = 37, E = 6, k = 3;
    const int64_t Ts[] = {1, 2, 5, 13};
    for (int si = 0; si < KS_COUNT; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        plumb_test_kernel_set(ks_label[si], NULL);
        for (size_t ti = 0; ti < sizeof mmid_types / sizeof mmid_types[0]; ti++) {
            const int type = mmid_types[ti];
            const size_t stride = row_bytes(type, K) * (size_t)N;
            uint8_t *w = malloc(stride * (size_t)E);
            fill_experts(w, stride, type, K, N, E);
            const int act = plumb__act_type(type);
            uint8_t *xq = malloc(plumb__act_row_size(act, K));
            float *dense = malloc((size_t)N * sizeof(float));
            for (size_t tt = 0; tt < sizeof Ts / sizeof Ts[0]; tt++) {
                const int64_t T = Ts[tt];
                for (int64_t B = 1; B <= k; B += k - 1) {
                    float *x = malloc((size_t)(K * B * T) * sizeof(float));
                    int32_t *ids = malloc((size_t)(k * T) * sizeof(int32_t));
                    for (int64_t i = 0; i < K * B * T; i++) x[i] = frand();
                    fill_ids(ids, k, T, E, tt == 3 && B == 1);
                    float *one = NULL;
                    for (int threads = 1; threads <= 3; threads++) {
                        float *y = run_mmid(ks, threads, type, w, stride, K, N, E, x, B, ids, k, T);
                        if (threads == 1) {
                            one = y;
                            for (int64_t t = 0; t < T; t++)
                                for (int64_t s = 0; s < k; s++) {
                                    const int32_t e = ids[t * k + s];
                                    const float *xrow = x + (t * B + s % B) * K;
                                    ks->act_quantize[act](xrow, xq, K);
                                    dense_row(ks, type, w + (size_t)e * stride, K, N, xrow, dense);
                                    for (int64_t r = 0; r < N; r++) {
                                        const float got = y[(t * k + s) * N + r];
                                        const float ref = ks->vec_dot[type](K, w + (size_t)e * stride + (size_t)r * row_bytes(type, K), xq);
                                        if (memcmp(&got, &ref, 4) != 0 || memcmp(&got, &dense[r], 4) != 0)
                                            plumb_test_fail(__FILE__, __LINE__,
                                                            "%s %s T %lld B %lld token %lld slot %lld row %lld: %.9g, dot %.9g, "
                                                            "dense %.9g",
                                                            ks->name, plumb_type_name(type), (long long)T, (long long)B,
                                                            (long long)t, (long long)s, (long long)r, got, ref, dense[r]);
                                    }
                                }
                            continue;
                        }
                        if (memcmp(y, one, (size_t)(N * k * T) * sizeof(float)) != 0)
                            plumb_test_fail(__FILE__, __LINE__, "%s %s T %lld B %lld: %d threads differ from 1", ks->name,
                                            plumb_type_name(type), (long long)T, (long long)B, threads);
                        free(y);
                    }
                    free(one), free(x), free(ids);
                }
            }
            free(w), free(xq), free(dense);
        }
    }
}

/* Experts the batch does not route to are never read: their pages are made unreadable, and
 * a decode (one token) and a small batch still compute the routed ones right. */
TEST(mul_mat_id_reads_only_routed_experts) {
    const int64_t K = 512, N = 64, E = 8, k = 2, T = 3;
    const int type = PLUMB_TYPE_Q4_K;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t stride = (row_bytes(type, K) * (size_t)N + page - 1) / page * page;
    uint8_t *w = mmap(NULL, stride * (size_t)E, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(w != MAP_FAILED);
    if (w == MAP_FAILED) return;
    fill_experts(w, stride, type, K, N, E);
    float *x = malloc((size_t)(K * T) * sizeof(float));
    for (int64_t i = 0; i < K * T; i++) x[i] = frand();
    const int32_t ids[6] = {5, 2, 2, 7, 5, 7}; /* experts 2, 5 and 7 only */
    const plumb_kernel_set *ks = plumb__kernels_get();
    float *before[2];
    for (int p = 0; p < 2; p++) before[p] = run_mmid(ks, 2, type, w, stride, K, N, E, x, 1, ids, k, p ? T : 1);
    for (int64_t e = 0; e < E; e++)
        if (e != 2 && e != 5 && e != 7) CHECK(mprotect(w + (size_t)e * stride, stride, PROT_NONE) == 0);
    for (int p = 0; p < 2; p++) { /* would fault on an unrouted expert */
        const int64_t t = p ? T : 1;
        float *after = run_mmid(ks, 2, type, w, stride, K, N, E, x, 1, ids, k, t);
        CHECK(memcmp(after, before[p], (size_t)(N * k * t) * sizeof(float)) == 0);
        free(after), free(before[p]);
    }
    munmap(w, stride * (size_t)E);
    free(x);
}

/* softmax as the reference computes it: exponentials by plumb__exp_poly over whole groups of
 * 16 (each group summed by plumb__sum16) and expf for the rest, added in double, every value
 * times the float of 1 / sum. */
static void softmax_ref(const float *x, float *y, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int l = 0; l < 16; l++) y[i + l] = plumb__exp_poly(x[i + l] - mx);
        sum += (double)plumb__sum16(y + i);
    }
    for (; i < n; i++) {
        y[i] = expf(x[i] - mx);
        sum += (double)y[i];
    }
    const float inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++) y[i] *= inv;
}

TEST(moe_routing_ops_follow_their_definitions) {
    enum { T = 5, MAXE = 40 };
    const int64_t lens[] = {8, 16, 20, 40};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int64_t E = lens[li], k = li + 1 < 3 ? 2 : 4;
        float logits[T * MAXE], probs_ref[T * MAXE];
        for (int64_t i = 0; i < T * E; i++) logits[i] = frand() * 4.0f;
        logits[0 * E + 3] = logits[0 * E + 5] = 9.0f; /* a tie: the lower index first */
        logits[1 * E + 1] = NAN;                      /* never chosen ahead of a number */
        for (int64_t t = 0; t < T; t++) softmax_ref(logits + t * E, probs_ref + t * E, E);
        for (int threads = 1; threads <= 2; threads++) {
            fixture f;
            fixture_init(&f, threads, NULL);
            const int64_t ne[2] = {E, T};
            plumb_tensor *l = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne, logits);
            plumb_tensor *p = plumb_graph_soft_max(&f.g, l, &(plumb_soft_max_params){.scale = 1.0f});
            plumb_tensor *ids = plumb_graph_top_k(&f.g, p, &(plumb_top_k_params){.k = (int32_t)k});
            plumb_tensor *wn = plumb_graph_moe_weights(&f.g, p, ids, &(plumb_moe_weights_params){.norm = true, .scale = 0.0f});
            plumb_tensor *ws = plumb_graph_moe_weights(&f.g, p, ids, &(plumb_moe_weights_params){.norm = false, .scale = 2.5f});
            float ex[MAXE * 4 * T];
            for (int64_t i = 0; i < 8 * k * T; i++) ex[i] = frand();
            const int64_t ne_ex[3] = {8, k, T};
            plumb_tensor *et = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_ex, ex);
            plumb_tensor *sum = plumb_graph_moe_sum(&f.g, et, wn);
            p->is_output = ids->is_output = wn->is_output = ws->is_output = sum->is_output = true;
            fixture_run(&f);
            const float *pg = p->data, *wng = wn->data, *wsg = ws->data, *sg = sum->data;
            const int32_t *ig = ids->data;
            for (int64_t t = 0; t < T; t++) {
                const float *pr = probs_ref + t * E;
                for (int64_t e = 0; e < E; e++)
                    if (!(isnan(pr[e]) && isnan(pg[t * E + e])) && memcmp(&pr[e], &pg[t * E + e], 4) != 0)
                        plumb_test_fail(__FILE__, __LINE__, "softmax E %lld token %lld [%lld]: %.9g vs %.9g", (long long)E,
                                        (long long)t, (long long)e, pg[t * E + e], pr[e]);
                if (t == 1) continue; /* the NaN row: its sum is NaN; only the indices matter */
                /* top-k: distinct, in range, descending, ties by index, none left above */
                double s = 0.0;
                for (int64_t j = 0; j < k; j++) {
                    const int32_t id = ig[t * k + j];
                    CHECK(id >= 0 && id < E);
                    if (j) CHECK(pr[ig[t * k + j - 1]] > pr[id] || (pr[ig[t * k + j - 1]] == pr[id] && ig[t * k + j - 1] < id));
                    s += (double)pr[id];
                }
                for (int64_t e = 0; e < E; e++) {
                    bool chosen = false;
                    for (int64_t j = 0; j < k; j++) chosen |= ig[t * k + j] == e;
                    if (!chosen) CHECK(pr[e] < pr[ig[t * k + k - 1]] || (pr[e] == pr[ig[t * k + k - 1]] && e > ig[t * k + k - 1]));
                }
                if (t == 0) CHECK(ig[0] == 3 && ig[1] == 5);
                for (int64_t j = 0; j < k; j++) {
                    const float pj = pr[ig[t * k + j]], want_n = pj / (float)s, want_s = pj * 2.5f;
                    CHECK(memcmp(&wng[t * k + j], &want_n, 4) == 0);
                    CHECK(memcmp(&wsg[t * k + j], &want_s, 4) == 0);
                }
                for (int64_t i = 0; i < 8; i++) {
                    float acc = ex[(t * k) * 8 + i] * wng[t * k];
                    for (int64_t j = 1; j < k; j++) {
                        const float prod = ex[(t * k + j) * 8 + i] * wng[t * k + j];
                        acc = acc + prod;
                    }
                    CHECK(memcmp(&acc, &sg[t * 8 + i], 4) == 0);
                }
            }
            /* the NaN row still names k distinct experts */
            for (int64_t j = 0; j < k; j++) {
                CHECK(ig[k + j] >= 0 && ig[k + j] < E);
                for (int64_t q = 0; q < j; q++) CHECK(ig[k + q] != ig[k + j]);
            }
            fixture_free(&f);
        }
    }
}

/* The routing weights' sum is clamped at 2^-14, as the reference clamps it. */
TEST(moe_weights_clamp_tiny_sums) {
    float probs[4] = {1e-6f, 2e-6f, 0.5f, 0.5f};
    const int32_t idsv[2] = {1, 0};
    fixture f;
    fixture_init(&f, 1, NULL);
    const int64_t ne_p[2] = {4, 1}, ne_i[2] = {2, 1};
    plumb_tensor *p = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_p, probs);
    plumb_tensor *ids = plumb_graph_leaf(&f.g, PLUMB_TYPE_I32, 2, ne_i, (void *)idsv);
    plumb_tensor *w = plumb_graph_moe_weights(&f.g, p, ids, &(plumb_moe_weights_params){.norm = true});
    w->is_output = true;
    fixture_run(&f);
    const float *got = w->data, min_sum = 6.103515625e-5f;
    const float want0 = 2e-6f / min_sum, want1 = 1e-6f / min_sum;
    CHECK(memcmp(&got[0], &want0, 4) == 0);
    CHECK(memcmp(&got[1], &want1, 4) == 0);
    fixture_free(&f);
}
