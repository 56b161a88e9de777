/*
 * alloc.c: the allocation half of the public API (pm_malloc, calloc, the aligned forms,
 * realloc) and the malloc slow path behind pm_malloc_inline (internal.h).
 *
 * Layering: this file and free.c are the top of the core. They call down into heap.c (a
 * thread's heap), large.c (blocks above the mmap threshold) and init.c (start-up); nothing
 * below calls back up, except the inline fast paths' one edge to their slow paths here.
 */
#include "internal.h"
#include "instrument/instrument.h"

/* ---- malloc -------------------------------------------------------------------------------- */
static void *fail_enomem(void) {
    errno = ENOMEM;
    return NULL;
}

/* ---- the sampling countdown ---------------------------------------------------------------- */
pm_sample_hook_fn pm_sample_hook;
size_t pm_inline_max;

static int64_t countdown_next(void **block, size_t size, void *caller) {
    pm_sample_hook_fn hook = __atomic_load_n(&pm_sample_hook, __ATOMIC_ACQUIRE);
    return hook != NULL ? hook(block, size, caller) : PM_COUNTDOWN_IDLE;
}

static void countdown_arm(pm_class_state *cs, int64_t next) {
    PM_OWN_SET(cs->armed, next);
    PM_OWN_SET(cs->countdown, next);
}

int64_t pm_sample_first_countdown(void) { return countdown_next(&(void *){NULL}, 0, NULL); }

void pm_inline_max_update(void) {
    size_t max = pm_opt.mmap_threshold < PM_MAX_CLASS_SIZE ? pm_opt.mmap_threshold
                                                            : PM_MAX_CLASS_SIZE;
    __atomic_store_n(&pm_inline_max, max, __ATOMIC_RELAXED);
}

/* The bytes counted down since the last arming go into the statistics. */
static void countdown_fold(pm_class_state *cs) {
    PM_STAT(PM_OWN_ADD(cs->requested, (uint64_t)(cs->armed - cs->countdown)));
}

void *pm_sample_expired(pm_class_state *cs, void *block, size_t size) {
    int saved = errno;
    countdown_fold(cs);
    countdown_arm(cs, countdown_next(&block, size, __builtin_return_address(0)));
    errno = saved;
    return block;
}

void pm_sample_rearm_all(void) {
    pm_heap *heap = pm_thread_heap;
    if (heap == NULL)
        return;
    for (unsigned c = 0; c < PM_NUM_CLASSES; c++) { /* 0: large blocks */
        countdown_fold(&heap->cls[c]);
        countdown_arm(&heap->cls[c], countdown_next(&(void *){NULL}, 0, NULL));
    }
}

/* A block of class cls from the calling thread's heap, off the fast path. */
static void *alloc_class_once(unsigned cls, size_t size) {
    pm_heap *heap = pm_thread_heap_get();
    if (PM_LIKELY(heap != NULL)) {
        void *p = pm_heap_alloc(heap, cls);
        if (PM_LIKELY(p != NULL)) {
            PM_STAT(PM_OWN_ADD(heap->cls[cls].nmalloc, 1));
            return pm_count_down(&heap->cls[cls], p, size);
        }
        return p;
    }
    if (pm_thread_state == PM_THREAD_EXITED)
        return pm_heap_alloc_borrowed(cls); /* a key destructor allocating after thread exit */
    return NULL;
}

void *pm_alloc_class(unsigned cls, size_t size) {
    void *p = alloc_class_once(cls, size);
    /* The OS refused memory: give back every cached and purgeable byte, then once more. */
    if (PM_UNLIKELY(p == NULL) && pm_release_all() > 0)
        p = alloc_class_once(cls, size);
    if (PM_UNLIKELY(p == NULL))
        return fail_enomem();
    if (PM_UNLIKELY(pm_opt.poison))
        memset(p, PM_POISON_NEW, pm_class_size[cls]);
    return p;
}

static void *alloc_large(size_t size, size_t align, bool zero) {
    if (size > PTRDIFF_MAX)
        return fail_enomem();
    void *p = pm_large_alloc(size, align, zero);
    if (p == NULL && pm_release_all() > 0) /* the OS refused: give back every cached byte */
        p = pm_large_alloc(size, align, zero);
    if (p == NULL)
        return fail_enomem();
    if (PM_UNLIKELY(pm_opt.poison) && !zero)
        memset(p, PM_POISON_NEW, size);
    /* Large blocks count down too, on class 0's state (no pool class uses it); size is at
     * most PTRDIFF_MAX (checked above). */
    pm_heap *heap = pm_thread_heap;
    return PM_LIKELY(heap != NULL) ? pm_count_down(&heap->cls[0], p, size) : p;
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
        if (PM_LIKELY(p != NULL))
            return p;
        /* Instrumented, the fast heap is the sentinel: every pop above misses, so the test
         * costs nothing on the way that succeeds. */
        if (PM_INSTRUMENTED())
            return pm_instr_malloc(size, __builtin_return_address(0));
        return pm_alloc_class(cls, size);
    }
    pm_init();
    if (PM_INSTRUMENTED())
        return pm_instr_malloc(size, __builtin_return_address(0));
    return alloc_large(size, 0, false);
}

void *pm_malloc(size_t size) { return pm_malloc_inline(size); }

void *pm_calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return fail_enomem();
    pm_init_once();
    if (PM_INSTRUMENTED())
        return pm_instr_calloc(total, __builtin_return_address(0));
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
    pm_init_once();
    if (PM_INSTRUMENTED())
        return pm_instr_aligned(align, size, __builtin_return_address(0));
    if (align <= PM_UNIT_SIZE) {
        size_t n = size < align ? align : size;
        if (n <= pm_opt.mmap_threshold) {
            unsigned cls = pm_size_class(n);
            while (cls < PM_NUM_CLASSES && pm_class_size[cls] % align != 0)
                cls++;
            if (cls < PM_NUM_CLASSES && pm_class_size[cls] <= pm_opt.mmap_threshold)
                return pm_alloc_class(cls, size);
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
    if (PM_INSTRUMENTED())
        return pm_instr_realloc(p, size, __builtin_return_address(0));
    if (p == NULL)
        return pm_malloc(size);
    if (size == 0) { /* glibc: free and return NULL */
        pm_free(p);
        return NULL;
    }
    if (size > PTRDIFF_MAX)
        return fail_enomem();
    if (pm_in_arena(p)) {
        size_t bs = pm_block_usable(p, "realloc");
        /* Stay put when the block still fits and would not waste more than half of itself. */
        if (size <= bs && (size * 2 >= bs || bs <= 64))
            return p;
        return move_block(p, bs, size);
    }
    size_t usable = pm_large_usable(p);
    if (usable == 0)
        pm_report_unknown(p, "realloc");
    PM_PROF_SLOW_FREE(p); /* the profile forgets p: it moves, or its size changes */
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

