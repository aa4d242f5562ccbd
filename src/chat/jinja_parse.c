/* jinja_parse.c — the parser of plumb's Jinja engine: tokens to the syntax tree, following
 * jinja2's parser (3.1) function for function, so that precedence and the odd corners agree:
 * filters bind tighter than any operator (a + b | trim is a + (b | trim)), `not` binds looser
 * than comparisons, ** is left-associative, a test's argument may go without parentheses
 * (x is divisibleby 3), adjacent string literals join, `for` and `if` take expressions
 * without the inline if, and so on.
 *
 * Statements: if/elif/else, for (with `if` filter and `else`), set (expression, namespace
 * attribute, tuple and block forms), macro, with, filter blocks, break/continue (jinja2's loop
 * controls, which Hugging Face enables) and {% generation %} (Hugging Face's, rendered as its
 * body). Others (call, include, extends, import, block, recursive loops) are refused with
 * PLUMB_E_UNSUPPORTED, as are unknown filters and tests, which jinja2 also rejects before
 * rendering. Nesting (statements, brackets, unary operators) is capped at max_depth: the
 * parser recurses once per level. */
#include "chat/jinja.h"

#include <stdio.h>
#include <string.h>

struct jarena_chunk {
    struct jarena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

typedef struct parser {
    jctx *c;
    jtok *t;
    size_t n, i;
    jtmpl *tm;
    uint32_t depth;
    uint32_t loops; /* for loops around the current statement (in this macro) */
    jnode *macro;   /* the macro whose body is being parsed */
} parser;

static void *arena(parser *p, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    jarena_chunk *ch = p->tm->chunks;
    if (!ch || ch->cap - ch->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        ch = jalloc(p->c, sizeof *ch + cap);
        if (!ch) return NULL;
        ch->next = p->tm->chunks;
        ch->used = 0;
        ch->cap = cap;
        p->tm->chunks = ch;
    }
    void *r = (char *)ch->data + ch->used;
    ch->used += n;
    memset(r, 0, n);
    return r;
}

static jtok *cur(parser *p) { return &p->t[p->i]; }
static jtok *look(parser *p) { return &p->t[p->i + 1 < p->n ? p->i + 1 : p->n - 1]; }
static void next(parser *p) {
    if (p->i + 1 < p->n) p->i++;
}

static bool is_name(const jtok *t, const char *name) {
    return t->type == TK_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}
static bool is_op(const jtok *t, uint8_t op) { return t->type == TK_OP && t->op == op; }

static const char *op_text(uint8_t op) {
    static const char *const s[] = {"",  "+",  "-",  "*", "/",  "//", "%",  "**", "~", "[", "]", "(", ")", "{",
                                    "}", "==", "!=", ">", ">=", "<",  "<=", "=",  ".", ":", "|", ",", ";"};
    return op < sizeof s / sizeof s[0] ? s[op] : "?";
}

/* A short description of a token for messages. */
static void describe(const jtok *t, char *buf, size_t size) {
    switch (t->type) {
    case TK_NAME: snprintf(buf, size, "'%.*s'", (int)(t->n < 40 ? t->n : 40), t->p); break;
    case TK_OP: snprintf(buf, size, "'%s'", op_text(t->op)); break;
    case TK_STRING: snprintf(buf, size, "a string"); break;
    case TK_INT: snprintf(buf, size, "an integer"); break;
    case TK_FLOAT: snprintf(buf, size, "a float"); break;
    case TK_VAR_END: snprintf(buf, size, "the end of the print statement"); break;
    case TK_BLOCK_END: snprintf(buf, size, "the end of the statement block"); break;
    case TK_EOF: snprintf(buf, size, "the end of the template"); break;
    default: snprintf(buf, size, "text"); break;
    }
}

static void *pfail(parser *p, const jtok *t, plumb_status st, const char *fmt, const char *a) {
    char msg[200];
    snprintf(msg, sizeof msg, fmt, a);
    jfail_at(p->c, t->line, t->col, st, "%s", msg);
    return NULL;
}

static void *unexpected(parser *p, const char *expected) {
    char d[64], msg[160];
    describe(cur(p), d, sizeof d);
    snprintf(msg, sizeof msg, "unexpected %s, expected %s", d, expected);
    return pfail(p, cur(p), PLUMB_E_UNSUPPORTED, "%s", msg);
}

static bool expect_op(parser *p, uint8_t op) {
    if (is_op(cur(p), op)) {
        next(p);
        return true;
    }
    char e[16];
    snprintf(e, sizeof e, "'%s'", op_text(op));
    unexpected(p, e);
    return false;
}

static bool expect_name(parser *p, const char *name) {
    if (is_name(cur(p), name)) {
        next(p);
        return true;
    }
    char e[48];
    snprintf(e, sizeof e, "'%s'", name);
    unexpected(p, e);
    return false;
}

static bool deeper(parser *p) {
    if (p->depth >= p->c->lim.max_depth) {
        char d[24];
        snprintf(d, sizeof d, "%u", p->c->lim.max_depth);
        pfail(p, cur(p), PLUMB_E_RANGE, "the template nests deeper than %s levels (max_depth)", d);
        return false;
    }
    p->depth++;
    return true;
}

static jnode *node(parser *p, uint8_t kind, const jtok *at) {
    jnode *n = arena(p, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->line = at->line;
    n->col = at->col;
    n->id = -1;
    return n;
}

/* The literal's value is owned by the template (released by jtmpl_free). */
static bool keep_lit(parser *p, jval v) {
    jtmpl *tm = p->tm;
    if (tm->n_lits == tm->cap_lits) {
        size_t cap = tm->cap_lits ? tm->cap_lits * 2 : 32;
        jval *nl = jrealloc(p->c, tm->lits, cap * sizeof *nl);
        if (!nl) {
            jv_release(p->c, v);
            return false;
        }
        tm->lits = nl;
        tm->cap_lits = cap;
    }
    tm->lits[tm->n_lits++] = v;
    return true;
}

/* A growable array of nodes, copied into the arena when done. */
typedef struct nvec {
    jnode **v;
    size_t n, cap;
} nvec;

static bool nv_push(parser *p, nvec *x, jnode *n) {
    if (!n) return false;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 8;
        jnode **nv = jrealloc(p->c, x->v, cap * sizeof *nv);
        if (!nv) return false;
        x->v = nv;
        x->cap = cap;
    }
    x->v[x->n++] = n;
    return true;
}

static jnode **nv_done(parser *p, nvec *x, uint32_t *n) {
    jnode **r = x->n ? arena(p, x->n * sizeof *r) : NULL;
    if (r) memcpy(r, x->v, x->n * sizeof *r);
    *n = (uint32_t)x->n;
    bool ok = r || x->n == 0;
    jfree(p->c, x->v);
    *x = (nvec){0};
    return ok ? (r ? r : (jnode **)arena(p, sizeof(jnode *))) : NULL;
}

static jname name_of(const jtok *t) { return (jname){t->p, (uint32_t)t->n}; }

/* ---- expressions ----------------------------------------------------------------------- */

static jnode *parse_expression(parser *p, bool with_condexpr);
static jnode *parse_tuple(parser *p, bool simplified, bool with_condexpr, const char *extra_end, bool explicit_parens);
static jnode *parse_unary(parser *p, bool with_filter);
static jnode *parse_primary(parser *p);
static jnode *parse_postfix(parser *p, jnode *n);
static jnode *parse_filter_expr(parser *p, jnode *n);
static jnode *parse_filter(parser *p, jnode *n, bool start_inline);

static jnode *parse_condexpr(parser *p);

static jnode *parse_or(parser *p);

/* Arguments of a call, filter or test: (pos..., name=value...). */
static bool parse_call_args(parser *p, jnode *n) {
    if (!expect_op(p, OP_LPAREN) || !deeper(p)) return false;
    nvec args = {0}, kwv = {0};
    jname *kwn = NULL;
    size_t n_kw = 0, cap_kw = 0;
    bool ok = true, need_comma = false;
    while (ok && !is_op(cur(p), OP_RPAREN)) {
        if (need_comma) {
            if (!expect_op(p, OP_COMMA)) {
                ok = false;
                break;
            }
            if (is_op(cur(p), OP_RPAREN)) break;
        }
        if (is_op(cur(p), OP_MUL) || is_op(cur(p), OP_POW)) {
            pfail(p, cur(p), PLUMB_E_UNSUPPORTED, "%s", "*args and **kwargs in calls are not supported");
            ok = false;
            break;
        }
        if (cur(p)->type == TK_NAME && is_op(look(p), OP_ASSIGN)) {
            jname key = name_of(cur(p));
            next(p);
            next(p);
            jnode *v = parse_expression(p, true);
            if (!v) {
                ok = false;
                break;
            }
            if (n_kw == cap_kw) {
                size_t cap = cap_kw ? cap_kw * 2 : 4;
                jname *nk = jrealloc(p->c, kwn, cap * sizeof *nk);
                if (!nk) {
                    ok = false;
                    break;
                }
                kwn = nk;
                cap_kw = cap;
            }
            kwn[n_kw++] = key;
            ok = nv_push(p, &kwv, v);
        } else {
            if (kwv.n) {
                pfail(p, cur(p), PLUMB_E_UNSUPPORTED, "%s", "positional argument follows keyword argument");
                ok = false;
                break;
            }
            ok = nv_push(p, &args, parse_expression(p, true));
        }
        need_comma = true;
    }
    if (ok) ok = expect_op(p, OP_RPAREN);
    if (ok) {
        uint32_t nk;
        n->kids = nv_done(p, &args, &n->n_kids);
        n->kw_vals = nv_done(p, &kwv, &nk);
        n->n_kw = nk;
        n->kw_names = nk ? arena(p, nk * sizeof *n->kw_names) : NULL;
        if (!n->kids || !n->kw_vals || (nk && !n->kw_names))
            ok = false;
        else if (nk)
            memcpy(n->kw_names, kwn, nk * sizeof *kwn);
    } else {
        jfree(p->c, args.v);
        jfree(p->c, kwv.v);
    }
    jfree(p->c, kwn);
    p->depth--;
    return ok;
}

static jnode *parse_call(parser *p, jnode *fn) {
    jnode *n = node(p, N_CALL, cur(p));
    if (!n) return NULL;
    n->a = fn;
    return parse_call_args(p, n) ? n : NULL;
}

/* One subscript: an expression or a slice a:b:c (parts may be missing). */
static jnode *parse_subscribed(parser *p, bool *is_slice) {
    jtok *at = cur(p);
    jnode *parts[3] = {NULL, NULL, NULL};
    *is_slice = false;
    if (is_op(cur(p), OP_COLON)) {
        next(p);
    } else {
        jnode *e = parse_expression(p, true);
        if (!e) return NULL;
        if (!is_op(cur(p), OP_COLON)) return e;
        next(p);
        parts[0] = e;
    }
    *is_slice = true;
    if (!is_op(cur(p), OP_COLON) && !is_op(cur(p), OP_RBRACKET) && !is_op(cur(p), OP_COMMA)) {
        if (!(parts[1] = parse_expression(p, true))) return NULL;
    }
    if (is_op(cur(p), OP_COLON)) {
        next(p);
        if (!is_op(cur(p), OP_RBRACKET) && !is_op(cur(p), OP_COMMA))
            if (!(parts[2] = parse_expression(p, true))) return NULL;
    }
    jnode *s = node(p, N_SLICE, at);
    if (!s) return NULL;
    s->kids = arena(p, 3 * sizeof *s->kids);
    if (!s->kids) return NULL;
    memcpy(s->kids, parts, sizeof parts);
    s->n_kids = 3;
    return s;
}

static jnode *parse_subscript(parser *p, jnode *obj) {
    jtok *t = cur(p);
    next(p);
    if (t->op == OP_DOT) {
        jtok *a = cur(p);
        if (a->type == TK_NAME) {
            next(p);
            jnode *n = node(p, N_GETATTR, t);
            if (!n) return NULL;
            n->a = obj;
            n->name = name_of(a);
            return n;
        }
        if (a->type != TK_INT) return unexpected(p, "a name or a number after '.'");
        next(p);
        jnode *k = node(p, N_CONST, a), *n = node(p, N_GETITEM, t);
        if (!k || !n) return NULL;
        k->lit = jv_int(a->i);
        n->a = obj;
        n->b = k;
        return n;
    }
    /* '[' */
    if (!deeper(p)) return NULL;
    nvec args = {0};
    bool any_slice = false, ok = true;
    while (ok && !is_op(cur(p), OP_RBRACKET)) {
        if (args.n && !expect_op(p, OP_COMMA)) {
            ok = false;
            break;
        }
        bool sl;
        ok = nv_push(p, &args, parse_subscribed(p, &sl));
        any_slice |= sl;
    }
    if (ok) ok = expect_op(p, OP_RBRACKET);
    p->depth--;
    if (!ok) {
        jfree(p->c, args.v);
        return NULL;
    }
    if (args.n == 0) {
        jfree(p->c, args.v);
        return pfail(p, t, PLUMB_E_UNSUPPORTED, "%s", "an empty subscript []");
    }
    if (args.n == 1 && args.v[0]->kind == N_SLICE) {
        jnode *s = args.v[0];
        jfree(p->c, args.v);
        s->a = obj;
        return s;
    }
    if (any_slice) {
        jfree(p->c, args.v);
        return pfail(p, t, PLUMB_E_UNSUPPORTED, "%s", "a slice inside a tuple subscript");
    }
    jnode *n = node(p, N_GETITEM, t);
    if (!n) {
        jfree(p->c, args.v);
        return NULL;
    }
    n->a = obj;
    if (args.n == 1) {
        n->b = args.v[0];
        jfree(p->c, args.v);
    } else {
        jnode *tu = node(p, N_TUPLE, t);
        if (!tu) {
            jfree(p->c, args.v);
            return NULL;
        }
        tu->kids = nv_done(p, &args, &tu->n_kids);
        if (!tu->kids) return NULL;
        n->b = tu;
    }
    return n;
}

static jnode *parse_postfix(parser *p, jnode *n) {
    while (n) {
        if (is_op(cur(p), OP_DOT) || is_op(cur(p), OP_LBRACKET))
            n = parse_subscript(p, n);
        else if (is_op(cur(p), OP_LPAREN))
            n = parse_call(p, n);
        else
            break;
    }
    return n;
}

static jnode *parse_filter(parser *p, jnode *n, bool start_inline) {
    while (is_op(cur(p), OP_PIPE) || start_inline) {
        if (!start_inline) next(p);
        start_inline = false;
        jtok *t = cur(p);
        if (t->type != TK_NAME) return unexpected(p, "a filter name");
        next(p);
        if (is_op(cur(p), OP_DOT))
            return pfail(p, t, PLUMB_E_UNSUPPORTED, "%s", "dotted filter names are not supported");
        jnode *f = node(p, N_FILTER, t);
        if (!f) return NULL;
        f->a = n;
        f->name = name_of(t);
        f->id = (int16_t)jfilter_id(t->p, t->n);
        if (f->id < 0) {
            char nm[64];
            snprintf(nm, sizeof nm, "%.*s", (int)(t->n < 48 ? t->n : 48), t->p);
            return pfail(p, t, PLUMB_E_UNSUPPORTED, "unknown or unsupported filter '%s'", nm);
        }
        if (is_op(cur(p), OP_LPAREN)) {
            if (!parse_call_args(p, f)) return NULL;
        } else {
            f->kids = arena(p, sizeof(jnode *));
            if (!f->kids) return NULL;
        }
        n = f;
    }
    return n;
}

static jnode *parse_test(parser *p, jnode *n) {
    jtok *is_tok = cur(p);
    next(p); /* 'is' */
    bool negated = false;
    if (is_name(cur(p), "not")) {
        next(p);
        negated = true;
    }
    jtok *t = cur(p);
    if (t->type != TK_NAME) return unexpected(p, "a test name");
    next(p);
    if (is_op(cur(p), OP_DOT)) return pfail(p, t, PLUMB_E_UNSUPPORTED, "%s", "dotted test names are not supported");
    jnode *tn = node(p, N_TEST, is_tok);
    if (!tn) return NULL;
    tn->a = n;
    tn->name = name_of(t);
    tn->id = (int16_t)jtest_id(t->p, t->n);
    if (tn->id < 0) {
        char nm[64];
        snprintf(nm, sizeof nm, "%.*s", (int)(t->n < 48 ? t->n : 48), t->p);
        return pfail(p, t, PLUMB_E_UNSUPPORTED, "unknown or unsupported test '%s'", nm);
    }
    jtok *c = cur(p);
    if (is_op(c, OP_LPAREN)) {
        if (!parse_call_args(p, tn)) return NULL;
    } else if ((c->type == TK_NAME || c->type == TK_STRING || c->type == TK_INT || c->type == TK_FLOAT ||
                is_op(c, OP_LBRACKET) || is_op(c, OP_LBRACE)) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) return pfail(p, c, PLUMB_E_UNSUPPORTED, "%s", "you cannot chain multiple tests with is");
        jnode *arg = parse_postfix(p, parse_primary(p));
        if (!arg) return NULL;
        tn->kids = arena(p, sizeof(jnode *));
        if (!tn->kids) return NULL;
        tn->kids[0] = arg;
        tn->n_kids = 1;
    } else {
        tn->kids = arena(p, sizeof(jnode *));
        if (!tn->kids) return NULL;
    }
    if (!negated) return tn;
    jnode *nn = node(p, N_NOT, is_tok);
    if (!nn) return NULL;
    nn->a = tn;
    return nn;
}

static jnode *parse_filter_expr(parser *p, jnode *n) {
    while (n) {
        if (is_op(cur(p), OP_PIPE))
            n = parse_filter(p, n, false);
        else if (is_name(cur(p), "is"))
            n = parse_test(p, n);
        else if (is_op(cur(p), OP_LPAREN))
            n = parse_call(p, n);
        else
            break;
    }
    return n;
}

static jnode *parse_list(parser *p) {
    jtok *t = cur(p);
    next(p);
    if (!deeper(p)) return NULL;
    nvec items = {0};
    bool ok = true;
    while (ok && !is_op(cur(p), OP_RBRACKET)) {
        if (items.n && !expect_op(p, OP_COMMA)) {
            ok = false;
            break;
        }
        if (is_op(cur(p), OP_RBRACKET)) break;
        ok = nv_push(p, &items, parse_expression(p, true));
    }
    if (ok) ok = expect_op(p, OP_RBRACKET);
    p->depth--;
    jnode *n = ok ? node(p, N_LIST, t) : NULL;
    if (!n) {
        jfree(p->c, items.v);
        return NULL;
    }
    n->kids = nv_done(p, &items, &n->n_kids);
    return n->kids ? n : NULL;
}

static jnode *parse_dict(parser *p) {
    jtok *t = cur(p);
    next(p);
    if (!deeper(p)) return NULL;
    nvec items = {0};
    bool ok = true;
    while (ok && !is_op(cur(p), OP_RBRACE)) {
        if (items.n && !expect_op(p, OP_COMMA)) {
            ok = false;
            break;
        }
        if (is_op(cur(p), OP_RBRACE)) break;
        ok = nv_push(p, &items, parse_expression(p, true));
        if (ok) ok = expect_op(p, OP_COLON);
        if (ok) ok = nv_push(p, &items, parse_expression(p, true));
    }
    if (ok) ok = expect_op(p, OP_RBRACE);
    p->depth--;
    jnode *n = ok ? node(p, N_DICT, t) : NULL;
    if (!n) {
        jfree(p->c, items.v);
        return NULL;
    }
    n->kids = nv_done(p, &items, &n->n_kids);
    return n->kids ? n : NULL;
}

static jnode *parse_primary(parser *p) {
    jtok *t = cur(p);
    jnode *n;
    switch (t->type) {
    case TK_NAME:
        next(p);
        n = node(p, N_CONST, t);
        if (!n) return NULL;
        if (is_name(t, "true") || is_name(t, "True"))
            n->lit = jv_bool(true);
        else if (is_name(t, "false") || is_name(t, "False"))
            n->lit = jv_bool(false);
        else if (is_name(t, "none") || is_name(t, "None"))
            n->lit = jv_none();
        else {
            n->kind = N_NAME;
            n->name = name_of(t);
            n->id = (int16_t)jglobal_id(t->p, t->n);
            if (p->macro && (is_name(t, "varargs") || is_name(t, "kwargs")))
                p->macro->flags |= is_name(t, "varargs") ? JM_CATCH_VARARGS : JM_CATCH_KWARGS;
        }
        return n;
    case TK_STRING: {
        n = node(p, N_CONST, t);
        if (!n) return NULL;
        next(p);
        jstr *s = t->str;
        s->rc++;
        if (cur(p)->type == TK_STRING) { /* 'a' 'b' is 'ab' */
            jsb b;
            jsb_init(&b, p->c);
            int rv = jsb_put_str(&b, s);
            jv_release(p->c, jv_str(s));
            while (!rv && cur(p)->type == TK_STRING) {
                rv = jsb_put_str(&b, cur(p)->str);
                next(p);
            }
            s = rv ? (jsb_drop(&b), NULL) : jsb_finish(&b);
            if (!s) return NULL;
        }
        n->lit = jv_str(s);
        return keep_lit(p, n->lit) ? n : NULL;
    }
    case TK_INT:
    case TK_FLOAT:
        next(p);
        n = node(p, N_CONST, t);
        if (!n) return NULL;
        n->lit = t->type == TK_INT ? jv_int(t->i) : jv_float(t->f);
        return n;
    case TK_OP:
        if (t->op == OP_LPAREN) {
            next(p);
            if (!deeper(p)) return NULL;
            n = parse_tuple(p, false, true, NULL, true);
            p->depth--;
            if (!n || !expect_op(p, OP_RPAREN)) return NULL;
            return n;
        }
        if (t->op == OP_LBRACKET) return parse_list(p);
        if (t->op == OP_LBRACE) return parse_dict(p);
        break;
    default: break;
    }
    return unexpected(p, "an expression");
}

static jnode *parse_unary(parser *p, bool with_filter) {
    jtok *t = cur(p);
    jnode *n;
    if (is_op(t, OP_SUB) || is_op(t, OP_ADD)) {
        next(p);
        if (!deeper(p)) return NULL;
        jnode *operand = parse_unary(p, false);
        p->depth--;
        if (!operand) return NULL;
        n = node(p, t->op == OP_SUB ? N_NEG : N_POS, t);
        if (!n) return NULL;
        n->a = operand;
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter) n = parse_filter_expr(p, n);
    return n;
}

/* A left-to-right chain of one precedence level: a op b op c ... as one node. */
static jnode *chain(parser *p, jnode *first, uint8_t kind, jnode *(*sub)(parser *), const uint8_t *ops, size_t n_ops) {
    if (!first) return NULL;
    nvec kids = {0};
    uint8_t *opv = NULL;
    size_t n_opv = 0, cap = 0;
    jtok *at = cur(p);
    for (;;) {
        jtok *t = cur(p);
        size_t k = 0;
        for (; k < n_ops; k++)
            if (is_op(t, ops[k])) break;
        if (k == n_ops) break;
        next(p);
        if (kids.n == 0 && !nv_push(p, &kids, first)) goto fail;
        if (n_opv == cap) {
            cap = cap ? cap * 2 : 4;
            uint8_t *no = jrealloc(p->c, opv, cap);
            if (!no) goto fail;
            opv = no;
        }
        opv[n_opv++] = ops[k];
        if (!nv_push(p, &kids, sub(p))) goto fail;
    }
    if (kids.n == 0) return first;
    jnode *n = node(p, kind, at);
    if (!n) goto fail;
    n->line = first->line;
    n->col = first->col;
    n->ops = arena(p, n_opv);
    if (!n->ops) goto fail;
    memcpy(n->ops, opv, n_opv);
    jfree(p->c, opv);
    n->kids = nv_done(p, &kids, &n->n_kids);
    return n->kids ? n : NULL;
fail:
    jfree(p->c, kids.v);
    jfree(p->c, opv);
    return NULL;
}

static jnode *parse_unary_f(parser *p) { return parse_unary(p, true); }
static jnode *parse_pow(parser *p) {
    static const uint8_t ops[] = {OP_POW};
    return chain(p, parse_unary(p, true), N_ARITH, parse_unary_f, ops, 1);
}
static jnode *parse_math2(parser *p) {
    static const uint8_t ops[] = {OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD};
    return chain(p, parse_pow(p), N_ARITH, parse_pow, ops, 4);
}
static jnode *parse_concat(parser *p) {
    static const uint8_t ops[] = {OP_TILDE};
    return chain(p, parse_math2(p), N_CONCAT, parse_math2, ops, 1);
}
static jnode *parse_math1(parser *p) {
    static const uint8_t ops[] = {OP_ADD, OP_SUB};
    return chain(p, parse_concat(p), N_ARITH, parse_concat, ops, 2);
}

static jnode *parse_compare(parser *p) {
    jnode *first = parse_math1(p);
    if (!first) return NULL;
    nvec kids = {0};
    uint8_t opv[64];
    size_t n_opv = 0;
    jtok *at = cur(p);
    for (;;) {
        jtok *t = cur(p);
        uint8_t op;
        if (t->type == TK_OP && (t->op == OP_EQ || t->op == OP_NE || t->op == OP_LT || t->op == OP_LE ||
                                 t->op == OP_GT || t->op == OP_GE)) {
            op = t->op;
            next(p);
        } else if (is_name(t, "in")) {
            op = OP_IN;
            next(p);
        } else if (is_name(t, "not") && is_name(look(p), "in")) {
            op = OP_NOTIN;
            next(p);
            next(p);
        } else {
            break;
        }
        if (n_opv == sizeof opv) {
            jfree(p->c, kids.v);
            return pfail(p, t, PLUMB_E_RANGE, "%s", "a comparison chain of more than 64 operators");
        }
        if (kids.n == 0 && !nv_push(p, &kids, first)) goto fail;
        opv[n_opv++] = op;
        if (!nv_push(p, &kids, parse_math1(p))) goto fail;
    }
    if (kids.n == 0) return first;
    jnode *n = node(p, N_CMP, at);
    if (!n) goto fail;
    n->line = first->line;
    n->col = first->col;
    n->ops = arena(p, n_opv);
    if (!n->ops) goto fail;
    memcpy(n->ops, opv, n_opv);
    n->kids = nv_done(p, &kids, &n->n_kids);
    return n->kids ? n : NULL;
fail:
    jfree(p->c, kids.v);
    return NULL;
}

static jnode *parse_not(parser *p) {
    jtok *t = cur(p);
    if (is_name(t, "not")) {
        next(p);
        if (!deeper(p)) return NULL;
        jnode *operand = parse_not(p);
        p->depth--;
        if (!operand) return NULL;
        jnode *n = node(p, N_NOT, t);
        if (!n) return NULL;
        n->a = operand;
        return n;
    }
    return parse_compare(p);
}

/* a and b and c / a or b or c, as one n-ary node. */
static jnode *bool_chain(parser *p, uint8_t kind, const char *word, jnode *(*sub)(parser *)) {
    jnode *first = sub(p);
    if (!first || !is_name(cur(p), word)) return first;
    nvec kids = {0};
    if (!nv_push(p, &kids, first)) return NULL;
    while (is_name(cur(p), word)) {
        next(p);
        if (!nv_push(p, &kids, sub(p))) {
            jfree(p->c, kids.v);
            return NULL;
        }
    }
    jnode *n = node(p, kind, p->t + p->i);
    if (!n) {
        jfree(p->c, kids.v);
        return NULL;
    }
    n->line = first->line;
    n->col = first->col;
    n->kids = nv_done(p, &kids, &n->n_kids);
    return n->kids ? n : NULL;
}

static jnode *parse_and(parser *p) { return bool_chain(p, N_AND, "and", parse_not); }
static jnode *parse_or(parser *p) { return bool_chain(p, N_OR, "or", parse_and); }

static jnode *parse_condexpr(parser *p) {
    jnode *e1 = parse_or(p);
    while (e1 && is_name(cur(p), "if")) {
        jtok *t = cur(p);
        next(p);
        jnode *e2 = parse_or(p), *e3 = NULL;
        if (!e2) return NULL;
        if (is_name(cur(p), "else")) {
            next(p);
            if (!deeper(p)) return NULL;
            e3 = parse_condexpr(p);
            p->depth--;
            if (!e3) return NULL;
        }
        jnode *n = node(p, N_COND, t);
        if (!n) return NULL;
        n->a = e2;
        n->b = e1;
        n->c = e3;
        e1 = n;
    }
    return e1;
}

static jnode *parse_expression(parser *p, bool with_condexpr) {
    return with_condexpr ? parse_condexpr(p) : parse_or(p);
}

static bool tuple_end(parser *p, const char *extra_end) {
    jtok *t = cur(p);
    if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || t->type == TK_EOF || is_op(t, OP_RPAREN)) return true;
    return extra_end && is_name(t, extra_end);
}

static jnode *parse_tuple(parser *p, bool simplified, bool with_condexpr, const char *extra_end, bool explicit_parens) {
    jtok *at = cur(p);
    nvec args = {0};
    bool is_tuple = false;
    for (;;) {
        if (args.n && !expect_op(p, OP_COMMA)) goto fail;
        if (tuple_end(p, extra_end)) break;
        jnode *e = simplified ? parse_primary(p) : parse_expression(p, with_condexpr);
        if (!nv_push(p, &args, e)) goto fail;
        if (is_op(cur(p), OP_COMMA))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (args.n) {
            jnode *e = args.v[0];
            jfree(p->c, args.v);
            return e;
        }
        if (!explicit_parens) {
            jfree(p->c, args.v);
            return unexpected(p, "an expression");
        }
    }
    jnode *n = node(p, N_TUPLE, at);
    if (!n) goto fail;
    n->kids = nv_done(p, &args, &n->n_kids);
    return n->kids ? n : NULL;
fail:
    jfree(p->c, args.v);
    return NULL;
}

/* ---- statements -------------------------------------------------------------------------- */

static jnode *subparse(parser *p, const char *const *end_names);

/* Whether the token is one of the names. */
static bool name_in(const jtok *t, const char *const *names) {
    for (; names && *names; names++)
        if (is_name(t, *names)) return true;
    return false;
}

/* The body up to one of end_names; with drop_needle the end name is consumed too. */
static jnode *parse_statements(parser *p, const char *const *end_names, bool drop_needle) {
    if (is_op(cur(p), OP_COLON)) next(p);
    if (cur(p)->type != TK_BLOCK_END) return unexpected(p, "the end of the statement block");
    next(p);
    jnode *body = subparse(p, end_names);
    if (!body) return NULL;
    if (drop_needle) next(p);
    return body;
}

static bool assignable(const jnode *n) {
    if (n->kind == N_NAME || n->kind == N_NSREF) return true;
    if (n->kind != N_TUPLE) return false;
    for (uint32_t i = 0; i < n->n_kids; i++)
        if (!assignable(n->kids[i]) || n->kids[i]->kind == N_NSREF) return false;
    return true;
}

static jnode *parse_assign_target(parser *p, bool with_tuple, bool name_only, const char *extra_end,
                                  bool with_namespace) {
    jtok *t = cur(p);
    jnode *target;
    if (with_namespace && t->type == TK_NAME && is_op(look(p), OP_DOT)) {
        next(p);
        next(p);
        jtok *a = cur(p);
        if (a->type != TK_NAME) return unexpected(p, "an attribute name");
        next(p);
        target = node(p, N_NSREF, t);
        if (!target) return NULL;
        target->name = name_of(t);
        target->attr = name_of(a);
        return target;
    }
    if (name_only) {
        if (t->type != TK_NAME) return unexpected(p, "a name");
        next(p);
        target = node(p, N_NAME, t);
        if (!target) return NULL;
        target->name = name_of(t);
        return target;
    }
    target = with_tuple ? parse_tuple(p, true, true, extra_end, false) : parse_primary(p);
    if (!target) return NULL;
    if (!assignable(target)) return pfail(p, t, PLUMB_E_UNSUPPORTED, "%s", "cannot assign to this expression");
    return target;
}

static jnode *parse_for(parser *p, jtok *t) {
    jnode *n = node(p, N_FOR, t);
    if (!n) return NULL;
    if (!(n->a = parse_assign_target(p, true, false, "in", false)) || !expect_name(p, "in")) return NULL;
    if (!(n->b = parse_tuple(p, false, false, "recursive", false))) return NULL;
    if (is_name(cur(p), "if")) {
        next(p);
        if (!(n->c = parse_expression(p, true))) return NULL;
    }
    if (is_name(cur(p), "recursive"))
        return pfail(p, cur(p), PLUMB_E_UNSUPPORTED, "%s", "recursive for loops are not supported");
    static const char *const body_end[] = {"endfor", "else", NULL}, *const else_end[] = {"endfor", NULL};
    p->loops++;
    n->d = parse_statements(p, body_end, false);
    p->loops--;
    if (!n->d) return NULL;
    if (is_name(cur(p), "endfor")) {
        next(p);
    } else {
        next(p); /* else */
        uint32_t saved = p->loops;
        p->loops = 0; /* break in a for's else is outside the loop */
        n->e = parse_statements(p, else_end, true);
        p->loops = saved;
        if (!n->e) return NULL;
    }
    return n;
}

static jnode *parse_if(parser *p, jtok *t) {
    jnode *n = node(p, N_IF, t);
    if (!n) return NULL;
    static const char *const ends[] = {"elif", "else", "endif", NULL}, *const else_end[] = {"endif", NULL};
    if (!(n->a = parse_tuple(p, false, false, NULL, false))) return NULL;
    if (!(n->b = parse_statements(p, ends, false))) return NULL;
    jtok *e = cur(p);
    next(p);
    if (is_name(e, "elif")) {
        if (!deeper(p)) return NULL;
        n->c = parse_if(p, e);
        p->depth--;
        return n->c ? n : NULL;
    }
    if (is_name(e, "else")) {
        if (!(n->c = parse_statements(p, else_end, true))) return NULL;
    }
    return n;
}

static jnode *parse_set(parser *p, jtok *t) {
    jnode *target = parse_assign_target(p, true, false, NULL, true);
    if (!target) return NULL;
    if (is_op(cur(p), OP_ASSIGN)) {
        next(p);
        jnode *n = node(p, N_SET, t);
        if (!n) return NULL;
        n->a = target;
        n->b = parse_tuple(p, false, true, NULL, false);
        return n->b ? n : NULL;
    }
    if (target->kind == N_TUPLE) return unexpected(p, "'='");
    jnode *n = node(p, N_SETBLOCK, t);
    if (!n) return NULL;
    n->a = target;
    if (is_op(cur(p), OP_PIPE) && !(n->c = parse_filter(p, NULL, false))) return NULL;
    static const char *const ends[] = {"endset", NULL};
    n->b = parse_statements(p, ends, true);
    return n->b ? n : NULL;
}

static jnode *parse_macro(parser *p, jtok *t) {
    jnode *n = node(p, N_MACRO, t);
    if (!n) return NULL;
    jnode *name = parse_assign_target(p, false, true, NULL, false);
    if (!name) return NULL;
    n->name = name->name;
    if (!expect_op(p, OP_LPAREN)) return NULL;
    nvec params = {0}, defs = {0};
    bool ok = true, any_default = false;
    while (ok && !is_op(cur(p), OP_RPAREN)) {
        if (params.n && !expect_op(p, OP_COMMA)) {
            ok = false;
            break;
        }
        jnode *a = parse_assign_target(p, false, true, NULL, false);
        if (!(ok = nv_push(p, &params, a))) break;
        jnode *d = NULL;
        if (is_op(cur(p), OP_ASSIGN)) {
            next(p);
            if (!(d = parse_expression(p, true))) {
                ok = false;
                break;
            }
            any_default = true;
        } else if (any_default) {
            pfail(p, cur(p), PLUMB_E_UNSUPPORTED, "%s", "non-default argument follows default argument");
            ok = false;
            break;
        }
        /* defaults are kept aligned with the parameters: NULL where there is none */
        if (defs.n == defs.cap) {
            size_t cap = defs.cap ? defs.cap * 2 : 8;
            jnode **nd = jrealloc(p->c, defs.v, cap * sizeof *nd);
            if (!nd) {
                ok = false;
                break;
            }
            defs.v = nd;
            defs.cap = cap;
        }
        defs.v[defs.n++] = d;
    }
    if (ok) ok = expect_op(p, OP_RPAREN);
    if (ok) {
        uint32_t nd;
        n->kids = nv_done(p, &params, &n->n_kids);
        n->defs = nv_done(p, &defs, &nd);
        ok = n->kids && n->defs;
    } else {
        jfree(p->c, params.v);
        jfree(p->c, defs.v);
    }
    if (!ok) return NULL;
    jnode *saved_macro = p->macro;
    uint32_t saved_loops = p->loops;
    p->macro = n;
    p->loops = 0;
    static const char *const ends[] = {"endmacro", NULL};
    n->d = parse_statements(p, ends, true);
    p->macro = saved_macro;
    p->loops = saved_loops;
    return n->d ? n : NULL;
}

static jnode *parse_with(parser *p, jtok *t) {
    jnode *n = node(p, N_WITH, t);
    if (!n) return NULL;
    nvec targets = {0}, values = {0};
    bool ok = true;
    while (ok && cur(p)->type != TK_BLOCK_END) {
        if (targets.n && !expect_op(p, OP_COMMA)) {
            ok = false;
            break;
        }
        ok = nv_push(p, &targets, parse_assign_target(p, true, false, NULL, false)) && expect_op(p, OP_ASSIGN) &&
             nv_push(p, &values, parse_expression(p, true));
    }
    if (!ok) {
        jfree(p->c, targets.v);
        jfree(p->c, values.v);
        return NULL;
    }
    uint32_t nv;
    n->kids = nv_done(p, &targets, &n->n_kids);
    n->defs = nv_done(p, &values, &nv);
    if (!n->kids || !n->defs) return NULL;
    static const char *const ends[] = {"endwith", NULL};
    n->d = parse_statements(p, ends, true);
    return n->d ? n : NULL;
}

static jnode *parse_statement(parser *p) {
    jtok *t = cur(p);
    if (t->type != TK_NAME) return unexpected(p, "a statement name");
    if (!deeper(p)) return NULL;
    jnode *n = NULL;
    if (is_name(t, "for") || is_name(t, "if") || is_name(t, "set") || is_name(t, "macro") || is_name(t, "with") ||
        is_name(t, "filter") || is_name(t, "generation") || is_name(t, "break") || is_name(t, "continue"))
        next(p);
    if (is_name(t, "for"))
        n = parse_for(p, t);
    else if (is_name(t, "if"))
        n = parse_if(p, t);
    else if (is_name(t, "set"))
        n = parse_set(p, t);
    else if (is_name(t, "macro"))
        n = parse_macro(p, t);
    else if (is_name(t, "with"))
        n = parse_with(p, t);
    else if (is_name(t, "filter")) {
        n = node(p, N_FILTERBLOCK, t);
        static const char *const ends[] = {"endfilter", NULL};
        if (n && !(n->c = parse_filter(p, NULL, true))) n = NULL;
        if (n && !(n->d = parse_statements(p, ends, true))) n = NULL;
    } else if (is_name(t, "generation")) {
        /* Hugging Face's tag marking the assistant's text; rendering is unchanged */
        static const char *const ends[] = {"endgeneration", NULL};
        n = parse_statements(p, ends, true);
    } else if (is_name(t, "break") || is_name(t, "continue")) {
        if (!p->loops)
            n = pfail(p, t, PLUMB_E_UNSUPPORTED, "'%s' outside a for loop", is_name(t, "break") ? "break" : "continue");
        else
            n = node(p, is_name(t, "break") ? N_BREAK : N_CONTINUE, t);
    } else {
        static const char *const known[] = {"call",       "include", "extends", "import", "from",      "block",
                                            "autoescape", "raw",     "do",      "trans",  "pluralize", NULL};
        char nm[64];
        snprintf(nm, sizeof nm, "%.*s", (int)(t->n < 48 ? t->n : 48), t->p);
        n = pfail(p, t, PLUMB_E_UNSUPPORTED, name_in(t, known) ? "the '%s' tag is not supported" : "unknown tag '%s'",
                  nm);
    }
    p->depth--;
    return n;
}

static jnode *subparse(parser *p, const char *const *end_names) {
    nvec body = {0};
    jtok *start = cur(p);
    for (;;) {
        jtok *t = cur(p);
        if (t->type == TK_DATA) {
            jnode *n = node(p, N_TEXT, t);
            if (!n) goto fail;
            t->str->rc++;
            n->lit = jv_str(t->str);
            if (!keep_lit(p, n->lit) || !nv_push(p, &body, n)) goto fail;
            next(p);
        } else if (t->type == TK_VAR_BEGIN) {
            next(p);
            jnode *n = node(p, N_PRINT, t);
            if (!n || !(n->a = parse_tuple(p, false, true, NULL, false))) goto fail;
            if (cur(p)->type != TK_VAR_END) {
                unexpected(p, "the end of the print statement '}}'");
                goto fail;
            }
            next(p);
            if (!nv_push(p, &body, n)) goto fail;
        } else if (t->type == TK_BLOCK_BEGIN) {
            next(p);
            if (end_names && name_in(cur(p), end_names)) break;
            jnode *n = parse_statement(p);
            if (!n) goto fail;
            if (cur(p)->type != TK_BLOCK_END) {
                unexpected(p, "the end of the statement block '%}'");
                goto fail;
            }
            next(p);
            if (!nv_push(p, &body, n)) goto fail;
        } else if (t->type == TK_EOF) {
            if (end_names) {
                char want[96] = "";
                for (const char *const *e = end_names; *e; e++) {
                    strncat(want, e == end_names ? "'" : " or '", sizeof want - strlen(want) - 1);
                    strncat(want, *e, sizeof want - strlen(want) - 1);
                    strncat(want, "'", sizeof want - strlen(want) - 1);
                }
                pfail(p, t, PLUMB_E_UNSUPPORTED, "unexpected end of template, expected %s", want);
                goto fail;
            }
            break;
        } else {
            unexpected(p, "text, '{{' or '{%'");
            goto fail;
        }
    }
    jnode *b = node(p, N_BODY, start);
    if (!b) goto fail;
    b->kids = nv_done(p, &body, &b->n_kids);
    return b->kids ? b : NULL;
fail:
    jfree(p->c, body.v);
    return NULL;
}

int jparse(jctx *c, const char *src, size_t n, jtmpl *out) {
    *out = (jtmpl){0};
    jtok *toks;
    size_t n_toks;
    char *norm;
    if (jlex(c, src, n, &norm, &toks, &n_toks)) {
        jlex_free(c, norm, toks, n_toks);
        return -1;
    }
    out->src = norm;
    parser p = {.c = c, .t = toks, .n = n_toks, .tm = out};
    out->root = subparse(&p, NULL);
    jlex_free(c, NULL, toks, n_toks);
    if (!out->root) {
        jtmpl_free(c, out);
        return -1;
    }
    return 0;
}

void jtmpl_free(jctx *c, jtmpl *t) {
    for (size_t i = 0; i < t->n_lits; i++) jv_release(c, t->lits[i]);
    jfree(c, t->lits);
    jarena_chunk *ch = t->chunks;
    while (ch) {
        jarena_chunk *nx = ch->next;
        jfree(c, ch);
        ch = nx;
    }
    jfree(c, t->src);
    *t = (jtmpl){0};
}
