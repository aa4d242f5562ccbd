/* quant_fp_strict.h — included first by the files whose float results must be bit-exact
 * (the reference quantizers): no fused multiply-add contraction, float expressions evaluated in
 * float, IEEE semantics. (clang ignores the pragma under an explicit -ffp-contract=fast: do not
 * build with that.) Internal to src/quant. */
#ifndef PLUMB_QUANT_FP_STRICT_H
#define PLUMB_QUANT_FP_STRICT_H

#include <float.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(FLT_EVAL_METHOD) && (FLT_EVAL_METHOD == 1 || FLT_EVAL_METHOD == 2)
#error "bit-exact quantization needs float expressions evaluated in float"
#endif
#if defined(__FAST_MATH__)
#error "bit-exact quantization needs IEEE float semantics: no -ffast-math"
#endif

#endif
