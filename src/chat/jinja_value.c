/* jinja_value.c — the values of plumb's Jinja engine and the bookkeeping under them: memory
 * and work accounting against the render's caps, the first-error record, reference-counted
 * strings (with the marks that say which bytes came from the template), lists, dicts and the
 * string builder, and the Python semantics templates rely on: truthiness, ==, ordering,
 * str() and repr(), len() and iteration.
 *
 * Why reference counting rather than an arena: templates build strings in loops (a namespace
 * accumulating text, a concatenation per message); an arena would keep every intermediate
 * string until the end, so memory would grow with the square of the conversation. Cycles can
 * only go through namespaces (the one mutable object), and the renderer breaks those at the
 * end of a render (jinja_render.c). */
#include "chat/jinja.h"

#include "core/error.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors and caps ------------------------------------------------------------------- */

static int vfail(jctx *c, plumb_status st, const char *fmt, va_list ap) {
    if (!c->failed) {
        c->failed = true;
        c->st = st;
        vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    }
    return -1;
}

int jfail(jctx *c, plumb_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(c, st, fmt, ap);
    va_end(ap);
    return -1;
}

int jfail_at(jctx *c, uint32_t line, uint32_t col, plumb_status st, const char *fmt, ...) {
    if (!c->failed) {
        c->line = line;
        c->col = col;
        c->pos_set = true;
    }
    va_list ap;
    va_start(ap, fmt);
    vfail(c, st, fmt, ap);
    va_end(ap);
    return -1;
}

int jwork(jctx *c, uint64_t n) {
    if (c->failed) return -1;
    if (n > c->lim.max_work || c->work > c->lim.max_work - n)
        return jfail(c, PLUMB_E_RANGE, "the render takes more than %llu units of work (max_work)",
                     (unsigned long long)c->lim.max_work);
    c->work += n;
    return 0;
}

int jiter_count(jctx *c, uint64_t n) {
    if (c->failed) return -1;
    if (n > c->lim.max_iterations || c->iterations > c->lim.max_iterations - n)
        return jfail(c, PLUMB_E_RANGE, "more than %llu loop iterations (max_iterations)",
                     (unsigned long long)c->lim.max_iterations);
    c->iterations += n;
    return 0;
}

int jdepth_in(jctx *c) {
    if (c->depth >= c->max_rdepth)
        return jfail(c, PLUMB_E_RANGE, "recursion deeper than %u levels (max_depth)", c->max_rdepth);
    c->depth++;
    return 0;
}

/* ---- memory ------------------------------------------------------------------------------ */

/* Each block carries its size in front, so that frees can be counted. */
typedef union jhdr {
    size_t n;
    max_align_t align;
} jhdr;

void *jalloc(jctx *c, size_t n) {
    if (c->failed) return NULL;
    size_t cap = c->lim.max_memory;
    if (n > cap - sizeof(jhdr) || c->mem_used > cap - sizeof(jhdr) - n) {
        jfail(c, PLUMB_E_RANGE, "the render needs more than %zu bytes of memory (max_memory)", cap);
        return NULL;
    }
    if (jwork(c, n)) return NULL;
    jhdr *h = malloc(sizeof(jhdr) + n);
    if (!h) {
        jfail(c, PLUMB_E_NOMEM, "out of memory for %zu bytes", n);
        return NULL;
    }
    h->n = n;
    c->mem_used += sizeof(jhdr) + n;
    return h + 1;
}

void *jrealloc(jctx *c, void *p, size_t n) {
    if (!p) return jalloc(c, n);
    if (c->failed) return NULL;
    jhdr *h = (jhdr *)p - 1;
    size_t old = h->n, cap = c->lim.max_memory;
    if (n > old) {
        size_t grow = n - old;
        if (grow > cap || c->mem_used > cap - grow) {
            jfail(c, PLUMB_E_RANGE, "the render needs more than %zu bytes of memory (max_memory)", cap);
            return NULL;
        }
        if (jwork(c, grow)) return NULL;
    }
    jhdr *nh = realloc(h, sizeof(jhdr) + n);
    if (!nh) {
        jfail(c, PLUMB_E_NOMEM, "out of memory for %zu bytes", n);
        return NULL;
    }
    nh->n = n;
    c->mem_used = c->mem_used - old + n;
    return nh + 1;
}

void jfree(jctx *c, void *p) {
    if (!p) return;
    jhdr *h = (jhdr *)p - 1;
    c->mem_used -= sizeof(jhdr) + h->n;
    free(h);
}

/* ---- the C locale ------------------------------------------------------------------------ */

/* Python formats and parses numbers the same way whatever the locale; the C library does not,
 * and a program using plumb may have set LC_NUMERIC. */
static locale_t c_loc;
static pthread_once_t c_loc_once = PTHREAD_ONCE_INIT;
static void c_loc_init(void) { c_loc = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static locale_t the_c_locale(void) {
    pthread_once(&c_loc_once, c_loc_init);
    return c_loc;
}

double jstrtod(const char *s, char **end) {
    locale_t l = the_c_locale();
    return l ? strtod_l(s, end, l) : strtod(s, end);
}

int jfmt_c(char *buf, size_t size, const char *fmt, ...) {
    locale_t l = the_c_locale(), old = l ? uselocale(l) : (locale_t)0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (l) uselocale(old);
    return n;
}

size_t jstrftime_c(char *buf, size_t size, const char *fmt, const void *tm) {
    locale_t l = the_c_locale();
    return l ? strftime_l(buf, size, fmt, (const struct tm *)tm, l) : strftime(buf, size, fmt, (const struct tm *)tm);
}

/* ---- strings ----------------------------------------------------------------------------- */

static bool all_ascii(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80) return false;
    return true;
}

/* A string of n bytes with room for m marks (data uninitialized). */
static jstr *str_alloc(jctx *c, size_t n, size_t m) {
    if (n > c->lim.max_output) {
        jfail(c, PLUMB_E_RANGE, "a string of more than %zu bytes (max_output)", c->lim.max_output);
        return NULL;
    }
    size_t data_end = sizeof(jstr) + n + 1;
    size_t marks_at = (data_end + _Alignof(plumb_span) - 1) & ~(size_t)(_Alignof(plumb_span) - 1);
    if (m > (SIZE_MAX - marks_at) / sizeof(plumb_span)) {
        jfail(c, PLUMB_E_RANGE, "string too large");
        return NULL;
    }
    jstr *s = jalloc(c, marks_at + m * sizeof(plumb_span));
    if (!s) return NULL;
    s->rc = 1;
    s->len = n;
    s->n_marks = m;
    s->marks = m ? (plumb_span *)((char *)s + marks_at) : NULL;
    s->ascii = true;
    s->markup = false;
    s->data[n] = '\0';
    return s;
}

jstr *jstr_new(jctx *c, const char *p, size_t n, bool marked) {
    bool m = marked && n > 0;
    jstr *s = str_alloc(c, n, m ? 1 : 0);
    if (!s) return NULL;
    if (n) memcpy(s->data, p, n);
    s->ascii = all_ascii(p, n);
    if (m) s->marks[0] = (plumb_span){0, n};
    return s;
}

size_t jstr_ncp(const jstr *s) {
    if (s->ascii) return s->len;
    size_t n = 0;
    for (size_t i = 0; i < s->len; i++)
        if (((unsigned char)s->data[i] & 0xC0) != 0x80) n++;
    return n;
}

size_t jstr_cp_off(const jstr *s, size_t i) {
    if (s->ascii) return i < s->len ? i : s->len;
    size_t k = 0, off = 0;
    while (off < s->len) {
        if (k == i) return off;
        off++;
        while (off < s->len && ((unsigned char)s->data[off] & 0xC0) == 0x80) off++;
        k++;
    }
    return s->len;
}

/* ---- the string builder ------------------------------------------------------------------ */

void jsb_init(jsb *b, jctx *c) { *b = (jsb){.c = c, .ascii = true}; }

void jsb_drop(jsb *b) {
    jfree(b->c, b->buf);
    jfree(b->c, b->marks);
    jsb_init(b, b->c);
}

static int sb_reserve(jsb *b, size_t extra) {
    jctx *c = b->c;
    if (c->failed) return -1;
    if (extra > c->lim.max_output || b->len > c->lim.max_output - extra)
        return jfail(c, PLUMB_E_RANGE, "text longer than %zu bytes (max_output)", c->lim.max_output);
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > c->lim.max_output + 1) cap = c->lim.max_output + 1;
    if (cap < need) cap = need;
    char *nb = jrealloc(c, b->buf, cap);
    if (!nb) return -1;
    b->buf = nb;
    b->cap = cap;
    return 0;
}

/* Marks [at, at+n) of the builder as template text, merging with the last mark. */
static int sb_mark(jsb *b, size_t at, size_t n) {
    if (n == 0) return 0;
    if (b->n_marks && b->marks[b->n_marks - 1].off + b->marks[b->n_marks - 1].len == at) {
        b->marks[b->n_marks - 1].len += n;
        return 0;
    }
    if (b->n_marks == b->cap_marks) {
        size_t cap = b->cap_marks ? b->cap_marks * 2 : 8;
        plumb_span *nm = jrealloc(b->c, b->marks, cap * sizeof *nm);
        if (!nm) return -1;
        b->marks = nm;
        b->cap_marks = cap;
    }
    b->marks[b->n_marks++] = (plumb_span){at, n};
    return 0;
}

int jsb_put(jsb *b, const char *p, size_t n, bool marked) {
    if (sb_reserve(b, n)) return -1;
    size_t at = b->len;
    if (n) memcpy(b->buf + at, p, n);
    b->len += n;
    if (b->ascii && !all_ascii(p, n)) b->ascii = false;
    return marked ? sb_mark(b, at, n) : 0;
}

int jsb_putc(jsb *b, char ch) {
    if (sb_reserve(b, 1)) return -1;
    b->buf[b->len++] = ch;
    if ((unsigned char)ch >= 0x80) b->ascii = false;
    return 0;
}

int jsb_put_range(jsb *b, const jstr *s, size_t a, size_t e) {
    if (e > s->len) e = s->len;
    if (a >= e) return b->c->failed ? -1 : 0;
    if (sb_reserve(b, e - a)) return -1;
    size_t at = b->len;
    memcpy(b->buf + at, s->data + a, e - a);
    b->len += e - a;
    if (b->ascii && !s->ascii && !all_ascii(s->data + a, e - a)) b->ascii = false;
    for (size_t i = 0; i < s->n_marks; i++) {
        size_t mo = s->marks[i].off, me = mo + s->marks[i].len;
        if (me <= a) continue;
        if (mo >= e) break;
        size_t lo = mo > a ? mo : a, hi = me < e ? me : e;
        if (sb_mark(b, at + (lo - a), hi - lo)) return -1;
    }
    return 0;
}

int jsb_put_str(jsb *b, const jstr *s) { return jsb_put_range(b, s, 0, s->len); }

jstr *jsb_finish(jsb *b) {
    jctx *c = b->c;
    jstr *s = c->failed ? NULL : str_alloc(c, b->len, b->n_marks);
    if (s) {
        if (b->len) memcpy(s->data, b->buf, b->len);
        if (b->n_marks) memcpy(s->marks, b->marks, b->n_marks * sizeof *s->marks);
        s->ascii = b->ascii;
    }
    jsb_drop(b);
    return s;
}

/* ---- lists and dicts ---------------------------------------------------------------------- */

/* How deep a value nests (what freeing or walking it recurses through). */
uint32_t jv_depth(jval v) {
    switch (v.t) {
    case JT_MACRO: return v.u.m->depth;
    case JT_LIST: return v.u.l->depth;
    case JT_DICT: return v.u.d->depth;
    case JT_ITER: return v.u.it->items ? v.u.it->items->depth + 1 : 1;
    case JT_LOOP: return v.u.lp->items ? v.u.lp->items->depth + 1 : 1;
    case JT_FUNC: return jv_depth(v.u.fn->self) + 1;
    default: return 0;
    }
}

jlist *jlist_new(jctx *c, size_t n, uint8_t kind) {
    if (n > (SIZE_MAX - sizeof(jlist)) / sizeof(jval)) {
        jfail(c, PLUMB_E_RANGE, "list too long");
        return NULL;
    }
    jlist *l = jalloc(c, sizeof(jlist) + n * sizeof(jval));
    if (!l) return NULL;
    l->rc = 1;
    l->n = n;
    l->depth = 1;
    l->kind = kind;
    l->r_start = l->r_stop = l->r_step = 0;
    for (size_t i = 0; i < n; i++) l->v[i] = jv_undef();
    return l;
}

int jlist_seal(jctx *c, jlist *l) {
    uint32_t d = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint32_t k = jv_depth(l->v[i]);
        if (k > d) d = k;
    }
    l->depth = d + 1;
    if (l->depth > c->max_vdepth) return jfail(c, PLUMB_E_RANGE, "a value nested deeper than %u levels", c->max_vdepth);
    return 0;
}

int jvec_push(jctx *c, jvec *x, jval v) {
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 8;
        jval *nv = jrealloc(c, x->v, cap * sizeof *nv);
        if (!nv) {
            jv_release(c, v);
            return -1;
        }
        x->v = nv;
        x->cap = cap;
    }
    x->v[x->n++] = v;
    return 0;
}

void jvec_drop(jctx *c, jvec *x) {
    for (size_t i = 0; i < x->n; i++) jv_release(c, x->v[i]);
    jfree(c, x->v);
    *x = (jvec){0};
}

int jvec_list(jctx *c, jvec *x, bool rev, jlist **out) {
    jlist *l = jlist_new(c, x->n, JL_LIST);
    if (!l) {
        jvec_drop(c, x);
        return -1;
    }
    for (size_t i = 0; i < x->n; i++) l->v[i] = x->v[rev ? x->n - 1 - i : i];
    jfree(c, x->v);
    *x = (jvec){0};
    *out = l;
    return jlist_seal(c, l);
}

int jv_pair(jctx *c, jval a, jval b, jval *out) {
    jlist *t = jlist_new(c, 2, JL_TUPLE);
    if (!t) return -1;
    t->v[0] = jv_retain(a);
    t->v[1] = jv_retain(b);
    jval p = jv_list(t);
    if (jlist_seal(c, t)) {
        jv_release(c, p);
        return -1;
    }
    *out = p;
    return 0;
}

jdict *jdict_new(jctx *c) {
    jdict *d = jalloc(c, sizeof *d);
    if (!d) return NULL;
    *d = (jdict){.rc = 1, .depth = 1};
    return d;
}

bool jv_hashable(jval v) {
    switch (v.t) {
    case JT_LIST:
        if (v.u.l->kind == JL_RANGE) return true;
        if (v.u.l->kind != JL_TUPLE) return false;
        for (size_t i = 0; i < v.u.l->n; i++)
            if (!jv_hashable(v.u.l->v[i])) return false;
        return true;
    case JT_DICT: return false;
    default: return true;
    }
}

long jdict_find_str(const jdict *d, const char *p, size_t n) {
    for (size_t i = 0; i < d->n; i++) {
        jval k = d->k[i];
        if (k.t == JT_STR && k.u.s->len == n && memcmp(k.u.s->data, p, n) == 0) return (long)i;
    }
    return -1;
}

int jdict_find(jctx *c, const jdict *d, jval k, size_t *idx, bool *found) {
    *found = false;
    if (!jv_hashable(k)) return 0;
    if (jwork(c, (uint64_t)d->n * 4)) return -1;
    if (k.t == JT_STR) {
        long i = jdict_find_str(d, k.u.s->data, k.u.s->len);
        if (i >= 0) *idx = (size_t)i, *found = true;
        return 0;
    }
    for (size_t i = 0; i < d->n; i++) {
        bool eq;
        if (jv_eq(c, d->k[i], k, &eq)) return -1;
        if (eq) {
            *idx = i;
            *found = true;
            return 0;
        }
    }
    return 0;
}

int jdict_set(jctx *c, jdict *d, jval k, jval v) {
    if (!jv_hashable(k)) {
        jfail(c, PLUMB_E_INVALID_ARG, "unhashable type: '%s'", jv_type_name(k));
        goto fail;
    }
    size_t idx;
    bool found;
    if (jdict_find(c, d, k, &idx, &found)) goto fail;
    if (found) {
        jv_release(c, d->v[idx]);
        d->v[idx] = v;
        jv_release(c, k);
    } else {
        if (d->n == d->cap) {
            size_t cap = d->cap ? d->cap * 2 : 4;
            jval *nk = jrealloc(c, d->k, cap * sizeof *nk);
            if (!nk) goto fail;
            d->k = nk;
            jval *nv = jrealloc(c, d->v, cap * sizeof *nv);
            if (!nv) goto fail;
            d->v = nv;
            d->cap = cap;
        }
        d->k[d->n] = k;
        d->v[d->n] = v;
        d->n++;
    }
    uint32_t dk = jv_depth(k), dv = jv_depth(v), dd = (dk > dv ? dk : dv) + 1;
    if (dd > d->depth) d->depth = dd;
    if (d->depth > c->max_vdepth) return jfail(c, PLUMB_E_RANGE, "a value nested deeper than %u levels", c->max_vdepth);
    return 0;
fail:
    jv_release(c, k);
    jv_release(c, v);
    return -1;
}

/* ---- release ----------------------------------------------------------------------------- */

static void scope_release(jctx *c, jscope *s) {
    if (!s || --s->rc) return;
    for (size_t i = 0; i < s->n; i++) jv_release(c, s->vals[i]);
    jfree(c, s->names);
    jfree(c, s->vals);
    jfree(c, s);
}

void jv_release(jctx *c, jval v) {
    if (!jv_heap(v) || --*v.u.rc) return;
    switch (v.t) {
    case JT_STR: jfree(c, v.u.s); break;
    case JT_LIST:
        for (size_t i = 0; i < v.u.l->n; i++) jv_release(c, v.u.l->v[i]);
        jfree(c, v.u.l);
        break;
    case JT_DICT: {
        jdict *d = v.u.d;
        for (size_t i = 0; i < d->n; i++) {
            jv_release(c, d->k[i]);
            jv_release(c, d->v[i]);
        }
        jfree(c, d->k);
        jfree(c, d->v);
        jfree(c, d);
        break;
    }
    case JT_NS:
        if (v.u.ns->attrs) jv_release(c, jv_dict(v.u.ns->attrs));
        jfree(c, v.u.ns);
        break;
    case JT_MACRO:
        scope_release(c, v.u.m->closure);
        jfree(c, v.u.m);
        break;
    case JT_FUNC:
        jv_release(c, v.u.fn->self);
        jfree(c, v.u.fn);
        break;
    case JT_LOOP:
        if (v.u.lp->items) jv_release(c, jv_list(v.u.lp->items));
        jfree(c, v.u.lp);
        break;
    case JT_ITER:
        if (v.u.it->items) jv_release(c, jv_list(v.u.it->items));
        jfree(c, v.u.it);
        break;
    default: break;
    }
}

const char *jv_type_name(jval v) {
    switch (v.t) {
    case JT_UNDEF: return "Undefined";
    case JT_NONE: return "NoneType";
    case JT_BOOL: return "bool";
    case JT_INT: return "int";
    case JT_FLOAT: return "float";
    case JT_STR: return "str";
    case JT_LIST:
        switch (v.u.l->kind) {
        case JL_TUPLE: return "tuple";
        case JL_RANGE: return "range";
        case JL_KEYS: return "dict_keys";
        case JL_VALUES: return "dict_values";
        case JL_ITEMS: return "dict_items";
        default: return "list";
        }
    case JT_DICT: return "dict";
    case JT_NS: return "Namespace";
    case JT_MACRO: return "Macro";
    case JT_FUNC: return "builtin_function_or_method";
    case JT_LOOP: return "LoopContext";
    case JT_ITER: return "generator";
    }
    return "object";
}

/* ---- Python semantics -------------------------------------------------------------------- */

bool jv_truthy(jval v) {
    switch (v.t) {
    case JT_UNDEF:
    case JT_NONE: return false;
    case JT_BOOL: return v.u.b;
    case JT_INT: return v.u.i != 0;
    case JT_FLOAT: return v.u.f != 0.0;
    case JT_STR: return v.u.s->len > 0;
    case JT_LIST: return v.u.l->n > 0;
    case JT_DICT: return v.u.d->n > 0;
    default: return true;
    }
}

bool jv_as_double(jval v, double *out) {
    switch (v.t) {
    case JT_BOOL: *out = v.u.b; return true;
    case JT_INT: *out = (double)v.u.i; return true;
    case JT_FLOAT: *out = v.u.f; return true;
    default: return false;
    }
}

/* Exact comparison of two numbers (Python compares int and float exactly): -1, 0, 1, or 2
 * when unordered (NaN). */
static int num_cmp(jval a, jval b) {
    if (a.t != JT_FLOAT && b.t != JT_FLOAT) {
        int64_t x = a.t == JT_BOOL ? a.u.b : a.u.i, y = b.t == JT_BOOL ? b.u.b : b.u.i;
        return x < y ? -1 : x > y;
    }
    long double x = a.t == JT_FLOAT ? (long double)a.u.f : a.t == JT_BOOL ? (long double)a.u.b : (long double)a.u.i;
    long double y = b.t == JT_FLOAT ? (long double)b.u.f : b.t == JT_BOOL ? (long double)b.u.b : (long double)b.u.i;
    if (isnan(x) || isnan(y)) return 2;
    return x < y ? -1 : x > y;
}

/* Set-like equality of dict views (keys, items): same size, every element of a in b. */
static int view_eq(jctx *c, const jlist *a, const jlist *b, bool *out) {
    *out = false;
    if (a->n != b->n) return 0;
    if (jwork(c, (uint64_t)a->n * b->n * JW_CMP)) return -1;
    for (size_t i = 0; i < a->n; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n && !found; j++)
            if (jv_eq(c, a->v[i], b->v[j], &found)) return -1;
        if (!found) return 0;
    }
    *out = true;
    return 0;
}

int jv_eq(jctx *c, jval a, jval b, bool *out) {
    *out = false;
    if (jv_is_number(a) && jv_is_number(b)) {
        *out = num_cmp(a, b) == 0;
        return 0;
    }
    if (a.t != b.t) return 0;
    switch (a.t) {
    case JT_UNDEF:
    case JT_NONE: *out = true; return 0;
    case JT_STR:
        if (a.u.s->len == b.u.s->len && jwork(c, a.u.s->len / 8)) return -1;
        *out = a.u.s->len == b.u.s->len && memcmp(a.u.s->data, b.u.s->data, a.u.s->len) == 0;
        return 0;
    case JT_LIST: {
        const jlist *x = a.u.l, *y = b.u.l;
        if (x == y) {
            *out = true;
            return 0;
        }
        if (jwork(c, (uint64_t)x->n * JW_CMP)) return -1;
        bool seq_x = x->kind == JL_LIST || x->kind == JL_TUPLE || x->kind == JL_RANGE;
        if (x->kind != y->kind) return 0;
        if (x->kind == JL_VALUES) return 0; /* dict_values compare by identity */
        if (jdepth_in(c)) return -1;
        int rv = 0;
        if (!seq_x) {
            rv = view_eq(c, x, y, out);
        } else if (x->n == y->n) {
            bool eq = true;
            for (size_t i = 0; i < x->n && eq; i++)
                if (jv_eq(c, x->v[i], y->v[i], &eq)) {
                    rv = -1;
                    break;
                }
            *out = rv == 0 && eq;
        }
        jdepth_out(c);
        return rv;
    }
    case JT_DICT: {
        const jdict *x = a.u.d, *y = b.u.d;
        if (x == y) {
            *out = true;
            return 0;
        }
        if (x->n != y->n) return 0;
        if (jwork(c, (uint64_t)x->n * JW_CMP) || jdepth_in(c)) return -1;
        bool eq = true;
        int rv = 0;
        for (size_t i = 0; i < x->n && eq; i++) {
            size_t j;
            bool found;
            if (jdict_find(c, y, x->k[i], &j, &found) || (found && jv_eq(c, x->v[i], y->v[j], &eq))) {
                rv = -1;
                break;
            }
            if (!found) eq = false;
        }
        jdepth_out(c);
        *out = rv == 0 && eq;
        return rv;
    }
    default: *out = a.u.rc == b.u.rc; return 0; /* identity */
    }
}

static int order_fail(jctx *c, int op, jval a, jval b) {
    const char *s = op == OP_LT ? "<" : op == OP_LE ? "<=" : op == OP_GT ? ">" : ">=";
    return jfail(c, PLUMB_E_INVALID_ARG, "'%s' not supported between instances of '%s' and '%s'", s, jv_type_name(a),
                 jv_type_name(b));
}

int jv_order(jctx *c, jval a, jval b, int op, bool *out) {
    *out = false;
    int cmp;
    if (jv_is_number(a) && jv_is_number(b)) {
        cmp = num_cmp(a, b);
        if (cmp == 2) return 0;
    } else if (a.t == JT_STR && b.t == JT_STR) {
        size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        if (jwork(c, n / 8)) return -1;
        int m = memcmp(a.u.s->data, b.u.s->data, n);
        cmp = m < 0 ? -1 : m > 0 ? 1 : a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len;
    } else if (a.t == JT_LIST && b.t == JT_LIST && a.u.l->kind == b.u.l->kind &&
               (a.u.l->kind == JL_LIST || a.u.l->kind == JL_TUPLE)) {
        const jlist *x = a.u.l, *y = b.u.l;
        if (jwork(c, (uint64_t)(x->n < y->n ? x->n : y->n) * JW_CMP) || jdepth_in(c)) return -1;
        size_t i = 0;
        for (; i < x->n && i < y->n; i++) {
            bool eq;
            if (jv_eq(c, x->v[i], y->v[i], &eq)) {
                jdepth_out(c);
                return -1;
            }
            if (!eq) break;
        }
        int rv;
        if (i < x->n && i < y->n) {
            rv = jv_order(c, x->v[i], y->v[i], op, out);
            jdepth_out(c);
            return rv;
        }
        jdepth_out(c);
        cmp = x->n < y->n ? -1 : x->n > y->n;
    } else {
        return order_fail(c, op, a, b);
    }
    switch (op) {
    case OP_LT: *out = cmp < 0; break;
    case OP_LE: *out = cmp <= 0; break;
    case OP_GT: *out = cmp > 0; break;
    default: *out = cmp >= 0; break;
    }
    return 0;
}

int jv_lt(jctx *c, jval a, jval b, bool *out) { return jv_order(c, a, b, OP_LT, out); }

int jsort_idx(jctx *c, size_t *idx, size_t n, int (*lt)(void *ctx, size_t a, size_t b, bool *out), void *ctx) {
    if (n < 2) return 0;
    size_t *tmp = jalloc(c, n * sizeof *tmp);
    if (!tmp) return -1;
    /* bottom-up: runs of width w are merged pairwise; a tie takes the left run (stable) */
    for (size_t w = 1; w < n; w *= 2) {
        if (jwork(c, (uint64_t)n * JW_CMP)) goto fail;
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                bool less;
                if (lt(ctx, idx[j], idx[i], &less)) goto fail;
                tmp[k++] = less ? idx[j++] : idx[i++];
            }
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
    jfree(c, tmp);
    return 0;
fail:
    jfree(c, tmp);
    return -1;
}

int jv_len(jctx *c, jval v, int64_t *out) {
    switch (v.t) {
    case JT_UNDEF: *out = 0; return 0;
    case JT_STR:
        if (!v.u.s->ascii && jwork(c, v.u.s->len)) return -1;
        *out = (int64_t)jstr_ncp(v.u.s);
        return 0;
    case JT_LIST: *out = (int64_t)v.u.l->n; return 0;
    case JT_DICT: *out = (int64_t)v.u.d->n; return 0;
    default: return jfail(c, PLUMB_E_INVALID_ARG, "object of type '%s' has no len()", jv_type_name(v));
    }
}

int jv_iterate(jctx *c, jval v, jlist **out) {
    *out = NULL;
    switch (v.t) {
    case JT_UNDEF: *out = jlist_new(c, 0, JL_LIST); break;
    case JT_LIST:
        *out = v.u.l;
        v.u.l->rc++;
        return 0;
    case JT_DICT: {
        jdict *d = v.u.d;
        jlist *l = jlist_new(c, d->n, JL_LIST);
        if (!l) return -1;
        for (size_t i = 0; i < d->n; i++) l->v[i] = jv_retain(d->k[i]);
        l->depth = d->depth;
        *out = l;
        return 0;
    }
    case JT_STR: {
        const jstr *s = v.u.s;
        jlist *l = jlist_new(c, jstr_ncp(s), JL_LIST);
        if (!l) return -1;
        size_t off = 0;
        for (size_t i = 0; i < l->n; i++) {
            size_t e = off + 1;
            while (e < s->len && ((unsigned char)s->data[e] & 0xC0) == 0x80) e++;
            jsb b;
            jsb_init(&b, c);
            jstr *ch = jsb_put_range(&b, s, off, e) ? (jsb_drop(&b), NULL) : jsb_finish(&b);
            if (!ch) {
                jv_release(c, jv_list(l));
                return -1;
            }
            l->v[i] = jv_str(ch);
            off = e;
        }
        *out = l;
        return 0;
    }
    case JT_ITER: {
        jiter *it = v.u.it;
        size_t n = it->items ? it->items->n - it->pos : 0;
        jlist *l = jlist_new(c, n, JL_LIST);
        if (!l) return -1;
        for (size_t i = 0; i < n; i++) l->v[i] = jv_retain(it->items->v[it->pos + i]);
        it->pos += n;
        l->depth = it->items ? it->items->depth : 1;
        *out = l;
        return 0;
    }
    default: return jfail(c, PLUMB_E_INVALID_ARG, "'%s' object is not iterable", jv_type_name(v));
    }
    return *out ? 0 : -1;
}

/* ---- str() and repr() -------------------------------------------------------------------- */

size_t jfloat_repr(double f, char *buf) {
    if (isnan(f)) return (size_t)snprintf(buf, 32, "nan");
    if (isinf(f)) return (size_t)snprintf(buf, 32, f < 0 ? "-inf" : "inf");
    if (f == 0) return (size_t)snprintf(buf, 32, signbit(f) ? "-0.0" : "0.0");
    /* The shortest digits that read back as f (what Python's repr uses). */
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        jfmt_c(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (jstrtod(tmp, NULL) == f) break;
    }
    /* tmp is [-]d[.ddd]e(+|-)XX */
    const char *p = tmp;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    size_t nd = 0;
    while (*p && *p != 'e') {
        if (*p != '.' && nd < sizeof digits - 1) digits[nd++] = *p;
        p++;
    }
    int e = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    char *o = buf;
    if (neg) *o++ = '-';
    if (e >= -4 && e < 16) {
        int decpt = e + 1; /* digits before the point */
        if (decpt <= 0) {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -decpt; i++) *o++ = '0';
            memcpy(o, digits, nd);
            o += nd;
        } else if ((size_t)decpt >= nd) {
            memcpy(o, digits, nd);
            o += nd;
            for (size_t i = nd; i < (size_t)decpt; i++) *o++ = '0';
            *o++ = '.';
            *o++ = '0';
        } else {
            memcpy(o, digits, (size_t)decpt);
            o += decpt;
            *o++ = '.';
            memcpy(o, digits + decpt, nd - (size_t)decpt);
            o += nd - (size_t)decpt;
        }
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, nd - 1);
            o += nd - 1;
        }
        o += snprintf(o, 8, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    *o = '\0';
    return (size_t)(o - buf);
}

static int put_int(jsb *b, int64_t i) {
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)i);
    return jsb_put(b, t, (size_t)n, false);
}

static int put_float(jsb *b, double f) {
    char t[40];
    size_t n = jfloat_repr(f, t);
    return jsb_put(b, t, n, false);
}

/* Python's repr of a str. */
static int repr_str(jsb *b, const jstr *s) {
    bool sq = memchr(s->data, '\'', s->len) != NULL, dq = memchr(s->data, '"', s->len) != NULL;
    char quote = sq && !dq ? '"' : '\'';
    if (jsb_putc(b, quote)) return -1;
    const unsigned char *p = (const unsigned char *)s->data;
    size_t i = 0;
    while (i < s->len) {
        uint32_t cp;
        size_t l = utf8_dec(p + i, s->len - i, &cp);
        char t[16];
        int rv;
        if (cp == (uint32_t)quote || cp == '\\') {
            t[0] = '\\';
            t[1] = (char)cp;
            rv = jsb_put(b, t, 2, false);
        } else if (cp == '\t')
            rv = jsb_put(b, "\\t", 2, false);
        else if (cp == '\n')
            rv = jsb_put(b, "\\n", 2, false);
        else if (cp == '\r')
            rv = jsb_put(b, "\\r", 2, false);
        else if (cp < 0x20 || cp == 0x7f)
            rv = jsb_put(b, t, (size_t)snprintf(t, sizeof t, "\\x%02x", cp), false);
        else if (cp < 0x7f || u_isprintable(cp))
            rv = jsb_put(b, (const char *)p + i, l, false);
        else if (cp <= 0xff)
            rv = jsb_put(b, t, (size_t)snprintf(t, sizeof t, "\\x%02x", cp), false);
        else if (cp <= 0xffff)
            rv = jsb_put(b, t, (size_t)snprintf(t, sizeof t, "\\u%04x", cp), false);
        else
            rv = jsb_put(b, t, (size_t)snprintf(t, sizeof t, "\\U%08x", cp), false);
        if (rv) return -1;
        i += l;
    }
    return jsb_putc(b, quote);
}

static int repr_items(jctx *c, jsb *b, const jval *v, size_t n, bool tuple1) {
    for (size_t i = 0; i < n; i++) {
        if (i && jsb_put(b, ", ", 2, false)) return -1;
        if (jv_repr_into(c, b, v[i])) return -1;
    }
    if (tuple1 && n == 1) return jsb_putc(b, ',');
    return 0;
}

static int repr_dict(jctx *c, jsb *b, const jdict *d) {
    if (jsb_putc(b, '{')) return -1;
    for (size_t i = 0; i < d->n; i++) {
        if (i && jsb_put(b, ", ", 2, false)) return -1;
        if (jv_repr_into(c, b, d->k[i]) || jsb_put(b, ": ", 2, false) || jv_repr_into(c, b, d->v[i])) return -1;
    }
    return jsb_putc(b, '}');
}

static int unprintable(jctx *c, jval v) {
    return jfail(c, PLUMB_E_UNSUPPORTED, "printing a '%s' object (Python would print its address)", jv_type_name(v));
}

int jv_repr_into(jctx *c, jsb *b, jval v) {
    if (jdepth_in(c)) return -1;
    int rv = 0;
    switch (v.t) {
    case JT_UNDEF: rv = jsb_puts(b, "Undefined", false); break;
    case JT_STR:
        if (v.u.s->markup)
            rv = jsb_puts(b, "Markup(", false) || repr_str(b, v.u.s) || jsb_putc(b, ')');
        else
            rv = repr_str(b, v.u.s);
        break;
    case JT_LIST: {
        const jlist *l = v.u.l;
        switch (l->kind) {
        case JL_TUPLE: rv = jsb_putc(b, '(') || repr_items(c, b, l->v, l->n, true) || jsb_putc(b, ')'); break;
        case JL_RANGE: {
            char t[96];
            int n = l->r_step == 1
                        ? snprintf(t, sizeof t, "range(%lld, %lld)", (long long)l->r_start, (long long)l->r_stop)
                        : snprintf(t, sizeof t, "range(%lld, %lld, %lld)", (long long)l->r_start, (long long)l->r_stop,
                                   (long long)l->r_step);
            rv = jsb_put(b, t, (size_t)n, false);
            break;
        }
        case JL_KEYS:
        case JL_VALUES:
        case JL_ITEMS: {
            const char *name = l->kind == JL_KEYS     ? "dict_keys(["
                               : l->kind == JL_VALUES ? "dict_values(["
                                                      : "dict_items([";
            rv = jsb_puts(b, name, false) || repr_items(c, b, l->v, l->n, false) || jsb_puts(b, "])", false);
            break;
        }
        default: rv = jsb_putc(b, '[') || repr_items(c, b, l->v, l->n, false) || jsb_putc(b, ']'); break;
        }
        break;
    }
    case JT_DICT: rv = repr_dict(c, b, v.u.d); break;
    case JT_NS: rv = jsb_puts(b, "<Namespace ", false) || repr_dict(c, b, v.u.ns->attrs) || jsb_putc(b, '>'); break;
    case JT_MACRO:
    case JT_FUNC:
    case JT_LOOP:
    case JT_ITER: rv = unprintable(c, v); break;
    default: rv = jv_str_into(c, b, v); break;
    }
    jdepth_out(c);
    return rv ? -1 : 0;
}

int jv_str_into(jctx *c, jsb *b, jval v) {
    switch (v.t) {
    case JT_UNDEF: return c->failed ? -1 : 0;
    case JT_NONE: return jsb_puts(b, "None", false);
    case JT_BOOL: return jsb_puts(b, v.u.b ? "True" : "False", false);
    case JT_INT: return put_int(b, v.u.i);
    case JT_FLOAT: return put_float(b, v.u.f);
    case JT_STR: return jsb_put_str(b, v.u.s);
    default: return jv_repr_into(c, b, v);
    }
}

int jv_to_str(jctx *c, jval v, jstr **out) {
    if (v.t == JT_STR) {
        v.u.s->rc++;
        *out = v.u.s;
        return 0;
    }
    jsb b;
    jsb_init(&b, c);
    if (jv_str_into(c, &b, v)) {
        jsb_drop(&b);
        return -1;
    }
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
}

int jv_ignore_case(jctx *c, jval v, jval *out) {
    if (v.t != JT_STR) {
        *out = jv_retain(v);
        return 0;
    }
    jstr *s;
    if (jtext_lower(c, v.u.s, &s)) return -1;
    *out = jv_str(s);
    return 0;
}

int jv_escape_into(jctx *c, jsb *b, jval v) {
    if (v.t == JT_STR && v.u.s->markup) return jsb_put_str(b, v.u.s);
    jstr *s;
    if (jv_to_str(c, v, &s)) return -1;
    size_t run = 0;
    int rv = 0;
    for (size_t i = 0; i < s->len && !rv; i++) {
        const char *ent = NULL;
        switch (s->data[i]) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '\'': ent = "&#39;"; break;
        case '"': ent = "&#34;"; break;
        default: continue;
        }
        rv = jsb_put_range(b, s, run, i) || jsb_puts(b, ent, false);
        run = i + 1;
    }
    if (!rv) rv = jsb_put_range(b, s, run, s->len);
    jv_release(c, jv_str(s));
    return rv ? -1 : 0;
}
