/* request.h — parsing and validation of the JSON bodies the server accepts: OpenAI chat
 * completions and completions, /tokenize and /detokenize. Pure functions over bytes (no
 * model, no I/O), so they can be fuzzed alone. Every failure names the offending field. */
#ifndef PLUMB_SERVER_REQUEST_H
#define PLUMB_SERVER_REQUEST_H

#include "plumb.h"

#define PLUMB_SRV_MAX_STOPS 16
#define PLUMB_SRV_MAX_STOP_LEN 256
#define PLUMB_SRV_MAX_MESSAGES 4096
#define PLUMB_SRV_MAX_IDS (1 << 20)
#define PLUMB_SRV_MAX_LOGPROBS 20
#define PLUMB_SRV_MAX_N 16

typedef enum plumb_srv_kind {
    PLUMB_SRV_CHAT,       /* POST /v1/chat/completions */
    PLUMB_SRV_COMPLETION, /* POST /v1/completions */
    PLUMB_SRV_INFILL,     /* POST /infill (llama-server's fill-in-the-middle) */
} plumb_srv_kind;

/* A validated generation request. Strings and arrays are owned (plumb_srv_request_free). */
typedef enum plumb_srv_tool_choice {
    PLUMB_SRV_TOOLS_AUTO,     /* the model may call a tool */
    PLUMB_SRV_TOOLS_NONE,     /* the model answers in text; tools are only shown to it */
    PLUMB_SRV_TOOLS_REQUIRED, /* the model must call one or more tools */
    PLUMB_SRV_TOOLS_NAMED,    /* the model must call tool_name */
} plumb_srv_tool_choice;

typedef struct plumb_srv_request {
    plumb_srv_kind kind;
    plumb_chat_message *msgs; /* chat: [n_msgs], roles "system", "user", "assistant" or "tool" */
    size_t n_msgs;
    char *messages_json; /* chat: the messages as a chat template sees them: role, content (null
                            for an assistant turn that only calls tools), tool_calls (arguments
                            as JSON values), tool_call_id, name */
    bool has_tool_turns; /* some message calls a tool or answers a call */
    char *tools_json;    /* chat: the tool definitions (a JSON array of {"type": "function",
                            "function": {name, description, parameters}}), or NULL */
    plumb_srv_tool_choice tool_choice;
    char tool_name[72];       /* PLUMB_SRV_TOOLS_NAMED: the function */
    bool parallel_tool_calls; /* default true */
    char *grammar;            /* GBNF the output must match (from grammar, json_schema or
                                 response_format), or NULL */
    const char *grammar_param; /* the field it came from */
    char *prompt;       /* completion: prompt text, or NULL when given as token ids; infill:
                           the text before the cursor (input_prefix, then prompt) */
    char *suffix;       /* completion, infill: the text after the cursor (fill in the middle), or NULL */
    char **extra;       /* infill: other files for context, "filename\ntext" each [n_extra] */
    size_t n_extra;
    int32_t *ids;       /* completion: prompt token ids [n_ids] (range-checked by the caller) */
    size_t n_ids;
    int32_t max_tokens; /* -1: not given */
    int32_t n;          /* choices, 1 to PLUMB_SRV_MAX_N */
    plumb_sampler_params sampling;
    bool seed_given;
    char *stops[PLUMB_SRV_MAX_STOPS];
    int n_stops;
    bool stream, include_usage;
    bool parse_special; /* the client's text may hold control tokens (default: it is text) */
    bool timings;       /* the answer carries llama-server's "timings" object (default true) */
    int32_t logprobs;   /* -1: none; else each generated token's log probability and that many
                           most likely alternatives (chat: logprobs + top_logprobs; completions:
                           logprobs), at most PLUMB_SRV_MAX_LOGPROBS */
} plumb_srv_request;

/* A failure: the message for the client, and the field it is about ("" for the body). */
typedef struct plumb_srv_error {
    char message[256];
    char param[64];
} plumb_srv_error;

/* Every body must be a UTF-8 JSON object with no key twice in one object and no string
 * holding U+0000; otherwise PLUMB_E_INVALID_ARG. */
/* Parses body[0..len) (need not be NUL-terminated) as a request of `kind`. max_tokens over
 * max_tokens_cap is refused. PLUMB_E_INVALID_ARG with *err filled for a bad body,
 * PLUMB_E_NOMEM; on failure *out holds nothing to free. */
plumb_status plumb_srv_request_parse(const char *body, size_t len, plumb_srv_kind kind, int32_t max_tokens_cap,
                                     plumb_srv_request *out, plumb_srv_error *err);
void plumb_srv_request_free(plumb_srv_request *r);

/* /tokenize: {"content": string, "add_special": bool (default false), "parse_special": bool
 * (default true)}. *content is malloc'd (bytes [0..*content_len), NUL-terminated). */
plumb_status plumb_srv_parse_tokenize(const char *body, size_t len, char **content, size_t *content_len,
                                      bool *add_special, bool *parse_special, plumb_srv_error *err);
/* /detokenize: {"tokens": [int, ...]}. *ids is malloc'd (may be NULL when *n is 0). */
plumb_status plumb_srv_parse_detokenize(const char *body, size_t len, int32_t **ids, size_t *n,
                                        plumb_srv_error *err);

/* The body's "model" (a string, null or absent) into out[0..cap) ("" when null, absent or
 * empty). PLUMB_E_INVALID_ARG with *err for a bad body or a "model" that is not a string,
 * PLUMB_E_RANGE when it is cap bytes or longer, PLUMB_E_NOMEM. */
plumb_status plumb_srv_parse_model(const char *body, size_t len, char *out, size_t cap, plumb_srv_error *err);

/* POST /v1/embeddings: "input" (a string, an array of strings, an array of token ids, or an
 * array of arrays of ids), "encoding_format" ("float" or "base64"), "dimensions" (checked by
 * the caller against the model), "model". Each input is texts[i] (NULL for ids) or
 * ids[i][0..n_ids[i]). */
typedef struct plumb_srv_embed_request {
    size_t n;
    char **texts;
    int32_t **ids;
    size_t *n_ids;
    bool base64;
    int32_t dimensions; /* -1: not given */
} plumb_srv_embed_request;

#define PLUMB_SRV_MAX_INPUTS 2048

plumb_status plumb_srv_parse_embeddings(const char *body, size_t len, plumb_srv_embed_request *out, plumb_srv_error *err);
void plumb_srv_embed_request_free(plumb_srv_embed_request *r);

/* POST /apply-template: a chat request's messages (as plumb_srv_request_parse with kind chat)
 * and optional "tools", an array passed to the template as JSON (*tools_json malloc'd, NULL
 * when absent). */
plumb_status plumb_srv_parse_apply_template(const char *body, size_t len, plumb_srv_request *out, char **tools_json,
                                            plumb_srv_error *err);

#endif
