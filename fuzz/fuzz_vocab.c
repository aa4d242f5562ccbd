/* fuzz_vocab.c — libFuzzer harness for the vocabulary loader and the tokenizers: the input
 * is a GGUF file; when it parses and holds a vocabulary, fixed texts and the input's own
 * last bytes are tokenized (with and without special-token parsing), and every id is turned
 * back into text with the streaming detokenizer. */
#include "plumb.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run_text(const plumb_vocab_t *v, const char *text, size_t len) {
    int32_t ids[512];
    size_t n = 0;
    for (int mode = 0; mode < 4; mode++) {
        plumb_status st = plumb_tokenize(v, text, len, mode & 1, mode & 2, ids, sizeof ids / sizeof ids[0], &n);
        if (st != PLUMB_OK) continue;
        plumb_detok d;
        memset(&d, 0, sizeof d);
        char out[4096];
        for (size_t i = 0; i < n; i++) {
            char piece[256];
            (void)plumb_token_to_piece(v, ids[i], piece, sizeof piece, mode & 2);
            (void)plumb_detok_push(v, &d, ids[i], out, sizeof out);
            (void)plumb_vocab_is_eog(v, ids[i]);
        }
        (void)plumb_detok_flush(&d, out, sizeof out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    plumb_gguf_t *g;
    if (plumb_gguf_open_memory(data, size, "fuzz", &g) != PLUMB_OK) return 0;
    plumb_vocab_t *v;
    if (plumb_vocab_create(g, &v) == PLUMB_OK) {
        static const char *texts[] = {"Hello world", " <bos>x<eos> ", "\xe2\x96\x81\xf0\x9f\x98\x80 \xff\xfe",
                                      "a  b\n\n\tc 123 4567", ""};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) run_text(v, texts[i], strlen(texts[i]));
        size_t tail = size < 64 ? size : 64;
        run_text(v, (const char *)data + size - tail, tail);
        plumb_vocab_free(v);
    }
    plumb_gguf_free(g);
    return 0;
}
