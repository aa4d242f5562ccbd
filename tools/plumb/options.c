/* options.c — parsing of the options shared by `plumb run` and `plumb chat`, and of option
 * values for every subcommand. */
#include "options.h"

#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gen_options_print_usage(FILE *f, int32_t n_predict) {
    /* the defaults are printed from what gen_options_init sets, so help and code agree */
    gen_options d;
    gen_options_init(&d, n_predict);
    const plumb_sampler_params *sp = &d.sampling;
    char n_text[48];
    if (d.n_predict < 0) snprintf(n_text, sizeof n_text, "default %d: until end of generation", (int)d.n_predict);
    else snprintf(n_text, sizeof n_text, "default %d; -1: until end of generation", (int)d.n_predict);
    fprintf(f,
            "  -m, --model FILE          GGUF model (required)\n"
            "  -n, --n-predict N         tokens to generate (%s)\n"
            "  -t, --threads N           compute threads (default: the CPUs this process may use, see plumb info)\n"
            "  -c, --ctx-size N          context positions (default: min(model, 4096))\n"
            "  -b, --batch-size N        prompt tokens per forward pass (default %d)\n"
            "      --temp T              temperature (default %g; 0 = greedy)\n"
            "      --top-k N             (default %d; 0 = off)\n"
            "      --top-p P             (default %g; 1 = off)\n"
            "      --min-p P             (default %g; 0 = off)\n"
            "      --repeat-penalty F    (default %g = off)\n"
            "      --repeat-last-n N     penalty window (default %d; -1: all)\n"
            "      --presence-penalty F  (default %g)\n"
            "      --frequency-penalty F (default %g)\n"
            "  -s, --seed N              sampling seed (default %llu; same seed, same output)\n"
            "      --stop TEXT           stop when TEXT appears (repeatable)\n"
            "      --chat-format NAME    the built-in gemma, llama3 or chatml format (default: the model's template)\n"
            "      --chat-template-file F  a Jinja chat template to use instead of the model's\n"
            "      --mmap                keep the weights in a mapping of the file (default: read into memory)\n"
            "      --no-repack           no interleaved weight rows for the CPU's GEMM (same results; no kept copy)\n"
            "      --fast-gemm           prompts with each block's products summed as one integer: faster, not llama.cpp's exact logits\n"
            "      --grammar-file F      the output must match the GBNF grammar in F\n"
            "      --json-schema S       the output must be JSON valid against schema S (JSON text, or a file)\n",
            n_text, (int)d.ctx.n_batch, (double)sp->temperature, (int)sp->top_k, (double)sp->top_p, (double)sp->min_p,
            (double)sp->repeat_penalty, (int)sp->repeat_last_n, (double)sp->presence_penalty,
            (double)sp->frequency_penalty, (unsigned long long)sp->seed);
    cli_device_print_usage(f, 28);
    fprintf(f, "Valued long options also take the form --name=VALUE.\n");
}

void gen_options_init(gen_options *o, int32_t n_predict) {
    memset(o, 0, sizeof *o);
    o->ctx = plumb_context_default_params();
    o->sampling = plumb_sampler_default_params();
    o->n_predict = n_predict;
    o->model_params = plumb_model_default_params();
}

bool options_is(const char *arg, const char *name, const char *short_name) {
    if (short_name && strcmp(arg, short_name) == 0) return true;
    if (!name) return false;
    const size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || (arg[n] == '=' && name[0] == '-' && name[1] == '-'));
}

void options_name(const char *arg, char *buf, size_t cap) {
    const char *eq = arg[0] == '-' && arg[1] == '-' ? strchr(arg, '=') : NULL;
    snprintf(buf, cap, "%.*s", (int)(eq ? (size_t)(eq - arg) : strlen(arg)), arg);
}

const char *options_value(const char *cmd, int argc, char **argv, int *i) {
    const char *arg = argv[*i];
    if (arg[0] == '-' && arg[1] == '-') {
        const char *eq = strchr(arg, '=');
        if (eq) return eq + 1;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "plumb %s: %s needs a value\n", cmd, arg);
        return NULL;
    }
    return argv[++*i];
}

/* strtol and friends skip leading white space but stop at trailing white space (*end is then
 * not the end), so " 5" would pass and "5 " would not: numbers are taken without either. */
static bool no_leading_space(const char *s) { return *s && !isspace((unsigned char)*s); }

bool options_parse_long(const char *s, long lo, long hi, long *out) {
    if (!no_leading_space(s)) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out) {
    if (!no_leading_space(s)) return false;
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, unsigned long long *out) {
    if (!no_leading_space(s)) return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

int gen_options_parse(gen_options *o, const char *cmd, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (strcmp(a, "--mmap") == 0) {
        o->model_params.use_mmap = true;
        return 1;
    }
    if (strcmp(a, "--no-repack") == 0) {
        o->ctx.no_repack = true;
        return 1;
    }
    if (strcmp(a, "--fast-gemm") == 0) {
        o->ctx.fast_gemm = true;
        return 1;
    }
    static const struct {
        const char *l, *s;
        const char *what; /* the accepted values, for the error line (NULL: none given) */
    } valued[] = {{"--model", "-m", NULL},          {"--n-predict", "-n", NULL},         {"--threads", "-t", NULL},
                  {"--ctx-size", "-c", NULL},       {"--batch-size", "-b", NULL},        {"--temp", NULL, NULL},
                  {"--top-k", NULL, NULL},          {"--top-p", NULL, NULL},             {"--min-p", NULL, NULL},
                  {"--repeat-penalty", NULL, NULL}, {"--repeat-last-n", NULL, NULL},     {"--presence-penalty", NULL, NULL},
                  {"--frequency-penalty", NULL, NULL}, {"--seed", "-s", NULL},           {"--stop", NULL, NULL},
                  {"--chat-format", NULL, "gemma, llama3 or chatml"},                    {"--system", NULL, NULL},
                  {"--chat-template-file", NULL, NULL}, {"--grammar-file", NULL, NULL},
                  {"--json-schema", NULL, NULL},        {"--device", NULL, CLI_DEVICE_VALUES},
                  {"--offload", "-ngl", CLI_OFFLOAD_VALUES},
                  {"--n-gpu-layers", NULL, CLI_OFFLOAD_VALUES}, {"--remote-key-file", NULL, NULL}};
    int k = -1;
    for (size_t j = 0; j < sizeof valued / sizeof valued[0]; j++)
        if (options_is(a, valued[j].l, valued[j].s)) k = (int)j;
    if (k < 0) return 0;
    const char *v = options_value(cmd, argc, argv, i);
    if (!v) return -1;
    long n;
    float f;
    unsigned long long u;
    bool ok = true;
    switch (k) {
    case 0: o->model = v; break;
    case 1: ok = options_parse_long(v, -1, 1 << 24, &n) && (o->n_predict = (int32_t)n, true); break;
    case 2: ok = options_parse_long(v, 1, 512, &n) && (o->ctx.n_threads = (int32_t)n, true); break;
    case 3: ok = options_parse_long(v, 0, 1 << 24, &n) && (o->ctx.n_ctx = (int32_t)n, true); break;
    case 4: ok = options_parse_long(v, 1, 65536, &n) && (o->ctx.n_batch = (int32_t)n, true); break;
    case 5: ok = parse_float(v, &f) && f >= 0 && (o->sampling.temperature = f, true); break;
    case 6: ok = options_parse_long(v, 0, 1 << 30, &n) && (o->sampling.top_k = (int32_t)n, true); break;
    case 7: ok = parse_float(v, &f) && f > 0 && f <= 1 && (o->sampling.top_p = f, true); break;
    case 8: ok = parse_float(v, &f) && f >= 0 && f <= 1 && (o->sampling.min_p = f, true); break;
    case 9: ok = parse_float(v, &f) && f > 0 && (o->sampling.repeat_penalty = f, true); break;
    case 10: ok = options_parse_long(v, -1, 1 << 24, &n) && (o->sampling.repeat_last_n = (int32_t)n, true); break;
    case 11: ok = parse_float(v, &f) && (o->sampling.presence_penalty = f, true); break;
    case 12: ok = parse_float(v, &f) && (o->sampling.frequency_penalty = f, true); break;
    case 13: ok = parse_u64(v, &u) && (o->sampling.seed = u, true); break;
    case 14:
        if (o->n_stops >= MAX_STOPS || !*v) ok = false;
        else o->stops[o->n_stops++] = (char *)v;
        break;
    /* checked here, before any model is loaded, although only chat uses it */
    case 15: ok = plumb_chat_format_from_name(v) != PLUMB_CHAT_UNKNOWN && (o->chat_format = v, true); break;
    case 16: o->system = v; break;
    case 17: o->chat_template_file = v; break;
    case 18: ok = !o->json_schema && (o->grammar_file = v, true); break;
    case 19: ok = !o->grammar_file && (o->json_schema = v, true); break;
    case 20: ok = *v && (o->model_params.device = v, true); break;
    case 21:
    case 22: ok = cli_parse_offload(v, &o->model_params.n_offload); break;
    case 23: ok = *v && (o->model_params.remote_key_file = v, true); break;
    }
    if (!ok) {
        char name[64];
        options_name(a, name, sizeof name);
        if (valued[k].what) fprintf(stderr, "plumb %s: bad value '%s' for %s (%s)\n", cmd, v, name, valued[k].what);
        else fprintf(stderr, "plumb %s: bad value '%s' for %s\n", cmd, v, name);
        return -1;
    }
    return 1;
}

void eval_options_init(eval_options *o) {
    *o = (eval_options){.n_ctx = 512, .n_batch = 2048, .n_chunks = -1, .mp = plumb_model_default_params()};
}

int eval_options_parse(eval_options *o, const char *cmd, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--no-repack") || !strcmp(a, "--fast-gemm")) {
        if (!strcmp(a, "--no-repack")) o->no_repack = true;
        else o->fast_gemm = true;
        return 1;
    }
    if (options_is(a, "--model", "-m") || options_is(a, "--file", "-f") || options_is(a, "--device", NULL) ||
        options_is(a, "--remote-key-file", NULL)) {
        if (!(v = options_value(cmd, argc, argv, i))) return -1;
        if (options_is(a, "--model", "-m")) o->model = v;
        else if (options_is(a, "--file", "-f")) o->text = v;
        else if (options_is(a, "--device", NULL)) o->mp.device = v;
        else o->mp.remote_key_file = v;
        return 1;
    }
    const bool offload = options_is(a, "--offload", "-ngl") || options_is(a, "--n-gpu-layers", NULL);
    if (!offload && !options_is(a, "--ctx-size", "-c") && !options_is(a, "--batch-size", "-b") &&
        !options_is(a, "--chunks", NULL) && !options_is(a, "--threads", "-t"))
        return 0;
    if (!(v = options_value(cmd, argc, argv, i))) return -1;
    long n = 0;
    const bool ok = offload ? cli_parse_offload(v, &o->mp.n_offload)
                            : options_parse_long(v, options_is(a, "--ctx-size", "-c") ? 16 : 1, EVAL_MAX_CTX, &n);
    if (!ok) {
        char name[32];
        options_name(a, name, sizeof name);
        fprintf(stderr, "plumb %s: bad value '%s' for %s\n", cmd, v, name);
        return -1;
    }
    if (options_is(a, "--ctx-size", "-c")) o->n_ctx = (int32_t)n;
    else if (options_is(a, "--batch-size", "-b")) o->n_batch = (int32_t)n;
    else if (options_is(a, "--chunks", NULL)) o->n_chunks = (int32_t)n;
    else if (!offload) o->threads = (int32_t)n;
    return 1;
}

/* The whole file at path (malloc'd, NUL-terminated), or NULL after printing why. */
static char *read_all(const char *cmd, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (f) {
        for (;;) {
            if (n + 4096 + 1 > cap) {
                char *g = realloc(buf, cap = (n + 4096 + 1) * 2);
                if (!g) break;
                buf = g;
            }
            size_t got = fread(buf + n, 1, 4096, f);
            n += got;
            if (got < 4096) break;
        }
        bool bad = ferror(f) || !buf;
        fclose(f);
        if (!bad) {
            buf[n] = '\0';
            *len = n;
            return buf;
        }
    }
    fprintf(stderr, "plumb %s: cannot read '%s'\n", cmd, path);
    free(buf);
    return NULL;
}

bool gen_options_grammar(const gen_options *o, const char *cmd, char **gbnf) {
    *gbnf = NULL;
    size_t len = 0;
    if (o->grammar_file) {
        if (!(*gbnf = read_all(cmd, o->grammar_file, &len))) return false;
    } else if (o->json_schema) {
        const char *s = o->json_schema;
        while (isspace((unsigned char)*s)) s++;
        char *file = NULL;
        if (*s != '{' && *s != '[' && strcmp(s, "true") && !(file = read_all(cmd, o->json_schema, &len))) return false;
        const char *text = file ? file : o->json_schema;
        plumb_status st = plumb_json_schema_to_gbnf(text, strlen(text), gbnf, &len);
        free(file);
        if (st) {
            fprintf(stderr, "plumb %s: --json-schema: %s\n", cmd, plumb_last_error());
            return false;
        }
    } else
        return true;
    plumb_grammar_t *g;
    if (plumb_grammar_parse(*gbnf, len, NULL, NULL, &g)) {
        fprintf(stderr, "plumb %s: %s%s%s\n", cmd, o->grammar_file ? o->grammar_file : "", o->grammar_file ? ": " : "",
                plumb_last_error());
        free(*gbnf);
        *gbnf = NULL;
        return false;
    }
    plumb_grammar_free(g);
    return true;
}
