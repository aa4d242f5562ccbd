/* x86_avx512.c — the kernels of x86_avx2.c compiled for CPUs with AVX-512 (F, BW, VL) and
 * VNNI: the compiler may use the 32 vector registers, and the signed-byte dot products use
 * dpbusd, which forms exactly the same int32 lanes, so results are bit-identical to the AVX2
 * set (a unit test checks it). */
#define PLUMB_X86_SET plumb__kernels_avx512vnni_build
#define PLUMB_X86_SET_NAME "avx512vnni"
#include "x86_avx2.c"
