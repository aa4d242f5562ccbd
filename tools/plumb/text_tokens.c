/* text_tokens.c — the evaluation commands' text (perplexity, imatrix): a file's tokens as
 * llama.cpp's tools take a -f file (one final newline dropped, BOS added when the model adds
 * one, special tokens as text), and a monotonic clock. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TEXT ((size_t)1 << 30)

int cli_text_tokens(const char *cmd, const char *path, const plumb_vocab_t *v, int32_t **ids, size_t *n) {
    FILE *f = fopen(path, "rb");
    size_t len = 0;
    char *text = f ? cli_read_all(f, MAX_TEXT, &len) : NULL;
    const int err = errno;
    if (f) fclose(f);
    *ids = NULL;
    if (!text) {
        fprintf(stderr, "plumb %s: cannot read %s: %s\n", cmd, path, strerror(err));
        return 1;
    }
    if (len && text[len - 1] == '\n') len--;
    const size_t cap = len + 16;
    *ids = malloc(cap * sizeof **ids);
    plumb_status st = *ids ? plumb_tokenize(v, text, len, true, false, *ids, cap, n) : PLUMB_E_NOMEM;
    free(text);
    if (st) {
        cli_error(cmd, st, NULL);
        return 1;
    }
    return 0;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
