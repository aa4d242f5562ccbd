/* cpu_rope.c — rotary position embeddings on the CPU, in the reference engine's arithmetic.
 *
 * A rope node's angles depend only on the tokens' positions and the frequencies (base, scale,
 * factors), not on the layer or the head: the first node of a graph compute that needs a set
 * of angles computes their cosines and sines once into a table (every thread its share of the
 * tokens), and the later nodes with the same positions and frequencies (every layer's queries
 * and keys) read it. The table holds exactly the values the rotation would compute itself, so
 * results do not change. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t rope_table_floats(const plumb_tensor *n) { return n->src[0]->ne[2] * (int64_t)n->params.rope.n_rot; }

plumb_status plumb__cpu_rope_reserve(plumb_cpu_ctx *c, const plumb_graph *g) {
    c->compute++; /* tables from earlier computes no longer apply: positions may have changed */
    size_t need = 0;
    for (int32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i]->op == PLUMB_OP_ROPE && (size_t)rope_table_floats(g->nodes[i]) > need)
            need = (size_t)rope_table_floats(g->nodes[i]);
    if (need <= c->rope_floats) return PLUMB_OK;
    free(c->rope_mem);
    memset(c->rope, 0, sizeof c->rope);
    need = (need + 15) / 16 * 16;
    c->rope_mem = aligned_alloc(64, need * PLUMB_CPU_ROPE_TABLES * sizeof(float));
    c->rope_floats = c->rope_mem ? need : 0;
    if (!c->rope_mem) return plumb__fail(PLUMB_E_NOMEM, "out of memory for %zu rope angles", need * PLUMB_CPU_ROPE_TABLES);
    return PLUMB_OK;
}

/* Also compiled for FMA-capable CPUs, where fmaf is one instruction instead of a call (it is
 * exact either way, so both versions give the same bits). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ROPE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ROPE_CLONES
#endif

/* The table of n's angles for this compute: found, or made by the threads together (each its
 * share of the tokens). Every thread decides the same way: the tables are only changed by
 * thread 0 after the barrier that ends the filling, which no thread passes before it has
 * looked. */
static const float *rope_table(plumb_cpu_ctx *c, const plumb_tensor *n, int ith, int nth) {
    const plumb_rope_params *p = &n->params.rope;
    const plumb_cpu_rope_table key = {
        .compute = c->compute,
        .pos = n->src[1]->data,
        .ff = n->src[2] ? n->src[2]->data : NULL,
        .T = n->src[0]->ne[2],
        .n_rot = p->n_rot,
        .base = p->base,
        .freq_scale = p->freq_scale,
        .mscale = p->attn_factor > 0.0f ? p->attn_factor : 1.0f, /* the attention factor */
    };
    for (int k = 0; k < PLUMB_CPU_ROPE_TABLES; k++) {
        const plumb_cpu_rope_table *t = &c->rope[k];
        if (t->compute == key.compute && t->pos == key.pos && t->ff == key.ff && t->T == key.T && t->n_rot == key.n_rot &&
            t->base == key.base && t->freq_scale == key.freq_scale && t->mscale == key.mscale)
            return t->cs;
    }
    const unsigned slot = c->rope_next % PLUMB_CPU_ROPE_TABLES;
    float *cs = c->rope_mem + (size_t)slot * c->rope_floats;
    const int half = key.n_rot / 2;
    const float theta_scale = powf(key.base, -2.0f / (float)key.n_rot);
    int64_t lo, hi;
    plumb__cpu_split(key.T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        float *cr = cs + t * key.n_rot, *sr = cr + half;
        float theta = (float)key.pos[t];
        for (int i = 0; i < half; i++) {
            const float th = key.freq_scale * (key.ff ? theta / key.ff[i] : theta);
            cr[i] = cosf(th) * key.mscale, sr[i] = sinf(th) * key.mscale;
            theta *= theta_scale;
        }
    }
    if (nth > 1) plumb__cpu_barrier(c); /* nth 1: thread 0 alone (cpu_backend.c's small nodes) */
    if (ith == 0) {
        c->rope[slot] = key;
        c->rope[slot].cs = cs;
        c->rope_next++;
    }
    return cs;
}

/* Rotates pairs (x0, x1) of each head's first n_rot dimensions by its token's angles: NEOX pairs
 * dimension i with i + n_rot / 2, the normal mode 2i with 2i + 1. The reference engine's rope
 * fuses the first product of each output. */
ROPE_CLONES static void rope_rows(const float *x, float *o, int64_t hd, int n_rot, int mode, const float *cs) {
    const int half = n_rot / 2;
    const float *sn = cs + half;
    memcpy(o + n_rot, x + n_rot, (size_t)(hd - n_rot) * sizeof(float));
    if (mode == PLUMB_ROPE_NEOX)
        for (int i = 0; i < half; i++) {
            const float x0 = x[i], x1 = x[i + half];
            o[i] = fmaf(x0, cs[i], -(x1 * sn[i]));
            o[i + half] = fmaf(x0, sn[i], x1 * cs[i]);
        }
    else
        for (int i = 0; i < half; i++) {
            const float x0 = x[2 * i], x1 = x[2 * i + 1];
            o[2 * i] = fmaf(x0, cs[i], -(x1 * sn[i]));
            o[2 * i + 1] = fmaf(x0, sn[i], x1 * cs[i]);
        }
}

void plumb__cpu_rope(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    const float *cs = rope_table(c, n, ith, nth);
    const plumb_tensor *a = n->src[0];
    const int64_t hd = a->ne[0], n_head = a->ne[1], T = a->ne[2];
    const int n_rot = n->params.rope.n_rot;
    int64_t lo, hi;
    plumb__cpu_split(T * n_head, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        rope_rows((const float *)a->data + r * hd, (float *)n->data + r * hd, hd, n_rot, n->params.rope.mode,
                  cs + (r / n_head) * n_rot);
}
