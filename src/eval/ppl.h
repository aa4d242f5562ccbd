/* ppl.h — the per-token arithmetic of perplexity and KL divergence, done as llama.cpp's
 * llama-perplexity does it, so that the two tools' numbers agree: the maximum logit in float,
 * the sum of expf(logit - max) in double, the result's operations in the same types; and the
 * compact log-probability records of a KL-divergence base file (the format both tools read
 * and write: "_logits_", u32 n_ctx, i32 n_vocab, i32 n_chunk, the i32 tokens of every chunk,
 * then one record per scored token). */
#ifndef PLUMB_EVAL_PPL_H
#define PLUMB_EVAL_PPL_H

#include <stddef.h>
#include <stdint.h>

/* What a KL-divergence run sums over its tokens. */
typedef struct plumb_ppl_kld {
    double sum_nll, sum_nll2;           /* -log p(token) under the model measured */
    double sum_nll_base, sum_nll_base2; /* and under the base model's record */
    double sum_nll_nll_base;
    double sum_kld, sum_kld2;           /* KL(base || model) per token */
    double sum_p_diff, sum_p_diff2, sum_p_diff4; /* p(token) - p_base(token) */
    float max_p_diff;
    uint64_t n_same_top; /* tokens where both put the most probability on the same id */
    uint64_t count;
} plumb_ppl_kld;

/* -log p(tok) for a row of n_vocab logits; the token's logit and probability into *logit and
 * *prob when not NULL. */
double plumb__ppl_nll(const float *logits, int32_t n_vocab, int32_t tok, float *logit, float *prob);

/* uint16 slots of one record: 4 (two floats: the scale and the smallest log-probability
 * kept, 16 below the largest), then one per id, rounded up to an even count. */
size_t plumb__ppl_record_slots(int32_t n_vocab);
/* The row's record into rec[0..plumb__ppl_record_slots); returns -log p(tok) (computed in
 * float, as the base run of llama-perplexity does). */
double plumb__ppl_record(const float *logits, int32_t n_vocab, int32_t tok, uint16_t *rec);
/* One token of a KL-divergence run: the row of the model measured against the base model's
 * record; adds to k, and gives the token's KL divergence and p(tok) - p_base(tok). */
void plumb__ppl_kld(const float *logits, int32_t n_vocab, const uint16_t *base, int32_t tok, plumb_ppl_kld *k,
                    float *kld, float *p_diff);

#endif
