/* tiny_model.h — tiny llama models for unit tests (tiny_model.c): F32 weights, a 16-token
 * SentencePiece vocabulary, a tied output head. */
#ifndef PLUMB_TEST_TINY_MODEL_H
#define PLUMB_TEST_TINY_MODEL_H

#include "plumb.h"

#include <stdbool.h>
#include <stddef.h>

#define TINY_VOCAB 16
#define TINY_EMBD 8
#define TINY_FF 8
#define TINY_HEADS 2
#define TINY_HEADS_KV 1
#define TINY_HD (TINY_EMBD / TINY_HEADS)

/* Writes an n_layer llama model named `name` to a new temporary file; its path in
 * path[cap]. false when something fails. */
bool tiny_llama_write(const char *name, int n_layer, char *path, size_t cap);
/* The model loaded (its file removed), or NULL after a failed check. */
plumb_model_t *tiny_llama(const char *name, int n_layer);

#endif
