/*
 * objects-iface.c: the core's side of the object layer's interface (src/objects/core-iface.h).
 * Seeing both headers, the compiler checks that the layer's declarations match the core's.
 * The collector's options are the only state of the core the layer reads, and only here.
 */
#include "internal.h"
#include "objects/core-iface.h"
#include "gc-options.h"

_Static_assert(PM_OBJ_ADDRESS_BITS == PM_ADDRESS_BITS, "the object layer's address width");

void pm_gc_settings_get(pm_gc_settings *out) {
    pm_init(); /* reads the environment, the collector's option group included */
    for (int i = 0; i < 3; i++)
        out->threshold[i] = pm_gc_options.threshold[i];
    out->enabled = pm_gc_options.enabled;
    out->debug = pm_gc_options.debug;
}
