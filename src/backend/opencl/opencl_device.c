/* opencl_device.c — the OpenCL backend's devices: enumeration over every platform the ICD
 * loader knows (each platform's GPU, CPU and accelerator devices, in order), their
 * descriptions, the registration, and creating a backend on one (context, in-order queue,
 * program). Also the names of OpenCL's error codes for messages. */
#include "backend/opencl/opencl_internal.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64
#define DEVICE_TYPES (CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_CPU | CL_DEVICE_TYPE_ACCELERATOR)
#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001 /* the ICD loader's "no platform" (cl_khr_icd) */
#endif

const char *plumb__opencl_error_name(cl_int err) {
    switch (err) {
#define NAME(e)                                                                                                        \
    case e: return #e;
        NAME(CL_SUCCESS)
        NAME(CL_DEVICE_NOT_FOUND)
        NAME(CL_DEVICE_NOT_AVAILABLE)
        NAME(CL_COMPILER_NOT_AVAILABLE)
        NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        NAME(CL_OUT_OF_RESOURCES)
        NAME(CL_OUT_OF_HOST_MEMORY)
        NAME(CL_MEM_COPY_OVERLAP)
        NAME(CL_BUILD_PROGRAM_FAILURE)
        NAME(CL_INVALID_VALUE)
        NAME(CL_INVALID_DEVICE)
        NAME(CL_INVALID_CONTEXT)
        NAME(CL_INVALID_COMMAND_QUEUE)
        NAME(CL_INVALID_MEM_OBJECT)
        NAME(CL_INVALID_BUILD_OPTIONS)
        NAME(CL_INVALID_PROGRAM)
        NAME(CL_INVALID_PROGRAM_EXECUTABLE)
        NAME(CL_INVALID_KERNEL_NAME)
        NAME(CL_INVALID_KERNEL)
        NAME(CL_INVALID_ARG_INDEX)
        NAME(CL_INVALID_ARG_VALUE)
        NAME(CL_INVALID_ARG_SIZE)
        NAME(CL_INVALID_KERNEL_ARGS)
        NAME(CL_INVALID_WORK_DIMENSION)
        NAME(CL_INVALID_WORK_GROUP_SIZE)
        NAME(CL_INVALID_WORK_ITEM_SIZE)
        NAME(CL_INVALID_GLOBAL_OFFSET)
        NAME(CL_INVALID_EVENT_WAIT_LIST)
        NAME(CL_INVALID_OPERATION)
        NAME(CL_INVALID_BUFFER_SIZE)
        NAME(CL_INVALID_GLOBAL_WORK_SIZE)
        NAME(CL_PLATFORM_NOT_FOUND_KHR)
#undef NAME
    default: return "an OpenCL error";
    }
}

plumb_status plumb__opencl_check(cl_int err, const char *what) {
    if (err == CL_SUCCESS) return PLUMB_OK;
    const bool memory = err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
                        err == CL_OUT_OF_HOST_MEMORY || err == CL_INVALID_BUFFER_SIZE;
    return plumb__fail(memory ? PLUMB_E_NOMEM : PLUMB_E_IO, "OpenCL: %s failed: %s (%d)", what,
                       plumb__opencl_error_name(err), (int)err);
}

/* The platforms into p[] (their count; 0 with *why set when there is none). */
static cl_uint platforms(cl_platform_id *p, const char **why) {
    cl_uint n = 0;
    const cl_int err = clGetPlatformIDs(MAX_PLATFORMS, p, &n);
    if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && n == 0)) {
        *why = "no OpenCL platform: the ICD loader found no driver (install one, e.g. pocl-opencl-icd or the GPU "
               "vendor's, and check /etc/OpenCL/vendors)";
        return 0;
    }
    if (err != CL_SUCCESS) {
        *why = "the OpenCL ICD loader could not list the platforms";
        return 0;
    }
    return n < MAX_PLATFORMS ? n : MAX_PLATFORMS;
}

/* The devices of platform p into d[] (their count). */
static cl_uint devices(cl_platform_id p, cl_device_id *d) {
    cl_uint n = 0;
    if (clGetDeviceIDs(p, DEVICE_TYPES, MAX_DEVICES, d, &n) != CL_SUCCESS) return 0;
    return n < MAX_DEVICES ? n : MAX_DEVICES;
}

static int device_count(const char **why) {
    const char *reason = NULL;
    cl_platform_id p[MAX_PLATFORMS];
    cl_device_id d[MAX_DEVICES];
    const cl_uint np = platforms(p, &reason);
    int n = 0;
    for (cl_uint i = 0; i < np; i++) n += (int)devices(p[i], d);
    if (np > 0 && n == 0) reason = "the OpenCL platforms have no GPU, CPU or accelerator device";
    if (why) *why = n ? NULL : reason;
    return n;
}

plumb_status plumb__opencl_device(int i, cl_platform_id *platform, cl_device_id *device) {
    const char *why = NULL;
    cl_platform_id p[MAX_PLATFORMS];
    cl_device_id d[MAX_DEVICES];
    const cl_uint np = platforms(p, &why);
    int seen = 0;
    for (cl_uint k = 0; k < np; k++) {
        const int n = (int)devices(p[k], d);
        if (i >= seen && i < seen + n) {
            *platform = p[k];
            *device = d[i - seen];
            return PLUMB_OK;
        }
        seen += n;
    }
    if (seen == 0 && np > 0) why = "the OpenCL platforms have no GPU, CPU or accelerator device";
    if (seen == 0) return plumb__fail(PLUMB_E_NOT_FOUND, "no OpenCL device (%s)", why);
    return plumb__fail(PLUMB_E_NOT_FOUND, "there is no OpenCL device %d (%d in all)", i, seen);
}

static plumb_status device_info(int i, plumb_device_info *out) {
    cl_platform_id p;
    cl_device_id d;
    plumb_status st = plumb__opencl_device(i, &p, &d);
    if (st) return st;
    memset(out, 0, sizeof *out);
    char platform[96] = "", version[32] = "";
    cl_ulong mem = 0, max_alloc = 0;
    cl_int err = clGetDeviceInfo(d, CL_DEVICE_NAME, sizeof out->name - 1, out->name, NULL);
    if (!err) err = clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof platform - 1, platform, NULL);
    if (!err) err = clGetDeviceInfo(d, CL_DRIVER_VERSION, sizeof version - 1, version, NULL);
    if (!err) err = clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    if (!err) err = clGetDeviceInfo(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    if (err) return plumb__opencl_check(err, "clGetDeviceInfo");
    snprintf(out->driver, sizeof out->driver, "%s %s", platform, version);
    out->memory = mem;
    out->max_alloc = max_alloc;
    return PLUMB_OK;
}

static void opencl_device_info(plumb_backend *b, plumb_device_info *out) {
    if (device_info(b->device, out) != PLUMB_OK) {
        memset(out, 0, sizeof *out);
        snprintf(out->name, sizeof out->name, "%s", ((plumb_opencl_ctx *)b->ctx)->device_name);
    }
}

static void ctx_free(plumb_opencl_ctx *c) {
    plumb__opencl_program_free(c);
    if (c->act) clReleaseMemObject(c->act);
    if (c->ids) clReleaseMemObject(c->ids);
    if (c->queue) clReleaseCommandQueue(c->queue);
    if (c->context) clReleaseContext(c->context);
    free(c);
}

static void opencl_free(plumb_backend *b) {
    ctx_free(b->ctx);
    free(b);
}

static const plumb_backend_iface opencl_iface = {
    .name = "OpenCL",
    .supports_op = plumb__opencl_supports_op,
    .supports_weight = plumb__opencl_supports_weight,
    .graph_compute = plumb__opencl_graph_compute,
    .free = opencl_free,
    .buffer_alloc = plumb__opencl_buffer_alloc,
    .buffer_free = plumb__opencl_buffer_free,
    .buffer_set = plumb__opencl_buffer_set,
    .buffer_get = plumb__opencl_buffer_get,
    .buffer_copy = plumb__opencl_buffer_copy,
    .device_info = opencl_device_info,
};

/* n_threads is not used: the driver runs its own threads. */
static plumb_status create(int i, int n_threads, plumb_backend **out) {
    (void)n_threads;
    cl_platform_id p;
    cl_device_id d;
    plumb_status st = plumb__opencl_device(i, &p, &d);
    if (st) return st;
    plumb_backend *b = calloc(1, sizeof *b);
    plumb_opencl_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return plumb__fail(PLUMB_E_NOMEM, "out of memory for the OpenCL backend");
    }
    c->device = d;
    cl_int err = clGetDeviceInfo(d, CL_DEVICE_NAME, sizeof c->device_name - 1, c->device_name, NULL);
    if (!err) err = clGetDeviceInfo(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof c->max_alloc, &c->max_alloc, NULL);
    if (!err) err = clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof c->compute_units, &c->compute_units, NULL);
    if (!err && c->compute_units == 0) c->compute_units = 1;
    st = plumb__opencl_check(err, "clGetDeviceInfo");
    const cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)p, 0};
    if (!st) {
        c->context = clCreateContext(props, 1, &d, NULL, NULL, &err);
        st = plumb__opencl_check(err, "clCreateContext");
    }
    if (!st) {
        c->queue = clCreateCommandQueue(c->context, d, 0, &err);
        st = plumb__opencl_check(err, "clCreateCommandQueue");
    }
    if (!st) st = plumb__opencl_program_init(c);
    if (st) {
        ctx_free(c);
        free(b);
        return st;
    }
    b->iface = &opencl_iface;
    b->ctx = c;
    b->device = i;
    *out = b;
    return PLUMB_OK;
}

const plumb_backend_reg plumb__backend_opencl = {
    .name = "opencl",
    .device_count = device_count,
    .device_info = device_info,
    .create = create,
};
