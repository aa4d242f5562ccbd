/* http_parse.h — strict HTTP/1.1 request framing (RFC 9112) over bytes, with no I/O, so it
 * can be fuzzed alone: the request line and header fields (tokenized by picohttpparser, from
 * h2o's library), then the checks that decide how long the body is and whether the request
 * can be served at all: exactly one Host, no obsolete line folding, Content-Length values
 * that are digits and agree, only the chunked transfer coding, never both framings, and
 * only the 100-continue expectation. Chunked bodies are decoded in place with a cap. */
#ifndef PLUMB_SERVER_HTTP_PARSE_H
#define PLUMB_SERVER_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PLUMB_HTTP_MAX_HEADERS 64

/* picohttpparser's API (h2o's library exports it without installing its header). */
struct phr_header {
    const char *name; /* NULL for an obsolete folded continuation line */
    size_t name_len;
    const char *value;
    size_t value_len;
};
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer, hex_count, state;
    char reserved[61]; /* room for fields later versions add; zeroed like the rest */
};

typedef enum plumb_http_framing {
    PLUMB_HTTP_BODY_NONE,    /* no body */
    PLUMB_HTTP_BODY_LENGTH,  /* content_length bytes */
    PLUMB_HTTP_BODY_CHUNKED, /* chunked transfer coding */
} plumb_http_framing;

/* A parsed request head. Pointers are into the buffer given to plumb_http_parse_head. */
typedef struct plumb_http_head {
    const char *method, *target;
    size_t method_len, target_len;
    int minor_version; /* HTTP/1.<minor_version>: 0 or 1 */
    struct phr_header headers[PLUMB_HTTP_MAX_HEADERS];
    size_t n_headers;
    size_t head_len; /* bytes of the request line, the fields and the empty line */
    plumb_http_framing framing;
    uint64_t content_length; /* PLUMB_HTTP_BODY_LENGTH */
    bool keep_alive;         /* the client allows another request on the connection */
    bool expect_continue;    /* "Expect: 100-continue" on HTTP/1.1 */
} plumb_http_head;

/* A refusal: the status to answer with, an OpenAI-style error code and a message. */
typedef struct plumb_http_refusal {
    int status;
    const char *code;
    char message[160];
} plumb_http_refusal;

/* Parses the request head at buf[0..len). prev_len: bytes already seen incomplete by the
 * previous call on the same buffer (0 the first time). Returns 1 when the head is complete
 * and acceptable (*h filled), 0 when more bytes are needed, -1 when the request must be
 * refused (*why filled: 400, 413 for a Content-Length over max_body, 417, 431 for a head
 * over max_header or too many fields, 501 for an unsupported transfer coding or method). */
int plumb_http_parse_head(const char *buf, size_t len, size_t prev_len, size_t max_header, uint64_t max_body,
                          plumb_http_head *h, plumb_http_refusal *why);

/* The path of the request target (origin-form as it is; absolute-form from its path on, "/"
 * when it has none; "*" for OPTIONS), into *path / *len when not NULL. false when the
 * target is none of these. */
bool plumb_http_target_path(const plumb_http_head *h, const char **path, size_t *len);

/* The value of the first field named `name` (case-insensitive) and its length; NULL when
 * absent. */
const char *plumb_http_header(const plumb_http_head *h, const char *name, size_t *len);

/* Decoding a chunked body in place: feed each run of received bytes. */
typedef struct plumb_http_chunked {
    struct phr_chunked_decoder d;
    size_t decoded; /* body bytes so far */
    uint64_t max_body;
} plumb_http_chunked;

void plumb_http_chunked_init(plumb_http_chunked *c, uint64_t max_body);
/* Decodes the bytes at body + c->decoded, *n of them (the caller placed them right after
 * the body decoded so far), moving the data down so that body[0..c->decoded) is the body.
 * Returns 0 when more bytes are needed, 1 when the body is complete (*rest bytes after it,
 * starting at body + c->decoded, belong to the next request), -1 for a malformed encoding
 * or a body over max_body (*why filled: 400 or 413). */
int plumb_http_chunked_feed(plumb_http_chunked *c, char *body, size_t n, size_t *rest, plumb_http_refusal *why);

#endif
