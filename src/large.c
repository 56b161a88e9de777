/*
 * large.c: blocks above the mmap threshold. Each gets its own mapping; a hash table keyed by
 * the block's address records it, so that free() can tell a large block from a foreign pointer
 * without reading memory in front of the pointer (which may not be mapped).
 *
 * Freed mappings are kept in a small cache (POOLMALLOC_LARGE_CACHE bytes, for at most the purge
 * delay) because programs that free a big buffer often allocate one of similar size next, and a
 * fresh mapping costs a page fault per 4 KiB touched; growth goes through mremap, so a buffer
 * grown by realloc is never copied.
 */
#include "internal.h"

typedef struct large_entry {
    uintptr_t ptr;     /* the block; 0 empty, 1 deleted */
    char *map;         /* the mapping it lives in */
    size_t map_size;
} large_entry;

typedef struct cached_map {
    char *map;
    size_t size;
    uint64_t freed_ms;
} cached_map;

#define DELETED ((uintptr_t)1)
#define CACHE_SLOTS 16

static pthread_mutex_t large_lock = PM_LOCK_INITIALIZER;
static large_entry *table;
static size_t table_cap, table_used /* live + deleted */, live_count;
static cached_map cache[CACHE_SLOTS];
static size_t cache_count, cache_bytes;
static pm_large_stats stats;

static size_t page_round(size_t n) { return (n + PM_PAGE_SIZE - 1) & ~(size_t)(PM_PAGE_SIZE - 1); }

static size_t slot_of(uintptr_t p, size_t cap) {
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull; /* Fibonacci hashing */
    return (size_t)(h >> 20) & (cap - 1);
}

/* ---- the table (under large_lock) ------------------------------------------------------------ */

static large_entry *table_find(uintptr_t p) {
    if (table == NULL)
        return NULL;
    for (size_t i = slot_of(p, table_cap);; i = (i + 1) & (table_cap - 1)) {
        if (table[i].ptr == p)
            return &table[i];
        if (table[i].ptr == 0)
            return NULL;
    }
}

static bool table_grow(void) {
    size_t cap = table_cap ? table_cap * 2 : 1024;
    if (live_count * 4 < table_cap) /* mostly tombstones: rehash at the same size */
        cap = table_cap;
    large_entry *t = pm_os_map(cap * sizeof *t);
    if (t == NULL)
        return false;
    for (size_t i = 0; i < table_cap; i++) {
        if (table[i].ptr <= DELETED)
            continue;
        size_t j = slot_of(table[i].ptr, cap);
        while (t[j].ptr != 0)
            j = (j + 1) & (cap - 1);
        t[j] = table[i];
    }
    if (table)
        pm_os_unmap(table, table_cap * sizeof *table);
    table = t;
    table_cap = cap;
    table_used = live_count;
    return true;
}

static bool table_insert(uintptr_t p, char *map, size_t map_size) {
    if ((table_used + 1) * 2 > table_cap && !table_grow())
        return false;
    size_t i = slot_of(p, table_cap);
    while (table[i].ptr > DELETED)
        i = (i + 1) & (table_cap - 1);
    if (table[i].ptr == 0)
        table_used++;
    table[i] = (large_entry){p, map, map_size};
    live_count++;
    return true;
}

static void table_remove(large_entry *e) {
    e->ptr = DELETED;
    live_count--;
}

/* ---- the cache of freed mappings (under large_lock) ----------------------------------------- */

static void cache_drop(size_t i) {
    pm_os_unmap(cache[i].map, cache[i].size);
    cache_bytes -= cache[i].size;
    cache[i] = cache[--cache_count];
}

static void cache_expire(uint64_t now, bool all) {
    long delay = pm_opt.purge_delay_ms;
    for (size_t i = 0; i < cache_count;) {
        if (all || (delay >= 0 && now - cache[i].freed_ms >= (uint64_t)delay))
            cache_drop(i);
        else
            i++;
    }
}

/* A cached mapping of at least size bytes and not wastefully larger, or NULL. */
static char *cache_take(size_t size, size_t *got) {
    size_t best = CACHE_SLOTS;
    for (size_t i = 0; i < cache_count; i++)
        if (cache[i].size >= size && cache[i].size - size <= size / 4 &&
            (best == CACHE_SLOTS || cache[i].size < cache[best].size))
            best = i;
    if (best == CACHE_SLOTS)
        return NULL;
    char *map = cache[best].map;
    *got = cache[best].size;
    cache_bytes -= cache[best].size;
    cache[best] = cache[--cache_count];
    stats.cache_hits++;
    return map;
}

/* Keeps a freed mapping for reuse if it fits the cache; false if the caller must unmap it. */
static bool cache_put(char *map, size_t size, uint64_t now) {
    if (size > pm_opt.large_cache / 2)
        return false;
    while (cache_count > 0 && (cache_count == CACHE_SLOTS || cache_bytes + size > pm_opt.large_cache)) {
        size_t oldest = 0;
        for (size_t i = 1; i < cache_count; i++)
            if (cache[i].freed_ms < cache[oldest].freed_ms)
                oldest = i;
        cache_drop(oldest);
    }
    cache[cache_count++] = (cached_map){map, size, now};
    cache_bytes += size;
    return true;
}

/* ---- public face ---------------------------------------------------------------------------- */

void *pm_large_alloc(size_t size, size_t align, bool zero) {
    if (align < PM_PAGE_SIZE)
        align = PM_PAGE_SIZE;
    size_t need = page_round(size ? size : 1); /* even 0 bytes get a unique block */
    if (need < size || need + align < need)
        return NULL;
    char *map = NULL, *p;
    size_t map_size = need;
    bool from_cache = false;
    if (align == PM_PAGE_SIZE && pm_opt.large_cache > 0) {
        pm_lock(&large_lock);
        map = cache_take(need, &map_size);
        pm_unlock(&large_lock);
        from_cache = map != NULL;
    }
    if (map == NULL) {
        map_size = need;
        map = align == PM_PAGE_SIZE ? pm_os_map(need) : pm_os_map_aligned(need, align);
        if (map == NULL)
            return NULL;
    }
    p = map;
    if (zero && from_cache)
        memset(p, 0, size);
    pm_lock(&large_lock);
    bool ok = table_insert((uintptr_t)p, map, map_size);
    if (ok) {
        stats.nalloc++;
        stats.live_bytes += map_size;
    }
    pm_unlock(&large_lock);
    if (!ok) {
        pm_os_unmap(map, map_size);
        return NULL;
    }
    return p;
}

bool pm_large_free(void *p) {
    uint64_t now = pm_os_now_ms();
    pm_lock(&large_lock);
    large_entry *e = table_find((uintptr_t)p);
    if (e == NULL) {
        pm_unlock(&large_lock);
        return false;
    }
    char *map = e->map;
    size_t size = e->map_size;
    table_remove(e);
    stats.nfree++;
    stats.live_bytes -= size;
    cache_expire(now, false);
    bool kept = map == (char *)p && pm_opt.large_cache > 0 && cache_put(map, size, now);
    pm_unlock(&large_lock);
    if (!kept)
        pm_os_unmap(map, size);
    return true;
}

size_t pm_large_usable(const void *p) {
    pm_lock(&large_lock);
    large_entry *e = table_find((uintptr_t)p);
    size_t n = e ? (size_t)(e->map + e->map_size - (const char *)p) : 0;
    pm_unlock(&large_lock);
    return n;
}

/* Resizes a large block in place or by moving its pages (mremap): no copy. NULL with the block
 * untouched if the kernel refuses; the caller then falls back to malloc + copy. */
void *pm_large_realloc(void *p, size_t size) {
    size_t need = page_round(size);
    if (need < size)
        return NULL;
    pm_lock(&large_lock);
    /* Grow first (it moves entries), so that the insert below cannot fail or need to. */
    if ((table_used + 1) * 2 > table_cap && !table_grow()) {
        pm_unlock(&large_lock);
        return NULL;
    }
    large_entry *e = table_find((uintptr_t)p);
    if (e == NULL || e->map != (char *)p) { /* aligned blocks are not remapped */
        pm_unlock(&large_lock);
        return NULL;
    }
    size_t old = e->map_size;
    if (need <= old && need >= old / 2) { /* shrinking a little: keep the pages */
        pm_unlock(&large_lock);
        return p;
    }
    char *q = pm_os_remap(p, old, need, true);
    if (q == NULL) {
        pm_unlock(&large_lock);
        return NULL;
    }
    table_remove(e);
    table_insert((uintptr_t)q, q, need);
    stats.nremap++;
    stats.live_bytes += need - old;
    pm_unlock(&large_lock);
    return q;
}

size_t pm_large_trim(void) {
    pm_lock(&large_lock);
    size_t bytes = cache_bytes;
    cache_expire(0, true);
    pm_unlock(&large_lock);
    return bytes;
}

void pm_large_get_stats(pm_large_stats *out) {
    pm_lock(&large_lock);
    *out = stats;
    out->live_blocks = live_count;
    out->cached_bytes = cache_bytes;
    out->mapped_bytes = stats.live_bytes + cache_bytes;
    pm_unlock(&large_lock);
}

void pm_large_fork_prepare(void) { pm_lock(&large_lock); }
void pm_large_fork_parent(void) { pm_unlock(&large_lock); }
void pm_large_fork_child(void) { pm_lock_reinit(&large_lock); }
