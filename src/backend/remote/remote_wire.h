/* remote_wire.h — the remote backend's authenticated transport (docs/remote-protocol.md,
 * version 2) over a connected stream socket: the mutual pre-shared-key handshake, framed
 * messages tagged with HMAC-SHA256 under the session key, sequence numbers, and a deadline on
 * every blocking call. Everything received is checked (magic, version, type, length cap,
 * sequence number, tag) before any byte of it is returned. Any failure kills the connection:
 * the socket is shut down (not closed: the caller owns the fd) and later calls fail. */
#ifndef PLUMB_BACKEND_REMOTE_WIRE_H
#define PLUMB_BACKEND_REMOTE_WIRE_H

#include "plumb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define PLUMB_RPC_VERSION 2 /* 2: COMPUTE carries writes, reads and graph patches */
#define PLUMB_RPC_HEADER_BYTES 20
#define PLUMB_RPC_TAG_BYTES 32
#define PLUMB_RPC_NONCE_BYTES 32
#define PLUMB_RPC_MAX_BULK (1u << 28)  /* payload cap of SET, COMPUTE and OK */
#define PLUMB_RPC_MAX_SMALL (1u << 20) /* payload cap of every other type */
#define PLUMB_RPC_MAX_PARTS 16         /* iovecs per plumb__rpc_send */
#define PLUMB_RPC_KEY_FILE_MAX 4096
#define PLUMB_RPC_KEY_MIN 16
#define PLUMB_RPC_CAP_CACHE 1u /* capability: the server keeps weights by content (SET_HASH) */

enum plumb_rpc_type {
    PLUMB_RPC_HELLO = 1,
    PLUMB_RPC_CHALLENGE = 2,
    PLUMB_RPC_AUTH = 3,
    PLUMB_RPC_ERROR = 4,
    PLUMB_RPC_OK = 5,
    PLUMB_RPC_INFO = 16,
    PLUMB_RPC_ALLOC = 17,
    PLUMB_RPC_FREE = 18,
    PLUMB_RPC_SET = 19,
    PLUMB_RPC_SET_HASH = 20,
    PLUMB_RPC_GET = 21,
    PLUMB_RPC_COPY = 22,
    PLUMB_RPC_COMPUTE = 23,
};

typedef struct plumb_rpc_conn {
    int fd;
    bool server;        /* this end is the server: it receives 'C' frames and sends 'S' ones */
    bool authed;        /* the handshake completed */
    bool dead;          /* a call failed: the connection is unusable */
    uint8_t session[32];
    uint64_t send_seq, recv_seq;
    int timeout_ms;     /* the deadline of each send, recv or handshake step */
    uint8_t *buf;       /* the last received payload (+ its tag); reused, owned here */
    size_t buf_cap;
    int idle_ms;        /* recv's wait for a frame to begin: 0 within timeout_ms, < 0 without
                           limit, else idle_ms; the frame itself then has timeout_ms */
    uint64_t bytes_sent, bytes_received; /* authenticated frames, headers and tags included */
} plumb_rpc_conn;

/* fd stays the caller's (conn_free does not close it). timeout_ms <= 0 means 30 s. */
void plumb__rpc_conn_init(plumb_rpc_conn *c, int fd, bool server, int timeout_ms);
/* Frees (and wipes) the buffer and the session key; does not close the fd. */
void plumb__rpc_conn_free(plumb_rpc_conn *c);

/* The handshake of docs/remote-protocol.md. key: at least 16 bytes. A peer with another key
 * is PLUMB_E_INVALID_ARG (the client finds it from the server's proof; the server from the
 * client's proof, or from the client hanging up: PLUMB_E_IO); another protocol version is
 * PLUMB_E_UNSUPPORTED naming both versions (the server tells the client in an ERROR frame,
 * whose text the client reports); a malformed frame PLUMB_E_FORMAT; socket errors, EOF and
 * timeouts PLUMB_E_IO. On success send_seq = recv_seq = 0 and the session key is set. */
plumb_status plumb__rpc_handshake_client(plumb_rpc_conn *c, const uint8_t *key, size_t key_len,
                                         uint32_t *server_caps);
plumb_status plumb__rpc_handshake_server(plumb_rpc_conn *c, const uint8_t *key, size_t key_len,
                                         uint32_t caps);

/* One frame of `type` whose payload is the concatenation of parts[0..n_parts) (n_parts <= 16;
 * a part may have iov_len 0). A payload over the type's cap is PLUMB_E_INVALID_ARG. */
plumb_status plumb__rpc_send(plumb_rpc_conn *c, uint16_t type, const struct iovec *parts,
                             int n_parts);
/* The next frame, checked; *payload points into the conn's buffer, valid until the next recv
 * or conn_free. On failure *payload is NULL and *len 0. */
plumb_status plumb__rpc_recv(plumb_rpc_conn *c, uint16_t *type, const uint8_t **payload,
                             size_t *len);

/* TCP keepalive on fd (idle 15 s, then 3 probes 5 s apart): a peer that vanished without
 * closing (host down, cable cut) is found while the connection idles. */
void plumb__rpc_keepalive(int fd);

/* Pure helpers (the fuzzer and the tests use them too). */
/* The payload cap of a message type; 0 for a type that is not in the protocol. */
uint32_t plumb__rpc_type_cap(uint16_t type);
/* Checks magic, version, known type and the type's length cap (PLUMB_E_FORMAT otherwise). */
plumb_status plumb__rpc_parse_header(const uint8_t hdr[20], uint16_t *type, uint32_t *len,
                                     uint64_t *seq);
void plumb__rpc_write_header(uint8_t hdr[20], uint16_t version, uint16_t type, uint32_t len,
                             uint64_t seq);
/* HMAC-SHA256 under session of dir ('C' from the client, 'S' from the server) ‖ hdr ‖ the
 * payload given as parts. PLUMB_E_NOMEM when OpenSSL fails. */
plumb_status plumb__rpc_frame_tag(const uint8_t session[32], char dir, const uint8_t hdr[20],
                                  const struct iovec *parts, int n_parts, uint8_t tag[32]);

/* Reads a pre-shared key file (at most 4096 bytes, trailing whitespace trimmed, at least 16
 * bytes) into key[0..*len). A file its group or others can read is refused (PLUMB_E_INVALID_ARG
 * saying `chmod 600 <path>`); a missing file is PLUMB_E_NOT_FOUND, other read errors
 * PLUMB_E_IO, a key over cap PLUMB_E_RANGE. Every message names the path. */
plumb_status plumb__rpc_key_load(const char *path, uint8_t *key, size_t cap, size_t *len);

#endif
