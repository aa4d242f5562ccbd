/* json_schema_out.c — the GBNF text a schema becomes: growable buffers with a sticky error,
 * rules shared by body (two schemas that need the same rule get one), unique readable names,
 * the caps on size and work, and the built-in rules every grammar draws from. */
#include "grammar/json_schema.h"

#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void plumb__js_out_init(js_out *o) { memset(o, 0, sizeof *o); }

void plumb__js_out_free(js_out *o) {
    plumb__js_buf_free(&o->text);
    plumb__js_buf_free(&o->names);
    free(o->rules);
    free(o->by_body);
    free(o->by_name);
    memset(o, 0, sizeof *o);
}

plumb_status plumb__js_fail(js_out *o, plumb_status st, const char *fmt, ...) {
    if (o->st) return o->st;
    va_list ap;
    va_start(ap, fmt);
    plumb__vfail(st, fmt, ap);
    va_end(ap);
    o->st = st;
    return st;
}

bool plumb__js_work(js_out *o) {
    if (o->st) return false;
    if (++o->work > JS_MAX_WORK) {
        plumb__js_fail(o, PLUMB_E_RANGE, "the schema takes more than %u steps to convert", JS_MAX_WORK);
        return false;
    }
    return true;
}

void plumb__js_buf_free(js_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void plumb__js_put(js_out *o, js_buf *b, const char *s, size_t n) {
    if (o->st || (!n && b->p)) return;
    if (b->len + n + 1 > JS_MAX_OUTPUT) {
        plumb__js_fail(o, PLUMB_E_RANGE, "the grammar would pass %u bytes", JS_MAX_OUTPUT);
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            plumb__js_fail(o, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void plumb__js_puts(js_out *o, js_buf *b, const char *s) { plumb__js_put(o, b, s, strlen(s)); }

void plumb__js_printf(js_out *o, js_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    PLUMB_ASSERT(n >= 0 && (size_t)n < sizeof tmp);
    plumb__js_put(o, b, tmp, (size_t)n);
}

/* ---- rule table ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static const char *rule_name(const js_out *o, const js_rule *r) { return o->names.p + r->name_off; }

/* Grows both maps to twice the rules (rehashing) when they are half full. */
static bool maps_reserve(js_out *o) {
    if ((o->n_rules + 1) * 2 <= o->map_cap) return true;
    uint32_t cap = o->map_cap ? o->map_cap * 2 : 256;
    uint32_t *body = calloc(cap, sizeof *body), *name = calloc(cap, sizeof *name);
    if (!body || !name) {
        free(body);
        free(name);
        plumb__js_fail(o, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        return false;
    }
    for (uint32_t i = 0; i < o->n_rules; i++) {
        const js_rule *r = &o->rules[i];
        uint32_t h = (uint32_t)hash_bytes(rule_name(o, r), r->name_len) & (cap - 1);
        while (name[h]) h = (h + 1) & (cap - 1);
        name[h] = i + 1;
        if (!r->defined) continue;
        h = (uint32_t)r->hash & (cap - 1);
        while (body[h]) h = (h + 1) & (cap - 1);
        body[h] = i + 1;
    }
    free(o->by_body);
    free(o->by_name);
    o->by_body = body;
    o->by_name = name;
    o->map_cap = cap;
    return true;
}

static const char *const builtin_names[JS_N_BUILTINS] = {
    "ws", "char", "string", "number", "integer", "boolean", "null", "value", "object", "array", "kv", "nothing",
};

static bool name_taken(const js_out *o, const char *s, size_t n) {
    if (n == 4 && !memcmp(s, "root", 4)) return true;
    for (int i = 0; i < JS_N_BUILTINS; i++)
        if (strlen(builtin_names[i]) == n && !memcmp(builtin_names[i], s, n)) return true;
    if (!o->map_cap) return false;
    uint32_t h = (uint32_t)hash_bytes(s, n) & (o->map_cap - 1);
    for (uint32_t e; (e = o->by_name[h]); h = (h + 1) & (o->map_cap - 1)) {
        const js_rule *r = &o->rules[e - 1];
        if (r->name_len == n && !memcmp(rule_name(o, r), s, n)) return true;
    }
    return false;
}

/* Adds a rule named exactly `name` (unique by construction); its body follows with define. */
static uint32_t add_name(js_out *o, const char *name) {
    if (o->st || !maps_reserve(o)) return UINT32_MAX;
    if (o->n_rules == o->cap_rules) {
        uint32_t cap = o->cap_rules ? o->cap_rules * 2 : 64;
        js_rule *r = realloc(o->rules, cap * sizeof *r);
        if (!r) {
            plumb__js_fail(o, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
            return UINT32_MAX;
        }
        o->rules = r;
        o->cap_rules = cap;
    }
    size_t n = strlen(name);
    js_rule *r = &o->rules[o->n_rules];
    memset(r, 0, sizeof *r);
    r->name_off = (uint32_t)o->names.len;
    r->name_len = (uint32_t)n;
    plumb__js_put(o, &o->names, name, n + 1); /* with its NUL */
    if (o->st) return UINT32_MAX;
    uint32_t h = (uint32_t)hash_bytes(name, n) & (o->map_cap - 1);
    while (o->by_name[h]) h = (h + 1) & (o->map_cap - 1);
    o->by_name[h] = ++o->n_rules;
    return o->n_rules - 1;
}

/* Writes rule i's line and files its body for sharing. */
static void define(js_out *o, uint32_t i, const char *body, size_t len) {
    if (o->st) return;
    js_rule *r = &o->rules[i];
    PLUMB_ASSERT(!r->defined);
    r->line_off = (uint32_t)o->text.len;
    plumb__js_put(o, &o->text, rule_name(o, r), r->name_len);
    plumb__js_puts(o, &o->text, " ::= ");
    r->body_off = (uint32_t)o->text.len;
    plumb__js_put(o, &o->text, body, len);
    plumb__js_puts(o, &o->text, "\n");
    if (o->st) return;
    r->body_len = (uint32_t)len;
    r->hash = hash_bytes(body, len);
    r->defined = true;
    uint32_t h = (uint32_t)r->hash & (o->map_cap - 1);
    while (o->by_body[h]) h = (h + 1) & (o->map_cap - 1);
    o->by_body[h] = i + 1;
}

/* hint -> [a-zA-Z0-9-] (at most 24 characters), then "-2", "-3", ... until unused. */
static void make_name(js_out *o, const char *hint, char out[48]) {
    size_t n = 0;
    for (const char *p = hint ? hint : ""; *p && n < 24; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (ok)
            out[n++] = ch;
        else if (n && out[n - 1] != '-')
            out[n++] = '-';
    }
    while (n && out[n - 1] == '-') n--;
    if (!n) out[n++] = 'r';
    out[n] = '\0';
    for (unsigned k = 2; name_taken(o, out, strlen(out)); k++) snprintf(out + n, 48 - n, "-%u", k);
}

static bool is_single_name(const char *s, size_t n) {
    if (!n) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_'))
            return false;
    }
    return n < sizeof(js_name);
}

js_name plumb__js_rule(js_out *o, const char *hint, const js_buf *b) {
    js_name out = {{0}};
    if (o->st) return out;
    const char *body = b->p ? b->p : "";
    if (is_single_name(body, b->len)) {
        memcpy(out.s, body, b->len);
        return out;
    }
    if (!maps_reserve(o)) return out;
    uint64_t hash = hash_bytes(body, b->len);
    uint32_t h = (uint32_t)hash & (o->map_cap - 1);
    for (uint32_t e; (e = o->by_body[h]); h = (h + 1) & (o->map_cap - 1)) {
        const js_rule *r = &o->rules[e - 1];
        if (r->hash == hash && r->body_len == b->len && !memcmp(o->text.p + r->body_off, body, b->len)) {
            memcpy(out.s, rule_name(o, r), r->name_len + 1);
            return out;
        }
    }
    char name[48];
    make_name(o, hint, name);
    uint32_t i = add_name(o, name);
    if (i == UINT32_MAX) return out;
    define(o, i, body, b->len);
    if (!o->st) memcpy(out.s, name, strlen(name) + 1);
    return out;
}

static uint32_t find_name(const js_out *o, const char *s) {
    size_t len = strlen(s);
    if (!o->map_cap) return UINT32_MAX;
    uint32_t h = (uint32_t)hash_bytes(s, len) & (o->map_cap - 1);
    for (uint32_t e; (e = o->by_name[h]); h = (h + 1) & (o->map_cap - 1))
        if (o->rules[e - 1].name_len == len && !memcmp(rule_name(o, &o->rules[e - 1]), s, len)) return e - 1;
    return UINT32_MAX;
}

js_name plumb__js_reserve(js_out *o, const char *hint) {
    js_name out = {{0}};
    char name[48];
    if (o->st) return out;
    if (hint && !strcmp(hint, "root") && find_name(o, "root") == UINT32_MAX)
        snprintf(name, sizeof name, "root"); /* the start rule keeps its fixed name */
    else
        make_name(o, hint, name);
    if (add_name(o, name) != UINT32_MAX) memcpy(out.s, name, strlen(name) + 1);
    return out;
}

void plumb__js_define(js_out *o, const js_name *n, const js_buf *b) {
    if (o->st) return;
    uint32_t i = find_name(o, n->s);
    PLUMB_ASSERT(i != UINT32_MAX);
    define(o, i, b->p ? b->p : "", b->len);
}

/* ---- built-in rules ---- */

/* JSON whitespace between tokens, bounded so a model cannot loop on it. */
#define WS_BODY "| \" \" | \"\\n\" [ \\t]{0,20}"
/* One character of string content: anything but " \ and controls, raw (surrogates are not
 * characters), or an escape; \u escapes of surrogates only as a valid pair. */
#define HEX "[0-9a-fA-F]"
#define CHAR_BODY                                                                                            \
    "[\\x20\\x21\\x23-\\x5B\\x5D-\\uD7FF\\uE000-\\U0010FFFF] | \"\\\\\" ( [\\x22\\x5C/bfnrt] | \"u\" ( "     \
    "[0-9a-cA-Ce-fE-F] " HEX "{3} | [dD] [0-7] " HEX "{2} | [dD] [89abAB] " HEX "{2} \"\\\\u\" [dD] [c-fC-F] " \
    HEX "{2} ) )"

static const struct {
    const char *body;
    uint32_t deps; /* builtins it refers to */
} builtin_defs[JS_N_BUILTINS] = {
    [JS_WS] = {WS_BODY, 0},
    [JS_CHAR] = {CHAR_BODY, 0},
    [JS_STRING] = {"\"\\\"\" char* \"\\\"\"", 1u << JS_CHAR},
    [JS_NUMBER] = {"\"-\"? ( \"0\" | [1-9] [0-9]* ) ( \".\" [0-9]+ )? ( [eE] [+\\-]? [0-9]+ )?", 0},
    [JS_INTEGER] = {"\"-\"? ( \"0\" | [1-9] [0-9]* )", 0},
    [JS_BOOLEAN] = {"\"true\" | \"false\"", 0},
    [JS_NULL] = {"\"null\"", 0},
    [JS_VALUE] = {"object | array | string | number | boolean | null",
                  1u << JS_OBJECT | 1u << JS_ARRAY | 1u << JS_STRING | 1u << JS_NUMBER | 1u << JS_BOOLEAN |
                      1u << JS_NULL},
    [JS_OBJECT] = {"\"{\" ws ( kv ( ws \",\" ws kv )* ws )? \"}\"", 1u << JS_WS | 1u << JS_KV},
    [JS_ARRAY] = {"\"[\" ws ( value ( ws \",\" ws value )* ws )? \"]\"", 1u << JS_WS | 1u << JS_VALUE},
    [JS_KV] = {"string ws \":\" ws value", 1u << JS_STRING | 1u << JS_WS | 1u << JS_VALUE},
    /* a class of no character: the empty language */
    [JS_NOTHING] = {"[^\\x00-\\U0010FFFF]", 0},
};

js_name plumb__js_builtin(js_out *o, js_builtin which) {
    js_name out = {{0}};
    if (o->st) return out;
    if (!(o->builtins >> which & 1)) {
        o->builtins |= 1u << which;
        uint32_t i = add_name(o, builtin_names[which]);
        if (i == UINT32_MAX) return out;
        define(o, i, builtin_defs[which].body, strlen(builtin_defs[which].body));
        for (int d = 0; d < JS_N_BUILTINS; d++)
            if (builtin_defs[which].deps >> d & 1) plumb__js_builtin(o, (js_builtin)d);
    }
    if (!o->st) snprintf(out.s, sizeof out.s, "%s", builtin_names[which]);
    return out;
}

plumb_status plumb__js_finish(js_out *o, const js_name *root, char **out, size_t *out_len) {
    if (o->st) return o->st;
    uint32_t ri = find_name(o, root->s);
    PLUMB_ASSERT(ri != UINT32_MAX);
    const js_rule *r = &o->rules[ri];
    PLUMB_ASSERT(r && r->defined);
    size_t line_len = r->name_len + 5 + r->body_len + 1;
    char *p = malloc(o->text.len + 1);
    if (!p) return plumb__js_fail(o, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
    memcpy(p, o->text.p + r->line_off, line_len);
    memcpy(p + line_len, o->text.p, r->line_off);
    memcpy(p + line_len + r->line_off, o->text.p + r->line_off + line_len, o->text.len - r->line_off - line_len);
    p[o->text.len] = '\0';
    *out = p;
    *out_len = o->text.len;
    return PLUMB_OK;
}
