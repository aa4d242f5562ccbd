/* remote_client.c — the remote backend: a device on another host, reached over TCP with the
 * authenticated protocol of docs/remote-protocol.md and served by `plumb rpc-server`. Its
 * buffers are the server's (ids); graph_compute sends the run's graph as one COMPUTE. Every
 * call has the connection's deadline, so a server that dies or a network that drops makes the
 * call fail with a message instead of hanging; the connection is then dead and every later
 * call fails at once. Named by address: --device remote:HOST:PORT. */
#include "backend/remote/remote_graph.h"
#include "backend/remote/remote_wire.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REMOTE_TIMEOUT_MS 30000
#define REMOTE_CHUNK ((size_t)PLUMB_RPC_MAX_BULK - 64) /* bytes per SET or GET */

typedef struct remote_ctx {
    plumb_rpc_conn conn;
    pthread_mutex_t lock; /* one request and its reply at a time */
    char address[256];
    plumb_device_info info;
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
 * call), or the server's ERROR as this call's error. */
static plumb_status call(remote_ctx *r, uint16_t type, const struct iovec *parts, int n_parts, const uint8_t **out,
                         size_t *len) {
    uint16_t t;
    const uint8_t *p;
    size_t n;
    plumb_status st = plumb__rpc_send(&r->conn, type, parts, n_parts);
    if (!st) st = plumb__rpc_recv(&r->conn, &t, &p, &n);
    if (st) {
        char why[384];
        snprintf(why, sizeof why, "%s", plumb_last_error());
        return plumb__fail(PLUMB_E_IO, "remote device %s: %s", r->address, why);
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

static plumb_status locked_call(remote_ctx *r, uint16_t type, const struct iovec *parts, int n_parts, void *dst,
                                size_t want) {
    pthread_mutex_lock(&r->lock);
    const uint8_t *p;
    size_t n;
    plumb_status st = call(r, type, parts, n_parts, &p, &n);
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

static plumb_status remote_set(plumb_buffer *buf, size_t off, const void *src, size_t n) {
    remote_buffer *rb = (remote_buffer *)buf;
    plumb_status st = PLUMB_OK;
    for (size_t done = 0; done < n && !st; done += REMOTE_CHUNK) {
        const size_t part = n - done < REMOTE_CHUNK ? n - done : REMOTE_CHUNK;
        uint8_t req[12];
        put(req, rb->id, 4), put(req + 4, off + done, 8);
        struct iovec v[2] = {{req, 12}, {(uint8_t *)src + done, part}};
        st = locked_call(buf->backend->ctx, PLUMB_RPC_SET, v, 2, NULL, 0);
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

static plumb_status remote_compute(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end) {
    uint8_t *enc = NULL;
    size_t len = 0;
    plumb_status st = plumb__rpc_graph_encode(g, first, end, buffer_id, b, &enc, &len);
    if (!st) {
        struct iovec v = {enc, len};
        st = locked_call(b->ctx, PLUMB_RPC_COMPUTE, &v, 1, NULL, 0);
    }
    free(enc);
    return st;
}

static void remote_info(plumb_backend *b, plumb_device_info *out) { *out = ((remote_ctx *)b->ctx)->info; }

static void remote_free(plumb_backend *b) {
    remote_ctx *r = b->ctx;
    if (r->conn.fd >= 0) close(r->conn.fd);
    plumb__rpc_conn_free(&r->conn);
    pthread_mutex_destroy(&r->lock);
    free(r);
    free(b);
}

static const plumb_backend_iface remote_iface = {
    .name = "remote",
    .supports_op = remote_supports_op,
    .supports_weight = remote_supports_weight,
    .graph_compute = remote_compute,
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
        plumb__fail(PLUMB_E_NOT_FOUND, "remote device %s: %s", address, gai_strerror(gai));
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
        plumb__fail(PLUMB_E_IO, "remote device %s: cannot connect: %s", address, strerror(err ? err : ECONNREFUSED));
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static plumb_status create_at(const char *address, const char *key_file, int n_threads, plumb_backend **out) {
    (void)n_threads;
    uint8_t key[PLUMB_RPC_KEY_FILE_MAX];
    size_t key_len = 0;
    if (!key_file || !*key_file)
        return plumb__fail(PLUMB_E_INVALID_ARG, "remote device %s: no key file (--remote-key-file F)", address);
    plumb_status st = plumb__rpc_key_load(key_file, key, sizeof key, &key_len);
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
    const int fd = dial(address, REMOTE_TIMEOUT_MS);
    plumb__rpc_conn_init(&r->conn, fd, false, REMOTE_TIMEOUT_MS);
    st = fd < 0 ? PLUMB_E_IO : PLUMB_OK;
    uint32_t caps = 0;
    if (!st) st = plumb__rpc_handshake_client(&r->conn, key, key_len, &caps);
    memset(key, 0, sizeof key);
    uint8_t info[272];
    if (!st) st = locked_call(r, PLUMB_RPC_INFO, NULL, 0, info, sizeof info);
    if (st) {
        char why[384];
        snprintf(why, sizeof why, "%s", plumb_last_error());
        remote_free(b);
        return plumb__fail(st, "%s%s", strstr(why, address) ? "" : "remote device: ", why);
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
