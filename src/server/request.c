/* request.c — JSON request bodies of the server, parsed with cJSON and checked field by
 * field (see request.h). Unknown fields are ignored, as OpenAI clients send many; a known
 * field of the wrong type or out of range is an error naming it. */
#include "request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static plumb_status fail(plumb_srv_error *err, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    snprintf(err->param, sizeof err->param, "%s", param);
    return PLUMB_E_INVALID_ARG;
}

/* Length of the well-formed UTF-8 sequence at p[0..n) (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), 0 when there is none. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    unsigned char b = p[0];
    size_t len = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (b == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
    if (b == 0xED && p[1] > 0x9F) return 0; /* surrogate */
    if (b == 0xF0 && p[1] < 0x90) return 0; /* overlong */
    if (b == 0xF4 && p[1] > 0x8F) return 0; /* past U+10FFFF */
    return len;
}

/* The body is UTF-8 (RFC 8259 section 8.1) and no string holds U+0000, raw or escaped: the
 * server's strings end at NUL, so such a string would be cut short rather than kept whole. */
static plumb_status check_text(const char *body, size_t len, plumb_srv_error *err) {
    const unsigned char *p = (const unsigned char *)body;
    bool in_string = false;
    for (size_t i = 0; i < len;) {
        if (p[i] == 0) return fail(err, "", "the request body holds a NUL byte (at byte %zu)", i);
        if (in_string && p[i] == '\\') {
            if (i + 5 < len && p[i + 1] == 'u' && !memcmp(p + i + 2, "0000", 4))
                return fail(err, "", "a string holds \\u0000 (at byte %zu): strings with NUL characters are not accepted", i);
            i += i + 1 < len && p[i + 1] < 0x80 ? 2 : 1;
            continue;
        }
        if (p[i] == '"') in_string = !in_string;
        size_t l = utf8_len(p + i, len - i);
        if (!l) return fail(err, "", "the request body is not valid UTF-8 (at byte %zu)", i);
        i += l;
    }
    return PLUMB_OK;
}

static int cmp_key(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Refuses an object with the same key twice, anywhere in j: parsers disagree on which one
 * counts (the first, or the last as in Python and JavaScript). */
static plumb_status check_keys(const cJSON *j, plumb_srv_error *err) {
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) return PLUMB_OK;
    int n = cJSON_GetArraySize(j);
    if (cJSON_IsObject(j) && n > 1) {
        const char **keys = malloc((size_t)n * sizeof *keys);
        if (!keys) return PLUMB_E_NOMEM;
        int k = 0;
        for (const cJSON *c = j->child; c; c = c->next) keys[k++] = c->string;
        qsort(keys, (size_t)n, sizeof *keys, cmp_key);
        const char *dup = NULL;
        for (int i = 1; i < n && !dup; i++)
            if (!strcmp(keys[i - 1], keys[i])) dup = keys[i];
        plumb_status st = dup ? fail(err, dup, "the key '%.60s' appears twice in one object", dup) : PLUMB_OK;
        free(keys);
        if (st) return st;
    }
    for (const cJSON *c = j->child; c; c = c->next) {
        plumb_status st = check_keys(c, err);
        if (st) return st;
    }
    return PLUMB_OK;
}

/* Parses body as a JSON object into *root. */
static plumb_status parse_object(const char *body, size_t len, cJSON **root, plumb_srv_error *err) {
    memset(err, 0, sizeof *err);
    *root = NULL;
    if (!body || len == 0) return fail(err, "", "the request body is empty; a JSON object is expected");
    plumb_status st = check_text(body, len, err);
    if (st) return st;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!j) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return fail(err, "", "the request body is not valid JSON (near byte %zu)", at);
    }
    /* only white space may follow the value */
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(j);
            return fail(err, "", "the request body has data after the JSON value (at byte %zu)", (size_t)(p - body));
        }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return fail(err, "", "the request body must be a JSON object");
    }
    if ((st = check_keys(j, err))) {
        cJSON_Delete(j);
        return st;
    }
    *root = j;
    return PLUMB_OK;
}

/* A present, non-null field, or NULL. */
static const cJSON *field(const cJSON *o, const char *key) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

/* Optional number in [lo, hi]: 1 when set, 0 when absent or null, -1 after filling err. */
static int opt_number(const cJSON *o, const char *key, double lo, double hi, double *out, plumb_srv_error *err) {
    const cJSON *f = field(o, key);
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble)) {
        fail(err, key, "'%s' must be a number", key);
        return -1;
    }
    if (f->valuedouble < lo || f->valuedouble > hi) {
        fail(err, key, "'%s' must be between %g and %g (got %g)", key, lo, hi, f->valuedouble);
        return -1;
    }
    *out = f->valuedouble;
    return 1;
}

/* Optional integer in [lo, hi], as opt_number. */
static int opt_int(const cJSON *o, const char *key, double lo, double hi, double *out, plumb_srv_error *err) {
    const cJSON *f = field(o, key);
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || floor(f->valuedouble) != f->valuedouble) {
        fail(err, key, "'%s' must be an integer", key);
        return -1;
    }
    return opt_number(o, key, lo, hi, out, err);
}

/* Optional boolean, as opt_number. */
static int opt_bool(const cJSON *o, const char *key, bool *out, plumb_srv_error *err) {
    const cJSON *f = field(o, key);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) {
        fail(err, key, "'%s' must be a boolean", key);
        return -1;
    }
    *out = cJSON_IsTrue(f);
    return 1;
}

void plumb_srv_request_free(plumb_srv_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) free((char *)r->msgs[i].content);
    free(r->msgs);
    free(r->prompt);
    free(r->ids);
    for (int i = 0; i < r->n_stops; i++) free(r->stops[i]);
    memset(r, 0, sizeof *r);
}

/* A message's content: a string, or an array of {"type": "text", "text": string} parts
 * (joined with newlines); null only for an assistant. */
static plumb_status message_content(const cJSON *m, size_t i, bool assistant, char **out, plumb_srv_error *err) {
    char param[40];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    const cJSON *c = field(m, "content");
    if (!c) {
        if (assistant) return (*out = strdup("")) ? PLUMB_OK : PLUMB_E_NOMEM;
        return fail(err, param, "'%s' is required", param);
    }
    if (cJSON_IsString(c)) return (*out = strdup(c->valuestring)) ? PLUMB_OK : PLUMB_E_NOMEM;
    if (!cJSON_IsArray(c)) return fail(err, param, "'%s' must be a string or an array of text parts", param);
    size_t total = 1;
    const cJSON *part;
    int k = 0;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text))
            return fail(err, param, "'%s[%d]' must be a {\"type\": \"text\", \"text\": string} part (only text is supported)",
                        param, k);
        total += strlen(text->valuestring) + 1;
        k++;
    }
    char *s = malloc(total);
    if (!s) return PLUMB_E_NOMEM;
    size_t at = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        if (at) s[at++] = '\n';
        size_t l = strlen(t);
        memcpy(s + at, t, l);
        at += l;
    }
    s[at] = '\0';
    *out = s;
    return PLUMB_OK;
}

static plumb_status parse_messages(const cJSON *root, plumb_srv_request *r, plumb_srv_error *err) {
    const cJSON *ms = field(root, "messages");
    if (!ms) return fail(err, "messages", "'messages' is required");
    if (!cJSON_IsArray(ms)) return fail(err, "messages", "'messages' must be an array of message objects");
    int n = cJSON_GetArraySize(ms);
    if (n == 0) return fail(err, "messages", "'messages' must not be empty");
    if (n > PLUMB_SRV_MAX_MESSAGES) return fail(err, "messages", "'messages' has more than %d messages", PLUMB_SRV_MAX_MESSAGES);
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return PLUMB_E_NOMEM;
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        size_t i = r->n_msgs;
        char param[40];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!cJSON_IsObject(m)) return fail(err, param, "'%s' must be an object", param);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!cJSON_IsString(role)) return fail(err, param, "'%s' must be a string", param);
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return fail(err, param, "'%s' must be one of system, developer, user, assistant (got '%.40s')", param,
                        role->valuestring);
        char *content = NULL;
        plumb_status st = message_content(m, i, !strcmp(rs, "assistant"), &content, err);
        if (st) return st;
        r->msgs[i].role = !strcmp(rs, "system") ? "system" : !strcmp(rs, "user") ? "user" : "assistant";
        r->msgs[i].content = content;
        r->n_msgs++;
    }
    return PLUMB_OK;
}

static plumb_status parse_ids(const cJSON *arr, const char *param, int32_t **ids, size_t *n, plumb_srv_error *err) {
    int count = cJSON_GetArraySize(arr);
    if (count > PLUMB_SRV_MAX_IDS) return fail(err, param, "'%s' has more than %d tokens", param, PLUMB_SRV_MAX_IDS);
    *ids = count ? malloc((size_t)count * sizeof **ids) : NULL;
    if (count && !*ids) return PLUMB_E_NOMEM;
    *n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it) || floor(it->valuedouble) != it->valuedouble || it->valuedouble < 0 ||
            it->valuedouble > INT32_MAX) {
            free(*ids);
            *ids = NULL;
            return fail(err, param, "'%s[%zu]' must be a token id (an integer >= 0)", param, *n);
        }
        (*ids)[(*n)++] = (int32_t)it->valuedouble;
    }
    return PLUMB_OK;
}

/* prompt: a string, an array of one string, or an array of token ids. */
static plumb_status parse_prompt(const cJSON *root, plumb_srv_request *r, plumb_srv_error *err) {
    const cJSON *p = field(root, "prompt");
    if (!p) return fail(err, "prompt", "'prompt' is required");
    if (cJSON_IsString(p)) return (r->prompt = strdup(p->valuestring)) ? PLUMB_OK : PLUMB_E_NOMEM;
    if (!cJSON_IsArray(p)) return fail(err, "prompt", "'prompt' must be a string or an array of token ids");
    int n = cJSON_GetArraySize(p);
    if (n >= 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0))) {
        if (n != 1) return fail(err, "prompt", "only one prompt per request is supported");
        return (r->prompt = strdup(cJSON_GetArrayItem(p, 0)->valuestring)) ? PLUMB_OK : PLUMB_E_NOMEM;
    }
    if (n >= 1 && cJSON_IsArray(cJSON_GetArrayItem(p, 0))) {
        if (n != 1) return fail(err, "prompt", "only one prompt per request is supported");
        p = cJSON_GetArrayItem(p, 0);
    }
    if (cJSON_GetArraySize(p) == 0) return fail(err, "prompt", "'prompt' must not be empty");
    return parse_ids(p, "prompt", &r->ids, &r->n_ids, err);
}

static plumb_status parse_stop(const cJSON *root, plumb_srv_request *r, plumb_srv_error *err) {
    const cJSON *s = field(root, "stop");
    if (!s) return PLUMB_OK;
    if (!cJSON_IsString(s) && !cJSON_IsArray(s)) return fail(err, "stop", "'stop' must be a string or an array of strings");
    const cJSON *one = s;
    if (cJSON_IsArray(s)) {
        if (cJSON_GetArraySize(s) > PLUMB_SRV_MAX_STOPS)
            return fail(err, "stop", "'stop' has more than %d strings", PLUMB_SRV_MAX_STOPS);
        one = s->child;
    }
    for (; one; one = cJSON_IsArray(s) ? one->next : NULL) {
        if (!cJSON_IsString(one)) return fail(err, "stop", "'stop' must be a string or an array of strings");
        size_t l = strlen(one->valuestring);
        if (l == 0) continue; /* an empty stop string never stops anything */
        if (l > PLUMB_SRV_MAX_STOP_LEN)
            return fail(err, "stop", "a stop string is longer than %d bytes", PLUMB_SRV_MAX_STOP_LEN);
        if (!(r->stops[r->n_stops] = strdup(one->valuestring))) return PLUMB_E_NOMEM;
        r->n_stops++;
    }
    return PLUMB_OK;
}

static plumb_status parse_fields(const cJSON *root, plumb_srv_kind kind, int32_t max_tokens_cap,
                                 plumb_srv_request *r, plumb_srv_error *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) return fail(err, "model", "'model' must be a string");
    plumb_status st = kind == PLUMB_SRV_CHAT ? parse_messages(root, r, err) : parse_prompt(root, r, err);
    if (st) return st;
    double v;
    int got;
    static const char *const max_keys[] = {"max_tokens", "max_completion_tokens"};
    for (int k = 0; k < 2; k++) {
        if ((got = opt_int(root, max_keys[k], 1, max_tokens_cap, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
        if (got) r->max_tokens = (int32_t)v;
    }
    if ((got = opt_number(root, "temperature", 0, 2, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
    if (got) r->sampling.temperature = (float)v;
    if ((got = opt_number(root, "top_p", 0, 1, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
    if (got) { /* 0, or a value too small for a float: only the most likely token */
        float f = (float)v;
        r->sampling.top_p = f >= 1e-6f ? f : 1e-6f;
    }
    if ((got = opt_int(root, "top_k", 0, 1 << 30, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
    if (got) r->sampling.top_k = (int32_t)v;
    if ((got = opt_number(root, "min_p", 0, 1, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
    if (got) r->sampling.min_p = (float)v;
    if ((got = opt_number(root, "presence_penalty", -2, 2, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
    if (got) r->sampling.presence_penalty = (float)v;
    if ((got = opt_number(root, "frequency_penalty", -2, 2, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
    if (got) r->sampling.frequency_penalty = (float)v;
    if ((got = opt_int(root, "seed", -9223372036854775808.0, 18446744073709551615.0, &v, err)) < 0)
        return PLUMB_E_INVALID_ARG;
    if (got) {
        r->sampling.seed = v < 0 ? (uint64_t)(int64_t)v : v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v;
        r->seed_given = true;
    }
    if ((got = opt_int(root, "n", 1, 1, &v, err)) < 0) {
        snprintf(err->message, sizeof err->message, "'n' must be 1 (one choice per request)");
        return PLUMB_E_INVALID_ARG;
    }
    if ((st = parse_stop(root, r, err))) return st;
    if (opt_bool(root, "stream", &r->stream, err) < 0) return PLUMB_E_INVALID_ARG;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return fail(err, "stream_options", "'stream_options' must be an object");
        if (opt_bool(so, "include_usage", &r->include_usage, err) < 0) {
            snprintf(err->param, sizeof err->param, "stream_options.include_usage");
            return PLUMB_E_INVALID_ARG;
        }
    }
    if (opt_bool(root, "parse_special", &r->parse_special, err) < 0) return PLUMB_E_INVALID_ARG;
    bool logprobs = false;
    if (opt_bool(root, "logprobs", &logprobs, err) < 0) return PLUMB_E_INVALID_ARG;
    if (logprobs) return fail(err, "logprobs", "'logprobs' is not supported");
    return PLUMB_OK;
}

plumb_status plumb_srv_request_parse(const char *body, size_t len, plumb_srv_kind kind, int32_t max_tokens_cap,
                                     plumb_srv_request *out, plumb_srv_error *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->max_tokens = -1;
    out->sampling = plumb_sampler_default_params();
    out->sampling.repeat_last_n = -1; /* OpenAI's penalties look at the whole completion */
    cJSON *root;
    plumb_status st = parse_object(body, len, &root, err);
    if (st) return st;
    st = parse_fields(root, kind, max_tokens_cap, out, err);
    cJSON_Delete(root);
    if (st) {
        if (st == PLUMB_E_NOMEM) fail(err, "", "out of memory");
        plumb_srv_request_free(out);
    }
    return st;
}

plumb_status plumb_srv_parse_tokenize(const char *body, size_t len, char **content, size_t *content_len,
                                      bool *add_special, bool *parse_special, plumb_srv_error *err) {
    *content = NULL, *content_len = 0, *add_special = false, *parse_special = true;
    cJSON *root;
    plumb_status st = parse_object(body, len, &root, err);
    const cJSON *c = st ? NULL : cJSON_GetObjectItemCaseSensitive(root, "content");
    if (st) return st;
    if (!cJSON_IsString(c)) st = fail(err, "content", "'content' must be a string");
    else if (opt_bool(root, "add_special", add_special, err) < 0) st = PLUMB_E_INVALID_ARG;
    else if (opt_bool(root, "parse_special", parse_special, err) < 0) st = PLUMB_E_INVALID_ARG;
    else if (!(*content = strdup(c->valuestring))) st = PLUMB_E_NOMEM;
    else *content_len = strlen(*content);
    cJSON_Delete(root);
    return st;
}

plumb_status plumb_srv_parse_detokenize(const char *body, size_t len, int32_t **ids, size_t *n,
                                        plumb_srv_error *err) {
    *ids = NULL, *n = 0;
    cJSON *root;
    plumb_status st = parse_object(body, len, &root, err);
    if (st) return st;
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "tokens"))) st = fail(err, "tokens", "'tokens' must be an array of token ids");
    else st = parse_ids(cJSON_GetObjectItemCaseSensitive(root, "tokens"), "tokens", ids, n, err);
    cJSON_Delete(root);
    return st;
}

plumb_status plumb_srv_parse_apply_template(const char *body, size_t len, plumb_srv_request *out, char **tools_json,
                                            plumb_srv_error *err) {
    *tools_json = NULL;
    plumb_status st = plumb_srv_request_parse(body, len, PLUMB_SRV_CHAT, 1, out, err);
    if (st) return st;
    cJSON *root;
    if ((st = parse_object(body, len, &root, err))) { /* parsed once already: only memory can fail */
        plumb_srv_request_free(out);
        return st;
    }
    const cJSON *tools = field(root, "tools");
    if (tools && !cJSON_IsArray(tools)) st = fail(err, "tools", "'tools' must be an array of tool definitions");
    else if (tools && !(*tools_json = cJSON_PrintUnformatted(tools))) st = PLUMB_E_NOMEM;
    cJSON_Delete(root);
    if (st) plumb_srv_request_free(out);
    return st;
}
