/* cmd_cluster.c — `plumb cluster-config --listen HOST:PORT --server HOST:PORT[,agent=PORT][,slots=N]
 * ... [options]`: prints a complete, commented HAProxy (2.6 or later) configuration that spreads
 * OpenAI API requests over several `plumb serve` instances: leastconn over free slots, at most
 * `slots` requests per server with the rest waiting in HAProxy's queue, health and agent checks,
 * retries only before a response starts, streamed answers passed through as they come, and
 * conversation affinity (a session header or the body's "user" field, kept in a stick table).
 * With --check it first asks each server's /health and agent port and says, one line each on
 * stderr, what it found. deploy/haproxy/README.md explains the configuration step by step.
 * The generator only writes text: it never starts or signals HAProxy. */
#include "cli.h"
#include "options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVERS 128
#define MAX_HOST 254          /* a DNS name of 253 characters, or a bracketed IPv6 address */
#define DEFAULT_SLOTS 4       /* plumb serve's default --parallel */
#define PROBE_TIMEOUT_MS 2000 /* --check: for each connection, and for each answer */

static const char cluster_usage[] =
    "usage: plumb cluster-config --listen HOST:PORT --server HOST:PORT[,agent=PORT][,slots=N] ... [options]\n"
    "  Prints an HAProxy (2.6 or later) configuration for several plumb serve instances on stdout.\n"
    "      --listen HOST:PORT      where HAProxy takes API requests (HOST '*': every IPv4 address)\n"
    "      --server HOST:PORT[,agent=PORT][,slots=N]\n"
    "                              a plumb serve (repeat for each; IPv6 as [ADDR]:PORT); agent=: its --agent-port\n"
    "                              (HAProxy then follows its free slots and its draining); slots=: its --parallel\n"
    "                              (default 4): requests HAProxy sends it at once, the others wait in HAProxy\n"
    "      --session-header NAME   request header that names a conversation (default X-Session-Id); requests\n"
    "                              without it use the OpenAI \"user\" field of the body; a conversation stays on\n"
    "                              the server that holds its prompt in cache while that server is up\n"
    "      --no-affinity           no conversation affinity (no stick table, bodies are not read)\n"
    "      --queue-timeout S       longest a request waits in HAProxy's queue for a free slot, seconds (default 60)\n"
    "      --check-interval MS     health and agent checks of each server every MS milliseconds (default 1000)\n"
    "      --timeout S             longest a request may take, seconds (default 600, as plumb serve --timeout)\n"
    "      --stats-socket PATH     HAProxy's runtime API socket (default /run/haproxy/admin.sock)\n"
    "      --check                 first ask each server's /health and agent port, one line each on stderr\n"
    "                              (exit 1, after printing the configuration, when one does not answer right)\n"
    "Valued options also take the form --name=VALUE.\n";

typedef struct cluster_server {
    char host[MAX_HOST + 1]; /* as HAProxy writes it: a name, an IPv4 address or [IPv6] */
    int port;
    int agent_port; /* 0: no agent check */
    int slots;      /* 0: not given (DEFAULT_SLOTS) */
} cluster_server;

typedef struct cluster_options {
    char listen_host[MAX_HOST + 1]; /* "" for every address ('*') */
    int listen_port;
    cluster_server servers[MAX_SERVERS];
    int n_servers;
    const char *session_header;
    bool affinity;
    long queue_timeout_s, check_interval_ms, timeout_s;
    const char *stats_socket;
    bool check;
} cluster_options;

/* Prints "plumb cluster-config: <message>" on stderr; 2 (a usage error). */
#define usage_error(...) (cli_errorf("cluster-config", __VA_ARGS__), 2)

/* Whether s is a host name HAProxy can resolve: dot-separated labels of letters, digits and
 * inner dashes, 63 characters each at most, 253 in all. */
static bool valid_hostname(const char *s, size_t n) {
    if (n == 0 || n > 253) return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-') return false;
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0)) return false;
        if (++label > 63) return false;
    }
    return s[n - 1] != '-';
}

/* Parses "HOST:PORT" (s[0..n)) into host (as HAProxy writes it) and *port. With allow_any, '*'
 * or nothing before the colon means every address (host ""). NULL when it is fine, else what
 * is wrong. */
static const char *parse_hostport(const char *s, size_t n, bool allow_any, char host[MAX_HOST + 1], int *port) {
    const char *colon;
    size_t hlen;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close) return "an IPv6 address has no closing ']'";
        char addr[INET6_ADDRSTRLEN + 1];
        size_t alen = (size_t)(close - s - 1);
        struct in6_addr a6;
        if (alen >= sizeof addr) return "not an IPv6 address in brackets";
        memcpy(addr, s + 1, alen);
        addr[alen] = '\0';
        if (inet_pton(AF_INET6, addr, &a6) != 1) return "not an IPv6 address in brackets";
        if ((size_t)(close - s) + 1 >= n || close[1] != ':') return "needs :PORT after the address";
        colon = close + 1;
        hlen = (size_t)(colon - s);
    } else {
        colon = NULL;
        for (size_t i = 0; i < n; i++)
            if (s[i] == ':') {
                if (colon) return "an IPv6 address goes in brackets, as [::1]:8080";
                colon = s + i;
            }
        if (!colon) return "needs HOST:PORT, as 10.0.0.2:8080";
        hlen = (size_t)(colon - s);
        bool any = hlen == 0 || (hlen == 1 && s[0] == '*');
        if (any && !allow_any) return "needs a host before the port";
        if (any) hlen = 0;
        else if (!valid_hostname(s, hlen)) return "the host is neither an address nor a host name";
    }
    long p;
    char digits[16];
    size_t plen = n - (size_t)(colon + 1 - s);
    if (plen == 0 || plen >= sizeof digits) return "the port must be a number from 1 to 65535";
    memcpy(digits, colon + 1, plen);
    digits[plen] = '\0';
    if (!options_parse_long(digits, 1, 65535, &p)) return "the port must be a number from 1 to 65535";
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return NULL;
}

/* Parses --server's value "HOST:PORT[,agent=PORT][,slots=N]" into *sv. 0, or 2 after one line. */
static int parse_server(const char *v, cluster_server *sv) {
    memset(sv, 0, sizeof *sv);
    const char *comma = strchr(v, ',');
    size_t n = comma ? (size_t)(comma - v) : strlen(v);
    const char *why = parse_hostport(v, n, false, sv->host, &sv->port);
    if (why) return usage_error("--server '%s': %s", v, why);
    while (comma) {
        const char *item = comma + 1;
        comma = strchr(item, ',');
        size_t len = comma ? (size_t)(comma - item) : strlen(item);
        char buf[32];
        if (len >= sizeof buf) return usage_error("--server '%s': unknown setting (agent=PORT or slots=N)", v);
        memcpy(buf, item, len);
        buf[len] = '\0';
        long x;
        int *dst = NULL;
        long hi = 0;
        const char *val = NULL;
        if (!strncmp(buf, "agent=", 6)) dst = &sv->agent_port, hi = 65535, val = buf + 6;
        else if (!strncmp(buf, "slots=", 6)) dst = &sv->slots, hi = 1024, val = buf + 6;
        if (!dst) return usage_error("--server '%s': unknown setting '%s' (agent=PORT or slots=N)", v, buf);
        if (*dst) return usage_error("--server '%s': '%.5s' given twice", v, buf);
        if (!options_parse_long(val, 1, hi, &x))
            return usage_error("--server '%s': %s", v,
                               dst == &sv->slots ? "slots= must be a number from 1 to 1024"
                                                 : "agent= must be a port number from 1 to 65535");
        *dst = (int)x;
    }
    if (sv->agent_port == sv->port)
        return usage_error("--server '%s': the agent port must differ from the HTTP port (plumb serve --agent-port)", v);
    return 0;
}

/* Whether s is a header name the configuration can hold as it is: letters, digits, '-', '_'
 * and '.', at most 64 (HTTP allows more, such as '#' and quotes, which HAProxy's configuration
 * language would read as a comment or a string). */
static bool valid_header_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-' && c != '_' && c != '.') return false;
    }
    return true;
}

/* Parses argv into *o. 0, 1 after printing the usage (--help), or 2 after one line. */
static int parse_args(int argc, char **argv, cluster_options *o) {
    memset(o, 0, sizeof *o);
    o->session_header = "X-Session-Id";
    o->affinity = true;
    o->queue_timeout_s = 60;
    o->check_interval_ms = 1000;
    o->timeout_s = 600;
    o->stats_socket = "/run/haproxy/admin.sock";
    bool have_listen = false, have_header = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(cluster_usage, stdout);
            return 1;
        }
        if (!strcmp(a, "--check")) {
            o->check = true;
            continue;
        }
        if (!strcmp(a, "--no-affinity")) {
            o->affinity = false;
            continue;
        }
        long *num = NULL, lo = 0, hi = 0;
        const char *what = NULL;
        if (options_is(a, "--queue-timeout", NULL)) num = &o->queue_timeout_s, lo = 1, hi = 86400, what = "seconds from 1 to 86400";
        else if (options_is(a, "--check-interval", NULL)) num = &o->check_interval_ms, lo = 100, hi = 60000, what = "milliseconds from 100 to 60000";
        else if (options_is(a, "--timeout", NULL)) num = &o->timeout_s, lo = 1, hi = 86400, what = "seconds from 1 to 86400";
        else if (!options_is(a, "--listen", NULL) && !options_is(a, "--server", NULL) &&
                 !options_is(a, "--session-header", NULL) && !options_is(a, "--stats-socket", NULL))
            return usage_error("unknown option '%s' (see plumb cluster-config --help)", a);
        if (!(v = options_value("cluster-config", argc, argv, &i))) return 2;
        if (num) {
            if (!options_parse_long(v, lo, hi, num)) {
                char name[32];
                options_name(a, name, sizeof name);
                return usage_error("bad value '%s' for %s (%s)", v, name, what);
            }
            continue;
        }
        if (options_is(a, "--listen", NULL)) {
            const char *why = parse_hostport(v, strlen(v), true, o->listen_host, &o->listen_port);
            if (why) return usage_error("--listen '%s': %s", v, why);
            have_listen = true;
        } else if (options_is(a, "--server", NULL)) {
            if (o->n_servers == MAX_SERVERS) return usage_error("more than %d servers", MAX_SERVERS);
            if (parse_server(v, &o->servers[o->n_servers])) return 2;
            o->n_servers++;
        } else if (options_is(a, "--session-header", NULL)) {
            if (!valid_header_name(v))
                return usage_error("--session-header '%s': a header name of letters, digits, '-', '_' and '.' is "
                                   "needed", v);
            o->session_header = v;
            have_header = true;
        } else {
            /* the socket path goes into the configuration as one word */
            bool ok = v[0] == '/' && strlen(v) < 108;
            for (const char *c = v; ok && *c; c++) ok = (unsigned char)*c > ' ' && *c != '"' && *c != '\'' && *c != '#' && *c != '\\';
            if (!ok)
                return usage_error("--stats-socket '%s': needs an absolute path without spaces or quotes, shorter "
                                   "than 108 bytes", v);
            o->stats_socket = v;
        }
    }
    if (!have_listen || o->n_servers == 0)
        return usage_error("needs --listen HOST:PORT and at least one --server HOST:PORT (see --help)");
    if (have_header && !o->affinity) return usage_error("--session-header and --no-affinity cannot be used together");
    /* the same address twice is a typo that would send two servers' traffic to one */
    for (int i = 0; i < o->n_servers; i++) {
        const cluster_server *s = &o->servers[i];
        int ports[2] = {s->port, s->agent_port};
        for (int k = 0; k < 2 && ports[k]; k++) {
            if (!strcmp(s->host, o->listen_host) && ports[k] == o->listen_port) {
                char where[MAX_HOST + 8];
                snprintf(where, sizeof where, "%s:%d", s->host, ports[k]);
                return usage_error("--server %s is where --listen takes requests", where);
            }
            for (int j = 0; j < i; j++) {
                const cluster_server *t = &o->servers[j];
                if (strcmp(s->host, t->host) || (ports[k] != t->port && ports[k] != t->agent_port)) continue;
                char where[MAX_HOST + 8];
                snprintf(where, sizeof where, "%s:%d", s->host, ports[k]);
                return usage_error("%s is named by two --server options", where);
            }
        }
    }
    return 0;
}

/* --check ------------------------------------------------------------------------------------ */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A TCP connection to host:port within PROBE_TIMEOUT_MS (non-blocking fd), or -1 with *why. */
static int probe_connect(const char *host, int port, char *why, size_t cap) {
    char name[MAX_HOST + 1], serv[8];
    size_t n = strlen(host);
    if (host[0] == '[') snprintf(name, sizeof name, "%.*s", (int)(n - 2), host + 1); /* [::1] -> ::1 */
    else snprintf(name, sizeof name, "%s", host);
    snprintf(serv, sizeof serv, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(name, serv, &hints, &res);
    if (rc) {
        snprintf(why, cap, "cannot resolve %.200s: %s", name, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(why, cap, "no address");
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            snprintf(why, cap, "socket: %s", strerror(errno));
            continue;
        }
        int err = 0;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            err = errno;
            if (err == EINPROGRESS) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                int r = poll(&p, 1, PROBE_TIMEOUT_MS);
                socklen_t len = sizeof err;
                if (r == 0) err = ETIMEDOUT;
                else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
            }
        }
        if (err) {
            if (err == ETIMEDOUT) snprintf(why, cap, "no answer to a connection within %d s", PROBE_TIMEOUT_MS / 1000);
            else snprintf(why, cap, "cannot connect: %s", strerror(err));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* Reads from fd until the peer closes, cap-1 bytes arrived, or PROBE_TIMEOUT_MS passed; the
 * bytes (NUL-terminated) in buf. The count, or -1 when nothing came in time. */
static int probe_read(int fd, char *buf, size_t cap) {
    size_t got = 0;
    double until = now_ms() + PROBE_TIMEOUT_MS;
    while (got + 1 < cap) {
        int left = (int)(until - now_ms());
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0) break;
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    return got ? (int)got : -1;
}

/* The first line of s, made printable and cut to 80 characters, into out. */
static void first_line(const char *s, char *out, size_t cap) {
    size_t n = 0;
    for (; s[n] && s[n] != '\r' && s[n] != '\n' && n + 1 < cap && n < 80; n++) out[n] = (s[n] >= ' ' && s[n] < 127) ? s[n] : '?';
    out[n] = '\0';
}

/* Whether line is an answer of HAProxy's agent-check protocol: words (separated by spaces,
 * tabs or commas) each up, down, ready, drain, maint, stopped or fail (these may end the line
 * with "#" and a reason), a weight "N%", or "maxconn:N". */
static bool agent_reply(const char *line) {
    static const char *const words[] = {"up", "down", "ready", "drain", "maint", "stopped", "fail"};
    bool any = false;
    for (const char *p = line; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p || *p == '#') break;
        size_t n = strcspn(p, " \t,#");
        bool ok = false;
        for (size_t w = 0; w < sizeof words / sizeof words[0] && !ok; w++)
            ok = strlen(words[w]) == n && !strncmp(p, words[w], n);
        if (!ok && n > 1 && p[n - 1] == '%') {
            ok = true;
            for (size_t i = 0; i + 1 < n; i++) ok = ok && p[i] >= '0' && p[i] <= '9';
        }
        if (!ok && n > 8 && !strncmp(p, "maxconn:", 8)) {
            ok = true;
            for (size_t i = 8; i < n; i++) ok = ok && p[i] >= '0' && p[i] <= '9';
        }
        if (!ok) return false;
        any = true;
        p += n;
    }
    return any;
}

/* Asks server i's /health and agent port; one line on stderr. Whether both answered right. */
static bool probe_server(const cluster_server *s, int i) {
    char why[256], buf[2048], line[96], body[96] = "";
    bool ok = true;
    fprintf(stderr, "plumb cluster-config: plumb%d %s:%d: ", i + 1, s->host, s->port);
    int fd = probe_connect(s->host, s->port, why, sizeof why);
    if (fd < 0) {
        fprintf(stderr, "%s", why);
        ok = false;
    } else {
        static const char req[] = "GET /health HTTP/1.1\r\nHost: plumb\r\nConnection: close\r\n\r\n";
        ssize_t w = write(fd, req, sizeof req - 1);
        int n = w == (ssize_t)(sizeof req - 1) ? probe_read(fd, buf, sizeof buf) : -1;
        close(fd);
        int status = 0;
        if (n > 0 && sscanf(buf, "HTTP/1.%*1[01] %3d", &status) == 1) {
            const char *b = strstr(buf, "\r\n\r\n");
            if (b) first_line(b + 4, body, sizeof body);
            if (status == 200) fprintf(stderr, "healthy %s", body);
            else fprintf(stderr, "answers /health with %d %s (HAProxy keeps it down until it answers 200)", status, body);
            ok = status == 200;
        } else if (n > 0) {
            first_line(buf, line, sizeof line);
            fprintf(stderr, "answered '%s', not HTTP: is it a plumb serve port?", line);
            ok = false;
        } else {
            fprintf(stderr, "no answer to GET /health within %d s", PROBE_TIMEOUT_MS / 1000);
            ok = false;
        }
    }
    if (s->agent_port) {
        fprintf(stderr, "; agent port %d: ", s->agent_port);
        fd = probe_connect(s->host, s->agent_port, why, sizeof why);
        if (fd < 0) {
            fprintf(stderr, "%s (HAProxy shows the agent check failing; is it plumb serve --agent-port?)", why);
            ok = false;
        } else {
            int n = probe_read(fd, buf, sizeof buf);
            close(fd);
            if (n > 0) first_line(buf, line, sizeof line);
            if (n > 0 && agent_reply(line)) fprintf(stderr, "'%s'", line);
            else {
                if (n > 0) fprintf(stderr, "answered '%s', not the agent protocol", line);
                else fprintf(stderr, "no agent answer within %d s", PROBE_TIMEOUT_MS / 1000);
                fprintf(stderr, " (is it plumb serve --agent-port, not the HTTP port?)");
                ok = false;
            }
        }
    }
    fputc('\n', stderr);
    return ok;
}

/* The configuration ------------------------------------------------------------------------- */

/* Prints the configuration for o on f. */
static void print_config(FILE *f, const cluster_options *o) {
    const long inter = o->check_interval_ms;
    const long fastinter = inter / 2 < 100 ? 100 : inter / 2;
    const long check_timeout = inter < 1000 ? 1000 : inter;
    /* TCP keepalive counts whole seconds: probes after two check intervals of silence, then one a
     * check interval, three in all */
    const long ka_intvl = (inter + 999) / 1000, ka_idle = (2 * inter + 999) / 1000;
    bool any_agent = false;
    for (int i = 0; i < o->n_servers; i++) any_agent = any_agent || o->servers[i].agent_port;

    /* the command again, in a form a shell takes as it is */
    fprintf(f, "# HAProxy configuration for %d plumb server%s, written by:\n#   plumb cluster-config --listen %s:%d",
            o->n_servers, o->n_servers == 1 ? "" : "s", o->listen_host[0] ? o->listen_host : "'*'", o->listen_port);
    for (int i = 0; i < o->n_servers; i++) {
        const cluster_server *s = &o->servers[i];
        fprintf(f, " \\\n#     --server %s:%d", s->host, s->port);
        if (s->agent_port) fprintf(f, ",agent=%d", s->agent_port);
        if (s->slots) fprintf(f, ",slots=%d", s->slots);
    }
    if (!o->affinity) fprintf(f, " \\\n#     --no-affinity");
    else if (strcmp(o->session_header, "X-Session-Id")) fprintf(f, " \\\n#     --session-header %s", o->session_header);
    fprintf(f, " \\\n#     --queue-timeout %ld --check-interval %ld --timeout %ld", o->queue_timeout_s, inter, o->timeout_s);
    if (strcmp(o->stats_socket, "/run/haproxy/admin.sock")) fprintf(f, " --stats-socket %s", o->stats_socket);
    fprintf(f,
            "\n#\n"
            "# Needs HAProxy 2.6 or later. Check it with `haproxy -c -f FILE`, run it with `haproxy -f FILE`\n"
            "# (or install it as /etc/haproxy/haproxy.cfg). Start each server as\n"
            "#   plumb serve -m MODEL --host ADDR --port PORT --parallel SLOTS [--agent-port AGENT] --drain-delay %ld\n"
            "# with the SLOTS and AGENT of its line below (--drain-delay: after SIGTERM a server serves on until\n"
            "# HAProxy has seen it drain, one check interval and a second). deploy/haproxy/README.md explains\n"
            "# every part.\n"
            "\n"
            "global\n"
            "    # connections HAProxy holds at most, clients waiting in its queue included\n"
            "    maxconn 4096\n"
            "    # one line per request (which server, how long it queued) and per server state change, on\n"
            "    # standard output (the journal when systemd runs HAProxy)\n"
            "    log stdout format raw local0 info\n"
            "    # the runtime API, for people and scripts: `echo 'show stat' | socat stdio unix:%s`;\n"
            "    # `set server plumb_servers/plumb1 state drain` drains a server by hand\n"
            "    stats socket %s mode 660 level admin\n"
            "    # a request is retried on another server, and its \"user\" field read, only when it fits in one\n"
            "    # buffer: 64 KiB (the default is 16 KiB) holds a long conversation; larger requests still go\n"
            "    # through, without retries or affinity by \"user\"\n"
            "    tune.bufsize 65536\n"
            "\n"
            "defaults\n"
            "    mode http\n"
            "    log global\n"
            "    option httplog\n"
            "    # servers are on the local network: one that does not take a connection within 2 s is down or\n"
            "    # cut off, and the request is retried on another\n"
            "    timeout connect 2s\n"
            "    # a non-streamed answer is silent until the whole generation is done: both sides may be quiet\n"
            "    # for as long as a request may take (plumb serve --timeout)\n"
            "    timeout client %lds\n"
            "    timeout server %lds\n"
            "    # a client's whole request (headers and body), and an idle client connection between requests\n"
            "    timeout http-request 30s\n"
            "    timeout http-keep-alive 10s\n"
            "    # how long a request may wait in HAProxy's queue for a free slot before it is answered 503\n"
            "    timeout queue %lds\n"
            "    # the longest a health or agent check may wait for its answer\n"
            "    timeout check %ldms\n"
            "    # HAProxy's own errors as OpenAI-style JSON, so API clients can read them\n"
            "    http-error status 502 content-type application/json string "
            "'{\"error\":{\"message\":\"the plumb server failed while answering\",\"type\":\"unavailable_error\",\"code\":502}}'\n"
            "    http-error status 503 content-type application/json string "
            "'{\"error\":{\"message\":\"no plumb server could take the request; retry later\",\"type\":\"unavailable_error\",\"code\":503}}'\n"
            "    http-error status 504 content-type application/json string "
            "'{\"error\":{\"message\":\"the plumb server did not answer in time\",\"type\":\"timeout_error\",\"code\":504}}'\n"
            "\n"
            "frontend plumb_api\n",
            inter / 1000 + 2, o->stats_socket, o->stats_socket, o->timeout_s, o->timeout_s, o->queue_timeout_s, check_timeout);
    if (o->listen_host[0]) fprintf(f, "    bind %s:%d\n", o->listen_host, o->listen_port);
    else fprintf(f, "    bind :%d\n", o->listen_port);
    if (o->affinity)
        fprintf(f,
                "    # wait for the whole body before choosing a server: the \"user\" field is read from it, and a\n"
                "    # request that is all here can be sent again to another server when the first fails\n"
                "    option http-buffer-request\n"
                "    # the conversation key: the %s header, else the OpenAI \"user\" field of a JSON body\n"
                "    http-request set-var(txn.conversation) req.hdr(%s)\n"
                "    http-request set-var(txn.conversation) req.body,json_query('$.user') if METH_POST !{ var(txn.conversation) -m found }\n",
                o->session_header, o->session_header);
    else
        fprintf(f,
                "    # wait for the whole body before choosing a server, so that a request that is all here can be\n"
                "    # sent again to another server when the first fails\n"
                "    option http-buffer-request\n");
    fprintf(f,
            "    default_backend plumb_servers\n"
            "\n"
            "backend plumb_servers\n"
            "    # each request goes to the server with the fewest requests in flight for its weight%s\n"
            "    balance leastconn\n",
            any_agent ? "; a server's\n    # agent (agent= below) sets its weight from its free slots, maxconn from its slots, and drains\n"
                        "    # it on SIGTERM"
                      : "");
    if (o->affinity)
        fprintf(f,
                "    # conversation affinity: the first request of a conversation goes by leastconn and the server\n"
                "    # that took it is remembered (for an hour after its last request, 100000 conversations at\n"
                "    # most); later turns go to it, where their shared prompt prefix is still in a slot's KV cache,\n"
                "    # while it is up and not draining. Requests without a key are not remembered.\n"
                "    stick-table type string len 128 size 100k expire 1h\n"
                "    stick on var(txn.conversation)\n");
    fprintf(f,
            "    # keep-alive to the servers (HAProxy's default), never sharing a server connection between\n"
            "    # clients: plumb then frames a streamed answer in chunks, so an answer cut short by a dying\n"
            "    # server reaches the client as an incomplete body (an error), not as a clean end\n"
            "    http-reuse never\n"
            "    # a host that is gone (powered off, its link cut) never closes its connections: TCP keepalive\n"
            "    # probes after %lds without traffic, and a connection whose probes or data go unanswered for\n"
            "    # %lds (tcp-ut below) is closed, failing the request that was on it (a slow generation is not\n"
            "    # at risk: the server's kernel answers the probes)\n"
            "    option srvtcpka\n"
            "    srvtcpka-idle %lds\n"
            "    srvtcpka-intvl %lds\n"
            "    srvtcpka-cnt 3\n"
            "    # send each event of a streamed answer on as it arrives, without waiting to fill a packet\n"
            "    # (there is no compression either: it would hold events back)\n"
            "    option http-no-delay\n"
            "    # retries only when no answer has started: the connection failed, the server closed it\n"
            "    # without a word, or it answered 503 (plumb does so only for requests it did not start:\n"
            "    # loading, shutting down, queue full). An answer that has begun is never sent twice.\n"
            "    retry-on conn-failure empty-response response-timeout 503\n"
            "    retries 3\n"
            "    # each retry goes to another server%s\n"
            "    option redispatch 1\n"
            "    # health: GET /health answers 200 once the model is loaded, 503 while it loads. After SIGTERM\n"
            "    # plumb answers 503 {\"status\":\"draining\"} until its requests in flight are done: that is a\n"
            "    # soft stop (L7OKC: no new requests, those in flight finish), not a failure. The rules run in\n"
            "    # turn, the first that fails sets the state and the comment `show stat` shows.\n"
            "    option httpchk\n"
            "    http-check send meth GET uri /health ver HTTP/1.1 hdr Host plumb\n"
            "    http-check expect status 200,503 comment \"not a plumb serve port: no HTTP answer of 200 or 503\"\n"
            "    http-check expect ! rstring '\"status\" *: *\"draining\"' error-status L7OKC comment \"draining: finishing requests in flight\"\n"
            "    http-check expect status 200 comment \"not ready: the model is loading or failed to load\"\n"
            "    # which server answered, for clients and logs (the names below)\n"
            "    http-response set-header X-Served-By %%[srv_name]\n"
            "    # every server: checked every %ldms (every %ldms while its state is changing), up after 2\n"
            "    # good checks, down after 2 failed ones: a dead server is down within about %ld ms, one cut off\n"
            "    # the network (connections time out) within about %ld ms. Sooner still when a request finds\n"
            "    # it dead (observe layer4): a connection it refuses or leaves unanswered marks it down at once,\n"
            "    # for with the fewest requests in flight, leastconn would otherwise send it request after\n"
            "    # request until the checks catch up. Requests already on a server marked down go on (a\n"
            "    # draining one finishes them; a dead one's connections close, see srvtcpka above); requests\n"
            "    # waiting for it go to the others. A host name that does not resolve leaves its server in\n"
            "    # maintenance instead of stopping HAProxy.\n"
            "    default-server check inter %ld fastinter %ld downinter %ld rise 2 fall 2 weight 100 observe layer4 error-limit 1 on-error mark-down tcp-ut %lds init-addr last,libc,none\n"
            "    # maxconn: the requests HAProxy sends a server at once, its slots (plumb serve --parallel); the\n"
            "    # others wait in HAProxy's queue for the first slot that frees up on any server\n",
            ka_idle, ka_idle + 3 * ka_intvl, ka_idle, ka_intvl, o->affinity ? " (a conversation too, when its server failed it)" : "",
            inter, fastinter, inter + fastinter, inter + 2 * (inter < 2000 ? inter : 2000) + fastinter, inter, fastinter,
            inter, ka_idle + 3 * ka_intvl);
    if (any_agent) fprintf(f, "    # (a server's agent reports its slots as maxconn:N, which then takes over)\n");
    if (o->affinity)
        fprintf(f, "    # no maxqueue: with one, leastconn also queues requests on single servers up to it, and when a\n"
                   "    # server dies the requests queued on it find every other queue full and get a 503; a\n"
                   "    # conversation waits for its own server (timeout queue) unless that server is down or draining\n");
    for (int i = 0; i < o->n_servers; i++) {
        const cluster_server *s = &o->servers[i];
        const int slots = s->slots ? s->slots : DEFAULT_SLOTS;
        fprintf(f, "    server plumb%d %s:%d maxconn %d", i + 1, s->host, s->port, slots);
        if (s->agent_port) fprintf(f, " agent-check agent-port %d agent-inter %ld", s->agent_port, inter);
        fputc('\n', f);
    }
}

int cmd_cluster_config(int argc, char **argv) {
    cluster_options *o = calloc(1, sizeof *o);
    if (!o) {
        fprintf(stderr, "plumb cluster-config: out of memory\n");
        return 1;
    }
    int rc = parse_args(argc, argv, o);
    if (rc) {
        free(o);
        return rc == 1 ? 0 : rc;
    }
    bool probes_ok = true;
    if (o->check)
        for (int i = 0; i < o->n_servers; i++) probes_ok = probe_server(&o->servers[i], i) && probes_ok;
    print_config(stdout, o);
    rc = fflush(stdout) || ferror(stdout) ? 1 : probes_ok ? 0 : 1;
    free(o);
    return rc;
}
