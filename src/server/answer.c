/* answer.c — the answer to a generation request, in OpenAI's JSON: whole (one response with a
 * choice per job) or streamed (server-sent event chunks, each for one choice, by index), with
 * usage, llama-server's timings, log probabilities, and tool calls split out of the text in the
 * syntax the model writes them (tools.h). */
#include "api.h"

#include "gen.h"
#include "logprobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Usage over every choice: the prompt once, the generated tokens of all. */
static void add_usage(cJSON *obj, const conn *c) {
    int32_t gen = 0;
    for (int i = 0; i < c->n_ch; i++) gen += c->ch[i].pr.n_gen;
    const plumb_srv_progress *pr = &c->ch[0].pr;
    cJSON *u = cJSON_AddObjectToObject(obj, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", pr->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", gen);
    cJSON_AddNumberToObject(u, "total_tokens", pr->n_prompt + gen);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "prompt_tokens_details"), "cached_tokens", pr->n_cached);
}

/* llama-server's "timings" of a finished job. */
static void add_timings(cJSON *obj, const plumb_srv_progress *pr) {
    cJSON *t = cJSON_AddObjectToObject(obj, "timings");
    const int32_t pn = pr->n_prompt - pr->n_cached, gn = pr->n_gen;
    const double pms = pr->prompt_ms > 0 ? pr->prompt_ms : 0, gms = pr->predicted_ms > 0 ? pr->predicted_ms : 0;
    cJSON_AddNumberToObject(t, "cache_n", pr->n_cached);
    cJSON_AddNumberToObject(t, "prompt_n", pn);
    cJSON_AddNumberToObject(t, "prompt_ms", pms);
    cJSON_AddNumberToObject(t, "prompt_per_token_ms", pn > 0 ? pms / pn : 0);
    cJSON_AddNumberToObject(t, "prompt_per_second", pms > 0 ? pn * 1e3 / pms : 0);
    cJSON_AddNumberToObject(t, "predicted_n", gn);
    cJSON_AddNumberToObject(t, "predicted_ms", gms);
    cJSON_AddNumberToObject(t, "predicted_per_token_ms", gn > 0 ? gms / gn : 0);
    cJSON_AddNumberToObject(t, "predicted_per_second", gms > 0 ? gn * 1e3 / gms : 0);
}

/* {"id", "object", "created", "model"} of a response or chunk. */
static cJSON *response_base(const conn *c, const char *object) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", c->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)c->created);
    cJSON_AddStringToObject(root, "model", plumb_srv_api_model_id(c));
    cJSON_AddStringToObject(root, "system_fingerprint", "plumb-" PLUMB_VERSION_STRING);
    return root;
}

/* Choice `index` carrying text (delta or whole) and a finish reason (NULL: null). */
static cJSON *choice(const conn *c, int index, bool chunk, const char *text, const char *role, const char *finish_reason) {
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", index);
    if (c->kind == PLUMB_SRV_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(ch, chunk ? "delta" : "message");
        if (role) cJSON_AddStringToObject(m, "role", role);
        if (text) cJSON_AddStringToObject(m, "content", text);
    } else
        cJSON_AddStringToObject(ch, "text", text ? text : "");
    cJSON_AddNullToObject(ch, "logprobs");
    if (finish_reason) cJSON_AddStringToObject(ch, "finish_reason", finish_reason);
    else cJSON_AddNullToObject(ch, "finish_reason");
    return ch;
}

/* Puts the log probabilities of choice i's tokens not yet sent into its choice object ch.
 * false when out of memory. */
static bool attach_logprobs(conn *c, int i, cJSON *ch) {
    if (!c->logprobs) return true;
    api_choice *a = &c->ch[i];
    plumb_srv_logprob *r;
    size_t n;
    if (plumb_srv_job_logprobs(c->srv->sched, a->job, a->lp_sent, &r, &n)) return false;
    plumb_srv_sched_borrow(c->srv->sched);
    const plumb_vocab_t *v = plumb_model_vocab(plumb_srv_sched_model(c->srv->sched));
    cJSON *lp = plumb_srv_logprobs_json(v, r, n, c->kind == PLUMB_SRV_CHAT, &a->lp_offset);
    plumb_srv_sched_unborrow(c->srv->sched);
    free(r);
    if (!lp) return false;
    a->lp_sent += n;
    return cJSON_ReplaceItemInObjectCaseSensitive(ch, "logprobs", lp);
}

/* A chunk of choice i. */
static cJSON *chunk(const conn *c, int i, const char *text, const char *role, const char *finish_reason) {
    cJSON *root = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice(c, i, true, text, role, finish_reason));
    if (c->include_usage) cJSON_AddNullToObject(root, "usage");
    return root;
}

static cJSON *first_choice(cJSON *root) { return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0); }

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

/* The client left: the jobs end, and the request counts as cancelled. */
static bool cancelled(conn *c) {
    for (int i = 0; i < c->n_ch; i++) plumb_srv_job_cancel(c->srv->sched, c->ch[i].job);
    plumb_srv_metrics_cancelled(&c->srv->metrics);
    plumb_srv_api_log(c, "cancelled");
    return false;
}

/* A chunk of choice i with tool_calls[0] = {"index": k, ...}: the call's id, type and name
 * with empty arguments (args NULL), or its arguments. */
static cJSON *call_chunk(const conn *c, int i, int k, const cJSON *call, const char *args) {
    cJSON *root = chunk(c, i, NULL, NULL, NULL);
    cJSON *delta = cJSON_GetObjectItemCaseSensitive(first_choice(root), "delta");
    cJSON *tc = cJSON_CreateObject(), *f = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(delta, "tool_calls"), tc);
    cJSON_AddNumberToObject(tc, "index", k);
    const cJSON *fn = call ? cJSON_GetObjectItemCaseSensitive(call, "function") : NULL;
    if (!args) {
        cJSON_AddStringToObject(tc, "id", cJSON_GetObjectItemCaseSensitive(call, "id")->valuestring);
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON_AddStringToObject(f, "name", cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring);
    }
    cJSON_AddStringToObject(f, "arguments", args ? args : "");
    cJSON_AddItemToObject(tc, "function", f);
    return root;
}

/* The held end of choice i's streamed answer with tools: its text, then each call as OpenAI
 * streams one (id and name, then the arguments), numbered after the calls already streamed.
 * *any_call when there was a call. */
static bool send_held_calls(conn *c, int i, bool *any_call) {
    api_choice *a = &c->ch[i];
    char *content;
    cJSON *calls;
    *any_call = false;
    if (plumb_srv_tools_parse(c->syntax, a->held ? a->held : "", a->held_len, &content, &calls)) return false;
    bool ok = !content || send_event(c, chunk(c, i, content, NULL, NULL));
    const cJSON *call;
    cJSON_ArrayForEach(call, calls) {
        const char *args = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(call, "function"), "arguments")->valuestring;
        ok = ok && send_event(c, call_chunk(c, i, a->n_calls, call, NULL)) && send_event(c, call_chunk(c, i, a->n_calls, call, args));
        a->n_calls++;
    }
    *any_call = a->n_calls > 0;
    free(content);
    cJSON_Delete(calls);
    return ok;
}

/* Drops the first n held bytes of choice a. */
static void drop_held(api_choice *a, size_t n) {
    memmove(a->held, a->held + n, a->held_len - n + 1);
    a->held_len -= n;
}

/* Sends held[0..n) of choice i as content (with its log probabilities) and drops it. */
static bool send_held_content(conn *c, int i, size_t n) {
    api_choice *a = &c->ch[i];
    char keep = a->held[n];
    a->held[n] = '\0';
    cJSON *ev = chunk(c, i, a->held, NULL, NULL);
    bool ok = attach_logprobs(c, i, first_choice(ev)) && send_event(c, ev);
    a->held[n] = keep;
    drop_held(a, n);
    return ok;
}

enum { CALL_CONTENT, CALL_HEAD, CALL_ARGS, CALL_TAIL, CALL_WHOLE };

/* Hermes calls as they are written: text streams as content until a call starts; then a
 * delta with the call's index, id, type and name as soon as the name is complete, and the
 * arguments' text as it comes (OpenAI's chunks). A call whose head is not the usual one is
 * kept whole and sent at the end. */
static bool stream_hermes(conn *c, int i) {
    api_choice *a = &c->ch[i];
    for (;;) {
        if (a->call_state == CALL_CONTENT) {
            size_t safe = plumb_srv_tools_content_prefix(c->syntax, a->held, a->held_len);
            if (safe && !send_held_content(c, i, safe)) return false;
            static const char tag[] = "<tool_call>", bare[] = "{\"name\"";
            const bool started = (a->held_len >= sizeof tag - 1 && !memcmp(a->held, tag, sizeof tag - 1)) ||
                                 (a->held_len >= sizeof bare - 1 && !memcmp(a->held, bare, sizeof bare - 1));
            if (!started) return true; /* nothing held, or what may become a marker */
            a->call_state = CALL_HEAD;
        }
        if (a->call_state == CALL_HEAD) {
            size_t name, name_len, args;
            int r = plumb_srv_tools_call_head(a->held, a->held_len, &name, &name_len, &args);
            if (r == 0) return true;
            if (r < 0) {
                a->call_state = CALL_WHOLE;
                return true;
            }
            char id[32], fname[72];
            plumb_srv_tools_call_id(id, sizeof id);
            snprintf(fname, sizeof fname, "%.*s", (int)(name_len < 64 ? name_len : 64), a->held + name);
            cJSON *call = cJSON_CreateObject(), *fn = cJSON_AddObjectToObject(call, "function");
            cJSON_AddStringToObject(call, "id", id);
            cJSON_AddStringToObject(fn, "name", fname);
            bool ok = send_event(c, call_chunk(c, i, a->n_calls, call, NULL));
            cJSON_Delete(call);
            if (!ok) return false;
            a->call_tagged = a->held[0] == '<';
            drop_held(a, args);
            memset(&a->scan, 0, sizeof a->scan);
            a->call_state = CALL_ARGS;
        }
        if (a->call_state == CALL_ARGS) {
            size_t end = plumb_srv_json_scan_to_end(&a->scan, a->held, 0, a->held_len);
            if (end) {
                char keep = a->held[end];
                a->held[end] = '\0';
                bool ok = send_event(c, call_chunk(c, i, a->n_calls, NULL, a->held));
                a->held[end] = keep;
                drop_held(a, end);
                if (!ok) return false;
            }
            if (a->scan.depth > 0 || !a->scan.started) return true;
            a->call_state = CALL_TAIL;
        }
        if (a->call_state == CALL_TAIL) {
            size_t end;
            int r = plumb_srv_tools_call_tail(a->held, a->held_len, a->call_tagged, &end);
            if (r == 0) return true;
            a->n_calls++;
            if (r > 0) drop_held(a, end);
            a->call_state = CALL_CONTENT;
            continue;
        }
        return true; /* CALL_WHOLE: kept for the end */
    }
}

/* Streams the text choice i has produced past what was sent (held back where a tool call may
 * be starting), with its log probabilities. */
static bool stream_text(conn *c, int i, char *text, size_t len) {
    api_choice *a = &c->ch[i];
    a->sent += len;
    if (!c->tools) {
        cJSON *ev = chunk(c, i, text, NULL, NULL);
        return attach_logprobs(c, i, first_choice(ev)) && send_event(c, ev);
    }
    if (!plumb_gen_append(&a->held, &a->held_len, &a->held_cap, text, len)) return false;
    if (c->syntax == PLUMB_SRV_SYNTAX_HERMES) return stream_hermes(c, i);
    size_t safe = plumb_srv_tools_content_prefix(c->syntax, a->held, a->held_len);
    if (!safe) return true;
    char keep = a->held[safe];
    a->held[safe] = '\0';
    cJSON *ev = chunk(c, i, a->held, NULL, NULL);
    bool ok = attach_logprobs(c, i, first_choice(ev)) && send_event(c, ev);
    a->held[safe] = keep;
    memmove(a->held, a->held + safe, a->held_len - safe + 1);
    a->held_len -= safe;
    return ok;
}

/* Choice i has ended well: its held calls, its last chunk (finish reason, timings, the last
 * log probabilities). */
static bool stream_end(conn *c, int i) {
    api_choice *a = &c->ch[i];
    bool any_call = a->n_calls > 0, ok = true;
    /* what is held: text that looked like the start of a call, or a call kept whole (a call cut
     * short by the length limit stays as far as it was streamed) */
    if (c->tools && (a->call_state == CALL_CONTENT || a->call_state == CALL_WHOLE)) ok = send_held_calls(c, i, &any_call);
    const char *reason = any_call && !strcmp(a->pr.finish_reason, "stop") ? "tool_calls" : a->pr.finish_reason;
    cJSON *last = chunk(c, i, NULL, NULL, reason);
    if (c->timings) add_timings(last, &a->pr);
    if (c->logprobs && a->lp_sent < (size_t)a->pr.n_gen) ok = ok && attach_logprobs(c, i, first_choice(last));
    return ok && send_event(c, last);
}

bool plumb_srv_answer_stream(conn *c) {
    plumb_srv_sched *s = c->srv->sched;
    if (!plumb_http_stream_start(c->hc, 200, "text/event-stream", "Cache-Control: no-cache\r\n")) return cancelled(c);
    for (int i = 0; c->kind == PLUMB_SRV_CHAT && i < c->n_ch; i++)
        if (!send_event(c, chunk(c, i, "", "assistant", NULL))) return cancelled(c);
    int status = 200, left = c->n_ch;
    const int wait = c->n_ch > 1 ? POLL_MS / c->n_ch + 1 : POLL_MS;
    while (left > 0) {
        bool ok = true;
        for (int i = 0; i < c->n_ch && ok && status == 200; i++) {
            api_choice *a = &c->ch[i];
            if (a->done) continue;
            char *text;
            size_t len;
            if (plumb_srv_job_poll(s, a->job, a->sent, wait, &text, &len, &a->pr)) return cancelled(c);
            if (text) {
                ok = stream_text(c, i, text, len);
                free(text);
            } else if (a->pr.done) {
                a->done = true;
                left--;
                if (a->pr.error_status) {
                    status = a->pr.error_status;
                    ok = send_event(c, plumb_srv_api_error_json(status, a->pr.error_message, NULL, a->pr.error_code));
                } else
                    ok = stream_end(c, i);
            }
        }
        if (status != 200) break;
        if (ok && left > 0 && plumb_http_client_gone(c->hc)) ok = false;
        if (!ok) return cancelled(c);
    }
    bool ok = true;
    if (status == 200 && c->include_usage) {
        cJSON *u = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion.chunk" : "text_completion");
        cJSON_AddArrayToObject(u, "choices");
        add_usage(u, c);
        ok = send_event(c, u);
    }
    if (status != 200) /* the other choices end too */
        for (int i = 0; i < c->n_ch; i++) plumb_srv_job_cancel(s, c->ch[i].job);
    ok = ok && send_event(c, NULL) && plumb_http_stream_end(c->hc);
    c->progress = c->ch[0].pr, c->has_progress = true;
    if (!ok) return cancelled(c);
    plumb_srv_metrics_request(&c->srv->metrics, status);
    char outcome[32];
    snprintf(outcome, sizeof outcome, "%d streamed", status);
    plumb_srv_api_log(c, outcome);
    return true;
}

/* The whole choice i of a finished job: its text (or its text and tool calls), finish reason
 * and log probabilities. NULL when out of memory. */
static cJSON *whole_choice(conn *c, int i, char **text_out) {
    api_choice *a = &c->ch[i];
    char *text;
    size_t len;
    if (plumb_srv_job_poll(c->srv->sched, a->job, 0, 0, &text, &len, &a->pr)) return NULL;
    cJSON *calls = NULL;
    if (c->tools) { /* the answer's text and its calls */
        char *content;
        plumb_status st = plumb_srv_tools_parse(c->syntax, text ? text : "", len, &content, &calls);
        free(text);
        if (st) return NULL;
        text = content;
    }
    const char *reason = calls && !strcmp(a->pr.finish_reason, "stop") ? "tool_calls" : a->pr.finish_reason;
    cJSON *ch = choice(c, i, false, text || !calls ? (text ? text : "") : NULL, c->kind == PLUMB_SRV_CHAT ? "assistant" : NULL,
                       reason);
    if (calls) {
        cJSON *m = cJSON_GetObjectItemCaseSensitive(ch, "message");
        if (!text) cJSON_AddNullToObject(m, "content");
        cJSON_AddItemToObject(m, "tool_calls", calls);
    }
    if (!attach_logprobs(c, i, ch)) {
        cJSON_Delete(ch);
        free(text);
        return NULL;
    }
    *text_out = text;
    return ch;
}

bool plumb_srv_answer_whole(conn *c) {
    plumb_srv_sched *s = c->srv->sched;
    for (int i = 0; i < c->n_ch; i++) { /* wait for the end, watching for the client resetting the connection */
        api_choice *a = &c->ch[i];
        for (;;) {
            char *text;
            size_t len;
            if (plumb_srv_job_poll(s, a->job, (size_t)-1, POLL_MS, &text, &len, &a->pr)) return cancelled(c);
            if (a->pr.done) break;
            if (plumb_http_client_gone(c->hc)) return cancelled(c);
        }
        if (a->pr.error_status) {
            for (int k = 0; k < c->n_ch; k++) plumb_srv_job_cancel(s, c->ch[k].job);
            return plumb_srv_api_send_json(c, a->pr.error_status, plumb_srv_api_error_json(a->pr.error_status, a->pr.error_message,
                                                                                          NULL, a->pr.error_code));
        }
    }
    cJSON *root = response_base(c, c->kind == PLUMB_SRV_CHAT ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    char *first_text = NULL;
    for (int i = 0; i < c->n_ch; i++) {
        char *text = NULL;
        cJSON *ch = whole_choice(c, i, &text);
        if (!ch) {
            free(first_text);
            cJSON_Delete(root);
            return plumb_srv_api_send_error(c, 500, NULL, NULL, "out of memory");
        }
        cJSON_AddItemToArray(choices, ch);
        if (i == 0) first_text = text;
        else free(text);
    }
    add_usage(root, c);
    if (c->timings) add_timings(root, &c->ch[0].pr);
    if (c->kind == PLUMB_SRV_INFILL) /* llama-server's /infill answers with "content" */
        cJSON_AddStringToObject(root, "content", first_text ? first_text : "");
    free(first_text);
    c->progress = c->ch[0].pr, c->has_progress = true;
    return plumb_srv_api_send_json(c, 200, root);
}
