/* sched.c — the slot scheduler (see sched.h). Locking: one mutex `mu` guards the queue, the
 * job pointers of the slots, every job's output, and the leases (their queue, the count of
 * granted ones, the ids of the model loaded and loading); the scheduler thread holds it only
 * for bookkeeping, never during plumb_decode, sampling or a model load. Slot fields other
 * than `job` belong to the scheduler thread alone. The model, context and chat format change
 * only on the scheduler thread, and only while no lease is granted and no job is queued or
 * running, or, after a lost device, under the write side of `model_lock` (a reload swaps the
 * model in), so a connection reads them while borrowing (the read side; sched.h). Lock order:
 * model_lock before mu; the scheduler thread never waits for model_lock while it holds mu. */
#include "sched.h"

#include "chat_prompt.h"
#include "gen.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct plumb_srv_job {
    /* input, fixed at create */
    int32_t *prompt; /* [n_prompt] */
    int32_t n_prompt;
    int32_t max_tokens; /* -1: until a stop or the context is full */
    plumb_sampler_params sampling;
    char *stops[PLUMB_SRV_MAX_STOPS];
    int n_stops;
    plumb_srv_job *leader;     /* a job with the same prompt whose KV cache this one copies, or NULL */
    bool embed;                /* an embedding job */
    double *emb_sum;           /* [n_embd] hidden states pooled so far (scheduler thread) */
    int32_t emb_count;
    float *embedding;          /* [n_embd] the result, under mu */
    int32_t n_embd;
    int32_t n_logprobs;        /* -1: none, else alternatives per token */
    plumb_srv_logprob *lps;    /* [n_lps] per generated token, under mu */
    size_t n_lps, cap_lps;
    char *gbnf; /* the output's grammar (guide.h), or NULL */
    char root[40], root_after[40], trigger[40], trigger2[40];
    bool has_trigger, force_trigger;
    double t_arrival, deadline; /* monotonic seconds */
    double t_slot, t_first;     /* when it got a slot, when its first token came (0: not yet) */
    bool requeued;              /* sent back to the queue once by a lost device (scheduler thread) */
    /* shared, under mu */
    int refs;
    bool cancelled;
    char *text; /* everything generated so far, [text_cap] */
    size_t text_len, text_cap;
    plumb_srv_progress progress;
    pthread_cond_t cv; /* signalled when text grows or the job ends */
};

/* A request's claim on a model (sched.h). id, path, any and deadline are fixed at begin
 * (a lease for any model gets the loaded model's id when granted); the rest is under mu. */
struct plumb_srv_lease {
    char id[512], path[4096];
    bool any; /* whichever model is loaded */
    double deadline;
    int state; /* 0 waiting, 1 granted, -1 refused */
    int status;
    const char *code;
    char message[1200];
};

typedef enum slot_state {
    SLOT_IDLE,
    SLOT_FOLLOW, /* waiting for its job's leader to have the prompt in its KV cache */
    SLOT_PREFILL,
    SLOT_GEN,
} slot_state;

typedef struct slot {
    int32_t id;          /* its sequence in the context */
    plumb_srv_job *job;  /* NULL when idle (written under mu) */
    slot_state state;
    int32_t *cache;      /* tokens in the KV cache of the sequence, [n_ctx] */
    int32_t n_cache;
    int32_t n_fed;       /* prompt tokens in the cache */
    int32_t last_tok;    /* sampled, to be decoded next step */
    int32_t logit_at;    /* which logits row of the last decode is this slot's; -1: none */
    int32_t batch_n;     /* tokens of this slot in the last decode */
    plumb_sampler_t *sampler;
    plumb_srv_guide guide;
    plumb_gen_stream stream;
    double t_last_token;
    uint64_t last_used;
    int32_t shown_cache; /* n_cache as GET /slots shows it: written under mu */
    uint64_t shown_hash; /* FNV-1a 64 of cache[0..shown_hashed) (sched.h), under mu */
    int32_t shown_hashed;
    int32_t emb_at, emb_n; /* embedding jobs: this slot's hidden states in the last decode */
} slot;

struct plumb_srv_sched {
    plumb_srv_sched_params p;
    plumb_srv_metrics *metrics;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* signalled on submit, cancel and stop */
    pthread_cond_t ready_cv; /* signalled when loading ends */
    plumb_srv_state state;
    char load_error[512];
    bool stopping;
    plumb_srv_job **queue; /* FIFO, [queue_cap] */
    int32_t n_queue, queue_cap;
    /* leases (switchable): under mu */
    pthread_cond_t lease_cv;     /* broadcast when leases are granted or refused */
    plumb_srv_lease **waiters;   /* FIFO, [waiters_cap] */
    int32_t n_waiters, waiters_cap;
    int32_t pins;                /* granted leases not yet ended */
    char loaded_id[512], loaded_path[4096]; /* the model in memory ("": none) */
    char loading_id[512];        /* the model a switch is loading ("": none) */
    char device[32];             /* where the model in memory computes ("": none loaded) */
    int32_t n_offloaded, n_layers; /* its layers on that device, and all of them (the head one) */
    /* scheduler thread's own */
    plumb_model_t *model;
    plumb_context_t *ctx;
    plumb_gen_chat chat;
    plumb_srv_grammars *grammars; /* the output grammars of requests, kept for later ones */
    bool has_chat; /* the model has a chat format plumb can render */
    int32_t n_ctx, n_batch, n_vocab;
    slot *slots;
    int32_t *b_tokens, *b_pos, *b_seq; /* [n_batch] each, in one allocation from b_tokens */
    bool *b_logits;
    uint64_t use_clock;
    int32_t rr; /* next slot to prefill first (round robin) */
    int32_t pooling, n_embd; /* embeddings server: its plumb_pooling and vector size */
    pthread_rwlock_t model_lock; /* read: connections borrowing the model; write: the scheduler changing it */
    /* a lost device (sched.h), under mu: the model computes nothing until it is loaded again */
    bool lost;
    char lost_why[256];     /* the device's last failure */
    int32_t n_reload_fails; /* attempts failed since it was lost */
    double fail_at;         /* when the last attempt failed: a waiting job's attempt comes 1 s later */
    double retry_at;        /* the next attempt without a job waiting (backing off) */
};

#define RELOAD_MIN_S 1.0 /* a lost device's model is loaded again at most once a second */
#define RELOAD_MAX_S 5.0 /* and, with no job waiting, at least every 5 s */
#define DEVICE_CODE "device_unavailable"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void cond_init_monotonic(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* ---- jobs ------------------------------------------------------------------------------- */

static void job_unref_locked(plumb_srv_job *j);

static void job_destroy(plumb_srv_job *j) {
    if (j->leader) job_unref_locked(j->leader);
    free(j->prompt);
    free(j->gbnf);
    free(j->lps);
    free(j->emb_sum);
    free(j->embedding);
    for (int i = 0; i < j->n_stops; i++) free(j->stops[i]);
    free(j->text);
    pthread_cond_destroy(&j->cv);
    free(j);
}

plumb_status plumb_srv_job_create(const int32_t *prompt, size_t n_prompt, const plumb_srv_request *r,
                                  double timeout_s, plumb_srv_job **out) {
    *out = NULL;
    if (n_prompt == 0 || n_prompt > INT32_MAX) return PLUMB_E_INVALID_ARG;
    plumb_srv_job *j = calloc(1, sizeof *j);
    if (!j) return PLUMB_E_NOMEM;
    cond_init_monotonic(&j->cv);
    j->refs = 1;
    j->prompt = malloc(n_prompt * sizeof *prompt);
    j->text_cap = 256;
    j->text = malloc(j->text_cap);
    if (!j->prompt || !j->text) {
        job_destroy(j);
        return PLUMB_E_NOMEM;
    }
    memcpy(j->prompt, prompt, n_prompt * sizeof *prompt);
    j->n_prompt = (int32_t)n_prompt;
    j->max_tokens = r->max_tokens;
    j->n_logprobs = r->logprobs;
    j->sampling = r->sampling;
    for (int i = 0; i < r->n_stops; i++) {
        if (!(j->stops[i] = strdup(r->stops[i]))) {
            job_destroy(j);
            return PLUMB_E_NOMEM;
        }
        j->n_stops++;
    }
    j->t_arrival = now_s();
    j->deadline = j->t_arrival + timeout_s;
    j->progress.n_prompt = j->n_prompt;
    j->progress.queue_ms = j->progress.prompt_ms = j->progress.predicted_ms = -1;
    *out = j;
    return PLUMB_OK;
}

void plumb_srv_job_embed(plumb_srv_job *job) { job->embed = true; }

plumb_status plumb_srv_job_embedding(plumb_srv_sched *s, plumb_srv_job *job, float **out, int32_t *n) {
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    plumb_status st = PLUMB_OK;
    if (job->embedding) {
        if ((*out = malloc((size_t)job->n_embd * sizeof **out))) {
            memcpy(*out, job->embedding, (size_t)job->n_embd * sizeof **out);
            *n = job->n_embd;
        } else
            st = PLUMB_E_NOMEM;
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

int32_t plumb_srv_sched_pooling(plumb_srv_sched *s) { return s->pooling; }

void plumb_srv_job_follow(plumb_srv_job *job, plumb_srv_job *leader) {
    leader->refs++; /* neither is shared yet: no lock needed */
    job->leader = leader;
}

plumb_status plumb_srv_job_constrain(plumb_srv_job *j, const plumb_srv_guide_spec *spec) {
    free(j->gbnf);
    if (!(j->gbnf = strdup(spec->gbnf))) return PLUMB_E_NOMEM;
    snprintf(j->root, sizeof j->root, "%s", spec->root ? spec->root : "root");
    snprintf(j->root_after, sizeof j->root_after, "%s", spec->root_after ? spec->root_after : j->root);
    snprintf(j->trigger, sizeof j->trigger, "%s", spec->trigger ? spec->trigger : "");
    snprintf(j->trigger2, sizeof j->trigger2, "%s", spec->trigger2 ? spec->trigger2 : "");
    j->has_trigger = spec->trigger != NULL;
    j->force_trigger = spec->force_trigger;
    return PLUMB_OK;
}

plumb_status plumb_srv_job_logprobs(plumb_srv_sched *s, plumb_srv_job *job, size_t from, plumb_srv_logprob **out,
                                    size_t *n) {
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    plumb_status st = PLUMB_OK;
    if (job->n_lps > from) {
        if ((*out = malloc((job->n_lps - from) * sizeof **out))) {
            *n = job->n_lps - from;
            memcpy(*out, job->lps + from, *n * sizeof **out);
        } else
            st = PLUMB_E_NOMEM;
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* The log probability of tok under logits[0..n) and the k most likely tokens (ties: lower id
 * first), into r. */
static void token_logprob(const float *logits, int32_t n, int32_t tok, int32_t k, plumb_srv_logprob *r) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    const double lse = mx + log(sum);
    r->tok = tok;
    r->logprob = (float)(logits[tok] - lse);
    r->n_top = 0;
    for (int32_t i = 0; i < n && k > 0; i++) { /* insertion into the k best so far */
        const float v = logits[i];
        if (r->n_top == k && v <= logits[r->top_tok[k - 1]]) continue;
        int32_t at = r->n_top < k ? r->n_top++ : k - 1;
        while (at > 0 && logits[r->top_tok[at - 1]] < v) {
            r->top_tok[at] = r->top_tok[at - 1];
            at--;
        }
        r->top_tok[at] = i;
    }
    for (int32_t i = 0; i < r->n_top; i++) r->top_logprob[i] = (float)(logits[r->top_tok[i]] - lse);
}

/* Under mu: adds a log-probability record to the job. */
static bool job_add_logprob(plumb_srv_job *j, const plumb_srv_logprob *r) {
    if (j->n_lps == j->cap_lps) {
        size_t cap = j->cap_lps ? j->cap_lps * 2 : 64;
        plumb_srv_logprob *g = realloc(j->lps, cap * sizeof *g);
        if (!g) return false;
        j->lps = g, j->cap_lps = cap;
    }
    j->lps[j->n_lps++] = *r;
    return true;
}

static void job_unref_locked(plumb_srv_job *j) {
    if (--j->refs == 0) job_destroy(j);
}

void plumb_srv_job_release(plumb_srv_sched *s, plumb_srv_job *job) {
    pthread_mutex_lock(&s->mu);
    job_unref_locked(job);
    pthread_mutex_unlock(&s->mu);
}

void plumb_srv_job_cancel(plumb_srv_sched *s, plumb_srv_job *job) {
    pthread_mutex_lock(&s->mu);
    if (!job->progress.done) {
        job->cancelled = true;
        pthread_cond_signal(&s->work_cv);
    }
    pthread_mutex_unlock(&s->mu);
}

plumb_status plumb_srv_job_poll(plumb_srv_sched *s, plumb_srv_job *job, size_t from, int wait_ms, char **text,
                                size_t *len, plumb_srv_progress *progress) {
    *text = NULL;
    *len = 0;
    pthread_mutex_lock(&s->mu);
    if (wait_ms > 0 && job->text_len <= from && !job->progress.done) {
        struct timespec until = deadline_in(wait_ms);
        while (job->text_len <= from && !job->progress.done)
            if (pthread_cond_timedwait(&job->cv, &s->mu, &until) == ETIMEDOUT) break;
    }
    plumb_status st = PLUMB_OK;
    if (job->text_len > from) {
        *len = job->text_len - from;
        if ((*text = malloc(*len + 1))) {
            memcpy(*text, job->text + from, *len);
            (*text)[*len] = '\0';
        } else {
            *len = 0;
            st = PLUMB_E_NOMEM;
        }
    }
    *progress = job->progress;
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* Under mu. */
static bool job_append(plumb_srv_job *j, const char *t, size_t n) {
    if (!n) return true;
    if (!plumb_gen_append(&j->text, &j->text_len, &j->text_cap, t, n)) return false;
    pthread_cond_broadcast(&j->cv);
    return true;
}

/* Under mu: the job ends (finish_reason, or an error when status != 0). */
static void job_end(plumb_srv_job *j, const char *finish_reason, int status, const char *message) {
    if (j->progress.done) return;
    j->progress.done = true;
    j->progress.finish_reason = status ? NULL : finish_reason;
    j->progress.error_status = status;
    if (status) snprintf(j->progress.error_message, sizeof j->progress.error_message, "%.255s", message);
    pthread_cond_broadcast(&j->cv);
}

/* Under mu: the job ends with 503 "device_unavailable" (its device was lost). */
static void job_end_device(plumb_srv_job *j, const char *message) {
    if (!j->progress.done) j->progress.error_code = DEVICE_CODE;
    job_end(j, NULL, 503, message);
}

/* ---- what GET /slots shows ---------------------------------------------------------------- */

#define FNV64_BASIS 0xcbf29ce484222325ull
#define FNV64_PRIME 0x100000001b3ull

/* Under mu, on the scheduler thread (the owner of sl->cache): the slot holds n tokens,
 * cache[0..n), from now on. The prefix hash is extended while the cache grows and computed
 * afresh when it shrinks below what was hashed (the first tokens stay the same while it grows,
 * and a prompt reusing the cache keeps its first tokens). */
static void show_cache_locked(slot *sl, int32_t n) {
    sl->shown_cache = n;
    const int32_t want = n < PLUMB_SRV_PREFIX_HASH_TOKENS ? n : PLUMB_SRV_PREFIX_HASH_TOKENS;
    if (want < sl->shown_hashed || sl->shown_hashed == 0) {
        sl->shown_hash = FNV64_BASIS;
        sl->shown_hashed = 0;
    }
    for (; sl->shown_hashed < want; sl->shown_hashed++) {
        const uint32_t t = (uint32_t)sl->cache[sl->shown_hashed];
        for (int b = 0; b < 4; b++) { /* the id's bytes, least significant first */
            sl->shown_hash ^= (t >> (8 * b)) & 0xffu;
            sl->shown_hash *= FNV64_PRIME;
        }
    }
}

/* ---- submit ----------------------------------------------------------------------------- */

static int32_t idle_slots_locked(const plumb_srv_sched *s) {
    int32_t n = 0;
    for (int32_t i = 0; i < s->p.n_parallel; i++) n += s->slots[i].job == NULL;
    return n;
}

static void update_gauges_locked(plumb_srv_sched *s) {
    plumb_srv_metrics_gauges(s->metrics, s->n_queue, s->p.n_parallel - idle_slots_locked(s));
}

plumb_status plumb_srv_sched_submit(plumb_srv_sched *s, plumb_srv_job *job) {
    pthread_mutex_lock(&s->mu);
    plumb_status st = PLUMB_OK;
    if (s->state != PLUMB_SRV_READY || s->stopping) st = PLUMB_E_UNSUPPORTED;
    else if (s->n_queue >= s->queue_cap || s->n_queue >= s->p.queue_size + idle_slots_locked(s)) st = PLUMB_E_RANGE;
    else {
        job->refs++;
        s->queue[s->n_queue++] = job;
        update_gauges_locked(s);
        pthread_cond_signal(&s->work_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---- the scheduler thread ------------------------------------------------------------------ */

/* Under mu: the slot lets go of its job (the reference it held is the caller's now) and is
 * idle. */
static plumb_srv_job *slot_clear(plumb_srv_sched *s, slot *sl) {
    plumb_srv_job *j = sl->job;
    plumb_gen_stream_free(&sl->stream);
    plumb_srv_guide_end(&sl->guide);
    plumb_sampler_free(sl->sampler);
    sl->sampler = NULL;
    sl->job = NULL;
    sl->state = SLOT_IDLE;
    sl->last_used = ++s->use_clock;
    return j;
}

/* Under mu: the slot's job ends; the slot keeps its KV cache for a later prompt. */
static void slot_finish(plumb_srv_sched *s, slot *sl, const char *finish_reason, bool at_stop, int status,
                        const char *message) {
    plumb_srv_job *j = sl->job;
    if (!status) {
        const char *t;
        size_t n;
        plumb_gen_stream_finish(&sl->stream, at_stop, &t, &n);
        if (!job_append(j, t, n)) status = 500, message = "out of memory";
    }
    job_end(j, finish_reason, status, message);
    slot_clear(s, sl);
    job_unref_locked(j);
    update_gauges_locked(s);
}

/* Under mu: moves queued jobs into idle slots, each to the slot whose cache shares the
 * longest prefix with its prompt (the least recently used one among equals). */
static void assign_locked(plumb_srv_sched *s) {
    if (!s->ctx) { /* cannot happen: jobs are submitted under a lease on the loaded model */
        for (int32_t i = 0; i < s->n_queue; i++) {
            job_end(s->queue[i], NULL, 503, "no model is loaded");
            job_unref_locked(s->queue[i]);
        }
        s->n_queue = 0;
        return;
    }
    while (s->n_queue > 0) {
        plumb_srv_job *j = s->queue[0];
        slot *best = NULL;
        size_t best_keep = 0;
        for (int32_t i = 0; i < s->p.n_parallel; i++) {
            slot *sl = &s->slots[i];
            if (sl->job) continue;
            /* an embedding pools every token's hidden state: nothing cached can stand in */
            size_t keep = j->embed ? 0 : plumb_gen_reuse_len(sl->cache, (size_t)sl->n_cache, j->prompt, (size_t)j->n_prompt);
            if (!best || keep > best_keep || (keep == best_keep && sl->last_used < best->last_used)) {
                best = sl;
                best_keep = keep;
            }
        }
        if (!best) return;
        memmove(s->queue, s->queue + 1, (size_t)(--s->n_queue) * sizeof *s->queue);
        plumb_seq_truncate(s->ctx, best->id, (int32_t)best_keep);
        best->n_cache = best->n_fed = (int32_t)best_keep;
        show_cache_locked(best, (int32_t)best_keep);
        best->job = j;
        best->state = j->leader && best_keep + 1 < (size_t)j->n_prompt ? SLOT_FOLLOW : SLOT_PREFILL;
        best->logit_at = -1;
        j->progress.n_cached = (int32_t)best_keep;
        j->t_slot = now_s();
        j->progress.queue_ms = (j->t_slot - j->t_arrival) * 1e3;
        plumb_status st = plumb_sampler_create(&j->sampling, s->n_vocab, &best->sampler);
        if (!st) st = plumb_gen_stream_init(&best->stream, plumb_model_vocab(s->model), j->stops, j->n_stops);
        char why[160], gmsg[120] = "";
        if (!st && j->gbnf) {
            const plumb_srv_guide_spec spec = {j->gbnf, j->root, j->has_trigger ? j->trigger : NULL,
                                               j->trigger2[0] ? j->trigger2 : NULL, j->root_after, j->force_trigger};
            if ((st = plumb_srv_guide_start(&best->guide, s->grammars, &spec, gmsg, sizeof gmsg)))
                plumb_gen_stream_free(&best->stream);
        }
        if (st) { /* the request's settings were refused (400), or memory ran out */
            snprintf(why, sizeof why, "cannot start the job: %s",
                     st == PLUMB_E_NOMEM ? "out of memory" : gmsg[0] ? gmsg : plumb_last_error());
            job_end(j, NULL, st == PLUMB_E_INVALID_ARG ? 400 : 500, why);
            plumb_sampler_free(best->sampler);
            best->sampler = NULL;
            best->job = NULL;
            best->state = SLOT_IDLE;
            job_unref_locked(j);
            continue;
        }
        plumb_srv_metrics_prompt(s->metrics, j->n_prompt, (int64_t)best_keep);
    }
}

/* ---- leases ------------------------------------------------------------------------------ */

/* Under mu: grants l (the loaded model is its model until it ends) or refuses it (status !=
 * 0); the caller broadcasts lease_cv. */
static void lease_decide_locked(plumb_srv_sched *s, plumb_srv_lease *l, int status, const char *code, const char *message) {
    if (status) {
        l->state = -1;
        l->status = status;
        l->code = code;
        snprintf(l->message, sizeof l->message, "%s", message);
        return;
    }
    l->state = 1;
    s->pins++;
    if (l->any) snprintf(l->id, sizeof l->id, "%s", s->loaded_id);
}

/* Under mu: decides the leases at the head of the queue that can be: when the head is for
 * the loaded model (or any), it and every other waiter for that model are granted; a lease
 * for any model with none loaded is refused. Stops at a head for a model not loaded: a
 * switch is due once the granted leases end. */
static void grant_locked(plumb_srv_sched *s) {
    bool changed = false;
    while (s->n_waiters > 0) {
        plumb_srv_lease *h = s->waiters[0];
        if (!s->loaded_id[0]) {
            if (!h->any) break;
            lease_decide_locked(s, h, 400, "model_not_loaded",
                                "no model is loaded: name one in 'model' (GET /v1/models lists them)");
            memmove(s->waiters, s->waiters + 1, (size_t)(--s->n_waiters) * sizeof *s->waiters);
            changed = true;
            continue;
        }
        if (!h->any && strcmp(h->id, s->loaded_id) != 0) break;
        int32_t w = 0;
        for (int32_t i = 0; i < s->n_waiters; i++) {
            plumb_srv_lease *l = s->waiters[i];
            if (l->any || !strcmp(l->id, s->loaded_id)) lease_decide_locked(s, l, 0, NULL, NULL);
            else s->waiters[w++] = l;
        }
        s->n_waiters = w;
        changed = true;
        break;
    }
    if (changed) pthread_cond_broadcast(&s->lease_cv);
}

plumb_status plumb_srv_lease_begin(plumb_srv_sched *s, const char *id, const char *path, double deadline,
                                   plumb_srv_lease **out) {
    *out = NULL;
    if (!s->p.switchable) return PLUMB_E_UNSUPPORTED;
    plumb_srv_lease *l = calloc(1, sizeof *l);
    if (!l) return PLUMB_E_NOMEM;
    if (id && (!path || strlen(id) >= sizeof l->id || strlen(path) >= sizeof l->path || !*id)) {
        free(l);
        return PLUMB_E_INVALID_ARG;
    }
    l->any = !id;
    if (id) {
        memcpy(l->id, id, strlen(id) + 1);
        memcpy(l->path, path, strlen(path) + 1);
    }
    l->deadline = deadline;
    plumb_status st = PLUMB_OK;
    pthread_mutex_lock(&s->mu);
    const bool quiet = s->n_waiters == 0 && !s->loading_id[0]; /* nothing waits, no switch runs */
    if (s->stopping) st = PLUMB_E_UNSUPPORTED;
    else if (quiet && s->loaded_id[0] && (l->any || !strcmp(l->id, s->loaded_id))) lease_decide_locked(s, l, 0, NULL, NULL);
    else if (quiet && l->any && !s->loaded_id[0] && s->state == PLUMB_SRV_READY)
        lease_decide_locked(s, l, 400, "model_not_loaded", "no model is loaded: name one in 'model' (GET /v1/models lists them)");
    else if (s->n_waiters >= s->waiters_cap) st = PLUMB_E_RANGE;
    else {
        s->waiters[s->n_waiters++] = l;
        pthread_cond_signal(&s->work_cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (st) free(l);
    else *out = l;
    return st;
}

int plumb_srv_lease_wait(plumb_srv_sched *s, plumb_srv_lease *l, int wait_ms, const char **id, int *status,
                         const char **code, const char **message) {
    pthread_mutex_lock(&s->mu);
    if (l->state == 0 && wait_ms > 0) {
        struct timespec until = deadline_in(wait_ms);
        while (l->state == 0)
            if (pthread_cond_timedwait(&s->lease_cv, &s->mu, &until) == ETIMEDOUT) break;
    }
    const int r = l->state;
    pthread_mutex_unlock(&s->mu);
    /* decided fields are written once, under mu, before state changes: safe to read now */
    if (r > 0 && id) *id = l->id;
    if (r < 0) {
        if (status) *status = l->status;
        if (code) *code = l->code;
        if (message) *message = l->message;
    }
    return r;
}

void plumb_srv_lease_end(plumb_srv_sched *s, plumb_srv_lease *l) {
    if (!l) return;
    pthread_mutex_lock(&s->mu);
    if (l->state == 1) s->pins--;
    else if (l->state == 0)
        for (int32_t i = 0; i < s->n_waiters; i++)
            if (s->waiters[i] == l) {
                memmove(s->waiters + i, s->waiters + i + 1, (size_t)(s->n_waiters - i - 1) * sizeof *s->waiters);
                s->n_waiters--;
                break;
            }
    pthread_cond_signal(&s->work_cv); /* a switch may be due, or the head may have changed */
    pthread_mutex_unlock(&s->mu);
    free(l);
}

void plumb_srv_sched_device(plumb_srv_sched *s, char *spec, size_t cap, int32_t *n_offloaded, int32_t *n_layers) {
    pthread_mutex_lock(&s->mu);
    if (spec) snprintf(spec, cap, "%s", s->device);
    if (n_offloaded) *n_offloaded = s->device[0] ? s->n_offloaded : 0;
    if (n_layers) *n_layers = s->device[0] ? s->n_layers : 0;
    pthread_mutex_unlock(&s->mu);
}

void plumb_srv_sched_loaded(plumb_srv_sched *s, char *id, size_t id_cap, char *path, size_t path_cap, char *loading,
                            size_t loading_cap) {
    pthread_mutex_lock(&s->mu);
    if (id) snprintf(id, id_cap, "%s", s->loaded_id);
    if (path) snprintf(path, path_cap, "%s", s->loaded_path);
    if (loading) snprintf(loading, loading_cap, "%s", s->loading_id);
    pthread_mutex_unlock(&s->mu);
}

/* Under mu: ends queued and running jobs that were cancelled or ran out of time, and refuses
 * leases still waiting past their deadline. */
static void expire_locked(plumb_srv_sched *s, double now) {
    int32_t w = 0;
    bool refused = false;
    for (int32_t i = 0; i < s->n_waiters; i++) {
        plumb_srv_lease *l = s->waiters[i];
        if (now > l->deadline) {
            char msg[600];
            snprintf(msg, sizeof msg, "the request timed out waiting for model '%.500s' to be loaded", l->any ? "(any)" : l->id);
            lease_decide_locked(s, l, 504, NULL, msg);
            refused = true;
        } else {
            s->waiters[w++] = l;
        }
    }
    s->n_waiters = w;
    if (refused) pthread_cond_broadcast(&s->lease_cv);
    w = 0;
    for (int32_t i = 0; i < s->n_queue; i++) {
        plumb_srv_job *j = s->queue[i];
        if (j->cancelled || now > j->deadline) {
            job_end(j, NULL, j->cancelled ? 499 : 504, j->cancelled ? "cancelled" : "the request timed out");
            job_unref_locked(j);
        } else {
            s->queue[w++] = j;
        }
    }
    s->n_queue = w;
    for (int32_t i = 0; i < s->p.n_parallel; i++) {
        slot *sl = &s->slots[i];
        if (!sl->job) continue;
        if (sl->job->cancelled) slot_finish(s, sl, NULL, false, 499, "cancelled");
        else if (now > sl->job->deadline) slot_finish(s, sl, NULL, false, 504, "the request timed out");
    }
}

static bool any_active(const plumb_srv_sched *s) {
    for (int32_t i = 0; i < s->p.n_parallel; i++)
        if (s->slots[i].job) return true;
    return false;
}

/* Followers whose leader now holds the prompt copy its KV cache of all but the last prompt
 * token (decoded again for its logits), and go on as a prompt with that much cached; a
 * follower whose leader is gone (ended, or in no slot while this one has one) processes the
 * prompt itself. Scheduler thread; the slots' job pointers only change on this thread. */
static void follow_leaders(plumb_srv_sched *s) {
    for (int32_t i = 0; i < s->p.n_parallel; i++) {
        slot *f = &s->slots[i];
        if (f->state != SLOT_FOLLOW) continue;
        const plumb_srv_job *j = f->job;
        const slot *l = NULL;
        for (int32_t k = 0; k < s->p.n_parallel && !l; k++)
            if (s->slots[k].job == j->leader && k != i) l = &s->slots[k];
        const int32_t want = j->n_prompt - 1;
        if (l && l->n_fed < want && l->state != SLOT_IDLE) continue; /* not there yet */
        if (l && l->n_fed >= want && plumb_seq_copy(s->ctx, l->id, f->id, want) == PLUMB_OK) {
            memcpy(f->cache, j->prompt, (size_t)want * sizeof *f->cache);
            f->n_cache = f->n_fed = want;
            pthread_mutex_lock(&s->mu);
            show_cache_locked(f, want);
            pthread_mutex_unlock(&s->mu);
        }
        f->state = SLOT_PREFILL;
    }
}

/* Fills the batch: one token of every generating slot, then prompt chunks (at most
 * prefill_chunk tokens in all while slots generate, else up to n_batch). Returns its size. */
static int32_t build_batch(plumb_srv_sched *s) {
    int32_t n = 0, n_logits = 0;
    for (int32_t i = 0; i < s->p.n_parallel; i++) {
        slot *sl = &s->slots[i];
        sl->logit_at = -1;
        sl->batch_n = 0;
        if (sl->state != SLOT_GEN) continue;
        s->b_tokens[n] = sl->last_tok;
        s->b_pos[n] = sl->n_cache;
        s->b_seq[n] = sl->id;
        s->b_logits[n] = true;
        sl->logit_at = n_logits++;
        sl->batch_n = 1;
        n++;
    }
    int32_t budget = s->n_batch - n;
    if (n > 0 && budget > s->p.prefill_chunk) budget = s->p.prefill_chunk;
    for (int32_t k = 0; k < s->p.n_parallel && budget > 0; k++) {
        slot *sl = &s->slots[(s->rr + k) % s->p.n_parallel];
        if (sl->state != SLOT_PREFILL) continue;
        const plumb_srv_job *j = sl->job;
        int32_t m = j->n_prompt - sl->n_fed;
        if (m > budget) m = budget;
        sl->emb_at = n_logits, sl->emb_n = 0;
        for (int32_t t = 0; t < m; t++) {
            int32_t at = sl->n_fed + t;
            s->b_tokens[n] = j->prompt[at];
            s->b_pos[n] = at;
            s->b_seq[n] = sl->id;
            if (j->embed) { /* the tokens the pooling reads */
                s->b_logits[n] = s->pooling == PLUMB_POOLING_MEAN ? true
                                 : s->pooling == PLUMB_POOLING_CLS ? at == 0
                                                                   : at == j->n_prompt - 1;
                if (s->b_logits[n]) sl->emb_n++, n_logits++;
            } else
                s->b_logits[n] = at == j->n_prompt - 1;
            n++;
        }
        if (!j->embed && sl->n_fed + m == j->n_prompt) sl->logit_at = n_logits++;
        sl->batch_n = m;
        budget -= m;
    }
    s->rr = (s->rr + 1) % s->p.n_parallel;
    return n;
}

/* Adds the hidden states of an embedding job's tokens in the last decode to its sum; when its
 * prompt is all in, the pooled vector, L2-normalized, is its result. Scheduler thread. */
static void embed_step(plumb_srv_sched *s, slot *sl) {
    plumb_srv_job *j = sl->job;
    const int32_t d = s->n_embd;
    if (!j->emb_sum && !(j->emb_sum = calloc((size_t)d, sizeof *j->emb_sum))) {
        pthread_mutex_lock(&s->mu);
        slot_finish(s, sl, NULL, false, 500, "out of memory");
        pthread_mutex_unlock(&s->mu);
        return;
    }
    for (int32_t k = 0; k < sl->emb_n; k++) {
        const float *h = plumb_get_embeddings(s->ctx, sl->emb_at + k);
        for (int32_t i = 0; h && i < d; i++) j->emb_sum[i] += h[i];
        j->emb_count++;
    }
    if (sl->n_fed < j->n_prompt) return;
    float *v = malloc((size_t)d * sizeof *v);
    if (v) plumb_gen_normalize(j->emb_sum, d, v);
    pthread_mutex_lock(&s->mu);
    if (!v) slot_finish(s, sl, NULL, false, 500, "out of memory");
    else {
        j->embedding = v, j->n_embd = d;
        j->progress.n_gen = 0;
        slot_finish(s, sl, "stop", false, 0, NULL);
    }
    pthread_mutex_unlock(&s->mu);
}

/* After a successful decode: samples each slot that has logits and hands its text to the
 * job. The job pointer stays valid: only this thread clears it. */
static void after_decode(plumb_srv_sched *s) {
    for (int32_t i = 0; i < s->p.n_parallel; i++) {
        slot *sl = &s->slots[i];
        if (!sl->job || !sl->batch_n) continue;
        plumb_srv_job *j = sl->job;
        if (sl->state == SLOT_GEN) sl->cache[sl->n_cache++] = sl->last_tok;
        else {
            memcpy(sl->cache + sl->n_fed, j->prompt + sl->n_fed, (size_t)sl->batch_n * sizeof *sl->cache);
            sl->n_fed += sl->batch_n;
            sl->n_cache = sl->n_fed;
        }
        if (j->embed || sl->logit_at < 0) { /* a prompt chunk with nothing to sample: show how far it is */
            pthread_mutex_lock(&s->mu);
            show_cache_locked(sl, sl->n_cache);
            pthread_mutex_unlock(&s->mu);
        }
        if (j->embed) {
            embed_step(s, sl);
            continue;
        }
        if (sl->logit_at < 0) continue;
        const float *logits = plumb_get_logits(s->ctx, sl->logit_at);
        bool must_end;
        char why[160];
        int32_t tok = plumb_srv_guide_next(&sl->guide, sl->sampler, logits, &must_end, why, sizeof why);
        if (tok < 0) { /* the grammar allows nothing more: the answer ends here */
            plumb_srv_log("grammar: generation stopped after %d tokens: %s", (int)j->progress.n_gen, why);
            pthread_mutex_lock(&s->mu);
            slot_finish(s, sl, "stop", false, 0, NULL);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        plumb_srv_logprob lp;
        if (j->n_logprobs >= 0) token_logprob(logits, s->n_vocab, tok, j->n_logprobs, &lp);
        const char *t;
        size_t n;
        plumb_status err;
        plumb_gen_event ev = plumb_gen_stream_push(&sl->stream, tok, &t, &n, &err);
        double now = now_s();
        pthread_mutex_lock(&s->mu);
        show_cache_locked(sl, sl->n_cache);
        bool first = sl->state == SLOT_PREFILL;
        if (first) {
            j->t_first = now;
            j->progress.prompt_ms = (now - j->t_slot) * 1e3;
        }
        j->progress.predicted_ms = (now - j->t_first) * 1e3;
        if (ev != PLUMB_GEN_EOG) {
            j->progress.n_gen++;
            plumb_srv_metrics_token(s->metrics, first ? now - j->t_arrival : -1, first ? -1 : now - sl->t_last_token);
        }
        sl->t_last_token = now;
        if (j->n_logprobs >= 0 && ev != PLUMB_GEN_EOG && !job_add_logprob(j, &lp)) err = PLUMB_E_NOMEM;
        if (err || !job_append(j, t, n)) slot_finish(s, sl, NULL, false, 500, "generation failed: out of memory");
        else if (ev != PLUMB_GEN_MORE || must_end) slot_finish(s, sl, "stop", ev == PLUMB_GEN_STOP, 0, NULL);
        else if (j->max_tokens >= 0 && j->progress.n_gen >= j->max_tokens) slot_finish(s, sl, "length", false, 0, NULL);
        else if (sl->n_cache >= s->n_ctx) slot_finish(s, sl, "length", false, 0, NULL);
        else {
            sl->last_tok = tok;
            sl->state = SLOT_GEN;
        }
        pthread_mutex_unlock(&s->mu);
    }
}

/* Frees the model and what was made for it (context, chat format, grammars); the slots keep
 * their buffers but hold nothing. Scheduler thread, with no job in a slot. */
static void unload(plumb_srv_sched *s) {
    plumb_srv_grammars_free(s->grammars);
    s->grammars = NULL;
    plumb_gen_chat_free(&s->chat);
    s->has_chat = false;
    plumb_context_free(s->ctx);
    s->ctx = NULL;
    plumb_model_free(s->model);
    s->model = NULL;
    for (int32_t i = 0; i < s->p.n_parallel; i++) s->slots[i].n_cache = s->slots[i].n_fed = 0;
}

/* One decode of a token at position 0 of every slot's sequence, then the caches emptied again:
 * the first touch of each sequence's cache pages (zeroed by the kernel on first use, 2 MiB at a
 * time where they are huge pages: 288 MiB for four slots of Gemma 3 270M) and of the step's
 * buffers happens here, at load, not in the first requests' steps (on an Ice Lake VM the first
 * step of four new requests took 464 ms instead of ~35, their time to first token 633 ms at the
 * 95th percentile), as llama.cpp's server warms up at load too. */
static plumb_status warm_up(plumb_model_t *m, plumb_context_t *c, int32_t n_seq) {
    int32_t *tok = malloc(3 * (size_t)n_seq * sizeof *tok);
    bool *logits = malloc((size_t)n_seq * sizeof *logits);
    plumb_status st = PLUMB_E_NOMEM;
    if (tok && logits) {
        const int32_t bos = plumb_vocab_bos(plumb_model_vocab(m));
        for (int32_t i = 0; i < n_seq; i++) {
            tok[i] = bos >= 0 ? bos : 0;
            tok[n_seq + i] = 0;     /* position */
            tok[2 * n_seq + i] = i; /* sequence */
            logits[i] = true;
        }
        plumb_batch b = {.n_tokens = n_seq, .tokens = tok, .pos = tok + n_seq, .seq = tok + 2 * n_seq, .logits = logits};
        st = plumb_decode(c, &b);
        for (int32_t i = 0; i < n_seq && !st; i++) st = plumb_seq_truncate(c, i, 0);
    }
    free(tok), free(logits);
    return st;
}

/* The model at path, placed as the parameters say, and a context for the slots into *m and *c;
 * on failure both NULL and why[0..why_cap) says why. Scheduler thread; touches nothing
 * shared, so it runs without any lock. */
static plumb_status open_model(plumb_srv_sched *s, const char *path, plumb_model_t **m, plumb_context_t **c, char *why,
                               size_t why_cap) {
    *m = NULL;
    *c = NULL;
    why[0] = '\0';
    plumb_model_params mp = plumb_model_default_params();
    mp.use_mmap = s->p.use_mmap;
    mp.device = s->p.device;
    mp.n_offload = s->p.n_offload;
    mp.remote_key_file = s->p.remote_key_file;
    plumb_status st = plumb_model_load_params(path, &mp, m);
    if (!st) {
        plumb_context_params cp = plumb_context_default_params();
        cp.n_ctx = s->p.n_ctx;
        cp.n_threads = s->p.n_threads;
        cp.no_repack = s->p.no_repack;
        cp.fast_gemm = s->p.fast_gemm;
        cp.n_seq = s->p.n_parallel;
        if (s->p.n_batch > 0) cp.n_batch = s->p.n_batch;
        cp.embeddings = s->p.embeddings;
        st = plumb_context_create(*m, &cp, c);
        if (!st) st = warm_up(*m, *c, cp.n_seq);
    }
    if (st) {
        const char *d = plumb_last_error();
        snprintf(why, why_cap, "%s", d && *d ? d : plumb_status_message(st));
        plumb_context_free(*c);
        plumb_model_free(*m);
        *c = NULL;
        *m = NULL;
    }
    return st;
}

/* Makes m and c (opened by open_model, now s's) the model and context in use, with the chat
 * format and the buffers sized by them. On failure why[0..why_cap) says why (what was made
 * stays for unload()). Scheduler thread, with model_lock held for writing (or before any
 * connection may borrow) and no model in use (unload()). */
static plumb_status adopt(plumb_srv_sched *s, plumb_model_t *m, plumb_context_t *ctx, char *why, size_t why_cap) {
    why[0] = '\0';
    s->model = m;
    s->ctx = ctx;
    plumb_status st;
    plumb_model_info info;
    plumb_model_get_info(s->model, &info);
    s->n_vocab = info.n_vocab;
    s->n_embd = info.n_embd;
    /* the pooling asked for, else the model's, else the mean */
    s->pooling = s->p.pooling >= 0 ? s->p.pooling : info.pooling >= 0 ? info.pooling : PLUMB_POOLING_MEAN;
    pthread_mutex_lock(&s->mu); /* GET /slots reads it */
    s->n_ctx = plumb_context_n_ctx(s->ctx);
    pthread_mutex_unlock(&s->mu);
    s->n_batch = plumb_context_n_batch(s->ctx);
    if (s->p.prefill_chunk <= 0 || s->p.prefill_chunk > s->n_batch) s->p.prefill_chunk = s->n_batch;
    char warning[600];
    st = plumb_gen_chat_init(&s->chat, s->model, s->p.chat_format, s->p.chat_template, s->p.chat_template_len, warning,
                             sizeof warning);
    if (st == PLUMB_E_NOMEM) {
        snprintf(why, why_cap, "out of memory");
        return st;
    }
    if (st == PLUMB_E_UNSUPPORTED) {
        snprintf(why, why_cap, "the chat template file cannot be used: %s", plumb_last_error());
        return st;
    }
    s->has_chat = st == PLUMB_OK;
    snprintf(why, why_cap, "out of memory"); /* the only failure from here on */
    if (!(s->grammars = plumb_srv_grammars_create(plumb_model_vocab(s->model), 8))) return PLUMB_E_NOMEM;
    if (warning[0]) plumb_srv_log("%s", warning);
    int32_t *bt = realloc(s->b_tokens, 3 * (size_t)s->n_batch * sizeof *s->b_tokens); /* tokens, positions, sequences */
    if (bt) s->b_tokens = bt;
    bool *bl = realloc(s->b_logits, (size_t)s->n_batch * sizeof *s->b_logits);
    if (bl) s->b_logits = bl;
    if (!bt || !bl) return PLUMB_E_NOMEM;
    s->b_pos = s->b_tokens + s->n_batch;
    s->b_seq = s->b_pos + s->n_batch;
    for (int32_t i = 0; i < s->p.n_parallel; i++) {
        int32_t *c = realloc(s->slots[i].cache, (size_t)s->n_ctx * sizeof(int32_t));
        if (!c) return PLUMB_E_NOMEM;
        s->slots[i].cache = c;
        s->slots[i].n_cache = s->slots[i].n_fed = 0;
    }
    int32_t n_offloaded = 0;
    const char *device = plumb_model_device(s->model, &n_offloaded);
    pthread_mutex_lock(&s->mu); /* plumb_srv_sched_device reads it, on any thread */
    snprintf(s->device, sizeof s->device, "%s", device);
    s->n_offloaded = n_offloaded;
    s->n_layers = info.n_layer + 1;
    pthread_mutex_unlock(&s->mu);
    why[0] = '\0';
    return PLUMB_OK;
}

/* Loads the model at path (open_model, then adopt under model_lock). On failure why says why
 * (what was made stays for unload()). Scheduler thread, no model in use. */
static plumb_status load(plumb_srv_sched *s, const char *path, char *why, size_t why_cap) {
    plumb_model_t *m;
    plumb_context_t *c;
    plumb_status st = open_model(s, path, &m, &c, why, why_cap);
    if (st) return st;
    pthread_rwlock_wrlock(&s->model_lock);
    st = adopt(s, m, c, why, why_cap);
    pthread_rwlock_unlock(&s->model_lock);
    return st;
}

/* unload() under model_lock: no connection is borrowing the model. Scheduler thread. */
static void unload_locked_out(plumb_srv_sched *s) {
    pthread_rwlock_wrlock(&s->model_lock);
    unload(s);
    pthread_rwlock_unlock(&s->model_lock);
}

/* Under mu, with no lease granted and no job queued or running: frees the loaded model and
 * loads the one the head of the lease queue names (the lock is let go meanwhile). On failure
 * the leases waiting for that model are refused and no model is loaded. */
static void switch_model_locked(plumb_srv_sched *s) {
    char id[sizeof s->loaded_id], path[sizeof s->loaded_path], why[512];
    snprintf(id, sizeof id, "%s", s->waiters[0]->id);
    snprintf(path, sizeof path, "%s", s->waiters[0]->path);
    if (s->loaded_id[0]) plumb_srv_log("unloading model '%s' for '%s'", s->loaded_id, id);
    snprintf(s->loading_id, sizeof s->loading_id, "%s", id);
    s->loaded_id[0] = s->loaded_path[0] = s->device[0] = '\0';
    for (int32_t i = 0; i < s->p.n_parallel; i++) show_cache_locked(&s->slots[i], 0);
    plumb_srv_metrics_model_unloaded(s->metrics);
    if (s->lost) { /* the model whose device was lost goes: nothing waits for it */
        s->lost = false;
        plumb_srv_metrics_device(s->metrics, true);
    }
    pthread_mutex_unlock(&s->mu);
    unload_locked_out(s);
    const double t0 = now_s();
    plumb_status st = load(s, path, why, sizeof why);
    if (st) unload_locked_out(s);
    pthread_mutex_lock(&s->mu);
    s->loading_id[0] = '\0';
    plumb_srv_metrics_model_load(s->metrics, id, st == PLUMB_OK);
    if (!st) {
        snprintf(s->loaded_id, sizeof s->loaded_id, "%s", id);
        snprintf(s->loaded_path, sizeof s->loaded_path, "%s", path);
        if (s->n_offloaded > 0)
            plumb_srv_log("loaded model '%s' in %.2f s on %s (%d/%d layers)", id, now_s() - t0, s->device,
                          (int)s->n_offloaded, (int)s->n_layers);
        else
            plumb_srv_log("loaded model '%s' in %.2f s on %s", id, now_s() - t0, s->device);
        return; /* grant_locked grants its leases */
    }
    plumb_srv_log("cannot load model '%s': %s", id, why);
    /* clients see the file's name, not where the server keeps it */
    const char *base = strrchr(path, '/'), *reason = why;
    char shown[600];
    if (base && !strncmp(why, path, strlen(path))) {
        snprintf(shown, sizeof shown, "%.80s%.500s", base + 1, why + strlen(path));
        reason = shown;
    }
    char msg[1100];
    snprintf(msg, sizeof msg, "cannot load model '%.500s': %.500s", id, reason);
    /* a device that does not answer may answer later: 503, as for a device lost while serving */
    const bool device = st == PLUMB_E_DEVICE;
    int32_t w = 0;
    for (int32_t i = 0; i < s->n_waiters; i++) {
        plumb_srv_lease *l = s->waiters[i];
        if (!l->any && !strcmp(l->id, id))
            lease_decide_locked(s, l, device ? 503 : 500, device ? DEVICE_CODE : "model_load_failed", msg);
        else s->waiters[w++] = l;
    }
    s->n_waiters = w;
    pthread_cond_broadcast(&s->lease_cv);
}

/* The model's device is lost (a decode failed with PLUMB_E_DEVICE, why): its KV caches went with
 * it. A job that has produced text ends with 503; one that has produced nothing yet (its
 * prompt was being processed, or it waited in a slot) goes back to the head of the queue, in
 * the order the jobs came, to run again once the model is loaded again, so that a device
 * restarted while the server was idle costs the next request nothing but the reload; but
 * only once, so that a job whose step kills the device cannot do it again and again. The
 * context is freed; the model stays, computing nothing, for the connections that read its
 * vocabulary, until a reload replaces it. The first attempt is due at once. Scheduler
 * thread. */
static void device_lost(plumb_srv_sched *s, const char *why) {
    char msg[sizeof s->lost_why + 24];
    snprintf(msg, sizeof msg, "device unavailable: %s", why);
    plumb_srv_log("%s; the model will be loaded again before the next request runs", msg);
    pthread_mutex_lock(&s->mu);
    plumb_srv_job *back[256]; /* n_parallel at most */
    int32_t n_back = 0;
    for (int32_t i = 0; i < s->p.n_parallel; i++) {
        slot *sl = &s->slots[i];
        const plumb_srv_job *held = sl->job;
        if (held && !held->requeued && held->progress.n_gen == 0 && held->text_len == 0 && held->n_lps == 0) {
            plumb_srv_job *j = slot_clear(s, sl);
            j->requeued = true;
            free(j->emb_sum); /* an embedding starts over */
            j->emb_sum = NULL;
            j->emb_count = 0;
            int32_t at = n_back++;
            for (; at > 0 && back[at - 1]->t_arrival > j->t_arrival; at--) back[at] = back[at - 1];
            back[at] = j;
        } else if (sl->job) {
            sl->job->progress.error_code = DEVICE_CODE;
            slot_finish(s, sl, NULL, false, 503, msg);
        }
        sl->n_cache = sl->n_fed = 0;
        show_cache_locked(sl, 0);
    }
    /* the queue holds them: a job in a slot was in the queue, which has room for every slot */
    memmove(s->queue + n_back, s->queue, (size_t)s->n_queue * sizeof *s->queue);
    memcpy(s->queue, back, (size_t)n_back * sizeof *back);
    s->n_queue += n_back;
    s->lost = true;
    snprintf(s->lost_why, sizeof s->lost_why, "%s", why);
    s->n_reload_fails = 0;
    s->retry_at = now_s();
    s->fail_at = s->retry_at - RELOAD_MIN_S;
    plumb_srv_metrics_device(s->metrics, false);
    update_gauges_locked(s);
    pthread_mutex_unlock(&s->mu);
    plumb_context_free(s->ctx); /* its buffers were on the device: nothing to wait for */
    s->ctx = NULL;
}

/* Under mu: whether to try loading a lost device's model again now: a job waits and the last
 * failure is a second old, or the background retry is due. */
static bool reload_due_locked(const plumb_srv_sched *s, double now) {
    return s->lost && ((s->n_queue > 0 && now >= s->fail_at + RELOAD_MIN_S) || now >= s->retry_at);
}

/* Under mu (let go meanwhile): one attempt to load the model of a lost device again, with the
 * same parameters (which dials the device again). Success swaps it in under model_lock and the
 * queued jobs run on it; failure ends the jobs that waited for it with 503 and backs off.
 * Scheduler thread. */
static void reload_locked(plumb_srv_sched *s) {
    char id[sizeof s->loaded_id], path[sizeof s->loaded_path], why[512];
    snprintf(id, sizeof id, "%s", s->loaded_id);
    snprintf(path, sizeof path, "%s", s->loaded_path);
    pthread_mutex_unlock(&s->mu);
    const double t0 = now_s();
    plumb_model_t *m;
    plumb_context_t *c;
    plumb_status st = open_model(s, path, &m, &c, why, sizeof why);
    if (!st) { /* the old model goes once no connection is reading it */
        pthread_rwlock_wrlock(&s->model_lock);
        unload(s);
        st = adopt(s, m, c, why, sizeof why);
        pthread_rwlock_unlock(&s->model_lock);
    }
    pthread_mutex_lock(&s->mu);
    const double now = now_s();
    plumb_srv_metrics_model_load(s->metrics, id, st == PLUMB_OK);
    if (!st) {
        s->lost = false;
        plumb_srv_metrics_device(s->metrics, true);
        plumb_srv_log("the device answers again: loaded model '%s' again in %.2f s on %s", id, now - t0, s->device);
        return;
    }
    s->n_reload_fails++;
    s->fail_at = now;
    const double backoff = RELOAD_MIN_S * (double)(1 << (s->n_reload_fails < 3 ? s->n_reload_fails : 3));
    s->retry_at = now + (backoff < RELOAD_MAX_S ? backoff : RELOAD_MAX_S);
    snprintf(s->lost_why, sizeof s->lost_why, "%.255s", why);
    if (s->n_reload_fails == 1 || s->n_queue > 0)
        plumb_srv_log("cannot load model '%s' again: %s (trying again in %.0f s, or when a request comes)", id, why,
                      s->retry_at - now);
    char msg[sizeof s->lost_why + 24];
    snprintf(msg, sizeof msg, "device unavailable: %s", s->lost_why);
    for (int32_t i = 0; i < s->n_queue; i++) {
        job_end_device(s->queue[i], msg);
        job_unref_locked(s->queue[i]);
    }
    s->n_queue = 0;
    update_gauges_locked(s);
}

/* Under mu: whether the head of the lease queue waits for a model other than the loaded one
 * and nothing holds the loaded one any more. */
static bool switch_due_locked(const plumb_srv_sched *s) {
    if (!s->p.switchable || s->n_waiters == 0 || s->pins > 0 || s->n_queue > 0 || any_active(s)) return false;
    const plumb_srv_lease *h = s->waiters[0];
    return !h->any && strcmp(h->id, s->loaded_id) != 0;
}

static void *sched_main(void *arg) {
    plumb_srv_sched *s = arg;
    plumb_status st = PLUMB_OK;
    if (s->p.model_path) st = load(s, s->p.model_path, s->load_error, sizeof s->load_error);
    pthread_mutex_lock(&s->mu);
    s->state = st ? PLUMB_SRV_FAILED : PLUMB_SRV_READY;
    if (s->p.model_path) {
        plumb_srv_metrics_model_load(s->metrics, s->loaded_id, st == PLUMB_OK);
        if (st) s->loaded_id[0] = '\0';
        else snprintf(s->loaded_path, sizeof s->loaded_path, "%s", s->p.model_path);
    }
    pthread_cond_broadcast(&s->ready_cv);
    pthread_mutex_unlock(&s->mu);
    if (st) return NULL;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            const double now = now_s();
            expire_locked(s, now);
            if (s->stopping) break;
            grant_locked(s);
            if (s->lost) { /* nothing runs until the model is loaded again (or another one replaces it) */
                if (switch_due_locked(s)) switch_model_locked(s);
                else if (reload_due_locked(s, now)) reload_locked(s);
                else {
                    const double due = s->n_queue > 0 && s->fail_at + RELOAD_MIN_S < s->retry_at ? s->fail_at + RELOAD_MIN_S
                                                                                                : s->retry_at;
                    int ms = (int)((due - now) * 1e3) + 1;
                    struct timespec until = deadline_in(ms < 1 ? 1 : ms > 200 ? 200 : ms);
                    pthread_cond_timedwait(&s->work_cv, &s->mu, &until);
                }
                continue;
            }
            assign_locked(s);
            update_gauges_locked(s);
            if (any_active(s)) break;
            if (switch_due_locked(s)) {
                switch_model_locked(s);
                continue;
            }
            struct timespec until = deadline_in(200); /* wake to check deadlines */
            pthread_cond_timedwait(&s->work_cv, &s->mu, &until);
        }
        if (s->stopping) {
            for (int32_t i = 0; i < s->n_queue; i++) {
                job_end(s->queue[i], NULL, 503, "the server is shutting down");
                job_unref_locked(s->queue[i]);
            }
            s->n_queue = 0;
            for (int32_t i = 0; i < s->p.n_parallel; i++)
                if (s->slots[i].job) slot_finish(s, &s->slots[i], NULL, false, 503, "the server is shutting down");
            for (int32_t i = 0; i < s->n_waiters; i++)
                lease_decide_locked(s, s->waiters[i], 503, NULL, "the server is shutting down");
            s->n_waiters = 0;
            pthread_cond_broadcast(&s->lease_cv);
            update_gauges_locked(s);
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        pthread_mutex_unlock(&s->mu);
        follow_leaders(s);
        int32_t n = build_batch(s);
        if (n == 0) continue; /* only followers waiting: their leaders move on without a decode */
        plumb_batch b = {.n_tokens = n, .tokens = s->b_tokens, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_logits};
        st = plumb_decode(s->ctx, &b);
        if (st == PLUMB_OK) {
            after_decode(s);
            continue;
        }
        if (st == PLUMB_E_DEVICE) { /* the context and the model's weights went with the device */
            char why[sizeof s->lost_why];
            snprintf(why, sizeof why, "%s", plumb_last_error());
            device_lost(s, why);
            continue;
        }
        /* a failed decode leaves the caches of its sequences unspecified: start them over */
        char msg[160];
        snprintf(msg, sizeof msg, "decode failed: %s", plumb_last_error());
        pthread_mutex_lock(&s->mu);
        for (int32_t i = 0; i < s->p.n_parallel; i++) {
            slot *sl = &s->slots[i];
            if (!sl->job || !sl->batch_n) continue;
            slot_finish(s, sl, NULL, false, 500, msg);
            plumb_seq_truncate(s->ctx, sl->id, 0);
            sl->n_cache = 0;
            show_cache_locked(sl, 0);
        }
        pthread_mutex_unlock(&s->mu);
    }
}

plumb_status plumb_srv_sched_create(const plumb_srv_sched_params *p, plumb_srv_metrics *metrics,
                                    plumb_srv_sched **out) {
    *out = NULL;
    if ((!p->model_path && !p->switchable) || p->n_parallel < 1 || p->n_parallel > 256 || p->queue_size < 0 ||
        (p->switchable && p->embeddings))
        return PLUMB_E_INVALID_ARG;
    plumb_srv_sched *s = calloc(1, sizeof *s);
    if (!s) return PLUMB_E_NOMEM;
    s->p = *p;
    s->p.model_id = NULL; /* copied into loaded_id */
    s->metrics = metrics;
    s->queue_cap = p->queue_size + p->n_parallel;
    s->queue = calloc((size_t)s->queue_cap, sizeof *s->queue);
    s->slots = calloc((size_t)p->n_parallel, sizeof *s->slots);
    s->waiters_cap = p->switchable ? s->queue_cap : 0;
    s->waiters = p->switchable ? calloc((size_t)s->waiters_cap, sizeof *s->waiters) : NULL;
    if (!s->queue || !s->slots || (p->switchable && !s->waiters)) {
        free(s->queue);
        free(s->slots);
        free(s->waiters);
        free(s);
        return PLUMB_E_NOMEM;
    }
    for (int32_t i = 0; i < p->n_parallel; i++) s->slots[i].id = i;
    if (p->model_path) snprintf(s->loaded_id, sizeof s->loaded_id, "%s", p->model_id ? p->model_id : p->model_path);
    pthread_mutex_init(&s->mu, NULL);
    pthread_rwlock_init(&s->model_lock, NULL);
    cond_init_monotonic(&s->work_cv);
    cond_init_monotonic(&s->ready_cv);
    cond_init_monotonic(&s->lease_cv);
    s->state = PLUMB_SRV_LOADING;
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        plumb_srv_sched_free(s);
        return PLUMB_E_NOMEM;
    }
    s->thread_started = true;
    *out = s;
    return PLUMB_OK;
}

void plumb_srv_sched_stop(plumb_srv_sched *s) {
    if (!s || !s->thread_started) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
}

void plumb_srv_sched_free(plumb_srv_sched *s) {
    if (!s) return;
    plumb_srv_sched_stop(s);
    if (s->slots)
        for (int32_t i = 0; i < s->p.n_parallel; i++) free(s->slots[i].cache);
    free(s->slots);
    free(s->b_tokens);
    free(s->b_logits);
    free(s->queue);
    free(s->waiters);
    plumb_context_free(s->ctx);
    plumb_gen_chat_free(&s->chat);
    plumb_srv_grammars_free(s->grammars);
    plumb_model_free(s->model);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->ready_cv);
    pthread_cond_destroy(&s->lease_cv);
    pthread_rwlock_destroy(&s->model_lock);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

plumb_srv_state plumb_srv_sched_state(plumb_srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    plumb_srv_state st = s->state;
    pthread_mutex_unlock(&s->mu);
    return st;
}

plumb_srv_state plumb_srv_sched_wait_ready(plumb_srv_sched *s, const char **message) {
    pthread_mutex_lock(&s->mu);
    while (s->state == PLUMB_SRV_LOADING) pthread_cond_wait(&s->ready_cv, &s->mu);
    plumb_srv_state st = s->state;
    pthread_mutex_unlock(&s->mu);
    if (message) *message = s->load_error;
    return st;
}

int32_t plumb_srv_sched_slots(plumb_srv_sched *s, plumb_srv_slot_info *out, int32_t cap) {
    pthread_mutex_lock(&s->mu);
    int32_t n = s->slots ? (s->p.n_parallel < cap ? s->p.n_parallel : cap) : 0;
    for (int32_t i = 0; i < n; i++) {
        const slot *sl = &s->slots[i];
        const plumb_srv_job *j = sl->job;
        out[i] = (plumb_srv_slot_info){.id = sl->id, .n_ctx = s->n_ctx, .n_cached = sl->shown_cache,
                                       .prefix_hash = sl->shown_hash, .n_hashed = sl->shown_hashed,
                                       .state = !j ? "idle" : j->progress.n_gen || j->t_first > 0 ? "generating" : "prompt",
                                       .n_prompt = j ? j->n_prompt : 0, .n_gen = j ? j->progress.n_gen : 0};
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void plumb_srv_sched_slot_counts(plumb_srv_sched *s, int32_t *n_free, int32_t *n_total) {
    pthread_mutex_lock(&s->mu);
    const int32_t free = idle_slots_locked(s) - s->n_queue;
    pthread_mutex_unlock(&s->mu);
    *n_free = free > 0 ? free : 0;
    *n_total = s->p.n_parallel;
}

void plumb_srv_sched_borrow(plumb_srv_sched *s) { pthread_rwlock_rdlock(&s->model_lock); }
void plumb_srv_sched_unborrow(plumb_srv_sched *s) { pthread_rwlock_unlock(&s->model_lock); }

bool plumb_srv_sched_device_lost(plumb_srv_sched *s, char *why, size_t cap) {
    pthread_mutex_lock(&s->mu);
    const bool lost = s->lost;
    if (lost && why) snprintf(why, cap, "%s", s->lost_why);
    pthread_mutex_unlock(&s->mu);
    return lost;
}

const plumb_model_t *plumb_srv_sched_model(plumb_srv_sched *s) { return s->model; }
int32_t plumb_srv_sched_n_ctx(plumb_srv_sched *s) { return s->n_ctx; }
const plumb_gen_chat *plumb_srv_sched_chat(plumb_srv_sched *s) { return s->has_chat ? &s->chat : NULL; }
