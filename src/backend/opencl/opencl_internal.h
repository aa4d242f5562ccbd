/* opencl_internal.h — state shared by the OpenCL backend's files: the device, its queue and
 * program (opencl_device.c, opencl_program.c), the buffers (opencl_buffer.c) and the ops
 * (opencl_ops.c). The API is OpenCL 1.2's, through the ICD loader. */
#ifndef PLUMB_OPENCL_INTERNAL_H
#define PLUMB_OPENCL_INTERNAL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include "backend/opencl/opencl.h"

/* The program's kernels: X(ENUM, name) makes OPENCL_K_<ENUM> for kernel `name`. */
#define OPENCL_KERNELS(X)                                                                                              \
    X(QUANTIZE_Q8, quantize_q8)                                                                                        \
    X(QUANTIZE_Q8_K, quantize_q8_k)                                                                                    \
    X(ACT_F16, act_f16)                                                                                                \
    X(MUL_MAT_F32, mul_mat_f32)                                                                                        \
    X(MUL_MAT_F16, mul_mat_f16)                                                                                        \
    X(MUL_MAT_Q4_0, mul_mat_q4_0)                                                                                      \
    X(MUL_MAT_Q4_1, mul_mat_q4_1)                                                                                      \
    X(MUL_MAT_Q5_0, mul_mat_q5_0)                                                                                      \
    X(MUL_MAT_Q5_1, mul_mat_q5_1)                                                                                      \
    X(MUL_MAT_Q8_0, mul_mat_q8_0)                                                                                      \
    X(MUL_MAT_Q2_K, mul_mat_q2_k)                                                                                      \
    X(MUL_MAT_Q3_K, mul_mat_q3_k)                                                                                      \
    X(MUL_MAT_Q4_K, mul_mat_q4_k)                                                                                      \
    X(MUL_MAT_Q5_K, mul_mat_q5_k)                                                                                      \
    X(MUL_MAT_Q6_K, mul_mat_q6_k)                                                                                      \
    X(GET_ROWS, get_rows)                                                                                              \
    X(BINARY, binary)                                                                                                  \
    X(UNARY, unary)                                                                                                    \
    X(RMS_NORM, rms_norm)                                                                                              \
    X(SOFT_MAX, soft_max)                                                                                              \
    X(ROPE, rope)                                                                                                      \
    X(KV_STORE, kv_store)                                                                                              \
    X(ATTN, attn)

typedef enum plumb_opencl_kernel {
#define PLUMB_X(e, name) OPENCL_K_##e,
    OPENCL_KERNELS(PLUMB_X)
#undef PLUMB_X
    OPENCL_K_COUNT
} plumb_opencl_kernel;

/* The kernel sources embedded at build time (opencl_kernels.c, made by embed_kernels.cmake):
 * common.cl and quant.cl first, then the rest by name; one program is built from all. */
typedef struct plumb_opencl_source {
    const char *name;
    const char *text;
} plumb_opencl_source;
extern const plumb_opencl_source plumb__opencl_sources[];
extern const int plumb__opencl_n_sources;

typedef struct plumb_opencl_ctx {
    cl_device_id device;
    cl_context context;
    cl_command_queue queue; /* in order */
    cl_program program;
    cl_kernel kernels[OPENCL_K_COUNT];
    char device_name[128];
    char options[768];  /* the build options of every program */
    cl_ulong max_alloc; /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    cl_uint compute_units;
    /* scratch of one node at a time (the queue runs nodes in order): a matmul's prepared
     * activations; attention's positions and sequence ids */
    cl_mem act;
    size_t act_size;
    cl_mem ids;
    size_t ids_size;
} plumb_opencl_ctx;

/* opencl_device.c */
/* Device i of the registration (platforms in order, each one's GPU, CPU and accelerator
 * devices in order); PLUMB_E_NOT_FOUND when there is none. */
plumb_status plumb__opencl_device(int i, cl_platform_id *platform, cl_device_id *device);
/* PLUMB_OK for CL_SUCCESS; else a failure naming what failed and the OpenCL error (out of
 * memory errors as PLUMB_E_NOMEM, the rest as PLUMB_E_IO). */
plumb_status plumb__opencl_check(cl_int err, const char *what);
const char *plumb__opencl_error_name(cl_int err);

/* opencl_program.c */
/* Builds the embedded kernels into c->program and creates c->kernels (c->options first). */
plumb_status plumb__opencl_program_init(plumb_opencl_ctx *c);
void plumb__opencl_program_free(plumb_opencl_ctx *c);

/* opencl_buffer.c */
plumb_status plumb__opencl_buffer_alloc(plumb_backend *b, size_t size, plumb_buffer **out);
void plumb__opencl_buffer_free(plumb_buffer *buf);
plumb_status plumb__opencl_buffer_set(plumb_buffer *buf, size_t off, const void *src, size_t n);
plumb_status plumb__opencl_buffer_get(const plumb_buffer *buf, size_t off, void *dst, size_t n);
plumb_status plumb__opencl_buffer_copy(plumb_buffer *dst, size_t doff, const plumb_buffer *src, size_t soff, size_t n);
/* Grows scratch *m (of *have bytes) to at least need bytes; its contents are not kept. */
plumb_status plumb__opencl_reserve(plumb_opencl_ctx *c, cl_mem *m, size_t *have, size_t need);

/* opencl_ops.c */
bool plumb__opencl_supports_op(plumb_backend *b, const plumb_tensor *node);
bool plumb__opencl_supports_weight(plumb_backend *b, int type);
plumb_status plumb__opencl_graph_compute(plumb_backend *b, plumb_graph *g, int32_t first, int32_t end);

#endif
