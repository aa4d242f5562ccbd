/* kv_cache.h — the key/value cache layout shared by the runtime (which owns it) and the
 * backends' attention op (which writes and reads it).
 *
 * Per layer, keys and values are F16, indexed by sequence and position:
 *   k[layer] : [n_seq][n_ctx][n_head_kv * head_dim]   (v likewise)
 * A token at position p of sequence s writes row (s, p); attention reads rows [lo, p]. */
#ifndef PLUMB_CORE_KV_CACHE_H
#define PLUMB_CORE_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct plumb_buffer plumb_buffer;

struct plumb_kv_cache {
    int n_layer;
    int n_seq;
    int n_ctx;
    int n_head;
    int n_head_kv;
    int head_dim; /* keys and values share it */
    /* a layer a device runs keeps its keys and values in the device's buffers: k_buf[layer]
     * from byte k_offs[layer] (likewise v); k[layer] and v[layer] are their host addresses,
     * or NULL where the host cannot address them. A layer on the CPU has k_buf NULL and its
     * rows in host memory at k[layer]. */
    uint16_t **k; /* [n_layer] */
    uint16_t **v; /* [n_layer] */
    plumb_buffer **k_buf, **v_buf; /* [n_layer] */
    size_t *k_offs, *v_offs;       /* [n_layer] */
};

#endif
