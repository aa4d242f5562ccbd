/* matcher.c — pushdown matching of a grammar program, one byte at a time (see grammar.h).
 *
 * Stacks are hash-consed nodes (pos, parent); a parse state is a hash-consed sorted set of
 * stacks whose tops are byte sets (or the empty stack). Stepping a state on a byte advances
 * each stack whose top holds the byte and expands the result until every top is a byte set
 * again: a reference pushes its rule's alternatives (its continuation dropped when the
 * reference ends its alternative, so right recursion keeps the stack flat), and the end of an
 * alternative pops. Steps are memoized per (state, byte), so matching the same text twice,
 * or tokens that share a prefix, costs one table lookup per byte; a state stepped from often
 * (inside a JSON string, most bytes lead back to it) gets a row of all 256 steps, so the trie
 * walks of constraint.c find its steps without hashing. */
#include "core/error.h"
#include "grammar/grammar.h"

#include <stdlib.h>
#include <string.h>

struct gm {
    const plumb_grammar_t *g;
    size_t max_mem;

    /* nodes: node 0 is the empty stack */
    uint32_t *npos, *npar, *stamp;
    uint32_t n_nodes, cap_nodes;
    uint32_t *nhash; /* node id, 0 empty (node 0 is never looked up) */
    uint32_t nhash_cap;
    uint32_t epoch;

    /* states: state 0 is the empty set */
    uint32_t *soff, *slen;
    uint32_t **row;  /* [cap_states] the steps of a busy state by byte (GM_UNKNOWN: not yet), or NULL */
    uint16_t *hits;  /* [cap_states] table lookups from the state, until it gets a row */
    uint32_t n_states, cap_states, n_rows;
    uint32_t *spool;
    size_t spool_n, spool_cap;
    uint32_t *shash; /* state id + 1, 0 empty */
    uint32_t shash_cap;

    /* steps: key (state << 8 | byte) + 1, 0 empty */
    uint64_t *tkey;
    uint32_t *tval;
    size_t tn, tcap;

    /* scratch */
    uint32_t *work, *out;
    size_t work_n, work_cap, out_n, out_cap;
    bool out_end, out_ctx;
};

#define GM_UNKNOWN UINT32_MAX
#define GM_ROW_AFTER 32 /* lookups from a state before it gets a row */

static size_t memory(const gm *m) {
    return (size_t)m->cap_nodes * 12 + (size_t)m->nhash_cap * 4 + (size_t)m->cap_states * 18 + (size_t)m->n_rows * 1024 +
           m->spool_cap * 4 +
           (size_t)m->shash_cap * 4 + m->tcap * 12 + (m->work_cap + m->out_cap) * 4;
}

size_t plumb__gm_memory(const gm *m) { return memory(m); }

static plumb_status over(const gm *m) {
    return plumb__fail(PLUMB_E_RANGE, "grammar: matching needs more than %zu MiB of parse tables", m->max_mem >> 20);
}

/* Grows *v (of *cap elements of size sz) to hold need, within the memory cap. */
static plumb_status grow_to(gm *m, void **v, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return PLUMB_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    if (memory(m) + (c - *cap) * sz > m->max_mem) return over(m);
    void *g = realloc(*v, c * sz);
    if (!g) return plumb__fail(PLUMB_E_NOMEM, "grammar: out of memory");
    *v = g;
    *cap = c;
    return PLUMB_OK;
}

static plumb_status grow32(gm *m, void **v, uint32_t *cap, size_t need, size_t sz) {
    size_t c = *cap;
    plumb_status st = grow_to(m, v, &c, need, sz);
    if (!st && c > UINT32_MAX) return over(m);
    *cap = (uint32_t)c;
    return st;
}

static inline uint32_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* ---- nodes ------------------------------------------------------------------------------- */

static plumb_status node_rehash(gm *m) {
    uint32_t cap = m->nhash_cap ? m->nhash_cap * 2 : 1024;
    if (memory(m) + (size_t)cap * 4 > m->max_mem) return over(m);
    uint32_t *h = calloc(cap, sizeof *h);
    if (!h) return plumb__fail(PLUMB_E_NOMEM, "grammar: out of memory");
    for (uint32_t n = 2; n < m->n_nodes; n++) { /* nodes 0 and GM_CTX are never looked up */
        uint32_t k = mix((uint64_t)m->npos[n] << 32 | m->npar[n]) & (cap - 1);
        while (h[k]) k = (k + 1) & (cap - 1);
        h[k] = n;
    }
    free(m->nhash);
    m->nhash = h;
    m->nhash_cap = cap;
    return PLUMB_OK;
}

/* The node (pos, parent), made when new. */
static plumb_status node(gm *m, uint32_t pos, uint32_t parent, uint32_t *id) {
    if ((size_t)m->n_nodes * 2 >= m->nhash_cap) {
        plumb_status st = node_rehash(m);
        if (st) return st;
    }
    uint32_t k = mix((uint64_t)pos << 32 | parent) & (m->nhash_cap - 1);
    for (; m->nhash[k]; k = (k + 1) & (m->nhash_cap - 1)) {
        uint32_t n = m->nhash[k];
        if (m->npos[n] == pos && m->npar[n] == parent) {
            *id = n;
            return PLUMB_OK;
        }
    }
    if (m->n_nodes == m->cap_nodes) {
        uint32_t c = m->cap_nodes;
        plumb_status st = grow32(m, (void **)&m->npos, &c, (size_t)m->n_nodes + 1, 4);
        if (!st) c = m->cap_nodes, st = grow32(m, (void **)&m->npar, &c, (size_t)m->n_nodes + 1, 4);
        if (!st) c = m->cap_nodes, st = grow32(m, (void **)&m->stamp, &c, (size_t)m->n_nodes + 1, 4);
        if (st) return st;
        m->cap_nodes = c;
    }
    const uint32_t n = m->n_nodes++;
    m->npos[n] = pos, m->npar[n] = parent, m->stamp[n] = 0;
    m->nhash[k] = n;
    *id = n;
    return PLUMB_OK;
}

/* ---- expansion --------------------------------------------------------------------------- */

static plumb_status work_push(gm *m, uint32_t n) {
    if (m->work_n == m->work_cap) {
        plumb_status st = grow_to(m, (void **)&m->work, &m->work_cap, m->work_n + 1, 4);
        if (st) return st;
    }
    m->work[m->work_n++] = n;
    return PLUMB_OK;
}

/* Expands the stacks on the work list until their tops are byte sets, adding those (and the
 * empty stack) to out once each (stamped with the current epoch). */
static plumb_status expand(gm *m) {
    const plumb_grammar_t *g = m->g;
    while (m->work_n) {
        const uint32_t n = m->work[--m->work_n];
        if (n == 0 || n == GM_CTX) {
            if (n == 0) m->out_end = true;
            else m->out_ctx = true;
            continue;
        }
        if (m->stamp[n] == m->epoch) continue;
        m->stamp[n] = m->epoch;
        const uint32_t pos = m->npos[n], par = m->npar[n];
        const gr_elem e = g->elems[pos];
        plumb_status st = PLUMB_OK;
        if (e.kind == GR_BYTES) {
            if (m->out_n == m->out_cap && (st = grow_to(m, (void **)&m->out, &m->out_cap, m->out_n + 1, 4))) return st;
            m->out[m->out_n++] = n;
        } else if (e.kind == GR_END) {
            st = work_push(m, par);
        } else {
            uint32_t cont = par;
            if (g->elems[pos + 1].kind != GR_END && (st = node(m, pos + 1, par, &cont))) return st;
            for (uint32_t a = g->rule_alt[e.arg]; a < g->rule_alt[e.arg + 1] && !st; a++) {
                const uint32_t at = g->alt_start[a];
                uint32_t c = cont;
                if (g->elems[at].kind != GR_END) st = node(m, at, cont, &c);
                if (!st) st = work_push(m, c);
            }
        }
        if (st) return st;
    }
    return PLUMB_OK;
}

static void next_epoch(gm *m) {
    if (++m->epoch == 0) { /* wrapped: clear the stamps */
        memset(m->stamp, 0, (size_t)m->n_nodes * sizeof *m->stamp);
        m->epoch = 1;
    }
    m->out_n = 0;
    m->out_end = m->out_ctx = false;
    m->work_n = 0; /* a step that failed part way may have left work behind */
}

/* ---- states ------------------------------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t state_hash(const uint32_t *v, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < n; i++) h = (h ^ v[i]) * 0x100000001B3ull;
    return mix(h);
}

static plumb_status state_rehash(gm *m) {
    uint32_t cap = m->shash_cap ? m->shash_cap * 2 : 1024;
    if (memory(m) + (size_t)cap * 4 > m->max_mem) return over(m);
    uint32_t *h = calloc(cap, sizeof *h);
    if (!h) return plumb__fail(PLUMB_E_NOMEM, "grammar: out of memory");
    for (uint32_t s = 1; s < m->n_states; s++) {
        uint32_t k = state_hash(m->spool + m->soff[s], m->slen[s]) & (cap - 1);
        while (h[k]) k = (k + 1) & (cap - 1);
        h[k] = s + 1;
    }
    free(m->shash);
    m->shash = h;
    m->shash_cap = cap;
    return PLUMB_OK;
}

/* The state holding out[0..out_n) (and the empty stack when out_end): sorted, then looked
 * up or added. */
static plumb_status intern(gm *m, uint32_t *id) {
    if (m->out_end || m->out_ctx) { /* nodes 0 and GM_CTX sort first */
        plumb_status st = grow_to(m, (void **)&m->out, &m->out_cap, m->out_n + 2, 4);
        if (st) return st;
        if (m->out_end) m->out[m->out_n++] = 0;
        if (m->out_ctx) m->out[m->out_n++] = GM_CTX;
    }
    if (m->out_n == 0) {
        *id = GM_DEAD;
        return PLUMB_OK;
    }
    qsort(m->out, m->out_n, sizeof *m->out, cmp_u32);
    if ((size_t)m->n_states * 2 >= m->shash_cap) {
        plumb_status st = state_rehash(m);
        if (st) return st;
    }
    uint32_t k = state_hash(m->out, m->out_n) & (m->shash_cap - 1);
    for (; m->shash[k]; k = (k + 1) & (m->shash_cap - 1)) {
        uint32_t s = m->shash[k] - 1;
        if (m->slen[s] == m->out_n && !memcmp(m->spool + m->soff[s], m->out, m->out_n * sizeof *m->out)) {
            *id = s;
            return PLUMB_OK;
        }
    }
    plumb_status st = grow_to(m, (void **)&m->spool, &m->spool_cap, m->spool_n + m->out_n, 4);
    if (!st && m->n_states == m->cap_states) {
        uint32_t c = m->cap_states;
        st = grow32(m, (void **)&m->soff, &c, (size_t)m->n_states + 1, 4);
        if (!st) c = m->cap_states, st = grow32(m, (void **)&m->slen, &c, (size_t)m->n_states + 1, 4);
        if (!st) c = m->cap_states, st = grow32(m, (void **)&m->row, &c, (size_t)m->n_states + 1, sizeof *m->row);
        if (!st) c = m->cap_states, st = grow32(m, (void **)&m->hits, &c, (size_t)m->n_states + 1, 2);
        if (!st) m->cap_states = c;
    }
    if (st) return st;
    const uint32_t s = m->n_states++;
    m->soff[s] = (uint32_t)m->spool_n, m->slen[s] = (uint32_t)m->out_n;
    m->row[s] = NULL, m->hits[s] = 0;
    memcpy(m->spool + m->spool_n, m->out, m->out_n * sizeof *m->out);
    m->spool_n += m->out_n;
    m->shash[k] = s + 1;
    *id = s;
    return PLUMB_OK;
}

/* ---- steps ------------------------------------------------------------------------------- */

static plumb_status step_rehash(gm *m) {
    size_t cap = m->tcap ? m->tcap * 2 : 4096;
    if (memory(m) + (cap - m->tcap) * 12 > m->max_mem) return over(m);
    uint64_t *k2 = calloc(cap, sizeof *k2);
    uint32_t *v2 = malloc(cap * sizeof *v2);
    if (!k2 || !v2) {
        free(k2), free(v2);
        return plumb__fail(PLUMB_E_NOMEM, "grammar: out of memory");
    }
    for (size_t i = 0; i < m->tcap; i++)
        if (m->tkey[i]) {
            size_t k = mix(m->tkey[i]) & (cap - 1);
            while (k2[k]) k = (k + 1) & (cap - 1);
            k2[k] = m->tkey[i], v2[k] = m->tval[i];
        }
    free(m->tkey), free(m->tval);
    m->tkey = k2, m->tval = v2, m->tcap = cap;
    return PLUMB_OK;
}

plumb_status plumb__gm_step(gm *m, uint32_t s, uint8_t b, uint32_t *next) {
    if (s == GM_DEAD) {
        *next = GM_DEAD;
        return PLUMB_OK;
    }
    if (s >= m->n_states) return plumb__fail(PLUMB_E_INVALID_ARG, "grammar: no parse state %u", s);
    if (m->row[s] && m->row[s][b] != GM_UNKNOWN) {
        *next = m->row[s][b];
        return PLUMB_OK;
    }
    const uint64_t key = ((uint64_t)s << 8 | b) + 1;
    if (m->tcap) {
        for (size_t k = mix(key) & (m->tcap - 1); m->tkey[k]; k = (k + 1) & (m->tcap - 1))
            if (m->tkey[k] == key) {
                *next = m->tval[k];
                if (m->row[s]) m->row[s][b] = *next;
                else if (++m->hits[s] == GM_ROW_AFTER && memory(m) + 1024 <= m->max_mem &&
                         (m->row[s] = malloc(256 * sizeof **m->row))) {
                    memset(m->row[s], 0xFF, 256 * sizeof **m->row); /* GM_UNKNOWN */
                    m->row[s][b] = *next;
                    m->n_rows++;
                }
                return PLUMB_OK;
            }
    }
    const plumb_grammar_t *g = m->g;
    next_epoch(m);
    plumb_status st = PLUMB_OK;
    for (uint32_t i = 0; i < m->slen[s] && !st; i++) {
        const uint32_t n = m->spool[m->soff[s] + i];
        if (n == 0 || n == GM_CTX) continue;
        const uint32_t pos = m->npos[n];
        if (!gr_set_has(g, g->elems[pos].arg, b)) continue;
        uint32_t c = m->npar[n];
        if (g->elems[pos + 1].kind != GR_END) st = node(m, pos + 1, m->npar[n], &c);
        if (!st) st = work_push(m, c);
        if (!st) st = expand(m);
    }
    /* the spool may have moved while expanding: nothing above holds pointers into it */
    uint32_t id = GM_DEAD;
    if (!st) st = intern(m, &id);
    if (!st && (m->tn + 1) * 2 > m->tcap) st = step_rehash(m);
    if (st) return st;
    size_t k = mix(key) & (m->tcap - 1);
    while (m->tkey[k]) k = (k + 1) & (m->tcap - 1);
    m->tkey[k] = key, m->tval[k] = id;
    m->tn++;
    if (m->row[s]) m->row[s][b] = id;
    *next = id;
    return PLUMB_OK;
}

plumb_status plumb__gm_truncate(gm *m, uint32_t n, int frames, uint32_t *state) {
    uint32_t pos[8], k = 0, below = n;
    if (frames > 8) frames = 8;
    while (below > GM_CTX && k < (uint32_t)frames) pos[k++] = m->npos[below], below = m->npar[below];
    uint32_t cur = below == 0 ? 0 : GM_CTX; /* the whole stack when it ends within the frames */
    plumb_status st = PLUMB_OK;
    while (k-- && !st) st = node(m, pos[k], cur, &cur);
    if (st) return st;
    next_epoch(m);
    if ((st = grow_to(m, (void **)&m->out, &m->out_cap, 1, 4))) return st;
    m->out[m->out_n++] = cur;
    return intern(m, state);
}

plumb_status plumb__gm_state_nodes(const gm *m, uint32_t s, const uint32_t **nodes, uint32_t *n) {
    *nodes = NULL;
    *n = 0;
    if (s >= m->n_states) return plumb__fail(PLUMB_E_INVALID_ARG, "grammar: no parse state %u", s);
    if (s == GM_DEAD) return PLUMB_OK;
    *nodes = m->spool + m->soff[s];
    *n = m->slen[s];
    return PLUMB_OK;
}

/* Whether state s holds GM_CTX / a stack other than GM_CTX. */
static bool has_ctx(const gm *m, uint32_t s) {
    const uint32_t *v = m->spool + m->soff[s];
    return m->slen[s] && (v[0] == GM_CTX || (m->slen[s] > 1 && v[1] == GM_CTX));
}
static bool has_stack(const gm *m, uint32_t s) { return m->slen[s] > (uint32_t)has_ctx(m, s); }

plumb_status plumb__gm_walk_cut(gm *m, uint32_t t, const uint8_t *byte, const uint16_t *depth, const uint32_t *skip,
                                const uint16_t *has_end, uint32_t n_nodes, uint32_t *walk, uint8_t *ctx,
                                uint32_t *acc, uint32_t *n_acc, uint32_t *unc, uint32_t *n_unc, uint32_t *unc_range,
                                uint32_t *n_range) {
    *n_acc = *n_unc = *n_range = 0;
    if (t >= m->n_states || t == GM_DEAD) return plumb__fail(PLUMB_E_INVALID_ARG, "grammar: no parse state %u", t);
    walk[0] = t;
    ctx[0] = has_ctx(m, t);
    for (uint32_t i = 1; i < n_nodes;) {
        const uint32_t d = depth[i], from = walk[d - 1];
        const uint32_t *row = m->row[from];
        uint32_t next = row ? row[byte[i]] : GM_UNKNOWN;
        if (next == GM_UNKNOWN) {
            plumb_status st = plumb__gm_step(m, from, byte[i], &next);
            if (st) return st;
        }
        if (next == GM_DEAD) {
            if (ctx[d - 1]) unc_range[(*n_range)++] = i, unc_range[(*n_range)++] = skip[i];
            i = skip[i];
            continue;
        }
        walk[d] = next;
        ctx[d] = ctx[d - 1] || has_ctx(m, next);
        if (has_end[i]) {
            if (has_stack(m, next)) acc[(*n_acc)++] = i;
            else if (ctx[d]) unc[(*n_unc)++] = i;
        }
        i++;
    }
    return PLUMB_OK;
}

plumb_status plumb__gm_start(gm *m, uint32_t *state) {
    next_epoch(m);
    uint32_t n;
    plumb_status st = node(m, m->g->start, 0, &n);
    if (!st) st = work_push(m, n);
    if (!st) st = expand(m);
    if (!st) st = intern(m, state);
    return st;
}

bool plumb__gm_can_end(const gm *m, uint32_t s) {
    return s != GM_DEAD && s < m->n_states && m->spool[m->soff[s]] == 0;
}

bool plumb__gm_only_end(const gm *m, uint32_t s) { return plumb__gm_can_end(m, s) && m->slen[s] == 1; }

gm *plumb__gm_create(const plumb_grammar_t *g, size_t max_memory) {
    gm *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->g = g;
    m->max_mem = max_memory ? max_memory : (size_t)256 << 20;
    m->n_nodes = 2;  /* node 0: the empty stack; node 1: GM_CTX */
    m->n_states = 1; /* state 0: dead */
    m->epoch = 1;
    m->cap_nodes = 1024;
    m->npos = calloc(m->cap_nodes, 4), m->npar = calloc(m->cap_nodes, 4), m->stamp = calloc(m->cap_nodes, 4);
    m->cap_states = 256;
    m->soff = calloc(m->cap_states, 4), m->slen = calloc(m->cap_states, 4);
    m->row = calloc(m->cap_states, sizeof *m->row), m->hits = calloc(m->cap_states, 2);
    if (!m->npos || !m->npar || !m->stamp || !m->soff || !m->slen || !m->row || !m->hits) {
        plumb__gm_free(m);
        return NULL;
    }
    return m;
}

void plumb__gm_free(gm *m) {
    if (!m) return;
    free(m->npos), free(m->npar), free(m->stamp), free(m->nhash);
    for (uint32_t i = 0; m->row && i < m->n_states; i++) free(m->row[i]);
    free(m->row), free(m->hits);
    free(m->soff), free(m->slen), free(m->spool), free(m->shash);
    free(m->tkey), free(m->tval), free(m->work), free(m->out);
    free(m);
}

plumb_status plumb_grammar_match(const plumb_grammar_t *g, const char *text, size_t len, bool *viable, bool *complete) {
    if (!g || (!text && len)) return plumb__fail(PLUMB_E_INVALID_ARG, "grammar: no grammar or no text");
    gm *m = plumb__gm_create(g, 0);
    if (!m) return plumb__fail(PLUMB_E_NOMEM, "grammar: out of memory");
    uint32_t s;
    plumb_status st = plumb__gm_start(m, &s);
    for (size_t i = 0; i < len && !st && s != GM_DEAD; i++) st = plumb__gm_step(m, s, (uint8_t)text[i], &s);
    if (!st) {
        if (viable) *viable = s != GM_DEAD;
        if (complete) *complete = plumb__gm_can_end(m, s);
    }
    plumb__gm_free(m);
    return st;
}
