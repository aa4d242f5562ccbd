/* fuzz_request.c — libFuzzer harness for what the server parses from a client: the bytes as a
 * whole HTTP/1.1 request (src/server/http_parse.c: request line, fields, framing, a chunked
 * body fed in pieces), then the body (or, when the bytes are no request, all of them) as the
 * JSON of a chat completion, a completion, /tokenize and /detokenize (src/server/request.c).
 * Whatever parses is walked field by field, so a bad pointer or length behind the parsers'
 * checks shows up under ASan. A request with tools also gets its tool-call grammar built in
 * every syntax (src/server/tools.c), which must parse, and the body is split into text and
 * tool calls as if a model had written it. */
#include "server/http_parse.h"
#include "server/request.h"
#include "server/tools.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile size_t sink;

/* The framing of data as a request; the body's bytes into *body (malloc'd) when it has one. */
static void parse_http(const uint8_t *data, size_t size, char **body, size_t *body_len) {
    *body = NULL;
    *body_len = 0;
    plumb_http_head h;
    plumb_http_refusal why;
    /* the head arrives in two pieces, as it may from a socket */
    size_t first = size / 2;
    if (plumb_http_parse_head((const char *)data, first, 0, 4096, 1 << 16, &h, &why) == 0 &&
        plumb_http_parse_head((const char *)data, size, first, 4096, 1 << 16, &h, &why) != 1)
        return;
    if (plumb_http_parse_head((const char *)data, size, 0, 4096, 1 << 16, &h, &why) != 1) {
        sink += strlen(why.message) + (size_t)why.status;
        return;
    }
    for (size_t i = 0; i < h.n_headers; i++) sink += h.headers[i].name_len + h.headers[i].value_len;
    sink += h.method_len + h.target_len + h.keep_alive + h.expect_continue;
    size_t rest = size - h.head_len;
    char *b = malloc(rest + 1);
    if (!b) return;
    memcpy(b, data + h.head_len, rest);
    if (h.framing == PLUMB_HTTP_BODY_LENGTH) {
        if (h.content_length <= rest) *body_len = (size_t)h.content_length;
    } else if (h.framing == PLUMB_HTTP_BODY_CHUNKED) {
        plumb_http_chunked ch;
        plumb_http_chunked_init(&ch, 1 << 16);
        size_t fed = 0, left = 0;
        int r = 0;
        while (fed < rest && r == 0) { /* in pieces of up to 7 bytes */
            size_t n = rest - fed < 7 ? rest - fed : 7;
            memmove(b + ch.decoded, b + fed, n); /* the next raw bytes right after the decoded body */
            r = plumb_http_chunked_feed(&ch, b, n, &left, &why);
            fed += n;
        }
        if (r == 1) *body_len = ch.decoded;
        sink += left;
    }
    *body = b;
}

static void parse_json(const char *body, size_t size) {
    plumb_srv_error err;
    for (int kind = PLUMB_SRV_CHAT; kind <= PLUMB_SRV_COMPLETION; kind++) {
        plumb_srv_request r;
        if (plumb_srv_request_parse(body, size, (plumb_srv_kind)kind, 4096, &r, &err) != PLUMB_OK) {
            sink += strlen(err.message) + strlen(err.param);
            continue;
        }
        for (size_t i = 0; i < r.n_msgs; i++) sink += strlen(r.msgs[i].role) + strlen(r.msgs[i].content);
        if (r.prompt) sink += strlen(r.prompt);
        for (size_t i = 0; i < r.n_ids; i++) sink += (size_t)r.ids[i];
        for (int i = 0; i < r.n_stops; i++) sink += strlen(r.stops[i]);
        sink += (size_t)r.max_tokens + r.stream + r.include_usage + r.parse_special + (size_t)r.sampling.top_k;
        if (r.messages_json) sink += strlen(r.messages_json);
        if (r.grammar) sink += strlen(r.grammar);
        for (int syn = 0; r.tools_json && r.tool_choice != PLUMB_SRV_TOOLS_NONE && syn <= PLUMB_SRV_SYNTAX_GENERIC; syn++) {
            plumb_srv_tool_grammar tg;
            char msg[200];
            if (plumb_srv_tools_grammar((plumb_srv_tool_syntax)syn, &r, &tg, msg, sizeof msg) == PLUMB_OK) {
                plumb_grammar_t *g = NULL;
                plumb_status st = plumb_grammar_parse(tg.gbnf, strlen(tg.gbnf), tg.root, NULL, &g);
                if (st != PLUMB_OK && st != PLUMB_E_RANGE) __builtin_trap(); /* a grammar plumb wrote must parse */
                plumb_grammar_free(g);
                plumb_srv_tool_grammar_free(&tg);
            } else
                sink += strlen(msg);
            char *generic = syn == PLUMB_SRV_SYNTAX_GENERIC ? plumb_srv_tools_generic_messages(&r) : NULL;
            if (generic) sink += strlen(generic);
            free(generic);
        }
        plumb_srv_request_free(&r);
    }
    char *content;
    size_t len;
    bool add_special, parse_special;
    if (plumb_srv_parse_tokenize(body, size, &content, &len, &add_special, &parse_special, &err) == PLUMB_OK) {
        sink += len + (content[len] == '\0') + add_special + parse_special;
        free(content);
    }
    int32_t *ids;
    size_t n;
    if (plumb_srv_parse_detokenize(body, size, &ids, &n, &err) == PLUMB_OK) {
        for (size_t i = 0; i < n; i++) sink += (size_t)ids[i];
        free(ids);
    }
}

/* data as a model's answer, split into text and tool calls in every syntax */
static void parse_answer(const char *data, size_t size) {
    for (int syn = 0; syn <= PLUMB_SRV_SYNTAX_GENERIC; syn++) {
        char *content;
        cJSON *calls;
        if (plumb_srv_tools_parse((plumb_srv_tool_syntax)syn, data, size, &content, &calls) != PLUMB_OK) continue;
        if (content) sink += strlen(content);
        sink += (size_t)cJSON_GetArraySize(calls);
        free(content);
        cJSON_Delete(calls);
        sink += plumb_srv_tools_content_prefix((plumb_srv_tool_syntax)syn, data, size);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *body;
    size_t body_len;
    parse_http(data, size, &body, &body_len);
    if (body) parse_json(body, body_len);
    else parse_json((const char *)data, size);
    parse_answer((const char *)data, size);
    free(body);
    return 0;
}
