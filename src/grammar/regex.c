/* regex.c — the `pattern` keyword: an ECMA-262 regular expression subset compiled to the
 * grammar of the JSON strings it matches, and the built-in `format`s written as such patterns.
 *
 * The subset (docs/structured-output.md): literal characters, escapes (\d \D \w \W \s \S, \t
 * \n \r \f \v \0, \xHH, \uHHHH, \u{H...}, \cX, a backslash before any other non-alphanumeric
 * character), classes [...] with ranges and ^, `.` (anything but \n \r U+2028 U+2029), groups
 * ( ) (?: ) (?<name> ), alternation |, quantifiers * + ? {m} {m,} {m,n} (lazy forms match the
 * same strings), and the anchors ^ and $ at the start and end of the pattern or of a
 * top-level alternative. Characters are code points (as with ECMA's u flag). A pattern
 * searches: an alternative without ^ may be preceded by anything, one without $ followed by
 * anything. Backreferences, lookaround, \b and \B, \p{...} and flags are refused.
 *
 * The pattern parses into a small tree (sets of code points, sequences, alternations,
 * repetitions), which is then written out, each set as the rule of its JSON spellings. */
#include "grammar/json_schema.h"

#include <stdlib.h>
#include <string.h>

enum { RX_SET, RX_CAT, RX_ALT, RX_REP, RX_BOL, RX_EOL };

typedef struct rx_node {
    int kind;
    uint32_t kid, next; /* first child, next sibling: index + 1, 0 for none */
    uint32_t min, max;  /* RX_REP: the count */
    js_cset set;        /* RX_SET */
} rx_node;

typedef struct rx {
    js_out *o;
    const char *pat, *p, *end;
    const char *where; /* the schema's JSON pointer, for messages */
    rx_node *n;
    uint32_t len, cap;
    int depth;
} rx;

#define RX_MAX_DEPTH (JS_MAX_DEPTH / 2)

static bool fail_syntax(rx *r, const char *what) {
    plumb__js_fail(r->o, PLUMB_E_INVALID_ARG, "pattern at %s: %s at offset %zu", r->where, what,
                   (size_t)(r->p - r->pat));
    return false;
}

static bool fail_unsupported(rx *r, const char *what) {
    plumb__js_fail(r->o, PLUMB_E_UNSUPPORTED, "pattern at %s: %s (offset %zu) is not supported", r->where, what,
                   (size_t)(r->p - r->pat));
    return false;
}

/* A new node: index + 1, or 0 on failure. */
static uint32_t node(rx *r, int kind) {
    if (r->o->st || !plumb__js_work(r->o)) return 0;
    if (r->len == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 32;
        rx_node *n = realloc(r->n, cap * sizeof *n);
        if (!n) {
            plumb__js_fail(r->o, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
            return 0;
        }
        r->n = n;
        r->cap = cap;
    }
    memset(&r->n[r->len], 0, sizeof r->n[0]);
    r->n[r->len].kind = kind;
    return ++r->len;
}

#define N(i) (r->n[(i) - 1])

static void add_kid(rx *r, uint32_t parent, uint32_t *last, uint32_t kid) {
    if (*last)
        N(*last).next = kid;
    else
        N(parent).kid = kid;
    *last = kid;
}

/* ---- character classes ---- */

static void add_class(rx *r, js_cset *s, char which) {
    static const uint32_t space[][2] = {{0x09, 0x0D}, {0x20, 0x20}, {0xA0, 0xA0}, {0x1680, 0x1680},
                                        {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
                                        {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
    js_cset t = {0};
    switch (which | 0x20) {
    case 'd': plumb__cset_add(r->o, &t, '0', '9'); break;
    case 'w':
        plumb__cset_add(r->o, &t, '0', '9');
        plumb__cset_add(r->o, &t, 'A', 'Z');
        plumb__cset_add(r->o, &t, '_', '_');
        plumb__cset_add(r->o, &t, 'a', 'z');
        break;
    default:
        for (size_t i = 0; i < sizeof space / sizeof space[0]; i++) plumb__cset_add(r->o, &t, space[i][0], space[i][1]);
    }
    if (which >= 'A' && which <= 'Z') plumb__cset_negate(r->o, &t);
    plumb__cset_add_set(r->o, s, &t);
    plumb__cset_free(&t);
}

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
    return -1;
}

/* n hex digits at r->p into *v. */
static bool hex_n(rx *r, int n, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (r->p >= r->end || hex_val(*r->p) < 0) return fail_syntax(r, "bad hex escape");
        *v = *v << 4 | (uint32_t)hex_val(*r->p++);
    }
    return true;
}

/* \u escapes, a surrogate pair read as one code point. */
static bool u_escape(rx *r, uint32_t *cp) {
    if (r->p < r->end && *r->p == '{') {
        r->p++;
        uint32_t v = 0;
        int n = 0;
        while (r->p < r->end && hex_val(*r->p) >= 0 && n < 8) v = v << 4 | (uint32_t)hex_val(*r->p++), n++;
        if (!n || r->p >= r->end || *r->p != '}' || v > 0x10FFFF) return fail_syntax(r, "bad \\u{...} escape");
        r->p++;
        *cp = v;
    } else if (!hex_n(r, 4, cp)) {
        return false;
    }
    if (*cp >= 0xD800 && *cp <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
        const char *save = r->p;
        uint32_t lo;
        r->p += 2;
        if (hex_n(r, 4, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
            *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
            return true;
        }
        if (r->o->st) return false;
        r->p = save;
    }
    if (*cp >= 0xD800 && *cp <= 0xDFFF) return fail_unsupported(r, "a lone surrogate");
    return true;
}

/* The escape after a backslash (r->p past it) into *s: one code point or a class.
 * in_class: inside [...], where \b is backspace. Sets *is_class for \d \w \s and kin. */
static bool escape(rx *r, js_cset *s, bool in_class, bool *is_class, uint32_t *cp) {
    *is_class = false;
    if (r->p >= r->end) return fail_syntax(r, "a pattern ends with a backslash");
    char c = *r->p++;
    switch (c) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        add_class(r, s, c);
        *is_class = true;
        return true;
    case 't': *cp = '\t'; break;
    case 'n': *cp = '\n'; break;
    case 'r': *cp = '\r'; break;
    case 'f': *cp = '\f'; break;
    case 'v': *cp = '\v'; break;
    case '0':
        if (r->p < r->end && *r->p >= '0' && *r->p <= '9') return fail_unsupported(r, "an octal escape");
        *cp = 0;
        break;
    case 'x':
        if (!hex_n(r, 2, cp)) return false;
        break;
    case 'u':
        if (!u_escape(r, cp)) return false;
        break;
    case 'c':
        if (r->p >= r->end || !((*r->p | 0x20) >= 'a' && (*r->p | 0x20) <= 'z'))
            return fail_syntax(r, "\\c needs a letter");
        *cp = (uint32_t)(*r->p++ % 32);
        break;
    case 'b':
        if (!in_class) return fail_unsupported(r, "the word boundary \\b");
        *cp = 0x08;
        break;
    default:
        if ((c >= '0' && c <= '9')) return fail_unsupported(r, "a backreference");
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            r->p--;
            return fail_unsupported(r, "this escape");
        }
        /* identity escape of a syntax character or other punctuation */
        r->p--;
        {
            size_t i = (size_t)(r->p - r->pat);
            if (!plumb__utf8_next(r->pat, (size_t)(r->end - r->pat), &i, cp)) return fail_syntax(r, "invalid UTF-8");
            r->p = r->pat + i;
        }
    }
    plumb__cset_add(r->o, s, *cp, *cp);
    return true;
}

/* One literal code point at r->p. */
static bool literal(rx *r, uint32_t *cp) {
    size_t i = (size_t)(r->p - r->pat);
    if (!plumb__utf8_next(r->pat, (size_t)(r->end - r->pat), &i, cp)) return fail_syntax(r, "invalid UTF-8");
    r->p = r->pat + i;
    return true;
}

/* [...] with r->p just past '['. */
static uint32_t parse_class(rx *r) {
    uint32_t n = node(r, RX_SET);
    if (!n) return 0;
    js_cset *s = &N(n).set;
    bool negate = r->p < r->end && *r->p == '^';
    if (negate) r->p++;
    while (true) {
        if (r->p >= r->end) return fail_syntax(r, "an unclosed '['"), 0;
        if (*r->p == ']') break;
        uint32_t lo, hi;
        bool is_class = false;
        js_cset one = {0};
        if (*r->p == '\\') {
            r->p++;
            if (!escape(r, &one, true, &is_class, &lo)) return plumb__cset_free(&one), 0;
        } else if (!literal(r, &lo)) {
            return 0;
        }
        if (is_class) {
            plumb__cset_add_set(r->o, s, &one);
            plumb__cset_free(&one);
            if (r->end - r->p >= 2 && r->p[0] == '-' && r->p[1] != ']')
                return fail_unsupported(r, "a range from a class escape"), 0;
            continue;
        }
        plumb__cset_free(&one);
        hi = lo;
        if (r->end - r->p >= 2 && r->p[0] == '-' && r->p[1] != ']') {
            r->p++;
            if (*r->p == '\\') {
                r->p++;
                js_cset other = {0};
                bool cls = false;
                bool ok = escape(r, &other, true, &cls, &hi);
                plumb__cset_free(&other);
                if (!ok) return 0;
                if (cls) return fail_unsupported(r, "a range to a class escape"), 0;
            } else if (!literal(r, &hi)) {
                return 0;
            }
            if (hi < lo) return fail_syntax(r, "a range out of order"), 0;
        }
        plumb__cset_add(r->o, s, lo, hi);
    }
    r->p++;
    if (negate) plumb__cset_negate(r->o, s);
    return r->o->st ? 0 : n;
}

static uint32_t parse_alt(rx *r);

/* Reads a count at r->p; false (nothing consumed) when there is no number. */
static bool count(rx *r, uint32_t *v) {
    const char *p = r->p;
    uint64_t x = 0;
    while (p < r->end && *p >= '0' && *p <= '9' && x <= JS_MAX_REPEAT) x = x * 10 + (uint64_t)(*p++ - '0');
    if (p == r->p) return false;
    while (p < r->end && *p >= '0' && *p <= '9') p++;
    *v = x > JS_MAX_REPEAT ? JS_MAX_REPEAT + 1 : (uint32_t)x;
    r->p = p;
    return true;
}

/* {m}, {m,}, {m,n} at r->p ('{'): true with the counts, or false and r->p unchanged when
 * the brace is a literal. */
static bool braces(rx *r, uint32_t *min, uint32_t *max) {
    const char *save = r->p;
    r->p++;
    if (!count(r, min)) goto literal;
    *max = *min;
    if (r->p < r->end && *r->p == ',') {
        r->p++;
        if (!count(r, max)) *max = JS_INF;
    }
    if (r->p >= r->end || *r->p != '}') goto literal;
    r->p++;
    return true;
literal:
    r->p = save;
    return false;
}

/* An atom and its quantifier. Returns the node, 0 on failure. */
static uint32_t parse_piece(rx *r) {
    uint32_t atom = 0;
    char c = *r->p;
    if (c == '(') {
        r->p++;
        if (r->p < r->end && *r->p == '?') {
            if (r->end - r->p >= 2 && r->p[1] == ':') {
                r->p += 2;
            } else if (r->end - r->p >= 3 && r->p[1] == '<' && r->p[2] != '=' && r->p[2] != '!') {
                r->p += 2;
                while (r->p < r->end && *r->p != '>') r->p++;
                if (r->p >= r->end) return fail_syntax(r, "an unclosed group name"), 0;
                r->p++;
            } else {
                return fail_unsupported(r, "lookaround or a group flag"), 0;
            }
        }
        if (++r->depth > RX_MAX_DEPTH) {
            plumb__js_fail(r->o, PLUMB_E_RANGE, "pattern at %s: groups nested deeper than %d", r->where,
                           RX_MAX_DEPTH);
            return 0;
        }
        atom = parse_alt(r);
        r->depth--;
        if (!atom) return 0;
        if (r->p >= r->end || *r->p != ')') return fail_syntax(r, "an unclosed '('"), 0;
        r->p++;
    } else if (c == '[') {
        r->p++;
        atom = parse_class(r);
    } else if (c == '^' || c == '$') {
        r->p++;
        atom = node(r, c == '^' ? RX_BOL : RX_EOL);
    } else if (c == '.') {
        r->p++;
        if ((atom = node(r, RX_SET))) {
            js_cset *s = &N(atom).set;
            plumb__cset_add(r->o, s, '\n', '\n');
            plumb__cset_add(r->o, s, '\r', '\r');
            plumb__cset_add(r->o, s, 0x2028, 0x2029);
            plumb__cset_negate(r->o, s);
        }
    } else if (c == '*' || c == '+' || c == '?') {
        return fail_syntax(r, "nothing to repeat"), 0;
    } else if (c == '{') {
        uint32_t m, x;
        if (braces(r, &m, &x)) return fail_syntax(r, "nothing to repeat"), 0;
        r->p++;
        if ((atom = node(r, RX_SET))) plumb__cset_add(r->o, &N(atom).set, '{', '{');
    } else {
        uint32_t cp;
        bool is_class;
        if (!(atom = node(r, RX_SET))) return 0;
        if (c == '\\') {
            r->p++;
            if (!escape(r, &N(atom).set, false, &is_class, &cp)) return 0;
        } else {
            if (!literal(r, &cp)) return 0;
            plumb__cset_add(r->o, &N(atom).set, cp, cp);
        }
    }
    if (!atom || r->o->st) return 0;
    /* quantifier */
    uint32_t min, max;
    if (r->p >= r->end) return atom;
    c = *r->p;
    if (c == '*') min = 0, max = JS_INF, r->p++;
    else if (c == '+') min = 1, max = JS_INF, r->p++;
    else if (c == '?') min = 0, max = 1, r->p++;
    else if (c != '{' || !braces(r, &min, &max)) return atom;
    if (N(atom).kind == RX_BOL || N(atom).kind == RX_EOL) return fail_syntax(r, "an anchor repeated"), 0;
    if ((min != JS_INF && min > JS_MAX_REPEAT) || (max != JS_INF && max > JS_MAX_REPEAT)) {
        plumb__js_fail(r->o, PLUMB_E_RANGE, "pattern at %s: a count past %u", r->where, JS_MAX_REPEAT);
        return 0;
    }
    if (min > max) return fail_syntax(r, "a count out of order"), 0;
    if (r->p < r->end && *r->p == '?') r->p++; /* lazy: the same strings */
    if (r->p < r->end && (*r->p == '*' || *r->p == '+' || *r->p == '?' ||
                          (*r->p == '{' && braces(r, &(uint32_t){0}, &(uint32_t){0}))))
        return fail_syntax(r, "nothing to repeat"), 0;
    uint32_t rep = node(r, RX_REP);
    if (!rep) return 0;
    N(rep).kid = atom;
    N(rep).min = min;
    N(rep).max = max;
    return rep;
}

static uint32_t parse_seq(rx *r) {
    uint32_t cat = node(r, RX_CAT), last = 0;
    if (!cat) return 0;
    while (r->p < r->end && *r->p != '|' && *r->p != ')') {
        uint32_t piece = parse_piece(r);
        if (!piece) return 0;
        add_kid(r, cat, &last, piece);
    }
    return cat;
}

static uint32_t parse_alt(rx *r) {
    uint32_t first = parse_seq(r);
    if (!first || r->p >= r->end || *r->p != '|') return first;
    uint32_t alt = node(r, RX_ALT), last = 0;
    if (!alt) return 0;
    add_kid(r, alt, &last, first);
    while (r->p < r->end && *r->p == '|') {
        r->p++;
        uint32_t seq = parse_seq(r);
        if (!seq) return 0;
        add_kid(r, alt, &last, seq);
    }
    return alt;
}

/* ---- lengths ---- */

static uint32_t add_len(uint32_t a, uint32_t b) { return a == JS_INF || b == JS_INF || a + b > 100000000u ? JS_INF : a + b; }
static uint32_t mul_len(uint32_t a, uint32_t k) { return a == JS_INF || (k && (k == JS_INF || a > 100000000u / k)) ? (k ? JS_INF : 0) : a * k; }

/* The shortest and longest strings node i matches (JS_INF: no longest). */
static void lengths(rx *r, uint32_t i, uint32_t *min, uint32_t *max) {
    rx_node *n = &N(i);
    switch (n->kind) {
    case RX_SET: *min = *max = 1; return;
    case RX_BOL: case RX_EOL: *min = *max = 0; return;
    case RX_REP: {
        uint32_t a, b;
        lengths(r, n->kid, &a, &b);
        *min = mul_len(a, n->min);
        *max = n->max == JS_INF && b ? JS_INF : mul_len(b, n->max);
        return;
    }
    case RX_CAT:
        *min = *max = 0;
        for (uint32_t k = n->kid; k; k = N(k).next) {
            uint32_t a, b;
            lengths(r, k, &a, &b);
            *min = add_len(*min, a);
            *max = add_len(*max, b);
        }
        return;
    default:
        *min = JS_INF, *max = 0;
        for (uint32_t k = n->kid; k; k = N(k).next) {
            uint32_t a, b;
            lengths(r, k, &a, &b);
            if (a < *min) *min = a;
            if (b > *max) *max = b;
        }
        return;
    }
}

/* ---- writing the grammar ---- */

enum { OUT_NOTHING, OUT_EMPTY, OUT_TEXT };

typedef struct piece {
    int kind;
    bool single; /* one name or one parenthesized group: takes a quantifier as it is */
    js_buf text;
} piece;

static void emit(rx *r, uint32_t i, piece *out);

static bool nullable(rx *r, uint32_t i) {
    uint32_t a, b;
    lengths(r, i, &a, &b);
    return a == 0;
}

/* Node i without the empty string: what a repeated group may be, so that the repetition
 * cannot go round without consuming (the grammar parser refuses that as left recursion). */
static void emit_nonempty(rx *r, uint32_t i, piece *out) {
    rx_node *n = &N(i);
    memset(out, 0, sizeof *out);
    if (!nullable(r, i)) {
        emit(r, i, out);
        return;
    }
    if (r->o->st || !plumb__js_work(r->o)) return;
    if (n->kind == RX_REP) { /* x{m,n} minus "" is (x minus ""){1,n} */
        piece in;
        emit_nonempty(r, n->kid, &in);
        if (in.kind != OUT_TEXT || n->max == 0) {
            plumb__js_buf_free(&in.text);
            out->kind = OUT_NOTHING;
            return;
        }
        out->kind = OUT_TEXT;
        plumb__js_puts(r->o, &out->text, in.single ? "" : "( ");
        plumb__js_put(r->o, &out->text, in.text.p, in.text.len);
        plumb__js_puts(r->o, &out->text, in.single ? "" : " )");
        if (n->max == JS_INF)
            plumb__js_puts(r->o, &out->text, "+");
        else if (n->max > 1)
            plumb__js_printf(r->o, &out->text, "{1,%u}", n->max);
        plumb__js_buf_free(&in.text);
        out->single = n->max == 1 && in.single;
        return;
    }
    /* alternation or sequence: the alternatives that consume something first */
    bool first = true;
    out->kind = OUT_NOTHING;
    plumb__js_puts(r->o, &out->text, "( ");
    for (uint32_t k = n->kid; k; k = N(k).next) {
        piece head;
        emit_nonempty(r, k, &head);
        if (head.kind == OUT_TEXT) {
            piece tail = {.kind = OUT_EMPTY};
            bool dead = false;
            if (n->kind == RX_CAT)
                for (uint32_t t = N(k).next; t && !dead; t = N(t).next) {
                    piece p;
                    emit(r, t, &p);
                    dead = p.kind == OUT_NOTHING;
                    if (p.kind == OUT_TEXT) {
                        plumb__js_puts(r->o, &tail.text, " ");
                        plumb__js_put(r->o, &tail.text, p.text.p, p.text.len);
                    }
                    plumb__js_buf_free(&p.text);
                }
            if (!dead) {
                if (!first) plumb__js_puts(r->o, &out->text, " | ");
                first = false;
                plumb__js_put(r->o, &out->text, head.text.p, head.text.len);
                plumb__js_put(r->o, &out->text, tail.text.p, tail.text.len);
                out->kind = OUT_TEXT;
            }
            plumb__js_buf_free(&tail.text);
        }
        plumb__js_buf_free(&head.text);
        if (n->kind == RX_CAT && !nullable(r, k)) break; /* later ones cannot lead */
    }
    plumb__js_puts(r->o, &out->text, " )");
    out->single = true;
}

static void emit(rx *r, uint32_t i, piece *out) {
    rx_node *n = &N(i);
    memset(out, 0, sizeof *out);
    if (r->o->st || !plumb__js_work(r->o)) return;
    switch (n->kind) {
    case RX_BOL: case RX_EOL:
        plumb__js_fail(r->o, PLUMB_E_UNSUPPORTED,
                       "pattern at %s: '^' and '$' are supported only at the start and end of the pattern or of a "
                       "top-level alternative",
                       r->where);
        return;
    case RX_SET: {
        js_name c = plumb__js_char_rule(r->o, &n->set);
        out->kind = js_is_nothing(&c) ? OUT_NOTHING : OUT_TEXT;
        out->single = true;
        plumb__js_puts(r->o, &out->text, c.s);
        return;
    }
    case RX_REP: {
        piece in;
        if (n->max == JS_INF && nullable(r, n->kid))
            emit_nonempty(r, n->kid, &in);
        else
            emit(r, n->kid, &in);
        if (in.kind != OUT_TEXT || n->max == 0) {
            out->kind = in.kind == OUT_NOTHING && n->min > 0 ? OUT_NOTHING : OUT_EMPTY;
            if (in.kind == OUT_NOTHING && n->max == JS_INF && nullable(r, n->kid)) out->kind = OUT_EMPTY;
            plumb__js_buf_free(&in.text);
            return;
        }
        out->kind = OUT_TEXT;
        plumb__js_puts(r->o, &out->text, in.single ? "" : "( ");
        plumb__js_put(r->o, &out->text, in.text.p, in.text.len);
        plumb__js_puts(r->o, &out->text, in.single ? "" : " )");
        plumb__js_buf_free(&in.text);
        uint32_t lo = n->min, hi = n->max;
        if (hi == JS_INF && nullable(r, n->kid)) lo = 0; /* x* where x may be empty */
        if (lo == 0 && hi == JS_INF) plumb__js_puts(r->o, &out->text, "*");
        else if (lo == 1 && hi == JS_INF) plumb__js_puts(r->o, &out->text, "+");
        else if (lo == 0 && hi == 1) plumb__js_puts(r->o, &out->text, "?");
        else if (hi == JS_INF) plumb__js_printf(r->o, &out->text, "{%u,}", lo);
        else if (lo == hi && lo != 1) plumb__js_printf(r->o, &out->text, "{%u}", lo);
        else if (lo != hi) plumb__js_printf(r->o, &out->text, "{%u,%u}", lo, hi);
        out->single = false;
        return;
    }
    case RX_CAT: {
        out->kind = OUT_EMPTY;
        int parts = 0;
        bool single = false;
        for (uint32_t k = n->kid; k && out->kind != OUT_NOTHING; k = N(k).next) {
            piece p;
            emit(r, k, &p);
            if (p.kind == OUT_NOTHING) out->kind = OUT_NOTHING;
            if (p.kind == OUT_TEXT && out->kind != OUT_NOTHING) {
                if (parts++) plumb__js_puts(r->o, &out->text, " ");
                plumb__js_put(r->o, &out->text, p.text.p, p.text.len);
                out->kind = OUT_TEXT;
                single = p.single;
            }
            plumb__js_buf_free(&p.text);
        }
        out->single = parts == 1 && single;
        return;
    }
    default: { /* RX_ALT */
        bool empty = false;
        int parts = 0;
        js_buf body = {0};
        for (uint32_t k = n->kid; k; k = N(k).next) {
            piece p;
            emit(r, k, &p);
            if (p.kind == OUT_EMPTY) empty = true;
            if (p.kind == OUT_TEXT) {
                if (parts++) plumb__js_puts(r->o, &body, " | ");
                plumb__js_put(r->o, &body, p.text.p, p.text.len);
            }
            plumb__js_buf_free(&p.text);
        }
        out->kind = parts ? OUT_TEXT : empty ? OUT_EMPTY : OUT_NOTHING;
        if (parts) {
            plumb__js_puts(r->o, &out->text, "( ");
            plumb__js_put(r->o, &out->text, body.p, body.len);
            plumb__js_puts(r->o, &out->text, empty ? " )?" : " )");
        }
        out->single = !empty;
        plumb__js_buf_free(&body);
        return;
    }
    }
}

/* ---- the whole pattern ---- */

/* Anything, as the unanchored edge of an alternative. */
static uint32_t any_star(rx *r) {
    uint32_t set = node(r, RX_SET), rep = set ? node(r, RX_REP) : 0;
    if (!rep) return 0;
    plumb__cset_add(r->o, &N(set).set, 0, 0x10FFFF);
    N(rep).kid = set;
    N(rep).min = 0;
    N(rep).max = JS_INF;
    return rep;
}

/* Drops the anchors at the edges of the sequence cat, adding "anything" where one is missing. */
static bool anchor(rx *r, uint32_t cat) {
    uint32_t first = N(cat).kid, last = first;
    while (last && N(last).next) last = N(last).next;
    bool bol = first && N(first).kind == RX_BOL, eol = last && N(last).kind == RX_EOL && last != (bol ? first : 0);
    if (bol) N(cat).kid = N(first).next; /* drop ^ */
    if (eol) {                            /* drop $ */
        uint32_t prev = 0;
        for (uint32_t k = N(cat).kid; k != last; k = N(k).next) prev = k;
        if (prev)
            N(prev).next = 0;
        else
            N(cat).kid = 0;
    }
    if (!bol) {
        uint32_t any = any_star(r);
        if (!any) return false;
        N(any).next = N(cat).kid;
        N(cat).kid = any;
    }
    if (!eol) {
        uint32_t any = any_star(r), k = N(cat).kid;
        if (!any) return false;
        if (!k) {
            N(cat).kid = any;
            return true;
        }
        while (N(k).next) k = N(k).next;
        N(k).next = any;
    }
    return true;
}

/* Fits the length bounds into the pattern: fine when they follow from it, and done exactly
 * when one piece of a single sequence is a repeated class (its count absorbs them). Returns
 * false when no string fits, failing with PLUMB_E_UNSUPPORTED when it cannot be done. */
static bool fit_length(rx *r, uint32_t top, uint32_t min_len, uint32_t max_len, bool *empty) {
    uint32_t a, b;
    lengths(r, top, &a, &b);
    *empty = false;
    if (min_len <= a && (max_len == JS_INF || (b != JS_INF && b <= max_len))) return true;
    if ((max_len != JS_INF && a > max_len) || (b != JS_INF && b < min_len)) return *empty = true, true;
    uint32_t var = 0, fixed = 0;
    bool ok = N(top).kind == RX_CAT;
    for (uint32_t k = ok ? N(top).kid : 0; k && ok; k = N(k).next) {
        uint32_t x, y;
        lengths(r, k, &x, &y);
        if (x == y) {
            fixed = add_len(fixed, x);
        } else if (!var && N(k).kind == RX_REP && N(N(k).kid).kind == RX_SET) {
            var = k;
        } else {
            ok = false;
        }
    }
    if (!ok || !var || fixed == JS_INF) {
        plumb__js_fail(r->o, PLUMB_E_UNSUPPORTED,
                       "minLength/maxLength with the pattern at %s: the length must follow from the pattern, or the "
                       "pattern must be one sequence with a single repeated character class",
                       r->where);
        return false;
    }
    uint32_t lo = min_len > fixed ? min_len - fixed : 0, hi = JS_INF;
    if (max_len != JS_INF) hi = max_len - fixed; /* max_len >= fixed: else a > max_len above */
    if (lo < N(var).min) lo = N(var).min;
    if (N(var).max < hi) hi = N(var).max;
    if (lo > hi) return *empty = true, true;
    if (lo > JS_MAX_REPEAT || (hi != JS_INF && hi > JS_MAX_REPEAT)) {
        plumb__js_fail(r->o, PLUMB_E_RANGE, "a string length at %s past %u", r->where, JS_MAX_REPEAT);
        return false;
    }
    N(var).min = lo;
    N(var).max = hi;
    return true;
}

bool plumb__js_pattern(js_out *o, js_buf *b, const char *pat, uint32_t min_len, uint32_t max_len, const char *where) {
    rx rr = {.o = o, .pat = pat, .p = pat, .end = pat + strlen(pat), .where = where}, *r = &rr;
    bool found = false;
    piece p = {0};
    uint32_t top = parse_alt(r);
    if (top && r->p < r->end) fail_syntax(r, "an unmatched ')'");
    if (o->st) goto done;
    /* the anchors of each top-level alternative */
    if (N(top).kind == RX_ALT) {
        for (uint32_t k = N(top).kid; k; k = N(k).next)
            if (!anchor(r, k)) goto done;
    } else if (!anchor(r, top)) {
        goto done;
    }
    bool empty;
    if (!fit_length(r, top, min_len, max_len, &empty) || empty) goto done;
    emit(r, top, &p);
    if (!o->st && p.kind != OUT_NOTHING) {
        plumb__js_puts(o, b, "\"\\\"\" ");
        plumb__js_put(o, b, p.text.p, p.text.len);
        plumb__js_puts(o, b, " \"\\\"\"");
        found = true;
    }
done:
    plumb__js_buf_free(&p.text);
    for (uint32_t i = 0; i < r->len; i++) plumb__cset_free(&r->n[i].set);
    free(r->n);
    return found && !o->st;
}

/* ---- formats ---- */

#define YEAR "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
#define LEAP "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
#define MONTH_DAY "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
#define DATE "(?:" YEAR "-" MONTH_DAY "|" LEAP "-02-29)"
#define TIME "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
#define HEX4 "[0-9a-fA-F]{4}"
#define ATEXT "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
#define LABEL "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"

static const struct {
    const char *name, *pattern;
} formats[] = {
    {"date", "^" DATE "$"},
    {"time", "^" TIME "$"},
    {"date-time", "^" DATE "[Tt]" TIME "$"},
    {"uuid", "^" HEX4 HEX4 "-" HEX4 "-" HEX4 "-" HEX4 "-" HEX4 HEX4 HEX4 "$"},
    {"email", "^" ATEXT "+(?:\\." ATEXT "+)*@" LABEL "(?:\\." LABEL ")+$"},
};

const char *plumb__js_format_pattern(const char *format) {
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (!strcmp(formats[i].name, format)) return formats[i].pattern;
    return NULL;
}
