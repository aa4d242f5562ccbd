/* test_rpc_server.c — one connection's requests on a served CPU backend (remote_server.c), over
 * an authenticated socketpair: buffers round-trip, bad ids, ranges and sizes are refused with an
 * ERROR while the connection goes on, the memory limit holds, a COMPUTE of an encoded graph
 * gives the local CPU's bits, and a connection that ends frees what it held (ASan build). */
#include "test.h"

#include "backend/remote/remote_graph.h"
#include "backend/remote/remote_server.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/sha.h>

static const uint8_t KEY[] = "plumb-test-key-server-0123456789";
#define KEY_LEN (sizeof KEY - 1)
#define LIMIT (1u << 20)

typedef struct served {
    int fd;
    plumb_backend *cpu;
    const char *cache_dir;
    plumb_status ended; /* why serve returned */
} served;

static void *serve_main(void *p) {
    served *s = p;
    plumb_rpc_conn c;
    plumb__rpc_conn_init(&c, s->fd, true, 5000);
    plumb_rpc_session sess;
    s->ended = plumb__rpc_session_init(&sess, s->cpu, LIMIT, 256);
    sess.cache_dir = s->cache_dir;
    if (!s->ended) s->ended = plumb__rpc_handshake_server(&c, KEY, KEY_LEN, 0);
    if (!s->ended) s->ended = plumb__rpc_session_serve(&sess, &c);
    plumb__rpc_session_free(&sess);
    plumb__rpc_conn_free(&c);
    close(s->fd);
    return NULL;
}

typedef struct client {
    plumb_rpc_conn c;
    served srv;
    pthread_t th;
    int fd;
} client;

static bool client_open_cached(client *cl, const char *cache_dir) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return false;
    cl->fd = sv[0];
    cl->srv = (served){.fd = sv[1], .cache_dir = cache_dir};
    CHECK_STATUS(plumb_backend_cpu_create(1, &cl->srv.cpu), PLUMB_OK);
    pthread_create(&cl->th, NULL, serve_main, &cl->srv);
    plumb__rpc_conn_init(&cl->c, sv[0], false, 5000);
    uint32_t caps;
    CHECK_STATUS(plumb__rpc_handshake_client(&cl->c, KEY, KEY_LEN, &caps), PLUMB_OK);
    return true;
}

static bool client_open(client *cl) { return client_open_cached(cl, NULL); }

/* Hangs up and waits for the server to end; returns why it ended. */
static plumb_status client_close(client *cl) {
    plumb__rpc_conn_free(&cl->c);
    close(cl->fd);
    pthread_join(cl->th, NULL);
    plumb_backend_free(cl->srv.cpu);
    return cl->srv.ended;
}

static void put(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Sends a request; returns the reply's type, its payload in *out (the conn's) and length. */
static uint16_t call(client *cl, uint16_t type, const void *a, size_t na, const void *b, size_t nb, const uint8_t **out,
                     size_t *len) {
    struct iovec v[2] = {{(void *)a, na}, {(void *)b, nb}};
    CHECK_STATUS(plumb__rpc_send(&cl->c, type, v, nb ? 2 : na ? 1 : 0), PLUMB_OK);
    uint16_t t = 0;
    const uint8_t *p = NULL;
    size_t n = 0;
    CHECK_STATUS(plumb__rpc_recv(&cl->c, &t, &p, &n), PLUMB_OK);
    if (out) *out = p;
    if (len) *len = n;
    return t;
}

static uint32_t alloc(client *cl, uint64_t size) {
    uint8_t req[8];
    put(req, size, 8);
    const uint8_t *p;
    size_t n;
    if (call(cl, PLUMB_RPC_ALLOC, req, 8, NULL, 0, &p, &n) != PLUMB_RPC_OK || n != 4) return 0;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t set(client *cl, uint32_t id, uint64_t off, const void *data, size_t n) {
    uint8_t req[12];
    put(req, id, 4), put(req + 4, off, 8);
    return call(cl, PLUMB_RPC_SET, req, 12, data, n, NULL, NULL);
}

static uint16_t get(client *cl, uint32_t id, uint64_t off, uint64_t n, const uint8_t **out, size_t *len) {
    uint8_t req[20];
    put(req, id, 4), put(req + 4, off, 8), put(req + 12, n, 8);
    return call(cl, PLUMB_RPC_GET, req, 20, NULL, 0, out, len);
}

/* A COMPUTE: n_writes write records at writes (each with its bytes; the first record's size
 * covers them all when n_writes is 1), the graph, and one read (none when read_n is 0). */
static uint16_t compute_patch(client *cl, const uint8_t *writes, uint32_t n_writes, const uint8_t *graph, size_t graph_len,
                              bool patch, uint32_t read_id, uint64_t read_off, uint64_t read_n, const uint8_t **out, size_t *len) {
    size_t wlen = 0;
    if (n_writes) wlen = 20 + (size_t)(writes[12] | writes[13] << 8 | writes[14] << 16);
    uint8_t *msg = malloc(4 + wlen + 8 + graph_len + 4 + 20);
    size_t at = 0;
    put(msg, n_writes, 4), at = 4;
    if (n_writes) memcpy(msg + at, writes, wlen < 20 + 768 ? wlen : 20 + 768), at += wlen < 20 + 768 ? wlen : 20 + 768;
    put(msg + at, graph_len | (patch ? (uint64_t)1 << 63 : 0), 8), at += 8;
    if (graph_len) memcpy(msg + at, graph, graph_len), at += graph_len;
    put(msg + at, read_n ? 1 : 0, 4), at += 4;
    if (read_n) put(msg + at, read_id, 4), put(msg + at + 4, read_off, 8), put(msg + at + 12, read_n, 8), at += 20;
    const uint16_t t = call(cl, PLUMB_RPC_COMPUTE, msg, at, NULL, 0, out, len);
    free(msg);
    return t;
}

static uint16_t compute(client *cl, const uint8_t *writes, uint32_t n_writes, const uint8_t *graph, size_t graph_len,
                        uint32_t read_id, uint64_t read_off, uint64_t read_n, const uint8_t **out, size_t *len) {
    return compute_patch(cl, writes, n_writes, graph, graph_len, false, read_id, read_off, read_n, out, len);
}

/* The ERROR reply's status (its text follows). */
static int32_t error_code(const uint8_t *p, size_t n) {
    return n >= 4 ? (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24) : 0;
}

TEST(rpc_server_buffers_round_trip_and_bad_requests_are_refused) {
    client cl;
    if (!client_open(&cl)) return;
    const uint32_t a = alloc(&cl, 4096), b = alloc(&cl, 100);
    CHECK(a == 1 && b == 2);
    uint8_t data[300];
    for (int i = 0; i < 300; i++) data[i] = (uint8_t)(i * 7 + 1);
    CHECK_EQ_INT(set(&cl, a, 1000, data, 300), PLUMB_RPC_OK);
    const uint8_t *p;
    size_t n;
    CHECK_EQ_INT(get(&cl, a, 1000, 300, &p, &n), PLUMB_RPC_OK);
    CHECK(n == 300 && memcmp(p, data, 300) == 0);
    /* COPY within the connection's buffers */
    uint8_t cp[32];
    put(cp, b, 4), put(cp + 4, 10, 8), put(cp + 12, a, 4), put(cp + 16, 1000, 8), put(cp + 24, 50, 8);
    CHECK_EQ_INT(call(&cl, PLUMB_RPC_COPY, cp, 32, NULL, 0, NULL, NULL), PLUMB_RPC_OK);
    CHECK_EQ_INT(get(&cl, b, 10, 50, &p, &n), PLUMB_RPC_OK);
    CHECK(n == 50 && memcmp(p, data, 50) == 0);
    /* refused, and the connection goes on: unknown id, a range past the end, an offset that
     * wraps, a short request, an unknown type, more than the limit */
    CHECK_EQ_INT(get(&cl, 9, 0, 1, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_NOT_FOUND);
    CHECK_EQ_INT(get(&cl, b, 90, 11, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_RANGE);
    CHECK_EQ_INT(set(&cl, b, UINT64_MAX - 2, data, 8), PLUMB_RPC_ERROR);
    put(cp + 24, UINT64_MAX, 8);
    CHECK_EQ_INT(call(&cl, PLUMB_RPC_COPY, cp, 32, NULL, 0, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(call(&cl, PLUMB_RPC_GET, data, 5, NULL, 0, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_FORMAT);
    CHECK_EQ_INT(call(&cl, PLUMB_RPC_SET_HASH, data, 44, NULL, 0, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_FORMAT);
    CHECK(alloc(&cl, LIMIT) == 0); /* 4196 bytes are held already */
    CHECK(alloc(&cl, LIMIT - 4196) == 3);
    /* FREE gives the memory back; a freed id is gone */
    uint8_t id[4];
    put(id, 3, 4);
    CHECK_EQ_INT(call(&cl, PLUMB_RPC_FREE, id, 4, NULL, 0, NULL, NULL), PLUMB_RPC_OK);
    CHECK_EQ_INT(call(&cl, PLUMB_RPC_FREE, id, 4, NULL, 0, NULL, NULL), PLUMB_RPC_ERROR);
    CHECK(alloc(&cl, 1000) == 4);
    CHECK_EQ_INT(call(&cl, PLUMB_RPC_INFO, NULL, 0, NULL, 0, &p, &n), PLUMB_RPC_OK);
    CHECK(n == 272 && memchr(p, '\0', 128) && p[0] != '\0');
    /* hanging up with buffers held: the server ends and frees them (leaks show under ASan) */
    CHECK_EQ_INT(client_close(&cl), PLUMB_E_IO);
}

/* The id of a buffer the test's client allocated, by the buffer's place in the local graph. */
typedef struct id_map {
    plumb_buffer *local[4];
    uint32_t remote[4];
} id_map;

static uint32_t map_id(const plumb_buffer *b, void *ctx) {
    const id_map *m = ctx;
    for (int i = 0; i < 4; i++)
        if (m->local[i] == b) return m->remote[i];
    return UINT32_MAX;
}

TEST(rpc_server_compute_gives_the_local_cpus_bits) {
    /* y = rms_norm(silu(W x)), W F32 [64, 48], x F32 [64, 3]: the graph encoded over buffers
     * that stand for the server's (w, x, out), run remotely, read back */
    enum { K = 64, N = 48, T = 3 };
    float w[K * N], x[K * T];
    uint32_t s = 12345;
    for (int i = 0; i < K * N; i++) w[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / (float)(1 << 24) - 0.5f;
    for (int i = 0; i < K * T; i++) x[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / (float)(1 << 24) - 0.5f;
    /* locally, on the CPU */
    plumb_backend *cpu;
    CHECK_STATUS(plumb_backend_cpu_create(1, &cpu), PLUMB_OK);
    plumb_graph g;
    CHECK_STATUS(plumb_graph_init(&g, 32), PLUMB_OK);
    const int64_t ne_w[2] = {K, N}, ne_x[2] = {K, T};
    plumb_tensor *tw = plumb_graph_leaf(&g, PLUMB_TYPE_F32, 2, ne_w, w), *tx = plumb_graph_leaf(&g, PLUMB_TYPE_F32, 2, ne_x, x);
    plumb_tensor *y = plumb_graph_rms_norm(&g, plumb_graph_silu(&g, plumb_graph_mul_mat(&g, tw, tx)), NULL,
                                           &(plumb_rms_norm_params){.eps = 1e-5f});
    y->is_output = true;
    CHECK_STATUS(plumb_graph_plan(&g), PLUMB_OK);
    CHECK_STATUS(cpu->iface->graph_compute(cpu, &g, 0, g.n_nodes), PLUMB_OK);
    float want[N * T];
    memcpy(want, y->data, sizeof want);
    /* the same graph's tensors placed in stand-in buffers: w, x, and one for the nodes */
    id_map m = {{0}, {0}};
    client cl;
    if (!client_open(&cl)) goto done;
    m.remote[0] = alloc(&cl, sizeof w), m.remote[1] = alloc(&cl, sizeof x), m.remote[2] = alloc(&cl, 3 * sizeof want);
    CHECK_EQ_INT(set(&cl, m.remote[0], 0, w, sizeof w), PLUMB_RPC_OK);
    CHECK_EQ_INT(set(&cl, m.remote[1], 0, x, sizeof x), PLUMB_RPC_OK);
    CHECK(sizeof x == 768);
    plumb_buffer stand[3] = {{.size = sizeof w}, {.size = sizeof x}, {.size = 3 * sizeof want}};
    for (int i = 0; i < 3; i++) m.local[i] = &stand[i];
    tw->buf = &stand[0], tx->buf = &stand[1];
    for (int32_t i = 0; i < g.n_nodes; i++) g.nodes[i]->buf = &stand[2], g.nodes[i]->offs = (size_t)i * sizeof want;
    uint8_t *enc = NULL;
    size_t len = 0;
    CHECK_STATUS(plumb__rpc_graph_encode(&g, 0, g.n_nodes, map_id, &m, &enc, &len), PLUMB_OK);
    const uint8_t *p;
    size_t n;
    CHECK_EQ_INT(compute(&cl, NULL, 0, enc, len, 0, 0, 0, &p, &n), PLUMB_RPC_OK);
    CHECK_EQ_INT(get(&cl, m.remote[2], y->offs, sizeof want, &p, &n), PLUMB_RPC_OK);
    CHECK(n == sizeof want && memcmp(p, want, sizeof want) == 0);
    /* one round trip: the input written, the graph run and the output read back in one COMPUTE */
    float x2[K * T], want2[N * T];
    for (int i = 0; i < K * T; i++) x2[i] = x[i] * 0.5f - 0.125f;
    memcpy(x, x2, sizeof x);
    CHECK_STATUS(cpu->iface->graph_compute(cpu, &g, 0, g.n_nodes), PLUMB_OK);
    memcpy(want2, y->data, sizeof want2);
    uint8_t wr[20 + sizeof x2];
    put(wr, m.remote[1], 4), put(wr + 4, 0, 8), put(wr + 12, sizeof x2, 8);
    memcpy(wr + 20, x2, sizeof x2);
    CHECK_EQ_INT(compute(&cl, wr, 1, enc, len, m.remote[2], y->offs, sizeof want2, &p, &n), PLUMB_RPC_OK);
    CHECK(n == sizeof want2 && memcmp(p, want2, sizeof want2) == 0);
    /* the next graph as a patch of the last: the bytes that differ (here rms_norm's eps) */
    y->params.rms_norm.eps = 1e-2f;
    float want3[N * T];
    CHECK_STATUS(cpu->iface->graph_compute(cpu, &g, 0, g.n_nodes), PLUMB_OK);
    memcpy(want3, y->data, sizeof want3);
    uint8_t *enc2 = NULL;
    size_t len2 = 0;
    CHECK_STATUS(plumb__rpc_graph_encode(&g, 0, g.n_nodes, map_id, &m, &enc2, &len2), PLUMB_OK);
    y->params.rms_norm.eps = 1e-5f;
    CHECK(enc2 && len2 == len);
    size_t lo = 0, hi = len;
    while (enc2 && lo < len && enc[lo] == enc2[lo]) lo++;
    while (enc2 && hi > lo && enc[hi - 1] == enc2[hi - 1]) hi--;
    CHECK(lo < hi && hi - lo <= 4);
    uint8_t patch[12 + 4];
    put(patch, 1, 4), put(patch + 4, lo, 4), put(patch + 8, hi - lo, 4);
    if (enc2) memcpy(patch + 12, enc2 + lo, hi - lo);
    CHECK_EQ_INT(compute_patch(&cl, NULL, 0, patch, 12 + (hi - lo), true, m.remote[2], y->offs, sizeof want3, &p, &n), PLUMB_RPC_OK);
    CHECK(n == sizeof want3 && memcmp(p, want3, sizeof want3) == 0);
    free(enc2);
    /* a patch past the graph is refused, and so is any patch after that until a whole graph */
    put(patch + 4, len - 1, 4), put(patch + 8, 2, 4);
    CHECK_EQ_INT(compute_patch(&cl, NULL, 0, patch, 14, true, 0, 0, 0, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_FORMAT);
    put(patch, 0, 4);
    CHECK_EQ_INT(compute_patch(&cl, NULL, 0, patch, 4, true, 0, 0, 0, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(compute(&cl, wr, 1, enc, len, m.remote[2], y->offs, sizeof want2, &p, &n), PLUMB_RPC_OK);
    CHECK(n == sizeof want2 && memcmp(p, want2, sizeof want2) == 0);
    CHECK_EQ_INT(compute_patch(&cl, NULL, 0, patch, 4, true, m.remote[2], y->offs, sizeof want2, &p, &n), PLUMB_RPC_OK);
    CHECK(n == sizeof want2 && memcmp(p, want2, sizeof want2) == 0); /* an empty patch: the same graph */
    /* a read outside the buffers is refused before anything runs: the write is not made */
    put(wr + 20, 0, 4);
    CHECK_EQ_INT(compute(&cl, wr, 1, enc, len, m.remote[2], 3 * sizeof want, 4, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_RANGE);
    CHECK_EQ_INT(get(&cl, m.remote[1], 0, sizeof x2, &p, &n), PLUMB_RPC_OK);
    CHECK(n == sizeof x2 && memcmp(p, x2, sizeof x2) == 0);
    /* a write that runs past the message, trailing bytes: refused */
    CHECK_EQ_INT(compute(&cl, wr, 1, enc, len - 1, 0, 0, 0, &p, &n), PLUMB_RPC_ERROR);
    put(wr, m.remote[2], 4), put(wr + 12, 1000, 8);
    CHECK_EQ_INT(compute(&cl, wr, 1, NULL, 0, 0, 0, 0, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_FORMAT);
    /* a graph over a buffer this connection does not have is refused, and nothing runs */
    m.remote[1] = 77;
    free(enc);
    enc = NULL;
    CHECK_STATUS(plumb__rpc_graph_encode(&g, 0, g.n_nodes, map_id, &m, &enc, &len), PLUMB_OK);
    CHECK_EQ_INT(compute(&cl, NULL, 0, enc, len, 0, 0, 0, &p, &n), PLUMB_RPC_ERROR);
    CHECK_EQ_INT(error_code(p, n), PLUMB_E_NOT_FOUND);
    free(enc);
    CHECK_EQ_INT(client_close(&cl), PLUMB_E_IO);
done:
    plumb_graph_free(&g);
    plumb_backend_free(cpu);
}

/* SET_HASH { id, offset, size, SHA-256 } -> have. */
static int set_hash(client *cl, uint32_t id, uint64_t off, const void *data, size_t n) {
    uint8_t req[52];
    put(req, id, 4), put(req + 4, off, 8), put(req + 12, n, 8);
    SHA256(data, n, req + 20);
    const uint8_t *p;
    size_t len;
    if (call(cl, PLUMB_RPC_SET_HASH, req, 52, NULL, 0, &p, &len) != PLUMB_RPC_OK || len != 1) return -1;
    return p[0];
}

TEST(rpc_server_weights_by_content_hash) {
    char dir[] = "/tmp/plumb-rpc-cache-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    uint8_t w[5000], other[5000];
    for (int i = 0; i < 5000; i++) w[i] = (uint8_t)(i * 13 + 5), other[i] = (uint8_t)(i * 3);
    const uint8_t *p;
    size_t n;
    /* no cache: never held */
    client cl;
    if (!client_open(&cl)) return;
    uint32_t id = alloc(&cl, 6000);
    CHECK_EQ_INT(set_hash(&cl, id, 100, w, sizeof w), 0);
    CHECK_EQ_INT(client_close(&cl), PLUMB_E_IO);
    /* first run: missing; the SET of that range stores it (another range or content does not) */
    if (!client_open_cached(&cl, dir)) return;
    id = alloc(&cl, 6000);
    CHECK_EQ_INT(set_hash(&cl, id, 100, w, sizeof w), 0);
    CHECK_EQ_INT(set(&cl, id, 100, w, sizeof w), PLUMB_RPC_OK);
    CHECK_EQ_INT(set_hash(&cl, id, 0, other, sizeof other), 0);
    CHECK_EQ_INT(set(&cl, id, 0, w, sizeof w), PLUMB_RPC_OK); /* not other's bytes: not stored */
    CHECK_EQ_INT(set_hash(&cl, id, 0, w, 10000), -1);           /* past the buffer */
    CHECK_EQ_INT(client_close(&cl), PLUMB_E_IO);
    /* next run: held, and the bytes are the content's */
    if (!client_open_cached(&cl, dir)) return;
    id = alloc(&cl, 6000);
    CHECK_EQ_INT(set_hash(&cl, id, 7, w, sizeof w), 1);
    CHECK_EQ_INT(get(&cl, id, 7, sizeof w, &p, &n), PLUMB_RPC_OK);
    CHECK(n == sizeof w && memcmp(p, w, sizeof w) == 0);
    CHECK_EQ_INT(set_hash(&cl, id, 0, other, sizeof other), 0);
    /* a cache file changed on disk is not used, and is removed */
    char path[256], hex[65];
    uint8_t h[32];
    SHA256(w, sizeof w, h);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    snprintf(path, sizeof path, "%s/%s", dir, hex);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        fputc('!', f);
        fclose(f);
    }
    CHECK_EQ_INT(set_hash(&cl, id, 7, w, sizeof w), 0);
    CHECK(access(path, F_OK) != 0);
    CHECK_EQ_INT(client_close(&cl), PLUMB_E_IO);
    rmdir(dir);
}
