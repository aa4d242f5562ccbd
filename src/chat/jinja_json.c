/* jinja_json.c — JSON for plumb's Jinja engine: the reader that turns the caller's variables
 * into values (as Python's json.loads would: objects keep their key order, a repeated key keeps
 * its first place and its last value, integers stay integers, NaN and Infinity are accepted),
 * and the writer behind |tojson, which is Hugging Face's override of jinja2's filter:
 * json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys).
 *
 * Its own reader rather than cJSON: Python keeps 1 and 1.0 apart and prints them differently,
 * which cJSON's double-only numbers cannot tell, and the core library does not link cJSON. */
#include "chat/jinja.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reader ------------------------------------------------------------------------------ */

typedef struct jr {
    jctx *c;
    const char *p;
    size_t n, i;
    uint32_t depth;
} jr;

static int rfail(jr *r, const char *what) {
    return jfail(r->c, PLUMB_E_INVALID_ARG, "variables: JSON offset %zu: %s", r->i, what);
}

static void skip_ws(jr *r) {
    while (r->i < r->n && (r->p[r->i] == ' ' || r->p[r->i] == '\t' || r->p[r->i] == '\n' || r->p[r->i] == '\r')) r->i++;
}

static bool lit(jr *r, const char *s) {
    size_t m = strlen(s);
    if (r->n - r->i >= m && memcmp(r->p + r->i, s, m) == 0) {
        r->i += m;
        return true;
    }
    return false;
}

static int hex4(jr *r, uint32_t *out) {
    if (r->n - r->i < 4) return rfail(r, "truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char ch = r->p[r->i + k];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0) return rfail(r, "bad \\u escape");
        v = v * 16 + (uint32_t)d;
    }
    r->i += 4;
    *out = v;
    return 0;
}

static int read_string(jr *r, jstr **out) {
    r->i++; /* the opening quote */
    jsb b;
    jsb_init(&b, r->c);
    size_t run = r->i;
    for (;;) {
        if (r->i >= r->n) {
            rfail(r, "unterminated string");
            goto fail;
        }
        unsigned char ch = (unsigned char)r->p[r->i];
        if (ch == '"' || ch == '\\' || ch < 0x20) {
            if (jsb_put(&b, r->p + run, r->i - run, false)) goto fail;
        }
        if (ch == '"') {
            r->i++;
            break;
        }
        if (ch < 0x20) {
            rfail(r, "control character in string");
            goto fail;
        }
        if (ch != '\\') {
            r->i++;
            continue;
        }
        r->i++;
        if (r->i >= r->n) {
            rfail(r, "unterminated string");
            goto fail;
        }
        char e = r->p[r->i++];
        char t[4];
        size_t tl = 1;
        switch (e) {
        case '"': t[0] = '"'; break;
        case '\\': t[0] = '\\'; break;
        case '/': t[0] = '/'; break;
        case 'b': t[0] = '\b'; break;
        case 'f': t[0] = '\f'; break;
        case 'n': t[0] = '\n'; break;
        case 'r': t[0] = '\r'; break;
        case 't': t[0] = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (hex4(r, &cp)) goto fail;
            if (cp >= 0xD800 && cp <= 0xDBFF && r->n - r->i >= 6 && r->p[r->i] == '\\' && r->p[r->i + 1] == 'u') {
                size_t save = r->i;
                r->i += 2;
                uint32_t lo;
                if (hex4(r, &lo)) goto fail;
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    r->i = save;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                rfail(r, "lone surrogate in \\u escape (not UTF-8)");
                goto fail;
            }
            tl = utf8_enc(cp, t);
            break;
        }
        default: rfail(r, "bad escape"); goto fail;
        }
        if (jsb_put(&b, t, tl, false)) goto fail;
        run = r->i;
    }
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
fail:
    jsb_drop(&b);
    return -1;
}

static int read_number(jr *r, jval *out) {
    size_t s = r->i;
    bool is_float = false;
    if (r->p[r->i] == '-') r->i++;
    if (r->i < r->n && lit(r, "Infinity")) {
        *out = jv_float(-INFINITY);
        return 0;
    }
    if (r->i >= r->n || r->p[r->i] < '0' || r->p[r->i] > '9') return rfail(r, "bad number");
    if (r->p[r->i] == '0')
        r->i++;
    else
        while (r->i < r->n && r->p[r->i] >= '0' && r->p[r->i] <= '9') r->i++;
    if (r->i < r->n && r->p[r->i] == '.' && r->i + 1 < r->n && r->p[r->i + 1] >= '0' && r->p[r->i + 1] <= '9') {
        is_float = true;
        r->i++;
        while (r->i < r->n && r->p[r->i] >= '0' && r->p[r->i] <= '9') r->i++;
    }
    if (r->i < r->n && (r->p[r->i] == 'e' || r->p[r->i] == 'E')) {
        size_t save = r->i++;
        if (r->i < r->n && (r->p[r->i] == '+' || r->p[r->i] == '-')) r->i++;
        if (r->i < r->n && r->p[r->i] >= '0' && r->p[r->i] <= '9') {
            is_float = true;
            while (r->i < r->n && r->p[r->i] >= '0' && r->p[r->i] <= '9') r->i++;
        } else {
            r->i = save; /* Python stops the number before a bare 'e' (and then fails) */
        }
    }
    size_t len = r->i - s;
    char tmp[64];
    char *buf = len < sizeof tmp ? tmp : jalloc(r->c, len + 1);
    if (!buf) return -1;
    memcpy(buf, r->p + s, len);
    buf[len] = '\0';
    int rv = 0;
    if (is_float) {
        *out = jv_float(jstrtod(buf, NULL));
    } else {
        /* digits only: overflow means past 64 bits */
        bool neg = buf[0] == '-';
        uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (const char *q = buf + neg; *q && !rv; q++) {
            unsigned d = (unsigned)(*q - '0');
            if (v > (lim - d) / 10)
                rv = jfail(r->c, PLUMB_E_RANGE, "variables: JSON offset %zu: integer past 64 bits", s);
            else
                v = v * 10 + d;
        }
        if (!rv) *out = jv_int(neg ? (int64_t)(0 - v) : (int64_t)v);
    }
    if (buf != tmp) jfree(r->c, buf);
    return rv;
}

static int read_value(jr *r, jval *out);

static int read_array(jr *r, jval *out) {
    r->i++;
    jval *items = NULL;
    size_t n = 0, cap = 0;
    skip_ws(r);
    if (r->i < r->n && r->p[r->i] == ']') {
        r->i++;
    } else {
        for (;;) {
            jval v;
            skip_ws(r);
            if (read_value(r, &v)) goto fail;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 8;
                jval *ni = jrealloc(r->c, items, nc * sizeof *ni);
                if (!ni) {
                    jv_release(r->c, v);
                    goto fail;
                }
                items = ni;
                cap = nc;
            }
            items[n++] = v;
            skip_ws(r);
            if (r->i < r->n && r->p[r->i] == ',') {
                r->i++;
                continue;
            }
            if (r->i < r->n && r->p[r->i] == ']') {
                r->i++;
                break;
            }
            rfail(r, "expected ',' or ']'");
            goto fail;
        }
    }
    jlist *l = jlist_new(r->c, n, JL_LIST);
    if (!l) goto fail;
    if (n) memcpy(l->v, items, n * sizeof *items);
    jfree(r->c, items);
    *out = jv_list(l);
    return jlist_seal(r->c, l);
fail:
    for (size_t k = 0; k < n; k++) jv_release(r->c, items[k]);
    jfree(r->c, items);
    return -1;
}

static int read_object(jr *r, jval *out) {
    r->i++;
    jdict *d = jdict_new(r->c);
    if (!d) return -1;
    *out = jv_dict(d);
    skip_ws(r);
    if (r->i < r->n && r->p[r->i] == '}') {
        r->i++;
        return 0;
    }
    for (;;) {
        skip_ws(r);
        if (r->i >= r->n || r->p[r->i] != '"') return rfail(r, "expected a string key");
        jstr *k;
        if (read_string(r, &k)) return -1;
        skip_ws(r);
        if (r->i >= r->n || r->p[r->i] != ':') {
            jv_release(r->c, jv_str(k));
            return rfail(r, "expected ':'");
        }
        r->i++;
        skip_ws(r);
        jval v;
        if (read_value(r, &v)) {
            jv_release(r->c, jv_str(k));
            return -1;
        }
        if (jdict_set(r->c, d, jv_str(k), v)) return -1;
        skip_ws(r);
        if (r->i < r->n && r->p[r->i] == ',') {
            r->i++;
            continue;
        }
        if (r->i < r->n && r->p[r->i] == '}') {
            r->i++;
            return 0;
        }
        return rfail(r, "expected ',' or '}'");
    }
}

static int read_value(jr *r, jval *out) {
    *out = jv_undef();
    if (r->i >= r->n) return rfail(r, "unexpected end");
    char ch = r->p[r->i];
    if (ch == '{' || ch == '[') {
        if (++r->depth > r->c->max_vdepth)
            return jfail(r->c, PLUMB_E_RANGE, "variables: JSON nested deeper than %u levels", r->c->max_vdepth);
        int rv = ch == '{' ? read_object(r, out) : read_array(r, out);
        r->depth--;
        if (rv) {
            jv_release(r->c, *out);
            *out = jv_undef();
        }
        return rv;
    }
    if (ch == '"') {
        jstr *s;
        if (read_string(r, &s)) return -1;
        *out = jv_str(s);
        return 0;
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) return read_number(r, out);
    if (lit(r, "true"))
        *out = jv_bool(true);
    else if (lit(r, "false"))
        *out = jv_bool(false);
    else if (lit(r, "null"))
        *out = jv_none();
    else if (lit(r, "NaN"))
        *out = jv_float(NAN);
    else if (lit(r, "Infinity"))
        *out = jv_float(INFINITY);
    else
        return rfail(r, "unexpected character");
    return 0;
}

int jjson_parse(jctx *c, const char *p, size_t n, jval *out) {
    *out = jv_undef();
    size_t ok = utf8_valid_prefix((const unsigned char *)p, n);
    if (ok != n) return jfail(c, PLUMB_E_INVALID_ARG, "variables: JSON offset %zu: not UTF-8", ok);
    jr r = {.c = c, .p = p, .n = n};
    skip_ws(&r);
    if (read_value(&r, out)) return -1;
    skip_ws(&r);
    if (r.i != n) {
        jv_release(c, *out);
        *out = jv_undef();
        return rfail(&r, "extra data after the value");
    }
    return 0;
}

/* ---- writer ------------------------------------------------------------------------------ */

static int dump_fail(jctx *c, jval v) {
    return jfail(c, PLUMB_E_INVALID_ARG, "tojson: Object of type %s is not JSON serializable", jv_type_name(v));
}

static int dump_str(jsb *b, const char *p, size_t n, bool ascii_only) {
    if (jwork(b->c, n) || jsb_putc(b, '"')) return -1; /* the scan for escapes */
    size_t run = 0, i = 0;
    while (i < n) {
        unsigned char ch = (unsigned char)p[i];
        const char *esc = NULL;
        char t[16];
        size_t tl = 0, l = 1;
        switch (ch) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (ch < 0x20 || (ascii_only && ch == 0x7f)) {
                tl = (size_t)snprintf(t, sizeof t, "\\u%04x", ch);
            } else if (ascii_only && ch >= 0x80) {
                uint32_t cp;
                l = utf8_dec((const unsigned char *)p + i, n - i, &cp);
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    tl = (size_t)snprintf(t, sizeof t, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                } else {
                    tl = (size_t)snprintf(t, sizeof t, "\\u%04x", cp);
                }
            }
        }
        if (!esc && !tl) {
            i++;
            continue;
        }
        if (jsb_put(b, p + run, i - run, false)) return -1;
        if (esc ? jsb_puts(b, esc, false) : jsb_put(b, t, tl, false)) return -1;
        i += l;
        run = i;
    }
    if (jsb_put(b, p + run, n - run, false)) return -1;
    return jsb_putc(b, '"');
}

static int dump_float(jsb *b, double f) {
    if (isnan(f)) return jsb_puts(b, "NaN", false);
    if (isinf(f)) return jsb_puts(b, f < 0 ? "-Infinity" : "Infinity", false);
    char t[40];
    size_t n = jfloat_repr(f, t);
    return jsb_put(b, t, n, false);
}

static int newline_indent(jsb *b, const jjson_opts *o, uint32_t level) {
    if (jsb_putc(b, '\n')) return -1;
    for (uint32_t k = 0; k < level; k++)
        if (jsb_put(b, o->indent, o->indent_len, false)) return -1;
    return 0;
}

static int item_sep(jsb *b, const jjson_opts *o) {
    if (o->item_sep) return jsb_put(b, o->item_sep, o->item_sep_len, false);
    return o->has_indent ? jsb_putc(b, ',') : jsb_put(b, ", ", 2, false);
}

static int dump(jctx *c, jsb *b, jval v, const jjson_opts *o, uint32_t level);

/* A dict key as json.dumps writes it (str, or int/float/bool/None converted). */
static int dump_key(jctx *c, jsb *b, jval k, const jjson_opts *o) {
    char t[40];
    switch (k.t) {
    case JT_STR: return dump_str(b, k.u.s->data, k.u.s->len, o->ensure_ascii);
    case JT_INT: return dump_str(b, t, (size_t)snprintf(t, sizeof t, "%lld", (long long)k.u.i), false);
    case JT_BOOL: return dump_str(b, k.u.b ? "true" : "false", k.u.b ? 4 : 5, false);
    case JT_NONE: return dump_str(b, "null", 4, false);
    case JT_FLOAT: {
        jsb tb;
        jsb_init(&tb, c);
        int rv = dump_float(&tb, k.u.f) || dump_str(b, tb.buf ? tb.buf : "", tb.len, false);
        jsb_drop(&tb);
        return rv ? -1 : 0;
    }
    default:
        return jfail(c, PLUMB_E_INVALID_ARG, "tojson: keys must be str, int, float, bool or None, not %s",
                     jv_type_name(k));
    }
}

typedef struct key_order {
    jctx *c;
    const jdict *d;
} key_order;

static int key_lt(void *ctx, size_t a, size_t b, bool *out) {
    key_order *k = ctx;
    return jv_lt(k->c, k->d->k[a], k->d->k[b], out);
}

static int dump_dict(jctx *c, jsb *b, const jdict *d, const jjson_opts *o, uint32_t level) {
    if (d->n == 0) return jsb_put(b, "{}", 2, false);
    size_t *order = jalloc(c, d->n * sizeof *order);
    if (!order) return -1;
    for (size_t i = 0; i < d->n; i++) order[i] = i;
    key_order ko = {c, d};
    int rv = o->sort_keys ? jsort_idx(c, order, d->n, key_lt, &ko) : 0;
    if (!rv) rv = jsb_putc(b, '{');
    if (!rv && o->has_indent) rv = newline_indent(b, o, level + 1);
    for (size_t j = 0; j < d->n && !rv; j++) {
        size_t i = order[j];
        if (j) rv = item_sep(b, o) || (o->has_indent && newline_indent(b, o, level + 1));
        if (!rv) rv = dump_key(c, b, d->k[i], o);
        if (!rv) rv = o->key_sep ? jsb_put(b, o->key_sep, o->key_sep_len, false) : jsb_put(b, ": ", 2, false);
        if (!rv) rv = dump(c, b, d->v[i], o, level + 1);
    }
    if (!rv && o->has_indent) rv = newline_indent(b, o, level);
    if (!rv) rv = jsb_putc(b, '}');
    jfree(c, order);
    return rv ? -1 : 0;
}

static int dump(jctx *c, jsb *b, jval v, const jjson_opts *o, uint32_t level) {
    switch (v.t) {
    case JT_NONE: return jsb_put(b, "null", 4, false);
    case JT_BOOL: return v.u.b ? jsb_put(b, "true", 4, false) : jsb_put(b, "false", 5, false);
    case JT_INT: {
        char t[24];
        return jsb_put(b, t, (size_t)snprintf(t, sizeof t, "%lld", (long long)v.u.i), false);
    }
    case JT_FLOAT: return dump_float(b, v.u.f);
    case JT_STR: return dump_str(b, v.u.s->data, v.u.s->len, o->ensure_ascii);
    case JT_LIST:
    case JT_DICT: break;
    default: return dump_fail(c, v);
    }
    if (v.t == JT_LIST && v.u.l->kind != JL_LIST && v.u.l->kind != JL_TUPLE) return dump_fail(c, v);
    if (jdepth_in(c)) return -1;
    int rv;
    if (v.t == JT_DICT) {
        rv = dump_dict(c, b, v.u.d, o, level);
    } else {
        const jlist *l = v.u.l;
        if (l->n == 0) {
            rv = jsb_put(b, "[]", 2, false);
        } else {
            rv = jsb_putc(b, '[');
            if (!rv && o->has_indent) rv = newline_indent(b, o, level + 1);
            for (size_t i = 0; i < l->n && !rv; i++) {
                if (i) rv = item_sep(b, o) || (o->has_indent && newline_indent(b, o, level + 1));
                if (!rv) rv = dump(c, b, l->v[i], o, level + 1);
            }
            if (!rv && o->has_indent) rv = newline_indent(b, o, level);
            if (!rv) rv = jsb_putc(b, ']');
        }
    }
    jdepth_out(c);
    return rv ? -1 : 0;
}

int jjson_dump(jctx *c, jsb *b, jval v, const jjson_opts *o) { return dump(c, b, v, o, 0); }
