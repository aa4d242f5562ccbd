/* remote_server.h — the server's side of one authenticated connection (docs/remote-protocol.md):
 * the connection's own buffers on the served backend, within a memory limit, and the requests
 * over them (INFO, ALLOC, FREE, SET, SET_HASH, GET, COPY, COMPUTE). Every id, offset and size is checked
 * against what this connection allocated; whatever the connection held is freed when it ends. */
#ifndef PLUMB_BACKEND_REMOTE_SERVER_H
#define PLUMB_BACKEND_REMOTE_SERVER_H

#include "backend/backend.h"
#include "backend/remote/remote_graph.h"
#include "backend/remote/remote_wire.h"

#include <pthread.h>

typedef struct plumb_rpc_session {
    plumb_backend *backend; /* served (borrowed) */
    plumb_buffer **bufs;    /* id i + 1 is bufs[i]; NULL once freed */
    uint32_t n_bufs, cap_bufs;
    uint64_t used, limit; /* bytes this connection holds, and the most it may */
    plumb_graph graph;    /* the last COMPUTE's, reused */
    plumb__rpc_graph_store store;
    int32_t max_tensors;
    pthread_mutex_t *compute_lock; /* held around the backend's graph_compute when the backend
                                      serves several connections (NULL: none) */
    const char *cache_dir; /* weights by content: <cache_dir>/<sha256 hex> (NULL: no cache) */
    struct {               /* the last SET_HASH the cache could not answer: a SET of exactly */
        bool on;           /* that range with that content is stored in the cache */
        uint32_t id;
        uint64_t off, size;
        uint8_t hash[32];
    } wanted;
    uint64_t bytes_set, bytes_cached; /* weights received, and filled from the cache */
    uint8_t *last; /* the last COMPUTE's graph bytes, which the next may patch */
    size_t last_len, last_cap;
} plumb_rpc_session;

/* A session serving backend b with at most limit bytes of buffers and graphs of at most
 * max_tensors tensors. */
plumb_status plumb__rpc_session_init(plumb_rpc_session *s, plumb_backend *b, uint64_t limit, int32_t max_tensors);
/* Frees every buffer the connection still holds, and the session. */
void plumb__rpc_session_free(plumb_rpc_session *s);
/* Answers one request with exactly one frame: OK (with the reply's payload) or ERROR { i32
 * status, text }. A bad request is an ERROR and the connection goes on; the result is an error
 * only when the connection itself failed. */
plumb_status plumb__rpc_session_handle(plumb_rpc_session *s, plumb_rpc_conn *c, uint16_t type, const uint8_t *p,
                                       size_t n);
/* Receives and answers requests until the connection ends (the peer closes, a frame fails its
 * checks, a deadline passes); returns why it ended. */
plumb_status plumb__rpc_session_serve(plumb_rpc_session *s, plumb_rpc_conn *c);

#endif
