/* remote_client.c — the remote backend: a device on another host, reached over TCP with the
 * authenticated protocol of docs/remote-protocol.md and served by `plumb rpc-server`. Its
 * buffers are the server's (ids). Small writes (a step's inputs, the activations crossing
 * into the device) are queued and go out with the next COMPUTE, which also brings back the
 * values the scheduler reads after the run: one round trip per run. Weights go by content
 * hash when the server keeps a cache. Every call has a deadline (PLUMB_REMOTE_TIMEOUT), so a
 * server that dies or a network that drops makes the call fail with PLUMB_E_DEVICE instead
 * of hanging; the connection is then dead and every later call fails at once. Named by
 * address: --device remote:HOST:PORT. */
#include "backend/remote/remote_graph.h"
#include "backend/remote/remote_wire.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REMOTE_TIMEOUT_MS 60000
#define REMOTE_CHUNK ((size_t)PLUMB_RPC_MAX_BULK - 64) /* bytes per SET or GET */
#define QUEUE_ONE ((size_t)16 << 20)  /* writes up to this size wait for the next COMPUTE */
#define QUEUE_ALL ((size_t)64 << 20)  /* and the queue holds at most this much */
#define QUEUE_WRITES 4096
#define WRITE_HEAD 20 /* u32 id, u64 offset, u64 size */
#define PATCH_BIT ((uint64_t)1 << 63) /* COMPUTE's graph length: the bytes are a patch */
#define PATCH_GAP 16 /* equal bytes shorter than this between two changes go in one piece */

typedef struct remote_ctx {
    plumb_rpc_conn conn;
    pthread_mutex_t lock; /* one request and its reply at a time; the queue */
    char address[256];
    plumb_device_info info;
    uint32_t caps;
    int timeout_ms;
    uint8_t *queue; /* queued writes, as COMPUTE encodes them: WRITE_HEAD, then the bytes */
    size_t queue_len, queue_cap;
    uint32_t n_queued;
    uint64_t round_trips;
    uint8_t *last; /* the graph the server holds from the last COMPUTE (NULL: none) */
    size_t last_len;
    uint8_t *patch; /* the next graph as a patch of the last (reused) */
    size_t patch_cap;
} remote_ctx;

typedef struct remote_buffer {
    plumb_buffer pub;
    uint32_t id;
} remote_buffer;

static void put(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* One request and its reply: OK's payload in *out (the connection's, valid until the next
 * call), or the server's ERROR as this call's error. A transport failure is PLUMB_E_DEVICE. */
static plumb_status call(remote_ctx *r, uint16_t type, const struct iovec *parts, int n_parts, const uint8_t **out,
                         size_t *len) {
    uint16_t t;
    const uint8_t *p;
    size_t n;
    plumb_status st = plumb__rpc_send(&r->conn, type, parts, n_parts);
    if (!st) st = plumb__rpc_recv(&r->conn, &t, &p, &n);
    r->round_trips++;
    if (st) {
        char why[384];
        snprintf(why, sizeof why, "%s", plumb_last_error());
        return plumb__fail(PLUMB_E_DEVICE, "remote device %s: %s%s", r->address, why,
                           strstr(why, "timed out") ? " (PLUMB_REMOTE_TIMEOUT sets the limit)" : "");
    }
    if (t == PLUMB_RPC_ERROR) {
        const int32_t code = n >= 4 ? (int32_t)get_le(p, 4) : PLUMB_E_IO;
        return plumb__fail(code < 0 ? (plumb_status)code : PLUMB_E_IO, "remote device %s: %.*s", r->address,
                           (int)(n > 4 ? (n - 4 > 400 ? 400 : n - 4) : 0), (const char *)p + 4);
    }
    if (t != PLUMB_RPC_OK) return plumb__fail(PLUMB_E_FORMAT, "remote device %s: reply of type %u", r->address, (unsigned)t);
    if (out) *out = p;
    if (len) *len = n;
    return PLUMB_OK;
}

/* One COMPUTE: the queued writes, graph (may be empty), then n_reads reads (their WRITE_HEAD
 * records without bytes); the reply is the reads' bytes, want in all, in *out. The queue is
 * empty afterwards. Called with the lock held. */
static plumb_status exchange(remote_ctx *r, const uint8_t *graph, uint64_t graph_len, const uint8_t *reads, uint32_t n_reads,
                             size_t want, const uint8_t **out) {
    uint8_t nw[4], gl[8], nr[4];
    put(nw, r->n_queued, 4), put(gl, graph_len, 8), put(nr, n_reads, 4);
    graph_len &= ~PATCH_BIT;
    struct iovec v[6] = {{nw, 4}, {r->queue, r->queue_len}, {gl, 8}, {(void *)graph, graph_len}, {nr, 4},
                         {(void *)reads, (size_t)n_reads * WRITE_HEAD}};
    size_t n = 0;
    plumb_status st = call(r, PLUMB_RPC_COMPUTE, v, 6, out, &n);
    r->queue_len = 0, r->n_queued = 0;
    if (st) { /* the server dropped its graph too */
        free(r->last);
        r->last = NULL, r->last_len = 0;
    }
    if (!st && n != want)
        st = plumb__fail(PLUMB_E_FORMAT, "remote device %s: a reply of %zu bytes, %zu expected", r->address, n, want);
    return st;
}

/* Sends the queued writes (before any request that could observe them). Lock held. */
static plumb_status flush(remote_ctx *r) {
    return r->n_queued ? exchange(r, NULL, 0, NULL, 0, 0, NULL) : PLUMB_OK;
}

static plumb_status locked_call(remote_ctx *r, uint16_t type, const struct iovec *parts, int n_parts, void *dst,
                                size_t want) {
    pthread_mutex_lock(&r->lock);
    const uint8_t *p;
    size_t n;
    plumb_status st = flush(r);
    if (!st) st = call(r, type, parts, n_parts, &p, &n);
    if (!st && dst) {
        if (n != want) st = plumb__fail(PLUMB_E_FORMAT, "remote device %s: a reply of %zu bytes, %zu expected", r->address, n, want);
        else memcpy(dst, p, n);
    }
    pthread_mutex_unlock(&r->lock);
    return st;
}

static bool remote_supports_op(plumb_backend *b, const plumb_tensor *node) {
    (void)b;
    return node->op != PLUMB_OP_COPY && node->op < PLUMB_OP_COUNT;
}

static bool remote_supports_weight(plumb_backend *b, int type) {
    (void)b;
    return type >= 0 && type < PLUMB_TYPE_COUNT;
}

static plumb_status remote_alloc(plumb_backend *b, size_t size, plumb_buffer **out) {
    remote_ctx *r = b->ctx;
    remote_buffer *rb = calloc(1, sizeof *rb);
    if (!rb) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    uint8_t req[8], id[4];
    put(req, size ? size : 1, 8);
    struct iovec v = {req, 8};
    plumb_status st = locked_call(r, PLUMB_RPC_ALLOC, &v, 1, id, 4);
    if (st) {
        free(rb);
        return st;
    }
    rb->id = (uint32_t)get_le(id, 4);
    rb->pub = (plumb_buffer){.backend = b, .base = NULL, .handle = NULL, .size = size};
    *out = &rb->pub;
    return PLUMB_OK;
}

static void remote_buffer_free(plumb_buffer *buf) {
    remote_buffer *rb = (remote_buffer *)buf;
    uint8_t req[4];
    put(req, rb->id, 4);
    struct iovec v = {req, 4};
    (void)locked_call(buf->backend->ctx, PLUMB_RPC_FREE, &v, 1, NULL, 0); /* a dead connection freed it */
    free(rb);
}

/* Queues a write for the next COMPUTE when it is small and the queue has room. */
static bool enqueue(remote_ctx *r, uint32_t id, size_t off, const void *src, size_t n) {
    if (n > QUEUE_ONE || r->queue_len + WRITE_HEAD + n > QUEUE_ALL || r->n_queued >= QUEUE_WRITES) return false;
    if (r->queue_len + WRITE_HEAD + n > r->queue_cap) {
        size_t cap = r->queue_cap ? r->queue_cap : 4096;
        while (cap < r->queue_len + WRITE_HEAD + n) cap *= 2;
        uint8_t *p = realloc(r->queue, cap);
        if (!p) return false;
        r->queue = p, r->queue_cap = cap;
    }
    uint8_t *w = r->queue + r->queue_len;
    put(w, id, 4), put(w + 4, off, 8), put(w + 12, n, 8);
    memcpy(w + WRITE_HEAD, src, n);
    r->queue_len += WRITE_HEAD + n;
    r->n_queued++;
    return true;
}

static plumb_status remote_set(plumb_buffer *buf, size_t off, const void *src, size_t n) {
    remote_buffer *rb = (remote_buffer *)buf;
    remote_ctx *r = buf->backend->ctx;
    pthread_mutex_lock(&r->lock);
    const bool queued = enqueue(r, rb->id, off, src, n);
    pthread_mutex_unlock(&r->lock);
    plumb_status st = PLUMB_OK;
    for (size_t done = 0; done < n && !st && !queued; done += REMOTE_CHUNK) {
        const size_t part = n - done < REMOTE_CHUNK ? n - done : REMOTE_CHUNK;
        uint8_t req[12];
        put(req, rb->id, 4), put(req + 4, off + done, 8);
        struct iovec v[2] = {{req, 12}, {(uint8_t *)src + done, part}};
        st = locked_call(r, PLUMB_RPC_SET, v, 2, NULL, 0);
    }
    return st;
}

/* Weights: chunk by chunk, the content's SHA-256 first; the bytes only when the server does not
 * hold them (it has no cache: straight SET). */
static plumb_status remote_load(plumb_buffer *buf, size_t off, const void *src, size_t n) {
    remote_buffer *rb = (remote_buffer *)buf;
    remote_ctx *r = buf->backend->ctx;
    plumb_status st = PLUMB_OK;
    for (size_t done = 0; done < n && !st; done += REMOTE_CHUNK) {
        const size_t part = n - done < REMOTE_CHUNK ? n - done : REMOTE_CHUNK;
        uint8_t req[20 + SHA256_DIGEST_LENGTH], have = 0;
        put(req, rb->id, 4), put(req + 4, off + done, 8), put(req + 12, part, 8);
        struct iovec v[2] = {{req, 12}, {(uint8_t *)src + done, part}};
        if (r->caps & PLUMB_RPC_CAP_CACHE) {
            SHA256((const uint8_t *)src + done, part, req + 20);
            struct iovec h = {req, sizeof req};
            st = locked_call(r, PLUMB_RPC_SET_HASH, &h, 1, &have, 1);
        }
        if (!st && !have) st = locked_call(r, PLUMB_RPC_SET, v, 2, NULL, 0);
    }
    return st;
}

static plumb_status remote_get(const plumb_buffer *buf, size_t off, void *dst, size_t n) {
    const remote_buffer *rb = (const remote_buffer *)buf;
    plumb_status st = PLUMB_OK;
    for (size_t done = 0; done < n && !st; done += REMOTE_CHUNK) {
        const size_t part = n - done < REMOTE_CHUNK ? n - done : REMOTE_CHUNK;
        uint8_t req[20];
        put(req, rb->id, 4), put(req + 4, off + done, 8), put(req + 12, part, 8);
        struct iovec v = {req, 20};
        st = locked_call(buf->backend->ctx, PLUMB_RPC_GET, &v, 1, (uint8_t *)dst + done, part);
    }
    return st;
}

static plumb_status remote_copy(plumb_buffer *dst, size_t doff, const plumb_buffer *src, size_t soff, size_t n) {
    uint8_t req[32];
    put(req, ((remote_buffer *)dst)->id, 4), put(req + 4, doff, 8);
    put(req + 12, ((const remote_buffer *)src)->id, 4), put(req + 16, soff, 8), put(req + 24, n, 8);
    struct iovec v = {req, 32};
    return locked_call(dst->backend->ctx, PLUMB_RPC_COPY, &v, 1, NULL, 0);
}

static uint32_t buffer_id(const plumb_buffer *b, void *ctx) {
    return b->backend == ctx ? ((const remote_buffer *)b)->id : UINT32_MAX;
}

/* enc[0..len) as a patch of the graph the server holds ({ u32 n, n × { u32 offset, u32 size,
 * bytes } }) into r->patch, when there is one of the same length and the patch is smaller
 * than half the graph; else 0. */
static size_t make_patch(remote_ctx *r, const uint8_t *enc, size_t len) {
    if (!r->last || r->last_len != len || len > UINT32_MAX) return 0;
    if (r->patch_cap < len / 2 + 16) {
        uint8_t *p = realloc(r->patch, len / 2 + 16);
        if (!p) return 0;
        r->patch = p, r->patch_cap = len / 2 + 16;
    }
    size_t at = 4, i = 0;
    uint32_t count = 0;
    while (i < len) {
        if (enc[i] == r->last[i]) {
            i++;
            continue;
        }
        size_t end = i + 1, same = 0; /* the piece ends after PATCH_GAP equal bytes */
        for (size_t j = end; j < len && same < PATCH_GAP; j++) {
            if (enc[j] == r->last[j]) same++;
            else end = j + 1, same = 0;
        }
        if (at + 8 + (end - i) > len / 2) return 0;
        put(r->patch + at, i, 4), put(r->patch + at + 4, end - i, 4);
        memcpy(r->patch + at + 8, enc + i, end - i);
        at += 8 + (end - i);
        count++;
        i = end;
    }
    put(r->patch, count, 4);
    return at;
}

/* The run's COMPUTE with the queued writes and the reads that fit in one reply; reads past
 * that (all the logits of a long prompt) follow as GETs. */
static plumb_status remote_compute_read(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end, const plumb_read *reads,
                                        int32_t n_reads) {
    remote_ctx *r = b->ctx;
    uint8_t *enc = NULL, *rq = n_reads ? malloc((size_t)n_reads * WRITE_HEAD) : NULL;
    size_t len = 0, want = 0;
    int32_t n_in = 0;
    plumb_status st = n_reads && !rq ? plumb__fail(PLUMB_E_NOMEM, "out of memory") : PLUMB_OK;
    if (!st) st = plumb__rpc_graph_encode(g, first, end, buffer_id, b, &enc, &len);
    for (; !st && n_in < n_reads && n_in < QUEUE_WRITES && want + reads[n_in].n <= PLUMB_RPC_MAX_BULK; n_in++) {
        put(rq + (size_t)n_in * WRITE_HEAD, ((const remote_buffer *)reads[n_in].buf)->id, 4);
        put(rq + (size_t)n_in * WRITE_HEAD + 4, reads[n_in].off, 8), put(rq + (size_t)n_in * WRITE_HEAD + 12, reads[n_in].n, 8);
        want += reads[n_in].n;
    }
    if (!st) {
        pthread_mutex_lock(&r->lock);
        const uint8_t *p = NULL;
        const size_t patch = make_patch(r, enc, len);
        st = patch ? exchange(r, r->patch, patch | PATCH_BIT, rq, (uint32_t)n_in, want, &p)
                   : exchange(r, enc, len, rq, (uint32_t)n_in, want, &p);
        for (int32_t i = 0; !st && i < n_in; p += reads[i].n, i++) memcpy(reads[i].dst, p, reads[i].n);
        if (!st) { /* what the server holds now */
            free(r->last);
            r->last = enc, r->last_len = len;
            enc = NULL;
        }
        pthread_mutex_unlock(&r->lock);
    }
    for (int32_t i = n_in; !st && i < n_reads; i++) st = remote_get(reads[i].buf, reads[i].off, reads[i].dst, reads[i].n);
    free(enc);
    free(rq);
    return st;
}

static plumb_status remote_compute(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end) {
    return remote_compute_read(b, g, first, end, NULL, 0);
}

static void remote_traffic(plumb_backend *b, plumb_device_traffic *out) {
    remote_ctx *r = b->ctx;
    pthread_mutex_lock(&r->lock);
    *out = (plumb_device_traffic){.bytes_sent = r->conn.bytes_sent, .bytes_received = r->conn.bytes_received,
                                  .round_trips = r->round_trips};
    pthread_mutex_unlock(&r->lock);
}

static void remote_info(plumb_backend *b, plumb_device_info *out) { *out = ((remote_ctx *)b->ctx)->info; }

static void remote_free(plumb_backend *b) {
    remote_ctx *r = b->ctx;
    if (r->conn.fd >= 0) close(r->conn.fd);
    plumb__rpc_conn_free(&r->conn);
    pthread_mutex_destroy(&r->lock);
    free(r->queue);
    free(r->last);
    free(r->patch);
    free(r);
    free(b);
}

static const plumb_backend_iface remote_iface = {
    .name = "remote",
    .supports_op = remote_supports_op,
    .supports_weight = remote_supports_weight,
    .graph_compute = remote_compute,
    .graph_compute_read = remote_compute_read,
    .buffer_load = remote_load,
    .traffic = remote_traffic,
    .free = remote_free,
    .buffer_alloc = remote_alloc,
    .buffer_free = remote_buffer_free,
    .buffer_set = remote_set,
    .buffer_get = remote_get,
    .buffer_copy = remote_copy,
    .device_info = remote_info,
};

/* A TCP connection to HOST:PORT within the deadline, or -1 after plumb__fail. */
static int dial(const char *address, int timeout_ms) {
    char host[256];
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || (size_t)(colon - address) >= sizeof host || !colon[1]) {
        plumb__fail(PLUMB_E_INVALID_ARG, "remote device \"%s\": expected HOST:PORT", address);
        return -1;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    const int gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai) {
        plumb__fail(PLUMB_E_DEVICE, "remote device %s: %s", address, gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) continue;
        err = connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
        if (err == EINPROGRESS) { /* wait for it, within the deadline */
            struct pollfd pf = {fd, POLLOUT, 0};
            socklen_t sl = sizeof err;
            if (poll(&pf, 1, timeout_ms) != 1) err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl)) err = errno;
        }
        if (err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        plumb__fail(PLUMB_E_DEVICE, "remote device %s: cannot connect: %s", address, strerror(err ? err : ECONNREFUSED));
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    plumb__rpc_keepalive(fd);
    return fd;
}

/* PLUMB_REMOTE_TIMEOUT: seconds (a decimal) each exchange may take; 60 when unset. */
static plumb_status timeout_ms(int *out) {
    const char *e = getenv("PLUMB_REMOTE_TIMEOUT");
    *out = REMOTE_TIMEOUT_MS;
    if (!e || !*e) return PLUMB_OK;
    char *end = NULL;
    const double s = strtod(e, &end);
    if (end == e || *end || !(s >= 0.1 && s <= 86400.0))
        return plumb__fail(PLUMB_E_INVALID_ARG, "PLUMB_REMOTE_TIMEOUT=\"%.40s\": expected seconds, from 0.1 to 86400", e);
    *out = (int)(s * 1000.0);
    return PLUMB_OK;
}

static plumb_status create_at(const char *address, const char *key_file, int n_threads, plumb_backend **out) {
    (void)n_threads;
    uint8_t key[PLUMB_RPC_KEY_FILE_MAX];
    size_t key_len = 0;
    int ms;
    plumb_status st = timeout_ms(&ms);
    if (st) return st;
    if (!key_file || !*key_file)
        return plumb__fail(PLUMB_E_INVALID_ARG, "remote device %s: no key file (--remote-key-file F)", address);
    st = plumb__rpc_key_load(key_file, key, sizeof key, &key_len);
    if (st) return st;
    plumb_backend *b = calloc(1, sizeof *b);
    remote_ctx *r = calloc(1, sizeof *r);
    if (!b || !r) {
        free(b);
        free(r);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    snprintf(r->address, sizeof r->address, "%s", address);
    pthread_mutex_init(&r->lock, NULL);
    b->iface = &remote_iface;
    b->ctx = r;
    r->timeout_ms = ms;
    const int fd = dial(address, ms);
    plumb__rpc_conn_init(&r->conn, fd, false, ms);
    st = fd < 0 ? PLUMB_E_DEVICE : PLUMB_OK;
    if (!st) st = plumb__rpc_handshake_client(&r->conn, key, key_len, &r->caps);
    if (st == PLUMB_E_IO) st = PLUMB_E_DEVICE;
    memset(key, 0, sizeof key);
    uint8_t info[272];
    if (!st) st = locked_call(r, PLUMB_RPC_INFO, NULL, 0, info, sizeof info);
    if (st) {
        char why[384];
        snprintf(why, sizeof why, "%s", plumb_last_error());
        remote_free(b);
        return strstr(why, address) ? plumb__fail(st, "%s", why) : plumb__fail(st, "remote device %s: %s", address, why);
    }
    snprintf(r->info.name, sizeof r->info.name, "%.*s on %s", 100, (const char *)info, address);
    snprintf(r->info.driver, sizeof r->info.driver, "%.127s", (const char *)info + 128);
    r->info.memory = get_le(info + 256, 8);
    r->info.max_alloc = get_le(info + 264, 8);
    *out = b;
    return PLUMB_OK;
}

static int remote_count(const char **why) {
    if (why) *why = "remote devices are named by address: --device remote:HOST:PORT";
    return 0;
}

static plumb_status remote_device_info(int i, plumb_device_info *out) {
    (void)i, (void)out;
    return plumb__fail(PLUMB_E_NOT_FOUND, "remote devices are named by address: --device remote:HOST:PORT");
}

static plumb_status remote_create(int i, int n_threads, plumb_backend **out) {
    (void)i, (void)n_threads, (void)out;
    return plumb__fail(PLUMB_E_NOT_FOUND, "remote devices are named by address: --device remote:HOST:PORT");
}

const plumb_backend_reg plumb__backend_remote = {
    .name = "remote",
    .device_count = remote_count,
    .device_info = remote_device_info,
    .create = remote_create,
    .create_at = create_at,
};
