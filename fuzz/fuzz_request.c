/* fuzz_request.c — libFuzzer harness for the server's request parsing (src/server/request.c):
 * arbitrary bytes as the body of a chat completion, a completion, /tokenize and /detokenize.
 * Whatever parses is walked field by field, so a bad pointer or length behind the parser's
 * checks shows up under ASan. */
#include "server/request.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    volatile size_t sink = 0;
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
        sink += (size_t)r.max_tokens + r.stream + r.include_usage + (size_t)r.sampling.top_k;
        plumb_srv_request_free(&r);
    }
    char *content;
    size_t len;
    bool add_special;
    if (plumb_srv_parse_tokenize(body, size, &content, &len, &add_special, &err) == PLUMB_OK) {
        sink += len + (content[len] == '\0') + add_special;
        free(content);
    }
    int32_t *ids;
    size_t n;
    if (plumb_srv_parse_detokenize(body, size, &ids, &n, &err) == PLUMB_OK) {
        for (size_t i = 0; i < n; i++) sink += (size_t)ids[i];
        free(ids);
    }
    (void)sink;
    return 0;
}
