/* spm.c — the SentencePiece (SPM) tokenizer for one piece of raw text (spaces already
 * written as U+2581): split into UTF-8 characters, then repeatedly merge the adjacent pair
 * whose concatenation is the token with the highest score (ties: leftmost), as llama.cpp's
 * llm_tokenizer_spm does. A final symbol that is not a token goes out as byte tokens. */
#include "tokenizer/tokenizer.h"

#include "core/error.h"

#include <stdlib.h>

typedef struct sym {
    int32_t prev, next;
    uint32_t start, n; /* text[start .. start+n); n 0 once merged into its left neighbour */
} sym;

typedef struct bigram {
    float score;
    int32_t left, right;
    uint32_t size;
} bigram;

/* Heap order: higher score first, then leftmost. */
static bool before(const void *pa, const void *pb) {
    const bigram *a = pa, *b = pb;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct spm_state {
    const plumb_vocab_t *v;
    const char *text;
    sym *syms;
    bigram *heap;
    size_t n_heap, cap_heap;
    bool nomem;
} spm_state;

static void try_bigram(spm_state *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    uint32_t start = s->syms[left].start;
    uint32_t size = s->syms[left].n + s->syms[right].n;
    int32_t id = plumb__tok_find(s->v, s->text + start, size);
    if (id < 0) return;
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap * 2;
        bigram *h = realloc(s->heap, cap * sizeof *h);
        if (!h) {
            s->nomem = true;
            return;
        }
        s->heap = h;
        s->cap_heap = cap;
    }
    tok_heap_push(s->heap, &s->n_heap, sizeof(bigram), before, &(bigram){s->v->score[id], left, right, size});
}

plumb_status plumb__spm_tokenize(const plumb_vocab_t *v, const char *text, size_t len, tok_out *out) {
    if (len == 0) return PLUMB_OK;
    spm_state s = {v, text, malloc(len * sizeof(sym)), malloc(len * sizeof(bigram)), 0, len, false};
    if (!s.syms || !s.heap) {
        free(s.syms);
        free(s.heap);
        return plumb__fail(PLUMB_E_NOMEM, "tokenize: out of memory");
    }
    int32_t n = 0;
    for (size_t off = 0; off < len;) {
        size_t cl = tok_utf8_len((uint8_t)text[off]);
        if (cl > len - off) cl = len - off;
        s.syms[n] = (sym){n - 1, off + cl == len ? -1 : n + 1, (uint32_t)off, (uint32_t)cl};
        off += cl;
        n++;
    }
    for (int32_t i = 1; i < n; i++) try_bigram(&s, i - 1, i);

    while (s.n_heap > 0) {
        bigram b;
        tok_heap_pop(s.heap, &s.n_heap, sizeof b, before, &b);
        sym *l = &s.syms[b.left], *r = &s.syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s.syms[r->next].prev = b.left;
        try_bigram(&s, l->prev, b.left);
        try_bigram(&s, b.left, l->next);
    }

    if (s.nomem) {
        free(s.syms);
        free(s.heap);
        return plumb__fail(PLUMB_E_NOMEM, "tokenize: out of memory");
    }
    for (int32_t i = 0; i != -1; i = s.syms[i].next) {
        const sym *y = &s.syms[i];
        int32_t id = plumb__tok_find(v, text + y->start, y->n);
        if (id >= 0) {
            tok_emit(out, id);
            continue;
        }
        /* Not a token (a merge always makes one, so a single character): its bytes. */
        for (uint32_t j = 0; j < y->n; j++) {
            int32_t bt = v->byte_token[(uint8_t)text[y->start + j]];
            if (bt < 0) bt = v->unk;
            if (bt >= 0) tok_emit(out, bt);
        }
    }
    free(s.syms);
    free(s.heap);
    return PLUMB_OK;
}
