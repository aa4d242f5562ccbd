/* jinja_text.c — text operations of plumb's Jinja engine with Python's str semantics over
 * UTF-8: code points, whitespace (str.isspace, which is also what \s, strip() and split()
 * use), printability (for repr), case mapping, strip, split, replace, find, count, slicing,
 * and jinja2's |title, |indent and |wordcount.
 *
 * Every result keeps the provenance of its bytes: a character copied or case-mapped from the
 * template's text stays marked, one from the variables stays unmarked, and text the operation
 * itself inserts (|indent's newlines) is unmarked unless it came from a marked argument.
 *
 * Case mapping covers ASCII, Latin-1, Latin Extended-A and Additional, Greek, Cyrillic,
 * Armenian and fullwidth Latin (ß upper-cases to SS, as Python does); other scripts keep
 * their case. Chat templates change case only of role names and short literals. */
#include "chat/jinja.h"

#include <string.h>

/* ---- UTF-8 ----------------------------------------------------------------------------- */

size_t utf8_dec(const unsigned char *p, size_t n, uint32_t *cp) {
    unsigned char b = p[0];
    size_t len;
    uint32_t c;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if ((b & 0xE0) == 0xC0) {
        len = 2, c = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
        len = 3, c = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
        len = 4, c = b & 0x07;
    } else {
        *cp = 0xFFFD; /* not reached for checked text */
        return 1;
    }
    if (n < len) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i < len; i++) c = (c << 6) | (p[i] & 0x3F);
    *cp = c;
    return len;
}

size_t utf8_enc(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t utf8_valid_prefix(const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = p[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t c, min;
        if ((b & 0xE0) == 0xC0)
            len = 2, c = b & 0x1F, min = 0x80;
        else if ((b & 0xF0) == 0xE0)
            len = 3, c = b & 0x0F, min = 0x800;
        else if ((b & 0xF8) == 0xF0)
            len = 4, c = b & 0x07, min = 0x10000;
        else
            return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            c = (c << 6) | (p[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

bool u_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t u_space_at(const char *p, size_t n) {
    if (n == 0) return 0;
    uint32_t cp;
    size_t l = utf8_dec((const unsigned char *)p, n, &cp);
    return u_isspace(cp) ? l : 0;
}

bool u_isprintable(uint32_t c) {
    if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
    if (c < 0x600) return true;
    if ((c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD || c == 0x70F || c == 0x890 || c == 0x891 ||
        c == 0x8E2 || c == 0x1680 || c == 0x180E)
        return false;
    if ((c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x2064) ||
        (c >= 0x2066 && c <= 0x206F) || c == 0x3000)
        return false;
    if ((c >= 0xD800 && c <= 0xF8FF) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB) || c == 0xFFFE || c == 0xFFFF)
        return false;
    if (c == 0x110BD || c == 0x110CD || (c >= 0x13430 && c <= 0x1343F) || (c >= 0x1BCA0 && c <= 0x1BCA3) ||
        (c >= 0x1D173 && c <= 0x1D17A) || c == 0xE0001 || (c >= 0xE0020 && c <= 0xE007F) || c >= 0xF0000)
        return false;
    return true;
}

bool u_isword(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (u_isspace(c) || !u_isprintable(c)) return false;
    if (c >= 0xA1 && c <= 0xBF)
        return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA || (c >= 0xBC && c <= 0xBE);
    if (c == 0xD7 || c == 0xF7) return false;
    if ((c >= 0x2010 && c <= 0x2027) || (c >= 0x2030 && c <= 0x205E) || (c >= 0x2190 && c <= 0x2BFF) ||
        (c >= 0x3001 && c <= 0x3003) || (c >= 0x3008 && c <= 0x3011) || (c >= 0xFF01 && c <= 0xFF0F) ||
        (c >= 0x1F000 && c <= 0x1FAFF))
        return false;
    return true;
}

/* ---- case mapping ------------------------------------------------------------------------ */

/* Pairs where the upper case is the even code point of [lo, hi]. */
static bool even_pair(uint32_t c, uint32_t lo, uint32_t hi) { return c >= lo && c <= hi; }

static uint32_t to_upper1(uint32_t c) {
    if (c < 0x80) return c >= 'a' && c <= 'z' ? c - 32 : c;
    if (c == 0xB5) return 0x39C;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    if ((even_pair(c, 0x100, 0x137) || even_pair(c, 0x14A, 0x177)) && (c & 1)) return c - 1;
    if ((even_pair(c, 0x139, 0x148) || even_pair(c, 0x179, 0x17E)) && !(c & 1)) return c - 1;
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
    if (c == 0x3C2) return 0x3A3;
    if (c == 0x3AC) return 0x386;
    if (c >= 0x3AD && c <= 0x3AF) return c - 37;
    if (c == 0x3CA || c == 0x3CB) return c - 32;
    if (c == 0x3CC) return 0x38C;
    if (c == 0x3CD || c == 0x3CE) return c - 63;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    if ((even_pair(c, 0x460, 0x481) || even_pair(c, 0x48A, 0x4BF) || even_pair(c, 0x4D0, 0x52F)) && (c & 1))
        return c - 1;
    if (c >= 0x561 && c <= 0x586) return c - 48;
    if ((even_pair(c, 0x1E00, 0x1E95) || even_pair(c, 0x1EA0, 0x1EFF)) && (c & 1)) return c - 1;
    if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
    return c;
}

static uint32_t to_lower1(uint32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if ((even_pair(c, 0x100, 0x137) || even_pair(c, 0x14A, 0x177)) && !(c & 1) && c != 0x130) return c + 1;
    if ((even_pair(c, 0x139, 0x148) || even_pair(c, 0x179, 0x17E)) && (c & 1)) return c + 1;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c == 0x386) return 0x3AC;
    if (c >= 0x388 && c <= 0x38A) return c + 37;
    if (c == 0x3AA || c == 0x3AB) return c + 32;
    if (c == 0x38C) return 0x3CC;
    if (c == 0x38E || c == 0x38F) return c + 63;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    if ((even_pair(c, 0x460, 0x481) || even_pair(c, 0x48A, 0x4BF) || even_pair(c, 0x4D0, 0x52F)) && !(c & 1))
        return c + 1;
    if (c >= 0x531 && c <= 0x556) return c + 48;
    if ((even_pair(c, 0x1E00, 0x1E95) || even_pair(c, 0x1EA0, 0x1EFF)) && !(c & 1)) return c + 1;
    if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
    return c;
}

static bool is_lower_cp(uint32_t c) { return to_upper1(c) != c || c == 0xDF; }
static bool is_upper_cp(uint32_t c) { return to_lower1(c) != c || c == 0x130; }
static bool is_cased(uint32_t c) { return is_lower_cp(c) || is_upper_cp(c); }

enum { CASE_KEEP, CASE_UPPER, CASE_LOWER };

/* Whether byte off of s lies in one of its marks; *mi walks the marks forward. */
static bool marked_at(const jstr *s, size_t off, size_t *mi) {
    while (*mi < s->n_marks && s->marks[*mi].off + s->marks[*mi].len <= off) (*mi)++;
    return *mi < s->n_marks && s->marks[*mi].off <= off;
}

/* Appends cp mapped to `mode`, with the provenance `marked`. */
static int put_cased(jsb *b, uint32_t cp, int mode, bool marked) {
    char t[8];
    size_t n;
    if (mode == CASE_UPPER && cp == 0xDF) {
        return jsb_put(b, "SS", 2, marked);
    } else if (mode == CASE_LOWER && cp == 0x130) {
        n = utf8_enc('i', t);
        n += utf8_enc(0x307, t + n);
    } else {
        uint32_t m = mode == CASE_UPPER ? to_upper1(cp) : mode == CASE_LOWER ? to_lower1(cp) : cp;
        n = utf8_enc(m, t);
    }
    return jsb_put(b, t, n, marked);
}

/* Maps every character of s: mode_of(state, cp) picks its case. */
typedef int (*case_fn)(void *st, uint32_t cp);

static int map_case(jctx *c, const jstr *s, case_fn fn, void *st, jstr **out) {
    jsb b;
    jsb_init(&b, c);
    const unsigned char *p = (const unsigned char *)s->data;
    size_t i = 0, mi = 0;
    while (i < s->len) {
        uint32_t cp;
        size_t l = utf8_dec(p + i, s->len - i, &cp);
        if (put_cased(&b, cp, fn(st, cp), marked_at(s, i, &mi))) {
            jsb_drop(&b);
            return -1;
        }
        i += l;
    }
    jstr *r = jsb_finish(&b);
    if (!r) return -1;
    r->markup = s->markup;
    *out = r;
    return 0;
}

static int mode_upper(void *st, uint32_t cp) {
    (void)st, (void)cp;
    return CASE_UPPER;
}
static int mode_lower(void *st, uint32_t cp) {
    (void)st, (void)cp;
    return CASE_LOWER;
}
static int mode_capitalize(void *st, uint32_t cp) {
    (void)cp;
    bool *first = st;
    int m = *first ? CASE_UPPER : CASE_LOWER;
    *first = false;
    return m;
}
/* str.title(): upper after an uncased character, lower after a cased one. */
static int mode_title_method(void *st, uint32_t cp) {
    bool *prev_cased = st;
    int m = *prev_cased ? CASE_LOWER : CASE_UPPER;
    *prev_cased = is_cased(cp);
    return m;
}
/* jinja2's |title: words begin after a run of - whitespace ( { [ <. */
static int mode_title_filter(void *st, uint32_t cp) {
    bool *at_start = st;
    bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || u_isspace(cp);
    int m = sep ? CASE_KEEP : *at_start ? CASE_UPPER : CASE_LOWER;
    *at_start = sep;
    return m;
}

int jtext_upper(jctx *c, const jstr *s, jstr **out) { return map_case(c, s, mode_upper, NULL, out); }
int jtext_lower(jctx *c, const jstr *s, jstr **out) { return map_case(c, s, mode_lower, NULL, out); }
int jtext_capitalize(jctx *c, const jstr *s, jstr **out) {
    bool first = true;
    return map_case(c, s, mode_capitalize, &first, out);
}
int jtext_title_method(jctx *c, const jstr *s, jstr **out) {
    bool prev = false;
    return map_case(c, s, mode_title_method, &prev, out);
}
int jtext_title_filter(jctx *c, const jstr *s, jstr **out) {
    bool start = true;
    return map_case(c, s, mode_title_filter, &start, out);
}

/* Python's str.islower/isupper: some cased character, and none of the other case. */
static bool all_cased(const jstr *s, bool (*is_case)(uint32_t), bool (*is_other)(uint32_t)) {
    bool cased = false;
    size_t i = 0;
    while (i < s->len) {
        uint32_t cp;
        i += utf8_dec((const unsigned char *)s->data + i, s->len - i, &cp);
        if (is_other(cp)) return false;
        if (is_case(cp)) cased = true;
    }
    return cased;
}

bool jtext_islower(const jstr *s) { return all_cased(s, is_lower_cp, is_upper_cp); }
bool jtext_isupper(const jstr *s) { return all_cased(s, is_upper_cp, is_lower_cp); }

/* ---- substrings -------------------------------------------------------------------------- */

/* s[a..e) as a new string with its marks. */
static int sub(jctx *c, const jstr *s, size_t a, size_t e, jstr **out) {
    if (a == 0 && e == s->len) {
        ((jstr *)s)->rc++;
        *out = (jstr *)s;
        return 0;
    }
    jsb b;
    jsb_init(&b, c);
    if (jsb_put_range(&b, s, a, e)) {
        jsb_drop(&b);
        return -1;
    }
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
}

/* Whether code point cp is among the characters of `chars`. */
static bool in_chars(const jstr *chars, uint32_t cp) {
    size_t i = 0;
    while (i < chars->len) {
        uint32_t x;
        i += utf8_dec((const unsigned char *)chars->data + i, chars->len - i, &x);
        if (x == cp) return true;
    }
    return false;
}

static bool strip_this(const jstr *chars, uint32_t cp) { return chars ? in_chars(chars, cp) : u_isspace(cp); }

/* Start of the code point that ends at byte e of s. */
static size_t cp_start_before(const jstr *s, size_t e) {
    size_t st = e - 1;
    while (st > 0 && ((unsigned char)s->data[st] & 0xC0) == 0x80) st--;
    return st;
}

int jtext_strip(jctx *c, const jstr *s, const jstr *chars, bool left, bool right, jstr **out) {
    const unsigned char *p = (const unsigned char *)s->data;
    size_t a = 0, e = s->len;
    if (jwork(c, s->len)) return -1;
    if (left)
        while (a < e) {
            uint32_t cp;
            size_t l = utf8_dec(p + a, e - a, &cp);
            if (!strip_this(chars, cp)) break;
            a += l;
        }
    if (right)
        while (e > a) {
            size_t st = cp_start_before(s, e);
            uint32_t cp;
            utf8_dec(p + st, e - st, &cp);
            if (!strip_this(chars, cp)) break;
            e = st;
        }
    return sub(c, s, a, e, out);
}

static int push_sub(jctx *c, jvec *x, const jstr *s, size_t a, size_t e) {
    jstr *t;
    if (sub(c, s, a, e, &t)) return -1;
    return jvec_push(c, x, jv_str(t));
}

long jtext_find(const jstr *s, size_t a, size_t e, const jstr *needle, bool last) {
    if (e > s->len) e = s->len;
    if (a > e) return -1;
    size_t m = needle->len;
    if (m == 0) return last ? (long)e : (long)a;
    if (e - a < m) return -1;
    if (!last) {
        const char *f = memmem(s->data + a, e - a, needle->data, m);
        return f ? (long)(f - s->data) : -1;
    }
    for (size_t i = e - m + 1; i-- > a;)
        if (s->data[i] == needle->data[0] && memcmp(s->data + i, needle->data, m) == 0) return (long)i;
    return -1;
}

int jtext_split(jctx *c, const jstr *s, const jstr *sep, int64_t maxsplit, bool right, jlist **out) {
    jvec x = {0};
    const unsigned char *p = (const unsigned char *)s->data;
    size_t n = s->len;
    if (maxsplit < 0) maxsplit = INT64_MAX;
    if (jwork(c, n)) return -1;
    if (sep && sep->len == 0) return jfail(c, PLUMB_E_INVALID_ARG, "empty separator");
    if (!sep && !right) {
        size_t i = 0;
        while (maxsplit-- > 0) {
            while (i < n && u_space_at(s->data + i, n - i)) i += u_space_at(s->data + i, n - i);
            if (i == n) break;
            size_t j = i;
            while (i < n && !u_space_at(s->data + i, n - i)) {
                uint32_t cp;
                i += utf8_dec(p + i, n - i, &cp);
            }
            if (push_sub(c, &x, s, j, i)) goto fail;
        }
        if (i < n) {
            while (i < n && u_space_at(s->data + i, n - i)) i += u_space_at(s->data + i, n - i);
            if (i != n && push_sub(c, &x, s, i, n)) goto fail;
        }
        return jvec_list(c, &x, false, out);
    }
    if (!sep) { /* rsplit on whitespace */
        size_t e = n;
        while (maxsplit-- > 0) {
            while (e > 0) {
                size_t st = cp_start_before(s, e);
                uint32_t cp;
                utf8_dec(p + st, e - st, &cp);
                if (!u_isspace(cp)) break;
                e = st;
            }
            if (e == 0) break;
            size_t j = e;
            while (e > 0) {
                size_t st = cp_start_before(s, e);
                uint32_t cp;
                utf8_dec(p + st, e - st, &cp);
                if (u_isspace(cp)) break;
                e = st;
            }
            if (push_sub(c, &x, s, e, j)) goto fail;
        }
        if (e > 0) {
            while (e > 0) {
                size_t st = cp_start_before(s, e);
                uint32_t cp;
                utf8_dec(p + st, e - st, &cp);
                if (!u_isspace(cp)) break;
                e = st;
            }
            if (e > 0 && push_sub(c, &x, s, 0, e)) goto fail;
        }
        return jvec_list(c, &x, true, out);
    }
    if (!right) {
        size_t i = 0;
        while (maxsplit-- > 0) {
            long pos = jtext_find(s, i, n, sep, false);
            if (pos < 0) break;
            if (push_sub(c, &x, s, i, (size_t)pos)) goto fail;
            i = (size_t)pos + sep->len;
        }
        if (push_sub(c, &x, s, i, n)) goto fail;
        return jvec_list(c, &x, false, out);
    }
    size_t j = n;
    while (maxsplit-- > 0) {
        long pos = jtext_find(s, 0, j, sep, true);
        if (pos < 0) break;
        if (push_sub(c, &x, s, (size_t)pos + sep->len, j)) goto fail;
        j = (size_t)pos;
    }
    if (push_sub(c, &x, s, 0, j)) goto fail;
    return jvec_list(c, &x, true, out);
fail:
    jvec_drop(c, &x);
    return -1;
}

int jtext_replace(jctx *c, const jstr *s, const jstr *old, const jstr *rep, int64_t count, jstr **out) {
    if (count < 0) count = INT64_MAX;
    if (jwork(c, s->len)) return -1;
    jsb b;
    jsb_init(&b, c);
    int rv = 0;
    if (old->len == 0) { /* insert before every character and at the end */
        size_t i = 0;
        while (!rv) {
            if (count > 0) {
                rv = jsb_put_str(&b, rep);
                count--;
            }
            if (rv || i >= s->len) break;
            size_t e = i + 1;
            while (e < s->len && ((unsigned char)s->data[e] & 0xC0) == 0x80) e++;
            rv = jsb_put_range(&b, s, i, e);
            i = e;
        }
    } else {
        size_t i = 0;
        while (!rv && count > 0) {
            long pos = jtext_find(s, i, s->len, old, false);
            if (pos < 0) break;
            rv = jsb_put_range(&b, s, i, (size_t)pos) || jsb_put_str(&b, rep);
            i = (size_t)pos + old->len;
            count--;
        }
        if (!rv) rv = jsb_put_range(&b, s, i, s->len);
    }
    if (rv) {
        jsb_drop(&b);
        return -1;
    }
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
}

int jtext_slice(jctx *c, const jstr *s, int64_t start, int64_t step, int64_t count, jstr **out) {
    if (count <= 0) return (*out = jstr_new(c, "", 0, false)) ? 0 : -1;
    if (step == 1) {
        size_t a = jstr_cp_off(s, (size_t)start), e = jstr_cp_off(s, (size_t)(start + count));
        return sub(c, s, a, e, out);
    }
    /* byte offsets of every code point, then pick */
    size_t ncp = jstr_ncp(s);
    size_t *offs = jalloc(c, (ncp + 1) * sizeof *offs);
    if (!offs) return -1;
    size_t k = 0;
    for (size_t i = 0; i < s->len; i++)
        if (((unsigned char)s->data[i] & 0xC0) != 0x80) offs[k++] = i;
    offs[ncp] = s->len;
    jsb b;
    jsb_init(&b, c);
    int rv = 0;
    int64_t idx = start;
    for (int64_t i = 0; i < count && !rv; i++, idx += step) rv = jsb_put_range(&b, s, offs[idx], offs[idx + 1]);
    jfree(c, offs);
    if (rv) {
        jsb_drop(&b);
        return -1;
    }
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
}

size_t jtext_linebreak_at(const char *p, size_t n) {
    unsigned char b = (unsigned char)p[0];
    if (b == '\r') return n > 1 && p[1] == '\n' ? 2 : 1;
    if (b == '\n' || b == 0x0B || b == 0x0C || (b >= 0x1C && b <= 0x1E)) return 1;
    if (b == 0xC2 && n > 1 && (unsigned char)p[1] == 0x85) return 2;
    if (b == 0xE2 && n > 2 && (unsigned char)p[1] == 0x80 &&
        ((unsigned char)p[2] == 0xA8 || (unsigned char)p[2] == 0xA9))
        return 3;
    return 0;
}

int jtext_indent(jctx *c, const jstr *s, const jstr *ind, bool first, bool blank, jstr **out) {
    /* jinja2: lines = (s + "\n").splitlines(); the first line is never indented (unless
     * `first`), empty lines only with `blank`; lines are joined with "\n". */
    jsb b;
    jsb_init(&b, c);
    int rv = first ? jsb_put_str(&b, ind) : 0;
    size_t i = 0;
    bool line1 = true;
    while (!rv) {
        size_t e = i;
        while (e < s->len && !jtext_linebreak_at(s->data + e, s->len - e)) e++;
        /* the line s[i..e); a final line without a break is the one "\n" was added for */
        if (!line1) {
            rv = jsb_putc(&b, '\n');
            if (!rv && (blank || e > i)) rv = jsb_put_str(&b, ind);
        }
        if (!rv) rv = jsb_put_range(&b, s, i, e);
        line1 = false;
        if (e >= s->len) break;
        i = e + jtext_linebreak_at(s->data + e, s->len - e);
        /* s ending in a break has one more (empty) line, closed by the added "\n" -- unless
         * the break is a lone "\r", which that "\n" joins into one "\r\n" */
        if (i >= s->len && s->data[s->len - 1] == '\r') break;
    }
    if (rv) {
        jsb_drop(&b);
        return -1;
    }
    *out = jsb_finish(&b);
    return *out ? 0 : -1;
}

int64_t jtext_wordcount(const jstr *s) {
    int64_t k = 0;
    bool in = false;
    size_t i = 0;
    while (i < s->len) {
        uint32_t cp;
        i += utf8_dec((const unsigned char *)s->data + i, s->len - i, &cp);
        bool w = u_isword(cp);
        if (w && !in) k++;
        in = w;
    }
    return k;
}
