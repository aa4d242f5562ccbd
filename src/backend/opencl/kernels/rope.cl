/* rope.cl - rotary position embedding of x [hd, n_head, T] at positions pos (I32 [T]), one
 * work-item per element, as the CPU backend computes it: the pair i of the first n_rot
 * dimensions ((2i, 2i + 1), or (i, i + n_rot / 2) for ROPE_NEOX) turns by
 * th = freq_scale * (theta / ff[i] or theta), theta = pos times theta_scale i times over (one
 * rounded product at a time; theta_scale = base^(-2 / n_rot) from the host's powf), with
 * cos and sin scaled by mscale; the other dimensions pass unchanged. */

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void
rope(gbytes x, ulong x_off, gbytes pos, ulong pos_off, gbytes ff, ulong ff_off, int has_ff, int hd, int n_head,
     int mode, int n_rot, float theta_scale, float freq_scale, float mscale, __global uchar *out, ulong o_off) {
    const int e = get_global_id(0);
    const size_t r = get_global_id(1); /* t * n_head + head */
    if (e >= hd) return;
    __global const float *xr = (__global const float *)(x + x_off) + r * hd;
    __global float *o = (__global float *)(out + o_off) + r * hd;
    if (e >= n_rot) {
        o[e] = xr[e];
        return;
    }
    const int half_rot = n_rot / 2;
    const int i = mode == ROPE_NEOX ? e % half_rot : e / 2;
    const int ia = mode == ROPE_NEOX ? i : 2 * i, ib = mode == ROPE_NEOX ? i + half_rot : 2 * i + 1;
    float theta = (float)((__global const int *)(pos + pos_off))[r / n_head];
    for (int k = 0; k < i; k++) theta *= theta_scale;
    const float th = freq_scale * (has_ff ? theta / ((__global const float *)(ff + ff_off))[i] : theta);
    const float cs = cos(th) * mscale, sn = sin(th) * mscale;
    const float x0 = xr[ia], x1 = xr[ib];
    o[e] = e == ia ? fma(x0, cs, -(x1 * sn)) : fma(x0, sn, x1 * cs);
}
