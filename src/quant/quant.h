/* quant.h — the tensor type-traits table and the scalar reference kernels behind it.
 * One entry per GGUF tensor type plumb knows; SIMD kernels (later) are checked against
 * the scalar functions listed here. */
#ifndef PLUMB_QUANT_QUANT_H
#define PLUMB_QUANT_QUANT_H

#include "plumb.h"

/* Dequantize/quantize k elements (k a multiple of block_size); no argument checks. */
typedef void (*plumb_dequantize_fn)(const void *src, float *dst, int64_t k);
typedef void (*plumb_quantize_fn)(const float *src, void *dst, int64_t k);

typedef struct plumb_type_traits {
    const char *name;
    int64_t block_size;  /* elements per block */
    size_t block_bytes;  /* bytes per block */
    plumb_dequantize_fn dequantize;
    plumb_quantize_fn quantize;
} plumb_type_traits;

/* The traits of type id, or NULL for an id plumb does not know. */
const plumb_type_traits *plumb__type_traits(int id);

#define PLUMB_QK 32   /* block size of the legacy formats */
#define PLUMB_QK_K 256 /* block size of the K formats */

#endif
