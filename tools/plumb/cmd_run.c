/* cmd_run.c — `plumb run -m MODEL -p PROMPT [options]`: feeds the prompt (with BOS) and
 * streams the continuation to stdout as it is produced; load time, prompt and generation
 * speed, peak RSS, the device (--device, --offload) and the threads go to stderr. */
#include "cli.h"
#include "options.h"
#include "session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void emit_stdout(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

#define RUN_N_PREDICT 256 /* tokens generated unless -n says otherwise */
#define MAX_PROMPT_FILE ((size_t)64 << 20) /* far beyond any context; a bound on memory */

/* The prompt file's text (a file, a FIFO or /dev/stdin); NULL after an error line. */
static char *read_prompt_file(const char *path) {
    FILE *f = fopen(path, "rb");
    size_t len;
    char *text = f ? cli_read_all(f, MAX_PROMPT_FILE, &len) : NULL;
    const int err = errno;
    if (f) fclose(f);
    if (!text) fprintf(stderr, "plumb run: cannot read prompt file '%s': %s\n", path, strerror(err));
    return text;
}

void print_stats(const session *s) {
    char device[96];
    cli_model_device_text(s->model, device, sizeof device);
    fprintf(stderr, "\n\nplumb: load %.2f s | prompt %lld tokens, %.1f tokens/s | generation %lld tokens, %.1f tokens/s | peak RSS %.1f MiB | device %s | threads %d\n",
            s->load_seconds, (long long)s->prompt_tokens,
            s->prompt_seconds > 0 ? (double)s->prompt_tokens / s->prompt_seconds : 0.0, (long long)s->gen_tokens,
            s->gen_seconds > 0 ? (double)s->gen_tokens / s->gen_seconds : 0.0, (double)session_peak_rss_kib() / 1024.0,
            device, (int)s->n_threads);
    plumb_device_traffic t;
    plumb_model_device_traffic(s->model, &t);
    if (t.round_trips)
        fprintf(stderr, "plumb: remote device: %llu bytes sent, %llu received, %llu round trips\n", (unsigned long long)t.bytes_sent,
                (unsigned long long)t.bytes_received, (unsigned long long)t.round_trips);
}

int cmd_run(int argc, char **argv) {
    gen_options o;
    gen_options_init(&o, RUN_N_PREDICT);
    const char *prompt = NULL, *prompt_file = NULL;
    bool stats = true;
    for (int i = 1; i < argc; i++) {
        int r = gen_options_parse(&o, "run", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (options_is(argv[i], "--prompt", "-p")) {
            if (!(prompt = options_value("run", argc, argv, &i))) return 2;
        } else if (options_is(argv[i], "--file", "-f")) {
            if (!(prompt_file = options_value("run", argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--no-stats")) stats = false;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: plumb run -m MODEL -p PROMPT [options]\n  -p, --prompt TEXT\n  -f, --file FILE           prompt from a file\n      --no-stats            no timing line on stderr\n");
            gen_options_print_usage(stdout, RUN_N_PREDICT);
            return 0;
        } else {
            fprintf(stderr, "plumb run: unknown option '%s' (see plumb run --help)\n", argv[i]);
            return 2;
        }
    }
    if (!o.model || (!prompt && !prompt_file)) {
        fprintf(stderr, "plumb run: usage: plumb run -m MODEL -p PROMPT [options] (see --help)\n");
        return 2;
    }
    cli_model_src src;
    if (gen_options_model(&o, "run", &src)) return 1;
    char *file_text = NULL;
    if (prompt_file) {
        if (!(file_text = read_prompt_file(prompt_file))) return 1;
        prompt = file_text;
    }
    char *gbnf;
    if (!gen_options_grammar(&o, "run", &gbnf)) {
        free(file_text);
        return 1;
    }
    cli_device_fallback("run", &o.model_params);
    session s;
    int rc = 1;
    plumb_status st = session_open(&s, o.model, &o.model_params, &o.ctx, &o.sampling, gbnf);
    if (st) {
        cli_error("run", st, NULL);
        goto out;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if ((st = session_tokenize(&s, prompt, true, &ids, &n))) {
        cli_error("run", st, NULL);
        goto out;
    }
    if (n >= (size_t)s.cap) {
        fprintf(stderr, "plumb run: the prompt is %zu tokens, too long for a context of %d (use --ctx-size)\n", n, s.cap);
        free(ids);
        goto out;
    }
    st = session_feed(&s, ids, n);
    free(ids);
    if (st) {
        cli_error("run", st, NULL);
        goto out;
    }
    session_stop why = session_generate(&s, o.n_predict, o.stops, o.n_stops, emit_stdout, NULL, &st);
    if (why == SESSION_STOP_ERROR) {
        cli_error("run", st, NULL);
        goto out;
    }
    if (why == SESSION_STOP_CONTEXT) fprintf(stderr, "\nplumb run: context full (%d tokens): generation stopped\n", s.cap);
    if (stats) print_stats(&s);
    else fputc('\n', stdout);
    rc = 0;
out:
    session_close(&s);
    free(gbnf);
    free(file_text);
    return rc;
}
