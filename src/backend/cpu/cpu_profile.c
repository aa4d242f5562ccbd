/* cpu_profile.c — where a CPU backend's time goes, by op: with PLUMB_PROFILE=1 in the
 * environment, compute thread 0 times every node from its start to the barrier after it (so
 * a node's time includes waiting for the slowest thread), adds it to the node's kind (op;
 * for a matmul also the weight type, its shape and whether it ran for one token, a few or
 * a batch), and the table goes to stderr when the backend is freed. Off, it costs one
 * pointer test per node. */
#include "backend/cpu/cpu_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROFILE_KINDS 128

typedef struct profile_kind {
    int op, type;
    int64_t k, n; /* matmul weight shape */
    int batch;    /* matmul and attention: 0 one token, 1 two to seven, 2 eight or more */
    int64_t calls;
    double sec;
} profile_kind;

struct plumb_cpu_profile {
    int n_kinds;
    bool overflow;
    profile_kind kinds[PROFILE_KINDS];
};

plumb_cpu_profile *plumb__cpu_profile_create(void) {
    const char *e = getenv("PLUMB_PROFILE");
    if (!e || !*e || strcmp(e, "0") == 0) return NULL;
    return calloc(1, sizeof(plumb_cpu_profile));
}

double plumb__cpu_profile_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void plumb__cpu_profile_add(plumb_cpu_profile *p, const plumb_tensor *node, double sec) {
    profile_kind key = {.op = (int)node->op, .type = -1};
    if (node->op == PLUMB_OP_MUL_MAT) {
        const plumb_tensor *w = node->src[0], *x = node->src[1];
        const int64_t t = x->ne[1] * x->ne[2] * x->ne[3];
        key.type = w->type, key.k = w->ne[0], key.n = w->ne[1];
        key.batch = t == 1 ? 0 : t < 8 ? 1 : 2;
    } else if (node->op == PLUMB_OP_ATTN) { /* q: [head_dim, n_head, tokens] */
        const int64_t t = node->src[0]->ne[2];
        key.batch = t == 1 ? 0 : t < 8 ? 1 : 2;
    }
    for (int i = 0; i < p->n_kinds; i++) {
        profile_kind *k = &p->kinds[i];
        if (k->op == key.op && k->type == key.type && k->k == key.k && k->n == key.n && k->batch == key.batch) {
            k->calls++, k->sec += sec;
            return;
        }
    }
    if (p->n_kinds == PROFILE_KINDS) {
        p->overflow = true;
        return;
    }
    key.calls = 1, key.sec = sec;
    p->kinds[p->n_kinds++] = key;
}

static int by_time(const void *a, const void *b) {
    const double x = ((const profile_kind *)a)->sec, y = ((const profile_kind *)b)->sec;
    return x < y ? 1 : x > y ? -1 : 0;
}

void plumb__cpu_profile_report(plumb_cpu_profile *p, int n_threads) {
    double total = 0;
    for (int i = 0; i < p->n_kinds; i++) total += p->kinds[i].sec;
    qsort(p->kinds, (size_t)p->n_kinds, sizeof p->kinds[0], by_time);
    static const char *const batch_names[] = {"1 token", "2-7", "batch"};
    fprintf(stderr, "plumb profile: CPU backend, %d thread%s, %.3f s in nodes\n", n_threads, n_threads == 1 ? "" : "s",
            total);
    fprintf(stderr, "%7s %10s %9s  %-9s %-5s %15s %s\n", "share", "ms", "calls", "op", "type", "k x n", "tokens");
    for (int i = 0; i < p->n_kinds; i++) {
        const profile_kind *k = &p->kinds[i];
        char shape[40] = "";
        if (k->op == PLUMB_OP_MUL_MAT) snprintf(shape, sizeof shape, "%lld x %lld", (long long)k->k, (long long)k->n);
        fprintf(stderr, "%6.1f%% %10.2f %9lld  %-9s %-5s %15s %s\n", total > 0 ? 100.0 * k->sec / total : 0.0,
                k->sec * 1e3, (long long)k->calls, plumb_op_name((plumb_op)k->op),
                k->type >= 0 ? plumb_type_name(k->type) : "", shape,
                k->op == PLUMB_OP_MUL_MAT || k->op == PLUMB_OP_ATTN ? batch_names[k->batch] : "");
    }
    if (p->overflow) fprintf(stderr, "(more node kinds than the profile keeps: some are left out)\n");
}

void plumb__cpu_profile_free(plumb_cpu_profile *p) { free(p); }
