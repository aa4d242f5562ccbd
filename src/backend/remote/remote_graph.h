/* remote_graph.h — the COMPUTE message's graph (docs/remote-protocol.md): the nodes of one run
 * of a client's graph, encoded self-contained, and the server's decoder that checks every byte
 * of it before building a graph over the connection's buffers.
 *
 * Encoding (little-endian): u32 n, then n tensor records in execution order (sources come
 * earlier in the table; every record that is not a leaf is a node, in the order it runs):
 *   u8 op, u32 type, i64 ne[4], i32 src[n_src(op)] (-1: none),
 *   unless op is VIEW: u32 buffer id, u64 offset (a leaf's data, a node's output),
 *   then the op's parameters:
 *     SCALE f32 s | RMS_NORM f32 eps | SOFTCAP f32 cap | SOFT_MAX f32 scale | TOP_K i32 k
 *     MOE_WEIGHTS u8 norm, f32 scale
 *     ROPE i32 mode, i32 n_rot, f32 base, f32 freq_scale, f32 attn_factor
 *     ATTN i32 layer, i32 n_swa, f32 scale, f32 softcap,
 *          i32 n_layer, n_seq, n_ctx, n_head, n_head_kv, head_dim (the cache's geometry),
 *          u32 k id, u64 k offset, u32 v id, u64 v offset (the layer's cache rows),
 *          u32 T, i32 pos[T], i32 seq[T]
 * A leaf (op NONE) is any tensor the run reads but does not compute: weights, inputs and the
 * outputs of earlier runs, all in the server's buffers. */
#ifndef PLUMB_BACKEND_REMOTE_GRAPH_H
#define PLUMB_BACKEND_REMOTE_GRAPH_H

#include "backend/backend.h"
#include "core/kv_cache.h"

#include <stdint.h>

/* Encodes g->nodes[first..end). buffer_id maps a buffer to its id on the server (UINT32_MAX:
 * none; then PLUMB_E_INVALID_ARG). *out is malloc'd (the caller frees it), *len its bytes.
 * PLUMB_E_INVALID_ARG for a run holding a COPY or reading host memory. */
plumb_status plumb__rpc_graph_encode(const plumb_graph *g, int32_t first, int32_t end,
                                     uint32_t (*buffer_id)(const plumb_buffer *b, void *ctx), void *ctx,
                                     uint8_t **out, size_t *len);

/* The server's buffer id at bytes [offset, offset + nbytes): *buf on success, else an error
 * (unknown id, or a range that does not fit in the buffer; the callee must not overflow). */
typedef plumb_status (*plumb__rpc_resolve)(void *ctx, uint32_t id, uint64_t offset, uint64_t nbytes,
                                           plumb_buffer **buf);

/* What a decoded graph borrows besides the buffers: the cache description its attention nodes
 * point to (one slot per attention node: kv.n_layer slots, node layer = slot) and the batch's
 * positions and sequences. Zero-initialize; reused across decodes; free with _store_free. */
typedef struct plumb__rpc_graph_store {
    plumb_kv_cache kv;
    int32_t cap_slots;
    int32_t *ints; /* pos and seq arrays of every attention node */
    size_t n_ints, cap_ints;
    size_t *pos_at; /* [cap_slots]: where slot s's pos array starts in ints (seq follows) */
} plumb__rpc_graph_store;

void plumb__rpc_graph_store_free(plumb__rpc_graph_store *s);

/* Parses p[0..len) (hostile) into g (made by plumb_graph_init; reset here), every leaf and
 * output in a buffer found by resolve. Everything the typed builders assert, every count,
 * index, type, parameter range and byte range is checked first: a bad encoding is
 * PLUMB_E_FORMAT (or resolve's error) with a message naming the tensor, a graph over g's
 * capacity PLUMB_E_RANGE; g is then empty. When b is not NULL every node must be one b
 * supports_op and every weight a type it supports_weight. Index data (get_rows, mul_mat_id
 * and moe_weights ids) is checked in range now, so nothing may write the buffers between
 * decode and compute. */
plumb_status plumb__rpc_graph_decode(const uint8_t *p, size_t len, plumb__rpc_resolve resolve, void *ctx,
                                     plumb_backend *b, plumb_graph *g, plumb__rpc_graph_store *store);

#endif
