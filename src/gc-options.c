/*
 * gc-options.c: the cycle collector's options, registered with the core's option table
 * (options.h: PM_OPTION_GROUP) so that parsing, messages and --help cover them like any other.
 */
#include "gc-options.h"

#include "options.h"

#include <limits.h>

pm_gc_options_t pm_gc_options = {
    .threshold = {2000, 10, 10}, /* CPython's defaults: a young collection per 2000 objects */
    .enabled = true,
    .debug = 0,
};

static const pm_option_flag gc_debug_names[] = {
    {"stats", PM_GC_DEBUG_STATS},
    {"saveall", PM_GC_DEBUG_SAVEALL},
    {"leak", PM_GC_DEBUG_LEAK},
    {"checks", PM_GC_DEBUG_CHECKS},
    {NULL, 0},
};
#define GC_DEBUG_ALL (PM_GC_DEBUG_STATS | PM_GC_DEBUG_SAVEALL | PM_GC_DEBUG_LEAK | PM_GC_DEBUG_CHECKS)

/* Read when the collector starts (pm_gc_domain_init), which is after any late environment
 * unless an object was made before libc started: late is allowed. Thresholds and the on/off
 * switch are tuning, obeyed under setuid; the debug flags print, keep garbage and abort on
 * failed checks, so they are not. */
static const pm_option_desc gc_option_table[] = {
    {"GC_THRESHOLD", PM_KIND_TRIPLE, PM_OPT_SECURE_OK | PM_OPT_LATE_OK, &pm_gc_options.threshold,
     0, INT_MAX, "2000,10,10",
     "cycle collector thresholds for generations 0, 1 and 2 (0 disables a generation)", NULL},
    {"GC", PM_KIND_BOOL, PM_OPT_SECURE_OK | PM_OPT_LATE_OK, &pm_gc_options.enabled, 0, 1, "1",
     "run the cycle collector automatically", NULL},
    {"GC_DEBUG", PM_KIND_FLAGS, PM_OPT_LATE_OK, &pm_gc_options.debug, 0, GC_DEBUG_ALL, "0",
     "cycle collector debug flags: a number or names from the list in ACCEPTS (ignored under "
     "setuid)", gc_debug_names},
};
PM_OPTION_GROUP(gc_options_group, gc_option_table);
