/* fuzz_model.c — libFuzzer harness for model loading (src/model/): the input is a GGUF file
 * (seeds: tiny llama and gemma3 models, fuzz/corpus-model, from
 * tests/e2e/make_model_seeds.py). When it parses, it is loaded as a model: architecture,
 * hyperparameters, the presence, shape and type of every weight, the vocabulary. A model that
 * loads gets a small context and decodes a few tokens, because what matters is that the
 * loader refuses whatever the forward pass cannot run: a weight it accepted but the kernels
 * read past the end of shows up under ASan, a bad stride or shape under UBSan. Only models
 * whose numbers stay finite are decoded (see tame()). */
#include "model/model.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile float sink;

/* Whether the forward pass of m stays finite: weights of modest size, and rotation angles
 * that cannot overflow to inf (whose cosine is NaN). Whether NaN and inf flow through the
 * kernels is a numerical question, not one of loading (the loader does not scan weights;
 * real models are finite), and UBSan stops at the first NaN the softmax's exponential
 * converts to an integer. The inputs are a few KB, so the scan costs little. */
static bool tame(const plumb_model_t *m) {
    const plumb_hparams *hp = &m->hp;
    if (!(hp->rope_base >= 1.0f) || !(hp->rope_freq_scale <= 1.0f) || !(hp->rope_freq_scale_swa <= 1.0f)) return false;
    bool ok = true;
    for (int32_t i = 0; ok && i < m->n_weights; i++) {
        const plumb_tensor *t = &m->weights[i];
        const int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        float *row = malloc((size_t)t->ne[0] * sizeof *row + 1);
        if (!row) return false;
        for (int64_t r = 0; ok && r < rows; r++) {
            ok = plumb_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * t->nb[1], row, t->ne[0]) == PLUMB_OK;
            /* rope_freqs divides the angles: keep it away from 0 */
            const float lo = t == m->rope_freqs ? 1.0f / 16 : -16.0f;
            for (int64_t j = 0; ok && j < t->ne[0]; j++) ok = row[j] >= lo && row[j] <= 16.0f;
        }
        free(row);
    }
    return ok;
}

static void decode_a_little(plumb_model_t *m) {
    plumb_model_info info;
    plumb_model_get_info(m, &info);
    /* n_ctx small and one thread: the cache and the pool stay cheap for every input */
    plumb_context_params cp = {.n_ctx = 8, .n_batch = 4, .n_threads = 1, .n_seq = 1};
    plumb_context_t *c;
    if (plumb_context_create(m, &cp, &c) != PLUMB_OK) return;
    /* first, last and a middle token, then one more: a batch split in two passes, then a
     * single-token step reading the cache */
    const int32_t n = info.n_vocab;
    const int32_t prompt[5] = {0, n - 1, n / 2, 1 % n, 0};
    const bool want[5] = {true, false, true, false, true};
    plumb_batch b = {.n_tokens = 5, .tokens = prompt, .logits = want};
    if (plumb_decode(c, &b) == PLUMB_OK) {
        for (int32_t j = 0; j < plumb_n_logits(c); j++) sink += plumb_get_logits(c, j)[n - 1];
        const int32_t next = n / 3;
        plumb_batch one = {.n_tokens = 1, .tokens = &next};
        if (plumb_decode(c, &one) == PLUMB_OK) sink += plumb_get_logits(c, 0)[0];
    }
    plumb_context_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    plumb_gguf_t *g;
    if (plumb_gguf_open_memory(data, size, "fuzz", &g) != PLUMB_OK) return 0;
    plumb_model_t *m;
    if (plumb__model_from_gguf(g, "fuzz", NULL, &m) != PLUMB_OK) return 0; /* g freed with the failure */
    if (tame(m)) decode_a_little(m);
    plumb_model_free(m);
    return 0;
}
