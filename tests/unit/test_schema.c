/* test_schema.c — plumb_json_schema_to_gbnf: grammars that parse and match what the schema
 * allows, the refusals (status and the keyword and pointer in the message), and the caps.
 * The oracle comparison over many schemas and instances is tests/e2e/test_json_schema.py. */
#include "plumb.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

/* Converts and parses schema; NULL (after a failed check) when either fails. */
static plumb_grammar_t *grammar_of(const char *schema) {
    char *text = NULL;
    size_t len = 0;
    plumb_status st = plumb_json_schema_to_gbnf(schema, strlen(schema), &text, &len);
    if (st != PLUMB_OK) {
        plumb_test_fail(__FILE__, __LINE__, "%s: %s", schema, plumb_last_error());
        return NULL;
    }
    CHECK(text[len] == '\0' && strlen(text) == len && !strncmp(text, "root ::= ", 9));
    plumb_grammar_t *g = NULL;
    st = plumb_grammar_parse(text, len, NULL, NULL, &g);
    if (st != PLUMB_OK) plumb_test_fail(__FILE__, __LINE__, "parse: %s\n%s", plumb_last_error(), text);
    free(text);
    return g;
}

static bool complete(const plumb_grammar_t *g, const char *text) {
    bool viable = false, done = false;
    CHECK_STATUS(plumb_grammar_match(g, text, strlen(text), &viable, &done), PLUMB_OK);
    return done;
}

TEST(schema_object_order_and_extras) {
    plumb_grammar_t *g = grammar_of("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},"
                                    "\"b\":{\"type\":\"string\"}},\"required\":[\"b\"]}");
    if (!g) return;
    CHECK(complete(g, "{\"b\":\"x\"}"));
    CHECK(complete(g, "{\"a\": 1, \"b\": \"x\", \"c\": [true]}"));
    CHECK(complete(g, "{\n  \"a\": -0,\n  \"b\": \"\"\n}"));
    CHECK(!complete(g, "{\"a\":1}"));         /* b is required */
    CHECK(!complete(g, "{\"b\":\"x\",\"a\":1}")); /* declared order */
    CHECK(!complete(g, "{\"b\":\"x\",\"\\u0061\":1}")); /* an extra key spelling a declared one */
    plumb_grammar_free(g);
}

TEST(schema_integer_ranges) {
    plumb_grammar_t *g = grammar_of("{\"type\":\"integer\",\"minimum\":-120,\"exclusiveMaximum\":1000}");
    if (!g) return;
    static const char *const yes[] = {"-120", "-99", "-0", "0", "7", "10", "999"};
    static const char *const no[] = {"-121", "1000", "01", "1.0", "1e2", "-", "12345"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) CHECK(complete(g, yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) CHECK(!complete(g, no[i]));
    plumb_grammar_free(g);
}

TEST(schema_pattern_and_format) {
    plumb_grammar_t *g = grammar_of("{\"type\":\"string\",\"pattern\":\"^\\\\d[a-c]+$\",\"maxLength\":4}");
    if (g) {
        CHECK(complete(g, "\"1abc\""));
        CHECK(complete(g, "\"\\u0031a\""));
        CHECK(!complete(g, "\"1abca\""));
        CHECK(!complete(g, "\"1\""));
        plumb_grammar_free(g);
    }
    g = grammar_of("{\"type\":\"string\",\"format\":\"date\"}");
    if (g) {
        CHECK(complete(g, "\"2024-02-29\""));
        CHECK(!complete(g, "\"2023-02-29\""));
        plumb_grammar_free(g);
    }
}

TEST(schema_recursive_ref) {
    plumb_grammar_t *g = grammar_of("{\"$defs\":{\"l\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/l\"}}},"
                                    "\"$ref\":\"#/$defs/l\"}");
    if (!g) return;
    CHECK(complete(g, "[[],[[]]]"));
    CHECK(!complete(g, "[1]"));
    plumb_grammar_free(g);
}

static void check_error(const char *schema, plumb_status want, const char *words) {
    char *text = (char *)1;
    size_t len = 1;
    plumb_status st = plumb_json_schema_to_gbnf(schema, strlen(schema), &text, &len);
    if (st != want || text || len || !strstr(plumb_last_error(), words))
        plumb_test_fail(__FILE__, __LINE__, "%s: got %s (%s), want %s with '%s'", schema, plumb_status_name(st),
                        plumb_last_error(), plumb_status_name(want), words);
}

TEST(schema_refusals) {
    check_error("{\"properties\":{\"a\":{\"patternProperties\":{}}}}", PLUMB_E_UNSUPPORTED,
                "unsupported keyword 'patternProperties' at /properties/a");
    check_error("{\"type\":\"string\",\"format\":\"hostname\"}", PLUMB_E_UNSUPPORTED, "hostname");
    check_error("{\"type\":\"number\",\"maximum\":3}", PLUMB_E_UNSUPPORTED, "maximum");
    check_error("{\"$ref\":\"other.json#/a\"}", PLUMB_E_UNSUPPORTED, "remote $ref");
    check_error("{\"type\":\"strng\"}", PLUMB_E_INVALID_ARG, "'type' at /type");
    check_error("{\"a\":1,\"a\":2}", PLUMB_E_INVALID_ARG, "twice");
    check_error("false", PLUMB_E_INVALID_ARG, "no JSON value");
    check_error("{\"type\":\"string\",\"pattern\":\"(a\"}", PLUMB_E_INVALID_ARG, "unclosed");
    check_error("{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"}]}},\"$ref\":\"#/$defs/a\"}",
                PLUMB_E_INVALID_ARG, "refers to itself");
    CHECK_STATUS(plumb_json_schema_to_gbnf(NULL, 0, NULL, NULL), PLUMB_E_INVALID_ARG);
}

TEST(schema_caps) {
    /* 300 nested schemas: refused at the depth cap, without recursing that deep */
    size_t n = 300, len = 0;
    char *s = malloc(n * 40 + 64);
    if (!s) return;
    for (size_t i = 0; i < n; i++) len += (size_t)sprintf(s + len, "{\"properties\":{\"a\":");
    len += (size_t)sprintf(s + len, "{}");
    for (size_t i = 0; i < n; i++) len += (size_t)sprintf(s + len, "}}");
    char *text = NULL;
    size_t out = 0;
    CHECK_STATUS(plumb_json_schema_to_gbnf(s, len, &text, &out), PLUMB_E_RANGE);
    free(s);
    check_error("{\"type\":\"array\",\"minItems\":20000}", PLUMB_E_RANGE, "10000");
    /* two repeated pieces: the length cannot be folded into the pattern */
    check_error("{\"type\":\"string\",\"pattern\":\"^[a-c]+\\\\d?$\",\"maxLength\":4}", PLUMB_E_UNSUPPORTED,
                "maxLength");
}
