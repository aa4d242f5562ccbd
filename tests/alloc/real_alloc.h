/* real_alloc.h — the real allocation functions behind the link-time wrappers of the
 * allocation checkers (-Wl,--wrap=NAME makes NAME resolve to __wrap_NAME and __real_NAME to
 * the original): alloc_check.c counts calls, fault_check.c fails them. */
#ifndef PLUMB_TESTS_REAL_ALLOC_H
#define PLUMB_TESTS_REAL_ALLOC_H

#include <stddef.h>
#include <sys/types.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

#endif
