/* session.c — the generation loop shared by `plumb run` and `plumb chat`: a model and a
 * context, the tokens held in the KV cache (so a new prompt reuses the longest common
 * prefix), prompt feeding in batches, and token-by-token generation with streaming output
 * that never splits a UTF-8 character and holds back text that may start a stop string. */
#include "session.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

double session_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

long session_peak_rss_kib(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

plumb_status session_open(session *s, const char *path, const plumb_context_params *cp,
                          const plumb_sampler_params *sp) {
    memset(s, 0, sizeof *s);
    double t0 = session_now();
    plumb_status st = plumb_model_load(path, &s->model);
    if (st) return st;
    if ((st = plumb_context_create(s->model, cp, &s->ctx))) return st;
    s->vocab = plumb_model_vocab(s->model);
    plumb_model_info info;
    plumb_model_get_info(s->model, &info);
    s->n_vocab = info.n_vocab;
    if ((st = plumb_sampler_create(sp, s->n_vocab, &s->sampler))) return st;
    s->cap = plumb_context_n_ctx(s->ctx);
    s->tokens = malloc((size_t)s->cap * sizeof *s->tokens);
    s->flags = malloc((size_t)plumb_context_n_batch(s->ctx) * sizeof *s->flags);
    if (!s->tokens || !s->flags) return PLUMB_E_NOMEM;
    s->load_seconds = session_now() - t0;
    return PLUMB_OK;
}

void session_close(session *s) {
    plumb_sampler_free(s->sampler);
    plumb_context_free(s->ctx);
    plumb_model_free(s->model);
    free(s->tokens);
    free(s->flags);
    memset(s, 0, sizeof *s);
}

plumb_status session_tokenize(const session *s, const char *text, bool add_special, int32_t **ids, size_t *n) {
    size_t len = strlen(text), cap = len + 8;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids) return PLUMB_E_NOMEM;
    plumb_status st = plumb_tokenize(s->vocab, text, len, add_special, true, *ids, cap, n);
    if (st == PLUMB_E_RANGE) { /* more tokens than bytes can only come from added specials */
        int32_t *grown = realloc(*ids, *n * sizeof **ids);
        if (!grown) return PLUMB_E_NOMEM;
        *ids = grown;
        st = plumb_tokenize(s->vocab, text, len, add_special, true, *ids, *n, n);
    }
    return st;
}

plumb_status session_feed(session *s, const int32_t *ids, size_t n) {
    /* reuse the cached prefix that matches */
    size_t keep = 0;
    while (keep < n && keep < (size_t)s->n_tokens && s->tokens[keep] == ids[keep]) keep++;
    if (keep == n && n > 0) keep = n - 1; /* the last token must be decoded again for its logits */
    plumb_seq_truncate(s->ctx, 0, (int32_t)keep);
    s->n_tokens = (int32_t)keep;
    if (n > (size_t)s->cap) return PLUMB_E_RANGE;
    const int32_t nb = plumb_context_n_batch(s->ctx);
    double t0 = session_now();
    for (size_t i = keep; i < n; i += (size_t)nb) {
        int32_t m = (int32_t)(n - i < (size_t)nb ? n - i : (size_t)nb);
        for (int32_t j = 0; j < m; j++) s->flags[j] = (i + (size_t)j == n - 1);
        plumb_batch b = {.n_tokens = m, .tokens = ids + i, .logits = s->flags};
        plumb_status st = plumb_decode(s->ctx, &b);
        if (st) return st;
        memcpy(s->tokens + i, ids + i, (size_t)m * sizeof *ids);
        s->n_tokens += m;
    }
    s->prompt_seconds += session_now() - t0;
    s->prompt_tokens += (int64_t)(n - keep);
    return PLUMB_OK;
}

/* Length of the longest suffix of text[0..len) that is a proper prefix of some stop string. */
static size_t stop_prefix_len(const char *text, size_t len, char *const *stops, int n_stops) {
    size_t best = 0;
    for (int k = 0; k < n_stops; k++) {
        size_t sl = strlen(stops[k]);
        for (size_t l = sl > 1 ? sl - 1 : 0; l > best; l--)
            if (l <= len && memcmp(text + len - l, stops[k], l) == 0) {
                best = l;
                break;
            }
    }
    return best;
}

session_stop session_generate(session *s, int32_t n_max, char *const *stops, int n_stops, session_emit_fn emit,
                              void *user, plumb_status *err) {
    *err = PLUMB_OK;
    plumb_detok dt;
    memset(&dt, 0, sizeof dt);
    size_t held_cap = 4096, held_len = 0; /* generated text not yet emitted (stop-string look-behind) */
    char *held = malloc(held_cap);
    if (!held) {
        *err = PLUMB_E_NOMEM;
        return SESSION_STOP_ERROR;
    }
    session_stop why = SESSION_STOP_LENGTH;
    double t0 = session_now();
    for (int32_t i = 0; n_max < 0 || i < n_max; i++) {
        const float *logits = plumb_get_logits(s->ctx, plumb_n_logits(s->ctx) - 1);
        int32_t tok = plumb_sampler_sample(s->sampler, logits);
        plumb_sampler_accept(s->sampler, tok);
        s->gen_tokens++;
        if (plumb_vocab_is_eog(s->vocab, tok)) {
            why = SESSION_STOP_EOG;
            break;
        }
        char piece[1024];
        size_t np = plumb_detok_push(s->vocab, &dt, tok, piece, sizeof piece);
        if (np > sizeof piece) { /* a token text longer than any real vocabulary has */
            *err = PLUMB_E_RANGE;
            why = SESSION_STOP_ERROR;
            break;
        }
        if (held_len + np + 1 > held_cap) {
            char *grown = realloc(held, (held_cap = (held_len + np + 1) * 2));
            if (!grown) {
                *err = PLUMB_E_NOMEM;
                why = SESSION_STOP_ERROR;
                break;
            }
            held = grown;
        }
        memcpy(held + held_len, piece, np);
        held_len += np;
        held[held_len] = '\0';
        bool stopped = false;
        for (int k = 0; k < n_stops && !stopped; k++) {
            char *at = strstr(held, stops[k]);
            if (at) {
                held_len = (size_t)(at - held);
                stopped = true;
            }
        }
        if (stopped) {
            why = SESSION_STOP_STRING;
            break;
        }
        size_t keep = stop_prefix_len(held, held_len, stops, n_stops);
        if (held_len > keep) {
            emit(user, held, held_len - keep);
            memmove(held, held + held_len - keep, keep);
            held_len = keep;
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
    if (held_len) emit(user, held, held_len);
    char tail[16];
    size_t nt = plumb_detok_flush(&dt, tail, sizeof tail);
    if (nt && why != SESSION_STOP_STRING) emit(user, tail, nt);
    free(held);
    s->gen_seconds += session_now() - t0;
    return why;
}
