/* log.c — whole-line writes to stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

void plumb_srv_log(const char *fmt, ...) {
    char line[1024];
    int n = snprintf(line, sizeof line, "plumb serve: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m < sizeof line - (size_t)n - 1 ? (size_t)m : sizeof line - (size_t)n - 2);
    line[len++] = '\n';
    for (size_t at = 0; at < len;) { /* stderr is unbuffered; one write keeps the line whole */
        ssize_t w = write(STDERR_FILENO, line + at, len - at);
        if (w <= 0) break;
        at += (size_t)w;
    }
}
