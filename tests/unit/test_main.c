/* test_main.c — runs the registered unit tests and closes with "unit: N passed, N failed,
 * N skipped", after a "kernel sets: ..." line when kernel tests ran (see test.h).
 *
 *   plumb_unit_tests               every test
 *   plumb_unit_tests WORD          the tests whose name contains WORD
 *   plumb_unit_tests --kernel-sets the kernel tests, printing only the kernel-sets line and
 *                                  failures (make test ends with it) */
#include "test.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TESTS 1024
#define MAX_SETS 16

static struct {
    const char *name;
    plumb_test_fn fn;
    int kernels;
} tests[MAX_TESTS];
static int n_tests;
static int current_failures;
static const char *current_skip; /* the reason, once the running test called PLUMB_TEST_SKIP */

/* Kernel sets in the order first named: whether a passing test checked one, whether a failing
 * one did, whether the running test did, and the first reason one could not be checked. */
static struct {
    char name[32];
    bool tested, failed, touched;
    bool has_why;
    char why[128];
} sets[MAX_SETS];
static int n_sets;

void plumb_test_register(const char *name, plumb_test_fn fn, int kernels) {
    if (n_tests >= MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[n_tests].name = name;
    tests[n_tests].fn = fn;
    tests[n_tests].kernels = kernels;
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

void plumb_test_skip(const char *why) { current_skip = why ? why : ""; }

void plumb_test_kernel_set(const char *name, const char *why_not) {
    int i = 0;
    while (i < n_sets && strcmp(sets[i].name, name) != 0) i++;
    if (i == n_sets) {
        if (n_sets == MAX_SETS) {
            fprintf(stderr, "too many kernel sets\n");
            abort();
        }
        snprintf(sets[n_sets++].name, sizeof sets[0].name, "%s", name);
    }
    if (!why_not) {
        sets[i].touched = true;
    } else if (!sets[i].has_why && why_not[0]) {
        sets[i].has_why = true;
        snprintf(sets[i].why, sizeof sets[i].why, "%s", why_not);
    }
}

/* Prints group `which` of the sets (0: tested, 1: failed, 2: not tested, each with its
 * reason), after "; " when an earlier group printed (`any`); returns whether any has now. */
static bool print_group(bool any, int which) {
    bool first = true;
    for (int i = 0; i < n_sets; i++) {
        const bool in = which == 0 ? sets[i].tested && !sets[i].failed : which == 1 ? sets[i].failed
                                                                                    : !sets[i].tested && !sets[i].failed;
        if (!in) continue;
        if (which == 2) { /* each untested set with its own reason */
            printf("%s%s NOT TESTED", any ? "; " : " ", sets[i].name);
            if (sets[i].has_why) printf(": %s", sets[i].why);
            any = true;
            continue;
        }
        printf("%s%s", first ? (any ? "; " : " ") : ", ", sets[i].name);
        first = false;
    }
    if (!first) printf(which == 0 ? " tested" : " FAILED");
    return any || !first;
}

/* "kernel sets: generic, avx2 tested; avx512vnni NOT TESTED: CPU lacks AVX-512 F/BW/VL/VNNI" */
static void print_kernel_sets(void) {
    if (!n_sets) return;
    printf("kernel sets:");
    bool any = false;
    for (int g = 0; g < 3; g++) any = print_group(any, g);
    putchar('\n');
}

int main(int argc, char **argv) {
    const bool kernels_only = argc > 1 && strcmp(argv[1], "--kernel-sets") == 0;
    const char *filter = argc > 1 && !kernels_only ? argv[1] : NULL;
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < n_tests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        if (kernels_only && !tests[i].kernels) continue;
        current_failures = 0;
        current_skip = NULL;
        for (int s = 0; s < n_sets; s++) sets[s].touched = false;
        tests[i].fn();
        if (current_failures) {
            printf("FAIL %s (%d checks failed)\n", tests[i].name, current_failures);
            failed++;
        } else if (current_skip) {
            if (!kernels_only) printf("skip %s: %s\n", tests[i].name, current_skip);
            skipped++;
        } else {
            if (!kernels_only) printf("ok   %s\n", tests[i].name);
            passed++;
        }
        /* a skipped test checked nothing worth reporting */
        for (int s = 0; s < n_sets; s++)
            if (sets[s].touched) {
                if (current_failures) sets[s].failed = true;
                else if (!current_skip) sets[s].tested = true;
            }
        fflush(stdout);
    }
    print_kernel_sets();
    if (!kernels_only) printf("unit: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
