/* session.c — the generation loop shared by `plumb run` and `plumb chat`: a model and a
 * context, the tokens held in the KV cache (so a new prompt reuses the longest common
 * prefix), prompt feeding in batches (with progress on stderr when it is slow), and token-by-token generation with streaming output
 * through the text stream of server/gen.h (never half a UTF-8 character, nothing of a stop
 * string). */
#include "session.h"

#include "core/cpu_count.h"
#include "server/gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

double session_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long session_peak_rss_kib(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

plumb_status session_open(session *s, const char *path, const plumb_model_params *mp, const plumb_context_params *cp,
                          const plumb_sampler_params *sp, const char *gbnf) {
    memset(s, 0, sizeof *s);
    double t0 = session_now();
    plumb_status st = plumb_model_load_params(path, mp, &s->model);
    if (st) return st;
    /* the library's default thread count, resolved here so that the stats line can show it */
    plumb_context_params params = *cp;
    if (params.n_threads <= 0) {
        plumb_cpu_count cpus;
        plumb__cpu_count(&cpus);
        params.n_threads = cpus.n;
    }
    s->n_threads = params.n_threads;
    if ((st = plumb_context_create(s->model, &params, &s->ctx))) return st;
    s->vocab = plumb_model_vocab(s->model);
    plumb_model_info info;
    plumb_model_get_info(s->model, &info);
    s->n_vocab = info.n_vocab;
    if ((st = plumb_sampler_create(sp, s->n_vocab, &s->sampler))) return st;
    s->gbnf = gbnf;
    if (gbnf && !(s->grammars = plumb_srv_grammars_create(s->vocab, 1))) return PLUMB_E_NOMEM;
    s->cap = plumb_context_n_ctx(s->ctx);
    s->tokens = malloc((size_t)s->cap * sizeof *s->tokens);
    s->flags = malloc((size_t)plumb_context_n_batch(s->ctx) * sizeof *s->flags);
    if (!s->tokens || !s->flags) return PLUMB_E_NOMEM;
    s->load_seconds = session_now() - t0;
    return PLUMB_OK;
}

void session_close(session *s) {
    plumb_srv_grammars_free(s->grammars);
    plumb_sampler_free(s->sampler);
    plumb_context_free(s->ctx);
    plumb_model_free(s->model);
    free(s->tokens);
    free(s->flags);
    memset(s, 0, sizeof *s);
}

plumb_status session_tokenize(const session *s, const char *text, bool add_special, int32_t **ids, size_t *n) {
    return plumb_gen_tokenize(s->vocab, text, strlen(text), add_special, ids, n);
}

/* Progress of a long prompt on stderr: "prompt: 1024/4096 tokens", only once the prompt has
 * taken PROGRESS_AFTER_S (a fast one shows nothing). On a terminal the line is rewritten in
 * place after every batch and ended with a newline; elsewhere (a log, a pipe) a line is
 * written at most once a second, and the last count when the prompt is done. */
#define PROGRESS_AFTER_S 1.0

typedef struct progress {
    double t0, last; /* when feeding began; when a line was last written (0: never) */
    bool tty;
} progress;

static void progress_show(progress *p, size_t done, size_t total) {
    const double now = session_now();
    if (now - p->t0 < PROGRESS_AFTER_S || (!p->tty && p->last > 0 && now - p->last < 1.0 && done < total)) return;
    if (p->tty) fprintf(stderr, "\rprompt: %zu/%zu tokens", done, total);
    else fprintf(stderr, "prompt: %zu/%zu tokens\n", done, total);
    fflush(stderr);
    p->last = now;
}

/* Ends what progress_show started: the terminal's line gets its newline. */
static void progress_end(progress *p) {
    if (p->last > 0 && p->tty) fputc('\n', stderr);
    p->last = 0;
}

plumb_status session_feed(session *s, const int32_t *ids, size_t n) {
    /* reuse the cached prefix that matches */
    size_t keep = plumb_gen_reuse_len(s->tokens, (size_t)s->n_tokens, ids, n);
    plumb_seq_truncate(s->ctx, 0, (int32_t)keep);
    s->n_tokens = (int32_t)keep;
    if (n > (size_t)s->cap) return PLUMB_E_RANGE;
    const int32_t nb = plumb_context_n_batch(s->ctx);
    double t0 = session_now();
    progress pr = {.t0 = t0, .tty = isatty(STDERR_FILENO)};
    for (size_t i = keep; i < n; i += (size_t)nb) {
        int32_t m = (int32_t)(n - i < (size_t)nb ? n - i : (size_t)nb);
        for (int32_t j = 0; j < m; j++) s->flags[j] = (i + (size_t)j == n - 1);
        plumb_batch b = {.n_tokens = m, .tokens = ids + i, .logits = s->flags};
        plumb_status st = plumb_decode(s->ctx, &b);
        if (st) {
            progress_end(&pr);
            return st;
        }
        memcpy(s->tokens + i, ids + i, (size_t)m * sizeof *ids);
        s->n_tokens += m;
        progress_show(&pr, i + (size_t)m - keep, n - keep);
    }
    progress_end(&pr);
    s->prompt_seconds += session_now() - t0;
    s->prompt_tokens += (int64_t)(n - keep);
    return PLUMB_OK;
}

session_stop session_generate(session *s, int32_t n_max, char *const *stops, int n_stops, session_emit_fn emit,
                              void *user, plumb_status *err) {
    plumb_gen_stream gs;
    plumb_srv_guide guide;
    char why_not[160];
    const plumb_srv_guide_spec spec = {.gbnf = s->gbnf, .root = "root"};
    if ((*err = plumb_gen_stream_init(&gs, s->vocab, stops, n_stops))) return SESSION_STOP_ERROR;
    if ((*err = plumb_srv_guide_start(&guide, s->grammars, s->gbnf ? &spec : NULL, why_not, sizeof why_not))) {
        fprintf(stderr, "plumb: the grammar cannot be used: %s\n", why_not);
        plumb_gen_stream_free(&gs);
        return SESSION_STOP_ERROR;
    }
    session_stop why = SESSION_STOP_LENGTH;
    const char *text;
    size_t len;
    double t0 = session_now();
    for (int32_t i = 0; n_max < 0 || i < n_max; i++) {
        const float *logits = plumb_get_logits(s->ctx, plumb_n_logits(s->ctx) - 1);
        bool must_end;
        int32_t tok = plumb_srv_guide_next(&guide, s->sampler, logits, &must_end, why_not, sizeof why_not);
        if (tok < 0) {
            fprintf(stderr, "plumb: generation stopped: %s\n", why_not);
            why = SESSION_STOP_GRAMMAR;
            break;
        }
        s->gen_tokens++;
        plumb_gen_event ev = plumb_gen_stream_push(&gs, tok, &text, &len, err);
        if (len) emit(user, text, len);
        if (*err) {
            why = SESSION_STOP_ERROR;
            break;
        }
        if (ev != PLUMB_GEN_MORE) {
            why = ev == PLUMB_GEN_EOG ? SESSION_STOP_EOG : SESSION_STOP_STRING;
            break;
        }
        if (must_end) { /* the grammar is complete: nothing else may follow */
            why = SESSION_STOP_GRAMMAR;
            break;
        }
        if (s->n_tokens >= s->cap) {
            why = SESSION_STOP_CONTEXT;
            break;
        }
        plumb_batch b = {.n_tokens = 1, .tokens = &tok};
        plumb_status st = plumb_decode(s->ctx, &b);
        if (st) {
            *err = st;
            why = SESSION_STOP_ERROR;
            break;
        }
        s->tokens[s->n_tokens++] = tok;
    }
    plumb_gen_stream_finish(&gs, why == SESSION_STOP_STRING, &text, &len);
    if (len) emit(user, text, len);
    plumb_gen_stream_free(&gs);
    plumb_srv_guide_end(&guide);
    s->gen_seconds += session_now() - t0;
    return why;
}
