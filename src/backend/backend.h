/* backend.h — the backend interface: a backend is a device (the CPU, an OpenCL device, ...)
 * that owns buffers and runs the nodes of graphs whose data lies in its buffers.
 *
 * Model code builds graphs and never sees a device. The scheduler (src/backend/sched.c)
 * assigns each node to a backend (by the layer range the user offloads, and by supports_op:
 * an op a backend lacks runs on the CPU), puts each node's output in a buffer of its backend,
 * inserts PLUMB_OP_COPY nodes where a value crosses from one backend to another, and hands
 * each backend its runs of consecutive nodes (graph_compute). The CPU backend
 * (src/backend/cpu/) is the reference every other backend is tested against, op by op.
 *
 * A new backend is one folder, src/backend/<name>/, whose code fills plumb_backend_iface and
 * a plumb_backend_reg, plus one line in the registry (src/backend/registry.c).
 */
#ifndef PLUMB_BACKEND_H
#define PLUMB_BACKEND_H

#include "core/graph.h"

typedef struct plumb_backend plumb_backend;

/* Memory of one backend. Buffers are made by buffer_alloc (zero-filled) or, for backends
 * whose memory the host addresses directly, over host memory (plumb_buffer_host). */
struct plumb_buffer {
    plumb_backend *backend; /* the owner: its ops read and write this memory */
    void *base;             /* byte 0 as a host address when the host can read and write it
                               directly (the CPU), else NULL: use buffer_set/get */
    void *handle;           /* the backend's own handle (a cl_mem, ...) */
    size_t size;
    bool borrowed; /* over memory plumb does not own here (a model file's mapping) */
};

/* What `plumb info` prints of a device. */
typedef struct plumb_device_info {
    char name[128];        /* "AMD EPYC 7763", "pthread-skylake-avx512-AMD EPYC" */
    char driver[128];      /* driver or platform and version; "" when none */
    uint64_t memory;       /* bytes the device can allocate in all (global memory) */
    uint64_t max_alloc;    /* largest single buffer, bytes (0: no limit of its own) */
} plumb_device_info;

/* A read the scheduler asks of a backend right after a run: n bytes of buf from off into host
 * memory at dst. */
typedef struct plumb_read {
    const plumb_buffer *buf;
    size_t off;
    void *dst;
    size_t n;
} plumb_read;

typedef struct plumb_backend_iface {
    const char *name; /* "CPU", "OpenCL" */
    /* true when the backend can run this node with its sources' types and shapes (required) */
    bool (*supports_op)(plumb_backend *b, const plumb_tensor *node);
    /* true when weights of this type can live in this backend's buffers and be read by every
     * op that takes a weight (mul_mat, get_rows) (required) */
    bool (*supports_weight)(plumb_backend *b, int type);
    /* runs g->nodes[first..end) in order, skipping NONE, VIEW and COPY nodes; every source
     * and output of those nodes has its data in a buffer of this backend (t->buf, t->offs),
     * except the host arrays a node's parameters point to (attn's pos and seq). Returns when
     * the results are complete (one submission per call for queued devices). (required) */
    plumb_status (*graph_compute)(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end);
    /* graph_compute, then the reads (of this backend's buffers), as one exchange with the
     * device: for a device across a network, one round trip for a run, its inputs (written by
     * buffer_set before) and the values read back. (optional: the scheduler then calls
     * graph_compute and buffer_get) */
    plumb_status (*graph_compute_read)(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end,
                                       const plumb_read *reads, int32_t n_reads);
    /* bytes of a model's weights: buffer_set, where the backend may find them by content
     * instead of receiving them (a remote host's cache). (optional: buffer_set) */
    plumb_status (*buffer_load)(plumb_buffer *buf, size_t off, const void *src, size_t n);
    /* what the backend exchanged with its device over a network so far (optional) */
    void (*traffic)(plumb_backend *b, plumb_device_traffic *out);
    /* releases the backend (its buffers were freed before) (required) */
    void (*free)(plumb_backend *b);
    /* a new zero-filled buffer of size bytes; PLUMB_E_NOMEM naming the size when the device
     * has no room (required) */
    plumb_status (*buffer_alloc)(plumb_backend *b, size_t size, plumb_buffer **out);
    void (*buffer_free)(plumb_buffer *buf);
    /* bytes [off, off + n) of buf from/to host memory, complete on return (required) */
    plumb_status (*buffer_set)(plumb_buffer *buf, size_t off, const void *src, size_t n);
    plumb_status (*buffer_get)(const plumb_buffer *buf, size_t off, void *dst, size_t n);
    /* n bytes within the backend: dst at doff from src at soff (required) */
    plumb_status (*buffer_copy)(plumb_buffer *dst, size_t doff, const plumb_buffer *src, size_t soff, size_t n);
    /* the device's description (required) */
    void (*device_info)(plumb_backend *b, plumb_device_info *out);
    /* true when its ops read and write nodes through t->data in host memory, so that a node
     * may be bound to host memory outside its buffers (the scheduler's output, written where
     * the caller wants it) */
    bool host_data;
} plumb_backend_iface;

struct plumb_backend {
    const plumb_backend_iface *iface;
    void *ctx;
    int device; /* the index among the registration's devices */
};

/* A registration: a kind of backend and its devices. */
typedef struct plumb_backend_reg {
    const char *name; /* "cpu", "opencl": what --device names */
    /* how many devices there are (0 when none: no driver, no platform); on 0 the reason is
     * in *why when why is not NULL (a static string) */
    int (*device_count)(const char **why);
    /* device i's description without creating a backend */
    plumb_status (*device_info)(int i, plumb_device_info *out);
    /* a backend on device i; n_threads is the host threads it may use (the CPU's count) */
    plumb_status (*create)(int i, int n_threads, plumb_backend **out);
    /* for devices named by an address instead of an index ("remote:HOST:PORT"): a backend on
     * the device at address, with the key file that authenticates to it; NULL otherwise */
    plumb_status (*create_at)(const char *address, const char *key_file, int n_threads, plumb_backend **out);
} plumb_backend_reg;

/* The registrations, the CPU first (registry.c); NULL-terminated. */
extern const plumb_backend_reg *const plumb__backend_regs[];

/* Finds the registration named by spec ("cpu", "opencl", "opencl:1", "remote:HOST:PORT") and
 * the device index (0 when not given; -1 for a registration with create_at, whose address is
 * what follows the first ':'). An unknown name or a device that does not exist is
 * PLUMB_E_NOT_FOUND with a message listing the devices there are. */
plumb_status plumb_backend_lookup(const char *spec, const plumb_backend_reg **reg, int *device);

/* The CPU backend with n_threads compute threads (the calling thread is one of them). */
plumb_status plumb_backend_cpu_create(int n_threads, plumb_backend **out);
/* Whether the CPU backend cpu packs weight rows for its register-tiled GEMM in prompt matmuls
 * (repack, on by default; results are the same either way), and whether that GEMM sums blocks
 * in one integer where it can (block_sums: plumb_context_params.fast_gemm, off by default). */
void plumb_backend_cpu_set_gemm(plumb_backend *cpu, bool repack, bool block_sums);
/* Keeps, once, the weights among w[0..n) that the kernel set's GEMM has a kept layout for
 * (host memory, 2-D; cpu_repack.c) in that layout: their matmuls then run the GEMM from it
 * for any number of activation rows (not from 8, packing rows per op). Nothing with
 * repack off, when called before, or when the copy would take over half of the memory
 * available. The weights must stay unchanged while cpu lives. PLUMB_E_NOMEM when the memory
 * is not there after all (nothing is kept then). */
plumb_status plumb_backend_cpu_pack_weights(plumb_backend *cpu, const plumb_tensor *const *w, int32_t n);
/* The bytes those packed copies take. */
uint64_t plumb_backend_cpu_packed_bytes(const plumb_backend *cpu);
void plumb_backend_free(plumb_backend *b);
/* A buffer of the CPU backend cpu over host memory [p, p + size) that the caller keeps
 * (borrowed: freeing the buffer leaves the memory). */
plumb_status plumb_buffer_host(plumb_backend *cpu, void *p, size_t size, plumb_buffer **out);
void plumb_buffer_free(plumb_buffer *buf);

/* Reads n bytes of t's data from byte off (any backend). */
plumb_status plumb_tensor_get(const plumb_tensor *t, size_t off, void *dst, size_t n);

/* An observer of a graph's computation (the importance matrix's): called with each node of
 * every graph before the node runs; it answers 0 for a node it does not look at. For one it
 * does (1), the scheduler ends the run right before the node and calls it again with `ready`
 * true: the node's sources are then complete and intact (read them with plumb_tensor_get; they
 * may be in a device's memory), and nothing of the graph after the node has run yet. A
 * negative status stops the computation with it. */
typedef int (*plumb_sched_observer)(const plumb_tensor *node, bool ready, void *user);

/* The scheduler's state for a context: its backends (the CPU first), and each backend's
 * activation pool. */
#define PLUMB_MAX_BACKENDS 4
typedef struct plumb_sched {
    plumb_backend *backends[PLUMB_MAX_BACKENDS]; /* [0] the CPU */
    int n_backends;
    /* layers [layer_first, layer_end) run on backends[1] when n_backends > 1, and the output
     * head too when output_on_device; everything else on the CPU */
    int32_t layer_first, layer_end;
    bool output_on_device;
    plumb_buffer *pools[PLUMB_MAX_BACKENDS]; /* activations of each backend (grown as needed) */
    size_t pool_size[PLUMB_MAX_BACKENDS];
    uint8_t *stage; /* host bounce buffer for copies between two non-host backends */
    size_t stage_size;
    plumb_tensor **scratch; /* the new node order, then copies made per (tensor, backend) */
    size_t scratch_cap;
    int32_t n_splits; /* runs of the last graph computed */
    int32_t n_copies; /* copies between backends in the last graph */
    plumb_read *reads; /* the reads of one run (grown as needed) */
    int32_t reads_cap;
    plumb_sched_observer observer; /* NULL (the default): nothing is observed */
    void *observer_user;
} plumb_sched;

/* Assigns g's nodes to backends, inserts the copies, places every output in its backend's
 * pool and computes the graph run by run; then, when out is not NULL, reads n bytes of out
 * (a node of g) into dst. A backend with graph_compute_read gets a run's copies to host
 * memory, and out after its last run, as the run's reads. */
plumb_status plumb_sched_compute(plumb_sched *s, plumb_graph *g, const plumb_tensor *out, void *dst, size_t n);
/* Frees the pools (not the backends). */
void plumb_sched_free(plumb_sched *s);

#endif
