/* test.h — plumb's small unit-test runner: TEST(name) registers a test at load time;
 * CHECK* record a failure with file:line and let the test go on; PLUMB_TEST_SKIP(why) ends a
 * test that has nothing to check on this machine (a kernel set the CPU lacks) as skipped, so
 * that it is not counted as passed. test_main.c runs every registered test (or those whose
 * name contains argv[1]) and closes with "unit: N passed, N failed, N skipped".
 *
 * Kernel tests (KERNEL_TEST) also name the CPU kernel sets they checked, or could not check
 * and why (plumb_test_kernel_set): the run prints one "kernel sets: ..." line from that, so a
 * machine without AVX-512 says so instead of passing quietly. `plumb_unit_tests --kernel-sets`
 * runs the kernel tests alone and prints only that line (and any failure). */
#ifndef PLUMB_TEST_H
#define PLUMB_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*plumb_test_fn)(void);
/* kernels: a KERNEL_TEST (run by --kernel-sets too) */
void plumb_test_register(const char *name, plumb_test_fn fn, int kernels);
void plumb_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks the running test skipped (unless a check has failed in it: then it fails). */
void plumb_test_skip(const char *why);
/* For the "kernel sets:" line: the running test checked kernel set `name` (why_not NULL), or
 * could not (why_not the reason, "CPU lacks AVX2"; "" for a set it merely knows of). A set
 * counts as tested when a test that checked it passed; a set no test checked is reported NOT
 * TESTED with the first reason given. */
void plumb_test_kernel_set(const char *name, const char *why_not);

#define TEST_REGISTER_(name, kernels)                                               \
    static void test_##name(void);                                                  \
    __attribute__((constructor)) static void test_register_##name(void) {           \
        plumb_test_register(#name, test_##name, kernels);                           \
    }                                                                               \
    static void test_##name(void)

#define TEST(name) TEST_REGISTER_(name, 0)
/* A test of the CPU kernel sets (see plumb_test_kernel_set). */
#define KERNEL_TEST(name) TEST_REGISTER_(name, 1)

/* Ends the test as skipped; use it in the test's own body (it returns from the function). */
#define PLUMB_TEST_SKIP(why)                                                        \
    do {                                                                            \
        plumb_test_skip(why);                                                       \
        return;                                                                     \
    } while (0)

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) plumb_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);       \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                          \
    do {                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                         \
        if (a_ != b_)                                                               \
            plumb_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b,   \
                            a_, b_);                                                \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                       \
    do {                                                                            \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);              \
        if (!(fabs(a_ - b_) <= t_))                                                 \
            plumb_test_fail(__FILE__, __LINE__, "|%s - %s| <= %s: %.9g vs %.9g",    \
                            #a, #b, #tol, a_, b_);                                  \
    } while (0)

#define CHECK_STATUS(expr, want)                                                    \
    do {                                                                            \
        int got_ = (int)(expr);                                                     \
        if (got_ != (int)(want))                                                    \
            plumb_test_fail(__FILE__, __LINE__, "%s: got %d, want %s (%d)", #expr,  \
                            got_, #want, (int)(want));                              \
    } while (0)

#endif
