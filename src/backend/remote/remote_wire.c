/* remote_wire.c — the remote backend's authenticated transport: handshake, framing, tags,
 * deadlines (see remote_wire.h and docs/remote-protocol.md). */
#include "backend/remote/remote_wire.h"

#include "core/error.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

static const uint8_t kMagic[4] = {'P', 'L', 'R', 'B'};
#define HS_MAX_PAYLOAD 4096 /* handshake frames are small */
#define HELLO_BYTES (2 + PLUMB_RPC_NONCE_BYTES)
#define CHALLENGE_BYTES (2 + 4 + PLUMB_RPC_NONCE_BYTES + 32)
#define AUTH_BYTES 32

/* ---- little-endian helpers ---- */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- pure parts ---- */

uint32_t plumb__rpc_type_cap(uint16_t type) {
    switch (type) {
    case PLUMB_RPC_SET:
    case PLUMB_RPC_COMPUTE:
    case PLUMB_RPC_OK: /* replies carry what GET and COMPUTE read back */
        return PLUMB_RPC_MAX_BULK;
    case PLUMB_RPC_HELLO:
    case PLUMB_RPC_CHALLENGE:
    case PLUMB_RPC_AUTH:
    case PLUMB_RPC_ERROR:
    case PLUMB_RPC_INFO:
    case PLUMB_RPC_ALLOC:
    case PLUMB_RPC_FREE:
    case PLUMB_RPC_SET_HASH:
    case PLUMB_RPC_GET:
    case PLUMB_RPC_COPY:
        return PLUMB_RPC_MAX_SMALL;
    default:
        return 0;
    }
}

void plumb__rpc_write_header(uint8_t hdr[20], uint16_t version, uint16_t type, uint32_t len,
                             uint64_t seq) {
    memcpy(hdr, kMagic, 4);
    put16(hdr + 4, version);
    put16(hdr + 6, type);
    put32(hdr + 8, len);
    put64(hdr + 12, seq);
}

plumb_status plumb__rpc_parse_header(const uint8_t hdr[20], uint16_t *type, uint32_t *len,
                                     uint64_t *seq) {
    if (memcmp(hdr, kMagic, 4) != 0)
        return plumb__fail(PLUMB_E_FORMAT, "rpc frame: bad magic (not a plumb rpc peer)");
    uint16_t ver = get16(hdr + 4), t = get16(hdr + 6);
    uint32_t n = get32(hdr + 8);
    if (ver != PLUMB_RPC_VERSION)
        return plumb__fail(PLUMB_E_FORMAT, "rpc frame: protocol version %u, expected %u",
                           (unsigned)ver, (unsigned)PLUMB_RPC_VERSION);
    uint32_t cap = plumb__rpc_type_cap(t);
    if (cap == 0) return plumb__fail(PLUMB_E_FORMAT, "rpc frame: unknown message type %u", (unsigned)t);
    if (n > cap)
        return plumb__fail(PLUMB_E_FORMAT, "rpc frame: payload of %u bytes over the %u-byte cap of type %u",
                           (unsigned)n, (unsigned)cap, (unsigned)t);
    if (type) *type = t;
    if (len) *len = n;
    if (seq) *seq = get64(hdr + 12);
    return PLUMB_OK;
}

plumb_status plumb__rpc_frame_tag(const uint8_t session[32], char dir, const uint8_t hdr[20],
                                  const struct iovec *parts, int n_parts, uint8_t tag[32]) {
    plumb_status st = PLUMB_OK;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    uint8_t d = (uint8_t)dir;
    size_t out = 0;
    int ok = ctx && EVP_MAC_init(ctx, session, 32, params) && EVP_MAC_update(ctx, &d, 1) &&
             EVP_MAC_update(ctx, hdr, PLUMB_RPC_HEADER_BYTES);
    for (int i = 0; ok && i < n_parts; i++)
        if (parts[i].iov_len) ok = EVP_MAC_update(ctx, parts[i].iov_base, parts[i].iov_len);
    ok = ok && EVP_MAC_final(ctx, tag, &out, 32) && out == 32;
    if (!ok) st = plumb__fail(PLUMB_E_NOMEM, "rpc: HMAC-SHA256 failed in OpenSSL");
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return st;
}

/* HMAC(key, label ‖ a ‖ b), a and b nonces */
static plumb_status proof(const uint8_t *key, size_t key_len, const char *label, const uint8_t *a,
                          const uint8_t *b, uint8_t out[32]) {
    uint8_t msg[32 + 2 * PLUMB_RPC_NONCE_BYTES];
    size_t l = strlen(label);
    PLUMB_ASSERT(l <= 32);
    memcpy(msg, label, l);
    memcpy(msg + l, a, PLUMB_RPC_NONCE_BYTES);
    memcpy(msg + l + PLUMB_RPC_NONCE_BYTES, b, PLUMB_RPC_NONCE_BYTES);
    unsigned int n = 0;
    if (key_len > (size_t)INT32_MAX ||
        !HMAC(EVP_sha256(), key, (int)key_len, msg, l + 2 * PLUMB_RPC_NONCE_BYTES, out, &n) || n != 32)
        return plumb__fail(PLUMB_E_NOMEM, "rpc: HMAC-SHA256 failed in OpenSSL");
    return PLUMB_OK;
}

/* ---- connection, deadlines, raw I/O ---- */

void plumb__rpc_conn_init(plumb_rpc_conn *c, int fd, bool server, int timeout_ms) {
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->server = server;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
}

void plumb__rpc_conn_free(plumb_rpc_conn *c) {
    if (c->buf) {
        OPENSSL_cleanse(c->buf, c->buf_cap);
        free(c->buf);
    }
    OPENSSL_cleanse(c->session, sizeof c->session);
    c->buf = NULL;
    c->buf_cap = 0;
    c->authed = false;
    c->dead = true;
}

void plumb__rpc_keepalive(int fd) {
    const int on = 1, idle = 15, intvl = 5, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Marks the connection dead and shuts the socket down, so the peer sees the end at once. */
static plumb_status conn_fail(plumb_rpc_conn *c, plumb_status st) {
    c->dead = true;
    c->authed = false;
    OPENSSL_cleanse(c->session, sizeof c->session);
    shutdown(c->fd, SHUT_RDWR);
    return st;
}

/* Waits for events until the deadline; PLUMB_E_IO on timeout or poll error. */
static plumb_status wait_fd(plumb_rpc_conn *c, short events, int64_t deadline, const char *what) {
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return plumb__fail(PLUMB_E_IO, "rpc: timed out %s", what);
        struct pollfd p = {.fd = c->fd, .events = events};
        int r = poll(&p, 1, (int)left);
        if (r > 0) return PLUMB_OK; /* readable, writable, or an error/hangup the I/O call reports */
        if (r < 0 && errno != EINTR) return plumb__fail(PLUMB_E_IO, "rpc: poll: %s", strerror(errno));
    }
}

static plumb_status read_full(plumb_rpc_conn *c, void *dst, size_t n, int64_t deadline) {
    uint8_t *p = dst;
    while (n) {
        ssize_t r = recv(c->fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        } else if (r == 0) {
            return plumb__fail(PLUMB_E_IO, "rpc: the peer closed the connection");
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            plumb_status st = wait_fd(c, POLLIN, deadline, "waiting for the peer's data");
            if (st != PLUMB_OK) return st;
        } else if (errno != EINTR) {
            if (errno == ECONNRESET || errno == EPIPE)
                return plumb__fail(PLUMB_E_IO, "rpc: the peer closed the connection");
            return plumb__fail(PLUMB_E_IO, "rpc: recv: %s", strerror(errno));
        }
    }
    return PLUMB_OK;
}

/* Writes the iovecs in full (they are advanced in place). */
static plumb_status write_iov(plumb_rpc_conn *c, struct iovec *iov, int n, int64_t deadline) {
    int i = 0;
    while (i < n && iov[i].iov_len == 0) i++;
    while (i < n) {
        struct msghdr m = {.msg_iov = iov + i, .msg_iovlen = (size_t)(n - i)};
        ssize_t w = sendmsg(c->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w >= 0) {
            size_t left = (size_t)w;
            while (i < n && left >= iov[i].iov_len) left -= iov[i++].iov_len;
            if (i < n) {
                iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
                iov[i].iov_len -= left;
            }
            while (i < n && iov[i].iov_len == 0) i++;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            plumb_status st = wait_fd(c, POLLOUT, deadline, "waiting to send to the peer");
            if (st != PLUMB_OK) return st;
        } else if (errno != EINTR) {
            if (errno == EPIPE || errno == ECONNRESET)
                return plumb__fail(PLUMB_E_IO, "rpc: the peer closed the connection");
            return plumb__fail(PLUMB_E_IO, "rpc: send: %s", strerror(errno));
        }
    }
    return PLUMB_OK;
}

static plumb_status ensure_buf(plumb_rpc_conn *c, size_t need) {
    if (need <= c->buf_cap) return PLUMB_OK;
    size_t cap = c->buf_cap ? c->buf_cap : 4096;
    while (cap < need) cap *= 2;
    uint8_t *nb = malloc(cap);
    if (!nb) return plumb__fail(PLUMB_E_NOMEM, "rpc: out of memory for a %zu-byte frame", need);
    if (c->buf) {
        OPENSSL_cleanse(c->buf, c->buf_cap);
        free(c->buf);
    }
    c->buf = nb;
    c->buf_cap = cap;
    return PLUMB_OK;
}

/* ---- handshake frames: sequence 0, zero tag ---- */

static plumb_status hs_send(plumb_rpc_conn *c, uint16_t type, const void *payload, uint32_t len) {
    uint8_t hdr[PLUMB_RPC_HEADER_BYTES], tag[PLUMB_RPC_TAG_BYTES] = {0};
    plumb__rpc_write_header(hdr, PLUMB_RPC_VERSION, type, len, 0);
    struct iovec iov[3] = {{hdr, sizeof hdr}, {(void *)payload, len}, {tag, sizeof tag}};
    return write_iov(c, iov, 3, now_ms() + c->timeout_ms);
}

/* Reads one handshake frame into c->buf. *version is the header's (checked by the caller; the
 * payload of a frame of another version is read only when it is small, else left unread). */
static plumb_status hs_recv(plumb_rpc_conn *c, uint16_t *version, uint16_t *type, uint32_t *len) {
    int64_t deadline = now_ms() + c->timeout_ms;
    uint8_t hdr[PLUMB_RPC_HEADER_BYTES];
    plumb_status st = read_full(c, hdr, sizeof hdr, deadline);
    if (st != PLUMB_OK) return st;
    if (memcmp(hdr, kMagic, 4) != 0)
        return plumb__fail(PLUMB_E_FORMAT, "rpc handshake: bad magic (not a plumb rpc peer)");
    *version = get16(hdr + 4);
    *type = get16(hdr + 6);
    *len = get32(hdr + 8);
    uint64_t seq = get64(hdr + 12);
    if (*len > HS_MAX_PAYLOAD) {
        if (*version != PLUMB_RPC_VERSION) return PLUMB_OK;
        return plumb__fail(PLUMB_E_FORMAT, "rpc handshake: frame of %u bytes (at most %d)",
                           (unsigned)*len, HS_MAX_PAYLOAD);
    }
    if ((st = ensure_buf(c, (size_t)*len + PLUMB_RPC_TAG_BYTES)) != PLUMB_OK) return st;
    if ((st = read_full(c, c->buf, (size_t)*len + PLUMB_RPC_TAG_BYTES, deadline)) != PLUMB_OK) return st;
    if (*version != PLUMB_RPC_VERSION) return PLUMB_OK;
    if (*type != PLUMB_RPC_HELLO && *type != PLUMB_RPC_CHALLENGE && *type != PLUMB_RPC_AUTH &&
        *type != PLUMB_RPC_ERROR)
        return plumb__fail(PLUMB_E_FORMAT, "rpc handshake: unexpected message type %u", (unsigned)*type);
    static const uint8_t zero[PLUMB_RPC_TAG_BYTES];
    if (seq != 0 || memcmp(c->buf + *len, zero, sizeof zero) != 0)
        return plumb__fail(PLUMB_E_FORMAT, "rpc handshake: frame with a nonzero sequence number or tag");
    return PLUMB_OK;
}

/* Turns the ERROR frame in c->buf into the failure the peer reported. */
static plumb_status peer_error(const uint8_t *p, uint32_t len, const char *who) {
    if (len < 4) return plumb__fail(PLUMB_E_FORMAT, "rpc: the %s sent a malformed ERROR frame", who);
    int32_t code = (int32_t)get32(p);
    char text[256];
    size_t n = 0;
    for (uint32_t i = 4; i < len && n + 1 < sizeof text; i++)
        text[n++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    text[n] = 0;
    plumb_status st = (code < 0 && code >= PLUMB_E_RANGE) ? (plumb_status)code : PLUMB_E_IO;
    return plumb__fail(st, "rpc: the %s refused: %s", who, text);
}

static plumb_status check_key(const uint8_t *key, size_t key_len) {
    if (!key || key_len < PLUMB_RPC_KEY_MIN)
        return plumb__fail(PLUMB_E_INVALID_ARG, "rpc: the key must have at least %d bytes (128 bits)",
                           PLUMB_RPC_KEY_MIN);
    return PLUMB_OK;
}

static plumb_status begin(plumb_rpc_conn *c, const uint8_t *key, size_t key_len) {
    if (c->dead || c->authed)
        return plumb__fail(PLUMB_E_INVALID_ARG, "rpc: handshake on a used connection");
    return check_key(key, key_len);
}

static plumb_status session_key(plumb_rpc_conn *c, const uint8_t *key, size_t key_len,
                                const uint8_t *nc, const uint8_t *ns) {
    plumb_status st = proof(key, key_len, "plumb-rpc session", nc, ns, c->session);
    if (st != PLUMB_OK) return st;
    c->send_seq = c->recv_seq = 0;
    c->authed = true;
    return PLUMB_OK;
}

plumb_status plumb__rpc_handshake_client(plumb_rpc_conn *c, const uint8_t *key, size_t key_len,
                                         uint32_t *server_caps) {
    plumb_status st = begin(c, key, key_len);
    if (st != PLUMB_OK) return st;
    uint8_t nc[PLUMB_RPC_NONCE_BYTES], ns[PLUMB_RPC_NONCE_BYTES], want[32], msg[CHALLENGE_BYTES];
    if (RAND_bytes(nc, sizeof nc) != 1)
        return conn_fail(c, plumb__fail(PLUMB_E_IO, "rpc: no random bytes from OpenSSL"));
    put16(msg, PLUMB_RPC_VERSION);
    memcpy(msg + 2, nc, sizeof nc);
    if ((st = hs_send(c, PLUMB_RPC_HELLO, msg, HELLO_BYTES)) != PLUMB_OK) return conn_fail(c, st);

    uint16_t ver, type;
    uint32_t len;
    if ((st = hs_recv(c, &ver, &type, &len)) != PLUMB_OK) return conn_fail(c, st);
    if (type == PLUMB_RPC_ERROR && len <= HS_MAX_PAYLOAD) return conn_fail(c, peer_error(c->buf, len, "server"));
    if (ver != PLUMB_RPC_VERSION)
        return conn_fail(c, plumb__fail(PLUMB_E_UNSUPPORTED,
                                   "rpc: protocol version mismatch: the server speaks version %u, "
                                   "this client speaks version %u",
                                   (unsigned)ver, (unsigned)PLUMB_RPC_VERSION));
    if (type != PLUMB_RPC_CHALLENGE || len != CHALLENGE_BYTES)
        return conn_fail(c, plumb__fail(PLUMB_E_FORMAT, "rpc handshake: expected CHALLENGE (%d bytes), got type %u of %u bytes",
                                   CHALLENGE_BYTES, (unsigned)type, (unsigned)len));
    const uint8_t *p = c->buf;
    if (get16(p) != PLUMB_RPC_VERSION)
        return conn_fail(c, plumb__fail(PLUMB_E_UNSUPPORTED,
                                   "rpc: protocol version mismatch: the server speaks version %u, "
                                   "this client speaks version %u",
                                   (unsigned)get16(p), (unsigned)PLUMB_RPC_VERSION));
    uint32_t caps = get32(p + 2);
    memcpy(ns, p + 6, sizeof ns);
    if ((st = proof(key, key_len, "plumb-rpc server", nc, ns, want)) != PLUMB_OK) return conn_fail(c, st);
    if (CRYPTO_memcmp(want, p + 6 + sizeof ns, 32) != 0)
        return conn_fail(c, plumb__fail(PLUMB_E_INVALID_ARG,
                                   "rpc: authentication failed: the server's proof is wrong "
                                   "(it does not hold this client's key)"));
    if ((st = proof(key, key_len, "plumb-rpc client", ns, nc, want)) != PLUMB_OK) return conn_fail(c, st);
    if ((st = hs_send(c, PLUMB_RPC_AUTH, want, AUTH_BYTES)) != PLUMB_OK) return conn_fail(c, st);
    if ((st = session_key(c, key, key_len, nc, ns)) != PLUMB_OK) return conn_fail(c, st);
    if (server_caps) *server_caps = caps;
    return PLUMB_OK;
}

plumb_status plumb__rpc_handshake_server(plumb_rpc_conn *c, const uint8_t *key, size_t key_len,
                                         uint32_t caps) {
    plumb_status st = begin(c, key, key_len);
    if (st != PLUMB_OK) return st;
    uint16_t ver, type;
    uint32_t len;
    if ((st = hs_recv(c, &ver, &type, &len)) != PLUMB_OK) return conn_fail(c, st);
    uint16_t client_ver = ver;
    if (ver == PLUMB_RPC_VERSION && type == PLUMB_RPC_HELLO && len == HELLO_BYTES) client_ver = get16(c->buf);
    if (client_ver != PLUMB_RPC_VERSION) {
        char text[128];
        int n = snprintf(text, sizeof text,
                         "protocol version mismatch: the client speaks version %u, this server speaks version %u",
                         (unsigned)client_ver, (unsigned)PLUMB_RPC_VERSION);
        uint8_t msg[4 + sizeof text];
        put32(msg, (uint32_t)(int32_t)PLUMB_E_UNSUPPORTED);
        memcpy(msg + 4, text, (size_t)n);
        (void)hs_send(c, PLUMB_RPC_ERROR, msg, (uint32_t)(4 + n));
        return conn_fail(c, plumb__fail(PLUMB_E_UNSUPPORTED, "rpc: %s", text));
    }
    if (type != PLUMB_RPC_HELLO || len != HELLO_BYTES)
        return conn_fail(c, plumb__fail(PLUMB_E_FORMAT, "rpc handshake: expected HELLO (%d bytes), got type %u of %u bytes",
                                   HELLO_BYTES, (unsigned)type, (unsigned)len));
    uint8_t nc[PLUMB_RPC_NONCE_BYTES], ns[PLUMB_RPC_NONCE_BYTES], want[32], msg[CHALLENGE_BYTES];
    memcpy(nc, c->buf + 2, sizeof nc);
    if (RAND_bytes(ns, sizeof ns) != 1)
        return conn_fail(c, plumb__fail(PLUMB_E_IO, "rpc: no random bytes from OpenSSL"));
    put16(msg, PLUMB_RPC_VERSION);
    put32(msg + 2, caps);
    memcpy(msg + 6, ns, sizeof ns);
    if ((st = proof(key, key_len, "plumb-rpc server", nc, ns, msg + 6 + sizeof ns)) != PLUMB_OK) return conn_fail(c, st);
    if ((st = hs_send(c, PLUMB_RPC_CHALLENGE, msg, CHALLENGE_BYTES)) != PLUMB_OK) return conn_fail(c, st);

    st = hs_recv(c, &ver, &type, &len);
    if (st == PLUMB_E_IO) {
        char why[256]; /* the message is rewritten below: copied first */
        snprintf(why, sizeof why, "%s", plumb_last_error());
        return conn_fail(c, plumb__fail(PLUMB_E_IO, "rpc: authentication failed: the client hung up instead of "
                                               "proving it holds the key (%s)", why));
    }
    if (st != PLUMB_OK) return conn_fail(c, st);
    if (ver != PLUMB_RPC_VERSION || type != PLUMB_RPC_AUTH || len != AUTH_BYTES)
        return conn_fail(c, plumb__fail(PLUMB_E_FORMAT, "rpc handshake: expected AUTH (%d bytes), got type %u of %u bytes",
                                   AUTH_BYTES, (unsigned)type, (unsigned)len));
    if ((st = proof(key, key_len, "plumb-rpc client", ns, nc, want)) != PLUMB_OK) return conn_fail(c, st);
    if (CRYPTO_memcmp(want, c->buf, 32) != 0)
        return conn_fail(c, plumb__fail(PLUMB_E_INVALID_ARG,
                                   "rpc: authentication failed: the client's proof is wrong (it does not "
                                   "hold this server's key, or it replays another session's handshake)"));
    if ((st = session_key(c, key, key_len, nc, ns)) != PLUMB_OK) return conn_fail(c, st);
    return PLUMB_OK;
}

/* ---- authenticated frames ---- */

static plumb_status usable(const plumb_rpc_conn *c) {
    if (c->dead) return plumb__fail(PLUMB_E_IO, "rpc: the connection has failed before");
    if (!c->authed) return plumb__fail(PLUMB_E_INVALID_ARG, "rpc: the handshake has not completed");
    return PLUMB_OK;
}

plumb_status plumb__rpc_send(plumb_rpc_conn *c, uint16_t type, const struct iovec *parts, int n_parts) {
    plumb_status st = usable(c);
    if (st != PLUMB_OK) return st;
    if (n_parts < 0 || n_parts > PLUMB_RPC_MAX_PARTS || (n_parts && !parts))
        return plumb__fail(PLUMB_E_INVALID_ARG, "rpc send: %d parts (at most %d)", n_parts, PLUMB_RPC_MAX_PARTS);
    uint32_t cap = plumb__rpc_type_cap(type);
    if (cap == 0 || type <= PLUMB_RPC_AUTH)
        return plumb__fail(PLUMB_E_INVALID_ARG, "rpc send: message type %u is not for an authenticated frame",
                           (unsigned)type);
    size_t total = 0;
    for (int i = 0; i < n_parts; i++) {
        if (parts[i].iov_len > cap || total + parts[i].iov_len > cap)
            return plumb__fail(PLUMB_E_INVALID_ARG, "rpc send: payload over the %u-byte cap of type %u",
                               (unsigned)cap, (unsigned)type);
        if (parts[i].iov_len && !parts[i].iov_base)
            return plumb__fail(PLUMB_E_INVALID_ARG, "rpc send: part %d has no data", i);
        total += parts[i].iov_len;
    }
    uint8_t hdr[PLUMB_RPC_HEADER_BYTES], tag[PLUMB_RPC_TAG_BYTES];
    plumb__rpc_write_header(hdr, PLUMB_RPC_VERSION, type, (uint32_t)total, c->send_seq);
    if ((st = plumb__rpc_frame_tag(c->session, c->server ? 'S' : 'C', hdr, parts, n_parts, tag)) != PLUMB_OK)
        return conn_fail(c, st);
    struct iovec iov[PLUMB_RPC_MAX_PARTS + 2];
    iov[0] = (struct iovec){hdr, sizeof hdr};
    for (int i = 0; i < n_parts; i++) iov[1 + i] = parts[i];
    iov[1 + n_parts] = (struct iovec){tag, sizeof tag};
    if ((st = write_iov(c, iov, n_parts + 2, now_ms() + c->timeout_ms)) != PLUMB_OK) return conn_fail(c, st);
    c->send_seq++;
    c->bytes_sent += PLUMB_RPC_HEADER_BYTES + total + PLUMB_RPC_TAG_BYTES;
    return PLUMB_OK;
}

plumb_status plumb__rpc_recv(plumb_rpc_conn *c, uint16_t *type, const uint8_t **payload, size_t *len) {
    *payload = NULL;
    *len = 0;
    plumb_status st = usable(c);
    if (st != PLUMB_OK) return st;
    uint8_t hdr[PLUMB_RPC_HEADER_BYTES], tag[PLUMB_RPC_TAG_BYTES];
    uint16_t t;
    uint32_t n;
    uint64_t seq;
    if (c->idle_ms > 0 && (st = wait_fd(c, POLLIN, now_ms() + c->idle_ms, "waiting for the next request")) != PLUMB_OK)
        return conn_fail(c, st);
    for (struct pollfd pf = {.fd = c->fd, .events = POLLIN}; c->idle_ms < 0 && poll(&pf, 1, -1) < 0;)
        if (errno != EINTR) return conn_fail(c, plumb__fail(PLUMB_E_IO, "rpc: poll: %s", strerror(errno)));
    int64_t deadline = now_ms() + c->timeout_ms; /* the frame, once it has begun */
    if ((st = read_full(c, hdr, sizeof hdr, deadline)) != PLUMB_OK) return conn_fail(c, st);
    if ((st = plumb__rpc_parse_header(hdr, &t, &n, &seq)) != PLUMB_OK) return conn_fail(c, st);
    if (t <= PLUMB_RPC_AUTH)
        return conn_fail(c, plumb__fail(PLUMB_E_FORMAT, "rpc frame: handshake message type %u after the handshake",
                                   (unsigned)t));
    if (seq != c->recv_seq)
        return conn_fail(c, plumb__fail(PLUMB_E_FORMAT, "rpc frame: sequence number %llu, expected %llu (a replayed "
                                                   "or lost frame)",
                                   (unsigned long long)seq, (unsigned long long)c->recv_seq));
    if ((st = ensure_buf(c, (size_t)n + PLUMB_RPC_TAG_BYTES)) != PLUMB_OK) return conn_fail(c, st);
    if ((st = read_full(c, c->buf, (size_t)n + PLUMB_RPC_TAG_BYTES, deadline)) != PLUMB_OK) return conn_fail(c, st);
    struct iovec part = {c->buf, n};
    if ((st = plumb__rpc_frame_tag(c->session, c->server ? 'C' : 'S', hdr, &part, 1, tag)) != PLUMB_OK)
        return conn_fail(c, st);
    if (CRYPTO_memcmp(tag, c->buf + n, PLUMB_RPC_TAG_BYTES) != 0)
        return conn_fail(c, plumb__fail(PLUMB_E_FORMAT, "rpc frame: the tag does not match (a forged, altered or "
                                                   "misdirected frame)"));
    c->recv_seq++;
    c->bytes_received += PLUMB_RPC_HEADER_BYTES + (uint64_t)n + PLUMB_RPC_TAG_BYTES;
    *type = t;
    *payload = c->buf;
    *len = n;
    return PLUMB_OK;
}
