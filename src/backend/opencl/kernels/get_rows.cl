/* get_rows.cl - out[:, i] = the row ids[i] of w (any supported type, rows w_row bytes apart),
 * as F32: one work-item per 32-element chunk of an output row, each element formed by the
 * operations of the CPU's dequantization (quant.cl), so the bits are the same. */

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void get_rows(int type, gbytes w, ulong w_off, ulong w_row,
                                                                     int ne0, gbytes ids, ulong ids_off,
                                                                     __global uchar *out, ulong o_off) {
    const int c = get_global_id(0), i = get_global_id(1);
    if (c >= (ne0 + 31) / 32) return;
    gbytes row = w + w_off + (size_t)((__global const int *)(ids + ids_off))[i] * w_row;
    __global float *y = (__global float *)(out + o_off) + (size_t)i * ne0 + 32 * c;
    if (type == TYPE_F32 || type == TYPE_F16) {
        const int n = min(32, ne0 - 32 * c);
        for (int j = 0; j < n; j++)
            y[j] = type == TYPE_F16 ? vload_half(32 * c + j, (__global const half *)row)
                                    : ((__global const float *)row)[32 * c + j];
        return;
    }
    const chunk k = decode(type, row, c);
    const float16 q0 = convert_float16(k.q0), q1 = convert_float16(k.q1);
    const int fam = family(type);
    if (fam == FAM_SYM) {
        vstore16(k.d * q0, 0, y);
        vstore16(k.d * q1, 1, y);
    } else if (fam == FAM_MIN1) {
        vstore16(k.d * q0 + k.dm, 0, y);
        vstore16(k.d * q1 + k.dm, 1, y);
    } else {
        vstore16((k.d * (float)k.sc0) * q0 - k.dm * (float)k.mn0, 0, y);
        vstore16((k.d * (float)k.sc1) * q1 - k.dm * (float)k.mn1, 1, y);
    }
}
