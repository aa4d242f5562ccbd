/* placement.c — where a model computes: the device the user named, the layers offloaded to it
 * (counted from the last, like llama.cpp's n_gpu_layers; the output head is one more), and the
 * upload of those layers' weights into the device's buffers. Weights the device cannot hold
 * (a type its kernels lack) and the token embeddings stay in host memory, where the scheduler
 * runs their ops on the CPU. A tied output head on the device gets its own copy of the
 * embeddings there, as llama.cpp duplicates it. */
#include "model/model.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The layer a weight belongs to: blk.N.* is N, the output head n_layer, the embeddings -1;
 * weights every layer reads (rope frequency factors) -2: they stay on the host. */
static int weight_layer(const plumb_model_t *m, const plumb_tensor *t) {
    int il = 0, used = 0;
    if (t->name && sscanf(t->name, "blk.%d.%n", &il, &used) == 1 && used > 0) return il;
    if (t == m->output || t == m->output_norm) return m->hp.n_layer;
    if (t == m->token_embd) return -1;
    return -2;
}

/* bytes as "812 B", "3.4 KiB", "241.4 MiB" or "1.2 GiB" into buf[32] */
static const char *size_text(uint64_t bytes, char *buf) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) v /= 1024.0, u++;
    snprintf(buf, 32, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

static plumb_status upload(plumb_model_t *m, plumb_tensor *t) {
    plumb_backend *d = m->device;
    const size_t n = plumb_tensor_nbytes(t);
    plumb_buffer *buf;
    plumb_status st = d->iface->buffer_alloc(d, n, &buf);
    if (st) return st;
    m->device_bufs[m->n_device_bufs++] = buf;
    if ((st = (d->iface->buffer_load ? d->iface->buffer_load : d->iface->buffer_set)(buf, 0, t->data, n))) return st;
    t->buf = buf;
    t->offs = 0;
    t->data = buf->base;
    return PLUMB_OK;
}

/* Whether the device runs what reads t: a stack of experts [K, N, E] is read only by the
 * expert matmul, which a device may lack even when it holds the type (then the experts stay
 * on the host with the op, instead of being copied back for every token). */
static bool device_reads(const plumb_model_t *m, const plumb_tensor *t) {
    plumb_backend *d = m->device;
    if (!d->iface->supports_weight(d, t->type)) return false;
    if (t->ne[2] == 1) return true;
    plumb_tensor x = {.type = PLUMB_TYPE_F32, .ne = {t->ne[0], 1, 1, 1}};
    plumb_tensor ids = {.type = PLUMB_TYPE_I32, .ne = {1, 1, 1, 1}};
    plumb_tensor node = {.type = PLUMB_TYPE_F32, .op = PLUMB_OP_MUL_MAT_ID, .src = {(plumb_tensor *)t, &x, &ids},
                         .ne = {t->ne[1], 1, 1, 1}};
    return d->iface->supports_op(d, &node);
}

static bool on_device(const plumb_model_t *m, const plumb_tensor *t) {
    const int il = weight_layer(m, t);
    return il >= m->layer_first && il < m->layer_end && device_reads(m, t);
}

plumb_status plumb__model_place(plumb_model_t *m, const plumb_model_params *p) {
    const plumb_backend_reg *reg;
    int index;
    snprintf(m->device_spec, sizeof m->device_spec, "cpu");
    if (!p->device) return PLUMB_OK;
    plumb_status st = plumb_backend_lookup(p->device, &reg, &index);
    if (st) return st;
    if (reg == plumb__backend_regs[0] || p->n_offload == 0) return PLUMB_OK; /* the CPU */
    plumb_backend *b;
    char spec[32];
    if (index < 0) { /* named by its address */
        const char *key = p->remote_key_file ? p->remote_key_file : getenv("PLUMB_REMOTE_KEY_FILE");
        if ((st = reg->create_at(strchr(p->device, ':') + 1, key, 1, &b))) return st;
        snprintf(spec, sizeof spec, "%.31s", p->device);
    } else {
        if ((st = reg->create(index, 1, &b))) return st;
        snprintf(spec, sizeof spec, "%s:%d", reg->name, index);
    }
    return plumb__model_place_on(m, b, spec, p->n_offload);
}

plumb_status plumb__model_place_on(plumb_model_t *m, plumb_backend *b, const char *spec, int32_t n_offload) {
    PLUMB_ASSERT(!m->device);
    m->device = b;
    snprintf(m->device_spec, sizeof m->device_spec, "%s", spec);
    const int32_t L = m->hp.n_layer;
    const int32_t n_off = n_offload < 0 || n_offload > L + 1 ? L + 1 : n_offload;
    m->layer_first = L - (n_off > L ? L : n_off);
    m->layer_end = n_off > L ? L + 1 : L;
    plumb_status st;
    if (m->layer_end == L + 1 && !m->output) { /* the tied head gets its own device copy */
        PLUMB_ASSERT(m->n_weights < m->cap_weights);
        m->output = &m->weights[m->n_weights++];
        *m->output = *m->token_embd;
        m->output->name = "output.weight (the token embeddings)";
    }
    uint64_t need = 0;
    int32_t n_up = 0;
    for (int32_t i = 0; i < m->n_weights; i++)
        if (on_device(m, &m->weights[i])) need += plumb_tensor_nbytes(&m->weights[i]), n_up++;
    plumb_device_info info;
    m->device->iface->device_info(m->device, &info);
    char sa[32], sb[32];
    if (info.memory && need > info.memory)
        return plumb__fail(PLUMB_E_NOMEM, "%s: the %d offloaded layers need %s of weights on %s (%s), which has %s; "
                           "offload fewer (--offload N)", m->name, (int)n_off, size_text(need, sa), m->device_spec,
                           info.name, size_text(info.memory, sb));
    m->device_bufs = calloc((size_t)n_up + 1, sizeof *m->device_bufs);
    if (!m->device_bufs) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < m->n_weights; i++) {
        plumb_tensor *t = &m->weights[i];
        if (!on_device(m, t)) continue;
        if (info.max_alloc && plumb_tensor_nbytes(t) > info.max_alloc)
            return plumb__fail(PLUMB_E_NOMEM, "%s: tensor '%s' is %s, more than the %s one buffer of %s (%s) can hold",
                               m->name, t->name, size_text(plumb_tensor_nbytes(t), sa), size_text(info.max_alloc, sb),
                               m->device_spec, info.name);
        if ((st = upload(m, t))) {
            char why[256];
            snprintf(why, sizeof why, "%s", plumb_last_error());
            return plumb__fail(st, "%s: uploading '%s' to %s: %s", m->name, t->name, m->device_spec, why);
        }
    }
    return PLUMB_OK;
}

void plumb__model_unplace(plumb_model_t *m) {
    for (int32_t i = 0; i < m->n_device_bufs; i++) plumb_buffer_free(m->device_bufs[i]);
    free(m->device_bufs);
    m->device_bufs = NULL;
    m->n_device_bufs = 0;
    plumb_backend_free(m->device);
    m->device = NULL;
}

void plumb_model_device_traffic(const plumb_model_t *m, plumb_device_traffic *out) {
    *out = (plumb_device_traffic){0};
    if (m && m->device && m->device->iface->traffic) m->device->iface->traffic(m->device, out);
}

const char *plumb_model_device(const plumb_model_t *m, int32_t *n_layers_offloaded) {
    if (n_layers_offloaded)
        *n_layers_offloaded = m->device ? m->layer_end - m->layer_first : 0;
    return m->device_spec[0] ? m->device_spec : "cpu";
}
