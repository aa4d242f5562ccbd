/* tiny_model.c — tiny llama models written with the GGUF writer for the unit tests that need a
 * whole model (the vocabulary and shapes of tests/e2e/make_model_seeds.py). */
#include "tiny_model.h"

#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Small deterministic weights; norms near 1. */
static void fill(float *x, int64_t n, uint32_t seed, float offset) {
    uint32_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = offset + ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * 0.6f;
    }
}

bool tiny_llama_write(const char *name, int n_layer, char *path, size_t cap) {
    snprintf(path, cap, "/tmp/plumb-unit-model-XXXXXX");
    const int fd = mkstemp(path);
    if (fd < 0) return false;
    close(fd);
    plumb_gguf_writer_t *w;
    if (plumb_gguf_writer_create(&w)) return false;
    const uint32_t u32s[] = {64, TINY_EMBD, (uint32_t)n_layer, TINY_FF, TINY_HEADS, TINY_HEADS_KV, TINY_HD, 1, 2};
    static const char *const u32_keys[] = {"llama.context_length",         "llama.embedding_length",
                                           "llama.block_count",            "llama.feed_forward_length",
                                           "llama.attention.head_count",   "llama.attention.head_count_kv",
                                           "llama.rope.dimension_count",   "tokenizer.ggml.bos_token_id",
                                           "tokenizer.ggml.eos_token_id"};
    plumb_status st = plumb_gguf_writer_set_str(w, "general.architecture", "llama", 5);
    if (!st) st = plumb_gguf_writer_set_str(w, "general.name", name, strlen(name));
    for (size_t i = 0; i < sizeof u32_keys / sizeof u32_keys[0] && !st; i++)
        st = plumb_gguf_writer_set(w, u32_keys[i], PLUMB_GGUF_U32, &u32s[i]);
    const float eps = 1e-5f, base = 10000.0f;
    if (!st) st = plumb_gguf_writer_set(w, "llama.attention.layer_norm_rms_epsilon", PLUMB_GGUF_F32, &eps);
    if (!st) st = plumb_gguf_writer_set(w, "llama.rope.freq_base", PLUMB_GGUF_F32, &base);
    /* a SentencePiece vocabulary: control tokens, pieces, fillers */
    static const char *const pieces[TINY_VOCAB] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "x", "\xe2\x96\x81x",
                                                   "a", "b", "\xe2\x96\x81" "a", "ab", "<0x0A>", "\xe2\x96\x81" "w0",
                                                   "\xe2\x96\x81" "w1", "\xe2\x96\x81" "w2", "\xe2\x96\x81" "w3", "\xe2\x96\x81" "w4"};
    plumb_str toks[TINY_VOCAB];
    float scores[TINY_VOCAB];
    int32_t types[TINY_VOCAB];
    for (int i = 0; i < TINY_VOCAB; i++) {
        toks[i] = (plumb_str){pieces[i], strlen(pieces[i])};
        scores[i] = -(float)i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : 1;
    }
    if (!st) st = plumb_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", 5);
    if (!st) st = plumb_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, TINY_VOCAB);
    if (!st) st = plumb_gguf_writer_set_arr(w, "tokenizer.ggml.scores", PLUMB_GGUF_F32, scores, TINY_VOCAB);
    if (!st) st = plumb_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", PLUMB_GGUF_I32, types, TINY_VOCAB);
    static const struct {
        const char *name; /* "blk." names are per layer */
        int64_t ne0, ne1; /* ne1 0: a vector */
        float offset;
    } tensors[] = {
        {"token_embd.weight", TINY_EMBD, TINY_VOCAB, 0}, {"output_norm.weight", TINY_EMBD, 0, 1},
        {"attn_norm.weight", TINY_EMBD, 0, 1},          {"attn_q.weight", TINY_EMBD, TINY_HEADS * TINY_HD, 0},
        {"attn_k.weight", TINY_EMBD, TINY_HEADS_KV * TINY_HD, 0},
        {"attn_v.weight", TINY_EMBD, TINY_HEADS_KV * TINY_HD, 0},
        {"attn_output.weight", TINY_HEADS * TINY_HD, TINY_EMBD, 0}, {"ffn_norm.weight", TINY_EMBD, 0, 1},
        {"ffn_gate.weight", TINY_EMBD, TINY_FF, 0}, {"ffn_up.weight", TINY_EMBD, TINY_FF, 0},
        {"ffn_down.weight", TINY_FF, TINY_EMBD, 0},
    };
    enum { N_TENSORS = sizeof tensors / sizeof tensors[0] };
    float *data[N_TENSORS] = {0};
    for (size_t i = 0; i < N_TENSORS && !st; i++) {
        const int64_t ne[2] = {tensors[i].ne0, tensors[i].ne1}, n = ne[0] * (ne[1] ? ne[1] : 1);
        if (!(data[i] = malloc((size_t)n * sizeof(float)))) {
            st = PLUMB_E_NOMEM;
            break;
        }
        for (int il = 0; il < (i < 2 ? 1 : n_layer) && !st; il++) { /* each layer its own weights */
            char tname[64];
            if (i < 2) snprintf(tname, sizeof tname, "%s", tensors[i].name);
            else snprintf(tname, sizeof tname, "blk.%d.%s", il, tensors[i].name);
            fill(data[i], n, (uint32_t)(i + 16 * (size_t)il), tensors[i].offset);
            st = plumb_gguf_writer_add_tensor(w, tname, PLUMB_TYPE_F32, ne[1] ? 2 : 1, ne, data[i]);
        }
    }
    if (!st) st = plumb_gguf_writer_write(w, path);
    for (size_t i = 0; i < N_TENSORS; i++) free(data[i]);
    plumb_gguf_writer_free(w);
    if (st) unlink(path);
    return st == PLUMB_OK;
}

plumb_model_t *tiny_llama(const char *name, int n_layer) {
    char path[64];
    if (!tiny_llama_write(name, n_layer, path, sizeof path)) {
        CHECK(!"the tiny model could not be written");
        return NULL;
    }
    plumb_model_t *m = NULL;
    CHECK_STATUS(plumb_model_load(path, &m), PLUMB_OK);
    unlink(path);
    return m;
}

