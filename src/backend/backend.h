/* backend.h — the backend interface: a backend is a table of functions plus its own state.
 * Model code builds graphs; the scheduler hands each graph to the first backend that
 * supports all of its ops (falling back to the CPU backend), so a new device plugs in by
 * filling this table, without touching model code. The CPU backend (src/backend/cpu/) is
 * the reference every other backend is compared with, op by op.
 */
#ifndef PLUMB_BACKEND_H
#define PLUMB_BACKEND_H

#include "core/graph.h"

typedef struct plumb_backend plumb_backend;

typedef struct plumb_backend_iface {
    const char *name;
    /* true when the backend can run this node (required) */
    bool (*supports_op)(plumb_backend *b, const plumb_tensor *node);
    /* runs every node of g in order; leaves and outputs live in host memory (required) */
    plumb_status (*graph_compute)(plumb_backend *b, plumb_graph *g);
    /* releases the backend's state (required) */
    void (*free)(plumb_backend *b);
    /* optional device buffers; NULL for backends that compute on host memory */
    void *(*buffer_alloc)(plumb_backend *b, size_t size);
    void (*buffer_free)(plumb_backend *b, void *buf);
    plumb_status (*buffer_set)(plumb_backend *b, void *buf, size_t off, const void *src, size_t n);
    plumb_status (*buffer_get)(plumb_backend *b, const void *buf, size_t off, void *dst, size_t n);
} plumb_backend_iface;

struct plumb_backend {
    const plumb_backend_iface *iface;
    void *ctx;
};

/* The CPU backend with n_threads compute threads (the calling thread is one of them). */
plumb_status plumb_backend_cpu_create(int n_threads, plumb_backend **out);
void plumb_backend_free(plumb_backend *b);

/* The scheduler: an ordered list of backends, the CPU backend last. */
typedef struct plumb_sched {
    plumb_backend *backends[4];
    int n_backends;
} plumb_sched;

/* Runs g on the first backend that supports every node in it. */
plumb_status plumb_sched_compute(plumb_sched *s, plumb_graph *g);

#endif
