/* fuzz_grammar.c — libFuzzer harness for the GBNF parser and matcher (src/grammar/). The
 * input is grammar text, optionally followed by a NUL byte and a sample text; without a NUL
 * the sample is a fixed JSON-ish text, so that the fuzzer can explore grammars alone. Caps are
 * tightened so each input runs in milliseconds. When the grammar parses, the sample is
 * matched two ways and the answers must agree: plumb_grammar_match (samples of at most 8 bytes:
 * its table cap is a fixed 256 MiB, and a grammar whose stacks multiply with every byte takes
 * seconds to fill that) and byte by byte through the internal matcher under a small memory
 * cap, checking on the way that a dead state stays dead, that a complete state is viable, that
 * steps are memoized (the same step twice gives the same state) and that the matcher's tables
 * stay within their cap. A failed parse must leave *out NULL and an error message naming
 * "grammar". */
#include "grammar/grammar.h"
#include "plumb.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char default_sample[] = "{\"a\": [1, -2.5e+3, true, null, \"x\\u00e9\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\"]}\n";

#define MATCH_MEMORY (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    const size_t text_len = nul ? (size_t)(nul - data) : size;
    const char *sample = nul ? (const char *)nul + 1 : default_sample;
    const size_t sample_len = nul ? size - text_len - 1 : sizeof default_sample - 1;

    plumb_grammar_limits lim = {.max_text = 64 << 10, .max_elements = 20000, .max_repeat = 1000, .max_depth = 32};
    plumb_grammar_t *g = (plumb_grammar_t *)(uintptr_t)1;
    plumb_status st = plumb_grammar_parse((const char *)data, text_len, NULL, &lim, &g);
    if (st != PLUMB_OK) {
        if (g != NULL) __builtin_trap();
        const char *e = plumb_last_error();
        if (!e || !strstr(e, "grammar")) __builtin_trap();
        if (st != PLUMB_E_INVALID_ARG && st != PLUMB_E_RANGE && st != PLUMB_E_UNSUPPORTED && st != PLUMB_E_NOMEM)
            __builtin_trap();
        return 0;
    }
    if (!g) __builtin_trap();

    /* byte by byte under a small cap */
    gm *m = plumb__gm_create(g, MATCH_MEMORY);
    bool ok = false, viable = false, complete = false;
    if (m) {
        uint32_t s;
        st = plumb__gm_start(m, &s);
        size_t i = 0;
        for (; i < sample_len && !st; i++) {
            uint32_t next, again;
            st = plumb__gm_step(m, s, (uint8_t)sample[i], &next);
            if (st) break;
            if (plumb__gm_step(m, s, (uint8_t)sample[i], &again) != PLUMB_OK || again != next) __builtin_trap();
            if (s == GM_DEAD && next != GM_DEAD) __builtin_trap();
            if (next != GM_DEAD && plumb__gm_only_end(m, next) && !plumb__gm_can_end(m, next)) __builtin_trap();
            s = next;
        }
        if (plumb__gm_memory(m) > MATCH_MEMORY) __builtin_trap();
        if (!st) {
            ok = true;
            viable = s != GM_DEAD;
            complete = plumb__gm_can_end(m, s);
            if (complete && !viable) __builtin_trap();
        } else if (st != PLUMB_E_RANGE && st != PLUMB_E_NOMEM)
            __builtin_trap();
        plumb__gm_free(m);
    }
    /* the public entry agrees */
    if (sample_len <= 8) {
        bool v2 = false, c2 = false;
        st = plumb_grammar_match(g, sample, sample_len, &v2, &c2);
        if (st == PLUMB_OK && ok && (v2 != viable || c2 != complete)) __builtin_trap();
        if (st != PLUMB_OK && st != PLUMB_E_RANGE && st != PLUMB_E_NOMEM) __builtin_trap();
        /* a viable text's prefixes are viable */
        if (st == PLUMB_OK && v2 && sample_len > 0) {
            bool v3 = false;
            if (plumb_grammar_match(g, sample, sample_len / 2, &v3, NULL) == PLUMB_OK && !v3) __builtin_trap();
        }
    }
    plumb_grammar_free(g);
    return 0;
}
