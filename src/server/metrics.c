/* metrics.c — counters, gauges and histograms of the server in Prometheus text format. */
#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double ttft_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5};

void plumb_srv_metrics_init(plumb_srv_metrics *m, int n_slots) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->slots_total = n_slots;
    m->device_available = true;
    m->ttft.bounds = ttft_bounds;
    m->ttft.n = (int)(sizeof ttft_bounds / sizeof ttft_bounds[0]);
    m->itl.bounds = itl_bounds;
    m->itl.n = (int)(sizeof itl_bounds / sizeof itl_bounds[0]);
}

void plumb_srv_metrics_destroy(plumb_srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void plumb_srv_metrics_request(plumb_srv_metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < PLUMB_SRV_STATUS_KINDS; i++) {
        if (m->status_codes[i] == 0) m->status_codes[i] = status;
        if (m->status_codes[i] == status) {
            m->status_counts[i]++;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

void plumb_srv_metrics_cancelled(plumb_srv_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->cancelled++;
    pthread_mutex_unlock(&m->mu);
}

void plumb_srv_metrics_prompt(plumb_srv_metrics *m, int64_t n, int64_t cached) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)n;
    m->prompt_tokens_cached += (uint64_t)cached;
    pthread_mutex_unlock(&m->mu);
}

static void observe(plumb_srv_histogram *h, double v) {
    int b = 0;
    while (b < h->n && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->count++;
}

void plumb_srv_metrics_token(plumb_srv_metrics *m, double ttft, double itl) {
    pthread_mutex_lock(&m->mu);
    m->generated_tokens++;
    if (ttft >= 0) observe(&m->ttft, ttft);
    else if (itl >= 0) observe(&m->itl, itl);
    pthread_mutex_unlock(&m->mu);
}

void plumb_srv_metrics_gauges(plumb_srv_metrics *m, int64_t queue_depth, int64_t slots_busy) {
    pthread_mutex_lock(&m->mu);
    m->queue_depth = queue_depth;
    m->slots_busy = slots_busy;
    pthread_mutex_unlock(&m->mu);
}

void plumb_srv_metrics_model_load(plumb_srv_metrics *m, const char *id, bool ok) {
    pthread_mutex_lock(&m->mu);
    if (ok) {
        m->model_loads++;
        snprintf(m->model, sizeof m->model, "%s", id);
    } else
        m->model_load_failures++;
    pthread_mutex_unlock(&m->mu);
}

void plumb_srv_metrics_device(plumb_srv_metrics *m, bool available) {
    pthread_mutex_lock(&m->mu);
    if (!available) m->device_failures++;
    m->device_available = available;
    pthread_mutex_unlock(&m->mu);
}

void plumb_srv_metrics_model_unloaded(plumb_srv_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->model[0] = '\0';
    pthread_mutex_unlock(&m->mu);
}

typedef struct text {
    char *s;
    size_t len, cap;
    bool oom;
} text;

static void put(text *t, const char *fmt, ...) {
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n) * 2;
        char *grown = realloc(t->s, cap);
        if (!grown) {
            t->oom = true;
            return;
        }
        t->s = grown;
        t->cap = cap;
    }
}

static void metric(text *t, const char *name, const char *type, const char *help) {
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(text *t, const char *name, const char *help, const plumb_srv_histogram *h) {
    metric(t, name, "histogram", help);
    uint64_t cum = 0;
    for (int b = 0; b < h->n; b++) {
        cum += h->counts[b];
        put(t, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[b], (unsigned long long)cum);
    }
    cum += h->counts[h->n];
    put(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum, name, h->sum,
        name, (unsigned long long)h->count);
}

char *plumb_srv_metrics_render(plumb_srv_metrics *m) {
    text t = {.cap = 4096};
    if (!(t.s = malloc(t.cap))) return NULL;
    t.s[0] = '\0';
    pthread_mutex_lock(&m->mu);
    metric(&t, "plumb_requests_total", "counter", "HTTP responses by status code.");
    for (int i = 0; i < PLUMB_SRV_STATUS_KINDS && m->status_codes[i]; i++)
        put(&t, "plumb_requests_total{code=\"%d\"} %llu\n", m->status_codes[i], (unsigned long long)m->status_counts[i]);
    metric(&t, "plumb_requests_cancelled_total", "counter", "Requests whose client left before the answer was complete.");
    put(&t, "plumb_requests_cancelled_total %llu\n", (unsigned long long)m->cancelled);
    metric(&t, "plumb_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.");
    put(&t, "plumb_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    metric(&t, "plumb_prompt_tokens_cached_total", "counter", "Prompt tokens found in a slot's KV cache.");
    put(&t, "plumb_prompt_tokens_cached_total %llu\n", (unsigned long long)m->prompt_tokens_cached);
    metric(&t, "plumb_generated_tokens_total", "counter", "Tokens generated.");
    put(&t, "plumb_generated_tokens_total %llu\n", (unsigned long long)m->generated_tokens);
    metric(&t, "plumb_queue_depth", "gauge", "Requests waiting for a slot.");
    put(&t, "plumb_queue_depth %lld\n", (long long)m->queue_depth);
    metric(&t, "plumb_slots_busy", "gauge", "Slots serving a request.");
    put(&t, "plumb_slots_busy %lld\n", (long long)m->slots_busy);
    metric(&t, "plumb_slots_idle", "gauge", "Slots free for a new request: idle and not claimed by a queued one.");
    const int64_t idle = m->slots_total - m->slots_busy - m->queue_depth;
    put(&t, "plumb_slots_idle %lld\n", (long long)(idle > 0 ? idle : 0));
    metric(&t, "plumb_slots_total", "gauge", "Slots (parallel sequences).");
    put(&t, "plumb_slots_total %lld\n", (long long)m->slots_total);
    metric(&t, "plumb_model_loads_total", "counter", "Models loaded (the first one and reloads after a lost device included).");
    put(&t, "plumb_model_loads_total %llu\n", (unsigned long long)m->model_loads);
    metric(&t, "plumb_model_load_failures_total", "counter", "Model loads that failed.");
    put(&t, "plumb_model_load_failures_total %llu\n", (unsigned long long)m->model_load_failures);
    metric(&t, "plumb_device_failures_total", "counter",
           "Times the model's device was lost (a remote host or the network failed); each drops the model until it is loaded again.");
    put(&t, "plumb_device_failures_total %llu\n", (unsigned long long)m->device_failures);
    metric(&t, "plumb_device_available", "gauge", "0 while the model's device is lost and the model not loaded again, else 1.");
    put(&t, "plumb_device_available %d\n", m->device_available ? 1 : 0);
    metric(&t, "plumb_model_loaded", "gauge", "The model in memory, by its id (no sample when none is).");
    if (m->model[0]) {
        char label[2 * sizeof m->model]; /* escaped: backslash, quote and newline take two bytes */
        size_t n = 0;
        for (const char *c = m->model; *c; c++) {
            if (*c == '\\' || *c == '"' || *c == '\n') label[n++] = '\\';
            label[n++] = *c == '\n' ? 'n' : *c;
        }
        label[n] = '\0';
        put(&t, "plumb_model_loaded{model=\"%s\"} 1\n", label);
    }
    histogram(&t, "plumb_time_to_first_token_seconds", "Seconds from a request's arrival to its first token.", &m->ttft);
    histogram(&t, "plumb_inter_token_latency_seconds", "Seconds between consecutive tokens of a request.", &m->itl);
    pthread_mutex_unlock(&m->mu);
    if (t.oom) {
        free(t.s);
        return NULL;
    }
    return t.s;
}
