/*
 * instrument.h: poolmalloc's debug mode, leak report and sampled heap profile.
 *
 * A layer above the allocator core, off unless POOLMALLOC_DEBUG, POOLMALLOC_LEAKS or
 * POOLMALLOC_PROF is set. How it hooks in without touching the fast paths:
 *
 *  - pm_instr_init (called by pm_init once the options are read) sets pm_instrument_on for
 *    DEBUG and LEAKS (header mode), which see every call, and for PROF on a core without a
 *    sampling countdown. heap_install then gives every thread the sentinel heap as its fast
 *    heap, as poisoning does, so the inline malloc/free of internal.h always miss and call
 *    pm_malloc_slow / pm_free_slow. Those, and pm_calloc, pm_realloc, the aligned path,
 *    pm_usable_size and pm_owns, start with `if (PM_INSTRUMENTED()) return pm_instr_...(..)`:
 *    one load of a global that is false in normal runs, on slow paths only.
 *  - PROF alone, on a core with a sampling countdown (PM_PROF_BY_CORE), leaves every path
 *    as it is: the core's countdown (pm_class_state.countdown) calls prof.c's hook when it
 *    expires, which moves the sampled block to a heap no thread allocates from on its fast
 *    path, so that its free reaches pm_free_slow, which tells prof.c (PM_PROF_SLOW_FREE).
 *    prof.c says why.
 *  - The layer allocates its real blocks from the core through pm_raw_* (hooks.c): they set
 *    the thread-local pm_instr_bypass, which switches the hooks off, and in header mode point
 *    the thread's fast heap at its real heap for the duration, so a raw malloc is the core's
 *    ordinary inline fast path (per-thread cache included).
 *
 * Modes:
 *  - header mode (DEBUG or LEAKS, debug.c): every block gets a 64-byte header (size, serial,
 *    stack ids, magic, forbidden bytes) and, in DEBUG, 16 forbidden bytes after it.
 *  - PROF (prof.c): header-free; an exponential byte countdown (the core's per class, and
 *    the layer's own per thread for what the classes do not serve, or in header mode) picks
 *    the sampled allocations, recorded in a pointer-keyed table behind a counting filter
 *    that free consults first.
 * Stacks (stack.c) are frame-pointer walks, interned in a table (an id per distinct stack),
 * symbolised only at report time with dladdr (symbolise.c). Nothing here calls malloc:
 * tables are mmap'd, output goes through write(2).
 */
#ifndef PM_INSTRUMENT_H
#define PM_INSTRUMENT_H

#include "internal.h"

/* The layer's options (instr-options.c), an option group of their own. */
typedef struct pm_instr_options_t {
    bool debug;              /* POOLMALLOC_DEBUG: forbidden bytes, quarantine, reports */
    size_t debug_quarantine; /* POOLMALLOC_DEBUG_QUARANTINE: bytes of freed blocks kept */
    bool leaks;              /* POOLMALLOC_LEAKS: report blocks live at exit */
    char leaks_file[256];    /* POOLMALLOC_LEAKS_FILE: "" stderr; *.json gets JSON */
    bool prof;               /* POOLMALLOC_PROF: sampled heap profile */
    size_t prof_sample;      /* POOLMALLOC_PROF_SAMPLE: mean bytes between samples */
    char prof_file[256];     /* POOLMALLOC_PROF_FILE: where the exit profile goes */
    long prof_signal;        /* POOLMALLOC_PROF_SIGNAL: a signal that asks for a dump */
} pm_instr_options_t;
PM_HIDDEN extern pm_instr_options_t pm_instr_opt;

PM_HIDDEN extern bool pm_instr_active;             /* any mode on; set once by pm_init */
/* Every call must reach the layer's hooks (header mode, or PROF without the core's countdown):
 * heap_install gives every thread the sentinel heap as its fast heap. */
PM_HIDDEN extern bool pm_instrument_on;
PM_HIDDEN extern PM_TLS bool pm_instr_bypass;      /* inside a raw call: hooks off */
#define PM_INSTRUMENTED() (PM_UNLIKELY(pm_instrument_on) && !pm_instr_bypass)

/* Whether the core's sampling countdown can serve PROF: the core calls pm_sample_hook when a
 * class's countdown expires, and lets the hook hand out another block (internal.h). Without
 * it PROF runs in the slow paths, as header mode does. */
#if defined(PM_SAMPLE_CAN_MOVE)
#define PM_PROF_BY_CORE 1
#else
#define PM_PROF_BY_CORE 0
#endif

/* ---- the hooks (hooks.c), called from the core's entry points ---------------------------- */
/* site: the return address into the program (__builtin_return_address(0) of the core's
 * entry point, which the shim reaches by a tail call). */
PM_HIDDEN void pm_instr_init(void);
PM_HIDDEN void *pm_instr_malloc(size_t size, void *site);
PM_HIDDEN void *pm_instr_calloc(size_t total, void *site); /* n * size, overflow checked */
PM_HIDDEN void *pm_instr_realloc(void *p, size_t size, void *site);
PM_HIDDEN void *pm_instr_aligned(size_t align, size_t size, void *site);
PM_HIDDEN void pm_instr_free(void *p, void *site);
PM_HIDDEN size_t pm_instr_usable(const void *p);

/* ---- raw core entry points (hooks.c): the core's allocator, no instrumentation ------------ */
PM_HIDDEN void *pm_raw_malloc(size_t size);
PM_HIDDEN void *pm_raw_calloc(size_t total);
PM_HIDDEN void *pm_raw_aligned(size_t align, size_t size);
PM_HIDDEN void *pm_raw_realloc(void *p, size_t size);
PM_HIDDEN void pm_raw_free(void *p);
PM_HIDDEN size_t pm_raw_usable(const void *p);
PM_HIDDEN int pm_raw_owns(const void *p);
/* pm_owns under header mode: the user pointer is inside its raw block (after the header). */
PM_HIDDEN int pm_instr_owns(const void *p);

/* path with each "%p" replaced by the pid, then suffix. */
PM_HIDDEN void pm_instr_expand_path(char *out, size_t len, const char *path, const char *suffix);
/* Opens path for writing (created, truncated); "" is stderr (2). -1 on error. */
PM_HIDDEN int pm_instr_open(const char *path);

/* ---- stacks (stack.c) ------------------------------------------------------------------- */
#define PM_STACK_DEPTH 16
typedef struct pm_stack {
    uint64_t hash;
    uint32_t depth;
    uintptr_t pc[PM_STACK_DEPTH]; /* return addresses, innermost first */
    /* header mode: blocks allocated here and not freed */
    _Atomic uint64_t live_blocks, live_bytes;
    /* PROF, under the profile lock: sampled blocks (raw counts and estimated bytes) */
    uint64_t prof_live_n, prof_live_bytes, prof_live_est;
    uint64_t prof_total_n, prof_total_bytes, prof_total_est;
} pm_stack;

PM_HIDDEN void pm_stack_init(void);
/* The id (>= 1) of the stack that called the allocator: site, then the frame-pointer chain
 * from fp (the caller's frame pointer). Never 0; id 1 stands for "table full". */
PM_HIDDEN uint32_t pm_stack_capture(void *site, uintptr_t fp);
/* The same from a hook the core calls without the program's frame (the sampling hook): the
 * call site is caller when that is outside this library (the core's entry was tail-called);
 * else it is found by scanning the stack above `from` (the hook's frame) for the first return
 * address into code outside this library. The frame-pointer chain is then walked from fp, or
 * from the first frame record above the site's slot when the core used the register. */
PM_HIDDEN uint32_t pm_stack_capture_scan(uintptr_t from, uintptr_t fp, uintptr_t caller);
PM_HIDDEN pm_stack *pm_stack_get(uint32_t id);
PM_HIDDEN uint32_t pm_stack_count(void); /* ids are 1 .. count */
PM_HIDDEN void pm_stack_fork_prepare(void);
PM_HIDDEN void pm_stack_fork_parent(void);
PM_HIDDEN void pm_stack_fork_child(void);
/* The frame pointer the current function's caller had: read in a hook compiled with frame
 * pointers (the Makefile builds this layer with -fno-omit-frame-pointer). */
#define PM_CALLER_FP() (*(uintptr_t *)__builtin_frame_address(0))

/* ---- symbols (symbolise.c), at report time only ------------------------------------------ */
typedef struct pm_symbol {
    const char *name;   /* NULL if unknown */
    uintptr_t offset;   /* from name, or from the module's base when name is NULL */
    const char *module; /* NULL if unknown */
} pm_symbol;
PM_HIDDEN void pm_symbolise(uintptr_t pc, pm_symbol *out);
struct pm_writer;
/* "<indent>#i 0xpc name+0xoff (module)" lines for a stack. */
PM_HIDDEN void pm_write_stack(struct pm_writer *w, const pm_stack *s, const char *indent);
/* Symbol name only (or module+0xoff, or 0xpc), for folded stacks; no ';' or spaces. Looked up
 * once per dump (pm_symbol_cache_reset starts a dump): callers hold prof.c's dump_lock. */
PM_HIDDEN void pm_write_frame_name(struct pm_writer *w, uintptr_t pc);
PM_HIDDEN void pm_symbol_cache_reset(void);
/* A JSON array of frames. */
PM_HIDDEN void pm_write_stack_json(struct pm_writer *w, const pm_stack *s);

/* ---- header mode (debug.c) --------------------------------------------------------------- */
PM_HIDDEN void pm_dbg_init(void);
PM_HIDDEN void *pm_dbg_alloc(size_t size, size_t align, bool zero, void *site, uintptr_t fp);
PM_HIDDEN void pm_dbg_free(void *p, void *site, uintptr_t fp);
PM_HIDDEN void *pm_dbg_realloc(void *p, size_t size, void *site, uintptr_t fp);
PM_HIDDEN size_t pm_dbg_usable(const void *p);
PM_HIDDEN int pm_dbg_owns(const void *p); /* a live block's user pointer: 1, anything else 0 */
/* Checks every block in the quarantine (the periodic sweep; also at exit). */
PM_HIDDEN void pm_dbg_sweep(void);
PM_HIDDEN void pm_dbg_fork_prepare(void);
PM_HIDDEN void pm_dbg_fork_parent(void);
PM_HIDDEN void pm_dbg_fork_child(void);

/* ---- leak report (leaks.c) ---------------------------------------------------------------- */
PM_HIDDEN void pm_leaks_report(void);

/* ---- sampled heap profile (prof.c) -------------------------------------------------------- */
/* by_core: PROF alone on the core's sampling countdown (installs pm_sample_hook). */
PM_HIDDEN void pm_prof_init(bool by_core);
PM_HIDDEN extern PM_TLS int64_t pm_prof_countdown; /* bytes until the next sample */
#define PM_PROF_FILTER_BITS 16
PM_HIDDEN extern uint8_t pm_prof_filter[];         /* counting filter of sampled pointers */
PM_HIDDEN void pm_prof_sample(void *p, size_t size, void *site, uintptr_t fp);
PM_HIDDEN void pm_prof_forget(void *p);
PM_HIDDEN void pm_prof_exit_dump(void);
/* PROF on the core's countdown: the core's free slow path calls this first (and realloc before
 * it moves a large block), so that the profile forgets a sampled block, which never takes the
 * fast free path (prof.c). One load when PROF is off; with it on, the filter's byte. */
PM_HIDDEN extern bool pm_prof_watch_frees;
#define PM_PROF_SLOW_FREE(p)                                                                   \
    do {                                                                                       \
        if (PM_UNLIKELY(pm_prof_watch_frees))                                                  \
            pm_prof_before_free(p);                                                            \
    } while (0)
/* A dump asked for by POOLMALLOC_PROF_SIGNAL and not written yet is written now: called at
 * safe points (every hook of the layer), where no lock of ours is held. */
PM_HIDDEN extern volatile int pm_prof_dump_pending;
PM_HIDDEN void pm_prof_dump_requested(void);
#define PM_PROF_SAFE_POINT()                                                                   \
    do {                                                                                       \
        if (PM_UNLIKELY(pm_prof_dump_pending))                                                 \
            pm_prof_dump_requested();                                                          \
    } while (0)
PM_HIDDEN void pm_prof_fork_prepare(void);
PM_HIDDEN void pm_prof_fork_parent(void);
PM_HIDDEN void pm_prof_fork_child(void);

PM_INLINE uint32_t pm_prof_filter_slot(const void *p) {
    uint64_t h = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> (64 - PM_PROF_FILTER_BITS));
}
/* After every allocation while PROF is on: one subtraction unless this one is sampled. */
PM_INLINE void pm_prof_after_alloc(void *p, size_t size, void *site, uintptr_t fp) {
    int64_t left = pm_prof_countdown - (int64_t)(size < INT64_MAX ? size : INT64_MAX);
    pm_prof_countdown = left;
    if (PM_UNLIKELY(left <= 0))
        pm_prof_sample(p, size, site, fp);
}
/* Before every free while PROF is on: one byte load unless p may be a sampled block. */
PM_INLINE void pm_prof_before_free(void *p) {
    if (PM_UNLIKELY(__atomic_load_n(&pm_prof_filter[pm_prof_filter_slot(p)], __ATOMIC_RELAXED)))
        pm_prof_forget(p);
}

#endif /* PM_INSTRUMENT_H */
