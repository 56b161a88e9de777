/*
 * addrmap.h: a map from addresses (non-NULL pointers) to one word each.
 *
 * Open addressing with linear probing and Fibonacci hashing: the key's address, shifted past
 * the bits that alignment makes equal, times 2^64/phi, keeps the top log2(capacity) bits, so
 * keys that differ only by a small stride spread over the whole table. Removal shifts the rest
 * of the probe run back (no tombstones), so lookups never slow down with churn. The map holds
 * at most half its capacity; it grows by doubling, and pm_addrmap_shrink gives memory back
 * once it is mostly empty.
 *
 * The map does not allocate by itself: its owner passes the memory functions (the object layer
 * passes pm_calloc/pm_free; an allocator core can pass its own mmap-based ones).
 */
#ifndef PM_ADDRMAP_H
#define PM_ADDRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Internal to the library (the tests link it statically). */
#define PM_ADDRMAP_API __attribute__((visibility("hidden")))

typedef struct pm_addrmap_entry {
    const void *key; /* NULL: empty */
    uintptr_t value;
} pm_addrmap_entry;

typedef struct pm_addrmap_mem {
    void *(*alloc_zeroed)(size_t bytes); /* NULL when out of memory */
    void (*release)(void *p, size_t bytes);
} pm_addrmap_mem;

typedef struct pm_addrmap {
    pm_addrmap_entry *slots;
    size_t cap, used;      /* cap: 0 or a power of two */
    unsigned log2cap;
    unsigned key_shift;    /* low key bits that carry no information (alignment) */
    size_t min_cap;        /* shrink never goes below this */
    pm_addrmap_mem mem;
} pm_addrmap;

/* An empty map (no memory yet). key_shift: log2 of the keys' alignment. */
PM_ADDRMAP_API void pm_addrmap_init(pm_addrmap *m, pm_addrmap_mem mem, unsigned key_shift);
/* The value word of key, or NULL when absent. */
PM_ADDRMAP_API uintptr_t *pm_addrmap_find(const pm_addrmap *m, const void *key);
/* The value word of key, added with value 0 when absent; NULL when the map cannot grow. */
PM_ADDRMAP_API uintptr_t *pm_addrmap_insert(pm_addrmap *m, const void *key);
/* Removes key if present; returns whether it was. Value pointers obtained before may move. */
PM_ADDRMAP_API bool pm_addrmap_remove(pm_addrmap *m, const void *key);
/* Calls fn for each entry, in no particular order; fn must not change the map. */
PM_ADDRMAP_API void pm_addrmap_iterate(const pm_addrmap *m, void (*fn)(const void *key, uintptr_t *value,
                                                        void *arg), void *arg);
/* Forgets every entry, keeping the memory (cheap when the map is already empty). */
PM_ADDRMAP_API void pm_addrmap_clear(pm_addrmap *m);
/* Gives memory back: a map at most 1/8 full is rehashed at a quarter of its size (never below
 * min_cap; an empty one frees everything). Returns the bytes released. */
PM_ADDRMAP_API size_t pm_addrmap_shrink(pm_addrmap *m);
/* Frees all memory; the map is empty and usable again. */
PM_ADDRMAP_API void pm_addrmap_destroy(pm_addrmap *m);

#endif /* PM_ADDRMAP_H */
