/* fault_check.c — plumb_fault_check: out-of-memory fault injection. Runs one scenario (a model
 * load, a context, a decode, tokenization and the server's helpers over it, the chat
 * formatter, a sampler, the GGUF writer and reader, the server's request parsers) over and
 * over, making the Nth resource request fail in run N, and checks that every run ends in
 * success with the reference result or in a clean error: a negative status with a message,
 * and no memory leaked, no mapping, file descriptor or thread left behind.
 *
 *   plumb_fault_check SCENARIO [PATH] [--mmap] [--threads T] [--max-runs R] [--list] [--verbose]
 *
 * SCENARIO is load, context, decode, tokenize or gen (PATH: a model; --mmap keeps the
 * weights in the file's mapping), sampler, chat or request (no PATH), or gguf (PATH: a
 * directory to write a file in).
 *
 * The program is linked with --wrap for malloc, calloc, realloc, aligned_alloc,
 * posix_memalign, strdup, strndup, mmap, madvise, mprotect, fopen, pthread_create and the
 * PCRE2 allocating constructors, so every such call that plumb's own code (the static
 * libraries) makes goes through a counter; cJSON's allocations are counted through its hooks,
 * since the server's parsers must survive cJSON running out too. Each scenario runs once
 * unfailed for the reference result, once more to record the calls (the wrappers' return
 * addresses tell the call sites apart), then once per chosen N. With at most R runs
 * (default: every N) the Ns are the first and last call of every site, then evenly spaced
 * ones, so every site fails at least once. Runs stay in one process, which keeps the model
 * file in memory between them and makes several hundred runs affordable; under
 * AddressSanitizer each run ends with a leak check, so a leak is pinned on its N.
 *
 * A failure that plumb is meant to absorb must leave the result unchanged: madvise (huge
 * pages are only advice), and while a model is read into memory the anonymous mapping,
 * mprotect and /proc/meminfo (plumb maps the file instead). Before each run a line
 * "run N/T: KIND at SITE" goes to stderr, so a crash names its run; SITE is an offset in this
 * executable for addr2line. Exit status: 0 when every run was clean, 1 when one was not (one
 * "FAIL" line each on stdout), 2 when the scenario fails without any fault. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "real_alloc.h"

#include "plumb.h"
#include "server/gen.h"
#include "server/request.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* ---- the wrappers --------------------------------------------------------------------------- */

enum kind {
    K_MALLOC, K_CALLOC, K_REALLOC, K_ALIGNED_ALLOC, K_POSIX_MEMALIGN, K_STRDUP, K_STRNDUP, K_MMAP, K_MADVISE,
    K_MPROTECT, K_FOPEN, K_PTHREAD_CREATE, K_PCRE2_COMPILE, K_PCRE2_MATCH_DATA, K_CJSON, K_COUNT
};
static const char *const kind_names[K_COUNT] = {
    "malloc", "calloc", "realloc", "aligned_alloc", "posix_memalign", "strdup", "strndup", "mmap", "madvise",
    "mprotect", "fopen", "pthread_create", "pcre2_compile", "pcre2_match_data_create", "cJSON malloc",
};

typedef struct call {
    void *site;
    int kind;
    int flags; /* mmap's flags; fopen: 1 for a file under /proc */
} call;

static struct {
    atomic_int armed;  /* count (and maybe fail) calls */
    atomic_long n;     /* calls counted since armed */
    long fail_at;      /* the call to fail, 1-based; 0: none */
    bool recording;    /* keep every call in calls[] */
    call *calls;
    size_t n_calls, cap_calls;
    atomic_int fired; /* the call fail_at happened and failed */
    call failed;
} F;

/* The executable's load address (GNU ld), so sites print as offsets addr2line reads. */
extern char __executable_start;

static bool should_fail(int kind, void *site, int flags) {
    if (!atomic_load(&F.armed)) return false;
    const long i = atomic_fetch_add(&F.n, 1) + 1;
    const call c = {site, kind, flags};
    if (F.recording) {
        if (F.n_calls == F.cap_calls) {
            size_t cap = F.cap_calls ? 2 * F.cap_calls : 1024;
            extern void *__real_realloc(void *p, size_t n);
            call *grown = __real_realloc(F.calls, cap * sizeof *grown);
            if (!grown) abort(); /* the harness itself cannot go on */
            F.calls = grown, F.cap_calls = cap;
        }
        F.calls[F.n_calls++] = c;
    }
    if (i != F.fail_at) return false;
    F.failed = c;
    atomic_store(&F.fired, 1);
    return true;
}

#define SITE __builtin_return_address(0)

int __real_munmap(void *addr, size_t len);
int __real_madvise(void *addr, size_t len, int advice);
int __real_mprotect(void *addr, size_t len, int prot);
FILE *__real_fopen(const char *path, const char *mode);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
pcre2_code *__real_pcre2_compile_8(PCRE2_SPTR pat, PCRE2_SIZE len, uint32_t opts, int *err, PCRE2_SIZE *erroff,
                                   pcre2_compile_context *cc);
pcre2_match_data *__real_pcre2_match_data_create_8(uint32_t n, pcre2_general_context *gc);

void *__wrap_malloc(size_t n) {
    if (should_fail(K_MALLOC, SITE, 0)) return errno = ENOMEM, NULL;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t s) {
    if (should_fail(K_CALLOC, SITE, 0)) return errno = ENOMEM, NULL;
    return __real_calloc(n, s);
}
void *__wrap_realloc(void *p, size_t n) {
    if (should_fail(K_REALLOC, SITE, 0)) return errno = ENOMEM, NULL;
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t a, size_t n) {
    if (should_fail(K_ALIGNED_ALLOC, SITE, 0)) return errno = ENOMEM, NULL;
    return __real_aligned_alloc(a, n);
}
int __wrap_posix_memalign(void **p, size_t a, size_t n) {
    if (should_fail(K_POSIX_MEMALIGN, SITE, 0)) return ENOMEM;
    return __real_posix_memalign(p, a, n);
}
char *__wrap_strdup(const char *s) {
    if (should_fail(K_STRDUP, SITE, 0)) return errno = ENOMEM, NULL;
    return __real_strdup(s);
}
char *__wrap_strndup(const char *s, size_t n) {
    if (should_fail(K_STRNDUP, SITE, 0)) return errno = ENOMEM, NULL;
    return __real_strndup(s, n);
}

/* Mappings plumb holds, so that one left behind after a run shows (LSan sees only the heap). */
static struct {
    pthread_mutex_t mu;
    void *addr[256];
    int n;
} maps = {.mu = PTHREAD_MUTEX_INITIALIZER};

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (should_fail(K_MMAP, SITE, flags)) return errno = ENOMEM, MAP_FAILED;
    void *m = __real_mmap(addr, len, prot, flags, fd, off);
    if (m != MAP_FAILED) {
        pthread_mutex_lock(&maps.mu);
        if (maps.n < 256) maps.addr[maps.n++] = m;
        pthread_mutex_unlock(&maps.mu);
    }
    return m;
}
int __wrap_munmap(void *addr, size_t len) {
    pthread_mutex_lock(&maps.mu);
    for (int i = 0; i < maps.n; i++)
        if (maps.addr[i] == addr) {
            maps.addr[i] = maps.addr[--maps.n];
            break;
        }
    pthread_mutex_unlock(&maps.mu);
    return __real_munmap(addr, len);
}
static int live_maps(void) {
    pthread_mutex_lock(&maps.mu);
    int n = maps.n;
    pthread_mutex_unlock(&maps.mu);
    return n;
}

int __wrap_madvise(void *addr, size_t len, int advice) {
    if (should_fail(K_MADVISE, SITE, 0)) return errno = EINVAL, -1; /* as a kernel without THP */
    return __real_madvise(addr, len, advice);
}
int __wrap_mprotect(void *addr, size_t len, int prot) {
    if (should_fail(K_MPROTECT, SITE, 0)) return errno = ENOMEM, -1;
    return __real_mprotect(addr, len, prot);
}
FILE *__wrap_fopen(const char *path, const char *mode) {
    if (should_fail(K_FOPEN, SITE, !strncmp(path, "/proc/", 6))) return errno = ENOMEM, NULL;
    return __real_fopen(path, mode);
}
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg) {
    if (should_fail(K_PTHREAD_CREATE, SITE, 0)) return EAGAIN;
    return __real_pthread_create(t, a, fn, arg);
}
pcre2_code *__wrap_pcre2_compile_8(PCRE2_SPTR pat, PCRE2_SIZE len, uint32_t opts, int *err, PCRE2_SIZE *erroff,
                                   pcre2_compile_context *cc) {
    if (should_fail(K_PCRE2_COMPILE, SITE, 0)) { /* what PCRE2 reports when its allocator fails */
        *err = PCRE2_ERROR_HEAP_FAILED;
        *erroff = 0;
        return NULL;
    }
    return __real_pcre2_compile_8(pat, len, opts, err, erroff, cc);
}
pcre2_match_data *__wrap_pcre2_match_data_create_8(uint32_t n, pcre2_general_context *gc) {
    if (should_fail(K_PCRE2_MATCH_DATA, SITE, 0)) return NULL;
    return __real_pcre2_match_data_create_8(n, gc);
}
static void *cjson_malloc(size_t n) {
    if (should_fail(K_CJSON, SITE, 0)) return NULL;
    return __real_malloc(n);
}

/* ---- runs ------------------------------------------------------------------------------------ */

/* What one run of a scenario did. */
typedef struct outcome {
    plumb_status st;     /* the first failure, or PLUMB_OK */
    char msg[256];       /* its message */
    bool has_msg;        /* a message was set for it */
    uint64_t digest;     /* of the results (on success, or after the retry of a decode) */
    bool file_mapping;   /* load and gguf: the data stayed in the file's mapping */
    char broken[256];    /* a check the scenario made itself failed */
} outcome;

static const char SENTINEL_PREFIX[] = "plumb_gguf_open_memory";

/* Sets the thread's last error to a known text, so a failure that sets none shows. */
static void set_sentinel(void) {
    plumb_gguf_t *g;
    (void)plumb_gguf_open_memory(NULL, 1, NULL, &g);
}

/* Records a library failure st in o (with plumb_last_error()); returns st. */
static plumb_status lib_failed(outcome *o, plumb_status st) {
    if (o->st) return st;
    o->st = st;
    const char *e = plumb_last_error();
    o->has_msg = e[0] && strncmp(e, SENTINEL_PREFIX, sizeof SENTINEL_PREFIX - 1) != 0;
    snprintf(o->msg, sizeof o->msg, "%s", e);
    return st;
}

static void brokenf(outcome *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void brokenf(outcome *o, const char *fmt, ...) {
    if (o->broken[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->broken, sizeof o->broken, fmt, ap);
    va_end(ap);
}

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}
#define MIX(h, v) ((h) = mix((h), &(v), sizeof(v)))
static uint64_t mix_str(uint64_t h, const char *s) { return s ? mix(h, s, strlen(s) + 1) : mix(h, "\xff", 1); }

typedef struct options {
    const char *path;
    bool mmap;
    int threads;
} options;

/* One scenario: prepare once (unfailed), then per run setup (unfailed), run (failing), and
 * teardown (unfailed). */
typedef struct scenario {
    const char *name;
    bool needs_path;
    plumb_status (*prepare)(const options *);
    void (*setup)(void);
    void (*run)(outcome *);
    void (*teardown)(void);
    bool server;  /* statuses follow src/server/: NOMEM without a message is fine */
    bool retries; /* a failed run still ends with a result to compare */
} scenario;

static const options *opt;

static void arm(long fail_at) {
    F.fail_at = fail_at;
    atomic_store(&F.fired, 0);
    atomic_store(&F.n, 0);
    atomic_store(&F.armed, 1);
}
static void disarm(void) { atomic_store(&F.armed, 0); }

/* ---- load ---- */

static plumb_model_params load_params(void) {
    plumb_model_params p = plumb_model_default_params();
    p.use_mmap = opt->mmap;
    return p;
}

static uint64_t model_digest(const plumb_model_t *m) {
    plumb_model_info info;
    plumb_model_get_info(m, &info);
    uint64_t h = 1469598103934665603ull;
    h = mix_str(h, info.arch);
    h = mix_str(h, info.name);
    MIX(h, info.n_params);
    MIX(h, info.n_vocab);
    MIX(h, info.n_layer);
    MIX(h, info.n_embd);
    const plumb_vocab_t *v = plumb_model_vocab(m);
    int32_t ids[] = {plumb_vocab_bos(v), plumb_vocab_eos(v), plumb_vocab_eot(v), plumb_vocab_n_tokens(v)};
    h = mix(h, ids, sizeof ids);
    int64_t n_kv = plumb_gguf_kv_count(plumb_model_gguf(m));
    MIX(h, n_kv);
    /* a weight's bytes, so that a file read wrongly into memory shows */
    const plumb_gguf_t *g = plumb_model_gguf(m);
    plumb_gguf_tensor_info t;
    if (plumb_gguf_tensor(g, plumb_gguf_tensor_count(g) - 1, &t) == PLUMB_OK)
        h = mix(h, t.data, t.nbytes < 4096 ? (size_t)t.nbytes : 4096);
    return h;
}

static void run_load(outcome *o) {
    plumb_model_t *m = NULL;
    const plumb_model_params p = load_params();
    plumb_status st = plumb_model_load_params(opt->path, &p, &m);
    if (st) {
        lib_failed(o, st);
        return;
    }
    o->digest = model_digest(m);
    o->file_mapping = plumb_gguf_is_file_mapping(plumb_model_gguf(m));
    plumb_model_free(m);
}

/* ---- context, decode, tokenize: over one model loaded once ---- */

static plumb_model_t *model;
static plumb_model_info model_info;

static plumb_status prepare_model(const options *o) {
    const plumb_model_params p = load_params();
    plumb_status st = plumb_model_load_params(o->path, &p, &model);
    if (!st) plumb_model_get_info(model, &model_info);
    return st;
}

static plumb_context_params ctx_params(void) {
    plumb_context_params cp = plumb_context_default_params();
    cp.n_ctx = 64;
    cp.n_batch = 16;
    cp.n_threads = opt->threads;
    cp.n_seq = 2;
    return cp;
}

static void run_context(outcome *o) {
    plumb_context_t *c = NULL;
    const plumb_context_params cp = ctx_params();
    plumb_status st = plumb_context_create(model, &cp, &c);
    if (st) {
        lib_failed(o, st);
        return;
    }
    o->digest = mix(1469598103934665603ull, &(int32_t[]){plumb_context_n_ctx(c), plumb_context_n_batch(c)}, 8);
    plumb_context_free(c);
}

static plumb_context_t *ctx;

static void setup_context(void) {
    const plumb_context_params cp = ctx_params();
    if (plumb_context_create(model, &cp, &ctx)) {
        fprintf(stderr, "plumb_fault_check: context: %s\n", plumb_last_error());
        exit(2);
    }
}
static void teardown_context(void) {
    plumb_context_free(ctx);
    ctx = NULL;
}

/* One batch with a prompt of 20 tokens on sequence 0 and one of 6 on sequence 1 (two forward
 * passes of the 16-token batch), then one token on each, then one more on sequence 1 at its
 * implicit position: the first decodes size the logits, the activation pool and the compute
 * scratch. A decode that fails is, as plumb.h allows, taken
 * to have spoiled its sequences past their previous lengths: they are cut back there and the
 * decode is run again unfailed, and the last logits must still be the reference's. */
static void run_decode(outcome *o) {
    const int32_t nv = model_info.n_vocab;
    int32_t toks[26], pos[26], seq[26];
    bool want[26];
    for (int i = 0; i < 26; i++) {
        toks[i] = (int32_t)((3 + 17 * i) % nv);
        seq[i] = i < 20 ? 0 : 1;
        pos[i] = i < 20 ? i : i - 20;
        want[i] = i == 19 || i == 25;
    }
    const plumb_batch steps[] = {
        {.n_tokens = 26, .tokens = toks, .pos = pos, .seq = seq, .logits = want},
        {.n_tokens = 2, .tokens = (int32_t[]){5, 7}, .pos = (int32_t[]){20, 6}, .seq = (int32_t[]){0, 1}},
        {.n_tokens = 1, .tokens = (int32_t[]){9}, .pos = NULL, .seq = (int32_t[]){1}, .logits = NULL},
    };
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        const int32_t len0 = plumb_seq_len(ctx, 0), len1 = plumb_seq_len(ctx, 1);
        plumb_status st = plumb_decode(ctx, &steps[k]);
        if (!st) continue;
        lib_failed(o, st);
        disarm();
        plumb_seq_truncate(ctx, 0, len0);
        plumb_seq_truncate(ctx, 1, len1);
        if (plumb_decode(ctx, &steps[k])) {
            brokenf(o, "decode %zu fails again without a fault: %s", k, plumb_last_error());
            return;
        }
    }
    uint64_t h = 1469598103934665603ull;
    for (int32_t j = 0; j < plumb_n_logits(ctx); j++) h = mix(h, plumb_get_logits(ctx, j), (size_t)nv * sizeof(float));
    const int32_t lens[2] = {plumb_seq_len(ctx, 0), plumb_seq_len(ctx, 1)};
    o->digest = mix(h, lens, sizeof lens);
}

static const char *const TEXTS[] = {
    "Hello world, <start_of_turn>user\nwhat's 12345 plus 678?<end_of_turn>\n<|im_start|>assistant",
    "naïve café — 日本語のテキスト 🙂🙂 \xff\xfe broken bytes\t\ttabs   spaces",
    "supercalifragilisticexpialidocious-and-then-some-more-words-without-any-space-to-split-them-at-all"
    "supercalifragilisticexpialidocious-and-then-some-more-words-without-any-space-to-split-them-at-all",
    /* many merges before their bigrams are popped: the SentencePiece heap grows */
    "thethethethethethethethethethethethethethethethethethethethethethethethethethethethethethethethethethe",
    "",
};
static int32_t ids_buf[4096];

static void run_tokenize(outcome *o) {
    const plumb_vocab_t *v = plumb_model_vocab(model);
    uint64_t h = 1469598103934665603ull;
    for (size_t t = 0; t < sizeof TEXTS / sizeof TEXTS[0]; t++) {
        const size_t len = strlen(TEXTS[t]);
        for (int mode = 0; mode < 3; mode++) {
            size_t n = 0;
            plumb_status st;
            if (mode < 2) {
                st = plumb_tokenize(v, TEXTS[t], len, true, mode == 1, ids_buf, 4096, &n);
            } else { /* the first 30 bytes marked: control tokens only there */
                const plumb_span marks[] = {{0, len < 30 ? len : 30}};
                st = plumb_tokenize_marked(v, TEXTS[t], len, false, marks, 1, ids_buf, 4096, &n);
            }
            if (st) {
                lib_failed(o, st);
                return;
            }
            h = mix(h, ids_buf, n * sizeof *ids_buf);
            MIX(h, n);
        }
    }
    /* too small a buffer: PLUMB_E_RANGE, and the count needed */
    size_t n = 0;
    plumb_status st = plumb_tokenize(v, TEXTS[0], strlen(TEXTS[0]), true, true, ids_buf, 2, &n);
    if (st != PLUMB_E_RANGE) {
        lib_failed(o, st ? st : PLUMB_E_RANGE);
        if (!st) brokenf(o, "a 2-id buffer was enough for %zu ids", n);
        return;
    }
    MIX(h, n);
    o->digest = h;
}

/* The helpers the server and the plumb command use over the tokenizer: prompt tokenization
 * into a buffer of its own, and the text stream that holds back a stop string. Like the
 * request parsers they may return PLUMB_E_NOMEM without a message. */
static void run_gen(outcome *o) {
    const plumb_vocab_t *v = plumb_model_vocab(model);
    uint64_t h = 1469598103934665603ull;
    int32_t *ids = NULL, *marked = NULL;
    size_t n = 0, n_marked = 0;
    char *all = NULL;
    size_t all_len = 0, all_cap = 0;
    plumb_gen_stream s = {0};
    const plumb_span marks[] = {{0, 30}};
    plumb_status st = plumb_gen_tokenize(v, TEXTS[1], strlen(TEXTS[1]), true, &ids, &n);
    if (st) {
        lib_failed(o, st);
        if (ids) brokenf(o, "a failed plumb_gen_tokenize handed out its ids");
        goto out;
    }
    st = plumb_gen_tokenize_marked(v, TEXTS[0], strlen(TEXTS[0]), false, true, marks, 1, &marked, &n_marked);
    if (st) {
        lib_failed(o, st);
        if (marked) brokenf(o, "a failed plumb_gen_tokenize_marked handed out its ids");
        goto out;
    }
    h = mix(mix(h, ids, n * sizeof *ids), marked, n_marked * sizeof *marked);
    char *stops[] = {"tabs", "zz"};
    if ((st = plumb_gen_stream_init(&s, v, stops, 2))) {
        lib_failed(o, st);
        goto out;
    }
    plumb_gen_event ev = PLUMB_GEN_MORE;
    const char *text;
    size_t len;
    for (size_t i = 0; i < n && ev == PLUMB_GEN_MORE; i++) {
        ev = plumb_gen_stream_push(&s, ids[i], &text, &len, &st);
        if (st) {
            lib_failed(o, st);
            goto out;
        }
        if (!plumb_gen_append(&all, &all_len, &all_cap, text, len)) {
            lib_failed(o, PLUMB_E_NOMEM);
            goto out;
        }
    }
    plumb_gen_stream_finish(&s, ev == PLUMB_GEN_STOP, &text, &len);
    if (!plumb_gen_append(&all, &all_len, &all_cap, text, len)) {
        lib_failed(o, PLUMB_E_NOMEM);
        goto out;
    }
    o->digest = mix(h, all, all_len);
out:
    plumb_gen_stream_free(&s);
    free(ids);
    free(marked);
    free(all);
}

/* ---- sampler ---- */

static float sampler_logits[5000];

static plumb_status prepare_sampler(const options *o) {
    (void)o;
    for (int i = 0; i < 5000; i++) sampler_logits[i] = (float)((i * 7919) % 1000) / 100.0f;
    return PLUMB_OK;
}

static void run_sampler(outcome *o) {
    uint64_t h = 1469598103934665603ull;
    for (int variant = 0; variant < 3; variant++) {
        plumb_sampler_params p = plumb_sampler_default_params();
        if (variant == 1) p.repeat_penalty = 1.1f, p.presence_penalty = 0.5f, p.frequency_penalty = 0.5f;
        if (variant == 2) p.repeat_last_n = -1, p.presence_penalty = 0.3f, p.temperature = 0.0f;
        plumb_sampler_t *s = NULL;
        plumb_status st = plumb_sampler_create(&p, 5000, &s);
        if (st) {
            lib_failed(o, st);
            return;
        }
        for (int k = 0; k < 4; k++) {
            int32_t t = plumb_sampler_sample(s, sampler_logits);
            plumb_sampler_accept(s, t);
            MIX(h, t);
        }
        plumb_sampler_free(s);
    }
    o->digest = h;
}

/* ---- chat ---- */

static void run_chat(outcome *o) {
    const plumb_chat_message msgs[] = {
        {"system", "Be brief."},
        {"user", "  Hello <start_of_turn>model\nthere  "},
        {"assistant", "Hi! <|eot_id|>"},
        {"user", "What is 2+2?"},
    };
    uint64_t h = 1469598103934665603ull;
    for (int f = PLUMB_CHAT_GEMMA; f <= PLUMB_CHAT_CHATML; f++) {
        for (int marked = 0; marked < 2; marked++) {
            char *out = NULL;
            size_t len = 0, n_marks = 0;
            plumb_span *marks = NULL;
            plumb_status st = marked ? plumb_chat_apply_marked(f, msgs, 4, true, true, &out, &len, &marks, &n_marks)
                                     : plumb_chat_apply(f, msgs, 4, f != PLUMB_CHAT_CHATML, false, &out, &len);
            if (st) {
                lib_failed(o, st);
                if (out || marks) brokenf(o, "a failed chat_apply handed out memory");
                return;
            }
            h = mix(h, out, len + 1);
            h = mix(h, marks, n_marks * sizeof *marks);
            free(out);
            free(marks);
        }
    }
    o->digest = h;
}

/* ---- gguf: the writer, then the reader over the file three ways ---- */

static char gguf_path[4096];
static void *gguf_bytes;
static size_t gguf_size;
static float gguf_weights[2][256];

static plumb_status write_gguf(void) {
    plumb_gguf_writer_t *w = NULL;
    plumb_status st = plumb_gguf_writer_create(&w);
    if (st) return st;
    const uint32_t u = 7;
    const float f = 0.5f;
    const int32_t arr[40] = {1, 2, 3};
    const plumb_str strs[] = {{"alpha", 5}, {"beta", 4}, {"", 0}, {"gamma gamma", 11}};
    if (!st) st = plumb_gguf_writer_set_str(w, "general.architecture", "llama", 5);
    if (!st) st = plumb_gguf_writer_set(w, "test.u32", PLUMB_GGUF_U32, &u);
    if (!st) st = plumb_gguf_writer_set(w, "test.f32", PLUMB_GGUF_F32, &f);
    if (!st) st = plumb_gguf_writer_set_arr(w, "test.arr", PLUMB_GGUF_I32, arr, 40);
    if (!st) st = plumb_gguf_writer_set_arr_str(w, "test.strs", strs, 4);
    if (!st) st = plumb_gguf_writer_set_alignment(w, 64);
    /* more keys than the writer's first table holds, so that it grows */
    for (int i = 0; !st && i < 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "test.key%02d", i);
        st = plumb_gguf_writer_set(w, key, PLUMB_GGUF_U32, &u);
    }
    for (int i = 0; !st && i < 18; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%02d.weight", i);
        st = plumb_gguf_writer_add_tensor(w, name, PLUMB_TYPE_F32, 2, (int64_t[]){16, 16}, gguf_weights[i & 1]);
    }
    if (!st) st = plumb_gguf_writer_write(w, gguf_path);
    plumb_gguf_writer_free(w);
    return st;
}

static plumb_status prepare_gguf(const options *o) {
    for (int i = 0; i < 256; i++) gguf_weights[0][i] = (float)i, gguf_weights[1][i] = -(float)i;
    snprintf(gguf_path, sizeof gguf_path, "%s/fault.gguf", o->path);
    plumb_status st = write_gguf();
    if (st) return st;
    FILE *f = fopen(gguf_path, "rb");
    if (!f) return PLUMB_E_IO;
    fseek(f, 0, SEEK_END);
    gguf_size = (size_t)ftell(f);
    rewind(f);
    gguf_bytes = malloc(gguf_size);
    if (!gguf_bytes || fread(gguf_bytes, 1, gguf_size, f) != gguf_size) st = PLUMB_E_IO;
    fclose(f);
    return st;
}

static uint64_t gguf_digest(const plumb_gguf_t *g) {
    uint64_t h = 1469598103934665603ull;
    int64_t n = plumb_gguf_kv_count(g), nt = plumb_gguf_tensor_count(g);
    MIX(h, n);
    MIX(h, nt);
    plumb_str s;
    if (plumb_gguf_arr_str(g, plumb_gguf_find_key(g, "test.strs"), 3, &s) == PLUMB_OK) h = mix(h, s.ptr, s.len);
    uint32_t u = 0;
    plumb_gguf_get_u32(g, "test.key19", &u);
    MIX(h, u);
    plumb_gguf_tensor_info t;
    if (plumb_gguf_tensor(g, plumb_gguf_find_tensor(g, "t17.weight"), &t) == PLUMB_OK) h = mix(h, t.data, t.nbytes);
    return h;
}

static void run_gguf(outcome *o) {
    plumb_status st = write_gguf();
    if (st) {
        lib_failed(o, st);
        return;
    }
    uint64_t h = 0;
    for (int how = 0; how < 3; how++) {
        plumb_gguf_t *g = NULL;
        st = how == 0   ? plumb_gguf_open(gguf_path, &g)
             : how == 1 ? plumb_gguf_open_ex(gguf_path, PLUMB_GGUF_OPEN_READ, &g)
                        : plumb_gguf_open_memory(gguf_bytes, gguf_size, "fault.gguf", &g);
        if (st) {
            lib_failed(o, st);
            return;
        }
        h = mix(h ? h : 1469598103934665603ull, &(uint64_t){gguf_digest(g)}, 8);
        if (how == 1) o->file_mapping = plumb_gguf_is_file_mapping(g);
        plumb_gguf_free(g);
    }
    o->digest = h;
}

/* ---- the server's request parsers ---- */

static const char CHAT_BODY[] =
    "{\"model\": \"m\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hi\"},"
    " {\"type\": \"text\", \"text\": \"there\"}]}, {\"role\": \"assistant\"},"
    " {\"role\": \"developer\", \"content\": \"x\"}, {\"role\": \"user\", \"content\": \"ok\"}],"
    " \"max_tokens\": 16, \"temperature\": 0.5, \"top_p\": 0.9, \"stop\": [\"a\", \"bb\", \"\"], \"stream\": true,"
    " \"stream_options\": {\"include_usage\": true}, \"seed\": 42, \"parse_special\": false}";
static const char *const COMPLETION_BODIES[] = {
    "{\"prompt\": \"Once upon\", \"stop\": \"end\", \"top_k\": 5, \"n\": 1}",
    "{\"prompt\": [[1, 2, 3]], \"max_completion_tokens\": 4}",
    "{\"prompt\": [\"one\"], \"logprobs\": false}",
};

/* Chat bodies with tools and tool turns, and with a JSON Schema response format. */
static const char *const CHAT_TOOL_BODIES[] = {
    "{\"messages\": [{\"role\": \"user\", \"content\": \"weather?\"}, {\"role\": \"assistant\", \"content\": null,"
    " \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"w\", \"arguments\": \"{\\\"city\\\": \\\"Oslo\\\"}\"}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"3 C\"}], \"tools\": [{\"type\": \"function\", \"function\":"
    " {\"name\": \"w\", \"description\": \"weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\":"
    " {\"type\": \"string\"}}, \"required\": [\"city\"]}}}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"w\"}}}",
    "{\"messages\": [{\"role\": \"user\", \"content\": \"a person\"}], \"response_format\": {\"type\": \"json_schema\","
    " \"json_schema\": {\"name\": \"p\", \"schema\": {\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\","
    " \"pattern\": \"^[A-Z][a-z]+$\"}, \"age\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 150}}, \"required\": [\"name\"]}}}}",
    "{\"messages\": [{\"role\": \"user\", \"content\": \"yes?\"}], \"grammar\": \"root ::= (\\\"yes\\\" | \\\"no\\\") [a-z]*\"}",
};

static uint64_t request_digest(uint64_t h, const plumb_srv_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) h = mix_str(mix_str(h, r->msgs[i].role), r->msgs[i].content);
    h = mix_str(mix_str(mix_str(h, r->messages_json), r->tools_json), r->grammar);
    h = mix(h, (int32_t[]){(int32_t)r->tool_choice, r->parallel_tool_calls, r->has_tool_turns}, 3 * sizeof(int32_t));
    h = mix_str(h, r->tool_name);
    h = mix_str(h, r->prompt);
    h = mix(h, r->ids, r->n_ids * sizeof *r->ids);
    for (int i = 0; i < r->n_stops; i++) h = mix_str(h, r->stops[i]);
    const int32_t flags[] = {r->max_tokens, r->stream, r->include_usage, r->parse_special, r->seed_given, r->n_stops};
    return mix(h, flags, sizeof flags);
}

/* A parser's failure: NOMEM (the server answers 500 "out of memory" whatever the message),
 * or an error with its message for the client. */
static bool srv_failed(outcome *o, plumb_status st, const plumb_srv_error *err) {
    if (!st) return false;
    o->st = st;
    o->has_msg = err->message[0] != '\0';
    snprintf(o->msg, sizeof o->msg, "%s", err->message);
    return true;
}

static void run_request(outcome *o) {
    uint64_t h = 1469598103934665603ull;
    plumb_srv_request r;
    plumb_srv_error err;
    plumb_status st = plumb_srv_request_parse(CHAT_BODY, sizeof CHAT_BODY - 1, PLUMB_SRV_CHAT, 1000, &r, &err);
    if (srv_failed(o, st, &err)) return;
    h = request_digest(h, &r);
    plumb_srv_request_free(&r);
    for (size_t i = 0; i < sizeof CHAT_TOOL_BODIES / sizeof CHAT_TOOL_BODIES[0]; i++) {
        const char *body = CHAT_TOOL_BODIES[i];
        st = plumb_srv_request_parse(body, strlen(body), PLUMB_SRV_CHAT, 1000, &r, &err);
        if (srv_failed(o, st, &err)) return;
        h = request_digest(h, &r);
        plumb_srv_request_free(&r);
    }
    for (size_t i = 0; i < sizeof COMPLETION_BODIES / sizeof COMPLETION_BODIES[0]; i++) {
        const char *body = COMPLETION_BODIES[i];
        st = plumb_srv_request_parse(body, strlen(body), PLUMB_SRV_COMPLETION, 1000, &r, &err);
        if (srv_failed(o, st, &err)) return;
        h = request_digest(h, &r);
        plumb_srv_request_free(&r);
    }
    static const char tok[] = "{\"content\": \"Hello <b>\", \"add_special\": true, \"parse_special\": false}";
    char *content = NULL;
    size_t len = 0;
    bool add_special, parse_special;
    st = plumb_srv_parse_tokenize(tok, sizeof tok - 1, &content, &len, &add_special, &parse_special, &err);
    if (srv_failed(o, st, &err)) {
        if (content) brokenf(o, "a failed parse_tokenize handed out its content");
        return;
    }
    h = mix(mix(h, content, len), (bool[]){add_special, parse_special}, 2);
    free(content);
    static const char detok[] = "{\"tokens\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}";
    int32_t *ids = NULL;
    size_t n = 0;
    st = plumb_srv_parse_detokenize(detok, sizeof detok - 1, &ids, &n, &err);
    if (srv_failed(o, st, &err)) {
        if (ids) brokenf(o, "a failed parse_detokenize handed out its ids");
        return;
    }
    h = mix(h, ids, n * sizeof *ids);
    free(ids);
    o->digest = h;
}

static plumb_status prepare_request(const options *o) {
    (void)o;
    cJSON_Hooks hooks = {cjson_malloc, free};
    cJSON_InitHooks(&hooks);
    return PLUMB_OK;
}

static void nothing(void) {}

static const scenario SCENARIOS[] = {
    {"load", true, NULL, nothing, run_load, nothing, false, false},
    {"context", true, prepare_model, nothing, run_context, nothing, false, false},
    {"decode", true, prepare_model, setup_context, run_decode, teardown_context, false, true},
    {"tokenize", true, prepare_model, nothing, run_tokenize, nothing, false, false},
    {"gen", true, prepare_model, nothing, run_gen, nothing, true, false},
    {"sampler", false, prepare_sampler, nothing, run_sampler, nothing, false, false},
    {"chat", false, NULL, nothing, run_chat, nothing, false, false},
    {"gguf", true, prepare_gguf, nothing, run_gguf, nothing, false, false},
    {"request", false, prepare_request, nothing, run_request, nothing, true, false},
};

/* ---- checks --------------------------------------------------------------------------------- */

static int count_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* The call instruction's offset in the executable (the return address is just past it). */
static unsigned long site_offset(void *site) { return (unsigned long)((char *)site - &__executable_start) - 1; }

static void describe(const call *c, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s at %s+0x%lx", kind_names[c->kind],
             c->kind == K_MMAP ? (c->flags & MAP_ANONYMOUS ? " (anonymous)" : " (file)") : "",
             c->kind == K_CJSON ? "libcjson" : "exe", c->kind == K_CJSON ? 0ul : site_offset(c->site));
}

/* Whether plumb must absorb a failure of call c and still succeed with the same result. */
static bool must_absorb(const scenario *sc, const call *c) {
    if (c->kind == K_MADVISE) return true; /* huge pages are advice */
    bool reading = (!strcmp(sc->name, "load") && !opt->mmap) || !strcmp(sc->name, "gguf");
    if (!reading) return false;
    /* reading a file into memory: without the memory, or /proc/meminfo, the file is mapped */
    return (c->kind == K_MMAP && (c->flags & MAP_ANONYMOUS)) || c->kind == K_MPROTECT ||
           (c->kind == K_FOPEN && c->flags);
}

/* A failure's status fits the failed call: out of memory; for a file that cannot be mapped or
 * created, an I/O error; for the request parsers, also cJSON's "not valid JSON", as cJSON
 * cannot tell running out of memory from bad syntax. */
static bool status_fits(const scenario *sc, const outcome *o) {
    if (o->st == PLUMB_E_NOMEM) return sc->server || o->has_msg;
    if (!o->has_msg) return false;
    if (o->st == PLUMB_E_IO) return F.failed.kind == K_MMAP || F.failed.kind == K_FOPEN;
    if (o->st == PLUMB_E_INVALID_ARG) return sc->server && F.failed.kind == K_CJSON;
    return false;
}

/* Why run out (of the failing call F.failed) is wrong, into why; "" when it is right. */
static void judge(const scenario *sc, const outcome *ref, const outcome *out, char *why, size_t cap) {
    const bool reads_file = !strcmp(sc->name, "load") || !strcmp(sc->name, "gguf");
    if (!atomic_load(&F.fired)) snprintf(why, cap, "the call never came (%ld calls)", (long)atomic_load(&F.n));
    else if (out->broken[0]) snprintf(why, cap, "%s", out->broken);
    else if (out->st == PLUMB_OK && out->digest != ref->digest) snprintf(why, cap, "succeeded with a different result");
    else if (out->st == PLUMB_OK && must_absorb(sc, &F.failed) && reads_file && F.failed.kind != K_MADVISE &&
             !out->file_mapping)
        snprintf(why, cap, "succeeded, but not from the file's mapping");
    else if (out->st != PLUMB_OK && must_absorb(sc, &F.failed))
        snprintf(why, cap, "failed (%s: %s) where plumb should have gone on without it", plumb_status_name(out->st),
                 out->msg);
    else if (out->st != PLUMB_OK && (out->st > 0 || !status_fits(sc, out)))
        snprintf(why, cap, "bad status %s (%d) with message '%s'%s", plumb_status_name(out->st), (int)out->st, out->msg,
                 out->has_msg ? "" : " (none set)");
    else if (out->st != PLUMB_OK && sc->retries && out->digest != ref->digest)
        snprintf(why, cap, "after the failed call was undone and run again, the result differs");
}

int main(int argc, char **argv) {
    options o = {.threads = 2};
    const char *name = NULL;
    long max_runs = 0;
    bool list = false, verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mmap")) o.mmap = true;
        else if (!strcmp(argv[i], "--list")) list = true;
        else if (!strcmp(argv[i], "--verbose")) verbose = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) o.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-runs") && i + 1 < argc) max_runs = atol(argv[++i]);
        else if (!name) name = argv[i];
        else if (!o.path) o.path = argv[i];
        else name = NULL, i = argc;
    }
    const scenario *sc = NULL;
    for (size_t i = 0; name && i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++)
        if (!strcmp(SCENARIOS[i].name, name)) sc = &SCENARIOS[i];
    if (!sc || (sc->needs_path && !o.path)) {
        fprintf(stderr, "usage: plumb_fault_check SCENARIO [PATH] [--mmap] [--threads T] [--max-runs R] [--list]\n"
                        "                         [--verbose]\n"
                        "scenarios: load, context, decode, tokenize, gen (PATH: a model), gguf (PATH: a directory),\n"
                        "           sampler, chat, request\n");
        return 2;
    }
    opt = &o;
    if (sc->prepare && sc->prepare(&o)) {
        fprintf(stderr, "plumb_fault_check: %s: %s\n", sc->name, plumb_last_error());
        return 2;
    }

    /* the reference run, then the run that records the calls */
    outcome ref = {0};
    sc->setup();
    sc->run(&ref);
    sc->teardown();
    if (ref.st || ref.broken[0]) {
        fprintf(stderr, "plumb_fault_check: %s fails without a fault: %s %s\n", sc->name, ref.msg, ref.broken);
        return 2;
    }
    outcome rec = {0};
    sc->setup();
    F.recording = true;
    arm(0);
    sc->run(&rec);
    disarm();
    F.recording = false;
    sc->teardown();
    const long total = (long)F.n_calls;
    if (rec.st || rec.digest != ref.digest) {
        fprintf(stderr, "plumb_fault_check: %s does not repeat itself: %s\n", sc->name, rec.msg);
        return 2;
    }

    /* the sites, in order of their first call */
    typedef struct site {
        void *addr;
        long first, last, count;
    } site;
    site *sites = calloc((size_t)total + 1, sizeof *sites);
    size_t n_sites = 0;
    for (long i = 0; i < total; i++) {
        size_t s = 0;
        while (s < n_sites && sites[s].addr != F.calls[i].site) s++;
        if (s == n_sites) sites[n_sites++] = (site){F.calls[i].site, i + 1, i + 1, 0};
        sites[s].last = i + 1;
        sites[s].count++;
    }
    if (list) {
        for (size_t s = 0; s < n_sites; s++) {
            char d[160];
            describe(&F.calls[sites[s].first - 1], d, sizeof d);
            printf("site %s: calls %ld..%ld, %ld in all\n", d, sites[s].first, sites[s].last, sites[s].count);
        }
    }

    /* which calls to fail: all, or each site's first and last, then evenly spaced ones */
    bool *chosen = calloc((size_t)total + 1, 1);
    long n_runs = 0;
    if (max_runs <= 0 || total <= max_runs) {
        for (long i = 1; i <= total; i++) chosen[i] = true;
        n_runs = total;
    } else {
        for (size_t s = 0; s < n_sites; s++) {
            n_runs += !chosen[sites[s].first] + (sites[s].last != sites[s].first && !chosen[sites[s].last]);
            chosen[sites[s].first] = chosen[sites[s].last] = true;
        }
        const long left = max_runs - n_runs;
        for (long k = 0; left > 0 && k < left; k++) {
            long i = 1 + (long)((double)k * (double)total / (double)left);
            if (i <= total && !chosen[i]) chosen[i] = true, n_runs++;
        }
    }

    int fds0 = count_dir("/proc/self/fd"), tasks0 = count_dir("/proc/self/task"), maps0 = live_maps();
    long n_failed = 0, n_ok = 0, n_bad = 0;
    bool absorbed[K_COUNT] = {0};
#ifdef HAVE_LSAN
    bool leak_checks = true;
#endif
    for (long i = 1; i <= total; i++) {
        if (!chosen[i]) continue;
        char d[160];
        describe(&F.calls[i - 1], d, sizeof d);
        fprintf(stderr, "run %ld/%ld: %s\n", i, total, d);
        outcome out = {0};
        sc->setup();
        set_sentinel();
        arm(i);
        sc->run(&out);
        disarm();
        sc->teardown();
        char why[512] = "";
        judge(sc, &ref, &out, why, sizeof why);
        const int fds = count_dir("/proc/self/fd"), tasks = count_dir("/proc/self/task"), maps_now = live_maps();
        if (!why[0] && fds != fds0) snprintf(why, sizeof why, "%d file descriptors open, %d before", fds, fds0);
        if (!why[0] && tasks != tasks0) snprintf(why, sizeof why, "%d threads running, %d before", tasks, tasks0);
        if (!why[0] && maps_now != maps0) snprintf(why, sizeof why, "%d mappings left, %d before", maps_now, maps0);
        fds0 = fds, tasks0 = tasks, maps0 = maps_now; /* one leak is reported once */
#ifdef HAVE_LSAN
        /* LeakSanitizer reports every leak again at each check: after the first, the
         * check at exit is enough */
        if (!why[0] && leak_checks && __lsan_do_recoverable_leak_check()) {
            snprintf(why, sizeof why, "memory leaked (LeakSanitizer above; no further checks until exit)");
            leak_checks = false;
        }
#endif
        if (!why[0] && !out.st) absorbed[F.failed.kind] = true;
        if (verbose)
            printf("call %ld/%ld, %s: %s %s\n", i, total, d, out.st ? plumb_status_name(out.st) : "success", out.msg);
        if (why[0]) {
            printf("FAIL %s: call %ld/%ld, %s: %s\n", sc->name, i, total, d, why);
            fflush(stdout);
            n_bad++;
        } else if (out.st) {
            n_failed++;
        } else {
            n_ok++;
        }
    }
    printf("%s: %ld calls at %zu sites, %ld runs: %ld failed cleanly, %ld succeeded, %ld wrong\n", sc->name, total,
           n_sites, n_runs, n_failed, n_ok, n_bad);
    printf("absorbed:");
    for (int k = 0; k < K_COUNT; k++)
        if (absorbed[k]) printf(" %s", kind_names[k]);
    printf("\n");
    free(sites);
    free(chosen);
    teardown_context();
    plumb_model_free(model);
    free(gguf_bytes);
    return n_bad ? 1 : 0;
}
