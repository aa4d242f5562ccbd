/* sched.h — the slot scheduler of the server (continuous batching). One thread owns the
 * model and the context (n_seq = slots) and is the only one that calls the engine: it loads
 * the model, moves queued jobs into free slots (the slot whose KV cache shares the longest
 * prefix with the prompt, so a multi-turn chat is not processed again), and runs decode
 * steps in which every generating slot advances one token and prompts are prefilled in
 * chunks, all in one plumb_decode call. Connection threads submit jobs and read their text
 * as it grows.
 * A switchable scheduler (a server with a model catalog) changes models: a connection takes a
 * lease on the model its request names before it touches the model or submits jobs, and
 * ends it when the request is answered. Leases wait in one FIFO queue; the scheduler grants
 * the head (and every other waiter for the same model) when that model is loaded, and when
 * the head names another one it lets the granted leases and their jobs finish, frees the
 * model and loads the next. Once a switch is pending, new leases for the loaded model queue
 * behind it, so a stream of them cannot hold it off.
 * A lost device (a decode failing with PLUMB_E_DEVICE: a remote host died or the network
 * dropped) takes the model's KV caches and weights with it: the jobs in a slot that have
 * produced text end with 503 "device_unavailable", those that have not go back to the head of
 * the queue (once), and the scheduler computes nothing more on that model. It loads it again
 * with the same parameters (which dials the device again) before it runs the next job: at once,
 * then when a job waits (at most one attempt a second) and in the background (backing off from
 * 2 to 5 s), one attempt at a time, each bounded by the device's own deadline
 * (PLUMB_REMOTE_TIMEOUT). A failed attempt ends the jobs that waited for it with 503; the model
 * in memory stays for the connections (its vocabulary and chat format) until a reload
 * replaces it. */
#ifndef PLUMB_SERVER_SCHED_H
#define PLUMB_SERVER_SCHED_H

#include "chat_prompt.h"
#include "guide.h"
#include "metrics.h"
#include "plumb.h"
#include "request.h"

typedef struct plumb_srv_sched plumb_srv_sched;

typedef struct plumb_srv_sched_params {
    const char *model_path; /* the model loaded at start; NULL (switchable only): none */
    const char *model_id;   /* its id (switchable: leases name models by id; copied) */
    bool switchable;        /* models change by leases (plumb_srv_lease_begin) */
    int32_t n_parallel;    /* slots */
    int32_t n_ctx;         /* positions per slot; 0: min(model, 4096) */
    int32_t n_threads;     /* 0: all online CPUs */
    bool no_repack;        /* plumb_context_params.no_repack */
    bool fast_gemm;        /* plumb_context_params.fast_gemm */
    int32_t n_batch;       /* tokens per decode step at most */
    int32_t prefill_chunk; /* prompt tokens per step while other slots generate */
    int32_t queue_size;    /* jobs that may wait for a slot */
    const char *chat_format; /* NULL: from the model */
    const char *chat_template; /* a Jinja template to use instead of the model's (NULL: none) */
    size_t chat_template_len;
    bool use_mmap;           /* plumb_model_params.use_mmap */
    const char *device;      /* plumb_model_params.device (borrowed) */
    const char *remote_key_file; /* plumb_model_params.remote_key_file (borrowed; NULL: the environment's) */
    int32_t n_offload;       /* plumb_model_params.n_offload */
    bool embeddings;         /* the context computes embeddings (jobs are embedding jobs), not logits */
    int32_t pooling;         /* a plumb_pooling; -1: the model's, else mean */
} plumb_srv_sched_params;

typedef enum plumb_srv_state { PLUMB_SRV_LOADING, PLUMB_SRV_READY, PLUMB_SRV_FAILED } plumb_srv_state;

/* A generation job: created by a connection, shared with the scheduler (reference counted). */
typedef struct plumb_srv_job plumb_srv_job;

/* What a job has produced so far. */
typedef struct plumb_srv_progress {
    bool done;
    const char *finish_reason; /* "stop" or "length" once done without error */
    int error_status;          /* HTTP status of a failure (500, 503, 504), 0 when none */
    const char *error_code;    /* its OpenAI error code ("device_unavailable"; static), or NULL */
    char error_message[256];
    int32_t n_prompt, n_cached, n_gen;
    /* times (ms): waiting for a slot; from the slot to the first generated token (the prompt's
     * processing); from the first to the last generated token; -1 while not reached */
    double queue_ms, prompt_ms, predicted_ms;
} plumb_srv_progress;

/* Starts the scheduler thread, which loads the model. */
plumb_status plumb_srv_sched_create(const plumb_srv_sched_params *p, plumb_srv_metrics *metrics,
                                    plumb_srv_sched **out);
/* Stops the thread: jobs still queued or running end with a 503 error, later submits are
 * refused; jobs can still be polled and released. Idempotent. */
void plumb_srv_sched_stop(plumb_srv_sched *s);
/* Stops (if needed) and frees all; no job may be in use any more. */
void plumb_srv_sched_free(plumb_srv_sched *s);
plumb_srv_state plumb_srv_sched_state(plumb_srv_sched *s);
/* Blocks until the model is loaded or failed to load; on failure *message (owned by s)
 * says why. A switchable scheduler with no model to start with is READY at once, and stays
 * READY whatever later loads do. */
plumb_srv_state plumb_srv_sched_wait_ready(plumb_srv_sched *s, const char **message);
/* A connection reads the model, its chat format, the positions of a slot and the pooling only
 * while borrowing them: between plumb_srv_sched_borrow and plumb_srv_sched_unborrow, on one
 * thread, once READY (switchable: while holding a granted lease). The scheduler swaps a
 * reloaded model in (after a lost device) under the other side of that lock, so borrow
 * briefly: never across a wait for a job or a lease, nor while writing to a client, and never
 * twice on one thread. A borrower may call the other functions here (the lock comes first). */
void plumb_srv_sched_borrow(plumb_srv_sched *s);
void plumb_srv_sched_unborrow(plumb_srv_sched *s);
/* While borrowing: the model, the positions of a slot, the chat format (NULL when the model
 * has none), valid until plumb_srv_sched_unborrow. */
const plumb_model_t *plumb_srv_sched_model(plumb_srv_sched *s);
int32_t plumb_srv_sched_n_ctx(plumb_srv_sched *s);
const plumb_gen_chat *plumb_srv_sched_chat(plumb_srv_sched *s);
/* Whether the model's device is lost and the model not loaded again yet (sched.h's top): then
 * why[0..cap) says what failed last (the device's message). Any thread; quick. */
bool plumb_srv_sched_device_lost(plumb_srv_sched *s, char *why, size_t cap);

/* ---- leases (switchable schedulers) ---------------------------------------------------- */

/* One request's claim on a model: while granted, the model loaded is the lease's and stays so
 * until plumb_srv_lease_end. Owned by the connection that began it. */
typedef struct plumb_srv_lease plumb_srv_lease;

/* Asks for the model `id` (file `path`; both copied) for a request whose life ends at
 * `deadline` (monotonic seconds, as the jobs'); id NULL: whichever model is loaded. Granted
 * at once when that model is loaded and nothing waits, else queued. *out is the caller's,
 * to end with plumb_srv_lease_end. PLUMB_E_RANGE when the queue of leases is full
 * (queue_size + n_parallel), PLUMB_E_UNSUPPORTED when stopping or not switchable,
 * PLUMB_E_NOMEM, PLUMB_E_INVALID_ARG for an id or path too long. */
plumb_status plumb_srv_lease_begin(plumb_srv_sched *s, const char *id, const char *path, double deadline,
                                   plumb_srv_lease **out);
/* Waits up to wait_ms for the lease to be decided: 1 granted (*id: the model's id, owned by
 * the lease), 0 still waiting, -1 refused: *status is the HTTP status, *code an OpenAI error
 * code or NULL and *message why (both owned by the lease). Refusals: 400 "model_not_loaded"
 * (id NULL and no model is loaded), 500 "model_load_failed" (the model failed to load), 503
 * "device_unavailable" (it failed to load because its device did not answer), 504 (the
 * deadline passed), 503 (the server is stopping). */
int plumb_srv_lease_wait(plumb_srv_sched *s, plumb_srv_lease *l, int wait_ms, const char **id, int *status,
                         const char **code, const char **message);
/* Ends the lease, granted or still waiting, and frees it. NULL is a no-op. */
void plumb_srv_lease_end(plumb_srv_sched *s, plumb_srv_lease *l);

/* What the scheduler holds, for /health, /v1/models and /props: the id and path of the model
 * loaded ("" when none) and the id of one being loaded by a switch ("" when none). Any
 * argument may be NULL. */
void plumb_srv_sched_loaded(plumb_srv_sched *s, char *id, size_t id_cap, char *path, size_t path_cap, char *loading,
                            size_t loading_cap);

/* Where the model in memory computes (plumb_model_device): its device's spec into
 * spec[0..cap) ("" when none is loaded), the layers offloaded there and all its layers (the
 * output head one of them) into *n_offloaded and *n_layers (0 when none; either may be NULL).
 * Any thread. */
void plumb_srv_sched_device(plumb_srv_sched *s, char *spec, size_t cap, int32_t *n_offloaded, int32_t *n_layers);

/* A generated token's log probability under the model (log-softmax of its logits) and its most
 * likely alternatives, most likely first. */
typedef struct plumb_srv_logprob {
    int32_t tok;
    float logprob;
    int32_t n_top;
    int32_t top_tok[PLUMB_SRV_MAX_LOGPROBS];
    float top_logprob[PLUMB_SRV_MAX_LOGPROBS];
} plumb_srv_logprob;

/* The log probabilities of the job's tokens from index `from` on (r->logprobs >= 0): *out
 * malloc'd (NULL when none), *n of them. PLUMB_E_NOMEM. */
plumb_status plumb_srv_job_logprobs(plumb_srv_sched *s, plumb_srv_job *job, size_t from, plumb_srv_logprob **out,
                                    size_t *n);

/* Tokens of a slot's KV cache that its prefix hash covers at most (the first ones). */
#define PLUMB_SRV_PREFIX_HASH_TOKENS 256

/* What a slot is doing, for GET /slots. */
typedef struct plumb_srv_slot_info {
    int32_t id;
    const char *state; /* "idle", "prompt" (processing a prompt) or "generating" */
    int32_t n_ctx, n_cached; /* positions, and tokens held in its KV cache */
    int32_t n_prompt, n_gen; /* its job's prompt and generated tokens (0 when idle) */
    /* FNV-1a 64 of the first n_hashed = min(n_cached, PLUMB_SRV_PREFIX_HASH_TOKENS) token ids
     * of its KV cache, each id as 4 bytes, least significant first (n_hashed 0: none). Two
     * slots, or a slot and a prompt tokenized by POST /tokenize, with the same hash over the
     * same count start with the same tokens: where a conversation's next turn finds its
     * prefix cached. */
    uint64_t prefix_hash;
    int32_t n_hashed;
} plumb_srv_slot_info;

/* Fills out[0..n) (n: the slot count, at most cap) with a snapshot of the slots. */
int32_t plumb_srv_sched_slots(plumb_srv_sched *s, plumb_srv_slot_info *out, int32_t cap);
/* Slots free for a new request now (idle, less the requests queued for one: never below 0)
 * and slots in all. Quick (one short lock): for /health, /metrics and the agent check. */
void plumb_srv_sched_slot_counts(plumb_srv_sched *s, int32_t *n_free, int32_t *n_total);

/* A job for prompt[0..n_prompt) (copied) with the request's limits, sampling and stop strings
 * (copied). timeout_s bounds the job's whole life. One reference, the caller's. */
plumb_status plumb_srv_job_create(const int32_t *prompt, size_t n_prompt, const plumb_srv_request *r,
                                  double timeout_s, plumb_srv_job **out);
/* Constrains the job's output (spec copied): see guide.h. PLUMB_E_NOMEM. */
plumb_status plumb_srv_job_constrain(plumb_srv_job *job, const plumb_srv_guide_spec *spec);
/* Makes the job an embedding job: its prompt's hidden states are pooled (the scheduler's
 * pooling) into one L2-normalized vector instead of generating (an embeddings server). */
void plumb_srv_job_embed(plumb_srv_job *job);
/* A finished embedding job's vector: *out malloc'd, *n floats. PLUMB_E_NOMEM. */
plumb_status plumb_srv_job_embedding(plumb_srv_sched *s, plumb_srv_job *job, float **out, int32_t *n);
/* The pooling an embeddings server uses (a plumb_pooling); while borrowing. */
int32_t plumb_srv_sched_pooling(plumb_srv_sched *s);

/* Makes job a follower of leader (both created, neither submitted yet): with the same prompt,
 * it does not process the prompt itself but copies the leader's KV cache of it once the leader
 * has it, then generates on its own (n choices of one request). The job holds a reference to
 * the leader until it starts. */
void plumb_srv_job_follow(plumb_srv_job *job, plumb_srv_job *leader);
/* Queues the job (the scheduler takes its own reference). PLUMB_E_RANGE when the queue is
 * full, PLUMB_E_UNSUPPORTED when the scheduler is not accepting work. */
plumb_status plumb_srv_sched_submit(plumb_srv_sched *s, plumb_srv_job *job);
/* Asks the scheduler to end the job now (its client went away); its slot is freed at the
 * next step. */
void plumb_srv_job_cancel(plumb_srv_sched *s, plumb_srv_job *job);
/* Drops the caller's reference. */
void plumb_srv_job_release(plumb_srv_sched *s, plumb_srv_job *job);
/* Waits up to wait_ms for text past byte `from` or for the end of the job, then copies
 * the text past `from` (malloc'd, NULL when none) and the job's progress. */
plumb_status plumb_srv_job_poll(plumb_srv_sched *s, plumb_srv_job *job, size_t from, int wait_ms, char **text,
                                size_t *len, plumb_srv_progress *progress);

#endif
