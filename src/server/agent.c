/* agent.c — the HAProxy agent-check listener (see agent.h): one thread polls a wake pipe, the
 * listener and the open connections; each connection is answered as it is accepted, then read
 * and dropped until the peer closes, a line ends, a byte cap or a deadline. Every buffer is
 * sized at start. */
#include "agent.h"

#include "httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ACCEPT_BURST 32 /* connections accepted per wake-up at most, so that reading the others goes on */

typedef struct agent_conn {
    int fd;
    double until; /* monotonic seconds: closed then if the peer has not closed first */
    size_t got;   /* bytes read and dropped */
} agent_conn;

struct plumb_srv_agent {
    plumb_srv_agent_params p;
    plumb_srv_agent_status_fn status;
    void *user;
    int listen_fd, wake[2], port;
    pthread_t thread;
    bool started;
    agent_conn *conns;  /* [p.max_clients]: the open connections conns[0..n), oldest first */
    struct pollfd *pfd; /* [p.max_clients + 2]: the wake pipe, the listener, the connections */
    int32_t n;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t plumb_srv_agent_line(const plumb_srv_agent_status *st, char *buf, size_t cap) {
    int n;
    switch (st->state) {
    case PLUMB_SRV_AGENT_LOADING: n = snprintf(buf, cap, "down #loading\n"); break;
    case PLUMB_SRV_AGENT_FAILED: n = snprintf(buf, cap, "fail #model failed to load\n"); break;
    case PLUMB_SRV_AGENT_DRAINING: n = snprintf(buf, cap, "drain\n"); break;
    case PLUMB_SRV_AGENT_DEVICE_LOST: n = snprintf(buf, cap, "down #device unavailable\n"); break;
    case PLUMB_SRV_AGENT_SERVING:
    default: {
        const int32_t total = st->total_slots > 0 ? st->total_slots : 1;
        const int32_t free = st->free_slots < 0 ? 0 : st->free_slots > total ? total : st->free_slots;
        int32_t weight = (int32_t)((int64_t)100 * free / total);
        if (weight < 1) weight = 1; /* 0% would be a drain (agent.h) */
        n = snprintf(buf, cap, "up ready %d%% maxconn:%d\n", (int)weight, (int)total);
        break;
    }
    }
    if (n < 0) n = 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Closes connection i (the later ones move down one place). */
static void drop(plumb_srv_agent *a, int32_t i) {
    close(a->conns[i].fd);
    memmove(&a->conns[i], &a->conns[i + 1], (size_t)(a->n - i - 1) * sizeof *a->conns);
    a->n--;
}

/* Sends the line and shuts the sending side (a FIN after it). false when the peer is gone. */
static bool answer(plumb_srv_agent *a, int fd) {
    plumb_srv_agent_status st = {.state = PLUMB_SRV_AGENT_LOADING};
    a->status(a->user, &st);
    char line[96];
    const size_t len = plumb_srv_agent_line(&st, line, sizeof line);
    /* a fresh connection's send buffer takes these few bytes whole: never a partial write */
    ssize_t w;
    do
        w = send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)len) return false;
    shutdown(fd, SHUT_WR);
    return true;
}

static void accept_some(plumb_srv_agent *a) {
    for (int k = 0; k < ACCEPT_BURST; k++) {
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (a->n > 0) { /* out of descriptors: the oldest connection has its answer already */
                    drop(a, 0);
                    continue;
                }
                poll(NULL, 0, 10); /* others hold them: do not spin on the listener */
            }
            return; /* EAGAIN: none left */
        }
        if (!answer(a, fd)) {
            close(fd);
            continue;
        }
        if (a->n == a->p.max_clients) drop(a, 0);
        a->conns[a->n++] = (agent_conn){.fd = fd, .until = now_s() + a->p.read_ms / 1e3};
    }
}

/* Reads and drops what the peer sent. false: done with it (it closed or failed, a line ended,
 * or it sent PLUMB_SRV_AGENT_READ_MAX bytes). */
static bool read_some(agent_conn *c) {
    char buf[256];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
            c->got += (size_t)r;
            if (c->got >= PLUMB_SRV_AGENT_READ_MAX || memchr(buf, '\n', (size_t)r)) return false;
            continue;
        }
        if (r == 0) return false;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

static void *agent_main(void *arg) {
    plumb_srv_agent *a = arg;
    for (;;) {
        const double now = now_s();
        int timeout = -1;
        for (int32_t i = 0; i < a->n;) {
            const double left = a->conns[i].until - now;
            if (left <= 0) {
                drop(a, i);
                continue;
            }
            const int ms = (int)(left * 1000) + 1;
            if (timeout < 0 || ms < timeout) timeout = ms;
            i++;
        }
        a->pfd[0] = (struct pollfd){.fd = a->wake[0], .events = POLLIN};
        a->pfd[1] = (struct pollfd){.fd = a->listen_fd, .events = POLLIN};
        for (int32_t i = 0; i < a->n; i++) a->pfd[2 + i] = (struct pollfd){.fd = a->conns[i].fd, .events = POLLIN};
        if (poll(a->pfd, (nfds_t)(2 + a->n), timeout) < 0) {
            if (errno != EINTR) poll(NULL, 0, 10);
            continue;
        }
        if (a->pfd[0].revents) break;
        for (int32_t i = a->n - 1; i >= 0; i--) /* from the last: a drop moves only those visited */
            if (a->pfd[2 + i].revents && !read_some(&a->conns[i])) drop(a, i);
        if (a->pfd[1].revents & POLLIN) accept_some(a);
        else if (a->pfd[1].revents) poll(NULL, 0, 10); /* a listener in error: do not spin */
    }
    while (a->n > 0) drop(a, a->n - 1);
    return NULL;
}

plumb_status plumb_srv_agent_start(const plumb_srv_agent_params *p, plumb_srv_agent_status_fn status, void *user,
                                   plumb_srv_agent **out, char *err, size_t err_cap) {
    *out = NULL;
    if (!status || p->max_clients < 1 || p->max_clients > 65536 || p->read_ms < 1 || p->port < 0 || p->port > 65535) {
        snprintf(err, err_cap, "invalid agent-check parameters");
        return PLUMB_E_INVALID_ARG;
    }
    plumb_srv_agent *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, err_cap, "out of memory");
        return PLUMB_E_NOMEM;
    }
    a->p = *p;
    a->status = status;
    a->user = user;
    a->listen_fd = a->wake[0] = a->wake[1] = -1;
    a->conns = calloc((size_t)p->max_clients, sizeof *a->conns);
    a->pfd = calloc((size_t)p->max_clients + 2, sizeof *a->pfd);
    plumb_status st = PLUMB_OK;
    if (!a->conns || !a->pfd) {
        snprintf(err, err_cap, "out of memory");
        st = PLUMB_E_NOMEM;
    }
    char why[256];
    if (!st && (st = plumb_http_listen(p->host, p->port, &a->listen_fd, &a->port, why, sizeof why)))
        snprintf(err, err_cap, "agent-check: %s", why);
    if (!st && pipe2(a->wake, O_CLOEXEC | O_NONBLOCK)) {
        snprintf(err, err_cap, "cannot create a pipe: %s", strerror(errno));
        st = PLUMB_E_IO;
    }
    if (!st && pthread_create(&a->thread, NULL, agent_main, a)) {
        snprintf(err, err_cap, "cannot start a thread");
        st = PLUMB_E_NOMEM;
    }
    if (st) {
        plumb_srv_agent_free(a);
        return st;
    }
    a->started = true;
    *out = a;
    return PLUMB_OK;
}

int plumb_srv_agent_port(const plumb_srv_agent *a) { return a->port; }

void plumb_srv_agent_free(plumb_srv_agent *a) {
    if (!a) return;
    if (a->started) {
        ssize_t w = write(a->wake[1], "x", 1);
        (void)w;
        pthread_join(a->thread, NULL);
    }
    if (a->listen_fd >= 0) close(a->listen_fd);
    for (int i = 0; i < 2; i++)
        if (a->wake[i] >= 0) close(a->wake[i]);
    free(a->conns);
    free(a->pfd);
    free(a);
}
