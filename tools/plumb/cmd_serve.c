/* cmd_serve.c — `plumb serve -m MODEL [options]`: the OpenAI-compatible HTTP server
 * (src/server/). Listens at once (GET /health answers 503 until the model is loaded), prints
 * "plumb serve: listening on http://HOST:PORT" on stderr, and on SIGTERM or SIGINT stops
 * accepting, lets the requests in flight finish and exits 0; a second signal exits at once.
 * A signal while the model is still loading exits at once too. */
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
    "  -m, --model FILE          GGUF model (required)\n"
    "      --host ADDR           address to bind (default 127.0.0.1)\n"
    "      --port N              port (default 8080; 0: any free port)\n"
    "  -np, --parallel N         slots: requests generated together (default 4)\n"
    "  -c, --ctx-size N          context positions per slot (default: min(model, 4096))\n"
    "  -t, --threads N           compute threads (default: all online CPUs)\n"
    "  -b, --batch-size N        tokens per decode step at most (default 512)\n"
    "      --prefill-chunk N     prompt tokens per step while others generate (default 64)\n"
    "      --queue N             requests that may wait for a slot (default 16)\n"
    "      --api-key KEY         require 'Authorization: Bearer KEY' on /v1/*, /tokenize, /detokenize, /metrics\n"
    "      --public-metrics      /metrics answers without the API key\n"
    "      --alias NAME          model id shown by the API (default: the file name)\n"
    "      --chat-format NAME    the built-in gemma, llama3 or chatml format (default: the model's template)\n"
    "      --chat-template-file F  a Jinja chat template to use instead of the model's\n"
    "      --timeout S           longest a request may take, in seconds (default 600)\n"
    "      --max-body BYTES      largest request body (default 1048576)\n"
    "      --max-connections N   open connections at most (default 128; 16 more for /health, /metrics)\n"
    "      --max-connections-per-client N\n"
    "                            open connections from one address at most (default: half the above)\n"
    "      --request-timeout S   longest time to receive a request, and for a stalled write (default 30)\n"
    "      --log                 one line per request on stderr\n"
    "      --mmap                keep the weights in a mapping of the file (default: read into memory)\n";

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

int cmd_serve(int argc, char **argv) {
    plumb_server_params p = plumb_server_default_params();
    static char *template_text; /* lives as long as the server (static: still reachable at exit) */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(serve_usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--log")) {
            p.log_requests = true;
            continue;
        }
        if (!strcmp(a, "--mmap")) {
            p.use_mmap = true;
            continue;
        }
        if (!strcmp(a, "--public-metrics")) {
            p.public_metrics = true;
            continue;
        }
        static const char *const valued[] = {"-m", "--model", "--host", "--port", "-np", "--parallel", "-c", "--ctx-size",
                                             "-t", "--threads", "-b", "--batch-size", "--prefill-chunk", "--queue",
                                             "--api-key", "--alias", "--chat-format", "--timeout", "--max-body",
                                             "--max-connections", "--max-connections-per-client", "--request-timeout",
                                             "--chat-template-file"};
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "plumb serve: unknown option '%s' (see plumb serve --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "plumb serve: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long n = 0;
        bool ok = true;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) p.model_path = v;
        else if (!strcmp(a, "--host")) p.host = v;
        else if (!strcmp(a, "--api-key")) ok = *v && (p.api_key = v);
        else if (!strcmp(a, "--alias")) ok = *v && (p.alias = v);
        else if (!strcmp(a, "--chat-format")) {
            ok = plumb_chat_format_from_name(v) != PLUMB_CHAT_UNKNOWN;
            p.chat_format = v;
        } else if (!strcmp(a, "--port")) ok = options_parse_long(v, 0, 65535, &n) && (p.port = (int)n, true);
        else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) ok = options_parse_long(v, 1, 256, &n) && (p.n_parallel = (int32_t)n, true);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) ok = options_parse_long(v, 0, 1 << 24, &n) && (p.n_ctx = (int32_t)n, true);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) ok = options_parse_long(v, 1, 512, &n) && (p.n_threads = (int32_t)n, true);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) ok = options_parse_long(v, 1, 65536, &n) && (p.n_batch = (int32_t)n, true);
        else if (!strcmp(a, "--prefill-chunk")) ok = options_parse_long(v, 1, 65536, &n) && (p.prefill_chunk = (int32_t)n, true);
        else if (!strcmp(a, "--queue")) ok = options_parse_long(v, 0, 4096, &n) && (p.queue_size = (int32_t)n, true);
        else if (!strcmp(a, "--timeout")) ok = options_parse_long(v, 1, 86400, &n) && (p.timeout_s = (double)n, true);
        else if (!strcmp(a, "--max-body")) ok = options_parse_long(v, 1024, 1L << 30, &n) && (p.max_body = (size_t)n, true);
        else if (!strcmp(a, "--max-connections")) ok = options_parse_long(v, 1, 4096, &n) && (p.max_connections = (int32_t)n, true);
        else if (!strcmp(a, "--max-connections-per-client")) ok = options_parse_long(v, 1, 4096, &n) && (p.max_per_client = (int32_t)n, true);
        else if (!strcmp(a, "--chat-template-file")) {
            FILE *f = fopen(v, "rb");
            size_t len = 0;
            free(template_text);
            template_text = f ? cli_read_all(f, 1u << 20, &len) : NULL;
            if (f) fclose(f);
            if (!template_text) {
                fprintf(stderr, "plumb serve: cannot read chat template file '%s': %s\n", v, strerror(errno));
                return 2;
            }
            p.chat_template = template_text;
            p.chat_template_len = len;
        } else if (!strcmp(a, "--request-timeout")) ok = options_parse_long(v, 1, 3600, &n) && (p.request_timeout_s = (double)n, true);
        if (!ok) {
            fprintf(stderr, "plumb serve: bad value '%s' for %s%s\n", v, a,
                    !strcmp(a, "--chat-format") ? " (gemma, llama3 or chatml)" : "");
            return 2;
        }
    }
    if (!p.model_path) {
        fprintf(stderr, "plumb serve: usage: plumb serve -m MODEL [options] (see --help)\n");
        return 2;
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
    fprintf(stderr, "plumb serve: listening on http://%s:%d (loading %s)\n", p.host, plumb_server_port(srv), p.model_path);
    /* signals stay deliverable while the model loads: a stop then needs no waiting for it */
    int sig = 0;
    const struct timespec tick = {0, 50 * 1000 * 1000};
    while (plumb_server_loading(srv))
        if ((sig = sigtimedwait(&sigs, NULL, &tick)) > 0) {
            fprintf(stderr, "plumb serve: %s while loading the model: stopped\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            _exit(0); /* the loader may be inside a long read; nothing to finish */
        }
    const char *why;
    if (plumb_server_wait_loaded(srv, &why)) {
        fprintf(stderr, "plumb serve: cannot load the model: %s\n", why);
        plumb_server_free(srv);
        return 1;
    }
    fprintf(stderr, "plumb serve: ready: %d slots\n", (int)p.n_parallel);
    sigwait(&sigs, &sig);
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
