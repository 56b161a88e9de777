/*
 * large.c: blocks above the mmap threshold. Each gets pages of its own (a mapping, or cached
 * pieces where they lie); a hash table keyed by the block's address records it, so that
 * free() can tell a large block from a foreign pointer without reading memory in front of the
 * pointer (which may not be mapped).
 *
 * Reuse. Programs that free a big buffer usually allocate another of a different size soon
 * after, and a fresh mapping costs a page fault and a zeroed page per 4 KiB the program
 * touches. So freed mappings stay cached, resident, and are handed out again where they lie,
 * since pages that stay put cost nothing to touch again:
 *   - in place: best fit. The smallest run of cached pieces that follow one another in memory
 *     (blocks mapped side by side and freed, whatever their mappings) that holds the request,
 *     used from its start; the rest of the run stays cached, one run still. No system call.
 *   - bridged: else pieces in address order with holes between or after them (space no
 *     mapping holds: a piece trimmed, space the kernel left), the holes mapped with fresh
 *     pages (MAP_FIXED_NOREPLACE), when that is less than half the block: the plan with the
 *     fewest fresh bytes whose holes map;
 *   - extended in place: else the largest run of adjacent pieces, with fresh pages mapped
 *     right below or above it where nothing is mapped (MAP_FIXED_NOREPLACE; the kernel maps
 *     top-down, so the space below the lowest mapping is usually free): only the missing part
 *     is fresh memory;
 *   - else a fresh mapping, placed in the large-block zone (below); adjacent cached pieces of
 *     one kernel mapping (VMA) merge again.
 * Cached pieces are never moved together with mremap to build a block ("stitching", until
 * 2026-12-02): on the guests we measure on, a moved page cost more at its touch than a fresh
 * one (bigbuf 3.8 s with stitching, 2.0-2.7 without, for 121,000 faults against 134,000-
 * 166,000), and where moves are cheap (bare metal) they save a fault per page at most.
 * A growing block (realloc) takes the cached pieces right after it, else moves into a cached
 * stretch by a copy (pm_large_realloc), else grows by fresh pages after it or by mremap.
 * mremap needs its source range inside one VMA. So every block is a list of segments and every
 * cached piece one segment, each tagged with a VMA id: pieces merge only when their ids match
 * (a block built in place keeps one segment per piece); a block of several segments grows by
 * mapping fresh pages after it, or by moving each into a larger mapping (the last one extended
 * there). The ids only guide: one that is wrong makes an mremap fail, and every mremap failure
 * falls back to fresh pages or a copy.
 *
 * The zone. Fresh mappings for large blocks are placed by us, not by the kernel, in a range of
 * address space far below the kernel's mmap area (ZONE_GAP below this library, at a random
 * 2 MiB offset): first in a hole a trimmed piece left there (the smallest that fits), else at
 * the zone's top, which then moves up. The kernel maps top-down from just below the libraries,
 * so it puts arenas, thread stacks and other mappings into whatever gap is highest: left to
 * it, large blocks interleave with them, and the holes between cached pieces fill with
 * mappings no large block can build on. In the zone, holes stay ours, so bridging over them
 * works, and the top piece can always be extended upward. Against kernel placement: largemix
 * (large blocks replaced beside generations of small records), six seeds, 8% fewer page
 * faults and 11% less CPU time; bigbuf 124,000 faults against 142,000 (medians of 3). The
 * outcome for one seed swings either way: fragmentation is chaotic, so placement policies are
 * judged over seeds (scripts/results/issue10-large-zone-2026-12-02.md). Every placement is
 * MAP_FIXED_NOREPLACE: a hole someone else has mapped since is dropped from the list, and a
 * taken top turns the zone off for good (the kernel places then, as before), so the
 * bookkeeping can be wrong without harm. Aligned and huge-page blocks are placed by the
 * kernel.
 *
 * The resident budget. The cache may hold what the program itself had live a moment ago, and
 * a quarter of its peak more: cached bytes <= peak live bytes * 5/4 - live bytes (and <=
 * POOLMALLOC_LARGE_CACHE), so large blocks plus cache stay within a quarter of the live
 * high-water mark, which no allocator can go below. The quarter is what reuse in place needs:
 * freed pieces seldom lie where the next request fits, and without it the cache trimmed, then
 * faulted in again, about as much as the program allocated (see cache_budget). The peak decays
 * to what is still held whenever cached pieces expire (4 purge delays), so a program that
 * stops using large buffers gets its memory back. What exceeds the budget is unmapped, oldest
 * first, in whole pages.
 *
 * Domains. Everything above lives in a domain: a lock, the table, the cache, the zone and the
 * budget. There are PM_LARGE_DOMAINS of them and each thread allocates from one (taken in
 * turn at its first large call), so threads that replace large blocks all the time do not
 * queue on one lock: iobuf (two threads replacing 128 KiB-1 MiB buffers) took 0.60-0.66 s with
 * one lock and 0.18-0.21 s with four (mimalloc 0.19-0.21, jemalloc 0.22-0.23), for 12% more
 * peak RSS (each domain keeps its own cache within its own budget). A block stays in the
 * domain that made it: whoever frees or resizes it finds it there (their own domain first).
 * A program with one thread uses one domain, as before, and a domain no thread drew costs
 * nothing: it stays zero in .bss and no one visits it.
 *
 * Failures. An unmap the kernel refuses (ENOMEM at vm.max_map_count) is never fatal: the pages
 * are purged (MADV_DONTNEED) and the range waits on a retry list. A request that mmap refuses
 * gets one more try after every cached byte was given back. A free of a recently freed block
 * is recognised (pm_large_was_freed) so that it is reported as a double free.
 *
 * Lock order: a domain's lock is a leaf, and no thread holds two; nothing here calls into the
 * arena, pool or heap code.
 */
#include "internal.h"

/* Huge pages for large blocks (POOLMALLOC_HUGE_PAGES=1; off by default). On the KVM guests we
 * measure on, a page fault costs about 11 us a 4 KiB page, and a page that mremap moved costs
 * about 5 us at its first touch (the hypervisor's page tables are rebuilt page by page), so a
 * 64 MiB buffer whose pages mremap had moved took 80 ms to touch where one in place takes 3. With
 * transparent huge pages both go 2 MiB at a time: the first touch of 64 MiB 114 ms instead of
 * 180, the touch after a move 2 ms (scripts/results/issue10-mremap-touch-bench.c). But random
 * access to a block in huge pages was slower there (6 MiB: 4.2 ns against 3.4; randslot and
 * frag 1.3-2x slower with their arrays in huge pages), and a huge page is resident whole once
 * touched: a block touched sparsely holds up to 2 MiB per page touched. Hence opt-in. With it,
 * blocks of HUGE_MIN and more are mapped 2 MiB-aligned, advised for huge pages, their sizes
 * rounded to 2 MiB (splits and moves then keep whole huge pages). At each free of such a
 * block, HUGE_SAMPLES pages spread over it are looked up with mincore: one not resident (a
 * block the program did not fill) turns huge pages off for the blocks mapped after it, a
 * filled one turns them on again. The kernel's policy decides in the end: with
 * /sys/kernel/mm/transparent_hugepage/enabled at "never" the advice does nothing. */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN ((size_t)4 << 20)
#define HUGE_SAMPLES 8
#define LARGE_SEGS 16   /* segments per block: cached pieces side by side, fresh pages */
#define CACHE_SLOTS 64  /* cached pieces */
#define PENDING_SLOTS 32
#define FREED_RING 64   /* recently freed block addresses, for the double-free report */
#define SPLIT_MIN ((size_t)64 << 10) /* a smaller leftover goes with the block */
/* Cached pieces live this many purge delays (250 ms: 1 s). The budget, not age, is what keeps
 * resident memory near the live high-water mark; age only returns the memory of a program that
 * stopped using large blocks, and a 50 ms horizon threw away buffers that a busy or slower
 * program reuses a few steps later, each one a page fault per 4 KiB to build again. */
#define LARGE_AGE_FACTOR 4

typedef struct segment {
    size_t size;
    uint32_t vma; /* pieces with one id lie in one kernel mapping; 0: assign a fresh one */
} segment;

typedef struct large_block {
    char *p;
    size_t size; /* the sum of its segments */
    uint32_t nseg;
    segment seg[LARGE_SEGS];
} large_block;

typedef struct large_entry {
    uintptr_t ptr; /* 0: empty */
    large_block b;
} large_entry;

/* A large_block is 280 bytes, of which a block of one mapping uses 40: copies and resets
 * touch only the segments in use. Copying and zeroing whole structs cost 7% of the
 * instructions of a malloc+free pair served from the cache (callgrind, 16-128 KiB blocks,
 * 2026-12-03: 1,756 -> 1,634 a pair). */
static void block_start(large_block *b, char *p) {
    b->p = p;
    b->size = 0;
    b->nseg = 0;
}

static void block_copy(large_block *to, const large_block *from) {
    to->p = from->p;
    to->size = from->size;
    to->nseg = from->nseg;
    for (uint32_t i = 0; i < from->nseg; i++)
        to->seg[i] = from->seg[i];
}

static void entry_move(large_entry *to, const large_entry *from) {
    to->ptr = from->ptr;
    block_copy(&to->b, &from->b);
}

typedef struct cached_piece {
    char *p;
    size_t size;
    uint64_t freed_ms;
    uint32_t vma;
    uint32_t serial; /* order of caching, the oldest trimmed first (compared across wrap) */
} cached_piece;

typedef struct range {
    char *p;
    size_t size;
} range;

int pm_large_fail_unmaps;

/* The zone (see the top): [zone_base, zone_top) is where a domain's fresh large mappings have
 * gone; holes are ranges in it unmapped since. zone_top 0: not chosen yet; 1: off. */
#define ZONE_GAP ((uintptr_t)1 << 40) /* 1 TiB; a quarter of the space below us if smaller */
#define HOLE_SLOTS 64

/* One domain: every field under its lock (domain_lock). A line of its own at each end, so that
 * threads in two domains never write one line. */
typedef struct __attribute__((aligned(64))) large_domain {
    large_entry *table; /* live blocks by address: open addressing, linear probing */
    size_t table_cap, live_count;
    /* The cached pieces, in address order (no two overlap): the searches for runs of adjacent
     * pieces walk them as they lie, and a piece is found by bisection. Sorting them on every
     * request instead (an insertion sort of up to CACHE_SLOTS pieces, three times for a request
     * the runs could not serve) was 45% of the instructions of a program that replaced blocks
     * of 140-600 KiB at random (3,100 instructions a malloc). */
    cached_piece cache[CACHE_SLOTS];
    size_t cache_count, cache_bytes;
    uint32_t cache_serial;
    /* At most every piece's freed_ms (exact after each expiry walk; 0: none cached): frees
     * skip the walk while even the oldest piece is younger than the horizon. */
    uint64_t cache_first_freed_ms;
    range pending[PENDING_SLOTS]; /* purged ranges whose munmap failed */
    size_t pending_count;
    uintptr_t freed_ring[FREED_RING];
    size_t freed_next;
    size_t live_bytes, peak_live;
    pm_large_stats stats;
    uintptr_t zone_base, zone_top;
    range holes[HOLE_SLOTS];
    size_t hole_count;
} large_domain;

/* The domains start zeroed, in .bss, so that a domain no thread draws costs no memory (an
 * initialised array sat in .data: 17 KiB more resident in every process, /bin/true
 * included); their locks, which need an initializer, lie apart. domains_drawn has bit k set
 * once a thread has drawn domain k: only those can hold blocks, and only those are visited. */
PM_BIG_BSS static large_domain domains[PM_LARGE_DOMAINS];
typedef struct __attribute__((aligned(64))) padded_lock {
    pthread_mutex_t lock; /* a line each: two threads' locks on one line slowed iobuf 10% */
} padded_lock;
static padded_lock domain_locks[PM_LARGE_DOMAINS] = {
    {PM_LOCK_INITIALIZER}, {PM_LOCK_INITIALIZER}, {PM_LOCK_INITIALIZER}, {PM_LOCK_INITIALIZER}};
_Static_assert(PM_LARGE_DOMAINS == 4, "one lock initializer a domain");
static uint32_t domains_drawn;

static pthread_mutex_t *domain_lock(large_domain *d) { return &domain_locks[d - domains].lock; }
static unsigned domain_index(const large_domain *d) { return (unsigned)(d - domains); }
static bool domain_drawn(unsigned k) {
    return (__atomic_load_n(&domains_drawn, __ATOMIC_ACQUIRE) >> k) & 1;
}
static uint32_t vma_counter;

static size_t page_round(size_t n) { return (n + PM_PAGE_SIZE - 1) & ~(size_t)(PM_PAGE_SIZE - 1); }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }
static uint32_t fresh_vma_id(void) {
    uint32_t id = __atomic_add_fetch(&vma_counter, 1, __ATOMIC_RELAXED);
    return id ? id : __atomic_add_fetch(&vma_counter, 1, __ATOMIC_RELAXED);
}

static size_t slot_of(uintptr_t p, size_t cap) {
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull; /* Fibonacci hashing */
    return (size_t)(h >> 20) & (cap - 1);
}

/* ---- the zone (under the domain's lock) ------------------------------------------------------ */

static bool zone_on(large_domain *d) { return d->zone_top > 1; }

/* ZONE_GAP below this library's data, 1 GiB-aligned, less a random multiple of 2 MiB up to a
 * quarter of the gap (so that a large block's address says nothing about the library's). */
static void zone_choose(large_domain *d) {
    if (PM_TSAN) { /* ThreadSanitizer shadows only its own ranges of the address space and
                    * stops a program that maps outside them (exit 66): the kernel places */
        d->zone_top = 1;
        return;
    }
    uintptr_t here = (uintptr_t)&d->zone_top & ~(((uintptr_t)1 << 30) - 1);
    uintptr_t gap = here / 4 < ZONE_GAP ? (here / 4) & ~(((uintptr_t)1 << 30) - 1) : ZONE_GAP;
    uintptr_t jitter = (pm_secret.key >> 8) % (gap / 4 + 1) & ~(((uintptr_t)2 << 20) - 1);
    /* Each domain's zone starts an eighth of the gap above the last one's: room to grow */
    uintptr_t start = here - gap - jitter + domain_index(d) * (gap / 8);
    d->zone_top = gap >= ((uintptr_t)1 << 32) ? start : 1;
    d->zone_base = d->zone_top;
}

static bool in_zone(large_domain *d, const char *p, size_t size) {
    return zone_on(d) && (uintptr_t)p >= d->zone_base && (uintptr_t)p + size <= d->zone_top;
}

static void hole_remove(large_domain *d, size_t i) { d->holes[i] = d->holes[--d->hole_count]; }

static void hole_add(large_domain *d, char *p, size_t size) {
    if (d->hole_count == HOLE_SLOTS) { /* keep the larger: a forgotten hole is only address space */
        size_t smallest = 0;
        for (size_t i = 1; i < d->hole_count; i++)
            if (d->holes[i].size < d->holes[smallest].size)
                smallest = i;
        if (d->holes[smallest].size >= size)
            return;
        hole_remove(d, smallest);
    }
    d->holes[d->hole_count++] = (range){p, size};
}

/* [p, p + size) was unmapped: a hole, merged with its neighbours, or a lower top. */
static void zone_unmapped(large_domain *d, char *p, size_t size) {
    if (!in_zone(d, p, size))
        return;
    for (size_t i = 0; i < d->hole_count;) {
        if (d->holes[i].p + d->holes[i].size == p || p + size == d->holes[i].p) {
            if (d->holes[i].p < p)
                p = d->holes[i].p;
            size += d->holes[i].size;
            hole_remove(d, i);
            continue;
        }
        i++;
    }
    if ((uintptr_t)p + size == d->zone_top)
        d->zone_top = (uintptr_t)p; /* the top comes down: the next fresh mapping goes here */
    else
        hole_add(d, p, size);
}

/* [p, p + size) was mapped by us (fresh pages beside a piece, a block grown in place): no
 * longer a hole, and the top moves up past it if it reaches there. */
static void zone_mapped(large_domain *d, char *p, size_t size) {
    if (!zone_on(d))
        return;
    char *end = p + size;
    for (size_t i = 0; i < d->hole_count;) {
        range h = d->holes[i];
        if (h.p >= end || h.p + h.size <= p) {
            i++;
            continue;
        }
        hole_remove(d, i); /* what lies outside the mapping stays a hole */
        if (h.p < p)
            hole_add(d, h.p, (size_t)(p - h.p));
        if (h.p + h.size > end)
            hole_add(d, end, (size_t)(h.p + h.size - end));
    }
    if ((uintptr_t)p <= d->zone_top && (uintptr_t)end > d->zone_top)
        d->zone_top = (uintptr_t)end;
    if ((uintptr_t)end >= d->zone_base && (uintptr_t)p < d->zone_base)
        d->zone_base = (uintptr_t)p;
}

/* A fresh mapping of size bytes in the zone: the smallest hole that holds it, else the top;
 * NULL if the zone is off or its top is taken (which turns it off). */
static char *zone_take(large_domain *d, size_t size) {
    if (d->zone_top == 0)
        zone_choose(d);
    while (zone_on(d)) {
        size_t best = d->hole_count;
        for (size_t i = 0; i < d->hole_count; i++)
            if (d->holes[i].size >= size &&
                (best == d->hole_count || d->holes[i].size < d->holes[best].size))
                best = i;
        if (best == d->hole_count)
            break;
        char *p = d->holes[best].p;
        if (!pm_os_map_at(p, size)) {
            hole_remove(d, best); /* someone else's now */
            continue;
        }
        d->holes[best].p += size;
        d->holes[best].size -= size;
        if (d->holes[best].size == 0)
            hole_remove(d, best);
        return p;
    }
    if (!zone_on(d) || d->zone_top + size < d->zone_top)
        return NULL;
    char *p = (char *)d->zone_top;
    if (!pm_os_map_at(p, size)) {
        d->zone_top = 1; /* something else lies there: the kernel places from now on */
        d->hole_count = 0;
        return NULL;
    }
    d->zone_top += size;
    return p;
}

/* ---- giving memory back (under the domain's lock) -------------------------------------------- */

static bool unmap_now(char *p, size_t size) {
    if (pm_large_fail_unmaps > 0) { /* the test hook stands for the kernel's refusal */
        pm_large_fail_unmaps--;
        return false;
    }
    return pm_os_unmap(p, size);
}

/* Returns a range to the kernel. When munmap refuses (it must split a mapping and the process
 * is at vm.max_map_count), the pages are purged, which needs no new mapping, and the range
 * waits for a later retry; with the retry list full it stays mapped, purged, for good. */
static void give_back(large_domain *d, char *p, size_t size) {
    if (unmap_now(p, size)) {
        zone_unmapped(d, p, size);
        return;
    }
    d->stats.unmap_failures++;
    pm_os_purge(p, size);
    if (d->pending_count < PENDING_SLOTS) {
        d->pending[d->pending_count++] = (range){p, size};
        d->stats.pending_bytes += size;
    }
}

static size_t retry_pending(large_domain *d) {
    size_t bytes = 0;
    for (size_t i = 0; i < d->pending_count;) {
        if (unmap_now(d->pending[i].p, d->pending[i].size)) {
            zone_unmapped(d, d->pending[i].p, d->pending[i].size);
            bytes += d->pending[i].size;
            d->stats.pending_bytes -= d->pending[i].size;
            d->pending[i] = d->pending[--d->pending_count];
        } else {
            i++;
        }
    }
    return bytes;
}

/* ---- the table (under the domain's lock) ----------------------------------------------------- */

static large_entry *table_find(large_domain *d, uintptr_t p) {
    if (d->table == NULL)
        return NULL;
    for (size_t i = slot_of(p, d->table_cap);; i = (i + 1) & (d->table_cap - 1)) {
        if (d->table[i].ptr == p)
            return &d->table[i];
        if (d->table[i].ptr == 0)
            return NULL;
    }
}

static bool table_grow(large_domain *d) {
    size_t cap = d->table_cap ? d->table_cap * 2 : 256;
    large_entry *t = pm_os_map(cap * sizeof *t);
    if (t == NULL)
        return false;
    for (size_t i = 0; i < d->table_cap; i++) {
        if (d->table[i].ptr == 0)
            continue;
        size_t j = slot_of(d->table[i].ptr, cap);
        while (t[j].ptr != 0)
            j = (j + 1) & (cap - 1);
        t[j] = d->table[i];
    }
    if (d->table)
        give_back(d, (char *)d->table, d->table_cap * sizeof *d->table);
    d->table = t;
    d->table_cap = cap;
    return true;
}

/* Room for one more entry, so that the insert that follows cannot fail. */
static bool table_reserve(large_domain *d) {
    return (d->live_count + 1) * 2 <= d->table_cap || table_grow(d);
}

static void table_insert(large_domain *d, const large_block *b) {
    uintptr_t p = (uintptr_t)b->p;
    size_t i = slot_of(p, d->table_cap);
    while (d->table[i].ptr != 0)
        i = (i + 1) & (d->table_cap - 1);
    d->table[i].ptr = p;
    block_copy(&d->table[i].b, b);
    d->live_count++;
}

/* Empties e's slot and moves back the entries after it that their probe would no longer
 * reach (deletion by backward shift), so that the table never holds tombstones. With them, a
 * program that frees and allocates large blocks at a steady count filled the table with
 * tombstones and rehashed it into a fresh mapping every hundred or so blocks: page faults and
 * an unmap (a TLB shootdown across the process's CPUs) each time. Every entry pointer into
 * the table is stale afterwards. */
static void table_remove(large_domain *d, large_entry *e) {
    size_t mask = d->table_cap - 1, hole = (size_t)(e - d->table);
    for (size_t i = (hole + 1) & mask; d->table[i].ptr != 0; i = (i + 1) & mask) {
        size_t home = slot_of(d->table[i].ptr, d->table_cap);
        /* The entry at i may fill the hole if its home does not lie in (hole, i], cyclically:
         * then its probe from home passes the hole before reaching i. */
        bool reaches = hole <= i ? home > hole && home <= i : home > hole || home <= i;
        if (!reaches) {
            entry_move(&d->table[hole], &d->table[i]);
            hole = i;
        }
    }
    d->table[hole].ptr = 0;
    d->live_count--;
}

/* ---- recently freed addresses (under the domain's lock) -------------------------------------- */

/* An address stays in the ring when a block is handed out there again: pm_large_was_freed
 * asks the table too, and a live block there is not a freed one. (Clearing it on every
 * allocation walked the ring: 130 instructions a malloc.) */
static void remember_freed(large_domain *d, const void *p) {
    d->freed_ring[d->freed_next] = (uintptr_t)p;
    d->freed_next = (d->freed_next + 1) % FREED_RING;
}


/* ---- the cache of freed pieces (under the domain's lock) ------------------------------------- */

/* What the program gave up since its peak, and a quarter of the peak more (BUDGET_MARGIN_SHIFT).
 * Without the margin, bigbuf (twenty 5-25 MiB buffers replaced at random) unmapped 550 MB and
 * faulted 235,000 pages in 4.6-5.3 s; with an eighth of the peak, 3.7-4.0 s and 222,000-244,000
 * faults; with a quarter, 2.0-2.1 s and 134,000-144,000 faults (tcmalloc 1.8 s, 125,000),
 * resident 454-474 MB against 379 (glibc 460, tcmalloc 497). */
#define BUDGET_MARGIN_SHIFT 2
static size_t cache_budget(large_domain *d) {
    size_t ceiling = d->peak_live + (d->peak_live >> BUDGET_MARGIN_SHIFT);
    if (ceiling < d->peak_live) /* overflow: no margin */
        ceiling = d->peak_live;
    size_t slack = ceiling > d->live_bytes ? ceiling - d->live_bytes : 0;
    size_t budget = min_size(slack, pm_opt.large_cache);
    /* Trims cut whole pages. POOLMALLOC_LARGE_CACHE accepts any byte count, and a cut inside a
     * page leaves a piece of unaligned size behind a range munmap refuses (EINVAL): pieces at
     * unaligned addresses were handed out partly unmapped. */
    return budget & ~(size_t)(PM_PAGE_SIZE - 1);
}

/* The index of the first piece at or above p (cache_count if none). */
static size_t cache_at_or_above(large_domain *d, const char *p) {
    size_t lo = 0, hi = d->cache_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->cache[mid].p < p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void cache_remove(large_domain *d, size_t i) {
    d->cache_bytes -= d->cache[i].size;
    memmove(&d->cache[i], &d->cache[i + 1], (d->cache_count - i - 1) * sizeof d->cache[0]);
    d->cache_count--;
}

static size_t cache_oldest(large_domain *d) {
    size_t oldest = 0;
    for (size_t i = 1; i < d->cache_count; i++)
        if ((int32_t)(d->cache[i].serial - d->cache[oldest].serial) < 0) /* wraps: see serial */
            oldest = i;
    return oldest;
}

static void cache_drop(large_domain *d, size_t i) {
    give_back(d, d->cache[i].p, d->cache[i].size);
    cache_remove(d, i);
}

/* Adds a piece, merged with the cached pieces of the same VMA on either side: the one right
 * above it is the first piece at or above p, the one right below it the piece before that. */
static void cache_insert(large_domain *d, char *p, size_t size, uint32_t vma, uint64_t now) {
    size_t i = cache_at_or_above(d, p);
    if (i < d->cache_count && d->cache[i].vma == vma && p + size == d->cache[i].p) {
        size += d->cache[i].size;
        cache_remove(d, i);
    }
    if (i > 0 && d->cache[i - 1].vma == vma && d->cache[i - 1].p + d->cache[i - 1].size == p) {
        p = d->cache[--i].p;
        size += d->cache[i].size;
        cache_remove(d, i);
    }
    if (d->cache_count == CACHE_SLOTS) {
        size_t oldest = cache_oldest(d);
        cache_drop(d, oldest);
        if (oldest < i)
            i--;
    }
    memmove(&d->cache[i + 1], &d->cache[i], (d->cache_count - i) * sizeof d->cache[0]);
    d->cache[i] = (cached_piece){p, size, now, vma, d->cache_serial++};
    d->cache_count++;
    d->cache_bytes += size;
    if (d->cache_first_freed_ms == 0 || now < d->cache_first_freed_ms)
        d->cache_first_freed_ms = now;
}

/* Unmaps what exceeds the budget, oldest first; a piece larger than the excess loses its end. */
static void cache_trim(large_domain *d, size_t budget) {
    while (d->cache_bytes > budget) {
        size_t i = cache_oldest(d), excess = d->cache_bytes - budget;
        if (d->cache[i].size <= excess) {
            cache_drop(d, i);
        } else {
            d->cache[i].size -= excess;
            d->cache_bytes -= excess;
            give_back(d, d->cache[i].p + d->cache[i].size, excess);
        }
    }
}

/* Drops pieces older than LARGE_AGE_FACTOR purge delays (all with `all`). The live high-water
 * mark then decays to what is still held, so that the budget shrinks with the program's use. */
static size_t cache_expire(large_domain *d, uint64_t now, bool all) {
    long delay = pm_opt.purge_delay_ms > 0 ? pm_opt.purge_delay_ms * LARGE_AGE_FACTOR
                                           : pm_opt.purge_delay_ms;
    /* now may precede a piece's time: another thread read the clock later and cached first */
    uint64_t first = d->cache_first_freed_ms;
    if (!all && (delay < 0 || first == 0 || now <= first || now - first < (uint64_t)delay))
        return 0;
    size_t dropped = 0;
    first = UINT64_MAX;
    for (size_t i = 0; i < d->cache_count;) {
        if (all || (now > d->cache[i].freed_ms && now - d->cache[i].freed_ms >= (uint64_t)delay)) {
            dropped += d->cache[i].size;
            cache_drop(d, i);
        } else {
            if (d->cache[i].freed_ms < first)
                first = d->cache[i].freed_ms;
            i++;
        }
    }
    d->cache_first_freed_ms = first == UINT64_MAX ? 0 : first;
    if (dropped)
        d->peak_live = d->live_bytes + d->cache_bytes;
    return dropped;
}

/* Takes `want` bytes from the head of piece i (all of it if the rest would be small). */
static range cache_take(large_domain *d, size_t i, size_t want) {
    cached_piece *c = &d->cache[i];
    range r = {c->p, c->size};
    if (c->size >= want && c->size - want >= SPLIT_MIN) {
        r.size = want;
        c->p += want;
        c->size -= want;
        d->cache_bytes -= want;
    } else {
        cache_remove(d, i);
    }
    return r;
}

static void add_segment(large_block *b, size_t size, uint32_t vma) {
    if (size == 0)
        return;
    b->seg[b->nseg++] = (segment){size, vma};
    b->size += size;
}

/* Caches every segment of a block (freed, or never handed out). */
static void cache_segments(large_domain *d, const large_block *b, uint64_t now) {
    size_t off = 0;
    for (uint32_t i = 0; i < b->nseg; off += b->seg[i++].size)
        cache_insert(d, b->p + off, b->seg[i].size, b->seg[i].vma, now);
}

/* ---- building a block where cached pieces lie ------------------------------------------------ */

/* A run: cached pieces that follow one another in memory, whatever their mappings. Blocks made
 * next to each other (the kernel places mappings top-down, side by side) leave runs behind when
 * they are freed together, and a block built on a run is used where it lies: its pages stay
 * resident and mapped, so the program touches them at no cost, where fresh pages cost a
 * fault and a zeroed page each. */
typedef struct run {
    char *p;
    size_t size;
    uint32_t count; /* pieces, i.e. segments of a block built on it */
} run;

/* The maximal run that starts at piece k (pieces adjacent in memory): stored in *r; returns
 * the index just past it. */
static size_t run_from(large_domain *d, size_t k, run *r) {
    *r = (run){d->cache[k].p, 0, 0};
    for (; k < d->cache_count && d->cache[k].p == r->p + r->size; k++) {
        r->size += d->cache[k].size;
        r->count++;
    }
    return k;
}

/* The first stretch of whole pieces from piece k on, within the run that ends before piece
 * end, that holds need bytes in at most LARGE_SEGS pieces; its size is 0 if none. */
static run first_stretch(large_domain *d, size_t k, size_t end, size_t need) {
    for (; k < end; k++) {
        run r = {d->cache[k].p, 0, 0};
        for (size_t j = k; j < end && r.count < LARGE_SEGS && r.size < need; j++) {
            r.size += d->cache[j].size;
            r.count++;
        }
        if (r.size >= need)
            return r;
    }
    return (run){0};
}

/* The best place for need bytes among the cache's runs: best fit over whole runs. The smallest
 * maximal run that holds need is used from its start (its lowest stretch of at most LARGE_SEGS
 * pieces that holds need), and what it has beyond stays one run, as large as it can be.
 * Until 2026-12-03 this took the shortest stretch starting at any piece, anywhere: that cut
 * requests out of the middle of runs and left a sliver of cache on both sides, too small for
 * the next request, so the cache grew and its budget trimmed it. With best fit over runs (the
 * policy of tcmalloc's page heap, which `large` had led on): large 114,600 -> 99,000 page
 * faults, largemix 170,000 -> 132,500 and peak RSS 597 -> 519 MiB, bigbuf 125,000 -> 115,000
 * (scripts/results/issue10-large-bestfit-2026-12-03.md). */
static bool best_stretch(large_domain *d, size_t need, run *best) {
    size_t best_run = 0;
    bool found = false;
    for (size_t k = 0, end; k < d->cache_count; k = end) {
        run whole;
        end = run_from(d, k, &whole);
        size_t total = whole.size;
        if (total >= need && (!found || total < best_run)) {
            run r = first_stretch(d, k, end, need);
            if (r.size > 0) {
                *best = r;
                best_run = total;
                found = true;
            }
        }
    }
    return found;
}

/* The cache's maximal runs, largest first; returns how many (at most `max`). */
static size_t largest_runs(large_domain *d, run *out, size_t max) {
    size_t n = 0;
    for (size_t k = 0; k < d->cache_count;) {
        run r;
        k = run_from(d, k, &r);
        if (n < max)
            out[n++] = r;
        else if (r.size > out[max - 1].size)
            out[max - 1] = r;
        else
            continue;
        for (size_t j = n - 1; j > 0 && out[j - 1].size < out[j].size; j--) {
            run t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    }
    return n;
}

/* Takes [p, p + size) out of the cache, which holds all of it as whole pieces save for the
 * last, whose tail stays (unless smaller than SPLIT_MIN: it joins the block, which may then
 * exceed size). Appends the pieces to b as segments; returns the bytes taken. */
static size_t take_span(large_domain *d, char *p, size_t size, large_block *b) {
    size_t taken = 0;
    while (taken < size) {
        size_t i = cache_at_or_above(d, p + taken);
        if (PM_DEBUG && (i == d->cache_count || d->cache[i].p != p + taken))
            pm_fatal("debug: large cache: no piece at %p", (void *)(p + taken));
        uint32_t vma = d->cache[i].vma;
        range r = cache_take(d, i, size - taken);
        if (b->nseg > 0 && b->seg[b->nseg - 1].vma == vma) {
            b->seg[b->nseg - 1].size += r.size;
            b->size += r.size;
        } else {
            add_segment(b, r.size, vma);
        }
        taken += r.size;
    }
    return taken;
}

/* ---- bridging: cached pieces with holes between them ------------------------------------- */

/* Cached pieces seldom touch: live blocks lie between them, and trimming leaves holes. A
 * stretch of pieces whose gaps are holes (address space nothing holds: pieces trimmed, space
 * the kernel never used) still makes a block: fresh pages fill the holes, and only they cost
 * a fault per page, where a fresh mapping costs one for every page of the block and the trims
 * that follow it. bigbuf (twenty 5-25 MiB buffers replaced at random): 148-162 K page faults
 * -> 133-146 K. Where the gaps hold live blocks (the `large` workload), every plan fails, at
 * one refused mmap each. */
#define BRIDGE_PARTS (2 * LARGE_SEGS)
#define BRIDGE_TRIES 4 /* candidates tried, least fresh first: each failure is one mmap */

typedef struct part {
    char *p;
    size_t size;
    bool fresh; /* a hole to map; else a cached piece, or its head */
} part;

typedef struct bridge {
    size_t fresh;  /* bytes of holes in the block */
    uint32_t nparts;
    part parts[BRIDGE_PARTS];
} bridge;

/* The block of need bytes that starts at piece k and takes the pieces after it in address
 * order, with the holes between them and, past the last piece, fresh space: false if
 * it needs more than LARGE_SEGS segments. */
static bool plan_bridge(large_domain *d, size_t k, size_t need, bridge *out) {
    char *start = d->cache[k].p, *at = start;
    out->fresh = 0;
    out->nparts = 0;
    for (size_t j = k; j < d->cache_count && (size_t)(at - start) < need; j++) {
        const cached_piece *c = &d->cache[j];
        size_t left = need - (size_t)(at - start);
        if (out->nparts + 2 > LARGE_SEGS)
            return false;
        if (c->p > at) { /* a hole: the block may end in it */
            size_t hole = min_size((size_t)(c->p - at), left);
            out->parts[out->nparts++] = (part){at, hole, true};
            out->fresh += hole;
            at += hole;
            left -= hole;
            if (left == 0)
                break;
        }
        size_t take = min_size(c->size, left);
        out->parts[out->nparts++] = (part){c->p, take, false};
        at = c->p + take;
    }
    if ((size_t)(at - start) < need) { /* past the last piece */
        if (out->nparts + 1 > LARGE_SEGS || at + (need - (size_t)(at - start)) < at)
            return false;
        out->parts[out->nparts++] = (part){at, need - (size_t)(at - start), true};
        out->fresh += need - (size_t)(at - start);
    }
    return true;
}

/* Maps every hole of the plan; false, with none of them left mapped, if one is taken. */
static bool map_holes(large_domain *d, const bridge *br) {
    for (uint32_t i = 0; i < br->nparts; i++) {
        if (!br->parts[i].fresh || pm_os_map_at(br->parts[i].p, br->parts[i].size))
            continue;
        while (i-- > 0)
            if (br->parts[i].fresh)
                pm_os_unmap(br->parts[i].p, br->parts[i].size);
        return false;
    }
    for (uint32_t i = 0; i < br->nparts; i++)
        if (br->parts[i].fresh)
            zone_mapped(d, br->parts[i].p, br->parts[i].size);
    return true;
}

/* The plans with fresh pages for less than half the block, least fresh first, tried in turn;
 * the first whose holes map is built. */
static bool take_bridged(large_domain *d, size_t need, large_block *b, size_t *old_to) {
    bridge best[BRIDGE_TRIES];
    size_t n = 0;
    for (size_t k = 0; k < d->cache_count; k++) {
        bridge br;
        if (!plan_bridge(d, k, need, &br) || br.fresh == 0 || br.fresh >= need / 2)
            continue;
        if (n < BRIDGE_TRIES)
            best[n++] = br;
        else if (br.fresh < best[n - 1].fresh)
            best[n - 1] = br;
        else
            continue;
        for (size_t at = n - 1; at > 0 && best[at - 1].fresh > best[at].fresh; at--) {
            bridge t = best[at];
            best[at] = best[at - 1];
            best[at - 1] = t;
        }
    }
    for (size_t c = 0; c < n; c++) {
        if (!map_holes(d, &best[c]))
            continue;
        block_start(b, best[c].parts[0].p);
        *old_to = 0;
        for (uint32_t i = 0; i < best[c].nparts; i++) {
            const part *pt = &best[c].parts[i];
            if (pt->fresh) {
                add_segment(b, pt->size, fresh_vma_id());
            } else {
                take_span(d, pt->p, pt->size, b);
                *old_to = b->size; /* old data ends with the last piece at most */
            }
        }
        d->stats.extended++;
        d->stats.cache_hits++;
        return true;
    }
    return false;
}

/* A block of need bytes where cached pieces lie: on a stretch of them, on pieces with fresh
 * pages in the holes between and after them, or on a run with fresh pages mapped right below
 * it (MAP_FIXED_NOREPLACE: only where nothing is mapped; the kernel's top-down placement
 * leaves the space below the lowest mapping free). *old_from and *old_to: the part that may
 * hold old data. Under the domain's lock; false if none works. */
static bool take_in_place(large_domain *d, size_t need, large_block *b, size_t *old_from,
                          size_t *old_to) {
    block_start(b, NULL);
    run r = {0};
    if (best_stretch(d, need, &r)) {
        b->p = r.p;
        take_span(d, r.p, need, b);
        *old_from = 0;
        *old_to = b->size;
        d->stats.in_place++;
        d->stats.cache_hits++;
        return true;
    }
    *old_from = 0;
    if (take_bridged(d, need, b, old_to)) /* writes *b only when it succeeds */
        return true;
    /* The bridge's plans already end above a run when fresh pages are under half the block;
     * here a run is extended below, or above by more. */
    run runs[2];
    size_t n = largest_runs(d, runs, 2);
    for (size_t k = 0; k < n; k++) {
        r = runs[k];
        if (r.size >= need || r.count >= LARGE_SEGS) /* too many pieces for one block */
            continue;
        size_t miss = need - r.size;
        if ((uintptr_t)r.p > miss && pm_os_map_at(r.p - miss, miss)) {
            zone_mapped(d, r.p - miss, miss);
            b->p = r.p - miss;
            add_segment(b, miss, fresh_vma_id());
            take_span(d, r.p, r.size, b);
            *old_from = miss;
            *old_to = b->size;
        } else if (r.p + r.size + miss > r.p && pm_os_map_at(r.p + r.size, miss)) {
            zone_mapped(d, r.p + r.size, miss);
            b->p = r.p;
            take_span(d, r.p, r.size, b);
            add_segment(b, miss, fresh_vma_id());
            *old_from = 0;
            *old_to = r.size;
        } else {
            continue;
        }
        d->stats.extended++;
        d->stats.cache_hits++;
        return true;
    }
    return false;
}

static bool huge_ok = true; /* no block of HUGE_MIN freed yet, or the last one filled: atomic */

/* Whether the program filled block b: HUGE_SAMPLES pages spread over it all resident. */
static bool block_filled(const large_block *b) {
    size_t step = b->size / HUGE_SAMPLES;
    for (size_t k = 0; k < HUGE_SAMPLES; k++)
        if (!pm_os_page_resident(b->p + k * step + step / 2))
            return false;
    return true;
}

static char *map_fresh(size_t size, size_t align, bool huge) {
    if (huge) {
        char *p = pm_os_map_aligned(size, HUGE_PAGE);
        if (p != NULL)
            pm_os_hugepage(p, size);
        return p;
    }
    return align == PM_PAGE_SIZE ? pm_os_map(size) : pm_os_map_aligned(size, align);
}

/* Records a built block as live; false (the block given back to the cache) if the table
 * cannot grow. Under the domain's lock. */
static bool register_locked(large_domain *d, large_block *b) {
    for (uint32_t i = 0; i < b->nseg; i++)
        if (b->seg[i].vma == 0)
            b->seg[i].vma = fresh_vma_id();
    if (!table_reserve(d)) {
        cache_segments(d, b, pm_os_now_ms());
        cache_trim(d, cache_budget(d));
        return false;
    }
    table_insert(d, b);
    d->stats.nalloc++;
    d->live_bytes += b->size;
    if (d->live_bytes > d->peak_live)
        d->peak_live = d->live_bytes;
    cache_trim(d, cache_budget(d));
    return true;
}

/* ---- public face ---------------------------------------------------------------------------- */

/* The domain this thread allocates from, chosen at its first large call: threads take the
 * domains in turn. (Its heap's would not do: a thread that allocates only large blocks never
 * makes one.) Stored plus one, so that 0 means not chosen. */
static PM_TLS uint8_t my_domain_plus_one;
static uint32_t threads_seen;

static large_domain *my_domain(void) {
    unsigned k = my_domain_plus_one;
    if (PM_UNLIKELY(k == 0)) {
        k = 1 + __atomic_fetch_add(&threads_seen, 1, __ATOMIC_RELAXED) % PM_LARGE_DOMAINS;
        __atomic_fetch_or(&domains_drawn, 1u << (k - 1), __ATOMIC_RELEASE);
        my_domain_plus_one = (uint8_t)k;
    }
    return &domains[k - 1];
}

/* The domain whose table holds p, locked, with p's entry in *e; NULL (nothing locked) if no
 * domain holds it. The caller's own domain first: a block is usually freed where it was made.
 * One lock at a time, so that no order between domains is needed. */
static large_domain *lock_holder(uintptr_t p, large_entry **e) {
    unsigned first = domain_index(my_domain());
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++) {
        if (!domain_drawn((first + k) % PM_LARGE_DOMAINS))
            continue;
        large_domain *d = &domains[(first + k) % PM_LARGE_DOMAINS];
        pm_lock(domain_lock(d));
        if ((*e = table_find(d, p)) != NULL)
            return d;
        pm_unlock(domain_lock(d));
    }
    return NULL;
}

void *pm_large_alloc(size_t size, size_t align, bool zero) {
    if (align < PM_PAGE_SIZE)
        align = PM_PAGE_SIZE;
    size_t need = page_round(size ? size : 1); /* even 0 bytes get a unique block */
    if (need < size || need + align < need)
        return NULL;
    bool huge = need >= HUGE_MIN && need + HUGE_PAGE > need && align <= HUGE_PAGE &&
                pm_opt.huge_pages && __atomic_load_n(&huge_ok, __ATOMIC_RELAXED);
    if (huge)
        need = (need + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1); /* whole huge pages */
    large_domain *d = my_domain();
    large_block b;
    size_t old_from = 0, old_to = 0; /* the part of the block that may hold old data */
    int saved = errno; /* a refused mremap on the way to success must not show */
    bool built = false;
    /* A block built from the cache or the zone is registered under the same lock hold: two
     * holds a malloc made iobuf's two threads wait on each other a third more often. */
    if (align == PM_PAGE_SIZE) {
        pm_lock(domain_lock(d));
        built = take_in_place(d, need, &b, &old_from, &old_to);
        if (!built && !huge) {
            char *p = zone_take(d, need);
            if (p != NULL) {
                block_start(&b, p);
                add_segment(&b, need, 0);
                built = true;
            }
        }
        bool registered = built && register_locked(d, &b);
        pm_unlock(domain_lock(d));
        if (built && !registered)
            return NULL;
    }
    if (!built) {
        char *p = map_fresh(need, align, huge);
        if (p == NULL && pm_large_release_cache() > 0) /* the cache held what the OS lacks */
            p = map_fresh(need, align, huge);
        if (p == NULL)
            return NULL;
        block_start(&b, p);
        add_segment(&b, need, 0);
        pm_lock(domain_lock(d));
        bool registered = register_locked(d, &b);
        pm_unlock(domain_lock(d));
        if (!registered)
            return NULL;
    }
    /* The block is live and ours alone until we return it: zeroed outside the lock. */
    if (zero && old_from < min_size(old_to, size)) /* the rest is fresh, hence zero */
        memset(b.p + old_from, 0, min_size(old_to, size) - old_from);
    errno = saved;
    return b.p;
}

bool pm_large_free(void *p) {
    uint64_t now = pm_os_now_ms();
    large_entry *e;
    large_domain *d = lock_holder((uintptr_t)p, &e);
    if (d == NULL)
        return false;
    large_block b;
    block_copy(&b, &e->b);
    table_remove(d, e);
    if (b.size >= HUGE_MIN && pm_opt.huge_pages) /* 8 mincore calls: only when they matter */
        __atomic_store_n(&huge_ok, block_filled(&b), __ATOMIC_RELAXED);
    remember_freed(d, p);
    d->stats.nfree++;
    cache_expire(d, now, false); /* before live shrinks: the peak then keeps this block's bytes */
    d->live_bytes -= b.size;
    cache_segments(d, &b, now);
    cache_trim(d, cache_budget(d));
    pm_unlock(domain_lock(d));
    return true;
}

bool pm_large_was_freed(const void *p) {
    if (p == NULL)
        return false;
    bool freed = false, live = false;
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++) {
        if (!domain_drawn(k))
            continue;
        large_domain *d = &domains[k];
        pm_lock(domain_lock(d));
        for (size_t i = 0; i < FREED_RING && !freed; i++)
            freed = d->freed_ring[i] == (uintptr_t)p;
        live = live || table_find(d, (uintptr_t)p) != NULL;
        pm_unlock(domain_lock(d));
    }
    return freed && !live;
}

size_t pm_large_usable(const void *p) {
    large_entry *e;
    large_domain *d = lock_holder((uintptr_t)p, &e);
    if (d == NULL)
        return 0;
    size_t n = e->b.size;
    pm_unlock(domain_lock(d));
    return n;
}

/* A growing block takes the cached pieces that follow it in memory (the rest of a piece split
 * by an earlier request, typically): pages already mapped and faulted in, so it grows in place
 * with no system call. Under the domain's lock. */
static void absorb_cached_neighbours(large_domain *d, large_block *b, size_t need) {
    while (b->size < need) {
        segment *last = &b->seg[b->nseg - 1];
        size_t i = cache_at_or_above(d, b->p + b->size);
        if (i == d->cache_count || d->cache[i].p != b->p + b->size ||
            (d->cache[i].vma != last->vma && b->nseg == LARGE_SEGS))
            return;
        uint32_t vma = d->cache[i].vma;
        range r = cache_take(d, i, need - b->size);
        d->live_bytes += r.size;
        if (vma == last->vma) { /* one mapping: the segment grows */
            last->size += r.size;
            b->size += r.size;
        } else {
            add_segment(b, r.size, vma);
        }
    }
}

/* The block's pages from byte `keep` on go to the cache (a shrink). Under the domain's lock. */
static void release_tail(large_domain *d, large_block *b, size_t keep, uint64_t now) {
    size_t off = 0;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < b->nseg; i++) {
        segment s = b->seg[i];
        if (off + s.size <= keep) {
            kept = i + 1;
        } else if (off < keep) { /* this segment is cut */
            cache_insert(d, b->p + keep, off + s.size - keep, s.vma, now);
            b->seg[i].size = keep - off;
            kept = i + 1;
        } else {
            cache_insert(d, b->p + off, s.size, s.vma, now);
        }
        off += s.size;
    }
    d->live_bytes -= b->size - keep;
    b->nseg = kept;
    b->size = keep;
}

/* Grows a block of several segments (mremap needs one VMA): a new mapping of need bytes is
 * reserved, the segments move into it (no copy) and the last one is extended there to the new
 * size, so the block keeps its number of segments. A segment the kernel will not move is
 * copied. NULL if there is no new mapping. Under the domain's lock. */
static char *grow_by_moving(large_domain *d, large_block *b, size_t need) {
    char *q = pm_os_map(need);
    if (q == NULL)
        return NULL;
    size_t off = 0;
    for (uint32_t i = 0; i < b->nseg; off += b->seg[i++].size) {
        bool last = i + 1 == b->nseg;
        size_t size = b->seg[i].size, moved_size = last ? need - off : size;
        if (pm_os_move(b->p + off, size, q + off, moved_size)) {
            zone_unmapped(d, b->p + off, size);
            b->seg[i].vma = fresh_vma_id();
        } else { /* copied into the new mapping: its VMA now (the ids only guide merging) */
            memcpy(q + off, b->p + off, size);
            give_back(d, b->p + off, size);
            b->seg[i].vma = fresh_vma_id();
        }
        b->seg[i].size = moved_size;
    }
    return q;
}

/* What a block that must move for need bytes gets: half as much again, so that a buffer grown
 * a little at a time (a vector, a string builder, a file read in chunks) moves a logarithmic
 * number of times rather than at every call. Untouched room costs address space, not memory.
 * need itself when the sum would overflow. */
static size_t room_to_grow(size_t need) {
    size_t want = page_round(need + need / 2);
    return want > need ? want : need;
}

enum move_result { MOVE_NONE, MOVE_DONE, MOVE_ABANDONED };

/* A block that cannot grow where it lies moves into cached pages, its bytes copied: those
 * pages are resident, and copying one costs a fraction of a fresh page's fault and zeroing
 * (1-11 us a page on the guests we measure on), which mremap would leave the program to pay
 * for every page of its growth. realloc growing four buffers to up to 32 MiB faulted 158,000
 * pages that way, where tcmalloc, reusing freed memory, faulted 44,000.
 * The copy runs outside the domain's lock (tens of MiB must not stall other threads' large calls):
 * the stretch is out of the cache and not yet in the table meanwhile, so nobody else sees it.
 * Called and returns under the domain's lock. MOVE_NONE: no cached stretch of want bytes, nothing
 * changed. MOVE_DONE: *q is the moved block. MOVE_ABANDONED: the table could not take the new
 * block (its pages went back to the cache) and the caller's entry pointer may be stale. */
static enum move_result move_into_cache(large_domain *d, char *p, large_entry *e,
                                        const large_block *old,
                                        size_t want, uint64_t now, char **q) {
    run r;
    if (!best_stretch(d, want, &r))
        return MOVE_NONE;
    large_block nb;
    block_start(&nb, r.p);
    take_span(d, r.p, want, &nb);
    block_copy(&e->b, old); /* with the neighbours it absorbed */
    d->live_bytes += nb.size;
    if (d->live_bytes > d->peak_live)
        d->peak_live = d->live_bytes;
    pm_unlock(domain_lock(d));
    memcpy(nb.p, p, old->size);
    pm_lock(domain_lock(d));
    if (!table_reserve(d)) {
        d->live_bytes -= nb.size;
        cache_segments(d, &nb, now);
        return MOVE_ABANDONED;
    }
    /* Found unless the program freed p while it was being reallocated (its race): then
     * there is nothing left to release, and the new block is still a valid one. */
    e = table_find(d, (uintptr_t)p);
    if (e != NULL) {
        large_block ob;
        block_copy(&ob, &e->b);
        table_remove(d, e);
        remember_freed(d, p); /* a free of the old address is a double free */
        d->live_bytes -= ob.size;
        cache_segments(d, &ob, now);
    }
    table_insert(d, &nb);
    d->stats.nremap++;
    d->stats.moved_to_cache++;
    *q = nb.p;
    return MOVE_DONE;
}

/* Grows a block by fresh pages right after it, moving nothing; false if they are taken. */
static bool grow_where_it_lies(large_domain *d, large_block *b, size_t need) {
    size_t more = need - b->size;
    if (b->nseg == 1) {
        if (pm_os_remap(b->p, b->size, need, false) == NULL)
            return false;
        zone_mapped(d, b->p + b->size, more);
        b->seg[0].size = need;
        b->size = need;
        return true;
    }
    if (b->nseg == LARGE_SEGS || !pm_os_map_at(b->p + b->size, more))
        return false;
    zone_mapped(d, b->p + b->size, more);
    add_segment(b, more, fresh_vma_id());
    return true;
}

/* Resizes a large block: in place (cached neighbours, fresh pages after it), else into cached
 * pages by a copy, else by moving its pages (mremap). NULL with the block untouched if it
 * cannot; the caller then falls back to malloc + copy. */
void *pm_large_realloc(void *p, size_t size) {
    size_t need = page_round(size);
    if (need < size)
        return NULL;
    uint64_t now = pm_os_now_ms();
    int saved = errno;
    large_entry *e;
    large_domain *d = lock_holder((uintptr_t)p, &e);
    if (d == NULL)
        return NULL;
    /* Grow first (it moves entries), so that the insert below cannot fail. */
    e = table_reserve(d) ? table_find(d, (uintptr_t)p) : NULL;
    if (e == NULL) {
        pm_unlock(domain_lock(d));
        return NULL;
    }
    large_block b;
    block_copy(&b, &e->b);
    if (need > b.size)
        absorb_cached_neighbours(d, &b, need);
    char *q = p;
    if (need < b.size / 2) {
        release_tail(d, &b, need, now); /* shrinks a lot: the rest serves other requests */
    } else if (need > b.size) {
        size_t old_size = b.size, want = room_to_grow(need);
        /* Resident cached pages first, even before fresh pages right after the block: a
         * copy into pages already there is cheaper than faulting in the growth (realloc, on
         * the guest of 2026-12-02: 1.4 s and 48,500 faults that way, 1.6-2.9 s and 72,000-
         * 78,000 trying fresh pages in place first). */
        enum move_result moved = move_into_cache(d, p, e, &b, want, now, &q);
        if (moved != MOVE_NONE) {
            if (d->live_bytes > d->peak_live)
                d->peak_live = d->live_bytes;
            cache_trim(d, cache_budget(d));
            pm_unlock(domain_lock(d));
            errno = saved;
            return moved == MOVE_DONE ? q : NULL;
        }
        if (grow_where_it_lies(d, &b, need)) {
            d->stats.nremap++;
            d->live_bytes += need - old_size;
        } else {
            /* mremap needs one VMA: a block of several moves segment by segment. The room is
             * address space only, but under a tight RLIMIT_AS the request alone may fit. */
            q = b.nseg == 1 ? pm_os_remap(p, b.size, want, true) : grow_by_moving(d, &b, want);
            if (q == NULL && want > need) {
                want = need;
                q = b.nseg == 1 ? pm_os_remap(p, b.size, want, true) : grow_by_moving(d, &b, want);
            }
            if (q != NULL && b.nseg == 1 && q != p) /* moved: where it lay is free now */
                zone_unmapped(d, p, b.size);
            else if (q == p)
                zone_mapped(d, p + old_size, want - old_size);
            if (q != NULL) {
                d->stats.nremap++;
                d->live_bytes += want - old_size;
                if (b.nseg == 1)
                    b.seg[0] = (segment){want, fresh_vma_id()};
                b.size = want;
                b.p = q;
            }
        }
    }
    if (q != NULL && q != p) {
        table_remove(d, e);
        table_insert(d, &b);
        remember_freed(d, p); /* a free of the old address is a double free */
    } else {
        block_copy(&e->b, &b); /* it may have absorbed neighbours even when it could not grow */
    }
    if (d->live_bytes > d->peak_live)
        d->peak_live = d->live_bytes;
    cache_trim(d, cache_budget(d));
    pm_unlock(domain_lock(d));
    errno = saved;
    return q;
}

/* Drops cached pieces older than the purge delay and retries failed unmaps. Called from
 * outside every other allocator lock. */
/* Called only when the purge delay has passed (heap.c), so it simply takes the lock: no
 * unlocked peek at counts that other threads change under it. */
void pm_large_expire(uint64_t now) {
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++) {
        if (!domain_drawn(k))
            continue;
        large_domain *d = &domains[k];
        pm_lock(domain_lock(d));
        cache_expire(d, now, false);
        retry_pending(d);
        pm_unlock(domain_lock(d));
    }
}

size_t pm_large_release_cache(void) {
    size_t bytes = 0;
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++) {
        if (!domain_drawn(k))
            continue;
        large_domain *d = &domains[k];
        pm_lock(domain_lock(d));
        bytes += cache_expire(d, 0, true) + retry_pending(d);
        pm_unlock(domain_lock(d));
    }
    return bytes;
}

size_t pm_large_trim(void) { return pm_large_release_cache(); }

/* A live block's segments add up to its size, and no cached piece overlaps it. */
static bool block_consistent(large_domain *d, const large_entry *e) {
    const large_block *b = &e->b;
    if ((uintptr_t)b->p != e->ptr || b->nseg == 0 || b->nseg > LARGE_SEGS)
        return false;
    size_t sum = 0;
    for (uint32_t i = 0; i < b->nseg; i++)
        sum += b->seg[i].size;
    if (sum != b->size)
        return false;
    size_t i = cache_at_or_above(d, b->p);
    bool below_clear = i == 0 || d->cache[i - 1].p + d->cache[i - 1].size <= b->p;
    bool above_clear = i == d->cache_count || d->cache[i].p >= b->p + b->size;
    return below_clear && above_clear;
}

/* For the tests: each domain's cache in address order with no overlap and its byte count
 * right, every live block findable at its address and consistent, and the live bytes their
 * sum. */
bool pm_large_consistent(void) {
    bool ok = true;
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++) {
        if (!domain_drawn(k))
            continue;
        large_domain *d = &domains[k];
        pm_lock(domain_lock(d));
        size_t bytes = 0, found = 0;
        for (size_t i = 0; i < d->cache_count; i++) {
            bytes += d->cache[i].size;
            if (i > 0 && d->cache[i - 1].p + d->cache[i - 1].size > d->cache[i].p)
                ok = false;
        }
        size_t live = 0;
        for (size_t i = 0; d->table != NULL && i < d->table_cap; i++) {
            const large_entry *e = &d->table[i];
            if (e->ptr == 0)
                continue;
            found += table_find(d, e->ptr) == e;
            live += e->b.size;
            ok = ok && block_consistent(d, e);
        }
        ok = ok && bytes == d->cache_bytes && found == d->live_count && live == d->live_bytes;
        pm_unlock(domain_lock(d));
    }
    return ok;
}

/* The domains' figures, added up. */
void pm_large_get_stats(pm_large_stats *out) {
    *out = (pm_large_stats){0};
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++) {
        if (!domain_drawn(k))
            continue;
        large_domain *d = &domains[k];
        pm_lock(domain_lock(d));
        const pm_large_stats *s = &d->stats;
        out->nalloc += s->nalloc;
        out->nfree += s->nfree;
        out->nremap += s->nremap;
        out->cache_hits += s->cache_hits;
        out->in_place += s->in_place;
        out->extended += s->extended;
        out->moved_to_cache += s->moved_to_cache;
        out->unmap_failures += s->unmap_failures;
        out->pending_bytes += s->pending_bytes;
        out->live_blocks += d->live_count;
        out->live_bytes += d->live_bytes;
        out->cached_bytes += d->cache_bytes;
        out->cached_pieces += d->cache_count;
        out->mapped_bytes += d->live_bytes + d->cache_bytes + s->pending_bytes;
        out->peak_live += d->peak_live;
        out->budget += cache_budget(d);
        pm_unlock(domain_lock(d));
    }
}

/* fork: every domain's lock held across it, taken in one order (no thread holds two) */
void pm_large_fork_prepare(void) {
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++)
        pm_lock(&domain_locks[k].lock);
}

void pm_large_fork_parent(void) {
    for (unsigned k = PM_LARGE_DOMAINS; k-- > 0;)
        pm_unlock(&domain_locks[k].lock);
}

void pm_large_fork_child(void) {
    for (unsigned k = 0; k < PM_LARGE_DOMAINS; k++)
        pm_lock_reinit(&domain_locks[k].lock);
}
