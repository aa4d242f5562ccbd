/* x86_avx512.c — the kernels of x86_avx2.c compiled for CPUs with AVX-512 (F, BW, VL) and
 * VNNI: the compiler may use the 32 vector registers, and the signed-byte dot products use
 * dpbusd, which forms exactly the same int32 lanes, so results are bit-identical to the AVX2
 * set (a unit test checks it). */
#define PLUMB_X86_SET plumb__kernels_avx512vnni_build
#define PLUMB_X86_SET_NAME "avx512vnni"
/* The two-row decode kernels of this set (Q8_0 output heads, Q4_0/Q5_0 FFNs) prefetch 4096
 * bytes ahead, not x86_avx2.c's 1024 (tuned on Zen 3): on an AVX-512 EPYC with 2 threads,
 * tg64 of Qwen2.5-Coder 0.5B Q4_K_M went from 58 to 90 tokens/s and of Gemma 3 270M from 115
 * to 156 (1024: 58, 2048: 71, 3072: 84, 4096: 88-90, 6144: 83-88; PLUMB_PROFILE=1, the head
 * 6.4 -> 3.7 ms per token). Prompt speed does not change. */
#define PLUMB_PREFETCH 4096
#include "x86_avx2.c"
