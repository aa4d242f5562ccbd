/* membw.h — the machine's streaming read bandwidth, measured the way a memory-bound decode
 * step reads weights: every thread streams its own contiguous slice of a buffer far larger
 * than the caches (used by `plumb bench` to place results against the roofline). */
#ifndef PLUMB_CLI_MEMBW_H
#define PLUMB_CLI_MEMBW_H

#include <stddef.h>

typedef struct membw membw;

/* Allocates a buffer of `bytes` (rounded down to a multiple of 4 KiB; at least 1 MiB) and
 * writes every page of it, so that later reads never fault. NULL when out of memory. */
membw *membw_create(size_t bytes);
void membw_free(membw *m);
size_t membw_bytes(const membw *m);
/* Reads the whole buffer `passes` times with n_threads threads (thread i pinned to CPU i
 * modulo the online CPUs, each reading 1/n_threads of the buffer) and returns the best
 * pass's bytes per second in GB/s (1e9 bytes), or a negative value when the threads could
 * not be started. Loads are 512-bit with AVX-512F, 256-bit with AVX2, else 128-bit. */
double membw_measure(membw *m, int n_threads, int passes);

#endif
