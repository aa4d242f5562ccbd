/* json_schema_num.c — numbers: the integers of a range as a grammar of their decimal digits
 * (like llama.cpp's _generate_min_max_int: a digit trie cut into whole blocks per length),
 * numbers bounded only by sign (what `minimum: 0` and friends mean exactly, whatever the
 * exponent), and the spellings of one number for enum and const. */
#include "grammar/json_schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXACT 9007199254740992.0 /* 2^53 */

static uint64_t pow10u(unsigned k) {
    uint64_t p = 1;
    while (k--) p *= 10;
    return p;
}

static unsigned n_digits(uint64_t v) {
    unsigned n = 1;
    for (; v >= 10; v /= 10) n++;
    return n;
}

void plumb__js_alt(js_out *o, js_buf *b, bool *first) {
    if (!*first) plumb__js_puts(o, b, " | ");
    *first = false;
}

/* One digit of `base` (10, or 16 with letters in both cases) whose value is in [a, z]. */
static void digit_class(js_out *o, js_buf *b, unsigned a, unsigned z, unsigned base) {
    static const char digits[] = "0123456789abcdef";
    if (a == z && a < 10) {
        plumb__js_printf(o, b, "\"%c\"", digits[a]);
        return;
    }
    plumb__js_puts(o, b, "[");
    if (a <= 9) {
        unsigned hi = z < 9 ? z : 9;
        plumb__js_printf(o, b, hi > a ? "%c-%c" : "%c", digits[a], digits[hi]);
    }
    if (z >= 10 && base == 16) {
        unsigned lo = a > 10 ? a : 10;
        if (z > lo)
            plumb__js_printf(o, b, "%c-%c%c-%c", digits[lo], digits[z], digits[lo] - 32, digits[z] - 32);
        else
            plumb__js_printf(o, b, "%c%c", digits[lo], digits[lo] - 32);
    }
    plumb__js_puts(o, b, "]");
}

void plumb__js_digits(js_out *o, js_buf *b, uint64_t lo, uint64_t hi, unsigned width, unsigned base) {
    if (!width) return;
    uint64_t unit = 1;
    for (unsigned k = 1; k < width; k++) unit *= base;
    unsigned dlo = (unsigned)(lo / unit), dhi = (unsigned)(hi / unit);
    uint64_t rlo = lo % unit, rhi = hi % unit;
    if (dlo == dhi) {
        digit_class(o, b, dlo, dlo, base);
        if (width > 1) plumb__js_puts(o, b, " ");
        plumb__js_digits(o, b, rlo, rhi, width - 1, base);
        return;
    }
    bool first = true;
    plumb__js_puts(o, b, "( ");
    unsigned from = dlo, to = dhi;
    if (rlo != 0) {
        plumb__js_alt(o, b, &first);
        digit_class(o, b, dlo, dlo, base);
        plumb__js_puts(o, b, " ");
        plumb__js_digits(o, b, rlo, unit - 1, width - 1, base);
        from++;
    }
    if (rhi != unit - 1) to--;
    if (from <= to) {
        plumb__js_alt(o, b, &first);
        digit_class(o, b, from, to, base);
        if (width > 1) plumb__js_printf(o, b, base == 16 ? " [0-9a-fA-F]{%u}" : " [0-9]{%u}", width - 1);
    }
    if (rhi != unit - 1) {
        plumb__js_alt(o, b, &first);
        digit_class(o, b, dhi, dhi, base);
        plumb__js_puts(o, b, " ");
        plumb__js_digits(o, b, 0, rhi, width - 1, base);
    }
    plumb__js_puts(o, b, " )");
}

/* Alternatives for the canonical decimals (no leading zero) in [a, z], or [a, inf) when
 * !has_z. */
static void naturals(js_out *o, js_buf *b, bool *first, uint64_t a, bool has_z, uint64_t z) {
    unsigned la = n_digits(a), lz = has_z ? n_digits(z) : la;
    for (unsigned len = la; len <= lz; len++) {
        uint64_t lo = len == 1 ? 0 : pow10u(len - 1), hi = pow10u(len) - 1;
        if (lo < a) lo = a;
        if (has_z && hi > z) hi = z;
        plumb__js_alt(o, b, first);
        plumb__js_digits(o, b, lo, hi, len, 10);
    }
    if (!has_z) { /* every longer number */
        plumb__js_alt(o, b, first);
        plumb__js_printf(o, b, "[1-9] [0-9]{%u} [0-9]*", la);
    }
}

bool plumb__js_int_range(js_out *o, js_buf *b, bool has_lo, int64_t lo, bool has_hi, int64_t hi) {
    if (has_lo && has_hi && lo > hi) return false;
    bool first = true;
    plumb__js_puts(o, b, "( ");
    /* plain spellings: the values >= 0 */
    if (!has_hi || hi >= 0) naturals(o, b, &first, has_lo && lo > 0 ? (uint64_t)lo : 0, has_hi, (uint64_t)hi);
    /* "-" spellings: magnitudes from max(-hi, 0) (0 gives -0, fine when 0 is in range) */
    if (!has_lo || lo <= 0) {
        uint64_t from = has_hi && hi < 0 ? (uint64_t)-hi : 0;
        bool sub_first = true;
        plumb__js_alt(o, b, &first);
        plumb__js_puts(o, b, "\"-\" ( ");
        naturals(o, b, &sub_first, from, has_lo, has_lo ? (uint64_t)-lo : 0);
        plumb__js_puts(o, b, " )");
    }
    plumb__js_puts(o, b, " )");
    return true;
}

#define EXP "( [eE] [+\\-]? [0-9]+ )?"
#define ZERO_MAG "\"0\" ( \".\" \"0\"+ )? " EXP
#define POS_MAG "( \"0\" \".\" \"0\"* [1-9] [0-9]* | [1-9] [0-9]* ( \".\" [0-9]+ )? ) " EXP

bool plumb__js_number_signs(js_out *o, js_buf *b, unsigned signs) {
    if (!signs) return false;
    if (signs == 7) {
        js_name n = plumb__js_builtin(o, JS_NUMBER);
        plumb__js_puts(o, b, n.s);
        return true;
    }
    bool first = true;
    plumb__js_puts(o, b, "( ");
    static const char *const by_sign[3] = {"\"-\" " POS_MAG, "\"-\"? " ZERO_MAG, POS_MAG};
    for (unsigned k = 0; k < 3; k++) {
        if (!(signs >> k & 1)) continue;
        plumb__js_alt(o, b, &first);
        plumb__js_puts(o, b, by_sign[k]);
    }
    plumb__js_puts(o, b, " )");
    return true;
}

void plumb__js_number_literal(js_out *o, js_buf *b, double v, const char *where) {
    if (v == floor(v)) {
        if (fabs(v) >= MAX_EXACT) {
            plumb__js_fail(o, PLUMB_E_RANGE, "the number %.17g at %s is an integer past 2^53", v, where);
            return;
        }
        if (v == 0)
            plumb__js_puts(o, b, "( \"-\"? \"0\" ( \".\" \"0\"+ )? )");
        else
            plumb__js_printf(o, b, "( \"%.0f\" ( \".\" \"0\"+ )? )", v);
        return;
    }
    /* the shortest spelling that reads back as v, as Python and JavaScript print it */
    char s[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(s, sizeof s, "%.*g", p, v);
        if (strtod(s, NULL) == v) break;
    }
    if (strchr(s, 'e'))
        plumb__js_printf(o, b, "\"%s\"", s);
    else
        plumb__js_printf(o, b, "( \"%s\" \"0\"* )", s);
}
