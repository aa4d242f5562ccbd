/* cpu_count.h — how many CPUs this process may use: the CPUs of its affinity mask (taskset,
 * cpusets), further limited by the CPU quota of its cgroup v2 (a container's --cpus), rather
 * than every online CPU. The default thread count of a context (src/runtime/context.c) and
 * of `plumb bench` come from here. The parsers are separate from the file reading so that
 * tests can feed them text. */
#ifndef PLUMB_CORE_CPU_COUNT_H
#define PLUMB_CORE_CPU_COUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct plumb_cpu_count {
    int32_t online;   /* online CPUs (sysconf), at least 1 */
    int32_t affinity; /* CPUs in the calling thread's affinity mask (online when unknown) */
    int32_t quota;    /* the cgroup v2 CPU quota rounded up (the smallest along the cgroup's
                         path to the root); 0: no quota, or none found */
    int32_t n;        /* the threads to use: affinity, at most quota when there is one;
                         1 to 512 */
} plumb_cpu_count;

/* Fills *out from the affinity mask, /proc/self/cgroup and the cpu.max files under
 * /sys/fs/cgroup. Never fails: what cannot be read counts as no limit. */
void plumb__cpu_count(plumb_cpu_count *out);

/* The CPUs a cpu.max file's text allows: "max 100000" (or "max"): 0, no limit;
 * "150000 100000": ceil(150000 / 100000) = 2, and at least 1; -1 when the text is not of that
 * form (a trailing newline is allowed). */
int32_t plumb__cpu_max_parse(const char *text);

/* The cgroup v2 path of the process from the text of /proc/self/cgroup: the path of its
 * "0::" line ("/system.slice/x.service"), copied into out[cap]. false when there is no such
 * line (a cgroup v1 only system) or it does not fit. */
bool plumb__cgroup2_path(const char *proc_self_cgroup, char *out, size_t cap);

#endif
