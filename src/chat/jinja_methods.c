/* jinja_methods.c — attribute and item access, methods and global functions of plumb's Jinja
 * engine, as jinja2's ImmutableSandboxedEnvironment provides them:
 *
 *   - a.b tries the attribute first (so message.items is dict.items, a method), then the item;
 *     a['b'] tries the item first, then the attribute. What is missing is undefined; on an
 *     undefined value both fail (jinja2's UndefinedError).
 *   - the str methods chat templates call (startswith, endswith, strip, split, replace, find,
 *     ...), dict.get/items/keys/values, list.count/index, loop.cycle. Methods that mutate
 *     (list.append, dict.update, ...) are undefined, as the immutable sandbox makes them;
 *     calling one fails.
 *   - the globals: range, namespace, dict (jinja2's), raise_exception and strftime_now
 *     (Hugging Face's).
 * Indexes and lengths of strings count code points, as Python's do. */
#include "chat/jinja.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

enum {
    JF_RANGE,
    JF_NAMESPACE,
    JF_DICT,
    JF_RAISE,
    JF_STRFTIME,
    JF_LIPSUM,
    JF_CYCLER,
    JF_JOINER,
    JF_N_GLOBALS,
};

static const char *const global_names[] = {"range",        "namespace", "dict",   "raise_exception",
                                           "strftime_now", "lipsum",    "cycler", "joiner"};

enum {
    M_BASE = 100,
    M_STARTSWITH = M_BASE,
    M_ENDSWITH,
    M_STRIP,
    M_LSTRIP,
    M_RSTRIP,
    M_SPLIT,
    M_RSPLIT,
    M_UPPER,
    M_LOWER,
    M_TITLE,
    M_CAPITALIZE,
    M_REPLACE,
    M_FIND,
    M_RFIND,
    M_INDEX,
    M_RINDEX,
    M_COUNT,
    M_JOIN,
    M_ISDIGIT,
    M_ISALPHA,
    M_ISALNUM,
    M_ISSPACE,
    M_ISUPPER,
    M_ISLOWER,
    M_REMOVEPREFIX,
    M_REMOVESUFFIX,
    M_SPLITLINES,
    M_DICT_GET,
    M_DICT_ITEMS,
    M_DICT_KEYS,
    M_DICT_VALUES,
    M_DICT_COPY,
    M_LIST_COUNT,
    M_LIST_INDEX,
    M_LOOP_CYCLE,
    M_UNSUPPORTED, /* + index into unsupported[] */
};

enum { R_STR = 1, R_DICT = 2, R_LIST = 4, R_LOOP = 8 };

static const struct {
    const char *name;
    int recv;
    int id;
} methods[] = {
    {"startswith", R_STR, M_STARTSWITH},
    {"endswith", R_STR, M_ENDSWITH},
    {"strip", R_STR, M_STRIP},
    {"lstrip", R_STR, M_LSTRIP},
    {"rstrip", R_STR, M_RSTRIP},
    {"split", R_STR, M_SPLIT},
    {"rsplit", R_STR, M_RSPLIT},
    {"upper", R_STR, M_UPPER},
    {"lower", R_STR, M_LOWER},
    {"title", R_STR, M_TITLE},
    {"capitalize", R_STR, M_CAPITALIZE},
    {"replace", R_STR, M_REPLACE},
    {"find", R_STR, M_FIND},
    {"rfind", R_STR, M_RFIND},
    {"index", R_STR, M_INDEX},
    {"rindex", R_STR, M_RINDEX},
    {"count", R_STR, M_COUNT},
    {"join", R_STR, M_JOIN},
    {"isdigit", R_STR, M_ISDIGIT},
    {"isalpha", R_STR, M_ISALPHA},
    {"isalnum", R_STR, M_ISALNUM},
    {"isspace", R_STR, M_ISSPACE},
    {"isupper", R_STR, M_ISUPPER},
    {"islower", R_STR, M_ISLOWER},
    {"removeprefix", R_STR, M_REMOVEPREFIX},
    {"removesuffix", R_STR, M_REMOVESUFFIX},
    {"splitlines", R_STR, M_SPLITLINES},
    {"get", R_DICT, M_DICT_GET},
    {"items", R_DICT, M_DICT_ITEMS},
    {"keys", R_DICT, M_DICT_KEYS},
    {"values", R_DICT, M_DICT_VALUES},
    {"copy", R_DICT | R_LIST, M_DICT_COPY},
    {"count", R_LIST, M_LIST_COUNT},
    {"index", R_LIST, M_LIST_INDEX},
    {"cycle", R_LOOP, M_LOOP_CYCLE},
};

/* Methods that exist in Python but plumb does not implement: calling one is unsupported. */
static const struct {
    const char *name;
    int recv;
} unsupported[] = {
    {"format", R_STR},     {"format_map", R_STR},   {"zfill", R_STR},       {"center", R_STR},    {"ljust", R_STR},
    {"rjust", R_STR},      {"partition", R_STR},    {"rpartition", R_STR},  {"casefold", R_STR},  {"swapcase", R_STR},
    {"expandtabs", R_STR}, {"encode", R_STR},       {"translate", R_STR},   {"maketrans", R_STR}, {"isnumeric", R_STR},
    {"isdecimal", R_STR},  {"isidentifier", R_STR}, {"isprintable", R_STR}, {"istitle", R_STR},   {"isascii", R_STR},
    {"fromkeys", R_DICT},  {"changed", R_LOOP},
};

/* What the immutable sandbox forbids (jinja2.sandbox._mutable_spec). */
static const struct {
    const char *name;
    int recv;
} mutating[] = {
    {"append", R_LIST},  {"clear", R_LIST | R_DICT}, {"pop", R_LIST | R_DICT}, {"reverse", R_LIST},
    {"insert", R_LIST},  {"sort", R_LIST},           {"extend", R_LIST},       {"remove", R_LIST},
    {"popitem", R_DICT}, {"setdefault", R_DICT},     {"update", R_DICT},
};

static bool name_is(const char *p, size_t n, const char *name) { return strlen(name) == n && memcmp(p, name, n) == 0; }

static int recv_of(jval v) {
    switch (v.t) {
    case JT_STR: return R_STR;
    case JT_DICT: return R_DICT;
    case JT_LIST: return R_LIST;
    case JT_LOOP: return R_LOOP;
    default: return 0;
    }
}

int jmethod_find(jval v, const char *name, size_t n) {
    int r = recv_of(v);
    if (!r) return -1;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if ((methods[i].recv & r) && name_is(name, n, methods[i].name)) return methods[i].id;
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if ((unsupported[i].recv & r) && name_is(name, n, unsupported[i].name)) return M_UNSUPPORTED + (int)i;
    return -1;
}

bool jmethod_unsafe(jval v, const char *name, size_t n) {
    int r = recv_of(v);
    for (size_t i = 0; i < sizeof mutating / sizeof mutating[0]; i++)
        if ((mutating[i].recv & r) && name_is(name, n, mutating[i].name)) return true;
    return false;
}

int jglobal_id(const char *name, size_t n) {
    for (int i = 0; i < JF_N_GLOBALS; i++)
        if (name_is(name, n, global_names[i])) return i;
    return -1;
}

static jval make_func(jctx *c, int id, jval self) {
    jfunc *f = jalloc(c, sizeof *f);
    if (!f) {
        jv_release(c, self);
        return jv_undef();
    }
    f->rc = 1;
    f->id = id;
    f->self = self;
    return (jval){.t = JT_FUNC, .u.fn = f};
}

jval jglobal_value(jctx *c, int id) { return make_func(c, id, jv_undef()); }

/* ---- attribute and item access ------------------------------------------------------------- */

static int undefined_access(jctx *c, const char *what) {
    return jfail(c, PLUMB_E_INVALID_ARG, "an undefined value has no %s", what);
}

/* loop.<name> */
static int loop_attr(jctx *c, jloop *lp, const char *name, size_t n, jval *out) {
    size_t len = lp->items ? lp->items->n : 0, i = lp->pos;
    *out = jv_undef();
    if (name_is(name, n, "index"))
        *out = jv_int((int64_t)i + 1);
    else if (name_is(name, n, "index0"))
        *out = jv_int((int64_t)i);
    else if (name_is(name, n, "revindex"))
        *out = jv_int((int64_t)(len - i));
    else if (name_is(name, n, "revindex0"))
        *out = jv_int((int64_t)(len - i) - 1);
    else if (name_is(name, n, "first"))
        *out = jv_bool(i == 0);
    else if (name_is(name, n, "last"))
        *out = jv_bool(i + 1 == len);
    else if (name_is(name, n, "length"))
        *out = jv_int((int64_t)len);
    else if (name_is(name, n, "depth"))
        *out = jv_int(1);
    else if (name_is(name, n, "depth0"))
        *out = jv_int(0);
    else if (name_is(name, n, "previtem")) {
        if (i > 0 && i - 1 < len) *out = jv_retain(lp->items->v[i - 1]);
    } else if (name_is(name, n, "nextitem")) {
        if (i + 1 < len) *out = jv_retain(lp->items->v[i + 1]);
    }
    (void)c;
    return 0;
}

int jget_attr(jrender *r, jval obj, const char *name, size_t n, bool item_fallback, jval *out) {
    jctx *c = r->c;
    *out = jv_undef();
    if (obj.t == JT_UNDEF) return undefined_access(c, "attributes");
    if (obj.t == JT_LOOP) {
        int id = jmethod_find(obj, name, n);
        if (id >= 0) {
            *out = make_func(c, id, jv_retain(obj));
            return out->t == JT_FUNC ? 0 : -1;
        }
        return loop_attr(c, obj.u.lp, name, n, out);
    }
    if (obj.t == JT_NS) {
        if (jwork(c, (uint64_t)obj.u.ns->attrs->n * 4)) return -1;
        long i = jdict_find_str(obj.u.ns->attrs, name, n);
        if (i >= 0) *out = jv_retain(obj.u.ns->attrs->v[i]);
        return 0;
    }
    if (n > 0 && name[0] == '_') { /* the sandbox hides private attributes */
        if (item_fallback && obj.t == JT_DICT) {
            long i = jdict_find_str(obj.u.d, name, n);
            if (i >= 0) *out = jv_retain(obj.u.d->v[i]);
        }
        return 0;
    }
    int id = jmethod_find(obj, name, n);
    if (id >= 0) {
        *out = make_func(c, id, jv_retain(obj));
        return out->t == JT_FUNC ? 0 : -1;
    }
    if (jmethod_unsafe(obj, name, n)) return 0;
    if (item_fallback && obj.t == JT_DICT) {
        if (jwork(c, (uint64_t)obj.u.d->n * 4)) return -1;
        long i = jdict_find_str(obj.u.d, name, n);
        if (i >= 0) *out = jv_retain(obj.u.d->v[i]);
    }
    return 0;
}

/* Python's index into a sequence of n (negative counts from the end); false when outside. */
static bool seq_index(jval key, size_t n, size_t *out) {
    int64_t i;
    if (key.t == JT_INT)
        i = key.u.i;
    else if (key.t == JT_BOOL)
        i = key.u.b;
    else
        return false;
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *out = (size_t)i;
    return true;
}

int jget_item(jrender *r, jval obj, jval key, jval *out) {
    jctx *c = r->c;
    *out = jv_undef();
    size_t i;
    switch (obj.t) {
    case JT_UNDEF: return undefined_access(c, "items");
    case JT_DICT: {
        bool found;
        if (jdict_find(c, obj.u.d, key, &i, &found)) return -1;
        if (found) {
            *out = jv_retain(obj.u.d->v[i]);
            return 0;
        }
        break;
    }
    case JT_LIST:
        if (obj.u.l->kind <= JL_RANGE && seq_index(key, obj.u.l->n, &i)) {
            *out = jv_retain(obj.u.l->v[i]);
            return 0;
        }
        break;
    case JT_STR: {
        const jstr *s = obj.u.s;
        if (!s->ascii && jwork(c, s->len)) return -1;
        if (seq_index(key, s->ascii ? s->len : jstr_ncp(s), &i)) {
            size_t a = jstr_cp_off(s, i), e = jstr_cp_off(s, i + 1);
            jsb b;
            jsb_init(&b, c);
            if (jsb_put_range(&b, s, a, e)) {
                jsb_drop(&b);
                return -1;
            }
            jstr *ch = jsb_finish(&b);
            if (!ch) return -1;
            *out = jv_str(ch);
            return 0;
        }
        break;
    }
    default: break;
    }
    if (key.t == JT_STR) return jget_attr(r, obj, key.u.s->data, key.u.s->len, false, out);
    return 0;
}

/* ---- argument helpers ------------------------------------------------------------------------ */

static int type_error(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int type_error(jctx *c, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return jfail(c, PLUMB_E_INVALID_ARG, "%s", msg);
}

static int want_str(jctx *c, const char *what, jval v, const jstr **out) {
    *out = NULL;
    if (v.t != JT_STR) return type_error(c, "%s: expected a str, got '%s'", what, jv_type_name(v));
    *out = v.u.s;
    return 0;
}

static int want_int(jctx *c, const char *what, jval v, int64_t *out) {
    *out = 0;
    if (v.t == JT_INT)
        *out = v.u.i;
    else if (v.t == JT_BOOL)
        *out = v.u.b;
    else
        return type_error(c, "%s: expected an int, got '%s'", what, jv_type_name(v));
    return 0;
}

/* A Python slice bound (None, or an int counting from the end when negative) clamped to
 * [0, n]. */
static int bound(jctx *c, const char *what, jval v, bool given, size_t n, size_t dflt, size_t *out) {
    if (!given || v.t == JT_NONE) {
        *out = dflt;
        return 0;
    }
    int64_t i;
    if (want_int(c, what, v, &i)) return -1;
    if (i < 0) i += (int64_t)n;
    if (i < 0) i = 0;
    if ((uint64_t)i > n) i = (int64_t)n;
    *out = (size_t)i;
    return 0;
}

/* Code point index of byte offset off in s. */
static int64_t cp_index(const jstr *s, size_t off) {
    if (s->ascii) return (int64_t)off;
    int64_t k = 0;
    for (size_t i = 0; i < off; i++)
        if (((unsigned char)s->data[i] & 0xC0) != 0x80) k++;
    return k;
}

static jval mkstr(jstr *s) { return s ? jv_str(s) : jv_undef(); }

/* ---- str methods ---------------------------------------------------------------------------- */

static int str_affix(jctx *c, const jstr *s, const jargs *a, bool end, jval *out) {
    static const char *const names[] = {"prefix", "start", "end"};
    jval v[3];
    bool g[3];
    const char *what = end ? "endswith" : "startswith";
    if (jargs_bind(c, what, a, names, 3, v, g)) return -1;
    if (!s->ascii && jwork(c, s->len)) return -1;
    if (!g[0]) return jfail(c, PLUMB_E_INVALID_ARG, "%s() takes at least 1 argument (0 given)", what);
    size_t ncp = jstr_ncp(s), sa, se;
    int64_t raw_start = 0;
    if (g[1] && v[1].t != JT_NONE && want_int(c, what, v[1], &raw_start)) return -1;
    if (bound(c, what, v[1], g[1], ncp, 0, &sa) || bound(c, what, v[2], g[2], ncp, ncp, &se)) return -1;
    size_t ba = jstr_cp_off(s, sa), be = jstr_cp_off(s, se);
    /* a start past the end matches nothing, even "" */
    bool past = raw_start > (int64_t)ncp;
    const jval *cands = &v[0];
    size_t n_cands = 1;
    if (v[0].t == JT_LIST && v[0].u.l->kind == JL_TUPLE) {
        cands = v[0].u.l->v;
        n_cands = v[0].u.l->n;
    }
    bool hit = false;
    for (size_t i = 0; i < n_cands && !hit && !past; i++) {
        if (cands[i].t != JT_STR)
            return type_error(c, "%s first arg must be str or a tuple of str, not %s", what, jv_type_name(cands[i]));
        const jstr *x = cands[i].u.s;
        if (be < ba || be - ba < x->len) continue;
        hit = memcmp(s->data + (end ? be - x->len : ba), x->data, x->len) == 0;
    }
    *out = jv_bool(hit);
    return 0;
}

static int str_strip(jctx *c, const jstr *s, const jargs *a, bool l, bool rt, jval *out) {
    static const char *const names[] = {"chars"};
    jval v[1];
    bool g[1];
    if (jargs_bind(c, "strip", a, names, 1, v, g)) return -1;
    const jstr *chars = NULL;
    if (g[0] && v[0].t != JT_NONE && want_str(c, "strip", v[0], &chars)) return -1;
    jstr *r;
    if (jtext_strip(c, s, chars, l, rt, &r)) return -1;
    *out = jv_str(r);
    return 0;
}

static int str_split(jctx *c, const jstr *s, const jargs *a, bool right, jval *out) {
    static const char *const names[] = {"sep", "maxsplit"};
    jval v[2];
    bool g[2];
    if (jargs_bind(c, "split", a, names, 2, v, g)) return -1;
    const jstr *sep = NULL;
    int64_t maxsplit = -1;
    if (g[0] && v[0].t != JT_NONE && want_str(c, "split", v[0], &sep)) return -1;
    if (g[1] && want_int(c, "split", v[1], &maxsplit)) return -1;
    jlist *l;
    if (jtext_split(c, s, sep, maxsplit, right, &l)) return -1;
    *out = jv_list(l);
    return 0;
}

static int str_find(jctx *c, const jstr *s, const jargs *a, int id, jval *out) {
    static const char *const names[] = {"sub", "start", "end"};
    jval v[3];
    bool g[3];
    const char *what = id == M_FIND     ? "find"
                       : id == M_RFIND  ? "rfind"
                       : id == M_INDEX  ? "index"
                       : id == M_RINDEX ? "rindex"
                                        : "count";
    if (jargs_bind(c, what, a, names, 3, v, g)) return -1;
    const jstr *sub = NULL;
    if (!g[0]) return jfail(c, PLUMB_E_INVALID_ARG, "%s() takes at least 1 argument (0 given)", what);
    if (want_str(c, what, v[0], &sub)) return -1;
    size_t ncp = jstr_ncp(s), sa, se;
    int64_t raw_start = 0;
    if (g[1] && v[1].t != JT_NONE && want_int(c, what, v[1], &raw_start)) return -1;
    if (bound(c, what, v[1], g[1], ncp, 0, &sa) || bound(c, what, v[2], g[2], ncp, ncp, &se)) return -1;
    size_t ba = jstr_cp_off(s, sa), be = jstr_cp_off(s, se);
    if (jwork(c, s->len)) return -1;
    if (id == M_COUNT) {
        if (raw_start > (int64_t)ncp || se < sa) {
            *out = jv_int(0);
            return 0;
        }
        if (sub->len == 0) {
            *out = jv_int((int64_t)(se - sa) + 1);
            return 0;
        }
        int64_t k = 0;
        for (size_t i = ba;;) {
            long pos = jtext_find(s, i, be, sub, false);
            if (pos < 0) break;
            k++;
            i = (size_t)pos + sub->len;
        }
        *out = jv_int(k);
        return 0;
    }
    long pos = raw_start > (int64_t)ncp || se < sa ? -1 : jtext_find(s, ba, be, sub, id == M_RFIND || id == M_RINDEX);
    if (pos < 0 && (id == M_INDEX || id == M_RINDEX)) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "substring not found");
    *out = jv_int(pos < 0 ? -1 : cp_index(s, (size_t)pos));
    return 0;
}

static int str_join(jctx *c, const jstr *s, const jargs *a, jval *out) {
    static const char *const names[] = {"iterable"};
    jval v[1];
    bool g[1];
    if (jargs_bind(c, "join", a, names, 1, v, g)) return -1;
    if (!g[0]) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "join() takes exactly one argument (0 given)");
    jlist *items;
    if (jv_iterate(c, v[0], &items)) return -1;
    jsb b;
    jsb_init(&b, c);
    int rv = jiter_count(c, items->n);
    for (size_t i = 0; i < items->n && !rv; i++) {
        if (items->v[i].t != JT_STR) {
            char idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            rv = type_error(c, "sequence item %s: expected str instance, %s found", idx, jv_type_name(items->v[i]));
            break;
        }
        rv = (i && jsb_put_str(&b, s)) || jsb_put_str(&b, items->v[i].u.s);
    }
    jv_release(c, jv_list(items));
    if (rv) {
        jsb_drop(&b);
        return -1;
    }
    *out = mkstr(jsb_finish(&b));
    return out->t == JT_STR ? 0 : -1;
}

static int str_is(const jstr *s, int id) {
    if (id == M_ISUPPER) return jtext_isupper(s);
    if (id == M_ISLOWER) return jtext_islower(s);
    if (s->len == 0) return false;
    size_t i = 0;
    while (i < s->len) {
        uint32_t cp;
        i += utf8_dec((const unsigned char *)s->data + i, s->len - i, &cp);
        bool digit = cp >= '0' && cp <= '9', space = u_isspace(cp);
        bool alpha = !digit && cp != '_' && u_isword(cp);
        bool ok = id == M_ISDIGIT ? digit : id == M_ISALPHA ? alpha : id == M_ISALNUM ? alpha || digit : space;
        if (!ok) return false;
    }
    return true;
}

static int str_affix_remove(jctx *c, const jstr *s, const jargs *a, bool suffix, jval *out) {
    static const char *const names[] = {"affix"};
    jval v[1];
    bool g[1];
    const jstr *x = NULL;
    if (jargs_bind(c, suffix ? "removesuffix" : "removeprefix", a, names, 1, v, g)) return -1;
    if (!g[0] || want_str(c, suffix ? "removesuffix" : "removeprefix", v[0], &x))
        return g[0] ? -1 : jfail(c, PLUMB_E_INVALID_ARG, "%s", "missing argument");
    size_t a0 = 0, e = s->len;
    if (x->len && x->len <= s->len) {
        if (!suffix && memcmp(s->data, x->data, x->len) == 0) a0 = x->len;
        if (suffix && memcmp(s->data + s->len - x->len, x->data, x->len) == 0) e = s->len - x->len;
    }
    jsb b;
    jsb_init(&b, c);
    if (jsb_put_range(&b, s, a0, e)) {
        jsb_drop(&b);
        return -1;
    }
    *out = mkstr(jsb_finish(&b));
    return out->t == JT_STR ? 0 : -1;
}

static int str_splitlines(jctx *c, const jstr *s, const jargs *a, jval *out) {
    static const char *const names[] = {"keepends"};
    jval v[1];
    bool g[1];
    if (jargs_bind(c, "splitlines", a, names, 1, v, g)) return -1;
    bool keep = g[0] && jv_truthy(v[0]);
    size_t n = 0, i = 0;
    /* count, then fill */
    for (int pass = 0; pass < 2; pass++) {
        jlist *l = NULL;
        if (pass) {
            l = jlist_new(c, n, JL_LIST);
            if (!l) return -1;
        }
        size_t k = 0;
        i = 0;
        while (i < s->len) {
            size_t e = i;
            size_t br = 0;
            while (e < s->len && !(br = jtext_linebreak_at(s->data + e, s->len - e))) e++;
            if (pass) {
                jsb b;
                jsb_init(&b, c);
                jstr *line = jsb_put_range(&b, s, i, keep ? e + br : e) ? (jsb_drop(&b), NULL) : jsb_finish(&b);
                if (!line) {
                    jv_release(c, jv_list(l));
                    return -1;
                }
                l->v[k] = jv_str(line);
            }
            k++;
            i = e + br;
        }
        if (pass) {
            *out = jv_list(l);
            return 0;
        }
        n = k;
    }
    return 0;
}

static int str_method(jrender *r, int id, const jstr *s, const jargs *a, jval *out) {
    jctx *c = r->c;
    jstr *res = NULL;
    switch (id) {
    case M_STARTSWITH: return str_affix(c, s, a, false, out);
    case M_ENDSWITH: return str_affix(c, s, a, true, out);
    case M_STRIP: return str_strip(c, s, a, true, true, out);
    case M_LSTRIP: return str_strip(c, s, a, true, false, out);
    case M_RSTRIP: return str_strip(c, s, a, false, true, out);
    case M_SPLIT: return str_split(c, s, a, false, out);
    case M_RSPLIT: return str_split(c, s, a, true, out);
    case M_FIND:
    case M_RFIND:
    case M_INDEX:
    case M_RINDEX:
    case M_COUNT: return str_find(c, s, a, id, out);
    case M_JOIN: return str_join(c, s, a, out);
    case M_REMOVEPREFIX: return str_affix_remove(c, s, a, false, out);
    case M_REMOVESUFFIX: return str_affix_remove(c, s, a, true, out);
    case M_SPLITLINES: return str_splitlines(c, s, a, out);
    case M_ISDIGIT:
    case M_ISALPHA:
    case M_ISALNUM:
    case M_ISSPACE:
    case M_ISUPPER:
    case M_ISLOWER:
        if (a->n_pos || a->n_kw) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "the is...() methods take no arguments");
        *out = jv_bool(str_is(s, id));
        return 0;
    case M_REPLACE: {
        static const char *const names[] = {"old", "new", "count"};
        jval v[3];
        bool g[3];
        const jstr *o = NULL, *n = NULL;
        int64_t count = -1;
        if (jargs_bind(c, "replace", a, names, 3, v, g)) return -1;
        if (!g[0] || !g[1]) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "replace() takes at least 2 arguments");
        if (want_str(c, "replace", v[0], &o) || want_str(c, "replace", v[1], &n)) return -1;
        if (g[2] && want_int(c, "replace", v[2], &count)) return -1;
        if (jtext_replace(c, s, o, n, count, &res)) return -1;
        break;
    }
    default: {
        if (a->n_pos || a->n_kw) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "this method takes no arguments");
        int rv = id == M_UPPER   ? jtext_upper(c, s, &res)
                 : id == M_LOWER ? jtext_lower(c, s, &res)
                 : id == M_TITLE ? jtext_title_method(c, s, &res)
                                 : jtext_capitalize(c, s, &res);
        if (rv) return -1;
        res->markup = false; /* a str method gives a str */
        break;
    }
    }
    *out = jv_str(res);
    return 0;
}

/* ---- dict, list and loop methods ------------------------------------------------------------ */

static int dict_view(jctx *c, const jdict *d, int id, jval *out) {
    jlist *l = jlist_new(c, d->n, id == M_DICT_ITEMS ? JL_ITEMS : id == M_DICT_KEYS ? JL_KEYS : JL_VALUES);
    if (!l) return -1;
    for (size_t i = 0; i < d->n; i++) {
        if (id == M_DICT_ITEMS) {
            if (jv_pair(c, d->k[i], d->v[i], &l->v[i])) {
                jv_release(c, jv_list(l));
                return -1;
            }
        } else {
            l->v[i] = jv_retain(id == M_DICT_KEYS ? d->k[i] : d->v[i]);
        }
    }
    *out = jv_list(l);
    return jlist_seal(c, l);
}

static int other_method(jrender *r, jfunc *f, const jargs *a, jval *out) {
    jctx *c = r->c;
    jval self = f->self;
    switch (f->id) {
    case M_DICT_GET: {
        if (a->n_kw || a->n_pos < 1 || a->n_pos > 2)
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "get() takes a key and an optional default");
        size_t i;
        bool found;
        if (jdict_find(c, self.u.d, a->pos[0], &i, &found)) return -1;
        *out = found ? jv_retain(self.u.d->v[i]) : a->n_pos == 2 ? jv_retain(a->pos[1]) : jv_none();
        return 0;
    }
    case M_DICT_ITEMS:
    case M_DICT_KEYS:
    case M_DICT_VALUES:
        if (a->n_pos || a->n_kw) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "this method takes no arguments");
        return dict_view(c, self.u.d, f->id, out);
    case M_DICT_COPY: *out = jv_retain(self); return 0; /* values are immutable: a copy is the same */
    case M_LIST_COUNT:
    case M_LIST_INDEX: {
        if (a->n_kw || a->n_pos != 1) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "this method takes one argument");
        int64_t k = 0, first = -1;
        const jlist *l = self.u.l;
        if (jwork(c, (uint64_t)l->n * JW_CMP)) return -1;
        for (size_t i = 0; i < l->n; i++) {
            bool eq;
            if (jv_eq(c, l->v[i], a->pos[0], &eq)) return -1;
            if (eq) {
                if (first < 0) first = (int64_t)i;
                k++;
            }
        }
        if (f->id == M_LIST_INDEX && first < 0)
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "list.index(x): x not in list");
        *out = jv_int(f->id == M_LIST_COUNT ? k : first);
        return 0;
    }
    case M_LOOP_CYCLE: {
        if (a->n_pos == 0) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "no items for cycling given");
        *out = jv_retain(a->pos[self.u.lp->pos % a->n_pos]);
        return 0;
    }
    default: break;
    }
    return jfail(c, PLUMB_E_UNSUPPORTED, "%s", "unsupported method");
}

/* ---- globals ------------------------------------------------------------------------------- */

static int g_range(jrender *r, const jargs *a, jval *out) {
    jctx *c = r->c;
    int64_t v[3] = {0, 0, 1};
    if (a->n_kw || a->n_pos < 1 || a->n_pos > 3)
        return jfail(c, PLUMB_E_INVALID_ARG, "%s", "range expected 1 to 3 integer arguments");
    for (size_t i = 0; i < a->n_pos; i++)
        if (want_int(c, "range", a->pos[i], &v[a->n_pos == 1 ? 1 : i])) return -1;
    if (v[2] == 0) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "range() arg 3 must not be zero");
    /* the length, in 128 bits so that no bound overflows */
    __int128 span = v[2] > 0 ? (__int128)v[1] - v[0] : (__int128)v[0] - v[1];
    __int128 step = v[2] > 0 ? v[2] : -(__int128)v[2];
    __int128 n = span <= 0 ? 0 : (span + step - 1) / step;
    if (n > (__int128)(c->lim.max_memory / sizeof(jval)))
        return jfail(c, PLUMB_E_RANGE, "range of %lld items does not fit max_memory",
                     (long long)(n > INT64_MAX ? INT64_MAX : n));
    jlist *l = jlist_new(c, (size_t)n, JL_RANGE);
    if (!l) return -1;
    for (size_t i = 0; i < (size_t)n; i++) l->v[i] = jv_int((int64_t)(v[0] + (__int128)i * v[2]));
    l->r_start = v[0];
    l->r_stop = v[1];
    l->r_step = v[2];
    *out = jv_list(l);
    return 0;
}

/* dict(*args, **kwargs): a mapping or an iterable of pairs, then the keywords. */
static int build_dict(jrender *r, const char *what, const jargs *a, jdict **out) {
    jctx *c = r->c;
    if (a->n_pos > 1) return jfail(c, PLUMB_E_INVALID_ARG, "%s expected at most 1 positional argument", what);
    jdict *d = jdict_new(c);
    if (!d) return -1;
    if (a->n_pos == 1) {
        jval src = a->pos[0];
        if (src.t == JT_DICT) {
            for (size_t i = 0; i < src.u.d->n; i++)
                if (jdict_set(c, d, jv_retain(src.u.d->k[i]), jv_retain(src.u.d->v[i]))) goto fail;
        } else {
            jlist *items;
            if (jv_iterate(c, src, &items)) goto fail;
            for (size_t i = 0; i < items->n; i++) {
                jval it = items->v[i];
                if (it.t != JT_LIST || it.u.l->n != 2 || it.u.l->kind > JL_TUPLE) {
                    jv_release(c, jv_list(items));
                    jfail(c, PLUMB_E_INVALID_ARG, "%s: sequence elements must be pairs", what);
                    goto fail;
                }
                if (jdict_set(c, d, jv_retain(it.u.l->v[0]), jv_retain(it.u.l->v[1]))) {
                    jv_release(c, jv_list(items));
                    goto fail;
                }
            }
            jv_release(c, jv_list(items));
        }
    }
    for (size_t i = 0; i < a->n_kw; i++) {
        jstr *k = jstr_new(c, a->kw_names[i].p, a->kw_names[i].n, false);
        if (!k || jdict_set(c, d, jv_str(k), jv_retain(a->kw[i]))) goto fail;
    }
    *out = d;
    return 0;
fail:
    jv_release(c, jv_dict(d));
    return -1;
}

static int g_strftime(jrender *r, const jargs *a, jval *out) {
    jctx *c = r->c;
    if (a->n_kw || a->n_pos != 1 || a->pos[0].t != JT_STR)
        return jfail(c, PLUMB_E_INVALID_ARG, "%s", "strftime_now() takes one format string");
    const jstr *fmt = a->pos[0].u.s;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    time_t now = tv.tv_sec;
    struct tm tm;
    localtime_r(&now, &tm);
    /* Python handles %f (microseconds) itself; the C library does not */
    jsb f;
    jsb_init(&f, c);
    int rv = 0;
    for (size_t i = 0; i < fmt->len && !rv; i++) {
        if (fmt->data[i] == '%' && i + 1 < fmt->len && fmt->data[i + 1] == 'f') {
            char us[8];
            snprintf(us, sizeof us, "%06ld", (long)tv.tv_usec);
            rv = jsb_puts(&f, us, false);
            i++;
        } else if (fmt->data[i] == '%' && i + 1 < fmt->len) {
            rv = jsb_put(&f, fmt->data + i, 2, false);
            i++;
        } else {
            rv = jsb_putc(&f, fmt->data[i]);
        }
    }
    if (rv || jsb_putc(&f, '\0')) {
        jsb_drop(&f);
        return -1;
    }
    size_t cap = 256 + 8 * fmt->len;
    if (cap > c->lim.max_output + 1) cap = c->lim.max_output + 1;
    char *buf = jalloc(c, cap);
    if (!buf) {
        jsb_drop(&f);
        return -1;
    }
    size_t n = f.len > 1 ? jstrftime_c(buf, cap, f.buf, &tm) : 0;
    jsb_drop(&f);
    jstr *s = jstr_new(c, buf, n, false);
    jfree(c, buf);
    if (!s) return -1;
    if (utf8_valid_prefix((const unsigned char *)s->data, s->len) != s->len) {
        jv_release(c, jv_str(s));
        return jfail(c, PLUMB_E_INVALID_ARG, "%s", "strftime_now() gave text that is not UTF-8");
    }
    *out = jv_str(s);
    return 0;
}

int jfunc_call(jrender *r, jfunc *f, const jargs *a, jval *out) {
    jctx *c = r->c;
    *out = jv_undef();
    if (f->id >= M_UNSUPPORTED) {
        size_t k = (size_t)(f->id - M_UNSUPPORTED);
        const char *name = k < sizeof unsupported / sizeof unsupported[0] ? unsupported[k].name : "?";
        return jfail(c, PLUMB_E_UNSUPPORTED, "the %s method '%s' is not supported", jv_type_name(f->self), name);
    }
    if (f->id >= M_BASE) {
        if (f->self.t == JT_STR) return str_method(r, f->id, f->self.u.s, a, out);
        return other_method(r, f, a, out);
    }
    switch (f->id) {
    case JF_RANGE: return g_range(r, a, out);
    case JF_DICT: {
        jdict *d;
        if (build_dict(r, "dict", a, &d)) return -1;
        *out = jv_dict(d);
        return 0;
    }
    case JF_NAMESPACE: {
        jdict *d;
        if (build_dict(r, "namespace", a, &d)) return -1;
        jns *ns = jalloc(c, sizeof *ns);
        if (!ns) {
            jv_release(c, jv_dict(d));
            return -1;
        }
        ns->rc = 1;
        ns->attrs = d;
        if (jrender_add_ns(r, ns)) {
            jv_release(c, (jval){.t = JT_NS, .u.ns = ns});
            return -1;
        }
        *out = (jval){.t = JT_NS, .u.ns = ns};
        return 0;
    }
    case JF_RAISE: {
        jstr *msg = NULL;
        if (a->n_pos >= 1 && jv_to_str(c, a->pos[0], &msg)) return -1;
        jfail(c, PLUMB_E_INVALID_ARG, "raise_exception: %s", msg ? msg->data : "");
        if (msg) jv_release(c, jv_str(msg));
        return -1;
    }
    case JF_STRFTIME: return g_strftime(r, a, out);
    default: return jfail(c, PLUMB_E_UNSUPPORTED, "the global '%s' is not supported", global_names[f->id]);
    }
}
