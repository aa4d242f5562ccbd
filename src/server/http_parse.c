/* http_parse.c — strict HTTP/1.1 request framing (see http_parse.h). picohttpparser splits
 * the request line and the fields and rejects control characters; everything that decides
 * what the message means (RFC 9112 sections 3.2, 6.1-6.3, 9.3 and RFC 9110 sections 8.6,
 * 10.1.1) is checked here. */
#include "http_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, struct phr_header *headers, size_t *num_headers,
                      size_t last_len);
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

static int refuse(plumb_http_refusal *why, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->message, sizeof why->message, fmt, ap);
    va_end(ap);
    why->status = status;
    why->code = code;
    return -1;
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i])) return false;
    return true;
}

static bool name_is(const struct phr_header *f, const char *name) {
    return f->name && f->name_len == strlen(name) && strncasecmp(f->name, name, f->name_len) == 0;
}

const char *plumb_http_header(const plumb_http_head *h, const char *name, size_t *len) {
    for (size_t i = 0; i < h->n_headers; i++)
        if (name_is(&h->headers[i], name)) {
            if (len) *len = h->headers[i].value_len;
            return h->headers[i].value;
        }
    return NULL;
}

/* Calls fn for each comma-separated element of a list field value, with surrounding white
 * space removed; empty elements are skipped (RFC 9110 section 5.6.1). Stops at the first
 * non-zero return. */
static int each_element(const char *v, size_t n, int (*fn)(const char *e, size_t len, void *ctx), void *ctx) {
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',') j++;
        size_t a = i, b = j;
        while (a < b && (v[a] == ' ' || v[a] == '\t')) a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t')) b--;
        if (b > a) {
            int r = fn(v + a, b - a, ctx);
            if (r) return r;
        }
        i = j + 1;
    }
    return 0;
}

typedef struct te_state {
    int n_codings, n_chunked;
    bool chunked_last;
    char unknown[40];
} te_state;

static int te_element(const char *e, size_t len, void *ctx) {
    te_state *t = ctx;
    t->n_codings++;
    t->chunked_last = len == 7 && strncasecmp(e, "chunked", 7) == 0;
    if (t->chunked_last) t->n_chunked++;
    else if (!t->unknown[0]) snprintf(t->unknown, sizeof t->unknown, "%.*s", (int)(len < 32 ? len : 32), e);
    return 0;
}

typedef struct conn_state {
    bool close, keep_alive;
} conn_state;

static int conn_element(const char *e, size_t len, void *ctx) {
    conn_state *c = ctx;
    if (len == 5 && strncasecmp(e, "close", 5) == 0) c->close = true;
    if (len == 10 && strncasecmp(e, "keep-alive", 10) == 0) c->keep_alive = true;
    return 0;
}

/* Content-Length: 1*DIGIT (RFC 9110 section 8.6); *v gets the value, saturated at
 * UINT64_MAX. false when the value is not a number. */
static bool parse_length(const char *s, size_t n, uint64_t *v) {
    if (n == 0) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        unsigned d = (unsigned)(s[i] - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
    }
    *v = x;
    return true;
}

/* The framing fields: Content-Length, Transfer-Encoding, Connection, Expect, Host. */
static int check_fields(plumb_http_head *h, uint64_t max_body, plumb_http_refusal *why) {
    int n_host = 0, n_length = 0;
    bool has_te = false, expect = false;
    te_state te = {0};
    conn_state cs = {0};
    uint64_t length = 0;
    for (size_t i = 0; i < h->n_headers; i++) {
        const struct phr_header *f = &h->headers[i];
        if (!f->name) return refuse(why, 400, "bad_request", "obsolete line folding in a header field is not accepted");
        if (!is_token(f->name, f->name_len)) return refuse(why, 400, "bad_request", "a header field name is not a token");
        if (name_is(f, "Host")) n_host++;
        else if (name_is(f, "Content-Length")) {
            uint64_t v;
            if (!parse_length(f->value, f->value_len, &v))
                return refuse(why, 400, "bad_request", "Content-Length '%.*s' is not a number of bytes",
                              (int)(f->value_len < 40 ? f->value_len : 40), f->value);
            if (n_length++ && v != length)
                return refuse(why, 400, "bad_request", "conflicting Content-Length fields");
            length = v;
        } else if (name_is(f, "Transfer-Encoding")) {
            has_te = true;
            each_element(f->value, f->value_len, te_element, &te);
        } else if (name_is(f, "Connection")) {
            each_element(f->value, f->value_len, conn_element, &cs);
        } else if (name_is(f, "Expect")) {
            if (f->value_len != 12 || strncasecmp(f->value, "100-continue", 12) != 0)
                return refuse(why, 417, "expectation_failed", "only the expectation 100-continue is supported");
            expect = true;
        }
    }
    if (h->minor_version == 1 && n_host != 1)
        return refuse(why, 400, "bad_request", n_host ? "more than one Host field" : "an HTTP/1.1 request needs a Host field");
    if (n_host > 1) return refuse(why, 400, "bad_request", "more than one Host field");
    h->keep_alive = h->minor_version == 1 ? !cs.close : cs.keep_alive && !cs.close;
    h->expect_continue = expect && h->minor_version == 1;
    if (has_te) {
        if (h->minor_version == 0) return refuse(why, 400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request");
        if (n_length) return refuse(why, 400, "bad_request", "both Content-Length and Transfer-Encoding");
        if (te.n_codings == 0) return refuse(why, 400, "bad_request", "an empty Transfer-Encoding");
        if (te.unknown[0])
            return refuse(why, 501, "not_implemented", "the transfer coding '%s' is not supported (only chunked)", te.unknown);
        if (te.n_chunked != 1 || !te.chunked_last)
            return refuse(why, 400, "bad_request", "chunked is applied more than once");
        h->framing = PLUMB_HTTP_BODY_CHUNKED;
        return 0;
    }
    if (n_length && length > max_body)
        return refuse(why, 413, "body_too_large", "the request body is larger than %llu bytes", (unsigned long long)max_body);
    h->framing = n_length && length ? PLUMB_HTTP_BODY_LENGTH : PLUMB_HTTP_BODY_NONE;
    h->content_length = n_length ? length : 0;
    return 0;
}

bool plumb_http_target_path(const plumb_http_head *h, const char **path, size_t *len) {
    const char *t = h->target, *end = t + h->target_len;
    if (h->target_len == 1 && t[0] == '*' && h->method_len == 7 && !memcmp(h->method, "OPTIONS", 7)) {
        if (path) *path = t, *len = 1;
        return true;
    }
    size_t scheme = h->target_len >= 7 && !strncasecmp(t, "http://", 7) ? 7 : h->target_len >= 8 && !strncasecmp(t, "https://", 8) ? 8 : 0;
    if (scheme) { /* absolute-form: the path follows the authority (RFC 9112 section 3.2.2) */
        const char *p = t + scheme;
        while (p < end && *p != '/' && *p != '?') p++;
        if (p == t + scheme) return false; /* no authority */
        if (path) *path = p < end && *p == '/' ? p : "/", *len = p < end && *p == '/' ? (size_t)(end - p) : 1;
        return true;
    }
    if (h->target_len == 0 || t[0] != '/') return false;
    if (path) *path = t, *len = h->target_len;
    return true;
}

int plumb_http_parse_head(const char *buf, size_t len, size_t prev_len, size_t max_header, uint64_t max_body,
                          plumb_http_head *h, plumb_http_refusal *why) {
    memset(h, 0, sizeof *h);
    memset(why, 0, sizeof *why);
    /* a line break before the request line is allowed (RFC 9112 section 2.2) but not a run */
    size_t skip = 0;
    while (skip < len && skip < 4 && (buf[skip] == '\r' || buf[skip] == '\n')) skip++;
    h->n_headers = PLUMB_HTTP_MAX_HEADERS;
    int r = phr_parse_request(buf + skip, len - skip, &h->method, &h->method_len, &h->target, &h->target_len,
                              &h->minor_version, h->headers, &h->n_headers, prev_len > skip ? prev_len - skip : 0);
    if (r == -2) {
        if (len >= max_header) return refuse(why, 431, "header_too_large", "the request head is larger than %zu bytes", max_header);
        return 0;
    }
    if (r < 0) {
        if (h->n_headers == PLUMB_HTTP_MAX_HEADERS)
            return refuse(why, 431, "header_too_large", "more than %d header fields", PLUMB_HTTP_MAX_HEADERS);
        return refuse(why, 400, "bad_request", "the request line or a header field is malformed");
    }
    h->head_len = (size_t)r + skip;
    if (h->head_len > max_header)
        return refuse(why, 431, "header_too_large", "the request head is larger than %zu bytes", max_header);
    if (!is_token(h->method, h->method_len) || h->method_len > 32)
        return refuse(why, 400, "bad_request", "the request method is not a token");
    if (!plumb_http_target_path(h, NULL, NULL))
        return refuse(why, 400, "bad_request", "the request target must be a path, an absolute URI or '*' for OPTIONS");
    return check_fields(h, max_body, why) < 0 ? -1 : 1;
}

void plumb_http_chunked_init(plumb_http_chunked *c, uint64_t max_body) {
    memset(c, 0, sizeof *c);
    c->d.consume_trailer = 1;
    c->max_body = max_body;
}

int plumb_http_chunked_feed(plumb_http_chunked *c, char *body, size_t n, size_t *rest, plumb_http_refusal *why) {
    memset(why, 0, sizeof *why);
    *rest = 0;
    size_t got = n;
    ssize_t r = phr_decode_chunked(&c->d, body + c->decoded, &got);
    if (r == -1) return refuse(why, 400, "bad_request", "the chunked body is malformed");
    c->decoded += got;
    /* a declared chunk counts against the cap before its bytes arrive */
    if (c->decoded > c->max_body || (r == -2 && c->d.bytes_left_in_chunk > c->max_body - c->decoded))
        return refuse(why, 413, "body_too_large", "the request body is larger than %llu bytes",
                      (unsigned long long)c->max_body);
    if (r == -2) return 0;
    *rest = (size_t)r;
    return 1;
}
