/* cmd_run.c — `plumb run -m MODEL -p PROMPT [options]`: feeds the prompt (with BOS) and
 * streams the continuation to stdout as it is produced; load time, prompt and generation
 * speed and peak RSS go to stderr. */
#include "cli.h"
#include "options.h"
#include "session.h"

#include <stdlib.h>
#include <string.h>

static void emit_stdout(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            char *grown = cap > (64u << 20) ? NULL : realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

void print_stats(const session *s) {
    fprintf(stderr, "\n\nplumb: load %.2f s | prompt %lld tokens, %.1f tokens/s | generation %lld tokens, %.1f tokens/s | peak RSS %.1f MiB\n",
            s->load_seconds, (long long)s->prompt_tokens,
            s->prompt_seconds > 0 ? (double)s->prompt_tokens / s->prompt_seconds : 0.0, (long long)s->gen_tokens,
            s->gen_seconds > 0 ? (double)s->gen_tokens / s->gen_seconds : 0.0, (double)session_peak_rss_kib() / 1024.0);
}

int cmd_run(int argc, char **argv) {
    gen_options o;
    gen_options_init(&o);
    const char *prompt = NULL, *prompt_file = NULL;
    bool stats = true;
    for (int i = 1; i < argc; i++) {
        int r = gen_options_parse(&o, "run", argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if ((!strcmp(argv[i], "-p") || !strcmp(argv[i], "--prompt")) && i + 1 < argc) prompt = argv[++i];
        else if ((!strcmp(argv[i], "-f") || !strcmp(argv[i], "--file")) && i + 1 < argc) prompt_file = argv[++i];
        else if (!strcmp(argv[i], "--no-stats")) stats = false;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: plumb run -m MODEL -p PROMPT [options]\n  -p, --prompt TEXT\n  -f, --file FILE           prompt from a file\n      --no-stats            no timing line on stderr\n%s",
                   gen_options_usage);
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
    char *file_text = NULL;
    if (prompt_file) {
        file_text = read_file(prompt_file);
        if (!file_text) {
            fprintf(stderr, "plumb run: cannot read prompt file '%s'\n", prompt_file);
            return 1;
        }
        prompt = file_text;
    }
    session s;
    int rc = 1;
    plumb_status st = session_open(&s, o.model, &o.model_params, &o.ctx, &o.sampling);
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
    free(file_text);
    return rc;
}
