/* cpu_count.c — the CPUs this process may use (see cpu_count.h): its affinity mask, limited
 * by the cgroup v2 CPU quota. A container given 2 CPUs of a 64-CPU host sees 64 online CPUs;
 * 64 threads there would spin-wait on each other in every barrier of a forward pass. */
#include "core/cpu_count.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CPU_COUNT_MAX 512 /* the most threads a context takes */

/* Reads at most cap-1 bytes of a small file into buf, NUL-terminated; false when it cannot. */
static bool read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    return n > 0;
}

/* A run of decimal digits at *p as an unsigned number (advancing *p); false when there are
 * none or it overflows. */
static bool parse_digits(const char **p, unsigned long long *out) {
    const char *s = *p;
    unsigned long long v = 0;
    if (*s < '0' || *s > '9') return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        const unsigned long long d = (unsigned long long)(*s - '0');
        if (v > (ULLONG_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return true;
}

int32_t plumb__cpu_max_parse(const char *text) {
    const char *p = text;
    unsigned long long quota = 0, period = 100000; /* the kernel's default period */
    const bool unlimited = strncmp(p, "max", 3) == 0;
    if (unlimited) p += 3;
    else if (!parse_digits(&p, &quota)) return -1;
    if (*p == ' ') {
        p++;
        if (!parse_digits(&p, &period)) return -1;
    }
    if (*p == '\n') p++;
    if (*p || period == 0) return -1;
    if (unlimited) return 0;
    const unsigned long long cpus = quota / period + (quota % period != 0);
    return cpus < 1 ? 1 : cpus > INT32_MAX ? INT32_MAX : (int32_t)cpus;
}

bool plumb__cgroup2_path(const char *text, char *out, size_t cap) {
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        const size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len >= 3 && memcmp(line, "0::", 3) == 0) {
            if (len - 3 + 1 > cap || len == 3) return false;
            memcpy(out, line + 3, len - 3);
            out[len - 3] = '\0';
            return true;
        }
        line = end ? end + 1 : NULL;
    }
    return false;
}

/* The smallest quota of the cgroup at `path` and its ancestors (0: none). A parent's quota
 * limits its children too, and a container's own cgroup may sit below the one that has it. */
static int32_t cgroup2_quota(const char *path) {
    char dir[PATH_MAX], file[PATH_MAX + 16], text[64];
    if (snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", strcmp(path, "/") ? path : "") >= (int)sizeof dir) return 0;
    int32_t best = 0;
    for (;;) {
        snprintf(file, sizeof file, "%s/cpu.max", dir);
        const int32_t q = read_small(file, text, sizeof text) ? plumb__cpu_max_parse(text) : 0;
        if (q > 0 && (best == 0 || q < best)) best = q;
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir || strcmp(dir, "/sys/fs/cgroup") == 0) break;
        *slash = '\0';
    }
    return best;
}

/* CPUs in the calling thread's affinity mask; 0 when it cannot be read. The mask is sized
 * for the machine: cpu_set_t alone holds only 1024 CPUs. */
static int32_t affinity_count(void) {
    for (int ncpu = 1024; ncpu <= (1 << 16); ncpu *= 4) {
        cpu_set_t *set = CPU_ALLOC((size_t)ncpu);
        if (!set) return 0;
        const size_t size = CPU_ALLOC_SIZE((size_t)ncpu);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            const int n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return n;
        }
        const int err = errno;
        CPU_FREE(set);
        if (err != EINVAL) return 0;
    }
    return 0;
}

void plumb__cpu_count(plumb_cpu_count *out) {
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    out->online = online > 0 ? (online > INT32_MAX ? INT32_MAX : (int32_t)online) : 1;
    const int32_t aff = affinity_count();
    out->affinity = aff > 0 ? aff : out->online;
    out->quota = 0;
    char text[4096], path[PATH_MAX];
    if (read_small("/proc/self/cgroup", text, sizeof text) && plumb__cgroup2_path(text, path, sizeof path))
        out->quota = cgroup2_quota(path);
    int32_t n = out->affinity;
    if (out->quota > 0 && out->quota < n) n = out->quota;
    out->n = n < 1 ? 1 : n > CPU_COUNT_MAX ? CPU_COUNT_MAX : n;
}
