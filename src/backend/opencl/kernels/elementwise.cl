/* elementwise.cl - the ops that compute each output element from the same element of their
 * inputs, one work-item per element, in the CPU backend's expressions:
 *   binary: ADD a + b, MUL a * b (b's one row broadcast over a's rows when bcast)
 *   unary:  SCALE x * p0; SILU x / (1 + e^-x), SILU_MUL that * y; GELU_TANH
 *           0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))); GELU_MUL that through F16 (x and
 *           the result rounded to F16, as the CPU's table), times y; SOFTCAP tanh(x * p0) * p1
 *           (p0 = 1 / cap, computed by the host as the CPU does). */

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void binary(int op, gbytes a, ulong a_off, gbytes b, ulong b_off,
                                                                   ulong ne0, int bcast, ulong n, __global uchar *out,
                                                                   ulong o_off) {
    const size_t i = get_global_id(0);
    if (i >= n) return;
    const float x = ((__global const float *)(a + a_off))[i];
    const float y = ((__global const float *)(b + b_off))[bcast ? i % ne0 : i];
    ((__global float *)(out + o_off))[i] = op == OP_ADD ? x + y : x * y;
}

INLINE float gelu_tanh(float x) {
    const float k = 0.79788456080286535587989211986876f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanh(k * x * fma(0.044715f * x, x, 1.0f)));
}

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void unary(int op, float p0, float p1, gbytes a, ulong a_off,
                                                                  gbytes b, ulong b_off, ulong n, __global uchar *out,
                                                                  ulong o_off) {
    const size_t i = get_global_id(0);
    if (i >= n) return;
    const float x = ((__global const float *)(a + a_off))[i];
    __global const float *y = (__global const float *)(b + b_off);
    float r;
    switch (op) {
    case OP_SCALE: r = x * p0; break;
    case OP_SILU: r = x / (1.0f + exp(-x)); break;
    case OP_SILU_MUL: r = x / (1.0f + exp(-x)) * y[i]; break;
    case OP_GELU_TANH: r = gelu_tanh(x); break;
    case OP_GELU_MUL: r = (x <= -10.0f ? 0.0f : x >= 10.0f ? x : round_f16(gelu_tanh(round_f16(x)))) * y[i]; break;
    default: r = tanh(x * p0) * p1; break; /* OP_SOFTCAP */
    }
    ((__global float *)(out + o_off))[i] = r;
}
