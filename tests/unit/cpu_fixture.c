/* cpu_fixture.c — the unit tests' CPU backend fixture (cpu_fixture.h). Failures are
 * recorded as check failures of the calling test. */
#include "cpu_fixture.h"

#include "test.h"

#include "backend/cpu/cpu_internal.h"

#include <string.h>

void fixture_init(fixture *f, int threads, const plumb_kernel_set *ks) {
    memset(f, 0, sizeof *f);
    CHECK_STATUS(plumb_backend_cpu_create(threads, &f->cpu), PLUMB_OK);
    if (ks) ((plumb_cpu_ctx *)f->cpu->ctx)->kernels = ks;
    f->sched.backends[0] = f->cpu;
    f->sched.n_backends = 1;
    CHECK_STATUS(plumb_graph_init(&f->g, 256), PLUMB_OK);
}

void fixture_run(fixture *f) {
    CHECK_STATUS(plumb_sched_compute(&f->sched, &f->g, NULL, NULL, 0), PLUMB_OK);
}

void fixture_free(fixture *f) {
    plumb_graph_free(&f->g);
    plumb_sched_free(&f->sched);
    plumb_backend_free(f->cpu);
}
