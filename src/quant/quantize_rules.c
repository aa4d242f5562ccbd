/* quantize_rules.c — which type each tensor of a model gets when quantized to a file type:
 * llama.cpp's rules (src/llama-quant.cpp, llama_tensor_get_type), restated for the file
 * types plumb writes. A mixture (Q4_K_M, Q3_K_S, ...) keeps some tensors at higher
 * precision by kind (attn_v, ffn_down, attn_output, the output and token embeddings) and by
 * layer position; a row length that does not fit the chosen block size falls back to a
 * smaller block (and to F16 when even that does not fit). Matching llama.cpp tensor for
 * tensor is the point: plumb quantize must write the same file. */
#include "quant/quantize_model.h"

#include "core/error.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- file types ---------------------------------------------------------------------------- */

typedef struct ftype_entry {
    const char *name;
    int ftype;
    int default_type;
    bool alias; /* another name for a file type listed under its own name too */
} ftype_entry;

static const ftype_entry ftypes[] = {
    {"Q4_0", PLUMB_FTYPE_Q4_0, PLUMB_TYPE_Q4_0, false},
    {"Q4_1", PLUMB_FTYPE_Q4_1, PLUMB_TYPE_Q4_1, false},
    {"Q5_0", PLUMB_FTYPE_Q5_0, PLUMB_TYPE_Q5_0, false},
    {"Q5_1", PLUMB_FTYPE_Q5_1, PLUMB_TYPE_Q5_1, false},
    {"Q2_K", PLUMB_FTYPE_Q2_K, PLUMB_TYPE_Q2_K, false},
    {"Q2_K_S", PLUMB_FTYPE_Q2_K_S, PLUMB_TYPE_Q2_K, false},
    {"Q3_K", PLUMB_FTYPE_Q3_K_M, PLUMB_TYPE_Q3_K, true},
    {"Q3_K_S", PLUMB_FTYPE_Q3_K_S, PLUMB_TYPE_Q3_K, false},
    {"Q3_K_M", PLUMB_FTYPE_Q3_K_M, PLUMB_TYPE_Q3_K, false},
    {"Q3_K_L", PLUMB_FTYPE_Q3_K_L, PLUMB_TYPE_Q3_K, false},
    {"Q4_K", PLUMB_FTYPE_Q4_K_M, PLUMB_TYPE_Q4_K, true},
    {"Q4_K_S", PLUMB_FTYPE_Q4_K_S, PLUMB_TYPE_Q4_K, false},
    {"Q4_K_M", PLUMB_FTYPE_Q4_K_M, PLUMB_TYPE_Q4_K, false},
    {"Q5_K", PLUMB_FTYPE_Q5_K_M, PLUMB_TYPE_Q5_K, true},
    {"Q5_K_S", PLUMB_FTYPE_Q5_K_S, PLUMB_TYPE_Q5_K, false},
    {"Q5_K_M", PLUMB_FTYPE_Q5_K_M, PLUMB_TYPE_Q5_K, false},
    {"Q6_K", PLUMB_FTYPE_Q6_K, PLUMB_TYPE_Q6_K, false},
    {"Q8_0", PLUMB_FTYPE_Q8_0, PLUMB_TYPE_Q8_0, false},
    {"F16", PLUMB_FTYPE_F16, PLUMB_TYPE_F16, false},
    {"BF16", PLUMB_FTYPE_BF16, PLUMB_TYPE_BF16, false},
    {"F32", PLUMB_FTYPE_F32, PLUMB_TYPE_F32, false},
};
#define N_FTYPES (sizeof ftypes / sizeof ftypes[0])

static bool name_eq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
    return *a == *b;
}

int plumb_quantize_ftype_from_name(const char *name) {
    if (!name) return -1;
    for (size_t i = 0; i < N_FTYPES; i++)
        if (name_eq(ftypes[i].name, name)) return ftypes[i].ftype;
    /* A number names a file type too, as llama-quantize accepts "15". */
    if (*name >= '0' && *name <= '9' && strlen(name) <= 3) {
        char *end;
        long v = strtol(name, &end, 10);
        if (*end == '\0' && plumb_quantize_ftype_name((int)v)) return (int)v;
    }
    return -1;
}

const char *plumb_quantize_ftype_name(int ftype) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].ftype == ftype && !ftypes[i].alias) return ftypes[i].name;
    return NULL;
}

const char *plumb_quantize_ftype_list(void) {
    return "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M (Q3_K), Q3_K_L, Q4_K_S, Q4_K_M (Q4_K), "
           "Q5_K_S, Q5_K_M (Q5_K), Q6_K, Q8_0, F16, BF16, F32";
}

int plumb__ftype_default_type(int ftype) {
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].ftype == ftype) return ftypes[i].default_type;
    return -1;
}

/* ---- tensor order and kinds ------------------------------------------------------------------ */

/* The N of a "blk.N." prefix as llama.cpp's sscanf("blk.%d.") reads it, or -1. */
static int layer_of(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return -1;
    const char *p = name + 4;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < -2147483647L - 1 || v > 2147483647L) return -1;
    return (int)v;
}

/* Like sscanf("blk.%d."): the number must be followed by a '.' to count. */
static bool layer_of_strict(const char *name, int *out) {
    if (strncmp(name, "blk.", 4) != 0) return false;
    const char *p = name + 4;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < -2147483647L - 1 || v > 2147483647L) return false;
    *out = (int)v;
    return true;
}

int plumb__qz_tensor_cmp(const char *a, const char *b) {
    int la = layer_of(a), lb = layer_of(b);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a, b);
}

typedef enum kind {
    K_TOKEN_EMBD,
    K_ATTN_Q,
    K_ATTN_V, /* attn_v, attn_qkv, attn_kv_b: the values, most sensitive to quantization */
    K_ATTN_K,
    K_ATTN_OUTPUT,
    K_FFN_UP,
    K_FFN_GATE,
    K_FFN_DOWN,
    K_OUTPUT,
    K_OTHER
} kind;

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static kind kind_of(const char *name) {
    if (strcmp(name, "output.weight") == 0) return K_OUTPUT;
    if (strcmp(name, "token_embd.weight") == 0 || strcmp(name, "per_layer_token_embd.weight") == 0)
        return K_TOKEN_EMBD;
    if (has(name, "attn_qkv.weight") || has(name, "attn_kv_b.weight") || has(name, "attn_v.weight")) return K_ATTN_V;
    if (has(name, "attn_k.weight")) return K_ATTN_K;
    if (has(name, "attn_q.weight")) return K_ATTN_Q;
    if (has(name, "attn_output.weight")) return K_ATTN_OUTPUT;
    if (has(name, "ffn_up")) return K_FFN_UP;
    if (has(name, "ffn_gate")) return K_FFN_GATE;
    if (has(name, "ffn_down")) return K_FFN_DOWN;
    return K_OTHER;
}

/* Small or special weights llama.cpp leaves as they are, by a part of their name. */
static const char *const keep_parts[] = {
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
    "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd",
    "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
};

bool plumb__qz_allows_quantization(const plumb__qz_tensor *t) {
    if (t->n_dims < 2) return false;
    const char *name = t->name;
    size_t len = strlen(name);
    /* "ends in weight", as llama.cpp tests it: the last "weight" sits at len - 6. A name of
     * 5 bytes without "weight" passes too there (no match, npos, equals 5 - 6 unsigned). */
    bool q;
    const char *last = NULL;
    for (const char *p = strstr(name, "weight"); p; p = strstr(p + 1, "weight")) last = p;
    if (last) q = (size_t)(last - name) == len - 6;
    else q = len == 5;
    for (size_t i = 0; q && i < sizeof keep_parts / sizeof keep_parts[0]; i++)
        if (has(name, keep_parts[i])) q = false;
    if (strcmp(name, "position_embd.weight") == 0 || strcmp(name, "token_types.weight") == 0) q = false;
    return q;
}

/* ---- the rules ---------------------------------------------------------------------------- */

typedef struct rules_state {
    const plumb__qz_model *m;
    const plumb__qz_rules *r;
    int n_attention_wv, i_attention_wv;
    int n_ffn, i_ffn_down, i_ffn_gate, i_ffn_up;
    int n_fallback;
    bool tied_embeddings; /* no output.weight: the token embeddings serve as the output too */
} rules_state;

static bool is_quantized(int type) { return plumb_type_block_size(type) > 1; }

static bool use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

static int n_gqa(const plumb__qz_model *m) {
    if (m->n_head_kv <= 0) return 0;
    return (int)((uint32_t)m->n_head / (uint32_t)m->n_head_kv);
}

/* The layer of an FFN tensor: its position among its kind (counter), or for a mixture of
 * experts its "blk.N." number, checked against the model's layers. */
static plumb_status layer_info(const rules_state *s, int counter, const char *name, int *i_layer) {
    *i_layer = counter;
    if (s->m->n_expert > 1) {
        if (!layer_of_strict(name, i_layer))
            return plumb__fail(PLUMB_E_FORMAT, "cannot tell the layer of tensor %s", name);
        if (*i_layer < 0 || *i_layer >= s->n_ffn)
            return plumb__fail(PLUMB_E_FORMAT, "tensor %s: layer %d is not in [0, %d)", name, *i_layer, s->n_ffn);
    }
    return PLUMB_OK;
}

/* The mixture rules proper: new_type is the file type's default. */
static plumb_status mixture_type(rules_state *s, const plumb__qz_tensor *t, kind k, int new_type, int *out) {
    const plumb__qz_model *m = s->m;
    const int ftype = s->r->ftype;
    const bool falcon = strcmp(m->arch, "falcon") == 0;
    const bool is_70b = strcmp(m->arch, "llama") == 0 && m->n_layer == 80 && m->n_head != m->n_head_kv;
    plumb_status st;
    int i_layer;

    if (k == K_OUTPUT || (s->tied_embeddings && k == K_TOKEN_EMBD)) {
        if (s->r->output_type >= 0) new_type = s->r->output_type;
        else if (falcon || t->ne[0] % plumb_type_block_size(new_type) != 0) new_type = PLUMB_TYPE_Q8_0;
        else if (new_type != PLUMB_TYPE_Q8_0) new_type = PLUMB_TYPE_Q6_K;
    } else if (k == K_TOKEN_EMBD) {
        if (s->r->token_embd_type >= 0) new_type = s->r->token_embd_type;
    } else if (k == K_ATTN_V) {
        if (ftype == PLUMB_FTYPE_Q2_K) new_type = n_gqa(m) >= 4 ? PLUMB_TYPE_Q4_K : PLUMB_TYPE_Q3_K;
        else if (ftype == PLUMB_FTYPE_Q2_K_S && n_gqa(m) >= 4) new_type = PLUMB_TYPE_Q4_K;
        else if (ftype == PLUMB_FTYPE_Q3_K_M) new_type = s->i_attention_wv < 2 ? PLUMB_TYPE_Q5_K : PLUMB_TYPE_Q4_K;
        else if (ftype == PLUMB_FTYPE_Q3_K_L) new_type = PLUMB_TYPE_Q5_K;
        else if ((ftype == PLUMB_FTYPE_Q4_K_M || ftype == PLUMB_FTYPE_Q5_K_M) &&
                 use_more_bits(s->i_attention_wv, s->n_attention_wv))
            new_type = PLUMB_TYPE_Q6_K;
        else if (ftype == PLUMB_FTYPE_Q4_K_S && s->i_attention_wv < 4) new_type = PLUMB_TYPE_Q5_K;
        /* 70B llama: 8 heads share each attn_v, which is small; more bits cost little. */
        if (is_70b && (new_type == PLUMB_TYPE_Q3_K || new_type == PLUMB_TYPE_Q4_K)) new_type = PLUMB_TYPE_Q5_K;
        if (m->n_expert == 8) new_type = PLUMB_TYPE_Q8_0;
        s->i_attention_wv++;
    } else if (k == K_ATTN_K) {
        if (m->n_expert == 8) new_type = PLUMB_TYPE_Q8_0;
    } else if (k == K_FFN_DOWN) {
        if ((st = layer_info(s, s->i_ffn_down, t->name, &i_layer))) return st;
        const int n_layer = s->n_ffn;
        if (ftype == PLUMB_FTYPE_Q2_K) new_type = PLUMB_TYPE_Q3_K;
        else if (ftype == PLUMB_FTYPE_Q2_K_S) {
            if (i_layer < n_layer / 8) new_type = PLUMB_TYPE_Q4_K;
        } else if (ftype == PLUMB_FTYPE_Q3_K_M) {
            new_type = i_layer < n_layer / 16                         ? PLUMB_TYPE_Q5_K
                       : !falcon || use_more_bits(i_layer, n_layer) ? PLUMB_TYPE_Q4_K
                                                                      : PLUMB_TYPE_Q3_K;
        } else if (ftype == PLUMB_FTYPE_Q3_K_L) {
            new_type = falcon ? PLUMB_TYPE_Q4_K : PLUMB_TYPE_Q5_K;
        } else if (ftype == PLUMB_FTYPE_Q4_K_M) {
            if (falcon)
                new_type = i_layer < n_layer / 16          ? PLUMB_TYPE_Q6_K
                           : use_more_bits(i_layer, n_layer) ? PLUMB_TYPE_Q5_K
                                                             : PLUMB_TYPE_Q4_K;
            else if (use_more_bits(i_layer, n_layer))
                new_type = PLUMB_TYPE_Q6_K;
        } else if (ftype == PLUMB_FTYPE_Q5_K_M && use_more_bits(i_layer, n_layer)) {
            new_type = PLUMB_TYPE_Q6_K;
        } else if (ftype == PLUMB_FTYPE_Q4_K_S && !falcon && i_layer < n_layer / 8) {
            new_type = PLUMB_TYPE_Q5_K;
        } else if ((ftype == PLUMB_FTYPE_Q4_0 || ftype == PLUMB_FTYPE_Q5_0) && s->r->has_imatrix &&
                   i_layer < n_layer / 8) {
            /* the first ffn_down layers misbehave at 4/5 bits even with an imatrix */
            new_type = ftype == PLUMB_FTYPE_Q4_0 ? PLUMB_TYPE_Q4_1 : PLUMB_TYPE_Q5_1;
        }
        s->i_ffn_down++;
    } else if (k == K_ATTN_OUTPUT) {
        if (!falcon) {
            if (m->n_expert == 8) {
                if (ftype == PLUMB_FTYPE_Q2_K || ftype == PLUMB_FTYPE_Q3_K_S || ftype == PLUMB_FTYPE_Q3_K_M ||
                    ftype == PLUMB_FTYPE_Q4_K_S || ftype == PLUMB_FTYPE_Q4_K_M)
                    new_type = PLUMB_TYPE_Q5_K;
            } else {
                if (ftype == PLUMB_FTYPE_Q2_K) new_type = PLUMB_TYPE_Q3_K;
                else if (ftype == PLUMB_FTYPE_Q3_K_M) new_type = PLUMB_TYPE_Q4_K;
                else if (ftype == PLUMB_FTYPE_Q3_K_L) new_type = PLUMB_TYPE_Q5_K;
            }
        } else if (ftype == PLUMB_FTYPE_Q3_K_L) {
            new_type = PLUMB_TYPE_Q4_K;
        }
    } else if (k == K_FFN_GATE) {
        /* only the IQ mixtures, which plumb does not write, change these; the layer check
         * stays, as llama.cpp refuses an expert tensor it cannot place */
        if ((st = layer_info(s, s->i_ffn_gate, t->name, &i_layer))) return st;
        s->i_ffn_gate++;
    } else if (k == K_FFN_UP) {
        if ((st = layer_info(s, s->i_ffn_up, t->name, &i_layer))) return st;
        s->i_ffn_up++;
    }
    *out = new_type;
    return PLUMB_OK;
}

/* A type whose block does not divide the row length gives way to a smaller block, and to
 * F16 when that does not fit either. */
static plumb_status fallback_type(rules_state *s, const plumb__qz_tensor *t, int type, int *out) {
    int64_t ncols = t->ne[0];
    int64_t blck = plumb_type_block_size(type);
    *out = type;
    if (blck <= 0 || ncols % blck == 0) return PLUMB_OK;
    s->n_fallback++;
    int ret;
    switch (type) {
    case PLUMB_TYPE_Q2_K:
    case PLUMB_TYPE_Q3_K: ret = PLUMB_TYPE_Q4_0; break;
    case PLUMB_TYPE_Q4_K: ret = PLUMB_TYPE_Q5_0; break;
    case PLUMB_TYPE_Q5_K: ret = PLUMB_TYPE_Q5_1; break;
    case PLUMB_TYPE_Q6_K: ret = PLUMB_TYPE_Q8_0; break;
    default:
        if (blck <= 32) {
            ret = type;
            break;
        }
        return plumb__fail(PLUMB_E_UNSUPPORTED, "tensor %s: no fallback for type %s with rows of %" PRId64, t->name,
                           plumb_type_name(type), ncols);
    }
    if (ncols % plumb_type_block_size(ret) != 0) ret = PLUMB_TYPE_F16;
    *out = ret;
    return PLUMB_OK;
}

plumb_status plumb__qz_choose_types(const plumb__qz_model *m, const plumb__qz_rules *r, const plumb__qz_tensor *t,
                                    int64_t n, int *types, bool *needs_imatrix, int *n_fallback) {
    int default_type = plumb__ftype_default_type(r->ftype);
    if (default_type < 0) return plumb__fail(PLUMB_E_UNSUPPORTED, "file type %d is not one plumb writes", r->ftype);
    rules_state s = {.m = m, .r = r, .n_ffn = m->n_layer, .tied_embeddings = true};
    for (int64_t i = 0; i < n; i++) {
        kind k = kind_of(t[i].name);
        if (k == K_ATTN_V) s.n_attention_wv++;
        if (k == K_OUTPUT) s.tied_embeddings = false;
    }
    for (int64_t i = 0; i < n; i++) {
        const plumb__qz_tensor *ti = &t[i];
        kind k = kind_of(ti->name);
        int type = ti->type;
        if (!plumb__qz_allows_quantization(ti)) {
            type = ti->type;
        } else if (r->token_embd_type >= 0 && k == K_TOKEN_EMBD) {
            type = r->token_embd_type;
        } else if (r->output_type >= 0 && k == K_OUTPUT) {
            type = r->output_type;
        } else {
            type = default_type;
            if (is_quantized(default_type)) {
                plumb_status st;
                if (!r->pure && (st = mixture_type(&s, ti, k, type, &type))) return st;
                if ((st = fallback_type(&s, ti, type, &type))) return st;
            }
        }
        types[i] = type;
        if (needs_imatrix) {
            /* the K formats do without, except Q2_K inside a Q2_K_S file */
            needs_imatrix[i] = k != K_TOKEN_EMBD && k != K_OUTPUT && type == PLUMB_TYPE_Q2_K &&
                               r->ftype == PLUMB_FTYPE_Q2_K_S;
        }
    }
    if (n_fallback) *n_fallback = s.n_fallback;
    return PLUMB_OK;
}
