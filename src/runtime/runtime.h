/* runtime.h — what the runtime shows of a context to the rest of the library and its tests. */
#ifndef PLUMB_RUNTIME_H
#define PLUMB_RUNTIME_H

#include "backend/backend.h"

/* The context's scheduler: its backends and what the last graph took (runs, copies). */
const plumb_sched *plumb__context_sched(const plumb_context_t *c);

#endif
