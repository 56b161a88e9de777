/*
 * gc-prefetch.h: the collector's adaptive prefetching (used by gc-mark.c).
 *
 * When the graph jumps across memory (references in random order, tens of MiB of side
 * table), a walk waits on cache misses and prefetching the side bytes a few objects ahead
 * halves its time; when references stay near, the prefetches are pure overhead (+50%). Which
 * case holds is measured, not guessed: a table is walked in chunks, and every ADAPT_PERIOD
 * chunks one chunk runs each way, timed; the faster way is used until the next probe.
 */
#ifndef PM_GC_PREFETCH_H
#define PM_GC_PREFETCH_H

#include "core-iface.h"

#include <time.h>

/* In prefetching mode a scan prefetches the referents' side bytes of the object this far
 * ahead in its table, and the object twice as far: tables give the future addresses for free,
 * which a linked list would not. Far enough for some 30 misses in flight: a random access to
 * DRAM takes 150-200 ns here, the walk needs one every 5-8 ns. */
#define PREFETCH_AHEAD 32

#define ADAPT_PERIOD 64

typedef struct adapt {
    uint32_t step;
    bool prefetch;
    uint64_t cost[2][2]; /* [mode][last two probes]: the smaller one counts (an interrupt
                            can only make a probe slower) */
} adapt;

PM_INLINE uint64_t pm_gc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A cheap clock for the probes: only differences on one thread matter. */
PM_INLINE uint64_t ticks(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_ia32_rdtsc();
#else
    return pm_gc_now_ns();
#endif
}

PM_INLINE bool adapt_choice(const adapt *a) {
    uint32_t p = a->step % ADAPT_PERIOD;
    return p == 0 ? false : p == 1 ? true : a->prefetch;
}

PM_INLINE uint64_t adapt_estimate(const adapt *a, int mode) {
    uint64_t x = a->cost[mode][0], y = a->cost[mode][1];
    return y != 0 && y < x ? y : x;
}

PM_INLINE void adapt_note(adapt *a, bool prefetch, uint64_t cost) {
    uint32_t p = a->step++ % ADAPT_PERIOD;
    if (p > 1)
        return;
    a->cost[prefetch][1] = a->cost[prefetch][0];
    a->cost[prefetch][0] = cost;
    if (p == 1)
        a->prefetch = adapt_estimate(a, 1) < adapt_estimate(a, 0);
}


#endif /* PM_GC_PREFETCH_H */
