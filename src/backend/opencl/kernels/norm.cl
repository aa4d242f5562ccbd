/* norm.cl - the ops over whole rows, one work-group of WG per row (work-item i takes elements
 * i, i + WG, ...; sums and maxima meet in common.cl's trees):
 *   rms_norm  x / sqrt(mean(x^2) + eps), then times w when has_w
 *   soft_max  e^(x * scale - max) / their sum */

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void rms_norm(gbytes x, ulong x_off, gbytes w, ulong w_off,
                                                                     int has_w, int ne0, float eps, __global uchar *out,
                                                                     ulong o_off) {
    __local float red[WG];
    const int lid = get_local_id(0);
    const size_t r = get_group_id(0);
    __global const float *xr = (__global const float *)(x + x_off) + r * ne0;
    __global const float *wr = (__global const float *)(w + w_off);
    __global float *o = (__global float *)(out + o_off) + r * ne0;
    float s = 0.0f;
    for (int i = lid; i < ne0; i += WG) s += xr[i] * xr[i];
    s = wg_sum(red, s);
    const float scale = 1.0f / sqrt(s / (float)ne0 + eps);
    for (int i = lid; i < ne0; i += WG) o[i] = has_w ? xr[i] * scale * wr[i] : xr[i] * scale;
}

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void soft_max(gbytes x, ulong x_off, int ne0, float scale,
                                                                     __global uchar *out, ulong o_off) {
    __local float red[WG];
    const int lid = get_local_id(0);
    const size_t r = get_group_id(0);
    __global const float *xr = (__global const float *)(x + x_off) + r * ne0;
    __global float *o = (__global float *)(out + o_off) + r * ne0;
    float m = -INFINITY;
    for (int i = lid; i < ne0; i += WG) m = xr[i] * scale > m ? xr[i] * scale : m;
    m = wg_max(red, m);
    float s = 0.0f;
    for (int i = lid; i < ne0; i += WG) s += o[i] = exp(xr[i] * scale - m);
    const float inv = 1.0f / wg_sum(red, s);
    for (int i = lid; i < ne0; i += WG) o[i] *= inv;
}
