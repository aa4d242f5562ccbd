/* guide.c — grammar cache and constrained sampling (see guide.h). */
#include "guide.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each cached constraint may hold this much in parse tables and masks. */
#define GUIDE_CONSTRAINT_MEMORY ((size_t)128 << 20)

typedef struct entry {
    char *gbnf;
    char root[40];
    plumb_grammar_t *g;
    plumb_constraint_t *c;
    int users;      /* guides using it now */
    bool stale;     /* its tables are full: replace it once no one uses it */
    uint64_t used;  /* for least-recently-used replacement */
} entry;

struct plumb_srv_grammars {
    const plumb_vocab_t *v;
    plumb_token_index_t *ti;
    entry *e;
    int n;
    uint64_t clock;
};

enum { MODE_FREE, MODE_WAIT, MODE_FORCE, MODE_ON };

plumb_srv_grammars *plumb_srv_grammars_create(const plumb_vocab_t *v, int slots) {
    plumb_srv_grammars *gs = calloc(1, sizeof *gs);
    if (!gs) return NULL;
    gs->v = v;
    gs->n = slots > 0 ? slots : 1;
    gs->e = calloc((size_t)gs->n, sizeof *gs->e);
    if (!gs->e || plumb_token_index_create(v, &gs->ti)) {
        plumb_srv_grammars_free(gs);
        return NULL;
    }
    return gs;
}

static void drop(entry *e) {
    plumb_constraint_free(e->c);
    plumb_grammar_free(e->g);
    free(e->gbnf);
    memset(e, 0, sizeof *e);
}

void plumb_srv_grammars_free(plumb_srv_grammars *gs) {
    if (!gs) return;
    for (int i = 0; gs->e && i < gs->n; i++) drop(&gs->e[i]);
    free(gs->e);
    plumb_token_index_free(gs->ti);
    free(gs);
}

/* The cache entry for (gbnf, root), made when new: -1 when the grammar does not parse or no
 * entry is free (msg says why). */
static int acquire(plumb_srv_grammars *gs, const char *gbnf, const char *root, char *msg, size_t cap) {
    int free_at = -1;
    for (int i = 0; i < gs->n; i++) {
        entry *e = &gs->e[i];
        if (e->gbnf && !e->stale && !strcmp(e->root, root) && !strcmp(e->gbnf, gbnf)) {
            e->users++;
            e->used = ++gs->clock;
            return i;
        }
        if (!e->users && (free_at < 0 || !e->gbnf || (gs->e[free_at].gbnf && e->used < gs->e[free_at].used))) free_at = i;
    }
    if (free_at < 0) {
        snprintf(msg, cap, "every cached grammar is in use");
        return -1;
    }
    entry *e = &gs->e[free_at];
    drop(e);
    plumb_status st = plumb_grammar_parse(gbnf, strlen(gbnf), root, NULL, &e->g);
    if (!st) st = plumb_constraint_create(e->g, gs->ti, GUIDE_CONSTRAINT_MEMORY, &e->c);
    if (!st && !(e->gbnf = strdup(gbnf))) st = PLUMB_E_NOMEM;
    if (st) {
        snprintf(msg, cap, "%s", st == PLUMB_E_NOMEM ? "out of memory" : plumb_last_error());
        drop(e);
        return -1;
    }
    snprintf(e->root, sizeof e->root, "%s", root);
    e->users = 1;
    e->used = ++gs->clock;
    return free_at;
}

static void release(plumb_srv_grammars *gs, int i) {
    if (i >= 0 && gs->e[i].users > 0) gs->e[i].users--;
}

plumb_status plumb_srv_guide_start(plumb_srv_guide *g, plumb_srv_grammars *gs, const plumb_srv_guide_spec *spec,
                                   char *msg, size_t msg_cap) {
    memset(g, 0, sizeof *g);
    g->entry = -1;
    g->trigger_tok = -1;
    if (!spec || !spec->gbnf) return PLUMB_OK;
    g->gs = gs;
    const char *trigger = spec->trigger;
    if (trigger) {
        int32_t id = plumb_vocab_find(gs->v, trigger, strlen(trigger));
        if (id >= 0 && plumb_vocab_is_control(gs->v, id)) g->trigger_tok = id;
        else snprintf(g->trigger[0], sizeof g->trigger[0], "%s", trigger);
        if (spec->trigger2) snprintf(g->trigger[1], sizeof g->trigger[1], "%s", spec->trigger2);
    }
    const bool after = g->trigger_tok >= 0;
    g->entry = acquire(gs, spec->gbnf, after ? spec->root_after : spec->root, msg, msg_cap);
    if (g->entry < 0) {
        g->gs = NULL;
        return PLUMB_E_INVALID_ARG;
    }
    if (!trigger || (!after && spec->force_trigger)) { /* constrained from the first token */
        g->mode = MODE_ON;
        if (plumb_constraint_start(gs->e[g->entry].c, &g->state)) {
            snprintf(msg, msg_cap, "%s", plumb_last_error());
            plumb_srv_guide_end(g);
            return PLUMB_E_INVALID_ARG;
        }
    } else
        g->mode = after && spec->force_trigger ? MODE_FORCE : MODE_WAIT;
    return PLUMB_OK;
}

void plumb_srv_guide_end(plumb_srv_guide *g) {
    if (g->gs) release(g->gs, g->entry);
    memset(g, 0, sizeof *g);
    g->entry = -1;
}

/* The constraint failed (its tables are full, or it allows nothing): the entry is replaced
 * later, and the generation ends. */
static int32_t give_up(plumb_srv_guide *g, const char *why, char *msg, size_t cap) {
    snprintf(msg, cap, "%s", why);
    if (g->gs && g->entry >= 0 && strstr(why, "tables")) g->gs->e[g->entry].stale = true;
    return -1;
}

/* MODE_WAIT with text triggers: adds tok's text to the tail and, when a trigger is in it,
 * starts constraining with the text from the (first) trigger on. */
static int32_t watch_text(plumb_srv_guide *g, int32_t tok, char *msg, size_t cap) {
    char piece[128];
    int n = plumb_token_to_piece(g->gs->v, tok, piece, sizeof piece, false);
    if (n <= 0) return tok;
    if (g->tail_len + (size_t)n > sizeof g->tail) { /* keep what may be a trigger's start */
        size_t keep = sizeof g->trigger[0] - 1 < g->tail_len ? sizeof g->trigger[0] - 1 : g->tail_len;
        memmove(g->tail, g->tail + g->tail_len - keep, keep);
        g->tail_len = keep;
    }
    memcpy(g->tail + g->tail_len, piece, (size_t)n);
    g->tail_len += (size_t)n;
    const char *at = NULL;
    for (int k = 0; k < 2; k++) {
        const char *hit = g->trigger[k][0] ? memmem(g->tail, g->tail_len, g->trigger[k], strlen(g->trigger[k])) : NULL;
        if (hit && (!at || hit < at)) at = hit;
    }
    if (!at) return tok;
    plumb_constraint_t *c = g->gs->e[g->entry].c;
    uint32_t s;
    if (plumb_constraint_start(c, &s) ||
        plumb_constraint_accept_bytes(c, s, at, g->tail_len - (size_t)(at - g->tail), &g->state))
        return give_up(g, plumb_last_error(), msg, cap);
    g->mode = MODE_ON;
    return tok;
}

int32_t plumb_srv_guide_next(plumb_srv_guide *g, plumb_sampler_t *s, const float *logits, bool *must_end, char *msg,
                             size_t msg_cap) {
    *must_end = false;
    int32_t tok;
    if (g->mode == MODE_ON) {
        plumb_constraint_t *c = g->gs->e[g->entry].c;
        const uint32_t *bits;
        int32_t n;
        if (plumb_constraint_mask(c, g->state, &bits, &n)) return give_up(g, plumb_last_error(), msg, msg_cap);
        if (n == 0) return give_up(g, "the grammar allows no token here (a dead end)", msg, msg_cap);
        tok = plumb_sampler_sample_masked(s, logits, bits);
        if (tok < 0 || plumb_constraint_accept(c, g->state, tok, &g->state))
            return give_up(g, "the grammar allows no token here (a dead end)", msg, msg_cap);
        *must_end = plumb_constraint_must_end(c, g->state);
    } else if (g->mode == MODE_FORCE) {
        tok = g->trigger_tok;
    } else
        tok = plumb_sampler_sample(s, logits);
    plumb_sampler_accept(s, tok);
    if (g->mode == MODE_FORCE || (g->mode == MODE_WAIT && tok == g->trigger_tok)) {
        if (plumb_constraint_start(g->gs->e[g->entry].c, &g->state)) return give_up(g, plumb_last_error(), msg, msg_cap);
        g->mode = MODE_ON;
    } else if (g->mode == MODE_WAIT && g->trigger[0][0])
        tok = watch_text(g, tok, msg, msg_cap);
    return tok;
}
