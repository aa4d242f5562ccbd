/* error.c — status names and messages (from the X-macro table in plumb.h), the per-thread
 * last-error string, and the assertion handler. */
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>

static _Thread_local char last_error[1024];

const char *plumb_status_name(plumb_status st) {
    switch (st) {
#define PLUMB_STATUS_NAME_(name, value, msg) \
    case name: return #name;
        PLUMB_STATUS_LIST(PLUMB_STATUS_NAME_)
#undef PLUMB_STATUS_NAME_
    }
    return "PLUMB_E_UNKNOWN";
}

const char *plumb_status_message(plumb_status st) {
    switch (st) {
#define PLUMB_STATUS_MSG_(name, value, msg) \
    case name: return msg;
        PLUMB_STATUS_LIST(PLUMB_STATUS_MSG_)
#undef PLUMB_STATUS_MSG_
    }
    return "unknown status";
}

const char *plumb_last_error(void) { return last_error; }

void plumb__clear_error(void) { last_error[0] = '\0'; }

plumb_status plumb__vfail(plumb_status st, const char *fmt, va_list ap) {
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    return st;
}

plumb_status plumb__fail(plumb_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    plumb__vfail(st, fmt, ap);
    va_end(ap);
    return st;
}

void plumb__assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "plumb: internal error at %s:%d: assertion failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}
