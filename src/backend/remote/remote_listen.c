/* remote_listen.c — `plumb rpc-server`'s listener (plumb_rpc_server_run): accepts connections,
 * at most max_connections at once, each on its own thread: the handshake, then its requests
 * (remote_server.c) until it ends, when everything it held is freed. The served backend is
 * shared; its graph runs take turns. */
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
#include <unistd.h>

#define MAX_CONNECTIONS 64

typedef struct listener {
    const plumb_rpc_server_params *p;
    plumb_backend *backend;
    uint8_t key[PLUMB_RPC_KEY_FILE_MAX];
    size_t key_len;
    pthread_mutex_t compute_lock;
    atomic_int active;
    pthread_mutex_t fds_lock; /* the open connections, to end them when the server stops */
    int fds[MAX_CONNECTIONS];
} listener;

typedef struct conn_job {
    listener *l;
    int fd, slot;
    char peer[64];
} conn_job;

plumb_rpc_server_params plumb_rpc_server_default_params(void) {
    return (plumb_rpc_server_params){.host = "127.0.0.1", .port = 0, .key_file = NULL, .device = NULL, .n_threads = 0,
                                     .mem_limit = 0, .max_connections = 0, .timeout_ms = 0};
}

static void *serve_conn(void *arg) {
    conn_job *j = arg;
    listener *l = j->l;
    plumb_rpc_conn c;
    plumb__rpc_conn_init(&c, j->fd, true, l->p->timeout_ms > 0 ? l->p->timeout_ms : 30000);
    plumb_rpc_session s;
    const uint64_t limit = l->p->mem_limit ? l->p->mem_limit : (uint64_t)8 << 30;
    plumb_status st = plumb__rpc_session_init(&s, l->backend, limit, 1 << 16);
    s.compute_lock = &l->compute_lock;
    const char *stage = "handshake";
    if (!st) st = plumb__rpc_handshake_server(&c, l->key, l->key_len, 0);
    if (!st) stage = "connection", st = plumb__rpc_session_serve(&s, &c);
    fprintf(stderr, "plumb rpc-server: %s: %s ended: %s\n", j->peer, stage, plumb_last_error());
    plumb__rpc_session_free(&s);
    plumb__rpc_conn_free(&c);
    pthread_mutex_lock(&l->fds_lock);
    l->fds[j->slot] = -1;
    close(j->fd);
    pthread_mutex_unlock(&l->fds_lock);
    atomic_fetch_sub(&l->active, 1);
    free(j);
    return NULL;
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
    if (!st) st = make_backend(p, &l->backend);
    if (!st) st = listen_on(p, &fd, &port);
    if (st) {
        plumb_backend_free(l->backend);
        free(l);
        return st;
    }
    pthread_mutex_init(&l->compute_lock, NULL);
    pthread_mutex_init(&l->fds_lock, NULL);
    for (int i = 0; i < MAX_CONNECTIONS; i++) l->fds[i] = -1;
    if (ready) ready(port, ctx);
    const int max_conns = p->max_connections > 0 && p->max_connections < MAX_CONNECTIONS ? p->max_connections : 8;
    while (!*stop) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 200) != 1) continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        const int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (cfd < 0) continue;
        conn_job *j = calloc(1, sizeof *j);
        if (!j || atomic_load(&l->active) >= max_conns) { /* no room: closed at once */
            free(j);
            close(cfd);
            continue;
        }
        j->l = l, j->fd = cfd;
        pthread_mutex_lock(&l->fds_lock);
        for (j->slot = 0; l->fds[j->slot] >= 0; j->slot++) {
        }
        l->fds[j->slot] = cfd;
        pthread_mutex_unlock(&l->fds_lock);
        getnameinfo((struct sockaddr *)&ss, sl, j->peer, sizeof j->peer, NULL, 0, NI_NUMERICHOST);
        atomic_fetch_add(&l->active, 1);
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, serve_conn, j)) {
            pthread_mutex_lock(&l->fds_lock);
            l->fds[j->slot] = -1;
            pthread_mutex_unlock(&l->fds_lock);
            atomic_fetch_sub(&l->active, 1);
            close(cfd);
            free(j);
        }
        pthread_attr_destroy(&attr);
    }
    close(fd);
    pthread_mutex_lock(&l->fds_lock); /* end the open connections: their reads fail at once */
    for (int i = 0; i < MAX_CONNECTIONS; i++)
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
