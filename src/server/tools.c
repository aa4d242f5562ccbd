/* tools.c — tool-call syntaxes, their grammars and parsing (see tools.h).
 *
 * A call's grammar is a JSON Schema made from the request's tools: one alternative per tool
 * (or the named one), each an object with the tool's name as a constant and its parameters'
 * schema, converted by plumb_json_schema_to_gbnf; the syntax's markers are rules added around
 * the converted grammar (prefixed plumb-, which no converted rule uses). */
#include "tools.h"

#include "gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

plumb_srv_tool_syntax plumb_srv_tool_syntax_of(const char *tmpl) {
    if (!tmpl) return PLUMB_SRV_SYNTAX_GENERIC;
    if (strstr(tmpl, "<tool_call>")) return PLUMB_SRV_SYNTAX_HERMES;
    if (strstr(tmpl, "[TOOL_CALLS]")) return PLUMB_SRV_SYNTAX_MISTRAL;
    if (strstr(tmpl, "<|start_header_id|>") && (strstr(tmpl, "\"parameters\"") || strstr(tmpl, "<|python_tag|>")))
        return PLUMB_SRV_SYNTAX_LLAMA3;
    return PLUMB_SRV_SYNTAX_GENERIC;
}

const char *plumb_srv_tool_syntax_name(plumb_srv_tool_syntax s) {
    static const char *const names[] = {"hermes", "llama3", "mistral", "generic"};
    return names[s];
}

/* Text appended to a growing buffer; *ok turns false when memory runs out. */
static void cat(char **buf, size_t *len, size_t *cap, const char *s, bool *ok) {
    if (*ok && !plumb_gen_append(buf, len, cap, s, strlen(s))) *ok = false;
}

/* anyOf the calls r allows (all tools, or the named one), each {"name": {"const": name},
 * args_key: the tool's parameters}, as schema text (malloc'd; NULL: out of memory). Tool names
 * are [A-Za-z0-9_-] (request.c checks), so they need no escaping. */
static char *calls_schema(const plumb_srv_request *r, const char *args_key) {
    cJSON *tools = cJSON_Parse(r->tools_json);
    char *out = NULL;
    size_t len = 0, cap = 0;
    bool ok = tools != NULL, first = true;
    cat(&out, &len, &cap, "{\"anyOf\":[", &ok);
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const char *name = cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring;
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!ok || (r->tool_choice == PLUMB_SRV_TOOLS_NAMED && strcmp(name, r->tool_name))) continue;
        char *p = params && !cJSON_IsNull(params) ? cJSON_PrintUnformatted(params) : strdup("{\"type\":\"object\"}");
        if (!p) ok = false;
        cat(&out, &len, &cap, first ? "" : ",", &ok);
        cat(&out, &len, &cap, "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"", &ok);
        cat(&out, &len, &cap, name, &ok);
        cat(&out, &len, &cap, "\"},\"", &ok);
        cat(&out, &len, &cap, args_key, &ok);
        cat(&out, &len, &cap, "\":", &ok);
        if (p) cat(&out, &len, &cap, p, &ok);
        cat(&out, &len, &cap, "},\"required\":[\"name\",\"", &ok);
        cat(&out, &len, &cap, args_key, &ok);
        cat(&out, &len, &cap, "\"],\"additionalProperties\":false}", &ok);
        free(p);
        first = false;
    }
    cat(&out, &len, &cap, "]}", &ok);
    cJSON_Delete(tools);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

/* The generic syntax's answer: {"tool_calls": [call, ...]} (or, with auto, {"content": text}). */
static char *generic_schema(const plumb_srv_request *r) {
    char *calls = calls_schema(r, "arguments"), *out = NULL;
    size_t len = 0, cap = 0;
    bool ok = calls != NULL;
    const bool any = r->tool_choice == PLUMB_SRV_TOOLS_AUTO;
    if (any) cat(&out, &len, &cap, "{\"anyOf\":[", &ok);
    cat(&out, &len, &cap, "{\"type\":\"object\",\"properties\":{\"tool_calls\":{\"type\":\"array\",\"minItems\":1,", &ok);
    if (!r->parallel_tool_calls) cat(&out, &len, &cap, "\"maxItems\":1,", &ok);
    cat(&out, &len, &cap, "\"items\":", &ok);
    if (calls) cat(&out, &len, &cap, calls, &ok);
    cat(&out, &len, &cap, "}},\"required\":[\"tool_calls\"],\"additionalProperties\":false}", &ok);
    if (any)
        cat(&out, &len, &cap, ",{\"type\":\"object\",\"properties\":{\"content\":{\"type\":\"string\"}},"
                              "\"required\":[\"content\"],\"additionalProperties\":false}]}", &ok);
    free(calls);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

plumb_status plumb_srv_tools_grammar(plumb_srv_tool_syntax syn, const plumb_srv_request *r, plumb_srv_tool_grammar *out,
                                     char *msg, size_t msg_cap) {
    memset(out, 0, sizeof *out);
    char *text = syn == PLUMB_SRV_SYNTAX_GENERIC ? generic_schema(r)
                                                 : calls_schema(r, syn == PLUMB_SRV_SYNTAX_LLAMA3 ? "parameters" : "arguments");
    if (!text) return PLUMB_E_NOMEM;
    char *base = NULL;
    size_t base_len = 0;
    plumb_status st = plumb_json_schema_to_gbnf(text, strlen(text), &base, &base_len);
    free(text);
    if (st == PLUMB_E_NOMEM) return st;
    if (st) {
        snprintf(msg, msg_cap, "the tools' parameters cannot constrain the output: %s", plumb_last_error());
        return PLUMB_E_INVALID_ARG;
    }
    const bool many = r->parallel_tool_calls;
    const bool lazy = r->tool_choice == PLUMB_SRV_TOOLS_AUTO;
    char extra[512];
    switch (syn) {
    case PLUMB_SRV_SYNTAX_HERMES:
        snprintf(extra, sizeof extra,
                 "plumb-sp ::= [ \\n]{0,2}\n"
                 "plumb-call ::= \"<tool_call>\" plumb-sp root plumb-sp \"</tool_call>\"\n"
                 "plumb-all ::= plumb-call%s | root\n",
                 many ? " (plumb-sp plumb-call)*" : "");
        out->root = "plumb-all";
        /* small Qwen models often write the call's JSON without its tags: taken as a call too */
        out->trigger = lazy ? "<tool_call>" : NULL;
        out->trigger2 = lazy ? "{\"name\"" : NULL;
        break;
    case PLUMB_SRV_SYNTAX_LLAMA3:
        snprintf(extra, sizeof extra, "plumb-all ::= root\n");
        out->root = "plumb-all";
        out->trigger = lazy ? "{\"name\"" : NULL;
        break;
    case PLUMB_SRV_SYNTAX_MISTRAL:
        snprintf(extra, sizeof extra,
                 "plumb-sp ::= [ \\n]{0,2}\nplumb-after ::= plumb-sp \"[\" plumb-sp root%s plumb-sp \"]\"\n"
                 "plumb-all ::= \"[TOOL_CALLS]\" plumb-after\n",
                 many ? " (plumb-sp \",\" plumb-sp root)*" : "");
        out->root = "plumb-all";
        out->root_after = "plumb-after";
        out->trigger = "[TOOL_CALLS]";
        out->force_trigger = !lazy;
        break;
    case PLUMB_SRV_SYNTAX_GENERIC:
        snprintf(extra, sizeof extra, "plumb-all ::= root\n");
        out->root = "plumb-all";
        break;
    }
    size_t el = strlen(extra);
    out->gbnf = malloc(base_len + el + 2);
    if (!out->gbnf) {
        free(base);
        return PLUMB_E_NOMEM;
    }
    memcpy(out->gbnf, base, base_len);
    out->gbnf[base_len] = '\n';
    memcpy(out->gbnf + base_len + 1, extra, el + 1);
    free(base);
    return PLUMB_OK;
}

void plumb_srv_tool_grammar_free(plumb_srv_tool_grammar *g) {
    free(g->gbnf);
    memset(g, 0, sizeof *g);
}

char *plumb_srv_tools_generic_messages(const plumb_srv_request *r) {
    cJSON *msgs = cJSON_Parse(r->messages_json);
    if (!msgs) return NULL;
    const char *how = r->tool_choice == PLUMB_SRV_TOOLS_AUTO
                          ? "To call tools, answer with a JSON object {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": "
                            "<arguments object>}]}; to answer directly, with {\"content\": <your answer>}."
                          : "Answer with a JSON object {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments "
                            "object>}]} calling the tools you need.";
    size_t n = strlen(r->tools_json) + strlen(how) + 64;
    char *text = malloc(n);
    if (!text) {
        cJSON_Delete(msgs);
        return NULL;
    }
    snprintf(text, n, "You can use these tools:\n%s\n%s", r->tools_json, how);
    cJSON *first = cJSON_GetArrayItem(msgs, 0);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(first, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(first, "content");
    bool ok;
    if (cJSON_IsString(role) && !strcmp(role->valuestring, "system") && cJSON_IsString(content)) {
        size_t m = strlen(content->valuestring) + strlen(text) + 3;
        char *joined = malloc(m);
        ok = joined != NULL;
        if (ok) {
            snprintf(joined, m, "%s\n\n%s", content->valuestring, text);
            ok = cJSON_ReplaceItemInObjectCaseSensitive(first, "content", cJSON_CreateString(joined));
            free(joined);
        }
    } else {
        cJSON *sys = cJSON_CreateObject();
        ok = sys && cJSON_AddStringToObject(sys, "role", "system") && cJSON_AddStringToObject(sys, "content", text) &&
             cJSON_InsertItemInArray(msgs, 0, sys);
    }
    free(text);
    char *s = ok ? cJSON_PrintUnformatted(msgs) : NULL;
    cJSON_Delete(msgs);
    return s;
}

/* ---- parsing answers --------------------------------------------------------------------- */

void plumb_srv_tools_call_id(char *id, size_t cap) {
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static _Thread_local uint64_t x;
    x ^= (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull + (uint64_t)ts.tv_sec + (uint64_t)(uintptr_t)id;
    size_t n = snprintf(id, cap, "call_");
    for (; n + 1 < cap && n < 29; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        id[n] = alnum[x % 62];
    }
    id[n] = '\0';
}

/* Adds the call {name, args} (args a JSON object) to *calls. false when it is not a call. */
static bool add_call(cJSON **calls, const cJSON *obj, const char *args_key) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(obj, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(obj, args_key);
    if (!args) args = cJSON_GetObjectItemCaseSensitive(obj, "arguments");
    if (!cJSON_IsString(name) || !cJSON_IsObject(args)) return false;
    char *a = cJSON_PrintUnformatted(args);
    if (!*calls) *calls = cJSON_CreateArray();
    cJSON *c = cJSON_CreateObject(), *f = cJSON_CreateObject();
    if (!a || !*calls || !c || !f) {
        free(a), cJSON_Delete(c), cJSON_Delete(f);
        return false;
    }
    char id[32];
    plumb_srv_tools_call_id(id, sizeof id);
    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "type", "function");
    cJSON_AddItemToObject(c, "function", f);
    cJSON_AddStringToObject(f, "name", name->valuestring);
    cJSON_AddStringToObject(f, "arguments", a);
    free(a);
    cJSON_AddItemToArray(*calls, c);
    return true;
}

static bool blank(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* text[a..b) trimmed into a malloc'd string appended to *content (NULL when blank). */
static bool append_text(char **content, size_t *clen, const char *text, size_t a, size_t b) {
    while (a < b && blank(text[a])) a++;
    while (b > a && blank(text[b - 1])) b--;
    if (a == b) return true;
    size_t add = b - a + (*clen ? 1 : 0);
    char *g = realloc(*content, *clen + add + 1);
    if (!g) return false;
    *content = g;
    if (*clen) g[(*clen)++] = '\n';
    memcpy(g + *clen, text + a, b - a);
    *clen += b - a;
    g[*clen] = '\0';
    return true;
}

/* One JSON value text[a..b) (NULL when it does not parse as a whole). */
static cJSON *parse_json(const char *text, size_t a, size_t b) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text + a, b - a, &end, false);
    if (!j) return NULL;
    for (const char *p = end; p < text + b; p++)
        if (!blank(*p)) {
            cJSON_Delete(j);
            return NULL;
        }
    return j;
}

static plumb_status parse_hermes(const char *text, size_t len, char **content, size_t *clen, cJSON **calls) {
    static const char open[] = "<tool_call>", close[] = "</tool_call>";
    size_t at = 0;
    const char *bare = memmem(text, len, "{\"name\"", 7);
    if (bare && !memmem(text, len, open, sizeof open - 1)) { /* a call without its tags */
        cJSON *j = parse_json(text, (size_t)(bare - text), len);
        bool ok = j && add_call(calls, j, "arguments");
        cJSON_Delete(j);
        if (ok) return append_text(content, clen, text, 0, (size_t)(bare - text)) ? PLUMB_OK : PLUMB_E_NOMEM;
    }
    for (;;) {
        const char *o = memmem(text + at, len - at, open, sizeof open - 1);
        const char *c = o ? memmem(o, len - (size_t)(o - text), close, sizeof close - 1) : NULL;
        if (!o || !c) break;
        size_t a = (size_t)(o - text) + sizeof open - 1, b = (size_t)(c - text);
        cJSON *j = parse_json(text, a, b);
        bool ok = j && add_call(calls, j, "arguments");
        cJSON_Delete(j);
        if (!append_text(content, clen, text, at, ok ? (size_t)(o - text) : b + sizeof close - 1)) return PLUMB_E_NOMEM;
        at = b + sizeof close - 1;
    }
    return append_text(content, clen, text, at, len) ? PLUMB_OK : PLUMB_E_NOMEM;
}

plumb_status plumb_srv_tools_parse(plumb_srv_tool_syntax syn, const char *text, size_t len, char **content,
                                   cJSON **calls) {
    *content = NULL;
    *calls = NULL;
    size_t clen = 0;
    plumb_status st = PLUMB_OK;
    if (syn == PLUMB_SRV_SYNTAX_HERMES) st = parse_hermes(text, len, content, &clen, calls);
    else {
        size_t a = 0;
        static const char tag[] = "<|python_tag|>", tc[] = "[TOOL_CALLS]";
        while (a < len && blank(text[a])) a++;
        if (syn == PLUMB_SRV_SYNTAX_LLAMA3 && len - a >= sizeof tag - 1 && !memcmp(text + a, tag, sizeof tag - 1)) a += sizeof tag - 1;
        if (syn == PLUMB_SRV_SYNTAX_MISTRAL && len - a >= sizeof tc - 1 && !memcmp(text + a, tc, sizeof tc - 1)) a += sizeof tc - 1;
        cJSON *j = parse_json(text, a, len);
        bool parsed = false;
        if (syn == PLUMB_SRV_SYNTAX_LLAMA3 && cJSON_IsObject(j)) parsed = add_call(calls, j, "parameters");
        else if (syn == PLUMB_SRV_SYNTAX_MISTRAL && cJSON_IsArray(j)) {
            const cJSON *c;
            parsed = cJSON_GetArraySize(j) > 0;
            cJSON_ArrayForEach(c, j) parsed = parsed && add_call(calls, c, "arguments");
        } else if (syn == PLUMB_SRV_SYNTAX_GENERIC && cJSON_IsObject(j)) {
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "tool_calls");
            const cJSON *said = cJSON_GetObjectItemCaseSensitive(j, "content");
            if (cJSON_IsArray(arr) && cJSON_GetArraySize(arr) > 0) {
                const cJSON *c;
                parsed = true;
                cJSON_ArrayForEach(c, arr) parsed = parsed && add_call(calls, c, "arguments");
            } else if (cJSON_IsString(said)) {
                parsed = true;
                st = append_text(content, &clen, said->valuestring, 0, strlen(said->valuestring)) ? PLUMB_OK : PLUMB_E_NOMEM;
            }
        }
        cJSON_Delete(j);
        if (!parsed) { /* not a call after all: all of it is text */
            cJSON_Delete(*calls);
            *calls = NULL;
            free(*content);
            *content = NULL;
            clen = 0;
            st = append_text(content, &clen, text, 0, len) ? PLUMB_OK : PLUMB_E_NOMEM;
        }
    }
    if (st) {
        free(*content), cJSON_Delete(*calls);
        *content = NULL, *calls = NULL;
    }
    return st;
}

/* The content prefix of text before `marker` could start in it. */
static size_t before_marker(const char *text, size_t len, const char *marker) {
    const size_t on = strlen(marker);
    const char *o = memmem(text, len, marker, on);
    if (o) return (size_t)(o - text);
    for (size_t k = on - 1; k > 0; k--) /* a suffix that may be the start of the marker */
        if (k <= len && !memcmp(text + len - k, marker, k)) return len - k;
    return len;
}

size_t plumb_srv_tools_content_prefix(plumb_srv_tool_syntax syn, const char *text, size_t len) {
    if (syn != PLUMB_SRV_SYNTAX_HERMES) return 0; /* the whole answer is one call or one text: wait for it */
    size_t a = before_marker(text, len, "<tool_call>"), b = before_marker(text, len, "{\"name\"");
    return a < b ? a : b;
}

/* ---- a Hermes call as it streams ----------------------------------------------------------- */

/* Matches lit at text[*at..len): 1 matched (advanced), 0 text ends inside it, -1 mismatch. */
static int expect(const char *text, size_t len, size_t *at, const char *lit) {
    const size_t n = strlen(lit);
    for (size_t k = 0; k < n; k++) {
        if (*at + k >= len) return 0;
        if (text[*at + k] != lit[k]) return -1;
    }
    *at += n;
    return 1;
}

/* Skips white space; 0 when the text ends there (more may come). */
static int skip_ws(const char *text, size_t len, size_t *at) {
    while (*at < len && blank(text[*at])) (*at)++;
    return *at < len;
}

int plumb_srv_tools_call_head(const char *text, size_t len, size_t *name, size_t *name_len, size_t *args) {
    size_t at = 0;
    int r = expect(text, len, &at, "<tool_call>");
    if (r == 0) return 0;
    if (r < 0) at = 0; /* the bare form */
    static const char *const steps[] = {"{", "\"name\"", ":", "\""};
    for (int k = 0; k < 4; k++) {
        if (!skip_ws(text, len, &at)) return 0;
        if ((r = expect(text, len, &at, steps[k])) <= 0) return r;
    }
    *name = at;
    while (at < len && text[at] != '"') {
        const char ch = text[at++];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            return -1; /* tool names are plain: anything else is not a call head */
    }
    if (at >= len) return 0;
    *name_len = at - *name;
    at++;
    static const char *const rest[] = {",", "\"arguments\"", ":"};
    for (int k = 0; k < 3; k++) {
        if (!skip_ws(text, len, &at)) return 0;
        if ((r = expect(text, len, &at, rest[k])) <= 0) return r;
    }
    if (!skip_ws(text, len, &at)) return 0;
    if (text[at] != '{') return -1;
    *args = at;
    return 1;
}

size_t plumb_srv_json_scan_to_end(plumb_srv_json_scan *sc, const char *text, size_t from, size_t len) {
    for (size_t i = from; i < len; i++) {
        const char ch = text[i];
        if (sc->in_string) {
            if (sc->escape) sc->escape = false;
            else if (ch == '\\') sc->escape = true;
            else if (ch == '"') sc->in_string = false;
            continue;
        }
        if (ch == '"') sc->in_string = true;
        else if (ch == '{' || ch == '[') sc->depth++, sc->started = true;
        else if ((ch == '}' || ch == ']') && --sc->depth == 0 && sc->started) return i + 1;
    }
    return len;
}

int plumb_srv_tools_call_tail(const char *text, size_t len, bool tagged, size_t *end) {
    size_t at = 0;
    int r;
    if (!skip_ws(text, len, &at)) return 0;
    if ((r = expect(text, len, &at, "}")) <= 0) return r;
    if (tagged) {
        if (!skip_ws(text, len, &at)) return 0;
        if ((r = expect(text, len, &at, "</tool_call>")) <= 0) return r;
    }
    *end = at;
    return 1;
}
