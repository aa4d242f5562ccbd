/* text.c — text helpers for the plumb command: error lines, escaped strings, UTF-8 repair,
 * reading a whole stream. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void cli_errorf(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "plumb %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void cli_error(const char *cmd, plumb_status st, const char *msg) {
    const char *detail = msg ? msg : plumb_last_error();
    if (!detail || !*detail) detail = plumb_status_message(st);
    fprintf(stderr, "plumb %s: %s\n", cmd, detail);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *s, uint64_t left) {
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) n = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, min = 0x10000;
    else return 0;
    if (left < n) return 0;
    unsigned cp = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

void cli_print_quoted(FILE *f, const char *s, uint64_t len, uint64_t max_bytes) {
    const unsigned char *p = (const unsigned char *)s;
    uint64_t end = (max_bytes && len > max_bytes) ? max_bytes : len;
    fputc('"', f);
    for (uint64_t i = 0; i < end;) {
        unsigned c = p[i];
        size_t n = utf8_seq(p + i, len - i);
        if (n > 1) {
            fwrite(p + i, 1, n, f);
            i += n;
            continue;
        }
        if (n == 0) fprintf(f, "\\x%02x", c);
        else if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\x%02x", c);
        else fputc((int)c, f);
        i++;
    }
    fputc('"', f);
    if (end < len) fprintf(f, "... (%llu bytes)", (unsigned long long)len);
}

char *cli_utf8_sanitize(const char *s, uint64_t len) {
    if (len > (SIZE_MAX - 1) / 3) return NULL;
    char *out = malloc((size_t)len * 3 + 1); /* each bad byte becomes 3 bytes of U+FFFD */
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (uint64_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0 || p[i] == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    return out;
}

char *cli_read_all(FILE *f, size_t max, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    errno = 0;
    for (;;) {
        if (n == cap - 1) { /* full but for the NUL */
            char *grown = NULL;
            if (n > max) errno = EFBIG;
            else if (cap > SIZE_MAX / 2) errno = ENOMEM;
            else grown = realloc(buf, cap * 2);
            if (!grown) goto fail;
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) break;
    }
    /* fopen takes a directory; only reading it fails, and the short fread does not say so */
    if (ferror(f)) {
        if (!errno) errno = EIO;
        goto fail;
    }
    if (n > max) {
        errno = EFBIG;
        goto fail;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
fail: {
    const int err = errno; /* for the caller's message, whatever free does */
    free(buf);
    errno = err;
    return NULL;
}
}
