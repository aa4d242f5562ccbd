/* fuzz_rpc_graph.c — libFuzzer harness for the COMPUTE message's graph decoder
 * (src/backend/remote/remote_graph.h): decodes arbitrary bytes against three fixed buffers of
 * a CPU backend (the sizes tests/unit/test_rpc_graph.c encodes its seeds for: weights,
 * activations, a KV cache) and, whenever decoding succeeds, runs the graph on one thread: what
 * the decoder accepts must be safe to run, which ASan checks. The buffers are reset for every
 * input to a pattern whose 32-bit words are the integers 0 to 3 (ids valid for the seeds) and,
 * as floats, tiny finite values. */
#include "backend/backend.h"
#include "backend/remote/remote_graph.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N_BUF = 3 };
static const size_t sizes[N_BUF] = {128 << 10, 64 << 10, 8 << 10};

static plumb_backend *cpu;
static uint8_t *mem[N_BUF], *pattern;
static plumb_buffer *bufs[N_BUF];
static plumb_graph g;
static plumb__rpc_graph_store store;

static plumb_status resolve(void *ctx, uint32_t id, uint64_t off, uint64_t n, plumb_buffer **out) {
    (void)ctx;
    if (id >= N_BUF) return PLUMB_E_NOT_FOUND;
    if (off > sizes[id] || n > sizes[id] - off) return PLUMB_E_RANGE;
    *out = bufs[id];
    return PLUMB_OK;
}

static int setup(void) {
    if (plumb_backend_cpu_create(1, &cpu) != PLUMB_OK || plumb_graph_init(&g, 256) != PLUMB_OK) return -1;
    pattern = malloc(sizes[0]);
    if (!pattern) return -1;
    for (size_t i = 0; i < sizes[0]; i++) pattern[i] = i % 4 == 0 ? (uint8_t)((i / 4) % 4) : 0;
    for (int b = 0; b < N_BUF; b++) {
        mem[b] = aligned_alloc(64, sizes[b]);
        if (!mem[b] || plumb_buffer_host(cpu, mem[b], sizes[b], &bufs[b]) != PLUMB_OK) return -1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        if (setup() != 0) abort();
        ready = 1;
    }
    for (int b = 0; b < N_BUF; b++) memcpy(mem[b], pattern, sizes[b]);
    if (plumb__rpc_graph_decode(data, size, resolve, NULL, cpu, &g, &store) != PLUMB_OK) return 0;
    if (cpu->iface->graph_compute(cpu, &g, 0, g.n_nodes) != PLUMB_OK) abort();
    return 0;
}
