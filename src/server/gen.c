/* gen.c — generation pieces shared by the plumb command and the server (see gen.h). */
#include "gen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

plumb_status plumb_gen_stream_init(plumb_gen_stream *s, const plumb_vocab_t *vocab, char *const *stops, int n_stops) {
    memset(s, 0, sizeof *s);
    s->vocab = vocab;
    s->stops = stops;
    s->n_stops = n_stops;
    s->held_cap = 4096;
    s->held = malloc(s->held_cap);
    if (!s->held) return PLUMB_E_NOMEM;
    s->held[0] = '\0';
    return PLUMB_OK;
}

void plumb_gen_stream_free(plumb_gen_stream *s) {
    free(s->held);
    memset(s, 0, sizeof *s);
}

/* Drops the text handed out by the previous call. */
static void drop_emitted(plumb_gen_stream *s) {
    if (!s->out_len) return;
    memmove(s->held, s->held + s->out_len, s->held_len - s->out_len + 1);
    s->held_len -= s->out_len;
    s->out_len = 0;
}

static bool reserve(plumb_gen_stream *s, size_t extra) {
    if (s->held_len + extra + 1 <= s->held_cap) return true;
    size_t cap = (s->held_len + extra + 1) * 2;
    char *grown = realloc(s->held, cap);
    if (!grown) return false;
    s->held = grown;
    s->held_cap = cap;
    return true;
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

plumb_gen_event plumb_gen_stream_push(plumb_gen_stream *s, int32_t tok, const char **text, size_t *len,
                                      plumb_status *err) {
    *err = PLUMB_OK;
    *text = s->held;
    *len = 0;
    drop_emitted(s);
    if (plumb_vocab_is_eog(s->vocab, tok)) return PLUMB_GEN_EOG;
    char piece[1024];
    size_t np = plumb_detok_push(s->vocab, &s->dt, tok, piece, sizeof piece);
    if (np > sizeof piece) { /* a token text longer than any real vocabulary has */
        *err = PLUMB_E_RANGE;
        return PLUMB_GEN_STOP;
    }
    if (!reserve(s, np)) {
        *err = PLUMB_E_NOMEM;
        return PLUMB_GEN_STOP;
    }
    memcpy(s->held + s->held_len, piece, np);
    s->held_len += np;
    s->held[s->held_len] = '\0';
    size_t cut = s->held_len;
    for (int k = 0; k < s->n_stops; k++) {
        const char *at = memmem(s->held, s->held_len, s->stops[k], strlen(s->stops[k]));
        if (at && (size_t)(at - s->held) < cut) cut = (size_t)(at - s->held);
    }
    if (cut < s->held_len) {
        s->held_len = cut;
        s->held[cut] = '\0';
        s->out_len = cut;
        *len = cut;
        return PLUMB_GEN_STOP;
    }
    s->out_len = s->held_len - stop_prefix_len(s->held, s->held_len, s->stops, s->n_stops);
    *len = s->out_len;
    return PLUMB_GEN_MORE;
}

void plumb_gen_stream_finish(plumb_gen_stream *s, bool at_stop, const char **text, size_t *len) {
    drop_emitted(s);
    if (!at_stop && reserve(s, 8)) {
        s->held_len += plumb_detok_flush(&s->dt, s->held + s->held_len, 8);
        s->held[s->held_len] = '\0';
    }
    memset(&s->dt, 0, sizeof s->dt);
    *text = s->held;
    *len = at_stop ? 0 : s->held_len;
    s->out_len = *len;
}

bool plumb_gen_append(char **buf, size_t *len, size_t *cap, const void *src, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t grown_cap = (*len + n + 1) * 2;
        char *grown = realloc(*buf, grown_cap);
        if (!grown) return false;
        *buf = grown;
        *cap = grown_cap;
    }
    memcpy(*buf + *len, src, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

size_t plumb_gen_reuse_len(const int32_t *cached, size_t n_cached, const int32_t *ids, size_t n) {
    size_t keep = 0;
    while (keep < n && keep < n_cached && cached[keep] == ids[keep]) keep++;
    if (keep == n && n > 0) keep = n - 1;
    return keep;
}

plumb_status plumb_gen_tokenize(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                                int32_t **ids, size_t *n) {
    return plumb_gen_tokenize_marked(v, text, len, add_special, true, NULL, 0, ids, n);
}

plumb_status plumb_gen_tokenize_marked(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                                       bool parse_special, const plumb_span *marks, size_t n_marks, int32_t **ids,
                                       size_t *n) {
    size_t cap = len + 8;
    *ids = malloc(cap * sizeof **ids);
    *n = 0;
    if (!*ids) return PLUMB_E_NOMEM;
    plumb_status st = PLUMB_OK;
    for (int pass = 0; pass < 2; pass++) {
        st = parse_special && marks ? plumb_tokenize_marked(v, text, len, add_special, marks, n_marks, *ids, cap, n)
                                    : plumb_tokenize(v, text, len, add_special, parse_special, *ids, cap, n);
        if (st != PLUMB_E_RANGE || pass) break;
        /* more tokens than bytes can only come from added specials */
        int32_t *grown = realloc(*ids, *n * sizeof **ids);
        if (!grown) {
            st = PLUMB_E_NOMEM;
            break;
        }
        *ids = grown;
        cap = *n;
    }
    if (st) { /* the caller owns *ids only on success */
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return st;
}

plumb_chat_format plumb_gen_chat_format(const plumb_model_t *m, const char *name) {
    if (name) return plumb_chat_format_from_name(name);
    plumb_str t;
    if (plumb_model_chat_template(m, &t) == PLUMB_OK) {
        plumb_chat_format f = plumb_chat_format_detect(t.ptr, (size_t)t.len);
        if (f != PLUMB_CHAT_UNKNOWN) return f;
    }
    static const struct {
        const char *marker;
        plumb_chat_format format;
    } markers[] = {{"<start_of_turn>", PLUMB_CHAT_GEMMA}, {"<|start_header_id|>", PLUMB_CHAT_LLAMA3},
                   {"<|im_start|>", PLUMB_CHAT_CHATML}};
    const plumb_vocab_t *v = plumb_model_vocab(m);
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
        if (plumb_vocab_find(v, markers[i].marker, strlen(markers[i].marker)) >= 0) return markers[i].format;
    return PLUMB_CHAT_UNKNOWN;
}

void plumb_gen_normalize(const double *sum, int32_t d, float *out) {
    double norm = 0;
    for (int32_t i = 0; i < d; i++) norm += sum[i] * sum[i];
    norm = norm > 0 ? sqrt(norm) : 1;
    for (int32_t i = 0; i < d; i++) out[i] = (float)(sum[i] / norm);
}
