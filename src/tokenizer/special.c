/* special.c — splits input text at the texts of special tokens (control, user-defined and
 * unknown tokens) before the SPM or BPE tokenizer sees it.
 *
 * llama.cpp's rule: take the special tokens longest text first; for each, claim every
 * occurrence (left to right, not overlapping) that lies wholly in text not yet claimed.
 * Scanning the text once per special token would cost (number of specials) x (text length);
 * here every position instead gets its longest matching special as a candidate in a heap
 * ordered by (length descending, position ascending), which visits the candidates in the
 * same order. A candidate whose span is already partly claimed falls back to the longest
 * shorter special at its position that still fits. Because every claim made before a
 * candidate is at least as long as it, the span [p, p+L) is free exactly when its first
 * and last bytes are, which keeps each check O(1). (Specials of equal length that overlap
 * each other are taken left to right; llama.cpp's order for that case is unspecified.) */
#include "tokenizer/tokenizer.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

typedef struct cand {
    uint32_t len, pos;
    int32_t id;
} cand;

/* Heap order: longer first, then leftmost. */
static bool before(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return a->len > b->len || (a->len == b->len && a->pos < b->pos);
}

static uint8_t special_byte(const plumb_vocab_t *v, int32_t k, size_t d) {
    return (uint8_t)v->text[v->off[v->special[k]] + d];
}

static uint32_t special_len(const plumb_vocab_t *v, int32_t k) {
    int32_t id = v->special[k];
    return v->off[id + 1] - v->off[id] - 1;
}

/* Where control tokens may be recognized: nowhere, everywhere, or inside marks. */
typedef struct control_scope {
    bool parse_special;
    const plumb_span *marks; /* NULL: everywhere (when parse_special) */
    size_t n_marks;
} control_scope;

/* Whether [p, p+len) lies inside one mark (binary search over the sorted marks). */
static bool in_marks(const control_scope *sc, size_t p, size_t len) {
    size_t lo = 0, hi = sc->n_marks;
    while (lo < hi) { /* first mark ending after p */
        size_t m = lo + (hi - lo) / 2;
        if (sc->marks[m].off + sc->marks[m].len <= p) lo = m + 1;
        else hi = m;
    }
    return lo < sc->n_marks && sc->marks[lo].off <= p && p + len <= sc->marks[lo].off + sc->marks[lo].len;
}

/* The longest special token, of at most maxlen bytes, whose text starts text[p..]; its
 * length (0 when none) and id. Outside the scope only user-defined tokens count. */
static uint32_t longest_at(const plumb_vocab_t *v, const uint8_t *text, size_t p, size_t maxlen,
                           const control_scope *sc, int32_t *id) {
    int32_t lo = v->first[text[p]], hi = v->first[text[p] + 1];
    uint32_t best = 0;
    for (size_t d = 1; lo < hi; d++) {
        /* [lo, hi) are the specials starting with text[p .. p+d); the shortest sorts first. */
        if (special_len(v, lo) == d) {
            int32_t tid = v->special[lo];
            if (!(v->attr[tid] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)) ||
                (sc->parse_special && (!sc->marks || in_marks(sc, p, d)))) {
                best = (uint32_t)d;
                *id = tid;
            }
            lo++;
        }
        if (lo >= hi || d >= maxlen) break;
        uint8_t c = text[p + d];
        int32_t a = lo, b = hi; /* first entry with byte d >= c */
        while (a < b) {
            int32_t m = a + (b - a) / 2;
            if (special_byte(v, m, d) < c) a = m + 1;
            else b = m;
        }
        int32_t e = a, f = hi; /* first entry with byte d > c */
        while (e < f) {
            int32_t m = e + (f - e) / 2;
            if (special_byte(v, m, d) <= c) e = m + 1;
            else f = m;
        }
        lo = a, hi = e;
    }
    return best;
}

/* C's isspace in the "C" locale, which the reference's strip uses. */
static bool is_c_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static int cmp_claim(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

plumb_status plumb__tok_split_special(const plumb_vocab_t *v, const char *text, size_t len, bool parse_special,
                                      const plumb_span *marks, size_t n_marks, tok_frag **frags, size_t *n_frags) {
    const control_scope sc = {parse_special, marks, n_marks};
    *frags = NULL;
    *n_frags = 0;
    if (len == 0) return PLUMB_OK;
    const uint8_t *t = (const uint8_t *)text;

    uint8_t *claimed = NULL;
    cand *heap = NULL, *claims = NULL;
    size_t n_heap = 0, n_claims = 0, n_cand = 0;
    plumb_status st = PLUMB_OK;

    /* First pass: count positions that start some special, to size the arrays. */
    if (v->n_special > 0) {
        for (size_t p = 0; p < len; p++)
            if (v->first[t[p]] != v->first[t[p] + 1]) n_cand++;
    }
    if (n_cand > 0) {
        claimed = calloc(len, 1);
        heap = malloc(n_cand * sizeof *heap);
        claims = malloc(n_cand * sizeof *claims);
        if (!claimed || !heap || !claims) {
            st = plumb__fail(PLUMB_E_NOMEM, "tokenize: out of memory");
            goto done;
        }
        for (size_t p = 0; p < len; p++) {
            if (v->first[t[p]] == v->first[t[p] + 1]) continue;
            int32_t id = -1;
            uint32_t l = longest_at(v, t, p, len - p, &sc, &id);
            if (l) tok_heap_push(heap, &n_heap, sizeof(cand), before, &(cand){l, (uint32_t)p, id});
        }
        while (n_heap > 0) {
            cand c;
            tok_heap_pop(heap, &n_heap, sizeof c, before, &c);
            if (claimed[c.pos]) continue; /* nothing starting here can fit any more */
            if (!claimed[c.pos + c.len - 1]) {
                memset(claimed + c.pos, 1, c.len);
                claims[n_claims++] = c;
                continue;
            }
            size_t q = c.pos + 1;
            while (!claimed[q]) q++;
            int32_t id = -1;
            uint32_t l = longest_at(v, t, c.pos, q - c.pos, &sc, &id);
            if (l) tok_heap_push(heap, &n_heap, sizeof(cand), before, &(cand){l, c.pos, id});
        }
        qsort(claims, n_claims, sizeof *claims, cmp_claim);
    }

    /* Fragments: the raw text between claims, and the claims. */
    tok_frag *f = malloc((2 * n_claims + 1) * sizeof *f);
    if (!f) {
        st = plumb__fail(PLUMB_E_NOMEM, "tokenize: out of memory");
        goto done;
    }
    size_t nf = 0, at = 0;
    for (size_t i = 0; i < n_claims; i++) {
        if (claims[i].pos > at) f[nf++] = (tok_frag){at, claims[i].pos - at, -1};
        f[nf++] = (tok_frag){claims[i].pos, claims[i].len, claims[i].id};
        at = claims[i].pos + claims[i].len;
        if (v->attr[claims[i].id] & TOK_ATTR_RSTRIP) /* the whitespace after it, up to the next claim */
            while (at < len && (i + 1 == n_claims || at < claims[i + 1].pos) && is_c_space(t[at])) at++;
    }
    if (at < len) f[nf++] = (tok_frag){at, len - at, -1};
    *frags = f;
    *n_frags = nf;
done:
    free(claimed);
    free(heap);
    free(claims);
    return st;
}
