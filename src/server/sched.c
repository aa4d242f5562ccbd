/* sched.c — the slot scheduler (see sched.h). Locking: one mutex `mu` guards the queue, the
 * job pointers of the slots and every job's output; the scheduler thread holds it only for
 * bookkeeping, never during plumb_decode or sampling. Slot fields other than `job` belong to
 * the scheduler thread alone. */
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
    /* shared, under mu */
    int refs;
    bool cancelled;
    char *text; /* everything generated so far, [text_cap] */
    size_t text_len, text_cap;
    plumb_srv_progress progress;
    pthread_cond_t cv; /* signalled when text grows or the job ends */
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
};

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
    if (status) snprintf(j->progress.error_message, sizeof j->progress.error_message, "%s", message);
    pthread_cond_broadcast(&j->cv);
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
    plumb_gen_stream_free(&sl->stream);
    plumb_srv_guide_end(&sl->guide);
    plumb_sampler_free(sl->sampler);
    sl->sampler = NULL;
    sl->job = NULL;
    sl->state = SLOT_IDLE;
    sl->last_used = ++s->use_clock;
    job_unref_locked(j);
}

/* Under mu: moves queued jobs into idle slots, each to the slot whose cache shares the
 * longest prefix with its prompt (the least recently used one among equals). */
static void assign_locked(plumb_srv_sched *s) {
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
        best->n_cache = best->n_fed = best->shown_cache = (int32_t)best_keep;
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

/* Under mu: ends queued and running jobs that were cancelled or ran out of time. */
static void expire_locked(plumb_srv_sched *s, double now) {
    int32_t w = 0;
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
            f->n_cache = f->n_fed = f->shown_cache = want;
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
        sl->shown_cache = sl->n_cache;
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

static plumb_status load(plumb_srv_sched *s) {
    plumb_model_params mp = plumb_model_default_params();
    mp.use_mmap = s->p.use_mmap;
    plumb_status st = plumb_model_load_params(s->p.model_path, &mp, &s->model);
    if (st) return st;
    plumb_context_params cp = plumb_context_default_params();
    cp.n_ctx = s->p.n_ctx;
    cp.n_threads = s->p.n_threads;
    cp.n_seq = s->p.n_parallel;
    if (s->p.n_batch > 0) cp.n_batch = s->p.n_batch;
    cp.embeddings = s->p.embeddings;
    if ((st = plumb_context_create(s->model, &cp, &s->ctx))) return st;
    plumb_model_info info;
    plumb_model_get_info(s->model, &info);
    s->n_vocab = info.n_vocab;
    s->n_embd = info.n_embd;
    /* the pooling asked for, else the model's, else the mean */
    s->pooling = s->p.pooling >= 0 ? s->p.pooling : info.pooling >= 0 ? info.pooling : PLUMB_POOLING_MEAN;
    s->n_ctx = plumb_context_n_ctx(s->ctx);
    s->n_batch = plumb_context_n_batch(s->ctx);
    if (s->p.prefill_chunk <= 0 || s->p.prefill_chunk > s->n_batch) s->p.prefill_chunk = s->n_batch;
    char warning[600];
    st = plumb_gen_chat_init(&s->chat, s->model, s->p.chat_format, s->p.chat_template, s->p.chat_template_len, warning,
                             sizeof warning);
    if (st == PLUMB_E_NOMEM) return st;
    if (st == PLUMB_E_UNSUPPORTED) {
        snprintf(s->load_error, sizeof s->load_error, "the chat template file cannot be used: %s", plumb_last_error());
        return st;
    }
    s->has_chat = st == PLUMB_OK;
    if (!(s->grammars = plumb_srv_grammars_create(plumb_model_vocab(s->model), 8))) return PLUMB_E_NOMEM;
    if (warning[0]) plumb_srv_log("%s", warning);
    s->slots = calloc((size_t)s->p.n_parallel, sizeof *s->slots);
    s->b_tokens = malloc(3 * (size_t)s->n_batch * sizeof *s->b_tokens); /* tokens, positions, sequences */
    s->b_logits = malloc((size_t)s->n_batch * sizeof *s->b_logits);
    if (!s->slots || !s->b_tokens || !s->b_logits) return PLUMB_E_NOMEM;
    s->b_pos = s->b_tokens + s->n_batch;
    s->b_seq = s->b_pos + s->n_batch;
    for (int32_t i = 0; i < s->p.n_parallel; i++) {
        s->slots[i].id = i;
        if (!(s->slots[i].cache = malloc((size_t)s->n_ctx * sizeof(int32_t)))) return PLUMB_E_NOMEM;
    }
    return PLUMB_OK;
}

static void *sched_main(void *arg) {
    plumb_srv_sched *s = arg;
    plumb_status st = load(s);
    pthread_mutex_lock(&s->mu);
    if (st) {
        const char *d = plumb_last_error();
        if (!s->load_error[0]) /* load() may have said it better */
            snprintf(s->load_error, sizeof s->load_error, "%s", d && *d ? d : plumb_status_message(st));
        s->state = PLUMB_SRV_FAILED;
    } else {
        s->state = PLUMB_SRV_READY;
    }
    pthread_cond_broadcast(&s->ready_cv);
    pthread_mutex_unlock(&s->mu);
    if (st) return NULL;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            expire_locked(s, now_s());
            if (s->stopping) break;
            assign_locked(s);
            update_gauges_locked(s);
            if (any_active(s)) break;
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
        }
        pthread_mutex_unlock(&s->mu);
    }
}

plumb_status plumb_srv_sched_create(const plumb_srv_sched_params *p, plumb_srv_metrics *metrics,
                                    plumb_srv_sched **out) {
    *out = NULL;
    if (!p->model_path || p->n_parallel < 1 || p->n_parallel > 256 || p->queue_size < 0) return PLUMB_E_INVALID_ARG;
    plumb_srv_sched *s = calloc(1, sizeof *s);
    if (!s) return PLUMB_E_NOMEM;
    s->p = *p;
    s->metrics = metrics;
    s->queue_cap = p->queue_size + p->n_parallel;
    s->queue = calloc((size_t)s->queue_cap, sizeof *s->queue);
    if (!s->queue) {
        free(s);
        return PLUMB_E_NOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    cond_init_monotonic(&s->work_cv);
    cond_init_monotonic(&s->ready_cv);
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
    plumb_context_free(s->ctx);
    plumb_gen_chat_free(&s->chat);
    plumb_srv_grammars_free(s->grammars);
    plumb_model_free(s->model);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->ready_cv);
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
                                       .state = !j ? "idle" : j->progress.n_gen || j->t_first > 0 ? "generating" : "prompt",
                                       .n_prompt = j ? j->n_prompt : 0, .n_gen = j ? j->progress.n_gen : 0};
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

const plumb_model_t *plumb_srv_sched_model(plumb_srv_sched *s) { return s->model; }
int32_t plumb_srv_sched_n_ctx(plumb_srv_sched *s) { return s->n_ctx; }
const plumb_gen_chat *plumb_srv_sched_chat(plumb_srv_sched *s) { return s->has_chat ? &s->chat : NULL; }
