/* cpu_internal.h — state shared by the CPU backend's thread pool (cpu_backend.c) and its
 * ops (cpu_ops.c). */
#ifndef PLUMB_CPU_INTERNAL_H
#define PLUMB_CPU_INTERNAL_H

#include "backend/backend.h"
#include "backend/cpu/kernels/kernels.h"

typedef struct cpu_pool cpu_pool;

typedef struct plumb_cpu_ctx {
    int n_threads;
    cpu_pool *pool;
    const plumb_kernel_set *kernels;
    uint8_t *work; /* scratch shared by the threads of one node (quantized activations, ...) */
    size_t work_size;
} plumb_cpu_ctx;

/* Grows the scratch buffer to what the largest node of g needs (before compute). */
plumb_status plumb__cpu_reserve_work(plumb_cpu_ctx *c, const plumb_graph *g);
/* Computes thread ith's share of one node. */
void plumb__cpu_compute_node(plumb_cpu_ctx *c, plumb_tensor *node, int ith, int nth);
/* Waits until every compute thread reaches this point. */
void plumb__cpu_barrier(plumb_cpu_ctx *c);

#endif
