/* cmd_quantize.c — `plumb quantize [options] IN.gguf OUT.gguf TYPE [THREADS]`: writes IN's
 * weights converted to TYPE (a file type such as Q4_K_M, or F16) as llama-quantize does,
 * with a line per tensor and a summary. The work is plumb_quantize_model's; this file reads
 * the command line and prints. */
#include "cli.h"
#include "options.h"

#include <ctype.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb quantize [options] IN.gguf OUT.gguf TYPE [THREADS]\n"
            "  TYPE: %s\n"
            "  --allow-requantize          allow converting tensors that are already quantized\n"
            "  --imatrix FILE              importance matrix (llama-imatrix's GGUF or .dat)\n"
            "  --output-tensor-type T      type of output.weight (a tensor type: q8_0, q6_K, f16...)\n"
            "  --token-embedding-type T    type of token_embd.weight\n"
            "  --pure                      every quantized tensor of TYPE's default type (no mixture)\n"
            "  -t, --threads N             threads (default: the CPUs available; THREADS too)\n"
            "  -q, --quiet                 no line per tensor\n",
            plumb_quantize_ftype_list());
}

/* ggml's spelling of a type name: "q4_K", "f16". */
static void type_text(int type, char *buf, size_t cap) {
    const char *name = plumb_type_name(type);
    size_t i = 0;
    for (; name && name[i] && i + 1 < cap; i++) {
        char c = name[i];
        buf[i] = (c == 'K' && i > 0 && name[i - 1] == '_') ? 'K' : (char)tolower((unsigned char)c);
    }
    buf[i] = '\0';
}

typedef struct progress_state {
    bool quiet;
    uint64_t bytes_from, bytes_to;
} progress_state;

static void on_tensor(const plumb_quantize_progress *p, void *user) {
    progress_state *s = user;
    s->bytes_from += p->bytes_from;
    s->bytes_to += p->bytes_to;
    if (s->quiet) return;
    char from[16], to[16], shape[96];
    type_text(p->type_from, from, sizeof from);
    type_text(p->type_to, to, sizeof to);
    size_t len = 0;
    shape[0] = '\0';
    for (int d = 0; d < p->n_dims && len < sizeof shape; d++)
        len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%" PRId64, d ? " x " : "", p->ne[d]);
    printf("[%4" PRId64 "/%4" PRId64 "] %-36s %5s -> %-5s [%s]  %.2f MiB -> %.2f MiB\n", p->index, p->count, p->name, from,
           to, shape, p->bytes_from / 1048576.0, p->bytes_to / 1048576.0);
    fflush(stdout);
}

/* A tensor type option's value, or -1 after a message listing the valid ones. */
static int parse_tensor_type(const char *opt, const char *v) {
    int t = plumb_type_from_name(v);
    if (t < 0 || t == PLUMB_TYPE_Q8_K) {
        cli_errorf("quantize", "unknown tensor type '%s' for %s (valid: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, "
                               "q2_K, q3_K, q4_K, q5_K, q6_K)", v, opt);
        return -1;
    }
    return t;
}

int cmd_quantize(int argc, char **argv) {
    plumb_quantize_params p = plumb_quantize_default_params();
    const char *pos[4] = {0};
    int n_pos = 0;
    bool quiet = false;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--allow-requantize") == 0) p.allow_requantize = true;
        else if (strcmp(a, "--pure") == 0) p.pure = true;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) quiet = true;
        else if (options_is(a, "--imatrix", NULL)) {
            if (!(p.imatrix = options_value("quantize", argc, argv, &i))) return 2;
        } else if (options_is(a, "--output-tensor-type", NULL)) {
            if (!(v = options_value("quantize", argc, argv, &i))) return 2;
            if ((p.output_tensor_type = parse_tensor_type("--output-tensor-type", v)) < 0) return 2;
        } else if (options_is(a, "--token-embedding-type", NULL)) {
            if (!(v = options_value("quantize", argc, argv, &i))) return 2;
            if ((p.token_embedding_type = parse_tensor_type("--token-embedding-type", v)) < 0) return 2;
        } else if (options_is(a, "--threads", "-t")) {
            if (!(v = options_value("quantize", argc, argv, &i))) return 2;
            if (!options_parse_long(v, 1, 512, &threads)) {
                cli_errorf("quantize", "bad value '%s' for --threads (1 to 512)", v);
                return 2;
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            cli_errorf("quantize", "unknown option '%s'", a);
            usage(stderr);
            return 2;
        } else if (n_pos < 4) pos[n_pos++] = a;
        else {
            cli_errorf("quantize", "too many arguments ('%s')", a);
            usage(stderr);
            return 2;
        }
    }
    if (n_pos < 3) {
        cli_errorf("quantize", "needs IN.gguf OUT.gguf TYPE");
        usage(stderr);
        return 2;
    }
    const char *in = pos[0], *out = pos[1];
    p.ftype = plumb_quantize_ftype_from_name(pos[2]);
    if (p.ftype < 0) {
        cli_errorf("quantize", "unknown type '%s'; valid types: %s", pos[2], plumb_quantize_ftype_list());
        return 2;
    }
    if (n_pos == 4 && !options_parse_long(pos[3], 1, 512, &threads)) {
        cli_errorf("quantize", "bad THREADS '%s' (1 to 512)", pos[3]);
        return 2;
    }
    p.n_threads = (int32_t)threads;
    progress_state ps = {.quiet = quiet};
    p.progress = on_tensor;
    p.progress_user = &ps;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    plumb_status st = plumb_quantize_model(in, out, &p);
    if (st) {
        cli_error("quantize", st, NULL);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("quantized %s -> %s (%s): %.2f MiB -> %.2f MiB in %.2f s\n", in, out, plumb_quantize_ftype_name(p.ftype),
           ps.bytes_from / 1048576.0, ps.bytes_to / 1048576.0, secs);
    return 0;
}
