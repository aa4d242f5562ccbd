/* logprobs.c — log probabilities as OpenAI's JSON (see logprobs.h). A token's "token" is its
 * text (control tokens by name) with any incomplete UTF-8 character shown as U+FFFD, so the
 * JSON stays valid; "bytes" are its exact bytes. */
#include "logprobs.h"

#include <string.h>

/* s[0..n) with every byte that is not part of a well-formed UTF-8 character replaced by
 * U+FFFD, into out (room for 3 * n + 1), NUL-terminated. */
static void sanitize(const unsigned char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char b = s[i];
        size_t len = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        bool ok = len && i + len <= n && b != 0;
        for (size_t k = 1; ok && k < len; k++) ok = (s[i + k] & 0xC0) == 0x80;
        if (ok && len == 3) ok = !(b == 0xE0 && s[i + 1] < 0xA0) && !(b == 0xED && s[i + 1] > 0x9F);
        if (ok && len == 4) ok = !(b == 0xF0 && s[i + 1] < 0x90) && !(b == 0xF4 && s[i + 1] > 0x8F);
        if (ok) {
            memcpy(out + o, s + i, len);
            o += len, i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3, i++;
        }
    }
    out[o] = '\0';
}

/* The token's text and bytes. */
typedef struct piece {
    unsigned char bytes[256];
    int n;
    char text[3 * 256 + 1];
} piece;

static void token_piece(const plumb_vocab_t *v, int32_t tok, piece *p) {
    p->n = plumb_token_to_piece(v, tok, (char *)p->bytes, sizeof p->bytes, true);
    if (p->n < 0) p->n = 0;
    sanitize(p->bytes, (size_t)p->n, p->text);
}

/* {"token", "logprob", "bytes"} of one token. */
static cJSON *entry(const piece *p, float logprob) {
    cJSON *e = cJSON_CreateObject(), *b = cJSON_CreateArray();
    if (!e || !b) {
        cJSON_Delete(e), cJSON_Delete(b);
        return NULL;
    }
    cJSON_AddStringToObject(e, "token", p->text);
    cJSON_AddNumberToObject(e, "logprob", logprob);
    for (int i = 0; i < p->n; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber(p->bytes[i]));
    cJSON_AddItemToObject(e, "bytes", b);
    return e;
}

cJSON *plumb_srv_logprobs_json(const plumb_vocab_t *v, const plumb_srv_logprob *r, size_t n, bool chat,
                               size_t *text_offset) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    piece p;
    if (chat) {
        cJSON *content = cJSON_AddArrayToObject(root, "content");
        cJSON_AddNullToObject(root, "refusal");
        for (size_t i = 0; i < n; i++) {
            token_piece(v, r[i].tok, &p);
            cJSON *e = entry(&p, r[i].logprob);
            cJSON *top = cJSON_CreateArray();
            for (int32_t k = 0; k < r[i].n_top; k++) {
                token_piece(v, r[i].top_tok[k], &p);
                cJSON_AddItemToArray(top, entry(&p, r[i].top_logprob[k]));
            }
            if (e) cJSON_AddItemToObject(e, "top_logprobs", top);
            else cJSON_Delete(top);
            cJSON_AddItemToArray(content, e);
        }
        return root;
    }
    cJSON *toks = cJSON_AddArrayToObject(root, "tokens"), *lps = cJSON_AddArrayToObject(root, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(root, "top_logprobs"), *offs = cJSON_AddArrayToObject(root, "text_offset");
    for (size_t i = 0; i < n; i++) {
        token_piece(v, r[i].tok, &p);
        cJSON_AddItemToArray(toks, cJSON_CreateString(p.text));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(r[i].logprob));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)*text_offset));
        *text_offset += (size_t)p.n;
        cJSON *top = cJSON_CreateObject();
        for (int32_t k = 0; k < r[i].n_top; k++) {
            token_piece(v, r[i].top_tok[k], &p);
            if (!cJSON_GetObjectItemCaseSensitive(top, p.text)) cJSON_AddNumberToObject(top, p.text, r[i].top_logprob[k]);
        }
        cJSON_AddItemToArray(tops, top);
    }
    return root;
}
