/* cpu_repack.c — a model's weights kept in the kernel set's GEMM layout (plumb_gemm_ops.keep:
 * groups of 16 rows interleaved so that one register holds the same lane of every row, with the
 * file's bits, so as large as the file's rows), made once when a context starts.
 *
 * Packing rows per op costs about as much as 36 activation rows of GEMM work: a prompt hardly
 * sees it, but a matmul of 2-7 rows (the server decoding several sequences at once) would spend
 * most of its time packing, so without a kept copy those go through the four-row kernels, which
 * do the reference's per-block float steps once per row instead of once per 16 rows. With the
 * copy, every matmul of those weights runs the GEMM from it (single tokens too: its prefetched
 * stream reads memory faster than the one-row kernels), and prompts expand each group from it
 * instead of packing the file's rows.
 *
 * The copy is kept beside the file's layout, which the embedding lookup reads (and contexts
 * without the copy): it costs about as much memory as the kept weights (the AVX-512 set keeps
 * Q4_0, Q5_0, Q8_0 and Q6_K at their size, Q4_K at 1.03x; the K-quants' layouts serve batches
 * under 8 rows, their prompts pack the file's rows into an int16 layout per op), and is made
 * only where it takes at most half of the memory the system has available then.
 * plumb_context_create hands over the model's weights that matmuls read, which never change
 * while the backend lives. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"
#include "core/huge_map.h"
#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The table's slot of a weight's data address (open addressing, linear probing). */
static size_t slot(const plumb_cpu_ctx *c, const void *data) {
    uint64_t h = (uint64_t)(uintptr_t)data;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    size_t i = (size_t)h & (c->packed_cap - 1);
    while (c->packed[i].data && c->packed[i].data != data) i = (i + 1) & (c->packed_cap - 1);
    return i;
}

const uint8_t *plumb__cpu_packed_rows(const plumb_cpu_ctx *c, const plumb_tensor *w) {
    if (!c->packed_cap || !w->data) return NULL;
    const plumb_cpu_packed *p = &c->packed[slot(c, w->data)];
    return p->data && p->type == w->type && p->K == w->ne[0] && p->N == w->ne[1] ? p->rows : NULL;
}

/* The set's GEMM of w's type when it has a kept layout for it, else NULL. */
static const plumb_gemm_ops *keeps(const plumb_cpu_ctx *c, const plumb_tensor *w) {
    if (!w->data || (w->buf && !w->buf->base) || w->ne[2] != 1 || w->ne[3] != 1) return NULL;
    if (w->type < 0 || w->type >= PLUMB_TYPE_COUNT) return NULL;
    const plumb_gemm_ops *g = plumb__cpu_gemm_ops(c, w->type);
    return g && g->keep && w->ne[0] % g->block == 0 ? g : NULL;
}

static size_t group_bytes(const plumb_gemm_ops *g, const plumb_tensor *w) { return (size_t)(w->ne[0] / g->block) * g->keep_bytes; }

static size_t kept_bytes(const plumb_gemm_ops *g, const plumb_tensor *w) {
    return group_bytes(g, w) * (size_t)((w->ne[1] + g->rows - 1) / g->rows);
}

typedef struct keep_job {
    const plumb_tensor *w;
    const plumb_gemm_ops *g;
    uint8_t *out;
} keep_job;

/* Thread ith lays out every nth group of the weight. */
static void keep_groups(void *arg, int ith, int nth) {
    const keep_job *j = arg;
    const plumb_tensor *w = j->w;
    const int64_t K = w->ne[0], N = w->ne[1], R = j->g->rows;
    for (int64_t gi = ith; gi < (N + R - 1) / R; gi += nth) {
        const int rows = (int)(N - gi * R < R ? N - gi * R : R);
        j->g->keep((const uint8_t *)w->data + (size_t)(gi * R) * w->nb[1], w->nb[1], rows, j->out + group_bytes(j->g, w) * (size_t)gi, K);
    }
}

plumb_status plumb_backend_cpu_pack_weights(plumb_backend *cpu, const plumb_tensor *const *w, int32_t n) {
    plumb_cpu_ctx *c = cpu->ctx;
    if (c->no_repack || c->packed_cap) return PLUMB_OK;
    size_t total = 0, count = 0;
    for (int32_t i = 0; i < n; i++) {
        const plumb_gemm_ops *g = keeps(c, w[i]);
        if (g) total += kept_bytes(g, w[i]), count++;
    }
    /* as memory allows: the copy takes at most half of what the system has available */
    const long avail = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (!count || (avail > 0 && page > 0 && total > (uint64_t)avail * (uint64_t)page / 2)) return PLUMB_OK;
    size_t cap = 16;
    while (cap < 2 * count) cap *= 2;
    c->packed = calloc(cap, sizeof *c->packed);
    uint8_t *base = c->packed ? plumb__huge_map(total, &c->packed_map, &c->packed_map_size) : NULL;
    if (!base) {
        plumb__cpu_packed_free(c);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory for %zu bytes of repacked weights (--no-repack does without)", total);
    }
    c->packed_cap = cap;
    size_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        const plumb_gemm_ops *g = keeps(c, w[i]);
        if (!g || plumb__cpu_packed_rows(c, w[i])) continue; /* a weight listed twice is laid out once */
        keep_job j = {w[i], g, base + off};
        plumb__cpu_run(c, keep_groups, &j);
        c->packed[slot(c, w[i]->data)] = (plumb_cpu_packed){w[i]->data, base + off, w[i]->type, w[i]->ne[0], w[i]->ne[1]};
        off += kept_bytes(g, w[i]);
    }
    c->packed_bytes = off;
    return PLUMB_OK;
}

uint64_t plumb_backend_cpu_packed_bytes(const plumb_backend *cpu) { return ((const plumb_cpu_ctx *)cpu->ctx)->packed_bytes; }

void plumb__cpu_packed_free(plumb_cpu_ctx *c) {
    if (c->packed_map) munmap(c->packed_map, c->packed_map_size);
    free(c->packed);
    c->packed = NULL, c->packed_map = NULL;
    c->packed_cap = c->packed_map_size = 0;
    c->packed_bytes = 0;
}
