/* common.cl - what all of plumb's OpenCL kernels share: float expressions evaluated as
 * written, without contraction into fused multiply-adds (so that an expression the CPU backend
 * also computes rounds the same way), F16 reads and rounding to F16, and the work-group
 * reductions of the row kernels.
 *
 * The host builds every kernel file after this one (and quant.cl) into one program, defining
 * plumb's type ids (TYPE_Q4_0, ...), op ids (OP_ADD, ...), ROPE_NEOX and the work-group shapes
 * of opencl.h (MM_WG, MM_ROWS, MM_TB, WG, ATTN_MAX_HD). Tensors arrive as a buffer and a byte
 * offset; F32 and I32 data start at multiples of 4 bytes, F16 and block data at multiples of 2. */
#pragma OPENCL FP_CONTRACT OFF

typedef __global const uchar *gbytes;

#define INLINE static inline __attribute__((always_inline))

/* The F16 value at p (2-byte aligned). */
INLINE float ld_half(gbytes p) { return vload_half(0, (__global const half *)p); }

/* x rounded to the nearest F16 value, ties to even, as a float (what storing it as F16 and
 * reading it back gives): finite values of 65520 and beyond become infinite, NaN stays NaN. */
INLINE float round_f16(float x) {
    const uint u = as_uint(x), a = u & 0x7fffffffu, sign = u & 0x80000000u;
    if (a > 0x7f800000u) return x;
    if (a >= 0x477ff000u) return as_float(sign | 0x7f800000u);
    if (a >= 0x38800000u) return as_float(sign | ((a + 0xfffu + ((a >> 13) & 1u)) & 0xffffe000u));
    return rint(x * 0x1p24f) * 0x1p-24f; /* F16 subnormals: multiples of 2^-24 */
}

/* The sum of every work-item's v in a work-group of WG: a binary tree in red[WG]. */
INLINE float wg_sum(__local float *red, float v) {
    const int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1) {
        if (lid < s) red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* The largest of every work-item's v (NaN passed over, as the CPU's maxima). */
INLINE float wg_max(__local float *red, float v) {
    const int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1) {
        if (lid < s) red[lid] = red[lid + s] > red[lid] ? red[lid + s] : red[lid];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}
