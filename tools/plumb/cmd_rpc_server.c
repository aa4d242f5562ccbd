/* cmd_rpc_server.c — `plumb rpc-server`: serves this host's CPU or OpenCL device to remote
 * clients (`--device remote:HOST:PORT` on theirs) until SIGINT or SIGTERM. */
#include "cli.h"
#include "options.h"

#include <signal.h>
#include <string.h>

static volatile int stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void print_usage(FILE *f) {
    fprintf(f, "usage: plumb rpc-server --key-file F [options]\n"
               "Serves this host's device to remote clients (--device remote:HOST:PORT --remote-key-file F),\n"
               "every connection authenticated with the shared key (docs/remote-protocol.md).\n"
               "  --key-file F          the shared secret, as text (at least 16 bytes; chmod 600), e.g.\n"
               "                        head -c 32 /dev/urandom | base64 > key\n"
               "  --host ADDR           the address to listen on (default 127.0.0.1)\n"
               "  --port N              the port (default 50052; 0: any free one)\n"
               "  --device D            the device served: cpu (default), opencl or opencl:N\n"
               "  -t, --threads N       the CPU device's threads (default: the CPUs this process may use)\n"
               "  --mem-limit MIB       buffers one connection may hold (default 8192)\n"
               "  --max-connections N   authenticated connections at once (default 8, at most 64)\n"
               "  --cache-dir D         keeps weights by content (SHA-256) in D, so a client's next run\n"
               "                        uploads none (made, mode 700, when missing)\n"
               "  --idle-timeout S      closes a connection with no request for S seconds (default: never;\n"
               "                        a vanished client is found by TCP keepalive within about 30 s)\n");
}

static void on_ready(int port, void *ctx) {
    const plumb_rpc_server_params *p = ctx;
    fprintf(stderr, "plumb rpc-server: listening on %s:%d, serving %s\n", p->host, port, p->device ? p->device : "cpu");
}

int cmd_rpc_server(int argc, char **argv) {
    plumb_rpc_server_params p = plumb_rpc_server_default_params();
    p.port = 50052;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            print_usage(stdout);
            return 0;
        }
        if (options_is(a, "--key-file", NULL) || options_is(a, "--host", NULL) || options_is(a, "--device", NULL) ||
            options_is(a, "--cache-dir", NULL)) {
            if (!(v = options_value("rpc-server", argc, argv, &i))) return 2;
            if (options_is(a, "--key-file", NULL)) p.key_file = v;
            else if (options_is(a, "--host", NULL)) p.host = v;
            else if (options_is(a, "--cache-dir", NULL)) p.cache_dir = v;
            else p.device = v;
        } else if (options_is(a, "--port", NULL) || options_is(a, "--threads", "-t") || options_is(a, "--mem-limit", NULL) ||
                   options_is(a, "--max-connections", NULL) || options_is(a, "--idle-timeout", NULL)) {
            if (!(v = options_value("rpc-server", argc, argv, &i))) return 2;
            const bool port = options_is(a, "--port", NULL), mem = options_is(a, "--mem-limit", NULL);
            const bool conns = options_is(a, "--max-connections", NULL), idle = options_is(a, "--idle-timeout", NULL);
            if (!options_parse_long(v, port ? 0 : 1, port ? 65535 : mem ? (1L << 30) : conns ? 64 : idle ? 2000000 : 512, &n)) {
                char name[64];
                options_name(a, name, sizeof name);
                fprintf(stderr, "plumb rpc-server: bad value '%s' for %s\n", v, name);
                return 2;
            }
            if (port) p.port = (int)n;
            else if (mem) p.mem_limit = (uint64_t)n << 20;
            else if (conns) p.max_connections = (int)n;
            else if (idle) p.idle_timeout_ms = (int)(n * 1000);
            else p.n_threads = (int)n;
        } else {
            fprintf(stderr, "plumb rpc-server: unknown option '%s'\n", a);
            print_usage(stderr);
            return 2;
        }
    }
    if (!p.key_file) {
        fprintf(stderr, "plumb rpc-server: a key file is required (--key-file F)\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (plumb_rpc_server_run(&p, &stop_requested, on_ready, &p)) {
        fprintf(stderr, "plumb rpc-server: %s\n", plumb_last_error());
        return 1;
    }
    return 0;
}
