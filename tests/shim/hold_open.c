/* hold_open.c — an LD_PRELOAD library for tests: open() of a path ending in ".held.gguf"
 * waits until a file named like it with ".go" appended exists, then opens as usual. A test
 * holds `plumb serve` in its loading state with it, and lets it go when it likes, without
 * any hook in plumb itself. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int (*open_fn)(const char *, int, ...);

static void hold(const char *path) {
    size_t n = strlen(path);
    static const char suffix[] = ".held.gguf";
    if (n < sizeof suffix - 1 || strcmp(path + n - (sizeof suffix - 1), suffix) != 0) return;
    char go[4096];
    snprintf(go, sizeof go, "%s.go", path);
    struct stat sb;
    const struct timespec tick = {0, 20 * 1000 * 1000};
    while (stat(go, &sb) != 0) nanosleep(&tick, NULL);
}

static int forward(const char *name, const char *path, int flags, mode_t mode) {
    hold(path);
    open_fn real = (open_fn)dlsym(RTLD_NEXT, name);
    return real(path, flags, mode);
}

/* The mode argument is there only when the flags create a file. */
#define OPEN_WRAPPER(name)                                                                        \
    int name(const char *path, int flags, ...) {                                                  \
        mode_t mode = 0;                                                                          \
        if (flags & (O_CREAT | O_TMPFILE)) {                                                      \
            va_list ap;                                                                           \
            va_start(ap, flags);                                                                  \
            mode = (mode_t)va_arg(ap, int);                                                       \
            va_end(ap);                                                                           \
        }                                                                                         \
        return forward(#name, path, flags, mode);                                                 \
    }

OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)
