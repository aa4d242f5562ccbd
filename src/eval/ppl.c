/* ppl.c — perplexity and KL-divergence arithmetic (ppl.h). Types and order of operations follow
 * llama-perplexity's, so that results agree to the last printed digit on the same logits. */
#include "eval/ppl.h"

#include <math.h>
#include <string.h>

static float row_max(const float *x, int32_t n, int32_t *at) {
    float m = x[0];
    int32_t a = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > m) m = x[i], a = i;
    if (at) *at = a;
    return m;
}

static double sum_exp(const float *x, int32_t n, float max) {
    double s = 0.0;
    for (int32_t i = 0; i < n; i++) s += expf(x[i] - max);
    return s;
}

double plumb__ppl_nll(const float *logits, int32_t n_vocab, int32_t tok, float *logit, float *prob) {
    const float max = row_max(logits, n_vocab, NULL);
    const double s = sum_exp(logits, n_vocab, max);
    if (logit) *logit = logits[tok];
    if (prob) *prob = expf(logits[tok] - max) / (float)s;
    const float shifted = logits[tok] - max;
    return -((double)shifted - log(s));
}

size_t plumb__ppl_record_slots(int32_t n_vocab) { return (size_t)(2 * ((n_vocab + 1) / 2) + 4); }

double plumb__ppl_record(const float *logits, int32_t n_vocab, int32_t tok, uint16_t *rec) {
    const float max = row_max(logits, n_vocab, NULL);
    float min = logits[0];
    for (int32_t i = 1; i < n_vocab; i++)
        if (logits[i] < min) min = logits[i];
    if (min < max - 16) min = max - 16;
    const float log_sum = (float)log(sum_exp(logits, n_vocab, max));
    const float min_log_prob = min - max - log_sum, scale = (max - min) / 65535.f;
    memcpy(rec, &scale, 4);
    memcpy(rec + 2, &min_log_prob, 4);
    uint16_t *q = rec + 4;
    memset(q, 0, (plumb__ppl_record_slots(n_vocab) - 4) * sizeof *q);
    if (scale != 0.0f) {
        const float inv = 1 / scale;
        for (int32_t i = 0; i < n_vocab; i++) /* rounding to nearest, ties to even */
            q[i] = logits[i] > min ? (uint16_t)(int32_t)rintf(inv * (logits[i] - min)) : 0;
    }
    return max + log_sum - logits[tok];
}

void plumb__ppl_kld(const float *logits, int32_t n_vocab, const uint16_t *base, int32_t tok, plumb_ppl_kld *k,
                    float *kld, float *p_diff) {
    int32_t top;
    float max = row_max(logits, n_vocab, &top);
    const float log_sum = (float)log(sum_exp(logits, n_vocab, max));
    float scale, min_log_prob;
    memcpy(&scale, base, 4);
    memcpy(&min_log_prob, base + 2, 4);
    const uint16_t *q = base + 4;
    const float nll = max + log_sum - logits[tok];
    k->sum_nll += nll;
    k->sum_nll2 += nll * nll;
    const float nll_base = -(scale * q[tok] + min_log_prob);
    k->sum_nll_base += nll_base;
    k->sum_nll_base2 += nll_base * nll_base;
    k->sum_nll_nll_base += nll * nll_base;
    max += log_sum;
    double sum = 0.0;
    int32_t top_base = -1;
    float best = 0.0f;
    for (int32_t i = 0; i < n_vocab; i++) {
        const float lp = scale * q[i] + min_log_prob;
        if (i == 0 || lp > best) best = lp, top_base = i;
        if (lp > -16.f) {
            const float p = expf(lp);
            sum += p * (lp - logits[i] + max);
        }
    }
    k->sum_kld += sum;
    k->sum_kld2 += sum * sum;
    k->count++;
    k->n_same_top += top == top_base;
    const float p_base = expf(-nll_base), p = expf(-nll), d = p - p_base;
    k->sum_p_diff += d;
    const double d2 = d * d;
    k->sum_p_diff2 += d2;
    k->sum_p_diff4 += d2 * d2;
    if (fabsf(d) > k->max_p_diff) k->max_p_diff = fabsf(d);
    *kld = (float)sum;
    *p_diff = d;
}
