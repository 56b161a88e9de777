/*
 * pool.c: pools (runs of units holding blocks of one class), their lazy carving, and the
 * atomic free list through which every thread but the owner's fast path gives blocks back.
 *
 * A pool is ATTACHED while it is its owner's current pool of its class: the owner pops from
 * and pushes onto the local list `free` with plain loads and stores. Every other free (another
 * thread's, or the owner's own into a pool that is not current) goes onto `xfree` with one
 * compare-and-swap that also counts the block. When the owner's current pool runs dry it
 * DETACHES it: xfree's count becomes the number of blocks still out. From then on the pool is
 * nobody's to touch but through xfree, each free counts down, and the thread whose free takes
 * the count to zero knows that every block is back and releases the pool to its arena itself:
 * memory comes back even if the owner never calls malloc again (an idle thread, issue 7.7).
 * One such pool per class and heap is kept instead, empty, for its owner to reuse (its spare:
 * see keep_spare_locked), and given back within a purge delay, at exit or at pm_trim.
 * A detached pool with blocks on xfree waits on its owner's pending list to be reattached.
 */
#include "internal.h"

/* ---- acquiring and releasing ----------------------------------------------------------------- */

static void pool_init(pm_pool *pool, pm_arena *a, unsigned u, unsigned n, unsigned cls,
                      pm_heap *heap) {
    uint32_t bs = pm_class_size[cls];
    size_t bytes = (size_t)n * PM_UNIT_SIZE;
    pool->free = NULL;
    /* Blocks end at the pool's end; the tail goes in front (I3). */
    pool->start = (char *)a + (size_t)u * PM_UNIT_SIZE + bytes % bs;
    /* floor(2^64 / bs) + 1: UINT64_MAX / bs is that floor unless bs divides 2^64 */
    pool->div_magic = UINT64_MAX / bs + 1 + ((bs & (bs - 1)) == 0);
    pool->used = 0;
    pool->block_size = bs;
    pool->capacity = (uint32_t)(bytes / bs);
    PM_OWN_SET(pool->carved, 0);
    __atomic_store_n(&pool->carved_limit, 0, __ATOMIC_RELAXED);
    pool->bump = pool->bump_end = pool->start;
    pool->end = pool->start + (size_t)pool->capacity * bs;
    pool->cls = (uint8_t)cls;
    pool->cls_offset = (uint16_t)pm_class_line(cls);
    pool->state = PM_POOL_CURRENT;
    pool->next = pool->prev = NULL;
    pool->pending = false;
    pool->detached_used = 0;
    atomic_store_explicit(&pool->xfree, 0, memory_order_relaxed);
    pool->arena = a;
    pool->first_unit = (uint16_t)u;
    pool->units = (uint16_t)n;
    /* The owner last, released: the first unit's map entry is 0 (the slot is the pool) before
     * and during all this, so another thread's free of a stray pointer into the unit reads
     * this descriptor as it is made; its owner, NULL until now, makes free reject it, and
     * once set (acquire in check_pool_block) every field above is visible. */
    __atomic_store_n(&pool->owner, heap, __ATOMIC_RELEASE);
}

/* A class's pools hold at least 8 blocks (sizeclass.c): few for a thread that runs through
 * them. A producer whose consumer frees its 2 KiB messages detaches, relinks, takes back or
 * releases a pool, each under a lock, every 8 messages. So a heap that has taken
 * PM_POOL_GROW_AFTER new pools of a class lately gets pools of twice the size, when the class's
 * pool holds fewer than PM_POOL_GROW_BLOCKS blocks and the larger one fits an arena. The
 * counts halve every PM_POOL_GROW_HALF_LIFE_MS, so what grows a class's pools is a rate (some
 * 32 new pools a second), not a long life: a program with a few pools of a class, or one that
 * takes a new one now and then, keeps the small ones. Measured (2026-12-03, A/B interleaved, 5
 * rounds): prodcons 2 threads -4.2% CPU time with its peak RSS unchanged, frag -2.9% peak RSS
 * (fewer pools acquired, released, purged and faulted back); growing to 32 blocks (x4) gained
 * prodcons 7% but cost it 10% more RSS (scripts/results/issue10-pool-growth-2026-12-03.md). */
#define PM_POOL_GROW_AFTER 64
#define PM_POOL_GROW_BLOCKS 16
#define PM_POOL_GROW_HALF_LIFE_MS 1000

unsigned pm_pool_units_next(const pm_heap *heap, unsigned cls) {
    unsigned n = pm_class_units[cls];
    if (heap->pools_taken[cls] >= PM_POOL_GROW_AFTER && n * 2 <= pm_pool_max_units &&
        (size_t)n * PM_UNIT_SIZE / pm_class_size[cls] < PM_POOL_GROW_BLOCKS)
        n *= 2;
    return n;
}

void pm_pool_growth_tick(pm_heap *heap, uint64_t now_ms) {
    if (now_ms - heap->pools_taken_halved_ms < PM_POOL_GROW_HALF_LIFE_MS)
        return;
    heap->pools_taken_halved_ms = now_ms;
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++)
        heap->pools_taken[c] >>= 1;
}

pm_pool *pm_pool_acquire(pm_heap *heap, unsigned cls) {
    if (PM_UNLIKELY(cls == 0 || cls >= PM_NUM_CLASSES))
        pm_fatal("internal error: pool requested for size class %u", cls);
    unsigned n = pm_pool_units_next(heap, cls), u;
    if (heap->pools_taken[cls] < UINT16_MAX)
        heap->pools_taken[cls]++;
    pm_lock(&pm_arena_lock);
    pm_arena *a = pm_arena_take_units(n, &u);
    pm_pool *pool = NULL;
    if (a != NULL) {
        pool = &a->pools[u];
        pool_init(pool, a, u, n, cls, heap);
        /* Publish the unit map last: a stale entry must never point at a half-made pool. */
        for (unsigned k = 0; k < n; k++)
            __atomic_store_n(&a->pools[u + k].unit_offset,
                             (intptr_t)((char *)pool - (char *)&a->pools[u + k]), __ATOMIC_RELEASE);
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
    /* Each unit's slot is its own descriptor again; the first one's owner goes NULL below. */
    for (unsigned k = 1; k < pool->units; k++)
        __atomic_store_n(&a->pools[pool->first_unit + k].unit_offset, 0, __ATOMIC_RELAXED);
    pm_pool_set_owner(pool, NULL, false);
    PM_OWN_SET(pool->state, PM_POOL_FREE);
    pool->free = NULL;
    pm_arena_give_units(a, pool->first_unit, pool->units, touched);
    pm_gstats.pools_released++;
    pm_unlock(&pm_arena_lock);
}

/* Carves up to a page of never-used blocks (at least one) past the carve point: their keys are
 * set (I2: a free of one is caught) and the carve point moves past them, which admits
 * them to free's carve test. malloc then takes them in address order from pool->bump (the fast
 * path, pm_pop_line), so a fresh pool's memory is touched only as it is used. One store a
 * block: a carve that threaded the blocks onto the free list cost 13 instructions a block, and
 * each pop 10 more to decode and check a link no one but the carve had written. */
bool pm_pool_carve(pm_pool *pool) {
    char *carve = pool->start + pool->carved;
    if (carve >= pool->end)
        return false;
    char *limit = (char *)(((uintptr_t)carve + PM_PAGE_SIZE) & ~(uintptr_t)(PM_PAGE_SIZE - 1));
    if (limit < carve + pool->block_size)
        limit = carve + pool->block_size; /* the page ends inside a block: take it whole */
    if (limit > pool->end)
        limit = pool->end;
    uint32_t bs = pool->block_size;
    char *point = carve + (uint32_t)(limit - carve) / bs * bs; /* the new carve point */
    for (char *b = carve; b != point; b += bs) /* six instructions a block */
        ((pm_block *)b)->key = pm_free_key(b);
    /* In this order: the keys, then free's test admits the blocks, then malloc may hand them
     * out. carved_limit is read by other threads' frees, which see it old or new: released,
     * so that one that sees it new sees the keys too (the free of a block not yet handed out
     * is then caught). And a fork anywhere in here must leave the child no block that malloc
     * can hand out but free rejects: with bump_end moved first, a fork before carved_limit
     * followed (a 4 in 6 chance under ThreadSanitizer, whose instrumentation widens the
     * window) gave the child's adopter of this heap blocks whose free then aborted with
     * "never handed out" (test-fork). The compiler keeps this order too (the fence). */
    uint32_t carved = (uint32_t)(point - pool->start);
    __atomic_store_n(&pool->carved_limit, pm_pool_carved_limit(pool, carved), __ATOMIC_RELEASE);
    PM_OWN_SET(pool->carved, carved);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    pool->bump_end = point;
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

/* ---- the atomic list ---------------------------------------------------------------------- */
/* The count field of xfree means two things (internal.h): while the pool is attached, the
 * blocks on the list; once it is detached, the blocks still out (handed out and not on the
 * list). A free into a detached pool therefore counts down, and the free that takes the count
 * to zero sets RELEASING in the same compare-and-swap: the release is decided atomically with
 * the last push, so no reattach, relink or second release can slip in between. */

PM_INLINE pm_block *xf_head(uintptr_t w) { return (pm_block *)(w & PM_XF_PTR_MASK); }
PM_INLINE uint32_t xf_count(uintptr_t w) { return (uint32_t)(w >> PM_XF_COUNT_SHIFT); }
PM_INLINE uintptr_t xf_make(pm_block *head, uint32_t count, uintptr_t flags) {
    return (uintptr_t)head | ((uintptr_t)count << PM_XF_COUNT_SHIFT) | flags;
}

/* A detached pool whose every block came back goes back to its arena, except that each heap
 * keeps one such pool per class, empty, on its pending list: its spare, marked SPARE in xfree
 * and in owner->spare_classes. Without it a thread whose blocks another thread frees (a
 * producer and its consumer) pays a release and a new acquisition, two lock round trips, a
 * fresh carve and later a purge, each time a pool's worth of blocks is in flight: the spare is
 * reattached instead. Only single-unit pools are kept, and pm_pool_release_spares gives them
 * back every purge delay, at exit and at pm_trim (from pm_heap_flush_cache), so an idle thread
 * keeps at most one empty 16 KiB pool per class. */
#define PM_XF_SPARE ((uintptr_t)4)

PM_INLINE uint64_t class_bit(unsigned cls) { return (uint64_t)1 << (cls & 63); }

/* Under owner->xlock, with RELEASING set by us in w: makes the pool its owner's spare of its
 * class if the owner has none and is not gone; false if the pool must be released. */
static bool keep_spare_locked(pm_heap *owner, pm_pool *pool, uintptr_t w) {
    if (pool->units != 1 || (owner->spare_classes & class_bit(pool->cls)) ||
        atomic_load(&owner->abandoned))
        return false;
    /* Nobody else writes xfree now: a free would find no block out (and report it), and a
     * claim needs the lock we hold. */
    atomic_store_explicit(&pool->xfree, (w & ~PM_XF_RELEASING) | PM_XF_SPARE,
                          memory_order_release);
    link_locked(owner, pool); /* normally linked already, by the first free after the detach */
    if (!pool->pending) { /* not ours to keep after all: release it as decided */
        atomic_store_explicit(&pool->xfree, w, memory_order_relaxed);
        return false;
    }
    __atomic_store_n(&owner->spare_classes, owner->spare_classes | class_bit(pool->cls),
                     __ATOMIC_RELAXED);
    return true;
}

/* Every block of a detached pool is back and we hold the release (RELEASING is set in w, the
 * word we stored): keep the pool as a spare (if may_keep), or take it off the owner's pending
 * list (a releaser must, before the units go: see pm_pool_detach) and give its units back. */
static void finish_release(pm_pool *pool, uintptr_t w, bool may_keep) {
    int saved = errno; /* a purge may follow the release: errno is the program's */
    pm_heap *owner = pm_pool_owner(pool);
    pm_lock(&owner->xlock);
    bool kept = may_keep && keep_spare_locked(owner, pool, w);
    if (!kept && pool->pending)
        unlink_locked(owner, pool);
    pm_unlock(&owner->xlock);
    if (!kept)
        pm_pool_release(pool);
    errno = saved;
}

void pm_pool_release_spares(pm_heap *heap) {
    pm_pool *doomed = NULL;
    pm_lock(&heap->xlock);
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        if (!(heap->spare_classes & class_bit(c)))
            continue;
        for (pm_pool *pool = heap->pending[c]; pool != NULL; pool = pool->next) {
            uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed);
            if (!(w & PM_XF_SPARE))
                continue;
            /* RELEASING: no claim takes it once we let go of the lock; it is ours to release */
            atomic_store_explicit(&pool->xfree, (w & ~PM_XF_SPARE) | PM_XF_RELEASING,
                                  memory_order_relaxed);
            unlink_locked(heap, pool);
            pool->next = doomed;
            doomed = pool;
            break; /* one spare per class */
        }
    }
    __atomic_store_n(&heap->spare_classes, 0, __ATOMIC_RELAXED);
    pm_unlock(&heap->xlock);
    int saved = errno;
    while (doomed != NULL) {
        pm_pool *next = doomed->next;
        doomed->next = NULL;
        pm_pool_release(doomed);
        doomed = next;
    }
    errno = saved;
}

/* Every case of a push: the first blocks on a detached pool's list (which links the pool on
 * its owner's pending list), the last blocks out (which release the pool) and misuse. The
 * list head..tail (n blocks, linked, keys set) goes on whole. */
static PM_NOINLINE void free_list_rare(pm_pool *pool, pm_block *head, pm_block *tail,
                                       uint32_t n) {
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed), next;
    for (;;) {
        bool detached = (w & PM_XF_DETACHED) != 0;
        uint32_t count = xf_count(w);
        if (PM_UNLIKELY((w & PM_XF_RELEASING) || (detached && count < n)))
            pm_heap_corrupt(head, "a pool's atomic list (more frees than blocks out: a double "
                                  "free?)");
        /* The first block on a detached pool's list puts the pool on its owner's pending list,
         * before the block is published: until then the block is out, so the pool cannot be
         * released under the link (link_locked rechecks under the owner's lock). */
        if (detached && xf_head(w) == NULL && !__atomic_load_n(&pool->pending, __ATOMIC_RELAXED))
            link_pending(pm_pool_owner(pool), pool);
        tail->link = pm_link_encode(tail, xf_head(w));
        if (!detached)
            next = xf_make(head, count + n, w & PM_XF_FLAGS);
        else if (count > n)
            next = xf_make(head, count - n, w & PM_XF_FLAGS);
        else /* the last blocks out come back: the pool is ours to release */
            next = xf_make(head, 0, (w & PM_XF_FLAGS) | PM_XF_RELEASING);
        if (atomic_compare_exchange_weak_explicit(&pool->xfree, &w, next, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    if (next & PM_XF_RELEASING)
        finish_release(pool, next, true);
}

/* The common pushes stay lean (no call, so no registers to save): onto an attached pool's
 * list, counted up, and onto a detached pool's list that has blocks already and more blocks
 * out than come back, counted down. Everything else takes free_list_rare. One push was 75
 * instructions before this split and is about 30 now (callgrind, randslot's final frees). */
PM_INLINE void free_list_atomic(pm_pool *pool, pm_block *head, pm_block *tail, uint32_t n) {
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed), next;
    do {
        uintptr_t flags = w & PM_XF_FLAGS;
        uint32_t count = xf_count(w);
        if (flags == 0)
            next = xf_make(head, count + n, 0);
        else if (flags == PM_XF_DETACHED && count > n && xf_head(w) != NULL)
            next = xf_make(head, count - n, PM_XF_DETACHED);
        else
            return free_list_rare(pool, head, tail, n);
        tail->link = pm_link_encode(tail, xf_head(w));
    } while (!atomic_compare_exchange_weak_explicit(&pool->xfree, &w, next, memory_order_release,
                                                    memory_order_relaxed));
}

void pm_pool_free_atomic(pm_pool *pool, pm_block *block) {
    block->key = pm_free_key(block); /* a second free of the block is now detectable (I2) */
    free_list_atomic(pool, block, block, 1);
}

void pm_pool_free_list(pm_pool *pool, pm_block *head, pm_block *tail, uint32_t n) {
    free_list_atomic(pool, head, tail, n);
}

/* Moves a list taken from xfree (length blocks) onto the local free list. Its links are
 * checked as they are popped (I8), not here: walking a list of cold blocks costs a cache miss
 * a block, so it is walked only in the rare case that the local list must be appended. */
static void splice_local(pm_pool *pool, pm_block *head, uint32_t length) {
    if (head == NULL)
        return;
    if (pool->free != NULL) {
        pm_block *b = head;
        for (uint32_t i = 1; i < length; i++) {
            pm_block *next = pm_link_decode(b);
            if (PM_UNLIKELY(!pm_pool_is_carved_block(pool, next)))
                pm_heap_corrupt(b, "a pool's atomic free list");
            b = next;
        }
        b->link = pm_link_encode(b, pool->free);
    }
    pool->free = head;
}

bool pm_pool_collect(pm_pool *pool) {
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed);
    if (xf_head(w) == NULL)
        return false;
    w = atomic_exchange_explicit(&pool->xfree, 0, memory_order_acquire); /* attached: no flags */
    splice_local(pool, xf_head(w), xf_count(w));
    PM_OWN_ADD(pool->used, -xf_count(w));
    return true;
}

/* The moment DETACHED is published a freeing thread may bring the last block back and release
 * the pool, so everything the owner needs is read first, and the pending link is made under
 * the owner's xlock: a releaser must take that lock (to unlink) before the pool goes back to
 * its arena, so the pool stays valid until we let go. */
void pm_pool_detach(pm_heap *heap, pm_pool *pool) {
    bool has_room = pool->free != NULL || pool->bump < pool->end;
    uint32_t used = pool->used;
    PM_OWN_SET(pool->state, PM_POOL_DETACHED);
    PM_OWN_SET(pool->detached_used, used);
    pm_pool_set_owner(pool, heap, true);
    pm_lock(&heap->xlock);
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed), next;
    do { /* from "blocks on the list" to "blocks still out" */
        uint32_t out = used - xf_count(w);
        next = out == 0 ? xf_make(xf_head(w), 0, PM_XF_DETACHED | PM_XF_RELEASING)
                        : xf_make(xf_head(w), out, PM_XF_DETACHED);
    } while (!atomic_compare_exchange_weak_explicit(&pool->xfree, &w, next, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (next & PM_XF_RELEASING) { /* every block handed out is back: all free */
        pm_unlock(&heap->xlock);
        finish_release(pool, next, false); /* the owner lets go of it: no spare */
        return;
    }
    if (has_room || xf_head(next) != NULL)
        link_locked(heap, pool);
    pm_unlock(&heap->xlock);
}

/* Under heap->xlock, the pool just unlinked from heap->pending: claims it back (xfree to an
 * empty, attached word), or false if the free that brought its last block back is releasing
 * it. Claiming under the lock matters: a releaser must take this lock before the pool goes
 * back to its arena, so the pool cannot be released, reused by another heap and its xfree
 * reset (losing RELEASING) between our pop and our claim. */
static bool claim_locked(pm_pool *pool, uintptr_t *taken) {
    uintptr_t w = atomic_load_explicit(&pool->xfree, memory_order_relaxed);
    do {
        if (w & PM_XF_RELEASING)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&pool->xfree, &w, 0, memory_order_acquire,
                                                    memory_order_relaxed));
    *taken = w;
    return true;
}

pm_pool *pm_pool_take_pending(pm_heap *heap, unsigned cls) {
    if (__atomic_load_n(&heap->pending[cls], __ATOMIC_RELAXED) == NULL)
        return NULL; /* a hint: a pool linked right now is found next time */
    uintptr_t w = 0;
    pm_lock(&heap->xlock);
    pm_pool *pool;
    while ((pool = heap->pending[cls]) != NULL) {
        unlink_locked(heap, pool);
        if (claim_locked(pool, &w)) {
            if (w & PM_XF_SPARE) /* our spare of the class, reused */
                __atomic_store_n(&heap->spare_classes, heap->spare_classes & ~class_bit(cls),
                                 __ATOMIC_RELAXED);
            break;
        }
        /* else its releaser gives it back: drop it */
    }
    pm_unlock(&heap->xlock);
    if (pool == NULL)
        return NULL;
    /* Attached now (no release can happen to it): the list holds every block that came back
     * since the detach; the count, those still out. */
    uint32_t out = xf_count(w);
    splice_local(pool, xf_head(w), pool->detached_used - out);
    PM_OWN_SET(pool->used, out);
    PM_OWN_SET(pool->state, PM_POOL_CURRENT);
    pm_pool_set_owner(pool, heap, false);
    return pool;
}

uint32_t pm_pool_blocks_in_use(const pm_pool *pool) {
    uintptr_t w = atomic_load_explicit(&((pm_pool *)pool)->xfree, memory_order_relaxed);
    uint32_t used;
    if (w & PM_XF_DETACHED)
        used = xf_count(w); /* blocks still out */
    else {
        used = __atomic_load_n(&pool->used, __ATOMIC_RELAXED);
        used = used >= xf_count(w) ? used - xf_count(w) : 0;
    }
    return used > pool->capacity ? pool->capacity : used;
}
