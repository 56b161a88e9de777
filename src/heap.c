/*
 * heap.c: per-thread heaps: creation and adoption, the block cache, the pending lists of
 * detached pools, allocation from a class when the fast path has nothing, thread exit and fork.
 *
 * A heap is only ever touched by the thread that holds it, except for its pending lists, which
 * freeing threads link pools onto under the heap's xlock. Heaps are never unmapped (they are
 * small, and pool->owner pointers must stay valid for threads that free late); an exited
 * thread's heap waits on the abandoned stack for the next new thread.
 */
#include "internal.h"
#include "instrument/instrument.h"

#define HEAP_CHUNK (64 * 1024) /* heaps are carved from chunks of this size */

const pm_heap_lines pm_sentinel_lines = {
    .cls = {[0 ... PM_NUM_CLASSES - 1] = {.current = &pm_empty_pool}}};
PM_TLS uintptr_t pm_fast_heap_x; /* zero: the sentinel */
PM_TLS pm_heap *pm_thread_heap;
pm_heap *_Atomic pm_all_heaps;

static pthread_mutex_t heap_lock = PM_LOCK_INITIALIZER; /* abandoned stack, chunks */
static pm_heap *abandoned;
static char *chunk_next, *chunk_end;

/* Class c's first cache slot: top there, the cache is full. */
static pm_block **cache_first(pm_heap *h, unsigned c) {
    return pm_cache_end(h, c) - pm_class_cache_limit[c];
}

/* The cache of class c empty, and taking blocks (or not: drained, see pm_heap_cache_stale). */
static void cache_reset(pm_heap *h, unsigned c, bool drained) {
    pm_class_state *cs = &h->cls[c];
    PM_OWN_SET(cs->top, pm_cache_end(h, c));
    cs->empty_lo = pm_low16(pm_cache_end(h, c));
    cs->full_lo = drained ? cs->empty_lo : pm_low16(cache_first(h, c));
}

static void heap_reset(pm_heap *h) {
    for (unsigned c = 0; c < PM_NUM_CLASSES; c++) {
        cache_reset(h, c, false);
        h->cls[c].current = &pm_empty_pool;
        h->cls[c].full_unit = 0;
        h->cls[c].full_run = 0;
        h->cls[c].countdown = h->cls[c].armed = pm_sample_first_countdown();
        h->pending[c] = NULL;
    }
    pm_lock_reinit(&h->xlock); /* a new heap's lock; an error-checking mutex as all ours */
}

/* Under heap_lock. */
static pm_heap *heap_new_locked(void) {
    size_t size = (sizeof(pm_heap) + 63) & ~(size_t)63;
    if (chunk_next == NULL || chunk_next + size > chunk_end) {
        size_t bytes = size > HEAP_CHUNK ? size : HEAP_CHUNK;
        chunk_next = pm_os_map(bytes);
        if (chunk_next == NULL)
            return NULL;
        chunk_end = chunk_next + bytes;
    }
    pm_heap *h = (pm_heap *)chunk_next;
    chunk_next += size;
    heap_reset(h);
    pm_heap *head = atomic_load(&pm_all_heaps);
    do
        h->next_all = head;
    while (!atomic_compare_exchange_weak(&pm_all_heaps, &head, h));
    pm_gstats.heaps_created++;
    return h;
}

/* An abandoned heap if there is one (its pools, pending lists and cache come with it), else a
 * new one. */
static pm_heap *heap_take(void) {
    pm_lock(&heap_lock);
    pm_heap *h = abandoned;
    if (h != NULL) {
        abandoned = h->next_abandoned;
        h->next_abandoned = NULL;
        atomic_store(&h->abandoned, 0);
        pm_gstats.heaps_adopted++;
    } else {
        h = heap_new_locked();
    }
    pm_unlock(&heap_lock);
    return h;
}

/* Sets the calling thread's heap; the fast paths see it unless poisoning or instrumentation
 * forces every call through the slow paths (which poison, or call the hooks). */
void pm_heap_install(pm_heap *h) {
    pm_thread_heap = h;
    pm_fast_heap_set((h && !pm_opt.poison && !pm_instrument_on) ? h : PM_SENTINEL_HEAP);
}

pm_heap *pm_heap_take(void) { return heap_take(); }

/* ---- allocation from a class: the malloc slow path proper -------------------------------- */

/* A block of pool: from its free list, else a never-used carved one (as pm_pop_line, with
 * the slow paths' stricter link check), else NULL. */
static void *pool_take(pm_pool *pool) {
    pm_block *b = pool->free;
    if (b != NULL) {
        pm_block *next = pm_link_decode(b);
        if (PM_UNLIKELY((next != NULL && !pm_pool_is_carved_block(pool, next)) ||
                        b->key != pm_free_key(b)))
            pm_heap_corrupt(b, "pool free list");
        pool->free = next;
    } else if (pool->bump < pool->bump_end) {
        b = (pm_block *)pool->bump;
        if (PM_UNLIKELY(b->key != pm_free_key(b)))
            pm_heap_corrupt(b, "a pool's unused blocks");
        pool->bump += pool->block_size;
    } else {
        return NULL;
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST); /* off the list or bump, then the key: pm_pop_line */
    b->key = 0;
    PM_OWN_ADD(pool->used, 1);
    return b;
}

static void check_heap(const pm_heap *heap);
static void flush_idle_caches(pm_heap *heap);

/* Every 16 slow-path allocations, a look at the clock: once the purge delay has passed, the
 * caches of classes left idle since the last look go back to their pools (each cached block
 * pins a whole pool, which then cannot be released: up to 32 pools a class), free units are
 * purged and old large mappings expire. So memory freed by a busy thread comes back within
 * about two purge delays without pm_trim. */
static void heap_tick(pm_heap *heap) {
    heap->tick = 16;
    uint64_t now = pm_os_now_ms();
    pm_pool_growth_tick(heap, now);
    if (!pm_arena_purge_due(now))
        return;
    flush_idle_caches(heap);
    pm_arena_tick();
    pm_large_expire(now); /* outside every lock: large.c is a leaf (I7) */
}

void *pm_heap_alloc(pm_heap *heap, unsigned cls) {
    pm_class_state *cs = &heap->cls[cls];
    if (PM_UNLIKELY(heap->tick-- == 0))
        heap_tick(heap);
    for (;;) {
        pm_pool *pool = cs->current;
        void *b = pool_take(pool);
        if (b != NULL)
            return b;
        if (pool != &pm_empty_pool) {
            if (pm_pool_carve(pool) || pm_pool_collect(pool))
                return pool_take(pool);
            if (PM_DEBUG)
                check_heap(heap);
            /* Exhausted: every block is out. Frees find the DETACHED mark (I6). */
            cs->current = &pm_empty_pool;
            pm_pool_detach(heap, pool);
        }
        while ((pool = pm_pool_take_pending(heap, cls)) != NULL) {
            b = pool_take(pool);
            if (b == NULL && pm_pool_carve(pool))
                b = pool_take(pool);
            if (b != NULL) {
                cs->current = pool;
                return b;
            }
            pm_pool_detach(heap, pool); /* nothing to give after all */
        }
        pool = pm_pool_acquire(heap, cls);
        if (pool != NULL) {
            pm_pool_carve(pool);
            cs->current = pool;
            return pool_take(pool);
        }
        return NULL; /* the OS refused memory */
    }
}

void *pm_heap_alloc_borrowed(unsigned cls) {
    pm_heap *h = heap_take();
    if (h == NULL)
        return NULL;
    void *p = pm_heap_alloc(h, cls);
    if (p != NULL)
        PM_STAT(PM_OWN_ADD(h->cls[cls].nmalloc, 1));
    pm_heap_abandon(h);
    return p;
}

/* ---- local frees off the fast path ---------------------------------------------------------- */

/* Gives head..tail (n cached blocks of pool, already linked, keys set) back to their pool:
 * onto the local list if the pool is our current one, else in one atomic push. The owner is
 * tested first: `state` is the owner's to write, and only the owner may read it plainly. */
static void give_run(pm_heap *heap, pm_pool *pool, pm_block *head, pm_block *tail, uint32_t n) {
    if (pm_pool_owner(pool) == heap && pool->state == PM_POOL_CURRENT) {
        tail->link = pm_link_encode(tail, pool->free);
        pool->free = head;
        PM_OWN_ADD(pool->used, -n);
        return;
    }
    pm_pool_free_list(pool, head, tail, n);
}

/* Gives the cached blocks from[0 .. n) (the top first) back to their pools, a run of
 * consecutive blocks of one pool at a time: the run is linked here and goes on in one push. A
 * program that frees what it allocated, in order (a structure torn down), fills its cache with
 * runs of one pool: one compare-and-swap per run instead of one per block. Each block is
 * checked as a pop from the cache checks it: still carrying its free key (a write after free
 * into a cached block stops here, I8). The caller has emptied the cache first. */
static void give_cached(pm_heap *heap, pm_block **from, size_t n) {
    pm_block **end = from + n;
    while (from < end) {
        pm_block *b = *from++;
        if (PM_UNLIKELY(!pm_in_arena(b) || b->key != pm_free_key(b)))
            pm_heap_corrupt(b, "thread cache");
        pm_pool *pool = pm_pool_of(b);
        pm_block *head = b, *tail = b;
        uint32_t run = 1;
        for (; from < end; from++) {
            b = *from;
            /* A block in the same unit as the last is in the same pool: no lookup. */
            bool same_unit = (((uintptr_t)b ^ (uintptr_t)tail) >> PM_UNIT_SHIFT) == 0;
            if (!same_unit && (!pm_in_arena(b) || pm_pool_of(b) != pool))
                break; /* checked in full as the head of the next run */
            if (PM_UNLIKELY(b->key != pm_free_key(b)))
                pm_heap_corrupt(b, "thread cache");
            tail->link = pm_link_encode(tail, b);
            tail = b;
            run++;
        }
        give_run(heap, pool, head, tail, run);
    }
}

/* Empties the cache of class c (drained or not, as asked) and gives its blocks back. */
static void give_cache(pm_heap *heap, unsigned c, bool drained) {
    pm_block **top = heap->cls[c].top;
    size_t n = (size_t)(pm_cache_end(heap, c) - top);
    pm_block *blocks[PM_CACHE_MAX];
    memcpy(blocks, top, n * sizeof *blocks);
    cache_reset(heap, c, drained);
    /* The cache is emptied before any block reaches a pool, in the compiler's order too: a
     * fork between the two leaves the child a block in a pool, never in a pool and a cache. */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    give_cached(heap, blocks, n);
}

/* b on top of a cache that has room: the fast path's push, for the slow paths. */
static void cache_push(pm_class_state *cs, pm_block *b) { pm_cache_push(cs, cs->top, b); }

/* A free of one block off the fast path: a run of one. */
void pm_heap_free_local(pm_heap *heap, pm_pool *pool, pm_block *b) {
    b->key = pm_free_key(b); /* a second free of the block is now detectable (I2) */
    give_run(heap, pool, b, b, 1);
}

static void flush_class_cache(pm_heap *heap, unsigned c) { give_cache(heap, c, false); }

/* The free fast path found the cache full, and the last PM_RUN_FREES frees past it were all in
 * b's unit: the program frees in runs (a structure torn down in the order it was built). b is
 * checked already (ours, a handed-out block boundary, not free). The cache goes back to its
 * pools a run of one pool at a time, one compare-and-swap per run instead of one per block,
 * and b starts it anew. Tear-down of 1M 32-byte blocks in build order
 * (scripts/results/issue10-teardown-bench.c, best of 15 rounds, 3 repetitions) with another
 * program busy on the second core: 12.1-12.9 -> 10.2-10.5 ns a free; on a quiet machine,
 * where an uncontended compare-and-swap on a line in L1 is cheap, 6.8-6.9 either way. */
void pm_heap_cache_overflow(pm_heap *heap, pm_class_state *cs, pm_block *b) {
    unsigned c = (unsigned)(cs - heap->cls);
    give_cache(heap, c, false);
    cache_push(cs, b);
    cs->full_run = PM_PAST_MARK(cs);
}

void pm_heap_cache_stale(pm_heap *heap, pm_class_state *cs, pm_pool *pool, pm_block *b) {
    uint32_t mark = PM_PAST_MARK(cs);
    bool malloc_between = ((cs->full_run ^ mark) >> 16) != 0;
    cs->full_run = mark | (cs->full_run & PM_RUN_MASK); /* the next count begins */
    unsigned c = (unsigned)(cs - heap->cls);
    bool empty = cs->top == pm_cache_end(heap, c);
    if (!malloc_between && !empty) { /* stale: drain */
        give_cache(heap, c, true);
    } else if (malloc_between && empty) { /* drained: take blocks */
        cache_reset(heap, c, false);
        cache_push(cs, b);
        return;
    }
    pm_heap_free_local(heap, pool, b);
}

void pm_heap_flush_cache(pm_heap *heap) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++)
        flush_class_cache(heap, c);
    pm_pool_release_spares(heap); /* and the empty pools kept for reuse (pool.c) */
}

/* The tick's flush: only the caches of classes this thread has not allocated from since the
 * last tick (their countdown has not moved). A class in use keeps its cache, at most 32 blocks
 * or 64 KiB: flushing it would turn its next mallocs into slow paths and its blocks in
 * detached pools into atomic pushes, every purge delay, for memory it is about to reuse. */
static void flush_idle_caches(pm_heap *heap) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        pm_class_state *cs = &heap->cls[c];
        uint32_t mark = (uint32_t)cs->countdown;
        if (cs->top != pm_cache_end(heap, c) && mark == cs->tick_mark)
            flush_class_cache(heap, c);
        cs->tick_mark = mark;
    }
    pm_pool_release_spares(heap); /* and the empty pools kept for reuse (pool.c) */
}

/* ---- thread exit ------------------------------------------------------------------------------ */

/* Flushes the heap's cache and detaches its current pools: afterwards its pools are all
 * detached, so the last free of each releases it, whoever makes it. */
static void heap_let_go(pm_heap *heap) {
    pm_heap_flush_cache(heap);
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        pm_pool *pool = heap->cls[c].current;
        if (pool == &pm_empty_pool)
            continue;
        heap->cls[c].current = &pm_empty_pool;
        pm_pool_detach(heap, pool);
    }
}

/* Gives back what the heap can, then puts it on the abandoned stack for the next new thread. */
void pm_heap_abandon(pm_heap *heap) {
    heap_let_go(heap);
    pm_lock(&heap_lock);
    atomic_store(&heap->abandoned, 1);
    heap->next_abandoned = abandoned;
    abandoned = heap;
    pm_gstats.heaps_abandoned++;
    pm_unlock(&heap_lock);
}

/* Heaps orphaned by fork keep their caches and current pools (the child's handler may do no
 * work): let them go here, under heap_lock so that no adopter takes them meanwhile. */
void pm_heap_service_abandoned(void) {
    pm_lock(&heap_lock);
    for (pm_heap *h = abandoned; h; h = h->next_abandoned)
        heap_let_go(h);
    pm_unlock(&heap_lock);
}

/* ---- fork ----------------------------------------------------------------------------------- */
/* Every allocator lock is taken before fork, in the one lock order (I7), so that no other
 * thread holds one at the moment of the fork: in the child, that thread would not exist to
 * release it, and the structure it guards could be half changed. */

void pm_heap_fork_prepare(void) {
    pm_lock(&heap_lock);
    for (pm_heap *h = atomic_load(&pm_all_heaps); h; h = h->next_all)
        pm_lock(&h->xlock);
    pm_lock(&pm_arena_lock);
}

void pm_heap_fork_parent(void) {
    pm_unlock(&pm_arena_lock);
    for (pm_heap *h = atomic_load(&pm_all_heaps); h; h = h->next_all)
        pm_unlock(&h->xlock);
    pm_unlock(&heap_lock);
}

/* In the child only the forking thread exists. First every lock is made anew; then the other
 * threads' heaps go on the abandoned stack as they are, caches and current pools included, so
 * that new threads adopt them: no block is freed, no pool released, no system call made here
 * (issue 7.1: work done here once took a lock still held from prepare). */
void pm_heap_fork_child(void) {
    pm_lock_reinit(&pm_arena_lock);
    pm_lock_reinit(&heap_lock);
    for (pm_heap *h = atomic_load(&pm_all_heaps); h; h = h->next_all)
        pm_lock_reinit(&h->xlock);
    pm_heap *mine = pm_thread_heap;
    for (pm_heap *h = atomic_load(&pm_all_heaps); h; h = h->next_all) {
        if (h == mine || atomic_load(&h->abandoned) || h == PM_SENTINEL_HEAP)
            continue;
        atomic_store(&h->abandoned, 1);
        h->next_abandoned = abandoned;
        abandoned = h;
        pm_gstats.heaps_abandoned++;
    }
}

/* ---- consistency checks (PM_DEBUG) ------------------------------------------------------------ */

/* I1, I2, I6 for the current pool: every free block is a carved block of this pool carrying
 * its free key, so is every unused carved one, and the use count matches capacity minus the
 * free and never-used blocks. */
static void check_pool(const pm_heap *heap, const pm_pool *pool) {
    if ((uintptr_t)pool->owner != (uintptr_t)heap)
        pm_fatal("debug: pool %p is current in heap %p but owned by %p", (const void *)pool,
                 (const void *)heap, (const void *)pool->owner);
    uint32_t free_blocks = 0;
    for (const pm_block *b = pool->free; b; b = pm_link_decode(b)) {
        if (pm_pool_of(b) != pool || !pm_pool_is_carved_block(pool, b) ||
            b->key != pm_free_key(b))
            pm_fatal("debug: pool %p (class %u): free list holds a bad block %p",
                     (const void *)pool, pool->cls, (const void *)b);
        if (++free_blocks > pool->capacity)
            pm_fatal("debug: pool %p: free list longer than the pool (a cycle?)", (const void *)pool);
    }
    if (pool->bump_end != pool->start + pool->carved || pool->bump > pool->bump_end ||
        (pool->bump - pool->start) % pool->block_size != 0 ||
        pool->carved_limit != pm_pool_carved_limit(pool, pool->carved))
        pm_fatal("debug: pool %p (class %u): unused blocks from %p to %p, carve point %u, "
                 "carve test's limit %llu", (const void *)pool, pool->cls,
                 (const void *)pool->bump, (const void *)pool->bump_end, pool->carved,
                 (unsigned long long)pool->carved_limit);
    for (const char *b = pool->bump; b < pool->bump_end; b += pool->block_size)
        if (((const pm_block *)b)->key != pm_free_key(b))
            pm_fatal("debug: pool %p (class %u): unused block %p lost its key", (const void *)pool,
                     pool->cls, (const void *)b);
    uint32_t unused = (uint32_t)((pool->end - pool->bump) / pool->block_size);
    if (pool->used + free_blocks + unused != pool->capacity)
        pm_fatal("debug: pool %p (class %u): %u used + %u free + %u never used != capacity %u",
                 (const void *)pool, pool->cls, pool->used, free_blocks, unused, pool->capacity);
}

static void check_heap(const pm_heap *heap) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        const pm_class_state *cs = &heap->cls[c];
        pm_block **end = pm_cache_end((pm_heap *)heap, c);
        if (cs->top < cache_first((pm_heap *)heap, c) || cs->top > end ||
            cs->empty_lo != pm_low16(end) ||
            (cs->full_lo != cs->empty_lo && cs->full_lo != pm_low16(cache_first((pm_heap *)heap, c))))
            pm_fatal("debug: heap %p: cache of class %u: top %p out of its slots, or bad bounds",
                     (const void *)heap, c, (void *)cs->top);
        if (cs->full_lo == cs->empty_lo && cs->top != end) /* drained: pm_heap_cache_stale */
            pm_fatal("debug: heap %p: drained cache of class %u holds blocks", (const void *)heap, c);
        for (pm_block **slot = cs->top; slot < end; slot++) {
            const pm_block *b = *slot;
            const pm_pool *pool = pm_pool_of(b);
            if (pm_pool_owner(pool) != heap || pool->cls != c || b->key != pm_free_key(b))
                pm_fatal("debug: heap %p: cache of class %u holds a bad block %p",
                         (const void *)heap, c, (const void *)b);
        }
        if (cs->current != &pm_empty_pool)
            check_pool(heap, cs->current);
    }
}
