/* tokenizer.h — internal pieces of the tokenizer module: the vocabulary struct, the token
 * text hash table, the special-token splitter, and the SPM and BPE tokenizers that
 * plumb_tokenize() (tokenize.c) dispatches to. Not installed. */
#ifndef PLUMB_TOKENIZER_H
#define PLUMB_TOKENIZER_H

#include "plumb.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Token attributes (one byte per token), from tokenizer.ggml.token_type plus what the loader
 * infers from token texts (end-of-generation tokens are forced to control). */
enum {
    TOK_ATTR_UNKNOWN = 1 << 0,
    TOK_ATTR_UNUSED = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
    TOK_ATTR_EOG = 1 << 6, /* ends generation (not a llama.cpp attribute) */
    TOK_ATTR_RSTRIP = 1 << 7, /* whitespace right after the special token is dropped */
};

/* BPE pre-tokenizers: which regex list splits the text into words. */
typedef enum tok_pre {
    TOK_PRE_DEFAULT = 0,
    TOK_PRE_LLAMA3,
    TOK_PRE_GPT2,
    TOK_PRE_QWEN2,
    TOK_PRE_SMOLLM,
} tok_pre;

#define TOK_MAX_REGEX 4

struct plumb_vocab {
    plumb_vocab_type type;
    tok_pre pre;
    int32_t n_tokens;

    /* Token texts, each NUL-terminated, packed in `text`; token i is
     * text[off[i] .. off[i+1]-1) (the last byte of each slot is the NUL). */
    char *text;
    uint32_t *off; /* [n_tokens + 1] */
    float *score;  /* [n_tokens] */
    uint8_t *attr; /* [n_tokens] TOK_ATTR_* */

    /* Open-addressing table text -> id: ids (or -1) and the text hashes of their slots. */
    int32_t *tab_id;
    uint32_t *tab_hash;
    uint32_t tab_mask;

    /* Special tokens (control, user-defined, unknown; non-empty, distinct texts) sorted by
     * text bytes, for the longest-match search; first[b]..first[b+1] are those starting with
     * byte b. */
    int32_t *special;
    int32_t n_special;
    int32_t first[257];

    /* SPM byte fallback: the token for each byte (<0xXX>, else the one-byte text), or -1. */
    int32_t byte_token[256];

    /* BPE merges "left right" -> rank: the merge strings packed like token texts, the split
     * position of each, and an open-addressing table of ranks. */
    char *merge_text;
    uint32_t *merge_off;   /* [n_merges + 1] */
    uint32_t *merge_split; /* [n_merges]: length of the left part */
    int32_t n_merges;
    int32_t *mtab_rank;
    uint32_t *mtab_hash;
    uint32_t mtab_mask;
    bool ignore_merges; /* llama3: a word that is itself a token is not merged */

    /* BPE pre-tokenizer regexes (pcre2_code *), applied in order. */
    void *regex[TOK_MAX_REGEX];
    int n_regex;

    int32_t bos, eos, eot, eom, unk, pad;
    int32_t fim[6]; /* fill-in-the-middle tokens by plumb_vocab_fim_kind, -1: none */
    bool add_bos, add_eos, add_space_prefix;
};

/* Token text of id (no bounds check). */
static inline const char *tok_text(const plumb_vocab_t *v, int32_t id, size_t *len) {
    *len = v->off[id + 1] - v->off[id] - 1;
    return v->text + v->off[id];
}

uint32_t plumb__tok_hash(const void *s, size_t len);
uint32_t plumb__tok_hash_pair(const void *a, size_t alen, const void *b, size_t blen);
/* id of the token whose text is s[0..len), or -1. */
int32_t plumb__tok_find(const plumb_vocab_t *v, const char *s, size_t len);
/* Rank of the merge (a, b), or -1. */
int32_t plumb__tok_merge_rank(const plumb_vocab_t *v, const char *a, size_t alen, const char *b, size_t blen);

/* Where tokenize output goes: ids are counted always, stored while they fit. */
typedef struct tok_out {
    int32_t *ids;
    size_t cap;
    size_t n;
} tok_out;

static inline void tok_emit(tok_out *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* A binary heap of elements of `size` bytes in heap[0..*n), with room for every push the
 * caller makes; pop takes out the first by before(a, b), "a comes out before b". The SPM and
 * BPE merge queues and the special-token candidates share it. Inline, and given the size
 * and comparator at each call, so that the compiler folds them in as constants. */
typedef bool (*tok_heap_before)(const void *a, const void *b);

static inline void tok_heap_push(void *heap, size_t *n, size_t size, tok_heap_before before, const void *elem) {
    char *h = heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(elem, h + parent * size)) break;
        memcpy(h + i * size, h + parent * size, size);
        i = parent;
    }
    memcpy(h + i * size, elem, size);
}

/* Removes the first element (*n must be > 0) into *top. */
static inline void tok_heap_pop(void *heap, size_t *n, size_t size, tok_heap_before before, void *top) {
    char *h = heap;
    memcpy(top, h, size);
    size_t m = --(*n);
    /* The last element sifts down from the root; its slot (index m) is now outside the heap,
     * so it stays put until copied into the hole where it settles. */
    const char *last = h + m * size;
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        const char *b = last;
        if (l < m && before(h + l * size, b)) best = l, b = h + l * size;
        if (l + 1 < m && before(h + (l + 1) * size, b)) best = l + 1;
        if (best == i) break;
        memcpy(h + i * size, h + best * size, size);
        i = best;
    }
    if (m) memcpy(h + i * size, last, size);
}

/* A piece of the input after special-token splitting: raw text or one special token. */
typedef struct tok_frag {
    size_t off, len; /* raw text: text[off .. off+len) */
    int32_t token;   /* -1 for raw text */
} tok_frag;

/* Splits text[0..len) at special-token texts (longest first, as llama.cpp does); with
 * parse_special false only user-defined tokens split, and with marks (non-NULL, sorted)
 * control tokens split only inside one. *frags is malloc'd (caller frees). */
plumb_status plumb__tok_split_special(const plumb_vocab_t *v, const char *text, size_t len, bool parse_special,
                                      const plumb_span *marks, size_t n_marks, tok_frag **frags, size_t *n_frags);

/* Tokenizes one raw fragment (already space-prefixed and escaped for SPM). */
plumb_status plumb__spm_tokenize(const plumb_vocab_t *v, const char *text, size_t len, tok_out *out);
plumb_status plumb__bpe_tokenize(const plumb_vocab_t *v, const char *text, size_t len, tok_out *out);

/* BPE setup and teardown of the pre-tokenizer regexes for v->pre. */
plumb_status plumb__bpe_init(plumb_vocab_t *v);
void plumb__bpe_free(plumb_vocab_t *v);

/* GPT-2 byte-level map: the code point standing for byte b, and the byte a code point stands
 * for (-1 when none). */
uint32_t plumb__bpe_byte_to_cp(uint8_t b);
int plumb__bpe_cp_to_byte(uint32_t cp);

/* Length of the UTF-8 sequence a lead byte announces (1 for ASCII, continuation and invalid
 * bytes, as llama.cpp counts). */
static inline size_t tok_utf8_len(uint8_t c) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

#endif
