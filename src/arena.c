/*
 * arena.c: arenas (4 MiB-aligned regions from the OS) and the pools carved out of them.
 *
 * Everything here runs under pm_arena_lock, on the slow path: a heap comes here only when a
 * class has no pool with a free block left (acquire) or a pool became empty (release).
 *
 * Policy, as pymalloc's: new pools come from the arena with the fewest free units that fits,
 * so that the emptiest arenas drain and can be returned whole. Units a released pool gave back
 * stay resident for the purge delay (a program that frees and allocates again should not pay
 * page faults for it), then are purged with madvise; an arena that is entirely free is unmapped
 * once more than POOLMALLOC_ARENA_RETAIN such arenas exist.
 */
#include "internal.h"

uint8_t pm_arena_map[PM_ARENA_MAP_LEN];
pthread_mutex_t pm_arena_lock = PM_LOCK_INITIALIZER;
pm_arena *pm_arenas;
pm_global_stats pm_gstats;

pm_pool pm_empty_pool = {.state = PM_POOL_FREE};
pm_pool pm_dead_pool = {.state = PM_POOL_FREE};

static uint64_t last_purge_ms;
static size_t header_units; /* units at the start of each arena that hold pm_arena */

void pm_arena_init(void) {
    header_units = (sizeof(pm_arena) + PM_UNIT_SIZE - 1) / PM_UNIT_SIZE;
}

/* ---- unit bitmaps --------------------------------------------------------------------------- */

static bool bit_get(const uint64_t *map, unsigned i) { return (map[i / 64] >> (i % 64)) & 1; }
static void bit_set(uint64_t *map, unsigned i) { map[i / 64] |= (uint64_t)1 << (i % 64); }
static void bit_clear(uint64_t *map, unsigned i) { map[i / 64] &= ~((uint64_t)1 << (i % 64)); }

/* First run of n free units aligned to n (pools of n units start at a multiple of n, which
 * keeps the arena from fragmenting into odd gaps), or -1. */
static int find_free_run(const pm_arena *a, unsigned n) {
    unsigned first = (a->first_unit + n - 1) / n * n;
    for (unsigned u = first; u + n <= a->nunits; u += n) {
        unsigned k = 0;
        while (k < n && bit_get(a->free_map, u + k))
            k++;
        if (k == n)
            return (int)u;
    }
    return -1;
}

/* ---- arenas ---------------------------------------------------------------------------------- */

static pm_arena *arena_create(void) {
    size_t size = pm_opt.arena_size ? pm_opt.arena_size : PM_ARENA_ALIGN;
    pm_arena *a = pm_os_map_aligned(size, PM_ARENA_ALIGN);
    if (a == NULL)
        return NULL;
    a->nunits = (uint32_t)(size / PM_UNIT_SIZE);
    a->first_unit = (uint32_t)header_units;
    for (unsigned u = 0; u < PM_UNITS_MAX; u++)
        a->unit_pool[u] = &pm_dead_pool;
    for (unsigned u = a->first_unit; u < a->nunits; u++)
        bit_set(a->free_map, u);
    a->nfree = a->nunits - a->first_unit;
    a->next = pm_arenas;
    if (pm_arenas)
        pm_arenas->prev = a;
    pm_arenas = a;
    pm_arena_map[(uintptr_t)a >> PM_ARENA_SHIFT] = 1;
    pm_gstats.arenas_mapped++;
    pm_gstats.arena_bytes += size;
    return a;
}

static void arena_destroy(pm_arena *a) {
    size_t size = (size_t)a->nunits * PM_UNIT_SIZE;
    if (a->prev)
        a->prev->next = a->next;
    else
        pm_arenas = a->next;
    if (a->next)
        a->next->prev = a->prev;
    pm_arena_map[(uintptr_t)a >> PM_ARENA_SHIFT] = 0;
    pm_os_unmap(a, size);
    pm_gstats.arenas_unmapped++;
    pm_gstats.arena_bytes -= size;
}

static bool arena_is_empty(const pm_arena *a) { return a->nfree == a->nunits - a->first_unit; }

/* The fullest arena that has room for n units: pymalloc's rule, so empty arenas can go. */
static pm_arena *arena_for_pool(unsigned n, int *unit) {
    pm_arena *best = NULL;
    int best_unit = -1;
    for (pm_arena *a = pm_arenas; a; a = a->next) {
        if (a->nfree < n || (best && a->nfree >= best->nfree))
            continue;
        int u = find_free_run(a, n);
        if (u >= 0) {
            best = a;
            best_unit = u;
        }
    }
    if (best == NULL && (best = arena_create()) != NULL)
        best_unit = find_free_run(best, n);
    *unit = best_unit;
    return best_unit >= 0 ? best : NULL;
}

/* ---- pools ------------------------------------------------------------------------------------ */

static void pool_init(pm_pool *pool, pm_arena *a, unsigned u, unsigned n, unsigned cls,
                      pm_heap *heap) {
    uint32_t bs = pm_class_size[cls];
    size_t bytes = (size_t)n * PM_UNIT_SIZE;
    pool->free = NULL;
    pm_pool_set_owner(pool, heap, false);
    /* Blocks end at the pool's end; the tail goes in front (I3). */
    pool->start = (char *)a + (size_t)u * PM_UNIT_SIZE + bytes % bs;
    pool->div_magic = UINT64_MAX / bs + 1; /* ceil(2^64 / bs) for bs not a power of two, */
    if ((bs & (bs - 1)) == 0)              /* and exactly 2^64 / bs for powers of two */
        pool->div_magic = (uint64_t)1 << (64 - __builtin_ctz(bs));
    pool->used = 1; /* it starts as its heap's current pool (I1) */
    pool->nmalloc = pool->requested = 0;
    pool->block_size = bs;
    pool->capacity = (uint32_t)(bytes / bs);
    pool->span = pool->capacity * bs;
    pool->cls = (uint8_t)cls;
    pool->state = PM_POOL_CURRENT;
    pool->carve = pool->start;
    pool->end = pool->start + pool->span;
    pool->next = pool->prev = NULL;
    pool->arena = a;
    pool->first_unit = (uint16_t)u;
    pool->units = (uint16_t)n;
}

static void purge_if_due(uint64_t now);

pm_pool *pm_pool_acquire(pm_heap *heap, unsigned cls) {
    if (PM_UNLIKELY(cls == 0 || cls >= PM_NUM_CLASSES))
        pm_fatal("internal error: pool requested for size class %u", cls);
    unsigned n = pm_class_units[cls];
    pm_lock(&pm_arena_lock);
    int u;
    pm_arena *a = arena_for_pool(n, &u);
    pm_pool *pool = NULL;
    if (a != NULL) {
        for (unsigned k = 0; k < n; k++) {
            bit_clear(a->free_map, (unsigned)u + k);
            if (bit_get(a->dirty_map, (unsigned)u + k)) {
                bit_clear(a->dirty_map, (unsigned)u + k);
                a->ndirty--;
            }
        }
        a->nfree -= n;
        pool = &a->pools[u];
        pool_init(pool, a, (unsigned)u, n, cls, heap);
        /* Publish the unit map last: free() of a block of this pool can only come after the
         * block is handed out, but a stale map entry must never point at a half-made pool. */
        for (unsigned k = 0; k < n; k++)
            a->unit_pool[u + k] = pool;
        pm_gstats.pools_acquired++;
    }
    purge_if_due(pm_os_now_ms());
    pm_unlock(&pm_arena_lock);
    return pool;
}

void pm_pool_release(pm_pool *pool) {
    pm_arena *a = pool->arena;
    pm_lock(&pm_arena_lock);
    for (unsigned k = 0; k < pool->units; k++)
        a->unit_pool[pool->first_unit + k] = &pm_dead_pool;
    pm_pool_set_owner(pool, NULL, false);
    pool->state = PM_POOL_FREE;
    pool->free = NULL;
    /* Only the part of the pool ever carved was touched; the rest needs no purge. */
    char *base = (char *)a + (size_t)pool->first_unit * PM_UNIT_SIZE;
    unsigned touched = (unsigned)((pool->carve - base + PM_UNIT_SIZE - 1) / PM_UNIT_SIZE);
    for (unsigned k = 0; k < pool->units; k++) {
        bit_set(a->free_map, pool->first_unit + k);
        if (k < touched && !bit_get(a->dirty_map, pool->first_unit + k)) {
            bit_set(a->dirty_map, pool->first_unit + k);
            a->ndirty++;
        }
    }
    a->nfree += pool->units;
    uint64_t now = pm_os_now_ms();
    if (a->dirty_since_ms == 0)
        a->dirty_since_ms = now ? now : 1;
    pm_gstats.pools_released++;
    purge_if_due(now);
    pm_unlock(&pm_arena_lock);
}

/* Threads up to a page of never-used blocks (at least one) onto the free list, in address
 * order, so that a fresh pool's memory is touched only as it is used. */
bool pm_pool_carve(pm_pool *pool) {
    if (pool->carve >= pool->end)
        return false;
    char *limit = (char *)(((uintptr_t)pool->carve + PM_PAGE_SIZE) & ~(uintptr_t)(PM_PAGE_SIZE - 1));
    if (limit < pool->carve + pool->block_size)
        limit = pool->carve + pool->block_size;
    if (limit > pool->end)
        limit = pool->end;
    pm_block *head = NULL, **tail = &head;
    char *b = pool->carve;
    for (; b + pool->block_size <= limit; b += pool->block_size) {
        pm_block *blk = (pm_block *)b;
        blk->key = pm_free_key(pool);
        *tail = blk;
        tail = &blk->next;
    }
    if (head == NULL) { /* the page ends inside a block: take that block whole */
        pm_block *blk = (pm_block *)b;
        blk->key = pm_free_key(pool);
        head = blk;
        tail = &blk->next;
        b += pool->block_size;
    }
    *tail = pool->free;
    pool->free = head;
    pool->carve = b;
    return true;
}

/* ---- purging ------------------------------------------------------------------------------- */

static size_t arena_purge(pm_arena *a) {
    size_t bytes = 0;
    for (unsigned u = a->first_unit; u < a->nunits;) {
        if (!bit_get(a->dirty_map, u)) {
            u++;
            continue;
        }
        unsigned run = u;
        while (run < a->nunits && bit_get(a->dirty_map, run)) {
            bit_clear(a->dirty_map, run);
            run++;
        }
        pm_os_purge((char *)a + (size_t)u * PM_UNIT_SIZE, (size_t)(run - u) * PM_UNIT_SIZE);
        bytes += (size_t)(run - u) * PM_UNIT_SIZE;
        u = run;
    }
    a->ndirty = 0;
    a->dirty_since_ms = 0;
    return bytes;
}

static size_t purge_locked(uint64_t now, bool force) {
    size_t bytes = 0;
    long retain = pm_opt.arena_retain;
    long empty_kept = 0;
    for (pm_arena *a = pm_arenas, *next; a; a = next) {
        next = a->next;
        bool due = force || (pm_opt.purge_delay_ms >= 0 &&
                             now - a->dirty_since_ms >= (uint64_t)pm_opt.purge_delay_ms);
        if (arena_is_empty(a) && due) {
            if (empty_kept >= retain || force) {
                bytes += (size_t)a->ndirty * PM_UNIT_SIZE; /* resident memory returned */
                arena_destroy(a);
                continue;
            }
            empty_kept++;
        }
        if (a->ndirty && due)
            bytes += arena_purge(a);
    }
    if (bytes) {
        pm_gstats.purged_bytes += bytes;
        pm_gstats.purges++;
    }
    last_purge_ms = now;
    pm_large_expire(now); /* lock order: pm_arena_lock, then the large lock */
    return bytes;
}

/* Called on every pool release: cheap unless the delay since the last purge has passed. */
static void purge_if_due(uint64_t now) {
    long delay = pm_opt.purge_delay_ms;
    if (delay < 0 || now - last_purge_ms < (uint64_t)delay)
        return;
    purge_locked(now, false);
}

size_t pm_arena_purge(bool force) {
    pm_lock(&pm_arena_lock);
    size_t bytes = purge_locked(pm_os_now_ms(), force);
    pm_unlock(&pm_arena_lock);
    return bytes;
}
