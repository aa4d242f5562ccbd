/* request.c — JSON request bodies of the server, parsed with cJSON and checked field by
 * field (see request.h). A field of the OpenAI API that plumb does not implement is refused,
 * naming it; fields no API defines are ignored (clients send their own); a known field of the
 * wrong type or out of range is an error naming it. */
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
    free(r->messages_json);
    free(r->tools_json);
    free(r->grammar);
    free(r->prompt);
    free(r->suffix);
    for (size_t i = 0; i < r->n_extra; i++) free(r->extra[i]);
    free(r->extra);
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

/* A string field of o that must be there: 1, or -1 after filling err. */
static int need_string(const cJSON *o, const char *key, const char *param, const char **out, plumb_srv_error *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(f)) {
        fail(err, param, "'%s' must be a string", param);
        return -1;
    }
    *out = f->valuestring;
    return 1;
}

/* cJSON building that notes running out of memory in *ok (a half-built message must not pass
 * for a whole one): adds item (NULL: it could not be made) to an object under key, or to an
 * array when key is NULL. */
static cJSON *put(cJSON *to, const char *key, cJSON *item, bool *ok) {
    if (!item || !(key ? cJSON_AddItemToObject(to, key, item) : cJSON_AddItemToArray(to, item))) {
        cJSON_Delete(item);
        *ok = false;
        return NULL;
    }
    return item;
}

/* text parsed as JSON, or NULL when it is not JSON. cJSON does not tell a syntax error from a
 * lack of memory: a second try tells them apart (a failed allocation does not fail twice in a
 * row but when memory has truly run out, and then the request fails elsewhere too). */
static cJSON *parse_arguments(const char *text) {
    cJSON *j = cJSON_Parse(text);
    return j ? j : cJSON_Parse(text);
}

/* An assistant message's tool_calls: [{"id", "type": "function", "function": {"name",
 * "arguments": a JSON text}}], into out (as a template sees them: arguments as a JSON value
 * when they parse, else kept as the string). */
static plumb_status message_tool_calls(const cJSON *calls, size_t i, cJSON *out, plumb_srv_error *err) {
    char param[72];
    snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
    if (!cJSON_IsArray(calls)) return fail(err, param, "'%s' must be an array of tool calls", param);
    bool ok = true;
    cJSON *arr = put(out, "tool_calls", cJSON_CreateArray(), &ok);
    if (!arr) return PLUMB_E_NOMEM;
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        snprintf(param, sizeof param, "messages[%zu].tool_calls[%d]", i, k);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
        if (!cJSON_IsObject(c) || !cJSON_IsObject(fn) || (type && !cJSON_IsNull(type) && (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))))
            return fail(err, param, "'%s' must be {\"id\": string, \"type\": \"function\", \"function\": {\"name\": string, \"arguments\": string}}", param);
        const char *id = "", *name, *args;
        const cJSON *idf = cJSON_GetObjectItemCaseSensitive(c, "id");
        if (idf && !cJSON_IsNull(idf)) {
            if (!cJSON_IsString(idf)) return fail(err, param, "'%s.id' must be a string", param);
            id = idf->valuestring;
        }
        char sub[96];
        snprintf(sub, sizeof sub, "%s.function.name", param);
        if (need_string(fn, "name", sub, &name, err) < 0) return PLUMB_E_INVALID_ARG;
        snprintf(sub, sizeof sub, "%s.function.arguments", param);
        if (need_string(fn, "arguments", sub, &args, err) < 0) return PLUMB_E_INVALID_ARG;
        cJSON *call = put(arr, NULL, cJSON_CreateObject(), &ok);
        cJSON *f = call ? put(call, "function", cJSON_CreateObject(), &ok) : NULL;
        if (f) {
            put(call, "id", cJSON_CreateString(id), &ok);
            put(call, "type", cJSON_CreateString("function"), &ok);
            put(f, "name", cJSON_CreateString(name), &ok);
            cJSON *parsed = parse_arguments(args);
            put(f, "arguments", parsed ? parsed : cJSON_CreateString(args), &ok);
        }
        if (!ok) return PLUMB_E_NOMEM;
        k++;
    }
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
    cJSON *out = cJSON_CreateArray();
    plumb_status st = r->msgs && out ? PLUMB_OK : PLUMB_E_NOMEM;
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        if (st) break;
        size_t i = r->n_msgs;
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!cJSON_IsObject(m)) {
            st = fail(err, param, "'%s' must be an object", param);
            break;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!cJSON_IsString(role)) {
            st = fail(err, param, "'%s' must be a string", param);
            break;
        }
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        static const char *const roles[] = {"system", "user", "assistant", "tool"};
        const char *known = NULL;
        for (int k = 0; k < 4; k++)
            if (!strcmp(rs, roles[k])) known = roles[k];
        if (!known) {
            st = fail(err, param, "'%s' must be one of system, developer, user, assistant, tool (got '%.40s')", param,
                      role->valuestring);
            break;
        }
        const cJSON *calls = field(m, "tool_calls");
        const bool assistant = known == roles[2];
        if (calls && !assistant) {
            snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
            st = fail(err, param, "only assistant messages carry 'tool_calls'");
            break;
        }
        char *content = NULL;
        if ((st = message_content(m, i, assistant, &content, err))) break;
        r->msgs[i].role = known;
        r->msgs[i].content = content;
        r->n_msgs++;
        bool ok = true;
        cJSON *o = put(out, NULL, cJSON_CreateObject(), &ok);
        if (o) {
            put(o, "role", cJSON_CreateString(known), &ok);
            put(o, "content", assistant && calls && !field(m, "content") ? cJSON_CreateNull() : cJSON_CreateString(content), &ok);
        }
        if (!ok) {
            st = PLUMB_E_NOMEM;
            break;
        }
        if (calls) {
            r->has_tool_turns = true;
            if ((st = message_tool_calls(calls, i, o, err))) break;
        }
        if (known == roles[3]) { /* a tool's answer: the call it answers */
            r->has_tool_turns = true;
            const cJSON *id = field(m, "tool_call_id");
            snprintf(param, sizeof param, "messages[%zu].tool_call_id", i);
            if (id && !cJSON_IsString(id)) {
                st = fail(err, param, "'%s' must be a string", param);
                break;
            }
            if (id && !put(o, "tool_call_id", cJSON_CreateString(id->valuestring), &ok)) {
                st = PLUMB_E_NOMEM;
                break;
            }
        }
        const cJSON *name = field(m, "name");
        if (name) {
            snprintf(param, sizeof param, "messages[%zu].name", i);
            if (!cJSON_IsString(name)) {
                st = fail(err, param, "'%s' must be a string", param);
                break;
            }
            if (!put(o, "name", cJSON_CreateString(name->valuestring), &ok)) {
                st = PLUMB_E_NOMEM;
                break;
            }
        }
    }
    if (!st && !(r->messages_json = cJSON_PrintUnformatted(out))) st = PLUMB_E_NOMEM;
    cJSON_Delete(out);
    return st;
}

/* A function name as OpenAI allows it: 1-64 of [a-zA-Z0-9_-]. */
static bool good_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '-'))
            return false;
    return true;
}

/* tools, tool_choice, parallel_tool_calls. */
static plumb_status parse_tools(const cJSON *root, plumb_srv_request *r, plumb_srv_error *err) {
    r->parallel_tool_calls = true;
    if (opt_bool(root, "parallel_tool_calls", &r->parallel_tool_calls, err) < 0) return PLUMB_E_INVALID_ARG;
    const cJSON *tools = field(root, "tools"), *choice = field(root, "tool_choice");
    if (!tools) {
        if (choice && !(cJSON_IsString(choice) && !strcmp(choice->valuestring, "none")))
            return fail(err, "tool_choice", "'tool_choice' needs 'tools'");
        r->tool_choice = PLUMB_SRV_TOOLS_NONE;
        return PLUMB_OK;
    }
    if (!cJSON_IsArray(tools)) return fail(err, "tools", "'tools' must be an array of tool definitions");
    if (cJSON_GetArraySize(tools) > 128) return fail(err, "tools", "'tools' has more than 128 tools");
    cJSON *out = cJSON_CreateArray();
    if (!out) return PLUMB_E_NOMEM;
    plumb_status st = PLUMB_OK;
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        char param[48];
        snprintf(param, sizeof param, "tools[%d]", k);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type"), *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        if (!cJSON_IsObject(t) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsObject(fn)) {
            st = fail(err, param, "'%s' must be {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}} "
                                  "(only function tools are supported)", param);
            break;
        }
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name"), *params = field(fn, "parameters");
        const cJSON *desc = field(fn, "description"), *strict = field(fn, "strict");
        snprintf(param, sizeof param, "tools[%d].function.name", k);
        if (!cJSON_IsString(name) || !good_name(name->valuestring)) {
            st = fail(err, param, "'%s' must be 1 to 64 letters, digits, '_' or '-'", param);
            break;
        }
        for (const cJSON *o = tools->child; o != t; o = o->next)
            if (!strcmp(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "function"), "name")->valuestring,
                        name->valuestring)) {
                st = fail(err, param, "two tools are named '%s'", name->valuestring);
                break;
            }
        if (st) break;
        snprintf(param, sizeof param, "tools[%d].function.parameters", k);
        if (params && !cJSON_IsObject(params)) {
            st = fail(err, param, "'%s' must be a JSON Schema object", param);
            break;
        }
        snprintf(param, sizeof param, "tools[%d].function.description", k);
        if (desc && !cJSON_IsString(desc)) {
            st = fail(err, param, "'%s' must be a string", param);
            break;
        }
        snprintf(param, sizeof param, "tools[%d].function.strict", k);
        if (strict && !cJSON_IsBool(strict)) {
            st = fail(err, param, "'%s' must be a boolean", param);
            break;
        }
        bool ok = true;
        if (!put(out, NULL, cJSON_Duplicate(t, true), &ok)) {
            st = PLUMB_E_NOMEM;
            break;
        }
        k++;
    }
    if (!st && k == 0) st = fail(err, "tools", "'tools' must not be empty");
    if (!st && !(r->tools_json = cJSON_PrintUnformatted(out))) st = PLUMB_E_NOMEM;
    if (!st && choice) {
        if (cJSON_IsString(choice) && !strcmp(choice->valuestring, "auto")) r->tool_choice = PLUMB_SRV_TOOLS_AUTO;
        else if (cJSON_IsString(choice) && !strcmp(choice->valuestring, "none")) r->tool_choice = PLUMB_SRV_TOOLS_NONE;
        else if (cJSON_IsString(choice) && !strcmp(choice->valuestring, "required")) r->tool_choice = PLUMB_SRV_TOOLS_REQUIRED;
        else {
            const cJSON *fn = cJSON_IsObject(choice) ? cJSON_GetObjectItemCaseSensitive(choice, "function") : NULL;
            const cJSON *name = cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
            const cJSON *type = cJSON_IsObject(choice) ? cJSON_GetObjectItemCaseSensitive(choice, "type") : NULL;
            if (!cJSON_IsString(name) || !cJSON_IsString(type) || strcmp(type->valuestring, "function"))
                st = fail(err, "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                                              "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            else {
                bool found = false;
                for (const cJSON *o = out->child; o; o = o->next)
                    found |= !strcmp(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "function"), "name")->valuestring,
                                     name->valuestring);
                if (!found) st = fail(err, "tool_choice", "'tool_choice' names '%.64s', which is not in 'tools'", name->valuestring);
                else {
                    r->tool_choice = PLUMB_SRV_TOOLS_NAMED;
                    snprintf(r->tool_name, sizeof r->tool_name, "%s", name->valuestring);
                }
            }
        }
    }
    cJSON_Delete(out);
    return st;
}

/* A JSON Schema as the grammar of the output. */
static plumb_status schema_grammar(const cJSON *schema, const char *param, plumb_srv_request *r, plumb_srv_error *err) {
    if (!cJSON_IsObject(schema) && !cJSON_IsBool(schema)) return fail(err, param, "'%s' must be a JSON Schema object", param);
    char *text = cJSON_PrintUnformatted(schema);
    if (!text) return PLUMB_E_NOMEM;
    size_t len;
    plumb_status st = plumb_json_schema_to_gbnf(text, strlen(text), &r->grammar, &len);
    free(text);
    if (st == PLUMB_E_NOMEM) return st;
    if (st) return fail(err, param, "'%s': %s", param, plumb_last_error());
    r->grammar_param = param;
    return PLUMB_OK;
}

/* grammar, json_schema, response_format: at most one of them constrains the output. */
static plumb_status parse_constraint(const cJSON *root, plumb_srv_request *r, plumb_srv_error *err) {
    const cJSON *g = field(root, "grammar"), *js = field(root, "json_schema"), *rf = field(root, "response_format");
    const cJSON *rf_type = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
    if (rf && (!cJSON_IsObject(rf) || !cJSON_IsString(rf_type)))
        return fail(err, "response_format", "'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}");
    if (rf && !strcmp(rf_type->valuestring, "text")) rf = NULL;
    if ((g != NULL) + (js != NULL) + (rf != NULL) > 1)
        return fail(err, g ? "grammar" : "json_schema", "give only one of 'grammar', 'json_schema' and 'response_format'");
    if (g) {
        if (!cJSON_IsString(g)) return fail(err, "grammar", "'grammar' must be a string of GBNF");
        plumb_grammar_t *parsed;
        plumb_status st = plumb_grammar_parse(g->valuestring, strlen(g->valuestring), NULL, NULL, &parsed);
        if (st == PLUMB_E_NOMEM) return st;
        if (st) return fail(err, "grammar", "'grammar': %s", plumb_last_error());
        plumb_grammar_free(parsed);
        r->grammar_param = "grammar";
        return (r->grammar = strdup(g->valuestring)) ? PLUMB_OK : PLUMB_E_NOMEM;
    }
    if (js) return schema_grammar(js, "json_schema", r, err);
    if (!rf) return PLUMB_OK;
    const char *t = rf_type->valuestring;
    if (!strcmp(t, "json_object")) {
        const cJSON *schema = field(rf, "schema"); /* llama-server's extension */
        if (schema) return schema_grammar(schema, "response_format.schema", r, err);
        cJSON *any = cJSON_CreateObject();
        if (!any || !cJSON_AddStringToObject(any, "type", "object")) {
            cJSON_Delete(any);
            return PLUMB_E_NOMEM;
        }
        plumb_status st = schema_grammar(any, "response_format", r, err);
        cJSON_Delete(any);
        return st;
    }
    if (strcmp(t, "json_schema"))
        return fail(err, "response_format.type", "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"");
    const cJSON *j = field(rf, "json_schema");
    if (!cJSON_IsObject(j))
        return fail(err, "response_format.json_schema", "'response_format.json_schema' must be {\"name\": ..., \"schema\": {...}}");
    const cJSON *name = field(j, "name"), *strict = field(j, "strict"), *schema = field(j, "schema");
    if (name && !cJSON_IsString(name)) return fail(err, "response_format.json_schema.name", "'response_format.json_schema.name' must be a string");
    if (strict && !cJSON_IsBool(strict))
        return fail(err, "response_format.json_schema.strict", "'response_format.json_schema.strict' must be a boolean");
    if (!schema) return fail(err, "response_format.json_schema.schema", "'response_format.json_schema.schema' is required");
    return schema_grammar(schema, "response_format.json_schema.schema", r, err);
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

/* An optional string field into *out (malloc'd; NULL when absent). */
static plumb_status opt_string(const cJSON *o, const char *key, char **out, plumb_srv_error *err) {
    const cJSON *f = field(o, key);
    *out = NULL;
    if (!f) return PLUMB_OK;
    if (!cJSON_IsString(f)) return fail(err, key, "'%s' must be a string", key);
    return (*out = strdup(f->valuestring)) ? PLUMB_OK : PLUMB_E_NOMEM;
}

/* /infill: input_prefix, input_suffix, prompt (more text before the cursor), input_extra
 * ([{"filename", "text"}], other files for context). */
static plumb_status parse_infill(const cJSON *root, plumb_srv_request *r, plumb_srv_error *err) {
    char *prefix, *more;
    plumb_status st = opt_string(root, "input_prefix", &prefix, err);
    if (st || (st = opt_string(root, "prompt", &more, err))) {
        free(prefix);
        return st;
    }
    size_t a = prefix ? strlen(prefix) : 0, b = more ? strlen(more) : 0;
    if ((r->prompt = malloc(a + b + 1))) {
        memcpy(r->prompt, prefix ? prefix : "", a);
        memcpy(r->prompt + a, more ? more : "", b + 1);
    }
    free(prefix), free(more);
    if (!r->prompt) return PLUMB_E_NOMEM;
    if ((st = opt_string(root, "input_suffix", &r->suffix, err))) return st;
    if (!r->suffix && !(r->suffix = strdup(""))) return PLUMB_E_NOMEM;
    const cJSON *extra = field(root, "input_extra");
    if (!extra) return PLUMB_OK;
    if (!cJSON_IsArray(extra) || cJSON_GetArraySize(extra) > 256)
        return fail(err, "input_extra", "'input_extra' must be an array of at most 256 {\"filename\", \"text\"} objects");
    if (!(r->extra = calloc((size_t)cJSON_GetArraySize(extra) + 1, sizeof *r->extra))) return PLUMB_E_NOMEM;
    const cJSON *e;
    cJSON_ArrayForEach(e, extra) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(e, "filename"), *text = cJSON_GetObjectItemCaseSensitive(e, "text");
        if (!cJSON_IsObject(e) || !cJSON_IsString(text) || (fn && !cJSON_IsNull(fn) && !cJSON_IsString(fn)))
            return fail(err, "input_extra", "'input_extra[%zu]' must be {\"filename\": string, \"text\": string}", r->n_extra);
        const char *name = cJSON_IsString(fn) ? fn->valuestring : "";
        size_t n = strlen(name) + strlen(text->valuestring) + 2;
        if (!(r->extra[r->n_extra] = malloc(n))) return PLUMB_E_NOMEM;
        snprintf(r->extra[r->n_extra++], n, "%s\n%s", name, text->valuestring);
    }
    return PLUMB_OK;
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

/* OpenAI fields that would change the answer and that plumb does not implement: refused
 * rather than ignored (a false or empty value asks for nothing and passes). */
static plumb_status refuse_unimplemented(const cJSON *root, plumb_srv_error *err) {
    static const char *const names[] = {"logit_bias", "functions", "function_call", "audio",
                                        "prediction", "web_search_options", "echo", "best_of"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const cJSON *f = field(root, names[k]);
        if (!f || cJSON_IsFalse(f) || ((cJSON_IsObject(f) || cJSON_IsArray(f)) && !f->child)) continue;
        if (!strcmp(names[k], "best_of") && cJSON_IsNumber(f) && f->valuedouble == 1) continue;
        return fail(err, names[k], "'%s' is not supported", names[k]);
    }
    const cJSON *mod = field(root, "modalities");
    if (mod && (!cJSON_IsArray(mod) || cJSON_GetArraySize(mod) != 1 || !cJSON_IsString(mod->child) ||
                strcmp(mod->child->valuestring, "text")))
        return fail(err, "modalities", "only the \"text\" modality is supported");
    return PLUMB_OK;
}

static plumb_status parse_fields(const cJSON *root, plumb_srv_kind kind, int32_t max_tokens_cap,
                                 plumb_srv_request *r, plumb_srv_error *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) return fail(err, "model", "'model' must be a string");
    plumb_status st = kind == PLUMB_SRV_CHAT ? parse_messages(root, r, err)
                      : kind == PLUMB_SRV_INFILL ? parse_infill(root, r, err)
                                                 : parse_prompt(root, r, err);
    if (st) return st;
    if (kind == PLUMB_SRV_COMPLETION && (st = opt_string(root, "suffix", &r->suffix, err))) return st;
    if (kind == PLUMB_SRV_COMPLETION && r->suffix && !r->prompt)
        return fail(err, "suffix", "'suffix' needs the prompt as text, not token ids");
    if (kind == PLUMB_SRV_CHAT && (st = parse_tools(root, r, err))) return st;
    if (kind != PLUMB_SRV_CHAT)
        for (int k = 0; k < 3; k++) {
            static const char *const chat_only[] = {"tools", "tool_choice", "parallel_tool_calls"};
            if (field(root, chat_only[k]))
                return fail(err, chat_only[k], "'%s' is for /v1/chat/completions", chat_only[k]);
        }
    if ((st = parse_constraint(root, r, err))) return st;
    if (r->grammar && r->tools_json && r->tool_choice != PLUMB_SRV_TOOLS_NONE)
        return fail(err, r->grammar_param, "'%s' and 'tools' cannot constrain one answer together (use tool_choice \"none\" "
                                           "or leave one out)", r->grammar_param);
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
    r->n = 1;
    if ((got = opt_int(root, "n", 1, PLUMB_SRV_MAX_N, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
    if (got) r->n = (int32_t)v;
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
    r->timings = true;
    if (opt_bool(root, "timings", &r->timings, err) < 0) return PLUMB_E_INVALID_ARG;
    /* chat: logprobs (a boolean) and top_logprobs (alternatives per token); completions:
     * logprobs, the number of alternatives (OpenAI's legacy form; false or null: none) */
    r->logprobs = -1;
    bool want = false;
    if (kind == PLUMB_SRV_CHAT) {
        if (opt_bool(root, "logprobs", &want, err) < 0) return PLUMB_E_INVALID_ARG;
        if ((got = opt_int(root, "top_logprobs", 0, PLUMB_SRV_MAX_LOGPROBS, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
        if (got && !want) return fail(err, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (want) r->logprobs = got ? (int32_t)v : 0;
    } else {
        const cJSON *lp = field(root, "logprobs");
        if (lp && !cJSON_IsBool(lp) && !cJSON_IsNumber(lp))
            return fail(err, "logprobs", "'logprobs' must be a number of alternatives per token (0 to %d)", PLUMB_SRV_MAX_LOGPROBS);
        if (cJSON_IsTrue(lp)) r->logprobs = 0;
        else if (cJSON_IsNumber(lp)) {
            if ((got = opt_int(root, "logprobs", 0, PLUMB_SRV_MAX_LOGPROBS, &v, err)) < 0) return PLUMB_E_INVALID_ARG;
            r->logprobs = (int32_t)v;
        }
    }
    if (kind == PLUMB_SRV_CHAT && field(root, "suffix")) return fail(err, "suffix", "'suffix' is for /v1/completions");
    return refuse_unimplemented(root, err);
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

plumb_status plumb_srv_parse_model(const char *body, size_t len, char *out, size_t cap, plumb_srv_error *err) {
    out[0] = '\0';
    cJSON *root;
    plumb_status st = parse_object(body, len, &root, err);
    if (st) return st;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (m && !cJSON_IsNull(m) && !cJSON_IsString(m)) st = fail(err, "model", "'model' must be a string");
    else if (cJSON_IsString(m) && strlen(m->valuestring) >= cap) st = PLUMB_E_RANGE;
    else if (cJSON_IsString(m)) memcpy(out, m->valuestring, strlen(m->valuestring) + 1);
    cJSON_Delete(root);
    return st;
}

void plumb_srv_embed_request_free(plumb_srv_embed_request *r) {
    for (size_t i = 0; i < r->n; i++) {
        if (r->texts) free(r->texts[i]);
        if (r->ids) free(r->ids[i]);
    }
    free(r->texts), free(r->ids), free(r->n_ids);
    memset(r, 0, sizeof *r);
}

/* One input: a string, or an array of token ids. */
static plumb_status embed_input(const cJSON *in, size_t i, plumb_srv_embed_request *r, plumb_srv_error *err) {
    char param[32];
    snprintf(param, sizeof param, "input[%zu]", i);
    if (cJSON_IsString(in)) {
        if (!in->valuestring[0]) return fail(err, "input", "'%s' is empty", param);
        return (r->texts[i] = strdup(in->valuestring)) ? PLUMB_OK : PLUMB_E_NOMEM;
    }
    if (!cJSON_IsArray(in) || cJSON_GetArraySize(in) == 0)
        return fail(err, "input", "'%s' must be a non-empty string or array of token ids", param);
    return parse_ids(in, "input", &r->ids[i], &r->n_ids[i], err);
}

plumb_status plumb_srv_parse_embeddings(const char *body, size_t len, plumb_srv_embed_request *out, plumb_srv_error *err) {
    memset(out, 0, sizeof *out);
    out->dimensions = -1;
    cJSON *root;
    plumb_status st = parse_object(body, len, &root, err);
    if (st) return st;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model"), *in = field(root, "input");
    const cJSON *fmt = field(root, "encoding_format");
    double v;
    int got;
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) st = fail(err, "model", "'model' must be a string");
    else if (!in) st = fail(err, "input", "'input' is required");
    else if (fmt && (!cJSON_IsString(fmt) || (strcmp(fmt->valuestring, "float") && strcmp(fmt->valuestring, "base64"))))
        st = fail(err, "encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
    else if ((got = opt_int(root, "dimensions", 1, 1 << 20, &v, err)) < 0)
        st = PLUMB_E_INVALID_ARG;
    else {
        if (got) out->dimensions = (int32_t)v;
        out->base64 = fmt && !strcmp(fmt->valuestring, "base64");
        /* one input (a string or one array of ids), or a list of them */
        const bool list = cJSON_IsArray(in) && in->child && (cJSON_IsString(in->child) || cJSON_IsArray(in->child));
        const size_t n = list ? (size_t)cJSON_GetArraySize(in) : 1;
        if (cJSON_IsArray(in) && !in->child) st = fail(err, "input", "'input' must not be empty");
        else if (n > PLUMB_SRV_MAX_INPUTS) st = fail(err, "input", "'input' has more than %d items", PLUMB_SRV_MAX_INPUTS);
        else if (!(out->texts = calloc(n, sizeof *out->texts)) || !(out->ids = calloc(n, sizeof *out->ids)) ||
                 !(out->n_ids = calloc(n, sizeof *out->n_ids)))
            st = PLUMB_E_NOMEM;
        else {
            out->n = n;
            if (!list) st = embed_input(in, 0, out, err);
            size_t i = 0;
            const cJSON *e;
            if (list) cJSON_ArrayForEach(e, in) {
                    if (st) break;
                    st = embed_input(e, i++, out, err);
                }
        }
    }
    cJSON_Delete(root);
    if (st) {
        if (st == PLUMB_E_NOMEM) fail(err, "", "out of memory");
        plumb_srv_embed_request_free(out);
    }
    return st;
}
