/* cmd_serve.c — `plumb serve -m MODEL [options]`: the OpenAI-compatible HTTP server
 * (src/server/); with `--models-dir DIR` it serves the GGUF files in DIR too (catalog_dir.c),
 * with `--store` the models of the store (catalog_store.c), one loaded at a time, as each
 * request's "model" names them, and -m (a file or a model reference) becomes optional.
 * Every option may also be set by an environment variable (PLUMB_ARG_PORT
 * for --port, like llama-server's LLAMA_ARG_*); the command line wins. Listens at once (GET /health answers 503 until the model is loaded), prints
 * "plumb serve: listening on http://HOST:PORT" on stderr (after "plumb serve: agent-check on
 * HOST:PORT" with --agent-port: HAProxy's agent-check protocol, src/server/agent.h), and on
 * SIGTERM or SIGINT drains (the agent says "drain", /health and new requests 503), lets the
 * requests in flight finish and exits 0; a second signal exits at once. A signal while the
 * model is still loading exits at once too. */
#include "cli.h"
#include "options.h"

#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char serve_usage[] =
    "usage: plumb serve -m MODEL [options]\n"
    "       plumb serve --models-dir DIR | --store [-m MODEL] [options]\n"
    "  -m, --model FILE|REF      GGUF model or model reference, pulled if not in the store (required without\n"
    "                            --models-dir/--store; with them, the model loaded at start)\n"
    "      --models-dir DIR      serve the GGUF files in DIR as well, by file name without .gguf (listed by\n"
    "                            GET /v1/models, read afresh each time); one model is in memory at a time: a\n"
    "                            request whose \"model\" names another waits until the requests of the loaded\n"
    "                            one finish, then that model is loaded in its place (not with --embeddings)\n"
    "      --store               serve the models of the store ($PLUMB_HOME, see plumb list) the same way, by\n"
    "                            reference (a request may name one as ns/model, registry/ns/model:tag, ...)\n"
    "      --host ADDR           address to bind (default 127.0.0.1)\n"
    "      --port N              port (default 8080; 0: any free port)\n"
    "  -np, --parallel N         slots: requests generated together (default 4)\n"
    "  -c, --ctx-size N          context positions per slot (default: min(model, 4096))\n"
    "  -t, --threads N           compute threads (default: the CPUs this process may use, see plumb info)\n"
    "  -b, --batch-size N        tokens per decode step at most (default 512)\n"
    "      --prefill-chunk N     prompt tokens per step while others generate (default 64)\n"
    "      --queue N             requests that may wait for a slot (default 16)\n"
    "      --api-key KEY         require 'Authorization: Bearer KEY' on /v1/*, /tokenize, /detokenize, /metrics\n"
    "      --public-metrics      /metrics answers without the API key\n"
    "      --alias NAME          the -m model's id shown by the API (default: the file name)\n"
    "      --chat-format NAME    the built-in gemma, llama3 or chatml format (default: the model's template)\n"
    "      --chat-template-file F  a Jinja chat template to use instead of the model's (with --models-dir:\n"
    "                            for every model; without it each model uses its own)\n"
    "      --timeout S           longest a request may take, in seconds (default 600)\n"
    "      --max-body BYTES      largest request body (default 1048576)\n"
    "      --max-connections N   open connections at most (default 128; 16 more for /health, /metrics)\n"
    "      --max-connections-per-client N\n"
    "                            open connections from one address at most (default: half the above)\n"
    "      --request-timeout S   longest time to receive a request, and for a stalled write (default 30)\n"
    "      --log                 one line per request on stderr\n"
    "      --log-format FMT      text (default) or json: one JSON object per --log line\n"
    "      --slots               GET /slots answers (behind the API key when there is one)\n"
    "      --embeddings          serve POST /v1/embeddings (and no text generation)\n"
    "      --pooling P           mean, last or cls (default: the model's, else mean); none: no pooling\n"
    "      --mmap                keep the weights in a mapping of the file (default: read into memory)\n"
    "      --no-repack           no interleaved weight rows for the CPU's GEMM (same results; no kept copy)\n"
    "      --fast-gemm           prompts with each block's products summed as one integer: faster, not llama.cpp's exact logits\n"
    "      --device D            where every model loaded computes: cpu (default), opencl or opencl:N (see\n"
    "                            plumb info), or remote:HOST:PORT (a plumb rpc-server); when a remote device\n"
    "                            drops, the requests that had produced text end with 503, /health says 503\n"
    "                            and the model is loaded again (reconnecting) before the next request runs\n"
    "      --remote-key-file F   the key of a remote device (default: $PLUMB_REMOTE_KEY_FILE)\n"
    "  -ngl, --offload N         layers on the device, counted from the last (default -1: all, with the output\n"
    "                            head; 0: none); also --n-gpu-layers N\n"
    "      --agent-port N        answer HAProxy's agent check on port N (0: any free port): 'down' while the\n"
    "                            model loads, 'up ready W% maxconn:SLOTS' (W from the free slots), 'drain'\n"
    "                            once SIGTERM came\n"
    "      --agent-host ADDR     address the agent check binds (default: --host)\n"
    "      --drain-delay S       after SIGTERM, keep serving new requests S seconds while the agent and /health\n"
    "                            already say drain (default 0), so a balancer stops sending before any is\n"
    "                            refused: at least its check interval (plumb cluster-config says which)\n";

typedef struct shutdown_job {
    plumb_server_t *srv;
    double grace_s;
    atomic_bool done;
} shutdown_job;

static void *shutdown_main(void *arg) {
    shutdown_job *j = arg;
    plumb_server_shutdown(j->srv, j->grace_s);
    atomic_store(&j->done, true);
    return NULL;
}

/* Every option of `plumb serve`: long name, short name, whether it is a flag (no value). The
 * environment variable of an option is PLUMB_ARG_ and the long name upper-cased with dashes
 * as underscores (env_name). */
enum {
    SV_MODEL, SV_HOST, SV_PORT, SV_PARALLEL, SV_CTX_SIZE, SV_THREADS, SV_BATCH_SIZE, SV_PREFILL_CHUNK, SV_QUEUE,
    SV_API_KEY, SV_PUBLIC_METRICS, SV_ALIAS, SV_CHAT_FORMAT, SV_CHAT_TEMPLATE_FILE, SV_TIMEOUT, SV_MAX_BODY,
    SV_MAX_CONNECTIONS, SV_MAX_PER_CLIENT, SV_REQUEST_TIMEOUT, SV_LOG, SV_LOG_FORMAT, SV_SLOTS, SV_EMBEDDINGS, SV_POOLING, SV_MMAP, SV_NO_REPACK, SV_FAST_GEMM,
    SV_DEVICE, SV_REMOTE_KEY_FILE, SV_OFFLOAD, SV_N_GPU_LAYERS, SV_MODELS_DIR, SV_STORE, SV_AGENT_PORT, SV_AGENT_HOST, SV_DRAIN_DELAY,
    SV_COUNT
};
static const struct {
    const char *l, *s;
    bool flag;
} serve_opts[SV_COUNT] = {
    [SV_MODEL] = {"--model", "-m", false},
    [SV_HOST] = {"--host", NULL, false},
    [SV_PORT] = {"--port", NULL, false},
    [SV_PARALLEL] = {"--parallel", "-np", false},
    [SV_CTX_SIZE] = {"--ctx-size", "-c", false},
    [SV_THREADS] = {"--threads", "-t", false},
    [SV_BATCH_SIZE] = {"--batch-size", "-b", false},
    [SV_PREFILL_CHUNK] = {"--prefill-chunk", NULL, false},
    [SV_QUEUE] = {"--queue", NULL, false},
    [SV_API_KEY] = {"--api-key", NULL, false},
    [SV_PUBLIC_METRICS] = {"--public-metrics", NULL, true},
    [SV_ALIAS] = {"--alias", NULL, false},
    [SV_CHAT_FORMAT] = {"--chat-format", NULL, false},
    [SV_CHAT_TEMPLATE_FILE] = {"--chat-template-file", NULL, false},
    [SV_TIMEOUT] = {"--timeout", NULL, false},
    [SV_MAX_BODY] = {"--max-body", NULL, false},
    [SV_MAX_CONNECTIONS] = {"--max-connections", NULL, false},
    [SV_MAX_PER_CLIENT] = {"--max-connections-per-client", NULL, false},
    [SV_REQUEST_TIMEOUT] = {"--request-timeout", NULL, false},
    [SV_LOG] = {"--log", NULL, true},
    [SV_LOG_FORMAT] = {"--log-format", NULL, false},
    [SV_SLOTS] = {"--slots", NULL, true},
    [SV_EMBEDDINGS] = {"--embeddings", NULL, true},
    [SV_POOLING] = {"--pooling", NULL, false},
    [SV_MMAP] = {"--mmap", NULL, true},
    [SV_NO_REPACK] = {"--no-repack", NULL, true},
    [SV_FAST_GEMM] = {"--fast-gemm", NULL, true},
    [SV_DEVICE] = {"--device", NULL, false},
    [SV_REMOTE_KEY_FILE] = {"--remote-key-file", NULL, false},
    [SV_OFFLOAD] = {"--offload", "-ngl", false},
    [SV_N_GPU_LAYERS] = {"--n-gpu-layers", NULL, false},
    [SV_MODELS_DIR] = {"--models-dir", NULL, false},
    [SV_STORE] = {"--store", NULL, true},
    [SV_AGENT_PORT] = {"--agent-port", NULL, false},
    [SV_DRAIN_DELAY] = {"--drain-delay", NULL, false},
    [SV_AGENT_HOST] = {"--agent-host", NULL, false},
};

/* "PLUMB_ARG_CTX_SIZE" for "--ctx-size" */
static void env_name(int k, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "PLUMB_ARG_");
    for (const char *c = serve_opts[k].l + 2; *c && (size_t)n + 1 < cap; c++)
        buf[n++] = *c == '-' ? '_' : (char)(*c >= 'a' && *c <= 'z' ? *c - 'a' + 'A' : *c);
    buf[n] = '\0';
}

static const char *models_dir; /* --models-dir (NULL: one model, -m) */
static bool use_store;          /* --store */

/* Sets option k to v (a flag's v is "1", or from the environment 1/true/on or 0/false/off).
 * Returns 0, or 2 after printing why not; `from` names the variable for a value that came
 * from the environment (NULL: the command line). */
static int serve_set(plumb_server_params *p, int k, const char *v, const char *from) {
    static char *template_text; /* lives as long as the server (static: still reachable at exit) */
    long n = 0;
    bool ok = true;
    switch (k) {
    case SV_PUBLIC_METRICS:
    case SV_LOG:
    case SV_SLOTS:
    case SV_EMBEDDINGS:
    case SV_STORE:
    case SV_NO_REPACK:
    case SV_FAST_GEMM:
    case SV_MMAP: {
        const bool on = !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "on");
        ok = on || !strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "off");
        if (k == SV_PUBLIC_METRICS) p->public_metrics = on;
        else if (k == SV_LOG) p->log_requests = on;
        else if (k == SV_SLOTS) p->slots_endpoint = on;
        else if (k == SV_EMBEDDINGS) p->embeddings = on;
        else if (k == SV_STORE) use_store = on;
        else if (k == SV_NO_REPACK) p->no_repack = on;
        else if (k == SV_FAST_GEMM) p->fast_gemm = on;
        else p->use_mmap = on;
        break;
    }
    case SV_POOLING:
        p->pooling = !strcmp(v, "none") ? PLUMB_POOLING_NONE : !strcmp(v, "mean") ? PLUMB_POOLING_MEAN
                     : !strcmp(v, "cls")  ? PLUMB_POOLING_CLS : !strcmp(v, "last") ? PLUMB_POOLING_LAST : -2;
        ok = p->pooling >= 0;
        break;
    case SV_LOG_FORMAT:
        ok = !strcmp(v, "text") || !strcmp(v, "json");
        p->log_json = !strcmp(v, "json");
        break;
    case SV_MODEL: p->model_path = v; break;
    case SV_DEVICE: ok = *v && (p->device = v); break;
    case SV_REMOTE_KEY_FILE: ok = *v && (p->remote_key_file = v); break;
    case SV_OFFLOAD:
    case SV_N_GPU_LAYERS: ok = cli_parse_offload(v, &p->n_offload); break;
    case SV_MODELS_DIR: ok = *v && (models_dir = v); break;
    case SV_HOST: p->host = v; break;
    case SV_AGENT_HOST: ok = *v && (p->agent_host = v); break;
    case SV_AGENT_PORT: ok = options_parse_long(v, 0, 65535, &n) && (p->agent_port = (int)n, true); break;
    case SV_DRAIN_DELAY: ok = options_parse_long(v, 0, 3600, &n) && (p->drain_delay_s = (double)n, true); break;
    case SV_API_KEY: ok = *v && (p->api_key = v); break;
    case SV_ALIAS: ok = *v && (p->alias = v); break;
    case SV_CHAT_FORMAT:
        ok = plumb_chat_format_from_name(v) != PLUMB_CHAT_UNKNOWN;
        p->chat_format = v;
        break;
    case SV_PORT: ok = options_parse_long(v, 0, 65535, &n) && (p->port = (int)n, true); break;
    case SV_PARALLEL: ok = options_parse_long(v, 1, 256, &n) && (p->n_parallel = (int32_t)n, true); break;
    case SV_CTX_SIZE: ok = options_parse_long(v, 0, 1 << 24, &n) && (p->n_ctx = (int32_t)n, true); break;
    case SV_THREADS: ok = options_parse_long(v, 1, 512, &n) && (p->n_threads = (int32_t)n, true); break;
    case SV_BATCH_SIZE: ok = options_parse_long(v, 1, 65536, &n) && (p->n_batch = (int32_t)n, true); break;
    case SV_PREFILL_CHUNK: ok = options_parse_long(v, 1, 65536, &n) && (p->prefill_chunk = (int32_t)n, true); break;
    case SV_QUEUE: ok = options_parse_long(v, 0, 4096, &n) && (p->queue_size = (int32_t)n, true); break;
    case SV_TIMEOUT: ok = options_parse_long(v, 1, 86400, &n) && (p->timeout_s = (double)n, true); break;
    case SV_MAX_BODY: ok = options_parse_long(v, 1024, 1L << 30, &n) && (p->max_body = (size_t)n, true); break;
    case SV_MAX_CONNECTIONS: ok = options_parse_long(v, 1, 4096, &n) && (p->max_connections = (int32_t)n, true); break;
    case SV_MAX_PER_CLIENT: ok = options_parse_long(v, 1, 4096, &n) && (p->max_per_client = (int32_t)n, true); break;
    case SV_REQUEST_TIMEOUT: ok = options_parse_long(v, 1, 3600, &n) && (p->request_timeout_s = (double)n, true); break;
    case SV_CHAT_TEMPLATE_FILE: {
        FILE *f = fopen(v, "rb");
        size_t len = 0;
        free(template_text);
        template_text = f ? cli_read_all(f, 1u << 20, &len) : NULL;
        const int err = errno;
        if (f) fclose(f);
        if (!template_text) {
            fprintf(stderr, "plumb serve: cannot read chat template file '%s'%s%s: %s\n", v, from ? " from " : "",
                    from ? from : "", strerror(err));
            return 2;
        }
        p->chat_template = template_text;
        p->chat_template_len = len;
        break;
    }
    }
    if (ok) return 0;
    const char *what = k == SV_CHAT_FORMAT   ? " (gemma, llama3 or chatml)"
                       : k == SV_LOG_FORMAT ? " (text or json)"
                       : k == SV_DEVICE     ? " (" CLI_DEVICE_VALUES ")"
                       : k == SV_OFFLOAD || k == SV_N_GPU_LAYERS ? " (" CLI_OFFLOAD_VALUES ")"
                       : serve_opts[k].flag ? " (1, true, on, 0, false or off)"
                                            : "";
    if (from) fprintf(stderr, "plumb serve: bad value '%s' in %s (for %s)%s\n", v, from, serve_opts[k].l, what);
    else fprintf(stderr, "plumb serve: bad value '%s' for %s%s\n", v, serve_opts[k].l, what);
    return 2;
}

int cmd_serve(int argc, char **argv) {
    plumb_server_params p = plumb_server_default_params();
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(serve_usage, stdout);
            printf("\nEvery option may come from the environment instead: PLUMB_ARG_ and its long name upper-cased,\n"
                   "dashes as underscores (PLUMB_ARG_CTX_SIZE=8192; a flag takes 1/true/on or 0/false/off). The\n"
                   "command line wins. The variables:\n");
            char name[64];
            for (int k = 0, col = 0; k < SV_COUNT; k++) {
                env_name(k, name, sizeof name);
                const int w = (int)strlen(name) + 1;
                if (col + w > 96) {
                    putchar('\n');
                    col = 0;
                }
                printf("%s%s", col ? " " : "  ", name);
                col += w + (col ? 0 : 1);
            }
            putchar('\n');
            return 0;
        }
    /* the environment first, so that the command line overrides it */
    for (int k = 0; k < SV_COUNT; k++) {
        char name[64];
        env_name(k, name, sizeof name);
        const char *v = getenv(name);
        if (v && serve_set(&p, k, v, name)) return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k = -1;
        for (int j = 0; j < SV_COUNT && k < 0; j++)
            if (serve_opts[j].flag ? !strcmp(a, serve_opts[j].l) : options_is(a, serve_opts[j].l, serve_opts[j].s)) k = j;
        if (k < 0) {
            fprintf(stderr, "plumb serve: unknown option '%s' (see plumb serve --help)\n", a);
            return 2;
        }
        const char *v = serve_opts[k].flag ? "1" : options_value("serve", argc, argv, &i);
        if (!v || serve_set(&p, k, v, NULL)) return 2;
    }
    if (models_dir && use_store) {
        fprintf(stderr, "plumb serve: --models-dir and --store cannot be used together\n");
        return 2;
    }
    if (!p.model_path && !models_dir && !use_store) {
        fprintf(stderr, "plumb serve: usage: plumb serve -m MODEL [options] (see --help)\n");
        return 2;
    }
    if (p.alias && !p.model_path) {
        fprintf(stderr, "plumb serve: --alias names the -m model: give -m too (the models of --models-dir go by "
                        "their file names)\n");
        return 2;
    }
    /* a kind of device with none here falls back to the CPU; one that does not exist stops the
     * server before it listens (with a catalog no model may load until a request names one) */
    plumb_model_params where = {.device = p.device};
    cli_device_fallback("serve", &where);
    p.device = where.device;
    if (!cli_device_check("serve", p.device)) return 1;
    static cli_catalog_dir dir_catalog; /* outlive the server */
    static cli_catalog_store store_catalog;
    static plumb_server_catalog catalog;
    if (models_dir || use_store) {
        if (p.embeddings) {
            fprintf(stderr, "plumb serve: %s cannot be used with --embeddings: an embeddings server serves one model "
                            "(-m)\n", models_dir ? "--models-dir" : "--store");
            return 2;
        }
        if (models_dir && cli_catalog_dir_init(&dir_catalog, models_dir, &catalog)) {
            fprintf(stderr, "plumb serve: --models-dir '%s': %s\n", models_dir, strerror(errno));
            return 1;
        }
        if (use_store && cli_catalog_store_init(&store_catalog, &catalog)) {
            cli_error("serve", PLUMB_E_IO, NULL);
            return 1;
        }
        p.catalog = &catalog;
    }
    static cli_model_src src; /* p.model_path points into it */
    static char *artifact_template;
    if (p.model_path) {
        if (cli_model_source("serve", p.model_path, &src)) return 1;
        p.model_path = src.path;
        if (src.ref[0] && !p.alias) p.alias = src.ref; /* the API names it by its reference, not its blob */
        if (src.context_size > 0 && p.n_ctx == 0)
            p.n_ctx = src.context_size > (1 << 24) ? (1 << 24) : (int32_t)src.context_size;
        /* the artifact's template, when nothing else is asked for (with a catalog it would apply to every model) */
        FILE *f;
        if (src.chat_template[0] && !p.catalog && !p.chat_template && !p.chat_format &&
            (f = fopen(src.chat_template, "rb")) != NULL) {
            size_t len = 0;
            artifact_template = cli_read_all(f, 1u << 20, &len);
            fclose(f);
            p.chat_template = artifact_template;
            p.chat_template_len = artifact_template ? len : 0;
        }
    }
    /* every thread started from here on leaves SIGTERM/SIGINT to the sigwait below */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    plumb_server_t *srv;
    if (plumb_server_start(&p, &srv)) return 1;
    if (p.agent_port >= 0)
        fprintf(stderr, "plumb serve: agent-check on %s:%d\n", p.agent_host ? p.agent_host : p.host,
                plumb_server_agent_port(srv));
    if (p.model_path)
        fprintf(stderr, "plumb serve: listening on http://%s:%d (loading %s)\n", p.host, plumb_server_port(srv), p.model_path);
    else
        fprintf(stderr, "plumb serve: listening on http://%s:%d (models in %s; none loaded until a request names one)\n",
                p.host, plumb_server_port(srv), models_dir ? models_dir : store_catalog.store.root);
    /* signals stay deliverable while the model loads: a stop then needs no waiting for it */
    int sig = 0;
    const struct timespec tick = {0, 50 * 1000 * 1000};
    while (sig <= 0 && plumb_server_loading(srv))
        if ((sig = sigtimedwait(&sigs, NULL, &tick)) > 0 && plumb_server_loading(srv)) {
            fprintf(stderr, "plumb serve: %s while loading the model: stopped\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            _exit(0); /* the loader may be inside a long read; nothing to finish */
        } /* a signal that came as the load finished is the normal stop below */
    const char *why;
    if (plumb_server_wait_loaded(srv, &why)) {
        fprintf(stderr, "plumb serve: cannot load the model: %s\n", why);
        plumb_server_free(srv);
        return 1;
    }
    char spec[32], device[96] = "";
    int32_t n_offloaded = 0, n_layers = 0;
    plumb_server_device(srv, spec, sizeof spec, &n_offloaded, &n_layers);
    if (spec[0]) cli_device_text(spec, n_offloaded, n_layers, device, sizeof device);
    else snprintf(device, sizeof device, "%s (no model loaded yet)", p.device ? p.device : "cpu");
    fprintf(stderr, "plumb serve: ready: %d slots, device %s\n", (int)p.n_parallel, device);
    if (sig <= 0) sigwait(&sigs, &sig);
    fprintf(stderr, "plumb serve: %s: finishing requests in flight (a second signal stops at once)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* the shutdown runs on its own thread so that this one can take a second signal */
    shutdown_job job = {.srv = srv, .grace_s = p.timeout_s};
    pthread_t t;
    if (pthread_create(&t, NULL, shutdown_main, &job)) shutdown_main(&job);
    else {
        while (!atomic_load(&job.done))
            if ((sig = sigtimedwait(&sigs, NULL, &tick)) > 0) {
                fprintf(stderr, "plumb serve: second %s: stopping now\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
                _exit(1);
            }
        pthread_join(t, NULL);
    }
    plumb_server_free(srv);
    fprintf(stderr, "plumb serve: stopped\n");
    return 0;
}
