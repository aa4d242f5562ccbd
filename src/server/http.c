/* http.c — the OpenAI API of the server over its HTTP transport (httpd.h): one route table
 * (method, auth, readiness, whether a restricted connection may use it), Bearer auth, the
 * JSON error shape for every failure, OpenAI request/response JSON (cJSON), server-sent
 * event streams, clients leaving, and graceful shutdown. Connection threads parse, tokenize
 * (the vocabulary is immutable, so safe from any thread) and hand jobs to the scheduler;
 * they never run the model. */
#include "server.h"

#include "gen.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "sched.h"
#include "tools.h"

#include <cjson/cJSON.h>

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The chat page, generated from page/index.html at build time (page_data.c). */
extern const unsigned char plumb_srv_page_index[];
extern const size_t plumb_srv_page_index_len;

#define POLL_MS 50 /* how often a waiting connection looks for its client having gone */

struct plumb_server {
    plumb_server_params p;
    char alias[256];
    char key[513]; /* the API key, "" when none is needed */
    plumb_httpd *httpd;
    plumb_srv_metrics metrics;
    plumb_srv_sched *sched;
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
    R_APPLY_TEMPLATE,
} route;

enum {
    F_AUTH = 1,       /* needs the API key when one is set */
    F_READY = 2,      /* needs the model loaded */
    F_LIGHT = 4,      /* served on a restricted connection too */
    F_METRICS = 8,    /* needs the API key unless --public-metrics */
};

static const struct route_def {
    const char *path, *method;
    route r;
    unsigned flags;
} routes[] = {
    {"/", "GET", R_PAGE, 0},
    {"/index.html", "GET", R_PAGE, 0},
    {"/health", "GET", R_HEALTH, F_LIGHT},
    {"/metrics", "GET", R_METRICS, F_LIGHT | F_METRICS},
    {"/v1/models", "GET", R_MODELS, F_AUTH | F_READY},
    {"/v1/chat/completions", "POST", R_CHAT, F_AUTH | F_READY},
    {"/v1/completions", "POST", R_COMPLETIONS, F_AUTH | F_READY},
    {"/tokenize", "POST", R_TOKENIZE, F_AUTH | F_READY},
    {"/detokenize", "POST", R_DETOKENIZE, F_AUTH | F_READY},
    {"/apply-template", "POST", R_APPLY_TEMPLATE, F_AUTH | F_READY},
};

/* One request being answered. */
typedef struct conn {
    plumb_server_t *srv;
    plumb_http_conn *hc;
    const plumb_http_request *req;
    const struct route_def *route;
    double t0;
    /* generation */
    plumb_srv_job *job;
    plumb_srv_kind kind;
    bool include_usage;
    bool tools;                  /* the answer may call tools: split it into text and calls */
    plumb_srv_tool_syntax syntax; /* ... written in this syntax */
    char id[48];
    long long created;
} conn;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void log_request(const conn *c, const char *outcome) {
    if (c->srv->p.log_requests)
        plumb_srv_log("%s %.200s %s %.3f s %s", c->req ? c->req->method : "-", c->req ? c->req->path : "-", outcome,
                      now_s() - c->t0, plumb_http_peer(c->hc));
}

/* ---- responses -------------------------------------------------------------------------- */

static bool send_text(conn *c, int status, const char *text, size_t len, const char *type) {
    char extra[128] = "";
    if (status == 503) snprintf(extra, sizeof extra, "Retry-After: 1\r\n");
    if (status == 401) snprintf(extra, sizeof extra, "WWW-Authenticate: Bearer\r\n");
    if (status == 405 && c->route) snprintf(extra, sizeof extra, "Allow: %s\r\n", c->route->method);
    bool ok = plumb_http_respond(c->hc, status, type, extra, text, len);
    plumb_srv_metrics_request(&c->srv->metrics, status);
    char outcome[16];
    snprintf(outcome, sizeof outcome, "%d", status);
    log_request(c, outcome);
    return ok;
}

static const char oom_json[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";

/* Sends j as JSON and deletes it. */
static bool send_json(conn *c, int status, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) return send_text(c, 500, oom_json, sizeof oom_json - 1, "application/json");
    bool ok = send_text(c, status, s, strlen(s), "application/json");
    free(s);
    return ok;
}

static const char *error_type(int status) {
    switch (status) {
    case 400: case 408: case 413: case 417: case 431: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: case 405: return "not_found_error";
    case 501: return "not_implemented_error";
    case 503: return "unavailable_error";
    case 504: return "timeout_error";
    default: return "server_error";
    }
}

/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
static cJSON *error_json(int status, const char *message, const char *param, const char *code) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", error_type(status));
    if (param && *param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    return root;
}

static bool send_error(conn *c, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static bool send_error(conn *c, int status, const char *param, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_json(c, status, error_json(status, msg, param, code));
}

/* ---- simple endpoints ------------------------------------------------------------------- */

static bool handle_health(conn *c) {
    plumb_srv_state st = plumb_srv_sched_state(c->srv->sched);
    const char *body = st == PLUMB_SRV_READY ? "{\"status\":\"ok\"}" : st == PLUMB_SRV_LOADING ? "{\"status\":\"loading\"}"
                                                                                              : "{\"status\":\"error\"}";
    return send_text(c, st == PLUMB_SRV_READY ? 200 : 503, body, strlen(body), "application/json");
}

static bool handle_metrics(conn *c) {
    char *t = plumb_srv_metrics_render(&c->srv->metrics);
    if (!t) return send_error(c, 500, NULL, NULL, "out of memory");
    bool ok = send_text(c, 200, t, strlen(t), "text/plain; version=0.0.4");
    free(t);
    return ok;
}

static bool handle_models(conn *c) {
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

static bool handle_tokenize(conn *c) {
    char *content;
    size_t len;
    bool add_special, parse_special;
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_tokenize(c->req->body, c->req->body_len, &content, &len, &add_special,
                                               &parse_special, &err);
    if (st == PLUMB_E_NOMEM) return send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return send_error(c, 400, err.param, NULL, "%s", err.message);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(c->srv->sched));
    size_t cap = len + 8, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    st = ids ? plumb_tokenize(v, content, len, add_special, parse_special, ids, cap, &n) : PLUMB_E_NOMEM;
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

static bool handle_detokenize(conn *c) {
    int32_t *ids;
    size_t n;
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_detokenize(c->req->body, c->req->body_len, &ids, &n, &err);
    if (st == PLUMB_E_NOMEM) return send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return send_error(c, 400, err.param, NULL, "%s", err.message);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(c->srv->sched));
    const int32_t n_vocab = plumb_vocab_n_tokens(v);
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= n_vocab) {
            const int32_t bad = ids[i]; /* read before the array is freed */
            free(ids);
            return send_error(c, 400, "tokens", NULL, "'tokens[%zu]' is %d, past the vocabulary (%d tokens)", i, (int)bad,
                              (int)n_vocab);
        }
    size_t cap = n * 8 + 16, len = 0;
    char *text = malloc(cap);
    plumb_detok d = {0};
    for (size_t i = 0; text && i < n; i++) {
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
    /* the text may hold NUL bytes, which cJSON strings cannot: write the JSON by hand */
    char *body = NULL;
    size_t blen = 0, bcap = 0;
    bool ok = plumb_gen_append(&body, &blen, &bcap, "{\"content\":\"", 12);
    for (size_t i = 0; ok && i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        char esc[8];
        size_t el = 1;
        esc[0] = (char)ch;
        if (ch == '"' || ch == '\\') esc[0] = '\\', esc[1] = (char)ch, el = 2;
        else if (ch < 0x20) el = (size_t)snprintf(esc, sizeof esc, "\\u%04x", ch);
        ok = plumb_gen_append(&body, &blen, &bcap, esc, el);
    }
    ok = ok && plumb_gen_append(&body, &blen, &bcap, "\"}", 2);
    free(text);
    if (!ok) {
        free(body);
        return send_error(c, 500, NULL, NULL, "out of memory");
    }
    bool sent = send_text(c, 200, body, blen, "application/json");
    free(body);
    return sent;
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

/* Sends "data: <json>\n\n" (j deleted) or "data: [DONE]\n\n" (j NULL). false when the
 * client cannot be written to or out of memory. */
static bool send_event(conn *c, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (j && !s) return false;
    const char *payload = j ? s : "[DONE]";
    size_t n = strlen(payload) + 8;
    char *ev = malloc(n + 1);
    bool ok = ev && plumb_http_stream_send(c->hc, ev, (size_t)snprintf(ev, n + 1, "data: %s\n\n", payload));
    free(ev);
    free(s);
    return ok;
}

/* The client left: the job ends, and the request counts as cancelled. */
static bool cancelled(conn *c) {
    plumb_srv_job_cancel(c->srv->sched, c->job);
    plumb_srv_metrics_cancelled(&c->srv->metrics);
    log_request(c, "cancelled");
    return false;
}

/* A chunk with tool_calls[0] = {"index": i, ...}: the call's id, type and name with empty
 * arguments (args NULL), or its arguments. */
static cJSON *call_chunk(const conn *c, int i, const cJSON *call, const char *args) {
    cJSON *root = chunk(c, NULL, NULL, NULL);
    cJSON *delta = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0), "delta");
    cJSON *tc = cJSON_CreateObject(), *f = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(delta, "tool_calls"), tc);
    cJSON_AddNumberToObject(tc, "index", i);
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    if (!args) {
        cJSON_AddStringToObject(tc, "id", cJSON_GetObjectItemCaseSensitive(call, "id")->valuestring);
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON_AddStringToObject(f, "name", cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring);
    }
    cJSON_AddStringToObject(f, "arguments", args ? args : "");
    cJSON_AddItemToObject(tc, "function", f);
    return root;
}

/* The held end of a streamed answer with tools: its text, then each call as OpenAI streams
 * one (id and name, then the arguments). *any_call when there was a call. */
static bool send_held_calls(conn *c, const char *held, size_t len, bool *any_call) {
    char *content;
    cJSON *calls;
    *any_call = false;
    if (plumb_srv_tools_parse(c->syntax, held, len, &content, &calls)) return false;
    bool ok = !content || send_event(c, chunk(c, content, NULL, NULL));
    int i = 0;
    const cJSON *call;
    cJSON_ArrayForEach(call, calls) {
        const char *args = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(call, "function"), "arguments")->valuestring;
        ok = ok && send_event(c, call_chunk(c, i, call, NULL)) && send_event(c, call_chunk(c, i, call, args));
        i++;
    }
    *any_call = i > 0;
    free(content);
    cJSON_Delete(calls);
    return ok;
}

static bool stream_events(conn *c) {
    plumb_srv_sched *s = c->srv->sched;
    if (!plumb_http_stream_start(c->hc, 200, "text/event-stream", "Cache-Control: no-cache\r\n")) return cancelled(c);
    if (c->kind == PLUMB_SRV_CHAT && !send_event(c, chunk(c, "", "assistant", NULL))) return cancelled(c);
    size_t sent = 0;
    char *held = NULL; /* with tools: text not yet known to be content rather than a call */
    size_t held_len = 0, held_cap = 0;
    for (;;) {
        char *text;
        size_t len;
        plumb_srv_progress pr;
        if (plumb_srv_job_poll(s, c->job, sent, POLL_MS, &text, &len, &pr)) {
            free(held);
            return cancelled(c);
        }
        bool ok = true;
        if (text && c->tools) {
            sent += len;
            ok = plumb_gen_append(&held, &held_len, &held_cap, text, len);
            free(text);
            size_t safe = ok ? plumb_srv_tools_content_prefix(c->syntax, held, held_len) : 0;
            if (safe) {
                char keep = held[safe];
                held[safe] = '\0';
                ok = send_event(c, chunk(c, held, NULL, NULL));
                held[safe] = keep;
                memmove(held, held + safe, held_len - safe + 1);
                held_len -= safe;
            }
        } else if (text) {
            ok = send_event(c, chunk(c, text, NULL, NULL));
            sent += len;
            free(text);
        } else if (pr.done) {
            int status = 200;
            bool any_call = false;
            if (pr.error_status) {
                status = pr.error_status;
                ok = send_event(c, error_json(pr.error_status, pr.error_message, NULL, NULL));
            } else {
                if (c->tools) ok = send_held_calls(c, held ? held : "", held_len, &any_call);
                const char *reason = any_call && !strcmp(pr.finish_reason, "stop") ? "tool_calls" : pr.finish_reason;
                ok = ok && send_event(c, chunk(c, NULL, NULL, reason));
                if (ok && c->include_usage) {
                    cJSON *u = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion.chunk" : "text_completion");
                    cJSON_AddArrayToObject(u, "choices");
                    add_usage(u, &pr);
                    ok = send_event(c, u);
                }
            }
            ok = ok && send_event(c, NULL) && plumb_http_stream_end(c->hc);
            free(held);
            if (!ok) return cancelled(c);
            plumb_srv_metrics_request(&c->srv->metrics, status);
            char outcome[32];
            snprintf(outcome, sizeof outcome, "%d streamed", status);
            log_request(c, outcome);
            return true;
        } else if (plumb_http_client_gone(c->hc)) {
            ok = false;
        }
        if (!ok) {
            free(held);
            return cancelled(c);
        }
    }
}

static bool finish_whole(conn *c) {
    plumb_srv_sched *s = c->srv->sched;
    char *text;
    size_t len;
    plumb_srv_progress pr;
    for (;;) { /* wait for the end, watching for the client resetting the connection */
        if (plumb_srv_job_poll(s, c->job, (size_t)-1, POLL_MS, &text, &len, &pr)) return cancelled(c);
        if (pr.done) break;
        if (plumb_http_client_gone(c->hc)) return cancelled(c);
    }
    if (pr.error_status) return send_json(c, pr.error_status, error_json(pr.error_status, pr.error_message, NULL, NULL));
    if (plumb_srv_job_poll(s, c->job, 0, 0, &text, &len, &pr)) return send_error(c, 500, NULL, NULL, "out of memory");
    cJSON *root = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion" : "text_completion");
    cJSON *calls = NULL;
    if (c->tools) { /* the answer's text and its calls */
        char *content;
        if (plumb_srv_tools_parse(c->syntax, text ? text : "", len, &content, &calls)) {
            free(text);
            cJSON_Delete(root);
            return send_error(c, 500, NULL, NULL, "out of memory");
        }
        free(text);
        text = content;
    }
    const char *reason = calls && !strcmp(pr.finish_reason, "stop") ? "tool_calls" : pr.finish_reason;
    cJSON *ch = choice(c, false, text || !calls ? (text ? text : "") : NULL, c->kind == PLUMB_SRV_CHAT ? "assistant" : NULL, reason);
    if (calls) {
        cJSON *m = cJSON_GetObjectItemCaseSensitive(ch, "message");
        if (!text) cJSON_AddNullToObject(m, "content");
        cJSON_AddItemToObject(m, "tool_calls", calls);
    }
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), ch);
    free(text);
    add_usage(root, &pr);
    return send_json(c, 200, root);
}

/* The syntax the model's tool calls are written in. */
static plumb_srv_tool_syntax tool_syntax(conn *c) {
    const plumb_gen_chat *chat = plumb_srv_sched_chat(c->srv->sched);
    return plumb_srv_tool_syntax_of(chat ? chat->tmpl : NULL);
}

/* The conversation as the model's prompt (chat_prompt.h): messages_json (a JSON array) and
 * tools_json (NULL: none). PLUMB_E_INVALID_ARG is the client's fault (the template refused the
 * conversation, or the model has no chat format): msg says why. */
static plumb_status render_chat(conn *c, const char *messages_json, const char *tools_json, bool gen_prompt, char **text,
                                size_t *len, plumb_span **marks, size_t *n_marks, char *msg, size_t msg_cap) {
    const plumb_gen_chat *chat = plumb_srv_sched_chat(c->srv->sched);
    if (!chat) {
        snprintf(msg, msg_cap, "the model has no chat format plumb knows; use /v1/completions or start the server with "
                               "--chat-format or --chat-template-file");
        return PLUMB_E_INVALID_ARG;
    }
    plumb_status st = plumb_gen_chat_render_json(chat, messages_json, tools_json, gen_prompt, text, len, marks, n_marks);
    if (st && st != PLUMB_E_NOMEM) {
        snprintf(msg, msg_cap, "%s: %s", chat->source, plumb_last_error());
        return PLUMB_E_INVALID_ARG;
    }
    return st;
}

/* A chat request's prompt: its messages and tools as the model's template shows them; for a
 * model whose template has no tool syntax, the tools and the answer's form are explained in a
 * system message instead. */
static plumb_status render_request(conn *c, const plumb_srv_request *r, char **text, size_t *len, plumb_span **marks,
                                   size_t *n_marks, char *msg, size_t msg_cap) {
    if (!r->tools_json || r->tool_choice == PLUMB_SRV_TOOLS_NONE || tool_syntax(c) != PLUMB_SRV_SYNTAX_GENERIC)
        return render_chat(c, r->messages_json, r->tools_json, true, text, len, marks, n_marks, msg, msg_cap);
    char *msgs = plumb_srv_tools_generic_messages(r);
    if (!msgs) return PLUMB_E_NOMEM;
    plumb_status st = render_chat(c, msgs, NULL, true, text, len, marks, n_marks, msg, msg_cap);
    free(msgs);
    return st;
}

/* Tokenizes the request's prompt into *ids (malloc'd). Text from the client (messages, the
 * prompt) is tokenized as text: only the chat format's own markers become control tokens,
 * unless the request set parse_special. PLUMB_E_INVALID_ARG is the client's fault: msg says
 * why and *param names the field. */
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
    if (r->kind == PLUMB_SRV_COMPLETION)
        return plumb_gen_tokenize_marked(v, r->prompt, strlen(r->prompt), true, r->parse_special, NULL, 0, ids, n);
    char *text = NULL;
    size_t len, n_marks = 0;
    plumb_span *marks = NULL;
    plumb_status st = render_request(c, r, &text, &len, &marks, &n_marks, msg, msg_cap);
    if (st) return st;
    /* the formatted text carries its BOS */
    st = plumb_gen_tokenize_marked(v, text, len, false, true, r->parse_special ? NULL : marks, n_marks, ids, n);
    free(text);
    free(marks);
    return st;
}

static bool handle_generate(conn *c) {
    plumb_server_t *srv = c->srv;
    const int32_t n_ctx = plumb_srv_sched_n_ctx(srv->sched);
    plumb_srv_request r;
    plumb_srv_error err;
    c->kind = c->route->r == R_CHAT ? PLUMB_SRV_CHAT : PLUMB_SRV_COMPLETION;
    plumb_status st = plumb_srv_request_parse(c->req->body, c->req->body_len, c->kind, n_ctx, &r, &err);
    if (st == PLUMB_E_NOMEM) return send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return send_error(c, 400, err.param, NULL, "%s", err.message);
    int32_t *ids;
    size_t n;
    const char *param;
    char msg[256] = "";
    st = request_tokens(c, &r, &ids, &n, &param, msg, sizeof msg);
    if (st == PLUMB_E_INVALID_ARG) send_error(c, 400, param, NULL, "%s", msg);
    else if (st) send_error(c, 500, NULL, NULL, "cannot prepare the prompt: %s", plumb_status_message(st));
    else if (n == 0) send_error(c, 400, param, NULL, "the prompt is empty");
    else if (n >= (size_t)n_ctx)
        send_error(c, 400, param, "context_length_exceeded",
                   "This model's maximum context length is %d tokens, but the prompt has %zu tokens; "
                   "shorten the prompt or start the server with a larger --ctx-size",
                   (int)n_ctx, n);
    if (st || n == 0 || n >= (size_t)n_ctx) goto out;
    plumb_srv_tool_grammar tg = {0};
    plumb_srv_guide_spec spec = {0};
    if (r.grammar) spec = (plumb_srv_guide_spec){.gbnf = r.grammar, .root = "root"};
    else if (r.tools_json && r.tool_choice != PLUMB_SRV_TOOLS_NONE) {
        c->tools = true;
        c->syntax = tool_syntax(c);
        st = plumb_srv_tools_grammar(c->syntax, &r, &tg, msg, sizeof msg);
        if (st == PLUMB_E_INVALID_ARG) send_error(c, 400, "tools", NULL, "%s", msg);
        else if (st) send_error(c, 500, NULL, NULL, "out of memory");
        if (st) goto out;
        spec = (plumb_srv_guide_spec){tg.gbnf, tg.root, tg.trigger, tg.trigger2, tg.root_after, tg.force_trigger};
    }
    if (!r.seed_given) r.sampling.seed = (uint64_t)time(NULL) * 6364136223846793005ull + atomic_fetch_add(&srv->next_id, 1);
    st = plumb_srv_job_create(ids, n, &r, srv->p.timeout_s, &c->job);
    if (!st && spec.gbnf) st = plumb_srv_job_constrain(c->job, &spec);
    plumb_srv_tool_grammar_free(&tg);
    if (!st) st = plumb_srv_sched_submit(srv->sched, c->job);
    if (st == PLUMB_E_RANGE)
        send_error(c, 503, NULL, "server_busy", "all %d slots are busy and the queue is full; retry later", (int)srv->p.n_parallel);
    else if (st == PLUMB_E_UNSUPPORTED) send_error(c, 503, NULL, NULL, "the server is not accepting requests (loading or shutting down)");
    else if (st) send_error(c, 500, NULL, NULL, "cannot queue the request: %s", plumb_status_message(st));
    if (st) goto out;
    snprintf(c->id, sizeof c->id, "%s-%llx%08llx", c->kind == PLUMB_SRV_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)time(NULL), (unsigned long long)atomic_fetch_add(&srv->next_id, 1));
    c->created = (long long)time(NULL);
    c->include_usage = r.include_usage;
    if (r.stream) stream_events(c);
    else finish_whole(c);
out:
    free(ids);
    plumb_srv_request_free(&r);
    return true;
}

/* POST /apply-template: the prompt the chat endpoint would build, {"prompt": text}. */
static bool handle_apply_template(conn *c) {
    plumb_srv_request r;
    plumb_srv_error err;
    char *tools = NULL;
    plumb_status st = plumb_srv_parse_apply_template(c->req->body, c->req->body_len, &r, &tools, &err);
    if (st == PLUMB_E_NOMEM) return send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return send_error(c, 400, err.param, NULL, "%s", err.message);
    char *text = NULL, msg[256] = "";
    size_t len, n_marks;
    plumb_span *marks = NULL;
    st = render_chat(c, r.messages_json, tools, true, &text, &len, &marks, &n_marks, msg, sizeof msg);
    free(tools);
    plumb_srv_request_free(&r);
    free(marks);
    if (st == PLUMB_E_INVALID_ARG) return send_error(c, 400, "messages", NULL, "%s", msg);
    if (st) return send_error(c, 500, NULL, NULL, "cannot render the template: %s", plumb_status_message(st));
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "prompt", text);
    free(text);
    return send_json(c, 200, root);
}

/* ---- routing ---------------------------------------------------------------------------- */

static const struct route_def *find_route(const char *path) {
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(path, routes[i].path)) return &routes[i];
    return NULL;
}

/* Compares without leaking where the first difference is. */
static bool same_secret(const char *a, size_t la, const char *b) {
    size_t lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

/* "Authorization: Bearer <key>" with the scheme in any case (RFC 9110 section 11.1). */
static bool authorized(const plumb_server_t *srv, const plumb_http_head *h, bool *present) {
    size_t len;
    const char *v = plumb_http_header(h, "Authorization", &len);
    *present = v != NULL;
    if (!v || len < 7 || strncasecmp(v, "Bearer ", 7) != 0) return false;
    size_t at = 7;
    while (at < len && v[at] == ' ') at++;
    return same_secret(v + at, len - at, srv->key);
}

static bool answer_head(void *app, plumb_http_conn *hc, const plumb_http_request *req) {
    plumb_server_t *srv = app;
    conn c = {.srv = srv, .hc = hc, .req = req, .t0 = now_s()};
    const struct route_def *rt = c.route = find_route(req->path);
    if (!rt) return send_error(&c, 404, NULL, "not_found", "no such endpoint: %s %.200s", req->method, req->path);
    bool head_ok = !strcmp(req->method, "HEAD") && !strcmp(rt->method, "GET");
    if (strcmp(req->method, rt->method) != 0 && !head_ok)
        return send_error(&c, 405, NULL, "method_not_allowed", "%.200s takes %s, not %s", req->path, rt->method, req->method);
    if (req->restricted && !(rt->flags & F_LIGHT))
        return send_error(&c, 503, NULL, "too_many_connections",
                          "too many open connections; only /health and /metrics answer now, retry later");
    bool needs_key = (rt->flags & F_AUTH) || ((rt->flags & F_METRICS) && !srv->p.public_metrics);
    bool present;
    if (srv->key[0] && needs_key && !authorized(srv, req->head, &present))
        return send_error(&c, 401, NULL, "invalid_api_key",
                          present ? "invalid API key" : "missing API key: send 'Authorization: Bearer <key>'");
    if (rt->flags & F_READY) {
        plumb_srv_state st = plumb_srv_sched_state(srv->sched);
        bool draining = plumb_http_draining(hc);
        if (st != PLUMB_SRV_READY || draining)
            return send_error(&c, 503, NULL, NULL,
                              st == PLUMB_SRV_LOADING ? "the model is loading"
                              : draining           ? "the server is shutting down"
                                                   : "the model failed to load");
    }
    return false;
}

static void on_head(void *app, plumb_http_conn *hc, const plumb_http_request *req) { answer_head(app, hc, req); }

static void on_request(void *app, plumb_http_conn *hc, const plumb_http_request *req) {
    plumb_server_t *srv = app;
    conn c = {.srv = srv, .hc = hc, .req = req, .t0 = now_s(), .route = find_route(req->path)};
    switch (c.route ? c.route->r : R_NONE) {
    case R_PAGE:
        send_text(&c, 200, (const char *)plumb_srv_page_index, plumb_srv_page_index_len, "text/html; charset=utf-8");
        break;
    case R_HEALTH: handle_health(&c); break;
    case R_METRICS: handle_metrics(&c); break;
    case R_MODELS: handle_models(&c); break;
    case R_TOKENIZE: handle_tokenize(&c); break;
    case R_DETOKENIZE: handle_detokenize(&c); break;
    case R_APPLY_TEMPLATE: handle_apply_template(&c); break;
    case R_CHAT:
    case R_COMPLETIONS: handle_generate(&c); break;
    case R_NONE: send_error(&c, 404, NULL, "not_found", "no such endpoint"); break;
    }
    if (c.job) {
        plumb_srv_job_cancel(srv->sched, c.job); /* no-op when it has ended */
        plumb_srv_job_release(srv->sched, c.job);
    }
}

static void on_error(void *app, plumb_http_conn *hc, int status, const char *code, const char *message) {
    conn c = {.srv = app, .hc = hc, .t0 = now_s()};
    send_error(&c, status, NULL, code, "%s", message);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

plumb_server_params plumb_server_default_params(void) {
    return (plumb_server_params){.host = "127.0.0.1", .port = 8080, .n_parallel = 4, .n_batch = 512,
                                 .prefill_chunk = 64, .queue_size = 16, .max_connections = 128,
                                 .max_body = 1u << 20, .max_header = 16u << 10, .timeout_s = 600,
                                 .request_timeout_s = 30};
}

/* The file name of path without directories and ".gguf", into out[0..cap). */
static void default_alias(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), base);
}

static plumb_status fail_start(plumb_server_t *s, plumb_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static plumb_status fail_start(plumb_server_t *s, plumb_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    plumb_server_free(s);
    plumb_srv_log("%s", msg);
    return st;
}

plumb_status plumb_server_start(const plumb_server_params *p, plumb_server_t **out) {
    *out = NULL;
    plumb_server_t *s = calloc(1, sizeof *s);
    if (!s) return PLUMB_E_NOMEM;
    s->p = *p;
    plumb_srv_metrics_init(&s->metrics, p->n_parallel);
    if (!p->model_path || p->n_parallel < 1 || p->n_parallel > 256 || p->queue_size < 0 || p->port < 0 ||
        p->port > 65535 || p->max_connections < 1 || p->max_per_client < 0 || p->timeout_s <= 0 ||
        !(p->request_timeout_s > 0))
        return fail_start(s, PLUMB_E_INVALID_ARG, "invalid server parameters");
    if (p->api_key && strlen(p->api_key) > 512) return fail_start(s, PLUMB_E_INVALID_ARG, "the API key is longer than 512 bytes");
    if (p->api_key) snprintf(s->key, sizeof s->key, "%s", p->api_key);
    if (p->alias) snprintf(s->alias, sizeof s->alias, "%s", p->alias);
    else default_alias(p->model_path, s->alias, sizeof s->alias);

    plumb_srv_sched_params sp = {.model_path = p->model_path,
                                 .n_parallel = p->n_parallel,
                                 .n_ctx = p->n_ctx,
                                 .n_threads = p->n_threads,
                                 .n_batch = p->n_batch,
                                 .prefill_chunk = p->prefill_chunk,
                                 .queue_size = p->queue_size,
                                 .chat_format = p->chat_format,
                                 .chat_template = p->chat_template,
                                 .chat_template_len = p->chat_template_len,
                                 .use_mmap = p->use_mmap};
    plumb_srv_sched *sched;
    plumb_status st = plumb_srv_sched_create(&sp, &s->metrics, &sched);
    if (st) return fail_start(s, st, "cannot start the scheduler");
    s->sched = sched;
    plumb_httpd_params hp = {.host = p->host,
                             .port = p->port,
                             .max_connections = p->max_connections,
                             .max_per_client = p->max_per_client ? p->max_per_client
                                                                 : (p->max_connections + 1) / 2,
                             .headroom = PLUMB_SERVER_HEADROOM,
                             .max_header = p->max_header,
                             .max_body = p->max_body,
                             .request_timeout_s = p->request_timeout_s};
    plumb_httpd_handler h = {.app = s, .on_head = on_head, .on_request = on_request, .on_error = on_error};
    char why[256];
    if ((st = plumb_httpd_start(&hp, &h, &s->httpd, why, sizeof why))) return fail_start(s, st, "%s", why);
    *out = s;
    return PLUMB_OK;
}

int plumb_server_port(const plumb_server_t *s) { return plumb_httpd_port(s->httpd); }

plumb_status plumb_server_wait_loaded(plumb_server_t *s, const char **message) {
    return plumb_srv_sched_wait_ready(s->sched, message) == PLUMB_SRV_READY ? PLUMB_OK : PLUMB_E_FORMAT;
}

bool plumb_server_loading(plumb_server_t *s) { return plumb_srv_sched_state(s->sched) == PLUMB_SRV_LOADING; }

void plumb_server_shutdown(plumb_server_t *s, double grace_s) {
    if (!s->httpd) return;
    plumb_httpd_drain(s->httpd); /* no new connections; none waiting for a request */
    plumb_httpd_wait_idle(s->httpd, grace_s);
    /* jobs still running end now (503), which lets their connection threads finish */
    plumb_srv_sched_stop(s->sched);
    plumb_httpd_free(s->httpd);
    s->httpd = NULL;
}

void plumb_server_free(plumb_server_t *s) {
    if (!s) return;
    if (s->httpd) plumb_server_shutdown(s, 0); /* when still serving */
    if (s->sched) plumb_srv_sched_free(s->sched);
    plumb_srv_metrics_destroy(&s->metrics);
    free(s);
}
