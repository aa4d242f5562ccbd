/* test_ops.c — the CPU backend's ops and kernels against plain reference computations:
 * the quantized dot product of every weight type (vs dequantize + float dot, within the
 * activation-quantization error), matmul batch invariance, RMS norm, RoPE (both modes),
 * masked attention with grouped KV heads and a sliding window, and the memory planner
 * (a graph computed with reused buffers equals the same ops computed one by one).
 *
 * The kernel tests (KERNEL_TEST) check every kernel set this CPU runs and name each set for the
 * run's "kernel sets:" line; a set the CPU lacks is reported NOT TESTED with the features it
 * misses, and a test left with nothing to compare counts as skipped, not passed. */
#include "test.h"

#include "cpu_fixture.h"

#include "backend/backend.h"
#include "backend/cpu/kernels/kernels.h"
#include "core/graph.h"
#include "core/kv_cache.h"
#include "quant/fp16.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static const int all_types[] = {PLUMB_TYPE_F32,  PLUMB_TYPE_F16,  PLUMB_TYPE_BF16, PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q4_1,
                                PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q5_1, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q2_K, PLUMB_TYPE_Q3_K,
                                PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q5_K, PLUMB_TYPE_Q6_K, PLUMB_TYPE_Q8_K};

/* The kernel sets, in the order the "kernel sets:" line names them. */
enum { KS_GENERIC, KS_AVX2, KS_AVX512VNNI, KS_COUNT };
static const char *const ks_label[KS_COUNT] = {"generic", "avx2", "avx512vnni"};

/* Appends the names of the missing features among n to buf, '/'-separated. */
static void add_missing(char *buf, size_t size, const bool *have, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!have[i]) {
            const size_t len = strlen(buf);
            snprintf(buf + len, size - len, "%s%s", len && buf[len - 1] != ' ' ? "/" : "", names[i]);
        }
}

/* The kernel sets this machine runs, by KS_ index: NULL for one the CPU (or this build) lacks,
 * which is named for the "kernel sets:" line with why. Also builds the f16 table. The
 * features are checked here as well as in plumb__kernels_*(): a set whose features are
 * missing must not be called even if a build hands it out. */
static void kernel_sets(const plumb_kernel_set *out[KS_COUNT]) {
    plumb__kernels_get();
    const plumb_cpu_features *f = plumb_cpu_get();
    const bool base[3] = {f->avx2, f->fma, f->f16c};
    const bool wide[4] = {f->avx512f, f->avx512bw, f->avx512vl, f->avx512vnni};
    static const char *const base_names[3] = {"AVX2", "FMA", "F16C"}, *const wide_names[4] = {"F", "BW", "VL", "VNNI"};
    const bool has_base = base[0] && base[1] && base[2], has_wide = wide[0] && wide[1] && wide[2] && wide[3];
    out[KS_GENERIC] = plumb__kernels_generic();
    out[KS_AVX2] = has_base ? plumb__kernels_avx2() : NULL;
    out[KS_AVX512VNNI] = has_base && has_wide ? plumb__kernels_avx512vnni() : NULL;
    char why[96];
    for (int i = 0; i < KS_COUNT; i++) {
        if (out[i]) {
            plumb_test_kernel_set(ks_label[i], ""); /* known; checked once a test says so */
            continue;
        }
        if ((i == KS_AVX2 && has_base) || (i == KS_AVX512VNNI && has_base && has_wide)) {
            plumb_test_kernel_set(ks_label[i], "not in this build");
            continue;
        }
        snprintf(why, sizeof why, "CPU lacks ");
        if (!has_base) add_missing(why, sizeof why, base, base_names, 3);
        if (i == KS_AVX512VNNI && !has_wide) {
            if (!has_base) strncat(why, ", ", sizeof why - strlen(why) - 1);
            strncat(why, "AVX-512 ", sizeof why - strlen(why) - 1);
            add_missing(why, sizeof why, wide, wide_names, 4);
        }
        plumb_test_kernel_set(ks_label[i], why);
    }
}

/* Names set i as checked by the running test. */
static void checked(int i) { plumb_test_kernel_set(ks_label[i], NULL); }

/* Dot of a quantized row with quantized activations equals the float dot of the
 * dequantized row with the activations, up to the activations' 8-bit rounding: each
 * activation moves by at most d/2 = amax/254 of its block, so the error is bounded by
 * sum|w| * amax(x) / 254 (plus float rounding). */
KERNEL_TEST(vec_dot_every_type_matches_dequantized_reference) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    const plumb_kernel_set *ks = plumb__kernels_get(); /* the set the matmul uses */
    for (int i = 0; i < KS_COUNT; i++)
        if (sets[i] == ks) checked(i);
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        int type = all_types[ti];
        for (int64_t n = 256; n <= 1024; n += 768) {
            float *w = malloc((size_t)n * 4), *x = malloc((size_t)n * 4), *wd = malloc((size_t)n * 4);
            uint64_t wb;
            plumb_type_row_bytes(type, n, &wb);
            void *wq = malloc(wb);
            int act = plumb__act_type(type);
            void *xq = malloc(plumb__act_row_size(act, n));
            for (int rep = 0; rep < 20; rep++) {
                float xs = rep % 3 == 0 ? 1e-3f : (rep % 3 == 1 ? 1.0f : 30.0f);
                for (int64_t i = 0; i < n; i++) {
                    w[i] = frand();
                    x[i] = frand() * xs;
                }
                CHECK_STATUS(plumb_quantize_row(type, w, wq, n), PLUMB_OK);
                CHECK_STATUS(plumb_dequantize_row(type, wq, wd, n), PLUMB_OK);
                ks->act_quantize[act](x, xq, n);
                double ref = 0.0, sumw = 0.0, amax = 0.0;
                for (int64_t i = 0; i < n; i++) {
                    ref += (double)wd[i] * x[i];
                    sumw += fabs(wd[i]);
                    amax = fmax(amax, fabs(x[i]));
                }
                float got = ks->vec_dot[type](n, wq, xq);
                double bound = act == PLUMB_ACT_F32 ? 1e-5 * sumw * amax + 1e-6 : sumw * amax / 254.0 * 1.01 + 1e-4 * sumw * amax;
                /* F16 weights dot with the activations rounded to F16 (as the reference does):
                 * each moves by at most 2^-11 of itself */
                if (type == PLUMB_TYPE_F16) bound += sumw * amax / 2048.0;
                if (!(fabs(got - ref) <= bound))
                    plumb_test_fail(__FILE__, __LINE__, "type %s n %lld: dot %.9g vs ref %.9g (bound %.3g)",
                                    plumb_type_name(type), (long long)n, got, ref, bound);
            }
            free(w), free(x), free(wd), free(wq), free(xq);
        }
    }
}

/* A row's matmul result must not depend on how many rows are computed with it, nor on the
 * threads: every token of a 100-token batch (the GEMM, its tokens in several blocks, several
 * packed groups per chunk of work, two groups at a time where the set runs them so, the last
 * group partial: 22 groups of 16) equals the token alone (the one-row kernels), with 1, 2 and 3
 * threads (3: one group per chunk). */
TEST(matmul_is_batch_invariant_and_thread_invariant) {
    const int64_t K = 2048, N = 343, T = 100;
    const int types[] = {PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q6_K, PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q8_0};
    float *wf = malloc((size_t)(K * N) * 4), *x = malloc((size_t)(K * T) * 4), *alone = malloc((size_t)(N * T) * 4);
    for (int64_t i = 0; i < K * N; i++) wf[i] = frand();
    for (int64_t i = 0; i < K * T; i++) x[i] = frand();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        uint64_t wb;
        plumb_type_row_bytes(types[ti], K * N, &wb);
        uint8_t *wq = malloc(wb);
        plumb_quantize_row(types[ti], wf, wq, K * N);
        for (int threads = 0; threads <= 3; threads++) { /* 0: each token alone, one thread */
            for (int64_t t0 = 0; t0 < T; t0 += threads == 0 ? 1 : T) {
                const int64_t tn = threads == 0 ? 1 : T;
                fixture f;
                fixture_init(&f, threads == 0 ? 1 : threads, NULL);
                int64_t ne_w[2] = {K, N}, ne_x[2] = {K, tn};
                plumb_tensor *w = plumb_graph_leaf(&f.g, types[ti], 2, ne_w, wq);
                plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_x, x + t0 * K);
                plumb_tensor *y = plumb_graph_mul_mat(&f.g, w, xt);
                y->is_output = true;
                fixture_run(&f);
                if (threads == 0) memcpy(alone + t0 * N, y->data, (size_t)N * 4);
                else
                    for (int64_t t = 0; t < T; t++)
                        if (memcmp((float *)y->data + t * N, alone + t * N, (size_t)N * 4) != 0) {
                            plumb_test_fail(__FILE__, __LINE__, "%s token %lld of %lld, %d threads: not the token alone",
                                            plumb_type_name(types[ti]), (long long)t, (long long)T, threads);
                            break;
                        }
                fixture_free(&f);
            }
        }
        free(wq);
    }
    free(wf), free(x), free(alone);
}

/* Matmuls of one activation tensor one after the other share its quantized form (the second
 * finds the first one's in the scratch): each result equals the matmul alone, for weights whose
 * activations are prepared alike (Q5_0, Q8_0, Q4_0) and not (Q4_K between them), a matmul of
 * another tensor in between (which must not hand its activations on), 1-40 tokens, 1 and 2
 * threads, weights kept in the GEMM's layout and not. */
TEST(matmuls_of_one_activation_share_its_preparation) {
    const int64_t K = 512, N = 40;
    enum { NW = 6 };
    const int types[NW] = {PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q5_0};
    const bool other[NW] = {false, false, true, false, false, false}; /* the third takes x2 */
    float *wf = malloc((size_t)(K * N) * 4), *x = malloc((size_t)(K * 40) * 4), *x2 = malloc((size_t)(K * 40) * 4);
    float *alone = malloc((size_t)(N * 40) * 4);
    uint8_t *wq[NW];
    for (int64_t i = 0; i < K * 40; i++) x[i] = frand(), x2[i] = frand();
    for (int k = 0; k < NW; k++) {
        for (int64_t i = 0; i < K * N; i++) wf[i] = frand();
        uint64_t wb;
        plumb_type_row_bytes(types[k], K * N, &wb);
        wq[k] = malloc(wb);
        plumb_quantize_row(types[k], wf, wq[k], K * N);
    }
    static const int64_t Ts[] = {1, 3, 12, 40};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
        for (int threads = 1; threads <= 2; threads++)
            for (int keep = 0; keep < 2; keep++) {
                const int64_t T = Ts[ti];
                int64_t ne_w[2] = {K, N}, ne_x[2] = {K, T};
                fixture f;
                fixture_init(&f, threads, NULL);
                plumb_tensor *w[NW], *y[NW];
                plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_x, x);
                plumb_tensor *xt2 = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_x, x2);
                for (int k = 0; k < NW; k++) w[k] = plumb_graph_leaf(&f.g, types[k], 2, ne_w, wq[k]);
                if (keep) CHECK_STATUS(plumb_backend_cpu_pack_weights(f.cpu, (const plumb_tensor *const *)w, NW), PLUMB_OK);
                for (int k = 0; k < NW; k++) {
                    y[k] = plumb_graph_mul_mat(&f.g, w[k], other[k] ? xt2 : xt);
                    y[k]->is_output = true;
                }
                fixture_run(&f);
                for (int k = 0; k < NW; k++) {
                    fixture a;
                    fixture_init(&a, threads, NULL);
                    plumb_tensor *wa = plumb_graph_leaf(&a.g, types[k], 2, ne_w, wq[k]);
                    if (keep) CHECK_STATUS(plumb_backend_cpu_pack_weights(a.cpu, (const plumb_tensor *const[]){wa}, 1), PLUMB_OK);
                    plumb_tensor *ya = plumb_graph_mul_mat(&a.g, wa, plumb_graph_leaf(&a.g, PLUMB_TYPE_F32, 2, ne_x, other[k] ? x2 : x));
                    ya->is_output = true;
                    fixture_run(&a);
                    memcpy(alone, ya->data, (size_t)(N * T) * 4);
                    fixture_free(&a);
                    if (memcmp(alone, y[k]->data, (size_t)(N * T) * 4) != 0)
                        plumb_test_fail(__FILE__, __LINE__, "matmul %d (%s) of %lld tokens, %d threads%s: not its result alone", k,
                                        plumb_type_name(types[k]), (long long)T, threads, keep ? ", kept" : "");
                }
                fixture_free(&f);
            }
    for (int k = 0; k < NW; k++) free(wq[k]);
    free(wf), free(x), free(x2), free(alone);
}

/* Weights a context keeps in the GEMM's layout (plumb_backend_cpu_pack_weights) give the bits
 * of the file's layout (the one-row, four-row and GEMM kernels) for every batch size: 1-7 (the
 * GEMM from the kept layout), 8 and more (the kept groups expanded), rows not a multiple of 16,
 * with the exact GEMM and with the block-sum one (fast_gemm); Q4_K's and Q6_K's kept layouts
 * (batches of under 8 rows; prompts pack their file rows);
 * and a context keeps them in as many bytes as the file's rows. */
TEST(kept_weights_give_the_file_layouts_bits) {
    const int64_t K = 768, N = 83, T = 12;
    const int types[] = {PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q6_K};
    float *wf = malloc((size_t)(K * N) * 4), *x = malloc((size_t)(K * T) * 4), *want = malloc((size_t)(N * T) * 4);
    for (int64_t i = 0; i < K * N; i++) wf[i] = frand();
    for (int64_t i = 0; i < K * T; i++) x[i] = frand();
    bool kept_any = false;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const int type = types[ti];
        uint64_t wb;
        plumb_type_row_bytes(type, K * N, &wb);
        uint8_t *wq = malloc(wb);
        plumb_quantize_row(type, wf, wq, K * N);
        for (int fast = 0; fast < 2; fast++) {
            for (int threads = 1; threads <= 2; threads++)
                for (int64_t tn = 1; tn <= T; tn++)
                    for (int keep = 0; keep < 2; keep++) {
                        fixture f;
                        fixture_init(&f, threads, NULL);
                        plumb_backend_cpu_set_gemm(f.cpu, true, fast == 1);
                        int64_t ne_w[2] = {K, N}, ne_x[2] = {K, tn};
                        plumb_tensor *w = plumb_graph_leaf(&f.g, type, 2, ne_w, wq);
                        if (keep) {
                            CHECK_STATUS(plumb_backend_cpu_pack_weights(f.cpu, (const plumb_tensor *const[]){w}, 1), PLUMB_OK);
                            const uint64_t bytes = plumb_backend_cpu_packed_bytes(f.cpu);
                            const plumb_kernel_set *ks = plumb__kernels_get();
                            const plumb_gemm_ops *g = fast && ks->gemm_sums[type] ? ks->gemm_sums[type] : ks->gemm[type];
                            if (g && g->keep) {
                                kept_any = true;
                                /* rows in whole groups of 16; the legacy types' layout is the file's size */
                                CHECK(bytes == (uint64_t)((N + 15) / 16) * (uint64_t)(K / g->block) * g->keep_bytes);
                                if (type != PLUMB_TYPE_Q4_K)
                                    CHECK(bytes == (uint64_t)wb + (uint64_t)((16 - N % 16) % 16) * (wb / (uint64_t)N));
                            } else {
                                CHECK(bytes == 0);
                            }
                        }
                        plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_x, x);
                        plumb_tensor *y = plumb_graph_mul_mat(&f.g, w, xt);
                        y->is_output = true;
                        fixture_run(&f);
                        if (!keep) memcpy(want, y->data, (size_t)(N * tn) * 4);
                        else if (memcmp(want, y->data, (size_t)(N * tn) * 4) != 0)
                            plumb_test_fail(__FILE__, __LINE__, "%s %lld tokens, %d threads%s: kept weights give other bits",
                                            plumb_type_name(type), (long long)tn, threads, fast ? ", block sums" : "");
                        fixture_free(&f);
                    }
        }
        free(wq);
    }
    free(wf), free(x), free(want);
    if (!kept_any) PLUMB_TEST_SKIP("this CPU's kernel set keeps no weight type (the kept layouts are AVX-512 VNNI's)");
}

/* Work handed out in chunks stays consistent over a graph of many nodes: a chain of matmuls
 * (each node's rows handed out afresh, on both the few-row and the many-row paths) gives the
 * single-thread bits with 2, 3 and 4 threads. */
TEST(chunked_work_over_many_nodes_matches_one_thread) {
    const int64_t K = 256, L = 6;
    uint64_t wb;
    plumb_type_row_bytes(PLUMB_TYPE_Q4_K, K * K, &wb);
    uint8_t *wq = malloc(wb);
    float *wf = malloc((size_t)(K * K) * 4), *x = malloc((size_t)(K * 9) * 4), *ref = malloc((size_t)(K * 9) * 4);
    for (int64_t i = 0; i < K * K; i++) wf[i] = frand() * 0.1f;
    for (int64_t i = 0; i < K * 9; i++) x[i] = frand();
    plumb_quantize_row(PLUMB_TYPE_Q4_K, wf, wq, K * K);
    for (int64_t T = 1; T <= 9; T += 8)
        for (int threads = 1; threads <= 4; threads++) {
            fixture f;
            fixture_init(&f, threads, NULL);
            int64_t ne_w[2] = {K, K}, ne_x[2] = {K, T};
            plumb_tensor *w = plumb_graph_leaf(&f.g, PLUMB_TYPE_Q4_K, 2, ne_w, wq);
            plumb_tensor *y = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_x, x);
            for (int64_t l = 0; l < L; l++) y = plumb_graph_mul_mat(&f.g, w, y);
            y->is_output = true;
            fixture_run(&f);
            if (threads == 1) memcpy(ref, y->data, (size_t)(K * T) * 4);
            else CHECK(memcmp(ref, y->data, (size_t)(K * T) * 4) == 0);
            fixture_free(&f);
        }
    free(wq), free(wf), free(x), free(ref);
}

/* Runs of small element-wise nodes go to thread 0 alone with no barrier between them
 * (cpu_backend.c): a chain of norm, add, scale, matmul, silu, add, matmul gives the
 * single-thread bits with 2 and 3 threads, with the element-wise nodes under the size that
 * makes them run alone (T = 100: 6400 values), at it (128: 8192) and over it (129). */
TEST(small_node_runs_match_one_thread) {
    const int64_t K = 64, Ts[] = {1, 100, 128, 129};
    uint64_t wb;
    plumb_type_row_bytes(PLUMB_TYPE_Q8_0, K * K, &wb);
    uint8_t *wq = malloc(wb);
    float *wf = malloc((size_t)(K * K) * 4), *x = malloc((size_t)(K * 129) * 4), *nw = malloc((size_t)K * 4);
    float *ref = malloc((size_t)(K * 129) * 4);
    for (int64_t i = 0; i < K * K; i++) wf[i] = frand() * 0.2f;
    for (int64_t i = 0; i < K * 129; i++) x[i] = frand();
    for (int64_t i = 0; i < K; i++) nw[i] = 1 + frand();
    plumb_quantize_row(PLUMB_TYPE_Q8_0, wf, wq, K * K);
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
        for (int threads = 1; threads <= 3; threads++) {
            const int64_t T = Ts[ti];
            fixture f;
            fixture_init(&f, threads, NULL);
            int64_t ne_w[2] = {K, K}, ne_x[2] = {K, T}, ne_n[1] = {K};
            plumb_tensor *w = plumb_graph_leaf(&f.g, PLUMB_TYPE_Q8_0, 2, ne_w, wq);
            plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 2, ne_x, x);
            plumb_tensor *n = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 1, ne_n, nw);
            plumb_tensor *a = plumb_graph_rms_norm(&f.g, xt, n, &(plumb_rms_norm_params){.eps = 1e-6f});
            plumb_tensor *b = plumb_graph_scale(&f.g, plumb_graph_add(&f.g, a, xt), &(plumb_scale_params){.s = 0.5f});
            plumb_tensor *c = plumb_graph_silu(&f.g, plumb_graph_mul_mat(&f.g, w, b));
            plumb_tensor *y = plumb_graph_mul_mat(&f.g, w, plumb_graph_add(&f.g, c, b));
            y->is_output = true;
            fixture_run(&f);
            if (threads == 1) memcpy(ref, y->data, (size_t)(K * T) * 4);
            else if (memcmp(ref, y->data, (size_t)(K * T) * 4) != 0)
                plumb_test_fail(__FILE__, __LINE__, "%lld tokens, %d threads: not the single-thread bits", (long long)T, threads);
            fixture_free(&f);
        }
    free(wq), free(wf), free(x), free(nw), free(ref);
}

/* The op table: every op has a distinct name and at most PLUMB_MAX_SRC sources, and a typed
 * builder puts its parameters into the node's member of the union, its sources in order. */
TEST(op_table_names_sources_and_typed_params) {
    for (int i = 0; i < PLUMB_OP_COUNT; i++) {
        CHECK(plumb_op_name((plumb_op)i)[0] != '?' && plumb_op_n_src((plumb_op)i) <= PLUMB_MAX_SRC);
        for (int j = 0; j < i; j++) CHECK(strcmp(plumb_op_name((plumb_op)i), plumb_op_name((plumb_op)j)) != 0);
    }
    CHECK(strcmp(plumb_op_name(PLUMB_OP_ROPE), "rope") == 0 && plumb_op_n_src(PLUMB_OP_ROPE) == 3);
    CHECK(strcmp(plumb_op_name(PLUMB_OP_COUNT), "?") == 0);
    plumb_graph g;
    CHECK_STATUS(plumb_graph_init(&g, 8), PLUMB_OK);
    float x[8 * 2 * 3] = {0};
    int32_t pos[3] = {0, 1, 2};
    const int64_t ne[3] = {8, 2, 3}, ne_p[1] = {3};
    plumb_tensor *xt = plumb_graph_leaf(&g, PLUMB_TYPE_F32, 3, ne, x);
    plumb_tensor *pt = plumb_graph_leaf(&g, PLUMB_TYPE_I32, 1, ne_p, pos);
    plumb_tensor *r = plumb_graph_rope(&g, xt, pt, NULL,
                                       &(plumb_rope_params){.mode = PLUMB_ROPE_NEOX, .n_rot = 6, .base = 5e5f,
                                                            .freq_scale = 0.25f, .attn_factor = 1.5f});
    CHECK(r->op == PLUMB_OP_ROPE && r->src[0] == xt && r->src[1] == pt && !r->src[2]);
    CHECK(r->params.rope.mode == PLUMB_ROPE_NEOX && r->params.rope.n_rot == 6 && r->params.rope.base == 5e5f &&
          r->params.rope.freq_scale == 0.25f && r->params.rope.attn_factor == 1.5f);
    CHECK(r->ne[0] == 8 && r->ne[1] == 2 && r->ne[2] == 3 && r->type == PLUMB_TYPE_F32);
    plumb_tensor *s = plumb_graph_scale(&g, r, &(plumb_scale_params){.s = 3.0f});
    CHECK(s->op == PLUMB_OP_SCALE && s->params.scale.s == 3.0f && g.n_nodes == 2);
    plumb_graph_free(&g);
}

TEST(rms_norm_rope_and_planner_reuse) {
    const int64_t hd = 8, nh = 3, T = 5;
    float x[8 * 3 * 5], w[8];
    int32_t pos[5] = {0, 1, 7, 100, 4096};
    for (int i = 0; i < 8 * 3 * 5; i++) x[i] = frand() * 3;
    for (int i = 0; i < 8; i++) w[i] = 1 + frand();
    for (int mode = 0; mode < 2; mode++) {
        fixture f;
        fixture_init(&f, 2, NULL);
        int64_t ne[3] = {hd, nh, T}, ne_p[1] = {T}, ne_w[1] = {hd};
        plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne, x);
        plumb_tensor *pt = plumb_graph_leaf(&f.g, PLUMB_TYPE_I32, 1, ne_p, pos);
        plumb_tensor *wt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 1, ne_w, w);
        /* a chain long enough for the planner to reuse buffers */
        plumb_tensor *a = plumb_graph_rms_norm(&f.g, xt, wt, &(plumb_rms_norm_params){.eps = 1e-6f});
        plumb_tensor *b = plumb_graph_scale(&f.g, a, &(plumb_scale_params){.s = 2.0f});
        /* partial rotation: dims 6, 7 pass through */
        plumb_tensor *c = plumb_graph_rope(&f.g, b, pt, NULL,
                                           &(plumb_rope_params){.mode = mode, .n_rot = 6, .base = 10000.0f, .freq_scale = 0.5f});
        plumb_tensor *d = plumb_graph_scale(&f.g, c, &(plumb_scale_params){.s = 1.0f});
        plumb_tensor *e = plumb_graph_add(&f.g, d, xt);
        e->is_output = true;
        fixture_run(&f);
        CHECK(f.g.pool_need < 5 * plumb_tensor_nbytes(e)); /* buffers were reused */
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < nh; h++) {
                const float *xr = x + (t * nh + h) * hd;
                double ss = 0;
                for (int i = 0; i < hd; i++) ss += xr[i] * xr[i];
                float sc = 1.0f / sqrtf((float)(ss / hd) + 1e-6f);
                float nrm[8];
                for (int i = 0; i < hd; i++) nrm[i] = 2.0f * xr[i] * sc * w[i];
                float ref[8];
                memcpy(ref, nrm, sizeof ref);
                for (int i = 0; i < 3; i++) {
                    double theta = 0.5 * pos[t] * pow(10000.0, -2.0 * i / 6.0);
                    int ia = mode ? i : 2 * i, ib = mode ? i + 3 : 2 * i + 1;
                    ref[ia] = (float)(nrm[ia] * cos(theta) - nrm[ib] * sin(theta));
                    ref[ib] = (float)(nrm[ia] * sin(theta) + nrm[ib] * cos(theta));
                }
                for (int i = 0; i < hd; i++)
                    CHECK_NEAR(((float *)e->data)[(t * nh + h) * hd + i], ref[i] + xr[i], 2e-3 * (1 + fabs(ref[i])));
            }
        fixture_free(&f);
    }
}

/* rms_norm then rope of T tokens x nh heads with `threads` threads; returns the output. */
static float *norm_rope(const float *x, const float *w, const int32_t *pos, int64_t hd, int64_t nh, int64_t T, int mode,
                        int threads) {
    fixture f;
    fixture_init(&f, threads, NULL);
    int64_t ne[3] = {hd, nh, T}, ne_p[1] = {T}, ne_w[1] = {hd};
    plumb_tensor *xt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne, (void *)x);
    plumb_tensor *pt = plumb_graph_leaf(&f.g, PLUMB_TYPE_I32, 1, ne_p, (void *)pos);
    plumb_tensor *wt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 1, ne_w, (void *)w);
    plumb_tensor *a = plumb_graph_rms_norm(&f.g, xt, wt, &(plumb_rms_norm_params){.eps = 1e-6f});
    plumb_tensor *c = plumb_graph_rope(&f.g, a, pt, NULL,
                                       &(plumb_rope_params){.mode = mode, .n_rot = (int)hd, .base = 10000.0f, .freq_scale = 1.0f});
    c->is_output = true;
    fixture_run(&f);
    float *out = malloc((size_t)(hd * nh * T) * sizeof *out);
    memcpy(out, c->data, (size_t)(hd * nh * T) * sizeof *out);
    fixture_free(&f);
    return out;
}

/* Batch invariance of the row ops: rms_norm (several rows at a time) and rope (angles shared
 * by the heads of a token) give each token the same bits alone as in a batch of any size, on
 * one thread or two, whatever row count each thread gets. */
TEST(rms_norm_and_rope_are_batch_invariant) {
    const int64_t hd = 64, nh = 5, T = 11;
    float *x = malloc((size_t)(hd * nh * T) * sizeof *x), w[64];
    int32_t pos[11];
    for (int64_t i = 0; i < hd * nh * T; i++) x[i] = frand() * ldexpf(1.0f, (int)(i % 11) - 5);
    for (int i = 0; i < hd; i++) w[i] = 1 + frand();
    for (int t = 0; t < T; t++) pos[t] = t * 37 + 3;
    for (int mode = 0; mode < 2; mode++)
        for (int threads = 1; threads <= 2; threads++) {
            float *all = norm_rope(x, w, pos, hd, nh, T, mode, threads);
            for (int64_t t = 0; t < T; t++) {
                float *one = norm_rope(x + t * hd * nh, w, pos + t, hd, nh, 1, mode, 1);
                CHECK(memcmp(one, all + t * hd * nh, (size_t)(hd * nh) * sizeof *one) == 0);
                free(one);
            }
            free(all);
        }
    free(x);
}

/* Attention over a cache of two sequences with grouped KV heads and a sliding window, against
 * a direct double-precision computation. The shapes cover both ways the work is split: items
 * of all query heads of a KV head (enough tokens), single (token, head) items (one token, or
 * more query heads per KV head than an item takes). */
TEST(attention_gqa_causal_and_sliding_window) {
    const int shapes[][3] = {{4, 2, 9}, {4, 1, 1}, {132, 2, 9}, {8, 8, 7}}; /* query heads, KV heads, tokens */
    const int hd = 16, n_ctx = 16;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int swa = 0; swa <= 3; swa += 3) {
            const int nh = shapes[si][0], nkv = shapes[si][1], T = shapes[si][2];
            plumb_kv_cache kv = {.n_layer = 1, .n_seq = 2, .n_ctx = n_ctx, .n_head = nh, .n_head_kv = nkv, .head_dim = hd};
            uint16_t *kc = calloc((size_t)(2 * n_ctx * nkv * hd), 2), *vc = calloc((size_t)(2 * n_ctx * nkv * hd), 2);
            kv.k = &kc;
            kv.v = &vc;
            float *q = malloc(sizeof(float) * (size_t)(T * nh * hd)), *k = malloc(sizeof(float) * (size_t)(T * nkv * hd)),
                  *v = malloc(sizeof(float) * (size_t)(T * nkv * hd));
            int32_t pos[16], seq[16]; /* sequence 0 at positions 0..5, then sequence 1 */
            for (int t = 0; t < T; t++) seq[t] = t < 6 ? 0 : 1, pos[t] = t < 6 ? t : t - 6;
            for (int i = 0; i < T * nh * hd; i++) q[i] = frand();
            for (int i = 0; i < T * nkv * hd; i++) k[i] = frand(), v[i] = frand();
            fixture f;
            fixture_init(&f, 2, NULL);
            int64_t ne_q[3] = {hd, nh, T}, ne_k[3] = {hd, nkv, T};
            plumb_tensor *qt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_q, q);
            plumb_tensor *kt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_k, k);
            plumb_tensor *vt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_k, v);
            plumb_tensor *o = plumb_graph_attn(
                &f.g, qt, kt, vt,
                &(plumb_attn_params){.kv = &kv, .layer = 0, .n_swa = swa, .pos = pos, .seq = seq, .scale = 0.25f});
            o->is_output = true;
            fixture_run(&f);
            for (int t = 0; t < T; t++)
                for (int h = 0; h < nh; h++) {
                    int hk = h / (nh / nkv);
                    double sc[16], mx = -1e300, sum = 0, out[16] = {0};
                    int lo = swa && pos[t] - swa + 1 > 0 ? pos[t] - swa + 1 : 0;
                    for (int j = lo; j <= pos[t]; j++) {
                        int tj = -1; /* the batch token holding (seq[t], j) */
                        for (int u = 0; u < T; u++)
                            if (seq[u] == seq[t] && pos[u] == j) tj = u;
                        double s = 0;
                        for (int d = 0; d < hd; d++) s += q[(t * nh + h) * hd + d] * k[(tj * nkv + hk) * hd + d];
                        sc[j] = s * 0.25;
                        mx = fmax(mx, sc[j]);
                    }
                    for (int j = lo; j <= pos[t]; j++) sum += exp(sc[j] - mx);
                    for (int j = lo; j <= pos[t]; j++) {
                        int tj = -1;
                        for (int u = 0; u < T; u++)
                            if (seq[u] == seq[t] && pos[u] == j) tj = u;
                        for (int d = 0; d < hd; d++) out[d] += exp(sc[j] - mx) / sum * v[(tj * nkv + hk) * hd + d];
                    }
                    for (int d = 0; d < hd; d++) CHECK_NEAR(((float *)o->data)[t * nh * hd + h * hd + d], out[d], 3e-3);
                }
            fixture_free(&f);
            free(kc), free(vc), free(q), free(k), free(v);
        }
}

/* Attention of a prompt's tokens together (tiles of tokens meeting each key row at once, over
 * the union of their spans) gives, bit for bit, what each token gives alone after the ones
 * before it (all threads on one item): with and without a sliding window (whose first position
 * then differs within a tile), a soft-cap, grouped KV heads, head sizes of the 512-bit paths. */
TEST(attention_is_batch_invariant) {
    const int shapes[][3] = {{4, 1, 256}, {8, 2, 64}, {2, 2, 80}}; /* query heads, KV heads, head size */
    enum { T = 11, N_CTX = 32 };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int variant = 0; variant < 4; variant++) {
            const int nh = shapes[si][0], nkv = shapes[si][1], hd = shapes[si][2];
            const int swa = variant & 1 ? 5 : 0;
            const float softcap = variant & 2 ? 30.0f : 0.0f;
            float *q = malloc(sizeof(float) * (size_t)(T * nh * hd)), *k = malloc(sizeof(float) * (size_t)(T * nkv * hd)),
                  *v = malloc(sizeof(float) * (size_t)(T * nkv * hd)), *out[2];
            for (int i = 0; i < T * nh * hd; i++) q[i] = frand() * 3.0f;
            for (int i = 0; i < T * nkv * hd; i++) k[i] = frand(), v[i] = frand();
            for (int mode = 0; mode < 2; mode++) { /* 0: all tokens in one batch; 1: one at a time */
                plumb_kv_cache kv = {.n_layer = 1, .n_seq = 1, .n_ctx = N_CTX, .n_head = nh, .n_head_kv = nkv, .head_dim = hd};
                uint16_t *kc = calloc((size_t)(N_CTX * nkv * hd), 2), *vc = calloc((size_t)(N_CTX * nkv * hd), 2);
                kv.k = &kc;
                kv.v = &vc;
                out[mode] = malloc(sizeof(float) * (size_t)(T * nh * hd));
                for (int t0 = 0; t0 < T; t0 += mode ? 1 : T) {
                    const int nt = mode ? 1 : T;
                    int32_t pos[T], seq[T];
                    for (int t = 0; t < nt; t++) pos[t] = t0 + t, seq[t] = 0;
                    fixture f;
                    fixture_init(&f, 2, NULL);
                    int64_t ne_q[3] = {hd, nh, nt}, ne_k[3] = {hd, nkv, nt};
                    plumb_tensor *qt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_q, q + (size_t)t0 * nh * hd);
                    plumb_tensor *kt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_k, k + (size_t)t0 * nkv * hd);
                    plumb_tensor *vt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_k, v + (size_t)t0 * nkv * hd);
                    plumb_tensor *o = plumb_graph_attn(&f.g, qt, kt, vt,
                                                       &(plumb_attn_params){.kv = &kv, .layer = 0, .n_swa = swa, .pos = pos,
                                                                            .seq = seq, .scale = 0.125f, .softcap = softcap});
                    o->is_output = true;
                    fixture_run(&f);
                    memcpy(out[mode] + (size_t)t0 * nh * hd, o->data, sizeof(float) * (size_t)(nt * nh * hd));
                    fixture_free(&f);
                }
                free(kc), free(vc);
            }
            for (int t = 0; t < T; t++)
                if (memcmp(out[0] + (size_t)t * nh * hd, out[1] + (size_t)t * nh * hd, sizeof(float) * (size_t)(nh * hd)) != 0)
                    plumb_test_fail(__FILE__, __LINE__, "heads %d/%d hd %d window %d softcap %g: token %d differs", nh, nkv,
                                    hd, swa, (double)softcap, t);
            free(q), free(k), free(v), free(out[0]), free(out[1]);
        }
}

/* Streams decoding together (the server's batches: one token of each sequence, interleaved,
 * after prompts of several sequences in one batch) give each token the bits it gets alone:
 * every token is its own item or part of a tile of its own sequence's run, whichever thread
 * takes it. */
TEST(attention_of_streams_together_is_each_streams_own) {
    const int shapes[][3] = {{4, 1, 256}, {8, 2, 64}}; /* query heads, KV heads, head size */
    enum { N_SEQ = 3, N_CTX = 32, MAX_T = 64 };
    /* batches of (sequence, position): prompts of 5, 7 and 3 tokens, four steps of one token a
     * stream, then two tokens of stream 2 around one of stream 0 */
    int32_t bseq[MAX_T], bpos[MAX_T], bend[16], nb = 0, T = 0, next[N_SEQ] = {0};
    const int prompt[N_SEQ] = {5, 7, 3};
    for (int sq = 0; sq < N_SEQ; sq++)
        for (int i = 0; i < prompt[sq]; i++) bseq[T] = sq, bpos[T++] = next[sq]++;
    bend[nb++] = T;
    for (int step = 0; step < 4; step++) {
        for (int sq = 0; sq < N_SEQ; sq++) bseq[T] = sq, bpos[T++] = next[sq]++;
        bend[nb++] = T;
    }
    const int last[3] = {2, 0, 2};
    for (int i = 0; i < 3; i++) bseq[T] = last[i], bpos[T++] = next[last[i]]++;
    bend[nb++] = T;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int threads = 1; threads <= 2; threads++) {
            const int nh = shapes[si][0], nkv = shapes[si][1], hd = shapes[si][2];
            float *q = malloc(sizeof(float) * (size_t)(T * nh * hd)), *k = malloc(sizeof(float) * (size_t)(T * nkv * hd)),
                  *v = malloc(sizeof(float) * (size_t)(T * nkv * hd)), *out[2];
            for (int i = 0; i < T * nh * hd; i++) q[i] = frand() * 3.0f;
            for (int i = 0; i < T * nkv * hd; i++) k[i] = frand(), v[i] = frand();
            for (int mode = 0; mode < 2; mode++) { /* 0: the batches; 1: one token at a time */
                plumb_kv_cache kv = {.n_layer = 1, .n_seq = N_SEQ, .n_ctx = N_CTX, .n_head = nh, .n_head_kv = nkv, .head_dim = hd};
                uint16_t *kc = calloc((size_t)(N_SEQ * N_CTX * nkv * hd), 2), *vc = calloc((size_t)(N_SEQ * N_CTX * nkv * hd), 2);
                kv.k = &kc;
                kv.v = &vc;
                out[mode] = malloc(sizeof(float) * (size_t)(T * nh * hd));
                for (int b = 0, t0 = 0; t0 < T; b++) {
                    const int t1 = mode ? t0 + 1 : bend[b], nt = t1 - t0;
                    fixture f;
                    fixture_init(&f, threads, NULL);
                    int64_t ne_q[3] = {hd, nh, nt}, ne_k[3] = {hd, nkv, nt};
                    plumb_tensor *qt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_q, q + (size_t)t0 * nh * hd);
                    plumb_tensor *kt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_k, k + (size_t)t0 * nkv * hd);
                    plumb_tensor *vt = plumb_graph_leaf(&f.g, PLUMB_TYPE_F32, 3, ne_k, v + (size_t)t0 * nkv * hd);
                    plumb_tensor *o = plumb_graph_attn(&f.g, qt, kt, vt,
                                                       &(plumb_attn_params){.kv = &kv, .layer = 0, .pos = bpos + t0,
                                                                            .seq = bseq + t0, .scale = 0.125f});
                    o->is_output = true;
                    fixture_run(&f);
                    memcpy(out[mode] + (size_t)t0 * nh * hd, o->data, sizeof(float) * (size_t)(nt * nh * hd));
                    fixture_free(&f);
                    t0 = t1;
                }
                free(kc), free(vc);
            }
            for (int t = 0; t < T; t++)
                if (memcmp(out[0] + (size_t)t * nh * hd, out[1] + (size_t)t * nh * hd, sizeof(float) * (size_t)(nh * hd)) != 0)
                    plumb_test_fail(__FILE__, __LINE__, "heads %d/%d hd %d, %d threads: token %d (stream %d, position %d) differs",
                                    nh, nkv, hd, threads, t, bseq[t], bpos[t]);
            free(q), free(k), free(v), free(out[0]), free(out[1]);
        }
}

/* Every set's activation quantizers give the generic set's bytes: random rows at scales from
 * subnormal to huge, rows whose values are all ties of the rounding, and blocks with zeros,
 * NaNs, infinities, a positive and a negative maximum of the same size (Q8_K keeps the first),
 * and the largest value at every position of a block. */
KERNEL_TEST(activation_quantizers_match_generic) {
    const plumb_kernel_set *all[KS_COUNT];
    kernel_sets(all);
    const plumb_kernel_set *ref = all[KS_GENERIC];
    const int acts[] = {PLUMB_ACT_Q8_0, PLUMB_ACT_Q8_1, PLUMB_ACT_Q8_K};
    const int64_t n = 2048;
    float *x = malloc((size_t)n * 4);
    const size_t cap = plumb__act_row_size(PLUMB_ACT_Q8_K, n) + plumb__act_row_size(PLUMB_ACT_Q8_1, n);
    uint8_t *want = malloc(cap), *got = malloc(cap);
    for (int si = KS_AVX2; si < KS_COUNT; si++) {
        if (!all[si]) continue;
        checked(si);
        for (int rep = 0; rep < 64; rep++) {
            const float scale = rep % 8 == 0 ? 1e-41f : rep % 8 == 1 ? 1e-30f : rep % 8 == 2 ? 1e30f : (float)(rep % 8) * 0.25f;
            for (int64_t i = 0; i < n; i++) x[i] = frand() * scale;
            if (rep == 3) /* each value is k + 1/2 after the scaling by 127 / 127 */
                for (int64_t i = 0; i < n; i++) x[i] = i % 32 == 0 ? 127.0f : (float)((int)(frand() * 126.0f)) + 0.5f;
            if (rep == 4) /* the maximum walks through every position of the block */
                for (int64_t i = 0; i < n; i++) x[i] = i % 256 == (i / 256) * 37 % 256 ? -2.0f : (float)(i % 256) * 1e-3f;
            if (rep >= 5 && rep < 16) {
                const int64_t b = (rep - 5) * 128 % n;
                switch (rep % 6) {
                case 0: memset(x + b, 0, 256 * 4); break;
                case 1: x[b + 3] = NAN, x[b + 200] = -NAN; break;
                case 2: x[b + 17] = INFINITY; break;
                case 3: x[b + 40] = 3.0f, x[b + 9] = -3.0f, x[b + 12] = 3.0f, x[b + 250] = 3.0f; break;
                case 4: for (int j = 0; j < 256; j++) x[b + j] = NAN; break;
                default: x[b + 100] = -INFINITY, x[b + 101] = NAN; break;
                }
            }
            for (size_t ai = 0; ai < sizeof acts / sizeof acts[0]; ai++) {
                const int act = acts[ai];
                const size_t bytes = plumb__act_row_size(act, n);
                memset(want, 0xA5, bytes), memset(got, 0x5A, bytes);
                ref->act_quantize[act](x, want, n);
                all[si]->act_quantize[act](x, got, n);
                for (size_t i = 0; i < bytes; i++)
                    if (want[i] != got[i]) {
                        plumb_test_fail(__FILE__, __LINE__, "%s act %d rep %d: byte %zu is 0x%02x, generic 0x%02x", all[si]->name,
                                        act, rep, i, got[i], want[i]);
                        break;
                    }
            }
        }
    }
    free(x), free(want), free(got);
}

/* Every SIMD kernel set against the generic reference, type by type, on odd row lengths:
 * the same integer block sums, so only float accumulation order may differ. */
KERNEL_TEST(simd_kernels_match_generic) {
    const plumb_kernel_set *all[KS_COUNT];
    kernel_sets(all);
    const plumb_kernel_set *ref = all[KS_GENERIC];
    const plumb_kernel_set *sets[] = {all[KS_AVX2], all[KS_AVX512VNNI]};
    if (!sets[0] && !sets[1]) PLUMB_TEST_SKIP("no SIMD kernel set on this CPU to compare with generic");
    checked(KS_GENERIC);
    for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
        if (!sets[si]) continue;
        checked(si == 0 ? KS_AVX2 : KS_AVX512VNNI);
        for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
            int type = all_types[ti];
            /* float types also on lengths that leave vector tails */
            const int64_t lens[] = {256, 1280, 2304, 1, 7, 33, 100, 257};
            const size_t n_lens = plumb_type_block_size(type) == 1 ? 8 : 3;
            for (size_t li = 0; li < n_lens; li++) {
                const int64_t n = lens[li];
                float *w = malloc((size_t)n * 4), *x = malloc((size_t)n * 4);
                uint64_t wb;
                plumb_type_row_bytes(type, n, &wb);
                void *wq = malloc(wb);
                int act = plumb__act_type(type);
                void *xq = malloc(plumb__act_row_size(act, n));
                for (int rep = 0; rep < 16; rep++) {
                    for (int64_t i = 0; i < n; i++) w[i] = frand() * (rep + 1), x[i] = frand() * (rep % 4 + 1);
                    if (rep == 15) memset(w, 0, (size_t)n * 4); /* zero blocks */
                    plumb_quantize_row(type, w, wq, n);
                    ref->act_quantize[act](x, xq, n);
                    float a = ref->vec_dot[type](n, wq, xq), b = sets[si]->vec_dot[type](n, wq, xq);
                    /* both sum the same exact block integers in float, in different orders:
                     * each of the n/32 (or fewer) additions rounds by at most 2^-24 of the
                     * running magnitude, bounded by the sum of |w x| over the row */
                    float *wd = malloc((size_t)n * 4);
                    plumb_dequantize_row(type, wq, wd, n);
                    double mag = 0.0;
                    for (int64_t i = 0; i < n; i++) mag += fabs((double)wd[i] * x[i]);
                    free(wd);
                    if (!(fabs((double)a - b) <= mag * (double)(n / 32 + 8) * 0x1p-23 + 1e-30))
                        plumb_test_fail(__FILE__, __LINE__, "%s %s n=%lld: %.9g vs generic %.9g", sets[si]->name,
                                        plumb_type_name(type), (long long)n, b, a);
                }
                free(w), free(x), free(wq), free(xq);
            }
        }
    }
}

/* A quantized weight row and 4 quantized activation rows (with their F32 block scales) of
 * type's formats, n elements; refilled with new random values by dot_case_fill (in some
 * repetitions one activation row is all zeros). */
typedef struct dot_case {
    int type, act;
    int64_t n;
    size_t xs;
    float *w, *x, *xsv;
    uint8_t *wq, *xq;
} dot_case;

#define DOT_CASE_PREP_BYTES 384 /* the most act_prep4 writes per block in any set */

static void dot_case_init(dot_case *d, int type, int64_t n) {
    uint64_t wb;
    plumb_type_row_bytes(type, n, &wb);
    d->type = type, d->n = n, d->act = plumb__act_type(type);
    d->xs = plumb__act_row_size(d->act, n);
    d->w = malloc((size_t)n * 4), d->x = malloc((size_t)n * 4), d->xsv = malloc((size_t)(n / 32) * DOT_CASE_PREP_BYTES);
    d->wq = malloc(wb), d->xq = malloc(4 * d->xs);
}

static void dot_case_fill(dot_case *d, const plumb_kernel_set *ks, int rep) {
    for (int64_t i = 0; i < d->n; i++) d->w[i] = frand() * (rep + 1);
    plumb_quantize_row(d->type, d->w, d->wq, d->n);
    for (int c = 0; c < 4; c++) {
        for (int64_t i = 0; i < d->n; i++) d->x[i] = frand() * (float)(c + rep + 1) * (rep % 3 == 2 && c == 1 ? 0.0f : 1.0f);
        ks->act_quantize[d->act](d->x, d->xq + (size_t)c * d->xs, d->n);
    }
    CHECK(ks->act4_block_bytes >= 128 && ks->act4_block_bytes <= DOT_CASE_PREP_BYTES);
    if (d->act == PLUMB_ACT_Q8_0) ks->act_prep4(d->xq, d->xs, d->n, d->xsv);
}

static void dot_case_free(dot_case *d) { free(d->w), free(d->x), free(d->xsv), free(d->wq), free(d->xq); }

/* The 4-row dot products give each row's one-row result bit for bit (the matmul uses either,
 * depending on the batch size, so this is what keeps results batch-invariant). */
KERNEL_TEST(four_row_kernels_equal_one_row_kernels) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    for (size_t si = 0; si < KS_COUNT; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        checked((int)si);
        for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
            int type = all_types[ti];
            if (!ks->vec_dot4[type]) continue;
            dot_case d;
            dot_case_init(&d, type, 256 * 5);
            for (int rep = 0; rep < 8; rep++) {
                dot_case_fill(&d, ks, rep);
                float o4[4];
                ks->vec_dot4[type](d.n, d.wq, d.xq, d.xs, d.xsv, o4);
                if (ks->vec_dot4_lanes[type]) { /* the lanes, summed by hsum8, are the four sums */
                    float lanes[32], sums[4];
                    ks->vec_dot4_lanes[type](d.n, d.wq, d.xq, d.xs, d.xsv, lanes);
                    ks->hsum8(lanes, 4, sums);
                    CHECK(memcmp(sums, o4, sizeof sums) == 0);
                }
                if (ks->vec_dot2[type]) { /* two different weight rows, in both orders */
                    uint64_t wb;
                    plumb_type_row_bytes(type, d.n, &wb);
                    uint8_t *w2 = malloc(wb);
                    plumb_quantize_row(type, d.x, w2, d.n); /* the last activation row's values */
                    float o2[2], z[2];
                    ks->vec_dot2[type](d.n, d.wq, w2, d.xq, o2);
                    ks->vec_dot2[type](d.n, w2, d.wq, d.xq + d.xs, z);
                    const float one0 = ks->vec_dot[type](d.n, d.wq, d.xq), one1 = ks->vec_dot[type](d.n, d.wq, d.xq + d.xs);
                    const float other0 = ks->vec_dot[type](d.n, w2, d.xq), other1 = ks->vec_dot[type](d.n, w2, d.xq + d.xs);
                    CHECK(memcmp(&o2[0], &one0, 4) == 0 && memcmp(&o2[1], &other0, 4) == 0);
                    CHECK(memcmp(&z[0], &other1, 4) == 0 && memcmp(&z[1], &one1, 4) == 0);
                    free(w2);
                }
                for (int c = 0; c < 4; c++) {
                    float one = ks->vec_dot[type](d.n, d.wq, d.xq + (size_t)c * d.xs);
                    if (memcmp(&one, &o4[c], 4) != 0)
                        plumb_test_fail(__FILE__, __LINE__, "%s %s row %d: 4-row %.9g vs one-row %.9g", ks->name,
                                        plumb_type_name(type), c, o4[c], one);
                }
            }
            dot_case_free(&d);
        }
    }
}

/* Every set's F16 conversion gives plumb__fp32_to_fp16's bits (NaNs included) and its rounding
 * that value: on a stride through all float
 * bit patterns, and at and next to every midpoint between two neighbouring halves (the ties,
 * which go to the even one), with odd lengths for the vector tails. */
KERNEL_TEST(round_f16_matches_the_reference_conversion) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    const size_t cap = 1 << 20;
    float *x = malloc(cap * sizeof *x), *y = malloc(cap * sizeof *y);
    size_t n = 0;
    for (uint64_t b = 0; b < 0x100000000ull && n < cap; b += 4099) {
        const uint32_t u = (uint32_t)b;
        memcpy(&x[n++], &u, 4);
    }
    for (uint32_t h = 0; h < 0x7c00 && n + 6 <= cap; h++) { /* positive finite halves and their negatives */
        const float lo = plumb__f16_table[h], hi = plumb__f16_table[h + 1], mid = lo + (hi - lo) * 0.5f;
        const float v[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++) x[n++] = v[k], x[n++] = -v[k];
    }
    for (size_t si = 0; si < KS_COUNT; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        checked((int)si);
        uint16_t *h = malloc(n * sizeof *h);
        ks->f32_to_f16(x + 1, h + 1, (int64_t)n - 1);
        for (size_t i = 1; i < n; i++)
            if (h[i] != plumb__fp32_to_fp16(x[i]))
                plumb_test_fail(__FILE__, __LINE__, "%s f32_to_f16(%a) = 0x%04x, want 0x%04x", ks->name, (double)x[i], h[i],
                                plumb__fp32_to_fp16(x[i]));
        free(h);
        ks->round_f16(x + 1, y + 1, (int64_t)n - 1);
        for (size_t i = 1; i < n; i++) {
            const float want = plumb__f16_table[plumb__fp32_to_fp16(x[i])];
            if (memcmp(&want, &y[i], 4) != 0 && !(isnan(want) && isnan(y[i])))
                plumb_test_fail(__FILE__, __LINE__, "%s round_f16(%a) = %a, want %a", ks->name, (double)x[i], (double)y[i],
                                (double)want);
        }
    }
    free(x), free(y);
}

/* The value product by its definition: position by position into 64 lanes (lane j % 64, its
 * first position by a product), unreached lanes zero, the fold of attn_dot. */
static void pv_by_definition(const float *p, size_t ps, int nh, const uint16_t *v, size_t vs, int32_t first,
                             int32_t pos, int64_t hd, float *out, size_t os) {
    float *lane = calloc(64 * (size_t)hd, sizeof *lane);
    for (int i = 0; i < nh; i++) {
        memset(lane, 0, 64 * (size_t)hd * sizeof *lane);
        for (int32_t j = first; j <= pos; j++)
            for (int64_t d = 0; d < hd; d++) {
                float *l = lane + (size_t)(j % 64) * (size_t)hd + d;
                const float w = p[(size_t)i * ps + (size_t)(j - first)], x = plumb__f16_table[v[(size_t)j * vs + (size_t)d]];
                *l = j - first < 64 ? w * x : fmaf(w, x, *l);
            }
        for (int64_t d = 0; d < hd; d++) {
            float r[16];
            for (int l = 0; l < 16; l++)
                r[l] = (lane[(size_t)l * hd + d] + lane[(size_t)(32 + l) * hd + d]) +
                       (lane[(size_t)(16 + l) * hd + d] + lane[(size_t)(48 + l) * hd + d]);
            out[(size_t)i * os + (size_t)d] = plumb__sum16(r);
        }
    }
    free(lane);
}

/* A row's softmax (attn_softmax) of every set equals its definition bit for bit: spans that
 * start and end on and off blocks of 16 and vector widths, scores of every size, equal zeros of
 * both signs as the maximum, infinities and NaN among the scores. */
KERNEL_TEST(attention_softmax_matches_generic) {
    const plumb_kernel_set *all[KS_COUNT];
    kernel_sets(all);
    enum { N = 300 };
    float base[N], a[N], b[N];
    for (int rep = 0; rep < 6; rep++)
        for (int32_t first = 0; first < 40; first += 7)
            for (int32_t pos = first; pos < N; pos += 13) {
                for (int i = 0; i < N; i++) base[i] = frand() * (rep < 2 ? 8.0f : 0.5f);
                if (rep == 2) base[(pos - first) / 2] = 0.0f, base[pos - first] = -0.0f; /* zeros as the maximum */
                if (rep == 2)
                    for (int i = 0; i < N; i++) base[i] = base[i] > 0.0f ? -base[i] : base[i];
                if (rep == 3) base[(pos - first) / 3] = NAN;
                if (rep == 4) base[(pos - first) / 2] = INFINITY;
                if (rep == 5) base[(pos - first) / 2] = -INFINITY;
                /* the definition: the maximum, the generic exponentials and sum, scaled, rounded */
                memcpy(a, base, sizeof a);
                float mx = -INFINITY;
                for (int32_t q = 0; q <= pos - first; q++) mx = a[q] > mx ? a[q] : mx;
                const float inv = (float)(1.0 / all[KS_GENERIC]->attn_exp(a, first, pos, mx, NULL));
                for (int32_t q = 0; q <= pos - first; q++) a[q] = plumb__f16_table[plumb__fp32_to_fp16(a[q] * inv)];
                for (int k = 0; k < KS_COUNT; k++) {
                    if (!all[k]) continue;
                    checked(k);
                    memcpy(b, base, sizeof b);
                    all[k]->attn_softmax(b, first, pos);
                    for (int32_t q = 0; q <= pos - first; q++)
                        if (memcmp(&a[q], &b[q], 4) != 0 && !(a[q] != a[q] && b[q] != b[q])) {
                            plumb_test_fail(__FILE__, __LINE__, "%s attn_softmax %d..%d rep %d position %d: %a, want %a",
                                            ks_label[k], first, pos, rep, first + q, (double)b[q], (double)a[q]);
                            break;
                        }
                    CHECK(memcmp(b + (pos - first + 1), base + (pos - first + 1), sizeof(float) * (size_t)(N - (pos - first + 1))) == 0);
                }
            }
}

/* Every set's attention products give the reference bits: F16 dot products (against the
 * generic set) with lengths that do and do not divide into 64-element steps; value products
 * (every set, against their definition) for 1 to 6 heads, head sizes that do and do not divide
 * into the kernels' chunks, fewer and more positions than lanes, windows that start anywhere. */
KERNEL_TEST(attention_kernels_match_generic) {
    const plumb_kernel_set *ksets[KS_COUNT];
    kernel_sets(ksets);
    const plumb_kernel_set *g = ksets[KS_GENERIC];
    const plumb_kernel_set *sets[] = {ksets[KS_AVX2], ksets[KS_AVX512VNNI]};
    const int64_t lens[] = {1, 40, 64, 80, 100, 128, 256, 300};
    float q[300];
    uint16_t k[300];
    for (size_t si = 0; si < 2; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        for (int rep = 0; rep < 200; rep++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                const int64_t n = lens[li];
                for (int64_t i = 0; i < n; i++) {
                    q[i] = plumb__f16_table[plumb__fp32_to_fp16(frand() * ldexpf(1.0f, rep % 9 - 4))];
                    k[i] = plumb__fp32_to_fp16(frand() * ldexpf(1.0f, (int)(i % 7) - 3));
                }
                const float a = g->attn_dot(q, k, n), b = ks->attn_dot(q, k, n);
                if (memcmp(&a, &b, 4) != 0)
                    plumb_test_fail(__FILE__, __LINE__, "%s attn_dot n=%lld: %a vs generic %a", ks->name, (long long)n,
                                    (double)b, (double)a);
            }
    }
    /* softmax exponentials: every set gives the scalar plumb__exp_poly's bits and the generic
     * set's sum, over spans that start and end inside and on block edges, with arguments from
     * 0 down past the underflow, and infinities and NaN */
    {
        enum { EN = 300 };
        float base[EN], ea[EN], eb[EN];
        for (int i = 0; i < EN; i++) base[i] = -fabsf(frand()) * (i % 50 < 10 ? ldexpf(1.0f, i % 9) : 3.0f);
        base[3] = -INFINITY, base[290] = NAN, base[77] = -150.0f, base[78] = -87.5f, base[79] = -103.9f, base[80] = 0.0f;
        for (int i = 81; i < 112; i++) base[i] = -86.0f - 0.6321f * (float)(i - 81); /* results through the subnormals */
        const int32_t espans[][2] = {{0, 0}, {0, 15}, {0, 16}, {3, 40}, {16, 31}, {17, 200}, {5, 299}, {100, 115}};
        for (size_t si = 0; si < 2; si++) {
            const plumb_kernel_set *ks = sets[si];
            if (!ks) continue;
            for (size_t sp = 0; sp < sizeof espans / sizeof espans[0]; sp++)
                for (int mi = 0; mi < 3; mi++) {
                    const int32_t first = espans[sp][0], pos = espans[sp][1];
                    const float mx = mi == 0 ? 0.0f : mi == 1 ? 2.5f : 200.0f;
                    memcpy(ea, base, sizeof ea), memcpy(eb, base, sizeof eb);
                    const double sa = g->attn_exp(ea, first, pos, mx, NULL), sb = ks->attn_exp(eb, first, pos, mx, NULL);
                    CHECK(memcmp(&sa, &sb, sizeof sa) == 0 || (pos - first >= 290 && isnan(sa) && isnan(sb)));
                    for (int32_t j = 0; j <= pos - first; j++) {
                        const float want = plumb__exp_poly(base[j] - mx);
                        if (memcmp(&eb[j], &want, 4) != 0 && !(isnan(want) && isnan(eb[j])))
                            plumb_test_fail(__FILE__, __LINE__, "%s attn_exp(%a - %a) = %a, want %a", ks->name, (double)base[j],
                                            (double)mx, (double)eb[j], (double)want);
                    }
                    CHECK(memcmp(ea + (pos - first + 1), base + (pos - first + 1), sizeof(float) * (size_t)(EN - (pos - first + 1))) == 0);
                    /* the block sums: added in double in order, they are the returned sum, and
                     * a span cut at a multiple of 16 gives the same blocks in two calls */
                    float bs[EN / 16 + 2], bs2[EN / 16 + 2];
                    memcpy(eb, base, sizeof eb);
                    const double sc = ks->attn_exp(eb, first, pos, mx, bs);
                    const int32_t nb = pos / 16 - first / 16 + 1;
                    double tot = 0.0;
                    for (int32_t b = 0; b < nb; b++) tot += (double)bs[b];
                    CHECK(memcmp(&tot, &sc, sizeof tot) == 0 || (isnan(tot) && isnan(sc)));
                    const int32_t cut = (first / 16 + 1) * 16; /* the second part's first position */
                    if (cut <= pos) {
                        memcpy(ea, base, sizeof ea);
                        ks->attn_exp(ea, first, cut - 1, mx, bs2);
                        ks->attn_exp(ea + (cut - first), cut, pos, mx, bs2 + 1);
                        CHECK(memcmp(bs2, bs, sizeof(float) * (size_t)nb) == 0);
                        CHECK(memcmp(ea, eb, sizeof(float) * (size_t)(pos - first + 1)) == 0);
                    }
                }
        }
    }
    const plumb_kernel_set *const *all = ksets; /* the value products: generic too */
    const int64_t hds[] = {256, 64, 8, 24, 40, 100, 3};
    /* spans past 256 positions take the value kernels more than one pass over the lanes */
    const int32_t spans[][2] = {{0, 0},   {0, 5},     {0, 63},   {0, 64},    {0, 199}, {7, 7},
                                {7, 70},  {61, 190},  {130, 135}, {0, 255},  {0, 256}, {0, 1099},
                                {100, 1050}, {300, 555}, {511, 1023}};
    enum { NPOS = 1700, PS = 1700, MAXHD = 256, MAXH = 6, NT = PLUMB_PV_TOKENS };
    const int nspans = (int)(sizeof spans / sizeof spans[0]);
    /* tiles of a prompt's tokens (the first's position, the window; 0: none): the long spans
     * that the AVX-512 set (8 or more of a lane's steps) and the AVX2 set (24) lay out lane by
     * lane first */
    const int32_t prompts[][2] = {{1096, 0}, {900, 512}, {1060, 700}, {1000, 444}, {1690, 0}, {1650, 1580}};
    const int nprompts = (int)(sizeof prompts / sizeof prompts[0]);
    uint16_t *v = malloc((size_t)NPOS * 300 * sizeof *v); /* rows of 300 values, heads' pieces inside */
    float *p = malloc((size_t)NT * MAXH * PS * sizeof *p), *want = malloc(sizeof(float) * NT * MAXH * MAXHD),
          *got = malloc(sizeof(float) * NT * MAXH * MAXHD);
    float *work = aligned_alloc(64, (plumb__pv_work_floats(NPOS) * sizeof(float) + 63) / 64 * 64);
    for (size_t i = 0; i < (size_t)NPOS * 300; i++) v[i] = plumb__fp32_to_fp16(frand() * ldexpf(1.0f, (int)(i % 5) - 2));
    for (size_t i = 0; i < (size_t)NT * MAXH * PS; i++) p[i] = plumb__f16_table[plumb__fp32_to_fp16(fabsf(frand()) * 0.1f)];
    for (size_t si = 0; si < KS_COUNT; si++)
        if (all[si]) checked((int)si);
    for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++)
        for (int sp = 0; sp < nspans + nprompts; sp++) {
            const int64_t hd = hds[hi];
            const uint16_t *vh = v + 300 - hd; /* head piece at the end of the row */
            int32_t span[NT][2];
            for (int t = 0; t < NT; t++) { /* and each token's sums by the definition, every head */
                if (sp < nspans) /* a span of the table, each token another */
                    span[t][0] = spans[(sp + 4 * t) % nspans][0], span[t][1] = spans[(sp + 4 * t) % nspans][1];
                else { /* a prompt's consecutive tokens, attending all positions or a window */
                    const int32_t *pr = prompts[sp - nspans];
                    span[t][1] = pr[0] + t;
                    span[t][0] = pr[1] && span[t][1] - pr[1] + 1 > 0 ? span[t][1] - pr[1] + 1 : 0;
                }
                pv_by_definition(p + (size_t)t * MAXH * PS, PS, MAXH, vh, 300, span[t][0], span[t][1], hd,
                                 want + (size_t)t * MAXH * MAXHD, MAXHD);
            }
            for (size_t si = 0; si < KS_COUNT; si++) {
                const plumb_kernel_set *ks = all[si];
                if (!ks) continue;
                for (int nh = 1; nh <= MAXH; nh++)
                    for (int nt = 1; nt <= NT; nt++) { /* one token, and tiles of tokens of other spans */
                        plumb_attn_pv_row rows[NT];
                        for (int t = 0; t < nt; t++)
                            rows[t] = (plumb_attn_pv_row){.p = p + (size_t)t * MAXH * PS, .first = span[t][0], .pos = span[t][1],
                                                          .out = got + (size_t)t * MAXH * MAXHD};
                        memset(got, 0xff, sizeof(float) * NT * MAXH * MAXHD);
                        ks->attn_pv(rows, nt, nh, PS, vh, 300, hd, MAXHD, work);
                        for (int t = 0; t < nt; t++)
                            for (int i = 0; i < nh; i++)
                                if (memcmp(want + ((size_t)t * MAXH + (size_t)i) * MAXHD, got + ((size_t)t * MAXH + (size_t)i) * MAXHD,
                                           (size_t)hd * sizeof *got) != 0)
                                    plumb_test_fail(__FILE__, __LINE__,
                                                    "%s attn_pv hd=%lld heads=%d, token %d of %d: positions %d..%d, head %d differs",
                                                    ks->name, (long long)hd, nh, t, nt, rows[t].first, rows[t].pos, i);
                    }
            }
        }
    free(v), free(p), free(want), free(got), free(work);
}

/* Every set's scores of many queries against many keys (attn_qk) are attn_dot's, times the
 * scale, bit for bit: 1 to 9 queries (whole groups of the kernels' and a rest), key counts
 * below, at and past their blocks, head sizes in whole 64-element steps and not, rows apart
 * by strides wider than a head. */
KERNEL_TEST(attention_scores_match_attn_dot) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    enum { QS = 330, KS = 340, MAXQ = 9, MAXK = 37, OS = 40 };
    const int64_t hds[] = {256, 64, 128, 192, 320, 100, 3};
    float *q = malloc(sizeof(float) * QS * MAXQ), out[MAXQ * OS];
    uint16_t *k = malloc(sizeof(uint16_t) * KS * MAXK);
    for (int i = 0; i < QS * MAXQ; i++) q[i] = plumb__f16_table[plumb__fp32_to_fp16(frand() * ldexpf(1.0f, i % 9 - 4))];
    for (int i = 0; i < KS * MAXK; i++) k[i] = plumb__fp32_to_fp16(frand() * ldexpf(1.0f, i % 7 - 3));
    const float scale = 0.0625f * 1.1f;
    for (size_t si = 0; si < KS_COUNT; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        checked((int)si);
        for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++)
            for (int nq = 1; nq <= MAXQ; nq += 2)
                for (int32_t nk = 1; nk <= MAXK; nk += 9) {
                    const int64_t hd = hds[hi];
                    memset(out, 0xff, sizeof out);
                    ks->attn_qk(q, QS, nq, k, KS, nk, hd, scale, out, OS);
                    for (int i = 0; i < nq; i++)
                        for (int32_t j = 0; j < nk; j++) {
                            const float want = ks->attn_dot(q + (size_t)i * QS, k + (size_t)j * KS, hd) * scale;
                            if (memcmp(&want, &out[i * OS + j], 4) != 0)
                                plumb_test_fail(__FILE__, __LINE__, "%s attn_qk hd=%lld query %d of %d key %d of %d: %a, want %a",
                                                ks->name, (long long)hd, i, nq, j, nk, (double)out[i * OS + j], (double)want);
                        }
                    for (int i = 0; i < nq; i++) /* nothing written past the keys */
                        for (int32_t j = nk; j < OS; j++) CHECK(isnan(out[i * OS + j]));
                }
    }
    free(q), free(k);
}

/* Weight rows widened (plumb__widen: legacy types, Q4_K, Q6_K) give, through every set's wide kernels (one-row
 * and four-row), the original type's one-row results bit for bit: large batches dot the
 * widened rows, small ones the originals. */
/* hsum8 sums each set of eight lanes in the kernels' order, for any count (whole groups of
 * eight sets and a tail), on values whose sums depend on that order. */
KERNEL_TEST(hsum8_follows_the_kernels_order) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    float x[8 * 21], got[21];
    for (size_t si = 0; si < KS_COUNT; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        checked((int)si);
        for (int rep = 0; rep < 50; rep++)
            for (int64_t n = 1; n <= 21; n += 4) {
                for (int i = 0; i < 8 * n; i++) x[i] = frand() * ldexpf(1.0f, (i * 7 + rep) % 40 - 20);
                ks->hsum8(x, n, got);
                for (int64_t i = 0; i < n; i++) {
                    const float *v = x + 8 * i;
                    const float want = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
                    if (memcmp(&want, &got[i], 4) != 0)
                        plumb_test_fail(__FILE__, __LINE__, "%s hsum8 n=%lld set %lld: %a, want %a", ks->name, (long long)n,
                                        (long long)i, (double)got[i], (double)want);
                }
            }
    }
}

KERNEL_TEST(widened_rows_give_the_same_dots) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    const int types[] = {PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q6_K};
    for (size_t si = 0; si < KS_COUNT; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        checked((int)si);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const int type = types[ti];
            CHECK(ks->wide_dot[type] != NULL);
            const int64_t step = type == PLUMB_TYPE_Q4_K || type == PLUMB_TYPE_Q6_K ? 256 : 32;
            for (int64_t n = step; n <= step * 41; n += step * 8) {
                dot_case d;
                dot_case_init(&d, type, n);
                uint8_t *wide = malloc(plumb__wide_row_size(type, n));
                for (int rep = 0; rep < 6; rep++) {
                    dot_case_fill(&d, ks, rep);
                    plumb__widen(type, d.wq, wide, n);
                    { /* the set's widen writes the same bytes */
                        const size_t wsz = plumb__wide_row_size(type, n);
                        uint8_t *mine = malloc(wsz);
                        ks->widen(type, d.wq, mine, n);
                        CHECK(memcmp(mine, wide, wsz) == 0);
                        free(mine);
                    }
                    float o4[4];
                    if (ks->wide_dot4[type]) ks->wide_dot4[type](n, wide, d.xq, d.xs, d.xsv, o4);
                    if (ks->wide_dot4_lanes[type]) { /* the lanes, summed by hsum8, are the 4-row kernel's results */
                        float lanes[32], sums[4];
                        ks->wide_dot4_lanes[type](n, wide, d.xq, d.xs, d.xsv, lanes);
                        ks->hsum8(lanes, 4, sums);
                        CHECK(ks->wide_dot4[type] != NULL && memcmp(sums, o4, sizeof sums) == 0);
                        if (ks->wide_dot4x2_lanes[type]) { /* two different rows at once: each row's lanes */
                            const size_t wsz = plumb__wide_row_size(type, n);
                            uint64_t wb;
                            plumb_type_row_bytes(type, n, &wb);
                            uint8_t *w2 = malloc(wb), *pair = malloc(2 * wsz);
                            plumb_quantize_row(type, d.x, w2, n); /* the last activation row's values */
                            memcpy(pair, wide, wsz);
                            ks->widen(type, w2, pair + wsz, n);
                            float l2[64], l1[32];
                            ks->wide_dot4x2_lanes[type](n, pair, wsz, d.xq, d.xs, d.xsv, l2);
                            CHECK(memcmp(l2, lanes, sizeof lanes) == 0);
                            ks->wide_dot4_lanes[type](n, pair + wsz, d.xq, d.xs, d.xsv, l1);
                            CHECK(memcmp(l2 + 32, l1, sizeof l1) == 0);
                            free(w2), free(pair);
                        }
                    }
                    for (int c = 0; c < 4; c++) {
                        const uint8_t *xc = d.xq + (size_t)c * d.xs;
                        const float want = ks->vec_dot[type](n, d.wq, xc), got = ks->wide_dot[type](n, wide, xc);
                        if (memcmp(&want, &got, 4) != 0)
                            plumb_test_fail(__FILE__, __LINE__, "%s %s n=%lld: widened %.9g vs %.9g", ks->name,
                                            plumb_type_name(type), (long long)n, got, want);
                        if (ks->wide_dot4[type] && memcmp(&o4[c], &want, 4) != 0)
                            plumb_test_fail(__FILE__, __LINE__, "%s %s n=%lld col %d: widened 4-row %.9g vs %.9g",
                                            ks->name, plumb_type_name(type), (long long)n, c, o4[c], want);
                    }
                }
                free(wide);
                dot_case_free(&d);
            }
        }
    }
}

/* The register-tiled GEMM gives the set's own one-row vec_dot (the x86 reference arithmetic,
 * which vnni_kernels_equal_avx2_kernels ties to the AVX2 set's) of every (weight row,
 * activation row) pair bit for bit, and the block-sum GEMM the generic set's, for every type the
 * set has one for: any number of rows in a
 * packed group, any number of activation rows (whole tiles and the rest), quantized rows and
 * rows of random bytes (every scale and code a file may hold, -128 bytes of Q8_0 and Q6_K
 * scales among them; the F16 scales kept finite), all-zero activation rows. */
KERNEL_TEST(gemm_equals_one_row_kernels) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    bool any = false;
    const int types[] = {PLUMB_TYPE_Q4_0, PLUMB_TYPE_Q5_0, PLUMB_TYPE_Q8_0, PLUMB_TYPE_Q4_K, PLUMB_TYPE_Q6_K};
    for (size_t si = 1; si < KS_COUNT; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const int type = types[ti], act = plumb__act_type(type);
            const plumb_gemm_ops *g = ks->gemm[type];
            if (!g) continue;
            any = true;
            checked((int)si);
            const plumb_type_traits *tr = plumb__type_traits(type);
            const int R = g->rows;
            CHECK(R == PLUMB_GEMM_ROWS || R == PLUMB_GEMM8_ROWS);
            for (int64_t n = g->block; n <= g->block * 12; n += g->block * (g->block == 32 ? 11 : 3)) {
                uint64_t wb;
                plumb_type_row_bytes(type, n, &wb);
                const size_t wrow = plumb__wide_row_size(type, n), xs = plumb__act_row_size(act, n);
                const size_t prow = (size_t)(n / g->block) * g->act_bytes;
                enum { T = 29 };
                uint8_t *wq = malloc(wb * PLUMB_GEMM_ROWS), *wide = malloc(wrow * PLUMB_GEMM_ROWS + 1);
                uint8_t *packed = malloc((size_t)(n / g->block) * g->pack_bytes), *xq = malloc(xs * T), *xp = malloc(prow * T);
                void *scratch = aligned_alloc(64, ((size_t)(n / g->block) * g->run_bytes + 64) / 64 * 64);
                float *f = malloc((size_t)n * 4), got[T * PLUMB_GEMM_ROWS];
                for (int rep = 0; rep < 6; rep++) {
                    for (int r = 0; r < R; r++) {
                        uint8_t *row = wq + (size_t)r * wb;
                        for (int64_t i = 0; i < n; i++) f[i] = frand() * (float)(r + 1) * (rep + 1);
                        plumb_quantize_row(type, f, row, n);
                        if (rep >= 3) /* random bytes, then finite F16 scales where the type keeps them */
                            for (int64_t b = 0; b < (int64_t)wb; b++) {
                                const int64_t o = b % (int64_t)tr->block_bytes;
                                const bool scale = type == PLUMB_TYPE_Q4_K ? o < 4 : type == PLUMB_TYPE_Q6_K ? o >= 208 : o < 2;
                                if (!scale) row[b] = (uint8_t)(frand() * 128.0f + 128.0f);
                            }
                        if (rep == 5) /* the largest sums: every code and sub-block scale all ones, against -128s */
                            for (int64_t b = 0; b < (int64_t)wb; b++) {
                                const int64_t o = b % (int64_t)tr->block_bytes;
                                const bool f16 = type == PLUMB_TYPE_Q4_K ? o < 4 : type == PLUMB_TYPE_Q6_K ? o >= 208 : o < 2;
                                if (!f16) row[b] = 0xFF;
                            }
                        if (type == PLUMB_TYPE_Q8_0 && rep == 1) /* some -128 weights */
                            for (int64_t i = 0; i < n / 32; i++) row[(size_t)i * 34 + 2 + (size_t)(r + i) % 32] = 0x80;
                        if (g->wide) ks->widen(type, row, wide + (size_t)r * wrow, n);
                    }
                    for (int t = 0; t < T; t++) {
                        for (int64_t i = 0; i < n; i++) f[i] = rep == 5 ? -1.0f : t == 2 && rep == 2 ? 0.0f : frand() * (float)(t + 1);
                        ks->act_quantize[act](f, xq + (size_t)t * xs, n);
                        g->prep(xq + (size_t)t * xs, xp + (size_t)t * prow, n);
                    }
                    const int nrows_cases[] = {R, 5, 1};
                    for (size_t ni = 0; ni < 3; ni++) {
                        const int nrows = nrows_cases[ni];
                        if (g->wide)
                            g->pack(wide, wrow, nrows, packed, n);
                        else
                            g->pack(wq, wb, nrows, packed, n);
                        if (g->keep) { /* the kept layout: expanded, the packed bytes; run, the same results */
                            const size_t pb = (size_t)(n / g->block) * g->pack_bytes;
                            uint8_t *kept = malloc((size_t)(n / g->block) * g->keep_bytes), *unkept = malloc(pb);
                            g->keep(wq, wb, nrows, kept, n);
                            if (g->unkeep) {
                                g->unkeep(kept, unkept, n);
                                if (memcmp(unkept, packed, pb) != 0)
                                    plumb_test_fail(__FILE__, __LINE__, "%s %s n=%lld rows=%d: the kept layout expands to other bytes",
                                                    ks->name, plumb_type_name(type), (long long)n, nrows);
                            }
                            /* its own activation form where it has one */
                            const size_t kprow = (size_t)(n / g->block) * (g->prep_kept ? g->act_kept_bytes : g->act_bytes);
                            uint8_t *kxp = malloc(kprow * T);
                            for (int t = 0; t < T; t++) (g->prep_kept ? g->prep_kept : g->prep)(xq + (size_t)t * xs, kxp + (size_t)t * kprow, n);
                            for (int64_t tt = 1; tt <= T; tt += tt < 9 ? 1 : 20) {
                                for (size_t i = 0; i < sizeof got / sizeof got[0]; i++) got[i] = -1.0f;
                                g->run_kept(n, kept, kxp, kprow, tt, got, (size_t)R, nrows, scratch);
                                for (int t = 0; t < tt; t++)
                                    for (int r = 0; r < R; r++) {
                                        const float v = got[t * R + r];
                                        const float want = r >= nrows ? -1.0f : ks->vec_dot[type](n, wq + (size_t)r * wb, xq + (size_t)t * xs);
                                        if (memcmp(&want, &v, 4) != 0)
                                            plumb_test_fail(__FILE__, __LINE__, "%s kept gemm %s n=%lld rows=%d T=%lld (%d, %d): %a, want %a",
                                                            ks->name, plumb_type_name(type), (long long)n, nrows, (long long)tt, r, t,
                                                            (double)v, (double)want);
                                    }
                            }
                            free(kept), free(unkept), free(kxp);
                        }
                        for (int64_t tt = 1; tt <= T; tt += 3) {
                            for (size_t i = 0; i < sizeof got / sizeof got[0]; i++) got[i] = -1.0f;
                            g->run(n, packed, xp, prow, tt, got, (size_t)R, nrows, scratch);
                            for (int t = 0; t < tt; t++)
                                for (int r = 0; r < R; r++) {
                                    const float v = got[t * R + r];
                                    if (r >= nrows) { /* rows past nrows are not written */
                                        CHECK(v == -1.0f);
                                        continue;
                                    }
                                    const float want = ks->vec_dot[type](n, wq + (size_t)r * wb, xq + (size_t)t * xs);
                                    if (memcmp(&want, &v, 4) != 0)
                                        plumb_test_fail(__FILE__, __LINE__, "%s gemm %s n=%lld rows=%d T=%lld rep %d (%d, %d): %a, want %a",
                                                        ks->name, plumb_type_name(type), (long long)n, nrows, (long long)tt, rep,
                                                        r, t, (double)v, (double)want);
                                }
                            /* the block-sum GEMM (its own packing where it has one): the generic set's results */
                            const plumb_gemm_ops *gs = ks->gemm_sums[type];
                            if (!gs) continue;
                            CHECK(gs->rows == R && gs->wide == g->wide);
                            checked(KS_GENERIC);
                            const size_t sprow = (size_t)(n / gs->block) * gs->act_bytes;
                            uint8_t *spacked = malloc((size_t)(n / gs->block) * gs->pack_bytes), *sxp = malloc(sprow * T);
                            if (gs->wide)
                                gs->pack(wide, wrow, nrows, spacked, n);
                            else
                                gs->pack(wq, wb, nrows, spacked, n);
                            for (int t = 0; t < tt; t++) gs->prep(xq + (size_t)t * xs, sxp + (size_t)t * sprow, n);
                            for (size_t i = 0; i < sizeof got / sizeof got[0]; i++) got[i] = -1.0f;
                            gs->run(n, spacked, sxp, sprow, tt, got, (size_t)R, nrows, scratch);
                            free(spacked), free(sxp);
                            for (int t = 0; t < tt; t++)
                                for (int r = 0; r < R; r++) {
                                    const float v = got[t * R + r];
                                    if (r >= nrows) {
                                        CHECK(v == -1.0f);
                                        continue;
                                    }
                                    const float want = sets[KS_GENERIC]->vec_dot[type](n, wq + (size_t)r * wb, xq + (size_t)t * xs);
                                    if (memcmp(&want, &v, 4) != 0)
                                        plumb_test_fail(__FILE__, __LINE__, "%s block-sum gemm %s n=%lld rows=%d T=%lld (%d, %d): %a, want %a",
                                                        ks->name, plumb_type_name(type), (long long)n, nrows, (long long)tt, r, t,
                                                        (double)v, (double)want);
                                }
                        }
                    }
                }
                free(wq), free(wide), free(packed), free(xq), free(xp), free(f), free(scratch);
            }
        }
    }
    if (!any) PLUMB_TEST_SKIP("no kernel set with a GEMM on this CPU");
}

/* ---- the reference engine's AVX2 arithmetic, written out for the types whose x86 kernels
 * follow it here (Q4_1, Q5_1, Q2_K, Q3_K, Q5_K; see x86_avx2.c): per block eight exact int32
 * lanes (lane l: values 4l..4l+3 of every 32), fused into eight float lanes, summed in hsum's
 * order, the min terms as each kernel takes them. */

static float ref_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return plumb__f16_table[h];
}

static float ref_hsum8(const float *a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }

/* lane l of a 32-value chunk: the sum of its four products */
static int ref_lane4(const int *q, const int8_t *y, int l) {
    int s = 0;
    for (int b = 0; b < 4; b++) s += q[4 * l + b] * y[4 * l + b];
    return s;
}

/* Q4_1 (bits 4) and Q5_1 (bits 5) with Q8_1 activations */
static float ref_dot_q41_q51(int bits, int64_t n, const uint8_t *a, const plumb_q8_1_block *b) {
    float acc[8] = {0}, summs = 0.0f;
    const size_t wb = bits == 4 ? 20 : 24, qs = bits == 4 ? 4 : 8;
    for (int64_t i = 0; i < n / 32; i++, a += wb, b++) {
        uint32_t qh = 0;
        if (bits == 5) memcpy(&qh, a + 4, 4);
        int q[32];
        for (int j = 0; j < 16; j++) {
            q[j] = (a[qs + j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            q[j + 16] = (a[qs + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        }
        const float dd = ref_f16(a) * plumb__f16_table[b->d];
        for (int l = 0; l < 8; l++) acc[l] = fmaf((float)ref_lane4(q, b->qs, l), dd, acc[l]);
        summs = fmaf(ref_f16(a + 2), plumb__f16_table[b->s], summs);
    }
    return ref_hsum8(acc) + summs;
}

static int ref_bsum(const uint8_t *b, int g) {
    int16_t v;
    memcpy(&v, b + 260 + 2 * g, 2);
    return v;
}

/* Q2_K, Q3_K, Q5_K with Q8_K activations */
static float ref_dot_k(int type, int64_t n, const uint8_t *a, const uint8_t *b) {
    const size_t wb = type == PLUMB_TYPE_Q2_K ? 84 : type == PLUMB_TYPE_Q3_K ? 110 : 176;
    float acc[8] = {0}, summs = 0.0f;
    for (int64_t i = 0; i < n / 256; i++, a += wb, b += 292) {
        int q[256], sc[16]; /* sc: the scale of each 16 values */
        float dy, dw, dmin = 0.0f;
        memcpy(&dy, b, 4);
        const int8_t *y = (const int8_t *)(b + 4);
        if (type == PLUMB_TYPE_Q2_K) {
            for (int e = 0; e < 256; e++) q[e] = (a[16 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            for (int g = 0; g < 16; g++) sc[g] = a[g] & 0xF;
            dw = ref_f16(a + 80), dmin = ref_f16(a + 82);
            for (int l = 0; l < 8; l++) /* the mins first, into the lanes */
                acc[l] = fmaf(-dy * dmin, (float)((a[2 * l] >> 4) * ref_bsum(b, 2 * l) + (a[2 * l + 1] >> 4) * ref_bsum(b, 2 * l + 1)),
                              acc[l]);
        } else if (type == PLUMB_TYPE_Q3_K) {
            for (int e = 0; e < 256; e++) {
                const int h = e / 128, j = (e % 128) / 32, l = e % 32;
                q[e] = ((a[32 + 32 * h + l] >> (2 * j)) & 3) - ((a[l] >> (4 * h + j)) & 1 ? 0 : 4);
            }
            for (int k = 0; k < 16; k++) {
                const int lo = k < 8 ? (a[96 + k] & 0xF) : (a[96 + k - 8] >> 4);
                const int hi = (a[96 + 8 + k % 4] >> (2 * (k / 4))) & 3;
                sc[k] = (lo | (hi << 4)) - 32;
            }
            dw = ref_f16(a + 108);
        } else { /* Q5_K */
            const uint8_t *s6 = a + 4, *qh = a + 16, *qs = a + 48;
            int mins = 0;
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    q[64 * c + l] = (qs[32 * c + l] & 0xF) + ((qh[l] >> (2 * c)) & 1) * 16;
                    q[64 * c + 32 + l] = (qs[32 * c + l] >> 4) + ((qh[l] >> (2 * c + 1)) & 1) * 16;
                }
            for (int s = 0; s < 8; s++) {
                int scale, mn;
                if (s < 4) {
                    scale = s6[s] & 63, mn = s6[s + 4] & 63;
                } else {
                    scale = (s6[s + 4] & 0xF) | ((s6[s - 4] >> 6) << 4);
                    mn = (s6[s + 4] >> 4) | ((s6[s] >> 6) << 4);
                }
                sc[2 * s] = sc[2 * s + 1] = scale;
                mins += mn * (ref_bsum(b, 2 * s) + ref_bsum(b, 2 * s + 1));
            }
            dw = ref_f16(a), dmin = ref_f16(a + 2);
            summs = fmaf(-dy * dmin, (float)mins, summs); /* one scalar, fused */
        }
        for (int l = 0; l < 8; l++) {
            int lane = 0;
            for (int c = 0; c < 8; c++) lane += sc[2 * c + (l >= 4)] * ref_lane4(q + 32 * c, y + 32 * c, l);
            acc[l] = fmaf(dy * dw, (float)lane, acc[l]);
        }
    }
    return ref_hsum8(acc) + summs;
}

/* An F16 scale for the random blocks: ordinary values mostly, and the extremes (the largest
 * finite, the smallest normal, a subnormal, zero, negative ones). */
static uint16_t rand_f16_scale(void) {
    static const float edges[] = {65504.0f, -65504.0f, 0x1p-14f, 0x1p-24f, 0.0f, -0.0f, 1.0f, -3.5f};
    const float r = frand();
    if (r > 0.6f) return plumb__fp32_to_fp16(edges[(int)((frand() + 1.0f) * 4.0f) & 7]);
    return plumb__fp32_to_fp16(frand() * 2.0f);
}

static void rand_bytes(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((frand() + 1.0f) * 128.0f);
}

/* Random raw blocks (every bit pattern of codes, scales and high bits, F16 scales from
 * rand_f16_scale) and random activations (int8 values including -128 and +-127, their 16-value
 * sums, scales from tiny to large): each SIMD set's one-row and four-row kernels give the
 * arithmetic above bit for bit. */
KERNEL_TEST(x86_kernels_follow_the_reference_avx2_arithmetic) {
    const plumb_kernel_set *all[KS_COUNT];
    kernel_sets(all);
    const plumb_kernel_set *sets[] = {all[KS_AVX2], all[KS_AVX512VNNI]};
    if (!sets[0] && !sets[1]) PLUMB_TEST_SKIP("no SIMD kernel set on this CPU");
    static const int types[] = {PLUMB_TYPE_Q4_1, PLUMB_TYPE_Q5_1, PLUMB_TYPE_Q2_K, PLUMB_TYPE_Q3_K, PLUMB_TYPE_Q5_K};
    const int64_t n = 256 * 6;
    for (size_t si = 0; si < 2; si++) {
        const plumb_kernel_set *ks = sets[si];
        if (!ks) continue;
        checked(si == 0 ? KS_AVX2 : KS_AVX512VNNI);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const int type = types[ti], act = plumb__act_type(type);
            const bool k = act == PLUMB_ACT_Q8_K;
            uint64_t wb;
            plumb_type_row_bytes(type, n, &wb);
            const size_t xs = plumb__act_row_size(act, n), blk = k ? 256 : 32;
            const size_t wblk = (size_t)wb / (size_t)(n / (int64_t)blk);
            uint8_t *w = malloc(wb), *x = malloc(4 * xs);
            for (int rep = 0; rep < 40; rep++) {
                rand_bytes(w, wb);
                for (int64_t i = 0; i < n / (int64_t)blk; i++) { /* the block's F16 scales */
                    uint8_t *p = w + (size_t)i * wblk;
                    const size_t d_at = type == PLUMB_TYPE_Q2_K ? 80 : type == PLUMB_TYPE_Q3_K ? 108 : 0;
                    uint16_t h = rand_f16_scale();
                    memcpy(p + d_at, &h, 2);
                    if (type != PLUMB_TYPE_Q3_K) { /* min or dmin: after d, or Q2_K's at 82 */
                        h = rand_f16_scale();
                        memcpy(p + d_at + 2, &h, 2);
                    }
                }
                rand_bytes(x, 4 * xs);
                for (int c = 0; c < 4; c++) {
                    uint8_t *xc = x + (size_t)c * xs;
                    if (k)
                        for (int64_t i = 0; i < n / 256; i++) {
                            uint8_t *p = xc + i * 292;
                            const float d = rep % 4 == 0 ? 1e-9f * (frand() + 2.0f) : frand() * (rep % 4 == 1 ? 1.0f : 4096.0f);
                            memcpy(p, &d, 4);
                            for (int g = 0; g < 16; g++) {
                                int16_t s = 0;
                                for (int j = 0; j < 16; j++) s = (int16_t)(s + (int8_t)p[4 + 16 * g + j]);
                                memcpy(p + 260 + 2 * g, &s, 2);
                            }
                        }
                    else
                        for (int64_t i = 0; i < n / 32; i++) {
                            plumb_q8_1_block *p = (plumb_q8_1_block *)(void *)xc + i;
                            p->d = rand_f16_scale(), p->s = rand_f16_scale();
                        }
                }
                float o4[4] = {0};
                if (ks->vec_dot4[type]) ks->vec_dot4[type](n, w, x, xs, NULL, o4);
                for (int c = 0; c < 4; c++) {
                    const uint8_t *xc = x + (size_t)c * xs;
                    const float want = k ? ref_dot_k(type, n, w, xc)
                                         : ref_dot_q41_q51(type == PLUMB_TYPE_Q4_1 ? 4 : 5, n, w,
                                                           (const plumb_q8_1_block *)(const void *)xc);
                    const float got = ks->vec_dot[type](n, w, xc);
                    if (memcmp(&got, &want, 4) != 0 || (ks->vec_dot4[type] && memcmp(&o4[c], &want, 4) != 0))
                        plumb_test_fail(__FILE__, __LINE__, "%s %s rep %d row %d: %.9g (4-row %.9g) vs %.9g", ks->name,
                                        plumb_type_name(type), rep, c, got, o4[c], want);
                }
            }
            free(w), free(x);
        }
    }
}

/* The AVX-512 VNNI set gives the AVX2 set's results bit for bit (the same int32 lanes, the
 * same float order), for every type and both the one-row and four-row kernels. */
KERNEL_TEST(vnni_kernels_equal_avx2_kernels) {
    const plumb_kernel_set *sets[KS_COUNT];
    kernel_sets(sets);
    const plumb_kernel_set *a = sets[KS_AVX2], *b = sets[KS_AVX512VNNI];
    if (!a || !b) PLUMB_TEST_SKIP(!a ? "no avx2 set on this CPU" : "no avx512vnni set on this CPU");
    checked(KS_AVX2);
    checked(KS_AVX512VNNI);
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        int type = all_types[ti];
        for (int64_t n = 256; n <= 256 * 9; n += 256 * 4) {
            dot_case d;
            dot_case_init(&d, type, n);
            for (int rep = 0; rep < 8; rep++) {
                dot_case_fill(&d, a, rep);
                for (int c = 0; c < 4; c++) {
                    const uint8_t *xc = d.xq + (size_t)c * d.xs;
                    float ra = a->vec_dot[type](n, d.wq, xc), rb = b->vec_dot[type](n, d.wq, xc);
                    if (memcmp(&ra, &rb, 4) != 0)
                        plumb_test_fail(__FILE__, __LINE__, "%s n=%lld: avx512vnni %.9g vs avx2 %.9g", plumb_type_name(type),
                                        (long long)n, rb, ra);
                }
                if (a->vec_dot4[type] && b->vec_dot4[type]) {
                    float oa[4], ob[4];
                    a->vec_dot4[type](n, d.wq, d.xq, d.xs, d.xsv, oa);
                    b->vec_dot4[type](n, d.wq, d.xq, d.xs, d.xsv, ob);
                    CHECK(memcmp(oa, ob, sizeof oa) == 0);
                }
            }
            dot_case_free(&d);
        }
    }
}

/* The F16 GELU lookup (times y, and alone) of every set equals the generic set's bit for bit:
 * a table of distinct values (a wrong index shows), inputs around the F16 rounding points and
 * the +-10 ends, signed zeros, infinities and NaN, on lengths that leave vector tails. */
KERNEL_TEST(gelu_f16_kernels_equal_the_generic_set) {
    const plumb_kernel_set *all[KS_COUNT];
    kernel_sets(all);
    enum { N = 2053 };
    float *table = malloc(65536 * sizeof *table), *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    float *o = malloc(N * sizeof *o), *want = malloc(N * sizeof *want);
    uint64_t s = 0x243F6A8885A308D3ull;
    for (int i = 0; i < 65536; i++) table[i] = (float)i * 0.25f - 3.0f;
    static const float edges[] = {0.0f, -0.0f, 10.0f, -10.0f, 9.999f, -9.999f, 10.001f, -10.001f, 1e-8f, -1e-8f,
                                  65504.0f, 65520.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, -NAN};
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const float u = (float)(s >> 40) / (float)(1 << 24); /* [0, 1) */
        x[i] = i < (int)(sizeof edges / sizeof edges[0]) ? edges[i] : (u - 0.5f) * (i % 3 == 0 ? 40.0f : 6.0f);
        y[i] = (u - 0.3f) * 3.0f;
    }
    for (int with_y = 0; with_y < 2; with_y++) {
        plumb__kernels_generic()->gelu_f16(table, x, with_y ? y : NULL, want, N);
        for (int k = 0; k < KS_COUNT; k++) {
            if (!all[k]) continue;
            checked(k);
            for (int64_t n = 1; n <= N; n = n < 40 ? n + 1 : n * 3 + 1) {
                all[k]->gelu_f16(table, x, with_y ? y : NULL, o, n);
                for (int64_t i = 0; i < n; i++)
                    if (memcmp(&want[i], &o[i], sizeof o[i]) != 0 && !(want[i] != want[i] && o[i] != o[i])) {
                        plumb_test_fail(__FILE__, __LINE__, "%s gelu_f16 x=%a y=%d: %a, want %a", ks_label[k],
                                        (double)x[i], with_y, (double)o[i], (double)want[i]);
                        n = N + 1;
                        break;
                    }
            }
        }
    }
    free(table);
    free(x);
    free(y);
    free(o);
    free(want);
}

/* RMS norm's sums of squares of every set equal the generic set's bit for bit: rows of lengths
 * with and without a tail of 8, 1-21 rows, values whose sums round, tiny and huge ones,
 * infinities and NaN. */
KERNEL_TEST(sum_squares_kernels_equal_the_generic_set) {
    const plumb_kernel_set *all[KS_COUNT];
    kernel_sets(all);
    enum { MAXN = 21 * 300 };
    float *x = malloc(MAXN * sizeof *x);
    double want[21], got[21];
    uint64_t s = 0x13198A2E03707344ull;
    for (int i = 0; i < MAXN; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const float u = (float)(s >> 40) / (float)(1 << 24) - 0.5f;
        /* full mantissas over 2^0 .. 2^16, so that most additions round (and the order shows);
         * now and then a huge or a tiny one */
        x[i] = i % 31 == 0 ? u * 1e18f : i % 29 == 0 ? u * 1e-20f : ldexpf(u, (int)(s >> 59));
    }
    static const int64_t lens[] = {1, 7, 8, 9, 16, 63, 256, 299};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int64_t rows = 1; rows <= 21; rows++)
            for (int special = 0; special < 3; special++) {
                const int64_t ne0 = lens[li];
                float saved = x[3 * ne0 / 2];
                if (special) x[3 * ne0 / 2] = special == 1 ? INFINITY : NAN; /* in row 1 */
                plumb__kernels_generic()->sum_squares(x, ne0, rows, want);
                for (int k = 0; k < KS_COUNT; k++) {
                    if (!all[k]) continue;
                    checked(k);
                    all[k]->sum_squares(x, ne0, rows, got);
                    for (int64_t r = 0; r < rows; r++)
                        if (memcmp(&want[r], &got[r], sizeof got[r]) != 0 && !(want[r] != want[r] && got[r] != got[r]))
                            plumb_test_fail(__FILE__, __LINE__, "%s sum_squares ne0=%lld rows=%lld row %lld: %a, want %a",
                                            ks_label[k], (long long)ne0, (long long)rows, (long long)r, got[r], want[r]);
                }
                x[3 * ne0 / 2] = saved;
            }
    free(x);
}

/* SiLU (times y, and alone) of every set equals the scalar definition bit for bit: random
 * arguments of every magnitude, the ends of the vector range (|n| near 125), overflow and
 * underflow of e^-x, signed zeros, infinities and NaN, on lengths that leave vector tails. */
KERNEL_TEST(silu_kernels_equal_the_scalar_lane) {
    const plumb_kernel_set *all[KS_COUNT];
    kernel_sets(all);
    enum { N = 4099 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *o = malloc(N * sizeof *o);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    static const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 86.6f, 86.7f, 87.4f, 88.8f, 89.0f, -86.6f, -86.7f, -87.4f,
                                  -88.8f, -103.9f, -104.0f, 133.0f, -133.0f, 1e30f, -1e30f, 1e-40f, -1e-40f,
                                  INFINITY, -INFINITY, NAN};
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const float u = (float)(s >> 40) / (float)(1 << 24); /* [0, 1) */
        x[i] = i < (int)(sizeof edges / sizeof edges[0]) ? edges[i] : (u - 0.5f) * (i % 3 == 0 ? 250.0f : 16.0f);
        y[i] = (u - 0.3f) * 3.0f;
    }
    for (int k = 0; k < KS_COUNT; k++) {
        if (!all[k]) continue;
        checked(k);
        for (int with_y = 0; with_y < 2; with_y++)
            for (int64_t n = 1; n <= N; n = n < 40 ? n + 1 : n * 3 + 1) {
                all[k]->silu(x, with_y ? y : NULL, o, n);
                for (int64_t i = 0; i < n; i++) {
                    const float want = plumb__silu_lane(x[i], with_y ? y : NULL, i);
                    if (memcmp(&want, &o[i], sizeof want) != 0 && !(want != want && o[i] != o[i])) {
                        plumb_test_fail(__FILE__, __LINE__, "%s silu x=%a y=%d: %a, want %a", ks_label[k], (double)x[i],
                                        with_y, (double)o[i], (double)want);
                        n = N + 1;
                        break;
                    }
                }
            }
    }
    free(x);
    free(y);
    free(o);
}
