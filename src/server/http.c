/* http.c — the HTTP side of the server: libmicrohttpd with a thread per connection, request
 * routing, Bearer auth, body caps, OpenAI request/response JSON (cJSON), server-sent event
 * streams, client-disconnect detection and graceful shutdown. Connection threads parse,
 * tokenize (the vocabulary is immutable, so safe from any thread) and hand jobs to the
 * scheduler; they never run the model. */
#include "server.h"

#include "gen.h"
#include "metrics.h"
#include "request.h"
#include "sched.h"

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The chat page, generated from page/index.html at build time (page_data.c). */
extern const unsigned char plumb_srv_page_index[];
extern const size_t plumb_srv_page_index_len;

#define POLL_MS 50 /* how often a waiting connection looks for its client having gone */

struct plumb_server {
    plumb_server_params p;
    char alias[256];
    char auth[520]; /* "Bearer <key>", or "" when no key is needed */
    struct MHD_Daemon *d;
    int port;
    plumb_srv_metrics metrics;
    plumb_srv_sched *sched;
    pthread_mutex_t mu;
    pthread_cond_t idle_cv; /* signalled when in_flight drops to 0 */
    int in_flight;          /* requests begun and not completed */
    bool draining;
    atomic_uint_fast64_t next_id;
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
} route;

typedef enum stream_phase { PH_START, PH_BODY, PH_END } stream_phase;

/* One request on a connection (MHD's con_cls). */
typedef struct conn {
    plumb_server_t *srv;
    struct MHD_Connection *mc;
    int fd;
    route r;
    char *body; /* [body_cap] */
    size_t body_len, body_cap;
    bool body_too_large, responded;
    double t0;
    /* generation */
    plumb_srv_job *job;
    plumb_srv_kind kind;
    bool include_usage;
    char id[48];
    long long created;
    /* streaming */
    stream_phase phase;
    size_t sent_text;   /* bytes of the job's text already sent */
    char *out;          /* formatted bytes not yet handed to MHD: out[out_pos..out_len) */
    size_t out_len, out_pos;
} conn;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The client closed its end (or the socket failed). */
static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return true;
    char b;
    return (p.revents & POLLIN) && recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* ---- responses -------------------------------------------------------------------------- */

static enum MHD_Result queue(conn *c, unsigned status, struct MHD_Response *resp, const char *content_type) {
    if (!resp) return MHD_NO;
    if (content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (c->srv->draining) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c->mc, status, resp);
    MHD_destroy_response(resp);
    c->responded = true;
    plumb_srv_metrics_request(&c->srv->metrics, (int)status);
    if (c->srv->p.log_requests)
        fprintf(stderr, "plumb serve: %s %u\n", c->r == R_CHAT ? "chat" : c->r == R_COMPLETIONS ? "completion" : "request",
                status);
    return ok;
}

/* Sends text (copied). */
static enum MHD_Result send_text(conn *c, unsigned status, const char *text, size_t len, const char *type) {
    return queue(c, status, MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY), type);
}

/* Sends j as JSON and deletes it. */
static enum MHD_Result send_json(conn *c, unsigned status, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) return send_text(c, 500, "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}", 58,
                             "application/json");
    enum MHD_Result r = send_text(c, status, s, strlen(s), "application/json");
    free(s);
    return r;
}

static const char *error_type(unsigned status) {
    switch (status) {
    case 400: case 413: case 431: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: case 405: return "not_found_error";
    case 503: return "unavailable_error";
    case 504: return "timeout_error";
    default: return "server_error";
    }
}

/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
static cJSON *error_json(unsigned status, const char *message, const char *param, const char *code) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", error_type(status));
    if (param && *param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    return root;
}

static enum MHD_Result send_error(conn *c, unsigned status, const char *param, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_json(c, status, error_json(status, msg, param, code));
}

/* ---- simple endpoints ------------------------------------------------------------------- */

static enum MHD_Result handle_health(conn *c) {
    plumb_srv_state st = plumb_srv_sched_state(c->srv->sched);
    const char *body = st == PLUMB_SRV_READY ? "{\"status\":\"ok\"}" : st == PLUMB_SRV_LOADING ? "{\"status\":\"loading\"}"
                                                                                              : "{\"status\":\"error\"}";
    return send_text(c, st == PLUMB_SRV_READY ? 200 : 503, body, strlen(body), "application/json");
}

static enum MHD_Result handle_metrics(conn *c) {
    char *t = plumb_srv_metrics_render(&c->srv->metrics);
    if (!t) return send_error(c, 500, NULL, NULL, "out of memory");
    enum MHD_Result r = send_text(c, 200, t, strlen(t), "text/plain; version=0.0.4");
    free(t);
    return r;
}

static enum MHD_Result handle_models(conn *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", c->srv->alias);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)time(NULL));
    cJSON_AddStringToObject(m, "owned_by", "plumb");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "data"), m);
    return send_json(c, 200, root);
}

static enum MHD_Result handle_tokenize(conn *c) {
    char *content;
    size_t len;
    bool add_special;
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_tokenize(c->body, c->body_len, &content, &len, &add_special, &err);
    if (st == PLUMB_E_NOMEM) return send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return send_error(c, 400, err.param, NULL, "%s", err.message);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(c->srv->sched));
    size_t cap = len + 8, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    st = ids ? plumb_tokenize(v, content, len, add_special, true, ids, cap, &n) : PLUMB_E_NOMEM;
    free(content);
    if (st) {
        free(ids);
        return send_error(c, 500, NULL, NULL, "tokenization failed: %s", plumb_status_message(st));
    }
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "tokens");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    free(ids);
    return send_json(c, 200, root);
}

static enum MHD_Result handle_detokenize(conn *c) {
    int32_t *ids;
    size_t n;
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_detokenize(c->body, c->body_len, &ids, &n, &err);
    if (st == PLUMB_E_NOMEM) return send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return send_error(c, 400, err.param, NULL, "%s", err.message);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(c->srv->sched));
    const int32_t n_vocab = plumb_vocab_n_tokens(v);
    size_t cap = n * 8 + 16, len = 0;
    char *text = malloc(cap);
    plumb_detok d = {0};
    for (size_t i = 0; text && i < n; i++) {
        if (ids[i] >= n_vocab) {
            free(text);
            free(ids);
            return send_error(c, 400, "tokens", NULL, "'tokens[%zu]' is %d, past the vocabulary (%d tokens)", i,
                              (int)ids[i], (int)n_vocab);
        }
        size_t need;
        while ((need = plumb_detok_push(v, &d, ids[i], text + len, cap - len)) > cap - len) {
            char *grown = realloc(text, (cap = (cap + need) * 2));
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
        }
        if (text) len += need;
    }
    free(ids);
    if (text && cap - len < 4) {
        char *grown = realloc(text, cap + 4);
        if (!grown) free(text);
        text = grown;
        cap += 4;
    }
    if (!text) return send_error(c, 500, NULL, NULL, "out of memory");
    len += plumb_detok_flush(&d, text + len, cap - len);
    cJSON *root = cJSON_CreateObject();
    cJSON *s = cJSON_CreateString("");
    /* the text may hold NUL bytes: cJSON strings end at NUL, so set it through a copy */
    free(s->valuestring);
    s->valuestring = text;
    text[len] = '\0';
    cJSON_AddItemToObject(root, "content", s);
    return send_json(c, 200, root);
}

/* ---- generation ------------------------------------------------------------------------- */

static void add_usage(cJSON *obj, const plumb_srv_progress *pr) {
    cJSON *u = cJSON_AddObjectToObject(obj, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", pr->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", pr->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", pr->n_prompt + pr->n_gen);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "prompt_tokens_details"), "cached_tokens", pr->n_cached);
}

/* {"id", "object", "created", "model"} of a response or chunk. */
static cJSON *response_base(const conn *c, const char *object) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", c->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)c->created);
    cJSON_AddStringToObject(root, "model", c->srv->alias);
    cJSON_AddStringToObject(root, "system_fingerprint", "plumb-" PLUMB_VERSION_STRING);
    return root;
}

/* A choice carrying text (delta or whole) and a finish reason (NULL: null). */
static cJSON *choice(const conn *c, bool chunk, const char *text, const char *role, const char *finish_reason) {
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    if (c->kind == PLUMB_SRV_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(ch, chunk ? "delta" : "message");
        if (role) cJSON_AddStringToObject(m, "role", role);
        if (text) cJSON_AddStringToObject(m, "content", text);
    } else {
        cJSON_AddStringToObject(ch, "text", text ? text : "");
        cJSON_AddNullToObject(ch, "logprobs");
    }
    if (finish_reason) cJSON_AddStringToObject(ch, "finish_reason", finish_reason);
    else cJSON_AddNullToObject(ch, "finish_reason");
    return ch;
}

static cJSON *chunk(const conn *c, const char *text, const char *role, const char *finish_reason) {
    cJSON *root = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice(c, true, text, role, finish_reason));
    if (c->include_usage) cJSON_AddNullToObject(root, "usage");
    return root;
}

/* Appends "data: <json>\n\n" (j deleted) or "data: [DONE]\n\n" (j NULL) to c->out. */
static bool out_event(conn *c, cJSON *j, bool done) {
    char *s = done ? NULL : cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!done && !s) return false;
    const char *payload = done ? "[DONE]" : s;
    size_t n = strlen(payload) + 8;
    char *grown = realloc(c->out, c->out_len + n + 1);
    if (!grown) {
        free(s);
        return false;
    }
    c->out = grown;
    c->out_len += (size_t)snprintf(c->out + c->out_len, n + 1, "data: %s\n\n", payload);
    free(s);
    return true;
}

/* MHD's content reader for a streamed response: hands out formatted events, waiting for the
 * job's next text (and watching for the client leaving) when none is ready. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    conn *c = cls;
    plumb_srv_sched *s = c->srv->sched;
    for (;;) {
        if (c->out_pos < c->out_len) {
            size_t n = c->out_len - c->out_pos < max ? c->out_len - c->out_pos : max;
            memcpy(buf, c->out + c->out_pos, n);
            c->out_pos += n;
            if (c->out_pos == c->out_len) c->out_pos = c->out_len = 0;
            return (ssize_t)n;
        }
        if (c->phase == PH_END) return MHD_CONTENT_READER_END_OF_STREAM;
        if (c->phase == PH_START) {
            c->phase = PH_BODY;
            if (c->kind == PLUMB_SRV_CHAT && !out_event(c, chunk(c, "", "assistant", NULL), false))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        char *text;
        size_t len;
        plumb_srv_progress pr;
        if (plumb_srv_job_poll(s, c->job, c->sent_text, POLL_MS, &text, &len, &pr)) return MHD_CONTENT_READER_END_WITH_ERROR;
        bool ok = true;
        if (text) {
            ok = out_event(c, chunk(c, text, NULL, NULL), false);
            c->sent_text += len;
            free(text);
        } else if (pr.done) {
            if (pr.error_status) {
                ok = out_event(c, error_json((unsigned)pr.error_status, pr.error_message, NULL, NULL), false);
            } else {
                ok = out_event(c, chunk(c, NULL, NULL, pr.finish_reason), false);
                if (ok && c->include_usage) {
                    cJSON *u = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion.chunk" : "text_completion");
                    cJSON_AddArrayToObject(u, "choices");
                    add_usage(u, &pr);
                    ok = out_event(c, u, false);
                }
            }
            ok = ok && out_event(c, NULL, true);
            c->phase = PH_END;
        } else if (client_gone(c->fd)) {
            plumb_srv_job_cancel(s, c->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!ok) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static enum MHD_Result finish_whole(conn *c) {
    plumb_srv_sched *s = c->srv->sched;
    char *text;
    size_t len;
    plumb_srv_progress pr;
    for (;;) { /* wait for the end, watching the client */
        if (plumb_srv_job_poll(s, c->job, (size_t)-1, POLL_MS, &text, &len, &pr)) return MHD_NO;
        if (pr.done) break;
        if (client_gone(c->fd)) {
            plumb_srv_job_cancel(s, c->job);
            return MHD_NO;
        }
    }
    if (pr.error_status) return send_json(c, (unsigned)pr.error_status, error_json((unsigned)pr.error_status, pr.error_message, NULL, NULL));
    if (plumb_srv_job_poll(s, c->job, 0, 0, &text, &len, &pr)) return send_error(c, 500, NULL, NULL, "out of memory");
    cJSON *root = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion" : "text_completion");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"),
                         choice(c, false, text ? text : "", c->kind == PLUMB_SRV_CHAT ? "assistant" : NULL, pr.finish_reason));
    free(text);
    add_usage(root, &pr);
    return send_json(c, 200, root);
}

/* Tokenizes the request's prompt into *ids (malloc'd). PLUMB_E_INVALID_ARG is the client's
 * fault: msg says why and *param names the field. */
static plumb_status request_tokens(conn *c, const plumb_srv_request *r, int32_t **ids, size_t *n, const char **param,
                                   char *msg, size_t msg_cap) {
    const plumb_model_t *m = plumb_srv_sched_model(c->srv->sched);
    const plumb_vocab_t *v = plumb_model_vocab(m);
    *ids = NULL;
    *n = 0;
    *param = r->kind == PLUMB_SRV_CHAT ? "messages" : "prompt";
    if (r->kind == PLUMB_SRV_COMPLETION && !r->prompt) {
        const int32_t n_vocab = plumb_vocab_n_tokens(v);
        for (size_t i = 0; i < r->n_ids; i++)
            if (r->ids[i] >= n_vocab) {
                snprintf(msg, msg_cap, "'prompt[%zu]' is %d, past the vocabulary (%d tokens)", i, (int)r->ids[i], (int)n_vocab);
                return PLUMB_E_INVALID_ARG;
            }
        if (!(*ids = malloc(r->n_ids * sizeof **ids))) return PLUMB_E_NOMEM;
        memcpy(*ids, r->ids, r->n_ids * sizeof **ids);
        *n = r->n_ids;
        return PLUMB_OK;
    }
    if (r->kind == PLUMB_SRV_COMPLETION) return plumb_gen_tokenize(v, r->prompt, strlen(r->prompt), true, ids, n);
    plumb_chat_format f = plumb_srv_sched_chat_format(c->srv->sched);
    if (f == PLUMB_CHAT_UNKNOWN) {
        snprintf(msg, msg_cap, "the model has no chat format plumb knows; use /v1/completions or start the server with --chat-format");
        return PLUMB_E_INVALID_ARG;
    }
    char *text = NULL;
    size_t len;
    plumb_status st = plumb_chat_apply(f, r->msgs, r->n_msgs, true, true, &text, &len);
    if (st == PLUMB_E_INVALID_ARG) {
        snprintf(msg, msg_cap, "%s", plumb_last_error());
        return st;
    }
    if (st) return st;
    st = plumb_gen_tokenize(v, text, len, false, ids, n); /* the formatted text carries its BOS */
    free(text);
    return st;
}

static enum MHD_Result handle_generate(conn *c) {
    plumb_server_t *srv = c->srv;
    const int32_t n_ctx = plumb_srv_sched_n_ctx(srv->sched);
    plumb_srv_request r;
    plumb_srv_error err;
    c->kind = c->r == R_CHAT ? PLUMB_SRV_CHAT : PLUMB_SRV_COMPLETION;
    plumb_status st = plumb_srv_request_parse(c->body, c->body_len, c->kind, n_ctx, &r, &err);
    if (st == PLUMB_E_NOMEM) return send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return send_error(c, 400, err.param, NULL, "%s", err.message);
    int32_t *ids;
    size_t n;
    const char *param;
    char msg[256] = "";
    st = request_tokens(c, &r, &ids, &n, &param, msg, sizeof msg);
    enum MHD_Result res;
    if (st == PLUMB_E_INVALID_ARG) {
        res = send_error(c, 400, param, NULL, "%s", msg);
        goto out;
    }
    if (st) {
        res = send_error(c, 500, NULL, NULL, "cannot prepare the prompt: %s", plumb_status_message(st));
        goto out;
    }
    if (n == 0) {
        res = send_error(c, 400, param, NULL, "the prompt is empty");
        goto out;
    }
    if (n >= (size_t)n_ctx) {
        res = send_error(c, 400, param, "context_length_exceeded",
                         "This model's maximum context length is %d tokens, but the prompt has %zu tokens; "
                         "shorten the prompt or start the server with a larger --ctx-size", (int)n_ctx, n);
        goto out;
    }
    if (!r.seed_given) r.sampling.seed = (uint64_t)time(NULL) * 6364136223846793005ull + atomic_fetch_add(&srv->next_id, 1);
    st = plumb_srv_job_create(ids, n, &r, srv->p.timeout_s, &c->job);
    if (!st) st = plumb_srv_sched_submit(srv->sched, c->job);
    if (st == PLUMB_E_RANGE) {
        res = send_error(c, 503, NULL, "server_busy", "all %d slots are busy and the queue is full; retry later",
                         (int)srv->p.n_parallel);
        goto out;
    }
    if (st == PLUMB_E_UNSUPPORTED) {
        res = send_error(c, 503, NULL, NULL, "the server is not accepting requests (loading or shutting down)");
        goto out;
    }
    if (st) {
        res = send_error(c, 500, NULL, NULL, "cannot queue the request: %s", plumb_status_message(st));
        goto out;
    }
    snprintf(c->id, sizeof c->id, "%s-%llx%08llx", c->kind == PLUMB_SRV_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)time(NULL), (unsigned long long)atomic_fetch_add(&srv->next_id, 1));
    c->created = (long long)time(NULL);
    c->include_usage = r.include_usage;
    if (!r.stream) {
        res = finish_whole(c);
        goto out;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, c, NULL);
    if (resp) MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    res = queue(c, 200, resp, "text/event-stream");
out:
    free(ids);
    plumb_srv_request_free(&r);
    return res;
}

/* ---- routing ---------------------------------------------------------------------------- */

static route find_route(const char *url, const char **method_needed) {
    static const struct {
        const char *url, *method;
        route r;
    } routes[] = {{"/", "GET", R_PAGE},
                  {"/index.html", "GET", R_PAGE},
                  {"/health", "GET", R_HEALTH},
                  {"/metrics", "GET", R_METRICS},
                  {"/v1/models", "GET", R_MODELS},
                  {"/v1/chat/completions", "POST", R_CHAT},
                  {"/v1/completions", "POST", R_COMPLETIONS},
                  {"/tokenize", "POST", R_TOKENIZE},
                  {"/detokenize", "POST", R_DETOKENIZE}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(url, routes[i].url)) {
            *method_needed = routes[i].method;
            return routes[i].r;
        }
    *method_needed = NULL;
    return R_NONE;
}

/* Compares without leaking where the first difference is. */
static bool same_secret(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

/* Checks that can answer before the body is read: route, method, auth, readiness, size. */
static bool early_reply(conn *c, const char *url, const char *method, enum MHD_Result *res) {
    plumb_server_t *srv = c->srv;
    const char *needed;
    c->r = find_route(url, &needed);
    if (c->r == R_NONE) {
        *res = send_error(c, 404, NULL, "not_found", "no such endpoint: %s %.200s", method, url);
        return true;
    }
    if (strcmp(method, needed) != 0 && !(c->r != R_CHAT && c->r != R_COMPLETIONS && c->r != R_TOKENIZE &&
                                         c->r != R_DETOKENIZE && !strcmp(method, "HEAD"))) {
        *res = send_error(c, 405, NULL, "method_not_allowed", "%.200s takes %s, not %s", url, needed, method);
        return true;
    }
    if (srv->auth[0] && !strncmp(url, "/v1/", 4)) {
        const char *h = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!h || !same_secret(h, srv->auth)) {
            *res = send_error(c, 401, NULL, "invalid_api_key",
                              h ? "invalid API key" : "missing API key: send 'Authorization: Bearer <key>'");
            return true;
        }
    }
    if (c->r != R_PAGE && c->r != R_HEALTH && c->r != R_METRICS) {
        plumb_srv_state st = plumb_srv_sched_state(srv->sched);
        if (st != PLUMB_SRV_READY || srv->draining) {
            *res = send_error(c, 503, NULL, NULL,
                              st == PLUMB_SRV_LOADING ? "the model is loading" : srv->draining ? "the server is shutting down"
                                                                                               : "the model failed to load");
            return true;
        }
    }
    const char *cl = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > srv->p.max_body) {
        *res = send_error(c, 413, NULL, "body_too_large", "the request body is larger than %zu bytes", srv->p.max_body);
        return true;
    }
    return false;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **con_cls) {
    (void)version;
    plumb_server_t *srv = cls;
    conn *c = *con_cls;
    if (!c) {
        if (!(c = calloc(1, sizeof *c))) return MHD_NO;
        c->srv = srv;
        c->mc = mc;
        c->t0 = now_s();
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        *con_cls = c;
        pthread_mutex_lock(&srv->mu);
        srv->in_flight++;
        pthread_mutex_unlock(&srv->mu);
        enum MHD_Result res;
        if (early_reply(c, url, method, &res)) return res;
        return MHD_YES;
    }
    if (c->responded) { /* answered early: drop whatever body still comes */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->body_too_large || c->body_len + n > srv->p.max_body) {
            c->body_too_large = true;
            return MHD_YES;
        }
        return plumb_gen_append(&c->body, &c->body_len, &c->body_cap, upload_data, n) ? MHD_YES : MHD_NO;
    }
    if (c->body_too_large)
        return send_error(c, 413, NULL, "body_too_large", "the request body is larger than %zu bytes", srv->p.max_body);
    switch (c->r) {
    case R_PAGE:
        return queue(c, 200,
                     MHD_create_response_from_buffer(plumb_srv_page_index_len, (void *)plumb_srv_page_index,
                                                     MHD_RESPMEM_PERSISTENT),
                     "text/html; charset=utf-8");
    case R_HEALTH: return handle_health(c);
    case R_METRICS: return handle_metrics(c);
    case R_MODELS: return handle_models(c);
    case R_TOKENIZE: return handle_tokenize(c);
    case R_DETOKENIZE: return handle_detokenize(c);
    case R_CHAT:
    case R_COMPLETIONS: return handle_generate(c);
    case R_NONE: break;
    }
    return MHD_NO;
}

/* The request is over (answered, failed or its client went away). */
static void request_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)mc;
    (void)toe;
    plumb_server_t *srv = cls;
    conn *c = *con_cls;
    if (!c) return;
    if (c->job) {
        plumb_srv_job_cancel(srv->sched, c->job); /* no-op when it has ended */
        plumb_srv_job_release(srv->sched, c->job);
    }
    free(c->body);
    free(c->out);
    free(c);
    *con_cls = NULL;
    pthread_mutex_lock(&srv->mu);
    if (--srv->in_flight == 0) pthread_cond_broadcast(&srv->idle_cv);
    pthread_mutex_unlock(&srv->mu);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    plumb_server_t *srv = cls;
    if (!srv->p.log_requests) return;
    fputs("plumb serve: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

plumb_server_params plumb_server_default_params(void) {
    return (plumb_server_params){.host = "127.0.0.1", .port = 8080, .n_parallel = 4, .n_batch = 512,
                                 .prefill_chunk = 64, .queue_size = 16, .max_connections = 128,
                                 .max_body = 1u << 20, .max_header = 16u << 10, .timeout_s = 600};
}

/* The file name of path without directories and ".gguf", into out[0..cap). */
static void default_alias(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), base);
}

static plumb_status fail_start(plumb_server_t *s, plumb_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    plumb_server_free(s);
    fprintf(stderr, "plumb serve: %s\n", msg);
    return st;
}

plumb_status plumb_server_start(const plumb_server_params *p, plumb_server_t **out) {
    *out = NULL;
    plumb_server_t *s = calloc(1, sizeof *s);
    if (!s) return PLUMB_E_NOMEM;
    s->p = *p;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    plumb_srv_metrics_init(&s->metrics, p->n_parallel);
    if (!p->model_path || p->n_parallel < 1 || p->n_parallel > 256 || p->queue_size < 0 || p->port < 0 ||
        p->port > 65535 || p->max_connections < 1 || p->timeout_s <= 0)
        return fail_start(s, PLUMB_E_INVALID_ARG, "invalid server parameters");
    if (p->api_key && strlen(p->api_key) > 512) return fail_start(s, PLUMB_E_INVALID_ARG, "the API key is longer than 512 bytes");
    if (p->api_key) snprintf(s->auth, sizeof s->auth, "Bearer %s", p->api_key);
    if (p->alias) snprintf(s->alias, sizeof s->alias, "%s", p->alias);
    else default_alias(p->model_path, s->alias, sizeof s->alias);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = getaddrinfo(p->host ? p->host : "127.0.0.1", port, &hints, &ai);
    if (gai) return fail_start(s, PLUMB_E_INVALID_ARG, "cannot resolve host '%s': %s", p->host, gai_strerror(gai));

    plumb_srv_sched_params sp = {.model_path = p->model_path,
                                 .n_parallel = p->n_parallel,
                                 .n_ctx = p->n_ctx,
                                 .n_threads = p->n_threads,
                                 .n_batch = p->n_batch,
                                 .prefill_chunk = p->prefill_chunk,
                                 .queue_size = p->queue_size,
                                 .chat_format = p->chat_format,
                                 .use_mmap = p->use_mmap};
    plumb_status st = plumb_srv_sched_create(&sp, &s->metrics, &s->sched);
    if (st) {
        freeaddrinfo(ai);
        return fail_start(s, st, "cannot start the scheduler");
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    /* the idle timeout only guards slow clients; a generation may run longer without traffic */
    unsigned idle = (unsigned)(p->timeout_s + 30);
    s->d = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, access_handler, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_NOTIFY_COMPLETED, request_completed, s, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)p->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, idle,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)p->max_header,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) return fail_start(s, PLUMB_E_IO, "cannot listen on %s:%d (address in use or not available)", p->host, p->port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    s->port = p->port;
    if (di && getsockname(di->listen_fd, (struct sockaddr *)&sa, &sl) == 0)
        s->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port : ((struct sockaddr_in *)&sa)->sin_port);
    *out = s;
    return PLUMB_OK;
}

int plumb_server_port(const plumb_server_t *s) { return s->port; }

plumb_status plumb_server_wait_loaded(plumb_server_t *s, const char **message) {
    return plumb_srv_sched_wait_ready(s->sched, message) == PLUMB_SRV_READY ? PLUMB_OK : PLUMB_E_FORMAT;
}

void plumb_server_shutdown(plumb_server_t *s, double grace_s) {
    if (!s->d) return;
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    pthread_mutex_unlock(&s->mu);
    MHD_socket lfd = MHD_quiesce_daemon(s->d); /* no new connections from here on */
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)grace_s;
    pthread_mutex_lock(&s->mu);
    while (s->in_flight > 0)
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &until) != 0) break;
    pthread_mutex_unlock(&s->mu);
    /* jobs still running end now (503), which lets their connection threads finish */
    plumb_srv_sched_stop(s->sched);
    MHD_stop_daemon(s->d);
    s->d = NULL;
}

void plumb_server_free(plumb_server_t *s) {
    if (!s) return;
    plumb_server_shutdown(s, 0); /* when still serving */
    plumb_srv_sched_free(s->sched);
    plumb_srv_metrics_destroy(&s->metrics);
    pthread_cond_destroy(&s->idle_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
