/* progress.c — transfer progress of blobs on stderr, for pulls and pushes. On a terminal one
 * line per blob is redrawn in place (\r, at most 10 times a second): bytes done and total,
 * percent, rate and ETA, ending as a summary at 100%. Without a terminal no \r is written:
 * one summary line per blob when it is done, and for a transfer that runs longer than 10 s a
 * line at each 10% step at most every 10 s; so a transfer that fails prints nothing of its
 * own and the error stays one line. PLUMB_PROGRESS=0 turns all of it off. */
#include "oci/oci.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

enum { MODE_OFF, MODE_LINES, MODE_BAR };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int mode(void) {
    const char *e = getenv("PLUMB_PROGRESS");
    if (e && strcmp(e, "0") == 0) return MODE_OFF;
    return isatty(STDERR_FILENO) ? MODE_BAR : MODE_LINES;
}

bool oci_progress_enabled(void) {
    return mode() != MODE_OFF;
}

const char *oci_media_kind(const char *media_type) {
    if (!media_type) return "blob";
    if (strcmp(media_type, OCI_MT_GGUF) == 0) return "gguf";
    if (strcmp(media_type, OCI_MT_LICENSE) == 0) return "license";
    if (strcmp(media_type, OCI_MT_TEMPLATE) == 0) return "template";
    if (strstr(media_type, ".config.")) return "config";
    if (strcmp(media_type, OCI_MT_MANIFEST) == 0) return "manifest";
    return "blob";
}

/* "241.4 MiB" */
static void human(double b, char *buf, size_t n) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024.0 && u < 4) b /= 1024.0, u++;
    if (u == 0) snprintf(buf, n, "%.0f B", b);
    else snprintf(buf, n, "%.1f %s", b, unit[u]);
}

/* "1:05" or "1:02:03"; "-:--" when unknown */
static void clock_text(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 359999) {
        snprintf(buf, n, "-:--");
        return;
    }
    unsigned long t = (unsigned long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%lu:%02lu", t / 60, t % 60);
}

/* "gguf     0123456789ab": the kind and the digest's first 12 hex digits */
static void label(char *buf, size_t n, const char *media_type, const char *digest) {
    const char *hex = digest && strncmp(digest, "sha256:", 7) == 0 ? digest + 7 : digest ? digest : "";
    snprintf(buf, n, "%-8s %.12s", oci_media_kind(media_type), hex);
}

void oci_progress_begin(oci_progress *p, const char *verb, const char *media_type, const char *digest,
                        uint64_t total, uint64_t done) {
    memset(p, 0, sizeof *p);
    p->mode = mode();
    p->verb = verb;
    label(p->label, sizeof p->label, media_type, digest);
    p->total = total;
    p->start_done = p->done = done > total ? total : done;
    p->t0 = now_s();
    p->t_line = p->t0;
    p->decile = (int)(total ? p->done * 10 / total : 0);
}

/* The bar's text: label, verb, bytes, percent, rate, then ETA (running) or time (final). */
static void render(const oci_progress *p, bool final, char *buf, size_t n) {
    double el = now_s() - p->t0;
    double moved = (double)(p->done - p->start_done);
    double rate = el > 0 ? moved / el : 0;
    char d[32], t[32], r[32], eta[32];
    human((double)p->done, d, sizeof d);
    human((double)p->total, t, sizeof t);
    human(rate, r, sizeof r);
    int pct = p->total ? (int)((double)p->done * 100.0 / (double)p->total) : 100;
    if (final) {
        clock_text(el, eta, sizeof eta);
        snprintf(buf, n, "%s %sed %s / %s %3d%% %s/s in %s", p->label, p->verb, d, t, pct, r, eta);
    } else {
        clock_text(rate > 0 ? (double)(p->total - p->done) / rate : -1, eta, sizeof eta);
        snprintf(buf, n, "%s %sing %s / %s %3d%% %s/s ETA %s", p->label, p->verb, d, t, pct, r, eta);
    }
}

static int term_cols(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

static void draw(oci_progress *p, bool final) {
    char line[512];
    render(p, final, line, sizeof line);
    size_t cols = (size_t)term_cols() - 1; /* never wrap: \r must reach the line's start */
    if (strlen(line) > cols) line[cols] = 0;
    fprintf(stderr, "\r%s\x1b[K%s", line, final ? "\n" : "");
    fflush(stderr);
    p->shown = !final;
}

void oci_progress_update(oci_progress *p, uint64_t done) {
    if (p->mode == MODE_OFF || p->ended) return;
    if (done > p->total) done = p->total;
    if (done < p->start_done) done = p->start_done; /* a retried request counts from its start */
    p->done = done;
    double t = now_s();
    if (p->mode == MODE_BAR) {
        if (p->shown && t - p->t_draw < 0.1) return;
        p->t_draw = t;
        draw(p, false);
        return;
    }
    int dec = (int)(p->total ? done * 10 / p->total : 10);
    if (dec > p->decile && dec < 10 && t - p->t_line >= 10.0) {
        p->decile = dec;
        p->t_line = t;
        char line[512];
        render(p, false, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
}

void oci_progress_end(oci_progress *p, bool ok) {
    if (p->mode == MODE_OFF || p->ended) return;
    p->ended = true;
    if (p->mode == MODE_BAR) {
        if (ok) {
            p->done = p->total;
            draw(p, true);
        } else if (p->shown) {
            fputc('\n', stderr); /* keep the bar where it stopped; the error goes below it */
        }
        fflush(stderr);
        return;
    }
    if (ok) {
        char line[512];
        p->done = p->total;
        render(p, true, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
}

void oci_progress_note(const char *media_type, const char *digest, const char *fmt, ...) {
    if (mode() == MODE_OFF) return;
    char l[64], text[512];
    label(l, sizeof l, media_type, digest);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s %s\n", l, text);
}
