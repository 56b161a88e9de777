/*
 * free.c: the freeing half of the public API (pm_free, free_sized, usable_size, pm_owns), the
 * free slow path behind pm_free_inline (internal.h), and every misuse report.
 *
 * Every free of a pool block ends in one of two places: the owner's local push (the fast path,
 * or pm_heap_free_local) or the pool's atomic list (pm_pool_free_atomic: another thread's free,
 * or the owner's into a pool that is not current). Before either, the pointer is checked (I3:
 * a carved block boundary of an allocated pool; I2: not free already), without reading the
 * block until it is known to be one.
 */
#include "internal.h"
#include "instrument/instrument.h"

/* ---- reports -------------------------------------------------------------------------------- */

void pm_report_foreign(const void *p, const char *fn) {
    pm_fatal("%s(): invalid pointer %p (not allocated by poolmalloc)", fn, p);
}

/* For a report only: p lies among the pool's carved blocks malloc has not reached yet. Those
 * are the owner's to move; another thread reads them racily here, on its way to abort. */
static bool carved_unused(const pm_pool *pool, const void *p) {
    const char *bump = __atomic_load_n(&pool->bump, __ATOMIC_RELAXED);
    const char *end = __atomic_load_n(&pool->bump_end, __ATOMIC_RELAXED);
    return (const char *)p >= bump && (const char *)p < end;
}

/* I3 and I2 for a pointer inside an arena; aborts with a clear message on misuse. The order
 * matters: p is read (its key) only once it is known to be a block that was handed out. */
static void check_pool_block(const pm_pool *pool, const void *p, const char *fn) {
    if (PM_UNLIKELY(pm_pool_owner_acquire(pool) == NULL))
        pm_fatal("%s(): invalid pointer %p (inside a poolmalloc arena, but in no allocated pool: "
                 "a double free, or a pointer that was never allocated)", fn, p);
    if (PM_UNLIKELY(!pm_pool_is_block(pool, p)))
        pm_fatal("%s(): invalid pointer %p (not the start of a block; this pool's blocks are "
                 "%u bytes)", fn, p, pool->block_size);
    if (PM_UNLIKELY(!pm_pool_is_carved_block(pool, p)))
        pm_fatal("%s(): invalid pointer %p (a block of a poolmalloc pool that was never handed "
                 "out)", fn, p);
    if (PM_UNLIKELY(((const pm_block *)p)->key == pm_free_key(p))) {
        if (carved_unused(pool, p))
            pm_fatal("%s(): invalid pointer %p (a block of a poolmalloc pool that was never "
                     "handed out)", fn, p);
        pm_fatal("%s(): double free or use after free of %p (a free %u-byte block)", fn, p,
                 pool->block_size);
    }
}

/* Not a pool block and not a live large block: a large block freed already, or a pointer
 * poolmalloc never gave out. */
void pm_report_unknown(const void *p, const char *fn) {
    if (pm_large_was_freed(p))
        pm_fatal("%s(): double free of large block %p", fn, p);
    pm_report_foreign(p, fn);
}

size_t pm_block_usable(const void *p, const char *fn) {
    const pm_pool *pool = pm_pool_of(p);
    check_pool_block(pool, p, fn);
    return pool->block_size;
}

/* ---- free ------------------------------------------------------------------------------------ */

/* A counter of the calling thread's heap: only it writes, statistics read (relaxed). */
static inline void count_remote(_Atomic uint64_t *counter) {
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void free_pool_block(pm_pool *pool, void *p) {
    check_pool_block(pool, p, "free");
    if (PM_UNLIKELY(pm_opt.poison) && pool->block_size > sizeof(pm_block))
        memset((char *)p + sizeof(pm_block), PM_POISON_FREED, pool->block_size - sizeof(pm_block));
    pm_heap *me = pm_thread_heap;
    if (me != NULL && pm_pool_owner(pool) == me) {
        pm_heap_free_local(me, pool, p);
        return;
    }
    if (me != NULL)
        PM_STAT(count_remote(&me->remote_frees));
    /* Another thread's block always goes home. Kept in the freeing thread's cache instead (as
     * jemalloc's and tcmalloc's thread caches keep it), it was reused there and freed by
     * non-owners again and again, each time off the fast path (handoff: slow-path frees
     * 244,000 -> 3,180,000, 15-20% slower; see
     * scripts/results/issue10-remote-frees-2026-12-02-eve.md). */
    pm_pool_free_atomic(pool, p);
}

void pm_free_slow(void *p) {
    if (p == NULL)
        return;
    if (PM_INSTRUMENTED()) { /* the fast heap is the sentinel then: every free comes here */
        pm_instr_free(p, __builtin_return_address(0));
        return;
    }
    int saved = errno; /* free preserves errno, whatever the kernel calls below do */
    PM_PROF_SLOW_FREE(p); /* a sampled block never takes the fast path (instrument/prof.c) */
    if (pm_in_arena(p))
        free_pool_block(pm_pool_of(p), p);
    else if (!pm_large_free(p))
        pm_report_unknown(p, "free");
    errno = saved;
}

void pm_free(void *p) { pm_free_inline(p); }

size_t pm_usable_size(const void *p) {
    if (p == NULL)
        return 0;
    if (PM_INSTRUMENTED())
        return pm_instr_usable(p);
    if (pm_in_arena(p))
        return pm_block_usable(p, "malloc_usable_size");
    size_t n = pm_large_usable(p);
    if (n == 0)
        pm_report_unknown(p, "malloc_usable_size");
    return n;
}

void pm_free_sized(void *p, size_t size) {
    if (p == NULL)
        return;
    size_t usable = pm_usable_size(p);
    if (PM_UNLIKELY(size > usable))
        pm_fatal("free_sized(): %p freed with size %zu, but its block holds only %zu bytes", p,
                 size, usable);
    pm_free(p);
}

int pm_owns(const void *p) {
    if (p == NULL)
        return 0;
    if (PM_INSTRUMENTED()) /* header mode hands out pointers past a header */
        return pm_instr_owns(p);
    if (pm_in_arena(p)) {
        const pm_pool *pool = pm_pool_of(p);
        return pm_pool_owner_acquire(pool) != NULL && pm_pool_is_carved_block(pool, p) &&
               ((const pm_block *)p)->key != pm_free_key(p);
    }
    return pm_large_usable(p) != 0;
}
