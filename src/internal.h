/*
 * internal.h: poolmalloc's internal types, invariants and fast paths.
 *
 * Read this first. It is self-contained: any file in src/ or preload/ includes it alone.
 *
 * ===========================================================================================
 * Glossary
 * ===========================================================================================
 *   block   what malloc returns: one slot of a pool, 16..131072 bytes, always 16-aligned.
 *   class   a block size. 64 classes: every 16 bytes up to 512 (as pymalloc), then four per
 *           power of two up to 128 KiB (the default mmap threshold). Index 0 is unused.
 *   unit    16 KiB, the granule in which arenas hand out memory to pools.
 *   pool    1..64 contiguous units holding blocks of one class (pymalloc's pool).
 *   arena   a 4 MiB region aligned to 4 MiB, mapped from the OS, carved into pools. Its first
 *           units hold the arena header: the unit->pool map and the pool descriptors.
 *   heap    one thread's allocator state: for each class a current pool, a list of pools
 *           with free blocks and a small cache of blocks it freed, plus a list of blocks other
 *           threads freed into its pools.
 *   cache   a heap's last freed blocks of a class (LIFO, a few KiB per class): the next malloc
 *           of the class gets the block freed last, still warm in the CPU cache.
 *   owner   the heap a pool belongs to. Only the owner's thread touches a pool's free list.
 *   remote free  a free by a thread that does not own the block's pool.
 *   large   a request above the mmap threshold: its own mapping, found through a hash table.
 *   purge   giving free units' memory back to the OS (madvise) after the purge delay.
 *
 * ===========================================================================================
 * Memory layers
 * ===========================================================================================
 *
 *   OS (mmap)
 *    |
 *    +-- arena (4 MiB, 4 MiB-aligned) ----------------------------------------------+
 *    |   | header (2 units) | pool | pool (4 units)       | free | pool | free ... |
 *    |   +------------------+------+----------------------+------+------+----------+
 *    |                         |
 *    |                         +-- pool of class 48 B: | blk | blk | blk | ... | carve -> end
 *    |                                                  ^ free list threads freed blocks
 *    |
 *    +-- large block (> threshold): one mapping, page-aligned, recorded in the large table
 *
 * Arenas are registered in a flat byte map indexed by address >> 22 (a 32 MiB reservation
 * that the kernel backs only where written; see pm_arena_map). free(p) therefore finds p's arena with one load,
 * the pool with a second (header->unit_pool[unit of p]), and knows without touching p whether
 * poolmalloc owns it. A pointer not in the map is looked up in the large table; a pointer in
 * neither is reported and the process aborts.
 *
 * ===========================================================================================
 * Size classes (index: block size; pool size)
 * ===========================================================================================
 *    1..32  16, 32, 48, ..., 512        spacing 16: waste < 16 bytes per block
 *   33..36  640, 768, 896, 1024         four per doubling from here on:
 *   37..40  1280, 1536, 1792, 2048      waste < 1/5 of the block (request s+1 gets 1.25 s)
 *   ...
 *   61..64  81920, 98304, 114688, 131072
 * A class's pool is the smallest power-of-two number of units that holds at least 8 blocks
 * and wastes at most 1/16 of the pool at its tail (sizeclass.c computes it at start-up).
 *
 * ===========================================================================================
 * Pool state machine (a pool is owned by one heap while not FREE)
 * ===========================================================================================
 *
 *            acquire from arena                free block, used -> 0 (not current)
 *   FREE ---------------------> CURRENT      +--------------------------------> FREE
 *    ^                           |   ^        |                                  (units back
 *    |                 exhausted |   | chosen |                                   to arena)
 *    |                           v   |        |
 *    |                          FULL ----> PARTIAL ------------------------------+
 *    |                              a free           (on the heap's list of its class)
 *    +-- the current pool is never released while current: an alloc/free pair at a pool
 *        boundary must not map and unmap memory each time.
 *
 * ===========================================================================================
 * Threads and cross-thread frees
 * ===========================================================================================
 * The fast paths take no lock and use no atomic instruction: malloc pops the heap's cache of
 * the class (the blocks this thread freed last), else the current pool's free list; free
 * checks that the calling thread's heap owns the pool and pushes onto the cache, else onto
 * the pool. Cached blocks still count as used in their pools (I1), so a pool cannot be
 * released under them; the cache is small (pm_class_cache_limit) and flushed when the thread
 * exits or pm_trim runs. A block freed
 * by another thread travels on the owner heap's `remote` list (a lock-free push); the owner
 * takes the whole list with one exchange whenever its malloc leaves the fast path, and frees
 * each block locally. A pool cannot be released while such a block is in flight, because the
 * block still counts in `used`: that is why a remote thread may read pool->owner safely.
 *
 * Heaps are never unmapped. When a thread exits, its heap is abandoned onto a global stack and
 * the next new thread adopts it whole (pools, partial lists and remote list): nothing leaks,
 * and frees of its blocks from key destructors or other threads keep working all along.
 *
 * ===========================================================================================
 * Invariants (checked in debug builds; the cheap ones on every free)
 * ===========================================================================================
 *  I1 pool->used counts blocks handed out and not yet freed locally (remote frees in flight
 *     and blocks in the heap's cache included), plus one while the pool is its heap's current
 *     pool. The extra one keeps the
 *     free fast path from seeing 0 (and leaving the fast path) when a program allocates and
 *     frees one block over and over.
 *  I2 every block on a free list has word 1 == the address of its pool's descriptor (the
 *     "free key"); malloc clears it. So a free that finds the key in its block is a double
 *     free (glibc's tcache uses the same idea). User data cannot hold that address by chance:
 *     nothing outside the allocator ever sees a descriptor.
 *  I3 free(p) accepts p only if p's unit maps to an in-use pool and p is a block boundary in it.
 *     Blocks are packed against the pool's end (the unusable tail, a multiple of 16 smaller
 *     than a block, sits at the front), so one exact divisibility test on p - start rejects
 *     every other address in the pool's units: see pm_pool_is_block.
 *  I6 pool->owner is the owning heap, with bit 0 set while the pool is FULL: a free into a full
 *     pool thus fails the fast path's owner test and takes the slow path that moves the pool
 *     to the partial list, at no cost to the fast path.
 *  I4 arena_map[a >> 22] != 0 exactly while an arena starts at a.
 *  I5 the allocator never calls anything that may allocate (stdio, getenv, dlsym): output goes
 *     through pm_print (write(2)), the environment is read by walking environ.
 *  I7 locks nest in one order only: heap_lock (heap.c), then pm_arena_lock, then the large
 *     lock (large.c). The fork handlers take all three in that order.
 */
#ifndef PM_INTERNAL_H
#define PM_INTERNAL_H

#include "config.h"
#include "poolmalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#ifndef PM_STATS
#define PM_STATS 1
#endif
#ifndef PM_DEBUG
#define PM_DEBUG 0
#endif

#define PM_HIDDEN __attribute__((visibility("hidden")))
#define PM_LIKELY(x) __builtin_expect(!!(x), 1)
#define PM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PM_NOINLINE __attribute__((noinline))
#define PM_COLD __attribute__((cold, noinline))
#define PM_INLINE static inline __attribute__((always_inline))
#define PM_TLS __thread __attribute__((tls_model("initial-exec")))
#define PM_NORETURN __attribute__((noreturn))

/* ---- geometry --------------------------------------------------------------------------- */
#define PM_ARENA_SHIFT 22                          /* arenas are 4 MiB, 4 MiB-aligned */
#define PM_ARENA_ALIGN ((size_t)1 << PM_ARENA_SHIFT)
#define PM_UNIT_SHIFT 14                           /* units are 16 KiB */
#define PM_UNIT_SIZE ((size_t)1 << PM_UNIT_SHIFT)
#define PM_UNITS_MAX (PM_ARENA_ALIGN / PM_UNIT_SIZE) /* 256 */
#define PM_ADDRESS_BITS 47                         /* user space on x86-64 and arm64 (4-level) */
#define PM_ARENA_MAP_LEN ((size_t)1 << (PM_ADDRESS_BITS - PM_ARENA_SHIFT))

#define PM_NUM_CLASSES 65                          /* 1..64; 0 unused */
#define PM_SMALL_LOOKUP_MAX 1024                   /* sizes up to here: one table load */
#define PM_MAX_CLASS_SIZE ((size_t)128 << 10)
#define PM_MIN_ALIGN 16
#define PM_PAGE_SIZE 4096

/* ---- blocks, pools, arenas, heaps ---------------------------------------------------------- */
typedef struct pm_block {
    struct pm_block *next; /* free-list link (word 0) */
    uintptr_t key;         /* pm_free_key while free, 0 while allocated (word 1, I2) */
} pm_block;

enum pm_pool_state {
    PM_POOL_FREE = 0, /* units belong to the arena (or this is the dead-pool sentinel) */
    PM_POOL_CURRENT,  /* heap->current[cls] */
    PM_POOL_PARTIAL,  /* on heap->partial[cls] */
    PM_POOL_FULL,     /* no free block, on no list */
};

struct pm_heap;
struct pm_arena;

typedef struct __attribute__((aligned(64))) pm_pool {
    /* hot: the fast paths touch only this first cache line */
    pm_block *free;         /* local free list */
    struct pm_heap *owner;  /* NULL while FREE: frees into it are invalid */
    char *start;            /* first block (after the tail, see I3) */
    uint64_t div_magic;     /* ceil(2^64 / block_size): exact divisibility test (I3) */
    /* PM_STATS: allocations and bytes asked for while current, folded into the heap's
     * counters when the pool stops being current (pm_pool_fold_stats). Kept apart so that
     * the compiler adds them with two plain instructions rather than a vector sequence. */
    uint64_t nmalloc;
    uint32_t used;          /* I1 */
    uint32_t block_size;
    uint64_t requested;
    uint8_t cls, state;
    /* warm: slow paths */
    uint32_t span;          /* capacity * block_size: blocks live in [start, start + span) */
    char *carve;            /* next never-used block; blocks are threaded lazily, a page */
    char *end;              /* at a time, so untouched memory stays untouched */
    struct pm_pool *next, *prev; /* heap->partial[cls] list */
    struct pm_arena *arena;
    uint32_t capacity;      /* blocks in the pool */
    uint16_t first_unit, units;
} pm_pool;

typedef struct pm_arena {
    pm_pool *unit_pool[PM_UNITS_MAX]; /* unit -> its pool, or &pm_dead_pool: read by free */
    /* below: under pm_arena_lock */
    struct pm_arena *next, *prev;     /* all arenas */
    uint32_t nunits;                  /* units in this arena (arena size / unit) */
    uint32_t first_unit;              /* units before it hold this header */
    uint32_t nfree;                   /* free units */
    uint32_t ndirty;                  /* free units whose memory is still resident */
    uint64_t free_map[PM_UNITS_MAX / 64];
    uint64_t dirty_map[PM_UNITS_MAX / 64];
    uint64_t dirty_since_ms;          /* when the oldest dirty unit was freed */
    pm_pool pools[PM_UNITS_MAX];      /* descriptor of the pool whose first unit is u */
} pm_arena;

/* Allocation counters (PM_STATS; compiled out without it). The pool fast path counts in the
 * current pool's descriptor (a cache line it touches anyway), folded in here when the pool
 * stops being current; cache pops count here directly. Frees are not counted: they are
 * allocations minus blocks in use, which the pool descriptors know, so free pays nothing.
 * Two separate arrays, not an array of pairs: adjacent pairs get turned into a vector
 * sequence that costs more than the two plain additions. */
typedef struct pm_class_counters {
    uint64_t nmalloc[PM_NUM_CLASSES];
    uint64_t requested[PM_NUM_CLASSES]; /* bytes asked for, summed */
} pm_class_counters;

typedef struct pm_heap {
    pm_block *cache[PM_NUM_CLASSES];  /* blocks this thread freed, LIFO; still count as used */
    uint32_t cache_room[PM_NUM_CLASSES]; /* how many more the cache of a class may take */
    pm_pool *current[PM_NUM_CLASSES]; /* never NULL: &pm_empty_pool when none */
    pm_pool *partial[PM_NUM_CLASSES];
    /* Written by other threads: on a cache line of its own, so that their frees do not
     * steal the line the owner's fast path reads current[] from. */
    _Alignas(64) _Atomic(pm_block *) remote; /* blocks freed into our pools by other threads */
    _Alignas(64) struct pm_heap *next_all;         /* registry of every heap ever made (never freed) */
    struct pm_heap *next_abandoned;
    _Atomic int abandoned;
    uint64_t id;
    uint32_t pools_owned;
    pm_class_counters counters;
    uint64_t remote_frees_sent, remote_frees_received;
} pm_heap;

/* ---- global state --------------------------------------------------------------------------- */
/* I4. A 32 MiB array in .bss: the kernel backs only the pages that arenas touch, and free()
 * can test any pointer, even before initialisation, with one load and no NULL check. */
PM_HIDDEN extern uint8_t pm_arena_map[];
PM_HIDDEN extern pm_pool pm_empty_pool;          /* current[] sentinel: free == NULL */
PM_HIDDEN extern pm_pool pm_dead_pool;           /* unit_pool[] sentinel: owner == NULL */
PM_HIDDEN extern pm_heap pm_sentinel_heap;       /* fast heap before init and in checked mode */
PM_HIDDEN extern PM_TLS pm_heap *pm_fast_heap;   /* what the fast paths use */
PM_HIDDEN extern PM_TLS pm_heap *pm_thread_heap; /* this thread's real heap, or NULL */
PM_HIDDEN extern pthread_mutex_t pm_arena_lock;
PM_HIDDEN extern pm_arena *pm_arenas;            /* all arenas, under pm_arena_lock */
PM_HIDDEN extern pm_heap *_Atomic pm_all_heaps;  /* registry, push-only */
PM_HIDDEN extern _Atomic int pm_initialized;

/* ---- locks: slow paths only ------------------------------------------------------------------ */
/* Error-checking mutexes: a thread that re-enters the allocator while holding one of its locks
 * (malloc from a signal handler that interrupted malloc) gets a clear message, not a hang. */
#define PM_LOCK_INITIALIZER PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP
PM_HIDDEN PM_NORETURN void pm_lock_failed(int rc);
PM_INLINE void pm_lock(pthread_mutex_t *m) {
    int rc = pthread_mutex_lock(m);
    if (PM_UNLIKELY(rc != 0))
        pm_lock_failed(rc);
}
PM_INLINE void pm_unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }
/* In a fork child: the lock the parent's prepare handler took is held by a thread id that no
 * longer exists, so it is made anew rather than unlocked. */
PM_INLINE void pm_lock_reinit(pthread_mutex_t *m) {
    pthread_mutex_t fresh = PM_LOCK_INITIALIZER;
    memcpy(m, &fresh, sizeof fresh);
}

/* ---- options (options.c): read once at start, without allocating --------------------------- */
typedef struct pm_options {
    size_t mmap_threshold;   /* requests above go to mmap; 1K..128K, default 128K */
    size_t arena_size;       /* 1M, 2M or 4M; default 4M */
    long purge_delay_ms;     /* free units' memory goes back after this long; -1 never */
    size_t large_cache;      /* bytes of freed large mappings kept for reuse; default 128M */
    long arena_retain;       /* empty arenas kept mapped; default 1 */
    bool stats;              /* POOLMALLOC_STATS: print statistics at exit */
    char stats_file[256];    /* POOLMALLOC_STATS_FILE: where; "" is stderr */
    bool verbose;            /* POOLMALLOC_VERBOSE: print effective options at start */
    bool poison;             /* POOLMALLOC_POISON: fill new blocks 0xCD, freed blocks 0xDD */
    bool strict;             /* POOLMALLOC_STRICT: a bad option value is fatal */
    long gc_threshold[3];    /* POOLMALLOC_GC_THRESHOLD=a,b,c (default 2000,10,10) */
    bool gc_enabled;         /* POOLMALLOC_GC=0 disables automatic collection */
    long gc_debug;           /* POOLMALLOC_GC_DEBUG flags */
} pm_options;
PM_HIDDEN extern pm_options pm_opt;
PM_HIDDEN void pm_options_init(void);             /* options.c */
PM_HIDDEN void pm_stats_init(void);               /* stats.c: registers the exit report */

#define PM_POISON_NEW 0xCD  /* fresh block, as PYTHONMALLOC=debug's CLEANBYTE */
#define PM_POISON_FREED 0xDD /* freed block (past its first 16 bytes), DEADBYTE */

/* ---- os.c: the only file that talks to the kernel ----------------------------------------- */
PM_HIDDEN void *pm_os_map(size_t size);                  /* NULL on failure */
PM_HIDDEN void *pm_os_map_aligned(size_t size, size_t align);
PM_HIDDEN void *pm_os_reserve(size_t size);              /* NORESERVE, lazily backed */
PM_HIDDEN bool pm_os_unmap(void *p, size_t size);        /* false if the kernel refused */
/* Pages move (no copy) to `to`, the mapping extended to new_size there. */
PM_HIDDEN bool pm_os_move(void *from, size_t size, void *to, size_t new_size);
PM_HIDDEN void *pm_os_remap(void *p, size_t old_size, size_t new_size, bool may_move);
PM_HIDDEN void pm_os_purge(void *p, size_t size);        /* contents discarded, stays mapped */
PM_HIDDEN uint64_t pm_os_now_ms(void);                   /* monotonic, coarse */
PM_HIDDEN size_t pm_os_resident_bytes(void);
PM_HIDDEN void pm_os_write(int fd, const char *s, size_t n);

/* ---- print.c: formatting without allocation ------------------------------------------------ */
/* Supports %s %c %d %i %u %x %p %% with l, ll and z modifiers, and a field width. */
PM_HIDDEN int pm_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
PM_HIDDEN int pm_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
PM_HIDDEN void pm_fdprintf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "poolmalloc: <message>" on stderr. */
PM_HIDDEN void pm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "poolmalloc: <message>" on stderr, then abort(): for misuse we refuse to survive. */
PM_HIDDEN PM_NORETURN void pm_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- sizeclass.c -------------------------------------------------------------------------- */
PM_HIDDEN extern uint8_t pm_class_of_small[PM_SMALL_LOOKUP_MAX / 16 + 1];
PM_HIDDEN extern uint32_t pm_class_size[PM_NUM_CLASSES];
PM_HIDDEN extern uint8_t pm_class_units[PM_NUM_CLASSES];
PM_HIDDEN extern uint32_t pm_class_cache_limit[PM_NUM_CLASSES]; /* heap cache size, blocks */
PM_HIDDEN void pm_sizeclass_init(void);

/* Class for a size 0 < n <= PM_MAX_CLASS_SIZE (0 uses class 1). */
PM_INLINE unsigned pm_size_class(size_t n) {
    if (PM_LIKELY(n <= PM_SMALL_LOOKUP_MAX))
        return pm_class_of_small[(n + 15) >> 4];
    size_t m = n - 1;
    unsigned k = 63u - (unsigned)__builtin_clzl(m); /* 2^k <= m < 2^(k+1), k >= 10 */
    unsigned sub = (unsigned)(m >> (k - 2)) & 3u;
    return 33u + (k - 9u) * 4u + sub;
}

/* ---- arena.c ------------------------------------------------------------------------------- */
PM_HIDDEN void pm_arena_init(void);
/* A pool of class cls for heap, state CURRENT, or NULL when the OS has no memory. */
PM_HIDDEN pm_pool *pm_pool_acquire(pm_heap *heap, unsigned cls);
/* Gives an empty pool's units back to its arena (purged after the purge delay). */
PM_HIDDEN void pm_pool_release(pm_pool *pool);
/* Purges free units whose delay has passed (or all, if force); returns bytes purged. */
PM_HIDDEN size_t pm_arena_purge(bool force);
/* Threads up to a page's worth of never-used blocks onto the free list; false if none left. */
PM_HIDDEN bool pm_pool_carve(pm_pool *pool);

PM_INLINE pm_arena *pm_arena_of(const void *p) {
    return (pm_arena *)((uintptr_t)p & ~(PM_ARENA_ALIGN - 1));
}
PM_INLINE bool pm_in_arena(const void *p) {
    uintptr_t idx = (uintptr_t)p >> PM_ARENA_SHIFT;
    return PM_LIKELY(idx < PM_ARENA_MAP_LEN) && pm_arena_map[idx] != 0;
}
PM_INLINE pm_pool *pm_pool_of(const void *p) {
    return pm_arena_of(p)->unit_pool[((uintptr_t)p >> PM_UNIT_SHIFT) & (PM_UNITS_MAX - 1)];
}
/* I3: is p a block boundary in pool? Lemire's divisibility test: off % d == 0 iff
 * off * ceil(2^64/d) mod 2^64 < ceil(2^64/d), exact for off < 2^32. An address in the tail in
 * front of start gives off = 2^64 - k with 0 < k <= tail <= d - 16, and for those the product
 * is 2^64 - k * ceil(2^64/d), never below ceil(2^64/d): rejected too, with no bound check. */
PM_INLINE bool pm_pool_is_block(const pm_pool *pool, const void *p) {
    uint64_t off = (uint64_t)((uintptr_t)p - (uintptr_t)pool->start);
    return off * pool->div_magic < pool->div_magic;
}

#define PM_OWNER_FULL ((uintptr_t)1) /* I6 */

/* The heap that owns pool, or NULL for a free pool; safe from any thread (I6). */
PM_INLINE pm_heap *pm_pool_owner(const pm_pool *pool) {
    uintptr_t raw = (uintptr_t)__atomic_load_n(&pool->owner, __ATOMIC_RELAXED);
    return (pm_heap *)(raw & ~PM_OWNER_FULL);
}
PM_INLINE void pm_pool_set_owner(pm_pool *pool, pm_heap *heap, bool full) {
    __atomic_store_n(&pool->owner, (pm_heap *)((uintptr_t)heap | (full ? PM_OWNER_FULL : 0)),
                     __ATOMIC_RELAXED);
}
/* I2 */
PM_INLINE uintptr_t pm_free_key(const pm_pool *pool) { return (uintptr_t)pool; }
/* Blocks handed out, without the current pool's extra count (I1). */
PM_INLINE uint32_t pm_pool_blocks_used(const pm_pool *pool) {
    return pool->used - (pool->state == PM_POOL_CURRENT ? 1u : 0u);
}

/* ---- heap.c --------------------------------------------------------------------------------- */
PM_HIDDEN void pm_heap_init_global(void);
/* The calling thread's heap, creating or adopting one; NULL only when out of memory. */
PM_HIDDEN pm_heap *pm_heap_get(void);
/* Frees every block other threads sent us. */
PM_HIDDEN void pm_heap_drain_remote(pm_heap *heap);
/* A block of a pool heap does not own: push it onto the owner's remote list. */
PM_HIDDEN void pm_heap_free_remote(pm_pool *pool, pm_block *block);
/* After a local free: a FULL pool gained a block, or a pool became empty. */
PM_HIDDEN void pm_heap_pool_event(pm_heap *heap, pm_pool *pool);
PM_HIDDEN void pm_heap_abandon(pm_heap *heap);
/* Frees every block in the heap's caches into its pools. */
PM_HIDDEN void pm_heap_flush_cache(pm_heap *heap);
/* Drains the remote lists of abandoned heaps (pm_trim). */
PM_HIDDEN void pm_heap_service_abandoned(void);
/* A block of class cls from heap: current pool, carving, remote frees, partial pools, a new
 * pool, in that order. NULL when the OS has no memory. */
PM_HIDDEN void *pm_heap_alloc(pm_heap *heap, unsigned cls);
PM_HIDDEN void pm_heap_fork_prepare(void);
PM_HIDDEN void pm_heap_fork_parent(void);
PM_HIDDEN void pm_heap_fork_child(void);

/* ---- large.c --------------------------------------------------------------------------------- */
PM_HIDDEN void *pm_large_alloc(size_t size, size_t align, bool zero);
/* Frees p if it is a live large block; false if it is not one. */
PM_HIDDEN bool pm_large_free(void *p);
/* True if p is not a live large block but was one recently (free's double-free report). */
PM_HIDDEN bool pm_large_was_freed(const void *p);
/* Usable size of a live large block, or 0 if p is not one. */
PM_HIDDEN size_t pm_large_usable(const void *p);
PM_HIDDEN void *pm_large_realloc(void *p, size_t size);
PM_HIDDEN size_t pm_large_trim(void);
/* Gives back every cached large mapping (and retries failed unmaps): before reporting ENOMEM. */
PM_HIDDEN size_t pm_large_release_cache(void);
/* Test hook: the next N unmaps large.c makes fail as munmap does at vm.max_map_count. */
PM_HIDDEN extern int pm_large_fail_unmaps;
PM_HIDDEN void pm_large_expire(uint64_t now);
PM_HIDDEN void pm_large_fork_prepare(void);
PM_HIDDEN void pm_large_fork_parent(void);
PM_HIDDEN void pm_large_fork_child(void);
typedef struct pm_large_stats {
    uint64_t live_blocks, live_bytes, mapped_bytes, cached_bytes, nalloc, nfree, nremap;
    uint64_t cache_hits;
    uint64_t stitched;       /* blocks assembled from several cached pieces (pages moved) */
    uint64_t unmap_failures; /* munmap refused (map count): the memory was purged instead */
    uint64_t pending_bytes;  /* purged, still mapped, waiting for an unmap to succeed */
    uint64_t peak_live;      /* live high-water mark behind the cache's resident budget */
    uint64_t budget;         /* cached bytes allowed to stay resident now */
} pm_large_stats;
PM_HIDDEN void pm_large_get_stats(pm_large_stats *out);

/* ---- alloc.c ------------------------------------------------------------------------------ */
PM_HIDDEN void pm_init(void);                 /* idempotent, thread-safe, never allocates */
PM_HIDDEN PM_NOINLINE void *pm_malloc_slow(size_t size);
PM_HIDDEN PM_NOINLINE void pm_free_slow(void *p);

/* Global counters kept outside the fast paths (atomics; slow paths only). */
typedef struct pm_global_stats {
    _Atomic uint64_t arenas_mapped, arenas_unmapped, arena_bytes;
    _Atomic uint64_t pools_acquired, pools_released;
    _Atomic uint64_t purged_bytes, purges;
    _Atomic uint64_t heaps_created, heaps_abandoned, heaps_adopted;
    _Atomic uint64_t peak_resident;
} pm_global_stats;
PM_HIDDEN extern pm_global_stats pm_gstats;

#if PM_STATS
#define PM_STAT(expr) do { expr; } while (0)
#else
#define PM_STAT(expr) do { } while (0)
#endif

/* Moves a pool's allocation counters into its heap's (see pm_class_counters). */
PM_INLINE void pm_pool_fold_stats(pm_heap *heap, pm_pool *pool) {
    PM_STAT(heap->counters.nmalloc[pool->cls] += pool->nmalloc;
            heap->counters.requested[pool->cls] += pool->requested;
            pool->nmalloc = 0; pool->requested = 0);
}

/* ---- fast paths: inlined into pm_malloc/pm_free and into the preload shim's malloc/free ---- */

/* Pops a block of class cls from the calling thread's current pool, or NULL if it has none
 * (or the thread has no heap yet: the sentinel heap's pools are all empty). */
PM_INLINE void *pm_pop_current(unsigned cls, size_t size) {
    pm_heap *heap = pm_fast_heap;
    pm_block *c = heap->cache[cls];
    if (PM_LIKELY(c != NULL)) { /* the block this thread freed last: warm */
        heap->cache[cls] = c->next;
        heap->cache_room[cls]++;
        c->key = 0;
        PM_STAT(heap->counters.nmalloc[cls]++; heap->counters.requested[cls] += size);
        return c;
    }
    pm_pool *pool = heap->current[cls];
    pm_block *b = pool->free;
    if (PM_UNLIKELY(b == NULL))
        return NULL;
    pm_block *next = b->next;
    pool->free = next;
    /* The next malloc of this class will load next->next: start fetching it now, while the
     * caller works, rather than stall then (free-list heads of a pool that was not current
     * are often cold). One instruction; a prefetch of NULL is harmless. */
    __builtin_prefetch(next);
    b->key = 0;
    pool->used++;
    PM_STAT(pool->nmalloc++; pool->requested += size);
    return b;
}

PM_INLINE void *pm_malloc_inline(size_t size) {
    if (PM_LIKELY(size <= PM_SMALL_LOOKUP_MAX)) {
        void *p = pm_pop_current(pm_class_of_small[(size + 15) >> 4], size);
        if (PM_LIKELY(p != NULL))
            return p;
    }
    return pm_malloc_slow(size);
}

PM_INLINE void pm_free_inline(void *p) {
    if (PM_LIKELY(pm_in_arena(p))) {
        pm_pool *pool = pm_pool_of(p);
        pm_heap *heap = pm_fast_heap;
        pm_block *b = (pm_block *)p;
        if (PM_LIKELY(pool->owner == heap && b->key != pm_free_key(pool) &&
                      pm_pool_is_block(pool, p))) {
            unsigned cls = pool->cls;
            b->key = pm_free_key(pool);
            if (PM_LIKELY(heap->cache_room[cls] != 0)) {
                b->next = heap->cache[cls];
                heap->cache[cls] = b;
                heap->cache_room[cls]--;
                return;
            }
            b->next = pool->free; /* the cache is full: back to the pool */
            pool->free = b;
            if (PM_LIKELY(--pool->used != 0))
                return;
            pm_heap_pool_event(heap, pool);
            return;
        }
    }
    pm_free_slow(p);
}

#endif /* PM_INTERNAL_H */
