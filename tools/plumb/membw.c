/* membw.c — streaming read bandwidth with n threads over one large buffer (membw.h), in
 * memory like the weights' (2 MiB-aligned, advised for transparent huge pages, core/huge_map.h:
 * 4 KiB pages read about 8% slower on an EPYC, which would understate the roofline).
 *
 * Each thread folds its slice together (xor) with the widest loads the CPU offers, four
 * independent accumulators deep, so the loop is limited by memory and not by the ALU. The
 * results go to a volatile sink so the reads cannot be optimized away. */
#include "membw.h"

#include "core/huge_map.h"
#include "plumb.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MEMBW_X86 1
#endif

#define MEMBW_CHUNK 256 /* bytes per loop iteration of every reader */

struct membw {
    char *buf; /* [bytes], 2 MiB aligned, every page written */
    size_t bytes;
    void *map; /* for munmap */
    size_t map_size;
};

typedef uint64_t (*read_fn)(const char *p, size_t n);

#ifdef MEMBW_X86
__attribute__((target("avx512f"))) static uint64_t read_avx512(const char *p, size_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += MEMBW_CHUNK) {
        a0 = _mm512_xor_si512(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_xor_si512(a1, _mm512_load_si512((const void *)(p + i + 64)));
        a2 = _mm512_xor_si512(a2, _mm512_load_si512((const void *)(p + i + 128)));
        a3 = _mm512_xor_si512(a3, _mm512_load_si512((const void *)(p + i + 192)));
    }
    uint64_t lanes[8];
    _mm512_storeu_si512((void *)lanes, _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)));
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x ^= lanes[i];
    return x;
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const char *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += MEMBW_CHUNK) {
        const __m256i *q = (const __m256i *)(const void *)(p + i);
        a0 = _mm256_xor_si256(a0, _mm256_xor_si256(_mm256_load_si256(q + 0), _mm256_load_si256(q + 1)));
        a1 = _mm256_xor_si256(a1, _mm256_xor_si256(_mm256_load_si256(q + 2), _mm256_load_si256(q + 3)));
        a2 = _mm256_xor_si256(a2, _mm256_xor_si256(_mm256_load_si256(q + 4), _mm256_load_si256(q + 5)));
        a3 = _mm256_xor_si256(a3, _mm256_xor_si256(_mm256_load_si256(q + 6), _mm256_load_si256(q + 7)));
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)(void *)lanes, _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3)));
    return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
}

static uint64_t read_sse2(const char *p, size_t n) {
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += MEMBW_CHUNK) {
        for (size_t j = 0; j < MEMBW_CHUNK; j += 64) {
            const __m128i *q = (const __m128i *)(const void *)(p + i + j);
            a0 = _mm_xor_si128(a0, _mm_load_si128(q + 0));
            a1 = _mm_xor_si128(a1, _mm_load_si128(q + 1));
            a2 = _mm_xor_si128(a2, _mm_load_si128(q + 2));
            a3 = _mm_xor_si128(a3, _mm_load_si128(q + 3));
        }
    }
    uint64_t lanes[2];
    _mm_storeu_si128((__m128i *)(void *)lanes, _mm_xor_si128(_mm_xor_si128(a0, a1), _mm_xor_si128(a2, a3)));
    return lanes[0] ^ lanes[1];
}
#else
static uint64_t read_plain(const char *p, size_t n) {
    uint64_t a[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, sizeof w);
        for (int k = 0; k < 4; k++) a[k] ^= w[k];
    }
    return a[0] ^ a[1] ^ a[2] ^ a[3];
}
#endif

static read_fn pick_reader(void) {
#ifdef MEMBW_X86
    const plumb_cpu_features *f = plumb_cpu_get();
    if (f->avx512f) return read_avx512;
    if (f->avx2) return read_avx2;
    return read_sse2;
#else
    return read_plain;
#endif
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

membw *membw_create(size_t bytes) {
    if (bytes < ((size_t)1 << 20)) bytes = (size_t)1 << 20;
    bytes &= ~(size_t)4095;
    membw *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->buf = plumb__huge_map(bytes, &m->map, &m->map_size);
    if (!m->buf) {
        free(m);
        return NULL;
    }
    /* distinct non-zero bytes: no page may stay a shared zero page */
    for (size_t i = 0; i < bytes; i += 4096) memset(m->buf + i, (int)(1 + (i >> 12) % 251), 4096);
    m->bytes = bytes;
    return m;
}

void membw_free(membw *m) {
    if (!m) return;
    if (m->map) munmap(m->map, m->map_size);
    free(m);
}

size_t membw_bytes(const membw *m) { return m->bytes; }

/* The readers wait at a gate until every one of them exists (or one could not be started:
 * then they all leave), then meet at barriers around every pass. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 0 closed, 1 open, -1 abandoned */
} gate;

typedef struct reader {
    const char *p; /* this thread's slice, [n] bytes, n a multiple of MEMBW_CHUNK */
    size_t n;
    int cpu, passes;
    read_fn fn;
    gate *g;
    pthread_barrier_t *ready, *start, *end;
} reader;

static int gate_pass(gate *g) {
    pthread_mutex_lock(&g->mu);
    while (g->state == 0) pthread_cond_wait(&g->cv, &g->mu);
    const int s = g->state;
    pthread_mutex_unlock(&g->mu);
    return s;
}

static void gate_set(gate *g, int state) {
    pthread_mutex_lock(&g->mu);
    g->state = state;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static volatile uint64_t membw_sink;

static void *reader_main(void *arg) {
    reader *r = arg;
    if (r->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(r->cpu, &set);
        (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set); /* best effort */
    }
    if (gate_pass(r->g) < 0) return NULL;
    uint64_t sum = 0;
    pthread_barrier_wait(r->ready);
    for (int k = 0; k < r->passes; k++) {
        pthread_barrier_wait(r->start);
        sum ^= r->fn(r->p, r->n);
        pthread_barrier_wait(r->end);
    }
    membw_sink ^= sum;
    return NULL;
}

double membw_measure(membw *m, int n_threads, int passes) {
    if (!m || n_threads < 1 || n_threads > 512 || passes < 1) return -1.0;
    const size_t per = m->bytes / (size_t)n_threads / MEMBW_CHUNK * MEMBW_CHUNK;
    if (per == 0) return -1.0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    reader *rs = calloc((size_t)n_threads, sizeof *rs);
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    pthread_barrier_t ready, start, end;
    gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .state = 0};
    double best = -1.0;
    if (!rs || !th) goto out_free;
    pthread_barrier_init(&ready, NULL, (unsigned)n_threads + 1);
    pthread_barrier_init(&start, NULL, (unsigned)n_threads + 1);
    pthread_barrier_init(&end, NULL, (unsigned)n_threads + 1);
    const read_fn fn = pick_reader();
    int started = 0;
    for (int i = 0; i < n_threads; i++) {
        rs[i] = (reader){.p = m->buf + (size_t)i * per, .n = per, .cpu = ncpu > 0 ? (int)(i % ncpu) : -1,
                         .passes = passes, .fn = fn, .g = &g, .ready = &ready, .start = &start, .end = &end};
        if (pthread_create(&th[i], NULL, reader_main, &rs[i]) != 0) break;
        started++;
    }
    gate_set(&g, started == n_threads ? 1 : -1);
    if (started == n_threads) {
        pthread_barrier_wait(&ready);
        for (int k = 0; k < passes; k++) {
            const double t0 = now_seconds();
            pthread_barrier_wait(&start);
            pthread_barrier_wait(&end);
            const double dt = now_seconds() - t0;
            const double gbs = dt > 0 ? (double)per * (double)n_threads / dt / 1e9 : -1.0;
            if (gbs > best) best = gbs;
        }
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&ready);
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&end);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
out_free:
    free(rs);
    free(th);
    return best;
}
