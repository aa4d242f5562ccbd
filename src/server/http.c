/* http.c — the OpenAI API of the server over its HTTP transport (httpd.h): one route table
 * (method, auth, readiness, whether a restricted connection may use it), Bearer auth, the
 * JSON error shape for every failure, OpenAI request/response JSON (cJSON), server-sent
 * event streams, clients leaving, and graceful shutdown. Connection threads parse, tokenize
 * (the vocabulary is immutable, so safe from any thread) and hand jobs to the scheduler;
 * they never run the model. */
#include "api.h"

#include "gen.h"
#include "httpd.h"
#include "log.h"
#include "logprobs.h"
#include "metrics.h"
#include "request.h"
#include "sched.h"
#include "tools.h"

#include <cjson/cJSON.h>
#include <errno.h>

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

enum {
    F_AUTH = 1,       /* needs the API key when one is set */
    F_READY = 2,      /* needs the model loaded */
    F_LIGHT = 4,      /* served on a restricted connection too */
    F_METRICS = 8,    /* needs the API key unless --public-metrics */
};

static const struct route_def routes[] = {
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
    {"/v1/models/", "GET", R_MODEL, F_AUTH | F_READY}, /* followed by the model's id */
    {"/props", "GET", R_PROPS, F_AUTH | F_READY},
    {"/slots", "GET", R_SLOTS, F_AUTH | F_READY},
    {"/infill", "POST", R_INFILL, F_AUTH | F_READY},
    {"/v1/embeddings", "POST", R_EMBEDDINGS, F_AUTH | F_READY},
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One access-log line: method, path, outcome (the status), prompt and generated tokens and the
 * time to the first token (generation requests), total time, client; text or a JSON object. */
void plumb_srv_api_log(const conn *c, const char *outcome) {
    if (!c->srv->p.log_requests) return;
    const char *method = c->req ? c->req->method : "-", *path = c->req ? c->req->path : "-";
    const plumb_srv_progress *pr = c->has_progress ? &c->progress : NULL;
    const double total = now_s() - c->t0;
    const double ttft = pr && pr->prompt_ms >= 0 ? (pr->queue_ms + pr->prompt_ms) / 1e3 : -1;
    if (c->srv->p.log_json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "method", method);
        cJSON_AddStringToObject(j, "path", path);
        cJSON_AddStringToObject(j, "outcome", outcome);
        cJSON_AddNumberToObject(j, "status", atoi(outcome));
        if (pr) {
            cJSON_AddNumberToObject(j, "prompt_tokens", pr->n_prompt);
            cJSON_AddNumberToObject(j, "cached_tokens", pr->n_cached);
            cJSON_AddNumberToObject(j, "completion_tokens", pr->n_gen);
            if (ttft >= 0) cJSON_AddNumberToObject(j, "ttft_s", ttft);
        }
        cJSON_AddNumberToObject(j, "total_s", total);
        cJSON_AddStringToObject(j, "client", plumb_http_peer(c->hc));
        char *line = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (line) plumb_srv_log("%s", line);
        free(line);
    } else if (pr)
        plumb_srv_log("%s %.200s %s prompt %d (%d cached) gen %d ttft %.3f s total %.3f s %s", method, path, outcome,
                      pr->n_prompt, pr->n_cached, pr->n_gen, ttft, total, plumb_http_peer(c->hc));
    else
        plumb_srv_log("%s %.200s %s %.3f s %s", method, path, outcome, total, plumb_http_peer(c->hc));
}

/* ---- responses -------------------------------------------------------------------------- */

static bool send_text(conn *c, int status, const char *text, size_t len, const char *type) {
    char extra[128] = "";
    if (status == 503) snprintf(extra, sizeof extra, "Retry-After: 1\r\n");
    if (status == 401) snprintf(extra, sizeof extra, "WWW-Authenticate: Bearer\r\n");
    if (status == 405 && c->route) snprintf(extra, sizeof extra, "Allow: %s\r\n", c->route->method);
    /* counted before the client can read the answer, so the client's next request sees it */
    plumb_srv_metrics_request(&c->srv->metrics, status);
    bool ok = plumb_http_respond(c->hc, status, type, extra, text, len);
    char outcome[16];
    snprintf(outcome, sizeof outcome, "%d", status);
    plumb_srv_api_log(c, outcome);
    return ok;
}

static const char oom_json[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";

/* Sends j as JSON and deletes it. */
bool plumb_srv_api_send_json(conn *c, int status, cJSON *j) {
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
cJSON *plumb_srv_api_error_json(int status, const char *message, const char *param, const char *code) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", error_type(status));
    if (param && *param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    return root;
}

bool plumb_srv_api_send_error(conn *c, int status, const char *param, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return plumb_srv_api_send_json(c, status, plumb_srv_api_error_json(status, msg, param, code));
}

/* ---- simple endpoints ------------------------------------------------------------------- */

/* ---- the models of a server with a catalog ------------------------------------------------ */

/* The model a request's `name` names into *e: the model of model_path (by its id), a catalog
 * entry, or the model loaded now (it may have left the catalog). false when none. */
static bool find_model(plumb_server_t *srv, const char *name, plumb_server_model_entry *e) {
    memset(e, 0, sizeof *e);
    if (srv->p.model_path && !strcmp(name, srv->alias)) {
        snprintf(e->id, sizeof e->id, "%s", srv->alias);
        snprintf(e->path, sizeof e->path, "%s", srv->p.model_path);
        e->created = (int64_t)srv->started;
        return true;
    }
    const plumb_server_catalog *cat = srv->p.catalog;
    if (cat->resolve(cat->user, name, e)) {
        e->id[sizeof e->id - 1] = e->path[sizeof e->path - 1] = e->owned_by[sizeof e->owned_by - 1] = '\0';
        if (e->id[0] && e->path[0]) return true;
    }
    memset(e, 0, sizeof *e);
    plumb_srv_sched_loaded(srv->sched, e->id, sizeof e->id, e->path, sizeof e->path, NULL, 0);
    if (e->id[0] && !strcmp(e->id, name)) {
        e->created = (int64_t)srv->started;
        return true;
    }
    return false;
}

/* Makes the model the request names (name "": the one loaded) this request's: without a
 * catalog the one model; with one, a lease on it, waiting (in the queue of leases) for the
 * requests of another model to finish and for a switch when it is not the one loaded. Sets
 * c->model_id. false after answering with the error, or when the client left meanwhile. */
static bool use_model(conn *c, const char *name) {
    plumb_server_t *srv = c->srv;
    if (!srv->p.catalog) {
        snprintf(c->model_id, sizeof c->model_id, "%s", srv->alias);
        return true;
    }
    plumb_server_model_entry *e = NULL;
    if (*name) {
        if (!(e = malloc(sizeof *e))) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory"), false;
        if (!find_model(srv, name, e)) {
            free(e);
            plumb_srv_api_send_error(c, 404, "model", "model_not_found",
                                     "the model '%.200s' does not exist on this server; GET /v1/models lists the models it has",
                                     name);
            return false;
        }
    }
    plumb_srv_lease *l;
    plumb_status st = plumb_srv_lease_begin(srv->sched, e ? e->id : NULL, e ? e->path : NULL, c->t0 + srv->p.timeout_s, &l);
    free(e);
    if (st == PLUMB_E_RANGE)
        return plumb_srv_api_send_error(c, 503, NULL, "server_busy", "too many requests wait for a model to be loaded; retry later"),
               false;
    if (st == PLUMB_E_UNSUPPORTED)
        return plumb_srv_api_send_error(c, 503, NULL, NULL, "the server is shutting down"), false;
    if (st) return plumb_srv_api_send_error(c, 500, NULL, NULL, "cannot wait for the model: %s", plumb_status_message(st)), false;
    for (;;) {
        const char *id = NULL, *code = NULL, *msg = NULL;
        int status = 500;
        const int r = plumb_srv_lease_wait(srv->sched, l, POLL_MS, &id, &status, &code, &msg);
        if (r > 0) {
            c->lease = l;
            snprintf(c->model_id, sizeof c->model_id, "%s", id);
            return true;
        }
        if (r < 0) {
            plumb_srv_api_send_error(c, status, status == 400 ? "model" : NULL, code, "%s", msg);
            plumb_srv_lease_end(srv->sched, l);
            return false;
        }
        if (plumb_http_client_gone(c->hc)) {
            plumb_srv_lease_end(srv->sched, l);
            plumb_srv_metrics_cancelled(&srv->metrics);
            plumb_srv_api_log(c, "cancelled");
            return false;
        }
    }
}

/* With a catalog: the request body's "model" into name[0..cap) and the lease on it
 * (use_model). false after answering with the error. */
static bool use_body_model(conn *c, char *name, size_t cap) {
    if (!c->srv->p.catalog) return use_model(c, "");
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_model(c->req->body, c->req->body_len, name, cap, &err);
    if (st == PLUMB_E_RANGE)
        return plumb_srv_api_send_error(c, 404, "model", "model_not_found",
                                        "the model named is not on this server; GET /v1/models lists the models it has"),
               false;
    if (st == PLUMB_E_NOMEM) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory"), false;
    if (st) return plumb_srv_api_send_error(c, 400, err.param, NULL, "%s", err.message), false;
    return use_model(c, name);
}

/* GET /health: 200 {"status":"ok"} once serving (with a catalog also the model in memory or
 * being loaded), 503 {"status":"loading"} or {"status":"error"} before, 503 {"status":"error",
 * "code":"device_unavailable","message":...} while the model's device is lost (until the model
 * is loaded again), and 503 {"status":"draining"} once shutting down, so that a balancer's
 * HTTP check takes the server out too. Serving or draining, it adds the slots free for a new
 * request and all of them. */
static bool handle_health(conn *c) {
    plumb_srv_state st = plumb_srv_sched_state(c->srv->sched);
    const bool draining = atomic_load(&c->srv->draining);
    if (st != PLUMB_SRV_READY && !draining) {
        const char *body = st == PLUMB_SRV_LOADING ? "{\"status\":\"loading\"}" : "{\"status\":\"error\"}";
        return send_text(c, 503, body, strlen(body), "application/json");
    }
    char why[256];
    if (!draining && plumb_srv_sched_device_lost(c->srv->sched, why, sizeof why)) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "status", "error");
        cJSON_AddStringToObject(j, "code", "device_unavailable");
        cJSON_AddStringToObject(j, "message", why);
        return plumb_srv_api_send_json(c, 503, j);
    }
    cJSON *j = cJSON_CreateObject();
    char id[512] = "", loading[512] = "";
    if (c->srv->p.catalog) plumb_srv_sched_loaded(c->srv->sched, id, sizeof id, NULL, 0, loading, sizeof loading);
    cJSON_AddStringToObject(j, "status", draining ? "draining" : loading[0] ? "loading" : "ok");
    if (c->srv->p.catalog) { /* which model is in memory, or loading */
        if (loading[0] || id[0]) cJSON_AddStringToObject(j, "model", loading[0] ? loading : id);
        else cJSON_AddNullToObject(j, "model");
        cJSON_AddBoolToObject(j, "loaded", id[0] != '\0');
    }
    int32_t n_free = 0, n_total = 0;
    plumb_srv_sched_slot_counts(c->srv->sched, &n_free, &n_total);
    cJSON_AddNumberToObject(j, "slots_idle", n_free);
    cJSON_AddNumberToObject(j, "slots_total", n_total);
    return plumb_srv_api_send_json(c, draining ? 503 : 200, j);
}

static bool handle_metrics(conn *c) {
    char *t = plumb_srv_metrics_render(&c->srv->metrics);
    if (!t) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    bool ok = send_text(c, 200, t, strlen(t), "text/plain; version=0.0.4");
    free(t);
    return ok;
}

/* The model as GET /v1/models lists it. */
static cJSON *model_json(const conn *c) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", c->srv->alias);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)c->srv->started);
    cJSON_AddStringToObject(m, "owned_by", "plumb");
    return m;
}

/* A catalog's model as GET /v1/models lists it, with whether it is the one in memory. */
static cJSON *entry_json(const plumb_server_model_entry *e, bool loaded) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", e->id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)e->created);
    cJSON_AddStringToObject(m, "owned_by", e->owned_by[0] ? e->owned_by : "plumb");
    cJSON_AddBoolToObject(m, "loaded", loaded);
    return m;
}

/* With a catalog: the model in memory, the model of model_path and the catalog's, each id
 * once (with the catalog's details when it has them). */
static bool handle_catalog_models(conn *c) {
    plumb_server_t *srv = c->srv;
    const plumb_server_catalog *cat = srv->p.catalog;
    plumb_server_model_entry *e = calloc(PLUMB_SERVER_MAX_MODELS + 2, sizeof *e); /* [n] */
    if (!e) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    int n = 0;
    char loaded[512];
    plumb_srv_sched_loaded(srv->sched, loaded, sizeof loaded, NULL, 0, NULL, 0);
    if (loaded[0]) snprintf(e[n++].id, sizeof e->id, "%s", loaded);
    if (srv->p.model_path) snprintf(e[n++].id, sizeof e->id, "%s", srv->alias);
    for (int i = 0; i < n; i++) e[i].created = (int64_t)srv->started;
    const int first = n; /* the catalog's from here */
    int got = cat->list(cat->user, e + first, PLUMB_SERVER_MAX_MODELS);
    if (got < 0) plumb_srv_log("the model catalog cannot be read: listing the models known already");
    n += got < 0 ? 0 : got > PLUMB_SERVER_MAX_MODELS ? PLUMB_SERVER_MAX_MODELS : got;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; i < n; i++) e[i].id[sizeof e->id - 1] = e[i].owned_by[sizeof e->owned_by - 1] = '\0';
    for (int i = 0; i < n; i++) {
        bool dup = !e[i].id[0];
        for (int k = 0; k < i && !dup; k++) dup = !strcmp(e[k].id, e[i].id);
        if (dup) continue;
        const plumb_server_model_entry *d = &e[i];
        for (int k = first; k < n && i < first; k++)
            if (!strcmp(e[k].id, e[i].id)) {
                d = &e[k];
                break;
            }
        cJSON_AddItemToArray(data, entry_json(d, loaded[0] && !strcmp(e[i].id, loaded)));
    }
    free(e);
    return plumb_srv_api_send_json(c, 200, root);
}

static bool handle_models(conn *c) {
    if (c->srv->p.catalog) return handle_catalog_models(c);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "data"), model_json(c));
    return plumb_srv_api_send_json(c, 200, root);
}

/* GET /v1/models/{id}: the model when id is its name. */
static bool handle_model(conn *c) {
    const char *id = c->req->path + strlen("/v1/models/");
    if (c->srv->p.catalog) {
        plumb_server_model_entry *e = malloc(sizeof *e);
        if (!e) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
        char loaded[512];
        plumb_srv_sched_loaded(c->srv->sched, loaded, sizeof loaded, NULL, 0, NULL, 0);
        bool ok = find_model(c->srv, id, e);
        if (ok) {
            cJSON *j = entry_json(e, !strcmp(loaded, e->id));
            free(e);
            return plumb_srv_api_send_json(c, 200, j);
        }
        free(e);
        return plumb_srv_api_send_error(c, 404, "model", "model_not_found",
                                        "the model '%.200s' does not exist on this server; GET /v1/models lists the models it has", id);
    }
    if (strcmp(id, c->srv->alias))
        return plumb_srv_api_send_error(c, 404, "model", "model_not_found", "no model '%.200s' here (this server has '%s')", id, c->srv->alias);
    return plumb_srv_api_send_json(c, 200, model_json(c));
}

/* GET /props: the model, its context, slots, chat template and build, as llama-server has it,
 * and where the model computes ("device": "cpu", "opencl:0"; "n_offloaded": its layers there). */
static bool handle_props(conn *c) {
    char path[4096] = "";
    if (c->srv->p.catalog) { /* the model loaded now; none: nothing to describe */
        char loaded[512], loading[512];
        plumb_srv_sched_loaded(c->srv->sched, loaded, sizeof loaded, NULL, 0, loading, sizeof loading);
        if (!loaded[0] && !loading[0])
            return plumb_srv_api_send_error(c, 503, NULL, "model_not_loaded",
                                            "no model is loaded yet: a request naming one loads it (GET /v1/models lists them)");
        if (!use_model(c, "")) return false;
        plumb_srv_sched_loaded(c->srv->sched, NULL, 0, path, sizeof path, NULL, 0);
    }
    plumb_srv_sched_borrow(c->srv->sched);
    const plumb_model_t *m = plumb_srv_sched_model(c->srv->sched);
    plumb_model_info info;
    plumb_model_get_info(m, &info);
    const plumb_gen_chat *chat = plumb_srv_sched_chat(c->srv->sched);
    cJSON *root = cJSON_CreateObject();
    cJSON *gen = cJSON_AddObjectToObject(root, "default_generation_settings");
    cJSON_AddNumberToObject(gen, "n_ctx", plumb_srv_sched_n_ctx(c->srv->sched));
    const plumb_sampler_params sp = plumb_sampler_default_params();
    cJSON *params = cJSON_AddObjectToObject(gen, "params");
    cJSON_AddNumberToObject(params, "temperature", sp.temperature);
    cJSON_AddNumberToObject(params, "top_k", sp.top_k);
    cJSON_AddNumberToObject(params, "top_p", sp.top_p);
    cJSON_AddNumberToObject(params, "min_p", sp.min_p);
    cJSON_AddNumberToObject(root, "total_slots", c->srv->p.n_parallel);
    cJSON_AddStringToObject(root, "model_path", c->srv->p.catalog ? path : c->srv->p.model_path);
    cJSON_AddStringToObject(root, "model_alias", plumb_srv_api_model_id(c));
    cJSON *mi = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(mi, "architecture", info.arch);
    cJSON_AddStringToObject(mi, "name", info.name);
    cJSON_AddNumberToObject(mi, "n_params", (double)info.n_params);
    cJSON_AddNumberToObject(mi, "n_vocab", info.n_vocab);
    cJSON_AddNumberToObject(mi, "n_ctx_train", info.n_ctx_train);
    cJSON_AddNumberToObject(mi, "n_embd", info.n_embd);
    cJSON_AddNumberToObject(mi, "n_layer", info.n_layer);
    int32_t n_offloaded = 0;
    cJSON_AddStringToObject(root, "device", plumb_model_device(m, &n_offloaded));
    cJSON_AddNumberToObject(root, "n_offloaded", n_offloaded);
    if (chat && chat->tmpl) cJSON_AddStringToObject(root, "chat_template", chat->tmpl);
    else cJSON_AddStringToObject(root, "chat_template", "");
    cJSON_AddStringToObject(root, "chat_format", chat ? chat->source : "none");
    cJSON_AddStringToObject(root, "tool_call_syntax", plumb_srv_tool_syntax_name(plumb_srv_tool_syntax_of(chat ? chat->tmpl : NULL)));
    cJSON_AddStringToObject(root, "build_info", "plumb " PLUMB_VERSION_STRING);
    cJSON_AddBoolToObject(cJSON_AddObjectToObject(root, "modalities"), "vision", false);
    plumb_srv_sched_unborrow(c->srv->sched);
    return plumb_srv_api_send_json(c, 200, root);
}

/* GET /slots (with --slots): what each slot is doing, and which prompt prefix its KV cache
 * holds: "prefix_hash" is FNV-1a 64 (16 hex digits) of its first "prefix_hash_tokens" token ids
 * (sched.h), null when it holds none. */
static bool handle_slots(conn *c) {
    if (!c->srv->p.slots_endpoint)
        return plumb_srv_api_send_error(c, 501, NULL, "not_supported", "the slots endpoint is off; start the server with --slots");
    plumb_srv_slot_info info[256];
    const int32_t n = plumb_srv_sched_slots(c->srv->sched, info, 256);
    cJSON *root = cJSON_CreateArray();
    for (int32_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", info[i].id);
        cJSON_AddStringToObject(o, "state", info[i].state);
        cJSON_AddBoolToObject(o, "is_processing", strcmp(info[i].state, "idle") != 0);
        cJSON_AddNumberToObject(o, "n_ctx", info[i].n_ctx);
        cJSON_AddNumberToObject(o, "n_cached", info[i].n_cached);
        cJSON_AddNumberToObject(o, "n_prompt_tokens", info[i].n_prompt);
        cJSON_AddNumberToObject(o, "n_decoded", info[i].n_gen);
        if (info[i].n_hashed > 0) {
            char hex[17];
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)info[i].prefix_hash);
            cJSON_AddStringToObject(o, "prefix_hash", hex);
        } else
            cJSON_AddNullToObject(o, "prefix_hash");
        cJSON_AddNumberToObject(o, "prefix_hash_tokens", info[i].n_hashed);
        cJSON_AddItemToArray(root, o);
    }
    return plumb_srv_api_send_json(c, 200, root);
}

static bool handle_tokenize(conn *c) {
    char *content;
    size_t len;
    bool add_special, parse_special;
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_tokenize(c->req->body, c->req->body_len, &content, &len, &add_special,
                                               &parse_special, &err);
    if (st == PLUMB_E_NOMEM) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return plumb_srv_api_send_error(c, 400, err.param, NULL, "%s", err.message);
    char name[512];
    if (!use_body_model(c, name, sizeof name)) {
        free(content);
        return false;
    }
    size_t cap = len + 8, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    plumb_srv_sched_borrow(c->srv->sched);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(c->srv->sched));
    st = ids ? plumb_tokenize(v, content, len, add_special, parse_special, ids, cap, &n) : PLUMB_E_NOMEM;
    plumb_srv_sched_unborrow(c->srv->sched);
    free(content);
    if (st) {
        free(ids);
        return plumb_srv_api_send_error(c, 500, NULL, NULL, "tokenization failed: %s", plumb_status_message(st));
    }
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "tokens");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    free(ids);
    return plumb_srv_api_send_json(c, 200, root);
}

static bool handle_detokenize(conn *c) {
    int32_t *ids;
    size_t n;
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_detokenize(c->req->body, c->req->body_len, &ids, &n, &err);
    if (st == PLUMB_E_NOMEM) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return plumb_srv_api_send_error(c, 400, err.param, NULL, "%s", err.message);
    char name[512];
    if (!use_body_model(c, name, sizeof name)) {
        free(ids);
        return false;
    }
    plumb_srv_sched_borrow(c->srv->sched);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(c->srv->sched));
    const int32_t n_vocab = plumb_vocab_n_tokens(v);
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= n_vocab) {
            const int32_t bad = ids[i]; /* read before the array is freed */
            plumb_srv_sched_unborrow(c->srv->sched);
            free(ids);
            return plumb_srv_api_send_error(c, 400, "tokens", NULL, "'tokens[%zu]' is %d, past the vocabulary (%d tokens)", i, (int)bad,
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
    plumb_srv_sched_unborrow(c->srv->sched);
    free(ids);
    if (text && cap - len < 4) {
        char *grown = realloc(text, cap + 4);
        if (!grown) free(text);
        text = grown;
        cap += 4;
    }
    if (!text) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
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
        return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    }
    bool sent = send_text(c, 200, body, blen, "application/json");
    free(body);
    return sent;
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

/* Appends the tokens of text[0..len) (parsed as the request says) to *ids. */
static plumb_status append_text_tokens(const plumb_vocab_t *v, const plumb_srv_request *r, const char *text,
                                       int32_t **ids, size_t *n, size_t *cap) {
    int32_t *t;
    size_t m;
    plumb_status st = plumb_gen_tokenize_marked(v, text, strlen(text), false, r->parse_special, NULL, 0, &t, &m);
    if (st) return st;
    if (*n + m > *cap) {
        size_t c = (*n + m) * 2 + 8;
        int32_t *g = realloc(*ids, c * sizeof *g);
        if (!g) {
            free(t);
            return PLUMB_E_NOMEM;
        }
        *ids = g, *cap = c;
    }
    memcpy(*ids + *n, t, m * sizeof *t);
    *n += m;
    free(t);
    return PLUMB_OK;
}

static plumb_status append_token(int32_t tok, int32_t **ids, size_t *n, size_t *cap) {
    if (*n == *cap) {
        size_t c = *cap * 2 + 8;
        int32_t *g = realloc(*ids, c * sizeof *g);
        if (!g) return PLUMB_E_NOMEM;
        *ids = g, *cap = c;
    }
    (*ids)[(*n)++] = tok;
    return PLUMB_OK;
}

/* A fill-in-the-middle prompt, in the order these models were trained on (prefix, suffix,
 * middle): [BOS] [<file_sep> file]... <fim_prefix> prefix <fim_suffix> suffix <fim_middle>;
 * the model then writes the middle. */
static plumb_status fim_tokens(const plumb_vocab_t *v, const plumb_srv_request *r, int32_t **ids, size_t *n, char *msg,
                               size_t msg_cap) {
    const int32_t pre = plumb_vocab_fim(v, PLUMB_FIM_PRE), suf = plumb_vocab_fim(v, PLUMB_FIM_SUF);
    const int32_t mid = plumb_vocab_fim(v, PLUMB_FIM_MID), sep = plumb_vocab_fim(v, PLUMB_FIM_SEP);
    *ids = NULL, *n = 0;
    if (pre < 0 || suf < 0 || mid < 0) {
        snprintf(msg, msg_cap, "the model has no fill-in-the-middle tokens (<fim_prefix>, <fim_suffix>, <fim_middle>): "
                               "it cannot fill in the middle");
        return PLUMB_E_INVALID_ARG;
    }
    size_t cap = 0;
    plumb_status st = PLUMB_OK;
    if (plumb_vocab_add_bos(v)) st = append_token(plumb_vocab_bos(v), ids, n, &cap);
    for (size_t i = 0; i < r->n_extra && !st; i++) {
        if (sep >= 0) st = append_token(sep, ids, n, &cap);
        if (!st) st = append_text_tokens(v, r, r->extra[i], ids, n, &cap);
    }
    if (!st) st = append_token(pre, ids, n, &cap);
    if (!st) st = append_text_tokens(v, r, r->prompt, ids, n, &cap);
    if (!st) st = append_token(suf, ids, n, &cap);
    if (!st) st = append_text_tokens(v, r, r->suffix, ids, n, &cap);
    if (!st) st = append_token(mid, ids, n, &cap);
    if (st) {
        free(*ids);
        *ids = NULL, *n = 0;
    }
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
    if (r->suffix) {
        *param = r->kind == PLUMB_SRV_INFILL ? "input_suffix" : "suffix";
        return fim_tokens(v, r, ids, n, msg, msg_cap);
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
    plumb_srv_request r;
    plumb_srv_error err;
    c->kind = c->route->r == R_CHAT ? PLUMB_SRV_CHAT : c->route->r == R_INFILL ? PLUMB_SRV_INFILL : PLUMB_SRV_COMPLETION;
    /* max_tokens past what the context holds is capped by it (finish_reason "length"), as
     * llama-server does: only a prompt that does not fit is refused */
    plumb_status st = plumb_srv_request_parse(c->req->body, c->req->body_len, c->kind, INT32_MAX, &r, &err);
    if (st == PLUMB_E_NOMEM) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return plumb_srv_api_send_error(c, 400, err.param, NULL, "%s", err.message);
    char name[512];
    if (!use_body_model(c, name, sizeof name)) { /* with a catalog this may wait for a switch */
        plumb_srv_request_free(&r);
        return false;
    }
    /* a request's whole life is timeout_s, the wait for its model included */
    double timeout_s = srv->p.timeout_s;
    if (srv->p.catalog && (timeout_s -= now_s() - c->t0) < 0.001) timeout_s = 0.001;
    int32_t *ids;
    size_t n;
    const char *param;
    char msg[256] = "";
    plumb_srv_sched_borrow(srv->sched); /* the model's vocabulary and chat format, briefly */
    const int32_t n_ctx = plumb_srv_sched_n_ctx(srv->sched);
    st = request_tokens(c, &r, &ids, &n, &param, msg, sizeof msg);
    const bool use_tools = !r.grammar && r.tools_json && r.tool_choice != PLUMB_SRV_TOOLS_NONE;
    const plumb_srv_tool_syntax syntax = use_tools ? tool_syntax(c) : PLUMB_SRV_SYNTAX_GENERIC;
    plumb_srv_sched_unborrow(srv->sched);
    if (st == PLUMB_E_INVALID_ARG) plumb_srv_api_send_error(c, 400, param, NULL, "%s", msg);
    else if (st) plumb_srv_api_send_error(c, 500, NULL, NULL, "cannot prepare the prompt: %s", plumb_status_message(st));
    else if (n == 0) plumb_srv_api_send_error(c, 400, param, NULL, "the prompt is empty");
    else if (n >= (size_t)n_ctx)
        plumb_srv_api_send_error(c, 400, param, "context_length_exceeded",
                   "This model's maximum context length is %d tokens, but the prompt has %zu tokens; "
                   "shorten the prompt or start the server with a larger --ctx-size",
                   (int)n_ctx, n);
    if (st || n == 0 || n >= (size_t)n_ctx) goto out;
    plumb_srv_tool_grammar tg = {0};
    plumb_srv_guide_spec spec = {0};
    if (r.grammar) spec = (plumb_srv_guide_spec){.gbnf = r.grammar, .root = "root"};
    else if (r.tools_json && r.tool_choice != PLUMB_SRV_TOOLS_NONE) {
        c->tools = true;
        c->syntax = syntax;
        st = plumb_srv_tools_grammar(c->syntax, &r, &tg, msg, sizeof msg);
        if (st == PLUMB_E_INVALID_ARG) plumb_srv_api_send_error(c, 400, "tools", NULL, "%s", msg);
        else if (st) plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
        if (st) goto out;
        spec = (plumb_srv_guide_spec){tg.gbnf, tg.root, tg.trigger, tg.trigger2, tg.root_after, tg.force_trigger};
    }
    if (!r.seed_given) r.sampling.seed = (uint64_t)time(NULL) * 6364136223846793005ull + atomic_fetch_add(&srv->next_id, 1);
    /* n choices: n jobs; the others wait for the first one's prompt and copy its KV cache */
    for (int i = 0; i < r.n && !st; i++) {
        plumb_srv_job **j = &c->ch[i].job;
        if ((st = plumb_srv_job_create(ids, n, &r, timeout_s, j))) break;
        c->n_ch++;
        if (spec.gbnf && (st = plumb_srv_job_constrain(*j, &spec))) break;
        if (i > 0) plumb_srv_job_follow(*j, c->ch[0].job);
        r.sampling.seed++;
    }
    plumb_srv_tool_grammar_free(&tg);
    for (int i = 0; i < c->n_ch && !st; i++) {
        if ((st = plumb_srv_sched_submit(srv->sched, c->ch[i].job)))
            for (int k = 0; k < i; k++) plumb_srv_job_cancel(srv->sched, c->ch[k].job);
    }
    if (st == PLUMB_E_RANGE)
        plumb_srv_api_send_error(c, 503, NULL, "server_busy", "all %d slots are busy and the queue is full; retry later", (int)srv->p.n_parallel);
    else if (st == PLUMB_E_UNSUPPORTED) plumb_srv_api_send_error(c, 503, NULL, NULL, "the server is not accepting requests (loading or shutting down)");
    else if (st) plumb_srv_api_send_error(c, 500, NULL, NULL, "cannot queue the request: %s", plumb_status_message(st));
    if (st) goto out;
    snprintf(c->id, sizeof c->id, "%s-%llx%08llx", c->kind == PLUMB_SRV_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)time(NULL), (unsigned long long)atomic_fetch_add(&srv->next_id, 1));
    c->created = (long long)time(NULL);
    c->include_usage = r.include_usage;
    c->timings = r.timings;
    c->logprobs = r.logprobs >= 0;
    if (r.stream) plumb_srv_answer_stream(c);
    else plumb_srv_answer_whole(c);
out:
    free(ids);
    plumb_srv_request_free(&r);
    return true;
}

/* base64 of n bytes into out (room for 4 * ((n + 2) / 3) + 1). */
static void base64(const unsigned char *in, size_t n, char *out) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[v >> 18 & 63], out[o++] = a[v >> 12 & 63];
        out[o++] = i + 1 < n ? a[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? a[v & 63] : '=';
    }
    out[o] = '\0';
}

/* An embedding as OpenAI writes it: a list of floats, or base64 of little-endian float32s. */
static cJSON *embedding_json(const float *v, int32_t n, bool b64) {
    if (!b64) return cJSON_CreateFloatArray(v, n);
    char *s = malloc(4 * (((size_t)n * 4 + 2) / 3) + 1);
    if (!s) return NULL;
    base64((const unsigned char *)v, (size_t)n * sizeof *v, s); /* x86 and ARM are little-endian */
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

/* POST /v1/embeddings (--embeddings): each input's pooled, normalized embedding. Inputs run
 * as embedding jobs, as many at once as there are slots. */
static bool handle_embeddings(conn *c) {
    plumb_server_t *srv = c->srv;
    if (!srv->p.embeddings)
        return plumb_srv_api_send_error(c, 501, NULL, "not_supported", "embeddings are off: start the server with --embeddings");
    plumb_srv_sched_borrow(srv->sched);
    const int32_t pooling = plumb_srv_sched_pooling(srv->sched);
    plumb_srv_sched_unborrow(srv->sched);
    if (pooling == PLUMB_POOLING_NONE)
        return plumb_srv_api_send_error(c, 400, NULL, NULL,
                                        "the server pools nothing (--pooling none): OpenAI's embeddings need one vector per "
                                        "input; start it with --pooling mean, last or cls");
    plumb_srv_embed_request r;
    plumb_srv_error err;
    plumb_status st = plumb_srv_parse_embeddings(c->req->body, c->req->body_len, &r, &err);
    if (st == PLUMB_E_NOMEM) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return plumb_srv_api_send_error(c, 400, err.param, NULL, "%s", err.message);
    plumb_srv_sched_borrow(srv->sched);
    plumb_model_info info;
    plumb_model_get_info(plumb_srv_sched_model(srv->sched), &info);
    const int32_t n_embd = info.n_embd;
    plumb_srv_sched_unborrow(srv->sched);
    if (r.dimensions >= 0 && r.dimensions != n_embd) {
        plumb_srv_embed_request_free(&r);
        return plumb_srv_api_send_error(c, 400, "dimensions", NULL,
                                        "'dimensions' must be the model's embedding size, %d (it cannot shorten them)", n_embd);
    }
    /* every input's tokens first, so a bad one fails the request before any runs; the client
     * hears of a bad one once the model is no longer borrowed */
    int32_t **ids = calloc(r.n, sizeof *ids);
    size_t *n_ids = calloc(r.n, sizeof *n_ids), total = 0;
    bool ok = ids && n_ids;
    size_t bad = 0;            /* the input refused */
    int32_t bad_tok = -1;      /* ... for this token past the vocabulary; -1: for its length */
    bool refused = false;
    plumb_srv_sched_borrow(srv->sched);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(srv->sched));
    const int32_t n_ctx = plumb_srv_sched_n_ctx(srv->sched), n_vocab = plumb_vocab_n_tokens(v);
    for (size_t i = 0; ok && !refused && i < r.n; i++) {
        if (r.texts[i]) {
            if ((st = plumb_gen_tokenize_marked(v, r.texts[i], strlen(r.texts[i]), true, false, NULL, 0, &ids[i], &n_ids[i]))) {
                ok = false;
                break;
            }
        } else {
            for (size_t k = 0; k < r.n_ids[i] && !refused; k++)
                if (r.ids[i][k] >= n_vocab) refused = true, bad = i, bad_tok = r.ids[i][k];
            if (refused) break;
            ids[i] = r.ids[i], n_ids[i] = r.n_ids[i];
            r.ids[i] = NULL;
        }
        if (n_ids[i] == 0 || n_ids[i] > (size_t)n_ctx) refused = true, bad = i;
        else total += n_ids[i];
    }
    plumb_srv_sched_unborrow(srv->sched);
    if (refused && bad_tok >= 0) {
        plumb_srv_api_send_error(c, 400, "input", NULL, "'input[%zu]' holds %d, past the vocabulary (%d tokens)", bad,
                                 (int)bad_tok, (int)n_vocab);
        goto fail;
    }
    if (refused) {
        plumb_srv_api_send_error(c, 400, "input", "context_length_exceeded",
                                 "'input[%zu]' is %zu tokens; each input must be 1 to %d (the context)", bad, n_ids[bad], (int)n_ctx);
        goto fail;
    }
    if (!ok) {
        plumb_srv_api_send_error(c, 500, NULL, NULL, "cannot tokenize the input: %s", plumb_status_message(st ? st : PLUMB_E_NOMEM));
        goto fail;
    }
    snprintf(c->id, sizeof c->id, "embd-%llx", (unsigned long long)atomic_fetch_add(&srv->next_id, 1));
    cJSON *root = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(root, "data");
    cJSON_AddStringToObject(root, "object", "list");
    plumb_srv_request base;
    memset(&base, 0, sizeof base);
    base.max_tokens = -1;
    base.logprobs = -1;
    base.sampling = plumb_sampler_default_params();
    for (size_t first = 0; first < r.n && root; first += (size_t)srv->p.n_parallel) { /* a wave of jobs */
        const size_t last = first + (size_t)srv->p.n_parallel < r.n ? first + (size_t)srv->p.n_parallel : r.n;
        c->n_ch = 0;
        for (size_t i = first; i < last && !st; i++) {
            plumb_srv_job **j = &c->ch[c->n_ch].job;
            if ((st = plumb_srv_job_create(ids[i], n_ids[i], &base, srv->p.timeout_s, j))) break;
            c->n_ch++;
            plumb_srv_job_embed(*j);
            st = plumb_srv_sched_submit(srv->sched, *j);
        }
        for (int k = 0; k < c->n_ch && !st; k++) { /* wait for each */
            api_choice *a = &c->ch[k];
            char *text;
            size_t len;
            do {
                if (plumb_srv_job_poll(srv->sched, a->job, (size_t)-1, POLL_MS, &text, &len, &a->pr) ||
                    (!a->pr.done && plumb_http_client_gone(c->hc))) {
                    for (int q = 0; q < c->n_ch; q++) plumb_srv_job_cancel(srv->sched, c->ch[q].job);
                    cJSON_Delete(root);
                    plumb_srv_metrics_cancelled(&srv->metrics);
                    plumb_srv_api_log(c, "cancelled");
                    goto fail;
                }
            } while (!a->pr.done);
            if (a->pr.error_status) {
                plumb_srv_api_send_json(c, a->pr.error_status,
                                        plumb_srv_api_error_json(a->pr.error_status, a->pr.error_message, NULL, a->pr.error_code));
                cJSON_Delete(root);
                goto fail;
            }
            float *vec;
            int32_t dim;
            if (plumb_srv_job_embedding(srv->sched, a->job, &vec, &dim)) st = PLUMB_E_NOMEM;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "object", "embedding");
            cJSON_AddNumberToObject(e, "index", (double)(first + (size_t)k));
            cJSON_AddItemToObject(e, "embedding", vec ? embedding_json(vec, dim, r.base64) : cJSON_CreateNull());
            cJSON_AddItemToArray(data, e);
            free(vec);
        }
        for (int k = 0; k < c->n_ch; k++) {
            if (st) plumb_srv_job_cancel(srv->sched, c->ch[k].job);
            plumb_srv_job_release(srv->sched, c->ch[k].job);
        }
        c->n_ch = 0;
        if (st == PLUMB_E_RANGE || st == PLUMB_E_UNSUPPORTED) {
            cJSON_Delete(root);
            plumb_srv_api_send_error(c, 503, NULL, "server_busy", "the server cannot take the inputs now; retry later");
            goto fail;
        }
        if (st) {
            cJSON_Delete(root);
            plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
            goto fail;
        }
    }
    cJSON_AddStringToObject(root, "model", srv->alias);
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)total);
    cJSON_AddNumberToObject(u, "total_tokens", (double)total);
    plumb_srv_api_send_json(c, 200, root);
fail:
    for (size_t i = 0; ids && i < r.n; i++) free(ids[i]);
    free(ids), free(n_ids);
    plumb_srv_embed_request_free(&r);
    return true;
}

/* POST /apply-template: the prompt the chat endpoint would build, {"prompt": text}. */
static bool handle_apply_template(conn *c) {
    plumb_srv_request r;
    plumb_srv_error err;
    char *tools = NULL;
    plumb_status st = plumb_srv_parse_apply_template(c->req->body, c->req->body_len, &r, &tools, &err);
    if (st == PLUMB_E_NOMEM) return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
    if (st) return plumb_srv_api_send_error(c, 400, err.param, NULL, "%s", err.message);
    char name[512];
    if (!use_body_model(c, name, sizeof name)) {
        free(tools);
        plumb_srv_request_free(&r);
        return false;
    }
    char *text = NULL, msg[256] = "";
    size_t len, n_marks;
    plumb_span *marks = NULL;
    plumb_srv_sched_borrow(c->srv->sched);
    st = render_chat(c, r.messages_json, tools, true, &text, &len, &marks, &n_marks, msg, sizeof msg);
    plumb_srv_sched_unborrow(c->srv->sched);
    free(tools);
    plumb_srv_request_free(&r);
    free(marks);
    if (st == PLUMB_E_INVALID_ARG) return plumb_srv_api_send_error(c, 400, "messages", NULL, "%s", msg);
    if (st) return plumb_srv_api_send_error(c, 500, NULL, NULL, "cannot render the template: %s", plumb_status_message(st));
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "prompt", text);
    free(text);
    return plumb_srv_api_send_json(c, 200, root);
}

/* ---- routing ---------------------------------------------------------------------------- */

static const struct route_def *find_route(const char *path) {
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const size_t n = strlen(routes[i].path);
        if (!strcmp(path, routes[i].path) || (routes[i].path[n - 1] == '/' && n > 1 && !strncmp(path, routes[i].path, n) && path[n]))
            return &routes[i];
    }
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
    if (!rt) return plumb_srv_api_send_error(&c, 404, NULL, "not_found", "no such endpoint: %s %.200s", req->method, req->path);
    bool head_ok = !strcmp(req->method, "HEAD") && !strcmp(rt->method, "GET");
    if (strcmp(req->method, rt->method) != 0 && !head_ok)
        return plumb_srv_api_send_error(&c, 405, NULL, "method_not_allowed", "%.200s takes %s, not %s", req->path, rt->method, req->method);
    if (req->restricted && !(rt->flags & F_LIGHT))
        return plumb_srv_api_send_error(&c, 503, NULL, "too_many_connections",
                          "too many open connections; only /health and /metrics answer now, retry later");
    bool needs_key = (rt->flags & F_AUTH) || ((rt->flags & F_METRICS) && !srv->p.public_metrics);
    bool present;
    if (srv->key[0] && needs_key && !authorized(srv, req->head, &present))
        return plumb_srv_api_send_error(&c, 401, NULL, "invalid_api_key",
                          present ? "invalid API key" : "missing API key: send 'Authorization: Bearer <key>'");
    if (rt->flags & F_READY) {
        plumb_srv_state st = plumb_srv_sched_state(srv->sched);
        bool draining = plumb_http_draining(hc);
        if (st != PLUMB_SRV_READY || draining)
            return plumb_srv_api_send_error(&c, 503, NULL, draining ? "shutting_down" : NULL,
                              draining                  ? "the server is shutting down"
                              : st == PLUMB_SRV_LOADING ? "the model is loading"
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
    case R_MODEL: handle_model(&c); break;
    case R_PROPS: handle_props(&c); break;
    case R_SLOTS: handle_slots(&c); break;
    case R_CHAT:
    case R_COMPLETIONS:
    case R_INFILL:
        if (srv->p.embeddings)
            plumb_srv_api_send_error(&c, 501, NULL, "not_supported",
                                     "this server computes embeddings (started with --embeddings): no text generation");
        else
            handle_generate(&c);
        break;
    case R_EMBEDDINGS: handle_embeddings(&c); break;
    case R_NONE: plumb_srv_api_send_error(&c, 404, NULL, "not_found", "no such endpoint"); break;
    }
    for (int i = 0; i < c.n_ch; i++) {
        plumb_srv_job_cancel(srv->sched, c.ch[i].job); /* no-op when it has ended */
        plumb_srv_job_release(srv->sched, c.ch[i].job);
        free(c.ch[i].held);
    }
    plumb_srv_lease_end(srv->sched, c.lease); /* the model may be switched once no request holds it */
}

static void on_error(void *app, plumb_http_conn *hc, int status, const char *code, const char *message) {
    conn c = {.srv = app, .hc = hc, .t0 = now_s()};
    plumb_srv_api_send_error(&c, status, NULL, code, "%s", message);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

plumb_server_params plumb_server_default_params(void) {
    return (plumb_server_params){.host = "127.0.0.1", .port = 8080, .n_parallel = 4, .n_batch = 512,
                                 .prefill_chunk = 64, .queue_size = 16, .max_connections = 128,
                                 .max_body = 1u << 20, .max_header = 16u << 10, .timeout_s = 600,
                                 .request_timeout_s = 30, .pooling = -1, .agent_port = -1, .n_offload = -1};
}

/* What the agent check reports (agent.h), on the agent's thread. */
static void agent_status(void *user, plumb_srv_agent_status *out) {
    plumb_server_t *s = user;
    if (atomic_load(&s->draining)) {
        out->state = PLUMB_SRV_AGENT_DRAINING;
        return;
    }
    const plumb_srv_state st = plumb_srv_sched_state(s->sched);
    out->state = st == PLUMB_SRV_LOADING ? PLUMB_SRV_AGENT_LOADING : st == PLUMB_SRV_FAILED ? PLUMB_SRV_AGENT_FAILED
                                                                                          : PLUMB_SRV_AGENT_SERVING;
    if (out->state == PLUMB_SRV_AGENT_SERVING && plumb_srv_sched_device_lost(s->sched, NULL, 0))
        out->state = PLUMB_SRV_AGENT_DEVICE_LOST;
    plumb_srv_sched_slot_counts(s->sched, &out->free_slots, &out->total_slots);
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
    if ((!p->model_path && !p->catalog) || (p->catalog && (!p->catalog->list || !p->catalog->resolve)) ||
        p->n_parallel < 1 || p->n_parallel > 256 || p->queue_size < 0 || p->port < 0 || p->port > 65535 ||
        p->max_connections < 1 || p->max_per_client < 0 || p->timeout_s <= 0 || !(p->request_timeout_s > 0) ||
        p->agent_port < -1 || p->agent_port > 65535)
        return fail_start(s, PLUMB_E_INVALID_ARG, "invalid server parameters");
    if (p->catalog && p->embeddings)
        return fail_start(s, PLUMB_E_INVALID_ARG, "an embeddings server serves one model: it takes no model catalog");
    if (p->api_key && strlen(p->api_key) > 512) return fail_start(s, PLUMB_E_INVALID_ARG, "the API key is longer than 512 bytes");
    if (p->api_key) snprintf(s->key, sizeof s->key, "%s", p->api_key);
    s->started = time(NULL);
    if (p->alias && p->model_path) snprintf(s->alias, sizeof s->alias, "%s", p->alias);
    else if (p->model_path) default_alias(p->model_path, s->alias, sizeof s->alias);

    plumb_srv_sched_params sp = {.model_path = p->model_path,
                                 .model_id = s->alias,
                                 .switchable = p->catalog != NULL,
                                 .embeddings = p->embeddings,
                                 .pooling = p->pooling,
                                 .n_parallel = p->n_parallel,
                                 .n_ctx = p->n_ctx,
                                 .n_threads = p->n_threads,
                                 .no_repack = p->no_repack,
                                 .fast_gemm = p->fast_gemm,
                                 .n_batch = p->n_batch,
                                 .prefill_chunk = p->prefill_chunk,
                                 .queue_size = p->queue_size,
                                 .chat_format = p->chat_format,
                                 .chat_template = p->chat_template,
                                 .chat_template_len = p->chat_template_len,
                                 .use_mmap = p->use_mmap,
                                 .device = p->device,
                                 .remote_key_file = p->remote_key_file,
                                 .n_offload = p->n_offload};
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
    if (p->agent_port >= 0) {
        /* a few connections per checking balancer, answered at once: 64 open and a second's
         * read cover many balancers, and a flood only closes its own oldest connections */
        plumb_srv_agent_params ap = {.host = p->agent_host ? p->agent_host : p->host, .port = p->agent_port,
                                     .max_clients = 64, .read_ms = 1000};
        if ((st = plumb_srv_agent_start(&ap, agent_status, s, &s->agent, why, sizeof why)))
            return fail_start(s, st, "%s", why);
    }
    *out = s;
    return PLUMB_OK;
}

int plumb_server_port(const plumb_server_t *s) { return plumb_httpd_port(s->httpd); }

int plumb_server_agent_port(const plumb_server_t *s) { return s->agent ? plumb_srv_agent_port(s->agent) : -1; }

plumb_status plumb_server_wait_loaded(plumb_server_t *s, const char **message) {
    return plumb_srv_sched_wait_ready(s->sched, message) == PLUMB_SRV_READY ? PLUMB_OK : PLUMB_E_FORMAT;
}

bool plumb_server_loading(plumb_server_t *s) { return plumb_srv_sched_state(s->sched) == PLUMB_SRV_LOADING; }

void plumb_server_device(plumb_server_t *s, char *spec, size_t cap, int32_t *n_offloaded, int32_t *n_layers) {
    plumb_srv_sched_device(s->sched, spec, cap, n_offloaded, n_layers);
}

/* The listener stays open while the requests in flight finish: a balancer may have sent
 * requests before it saw the drain (some already in the listener's backlog, which closing it
 * would reset), and those get a clean 503 with Retry-After that it can retry elsewhere, while
 * its health check reads {"status":"draining"} rather than a refused connection. */
void plumb_server_shutdown(plumb_server_t *s, double grace_s) {
    if (!s->httpd) return;
    atomic_store(&s->draining, true); /* the agent says "drain", /health 503 */
    if (s->p.drain_delay_s > 0) {     /* serve on until the balancer has seen it */
        const double d = s->p.drain_delay_s;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    plumb_httpd_drain(s->httpd);      /* idle kept-alive connections close; new requests are refused */
    plumb_httpd_wait_idle(s->httpd, grace_s);
    plumb_httpd_stop_accepting(s->httpd);
    /* jobs still running end now (503), which lets their connection threads finish */
    plumb_srv_sched_stop(s->sched);
    plumb_httpd_free(s->httpd);
    s->httpd = NULL;
    plumb_srv_agent_free(s->agent);
    s->agent = NULL;
}

void plumb_server_free(plumb_server_t *s) {
    if (!s) return;
    if (s->httpd) plumb_server_shutdown(s, 0); /* when still serving */
    plumb_srv_agent_free(s->agent);               /* when the HTTP listener failed to start */
    if (s->sched) plumb_srv_sched_free(s->sched);
    plumb_srv_metrics_destroy(&s->metrics);
    free(s);
}
