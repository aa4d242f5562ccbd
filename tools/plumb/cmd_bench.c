/* cmd_bench.c — `plumb bench -m MODEL [-p 512] [-n 128] [-d 0] [-t 1,2] [-r 5] [-o md|json|csv]
 * [--device D] [-ngl N]`: prompt processing and generation speed, measured as llama-bench
 * measures them, and the distance of generation to the memory-bandwidth roofline. The device
 * and the layers offloaded to it are reported as llama-bench's backends and n_gpu_layers.
 *
 * For every thread count, every depth D and every test:
 *   ppP  a cleared sequence filled with D prompt tokens (untimed), then one plumb_decode of P
 *        prompt tokens in one batch (only the last row's logits asked for); t/s = P / time of
 *        that call;
 *   tgN  the same D tokens, then N single-token plumb_decode calls; t/s = N / their time.
 * A depth above 0 names the test as llama-bench does ("pp512 @ d4096"): speed with a long
 * context already in the KV cache. The D tokens go in batches of up to 512 (or P).
 * Each test runs once untimed (pp: the whole batch; tg: one token) and then -r times; the
 * result is the mean and the sample standard deviation of the per-repetition t/s. Token ids
 * are pseudo-random (fixed seed) over the vocabulary, never BOS or EOS.
 *
 * Generation is bound by memory: every token reads every weight a one-token forward pass
 * touches (of a mixture-of-experts model's expert tensors, the expert_used_count of
 * expert_count experts it is routed to) plus the KV cache of the positions it attends. bench
 * counts those bytes from the model file's tensors, measures the machine's streaming read
 * bandwidth with the same number of threads (membw.c) right before and right after the test's
 * repetitions (the better of the two: on a shared machine the bandwidth moves from minute to
 * minute, 40 to 80 GB/s on one EPYC VM), and reports achieved GB/s, the roofline t/s
 * (bandwidth / bytes per token) and the fraction of it reached. */
#include "cli.h"
#include "core/cpu_count.h"
#include "membw.h"
#include "options.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_LIST 16
#define BENCH_MAX_TOKENS 65536 /* the largest batch a context takes */
#define BENCH_DEPTH_BATCH 512  /* tokens per decode while filling a depth */
#define BENCH_MEMBW_BYTES ((size_t)512 << 20)
#define BENCH_MEMBW_PASSES 5
/* plumb's KV cache holds keys and values in F16 */
#define BENCH_KV_ELEM_BYTES 2

typedef struct bench_options {
    const char *model;
    int32_t p[BENCH_MAX_LIST], n[BENCH_MAX_LIST], t[BENCH_MAX_LIST], d[BENCH_MAX_LIST];
    int np, nn, nt, nd;
    int reps;
    enum { OUT_MD, OUT_JSON, OUT_CSV } output;
    bool membw;     /* measure the read bandwidth (off: no roofline) */
    bool no_repack; /* plumb_context_params.no_repack */
    bool fast_gemm; /* plumb_context_params.fast_gemm */
    plumb_model_params mp;
} bench_options;

/* What a one-token forward pass reads, from the model's tensors. */
typedef struct bench_bytes {
    uint64_t weights;     /* every tensor but the embedding table, + one embedding row (+ the
                             whole table when it is also the output head); of the expert
                             tensors (*_exps), the routed experts' share */
    uint64_t kv_per_pos;  /* K and V of one position in every full-attention layer */
    uint64_t kv_per_pos_swa; /* the same for the sliding-window layers */
    int32_t n_swa;        /* window of the sliding layers (0: none) */
} bench_bytes;

typedef struct bench_result {
    int32_t threads, n_prompt, n_gen, n_depth;
    double *samples; /* [reps] tokens/s */
    double mean, sd;
    double bytes_per_token; /* tg only; 0 for pp */
    double membw_gbs;       /* < 0: not measured */
    time_t started;         /* when the test's timed repetitions began */
    /* a remote device's traffic per token over the timed repetitions (all 0 for a local one) */
    double net_sent, net_received, net_round_trips;
} bench_result;

static const char bench_usage[] =
    "usage: plumb bench -m MODEL [options]\n"
    "  -m, --model FILE       GGUF model (required)\n"
    "  -p, --n-prompt LIST    prompt lengths, comma-separated (default 512; 0: no pp test)\n"
    "  -n, --n-gen LIST       generated lengths, comma-separated (default 128; 0: no tg test)\n"
    "  -d, --n-depth LIST     tokens already in the context before each test, comma-separated\n"
    "                         (default 0)\n"
    "  -t, --threads LIST     thread counts, comma-separated (default: the CPUs this process may\n"
    "                         use, as plumb info shows)\n"
    "  -r, --repetitions N    timed repetitions per test (default 5)\n"
    "  -o, --output FORMAT    md (default), json or csv (llama-bench's columns)\n"
    "      --no-membw         skip the read-bandwidth measurement (no roofline)\n"
    "      --mmap             keep the weights in a mapping of the file (default: read into memory)\n"
    "      --no-repack        no interleaved weight rows for the CPU's GEMM (same results; no kept copy)\n"
    "      --fast-gemm        prompts with each block's products summed as one integer: faster, not llama.cpp's exact logits\n";

/* ---- options ---------------------------------------------------------------------------- */

/* Prints "plumb bench: <message>" as one line on stderr; returns the exit status of a usage
 * error, 2, as the other subcommands do. */
#define bench_usage_error(...) (cli_errorf("bench", __VA_ARGS__), 2)

/* Parses "a,b,c" into out[0..*n): every item a whole decimal in [lo, hi], without white space. */
static bool parse_list(const char *s, long lo, long hi, int32_t *out, int *n) {
    *n = 0;
    char item[32];
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        long v;
        if (len == 0 || len >= sizeof item || *n >= BENCH_MAX_LIST) return false;
        memcpy(item, p, len);
        item[len] = '\0';
        if (!options_parse_long(item, lo, hi, &v)) return false;
        out[(*n)++] = (int32_t)v;
        if (!comma) return true;
        p = comma + 1;
    }
}

enum { OPT_MODEL, OPT_PROMPT, OPT_GEN, OPT_DEPTH, OPT_THREADS, OPT_REPS, OPT_OUTPUT, OPT_DEVICE, OPT_OFFLOAD, OPT_NGL, OPT_KEY };

/* Fills o from argv. Returns -1 to go on, 0 after --help, 2 after an error line. */
static int parse_options(bench_options *o, int argc, char **argv) {
    static const struct {
        const char *s, *l, *what; /* what: the accepted values, for the error line */
    } valued[] = {
        [OPT_MODEL] = {"-m", "--model", "a file"},
        [OPT_PROMPT] = {"-p", "--n-prompt", "comma-separated lengths, 0 to 65536, at most 16"},
        [OPT_GEN] = {"-n", "--n-gen", "comma-separated lengths, 0 to 65536, at most 16"},
        [OPT_DEPTH] = {"-d", "--n-depth", "comma-separated lengths, 0 to 65536, at most 16"},
        [OPT_THREADS] = {"-t", "--threads", "comma-separated counts, 1 to 512, at most 16"},
        [OPT_REPS] = {"-r", "--repetitions", "1 to 1000"},
        [OPT_OUTPUT] = {"-o", "--output", "md, json or csv"},
        [OPT_DEVICE] = {NULL, "--device", CLI_DEVICE_VALUES},
        [OPT_OFFLOAD] = {"-ngl", "--offload", CLI_OFFLOAD_VALUES},
        [OPT_NGL] = {NULL, "--n-gpu-layers", CLI_OFFLOAD_VALUES},
        [OPT_KEY] = {NULL, "--remote-key-file", "a file"},
    };
    memset(o, 0, sizeof *o);
    o->p[0] = 512, o->np = 1;
    o->n[0] = 128, o->nn = 1;
    o->d[0] = 0, o->nd = 1;
    plumb_cpu_count cpus;
    plumb__cpu_count(&cpus);
    o->t[0] = cpus.n, o->nt = 1;
    o->reps = 5;
    o->membw = true;
    o->mp = plumb_model_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(bench_usage, stdout);
            cli_device_print_usage(stdout, 25);
            return 0;
        }
        if (!strcmp(a, "--no-membw")) {
            o->membw = false;
            continue;
        }
        if (!strcmp(a, "--mmap")) {
            o->mp.use_mmap = true;
            continue;
        }
        if (!strcmp(a, "--no-repack")) {
            o->no_repack = true;
            continue;
        }
        if (!strcmp(a, "--fast-gemm")) {
            o->fast_gemm = true;
            continue;
        }
        int k = -1;
        for (int j = 0; j < (int)(sizeof valued / sizeof valued[0]); j++)
            if (options_is(a, valued[j].l, valued[j].s)) k = j;
        if (k < 0) return bench_usage_error("unknown option '%s' (see plumb bench --help)", a);
        char name[32];
        options_name(a, name, sizeof name);
        const bool inline_value = strchr(a, '=') != NULL;
        if (!inline_value && i + 1 >= argc) return bench_usage_error("%s needs a value (%s)", name, valued[k].what);
        const char *v = inline_value ? strchr(a, '=') + 1 : argv[++i];
        bool ok = true;
        long r;
        switch (k) {
        case OPT_MODEL: o->model = v; break;
        case OPT_PROMPT: ok = parse_list(v, 0, BENCH_MAX_TOKENS, o->p, &o->np); break;
        case OPT_GEN: ok = parse_list(v, 0, BENCH_MAX_TOKENS, o->n, &o->nn); break;
        case OPT_DEPTH: ok = parse_list(v, 0, BENCH_MAX_TOKENS, o->d, &o->nd); break;
        case OPT_THREADS: ok = parse_list(v, 1, 512, o->t, &o->nt); break;
        case OPT_REPS: ok = options_parse_long(v, 1, 1000, &r) && (o->reps = (int)r, true); break;
        case OPT_OUTPUT:
            ok = !strcmp(v, "json") || !strcmp(v, "md") || !strcmp(v, "csv");
            o->output = !strcmp(v, "json") ? OUT_JSON : !strcmp(v, "csv") ? OUT_CSV : OUT_MD;
            break;
        case OPT_DEVICE: ok = *v && (o->mp.device = v, true); break;
        case OPT_OFFLOAD:
        case OPT_NGL: ok = cli_parse_offload(v, &o->mp.n_offload); break;
        case OPT_KEY: ok = *v && (o->mp.remote_key_file = v, true); break;
        }
        if (!ok) return bench_usage_error("bad value '%s' for %s (%s)", v, name, valued[k].what);
    }
    if (!o->model) return bench_usage_error("-m MODEL is required (see plumb bench --help)");
    bool any = false;
    for (int i = 0; i < o->np; i++) any |= o->p[i] > 0;
    for (int i = 0; i < o->nn; i++) any |= o->n[i] > 0;
    if (!any) return bench_usage_error("nothing to measure: every -p and -n length is 0");
    return -1;
}

/* ---- what a generated token reads ------------------------------------------------------- */

/* Whether tensor `name` holds a layer's experts ("blk.N.ffn_up_exps.weight" and the like). */
static bool is_expert_tensor(const char *name) {
    static const char suffix[] = "_exps.weight";
    const size_t n = strlen(name), k = sizeof suffix - 1;
    return n > k && strcmp(name + n - k, suffix) == 0;
}

/* Reads tensor sizes from the model file: every weight a one-token forward pass reads (a
 * token runs expert_used_count of a layer's expert_count experts: that share of each expert
 * tensor). A sliding-window layer attends at most n_swa positions; for gemma3, 5 of every 6
 * layers slide (the model's own layer pattern). */
static plumb_status count_bytes(const plumb_model_t *m, bench_bytes *out) {
    memset(out, 0, sizeof *out);
    const plumb_gguf_t *g = plumb_model_gguf(m);
    plumb_model_info info;
    plumb_model_get_info(m, &info);
    const int64_t n = plumb_gguf_tensor_count(g);
    const bool tied = plumb_gguf_find_tensor(g, "output.weight") < 0;
    char key[96];
    uint64_t n_expert = 0, n_used = 0; /* the loader checked them: used 1 to count, or no experts */
    snprintf(key, sizeof key, "%s.expert_count", info.arch);
    if (plumb_gguf_get_count(g, key, &n_expert) != PLUMB_OK) n_expert = 0;
    snprintf(key, sizeof key, "%s.expert_used_count", info.arch);
    if (plumb_gguf_get_count(g, key, &n_used) != PLUMB_OK || n_used > n_expert) n_used = n_expert;
    for (int64_t i = 0; i < n; i++) {
        plumb_gguf_tensor_info t;
        plumb_status st = plumb_gguf_tensor(g, i, &t);
        if (st) return st;
        if (strcmp(t.name, "token_embd.weight") == 0) {
            uint64_t row = 0;
            if ((st = plumb_type_row_bytes(t.type, t.ne[0], &row))) return st;
            out->weights += row + (tied ? t.nbytes : 0); /* one row looked up (+ the head) */
        } else if (n_expert > 0 && is_expert_tensor(t.name)) {
            out->weights += t.nbytes / n_expert * n_used; /* the routed experts' rows only */
        } else {
            out->weights += t.nbytes;
        }
    }
    snprintf(key, sizeof key, "%s.attention.sliding_window", info.arch);
    uint32_t window = 0;
    const bool slides = strcmp(info.arch, "gemma3") == 0 && plumb_gguf_get_u32(g, key, &window) == PLUMB_OK && window > 0;
    const uint64_t per_layer = 2ull * (uint64_t)info.n_head_kv * (uint64_t)info.head_dim * BENCH_KV_ELEM_BYTES;
    int n_sliding = 0;
    if (slides)
        for (int il = 0; il < info.n_layer; il++) n_sliding += il % 6 < 5;
    out->n_swa = slides ? (int32_t)window : 0;
    out->kv_per_pos_swa = per_layer * (uint64_t)n_sliding;
    out->kv_per_pos = per_layer * (uint64_t)(info.n_layer - n_sliding);
    return PLUMB_OK;
}

/* Bytes read per token, averaged over n_gen tokens generated after depth tokens: token i
 * attends positions 0..depth + i (at most n_swa of them in sliding layers). */
static double bytes_per_generated_token(const bench_bytes *b, int32_t n_gen, int32_t depth) {
    double kv = 0;
    for (int32_t i = 0; i < n_gen; i++) {
        const double attended = (double)depth + (double)i + 1;
        const double attended_swa = b->n_swa > 0 && attended > b->n_swa ? (double)b->n_swa : attended;
        kv += attended * (double)b->kv_per_pos + attended_swa * (double)b->kv_per_pos_swa;
    }
    return (double)b->weights + (n_gen > 0 ? kv / n_gen : 0);
}

/* ---- timing ----------------------------------------------------------------------------- */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Deterministic token ids in [0, n_vocab), never bos or eos (splitmix64). */
static void fill_tokens(int32_t *ids, int32_t n, const plumb_vocab_t *v, int32_t n_vocab, uint64_t seed) {
    const int32_t bos = plumb_vocab_bos(v), eos = plumb_vocab_eos(v);
    uint64_t s = seed;
    for (int32_t i = 0; i < n;) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const int32_t id = (int32_t)(z % (uint64_t)n_vocab);
        if (id != bos && id != eos) ids[i++] = id;
    }
}

/* Clears the sequence and fills positions 0..depth-1 with ids[0..depth), `chunk` tokens per
 * decode. */
static plumb_status fill_depth(plumb_context_t *c, const int32_t *ids, const int32_t *pos, int32_t depth, int32_t chunk) {
    plumb_status st = plumb_seq_truncate(c, 0, 0);
    for (int32_t i = 0; i < depth && !st; i += chunk) {
        const plumb_batch b = {.n_tokens = depth - i < chunk ? depth - i : chunk, .tokens = ids + i, .pos = pos + i};
        st = plumb_decode(c, &b);
    }
    return st;
}

/* One prompt batch of n tokens after `depth` (fill_depth); *seconds is the decode's time. */
static plumb_status run_pp(plumb_context_t *c, const int32_t *ids, const int32_t *pos, int32_t depth, int32_t chunk,
                           int32_t n, double *seconds) {
    plumb_status st = fill_depth(c, ids, pos, depth, chunk);
    if (st) return st;
    const plumb_batch b = {.n_tokens = n, .tokens = ids + depth, .pos = pos + depth, .seq = NULL, .logits = NULL};
    const double t0 = now_seconds();
    st = plumb_decode(c, &b);
    *seconds = now_seconds() - t0;
    return st;
}

/* n single-token decodes after `depth` (fill_depth); *seconds is their total time. */
static plumb_status run_tg(plumb_context_t *c, const int32_t *ids, const int32_t *pos, int32_t depth, int32_t chunk,
                           int32_t n, double *seconds) {
    plumb_status st = fill_depth(c, ids, pos, depth, chunk);
    if (st) return st;
    const double t0 = now_seconds();
    for (int32_t i = depth; i < depth + n && !st; i++) {
        const plumb_batch b = {.n_tokens = 1, .tokens = ids + i, .pos = pos + i, .seq = NULL, .logits = NULL};
        st = plumb_decode(c, &b);
    }
    *seconds = now_seconds() - t0;
    return st;
}

static void mean_sd(const double *x, int n, double *mean, double *sd) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    double q = 0;
    for (int i = 0; i < n; i++) q += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

/* ---- output ----------------------------------------------------------------------------- */

typedef struct bench_model_desc {
    const char *path; /* as given */
    const char *file; /* basename of the path */
    const char *name, *arch;
    const char *file_type; /* general.file_type by name ("Q4_K_M"), or "" */
    uint64_t size;
    int64_t params;
    const char *device;    /* where it computes: "cpu", "opencl:0" (plumb_model_device) */
    int32_t n_offloaded;   /* the layers there (llama-bench's n_gpu_layers) */
    double load_s;         /* the model's load, and what it sent its device (a remote one's upload) */
    uint64_t load_sent;
    bool remote;           /* the device is across a network: traffic is reported */
} bench_model_desc;

/* "pp512", "tg128", "pp512 @ d4096" (llama-bench's names) */
static void test_name(const bench_result *r, char *buf, size_t cap) {
    const int k = r->n_prompt > 0 ? snprintf(buf, cap, "pp%d", r->n_prompt) : snprintf(buf, cap, "tg%d", r->n_gen);
    if (r->n_depth > 0 && k > 0 && (size_t)k < cap) snprintf(buf + k, cap - (size_t)k, " @ d%d", r->n_depth);
}

static void print_md_header(void) {
    printf("| model | size | params | threads | test | t/s | GB/s |\n");
    printf("| --- | ---: | ---: | ---: | --- | ---: | ---: |\n");
}

static void print_md_row(const bench_model_desc *d, const bench_result *r) {
    char test[32], gbs[64];
    test_name(r, test, sizeof test);
    if (r->bytes_per_token > 0)
        snprintf(gbs, sizeof gbs, "%.2f ± %.2f", r->mean * r->bytes_per_token / 1e9, r->sd * r->bytes_per_token / 1e9);
    else
        snprintf(gbs, sizeof gbs, "-");
    printf("| %s | %.2f MiB | %.2f M | %d | %s | %.2f ± %.2f | %s |\n", d->file, (double)d->size / (1024.0 * 1024.0),
           (double)d->params / 1e6, r->threads, test, r->mean, r->sd, gbs);
    fflush(stdout);
}

/* The bandwidth line of one thread count; rs[0..n_rs) are that thread count's results. */
static void print_md_roofline(int32_t threads, double membw_gbs, const bench_result *rs, int n_rs) {
    if (membw_gbs <= 0) {
        printf("threads %d: read bandwidth not measured\n", threads);
        return;
    }
    printf("threads %d: read bandwidth %.1f GB/s (%zu MiB, best of %d passes)", threads, membw_gbs,
           BENCH_MEMBW_BYTES >> 20, BENCH_MEMBW_PASSES);
    for (int i = 0; i < n_rs; i++) {
        const bench_result *r = &rs[i];
        if (r->bytes_per_token <= 0) continue;
        const double roof = r->membw_gbs * 1e9 / r->bytes_per_token;
        char test[32];
        test_name(r, test, sizeof test);
        printf("; %s roofline %.1f t/s (%.1f MB/token, %.1f GB/s read around its repetitions), reached %.1f%%", test, roof,
               r->bytes_per_token / 1e6, r->membw_gbs, 100.0 * r->mean / roof);
    }
    printf("\n");
}

/* s as a JSON string: invalid UTF-8 becomes U+FFFD, control bytes \u00XX. */
static void print_json_str(const char *s) {
    char *clean = cli_utf8_sanitize(s, strlen(s));
    putchar('"');
    for (const char *p = clean ? clean : ""; *p; p++) {
        const unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
    free(clean);
}

/* 17 significant digits: the value read back is the same double, so numbers derived from the
 * samples (mean, sd) can be recomputed exactly from the output */
static void print_json_num(double v) {
    if (isfinite(v)) printf("%.17g", v);
    else printf("null");
}

static void print_json(const bench_model_desc *d, const bench_result *rs, int n_rs, int reps) {
    printf("[");
    for (int i = 0; i < n_rs; i++) {
        const bench_result *r = &rs[i];
        char test[32];
        test_name(r, test, sizeof test);
        const bool tg = r->bytes_per_token > 0;
        const bool roof = tg && r->membw_gbs > 0;
        printf("%s\n  {\"model\": ", i ? "," : "");
        print_json_str(d->file);
        printf(", \"model_name\": ");
        print_json_str(d->name);
        printf(", \"arch\": ");
        print_json_str(d->arch);
        printf(", \"size\": %llu, \"params\": %lld, \"backends\": \"%s\", \"device\": ", (unsigned long long)d->size,
               (long long)d->params, cli_device_backend_name(d->device));
        print_json_str(d->device);
        printf(", \"n_gpu_layers\": %d, \"threads\": %d, \"test\": \"%s\", \"n_prompt\": %d, \"n_gen\": %d, "
               "\"n_depth\": %d, \"reps\": %d, \"samples_ts\": [",
               (int)d->n_offloaded, r->threads, test, r->n_prompt, r->n_gen, r->n_depth, reps);
        for (int k = 0; k < reps; k++) {
            if (k) printf(", ");
            print_json_num(r->samples[k]);
        }
        printf("], \"avg_ts\": ");
        print_json_num(r->mean);
        printf(", \"stddev_ts\": ");
        print_json_num(r->sd);
        printf(", \"bytes_per_token\": ");
        if (tg) print_json_num(r->bytes_per_token);
        else printf("null");
        printf(", \"avg_gbs\": ");
        if (tg) print_json_num(r->mean * r->bytes_per_token / 1e9);
        else printf("null");
        printf(", \"stddev_gbs\": ");
        if (tg) print_json_num(r->sd * r->bytes_per_token / 1e9);
        else printf("null");
        printf(", \"membw_gbs\": ");
        if (r->membw_gbs > 0) print_json_num(r->membw_gbs);
        else printf("null");
        printf(", \"roofline_ts\": ");
        if (roof) print_json_num(r->membw_gbs * 1e9 / r->bytes_per_token);
        else printf("null");
        printf(", \"roofline_fraction\": ");
        if (roof) print_json_num(r->mean / (r->membw_gbs * 1e9 / r->bytes_per_token));
        else printf("null");
        printf(", \"load_s\": ");
        print_json_num(d->load_s);
        const double net[4] = {(double)d->load_sent, r->net_sent, r->net_received, r->net_round_trips};
        static const char *const net_names[4] = {"load_bytes_sent", "net_bytes_sent_per_token", "net_bytes_received_per_token",
                                                 "net_round_trips_per_token"};
        for (int k = 0; k < 4; k++) {
            printf(", \"%s\": ", net_names[k]);
            if (d->remote) print_json_num(net[k]);
            else printf("null");
        }
        printf("}");
    }
    printf("\n]\n");
}

/* One CSV field as llama-bench writes them: in double quotes, a quote doubled. */
static void print_csv_field(const char *s, bool last) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
    putchar(last ? '\n' : ',');
}

/* llama-bench's -o csv: its header names and order, for the columns plumb has a value for (the
 * build and GPU columns are left out), one row per test: backends is "CPU" or "OpenCL", the
 * device's kind, and n_gpu_layers the layers offloaded to it. model_type is
 * "<arch> <params> <file type>" ("gemma3 268M Q4_K_M"); the ns columns are the mean and
 * standard deviation of the repetitions' durations. */
static void print_csv(const bench_model_desc *d, const bench_result *rs, int n_rs, int reps, int32_t n_batch,
                      bool use_mmap) {
    static const char *const header[] = {"cpu_info", "backends", "model_filename", "model_type", "model_size",
                                         "model_n_params", "n_batch", "n_threads", "type_k", "type_v",
                                         "n_gpu_layers", "use_mmap",
                                         "n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns",
                                         "avg_ts", "stddev_ts"};
    const size_t n_cols = sizeof header / sizeof header[0];
    for (size_t c = 0; c < n_cols; c++) printf("%s%c", header[c], c + 1 < n_cols ? ',' : '\n');
    const plumb_cpu_features *f = plumb_cpu_get();
    char type[160], num[64], when[32];
    if (d->params >= 1000000000) snprintf(num, sizeof num, "%.1fB", (double)d->params / 1e9);
    else snprintf(num, sizeof num, "%.0fM", (double)d->params / 1e6);
    snprintf(type, sizeof type, "%s %s%s%s", d->arch, num, d->file_type[0] ? " " : "", d->file_type);
    for (int i = 0; i < n_rs; i++) {
        const bench_result *r = &rs[i];
        const int32_t len = r->n_prompt > 0 ? r->n_prompt : r->n_gen;
        double ns[1000]; /* -r is at most 1000 */
        for (int k = 0; k < reps; k++) ns[k] = (double)len * 1e9 / r->samples[k];
        double ns_mean, ns_sd;
        mean_sd(ns, reps, &ns_mean, &ns_sd);
        print_csv_field(f->brand[0] ? f->brand : "unknown", false);
        print_csv_field(cli_device_backend_name(d->device), false);
        print_csv_field(d->path, false);
        print_csv_field(type, false);
        snprintf(num, sizeof num, "%llu", (unsigned long long)d->size);
        print_csv_field(num, false);
        snprintf(num, sizeof num, "%lld", (long long)d->params);
        print_csv_field(num, false);
        const long long ints[] = {n_batch, r->threads};
        for (size_t k = 0; k < 2; k++) {
            snprintf(num, sizeof num, "%lld", ints[k]);
            print_csv_field(num, false);
        }
        print_csv_field("f16", false);
        print_csv_field("f16", false);
        snprintf(num, sizeof num, "%d", (int)d->n_offloaded);
        print_csv_field(num, false);
        print_csv_field(use_mmap ? "1" : "0", false);
        const long long lens[] = {r->n_prompt, r->n_gen, r->n_depth};
        for (size_t k = 0; k < 3; k++) {
            snprintf(num, sizeof num, "%lld", lens[k]);
            print_csv_field(num, false);
        }
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&r->started, &tm));
        print_csv_field(when, false);
        snprintf(num, sizeof num, "%.0f", ns_mean);
        print_csv_field(num, false);
        snprintf(num, sizeof num, "%.0f", ns_sd);
        print_csv_field(num, false);
        snprintf(num, sizeof num, "%.6f", r->mean);
        print_csv_field(num, false);
        snprintf(num, sizeof num, "%.6f", r->sd);
        print_csv_field(num, true);
    }
}

/* ---- the command ------------------------------------------------------------------------ */

int cmd_bench(int argc, char **argv) {
    bench_options o;
    const int pr = parse_options(&o, argc, argv);
    if (pr >= 0) return pr;

    int32_t max_tokens = 1;
    for (int i = 0; i < o.np; i++) max_tokens = o.p[i] > max_tokens ? o.p[i] : max_tokens;
    for (int i = 0; i < o.nn; i++) max_tokens = o.n[i] > max_tokens ? o.n[i] : max_tokens;
    int32_t max_p = 1, max_d = 0;
    for (int i = 0; i < o.np; i++) max_p = o.p[i] > max_p ? o.p[i] : max_p;
    for (int i = 0; i < o.nd; i++) max_d = o.d[i] > max_d ? o.d[i] : max_d;
    const int32_t chunk = max_p > BENCH_DEPTH_BATCH ? max_p : BENCH_DEPTH_BATCH; /* depth tokens per decode */
    const int32_t fill = max_d < chunk ? max_d : chunk; /* the largest depth decode */
    const int32_t n_batch = fill > max_p ? fill : max_p;
    const int32_t max_pos = max_d + max_tokens;

    int rc = 1;
    plumb_model_t *model = NULL;
    plumb_context_t *ctx = NULL;
    membw *bw = NULL;
    int32_t *ids = NULL, *pos = NULL;
    bench_result *rs = NULL;
    double *samples = NULL;
    int n_rs = 0;
    int first_of[BENCH_MAX_LIST + 1] = {0}; /* results of thread count ti: [first_of[ti], first_of[ti+1]) */
    double gbs_of[BENCH_MAX_LIST];

    cli_model_src src;
    if (cli_model_source("bench", o.model, &src)) goto out;
    o.model = src.path;
    cli_device_fallback("bench", &o.mp);
    const double load_t0 = now_seconds();
    plumb_status st = plumb_model_load_params(o.model, &o.mp, &model);
    if (st) {
        cli_error("bench", st, NULL);
        goto out;
    }
    const double load_s = now_seconds() - load_t0;
    uint64_t repacked = 0; /* the contexts' weights kept in the GEMM's layout (the same for every thread count) */
    plumb_device_traffic traffic;
    plumb_model_device_traffic(model, &traffic);
    plumb_model_info info;
    plumb_model_get_info(model, &info);
    if (info.n_ctx_train > 0 && max_pos > info.n_ctx_train) {
        fprintf(stderr, "plumb bench: %d tokens do not fit the model's context of %d\n", max_pos, info.n_ctx_train);
        goto out;
    }
    bench_bytes bytes;
    if ((st = count_bytes(model, &bytes))) {
        cli_error("bench", st, NULL);
        goto out;
    }
    const char *slash = strrchr(o.model, '/');
    uint64_t ftype;
    const char *ftype_name = NULL;
    if (!cli_file_type(plumb_model_gguf(model), &ftype, &ftype_name) || !ftype_name) ftype_name = "";
    bench_model_desc desc = {.path = o.model, .file = src.ref[0] ? src.ref : slash ? slash + 1 : o.model, .name = info.name,
                             .arch = info.arch, .file_type = ftype_name, .size = info.file_size,
                             .params = info.n_params};
    desc.device = plumb_model_device(model, &desc.n_offloaded);
    desc.load_s = load_s, desc.load_sent = traffic.bytes_sent, desc.remote = traffic.round_trips > 0;

    const int per_t = (o.np + o.nn) * o.nd;
    ids = malloc((size_t)max_pos * sizeof *ids);
    pos = malloc((size_t)max_pos * sizeof *pos);
    rs = calloc((size_t)(per_t * o.nt), sizeof *rs);
    samples = calloc((size_t)(per_t * o.nt) * (size_t)o.reps, sizeof *samples);
    if (o.membw) bw = membw_create(BENCH_MEMBW_BYTES);
    if (!ids || !pos || !rs || !samples || (o.membw && !bw)) {
        fprintf(stderr, "plumb bench: out of memory\n");
        goto out;
    }
    for (int32_t i = 0; i < max_pos; i++) pos[i] = i;
    fill_tokens(ids, max_pos, plumb_model_vocab(model), info.n_vocab, 0x5EEDBE7C4ull);

    if (o.output == OUT_MD) print_md_header();
    for (int ti = 0; ti < o.nt; ti++) {
        const int32_t threads = o.t[ti];
        const double gbs = bw ? membw_measure(bw, threads, BENCH_MEMBW_PASSES) : -1.0;
        if (bw && gbs <= 0) {
            fprintf(stderr, "plumb bench: cannot start %d threads to measure the read bandwidth\n", threads);
            goto out;
        }
        plumb_context_params cp = plumb_context_default_params();
        cp.n_ctx = max_pos;
        cp.n_batch = n_batch;
        cp.n_threads = threads;
        cp.no_repack = o.no_repack;
        cp.fast_gemm = o.fast_gemm;
        cp.n_seq = 1;
        if ((st = plumb_context_create(model, &cp, &ctx))) {
            cli_error("bench", st, NULL);
            goto out;
        }
        first_of[ti] = n_rs;
        gbs_of[ti] = gbs;
        repacked = plumb_context_repacked_bytes(ctx);
        for (int k = 0; k < per_t; k++) {
            const int kt = k % (o.np + o.nn);
            const int32_t depth = o.d[k / (o.np + o.nn)];
            const bool pp = kt < o.np;
            const int32_t len = pp ? o.p[kt] : o.n[kt - o.np];
            if (len == 0) continue;
            bench_result *r = &rs[n_rs];
            *r = (bench_result){.threads = threads, .n_prompt = pp ? len : 0, .n_gen = pp ? 0 : len, .n_depth = depth,
                                .samples = samples + (size_t)n_rs * (size_t)o.reps,
                                .bytes_per_token = pp ? 0 : bytes_per_generated_token(&bytes, len, depth),
                                .membw_gbs = gbs};
            n_rs++;
            double dt = 0.0;
            r->started = time(NULL);
            st = pp ? run_pp(ctx, ids, pos, depth, chunk, len, &dt) : run_tg(ctx, ids, pos, depth, chunk, 1, &dt); /* warm-up */
            plumb_device_traffic t0, t1;
            plumb_model_device_traffic(model, &t0);
            const bool around = bw && !pp && !st; /* the bandwidth right before and after tg */
            const double before = around ? membw_measure(bw, threads, BENCH_MEMBW_PASSES) : -1.0;
            for (int rep = 0; rep < o.reps && !st; rep++) {
                st = pp ? run_pp(ctx, ids, pos, depth, chunk, len, &dt) : run_tg(ctx, ids, pos, depth, chunk, len, &dt);
                r->samples[rep] = dt > 0 ? (double)len / dt : INFINITY;
            }
            const double after = around && !st ? membw_measure(bw, threads, BENCH_MEMBW_PASSES) : -1.0;
            if (around && (before <= 0 || (!st && after <= 0))) {
                fprintf(stderr, "plumb bench: cannot start %d threads to measure the read bandwidth\n", threads);
                goto out;
            }
            if (around) r->membw_gbs = after > before ? after : before;
            plumb_model_device_traffic(model, &t1);
            const double n_tok = (double)len * o.reps;
            r->net_sent = (double)(t1.bytes_sent - t0.bytes_sent) / n_tok;
            r->net_received = (double)(t1.bytes_received - t0.bytes_received) / n_tok;
            r->net_round_trips = (double)(t1.round_trips - t0.round_trips) / n_tok;
            if (st) {
                cli_error("bench", st, NULL);
                goto out;
            }
            mean_sd(r->samples, o.reps, &r->mean, &r->sd);
            if (!isfinite(r->mean)) {
                fprintf(stderr, "plumb bench: the clock did not advance during a repetition\n");
                goto out;
            }
            if (o.output == OUT_MD) print_md_row(&desc, r);
        }
        plumb_context_free(ctx);
        ctx = NULL;
        first_of[ti + 1] = n_rs;
    }
    if (o.output == OUT_JSON) {
        print_json(&desc, rs, n_rs, o.reps);
    } else if (o.output == OUT_CSV) {
        print_csv(&desc, rs, n_rs, o.reps, n_batch, o.mp.use_mmap);
    } else {
        printf("\n");
        for (int ti = 0; ti < o.nt; ti++)
            print_md_roofline(o.t[ti], gbs_of[ti], rs + first_of[ti], first_of[ti + 1] - first_of[ti]);
        printf("model load: %.3f s, %s\n", load_s,
               plumb_gguf_is_file_mapping(plumb_model_gguf(model)) ? "weights in a mapping of the file (--mmap)"
                                                                   : "file read into memory");
        plumb_model_info mi;
        plumb_model_get_info(model, &mi);
        printf("repacked weights: %.2f MiB kept beside the file's layout (%.0f%% of the file; --no-repack: none)\n",
               (double)repacked / 1048576.0, mi.file_size ? 100.0 * (double)repacked / (double)mi.file_size : 0.0);
        char device[96];
        cli_model_device_text(model, device, sizeof device);
        printf("device: %s\n", device);
        if (desc.remote) {
            printf("network, per token:");
            for (int i = 0; i < n_rs; i++) {
                char test[32];
                test_name(&rs[i], test, sizeof test);
                printf("%s %s (t%d) %.0f B sent, %.0f B received, %.3f round trips", i ? ";" : "", test, rs[i].threads,
                       rs[i].net_sent, rs[i].net_received, rs[i].net_round_trips);
            }
            printf("\nnetwork, model load: %.1f KiB sent in %.3f s\n", (double)desc.load_sent / 1024.0, desc.load_s);
        }
    }
    rc = 0;
out:
    plumb_context_free(ctx);
    plumb_model_free(model);
    membw_free(bw);
    free(ids);
    free(pos);
    free(rs);
    free(samples);
    return rc;
}
