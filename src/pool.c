/*
 * pool.c: pools (runs of units holding blocks of one class), their lazy carving, and the
 * atomic free list through which every thread but the owner's fast path gives blocks back.
 *
 * A pool is ATTACHED while it is its owner's current pool of its class: the owner pops from
 * and pushes onto the local list `free` with plain loads and stores. Every other free (another
 * thread's, or the owner's own into a pool that is not current) goes onto `xfree` with one
 * compare-and-swap that also counts the block. When the owner's current pool runs dry it
 * DETACHES it, noting how many blocks are out (detached_used). From then on the pool is
 * nobody's to touch but through xfree, so the thread whose free brings the count on xfree up
 * to detached_used knows that every block is back, and releases the pool to its arena itself:
 * memory comes back even if the owner never calls malloc again (an idle thread, issue 7.7).
 * A detached pool with blocks on xfree waits on its owner's pending list to be reattached.
 */
#include "internal.h"

/* ---- acquiring and releasing ----------------------------------------------------------------- */

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
    pool->used = 0;
    pool->nmalloc = pool->requested = 0;
    pool->block_size = bs;
    pool->capacity = (uint32_t)(bytes / bs);
    PM_OWN_SET(pool->carved, 0);
    pool->end = pool->start + (size_t)pool->capacity * bs;
    pool->cls = (uint8_t)cls;
    pool->state = PM_POOL_CURRENT;
    pool->next = pool->prev = NULL;
    pool->pending = false;
    pool->detached_used = 0;
    atomic_store_explicit(&pool->xfree, 0, memory_order_relaxed);
    pool->arena = a;
    pool->first_unit = (uint16_t)u;
    pool->units = (uint16_t)n;
}

pm_pool *pm_pool_acquire(pm_heap *heap, unsigned cls) {
    if (PM_UNLIKELY(cls == 0 || cls >= PM_NUM_CLASSES))
        pm_fatal("internal error: pool requested for size class %u", cls);
    unsigned n = pm_class_units[cls], u;
    pm_lock(&pm_arena_lock);
    pm_arena *a = pm_arena_take_units(n, &u);
    pm_pool *pool = NULL;
    if (a != NULL) {
        pool = &a->pools[u];
        pool_init(pool, a, u, n, cls, heap);
        /* Publish the unit map last: a stale entry must never point at a half-made pool. */
        for (unsigned k = 0; k < n; k++)
            __atomic_store_n(&a->unit_pool[u + k], pool, __ATOMIC_RELEASE);
        pm_gstats.pools_acquired++;
    }
    pm_unlock(&pm_arena_lock);
    return pool;
}

void pm_pool_release(pm_pool *pool) {
    pm_arena *a = pool->arena;
    /* Only the part of the pool ever carved was touched; the rest needs no purge. */
    char *base = (char *)a + (size_t)pool->first_unit * PM_UNIT_SIZE;
    unsigned touched =
        (unsigned)((pool->start + pool->carved - base + PM_UNIT_SIZE - 1) / PM_UNIT_SIZE);
    pm_lock(&pm_arena_lock);
    for (unsigned k = 0; k < pool->units; k++)
        __atomic_store_n(&a->unit_pool[pool->first_unit + k], &pm_dead_pool, __ATOMIC_RELAXED);
    pm_pool_set_owner(pool, NULL, false);
    PM_OWN_SET(pool->state, PM_POOL_FREE);
    pool->free = NULL;
    pm_arena_give_units(a, pool->first_unit, pool->units, touched);
    pm_gstats.pools_released++;
    pm_unlock(&pm_arena_lock);
}

/* Threads up to a page of never-used blocks (at least one) onto the free list, in address
 * order, so that a fresh pool's memory is touched only as it is used. */
bool pm_pool_carve(pm_pool *pool) {
    char *carve = pool->start + pool->carved;
    if (carve >= pool->end)
        return false;
    char *limit = (char *)(((uintptr_t)carve + PM_PAGE_SIZE) & ~(uintptr_t)(PM_PAGE_SIZE - 1));
    if (limit < carve + pool->block_size)
        limit = carve + pool->block_size; /* the page ends inside a block: take it whole */
    if (limit > pool->end)
        limit = pool->end;
    pm_block *head = NULL, *prev = NULL;
    char *b = carve;
    for (; b + pool->block_size <= limit; b += pool->block_size) {
        pm_block *blk = (pm_block *)b;
        blk->key = pm_free_key(blk);
        if (prev)
            prev->link = pm_link_encode(prev, blk);
        else
            head = blk;
        prev = blk;
    }
    prev->link = pm_link_encode(prev, pool->free);
    pool->free = head;
    PM_OWN_SET(pool->carved, (uint32_t)(b - pool->start));
    return true;
}

/* ---- the owner's pending lists (any thread, under the owner's xlock) --------------------- */

/* Under owner->xlock. Rechecks: the pool may have been reattached or released meanwhile. */
static void link_locked(pm_heap *owner, pm_pool *pool) {
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_acquire);
    if (!pool->pending && (w & PM_XF_DETACHED) && !(w & PM_XF_RELEASING) &&
        (uintptr_t)__atomic_load_n(&pool->owner, __ATOMIC_RELAXED) ==
            ((uintptr_t)owner | PM_OWNER_DETACHED)) {
        unsigned c = pool->cls;
        pool->prev = NULL;
        pool->next = owner->pending[c];
        if (pool->next)
            pool->next->prev = pool;
        __atomic_store_n(&owner->pending[c], pool, __ATOMIC_RELAXED);
        __atomic_store_n(&pool->pending, true, __ATOMIC_RELAXED);
    }
}

static void link_pending(pm_heap *owner, pm_pool *pool) {
    pm_lock(&owner->xlock);
    link_locked(owner, pool);
    pm_unlock(&owner->xlock);
}

static void unlink_locked(pm_heap *owner, pm_pool *pool) {
    if (pool->prev)
        pool->prev->next = pool->next;
    else
        __atomic_store_n(&owner->pending[pool->cls], pool->next, __ATOMIC_RELAXED);
    if (pool->next)
        pool->next->prev = pool->prev;
    pool->next = pool->prev = NULL;
    __atomic_store_n(&pool->pending, false, __ATOMIC_RELAXED);
}

static void unlink_pending(pm_heap *owner, pm_pool *pool) {
    pm_lock(&owner->xlock);
    if (pool->pending)
        unlink_locked(owner, pool);
    pm_unlock(&owner->xlock);
}

pm_pool *pm_pool_pop_pending(pm_heap *heap, unsigned cls) {
    if (__atomic_load_n(&heap->pending[cls], __ATOMIC_RELAXED) == NULL)
        return NULL; /* a hint: a pool linked right now is found next time */
    pm_lock(&heap->xlock);
    pm_pool *pool = heap->pending[cls];
    if (pool != NULL)
        unlink_locked(heap, pool);
    pm_unlock(&heap->xlock);
    return pool;
}

/* ---- the atomic list ---------------------------------------------------------------------- */

PM_INLINE pm_block *xf_head(uintptr_t w) { return (pm_block *)(w & PM_XF_PTR_MASK); }
PM_INLINE uint32_t xf_count(uintptr_t w) { return (uint32_t)(w >> PM_XF_COUNT_SHIFT); }
PM_INLINE uintptr_t xf_make(pm_block *head, uint32_t count, uintptr_t flags) {
    return (uintptr_t)head | ((uintptr_t)count << PM_XF_COUNT_SHIFT) | flags;
}

/* The last block of a detached pool came back (we made the count reach detached_used): claim
 * the release, so that neither the owner's reattach nor a stale pending link can touch the
 * pool again, then take it off the pending list and give its units back. */
static void release_detached(pm_pool *pool, uintptr_t seen) {
    if (!atomic_compare_exchange_strong_explicit(&pool->xfree, &seen, seen | PM_XF_RELEASING,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return; /* the owner reattached it first: it is the owner's again */
    int saved = errno; /* a purge may follow the release: errno is the program's */
    pm_heap *owner = pm_pool_owner(pool);
    unlink_pending(owner, pool);
    pm_pool_release(pool);
    errno = saved;
}

void pm_pool_free_atomic(pm_pool *pool, pm_block *block) {
    block->key = pm_free_key(block); /* a second free of the block is now detectable (I2) */
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed);
    for (;;) {
        if (PM_UNLIKELY(w & PM_XF_RELEASING))
            pm_heap_corrupt(block, "free into a pool being released (double free?)");
        /* The first block on a detached pool's list puts the pool on its owner's pending list,
         * before the block is published: until then the block is out, so the pool cannot be
         * released under the link (pm_heap_link_pending rechecks under the owner's lock). */
        if ((w & PM_XF_DETACHED) && xf_count(w) == 0 && !__atomic_load_n(&pool->pending, __ATOMIC_RELAXED))
            link_pending(pm_pool_owner(pool), pool);
        block->link = pm_link_encode(block, xf_head(w));
        uintptr_t next = xf_make(block, xf_count(w) + 1, w & PM_XF_FLAGS);
        if (atomic_compare_exchange_weak_explicit(&pool->xfree, &w, next, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            w = next;
            break;
        }
    }
    if ((w & PM_XF_DETACHED) &&
        xf_count(w) == __atomic_load_n(&pool->detached_used, __ATOMIC_RELAXED))
        release_detached(pool, w);
}

/* Moves a list taken from xfree onto the local free list. Its links are checked as they are
 * popped (I8), not here: walking a list of cold blocks costs a cache miss a block, so it is
 * walked only in the rare case that the local list is not empty and must be appended. */
static void splice_local(pm_pool *pool, pm_block *head, uint32_t count) {
    if (pool->free != NULL) {
        pm_block *b = head;
        for (uint32_t i = 1; i < count; i++) {
            pm_block *next = pm_link_decode(b);
            if (PM_UNLIKELY(!pm_pool_is_carved_block(pool, next)))
                pm_heap_corrupt(b, "a pool's atomic free list");
            b = next;
        }
        b->link = pm_link_encode(b, pool->free);
    }
    pool->free = head;
    PM_OWN_ADD(pool->used, -count);
}

bool pm_pool_collect(pm_pool *pool) {
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed);
    if (xf_count(w) == 0)
        return false;
    w = atomic_exchange_explicit(&pool->xfree, w & PM_XF_FLAGS, memory_order_acquire);
    splice_local(pool, xf_head(w), xf_count(w));
    return true;
}

/* The moment DETACHED is published a freeing thread may bring the last block back and release
 * the pool, so everything the owner needs is read first, and the pending link is made under
 * the owner's xlock: a releaser must take that lock (to unlink) before the pool goes back to
 * its arena, so the pool stays valid until we let go. */
void pm_pool_detach(pm_heap *heap, pm_pool *pool) {
    pm_pool_fold_stats(heap, pool);
    bool has_room = pool->free != NULL || pool->start + pool->carved < pool->end;
    uint32_t used = pool->used;
    PM_OWN_SET(pool->state, PM_POOL_DETACHED);
    PM_OWN_SET(pool->detached_used, used);
    pm_pool_set_owner(pool, heap, true);
    pm_lock(&heap->xlock);
    uintptr_t w = atomic_fetch_or_explicit(&pool->xfree, PM_XF_DETACHED, memory_order_acq_rel);
    if (xf_count(w) == used) { /* every block handed out is back: all free */
        pm_unlock(&heap->xlock);
        release_detached(pool, w | PM_XF_DETACHED);
        return;
    }
    if (has_room || xf_count(w) > 0)
        link_locked(heap, pool);
    pm_unlock(&heap->xlock);
}

bool pm_pool_reattach(pm_heap *heap, pm_pool *pool) {
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed);
    do {
        if (w & PM_XF_RELEASING)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&pool->xfree, &w, 0, memory_order_acquire,
                                                    memory_order_relaxed));
    PM_OWN_SET(pool->used, pool->detached_used);
    if (xf_count(w) > 0)
        splice_local(pool, xf_head(w), xf_count(w));
    PM_OWN_SET(pool->state, PM_POOL_CURRENT);
    pm_pool_set_owner(pool, heap, false);
    return true;
}

uint32_t pm_pool_blocks_in_use(const pm_pool *pool) {
    uint8_t state = __atomic_load_n(&pool->state, __ATOMIC_RELAXED);
    uint32_t used = __atomic_load_n(state == PM_POOL_DETACHED ? &pool->detached_used : &pool->used,
                                    __ATOMIC_RELAXED);
    uint32_t back = (uint32_t)(atomic_load_explicit(&((pm_pool *)pool)->xfree,
                                                    memory_order_relaxed) >> PM_XF_COUNT_SHIFT);
    used = used >= back ? used - back : 0;
    return used > pool->capacity ? pool->capacity : used;
}
