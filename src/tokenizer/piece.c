/* piece.c — from tokens back to text: plumb_token_to_piece (one token's bytes, as
 * llama.cpp's token_to_piece) and the streaming detokenizer, which holds back an incomplete
 * UTF-8 character until the token that completes it arrives. */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Writes token id's piece to dst (when not NULL) and returns its length. */
static size_t piece(const plumb_vocab_t *v, int32_t id, bool special, char *dst) {
    uint8_t attr = v->attr[id];
    size_t len;
    const char *t = tok_text(v, id, &len);
    if ((attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)) && !special) return 0;
    if (attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN | TOK_ATTR_USER_DEFINED)) {
        if (dst) memcpy(dst, t, len);
        return len;
    }
    if (attr & TOK_ATTR_BYTE) {
        int hi = len == 6 ? hex_digit(t[3]) : -1, lo = len == 6 ? hex_digit(t[4]) : -1;
        if (len == 6 && memcmp(t, "<0x", 3) == 0 && t[5] == '>' && hi >= 0 && lo >= 0) {
            if (dst) dst[0] = (char)(hi * 16 + lo);
            return 1;
        }
        if (dst) memcpy(dst, t, len); /* not of the <0xXX> form: its text */
        return len;
    }
    if (!(attr & TOK_ATTR_NORMAL)) return 0; /* unused and undefined tokens */

    size_t n = 0;
    if (v->type == PLUMB_VOCAB_SPM) { /* U+2581 -> ' ' */
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(t + i, "\xE2\x96\x81", 3) == 0) {
                if (dst) dst[n] = ' ';
                n++;
                i += 3;
            } else {
                if (dst) dst[n] = t[i];
                n++;
                i++;
            }
        }
        return n;
    }
    /* BPE: each code point stands for one byte; anything else is copied as it is. */
    for (size_t i = 0; i < len;) {
        const uint8_t *u = (const uint8_t *)t + i;
        uint32_t cp = u[0];
        size_t k = 1;
        if (u[0] >= 0xC0 && u[0] < 0xE0 && i + 1 < len && (u[1] & 0xC0) == 0x80) {
            cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
            k = 2;
        }
        int b = u[0] < 0x80 || k == 2 ? plumb__bpe_cp_to_byte(cp) : -1;
        if (b >= 0) {
            if (dst) dst[n] = (char)b;
            n++;
        } else {
            if (dst) memcpy(dst + n, u, k);
            n += k;
        }
        i += k;
    }
    return n;
}

int plumb_token_to_piece(const plumb_vocab_t *v, int32_t id, char *buf, size_t cap, bool special) {
    if (!v || id < 0 || id >= v->n_tokens) return 0;
    size_t n = piece(v, id, special, NULL);
    if (n > (size_t)INT32_MAX) return 0;
    if (n > cap || (n && !buf)) return -(int)n;
    piece(v, id, special, buf);
    return (int)n;
}

/* ---- streaming ------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..left) (1-4), or 0 when invalid. When the bytes
 * end inside a sequence that is valid so far, *partial is set and 0 returned. */
static size_t utf8_valid(const uint8_t *s, size_t left, bool *partial) {
    uint8_t c = s[0];
    *partial = false;
    if (c < 0x80) return 1;
    size_t n;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if (i >= left) {
            *partial = true;
            return 0;
        }
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return 0;
    }
    return n;
}

/* Bytes of r[0..n) once invalid bytes become U+FFFD; written to dst when not NULL. */
static size_t sanitize(const uint8_t *r, size_t n, char *dst) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        bool partial;
        size_t k = utf8_valid(r + i, n - i, &partial);
        if (k == 0) {
            if (dst) memcpy(dst + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            if (dst) memcpy(dst + o, r + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

size_t plumb_detok_push(const plumb_vocab_t *v, plumb_detok *d, int32_t id, char *out, size_t cap) {
    if (!v || !d || d->n_pending > 3) return 0;
    size_t plen = (id >= 0 && id < v->n_tokens) ? piece(v, id, false, NULL) : 0;
    size_t total = d->n_pending + plen;
    uint8_t local[512];
    uint8_t *r = total <= sizeof local ? local : malloc(total); /* only for very long tokens */
    if (!r) return 0;
    memcpy(r, d->pending, d->n_pending);
    if (plen) piece(v, id, false, (char *)r + d->n_pending);

    /* An incomplete but so far valid character at the end waits for the next token. */
    size_t keep = total;
    for (size_t i = total; i > 0 && total - i < 4; i--) {
        if ((r[i - 1] & 0xC0) == 0x80) continue;
        bool partial;
        if (utf8_valid(r + i - 1, total - (i - 1), &partial) == 0 && partial) keep = i - 1;
        break;
    }
    size_t n = sanitize(r, keep, NULL);
    if (n > cap || (n && !out)) {
        if (r != local) free(r);
        return n;
    }
    sanitize(r, keep, out);
    d->n_pending = total - keep;
    memcpy(d->pending, r + keep, d->n_pending);
    if (r != local) free(r);
    return n;
}

size_t plumb_detok_flush(plumb_detok *d, char *out, size_t cap) {
    if (!d || d->n_pending == 0) return 0;
    if (cap < 3 || !out) return 3;
    memcpy(out, "\xEF\xBF\xBD", 3);
    d->n_pending = 0;
    return 3;
}
