/* remote_server.c — one connection's requests on the served backend (remote_server.h). Payloads
 * are little-endian; every field is read through a bounds-checked cursor and every buffer range
 * checked against the connection's own buffers before the backend sees it. */
#include "backend/remote/remote_server.h"

#include "core/error.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define MAX_WRITES 4096 /* writes, and reads, in one COMPUTE */
#define CACHE_PIECE ((size_t)16 << 20)
#define PATCH_BIT ((uint64_t)1 << 63) /* COMPUTE's graph length: the bytes are a patch */

/* A bounds-checked reader over a request's payload. */
typedef struct cursor {
    const uint8_t *p;
    size_t n, at;
    bool bad;
} cursor;

static uint64_t take(cursor *c, size_t bytes) {
    uint64_t v = 0;
    if (c->bad || c->n - c->at < bytes) {
        c->bad = true;
        return 0;
    }
    for (size_t i = 0; i < bytes; i++) v |= (uint64_t)c->p[c->at + i] << (8 * i);
    c->at += bytes;
    return v;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static plumb_status reply(plumb_rpc_conn *c, const void *p, size_t n) {
    struct iovec v = {(void *)p, n};
    return plumb__rpc_send(c, PLUMB_RPC_OK, &v, n ? 1 : 0);
}

/* The ERROR frame for the request's failure st (its message is plumb_last_error's). */
static plumb_status refuse(plumb_rpc_conn *c, plumb_status st) {
    char text[512];
    const int n = snprintf(text, sizeof text, "%s", plumb_last_error());
    uint8_t code[4];
    put_u32(code, (uint32_t)(int32_t)st);
    struct iovec v[2] = {{code, 4}, {text, n > 0 ? (size_t)(n < (int)sizeof text ? n : (int)sizeof text - 1) : 0}};
    return plumb__rpc_send(c, PLUMB_RPC_ERROR, v, 2);
}

plumb_status plumb__rpc_session_init(plumb_rpc_session *s, plumb_backend *b, uint64_t limit, int32_t max_tensors) {
    memset(s, 0, sizeof *s);
    s->backend = b;
    s->limit = limit;
    s->max_tensors = max_tensors;
    return plumb_graph_init(&s->graph, max_tensors);
}

void plumb__rpc_session_free(plumb_rpc_session *s) {
    for (uint32_t i = 0; i < s->n_bufs; i++) plumb_buffer_free(s->bufs[i]);
    free(s->bufs);
    plumb_graph_free(&s->graph);
    plumb__rpc_graph_store_free(&s->store);
    free(s->last);
    memset(s, 0, sizeof *s);
}

/* Buffer id's bytes [off, off + n), or an error naming what does not fit. */
static plumb_status find(plumb_rpc_session *s, uint32_t id, uint64_t off, uint64_t n, plumb_buffer **out) {
    if (id == 0 || id > s->n_bufs || !s->bufs[id - 1])
        return plumb__fail(PLUMB_E_NOT_FOUND, "no buffer %u on this connection", (unsigned)id);
    plumb_buffer *b = s->bufs[id - 1];
    if (off > b->size || n > b->size - off)
        return plumb__fail(PLUMB_E_RANGE, "bytes %llu..+%llu are outside buffer %u of %zu bytes", (unsigned long long)off,
                           (unsigned long long)n, (unsigned)id, b->size);
    *out = b;
    return PLUMB_OK;
}

static plumb_status resolve(void *ctx, uint32_t id, uint64_t offset, uint64_t nbytes, plumb_buffer **buf) {
    return find(ctx, id, offset, nbytes, buf);
}

static plumb_status do_alloc(plumb_rpc_session *s, cursor *in, uint8_t id_out[4]) {
    const uint64_t size = take(in, 8);
    if (in->bad || size == 0) return plumb__fail(PLUMB_E_FORMAT, "ALLOC: a size of at least one byte");
    if (size > s->limit - s->used)
        return plumb__fail(PLUMB_E_NOMEM, "ALLOC of %llu bytes: this connection holds %llu of its %llu", (unsigned long long)size,
                           (unsigned long long)s->used, (unsigned long long)s->limit);
    if (s->n_bufs == s->cap_bufs) {
        const uint32_t cap = s->cap_bufs ? 2 * s->cap_bufs : 16;
        if (cap > (1u << 20)) return plumb__fail(PLUMB_E_RANGE, "ALLOC: too many buffers on one connection");
        plumb_buffer **grown = realloc(s->bufs, cap * sizeof *grown);
        if (!grown) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
        s->bufs = grown, s->cap_bufs = cap;
    }
    plumb_buffer *b = NULL;
    plumb_status st = s->backend->iface->buffer_alloc(s->backend, (size_t)size, &b);
    if (st) return st;
    s->bufs[s->n_bufs++] = b;
    s->used += size;
    put_u32(id_out, s->n_bufs);
    return PLUMB_OK;
}

static plumb_status do_free(plumb_rpc_session *s, cursor *in) {
    const uint32_t id = (uint32_t)take(in, 4);
    plumb_buffer *b = NULL;
    plumb_status st = in->bad ? plumb__fail(PLUMB_E_FORMAT, "FREE: a buffer id") : find(s, id, 0, 0, &b);
    if (st) return st;
    s->used -= b->size;
    plumb_buffer_free(b);
    s->bufs[id - 1] = NULL;
    return PLUMB_OK;
}

/* <cache_dir>/<hex of hash> into path[cap]. */
static void cache_path(const plumb_rpc_session *s, const uint8_t hash[32], char *path, size_t cap) {
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    snprintf(path, cap, "%s/%s", s->cache_dir, hex);
}

/* Keeps bytes (whose SHA-256 is hash) in the cache: written aside, then renamed into place, so
 * a reader never sees a part of a file. A failure only means no cache entry. */
static void cache_store(const plumb_rpc_session *s, const uint8_t hash[32], const uint8_t *bytes, size_t n) {
    char path[4200], tmp[4300];
    cache_path(s, hash, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    const int fd = mkstemp(tmp);
    if (fd < 0) return;
    size_t done = 0;
    while (done < n) {
        const ssize_t w = write(fd, bytes + done, n - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    if (close(fd) == 0 && done == n && rename(tmp, path) == 0) return;
    unlink(tmp);
}

static plumb_status do_set(plumb_rpc_session *s, cursor *in) {
    const uint32_t id = (uint32_t)take(in, 4);
    const uint64_t off = take(in, 8);
    if (in->bad) return plumb__fail(PLUMB_E_FORMAT, "SET: a buffer id and an offset, then the bytes");
    const size_t n = in->n - in->at;
    plumb_buffer *b = NULL;
    plumb_status st = find(s, id, off, n, &b);
    if (!st) st = b->backend->iface->buffer_set(b, (size_t)off, in->p + in->at, n);
    if (st) return st;
    s->bytes_set += n;
    if (s->wanted.on && s->wanted.id == id && s->wanted.off == off && s->wanted.size == n) {
        uint8_t got[32];
        SHA256(in->p + in->at, n, got);
        if (CRYPTO_memcmp(got, s->wanted.hash, 32) == 0) cache_store(s, got, in->p + in->at, n);
    }
    s->wanted.on = false;
    return PLUMB_OK;
}

/* Fills [off, off + size) of b from the cache file of hash, checking the file's content
 * against the hash as it goes (a file changed on disk is removed and not used). */
static bool cache_fill(plumb_rpc_session *s, plumb_buffer *b, uint64_t off, uint64_t size, const uint8_t hash[32]) {
    char path[4200];
    cache_path(s, hash, path, sizeof path);
    const int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat sb;
    uint8_t *piece = NULL;
    bool ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == size && (piece = malloc(CACHE_PIECE));
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    ok = ok && h && EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    for (uint64_t done = 0; ok && done < size;) {
        const size_t want = size - done < CACHE_PIECE ? (size_t)(size - done) : CACHE_PIECE;
        const ssize_t r = read(fd, piece, want);
        ok = r > 0 && b->backend->iface->buffer_set(b, (size_t)(off + done), piece, (size_t)r) == PLUMB_OK;
        if (ok) ok = EVP_DigestUpdate(h, piece, (size_t)r), done += (uint64_t)r;
    }
    uint8_t got[32];
    unsigned got_len = 0;
    ok = ok && EVP_DigestFinal_ex(h, got, &got_len) && got_len == 32;
    EVP_MD_CTX_free(h);
    if (ok && CRYPTO_memcmp(got, hash, 32) != 0) {
        ok = false;
        unlink(path);
    }
    free(piece);
    close(fd);
    return ok;
}

/* SET_HASH { id, offset, size, SHA-256 }: have u8. */
static plumb_status do_set_hash(plumb_rpc_session *s, cursor *in, uint8_t *have) {
    const uint32_t id = (uint32_t)take(in, 4);
    const uint64_t off = take(in, 8), size = take(in, 8);
    uint8_t hash[32];
    for (int i = 0; i < 32; i++) hash[i] = (uint8_t)take(in, 1);
    if (in->bad || in->at != in->n) return plumb__fail(PLUMB_E_FORMAT, "SET_HASH: a buffer id, an offset, a size and a SHA-256");
    plumb_buffer *b = NULL;
    plumb_status st = find(s, id, off, size, &b);
    if (st) return st;
    *have = s->cache_dir && size && cache_fill(s, b, off, size, hash);
    if (*have) s->bytes_cached += size;
    s->wanted.on = !*have && s->cache_dir;
    s->wanted.id = id, s->wanted.off = off, s->wanted.size = size;
    memcpy(s->wanted.hash, hash, 32);
    return PLUMB_OK;
}

static plumb_status do_copy(plumb_rpc_session *s, cursor *in) {
    const uint32_t dst = (uint32_t)take(in, 4);
    const uint64_t doff = take(in, 8);
    const uint32_t src = (uint32_t)take(in, 4);
    const uint64_t soff = take(in, 8), n = take(in, 8);
    if (in->bad) return plumb__fail(PLUMB_E_FORMAT, "COPY: destination id and offset, source id and offset, size");
    plumb_buffer *d = NULL, *sb = NULL;
    plumb_status st = find(s, dst, doff, n, &d);
    if (!st) st = find(s, src, soff, n, &sb);
    return st ? st : d->backend->iface->buffer_copy(d, (size_t)doff, sb, (size_t)soff, (size_t)n);
}

/* A patch { u32 n, n × { u32 offset, u32 size, size bytes } } of the last graph: in order,
 * not overlapping, inside it. */
static plumb_status check_patch(const plumb_rpc_session *s, const uint8_t *p, size_t n) {
    cursor in = {p, n, 0, false};
    const uint32_t count = (uint32_t)take(&in, 4);
    uint64_t end = 0;
    if (!s->last_len) return plumb__fail(PLUMB_E_FORMAT, "COMPUTE: a patch with no earlier graph on this connection");
    for (uint32_t i = 0; i < count && !in.bad; i++) {
        const uint64_t off = take(&in, 4), size = take(&in, 4);
        if (in.bad || off < end || off > s->last_len || size > s->last_len - off || size > in.n - in.at)
            return plumb__fail(PLUMB_E_FORMAT, "COMPUTE: patch %u does not fit the last graph of %zu bytes", (unsigned)i, s->last_len);
        in.at += (size_t)size;
        end = off + size;
    }
    if (in.bad || in.at != in.n) return plumb__fail(PLUMB_E_FORMAT, "COMPUTE: a malformed patch of %zu bytes", n);
    return PLUMB_OK;
}

/* The graph to run: a whole one (kept), or the kept one with a checked patch applied. */
static plumb_status keep_graph(plumb_rpc_session *s, const uint8_t *p, size_t n, bool patch) {
    if (patch) {
        cursor in = {p, n, 0, false};
        for (uint32_t i = 0, count = (uint32_t)take(&in, 4); i < count; i++) {
            const size_t off = (size_t)take(&in, 4), size = (size_t)take(&in, 4);
            memcpy(s->last + off, p + in.at, size);
            in.at += size;
        }
        return PLUMB_OK;
    }
    if (n > s->last_cap) {
        uint8_t *grown = realloc(s->last, n);
        if (!grown) return plumb__fail(PLUMB_E_NOMEM, "out of memory for a graph of %zu bytes", n);
        s->last = grown, s->last_cap = n;
    }
    memcpy(s->last, p, n);
    s->last_len = n;
    return PLUMB_OK;
}

/* A COMPUTE's write or read record { id u32, offset u64, size u64 }, resolved. */
static plumb_status range(plumb_rpc_session *s, cursor *in, const char *what, plumb_buffer **b, uint64_t *off, uint64_t *size) {
    const uint32_t id = (uint32_t)take(in, 4);
    *off = take(in, 8), *size = take(in, 8);
    if (in->bad) return plumb__fail(PLUMB_E_FORMAT, "COMPUTE: a truncated %s", what);
    return find(s, id, *off, *size, b);
}

/* COMPUTE { u32 n_writes, writes { id, offset, size, bytes }, u64 graph bytes, the graph (none
 * when 0; with the top bit, a patch of the last graph), u32 n_reads, reads { id, offset, size } }:
 * every part is checked before anything runs; then the writes, the graph, and the reads' bytes
 * back (into *out, malloc'd). */
static plumb_status do_compute(plumb_rpc_session *s, const uint8_t *p, size_t n, uint8_t **out, size_t *out_len) {
    cursor in = {p, n, 0, false};
    plumb_buffer *b;
    uint64_t off, size, want = 0;
    plumb_status st = PLUMB_OK;
    const uint32_t n_writes = (uint32_t)take(&in, 4);
    if (n_writes > MAX_WRITES) return plumb__fail(PLUMB_E_RANGE, "COMPUTE: %u writes (at most %d)", (unsigned)n_writes, MAX_WRITES);
    const size_t writes_at = in.at;
    for (uint32_t i = 0; i < n_writes && !st; i++) {
        st = range(s, &in, "write", &b, &off, &size);
        if (!st && size > in.n - in.at) st = plumb__fail(PLUMB_E_FORMAT, "COMPUTE: write %u runs past the message", (unsigned)i);
        if (!st) in.at += (size_t)size;
    }
    const uint64_t graph_word = st ? 0 : take(&in, 8), graph_len = graph_word & ~PATCH_BIT;
    if (!st && (in.bad || graph_len > in.n - in.at)) st = plumb__fail(PLUMB_E_FORMAT, "COMPUTE: the graph runs past the message");
    const size_t graph_at = in.at;
    if (!st) in.at += (size_t)graph_len;
    const bool patch = graph_word & PATCH_BIT;
    if (!st && patch) st = check_patch(s, p + graph_at, (size_t)graph_len);
    const uint32_t n_reads = st ? 0 : (uint32_t)take(&in, 4);
    if (!st && n_reads > MAX_WRITES) st = plumb__fail(PLUMB_E_RANGE, "COMPUTE: %u reads (at most %d)", (unsigned)n_reads, MAX_WRITES);
    const size_t reads_at = in.at;
    for (uint32_t i = 0; i < n_reads && !st; i++) {
        st = range(s, &in, "read", &b, &off, &size);
        if (!st && (want += size) > plumb__rpc_type_cap(PLUMB_RPC_OK))
            st = plumb__fail(PLUMB_E_RANGE, "COMPUTE: reads of over %u bytes", (unsigned)plumb__rpc_type_cap(PLUMB_RPC_OK));
    }
    if (!st && (in.bad || in.at != in.n)) st = plumb__fail(PLUMB_E_FORMAT, "COMPUTE: %zu bytes after the reads", in.n - in.at);
    uint8_t *bytes = st ? NULL : malloc(want ? (size_t)want : 1);
    if (!st && !bytes) st = plumb__fail(PLUMB_E_NOMEM, "out of memory for %llu bytes", (unsigned long long)want);
    in.at = writes_at;
    for (uint32_t i = 0; i < n_writes && !st; i++) {
        range(s, &in, "write", &b, &off, &size);
        st = b->backend->iface->buffer_set(b, (size_t)off, in.p + in.at, (size_t)size);
        in.at += (size_t)size;
    }
    if (!st && graph_len) st = keep_graph(s, p + graph_at, (size_t)graph_len, patch);
    if (!st && graph_len) st = plumb__rpc_graph_decode(s->last, s->last_len, resolve, s, s->backend, &s->graph, &s->store);
    if (st) s->last_len = 0; /* the client starts over with a whole graph */
    if (!st && graph_len) {
        if (s->compute_lock) pthread_mutex_lock(s->compute_lock);
        st = s->backend->iface->graph_compute(s->backend, &s->graph, 0, s->graph.n_nodes);
        if (s->compute_lock) pthread_mutex_unlock(s->compute_lock);
    }
    in.at = reads_at;
    for (uint64_t at = 0; !st && at < want; at += size) {
        range(s, &in, "read", &b, &off, &size);
        st = b->backend->iface->buffer_get(b, (size_t)off, bytes + at, (size_t)size);
    }
    if (st) free(bytes), bytes = NULL;
    *out = bytes;
    *out_len = (size_t)want;
    return st;
}

/* INFO's reply: name[128], driver[128], u64 memory, u64 max_alloc. */
static void info_bytes(plumb_rpc_session *s, uint8_t out[272]) {
    plumb_device_info d;
    s->backend->iface->device_info(s->backend, &d);
    memset(out, 0, 272);
    memcpy(out, d.name, sizeof d.name - 1);
    memcpy(out + 128, d.driver, sizeof d.driver - 1);
    put_u64(out + 256, d.memory);
    put_u64(out + 264, d.max_alloc);
}

plumb_status plumb__rpc_session_handle(plumb_rpc_session *s, plumb_rpc_conn *c, uint16_t type, const uint8_t *p,
                                       size_t n) {
    cursor in = {p, n, 0, false};
    plumb_status st;
    switch (type) {
    case PLUMB_RPC_INFO: {
        uint8_t info[272];
        info_bytes(s, info);
        return reply(c, info, sizeof info);
    }
    case PLUMB_RPC_ALLOC: {
        uint8_t id[4];
        st = do_alloc(s, &in, id);
        return st ? refuse(c, st) : reply(c, id, 4);
    }
    case PLUMB_RPC_FREE: st = do_free(s, &in); break;
    case PLUMB_RPC_SET: st = do_set(s, &in); break;
    case PLUMB_RPC_COPY: st = do_copy(s, &in); break;
    case PLUMB_RPC_SET_HASH: {
        uint8_t have = 0;
        st = do_set_hash(s, &in, &have);
        return st ? refuse(c, st) : reply(c, &have, 1);
    }
    case PLUMB_RPC_COMPUTE: {
        uint8_t *bytes = NULL;
        size_t len = 0;
        st = do_compute(s, p, n, &bytes, &len);
        st = st ? refuse(c, st) : reply(c, bytes, len);
        free(bytes);
        return st;
    }
    case PLUMB_RPC_GET: {
        const uint32_t id = (uint32_t)take(&in, 4);
        const uint64_t off = take(&in, 8), len = take(&in, 8);
        plumb_buffer *b = NULL;
        st = in.bad ? plumb__fail(PLUMB_E_FORMAT, "GET: a buffer id, an offset and a size") : find(s, id, off, len, &b);
        if (!st && len > plumb__rpc_type_cap(PLUMB_RPC_OK))
            st = plumb__fail(PLUMB_E_RANGE, "GET of %llu bytes: at most %u per request", (unsigned long long)len,
                             (unsigned)plumb__rpc_type_cap(PLUMB_RPC_OK));
        uint8_t *data = st ? NULL : malloc(len ? (size_t)len : 1);
        if (!st && !data) st = plumb__fail(PLUMB_E_NOMEM, "out of memory for %llu bytes", (unsigned long long)len);
        if (!st) st = b->backend->iface->buffer_get(b, (size_t)off, data, (size_t)len);
        if (!st) st = reply(c, data, (size_t)len);
        else st = refuse(c, st);
        free(data);
        return st;
    }
    default:
        st = plumb__fail(PLUMB_E_UNSUPPORTED, "request type %u is not one this server answers", (unsigned)type);
        break;
    }
    return st ? refuse(c, st) : reply(c, NULL, 0);
}

plumb_status plumb__rpc_session_serve(plumb_rpc_session *s, plumb_rpc_conn *c) {
    for (;;) {
        uint16_t type;
        const uint8_t *p;
        size_t n;
        plumb_status st = plumb__rpc_recv(c, &type, &p, &n);
        if (!st) st = plumb__rpc_session_handle(s, c, type, p, n);
        if (st) return st;
    }
}
