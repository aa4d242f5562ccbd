/* elementwise.cl - the ops that compute each output element from the same element of their
 * inputs, one work-item per element, in the CPU backend's expressions:
 *   binary: ADD a + b, MUL a * b (b's one row broadcast over a's rows when bcast)
 *   unary:  SCALE x * p0; SILU x / (1 + e^-x), SILU_MUL that * y; GELU_TANH
 *           0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))); GELU_MUL that through F16 (x and
 *           the result rounded to F16, as the CPU's table), times y; SOFTCAP tanh(x * p0) * p1
 *           (p0 = 1 / cap, computed by the host as the CPU does). */

/* Element i of the F32 data at byte offset off of p. */
INLINE float f32_at(gbytes p, ulong off, size_t i) { return ((__global const float *)(p + off))[i]; }

INLINE float gelu_tanh(float x) {
    const float k = 0.79788456080286535587989211986876f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanh(k * x * fma(0.044715f * x, x, 1.0f)));
}

/* A unary op of x; y points at the same element of the second operand, read only by the ops
 * that have one (SILU_MUL, GELU_MUL). */
INLINE float unary_op(int op, float p0, float p1, float x, __global const float *y) {
    switch (op) {
    case OP_SCALE: return x * p0;
    case OP_SILU: return x / (1.0f + exp(-x));
    case OP_SILU_MUL: return x / (1.0f + exp(-x)) * *y;
    case OP_GELU_TANH: return gelu_tanh(x);
    case OP_GELU_MUL: return (x <= -10.0f ? 0.0f : x >= 10.0f ? x : round_f16(gelu_tanh(round_f16(x)))) * *y;
    default: return tanh(x * p0) * p1; /* OP_SOFTCAP */
    }
}

/* Both kernels: work-item i computes output element i of the n. */
kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void binary(int op, gbytes a, ulong a_off, gbytes b, ulong b_off,
                                                                   ulong ne0, int bcast, ulong n, __global uchar *out,
                                                                   ulong o_off) {
    const size_t i = get_global_id(0);
    if (i >= n) return;
    const float x = f32_at(a, a_off, i), y = f32_at(b, b_off, bcast ? i % ne0 : i);
    ((__global float *)(out + o_off))[i] = op == OP_ADD ? x + y : x * y;
}

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void unary(int op, float p0, float p1, gbytes a, ulong a_off,
                                                                  gbytes b, ulong b_off, ulong n, __global uchar *out,
                                                                  ulong o_off) {
    const size_t i = get_global_id(0);
    if (i >= n) return;
    __global const float *y = (__global const float *)(b + b_off) + i;
    ((__global float *)(out + o_off))[i] = unary_op(op, p0, p1, f32_at(a, a_off, i), y);
}
