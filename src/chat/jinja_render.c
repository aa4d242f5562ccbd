/* jinja_render.c — the evaluator of plumb's Jinja engine and its public entry points
 * (plumb_template_render, plumb_template_check): scopes, expressions with Python's
 * semantics, statements, macro calls, and the output with its provenance marks.
 *
 * Scoping follows jinja2: the top level is one scope; each iteration of a for loop runs in a
 * fresh scope (an assignment in the body lasts until the iteration ends, which is why
 * templates use namespace() to carry state out); macro calls, with blocks, filter blocks
 * and block sets get their own scope; if blocks do not. A name is looked up through the
 * scopes, then the caller's variables, then the globals. A macro sees the top level as it is
 * when called, plus (when defined inside a loop or macro) the variables around its
 * definition, captured then.
 *
 * Output: text from the template is appended marked, everything printed from a value carries
 * the value's own marks (strings built from literals keep theirs through concatenation,
 * filters and macros), so the final marks are exactly the template's own bytes.
 *
 * Caps: every expression evaluated counts as work and recursion is bounded (jinja.h); loop
 * iterations count against max_iterations; all memory goes through jalloc. Namespaces, the
 * one mutable value, can form cycles (ns.self = ns); the render keeps every namespace it made
 * and clears their attributes at the end, which frees any cycle. */
#include "chat/jinja.h"

#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { X_OK = 0, X_ERR = -1, X_BREAK = 1, X_CONTINUE = 2 };

/* ---- scopes --------------------------------------------------------------------------------- */

static jscope *scope_new(jctx *c, jscope *parent) {
    jscope *s = jalloc(c, sizeof *s);
    if (!s) return NULL;
    *s = (jscope){.parent = parent, .rc = 1};
    return s;
}

static void scope_drop(jctx *c, jscope *s) {
    if (!s || --s->rc) return;
    for (size_t i = 0; i < s->n; i++) jv_release(c, s->vals[i]);
    jfree(c, s->names);
    jfree(c, s->vals);
    jfree(c, s);
}

static long scope_index(const jscope *s, const char *p, size_t n) {
    for (size_t i = s->n; i-- > 0;)
        if (s->names[i].n == n && memcmp(s->names[i].p, p, n) == 0) return (long)i;
    return -1;
}

/* Binds name in s (v owned). */
static int scope_set(jctx *c, jscope *s, jname name, jval v) {
    long i = scope_index(s, name.p, name.n);
    if (i >= 0) {
        jv_release(c, s->vals[i]);
        s->vals[i] = v;
        return 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        jname *nn = jrealloc(c, s->names, cap * sizeof *nn);
        if (!nn) goto fail;
        s->names = nn;
        jval *nv = jrealloc(c, s->vals, cap * sizeof *nv);
        if (!nv) goto fail;
        s->vals = nv;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n] = v;
    s->n++;
    return 0;
fail:
    jv_release(c, v);
    return -1;
}

static jval *scope_find(jscope *s, const char *p, size_t n) {
    for (; s; s = s->parent) {
        long i = scope_index(s, p, n);
        if (i >= 0) return &s->vals[i];
    }
    return NULL;
}

int jrender_add_ns(jrender *r, jns *ns) {
    if (r->n_nss == r->cap_nss) {
        size_t cap = r->cap_nss ? r->cap_nss * 2 : 8;
        jns **nn = jrealloc(r->c, r->nss, cap * sizeof *nn);
        if (!nn) return -1;
        r->nss = nn;
        r->cap_nss = cap;
    }
    ns->rc++;
    r->nss[r->n_nss++] = ns;
    return 0;
}

/* A name's value: the scopes, the caller's variables, the globals; else undefined. */
static int lookup(jrender *r, jscope *sc, const char *p, size_t n, int global_id, jval *out) {
    jval *v = scope_find(sc, p, n);
    if (v) {
        *out = jv_retain(*v);
        return 0;
    }
    if (r->vars) {
        if (jwork(r->c, (uint64_t)r->vars->n * 4)) return -1;
        long i = jdict_find_str(r->vars, p, n);
        if (i >= 0) {
            *out = jv_retain(r->vars->v[i]);
            return 0;
        }
    }
    if (global_id >= 0) {
        *out = jglobal_value(r->c, global_id);
        return out->t == JT_FUNC ? 0 : -1;
    }
    *out = jv_undef();
    return 0;
}

/* ---- arithmetic, membership --------------------------------------------------------------- */

static int undefined_op(jctx *c) {
    return jfail(c, PLUMB_E_INVALID_ARG, "%s", "an undefined value was used in an operation");
}

static const char *op_name(int op) {
    switch (op) {
    case OP_ADD: return "+";
    case OP_SUB: return "-";
    case OP_MUL: return "*";
    case OP_DIV: return "/";
    case OP_FLOORDIV: return "//";
    case OP_MOD: return "%";
    default: return "**";
    }
}

static int bad_operands(jctx *c, int op, jval a, jval b) {
    return jfail(c, PLUMB_E_INVALID_ARG, "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op),
                 jv_type_name(a), jv_type_name(b));
}

static int overflow(jctx *c) {
    return jfail(c, PLUMB_E_RANGE, "%s", "integer past 64 bits (Python would use a big integer)");
}

static int64_t as_int(jval v) { return v.t == JT_BOOL ? v.u.b : v.u.i; }

/* s repeated k times (str * int). */
static int repeat_str(jctx *c, const jstr *s, int64_t k, jval *out) {
    jsb b;
    jsb_init(&b, c);
    if (k > 0 && s->len && (uint64_t)k > c->lim.max_output / s->len)
        return jfail(c, PLUMB_E_RANGE, "text longer than %zu bytes (max_output)", c->lim.max_output);
    for (int64_t i = 0; i < k; i++)
        if (jsb_put_str(&b, s)) {
            jsb_drop(&b);
            return -1;
        }
    jstr *r = jsb_finish(&b);
    if (!r) return -1;
    *out = jv_str(r);
    return 0;
}

static int repeat_list(jctx *c, const jlist *l, int64_t k, jval *out) {
    if (l->kind != JL_LIST && l->kind != JL_TUPLE)
        return jfail(c, PLUMB_E_INVALID_ARG, "unsupported operand type(s) for *: '%s' and 'int'",
                     jv_type_name(jv_list((jlist *)l)));
    if (k < 0) k = 0;
    if (l->n && (uint64_t)k > c->lim.max_memory / sizeof(jval) / l->n)
        return jfail(c, PLUMB_E_RANGE, "%s", "list too long for max_memory");
    jlist *m = jlist_new(c, l->n * (size_t)k, l->kind == JL_TUPLE ? JL_TUPLE : JL_LIST);
    if (!m) return -1;
    for (size_t i = 0; i < m->n; i++) m->v[i] = jv_retain(l->v[i % l->n]);
    m->depth = l->depth;
    *out = jv_list(m);
    return 0;
}

/* str + str; a Markup side escapes the other (markupsafe's __add__ / __radd__). */
static int add_str(jctx *c, const jstr *a, const jstr *b, jval *out) {
    jsb o;
    jsb_init(&o, c);
    bool markup = a->markup || b->markup;
    int rv;
    if (a->markup && !b->markup)
        rv = jsb_put_str(&o, a) || jv_escape_into(c, &o, jv_str((jstr *)b));
    else if (!a->markup && b->markup)
        rv = jv_escape_into(c, &o, jv_str((jstr *)a)) || jsb_put_str(&o, b);
    else
        rv = jsb_put_str(&o, a) || jsb_put_str(&o, b);
    if (rv) {
        jsb_drop(&o);
        return -1;
    }
    jstr *s = jsb_finish(&o);
    if (!s) return -1;
    s->markup = markup;
    *out = jv_str(s);
    return 0;
}

/* Python's float floor division and modulo. */
static void float_divmod(double a, double b, double *fdiv, double *mod) {
    double m = fmod(a, b);
    double div = (a - m) / b;
    if (m != 0) {
        if ((b < 0) != (m < 0)) {
            m += b;
            div -= 1.0;
        }
    } else {
        m = copysign(0.0, b);
    }
    double fl;
    if (div != 0) {
        fl = floor(div);
        if (div - fl > 0.5) fl += 1.0;
    } else {
        fl = copysign(0.0, a / b);
    }
    *fdiv = fl;
    *mod = m;
}

int jarith(jrender *r, int op, jval a, jval b, jval *out) {
    jctx *c = r->c;
    *out = jv_undef();
    if (a.t == JT_UNDEF || (b.t == JT_UNDEF && !(op == OP_MOD && a.t == JT_STR))) return undefined_op(c);
    bool na = jv_is_number(a), nb = jv_is_number(b);
    if (op == OP_ADD && a.t == JT_STR && b.t == JT_STR) return add_str(c, a.u.s, b.u.s, out);
    if (op == OP_ADD && a.t == JT_LIST && b.t == JT_LIST) {
        const jlist *x = a.u.l, *y = b.u.l;
        if (!((x->kind == JL_LIST && y->kind == JL_LIST) || (x->kind == JL_TUPLE && y->kind == JL_TUPLE)))
            return jfail(c, PLUMB_E_INVALID_ARG, "can only concatenate %s (not \"%s\") to %s", jv_type_name(a),
                         jv_type_name(b), jv_type_name(a));
        jlist *m = jlist_new(c, x->n + y->n, x->kind);
        if (!m) return -1;
        for (size_t i = 0; i < x->n; i++) m->v[i] = jv_retain(x->v[i]);
        for (size_t i = 0; i < y->n; i++) m->v[x->n + i] = jv_retain(y->v[i]);
        m->depth = x->depth > y->depth ? x->depth : y->depth;
        *out = jv_list(m);
        return 0;
    }
    if (op == OP_MUL &&
        ((a.t == JT_STR && (b.t == JT_INT || b.t == JT_BOOL)) || (b.t == JT_STR && (a.t == JT_INT || a.t == JT_BOOL))))
        return a.t == JT_STR ? repeat_str(c, a.u.s, as_int(b), out) : repeat_str(c, b.u.s, as_int(a), out);
    if (op == OP_MUL && ((a.t == JT_LIST && (b.t == JT_INT || b.t == JT_BOOL)) ||
                         (b.t == JT_LIST && (a.t == JT_INT || a.t == JT_BOOL))))
        return a.t == JT_LIST ? repeat_list(c, a.u.l, as_int(b), out) : repeat_list(c, b.u.l, as_int(a), out);
    if (op == OP_MOD && a.t == JT_STR) {
        /* printf-style formatting: only a format without conversions is supported; Python gives
         * it back unchanged when the argument is an empty tuple or anything subscriptable */
        if (memchr(a.u.s->data, '%', a.u.s->len))
            return jfail(c, PLUMB_E_UNSUPPORTED, "%s", "printf-style string formatting (str % ...) is not supported");
        bool mapping =
            b.t == JT_DICT || b.t == JT_UNDEF || (b.t == JT_LIST && b.u.l->kind <= JL_RANGE && b.u.l->kind != JL_TUPLE);
        if (!(mapping || (b.t == JT_LIST && b.u.l->kind == JL_TUPLE && b.u.l->n == 0)))
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "not all arguments converted during string formatting");
        *out = jv_retain(a);
        return 0;
    }
    if (!na || !nb) {
        if (op == OP_ADD && a.t == JT_STR)
            return jfail(c, PLUMB_E_INVALID_ARG, "can only concatenate str (not \"%s\") to str", jv_type_name(b));
        return bad_operands(c, op, a, b);
    }
    if (a.t != JT_FLOAT && b.t != JT_FLOAT && op != OP_DIV) {
        int64_t x = as_int(a), y = as_int(b), z;
        switch (op) {
        case OP_ADD:
            if (__builtin_add_overflow(x, y, &z)) return overflow(c);
            break;
        case OP_SUB:
            if (__builtin_sub_overflow(x, y, &z)) return overflow(c);
            break;
        case OP_MUL:
            if (__builtin_mul_overflow(x, y, &z)) return overflow(c);
            break;
        case OP_FLOORDIV:
        case OP_MOD: {
            if (y == 0)
                return jfail(c, PLUMB_E_INVALID_ARG, "%s",
                             op == OP_MOD ? "integer modulo by zero" : "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) {
                if (op == OP_MOD)
                    z = 0;
                else
                    return overflow(c);
                break;
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            z = op == OP_MOD ? m : q;
            break;
        }
        default: /* ** */
            if (y < 0) {
                if (x == 0) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "0.0 cannot be raised to a negative power");
                *out = jv_float(pow((double)x, (double)y));
                return 0;
            }
            z = 1;
            {
                int64_t base = x, e = y;
                while (e > 0) {
                    if ((e & 1) && __builtin_mul_overflow(z, base, &z)) return overflow(c);
                    e >>= 1;
                    if (e && __builtin_mul_overflow(base, base, &base)) return overflow(c);
                }
            }
            break;
        }
        *out = jv_int(z);
        return 0;
    }
    double x, y;
    jv_as_double(a, &x);
    jv_as_double(b, &y);
    if ((a.t == JT_INT && fabs((double)a.u.i) > 9007199254740992.0) ||
        (b.t == JT_INT && fabs((double)b.u.i) > 9007199254740992.0)) {
        /* Python converts exactly or raises; plumb's doubles cannot promise either */
        if (a.t != JT_FLOAT && b.t != JT_FLOAT && op == OP_DIV) {
            *out = jv_float((double)((long double)as_int(a) / (long double)as_int(b)));
            if (as_int(b) == 0) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "division by zero");
            return 0;
        }
    }
    switch (op) {
    case OP_ADD: *out = jv_float(x + y); break;
    case OP_SUB: *out = jv_float(x - y); break;
    case OP_MUL: *out = jv_float(x * y); break;
    case OP_DIV:
        if (y == 0)
            return jfail(c, PLUMB_E_INVALID_ARG, "%s",
                         a.t == JT_FLOAT || b.t == JT_FLOAT ? "float division by zero" : "division by zero");
        *out = jv_float(x / y);
        break;
    case OP_FLOORDIV:
    case OP_MOD: {
        if (y == 0)
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", op == OP_MOD ? "float modulo" : "float floor division by zero");
        double fd, m;
        float_divmod(x, y, &fd, &m);
        *out = jv_float(op == OP_MOD ? m : fd);
        break;
    }
    default:
        if (x == 0 && y < 0) return jfail(c, PLUMB_E_INVALID_ARG, "%s", "0.0 cannot be raised to a negative power");
        if (x < 0 && y != floor(y))
            return jfail(c, PLUMB_E_UNSUPPORTED, "%s", "a negative number to a fractional power is complex in Python");
        *out = jv_float(pow(x, y));
        if (isinf(out->u.f) && !isinf(x) && !isinf(y))
            return jfail(c, PLUMB_E_RANGE, "%s", "(34, 'Numerical result out of range')");
        break;
    }
    return 0;
}

int jcontains(jrender *r, jval needle, jval hay, bool *out) {
    jctx *c = r->c;
    *out = false;
    switch (hay.t) {
    case JT_UNDEF: return 0;
    case JT_STR:
        if (needle.t != JT_STR)
            return jfail(c, PLUMB_E_INVALID_ARG, "'in <string>' requires string as left operand, not %s",
                         jv_type_name(needle));
        if (jwork(c, (uint64_t)hay.u.s->len * 2)) return -1;
        *out = jtext_find(hay.u.s, 0, hay.u.s->len, needle.u.s, false) >= 0;
        return 0;
    case JT_DICT: {
        size_t i;
        if (!jv_hashable(needle)) return jfail(c, PLUMB_E_INVALID_ARG, "unhashable type: '%s'", jv_type_name(needle));
        return jdict_find(c, hay.u.d, needle, &i, out);
    }
    case JT_LIST: {
        const jlist *l = hay.u.l;
        if (jwork(c, (uint64_t)l->n * JW_CMP)) return -1;
        for (size_t i = 0; i < l->n && !*out; i++)
            if (jv_eq(c, l->v[i], needle, out)) return -1;
        return 0;
    }
    case JT_ITER: {
        jiter *it = hay.u.it;
        while (it->items && it->pos < it->items->n && !*out) {
            if (jwork(c, JW_CMP) || jv_eq(c, it->items->v[it->pos++], needle, out)) return -1;
        }
        return 0;
    }
    default: return jfail(c, PLUMB_E_INVALID_ARG, "argument of type '%s' is not iterable", jv_type_name(hay));
    }
}

/* ---- expressions ------------------------------------------------------------------------------ */

static int eval(jrender *r, jscope *sc, const jnode *n, jval *out);
static int exec(jrender *r, jscope *sc, const jnode *n, jsb *out);

/* Records n's position for a failure that has none yet (the innermost node wins). */
static int fail_here(jrender *r, const jnode *n) {
    jctx *c = r->c;
    if (!c->pos_set) {
        c->pos_set = true;
        c->line = n->line;
        c->col = n->col;
    }
    return -1;
}

typedef struct evargs {
    jargs a;
    jval *mem;
    size_t n;
} evargs;

static void args_drop(jrender *r, evargs *ea) {
    for (size_t i = 0; i < ea->n; i++) jv_release(r->c, ea->mem[i]);
    jfree(r->c, ea->mem);
    *ea = (evargs){0};
}

/* The arguments of a call, filter or test node, evaluated. */
static int args_eval(jrender *r, jscope *sc, const jnode *n, evargs *ea) {
    *ea = (evargs){0};
    size_t total = (size_t)n->n_kids + n->n_kw;
    if (total == 0) return 0;
    ea->mem = jalloc(r->c, total * sizeof *ea->mem);
    if (!ea->mem) return -1;
    for (uint32_t i = 0; i < n->n_kids; i++) {
        if (eval(r, sc, n->kids[i], &ea->mem[ea->n])) goto fail;
        ea->n++;
    }
    for (uint32_t i = 0; i < n->n_kw; i++) {
        if (eval(r, sc, n->kw_vals[i], &ea->mem[ea->n])) goto fail;
        ea->n++;
    }
    ea->a = (jargs){
        .pos = ea->mem, .n_pos = n->n_kids, .kw_names = n->kw_names, .kw = ea->mem + n->n_kids, .n_kw = n->n_kw};
    return 0;
fail:
    args_drop(r, ea);
    return -1;
}

/* A slice bound: None (or absent) sets *given false; else an int. */
static int slice_bound(jctx *c, jval v, bool *given, int64_t *out) {
    *given = false;
    if (v.t == JT_NONE) return 0;
    if (v.t == JT_INT || v.t == JT_BOOL) {
        *out = as_int(v);
        *given = true;
        return 0;
    }
    return jfail(c, PLUMB_E_INVALID_ARG, "%s", "slice indices must be integers or None or have an __index__ method");
}

/* Python's PySlice_AdjustIndices: the first index and the count of a slice of len items. */
static void slice_adjust(int64_t len, bool has_start, int64_t start, bool has_stop, int64_t stop, int64_t step,
                         int64_t *ostart, int64_t *ostop, int64_t *ocount) {
    if (!has_start)
        start = step < 0 ? len - 1 : 0;
    else if (start < 0) {
        start += len;
        if (start < 0) start = step < 0 ? -1 : 0;
    } else if (start >= len) {
        start = step < 0 ? len - 1 : len;
    }
    if (!has_stop)
        stop = step < 0 ? -1 : len;
    else if (stop < 0) {
        stop += len;
        if (stop < 0) stop = step < 0 ? -1 : 0;
    } else if (stop >= len) {
        stop = step < 0 ? len - 1 : len;
    }
    int64_t count = 0;
    if (step > 0 && start < stop)
        count = (stop - start - 1) / step + 1;
    else if (step < 0 && stop < start)
        count = (start - stop - 1) / (-step) + 1;
    *ostart = start;
    *ostop = stop;
    *ocount = count;
}

static int eval_slice(jrender *r, jscope *sc, const jnode *n, jval *out) {
    jctx *c = r->c;
    jval obj, parts[3] = {jv_none(), jv_none(), jv_none()};
    if (eval(r, sc, n->a, &obj)) return -1;
    int rv = 0;
    for (int i = 0; i < 3 && !rv; i++)
        if (n->kids[i]) rv = eval(r, sc, n->kids[i], &parts[i]);
    bool hs, he, hp;
    int64_t s = 0, e = 0, st = 1;
    if (!rv)
        rv = slice_bound(c, parts[0], &hs, &s) || slice_bound(c, parts[1], &he, &e) ||
             slice_bound(c, parts[2], &hp, &st);
    if (!rv && hp && st == 0) rv = jfail(c, PLUMB_E_INVALID_ARG, "%s", "slice step cannot be zero");
    if (!rv && !hp) st = 1;
    if (!rv) {
        if (st == INT64_MIN) st = -INT64_MAX; /* Python clamps the step too */
        int64_t start, stop, count;
        if (obj.t == JT_STR) {
            if (!obj.u.s->ascii) rv = jwork(c, obj.u.s->len);
            int64_t len = (int64_t)jstr_ncp(obj.u.s);
            slice_adjust(len, hs, s, he, e, st, &start, &stop, &count);
            jstr *res;
            if (!rv) rv = jtext_slice(c, obj.u.s, start, st, count, &res);
            if (!rv) {
                res->markup = obj.u.s->markup;
                *out = jv_str(res);
            }
        } else if (obj.t == JT_LIST && obj.u.l->kind <= JL_RANGE) {
            const jlist *l = obj.u.l;
            slice_adjust((int64_t)l->n, hs, s, he, e, st, &start, &stop, &count);
            jlist *m = jlist_new(c, (size_t)count, l->kind);
            if (!m) rv = -1;
            for (int64_t i = 0; m && i < count; i++) m->v[i] = jv_retain(l->v[start + i * st]);
            if (m) {
                m->depth = l->depth;
                if (l->kind == JL_RANGE) {
                    m->r_step = l->r_step * st;
                    m->r_start = l->r_start + start * l->r_step; /* as Python's range slicing */
                    m->r_stop = l->r_start + stop * l->r_step;
                }
                *out = jv_list(m);
            }
        } else if (obj.t == JT_UNDEF) {
            rv = jfail(c, PLUMB_E_INVALID_ARG, "%s", "an undefined value cannot be sliced");
        } else {
            rv = jfail(c, PLUMB_E_INVALID_ARG, "'%s' object is not subscriptable", jv_type_name(obj));
        }
    }
    jv_release(c, obj);
    for (int i = 0; i < 3; i++) jv_release(c, parts[i]);
    return rv;
}

/* jinja2's UndefinedError for obj.what / obj[...] where obj is undefined. */
static int undefined_object(jrender *r, const jnode *obj, jname what) {
    if (obj->kind == N_NAME)
        return jfail(r->c, PLUMB_E_INVALID_ARG, "'%.*s' is undefined", (int)(obj->name.n < 64 ? obj->name.n : 64),
                     obj->name.p);
    return jfail(r->c, PLUMB_E_INVALID_ARG, "an undefined value has no attribute or item '%.*s'",
                 (int)(what.n < 64 ? what.n : 64), what.p);
}

static int call_value(jrender *r, const jnode *callee, jval f, const jargs *a, jval *out) {
    jctx *c = r->c;
    switch (f.t) {
    case JT_MACRO: return jrender_call_macro(r, f.u.m, a, out);
    case JT_FUNC: return jfunc_call(r, f.u.fn, a, out);
    case JT_UNDEF:
        if (callee->kind == N_NAME)
            return jfail(c, PLUMB_E_INVALID_ARG, "'%.*s' is undefined",
                         (int)(callee->name.n < 64 ? callee->name.n : 64), callee->name.p);
        return jfail(c, PLUMB_E_INVALID_ARG, "%s", "an undefined value was called");
    default: return jfail(c, PLUMB_E_INVALID_ARG, "'%s' object is not callable", jv_type_name(f));
    }
}

static int eval_call(jrender *r, jscope *sc, const jnode *n, jval *out) {
    jctx *c = r->c;
    jval f;
    const jnode *callee = n->a;
    if (callee->kind == N_GETATTR) {
        jval obj;
        if (eval(r, sc, callee->a, &obj)) return -1;
        int rv = jget_attr(r, obj, callee->name.p, callee->name.n, true, &f);
        if (!rv && f.t == JT_UNDEF && jmethod_unsafe(obj, callee->name.p, callee->name.n))
            rv = jfail(c, PLUMB_E_INVALID_ARG,
                       "access to attribute '%.*s' of '%s' object is unsafe (the sandbox is immutable)",
                       (int)(callee->name.n < 48 ? callee->name.n : 48), callee->name.p, jv_type_name(obj));
        jv_release(c, obj);
        if (rv) return fail_here(r, callee);
    } else if (eval(r, sc, callee, &f)) {
        return -1;
    }
    evargs ea;
    if (args_eval(r, sc, n, &ea)) {
        jv_release(c, f);
        return -1;
    }
    int rv = call_value(r, callee, f, &ea.a, out);
    args_drop(r, &ea);
    jv_release(c, f);
    return rv;
}

static int compare(jrender *r, int op, jval a, jval b, bool *out) {
    switch (op) {
    case OP_EQ: return jv_eq(r->c, a, b, out);
    case OP_NE:
        if (jv_eq(r->c, a, b, out)) return -1;
        *out = !*out;
        return 0;
    case OP_IN: return jcontains(r, a, b, out);
    case OP_NOTIN:
        if (jcontains(r, a, b, out)) return -1;
        *out = !*out;
        return 0;
    default:
        if (a.t == JT_UNDEF || b.t == JT_UNDEF) return undefined_op(r->c);
        return jv_order(r->c, a, b, op, out);
    }
}

static int eval_node(jrender *r, jscope *sc, const jnode *n, jval *out) {
    jctx *c = r->c;
    jval a, b;
    int rv;
    switch (n->kind) {
    case N_CONST: *out = jv_retain(n->lit); return 0;
    case N_NAME: return lookup(r, sc, n->name.p, n->name.n, n->id, out);
    case N_GETATTR:
        if (eval(r, sc, n->a, &a)) return -1;
        if (a.t == JT_UNDEF) return undefined_object(r, n->a, n->name);
        rv = jget_attr(r, a, n->name.p, n->name.n, true, out);
        jv_release(c, a);
        return rv;
    case N_GETITEM:
        if (eval(r, sc, n->a, &a)) return -1;
        if (a.t == JT_UNDEF) return undefined_object(r, n->a, (jname){"[...]", 5});
        if (eval(r, sc, n->b, &b)) {
            jv_release(c, a);
            return -1;
        }
        rv = jget_item(r, a, b, out);
        jv_release(c, a);
        jv_release(c, b);
        return rv;
    case N_SLICE: return eval_slice(r, sc, n, out);
    case N_CALL: return eval_call(r, sc, n, out);
    case N_FILTER:
    case N_TEST: {
        if (n->a) {
            if (eval(r, sc, n->a, &a)) return -1;
        } else {
            a = jv_retain(r->chain_input);
        }
        evargs ea;
        if (args_eval(r, sc, n, &ea)) {
            jv_release(c, a);
            return -1;
        }
        if (n->kind == N_FILTER) {
            rv = jfilter_call(r, n->id, a, &ea.a, out);
        } else {
            bool t;
            rv = jtest_call(r, n->id, a, &ea.a, &t);
            if (!rv) *out = jv_bool(t);
        }
        args_drop(r, &ea);
        jv_release(c, a);
        return rv;
    }
    case N_NOT:
        if (eval(r, sc, n->a, &a)) return -1;
        *out = jv_bool(!jv_truthy(a));
        jv_release(c, a);
        return 0;
    case N_NEG:
    case N_POS:
        if (eval(r, sc, n->a, &a)) return -1;
        if (a.t == JT_UNDEF) return undefined_op(c);
        if (a.t == JT_FLOAT) {
            *out = jv_float(n->kind == N_NEG ? -a.u.f : a.u.f);
        } else if (a.t == JT_INT || a.t == JT_BOOL) {
            int64_t i = as_int(a);
            if (n->kind == N_NEG && i == INT64_MIN) return overflow(c);
            *out = jv_int(n->kind == N_NEG ? -i : i);
        } else {
            rv = jfail(c, PLUMB_E_INVALID_ARG, "bad operand type for unary %s: '%s'", n->kind == N_NEG ? "-" : "+",
                       jv_type_name(a));
            jv_release(c, a);
            return rv;
        }
        return 0;
    case N_ARITH: {
        if (eval(r, sc, n->kids[0], &a)) return -1;
        for (uint32_t i = 1; i < n->n_kids; i++) {
            if (eval(r, sc, n->kids[i], &b)) {
                jv_release(c, a);
                return -1;
            }
            jval z;
            rv = jarith(r, n->ops[i - 1], a, b, &z);
            jv_release(c, a);
            jv_release(c, b);
            if (rv) return fail_here(r, n->kids[i]);
            a = z;
        }
        *out = a;
        return 0;
    }
    case N_CONCAT: {
        jsb o;
        jsb_init(&o, c);
        for (uint32_t i = 0; i < n->n_kids; i++) {
            if (eval(r, sc, n->kids[i], &a)) {
                jsb_drop(&o);
                return -1;
            }
            rv = jv_str_into(c, &o, a);
            jv_release(c, a);
            if (rv) {
                jsb_drop(&o);
                return -1;
            }
        }
        jstr *s = jsb_finish(&o);
        if (!s) return -1;
        *out = jv_str(s);
        return 0;
    }
    case N_CMP: {
        if (eval(r, sc, n->kids[0], &a)) return -1;
        bool res = true;
        for (uint32_t i = 1; i < n->n_kids && res; i++) {
            if (eval(r, sc, n->kids[i], &b)) {
                jv_release(c, a);
                return -1;
            }
            rv = compare(r, n->ops[i - 1], a, b, &res);
            jv_release(c, a);
            a = b;
            if (rv) {
                jv_release(c, a);
                return fail_here(r, n->kids[i]);
            }
        }
        jv_release(c, a);
        *out = jv_bool(res);
        return 0;
    }
    case N_AND:
    case N_OR:
        for (uint32_t i = 0; i < n->n_kids; i++) {
            if (eval(r, sc, n->kids[i], &a)) return -1;
            bool t = jv_truthy(a);
            if (i + 1 == n->n_kids || (n->kind == N_AND ? !t : t)) {
                *out = a;
                return 0;
            }
            jv_release(c, a);
        }
        *out = jv_undef();
        return 0;
    case N_COND:
        if (eval(r, sc, n->a, &a)) return -1;
        {
            bool t = jv_truthy(a);
            jv_release(c, a);
            if (t) return eval(r, sc, n->b, out);
            if (n->c) return eval(r, sc, n->c, out);
        }
        *out = jv_undef();
        return 0;
    case N_LIST:
    case N_TUPLE: {
        jlist *l = jlist_new(c, n->n_kids, n->kind == N_LIST ? JL_LIST : JL_TUPLE);
        if (!l) return -1;
        for (uint32_t i = 0; i < n->n_kids; i++)
            if (eval(r, sc, n->kids[i], &l->v[i])) {
                jv_release(c, jv_list(l));
                return -1;
            }
        *out = jv_list(l);
        return jlist_seal(c, l);
    }
    case N_DICT: {
        jdict *d = jdict_new(c);
        if (!d) return -1;
        *out = jv_dict(d);
        for (uint32_t i = 0; i + 1 < n->n_kids; i += 2) {
            if (eval(r, sc, n->kids[i], &a)) return -1;
            if (eval(r, sc, n->kids[i + 1], &b)) {
                jv_release(c, a);
                return -1;
            }
            if (jdict_set(c, d, a, b)) return -1;
        }
        return 0;
    }
    default: return jfail(c, PLUMB_E_UNSUPPORTED, "%s", "this expression is not supported");
    }
}

static int eval(jrender *r, jscope *sc, const jnode *n, jval *out) {
    jctx *c = r->c;
    *out = jv_undef();
    if (jwork(c, JW_EVAL) || jdepth_in(c)) return fail_here(r, n);
    int rv = eval_node(r, sc, n, out);
    jdepth_out(c);
    if (rv) {
        jv_release(c, *out);
        *out = jv_undef();
        return fail_here(r, n);
    }
    return 0;
}

/* ---- assignment ---------------------------------------------------------------------------- */

static int assign(jrender *r, jscope *sc, const jnode *t, jval v) {
    jctx *c = r->c;
    if (t->kind == N_NAME) return scope_set(c, sc, t->name, jv_retain(v));
    if (t->kind == N_NSREF) {
        jval ns;
        if (lookup(r, sc, t->name.p, t->name.n, -1, &ns)) return -1;
        if (ns.t != JT_NS) {
            jv_release(c, ns);
            return jfail(c, PLUMB_E_INVALID_ARG, "%s", "cannot assign attribute on non-namespace object");
        }
        jstr *k = jstr_new(c, t->attr.p, t->attr.n, false);
        int rv = k ? jdict_set(c, ns.u.ns->attrs, jv_str(k), jv_retain(v)) : -1;
        jv_release(c, ns);
        return rv;
    }
    /* a tuple of targets: unpack */
    jlist *items;
    if (jv_iterate(c, v, &items)) return -1;
    int rv = 0;
    if (items->n != t->n_kids)
        rv = jfail(c, PLUMB_E_INVALID_ARG,
                   items->n > t->n_kids ? "too many values to unpack (expected %u)"
                                        : "not enough values to unpack (expected %u)",
                   t->n_kids);
    for (uint32_t i = 0; i < t->n_kids && !rv; i++) rv = assign(r, sc, t->kids[i], items->v[i]);
    jv_release(c, jv_list(items));
    return rv;
}

/* ---- statements ------------------------------------------------------------------------------ */

/* Renders body into a new string, in a scope of its own under sc. */
static int render_body(jrender *r, jscope *sc, const jnode *body, jstr **out) {
    jctx *c = r->c;
    jscope *s = scope_new(c, sc);
    if (!s) return -1;
    jsb b;
    jsb_init(&b, c);
    int st = exec(r, s, body, &b);
    scope_drop(c, s);
    if (st == X_ERR) {
        jsb_drop(&b);
        return -1;
    }
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
}

/* Applies a filter chain (its innermost filter reading r->chain_input) to text. */
static int apply_chain(jrender *r, jscope *sc, const jnode *chain, jstr *text, jval *out) {
    jval saved = r->chain_input;
    r->chain_input = jv_str(text);
    int rv = eval(r, sc, chain, out);
    r->chain_input = saved;
    jv_release(r->c, jv_str(text));
    return rv;
}

static int exec_for(jrender *r, jscope *sc, const jnode *n, jsb *out) {
    jctx *c = r->c;
    jval it;
    if (eval(r, sc, n->b, &it)) return X_ERR;
    jlist *items;
    int rv = jv_iterate(c, it, &items);
    jv_release(c, it);
    if (rv) return fail_here(r, n->b);
    if (n->c) { /* for x in y if cond: the condition sees the target, not `loop` */
        jlist *kept = jlist_new(c, items->n, JL_LIST);
        size_t k = 0;
        rv = kept ? 0 : -1;
        for (size_t i = 0; i < items->n && !rv; i++) {
            jscope *s = scope_new(c, sc);
            jval cond = jv_undef();
            rv = !s || jiter_count(c, 1) || assign(r, s, n->a, items->v[i]) || eval(r, s, n->c, &cond);
            if (!rv && jv_truthy(cond)) kept->v[k++] = jv_retain(items->v[i]);
            jv_release(c, cond);
            scope_drop(c, s);
        }
        jv_release(c, jv_list(items));
        if (rv) {
            if (kept) jv_release(c, jv_list(kept));
            return fail_here(r, n);
        }
        kept->n = k; /* the slots past k are undefined: nothing to release */
        kept->depth = 1;
        if (jlist_seal(c, kept)) {
            jv_release(c, jv_list(kept));
            return fail_here(r, n);
        }
        items = kept;
    }
    if (items->n == 0) {
        jv_release(c, jv_list(items));
        if (!n->e) return X_OK;
        jscope *s = scope_new(c, sc);
        if (!s) return fail_here(r, n);
        int st = exec(r, s, n->e, out);
        scope_drop(c, s);
        return st == X_ERR ? X_ERR : X_OK;
    }
    jloop *lp = jalloc(c, sizeof *lp);
    if (!lp) {
        jv_release(c, jv_list(items));
        return fail_here(r, n);
    }
    *lp = (jloop){.rc = 1, .items = items, .pos = 0};
    jval loopv = {.t = JT_LOOP, .u.lp = lp};
    static const char loop_name[] = "loop";
    int st = X_OK;
    for (size_t i = 0; i < items->n; i++) {
        lp->pos = i;
        jscope *s = scope_new(c, sc);
        if (!s || jiter_count(c, 1) || assign(r, s, n->a, items->v[i]) ||
            scope_set(c, s, (jname){loop_name, 4}, jv_retain(loopv))) {
            scope_drop(c, s);
            st = fail_here(r, n);
            break;
        }
        st = exec(r, s, n->d, out);
        scope_drop(c, s);
        if (st == X_ERR) break;
        if (st == X_BREAK) {
            st = X_OK;
            break;
        }
        st = X_OK;
    }
    jv_release(c, loopv);
    return st;
}

static int exec_macro_def(jrender *r, jscope *sc, const jnode *n) {
    jctx *c = r->c;
    jmacro *m = jalloc(c, sizeof *m);
    if (!m) return -1;
    *m = (jmacro){.rc = 1, .def = n};
    if (sc != r->root) { /* capture what the definition sees below the top level */
        jscope *cl = scope_new(c, r->root);
        if (!cl) {
            jfree(c, m);
            return -1;
        }
        m->closure = cl;
        for (jscope *s = sc; s && s != r->root; s = s->parent)
            for (size_t i = s->n; i-- > 0;) {
                if (scope_index(cl, s->names[i].p, s->names[i].n) >= 0) continue;
                uint32_t d = jv_depth(s->vals[i]) + 1;
                if (d > m->depth) m->depth = d;
                if (scope_set(c, cl, s->names[i], jv_retain(s->vals[i])) ||
                    (m->depth > c->max_vdepth &&
                     jfail(c, PLUMB_E_RANGE, "macros nested through their closures deeper than %u levels",
                           c->max_vdepth))) {
                    jv_release(c, (jval){.t = JT_MACRO, .u.m = m});
                    return -1;
                }
            }
    }
    return scope_set(c, sc, n->name, (jval){.t = JT_MACRO, .u.m = m});
}

int jrender_call_macro(jrender *r, jmacro *m, const jargs *a, jval *out) {
    jctx *c = r->c;
    const jnode *def = m->def;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(def->name.n < 48 ? def->name.n : 48), def->name.p);
    if (r->macro_depth >= c->lim.max_depth)
        return jfail(c, PLUMB_E_RANGE, "macro calls nested deeper than %u (max_depth)", c->lim.max_depth);
    uint32_t np = def->n_kids;
    bool catch_varargs = def->flags & JM_CATCH_VARARGS, catch_kwargs = def->flags & JM_CATCH_KWARGS;
    if (a->n_pos > np && !catch_varargs)
        return jfail(c, PLUMB_E_INVALID_ARG, "macro '%s' takes not more than %u argument(s)", name, np);
    jscope *s = scope_new(c, m->closure ? m->closure : r->root);
    bool *bound = jalloc(c, (np ? np : 1) * sizeof *bound);
    jdict *kw = catch_kwargs ? jdict_new(c) : NULL;
    int rv = s && bound && (!catch_kwargs || kw) ? 0 : -1;
    for (uint32_t i = 0; i < np && !rv; i++) bound[i] = false;
    for (size_t i = 0; i < a->n_pos && i < np && !rv; i++) {
        rv = scope_set(c, s, def->kids[i]->name, jv_retain(a->pos[i]));
        bound[i] = true;
    }
    for (size_t k = 0; k < a->n_kw && !rv; k++) {
        const jname *kn = &a->kw_names[k];
        uint32_t i = 0;
        while (i < np && !(def->kids[i]->name.n == kn->n && memcmp(def->kids[i]->name.p, kn->p, kn->n) == 0)) i++;
        if (i < np) {
            if (bound[i])
                rv = jfail(c, PLUMB_E_INVALID_ARG, "macro '%s' got multiple values for argument '%.*s'", name,
                           (int)(kn->n < 48 ? kn->n : 48), kn->p);
            else {
                rv = scope_set(c, s, def->kids[i]->name, jv_retain(a->kw[k]));
                bound[i] = true;
            }
        } else if (catch_kwargs) {
            jstr *key = jstr_new(c, kn->p, kn->n, false);
            rv = key ? jdict_set(c, kw, jv_str(key), jv_retain(a->kw[k])) : -1;
        } else {
            rv = jfail(c, PLUMB_E_INVALID_ARG, "macro '%s' takes no keyword argument '%.*s'", name,
                       (int)(kn->n < 48 ? kn->n : 48), kn->p);
        }
    }
    r->macro_depth++;
    /* defaults are evaluated in the call's scope: later ones see earlier parameters */
    for (uint32_t i = 0; i < np && !rv; i++) {
        if (bound[i]) continue;
        jval d = jv_undef();
        if (def->defs[i] && eval(r, s, def->defs[i], &d))
            rv = -1;
        else
            rv = scope_set(c, s, def->kids[i]->name, d);
    }
    if (!rv && catch_varargs) {
        size_t extra = a->n_pos > np ? a->n_pos - np : 0;
        jlist *t = jlist_new(c, extra, JL_TUPLE);
        if (!t) rv = -1;
        for (size_t i = 0; t && i < extra; i++) t->v[i] = jv_retain(a->pos[np + i]);
        if (t && jlist_seal(c, t)) {
            jv_release(c, jv_list(t));
            rv = -1;
        } else if (t) {
            rv = scope_set(c, s, (jname){"varargs", 7}, jv_list(t)); /* takes t, also on failure */
        }
    }
    if (!rv && catch_kwargs) {
        rv = scope_set(c, s, (jname){"kwargs", 6}, jv_dict(kw));
        kw = NULL;
    }
    jsb b;
    jsb_init(&b, c);
    if (!rv && exec(r, s, def->d, &b) == X_ERR) rv = -1;
    r->macro_depth--;
    if (kw) jv_release(c, jv_dict(kw));
    jfree(c, bound);
    scope_drop(c, s);
    if (rv) {
        jsb_drop(&b);
        return -1;
    }
    jstr *res = jsb_finish(&b);
    if (!res) return -1;
    *out = jv_str(res);
    return 0;
}

static int exec_node(jrender *r, jscope *sc, const jnode *n, jsb *out) {
    jctx *c = r->c;
    jval v;
    switch (n->kind) {
    case N_BODY:
        for (uint32_t i = 0; i < n->n_kids; i++) {
            int st = exec(r, sc, n->kids[i], out);
            if (st != X_OK) return st;
        }
        return X_OK;
    case N_TEXT: return jsb_put_str(out, n->lit.u.s) ? X_ERR : X_OK;
    case N_PRINT: {
        if (eval(r, sc, n->a, &v)) return X_ERR;
        int rv = jv_str_into(c, out, v);
        jv_release(c, v);
        return rv ? X_ERR : X_OK;
    }
    case N_IF:
        for (const jnode *b = n; b;) {
            if (b->kind != N_IF) return exec(r, sc, b, out); /* the else body */
            if (eval(r, sc, b->a, &v)) return X_ERR;
            bool t = jv_truthy(v);
            jv_release(c, v);
            if (t) return exec(r, sc, b->b, out);
            b = b->c;
        }
        return X_OK;
    case N_FOR: return exec_for(r, sc, n, out);
    case N_SET: {
        if (eval(r, sc, n->b, &v)) return X_ERR;
        int rv = assign(r, sc, n->a, v);
        jv_release(c, v);
        return rv ? X_ERR : X_OK;
    }
    case N_SETBLOCK: {
        jstr *text;
        if (render_body(r, sc, n->b, &text)) return X_ERR;
        if (n->c) {
            if (apply_chain(r, sc, n->c, text, &v)) return X_ERR;
        } else {
            v = jv_str(text);
        }
        int rv = assign(r, sc, n->a, v);
        jv_release(c, v);
        return rv ? X_ERR : X_OK;
    }
    case N_FILTERBLOCK: {
        jstr *text;
        if (render_body(r, sc, n->d, &text) || apply_chain(r, sc, n->c, text, &v)) return X_ERR;
        int rv = jv_str_into(c, out, v);
        jv_release(c, v);
        return rv ? X_ERR : X_OK;
    }
    case N_MACRO: return exec_macro_def(r, sc, n) ? X_ERR : X_OK;
    case N_BREAK: return X_BREAK;
    case N_CONTINUE: return X_CONTINUE;
    case N_WITH: {
        /* the values are evaluated outside, the names bound inside */
        jscope *s = scope_new(c, sc);
        if (!s) return X_ERR;
        int rv = 0;
        for (uint32_t i = 0; i < n->n_kids && !rv; i++) {
            if (eval(r, sc, n->defs[i], &v)) {
                rv = -1;
                break;
            }
            rv = assign(r, s, n->kids[i], v);
            jv_release(c, v);
        }
        int st = rv ? X_ERR : exec(r, s, n->d, out);
        scope_drop(c, s);
        return st;
    }
    default: return jfail(c, PLUMB_E_UNSUPPORTED, "%s", "this statement is not supported");
    }
}

static int exec(jrender *r, jscope *sc, const jnode *n, jsb *out) {
    jctx *c = r->c;
    if (jwork(c, JW_EVAL) || jdepth_in(c)) return fail_here(r, n);
    int st = exec_node(r, sc, n, out);
    jdepth_out(c);
    if (st == X_ERR) fail_here(r, n);
    return st;
}

/* ---- entry points ------------------------------------------------------------------------------ */

plumb_template_limits plumb_template_default_limits(void) {
    return (plumb_template_limits){
        .max_output = (size_t)4 << 20,
        .max_memory = (size_t)64 << 20,
        .max_depth = 64,
        .max_iterations = 1000000,
        .max_work = (uint64_t)1 << 30,
    };
}

/* Recursion is on the C stack: max_depth is held to what a thread's stack takes safely. */
#define JINJA_DEPTH_CEILING 256

static void ctx_init(jctx *c, const plumb_template_limits *lim) {
    plumb_template_limits d = plumb_template_default_limits();
    *c = (jctx){0};
    c->lim = lim ? *lim : d;
    if (!c->lim.max_output) c->lim.max_output = d.max_output;
    if (!c->lim.max_memory) c->lim.max_memory = d.max_memory;
    if (!c->lim.max_depth) c->lim.max_depth = d.max_depth;
    if (!c->lim.max_iterations) c->lim.max_iterations = d.max_iterations;
    if (!c->lim.max_work) c->lim.max_work = d.max_work;
    if (c->lim.max_depth > JINJA_DEPTH_CEILING) c->lim.max_depth = JINJA_DEPTH_CEILING;
    if (c->lim.max_output > ((size_t)1 << 40)) c->lim.max_output = (size_t)1 << 40;
    c->max_rdepth = 12 * c->lim.max_depth + 16;
    c->max_vdepth = 4 * c->lim.max_depth;
}

/* Variable text that counts as the template's own (see plumb.h): the special-token
 * variables, which Hugging Face fills from the tokenizer (the model's control-token texts),
 * and message roles that are plain role names, which templates such as Phi-4's splice into a
 * control token ('<|' + role + '|>'). A role outside the list stays unmarked. */
static const char *const special_token_vars[] = {"bos_token", "eos_token", "unk_token", "pad_token",
                                                 "sep_token", "cls_token", "mask_token"};
static const char *const role_names[] = {"system",  "user",      "assistant", "tool", "tool_results",
                                         "ipython", "developer", "function",  "model"};

static bool word_in(const jstr *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == s->len && memcmp(list[i], s->data, s->len) == 0) return true;
    return false;
}

/* Replaces the string *v (owned by a freshly parsed value, not shared) with a marked copy. */
static int mark_value(jctx *c, jval *v) {
    jstr *m = jstr_new(c, v->u.s->data, v->u.s->len, true);
    if (!m) return -1;
    jv_release(c, *v);
    *v = jv_str(m);
    return 0;
}

static int mark_trusted_vars(jctx *c, jdict *vars) {
    for (size_t i = 0; i < sizeof special_token_vars / sizeof special_token_vars[0]; i++) {
        long k = jdict_find_str(vars, special_token_vars[i], strlen(special_token_vars[i]));
        if (k >= 0 && vars->v[k].t == JT_STR && mark_value(c, &vars->v[k])) return -1;
    }
    long k = jdict_find_str(vars, "messages", 8);
    if (k < 0 || vars->v[k].t != JT_LIST) return 0;
    jlist *msgs = vars->v[k].u.l;
    for (size_t i = 0; i < msgs->n; i++) {
        if (msgs->v[i].t != JT_DICT) continue;
        jdict *m = msgs->v[i].u.d;
        long r = jdict_find_str(m, "role", 4);
        if (r >= 0 && m->v[r].t == JT_STR && m->v[r].u.s->rc == 1 &&
            word_in(m->v[r].u.s, role_names, sizeof role_names / sizeof role_names[0]) && mark_value(c, &m->v[r]))
            return -1;
    }
    return 0;
}

static plumb_status report(jctx *c) {
    if (c->pos_set) return plumb__fail(c->st, "template:%u:%u: %s", c->line, c->col, c->msg);
    return plumb__fail(c->st, "template: %s", c->msg);
}

plumb_status plumb_template_check(const char *tmpl, size_t tmpl_len, const plumb_template_limits *limits) {
    if (!tmpl && tmpl_len) return plumb__fail(PLUMB_E_INVALID_ARG, "template: the template is NULL");
    jctx c;
    ctx_init(&c, limits);
    jtmpl t;
    int rv = jparse(&c, tmpl ? tmpl : "", tmpl_len, &t);
    if (!rv) jtmpl_free(&c, &t);
    PLUMB_ASSERT(c.mem_used == 0);
    return rv ? report(&c) : PLUMB_OK;
}

plumb_status plumb_template_render(const char *tmpl, size_t tmpl_len, const char *vars_json, size_t vars_len,
                                   const plumb_template_limits *limits, char **out, size_t *out_len, plumb_span **marks,
                                   size_t *n_marks) {
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (marks) *marks = NULL;
    if (n_marks) *n_marks = 0;
    if (!out) return plumb__fail(PLUMB_E_INVALID_ARG, "template: out is NULL");
    if (!tmpl && tmpl_len) return plumb__fail(PLUMB_E_INVALID_ARG, "template: the template is NULL");
    if (!vars_json && vars_len) return plumb__fail(PLUMB_E_INVALID_ARG, "template: vars_json is NULL");
    if (marks && !n_marks) return plumb__fail(PLUMB_E_INVALID_ARG, "template: marks without n_marks");

    jctx c;
    ctx_init(&c, limits);
    jtmpl t = {0};
    jrender r = {.c = &c};
    jsb b;
    jsb_init(&b, &c);
    int rv = jparse(&c, tmpl ? tmpl : "", tmpl_len, &t);
    bool parsed = rv == 0;
    if (!rv && vars_json && vars_len) {
        jval vars;
        rv = jjson_parse(&c, vars_json, vars_len, &vars);
        if (!rv && vars.t != JT_DICT) {
            jv_release(&c, vars);
            rv = jfail(&c, PLUMB_E_INVALID_ARG, "%s", "variables: the JSON must be an object");
        } else if (!rv) {
            r.vars = vars.u.d;
            rv = mark_trusted_vars(&c, r.vars);
        }
    }
    if (!rv) {
        r.root = scope_new(&c, NULL);
        rv = r.root ? 0 : -1;
    }
    if (!rv && exec(&r, r.root, t.root, &b) != X_OK) rv = -1;

    /* Free everything: namespaces first lose their attributes, which frees any cycle. */
    for (size_t i = 0; i < r.n_nss; i++) {
        jdict *d = r.nss[i]->attrs;
        r.nss[i]->attrs = NULL;
        if (d) jv_release(&c, jv_dict(d));
    }
    for (size_t i = 0; i < r.n_nss; i++) jv_release(&c, (jval){.t = JT_NS, .u.ns = r.nss[i]});
    jfree(&c, r.nss);
    scope_drop(&c, r.root);
    if (r.vars) jv_release(&c, jv_dict(r.vars));
    if (parsed) jtmpl_free(&c, &t);

    plumb_status st = PLUMB_OK;
    char *text = NULL;
    plumb_span *spans = NULL;
    if (rv) {
        st = report(&c);
    } else {
        text = malloc(b.len + 1);
        spans = marks && b.n_marks ? malloc(b.n_marks * sizeof *spans) : NULL;
        if (!text || (marks && b.n_marks && !spans)) {
            free(text);
            free(spans);
            text = NULL;
            spans = NULL;
            st = plumb__fail(PLUMB_E_NOMEM, "template: out of memory for %zu bytes of output", b.len + 1);
        } else {
            if (b.len) memcpy(text, b.buf, b.len);
            text[b.len] = '\0';
            if (spans) memcpy(spans, b.marks, b.n_marks * sizeof *spans);
            *out = text;
            if (out_len) *out_len = b.len;
            if (marks) {
                *marks = spans;
                *n_marks = b.n_marks;
            }
        }
    }
    jsb_drop(&b);
    PLUMB_ASSERT(c.mem_used == 0);
    return st;
}
