/* test_rpc_graph.c — the COMPUTE message's graph codec (backend/remote/remote_graph.h): a
 * transformer block built with the typed builders over three host buffers (weights,
 * activations, the KV cache) is encoded run by run, decoded over the same buffers and run on
 * the CPU: every byte of the buffers must match the client graph's own run. Then hostile
 * encodings: every truncation, every byte flipped (what still decodes must run safely; the
 * sanitizer build checks that), and hand-made records that break one rule each.
 *
 * PLUMB_RPC_GRAPH_CORPUS=dir writes the block's encodings there (fuzz/corpus-rpc_graph's
 * seeds; fuzz_rpc_graph.c has buffers of the sizes below). */
#include "test.h"

#include "backend/backend.h"
#include "backend/remote/remote_graph.h"
#include "core/kv_cache.h"

#include <stdlib.h>
#include <string.h>

enum { N_BUF = 3, D = 64, HD = 16, NH = 4, NKV = 2, FF = 256, T = 3, N_VOCAB = 100 };
static const size_t buf_sizes[N_BUF] = {128 << 10, 64 << 10, 8 << 10}; /* weights, activations, cache */

typedef struct scene {
    plumb_backend *cpu;
    uint8_t *mem[N_BUF], *snap[N_BUF];
    plumb_buffer *buf[N_BUF];
    size_t top[N_BUF];
    plumb_kv_cache kv;
    uint16_t *kc[2], *vc[2];
    plumb_buffer *kb[2], *vb[2];
    size_t ko[2], vo[2];
    int32_t pos[T], seq[T];
    plumb_graph g;
    uint32_t rng;
} scene;

static float frand(scene *s) {
    s->rng = s->rng * 1664525u + 1013904223u;
    return (float)(s->rng >> 8) / 8388608.0f - 1.0f;
}

static size_t take(scene *s, int b, size_t n) {
    const size_t off = s->top[b];
    s->top[b] = (off + n + 63) / 64 * 64;
    CHECK(s->top[b] <= buf_sizes[b]);
    return off;
}

static plumb_tensor *leaf(scene *s, int b, int type, int64_t ne0, int64_t ne1) {
    const int64_t ne[2] = {ne0, ne1};
    plumb_tensor *t = plumb_graph_leaf(&s->g, type, 2, ne, NULL);
    t->buf = s->buf[b];
    t->offs = take(s, b, plumb_tensor_nbytes(t));
    t->data = s->mem[b] + t->offs;
    float row[FF];
    for (int64_t r = 0; r < ne1; r++) {
        for (int64_t i = 0; i < ne0; i++) row[i] = frand(s);
        if (type == PLUMB_TYPE_I32) continue;
        if (type == PLUMB_TYPE_F32) memcpy((uint8_t *)t->data + (size_t)r * t->nb[1], row, (size_t)ne0 * 4);
        else CHECK_STATUS(plumb_quantize_row(type, row, (uint8_t *)t->data + (size_t)r * t->nb[1], ne0), PLUMB_OK);
    }
    return t;
}

static plumb_tensor *view3(scene *s, plumb_tensor *x, int64_t a, int64_t b, int64_t c) {
    const int64_t ne[3] = {a, b, c};
    return plumb_graph_view(&s->g, x, 3, ne);
}

/* The block: embeddings, attention with rope, a gated FFN, then top_k + get_rows. */
static void scene_init(scene *s) {
    memset(s, 0, sizeof *s);
    s->rng = 12345;
    CHECK_STATUS(plumb_backend_cpu_create(1, &s->cpu), PLUMB_OK);
    for (int b = 0; b < N_BUF; b++) {
        s->mem[b] = aligned_alloc(64, buf_sizes[b]);
        s->snap[b] = malloc(buf_sizes[b]);
        memset(s->mem[b], 0, buf_sizes[b]);
        CHECK_STATUS(plumb_buffer_host(s->cpu, s->mem[b], buf_sizes[b], &s->buf[b]), PLUMB_OK);
    }
    s->kv = (plumb_kv_cache){.n_layer = 2, .n_seq = 2, .n_ctx = 16, .n_head = NH, .n_head_kv = NKV, .head_dim = HD,
                             .k = s->kc, .v = s->vc, .k_buf = s->kb, .v_buf = s->vb, .k_offs = s->ko, .v_offs = s->vo};
    const size_t layer_bytes = 2 * 16 * NKV * HD * 2;
    for (int l = 0; l < 2; l++) {
        s->ko[l] = take(s, 2, layer_bytes), s->vo[l] = take(s, 2, layer_bytes);
        s->kb[l] = s->vb[l] = s->buf[2];
        s->kc[l] = (uint16_t *)(s->mem[2] + s->ko[l]), s->vc[l] = (uint16_t *)(s->mem[2] + s->vo[l]);
    }
    const int32_t pos[T] = {3, 4, 5}, seq[T] = {0, 0, 1};
    memcpy(s->pos, pos, sizeof pos), memcpy(s->seq, seq, sizeof seq);
    CHECK_STATUS(plumb_graph_init(&s->g, 128), PLUMB_OK);
    plumb_graph *g = &s->g;

    plumb_tensor *tok_emb = leaf(s, 0, PLUMB_TYPE_Q8_0, D, N_VOCAB), *norm = leaf(s, 0, PLUMB_TYPE_F32, D, 1);
    plumb_tensor *wq = leaf(s, 0, PLUMB_TYPE_Q8_0, D, D), *wk = leaf(s, 0, PLUMB_TYPE_F32, D, NKV * HD);
    plumb_tensor *wv = leaf(s, 0, PLUMB_TYPE_F16, D, NKV * HD), *wo = leaf(s, 0, PLUMB_TYPE_Q4_0, D, D);
    plumb_tensor *wg = leaf(s, 0, PLUMB_TYPE_Q8_0, D, FF), *wu = leaf(s, 0, PLUMB_TYPE_F16, D, FF);
    plumb_tensor *wd = leaf(s, 0, PLUMB_TYPE_Q4_K, FF, D), *emb = leaf(s, 0, PLUMB_TYPE_F32, D, D);
    plumb_tensor *wr = leaf(s, 0, PLUMB_TYPE_F32, D, 4), *wx = leaf(s, 0, PLUMB_TYPE_Q8_0, D, 32 * 4);
    plumb_tensor *ids = leaf(s, 1, PLUMB_TYPE_I32, T, 1), *pos_t = leaf(s, 1, PLUMB_TYPE_I32, T, 1);
    const int32_t tok[T] = {7, 99, 0};
    memcpy(ids->data, tok, sizeof tok), memcpy(pos_t->data, pos, sizeof pos);

    plumb_tensor *x = plumb_graph_get_rows(g, tok_emb, ids);
    plumb_tensor *h = plumb_graph_rms_norm(g, x, norm, &(plumb_rms_norm_params){1e-5f});
    plumb_tensor *q = view3(s, plumb_graph_mul_mat(g, wq, h), HD, NH, T);
    plumb_tensor *k = view3(s, plumb_graph_mul_mat(g, wk, h), HD, NKV, T);
    plumb_tensor *v = view3(s, plumb_graph_mul_mat(g, wv, h), HD, NKV, T);
    const plumb_rope_params rp = {PLUMB_ROPE_NEOX, HD, 10000.0f, 1.0f, 1.0f};
    q = plumb_graph_rope(g, q, pos_t, NULL, &rp);
    k = plumb_graph_rope(g, k, pos_t, NULL, &rp);
    const plumb_attn_params ap = {.kv = &s->kv, .layer = 1, .pos = s->pos, .seq = s->seq, .scale = 0.25f};
    plumb_tensor *a = plumb_graph_attn(g, q, k, v, &ap);
    plumb_tensor *x2 = plumb_graph_add(g, x, plumb_graph_mul_mat(g, wo, a));
    plumb_tensor *h2 = plumb_graph_rms_norm(g, x2, norm, &(plumb_rms_norm_params){1e-5f});
    plumb_tensor *f = plumb_graph_silu_mul(g, plumb_graph_mul_mat(g, wg, h2), plumb_graph_mul_mat(g, wu, h2));
    plumb_tensor *out = plumb_graph_add(g, x2, plumb_graph_mul_mat(g, wd, f));
    out = plumb_graph_softcap(g, plumb_graph_scale(g, out, &(plumb_scale_params){2.0f}), &(plumb_softcap_params){3.0f});
    plumb_tensor *top = plumb_graph_top_k(g, plumb_graph_soft_max(g, out, &(plumb_soft_max_params){1.0f}),
                                          &(plumb_top_k_params){2});
    const int64_t flat = 2 * T;
    plumb_graph_mul(g, plumb_graph_get_rows(g, emb, plumb_graph_view(g, top, 1, &flat)), norm);
    /* a mixture of 4 experts of 32 rows over h2, two per token */
    plumb_tensor *probs = plumb_graph_soft_max(g, plumb_graph_mul_mat(g, wr, h2), &(plumb_soft_max_params){1.0f});
    plumb_tensor *sel = plumb_graph_top_k(g, probs, &(plumb_top_k_params){2});
    plumb_tensor *wts = plumb_graph_moe_weights(g, probs, sel, &(plumb_moe_weights_params){true, 1.5f});
    plumb_tensor *ex = plumb_graph_mul_mat_id(g, view3(s, wx, D, 32, 4), view3(s, h2, D, 1, T), sel);
    plumb_tensor *ms = plumb_graph_moe_sum(g, plumb_graph_gelu_tanh(g, ex), wts);
    plumb_graph_gelu_mul(g, ms, plumb_graph_silu(g, ms));
    /* outputs: each node its own place in the activations */
    for (int32_t i = 0; i < g->n_nodes; i++) {
        plumb_tensor *n = g->nodes[i];
        if (n->op == PLUMB_OP_VIEW) continue;
        n->buf = s->buf[1];
        n->offs = take(s, 1, plumb_tensor_nbytes(n));
        n->data = s->mem[1] + n->offs;
    }
    for (int32_t i = 0; i < g->n_nodes; i++) {
        plumb_tensor *n = g->nodes[i], *r = plumb__graph_root(n);
        if (n->op == PLUMB_OP_VIEW) n->buf = r->buf, n->offs = r->offs, n->data = r->data;
    }
    for (int b = 0; b < N_BUF; b++) memcpy(s->snap[b], s->mem[b], buf_sizes[b]);
}

static void scene_free(scene *s) {
    plumb_graph_free(&s->g);
    for (int b = 0; b < N_BUF; b++) {
        plumb_buffer_free(s->buf[b]);
        free(s->mem[b]);
        free(s->snap[b]);
    }
    plumb_backend_free(s->cpu);
}

static void restore(scene *s) {
    for (int b = 0; b < N_BUF; b++) memcpy(s->mem[b], s->snap[b], buf_sizes[b]);
}

static uint32_t buffer_id(const plumb_buffer *b, void *ctx) {
    const scene *s = ctx;
    for (uint32_t i = 0; i < N_BUF; i++)
        if (s->buf[i] == b) return i;
    return UINT32_MAX;
}

static plumb_status resolve(void *ctx, uint32_t id, uint64_t off, uint64_t n, plumb_buffer **out) {
    scene *s = ctx;
    if (id >= N_BUF) return PLUMB_E_NOT_FOUND;
    if (off > s->buf[id]->size || n > s->buf[id]->size - off) return PLUMB_E_RANGE;
    *out = s->buf[id];
    return PLUMB_OK;
}

static plumb_status run(scene *s, plumb_graph *g, int32_t first, int32_t end) {
    return s->cpu->iface->graph_compute(s->cpu, g, first, end);
}

/* Decodes p and runs it; the status of the decode. */
static plumb_status decode_run(scene *s, const uint8_t *p, size_t len, plumb_graph *g, plumb__rpc_graph_store *st) {
    plumb_status r = plumb__rpc_graph_decode(p, len, resolve, s, s->cpu, g, st);
    if (getenv("PLUMB_RPC_GRAPH_VERBOSE")) fprintf(stderr, "decode: %d %s\n", r, r ? plumb_last_error() : "");
    if (r == PLUMB_OK) CHECK_STATUS(run(s, g, 0, g->n_nodes), PLUMB_OK);
    else CHECK_EQ_INT(g->n_nodes, 0);
    return r;
}

static void encode(scene *s, int32_t first, int32_t end, uint8_t **p, size_t *len) {
    CHECK_STATUS(plumb__rpc_graph_encode(&s->g, first, end, buffer_id, s, p, len), PLUMB_OK);
}

TEST(rpc_graph_round_trip) {
    scene s;
    scene_init(&s);
    const int32_t n = s.g.n_nodes;
    const int32_t cuts[][2] = {{0, n}, {0, 1}, {1, 12}, {8, n}, {n - 3, n}, {26, n}, {31, n}};
    plumb_graph dg;
    CHECK_STATUS(plumb_graph_init(&dg, 128), PLUMB_OK);
    plumb__rpc_graph_store st = {0};
    CHECK(n > 31);
    uint8_t *want[N_BUF];
    for (int b = 0; b < N_BUF; b++) want[b] = malloc(buf_sizes[b]);
    const char *dir = getenv("PLUMB_RPC_GRAPH_CORPUS");
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        const int32_t first = cuts[c][0], end = cuts[c][1];
        restore(&s);
        CHECK_STATUS(run(&s, &s.g, 0, first), PLUMB_OK); /* the run's inputs */
        uint8_t *before[N_BUF];
        for (int b = 0; b < N_BUF; b++) before[b] = malloc(buf_sizes[b]), memcpy(before[b], s.mem[b], buf_sizes[b]);
        CHECK_STATUS(run(&s, &s.g, first, end), PLUMB_OK);
        for (int b = 0; b < N_BUF; b++) memcpy(want[b], s.mem[b], buf_sizes[b]), memcpy(s.mem[b], before[b], buf_sizes[b]);
        uint8_t *p;
        size_t len;
        encode(&s, first, end, &p, &len);
        CHECK_STATUS(decode_run(&s, p, len, &dg, &st), PLUMB_OK);
        int nodes = 0, got = 0; /* views aside (a view of data already there is a leaf) */
        for (int32_t i = first; i < end; i++) nodes += s.g.nodes[i]->op != PLUMB_OP_VIEW;
        for (int32_t i = 0; i < dg.n_nodes; i++) got += dg.nodes[i]->op != PLUMB_OP_VIEW;
        CHECK_EQ_INT(got, nodes);
        CHECK(memcmp(want[1], before[1], buf_sizes[1]) != 0); /* the run computed something */
        for (int b = 0; b < N_BUF; b++) CHECK(memcmp(want[b], s.mem[b], buf_sizes[b]) == 0);
        if (dir) {
            char path[512];
            snprintf(path, sizeof path, "%s/block-%d-%d", dir, first, end);
            FILE *fp = fopen(path, "wb");
            CHECK(fp && fwrite(p, 1, len, fp) == len);
            if (fp) fclose(fp);
        }
        free(p);
        for (int b = 0; b < N_BUF; b++) free(before[b]);
    }
    for (int b = 0; b < N_BUF; b++) free(want[b]);
    plumb__rpc_graph_store_free(&st);
    plumb_graph_free(&dg);
    scene_free(&s);
}

TEST(rpc_graph_truncated_and_flipped) {
    scene s;
    scene_init(&s);
    plumb_graph dg;
    CHECK_STATUS(plumb_graph_init(&dg, 128), PLUMB_OK);
    plumb__rpc_graph_store st = {0};
    uint8_t *p;
    size_t len;
    encode(&s, 0, s.g.n_nodes, &p, &len);
    for (size_t l = 0; l < len; l++) CHECK(plumb__rpc_graph_decode(p, l, resolve, &s, s.cpu, &dg, &st) != PLUMB_OK);
    uint8_t *q = malloc(len);
    int accepted = 0;
    const uint8_t flips[] = {0x01, 0x80, 0xff};
    for (size_t i = 0; i < len; i++)
        for (size_t f = 0; f < sizeof flips; f++) {
            memcpy(q, p, len);
            q[i] ^= flips[f];
            restore(&s);
            accepted += decode_run(&s, q, len, &dg, &st) == PLUMB_OK;
        }
    CHECK(accepted > 0); /* float parameters, say */
    free(q);
    free(p);
    plumb__rpc_graph_store_free(&st);
    plumb_graph_free(&dg);
    scene_free(&s);
}

/* ---- hand-made records ---- */

typedef struct wr {
    uint8_t p[4096];
    size_t n;
} wr;

static void w_le(wr *w, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) w->p[w->n++] = (uint8_t)(v >> (8 * i));
}
static void w_f32(wr *w, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    w_le(w, v, 4);
}
static void w_head(wr *w, int op, int type, int64_t a, int64_t b, int64_t c) {
    w_le(w, (uint64_t)op, 1);
    w_le(w, (uint64_t)type, 4);
    w_le(w, (uint64_t)a, 8), w_le(w, (uint64_t)b, 8), w_le(w, (uint64_t)c, 8), w_le(w, 1, 8);
}
static void w_leaf(wr *w, int type, int64_t a, int64_t b, int64_t c, uint32_t id, uint64_t off) {
    w_head(w, PLUMB_OP_NONE, type, a, b, c);
    w_le(w, id, 4), w_le(w, off, 8);
}

/* n, w F32 [64, 8] (buffer 0), x F32 [64, 2] (buffer 1), mul_mat [8, 2] (buffer 1 at 4096). */
static void w_mul_mat(wr *w, int32_t src0, int32_t src1, int x_type, int64_t x_ne0, uint64_t out_off) {
    w_le(w, 3, 4);
    w_leaf(w, PLUMB_TYPE_F32, 64, 8, 1, 0, 0);
    w_leaf(w, x_type, x_ne0, 2, 1, 1, 0);
    w_head(w, PLUMB_OP_MUL_MAT, PLUMB_TYPE_F32, 8, 2, 1);
    w_le(w, (uint32_t)src0, 4), w_le(w, (uint32_t)src1, 4);
    w_le(w, 1, 4), w_le(w, out_off, 8);
}

/* q [16, 4, 1], k and v [16, 2, 1] leaves, then attention over the scene's cache layer 1. */
static void w_attn(wr *w, int32_t layer, int32_t n_ctx, int32_t head_dim, int32_t pos, int32_t seq, uint64_t v_off) {
    w_le(w, 4, 4);
    w_leaf(w, PLUMB_TYPE_F32, 16, 4, 1, 1, 0);
    w_leaf(w, PLUMB_TYPE_F32, 16, 2, 1, 1, 256);
    w_leaf(w, PLUMB_TYPE_F32, 16, 2, 1, 1, 512);
    w_head(w, PLUMB_OP_ATTN, PLUMB_TYPE_F32, 64, 1, 1);
    w_le(w, 0, 4), w_le(w, 1, 4), w_le(w, 2, 4);
    w_le(w, 1, 4), w_le(w, 1024, 8);
    w_le(w, (uint32_t)layer, 4), w_le(w, 0, 4), w_f32(w, 0.25f), w_f32(w, 0.0f);
    const int32_t geo[6] = {2, 2, n_ctx, 4, 2, head_dim};
    for (int i = 0; i < 6; i++) w_le(w, (uint32_t)geo[i], 4);
    w_le(w, 2, 4), w_le(w, 0, 8), w_le(w, 2, 4), w_le(w, v_off, 8);
    w_le(w, 1, 4), w_le(w, (uint32_t)pos, 4), w_le(w, (uint32_t)seq, 4);
}

static plumb_status dec(scene *s, const wr *w, plumb_graph *g, plumb__rpc_graph_store *st) {
    restore(s);
    return decode_run(s, w->p, w->n, g, st);
}

TEST(rpc_graph_hostile_records) {
    scene s;
    scene_init(&s);
    plumb_graph dg;
    CHECK_STATUS(plumb_graph_init(&dg, 8), PLUMB_OK);
    plumb__rpc_graph_store st = {0};
    wr w;
#define CASE(want, ...)                                                                                               \
    do {                                                                                                               \
        w.n = 0;                                                                                                       \
        __VA_ARGS__;                                                                                                   \
        CHECK_STATUS(dec(&s, &w, &dg, &st), want);                                                                     \
    } while (0)
    CASE(PLUMB_OK, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, 4096));
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 2, PLUMB_TYPE_F32, 64, 4096));  /* itself */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 99, PLUMB_TYPE_F32, 64, 4096)); /* out of range */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, -2, 1, PLUMB_TYPE_F32, 64, 4096));
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, -1, PLUMB_TYPE_F32, 64, 4096));  /* a required source */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 32, 4096));   /* K mismatch */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F16, 64, 4096));   /* x not F32 */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 1, 0, PLUMB_TYPE_F32, 64, 4096));   /* shape [2, 8] expected */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, 4, 64, 4096));                /* no type 4 */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_Q4_0, 48, 4096));  /* not whole blocks */
    CASE(PLUMB_E_RANGE, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, (64 << 10) - 32)); /* output past the end */
    CASE(PLUMB_E_RANGE, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, UINT64_MAX - 3));  /* offset + size wraps */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, 4098));  /* unaligned */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, 4096); w.p[4 + 2 * 49] = PLUMB_OP_COPY);
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, 4096); w.p[w.n++] = 0); /* a trailing byte */
    /* the node's type and op bytes: I32 output, op 200 */
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, 4096); w.p[4 + 2 * 49 + 1] = PLUMB_TYPE_I32);
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, 4096); w.p[4 + 2 * 49] = 200);
    CASE(PLUMB_E_FORMAT, w_mul_mat(&w, 0, 1, PLUMB_TYPE_F32, 64, 4096); w.p[4 + 2 * 49] = PLUMB_OP_NONE);
    /* buffers: unknown id; a leaf past the end */
    CASE(PLUMB_E_NOT_FOUND, w_le(&w, 1, 4); w_leaf(&w, PLUMB_TYPE_F32, 4, 1, 1, 7, 0));
    CASE(PLUMB_E_RANGE, w_le(&w, 1, 4); w_leaf(&w, PLUMB_TYPE_F32, 4, 1, 1, 2, 8 << 10));
    /* counts and extents */
    CASE(PLUMB_E_RANGE, w_le(&w, UINT32_MAX, 4); w_leaf(&w, PLUMB_TYPE_F32, 4, 1, 1, 0, 0));
    CASE(PLUMB_E_RANGE, w_le(&w, 0, 4));
    CASE(PLUMB_E_FORMAT, w_le(&w, 8, 4); w_leaf(&w, PLUMB_TYPE_F32, 4, 1, 1, 0, 0));
    CASE(PLUMB_E_FORMAT, w_le(&w, 1, 4); w_leaf(&w, PLUMB_TYPE_F32, (int64_t)1 << 41, 1, 1, 0, 0));
    CASE(PLUMB_E_FORMAT, w_le(&w, 1, 4); w_leaf(&w, PLUMB_TYPE_F32, 1 << 30, 1 << 30, 1 << 30, 0, 0));
    CASE(PLUMB_E_FORMAT, w_le(&w, 1, 4); w_leaf(&w, PLUMB_TYPE_F32, 0, 1, 1, 0, 0));
    CASE(PLUMB_E_FORMAT, w_le(&w, 1, 4); w_leaf(&w, PLUMB_TYPE_F32, -4, 1, 1, 0, 0));
    CASE(PLUMB_E_RANGE, for (int i = 0; i < 9; i++) { w_le(&w, 9, i ? 0 : 4); w_leaf(&w, PLUMB_TYPE_F32, 4, 1, 1, 0, 0); });
    /* attention */
    CASE(PLUMB_OK, w_attn(&w, 1, 16, 16, 15, 1, 4096));
    CASE(PLUMB_E_FORMAT, w_attn(&w, 1, 16, 16, 16, 1, 4096)); /* position n_ctx */
    CASE(PLUMB_E_FORMAT, w_attn(&w, 1, 16, 16, -1, 1, 4096));
    CASE(PLUMB_E_FORMAT, w_attn(&w, 1, 16, 16, 0, 2, 4096));  /* sequence n_seq */
    CASE(PLUMB_E_FORMAT, w_attn(&w, 2, 16, 16, 0, 0, 4096));  /* layer n_layer */
    CASE(PLUMB_E_FORMAT, w_attn(&w, 1, 16, 8, 0, 0, 4096));   /* head_dim not q's */
    CASE(PLUMB_E_RANGE, w_attn(&w, 1, 16, 16, 0, 0, 7 << 10)); /* cache past the buffer */
    CASE(PLUMB_E_RANGE, w_attn(&w, 1, 1 << 20, 16, 0, 0, 0)); /* cache too large for it */
    CASE(PLUMB_E_FORMAT, w_attn(&w, 1, 16, 16, 0, 0, 4096); w.p[w.n - 12] = 0xff); /* T huge */
    /* get_rows over leaf ids: in range, then out of range, then overwritten by the run, then
     * the scale written over its own source */
    for (int c = 0; c < 4; c++) {
        w.n = 0;
        w_le(&w, 4, 4);
        w_leaf(&w, PLUMB_TYPE_F32, 8, 4, 1, 0, 0);
        w_leaf(&w, PLUMB_TYPE_I32, 2, 1, 1, 1, 0);
        w_head(&w, PLUMB_OP_GET_ROWS, PLUMB_TYPE_F32, 8, 2, 1);
        w_le(&w, 0, 4), w_le(&w, 1, 4), w_le(&w, 1, 4), w_le(&w, 256, 8);
        w_head(&w, PLUMB_OP_SCALE, PLUMB_TYPE_F32, 8, 2, 1);
        w_le(&w, 2, 4), w_le(&w, 1, 4), w_le(&w, c == 2 ? 0 : c == 3 ? 288 : 512, 8), w_f32(&w, 2.0f);
        restore(&s);
        const int32_t ids[2] = {3, c == 1 ? 4 : 0};
        memcpy(s.mem[1], ids, sizeof ids);
        memcpy(s.snap[1], ids, sizeof ids);
        /* c == 2: the scale after get_rows may reuse the ids' bytes: they were read */
        CHECK_STATUS(decode_run(&s, w.p, w.n, &dg, &st), c == 0 || c == 2 ? PLUMB_OK : PLUMB_E_FORMAT);
    }
    /* ids a node writes before get_rows reads them: refused */
    w.n = 0;
    w_le(&w, 4, 4);
    w_leaf(&w, PLUMB_TYPE_F32, 8, 4, 1, 0, 0);
    w_leaf(&w, PLUMB_TYPE_I32, 2, 1, 1, 1, 0);
    w_head(&w, PLUMB_OP_SCALE, PLUMB_TYPE_F32, 8, 4, 1);
    w_le(&w, 0, 4), w_le(&w, 1, 4), w_le(&w, 0, 8), w_f32(&w, 2.0f); /* over the ids */
    w_head(&w, PLUMB_OP_GET_ROWS, PLUMB_TYPE_F32, 8, 2, 1);
    w_le(&w, 0, 4), w_le(&w, 1, 4), w_le(&w, 1, 4), w_le(&w, 256, 8);
    restore(&s);
    const int32_t ids_ok[2] = {3, 0};
    memcpy(s.mem[1], ids_ok, sizeof ids_ok);
    memcpy(s.snap[1], ids_ok, sizeof ids_ok);
    CHECK_STATUS(decode_run(&s, w.p, w.n, &dg, &st), PLUMB_E_FORMAT);
    CHECK(strstr(plumb_last_error(), "its ids are overwritten") != NULL);
#undef CASE
    plumb__rpc_graph_store_free(&st);
    plumb_graph_free(&dg);
    scene_free(&s);
}
