/* opencl.h — what the OpenCL backend shows the rest of plumb and its tests (free of OpenCL's
 * own headers): its registration, the work-group shapes its kernels are compiled with (the
 * kernels get them as -D defines; the conformance test derives its error bounds from them),
 * and a hook that builds a program from given source. */
#ifndef PLUMB_BACKEND_OPENCL_H
#define PLUMB_BACKEND_OPENCL_H

#include "backend/backend.h"

/* name "opencl": every GPU, CPU and accelerator device of every OpenCL platform */
extern const plumb_backend_reg plumb__backend_opencl;

/* Matmul: a work-group of PLUMB_OPENCL_MM_WG work-items computes PLUMB_OPENCL_MM_ROWS weight
 * rows for PLUMB_OPENCL_MM_TOKENS activation rows. Work-item i takes the 32-element chunks i,
 * i + MM_WG, ... of each weight row and adds each chunk's contribution, in that order, to one
 * partial sum per output; one work-item then adds an output's MM_WG partial sums in order. */
#define PLUMB_OPENCL_MM_WG 32
#define PLUMB_OPENCL_MM_ROWS 8
#define PLUMB_OPENCL_MM_TOKENS 4

/* Every other kernel runs work-groups of PLUMB_OPENCL_WG work-items (a power of two). The row
 * ops (rms_norm, soft_max, attention) give each work-group one row: work-item i takes elements
 * (positions) i, i + WG, ... in order, and the partial sums meet in a binary tree of log2(WG)
 * levels. */
#define PLUMB_OPENCL_WG 64

/* The largest attention head dimension (attention also needs it to be a multiple of 4: the
 * scores are dot products in 4 lanes, lane l adding elements l, l + 4, ... in order, then
 * (lane 0 + lane 2) + (lane 1 + lane 3)). */
#define PLUMB_OPENCL_ATTN_MAX_HD 512

/* Builds source as a program of backend b's device, with the options its kernels get, and
 * releases it: PLUMB_E_UNSUPPORTED with the driver's build log when it does not build. */
plumb_status plumb__opencl_build_source(plumb_backend *b, const char *source);

#endif
