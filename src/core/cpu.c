/* cpu.c — run-time CPU feature detection (cpuid/xgetbv on x86) and the version string.
 * Kernels are chosen from these flags at run time, so one binary runs on any x86-64. */
#include "plumb.h"

#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect(plumb_cpu_features *f) {
    unsigned a, b, c, d, max;
    if (!__get_cpuid(0, &max, &b, &c, &d)) return;
    memcpy(f->vendor + 0, &b, 4);
    memcpy(f->vendor + 4, &d, 4);
    memcpy(f->vendor + 8, &c, 4);
    f->vendor[12] = '\0';
    __cpuid(1, a, b, c, d);
    f->sse3 = c & (1u << 0);
    f->ssse3 = c & (1u << 9);
    f->fma = c & (1u << 12);
    f->sse41 = c & (1u << 19);
    f->sse42 = c & (1u << 20);
    f->f16c = c & (1u << 29);
    bool osxsave = c & (1u << 27), avx_hw = c & (1u << 28);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm_os = (xcr0 & 0x6) == 0x6;           /* XMM and YMM state */
    bool zmm_os = ymm_os && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM_Hi256, Hi16_ZMM */
    bool amx_os = (xcr0 & 0x60000) == 0x60000;     /* XTILECFG, XTILEDATA */
    f->avx = avx_hw && ymm_os;
    if (!f->avx) f->fma = f->f16c = false;
    if (max >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f->avx2 = f->avx && (b & (1u << 5));
        f->bmi2 = b & (1u << 8);
        f->avx512f = zmm_os && (b & (1u << 16));
        f->avx512dq = f->avx512f && (b & (1u << 17));
        f->avx512bw = f->avx512f && (b & (1u << 30));
        f->avx512vl = f->avx512f && (b & (1u << 31));
        f->avx512vbmi = f->avx512f && (c & (1u << 1));
        f->avx512vnni = f->avx512f && (c & (1u << 11));
        f->avx512fp16 = f->avx512f && (d & (1u << 23));
        f->amx_tile = amx_os && (d & (1u << 24));
        f->amx_int8 = amx_os && (d & (1u << 25));
        __cpuid_count(7, 1, a, b, c, d);
        f->avxvnni = f->avx && (a & (1u << 4));
        f->avx512bf16 = f->avx512f && (a & (1u << 5));
    }
    unsigned ext;
    __cpuid(0x80000000, ext, b, c, d);
    if (ext >= 0x80000004) {
        unsigned regs[12];
        for (unsigned i = 0; i < 3; i++) __cpuid(0x80000002 + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2], regs[4 * i + 3]);
        memcpy(f->brand, regs, 48);
        f->brand[48] = '\0';
        /* trim leading spaces */
        size_t s = 0;
        while (f->brand[s] == ' ') s++;
        memmove(f->brand, f->brand + s, 49 - s);
    }
}
#else
static void detect(plumb_cpu_features *f) { (void)f; }
#endif

const plumb_cpu_features *plumb_cpu_get(void) {
    static plumb_cpu_features features;
    static int done; /* detection is idempotent, so a race only repeats it */
    if (!done) {
        plumb_cpu_features f;
        memset(&f, 0, sizeof f);
        detect(&f);
        features = f;
        done = 1;
    }
    return &features;
}

char *plumb_cpu_describe(char *buf, size_t size) {
    const plumb_cpu_features *f = plumb_cpu_get();
    struct {
        bool on;
        const char *name;
    } list[] = {
        {f->sse3, "SSE3"},          {f->ssse3, "SSSE3"},           {f->sse41, "SSE4.1"},
        {f->sse42, "SSE4.2"},       {f->avx, "AVX"},               {f->f16c, "F16C"},
        {f->fma, "FMA"},            {f->avx2, "AVX2"},             {f->bmi2, "BMI2"},
        {f->avxvnni, "AVX-VNNI"},   {f->avx512f, "AVX512F"},       {f->avx512bw, "AVX512BW"},
        {f->avx512vl, "AVX512VL"},  {f->avx512dq, "AVX512DQ"},     {f->avx512vbmi, "AVX512VBMI"},
        {f->avx512vnni, "AVX512VNNI"}, {f->avx512bf16, "AVX512BF16"}, {f->avx512fp16, "AVX512FP16"},
        {f->amx_tile, "AMX-TILE"},  {f->amx_int8, "AMX-INT8"},
    };
    if (!buf || size == 0) return buf;
    buf[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        if (!list[i].on) continue;
        int n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", list[i].name);
        if (n < 0 || (size_t)n >= size - len) break;
        len += (size_t)n;
    }
    return buf;
}

const char *plumb_version(void) { return PLUMB_VERSION_STRING; }
