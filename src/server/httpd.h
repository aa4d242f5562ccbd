/* httpd.h — the server's HTTP/1.1 transport: a listener, a thread per connection, strict
 * framing (http_parse.h), deadlines and caps. What it guarantees:
 *   - a request's head and body must arrive within request_timeout_s of the connection
 *     becoming ready for it (a trickling client is cut off, 408), and a response write that
 *     makes no progress for request_timeout_s gives up;
 *   - at most max_connections connections, at most max_per_client from one address; past
 *     max_connections, `headroom` more are accepted but marked restricted, so that health
 *     checks and metrics still answer when every ordinary connection is taken;
 *   - a client leaving is only a reset or a failed write: a half-closed connection (the
 *     client shut down its sending side after its request) still gets its answer;
 *   - once draining, kept-alive connections waiting for their next request and those
 *     receiving one are closed at once (the latter answered 503 first), and no connection is
 *     kept alive after its current answer; the listener stays open until
 *     plumb_httpd_stop_accepting, and a connection that has sent nothing yet (one accepted
 *     meanwhile too) is read and answered once: the application refuses its work, a clean
 *     answer rather than a reset for a request already on its way.
 * Errors found by the transport itself go to the handler's on_error, so every answer has
 * the application's shape. */
#ifndef PLUMB_SERVER_HTTPD_H
#define PLUMB_SERVER_HTTPD_H

#include "http_parse.h"
#include "plumb.h"

typedef struct plumb_httpd plumb_httpd;
typedef struct plumb_http_conn plumb_http_conn;

typedef struct plumb_http_request {
    const plumb_http_head *head;
    char method[33];
    const char *path;  /* the target up to '?', NUL-terminated */
    const char *body;  /* NULL in on_head */
    size_t body_len;
    bool restricted;   /* accepted over max_connections: serve only what is cheap */
} plumb_http_request;

typedef struct plumb_httpd_handler {
    void *app;
    /* The head has arrived: answer now (e.g. 401, 404) and the body is not read, or return
     * without answering and on_request follows once the body is in. */
    void (*on_head)(void *app, plumb_http_conn *c, const plumb_http_request *r);
    /* The whole request: answer it (exactly once). */
    void (*on_request)(void *app, plumb_http_conn *c, const plumb_http_request *r);
    /* An error the transport found (bad framing, timeout, too many connections): answer
     * it with status and a body of the application's shape. */
    void (*on_error)(void *app, plumb_http_conn *c, int status, const char *code, const char *message);
} plumb_httpd_handler;

typedef struct plumb_httpd_params {
    const char *host;
    int port;                 /* 0: any free port */
    int32_t max_connections;  /* ordinary connections at most */
    int32_t max_per_client;   /* connections from one address at most */
    int32_t headroom;         /* restricted connections past max_connections */
    size_t max_header, max_body;
    double request_timeout_s; /* receiving a request; a stalled response write */
} plumb_httpd_params;

/* Binds (failing when the address is in use: no port sharing) and starts accepting.
 * PLUMB_E_IO or PLUMB_E_INVALID_ARG with the reason in err[0..err_cap). */
plumb_status plumb_httpd_start(const plumb_httpd_params *p, const plumb_httpd_handler *h, plumb_httpd **out, char *err,
                               size_t err_cap);
int plumb_httpd_port(const plumb_httpd *d);
/* Starts draining: closes the connections that are not answering a request (within 100 ms),
 * keeps no connection alive after its answer, and answers each connection accepted from now on
 * once. Still accepting: see plumb_httpd_stop_accepting. */
void plumb_httpd_drain(plumb_httpd *d);
/* Closes the listener: connections are refused from here on. Idempotent. */
void plumb_httpd_stop_accepting(plumb_httpd *d);
/* Waits until no request is being answered, at most grace_s seconds; true when none is. */
bool plumb_httpd_wait_idle(plumb_httpd *d, double grace_s);
/* Closes every connection's socket (answers in progress fail), waits for the connection
 * threads to end and frees d. */
void plumb_httpd_free(plumb_httpd *d);

/* Binds a non-blocking listening socket to host:port (host NULL: 127.0.0.1; port 0: any free
 * one): *fd is the caller's to close, *bound the port it got. No port sharing: SO_REUSEADDR
 * only. PLUMB_E_IO or PLUMB_E_INVALID_ARG (a host that does not resolve) with the reason in
 * err[0..err_cap). */
plumb_status plumb_http_listen(const char *host, int port, int *fd, int *bound, char *err, size_t err_cap);

/* Answers. extra_headers: "Name: value\r\n" lines or NULL. Each returns false when the
 * client could not be written to (it reset the connection or stopped reading). */
bool plumb_http_respond(plumb_http_conn *c, int status, const char *content_type, const char *extra_headers,
                        const void *body, size_t len);
/* A streamed answer: chunked on HTTP/1.1, delimited by closing the connection on HTTP/1.0. */
bool plumb_http_stream_start(plumb_http_conn *c, int status, const char *content_type, const char *extra_headers);
bool plumb_http_stream_send(plumb_http_conn *c, const void *data, size_t len);
bool plumb_http_stream_end(plumb_http_conn *c);
bool plumb_http_responded(const plumb_http_conn *c);
/* The client reset the connection (or it was shut down): it will not read an answer. */
bool plumb_http_client_gone(plumb_http_conn *c);
/* The server is draining (answers carry Connection: close). */
bool plumb_http_draining(const plumb_http_conn *c);
/* The client's address, printable. */
const char *plumb_http_peer(const plumb_http_conn *c);

#endif
