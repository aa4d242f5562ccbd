/* api.h — what the files of the OpenAI API share (http.c: routing, endpoints and prompts;
 * answer.c: generation answers, whole or streamed): the server, its routes, one request being
 * answered, and the JSON error and response helpers. */
#ifndef PLUMB_SERVER_API_H
#define PLUMB_SERVER_API_H

#include "server.h"

#include "agent.h"
#include "httpd.h"
#include "metrics.h"
#include "request.h"
#include "sched.h"
#include "tools.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <time.h>

#define POLL_MS 50 /* how often a waiting connection looks for its client having gone */

struct plumb_server {
    plumb_server_params p;
    char alias[256]; /* the id of the model of model_path ("" when none) */
    char key[513]; /* the API key, "" when none is needed */
    plumb_httpd *httpd;
    plumb_srv_metrics metrics;
    plumb_srv_sched *sched;
    plumb_srv_agent *agent;  /* NULL without --agent-port */
    atomic_bool draining;    /* plumb_server_shutdown has begun */
    atomic_uint_fast64_t next_id;
    time_t started; /* the "created" time of the model */
};

typedef enum route {
    R_NONE,
    R_PAGE,
    R_HEALTH,
    R_METRICS,
    R_MODELS,
    R_CHAT,
    R_COMPLETIONS,
    R_TOKENIZE,
    R_DETOKENIZE,
    R_APPLY_TEMPLATE,
    R_MODEL,
    R_PROPS,
    R_SLOTS,
    R_INFILL,
    R_EMBEDDINGS,
} route;

struct route_def {
    const char *path, *method;
    route r;
    unsigned flags;
};

/* One choice of a generation (n > 1 gives several): its job and what has been sent of it. */
typedef struct api_choice {
    plumb_srv_job *job;
    size_t sent;               /* text bytes read from the job */
    char *held;                /* with tools: text not yet known to be content rather than a call */
    size_t held_len, held_cap;
    size_t lp_sent, lp_offset; /* log-probability records sent, and the text offset of the next */
    int call_state;            /* streaming Hermes tool calls (answer.c) */
    bool call_tagged;          /* the call in progress has <tool_call> tags */
    int n_calls;               /* calls streamed so far */
    plumb_srv_json_scan scan;  /* through the arguments of the call in progress */
    bool done;
    plumb_srv_progress pr;     /* once done */
} api_choice;

/* One request being answered. */
typedef struct conn {
    plumb_server_t *srv;
    plumb_http_conn *hc;
    const plumb_http_request *req;
    const struct route_def *route;
    double t0;
    /* generation */
    api_choice ch[PLUMB_SRV_MAX_N];
    int n_ch;
    plumb_srv_kind kind;
    bool include_usage;
    bool timings;                /* add "timings" to the answer */
    bool logprobs;               /* add the tokens' log probabilities */
    bool has_progress;           /* progress holds the finished job's counts and times (for the log) */
    plumb_srv_progress progress;
    bool tools;                  /* the answer may call tools: split it into text and calls */
    plumb_srv_tool_syntax syntax; /* ... written in this syntax */
    char id[48];
    long long created;
    /* the model: with a catalog, this request's lease on it (NULL until granted), ended when
     * the request is answered */
    plumb_srv_lease *lease;
    char model_id[512]; /* the model answering, as responses name it ("": the alias) */
} conn;

/* The id of the model answering c. */
static inline const char *plumb_srv_api_model_id(const conn *c) { return c->model_id[0] ? c->model_id : c->srv->alias; }

/* One access-log line for the request (--log). */
void plumb_srv_api_log(const conn *c, const char *outcome);
/* Sends j (deleted) as the JSON answer. */
bool plumb_srv_api_send_json(conn *c, int status, cJSON *j);
/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
cJSON *plumb_srv_api_error_json(int status, const char *message, const char *param, const char *code);
bool plumb_srv_api_send_error(conn *c, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The answer to a generation request whose jobs run (c->ch[0..n_ch)): whole, or streamed as
 * server-sent events. false only when the client went away. */
bool plumb_srv_answer_whole(conn *c);
bool plumb_srv_answer_stream(conn *c);

#endif
