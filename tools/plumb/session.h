/* session.h — the generation loop shared by `plumb run` and `plumb chat` (session.c). */
#ifndef PLUMB_CLI_SESSION_H
#define PLUMB_CLI_SESSION_H

#include "plumb.h"
#include "server/guide.h"

typedef struct session {
    plumb_model_t *model;
    plumb_context_t *ctx;
    const plumb_vocab_t *vocab;
    plumb_sampler_t *sampler;
    int32_t n_vocab;
    int32_t n_threads; /* compute threads of the context */
    int32_t *tokens; /* tokens in the KV cache of sequence 0, [cap] */
    int32_t n_tokens, cap;
    bool *flags; /* [n_batch] logits flags for prompt batches */
    const char *gbnf;             /* the grammar every answer must match (borrowed), or NULL */
    plumb_srv_grammars *grammars; /* ... bound to the vocabulary */
    double load_seconds, prompt_seconds, gen_seconds;
    int64_t prompt_tokens, gen_tokens;
} session;

typedef enum session_stop {
    SESSION_STOP_LENGTH,  /* n_max tokens generated */
    SESSION_STOP_EOG,     /* an end-of-generation token */
    SESSION_STOP_STRING,  /* a stop string appeared (not emitted) */
    SESSION_STOP_CONTEXT, /* the context is full */
    SESSION_STOP_GRAMMAR, /* the grammar is complete, or allows nothing more */
    SESSION_STOP_ERROR,
} session_stop;

typedef void (*session_emit_fn)(void *user, const char *text, size_t len);

double session_now(void);
long session_peak_rss_kib(void);
/* The timing line (load, prompt and generation speed, peak RSS, device, threads) on stderr
 * (cmd_run.c). */
void print_stats(const session *s);
/* Loads the model, creates the context and the sampler (and, with a grammar, what constrains
 * each answer to it: gbnf is borrowed and must be checked already). On failure the caller
 * still calls session_close. */
plumb_status session_open(session *s, const char *path, const plumb_model_params *mp, const plumb_context_params *cp,
                          const plumb_sampler_params *sp, const char *gbnf);
void session_close(session *s);
/* Tokenizes text (special tokens parsed; BOS added when add_special). *ids is malloc'd. */
plumb_status session_tokenize(const session *s, const char *text, bool add_special, int32_t **ids, size_t *n);
/* Makes the cache hold exactly ids (reusing the longest cached prefix) and leaves the last
 * token's logits ready. PLUMB_E_RANGE when ids do not fit the context. */
plumb_status session_feed(session *s, const int32_t *ids, size_t n);
/* Samples up to n_max tokens (n_max < 0: until a stop), emitting text as it is complete. */
session_stop session_generate(session *s, int32_t n_max, char *const *stops, int n_stops, session_emit_fn emit,
                              void *user, plumb_status *err);

#endif
