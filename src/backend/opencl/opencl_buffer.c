/* opencl_buffer.c — the OpenCL backend's memory: one cl_mem per buffer (the host cannot
 * address it: base is NULL), zero-filled when made, read and written by blocking transfers;
 * and the scratch buffers the ops grow as they need. */
#include "backend/opencl/opencl_internal.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* A cl_mem of size bytes (at least 1: OpenCL has no empty buffers). */
static plumb_status new_mem(plumb_opencl_ctx *c, size_t size, cl_mem *out) {
    if (size > c->max_alloc)
        return plumb__fail(PLUMB_E_NOMEM,
                           "OpenCL buffer of %zu bytes is larger than device %s allows in one allocation (%llu bytes)",
                           size, c->device_name, (unsigned long long)c->max_alloc);
    cl_int err;
    *out = clCreateBuffer(c->context, CL_MEM_READ_WRITE, size ? size : 1, NULL, &err);
    if (err != CL_SUCCESS)
        return plumb__fail(PLUMB_E_NOMEM,
                           "out of OpenCL memory for a buffer of %zu bytes on %s (largest allocation %llu bytes): %s",
                           size, c->device_name, (unsigned long long)c->max_alloc, plumb__opencl_error_name(err));
    return PLUMB_OK;
}

plumb_status plumb__opencl_buffer_alloc(plumb_backend *b, size_t size, plumb_buffer **out) {
    plumb_opencl_ctx *c = b->ctx;
    plumb_buffer *buf = calloc(1, sizeof *buf);
    if (!buf) return plumb__fail(PLUMB_E_NOMEM, "out of memory");
    cl_mem m = NULL;
    plumb_status st = new_mem(c, size, &m);
    if (st) {
        free(buf);
        return st;
    }
    const cl_uchar zero = 0;
    cl_int err = clEnqueueFillBuffer(c->queue, m, &zero, 1, 0, size ? size : 1, 0, NULL, NULL);
    if (!err) err = clFinish(c->queue);
    if (err) {
        clReleaseMemObject(m);
        free(buf);
        /* drivers may place the memory only when it is first written */
        return plumb__fail(PLUMB_E_NOMEM,
                           "out of OpenCL memory for a buffer of %zu bytes on %s (largest allocation %llu bytes): %s",
                           size, c->device_name, (unsigned long long)c->max_alloc, plumb__opencl_error_name(err));
    }
    *buf = (plumb_buffer){.backend = b, .base = NULL, .handle = m, .size = size};
    *out = buf;
    return PLUMB_OK;
}

void plumb__opencl_buffer_free(plumb_buffer *buf) {
    clReleaseMemObject((cl_mem)buf->handle);
    free(buf);
}

static plumb_opencl_ctx *ctx_of(const plumb_buffer *buf) { return buf->backend->ctx; }

plumb_status plumb__opencl_buffer_set(plumb_buffer *buf, size_t off, const void *src, size_t n) {
    PLUMB_ASSERT(off <= buf->size && n <= buf->size - off);
    if (n == 0) return PLUMB_OK;
    return plumb__opencl_check(
        clEnqueueWriteBuffer(ctx_of(buf)->queue, (cl_mem)buf->handle, CL_TRUE, off, n, src, 0, NULL, NULL),
        "clEnqueueWriteBuffer");
}

plumb_status plumb__opencl_buffer_get(const plumb_buffer *buf, size_t off, void *dst, size_t n) {
    PLUMB_ASSERT(off <= buf->size && n <= buf->size - off);
    if (n == 0) return PLUMB_OK;
    return plumb__opencl_check(
        clEnqueueReadBuffer(ctx_of(buf)->queue, (cl_mem)buf->handle, CL_TRUE, off, n, dst, 0, NULL, NULL),
        "clEnqueueReadBuffer");
}

plumb_status plumb__opencl_buffer_copy(plumb_buffer *dst, size_t doff, const plumb_buffer *src, size_t soff, size_t n) {
    PLUMB_ASSERT(doff <= dst->size && n <= dst->size - doff && soff <= src->size && n <= src->size - soff);
    if (n == 0) return PLUMB_OK;
    plumb_opencl_ctx *c = ctx_of(dst);
    if (dst == src && doff < soff + n && soff < doff + n) { /* overlapping: OpenCL refuses, so through the host */
        void *tmp = malloc(n);
        if (!tmp) return plumb__fail(PLUMB_E_NOMEM, "out of memory for a %zu-byte copy", n);
        plumb_status st = plumb__opencl_buffer_get(src, soff, tmp, n);
        if (!st) st = plumb__opencl_buffer_set(dst, doff, tmp, n);
        free(tmp);
        return st;
    }
    cl_int err = clEnqueueCopyBuffer(c->queue, (cl_mem)src->handle, (cl_mem)dst->handle, soff, doff, n, 0, NULL, NULL);
    if (!err) err = clFinish(c->queue);
    return plumb__opencl_check(err, "clEnqueueCopyBuffer");
}

plumb_status plumb__opencl_reserve(plumb_opencl_ctx *c, cl_mem *m, size_t *have, size_t need) {
    if (need <= *have && *m) return PLUMB_OK;
    size_t size = need + need / 4; /* room to grow into without a new buffer each time */
    if (size > c->max_alloc) size = need;
    cl_mem fresh = NULL;
    plumb_status st = new_mem(c, size, &fresh);
    if (st) return st;
    if (*m) clReleaseMemObject(*m);
    *m = fresh;
    *have = size;
    return PLUMB_OK;
}
