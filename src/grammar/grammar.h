/* grammar.h — internals of src/grammar/: the byte-level program a GBNF grammar compiles to
 * (gbnf.c), the pushdown matcher over it (matcher.c) and the vocabulary-bound constraint
 * (constraint.c).
 *
 * The program works on bytes, not characters: a character class over code points becomes a
 * rule whose alternatives are the UTF-8 byte sequences of its ranges, so a token that holds
 * part of a character is matched exactly as far as it goes. Each rule is a list of
 * alternatives; each alternative a sequence of elements ending with GR_END; an element is a
 * set of bytes (GR_BYTES) or a reference to a rule (GR_REF). Repetitions and groups are
 * helper rules. No rule can reach itself without consuming a byte (left recursion is refused
 * when parsing), so expanding references always ends. */
#ifndef PLUMB_GRAMMAR_GRAMMAR_H
#define PLUMB_GRAMMAR_GRAMMAR_H

#include "plumb.h"

enum { GR_END = 0, GR_BYTES = 1, GR_REF = 2 };

typedef struct gr_elem {
    uint32_t kind; /* GR_END, GR_BYTES, GR_REF */
    uint32_t arg;  /* byte set index (GR_BYTES) or rule index (GR_REF) */
} gr_elem;

struct plumb_grammar {
    gr_elem *elems;      /* every alternative, each ended by GR_END */
    uint32_t n_elems;
    uint32_t *alt_start; /* [n_alts] index of an alternative's first element */
    uint32_t n_alts;
    uint32_t *rule_alt;  /* [n_rules + 1] rule r's alternatives are rule_alt[r] .. rule_alt[r + 1] - 1 */
    uint32_t n_rules;
    uint64_t (*sets)[4]; /* [n_sets] 256-bit byte sets */
    uint32_t n_sets;
    uint32_t start;      /* the element of the start alternative: [REF root, END] */
};

static inline bool gr_set_has(const plumb_grammar_t *g, uint32_t set, uint8_t b) {
    return g->sets[set][b >> 6] >> (b & 63) & 1;
}

/* ---- matcher.c: pushdown stacks over a program ---------------------------------------
 * A stack is a node: (pos, parent), pos the element to go on at, parent the rest of the
 * stack; node 0 is the empty stack (the grammar is complete). Nodes are hash-consed, so a
 * node id names a whole stack. A parse state is a set of stacks whose tops are GR_BYTES
 * elements (or node 0), also hash-consed: state 0 is the empty set (nothing can follow),
 * and a state id names the whole set. Steps from a state on a byte are memoized. */
#define GM_DEAD 0u

typedef struct gm gm;

/* NULL when out of memory. max_memory bounds the matcher's tables (0: 256 MiB). */
gm *plumb__gm_create(const plumb_grammar_t *g, size_t max_memory);
void plumb__gm_free(gm *m);
/* The state before any byte. PLUMB_E_RANGE when the tables would pass max_memory. */
plumb_status plumb__gm_start(gm *m, uint32_t *state);
/* The state after byte b from state s (GM_DEAD when b cannot come next). */
plumb_status plumb__gm_step(gm *m, uint32_t s, uint8_t b, uint32_t *next);
/* Whether state s may end the text here (holds the empty stack). */
bool plumb__gm_can_end(const gm *m, uint32_t s);
/* Whether only the end may follow (s holds the empty stack and nothing else). */
bool plumb__gm_only_end(const gm *m, uint32_t s);
/* ---- context-independent masks (constraint.c) -------------------------------------------
 * Node 1 (GM_CTX) stands for "the rest of the stack, unknown": a state of stacks cut to their
 * top frames with GM_CTX below tells which tokens stay inside those frames (allowed whatever
 * lies below) and which reach GM_CTX (to be checked against the real stack). Stepping skips
 * GM_CTX; a state holds it where a stack popped into it. */
#define GM_CTX 1u

/* The state holding the stack `node` cut to its top `frames` frames, GM_CTX below (or the
 * whole stack when it is that short). */
plumb_status plumb__gm_truncate(gm *m, uint32_t node, int frames, uint32_t *state);
/* The nodes of state s (borrowed until the next call on m). PLUMB_E_INVALID_ARG for a state
 * the matcher never made. */
plumb_status plumb__gm_state_nodes(const gm *m, uint32_t s, const uint32_t **nodes, uint32_t *n);
/* Walks a byte trie (nodes in depth-first order from the root, node 0: byte[i] on the edge
 * into node i, depth[i] its depth, skip[i] the first node after its subtree) from a cut state
 * t, skipping every subtree whose prefix the grammar rejects (walk, ctx: room for the trie's
 * depth + 1 entries): acc gets the nodes with tokens that stay inside t's frames (allowed
 * below any stack), unc the nodes with tokens that reached GM_CTX on the way (they depend on
 * the stack below), and unc_range [from, to) pairs of whole subtrees that reached GM_CTX and
 * then died (their tokens depend on it too). acc and unc have room for n_nodes entries,
 * unc_range for 2 n_nodes. */
plumb_status plumb__gm_walk_cut(gm *m, uint32_t t, const uint8_t *byte, const uint16_t *depth, const uint32_t *skip,
                                const uint16_t *has_end, uint32_t n_nodes, uint32_t *walk, uint8_t *ctx,
                                uint32_t *acc, uint32_t *n_acc, uint32_t *unc, uint32_t *n_unc, uint32_t *unc_range,
                                uint32_t *n_range);
/* Bytes of memory the tables hold now. */
size_t plumb__gm_memory(const gm *m);

#endif
