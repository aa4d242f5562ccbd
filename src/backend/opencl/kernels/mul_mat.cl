/* mul_mat.cl - out[n, t] = sum_k w[k, n] x[k, t]: weight rows (any supported type, rows w_row
 * bytes apart) times activation rows, out F32 [N, T].
 *
 * A work-group of MM_WG work-items computes MM_ROWS weight rows (a row group) at a time for
 * MM_TB activation rows, so that each weight chunk it reads serves MM_TB tokens. Work-item i
 * takes chunks i, i + MM_WG, ... of each of its rows and adds each chunk's contribution to one
 * partial sum per output; one work-item per output then adds the MM_WG partial sums in order.
 * The host starts a bounded number of work-groups, each taking every so many row groups, as
 * a driver that runs work-groups one by one pays for each.
 *
 * Block types dot with the activations act.cl prepared, exactly as the CPU backend's kernels
 * do within a block: integer sums of the chunk's values times the activations' int8 values,
 * then the block's float expression (SYM: isum * (d * dx); MIN1: isum * (d * dx) + m * s;
 * K: dx * d * (sc-weighted isum) - dx * dmin * (mn-weighted activation sum)). F16 weights dot
 * with the activations rounded to F16 (as the CPU's do), F32 weights with x itself. */

#define MM_OUT (MM_ROWS * MM_TB)
#define MM_STRIDE (MM_WG + 1) /* partial sums of one output, padded against bank conflicts */

/* The sum of the 16 lanes. */
INLINE int hsum16(int16 v) {
    const int8 s8 = v.lo + v.hi;
    const int4 s4 = s8.lo + s8.hi;
    const int2 s2 = s4.lo + s4.hi;
    return s2.x + s2.y;
}

/* The products of a chunk's halves with 16 activations each (|q y| <= 128 * 128 fits a short). */
INLINE short16 prod16(char16 q, char16 y) { return convert_short16(q) * convert_short16(y); }

/* Stores each output of rows [r0, r0 + nr) and tokens [t0, t0 + nt): its MM_WG partial sums
 * (acc[r * MM_TB + t] of every work-item) added in work-item order. */
INLINE void mm_store(__local float *part, const float *acc, __global uchar *out, ulong o_off, int N, int r0, int t0,
                     int nr, int nt) {
    const int lid = get_local_id(0);
    for (int o = 0; o < MM_OUT; o++)
        if (o / MM_TB < nr && o % MM_TB < nt) part[o * MM_STRIDE + lid] = acc[o];
    barrier(CLK_LOCAL_MEM_FENCE);
    __global float *y = (__global float *)(out + o_off);
    for (int o = lid; o < MM_OUT; o += MM_WG) {
        const int r = o / MM_TB, t = o % MM_TB;
        if (r >= nr || t >= nt) continue;
        float s = 0.0f;
        for (int i = 0; i < MM_WG; i++) s += part[o * MM_STRIDE + i];
        y[(size_t)(t0 + t) * N + r0 + r] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE); /* part is free again */
}

/* Adds chunk c of a block-type weight row times tokens [t0, t0 + nt) to acc[t]. act holds
 * qs[T][K] chars at a_q, the scales at a_d (one per 32 values, or per 256 for the K types) and
 * at a_s, for MIN1, the sums s (floats, one per 32 values), for the K types the integer sums of
 * every 16 values. */
INLINE void mm_chunk_q(const int type, gbytes row, int c, int K, gbytes act, ulong a_q, ulong a_d, ulong a_s, int t0,
                       int nt, float *acc) {
    const int nc = K / 32, fam = family(type), nd = fam == FAM_K ? nc / 8 : nc;
    __global const char *xq = (__global const char *)(act + a_q) + (size_t)t0 * K;
    __global const float *xd = (__global const float *)(act + a_d) + (size_t)t0 * nd;
    __global const float *xs = (__global const float *)(act + a_s) + (size_t)t0 * nc;
    __global const int *ys = (__global const int *)(act + a_s) + (size_t)t0 * 2 * nc;
    const chunk k = decode(type, row, c);
    for (int t = 0; t < MM_TB; t++) {
        if (t >= nt) break;
        __global const char *y = xq + (size_t)t * K + 32 * c;
        const int16 p0 = convert_int16(prod16(k.q0, vload16(0, y))), p1 = convert_int16(prod16(k.q1, vload16(1, y)));
        float v;
        if (fam == FAM_SYM) {
            v = (float)hsum16(p0 + p1) * (k.d * xd[t * nd + c]);
        } else if (fam == FAM_MIN1) {
            v = (float)hsum16(p0 + p1) * (k.d * xd[t * nd + c]) + k.dm * xs[t * nc + c];
        } else {
            const float dy = xd[t * nd + c / 8];
            __global const int *y16 = ys + (size_t)t * 2 * nc + 2 * c;
            v = dy * k.d * (float)hsum16(p0 * k.sc0 + p1 * k.sc1) -
                dy * k.dm * (float)(k.mn0 * y16[0] + k.mn1 * y16[1]);
        }
        acc[t] += v;
    }
}

/* Adds chunk c of an F32 or F16 weight row times tokens [t0, t0 + nt) to acc[t]; x is F32
 * [K, T] (for F16, rounded to F16 by act_f16), and the last chunk may be partial. */
INLINE void mm_chunk_f(const int f16, gbytes row, int c, int K, gbytes x, ulong x_off, int t0, int nt, float *acc) {
    __global const float *xf = (__global const float *)(x + x_off) + (size_t)t0 * K;
    const int k0 = 32 * c, n = min(32, K - k0);
    for (int j = 0; j < n; j++) {
        const float a = f16 ? vload_half(k0 + j, (__global const half *)row) : ((__global const float *)row)[k0 + j];
        for (int t = 0; t < MM_TB; t++) {
            if (t >= nt) break;
            acc[t] += a * xf[(size_t)t * K + k0 + j];
        }
    }
}

/* Row group g (rows [g MM_ROWS, ...)) of weights of any type: one function for every type, the
 * type (a constant in each kernel) choosing the chunk's dot product. The activations are act
 * at a_q, a_d and a_s as mm_chunk_q reads them, or for F32 and F16 weights x at act + a_q. */
INLINE void mm_rows(const int type, int g, gbytes w, ulong w_off, ulong w_row, int K, int N, gbytes act, ulong a_q,
                    ulong a_d, ulong a_s, int T, __global uchar *out, ulong o_off, __local float *part) {
    const int lid = get_local_id(0), r0 = g * MM_ROWS, t0 = get_group_id(1) * MM_TB;
    /* Chunks of 32 a row; a partial last one only for F32 and F16, as block rows are whole
     * blocks. */
    const int nr = min(MM_ROWS, N - r0), nt = min(MM_TB, T - t0), nc = (K + 31) / 32;
    float acc[MM_OUT];
    for (int o = 0; o < MM_OUT; o++) acc[o] = 0.0f;
    for (int r = 0; r < MM_ROWS; r++) {
        if (r >= nr) break;
        gbytes row = w + w_off + (size_t)(r0 + r) * w_row;
        for (int c = lid; c < nc; c += MM_WG) {
            if (type == TYPE_F32 || type == TYPE_F16)
                mm_chunk_f(type == TYPE_F16, row, c, K, act, a_q, t0, nt, acc + r * MM_TB);
            else
                mm_chunk_q(type, row, c, K, act, a_q, a_d, a_s, t0, nt, acc + r * MM_TB);
        }
    }
    mm_store(part, acc, out, o_off, N, r0, t0, nr, nt);
}

/* The kernels: work-group (i, j) takes row groups i, i + (work-groups in dimension 0), ... for
 * the tokens of group j. */
#define MUL_MAT_Q(name, type)                                                                                          \
    kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void name(                                               \
        gbytes w, ulong w_off, ulong w_row, int K, int N, gbytes act, ulong a_q, ulong a_d, ulong a_s, int T,          \
        __global uchar *out, ulong o_off) {                                                                            \
        __local float part[MM_OUT * MM_STRIDE];                                                                        \
        for (int g = get_group_id(0); g * MM_ROWS < N; g += get_num_groups(0))                                         \
            mm_rows(type, g, w, w_off, w_row, K, N, act, a_q, a_d, a_s, T, out, o_off, part);                          \
    }

MUL_MAT_Q(mul_mat_q4_0, TYPE_Q4_0)
MUL_MAT_Q(mul_mat_q4_1, TYPE_Q4_1)
MUL_MAT_Q(mul_mat_q5_0, TYPE_Q5_0)
MUL_MAT_Q(mul_mat_q5_1, TYPE_Q5_1)
MUL_MAT_Q(mul_mat_q8_0, TYPE_Q8_0)
MUL_MAT_Q(mul_mat_q2_k, TYPE_Q2_K)
MUL_MAT_Q(mul_mat_q3_k, TYPE_Q3_K)
MUL_MAT_Q(mul_mat_q4_k, TYPE_Q4_K)
MUL_MAT_Q(mul_mat_q5_k, TYPE_Q5_K)
MUL_MAT_Q(mul_mat_q6_k, TYPE_Q6_K)

#define MUL_MAT_F(name, type)                                                                                          \
    kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1))) void name(gbytes w, ulong w_off, ulong w_row, int K,     \
                                                                        int N, gbytes x, ulong x_off, int T,           \
                                                                        __global uchar *out, ulong o_off) {            \
        __local float part[MM_OUT * MM_STRIDE];                                                                        \
        for (int g = get_group_id(0); g * MM_ROWS < N; g += get_num_groups(0))                                         \
            mm_rows(type, g, w, w_off, w_row, K, N, x, x_off, 0, 0, T, out, o_off, part);                              \
    }

MUL_MAT_F(mul_mat_f32, TYPE_F32)
MUL_MAT_F(mul_mat_f16, TYPE_F16)
