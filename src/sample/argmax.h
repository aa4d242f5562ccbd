/* argmax.h — the greedy sampler's one-pass argmax (sampler.c), exposed for its unit test:
 * the lowest id holding the largest logit, NaN counted as -inf and +inf as FLT_MAX; 0 when
 * every logit is -inf or NaN. The AVX2 version is NULL where the build or the CPU has none. */
#ifndef PLUMB_SAMPLE_ARGMAX_H
#define PLUMB_SAMPLE_ARGMAX_H

#include <stdint.h>

typedef int32_t (*plumb_argmax_fn)(const float *logits, int32_t n);

int32_t plumb__argmax_portable(const float *logits, int32_t n);
plumb_argmax_fn plumb__argmax_avx2(void);

#endif
