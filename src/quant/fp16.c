/* fp16.c — the public IEEE half and bfloat16 conversions (plumb_fp16_to_fp32 and friends),
 * thin wrappers over the inline bit-manipulation versions in fp16.h. */
#include "quant/fp16.h"

#include "plumb.h"

float plumb_fp16_to_fp32(uint16_t h) { return plumb__fp16_to_fp32(h); }

uint16_t plumb_fp32_to_fp16(float f) { return plumb__fp32_to_fp16(f); }

float plumb_bf16_to_fp32(uint16_t h) { return plumb__bf16_to_fp32(h); }

uint16_t plumb_fp32_to_bf16(float f) { return plumb__fp32_to_bf16(f); }
