/* server.h — plumb's OpenAI-compatible HTTP server (libplumb_server): POST
 * /v1/chat/completions and /v1/completions (streamed as server-sent events or whole),
 * GET /v1/models, /health, /metrics, POST /tokenize and /detokenize, and the chat page at /.
 * HTTP is plumb's strict HTTP/1.1 transport (httpd.h: a thread per connection, deadlines,
 * caps), JSON is cJSON; generation runs on the slot scheduler (sched.h), the only thread that
 * calls the engine. With a model catalog the server serves several models, one loaded at a
 * time, chosen by each request's "model" field. With agent_port it also answers HAProxy's
 * agent check on a port of its own (agent.h). */
#ifndef PLUMB_SERVER_H
#define PLUMB_SERVER_H

#include "plumb.h"

/* Connections accepted past max_connections that may only use /health and /metrics. */
#define PLUMB_SERVER_HEADROOM 16

typedef struct plumb_server plumb_server_t;

/* ---- model catalog: where a multi-model server finds its models ------------------------
 * The caller (the CLI) provides it, so the server knows nothing of directories, registries or
 * stores. One model is in memory at a time: a request naming another one waits until the
 * requests of the loaded model are done, then the scheduler loads the one it names. */

#define PLUMB_SERVER_MAX_MODELS 256 /* catalog entries GET /v1/models lists at most */

/* One model a catalog offers. */
typedef struct plumb_server_model_entry {
    char id[512];      /* what a request's "model" names and GET /v1/models lists: non-empty,
                          printable, NUL-terminated */
    char path[4096];   /* the GGUF file to load (a model in several shards: the first shard) */
    int64_t created;   /* Unix time shown as "created" (e.g. the file's mtime); 0: unknown */
    uint64_t size;     /* bytes, for information; 0: unknown */
    char owned_by[64]; /* shown as "owned_by"; "": "plumb" */
} plumb_server_model_entry;

/* Both functions are called from connection threads, several at once: they must be
 * thread-safe, must not block for long (they run per request) and must not call back into
 * the server. */
typedef struct plumb_server_catalog {
    /* Writes the models available now to out[0..max) and returns how many it wrote (0..max),
     * or -1 when the catalog cannot be read. Fresh on each call: models may be added or
     * removed while serving. */
    int (*list)(void *user, plumb_server_model_entry *out, int max);
    /* The model a request's "model" field names (name: non-empty, NUL-terminated, untrusted)
     * into *out: its id or any alias the catalog accepts; out->id is the model's own id.
     * false when it names none. */
    bool (*resolve)(void *user, const char *name, plumb_server_model_entry *out);
    void *user; /* passed to both */
} plumb_server_catalog;

typedef struct plumb_server_params {
    const char *model_path;  /* GGUF model (required without a catalog; with one: the model
                                loaded at start, NULL: none until a request names one) */
    const plumb_server_catalog *catalog; /* NULL: one model, model_path (the request's "model"
                                is not checked); else the models requests may name (borrowed:
                                it must outlive the server). Not with embeddings. */
    const char *host;        /* address to bind (default "127.0.0.1") */
    int port;                /* 0: any free port (see plumb_server_port) */
    const char *api_key;     /* non-NULL: /v1/..., /tokenize, /detokenize and /metrics need an
                                Authorization: Bearer <api_key> header */
    bool public_metrics;     /* /metrics answers without the API key */
    const char *alias;       /* model_path's id reported by the API (default: the file's name) */
    const char *chat_format; /* a built-in format's name; NULL: the model's template */
    const char *chat_template; /* a Jinja template to use instead (NULL: none), for every
                                  model; borrowed */
    size_t chat_template_len;
    int32_t n_parallel;      /* slots: requests generated together (default 4) */
    int32_t n_ctx;           /* positions per slot (0: min(model, 4096)) */
    int32_t n_threads;       /* compute threads (0: all online CPUs) */
    bool no_repack;          /* plumb_context_params.no_repack */
    bool fast_gemm;          /* plumb_context_params.fast_gemm */
    int32_t n_batch;         /* tokens per decode step at most (default 512) */
    int32_t prefill_chunk;   /* prompt tokens per step while others generate (default 64) */
    int32_t queue_size;      /* requests that may wait for a slot (default 16) */
    int32_t max_connections; /* open connections at most (default 128), plus PLUMB_SERVER_HEADROOM
                                for health checks */
    int32_t max_per_client;  /* open connections from one address at most (0: half of max_connections) */
    size_t max_body;         /* request body bytes at most (default 1 MiB) */
    size_t max_header;       /* request line and header bytes at most (default 16 KiB) */
    double timeout_s;        /* a request's whole life at most (default 600) */
    double request_timeout_s; /* receiving a request's head and body at most, and the longest a
                                 response write may stall (default 30) */
    bool log_requests;       /* one line per request on stderr: method, path, status, prompt and
                                generated tokens, time to first token, total time, client */
    bool log_json;           /* ... as a JSON object per line */
    bool slots_endpoint;     /* GET /slots answers (behind the API key when there is one) */
    bool embeddings;         /* serve POST /v1/embeddings (and no text generation) */
    int32_t pooling;         /* a plumb_pooling for embeddings; -1: the model's, else mean */
    bool use_mmap;           /* weights in a mapping of the file (plumb_model_params) */
    const char *device;      /* where every model loaded computes (plumb_model_params.device):
                                NULL or "cpu", "opencl", "opencl:N", "remote:HOST:PORT"; borrowed.
                                A device lost while serving (PLUMB_E_DEVICE) fails the requests
                                that had produced text with 503 "device_unavailable" (the others
                                wait), /health answers
                                503 {"status":"error","code":"device_unavailable",...} and the
                                model is loaded again (which reconnects) before the next request
                                runs: sched.h says how */
    const char *remote_key_file; /* plumb_model_params.remote_key_file (NULL: PLUMB_REMOTE_KEY_FILE); borrowed */
    int32_t n_offload;       /* the layers on that device, from the last (plumb_model_params.n_offload;
                                -1, the default: all) */
    int agent_port;          /* the HAProxy agent-check port (agent.h): -1 (default) none, 0 any free port */
    const char *agent_host;  /* the address it binds (NULL: host) */
    double drain_delay_s;    /* on shutdown, keep serving new requests this long after the agent and
                                /health start saying "drain" (0, the default: refuse them at once), so
                                that a balancer has stopped sending before requests are refused */
} plumb_server_params;

plumb_server_params plumb_server_default_params(void);
/* Binds and starts serving (GET /health answers 503 while the model loads in the
 * background; with a catalog and no model_path, 200 at once with no model loaded), and the
 * agent-check port when agent_port >= 0.
 * PLUMB_E_IO when the address cannot be bound, PLUMB_E_INVALID_ARG for bad parameters;
 * plumb_last_error() says why. On success *out is the caller's to free. */
plumb_status plumb_server_start(const plumb_server_params *p, plumb_server_t **out);
/* The port the server listens on. */
int plumb_server_port(const plumb_server_t *s);
/* The port its agent-check listener answers on, -1 when it has none. */
int plumb_server_agent_port(const plumb_server_t *s);
/* Blocks until the model is loaded (PLUMB_OK) or failed to load (PLUMB_E_FORMAT and the
 * reason in *message, owned by s). With a catalog and no model_path: PLUMB_OK at once. */
plumb_status plumb_server_wait_loaded(plumb_server_t *s, const char **message);
/* Whether the model is still loading. */
bool plumb_server_loading(plumb_server_t *s);
/* Where the model in memory computes: its device's spec ("cpu", "opencl:0") into
 * spec[0..cap) ("" when no model is loaded), the layers offloaded there into *n_offloaded and
 * all its layers (the output head counted as one) into *n_layers (either may be NULL). */
void plumb_server_device(plumb_server_t *s, char *spec, size_t cap, int32_t *n_offloaded, int32_t *n_layers);
/* Drains, then stops serving: at once the agent check says "drain", GET /health answers 503
 * {"status":"draining",...}; after drain_delay_s more (new requests are served meanwhile),
 * kept-alive connections waiting for their next request are closed
 * and every other request (on a connection accepted meanwhile too: the listener stays open)
 * is refused with 503 and Retry-After; the requests in flight finish (at most grace_s seconds); then the
 * listeners close and what still runs ends with 503. */
void plumb_server_shutdown(plumb_server_t *s, double grace_s);
/* Shuts down (without grace) if still running and frees everything. */
void plumb_server_free(plumb_server_t *s);

#endif
