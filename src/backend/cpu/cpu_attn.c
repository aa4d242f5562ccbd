/* cpu_attn.c — the fused attention op (ATTN) on the CPU: the batch's keys and values written
 * into the F16 cache, then each token's queries against its span of the cache, in the reference
 * engine's F16 arithmetic. */
#include "backend/cpu/cpu_internal.h"

#include "core/kv_cache.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#define PLUMB_MAX_GROUP 64 /* query heads per KV head */

/* ---- attention numerics --------------------------------------------------------------------
 * The KV cache is F16 and attention follows the reference engine's F16 path exactly, so that
 * logits agree bit for bit: the F16 dot product keeps 4 x 16 FMA lanes over 64-element steps,
 * folds them in a fixed tree, and adds the tail in double; softmax exponentials use a
 * polynomial expf (range reduction by ln 2, degree-5 polynomial, exact scaling) summed 16 at
 * a time over the positions padded to a multiple of 64 (the reference pads to 256; any multiple
 * of 64 gives the same sums). Everything is per (token, head), in a fixed order, so results do
 * not depend on the batch. */


/* Bytes of attention scratch per thread: for each of up to `group` heads its scores [n_ctx]
 * and rounded query [hd]; then, used in thread 0's part by the items all threads share
 * (attn_shared_item), each head's block sums [n_ctx / 16 + 2] and every thread's maxima; then
 * attn_pv's work (plumb__pv_work_floats) and the table of tiles. */
/* Tokens of a prompt whose queries meet each key row together (plumb__cpu_attn): the keys are read once
 * for all of them, and so are the values (attn_pv). A long span's keys and values do not stay in
 * L2 from one tile to the next, so each tile reads them again from L3; eight tokens rather than
 * four halve that (Intel Xeon (Ice Lake), Gemma 3 270M pp512 after 4096 tokens on one thread:
 * the scores 7% and the values 10% faster a token, attention 39.4% -> 38.0% of the time). */
#define ATTN_TILE 8
_Static_assert(ATTN_TILE <= PLUMB_PV_TOKENS, "a tile's tokens go to attn_pv together");

/* Where in a thread's scratch (floats from its start, on a cache line) attn_pv's work begins:
 * after the scores and the shared items' sums. */
static size_t attn_pv_work_at(const plumb_tensor *n, int nth) {
    const plumb_attn_params *p = &n->params.attn;
    size_t group = (size_t)(n->src[0]->ne[1] / n->src[1]->ne[1]);
    if (group > PLUMB_MAX_GROUP) group = 1; /* such items take one head at a time */
    else group *= ATTN_TILE;
    const size_t per_head = (size_t)p->kv->n_ctx + (size_t)p->kv->head_dim;
    const size_t shared = group * ((size_t)p->kv->n_ctx / 16 + 2) + group * (size_t)nth;
    return (group * per_head + shared + 16 + 15) / 16 * 16;
}

static size_t attn_scratch_per_thread(const plumb_tensor *n, int nth) {
    const plumb_attn_params *p = &n->params.attn;
    const size_t tiles = (size_t)n->src[0]->ne[2] + 1; /* attn_tiles' table */
    const size_t bytes = (attn_pv_work_at(n, nth) + plumb__pv_work_floats(p->kv->n_ctx)) * sizeof(float) + tiles * sizeof(int32_t);
    return (bytes + 63) / 64 * 64; /* each thread's part starts on a cache line */
}

/* The first position a token at pos attends (its sliding window's, if the layer has one). */
static int32_t attn_first(const plumb_attn_params *p, int32_t pos) {
    return p->n_swa > 0 && pos - p->n_swa + 1 > 0 ? pos - p->n_swa + 1 : 0;
}

/* The reference's attention logit soft-cap on n raw scores (attn_qk's with scale 1), in its
 * order of separate ops: times 1/cap, tanh, times cap, then the softmax scale. */
static void attn_softcap(float *sc, int32_t n, float cap, float scale) {
    const float inv = 1.0f / cap;
    for (int32_t j = 0; j < n; j++) sc[j] = tanhf(sc[j] * inv) * cap * scale;
}

/* What the attention of one (token, KV head) item needs. */
typedef struct attn_item {
    const float *q;      /* the item's first query head; heads hd apart */
    const uint16_t *k, *v; /* the KV head's rows of the sequence, from position 0; kv_dim apart */
    size_t kv_dim;
    int64_t hd;
    int nh;              /* query heads */
    int32_t first, pos;  /* attended positions */
    float scale;
    float softcap;       /* 0: none */
    float *out;          /* nh rows of hd */
} attn_item;

/* One item computed by all threads together, for when there are fewer items than threads
 * (decoding): every key and value row is read once for all the item's query heads, and the
 * work is cut where the results do not depend on it. The scores and exponentials split by
 * whole blocks of 16 positions, each thread's block sums kept apart and then added in order by
 * each thread (the sum attn_exp gives); the probabilities per position; the weighted sum of the
 * values by output dimension (each one's 64 lanes over all positions). Bit for bit what one
 * thread gives. `shared` is thread 0's scratch (scores per head, per_head apart, then the
 * block sums and maxima); `mine` the calling thread's rounded queries, per_head apart. */
static void attn_shared_item(plumb_cpu_ctx *c, const attn_item *it, size_t per_head, int32_t n_ctx, float *shared,
                             float *mine, int ith, int nth) {
    const int nh = it->nh;
    float *bsum = shared + (size_t)nh * per_head, *pmax = bsum + (size_t)nh * ((size_t)n_ctx / 16 + 2);
    const size_t bstride = (size_t)n_ctx / 16 + 2;
    const int32_t b0 = it->first / 16, n_blocks = it->pos / 16 - b0 + 1;
    int64_t blo, bhi;
    plumb__cpu_split(n_blocks, ith, nth, &blo, &bhi);
    const int32_t jlo = (int32_t)(b0 + blo) * 16 > it->first ? (int32_t)(b0 + blo) * 16 : it->first;
    const int32_t jhi = (int32_t)(b0 + bhi) * 16 - 1 < it->pos ? (int32_t)(b0 + bhi) * 16 - 1 : it->pos;
    /* scores of this thread's positions, and their maximum per head */
    for (int i = 0; i < nh; i++) {
        c->kernels->round_f16(it->q + (size_t)i * (size_t)it->hd, mine + (size_t)i * per_head, it->hd);
        pmax[ith * nh + i] = -INFINITY;
    }
    if (jlo <= jhi) {
        c->kernels->attn_qk(mine, per_head, nh, it->k + (size_t)jlo * it->kv_dim, it->kv_dim, jhi - jlo + 1,
                            it->hd, it->softcap > 0.0f ? 1.0f : it->scale, shared + (jlo - it->first), per_head);
        for (int i = 0; i < nh && it->softcap > 0.0f; i++)
            attn_softcap(shared + (size_t)i * per_head + (jlo - it->first), jhi - jlo + 1, it->softcap, it->scale);
        for (int i = 0; i < nh; i++) {
            const float *sc = shared + (size_t)i * per_head + (jlo - it->first);
            float m = -INFINITY;
            for (int32_t j = 0; j <= jhi - jlo; j++) m = sc[j] > m ? sc[j] : m;
            pmax[ith * nh + i] = m;
        }
    }
    plumb__cpu_barrier(c);
    /* exponentials, each thread's blocks' sums into bsum */
    float mx[PLUMB_MAX_GROUP];
    for (int i = 0; i < nh; i++) {
        mx[i] = -INFINITY;
        for (int t = 0; t < nth; t++) mx[i] = pmax[t * nh + i] > mx[i] ? pmax[t * nh + i] : mx[i];
        if (jlo <= jhi)
            c->kernels->attn_exp(shared + (size_t)i * per_head + (jlo - it->first), jlo, jhi, mx[i],
                                 bsum + (size_t)i * bstride + blo);
    }
    plumb__cpu_barrier(c);
    /* the probabilities of this thread's positions, rounded to F16 */
    for (int i = 0; i < nh && jlo <= jhi; i++) {
        double sum = 0.0;
        for (int32_t b = 0; b < n_blocks; b++) sum += (double)bsum[(size_t)i * bstride + (size_t)b];
        const float inv = (float)(1.0 / sum);
        float *sc = shared + (size_t)i * per_head + (jlo - it->first);
        for (int32_t j = 0; j <= jhi - jlo; j++) sc[j] *= inv;
        c->kernels->round_f16(sc, sc, jhi - jlo + 1);
    }
    plumb__cpu_barrier(c);
    /* values: this thread's output dimensions, 16 at a time */
    int64_t dlo, dhi;
    plumb__cpu_split((it->hd + 15) / 16, ith, nth, &dlo, &dhi);
    dlo *= 16, dhi = dhi * 16 < it->hd ? dhi * 16 : it->hd;
    if (dlo < dhi) {
        const plumb_attn_pv_row row = {.p = shared, .first = it->first, .pos = it->pos, .out = it->out + dlo};
        c->kernels->attn_pv(&row, 1, nh, per_head, it->v + dlo, it->kv_dim, dhi - dlo, (size_t)it->hd, NULL);
    }
    plumb__cpu_barrier(c);
}

/* The attention of tokens t0 .. t1 - 1 (one sequence, consecutive positions) for query heads h0
 * .. h0 + nh - 1 (which share a KV head): the scores of all their queries against the keys of
 * the union of their spans in one pass, so that each key row is read once for all of them; then
 * per (token, head), over its own span, the softmax and the weighted values. q is rounded to F16
 * for its dot products with the F16 keys (the probabilities are rounded likewise before they
 * weight the values); every sum follows the fixed orders described above, per (token, head),
 * whatever the batch or the tile. */
static void attn_tile(plumb_cpu_ctx *c, plumb_tensor *n, int64_t t0, int64_t t1, int64_t h0, int64_t nh, float *scratch,
                      float *pv_work) {
    const plumb_attn_params *p = &n->params.attn;
    const plumb_kv_cache *kv = p->kv;
    const plumb_tensor *q = n->src[0], *k = n->src[1];
    const int64_t hd = kv->head_dim, n_head = q->ne[1], n_kv = k->ne[1];
    const int64_t kv_dim = n_kv * hd, hk = h0 / (n_head / n_kv);
    const float scale = p->scale, softcap = p->softcap;
    const size_t per_head = (size_t)kv->n_ctx + (size_t)hd;
    const size_t seq_base = (size_t)p->seq[t0] * (size_t)kv->n_ctx;
    const int32_t lo = attn_first(p, p->pos[t0]), hi = p->pos[t1 - 1];
    const int nq = (int)((t1 - t0) * nh);
    for (int r = 0; r < nq; r++)
        c->kernels->round_f16((const float *)q->data + ((t0 + r / nh) * n_head + h0 + r % nh) * hd,
                              scratch + (size_t)r * per_head + kv->n_ctx, hd);
    c->kernels->attn_qk(scratch + kv->n_ctx, per_head, nq, p->kv->k[p->layer] + (seq_base + (size_t)lo) * (size_t)kv_dim + hk * hd,
                        (size_t)kv_dim, hi - lo + 1, hd, softcap > 0.0f ? 1.0f : scale, scratch, per_head);
    plumb_attn_pv_row pv[ATTN_TILE];
    for (int64_t t = t0; t < t1; t++) {
        const int32_t pos = p->pos[t], first = attn_first(p, pos);
        float *rows = scratch + (size_t)((t - t0) * nh) * per_head + (first - lo); /* row i's score of first */
        for (int64_t i = 0; i < nh; i++) {
            float *sc = rows + (size_t)i * per_head;
            if (softcap > 0.0f) attn_softcap(sc, pos - first + 1, softcap, scale);
            /* exponentials, summed in blocks of 16 positions from 0 (positions before first
             * add zeros; so would the reference's padding after pos); the probabilities,
             * rounded to F16 before they weight the values */
            c->kernels->attn_softmax(sc, first, pos);
        }
        pv[t - t0] = (plumb_attn_pv_row){.p = rows, .first = first, .pos = pos, .out = (float *)n->data + t * (n_head * hd) + h0 * hd};
    }
    /* values, the tile's tokens together (each value row read once for all of them): each output
     * dimension is an F16 dot product over the positions padded to a multiple of 64 (so there is
     * no scalar tail), in 64 lanes that each add their positions in order; lanes no position
     * reaches stay zero */
    c->kernels->attn_pv(pv, (int)(t1 - t0), (int)nh, per_head, p->kv->v[p->layer] + seq_base * (size_t)kv_dim + hk * hd,
                        (size_t)kv_dim, hd, (size_t)hd, pv_work);
}

/* The batch's tokens cut into tiles: runs of up to ATTN_TILE tokens of one sequence at
 * consecutive positions (a prompt's), each other token alone (the server's streams decoding
 * together, which one item holding them all would have left to one thread). Tile i is tokens
 * start[i] .. start[i + 1] - 1; returns the count. Every thread makes the same table. */
static int64_t attn_tiles(const plumb_attn_params *p, int64_t T, int32_t *start) {
    int64_t n = 0;
    for (int64_t t = 0; t < T;) {
        int64_t e = t + 1;
        while (e < T && e - t < ATTN_TILE && p->seq[e] == p->seq[t] && p->pos[e] == p->pos[e - 1] + 1) e++;
        start[n++] = (int32_t)t;
        t = e;
    }
    start[n] = (int32_t)T;
    return n;
}

void plumb__cpu_attn(plumb_cpu_ctx *c, plumb_tensor *n, int ith, int nth) {
    const plumb_attn_params *p = &n->params.attn;
    const plumb_kv_cache *kv = p->kv;
    const plumb_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2];
    const int64_t hd = kv->head_dim, n_head = q->ne[1], n_kv = k->ne[1], T = q->ne[2];
    const int64_t kv_dim = n_kv * hd, group = n_head / n_kv;
    const float scale = p->scale, softcap = p->softcap;
    uint16_t *kc = kv->k[p->layer], *vc = kv->v[p->layer];
    int64_t lo, hi;
    /* phase 1: write this batch's keys and values into the cache */
    plumb__cpu_split(T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const size_t row = ((size_t)p->seq[t] * (size_t)kv->n_ctx + (size_t)p->pos[t]) * (size_t)kv_dim;
        const float *ks = (const float *)k->data + t * kv_dim, *vs = (const float *)v->data + t * kv_dim;
        c->kernels->f32_to_f16(ks, kc + row, kv_dim);
        c->kernels->f32_to_f16(vs, vc + row, kv_dim);
    }
    plumb__cpu_barrier(c);
    /* phase 2: work items are (tile of tokens, KV head) with all the query heads that share the
     * KV head, so each key row is converted once for all of them (attn_tile); when there are fewer
     * such items than two per thread, all threads work on each (attn_shared_item). Every
     * (token, head) result is computed the same way in both cases. */
    const size_t per_head = (size_t)kv->n_ctx + (size_t)hd;
    float *scratch = (float *)(c->work + attn_scratch_per_thread(n, nth) * (size_t)ith);
    float *pv_work = scratch + attn_pv_work_at(n, nth);
    if (T * n_kv < 2 * nth && group <= PLUMB_MAX_GROUP) { /* few items: all threads on each */
        for (int64_t item = 0; item < T * n_kv; item++) {
            const int64_t t = item / n_kv, hk = item % n_kv;
            const int32_t pos = p->pos[t];
            const size_t seq_base = (size_t)p->seq[t] * (size_t)kv->n_ctx;
            const attn_item it = {
                .q = (const float *)q->data + (t * n_head + hk * group) * hd,
                .k = kc + seq_base * (size_t)kv_dim + hk * hd,
                .v = vc + seq_base * (size_t)kv_dim + hk * hd,
                .kv_dim = (size_t)kv_dim,
                .hd = hd,
                .nh = (int)group,
                .first = attn_first(p, pos),
                .pos = pos,
                .scale = scale,
                .softcap = softcap,
                .out = (float *)n->data + t * (n_head * hd) + hk * group * hd,
            };
            attn_shared_item(c, &it, per_head, kv->n_ctx, (float *)c->work, scratch + kv->n_ctx, ith, nth);
        }
        return;
    }
    if (group > PLUMB_MAX_GROUP) { /* one query head per item */
        const int64_t n_items = T * n_head;
        int64_t per = n_items / (16 * nth);
        if (per < 1) per = 1;
        const int64_t n_chunks = (n_items + per - 1) / per;
        for (int64_t ch; (ch = plumb__cpu_next_chunk(c, ith, n_chunks)) >= 0;) {
            const int64_t item_end = (ch + 1) * per < n_items ? (ch + 1) * per : n_items;
            for (int64_t item = ch * per; item < item_end; item++)
                attn_tile(c, n, item / n_head, item / n_head + 1, item % n_head, 1, scratch, pv_work);
        }
        return;
    }
    /* items are (tile, KV head), a few at a time to whichever thread is free (a token's cost
     * grows with its position, and threads do not all run at the same speed) */
    int32_t *start = (int32_t *)(void *)((uint8_t *)scratch + attn_scratch_per_thread(n, nth) - (size_t)(T + 1) * sizeof(int32_t));
    const int64_t n_tiles = attn_tiles(p, T, start), n_items = n_tiles * n_kv;
    int64_t per = n_items / (16 * nth);
    if (per < 1) per = 1;
    const int64_t n_chunks = (n_items + per - 1) / per;
    for (int64_t ch; (ch = plumb__cpu_next_chunk(c, ith, n_chunks)) >= 0;) {
        const int64_t item_end = (ch + 1) * per < n_items ? (ch + 1) * per : n_items;
        for (int64_t item = ch * per; item < item_end; item++) {
            const int64_t tile = item / n_kv;
            attn_tile(c, n, start[tile], start[tile + 1], (item % n_kv) * group, group, scratch, pv_work);
        }
    }
}
size_t plumb__cpu_attn_scratch(const plumb_tensor *n, int nth) { return attn_scratch_per_thread(n, nth) * (size_t)nth; }
