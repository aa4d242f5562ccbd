/* context.c — a model's running state: the KV cache of every sequence, the per-batch graph
 * and its activation pool, the input buffers, the backends, and the decode loop that checks
 * a batch, splits it into forward passes and collects the requested logits.
 * Buffers are sized when the context is created (the activation pool on the first batch of
 * each new size), so decoding allocates nothing per token. */
#include "backend/backend.h"
#include "core/cpu_count.h"
#include "core/error.h"
#include "core/huge_map.h"
#include "core/kv_cache.h"
#include "model/model.h"
#include "runtime/runtime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct plumb_context {
    plumb_model_t *model;
    plumb_context_params params;
    plumb_kv_cache kv;
    void *kv_map; /* one mapping holds every layer's keys and values */
    size_t kv_map_size;
    int32_t *seq_len; /* [n_seq] next position of each sequence */
    plumb_backend *cpu;
    plumb_sched sched;
    plumb_graph graph;
    int32_t *in_tokens, *in_pos, *in_seq, *in_out_ids; /* [n_batch] */
    float *logits;                                     /* [cap_logits][n_vocab] */
    int32_t n_logits, cap_logits;
};

plumb_context_params plumb_context_default_params(void) {
    plumb_context_params p = {.n_ctx = 0, .n_batch = 512, .n_threads = 0, .n_seq = 1};
    return p;
}

const plumb_sched *plumb__context_sched(const plumb_context_t *c) { return &c->sched; }

void plumb__context_set_observer(plumb_context_t *c, plumb_sched_observer fn, void *user) {
    c->sched.observer = fn;
    c->sched.observer_user = user;
}

int32_t plumb_context_n_ctx(const plumb_context_t *c) { return c->params.n_ctx; }
int32_t plumb_context_n_batch(const plumb_context_t *c) { return c->params.n_batch; }
uint64_t plumb_context_repacked_bytes(const plumb_context_t *c) { return plumb_backend_cpu_packed_bytes(c->cpu); }

void plumb_context_free(plumb_context_t *c) {
    if (!c) return;
    if (c->kv_map) munmap(c->kv_map, c->kv_map_size);
    for (int l = 0; l < c->kv.n_layer; l++) { /* either array may be missing after a failed create */
        if (c->kv.k_buf) plumb_buffer_free(c->kv.k_buf[l]);
        if (c->kv.v_buf) plumb_buffer_free(c->kv.v_buf[l]);
    }
    free(c->kv.k);
    free(c->kv.v);
    free(c->kv.k_buf);
    free(c->kv.v_buf);
    free(c->kv.k_offs);
    free(c->kv.v_offs);
    plumb_sched_free(&c->sched);
    free(c->seq_len);
    plumb_backend_free(c->cpu);
    plumb_graph_free(&c->graph);
    free(c->in_tokens);
    free(c->in_pos);
    free(c->in_seq);
    free(c->in_out_ids);
    free(c->logits);
    free(c);
}

/* Hands the CPU backend the model's weights that matmuls read (all but the token embeddings,
 * unless they are the output head too) to keep in its GEMM's layout. */
static plumb_status keep_weights(plumb_context_t *c) {
    const plumb_model_t *m = c->model;
    const plumb_tensor **w = malloc((size_t)m->n_weights * sizeof *w);
    if (!w) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    int32_t n = 0;
    for (int32_t i = 0; i < m->n_weights; i++)
        if (&m->weights[i] != m->token_embd || !m->output || m->output->data == m->token_embd->data) w[n++] = &m->weights[i];
    const plumb_status st = plumb_backend_cpu_pack_weights(c->cpu, w, n);
    free(w);
    return st;
}

plumb_status plumb_context_create(plumb_model_t *m, const plumb_context_params *pp, plumb_context_t **out) {
    if (!m || !out) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_context_create: NULL argument");
    *out = NULL;
    plumb_context_params p = pp ? *pp : plumb_context_default_params();
    const plumb_hparams *hp = &m->hp;
    if (p.n_ctx <= 0) p.n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (p.n_batch <= 0) p.n_batch = 512;
    if (p.n_seq <= 0) p.n_seq = 1;
    if (p.n_threads <= 0) { /* the CPUs this process may use, not every online one */
        plumb_cpu_count cpus;
        plumb__cpu_count(&cpus);
        p.n_threads = cpus.n;
    }
    if (p.n_ctx > (1 << 24) || p.n_seq > 256 || p.n_batch > 65536)
        return plumb__fail(PLUMB_E_INVALID_ARG, "context too large (ctx %d, batch %d, sequences %d)", p.n_ctx, p.n_batch, p.n_seq);
    plumb_context_t *c = calloc(1, sizeof *c);
    if (!c) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    c->model = m;
    c->params = p;
    plumb_status st;
    c->kv.n_layer = hp->n_layer;
    c->kv.n_seq = p.n_seq;
    c->kv.n_ctx = p.n_ctx;
    c->kv.n_head = hp->n_head;
    c->kv.n_head_kv = hp->n_head_kv;
    c->kv.head_dim = hp->head_dim;
    const size_t n_layer = (size_t)hp->n_layer;
    c->kv.k = calloc(n_layer, sizeof *c->kv.k);
    c->kv.v = calloc(n_layer, sizeof *c->kv.v);
    c->kv.k_buf = calloc(n_layer, sizeof *c->kv.k_buf);
    c->kv.v_buf = calloc(n_layer, sizeof *c->kv.v_buf);
    c->kv.k_offs = calloc(n_layer, sizeof *c->kv.k_offs);
    c->kv.v_offs = calloc(n_layer, sizeof *c->kv.v_offs);
    c->seq_len = calloc((size_t)p.n_seq, sizeof *c->seq_len);
    if (!c->kv.k || !c->kv.v || !c->kv.k_buf || !c->kv.v_buf || !c->kv.k_offs || !c->kv.v_offs || !c->seq_len) goto nomem;
    /* Every layer's keys and values in one zeroed mapping aligned to 2 MiB and advised for
     * transparent huge pages: attention reads the value rows of a decoded token 64 rows apart,
     * one 4 KiB page each, and with small pages the TLB misses made that part 1.7x slower
     * at 3000 positions (microbenchmark, values not in cache). */
    const size_t kv_elems = (size_t)p.n_seq * (size_t)p.n_ctx * (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    const size_t part = (kv_elems * sizeof(uint16_t) + 63) / 64 * 64;
    /* the layers a device runs keep their keys and values in its memory */
    plumb_backend *dev = m->device;
    int n_host = 0;
    for (int l = 0; l < hp->n_layer; l++) n_host += !(dev && l >= m->layer_first && l < m->layer_end);
    uint8_t *kv_base = n_host ? plumb__huge_map(2 * (size_t)n_host * part, &c->kv_map, &c->kv_map_size) : NULL;
    if (n_host && !kv_base) goto nomem;
    for (int l = 0, h = 0; l < hp->n_layer; l++) {
        if (dev && l >= m->layer_first && l < m->layer_end) {
            if ((st = dev->iface->buffer_alloc(dev, part, &c->kv.k_buf[l])) ||
                (st = dev->iface->buffer_alloc(dev, part, &c->kv.v_buf[l])))
                goto fail;
            c->kv.k[l] = c->kv.k_buf[l]->base;
            c->kv.v[l] = c->kv.v_buf[l]->base;
            continue;
        }
        c->kv.k[l] = (uint16_t *)(void *)(kv_base + (size_t)(2 * h) * part);
        c->kv.v[l] = (uint16_t *)(void *)(kv_base + (size_t)(2 * h + 1) * part);
        h++;
    }
    c->in_tokens = malloc((size_t)p.n_batch * sizeof(int32_t));
    c->in_pos = malloc((size_t)p.n_batch * sizeof(int32_t));
    c->in_seq = malloc((size_t)p.n_batch * sizeof(int32_t));
    c->in_out_ids = malloc((size_t)p.n_batch * sizeof(int32_t));
    if (!c->in_tokens || !c->in_pos || !c->in_seq || !c->in_out_ids) goto nomem;
    /* room for the copies between devices too */
    if ((st = plumb_graph_init(&c->graph, 72 * hp->n_layer + 128))) goto fail;
    if ((st = plumb_backend_cpu_create(p.n_threads, &c->cpu))) goto fail;
    plumb_backend_cpu_set_gemm(c->cpu, !p.no_repack, p.fast_gemm);
    if ((st = keep_weights(c))) goto fail;
    c->sched.backends[0] = c->cpu;
    c->sched.n_backends = 1;
    if (dev) {
        c->sched.backends[c->sched.n_backends++] = dev;
        c->sched.layer_first = m->layer_first;
        c->sched.layer_end = m->layer_end;
    }
    *out = c;
    return PLUMB_OK;
nomem:
    st = plumb__fail(PLUMB_E_NOMEM, "out of memory for a context of %d positions x %d sequences", p.n_ctx, p.n_seq);
fail:
    plumb_context_free(c);
    return st;
}

/* Checks a batch against the vocabulary, the sequences and the cache; fills seq_len_after. */
static plumb_status check_batch(const plumb_context_t *c, const plumb_batch *b, int32_t *lens, int32_t *n_out) {
    const int32_t n_vocab = c->model->hp.n_vocab;
    *n_out = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        const int32_t tok = b->tokens[i], s = b->seq ? b->seq[i] : 0;
        if (tok < 0 || tok >= n_vocab)
            return plumb__fail(PLUMB_E_INVALID_ARG, "token %d of the batch is id %d, outside the vocabulary (0-%d)", i, tok,
                               n_vocab - 1);
        if (s < 0 || s >= c->params.n_seq)
            return plumb__fail(PLUMB_E_INVALID_ARG, "token %d: sequence %d does not exist (the context has %d)", i, s,
                               c->params.n_seq);
        const int32_t pos = b->pos ? b->pos[i] : lens[s];
        if (pos < 0 || pos > lens[s])
            return plumb__fail(PLUMB_E_INVALID_ARG, "token %d: position %d of sequence %d does not continue it (length %d)",
                               i, pos, s, lens[s]);
        if (pos >= c->params.n_ctx)
            return plumb__fail(PLUMB_E_RANGE, "context full: position %d needs more than the %d positions of the context",
                               pos, c->params.n_ctx);
        lens[s] = pos + 1;
        if (b->logits ? b->logits[i] : i == b->n_tokens - 1) (*n_out)++;
    }
    return PLUMB_OK;
}

static plumb_status ensure_logits(plumb_context_t *c, int32_t n) {
    if (n <= c->cap_logits) return PLUMB_OK;
    const size_t row = (size_t)(c->model->hp.n_vocab > c->model->hp.n_embd ? c->model->hp.n_vocab : c->model->hp.n_embd);
    /* a decode starts the rows over, so nothing is kept; aligned as a backend's own memory, so
     * that a host backend may write its output here directly (plumb_sched_compute) */
    free(c->logits);
    c->logits = NULL;
    c->cap_logits = 0;
    float *grown = aligned_alloc(64, ((size_t)n * row * sizeof(float) + 63) / 64 * 64);
    if (!grown) return plumb__fail(PLUMB_E_NOMEM, "out of memory for %d rows of logits", n);
    c->logits = grown;
    c->cap_logits = n;
    return PLUMB_OK;
}

plumb_status plumb_decode(plumb_context_t *c, const plumb_batch *b) {
    if (!c || !b || b->n_tokens <= 0 || !b->tokens)
        return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_decode: empty batch or NULL argument");
    const int32_t n_seq = c->params.n_seq;
    int32_t lens_stack[256];
    memcpy(lens_stack, c->seq_len, (size_t)n_seq * sizeof(int32_t));
    int32_t n_out;
    plumb_status st = check_batch(c, b, lens_stack, &n_out);
    if (st) return st;
    if ((st = ensure_logits(c, n_out))) return st;
    c->n_logits = 0;
    const plumb_model_t *m = c->model;
    const int64_t n_vocab = m->hp.n_vocab;
    for (int32_t start = 0; start < b->n_tokens; start += c->params.n_batch) {
        const int32_t T = b->n_tokens - start < c->params.n_batch ? b->n_tokens - start : c->params.n_batch;
        int32_t chunk_out = 0;
        for (int32_t i = 0; i < T; i++) {
            const int32_t k = start + i, s = b->seq ? b->seq[k] : 0;
            c->in_tokens[i] = b->tokens[k];
            c->in_seq[i] = s;
            c->in_pos[i] = b->pos ? b->pos[k] : c->seq_len[s];
            c->seq_len[s] = c->in_pos[i] + 1;
            if (b->logits ? b->logits[k] : k == b->n_tokens - 1) c->in_out_ids[chunk_out++] = i;
        }
        plumb_graph *g = &c->graph;
        plumb_graph_reset(g);
        int64_t ne_t[1] = {T}, ne_o[1] = {chunk_out};
        plumb_graph_inputs in = {
            .tokens = plumb_graph_leaf(g, PLUMB_TYPE_I32, 1, ne_t, c->in_tokens),
            .pos = plumb_graph_leaf(g, PLUMB_TYPE_I32, 1, ne_t, c->in_pos),
            .out_ids = chunk_out > 0 && chunk_out < T ? plumb_graph_leaf(g, PLUMB_TYPE_I32, 1, ne_o, c->in_out_ids) : NULL,
            .seq = c->in_seq,
            .n_tokens = T,
            .n_out = chunk_out,
            .kv = &c->kv,
        };
        plumb_tensor *x = m->arch->build(m, g, &in);
        plumb_tensor *logits = NULL;
        if (chunk_out > 0 && c->params.embeddings) (logits = plumb__build_hidden(m, g, &in, x))->is_output = true;
        else if (chunk_out > 0) logits = plumb__build_output(m, g, &in, x);
        else x->is_output = true; /* only the KV cache is wanted */
        const size_t row = c->params.embeddings ? (size_t)m->hp.n_embd : (size_t)n_vocab;
        if ((st = plumb_sched_compute(&c->sched, g, logits, c->logits + (size_t)c->n_logits * row,
                                      (size_t)chunk_out * row * sizeof(float))))
            return st;
        c->n_logits += chunk_out;
    }
    return PLUMB_OK;
}

const float *plumb_get_embeddings(const plumb_context_t *c, int32_t j) {
    if (!c || !c->params.embeddings || j < 0 || j >= c->n_logits) return NULL;
    return c->logits + (size_t)j * (size_t)c->model->hp.n_embd;
}

const float *plumb_get_logits(const plumb_context_t *c, int32_t j) {
    if (!c || c->params.embeddings || j < 0 || j >= c->n_logits) return NULL;
    return c->logits + (size_t)j * (size_t)c->model->hp.n_vocab;
}

int32_t plumb_n_logits(const plumb_context_t *c) { return c ? c->n_logits : 0; }

int32_t plumb_seq_len(const plumb_context_t *c, int32_t seq) {
    return (c && seq >= 0 && seq < c->params.n_seq) ? c->seq_len[seq] : 0;
}

plumb_status plumb_seq_truncate(plumb_context_t *c, int32_t seq, int32_t len) {
    if (!c || seq < 0 || seq >= c->params.n_seq) return plumb__fail(PLUMB_E_INVALID_ARG, "sequence %d does not exist", seq);
    if (len < 0) return plumb__fail(PLUMB_E_INVALID_ARG, "negative length %d", len);
    if (len < c->seq_len[seq]) c->seq_len[seq] = len;
    return PLUMB_OK;
}

plumb_status plumb_seq_copy(plumb_context_t *c, int32_t src, int32_t dst, int32_t len) {
    if (!c || src < 0 || src >= c->params.n_seq || dst < 0 || dst >= c->params.n_seq)
        return plumb__fail(PLUMB_E_INVALID_ARG, "sequence %d or %d does not exist", src, dst);
    if (len < 0 || len > c->seq_len[src])
        return plumb__fail(PLUMB_E_RANGE, "cannot copy %d positions of sequence %d, which holds %d", len, src, c->seq_len[src]);
    if (src != dst) {
        const plumb_kv_cache *kv = &c->kv;
        const size_t row = (size_t)kv->n_head_kv * (size_t)kv->head_dim, seq = (size_t)kv->n_ctx * row;
        const size_t n = (size_t)len * row * sizeof(uint16_t), d = (size_t)dst * seq * sizeof(uint16_t),
                     s = (size_t)src * seq * sizeof(uint16_t);
        for (int l = 0; l < kv->n_layer; l++) {
            if (kv->k_buf[l]) { /* a device's */
                const plumb_backend_iface *dev = kv->k_buf[l]->backend->iface;
                plumb_status st = dev->buffer_copy(kv->k_buf[l], d, kv->k_buf[l], s, n);
                if (!st) st = dev->buffer_copy(kv->v_buf[l], d, kv->v_buf[l], s, n);
                if (st) return st;
                continue;
            }
            memcpy((uint8_t *)kv->k[l] + d, (uint8_t *)kv->k[l] + s, n);
            memcpy((uint8_t *)kv->v[l] + d, (uint8_t *)kv->v[l] + s, n);
        }
    }
    c->seq_len[dst] = len;
    return PLUMB_OK;
}
