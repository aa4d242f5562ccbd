/* test_main.c — runs the registered unit tests and prints "N passed, N failed". */
#include "test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TESTS 1024

static struct {
    const char *name;
    plumb_test_fn fn;
} tests[MAX_TESTS];
static int n_tests;
static int current_failures;

void plumb_test_register(const char *name, plumb_test_fn fn) {
    if (n_tests >= MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[n_tests].name = name;
    tests[n_tests].fn = fn;
    n_tests++;
}

void plumb_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    if (current_failures < 20) {
        fprintf(stderr, "  %s:%d: ", file, line);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    current_failures++;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    for (int i = 0; i < n_tests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        current_failures = 0;
        tests[i].fn();
        if (current_failures) {
            printf("FAIL %s (%d checks failed)\n", tests[i].name, current_failures);
            failed++;
        } else {
            printf("ok   %s\n", tests[i].name);
            passed++;
        }
        fflush(stdout);
    }
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
