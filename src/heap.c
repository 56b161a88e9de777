/*
 * heap.c: per-thread heaps: creation and adoption, the per-class pool lists, cross-thread
 * frees, thread exit and fork.
 *
 * A heap is only ever touched by the thread that holds it, except for its `remote` list, which
 * any thread may push onto. Heaps are never unmapped (they are small and a thread's exit must
 * not invalidate pool->owner pointers that other threads still follow); an exited thread's heap
 * waits on the abandoned stack for the next new thread.
 */
#include "internal.h"
#include "instrument/instrument.h"

#include <sched.h>

#define HEAP_CHUNK (64 * 1024) /* heaps are carved from chunks of this size */

pm_heap pm_sentinel_heap = {.current = {[0 ... PM_NUM_CLASSES - 1] = &pm_empty_pool}};
PM_TLS pm_heap *pm_fast_heap = &pm_sentinel_heap;
PM_TLS pm_heap *pm_thread_heap;
pm_heap *_Atomic pm_all_heaps;

static pthread_mutex_t heap_lock = PM_LOCK_INITIALIZER; /* abandoned stack, chunks */
static pm_heap *abandoned;
static char *chunk_next, *chunk_end;
static uint64_t next_heap_id;
static pthread_key_t exit_key;
static PM_TLS bool in_heap_setup; /* recursion guard */

static void heap_on_thread_exit(void *heap);

void pm_heap_init_global(void) {
    if (pthread_key_create(&exit_key, heap_on_thread_exit) != 0)
        pm_fatal("pthread_key_create failed: cannot track thread exit");
}

static void heap_reset_lists(pm_heap *h) {
    for (unsigned c = 0; c < PM_NUM_CLASSES; c++) {
        h->cache[c] = NULL;
        h->cache_room[c] = pm_class_cache_limit[c];
        h->current[c] = &pm_empty_pool;
        h->partial[c] = NULL;
    }
}

/* Under heap_lock. */
static pm_heap *heap_new_locked(void) {
    size_t size = (sizeof(pm_heap) + 63) & ~(size_t)63;
    if (chunk_next == NULL || chunk_next + size > chunk_end) {
        chunk_next = pm_os_map(HEAP_CHUNK);
        if (chunk_next == NULL)
            return NULL;
        chunk_end = chunk_next + HEAP_CHUNK;
    }
    pm_heap *h = (pm_heap *)chunk_next;
    chunk_next += size;
    heap_reset_lists(h);
    h->id = ++next_heap_id;
    pm_heap *head = atomic_load(&pm_all_heaps);
    do
        h->next_all = head;
    while (!atomic_compare_exchange_weak(&pm_all_heaps, &head, h));
    pm_gstats.heaps_created++;
    return h;
}

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
static void heap_install(pm_heap *h) {
    pm_thread_heap = h;
    pm_fast_heap = (h && !pm_opt.poison && !pm_instrument_on) ? h : &pm_sentinel_heap;
}

pm_heap *pm_heap_get(void) {
    pm_heap *h = pm_thread_heap;
    if (PM_LIKELY(h != NULL))
        return h;
    if (in_heap_setup)
        pm_fatal("malloc re-entered while setting up a thread heap (recursion)");
    in_heap_setup = true;
    pm_init();
    h = heap_take();
    if (h != NULL) {
        heap_install(h);
        pm_heap_drain_remote(h);
        /* After heap_install: pthread_setspecific may allocate, and must find the heap. */
        pthread_setspecific(exit_key, h);
    }
    in_heap_setup = false;
    return h;
}

/* ---- pool lists ------------------------------------------------------------------------- */

static void partial_push(pm_heap *h, pm_pool *pool) {
    pool->state = PM_POOL_PARTIAL;
    pm_pool_set_owner(pool, h, false);
    pool->prev = NULL;
    pool->next = h->partial[pool->cls];
    if (pool->next)
        pool->next->prev = pool;
    h->partial[pool->cls] = pool;
}

static void partial_unlink(pm_heap *h, pm_pool *pool) {
    if (pool->prev)
        pool->prev->next = pool->next;
    else
        h->partial[pool->cls] = pool->next;
    if (pool->next)
        pool->next->prev = pool->prev;
    pool->next = pool->prev = NULL;
}

void pm_heap_pool_event(pm_heap *heap, pm_pool *pool) {
    if (pool->state == PM_POOL_FULL)
        partial_push(heap, pool);
    if (pool->used == 0 && pool->state == PM_POOL_CURRENT)
        pm_fatal("pool %p of class %u: use count underflow (heap corrupt)", (void *)pool,
                 pool->cls);
    if (pool->used == 0 && pool->state == PM_POOL_PARTIAL) {
        partial_unlink(heap, pool);
        pm_pool_release(pool);
    }
}

/* ---- the block cache -------------------------------------------------------------------------- */

void pm_heap_flush_cache(pm_heap *heap) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        pm_block *b = heap->cache[c];
        heap->cache[c] = NULL;
        heap->cache_room[c] = pm_class_cache_limit[c];
        while (b != NULL) {
            pm_block *next = b->next;
            pm_pool *pool = pm_pool_of(b);
            b->next = pool->free; /* the key is set already (I2) */
            pool->free = b;
            pool->used--;
            pm_heap_pool_event(heap, pool);
            b = next;
        }
    }
}

/* ---- cross-thread frees ------------------------------------------------------------------ */

/* A heap nobody holds cannot drain its remote list, so blocks freed into it would stay
 * allocated until a new thread adopts it, which may never happen. The freeing thread drains
 * it instead, under heap_lock, which also keeps adopters out meanwhile. */
static void service_abandoned(pm_heap *heap) {
    pm_lock(&heap_lock);
    if (atomic_load(&heap->abandoned))
        pm_heap_drain_remote(heap);
    pm_unlock(&heap_lock);
}

void pm_heap_service_abandoned(void) {
    for (pm_heap *h = atomic_load(&pm_all_heaps); h; h = h->next_all)
        if (atomic_load(&h->abandoned) && atomic_load(&h->remote) != NULL)
            service_abandoned(h);
}

void pm_heap_free_remote(pm_pool *pool, pm_block *block) {
    pm_heap *owner = pm_pool_owner(pool);
    block->key = pm_free_key(pool); /* a second free of this block is now detectable (I2) */
    pm_block *head = atomic_load_explicit(&owner->remote, memory_order_relaxed);
    do
        block->next = head;
    while (!atomic_compare_exchange_weak_explicit(&owner->remote, &head, block,
                                                  memory_order_release, memory_order_relaxed));
    pm_heap *me = pm_thread_heap;
    if (me)
        PM_STAT(me->remote_frees_sent++);
    if (PM_UNLIKELY(atomic_load_explicit(&owner->abandoned, memory_order_relaxed)))
        service_abandoned(owner);
}

void pm_heap_drain_remote(pm_heap *heap) {
    if (atomic_load_explicit(&heap->remote, memory_order_relaxed) == NULL)
        return;
    pm_block *b = atomic_exchange_explicit(&heap->remote, NULL, memory_order_acquire);
    while (b != NULL) {
        pm_block *next = b->next;
        pm_pool *pool = pm_pool_of(b);
        b->next = pool->free;
        pool->free = b;
        PM_STAT(heap->remote_frees_received++);
        if (--pool->used == 0 || pool->state == PM_POOL_FULL)
            pm_heap_pool_event(heap, pool);
        b = next;
    }
}

/* ---- consistency checks (--enable-debug) ------------------------------------------------------ */

/* I1, I2, I6 for one pool: every free block is a block of this pool carrying the free key, and
 * the use count matches capacity minus the free and uncarved blocks. */
static void check_pool(const pm_heap *heap, const pm_pool *pool) {
    if (pm_pool_owner(pool) != heap)
        pm_fatal("debug: pool %p is on heap %p's lists but owned by %p", (const void *)pool,
                 (const void *)heap, (const void *)pm_pool_owner(pool));
    uint32_t free_blocks = 0;
    for (const pm_block *b = pool->free; b; b = b->next) {
        if (pm_pool_of(b) != pool || !pm_pool_is_block(pool, b) || b->key != pm_free_key(pool))
            pm_fatal("debug: pool %p (class %u): free list holds a bad block %p",
                     (const void *)pool, pool->cls, (const void *)b);
        if (++free_blocks > pool->capacity)
            pm_fatal("debug: pool %p: free list longer than the pool (a cycle?)", (const void *)pool);
    }
    uint32_t uncarved = (uint32_t)((pool->end - pool->carve) / pool->block_size);
    uint32_t in_use = pm_pool_blocks_used(pool);
    if (in_use + free_blocks + uncarved != pool->capacity)
        pm_fatal("debug: pool %p (class %u): %u in use + %u free + %u uncarved != capacity %u",
                 (const void *)pool, pool->cls, in_use, free_blocks, uncarved, pool->capacity);
}

/* Checks every pool the heap lists. Remote frees in flight count as in use, so the heap's
 * remote list must be empty when this runs (it is right after a drain). */
static void check_heap(const pm_heap *heap) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        uint32_t cached = 0;
        for (const pm_block *b = heap->cache[c]; b; b = b->next) {
            const pm_pool *pool = pm_pool_of(b);
            if (pm_pool_owner(pool) != heap || pool->cls != c || b->key != pm_free_key(pool))
                pm_fatal("debug: heap %p: cache of class %u holds a bad block %p",
                         (const void *)heap, c, (const void *)b);
            cached++;
        }
        if (cached + heap->cache_room[c] != pm_class_cache_limit[c])
            pm_fatal("debug: heap %p: cache of class %u holds %u blocks, room %u, limit %u",
                     (const void *)heap, c, cached, heap->cache_room[c], pm_class_cache_limit[c]);
        if (heap->current[c] != &pm_empty_pool)
            check_pool(heap, heap->current[c]);
        for (const pm_pool *p = heap->partial[c]; p; p = p->next)
            check_pool(heap, p);
    }
}

/* ---- allocation from a class: the malloc slow path proper ----------------------------------- */

static void *pool_pop(pm_pool *pool) {
    pm_block *b = pool->free;
    pool->free = b->next;
    b->key = 0;
    pool->used++;
    return b;
}

void *pm_heap_alloc(pm_heap *heap, unsigned cls) {
    pm_pool *pool = heap->current[cls];
    if (pool->free != NULL)
        return pool_pop(pool);
    if (pool != &pm_empty_pool && pm_pool_carve(pool))
        return pool_pop(pool);
    pm_heap_drain_remote(heap);
    if (PM_DEBUG && atomic_load(&heap->remote) == NULL)
        check_heap(heap);
    if (pool->free != NULL)
        return pool_pop(pool);
    if (pool != &pm_empty_pool) {
        /* Exhausted: every block is out, so used stays >= 1 without the current count. A
         * local free will find the FULL mark in the owner word and list the pool (I6). */
        pool->used--;
        pm_pool_fold_stats(heap, pool);
        pool->state = PM_POOL_FULL;
        pm_pool_set_owner(pool, heap, true);
        heap->current[cls] = &pm_empty_pool;
    }
    pool = heap->partial[cls];
    if (pool != NULL) {
        partial_unlink(heap, pool);
        pool->used++; /* the current pool's extra count (I1) */
    } else {
        pool = pm_pool_acquire(heap, cls); /* comes with used == 1 */
        if (pool == NULL)
            return NULL;
    }
    if (pool->free == NULL) /* a new pool, or a partial one whose room is all uncarved */
        pm_pool_carve(pool);
    pool->state = PM_POOL_CURRENT;
    heap->current[cls] = pool;
    return pool_pop(pool);
}

/* ---- thread exit -------------------------------------------------------------------------------- */

/* Gives back what the heap can, then puts it on the abandoned stack for the next new thread.
 * Blocks still allocated stay in their pools; frees of them travel as remote frees. */
void pm_heap_abandon(pm_heap *heap) {
    pm_heap_flush_cache(heap);
    pm_heap_drain_remote(heap);
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        pm_pool *pool = heap->current[c];
        if (pool == &pm_empty_pool)
            continue;
        heap->current[c] = &pm_empty_pool;
        pm_pool_fold_stats(heap, pool);
        if (--pool->used == 0) { /* drop the current pool's extra count (I1) */
            pool->state = PM_POOL_FREE;
            pm_pool_release(pool);
        } else if (pool->free != NULL || pool->carve < pool->end) {
            partial_push(heap, pool);
        } else {
            pool->state = PM_POOL_FULL;
            pm_pool_set_owner(pool, heap, true);
        }
    }
    atomic_store(&heap->abandoned, 1);
    pm_lock(&heap_lock);
    heap->next_abandoned = abandoned;
    abandoned = heap;
    pm_gstats.heaps_abandoned++;
    pm_unlock(&heap_lock);
}

static void heap_on_thread_exit(void *arg) {
    pm_heap *heap = arg;
    if (heap == NULL || heap != pm_thread_heap)
        return;
    heap_install(NULL);
    pm_heap_abandon(heap);
}

/* ---- fork ----------------------------------------------------------------------------------- */
/* Every allocator lock is taken before fork, so that no other thread holds one at the moment
 * of the fork: in the child, that thread would not exist to release it. */

void pm_heap_fork_prepare(void) {
    pm_lock(&heap_lock);
    pm_lock(&pm_arena_lock);
}

void pm_heap_fork_parent(void) {
    pm_unlock(&pm_arena_lock);
    pm_unlock(&heap_lock);
}

/* In the child only the forking thread exists: the other threads' heaps are orphans. Put them
 * on the abandoned stack so that their pools are adopted and reused rather than lost. */
void pm_heap_fork_child(void) {
    pm_lock_reinit(&pm_arena_lock);
    pm_lock_reinit(&heap_lock);
    pm_heap *mine = pm_thread_heap;
    for (pm_heap *h = atomic_load(&pm_all_heaps); h; h = h->next_all) {
        if (h == mine || atomic_load(&h->abandoned))
            continue;
        pm_heap_flush_cache(h); /* single-threaded here: safe, and the blocks are reusable */
        atomic_store(&h->abandoned, 1);
        h->next_abandoned = abandoned;
        abandoned = h;
        pm_gstats.heaps_abandoned++;
    }
}
