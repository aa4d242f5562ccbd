/* attn.cl - attention over the F16 KV cache, in two kernels the host queues in order:
 *   kv_store  writes the batch's keys and values (F32 [kv_dim, T]) into the cache as F16
 *             (rounded to nearest even): token t to row (seq[t], pos[t])
 *   attn      one work-group per (token, query head): the query rounded to F16, scores
 *             q.k * scale (or tanh(q.k / cap) * cap * scale with a soft-cap) for the positions
 *             [lo, pos] of the token's sequence (lo = pos - n_swa + 1 with a sliding window),
 *             softmax, the probabilities rounded to F16, their weighted sum of the value rows.
 * As the CPU backend computes attention; the scores are computed again in each of the three
 * passes (maximum, sum, weighted values) instead of being stored, so no memory grows with the
 * context. ids holds pos[T] then seq[T]; the cache rows are (seq * n_ctx + pos) * kv_dim F16
 * values, with query head h reading KV head h / (n_head / n_kv). */

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void kv_store(gbytes k, ulong k_off, gbytes v, ulong v_off,
                                                                     gbytes ids, ulong ids_off, int T, int kv_dim,
                                                                     int n_ctx, __global uchar *kc, ulong kc_off,
                                                                     __global uchar *vc, ulong vc_off) {
    const int i = get_global_id(0), t = get_global_id(1);
    if (i >= kv_dim) return;
    __global const int *id = (__global const int *)(ids + ids_off);
    const size_t dst = ((size_t)id[T + t] * n_ctx + id[t]) * kv_dim + i, src = (size_t)t * kv_dim + i;
    vstore_half_rte(((__global const float *)(k + k_off))[src], dst, (__global half *)(kc + kc_off));
    vstore_half_rte(((__global const float *)(v + v_off))[src], dst, (__global half *)(vc + vc_off));
}

/* The score of the query q (hd values, F16-rounded) with the key row k. */
INLINE float score(__local const float *q, __global const half *k, int hd, float scale, float softcap, float inv_cap) {
    float4 a = (float4)(0.0f);
    for (int i = 0; i < hd / 4; i++) a += vload4(i, q) * vload_half4(i, k);
    const float raw = (a.x + a.z) + (a.y + a.w);
    return softcap > 0.0f ? tanh(raw * inv_cap) * softcap * scale : raw * scale;
}

#define ATTN_DIMS (ATTN_MAX_HD / WG) /* output dimensions per work-item */

kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void attn(gbytes q, ulong q_off, gbytes kc, ulong kc_off,
                                                                 gbytes vc, ulong vc_off, gbytes ids, ulong ids_off,
                                                                 int T, int n_head, int n_kv, int hd, int n_ctx,
                                                                 int n_swa, float scale, float softcap, float inv_cap,
                                                                 __global uchar *out, ulong o_off) {
    __local float qr[ATTN_MAX_HD], red[WG], pl[WG];
    const int lid = get_local_id(0), h = get_group_id(1), t = get_group_id(2);
    __global const int *id = (__global const int *)(ids + ids_off);
    const int pos = id[t], lo = n_swa > 0 && pos - n_swa + 1 > 0 ? pos - n_swa + 1 : 0;
    const int kv_dim = n_kv * hd;
    const size_t base = (size_t)id[T + t] * n_ctx * kv_dim + (size_t)(h / (n_head / n_kv)) * hd;
    __global const half *K = (__global const half *)(kc + kc_off) + base;
    __global const half *V = (__global const half *)(vc + vc_off) + base;
    __global const float *Q = (__global const float *)(q + q_off) + ((size_t)t * n_head + h) * hd;
    for (int d = lid; d < hd; d += WG) qr[d] = round_f16(Q[d]);
    barrier(CLK_LOCAL_MEM_FENCE);
    float m = -INFINITY;
    for (int j = lo + lid; j <= pos; j += WG) {
        const float s = score(qr, K + (size_t)j * kv_dim, hd, scale, softcap, inv_cap);
        m = s > m ? s : m;
    }
    m = wg_max(red, m);
    float sum = 0.0f;
    for (int j = lo + lid; j <= pos; j += WG)
        sum += exp(score(qr, K + (size_t)j * kv_dim, hd, scale, softcap, inv_cap) - m);
    const float inv = 1.0f / wg_sum(red, sum);
    float acc[ATTN_DIMS];
    for (int a = 0; a < ATTN_DIMS; a++) acc[a] = 0.0f;
    for (int j0 = lo; j0 <= pos; j0 += WG) {
        const int j = j0 + lid;
        pl[lid] =
            j <= pos ? round_f16(exp(score(qr, K + (size_t)j * kv_dim, hd, scale, softcap, inv_cap) - m) * inv) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        const int n = min(WG, pos - j0 + 1);
        for (int jj = 0; jj < n; jj++) {
            __global const half *vr = V + (size_t)(j0 + jj) * kv_dim;
            for (int a = 0; a < ATTN_DIMS; a++)
                if (lid + a * WG < hd) acc[a] += pl[jj] * vload_half(lid + a * WG, vr);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    __global float *o = (__global float *)(out + o_off) + ((size_t)t * n_head + h) * hd;
    for (int a = 0; a < ATTN_DIMS; a++)
        if (lid + a * WG < hd) o[lid + a * WG] = acc[a];
}
