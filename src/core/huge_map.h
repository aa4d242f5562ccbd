/* huge_map.h — zeroed anonymous memory that starts on a 2 MiB boundary and is advised for
 * transparent huge pages, for large buffers read in long strides or streams (the weights read
 * into memory, the KV cache), where 4 KiB pages cost TLB misses. */
#ifndef PLUMB_CORE_HUGE_MAP_H
#define PLUMB_CORE_HUGE_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define PLUMB_HUGE_PAGE ((size_t)2 << 20)

/* Maps size bytes plus room to align them; returns their 2 MiB-aligned start, or NULL when
 * the memory is not there. *map and *map_size are what munmap takes. The advice is only
 * advice: without transparent huge pages the memory is simply 4 KiB pages. */
static inline void *plumb__huge_map(size_t size, void **map, size_t *map_size) {
    const size_t span = size + PLUMB_HUGE_PAGE;
    void *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    uint8_t *base = (uint8_t *)(((uintptr_t)m + PLUMB_HUGE_PAGE - 1) & ~(uintptr_t)(PLUMB_HUGE_PAGE - 1));
#ifdef MADV_HUGEPAGE
    madvise(base, size, MADV_HUGEPAGE);
#endif
    *map = m, *map_size = span;
    return base;
}

#endif
