/* cpu_internal.h — state shared by the CPU backend's thread pool (cpu_backend.c) and its
 * ops (cpu_ops.c). */
#ifndef PLUMB_CPU_INTERNAL_H
#define PLUMB_CPU_INTERNAL_H

#include "backend/backend.h"
#include "backend/cpu/kernels/kernels.h"

#include <stdatomic.h>

typedef struct cpu_pool cpu_pool;
typedef struct plumb_cpu_profile plumb_cpu_profile;

/* A weight kept in the GEMM's packed layout (cpu_repack.c), found by its data address. */
typedef struct plumb_cpu_packed {
    const void *data;    /* the weight's; NULL: a free slot */
    const uint8_t *rows; /* its groups, one after the other */
    int type;
    int64_t K, N;
} plumb_cpu_packed;

/* The cosines and sines of one rope node's angles for every token of a graph compute
 * (cpu_rope.c): the rope nodes with the same positions and frequencies (every layer's queries
 * and keys) share them. */
typedef struct plumb_cpu_rope_table {
    uint64_t compute;   /* the graph compute that made it (plumb_cpu_ctx.compute); 0: none */
    const int32_t *pos; /* what the angles depend on */
    const float *ff;
    int64_t T;
    int32_t n_rot;
    float base, freq_scale, mscale;
    float *cs; /* [T][n_rot]: a token's n_rot / 2 cosines, then its sines */
} plumb_cpu_rope_table;

#define PLUMB_CPU_ROPE_TABLES 2 /* Gemma 3: its local and its global layers' frequencies */

typedef struct plumb_cpu_ctx {
    int n_threads;
    cpu_pool *pool;
    const plumb_kernel_set *kernels;
    uint8_t *work; /* scratch shared by the threads of one node (quantized activations, ...) */
    size_t work_size;
    /* work handed out in chunks (plumb__cpu_next_chunk): one counter for the graph; thread i
     * knows where the current hand-out starts from chunk_base[i] */
    _Atomic int64_t chunk_counter;
    int64_t *chunk_base; /* [n_threads] */
    plumb_cpu_profile *prof; /* NULL unless PLUMB_PROFILE is set (cpu_profile.c) */
    bool no_repack;          /* prompt matmuls without the kernel set's GEMM */
    bool block_sums;         /* its block-sum GEMM where it has one (plumb_backend_cpu_set_gemm) */
    plumb_cpu_packed *packed; /* [packed_cap] (a power of two; 0: none kept) */
    size_t packed_cap;
    void *packed_map; /* the packed rows' memory, for munmap */
    size_t packed_map_size;
    uint64_t packed_bytes;
    uint64_t compute; /* counts graph computes (from 1) */
    plumb_cpu_rope_table rope[PLUMB_CPU_ROPE_TABLES];
    unsigned rope_next; /* the table a new set of angles replaces */
    float *rope_mem;    /* the tables' cs, rope_floats apart */
    size_t rope_floats;
    /* per node of the graph being computed: a matmul whose activations the previous node (a
     * matmul of the same activation tensor, prepared the same way) left prepared in the scratch */
    bool *act_ready;
    size_t act_ready_cap;
} plumb_cpu_ctx;

/* Thread ith's part [lo, hi) of n items split evenly among nth threads. */
static inline void plumb__cpu_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* The GEMM the node of a weight of this type runs (no_repack, block_sums), or NULL. */
const plumb_gemm_ops *plumb__cpu_gemm_ops(const plumb_cpu_ctx *c, int type);
/* w's rows as the GEMM packs them, when plumb_backend_cpu_pack_weights kept them, else NULL. */
const uint8_t *plumb__cpu_packed_rows(const plumb_cpu_ctx *c, const plumb_tensor *w);
void plumb__cpu_packed_free(plumb_cpu_ctx *c);
/* Runs job(arg, ith, n_threads) on every compute thread (the caller is thread 0). */
void plumb__cpu_run(plumb_cpu_ctx *c, void (*job)(void *, int, int), void *arg);

/* Grows the scratch buffer to what the largest node of g needs (before compute). */
plumb_status plumb__cpu_reserve_work(plumb_cpu_ctx *c, const plumb_graph *g);
/* Grows the rope tables to what g's rope nodes need (before compute). */
plumb_status plumb__cpu_rope_reserve(plumb_cpu_ctx *c, const plumb_graph *g);
/* The ATTN node (cpu_attn.c): its scratch for nth threads, and thread ith's share. */
size_t plumb__cpu_attn_scratch(const plumb_tensor *n, int nth);
void plumb__cpu_attn(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth);
/* Thread ith's share of a ROPE node. */
void plumb__cpu_rope(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth);
/* Marks the nodes first .. end - 1 of g whose activations will be ready (plumb_cpu_ctx.act_ready;
 * after plumb__cpu_reserve_work). */
void plumb__cpu_plan_activations(plumb_cpu_ctx *c, const plumb_graph *g, int32_t first, int32_t end);
/* Computes thread ith's share of one node (act_ready: its plumb_cpu_ctx.act_ready). */
void plumb__cpu_compute_node(plumb_cpu_ctx *c, plumb_tensor *node, int ith, int nth, bool act_ready);
/* The mixture-of-experts ops (cpu_moe.c), split like the others; the expert matmul's scratch
 * is what plumb__cpu_mul_mat_id_scratch says for nth threads. */
size_t plumb__cpu_mul_mat_id_scratch(const plumb_cpu_ctx *c, const plumb_tensor *node, int nth);
void plumb__cpu_mul_mat_id(plumb_cpu_ctx *c, plumb_tensor *node, int ith, int nth);
void plumb__cpu_top_k(plumb_tensor *node, int ith, int nth);
void plumb__cpu_moe_weights(plumb_tensor *node, int ith, int nth);
void plumb__cpu_moe_sum(plumb_tensor *node, int ith, int nth);
/* Waits until every compute thread reaches this point. */
void plumb__cpu_barrier(plumb_cpu_ctx *c);
/* Hands out chunks 0..n-1 of a node's work to whichever thread asks first (a thread that runs
 * slower, e.g. on a busier core, simply takes fewer): returns the next chunk for thread ith,
 * or -1 when all are taken. Every thread of the node must call it until it returns -1, and
 * only once per barrier-separated phase; which thread computes a chunk never changes its
 * result. */
int64_t plumb__cpu_next_chunk(plumb_cpu_ctx *c, int ith, int64_t n);

/* The CPU backend's buffers (cpu_buffer.c): host memory. */
plumb_status plumb__cpu_buffer_alloc(plumb_backend *b, size_t size, plumb_buffer **out);
void plumb__cpu_buffer_free(plumb_buffer *buf);
plumb_status plumb__cpu_buffer_set(plumb_buffer *buf, size_t off, const void *src, size_t n);
plumb_status plumb__cpu_buffer_get(const plumb_buffer *buf, size_t off, void *dst, size_t n);
plumb_status plumb__cpu_buffer_copy(plumb_buffer *dst, size_t doff, const plumb_buffer *src, size_t soff, size_t n);
void plumb__cpu_device_info(plumb_backend *b, plumb_device_info *out);

/* Time per kind of node (cpu_profile.c): NULL unless PLUMB_PROFILE is set and non-zero. */
plumb_cpu_profile *plumb__cpu_profile_create(void);
double plumb__cpu_profile_now(void);
void plumb__cpu_profile_add(plumb_cpu_profile *p, const plumb_tensor *node, double sec);
/* Prints the table, most time first, to stderr. */
void plumb__cpu_profile_report(plumb_cpu_profile *p, int n_threads);
void plumb__cpu_profile_free(plumb_cpu_profile *p);

#endif
