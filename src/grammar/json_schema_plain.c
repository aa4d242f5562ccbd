/* json_schema_plain.c — the keywords of a schema: which plumb enforces, which it ignores as
 * annotations, which it refuses (each with its JSON pointer); local $ref resolution; and the
 * flattening of allOf, anyOf, oneOf and $ref into plain schemas (js_plain), merged keyword by
 * keyword exactly: allOf [A, anyOf [B, C]] is anyOf [A and B, A and C]. */
#include "grammar/json_schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ALTS 256 /* alternatives one flattening may produce */

typedef enum kw_kind { KW_ANNOTATION, KW_CONSTRAINT, KW_COMBINATOR, KW_DEFS } kw_kind;

static const struct {
    const char *name;
    kw_kind kind;
} keywords[] = {
    {"title", KW_ANNOTATION}, {"description", KW_ANNOTATION}, {"$schema", KW_ANNOTATION},
    {"$id", KW_ANNOTATION}, {"$comment", KW_ANNOTATION}, {"examples", KW_ANNOTATION},
    {"example", KW_ANNOTATION}, {"default", KW_ANNOTATION}, {"deprecated", KW_ANNOTATION},
    {"readOnly", KW_ANNOTATION}, {"writeOnly", KW_ANNOTATION}, {"contentEncoding", KW_ANNOTATION},
    {"contentMediaType", KW_ANNOTATION}, {"discriminator", KW_ANNOTATION}, {"externalDocs", KW_ANNOTATION},
    {"xml", KW_ANNOTATION},
    {"$defs", KW_DEFS}, {"definitions", KW_DEFS},
    {"$ref", KW_COMBINATOR}, {"allOf", KW_COMBINATOR}, {"anyOf", KW_COMBINATOR}, {"oneOf", KW_COMBINATOR},
    {"type", KW_CONSTRAINT}, {"nullable", KW_CONSTRAINT}, {"properties", KW_CONSTRAINT},
    {"required", KW_CONSTRAINT}, {"additionalProperties", KW_CONSTRAINT}, {"enum", KW_CONSTRAINT},
    {"const", KW_CONSTRAINT}, {"items", KW_CONSTRAINT}, {"prefixItems", KW_CONSTRAINT},
    {"minItems", KW_CONSTRAINT}, {"maxItems", KW_CONSTRAINT}, {"minLength", KW_CONSTRAINT},
    {"maxLength", KW_CONSTRAINT}, {"minimum", KW_CONSTRAINT}, {"maximum", KW_CONSTRAINT},
    {"exclusiveMinimum", KW_CONSTRAINT}, {"exclusiveMaximum", KW_CONSTRAINT}, {"pattern", KW_CONSTRAINT},
    {"format", KW_CONSTRAINT}, {"uniqueItems", KW_CONSTRAINT},
};

static int keyword(const char *name) {
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
        if (!strcmp(keywords[i].name, name)) return (int)i;
    return -1;
}

static bool is_extension(const char *name) { return name[0] == 'x' && name[1] == '-'; }

bool plumb__js_constrains(const cJSON *s, const char *const *but) {
    if (cJSON_IsBool(s)) return cJSON_IsFalse(s);
    for (const cJSON *k = s->child; k; k = k->next) {
        int i = keyword(k->string);
        if (i < 0 || keywords[i].kind == KW_ANNOTATION || keywords[i].kind == KW_DEFS) continue;
        if (!strcmp(k->string, "uniqueItems")) continue; /* only false gets past the scan */
        bool skip = false;
        for (const char *const *b = but; b && *b && !skip; b++) skip = !strcmp(*b, k->string);
        if (!skip) return true;
    }
    return false;
}

bool plumb__js_is_ref_only(const cJSON *s) {
    static const char *const ref[] = {"$ref", NULL};
    return cJSON_IsObject(s) && cJSON_GetObjectItemCaseSensitive(s, "$ref") && !plumb__js_constrains(s, ref);
}

/* ---- scan ---- */

static plumb_status bad(js_ctx *c, const char *key, const char *what) {
    size_t len = c->ptr.len;
    plumb__js_ptr_push(c, key);
    plumb__js_fail(&c->out, PLUMB_E_INVALID_ARG, "'%s' at %s %s", key, plumb__js_where(c), what);
    plumb__js_ptr_pop(c, len);
    return c->out.st;
}

static bool is_count(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble == floor(v->valuedouble) && isfinite(v->valuedouble);
}

static plumb_status scan_at(js_ctx *c, const cJSON *s, const char *seg, int index);

static plumb_status scan_keyword(js_ctx *c, const cJSON *k) {
    const char *name = k->string;
    static const char *const types[] = {"null", "boolean", "object", "array", "string", "integer", "number"};
    if (!strcmp(name, "type")) {
        bool ok = cJSON_IsString(k) || (cJSON_IsArray(k) && k->child);
        for (const cJSON *t = cJSON_IsString(k) ? k : k->child; ok && t; t = cJSON_IsString(k) ? NULL : t->next) {
            bool known = false;
            for (size_t i = 0; i < 7 && cJSON_IsString(t); i++) known |= !strcmp(t->valuestring, types[i]);
            ok = known;
        }
        return ok ? PLUMB_OK : bad(c, name, "must be a type name or a non-empty list of them");
    }
    if (!strcmp(name, "nullable") || !strcmp(name, "uniqueItems")) {
        if (!cJSON_IsBool(k)) return bad(c, name, "must be true or false");
        if (name[0] == 'u' && cJSON_IsTrue(k))
            return plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "unsupported keyword 'uniqueItems' (true) at %s",
                                  plumb__js_where(c));
        return PLUMB_OK;
    }
    if (!strcmp(name, "properties") || !strcmp(name, "$defs") || !strcmp(name, "definitions")) {
        if (!cJSON_IsObject(k)) return bad(c, name, "must be an object");
        if (name[0] == '$' || name[0] == 'd') return PLUMB_OK; /* definitions: scanned when referenced */
        size_t len = c->ptr.len;
        plumb__js_ptr_push(c, name);
        for (const cJSON *p = k->child; p && !c->out.st; p = p->next) scan_at(c, p, p->string, -1);
        plumb__js_ptr_pop(c, len);
        return c->out.st;
    }
    if (!strcmp(name, "required")) {
        bool ok = cJSON_IsArray(k);
        for (const cJSON *r = ok ? k->child : NULL; r && ok; r = r->next) ok = cJSON_IsString(r);
        return ok ? PLUMB_OK : bad(c, name, "must be a list of strings");
    }
    if (!strcmp(name, "additionalProperties")) return scan_at(c, k, name, -1);
    if (!strcmp(name, "items")) {
        if (cJSON_IsArray(k))
            return plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED,
                                  "unsupported keyword 'items' as a list (draft-07 tuples) at %s: use prefixItems",
                                  plumb__js_where(c));
        return scan_at(c, k, name, -1);
    }
    if (!strcmp(name, "prefixItems") || !strcmp(name, "allOf") || !strcmp(name, "anyOf") || !strcmp(name, "oneOf")) {
        if (!cJSON_IsArray(k) || (!k->child && name[0] != 'p')) return bad(c, name, "must be a non-empty list of schemas");
        int i = 0;
        for (const cJSON *e = k->child; e && !c->out.st; e = e->next) scan_at(c, e, name, i++);
        return c->out.st;
    }
    if (!strcmp(name, "minItems") || !strcmp(name, "maxItems") || !strcmp(name, "minLength") ||
        !strcmp(name, "maxLength"))
        return is_count(k) ? PLUMB_OK : bad(c, name, "must be a non-negative integer");
    if (!strcmp(name, "minimum") || !strcmp(name, "maximum") || !strcmp(name, "exclusiveMinimum") ||
        !strcmp(name, "exclusiveMaximum"))
        return cJSON_IsNumber(k) && isfinite(k->valuedouble) ? PLUMB_OK : bad(c, name, "must be a number");
    if (!strcmp(name, "pattern")) {
        if (!cJSON_IsString(k)) return bad(c, name, "must be a string");
        /* compile it aside, for its errors at this pointer */
        js_out scratch;
        js_buf b = {0};
        plumb__js_out_init(&scratch);
        char where[512];
        size_t len = c->ptr.len;
        plumb__js_ptr_push(c, name);
        snprintf(where, sizeof where, "%s", plumb__js_where(c));
        plumb__js_ptr_pop(c, len);
        plumb__js_pattern(&scratch, &b, k->valuestring, 0, JS_INF, where);
        plumb_status st = scratch.st;
        plumb__js_buf_free(&b);
        plumb__js_out_free(&scratch);
        if (st) c->out.st = st; /* the message is already plumb's last error */
        return st;
    }
    if (!strcmp(name, "format")) {
        if (!cJSON_IsString(k)) return bad(c, name, "must be a string");
        if (!plumb__js_format_pattern(k->valuestring))
            return plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED,
                                  "unsupported format '%.60s' at %s (plumb enforces date, time, date-time, uuid, email)",
                                  k->valuestring, plumb__js_where(c));
        return PLUMB_OK;
    }
    if (!strcmp(name, "enum")) return cJSON_IsArray(k) ? PLUMB_OK : bad(c, name, "must be a list");
    if (!strcmp(name, "$ref")) {
        if (!cJSON_IsString(k)) return bad(c, name, "must be a string");
        char *pointer = NULL;
        plumb__js_resolve(c, k->valuestring, &pointer);
        free(pointer);
        return c->out.st;
    }
    return PLUMB_OK; /* annotations, const */
}

static plumb_status scan_at(js_ctx *c, const cJSON *s, const char *seg, int index) {
    size_t len = c->ptr.len;
    if (seg) plumb__js_ptr_push(c, seg);
    if (index >= 0) plumb__js_ptr_push_index(c, (uint32_t)index);
    plumb__js_scan(c, s);
    plumb__js_ptr_pop(c, len);
    return c->out.st;
}

plumb_status plumb__js_scan(js_ctx *c, const cJSON *s) {
    if (c->out.st || !plumb__js_work(&c->out)) return c->out.st;
    if (cJSON_IsBool(s)) return PLUMB_OK;
    if (!cJSON_IsObject(s))
        return plumb__js_fail(&c->out, PLUMB_E_INVALID_ARG, "the schema at %s must be an object or a boolean",
                              plumb__js_where(c));
    if (++c->depth > JS_MAX_DEPTH) {
        c->depth--;
        return plumb__js_fail(&c->out, PLUMB_E_RANGE, "the schema nests deeper than %d levels at %s", JS_MAX_DEPTH,
                              plumb__js_where(c));
    }
    for (const cJSON *k = s->child; k && !c->out.st; k = k->next) {
        int i = keyword(k->string);
        if (i < 0 && !is_extension(k->string)) {
            plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "unsupported keyword '%.60s' at %s", k->string,
                           plumb__js_where(c));
        } else if (i >= 0 && !strcmp(k->string, "$id") && s != c->doc) {
            plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "unsupported keyword '$id' below the root at %s",
                           plumb__js_where(c));
        } else if (i >= 0) {
            scan_keyword(c, k);
        }
    }
    c->depth--;
    return c->out.st;
}

/* ---- $ref ---- */

static int hex_digit(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') return (ch | 0x20) - 'a' + 10;
    return -1;
}

/* One segment of a JSON pointer (s[0..n), percent- and ~-escaped) into out. */
static bool unescape_segment(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= n) return false;
            int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0) return false;
            ch = (char)(hi << 4 | lo);
            i += 2;
        } else if (ch == '~') {
            if (i + 1 >= n || (s[i + 1] != '0' && s[i + 1] != '1')) return false;
            ch = s[++i] == '0' ? '~' : '/';
        }
        if (k + 1 >= cap) return false;
        out[k++] = ch;
    }
    out[k] = '\0';
    return true;
}

/* The node at a local reference, or NULL. */
static const cJSON *follow(js_ctx *c, const char *ref) {
    if (ref[0] != '#') return NULL;
    const cJSON *at = c->doc;
    const char *p = ref + 1;
    if (*p && *p != '/') return NULL; /* "#name": an anchor */
    char seg[512];
    while (*p && at) {
        const char *end = strchr(p + 1, '/');
        size_t n = end ? (size_t)(end - p - 1) : strlen(p + 1);
        if (!unescape_segment(p + 1, n, seg, sizeof seg)) return NULL;
        if (cJSON_IsObject(at)) {
            const cJSON *next = NULL;
            for (const cJSON *k = at->child; k && !next; k = k->next)
                if (!strcmp(k->string, seg)) next = k;
            at = next;
        } else if (cJSON_IsArray(at)) {
            char *e;
            unsigned long i = strtoul(seg, &e, 10);
            at = *seg && !*e ? cJSON_GetArrayItem(at, (int)(i > 1000000 ? 1000000 : i)) : NULL;
        } else {
            at = NULL;
        }
        p += 1 + n;
    }
    return at;
}

const cJSON *plumb__js_resolve(js_ctx *c, const char *ref, char **pointer) {
    const char *now = ref;
    const cJSON *at = NULL;
    *pointer = NULL;
    for (int hops = 0; hops < JS_MAX_DEPTH; hops++) {
        if (now[0] != '#') {
            plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "unsupported remote $ref '%.100s' at %s", now,
                           plumb__js_where(c));
            return NULL;
        }
        if (strncmp(now, "#/", 2) && strcmp(now, "#")) {
            plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "unsupported $ref '%.100s' at %s (anchors are not supported)",
                           now, plumb__js_where(c));
            return NULL;
        }
        at = follow(c, now);
        if (!at) {
            plumb__js_fail(&c->out, PLUMB_E_INVALID_ARG, "the $ref '%.100s' at %s names nothing", now,
                           plumb__js_where(c));
            return NULL;
        }
        if (!plumb__js_is_ref_only(at)) {
            *pointer = strdup(now + 1);
            if (!*pointer) plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
            return c->out.st ? NULL : at;
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(at, "$ref");
        if (!cJSON_IsString(next)) {
            plumb__js_fail(&c->out, PLUMB_E_INVALID_ARG, "'$ref' at %s must be a string", now + 1);
            return NULL;
        }
        now = next->valuestring;
    }
    plumb__js_fail(&c->out, PLUMB_E_INVALID_ARG, "the $ref '%.100s' at %s goes round in a cycle", ref,
                   plumb__js_where(c));
    return NULL;
}

/* ---- lists and plain schemas ---- */

void plumb__js_list_push(js_ctx *c, js_list *l, const cJSON *s) {
    if (c->out.st) return;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 4;
        const cJSON **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
}

void plumb__js_list_free(js_list *l) {
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void list_add(js_ctx *c, js_list *l, const js_list *more) {
    for (uint32_t i = 0; i < more->n; i++) plumb__js_list_push(c, l, more->v[i]);
}

static void plain_free(js_plain *p) {
    for (uint32_t i = 0; i < p->n_props; i++) plumb__js_list_free(&p->props[i].s);
    free(p->props);
    plumb__js_list_free(&p->addl);
    free(p->req);
    for (uint32_t i = 0; i < p->n_prefix; i++) plumb__js_list_free(&p->prefix[i]);
    free(p->prefix);
    plumb__js_list_free(&p->items);
    free(p->enums);
    memset(p, 0, sizeof *p);
}

void plumb__js_plains_free(js_plain *p, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) plain_free(&p[i]);
    free(p);
}

static void *grow(js_ctx *c, void *p, uint32_t *cap, uint32_t n, size_t size) {
    if (n < *cap) return p;
    uint32_t nc = *cap ? *cap * 2 : 4;
    void *q = realloc(p, nc * size);
    if (!q) {
        plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        return NULL;
    }
    *cap = nc;
    return q;
}

static js_prop *find_prop(js_plain *p, const char *key) {
    for (uint32_t i = 0; i < p->n_props; i++)
        if (!strcmp(p->props[i].key, key)) return &p->props[i];
    return NULL;
}

static js_prop *add_prop(js_ctx *c, js_plain *p, const char *key) {
    js_prop *props = grow(c, p->props, &p->cap_props, p->n_props, sizeof *props);
    if (!props) return NULL;
    p->props = props;
    js_prop *e = &p->props[p->n_props++];
    memset(e, 0, sizeof *e);
    e->key = key;
    return e;
}

static void add_required(js_ctx *c, js_plain *p, const char *key) {
    for (uint32_t i = 0; i < p->n_req; i++)
        if (!strcmp(p->req[i], key)) return;
    const char **req = grow(c, p->req, &p->cap_req, p->n_req, sizeof *req);
    if (!req) return;
    p->req = req;
    p->req[p->n_req++] = key;
}

static void add_enum(js_ctx *c, js_plain *p, const cJSON *v, uint32_t *cap) {
    const cJSON **e = grow(c, p->enums, cap, p->n_enums, sizeof *e);
    if (!e) return;
    p->enums = e;
    p->enums[p->n_enums++] = v;
}

static unsigned type_bits(const char *t) {
    static const struct {
        const char *name;
        unsigned bits;
    } map[] = {{"null", T_NULL}, {"boolean", T_BOOL}, {"object", T_OBJECT}, {"array", T_ARRAY},
               {"string", T_STRING}, {"integer", T_INTEGER}, {"number", T_INTEGER | T_NUMBER}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i].name, t)) return map[i].bits;
    return 0;
}

static uint32_t count_of(const cJSON *v) { return v->valuedouble >= 4294967295.0 ? JS_INF : (uint32_t)v->valuedouble; }

static void lower(js_plain *p, double v, bool excl) {
    if (!p->has_lo || v > p->lo || (v == p->lo && excl)) p->lo = v, p->lo_excl = excl;
    p->has_lo = true;
}

static void upper(js_plain *p, double v, bool excl) {
    if (!p->has_hi || v < p->hi || (v == p->hi && excl)) p->hi = v, p->hi_excl = excl;
    p->has_hi = true;
}

/* The schema that takes any value. */
static void plain_any(js_plain *p) {
    memset(p, 0, sizeof *p);
    p->types = T_ALL;
    p->max_items = p->max_len = JS_INF;
}

/* The non-combinator keywords of s as a plain schema. */
static void plain_of(js_ctx *c, const cJSON *s, js_plain *p) {
    plain_any(p);
    if (cJSON_IsBool(s)) {
        if (cJSON_IsFalse(s)) p->types = 0;
        return;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (type) {
        p->types = 0;
        for (const cJSON *t = cJSON_IsString(type) ? type : type->child; t; t = cJSON_IsString(type) ? NULL : t->next)
            p->types |= type_bits(t->valuestring);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "nullable"))) p->types |= T_NULL;
    }
    uint32_t enum_cap = 0;
    for (const cJSON *k = s->child; k && !c->out.st; k = k->next) {
        const char *n = k->string;
        if (!strcmp(n, "properties")) {
            for (const cJSON *e = k->child; e; e = e->next) {
                js_prop *prop = find_prop(p, e->string);
                if (!prop) prop = add_prop(c, p, e->string);
                if (prop) plumb__js_list_push(c, &prop->s, e);
            }
        } else if (!strcmp(n, "required")) {
            for (const cJSON *e = k->child; e; e = e->next) add_required(c, p, e->valuestring);
        } else if (!strcmp(n, "additionalProperties")) {
            plumb__js_list_push(c, &p->addl, k);
        } else if (!strcmp(n, "items")) {
            plumb__js_list_push(c, &p->items, k);
        } else if (!strcmp(n, "prefixItems")) {
            uint32_t m = (uint32_t)cJSON_GetArraySize(k);
            p->prefix = calloc(m ? m : 1, sizeof *p->prefix);
            if (!p->prefix) {
                plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
                return;
            }
            p->n_prefix = m;
            uint32_t i = 0;
            for (const cJSON *e = k->child; e; e = e->next) plumb__js_list_push(c, &p->prefix[i++], e);
        } else if (!strcmp(n, "minItems")) {
            p->min_items = count_of(k);
        } else if (!strcmp(n, "maxItems")) {
            p->max_items = count_of(k);
        } else if (!strcmp(n, "minLength")) {
            p->min_len = count_of(k);
        } else if (!strcmp(n, "maxLength")) {
            p->max_len = count_of(k);
        } else if (!strcmp(n, "minimum") || !strcmp(n, "exclusiveMinimum")) {
            lower(p, k->valuedouble, n[0] == 'e');
        } else if (!strcmp(n, "maximum") || !strcmp(n, "exclusiveMaximum")) {
            upper(p, k->valuedouble, n[0] == 'e');
        } else if (!strcmp(n, "pattern")) {
            p->pattern = k->valuestring;
        } else if (!strcmp(n, "format")) {
            p->format = k->valuestring;
        } else if (!strcmp(n, "enum") || !strcmp(n, "const")) {
            bool was = p->has_enum;
            const cJSON **old = p->enums;
            uint32_t n_old = p->n_enums;
            p->enums = NULL;
            p->n_enums = 0;
            enum_cap = 0;
            for (const cJSON *e = n[0] == 'e' ? k->child : k; e; e = n[0] == 'e' ? e->next : NULL) {
                bool keep = !was;
                for (uint32_t i = 0; i < n_old && !keep; i++) keep = cJSON_Compare(old[i], e, true);
                if (keep) add_enum(c, p, e, &enum_cap);
            }
            free(old);
            p->has_enum = true;
        }
    }
}

/* x and y together (allOf), into z. Fails for what has no exact merge. */
static void merge(js_ctx *c, const js_plain *x, const js_plain *y, js_plain *z) {
    memset(z, 0, sizeof *z);
    z->types = x->types & y->types;
    for (int side = 0; side < 2; side++) { /* x's properties, then y's new ones */
        const js_plain *a = side ? y : x, *b = side ? x : y;
        for (uint32_t i = 0; i < a->n_props && !c->out.st; i++) {
            if (side && find_prop(z, a->props[i].key)) continue;
            js_prop *prop = add_prop(c, z, a->props[i].key);
            if (!prop) return;
            list_add(c, &prop->s, &a->props[i].s);
            /* in b the key is a property or an additional one */
            js_prop *other = find_prop((js_plain *)b, a->props[i].key);
            list_add(c, &prop->s, other ? &other->s : &b->addl);
        }
    }
    list_add(c, &z->addl, &x->addl);
    list_add(c, &z->addl, &y->addl);
    for (uint32_t i = 0; i < x->n_req; i++) add_required(c, z, x->req[i]);
    for (uint32_t i = 0; i < y->n_req; i++) add_required(c, z, y->req[i]);
    z->n_prefix = x->n_prefix > y->n_prefix ? x->n_prefix : y->n_prefix;
    if (z->n_prefix) {
        z->prefix = calloc(z->n_prefix, sizeof *z->prefix);
        if (!z->prefix) {
            z->n_prefix = 0;
            plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
            return;
        }
        for (uint32_t k = 0; k < z->n_prefix; k++) {
            list_add(c, &z->prefix[k], k < x->n_prefix ? &x->prefix[k] : &x->items);
            list_add(c, &z->prefix[k], k < y->n_prefix ? &y->prefix[k] : &y->items);
        }
    }
    list_add(c, &z->items, &x->items);
    list_add(c, &z->items, &y->items);
    z->min_items = x->min_items > y->min_items ? x->min_items : y->min_items;
    z->max_items = x->max_items < y->max_items ? x->max_items : y->max_items;
    z->min_len = x->min_len > y->min_len ? x->min_len : y->min_len;
    z->max_len = x->max_len < y->max_len ? x->max_len : y->max_len;
    if (x->has_lo) lower(z, x->lo, x->lo_excl);
    if (y->has_lo) lower(z, y->lo, y->lo_excl);
    if (x->has_hi) upper(z, x->hi, x->hi_excl);
    if (y->has_hi) upper(z, y->hi, y->hi_excl);
    for (int side = 0; side < 2; side++) {
        const char *a = side ? x->format : x->pattern, *b = side ? y->format : y->pattern;
        if (a && b && strcmp(a, b))
            plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED, "two different '%s' values to apply together at %s",
                           side ? "format" : "pattern", plumb__js_where(c));
        if (side)
            z->format = a ? a : b;
        else
            z->pattern = a ? a : b;
    }
    uint32_t cap = 0;
    z->has_enum = x->has_enum || y->has_enum;
    if (x->has_enum && y->has_enum) {
        for (uint32_t i = 0; i < x->n_enums; i++) {
            bool keep = false;
            for (uint32_t j = 0; j < y->n_enums && !keep; j++) keep = cJSON_Compare(x->enums[i], y->enums[j], true);
            if (keep) add_enum(c, z, x->enums[i], &cap);
        }
    } else if (z->has_enum) {
        const js_plain *e = x->has_enum ? x : y;
        for (uint32_t i = 0; i < e->n_enums; i++) add_enum(c, z, e->enums[i], &cap);
    }
}

/* a := every merge of an alternative of a with one of b. */
static void product(js_ctx *c, js_plain **a, uint32_t *na, js_plain *b, uint32_t nb) {
    if ((uint64_t)*na * nb > MAX_ALTS) {
        plumb__js_fail(&c->out, PLUMB_E_RANGE, "allOf/anyOf/oneOf at %s combine into more than %d alternatives",
                       plumb__js_where(c), MAX_ALTS);
        return;
    }
    js_plain *z = calloc((size_t)*na * nb + 1, sizeof *z);
    if (!z) {
        plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        return;
    }
    uint32_t nz = 0;
    for (uint32_t i = 0; i < *na && !c->out.st; i++)
        for (uint32_t j = 0; j < nb && !c->out.st; j++) {
            if (!plumb__js_work(&c->out)) break;
            merge(c, &(*a)[i], &b[j], &z[nz]);
            if (z[nz].types)
                nz++;
            else
                plain_free(&z[nz]);
        }
    plumb__js_plains_free(*a, *na);
    *a = z;
    *na = nz;
}

static plumb_status flatten_one(js_ctx *c, const cJSON *s, js_plain **alts, uint32_t *n);

/* The union of the alternatives of each schema in the array arr. */
static plumb_status flatten_union(js_ctx *c, const cJSON *arr, js_plain **alts, uint32_t *n) {
    *alts = NULL;
    *n = 0;
    for (const cJSON *e = arr->child; e && !c->out.st; e = e->next) {
        js_plain *more;
        uint32_t m;
        if (flatten_one(c, e, &more, &m)) break;
        if (*n + m > MAX_ALTS) {
            plumb__js_plains_free(more, m);
            return plumb__js_fail(&c->out, PLUMB_E_RANGE, "anyOf/oneOf at %s has more than %d alternatives",
                                  plumb__js_where(c), MAX_ALTS);
        }
        js_plain *all = realloc(*alts, (*n + m + 1) * sizeof *all);
        if (!all) {
            plumb__js_plains_free(more, m);
            return plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
        }
        memcpy(all + *n, more, m * sizeof *more);
        free(more);
        *alts = all;
        *n += m;
    }
    return c->out.st;
}

static plumb_status flatten_one(js_ctx *c, const cJSON *s, js_plain **alts, uint32_t *n) {
    *alts = NULL;
    *n = 0;
    if (c->out.st || !plumb__js_work(&c->out)) return c->out.st;
    if (++c->depth > JS_MAX_DEPTH) {
        c->depth--;
        return plumb__js_fail(&c->out, PLUMB_E_RANGE, "allOf/anyOf/$ref nest deeper than %d levels at %s",
                              JS_MAX_DEPTH, plumb__js_where(c));
    }
    js_plain *a = calloc(1, sizeof *a);
    if (!a) {
        c->depth--;
        return plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
    }
    uint32_t na = 1;
    plain_of(c, s, a);
    if (!a->types) na = 0;
    const cJSON *ref = cJSON_IsObject(s) ? cJSON_GetObjectItemCaseSensitive(s, "$ref") : NULL;
    if (ref && !c->out.st) {
        char *pointer = NULL;
        const cJSON *target = plumb__js_resolve(c, ref->valuestring, &pointer);
        bool cycle = false;
        for (int i = 0; i < c->n_inline && !cycle; i++) cycle = c->inline_stack[i] == target;
        if (target && cycle)
            plumb__js_fail(&c->out, PLUMB_E_UNSUPPORTED,
                           "the recursive $ref '%.100s' at %s is combined with other keywords (allOf, anyOf, siblings), "
                           "which plumb cannot merge",
                           ref->valuestring, plumb__js_where(c));
        if (target && !c->out.st) {
            /* the target is checked and flattened at its own pointer */
            char *here = strdup(c->ptr.p ? c->ptr.p : "");
            if (!here) plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
            c->ptr.len = 0;
            plumb__js_puts(&c->out, &c->ptr, pointer);
            plumb__js_scan(c, target);
            js_plain *b = NULL;
            uint32_t nb = 0;
            c->inline_stack[c->n_inline++] = target;
            flatten_one(c, target, &b, &nb);
            c->n_inline--;
            c->ptr.len = 0;
            if (here) plumb__js_puts(&c->out, &c->ptr, here);
            free(here);
            if (!c->out.st) product(c, &a, &na, b, nb);
            plumb__js_plains_free(b, nb);
        }
        free(pointer);
    }
    static const char *const combinators[] = {"allOf", "anyOf", "oneOf"};
    for (int k = 0; k < 3 && cJSON_IsObject(s) && !c->out.st; k++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(s, combinators[k]);
        if (!arr) continue;
        size_t len = c->ptr.len;
        plumb__js_ptr_push(c, combinators[k]);
        if (k == 0) { /* allOf: the product of every member */
            for (const cJSON *e = arr->child; e && !c->out.st; e = e->next) {
                js_plain *b;
                uint32_t nb;
                if (flatten_one(c, e, &b, &nb)) break;
                product(c, &a, &na, b, nb);
                plumb__js_plains_free(b, nb);
            }
        } else { /* anyOf, oneOf (as anyOf): the product with the union of the members */
            js_plain *b;
            uint32_t nb;
            if (!flatten_union(c, arr, &b, &nb)) product(c, &a, &na, b, nb);
            plumb__js_plains_free(b, nb);
        }
        plumb__js_ptr_pop(c, len);
    }
    c->depth--;
    if (c->out.st) {
        plumb__js_plains_free(a, na);
        return c->out.st;
    }
    *alts = a;
    *n = na;
    return PLUMB_OK;
}

plumb_status plumb__js_flatten(js_ctx *c, const js_list *l, js_plain **alts, uint32_t *n) {
    js_plain *a = calloc(1, sizeof *a);
    if (!a) return plumb__js_fail(&c->out, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
    uint32_t na = 1;
    plain_any(a);
    for (uint32_t i = 0; i < l->n && !c->out.st; i++) {
        js_plain *b;
        uint32_t nb;
        if (flatten_one(c, l->v[i], &b, &nb)) break;
        product(c, &a, &na, b, nb);
        plumb__js_plains_free(b, nb);
    }
    if (c->out.st) {
        plumb__js_plains_free(a, na);
        *alts = NULL;
        *n = 0;
        return c->out.st;
    }
    *alts = a;
    *n = na;
    return PLUMB_OK;
}
