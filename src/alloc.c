/*
 * alloc.c: the public allocation API (pm_malloc and friends), initialisation, and the slow
 * paths behind the inline fast paths of internal.h.
 */
#include "internal.h"

#include <sched.h>

_Atomic int pm_initialized; /* 0 not yet, 1 running, 2 done */
static PM_TLS bool initialising;

/* ---- initialisation --------------------------------------------------------------------- */

/* Locks are taken in the allocator's one lock order (heap, then arena, then large: a purge
 * under the arena lock expires the large cache), so that prepare cannot deadlock with a thread
 * that holds one of them and waits for the next. */
static void fork_prepare(void) {
    pm_heap_fork_prepare();
    pm_large_fork_prepare();
}
static void fork_parent(void) {
    pm_large_fork_parent();
    pm_heap_fork_parent();
}
static void fork_child(void) {
    pm_heap_fork_child();
    pm_large_fork_child();
}

/* Runs once, on the first allocation from any thread (possibly before our constructor, from
 * the dynamic loader or another library's constructor). Nothing here may allocate. */
void pm_init(void) {
    if (PM_LIKELY(atomic_load_explicit(&pm_initialized, memory_order_acquire) == 2))
        return;
    int expected = 0;
    if (atomic_compare_exchange_strong(&pm_initialized, &expected, 1)) {
        initialising = true;
        pm_sizeclass_init();
        pm_options_init();
        pm_arena_init();
        pm_heap_init_global();
        /* Registered before any other thread of ours can exist to race with a fork. */
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        pm_stats_init();
        atomic_store_explicit(&pm_initialized, 2, memory_order_release);
        initialising = false;
        return;
    }
    if (initialising)
        pm_fatal("allocator re-entered during its own initialisation (recursion)");
    while (atomic_load_explicit(&pm_initialized, memory_order_acquire) != 2)
        sched_yield();
}

__attribute__((constructor)) static void pm_constructor(void) { pm_init(); }

/* ---- checks ------------------------------------------------------------------------------ */

/* I3 and I2 for a pointer inside an arena; aborts with a clear message on misuse. */
static void check_pool_block(const pm_pool *pool, const void *p, const char *fn) {
    if (PM_UNLIKELY(pm_pool_owner(pool) == NULL))
        pm_fatal("%s(): invalid pointer %p (inside a poolmalloc arena, but in no allocated pool: "
                 "a double free, or a pointer that was never allocated)", fn, p);
    if (PM_UNLIKELY(!pm_pool_is_block(pool, p)))
        pm_fatal("%s(): invalid pointer %p (not the start of a block; this pool's blocks are "
                 "%u bytes)", fn, p, pool->block_size);
    if (PM_UNLIKELY(((const pm_block *)p)->key == pm_free_key(pool)))
        pm_fatal("%s(): double free or use after free of %p (a free %u-byte block)", fn, p,
                 pool->block_size);
}

static PM_COLD void report_foreign(const void *p, const char *fn) {
    pm_fatal("%s(): invalid pointer %p (not allocated by poolmalloc)", fn, p);
}

/* ---- malloc -------------------------------------------------------------------------------- */

static void *fail_enomem(void) {
    errno = ENOMEM;
    return NULL;
}

static void *alloc_from_class(unsigned cls, size_t size) {
    pm_heap *heap = pm_heap_get();
    if (PM_UNLIKELY(heap == NULL))
        return fail_enomem();
    void *p = pm_heap_alloc(heap, cls);
    if (PM_UNLIKELY(p == NULL))
        return fail_enomem();
    PM_STAT(heap->counters.nmalloc[cls]++; heap->counters.requested[cls] += size);
    if (PM_UNLIKELY(pm_opt.poison))
        memset(p, PM_POISON_NEW, pm_class_size[cls]);
    return p;
}

static void *alloc_large(size_t size, size_t align, bool zero) {
    if (size > PTRDIFF_MAX)
        return fail_enomem();
    void *p = pm_large_alloc(size, align, zero);
    if (p == NULL)
        return fail_enomem();
    if (PM_UNLIKELY(pm_opt.poison) && !zero)
        memset(p, PM_POISON_NEW, size);
    return p;
}

/* Also the fast path of sizes above the lookup table (1 KiB .. the mmap threshold). */
void *pm_malloc_slow(size_t size) {
    /* The threshold is an option: read the environment before the first comparison. */
    if (PM_UNLIKELY(atomic_load_explicit(&pm_initialized, memory_order_relaxed) != 2))
        pm_init();
    if (PM_LIKELY(size <= pm_opt.mmap_threshold)) {
        unsigned cls = pm_size_class(size);
        /* Sizes up to the lookup table already tried the cache and current pool inline. */
        void *p = size > PM_SMALL_LOOKUP_MAX ? pm_pop_current(cls, size) : NULL;
        return PM_LIKELY(p != NULL) ? p : alloc_from_class(cls, size);
    }
    pm_init();
    return alloc_large(size, 0, false);
}

void *pm_malloc(size_t size) { return pm_malloc_inline(size); }

void *pm_calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return fail_enomem();
    pm_init();
    if (total > pm_opt.mmap_threshold)
        return alloc_large(total, 0, true); /* fresh mappings are zero already */
    void *p = pm_malloc_inline(total);
    if (p != NULL)
        memset(p, 0, total);
    return p;
}

/* ---- aligned allocation ------------------------------------------------------------------- */

/* A block aligned to align (a power of two). Pools start on unit boundaries, so a block of a
 * class whose size is a multiple of align is aligned: pick the first such class that fits. */
static void *alloc_aligned(size_t align, size_t size) {
    if (align <= PM_MIN_ALIGN)
        return pm_malloc(size);
    pm_init();
    if (align <= PM_UNIT_SIZE) {
        size_t n = size < align ? align : size;
        if (n <= pm_opt.mmap_threshold) {
            unsigned cls = pm_size_class(n);
            while (cls < PM_NUM_CLASSES && pm_class_size[cls] % align != 0)
                cls++;
            if (cls < PM_NUM_CLASSES && pm_class_size[cls] <= pm_opt.mmap_threshold)
                return alloc_from_class(cls, size);
        }
    }
    return alloc_large(size, align, false);
}

static bool is_power_of_two(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

int pm_posix_memalign(void **out, size_t alignment, size_t size) {
    if (!is_power_of_two(alignment) || alignment % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(alignment, size);
    errno = saved; /* posix_memalign reports through its result, not errno */
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

void *pm_aligned_alloc(size_t alignment, size_t size) {
    if (!is_power_of_two(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(alignment, size);
}

/* glibc's memalign rounds a non-power-of-two alignment up rather than failing. */
void *pm_memalign(size_t alignment, size_t size) {
    if (alignment > ((size_t)1 << (sizeof(size_t) * 8 - 2))) {
        errno = EINVAL;
        return NULL;
    }
    size_t a = PM_MIN_ALIGN;
    while (a < alignment)
        a <<= 1;
    return alloc_aligned(a, size);
}

void *pm_valloc(size_t size) { return alloc_aligned(PM_PAGE_SIZE, size); }

void *pm_pvalloc(size_t size) {
    size_t rounded = (size + PM_PAGE_SIZE - 1) & ~(size_t)(PM_PAGE_SIZE - 1);
    if (rounded < size)
        return fail_enomem();
    return alloc_aligned(PM_PAGE_SIZE, rounded ? rounded : PM_PAGE_SIZE);
}

/* ---- free ------------------------------------------------------------------------------------ */

static void free_pool_block(pm_pool *pool, void *p) {
    check_pool_block(pool, p, "free");
    pm_heap *me = pm_thread_heap;
    pm_block *b = p;
    if (me == NULL || pm_pool_owner(pool) != me) {
        pm_heap_free_remote(pool, b);
        return;
    }
    if (PM_UNLIKELY(pm_opt.poison) && pool->block_size > sizeof(pm_block))
        memset((char *)p + sizeof(pm_block), PM_POISON_FREED, pool->block_size - sizeof(pm_block));
    b->next = pool->free;
    b->key = pm_free_key(pool);
    pool->free = b;
    pool->used--;
    pm_heap_pool_event(me, pool);
}

/* The commonest way off the free fast path: the block's pool is full, so its owner word
 * carries the FULL bit (I6). The checks are the fast path's; the pool joins the partial list.
 * No system call can happen here, so errno needs no saving. */
static bool free_into_full_pool(void *p) {
    if (!pm_in_arena(p))
        return false;
    pm_pool *pool = pm_pool_of(p);
    pm_heap *heap = pm_fast_heap;
    pm_block *b = p;
    if ((uintptr_t)pool->owner != ((uintptr_t)heap | PM_OWNER_FULL) ||
        b->key == pm_free_key(pool) || !pm_pool_is_block(pool, p))
        return false;
    b->next = pool->free;
    b->key = pm_free_key(pool);
    pool->free = b;
    pool->used--;
    pm_heap_pool_event(heap, pool);
    return true;
}

void pm_free_slow(void *p) {
    if (PM_LIKELY(free_into_full_pool(p)) || p == NULL)
        return;
    int saved = errno; /* free preserves errno, whatever the kernel calls below do */
    if (pm_in_arena(p))
        free_pool_block(pm_pool_of(p), p);
    else if (!pm_large_free(p)) {
        if (pm_large_was_freed(p))
            pm_fatal("free(): double free of large block %p", p);
        report_foreign(p, "free");
    }
    errno = saved;
}

void pm_free(void *p) { pm_free_inline(p); }

size_t pm_usable_size(const void *p) {
    if (p == NULL)
        return 0;
    if (pm_in_arena(p)) {
        const pm_pool *pool = pm_pool_of(p);
        check_pool_block(pool, p, "malloc_usable_size");
        return pool->block_size;
    }
    size_t n = pm_large_usable(p);
    if (n == 0)
        report_foreign(p, "malloc_usable_size");
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
    if (pm_in_arena(p)) {
        const pm_pool *pool = pm_pool_of(p);
        return pm_pool_owner(pool) != NULL && pm_pool_is_block(pool, p) &&
               ((const pm_block *)p)->key != pm_free_key(pool);
    }
    return pm_large_usable(p) != 0;
}

/* ---- realloc -------------------------------------------------------------------------------- */

static void *move_block(void *p, size_t old_usable, size_t size) {
    void *q = pm_malloc(size);
    if (q == NULL)
        return NULL; /* p is untouched, as C requires */
    memcpy(q, p, old_usable < size ? old_usable : size);
    pm_free(p);
    return q;
}

void *pm_realloc(void *p, size_t size) {
    if (p == NULL)
        return pm_malloc(size);
    if (size == 0) { /* glibc: free and return NULL */
        pm_free(p);
        return NULL;
    }
    if (size > PTRDIFF_MAX)
        return fail_enomem();
    if (pm_in_arena(p)) {
        const pm_pool *pool = pm_pool_of(p);
        check_pool_block(pool, p, "realloc");
        size_t bs = pool->block_size;
        /* Stay put when the block still fits and would not waste more than half of itself. */
        if (size <= bs && (size * 2 >= bs || bs <= 64))
            return p;
        return move_block(p, bs, size);
    }
    size_t usable = pm_large_usable(p);
    if (usable == 0)
        report_foreign(p, "realloc");
    if (size <= pm_opt.mmap_threshold)
        return move_block(p, usable, size);
    void *q = pm_large_realloc(p, size);
    return q != NULL ? q : move_block(p, usable, size);
}

void *pm_reallocarray(void *p, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return fail_enomem();
    return pm_realloc(p, total);
}

/* ---- trimming ------------------------------------------------------------------------------- */

int pm_trim(void) {
    pm_init();
    int saved = errno;
    if (pm_thread_heap) {
        pm_heap_flush_cache(pm_thread_heap);
        pm_heap_drain_remote(pm_thread_heap);
    }
    pm_heap_service_abandoned();
    size_t bytes = pm_arena_purge(true) + pm_large_trim();
    errno = saved;
    return bytes > 0;
}
