/*
 * trim.c: giving memory back to the OS on request (pm_trim, malloc_trim) and when the OS
 * refuses memory (pm_release_all, before an allocation gives up: issue 7.12).
 */
#include "internal.h"

/* The calling thread's cache, the caches of heaps nobody holds, every free unit's pages and
 * every cached large mapping. */
size_t pm_release_all(void) {
    pm_heap *me = pm_thread_heap;
    if (me != NULL)
        pm_heap_flush_cache(me);
    pm_heap_service_abandoned();
    return pm_arena_purge(true) + pm_large_trim();
}

int pm_trim(void) {
    pm_init();
    int saved = errno;
    size_t bytes = pm_release_all();
    errno = saved;
    return bytes > 0;
}
