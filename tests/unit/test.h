/* test.h — plumb's small unit-test runner: TEST(name) registers a test at load time;
 * CHECK* record a failure with file:line and let the test go on. test_main.c runs every
 * registered test (or those whose name contains argv[1]) and prints "N passed, N failed". */
#ifndef PLUMB_TEST_H
#define PLUMB_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*plumb_test_fn)(void);
void plumb_test_register(const char *name, plumb_test_fn fn);
void plumb_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                                  \
    static void test_##name(void);                                                  \
    __attribute__((constructor)) static void test_register_##name(void) {           \
        plumb_test_register(#name, test_##name);                                    \
    }                                                                               \
    static void test_##name(void)

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
