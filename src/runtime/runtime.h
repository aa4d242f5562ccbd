/* runtime.h — what the runtime shows of a context to the rest of the library and its tests. */
#ifndef PLUMB_RUNTIME_H
#define PLUMB_RUNTIME_H

#include "backend/backend.h"

/* The context's scheduler: its backends and what the last graph took (runs, copies). */
const plumb_sched *plumb__context_sched(const plumb_context_t *c);
/* Makes fn (NULL: none) the observer of every graph c computes from now on (plumb_sched_observer
 * says when it is called); user is borrowed and passed to it. */
void plumb__context_set_observer(plumb_context_t *c, plumb_sched_observer fn, void *user);

#endif
