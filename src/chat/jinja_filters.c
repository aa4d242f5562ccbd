/* jinja_filters.c — the filters and tests of plumb's Jinja engine, each as jinja2 3.1 defines
 * it (tojson as Hugging Face overrides it), argument binding included: keywords, defaults and
 * the errors Python gives for a wrong call.
 *
 * Python's types show through where templates can see them: selectattr, rejectattr, select,
 * reject, map, unique and items give one-shot iterators (so `| length` on one fails, as in
 * jinja2, and templates write `| list | length`); reverse gives an iterator except for strings;
 * first and last on an empty sequence give undefined.
 *
 * Filters take their subject and arguments borrowed and give an owned result. Strings keep
 * their marks: a filter that copies or case-maps text passes its provenance on; text a filter
 * makes up (numbers, JSON, repr) is unmarked. */
#include "chat/jinja.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*filter_fn)(jrender *r, jval v, const jargs *a, jval *out);
typedef int (*test_fn)(jrender *r, jval v, const jargs *a, bool *out);

/* ---- arguments ------------------------------------------------------------------------------ */

int jargs_bind(jctx *c, const char *what, const jargs *a, const char *const *names, size_t n, jval *out, bool *given) {
    for (size_t i = 0; i < n; i++) {
        out[i] = jv_undef();
        given[i] = false;
    }
    if (a->n_pos > n)
        return jfail(c, PLUMB_E_INVALID_ARG, "%s() takes at most %zu argument(s) (%zu given)", what, n, a->n_pos);
    for (size_t i = 0; i < a->n_pos; i++) {
        out[i] = a->pos[i];
        given[i] = true;
    }
    for (size_t k = 0; k < a->n_kw; k++) {
        size_t i = 0;
        for (; i < n; i++)
            if (strlen(names[i]) == a->kw_names[k].n && memcmp(names[i], a->kw_names[k].p, a->kw_names[k].n) == 0)
                break;
        if (i == n)
            return jfail(c, PLUMB_E_INVALID_ARG, "%s() got an unexpected keyword argument '%.*s'", what,
                         (int)(a->kw_names[k].n < 48 ? a->kw_names[k].n : 48), a->kw_names[k].p);
        if (given[i])
            return jfail(c, PLUMB_E_INVALID_ARG, "%s() got multiple values for argument '%s'", what, names[i]);
        out[i] = a->kw[k];
        given[i] = true;
    }
    return 0;
}

static int need_str(jctx *c, const char *what, jval v, const jstr **out) {
    *out = NULL;
    if (v.t != JT_STR) return jfail(c, PLUMB_E_INVALID_ARG, "%s: expected a string, got '%s'", what, jv_type_name(v));
    *out = v.u.s;
    return 0;
}

static int need_int(jctx *c, const char *what, jval v, int64_t *out) {
    *out = 0;
    if (v.t == JT_INT)
        *out = v.u.i;
    else if (v.t == JT_BOOL)
        *out = v.u.b;
    else
        return jfail(c, PLUMB_E_INVALID_ARG, "%s: expected an integer, got '%s'", what, jv_type_name(v));
    return 0;
}

/* str(v), keeping a string as it is (jinja2's soft_str). */
static int soft_str(jctx *c, jval v, jstr **out) { return jv_to_str(c, v, out); }

static int give_str(jstr *s, jval *out) {
    if (!s) return -1;
    *out = jv_str(s);
    return 0;
}

static int make_iter(jctx *c, jlist *items, jval *out) {
    jiter *it = jalloc(c, sizeof *it);
    if (!it) {
        jv_release(c, jv_list(items));
        return -1;
    }
    it->rc = 1;
    it->items = items;
    it->pos = 0;
    *out = (jval){.t = JT_ITER, .u.it = it};
    return 0;
}

/* jinja2's make_attrgetter: "a.b.0" looked up part by part with environment.getitem
 * (digits become integer indexes); an integer attribute is one index. */
static int attr_get(jrender *r, jval item, jval attr, jval *out) {
    jctx *c = r->c;
    if (attr.t == JT_NONE || attr.t == JT_UNDEF) {
        *out = jv_retain(item);
        return 0;
    }
    if (attr.t != JT_STR) return jget_item(r, item, attr, out);
    const jstr *path = attr.u.s;
    jval cur = jv_retain(item);
    size_t i = 0;
    do {
        size_t e = i;
        while (e < path->len && path->data[e] != '.') e++;
        bool digits = e > i;
        int64_t idx = 0;
        for (size_t k = i; k < e && digits; k++) {
            if (path->data[k] < '0' || path->data[k] > '9' || idx > (INT64_MAX - 9) / 10)
                digits = false;
            else
                idx = idx * 10 + (path->data[k] - '0');
        }
        jval key;
        if (digits) {
            key = jv_int(idx);
        } else {
            jstr *ks = jstr_new(c, path->data + i, e - i, false);
            if (!ks) {
                jv_release(c, cur);
                return -1;
            }
            key = jv_str(ks);
        }
        jval next;
        int rv = jget_item(r, cur, key, &next);
        jv_release(c, key);
        jv_release(c, cur);
        if (rv) return -1;
        cur = next;
        i = e + 1;
    } while (i <= path->len);
    *out = cur;
    return 0;
}

/* ---- filters --------------------------------------------------------------------------------- */

static int f_abs(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    if (v.t == JT_INT || v.t == JT_BOOL) {
        int64_t i = v.t == JT_INT ? v.u.i : v.u.b;
        if (i == INT64_MIN) return jfail(r->c, PLUMB_E_RANGE, "%s", "abs: integer past 64 bits");
        *out = jv_int(i < 0 ? -i : i);
    } else if (v.t == JT_FLOAT) {
        *out = jv_float(fabs(v.u.f));
    } else {
        return jfail(r->c, PLUMB_E_INVALID_ARG, "bad operand type for abs(): '%s'", jv_type_name(v));
    }
    return 0;
}

static int f_attr(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"name"};
    jval p[1];
    bool g[1];
    const jstr *name = NULL;
    if (jargs_bind(r->c, "attr", a, names, 1, p, g)) return -1;
    if (!g[0] || need_str(r->c, "attr", p[0], &name))
        return g[0] ? -1 : jfail(r->c, PLUMB_E_INVALID_ARG, "%s", "attr() needs a name");
    return jget_attr(r, v, name->data, name->len, false, out); /* on undefined: jinja2's UndefinedError */
}

typedef int (*text_fn)(jctx *c, const jstr *s, jstr **out);

static int text_filter(jrender *r, jval v, const jargs *a, const char *what, text_fn fn, jval *out) {
    if (a->n_pos || a->n_kw) return jfail(r->c, PLUMB_E_INVALID_ARG, "%s() takes no arguments", what);
    jstr *s, *res;
    if (soft_str(r->c, v, &s)) return -1;
    int rv = fn(r->c, s, &res);
    jv_release(r->c, jv_str(s));
    return rv ? -1 : give_str(res, out);
}

static int f_upper(jrender *r, jval v, const jargs *a, jval *out) {
    return text_filter(r, v, a, "upper", jtext_upper, out);
}
static int f_lower(jrender *r, jval v, const jargs *a, jval *out) {
    return text_filter(r, v, a, "lower", jtext_lower, out);
}
static int f_capitalize(jrender *r, jval v, const jargs *a, jval *out) {
    return text_filter(r, v, a, "capitalize", jtext_capitalize, out);
}
static int f_title(jrender *r, jval v, const jargs *a, jval *out) {
    return text_filter(r, v, a, "title", jtext_title_filter, out);
}

static int f_length(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    int64_t n;
    if (jv_len(r->c, v, &n)) return -1;
    *out = jv_int(n);
    return 0;
}

static int f_default(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"default_value", "boolean"};
    jval p[2];
    bool g[2];
    if (jargs_bind(r->c, "default", a, names, 2, p, g)) return -1;
    bool use = v.t == JT_UNDEF || (g[1] && jv_truthy(p[1]) && !jv_truthy(v));
    if (!use)
        *out = jv_retain(v);
    else if (g[0])
        *out = jv_retain(p[0]);
    else
        return give_str(jstr_new(r->c, "", 0, false), out);
    return 0;
}

/* Keys for sorting and comparing: the attribute(s), lowered unless case-sensitive. */
static int sort_key(jrender *r, jval item, jval attr, bool ignore_case, jval *out) {
    jctx *c = r->c;
    if (attr.t == JT_STR && memchr(attr.u.s->data, ',', attr.u.s->len)) { /* "a,b": a list of keys */
        jlist *parts;
        jstr *sep = jstr_new(c, ",", 1, false);
        if (!sep) return -1;
        int rv = jtext_split(c, attr.u.s, sep, -1, false, &parts);
        jv_release(c, jv_str(sep));
        if (rv) return -1;
        jlist *k = jlist_new(c, parts->n, JL_LIST);
        for (size_t i = 0; k && i < parts->n; i++) {
            jval x, y;
            if (attr_get(r, item, parts->v[i], &x)) {
                jv_release(c, jv_list(k));
                k = NULL;
                break;
            }
            rv = ignore_case ? jv_ignore_case(c, x, &y) : (y = jv_retain(x), 0);
            jv_release(c, x);
            if (rv) {
                jv_release(c, jv_list(k));
                k = NULL;
                break;
            }
            k->v[i] = y;
        }
        jv_release(c, jv_list(parts));
        if (!k) return -1;
        *out = jv_list(k);
        return jlist_seal(c, k);
    }
    jval x;
    if (attr_get(r, item, attr, &x)) return -1;
    if (!ignore_case) {
        *out = x;
        return 0;
    }
    int rv = jv_ignore_case(c, x, out);
    jv_release(c, x);
    return rv;
}

typedef struct sorter {
    jctx *c;
    jval *keys;
    bool reverse;
    bool as_lists; /* jinja2's sort compares [key] lists: equal keys are never ordered */
} sorter;

static int sorter_lt(void *ctx, size_t a, size_t b, bool *out) {
    sorter *s = ctx;
    jval x = s->reverse ? s->keys[b] : s->keys[a], y = s->reverse ? s->keys[a] : s->keys[b];
    if (s->as_lists) {
        bool eq;
        if (jv_eq(s->c, x, y, &eq)) return -1;
        if (eq) {
            *out = false;
            return 0;
        }
    }
    return jv_lt(s->c, x, y, out);
}

/* items sorted by keys (both n long); the result is a new list; keys are released. */
static int sort_by(jrender *r, jlist *items, jval *keys, bool reverse, bool as_lists, jval *out) {
    jctx *c = r->c;
    size_t n = items->n;
    size_t *idx = jalloc(c, (n ? n : 1) * sizeof *idx);
    int rv = idx ? 0 : -1;
    for (size_t i = 0; i < n && !rv; i++) idx[i] = i;
    sorter s = {c, keys, reverse, as_lists};
    if (!rv) rv = jsort_idx(c, idx, n, sorter_lt, &s);
    jlist *l = rv ? NULL : jlist_new(c, n, JL_LIST);
    if (l) {
        for (size_t i = 0; i < n; i++) l->v[i] = jv_retain(items->v[idx[i]]);
        *out = jv_list(l);
        rv = jlist_seal(c, l);
    } else {
        rv = -1;
    }
    jfree(c, idx);
    for (size_t i = 0; i < n; i++) jv_release(c, keys[i]);
    jfree(c, keys);
    return rv;
}

/* The end of the sort filters: after a failure (rv) the nk keys made so far and the items are
 * dropped; otherwise the items are sorted by the keys (sort_by, which takes the keys). The
 * items list is released either way. */
static int sort_finish(jrender *r, jlist *items, jval *keys, size_t nk, int rv, bool reverse, bool as_lists, jval *out) {
    jctx *c = r->c;
    if (rv) {
        for (size_t i = 0; i < nk; i++) jv_release(c, keys[i]);
        jfree(c, keys);
        jv_release(c, jv_list(items));
        return -1;
    }
    rv = sort_by(r, items, keys, reverse, as_lists, out);
    jv_release(c, jv_list(items));
    return rv;
}

static int f_sort(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"reverse", "case_sensitive", "attribute"};
    jval p[3];
    bool g[3];
    jctx *c = r->c;
    if (jargs_bind(c, "sort", a, names, 3, p, g)) return -1;
    jlist *items;
    if (jv_iterate(c, v, &items)) return -1;
    jval *keys = jalloc(c, (items->n ? items->n : 1) * sizeof *keys);
    size_t nk = 0; /* keys made so far */
    int rv = keys ? jiter_count(c, items->n) : -1;
    while (!rv && nk < items->n) {
        rv = sort_key(r, items->v[nk], g[2] ? p[2] : jv_none(), !(g[1] && jv_truthy(p[1])), &keys[nk]);
        if (!rv) nk++;
    }
    return sort_finish(r, items, keys, nk, rv, g[0] && jv_truthy(p[0]), true, out);
}

static int f_dictsort(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"case_sensitive", "by", "reverse"};
    jval p[3];
    bool g[3];
    jctx *c = r->c;
    if (jargs_bind(c, "dictsort", a, names, 3, p, g)) return -1;
    int pos = 0;
    if (g[1]) {
        const jstr *by = NULL;
        if (need_str(c, "dictsort", p[1], &by)) return -1;
        if (by->len == 5 && memcmp(by->data, "value", 5) == 0)
            pos = 1;
        else if (!(by->len == 3 && memcmp(by->data, "key", 3) == 0))
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "dictsort: you can only sort by either \"key\" or \"value\"");
    }
    if (v.t != JT_DICT)
        return jfail(c, PLUMB_E_INVALID_ARG, "dictsort: '%s' object has no attribute 'items'", jv_type_name(v));
    const jdict *d = v.u.d;
    jlist *items = jlist_new(c, d->n, JL_LIST);
    jval *keys = items ? jalloc(c, (d->n ? d->n : 1) * sizeof *keys) : NULL;
    if (!keys) {
        if (items) jv_release(c, jv_list(items));
        return -1;
    }
    bool ic = !(g[0] && jv_truthy(p[0]));
    size_t nk = 0; /* items and keys made so far */
    int rv = jiter_count(c, d->n);
    while (!rv && nk < d->n) {
        jval x = pos ? d->v[nk] : d->k[nk];
        if (jv_pair(c, d->k[nk], d->v[nk], &items->v[nk]) || (ic ? jv_ignore_case(c, x, &keys[nk]) : (keys[nk] = jv_retain(x), 0))) {
            rv = -1;
            break;
        }
        nk++;
    }
    if (!rv) rv = jlist_seal(c, items);
    return sort_finish(r, items, keys, nk, rv, g[2] && jv_truthy(p[2]), false, out);
}

static int f_escape(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jsb b;
    jsb_init(&b, r->c);
    if (jv_escape_into(r->c, &b, v)) {
        jsb_drop(&b);
        return -1;
    }
    jstr *s = jsb_finish(&b);
    if (!s) return -1;
    s->markup = true;
    *out = jv_str(s);
    return 0;
}

static int f_safe(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jstr *s;
    if (soft_str(r->c, v, &s)) return -1;
    if (!s->markup) { /* Markup(str) is a new object: do not flag a string others hold */
        jsb b;
        jsb_init(&b, r->c);
        int rv = jsb_put_str(&b, s);
        jv_release(r->c, jv_str(s));
        s = rv ? (jsb_drop(&b), NULL) : jsb_finish(&b);
        if (!s) return -1;
        s->markup = true;
    }
    *out = jv_str(s);
    return 0;
}

static int f_string(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jstr *s;
    if (soft_str(r->c, v, &s)) return -1;
    *out = jv_str(s);
    return 0;
}

/* The first item of an iterable (a one-shot iterator is advanced), or undefined. */
static int first_of(jctx *c, jval v, jval *out) {
    *out = jv_undef();
    switch (v.t) {
    case JT_UNDEF: return 0;
    case JT_ITER:
        if (v.u.it->items && v.u.it->pos < v.u.it->items->n) *out = jv_retain(v.u.it->items->v[v.u.it->pos++]);
        return 0;
    case JT_LIST:
        if (v.u.l->n) *out = jv_retain(v.u.l->v[0]);
        return 0;
    case JT_DICT:
        if (v.u.d->n) *out = jv_retain(v.u.d->k[0]);
        return 0;
    case JT_STR:
        if (v.u.s->len) {
            size_t e = jstr_cp_off(v.u.s, 1);
            jsb b;
            jsb_init(&b, c);
            if (jsb_put_range(&b, v.u.s, 0, e)) {
                jsb_drop(&b);
                return -1;
            }
            return give_str(jsb_finish(&b), out);
        }
        return 0;
    default: return jfail(c, PLUMB_E_INVALID_ARG, "'%s' object is not iterable", jv_type_name(v));
    }
}

static int f_first(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    return first_of(r->c, v, out);
}

static int f_last(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jctx *c = r->c;
    *out = jv_undef();
    switch (v.t) {
    case JT_UNDEF: return 0;
    case JT_LIST:
        if (v.u.l->n) *out = jv_retain(v.u.l->v[v.u.l->n - 1]);
        return 0;
    case JT_DICT:
        if (v.u.d->n) *out = jv_retain(v.u.d->k[v.u.d->n - 1]);
        return 0;
    case JT_STR:
        if (v.u.s->len) {
            size_t a0 = v.u.s->len - 1;
            while (a0 > 0 && ((unsigned char)v.u.s->data[a0] & 0xC0) == 0x80) a0--;
            jsb b;
            jsb_init(&b, c);
            if (jsb_put_range(&b, v.u.s, a0, v.u.s->len)) {
                jsb_drop(&b);
                return -1;
            }
            return give_str(jsb_finish(&b), out);
        }
        return 0;
    default: return jfail(c, PLUMB_E_INVALID_ARG, "'%s' object is not reversible", jv_type_name(v));
    }
}

static int f_list(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jlist *l;
    if (jv_iterate(r->c, v, &l)) return -1;
    if (l->kind == JL_LIST) {
        *out = jv_list(l);
        return 0;
    }
    jlist *m = jlist_new(r->c, l->n, JL_LIST);
    if (!m) {
        jv_release(r->c, jv_list(l));
        return -1;
    }
    for (size_t i = 0; i < l->n; i++) m->v[i] = jv_retain(l->v[i]);
    m->depth = l->depth;
    jv_release(r->c, jv_list(l));
    *out = jv_list(m);
    return 0;
}

static int f_reverse(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jctx *c = r->c;
    if (v.t == JT_STR) {
        size_t ncp = jstr_ncp(v.u.s);
        jstr *s;
        if (jtext_slice(c, v.u.s, (int64_t)ncp - 1, -1, (int64_t)ncp, &s)) return -1;
        s->markup = v.u.s->markup;
        *out = jv_str(s);
        return 0;
    }
    bool to_list = v.t == JT_ITER; /* reversed() fails on a generator: jinja2 makes a list */
    if (v.t != JT_LIST && v.t != JT_DICT && v.t != JT_UNDEF && v.t != JT_ITER)
        return jfail(c, PLUMB_E_INVALID_ARG, "reverse: argument must be iterable, not '%s'", jv_type_name(v));
    jlist *l;
    if (jv_iterate(c, v, &l)) return -1;
    jlist *m = jlist_new(c, l->n, JL_LIST);
    if (!m) {
        jv_release(c, jv_list(l));
        return -1;
    }
    for (size_t i = 0; i < l->n; i++) m->v[i] = jv_retain(l->v[l->n - 1 - i]);
    m->depth = l->depth;
    jv_release(c, jv_list(l));
    if (to_list) {
        *out = jv_list(m);
        return 0;
    }
    return make_iter(c, m, out);
}

static int f_items(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jctx *c = r->c;
    if (v.t == JT_UNDEF) {
        jlist *l = jlist_new(c, 0, JL_LIST);
        return l ? make_iter(c, l, out) : -1;
    }
    if (v.t != JT_DICT) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "items: can only get item pairs from a mapping");
    const jdict *d = v.u.d;
    jlist *l = jlist_new(c, d->n, JL_LIST);
    if (!l) return -1;
    for (size_t i = 0; i < d->n; i++) {
        if (jv_pair(c, d->k[i], d->v[i], &l->v[i])) {
            jv_release(c, jv_list(l));
            return -1;
        }
    }
    if (jlist_seal(c, l)) {
        jv_release(c, jv_list(l));
        return -1;
    }
    return make_iter(c, l, out);
}

static int f_join(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"d", "attribute"};
    jval p[2];
    bool g[2];
    jctx *c = r->c;
    if (jargs_bind(c, "join", a, names, 2, p, g)) return -1;
    jstr *sep = NULL;
    if (g[0] && soft_str(c, p[0], &sep)) return -1;
    jlist *items;
    if (jv_iterate(c, v, &items)) {
        if (sep) jv_release(c, jv_str(sep));
        return -1;
    }
    jsb b;
    jsb_init(&b, c);
    int rv = jiter_count(c, items->n);
    for (size_t i = 0; i < items->n && !rv; i++) {
        if (i && sep) rv = jsb_put_str(&b, sep);
        if (rv) break;
        if (g[1] && p[1].t != JT_NONE) {
            jval x;
            rv = attr_get(r, items->v[i], p[1], &x);
            if (!rv) {
                rv = jv_str_into(c, &b, x);
                jv_release(c, x);
            }
        } else {
            rv = jv_str_into(c, &b, items->v[i]);
        }
    }
    jv_release(c, jv_list(items));
    if (sep) jv_release(c, jv_str(sep));
    if (rv) {
        jsb_drop(&b);
        return -1;
    }
    return give_str(jsb_finish(&b), out);
}

/* Python's int(str, base): whitespace around, a sign, a prefix matching the base (or any
 * with base 0), digits with single underscores between them. */
static bool parse_pyint(const jstr *s, int base, int64_t *out, bool *overflow) {
    const char *p = s->data, *e = s->data + s->len;
    *overflow = false;
    while (p < e && u_space_at(p, (size_t)(e - p))) p += u_space_at(p, (size_t)(e - p));
    while (e > p) {
        size_t st = (size_t)(e - p) - 1;
        while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
        if (!u_space_at(p + st, (size_t)(e - p) - st)) break;
        e = p + st;
    }
    bool neg = false;
    if (p < e && (*p == '+' || *p == '-')) neg = *p++ == '-';
    if (e - p >= 2 && p[0] == '0') {
        char k = (char)(p[1] | 0x20);
        int pb = k == 'x' ? 16 : k == 'o' ? 8 : k == 'b' ? 2 : 0;
        if (pb && (base == 0 || base == pb)) {
            base = pb;
            p += 2;
            if (p < e && *p == '_') p++; /* 0x_1f */
        }
    }
    if (base == 0) {
        base = 10;
        if (e - p > 1 && p[0] == '0') { /* base 0 rejects leading zeros unless all zero */
            for (const char *q = p; q < e; q++)
                if (*q != '0' && *q != '_') return false;
        }
    }
    if (p >= e) return false;
    uint64_t v = 0;
    bool last_digit = false;
    for (; p < e; p++) {
        if (*p == '_') {
            if (!last_digit || p + 1 >= e || p[1] == '_') return false;
            last_digit = false;
            continue;
        }
        int d = *p >= '0' && *p <= '9'                     ? *p - '0'
                : (*p | 0x20) >= 'a' && (*p | 0x20) <= 'z' ? (*p | 0x20) - 'a' + 10
                                                           : 99;
        if (d >= base) return false;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            *overflow = true;
        else
            v = v * (uint64_t)base + (uint64_t)d;
        last_digit = true;
    }
    if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0)) *overflow = true;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* Python's float(str): whitespace, sign, inf/infinity/nan, or a decimal with underscores. */
static bool parse_pyfloat(const jstr *s, double *out) {
    const char *p = s->data, *e = s->data + s->len;
    while (p < e && u_space_at(p, (size_t)(e - p))) p += u_space_at(p, (size_t)(e - p));
    while (e > p) {
        size_t st = (size_t)(e - p) - 1;
        while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
        if (!u_space_at(p + st, (size_t)(e - p) - st)) break;
        e = p + st;
    }
    char buf[128];
    size_t n = 0, len = (size_t)(e - p);
    if (len == 0 || len >= sizeof buf) return false;
    const char *q = p;
    bool neg = false;
    if (*q == '+' || *q == '-') neg = *q++ == '-';
    size_t rest = (size_t)(e - q);
    char low[16];
    if (rest <= 8) {
        for (size_t i = 0; i < rest; i++) low[i] = (char)(q[i] | 0x20);
        low[rest] = '\0';
        if (!strcmp(low, "inf") || !strcmp(low, "infinity")) {
            *out = neg ? -INFINITY : INFINITY;
            return true;
        }
        if (!strcmp(low, "nan")) {
            *out = NAN;
            return true;
        }
    }
    /* digits[_digits] [. digits] [e [sign] digits], at least one mantissa digit */
    if (neg) buf[n++] = '-';
    bool mant = false, prev_digit = false;
    const char *x = q;
    for (; x < e; x++) {
        if (*x >= '0' && *x <= '9') {
            buf[n++] = *x;
            mant = prev_digit = true;
        } else if (*x == '_' && prev_digit && x + 1 < e && x[1] >= '0' && x[1] <= '9') {
            prev_digit = false;
        } else {
            break;
        }
    }
    if (x < e && *x == '.') {
        buf[n++] = *x++;
        prev_digit = false;
        bool first = true;
        for (; x < e; x++) {
            if (*x >= '0' && *x <= '9') {
                buf[n++] = *x;
                mant = prev_digit = true;
                first = false;
            } else if (*x == '_' && prev_digit && !first && x + 1 < e && x[1] >= '0' && x[1] <= '9') {
                prev_digit = false;
            } else {
                break;
            }
        }
    }
    if (!mant) return false;
    if (x < e && (*x == 'e' || *x == 'E')) {
        buf[n++] = 'e';
        x++;
        if (x < e && (*x == '+' || *x == '-')) buf[n++] = *x++;
        bool ed = false;
        prev_digit = false;
        for (; x < e; x++) {
            if (*x >= '0' && *x <= '9') {
                buf[n++] = *x;
                ed = prev_digit = true;
            } else if (*x == '_' && prev_digit && x + 1 < e && x[1] >= '0' && x[1] <= '9') {
                prev_digit = false;
            } else {
                break;
            }
        }
        if (!ed) return false;
    }
    if (x != e) return false;
    buf[n] = '\0';
    *out = jstrtod(buf, NULL);
    return true;
}

/* int(f) for a float: truncation; inf is Python's OverflowError (raised), nan a ValueError. */
static int float_to_int(jctx *c, double f, bool *ok, int64_t *out) {
    *ok = false;
    if (isnan(f)) return 0;
    if (isinf(f)) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "int: cannot convert float infinity to integer");
    double t = trunc(f);
    if (t >= 9223372036854775808.0 || t < -9223372036854775808.0)
        return jfail(c, PLUMB_E_RANGE, "%s", "int: integer past 64 bits");
    *out = (int64_t)t;
    *ok = true;
    return 0;
}

static int f_int(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"default", "base"};
    jval p[2];
    bool g[2];
    jctx *c = r->c;
    if (jargs_bind(c, "int", a, names, 2, p, g)) return -1;
    int64_t base = 10;
    if (g[1] && need_int(c, "int", p[1], &base)) return -1;
    if (v.t == JT_UNDEF) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "int: the value is undefined");
    jval dflt = g[0] ? jv_retain(p[0]) : jv_int(0);
    int64_t i;
    bool ok;
    double f;
    switch (v.t) {
    case JT_INT: *out = v; break;
    case JT_BOOL: *out = jv_int(v.u.b); break;
    case JT_FLOAT:
        if (float_to_int(c, v.u.f, &ok, &i)) goto fail;
        *out = ok ? jv_int(i) : jv_retain(dflt);
        break;
    case JT_STR: {
        bool overflow;
        if (base != 0 && (base < 2 || base > 36)) {
            jfail(c, PLUMB_E_INVALID_ARG, "%s", "int() base must be >= 2 and <= 36, or 0");
            goto fail;
        }
        if (parse_pyint(v.u.s, (int)base, &i, &overflow)) {
            if (overflow) {
                jfail(c, PLUMB_E_RANGE, "%s", "int: integer past 64 bits");
                goto fail;
            }
            *out = jv_int(i);
        } else if (parse_pyfloat(v.u.s, &f)) {
            if (float_to_int(c, f, &ok, &i)) goto fail;
            *out = ok ? jv_int(i) : jv_retain(dflt);
        } else {
            *out = jv_retain(dflt);
        }
        break;
    }
    default: *out = jv_retain(dflt); break;
    }
    jv_release(c, dflt);
    return 0;
fail:
    jv_release(c, dflt);
    return -1;
}

static int f_float(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"default"};
    jval p[1];
    bool g[1];
    if (jargs_bind(r->c, "float", a, names, 1, p, g)) return -1;
    if (v.t == JT_UNDEF) return jfail(r->c, PLUMB_E_INVALID_ARG, "%s", "float: the value is undefined");
    double f;
    if (v.t == JT_FLOAT)
        *out = v;
    else if (v.t == JT_INT)
        *out = jv_float((double)v.u.i);
    else if (v.t == JT_BOOL)
        *out = jv_float(v.u.b);
    else if (v.t == JT_STR && parse_pyfloat(v.u.s, &f))
        *out = jv_float(f);
    else
        *out = g[0] ? jv_retain(p[0]) : jv_float(0.0);
    return 0;
}

static int f_round(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"precision", "method"};
    jval p[2];
    bool g[2];
    jctx *c = r->c;
    if (jargs_bind(c, "round", a, names, 2, p, g)) return -1;
    int64_t prec = 0;
    if (g[0] && need_int(c, "round", p[0], &prec)) return -1;
    int method = 0; /* 0 common, 1 ceil, 2 floor */
    if (g[1]) {
        const jstr *m = NULL;
        if (need_str(c, "round", p[1], &m)) return -1;
        if (m->len == 4 && !memcmp(m->data, "ceil", 4))
            method = 1;
        else if (m->len == 5 && !memcmp(m->data, "floor", 5))
            method = 2;
        else if (!(m->len == 6 && !memcmp(m->data, "common", 6)))
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "round: method must be common, ceil or floor");
    }
    double x;
    if (!jv_as_double(v, &x))
        return jfail(c, PLUMB_E_INVALID_ARG, "round: type %s doesn't define __round__", jv_type_name(v));
    if (prec < -400) prec = -400;
    if (prec > 400) prec = 400;
    if (method) {
        double scale = pow(10.0, (double)prec);
        double y = method == 1 ? ceil(x * scale) : floor(x * scale);
        if (isinf(y) && !isinf(x))
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "round: cannot convert float infinity to integer");
        *out = jv_float(y / scale);
        return 0;
    }
    if (v.t != JT_FLOAT) { /* round(int, n) is an int */
        int64_t i = v.t == JT_BOOL ? v.u.b : v.u.i;
        if (prec < 0) {
            /* to a multiple of 10^-prec, ties to even */
            if (prec < -18) {
                *out = jv_int(0);
                return 0;
            }
            int64_t m = 1;
            for (int64_t k = 0; k < -prec; k++) m *= 10;
            int64_t q = i / m, rem = i % m;
            if (rem < 0) {
                rem += m;
                q--;
            }
            if (rem * 2 > m || (rem * 2 == m && (q & 1))) q++;
            *out = jv_int(q * m);
        } else {
            *out = jv_int(i);
        }
        return 0;
    }
    if (isinf(x) || isnan(x) || prec > 323) {
        *out = jv_float(x);
        return 0;
    }
    char buf[512];
    if (prec >= 0) {
        jfmt_c(buf, sizeof buf, "%.*f", (int)prec, x);
        *out = jv_float(jstrtod(buf, NULL));
    } else {
        double scale = pow(10.0, (double)-prec);
        jfmt_c(buf, sizeof buf, "%.0f", x / scale);
        *out = jv_float(jstrtod(buf, NULL) * scale);
    }
    return 0;
}

static int f_replace(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"old", "new", "count"};
    jval p[3];
    bool g[3];
    jctx *c = r->c;
    if (jargs_bind(c, "replace", a, names, 3, p, g)) return -1;
    if (!g[0] || !g[1]) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "replace() needs old and new");
    int64_t count = -1;
    if (g[2] && p[2].t != JT_NONE && need_int(c, "replace", p[2], &count)) return -1;
    jstr *s = NULL, *o = NULL, *n = NULL, *res = NULL;
    int rv =
        soft_str(c, v, &s) || soft_str(c, p[0], &o) || soft_str(c, p[1], &n) || jtext_replace(c, s, o, n, count, &res);
    if (s) jv_release(c, jv_str(s));
    if (o) jv_release(c, jv_str(o));
    if (n) jv_release(c, jv_str(n));
    return rv ? -1 : give_str(res, out);
}

static int f_trim(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"chars"};
    jval p[1];
    bool g[1];
    jctx *c = r->c;
    if (jargs_bind(c, "trim", a, names, 1, p, g)) return -1;
    const jstr *chars = NULL;
    if (g[0] && p[0].t != JT_NONE && need_str(c, "trim", p[0], &chars)) return -1;
    jstr *s, *res;
    if (soft_str(c, v, &s)) return -1;
    int rv = jtext_strip(c, s, chars, true, true, &res);
    if (!rv) res->markup = s->markup;
    jv_release(c, jv_str(s));
    return rv ? -1 : give_str(res, out);
}

static int f_indent(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"width", "first", "blank"};
    jval p[3];
    bool g[3];
    jctx *c = r->c;
    if (jargs_bind(c, "indent", a, names, 3, p, g)) return -1;
    jstr *ind;
    if (g[0] && p[0].t == JT_STR) {
        ind = p[0].u.s;
        ind->rc++;
    } else {
        int64_t w = 4;
        if (g[0] && need_int(c, "indent", p[0], &w)) return -1;
        if (w < 0) w = 0;
        if ((uint64_t)w > c->lim.max_output)
            return jfail(c, PLUMB_E_RANGE, "%s", "indent: width longer than max_output");
        char *sp = jalloc(c, (size_t)w + 1);
        if (!sp) return -1;
        memset(sp, ' ', (size_t)w);
        ind = jstr_new(c, sp, (size_t)w, false);
        jfree(c, sp);
        if (!ind) return -1;
    }
    jstr *s = NULL, *res = NULL;
    int rv = 0;
    if (v.t != JT_STR) /* jinja2 appends "\n" to the value itself: only text can be indented */
        rv = v.t == JT_UNDEF ? jfail(c, PLUMB_E_INVALID_ARG, "%s", "indent: the value is undefined")
                             : jfail(c, PLUMB_E_INVALID_ARG,
                                     "indent: unsupported operand type(s) for +=: '%s' and 'str'", jv_type_name(v));
    else
        s = jv_retain(v).u.s;
    if (!rv) {
        rv = jtext_indent(c, s, ind, g[1] && jv_truthy(p[1]), g[2] && jv_truthy(p[2]), &res);
        jv_release(c, jv_str(s));
    }
    jv_release(c, jv_str(ind));
    return rv ? -1 : give_str(res, out);
}

static int f_wordcount(jrender *r, jval v, const jargs *a, jval *out) {
    (void)a;
    jstr *s;
    if (soft_str(r->c, v, &s)) return -1;
    if (jwork(r->c, s->len)) {
        jv_release(r->c, jv_str(s));
        return -1;
    }
    *out = jv_int(jtext_wordcount(s));
    jv_release(r->c, jv_str(s));
    return 0;
}

static int f_tojson(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    jval p[4];
    bool g[4];
    jctx *c = r->c;
    if (jargs_bind(c, "tojson", a, names, 4, p, g)) return -1;
    jjson_opts o = {.ensure_ascii = g[0] && jv_truthy(p[0]), .sort_keys = g[3] && jv_truthy(p[3])};
    char *spaces = NULL;
    if (g[1] && p[1].t != JT_NONE) {
        o.has_indent = true;
        if (p[1].t == JT_STR) {
            o.indent = p[1].u.s->data;
            o.indent_len = p[1].u.s->len;
        } else {
            int64_t w = 0;
            if (need_int(c, "tojson indent", p[1], &w)) return -1;
            if (w < 0) w = 0;
            if ((uint64_t)w > c->lim.max_output)
                return jfail(c, PLUMB_E_RANGE, "%s", "tojson: indent longer than max_output");
            spaces = jalloc(c, (size_t)w + 1);
            if (!spaces) return -1;
            memset(spaces, ' ', (size_t)w);
            o.indent = spaces;
            o.indent_len = (size_t)w;
        }
    }
    if (g[2] && p[2].t != JT_NONE) {
        jval s = p[2];
        if (s.t != JT_LIST || s.u.l->kind > JL_TUPLE || s.u.l->n != 2 || s.u.l->v[0].t != JT_STR ||
            s.u.l->v[1].t != JT_STR) {
            jfree(c, spaces);
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "tojson: separators must be a pair of strings");
        }
        o.item_sep = s.u.l->v[0].u.s->data;
        o.item_sep_len = s.u.l->v[0].u.s->len;
        o.key_sep = s.u.l->v[1].u.s->data;
        o.key_sep_len = s.u.l->v[1].u.s->len;
    }
    jsb b;
    jsb_init(&b, c);
    int rv = jjson_dump(c, &b, v, &o);
    jfree(c, spaces);
    if (rv) {
        jsb_drop(&b);
        return -1;
    }
    return give_str(jsb_finish(&b), out);
}

/* max/min: the first greatest (least) item by key; undefined for an empty sequence. */
static int min_max(jrender *r, jval v, const jargs *a, bool max, jval *out) {
    static const char *const names[] = {"case_sensitive", "attribute"};
    jval p[2];
    bool g[2];
    jctx *c = r->c;
    if (jargs_bind(c, max ? "max" : "min", a, names, 2, p, g)) return -1;
    jlist *items;
    if (jv_iterate(c, v, &items)) return -1;
    *out = jv_undef();
    int rv = jiter_count(c, items->n);
    jval best_key = jv_undef();
    size_t best = 0;
    bool ic = !(g[0] && jv_truthy(p[0]));
    for (size_t i = 0; i < items->n && !rv; i++) {
        jval k;
        if ((rv = sort_key(r, items->v[i], p[1], ic, &k))) break;
        bool better = i == 0;
        if (!better) rv = max ? jv_lt(c, best_key, k, &better) : jv_lt(c, k, best_key, &better);
        if (!rv && better) {
            jv_release(c, best_key);
            best_key = k;
            best = i;
        } else {
            jv_release(c, k);
        }
    }
    jv_release(c, best_key);
    if (!rv && items->n) *out = jv_retain(items->v[best]);
    jv_release(c, jv_list(items));
    return rv;
}

static int f_max(jrender *r, jval v, const jargs *a, jval *out) { return min_max(r, v, a, true, out); }
static int f_min(jrender *r, jval v, const jargs *a, jval *out) { return min_max(r, v, a, false, out); }

static int f_sum(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"attribute", "start"};
    jval p[2];
    bool g[2];
    jctx *c = r->c;
    if (jargs_bind(c, "sum", a, names, 2, p, g)) return -1;
    jval total = g[1] ? jv_retain(p[1]) : jv_int(0);
    if (total.t == JT_STR) {
        jv_release(c, total);
        return jfail(c, PLUMB_E_INVALID_ARG, "%s", "sum() can't sum strings [use ''.join(seq) instead]");
    }
    jlist *items;
    if (jv_iterate(c, v, &items)) {
        jv_release(c, total);
        return -1;
    }
    int rv = jiter_count(c, items->n);
    for (size_t i = 0; i < items->n && !rv; i++) {
        jval x, t;
        if ((rv = attr_get(r, items->v[i], g[0] ? p[0] : jv_none(), &x))) break;
        rv = jarith(r, OP_ADD, total, x, &t);
        jv_release(c, x);
        if (!rv) {
            jv_release(c, total);
            total = t;
        }
    }
    jv_release(c, jv_list(items));
    if (rv) {
        jv_release(c, total);
        return -1;
    }
    *out = total;
    return 0;
}

/* Whether a test passes, by name (a string argument), with the remaining arguments. */
static int run_named_test(jrender *r, jval name, jval item, const jargs *rest, bool *out) {
    if (name.t != JT_STR) return jfail(r->c, PLUMB_E_INVALID_ARG, "%s", "a test name must be a string");
    int id = jtest_id(name.u.s->data, name.u.s->len);
    if (id < 0) return jfail(r->c, PLUMB_E_UNSUPPORTED, "no test named '%.48s'", name.u.s->data);
    return jtest_call(r, id, item, rest, out);
}

/* select/reject (attr = false) and selectattr/rejectattr (attr = true): a one-shot iterator. */
static int select_common(jrender *r, jval v, const jargs *a, bool attr, bool keep_if, jval *out) {
    jctx *c = r->c;
    if (!jv_truthy(v)) { /* jinja2 yields nothing for a falsy value, without looking further */
        jlist *l = jlist_new(c, 0, JL_LIST);
        return l ? make_iter(c, l, out) : -1;
    }
    if (attr && a->n_pos < 1) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "missing parameter for attribute name");
    size_t off = attr ? 1 : 0;
    bool has_test = a->n_pos > off;
    jargs rest = {.pos = has_test ? a->pos + off + 1 : NULL,
                  .n_pos = has_test ? a->n_pos - off - 1 : 0,
                  .kw_names = a->kw_names,
                  .kw = a->kw,
                  .n_kw = a->n_kw};
    jlist *items;
    if (jv_iterate(c, v, &items)) return -1;
    jvec keep = {0};
    int rv = jiter_count(c, items->n);
    for (size_t i = 0; i < items->n && !rv; i++) {
        jval x;
        if (attr) {
            if ((rv = attr_get(r, items->v[i], a->pos[0], &x))) break;
        } else {
            x = jv_retain(items->v[i]);
        }
        bool pass;
        if (has_test)
            rv = run_named_test(r, a->pos[off], x, &rest, &pass);
        else
            pass = jv_truthy(x);
        jv_release(c, x);
        if (!rv && pass == keep_if) rv = jvec_push(c, &keep, jv_retain(items->v[i]));
    }
    jv_release(c, jv_list(items));
    jlist *l;
    if (rv || jvec_list(c, &keep, false, &l)) {
        jvec_drop(c, &keep);
        return -1;
    }
    return make_iter(c, l, out);
}

static int f_select(jrender *r, jval v, const jargs *a, jval *out) { return select_common(r, v, a, false, true, out); }
static int f_reject(jrender *r, jval v, const jargs *a, jval *out) { return select_common(r, v, a, false, false, out); }
static int f_selectattr(jrender *r, jval v, const jargs *a, jval *out) {
    return select_common(r, v, a, true, true, out);
}
static int f_rejectattr(jrender *r, jval v, const jargs *a, jval *out) {
    return select_common(r, v, a, true, false, out);
}

static int f_map(jrender *r, jval v, const jargs *a, jval *out) {
    jctx *c = r->c;
    if (!jv_truthy(v)) {
        jlist *l = jlist_new(c, 0, JL_LIST);
        return l ? make_iter(c, l, out) : -1;
    }
    jval attribute = jv_undef(), dflt = jv_none();
    bool by_attr = false;
    int fid = -1;
    jargs rest = {0};
    if (a->n_pos == 0) {
        for (size_t k = 0; k < a->n_kw; k++) {
            const jname *kn = &a->kw_names[k];
            if (kn->n == 9 && !memcmp(kn->p, "attribute", 9))
                attribute = a->kw[k], by_attr = true;
            else if (kn->n == 7 && !memcmp(kn->p, "default", 7))
                dflt = a->kw[k];
            else
                return jfail(c, PLUMB_E_INVALID_ARG, "map: unexpected keyword argument '%.*s'",
                             (int)(kn->n < 48 ? kn->n : 48), kn->p);
        }
        if (!by_attr) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "map requires a filter argument");
    } else {
        if (a->pos[0].t != JT_STR) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "map: the filter name must be a string");
        fid = jfilter_id(a->pos[0].u.s->data, a->pos[0].u.s->len);
        if (fid < 0) return jfail(c, PLUMB_E_UNSUPPORTED, "map: no filter named '%.48s'", a->pos[0].u.s->data);
        rest = (jargs){.pos = a->pos + 1, .n_pos = a->n_pos - 1, .kw_names = a->kw_names, .kw = a->kw, .n_kw = a->n_kw};
    }
    jlist *items;
    if (jv_iterate(c, v, &items)) return -1;
    jlist *l = jlist_new(c, items->n, JL_LIST);
    int rv = l ? jiter_count(c, items->n) : -1;
    for (size_t i = 0; i < items->n && !rv; i++) {
        jval x;
        if (by_attr) {
            rv = attr_get(r, items->v[i], attribute, &x);
            if (!rv && x.t == JT_UNDEF && dflt.t != JT_NONE) x = jv_retain(dflt);
        } else {
            rv = jfilter_call(r, fid, items->v[i], &rest, &x);
        }
        if (!rv) l->v[i] = x;
    }
    jv_release(c, jv_list(items));
    if (rv || jlist_seal(c, l)) {
        if (l) jv_release(c, jv_list(l));
        return -1;
    }
    return make_iter(c, l, out);
}

static int f_unique(jrender *r, jval v, const jargs *a, jval *out) {
    static const char *const names[] = {"case_sensitive", "attribute"};
    jval p[2];
    bool g[2];
    jctx *c = r->c;
    if (jargs_bind(c, "unique", a, names, 2, p, g)) return -1;
    jlist *items;
    if (jv_iterate(c, v, &items)) return -1;
    jvec seen = {0}, keep = {0};
    int rv = jiter_count(c, items->n);
    for (size_t i = 0; i < items->n && !rv; i++) {
        jval k;
        if ((rv = sort_key(r, items->v[i], g[1] ? p[1] : jv_none(), !(g[0] && jv_truthy(p[0])), &k))) break;
        if (!jv_hashable(k)) {
            rv = jfail(c, PLUMB_E_INVALID_ARG, "unhashable type: '%s'", jv_type_name(k));
            jv_release(c, k);
            break;
        }
        bool dup = false;
        rv = jwork(c, (uint64_t)seen.n * JW_CMP);
        for (size_t j = 0; j < seen.n && !dup && !rv; j++) rv = jv_eq(c, seen.v[j], k, &dup);
        if (rv || dup) {
            jv_release(c, k);
            continue;
        }
        rv = jvec_push(c, &seen, k) || jvec_push(c, &keep, jv_retain(items->v[i]));
    }
    jv_release(c, jv_list(items));
    jvec_drop(c, &seen);
    jlist *l;
    if (rv || jvec_list(c, &keep, false, &l)) {
        jvec_drop(c, &keep);
        return -1;
    }
    return make_iter(c, l, out);
}

static const struct {
    const char *name;
    filter_fn fn;
} filters[] = {
    {"abs", f_abs},           {"attr", f_attr},       {"capitalize", f_capitalize},
    {"count", f_length},      {"d", f_default},       {"default", f_default},
    {"dictsort", f_dictsort}, {"e", f_escape},        {"escape", f_escape},
    {"first", f_first},       {"float", f_float},     {"indent", f_indent},
    {"int", f_int},           {"items", f_items},     {"join", f_join},
    {"last", f_last},         {"length", f_length},   {"list", f_list},
    {"lower", f_lower},       {"map", f_map},         {"max", f_max},
    {"min", f_min},           {"reject", f_reject},   {"rejectattr", f_rejectattr},
    {"replace", f_replace},   {"reverse", f_reverse}, {"round", f_round},
    {"safe", f_safe},         {"select", f_select},   {"selectattr", f_selectattr},
    {"sort", f_sort},         {"string", f_string},   {"sum", f_sum},
    {"title", f_title},       {"tojson", f_tojson},   {"trim", f_trim},
    {"unique", f_unique},     {"upper", f_upper},     {"wordcount", f_wordcount},
};

int jfilter_id(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
        if (strlen(filters[i].name) == n && memcmp(filters[i].name, name, n) == 0) return (int)i;
    return -1;
}

int jfilter_call(jrender *r, int id, jval v, const jargs *a, jval *out) {
    *out = jv_undef();
    if (id < 0 || (size_t)id >= sizeof filters / sizeof filters[0])
        return jfail(r->c, PLUMB_E_UNSUPPORTED, "%s", "unknown filter");
    return filters[id].fn(r, v, a, out);
}

/* ---- tests ------------------------------------------------------------------------------------ */

/* The one argument a test takes. */
static int test_arg(jctx *c, const char *what, const jargs *a, jval *out) {
    static const char *const names[] = {"other"};
    bool g[1];
    if (jargs_bind(c, what, a, names, 1, out, g)) return -1;
    if (!g[0]) return jfail(c, PLUMB_E_INVALID_ARG, "%s() missing 1 required positional argument", what);
    return 0;
}

static int no_args(jctx *c, const char *what, const jargs *a) {
    if (a->n_pos || a->n_kw) return jfail(c, PLUMB_E_INVALID_ARG, "the test '%s' takes no arguments", what);
    return 0;
}

#define SIMPLE_TEST(fname, cond)                                                                                       \
    static int fname(jrender *r, jval v, const jargs *a, bool *out) {                                                  \
        if (no_args(r->c, &(#fname)[2], a)) return -1;                                                                 \
        *out = (cond);                                                                                                 \
        return 0;                                                                                                      \
    }

SIMPLE_TEST(t_defined, v.t != JT_UNDEF)
SIMPLE_TEST(t_undefined, v.t == JT_UNDEF)
SIMPLE_TEST(t_none, v.t == JT_NONE)
SIMPLE_TEST(t_boolean, v.t == JT_BOOL)
SIMPLE_TEST(t_false, v.t == JT_BOOL && !v.u.b)
SIMPLE_TEST(t_true, v.t == JT_BOOL && v.u.b)
SIMPLE_TEST(t_integer, v.t == JT_INT)
SIMPLE_TEST(t_float, v.t == JT_FLOAT)
SIMPLE_TEST(t_number, jv_is_number(v))
SIMPLE_TEST(t_string, v.t == JT_STR)
SIMPLE_TEST(t_mapping, v.t == JT_DICT)
SIMPLE_TEST(t_iterable,
            v.t == JT_STR || v.t == JT_LIST || v.t == JT_DICT || v.t == JT_ITER || v.t == JT_UNDEF || v.t == JT_LOOP)
SIMPLE_TEST(t_sequence,
            v.t == JT_STR || v.t == JT_DICT || v.t == JT_UNDEF || (v.t == JT_LIST && v.u.l->kind <= JL_RANGE))
SIMPLE_TEST(t_callable, v.t == JT_MACRO || v.t == JT_FUNC || v.t == JT_LOOP || v.t == JT_UNDEF)
SIMPLE_TEST(t_escaped, v.t == JT_STR && v.u.s->markup)

static int t_lower_upper(jrender *r, jval v, const jargs *a, bool upper, bool *out) {
    if (no_args(r->c, upper ? "upper" : "lower", a)) return -1;
    jstr *s;
    if (jv_to_str(r->c, v, &s)) return -1;
    if (jwork(r->c, s->len)) {
        jv_release(r->c, jv_str(s));
        return -1;
    }
    *out = upper ? jtext_isupper(s) : jtext_islower(s);
    jv_release(r->c, jv_str(s));
    return 0;
}
static int t_lower(jrender *r, jval v, const jargs *a, bool *out) { return t_lower_upper(r, v, a, false, out); }
static int t_upper(jrender *r, jval v, const jargs *a, bool *out) { return t_lower_upper(r, v, a, true, out); }

/* value % m == 0 / == 1 in Python's arithmetic. */
static int modulo_is(jrender *r, jval v, jval m, int64_t want, bool *out) {
    jval rem;
    if (jarith(r, OP_MOD, v, m, &rem)) return -1;
    bool eq;
    int rv = jv_eq(r->c, rem, jv_int(want), &eq);
    jv_release(r->c, rem);
    *out = rv == 0 && eq;
    return rv;
}

static int t_odd(jrender *r, jval v, const jargs *a, bool *out) {
    if (no_args(r->c, "odd", a)) return -1;
    return modulo_is(r, v, jv_int(2), 1, out);
}
static int t_even(jrender *r, jval v, const jargs *a, bool *out) {
    if (no_args(r->c, "even", a)) return -1;
    return modulo_is(r, v, jv_int(2), 0, out);
}
static int t_divisibleby(jrender *r, jval v, const jargs *a, bool *out) {
    jval m;
    if (test_arg(r->c, "divisibleby", a, &m)) return -1;
    return modulo_is(r, v, m, 0, out);
}

static int t_sameas(jrender *r, jval v, const jargs *a, bool *out) {
    jval o;
    if (test_arg(r->c, "sameas", a, &o)) return -1;
    if (v.t != o.t)
        *out = false;
    else if (jv_heap(v))
        *out = v.u.rc == o.u.rc;
    else if (v.t == JT_BOOL)
        *out = v.u.b == o.u.b;
    else if (v.t == JT_INT)
        *out = v.u.i == o.u.i;
    else if (v.t == JT_FLOAT)
        *out = false;
    else
        *out = true;
    return 0;
}

static int t_in(jrender *r, jval v, const jargs *a, bool *out) {
    jval seq;
    if (test_arg(r->c, "in", a, &seq)) return -1;
    return jcontains(r, v, seq, out);
}

static int cmp_test(jrender *r, jval v, const jargs *a, int op, bool *out) {
    jval o;
    if (test_arg(r->c, "comparison", a, &o)) return -1;
    if (op == OP_EQ || op == OP_NE) {
        if (jv_eq(r->c, v, o, out)) return -1;
        if (op == OP_NE) *out = !*out;
        return 0;
    }
    return jv_order(r->c, v, o, op, out);
}
static int t_eq(jrender *r, jval v, const jargs *a, bool *out) { return cmp_test(r, v, a, OP_EQ, out); }
static int t_ne(jrender *r, jval v, const jargs *a, bool *out) { return cmp_test(r, v, a, OP_NE, out); }
static int t_lt(jrender *r, jval v, const jargs *a, bool *out) { return cmp_test(r, v, a, OP_LT, out); }
static int t_le(jrender *r, jval v, const jargs *a, bool *out) { return cmp_test(r, v, a, OP_LE, out); }
static int t_gt(jrender *r, jval v, const jargs *a, bool *out) { return cmp_test(r, v, a, OP_GT, out); }
static int t_ge(jrender *r, jval v, const jargs *a, bool *out) { return cmp_test(r, v, a, OP_GE, out); }

static int t_filter(jrender *r, jval v, const jargs *a, bool *out) {
    if (no_args(r->c, "filter", a)) return -1;
    *out = v.t == JT_STR && jfilter_id(v.u.s->data, v.u.s->len) >= 0;
    return 0;
}
static int t_test(jrender *r, jval v, const jargs *a, bool *out) {
    if (no_args(r->c, "test", a)) return -1;
    *out = v.t == JT_STR && jtest_id(v.u.s->data, v.u.s->len) >= 0;
    return 0;
}

static const struct {
    const char *name;
    test_fn fn;
} tests[] = {
    {"defined", t_defined},
    {"undefined", t_undefined},
    {"none", t_none},
    {"boolean", t_boolean},
    {"false", t_false},
    {"true", t_true},
    {"integer", t_integer},
    {"float", t_float},
    {"number", t_number},
    {"string", t_string},
    {"mapping", t_mapping},
    {"iterable", t_iterable},
    {"sequence", t_sequence},
    {"callable", t_callable},
    {"escaped", t_escaped},
    {"lower", t_lower},
    {"upper", t_upper},
    {"odd", t_odd},
    {"even", t_even},
    {"divisibleby", t_divisibleby},
    {"sameas", t_sameas},
    {"in", t_in},
    {"==", t_eq},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"!=", t_ne},
    {"ne", t_ne},
    {"<", t_lt},
    {"lt", t_lt},
    {"lessthan", t_lt},
    {"<=", t_le},
    {"le", t_le},
    {">", t_gt},
    {"gt", t_gt},
    {"greaterthan", t_gt},
    {">=", t_ge},
    {"ge", t_ge},
    {"filter", t_filter},
    {"test", t_test},
};

int jtest_id(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (strlen(tests[i].name) == n && memcmp(tests[i].name, name, n) == 0) return (int)i;
    return -1;
}

int jtest_call(jrender *r, int id, jval v, const jargs *a, bool *out) {
    *out = false;
    if (id < 0 || (size_t)id >= sizeof tests / sizeof tests[0])
        return jfail(r->c, PLUMB_E_UNSUPPORTED, "%s", "unknown test");
    return tests[id].fn(r, v, a, out);
}
