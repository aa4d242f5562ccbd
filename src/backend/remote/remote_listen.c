/* remote_listen.c — `plumb rpc-server`'s listener (plumb_rpc_server_run): accepts connections,
 * each on its own thread: the handshake, then its requests (remote_server.c) until it ends,
 * when everything it held is freed. The served backend is shared; its graph runs take turns.
 *
 * A peer without the key cannot crowd out those with it: handshakes have their own places
 * (HANDSHAKES at once, PER_ADDRESS from one address) and a short deadline, and only an
 * authenticated connection takes one of the max_connections places. An authenticated
 * connection may idle (a chat waiting for its user); one whose host vanished is found by TCP
 * keepalive, and a frame once begun must arrive within the request deadline. */
#include "backend/remote/remote_server.h"

#include "core/cpu_count.h"
#include "core/error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONNECTIONS 64
#define HANDSHAKES 32
#define PER_ADDRESS 4
#define HANDSHAKE_MS 5000
#define SLOTS (MAX_CONNECTIONS + HANDSHAKES)

typedef struct listener {
    const plumb_rpc_server_params *p;
    plumb_backend *backend;
    uint8_t key[PLUMB_RPC_KEY_FILE_MAX];
    size_t key_len;
    pthread_mutex_t compute_lock;
    atomic_int active;        /* threads running */
    pthread_mutex_t fds_lock; /* the open connections, to end them when the server stops */
    int fds[SLOTS];
    char peers[SLOTS][64];    /* their addresses while they handshake, "" after */
    int authed;               /* connections past the handshake */
    int max_conns;
} listener;

typedef struct conn_job {
    listener *l;
    int fd, slot;
    char peer[64];
} conn_job;

plumb_rpc_server_params plumb_rpc_server_default_params(void) {
    return (plumb_rpc_server_params){.host = "127.0.0.1", .port = 0, .key_file = NULL, .device = NULL, .n_threads = 0,
                                     .mem_limit = 0, .max_connections = 0, .timeout_ms = 0, .cache_dir = NULL,
                                     .idle_timeout_ms = 0};
}

/* After the handshake: a place among max_connections, or false (the server is full). */
static bool take_place(listener *l, int slot) {
    pthread_mutex_lock(&l->fds_lock);
    l->peers[slot][0] = 0;
    const bool ok = l->authed < l->max_conns;
    if (ok) l->authed++;
    pthread_mutex_unlock(&l->fds_lock);
    return ok;
}

static void *serve_conn(void *arg) {
    conn_job *j = arg;
    listener *l = j->l;
    plumb_rpc_conn c;
    const int timeout = l->p->timeout_ms > 0 ? l->p->timeout_ms : 30000;
    plumb__rpc_conn_init(&c, j->fd, true, timeout < HANDSHAKE_MS ? timeout : HANDSHAKE_MS);
    plumb_rpc_session s;
    const uint64_t limit = l->p->mem_limit ? l->p->mem_limit : (uint64_t)8 << 30;
    plumb_status st = plumb__rpc_session_init(&s, l->backend, limit, 1 << 16);
    s.compute_lock = &l->compute_lock;
    s.cache_dir = l->p->cache_dir;
    const char *stage = "handshake";
    bool placed = false;
    if (!st) st = plumb__rpc_handshake_server(&c, l->key, l->key_len, l->p->cache_dir ? PLUMB_RPC_CAP_CACHE : 0);
    if (!st && !(placed = take_place(l, j->slot))) {
        plumb__fail(PLUMB_E_RANGE, "the server is full (%d connections; --max-connections)", l->max_conns);
        const plumb_status full = PLUMB_E_RANGE;
        uint8_t code[4] = {(uint8_t)full, (uint8_t)((uint32_t)full >> 8), (uint8_t)((uint32_t)full >> 16), (uint8_t)((uint32_t)full >> 24)};
        char text[128];
        const int n = snprintf(text, sizeof text, "%s", plumb_last_error());
        struct iovec v[2] = {{code, 4}, {text, (size_t)n}};
        uint16_t type;
        const uint8_t *p;
        size_t len;
        if (plumb__rpc_recv(&c, &type, &p, &len) == PLUMB_OK) plumb__rpc_send(&c, PLUMB_RPC_ERROR, v, 2);
        st = PLUMB_E_RANGE;
    }
    if (!st) {
        stage = "connection";
        c.timeout_ms = timeout;
        c.idle_ms = l->p->idle_timeout_ms > 0 ? l->p->idle_timeout_ms : -1;
        st = plumb__rpc_session_serve(&s, &c);
    }
    fprintf(stderr, "plumb rpc-server: %s: %s ended: %s (weights: %.1f MiB received, %.1f MiB from the cache)\n", j->peer,
            stage, plumb_last_error(), (double)s.bytes_set / 1048576.0, (double)s.bytes_cached / 1048576.0);
    plumb__rpc_session_free(&s);
    plumb__rpc_conn_free(&c);
    pthread_mutex_lock(&l->fds_lock);
    l->fds[j->slot] = -1;
    l->peers[j->slot][0] = 0;
    if (placed) l->authed--;
    close(j->fd);
    pthread_mutex_unlock(&l->fds_lock);
    atomic_fetch_sub(&l->active, 1);
    free(j);
    return NULL;
}

/* A free slot for a connection from peer, or -1 when handshakes (all, or this address's) are
 * at their limit. fds_lock held. */
static int free_slot(listener *l, const char *peer) {
    int handshaking = 0, from_peer = 0, slot = -1;
    for (int i = 0; i < SLOTS; i++) {
        if (l->fds[i] < 0) {
            if (slot < 0) slot = i;
        } else if (l->peers[i][0]) {
            handshaking++;
            from_peer += strcmp(l->peers[i], peer) == 0;
        }
    }
    return handshaking >= HANDSHAKES || from_peer >= PER_ADDRESS ? -1 : slot;
}

static plumb_status listen_on(const plumb_rpc_server_params *p, int *fd_out, int *port_out) {
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    const char *host = p->host ? p->host : "127.0.0.1";
    const int gai = getaddrinfo(host, port, &hints, &res);
    if (gai) return plumb__fail(PLUMB_E_NOT_FOUND, "rpc-server: address %s: %s", host, gai_strerror(gai));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    const int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 16)) {
        const int err = errno;
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return plumb__fail(PLUMB_E_IO, "rpc-server: cannot listen on %s:%d: %s", host, p->port, strerror(err));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return PLUMB_OK;
}

/* The cache folder exists (made, readable by its owner only, when missing) and is writable. */
static plumb_status cache_dir_ready(const char *dir) {
    if (!dir) return PLUMB_OK;
    if (!*dir) return plumb__fail(PLUMB_E_INVALID_ARG, "rpc-server: an empty --cache-dir");
    if (mkdir(dir, 0700) && errno != EEXIST) return plumb__fail(PLUMB_E_IO, "rpc-server: cannot make %s: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) return plumb__fail(PLUMB_E_INVALID_ARG, "rpc-server: %s is not a folder", dir);
    if (access(dir, W_OK | X_OK)) return plumb__fail(PLUMB_E_IO, "rpc-server: cannot write in %s: %s", dir, strerror(errno));
    return PLUMB_OK;
}

static plumb_status make_backend(const plumb_rpc_server_params *p, plumb_backend **out) {
    const plumb_backend_reg *reg;
    int index;
    plumb_status st = plumb_backend_lookup(p->device ? p->device : "cpu", &reg, &index);
    if (st) return st;
    if (index < 0) return plumb__fail(PLUMB_E_INVALID_ARG, "rpc-server: it serves a device of this host, not %s", p->device);
    int threads = p->n_threads;
    if (threads <= 0) {
        plumb_cpu_count cpus;
        plumb__cpu_count(&cpus);
        threads = cpus.n;
    }
    return reg->create(index, threads, out);
}

plumb_status plumb_rpc_server_run(const plumb_rpc_server_params *p, volatile int *stop, void (*ready)(int port, void *ctx),
                                  void *ctx) {
    if (!p || !stop) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_rpc_server_run: NULL argument");
    if (!p->key_file) return plumb__fail(PLUMB_E_INVALID_ARG, "rpc-server: a key file is required (--key-file F)");
    listener *l = calloc(1, sizeof *l);
    if (!l) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    l->p = p;
    int fd = -1, port = 0;
    plumb_status st = plumb__rpc_key_load(p->key_file, l->key, sizeof l->key, &l->key_len);
    if (!st) st = cache_dir_ready(p->cache_dir);
    if (!st) st = make_backend(p, &l->backend);
    if (!st) st = listen_on(p, &fd, &port);
    if (st) {
        plumb_backend_free(l->backend);
        free(l);
        return st;
    }
    pthread_mutex_init(&l->compute_lock, NULL);
    pthread_mutex_init(&l->fds_lock, NULL);
    for (int i = 0; i < SLOTS; i++) l->fds[i] = -1;
    l->max_conns = p->max_connections > 0 && p->max_connections <= MAX_CONNECTIONS ? p->max_connections : 8;
    if (ready) ready(port, ctx);
    while (!*stop) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 200) != 1) continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        const int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (cfd < 0) continue;
        conn_job *j = calloc(1, sizeof *j);
        if (!j) {
            close(cfd);
            continue;
        }
        j->l = l, j->fd = cfd;
        if (getnameinfo((struct sockaddr *)&ss, sl, j->peer, sizeof j->peer, NULL, 0, NI_NUMERICHOST)) snprintf(j->peer, sizeof j->peer, "?");
        pthread_mutex_lock(&l->fds_lock);
        j->slot = free_slot(l, j->peer);
        if (j->slot >= 0) {
            l->fds[j->slot] = cfd;
            snprintf(l->peers[j->slot], sizeof l->peers[j->slot], "%s", j->peer);
        }
        pthread_mutex_unlock(&l->fds_lock);
        if (j->slot < 0) { /* too many handshakes: closed at once */
            close(cfd);
            free(j);
            continue;
        }
        plumb__rpc_keepalive(cfd);
        atomic_fetch_add(&l->active, 1);
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, serve_conn, j)) {
            pthread_mutex_lock(&l->fds_lock);
            l->fds[j->slot] = -1;
            l->peers[j->slot][0] = 0;
            pthread_mutex_unlock(&l->fds_lock);
            atomic_fetch_sub(&l->active, 1);
            close(cfd);
            free(j);
        }
        pthread_attr_destroy(&attr);
    }
    close(fd);
    pthread_mutex_lock(&l->fds_lock); /* end the open connections: their reads fail at once */
    for (int i = 0; i < SLOTS; i++)
        if (l->fds[i] >= 0) shutdown(l->fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&l->fds_lock);
    while (atomic_load(&l->active) > 0) usleep(10000);
    pthread_mutex_destroy(&l->compute_lock);
    pthread_mutex_destroy(&l->fds_lock);
    plumb_backend_free(l->backend);
    memset(l->key, 0, sizeof l->key);
    free(l);
    return PLUMB_OK;
}
