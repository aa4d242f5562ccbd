/* tokenize.c — plumb_tokenize: splits the text at special tokens, runs the SPM or BPE
 * tokenizer over each piece of raw text, and adds BOS/EOS, in the order llama.cpp's
 * llama_vocab::tokenize does. */
#include "tokenizer/tokenizer.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TEXT (256u << 20)

/* SPM: every raw piece gets a leading space when add_space_prefix and it starts the text or
 * follows a special token; spaces become U+2581. */
static plumb_status tokenize_spm(const plumb_vocab_t *v, const char *text, const tok_frag *f, size_t nf,
                                 tok_out *out) {
    size_t longest = 0;
    for (size_t i = 0; i < nf; i++)
        if (f[i].token < 0 && f[i].len > longest) longest = f[i].len;
    char *buf = longest ? malloc(3 * longest + 3) : NULL;
    if (longest && !buf) return plumb__fail(PLUMB_E_NOMEM, "tokenize: out of memory");
    plumb_status st = PLUMB_OK;
    bool prev_special = true;
    for (size_t i = 0; i < nf && !st; i++) {
        if (f[i].token >= 0) {
            tok_emit(out, f[i].token);
            prev_special = true;
            continue;
        }
        size_t n = 0;
        if (v->add_space_prefix && prev_special) {
            memcpy(buf, "\xE2\x96\x81", 3);
            n = 3;
        }
        for (size_t k = 0; k < f[i].len; k++) {
            char c = text[f[i].off + k];
            if (c == ' ') {
                memcpy(buf + n, "\xE2\x96\x81", 3);
                n += 3;
            } else {
                buf[n++] = c;
            }
        }
        st = plumb__spm_tokenize(v, buf, n, out);
        prev_special = false;
    }
    free(buf);
    return st;
}

static plumb_status tokenize(const plumb_vocab_t *v, const char *text, size_t len, bool add_special, bool parse_special,
                             const plumb_span *marks, size_t n_marks, int32_t *ids, size_t cap, size_t *n_out) {
    if (!v || !n_out || (!text && len) || (!ids && cap))
        return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_tokenize: NULL argument");
    *n_out = 0;
    if (len > MAX_TEXT)
        return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_tokenize: text of %zu bytes is over the %u MiB limit", len,
                           MAX_TEXT >> 20);
    tok_out out = {ids, cap, 0};
    tok_frag *f;
    size_t nf;
    plumb_status st = plumb__tok_split_special(v, text, len, parse_special, marks, n_marks, &f, &nf);
    if (st) return st;

    if (add_special && v->add_bos) tok_emit(&out, v->bos);
    if (v->type == PLUMB_VOCAB_SPM) {
        st = tokenize_spm(v, text, f, nf, &out);
    } else {
        for (size_t i = 0; i < nf && !st; i++) {
            if (f[i].token >= 0) tok_emit(&out, f[i].token);
            else st = plumb__bpe_tokenize(v, text + f[i].off, f[i].len, &out);
        }
    }
    if (add_special && v->add_eos) tok_emit(&out, v->eos);
    free(f);
    if (st) return st;
    *n_out = out.n;
    if (out.n > cap)
        return plumb__fail(PLUMB_E_RANGE, "plumb_tokenize: %zu tokens do not fit in %zu", out.n, cap);
    return PLUMB_OK;
}

plumb_status plumb_tokenize(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t *ids, size_t cap, size_t *n_out) {
    return tokenize(v, text, len, add_special, parse_special, NULL, 0, ids, cap, n_out);
}

plumb_status plumb_tokenize_marked(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                                   const plumb_span *marks, size_t n_marks, int32_t *ids, size_t cap, size_t *n_out) {
    if (n_marks && !marks) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_tokenize_marked: marks is NULL");
    for (size_t i = 0; i < n_marks; i++)
        if (marks[i].off > len || marks[i].len > len - marks[i].off ||
            (i && marks[i].off < marks[i - 1].off + marks[i - 1].len))
            return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_tokenize_marked: mark %zu is out of order or past the text", i);
    static const plumb_span none = {0, 0};
    return tokenize(v, text, len, add_special, true, n_marks ? marks : &none, n_marks, ids, cap, n_out);
}
