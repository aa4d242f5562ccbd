/* test_rpc_wire.c — the remote backend's transport (src/backend/remote/remote_wire.h) over
 * socketpairs: handshake, round trips, wrong keys, version mismatch, replayed handshakes and
 * frames, tampering, caps, deadlines, and the key file. */
#include "backend/remote/remote_wire.h"

#include "test.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

static const uint8_t KEY_A[] = "plumb-test-key-aaaaaaaaaaaaaaaa";
static const uint8_t KEY_B[] = "plumb-test-key-bbbbbbbbbbbbbbbb";
#define KLEN (sizeof KEY_A - 1)

typedef struct {
    plumb_rpc_conn *c;
    const uint8_t *key;
    plumb_status st;
    char err[512];
    int echo; /* after the handshake: echo this many frames back as OK */
} srv_arg;

static void *srv_main(void *p) {
    srv_arg *a = p;
    a->st = plumb__rpc_handshake_server(a->c, a->key, KLEN, 0x5);
    snprintf(a->err, sizeof a->err, "%s", a->st ? plumb_last_error() : "");
    for (int i = 0; a->st == PLUMB_OK && i < a->echo; i++) {
        uint16_t t;
        const uint8_t *pl;
        size_t n;
        a->st = plumb__rpc_recv(a->c, &t, &pl, &n);
        if (a->st != PLUMB_OK) break;
        struct iovec v = {(void *)pl, n};
        a->st = plumb__rpc_send(a->c, PLUMB_RPC_OK, &v, 1);
    }
    return NULL;
}

static int64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected client and server; returns the client's status, the server's in *sst. */
static plumb_status pair(plumb_rpc_conn *cli, plumb_rpc_conn *srv, const uint8_t *kc, const uint8_t *ks,
                         plumb_status *sst, char *serr, char *cerr) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return PLUMB_E_IO;
    plumb__rpc_conn_init(cli, sv[0], false, 2000);
    plumb__rpc_conn_init(srv, sv[1], true, 2000);
    srv_arg a = {.c = srv, .key = ks};
    pthread_t th;
    pthread_create(&th, NULL, srv_main, &a);
    uint32_t caps = 0;
    plumb_status st = plumb__rpc_handshake_client(cli, kc, KLEN, &caps);
    if (cerr) snprintf(cerr, 512, "%s", st ? plumb_last_error() : "");
    pthread_join(th, NULL);
    if (st == PLUMB_OK && a.st == PLUMB_OK) CHECK_EQ_INT(caps, 0x5);
    *sst = a.st;
    if (serr) snprintf(serr, 512, "%s", a.err);
    return st;
}

static void unpair(plumb_rpc_conn *cli, plumb_rpc_conn *srv) {
    close(cli->fd);
    close(srv->fd);
    plumb__rpc_conn_free(cli);
    plumb__rpc_conn_free(srv);
}

static void read_raw(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) break;
        p += r;
        n -= (size_t)r;
    }
}

static void write_raw(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) break;
        p += w;
        n -= (size_t)w;
    }
}

TEST(rpc_wire_roundtrip) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    plumb_rpc_conn cli, srv;
    plumb__rpc_conn_init(&cli, sv[0], false, 5000);
    plumb__rpc_conn_init(&srv, sv[1], true, 5000);
    static const size_t sizes[] = {0, 1, 1000, 70001, 1u << 20};
    enum { N = sizeof sizes / sizeof sizes[0] };
    srv_arg a = {.c = &srv, .key = KEY_A, .echo = N};
    pthread_t th;
    pthread_create(&th, NULL, srv_main, &a);
    uint32_t caps = 0;
    CHECK_STATUS(plumb__rpc_handshake_client(&cli, KEY_A, KLEN, &caps), PLUMB_OK);
    CHECK_EQ_INT(caps, 0x5);
    uint8_t *msg = malloc(1u << 20);
    for (size_t i = 0; i < (1u << 20); i++) msg[i] = (uint8_t)(i * 131 + 7);
    for (int k = 0; k < N && cli.authed; k++) {
        size_t n = sizes[k], h = n / 3;
        uint8_t head[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        /* three parts: a header struct, then the bytes in two pieces (one may be empty) */
        struct iovec parts[3] = {{head, n >= 8 ? 8 : n}, {msg + 8, h > 8 ? h - 8 : 0}, {NULL, 0}};
        size_t used = parts[0].iov_len + parts[1].iov_len;
        parts[2] = (struct iovec){msg + used, n - used};
        CHECK_STATUS(plumb__rpc_send(&cli, PLUMB_RPC_SET, parts, 3), PLUMB_OK);
        uint16_t t = 0;
        const uint8_t *pl = NULL;
        size_t len = 0;
        CHECK_STATUS(plumb__rpc_recv(&cli, &t, &pl, &len), PLUMB_OK);
        CHECK_EQ_INT(t, PLUMB_RPC_OK);
        CHECK_EQ_INT(len, n);
        if (len == n && n) {
            CHECK(memcmp(pl, head, parts[0].iov_len) == 0);
            if (n > 8) CHECK(memcmp(pl + 8, msg + 8, n - 8) == 0);
        }
    }
    pthread_join(th, NULL);
    CHECK_STATUS(a.st, PLUMB_OK);
    CHECK_EQ_INT(cli.send_seq, N);
    CHECK_EQ_INT(srv.recv_seq, N);
    /* over the cap: refused before anything is written */
    struct iovec big = {msg, (1u << 20) + 1};
    CHECK_STATUS(plumb__rpc_send(&cli, PLUMB_RPC_INFO, &big, 1), PLUMB_E_INVALID_ARG);
    free(msg);
    unpair(&cli, &srv);
}

TEST(rpc_wire_wrong_key) {
    for (int side = 0; side < 2; side++) {
        plumb_rpc_conn cli, srv;
        plumb_status sst;
        char serr[512], cerr[512];
        plumb_status cst = pair(&cli, &srv, side ? KEY_B : KEY_A, side ? KEY_A : KEY_B, &sst, serr, cerr);
        CHECK_STATUS(cst, PLUMB_E_INVALID_ARG);
        CHECK(strstr(cerr, "server's proof is wrong") != NULL);
        CHECK(sst != PLUMB_OK);
        CHECK(strstr(serr, "authentication failed") != NULL);
        uint16_t t;
        const uint8_t *pl = (const uint8_t *)"x";
        size_t n = 7;
        CHECK(plumb__rpc_recv(&srv, &t, &pl, &n) != PLUMB_OK);
        CHECK(pl == NULL && n == 0);
        CHECK(plumb__rpc_send(&cli, PLUMB_RPC_INFO, NULL, 0) != PLUMB_OK);
        unpair(&cli, &srv);
    }
}

static void *srv_only(void *p) {
    srv_arg *a = p;
    a->st = plumb__rpc_handshake_server(a->c, a->key, KLEN, 0);
    snprintf(a->err, sizeof a->err, "%s", a->st ? plumb_last_error() : "");
    return NULL;
}

static void hello_frame(uint8_t f[20 + 34 + 32], uint16_t hdr_ver, uint16_t pl_ver, const uint8_t nc[32]) {
    memset(f, 0, 20 + 34 + 32);
    plumb__rpc_write_header(f, hdr_ver, PLUMB_RPC_HELLO, 34, 0);
    f[20] = (uint8_t)pl_ver;
    f[21] = (uint8_t)(pl_ver >> 8);
    memcpy(f + 22, nc, 32);
}

/* A socketpair whose end sv[1] runs the server's handshake (key A) in thread *th. */
static void start_handshake_server(int sv[2], plumb_rpc_conn *srv, srv_arg *a, pthread_t *th) {
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    plumb__rpc_conn_init(srv, sv[1], true, 2000);
    *a = (srv_arg){.c = srv, .key = KEY_A};
    pthread_create(th, NULL, srv_only, a);
}

TEST(rpc_wire_version_mismatch) {
    uint8_t nc[32] = {9};
    for (int in_payload = 0; in_payload < 2; in_payload++) {
        int sv[2];
        plumb_rpc_conn srv;
        srv_arg a;
        pthread_t th;
        start_handshake_server(sv, &srv, &a, &th);
        uint8_t f[20 + 34 + 32];
        hello_frame(f, in_payload ? PLUMB_RPC_VERSION : PLUMB_RPC_VERSION + 1, PLUMB_RPC_VERSION + 1, nc);
        write_raw(sv[0], f, sizeof f);
        uint8_t hdr[20] = {0}, body[512] = {0};
        read_raw(sv[0], hdr, 20);
        uint16_t t = 0;
        uint32_t len = 0;
        uint64_t seq = 1;
        CHECK_STATUS(plumb__rpc_parse_header(hdr, &t, &len, &seq), PLUMB_OK);
        CHECK_EQ_INT(t, PLUMB_RPC_ERROR);
        CHECK_EQ_INT(seq, 0);
        CHECK(len > 4 && len + 32 < sizeof body);
        if (len > 4 && len + 32 < sizeof body) read_raw(sv[0], body, len + 32);
        pthread_join(th, NULL);
        CHECK_STATUS(a.st, PLUMB_E_UNSUPPORTED);
        char client_v[48], server_v[48];
        snprintf(client_v, sizeof client_v, "client speaks version %d", PLUMB_RPC_VERSION + 1);
        snprintf(server_v, sizeof server_v, "server speaks version %d", PLUMB_RPC_VERSION);
        CHECK(strstr(a.err, client_v) && strstr(a.err, server_v));
        const char *text = (const char *)body + 4;
        CHECK(strstr(text, client_v) && strstr(text, server_v));

        /* the real client, given that ERROR frame by a fake server, reports its text */
        int sv2[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2) == 0);
        write_raw(sv2[1], hdr, 20);
        write_raw(sv2[1], body, len + 32);
        plumb_rpc_conn cli;
        plumb__rpc_conn_init(&cli, sv2[0], false, 2000);
        CHECK_STATUS(plumb__rpc_handshake_client(&cli, KEY_A, KLEN, NULL), PLUMB_E_UNSUPPORTED);
        const char *e = plumb_last_error();
        CHECK(strstr(e, client_v) && strstr(e, server_v));
        plumb__rpc_conn_free(&cli);
        close(sv2[0]);
        close(sv2[1]);
        plumb__rpc_conn_free(&srv);
        close(sv[0]);
        close(sv[1]);
    }
}

static void hmac3(const uint8_t *key, const char *label, const uint8_t *a, const uint8_t *b, uint8_t out[32]) {
    uint8_t m[96];
    size_t l = strlen(label);
    memcpy(m, label, l);
    memcpy(m + l, a, 32);
    memcpy(m + l + 32, b, 32);
    unsigned n = 0;
    HMAC(EVP_sha256(), key, (int)KLEN, m, l + 64, out, &n);
}

TEST(rpc_wire_replayed_auth) {
    uint8_t nc[32] = {1, 2, 3}, auth[20 + 32 + 32];
    for (int session = 0; session < 2; session++) {
        int sv[2];
        plumb_rpc_conn srv;
        srv_arg a;
        pthread_t th;
        start_handshake_server(sv, &srv, &a, &th);
        uint8_t f[20 + 34 + 32], ch[20 + 70 + 32] = {0};
        hello_frame(f, PLUMB_RPC_VERSION, PLUMB_RPC_VERSION, nc);
        write_raw(sv[0], f, sizeof f);
        read_raw(sv[0], ch, sizeof ch);
        if (session == 0) { /* the recorded, genuine AUTH */
            memset(auth, 0, sizeof auth);
            plumb__rpc_write_header(auth, PLUMB_RPC_VERSION, PLUMB_RPC_AUTH, 32, 0);
            hmac3(KEY_A, "plumb-rpc client", ch + 20 + 6, nc, auth + 20);
        }
        write_raw(sv[0], auth, sizeof auth);
        pthread_join(th, NULL);
        if (session == 0) {
            CHECK_STATUS(a.st, PLUMB_OK);
        } else {
            CHECK_STATUS(a.st, PLUMB_E_INVALID_ARG);
            CHECK(strstr(a.err, "client's proof is wrong") != NULL);
            CHECK(!srv.authed);
        }
        plumb__rpc_conn_free(&srv);
        close(sv[0]);
        close(sv[1]);
    }
}

/* Sends "hello world" as INFO from the client, captures its raw bytes off the server's socket,
 * lets mutate() change them and feeds them to the server's recv, which must fail. */
static void frame_case(int pos, int dup, const char *want) {
    plumb_rpc_conn cli, srv;
    plumb_status sst;
    CHECK_STATUS(pair(&cli, &srv, KEY_A, KEY_A, &sst, NULL, NULL), PLUMB_OK);
    CHECK_STATUS(sst, PLUMB_OK);
    struct iovec v = {(void *)"hello world", 11};
    CHECK_STATUS(plumb__rpc_send(&cli, PLUMB_RPC_INFO, &v, 1), PLUMB_OK);
    uint8_t f[20 + 11 + 32];
    read_raw(srv.fd, f, sizeof f);
    uint16_t t;
    const uint8_t *pl;
    size_t n;
    if (dup) { /* delivered once (accepted), then replayed */
        write_raw(cli.fd, f, sizeof f);
        CHECK_STATUS(plumb__rpc_recv(&srv, &t, &pl, &n), PLUMB_OK);
        CHECK(n == 11 && memcmp(pl, "hello world", 11) == 0);
    } else if (pos == 6) {
        f[6] = PLUMB_RPC_ALLOC; /* still a valid header, but not what was tagged */
    } else {
        f[pos] ^= 0x01;
    }
    write_raw(cli.fd, f, sizeof f);
    pl = (const uint8_t *)"x";
    n = 5;
    CHECK_STATUS(plumb__rpc_recv(&srv, &t, &pl, &n), PLUMB_E_FORMAT);
    CHECK(pl == NULL && n == 0);
    CHECK(strstr(plumb_last_error(), want) != NULL);
    CHECK(srv.dead);
    CHECK(plumb__rpc_recv(&srv, &t, &pl, &n) != PLUMB_OK);
    unpair(&cli, &srv);
}

TEST(rpc_wire_tampered_frames) {
    frame_case(20 + 5, 0, "tag");      /* a payload byte */
    frame_case(6, 0, "tag");           /* the header's type */
    frame_case(20 + 11 + 31, 0, "tag"); /* the tag */
    frame_case(12, 0, "sequence");     /* the sequence number */
    frame_case(0, 0, "magic");
    frame_case(4, 0, "version");
    frame_case(0, 1, "sequence"); /* a replayed frame */
}

TEST(rpc_wire_caps_and_direction) {
    static const struct {
        uint16_t type;
        uint32_t len;
    } bad[] = {{PLUMB_RPC_INFO, (1u << 20) + 1}, {PLUMB_RPC_SET, (1u << 28) + 1}, {99, 0}, {PLUMB_RPC_HELLO, 34}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        plumb_rpc_conn cli, srv;
        plumb_status sst;
        CHECK_STATUS(pair(&cli, &srv, KEY_A, KEY_A, &sst, NULL, NULL), PLUMB_OK);
        uint8_t h[20];
        plumb__rpc_write_header(h, PLUMB_RPC_VERSION, bad[i].type, bad[i].len, 0);
        write_raw(cli.fd, h, 20);
        uint16_t t;
        const uint8_t *pl;
        size_t n;
        int64_t t0 = ms_now();
        CHECK_STATUS(plumb__rpc_recv(&srv, &t, &pl, &n), PLUMB_E_FORMAT);
        CHECK(ms_now() - t0 < 1000); /* refused at once, not after waiting for the payload */
        CHECK(pl == NULL);
        unpair(&cli, &srv);
    }
    /* a client frame reflected back to the client fails its tag (the direction byte) */
    plumb_rpc_conn cli, srv;
    plumb_status sst;
    CHECK_STATUS(pair(&cli, &srv, KEY_A, KEY_A, &sst, NULL, NULL), PLUMB_OK);
    CHECK_STATUS(plumb__rpc_send(&cli, PLUMB_RPC_OK, NULL, 0), PLUMB_OK);
    uint8_t f[52];
    read_raw(srv.fd, f, sizeof f);
    write_raw(srv.fd, f, sizeof f);
    uint16_t t;
    const uint8_t *pl;
    size_t n;
    CHECK_STATUS(plumb__rpc_recv(&cli, &t, &pl, &n), PLUMB_E_FORMAT);
    unpair(&cli, &srv);
}

typedef struct {
    int fd;
    int n;
} dribble_arg;

static void *dribble(void *p) { /* one byte every 50 ms */
    dribble_arg *d = p;
    uint8_t h[20];
    plumb__rpc_write_header(h, PLUMB_RPC_VERSION, PLUMB_RPC_INFO, 100, 0);
    for (int i = 0; i < d->n; i++) {
        if (send(d->fd, h + (i % 20), 1, MSG_NOSIGNAL) != 1) break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

TEST(rpc_wire_deadlines) {
    plumb_rpc_conn cli, srv;
    plumb_status sst;
    uint16_t t;
    const uint8_t *pl;
    size_t n;
    /* silent peer */
    CHECK_STATUS(pair(&cli, &srv, KEY_A, KEY_A, &sst, NULL, NULL), PLUMB_OK);
    srv.timeout_ms = 200;
    int64_t t0 = ms_now();
    CHECK_STATUS(plumb__rpc_recv(&srv, &t, &pl, &n), PLUMB_E_IO);
    int64_t dt = ms_now() - t0;
    CHECK(dt >= 150 && dt < 1000);
    CHECK(strstr(plumb_last_error(), "timed out") != NULL);
    unpair(&cli, &srv);
    /* slow peer: a byte every 50 ms cannot stretch the call past its deadline */
    CHECK_STATUS(pair(&cli, &srv, KEY_A, KEY_A, &sst, NULL, NULL), PLUMB_OK);
    srv.timeout_ms = 200;
    dribble_arg d = {cli.fd, 40};
    pthread_t th;
    pthread_create(&th, NULL, dribble, &d);
    t0 = ms_now();
    CHECK_STATUS(plumb__rpc_recv(&srv, &t, &pl, &n), PLUMB_E_IO);
    dt = ms_now() - t0;
    CHECK(dt >= 150 && dt < 1000);
    pthread_join(th, NULL);
    unpair(&cli, &srv);
    /* closed peer */
    CHECK_STATUS(pair(&cli, &srv, KEY_A, KEY_A, &sst, NULL, NULL), PLUMB_OK);
    shutdown(cli.fd, SHUT_WR);
    CHECK_STATUS(plumb__rpc_recv(&srv, &t, &pl, &n), PLUMB_E_IO);
    CHECK(strstr(plumb_last_error(), "the peer closed the connection") != NULL);
    unpair(&cli, &srv);
    /* a silent server during the handshake */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    plumb__rpc_conn_init(&cli, sv[0], false, 200);
    t0 = ms_now();
    CHECK_STATUS(plumb__rpc_handshake_client(&cli, KEY_A, KLEN, NULL), PLUMB_E_IO);
    CHECK(ms_now() - t0 < 1000);
    plumb__rpc_conn_free(&cli);
    close(sv[0]);
    close(sv[1]);
}

static void write_file(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    CHECK(chmod(path, mode) == 0);
}

TEST(rpc_wire_key_file) {
    char dir[] = "/tmp/plumb-rpc-key-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128], missing[128];
    snprintf(path, sizeof path, "%s/key", dir);
    snprintf(missing, sizeof missing, "%s/nokey", dir);
    uint8_t key[256];
    size_t len = 0;
    write_file(path, "abcdefghijklmnopqrstuvwxyz012345\n", 0644);
    CHECK_STATUS(plumb__rpc_key_load(path, key, sizeof key, &len), PLUMB_E_INVALID_ARG);
    CHECK(strstr(plumb_last_error(), "chmod 600") && strstr(plumb_last_error(), path));
    CHECK(chmod(path, 0600) == 0);
    CHECK_STATUS(plumb__rpc_key_load(path, key, sizeof key, &len), PLUMB_OK);
    CHECK_EQ_INT(len, 32);
    CHECK(memcmp(key, "abcdefghijklmnopqrstuvwxyz012345", 32) == 0);
    CHECK_STATUS(plumb__rpc_key_load(path, key, 8, &len), PLUMB_E_RANGE);
    write_file(path, "short-key \r\n\n", 0600);
    CHECK_STATUS(plumb__rpc_key_load(path, key, sizeof key, &len), PLUMB_E_INVALID_ARG);
    CHECK(strstr(plumb_last_error(), "at least 16 bytes") && strstr(plumb_last_error(), path));
    write_file(path, "0123456789abcdef", 0640);
    CHECK_STATUS(plumb__rpc_key_load(path, key, sizeof key, &len), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb__rpc_key_load(missing, key, sizeof key, &len), PLUMB_E_NOT_FOUND);
    CHECK(strstr(plumb_last_error(), missing) != NULL);
    unlink(path);
    rmdir(dir);
}
