/* fuzz_schema.c — libFuzzer harness for plumb_json_schema_to_gbnf: schema bytes in; a
 * failure must leave no output and a message; a grammar that comes out must be NUL-terminated
 * and parse with plumb_grammar_parse, which may fail only at its caps (PLUMB_E_RANGE). A match
 * of a few fixed JSON texts then runs the grammar. */
#include "plumb.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const texts[] = {"{}", "[]", "\"a\"", "0", "{\"a\":[1,\"x\",null]}", "[true, {\"b\": -1.5e3}]"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *gbnf = NULL;
    size_t len = 0;
    plumb_status st = plumb_json_schema_to_gbnf((const char *)data, size, &gbnf, &len);
    if (st != PLUMB_OK) {
        if (gbnf || len || !plumb_last_error()[0]) __builtin_trap();
        return 0;
    }
    if (!gbnf || gbnf[len] != '\0' || strlen(gbnf) != len) __builtin_trap();
    plumb_grammar_limits lim = plumb_grammar_default_limits();
    lim.max_elements = 200000; /* keep each input fast */
    plumb_grammar_t *g = NULL;
    st = plumb_grammar_parse(gbnf, len, NULL, &lim, &g);
    if (st != PLUMB_OK && st != PLUMB_E_RANGE) __builtin_trap(); /* the converter wrote bad GBNF */
    if (g) {
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            bool viable, complete;
            (void)plumb_grammar_match(g, texts[i], strlen(texts[i]), &viable, &complete);
        }
        plumb_grammar_free(g);
    }
    free(gbnf);
    return 0;
}
