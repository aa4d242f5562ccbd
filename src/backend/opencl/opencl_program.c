/* opencl_program.c — the OpenCL backend's program: the build options (OpenCL C 1.2, plumb's
 * type and op ids and the work-group shapes as -D defines, correctly rounded division and
 * square root where the device has them), building the embedded kernel sources when a backend
 * is created, a build failure reported with the driver's build log, and the kernel objects. */
#include "backend/opencl/opencl_internal.h"

#include "core/error.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ids the kernels read from their arguments, by name. */
static const struct {
    const char *name;
    int value;
} defines[] = {
    {"TYPE_F32", PLUMB_TYPE_F32},
    {"TYPE_F16", PLUMB_TYPE_F16},
    {"TYPE_Q4_0", PLUMB_TYPE_Q4_0},
    {"TYPE_Q4_1", PLUMB_TYPE_Q4_1},
    {"TYPE_Q5_0", PLUMB_TYPE_Q5_0},
    {"TYPE_Q5_1", PLUMB_TYPE_Q5_1},
    {"TYPE_Q8_0", PLUMB_TYPE_Q8_0},
    {"TYPE_Q2_K", PLUMB_TYPE_Q2_K},
    {"TYPE_Q3_K", PLUMB_TYPE_Q3_K},
    {"TYPE_Q4_K", PLUMB_TYPE_Q4_K},
    {"TYPE_Q5_K", PLUMB_TYPE_Q5_K},
    {"TYPE_Q6_K", PLUMB_TYPE_Q6_K},
    {"OP_ADD", PLUMB_OP_ADD},
    {"OP_MUL", PLUMB_OP_MUL},
    {"OP_SCALE", PLUMB_OP_SCALE},
    {"OP_SILU", PLUMB_OP_SILU},
    {"OP_GELU_TANH", PLUMB_OP_GELU_TANH},
    {"OP_SILU_MUL", PLUMB_OP_SILU_MUL},
    {"OP_GELU_MUL", PLUMB_OP_GELU_MUL},
    {"OP_SOFTCAP", PLUMB_OP_SOFTCAP},
    {"ROPE_NEOX", PLUMB_ROPE_NEOX},
    {"MM_WG", PLUMB_OPENCL_MM_WG},
    {"MM_ROWS", PLUMB_OPENCL_MM_ROWS},
    {"MM_TB", PLUMB_OPENCL_MM_TOKENS},
    {"WG", PLUMB_OPENCL_WG},
    {"ATTN_MAX_HD", PLUMB_OPENCL_ATTN_MAX_HD},
};

/* The device's OpenCL C version as major * 10 + minor (12 for "OpenCL C 1.2 ..."), 0 if unknown. */
static int c_version(cl_device_id d) {
    char v[128] = "";
    int major = 0, minor = 0;
    if (clGetDeviceInfo(d, CL_DEVICE_OPENCL_C_VERSION, sizeof v - 1, v, NULL) != CL_SUCCESS) return 0;
    if (sscanf(v, "OpenCL C %d.%d", &major, &minor) != 2) return 0;
    return major * 10 + minor;
}

/* What the kernels need of the device, and c->options. */
static plumb_status prepare(plumb_opencl_ctx *c) {
    size_t wg = 0;
    cl_ulong local = 0;
    cl_device_fp_config fp = 0;
    cl_int err = clGetDeviceInfo(c->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    if (!err) err = clGetDeviceInfo(c->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
    if (!err) err = clGetDeviceInfo(c->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    if (err) return plumb__opencl_check(err, "clGetDeviceInfo");
    if (c_version(c->device) < 12)
        return plumb__fail(PLUMB_E_UNSUPPORTED,
                           "OpenCL device %s lacks OpenCL C 1.2, which plumb's kernels are written in", c->device_name);
    const size_t need_wg = PLUMB_OPENCL_WG > PLUMB_OPENCL_MM_WG ? PLUMB_OPENCL_WG : PLUMB_OPENCL_MM_WG;
    if (wg < need_wg || local < 16384)
        return plumb__fail(PLUMB_E_UNSUPPORTED,
                           "OpenCL device %s runs work-groups of at most %zu items with %llu bytes of local memory; "
                           "plumb's kernels need %zu items and 16384 bytes",
                           c->device_name, wg, (unsigned long long)local, need_wg);
    size_t used =
        (size_t)snprintf(c->options, sizeof c->options, "-cl-std=CL1.2%s",
                         fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT ? " -cl-fp32-correctly-rounded-divide-sqrt" : "");
    for (size_t i = 0; i < sizeof defines / sizeof defines[0] && used < sizeof c->options; i++)
        used += (size_t)snprintf(c->options + used, sizeof c->options - used, " -D%s=%d", defines[i].name,
                                 defines[i].value);
    PLUMB_ASSERT(used < sizeof c->options);
    return PLUMB_OK;
}

/* Builds the program of n sources; on failure the error carries the driver's build log. */
static plumb_status build(plumb_opencl_ctx *c, cl_uint n, const char **src, cl_program *out) {
    cl_int err;
    cl_program p = clCreateProgramWithSource(c->context, n, src, NULL, &err);
    if (err) return plumb__opencl_check(err, "clCreateProgramWithSource");
    err = clBuildProgram(p, 1, &c->device, c->options, NULL, NULL);
    if (err == CL_SUCCESS) {
        *out = p;
        return PLUMB_OK;
    }
    size_t len = 0;
    char *log = NULL;
    if (clGetProgramBuildInfo(p, c->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) == CL_SUCCESS &&
        (log = malloc(len + 1)) &&
        clGetProgramBuildInfo(p, c->device, CL_PROGRAM_BUILD_LOG, len, log, NULL) == CL_SUCCESS) {
        log[len] = '\0';
        while (len > 0 && (isspace((unsigned char)log[len - 1]) || log[len - 1] == '\0')) log[--len] = '\0';
    }
    const char *text = log ? log : "";
    while (isspace((unsigned char)*text)) text++;
    plumb_status st = plumb__fail(PLUMB_E_UNSUPPORTED, "OpenCL program build failed on %s (%s); build log: %s",
                                  c->device_name, plumb__opencl_error_name(err), text[0] ? text : "(empty)");
    free(log);
    clReleaseProgram(p);
    return st;
}

plumb_status plumb__opencl_program_init(plumb_opencl_ctx *c) {
    static const char *const names[OPENCL_K_COUNT] = {
#define PLUMB_X(e, name) #name,
        OPENCL_KERNELS(PLUMB_X)
#undef PLUMB_X
    };
    plumb_status st = prepare(c);
    if (st) return st;
    const char *src[32];
    PLUMB_ASSERT(plumb__opencl_n_sources <= 32);
    for (int i = 0; i < plumb__opencl_n_sources; i++) src[i] = plumb__opencl_sources[i].text;
    st = build(c, (cl_uint)plumb__opencl_n_sources, src, &c->program);
    for (int k = 0; k < OPENCL_K_COUNT && !st; k++) {
        cl_int err;
        c->kernels[k] = clCreateKernel(c->program, names[k], &err);
        if (err)
            st = plumb__fail(PLUMB_E_UNSUPPORTED, "OpenCL: kernel %s of plumb's program: %s", names[k],
                             plumb__opencl_error_name(err));
    }
    return st;
}

void plumb__opencl_program_free(plumb_opencl_ctx *c) {
    for (int k = 0; k < OPENCL_K_COUNT; k++)
        if (c->kernels[k]) clReleaseKernel(c->kernels[k]);
    if (c->program) clReleaseProgram(c->program);
}

plumb_status plumb__opencl_build_source(plumb_backend *b, const char *source) {
    cl_program p;
    plumb_status st = build(b->ctx, 1, &source, &p);
    if (!st) clReleaseProgram(p);
    return st;
}
