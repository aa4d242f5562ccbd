/* act.cl - a matmul's activations prepared once for every weight row, as the CPU backend
 * prepares them (its act_q8_0, act_q8_1, act_q8_k and F16 rounding), with the same correctly
 * rounded operations, so that both backends dot the weights with the same activation values:
 *   quantize_q8    blocks of 32 to int8 at scale amax / 127 (rounded to F16), and with with_s
 *                  also s = F16(sum of the block's values * the unrounded scale): the legacy types
 *   quantize_q8_k  blocks of 256 to int8 at the F32 scale max / -127, and the sums of every
 *                  16 of them (ints): the K types
 *   act_f16        each value rounded to F16: the F16 weights
 * x is F32 [K, T]. The quantized values go to qs[T][K] (chars), the scales to d[T][K / block]
 * (floats) and the sums to s (floats [T][K / 32], or ints [T][K / 16] for quantize_q8_k), each
 * at its byte offset into act. */

/* The block of bs values work-item i quantizes (block i % nb of token i / nb, nb = K / bs): its
 * values in x to *xs and its place in qs to *q; false for the work-items past the last block. */
INLINE bool q8_block(size_t i, int bs, gbytes x, ulong x_off, int K, int T, __global uchar *act, ulong a_q,
                     __global const float **xs, __global char **q) {
    const int nb = K / bs;
    if (i >= (size_t)nb * T) return false;
    const size_t e0 = (i / nb) * K + bs * (i % nb);
    *xs = (__global const float *)(x + x_off) + e0;
    *q = (__global char *)(act + a_q) + e0;
    return true;
}

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void
quantize_q8(gbytes x, ulong x_off, int K, int T, int with_s, __global uchar *act, ulong a_q, ulong a_d, ulong a_s) {
    const size_t i = get_global_id(0);
    __global const float *xs;
    __global char *q;
    if (!q8_block(i, 32, x, x_off, K, T, act, a_q, &xs, &q)) return;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float v = fabs(xs[j]);
        amax = v > amax ? v : amax;
    }
    const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        const int v = (int)rint(xs[j] * id);
        q[j] = (char)v;
        sum += v;
    }
    ((__global float *)(act + a_d))[i] = round_f16(d);
    if (with_s) ((__global float *)(act + a_s))[i] = round_f16((float)sum * d);
}

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void
quantize_q8_k(gbytes x, ulong x_off, int K, int T, __global uchar *act, ulong a_q, ulong a_d, ulong a_s) {
    const size_t i = get_global_id(0);
    __global const float *xs;
    __global char *q;
    if (!q8_block(i, 256, x, x_off, K, T, act, a_q, &xs, &q)) return;
    float amax = 0.0f, vmax = 0.0f; /* the first value of the largest magnitude */
    for (int j = 0; j < 256; j++) {
        const float a = fabs(xs[j]);
        if (a > amax) amax = a, vmax = xs[j];
    }
    __global float *d = (__global float *)(act + a_d) + i;
    __global int *sums = (__global int *)(act + a_s) + 16 * i;
    const float iscale = amax == 0.0f ? 0.0f : -127.0f / vmax;
    for (int g = 0; g < 16; g++) {
        int sum = 0;
        for (int j = 16 * g; j < 16 * g + 16; j++) {
            const int v = clamp((int)rint(iscale * xs[j]), -128, 127);
            q[j] = (char)v;
            sum += v;
        }
        sums[g] = sum;
    }
    *d = amax == 0.0f ? 0.0f : 1.0f / iscale;
}

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void act_f16(gbytes x, ulong x_off, ulong n, __global uchar *act,
                                                                    ulong a_off) {
    const size_t i = get_global_id(0);
    if (i < n) ((__global float *)(act + a_off))[i] = round_f16(((__global const float *)(x + x_off))[i]);
}
