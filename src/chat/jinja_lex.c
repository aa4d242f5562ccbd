/* jinja_lex.c — the lexer of plumb's Jinja engine: template text to tokens, reproducing
 * jinja2's lexer (3.1) with the settings Hugging Face renders chat templates with:
 * trim_blocks (a block or comment tag eats one newline after it), lstrip_blocks (spaces and
 * tabs before a block or comment tag on its own line are dropped), and whitespace control
 * ({%- -%} {{- -}} {#- -#} strip all whitespace on that side, {%+ keeps it).
 *
 * Whitespace here is Python's: \s and str.rstrip() both mean Unicode whitespace. Before
 * tokenizing, line ends (\r\n, \r) become \n and one trailing newline is dropped, as jinja2
 * does (keep_trailing_newline is off). Data tokens and string literals become marked strings:
 * they are the template's own text. */
#include "chat/jinja.h"

#include <stdio.h>
#include <string.h>

typedef struct lexer {
    jctx *c;
    const char *s;
    size_t n;
    size_t pos;
    /* a cursor for positions: line and column (in characters) of byte `at` */
    size_t at;
    uint32_t line, col;
    jtok *toks;
    size_t n_toks, cap;
    bool line_starting; /* the last thing consumed ended with a newline (or nothing was) */
} lexer;

static void pos_of(lexer *lx, size_t off, uint32_t *line, uint32_t *col) {
    while (lx->at < off) {
        unsigned char ch = (unsigned char)lx->s[lx->at++];
        if (ch == '\n') {
            lx->line++;
            lx->col = 1;
        } else if ((ch & 0xC0) != 0x80) {
            lx->col++;
        }
    }
    *line = lx->line;
    *col = lx->col;
}

static int lfail(lexer *lx, size_t off, plumb_status st, const char *fmt, const char *arg) {
    uint32_t line, col;
    pos_of(lx, off, &line, &col);
    return jfail_at(lx->c, line, col, st, fmt, arg);
}

static jtok *push(lexer *lx, uint8_t type, size_t off) {
    if (lx->n_toks == lx->cap) {
        size_t cap = lx->cap ? lx->cap * 2 : 256;
        jtok *nt = jrealloc(lx->c, lx->toks, cap * sizeof *nt);
        if (!nt) return NULL;
        lx->toks = nt;
        lx->cap = cap;
    }
    jtok *t = &lx->toks[lx->n_toks++];
    *t = (jtok){.type = type};
    pos_of(lx, off, &t->line, &t->col);
    t->p = lx->s + off;
    return t;
}

/* Length of Python whitespace (\s) at p, 0 when none. */
static size_t ws_at(const lexer *lx, size_t off) {
    if (off >= lx->n) return 0;
    unsigned char ch = (unsigned char)lx->s[off];
    if (ch < 0x80) return u_isspace(ch) ? 1 : 0;
    return u_space_at(lx->s + off, lx->n - off);
}

static size_t skip_ws(const lexer *lx, size_t off) {
    size_t l;
    while ((l = ws_at(lx, off)) > 0) off += l;
    return off;
}

static bool at(const lexer *lx, size_t off, const char *lit) {
    size_t m = strlen(lit);
    return off <= lx->n && lx->n - off >= m && memcmp(lx->s + off, lit, m) == 0;
}

/* Emits s[a..e) as a data token, after the whitespace rules for the tag that follows it:
 * sign '-' strips all trailing whitespace; otherwise, for a block or comment tag without '+',
 * lstrip_blocks drops the spaces between the last newline (or a line start) and the tag. */
static int emit_data(lexer *lx, size_t a, size_t e, char sign, bool lstrip_ok) {
    if (sign == '-') {
        while (e > a) {
            size_t st = e - 1;
            while (st > a && ((unsigned char)lx->s[st] & 0xC0) == 0x80) st--;
            if (!ws_at(lx, st) || ws_at(lx, st) != e - st) break;
            e = st;
        }
    } else if (sign != '+' && lstrip_ok) {
        size_t l = e;
        while (l > a && lx->s[l - 1] != '\n') l--;
        if (l > a || lx->line_starting) {
            size_t k = skip_ws(lx, l);
            if (k == e && e > l) e = l; /* only whitespace between the line start and the tag */
        }
    }
    if (e <= a) return 0;
    jtok *t = push(lx, TK_DATA, a);
    if (!t) return -1;
    t->str = jstr_new(lx->c, lx->s + a, e - a, true);
    return t->str ? 0 : -1;
}

/* The end of a block tag at off: "+%}", "-%}" plus whitespace, or "%}" plus one newline
 * (trim_blocks). Returns the offset after it, or 0 when there is none. `close` is "%}" or "#}". */
static size_t block_end_at(const lexer *lx, size_t off, const char *close) {
    if (at(lx, off, "+") && at(lx, off + 1, close)) return off + 3;
    if (at(lx, off, "-") && at(lx, off + 1, close)) return skip_ws(lx, off + 3);
    if (at(lx, off, close)) return off + 2 + (at(lx, off + 2, "\n") ? 1 : 0);
    return 0;
}

/* `{% raw %}` at off ("{%", optional sign, "raw", and the end): offset after it, or 0. */
static size_t raw_begin_at(const lexer *lx, size_t off) {
    size_t i = off + 2;
    if (at(lx, i, "-") || at(lx, i, "+")) i++;
    i = skip_ws(lx, i);
    if (!at(lx, i, "raw")) return 0;
    i = skip_ws(lx, i + 3);
    if (at(lx, i, "-%}")) return skip_ws(lx, i + 3);
    if (at(lx, i, "%}")) return i + 2;
    return 0;
}

/* `{% endraw %}` at off: offset after it (with its trim), or 0; *sign gets its sign. */
static size_t raw_end_at(const lexer *lx, size_t off, char *sign) {
    size_t i = off + 2;
    *sign = 0;
    if (at(lx, i, "-") || at(lx, i, "+")) *sign = lx->s[i++];
    i = skip_ws(lx, i);
    if (!at(lx, i, "endraw")) return 0;
    i = skip_ws(lx, i + 6);
    return block_end_at(lx, i, "%}");
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_name0(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }

/* (\d+_)*\d+ at off: the offset after it, or off when none. */
static size_t digits_at(const lexer *lx, size_t off) {
    size_t i = off;
    if (i >= lx->n || !is_digit(lx->s[i])) return off;
    for (;;) {
        while (i < lx->n && is_digit(lx->s[i])) i++;
        if (i + 1 < lx->n && lx->s[i] == '_' && is_digit(lx->s[i + 1])) {
            i++;
            continue;
        }
        return i;
    }
}

/* jinja2's float rule at off: digits, then ".digits" and/or "e[+-]digits". */
static size_t float_at(const lexer *lx, size_t off) {
    if (off > 0 && lx->s[off - 1] == '.') return 0;
    size_t i = digits_at(lx, off);
    if (i == off) return 0;
    bool frac = false;
    if (i < lx->n && lx->s[i] == '.') {
        size_t k = digits_at(lx, i + 1);
        if (k > i + 1) {
            i = k;
            frac = true;
        }
    }
    if (i < lx->n && (lx->s[i] == 'e' || lx->s[i] == 'E')) {
        size_t k = i + 1;
        if (k < lx->n && (lx->s[k] == '+' || lx->s[k] == '-')) k++;
        size_t e = digits_at(lx, k);
        if (e > k) return e;
    }
    return frac ? i : 0;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* jinja2's integer rule at off: 0b/0o/0x with optional underscores, [1-9](_?\d)*, 0(_?0)*.
 * Returns the end and the value (*overflow when past 64 bits). */
static size_t int_at(const lexer *lx, size_t off, int64_t *val, bool *overflow) {
    const char *s = lx->s;
    size_t n = lx->n, i = off;
    uint64_t v = 0;
    *overflow = false;
    if (i >= n || !is_digit(s[i])) return 0;
    int base = 10;
    if (s[i] == '0' && i + 1 < n &&
        (s[i + 1] == 'b' || s[i + 1] == 'B' || s[i + 1] == 'o' || s[i + 1] == 'O' || s[i + 1] == 'x' ||
         s[i + 1] == 'X')) {
        char k = (char)(s[i + 1] | 0x20);
        base = k == 'b' ? 2 : k == 'o' ? 8 : 16;
        size_t j = i + 2, last = 0;
        for (;;) {
            size_t q = j;
            if (q < n && s[q] == '_') q++;
            int d = q < n ? hexval(s[q]) : -1;
            if (d < 0 || d >= base) break;
            if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) *overflow = true;
            v = v * (uint64_t)base + (uint64_t)d;
            j = q + 1;
            last = j;
        }
        if (last) {
            if (v > (uint64_t)INT64_MAX) *overflow = true;
            *val = (int64_t)v;
            return last;
        }
        /* "0x" without digits: the rule for 0 below matches the "0" */
    }
    if (s[i] == '0') {
        i++;
        while (i < n && (s[i] == '0' || (s[i] == '_' && i + 1 < n && s[i + 1] == '0'))) i += s[i] == '_' ? 2 : 1;
        *val = 0;
        return i;
    }
    while (i < n && (is_digit(s[i]) || (s[i] == '_' && i + 1 < n && is_digit(s[i + 1])))) {
        if (s[i] != '_') {
            unsigned d = (unsigned)(s[i] - '0');
            if (v > (UINT64_MAX - d) / 10) *overflow = true;
            v = v * 10 + d;
        }
        i++;
    }
    if (v > (uint64_t)INT64_MAX) *overflow = true;
    *val = (int64_t)v;
    return i;
}

/* A string literal at off (quote at off): decodes it as jinja2 does (Python's unicode-escape
 * over the literal with non-ASCII characters backslash-replaced first). */
static int string_at(lexer *lx, size_t off, size_t *end, jstr **out) {
    char q = lx->s[off];
    size_t i = off + 1;
    jsb b;
    jsb_init(&b, lx->c);
    size_t run = i;
    for (;;) {
        if (i >= lx->n) {
            jsb_drop(&b);
            return lfail(lx, off, PLUMB_E_UNSUPPORTED, "unterminated string literal%s", "");
        }
        char ch = lx->s[i];
        if (ch == q) break;
        if (ch != '\\') {
            i++;
            continue;
        }
        if (jsb_put(&b, lx->s + run, i - run, true)) goto fail;
        if (i + 1 >= lx->n) {
            jsb_drop(&b);
            return lfail(lx, off, PLUMB_E_UNSUPPORTED, "unterminated string literal%s", "");
        }
        unsigned char e = (unsigned char)lx->s[i + 1];
        i += 2;
        char t[16];
        size_t tl = 0;
        uint32_t cp = 0;
        bool have_cp = false;
        switch (e) {
        case '\n': break; /* line continuation */
        case '\\': t[tl++] = '\\'; break;
        case '\'': t[tl++] = '\''; break;
        case '"': t[tl++] = '"'; break;
        case 'a': t[tl++] = 7; break;
        case 'b': t[tl++] = 8; break;
        case 'f': t[tl++] = 12; break;
        case 'n': t[tl++] = 10; break;
        case 'r': t[tl++] = 13; break;
        case 't': t[tl++] = 9; break;
        case 'v': t[tl++] = 11; break;
        case 'x':
        case 'u':
        case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            for (int k = 0; k < nd; k++) {
                int d = i + (size_t)k < lx->n ? hexval(lx->s[i + (size_t)k]) : -1;
                if (d < 0) {
                    jsb_drop(&b);
                    return lfail(lx, i - 2, PLUMB_E_UNSUPPORTED, "truncated \\%s escape in a string literal",
                                 e == 'x'   ? "x"
                                 : e == 'u' ? "u"
                                            : "U");
                }
                cp = cp * 16 + (uint32_t)d;
            }
            i += (size_t)nd;
            have_cp = true;
            break;
        }
        case 'N':
            jsb_drop(&b);
            return lfail(lx, i - 2, PLUMB_E_UNSUPPORTED, "\\N{...} escapes in string literals are not supported%s", "");
        default:
            if (e >= '0' && e <= '7') {
                cp = e - '0';
                for (int k = 0; k < 2 && i < lx->n && lx->s[i] >= '0' && lx->s[i] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(lx->s[i++] - '0');
                have_cp = true;
            } else if (e >= 0x80) {
                /* "\é": backslashreplace made it "\\xe9", which decodes to a backslash and "xe9" */
                uint32_t x;
                size_t l = utf8_dec((const unsigned char *)lx->s + i - 1, lx->n - (i - 1), &x);
                i = i - 1 + l;
                tl = (size_t)snprintf(t, sizeof t, x <= 0xFF ? "\\x%02x" : x <= 0xFFFF ? "\\u%04x" : "\\U%08x", x);
            } else {
                t[tl++] = '\\';
                t[tl++] = (char)e;
            }
        }
        if (have_cp) {
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                jsb_drop(&b);
                return lfail(lx, off, PLUMB_E_UNSUPPORTED, "string literal escape out of range (not UTF-8)%s", "");
            }
            tl = utf8_enc(cp, t);
        }
        if (tl && jsb_put(&b, t, tl, true)) goto fail;
        run = i;
    }
    if (jsb_put(&b, lx->s + run, i - run, true)) goto fail;
    *end = i + 1;
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
fail:
    jsb_drop(&b);
    return -1;
}

static const struct {
    const char *s;
    uint8_t op;
} ops[] = {
    {"//", OP_FLOORDIV}, {"**", OP_POW},      {"==", OP_EQ},    {"!=", OP_NE},    {">=", OP_GE},    {"<=", OP_LE},
    {"+", OP_ADD},       {"-", OP_SUB},       {"/", OP_DIV},    {"*", OP_MUL},    {"%", OP_MOD},    {"~", OP_TILDE},
    {"[", OP_LBRACKET},  {"]", OP_RBRACKET},  {"(", OP_LPAREN}, {")", OP_RPAREN}, {"{", OP_LBRACE}, {"}", OP_RBRACE},
    {">", OP_GT},        {"<", OP_LT},        {"=", OP_ASSIGN}, {".", OP_DOT},    {":", OP_COLON},  {"|", OP_PIPE},
    {",", OP_COMMA},     {";", OP_SEMICOLON},
};

/* The inside of a {{ }} or {% %} tag, from lx->pos, through its end token. */
static int lex_tag(lexer *lx, bool block) {
    char stack[256]; /* open brackets; deeper nesting fails (the parser caps nesting lower) */
    size_t depth = 0;
    size_t tag_start = lx->pos;
    for (;;) {
        size_t p = lx->pos;
        if (depth == 0) {
            size_t e = 0;
            if (block)
                e = block_end_at(lx, p, "%}");
            else if (at(lx, p, "-}}"))
                e = skip_ws(lx, p + 3);
            else if (at(lx, p, "}}"))
                e = p + 2;
            if (e) {
                if (!push(lx, block ? TK_BLOCK_END : TK_VAR_END, p)) return -1;
                lx->pos = e;
                lx->line_starting = lx->s[e - 1] == '\n';
                return 0;
            }
        }
        size_t w = skip_ws(lx, p);
        if (w > p) {
            lx->pos = w;
            continue;
        }
        if (p >= lx->n)
            return lfail(lx, tag_start, PLUMB_E_UNSUPPORTED, "unexpected end of template: the %s tag is not closed",
                         block ? "{%" : "{{");
        char ch = lx->s[p];
        size_t e;
        if (is_digit(ch) && (e = float_at(lx, p)) > 0) {
            char buf[64];
            size_t k = 0;
            for (size_t i = p; i < e && k < sizeof buf - 1; i++)
                if (lx->s[i] != '_') buf[k++] = lx->s[i];
            buf[k] = '\0';
            jtok *t = push(lx, TK_FLOAT, p);
            if (!t) return -1;
            t->f = jstrtod(buf, NULL);
            lx->pos = e;
            continue;
        }
        if (is_digit(ch)) {
            int64_t v;
            bool overflow;
            e = int_at(lx, p, &v, &overflow);
            if (overflow) return lfail(lx, p, PLUMB_E_RANGE, "integer literal past 64 bits%s", "");
            jtok *t = push(lx, TK_INT, p);
            if (!t) return -1;
            t->i = v;
            lx->pos = e;
            continue;
        }
        if (is_name0(ch)) {
            e = p + 1;
            while (e < lx->n && (is_name0(lx->s[e]) || is_digit(lx->s[e]))) e++;
            jtok *t = push(lx, TK_NAME, p);
            if (!t) return -1;
            t->n = e - p;
            lx->pos = e;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            jstr *s = NULL;
            e = p;
            if (string_at(lx, p, &e, &s)) return -1;
            jtok *t = push(lx, TK_STRING, p);
            if (!t) {
                jv_release(lx->c, jv_str(s));
                return -1;
            }
            t->str = s;
            lx->pos = e;
            continue;
        }
        size_t k = 0;
        for (; k < sizeof ops / sizeof ops[0]; k++)
            if (at(lx, p, ops[k].s)) break;
        if (k == sizeof ops / sizeof ops[0]) {
            char what[8];
            size_t l =
                ((unsigned char)ch < 0x80) ? 1 : utf8_dec((const unsigned char *)lx->s + p, lx->n - p, &(uint32_t){0});
            snprintf(what, sizeof what, "%.*s", (int)l, lx->s + p);
            return lfail(lx, p, PLUMB_E_UNSUPPORTED, "unexpected character '%s' in a tag", what);
        }
        uint8_t op = ops[k].op;
        if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) {
            if (depth == sizeof stack) return lfail(lx, p, PLUMB_E_RANGE, "brackets nested too deeply%s", "");
            stack[depth++] = op == OP_LPAREN ? ')' : op == OP_LBRACKET ? ']' : '}';
        } else if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
            if (depth == 0 || stack[depth - 1] != ch)
                return lfail(lx, p, PLUMB_E_UNSUPPORTED, "unexpected '%s'", ops[k].s);
            depth--;
        }
        jtok *t = push(lx, TK_OP, p);
        if (!t) return -1;
        t->op = op;
        lx->pos = p + strlen(ops[k].s);
    }
}

/* Everything from lx->pos: data, then tags, comments and raw blocks. */
static int lex_root(lexer *lx) {
    for (;;) {
        size_t p = lx->pos, t = p;
        /* the next "{{", "{%" or "{#" */
        for (;;) {
            const char *f = t < lx->n ? memchr(lx->s + t, '{', lx->n - t) : NULL;
            if (!f) {
                t = lx->n;
                break;
            }
            t = (size_t)(f - lx->s);
            if (t + 1 < lx->n && (lx->s[t + 1] == '{' || lx->s[t + 1] == '%' || lx->s[t + 1] == '#')) break;
            t++;
        }
        if (t >= lx->n) return emit_data(lx, p, lx->n, 0, false);
        char kind = lx->s[t + 1];
        char sign = t + 2 < lx->n && (lx->s[t + 2] == '-' || lx->s[t + 2] == '+') ? lx->s[t + 2] : 0;
        size_t raw_end = kind == '%' ? raw_begin_at(lx, t) : 0;
        if (emit_data(lx, p, t, sign, kind != '{')) return -1;
        if (raw_end) {
            lx->line_starting = lx->s[raw_end - 1] == '\n';
            size_t q = raw_end, after = 0;
            char esign = 0;
            for (;;) {
                const char *f = q < lx->n ? memmem(lx->s + q, lx->n - q, "{%", 2) : NULL;
                if (!f) return lfail(lx, t, PLUMB_E_UNSUPPORTED, "missing {%% endraw %%} for this raw block%s", "");
                q = (size_t)(f - lx->s);
                if ((after = raw_end_at(lx, q, &esign)) > 0) break;
                q++;
            }
            if (emit_data(lx, raw_end, q, esign, true)) return -1;
            lx->pos = after;
            lx->line_starting = lx->s[after - 1] == '\n';
            continue;
        }
        if (kind == '#') {
            size_t cs = t + 2 + (sign ? 1 : 0);
            const char *f = cs <= lx->n ? memmem(lx->s + cs, lx->n - cs, "#}", 2) : NULL;
            if (!f) return lfail(lx, t, PLUMB_E_UNSUPPORTED, "missing end of comment tag%s", "");
            size_t q = (size_t)(f - lx->s), e;
            if (q > cs && lx->s[q - 1] == '-')
                e = skip_ws(lx, q + 2);
            else if (q > cs && lx->s[q - 1] == '+')
                e = q + 2;
            else
                e = q + 2 + (at(lx, q + 2, "\n") ? 1 : 0);
            lx->pos = e;
            lx->line_starting = lx->s[e - 1] == '\n';
            continue;
        }
        if (!push(lx, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, t)) return -1;
        lx->pos = t + 2 + (sign ? 1 : 0);
        if (lex_tag(lx, kind == '%')) return -1;
    }
}

int jlex(jctx *c, const char *src, size_t n, char **src_norm, jtok **toks, size_t *n_toks) {
    *src_norm = NULL;
    *toks = NULL;
    *n_toks = 0;
    size_t ok = utf8_valid_prefix((const unsigned char *)src, n);
    if (ok != n) return jfail(c, PLUMB_E_INVALID_ARG, "the template is not UTF-8 (byte %zu)", ok);
    char *s = jalloc(c, n + 1);
    if (!s) return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[m++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            s[m++] = src[i];
        }
    }
    if (m > 0 && s[m - 1] == '\n') m--; /* keep_trailing_newline=False */
    s[m] = '\0';
    lexer lx = {.c = c, .s = s, .n = m, .line = 1, .col = 1, .line_starting = true};
    int rv = lex_root(&lx);
    if (!rv && !push(&lx, TK_EOF, m)) rv = -1;
    *src_norm = s;
    *toks = lx.toks;
    *n_toks = lx.n_toks;
    return rv;
}

void jlex_free(jctx *c, char *src_norm, jtok *toks, size_t n_toks) {
    for (size_t i = 0; i < n_toks; i++)
        if (toks[i].str) jv_release(c, jv_str(toks[i].str));
    jfree(c, toks);
    jfree(c, src_norm);
}
