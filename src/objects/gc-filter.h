/*
 * gc-filter.h: the Bloom filter of a young collection's set (built in gc-mark.c).
 *
 * A young set's references mostly go to old objects, whose side bytes are cold; a clear
 * filter bit proves a referent is outside the set without touching its byte. Two bits per
 * object (k = 2): about 0.4% false positives at 32 bits per object, where one bit would
 * give 3%.
 */
#ifndef PM_GC_FILTER_H
#define PM_GC_FILTER_H

#include "core-iface.h"

#define FILTER_MAX_OBJECTS 65536
#define FILTER_BITS_PER_OBJECT 32

PM_INLINE uint64_t filter_hash(uintptr_t a) { return (a >> 5) * UINT64_C(0x9E3779B97F4A7C15); }
PM_INLINE bool filter_has(const uint64_t *f, unsigned fshift, uintptr_t a) {
    uint64_t h = filter_hash(a);
    size_t b1 = (size_t)(h >> fshift), b2 = (size_t)((h << 20) >> fshift);
    return ((f[b1 >> 6] >> (b1 & 63)) & (f[b2 >> 6] >> (b2 & 63)) & 1) != 0;
}
PM_INLINE void filter_add(uint64_t *f, unsigned fshift, uintptr_t a) {
    uint64_t h = filter_hash(a);
    size_t b1 = (size_t)(h >> fshift), b2 = (size_t)((h << 20) >> fshift);
    f[b1 >> 6] |= UINT64_C(1) << (b1 & 63);
    f[b2 >> 6] |= UINT64_C(1) << (b2 & 63);
}

#endif /* PM_GC_FILTER_H */
