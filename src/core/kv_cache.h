/* kv_cache.h — the key/value cache layout shared by the runtime (which owns it) and the
 * backends' attention op (which writes and reads it).
 *
 * Per layer, keys and values are F16, indexed by sequence and position:
 *   k[layer] : [n_seq][n_ctx][n_head_kv * head_dim]   (v likewise)
 * A token at position p of sequence s writes row (s, p); attention reads rows [lo, p]. */
#ifndef PLUMB_CORE_KV_CACHE_H
#define PLUMB_CORE_KV_CACHE_H

#include <stdint.h>

struct plumb_kv_cache {
    int n_layer;
    int n_seq;
    int n_ctx;
    int n_head;
    int n_head_kv;
    int head_dim; /* keys and values share it */
    uint16_t **k; /* [n_layer] */
    uint16_t **v; /* [n_layer] */
};

#endif
