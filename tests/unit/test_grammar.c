/* test_grammar.c — the grammar engine (src/grammar/): GBNF accept/reject tables over ~30
 * grammars (llama.cpp's json.gbnf and arithmetic.gbnf among them), UTF-8 at the byte level
 * (every class checked byte by byte against a reference decoder: splits, encoding-length
 * edges, surrogates, overlongs, invalid bytes), every parser error with its line:column, the
 * caps (text, elements, repeat counts, nesting, matcher memory), left recursion, token masks
 * against brute force over a small byte-level BPE vocabulary, and masked sampling. */
#include "test.h"
#include "byte_level.h"

#include "grammar/grammar.h"
#include "plumb.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------------------------- */

static plumb_grammar_t *parse_root(const char *text, const char *root) {
    plumb_grammar_t *g = NULL;
    plumb_status st = plumb_grammar_parse(text, strlen(text), root, NULL, &g);
    if (st != PLUMB_OK) plumb_test_fail(__FILE__, __LINE__, "parse failed (%d: %s) for:\n%s", st, plumb_last_error(), text);
    return g;
}

static plumb_grammar_t *parse(const char *text) { return parse_root(text, NULL); }

/* 0: rejected, 1: a viable prefix only, 2: complete. -1: error. */
static int match_n(const plumb_grammar_t *g, const char *s, size_t n) {
    bool viable = false, complete = false;
    if (plumb_grammar_match(g, s, n, &viable, &complete) != PLUMB_OK) return -1;
    if (complete && !viable) return -2; /* must never happen */
    return complete ? 2 : viable ? 1 : 0;
}

static int match(const plumb_grammar_t *g, const char *s) { return match_n(g, s, strlen(s)); }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- accept / reject tables ------------------------------------------------------------- */

#define MAXS 12
typedef struct gcase {
    const char *grammar;
    const char *full[MAXS];   /* complete sentences */
    const char *prefix[MAXS]; /* viable, not complete */
    const char *reject[MAXS]; /* not viable */
} gcase;

static const char JSON_GBNF[] =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x7F\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) # escapes\n"
    "  )* \"\\\"\" ws\n"
    "\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [0-9]{0,15})? ws\n"
    "\n"
    "# Optional space: by convention, applied in this grammar after literal chars when allowed\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const char ARITH_GBNF[] = "root  ::= (expr \"=\" ws term \"\\n\")+\n"
                                 "expr  ::= term ([-+*/] term)*\n"
                                 "term  ::= ident | num | \"(\" ws expr \")\" ws\n"
                                 "ident ::= [a-z] [a-z0-9_]* ws\n"
                                 "num   ::= [0-9]+ ws\n"
                                 "ws    ::= [ \\t\\n]*\n";

static const gcase CASES[] = {
    {"root ::= \"abc\"", {"abc"}, {"", "a", "ab"}, {"abd", "abcd", "b", "A"}},
    {"root ::= \"cat\" | \"dog\" | \"do\"", {"cat", "dog", "do"}, {"c", "d", "ca"}, {"dox", "cats", "x", "dogg"}},
    {"root ::= (\"a\" | \"b\") \"c\"", {"ac", "bc"}, {"a", "b"}, {"c", "ab", "acc"}},
    {"root ::= \"a\"*", {"", "a", "aaaaaaa"}, {0}, {"b", "ab", "aab"}},
    {"root ::= \"ab\"+", {"ab", "abab", "ababab"}, {"", "a", "aba"}, {"b", "abb", "aa"}},
    {"root ::= \"a\"? \"b\"", {"b", "ab"}, {"", "a"}, {"aa", "ba", "abb"}},
    {"root ::= \"x\"{3}", {"xxx"}, {"", "x", "xx"}, {"xxxx", "y"}},
    {"root ::= \"x\"{2,}", {"xx", "xxx", "xxxxxxxxxx"}, {"", "x"}, {"xy", "y"}},
    {"root ::= [0-9]{1,3}", {"1", "12", "123"}, {""}, {"1234", "a", "12a"}},
    {"root ::= \"a\" \"b\"{0} \"c\"", {"ac"}, {"a"}, {"abc", "ab", "c"}},
    {"root ::= \"a\" \"b\"{0,} \"c\"{0,0} \"d\"{ 1 , 2 }", {"ad", "abbd", "add"}, {"a", "ab"}, {"acd", "addd"}},
    {"root ::= (\"ab\" \"c\"){2} (\"d\"){1,2}", {"abcabcd", "abcabcdd"}, {"abcab", "abcabc"}, {"abcd", "abcabcddd"}},
    {"root ::= ((\"a\" | \"b\")+ (\"c\" (\"d\")?)*)", {"a", "ab", "bac", "abcdc", "acdcd"}, {""}, {"c", "add", "acdd"}},
    {"root ::= [a-cx-z]+", {"a", "abcxyz", "zz"}, {""}, {"d", "w", "A", "a-"}},
    {"root ::= \"\\\"\" [^\"\\\\]* \"\\\"\"", {"\"\"", "\"abc\"", "\"\xc3\xa9\""}, {"\"", "\"ab"}, {"\"a\\", "\"\"x", "a"}},
    {"root ::= [\\]\\[\\-\\\\\\n\\t/]+", {"]", "[", "-", "\\", "\n", "\t", "/", "][-\\"}, {""}, {"a", " "}},
    {"root ::= [a-] | [-z]", {"a", "-", "z"}, {""}, {"b", "y"}},
    {"root ::= \"\\x41\\u00e9\\U0001F600\\t\\\"\\\\\\/\"", {"A\xc3\xa9\xf0\x9f\x98\x80\t\"\\/"}, {"A\xc3", "A\xc3\xa9\xf0\x9f"},
     {"A\xe9", "\\x41"}},
    {"root ::= . . \"!\"", {"ab!", "\xc3\xa9\xf0\x9f\x98\x80!", "!!!", "\n\t!"}, {"a", "ab", "a!", "\xf0\x9f\x98"}, {"ab!!", "abc"}},
    {"root ::= p\np ::= (\"(\" p \")\")*", {"", "()", "(())()", "((()))"}, {"(", "((", "(()"}, {")", "())", "(()))"}},
    {"# leading comment\nroot ::= \"a\" # trailing comment\n  # another\n\n  \n", {"a"}, {""}, {"b", "#"}},
    {"root ::= \"a\" |\n   \"b\" |\n\n  \"c\"", {"a", "b", "c"}, {""}, {"ab", "d"}},
    {"root ::= (\n  \"a\"\n  | \"b\" # comment inside\n\n) \"c\"\n", {"ac", "bc"}, {"a"}, {"c", "abc"}},
    {"root ::= \"a\" ( | \"b\") | ", {"", "a", "ab"}, {0}, {"b", "abb"}},
    {JSON_GBNF,
     {"{}", "{ }", "{\"a\":1}", "{\"a\": [1, 2.5e-3, true, null, \"x\\u00e9\\n\"]}", "{\"k\":{\"n\":{}}}",
      "{\"\xe6\x97\xa5\":\"\xf0\x9f\x98\x80\"}", "{}\n   "},
     {"", "{", "{\"a\"", "{\"a\":", "{\"a\": [1,", "{\"\xe6\x97", "{\"a\":-", "{\"a\":1.", "{\"a\":\"\\u00"},
     {"[]", "{a}", "{\"a\":01}", "{\"a\":1,}", "{\"a\":\"\x01\"}", "{\"a\":\"\\x\"}", "{} {}", "{\"a\":\"\\u0G\"}",
      "{\"a\":tru }"}},
    {ARITH_GBNF, {"1=2\n", "1=2\n\n", "a +b = (c*d) \n", "x1 = 3\n4/2=2\n"}, {"", "1", "1=", "1=2", "(a"}, {"=", "1==", "A=1\n", "1=2\n=", "a + b=1\n"}},
    {"root ::= my-rule_2\nmy-rule_2 ::= \"ok\" r9\nr9 ::= \"!\"?", {"ok", "ok!"}, {"o"}, {"ok!!"}},
    {"root ::= \"a\" b\r\nb ::= \"b\" |\r\n  \"c\"\r\n", {"ab", "ac"}, {"a"}, {"abc"}},
    {"root ::= item (\",\" item)*\nitem ::= \"x\" | \"[\" root \"]\"", {"x", "x,x", "[x,[x]],x"}, {"[", "x,", "[[x"}, {"x,,", "]"}},
    {"root ::= \"a\" | []", {"a"}, {""}, {"b", "\xc3\xa9"}},
    {"root ::= [^]", {"a", "\xc3\xa9", "\xf4\x8f\xbf\xbf"}, {"", "\xe6\x97"}, {"ab", "\xff", "\xc0\x80"}},
    {"root ::= (\"a\" | \"aa\")* \"b\"", {"b", "ab", "aaaab"}, {"", "a", "aaa"}, {"bb", "aba"}},
    {"root ::= \"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\" | \"\xf0\x9f\x8e\x89\"+",
     {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "\xf0\x9f\x8e\x89\xf0\x9f\x8e\x89"}, {"\xe6", "\xe6\x97\xa5\xe6", "\xf0\x9f\x8e\x89\xf0"},
     {"\xe6\x97\xa6", "\xf0\x9f\x8e\x8a"}},
    {"root ::= \"\"* \"a\" \"\"+ \"\"? \"\"{3}", {"a"}, {""}, {"aa"}},
    {"root ::= \"a\"{0,3}{2}", {"", "a", "aaa", "aaaaaa"}, {0}, {"aaaaaaa"}},
};

TEST(grammar_accept_reject_tables) {
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const gcase *c = &CASES[i];
        plumb_grammar_t *g = parse(c->grammar);
        if (!g) continue;
        for (int k = 0; k < MAXS && c->full[k]; k++)
            if (match(g, c->full[k]) != 2)
                plumb_test_fail(__FILE__, __LINE__, "case %zu: \"%s\" should be complete (got %d)", i, c->full[k],
                                match(g, c->full[k]));
        for (int k = 0; k < MAXS && c->prefix[k]; k++)
            if (match(g, c->prefix[k]) != 1)
                plumb_test_fail(__FILE__, __LINE__, "case %zu: \"%s\" should be a viable prefix (got %d)", i,
                                c->prefix[k], match(g, c->prefix[k]));
        for (int k = 0; k < MAXS && c->reject[k]; k++)
            if (match(g, c->reject[k]) != 0)
                plumb_test_fail(__FILE__, __LINE__, "case %zu: \"%s\" should be rejected (got %d)", i, c->reject[k],
                                match(g, c->reject[k]));
        /* every prefix of a complete sentence is viable */
        for (int k = 0; k < MAXS && c->full[k]; k++)
            for (size_t n = 0; n < strlen(c->full[k]); n++)
                if (match_n(g, c->full[k], n) < 1)
                    plumb_test_fail(__FILE__, __LINE__, "case %zu: prefix %zu of \"%s\" rejected", i, n, c->full[k]);
        plumb_grammar_free(g);
    }
}

TEST(grammar_custom_root_and_api_edges) {
    const char *text = "a ::= \"x\" b\nb ::= \"y\"\n";
    plumb_grammar_t *g = parse_root(text, "a");
    if (g) {
        CHECK_EQ_INT(match(g, "xy"), 2);
        plumb_grammar_free(g);
    }
    g = parse_root(text, "b");
    if (g) {
        CHECK_EQ_INT(match(g, "y"), 2);
        CHECK_EQ_INT(match(g, "xy"), 0);
        plumb_grammar_free(g);
    }
    g = NULL;
    CHECK_STATUS(plumb_grammar_parse(text, strlen(text), NULL, NULL, &g), PLUMB_E_INVALID_ARG); /* no root */
    CHECK(g == NULL);
    CHECK(strstr(plumb_last_error(), "'root'") != NULL);
    CHECK_STATUS(plumb_grammar_parse(text, strlen(text), "c", NULL, &g), PLUMB_E_INVALID_ARG);
    CHECK(strstr(plumb_last_error(), "'c'") != NULL);
    CHECK_STATUS(plumb_grammar_parse(text, strlen(text), "", NULL, &g), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_grammar_parse(text, strlen(text), NULL, NULL, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_grammar_parse(NULL, 3, NULL, NULL, &g), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_grammar_parse(NULL, 0, NULL, NULL, &g), PLUMB_E_INVALID_ARG); /* empty: no root */
    CHECK_STATUS(plumb_grammar_parse("", 0, NULL, NULL, &g), PLUMB_E_INVALID_ARG);
    /* the length is honoured: text past len is not read */
    g = NULL;
    CHECK_STATUS(plumb_grammar_parse("root ::= \"a\"garbage", 12, NULL, NULL, &g), PLUMB_OK);
    if (g) {
        bool v = true, c = true;
        CHECK_STATUS(plumb_grammar_match(g, NULL, 0, &v, &c), PLUMB_OK);
        CHECK(v && !c);
        CHECK_STATUS(plumb_grammar_match(g, NULL, 1, &v, &c), PLUMB_E_INVALID_ARG);
        CHECK_STATUS(plumb_grammar_match(g, "a", 1, NULL, NULL), PLUMB_OK);
        CHECK_STATUS(plumb_grammar_match(NULL, "a", 1, &v, &c), PLUMB_E_INVALID_ARG);
        plumb_grammar_free(g);
    }
    plumb_grammar_free(NULL);
    /* zeroed limits mean the defaults */
    plumb_grammar_limits lim = {0};
    g = NULL;
    CHECK_STATUS(plumb_grammar_parse("root ::= \"a\"{100}", 17, NULL, &lim, &g), PLUMB_OK);
    plumb_grammar_free(g);
    plumb_grammar_limits d = plumb_grammar_default_limits();
    CHECK_EQ_INT(d.max_text, 1u << 20);
    CHECK_EQ_INT(d.max_elements, 1000000);
    CHECK_EQ_INT(d.max_repeat, 10000);
    CHECK_EQ_INT(d.max_depth, 64);
}

/* ---- UTF-8 at the byte level -------------------------------------------------------------- */

typedef struct cprange {
    uint32_t lo, hi;
} cprange;

/* The code points whose UTF-8 encoding starts with b[0..n): false when none (an invalid
 * prefix), else [*lo, *hi] (surrogates still inside; see overlaps()). */
static bool prefix_range(const uint8_t *b, size_t n, uint32_t *lo, uint32_t *hi, size_t *len) {
    const uint8_t c = b[0];
    size_t L = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!L || n > L) return false;
    uint32_t a = L == 1 ? c : L == 2 ? c & 0x1Fu : L == 3 ? c & 0x0Fu : c & 0x07u, z = a;
    for (size_t i = 1; i < L; i++) {
        uint8_t x = 0x80, y = 0xBF;
        if (i < n) {
            if ((b[i] & 0xC0) != 0x80) return false;
            x = y = b[i];
        }
        a = a << 6 | (x & 0x3Fu), z = z << 6 | (y & 0x3Fu);
    }
    static const uint32_t mins[] = {0, 0, 0x80, 0x800, 0x10000}, maxs[] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
    if (a < mins[L]) a = mins[L];
    if (z > maxs[L]) z = maxs[L];
    if (a > z) return false;
    if (a >= 0xD800 && z <= 0xDFFF) return false; /* only surrogates */
    *lo = a, *hi = z, *len = L;
    return true;
}

static bool in_ranges(const cprange *r, size_t n, uint32_t lo, uint32_t hi) {
    for (size_t i = 0; i < n; i++) {
        uint32_t a = r[i].lo > lo ? r[i].lo : lo, z = r[i].hi < hi ? r[i].hi : hi;
        if (a > z) continue;
        /* something in [a, z] that is not a surrogate */
        if (a < 0xD800 || z > 0xDFFF) return true;
    }
    return false;
}

typedef struct utf8_walk {
    gm *m;
    const cprange *r;
    size_t n;
    long checked, bad;
    const char *what;
} utf8_walk;

/* Every byte after prefix b[0..n) (state s): viable exactly when some code point of the class
 * starts so, complete exactly when b + byte is a whole code point of the class. */
static void walk_bytes(utf8_walk *w, uint8_t *b, size_t n, uint32_t s) {
    for (unsigned x = 0; x < 256 && w->bad < 10; x++) {
        b[n] = (uint8_t)x;
        uint32_t next;
        if (plumb__gm_step(w->m, s, (uint8_t)x, &next) != PLUMB_OK) {
            plumb_test_fail(__FILE__, __LINE__, "%s: step failed: %s", w->what, plumb_last_error());
            w->bad++;
            return;
        }
        uint32_t lo, hi;
        size_t L;
        const bool want = prefix_range(b, n + 1, &lo, &hi, &L) && in_ranges(w->r, w->n, lo, hi);
        const bool want_end = want && L == n + 1;
        w->checked++;
        if ((next != GM_DEAD) != want || (want && plumb__gm_can_end(w->m, next) != want_end) ||
            (want && plumb__gm_only_end(w->m, next) != want_end)) {
            char hex[32] = "";
            for (size_t i = 0; i <= n; i++) snprintf(hex + 3 * i, sizeof hex - 3 * i, "%02X ", b[i]);
            plumb_test_fail(__FILE__, __LINE__, "%s: bytes %s: viable %d (want %d), complete %d (want %d)", w->what, hex,
                            next != GM_DEAD, want, next != GM_DEAD && plumb__gm_can_end(w->m, next), want_end);
            w->bad++;
            continue;
        }
        if (want && !want_end) walk_bytes(w, b, n + 1, next);
    }
}

/* Grammar `root ::= <cls>` must match exactly the UTF-8 encodings of the code points r[0..n). */
static void check_class(const char *cls, const cprange *r, size_t n) {
    char text[512];
    snprintf(text, sizeof text, "root ::= %s", cls);
    plumb_grammar_t *g = parse(text);
    if (!g) return;
    utf8_walk w = {plumb__gm_create(g, 0), r, n, 0, 0, cls};
    uint32_t s;
    CHECK(w.m != NULL);
    if (w.m && plumb__gm_start(w.m, &s) == PLUMB_OK) {
        uint8_t b[8];
        CHECK(!plumb__gm_can_end(w.m, s));
        walk_bytes(&w, b, 0, s);
        CHECK(w.checked > 256);
    }
    plumb__gm_free(w.m);
    plumb_grammar_free(g);
}

TEST(grammar_utf8_classes_byte_exact) {
    const cprange all[] = {{0, 0x10FFFF}};
    check_class(".", all, 1);
    check_class("[^]", all, 1);
    const cprange not_a[] = {{0, 0x60}, {0x62, 0x10FFFF}};
    check_class("[^a]", not_a, 2);
    const cprange non_ascii[] = {{0x80, 0x10FFFF}};
    check_class("[\\u0080-\\U0010FFFF]", non_ascii, 1);
    check_class("[^\\x00-\\x7F]", non_ascii, 1);
    const cprange edges[] = {{0x7F, 0x80}, {0x7FF, 0x800}, {0xFFFF, 0x10000}, {0x10FFFF, 0x10FFFF}};
    check_class("[\\x7F-\\u0080\\u07FF-\\u0800\\uFFFF-\\U00010000\\U0010FFFF]", edges, 4);
    const cprange around_surr[] = {{0xD7FF, 0xE000}};
    check_class("[\\uD7FF-\\uE000]", around_surr, 1);
    const cprange neg[] = {{0, 0xE8}, {0x4E01, 0x10FFFF}};
    check_class("[^\\u00e9-\\u4e00]", neg, 2);
    const cprange span[] = {{0x41, 0x1F600}};
    check_class("[A-\\U0001F600]", span, 1);
    const cprange mixed[] = {{'a', 'z'}, {0xC0, 0x24F}, {0x4E00, 0x9FFF}, {0x1F600, 0x1F64F}};
    check_class("[a-z\\u00C0-\\u024F\\u4E00-\\u9FFF\\U0001F600-\\U0001F64F]", mixed, 4);
    /* raw UTF-8 in the class, overlapping and unsorted ranges */
    const cprange raw[] = {{0xE9, 0xE9}, {0x65E5, 0x65E5}, {0x1F389, 0x1F389}, {'0', '9'}};
    check_class("[\xf0\x9f\x8e\x89\xe6\x97\xa5\xc3\xa9" "5-90-6]", raw, 4);
    /* pseudo-random range sets: every byte, checked against the reference decoder */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int k = 0; k < 6; k++) {
        cprange r[4];
        char cls[256] = "[";
        size_t o = 1;
        for (int i = 0; i < 4; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint32_t shift = (uint32_t)(x % 4) * 5 + 1; /* spans of several sizes */
            uint32_t a = (uint32_t)(x >> 20) % 0x110000, len = (uint32_t)(x >> 44) % (1u << shift);
            uint32_t z = a + len > 0x10FFFF ? 0x10FFFF : a + len;
            if (a >= 0xD800 && a <= 0xDFFF) a = 0xD7F0;
            if (z >= 0xD800 && z <= 0xDFFF) z = 0xE010;
            r[i] = (cprange){a, z};
            o += (size_t)snprintf(cls + o, sizeof cls - o, "\\U%08X-\\U%08X", a, z);
        }
        snprintf(cls + o, sizeof cls - o, "]");
        check_class(cls, r, 4);
    }
}

TEST(grammar_utf8_literals_split) {
    /* a literal of characters of every length, matched one byte at a time */
    static const char lit[] = "a\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf";
    char text[128];
    snprintf(text, sizeof text, "root ::= \"%s\"", lit);
    plumb_grammar_t *g = parse(text);
    if (!g) return;
    const size_t n = strlen(lit);
    for (size_t i = 0; i < n; i++) CHECK_EQ_INT(match_n(g, lit, i), 1);
    CHECK_EQ_INT(match_n(g, lit, n), 2);
    plumb_grammar_free(g);
    g = parse("root ::= \"\\x7F\\u0080\\u07FF\\u0800\\uFFFF\\U00010000\\U0010FFFF\"");
    if (g) {
        CHECK_EQ_INT(match(g, "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"), 2);
        plumb_grammar_free(g);
    }
    /* surrogates, overlongs and invalid bytes are never matched, not even by . or [^a] */
    static const char *bad[] = {"\xed\xa0\x80", "\xed\xbf\xbf", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf",
                                "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff",
                                "\xfe", "\x80", "\xbf"};
    static const char *gr[] = {"root ::= .", "root ::= [^a]", "root ::= .*", "root ::= [^a]+", "root ::= [\\x00-\\U0010FFFF]"};
    for (size_t i = 0; i < sizeof gr / sizeof *gr; i++) {
        g = parse(gr[i]);
        if (!g) continue;
        for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
            if (match(g, bad[k]) != 0)
                plumb_test_fail(__FILE__, __LINE__, "%s matched bad UTF-8 #%zu", gr[i], k);
        CHECK_EQ_INT(match(g, "\xed\x9f\xbf"), 2); /* U+D7FF */
        CHECK_EQ_INT(match(g, "\xee\x80\x80"), 2); /* U+E000 */
        plumb_grammar_free(g);
    }
}

/* ---- parser errors ----------------------------------------------------------------------- */

typedef struct ecase {
    const char *grammar;
    plumb_status want;
    const char *where; /* "grammar L:C:" prefix, or NULL */
    const char *what;  /* a substring of the message */
} ecase;

static const ecase ERRORS[] = {
    {"root ::= foo", PLUMB_E_INVALID_ARG, "grammar 1:10:", "undefined rule 'foo'"},
    {"root ::= \"a\" b\nb ::= \"x\" | c\n", PLUMB_E_INVALID_ARG, "grammar 2:13:", "undefined rule 'c'"},
    {"root ::= \"\xe6\x97\xa5\xe6\x9c\xac\" nope", PLUMB_E_INVALID_ARG, "grammar 1:15:", "undefined rule 'nope'"},
    {"root ::= \"a\"\nroot ::= \"b\"", PLUMB_E_INVALID_ARG, "grammar 2:1:", "defined twice"},
    {"root \"a\"", PLUMB_E_INVALID_ARG, "grammar 1:6:", "'::='"},
    {"root ::= \"a\"\nb\n::= \"x\"", PLUMB_E_INVALID_ARG, "grammar 2:2:", "'::='"},
    {"root := \"a\"", PLUMB_E_INVALID_ARG, "grammar 1:6:", "'::='"},
    {"root ::= \"abc", PLUMB_E_INVALID_ARG, "grammar 1:10:", "unterminated literal"},
    {"root ::= \"a\" [abc", PLUMB_E_INVALID_ARG, "grammar 1:14:", "unterminated character class"},
    {"root ::= [a-", PLUMB_E_INVALID_ARG, "grammar 1:10:", "unterminated"},
    {"root ::= \"\\q\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "unknown escape '\\q'"},
    {"root ::= [\\q]", PLUMB_E_INVALID_ARG, "grammar 1:11:", "unknown escape"},
    {"root ::= \"\\x1\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "2 hex digits"},
    {"root ::= \"\\x1", PLUMB_E_INVALID_ARG, "grammar 1:11:", "2 hex digits"},
    {"root ::= \"\\u12G4\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "4 hex digits"},
    {"root ::= \"\\uD800\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "no Unicode character"},
    {"root ::= [\\uDFFF]", PLUMB_E_INVALID_ARG, "grammar 1:11:", "no Unicode character"},
    {"root ::= \"\\U00110000\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "no Unicode character"},
    {"root ::= \"\\", PLUMB_E_INVALID_ARG, "grammar 1:11:", "unfinished escape"},
    {"root ::= [z-a]", PLUMB_E_INVALID_ARG, "grammar 1:13:", "before its start"},
    {"root ::= [\\u00e9-a]", PLUMB_E_INVALID_ARG, "grammar 1:18:", "before its start"},
    {"root ::= (\"a\"", PLUMB_E_INVALID_ARG, "grammar 1:10:", "'(' is not closed"},
    {"root ::= (\"a\" (\"b\")\n", PLUMB_E_INVALID_ARG, "grammar 1:10:", "'(' is not closed"},
    {"root ::= \"a\")", PLUMB_E_INVALID_ARG, "grammar 1:13:", "unexpected ')'"},
    {"root ::= \"a\"\n)", PLUMB_E_INVALID_ARG, "grammar 2:1:", "rule name"},
    {"root ::= *", PLUMB_E_INVALID_ARG, "grammar 1:10:", "nothing before it"},
    {"root ::= \"a\" | +\"b\"", PLUMB_E_INVALID_ARG, "grammar 1:16:", "nothing before it"},
    {"root ::= (?)", PLUMB_E_INVALID_ARG, "grammar 1:11:", "nothing before it"},
    {"root ::= {2}", PLUMB_E_INVALID_ARG, "grammar 1:10:", "nothing before it"},
    {"root ::= \"a\"{3,2}", PLUMB_E_INVALID_ARG, "grammar 1:13:", "below the minimum"},
    {"root ::= \"a\"{x}", PLUMB_E_INVALID_ARG, "grammar 1:13:", "count"},
    {"root ::= \"a\"{3", PLUMB_E_INVALID_ARG, "grammar 1:13:", "'}'"},
    {"root ::= \"a\"{1,2,3}", PLUMB_E_INVALID_ARG, "grammar 1:13:", "'}'"},
    {"root ::= \"a\"{10001}", PLUMB_E_RANGE, "grammar 1:13:", "limit of 10000"},
    {"root ::= \"a\"{0,10001}", PLUMB_E_RANGE, "grammar 1:13:", "limit"},
    {"root ::= \"a\"{99999999999999999999}", PLUMB_E_RANGE, "grammar 1:13:", "limit"},
    {"root ::= root \"a\" | \"b\"", PLUMB_E_INVALID_ARG, "grammar 1:1:", "rule 'root' is left-recursive"},
    {"root ::= a\na ::= b \"x\"\nb ::= \"y\" | a", PLUMB_E_INVALID_ARG, NULL, "left-recursive"},
    {"root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"b\"", PLUMB_E_INVALID_ARG, "grammar 2:1:", "rule 'a' is left-recursive"},
    {"root ::= a\na ::= e e a \"x\" | \"y\"\ne ::= \"e\"*", PLUMB_E_INVALID_ARG, "grammar 2:1:", "left-recursive"},
    {"root ::= (\"\")*", PLUMB_E_INVALID_ARG, NULL, "left-recursive"},
    {"root ::= (\"x\"?)*", PLUMB_E_INVALID_ARG, NULL, "left-recursive"},
    {"root ::= (\"x\"*)+", PLUMB_E_INVALID_ARG, NULL, "left-recursive"},
    {"root ::= e*\ne ::= \"a\" | ", PLUMB_E_INVALID_ARG, NULL, "left-recursive"},
    {"root ::= \"a\"<[1000]>", PLUMB_E_UNSUPPORTED, "grammar 1:13:", "token references"},
    {"root ::= !<think>", PLUMB_E_UNSUPPORTED, "grammar 1:10:", "token references"},
    {"a ::= \"x\"", PLUMB_E_INVALID_ARG, NULL, "no rule named 'root'"},
    {"root ::= \"\xc3\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "invalid UTF-8"},
    {"root ::= \"\xc0\x80\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "invalid UTF-8"},
    {"root ::= \"\xe0\x80\x80\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "invalid UTF-8"},
    {"root ::= \"\xed\xa0\x80\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "invalid UTF-8"},
    {"root ::= \"\xf4\x90\x80\x80\"", PLUMB_E_INVALID_ARG, "grammar 1:11:", "invalid UTF-8"},
    {"root ::= [\xff]", PLUMB_E_INVALID_ARG, "grammar 1:11:", "invalid UTF-8"},
    {"root ::= \"a\" \xff", PLUMB_E_INVALID_ARG, "grammar 1:14:", "unexpected"},
    {"root ::= \"a\"\n  \"b\"", PLUMB_E_INVALID_ARG, "grammar 2:3:", "rule name"},
    {"::= \"a\"", PLUMB_E_INVALID_ARG, "grammar 1:1:", "rule name"},
};

static void check_error(const char *text, size_t len, const plumb_grammar_limits *lim, plumb_status want,
                        const char *where, const char *what, int line) {
    plumb_grammar_t *g = (plumb_grammar_t *)(uintptr_t)1;
    plumb_status st = plumb_grammar_parse(text, len, NULL, lim, &g);
    const char *e = plumb_last_error();
    if (st != want)
        plumb_test_fail(__FILE__, line, "status %d, want %d (%s) for: %s", st, want, e, text);
    if (st != PLUMB_OK && g != NULL) plumb_test_fail(__FILE__, line, "*out not NULL after an error");
    if (where && strncmp(e, where, strlen(where)) != 0)
        plumb_test_fail(__FILE__, line, "message \"%s\" does not start with \"%s\" (grammar: %s)", e, where, text);
    if (what && !strstr(e, what))
        plumb_test_fail(__FILE__, line, "message \"%s\" does not hold \"%s\" (grammar: %s)", e, what, text);
    if (st == PLUMB_OK) plumb_grammar_free(g);
}

TEST(grammar_parse_errors) {
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        check_error(ERRORS[i].grammar, strlen(ERRORS[i].grammar), NULL, ERRORS[i].want, ERRORS[i].where,
                    ERRORS[i].what, __LINE__);
    /* a NUL byte in the text */
    check_error("root ::= \"a\0\"", 13, NULL, PLUMB_E_INVALID_ARG, NULL, "NUL", __LINE__);
    /* what is not an error: left recursion only counts when nothing is matched first */
    static const char *ok[] = {
        "root ::= \"a\" root | \"b\"",
        "root ::= a\na ::= \"x\" a | b? \"y\"\nb ::= \"b\"",
        "root ::= \"\"*",
        "root ::= (\"x\"?){0,5}",
        "root ::= (\"x\" \"y\"?)*",
        "root ::= a\na ::= \"(\" a \")\" a | ",
        "root ::= [a]* [b]? (\"c\"*) \"d\"",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        plumb_grammar_t *g = NULL;
        plumb_status st = plumb_grammar_parse(ok[i], strlen(ok[i]), NULL, NULL, &g);
        if (st) plumb_test_fail(__FILE__, __LINE__, "%s: %d %s", ok[i], st, plumb_last_error());
        plumb_grammar_free(g);
    }
}

TEST(grammar_limits) {
    plumb_grammar_limits lim = plumb_grammar_default_limits();
    /* text over max_text */
    lim.max_text = 12;
    check_error("root ::= \"ab\"", 13, &lim, PLUMB_E_RANGE, NULL, "13 bytes", __LINE__);
    check_error("root ::= \"a\"", 12, &lim, PLUMB_OK, NULL, NULL, __LINE__);
    lim = plumb_grammar_default_limits();
    /* repeat counts */
    lim.max_repeat = 5;
    check_error("root ::= \"a\"{5}", 15, &lim, PLUMB_OK, NULL, NULL, __LINE__);
    check_error("root ::= \"a\"{6}", 15, &lim, PLUMB_E_RANGE, "grammar 1:13:", "limit of 5", __LINE__);
    check_error("root ::= \"a\"{2,6}", 17, &lim, PLUMB_E_RANGE, "grammar 1:13:", "limit of 5", __LINE__);
    check_error("root ::= \"a\"{2,}", 16, &lim, PLUMB_OK, NULL, NULL, __LINE__);
    lim = plumb_grammar_default_limits();
    /* nesting: 64 levels of parentheses pass, 65 do not */
    char deep[400];
    for (int depth = 64; depth <= 65; depth++) {
        size_t o = (size_t)snprintf(deep, sizeof deep, "root ::= ");
        for (int i = 0; i < depth; i++) deep[o++] = '(';
        deep[o++] = '"', deep[o++] = 'a', deep[o++] = '"';
        for (int i = 0; i < depth; i++) deep[o++] = ')';
        deep[o] = 0;
        check_error(deep, o, NULL, depth == 64 ? PLUMB_OK : PLUMB_E_RANGE, depth == 64 ? NULL : "grammar 1:74:",
                    depth == 64 ? NULL : "deeper than 64", __LINE__);
    }
    lim.max_depth = 2;
    check_error("root ::= ((\"a\"))", 16, &lim, PLUMB_OK, NULL, NULL, __LINE__);
    check_error("root ::= (((\"a\")))", 18, &lim, PLUMB_E_RANGE, "grammar 1:12:", "deeper", __LINE__);
    check_error("root ::= ((\"a\")) ((\"b\"))", 24, &lim, PLUMB_OK, NULL, NULL, __LINE__); /* depth comes back down */
    lim = plumb_grammar_default_limits();
    /* elements: small cap, and the default cap reached by repeats, quickly */
    lim.max_elements = 20000;
    check_error("root ::= \"a\"{10000} \"b\"{9000}", 29, &lim, PLUMB_OK, NULL, NULL, __LINE__);
    check_error("root ::= \"a\"{10000} \"b\"{10000}", 30, &lim, PLUMB_E_RANGE, NULL, "more than 20000", __LINE__);
    check_error("root ::= ((\"a\"{10000}){10000}){10000}", 37, &lim, PLUMB_E_RANGE, NULL, "20000", __LINE__);
    check_error("root ::= \"a\"{0,10000} \"b\"{0,10000}", 34, &lim, PLUMB_E_RANGE, NULL, "20000", __LINE__);
    char *big = malloc(8000);
    size_t o = (size_t)snprintf(big, 8000, "root ::= ");
    for (int i = 0; i < 120; i++) o += (size_t)snprintf(big + o, 8000 - o, "(\"a\"{10000}){10000} ");
    double t0 = now_s();
    check_error(big, o, NULL, PLUMB_E_RANGE, NULL, "1000000", __LINE__);
    o = (size_t)snprintf(big, 8000, "root ::= ");
    for (int i = 0; i < 60; i++) o += (size_t)snprintf(big + o, 8000 - o, "(\"ab\"{0,10000}) ");
    check_error(big, o, NULL, PLUMB_E_RANGE, NULL, "1000000", __LINE__);
    CHECK(now_s() - t0 < 10.0);
    free(big);
}

/* A 1 MiB grammar of many rules (names looked up per reference) parses in reasonable time. */
TEST(grammar_many_rules_fast) {
    const size_t cap = 1u << 20;
    char *s = malloc(cap + 64);
    size_t n = (size_t)snprintf(s, cap, "root ::= r0\n");
    int i = 0;
    for (; n < cap - 64; i++) n += (size_t)snprintf(s + n, cap - n, "r%d ::= \"x\" r%d | \"y\"\n", i, i + 1);
    n += (size_t)snprintf(s + n, cap + 64 - n, "r%d ::= \"z\"\n", i);
    double t0 = now_s();
    plumb_grammar_t *g = NULL;
    CHECK_STATUS(plumb_grammar_parse(s, n, NULL, NULL, &g), PLUMB_OK);
    const double dt = now_s() - t0;
    if (dt > 3.0) plumb_test_fail(__FILE__, __LINE__, "%d rules took %.1f s to parse", i, dt);
    if (g) {
        CHECK_EQ_INT(match(g, "xxxy"), 2);
        CHECK_EQ_INT(match(g, "xxxz"), 0);
        plumb_grammar_free(g);
    }
    free(s);
}

/* ---- the matcher: caps, never hanging ------------------------------------------------------ */

TEST(grammar_matcher_memory_cap) {
    /* every a doubles the stacks (b or c pending): the tables pass any cap, quickly */
    plumb_grammar_t *g = parse("root ::= s\ns ::= \"a\" s \"b\" | \"a\" s \"c\" | \"\"");
    if (!g) return;
    char text[64];
    memset(text, 'a', sizeof text);
    double t0 = now_s();
    bool v, c;
    CHECK_STATUS(plumb_grammar_match(g, text, sizeof text, &v, &c), PLUMB_E_RANGE);
    CHECK(strstr(plumb_last_error(), "MiB") != NULL);
    CHECK(now_s() - t0 < 20.0);
    CHECK_STATUS(plumb_grammar_match(g, "aaabcb", 6, &v, &c), PLUMB_OK);
    CHECK(v && c);
    /* a tight cap through the internal matcher: RANGE, then the matcher still answers right */
    gm *m = plumb__gm_create(g, 64 << 10);
    CHECK(m != NULL);
    uint32_t s0, s = 0;
    plumb_status st = plumb__gm_start(m, &s0);
    CHECK_STATUS(st, PLUMB_OK);
    s = s0;
    for (int i = 0; i < 64 && !st; i++) st = plumb__gm_step(m, s, 'a', &s);
    CHECK_STATUS(st, PLUMB_E_RANGE);
    CHECK(plumb__gm_memory(m) <= (64 << 10));
    /* from the start again: a short text still matches exactly */
    s = s0;
    st = PLUMB_OK;
    for (const char *p = "aab"; *p && !st; p++) st = plumb__gm_step(m, s, (uint8_t)*p, &s);
    if (!st) {
        CHECK(s != GM_DEAD);
        CHECK(!plumb__gm_can_end(m, s));
        uint32_t t;
        if (!plumb__gm_step(m, s, 'c', &t)) CHECK(t != GM_DEAD && plumb__gm_can_end(m, t));
        if (!plumb__gm_step(m, s, 'a', &t)) CHECK(t == GM_DEAD);
    }
    plumb__gm_free(m);
    plumb_grammar_free(g);
}

TEST(grammar_matcher_deep_and_long) {
    /* deep nesting: a stack 20000 deep */
    plumb_grammar_t *g = parse("root ::= p\np ::= \"(\" p \")\" | \"x\"");
    if (g) {
        const size_t n = 20000;
        char *t = malloc(2 * n + 1);
        memset(t, '(', n), t[n] = 'x', memset(t + n + 1, ')', n);
        CHECK_EQ_INT(match_n(g, t, 2 * n + 1), 2);
        CHECK_EQ_INT(match_n(g, t, 2 * n), 1);
        t[2 * n] = '(';
        CHECK_EQ_INT(match_n(g, t, 2 * n + 1), 0);
        free(t);
        plumb_grammar_free(g);
    }
    /* long right-recursive text stays flat */
    g = parse("root ::= ([a-z]+ \" \")* \".\"");
    if (g) {
        const size_t n = 200000;
        char *t = malloc(n + 2);
        for (size_t i = 0; i < n; i++) t[i] = i % 7 == 6 ? ' ' : 'a' + (char)(i % 26);
        t[n - 1] = ' ', t[n] = '.';
        CHECK_EQ_INT(match_n(g, t, n + 1), 2);
        free(t);
        plumb_grammar_free(g);
    }
    /* nullable repeat chains: bounded work */
    g = parse("root ::= (\"a\"?){0,2000} \"b\"");
    if (g) {
        char t[600];
        memset(t, 'a', sizeof t - 1);
        t[sizeof t - 1] = 'b';
        double t0 = now_s();
        CHECK_EQ_INT(match_n(g, t, sizeof t), 2);
        CHECK_EQ_INT(match_n(g, t, sizeof t - 1), 1);
        CHECK(now_s() - t0 < 10.0);
        plumb_grammar_free(g);
    }
}

/* ---- constraints over a small byte-level BPE vocabulary ------------------------------------ */

enum { T_NORMAL = 1, T_CONTROL = 3, T_USER = 4, T_UNUSED = 5 };


/* Multi-byte token texts (raw bytes; stored byte-level encoded). */
static const char *const PIECES[] = {
    "ab", "abc", "c.", "true", "false", "null", "tr", "{\"", "\":", "\",", " \"", "12", "1.5", "-0", "e+", "\\u00",
    "\xc3\xa9", "\xc3", "\xa9x", "\xe6\x97\xa5", "\xe6\x97", "\x97\xa5\xe6", "\xe6\x9c\xac\xe8\xaa\x9e", "\xf0\x9f\x98\x80",
    "\x9f\x98\x80", "\xf0\x9f", "\x80!", "\n\n", "  ", "[1", "]", "},", "\"}", "\xed\xa0\x80", "\xc0\x80", "a\xff",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e!", "!", "yes", "no", "maybe", "yesno",
};
#define N_PIECES (sizeof PIECES / sizeof PIECES[0])

typedef struct tvocab {
    plumb_vocab_t *v;
    plumb_token_index_t *ti;
    int32_t n;
    int32_t bos, eot, eos, user, unused;
    char piece[512][64];
    int plen[512];
} tvocab;

static tvocab *make_vocab(void) {
    static plumb_str tok[512];
    static char text[512][160];
    static int32_t type[512];
    int n = 0;
    for (unsigned i = 0; i < 256; i++) byte_level(i, text[n]), type[n++] = T_NORMAL;
    for (size_t k = 0; k < N_PIECES; k++) {
        size_t o = 0;
        for (const char *p = PIECES[k]; *p; p++) {
            char b[4];
            byte_level((uint8_t)*p, b);
            o += (size_t)snprintf(text[n] + o, sizeof text[n] - o, "%s", b);
        }
        type[n++] = T_NORMAL;
    }
    tvocab *tv = calloc(1, sizeof *tv);
    tv->bos = n, snprintf(text[n], sizeof text[n], "<|begin_of_text|>"), type[n++] = T_CONTROL;
    tv->eot = n, snprintf(text[n], sizeof text[n], "<|eot_id|>"), type[n++] = T_CONTROL;
    tv->eos = n, snprintf(text[n], sizeof text[n], "<|end_of_text|>"), type[n++] = T_CONTROL;
    tv->user = n, snprintf(text[n], sizeof text[n], "<tool>"), type[n++] = T_USER;
    tv->unused = n, snprintf(text[n], sizeof text[n], "<unused0>"), type[n++] = T_UNUSED;
    for (int i = 0; i < n; i++) tok[i] = (plumb_str){text[i], strlen(text[i])};
    static const plumb_str merges[] = {{"a b", 3}, {"ab c", 4}};
    plumb_gguf_writer_t *w;
    if (plumb_gguf_writer_create(&w)) {
        free(tv);
        return NULL;
    }
    plumb_gguf_writer_set_str(w, "general.architecture", "llama", 5);
    plumb_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4);
    plumb_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, (uint64_t)n);
    plumb_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", PLUMB_GGUF_I32, type, (uint64_t)n);
    plumb_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 2);
    uint32_t u = (uint32_t)tv->bos;
    plumb_gguf_writer_set(w, "tokenizer.ggml.bos_token_id", PLUMB_GGUF_U32, &u);
    u = (uint32_t)tv->eos;
    plumb_gguf_writer_set(w, "tokenizer.ggml.eos_token_id", PLUMB_GGUF_U32, &u);
    char path[128];
    snprintf(path, sizeof path, "/tmp/plumb-unit-%d-grammar.gguf", (int)getpid());
    plumb_status st = plumb_gguf_writer_write(w, path);
    plumb_gguf_writer_free(w);
    plumb_gguf_t *gg = NULL;
    if (!st) st = plumb_gguf_open(path, &gg);
    if (!st) st = plumb_vocab_create(gg, &tv->v);
    plumb_gguf_free(gg);
    unlink(path);
    if (!st) st = plumb_token_index_create(tv->v, &tv->ti);
    if (st) {
        plumb_test_fail(__FILE__, __LINE__, "test vocabulary: %d %s", st, plumb_last_error());
        plumb_vocab_free(tv->v);
        free(tv);
        return NULL;
    }
    tv->n = plumb_vocab_n_tokens(tv->v);
    for (int32_t t = 0; t < tv->n && t < 512; t++)
        tv->plen[t] = plumb_token_to_piece(tv->v, t, tv->piece[t], sizeof tv->piece[t], false);
    return tv;
}

static void free_vocab(tvocab *tv) {
    if (!tv) return;
    plumb_token_index_free(tv->ti);
    plumb_vocab_free(tv->v);
    free(tv);
}

static bool bit(const uint32_t *bits, int32_t t) { return bits[t >> 5] >> (t & 31) & 1; }

/* Compares the mask of `state` (reached by text[0..n)) with brute force over the vocabulary. */
static void check_mask(plumb_constraint_t *c, const tvocab *tv, const plumb_grammar_t *g, uint32_t state,
                       const char *text, size_t n, const char *what) {
    const uint32_t *got = NULL;
    int32_t count = -1;
    plumb_status st = plumb_constraint_mask(c, state, &got, &count);
    if (st == PLUMB_E_RANGE && strstr(what, "cap")) return;
    if (st) {
        plumb_test_fail(__FILE__, __LINE__, "%s: mask at %zu: %d %s", what, n, st, plumb_last_error());
        return;
    }
    uint32_t bits[512 / 32]; /* *got lasts only until the next call on c */
    memcpy(bits, got, ((size_t)tv->n + 31) / 32 * 4);
    char buf[1024];
    memcpy(buf, text, n);
    int32_t want_count = 0, bad = 0;
    const int here = match_n(g, text, n);
    for (int32_t t = 0; t < tv->n; t++) {
        bool want;
        if (plumb_vocab_is_eog(tv->v, t)) want = here == 2;
        else if (plumb_vocab_is_control(tv->v, t) || tv->plen[t] <= 0) want = false;
        else {
            memcpy(buf + n, tv->piece[t], (size_t)tv->plen[t]);
            want = match_n(g, buf, n + (size_t)tv->plen[t]) >= 1;
        }
        want_count += want;
        if (bit(bits, t) != want && bad++ < 5)
            plumb_test_fail(__FILE__, __LINE__, "%s: after %zu bytes, token %d: mask %d, brute force %d", what, n, t,
                            bit(bits, t), want);
        /* accept agrees with the mask */
        uint32_t next = 0;
        plumb_status a = plumb_constraint_accept(c, state, t, &next);
        if (a == PLUMB_E_RANGE && strstr(what, "cap")) continue;
        if ((a == PLUMB_OK) != want && bad++ < 5)
            plumb_test_fail(__FILE__, __LINE__, "%s: after %zu bytes, accept(%d) = %d, brute force %d", what, n, t, a,
                            want);
        if (!want && a != PLUMB_E_INVALID_ARG && bad++ < 5)
            plumb_test_fail(__FILE__, __LINE__, "%s: accept of disallowed %d gave %d", what, t, a);
    }
    CHECK_EQ_INT(count, want_count);
    CHECK_EQ_INT(plumb_constraint_can_end(c, state), here == 2);
    /* must_end: complete and no byte continues */
    bool more = false;
    for (unsigned b = 0; b < 256 && !more && here == 2; b++) {
        buf[n] = (char)b;
        more = match_n(g, buf, n + 1) >= 1;
    }
    CHECK_EQ_INT(plumb_constraint_must_end(c, state), here == 2 && !more);
}

/* Walks text one byte at a time from the start, checking the mask at every state. */
static void check_masks_along(const tvocab *tv, const char *grammar, const char *text, size_t max_memory) {
    plumb_grammar_t *g = parse(grammar);
    if (!g) return;
    plumb_constraint_t *c = NULL;
    CHECK_STATUS(plumb_constraint_create(g, tv->ti, max_memory, &c), PLUMB_OK);
    uint32_t s;
    if (c && plumb_constraint_start(c, &s) == PLUMB_OK) {
        const size_t n = strlen(text);
        for (size_t i = 0; i <= n; i++) {
            check_mask(c, tv, g, s, text, i, grammar);
            if (i == n) break;
            uint32_t next;
            plumb_status st = plumb_constraint_accept_bytes(c, s, text + i, 1, &next);
            if (st) {
                plumb_test_fail(__FILE__, __LINE__, "accept_bytes at %zu of \"%s\": %d %s", i, text, st,
                                plumb_last_error());
                break;
            }
            s = next;
        }
        /* the same text at once reaches the same state (states are hash-consed) */
        uint32_t s0, all;
        if (!plumb_constraint_start(c, &s0) && !plumb_constraint_accept_bytes(c, s0, text, n, &all)) CHECK_EQ_INT(all, s);
    }
    plumb_constraint_free(c);
    plumb_grammar_free(g);
}

TEST(grammar_constraint_masks_brute_force) {
    tvocab *tv = make_vocab();
    if (!tv) return;
    CHECK(tv->n > 256 + (int32_t)N_PIECES);
    check_masks_along(tv, JSON_GBNF, "{\"k\xc3\xa9y\": [1.5, -0, true, null, \"\xe6\x97\xa5\\u00e9\"], \"\xf0\x9f\x98\x80\":{}}\n ", 0);
    check_masks_along(tv, "root ::= \"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\" \"!\"? | \"\xf0\x9f\x98\x80\"+",
                      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e!", 0);
    check_masks_along(tv, "root ::= \"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\" \"!\"? | \"\xf0\x9f\x98\x80\"+",
                      "\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 0);
    check_masks_along(tv, "root ::= \"yes\" | \"no\" | \"maybe\"", "maybe", 0);
    check_masks_along(tv, "root ::= (\"ab\" | \"c\")* \".\"", "abcab.", 0);
    check_masks_along(tv, "root ::= [^a]* \"a\"", "x\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80 a", 0);
    check_masks_along(tv, ARITH_GBNF, "x1 = (2+ab)\n", 0);
    check_masks_along(tv, "root ::= \"-\"? [0-9]+ (\".\" [0-9]+)? ([eE] [-+]? [0-9]+)?", "-12.5e+3", 0);
    check_masks_along(tv, "root ::= \"\"", "", 0); /* only the end */
    free_vocab(tv);
}

TEST(grammar_constraint_api) {
    tvocab *tv = make_vocab();
    if (!tv) return;
    plumb_grammar_t *g = parse("root ::= \"ab\" | \"a\"+");
    plumb_constraint_t *c = NULL;
    if (!g) goto done;
    CHECK_STATUS(plumb_constraint_create(NULL, tv->ti, 0, &c), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_create(g, NULL, 0, &c), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_create(g, tv->ti, 0, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_token_index_create(NULL, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_create(g, tv->ti, 0, &c), PLUMB_OK);
    if (!c) goto done;
    uint32_t s0, s, s2;
    CHECK_STATUS(plumb_constraint_start(c, &s0), PLUMB_OK);
    CHECK_STATUS(plumb_constraint_start(NULL, &s0), PLUMB_E_INVALID_ARG);
    CHECK(!plumb_constraint_can_end(c, s0));
    CHECK(!plumb_constraint_must_end(c, s0));
    CHECK(!plumb_constraint_can_end(NULL, s0));
    /* control, unused, out of range: never allowed */
    CHECK_STATUS(plumb_constraint_accept(c, s0, tv->bos, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept(c, s0, tv->unused, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept(c, s0, -1, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept(c, s0, tv->n, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept(c, s0, tv->eos, &s), PLUMB_E_INVALID_ARG); /* cannot end yet */
    CHECK_STATUS(plumb_constraint_accept(c, s0, 'b', &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept(c, s0, 'a', NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept_bytes(c, s0, "b", 1, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept_bytes(c, s0, NULL, 1, &s), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_accept_bytes(c, s0, NULL, 0, &s), PLUMB_OK);
    CHECK_EQ_INT(s, s0);
    const uint32_t *bits;
    int32_t n;
    CHECK_STATUS(plumb_constraint_mask(c, s0, &bits, NULL), PLUMB_E_INVALID_ARG);
    CHECK_STATUS(plumb_constraint_mask(c, s0, &bits, &n), PLUMB_OK);
    CHECK_EQ_INT(n, 2); /* "a", "ab" */
    CHECK(bit(bits, 'a'));
    CHECK(!bit(bits, tv->eos) && !bit(bits, tv->eot) && !bit(bits, tv->bos));
    /* "ab": must end; only end-of-generation tokens */
    int32_t ab = plumb_vocab_find(tv->v, "ab", 2);
    CHECK(ab > 255);
    CHECK_STATUS(plumb_constraint_accept(c, s0, ab, &s), PLUMB_OK);
    CHECK(plumb_constraint_can_end(c, s) && plumb_constraint_must_end(c, s));
    CHECK_STATUS(plumb_constraint_mask(c, s, &bits, &n), PLUMB_OK);
    CHECK_EQ_INT(n, 2);
    CHECK(bit(bits, tv->eos) && bit(bits, tv->eot));
    CHECK_STATUS(plumb_constraint_accept(c, s, tv->eos, &s2), PLUMB_OK);
    CHECK_EQ_INT(s2, s);
    CHECK_STATUS(plumb_constraint_accept(c, s, 'a', &s2), PLUMB_E_INVALID_ARG);
    /* "a": may end, may go on */
    CHECK_STATUS(plumb_constraint_accept(c, s0, 'a', &s), PLUMB_OK);
    CHECK(plumb_constraint_can_end(c, s) && !plumb_constraint_must_end(c, s));
    CHECK_STATUS(plumb_constraint_mask(c, s, &bits, &n), PLUMB_OK);
    CHECK(bit(bits, 'a') && bit(bits, 'b') && bit(bits, tv->eos) && !bit(bits, ab) && !bit(bits, tv->user));
    /* the mask is cached: the same pointer and count again */
    const uint32_t *again;
    int32_t n2;
    CHECK_STATUS(plumb_constraint_mask(c, s, &again, &n2), PLUMB_OK);
    CHECK(again == bits);
    CHECK_EQ_INT(n2, n);
    /* the dead state allows nothing */
    CHECK_STATUS(plumb_constraint_mask(c, GM_DEAD, &bits, &n), PLUMB_OK);
    CHECK_EQ_INT(n, 0);
    /* the user-defined token is text like any other */
    plumb_grammar_t *g2 = parse("root ::= \"<tool>\" \"x\"");
    plumb_constraint_t *c2 = NULL;
    if (g2 && !plumb_constraint_create(g2, tv->ti, 0, &c2) && !plumb_constraint_start(c2, &s0)) {
        CHECK_STATUS(plumb_constraint_mask(c2, s0, &bits, &n), PLUMB_OK);
        CHECK(bit(bits, tv->user) && bit(bits, '<'));
        CHECK_STATUS(plumb_constraint_accept(c2, s0, tv->user, &s), PLUMB_OK);
        CHECK_STATUS(plumb_constraint_accept_bytes(c2, s, "x", 1, &s), PLUMB_OK);
        CHECK(plumb_constraint_must_end(c2, s));
    }
    plumb_constraint_free(c2);
    plumb_grammar_free(g2);
done:
    plumb_constraint_free(c);
    plumb_constraint_free(NULL);
    plumb_grammar_free(g);
    free_vocab(tv);
    plumb_token_index_free(NULL);
}

/* Tiny memory caps: every call is OK or PLUMB_E_RANGE, and what succeeds is right. */
TEST(grammar_constraint_memory_cap) {
    tvocab *tv = make_vocab();
    if (!tv) return;
    plumb_grammar_t *g = parse(JSON_GBNF);
    plumb_grammar_t *boom = parse("root ::= s\ns ::= \"a\" s \"b\" | \"a\" s \"c\" | \"\"");
    static const char text[] = "{\"a\": [1, \"\xc3\xa9\"]}";
    static const size_t caps[] = {1, 100, 4096, 20000, 60000, 100000, 200000, 400000, 1 << 20};
    for (size_t k = 0; g && boom && k < sizeof caps / sizeof *caps; k++) {
        for (int which = 0; which < 2; which++) {
            plumb_constraint_t *c = NULL;
            plumb_status st = plumb_constraint_create(which ? boom : g, tv->ti, caps[k], &c);
            if (st) {
                CHECK(st == PLUMB_E_RANGE || st == PLUMB_E_NOMEM);
                continue;
            }
            uint32_t s;
            st = plumb_constraint_start(c, &s);
            if (st) CHECK_STATUS(st, PLUMB_E_RANGE);
            const char *t = which ? "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" : text;
            for (size_t i = 0; !st && i <= strlen(t); i++) {
                const uint32_t *bits;
                int32_t n;
                plumb_status ms = plumb_constraint_mask(c, s, &bits, &n);
                if (ms) CHECK_STATUS(ms, PLUMB_E_RANGE);
                else if (!which) check_mask(c, tv, g, s, t, i, "json under a memory cap");
                if (!t[i]) break;
                st = plumb_constraint_accept_bytes(c, s, t + i, 1, &s);
                if (st) CHECK_STATUS(st, PLUMB_E_RANGE);
            }
            plumb_constraint_free(c);
        }
    }
    plumb_grammar_free(g);
    plumb_grammar_free(boom);
    free_vocab(tv);
}

/* ---- masked sampling ------------------------------------------------------------------------ */

TEST(grammar_sample_masked) {
    enum { N = 100 };
    float logits[N];
    uint32_t allowed[(N + 31) / 32], none[(N + 31) / 32] = {0};
    for (int i = 0; i < N; i++) logits[i] = (float)(i % 17) * 0.25f;
    logits[42] = 50.0f; /* the top logit, disallowed */
    memset(allowed, 0, sizeof allowed);
    static const int ok[] = {3, 7, 64, 65, 98};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) allowed[ok[i] >> 5] |= 1u << (ok[i] & 31);
    for (int mode = 0; mode < 3; mode++) {
        plumb_sampler_params p = plumb_sampler_default_params();
        p.temperature = mode == 0 ? 0.0f : mode == 1 ? 1.0f : 5.0f;
        p.top_k = mode == 2 ? 0 : 40;
        p.min_p = mode == 2 ? 0.0f : 0.05f;
        plumb_sampler_t *s = NULL;
        CHECK_STATUS(plumb_sampler_create(&p, N, &s), PLUMB_OK);
        if (!s) continue;
        int seen[N] = {0};
        for (int k = 0; k < 2000; k++) {
            int32_t t = plumb_sampler_sample_masked(s, logits, allowed);
            if (t < 0 || t >= N || !bit(allowed, t)) {
                plumb_test_fail(__FILE__, __LINE__, "mode %d: sampled %d, not allowed", mode, t);
                break;
            }
            seen[t]++;
        }
        if (mode == 0) CHECK_EQ_INT(seen[65], 2000); /* 65 % 17 = 14: the best allowed */
        if (mode == 2) {
            int distinct = 0;
            for (int i = 0; i < N; i++) distinct += seen[i] > 0;
            CHECK(distinct >= 4);
        }
        CHECK_EQ_INT(plumb_sampler_sample_masked(s, logits, none), -1);
        CHECK(plumb_sampler_sample_masked(s, logits, NULL) >= 0);
        /* allowed tokens with -inf or NaN logits still win over disallowed ones */
        float bad[N];
        for (int i = 0; i < N; i++) bad[i] = 10.0f;
        uint32_t one[(N + 31) / 32] = {0};
        one[77 >> 5] |= 1u << (77 & 31);
        bad[77] = -INFINITY;
        CHECK_EQ_INT(plumb_sampler_sample_masked(s, bad, one), 77);
        bad[77] = NAN;
        CHECK_EQ_INT(plumb_sampler_sample_masked(s, bad, one), 77);
        one[3 >> 5] |= 1u << 3;
        bad[3] = -INFINITY;
        for (int k = 0; k < 50; k++) {
            int32_t t = plumb_sampler_sample_masked(s, bad, one);
            CHECK(t == 3 || t == 77);
        }
        bad[3] = INFINITY;
        CHECK_EQ_INT(plumb_sampler_sample_masked(s, bad, one), 3);
        plumb_sampler_free(s);
    }
}

/* A penalty cannot push an allowed token below the disallowed ones: an allowed token whose
 * logit is -inf, NaN or the most negative float, and which the history penalizes, is still the
 * one sampled (it used to become -inf like the masked tokens, and token 0 came out). */
TEST(grammar_sample_masked_penalized) {
    enum { N = 8 };
    const float lows[] = {-INFINITY, NAN, -3e38f, -FLT_MAX};
    for (int mode = 0; mode < 2; mode++)
        for (size_t k = 0; k < sizeof lows / sizeof *lows; k++) {
            plumb_sampler_params p = plumb_sampler_default_params();
            p.temperature = mode ? 0.8f : 0.0f;
            p.repeat_penalty = 1.5f;
            p.presence_penalty = 1.0f;
            plumb_sampler_t *s = NULL;
            CHECK_STATUS(plumb_sampler_create(&p, N, &s), PLUMB_OK);
            if (!s) continue;
            plumb_sampler_accept(s, 5);
            float logits[N];
            for (int i = 0; i < N; i++) logits[i] = 1.0f;
            logits[5] = lows[k];
            uint32_t only5 = 1u << 5;
            CHECK_EQ_INT(plumb_sampler_sample_masked(s, logits, &only5), 5);
            plumb_sampler_free(s);
        }
}

/* A parse state number the constraint never gave out is refused, not read out of bounds. */
TEST(grammar_constraint_bad_state) {
    tvocab *tv = make_vocab();
    if (!tv) return;
    plumb_grammar_t *g = parse("root ::= \"ab\"");
    plumb_constraint_t *c = NULL;
    uint32_t s0, s;
    if (g && !plumb_constraint_create(g, tv->ti, 0, &c) && !plumb_constraint_start(c, &s0)) {
        static const uint32_t bad[] = {1000, 123456789, UINT32_MAX};
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            const uint32_t *bits;
            int32_t n;
            CHECK_STATUS(plumb_constraint_mask(c, bad[i], &bits, &n), PLUMB_E_INVALID_ARG);
            CHECK_STATUS(plumb_constraint_accept(c, bad[i], 'a', &s), PLUMB_E_INVALID_ARG);
            CHECK_STATUS(plumb_constraint_accept(c, bad[i], tv->eos, &s), PLUMB_E_INVALID_ARG);
            CHECK_STATUS(plumb_constraint_accept_bytes(c, bad[i], "a", 1, &s), PLUMB_E_INVALID_ARG);
            CHECK(!plumb_constraint_can_end(c, bad[i]));
            CHECK(!plumb_constraint_must_end(c, bad[i]));
        }
        /* and the constraint still works */
        CHECK_STATUS(plumb_constraint_accept_bytes(c, s0, "ab", 2, &s), PLUMB_OK);
        CHECK(plumb_constraint_must_end(c, s));
    }
    plumb_constraint_free(c);
    plumb_grammar_free(g);
    free_vocab(tv);
}
