/* quant.cl - the weight types' blocks read as 32-element chunks (chunk c of a row is its
 * elements [32c, 32c + 32)), the one way both mul_mat (integer dot products with quantized
 * activations) and get_rows (floats) read them. A chunk decodes to its 32 small integers, the
 * integer scales and mins of its two halves of 16, and its float factors; the element values
 * follow by the type's family, in the operations and order of the CPU's dequantization
 * (src/quant/), so that get_rows gives its bits:
 *   SYM   (Q4_0, Q5_0, Q8_0)          d * q
 *   MIN1  (Q4_1, Q5_1)                d * q + dm            (dm: the block's min)
 *   K     (Q2_K, Q3_K, Q4_K, ...)     (d * sc) * q - dm * mn (dm: the super-block's min scale,
 *                                                          0 for the types without mins)
 * The block layouts are those of quant_legacy.c and quant_k.c. */

#define FAM_SYM 0
#define FAM_MIN1 1
#define FAM_K 2

typedef struct chunk {
    char16 q0, q1; /* elements 0..15 and 16..31 */
    int sc0, sc1;  /* integer scales of the halves (1 for the legacy types) */
    int mn0, mn1;  /* integer mins of the halves (0 where the type has none) */
    float d, dm;
} chunk;

INLINE int family(int type) {
    if (type == TYPE_Q4_0 || type == TYPE_Q5_0 || type == TYPE_Q8_0) return FAM_SYM;
    if (type == TYPE_Q4_1 || type == TYPE_Q5_1) return FAM_MIN1;
    return FAM_K;
}

INLINE uint rd_u32(gbytes p) { return (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24); }

/* Bits base .. base + 15 of qh, one per lane, moved to bit 4 (the legacy 5-bit types). */
INLINE uchar16 bit4_of(uint qh, uint base) {
    const uint16 sh = (uint16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) + base;
    return convert_uchar16((((uint16)(qh) >> sh) & 1u) << 4);
}

INLINE chunk legacy(float d, float dm, char16 q0, char16 q1) {
    chunk k;
    k.q0 = q0, k.q1 = q1, k.sc0 = k.sc1 = 1, k.mn0 = k.mn1 = 0, k.d = d, k.dm = dm;
    return k;
}

/* Q4_0: d, qs[16]; q = nibble - 8. */
INLINE chunk dec_q4_0(gbytes row, int c) {
    gbytes b = row + 18 * c;
    const uchar16 v = vload16(0, b + 2);
    return legacy(ld_half(b), 0.0f, as_char16(v & (uchar)15) - (char)8, as_char16(v >> (uchar)4) - (char)8);
}

/* Q4_1: d, m, qs[16]; q = nibble. */
INLINE chunk dec_q4_1(gbytes row, int c) {
    gbytes b = row + 20 * c;
    const uchar16 v = vload16(0, b + 4);
    return legacy(ld_half(b), ld_half(b + 2), as_char16(v & (uchar)15), as_char16(v >> (uchar)4));
}

/* Q5_0: d, qh (u32), qs[16]; q = (nibble | high bit << 4) - 16. */
INLINE chunk dec_q5_0(gbytes row, int c) {
    gbytes b = row + 22 * c;
    const uint qh = rd_u32(b + 2);
    const uchar16 v = vload16(0, b + 6);
    return legacy(ld_half(b), 0.0f, as_char16((v & (uchar)15) | bit4_of(qh, 0)) - (char)16,
                  as_char16((v >> (uchar)4) | bit4_of(qh, 16)) - (char)16);
}

/* Q5_1: d, m, qh (u32), qs[16]; q = nibble | high bit << 4. */
INLINE chunk dec_q5_1(gbytes row, int c) {
    gbytes b = row + 24 * c;
    const uint qh = rd_u32(b + 4);
    const uchar16 v = vload16(0, b + 8);
    return legacy(ld_half(b), ld_half(b + 2), as_char16((v & (uchar)15) | bit4_of(qh, 0)),
                  as_char16((v >> (uchar)4) | bit4_of(qh, 16)));
}

/* Q8_0: d, qs[32] int8. */
INLINE chunk dec_q8_0(gbytes row, int c) {
    gbytes b = row + 34 * c;
    return legacy(ld_half(b), 0.0f, vload16(0, (__global const char *)(b + 2)),
                  vload16(1, (__global const char *)(b + 2)));
}

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Chunk s of the
 * super-block is half n = s / 4 at shift j = s % 4; its halves' scale bytes are 8n + 2j + h. */
INLINE chunk dec_q2_k(gbytes row, int c) {
    gbytes b = row + 84 * (c / 8);
    const int s = c % 8, n = s / 4, sh = 2 * (s % 4);
    gbytes q = b + 16 + 32 * n;
    const uchar s0 = b[8 * n + sh], s1 = b[8 * n + sh + 1];
    chunk k;
    k.q0 = as_char16((vload16(0, q) >> (uchar)sh) & (uchar)3);
    k.q1 = as_char16((vload16(1, q) >> (uchar)sh) & (uchar)3);
    k.sc0 = s0 & 15, k.sc1 = s1 & 15, k.mn0 = s0 >> 4, k.mn1 = s1 >> 4;
    k.d = ld_half(b + 80), k.dm = ld_half(b + 82);
    return k;
}

/* Q3_K's signed 6-bit scale i (0..15) of its 12 packed bytes. */
INLINE int q3_scale(gbytes sc, int i) {
    const int lo = i < 8 ? (sc[i] & 15) : (sc[i - 8] >> 4);
    const int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* Q3_K: hmask[32], qs[64], scales[12], d; q = 2 low bits - (4 unless the hmask bit is set). */
INLINE chunk dec_q3_k(gbytes row, int c) {
    gbytes b = row + 110 * (c / 8);
    const int s = c % 8, n = s / 4, j = s % 4;
    gbytes q = b + 32 + 32 * n;
    const uchar sh = (uchar)(2 * j), hb = (uchar)(4 * n + j);
    chunk k;
    k.q0 = as_char16((vload16(0, q) >> sh) & (uchar)3) - (char)4 +
           as_char16(((vload16(0, b) >> hb) & (uchar)1) << (uchar)2);
    k.q1 = as_char16((vload16(1, q) >> sh) & (uchar)3) - (char)4 +
           as_char16(((vload16(1, b) >> hb) & (uchar)1) << (uchar)2);
    k.sc0 = q3_scale(b + 96, 8 * n + 2 * j), k.sc1 = q3_scale(b + 96, 8 * n + 2 * j + 1);
    k.mn0 = k.mn1 = 0;
    k.d = ld_half(b + 108), k.dm = 0.0f;
    return k;
}

/* Q4_K / Q5_K: the 6-bit scale and min of sub-block s (0..7) of the 12 packed bytes. */
INLINE void scale_min_k4(gbytes sc, int s, int *scale, int *min) {
    if (s < 4) {
        *scale = sc[s] & 63;
        *min = sc[s + 4] & 63;
    } else {
        *scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
        *min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}

/* Q4_K / Q5_K: the low 4 bits of half h of chunk s (0..7) of a super-block from qs: the low
 * (even s) or high nibbles of qs[32 (s / 2) ..]. */
INLINE uchar16 nibbles_k(gbytes qs, int s, int h) {
    return (vload16(h, qs + 32 * (s / 2)) >> (uchar)(4 * (s % 2))) & (uchar)15;
}

/* Q4_K / Q5_K: chunk s of the super-block at b from its values, the rest read from the header
 * both types share (d, dmin, scales[12]); the chunk is one sub-block, so both halves take its
 * scale and min. */
INLINE chunk chunk_k4(gbytes b, int s, uchar16 q0, uchar16 q1) {
    chunk k;
    k.q0 = as_char16(q0), k.q1 = as_char16(q1);
    scale_min_k4(b + 4, s, &k.sc0, &k.mn0);
    k.sc1 = k.sc0, k.mn1 = k.mn0;
    k.d = ld_half(b), k.dm = ld_half(b + 2);
    return k;
}

/* Q4_K: d, dmin, scales[12], qs[128]. */
INLINE chunk dec_q4_k(gbytes row, int c) {
    gbytes b = row + 144 * (c / 8);
    const int s = c % 8;
    return chunk_k4(b, s, nibbles_k(b + 16, s, 0), nibbles_k(b + 16, s, 1));
}

/* Q5_K's fifth bits of half h of chunk s, moved to bit 4: bit s of qh[l] is element l's. */
INLINE uchar16 bit5_q5_k(gbytes qh, int s, int h) { return ((vload16(h, qh) >> (uchar)s) & (uchar)1) << (uchar)4; }

/* Q5_K: d, dmin, scales[12], qh[32], qs[128]. */
INLINE chunk dec_q5_k(gbytes row, int c) {
    gbytes b = row + 176 * (c / 8);
    const int s = c % 8;
    return chunk_k4(b, s, nibbles_k(b + 48, s, 0) | bit5_q5_k(b + 16, s, 0),
                    nibbles_k(b + 48, s, 1) | bit5_q5_k(b + 16, s, 1));
}

/* Q6_K: ql[128], qh[64], scales[16] int8, d. Chunk s is half n = s / 4, quarter j = s % 4 of
 * it: low 4 bits from ql[64n + 32 (j & 1) ..] (high nibbles for j >= 2), 2 high bits from
 * qh[32n ..] at shift 2j, minus 32; its halves' scales are scales[8n + 2j], [8n + 2j + 1]. */
INLINE chunk dec_q6_k(gbytes row, int c) {
    gbytes b = row + 210 * (c / 8);
    const int s = c % 8, n = s / 4, j = s % 4;
    gbytes lo = b + 64 * n + 32 * (j & 1), hi = b + 128 + 32 * n;
    const uchar lsh = (uchar)(j >= 2 ? 4 : 0), hsh = (uchar)(2 * j);
    __global const char *S = (__global const char *)(b + 192 + 8 * n);
    chunk k;
    k.q0 = as_char16(((vload16(0, lo) >> lsh) & (uchar)15) | (((vload16(0, hi) >> hsh) & (uchar)3) << (uchar)4)) -
           (char)32;
    k.q1 = as_char16(((vload16(1, lo) >> lsh) & (uchar)15) | (((vload16(1, hi) >> hsh) & (uchar)3) << (uchar)4)) -
           (char)32;
    k.sc0 = S[2 * j], k.sc1 = S[2 * j + 1];
    k.mn0 = k.mn1 = 0;
    k.d = ld_half(b + 208), k.dm = 0.0f;
    return k;
}

/* Chunk c of a row of a block type. */
INLINE chunk decode(int type, gbytes row, int c) {
    switch (type) {
    case TYPE_Q4_0: return dec_q4_0(row, c);
    case TYPE_Q4_1: return dec_q4_1(row, c);
    case TYPE_Q5_0: return dec_q5_0(row, c);
    case TYPE_Q5_1: return dec_q5_1(row, c);
    case TYPE_Q8_0: return dec_q8_0(row, c);
    case TYPE_Q2_K: return dec_q2_k(row, c);
    case TYPE_Q3_K: return dec_q3_k(row, c);
    case TYPE_Q4_K: return dec_q4_k(row, c);
    case TYPE_Q5_K: return dec_q5_k(row, c);
    default: return dec_q6_k(row, c);
    }
}
