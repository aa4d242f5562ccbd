/* bpe.c — the byte-level BPE tokenizer (tokenizer.ggml.model "gpt2") for one piece of raw
 * text, as llama.cpp's llm_tokenizer_bpe does it:
 *   1. decode the bytes as UTF-8 leniently (a byte that starts no valid sequence becomes
 *      U+FFFD) and re-encode them canonically;
 *   2. split the text into words with the pre-tokenizer's regexes (PCRE2), each regex
 *      splitting the pieces the previous one left: both its matches and the text between
 *      them become pieces;
 *   3. write each word's bytes as GPT-2 byte-level code points, then merge adjacent symbols
 *      by merge rank (lowest first, ties leftmost). With ignore_merges (llama3) a word that
 *      is itself a token is emitted whole. A final symbol that is not a token goes out as the
 *      one-byte tokens of its bytes, where those exist.
 * The regexes are llama.cpp's (written out with an explicit White_Space class, the set
 * llama.cpp's own splitters use for \s). */
#include "tokenizer/tokenizer.h"

#include "core/error.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdlib.h>
#include <string.h>

/* ---- the GPT-2 byte map ---------------------------------------------------------------------
 * Printable bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand for themselves; the other 68 bytes, in
 * order, take the code points U+0100 .. U+0143. */

static bool byte_is_self(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

uint32_t plumb__bpe_byte_to_cp(uint8_t b) {
    if (byte_is_self(b)) return b;
    if (b <= 0x20) return 256u + b;              /* 0x00..0x20 -> 0..32 */
    if (b <= 0xA0) return 256u + 33 + (b - 0x7F); /* 0x7F..0xA0 -> 33..66 */
    return 256u + 67;                             /* 0xAD */
}

int plumb__bpe_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_self(cp) ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(cp - 256 - 33 + 0x7F);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

/* ---- pre-tokenizer regexes ------------------------------------------------------------------ */

#define WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

#define CONTRACTIONS_ANYCASE "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

static const char RE_LLAMA3[] = CONTRACTIONS_ANYCASE "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^" WS
                                                     "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS
                                                     "])|[" WS "]+";
static const char RE_QWEN2[] = CONTRACTIONS_ANYCASE "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^" WS
                                                    "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS
                                                    "])|[" WS "]+";
static const char RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS
                              "])";
static const char RE_DIGIT[] = "\\p{N}";
static const char RE_DIGITS[] = "\\p{N}+";
static const char RE_PUNCT[] = "[\\p{P}\\$\\+<=>\\^~\\|]+";
static const char RE_THREE_DIGITS[] = "[0-9][0-9][0-9]";

plumb_status plumb__bpe_init(plumb_vocab_t *v) {
    const char *list[TOK_MAX_REGEX];
    int n = 0;
    switch (v->pre) {
    case TOK_PRE_LLAMA3: list[n++] = RE_LLAMA3; break;
    case TOK_PRE_QWEN2: list[n++] = RE_QWEN2; break;
    case TOK_PRE_GPT2: list[n++] = RE_GPT2; break;
    case TOK_PRE_SMOLLM:
        list[n++] = RE_DIGIT;
        list[n++] = RE_GPT2;
        break;
    case TOK_PRE_DEFAULT:
        list[n++] = RE_PUNCT;
        list[n++] = RE_GPT2;
        list[n++] = RE_DIGITS;
        list[n++] = RE_THREE_DIGITS;
        break;
    }
    for (int i = 0; i < n; i++) {
        int err;
        PCRE2_SIZE erroff;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)list[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &erroff,
                                       NULL);
        if (!re && err == PCRE2_ERROR_HEAP_FAILED) /* PCRE2 ran out of memory: the regex is fine */
            return plumb__fail(PLUMB_E_NOMEM, "vocab: out of memory compiling pre-tokenizer regex %d", i);
        if (!re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(err, msg, sizeof msg);
            return plumb__fail(PLUMB_E_UNSUPPORTED, "vocab: pre-tokenizer regex %d does not compile at %zu: %s", i,
                               (size_t)erroff, (const char *)msg);
        }
        v->regex[v->n_regex++] = re;
    }
    return PLUMB_OK;
}

void plumb__bpe_free(plumb_vocab_t *v) {
    for (int i = 0; i < v->n_regex; i++) pcre2_code_free((pcre2_code *)v->regex[i]);
    v->n_regex = 0;
}

/* ---- lenient UTF-8 ------------------------------------------------------------------------- */

static size_t put_utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one code point at s[i] as llama.cpp does (lead bit pattern and continuation bytes
 * only; overlong forms and surrogates pass). Returns its byte length, or 0 when invalid. */
static size_t lax_decode(const uint8_t *s, size_t len, size_t i, uint32_t *cp) {
    uint8_t c = s[i];
    size_t n;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (!(c & 0x40)) return 0;
    if (!(c & 0x20)) n = 2, *cp = c & 0x1F;
    else if (!(c & 0x10)) n = 3, *cp = c & 0x0F;
    else if (!(c & 0x08)) n = 4, *cp = c & 0x07;
    else return 0;
    if (i + n > len) return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return 0;
        *cp = (*cp << 6) | (s[i + k] & 0x3F);
    }
    return n;
}

/* ---- merging one word ------------------------------------------------------------------------ */

typedef struct sym {
    int32_t prev, next;
    uint32_t start, n;
} sym;

typedef struct bigram {
    int32_t rank, left, right;
    uint32_t size;
} bigram;

/* Heap order: lowest rank first, then leftmost. */
static bool before(const void *pa, const void *pb) {
    const bigram *a = pa, *b = pb;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

typedef struct bpe_state {
    const plumb_vocab_t *v;
    tok_out *out;
    uint8_t *word; /* the current word in byte-level code points */
    sym *syms;
    bigram *heap;
    size_t n_heap;
} bpe_state;

static void add_bigram(bpe_state *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const sym *l = &s->syms[left], *r = &s->syms[right];
    int32_t rank = plumb__tok_merge_rank(s->v, (const char *)s->word + l->start, l->n, (const char *)s->word + r->start,
                                         r->n);
    if (rank < 0) return;
    tok_heap_push(s->heap, &s->n_heap, sizeof(bigram), before, &(bigram){rank, left, right, l->n + r->n});
}

static void emit_symbol(bpe_state *s, uint32_t start, uint32_t n) {
    const char *t = (const char *)s->word + start;
    int32_t id = plumb__tok_find(s->v, t, n);
    if (id >= 0) {
        tok_emit(s->out, id);
        return;
    }
    for (uint32_t j = 0; j < n; j++) { /* as llama.cpp: one-byte tokens of its bytes, if any */
        int32_t b = plumb__tok_find(s->v, t + j, 1);
        if (b >= 0) tok_emit(s->out, b);
    }
}

/* Merges and emits the word s->word[0..len). */
static void merge_word(bpe_state *s, uint32_t len) {
    if (len == 0) return;
    if (s->v->ignore_merges) {
        int32_t id = plumb__tok_find(s->v, (const char *)s->word, len);
        if (id >= 0) {
            tok_emit(s->out, id);
            return;
        }
    }
    int32_t n = 0;
    for (uint32_t off = 0; off < len;) {
        uint32_t cl = (uint32_t)tok_utf8_len(s->word[off]);
        if (cl > len - off) cl = len - off;
        s->syms[n] = (sym){n - 1, off + cl == len ? -1 : n + 1, off, cl};
        off += cl;
        n++;
    }
    s->n_heap = 0;
    for (int32_t i = 1; i < n; i++) add_bigram(s, i - 1, i);
    while (s->n_heap > 0) {
        bigram b;
        tok_heap_pop(s->heap, &s->n_heap, sizeof b, before, &b);
        sym *l = &s->syms[b.left], *r = &s->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = b.left;
        add_bigram(s, l->prev, b.left);
        add_bigram(s, b.left, l->next);
    }
    for (int32_t i = 0; i != -1; i = s->syms[i].next) emit_symbol(s, s->syms[i].start, s->syms[i].n);
}

/* ---- splitting ------------------------------------------------------------------------------ */

typedef struct span {
    uint32_t start, end;
} span;

/* Splits each span of `in` with regex re over subject `text`, writing pieces to `out`. */
static plumb_status split(const pcre2_code *re, pcre2_match_data *md, const uint8_t *text, const span *in, size_t n_in,
                          span *out, size_t *n_out) {
    size_t n = 0;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    for (size_t k = 0; k < n_in; k++) {
        const uint8_t *subj = text + in[k].start;
        size_t len = in[k].end - in[k].start, at = 0, from = 0;
        while (from < len) {
            int rc = pcre2_match(re, subj, len, from, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) return plumb__fail(PLUMB_E_RANGE, "tokenize: pre-tokenizer regex failed (PCRE2 error %d)", rc);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* an empty match splits nothing: step over one character */
                from = ms + 1;
                while (from < len && (subj[from] & 0xC0) == 0x80) from++;
                continue;
            }
            if (ms > at) out[n++] = (span){in[k].start + (uint32_t)at, in[k].start + (uint32_t)ms};
            out[n++] = (span){in[k].start + (uint32_t)ms, in[k].start + (uint32_t)me};
            at = from = me;
        }
        if (at < len) out[n++] = (span){in[k].start + (uint32_t)at, in[k].end};
    }
    *n_out = n;
    return PLUMB_OK;
}

plumb_status plumb__bpe_tokenize(const plumb_vocab_t *v, const char *text, size_t len, tok_out *out) {
    if (len == 0) return PLUMB_OK;
    const uint8_t *in = (const uint8_t *)text;
    plumb_status st = PLUMB_OK;
    /* canon: the text re-encoded (every input byte gives at most 3 bytes); proxy: the same
     * with surrogates as U+FFFD (same length) so that PCRE2 sees valid UTF-8. */
    size_t cap = 3 * len;
    uint8_t *canon = malloc(cap), *proxy = malloc(cap);
    span *a = NULL, *b = NULL;
    bpe_state s = {v, out, NULL, NULL, NULL, 0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!canon || !proxy || !md) goto nomem;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = lax_decode(in, len, i, &cp);
        if (k == 0 || cp > 0x10FFFF) cp = 0xFFFD;
        i += k ? k : 1;
        size_t w = put_utf8(canon + n, cp);
        if (cp >= 0xD800 && cp <= 0xDFFF) put_utf8(proxy + n, 0xFFFD);
        else memcpy(proxy + n, canon + n, w);
        n += w;
    }

    /* Every piece holds at least one code point: at most n pieces. */
    a = malloc((n + 1) * sizeof *a);
    b = malloc((n + 1) * sizeof *b);
    if (!a || !b) goto nomem;
    size_t n_spans = 1;
    a[0] = (span){0, (uint32_t)n};
    for (int r = 0; r < v->n_regex; r++) {
        size_t n_next = 0;
        st = split((const pcre2_code *)v->regex[r], md, proxy, a, n_spans, b, &n_next);
        if (st) goto done;
        span *t = a;
        a = b, b = t;
        n_spans = n_next;
    }

    /* A word's byte-level form is at most twice its bytes; it has at most that many
     * symbols, and merging pushes at most three bigrams per symbol. */
    size_t longest = 0;
    for (size_t k = 0; k < n_spans; k++)
        if (a[k].end - a[k].start > longest) longest = a[k].end - a[k].start;
    s.word = malloc(2 * longest);
    s.syms = malloc(2 * longest * sizeof *s.syms);
    s.heap = malloc(6 * longest * sizeof *s.heap);
    if (!s.word || !s.syms || !s.heap) goto nomem;
    for (size_t k = 0; k < n_spans; k++) {
        uint32_t wl = 0;
        for (uint32_t i = a[k].start; i < a[k].end; i++) wl += (uint32_t)put_utf8(s.word + wl, plumb__bpe_byte_to_cp(canon[i]));
        merge_word(&s, wl);
    }
    goto done;
nomem:
    st = plumb__fail(PLUMB_E_NOMEM, "tokenize: out of memory");
done:
    pcre2_match_data_free(md);
    free(canon);
    free(proxy);
    free(a);
    free(b);
    free(s.word);
    free(s.syms);
    free(s.heap);
    return st;
}
