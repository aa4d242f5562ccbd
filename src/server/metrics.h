/* metrics.h — the server's counters, gauges and latency histograms, rendered as Prometheus
 * text for GET /metrics. Thread-safe: every call takes the metrics' own lock. */
#ifndef PLUMB_SERVER_METRICS_H
#define PLUMB_SERVER_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLUMB_SRV_HIST_BUCKETS 12
#define PLUMB_SRV_STATUS_KINDS 16

typedef struct plumb_srv_histogram {
    const double *bounds; /* [n] upper bounds, ascending; +Inf is implicit */
    int n;
    uint64_t counts[PLUMB_SRV_HIST_BUCKETS + 1]; /* per bucket (not cumulative), last: +Inf */
    double sum;
    uint64_t count;
} plumb_srv_histogram;

typedef struct plumb_srv_metrics {
    pthread_mutex_t mu;
    int status_codes[PLUMB_SRV_STATUS_KINDS]; /* HTTP statuses seen, in order of first use */
    uint64_t status_counts[PLUMB_SRV_STATUS_KINDS];
    uint64_t cancelled; /* requests whose client left before the answer was complete */
    uint64_t prompt_tokens, prompt_tokens_cached, generated_tokens;
    int64_t queue_depth, slots_busy, slots_total;
    plumb_srv_histogram ttft, itl;
    uint64_t model_loads, model_load_failures;
    uint64_t device_failures; /* the model's device lost (a decode failed with PLUMB_E_DEVICE) */
    bool device_available;    /* false from a lost device until its model is loaded again */
    char model[512]; /* the id of the model in memory, "" when none */
} plumb_srv_metrics;

void plumb_srv_metrics_init(plumb_srv_metrics *m, int n_slots);
void plumb_srv_metrics_destroy(plumb_srv_metrics *m);
/* One HTTP response with this status. */
void plumb_srv_metrics_request(plumb_srv_metrics *m, int status);
/* A request whose client left before its answer was complete (counted instead of a status). */
void plumb_srv_metrics_cancelled(plumb_srv_metrics *m);
/* A request's prompt: n tokens, of which cached were already in the slot's KV cache. */
void plumb_srv_metrics_prompt(plumb_srv_metrics *m, int64_t n, int64_t cached);
/* A generated token; ttft >= 0 for a request's first token (seconds since it arrived), else
 * itl >= 0: seconds since the request's previous token. */
void plumb_srv_metrics_token(plumb_srv_metrics *m, double ttft, double itl);
void plumb_srv_metrics_gauges(plumb_srv_metrics *m, int64_t queue_depth, int64_t slots_busy);
/* A model load ended: ok, and model id (copied) is the one in memory now; else a failure. */
void plumb_srv_metrics_model_load(plumb_srv_metrics *m, const char *id, bool ok);
/* The model's device was lost (available false: counted) or its model loaded again (true). */
void plumb_srv_metrics_device(plumb_srv_metrics *m, bool available);
/* The model in memory was freed. */
void plumb_srv_metrics_model_unloaded(plumb_srv_metrics *m);
/* The Prometheus text exposition, malloc'd and NUL-terminated (NULL when out of memory). */
char *plumb_srv_metrics_render(plumb_srv_metrics *m);

#endif
