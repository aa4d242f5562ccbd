/* cmd_tokenize.c — `plumb tokenize -m MODEL [--ids] [--no-bos] [--no-special] TEXT`: the
 * model's tokens for TEXT (`-` reads standard input), one `id<TAB>'piece'` line per token,
 * or with --ids only the list `[2, 9259, ...]`. --no-bos leaves out BOS/EOS; --no-special
 * reads "<start_of_turn>" and the like as plain text. */
#include "cli.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: plumb tokenize -m MODEL.gguf [--ids] [--no-bos] [--no-special] TEXT|-\n");
}

/* Length of the valid UTF-8 sequence at s (2-4), or 0. */
static size_t utf8_multi(const unsigned char *s, size_t left) {
    unsigned c = s[0], cp, min;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) n = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, min = 0x10000;
    else return 0;
    if (left < n) return 0;
    cp = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    return (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ? 0 : n;
}

/* 'piece' with C-style escapes (as cli_print_quoted, in single quotes). */
static void print_piece(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    putchar('\'');
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        size_t n = c >= 0x80 ? utf8_multi(p + i, len - i) : 1;
        if (n > 1) {
            fwrite(p + i, 1, n, stdout);
            i += n;
            continue;
        }
        if (n == 0) printf("\\x%02x", c);
        else if (c == '\'') fputs("\\'", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else putchar((int)c);
        i++;
    }
    putchar('\'');
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text_arg = NULL;
    bool ids_only = false, add_special = true, parse_special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_is(a, "--model", "-m")) {
            if (!(model = options_value("tokenize", argc, argv, &i))) return 2;
        } else if (strcmp(a, "--ids") == 0) ids_only = true;
        else if (strcmp(a, "--no-bos") == 0) add_special = false;
        else if (strcmp(a, "--no-special") == 0) parse_special = false;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "plumb tokenize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!text_arg) text_arg = a;
        else {
            fprintf(stderr, "plumb tokenize: more than one TEXT (quote it)\n");
            usage(stderr);
            return 2;
        }
    }
    if (!model || !text_arg) {
        usage(stderr);
        return 2;
    }
    cli_model_src src;
    if (cli_model_source("tokenize", model, &src)) return 1;
    model = src.path;

    char *owned = NULL;
    const char *text = text_arg;
    size_t len = strlen(text_arg);
    if (strcmp(text_arg, "-") == 0) {
        owned = cli_read_all(stdin, SIZE_MAX, &len);
        if (!owned) {
            cli_error("tokenize", PLUMB_E_IO, "cannot read standard input");
            return 1;
        }
        text = owned;
    }

    int rc = 1;
    plumb_gguf_t *g = NULL;
    plumb_vocab_t *v = NULL;
    int32_t *ids = NULL;
    plumb_status st = plumb_gguf_open(model, &g);
    if (!st) st = plumb_vocab_create(g, &v);
    plumb_gguf_free(g);
    if (st) {
        cli_error("tokenize", st, NULL);
        goto done;
    }
    size_t n = 0, cap = len + 16;
    ids = malloc(cap * sizeof *ids);
    if (!ids) {
        cli_error("tokenize", PLUMB_E_NOMEM, "out of memory");
        goto done;
    }
    st = plumb_tokenize(v, text, len, add_special, parse_special, ids, cap, &n);
    if (st == PLUMB_E_RANGE && n > cap) {
        int32_t *more = realloc(ids, n * sizeof *ids);
        if (!more) {
            cli_error("tokenize", PLUMB_E_NOMEM, "out of memory");
            goto done;
        }
        ids = more;
        cap = n;
        st = plumb_tokenize(v, text, len, add_special, parse_special, ids, cap, &n);
    }
    if (st) {
        cli_error("tokenize", st, NULL);
        goto done;
    }
    if (ids_only) {
        putchar('[');
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? ", " : "", (int)ids[i]);
        puts("]");
    } else {
        char small[256];
        for (size_t i = 0; i < n; i++) {
            int k = plumb_token_to_piece(v, ids[i], small, sizeof small, true);
            char *buf = small;
            if (k < 0) {
                buf = malloc((size_t)-k);
                if (!buf) {
                    cli_error("tokenize", PLUMB_E_NOMEM, "out of memory");
                    goto done;
                }
                k = plumb_token_to_piece(v, ids[i], buf, (size_t)-k, true);
            }
            printf("%d\t", (int)ids[i]);
            print_piece(buf, k > 0 ? (size_t)k : 0);
            putchar('\n');
            if (buf != small) free(buf);
        }
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(ids);
    plumb_vocab_free(v);
    free(owned);
    return rc;
}
