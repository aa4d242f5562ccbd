/* gbnf.c — the GBNF parser: grammar text to the byte-level program of grammar.h.
 *
 * Literals become one byte-set element per UTF-8 byte; a character class over code points
 * becomes one byte-set element when it holds only ASCII, else a helper rule whose
 * alternatives are the UTF-8 byte sequences of its ranges; groups and repetitions become
 * helper rules (x* is R ::= x R | empty, with the reference last so that matching it does
 * not grow the stack). After parsing, every rule is checked for being defined, and for left
 * recursion (a rule reaching itself through references that can all match nothing). */
#include "core/error.h"
#include "grammar/grammar.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GR_INF UINT32_MAX

typedef struct evec {
    gr_elem *v;
    uint32_t n, cap;
} evec;

typedef struct brule {
    evec *alts;
    uint32_t n_alts, cap_alts;
    char *name;          /* NULL for a helper rule */
    size_t at;           /* where it is defined (a helper: where its construct starts) */
    size_t first_ref;    /* where it is first referenced (SIZE_MAX: never) */
    bool defined;
} brule;

typedef struct parser {
    const char *s;
    size_t len, pos;
    plumb_grammar_limits lim;
    brule *rules;
    uint32_t n_rules, cap_rules;
    uint64_t (*sets)[4];
    uint32_t n_sets, cap_sets;
    uint32_t *set_hash; /* open addressing: set index + 1, 0 empty */
    uint32_t set_hash_cap;
    uint32_t *name_hash; /* open addressing over the named rules: rule index + 1, 0 empty */
    uint32_t name_hash_cap, n_named;
    uint32_t total; /* elements so far */
    uint32_t depth;
    uint32_t any_rule; /* the helper of `.`, GR_INF until made */
} parser;

/* ---- errors ------------------------------------------------------------------------------ */

static void line_col(const parser *p, size_t at, size_t *line, size_t *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->s[i] == '\n') (*line)++, *col = 1;
        else if (((unsigned char)p->s[i] & 0xC0) != 0x80) (*col)++;
    }
}

__attribute__((format(printf, 4, 5))) static plumb_status fail_at(const parser *p, plumb_status st, size_t at,
                                                                  const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t line, col;
    line_col(p, at, &line, &col);
    return plumb__fail(st, "grammar %zu:%zu: %s", line, col, msg);
}

static plumb_status nomem(void) { return plumb__fail(PLUMB_E_NOMEM, "grammar: out of memory"); }

/* ---- building ---------------------------------------------------------------------------- */

static bool grow(void **v, uint32_t *cap, uint32_t need, size_t size) {
    if (need <= *cap) return true;
    uint32_t c = *cap ? *cap : 8;
    while (c < need) c = c > UINT32_MAX / 2 ? need : c * 2;
    void *g = realloc(*v, (size_t)c * size);
    if (!g) return false;
    *v = g;
    *cap = c;
    return true;
}

static plumb_status push(parser *p, evec *a, uint32_t kind, uint32_t arg) {
    if (p->total >= p->lim.max_elements)
        return fail_at(p, PLUMB_E_RANGE, p->pos, "the grammar expands to more than %u elements", p->lim.max_elements);
    if (!grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v)) return nomem();
    a->v[a->n++] = (gr_elem){kind, arg};
    p->total++;
    return PLUMB_OK;
}

static plumb_status new_rule(parser *p, size_t at, uint32_t *id) {
    if (p->n_rules >= p->lim.max_elements)
        return fail_at(p, PLUMB_E_RANGE, at, "the grammar has more than %u rules", p->lim.max_elements);
    if (!grow((void **)&p->rules, &p->cap_rules, p->n_rules + 1, sizeof *p->rules)) return nomem();
    p->rules[p->n_rules] = (brule){.at = at, .first_ref = SIZE_MAX};
    *id = p->n_rules++;
    return PLUMB_OK;
}

static plumb_status new_alt(parser *p, uint32_t rule, evec **out) {
    brule *r = &p->rules[rule];
    if (!grow((void **)&r->alts, &r->cap_alts, r->n_alts + 1, sizeof *r->alts)) return nomem();
    r->alts[r->n_alts] = (evec){0};
    *out = &r->alts[r->n_alts++];
    p->total++; /* its GR_END */
    return PLUMB_OK;
}

static uint32_t name_hash(const char *s, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001B3ull;
    return (uint32_t)(h ^ h >> 32);
}

/* The rule named s[at..at+n), made (undefined) on first sight. Names are found by a hash
 * table: a scan of every rule per reference is quadratic in the size of the grammar. */
static plumb_status named_rule(parser *p, size_t at, size_t n, uint32_t *id) {
    if (p->n_named * 2 >= p->name_hash_cap) {
        uint32_t cap = p->name_hash_cap ? p->name_hash_cap * 2 : 64;
        uint32_t *h = calloc(cap, sizeof *h);
        if (!h) return nomem();
        for (uint32_t i = 0; i < p->name_hash_cap; i++)
            if (p->name_hash[i]) {
                const char *nm = p->rules[p->name_hash[i] - 1].name;
                uint32_t k = name_hash(nm, strlen(nm)) & (cap - 1);
                while (h[k]) k = (k + 1) & (cap - 1);
                h[k] = p->name_hash[i];
            }
        free(p->name_hash);
        p->name_hash = h;
        p->name_hash_cap = cap;
    }
    uint32_t k = name_hash(p->s + at, n) & (p->name_hash_cap - 1);
    for (; p->name_hash[k]; k = (k + 1) & (p->name_hash_cap - 1)) {
        const char *nm = p->rules[p->name_hash[k] - 1].name;
        if (strlen(nm) == n && !memcmp(nm, p->s + at, n)) {
            *id = p->name_hash[k] - 1;
            return PLUMB_OK;
        }
    }
    plumb_status st = new_rule(p, at, id);
    if (st) return st;
    if (!(p->rules[*id].name = strndup(p->s + at, n))) return nomem();
    p->name_hash[k] = *id + 1;
    p->n_named++;
    return PLUMB_OK;
}

static uint32_t set_hash(const uint64_t s[4]) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 4; i++) h = (h ^ s[i]) * 0xFF51AFD7ED558CCDull;
    return (uint32_t)(h >> 32);
}

/* The index of byte set s, added when new. */
static plumb_status byte_set(parser *p, const uint64_t s[4], uint32_t *id) {
    if (p->n_sets * 2 >= p->set_hash_cap) {
        uint32_t cap = p->set_hash_cap ? p->set_hash_cap * 2 : 256;
        uint32_t *h = calloc(cap, sizeof *h);
        if (!h) return nomem();
        for (uint32_t i = 0; i < p->n_sets; i++) {
            uint32_t k = set_hash(p->sets[i]) & (cap - 1);
            while (h[k]) k = (k + 1) & (cap - 1);
            h[k] = i + 1;
        }
        free(p->set_hash);
        p->set_hash = h;
        p->set_hash_cap = cap;
    }
    uint32_t k = set_hash(s) & (p->set_hash_cap - 1);
    for (; p->set_hash[k]; k = (k + 1) & (p->set_hash_cap - 1))
        if (!memcmp(p->sets[p->set_hash[k] - 1], s, 32)) {
            *id = p->set_hash[k] - 1;
            return PLUMB_OK;
        }
    if (!grow((void **)&p->sets, &p->cap_sets, p->n_sets + 1, sizeof *p->sets)) return nomem();
    memcpy(p->sets[p->n_sets], s, 32);
    p->set_hash[k] = p->n_sets + 1;
    *id = p->n_sets++;
    return PLUMB_OK;
}

static plumb_status push_range(parser *p, evec *a, uint8_t lo, uint8_t hi) {
    uint64_t s[4] = {0};
    for (unsigned b = lo; b <= hi; b++) s[b >> 6] |= 1ull << (b & 63);
    uint32_t id;
    plumb_status st = byte_set(p, s, &id);
    return st ? st : push(p, a, GR_BYTES, id);
}

/* ---- characters -------------------------------------------------------------------------- */

static size_t utf8_encode(uint32_t c, uint8_t *o) {
    if (c < 0x80) return o[0] = (uint8_t)c, 1;
    if (c < 0x800) return o[0] = (uint8_t)(0xC0 | c >> 6), o[1] = (uint8_t)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000)
        return o[0] = (uint8_t)(0xE0 | c >> 12), o[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F)),
               o[2] = (uint8_t)(0x80 | (c & 0x3F)), 3;
    o[0] = (uint8_t)(0xF0 | c >> 18), o[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
    o[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F)), o[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One character of a literal or class at p->pos (an escape or a UTF-8 sequence). */
static plumb_status parse_char(parser *p, uint32_t *cp) {
    const size_t at = p->pos;
    const unsigned char *s = (const unsigned char *)p->s;
    if (s[p->pos] == '\\') {
        if (p->pos + 1 >= p->len) return fail_at(p, PLUMB_E_INVALID_ARG, at, "unfinished escape");
        char e = p->s[p->pos + 1];
        p->pos += 2;
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t v = 0;
            for (int i = 0; i < digits; i++, p->pos++) {
                int h = p->pos < p->len ? hexval(p->s[p->pos]) : -1;
                if (h < 0) return fail_at(p, PLUMB_E_INVALID_ARG, at, "escape \\%c needs %d hex digits", e, digits);
                v = v << 4 | (uint32_t)h;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                return fail_at(p, PLUMB_E_INVALID_ARG, at, "escape \\%c names no Unicode character (U+%X)", e, v);
            *cp = v;
            return PLUMB_OK;
        }
        static const char from[] = "tnr\\\"[]-/", to[] = "\t\n\r\\\"[]-/";
        const char *f = e ? strchr(from, e) : NULL;
        if (!f) return fail_at(p, PLUMB_E_INVALID_ARG, at, "unknown escape '\\%c'", e >= 0x20 && e < 0x7F ? e : '?');
        *cp = (unsigned char)to[f - from];
        return PLUMB_OK;
    }
    unsigned char b = s[p->pos];
    size_t n = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
    if (!n || p->pos + n > p->len) return fail_at(p, PLUMB_E_INVALID_ARG, at, "invalid UTF-8");
    uint32_t c = n == 1 ? b : n == 2 ? b & 0x1Fu : n == 3 ? b & 0x0Fu : b & 0x07u;
    for (size_t i = 1; i < n; i++) {
        if ((s[p->pos + i] & 0xC0) != 0x80) return fail_at(p, PLUMB_E_INVALID_ARG, at, "invalid UTF-8");
        c = c << 6 | (s[p->pos + i] & 0x3Fu);
    }
    if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10FFFF)) || (c >= 0xD800 && c <= 0xDFFF))
        return fail_at(p, PLUMB_E_INVALID_ARG, at, "invalid UTF-8");
    p->pos += n;
    *cp = c;
    return PLUMB_OK;
}

/* ---- character classes -------------------------------------------------------------------- */

typedef struct range {
    uint32_t lo, hi;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorts and merges r[0..*n), complements it over the code points when negate, and leaves out
 * the surrogates (no UTF-8 text holds them). r has room for *n + 2 ranges. */
static void normalize(range *r, uint32_t *n, bool negate) {
    qsort(r, *n, sizeof *r, cmp_range);
    uint32_t m = 0;
    for (uint32_t i = 0; i < *n; i++) {
        if (m && r[i].lo <= r[m - 1].hi + 1) {
            if (r[i].hi > r[m - 1].hi) r[m - 1].hi = r[i].hi;
        } else
            r[m++] = r[i];
    }
    if (negate) { /* the gaps, in place: the gap before range i is written at or before i */
        uint32_t w = 0, next = 0;
        for (uint32_t i = 0; i < m; i++) {
            const range cur = r[i];
            if (cur.lo > next) r[w++] = (range){next, cur.lo - 1};
            next = cur.hi + 1;
        }
        if (next <= 0x10FFFF) r[w++] = (range){next, 0x10FFFF};
        m = w;
    }
    /* cut out U+D800..U+DFFF: drop what lies inside, split the one range that spans it */
    uint32_t w = 0;
    for (uint32_t i = 0; i < m; i++) {
        range c = r[i];
        if (c.lo >= 0xD800 && c.hi <= 0xDFFF) continue;
        if (c.lo >= 0xD800 && c.lo <= 0xDFFF) c.lo = 0xE000;
        if (c.hi >= 0xD800 && c.hi <= 0xDFFF) c.hi = 0xD7FF;
        r[w++] = c;
    }
    for (uint32_t i = 0; i < w; i++)
        if (r[i].lo < 0xD800 && r[i].hi > 0xDFFF) { /* sorted and apart: at most one */
            memmove(r + i + 2, r + i + 1, (w - i - 1) * sizeof *r);
            r[i + 1] = (range){0xE000, r[i].hi};
            r[i].hi = 0xD7FF;
            w++;
            break;
        }
    *n = w;
}

/* Adds to rule `rule` one alternative per UTF-8 byte sequence shape of code points lo..hi
 * (each byte position a range of bytes), splitting the range where the shapes differ. */
static plumb_status utf8_alts(parser *p, uint32_t rule, uint32_t lo, uint32_t hi) {
    if (lo > hi) return PLUMB_OK;
    static const uint32_t len_edge[] = {0x7F, 0x7FF, 0xFFFF};
    for (int i = 0; i < 3; i++)
        if (lo <= len_edge[i] && hi > len_edge[i]) {
            plumb_status st = utf8_alts(p, rule, lo, len_edge[i]);
            return st ? st : utf8_alts(p, rule, len_edge[i] + 1, hi);
        }
    uint8_t a[4], b[4];
    size_t n = utf8_encode(lo, a);
    if (n > 1)
        for (size_t i = 1; i < n; i++) {
            uint32_t m = (1u << (6 * i)) - 1; /* the last i continuation bytes */
            if ((lo & ~m) != (hi & ~m)) {
                if (lo & m) {
                    plumb_status st = utf8_alts(p, rule, lo, lo | m);
                    return st ? st : utf8_alts(p, rule, (lo | m) + 1, hi);
                }
                if ((hi & m) != m) {
                    plumb_status st = utf8_alts(p, rule, lo, (hi & ~m) - 1);
                    return st ? st : utf8_alts(p, rule, hi & ~m, hi);
                }
            }
        }
    utf8_encode(hi, b);
    evec *alt;
    plumb_status st = new_alt(p, rule, &alt);
    for (size_t i = 0; i < n && !st; i++) st = push_range(p, alt, a[i], b[i]);
    return st;
}

/* Appends to a the element(s) matching one character of the ranges r[0..n) (normalized). */
static plumb_status push_class(parser *p, evec *a, const range *r, uint32_t n, size_t at) {
    if (n == 0 || r[n - 1].hi < 0x80) { /* ASCII only (or nothing): one byte set */
        uint64_t s[4] = {0};
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t c = r[i].lo; c <= r[i].hi; c++) s[c >> 6] |= 1ull << (c & 63);
        uint32_t id;
        plumb_status st = byte_set(p, s, &id);
        return st ? st : push(p, a, GR_BYTES, id);
    }
    uint32_t rule;
    plumb_status st = new_rule(p, at, &rule);
    for (uint32_t i = 0; i < n && !st; i++) st = utf8_alts(p, rule, r[i].lo, r[i].hi);
    p->rules[rule].defined = true;
    return st ? st : push(p, a, GR_REF, rule);
}

static plumb_status parse_class(parser *p, evec *a) {
    const size_t at = p->pos;
    p->pos++; /* [ */
    bool negate = p->pos < p->len && p->s[p->pos] == '^';
    if (negate) p->pos++;
    range *r = NULL;
    uint32_t n = 0, cap = 0;
    plumb_status st = PLUMB_OK;
    while (!st) {
        if (p->pos >= p->len) {
            st = fail_at(p, PLUMB_E_INVALID_ARG, at, "unterminated character class");
            break;
        }
        if (p->s[p->pos] == ']') {
            p->pos++;
            break;
        }
        uint32_t lo, hi;
        if ((st = parse_char(p, &lo))) break;
        hi = lo;
        if (p->pos + 1 < p->len && p->s[p->pos] == '-' && p->s[p->pos + 1] != ']') {
            p->pos++;
            const size_t rat = p->pos;
            if ((st = parse_char(p, &hi))) break;
            if (hi < lo) {
                st = fail_at(p, PLUMB_E_INVALID_ARG, rat, "range end U+%04X is before its start U+%04X", hi, lo);
                break;
            }
        }
        if (!grow((void **)&r, &cap, n + 3, sizeof *r)) {
            st = nomem();
            break;
        }
        r[n++] = (range){lo, hi};
    }
    if (!st && !grow((void **)&r, &cap, n + 3, sizeof *r)) st = nomem();
    if (!st) {
        normalize(r, &n, negate);
        st = push_class(p, a, r, n, at);
    }
    free(r);
    return st;
}

/* `.`: any character (one helper rule for the whole grammar). */
static plumb_status push_any(parser *p, evec *a) {
    if (p->any_rule == GR_INF) {
        const range all[2] = {{0, 0xD7FF}, {0xE000, 0x10FFFF}};
        evec tmp = {0};
        plumb_status st = push_class(p, &tmp, all, 2, p->pos);
        if (st) {
            free(tmp.v);
            return st;
        }
        p->any_rule = tmp.v[0].arg;
        p->total--;
        free(tmp.v);
    }
    return push(p, a, GR_REF, p->any_rule);
}

/* ---- repetitions -------------------------------------------------------------------------- */

/* Replaces a->v[from..n) (the last symbol) by its repetition min..max times (max GR_INF: no
 * bound). */
static plumb_status repeat(parser *p, evec *a, uint32_t from, uint32_t min, uint32_t max, size_t at) {
    plumb_status st;
    uint32_t k = a->n - from;
    if (k == 0) return PLUMB_OK; /* an empty literal repeated is empty */
    gr_elem e = a->v[from];
    if (k > 1) { /* the symbol becomes a helper rule (new rules never move the alternative a) */
        uint32_t h;
        evec *alt;
        if ((st = new_rule(p, at, &h)) || (st = new_alt(p, h, &alt))) return st;
        if (!grow((void **)&alt->v, &alt->cap, k, sizeof *alt->v)) return nomem();
        memcpy(alt->v, a->v + from, k * sizeof *alt->v); /* moved: the total stays */
        alt->n = k;
        p->rules[h].defined = true;
        e = (gr_elem){GR_REF, h};
        a->n = from + 1;
        a->v[from] = e;
        k = 1;
        p->total++; /* the reference; the GR_END of alt was counted by new_alt */
    }
    a->n = from;
    p->total -= k;
    for (uint32_t i = 0; i < min; i++)
        if ((st = push(p, a, e.kind, e.arg))) return st;
    if (max == min) return PLUMB_OK;
    uint32_t r;
    evec *alt;
    if (max == GR_INF) { /* R ::= e R | (empty) */
        if ((st = new_rule(p, at, &r)) || (st = new_alt(p, r, &alt)) || (st = push(p, alt, e.kind, e.arg)) ||
            (st = push(p, alt, GR_REF, r)) || (st = new_alt(p, r, &alt)))
            return st;
        p->rules[r].defined = true;
        return push(p, a, GR_REF, r);
    }
    /* O_1 ::= e | (empty); O_j ::= e O_(j-1) | (empty) */
    uint32_t prev = GR_INF;
    for (uint32_t j = 0; j < max - min; j++) {
        if ((st = new_rule(p, at, &r)) || (st = new_alt(p, r, &alt)) || (st = push(p, alt, e.kind, e.arg))) return st;
        if (prev != GR_INF && (st = push(p, alt, GR_REF, prev))) return st;
        if ((st = new_alt(p, r, &alt))) return st;
        p->rules[r].defined = true;
        prev = r;
    }
    return push(p, a, GR_REF, prev);
}

/* ---- text -------------------------------------------------------------------------------- */

static bool is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Skips blanks and comments, and line ends when newline_ok. */
static void skip_space(parser *p, bool newline_ok) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t') p->pos++;
        else if (c == '#')
            while (p->pos < p->len && p->s[p->pos] != '\n' && p->s[p->pos] != '\r') p->pos++;
        else if (newline_ok && (c == '\n' || c == '\r')) p->pos++;
        else break;
    }
}

static bool parse_uint(parser *p, uint32_t *v) {
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') return false;
    uint64_t x = 0;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        x = x * 10 + (uint64_t)(p->s[p->pos++] - '0');
        if (x > UINT32_MAX - 1) x = UINT32_MAX - 1;
    }
    *v = (uint32_t)x;
    return true;
}

/* {m}, {m,}, {m,n} at p->pos. */
static plumb_status parse_braces(parser *p, uint32_t *min, uint32_t *max) {
    const size_t at = p->pos;
    p->pos++;
    skip_space(p, false);
    if (!parse_uint(p, min)) return fail_at(p, PLUMB_E_INVALID_ARG, at, "expected a count after '{'");
    skip_space(p, false);
    *max = *min;
    if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        skip_space(p, false);
        if (!parse_uint(p, max)) *max = GR_INF;
        skip_space(p, false);
    }
    if (p->pos >= p->len || p->s[p->pos] != '}') return fail_at(p, PLUMB_E_INVALID_ARG, at, "expected '}' to end the count");
    p->pos++;
    if (*max != GR_INF && *max < *min)
        return fail_at(p, PLUMB_E_INVALID_ARG, at, "repetition {%u,%u}: the maximum is below the minimum", *min, *max);
    if (*min > p->lim.max_repeat || (*max != GR_INF && *max > p->lim.max_repeat))
        return fail_at(p, PLUMB_E_RANGE, at, "repetition count over the limit of %u", p->lim.max_repeat);
    return PLUMB_OK;
}

static plumb_status parse_alternates(parser *p, uint32_t rule, bool nested);

/* One sequence into alternative `a` of rule `rule`: stops before |, ), a line end outside
 * parentheses, or the end. */
static plumb_status parse_sequence(parser *p, uint32_t rule, uint32_t alt_i, bool nested) {
    uint32_t sym = GR_INF; /* where the last symbol starts in the alternative */
    plumb_status st = PLUMB_OK;
    while (p->pos < p->len && !st) {
        evec *a = &p->rules[rule].alts[alt_i];
        const size_t at = p->pos;
        const char c = p->s[p->pos];
        if (c == '"') {
            sym = a->n;
            p->pos++;
            while (!st) {
                if (p->pos >= p->len) return fail_at(p, PLUMB_E_INVALID_ARG, at, "unterminated literal");
                if (p->s[p->pos] == '"') {
                    p->pos++;
                    break;
                }
                uint32_t cp;
                uint8_t u[4];
                if ((st = parse_char(p, &cp))) return st;
                size_t n = utf8_encode(cp, u);
                for (size_t i = 0; i < n && !st; i++) st = push_range(p, a, u[i], u[i]);
            }
        } else if (c == '[') {
            sym = a->n;
            st = parse_class(p, a);
        } else if (c == '.') {
            sym = a->n;
            p->pos++;
            st = push_any(p, a);
        } else if (is_word(c)) {
            size_t n = 0;
            while (p->pos + n < p->len && is_word(p->s[p->pos + n])) n++;
            uint32_t r;
            if ((st = named_rule(p, p->pos, n, &r))) return st;
            if (p->rules[r].first_ref == SIZE_MAX) p->rules[r].first_ref = p->pos;
            p->pos += n;
            sym = a->n;
            st = push(p, &p->rules[rule].alts[alt_i], GR_REF, r);
        } else if (c == '(') {
            if (++p->depth > p->lim.max_depth)
                return fail_at(p, PLUMB_E_RANGE, at, "parentheses nested deeper than %u", p->lim.max_depth);
            p->pos++;
            uint32_t g;
            if ((st = new_rule(p, at, &g))) return st;
            p->rules[g].defined = true;
            skip_space(p, true);
            if ((st = parse_alternates(p, g, true))) return st;
            if (p->pos >= p->len || p->s[p->pos] != ')') return fail_at(p, PLUMB_E_INVALID_ARG, at, "'(' is not closed");
            p->pos++;
            p->depth--;
            a = &p->rules[rule].alts[alt_i];
            sym = a->n;
            st = push(p, a, GR_REF, g);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (sym == GR_INF) return fail_at(p, PLUMB_E_INVALID_ARG, at, "'%c' has nothing before it to repeat", c);
            uint32_t min = c == '+', max = c == '?' ? 1 : GR_INF;
            if (c == '{') {
                if ((st = parse_braces(p, &min, &max))) return st;
            } else
                p->pos++;
            st = repeat(p, a, sym, min, max, at);
            a = &p->rules[rule].alts[alt_i];
            if (sym > a->n) sym = a->n; /* x{0} left nothing: a further operator repeats nothing */
        } else if (c == '<') {
            return fail_at(p, PLUMB_E_UNSUPPORTED, at, "token references (<...>) are not supported");
        } else if (c == '!') {
            return fail_at(p, PLUMB_E_UNSUPPORTED, at, "negated token references (!...) are not supported");
        } else
            break;
        if (!st) skip_space(p, nested);
    }
    return st;
}

static plumb_status parse_alternates(parser *p, uint32_t rule, bool nested) {
    for (;;) {
        evec *a;
        plumb_status st = new_alt(p, rule, &a);
        if (st || (st = parse_sequence(p, rule, p->rules[rule].n_alts - 1, nested))) return st;
        if (p->pos >= p->len || p->s[p->pos] != '|') return PLUMB_OK;
        p->pos++;
        skip_space(p, true);
    }
}

static plumb_status parse_rules(parser *p) {
    skip_space(p, true);
    while (p->pos < p->len) {
        const size_t at = p->pos;
        size_t n = 0;
        while (p->pos + n < p->len && is_word(p->s[p->pos + n])) n++;
        if (!n) return fail_at(p, PLUMB_E_INVALID_ARG, at, "expected a rule name");
        uint32_t r;
        plumb_status st = named_rule(p, at, n, &r);
        if (st) return st;
        if (p->rules[r].defined)
            return fail_at(p, PLUMB_E_INVALID_ARG, at, "rule '%.*s' is defined twice", (int)(n > 60 ? 60 : n), p->s + at);
        p->rules[r].defined = true;
        p->rules[r].at = at;
        p->pos += n;
        skip_space(p, false);
        if (p->len - p->pos < 3 || memcmp(p->s + p->pos, "::=", 3))
            return fail_at(p, PLUMB_E_INVALID_ARG, p->pos, "expected '::=' after the rule name");
        p->pos += 3;
        skip_space(p, true);
        if ((st = parse_alternates(p, r, false))) return st;
        if (p->pos < p->len && p->s[p->pos] != '\n' && p->s[p->pos] != '\r') {
            char c = p->s[p->pos];
            return fail_at(p, PLUMB_E_INVALID_ARG, p->pos, "unexpected '%c'", c >= 0x20 && c < 0x7F ? c : '?');
        }
        skip_space(p, true);
    }
    return PLUMB_OK;
}

/* ---- checks ------------------------------------------------------------------------------ */

static const char *rule_label(const parser *p, uint32_t r, char *buf, size_t cap) {
    if (p->rules[r].name) snprintf(buf, cap, "rule '%.60s'", p->rules[r].name);
    else snprintf(buf, cap, "the group or repetition");
    return buf;
}

/* Nullable rules (those that can match nothing), by a worklist: an alternative becomes
 * nullable once every reference in it is (and it has no byte set). */
static plumb_status nullable_rules(const plumb_grammar_t *g, const uint32_t *alt_rule, bool *nullable) {
    uint32_t *need = calloc(g->n_alts, sizeof *need), *work = malloc((g->n_rules + 1) * sizeof *work);
    uint32_t *occ_n = calloc(g->n_rules + 1, sizeof *occ_n), *occ = malloc((g->n_elems + 1) * sizeof *occ);
    plumb_status st = need && work && occ_n && occ ? PLUMB_OK : nomem();
    uint32_t nw = 0;
    if (!st) {
        /* occurrences of each rule, grouped by rule: occ[occ_n[r] .. occ_n[r + 1]) are alternatives */
        for (uint32_t a = 0; a < g->n_alts; a++)
            for (uint32_t i = g->alt_start[a]; g->elems[i].kind != GR_END; i++) {
                if (g->elems[i].kind == GR_BYTES) need[a] = UINT32_MAX / 2;
                else occ_n[g->elems[i].arg + 1]++, need[a]++;
            }
        for (uint32_t r = 0; r < g->n_rules; r++) occ_n[r + 1] += occ_n[r];
        uint32_t *fill = calloc(g->n_rules + 1, sizeof *fill);
        if (!fill) st = nomem();
        for (uint32_t a = 0; a < g->n_alts && !st; a++)
            for (uint32_t i = g->alt_start[a]; g->elems[i].kind != GR_END; i++)
                if (g->elems[i].kind == GR_REF) occ[occ_n[g->elems[i].arg] + fill[g->elems[i].arg]++] = a;
        free(fill);
        for (uint32_t a = 0; a < g->n_alts && !st; a++)
            if (need[a] == 0 && alt_rule[a] != UINT32_MAX && !nullable[alt_rule[a]])
                nullable[alt_rule[a]] = true, work[nw++] = alt_rule[a];
        while (nw && !st) {
            uint32_t r = work[--nw];
            for (uint32_t k = occ_n[r]; k < occ_n[r + 1]; k++) {
                uint32_t a = occ[k];
                if (--need[a] == 0 && alt_rule[a] != UINT32_MAX && !nullable[alt_rule[a]])
                    nullable[alt_rule[a]] = true, work[nw++] = alt_rule[a];
            }
        }
    }
    free(need), free(work), free(occ_n), free(occ);
    return st;
}

/* Refuses left recursion: a rule reaching itself by first references (those with only
 * nullable elements before them in their alternative). Depth-first search over those edges,
 * without recursion. */
static plumb_status check_left_recursion(const parser *p, const plumb_grammar_t *g, const uint32_t *alt_rule) {
    bool *nullable = calloc(g->n_rules + 1, 1);
    uint8_t *color = calloc(g->n_rules + 1, 1);
    uint32_t *first = calloc(g->n_rules + 2, sizeof *first), *edge = malloc((g->n_elems + 1) * sizeof *edge);
    uint32_t *stack = malloc(((size_t)g->n_rules + 1) * 2 * sizeof *stack); /* (rule, next edge) pairs */
    plumb_status st = nullable && color && first && edge && stack ? nullable_rules(g, alt_rule, nullable) : nomem();
    uint32_t ne = 0;
    for (uint32_t r = 0; r < g->n_rules && !st; r++) { /* the edges of r: edge[first[r] .. first[r + 1]) */
        first[r] = ne;
        for (uint32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++)
            for (uint32_t i = g->alt_start[a]; g->elems[i].kind == GR_REF; i++) {
                edge[ne++] = g->elems[i].arg;
                if (!nullable[g->elems[i].arg]) break;
            }
    }
    if (!st) first[g->n_rules] = ne;
    for (uint32_t root = 0; root < g->n_rules && !st; root++) {
        if (color[root]) continue;
        uint32_t sp = 0;
        stack[sp++] = root, stack[sp++] = first[root];
        color[root] = 1;
        while (sp && !st) {
            const uint32_t r = stack[sp - 2];
            if (stack[sp - 1] == first[r + 1]) {
                color[r] = 2;
                sp -= 2;
                continue;
            }
            const uint32_t next = edge[stack[sp - 1]++];
            if (color[next] == 1) {
                char lab[96];
                st = fail_at(p, PLUMB_E_INVALID_ARG, p->rules[next].at,
                             "%s is left-recursive: it can reach itself without matching anything",
                             rule_label(p, next, lab, sizeof lab));
            } else if (!color[next]) {
                color[next] = 1;
                stack[sp++] = next, stack[sp++] = first[next];
            }
        }
    }
    free(nullable), free(color), free(first), free(edge), free(stack);
    return st;
}

/* ---- the program ------------------------------------------------------------------------- */

static void free_builder(parser *p) {
    for (uint32_t r = 0; r < p->n_rules; r++) {
        for (uint32_t a = 0; a < p->rules[r].n_alts; a++) free(p->rules[r].alts[a].v);
        free(p->rules[r].alts);
        free(p->rules[r].name);
    }
    free(p->rules);
    free(p->set_hash);
    free(p->name_hash);
}

void plumb_grammar_free(plumb_grammar_t *g) {
    if (!g) return;
    free(g->elems);
    free(g->alt_start);
    free(g->rule_alt);
    free(g->sets);
    free(g);
}

/* Lays the rules out as the program; the start alternative [REF root, END] comes first. */
static plumb_status flatten(parser *p, uint32_t root, plumb_grammar_t **out) {
    plumb_grammar_t *g = calloc(1, sizeof *g);
    if (!g) return nomem();
    uint32_t n_alts = 1, n_elems = 2;
    for (uint32_t r = 0; r < p->n_rules; r++) {
        n_alts += p->rules[r].n_alts;
        for (uint32_t a = 0; a < p->rules[r].n_alts; a++) n_elems += p->rules[r].alts[a].n + 1;
    }
    g->elems = malloc((size_t)n_elems * sizeof *g->elems);
    g->alt_start = malloc((size_t)n_alts * sizeof *g->alt_start);
    g->rule_alt = malloc(((size_t)p->n_rules + 1) * sizeof *g->rule_alt);
    uint32_t *alt_rule = malloc((size_t)n_alts * sizeof *alt_rule);
    if (!g->elems || !g->alt_start || !g->rule_alt || !alt_rule) {
        free(alt_rule);
        plumb_grammar_free(g);
        return nomem();
    }
    g->sets = p->sets, g->n_sets = p->n_sets;
    p->sets = NULL;
    g->elems[0] = (gr_elem){GR_REF, root}, g->elems[1] = (gr_elem){GR_END, 0};
    g->alt_start[0] = 0, alt_rule[0] = UINT32_MAX;
    uint32_t e = 2, na = 1;
    for (uint32_t r = 0; r < p->n_rules; r++) {
        g->rule_alt[r] = na;
        for (uint32_t a = 0; a < p->rules[r].n_alts; a++) {
            const evec *v = &p->rules[r].alts[a];
            alt_rule[na] = r;
            g->alt_start[na++] = e;
            if (v->n) memcpy(g->elems + e, v->v, (size_t)v->n * sizeof *v->v); /* an empty one has no v */
            e += v->n;
            g->elems[e++] = (gr_elem){GR_END, 0};
        }
    }
    g->rule_alt[p->n_rules] = na;
    g->n_elems = e, g->n_alts = na, g->n_rules = p->n_rules, g->start = 0;
    plumb_status st = check_left_recursion(p, g, alt_rule);
    free(alt_rule);
    if (st) {
        plumb_grammar_free(g);
        return st;
    }
    *out = g;
    return PLUMB_OK;
}

plumb_grammar_limits plumb_grammar_default_limits(void) {
    return (plumb_grammar_limits){.max_text = 1u << 20, .max_elements = 1000000, .max_repeat = 10000, .max_depth = 64};
}

plumb_status plumb_grammar_parse(const char *text, size_t len, const char *root, const plumb_grammar_limits *limits,
                                 plumb_grammar_t **out) {
    if (!out) return plumb__fail(PLUMB_E_INVALID_ARG, "grammar: no output pointer");
    *out = NULL;
    if (!text && len) return plumb__fail(PLUMB_E_INVALID_ARG, "grammar: no text");
    parser p = {.s = text ? text : "", .len = len, .any_rule = GR_INF};
    const plumb_grammar_limits def = plumb_grammar_default_limits();
    p.lim = limits ? *limits : def;
    if (!p.lim.max_text) p.lim.max_text = def.max_text;
    if (!p.lim.max_elements) p.lim.max_elements = def.max_elements;
    if (!p.lim.max_repeat) p.lim.max_repeat = def.max_repeat;
    if (!p.lim.max_depth) p.lim.max_depth = def.max_depth;
    if (p.lim.max_depth > 1024) p.lim.max_depth = 1024; /* nesting is parsed by recursion */
    if (len > p.lim.max_text)
        return plumb__fail(PLUMB_E_RANGE, "grammar: %zu bytes, over the limit of %zu", len, p.lim.max_text);
    if (memchr(p.s, 0, len)) return plumb__fail(PLUMB_E_INVALID_ARG, "grammar: the text holds a NUL byte");
    const char *root_name = root ? root : "root";
    plumb_status st = parse_rules(&p);
    uint32_t r = UINT32_MAX;
    for (uint32_t i = 0; i < p.n_rules && !st; i++) {
        if (!p.rules[i].defined) {
            st = fail_at(&p, PLUMB_E_INVALID_ARG, p.rules[i].first_ref, "undefined rule '%.60s'", p.rules[i].name);
            break;
        }
        if (p.rules[i].name && !strcmp(p.rules[i].name, root_name)) r = i;
    }
    if (!st && r == UINT32_MAX) st = plumb__fail(PLUMB_E_INVALID_ARG, "grammar: no rule named '%.60s' to start from", root_name);
    if (!st) st = flatten(&p, r, out);
    free(p.sets);
    free_builder(&p);
    return st;
}
