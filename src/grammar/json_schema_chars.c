/* json_schema_chars.c — sets of code points and the JSON text of one string character drawn
 * from a set. A character of a JSON string's value has several spellings: itself in UTF-8
 * (not for " \ and U+0000-U+001F), a short escape (\" \\ \/ \b \f \n \r \t), \uXXXX with hex
 * digits of either case, and for U+10000 and up a pair of surrogate escapes. A grammar that
 * constrains a string's value by a pattern or a length takes every spelling, so each class of
 * characters becomes one rule with all of them; property names and constants are taken in
 * their one plain spelling (plumb__js_string_literal). */
#include "grammar/json_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CP_MAX 0x10FFFFu
#define SUR_LO 0xD800u
#define SUR_HI 0xDFFFu

/* Inserts [lo, hi] (surrogates removed) keeping the ranges sorted, disjoint and apart. */
static void add_plain(js_out *o, js_cset *s, uint32_t lo, uint32_t hi) {
    if (o->st || lo > hi) return;
    uint32_t i = 0;
    while (i < s->n && s->r[i][1] + 1 < lo) i++; /* first range that touches or follows */
    uint32_t j = i;
    while (j < s->n && s->r[j][0] <= hi + 1) { /* ranges merged into the new one */
        if (s->r[j][0] < lo) lo = s->r[j][0];
        if (s->r[j][1] > hi) hi = s->r[j][1];
        j++;
    }
    if (j == i) { /* nothing merged: insert */
        if (s->n == s->cap) {
            uint32_t cap = s->cap ? s->cap * 2 : 8;
            uint32_t(*r)[2] = realloc(s->r, cap * sizeof *r);
            if (!r) {
                plumb__js_fail(o, PLUMB_E_NOMEM, "out of memory converting a JSON schema");
                return;
            }
            s->r = r;
            s->cap = cap;
        }
        memmove(s->r + i + 1, s->r + i, (s->n - i) * sizeof *s->r);
        s->n++;
    } else {
        memmove(s->r + i + 1, s->r + j, (s->n - j) * sizeof *s->r);
        s->n -= j - i - 1;
    }
    s->r[i][0] = lo;
    s->r[i][1] = hi;
}

void plumb__cset_add(js_out *o, js_cset *s, uint32_t lo, uint32_t hi) {
    if (hi > CP_MAX) hi = CP_MAX;
    if (lo < SUR_LO) add_plain(o, s, lo, hi < SUR_LO ? hi : SUR_LO - 1);
    if (hi > SUR_HI) add_plain(o, s, lo > SUR_HI ? lo : SUR_HI + 1, hi);
}

void plumb__cset_add_set(js_out *o, js_cset *s, const js_cset *t) {
    for (uint32_t i = 0; i < t->n; i++) add_plain(o, s, t->r[i][0], t->r[i][1]);
}

void plumb__cset_negate(js_out *o, js_cset *s) {
    js_cset t = {0};
    uint32_t next = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->r[i][0] > next) plumb__cset_add(o, &t, next, s->r[i][0] - 1);
        next = s->r[i][1] + 1;
    }
    if (next <= CP_MAX) plumb__cset_add(o, &t, next, CP_MAX);
    plumb__cset_free(s);
    *s = t;
}

void plumb__cset_free(js_cset *s) {
    free(s->r);
    memset(s, 0, sizeof *s);
}

bool plumb__cset_is_all(const js_cset *s) {
    return s->n == 2 && s->r[0][0] == 0 && s->r[0][1] == SUR_LO - 1 && s->r[1][0] == SUR_HI + 1 &&
           s->r[1][1] == CP_MAX;
}

/* ---- spelling a set ---- */

/* A code point inside [...]: printable ASCII as itself, the rest and the class's own syntax
 * characters as escapes. */
static void class_char(js_out *o, js_buf *b, uint32_t cp) {
    if (cp > 0x20 && cp < 0x7F && !strchr("[]\\^-\"", (int)cp)) {
        char ch = (char)cp;
        plumb__js_put(o, b, &ch, 1);
    } else if (cp < 0x100) {
        plumb__js_printf(o, b, "\\x%02X", cp);
    } else if (cp < 0x10000) {
        plumb__js_printf(o, b, "\\u%04X", cp);
    } else {
        plumb__js_printf(o, b, "\\U%08X", cp);
    }
}

/* \uXXXX for [lo, hi] inside the BMP (no surrogates). */
static void bmp_escape(js_out *o, js_buf *b, bool *first, uint32_t lo, uint32_t hi) {
    plumb__js_alt(o, b, first);
    plumb__js_puts(o, b, "\"\\\\u\" ");
    plumb__js_digits(o, b, lo, hi, 4, 16);
}

/* One surrogate-pair escape: high surrogates [h0, h1], low ones [l0, l1]. */
static void pair(js_out *o, js_buf *b, bool *first, uint32_t h0, uint32_t h1, uint32_t l0, uint32_t l1) {
    plumb__js_alt(o, b, first);
    plumb__js_puts(o, b, "\"\\\\u\" ");
    plumb__js_digits(o, b, h0, h1, 4, 16);
    plumb__js_puts(o, b, " \"\\\\u\" ");
    plumb__js_digits(o, b, l0, l1, 4, 16);
}

/* Surrogate-pair escapes for [lo, hi], all at or above U+10000: a partial first block of
 * low surrogates, the whole blocks, a partial last one. */
static void pair_escape(js_out *o, js_buf *b, bool *first, uint32_t lo, uint32_t hi) {
    uint32_t hlo = 0xD800 + ((lo - 0x10000) >> 10), hhi = 0xD800 + ((hi - 0x10000) >> 10);
    uint32_t llo = 0xDC00 + ((lo - 0x10000) & 0x3FF), lhi = 0xDC00 + ((hi - 0x10000) & 0x3FF);
    if (hlo == hhi) {
        pair(o, b, first, hlo, hlo, llo, lhi);
        return;
    }
    uint32_t from = hlo, to = hhi;
    if (llo != 0xDC00) {
        pair(o, b, first, hlo, hlo, llo, 0xDFFF);
        from++;
    }
    if (lhi != 0xDFFF) to--;
    if (from <= to) pair(o, b, first, from, to, 0xDC00, 0xDFFF);
    if (lhi != 0xDFFF) pair(o, b, first, hhi, hhi, 0xDC00, lhi);
}

/* The raw UTF-8 spellings: everything in s but controls, " and \ (one printable ASCII
 * character as a literal, the rest as a class). */
static void raw_chars(js_out *o, js_buf *b, bool *first, const js_cset *s) {
    uint32_t one = s->r[0][0];
    if (s->n == 1 && one == s->r[0][1] && one > 0x20 && one < 0x7F && one != '"' && one != '\\') {
        plumb__js_alt(o, b, first);
        plumb__js_printf(o, b, "\"%c\"", (char)one);
        return;
    }
    bool open = false;
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t lo = s->r[i][0], hi = s->r[i][1];
        for (uint32_t from = lo < 0x20 ? 0x20 : lo; from <= hi;) {
            uint32_t to = hi;
            if (from <= 0x22 && to >= 0x22) to = from == 0x22 ? 0x22 : 0x21;
            if (from <= 0x5C && to >= 0x5C) to = from == 0x5C ? 0x5C : 0x5B;
            if (from != 0x22 && from != 0x5C) {
                if (!open) {
                    plumb__js_alt(o, b, first);
                    plumb__js_puts(o, b, "[");
                    open = true;
                }
                class_char(o, b, from);
                if (to > from) {
                    plumb__js_puts(o, b, "-");
                    class_char(o, b, to);
                }
            }
            if (to == hi) break;
            from = to + 1;
        }
    }
    if (open) plumb__js_puts(o, b, "]");
}

js_name plumb__js_char_rule(js_out *o, const js_cset *s) {
    js_name none = {{0}};
    if (o->st || !s->n) return none;
    if (plumb__cset_is_all(s)) return plumb__js_builtin(o, JS_CHAR);
    js_buf b = {0};
    bool first = true;
    raw_chars(o, &b, &first, s);
    /* short escapes */
    static const struct {
        uint32_t cp;
        const char *letter;
    } shorts[] = {{0x22, "\\x22"}, {0x5C, "\\x5C"}, {0x2F, "/"}, {0x08, "b"}, {0x0C, "f"}, {0x0A, "n"}, {0x0D, "r"}, {0x09, "t"}};
    bool open = false;
    for (size_t k = 0; k < sizeof shorts / sizeof shorts[0]; k++) {
        bool in = false;
        for (uint32_t i = 0; i < s->n && !in; i++) in = s->r[i][0] <= shorts[k].cp && shorts[k].cp <= s->r[i][1];
        if (!in) continue;
        if (!open) {
            plumb__js_alt(o, &b, &first);
            plumb__js_puts(o, &b, "\"\\\\\" [");
            open = true;
        }
        plumb__js_puts(o, &b, shorts[k].letter);
    }
    if (open) plumb__js_puts(o, &b, "]");
    /* \u escapes */
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t lo = s->r[i][0], hi = s->r[i][1];
        if (lo <= 0xFFFF) bmp_escape(o, &b, &first, lo, hi < 0xFFFF ? hi : 0xFFFF);
        if (hi >= 0x10000) pair_escape(o, &b, &first, lo > 0x10000 ? lo : 0x10000, hi);
    }
    char hint[24];
    if (s->n == 1 && s->r[0][0] == s->r[0][1])
        snprintf(hint, sizeof hint, "c-%X", s->r[0][0]);
    else
        snprintf(hint, sizeof hint, "cs");
    js_name n = plumb__js_rule(o, hint, &b);
    plumb__js_buf_free(&b);
    return n;
}

/* ---- UTF-8 ---- */

bool plumb__utf8_next(const char *s, size_t n, size_t *i, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s + *i;
    size_t left = n - *i;
    if (!left) return false;
    uint32_t c = u[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || len > left) return false;
    if (len > 1) c &= 0x3Fu >> (len - 1);
    for (size_t k = 1; k < len; k++) {
        if ((u[k] & 0xC0) != 0x80) return false;
        c = c << 6 | (u[k] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_cp[len] || c > CP_MAX || (c >= SUR_LO && c <= SUR_HI)) return false;
    *cp = c;
    *i += len;
    return true;
}

size_t plumb__utf8_count(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

void plumb__js_string_literal(js_out *o, js_buf *b, const char *s, size_t n) {
    /* one spelling, as JSON.stringify and json.dumps(ensure_ascii=False) write it: a model
     * offered the escaped spellings of a name too can wander off into them */
    plumb__js_puts(o, b, "\"\\\"");
    for (size_t i = 0; i < n && !o->st;) {
        uint32_t cp;
        size_t at = i;
        if (!plumb__utf8_next(s, n, &i, &cp)) { /* the schema was checked to be UTF-8 */
            plumb__js_fail(o, PLUMB_E_INVALID_ARG, "invalid UTF-8 in a schema string");
            return;
        }
        static const char shorts[] = "\b\f\n\r\t", letters[] = "bfnrt";
        const char *sh = cp && cp < 0x20 ? strchr(shorts, (int)cp) : NULL;
        if (cp == '"') plumb__js_puts(o, b, "\\\\\\\"");
        else if (cp == '\\') plumb__js_puts(o, b, "\\\\\\\\");
        else if (sh) plumb__js_printf(o, b, "\\\\%c", letters[sh - shorts]);
        else if (cp < 0x20) plumb__js_printf(o, b, "\\\\u%04x", cp);
        else if (cp == 0x7F) plumb__js_puts(o, b, "\\x7F");
        else plumb__js_put(o, b, s + at, i - at);
    }
    plumb__js_puts(o, b, "\\\"\"");
}
