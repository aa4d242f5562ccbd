/* model.c — model loading: the architecture registry, weight lookup with shape checks,
 * hyperparameter getters, and graph pieces shared by the architectures. */
#include "model/model.h"

#include "backend/cpu/kernels/kernels.h"
#include "core/error.h"
#include "gguf/gguf_split.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const plumb_arch *const archs[] = {&plumb__arch_llama, &plumb__arch_gemma3, &plumb__arch_qwen2,
                                          &plumb__arch_qwen3, &plumb__arch_gemma2, &plumb__arch_phi3,
                                          &plumb__arch_qwen3moe};

/* The names of the registry, comma-separated, made once (the registry is constant). */
static char supported[256];
static pthread_once_t supported_once = PTHREAD_ONCE_INIT;

static void list_archs(void) {
    size_t at = 0;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        at += (size_t)snprintf(supported + at, sizeof supported - at, "%s%s", i ? ", " : "", archs[i]->name);
}

const char *plumb_model_supported_archs(void) {
    pthread_once(&supported_once, list_archs);
    return supported;
}

plumb_status plumb__model_bad_key(const plumb_model_t *m, const char *suffix, double v, const char *why) {
    return plumb__fail(PLUMB_E_FORMAT, "%s: %s.%s is %.9g, %s", m->name, m->arch->name, suffix, v, why);
}

/* The message for a required key that is absent; names it and the architecture. */
static plumb_status missing_key(const plumb_model_t *m, const char *key) {
    return plumb__fail(PLUMB_E_FORMAT, "%s: the model is missing key '%s' (architecture %s)", m->name, key, m->arch->name);
}

plumb_status plumb__model_u32(const plumb_model_t *m, const char *suffix, bool required, int32_t *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->arch->name, suffix);
    uint64_t v;
    plumb_status st = plumb_gguf_get_count(m->gguf, key, &v);
    if (st == PLUMB_E_NOT_FOUND) return required ? missing_key(m, key) : PLUMB_OK;
    if (st) return st; /* the reader's message names the key and what it holds instead */
    if (v > INT32_MAX) return plumb__fail(PLUMB_E_FORMAT, "%s: %s = %llu is out of range", m->name, key, (unsigned long long)v);
    *out = (int32_t)v;
    return PLUMB_OK;
}

plumb_status plumb__model_f32(const plumb_model_t *m, const char *suffix, bool required, float *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->arch->name, suffix);
    float v;
    plumb_status st = plumb_gguf_get_f32(m->gguf, key, &v);
    if (st == PLUMB_E_NOT_FOUND) return required ? missing_key(m, key) : PLUMB_OK;
    if (st) return st;
    if (!isfinite(v)) return plumb__fail(PLUMB_E_FORMAT, "%s: %s is not a finite number", m->name, key);
    *out = v;
    return PLUMB_OK;
}

plumb_status plumb__model_common_hparams(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    plumb_status st;
    if ((st = plumb__model_u32(m, "context_length", false, &hp->n_ctx_train)) ||
        (st = plumb__model_u32(m, "embedding_length", true, &hp->n_embd)) ||
        (st = plumb__model_u32(m, "block_count", true, &hp->n_layer)) ||
        (st = plumb__model_u32(m, "feed_forward_length", true, &hp->n_ff)) ||
        (st = plumb__model_u32(m, "attention.head_count", true, &hp->n_head)))
        return st;
    hp->n_head_kv = hp->n_head;
    hp->pooling = -1;
    if ((st = plumb__model_u32(m, "pooling_type", false, &hp->pooling))) return st;
    if (hp->pooling > PLUMB_POOLING_LAST) return plumb__model_bad_key(m, "pooling_type", hp->pooling, "must be 0 to 3");
    if ((st = plumb__model_u32(m, "attention.head_count_kv", false, &hp->n_head_kv)) ||
        (st = plumb__model_f32(m, "attention.layer_norm_rms_epsilon", false, &hp->eps)) ||
        (st = plumb__model_f32(m, "rope.freq_base", false, &hp->rope_base)))
        return st;
    /* counts are >= 0 here (plumb__model_u32); each check names the key at fault */
    if (hp->n_ctx_train == 0) return plumb__model_bad_key(m, "context_length", 0, "must be positive");
    if (hp->n_embd == 0) return plumb__model_bad_key(m, "embedding_length", 0, "must be positive");
    char why[96];
    if (hp->n_layer == 0 || hp->n_layer > PLUMB_MAX_LAYERS) {
        snprintf(why, sizeof why, "must be 1 to %d", PLUMB_MAX_LAYERS);
        return plumb__model_bad_key(m, "block_count", hp->n_layer, why);
    }
    if (hp->n_ff == 0) return plumb__model_bad_key(m, "feed_forward_length", 0, "must be positive");
    if (hp->n_head == 0) return plumb__model_bad_key(m, "attention.head_count", 0, "must be positive");
    if (hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0) {
        snprintf(why, sizeof why, "must divide attention.head_count (%d)", hp->n_head);
        return plumb__model_bad_key(m, "attention.head_count_kv", hp->n_head_kv, why);
    }
    /* a zero or negative epsilon divides by zero (or takes the root of a negative) on a row
     * of zeros; a zero or negative base makes every rotation angle inf or NaN */
    if (!(hp->eps > 0.0f))
        return plumb__model_bad_key(m, "attention.layer_norm_rms_epsilon", hp->eps, "must be positive");
    if (!(hp->rope_base > 0.0f)) return plumb__model_bad_key(m, "rope.freq_base", hp->rope_base, "must be positive");
    /* The head size: attention.key_length, else the embedding split evenly over the heads;
     * RoPE rotates pairs of it, so it is even. */
    hp->head_dim = -1;
    if ((st = plumb__model_u32(m, "attention.key_length", false, &hp->head_dim))) return st;
    if (hp->head_dim < 0) {
        if (hp->n_embd % hp->n_head != 0) {
            snprintf(why, sizeof why, "not a multiple of attention.head_count (%d), and attention.key_length is absent",
                     hp->n_head);
            return plumb__model_bad_key(m, "embedding_length", hp->n_embd, why);
        }
        hp->head_dim = hp->n_embd / hp->n_head;
        if (hp->head_dim % 2)
            return plumb__fail(PLUMB_E_FORMAT, "%s: the head size %d (%s.embedding_length / attention.head_count) is odd",
                               m->name, hp->head_dim, m->arch->name);
    } else if (hp->head_dim == 0 || hp->head_dim % 2)
        return plumb__model_bad_key(m, "attention.key_length", hp->head_dim, "must be positive and even");
    /* plumb's attention gives values the keys' head size */
    int32_t vlen = hp->head_dim;
    if ((st = plumb__model_u32(m, "attention.value_length", false, &vlen))) return st;
    if (vlen != hp->head_dim) {
        snprintf(why, sizeof why, "must equal the head size (%d)", hp->head_dim);
        return plumb__model_bad_key(m, "attention.value_length", vlen, why);
    }
    return PLUMB_OK;
}

plumb_status plumb__model_rope_scaling(plumb_model_t *m, float *freq_scale) {
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch->name);
    plumb_str type;
    plumb_status st = plumb_gguf_get_str(m->gguf, key, &type);
    if (st && st != PLUMB_E_NOT_FOUND) return st; /* present but not a string */
    if (st == PLUMB_OK && !(type.len == 6 && !memcmp(type.ptr, "linear", 6)) && !(type.len == 4 && !memcmp(type.ptr, "none", 4)))
        return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: %s '%.*s' is not supported (linear is)", m->name, key,
                           (int)(type.len > 32 ? 32 : type.len), type.ptr);
    float factor = 0.0f; /* 0 or absent: no scaling, as llama.cpp reads it */
    if ((st = plumb__model_f32(m, "rope.scaling.factor", false, &factor))) return st;
    if (factor < 0.0f || (factor > 0.0f && !isfinite(1.0f / factor)))
        return plumb__model_bad_key(m, "rope.scaling.factor", factor, "must be positive (or 0: none)");
    if (factor > 0.0f) *freq_scale = 1.0f / factor;
    return PLUMB_OK;
}

plumb_status plumb__model_embeddings(plumb_model_t *m) {
    plumb_hparams *hp = &m->hp;
    const int32_t n_vocab = plumb_vocab_n_tokens(m->vocab);
    const int64_t ne[2] = {hp->n_embd, -1}, ne_out[2] = {hp->n_embd, n_vocab};
    plumb_status st;
    if ((st = plumb__model_tensor(m, "token_embd.weight", 2, ne, false, &m->token_embd))) return st;
    /* token ids index the embedding's rows (and the head's): one row per token */
    if (m->token_embd->ne[1] != n_vocab)
        return plumb__fail(PLUMB_E_FORMAT, "%s: tensor 'token_embd.weight' has %lld rows but the vocabulary %d tokens",
                           m->name, (long long)m->token_embd->ne[1], n_vocab);
    hp->n_vocab = n_vocab;
    if ((st = plumb__model_vector(m, "output_norm.weight", hp->n_embd, false, &m->output_norm)) ||
        (st = plumb__model_tensor(m, "output.weight", 2, ne_out, true, &m->output)))
        return st;
    return PLUMB_OK;
}

plumb_status plumb__model_attn_tensors(plumb_model_t *m, int il, plumb_layer_weights *L) {
    const plumb_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t q[2] = {E, Q}, kv[2] = {E, KV}, o[2] = {Q, E};
    plumb_status st;
    if ((st = plumb__model_layer_vector(m, il, "attn_norm.weight", E, false, &L->attn_norm)) ||
        (st = plumb__model_layer_tensor(m, il, "attn_q.weight", 2, q, false, &L->wq)) ||
        (st = plumb__model_layer_tensor(m, il, "attn_k.weight", 2, kv, false, &L->wk)) ||
        (st = plumb__model_layer_tensor(m, il, "attn_v.weight", 2, kv, false, &L->wv)) ||
        (st = plumb__model_layer_tensor(m, il, "attn_output.weight", 2, o, false, &L->wo)) ||
        (st = plumb__model_layer_vector(m, il, "ffn_norm.weight", E, false, &L->ffn_norm)))
        return st;
    return PLUMB_OK;
}

plumb_status plumb__model_common_layer(plumb_model_t *m, int il, plumb_layer_weights *L) {
    const plumb_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd;
    const int64_t up[2] = {E, hp->n_ff}, down[2] = {hp->n_ff, E};
    plumb_status st;
    if ((st = plumb__model_attn_tensors(m, il, L)) ||
        (st = plumb__model_layer_tensor(m, il, "ffn_gate.weight", 2, up, false, &L->ffn_gate)) ||
        (st = plumb__model_layer_tensor(m, il, "ffn_up.weight", 2, up, false, &L->ffn_up)) ||
        (st = plumb__model_layer_tensor(m, il, "ffn_down.weight", 2, down, false, &L->ffn_down)))
        return st;
    return PLUMB_OK;
}

/* "[a x b x ...]" of n dims into buf; a dim <= 0 (not checked) prints as "*". */
static void format_shape(char *buf, size_t cap, int n, const int64_t *ne) {
    size_t a = 0;
    buf[0] = '\0';
    for (int d = 0; d < n && a < cap; d++) {
        int k = ne[d] > 0 ? snprintf(buf + a, cap - a, "%s%lld", d ? " x " : "", (long long)ne[d])
                          : snprintf(buf + a, cap - a, "%s*", d ? " x " : "");
        if (k < 0) break;
        a += (size_t)k;
    }
}

plumb_status plumb__model_tensor(plumb_model_t *m, const char *name, int n_dims, const int64_t *ne, bool optional,
                                 plumb_tensor **out) {
    *out = NULL;
    int64_t i = plumb_gguf_find_tensor(m->gguf, name);
    if (i < 0) {
        if (optional) return PLUMB_OK;
        return plumb__fail(PLUMB_E_FORMAT, "%s: the model is missing tensor '%s' (architecture %s)", m->name, name,
                           m->arch->name);
    }
    plumb_gguf_tensor_info info;
    plumb_gguf_tensor(m->gguf, i, &info);
    bool ok = info.n_dims <= n_dims;
    for (int d = 0; ok && d < n_dims; d++) ok = ne[d] <= 0 || info.ne[d] == ne[d];
    for (int d = n_dims; ok && d < PLUMB_GGUF_MAX_DIMS; d++) ok = info.ne[d] == 1;
    if (!ok) {
        char want[96], got[96];
        format_shape(want, sizeof want, n_dims, ne);
        format_shape(got, sizeof got, (int)info.n_dims, info.ne);
        return plumb__fail(PLUMB_E_FORMAT, "%s: tensor '%s' has shape [%s], expected [%s]", m->name, name, got, want);
    }
    /* every type the reader accepts has kernels today; this keeps a new reader type from
     * reaching ops that lack it */
    if (plumb__act_type(info.type) < 0)
        return plumb__fail(PLUMB_E_UNSUPPORTED, "%s: tensor '%s' has type %s, which plumb cannot compute with", m->name, name,
                           plumb_type_name(info.type));
    /* the kernels read F32, F16 and BF16 weights as arrays of their element type (quantized
     * blocks are read byte-wise); a file with general.alignment 1 or 2 can misplace them */
    const size_t elem = plumb_type_block_size(info.type) == 1 ? plumb_type_block_bytes(info.type) : 1;
    if ((uintptr_t)info.data % elem != 0)
        return plumb__fail(PLUMB_E_FORMAT, "%s: tensor '%s': its %s data is not %zu-byte aligned (general.alignment %llu)",
                           m->name, name, plumb_type_name(info.type), elem,
                           (unsigned long long)plumb_gguf_alignment(m->gguf));
    PLUMB_ASSERT(m->n_weights < m->cap_weights);
    plumb_tensor *t = &m->weights[m->n_weights++];
    memset(t, 0, sizeof *t);
    t->type = info.type;
    for (int d = 0; d < 4; d++) t->ne[d] = info.ne[d];
    t->nb[0] = plumb_type_block_bytes(info.type) / (size_t)plumb_type_block_size(info.type);
    t->nb[1] = plumb_row_size(info.type, info.ne[0]);
    t->nb[2] = t->nb[1] * (size_t)t->ne[1];
    t->nb[3] = t->nb[2] * (size_t)t->ne[2];
    t->data = (void *)info.data;
    t->name = info.name;
    t->id = -1;
    *out = t;
    return PLUMB_OK;
}

plumb_status plumb__model_vector(plumb_model_t *m, const char *name, int64_t n, bool optional, plumb_tensor **out) {
    const int64_t ne[1] = {n};
    plumb_status st = plumb__model_tensor(m, name, 1, ne, optional, out);
    if (st || !*out) return st;
    if ((*out)->type != PLUMB_TYPE_F32) {
        const int type = (*out)->type;
        *out = NULL;
        return plumb__fail(PLUMB_E_FORMAT, "%s: tensor '%s' has type %s, expected F32 (it is applied element by element)",
                           m->name, name, plumb_type_name(type));
    }
    return PLUMB_OK;
}

plumb_status plumb__model_layer_tensor(plumb_model_t *m, int il, const char *suffix, int n_dims, const int64_t *ne,
                                       bool optional, plumb_tensor **out) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", il, suffix);
    return plumb__model_tensor(m, name, n_dims, ne, optional, out);
}

plumb_status plumb__model_layer_vector(plumb_model_t *m, int il, const char *suffix, int64_t n, bool optional,
                                       plumb_tensor **out) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", il, suffix);
    return plumb__model_vector(m, name, n, optional, out);
}

plumb_model_params plumb_model_default_params(void) {
    return (plumb_model_params){.use_mmap = false, .device = NULL, .n_offload = -1};
}

plumb_status plumb_model_load(const char *path, plumb_model_t **out) { return plumb_model_load_params(path, NULL, out); }

plumb_status plumb_model_load_params(const char *path, const plumb_model_params *params, plumb_model_t **out) {
    if (!path || !out) return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_model_load: NULL argument");
    *out = NULL;
    const plumb_model_params p = params ? *params : plumb_model_default_params();
    plumb_gguf_t *g;
    /* a single file as plumb_gguf_open_ex opens it; the first shard of a split model with
     * its siblings, found by their names */
    plumb_status st = plumb__gguf_open_model(path, p.use_mmap ? 0 : PLUMB_GGUF_OPEN_READ, &g);
    return st ? st : plumb__model_from_gguf(g, path, &p, out);
}

plumb_status plumb_model_load_shards(const char *const *paths, int n, const plumb_model_params *params,
                                     plumb_model_t **out) {
    if (!paths || !out || n < 1 || !paths[0])
        return plumb__fail(PLUMB_E_INVALID_ARG, "plumb_model_load_shards: NULL argument or no paths");
    *out = NULL;
    const plumb_model_params p = params ? *params : plumb_model_default_params();
    plumb_gguf_t *g;
    plumb_status st = plumb__gguf_open_shards(paths, n, p.use_mmap ? 0 : PLUMB_GGUF_OPEN_READ, &g);
    return st ? st : plumb__model_from_gguf(g, paths[0], &p, out);
}

plumb_status plumb__model_from_gguf(plumb_gguf_t *g, const char *name, const plumb_model_params *p,
                                    plumb_model_t **out) {
    *out = NULL;
    plumb_model_t *m = calloc(1, sizeof *m);
    char *name_copy = strdup(name);
    if (!m || !name_copy) {
        free(m);
        free(name_copy);
        plumb_gguf_free(g);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    }
    m->gguf = g;
    m->name = name_copy;
    plumb_status st;
    /* kept for plumb_model_get_info, whose strings live as long as the model */
    plumb_str general_name;
    if (plumb_gguf_get_str(m->gguf, "general.name", &general_name) != PLUMB_OK) general_name = (plumb_str){"", 0};
    if (!(m->general_name = strndup(general_name.ptr, general_name.len))) {
        st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
        goto fail;
    }
    plumb_str arch;
    if (plumb_gguf_get_str(m->gguf, "general.architecture", &arch) != PLUMB_OK) {
        st = plumb__fail(PLUMB_E_FORMAT, "%s: no general.architecture string: not a model file?", name);
        goto fail;
    }
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strlen(archs[i]->name) == arch.len && memcmp(archs[i]->name, arch.ptr, arch.len) == 0) m->arch = archs[i];
    if (!m->arch) {
        st = plumb__fail(PLUMB_E_UNSUPPORTED, "%s: architecture '%.*s' is not supported (supported: %s)", name,
                         (int)(arch.len > 64 ? 64 : arch.len), arch.ptr, plumb_model_supported_archs());
        goto fail;
    }
    m->cap_weights = (int32_t)plumb_gguf_tensor_count(m->gguf) + 2; /* + a tied output head's device copy */
    m->weights = calloc((size_t)m->cap_weights, sizeof *m->weights);
    if (!m->weights) {
        st = plumb__fail(PLUMB_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = plumb_vocab_create(m->gguf, &m->vocab))) {
        /* the vocabulary's messages do not name the file; every other load error does */
        char detail[512];
        snprintf(detail, sizeof detail, "%s", plumb_last_error());
        st = plumb__fail(st, "%s: %s", name, detail);
        goto fail;
    }
    if ((st = m->arch->load(m))) goto fail;
    /* the architectures read n_vocab through plumb__model_embeddings, which checks it */
    PLUMB_ASSERT(m->hp.n_vocab == plumb_vocab_n_tokens(m->vocab) && m->token_embd && m->output_norm && m->layers);
    if (p && (st = plumb__model_place(m, p))) goto fail;
    *out = m;
    return PLUMB_OK;
fail:
    plumb_model_free(m);
    return st;
}

void plumb_model_free(plumb_model_t *m) {
    if (!m) return;
    plumb__model_unplace(m);
    plumb_vocab_free(m->vocab);
    free(m->layers);
    free(m->weights);
    plumb_gguf_free(m->gguf);
    free(m->name);
    free(m->general_name);
    free(m);
}

void plumb_model_get_info(const plumb_model_t *m, plumb_model_info *o) {
    memset(o, 0, sizeof *o);
    o->arch = m->arch->name;
    o->name = m->general_name;
    for (int64_t i = 0; i < plumb_gguf_tensor_count(m->gguf); i++) {
        plumb_gguf_tensor_info t;
        plumb_gguf_tensor(m->gguf, i, &t);
        o->n_params += t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3];
    }
    o->file_size = plumb__gguf_total_size(m->gguf); /* every shard's, for a split model */
    o->n_vocab = m->hp.n_vocab;
    o->n_ctx_train = m->hp.n_ctx_train;
    o->pooling = m->hp.pooling;
    o->n_embd = m->hp.n_embd;
    o->n_layer = m->hp.n_layer;
    o->n_head = m->hp.n_head;
    o->n_head_kv = m->hp.n_head_kv;
    o->head_dim = m->hp.head_dim;
    o->n_ff = m->hp.n_ff;
}

const plumb_vocab_t *plumb_model_vocab(const plumb_model_t *m) { return m->vocab; }
const plumb_gguf_t *plumb_model_gguf(const plumb_model_t *m) { return m->gguf; }

plumb_status plumb_model_chat_template(const plumb_model_t *m, plumb_str *out) {
    return plumb_gguf_get_str(m->gguf, "tokenizer.chat_template", out);
}

/* ---- shared graph pieces -------------------------------------------------------------------- */

plumb_tensor *plumb__build_norm(plumb_graph *g, plumb_tensor *x, plumb_tensor *w, float eps) {
    return plumb_graph_rms_norm(g, x, w, &(plumb_rms_norm_params){.eps = eps});
}

plumb_tensor *plumb__build_matmul(plumb_graph *g, plumb_tensor *w, plumb_tensor *x, plumb_tensor *bias) {
    plumb_tensor *y = plumb_graph_mul_mat(g, w, x);
    return bias ? plumb_graph_add(g, y, bias) : y;
}

plumb_tensor *plumb__build_hidden(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in, plumb_tensor *x) {
    plumb_graph_set_layer(g, m->hp.n_layer); /* the output head */
    if (in->out_ids) x = plumb_graph_get_rows(g, x, in->out_ids); /* keep only the rows that are wanted */
    return plumb__build_norm(g, x, m->output_norm, m->hp.eps);
}

plumb_tensor *plumb__build_output(const plumb_model_t *m, plumb_graph *g, const plumb_graph_inputs *in,
                                  plumb_tensor *x) {
    x = plumb__build_hidden(m, g, in, x);
    plumb_tensor *logits = plumb__build_matmul(g, m->output ? m->output : m->token_embd, x, NULL);
    if (m->hp.final_softcap > 0.0f)
        logits = plumb_graph_softcap(g, logits, &(plumb_softcap_params){.cap = m->hp.final_softcap});
    logits->is_output = true;
    return logits;
}
