/* gen.h — generation pieces shared by the plumb command (run, chat) and the server: the text
 * stream that turns sampled tokens into complete UTF-8 text while holding back what may start
 * a stop string, KV prefix reuse, prompt tokenization and the choice of a chat format. */
#ifndef PLUMB_SERVER_GEN_H
#define PLUMB_SERVER_GEN_H

#include "plumb.h"

/* Streams the text of generated tokens. Text that could be the start of a stop string is
 * held back until it is known not to be one; a stop string itself is never emitted. */
typedef struct plumb_gen_stream {
    const plumb_vocab_t *vocab; /* borrowed */
    char *const *stops;         /* borrowed, n_stops non-empty NUL-terminated strings */
    int n_stops;
    plumb_detok dt;
    char *held; /* text generated and not yet emitted, [held_cap], NUL-terminated */
    size_t held_len, held_cap;
    size_t out_len; /* bytes at the start of held handed out by the last push, dropped next */
} plumb_gen_stream;

typedef enum plumb_gen_event {
    PLUMB_GEN_MORE, /* go on: the text (possibly empty) may be emitted */
    PLUMB_GEN_EOG,  /* the token ends generation; it has no text */
    PLUMB_GEN_STOP, /* a stop string appeared: the text before it is returned, then stop */
} plumb_gen_event;

/* Prepares s; stops are borrowed and must outlive s. PLUMB_E_NOMEM. */
plumb_status plumb_gen_stream_init(plumb_gen_stream *s, const plumb_vocab_t *vocab, char *const *stops, int n_stops);
void plumb_gen_stream_free(plumb_gen_stream *s);
/* Adds a sampled token. *text / *len receive the text that may now be emitted (borrowed from
 * s, valid until the next call). PLUMB_E_NOMEM or PLUMB_E_RANGE (a token text over 1 KiB)
 * go to *err with PLUMB_GEN_STOP returned. */
plumb_gen_event plumb_gen_stream_push(plumb_gen_stream *s, int32_t tok, const char **text, size_t *len,
                                      plumb_status *err);
/* Ends the stream: the text still held (and an incomplete UTF-8 character as U+FFFD unless
 * the stream ended at a stop string) into *text / *len, borrowed from s. */
void plumb_gen_stream_finish(plumb_gen_stream *s, bool at_stop, const char **text, size_t *len);

/* Appends src[0..n) to the malloc'd buffer *buf of *len bytes and *cap capacity (growing it,
 * keeping a NUL after the bytes). false when out of memory (the buffer is unchanged). */
bool plumb_gen_append(char **buf, size_t *len, size_t *cap, const void *src, size_t n);

/* How many of the n_cached tokens of a KV sequence can stay when it is to hold ids[0..n):
 * their common prefix, less one when it covers all of ids (the last token must be decoded
 * again for its logits). */
size_t plumb_gen_reuse_len(const int32_t *cached, size_t n_cached, const int32_t *ids, size_t n);

/* Tokenizes text[0..len) with special tokens parsed (BOS added when add_special) into a
 * malloc'd *ids of *n tokens. PLUMB_E_NOMEM, or the tokenizer's status; on failure *ids is
 * NULL. */
plumb_status plumb_gen_tokenize(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                                int32_t **ids, size_t *n);
/* The same with control tokens recognized nowhere (parse_special false), everywhere
 * (parse_special, marks NULL) or only inside marks (plumb_tokenize_marked). */
plumb_status plumb_gen_tokenize_marked(const plumb_vocab_t *v, const char *text, size_t len, bool add_special,
                                       bool parse_special, const plumb_span *marks, size_t n_marks, int32_t **ids,
                                       size_t *n);

/* An embedding from the sum of the pooled tokens' hidden states sum[0..d): scaled to unit
 * length (L2; the mean's division cancels out), into out[0..d). */
void plumb_gen_normalize(const double *sum, int32_t d, float *out);

/* The chat format named `name` (non-NULL), else the one of the file's template, else the one
 * whose turn markers the vocabulary has (some GGUF files carry no template);
 * PLUMB_CHAT_UNKNOWN when none fits. */
plumb_chat_format plumb_gen_chat_format(const plumb_model_t *m, const char *name);

#endif
