/* logprobs.h — generated tokens' log probabilities in OpenAI's two shapes: chat's
 * {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]} and the completions
 * endpoint's {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}. */
#ifndef PLUMB_SERVER_LOGPROBS_H
#define PLUMB_SERVER_LOGPROBS_H

#include "sched.h"

#include <cjson/cJSON.h>

/* The "logprobs" object for r[0..n) (NULL when out of memory). *text_offset is where the first
 * token's text starts in the answer (completions' text_offset), advanced past the tokens. */
cJSON *plumb_srv_logprobs_json(const plumb_vocab_t *v, const plumb_srv_logprob *r, size_t n, bool chat,
                               size_t *text_offset);

#endif
