/* cmd_embed.c — `plumb embed -m MODEL TEXT...`: one embedding per text (or per line of stdin
 * with -), pooled from the model's final hidden states (--pooling; default the model's, else
 * mean) and L2-normalized, as a JSON line {"index", "tokens", "embedding"} each. */
#include "cli.h"
#include "options.h"
#include "server/gen.h"

#include <stdlib.h>
#include <string.h>

static const char embed_usage[] =
    "usage: plumb embed -m MODEL [options] TEXT... | -\n"
    "  -m, --model FILE          GGUF model (required)\n"
    "      --pooling P           mean, last or cls (default: the model's, else mean)\n"
    "  -t, --threads N           compute threads (default: the CPUs this process may use)\n"
    "  -c, --ctx-size N          the longest text in tokens (default: min(model, 4096))\n";
static const char embed_usage_end[] = /* after the --device and --offload lines */
    "  -                         read one text per line from stdin\n"
    "Prints one JSON line per text: {\"index\": i, \"tokens\": n, \"embedding\": [...]}.\n";

/* The pooled, normalized embedding of text into out[0..n_embd). */
static plumb_status embed_one(plumb_context_t *ctx, const plumb_vocab_t *v, const char *text, int pooling, int32_t d,
                              float *out, size_t *n_tok) {
    int32_t *ids;
    size_t n;
    plumb_status st = plumb_gen_tokenize_marked(v, text, strlen(text), true, false, NULL, 0, &ids, &n);
    if (st) return st;
    *n_tok = n;
    const int32_t nb = plumb_context_n_batch(ctx);
    bool *flags = malloc((size_t)nb * sizeof *flags);
    double *sum = calloc((size_t)d, sizeof *sum);
    if (!flags || !sum) st = PLUMB_E_NOMEM;
    else if (n == 0 || n > (size_t)plumb_context_n_ctx(ctx)) st = PLUMB_E_RANGE;
    if (!st) st = plumb_seq_truncate(ctx, 0, 0);
    for (size_t i = 0; i < n && !st; i += (size_t)nb) {
        const int32_t m = (int32_t)(n - i < (size_t)nb ? n - i : (size_t)nb);
        for (int32_t k = 0; k < m; k++) {
            const size_t at = i + (size_t)k;
            flags[k] = pooling == PLUMB_POOLING_MEAN ? true : pooling == PLUMB_POOLING_CLS ? at == 0 : at == n - 1;
        }
        plumb_batch b = {.n_tokens = m, .tokens = ids + i, .logits = flags};
        if ((st = plumb_decode(ctx, &b))) break;
        for (int32_t k = 0; k < plumb_n_logits(ctx); k++) {
            const float *h = plumb_get_embeddings(ctx, k);
            for (int32_t x = 0; x < d; x++) sum[x] += h[x];
        }
    }
    if (!st) plumb_gen_normalize(sum, d, out);
    free(ids), free(flags), free(sum);
    return st;
}

int cmd_embed(int argc, char **argv) {
    const char *model = NULL, *pool = NULL;
    plumb_context_params cp = plumb_context_default_params();
    cp.embeddings = true;
    plumb_model_params mp = plumb_model_default_params();
    const char **texts = calloc((size_t)argc + 1, sizeof *texts);
    int n_texts = 0;
    bool from_stdin = false;
    if (!texts) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(embed_usage, stdout);
            cli_device_print_usage(stdout, 28);
            fputs(embed_usage_end, stdout);
            free(texts);
            return 0;
        }
        if (options_is(a, "--model", "-m")) {
            if (!(model = options_value("embed", argc, argv, &i))) goto usage;
        } else if (options_is(a, "--pooling", NULL)) {
            if (!(pool = options_value("embed", argc, argv, &i))) goto usage;
        } else if (options_is(a, "--threads", "-t") || options_is(a, "--ctx-size", "-c")) {
            const bool threads = options_is(a, "--threads", "-t");
            if (!(v = options_value("embed", argc, argv, &i)) || !options_parse_long(v, 1, 1 << 24, &n)) {
                fprintf(stderr, "plumb embed: bad value for %s\n", a);
                goto usage;
            }
            if (threads) cp.n_threads = (int32_t)n;
            else cp.n_ctx = (int32_t)n;
        } else if (options_is(a, "--device", NULL)) {
            if (!(v = options_value("embed", argc, argv, &i))) goto usage;
            if (!*v) {
                fprintf(stderr, "plumb embed: bad value '' for --device (" CLI_DEVICE_VALUES ")\n");
                goto usage;
            }
            mp.device = v;
        } else if (options_is(a, "--remote-key-file", NULL)) {
            if (!(v = options_value("embed", argc, argv, &i))) goto usage;
            mp.remote_key_file = v;
        } else if (options_is(a, "--offload", "-ngl") || options_is(a, "--n-gpu-layers", NULL)) {
            if (!(v = options_value("embed", argc, argv, &i))) goto usage;
            if (!cli_parse_offload(v, &mp.n_offload)) {
                char name[32];
                options_name(a, name, sizeof name);
                fprintf(stderr, "plumb embed: bad value '%s' for %s (" CLI_OFFLOAD_VALUES ")\n", v, name);
                goto usage;
            }
        } else if (!strcmp(a, "-")) {
            from_stdin = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "plumb embed: unknown option '%s' (see plumb embed --help)\n", a);
            goto usage;
        } else
            texts[n_texts++] = a;
    }
    int pooling = -1;
    if (pool) {
        pooling = !strcmp(pool, "mean") ? PLUMB_POOLING_MEAN : !strcmp(pool, "cls") ? PLUMB_POOLING_CLS
                  : !strcmp(pool, "last")                      ? PLUMB_POOLING_LAST : -2;
        if (pooling == -2) {
            fprintf(stderr, "plumb embed: --pooling takes mean, last or cls\n");
            goto usage;
        }
    }
    if (!model || (!n_texts && !from_stdin)) {
        fprintf(stderr, "plumb embed: usage: plumb embed -m MODEL TEXT... (see --help)\n");
        goto usage;
    }
    cli_model_src src;
    if (cli_model_source("embed", model, &src)) {
        free(texts);
        return 1;
    }
    plumb_model_t *m = NULL;
    plumb_context_t *ctx = NULL;
    cli_device_fallback("embed", &mp);
    plumb_status st = plumb_model_load_params(src.path, &mp, &m);
    if (!st) st = plumb_context_create(m, &cp, &ctx);
    if (st) {
        cli_error("embed", st, NULL);
        plumb_context_free(ctx);
        plumb_model_free(m);
        free(texts);
        return 1;
    }
    plumb_model_info info;
    plumb_model_get_info(m, &info);
    if (pooling < 0) pooling = info.pooling > 0 ? info.pooling : PLUMB_POOLING_MEAN;
    float *vec = malloc((size_t)info.n_embd * sizeof *vec);
    char *line = NULL;
    size_t cap = 0;
    int rc = vec ? 0 : 1;
    for (int k = 0; rc == 0; k++) {
        const char *text = NULL;
        if (k < n_texts) text = texts[k];
        else if (from_stdin) {
            ssize_t got = getline(&line, &cap, stdin);
            if (got < 0) break;
            if (got && line[got - 1] == '\n') line[--got] = '\0';
            text = line;
        } else
            break;
        size_t n_tok = 0;
        if ((st = embed_one(ctx, plumb_model_vocab(m), text, pooling, info.n_embd, vec, &n_tok))) {
            cli_error("embed", st, st == PLUMB_E_RANGE ? "a text is empty or longer than the context (--ctx-size)" : NULL);
            rc = 1;
            break;
        }
        printf("{\"index\": %d, \"tokens\": %zu, \"embedding\": [", k, n_tok);
        for (int32_t x = 0; x < info.n_embd; x++) printf(x ? ", %.9g" : "%.9g", vec[x]);
        printf("]}\n");
    }
    free(line), free(vec), free(texts);
    plumb_context_free(ctx);
    plumb_model_free(m);
    return rc;
usage:
    free(texts);
    return 2;
}
