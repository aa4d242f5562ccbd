/* alloc_check.c — plumb_alloc_check: counts the heap allocations plumb makes while it decodes,
 * to check that generating a token allocates nothing once the context is warm.
 *
 *   build/plumb_alloc_check MODEL [THREADS]
 *
 * The program is linked with --wrap for the allocation functions, so every call that plumb's
 * own code (the static library) makes to malloc, calloc, realloc, aligned_alloc,
 * posix_memalign, strdup, strndup or mmap goes through a counter first. It loads the model,
 * decodes a 24-token prompt and two single tokens (the warm-up, which may size buffers), then
 * counts the allocations of 16 more single-token decodes (greedy), of a second 24-token prompt
 * after the sequence is cleared, and of 16 single tokens again, chosen by a sampler with every
 * stage and penalty on. It prints the counts (those of loading the model and making the
 * context first, which shows the counter at work) and exits 1 when any after the warm-up is
 * not zero, 2 on an error. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "real_alloc.h"

#include "plumb.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static atomic_long n_allocs;


void *__wrap_malloc(size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t s) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_calloc(n, s);
}
void *__wrap_realloc(void *p, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t a, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_aligned_alloc(a, n);
}
int __wrap_posix_memalign(void **p, size_t a, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_posix_memalign(p, a, n);
}
char *__wrap_strdup(const char *s) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_strdup(s);
}
char *__wrap_strndup(const char *s, size_t n) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_strndup(s, n);
}
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    atomic_fetch_add(&n_allocs, 1);
    return __real_mmap(addr, len, prot, flags, fd, off);
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Decodes n single tokens after `last`, each the sampler's choice (every stage and penalty on)
 * or, without a sampler, the greedy one; returns the allocations they made, -1 on error. */
static long decode_tokens(plumb_context_t *c, plumb_sampler_t *smp, int32_t n_vocab, int32_t last, int n) {
    const long before = atomic_load(&n_allocs);
    for (int i = 0; i < n; i++) {
        const plumb_batch b = {.n_tokens = 1, .tokens = &last};
        if (plumb_decode(c, &b)) return -1;
        const float *logits = plumb_get_logits(c, 0);
        last = smp ? plumb_sampler_sample(smp, logits) : argmax(logits, n_vocab);
        if (smp) plumb_sampler_accept(smp, last);
    }
    return atomic_load(&n_allocs) - before;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: plumb_alloc_check MODEL [THREADS]\n");
        return 2;
    }
    plumb_model_t *m = NULL;
    plumb_context_t *c = NULL;
    plumb_sampler_t *smp = NULL;
    const long load_before = atomic_load(&n_allocs);
    if (plumb_model_load(argv[1], &m)) {
        fprintf(stderr, "plumb_alloc_check: %s\n", plumb_last_error());
        return 2;
    }
    plumb_model_info info;
    plumb_model_get_info(m, &info);
    plumb_context_params cp = plumb_context_default_params();
    cp.n_ctx = 128;
    cp.n_threads = argc > 2 ? atoi(argv[2]) : 2;
    if (plumb_context_create(m, &cp, &c)) {
        fprintf(stderr, "plumb_alloc_check: %s\n", plumb_last_error());
        plumb_model_free(m);
        return 2;
    }
    const long load = atomic_load(&n_allocs) - load_before; /* model and context: many */
    plumb_sampler_params sp = plumb_sampler_default_params();
    sp.repeat_penalty = 1.1f, sp.presence_penalty = 0.5f, sp.frequency_penalty = 0.5f;
    if (plumb_sampler_create(&sp, info.n_vocab, &smp)) {
        fprintf(stderr, "plumb_alloc_check: %s\n", plumb_last_error());
        plumb_context_free(c);
        plumb_model_free(m);
        return 2;
    }
    enum { PROMPT = 24 };
    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)((7 + 13 * i) % info.n_vocab);
    const plumb_batch pb = {.n_tokens = PROMPT, .tokens = prompt};
    int rc = 2;
    long warm = -1, tokens = -1, batch = -1, again = -1;
    if (plumb_decode(c, &pb)) goto out;
    warm = decode_tokens(c, smp, info.n_vocab, argmax(plumb_get_logits(c, 0), info.n_vocab), 2);
    if (warm < 0) goto out;
    tokens = decode_tokens(c, NULL, info.n_vocab, argmax(plumb_get_logits(c, 0), info.n_vocab), 16);
    if (tokens < 0 || plumb_seq_truncate(c, 0, 0)) goto out;
    const long before = atomic_load(&n_allocs);
    if (plumb_decode(c, &pb)) goto out;
    batch = atomic_load(&n_allocs) - before;
    again = decode_tokens(c, smp, info.n_vocab, argmax(plumb_get_logits(c, 0), info.n_vocab), 16);
    if (again < 0) goto out;
    printf("allocations: load %ld, warm-up %ld, 16 greedy tokens %ld, a %d-token prompt again %ld, 16 sampled "
           "tokens %ld\n",
           load, warm, tokens, PROMPT, batch, again);
    rc = tokens == 0 && batch == 0 && again == 0 ? 0 : 1;
out:
    if (rc == 2) fprintf(stderr, "plumb_alloc_check: %s\n", plumb_last_error());
    plumb_sampler_free(smp);
    plumb_context_free(c);
    plumb_model_free(m);
    return rc;
}
