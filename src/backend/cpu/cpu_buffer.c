/* cpu_buffer.c — the CPU backend's memory: host memory the CPU ops address directly. Large
 * buffers (the KV cache, weights read into memory) are 2 MiB-aligned huge-page mappings;
 * buffers over memory plumb already has (the model file's mapping) are borrowed. Also the
 * device description `plumb info` prints and the backend's registration. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"
#include "core/huge_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct cpu_buffer {
    plumb_buffer pub;
    void *map; /* what munmap takes, NULL when borrowed */
    size_t map_size;
} cpu_buffer;

plumb_status plumb__cpu_buffer_alloc(plumb_backend *b, size_t size, plumb_buffer **out) {
    cpu_buffer *cb = calloc(1, sizeof *cb);
    void *base = cb ? plumb__huge_map(size ? size : 1, &cb->map, &cb->map_size) : NULL;
    if (!base) {
        free(cb);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory for a host buffer of %zu bytes", size);
    }
    cb->pub = (plumb_buffer){.backend = b, .base = base, .size = size};
    *out = &cb->pub;
    return PLUMB_OK;
}

plumb_status plumb_buffer_host(plumb_backend *cpu, void *p, size_t size, plumb_buffer **out) {
    cpu_buffer *cb = calloc(1, sizeof *cb);
    if (!cb) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    cb->pub = (plumb_buffer){.backend = cpu, .base = p, .size = size, .borrowed = true};
    *out = &cb->pub;
    return PLUMB_OK;
}

void plumb__cpu_buffer_free(plumb_buffer *buf) {
    cpu_buffer *cb = (cpu_buffer *)buf;
    if (cb->map) munmap(cb->map, cb->map_size);
    free(cb);
}

plumb_status plumb__cpu_buffer_set(plumb_buffer *buf, size_t off, const void *src, size_t n) {
    PLUMB_ASSERT(off <= buf->size && n <= buf->size - off);
    memcpy((uint8_t *)buf->base + off, src, n);
    return PLUMB_OK;
}

plumb_status plumb__cpu_buffer_get(const plumb_buffer *buf, size_t off, void *dst, size_t n) {
    PLUMB_ASSERT(off <= buf->size && n <= buf->size - off);
    memcpy(dst, (const uint8_t *)buf->base + off, n);
    return PLUMB_OK;
}

plumb_status plumb__cpu_buffer_copy(plumb_buffer *dst, size_t doff, const plumb_buffer *src, size_t soff, size_t n) {
    PLUMB_ASSERT(doff <= dst->size && n <= dst->size - doff && soff <= src->size && n <= src->size - soff);
    memmove((uint8_t *)dst->base + doff, (const uint8_t *)src->base + soff, n);
    return PLUMB_OK;
}

static uint64_t host_memory(void) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

static plumb_status cpu_info(int i, plumb_device_info *out) {
    if (i != 0) return plumb__fail(PLUMB_E_NOT_FOUND, "there is one CPU device (cpu:0)");
    memset(out, 0, sizeof *out);
    const plumb_cpu_features *f = plumb_cpu_get();
    snprintf(out->name, sizeof out->name, "%s", f->brand[0] ? f->brand : f->vendor[0] ? f->vendor : "CPU");
    snprintf(out->driver, sizeof out->driver, "plumb %s kernels", plumb__kernels_get()->name);
    out->memory = host_memory();
    return PLUMB_OK;
}

void plumb__cpu_device_info(plumb_backend *b, plumb_device_info *out) { cpu_info(b->device, out); }

static int cpu_count(const char **why) {
    if (why) *why = NULL;
    return 1;
}

static plumb_status cpu_create(int i, int n_threads, plumb_backend **out) {
    if (i != 0) return plumb__fail(PLUMB_E_NOT_FOUND, "there is one CPU device (cpu:0)");
    return plumb_backend_cpu_create(n_threads, out);
}

const plumb_backend_reg plumb__backend_cpu = {
    .name = "cpu",
    .device_count = cpu_count,
    .device_info = cpu_info,
    .create = cpu_create,
};
