/*
 * gc-options.h: the cycle collector's options (POOLMALLOC_GC, POOLMALLOC_GC_THRESHOLD,
 * POOLMALLOC_GC_DEBUG). They belong to the object system, not to the allocator core: they are
 * declared in gc-options.c through the core's option registry (PM_OPTION_GROUP, options.h)
 * and live here rather than in the core's pm_options.
 */
#ifndef PM_GC_OPTIONS_H
#define PM_GC_OPTIONS_H

#include <stdbool.h>

typedef struct pm_gc_options_t {
    long threshold[3]; /* POOLMALLOC_GC_THRESHOLD=a,b,c (default 2000,10,10) */
    bool enabled;      /* POOLMALLOC_GC=0 disables automatic collection */
    long debug;        /* POOLMALLOC_GC_DEBUG: PM_GC_DEBUG_* flags */
} pm_gc_options_t;

/* Read once, when the collector starts (after the allocator has read the environment). */
extern pm_gc_options_t pm_gc_options __attribute__((visibility("hidden")));

#endif /* PM_GC_OPTIONS_H */
