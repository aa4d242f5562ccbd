/* test_model_api.c — the public header's promises about models and batches, on a tiny llama
 * model (tiny_model.c): plumb_model_get_info's strings live as long as the model
 * (not until the next call), and a batch without positions continues each sequence from its
 * current length. */
#include "plumb.h"
#include "test.h"
#include "tiny_model.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TEST(model_info_name_lives_with_the_model) {
    plumb_model_t *a = tiny_llama("tiny-first", 1), *b = tiny_llama("tiny-second", 1);
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
    plumb_model_t *m = tiny_llama("tiny", 1);
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
