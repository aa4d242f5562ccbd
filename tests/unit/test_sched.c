/* test_sched.c — the scheduler and backend-owned memory, on a device the host cannot address.
 *
 * The "device" here is a backend whose buffers are plain memory the scheduler never sees
 * (base NULL: it must go through buffer_set/get/copy) and whose graph_compute runs the CPU
 * backend's kernels over that memory. So a model placed on it must give the CPU's logits bit
 * for bit: any mistake in placement, copies, pools, the KV cache on the device or reading the
 * logits back shows as a difference. It can decline ops (supports_op) to test the fallback. */
#include "test.h"
#include "tiny_model.h"

#include "backend/backend.h"
#include "backend/cpu/cpu_internal.h"
#include "core/kv_cache.h"
#include "model/model.h"
#include "runtime/runtime.h"

#include <stdlib.h>
#include <string.h>

typedef struct fake_device {
    plumb_backend *cpu; /* whose kernels run */
    bool decline[PLUMB_OP_COUNT];
    int computes;    /* graph_compute calls */
    uint64_t memory; /* what device_info says it has (0: unknown) */
    int gets;        /* buffer_get calls */
    int reads;       /* reads handed to graph_compute_read */
} fake_device;

static bool fake_supports_op(plumb_backend *b, const plumb_tensor *node) {
    const fake_device *f = b->ctx;
    return !f->decline[node->op];
}

static bool fake_supports_weight(plumb_backend *b, int type) {
    (void)b;
    return type == PLUMB_TYPE_F32;
}

static plumb_status fake_alloc(plumb_backend *b, size_t size, plumb_buffer **out) {
    plumb_buffer *buf = calloc(1, sizeof *buf);
    void *mem = calloc(1, size ? size : 1);
    if (!buf || !mem) {
        free(buf);
        free(mem);
        return PLUMB_E_NOMEM;
    }
    *buf = (plumb_buffer){.backend = b, .base = NULL, .handle = mem, .size = size};
    *out = buf;
    return PLUMB_OK;
}

static void fake_free_buffer(plumb_buffer *buf) {
    free(buf->handle);
    free(buf);
}

static plumb_status fake_set(plumb_buffer *buf, size_t off, const void *src, size_t n) {
    CHECK(off + n <= buf->size);
    memcpy((uint8_t *)buf->handle + off, src, n);
    return PLUMB_OK;
}

static plumb_status fake_get(const plumb_buffer *buf, size_t off, void *dst, size_t n) {
    CHECK(off + n <= buf->size);
    ((fake_device *)buf->backend->ctx)->gets++;
    memcpy(dst, (const uint8_t *)buf->handle + off, n);
    return PLUMB_OK;
}

static plumb_status fake_copy(plumb_buffer *dst, size_t doff, const plumb_buffer *src, size_t soff, size_t n) {
    CHECK(doff + n <= dst->size && soff + n <= src->size);
    memmove((uint8_t *)dst->handle + doff, (const uint8_t *)src->handle + soff, n);
    return PLUMB_OK;
}

/* The host address of t's data when it is in this device's memory (else leaves it). */
static void map(plumb_backend *b, plumb_tensor *t) {
    if (t && t->buf && t->buf->backend == b) t->data = (uint8_t *)t->buf->handle + t->offs;
}

static void unmap(plumb_backend *b, plumb_tensor *t) {
    if (t && t->buf && t->buf->backend == b) t->data = NULL;
}

static plumb_status fake_compute(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end) {
    fake_device *f = b->ctx;
    f->computes++;
    for (int32_t i = first; i < end; i++) {
        plumb_tensor *n = g->nodes[i];
        CHECK(n->backend == 1 || n->op == PLUMB_OP_VIEW); /* only what was assigned here */
        CHECK(!f->decline[n->op]);
        for (int s = 0; s < PLUMB_MAX_SRC; s++) /* every source is in this device's memory */
            CHECK(!n->src[s] || (n->src[s]->buf && n->src[s]->buf->backend == b));
        map(b, n);
        for (int s = 0; s < PLUMB_MAX_SRC; s++) map(b, n->src[s]);
        if (n->op == PLUMB_OP_ATTN) {
            plumb_kv_cache *kv = n->params.attn.kv;
            const int l = n->params.attn.layer;
            CHECK(kv->k_buf[l] && kv->k_buf[l]->backend == b && !kv->k[l]);
            kv->k[l] = (uint16_t *)(void *)((uint8_t *)kv->k_buf[l]->handle + kv->k_offs[l]);
            kv->v[l] = (uint16_t *)(void *)((uint8_t *)kv->v_buf[l]->handle + kv->v_offs[l]);
        }
    }
    plumb_status st = f->cpu->iface->graph_compute(f->cpu, g, first, end);
    for (int32_t i = first; i < end; i++) {
        plumb_tensor *n = g->nodes[i];
        unmap(b, n);
        for (int s = 0; s < PLUMB_MAX_SRC; s++) unmap(b, n->src[s]);
        if (n->op == PLUMB_OP_ATTN) {
            plumb_kv_cache *kv = n->params.attn.kv;
            kv->k[n->params.attn.layer] = kv->v[n->params.attn.layer] = NULL;
        }
    }
    return st;
}

/* As a device across a network does it: the run, then the reads, in one call. */
static plumb_status fake_compute_read(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end, const plumb_read *reads,
                                      int32_t n_reads) {
    fake_device *f = b->ctx;
    plumb_status st = fake_compute(b, g, first, end);
    for (int32_t i = 0; i < n_reads && !st; i++) {
        CHECK(reads[i].buf->backend == b && reads[i].off + reads[i].n <= reads[i].buf->size);
        memcpy(reads[i].dst, (const uint8_t *)reads[i].buf->handle + reads[i].off, reads[i].n);
        f->reads++;
    }
    return st;
}

static void fake_info(plumb_backend *b, plumb_device_info *out) {
    memset(out, 0, sizeof *out);
    strcpy(out->name, "fake device");
    out->memory = ((const fake_device *)b->ctx)->memory;
}

static void fake_free(plumb_backend *b) {
    fake_device *f = b->ctx;
    plumb_backend_free(f->cpu);
    free(f);
    free(b);
}

static const plumb_backend_iface fake_iface = {
    .name = "fake",
    .supports_op = fake_supports_op,
    .supports_weight = fake_supports_weight,
    .graph_compute = fake_compute,
    .free = fake_free,
    .buffer_alloc = fake_alloc,
    .buffer_free = fake_free_buffer,
    .buffer_set = fake_set,
    .buffer_get = fake_get,
    .buffer_copy = fake_copy,
    .device_info = fake_info,
};

static bool fake_reads; /* fake_create makes devices with graph_compute_read */

static const plumb_backend_iface fake_reads_iface = {
    .name = "fake",
    .supports_op = fake_supports_op,
    .supports_weight = fake_supports_weight,
    .graph_compute = fake_compute,
    .graph_compute_read = fake_compute_read,
    .free = fake_free,
    .buffer_alloc = fake_alloc,
    .buffer_free = fake_free_buffer,
    .buffer_set = fake_set,
    .buffer_get = fake_get,
    .buffer_copy = fake_copy,
    .device_info = fake_info,
};

static plumb_backend *fake_create(const plumb_op *declined, int n_declined) {
    plumb_backend *b = calloc(1, sizeof *b);
    fake_device *f = calloc(1, sizeof *f);
    if (!b || !f || plumb_backend_cpu_create(1, &f->cpu)) {
        CHECK(!"fake device");
        free(b);
        free(f);
        return NULL;
    }
    for (int i = 0; i < n_declined; i++) f->decline[declined[i]] = true;
    b->iface = fake_reads ? &fake_reads_iface : &fake_iface;
    b->ctx = f;
    return b;
}

#define N_LAYER 4

/* Logits of two sequences through a prompt, a copied sequence and single-token steps: every
 * row of every step, appended to out (n rows of TINY_VOCAB). */
static int run_model(plumb_model_t *m, float *out) {
    const plumb_context_params cp = {.n_ctx = 32, .n_batch = 4, .n_threads = 1, .n_seq = 3};
    plumb_context_t *c = NULL;
    CHECK_STATUS(plumb_context_create(m, &cp, &c), PLUMB_OK);
    if (!c) return 0;
    int rows = 0;
    const int32_t prompt[] = {1, 4, 5, 6, 7, 8, 9, 10, 11}, seq[] = {0, 0, 1, 0, 1, 0, 0, 1, 0};
    bool all[9];
    for (int i = 0; i < 9; i++) all[i] = true;
    /* nine tokens in batches of four: the graph runs three times */
    CHECK_STATUS(plumb_decode(c, &(plumb_batch){.n_tokens = 9, .tokens = prompt, .seq = seq, .logits = all}), PLUMB_OK);
    for (int j = 0; j < plumb_n_logits(c); j++) memcpy(out + (size_t)rows++ * TINY_VOCAB, plumb_get_logits(c, j), TINY_VOCAB * 4);
    CHECK_STATUS(plumb_seq_copy(c, 0, 2, 4), PLUMB_OK); /* sequence 2 continues sequence 0's first four */
    for (int step = 0; step < 5; step++) {
        const int32_t t[] = {12 + step % 4, 13, 14 - step % 3}, s[] = {0, 1, 2};
        bool want[3] = {true, true, true};
        CHECK_STATUS(plumb_decode(c, &(plumb_batch){.n_tokens = 3, .tokens = t, .seq = s, .logits = want}), PLUMB_OK);
        for (int j = 0; j < plumb_n_logits(c); j++)
            memcpy(out + (size_t)rows++ * TINY_VOCAB, plumb_get_logits(c, j), TINY_VOCAB * 4);
    }
    plumb_context_free(c);
    return rows;
}

/* The model on the fake device with n_offload layers and these ops declined: the CPU's bits. */
static void check_offload(int n_offload, const plumb_op *declined, int n_declined, int want_layers) {
    enum { MAX_ROWS = 9 + 15 };
    float cpu[MAX_ROWS * TINY_VOCAB], dev[MAX_ROWS * TINY_VOCAB];
    plumb_model_t *a = tiny_llama("tiny", N_LAYER), *b = tiny_llama("tiny", N_LAYER);
    plumb_backend *fake = fake_create(declined, n_declined);
    if (!a || !b || !fake) {
        plumb_model_free(a);
        plumb_model_free(b);
        if (fake) fake_free(fake);
        return;
    }
    CHECK_STATUS(plumb__model_place_on(b, fake, "fake:0", n_offload), PLUMB_OK);
    int32_t n_layers = 0;
    CHECK(strcmp(plumb_model_device(b, &n_layers), "fake:0") == 0);
    CHECK_EQ_INT(n_layers, want_layers);
    /* the offloaded layers' weights went to the device: not host memory any more */
    CHECK(want_layers == 0 || (b->layers[N_LAYER - 1].wq->buf && !b->layers[N_LAYER - 1].wq->data));
    CHECK(b->layers[0].wq->buf == NULL || want_layers >= N_LAYER);
    CHECK(b->token_embd->buf == NULL); /* the embeddings stay on the host */
    const int ra = run_model(a, cpu), rb = run_model(b, dev);
    CHECK_EQ_INT(ra, MAX_ROWS);
    CHECK_EQ_INT(rb, MAX_ROWS);
    CHECK(memcmp(cpu, dev, sizeof cpu) == 0);
    CHECK(((fake_device *)fake->ctx)->computes > 0);
    plumb_model_free(a);
    plumb_model_free(b);
}

TEST(sched_device_runs_every_layer_and_the_head_bit_for_bit) { check_offload(-1, NULL, 0, N_LAYER + 1); }

TEST(sched_device_runs_the_last_layers_bit_for_bit) {
    check_offload(2, NULL, 0, 2);
    check_offload(N_LAYER, NULL, 0, N_LAYER); /* every layer, the head on the CPU */
}

TEST(sched_ops_a_device_lacks_run_on_the_cpu_bit_for_bit) {
    const plumb_op declined[] = {PLUMB_OP_RMS_NORM, PLUMB_OP_SILU_MUL};
    check_offload(-1, declined, 2, N_LAYER + 1);
    const plumb_op rope[] = {PLUMB_OP_ROPE, PLUMB_OP_ADD};
    check_offload(3, rope, 2, 3);
}

/* A tiny model and a fake device for it, or false (both freed) after a failed check. */
static bool model_and_device(plumb_model_t **m, plumb_backend **fake) {
    *m = tiny_llama("tiny", N_LAYER);
    *fake = fake_create(NULL, 0);
    if (*m && *fake) return true;
    plumb_model_free(*m);
    if (*fake) fake_free(*fake);
    return false;
}

TEST(sched_copies_and_runs_at_each_boundary) {
    plumb_model_t *m;
    plumb_backend *fake;
    if (!model_and_device(&m, &fake)) return;
    CHECK_STATUS(plumb__model_place_on(m, fake, "fake:0", 2), PLUMB_OK);
    const plumb_context_params cp = {.n_ctx = 16, .n_batch = 4, .n_threads = 1, .n_seq = 1};
    plumb_context_t *c = NULL;
    CHECK_STATUS(plumb_context_create(m, &cp, &c), PLUMB_OK);
    if (c) {
        const int32_t t[] = {1, 4, 5};
        CHECK_STATUS(plumb_decode(c, &(plumb_batch){.n_tokens = 3, .tokens = t}), PLUMB_OK);
        /* CPU (embeddings, layers 0-1), device (layers 2-3), CPU (the head): three runs; the
         * copies: positions to the device, the residual stream there and back */
        const plumb_sched *s = plumb__context_sched(c);
        CHECK_EQ_INT(s->n_splits, 3);
        CHECK_EQ_INT(s->n_copies, 3);
        CHECK_EQ_INT(((fake_device *)fake->ctx)->computes, 1);
    }
    plumb_context_free(c);
    plumb_model_free(m);
}

TEST(sched_model_too_large_for_the_device_is_refused_with_both_sizes) {
    plumb_model_t *m;
    plumb_backend *fake;
    if (!model_and_device(&m, &fake)) return;
    ((fake_device *)fake->ctx)->memory = 1024; /* less than one layer's weights */
    CHECK_STATUS(plumb__model_place_on(m, fake, "fake:0", -1), PLUMB_E_NOMEM);
    const char *msg = plumb_last_error();
    CHECK(strstr(msg, "need ") && strstr(msg, " KiB of weights") && strstr(msg, "which has 1.0 KiB") && strstr(msg, "fake device") && strstr(msg, "--offload"));
    plumb_model_free(m); /* frees the device too */
}

/* A device with graph_compute_read gets what the scheduler reads after its run (the residual
 * stream crossing back, the logits) as the run's reads: no buffer_get at all, and the CPU's
 * bits. */
TEST(sched_reads_go_with_the_run_on_devices_that_take_them) {
    fake_reads = true;
    check_offload(-1, NULL, 0, N_LAYER + 1);
    check_offload(2, NULL, 0, 2);
    const plumb_op declined[] = {PLUMB_OP_RMS_NORM, PLUMB_OP_SILU_MUL};
    check_offload(-1, declined, 2, N_LAYER + 1);
    for (int n_offload = -1; n_offload <= 2; n_offload += 3) {
        plumb_model_t *m;
        plumb_backend *fake;
        if (!model_and_device(&m, &fake)) break;
        CHECK_STATUS(plumb__model_place_on(m, fake, "fake:0", n_offload), PLUMB_OK);
        const plumb_context_params cp = {.n_ctx = 16, .n_batch = 4, .n_threads = 1, .n_seq = 1};
        plumb_context_t *c = NULL;
        CHECK_STATUS(plumb_context_create(m, &cp, &c), PLUMB_OK);
        const fake_device *f = fake->ctx;
        for (int step = 0; c && step < 3; step++) {
            const int32_t t[] = {1, 4, 5};
            const int computes = f->computes, reads = f->reads;
            CHECK_STATUS(plumb_decode(c, &(plumb_batch){.n_tokens = step ? 1 : 3, .tokens = t + (step ? step - 1 : 0)}), PLUMB_OK);
            CHECK_EQ_INT(f->computes - computes, 1); /* one run on the device per step */
            CHECK_EQ_INT(f->reads - reads, 1);       /* the logits, or the residual stream back */
            CHECK_EQ_INT(f->gets, 0);
        }
        plumb_context_free(c);
        plumb_model_free(m);
    }
    fake_reads = false;
}

/* ---- the observer: every MUL_MAT seen before it runs, with the sources it then reads ---- */

#define MAX_PENDING 64

/* What the observer saw: each matmul's product recomputed from the sources it was shown,
 * checked against the node's output when a reader of it is shown (then complete and intact). */
typedef struct watch {
    int matmuls, checked, asked;
    double worst; /* largest relative difference of a checked output */
    struct {
        const plumb_tensor *node;
        float *want; /* [N][T] */
    } pending[MAX_PENDING];
    int n_pending;
} watch;

static float *tensor_copy(const plumb_tensor *t) {
    const size_t n = plumb_tensor_nbytes(t);
    float *p = malloc(n);
    if (p) CHECK_STATUS(plumb_tensor_get(t, 0, p, n), PLUMB_OK);
    return p;
}

/* out vs. want, elementwise relative (floor 1e-3 absolute) */
static void check_product(watch *w, const plumb_tensor *node, const float *want) {
    float *got = tensor_copy(node);
    if (!got) return;
    const int64_t n = node->ne[0] * node->ne[1];
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - want[i]) / fmax(fabs(want[i]), 1e-3);
        if (d > w->worst) w->worst = d;
    }
    free(got);
    w->checked++;
}

static int observe(const plumb_tensor *node, bool ready, void *user) {
    watch *w = user;
    bool reader = false;
    for (int k = 0; k < PLUMB_MAX_SRC; k++)
        for (int j = 0; node->src[k] && j < w->n_pending; j++)
            reader = reader || plumb__graph_root(node->src[k]) == w->pending[j].node;
    if (node->op != PLUMB_OP_MUL_MAT && !reader) return 0;
    if (!ready) return 1;
    w->asked++;
    for (int j = 0; j < w->n_pending; j++) /* the products this node reads are complete */
        for (int k = 0; k < PLUMB_MAX_SRC; k++)
            if (node->src[k] && plumb__graph_root(node->src[k]) == w->pending[j].node) {
                check_product(w, w->pending[j].node, w->pending[j].want);
                free(w->pending[j].want);
                w->pending[j--] = w->pending[--w->n_pending];
                break;
            }
    if (node->op != PLUMB_OP_MUL_MAT) return 1;
    w->matmuls++;
    const plumb_tensor *wt = node->src[0], *x = node->src[1];
    CHECK(wt->type == PLUMB_TYPE_F32 && x->type == PLUMB_TYPE_F32);
    const int64_t K = x->ne[0], N = wt->ne[1], T = x->ne[1];
    float *W = tensor_copy(wt), *X = tensor_copy(x), *want = malloc((size_t)(N * T) * sizeof *want);
    if (W && X && want && w->n_pending < MAX_PENDING) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += (double)W[n * K + k] * X[t * K + k];
                want[t * N + n] = (float)s;
            }
        w->pending[w->n_pending].node = node;
        w->pending[w->n_pending++].want = want;
        want = NULL;
    }
    free(W), free(X), free(want);
    return 1;
}

/* The tiny model (on the fake device from layer n_offload on when >= 0) decoded with the
 * observer: every matmul seen with intact sources, the logits those of a run without it. */
static void check_observer(int n_offload) {
    plumb_model_t *m = tiny_llama("tiny", N_LAYER), *plain = tiny_llama("tiny", N_LAYER);
    plumb_backend *fake = n_offload >= 0 ? fake_create(NULL, 0) : NULL;
    if (!m || !plain || (n_offload >= 0 && !fake)) {
        plumb_model_free(m), plumb_model_free(plain);
        if (fake) fake_free(fake);
        return;
    }
    if (fake) CHECK_STATUS(plumb__model_place_on(m, fake, "fake:0", n_offload), PLUMB_OK);
    const plumb_context_params cp = {.n_ctx = 32, .n_batch = 4, .n_threads = 1, .n_seq = 2};
    plumb_context_t *c = NULL, *p = NULL;
    CHECK_STATUS(plumb_context_create(m, &cp, &c), PLUMB_OK);
    CHECK_STATUS(plumb_context_create(plain, &cp, &p), PLUMB_OK);
    watch w = {0};
    if (c && p) {
        plumb__context_set_observer(c, observe, &w);
        const int32_t t[] = {1, 4, 5, 6, 7, 8, 9, 10, 11}, seq[] = {0, 0, 1, 0, 1, 0, 0, 1, 0};
        bool all[9];
        for (int i = 0; i < 9; i++) all[i] = true;
        for (int at = 0; at < 9; at += 4) { /* one graph per decode: 4, 4 and 1 tokens */
            const int n = 9 - at < 4 ? 9 - at : 4;
            const plumb_batch b = {.n_tokens = n, .tokens = t + at, .seq = seq + at, .logits = all};
            CHECK_STATUS(plumb_decode(c, &b), PLUMB_OK);
            CHECK_STATUS(plumb_decode(p, &b), PLUMB_OK);
            /* the head's product is read by no node: it is the logits */
            CHECK_EQ_INT(w.n_pending, 1);
            for (int j = 0; j < w.n_pending; j++) {
                const plumb_tensor *head = w.pending[j].node;
                CHECK_EQ_INT(head->ne[1], n);
                for (int64_t r = 0; r < head->ne[1] && r < n; r++)
                    for (int v = 0; v < TINY_VOCAB; v++) {
                        const float want = w.pending[j].want[r * TINY_VOCAB + v], got = plumb_get_logits(c, (int32_t)r)[v];
                        CHECK(fabs((double)got - want) <= 1e-4 * fmax(fabs(want), 1e-2));
                    }
                free(w.pending[j].want);
            }
            w.n_pending = 0;
            for (int j = 0; j < n; j++) CHECK(memcmp(plumb_get_logits(c, j), plumb_get_logits(p, j), TINY_VOCAB * 4) == 0);
        }
        /* 7 matmuls a layer and the head, in each of the 3 graphs of 4, 4 and 1 tokens */
        CHECK_EQ_INT(w.matmuls, 3 * (7 * N_LAYER + 1));
        CHECK_EQ_INT(w.checked, w.matmuls - 3);
        CHECK(w.worst < 1e-4);
        if (fake) CHECK(((fake_device *)fake->ctx)->gets > 0); /* sources read from the device */
        /* without the observer: the runs as before */
        plumb__context_set_observer(c, NULL, NULL);
        CHECK_STATUS(plumb_seq_truncate(c, 0, 0), PLUMB_OK);
        CHECK_STATUS(plumb_seq_truncate(c, 1, 0), PLUMB_OK);
        CHECK_STATUS(plumb_decode(c, &(plumb_batch){.n_tokens = 4, .tokens = t, .seq = seq}), PLUMB_OK);
        CHECK_EQ_INT(plumb__context_sched(c)->n_splits, fake ? 3 : 1);
    }
    plumb_context_free(c), plumb_context_free(p);
    plumb_model_free(m), plumb_model_free(plain);
}

TEST(sched_observer_sees_every_matmul_with_its_sources_intact) { check_observer(-1); }

TEST(sched_observer_reads_sources_in_device_memory) { check_observer(2); }
