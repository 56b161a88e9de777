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

/* Takes from the cache what serves a request of size bytes best. The smallest mapping at
 * least that large is split when it is much larger: its head is returned and its tail stays
 * cached, resident, for the next request (pure bookkeeping: separate pieces of one mapping
 * can be unmapped or remapped separately later). With no mapping large enough, the largest is
 * returned and the caller grows it. NULL if the cache is empty. */
static char *cache_take(size_t size, size_t *got) {
    size_t best = CACHE_SLOTS, largest = CACHE_SLOTS;
    for (size_t i = 0; i < cache_count; i++) {
        if (cache[i].size >= size && (best == CACHE_SLOTS || cache[i].size < cache[best].size))
            best = i;
        if (largest == CACHE_SLOTS || cache[i].size > cache[largest].size)
            largest = i;
    }
    if (best == CACHE_SLOTS)
        best = largest;
    if (best == CACHE_SLOTS)
        return NULL;
    char *map = cache[best].map;
    stats.cache_hits++;
    if (cache[best].size >= size && cache[best].size - size > size / 4) {
        cache[best].map += size;
        cache[best].size -= size;
        cache_bytes -= size;
        *got = size;
        return map;
    }
    *got = cache[best].size;
    cache_bytes -= cache[best].size;
    cache[best] = cache[--cache_count];
    return map;
}

/* Grows a mapping taken from the cache that is too small, outside the lock (mremap keeps its
 * pages, already faulted in; only the new part is fresh). NULL if the kernel refuses; the
 * mapping is then gone. */
static char *cache_fit(char *map, size_t *size, size_t need) {
    if (*size >= need)
        return map;
    char *grown = pm_os_remap(map, *size, need, true);
    if (grown == NULL) {
        pm_os_unmap(map, *size);
        return NULL;
    }
    *size = need;
    return grown;
}

/* A block is about to take `fresh` bytes of new pages from the kernel: give back as much of
 * the cache, oldest first. The cache exists to be reused; when it cannot serve a request, the
 * memory it holds would only add to the new pages, and resident memory would grow past what
 * the program ever had live. */
static void cache_make_room(size_t fresh) {
    size_t dropped = 0;
    while (cache_count > 0 && dropped < fresh) {
        size_t oldest = 0;
        for (size_t i = 1; i < cache_count; i++)
            if (cache[i].freed_ms < cache[oldest].freed_ms)
                oldest = i;
        dropped += cache[oldest].size;
        cache_drop(oldest);
    }
}

/* Keeps a freed mapping for reuse if it fits the cache; false if the caller must unmap it. */
static bool cache_put(char *map, size_t size, uint64_t now) {
    if (size > pm_opt.large_cache)
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
    size_t map_size = need, reused = 0; /* bytes of the block that hold old data */
    if (align == PM_PAGE_SIZE && pm_opt.large_cache > 0) {
        pm_lock(&large_lock);
        map = cache_take(need, &map_size);
        if (map != NULL && map_size < need)
            cache_make_room(need - map_size);
        pm_unlock(&large_lock);
        if (map != NULL) {
            reused = map_size < need ? map_size : need;
            map = cache_fit(map, &map_size, need);
        }
    }
    if (map == NULL) {
        reused = 0;
        map_size = need;
        map = align == PM_PAGE_SIZE ? pm_os_map(need) : pm_os_map_aligned(need, align);
        if (map == NULL)
            return NULL;
    }
    p = map;
    if (zero && reused)
        memset(p, 0, reused < size ? reused : size); /* grown pages are fresh, hence zero */
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

/* A growing block whose mapping is followed by a cached piece (the tail of a mapping split by
 * cache_take, typically) takes from that piece what it needs: memory already mapped and
 * faulted in, so the block grows in place with no system call. Under large_lock. */
static bool absorb_cached_neighbour(large_entry *e, size_t need) {
    char *next = e->map + e->map_size;
    for (size_t i = 0; i < cache_count; i++) {
        if (cache[i].map != next)
            continue;
        size_t take = need - e->map_size;
        if (take > cache[i].size)
            take = cache[i].size;
        cache[i].map += take;
        cache[i].size -= take;
        cache_bytes -= take;
        if (cache[i].size == 0)
            cache[i] = cache[--cache_count];
        e->map_size += take;
        stats.live_bytes += take;
        return true;
    }
    return false;
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
    if (need > old && absorb_cached_neighbour(e, need))
        old = e->map_size;
    if (need <= old && need >= old / 2) { /* fits, or shrinks a little: keep the pages */
        pm_unlock(&large_lock);
        return p;
    }
    if (need > old)
        cache_make_room(need - old);
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

/* Drops cached mappings older than the purge delay: called from the pools' purge too, so that
 * a program that stops allocating large blocks does not keep the cache resident. */
void pm_large_expire(uint64_t now) {
    if (__atomic_load_n(&cache_count, __ATOMIC_RELAXED) == 0) /* unlocked peek: a hint */
        return;
    pm_lock(&large_lock);
    cache_expire(now, false);
    pm_unlock(&large_lock);
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
