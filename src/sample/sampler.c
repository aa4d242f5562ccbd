/* sampler.c — the token sampler behind plumb_sampler_*: repetition, presence and frequency
 * penalties over a window of accepted tokens, then greedy argmax or temperature, top-k,
 * top-p, min-p and a draw from a seeded xoshiro256** generator.
 *
 * Every buffer is sized for n_vocab at create; sample and accept allocate nothing.
 * Candidate order is a total order: higher logit first, equal logits by lower id, so the
 * top-k set and every tie-break are the same whatever selection algorithm runs.
 * Cost for 262144 logits: one copy pass, one max pass, then either a heap pass (small
 * top_k), a quickselect (large top_k) or one exp pass (top_k off). Nothing is sorted:
 * top-p finds its nucleus with a weighted quickselect over the survivors of top-k / min-p
 * (with top-k off, over the one exponent bucket of weights where the nucleus ends), in
 * expected linear time. */
#include "core/error.h"
#include "sample/argmax.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest finite penalty window; longer ones are refused (use -1 for the whole history). */
#define PLUMB_SAMPLER_MAX_WINDOW (1 << 20)
/* Largest vocabulary a sampler accepts (buffers take ~36 bytes per entry: 9.4 MB for 262144). */
#define PLUMB_SAMPLER_MAX_VOCAB (1 << 26)
/* top_k at or below this uses a bounded heap; above it a quickselect. */
#define PLUMB_SAMPLER_HEAP_K 512
/* Floats per chunk in the skipping scans (select_heap, the argmax search). */
#define PLUMB_SAMPLER_CHUNK 16
/* Tokens per block of partial sums for the full-vocabulary draw. */
#define PLUMB_SAMPLER_BLOCK 256
/* Buckets of weights by binary exponent (see weight_bucket). */
#define PLUMB_SAMPLER_BUCKETS 128

typedef struct cand {
    float v;    /* logit after penalties */
    int32_t id; /* token id */
    double w;   /* weight exp((v - max) / T): the max token has 1 */
} cand;

struct plumb_sampler {
    plumb_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4]; /* xoshiro256** state */

    float *logits; /* [n_vocab] sanitized, penalized copy of the caller's logits */
    float *masked; /* [n_vocab] the caller's logits with disallowed tokens at -inf (sample_masked) */
    float *e;      /* [n_vocab] exp((logit - max) / T) for the full-vocabulary paths */
    double *block_sum; /* [n_vocab / BLOCK + 1] sums of e per block of PLUMB_SAMPLER_BLOCK tokens */
    double bucket_mass[PLUMB_SAMPLER_BUCKETS]; /* weight per exponent bucket (top-p, top-k off) */
    cand *cands;   /* [n_vocab] candidates (top-k survivors or threshold survivors) */

    /* Penalty history: counts of each token in the window, the distinct tokens in it
     * (uniq, with pos[token] its index there or -1), and the window itself as a ring. */
    int32_t *counts; /* [n_vocab] */
    int32_t *uniq;   /* [n_vocab] */
    int32_t *pos;    /* [n_vocab] */
    int32_t n_uniq;
    int32_t *ring; /* [window] when repeat_last_n > 0, else NULL */
    int32_t window, ring_head, ring_len;
};

/* ---- random numbers: splitmix64 seeds xoshiro256** ------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

static void rng_seed(plumb_sampler_t *s) {
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

/* Uniform double in [0, 1) with 53 random bits. */
static double rng_uniform(plumb_sampler_t *s) { return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53; }

/* ---- params ---------------------------------------------------------------------------- */

plumb_sampler_params plumb_sampler_default_params(void) {
    plumb_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.seed = 0xC0FFEEu;
    return p;
}

static plumb_status check_params(const plumb_sampler_params *p, int32_t n_vocab) {
    if (n_vocab <= 0 || n_vocab > PLUMB_SAMPLER_MAX_VOCAB)
        return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: n_vocab %d out of range (1..%d)", (int)n_vocab,
                           PLUMB_SAMPLER_MAX_VOCAB);
    if (!isfinite(p->temperature))
        return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: temperature must be a finite number (got %g)",
                           (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: top_p must be in (0, 1] (got %g; 1 turns it off)",
                           (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: min_p must be in [0, 1] (got %g; 0 turns it off)",
                           (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return plumb__fail(PLUMB_E_INVALID_ARG,
                           "sampler: repeat_penalty must be a finite number > 0 (got %g; 1 turns it off)",
                           (double)p->repeat_penalty);
    if (!isfinite(p->presence_penalty))
        return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: presence_penalty must be finite (got %g)",
                           (double)p->presence_penalty);
    if (!isfinite(p->frequency_penalty))
        return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: frequency_penalty must be finite (got %g)",
                           (double)p->frequency_penalty);
    if (p->repeat_last_n < -1 || p->repeat_last_n > PLUMB_SAMPLER_MAX_WINDOW)
        return plumb__fail(PLUMB_E_INVALID_ARG,
                           "sampler: repeat_last_n must be -1 (whole history), 0 (off) or 1..%d (got %d)",
                           PLUMB_SAMPLER_MAX_WINDOW, (int)p->repeat_last_n);
    return PLUMB_OK;
}

/* ---- create / free / history ----------------------------------------------------------- */

plumb_status plumb_sampler_create(const plumb_sampler_params *p, int32_t n_vocab, plumb_sampler_t **out) {
    if (!out) return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: out is NULL");
    *out = NULL;
    if (!p) return plumb__fail(PLUMB_E_INVALID_ARG, "sampler: params is NULL");
    plumb_status st = check_params(p, n_vocab);
    if (st != PLUMB_OK) return st;

    plumb_sampler_t *s = calloc(1, sizeof *s);
    if (!s) return plumb__fail(PLUMB_E_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t n = (size_t)n_vocab;
    s->logits = malloc(n * sizeof *s->logits);
    s->masked = malloc(n * sizeof *s->masked);
    s->e = malloc(n * sizeof *s->e);
    s->cands = malloc(n * sizeof *s->cands);
    s->block_sum = malloc((n / PLUMB_SAMPLER_BLOCK + 1) * sizeof *s->block_sum);
    s->counts = calloc(n, sizeof *s->counts);
    s->uniq = malloc(n * sizeof *s->uniq);
    s->pos = malloc(n * sizeof *s->pos);
    s->window = p->repeat_last_n;
    if (s->window > 0) s->ring = malloc((size_t)s->window * sizeof *s->ring);
    if (!s->logits || !s->masked || !s->e || !s->cands || !s->block_sum || !s->counts || !s->uniq || !s->pos ||
        (s->window > 0 && !s->ring)) {
        plumb_sampler_free(s);
        return plumb__fail(PLUMB_E_NOMEM, "sampler: out of memory for a vocabulary of %d", (int)n_vocab);
    }
    for (size_t i = 0; i < n; i++) s->pos[i] = -1;
    rng_seed(s);
    *out = s;
    return PLUMB_OK;
}

void plumb_sampler_free(plumb_sampler_t *s) {
    if (!s) return;
    free(s->logits);
    free(s->masked);
    free(s->e);
    free(s->cands);
    free(s->block_sum);
    free(s->counts);
    free(s->uniq);
    free(s->pos);
    free(s->ring);
    free(s);
}

void plumb_sampler_reset(plumb_sampler_t *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->n_uniq; i++) {
        s->counts[s->uniq[i]] = 0;
        s->pos[s->uniq[i]] = -1;
    }
    s->n_uniq = 0;
    s->ring_head = s->ring_len = 0;
    rng_seed(s);
}

static void count_add(plumb_sampler_t *s, int32_t t) {
    if (s->counts[t]++ == 0) {
        s->pos[t] = s->n_uniq;
        s->uniq[s->n_uniq++] = t;
    }
}

static void count_remove(plumb_sampler_t *s, int32_t t) {
    if (--s->counts[t] == 0) {
        int32_t i = s->pos[t], last = s->uniq[--s->n_uniq];
        s->uniq[i] = last;
        s->pos[last] = i;
        s->pos[t] = -1;
    }
}

void plumb_sampler_accept(plumb_sampler_t *s, int32_t token) {
    if (!s || token < 0 || token >= s->n_vocab || s->window == 0) return;
    if (s->window > 0) {
        if (s->ring_len == s->window) {
            count_remove(s, s->ring[s->ring_head]);
        } else {
            s->ring_len++;
        }
        s->ring[s->ring_head] = token;
        s->ring_head = (s->ring_head + 1) % s->window;
    }
    count_add(s, token);
}

/* ---- candidate selection ----------------------------------------------------------------- */

/* true when a ranks before b: higher logit, or equal logit and lower id. */
static inline bool cand_before(const cand *a, const cand *b) {
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static inline void cand_swap(cand *a, cand *b) {
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Min-heap on rank (the root is the worst kept candidate). */
static void heap_sift_down(cand *h, int32_t n, int32_t i) {
    cand x = h[i];
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&h[c], &h[c + 1])) c++; /* the worse child */
        if (!cand_before(&x, &h[c])) break;                   /* x is worse than both: stays */
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Sorts a[0..n) best first, in place (heapsort: no allocation, O(n log n) at worst). The
 * fallback of the quickselects when a run goes too deep. */
static void sort_cands(cand *a, int32_t n) {
    for (int32_t i = n / 2 - 1; i >= 0; i--) heap_sift_down(a, n, i);
    for (int32_t end = n - 1; end > 0; end--) { /* the root is the worst: move it to the back */
        cand_swap(&a[0], &a[end]);
        heap_sift_down(a, end, 0);
    }
}

/* The largest of the PLUMB_SAMPLER_CHUNK floats at x (written so that it vectorizes). */
static inline float chunk_max(const float *x) {
    float m[8];
    for (int j = 0; j < 8; j++) m[j] = x[j] > x[j + 8] ? x[j] : x[j + 8];
    for (int j = 0; j < 4; j++) m[j] = m[j] > m[j + 4] ? m[j] : m[j + 4];
    m[0] = m[0] > m[2] ? m[0] : m[2];
    m[1] = m[1] > m[3] ? m[1] : m[3];
    return m[0] > m[1] ? m[0] : m[1];
}

/* The k best of logits[0..n) into out[0..k) in no particular order (k small). Chunks whose
 * max does not beat the worst kept candidate are skipped whole. */
static void select_heap(const float *logits, int32_t n, int32_t k, cand *out) {
    for (int32_t i = 0; i < k; i++) out[i] = (cand){logits[i], i, 0.0};
    for (int32_t i = k / 2 - 1; i >= 0; i--) heap_sift_down(out, k, i);
    float worst = out[0].v;
    int32_t i = k;
    for (; i < n; i++) {
        if (i % PLUMB_SAMPLER_CHUNK == 0 && n - i >= PLUMB_SAMPLER_CHUNK) {
            if (!(chunk_max(logits + i) > worst)) {
                i += PLUMB_SAMPLER_CHUNK - 1;
                continue;
            }
        }
        /* ids rise, so an equal logit never ranks before the root: a strict test suffices */
        if (logits[i] > worst) {
            out[0] = (cand){logits[i], i, 0.0};
            heap_sift_down(out, k, 0);
            worst = out[0].v;
        }
    }
}

/* Hoare partition of a[lo..hi] (hi > lo) around the median of a[lo], a[mid], a[hi]: on
 * return a[lo..*pj] rank before or at the pivot, a[*pi..hi] at or after it, and whatever
 * lies between (*pj < k < *pi) is the pivot itself. Ranks are distinct (ids are). */
static void partition(cand *a, int32_t lo, int32_t hi, int32_t *pi, int32_t *pj) {
    int32_t mid = lo + (hi - lo) / 2;
    if (cand_before(&a[mid], &a[lo])) cand_swap(&a[mid], &a[lo]);
    if (cand_before(&a[hi], &a[lo])) cand_swap(&a[hi], &a[lo]);
    if (cand_before(&a[hi], &a[mid])) cand_swap(&a[hi], &a[mid]);
    cand pivot = a[mid];
    int32_t i = lo, j = hi;
    while (i <= j) {
        while (cand_before(&a[i], &pivot)) i++;
        while (cand_before(&pivot, &a[j])) j--;
        if (i <= j) {
            cand_swap(&a[i], &a[j]);
            i++;
            j--;
        }
    }
    *pi = i;
    *pj = j;
}

/* Rearranges a[0..n) so that a[0..k) are the k best (unordered), by quickselect; a run
 * that goes too deep finishes with a sort of what is left. */
static void select_quick(cand *a, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1; /* the k-th boundary lies within [lo, hi] */
    for (int depth = 0; hi > lo; depth++) {
        if (depth > 64) {
            sort_cands(a + lo, hi - lo + 1);
            return;
        }
        int32_t i, j;
        partition(a, lo, hi, &i, &j);
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else return;
    }
}

/* Top-p over a[0..n): rearranges a so that a[0..m) are the m best candidates, for the
 * smallest m whose weight sum reaches `target` (all n when none does), and returns m.
 * A weighted quickselect: nothing is sorted unless a run goes too deep. */
static int32_t select_nucleus(cand *a, int32_t n, double target) {
    int32_t lo = 0, hi = n - 1; /* a[0..lo) are taken; the answer m is in (lo, hi + 1] */
    double need = target;       /* weight still to take, > 0 */
    for (int depth = 0; hi > lo; depth++) {
        if (depth > 64) {
            sort_cands(a + lo, hi - lo + 1);
            for (int32_t k = lo; k <= hi; k++) {
                need -= a[k].w;
                if (need <= 0.0) return k + 1;
            }
            return n;
        }
        int32_t i, j;
        partition(a, lo, hi, &i, &j);
        double left = 0.0;
        for (int32_t k = lo; k <= j; k++) left += a[k].w;
        if (left >= need) {
            hi = j;
            continue;
        }
        need -= left;
        for (int32_t k = j + 1; k < i; k++) { /* the pivot */
            need -= a[k].w;
            if (need <= 0.0) return k + 1;
        }
        lo = i;
    }
    return hi + 1;
}

/* ---- sampling ------------------------------------------------------------------------- */

/* The largest of x[0..n) (no NaN in x), with eight independent running maxima so that the
 * compiler can vectorize and no single dependency chain limits the loop. */
static float max_of(const float *x, int32_t n) {
    float m[8];
    for (int j = 0; j < 8; j++) m[j] = -INFINITY;
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float r = m[0];
    for (int j = 1; j < 8; j++) r = m[j] > r ? m[j] : r;
    return r;
}

/* The sum of x[0..n) in double, in eight independent partial sums (vectorizable). */
static double sum_of(const float *x, int32_t n) {
    double m[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m[j] += x[i + j];
    for (; i < n; i++) m[0] += x[i];
    return ((m[0] + m[1]) + (m[2] + m[3])) + ((m[4] + m[5]) + (m[6] + m[7]));
}

/* e^d for d <= 0 (d = -inf gives 0), relative error below 3e-7: range reduction
 * d = n ln2 + r with |r| <= ln2/2, a degree-6 Taylor polynomial for e^r (truncation error
 * below r^7/7! = 1.3e-7) and 2^n from its bits. Below -87 (where e^d < 2^-125) it returns
 * 0. The clamp is done on the bits, not with float compares, because GCC will not
 * if-convert a float compare under its default -ftrapping-math; so the loops over the
 * vocabulary vectorize (glibc's expf is a call per element). */
typedef union fbits {
    float f;
    uint32_t u;
} fbits;

static inline float exp_nonpos(float d) {
    fbits in = {.f = d};
    const uint32_t big = 0u - (uint32_t)((in.u & 0x7FFFFFFFu) > 0x42AE0000u); /* |d| > 87: all ones */
    in.u = (in.u & ~big) | (0xC2AE0000u & big);                               /* clamp d to -87 */
    const float t = in.f * 1.44269504088896341f;                              /* d / ln2 */
    const float nf = (t + 12582912.0f) - 12582912.0f;                  /* round: 1.5 * 2^23 trick */
    const float r = (in.f - nf * 0.693359375f) + nf * 2.12194440e-4f; /* ln2 = 0.693359375 - 2.12e-4 */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const fbits two_n = {.u = (uint32_t)((int32_t)nf + 127) << 23}; /* n in [-126, 0] */
    fbits out = {.f = p * two_n.f};
    out.u &= ~big;
    return out.f;
}

/* Bucket of a weight e in [0, 1] by its binary exponent: 0 for e = 1, b for e in
 * [2^-b, 2^(1-b)), PLUMB_SAMPLER_BUCKETS - 1 for zero and subnormals. */
static inline int weight_bucket(float e) {
    uint32_t bits;
    memcpy(&bits, &e, sizeof bits);
    int b = 127 - (int)(bits >> 23);
    return b < 0 ? 0 : b;
}

/* Returns the index in c[0..n) that the draw u in [0,1) lands on, weighting by w (sum
 * `total`); rounding past the end lands on the last positive weight. */
static int32_t draw_cand(const cand *c, int32_t n, double total, double u) {
    double target = u * total, acc = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < n; i++) {
        if (c[i].w > 0.0) {
            acc += c[i].w;
            last = i;
            if (target < acc) return i;
        }
    }
    return last;
}

/* Sums e[0..n) per block of PLUMB_SAMPLER_BLOCK into bs[] and returns the total. */
static double block_sums(const float *e, int32_t n, double *bs) {
    double total = 0.0;
    for (int32_t b = 0, i = 0; i < n; b++, i += PLUMB_SAMPLER_BLOCK) {
        int32_t len = n - i < PLUMB_SAMPLER_BLOCK ? n - i : PLUMB_SAMPLER_BLOCK;
        bs[b] = sum_of(e + i, len);
        total += bs[b];
    }
    return total;
}

/* Draws from the whole vocabulary with weights e[] (block sums bs[], sum `total`): skips
 * whole blocks, then walks the block the draw lands in. Rounding past the end lands on the
 * last positive weight. */
static int32_t draw_vocab(const float *e, const double *bs, int32_t n, double total, double u) {
    const double target = u * total;
    double acc = 0.0;
    for (int32_t b = 0, i0 = 0; i0 < n; b++, i0 += PLUMB_SAMPLER_BLOCK) {
        if (!(target < acc + bs[b])) {
            acc += bs[b];
            continue;
        }
        int32_t end = n - i0 < PLUMB_SAMPLER_BLOCK ? n : i0 + PLUMB_SAMPLER_BLOCK;
        for (int32_t i = i0; i < end; i++) {
            acc += e[i];
            if (e[i] > 0.0f && target < acc) return i;
        }
        /* the walk summed a little less than bs[b]: go on from the next block */
    }
    int32_t last = n - 1;
    while (last > 0 && !(e[last] > 0.0f)) last--;
    return last;
}

static void apply_penalties(plumb_sampler_t *s) {
    const plumb_sampler_params *p = &s->p;
    if (s->window == 0 || s->n_uniq == 0) return;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f) return;
    for (int32_t i = 0; i < s->n_uniq; i++) {
        int32_t t = s->uniq[i];
        float x = s->logits[t];
        if (p->repeat_penalty != 1.0f) x = x > 0.0f ? x / p->repeat_penalty : x * p->repeat_penalty;
        x -= (float)s->counts[t] * p->frequency_penalty + p->presence_penalty;
        /* a penalty below 1 or a negative one can push a logit to +inf, a large one a finite
         * logit to -inf: keep finite logits finite (a masked token, at -inf, stays there, so an
         * allowed one always ranks above it) */
        s->logits[t] = isnan(x) || s->logits[t] == -INFINITY ? -INFINITY : x > FLT_MAX ? FLT_MAX : x < -FLT_MAX ? -FLT_MAX : x;
    }
}

/* A logit as the sampler sees it: NaN as -inf, +inf as the largest float. */
static inline float sane(float v) { return v != v ? -INFINITY : (v == INFINITY ? FLT_MAX : v); }

/* Greedy choice without penalties, read straight from the logits (no copy): the lowest id
 * holding the largest sane() value, as the full path picks it. One pass: lane j keeps the
 * largest value among ids = j mod 8 and the first id holding it (a NaN never compares
 * greater, so it counts as -inf); all -inf or NaN gives id 0. */
static int32_t greedy_pick(const float *m, const int32_t *at, int32_t lanes, const float *in, int32_t i, int32_t n) {
    float vmax = -INFINITY;
    int32_t best = 0;
    for (int32_t j = 0; j < lanes; j++)
        if (m[j] > vmax || (m[j] == vmax && at[j] < best)) vmax = m[j], best = at[j];
    for (; i < n; i++)
        if (sane(in[i]) > vmax) vmax = sane(in[i]), best = i;
    return vmax == -INFINITY ? 0 : best;
}

int32_t plumb__argmax_portable(const float *in, int32_t n) {
    float m[8];
    int32_t at[8];
    for (int j = 0; j < 8; j++) m[j] = -INFINITY, at[j] = j;
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            const float v = sane(in[i + j]);
            at[j] = v > m[j] ? i + j : at[j];
            m[j] = v > m[j] ? v : m[j];
        }
    return greedy_pick(m, at, n < 8 ? 0 : 8, in, i, n);
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
/* The same with AVX2 (the compiler does not vectorize the portable loop), in four chains of
 * 8 lanes (a lane then keeps ids = j mod 32): one chain's compare and blend wait on the last
 * ones, and held a step to their latency (262144 logits, Gemma 3: 180 us a token on an Ice Lake
 * Xeon, with the logits in L3); greedy_pick picks among the 32 lanes as among 8. */
__attribute__((target("avx2"))) static int32_t greedy_argmax_avx2(const float *in, int32_t n) {
    __m256 m[4];
    __m256i at[4], id[4];
    const __m256 inf = _mm256_set1_ps(INFINITY), big = _mm256_set1_ps(FLT_MAX);
    const __m256i step = _mm256_set1_epi32(32);
    for (int c = 0; c < 4; c++) {
        m[c] = _mm256_set1_ps(-INFINITY);
        id[c] = at[c] = _mm256_setr_epi32(8 * c, 8 * c + 1, 8 * c + 2, 8 * c + 3, 8 * c + 4, 8 * c + 5, 8 * c + 6, 8 * c + 7);
    }
    int32_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int c = 0; c < 4; c++) {
            __m256 v = _mm256_loadu_ps(in + i + 8 * c);
            v = _mm256_blendv_ps(v, big, _mm256_cmp_ps(v, inf, _CMP_EQ_OQ));
            const __m256 gt = _mm256_cmp_ps(v, m[c], _CMP_GT_OQ);
            m[c] = _mm256_blendv_ps(m[c], v, gt);
            at[c] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(at[c]), _mm256_castsi256_ps(id[c]), gt));
            id[c] = _mm256_add_epi32(id[c], step);
        }
    float mv[32];
    int32_t av[32];
    for (int c = 0; c < 4; c++) {
        _mm256_storeu_ps(mv + 8 * c, m[c]);
        _mm256_storeu_si256((__m256i *)(void *)(av + 8 * c), at[c]);
    }
    return greedy_pick(mv, av, n < 32 ? 0 : 32, in, i, n);
}
#endif

plumb_argmax_fn plumb__argmax_avx2(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    if (plumb_cpu_get()->avx2) return greedy_argmax_avx2;
#endif
    return NULL;
}

static int32_t greedy_argmax(const float *in, int32_t n) {
    const plumb_argmax_fn fast = plumb__argmax_avx2();
    return fast ? fast(in, n) : plumb__argmax_portable(in, n);
}

int32_t plumb_sampler_sample(plumb_sampler_t *s, const float *in) {
    if (!s || !in) return 0;
    const plumb_sampler_params *p = &s->p;
    const int32_t n = s->n_vocab;
    float *x = s->logits;
    const bool penalized = s->window != 0 && s->n_uniq != 0 &&
                           (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
    if (p->temperature <= 0.0f && !penalized) return greedy_argmax(in, n);

    /* [n] copy: NaN counts as -inf, +inf as the largest float so that max-subtraction
     * stays finite */
    for (int32_t i = 0; i < n; i++) {
        float v = in[i];
        x[i] = isnan(v) ? -INFINITY : (v == INFINITY ? FLT_MAX : v);
    }
    apply_penalties(s);

    const float vmax = max_of(x, n);
    int32_t best = 0; /* the lowest id holding the max */
    while (best + PLUMB_SAMPLER_CHUNK <= n && chunk_max(x + best) < vmax) best += PLUMB_SAMPLER_CHUNK;
    while (best < n - 1 && x[best] != vmax) best++;
    if (p->temperature <= 0.0f) return best;

    const double u = rng_uniform(s);    /* exactly one draw per non-greedy call */
    if (vmax == -INFINITY) return best; /* nothing is possible: the lowest id */

    const double inv_t = 1.0 / (double)p->temperature;
    const bool use_top_p = p->top_p < 1.0f;
    const bool use_min_p = p->min_p > 0.0f;
    const bool use_top_k = p->top_k > 0 && p->top_k < n;
    cand *c = s->cands;
    int32_t nc;     /* candidates in c[0..nc) */
    double z = 0.0; /* the weight of the top-k set (all tokens when top-k is off) */

    if (use_top_k) {
        const int32_t k = p->top_k;
        if (k <= PLUMB_SAMPLER_HEAP_K) {
            select_heap(x, n, k, c);
        } else {
            for (int32_t i = 0; i < n; i++) c[i] = (cand){x[i], i, 0.0};
            select_quick(c, n, k);
        }
        nc = k;
        for (int32_t i = 0; i < nc; i++) {
            c[i].w = exp(((double)c[i].v - (double)vmax) * inv_t);
            z += c[i].w;
        }
        if (use_min_p) { /* keep w >= min_p * w(max) = min_p */
            int32_t m = 0;
            for (int32_t i = 0; i < nc; i++)
                if (c[i].w >= (double)p->min_p) c[m++] = c[i];
            nc = m;
        }
    } else {
        float *e = s->e;
        const float inv_tf = inv_t < (double)FLT_MAX ? (float)inv_t : FLT_MAX; /* 0 * inv_tf stays 0 */
        if (!use_top_p) {
            for (int32_t i = 0; i < n; i++) e[i] = exp_nonpos((x[i] - vmax) * inv_tf);
            z = block_sums(e, n, s->block_sum);
            if (!use_min_p) return draw_vocab(e, s->block_sum, n, z, u);
            nc = 0; /* min-p alone: the tokens with e >= min_p */
            for (int32_t i = 0; i < n; i++)
                if (e[i] > 0.0f && (double)e[i] >= (double)p->min_p) c[nc++] = (cand){x[i], i, (double)e[i]};
        } else {
            /* Top-p over the whole vocabulary without sorting it: sum the weight per
             * exponent bucket, find the bucket bc where the running sum (from the top)
             * reaches top_p * z. Tokens in higher buckets are all in the nucleus; only
             * those of bucket bc need ranking, by a weighted quickselect. */
            double *bm = s->bucket_mass;
            for (int b = 0; b < PLUMB_SAMPLER_BUCKETS; b++) bm[b] = 0.0;
            for (int32_t i = 0; i < n; i++) e[i] = exp_nonpos((x[i] - vmax) * inv_tf);
            for (int32_t i = 0; i < n; i++) bm[weight_bucket(e[i])] += e[i];
            z = sum_of(e, n);
            const double target = (double)p->top_p * z;
            double above = 0.0; /* weight of the buckets before bc */
            int bc = 0;
            while (bc < PLUMB_SAMPLER_BUCKETS - 1 && above + bm[bc] < target) above += bm[bc++];
            const double lo = use_min_p ? (double)p->min_p : 0.0;
            int32_t na = 0, nb = 0; /* higher buckets from the front, bucket bc from the back */
            for (int32_t i = 0; i < n; i++) {
                float ei = e[i];
                if (!(ei > 0.0f) || (double)ei < lo) continue;
                int b = weight_bucket(ei);
                if (b < bc) c[na++] = (cand){x[i], i, (double)ei};
                else if (b == bc) c[n - 1 - nb++] = (cand){x[i], i, (double)ei};
            }
            memmove(c + na, c + n - nb, (size_t)nb * sizeof *c);
            /* min-p keeps a top-ranked subset, so ranking what is left of bucket bc against
             * the weight still needed gives the nucleus of the min-p survivors */
            nc = na + (nb > 0 ? select_nucleus(c + na, nb, target - above) : 0);
        }
    }

    /* top-p over the top-k set, then min-p: min-p keeps a top-ranked subset with the max in
     * it, so taking the nucleus (weighed against z, the whole top-k set) of the min-p
     * survivors gives the same set as min-p applied after top-p. (With top-k off, top-p
     * was done above.) */
    if (use_top_k && use_top_p && nc > 0) nc = select_nucleus(c, nc, (double)p->top_p * z);
    double total = 0.0;
    for (int32_t i = 0; i < nc; i++) total += c[i].w;
    if (nc <= 0 || !(total > 0.0)) return best;
    return c[draw_cand(c, nc, total, u)].id;
}

int32_t plumb_sampler_sample_masked(plumb_sampler_t *s, const float *in, const uint32_t *allowed) {
    if (!s || !in) return -1;
    if (!allowed) return plumb_sampler_sample(s, in);
    float *x = s->masked;
    bool any = false;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        if (allowed[i >> 5] >> (i & 31) & 1) {
            /* an allowed token keeps a finite logit, so it always wins over the disallowed ones */
            const float v = in[i];
            x[i] = v != v || v == -INFINITY ? -FLT_MAX : v;
            any = true;
        } else
            x[i] = -INFINITY;
    }
    return any ? plumb_sampler_sample(s, x) : -1;
}
