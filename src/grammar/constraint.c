/* constraint.c — which tokens a grammar allows next: the token index (every token's text in
 * a byte trie) and the constraint (a grammar's matcher plus a cache of token masks per parse
 * state).
 *
 * The mask of a state is the union over its stacks. A stack is cut to its top CUT_FRAMES frames
 * (the rest unknown, GM_CTX) and the trie is walked depth-first from the cut stack, one matcher
 * step per trie edge, skipping every subtree whose prefix the grammar rejects: the tokens that
 * stay inside those frames are allowed whatever lies below, and the few that pop out of them
 * (inside a JSON string: the tokens holding the closing quote) are checked against the real
 * state one by one. The walk's result is cached per cut stack, so every string of a schema, at
 * any depth, shares one walk; masks are cached per state, so a state seen before (in this
 * request or an earlier one with the same grammar) costs nothing. Steps are memoized in the
 * matcher: states that recur cost one table lookup per trie node. */
#include "core/error.h"
#include "grammar/grammar.h"

#include <stdlib.h>
#include <string.h>

#define PLUMB_PIECE_MAX 1024

struct plumb_token_index {
    int32_t n_vocab;
    uint32_t n_nodes;  /* trie nodes in depth-first order; node 0 is the root */
    uint8_t *byte;     /* [n_nodes] the byte on the edge into the node */
    uint16_t *depth;   /* [n_nodes] bytes from the root */
    uint32_t *skip;    /* [n_nodes] the first node after the node's subtree */
    uint32_t *tok_at;  /* [n_nodes] index in toks of the first token ending here */
    uint16_t *tok_n;   /* [n_nodes] tokens ending here */
    int32_t *toks;     /* tokens with text, sorted by text */
    uint32_t n_toks;
    uint32_t *piece_off; /* [n_vocab + 1] token t's text: pool[piece_off[t] .. piece_off[t + 1]) */
    char *pool;
    uint8_t *kind; /* [n_vocab] 0: no text, never allowed; 1: text; 2: end of generation */
    uint16_t max_depth;
};

void plumb_token_index_free(plumb_token_index_t *ti) {
    if (!ti) return;
    free(ti->byte), free(ti->depth), free(ti->skip), free(ti->tok_at), free(ti->tok_n);
    free(ti->toks), free(ti->piece_off), free(ti->pool), free(ti->kind);
    free(ti);
}

/* qsort_r's context, not a global: indexes may be built on several threads at once */
static int cmp_piece(const void *a, const void *b, void *ctx) {
    const plumb_token_index_t *sort_ti = ctx;
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    const uint32_t lx = sort_ti->piece_off[x + 1] - sort_ti->piece_off[x];
    const uint32_t ly = sort_ti->piece_off[y + 1] - sort_ti->piece_off[y];
    int c = memcmp(sort_ti->pool + sort_ti->piece_off[x], sort_ti->pool + sort_ti->piece_off[y], lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

plumb_status plumb_token_index_create(const plumb_vocab_t *v, plumb_token_index_t **out) {
    if (!v || !out) return plumb__fail(PLUMB_E_INVALID_ARG, "token index: no vocabulary");
    *out = NULL;
    plumb_token_index_t *ti = calloc(1, sizeof *ti);
    const int32_t n = plumb_vocab_n_tokens(v);
    if (!ti) return plumb__fail(PLUMB_E_NOMEM, "token index: out of memory");
    ti->n_vocab = n;
    ti->piece_off = malloc(((size_t)n + 1) * sizeof *ti->piece_off);
    ti->kind = calloc((size_t)n + 1, 1);
    ti->toks = malloc(((size_t)n + 1) * sizeof *ti->toks);
    size_t cap = (size_t)n * 8 + 64, used = 0;
    ti->pool = malloc(cap);
    plumb_status st = ti->piece_off && ti->kind && ti->toks && ti->pool ? PLUMB_OK : PLUMB_E_NOMEM;
    char piece[PLUMB_PIECE_MAX];
    for (int32_t t = 0; t < n && !st; t++) {
        ti->piece_off[t] = (uint32_t)used;
        if (plumb_vocab_is_eog(v, t)) {
            ti->kind[t] = 2;
            continue;
        }
        if (plumb_vocab_is_control(v, t)) continue;
        int len = plumb_token_to_piece(v, t, piece, sizeof piece, false);
        if (len <= 0) continue; /* no text, or longer than any real token: never allowed */
        if (used + (size_t)len > cap) {
            char *g = realloc(ti->pool, cap * 2 + (size_t)len);
            if (!g) {
                st = PLUMB_E_NOMEM;
                break;
            }
            ti->pool = g;
            cap = cap * 2 + (size_t)len;
        }
        if (used + (size_t)len > UINT32_MAX) {
            st = PLUMB_E_RANGE;
            break;
        }
        memcpy(ti->pool + used, piece, (size_t)len);
        used += (size_t)len;
        ti->kind[t] = 1;
        ti->toks[ti->n_toks++] = t;
    }
    if (!st) ti->piece_off[n] = (uint32_t)used;
    /* the trie: tokens sorted by text, so depth-first order is their order */
    if (!st) {
        qsort_r(ti->toks, ti->n_toks, sizeof *ti->toks, cmp_piece, ti);
        const size_t max_nodes = used + 1;
        ti->byte = malloc(max_nodes), ti->depth = malloc(max_nodes * 2), ti->skip = malloc(max_nodes * 4);
        ti->tok_at = malloc(max_nodes * 4), ti->tok_n = calloc(max_nodes, 2);
        if (!ti->byte || !ti->depth || !ti->skip || !ti->tok_at || !ti->tok_n) st = PLUMB_E_NOMEM;
    }
    if (!st) {
        uint32_t path[PLUMB_PIECE_MAX + 1]; /* path[d]: the node at depth d on the current path */
        uint32_t depth = 0, nn = 1;
        ti->byte[0] = 0, ti->depth[0] = 0, path[0] = 0;
        const char *prev = NULL;
        uint32_t prev_len = 0;
        for (uint32_t k = 0; k < ti->n_toks; k++) {
            const int32_t t = ti->toks[k];
            const char *p = ti->pool + ti->piece_off[t];
            const uint32_t len = ti->piece_off[t + 1] - ti->piece_off[t];
            uint32_t lcp = 0;
            while (prev && lcp < len && lcp < prev_len && p[lcp] == prev[lcp]) lcp++;
            while (depth > lcp) ti->skip[path[depth--]] = nn; /* leaving these subtrees */
            for (; depth < len; depth++) {
                path[depth + 1] = nn;
                ti->byte[nn] = (uint8_t)p[depth], ti->depth[nn] = (uint16_t)(depth + 1), ti->tok_n[nn] = 0;
                nn++;
            }
            const uint32_t at = path[len];
            if (ti->tok_n[at]++ == 0) ti->tok_at[at] = k;
            if (len > ti->max_depth) ti->max_depth = (uint16_t)len;
            prev = p, prev_len = len;
        }
        while (depth > 0) ti->skip[path[depth--]] = nn;
        ti->skip[0] = nn;
        ti->n_nodes = nn;
    }
    if (st) {
        plumb_token_index_free(ti);
        return plumb__fail(st, "token index: %s", st == PLUMB_E_NOMEM ? "out of memory" : "vocabulary text too large");
    }
    *out = ti;
    return PLUMB_OK;
}

/* ---- constraints ------------------------------------------------------------------------- */

struct plumb_constraint {
    const plumb_grammar_t *g;
    const plumb_token_index_t *ti;
    gm *m;
    size_t max_mem, mask_budget;
    uint32_t words; /* uint32 words per mask */
    /* mask cache: state -> slot */
    uint32_t *mkey, *mslot; /* key: state + 1, 0 empty */
    uint32_t mcap, n_masks, cap_masks;
    uint32_t *masks; /* [cap_masks * words] */
    int32_t *counts; /* [cap_masks] */
    uint32_t *walk;  /* [max_depth + 1] states along the trie path */
    uint8_t *ctx;    /* [max_depth + 1] whether the path has reached GM_CTX */
    uint32_t *acc, *unc, *range; /* [n_nodes] x 2, [n_nodes], [2 n_nodes]: a cut walk's result */
    /* cut-walk cache: cut state -> entry */
    uint32_t *ckey, *cslot; /* key: state + 1, 0 empty */
    uint32_t ccap;
    struct cut { uint32_t *allowed; int32_t *unsure; uint32_t n_unsure; } *cuts;
    uint32_t n_cuts, cap_cuts;
    size_t cut_bytes;
};

#define CUT_FRAMES 3

plumb_status plumb_constraint_create(const plumb_grammar_t *g, const plumb_token_index_t *ti, size_t max_memory,
                                     plumb_constraint_t **out) {
    if (!g || !ti || !out) return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: no grammar or token index");
    *out = NULL;
    plumb_constraint_t *c = calloc(1, sizeof *c);
    if (!c) return plumb__fail(PLUMB_E_NOMEM, "constraint: out of memory");
    c->g = g, c->ti = ti;
    c->max_mem = max_memory ? max_memory : (size_t)512 << 20;
    c->mask_budget = c->max_mem / 4;
    c->words = (uint32_t)(((size_t)ti->n_vocab + 31) / 32);
    c->m = plumb__gm_create(g, c->max_mem - c->mask_budget);
    c->walk = malloc(((size_t)ti->max_depth + 1) * sizeof *c->walk);
    c->ctx = malloc((size_t)ti->max_depth + 1);
    c->acc = malloc(((size_t)ti->n_nodes + 1) * sizeof *c->acc);
    c->unc = malloc(((size_t)ti->n_nodes + 1) * sizeof *c->unc);
    c->range = malloc(((size_t)ti->n_nodes + 1) * 2 * sizeof *c->range);
    if (!c->m || !c->walk || !c->ctx || !c->acc || !c->unc || !c->range) {
        plumb_constraint_free(c);
        return plumb__fail(PLUMB_E_NOMEM, "constraint: out of memory");
    }
    *out = c;
    return PLUMB_OK;
}

void plumb_constraint_free(plumb_constraint_t *c) {
    if (!c) return;
    plumb__gm_free(c->m);
    free(c->mkey), free(c->mslot), free(c->masks), free(c->counts), free(c->walk), free(c->ctx);
    free(c->acc), free(c->unc), free(c->range);
    for (uint32_t i = 0; i < c->n_cuts; i++) free(c->cuts[i].allowed), free(c->cuts[i].unsure);
    free(c->cuts), free(c->ckey), free(c->cslot);
    free(c);
}

plumb_status plumb_constraint_start(plumb_constraint_t *c, uint32_t *state) {
    if (!c || !state) return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: no constraint");
    return plumb__gm_start(c->m, state);
}

bool plumb_constraint_can_end(const plumb_constraint_t *c, uint32_t state) { return c && plumb__gm_can_end(c->m, state); }

bool plumb_constraint_must_end(const plumb_constraint_t *c, uint32_t state) {
    return c && plumb__gm_only_end(c->m, state);
}

/* Drops every cached mask (when they would pass their budget). */
static void forget_masks(plumb_constraint_t *c) {
    if (c->mkey) memset(c->mkey, 0, (size_t)c->mcap * sizeof *c->mkey);
    c->n_masks = 0;
    for (uint32_t i = 0; i < c->n_cuts; i++) free(c->cuts[i].allowed), free(c->cuts[i].unsure);
    if (c->ckey) memset(c->ckey, 0, (size_t)c->ccap * sizeof *c->ckey);
    c->n_cuts = 0;
    c->cut_bytes = 0;
}

/* A free mask slot for state s, registered in the cache. */
static plumb_status mask_slot(plumb_constraint_t *c, uint32_t s, uint32_t *slot) {
    const size_t bytes = (size_t)c->words * 4 + 4;
    if ((size_t)(c->n_masks + 1) * bytes > c->mask_budget) forget_masks(c);
    if (c->n_masks == c->cap_masks) {
        uint32_t cap = c->cap_masks ? c->cap_masks * 2 : 16;
        if ((size_t)cap * bytes > c->mask_budget) cap = (uint32_t)(c->mask_budget / bytes);
        if (cap <= c->n_masks) return plumb__fail(PLUMB_E_RANGE, "constraint: a token mask does not fit its memory cap");
        uint32_t *m = realloc(c->masks, (size_t)cap * c->words * 4);
        if (!m) return plumb__fail(PLUMB_E_NOMEM, "constraint: out of memory");
        c->masks = m;
        int32_t *n = realloc(c->counts, (size_t)cap * sizeof *n);
        if (!n) return plumb__fail(PLUMB_E_NOMEM, "constraint: out of memory");
        c->counts = n;
        c->cap_masks = cap;
    }
    if ((c->n_masks + 1) * 2 > c->mcap) { /* rehash */
        uint32_t cap = c->mcap ? c->mcap * 2 : 64;
        uint32_t *k2 = calloc(cap, 4), *v2 = malloc((size_t)cap * 4);
        if (!k2 || !v2) {
            free(k2), free(v2);
            return plumb__fail(PLUMB_E_NOMEM, "constraint: out of memory");
        }
        for (uint32_t i = 0; i < c->mcap; i++)
            if (c->mkey[i]) {
                uint32_t k = (c->mkey[i] * 0x9E3779B1u) & (cap - 1);
                while (k2[k]) k = (k + 1) & (cap - 1);
                k2[k] = c->mkey[i], v2[k] = c->mslot[i];
            }
        free(c->mkey), free(c->mslot);
        c->mkey = k2, c->mslot = v2, c->mcap = cap;
    }
    uint32_t k = ((s + 1) * 0x9E3779B1u) & (c->mcap - 1);
    while (c->mkey[k]) k = (k + 1) & (c->mcap - 1);
    c->mkey[k] = s + 1;
    c->mslot[k] = *slot = c->n_masks++;
    return PLUMB_OK;
}

static const uint32_t *cached_mask(const plumb_constraint_t *c, uint32_t s, int32_t *count) {
    if (!c->mcap) return NULL;
    for (uint32_t k = ((s + 1) * 0x9E3779B1u) & (c->mcap - 1); c->mkey[k]; k = (k + 1) & (c->mcap - 1))
        if (c->mkey[k] == s + 1) {
            *count = c->counts[c->mslot[k]];
            return c->masks + (size_t)c->mslot[k] * c->words;
        }
    return NULL;
}

/* Marks in bits the tokens that end at trie node i. */
static void mark_node(const plumb_token_index_t *ti, uint32_t i, uint32_t *bits) {
    for (uint32_t k = 0; k < ti->tok_n[i]; k++) {
        const int32_t t = ti->toks[ti->tok_at[i] + k];
        bits[t >> 5] |= 1u << (t & 31);
    }
}

/* The walk of the cut state t: cached, or made now. NULL after setting *st. */
static struct cut *cut_walk(plumb_constraint_t *c, uint32_t t, plumb_status *st) {
    const plumb_token_index_t *ti = c->ti;
    if (c->ccap)
        for (uint32_t k = ((t + 1) * 0x9E3779B1u) & (c->ccap - 1); c->ckey[k]; k = (k + 1) & (c->ccap - 1))
            if (c->ckey[k] == t + 1) return &c->cuts[c->cslot[k]];
    uint32_t n_acc, n_unc, n_range;
    if ((*st = plumb__gm_walk_cut(c->m, t, ti->byte, ti->depth, ti->skip, ti->tok_n, ti->n_nodes, c->walk, c->ctx, c->acc,
                                  &n_acc, c->unc, &n_unc, c->range, &n_range)))
        return NULL;
    uint32_t n_unsure = 0;
    for (uint32_t k = 0; k < n_unc; k++) n_unsure += ti->tok_n[c->unc[k]];
    for (uint32_t k = 0; k < n_range; k += 2)
        for (uint32_t i = c->range[k]; i < c->range[k + 1]; i++) n_unsure += ti->tok_n[i];
    const size_t bytes = (size_t)c->words * 4 + (size_t)n_unsure * 4;
    if (c->cut_bytes + bytes > c->mask_budget / 2) forget_masks(c); /* the masks go too: they point nowhere else */
    if (c->n_cuts == c->cap_cuts) {
        uint32_t cap = c->cap_cuts ? c->cap_cuts * 2 : 16;
        struct cut *g = realloc(c->cuts, (size_t)cap * sizeof *g);
        if (!g) goto nomem;
        c->cuts = g, c->cap_cuts = cap;
    }
    if ((c->n_cuts + 1) * 2 > c->ccap) {
        uint32_t cap = c->ccap ? c->ccap * 2 : 64;
        uint32_t *k2 = calloc(cap, 4), *v2 = malloc((size_t)cap * 4);
        if (!k2 || !v2) {
            free(k2), free(v2);
            goto nomem;
        }
        for (uint32_t i = 0; i < c->ccap; i++)
            if (c->ckey[i]) {
                uint32_t k = (c->ckey[i] * 0x9E3779B1u) & (cap - 1);
                while (k2[k]) k = (k + 1) & (cap - 1);
                k2[k] = c->ckey[i], v2[k] = c->cslot[i];
            }
        free(c->ckey), free(c->cslot);
        c->ckey = k2, c->cslot = v2, c->ccap = cap;
    }
    struct cut *e = &c->cuts[c->n_cuts];
    e->allowed = calloc(c->words, 4);
    e->unsure = malloc(((size_t)n_unsure + 1) * sizeof *e->unsure);
    if (!e->allowed || !e->unsure) {
        free(e->allowed), free(e->unsure);
        goto nomem;
    }
    for (uint32_t k = 0; k < n_acc; k++) mark_node(ti, c->acc[k], e->allowed);
    e->n_unsure = 0;
    for (uint32_t k = 0; k < n_unc; k++)
        for (uint32_t j = 0; j < ti->tok_n[c->unc[k]]; j++) e->unsure[e->n_unsure++] = ti->toks[ti->tok_at[c->unc[k]] + j];
    for (uint32_t k = 0; k < n_range; k += 2)
        for (uint32_t i = c->range[k]; i < c->range[k + 1]; i++)
            for (uint32_t j = 0; j < ti->tok_n[i]; j++) e->unsure[e->n_unsure++] = ti->toks[ti->tok_at[i] + j];
    uint32_t k = ((t + 1) * 0x9E3779B1u) & (c->ccap - 1);
    while (c->ckey[k]) k = (k + 1) & (c->ccap - 1);
    c->ckey[k] = t + 1, c->cslot[k] = c->n_cuts++;
    c->cut_bytes += bytes;
    return e;
nomem:
    *st = plumb__fail(PLUMB_E_NOMEM, "constraint: out of memory");
    return NULL;
}

/* Whether token t's text continues state s (the real stacks). */
static plumb_status token_fits(plumb_constraint_t *c, uint32_t s, int32_t t, bool *fits) {
    const plumb_token_index_t *ti = c->ti;
    for (uint32_t i = ti->piece_off[t]; i < ti->piece_off[t + 1] && s != GM_DEAD; i++) {
        plumb_status st = plumb__gm_step(c->m, s, (uint8_t)ti->pool[i], &s);
        if (st) return st;
    }
    *fits = s != GM_DEAD;
    return PLUMB_OK;
}

/* Adds to bits the tokens that continue state s through its stack `stack`: those of the cut
 * stack's walk that stay inside it, and those of its unsure ones that fit s. */
static plumb_status stack_tokens(plumb_constraint_t *c, uint32_t s, uint32_t stack, uint32_t *bits) {
    uint32_t t;
    plumb_status st = plumb__gm_truncate(c->m, stack, CUT_FRAMES, &t);
    const struct cut *e = st ? NULL : cut_walk(c, t, &st);
    if (st) return st;
    for (uint32_t w = 0; w < c->words; w++) bits[w] |= e->allowed[w];
    for (uint32_t k = 0; k < e->n_unsure; k++) {
        const int32_t tok = e->unsure[k];
        bool fits = false;
        if (bits[tok >> 5] >> (tok & 31) & 1) continue;
        if ((st = token_fits(c, s, tok, &fits))) return st;
        if (fits) bits[tok >> 5] |= 1u << (tok & 31);
    }
    return PLUMB_OK;
}

/* The tokens whose text continues state s, into bits. */
static plumb_status walk(plumb_constraint_t *c, uint32_t s, uint32_t *bits, int32_t *count) {
    const plumb_token_index_t *ti = c->ti;
    const uint32_t *nodes;
    uint32_t n_nodes, local[64];
    plumb_status st = plumb__gm_state_nodes(c->m, s, &nodes, &n_nodes);
    if (st) return st;
    /* copied: the matcher's pool moves as the walks make states */
    uint32_t *stacks = n_nodes <= 64 ? local : malloc((size_t)n_nodes * sizeof *stacks);
    if (!stacks) return plumb__fail(PLUMB_E_NOMEM, "constraint: out of memory");
    if (n_nodes) memcpy(stacks, nodes, (size_t)n_nodes * sizeof *stacks);
    for (uint32_t i = 0; i < n_nodes && !st; i++)
        if (stacks[i] > GM_CTX) st = stack_tokens(c, s, stacks[i], bits);
    if (stacks != local) free(stacks);
    if (st) return st;
    if (plumb__gm_can_end(c->m, s))
        for (int32_t t = 0; t < ti->n_vocab; t++)
            if (ti->kind[t] == 2) bits[t >> 5] |= 1u << (t & 31);
    int32_t n = 0;
    for (uint32_t w = 0; w < c->words; w++) n += __builtin_popcount(bits[w]);
    *count = n;
    return PLUMB_OK;
}

plumb_status plumb_constraint_mask(plumb_constraint_t *c, uint32_t state, const uint32_t **bits, int32_t *n_allowed) {
    if (!c || !bits || !n_allowed) return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: no constraint");
    const uint32_t *hit = cached_mask(c, state, n_allowed);
    if (hit) {
        *bits = hit;
        return PLUMB_OK;
    }
    uint32_t slot = 0;
    plumb_status st = mask_slot(c, state, &slot);
    if (st) return st;
    uint32_t *m = c->masks + (size_t)slot * c->words;
    memset(m, 0, (size_t)c->words * 4);
    if ((st = walk(c, state, m, &c->counts[slot]))) {
        forget_masks(c); /* the slot is half written */
        return st;
    }
    *n_allowed = c->counts[slot];
    *bits = m;
    return PLUMB_OK;
}

plumb_status plumb_constraint_accept_bytes(plumb_constraint_t *c, uint32_t state, const char *b, size_t n,
                                           uint32_t *next) {
    if (!c || !next || (!b && n)) return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: no constraint");
    uint32_t s = state;
    for (size_t i = 0; i < n && s != GM_DEAD; i++) {
        plumb_status st = plumb__gm_step(c->m, s, (uint8_t)b[i], &s);
        if (st) return st;
    }
    if (s == GM_DEAD) return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: the text does not continue the grammar");
    *next = s;
    return PLUMB_OK;
}

plumb_status plumb_constraint_accept(plumb_constraint_t *c, uint32_t state, int32_t tok, uint32_t *next) {
    if (!c || !next) return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: no constraint");
    const plumb_token_index_t *ti = c->ti;
    if (tok < 0 || tok >= ti->n_vocab || ti->kind[tok] == 0)
        return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: token %d is never allowed by a grammar", tok);
    if (ti->kind[tok] == 2) {
        if (!plumb__gm_can_end(c->m, state))
            return plumb__fail(PLUMB_E_INVALID_ARG, "constraint: the grammar cannot end here (token %d ends generation)", tok);
        *next = state;
        return PLUMB_OK;
    }
    plumb_status st = plumb_constraint_accept_bytes(c, state, ti->pool + ti->piece_off[tok],
                                                    ti->piece_off[tok + 1] - ti->piece_off[tok], next);
    if (st == PLUMB_E_INVALID_ARG) return plumb__fail(st, "constraint: token %d does not continue the grammar", tok);
    return st;
}
