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
 *   arena   a 4 MiB slot aligned to 4 MiB, mapped whole, carved into pools. Its first 4 units
 *           hold the arena header: 256 pool descriptor slots, one per unit, each also holding
 *           its unit's entry of the unit->pool map.
 *   heap    one thread's allocator state: per class a current pool and a small cache of the
 *           blocks it freed (one cache line per class), plus pending lists of its detached
 *           pools that have free blocks.
 *   cache   a heap's last freed blocks of a class (LIFO, up to 32 blocks or 64 KiB): the next
 *           malloc of the class gets the block freed last, still warm in the CPU cache.
 *   owner   the heap a pool belongs to.
 *   attached / detached   a pool is attached while it is its owner's current pool: only then
 *           does the owner push and pop its local free list with plain instructions. Every
 *           other pool of the heap is detached: frees into it, the owner's included, go onto
 *           the pool's atomic list (xfree), and the free that brings the last block back
 *           releases the pool, whichever thread makes it.
 *   remote free  a free by a thread that does not own the block's pool.
 *   large   a request above the mmap threshold: its own mapping, found through a hash table.
 *   purge   giving free units' memory back to the OS (madvise) after the purge delay.
 *
 * ===========================================================================================
 * Files and layers (calls go down only; the one exception is the inline fast paths below
 * calling their slow paths in alloc.c and free.c)
 * ===========================================================================================
 *
 *   preload/preload.c  the interposition shim (malloc, free, operator new, ...)
 *        |
 *   alloc.c  free.c    the public API and the slow paths; every misuse report (free.c)
 *   init.c  trim.c     start-up, secrets, fork, the thread lifecycle; giving memory back
 *        |
 *   heap.c             per-thread heaps: cache, pending lists, allocation from a class, exit
 *        |
 *   pool.c             pools: carving, the atomic free list, detach / reattach / release
 *        |
 *   arena.c            arenas: units, the byte map, purging      large.c  blocks > threshold
 *        |                                                          |
 *   os.c (every system call)  print.c (output)  sizeclass.c  options.c  stats.c
 *
 * The object system (src/objects/) sits beside the shim, above all of this, and uses only
 * the public API (poolmalloc.h).
 *
 * ===========================================================================================
 * Memory layers
 * ===========================================================================================
 *
 *   OS (mmap)
 *    |
 *    +-- arena (4 MiB, 4 MiB-aligned) ----------------------------------------------+
 *    |   | header (4 units) | pool | pool (4 units)       | free | pool | free ... |
 *    |   +------------------+------+----------------------+------+------+----------+
 *    |                         |
 *    |                         +-- pool of 48 B blocks: | tail | blk | ... | carved | uncarved |
 *    |                                       freed blocks, linked ^     bump ^      ^ carve point
 *    |
 *    +-- large block (> threshold): one mapping, page-aligned, recorded in the large table
 *
 * Arenas are registered in a flat byte map indexed by address >> 22 (a 32 MiB array in .bss
 * that the kernel backs only where written). free(p) therefore finds p's arena with one load,
 * the pool with a second (the unit map entry in the descriptor slot of p's unit, on the same
 * cache line as the descriptor itself for one-unit pools), and knows without touching p whether
 * poolmalloc owns it. A pointer not in the map is looked up in the large table; a pointer in
 * neither is reported and the process aborts. POOLMALLOC_ARENA_SIZE (1M, 2M, 4M) sets how many
 * units of each slot are used; the slot is mapped whole all the same, so that the kernel can
 * never place another mapping inside a slot the byte map calls ours.
 *
 * ===========================================================================================
 * Size classes (index: block size; pool size)
 * ===========================================================================================
 *    1..32  16, 32, 48, ..., 512        spacing 16: waste < 16 bytes per block
 *   33..36  640, 768, 896, 1024         four per doubling from here on:
 *   37..40  1280, 1536, 1792, 2048      waste < 1/5 of the block (request s+1 gets 1.25 s)
 *   ...
 *   61..64  81920, 98304, 114688, 131072
 * Four, not eight, per doubling: eight cut the peak RSS of medium-heavy workloads by 2-4%
 * (randslot, frag) but gave every thread twice the partly used pools in that range, so small
 * and short-lived ones grew (prodcons +10%, tiny +3%) and a chain of short-lived threads
 * (handoff) searched arenas for pools 1.2x as often: no net gain (measured 2026-12-01).
 * A class's pool is the smallest power-of-two number of units that holds at least 8 blocks
 * and wastes at most 1/16 of the pool at its tail (sizeclass.c), capped to the largest pool an
 * arena of the configured size can hold (arena.c: 32 units for 1 MiB arenas). A heap that
 * takes new pools of a class fast (some 32 a second) gets pools twice that size while the
 * class's pool holds fewer than 16 blocks (pool.c, pm_pool_units_next): fewer pool changes
 * for a thread that runs through them, and the small pools for everyone else.
 *
 * ===========================================================================================
 * Pool state machine
 * ===========================================================================================
 *
 *          acquire (arena.c)            current pool exhausted, or thread exit / trim
 *   FREE -------------------> CURRENT ------------------------------------> DETACHED
 *    ^                         ^   (attached: owner pops/pushes `free`)      | (frees go to
 *    |                         |                                             |  xfree, counted)
 *    |                         +---- reattach: taken off owner->pending -----+
 *    |                                                                       |
 *    +---- release: the free that takes xfree's count of blocks out to 0 ------+
 *          (any thread; every block is back), unless the pool, one unit long, becomes its
 *          owner's spare: kept empty on the pending list, one per class, given back every
 *          purge delay, at exit and at pm_trim (pool.c)
 *
 * A current pool is never released while current: an alloc/free pair at a pool boundary must
 * not map and unmap memory each time. At thread exit the heap's current pools are detached,
 * and the heap waits on the abandoned stack: a new thread adopts it whole (its pending lists
 * and cache). A late key destructor that allocates after that borrows an abandoned heap for
 * the one allocation (init.c's lifecycle). In a fork child, the other threads' heaps go on
 * the abandoned stack untouched, current pools and caches included.
 *
 * ===========================================================================================
 * Threads and cross-thread frees
 * ===========================================================================================
 * The fast paths take no lock and use no atomic instruction: malloc pops the heap's cache of
 * the class, else the current pool's free list; free checks that the calling thread's heap owns
 * the pool (attached or detached) and pushes onto the cache, else (cache full) onto the current
 * pool. Everything else goes through pool.c's xfree: one compare-and-swap pushes the block,
 * counts it and sees the DETACHED flag. A thread that frees in runs past its full cache (a
 * structure torn down in build order) sends the whole cache back instead, a run of blocks of
 * one pool per compare-and-swap (heap.c, pm_heap_cache_overflow); one that frees on past it
 * with no malloc of the class drains it (PM_STALE_FREES). The owner collects its
 * current pool's xfree when the local list runs dry, and reattaches detached pools from its
 * pending lists, which freeing threads fill under the heap's xlock when they put the first
 * block on a detached pool's xfree. Because a detached pool's last free releases it, memory
 * freed into the pools of a thread that never calls malloc again comes back anyway: what such a
 * thread strands is bounded by its current pools (one per class), its cache (at most 64 KiB per
 * class) and its spares (one empty 16 KiB pool per class).
 *
 * ===========================================================================================
 * Invariants (checked in debug builds; the cheap ones on every free)        file that keeps it
 * ===========================================================================================
 *  I1 pool->used counts blocks handed out and not on the local free list (blocks in a heap's
 *     cache and blocks on xfree included). Once the pool is detached, xfree's count holds the
 *     blocks still out instead; the free that takes it to zero releases the pool.      pool.c
 *  I2 a free block's word 1 holds pm_free_key(block) (its address encoded with a secret), and
 *     so does every carved block not yet handed out (from pool->bump to the carve point);
 *     malloc clears it, so a free that finds the key is a double free.        free.c, heap.c
 *  I3 free(p) accepts p only if p's unit maps to an in-use pool, p is a block boundary in it
 *     (one exact divisibility test: blocks are packed against the pool's end, the unusable
 *     tail sits in front) and p lies below the carve point (carved: handed out, or keyed as
 *     I2 says); p is not read before that.                                free.c, internal.h
 *  I4 arena_map[a >> 22] != 0 exactly while an arena occupies the 4 MiB slot at a, and every
 *     block lies below 2^47 (xfree packs a count above bit 47).                       arena.c
 *  I5 the allocator never calls anything that may allocate (stdio, getenv, dlsym): output goes
 *     through pm_print (write(2)), the environment is read by walking environ. The one libc
 *     call that may allocate, pthread_setspecific for keys past 32, runs after the thread's
 *     heap is installed, so a nested malloc finds it.                        options.c, init.c
 *  I6 pool->owner is the owning heap, with bit 0 set while the pool is detached: the free fast
 *     path accepts either into the cache, and pushes onto the pool itself only when the bit is
 *     clear (the current pool).                                                pool.c, heap.c
 *  I7 locks nest in one order only: heap_lock, then heaps' xlocks, then pm_arena_lock; the
 *     large domains' locks are leaves (large.c calls nothing that locks, and holds one domain's
 *     lock at a time). The fork prepare handler takes them all in that order (the domains in
 *     index order); the child remakes them all before anything else.      init.c, heap.c
 *  I8 every free-list link is stored encoded with the block's address and a per-process
 *     secret, and checked when decoded: on the fast paths a link must stay in its block's
 *     4 MiB slot, and the block it names must carry its free key when popped; the slow paths
 *     require carved block boundaries of the same pool. A heap's cache keeps no links (its
 *     slots are in the heap), and a cached block must carry its key when popped or given
 *     back. Anything else is reported as heap corruption. A blind write into a freed block
 *     cannot steer malloc.                                            internal.h, pool.c, heap.c
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
/* Encoded free-list links checked on every pop (I8): configure --disable-hardening turns them
 * off (13 fewer instructions per malloc(32)+free pair, docs/performance.md). Double-free and
 * foreign-pointer checks stay on either way. */
#ifndef PM_HARDEN
#define PM_HARDEN 1
#endif

#define PM_HIDDEN __attribute__((visibility("hidden")))
#define PM_LIKELY(x) __builtin_expect(!!(x), 1)
#define PM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PM_NOINLINE __attribute__((noinline))
#define PM_COLD __attribute__((cold, noinline))
/* For constants that every process reads (the strings start-up compares): kept in .data, whose
 * pages are resident anyway, so that a program that never reaches an error path never faults
 * in the library's .rodata and .eh_frame (44 KiB, issue 10). Arrays, not const: GCC would put
 * a const one in .rodata whatever the section. */
#define PM_STARTUP_DATA __attribute__((section(".data.pm_startup")))
/* For big zero-initialised arrays (the arena byte map, the large domains, report and profile
 * buffers): on x86-64 they go to .lbss, the psABI's large-data section, which the linkers
 * place after .bss. Spread among the small variables, they pushed those that every process
 * touches at start-up onto five pages; after them, the small ones lie on three, the first
 * shared with .data (fewer page faults at start-up, and fewer resident pages: issue 10).
 * Code still reaches them RIP-relative: the library is far smaller than 2 GiB. GCC only:
 * GNU as makes .lbss NOBITS by its name, clang's assembler does not (the 32 MiB map would be
 * zeros in the file). Elsewhere, plain .bss. */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__)
#define PM_BIG_BSS __attribute__((section(".lbss")))
#else
#define PM_BIG_BSS
#endif
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

#define PM_CLASSES_PER_DOUBLING_LOG2 2
#define PM_CLASSES_PER_DOUBLING (1 << PM_CLASSES_PER_DOUBLING_LOG2) /* above 512 B */
#define PM_NUM_CLASSES 65                          /* 1..64; 0 unused */
#define PM_SMALL_LOOKUP_MAX 1024                   /* sizes up to here: one table load */
#define PM_MEDIUM_LOOKUP_MAX (32 << 10)            /* and up to here, a second table (128 B) */
#define PM_MAX_CLASS_SIZE ((size_t)128 << 10)
#define PM_MIN_ALIGN 16
#define PM_PAGE_SIZE 4096

/* ---- blocks, pools, arenas, heaps ---------------------------------------------------------- */
typedef struct pm_block {
    uintptr_t link;        /* free-list link, encoded (pm_link_encode); word 0 */
    uintptr_t key;         /* pm_free_key(block) while free, 0 once handed out (word 1, I2) */
} pm_block;

enum pm_pool_state {
    PM_POOL_FREE = 0, /* units belong to the arena (or this is a sentinel) */
    PM_POOL_CURRENT,  /* heap->current[cls]: attached, its owner allocates from it */
    PM_POOL_DETACHED, /* owned but not current: every free goes to its atomic list */
};

/* pool->xfree packs the atomic free list of a pool with a count and two flags, so that one
 * compare-and-swap pushes a block, counts it and sees whether the pool is detached:
 *   bits 63..48  attached: blocks on the list; detached: blocks still out, counted down by
 *                each free, so the free that reaches zero knows it (a pool holds <= 1024)
 *   bits 47..4   the first block's address (blocks are 16-aligned and below 2^47, I4)
 *   bit 0        DETACHED: the owner no longer allocates from the pool (I6)
 *   bit 1        RELEASING: the last block came back; the pool is on its way to the arena
 *   bit 2        SPARE: detached, every block back, kept for its owner (pool.c) */
#define PM_XF_DETACHED ((uintptr_t)1)
#define PM_XF_RELEASING ((uintptr_t)2)
#define PM_XF_FLAGS ((uintptr_t)15)
#define PM_XF_COUNT_SHIFT 48
#define PM_XF_PTR_MASK ((((uintptr_t)1 << PM_XF_COUNT_SHIFT) - 1) & ~PM_XF_FLAGS)

struct pm_heap;
struct pm_arena;

/* Three cache lines, by who writes them, so that no thread's writes steal a line another
 * thread reads on every operation:
 *   line 1  read by every free (the owner's and other threads'): written rarely (acquire,
 *           detach, reattach; `carved` once per page of new blocks)
 *   line 2  the owner's local free list and count: written on every pool pop and push
 *   line 3  written by other threads: the atomic list, and the pending-list links
 * With line 1 and line 2 as one, a producer popping its current pool and a consumer freeing
 * into it moved the line between their cores on every block (prodcons: 89% of free's time
 * was the load of `owner`). */
typedef struct __attribute__((aligned(64))) pm_pool {
    /* line 1: read-mostly */
    struct pm_heap *owner;  /* NULL while FREE; | PM_OWNER_DETACHED while detached (I6) */
    /* The unit map (I3): in the descriptor slot of EVERY unit, the distance in bytes from
     * the slot to the pool that covers the unit: 0 for a pool's first unit (the slot is the
     * pool), -192 * k for its k-th unit. A unit no pool covers holds 0 too: its slot is then
     * its own descriptor, all zero or left by a released pool, with a NULL owner, which every
     * free rejects. Relative, so that a new arena's slots are right as the kernel hands them
     * over (zero) and the 48 KiB of descriptors are touched only as pools use them; absolute,
     * every slot had to be written first (48 KiB of resident memory per arena, a fifth of a
     * trivial program's overhead). Free loads it from the slot of the block's unit, so that
     * for a one-unit pool (every class up to 2 KiB) the map and the descriptor are one cache
     * line: a cold free misses once, not twice. */
    intptr_t unit_offset;
    char *start;            /* first block (after the tail, see I3) */
    uint64_t div_magic;     /* floor(2^64 / block_size) + 1: exact divisibility test (I3) */
    /* I3 for free in one compare: (p - start) * div_magic < carved_limit holds exactly for
     * the blocks below the carve point (pm_pool_is_carved_block). Written with `carved`. */
    uint64_t carved_limit;
    uint32_t carved;        /* bytes from start carved: blocks past it were never handed out */
    uint32_t block_size;
    uint8_t cls, state;
    uint16_t first_unit, units;
    uint16_t cls_offset;    /* offsetof(pm_heap, cls[cls]): free finds its class line in one add */
    char *end;              /* start + capacity * block_size */
    /* line 2: the owner's */
    _Alignas(64) pm_block *free; /* local free list (the owner's; links encoded) */
    struct pm_arena *arena; /* slow paths only (release) */
    uint32_t used;          /* I1: blocks handed out and not on the local free list */
    uint32_t capacity;      /* blocks in the pool */
    uint32_t detached_used; /* used when the owner detached it (blocks out then) */
    /* Never-used blocks, taken in address order once the free list is empty: [bump, bump_end)
     * were carved (keyed, admitted by free's carve test) and not yet handed out; bump_end is
     * start + carved. A bump costs malloc no link to decode and carving one store a block. */
    char *bump;
    char *bump_end;
    /* line 3: other threads' */
    _Alignas(64) _Atomic uintptr_t xfree;
    struct pm_pool *next, *prev; /* owner->pending[cls], under owner->xlock */
    bool pending;           /* on owner->pending[cls] (under owner->xlock) */
} pm_pool;
_Static_assert(offsetof(pm_pool, end) < 64 && offsetof(pm_pool, free) == 64 &&
                   offsetof(pm_pool, xfree) == 128 && sizeof(pm_pool) == 192,
               "three lines: read-mostly, the owner's, other threads'");

/* Arena geometry, one source of truth: an arena is PM_ARENA_ALIGN bytes of address space,
 * mapped whole (so that no other mapping can sit in a slot the byte map calls ours, I4), of
 * which the first pm_arena_units units are used (POOLMALLOC_ARENA_SIZE); the header takes the
 * first PM_HEADER_UNITS of them. */
typedef struct pm_arena {
    /* under pm_arena_lock */
    struct pm_arena *next, *prev;     /* all arenas */
    uint32_t nunits;                  /* units in use in this arena (arena size / unit) */
    uint32_t nfree;                   /* free units */
    uint32_t ndirty;                  /* free units whose memory is still resident */
    uint32_t index;                   /* its entry in arena.c's placement index */
    uint64_t free_map[PM_UNITS_MAX / 64];
    uint64_t dirty_map[PM_UNITS_MAX / 64]; /* free units whose memory is still resident */
    uint64_t young_map[PM_UNITS_MAX / 64]; /* the dirty units freed since the last purge tick */
    uint64_t purged_map[PM_UNITS_MAX / 64]; /* free units purged, not taken since (arena.c) */
    /* pools[u]: the descriptor of the pool whose first unit is u; in every slot, the unit map
     * (unit_offset). Line-aligned, so that a slot's map entry and line 1 share a line. */
    pm_pool pools[PM_UNITS_MAX];
} pm_arena;

#define PM_HEADER_UNITS ((sizeof(pm_arena) + PM_UNIT_SIZE - 1) / PM_UNIT_SIZE)
_Static_assert(PM_HEADER_UNITS == 4, "the essay and the option ranges assume a 4-unit header");
_Static_assert(PM_UNITS_MAX == 256 && PM_UNITS_MAX % 64 == 0, "unit bitmaps are 64-bit words");
/* The smallest arena (1 MiB, 64 units) must serve every class: see pm_class_units. */
#define PM_ARENA_MIN_UNITS 64
#define PM_POOL_MAX_UNITS 64

/* The most blocks a class's cache holds (pm_class_cache_limit: 32, or 64 KiB of blocks). */
#define PM_CACHE_MAX 32

/* Large blocks come from this many domains, each with its own lock, table and cache (large.c),
 * a thread from the one it drew at its first large call: threads that churn large blocks do not
 * all wait on one lock. */
#define PM_LARGE_DOMAINS 4

/* Per-class state a thread's fast paths touch, together on one cache line: a cache-hit malloc
 * or free touches one line of the heap, and one of the class's cache slots.
 * The cache is a stack of block pointers in the heap (pm_heap.cache[cls]), not a list through
 * the blocks: a pop follows no pointer a program could have overwritten after a free, so it
 * decodes and checks no link, and a block is cached with its key alone. It fills downwards:
 * `top` points at the block freed last, the end of the class's slots means empty; the
 * bounds are compared by their low 16 bits (the slots of a class span 256 bytes), so that
 * they fit in the line beside the pointer. */
typedef struct __attribute__((aligned(64))) pm_class_state {
    pm_block **top;          /* the cache's top; blocks from here to the end count as used */
    struct pm_pool *current; /* never NULL: &pm_empty_pool when none */
    /* The sampling countdown: bytes the fast path may still hand out before it calls
     * pm_sample_expired. Each malloc subtracts its request (two instructions: sub, js); below
     * zero, the bytes since `armed` are folded into `requested` and the countdown is re-armed
     * from the sampling hook (POOLMALLOC_PROF) or to PM_COUNTDOWN_IDLE. So counting bytes
     * asked for and sampling them for a heap profile cost the same two instructions. */
    int64_t countdown;
    int64_t armed;           /* what countdown was last set to */
    uint64_t requested;      /* PM_STATS: bytes asked for before the last expiry */
    uint64_t nmalloc;        /* PM_STATS: allocations (frees are allocs - blocks in use) */
    uint16_t empty_lo;       /* top's low 16 bits when the cache is empty: its end */
    uint16_t full_lo;        /* ... when it is full: its first slot, or its end when drained */
    uint32_t tick_mark;      /* countdown's low half at the last tick: unchanged = class idle */
    uint32_t full_unit;      /* the unit (low 32 bits) of the last block freed past a full cache */
    uint32_t full_run;       /* frees past the full cache: PM_RUN_MASK, PM_PAST_MASK, PM_PAST_MARK */
} pm_class_state;
_Static_assert(sizeof(pm_class_state) == 64, "one class, one cache line");

typedef struct pm_heap {
    pm_class_state cls[PM_NUM_CLASSES];
    /* Pools the owner detached that have free blocks (or may get some), per class: the next
     * current pool comes from here. Under xlock: freeing threads link pools here. */
    _Alignas(64) pthread_mutex_t xlock;
    pm_pool *pending[PM_NUM_CLASSES];
    uint32_t tick;                   /* slow-path calls until the next look at the clock */
    struct pm_heap *next_all;        /* registry of every heap ever made (never freed) */
    struct pm_heap *next_abandoned;  /* under heap_lock */
    _Atomic int abandoned;
    _Atomic uint64_t remote_frees;   /* PM_STATS: frees of other heaps' blocks, made by us */
    uint64_t spare_classes;          /* under xlock: classes with an empty spare pool (pool.c) */
    /* New pools acquired per class, halved every PM_POOL_GROW_HALF_LIFE_MS: a class whose
     * count is high gets larger pools (pool.c, pm_pool_units_next). */
    uint16_t pools_taken[PM_NUM_CLASSES];
    uint64_t pools_taken_halved_ms;  /* when the counts were last halved */
    /* The caches' slots: class c uses the last pm_class_cache_limit[c] of cache[c]. Only the
     * owner touches them; a class never used leaves its four lines untouched. */
    _Alignas(64) pm_block *cache[PM_NUM_CLASSES][PM_CACHE_MAX];
} pm_heap;
/* Where class cls's line lies in a heap: what pool->cls_offset and the malloc tables hold. */
PM_INLINE uint32_t pm_class_line(unsigned cls) {
    return (uint32_t)(offsetof(pm_heap, cls) + (size_t)cls * sizeof(pm_class_state));
}
PM_INLINE uint16_t pm_low16(const void *p) { return (uint16_t)(uintptr_t)p; }
/* The end of class cls's cache slots: top there, the cache is empty. */
PM_INLINE pm_block **pm_cache_end(pm_heap *heap, unsigned cls) {
    return &heap->cache[cls][PM_CACHE_MAX];
}

/* ---- global state --------------------------------------------------------------------------- */
/* I4. A 32 MiB array in .bss: the kernel backs only the pages that arenas touch, and free()
 * can test any pointer, even before initialisation, with one load and no NULL check. */
PM_HIDDEN extern uint8_t pm_arena_map[];
PM_HIDDEN extern pm_pool pm_empty_pool;          /* current[] sentinel: free == NULL */
/* The fast heap of a thread without one (before init, after exit) and of every thread in
 * checked mode: class lines alone, every cache empty and every current pool pm_empty_pool, so
 * that malloc's fast path finds nothing and free's finds no owner. The fast paths write a
 * heap only when they succeed, so it is never written: const, read-only once relocated, 4 KiB
 * where a whole pm_heap (its cache slots) made 21 KiB of writable data in every process. */
typedef struct pm_heap_lines {
    pm_class_state cls[PM_NUM_CLASSES];
} pm_heap_lines;
_Static_assert(offsetof(pm_heap, cls) == 0, "the sentinel's lines are a heap's first lines");
PM_HIDDEN extern const pm_heap_lines pm_sentinel_lines;
#define PM_SENTINEL_HEAP ((pm_heap *)&pm_sentinel_lines)
/* What the fast paths use, stored XOR the sentinel's address so that zero means it: a
 * malloc from an IFUNC resolver runs before libc has copied the initial values of thread-local
 * variables (they read zero then), and must find the sentinel, not NULL (issue 7.11). The XOR
 * folds into the TLS load: one instruction. */
PM_HIDDEN extern PM_TLS uintptr_t pm_fast_heap_x;
PM_HIDDEN extern PM_TLS pm_heap *pm_thread_heap; /* this thread's real heap, or NULL */
PM_HIDDEN extern pthread_mutex_t pm_arena_lock;
PM_HIDDEN extern pm_arena *pm_arenas;            /* all arenas, under pm_arena_lock */
PM_HIDDEN extern pm_heap *_Atomic pm_all_heaps;  /* registry, push-only */
PM_HIDDEN extern _Atomic int pm_initialized;

PM_INLINE pm_heap *pm_fast_heap_get(void) {
    return (pm_heap *)(pm_fast_heap_x ^ (uintptr_t)PM_SENTINEL_HEAP);
}
PM_INLINE void pm_fast_heap_set(pm_heap *h) {
    pm_fast_heap_x = (uintptr_t)h ^ (uintptr_t)PM_SENTINEL_HEAP;
}

/* ---- locks: slow paths only ------------------------------------------------------------------ */
/* Error-checking mutexes: a thread that re-enters the allocator while holding one of its locks
 * (malloc from a signal handler that interrupted malloc) gets a clear message, not a hang. */
#define PM_LOCK_INITIALIZER PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP
PM_HIDDEN PM_NORETURN void pm_lock_failed(int rc);
PM_HIDDEN PM_NOINLINE void pm_lock_contended(pthread_mutex_t *m);
/* A spin-wait hint: lets the sibling hardware thread run and saves power while we wait. */
PM_INLINE void pm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}
PM_INLINE void pm_lock(pthread_mutex_t *m) {
    if (PM_LIKELY(pthread_mutex_trylock(m) == 0))
        return;
    pm_lock_contended(m);
}
PM_INLINE void pm_lock_blocking(pthread_mutex_t *m) {
    int rc = pthread_mutex_lock(m);
    if (PM_UNLIKELY(rc != 0))
        pm_lock_failed(rc);
}
PM_INLINE void pm_unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }
/* In a fork child: the lock the parent's prepare handler took is held by a thread id that no
 * longer exists, so it is made anew rather than unlocked. */
PM_HIDDEN void pm_lock_reinit(pthread_mutex_t *m);

/* ---- options (options.c): read once at start, without allocating --------------------------- */
typedef struct pm_options {
    size_t mmap_threshold;   /* requests above go to mmap; 1K..128K, default 128K */
    size_t arena_size;       /* 1M, 2M or 4M; default 4M */
    long purge_delay_ms;     /* free units' memory goes back after this long; -1 never */
    size_t large_cache;      /* bytes of freed large mappings kept for reuse; default 1G */
    long arena_retain;       /* empty arenas kept mapped; default 1 */
    bool huge_pages;         /* large blocks of 4 MiB and more get huge pages (large.c) */
    bool stats;              /* POOLMALLOC_STATS: print statistics at exit */
    char stats_file[256];    /* POOLMALLOC_STATS_FILE: where; "" is stderr */
    bool verbose;            /* POOLMALLOC_VERBOSE: print effective options at start */
    bool poison;             /* POOLMALLOC_POISON: fill new blocks 0xCD, freed blocks 0xDD */
    bool strict;             /* POOLMALLOC_STRICT: a bad option value is fatal */
    /* Other layers' options live in their own storage (options.h: PM_OPTION_GROUP). */
} pm_options;
PM_HIDDEN extern pm_options pm_opt;
PM_HIDDEN void pm_options_init(void);             /* options.c */
/* Applies an environment that libc had not set at pm_options_init; one load when there is
 * none pending. Called from the constructor and the slow paths (options.h says more). */
PM_HIDDEN void pm_options_refresh(void);
PM_HIDDEN void pm_stats_init(void);               /* stats.c: registers the exit report */

#define PM_POISON_NEW 0xCD  /* fresh block, as PYTHONMALLOC=debug's CLEANBYTE */
#define PM_POISON_FREED 0xDD /* freed block (past its first 16 bytes), DEADBYTE */

/* ---- os.c: the only file that talks to the kernel ----------------------------------------- */
PM_HIDDEN void *pm_os_map(size_t size);                  /* NULL on failure */
PM_HIDDEN void *pm_os_map_aligned(size_t size, size_t align);
PM_HIDDEN void *pm_os_reserve(size_t size);              /* NORESERVE, lazily backed */
PM_HIDDEN bool pm_os_map_at(void *at, size_t size);      /* only where nothing is mapped */
/* false when the kernel refuses (ENOMEM at vm.max_map_count when it must split a mapping):
 * never fatal, the caller keeps the memory (purged) and goes on. */
PM_HIDDEN bool pm_os_unmap(void *p, size_t size);
/* Pages move (no copy) to `to`, the mapping extended to new_size there. */
PM_HIDDEN bool pm_os_move(void *from, size_t size, void *to, size_t new_size);
PM_HIDDEN void *pm_os_remap(void *p, size_t old_size, size_t new_size, bool may_move);
PM_HIDDEN void pm_os_purge(void *p, size_t size);        /* contents discarded, stays mapped */
PM_HIDDEN void pm_os_hugepage(void *p, size_t size);     /* madvise(MADV_HUGEPAGE) */
PM_HIDDEN bool pm_os_page_resident(const void *p);       /* mincore of p's page */
PM_HIDDEN uint64_t pm_os_now_ms(void);                   /* monotonic, coarse */
PM_HIDDEN bool pm_os_clock_is_vdso(void);                /* read without libc's wrapper */
/* Bytes for the per-process secrets (AT_RANDOM, no system call), mixed with addresses. */
PM_HIDDEN uint64_t pm_os_random_seed(void);
PM_HIDDEN size_t pm_os_resident_bytes(void);
PM_HIDDEN void pm_os_write(int fd, const char *s, size_t n);
/* os.c, options and statistics block: */
PM_HIDDEN bool pm_os_secure_execution(void);             /* AT_SECURE: setuid, caps... */
PM_HIDDEN uint64_t pm_os_peak_resident_bytes(void);      /* VmHWM, 0 if unavailable */
typedef struct pm_file_id { dev_t dev; ino_t ino; } pm_file_id; /* what an fd refers to */
PM_HIDDEN bool pm_os_fd_identity(int fd, pm_file_id *out);  /* false if fd is not open */
/* A close-on-exec duplicate of fd numbered >= 3, as high as the fd limit allows, so that it
 * stays out of the program's way; -1 with errno set on failure. */
PM_HIDDEN int pm_os_dup_high(int fd);
/* Opens path for appending (created 0644 if create), close-on-exec, at a high number; -1 and
 * errno on failure. */
PM_HIDDEN int pm_os_open_append(const char *path, bool create);
/* 0 if a file could be created at path (its directory is writable), else the errno. */
PM_HIDDEN int pm_os_creatable(const char *path);
PM_HIDDEN void pm_os_close(int fd);                      /* errno preserved */

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
/* Above 1 KiB every class boundary is a multiple of 128 bytes, so up to 32 KiB a table indexed
 * in steps of 128 is exact: three instructions where the clz formula takes thirteen. */
PM_HIDDEN extern uint8_t pm_class_of_medium[PM_MEDIUM_LOOKUP_MAX / 128 + 1];
/* The malloc fast path's tables: for a request size, the byte offset of its class's line in
 * a heap (pm_class_line(class)), so that the lookup is one load and no shift or scaling:
 * indexed by the size itself up to 1 KiB (2 KiB of table: two instructions where the class
 * table and its scaling take five), and by (size + 127) / 128 up to the largest class. */
PM_HIDDEN extern uint16_t pm_line_of_small[PM_SMALL_LOOKUP_MAX + 1];
PM_HIDDEN extern uint16_t pm_line_of_medium[PM_MAX_CLASS_SIZE / 128 + 1];
PM_HIDDEN extern uint32_t pm_class_size[PM_NUM_CLASSES];
PM_HIDDEN extern uint8_t pm_class_units[PM_NUM_CLASSES];
PM_HIDDEN extern uint32_t pm_pool_max_units; /* the largest pool an arena holds (arena.c) */
PM_HIDDEN extern uint32_t pm_class_cache_limit[PM_NUM_CLASSES]; /* heap cache size, blocks */
PM_HIDDEN void pm_sizeclass_init(void);

/* Class for a size 0 < n <= PM_MAX_CLASS_SIZE (0 uses class 1). */
PM_INLINE unsigned pm_size_class(size_t n) {
    if (PM_LIKELY(n <= PM_SMALL_LOOKUP_MAX))
        return pm_class_of_small[(n + 15) >> 4];
    if (PM_LIKELY(n <= PM_MEDIUM_LOOKUP_MAX))
        return pm_class_of_medium[(n + 127) >> 7];
    size_t m = n - 1;
    unsigned k = 63u - (unsigned)__builtin_clzl(m); /* 2^k <= m < 2^(k+1), k >= 10 */
    unsigned sub = (unsigned)(m >> (k - PM_CLASSES_PER_DOUBLING_LOG2)) &
                   (PM_CLASSES_PER_DOUBLING - 1);
    return 33u + (k - 9u) * PM_CLASSES_PER_DOUBLING + sub;
}

/* ---- hardening: encoded links and keys (I2, I8) ------------------------------------------ */
/* Two per-process secrets, drawn before the first block exists (init.c). A free block's word 0
 * holds its successor encoded with its own address and pm_link_secret; word 1 holds its own
 * address encoded with pm_key_secret. A program that writes into a freed block therefore
 * cannot make malloc return an address of its choice without knowing the secrets: every
 * decoded link is checked to be a block boundary of the same pool before it is followed (the
 * per-thread cache holds no links at all). */
typedef struct pm_secrets {
    uintptr_t link, key;
} pm_secrets;
PM_HIDDEN extern pm_secrets pm_secret;
PM_HIDDEN PM_NORETURN PM_COLD void pm_heap_corrupt(const void *block, const char *where);
/* The same, for the malloc fast path: declared to return (it never does) so that the call is
 * a tail jump and the fast path needs no stack frame. */
PM_HIDDEN PM_COLD __attribute__((returns_nonnull)) void *pm_heap_corrupt_jump(const void *block, const char *where);

PM_INLINE uintptr_t pm_link_encode(const pm_block *b, const pm_block *next) {
    if (!PM_HARDEN)
        return (uintptr_t)next;
    return (uintptr_t)next ^ (uintptr_t)b ^ pm_secret.link;
}
PM_INLINE pm_block *pm_link_decode(const pm_block *b) {
    if (!PM_HARDEN)
        return (pm_block *)b->link;
    return (pm_block *)(b->link ^ (uintptr_t)b ^ pm_secret.link);
}
PM_INLINE uintptr_t pm_free_key(const void *b) { return (uintptr_t)b ^ pm_secret.key; }

/* ---- arena.c: arenas, units, purging ------------------------------------------------------- */
PM_HIDDEN extern uint32_t pm_arena_units;   /* units used per arena (POOLMALLOC_ARENA_SIZE) */
PM_HIDDEN void pm_arena_init(void);
/* n free units for a pool, under pm_arena_lock (mapping a new arena if needed); the arena and
 * first unit, or NULL when the OS has no memory. */
PM_HIDDEN pm_arena *pm_arena_take_units(unsigned n, unsigned *unit);
PM_HIDDEN void pm_arena_give_units(pm_arena *a, unsigned unit, unsigned n, unsigned touched);
/* One purge tick now (or, if force, a purge of every free unit); returns bytes purged.
 * Takes pm_arena_lock. Never calls into large.c (lock order I7). */
PM_HIDDEN size_t pm_arena_purge(bool force);
/* Debug builds and tests, under pm_arena_lock: fatal unless arena.c's placement index (each
 * arena's free units, packed for the search) matches the arenas. */
PM_HIDDEN void pm_arena_check_index(void);
/* A purge tick if one is due (takes pm_arena_lock). */
PM_HIDDEN void pm_arena_tick(void);
/* Unlocked hint: true when a tick is due (the purge delay, spaced out by the backoff, has
 * passed since the last one). */
PM_HIDDEN bool pm_arena_purge_due(uint64_t now);

PM_INLINE pm_arena *pm_arena_of(const void *p) {
    return (pm_arena *)((uintptr_t)p & ~(PM_ARENA_ALIGN - 1));
}
PM_INLINE bool pm_in_arena(const void *p) {
    uintptr_t idx = (uintptr_t)p >> PM_ARENA_SHIFT;
    return PM_LIKELY(idx < PM_ARENA_MAP_LEN) &&
           __atomic_load_n(&pm_arena_map[idx], __ATOMIC_RELAXED) != 0;
}
/* Acquire: pairs with the release store that publishes a pool (pool.c), so that a thread
 * freeing one of its blocks sees the descriptor initialised (a plain load on x86). */
PM_INLINE pm_pool *pm_pool_of(const void *p) {
    /* The slot's offset as (unit * 64) * 3, the unit taken already shifted: shift, and, lea
     * (compilers scale unit * 192 with three instructions and an add). */
    _Static_assert(sizeof(pm_pool) == 3 * 64, "the unit map's offset arithmetic");
    uintptr_t unit64 = ((uintptr_t)p >> (PM_UNIT_SHIFT - 6)) & ((uintptr_t)(PM_UNITS_MAX - 1) << 6);
    pm_pool *slot = (pm_pool *)((char *)pm_arena_of(p)->pools + unit64 * 3);
    return (pm_pool *)((char *)slot + __atomic_load_n(&slot->unit_offset, __ATOMIC_ACQUIRE));
}

/* ---- pool.c: pools, their blocks and their atomic free lists --------------------------- */
/* A pool of class cls for heap, state CURRENT, or NULL when the OS has no memory. */
PM_HIDDEN pm_pool *pm_pool_acquire(pm_heap *heap, unsigned cls);
/* Owner only, at its ticks: ages the counts that make its pools grow (pool.c). */
PM_HIDDEN void pm_pool_growth_tick(pm_heap *heap, uint64_t now_ms);
/* The number of units the next new pool of class cls of this heap gets (pool.c). */
PM_HIDDEN unsigned pm_pool_units_next(const pm_heap *heap, unsigned cls);
/* Gives an empty pool's units back to its arena. */
PM_HIDDEN void pm_pool_release(pm_pool *pool);
/* Carves up to a page of never-used blocks past the carve point (keys set; malloc takes them
 * from pool->bump); false if none are left. */
PM_HIDDEN bool pm_pool_carve(pm_pool *pool);
/* Any thread, any pool state but FREE: puts a checked block on the pool's atomic list. The
 * pool may be released by this call (the last block of a detached pool came back). errno is
 * kept. */
PM_HIDDEN void pm_pool_free_atomic(pm_pool *pool, pm_block *block);
/* The same for n blocks of pool, head..tail, linked (links encoded) and their keys set: one
 * compare-and-swap for the whole run. */
PM_HIDDEN void pm_pool_free_list(pm_pool *pool, pm_block *head, pm_block *tail, uint32_t n);
/* Owner only: moves the atomic list onto the local free list; false if it was empty. */
PM_HIDDEN bool pm_pool_collect(pm_pool *pool);
/* Owner only: the pool stops being current. Released here if every block is already back. */
PM_HIDDEN void pm_pool_detach(pm_heap *heap, pm_pool *pool);
/* Owner only: a detached pool of class cls that may have free blocks, taken off the pending
 * list and made current again (attached, with the blocks freed meanwhile), or NULL. */
PM_HIDDEN pm_pool *pm_pool_take_pending(pm_heap *heap, unsigned cls);
/* Gives back the heap's spare pools: one empty pool per class that pool.c keeps pending
 * instead of releasing it, so that a pool that drains is not released and acquired anew. */
PM_HIDDEN void pm_pool_release_spares(pm_heap *heap);
/* Blocks in use, for statistics (racy, clamped). */
PM_HIDDEN uint32_t pm_pool_blocks_in_use(const pm_pool *pool);

/* I3: is p a block boundary in pool? Lemire's divisibility test with c = floor(2^64/d) + 1
 * (ceil(2^64/d) unless d is a power of two): off % d == 0 iff off * c mod 2^64 < c, exact for
 * off < 2^32. An address in the tail in front of start gives off = 2^64 - k with
 * 0 < k <= tail <= d - 16, and for those the product is 2^64 - k * c, never below c: rejected
 * too, with no bound check. It says nothing of carving: pm_pool_is_carved_block adds that. */
PM_INLINE bool pm_pool_is_block(const pm_pool *pool, const void *p) {
    uint64_t off = (uint64_t)((uintptr_t)p - (uintptr_t)pool->start);
    return off * pool->div_magic < pool->div_magic;
}
/* The step e = d * c mod 2^64 (0 < e <= d): block k's product is k * e, which grows with k.
 * Every other offset's product is at least c. So "a block below the carve point", two tests,
 * is the one compare product < (blocks carved) * e, which is the carve point's own product
 * (the carve point is a block boundary). e = d when d is a power of two, which is why c is
 * floor + 1 there (ceil would make e = 0, every block's product 0). */
PM_INLINE uint64_t pm_pool_carved_limit(const pm_pool *pool, uint32_t carved_bytes) {
    return (uint64_t)carved_bytes * pool->div_magic;
}
/* I3 plus: below the carve point, i.e. a block that can have been handed out (one carved
 * but not yet reached by malloc carries its key: the key check that follows rejects it). One
 * multiply and one compare (the free fast path's test). */
PM_INLINE bool pm_pool_is_carved_block(const pm_pool *pool, const void *p) {
    uint64_t off = (uint64_t)((uintptr_t)p - (uintptr_t)pool->start);
    /* grows as the owner carves; a reader sees an old or a new value, both safe */
    return off * pool->div_magic < __atomic_load_n(&pool->carved_limit, __ATOMIC_RELAXED);
}

#define PM_OWNER_DETACHED ((uintptr_t)1) /* I6 */

/* The heap that owns pool, or NULL for a free pool; safe from any thread (I6). */
PM_INLINE pm_heap *pm_pool_owner(const pm_pool *pool) {
    uintptr_t raw = (uintptr_t)__atomic_load_n(&pool->owner, __ATOMIC_RELAXED);
    return (pm_heap *)(raw & ~PM_OWNER_DETACHED);
}
/* The same, ordered before the reads of the descriptor that follow: for a thread that may be
 * looking at a pool another thread is making (pool.c, pool_init), the slow paths' checks. */
PM_INLINE pm_heap *pm_pool_owner_acquire(const pm_pool *pool) {
    uintptr_t raw = (uintptr_t)__atomic_load_n(&pool->owner, __ATOMIC_ACQUIRE);
    return (pm_heap *)(raw & ~PM_OWNER_DETACHED);
}
PM_INLINE void pm_pool_set_owner(pm_pool *pool, pm_heap *heap, bool detached) {
    __atomic_store_n(&pool->owner,
                     (pm_heap *)((uintptr_t)heap | (detached ? PM_OWNER_DETACHED : 0)),
                     __ATOMIC_RELAXED);
}

/* ---- heap.c: per-thread heaps ------------------------------------------------------------- */
/* An abandoned heap to adopt, else a new one; NULL when out of memory. */
PM_HIDDEN pm_heap *pm_heap_take(void);
/* A block of class cls from heap: cache-less slow path (current pool, carving, the pool's
 * atomic list, pending pools, a new pool, in that order). NULL when the OS has no memory. */
PM_HIDDEN void *pm_heap_alloc(pm_heap *heap, unsigned cls);
/* For a thread whose heap was already handed over: borrow a heap for one allocation. */
PM_HIDDEN void *pm_heap_alloc_borrowed(unsigned cls);
/* Owner only: a local free that could not take the fast path (poisoning, a full cache and a
 * detached pool...). */
PM_HIDDEN void pm_heap_free_local(pm_heap *heap, pm_pool *pool, pm_block *b);
/* The free fast path's block b (checked: this heap's, a handed-out block boundary) found the
 * cache of cs full: the cache goes back to its pools and b starts it anew. */
PM_HIDDEN PM_NOINLINE void pm_heap_cache_overflow(pm_heap *heap, pm_class_state *cs, pm_block *b);
/* PM_STALE_FREES frees past the full cache of cs, b the last: if no malloc of the class came
 * between, the cache is stale and goes back to its pools (drained: room 0, so every free goes
 * past it); if one did, a drained cache takes blocks again. Then b is freed. A tail call of the
 * free fast path: no frame there. */
PM_HIDDEN PM_NOINLINE void pm_heap_cache_stale(pm_heap *heap, pm_class_state *cs, pm_pool *pool,
                                               pm_block *b);
/* Frees every block in the heap's caches into its pools. */
PM_HIDDEN void pm_heap_flush_cache(pm_heap *heap);
/* The thread's exit: gives back what it can and puts the heap up for adoption. */
PM_HIDDEN void pm_heap_abandon(pm_heap *heap);
/* Flushes the caches of heaps nobody holds (pm_trim). */
PM_HIDDEN void pm_heap_service_abandoned(void);
PM_HIDDEN void pm_heap_install(pm_heap *h);
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
    uint64_t cached_pieces;  /* pieces in the cache (pieces of one mapping side by side merge) */
    uint64_t cache_hits;
    uint64_t in_place;       /* blocks built where cached pieces lie (no system call) */
    uint64_t extended;       /* ... with fresh pages mapped before, after or between them */
    uint64_t moved_to_cache; /* reallocs that copied a block into cached pages to grow it */
    uint64_t unmap_failures; /* munmap refused (map count): the memory was purged instead */
    uint64_t pending_bytes;  /* purged, still mapped, waiting for an unmap to succeed */
    uint64_t peak_live;      /* live high-water mark behind the cache's resident budget */
    uint64_t budget;         /* cached bytes allowed to stay resident now */
} pm_large_stats;
PM_HIDDEN void pm_large_get_stats(pm_large_stats *out);
PM_HIDDEN bool pm_large_consistent(void); /* for the tests (large.c): table, cache, blocks */

/* ---- init.c: start-up, fork, the thread lifecycle ----------------------------------------- */
PM_HIDDEN void pm_init(void);                 /* idempotent, thread-safe, never allocates */
/* pm_init's first test, inline: the entry points that must see options pay a load, not a call. */
PM_INLINE void pm_init_once(void) {
    if (PM_UNLIKELY(atomic_load_explicit(&pm_initialized, memory_order_acquire) != 2))
        pm_init();
}
/* The calling thread's place in its lifecycle (init.c keeps the state machine). */
enum pm_thread_state { PM_THREAD_NEW = 0, PM_THREAD_LIVE, PM_THREAD_EXITED };
PM_HIDDEN extern PM_TLS uint8_t pm_thread_state;
/* The calling thread's heap: installs one (adopted or new) and arms the exit hook on first
 * use; NULL when out of memory or once the thread has exited (PM_THREAD_EXITED). */
PM_HIDDEN pm_heap *pm_thread_heap_get(void);

/* ---- trim.c: giving memory back ------------------------------------------------------------ */
/* Every cached and purgeable byte back to the OS (before an allocation gives up). */
PM_HIDDEN size_t pm_release_all(void);

/* ---- alloc.c / free.c: the slow paths behind the inline fast paths ------------------------ */
PM_HIDDEN PM_NOINLINE void *pm_malloc_slow(size_t size);
PM_HIDDEN PM_NOINLINE void pm_free_slow(void *p);

PM_HIDDEN void *pm_alloc_class(unsigned cls, size_t size);
/* Checks p (inside an arena) as free does and returns its block size; fn names the caller. */
PM_HIDDEN size_t pm_block_usable(const void *p, const char *fn);
PM_HIDDEN PM_NORETURN PM_COLD void pm_report_foreign(const void *p, const char *fn);
/* A pointer in no arena and no live large block: "double free of large block" if it was one
 * recently, else as pm_report_foreign. */
PM_HIDDEN PM_NORETURN PM_COLD void pm_report_unknown(const void *p, const char *fn);

/* Global counters kept outside the fast paths (atomics; slow paths only). */
typedef struct pm_global_stats {
    _Atomic uint64_t arenas_mapped, arenas_unmapped, arena_bytes;
    _Atomic uint64_t pools_acquired, pools_released;
    _Atomic uint64_t purged_bytes, purges;
    _Atomic uint64_t purged_taken_bytes; /* purged, then taken again by a new pool */
    _Atomic uint64_t purge_backoff;      /* purge ticks come every delay << this (arena.c) */
    _Atomic uint64_t heaps_created, heaps_abandoned, heaps_adopted;
    _Atomic uint64_t unmap_failures;
} pm_global_stats;
PM_HIDDEN extern pm_global_stats pm_gstats;

/* A field one thread writes and others read (statistics, pool->used, the cache's room): only
 * the owner writes it, others load it with relaxed atomic loads, and on every platform we run
 * on an aligned word is read whole, so a reader sees an old or a new value, never a torn one.
 * The fast paths therefore use plain read-modify-write instructions (an `add` to memory). For
 * ThreadSanitizer, which cannot know that, the same macros store atomically (one instruction
 * more: load, add, store), so the sanitizer runs clean and checks everything else. */
#if defined(__SANITIZE_THREAD__)
#define PM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PM_TSAN 1
#endif
#endif
#ifndef PM_TSAN
#define PM_TSAN 0
#endif
#if PM_TSAN
#define PM_OWN_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define PM_OWN_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#else
#define PM_OWN_ADD(field, n) ((field) += (n))
#define PM_OWN_SET(field, v) ((field) = (v))
#endif

/* ---- the sampling countdown (pm_class_state.countdown) --------------------------------------- */
/* Countdown between two looks when nothing samples: the look folds the bytes into the
 * statistics and notices a hook installed meanwhile (20 instructions per 16 MiB asked for). */
#define PM_COUNTDOWN_IDLE ((int64_t)16 << 20)
/* The layer that samples allocations (POOLMALLOC_PROF), or NULL. Called off the fast path
 * with a block just allocated (NULL when the allocation failed) and its request size, once the
 * countdown of the block's class went below zero; returns the next countdown in bytes. */
/* The hook may hand out another block instead: it stores it in *block (a block of the same
 * class) after freeing the original. caller: the return address of pm_sample_expired (the
 * program's call site when malloc tail-called it), so that the hook need not guess it. */
typedef int64_t (*pm_sample_hook_fn)(void **block, size_t size, void *caller);
#define PM_SAMPLE_CAN_MOVE 1
PM_HIDDEN extern pm_sample_hook_fn pm_sample_hook;
/* Re-arms the calling thread's countdowns now (after pm_sample_hook changed); other threads'
 * follow at their next expiry, within PM_COUNTDOWN_IDLE bytes of each class. */
PM_HIDDEN void pm_sample_rearm_all(void);
/* The first countdown of a new heap's classes (the hook's draw, or PM_COUNTDOWN_IDLE). */
PM_HIDDEN int64_t pm_sample_first_countdown(void);
/* Sets pm_inline_max from the mmap threshold (at start-up and when options come late). */
PM_HIDDEN void pm_inline_max_update(void);
/* The countdown of cs went below zero: folds and re-arms, then returns block (never NULL: so
 * that the fast path can tail-call it and keep no register across the call). */
PM_HIDDEN PM_NOINLINE __attribute__((returns_nonnull)) void *pm_sample_expired(struct pm_class_state *cs, void *block, size_t size);

#if PM_STATS
#define PM_STAT(expr) do { expr; } while (0)
#else
#define PM_STAT(expr) do { } while (0)
#endif

/* ---- fast paths: inlined into pm_malloc/pm_free and into the preload shim's malloc/free ---- */

/* I8 on the fast paths: a decoded link must lie in the 4 MiB slot of the block that held it
 * (three instructions), so that following it reads mapped memory; the block it names is then
 * checked in full when it is popped in turn, by its key, which no one can forge without the
 * secret. The slow paths (heap.c, pool.c) check links against the pool itself. */
PM_INLINE bool pm_link_in_slot(const pm_block *b, const pm_block *next) {
    return (((uintptr_t)b ^ (uintptr_t)next) >> PM_ARENA_SHIFT) == 0;
}

/* Every allocation of class cs (class 0: large blocks) counts its size down; the one that
 * takes the countdown below zero goes through pm_sample_expired (a tail call). */
PM_INLINE void *pm_count_down(pm_class_state *cs, void *block, size_t size) {
    int64_t left = cs->countdown - (int64_t)size;
    PM_OWN_SET(cs->countdown, left);
    if (PM_UNLIKELY(left < 0))
        return pm_sample_expired(cs, block, size);
    return block;
}

/* Pops a block of class cls from the calling thread's cache or current pool, or NULL if it
 * has none (or the thread has no heap yet: the sentinel heap's pools are all empty). Every
 * link is checked before it is followed (I8). The countdown runs on success only, so the
 * sentinel heap, shared by every thread without a heap, is never written. */
PM_INLINE void *pm_pop_line(uint32_t line, size_t size) {
    pm_heap *heap = pm_fast_heap_get();
    pm_class_state *cs = (pm_class_state *)((char *)heap + line);
    pm_block **top = cs->top, *b;
    if (PM_LIKELY(pm_low16(top) != cs->empty_lo)) { /* the block this thread freed last: warm */
        b = *top;
        /* b must still carry its free key: a block freed twice (its key zeroed in between,
         * say) is in the cache twice, and its second pop finds the key cleared by the first. */
        if (PM_HARDEN && PM_UNLIKELY(b->key != pm_free_key(b)))
            return pm_heap_corrupt_jump(b, "thread cache");
        PM_OWN_SET(cs->top, top + 1);
    } else {
        pm_pool *pool = cs->current;
        b = pool->free;
        if (PM_LIKELY(b != NULL)) { /* a block freed into the pool */
            pm_block *next = pm_link_decode(b);
            /* In the slot first: a pool's list ends once per list freed or collected into
             * it, so the NULL test is the rarer one here (2 instructions fewer a pop; in the
             * cache, whose pair benchmark pops a last block each time, NULL comes first). */
            if (PM_HARDEN && PM_UNLIKELY((!pm_link_in_slot(b, next) && next != NULL) ||
                                         b->key != pm_free_key(b)))
                return pm_heap_corrupt_jump(b, "pool free list");
            pool->free = next;
            /* The next malloc of this class will load next's link: start fetching it now,
             * while the caller works, rather than stall then. Prefetching NULL is harmless. */
            __builtin_prefetch(next);
        } else { /* a never-used block of the carved part, if one is left */
            b = (pm_block *)pool->bump;
            if (PM_UNLIKELY((char *)b >= pool->bump_end))
                return NULL; /* carving, collecting, another pool: the slow path */
            /* Its key, set by the carve, must be intact: a free of it that got through (an
             * overflow wrote over the key first) would otherwise hand it out twice. */
            if (PM_HARDEN && PM_UNLIKELY(b->key != pm_free_key(b)))
                return pm_heap_corrupt_jump(b, "a pool's unused blocks");
            pool->bump = (char *)b + pool->block_size;
        }
        PM_OWN_ADD(pool->used, 1);
    }
    /* The block leaves the cache, the list or the bump range before its key is cleared, in
     * the compiler's order too: a fork between the two must leave the child a block that is
     * out, never one still in reach of its malloc without its key (which that malloc would
     * report as heap corruption). No instruction: the stores were already in this order. */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    b->key = 0;
    PM_STAT(PM_OWN_ADD(cs->nmalloc, 1));
    return pm_count_down(cs, b, size);
}

/* The same by class number. */
PM_INLINE void *pm_pop_current(unsigned cls, size_t size) {
    return pm_pop_line(pm_class_line(cls), size);
}

/* Sizes up to the mmap threshold (and the largest class) take the inline path; 0 until pm_init
 * has read the threshold, so that the first medium request goes through pm_malloc_slow. */
PM_HIDDEN extern size_t pm_inline_max;

PM_INLINE void *pm_malloc_inline(size_t size) {
    uint32_t line;
    if (PM_LIKELY(size <= PM_SMALL_LOOKUP_MAX))
        line = pm_line_of_small[size];
    else if (PM_LIKELY(size <= __atomic_load_n(&pm_inline_max, __ATOMIC_RELAXED)))
        line = pm_line_of_medium[(size + 127) >> 7]; /* pm_inline_max <= PM_MAX_CLASS_SIZE */
    else
        return pm_malloc_slow(size);
    void *p = pm_pop_line(line, size);
    if (PM_LIKELY(p != NULL))
        return p;
    return pm_malloc_slow(size);
}

/* Frees past a full cache that must fall in one unit, running, before the cache goes back to
 * its pools in runs (heap.c). Sending it back on every such free made random-order frees pay
 * a walk of the cache for runs of one block (churn 9% slower, round by round, in the
 * comparison of 2026-12-01 evening); with 8, a tear-down in build order still takes one push
 * per run after 8 single ones each time the cache fills. */
#define PM_RUN_FREES 8
/* Frees past a full cache with no malloc of the class in between, after which the cache is
 * stale: the program is freeing, not reusing. It goes back to its pools and takes nothing
 * more until the class's next malloc (heap.c, pm_heap_cache_stale). A stale cache pins up to
 * 32 pools a class that would otherwise be released when the program has freed everything:
 * their other blocks are on free lists in the order they were freed, and a structure rebuilt
 * from them is laid out in that order. (teardown, shuffled round then build-order round: the
 * walk of the rebuilt list 15 ns a node, 8 with the pools released.) */
#define PM_STALE_FREES 64
/* full_run's fields: the frees running in full_unit, the frees past the full cache counted to
 * PM_STALE_FREES, and the low 16 bits of the class's countdown when that count began (the
 * countdown moves on every malloc, so a changed mark means a malloc came between). */
#define PM_RUN_MASK 0xffu
#define PM_PAST_ONE 0x100u
#define PM_PAST_MASK 0xff00u
#define PM_PAST_MARK(cs) ((uint32_t)(cs)->countdown << 16)

/* b on the cache of cs, whose top is top and which has room. The key and the slot are
 * written before top moves (a release store: no instruction on x86, but the compiler keeps
 * the order): a fork while another thread is here leaves the child a cache whose every block
 * carries its key, since fork's copy sees a thread's stores in order (heap.c adopts that
 * thread's heap, cache and all). */
PM_INLINE void pm_cache_push(pm_class_state *cs, pm_block **top, pm_block *b) {
    b->key = pm_free_key(b);
    *--top = b;
    __atomic_store_n(&cs->top, top, __ATOMIC_RELEASE);
}

/* The checks come before the block is read: p must be a block boundary of a pool this thread
 * owns (I3, I6) before its key is loaded, so that no pointer makes free read outside a pool. */
PM_INLINE void pm_free_inline(void *p) {
    if (PM_LIKELY(pm_in_arena(p))) {
        pm_pool *pool = pm_pool_of(p);
        pm_heap *heap = pm_fast_heap_get();
        pm_block *b = (pm_block *)p;
        /* 0: our current pool; PM_OWNER_DETACHED: one of our detached pools (I6) */
        uintptr_t theirs = (uintptr_t)__atomic_load_n(&pool->owner, __ATOMIC_RELAXED) ^
                           (uintptr_t)heap;
        if (PM_LIKELY(theirs <= PM_OWNER_DETACHED &&
                      pm_pool_is_carved_block(pool, p) && b->key != pm_free_key(b))) {
            pm_class_state *cs = (pm_class_state *)((char *)heap + pool->cls_offset);
            pm_block **top = cs->top;
            if (PM_LIKELY(pm_low16(top) != cs->full_lo)) {
                pm_cache_push(cs, top, b);
                return;
            }
            /* The cache is full. PM_RUN_FREES frees past it running in one unit: the program
             * frees in runs, and the cache goes back to its pools a run at a time (heap.c).
             * Otherwise b goes to its pool alone: onto our current pool's list, or one of our
             * detached pools' atomic lists. */
            uint32_t unit = (uint32_t)((uintptr_t)p >> PM_UNIT_SHIFT);
            uint32_t run = cs->full_run + PM_PAST_ONE;
            if (unit != cs->full_unit) {
                cs->full_unit = unit;
                run &= ~PM_RUN_MASK;
            } else if ((++run & PM_RUN_MASK) >= PM_RUN_FREES) {
                return pm_heap_cache_overflow(heap, cs, b);
            }
            cs->full_run = run;
            if (PM_UNLIKELY((run & PM_PAST_MASK) == PM_STALE_FREES * PM_PAST_ONE))
                return pm_heap_cache_stale(heap, cs, pool, b);
            if (PM_LIKELY(theirs == 0)) {
                b->key = pm_free_key(b);
                b->link = pm_link_encode(b, pool->free);
                pool->free = b;
                PM_OWN_ADD(pool->used, -1);
                return;
            }
            pm_pool_free_atomic(pool, b); /* one of our detached pools: checked already */
            return;
        }
    }
    pm_free_slow(p);
}

#endif /* PM_INTERNAL_H */
