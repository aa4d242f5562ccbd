/* json_schema.c — plumb_json_schema_to_gbnf: a JSON Schema becomes GBNF whose sentences are
 * the JSON texts valid against it (docs/structured-output.md, "JSON Schema", lists what is
 * enforced and what is refused). The walk: every schema becomes a rule, shared by body;
 * allOf/anyOf/oneOf/$ref are flattened to plain schemas (json_schema_plain.c); a local $ref
 * becomes a rule of its own, written once after the schema that first names it, so recursive
 * schemas are recursive rules and the C stack only follows the schema's own nesting.
 *
 * Objects: the declared properties in declared order (optional ones may be left out), then
 * the keys additionalProperties allows (any string but a declared name). Arrays: prefixItems
 * in order, then items, the count held to minItems/maxItems. Whitespace: the `ws` rule between
 * every two tokens, none before or after the value. */
#include "grammar/json_schema.h"

#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SCHEMA_BYTES (4u << 20)
#define MAX_EXACT 9007199254740992.0 /* 2^53 */
#define SEP "ws \",\" ws"

static js_name gen(js_ctx *c, const cJSON *s);
static js_name gen_list(js_ctx *c, const js_list *l);

/* ---- JSON pointers ---- */

const char *plumb__js_where(js_ctx *c) { return c->ptr.len ? c->ptr.p : "/"; }

void plumb__js_ptr_push(js_ctx *c, const char *seg) {
    plumb__js_puts(&c->out, &c->ptr, "/");
    for (const char *p = seg; *p; p++) {
        if (*p == '~')
            plumb__js_puts(&c->out, &c->ptr, "~0");
        else if (*p == '/')
            plumb__js_puts(&c->out, &c->ptr, "~1");
        else
            plumb__js_put(&c->out, &c->ptr, p, 1);
    }
}

void plumb__js_ptr_push_index(js_ctx *c, uint32_t i) { plumb__js_printf(&c->out, &c->ptr, "/%u", i); }

void plumb__js_ptr_pop(js_ctx *c, size_t len) {
    c->ptr.len = len;
    if (c->ptr.p) c->ptr.p[len] = '\0';
}

/* The last segment of the pointer, as a rule-name hint. */
static const char *hint(js_ctx *c) {
    if (!c->ptr.len) return "schema";
    const char *slash = strrchr(c->ptr.p, '/');
    return slash && slash[1] ? slash + 1 : "schema";
}

/* ---- shared pieces ---- */

/* The alternation of names (the empty ones left out, repeats once). */
static js_name alternation(js_ctx *c, const char *h, const js_name *names, uint32_t n) {
    js_name none = {{0}};
    js_buf b = {0};
    uint32_t parts = 0;
    js_name last = none;
    for (uint32_t i = 0; i < n; i++) {
        if (js_is_nothing(&names[i])) continue;
        bool seen = false;
        for (uint32_t j = 0; j < i && !seen; j++) seen = !strcmp(names[j].s, names[i].s);
        if (seen) continue;
        if (parts++) plumb__js_puts(&c->out, &b, " | ");
        plumb__js_puts(&c->out, &b, names[i].s);
        last = names[i];
    }
    js_name out = parts > 1 ? plumb__js_rule(&c->out, h, &b) : parts ? last : none;
    plumb__js_buf_free(&b);
    return c->out.st ? none : out;
}

static js_name rule_of(js_ctx *c, const char *h, js_buf *b) {
    js_name n = plumb__js_rule(&c->out, h, b);
    plumb__js_buf_free(b);
    return n;
}

/* ---- $ref ---- */

static js_name ref_rule(js_ctx *c, const char *ref) {
    js_name none = {{0}};
    char *pointer = NULL;
    const cJSON *target = plumb__js_resolve(c, ref, &pointer);
    if (!target || cJSON_IsFalse(target)) {
        free(pointer);
        return none;
    }
    uint32_t i = 0;
    while (i < c->n_refs && c->refs[i].target != target) i++;
    if (i == c->n_refs) {
        if (c->n_refs == c->cap_refs) {
            uint32_t cap = c->cap_refs ? c->cap_refs * 2 : 8;
            js_ref *r = realloc(c->refs, cap * sizeof *r);
            if (!r) {
                free(pointer);
                plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
                return none;
            }
            c->refs = r;
            c->cap_refs = cap;
        }
        const char *slash = strrchr(pointer, '/');
        js_ref *r = &c->refs[c->n_refs++];
        memset(r, 0, sizeof *r);
        r->target = target;
        r->pointer = pointer;
        r->name = plumb__js_reserve(&c->out, slash && slash[1] ? slash + 1 : "ref");
        pointer = NULL;
        /* check the definition once, at its own pointer */
        size_t len = c->ptr.len;
        char *here = strdup(c->ptr.p ? c->ptr.p : "");
        if (!here) plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        c->ptr.len = 0;
        plumb__js_puts(&c->out, &c->ptr, r->pointer);
        int depth = c->depth;
        c->depth = 0;
        plumb__js_scan(c, target);
        c->depth = depth;
        c->ptr.len = 0;
        if (here) plumb__js_puts(&c->out, &c->ptr, here);
        plumb__js_ptr_pop(c, len);
        free(here);
    }
    free(pointer);
    if (c->container == 0 && !c->out.st) { /* reached before any byte: an edge for the cycle check */
        if (c->n_edges == c->cap_edges) {
            uint32_t cap = c->cap_edges ? c->cap_edges * 2 : 16;
            uint32_t *e = realloc(c->edges, cap * 2 * sizeof *e);
            if (!e) {
                plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
                return none;
            }
            c->edges = e;
            c->cap_edges = cap;
        }
        c->edges[2 * c->n_edges] = (uint32_t)(c->cur + 1);
        c->edges[2 * c->n_edges + 1] = i + 1;
        c->n_edges++;
    }
    return c->out.st ? none : c->refs[i].name;
}

/* Fails when some $ref rule reaches itself before consuming a byte (the schema recurses with
 * no object or array in between: no JSON value can end it, and GBNF calls it left recursion). */
static void check_cycles(js_ctx *c) {
    uint32_t n = c->n_refs + 1;
    uint32_t *indeg = calloc(n, sizeof *indeg), *stack = calloc(n, sizeof *stack);
    if (!indeg || !stack) {
        plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        goto done;
    }
    for (uint32_t e = 0; e < c->n_edges; e++) indeg[c->edges[2 * e + 1]]++;
    uint32_t top = 0, removed = 0;
    for (uint32_t v = 0; v < n; v++)
        if (!indeg[v]) stack[top++] = v;
    while (top) {
        uint32_t v = stack[--top];
        removed++;
        for (uint32_t e = 0; e < c->n_edges; e++)
            if (c->edges[2 * e] == v && !--indeg[c->edges[2 * e + 1]]) stack[top++] = c->edges[2 * e + 1];
    }
    if (removed < n) {
        uint32_t v = 1;
        while (v < n && !indeg[v]) v++;
        plumb__js_fail(&c->out, PLUMB_E_INVALID_ARG,
                       "the schema at %s refers to itself with no object or array in between (no value can end it)",
                       v < n ? c->refs[v - 1].pointer : "/");
    }
done:
    free(indeg);
    free(stack);
}

/* ---- numbers ---- */

static js_name gen_number(js_ctx *c, const js_plain *p) {
    if (!p->has_lo && !p->has_hi) return plumb__js_builtin(&c->out, JS_NUMBER);
    if ((p->has_lo && p->lo != 0) || (p->has_hi && p->hi != 0)) {
        bool lo = p->has_lo && p->lo != 0;
        plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED,
                       "'%s' %g on a number that need not be an integer at %s: plumb bounds such numbers exactly only "
                       "at 0 (use \"type\": \"integer\")",
                       lo ? (p->lo_excl ? "exclusiveMinimum" : "minimum") : (p->hi_excl ? "exclusiveMaximum" : "maximum"),
                       lo ? p->lo : p->hi, plumb__js_where(c));
        return (js_name){{0}};
    }
    unsigned signs = 7; /* negative, zero, positive */
    if (p->has_lo) signs &= p->lo_excl ? 4 : 6;
    if (p->has_hi) signs &= p->hi_excl ? 1 : 3;
    js_buf b = {0};
    if (!plumb__js_number_signs(&c->out, &b, signs)) {
        plumb__js_buf_free(&b);
        return (js_name){{0}};
    }
    return rule_of(c, "number", &b);
}

static bool int_bound(js_ctx *c, double v, const char *what) {
    if (fabs(v) <= MAX_EXACT) return true;
    plumb__js_fail(&c->out, PLUMB_E_RANGE, "'%s' %g at %s is past 2^53, where integers are exact", what, v,
                   plumb__js_where(c));
    return false;
}

static js_name gen_integer(js_ctx *c, const js_plain *p) {
    if (!p->has_lo && !p->has_hi) return plumb__js_builtin(&c->out, JS_INTEGER);
    int64_t lo = 0, hi = 0;
    if (p->has_lo) {
        if (!int_bound(c, p->lo, p->lo_excl ? "exclusiveMinimum" : "minimum")) return (js_name){{0}};
        lo = p->lo_excl ? (int64_t)floor(p->lo) + 1 : (int64_t)ceil(p->lo);
    }
    if (p->has_hi) {
        if (!int_bound(c, p->hi, p->hi_excl ? "exclusiveMaximum" : "maximum")) return (js_name){{0}};
        hi = p->hi_excl ? (int64_t)ceil(p->hi) - 1 : (int64_t)floor(p->hi);
    }
    js_buf b = {0};
    if (!plumb__js_int_range(&c->out, &b, p->has_lo, lo, p->has_hi, hi)) {
        plumb__js_buf_free(&b);
        return (js_name){{0}};
    }
    return rule_of(c, "integer", &b);
}

/* ---- strings ---- */

static js_name gen_string(js_ctx *c, const js_plain *p) {
    js_name none = {{0}};
    if (p->pattern && p->format) {
        plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "'pattern' together with 'format' at %s is not supported",
                       plumb__js_where(c));
        return none;
    }
    if (p->min_len > p->max_len) return none;
    const char *pat = p->pattern ? p->pattern : p->format ? plumb__js_format_pattern(p->format) : NULL;
    js_buf b = {0};
    if (pat) {
        if (!plumb__js_pattern(&c->out, &b, pat, p->min_len, p->max_len, plumb__js_where(c))) {
            plumb__js_buf_free(&b);
            return none;
        }
        return rule_of(c, hint(c), &b);
    }
    if (!p->min_len && p->max_len == JS_INF) return plumb__js_builtin(&c->out, JS_STRING);
    if (p->min_len > JS_MAX_REPEAT || (p->max_len != JS_INF && p->max_len > JS_MAX_REPEAT)) {
        plumb__js_fail(&c->out, PLUMB_E_RANGE, "a string length at %s is past %u", plumb__js_where(c), JS_MAX_REPEAT);
        return none;
    }
    plumb__js_builtin(&c->out, JS_CHAR);
    if (p->max_len == JS_INF)
        plumb__js_printf(&c->out, &b, "\"\\\"\" char{%u,} \"\\\"\"", p->min_len);
    else if (p->min_len == p->max_len)
        plumb__js_printf(&c->out, &b, "\"\\\"\" char{%u} \"\\\"\"", p->min_len);
    else
        plumb__js_printf(&c->out, &b, "\"\\\"\" char{%u,%u} \"\\\"\"", p->min_len, p->max_len);
    return rule_of(c, hint(c), &b);
}

/* ---- enum and const ---- */

static unsigned type_of(const cJSON *v) {
    if (cJSON_IsNull(v)) return T_NULL;
    if (cJSON_IsBool(v)) return T_BOOL;
    if (cJSON_IsObject(v)) return T_OBJECT;
    if (cJSON_IsArray(v)) return T_ARRAY;
    if (cJSON_IsString(v)) return T_STRING;
    return v->valuedouble == floor(v->valuedouble) ? T_INTEGER : T_NUMBER;
}

/* Whether the value v passes the plain keywords of p (enum values are checked, not generated). */
static bool passes(const js_plain *p, const cJSON *v) {
    unsigned t = type_of(v);
    if (!(p->types & t)) return false;
    if (t & (T_INTEGER | T_NUMBER)) {
        double x = v->valuedouble;
        if (p->has_lo && (x < p->lo || (p->lo_excl && x == p->lo))) return false;
        if (p->has_hi && (x > p->hi || (p->hi_excl && x == p->hi))) return false;
    }
    if (t == T_STRING) {
        size_t n = plumb__utf8_count(v->valuestring);
        if (n < p->min_len || (p->max_len != JS_INF && n > p->max_len)) return false;
    }
    if (t == T_ARRAY) {
        uint32_t n = (uint32_t)cJSON_GetArraySize(v);
        if (n < p->min_items || (p->max_items != JS_INF && n > p->max_items)) return false;
    }
    if (t == T_OBJECT)
        for (uint32_t i = 0; i < p->n_req; i++)
            if (!cJSON_GetObjectItemCaseSensitive(v, p->req[i])) return false;
    return true;
}

/* The grammar of the JSON value v (whitespace allowed between its tokens). */
static void literal(js_ctx *c, js_buf *b, const cJSON *v, int depth) {
    if (c->out.st || !plumb__js_work(&c->out)) return;
    if (depth > JS_MAX_DEPTH) {
        plumb__js_fail(&c->out, PLUMB_E_RANGE, "an enum/const value at %s nests deeper than %d levels",
                       plumb__js_where(c), JS_MAX_DEPTH);
        return;
    }
    if (cJSON_IsNull(v)) {
        plumb__js_puts(&c->out, b, "\"null\"");
    } else if (cJSON_IsBool(v)) {
        plumb__js_puts(&c->out, b, cJSON_IsTrue(v) ? "\"true\"" : "\"false\"");
    } else if (cJSON_IsNumber(v)) {
        plumb__js_number_literal(&c->out, b, v->valuedouble, plumb__js_where(c));
    } else if (cJSON_IsString(v)) {
        plumb__js_string_literal(&c->out, b, v->valuestring, strlen(v->valuestring));
    } else {
        bool obj = cJSON_IsObject(v);
        plumb__js_builtin(&c->out, JS_WS);
        plumb__js_puts(&c->out, b, obj ? "\"{\" ws" : "\"[\" ws");
        for (const cJSON *e = v->child; e; e = e->next) {
            plumb__js_puts(&c->out, b, e == v->child ? " " : " " SEP " ");
            if (obj) {
                plumb__js_string_literal(&c->out, b, e->string, strlen(e->string));
                plumb__js_puts(&c->out, b, " ws \":\" ws ");
            }
            literal(c, b, e, depth + 1);
        }
        plumb__js_puts(&c->out, b, v->child ? " ws " : " ");
        plumb__js_puts(&c->out, b, obj ? "\"}\"" : "\"]\"");
    }
}

static js_name gen_enum(js_ctx *c, const js_plain *p) {
    js_name none = {{0}};
    const char *other = p->pattern ? "pattern" : p->format ? "format" : p->n_props ? "properties"
                      : p->addl.n ? "additionalProperties" : p->n_prefix ? "prefixItems" : p->items.n ? "items" : NULL;
    if (other) {
        plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "'enum'/'const' together with '%s' at %s is not supported", other,
                       plumb__js_where(c));
        return none;
    }
    js_buf b = {0};
    uint32_t parts = 0;
    for (uint32_t i = 0; i < p->n_enums && !c->out.st; i++) {
        if (!passes(p, p->enums[i])) continue;
        if (parts++) plumb__js_puts(&c->out, &b, " | ");
        literal(c, &b, p->enums[i], 0);
    }
    if (!parts) return none;
    return rule_of(c, hint(c), &b);
}

/* ---- objects ---- */

/* A JSON string that is none of the names: a trie over their code points, one rule per node
 * (nodes with the same subtree share it), the closing quote included. */
typedef struct trie_node {
    uint32_t cp, kid, next; /* kid/next: index + 1 */
    bool end;
    js_name rule;
} trie_node;

static js_name not_names(js_ctx *c, const char *const *names, uint32_t n) {
    js_name none = {{0}};
    trie_node *t = calloc(1, sizeof *t);
    uint32_t nt = 1, cap = 1;
    if (!t) goto nomem;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t at = 0;
        size_t len = strlen(names[k]);
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            if (!plumb__utf8_next(names[k], len, &i, &cp)) break; /* the schema was checked to be UTF-8 */
            uint32_t child = t[at].kid;
            while (child && t[child - 1].cp != cp) child = t[child - 1].next;
            if (!child) {
                if (!plumb__js_work(&c->out)) goto done;
                if (nt == cap) {
                    trie_node *g = realloc(t, 2 * cap * sizeof *g);
                    if (!g) goto nomem;
                    t = g;
                    cap *= 2;
                }
                memset(&t[nt], 0, sizeof t[nt]);
                t[nt].cp = cp;
                t[nt].next = t[at].kid;
                t[at].kid = child = ++nt;
            }
            at = child - 1;
        }
        t[at].end = true;
    }
    /* children come after their parents: build the rules from the last node back */
    js_name ch = plumb__js_builtin(&c->out, JS_CHAR);
    for (uint32_t i = nt; i-- > 0 && !c->out.st;) {
        js_buf b = {0};
        js_cset others = {0};
        plumb__cset_add(&c->out, &others, 0, 0x10FFFF);
        uint32_t parts = 0;
        for (uint32_t k = t[i].kid; k; k = t[k - 1].next) {
            js_cset one = {0};
            plumb__cset_add(&c->out, &one, t[k - 1].cp, t[k - 1].cp);
            js_name cr = plumb__js_char_rule(&c->out, &one);
            plumb__cset_free(&one);
            plumb__js_printf(&c->out, &b, "%s%s %s", parts++ ? " | " : "", cr.s, t[k - 1].rule.s);
            /* others := others minus this code point */
            plumb__cset_negate(&c->out, &others);
            plumb__cset_add(&c->out, &others, t[k - 1].cp, t[k - 1].cp);
            plumb__cset_negate(&c->out, &others);
        }
        js_name rest = plumb__js_char_rule(&c->out, &others);
        plumb__cset_free(&others);
        if (!js_is_nothing(&rest)) plumb__js_printf(&c->out, &b, "%s%s %s* \"\\\"\"", parts++ ? " | " : "", rest.s, ch.s);
        if (!t[i].end) plumb__js_printf(&c->out, &b, "%s\"\\\"\"", parts++ ? " | " : "");
        t[i].rule = rule_of(c, "key", &b);
    }
    if (!c->out.st) {
        js_buf b = {0};
        plumb__js_printf(&c->out, &b, "\"\\\"\" %s", t[0].rule.s);
        none = rule_of(c, "other-key", &b);
    }
    goto done;
nomem:
    plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
done:
    free(t);
    return c->out.st ? (js_name){{0}} : none;
}

/* key ws ":" ws value, as a rule. */
static js_name member(js_ctx *c, const char *key, const js_name *key_rule, const js_name *value) {
    js_buf b = {0};
    char h[40];
    if (key) {
        plumb__js_string_literal(&c->out, &b, key, strlen(key));
        snprintf(h, sizeof h, "%.30s-kv", key);
    } else {
        plumb__js_puts(&c->out, &b, key_rule->s);
        snprintf(h, sizeof h, "%s-extra-kv", hint(c));
    }
    plumb__js_printf(&c->out, &b, " ws \":\" ws %s", value->s);
    return rule_of(c, h, &b);
}

typedef struct member_item {
    js_name kv;
    bool required;
} member_item;

static js_name gen_object_members(js_ctx *c, const member_item *m, uint32_t k, const js_name *extra) {
    bool has_extra = !js_is_nothing(extra);
    uint32_t r = 0; /* the first required member */
    while (r < k && !m[r].required) r++;
    /* L alternatives for the first member: each optional one before r, then r (or extra) */
    uint32_t L = r < k ? r + 1 : k + has_extra;
    js_buf b = {0};
    if (!L) {
        plumb__js_puts(&c->out, &b, "\"{\" ws \"}\"");
        return rule_of(c, hint(c), &b);
    }
    /* the tail after member L-1: everything from L on, inline */
    js_buf tail = {0};
    for (uint32_t i = L; i < k; i++)
        plumb__js_printf(&c->out, &tail, m[i].required ? " " SEP " %s" : " ( " SEP " %s )?", m[i].kv.s);
    if (has_extra && L <= k) plumb__js_printf(&c->out, &tail, " ( " SEP " %s )*", extra->s);
    /* rest[j]: the members from j on, after one was written; a chain of rules when shared */
    js_name next = {{0}};
    if (tail.len) next = rule_of(c, "rest", &tail);
    plumb__js_buf_free(&tail);
    js_name *alts = calloc(L, sizeof *alts);
    if (!alts) {
        plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        return (js_name){{0}};
    }
    for (uint32_t j = L; j-- > 0 && !c->out.st;) {
        js_buf a = {0};
        const js_name *first = j < k ? &m[j].kv : extra;
        plumb__js_printf(&c->out, &a, "%s%s%s", first->s, next.s[0] ? " " : "", next.s);
        if (j == k) plumb__js_printf(&c->out, &a, " ( " SEP " %s )*", extra->s);
        alts[j] = rule_of(c, "members", &a);
        if (j > 0) { /* rest[j], for the alternative before: member j after a separator */
            js_buf rest = {0};
            if (j == k)
                plumb__js_printf(&c->out, &rest, "( " SEP " %s )*", extra->s);
            else
                plumb__js_printf(&c->out, &rest, m[j].required ? SEP " %s%s%s" : "( " SEP " %s )?%s%s", m[j].kv.s,
                                 next.s[0] ? " " : "", next.s);
            next = rule_of(c, "rest", &rest);
        }
    }
    js_name any = alternation(c, "members", alts, L);
    free(alts);
    if (r < k)
        plumb__js_printf(&c->out, &b, "\"{\" ws %s ws \"}\"", any.s);
    else
        plumb__js_printf(&c->out, &b, "\"{\" ws ( %s ws )? \"}\"", any.s);
    return rule_of(c, hint(c), &b);
}

static js_name gen_object(js_ctx *c, const js_plain *p) {
    js_name none = {{0}}, out = none;
    uint32_t n_names = p->n_props + p->n_req;
    member_item *m = calloc(n_names + 1, sizeof *m);
    const char **names = calloc(n_names + 1, sizeof *names);
    uint32_t k = 0, nn = 0;
    bool dead = false;
    if (!m || !names) {
        plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        goto done;
    }
    plumb__js_builtin(&c->out, JS_WS);
    c->container++;
    for (uint32_t i = 0; i < p->n_props && !c->out.st && !dead; i++) {
        const char *key = p->props[i].key;
        bool required = false;
        for (uint32_t j = 0; j < p->n_req && !required; j++) required = !strcmp(p->req[j], key);
        size_t len = c->ptr.len;
        plumb__js_ptr_push(c, "properties");
        plumb__js_ptr_push(c, key);
        js_name v = gen_list(c, &p->props[i].s);
        plumb__js_ptr_pop(c, len);
        names[nn++] = key;
        if (js_is_nothing(&v)) {
            dead = required; /* a required key no value fits */
            continue;
        }
        m[k].kv = member(c, key, NULL, &v);
        m[k++].required = required;
    }
    /* required keys without a property: additionalProperties governs their values */
    js_name addl = none;
    bool addl_done = false;
    for (uint32_t j = 0; j < p->n_req && !c->out.st && !dead; j++) {
        bool declared = false;
        for (uint32_t i = 0; i < p->n_props && !declared; i++) declared = !strcmp(p->props[i].key, p->req[j]);
        if (declared) continue;
        if (!addl_done) {
            size_t len = c->ptr.len;
            plumb__js_ptr_push(c, "additionalProperties");
            addl = gen_list(c, &p->addl);
            plumb__js_ptr_pop(c, len);
            addl_done = true;
        }
        names[nn++] = p->req[j];
        if (js_is_nothing(&addl)) {
            dead = true;
            break;
        }
        m[k].kv = member(c, p->req[j], NULL, &addl);
        m[k++].required = true;
    }
    if (!addl_done && !dead && !c->out.st) {
        size_t len = c->ptr.len;
        plumb__js_ptr_push(c, "additionalProperties");
        addl = gen_list(c, &p->addl);
        plumb__js_ptr_pop(c, len);
    }
    c->container--;
    if (dead || c->out.st) goto done;
    js_name value = plumb__js_builtin(&c->out, JS_VALUE);
    if (!k && !nn && !strcmp(addl.s, value.s)) {
        out = plumb__js_builtin(&c->out, JS_OBJECT);
        goto done;
    }
    js_name extra = none;
    if (!js_is_nothing(&addl)) {
        js_name key = nn ? not_names(c, names, nn) : plumb__js_builtin(&c->out, JS_STRING);
        extra = member(c, NULL, &key, &addl);
    }
    out = gen_object_members(c, m, k, &extra);
done:
    free(m);
    free(names);
    return c->out.st ? none : out;
}

/* ---- arrays ---- */

static js_name gen_array(js_ctx *c, const js_plain *p) {
    js_name none = {{0}}, out = none;
    uint32_t n = p->n_prefix, lo = p->min_items, hi = p->max_items;
    js_name *e = calloc(n + 1, sizeof *e);
    if (!e) {
        plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        return none;
    }
    plumb__js_builtin(&c->out, JS_WS);
    c->container++;
    for (uint32_t k = 0; k < n && k < hi && !c->out.st; k++) {
        size_t len = c->ptr.len;
        plumb__js_ptr_push(c, "prefixItems");
        plumb__js_ptr_push_index(c, k);
        e[k] = gen_list(c, &p->prefix[k]);
        plumb__js_ptr_pop(c, len);
        if (js_is_nothing(&e[k])) hi = k; /* no array gets past position k */
    }
    js_name item = none;
    if (hi > n) {
        size_t len = c->ptr.len;
        plumb__js_ptr_push(c, "items");
        item = gen_list(c, &p->items);
        plumb__js_ptr_pop(c, len);
        if (js_is_nothing(&item)) hi = n;
    }
    c->container--;
    if (c->out.st || lo > hi) goto done;
    if (!n && !lo && hi == JS_INF && !strcmp(item.s, plumb__js_builtin(&c->out, JS_VALUE).s)) {
        out = plumb__js_builtin(&c->out, JS_ARRAY);
        goto done;
    }
    js_buf b = {0};
    if (hi == 0) {
        plumb__js_puts(&c->out, &b, "\"[\" ws \"]\"");
        out = rule_of(c, hint(c), &b);
        goto done;
    }
    /* rest: the elements from position k on, after one was written; from the end back */
    uint32_t last = n < hi ? n : hi; /* first position past the prefix */
    uint32_t pos = n ? last : 1;     /* first position the repeated items fill */
    js_buf rest = {0};
    if (pos < hi) { /* items repeated */
        uint32_t a = lo > pos ? lo - pos : 0, z = hi == JS_INF ? JS_INF : hi - pos;
        if (a > JS_MAX_REPEAT || (z != JS_INF && z > JS_MAX_REPEAT)) {
            plumb__js_fail(&c->out, PLUMB_E_RANGE, "an array length at %s is past %u", plumb__js_where(c),
                           JS_MAX_REPEAT);
            goto done;
        }
        if (z == JS_INF)
            plumb__js_printf(&c->out, &rest, a ? "( " SEP " %s ){%u,}" : "( " SEP " %s )*", item.s, a);
        else
            plumb__js_printf(&c->out, &rest, "( " SEP " %s ){%u,%u}", item.s, a, z);
    }
    js_name next = rest.len ? rule_of(c, "rest", &rest) : none;
    plumb__js_buf_free(&rest);
    for (uint32_t k = last; k-- > 1 && !c->out.st;) {
        plumb__js_printf(&c->out, &rest, k < lo ? SEP " %s%s%s" : "( " SEP " %s%s%s )?", e[k].s, next.s[0] ? " " : "",
                         next.s);
        next = rule_of(c, "rest", &rest);
    }
    const js_name *first = n ? &e[0] : &item;
    if (lo)
        plumb__js_printf(&c->out, &b, "\"[\" ws %s%s%s ws \"]\"", first->s, next.s[0] ? " " : "", next.s);
    else
        plumb__js_printf(&c->out, &b, "\"[\" ws ( %s%s%s ws )? \"]\"", first->s, next.s[0] ? " " : "", next.s);
    out = rule_of(c, hint(c), &b);
done:
    free(e);
    return c->out.st ? none : out;
}

/* ---- schemas ---- */

static js_name gen_plain(js_ctx *c, const js_plain *p) {
    if (p->has_enum) return gen_enum(c, p);
    js_name names[6];
    uint32_t n = 0;
    if (p->types & T_NULL) names[n++] = plumb__js_builtin(&c->out, JS_NULL);
    if (p->types & T_BOOL) names[n++] = plumb__js_builtin(&c->out, JS_BOOLEAN);
    if (p->types & T_OBJECT) names[n++] = gen_object(c, p);
    if (p->types & T_ARRAY) names[n++] = gen_array(c, p);
    if (p->types & T_STRING) names[n++] = gen_string(c, p);
    if (p->types & T_NUMBER)
        names[n++] = gen_number(c, p);
    else if (p->types & T_INTEGER)
        names[n++] = gen_integer(c, p);
    if (n == 6 && !strcmp(names[2].s, "object") && !strcmp(names[3].s, "array") && !strcmp(names[4].s, "string") &&
        !strcmp(names[5].s, "number"))
        return plumb__js_builtin(&c->out, JS_VALUE);
    return alternation(c, hint(c), names, n);
}

/* The schemas of l all applying, flattened. */
static js_name gen_flat(js_ctx *c, const js_list *l) {
    js_plain *alts;
    uint32_t n;
    if (plumb__js_flatten(c, l, &alts, &n)) return (js_name){{0}};
    js_name *names = calloc(n + 1, sizeof *names);
    if (!names) plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
    for (uint32_t i = 0; i < n && names && !c->out.st; i++) names[i] = gen_plain(c, &alts[i]);
    js_name out = names ? alternation(c, hint(c), names, n) : (js_name){{0}};
    free(names);
    plumb__js_plains_free(alts, n);
    return out;
}

static js_name gen_list(js_ctx *c, const js_list *l) {
    if (!l->n) return plumb__js_builtin(&c->out, JS_VALUE);
    if (l->n == 1) return gen(c, l->v[0]);
    return gen_flat(c, l);
}

static js_name gen(js_ctx *c, const cJSON *s) {
    js_name out = {{0}};
    if (c->out.st || !plumb__js_work(&c->out)) return out;
    if (cJSON_IsBool(s)) return cJSON_IsTrue(s) ? plumb__js_builtin(&c->out, JS_VALUE) : out;
    if (++c->depth > JS_MAX_DEPTH) {
        plumb__js_fail(&c->out, PLUMB_E_RANGE, "the schema nests deeper than %d levels at %s", JS_MAX_DEPTH,
                       plumb__js_where(c));
        c->depth--;
        return out;
    }
    static const char *const any_of[] = {"anyOf", NULL}, *const one_of[] = {"oneOf", NULL};
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf"), *one = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    if (plumb__js_is_ref_only(s)) {
        out = ref_rule(c, cJSON_GetObjectItemCaseSensitive(s, "$ref")->valuestring);
    } else if ((any && !plumb__js_constrains(s, any_of)) || (one && !plumb__js_constrains(s, one_of))) {
        /* a bare anyOf/oneOf: each member its own rule ($refs stay references) */
        const cJSON *arr = any ? any : one;
        uint32_t n = (uint32_t)cJSON_GetArraySize(arr), i = 0;
        js_name *names = calloc(n + 1, sizeof *names);
        if (!names) plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        for (const cJSON *e = arr->child; e && names && !c->out.st; e = e->next, i++) {
            size_t len = c->ptr.len;
            plumb__js_ptr_push(c, any ? "anyOf" : "oneOf");
            plumb__js_ptr_push_index(c, i);
            names[i] = gen(c, e);
            plumb__js_ptr_pop(c, len);
        }
        if (names) out = alternation(c, hint(c), names, n);
        free(names);
    } else {
        js_list l = {.v = &s, .n = 1, .cap = 1};
        out = gen_flat(c, &l);
    }
    c->depth--;
    return c->out.st ? (js_name){{0}} : out;
}

/* ---- the entry point ---- */

/* Valid UTF-8, and no NUL, raw or \u0000 (cJSON would cut the string there), nor other raw
 * control characters (JSON allows none in strings). */
static plumb_status check_text(js_out *o, const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return plumb__js_fail(o, PLUMB_E_INVALID_ARG, "the schema holds a control character (at byte %zu)", i);
        if (s[i] == '\\' && i + 1 < len) {
            if (s[i + 1] == 'u' && len - i >= 6 && !memcmp(s + i + 2, "0000", 4))
                return plumb__js_fail(o, PLUMB_E_INVALID_ARG, "the schema holds \\u0000 (at byte %zu)", i);
            i += 2;
            continue;
        }
        if (!plumb__utf8_next(s, len, &i, &cp))
            return plumb__js_fail(o, PLUMB_E_INVALID_ARG, "the schema is not valid UTF-8 (at byte %zu)", i);
    }
    return PLUMB_OK;
}

static int cmp_key(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Refuses an object with a key twice (which value would apply is not portable). */
static plumb_status check_keys(js_out *o, const cJSON *j) {
    int n = cJSON_GetArraySize(j);
    if (cJSON_IsObject(j) && n > 1) {
        const char **keys = malloc((size_t)n * sizeof *keys);
        if (!keys) return plumb__js_fail(o, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        int k = 0;
        for (const cJSON *e = j->child; e; e = e->next) keys[k++] = e->string;
        qsort(keys, (size_t)n, sizeof *keys, cmp_key);
        for (int i = 1; i < n && !o->st; i++)
            if (!strcmp(keys[i - 1], keys[i]))
                plumb__js_fail(o, PLUMB_E_INVALID_ARG, "the key '%.60s' appears twice in one object of the schema",
                               keys[i]);
        free(keys);
    }
    for (const cJSON *e = j->child; e && !o->st; e = e->next)
        if (cJSON_IsObject(e) || cJSON_IsArray(e)) check_keys(o, e);
    return o->st;
}

plumb_status plumb_json_schema_to_gbnf(const char *schema, size_t len, char **gbnf, size_t *gbnf_len) {
    if (gbnf) *gbnf = NULL;
    if (gbnf_len) *gbnf_len = 0;
    if (!schema || !gbnf || !gbnf_len) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_json_schema_to_gbnf: NULL argument");
    if (len > MAX_SCHEMA_BYTES)
        return plumb__fail(PLUMB_E_RANGE, "the schema is %zu bytes, past the cap of %u", len, MAX_SCHEMA_BYTES);
    js_ctx c;
    memset(&c, 0, sizeof c);
    plumb__js_out_init(&c.out);
    c.cur = -1;
    cJSON *doc = NULL;
    if (check_text(&c.out, schema, len)) goto done;
    const char *end = NULL;
    doc = cJSON_ParseWithLengthOpts(schema, len, &end, false);
    if (!doc) {
        size_t at = end && end >= schema && end <= schema + len ? (size_t)(end - schema) : 0;
        plumb__js_fail(&c.out, PLUMB_E_INVALID_ARG, "the schema is not valid JSON (near byte %zu)", at);
        goto done;
    }
    for (const char *q = end; q < schema + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            plumb__js_fail(&c.out, PLUMB_E_INVALID_ARG, "the schema has data after the JSON value (at byte %zu)",
                           (size_t)(q - schema));
            goto done;
        }
    if (check_keys(&c.out, doc)) goto done;
    c.doc = doc;
    if (plumb__js_scan(&c, doc)) goto done;
    js_name root = plumb__js_reserve(&c.out, "root");
    js_name top = gen(&c, doc);
    if (!c.out.st && js_is_nothing(&top))
        plumb__js_fail(&c.out, PLUMB_E_INVALID_ARG, "the schema accepts no JSON value");
    js_buf b = {0};
    plumb__js_puts(&c.out, &b, top.s);
    plumb__js_define(&c.out, &root, &b);
    /* the $ref rules, each once; writing one may name more */
    for (uint32_t i = 0; i < c.n_refs && !c.out.st; i++) {
        c.cur = (int)i;
        c.container = 0;
        c.depth = 0;
        plumb__js_ptr_pop(&c, 0);
        plumb__js_puts(&c.out, &c.ptr, c.refs[i].pointer);
        js_name body = gen(&c, c.refs[i].target);
        if (js_is_nothing(&body)) body = plumb__js_builtin(&c.out, JS_NOTHING);
        b.len = 0;
        plumb__js_puts(&c.out, &b, body.s);
        plumb__js_define(&c.out, &c.refs[i].name, &b);
    }
    plumb__js_buf_free(&b);
    if (!c.out.st) check_cycles(&c);
    if (!c.out.st) plumb__js_finish(&c.out, &root, gbnf, gbnf_len);
done:;
    plumb_status st = c.out.st;
    cJSON_Delete(doc);
    for (uint32_t i = 0; i < c.n_refs; i++) free(c.refs[i].pointer);
    free(c.refs);
    free(c.edges);
    plumb__js_buf_free(&c.ptr);
    plumb__js_out_free(&c.out);
    if (!st) plumb__clear_error();
    return st;
}
