/* httpd.c — the HTTP/1.1 transport of the server (see httpd.h): the accepting thread with
 * its caps, one thread per connection reading requests under a deadline, and answers
 * written with a deadline of their own. Sockets are non-blocking; every wait is a poll with
 * a time limit, in slices short enough to notice the server draining. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLICE_MS 100           /* longest single wait, so draining is noticed */
#define READ_CHUNK (64u << 10) /* bytes asked of recv at a time */
#define CONN_STACK (512u << 10)
#define LINGER_S 2.0                /* reading what a client still sends after the last answer */
#define LINGER_BYTES (4u << 20)

struct plumb_http_conn {
    plumb_httpd *d;
    int fd;
    struct sockaddr_storage addr;
    char peer[64];
    bool restricted;
    bool late;   /* had sent nothing when draining began (or came after): its one request is read
                    and answered, not cut off by draining */
    bool served; /* has answered a request */
    char *in; /* received bytes [in_cap]: the request being read, then what follows it */
    size_t in_len, in_cap;
    /* the request being answered */
    bool head_only;    /* HEAD: no body in the answer */
    bool keep_alive;   /* the connection may carry another request after this one */
    bool responded, streaming, stream_chunked, failed;
    double write_timeout;
    plumb_http_conn *prev, *next;
};

struct plumb_httpd {
    plumb_httpd_params p;
    plumb_httpd_handler h;
    int listen_fd, wake[2], port;
    pthread_t acceptor;
    bool accepting; /* the acceptor runs (until plumb_httpd_stop_accepting) */
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* n_conns or n_busy dropped */
    plumb_http_conn *conns; /* open connections */
    int n_conns, n_busy;
    atomic_bool draining;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Writes all of buf, waiting at most write_timeout for each bit of progress. */
static bool send_all(plumb_http_conn *c, const void *buf, size_t len, bool more) {
    const char *p = buf;
    while (len > 0 && !c->failed) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0));
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
            int r = poll(&pf, 1, (int)(c->write_timeout * 1000));
            if (r > 0 && !(pf.revents & (POLLERR | POLLHUP | POLLNVAL))) continue;
            if (r < 0 && errno == EINTR) continue;
        }
        c->failed = true; /* reset, shut down, or not reading for write_timeout */
    }
    return !c->failed;
}

static const char *reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* Writes the status line and fields; length < 0: no Content-Length. */
static bool send_head(plumb_http_conn *c, int status, const char *type, const char *extra, long long length,
                      bool chunked, bool more) {
    if (atomic_load(&c->d->draining)) c->keep_alive = false;
    char head[1024];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n%s%s%s", status, reason(status), type ? "Content-Type: " : "",
                     type ? type : "", type ? "\r\n" : "");
    if (length >= 0) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %lld\r\n", length);
    if (chunked) n += snprintf(head + n, sizeof head - (size_t)n, "Transfer-Encoding: chunked\r\n");
    n += snprintf(head + n, sizeof head - (size_t)n, "Connection: %s\r\n", c->keep_alive ? "keep-alive" : "close");
    size_t ex = extra ? strlen(extra) : 0;
    if ((size_t)n + ex + 2 >= sizeof head) return c->failed = true, false; /* the application's bug; never this long */
    memcpy(head + n, extra ? extra : "", ex);
    memcpy(head + n + ex, "\r\n", 2);
    c->responded = true;
    return send_all(c, head, (size_t)n + ex + 2, more);
}

bool plumb_http_respond(plumb_http_conn *c, int status, const char *content_type, const char *extra_headers,
                        const void *body, size_t len) {
    if (c->responded) return false;
    bool has_body = !c->head_only && len > 0;
    if (!send_head(c, status, content_type, extra_headers, (long long)len, false, has_body)) return false;
    return !has_body || send_all(c, body, len, false);
}

bool plumb_http_stream_start(plumb_http_conn *c, int status, const char *content_type, const char *extra_headers) {
    if (c->responded) return false;
    c->streaming = true;
    c->stream_chunked = c->keep_alive; /* HTTP/1.0 (or closing): the end of the body is the close */
    return send_head(c, status, content_type, extra_headers, -1, c->stream_chunked, false);
}

bool plumb_http_stream_send(plumb_http_conn *c, const void *data, size_t len) {
    if (!c->streaming || len == 0 || c->head_only) return !c->failed;
    if (!c->stream_chunked) return send_all(c, data, len, false);
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    return send_all(c, size, (size_t)n, true) && send_all(c, data, len, true) && send_all(c, "\r\n", 2, false);
}

bool plumb_http_stream_end(plumb_http_conn *c) {
    if (!c->streaming) return false;
    c->streaming = false;
    return c->head_only || !c->stream_chunked || send_all(c, "0\r\n\r\n", 5, false);
}

bool plumb_http_responded(const plumb_http_conn *c) { return c->responded; }

bool plumb_http_client_gone(plumb_http_conn *c) {
    if (c->failed) return true;
    struct pollfd pf = {.fd = c->fd, .events = 0}; /* only errors and hang-ups, never a half-close */
    return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLERR | POLLHUP | POLLNVAL));
}

bool plumb_http_draining(const plumb_http_conn *c) { return atomic_load(&c->d->draining); }

const char *plumb_http_peer(const plumb_http_conn *c) { return c->peer; }

/* ---- reading ------------------------------------------------------------------------------ */

typedef enum got { GOT_BYTES, GOT_EOF, GOT_TIMEOUT, GOT_DRAINING, GOT_ERROR } got;

/* Receives more bytes after c->in[0..in_len), growing the buffer to at most limit bytes. */
static got read_more(plumb_http_conn *c, double deadline, size_t limit) {
    if (c->in_len >= limit) return GOT_ERROR;
    if (c->in_cap - c->in_len < READ_CHUNK && c->in_cap < limit) {
        size_t cap = c->in_len + READ_CHUNK > limit ? limit : c->in_len + READ_CHUNK;
        char *grown = realloc(c->in, cap);
        if (!grown) return GOT_ERROR;
        c->in = grown;
        c->in_cap = cap;
    }
    for (;;) {
        if (atomic_load(&c->d->draining) && !c->late) {
            if (c->served || c->in_len > 0) return GOT_DRAINING;
            c->late = true; /* a client about to send its first request gets an answer, not a close */
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n > 0) {
            c->in_len += (size_t)n;
            return GOT_BYTES;
        }
        if (n == 0) return GOT_EOF;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return GOT_ERROR;
        double left = deadline - now_s();
        if (left <= 0) return GOT_TIMEOUT;
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int ms = left * 1000 < SLICE_MS ? (int)(left * 1000) + 1 : SLICE_MS;
        if (poll(&pf, 1, ms) < 0 && errno != EINTR) return GOT_ERROR;
    }
}

static void transport_error(plumb_http_conn *c, int status, const char *code, const char *message) {
    c->keep_alive = false;
    if (!c->responded && !c->failed) c->d->h.on_error(c->d->h.app, c, status, code, message);
}

/* Why a read stopped, answered when a request had begun. false: close the connection. */
static bool read_failed(plumb_http_conn *c, got g, bool begun) {
    if (!begun) return false; /* idle: close quietly */
    if (g == GOT_TIMEOUT) transport_error(c, 408, "request_timeout", "the request did not arrive in time");
    else if (g == GOT_DRAINING) transport_error(c, 503, "shutting_down", "the server is shutting down");
    return false;
}

/* Sends 100 Continue when the client waits for it and the body has not begun. */
static bool maybe_continue(plumb_http_conn *c, const plumb_http_head *h) {
    if (!h->expect_continue || c->in_len > h->head_len) return true;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return send_all(c, cont, sizeof cont - 1, false);
}

/* Reads the body into c->in after the head. *body_len gets its length and *used the bytes
 * of the request (head, body and framing); false after answering an error or a failure. */
static bool read_body(plumb_http_conn *c, const plumb_http_head *h, double deadline, size_t *body_len, size_t *used) {
    const plumb_httpd_params *p = &c->d->p;
    *body_len = 0;
    *used = h->head_len;
    if (h->framing == PLUMB_HTTP_BODY_NONE) return true;
    if (!maybe_continue(c, h)) return false;
    if (h->framing == PLUMB_HTTP_BODY_LENGTH) {
        size_t need = h->head_len + (size_t)h->content_length;
        while (c->in_len < need) {
            got g = read_more(c, deadline, need);
            if (g != GOT_BYTES) return read_failed(c, g, true);
        }
        *body_len = (size_t)h->content_length;
        *used = need;
        return true;
    }
    plumb_http_chunked ch;
    plumb_http_chunked_init(&ch, p->max_body);
    size_t fresh = c->in_len - h->head_len, rest = 0;
    plumb_http_refusal why;
    for (;;) {
        int r = plumb_http_chunked_feed(&ch, c->in + h->head_len, fresh, &rest, &why);
        c->in_len = h->head_len + ch.decoded + (r == 1 ? rest : 0);
        if (r < 0) {
            transport_error(c, why.status, why.code, why.message);
            return false;
        }
        if (r == 1) break;
        got g = read_more(c, deadline, h->head_len + ch.decoded + READ_CHUNK);
        if (g != GOT_BYTES) return read_failed(c, g, true);
        fresh = c->in_len - h->head_len - ch.decoded;
    }
    *body_len = ch.decoded;
    *used = h->head_len + ch.decoded;
    return true;
}

static void set_busy(plumb_httpd *d, int delta) {
    pthread_mutex_lock(&d->mu);
    d->n_busy += delta;
    if (delta < 0) pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* Reads and answers one request. false: close the connection. */
static bool serve_one(plumb_http_conn *c) {
    plumb_httpd *d = c->d;
    const plumb_httpd_params *p = &d->p;
    c->responded = c->streaming = c->stream_chunked = c->head_only = false;
    c->keep_alive = false;
    double deadline = now_s() + p->request_timeout_s;
    plumb_http_head h;
    plumb_http_refusal why;
    size_t seen = 0;
    int r;
    for (;;) {
        if (c->in_len > seen) {
            r = plumb_http_parse_head(c->in, c->in_len, seen, p->max_header, p->max_body, &h, &why);
            if (r) break;
            seen = c->in_len;
        }
        got g = read_more(c, deadline, p->max_header);
        if (g != GOT_BYTES) return read_failed(c, g, c->in_len > 0);
    }
    if (r < 0) {
        transport_error(c, why.status, why.code, why.message);
        return false;
    }
    plumb_http_request req = {.head = &h, .restricted = c->restricted};
    snprintf(req.method, sizeof req.method, "%.*s", (int)h.method_len, h.method);
    const char *target;
    size_t target_len, path_len = 0;
    plumb_http_target_path(&h, &target, &target_len);
    while (path_len < target_len && target[path_len] != '?') path_len++;
    char *path = malloc(path_len + 1);
    if (!path) return false;
    memcpy(path, target, path_len);
    path[path_len] = '\0';
    req.path = path;
    c->head_only = !strcmp(req.method, "HEAD");
    c->keep_alive = h.keep_alive && !atomic_load(&d->draining);
    bool keep = false;
    d->h.on_head(d->h.app, c, &req);
    if (c->responded) { /* refused from the head: an unread body ends the connection */
        keep = c->keep_alive && !c->failed && h.framing == PLUMB_HTTP_BODY_NONE;
        memmove(c->in, c->in + h.head_len, c->in_len - h.head_len);
        c->in_len -= h.head_len;
        goto out;
    }
    /* the head's pointers are into c->in, which reading the body may move: parse again after */
    size_t head_len = h.head_len, body_len, used;
    if (!read_body(c, &h, deadline, &body_len, &used)) goto out;
    r = plumb_http_parse_head(c->in, head_len, 0, p->max_header, p->max_body, &h, &why);
    if (r != 1) goto out; /* cannot happen: the same bytes parsed before */
    req.body = c->in + head_len;
    req.body_len = body_len;
    set_busy(d, 1);
    d->h.on_request(d->h.app, c, &req);
    if (!c->responded) transport_error(c, 500, "server_error", "the request was not answered");
    if (c->streaming) c->failed = true; /* an unfinished stream cannot be followed */
    set_busy(d, -1);
    keep = c->keep_alive && !c->failed;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
out:
    free(path);
    c->served = c->served || c->responded;
    return keep && !atomic_load(&d->draining);
}

/* ---- connections ---------------------------------------------------------------------------- */

static bool same_client(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
    return true;
}

static void describe_peer(const struct sockaddr_storage *sa, char *out, size_t cap) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
    else if (sa->ss_family == AF_INET6) inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
    snprintf(out, cap, "%s", host);
}

static void conn_free(plumb_http_conn *c) {
    plumb_httpd *d = c->d;
    pthread_mutex_lock(&d->mu);
    if (c->prev) c->prev->next = c->next;
    else d->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    d->n_conns--;
    close(c->fd); /* under the lock: plumb_httpd_free never shuts down a reused descriptor */
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    free(c->in);
    free(c);
}

/* Closes gracefully: a FIN after the answer, then what the client still sends (the rest of
 * a body that was refused) is read and dropped for a while, so that closing with unread
 * bytes does not send a reset that could destroy the answer before the client reads it. */
static void linger_close(plumb_http_conn *c) {
    if (c->failed || !c->responded) return; /* nothing was answered: nothing to protect */
    shutdown(c->fd, SHUT_WR);
    double until = now_s() + LINGER_S;
    size_t dropped = 0;
    char buf[16384];
    while (dropped < LINGER_BYTES) {
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            dropped += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return;
        double left = until - now_s();
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, (int)(left * 1000) + 1) == 0) return;
    }
}

static void *conn_main(void *arg) {
    plumb_http_conn *c = arg;
    while (serve_one(c)) {
    }
    linger_close(c);
    conn_free(c);
    return NULL;
}

/* Refuses a connection from the accepting thread: a short answer, then close. */
static void refuse_conn(plumb_httpd *d, int fd, const struct sockaddr_storage *sa, const char *message) {
    plumb_http_conn c = {.d = d, .fd = fd, .addr = *sa, .write_timeout = 0.2};
    describe_peer(sa, c.peer, sizeof c.peer);
    char drain[4096];
    while (recv(fd, drain, sizeof drain, MSG_DONTWAIT) > 0) { /* a request already sent: read so close sends no reset */
    }
    transport_error(&c, 503, "too_many_connections", message);
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void accept_one(plumb_httpd *d) {
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int fd = accept4(d->listen_fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) poll(NULL, 0, 10);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_mutex_lock(&d->mu);
    int from_client = 0;
    for (plumb_http_conn *o = d->conns; o; o = o->next) from_client += same_client(&o->addr, &sa);
    const char *full = d->n_conns >= d->p.max_connections + d->p.headroom ? "too many open connections; retry later"
                       : from_client >= d->p.max_per_client ? "too many open connections from this address; retry later"
                                                             : NULL;
    plumb_http_conn *c = full ? NULL : calloc(1, sizeof *c);
    if (c) {
        c->d = d;
        c->fd = fd;
        c->addr = sa;
        c->restricted = d->n_conns >= d->p.max_connections;
        c->late = atomic_load(&d->draining);
        c->write_timeout = d->p.request_timeout_s;
        describe_peer(&sa, c->peer, sizeof c->peer);
        c->next = d->conns;
        if (d->conns) d->conns->prev = c;
        d->conns = c;
        d->n_conns++;
    }
    pthread_mutex_unlock(&d->mu);
    if (!c) {
        refuse_conn(d, fd, &sa, full ? full : "out of memory");
        return;
    }
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, CONN_STACK);
    int err = pthread_create(&t, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (err) conn_free(c);
}

static void *accept_main(void *arg) {
    plumb_httpd *d = arg;
    for (;;) {
        struct pollfd pf[2] = {{.fd = d->listen_fd, .events = POLLIN}, {.fd = d->wake[0], .events = POLLIN}};
        if (poll(pf, 2, -1) < 0 && errno != EINTR) break;
        if (pf[1].revents) break;
        if (pf[0].revents & POLLIN) accept_one(d);
    }
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

plumb_status plumb_http_listen(const char *host, int port_no, int *fd_out, int *port_out, char *err, size_t cap) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", port_no);
    if (!host) host = "127.0.0.1";
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        snprintf(err, cap, "cannot resolve host '%s': %s", host, gai_strerror(gai));
        return PLUMB_E_INVALID_ARG;
    }
    /* non-blocking: a connection reset between poll and accept must not block the acceptor */
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), e = 0;
    int one = 1;
    /* SO_REUSEADDR lets a restarted server bind past TIME_WAIT; it never lets two servers
     * listen on one port (that would be SO_REUSEPORT, which is not set) */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || bind(fd, ai->ai_addr, ai->ai_addrlen) ||
        listen(fd, 128))
        e = errno;
    freeaddrinfo(ai);
    if (e) {
        if (fd >= 0) close(fd);
        snprintf(err, cap, "cannot listen on %s:%d: %s", host, port_no, strerror(e));
        return PLUMB_E_IO;
    }
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    *port_out = port_no;
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        *port_out = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port : ((struct sockaddr_in *)&sa)->sin_port);
    *fd_out = fd;
    return PLUMB_OK;
}

plumb_status plumb_httpd_start(const plumb_httpd_params *p, const plumb_httpd_handler *h, plumb_httpd **out, char *err,
                               size_t err_cap) {
    *out = NULL;
    if (p->max_connections < 1 || p->max_per_client < 1 || p->headroom < 0 || p->max_header < 64 ||
        !(p->request_timeout_s > 0) || p->port < 0 || p->port > 65535) {
        snprintf(err, err_cap, "invalid HTTP parameters");
        return PLUMB_E_INVALID_ARG;
    }
    plumb_httpd *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, err_cap, "out of memory");
        return PLUMB_E_NOMEM;
    }
    d->p = *p;
    d->h = *h;
    d->listen_fd = d->wake[0] = d->wake[1] = -1;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    plumb_status st = plumb_http_listen(d->p.host, d->p.port, &d->listen_fd, &d->port, err, err_cap);
    if (!st && pipe2(d->wake, O_CLOEXEC | O_NONBLOCK)) {
        snprintf(err, err_cap, "cannot create a pipe: %s", strerror(errno));
        st = PLUMB_E_IO;
    }
    if (!st && pthread_create(&d->acceptor, NULL, accept_main, d)) {
        snprintf(err, err_cap, "cannot start a thread");
        st = PLUMB_E_NOMEM;
    }
    if (st) {
        plumb_httpd_free(d);
        return st;
    }
    d->accepting = true;
    *out = d;
    return PLUMB_OK;
}

int plumb_httpd_port(const plumb_httpd *d) { return d->port; }

void plumb_httpd_drain(plumb_httpd *d) { atomic_store(&d->draining, true); }

void plumb_httpd_stop_accepting(plumb_httpd *d) {
    if (d->accepting) {
        ssize_t w = write(d->wake[1], "x", 1);
        (void)w;
        pthread_join(d->acceptor, NULL);
        d->accepting = false;
    }
    if (d->listen_fd >= 0) close(d->listen_fd); /* new connections are refused from here on */
    d->listen_fd = -1;
}

bool plumb_httpd_wait_idle(plumb_httpd *d, double grace_s) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double whole = (double)until.tv_nsec * 1e-9 + grace_s;
    until.tv_sec += (time_t)whole;
    until.tv_nsec = (long)((whole - (double)(time_t)whole) * 1e9);
    pthread_mutex_lock(&d->mu);
    while (d->n_busy > 0)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &until) != 0) break;
    bool idle = d->n_busy == 0;
    pthread_mutex_unlock(&d->mu);
    return idle;
}

void plumb_httpd_free(plumb_httpd *d) {
    if (!d) return;
    plumb_httpd_drain(d);
    plumb_httpd_stop_accepting(d);
    pthread_mutex_lock(&d->mu);
    for (plumb_http_conn *c = d->conns; c; c = c->next) shutdown(c->fd, SHUT_RDWR);
    while (d->n_conns > 0) pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < 2; i++)
        if (d->wake[i] >= 0) close(d->wake[i]);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
