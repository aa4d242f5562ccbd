/* test_sample.c — unit tests of the sampler (src/sample/sampler.c): parameter checks,
 * greedy and top-k 1, reproducibility by seed, empirical distributions against the exact
 * softmax (full vocabulary, top-k by heap and by quickselect, top-p, min-p, temperature),
 * exclusion by top-p/min-p, edges with known answers on every filter path (min_p 1 and a
 * token exactly at the min-p boundary, top-k 1, tiny top-p, ties at the top-k and top-p
 * cuts), penalties (their exact logits, with and without a history), NaN/inf logits, and a
 * randomized smoke run. */
#include "plumb.h"
#include "test.h"
#include "sample/argmax.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------- */

static uint64_t test_rng = 0x1234567u;

/* A small deterministic generator for test data (xorshift64*), independent of the
 * sampler's own. */
static uint64_t trand(void) {
    test_rng ^= test_rng >> 12;
    test_rng ^= test_rng << 25;
    test_rng ^= test_rng >> 27;
    return test_rng * 0x2545F4914F6CDD1Dull;
}

static double tuniform(void) { return (double)(trand() >> 11) * 0x1.0p-53; }

/* Params with every filter and penalty off, temperature t. */
static plumb_sampler_params plain(float t, uint64_t seed) {
    plumb_sampler_params p = plumb_sampler_default_params();
    p.temperature = t;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static plumb_sampler_t *make(const plumb_sampler_params *p, int32_t n_vocab) {
    plumb_sampler_t *s = NULL;
    plumb_status st = plumb_sampler_create(p, n_vocab, &s);
    if (st != PLUMB_OK) {
        plumb_test_fail(__FILE__, __LINE__, "plumb_sampler_create: %s: %s", plumb_status_name(st),
                        plumb_last_error());
        return NULL;
    }
    return s;
}

/* Chi-square bound: a statistic with df degrees of freedom has mean df and variance 2*df.
 * We accept X <= df + 6*sqrt(2*df) + 10. For every df >= 1 the chance that a correct
 * sampler exceeds this is below 1.1e-5 (df=1: 1.0e-5, df=7: 1.6e-6, df=600: 7e-9, from the
 * chi-square survival function), while the errors we look for (a wrong temperature, a
 * token dropped or added, an off-by-one in the cumulative walk) shift expected counts by
 * several percent and, at the draw counts used here, push X into the thousands. The seeds
 * are fixed, so the outcome is deterministic anyway. */
static double chi2_bound(int df) { return df + 6.0 * sqrt(2.0 * df) + 10.0; }

/* Draws n_draws tokens and compares their histogram with `expect` (probabilities, sum 1):
 * tokens with expect 0 must never come up; the rest pass the chi-square bound. */
static void check_distribution(const plumb_sampler_params *p, const float *logits, int32_t n_vocab,
                               const double *expect, int n_draws, const char *what) {
    plumb_sampler_t *s = make(p, n_vocab);
    if (!s) return;
    int *hist = calloc((size_t)n_vocab, sizeof *hist);
    for (int i = 0; i < n_draws; i++) {
        int32_t t = plumb_sampler_sample(s, logits);
        if (t < 0 || t >= n_vocab) {
            plumb_test_fail(__FILE__, __LINE__, "%s: token %d out of range", what, (int)t);
            break;
        }
        hist[t]++;
    }
    double x2 = 0.0;
    int df = -1, forbidden = 0;
    for (int32_t t = 0; t < n_vocab; t++) {
        if (expect[t] == 0.0) {
            if (hist[t]) forbidden++;
            continue;
        }
        double e = expect[t] * n_draws;
        x2 += (hist[t] - e) * (hist[t] - e) / e;
        df++;
    }
    if (forbidden) plumb_test_fail(__FILE__, __LINE__, "%s: %d excluded tokens were drawn", what, forbidden);
    if (df > 0 && !(x2 <= chi2_bound(df)))
        plumb_test_fail(__FILE__, __LINE__, "%s: chi-square %.1f > bound %.1f (df %d)", what, x2, chi2_bound(df),
                        df);
    free(hist);
    plumb_sampler_free(s);
}

/* softmax(logits / t) restricted to keep[] (NULL: all), in double. */
static void softmax_ref(const float *logits, int32_t n, double t, const bool *keep, double *out) {
    double mx = -INFINITY, z = 0.0;
    for (int32_t i = 0; i < n; i++)
        if ((!keep || keep[i]) && logits[i] > mx) mx = logits[i];
    for (int32_t i = 0; i < n; i++) {
        out[i] = (!keep || keep[i]) ? exp((logits[i] - mx) / t) : 0.0;
        z += out[i];
    }
    for (int32_t i = 0; i < n; i++) out[i] /= z;
}

/* ---- params -------------------------------------------------------------------------- */

TEST(sample_default_params) {
    plumb_sampler_params p = plumb_sampler_default_params();
    CHECK_NEAR(p.temperature, 0.8, 1e-7);
    CHECK_EQ_INT(p.top_k, 40);
    CHECK_NEAR(p.top_p, 0.95, 1e-7);
    CHECK_NEAR(p.min_p, 0.05, 1e-7);
    CHECK_NEAR(p.repeat_penalty, 1.0, 0);
    CHECK_EQ_INT(p.repeat_last_n, 64);
    CHECK_NEAR(p.presence_penalty, 0.0, 0);
    CHECK_NEAR(p.frequency_penalty, 0.0, 0);
    CHECK(p.seed == 0xC0FFEEu);
}

TEST(sample_create_rejects_bad_params) {
    plumb_sampler_t *s = (plumb_sampler_t *)1;
    plumb_sampler_params p;
#define BAD(field, value)                                                              \
    do {                                                                               \
        p = plumb_sampler_default_params();                                            \
        p.field = value;                                                               \
        s = (plumb_sampler_t *)1;                                                      \
        CHECK_STATUS(plumb_sampler_create(&p, 100, &s), PLUMB_E_INVALID_ARG);          \
        CHECK(s == NULL);                                                              \
        CHECK(strstr(plumb_last_error(), #field) != NULL);                             \
    } while (0)
    BAD(temperature, NAN);
    BAD(temperature, INFINITY);
    BAD(top_p, NAN);
    BAD(top_p, 0.0f);
    BAD(top_p, -0.5f);
    BAD(top_p, 1.5f);
    BAD(min_p, NAN);
    BAD(min_p, -0.01f);
    BAD(min_p, 1.5f);
    BAD(repeat_penalty, NAN);
    BAD(repeat_penalty, 0.0f);
    BAD(repeat_penalty, -1.0f);
    BAD(repeat_penalty, INFINITY);
    BAD(presence_penalty, NAN);
    BAD(frequency_penalty, -INFINITY);
    BAD(repeat_last_n, -2);
    BAD(repeat_last_n, INT32_MAX);
#undef BAD
    p = plumb_sampler_default_params();
    CHECK_STATUS(plumb_sampler_create(&p, 0, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_sampler_create(&p, -5, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_sampler_create(NULL, 100, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_sampler_create(&p, 100, NULL), PLUMB_E_INVALID_ARG);

    /* edge values that are allowed */
    p.temperature = -1.0f; /* greedy */
    p.top_k = -3;          /* off */
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    p.repeat_last_n = -1;
    p.presence_penalty = -2.0f;
    CHECK_STATUS(plumb_sampler_create(&p, 1, &s), PLUMB_OK);
    plumb_sampler_free(s);
    plumb_sampler_free(NULL);
}

/* ---- greedy -------------------------------------------------------------------------- */

TEST(sample_greedy_is_argmax) {
    enum { N = 1000 };
    static float logits[N];
    plumb_sampler_params p = plain(0.0f, 1);
    plumb_sampler_t *s = make(&p, N);
    if (!s) return;
    for (int round = 0; round < 50; round++) {
        int32_t want = 0;
        for (int i = 0; i < N; i++) {
            logits[i] = (float)(tuniform() * 20.0 - 10.0);
            if (logits[i] > logits[want]) want = i;
        }
        CHECK_EQ_INT(plumb_sampler_sample(s, logits), want);
    }
    /* ties go to the lowest id */
    for (int i = 0; i < N; i++) logits[i] = 1.0f;
    logits[700] = logits[300] = logits[500] = 3.0f;
    CHECK_EQ_INT(plumb_sampler_sample(s, logits), 300);
    plumb_sampler_free(s);

    p.temperature = -2.0f; /* negative: greedy too */
    s = make(&p, N);
    if (!s) return;
    CHECK_EQ_INT(plumb_sampler_sample(s, logits), 300);
    plumb_sampler_free(s);
}

TEST(sample_top_k_1_is_argmax) {
    enum { N = 3000 };
    static float logits[N];
    const float temps[] = {0.1f, 0.8f, 1.0f, 5.0f, 1000.0f};
    for (size_t ti = 0; ti < sizeof temps / sizeof temps[0]; ti++) {
        plumb_sampler_params p = plain(temps[ti], 7 + ti);
        p.top_k = 1;
        p.top_p = 0.5f;
        plumb_sampler_t *s = make(&p, N);
        if (!s) return;
        for (int round = 0; round < 40; round++) {
            int32_t want = 0;
            for (int i = 0; i < N; i++) {
                logits[i] = (float)(tuniform() * 2.0 - 1.0);
                if (logits[i] > logits[want]) want = i;
            }
            CHECK_EQ_INT(plumb_sampler_sample(s, logits), want);
        }
        plumb_sampler_free(s);
    }
}

/* ---- reproducibility ----------------------------------------------------------------- */

static void draw_sequence(const plumb_sampler_params *p, int32_t n_vocab, const float *logits, int n,
                          int32_t *out) {
    plumb_sampler_t *s = make(p, n_vocab);
    if (!s) return;
    for (int i = 0; i < n; i++) out[i] = plumb_sampler_sample(s, logits);
    plumb_sampler_free(s);
}

TEST(sample_seed_reproduces) {
    enum { N = 512, DRAWS = 2000 };
    static float logits[N];
    static int32_t a[DRAWS], b[DRAWS], c[DRAWS], d[DRAWS];
    for (int i = 0; i < N; i++) logits[i] = (float)(tuniform() * 3.0);
    plumb_sampler_params p = plumb_sampler_default_params();
    p.top_k = 100;
    p.min_p = 0.0f;
    p.seed = 42;
    draw_sequence(&p, N, logits, DRAWS, a);
    draw_sequence(&p, N, logits, DRAWS, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    p.seed = 43;
    draw_sequence(&p, N, logits, DRAWS, c);
    int same = 0;
    for (int i = 0; i < DRAWS; i++) same += a[i] == c[i];
    CHECK(same < DRAWS / 4); /* ~100 tokens in play: chance agreement is a few percent */

    /* reset reseeds: the second run after reset equals the first */
    p.seed = 42;
    plumb_sampler_t *s = make(&p, N);
    if (!s) return;
    for (int i = 0; i < DRAWS; i++) d[i] = plumb_sampler_sample(s, logits);
    CHECK(memcmp(a, d, sizeof a) == 0);
    plumb_sampler_reset(s);
    for (int i = 0; i < DRAWS; i++) d[i] = plumb_sampler_sample(s, logits);
    CHECK(memcmp(a, d, sizeof a) == 0);
    plumb_sampler_free(s);

    /* full-vocabulary path too, and a changing logits sequence */
    p = plain(1.0f, 99);
    plumb_sampler_t *s1 = make(&p, N), *s2 = make(&p, N);
    if (!s1 || !s2) return;
    int differ = 0;
    for (int i = 0; i < 500; i++) {
        for (int j = 0; j < N; j++) logits[j] = (float)(tuniform() * 4.0 - 2.0);
        int32_t t1 = plumb_sampler_sample(s1, logits), t2 = plumb_sampler_sample(s2, logits);
        differ += t1 != t2;
        plumb_sampler_accept(s1, t1);
        plumb_sampler_accept(s2, t2);
    }
    CHECK_EQ_INT(differ, 0);
    plumb_sampler_free(s1);
    plumb_sampler_free(s2);
}

/* ---- distributions ------------------------------------------------------------------- */

TEST(sample_distribution_full_softmax) {
    const float logits[8] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f, -3.0f, 0.25f};
    double expect[8];
    const double temps[] = {0.5, 0.7, 1.0, 2.0};
    for (size_t i = 0; i < sizeof temps / sizeof temps[0]; i++) {
        plumb_sampler_params p = plain((float)temps[i], 1000 + i);
        softmax_ref(logits, 8, (float)temps[i], NULL, expect);
        check_distribution(&p, logits, 8, expect, 100000, "full softmax");
    }
}

TEST(sample_distribution_top_k_heap) {
    enum { N = 300, K = 20 };
    static float logits[N];
    static bool keep[N];
    static double expect[N];
    for (int i = 0; i < N; i++) logits[i] = (float)(tuniform() * 4.0);
    /* the K largest by (logit desc, id asc) */
    for (int i = 0; i < N; i++) {
        int better = 0;
        for (int j = 0; j < N; j++) better += logits[j] > logits[i] || (logits[j] == logits[i] && j < i);
        keep[i] = better < K;
    }
    plumb_sampler_params p = plain(0.9f, 5);
    p.top_k = K;
    softmax_ref(logits, N, 0.9f, keep, expect);
    check_distribution(&p, logits, N, expect, 100000, "top-k (heap)");
}

TEST(sample_distribution_top_k_quickselect) {
    enum { N = 1000, K = 600 };
    static float logits[N];
    static bool keep[N];
    static double expect[N];
    /* few distinct values, so ties cross the k boundary and the id order decides */
    for (int i = 0; i < N; i++) logits[i] = (float)(int)(tuniform() * 12.0) * 0.1f;
    for (int i = 0; i < N; i++) {
        int better = 0;
        for (int j = 0; j < N; j++) better += logits[j] > logits[i] || (logits[j] == logits[i] && j < i);
        keep[i] = better < K;
    }
    plumb_sampler_params p = plain(1.0f, 6);
    p.top_k = K;
    softmax_ref(logits, N, 1.0f, keep, expect);
    check_distribution(&p, logits, N, expect, 30000, "top-k (quickselect)");
}

TEST(sample_top_k_ties_lowest_ids) {
    /* all equal: top-k keeps ids 0..k-1, by heap and by quickselect */
    enum { N = 5000 };
    static float logits[N];
    for (int i = 0; i < N; i++) logits[i] = 0.5f;
    const int32_t ks[] = {3, 700};
    for (int ki = 0; ki < 2; ki++) {
        plumb_sampler_params p = plain(1.0f, 11);
        p.top_k = ks[ki];
        plumb_sampler_t *s = make(&p, N);
        if (!s) return;
        int32_t hi = -1;
        for (int i = 0; i < 5000; i++) {
            int32_t t = plumb_sampler_sample(s, logits);
            if (t > hi) hi = t;
        }
        CHECK(hi < ks[ki]);
        CHECK(hi >= ks[ki] - 1 - ks[ki] / 20); /* the top of the range does come up */
        plumb_sampler_free(s);
    }
}

TEST(sample_top_p_excludes) {
    /* probabilities 0.5, 0.3, 0.15, 0.05 (shuffled ids): top_p 0.75 keeps the first two */
    const float logits[5] = {logf(0.15f), logf(0.5f), -INFINITY, logf(0.05f), logf(0.3f)};
    double expect[5] = {0, 0.5 / 0.8, 0, 0, 0.3 / 0.8};
    for (int with_k = 0; with_k < 2; with_k++) {
        plumb_sampler_params p = plain(1.0f, 21 + with_k);
        p.top_p = 0.75f;
        p.top_k = with_k ? 4 : 0;
        check_distribution(&p, logits, 5, expect, 10000, with_k ? "top-p after top-k" : "top-p");
    }
    /* top-p after temperature: at T=0.5 the probabilities are 0.25,0.09,0.0225,0.0025 over
     * 0.365: 0.685, 0.247, 0.062, 0.007, so top_p 0.9 keeps two, 0.95 three */
    plumb_sampler_params p = plain(0.5f, 23);
    p.top_p = 0.9f;
    double z = 0.25 + 0.09;
    double expect2[5] = {0, 0.25 / z, 0, 0, 0.09 / z};
    check_distribution(&p, logits, 5, expect2, 10000, "top-p at T=0.5");
    p.top_p = 0.95f;
    z = 0.25 + 0.09 + 0.0225;
    double expect3[5] = {0.0225 / z, 0.25 / z, 0, 0, 0.09 / z};
    check_distribution(&p, logits, 5, expect3, 20000, "top-p at T=0.5 (3 kept)");
}

TEST(sample_top_p_large_vocab) {
    /* token 0 at logit 0, the other 19999 tied at -8: p0 ~ 0.13, and top_p 0.5 needs ~8500
     * tokens of the flat tail, all in one exponent bucket, so the nucleus ends inside a
     * bucket of ties; ties keep the lowest ids */
    enum { N = 20000 };
    static float logits[N];
    logits[0] = 0.0f;
    for (int i = 1; i < N; i++) logits[i] = -8.0f;
    double e = exp(-8.0), z = 1.0 + (N - 1) * e, target = 0.5 * z, acc = 1.0;
    int m = 1; /* tokens kept: the smallest prefix with acc >= target */
    while (acc < target) {
        acc += e;
        m++;
    }
    plumb_sampler_params p = plain(1.0f, 31);
    p.top_p = 0.5f;
    plumb_sampler_t *s = make(&p, N);
    if (!s) return;
    int n0 = 0, hi = 0, draws = 2000;
    for (int i = 0; i < draws; i++) {
        int32_t t = plumb_sampler_sample(s, logits);
        if (t == 0) n0++;
        if (t > hi) hi = t;
    }
    plumb_sampler_free(s);
    CHECK(hi < m + 1); /* +1: the cumulative sum may round across the boundary token */
    CHECK(hi > m - 100);
    /* token 0: binomial, 6 standard deviations */
    double p0 = 1.0 / acc;
    CHECK_NEAR(n0, draws * p0, 6.0 * sqrt(draws * p0 * (1 - p0)));
}

TEST(sample_min_p_excludes) {
    /* weights relative to the max 1, .5, .2, .105, .095, .05 (shuffled ids): min_p 0.1 keeps
     * the first four, and the boundary is 5% either side */
    const float logits[6] = {logf(0.095f), logf(0.2f), 0.0f, logf(0.05f), logf(0.105f), logf(0.5f)};
    static const bool keep[6] = {false, true, true, false, true, true};
    double expect[6];
    softmax_ref(logits, 6, 1.0, keep, expect);
    for (int with_k = 0; with_k < 2; with_k++) {
        plumb_sampler_params p = plain(1.0f, 41 + with_k);
        p.min_p = 0.1f;
        p.top_k = with_k ? 5 : 0;
        check_distribution(&p, logits, 6, expect, 20000, with_k ? "min-p after top-k" : "min-p");
    }
    /* T=2 is applied first: weights become their square roots, all above 0.2 */
    plumb_sampler_params p = plain(2.0f, 43);
    p.min_p = 0.2f;
    softmax_ref(logits, 6, 2.0, NULL, expect);
    check_distribution(&p, logits, 6, expect, 20000, "min-p at T=2");
    /* min_p with top_p: probabilities .513, .256, .103, .054, .049, .026: top_p 0.9 alone
     * keeps four (.872 < .9 <= .926); min_p 0.15 then keeps three */
    p = plain(1.0f, 44);
    p.top_p = 0.9f;
    p.min_p = 0.15f;
    static const bool keep2[6] = {false, true, true, false, false, true};
    softmax_ref(logits, 6, 1.0, keep2, expect);
    check_distribution(&p, logits, 6, expect, 10000, "top-p + min-p");
    p.min_p = 0.01f; /* now top-p decides: four */
    softmax_ref(logits, 6, 1.0, keep, expect);
    check_distribution(&p, logits, 6, expect, 10000, "top-p + weak min-p");
}

TEST(sample_top_p_nucleus_many) {
    /* many distinct logits, the nucleus computed here by sorting: by the top-k path
     * (selection + weighted quickselect) and the whole-vocabulary path (exponent buckets) */
    enum { N = 300 };
    static float logits[N];
    static int order[N];
    static double expect[N];
    for (int set = 0; set < 12; set++) {
        for (int i = 0; i < N; i++) logits[i] = (float)(tuniform() * 5.0);
        for (int i = 0; i < N; i++) order[i] = i;
        for (int i = 1; i < N; i++) /* insertion sort by logit, descending */
            for (int j = i; j > 0 && logits[order[j]] > logits[order[j - 1]]; j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        const float top_p = 0.3f + 0.05f * (float)set;
        const int k = set % 2 ? 200 : 0;
        const int pool = k ? k : N;
        double z = 0.0, acc = 0.0, zk = 0.0;
        for (int i = 0; i < pool; i++) z += exp(logits[order[i]] - logits[order[0]]);
        int kept = pool;
        for (int i = 0; i < pool; i++) {
            acc += exp(logits[order[i]] - logits[order[0]]) / z;
            if (acc >= top_p) {
                kept = i + 1;
                break;
            }
        }
        for (int i = 0; i < N; i++) expect[i] = 0.0;
        for (int i = 0; i < kept; i++) zk += (expect[order[i]] = exp(logits[order[i]] - logits[order[0]]));
        for (int i = 0; i < kept; i++) expect[order[i]] /= zk;
        plumb_sampler_params p = plain(1.0f, 60 + set);
        p.top_p = top_p;
        p.top_k = k;
        check_distribution(&p, logits, N, expect, 8000, k ? "top-p many (top-k path)" : "top-p many (vocab path)");
    }
}

TEST(sample_defaults_distribution) {
    /* the default chain on a 1000-token vocabulary: top-k 40, T 0.8, top-p 0.95, min-p 0.05,
     * against a reference written out here step by step */
    enum { N = 1000 };
    static float logits[N];
    static int order[N];
    static double expect[N];
    for (int i = 0; i < N; i++) logits[i] = (float)(tuniform() * 6.0);
    for (int i = 0; i < N; i++) order[i] = i;
    for (int i = 0; i < 40; i++) /* selection sort of the first 40 */
        for (int j = i + 1; j < N; j++)
            if (logits[order[j]] > logits[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    double w[40], z = 0.0;
    for (int i = 0; i < 40; i++) z += (w[i] = exp((logits[order[i]] - logits[order[0]]) / 0.8));
    int kept = 40;
    double acc = 0.0;
    for (int i = 0; i < 40; i++) {
        acc += w[i] / z;
        if (acc >= 0.95) {
            kept = i + 1;
            break;
        }
    }
    double zk = 0.0;
    for (int i = 0; i < kept; i++)
        if (w[i] >= 0.05) zk += w[i];
    for (int i = 0; i < N; i++) expect[i] = 0.0;
    for (int i = 0; i < kept; i++)
        if (w[i] >= 0.05) expect[order[i]] = w[i] / zk;
    plumb_sampler_params p = plumb_sampler_default_params();
    check_distribution(&p, logits, N, expect, 50000, "default chain");
}

/* ---- edges with known answers ---------------------------------------------------------- */

/* The sampler's filter paths, each with its own min-p and top-p comparisons: top-k off (min-p
 * alone on float weights, or top-p by exponent buckets), top-k by the heap (k <= 512) or by
 * quickselect (k > 512), with top-p on or off. Top-p 0.99 is set where it keeps every
 * min-p survivor, so that min-p alone decides; the vocabularies are EDGE_N tokens, the ones
 * not named -inf (weight 0, never drawn). */
enum { EDGE_N = 1000 };
static const struct {
    int32_t top_k;
    float top_p;
    const char *name;
} edge_paths[] = {{0, 1.0f, "top-k off"},         {0, 0.99f, "top-k off, top-p"},
                  {5, 1.0f, "top-k heap"},        {5, 0.99f, "top-k heap, top-p"},
                  {600, 1.0f, "top-k quickselect"}, {600, 0.99f, "top-k quickselect, top-p"}};
enum { N_EDGE_PATHS = sizeof edge_paths / sizeof edge_paths[0] };

/* logits[] all -inf, expect[] all 0. */
static void edge_init(float *logits, double *expect) {
    for (int i = 0; i < EDGE_N; i++) logits[i] = -INFINITY, expect[i] = 0.0;
}

/* min_p = 1 keeps the tokens whose probability equals the max, every one of them when several
 * tie (llama.cpp keeps logit >= max + log(min_p) = max, ties included), and not the token one
 * float below the max. With the comparison strict, nothing would survive and the sampler would
 * fall back to the lowest id of the max: tokens 3 and 5 would never come up. */
TEST(sample_min_p_one_keeps_the_ties_at_the_max) {
    static float logits[EDGE_N];
    static double expect[EDGE_N];
    edge_init(logits, expect);
    logits[0] = 4.0f;
    logits[1] = logits[3] = logits[5] = 5.0f;
    logits[2] = nextafterf(5.0f, 0.0f); /* weight 1 - 5e-7 (x 1/T): below 1 on every path */
    logits[6] = 1.0f;
    expect[1] = expect[3] = expect[5] = 1.0 / 3.0;
    for (int pi = 0; pi < N_EDGE_PATHS; pi++)
        for (int ti = 0; ti < 2; ti++) {
            plumb_sampler_params p = plain(ti ? 0.7f : 1.0f, 100 + pi);
            p.min_p = 1.0f;
            p.top_k = edge_paths[pi].top_k;
            p.top_p = edge_paths[pi].top_p;
            check_distribution(&p, logits, EDGE_N, expect, 6000, edge_paths[pi].name);
        }
}

/* A token whose weight equals min_p exactly (p = min_p * p_max) is kept: min-p drops only
 * what is below (llama.cpp: logit >= max + log(min_p)). The weights are exact on both kinds
 * of path, at T = 1 with min_p = 1 - 2^-24 (a float):
 *  - top-k on, weights exp(v - max) in double: the max is 2^-24, the boundary token -2^-49,
 *    so v - max = -(2^-24 + 2^-49) exactly, and e^-(2^-24 + 2^-49) = 1 - 2^-24 + ~2^-74,
 *    which rounds to 1 - 2^-24 (the next double is 2^-53 away);
 *  - top-k off, float weights of v - max rounded to a float, -2^-24: e^-2^-24 = 1 - 2^-24 +
 *    2^-49, 1 - 2^-24 to the nearest float (and from the sampler's polynomial exactly).
 * The token at -2^-24 weighs e^-2^-23 < 1 - 2^-24 on both and is dropped. */
TEST(sample_min_p_exact_boundary_is_kept) {
    static float logits[EDGE_N];
    static double expect[EDGE_N];
    edge_init(logits, expect);
    logits[0] = -1.0f;      /* weight 0.37: out */
    logits[1] = -0x1p-49f;  /* weight exactly min_p: kept */
    logits[2] = -0x1p-24f;  /* weight 1 - 2^-23: out */
    logits[3] = 0x1p-24f;   /* the max */
    expect[1] = expect[3] = 0.5; /* weights 1 - 2^-24 and 1 */
    for (int pi = 0; pi < N_EDGE_PATHS; pi++) {
        plumb_sampler_params p = plain(1.0f, 200 + pi);
        p.min_p = nextafterf(1.0f, 0.0f);
        p.top_k = edge_paths[pi].top_k;
        p.top_p = edge_paths[pi].top_p;
        check_distribution(&p, logits, EDGE_N, expect, 6000, edge_paths[pi].name);
    }
    CHECK(exp((double)logits[1] - (double)logits[3]) == (double)nextafterf(1.0f, 0.0f)); /* the premise */
}

/* top_k = 1 is the argmax even when the max is tied: the lowest id of it, as greedy picks
 * (candidates rank by logit, then by lower id). llama.cpp's top-k sorts by logit alone, so
 * which of tied tokens survives a cut is not defined there; plumb fixes it to the lowest ids. */
TEST(sample_top_k_1_with_a_tied_max) {
    static float logits[EDGE_N];
    static double expect[EDGE_N];
    edge_init(logits, expect);
    for (int i = 0; i < 12; i++) logits[i] = (float)(i % 4);
    logits[13] = logits[7] = logits[700] = 3.5f; /* the max, three times */
    expect[7] = 1.0;
    const float temps[] = {0.3f, 1.0f, 50.0f};
    for (int ti = 0; ti < 3; ti++)
        for (int pi = 0; pi < 2; pi++) {
            plumb_sampler_params p = plain(temps[ti], 300 + ti);
            p.top_k = 1;
            p.top_p = pi ? 0.3f : 1.0f;
            check_distribution(&p, logits, EDGE_N, expect, 300, "top-k 1, tied max");
        }
}

/* Ties across the top-k cut keep the lowest ids, by the heap and by quickselect. */
TEST(sample_top_k_ties_at_the_cut) {
    static float logits[EDGE_N];
    static double expect[EDGE_N];
    /* heap: 3.0 (id 1), then 2.0 at ids 2, 3, 4: top-k 3 keeps ids 1, 2, 3 */
    edge_init(logits, expect);
    logits[0] = 1.0f, logits[1] = 3.0f, logits[2] = logits[3] = logits[4] = 2.0f, logits[5] = 0.0f;
    const double z = exp(3.0) + 2.0 * exp(2.0);
    expect[1] = exp(3.0) / z, expect[2] = expect[3] = exp(2.0) / z;
    plumb_sampler_params p = plain(1.0f, 400);
    p.top_k = 3;
    check_distribution(&p, logits, EDGE_N, expect, 20000, "top-k 3, ties at the cut");
    /* quickselect: 1.0 (id 999), 0.0 at ids 0..399, -1.0 at ids 400..998: top-k 600 keeps
     * 999, 0..399 and the 199 lowest of the -1.0 ids, 400..598 */
    for (int i = 0; i < EDGE_N; i++) logits[i] = i < 400 ? 0.0f : -1.0f, expect[i] = 0.0;
    logits[999] = 1.0f;
    const double zq = exp(1.0) + 400.0 + 199.0 * exp(-1.0);
    for (int i = 0; i < 599; i++) expect[i] = (i < 400 ? 1.0 : exp(-1.0)) / zq;
    expect[999] = exp(1.0) / zq;
    p = plain(1.0f, 401);
    p.top_k = 600;
    check_distribution(&p, logits, EDGE_N, expect, 40000, "top-k 600, ties at the cut");
}

/* top_p = 1e-6 keeps only the top token (the first one already reaches the mass; llama.cpp
 * keeps at least one), on every path and temperature; a tied top gives the lowest id. */
TEST(sample_top_p_tiny_keeps_only_the_top) {
    static float logits[EDGE_N];
    const float temps[] = {0.2f, 1.0f, 4.0f};
    for (int pi = 0; pi < N_EDGE_PATHS; pi += 2) /* the top-k settings; top-p is set here */
        for (int ti = 0; ti < 3; ti++) {
            plumb_sampler_params p = plain(temps[ti], 500 + pi * 3 + ti);
            p.top_k = edge_paths[pi].top_k;
            p.top_p = 1e-6f;
            plumb_sampler_t *s = make(&p, EDGE_N);
            if (!s) return;
            for (int round = 0; round < 20; round++) {
                int32_t want = 0;
                for (int i = 0; i < EDGE_N; i++) {
                    logits[i] = (float)(tuniform() * 4.0);
                    if (logits[i] > logits[want]) want = i;
                }
                if (round % 2) { /* tie the top at a higher id and at a lower one */
                    logits[EDGE_N - 1] = logits[want];
                    if (want > 0) logits[want / 2] = logits[want], want /= 2;
                }
                for (int k = 0; k < 10; k++) CHECK_EQ_INT(plumb_sampler_sample(s, logits), want);
            }
            plumb_sampler_free(s);
        }
}

/* Top-p keeps the smallest prefix, in rank order, whose mass reaches top_p (llama.cpp: the
 * first i with cum_sum >= p), the prefix ending inside a group of ties taking their lowest
 * ids. Four tokens tied at the top with everything else -inf weigh exactly 1 each, so the
 * sums are exact and the boundary is met with equality: top_p 0.5 reaches 2 = 0.5 * 4 with
 * two tokens, not three. */
TEST(sample_top_p_ties_at_the_cut) {
    static float logits[EDGE_N];
    static double expect[EDGE_N];
    const int32_t ks[] = {0, 6, 600};
    const struct {
        float top_p;
        int kept;
    } cuts[] = {{0.25f, 1}, {0.5f, 2}, {0x1.000002p-1f /* just above 0.5 */, 3}, {0.75f, 3}, {0.76f, 4}};
    const int32_t tied[4] = {1, 3, 4, 5};
    for (int ki = 0; ki < 3; ki++)
        for (int ci = 0; ci < 5; ci++) {
            edge_init(logits, expect);
            for (int j = 0; j < 4; j++) logits[tied[j]] = 3.0f;
            for (int j = 0; j < cuts[ci].kept; j++) expect[tied[j]] = 1.0 / cuts[ci].kept;
            plumb_sampler_params p = plain(1.0f, 600 + ki * 5 + ci);
            p.top_k = ks[ki];
            p.top_p = cuts[ci].top_p;
            check_distribution(&p, logits, EDGE_N, expect, 4000, "top-p, tied top");
        }
    /* the cut inside a lower group: 0.4 at id 3, 0.2 at ids 0, 2, 5: top_p 0.7 takes 0.4 +
     * 0.2 + 0.2, ids 3, 0, 2 */
    for (int ki = 0; ki < 3; ki++) {
        edge_init(logits, expect);
        logits[3] = logf(2.0f), logits[0] = logits[2] = logits[5] = 0.0f;
        expect[3] = 0.5, expect[0] = expect[2] = 0.25;
        plumb_sampler_params p = plain(1.0f, 620 + ki);
        p.top_k = ks[ki];
        p.top_p = 0.7f;
        check_distribution(&p, logits, EDGE_N, expect, 20000, "top-p, ties at the cut");
    }
}

/* ---- penalties ----------------------------------------------------------------------- */

/* Greedy choice between token 0 and token 1 (2 tokens) after accepting `hist`. */
static int32_t greedy_after(plumb_sampler_params p, float l0, float l1, const int32_t *hist, int n_hist) {
    float logits[2] = {l0, l1};
    p.temperature = 0.0f;
    plumb_sampler_t *s = make(&p, 2);
    if (!s) return -1;
    for (int i = 0; i < n_hist; i++) plumb_sampler_accept(s, hist[i]);
    int32_t t = plumb_sampler_sample(s, logits);
    plumb_sampler_free(s);
    return t;
}

TEST(sample_repeat_penalty) {
    const int32_t once[1] = {0}, thrice[3] = {0, 0, 0};
    plumb_sampler_params p = plain(0.0f, 1);
    /* positive logit is divided: 2/1.5 = 1.33 < 1.5; 2/1.3 = 1.54 > 1.5 */
    p.repeat_penalty = 1.5f;
    CHECK_EQ_INT(greedy_after(p, 2.0f, 1.5f, once, 1), 1);
    p.repeat_penalty = 1.3f;
    CHECK_EQ_INT(greedy_after(p, 2.0f, 1.5f, once, 1), 0);
    /* negative logit is multiplied: -1*1.5 = -1.5 < -1.4; -1*1.3 = -1.3 > -1.4 */
    p.repeat_penalty = 1.5f;
    CHECK_EQ_INT(greedy_after(p, -1.0f, -1.4f, once, 1), 1);
    p.repeat_penalty = 1.3f;
    CHECK_EQ_INT(greedy_after(p, -1.0f, -1.4f, once, 1), 0);
    /* zero counts as not positive: 0 * 1.5 = 0 stays above -0.1 */
    p.repeat_penalty = 1.5f;
    CHECK_EQ_INT(greedy_after(p, 0.0f, -0.1f, once, 1), 0);
    /* once per distinct token, not per occurrence: 2/1.5 = 1.33 > 1.3 */
    CHECK_EQ_INT(greedy_after(p, 2.0f, 1.3f, thrice, 3), 0);
    /* a penalty below 1 favours repeats */
    p.repeat_penalty = 0.5f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 1.9f, once, 1), 0);
    /* without history nothing changes */
    p.repeat_penalty = 1.5f;
    CHECK_EQ_INT(greedy_after(p, 2.0f, 1.5f, NULL, 0), 0);
}

TEST(sample_presence_frequency_penalty) {
    const int32_t twice[2] = {0, 0};
    plumb_sampler_params p = plain(0.0f, 1);
    /* frequency: 1 - 2*0.4 = 0.2 > 0; 1 - 2*0.6 = -0.2 < 0 */
    p.frequency_penalty = 0.4f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 0.0f, twice, 2), 0);
    p.frequency_penalty = 0.6f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 0.0f, twice, 2), 1);
    /* presence, once however many times: 1 - 0.9 = 0.1; 1 - 1.1 = -0.1 */
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.9f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 0.0f, twice, 2), 0);
    p.presence_penalty = 1.1f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 0.0f, twice, 2), 1);
    /* both: 1 - (0.5 + 2*0.3) = -0.1; 1 - (0.3 + 2*0.3) = 0.1 */
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.3f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 0.0f, twice, 2), 1);
    p.presence_penalty = 0.3f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 0.0f, twice, 2), 0);
    /* repeat penalty first, then subtraction: 2/2 - 0.5 = 0.5 < 0.6; (2 - 0.5)/2 would be
     * 0.75 > 0.6 */
    p = plain(0.0f, 1);
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    const int32_t once[1] = {0};
    CHECK_EQ_INT(greedy_after(p, 2.0f, 0.6f, once, 1), 1);
    /* negative presence favours seen tokens */
    p = plain(0.0f, 1);
    p.presence_penalty = -0.5f;
    CHECK_EQ_INT(greedy_after(p, 1.0f, 1.4f, once, 1), 0);
}

TEST(sample_penalty_window) {
    const int32_t hist[4] = {0, 1, 1, 1}; /* vocab 2: token 0 falls out of a window of 3 */
    plumb_sampler_params p = plain(0.0f, 1);
    p.presence_penalty = 1.0f;
    p.repeat_last_n = 3; /* window holds 1,1,1: token 1 is penalized, 0 is not */
    CHECK_EQ_INT(greedy_after(p, 1.0f, 1.5f, hist, 4), 0);
    p.repeat_last_n = 4; /* both are in the window */
    CHECK_EQ_INT(greedy_after(p, 1.0f, 1.5f, hist, 4), 1);
    p.repeat_last_n = -1; /* whole history */
    CHECK_EQ_INT(greedy_after(p, 1.0f, 1.5f, hist, 4), 1);
    p.repeat_last_n = 0; /* off */
    CHECK_EQ_INT(greedy_after(p, 1.0f, 1.5f, hist, 4), 1);
    CHECK_EQ_INT(greedy_after(p, 1.6f, 1.5f, hist, 4), 0);

    /* a long run through a small window: counts stay right as tokens leave it */
    p = plain(0.0f, 1);
    p.frequency_penalty = 1.0f;
    p.repeat_last_n = 5;
    float logits[3] = {0.0f, 0.0f, 0.0f};
    plumb_sampler_t *s = make(&p, 3);
    if (!s) return;
    for (int i = 0; i < 1000; i++) plumb_sampler_accept(s, (int32_t)(i % 3));
    /* last five: i = 995..999 -> 2,0,1,2,0: counts 0:2, 1:1, 2:2 -> token 1 */
    CHECK_EQ_INT(plumb_sampler_sample(s, logits), 1);
    plumb_sampler_accept(s, -1);  /* out of range: ignored */
    plumb_sampler_accept(s, 3);   /* out of range: ignored */
    CHECK_EQ_INT(plumb_sampler_sample(s, logits), 1);
    plumb_sampler_reset(s); /* history gone: all equal, lowest id */
    CHECK_EQ_INT(plumb_sampler_sample(s, logits), 0);
    plumb_sampler_free(s);
}

/* Pins the logit token t has after the penalties (params p, history hist) to exactly `want`,
 * with t's logit `base` and every other token -inf but a rival with a higher id that no
 * history holds. Greedy with the rival at `want` picks t (ties go to the lower id), so t's
 * logit is >= want; with the rival one float above `want` it picks the rival, so t's logit is
 * below that float: it is `want`. */
static void check_penalized(int line, plumb_sampler_params p, const int32_t *hist, int n_hist, int32_t t, float base,
                            float want) {
    enum { N = 16, RIVAL = N - 1 };
    float logits[N];
    p.temperature = 0.0f;
    plumb_sampler_t *s = make(&p, N);
    if (!s) return;
    for (int i = 0; i < n_hist; i++) plumb_sampler_accept(s, hist[i]);
    for (int i = 0; i < N; i++) logits[i] = -INFINITY;
    logits[t] = base;
    logits[RIVAL] = want;
    const int32_t at = plumb_sampler_sample(s, logits);
    logits[RIVAL] = nextafterf(want, INFINITY);
    const int32_t above = plumb_sampler_sample(s, logits);
    if (at != t || above != RIVAL)
        plumb_test_fail(__FILE__, line, "token %d, logit %g: penalized logit is %s %g", (int)t, (double)base,
                        at != t ? "below" : "above", (double)want);
    plumb_sampler_free(s);
}
#define CHECK_PENALIZED(p, hist, n_hist, t, base, want) check_penalized(__LINE__, p, hist, n_hist, t, base, want)

/* The penalized logits themselves, on values where every step is exact in binary: repeat
 * penalty 1.25 divides a positive logit and multiplies a negative one (llama.cpp), once per
 * token however often it occurs; then count * frequency + presence is subtracted. History
 * 3, 1, 3, 3, 0, 5: counts 3 for token 3, 1 for tokens 0, 1, 5. */
TEST(sample_penalties_exact_logits) {
    const int32_t hist[6] = {3, 1, 3, 3, 0, 5};
    const float base[6] = {0.0f, -2.0f, 1.5f, 5.0f, -1.0f, 2.5f};
    plumb_sampler_params p = plain(0.0f, 1);
    p.repeat_penalty = 1.25f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    const int32_t windows[2] = {-1, 64}; /* the whole history, and a window holding all of it */
    for (int wi = 0; wi < 2; wi++) {
        p.repeat_last_n = windows[wi];
        const float want[6] = {
            0.0f * 1.25f - (0.25f + 0.5f),          /* -0.75: zero is multiplied, stays 0 */
            -2.0f * 1.25f - (0.25f + 0.5f),         /* -3.25 */
            1.5f,                                   /* not in the history */
            5.0f / 1.25f - (3 * 0.25f + 0.5f),      /* 2.75 */
            -1.0f,                                  /* not in the history */
            2.5f / 1.25f - (0.25f + 0.5f),          /* 1.25 */
        };
        for (int t = 0; t < 6; t++) CHECK_PENALIZED(p, hist, 6, t, base[t], want[t]);
    }
    /* a window of 3 holds 3, 0, 5; of 4, 3, 3, 0, 5 */
    p.repeat_last_n = 3;
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 3.25f);
    CHECK_PENALIZED(p, hist, 6, 1, -2.0f, -2.0f);
    CHECK_PENALIZED(p, hist, 6, 0, 0.0f, -0.75f);
    CHECK_PENALIZED(p, hist, 6, 5, 2.5f, 1.25f);
    p.repeat_last_n = 4;
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 3.0f);
    CHECK_PENALIZED(p, hist, 6, 1, -2.0f, -2.0f);
    /* each penalty alone */
    p = plain(0.0f, 1);
    p.repeat_penalty = 1.25f;
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 4.0f);
    CHECK_PENALIZED(p, hist, 6, 1, -2.0f, -2.5f);
    CHECK_PENALIZED(p, hist, 6, 0, 0.0f, 0.0f);
    p.repeat_penalty = 3.0f; /* a true division, rounded once: 5 * (1/3) would round up */
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 5.0f / 3.0f);
    CHECK(5.0f / 3.0f != 5.0f * (1.0f / 3.0f));
    p.repeat_penalty = 0.5f; /* below 1: favours repeats */
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 10.0f);
    CHECK_PENALIZED(p, hist, 6, 1, -2.0f, -1.0f);
    p = plain(0.0f, 1);
    p.frequency_penalty = 0.25f;
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 4.25f);
    CHECK_PENALIZED(p, hist, 6, 1, -2.0f, -2.25f);
    p.frequency_penalty = -0.25f;
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 5.75f);
    p = plain(0.0f, 1);
    p.presence_penalty = 0.5f;
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 4.5f);
    CHECK_PENALIZED(p, hist, 6, 1, -2.0f, -2.5f);
    CHECK_PENALIZED(p, hist, 6, 2, 1.5f, 1.5f);
    p.presence_penalty = -0.5f;
    CHECK_PENALIZED(p, hist, 6, 3, 5.0f, 5.5f);
}

/* With no history the penalties change nothing: each logit stays as it is, and a penalized
 * sampler draws exactly the tokens an unpenalized one with the same seed draws (its one
 * random number per call goes through the same weights). The same with a history and the
 * window off (repeat_last_n 0), and after reset. */
TEST(sample_penalties_empty_history_change_nothing) {
    plumb_sampler_params p = plain(0.0f, 1);
    p.repeat_penalty = 1.25f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    const float base[4] = {0.0f, -2.0f, 1.5f, 5.0f};
    for (int t = 0; t < 4; t++) CHECK_PENALIZED(p, NULL, 0, t, base[t], base[t]);
    const int32_t hist[3] = {0, 1, 3};
    p.repeat_last_n = 0;
    for (int t = 0; t < 4; t++) CHECK_PENALIZED(p, hist, 3, t, base[t], base[t]);

    enum { N = 64, DRAWS = 3000 };
    static float logits[N];
    for (int i = 0; i < N; i++) logits[i] = (float)(tuniform() * 6.0 - 3.0);
    for (int variant = 0; variant < 3; variant++) {
        plumb_sampler_params q = plumb_sampler_default_params(), r;
        q.top_k = variant == 2 ? 0 : 20;
        q.min_p = 0.01f;
        q.seed = 700 + variant;
        r = q;
        r.repeat_penalty = 1.3f;
        r.presence_penalty = 0.7f;
        r.frequency_penalty = -0.2f;
        r.repeat_last_n = variant == 1 ? 0 : 64;
        plumb_sampler_t *plainer = make(&q, N), *pen = make(&r, N);
        if (!plainer || !pen) return;
        if (variant == 1) /* a history, but the window is off */
            for (int i = 0; i < 40; i++) plumb_sampler_accept(pen, i);
        if (variant == 2) { /* a history, then reset */
            for (int i = 0; i < 40; i++) plumb_sampler_accept(pen, i);
            plumb_sampler_reset(pen);
        }
        int differ = 0;
        for (int i = 0; i < DRAWS; i++) differ += plumb_sampler_sample(plainer, logits) != plumb_sampler_sample(pen, logits);
        CHECK_EQ_INT(differ, 0);
        plumb_sampler_free(plainer);
        plumb_sampler_free(pen);
    }
}

TEST(sample_penalized_distribution) {
    /* the penalized logits feed the softmax: logits 1, 1, 1; token 0 seen twice with
     * repeat 2 and frequency 0.25: 1/2 - 0.5 = 0; token 2 once with presence... off */
    const float logits[3] = {1.0f, 1.0f, 1.0f};
    plumb_sampler_params p = plain(1.0f, 51);
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.25f;
    plumb_sampler_t *s = make(&p, 3);
    if (!s) return;
    plumb_sampler_accept(s, 0);
    plumb_sampler_accept(s, 0);
    int hist[3] = {0, 0, 0};
    const int draws = 60000;
    for (int i = 0; i < draws; i++) hist[plumb_sampler_sample(s, logits)]++;
    plumb_sampler_free(s);
    double z = exp(0.0) + 2 * exp(1.0), x2 = 0.0;
    double expect[3] = {1.0 / z, exp(1.0) / z, exp(1.0) / z};
    for (int i = 0; i < 3; i++) x2 += (hist[i] - expect[i] * draws) * (hist[i] - expect[i] * draws) / (expect[i] * draws);
    CHECK(x2 <= chi2_bound(2));
}

/* ---- NaN and inf ----------------------------------------------------------------------- */

/* Greedy picks, on vocabularies with a tail past the vector width (8 lanes, 32 in the AVX2
 * kernel's four chains) and logits mixing NaN, +-inf, FLT_MAX and ties, the lowest id of the
 * largest value with NaN as -inf and +inf as FLT_MAX (so +inf and FLT_MAX tie). */
TEST(sample_greedy_special_values) {
    const int sizes[] = {1, 5, 8, 13, 31, 32, 40, 96, 1001};
    static float logits[1001];
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int n = sizes[si];
        plumb_sampler_params p = plain(0.0f, 1);
        plumb_sampler_t *s = make(&p, n);
        if (!s) return;
        for (int round = 0; round < 300; round++) {
            for (int i = 0; i < n; i++) {
                const double u = tuniform();
                logits[i] = u < 0.1 ? NAN : u < 0.15 ? -INFINITY : u < 0.17 ? INFINITY : u < 0.19 ? FLT_MAX
                                                                                 : (float)(int)(tuniform() * 8.0);
            }
            int32_t want = 0;
            float best = -INFINITY;
            for (int i = 0; i < n; i++) {
                const float v = isnan(logits[i]) ? -INFINITY : logits[i] == INFINITY ? FLT_MAX : logits[i];
                if (v > best) best = v, want = i;
            }
            CHECK_EQ_INT(plumb_sampler_sample(s, logits), want);
            CHECK_EQ_INT(plumb__argmax_portable(logits, n), want);
            if (plumb__argmax_avx2()) CHECK_EQ_INT(plumb__argmax_avx2()(logits, n), want);
            CHECK_EQ_INT(plumb__argmax_portable(logits, n), want);
            if (plumb__argmax_avx2()) CHECK_EQ_INT(plumb__argmax_avx2()(logits, n), want);
        }
        plumb_sampler_free(s);
    }
}

TEST(sample_nan_inf_logits) {
    enum { N = 64 };
    float logits[N];
    plumb_sampler_params greedy = plain(0.0f, 1), dflt = plumb_sampler_default_params(), full = plain(1.0f, 2);
    plumb_sampler_params top_p_only = plain(1.0f, 3);
    top_p_only.top_p = 0.9f;
    const plumb_sampler_params *ps[4] = {&greedy, &dflt, &full, &top_p_only};
    for (int pi = 0; pi < 4; pi++) {
        plumb_sampler_t *s = make(ps[pi], N);
        if (!s) return;
        /* all NaN: a valid id (the lowest) */
        for (int i = 0; i < N; i++) logits[i] = NAN;
        CHECK_EQ_INT(plumb_sampler_sample(s, logits), 0);
        /* all -inf likewise */
        for (int i = 0; i < N; i++) logits[i] = -INFINITY;
        CHECK_EQ_INT(plumb_sampler_sample(s, logits), 0);
        /* NaN counts as -inf: only the finite token can come up */
        for (int i = 0; i < N; i++) logits[i] = i % 2 ? NAN : -INFINITY;
        logits[37] = -5.0f;
        for (int k = 0; k < 200; k++) CHECK_EQ_INT(plumb_sampler_sample(s, logits), 37);
        /* NaN first, finite rest: NaN never wins */
        for (int i = 0; i < N; i++) logits[i] = (float)i * 0.01f;
        logits[0] = NAN;
        logits[N - 1] = NAN;
        for (int k = 0; k < 200; k++) {
            int32_t t = plumb_sampler_sample(s, logits);
            CHECK(t > 0 && t < N - 1);
        }
        /* +inf beats everything, and two +inf split the draws between them */
        for (int i = 0; i < N; i++) logits[i] = (float)i;
        logits[10] = INFINITY;
        for (int k = 0; k < 200; k++) CHECK_EQ_INT(plumb_sampler_sample(s, logits), 10);
        logits[20] = INFINITY;
        int n10 = 0;
        for (int k = 0; k < 400; k++) {
            int32_t t = plumb_sampler_sample(s, logits);
            CHECK(t == 10 || t == 20);
            n10 += t == 10;
        }
        if (ps[pi] == &greedy) CHECK_EQ_INT(n10, 400);
        else CHECK(n10 > 100 && n10 < 300);
        plumb_sampler_free(s);
    }
    /* penalties on inf/NaN logits stay sane */
    plumb_sampler_params p = plain(1.0f, 4);
    p.repeat_penalty = 0.5f;
    p.presence_penalty = -1e30f;
    plumb_sampler_t *s = make(&p, N);
    if (!s) return;
    for (int i = 0; i < N; i++) logits[i] = i % 3 == 0 ? NAN : (i % 3 == 1 ? FLT_MAX : -INFINITY);
    for (int i = 0; i < N; i++) plumb_sampler_accept(s, i);
    for (int k = 0; k < 100; k++) {
        int32_t t = plumb_sampler_sample(s, logits);
        CHECK(t >= 0 && t < N && t % 3 == 1);
    }
    plumb_sampler_free(s);
    /* NULL logits or sampler do not crash */
    CHECK_EQ_INT(plumb_sampler_sample(NULL, logits), 0);
    plumb_sampler_accept(NULL, 1);
    plumb_sampler_reset(NULL);
}

TEST(sample_tiny_temperature) {
    /* a denormal temperature behaves like greedy and produces no NaN */
    const float logits[4] = {0.0f, 3.0f, 3.0f - 1e-6f, -1.0f};
    for (int path = 0; path < 3; path++) {
        plumb_sampler_params p = plain(1e-45f, 5);
        if (path == 1) p.top_k = 3;
        if (path == 2) p.top_p = 0.5f;
        plumb_sampler_t *s = make(&p, 4);
        if (!s) return;
        for (int k = 0; k < 50; k++) CHECK_EQ_INT(plumb_sampler_sample(s, logits), 1);
        plumb_sampler_free(s);
    }
}

/* ---- randomized smoke ---------------------------------------------------------------- */

TEST(sample_random_params_smoke) {
    static float logits[80];
    for (int round = 0; round < 3000; round++) {
        int32_t n = 1 + (int32_t)(trand() % 80);
        plumb_sampler_params p = plumb_sampler_default_params();
        p.temperature = (float)(tuniform() * 3.0 - 0.5);
        p.top_k = (int32_t)(trand() % 100) - 10;
        p.top_p = (float)(0.01 + 0.99 * tuniform());
        if (trand() % 3 == 0) p.top_p = 1.0f;
        p.min_p = trand() % 2 ? 0.0f : (float)tuniform();
        p.repeat_penalty = (float)(0.5 + tuniform());
        p.repeat_last_n = (int32_t)(trand() % 10) - 1;
        p.presence_penalty = (float)(tuniform() - 0.5);
        p.frequency_penalty = (float)(tuniform() - 0.5);
        p.seed = trand();
        plumb_sampler_t *s = make(&p, n);
        if (!s) return;
        for (int step = 0; step < 10; step++) {
            for (int i = 0; i < n; i++) {
                uint64_t r = trand() % 20;
                logits[i] = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ? -INFINITY : (float)(tuniform() * 40 - 20);
            }
            int32_t t = plumb_sampler_sample(s, logits);
            CHECK(t >= 0 && t < n);
            plumb_sampler_accept(s, t);
        }
        plumb_sampler_free(s);
    }
}
