/* test_model_api.c — the public header's promises about models and batches, on a tiny llama
 * model written here with the GGUF writer (the vocabulary and shapes of
 * tests/e2e/make_model_seeds.py): plumb_model_get_info's strings live as long as the model
 * (not until the next call), and a batch without positions continues each sequence from its
 * current length. */
#include "plumb.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TINY_VOCAB 16
#define TINY_EMBD 8
#define TINY_FF 8
#define TINY_HEADS 2
#define TINY_HEADS_KV 1

/* Small deterministic weights; norms near 1. */
static void fill(float *x, int64_t n, uint32_t seed, float offset) {
    uint32_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = offset + ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * 0.6f;
    }
}

/* Writes a one-layer llama model named `name` to a new temporary file; its path in
 * path[cap]. false when something fails. */
static bool write_tiny_llama(const char *name, char *path, size_t cap) {
    snprintf(path, cap, "/tmp/plumb-unit-model-XXXXXX");
    const int fd = mkstemp(path);
    if (fd < 0) return false;
    close(fd);
    plumb_gguf_writer_t *w;
    if (plumb_gguf_writer_create(&w)) return false;
    const uint32_t u32s[] = {64, TINY_EMBD, 1, TINY_FF, TINY_HEADS, TINY_HEADS_KV, TINY_EMBD / TINY_HEADS, 1, 2};
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
    const int hd = TINY_EMBD / TINY_HEADS, q = TINY_HEADS * hd, kv = TINY_HEADS_KV * hd;
    const struct {
        const char *name;
        int64_t ne0, ne1; /* ne1 0: a vector */
        float offset;
    } tensors[] = {
        {"token_embd.weight", TINY_EMBD, TINY_VOCAB, 0},  {"output_norm.weight", TINY_EMBD, 0, 1},
        {"blk.0.attn_norm.weight", TINY_EMBD, 0, 1},      {"blk.0.attn_q.weight", TINY_EMBD, q, 0},
        {"blk.0.attn_k.weight", TINY_EMBD, kv, 0},        {"blk.0.attn_v.weight", TINY_EMBD, kv, 0},
        {"blk.0.attn_output.weight", q, TINY_EMBD, 0},    {"blk.0.ffn_norm.weight", TINY_EMBD, 0, 1},
        {"blk.0.ffn_gate.weight", TINY_EMBD, TINY_FF, 0}, {"blk.0.ffn_up.weight", TINY_EMBD, TINY_FF, 0},
        {"blk.0.ffn_down.weight", TINY_FF, TINY_EMBD, 0},
    };
    enum { N_TENSORS = sizeof tensors / sizeof tensors[0] };
    float *data[N_TENSORS] = {0};
    for (size_t i = 0; i < N_TENSORS && !st; i++) {
        const int64_t ne[2] = {tensors[i].ne0, tensors[i].ne1}, n = ne[0] * (ne[1] ? ne[1] : 1);
        if (!(data[i] = malloc((size_t)n * sizeof(float)))) {
            st = PLUMB_E_NOMEM;
            break;
        }
        fill(data[i], n, (uint32_t)i, tensors[i].offset);
        st = plumb_gguf_writer_add_tensor(w, tensors[i].name, PLUMB_TYPE_F32, ne[1] ? 2 : 1, ne, data[i]);
    }
    if (!st) st = plumb_gguf_writer_write(w, path);
    for (size_t i = 0; i < N_TENSORS; i++) free(data[i]);
    plumb_gguf_writer_free(w);
    if (st) unlink(path);
    return st == PLUMB_OK;
}

/* A model named `name`, or NULL after a failed check. */
static plumb_model_t *tiny_model(const char *name) {
    char path[64];
    if (!write_tiny_llama(name, path, sizeof path)) {
        CHECK(!"the tiny model could not be written");
        return NULL;
    }
    plumb_model_t *m = NULL;
    CHECK_STATUS(plumb_model_load(path, &m), PLUMB_OK);
    unlink(path);
    return m;
}

TEST(model_info_name_lives_with_the_model) {
    plumb_model_t *a = tiny_model("tiny-first"), *b = tiny_model("tiny-second");
    if (a && b) {
        plumb_model_info ia, ib;
        plumb_model_get_info(a, &ia);
        plumb_model_get_info(b, &ib);
        /* a's strings are a's until a is freed, whatever is asked of other models meanwhile */
        CHECK(strcmp(ia.name, "tiny-first") == 0);
        CHECK(strcmp(ib.name, "tiny-second") == 0);
        CHECK(strcmp(ia.arch, "llama") == 0);
        CHECK(ia.n_vocab == TINY_VOCAB && ia.n_embd == TINY_EMBD);
    }
    plumb_model_free(a);
    plumb_model_free(b);
}

TEST(batch_without_positions_continues_each_sequence) {
    plumb_model_t *m = tiny_model("tiny");
    if (!m) return;
    const plumb_context_params cp = {.n_ctx = 16, .n_batch = 8, .n_threads = 1, .n_seq = 2};
    plumb_context_t *implicit = NULL, *explicit = NULL;
    CHECK_STATUS(plumb_context_create(m, &cp, &implicit), PLUMB_OK);
    CHECK_STATUS(plumb_context_create(m, &cp, &explicit), PLUMB_OK);
    if (implicit && explicit) {
        /* pos NULL: sequence 0 gets 3 tokens, then 2 more after them; sequence 1, in the same
         * batches, 1 and then 2 */
        const int32_t t1[] = {4, 5, 6, 7}, s1[] = {0, 0, 1, 0};
        const int32_t t2[] = {8, 9, 10, 11}, s2[] = {1, 0, 1, 0};
        CHECK_STATUS(plumb_decode(implicit, &(plumb_batch){.n_tokens = 4, .tokens = t1, .seq = s1}), PLUMB_OK);
        CHECK_EQ_INT(plumb_seq_len(implicit, 0), 3);
        CHECK_EQ_INT(plumb_seq_len(implicit, 1), 1);
        CHECK_STATUS(plumb_decode(implicit, &(plumb_batch){.n_tokens = 4, .tokens = t2, .seq = s2}), PLUMB_OK);
        CHECK_EQ_INT(plumb_seq_len(implicit, 0), 5);
        CHECK_EQ_INT(plumb_seq_len(implicit, 1), 3);
        /* the same tokens at the positions that means, given explicitly */
        const int32_t p1[] = {0, 1, 0, 2}, p2[] = {1, 3, 2, 4};
        CHECK_STATUS(plumb_decode(explicit, &(plumb_batch){.n_tokens = 4, .tokens = t1, .pos = p1, .seq = s1}), PLUMB_OK);
        CHECK_STATUS(plumb_decode(explicit, &(plumb_batch){.n_tokens = 4, .tokens = t2, .pos = p2, .seq = s2}), PLUMB_OK);
        const float *a = plumb_get_logits(implicit, 0), *b = plumb_get_logits(explicit, 0);
        CHECK(a && b && memcmp(a, b, TINY_VOCAB * sizeof *a) == 0);
    }
    plumb_context_free(implicit);
    plumb_context_free(explicit);
    plumb_model_free(m);
}
