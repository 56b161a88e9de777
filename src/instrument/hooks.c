/*
 * hooks.c: the instrumentation layer's entry points (called from the core's slow paths when
 * pm_instrument_on), the raw core entry points it allocates through, and its start-up.
 * See instrument.h for how the layer hooks in.
 */
#include "instrument/instrument.h"

#include <fcntl.h>
#include <unistd.h>

bool pm_instr_active;
bool pm_instrument_on;
PM_TLS bool pm_instr_bypass;
static bool header_mode; /* DEBUG or LEAKS: every block carries a header */

/* ---- raw entry points ------------------------------------------------------------------- */

/* A raw call runs the core as if no mode were on: hooks off and, in header mode, the thread's
 * real heap as the fast heap, so the inline fast paths (and the per-thread cache) serve it.
 * Header mode gives every thread the sentinel as its fast heap (heap_install), so that is
 * what is restored; elsewhere (PROF in the slow paths with POOLMALLOC_POISON) the fast heap
 * is left alone. Raw calls may nest (prof's hook frees the block it moves from inside a raw
 * malloc), so bypass is restored, not cleared. */
#define RAW_CALL(expr)                                                                         \
    do {                                                                                       \
        bool outer_bypass_ = pm_instr_bypass;                                                  \
        pm_heap *own_heap_ = pm_instrument_on ? pm_thread_heap : NULL;                         \
        pm_instr_bypass = true;                                                                \
        if (own_heap_ != NULL)                                                                 \
            pm_fast_heap_set(own_heap_);                                                       \
        expr;                                                                                  \
        if (pm_instrument_on)                                                                  \
            pm_fast_heap_set(PM_SENTINEL_HEAP);                                                \
        pm_instr_bypass = outer_bypass_;                                                       \
    } while (0)

void *pm_raw_malloc(size_t size) {
    void *p;
    RAW_CALL(p = pm_malloc_inline(size));
    return p;
}

void *pm_raw_calloc(size_t total) {
    void *p;
    RAW_CALL(p = pm_calloc(total, 1));
    return p;
}

void *pm_raw_aligned(size_t align, size_t size) {
    void *p;
    RAW_CALL(p = pm_memalign(align, size));
    return p;
}

void *pm_raw_realloc(void *p, size_t size) {
    void *q;
    RAW_CALL(q = pm_realloc(p, size));
    return q;
}

void pm_raw_free(void *p) { RAW_CALL(pm_free_inline(p)); }

size_t pm_raw_usable(const void *p) {
    size_t n;
    RAW_CALL(n = pm_usable_size(p));
    return n;
}

int pm_raw_owns(const void *p) {
    int n;
    RAW_CALL(n = pm_owns(p));
    return n;
}

/* ---- hooks ----------------------------------------------------------------------------------
 * Each is compiled with frame pointers and reached from the core by a call or tail call that
 * leaves the frame-pointer register as the program had it, so PM_CALLER_FP() here is the
 * program's frame. They stay out of line so that this holds. Each is a safe point for a
 * profile asked for by signal (no lock of ours is held on entry). */

static void *raw_alloc(size_t size, size_t align, bool zero) {
    if (align > PM_MIN_ALIGN)
        return pm_raw_aligned(align, size);
    return zero ? pm_raw_calloc(size) : pm_raw_malloc(size);
}

static void *alloc_instrumented(size_t size, size_t align, bool zero, void *site, uintptr_t fp) {
    PM_PROF_SAFE_POINT();
    void *p = header_mode ? pm_dbg_alloc(size, align, zero, site, fp) : raw_alloc(size, align, zero);
    if (p != NULL && pm_instr_opt.prof)
        pm_prof_after_alloc(p, size, site, fp);
    return p;
}

/* PROF alone on the slow path, the common sizes: the core's inline pop on the thread's own
 * heap, which never leaves inline code (so the hooks need no switching off), or NULL. */
static void *pop_own_heap(size_t size) {
    pm_heap *own = pm_thread_heap;
    if (PM_UNLIKELY(own == NULL || size > PM_SMALL_LOOKUP_MAX))
        return NULL;
    pm_fast_heap_set(own);
    void *p = pm_pop_current(pm_class_of_small[(size + 15) >> 4], size);
    pm_fast_heap_set(PM_SENTINEL_HEAP);
    return p;
}

PM_NOINLINE void *pm_instr_malloc(size_t size, void *site) {
    if (PM_LIKELY(!header_mode)) { /* PROF alone, in the slow paths */
        PM_PROF_SAFE_POINT();
        void *p = pop_own_heap(size);
        if (PM_UNLIKELY(p == NULL))
            p = pm_raw_malloc(size);
        if (PM_LIKELY(p != NULL))
            pm_prof_after_alloc(p, size, site, PM_CALLER_FP());
        return p;
    }
    return alloc_instrumented(size, 0, false, site, PM_CALLER_FP());
}

PM_NOINLINE void *pm_instr_calloc(size_t total, void *site) {
    return alloc_instrumented(total, 0, true, site, PM_CALLER_FP());
}

PM_NOINLINE void *pm_instr_aligned(size_t align, size_t size, void *site) {
    return alloc_instrumented(size, align, false, site, PM_CALLER_FP());
}

/* errno needs no saving: the core's free preserves it, and nothing else here sets it. */
PM_NOINLINE void pm_instr_free(void *p, void *site) {
    if (p == NULL)
        return;
    PM_PROF_SAFE_POINT();
    if (pm_instr_opt.prof) /* before the block can be reused by another thread and sampled anew */
        pm_prof_before_free(p);
    if (header_mode)
        pm_dbg_free(p, site, PM_CALLER_FP());
    else
        pm_raw_free(p);
}

PM_NOINLINE void *pm_instr_realloc(void *p, size_t size, void *site) {
    uintptr_t fp = PM_CALLER_FP();
    if (p == NULL)
        return alloc_instrumented(size, 0, false, site, fp);
    if (size == 0) { /* glibc: free and return NULL */
        pm_instr_free(p, site);
        return NULL;
    }
    PM_PROF_SAFE_POINT();
    void *q = header_mode ? pm_dbg_realloc(p, size, site, fp) : pm_raw_realloc(p, size);
    if (q != NULL && pm_instr_opt.prof) { /* the old block is gone, the new one may be sampled */
        pm_prof_before_free(p);
        pm_prof_after_alloc(q, size, site, fp);
    }
    return q;
}

size_t pm_instr_usable(const void *p) {
    return header_mode ? pm_dbg_usable(p) : pm_raw_usable(p);
}

int pm_instr_owns(const void *p) {
    if (p == NULL)
        return 0;
    return header_mode ? pm_dbg_owns(p) : pm_raw_owns(p);
}

/* ---- files ------------------------------------------------------------------------------ */

void pm_instr_expand_path(char *out, size_t len, const char *path, const char *suffix) {
    size_t n = 0;
    char pid[24];
    pm_snprintf(pid, sizeof pid, "%d", (int)getpid());
    for (const char *s = path; *s && n + 1 < len; s++) {
        if (s[0] == '%' && s[1] == 'p') {
            for (const char *d = pid; *d && n + 1 < len; d++)
                out[n++] = *d;
            s++;
        } else
            out[n++] = *s;
    }
    for (const char *s = suffix; *s && n + 1 < len; s++)
        out[n++] = *s;
    out[n] = 0;
}

int pm_instr_open(const char *path) {
    if (path[0] == 0)
        return 2;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        pm_warn("cannot write %s (errno %d)", path, errno);
    return fd;
}

/* ---- start-up, fork, exit --------------------------------------------------------------- */

/* Lock order: the stack table, then the quarantine, then the profile (none of them is held
 * while taking another, but the fork handlers take all three). */
static void fork_prepare(void) {
    pm_stack_fork_prepare();
    pm_dbg_fork_prepare();
    pm_prof_fork_prepare();
}
static void fork_parent(void) {
    pm_prof_fork_parent();
    pm_dbg_fork_parent();
    pm_stack_fork_parent();
}
static void fork_child(void) {
    pm_prof_fork_child();
    pm_dbg_fork_child();
    pm_stack_fork_child();
}

void pm_instr_init(void) {
    header_mode = pm_instr_opt.debug || pm_instr_opt.leaks;
    if (!header_mode && !pm_instr_opt.prof)
        return;
    /* PROF alone rides on the core's countdown where the core has one; otherwise (or with a
     * header mode, which sees every call anyway) the layer counts in its hooks, and those
     * must then see every call. */
    bool prof_in_core = PM_PROF_BY_CORE && !header_mode;
    pm_stack_init();
    pm_dbg_init();
    if (pm_instr_opt.prof)
        pm_prof_init(prof_in_core);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    pm_instrument_on = !prof_in_core;
    pm_instr_active = true;
}

/* A destructor, as the statistics report: atexit may allocate. The preloaded library's
 * destructors run after the program's, so blocks freed by those are not reported. */
__attribute__((destructor)) static void instrument_exit(void) {
    if (!pm_instr_active)
        return;
    if (pm_instr_opt.debug)
        pm_dbg_sweep();
    if (pm_instr_opt.leaks)
        pm_leaks_report();
    if (pm_instr_opt.prof)
        pm_prof_exit_dump();
}
