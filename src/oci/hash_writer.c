/* hash_writer.c — a download's bytes written to its file and hashed on a second thread, so
 * SHA-256 (the verification every blob gets) runs while the network delivers the next bytes
 * instead of after them. The receiving thread only copies into one of a few buffers; the
 * writer thread takes full buffers in order, writes and hashes them. */
#include "oci/oci.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define HW_BUFS 8
#define HW_BUF_SIZE (1u << 20)

struct oci_hash_writer {
    FILE *f;
    oci_sha256 *h;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t filled, emptied;
    unsigned char *buf[HW_BUFS];
    size_t len[HW_BUFS];
    bool full[HW_BUFS];
    int fill;    /* the buffer the receiving thread copies into */
    int drain;   /* the next buffer the writer takes */
    bool done;   /* no more bytes: the writer ends after the full buffers */
    bool failed; /* a write failed */
};

static void *writer_main(void *u) {
    oci_hash_writer *w = u;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->full[w->drain] && !w->done) pthread_cond_wait(&w->filled, &w->mu);
        if (!w->full[w->drain]) break; /* done, and nothing left */
        int i = w->drain;
        pthread_mutex_unlock(&w->mu);
        bool ok = fwrite(w->buf[i], 1, w->len[i], w->f) == w->len[i];
        oci_sha256_update(w->h, w->buf[i], w->len[i]);
        pthread_mutex_lock(&w->mu);
        if (!ok) w->failed = true;
        w->full[i] = false;
        w->len[i] = 0;
        w->drain = (i + 1) % HW_BUFS;
        pthread_cond_signal(&w->emptied);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void writer_free(oci_hash_writer *w) {
    for (int i = 0; i < HW_BUFS; i++) free(w->buf[i]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->filled);
    pthread_cond_destroy(&w->emptied);
    free(w);
}

oci_hash_writer *oci_hash_writer_start(FILE *f, oci_sha256 *h) {
    oci_hash_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->f = f;
    w->h = h;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->filled, NULL);
    pthread_cond_init(&w->emptied, NULL);
    for (int i = 0; i < HW_BUFS; i++)
        if (!(w->buf[i] = malloc(HW_BUF_SIZE))) {
            writer_free(w);
            return NULL;
        }
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        writer_free(w);
        return NULL;
    }
    return w;
}

/* Hands the buffer being filled to the writer (the lock is held). */
static void hand_over(oci_hash_writer *w) {
    w->full[w->fill] = true;
    w->fill = (w->fill + 1) % HW_BUFS;
    pthread_cond_signal(&w->filled);
}

bool oci_hash_writer_put(oci_hash_writer *w, const void *p, size_t n) {
    const unsigned char *src = p;
    pthread_mutex_lock(&w->mu);
    while (n && !w->failed) {
        while (w->full[w->fill]) pthread_cond_wait(&w->emptied, &w->mu);
        int i = w->fill;
        size_t k = HW_BUF_SIZE - w->len[i];
        if (k > n) k = n;
        /* the writer never touches a buffer that is not full: copy without the lock */
        pthread_mutex_unlock(&w->mu);
        memcpy(w->buf[i] + w->len[i], src, k);
        pthread_mutex_lock(&w->mu);
        w->len[i] += k;
        src += k;
        n -= k;
        if (w->len[i] == HW_BUF_SIZE) hand_over(w);
    }
    bool ok = !w->failed;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

bool oci_hash_writer_finish(oci_hash_writer *w) {
    pthread_mutex_lock(&w->mu);
    if (w->len[w->fill] > 0) hand_over(w);
    w->done = true;
    pthread_cond_signal(&w->filled);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    bool ok = !w->failed;
    writer_free(w);
    return ok;
}
