/* vocab.c — the vocabulary: reads and checks tokenizer.ggml.* from a GGUF file, copies the
 * token texts into one block with a hash table over them, works out token attributes and
 * end-of-generation tokens, the sorted special-token list the splitter searches, the SPM
 * byte-fallback table and the BPE merge table. Defaults follow llama.cpp's loader. */
#include "tokenizer/tokenizer.h"

#include "core/error.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEXT_BYTES (1u << 30) /* cap on all token (or merge) texts together */

/* llama.cpp's token_type values. */
enum { TYPE_UNDEFINED = 0, TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_USER_DEFINED, TYPE_UNUSED, TYPE_BYTE };

/* Texts that end generation (EOS is added separately). */
static const char *const EOG_TEXTS[] = {"<end_of_turn>", "<|eot_id|>",      "<|im_end|>",
                                        "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>"};
/* Texts that name the end-of-turn token when the file gives no eot_token_id, by preference. */
static const char *const EOT_TEXTS[] = {"<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|endoftext|>",
                                        "<|end_of_text|>"};

/* ---- hashing ------------------------------------------------------------------------------ */

static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t len) {
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint32_t hash_fold(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    return (uint32_t)h;
}

uint32_t plumb__tok_hash(const void *s, size_t len) {
    return hash_fold(hash_bytes(0xcbf29ce484222325ull, s, len));
}

uint32_t plumb__tok_hash_pair(const void *a, size_t alen, const void *b, size_t blen) {
    uint64_t h = hash_bytes(0xcbf29ce484222325ull, a, alen);
    h = hash_bytes(h ^ 0x9e3779b97f4a7c15ull, b, blen);
    return hash_fold(h + alen);
}

int32_t plumb__tok_find(const plumb_vocab_t *v, const char *s, size_t len) {
    uint32_t h = plumb__tok_hash(s, len);
    for (uint32_t i = h & v->tab_mask;; i = (i + 1) & v->tab_mask) {
        int32_t id = v->tab_id[i];
        if (id < 0) return -1;
        if (v->tab_hash[i] != h) continue;
        size_t tlen;
        const char *t = tok_text(v, id, &tlen);
        if (tlen == len && memcmp(t, s, len) == 0) return id;
    }
}

int32_t plumb__tok_merge_rank(const plumb_vocab_t *v, const char *a, size_t alen, const char *b, size_t blen) {
    if (!v->mtab_rank) return -1;
    uint32_t h = plumb__tok_hash_pair(a, alen, b, blen);
    for (uint32_t i = h & v->mtab_mask;; i = (i + 1) & v->mtab_mask) {
        int32_t r = v->mtab_rank[i];
        if (r < 0) return -1;
        if (v->mtab_hash[i] != h) continue;
        const char *m = v->merge_text + v->merge_off[r];
        uint32_t split = v->merge_split[r];
        uint32_t mlen = v->merge_off[r + 1] - v->merge_off[r] - 1;
        if (split == alen && mlen - split - 1 == blen && memcmp(m, a, alen) == 0 &&
            memcmp(m + split + 1, b, blen) == 0)
            return r;
    }
}

/* Table of 2^k slots, at least twice n. */
static uint32_t table_size(uint32_t n) {
    uint32_t size = 16;
    while (size < 2 * (uint64_t)n) size <<= 1;
    return size;
}

/* ---- reading keys -------------------------------------------------------------------------- */

/* Index of an optional key, or -1. Does not touch the last error. */
static int64_t key_of(const plumb_gguf_t *g, const char *key) { return plumb_gguf_find_key(g, key); }

static plumb_status read_bool(const plumb_gguf_t *g, const char *key, bool *out) {
    int64_t i = key_of(g, key);
    if (i < 0) return PLUMB_OK;
    if (plumb_gguf_kv_type(g, i) != PLUMB_GGUF_BOOL)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: %s is a %s, not a bool", key, plumb_gguf_type_name(plumb_gguf_kv_type(g, i)));
    return plumb_gguf_kv_bool(g, i, out) ? PLUMB_E_FORMAT : PLUMB_OK;
}

/* An optional token id: must be an integer in [0, n). Leaves *id alone when absent. */
static plumb_status read_id(const plumb_gguf_t *g, const char *key, int32_t n, int32_t *id) {
    int64_t i = key_of(g, key);
    if (i < 0) return PLUMB_OK;
    int64_t val;
    if (plumb_gguf_kv_int(g, i, &val) != PLUMB_OK)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: %s is a %s, not a token id", key,
                           plumb_gguf_type_name(plumb_gguf_kv_type(g, i)));
    if (val < 0 || val >= n)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: %s = %" PRId64 " is not a token id (vocabulary of %" PRId32 ")", key,
                           val, n);
    *id = (int32_t)val;
    return PLUMB_OK;
}

/* A required array of strings with its length. */
static plumb_status string_array(const plumb_gguf_t *g, const char *key, int64_t *idx, uint64_t *n) {
    *idx = key_of(g, key);
    if (*idx < 0) return plumb__fail(PLUMB_E_FORMAT, "vocab: %s is missing", key);
    if (plumb_gguf_kv_type(g, *idx) != PLUMB_GGUF_ARRAY || plumb_gguf_kv_array_type(g, *idx) != PLUMB_GGUF_STRING)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: %s is not an array of strings", key);
    *n = plumb_gguf_kv_array_len(g, *idx);
    return PLUMB_OK;
}

/* Copies strings 0..n of array idx into one block of NUL-terminated texts. */
static plumb_status copy_strings(const plumb_gguf_t *g, const char *key, int64_t idx, uint32_t n, char **text,
                                 uint32_t **off) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        plumb_str s;
        if (plumb_gguf_arr_str(g, idx, i, &s) != PLUMB_OK)
            return plumb__fail(PLUMB_E_FORMAT, "vocab: %s[%" PRIu32 "] cannot be read", key, i);
        total += s.len + 1;
        if (total > MAX_TEXT_BYTES)
            return plumb__fail(PLUMB_E_FORMAT, "vocab: %s: texts over %u bytes in all", key, MAX_TEXT_BYTES);
    }
    *off = malloc(((size_t)n + 1) * sizeof **off);
    *text = malloc(total ? (size_t)total : 1);
    if (!*off || !*text) return plumb__fail(PLUMB_E_NOMEM, "vocab: out of memory for %s", key);
    uint32_t pos = 0;
    for (uint32_t i = 0; i < n; i++) {
        plumb_str s;
        plumb_gguf_arr_str(g, idx, i, &s); /* cannot fail: read above */
        (*off)[i] = pos;
        if (s.len) memcpy(*text + pos, s.ptr, s.len);
        pos += (uint32_t)s.len;
        (*text)[pos++] = '\0';
    }
    (*off)[n] = pos;
    return PLUMB_OK;
}

/* ---- building ------------------------------------------------------------------------------ */

static plumb_status read_tokens(plumb_vocab_t *v, const plumb_gguf_t *g) {
    int64_t idx = -1;
    uint64_t n = 0;
    plumb_status st = string_array(g, "tokenizer.ggml.tokens", &idx, &n);
    if (st) return st;
    if (n == 0 || n > (uint64_t)INT32_MAX - 1)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.tokens has %" PRIu64 " tokens", n);
    v->n_tokens = (int32_t)n;
    st = copy_strings(g, "tokenizer.ggml.tokens", idx, (uint32_t)n, &v->text, &v->off);
    if (st) return st;

    v->score = calloc(n, sizeof *v->score);
    v->attr = malloc(n);
    if (!v->score || !v->attr) return plumb__fail(PLUMB_E_NOMEM, "vocab: out of memory");

    int64_t si = key_of(g, "tokenizer.ggml.scores");
    if (si >= 0) {
        plumb_gguf_type at = plumb_gguf_kv_array_type(g, si);
        if (plumb_gguf_kv_type(g, si) != PLUMB_GGUF_ARRAY || (at != PLUMB_GGUF_F32 && at != PLUMB_GGUF_I32))
            return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.scores is not an array of f32");
        if (plumb_gguf_kv_array_len(g, si) < n)
            return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.scores has %" PRIu64 " entries for %" PRIu64 " tokens",
                               plumb_gguf_kv_array_len(g, si), n);
        const void *data;
        if (plumb_gguf_arr_data(g, si, &data) != PLUMB_OK) return PLUMB_E_FORMAT;
        for (uint64_t i = 0; i < n; i++) {
            if (at == PLUMB_GGUF_F32) {
                memcpy(&v->score[i], (const char *)data + 4 * i, 4);
            } else {
                int32_t s;
                memcpy(&s, (const char *)data + 4 * i, 4);
                v->score[i] = (float)s;
            }
        }
    }

    memset(v->attr, TOK_ATTR_NORMAL, n);
    int64_t ti = key_of(g, "tokenizer.ggml.token_type");
    if (ti >= 0) {
        if (plumb_gguf_kv_type(g, ti) != PLUMB_GGUF_ARRAY || plumb_gguf_kv_array_type(g, ti) != PLUMB_GGUF_I32)
            return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.token_type is not an array of i32");
        if (plumb_gguf_kv_array_len(g, ti) < n)
            return plumb__fail(PLUMB_E_FORMAT,
                               "vocab: tokenizer.ggml.token_type has %" PRIu64 " entries for %" PRIu64 " tokens",
                               plumb_gguf_kv_array_len(g, ti), n);
        const void *data;
        if (plumb_gguf_arr_data(g, ti, &data) != PLUMB_OK) return PLUMB_E_FORMAT;
        for (uint64_t i = 0; i < n; i++) {
            int32_t t;
            memcpy(&t, (const char *)data + 4 * i, 4);
            switch (t) {
            case TYPE_NORMAL: v->attr[i] = TOK_ATTR_NORMAL; break;
            case TYPE_UNKNOWN: v->attr[i] = TOK_ATTR_UNKNOWN; break;
            case TYPE_CONTROL: v->attr[i] = TOK_ATTR_CONTROL; break;
            case TYPE_USER_DEFINED: v->attr[i] = TOK_ATTR_USER_DEFINED; break;
            case TYPE_UNUSED: v->attr[i] = TOK_ATTR_UNUSED; break;
            case TYPE_BYTE: v->attr[i] = TOK_ATTR_BYTE; break;
            default: v->attr[i] = 0; break; /* undefined: printed as nothing, never special */
            }
        }
    }
    return PLUMB_OK;
}

static plumb_status build_table(plumb_vocab_t *v) {
    uint32_t size = table_size((uint32_t)v->n_tokens);
    v->tab_mask = size - 1;
    v->tab_id = malloc((size_t)size * sizeof *v->tab_id);
    v->tab_hash = malloc((size_t)size * sizeof *v->tab_hash);
    if (!v->tab_id || !v->tab_hash) return plumb__fail(PLUMB_E_NOMEM, "vocab: out of memory for the token table");
    memset(v->tab_id, 0xff, (size_t)size * sizeof *v->tab_id);
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t len;
        const char *s = tok_text(v, id, &len);
        if (len == 0) continue; /* an empty text can never match */
        uint32_t h = plumb__tok_hash(s, len);
        for (uint32_t i = h & v->tab_mask;; i = (i + 1) & v->tab_mask) {
            int32_t other = v->tab_id[i];
            if (other < 0) {
                v->tab_id[i] = id;
                v->tab_hash[i] = h;
                break;
            }
            size_t olen;
            const char *o = tok_text(v, other, &olen);
            if (v->tab_hash[i] == h && olen == len && memcmp(o, s, len) == 0) {
                v->tab_id[i] = id; /* duplicate text: the later id wins, as in llama.cpp */
                break;
            }
        }
    }
    return PLUMB_OK;
}

static int32_t find_cstr(const plumb_vocab_t *v, const char *s) { return plumb__tok_find(v, s, strlen(s)); }

typedef struct special_entry {
    const char *p;
    uint32_t len;
    int32_t id;
} special_entry;

static int cmp_special(const void *a, const void *b) {
    const special_entry *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static plumb_status build_specials(plumb_vocab_t *v) {
    int32_t n = 0;
    for (int32_t id = 0; id < v->n_tokens; id++)
        if ((v->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) && v->off[id + 1] - v->off[id] > 1)
            n++;
    special_entry *e = malloc(((size_t)n + 1) * sizeof *e);
    v->special = malloc(((size_t)n + 1) * sizeof *v->special);
    if (!e || !v->special) {
        free(e);
        return plumb__fail(PLUMB_E_NOMEM, "vocab: out of memory");
    }
    int32_t k = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t len;
        const char *s = tok_text(v, id, &len);
        if ((v->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) && len > 0)
            e[k++] = (special_entry){s, (uint32_t)len, id};
    }
    qsort(e, (size_t)n, sizeof *e, cmp_special);
    /* Keep one entry per distinct text (the lowest id). */
    v->n_special = 0;
    for (int32_t i = 0; i < n; i++) {
        if (i > 0 && e[i].len == e[i - 1].len && memcmp(e[i].p, e[i - 1].p, e[i].len) == 0) continue;
        v->special[v->n_special++] = e[i].id;
    }
    free(e);
    int32_t j = 0;
    for (int b = 0; b < 256; b++) {
        while (j < v->n_special && (uint8_t)v->text[v->off[v->special[j]]] < b) j++;
        v->first[b] = j;
    }
    v->first[256] = v->n_special;
    return PLUMB_OK;
}

/* The one tokenizer rule llama.cpp keys on the model's name: when general.name contains
 * "phi-3" or "phi3" (in any case), whitespace right after a special token is dropped (its
 * RSTRIP attribute; </s> too), except after <unk>, <s> and <|endoftext|>. Phi-3's own
 * tokenizer strips there, and no tokenizer key says so. */
static void name_rules(plumb_vocab_t *v, const plumb_gguf_t *g) {
    plumb_str name;
    if (plumb_gguf_get_str(g, "general.name", &name) != PLUMB_OK) return;
    bool phi3 = false;
    for (size_t i = 0; i < name.len && !phi3; i++) {
        char w[5] = {0};
        for (size_t j = 0; j < 5 && i + j < name.len; j++) {
            const char c = name.ptr[i + j];
            w[j] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
        phi3 = !memcmp(w, "phi3", 4) || !memcmp(w, "phi-3", 5);
    }
    if (!phi3) return;
    for (int32_t k = 0; k < v->n_special; k++) v->attr[v->special[k]] |= TOK_ATTR_RSTRIP;
    const int32_t eos = find_cstr(v, "</s>");
    if (eos >= 0) v->attr[eos] |= TOK_ATTR_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++) {
        const int32_t id = find_cstr(v, keep[k]);
        if (id >= 0) v->attr[id] &= (uint8_t)~TOK_ATTR_RSTRIP;
    }
}

static void build_byte_tokens(plumb_vocab_t *v) {
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char buf[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        int32_t id = plumb__tok_find(v, buf, 6);
        if (id < 0) {
            char c = (char)b;
            id = plumb__tok_find(v, &c, 1);
        }
        v->byte_token[b] = id;
    }
}

static plumb_status read_merges(plumb_vocab_t *v, const plumb_gguf_t *g) {
    int64_t idx = -1;
    uint64_t n = 0;
    plumb_status st = string_array(g, "tokenizer.ggml.merges", &idx, &n);
    if (st) return st;
    if (n > (uint64_t)INT32_MAX - 1)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.merges has %" PRIu64 " entries", n);
    v->n_merges = (int32_t)n;
    st = copy_strings(g, "tokenizer.ggml.merges", idx, (uint32_t)n, &v->merge_text, &v->merge_off);
    if (st) return st;
    uint32_t size = table_size((uint32_t)n);
    v->mtab_mask = size - 1;
    v->merge_split = malloc(((size_t)n + 1) * sizeof *v->merge_split);
    v->mtab_rank = malloc((size_t)size * sizeof *v->mtab_rank);
    v->mtab_hash = malloc((size_t)size * sizeof *v->mtab_hash);
    if (!v->merge_split || !v->mtab_rank || !v->mtab_hash)
        return plumb__fail(PLUMB_E_NOMEM, "vocab: out of memory for the merge table");
    memset(v->mtab_rank, 0xff, (size_t)size * sizeof *v->mtab_rank);
    for (int32_t r = 0; r < v->n_merges; r++) {
        const char *m = v->merge_text + v->merge_off[r];
        uint32_t len = v->merge_off[r + 1] - v->merge_off[r] - 1;
        /* "left right", split at the first space after the first byte (as llama.cpp). */
        const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
        if (!sp)
            return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.merges[%" PRId32 "] has no space between its two parts",
                               r);
        uint32_t split = (uint32_t)(sp - m);
        v->merge_split[r] = split;
        uint32_t h = plumb__tok_hash_pair(m, split, m + split + 1, len - split - 1);
        for (uint32_t i = h & v->mtab_mask;; i = (i + 1) & v->mtab_mask) {
            int32_t other = v->mtab_rank[i];
            if (other < 0) {
                v->mtab_rank[i] = r;
                v->mtab_hash[i] = h;
                break;
            }
            if (v->mtab_hash[i] == h) {
                const char *o = v->merge_text + v->merge_off[other];
                uint32_t olen = v->merge_off[other + 1] - v->merge_off[other] - 1;
                if (olen == len && v->merge_split[other] == split && memcmp(o, m, len) == 0) break; /* first rank wins */
            }
        }
    }
    return PLUMB_OK;
}

static plumb_status read_pre(plumb_vocab_t *v, const plumb_gguf_t *g) {
    int64_t i = key_of(g, "tokenizer.ggml.pre");
    v->pre = TOK_PRE_DEFAULT;
    if (i < 0) return PLUMB_OK;
    plumb_str s;
    if (plumb_gguf_kv_str(g, i, &s) != PLUMB_OK)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.pre is not a string");
    static const struct {
        const char *name;
        tok_pre pre;
    } names[] = {{"default", TOK_PRE_DEFAULT}, {"llama3", TOK_PRE_LLAMA3}, {"llama-v3", TOK_PRE_LLAMA3},
                 {"llama-bpe", TOK_PRE_LLAMA3}, {"gpt-2", TOK_PRE_GPT2},     {"qwen2", TOK_PRE_QWEN2},
                 {"smollm", TOK_PRE_SMOLLM}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        if (s.len == strlen(names[k].name) && memcmp(s.ptr, names[k].name, s.len) == 0) {
            v->pre = names[k].pre;
            return PLUMB_OK;
        }
    }
    return plumb__fail(PLUMB_E_UNSUPPORTED,
                       "vocab: tokenizer.ggml.pre '%.*s' is not supported (supported: default, llama3, llama-bpe, "
                       "gpt-2, qwen2, smollm)",
                       (int)(s.len > 64 ? 64 : s.len), s.ptr);
}

static plumb_status read_model(plumb_vocab_t *v, const plumb_gguf_t *g) {
    int64_t i = key_of(g, "tokenizer.ggml.model");
    if (i < 0) return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.model is missing");
    plumb_str s;
    if (plumb_gguf_kv_str(g, i, &s) != PLUMB_OK)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.model is not a string");
    if (s.len == 5 && memcmp(s.ptr, "llama", 5) == 0) v->type = PLUMB_VOCAB_SPM;
    else if (s.len == 4 && memcmp(s.ptr, "gpt2", 4) == 0) v->type = PLUMB_VOCAB_BPE;
    else
        return plumb__fail(PLUMB_E_UNSUPPORTED,
                           "vocab: tokenizer.ggml.model '%.*s' is not supported (supported: llama, gpt2)",
                           (int)(s.len > 64 ? 64 : s.len), s.ptr);
    return PLUMB_OK;
}

static plumb_status create(plumb_vocab_t *v, const plumb_gguf_t *g) {
    plumb_status st = read_model(v, g);
    if (!st && v->type == PLUMB_VOCAB_BPE) st = read_pre(v, g);
    if (!st) st = read_tokens(v, g);
    if (!st) st = build_table(v);
    if (st) return st;

    int32_t n = v->n_tokens;
    /* Defaults as llama.cpp; an out-of-range default is dropped. */
    v->eot = v->eom = v->pad = -1;
    if (v->type == PLUMB_VOCAB_SPM) {
        v->bos = 1, v->eos = 2, v->unk = 0;
        v->add_bos = true, v->add_space_prefix = true;
    } else {
        v->bos = 11, v->eos = 11, v->unk = -1;
        v->add_bos = v->pre == TOK_PRE_LLAMA3, v->add_space_prefix = false;
        v->ignore_merges = v->pre == TOK_PRE_LLAMA3;
    }
    v->add_eos = false;
    if (v->bos >= n) v->bos = -1;
    if (v->eos >= n) v->eos = -1;
    if (v->unk >= n) v->unk = -1;

    if (!st) st = read_id(g, "tokenizer.ggml.bos_token_id", n, &v->bos);
    if (!st) st = read_id(g, "tokenizer.ggml.eos_token_id", n, &v->eos);
    if (!st) st = read_id(g, "tokenizer.ggml.unknown_token_id", n, &v->unk);
    if (!st) st = read_id(g, "tokenizer.ggml.padding_token_id", n, &v->pad);
    if (!st) st = read_id(g, "tokenizer.ggml.eot_token_id", n, &v->eot);
    if (!st) st = read_id(g, "tokenizer.ggml.eom_token_id", n, &v->eom);
    static const char *const fim_keys[6] = {"tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
                                            "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.fim_pad_token_id",
                                            "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id"};
    for (int k = 0; k < 6; k++) {
        v->fim[k] = -1;
        if (!st) st = read_id(g, fim_keys[k], n, &v->fim[k]);
    }
    if (!st) st = read_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos);
    if (!st) st = read_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos);
    if (!st) st = read_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);
    if (st) return st;
    if (v->add_bos && v->bos < 0)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.add_bos_token is set but there is no BOS token");
    if (v->add_eos && v->eos < 0)
        return plumb__fail(PLUMB_E_FORMAT, "vocab: tokenizer.ggml.add_eos_token is set but there is no EOS token");

    /* End of generation: EOS, eot, eom and the tokens with end-of-turn texts, which are
     * control tokens whatever the file says (as llama.cpp does). */
    if (v->eot < 0) {
        for (size_t k = 0; k < sizeof EOT_TEXTS / sizeof EOT_TEXTS[0] && v->eot < 0; k++) v->eot = find_cstr(v, EOT_TEXTS[k]);
    }
    if (v->eom < 0) v->eom = find_cstr(v, "<|eom_id|>");
    /* fill-in-the-middle tokens by their texts when the file does not name them (the families
     * llama.cpp knows: Qwen2.5-Coder / StarCoder, CodeLlama, DeepSeek-Coder, CodeGemma); as in
     * llama.cpp, the pad, repository and file-separator tokens end generation */
    static const char *const fim_texts[6][5] = {
        {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>"},
        {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>"},
        {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>"},
        {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", NULL, NULL},
        {"<|repo_name|>", "<repo_name>", "<reponame>", NULL, NULL},
        {"<|file_sep|>", "<file_sep>", NULL, NULL, NULL}};
    for (int k = 0; k < 6; k++) {
        for (int j = 0; j < 5 && v->fim[k] < 0 && fim_texts[k][j]; j++) v->fim[k] = find_cstr(v, fim_texts[k][j]);
        if (k >= PLUMB_FIM_PAD && v->fim[k] >= 0) v->attr[v->fim[k]] |= TOK_ATTR_EOG | TOK_ATTR_CONTROL;
    }
    for (size_t k = 0; k < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; k++) {
        int32_t id = find_cstr(v, EOG_TEXTS[k]);
        if (id >= 0) v->attr[id] |= TOK_ATTR_EOG | TOK_ATTR_CONTROL;
    }
    if (v->eot >= 0) v->attr[v->eot] |= TOK_ATTR_EOG | TOK_ATTR_CONTROL;
    if (v->eom >= 0) v->attr[v->eom] |= TOK_ATTR_EOG | TOK_ATTR_CONTROL;
    if (v->eos >= 0) v->attr[v->eos] |= TOK_ATTR_EOG;

    st = build_specials(v);
    if (st) return st;
    name_rules(v, g);
    if (v->type == PLUMB_VOCAB_SPM) {
        build_byte_tokens(v);
        return PLUMB_OK;
    }
    for (int b = 0; b < 256; b++) v->byte_token[b] = -1;
    st = read_merges(v, g);
    if (!st) st = plumb__bpe_init(v);
    return st;
}

plumb_status plumb_vocab_create(const plumb_gguf_t *g, plumb_vocab_t **out) {
    if (!g || !out) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_vocab_create: NULL argument");
    *out = NULL;
    plumb_vocab_t *v = calloc(1, sizeof *v);
    if (!v) return plumb__fail(PLUMB_E_NOMEM, "vocab: out of memory");
    plumb_status st = create(v, g);
    if (st) {
        plumb_vocab_free(v);
        return st;
    }
    *out = v;
    return PLUMB_OK;
}

void plumb_vocab_free(plumb_vocab_t *v) {
    if (!v) return;
    plumb__bpe_free(v);
    free(v->text);
    free(v->off);
    free(v->score);
    free(v->attr);
    free(v->tab_id);
    free(v->tab_hash);
    free(v->special);
    free(v->merge_text);
    free(v->merge_off);
    free(v->merge_split);
    free(v->mtab_rank);
    free(v->mtab_hash);
    free(v);
}

/* ---- accessors ----------------------------------------------------------------------------- */

plumb_vocab_type plumb_vocab_get_type(const plumb_vocab_t *v) { return v->type; }
int32_t plumb_vocab_n_tokens(const plumb_vocab_t *v) { return v->n_tokens; }
int32_t plumb_vocab_bos(const plumb_vocab_t *v) { return v->bos; }
int32_t plumb_vocab_eos(const plumb_vocab_t *v) { return v->eos; }
int32_t plumb_vocab_eot(const plumb_vocab_t *v) { return v->eot; }
int32_t plumb_vocab_fim(const plumb_vocab_t *v, plumb_vocab_fim_kind k) {
    return k >= PLUMB_FIM_PRE && k <= PLUMB_FIM_SEP ? v->fim[k] : -1;
}
bool plumb_vocab_add_bos(const plumb_vocab_t *v) { return v->add_bos; }
bool plumb_vocab_add_eos(const plumb_vocab_t *v) { return v->add_eos; }

bool plumb_vocab_is_eog(const plumb_vocab_t *v, int32_t id) {
    return id >= 0 && id < v->n_tokens && (v->attr[id] & TOK_ATTR_EOG);
}

bool plumb_vocab_is_control(const plumb_vocab_t *v, int32_t id) {
    return id >= 0 && id < v->n_tokens && (v->attr[id] & TOK_ATTR_CONTROL);
}

plumb_status plumb_vocab_token_text(const plumb_vocab_t *v, int32_t id, plumb_str *out) {
    if (id < 0 || id >= v->n_tokens)
        return plumb__fail(PLUMB_E_RANGE, "token id %" PRId32 " out of range (vocabulary of %" PRId32 ")", id, v->n_tokens);
    size_t len;
    out->ptr = tok_text(v, id, &len);
    out->len = len;
    return PLUMB_OK;
}

int32_t plumb_vocab_find(const plumb_vocab_t *v, const char *text, size_t len) {
    if (!text || len == 0) return -1;
    return plumb__tok_find(v, text, len);
}
