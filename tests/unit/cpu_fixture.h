/* cpu_fixture.h — the CPU backend, scheduler and graph that the op and MoE unit tests build
 * their graphs in (cpu_fixture.c), so that each test file does not set one up itself. */
#ifndef PLUMB_TEST_CPU_FIXTURE_H
#define PLUMB_TEST_CPU_FIXTURE_H

#include "backend/backend.h"
#include "backend/cpu/kernels/kernels.h"
#include "core/graph.h"

typedef struct fixture {
    plumb_backend *cpu;
    plumb_sched sched;
    plumb_graph g;
} fixture;

/* A CPU backend of `threads` threads computing with kernel set ks (NULL: the default), and
 * an empty graph room for 256 nodes. */
void fixture_init(fixture *f, int threads, const plumb_kernel_set *ks);
/* Plans and computes f->g. */
void fixture_run(fixture *f);
void fixture_free(fixture *f);

#endif
