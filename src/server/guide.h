/* guide.h — constrained sampling for one generation, shared by the server's scheduler and the
 * plumb command: a cache of grammars bound to the model's vocabulary (reused across
 * requests, so what one request computed serves the next), and per generation a guide that
 * samples each token among those the grammar allows — from the first token, or only once a
 * trigger (text such as "<tool_call>", or a control token) has appeared in the output. */
#ifndef PLUMB_SERVER_GUIDE_H
#define PLUMB_SERVER_GUIDE_H

#include "plumb.h"

typedef struct plumb_srv_grammars plumb_srv_grammars;

/* A cache of up to `slots` grammars over vocabulary v (borrowed; it must outlive the cache).
 * NULL when out of memory. Not thread-safe: one thread uses it and its guides. */
plumb_srv_grammars *plumb_srv_grammars_create(const plumb_vocab_t *v, int slots);
void plumb_srv_grammars_free(plumb_srv_grammars *gs);

/* What to constrain: GBNF text and its start rule; with a trigger, the output is free until
 * the trigger appears, then constrained from the trigger's first byte (a text trigger: root
 * must match the trigger text itself) or, when the trigger is a control token of the
 * vocabulary, from just after it (with root_after). force_trigger: there is no free part (a
 * control-token trigger is the first token; with a text trigger root applies from the
 * start). */
typedef struct plumb_srv_guide_spec {
    const char *gbnf;
    const char *root;
    const char *trigger;
    const char *trigger2; /* a second text trigger (NULL: none) */
    const char *root_after;
    bool force_trigger;
} plumb_srv_guide_spec;

typedef struct plumb_srv_guide {
    plumb_srv_grammars *gs; /* NULL: no constraint */
    int entry;              /* the cache entry of the constraint */
    int mode;               /* see guide.c */
    uint32_t state;
    int32_t trigger_tok;    /* a control-token trigger, or -1 */
    char trigger[2][40];    /* text triggers, or "" */
    char tail[160];         /* the output's last bytes, while waiting for a text trigger */
    size_t tail_len;
} plumb_srv_guide;

/* Starts a guide (spec NULL or spec->gbnf NULL: unconstrained). PLUMB_E_INVALID_ARG when the
 * grammar does not parse, PLUMB_E_NOMEM; msg says why. */
plumb_status plumb_srv_guide_start(plumb_srv_guide *g, plumb_srv_grammars *gs, const plumb_srv_guide_spec *spec,
                                   char *msg, size_t msg_cap);
/* The next token from logits with sampler s (which this accepts the token into), within what
 * the grammar allows. -1 when the grammar allows nothing here or its tables ran out (msg says
 * which): end the generation. *must_end: after this token only the end may follow. */
int32_t plumb_srv_guide_next(plumb_srv_guide *g, plumb_sampler_t *s, const float *logits, bool *must_end, char *msg,
                             size_t msg_cap);
/* Ends the guide (the cached grammar stays for later ones). */
void plumb_srv_guide_end(plumb_srv_guide *g);

#endif
