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
/* Walks a byte trie (nodes in depth-first order from the root, node 0: byte[i] on the edge
 * into node i, depth[i] its depth, skip[i] the first node after its subtree) from state s,
 * skipping every subtree whose prefix the grammar rejects: appends to out (room for n_nodes)
 * each node reached that has has_end[i] set, and sets *n_out. walk has room for the trie's
 * depth + 1 states. */
plumb_status plumb__gm_walk(gm *m, uint32_t s, const uint8_t *byte, const uint16_t *depth, const uint32_t *skip,
                            const uint16_t *has_end, uint32_t n_nodes, uint32_t *walk, uint32_t *out, uint32_t *n_out);
/* Bytes of memory the tables hold now. */
size_t plumb__gm_memory(const gm *m);

#endif
