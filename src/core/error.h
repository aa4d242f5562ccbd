/* error.h — internal error reporting: the per-thread last-error string behind
 * plumb_last_error(), and the assertion for broken invariants (our own bugs). */
#ifndef PLUMB_CORE_ERROR_H
#define PLUMB_CORE_ERROR_H

#include "plumb.h"

#include <stdarg.h>

/* Formats the detail of a failure into the calling thread's last-error string and returns
 * st, so callers can write `return plumb__fail(PLUMB_E_FORMAT, "...", ...);`. */
plumb_status plumb__fail(plumb_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
plumb_status plumb__vfail(plumb_status st, const char *fmt, va_list ap);
/* Clears the last-error string of the calling thread. */
void plumb__clear_error(void);

/* Broken invariant: logs file:line and aborts. Never used for input errors. */
#define PLUMB_ASSERT(cond)                                                                 \
    do {                                                                                   \
        if (!(cond)) plumb__assert_fail(__FILE__, __LINE__, #cond);                       \
    } while (0)
_Noreturn void plumb__assert_fail(const char *file, int line, const char *expr);

#endif
