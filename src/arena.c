/*
 * arena.c: arenas (4 MiB-aligned regions from the OS) and the pools carved out of them.
 *
 * Everything here runs under pm_arena_lock, on the slow path: pool.c comes here only when a
 * class has no pool with a free block left (acquire) or a pool became empty (release).
 *
 * Geometry (one source of truth, internal.h): every arena is a whole PM_ARENA_ALIGN slot of
 * address space, mapped whole, so that the byte map never calls ours a slot in which the
 * kernel could place someone else's mapping (issue 7.2). POOLMALLOC_ARENA_SIZE only says how
 * many of its units are used; the rest is never touched and costs no memory.
 *
 * Policy, as pymalloc's: new pools come from the arena with the fewest free units that fits,
 * so that the emptiest arenas drain and can be returned whole. Units a released pool gave back
 * stay resident for at least the purge delay (a program that frees and allocates again should
 * not pay page faults for it), then are purged with madvise; an arena that is entirely free is
 * unmapped once more than POOLMALLOC_ARENA_RETAIN such arenas exist.
 *
 * Purge ticks come at most once per purge delay (on a pool's acquire or release, and from the
 * heaps' slow paths). A unit freed since the last tick is young: the next tick only ages it,
 * and the tick after that purges it if it is still free. So a unit stays resident between one
 * and two purge delays after its release, however long its arena has held other dirty units.
 * (Timing the arena from its oldest dirty unit purged units freed a moment before with it: a
 * program that tears down and rebuilds 32 MB every 30 ms re-faulted 30 MB every other round.)
 *
 * Backoff. A purge is a bet that the program will not need the memory soon; a program that
 * frees a working set and builds the next one over a few hundred milliseconds loses it every
 * time (frag: 183,000 page faults at 50 ms, 118,000 at 1 s; glibc, which never purges there,
 * 113,000). So the bet is scored: a unit purged and then taken again by a new pool is a lost
 * one. At a tick where at least a quarter of the last purge (and 1 MiB) came back that way,
 * ticks space out twice as much (up to PURGE_BACKOFF_MAX doublings); at a tick after a purge
 * of which nothing came back, they close in again. A program that frees for good is never
 * penalised: its memory goes back after one to two purge delays times the backoff, which is
 * zero unless purging was already wrong for it.
 *
 * The delay is 250 ms by default. At 50 ms the backoff came too late for a program whose
 * phases last a few hundred milliseconds: frag still purged 99 MB in three ticks and took all
 * of it back (137,000-141,000 faults against 118,000; CPU time 15% higher, medians of 5);
 * jemalloc waits 10 s. What the longer delay costs is an idle program's freed memory staying
 * resident for 250-500 ms instead of 50-100 ms; peak RSS of the comparison's workloads did not
 * move by more than 2% (scripts/results/issue10-purge-delay-2026-12-03.md).
 */
#include "internal.h"

PM_BIG_BSS uint8_t pm_arena_map[PM_ARENA_MAP_LEN];
pthread_mutex_t pm_arena_lock = PM_LOCK_INITIALIZER;
pm_arena *pm_arenas;
pm_global_stats pm_gstats;

pm_pool pm_empty_pool = {.state = PM_POOL_FREE};
uint32_t pm_arena_units = PM_UNITS_MAX;

static uint64_t last_purge_ms;
static uint32_t purged_units;  /* what the last purging tick purged */
static uint32_t retaken_units; /* purged units taken again since the last tick */

#define PURGE_BACKOFF_MAX 4       /* ticks at most 16 purge delays apart (4 s by default) */
#define RETAKEN_MIN (64u)         /* units (1 MiB): fewer taken back never back off */

/* largest_pool_units of the configured arena size: no pool, grown or not (pool.c), is larger. */
uint32_t pm_pool_max_units = PM_POOL_MAX_UNITS;

/* The largest pool that fits an arena of `units` units, aligned to its size after the header:
 * a class whose pool would be larger gets this size instead, so that no arena size leaves a
 * class unservable (with 1 MiB arenas, the 128 KiB class gets 512 KiB pools of 4 blocks). */
static unsigned largest_pool_units(unsigned units) {
    unsigned n = PM_POOL_MAX_UNITS;
    while (n > 1 && (PM_HEADER_UNITS + n - 1) / n * n + n > units)
        n /= 2;
    return n;
}

void pm_arena_init(void) {
    size_t size = pm_opt.arena_size ? pm_opt.arena_size : PM_ARENA_ALIGN;
    pm_arena_units = (uint32_t)(size / PM_UNIT_SIZE);
    if (pm_arena_units < PM_ARENA_MIN_UNITS || pm_arena_units > PM_UNITS_MAX)
        pm_arena_units = PM_UNITS_MAX;
    unsigned max_units = largest_pool_units(pm_arena_units);
    pm_pool_max_units = max_units;
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++)
        if (pm_class_units[c] > max_units)
            pm_class_units[c] = (uint8_t)max_units;
}

/* ---- unit bitmaps --------------------------------------------------------------------------- */

static bool bit_get(const uint64_t *map, unsigned i) { return (map[i / 64] >> (i % 64)) & 1; }
static void bit_set(uint64_t *map, unsigned i) { map[i / 64] |= (uint64_t)1 << (i % 64); }
static void bit_clear(uint64_t *map, unsigned i) { map[i / 64] &= ~((uint64_t)1 << (i % 64)); }

/* First run of n free units aligned to n (pools of n units start at a multiple of n, which
 * keeps the arena from fragmenting into odd gaps), or -1. n is a power of two up to 64, so an
 * aligned run never crosses a word of the map: a word is searched with a few shifts and ands
 * (bit j survives if units j..j+n-1 are all free) instead of unit by unit, which cost 1,500
 * instructions per pool acquired in randslot (10% of its instructions). The header's units
 * and those past nunits are never marked free, so no run can include them. */
static int find_free_run(const pm_arena *a, unsigned n) {
    uint64_t aligned = n == 64 ? 1 : ~(uint64_t)0 / (((uint64_t)1 << n) - 1); /* bits 0, n, 2n.. */
    for (unsigned w = 0; w < PM_UNITS_MAX / 64; w++) {
        uint64_t run = a->free_map[w];
        for (unsigned s = 1; s < n && run; s <<= 1)
            run &= run >> s;
        run &= aligned;
        if (run)
            return (int)(w * 64 + (unsigned)__builtin_ctzll(run));
    }
    return -1;
}

/* ---- the placement index ------------------------------------------------------------------- */
/* Every arena's free unit count beside its address, packed: the search for a pool's units
 * reads this array, four arenas a line, and an arena's header only when it is a better
 * candidate than the best so far. It used to walk the list of headers: a cache miss per arena
 * per pool acquired, which in randslot (150 MB of small blocks in 40 arenas, pools acquired and
 * released all the time) was a fifth of the process's last-level cache misses (cachegrind).
 * Under pm_arena_lock; mapped from the OS and doubled as arenas come. */
typedef struct arena_entry {
    pm_arena *arena;
    uint32_t nfree;
} arena_entry;

static arena_entry *arena_index;
static uint32_t arena_count, arena_capacity;

static bool index_add(pm_arena *a) {
    if (arena_count == arena_capacity) {
        uint32_t capacity = arena_capacity ? arena_capacity * 2 : 256;
        arena_entry *bigger = pm_os_map((size_t)capacity * sizeof *bigger);
        if (bigger == NULL)
            return false;
        if (arena_count)
            memcpy(bigger, arena_index, (size_t)arena_count * sizeof *bigger);
        if (arena_index != NULL)
            pm_os_unmap(arena_index, (size_t)arena_capacity * sizeof *arena_index);
        arena_index = bigger;
        arena_capacity = capacity;
    }
    a->index = arena_count;
    arena_index[arena_count++] = (arena_entry){a, a->nfree};
    return true;
}

/* index: the removed arena's entry, read before its header was unmapped. */
static void index_remove(uint32_t index) {
    arena_entry last = arena_index[--arena_count];
    arena_index[index] = last;
    if (index != arena_count)
        last.arena->index = index;
}

/* Under pm_arena_lock: the index holds every arena once, each with its free count. */
void pm_arena_check_index(void) {
    uint32_t n = 0;
    for (pm_arena *a = pm_arenas; a; a = a->next, n++)
        if (a->index >= arena_count || arena_index[a->index].arena != a ||
            arena_index[a->index].nfree != a->nfree)
            pm_fatal("debug: arena %p: placement index entry %u wrong", (void *)a, a->index);
    if (n != arena_count)
        pm_fatal("debug: %u arenas, %u entries in the placement index", n, arena_count);
}

static void set_nfree(pm_arena *a, uint32_t nfree) {
    a->nfree = nfree;
    arena_index[a->index].nfree = nfree;
}

/* ---- arenas ---------------------------------------------------------------------------------- */

static pm_arena *arena_create(void) {
    pm_arena *a = pm_os_map_aligned(PM_ARENA_ALIGN, PM_ARENA_ALIGN);
    if (a == NULL)
        return NULL;
    a->nunits = pm_arena_units; /* every unit's map entry is 0 already: no pool (I3) */
    for (unsigned u = PM_HEADER_UNITS; u < a->nunits; u++)
        bit_set(a->free_map, u);
    a->nfree = a->nunits - (uint32_t)PM_HEADER_UNITS;
    if (!index_add(a)) {
        pm_os_unmap(a, PM_ARENA_ALIGN);
        return NULL;
    }
    a->next = pm_arenas;
    if (pm_arenas)
        pm_arenas->prev = a;
    pm_arenas = a;
    __atomic_store_n(&pm_arena_map[(uintptr_t)a >> PM_ARENA_SHIFT], 1, __ATOMIC_RELEASE);
    pm_gstats.arenas_mapped++;
    /* Counted as what the arena may use: the rest of the slot is address space only. */
    pm_gstats.arena_bytes += (size_t)a->nunits * PM_UNIT_SIZE;
    return a;
}

/* Unmapped only if the kernel agrees: until then it stays registered and usable. */
static bool arena_destroy(pm_arena *a) {
    pm_arena *next = a->next, *prev = a->prev;
    size_t usable = (size_t)a->nunits * PM_UNIT_SIZE; /* read before the unmap */
    uint32_t index = a->index;
    __atomic_store_n(&pm_arena_map[(uintptr_t)a >> PM_ARENA_SHIFT], 0, __ATOMIC_RELAXED);
    if (!pm_os_unmap(a, PM_ARENA_ALIGN)) {
        __atomic_store_n(&pm_arena_map[(uintptr_t)a >> PM_ARENA_SHIFT], 1, __ATOMIC_RELAXED);
        pm_gstats.unmap_failures++;
        return false;
    }
    index_remove(index);
    if (prev)
        prev->next = next;
    else
        pm_arenas = next;
    if (next)
        next->prev = prev;
    pm_gstats.arenas_unmapped++;
    pm_gstats.arena_bytes -= usable;
    return true;
}

static bool arena_is_empty(const pm_arena *a) {
    return a->nfree == a->nunits - (uint32_t)PM_HEADER_UNITS;
}

/* The fullest arena that has room for n units: pymalloc's rule, so empty arenas can go. */
static pm_arena *arena_for_pool(unsigned n, int *unit) {
    pm_arena *best = NULL;
    uint32_t best_nfree = 0;
    int best_unit = -1;
    if (PM_DEBUG)
        pm_arena_check_index();
    for (uint32_t i = 0; i < arena_count; i++) {
        const arena_entry *e = &arena_index[i];
        if (e->nfree < n || (best && e->nfree >= best_nfree))
            continue;
        int u = find_free_run(e->arena, n);
        if (u >= 0) {
            best = e->arena;
            best_nfree = e->nfree;
            best_unit = u;
        }
    }
    if (best == NULL && (best = arena_create()) != NULL)
        best_unit = find_free_run(best, n);
    *unit = best_unit;
    return best_unit >= 0 ? best : NULL;
}

/* ---- units for pools ---------------------------------------------------------------------------- */

static void purge_if_due(uint64_t now);

pm_arena *pm_arena_take_units(unsigned n, unsigned *unit) {
    int u;
    pm_arena *a = arena_for_pool(n, &u);
    if (a == NULL)
        return NULL;
    for (unsigned k = 0; k < n; k++) {
        bit_clear(a->free_map, (unsigned)u + k);
        if (bit_get(a->purged_map, (unsigned)u + k)) { /* a purge that did not pay */
            bit_clear(a->purged_map, (unsigned)u + k);
            retaken_units++;
        }
        if (bit_get(a->dirty_map, (unsigned)u + k)) {
            bit_clear(a->dirty_map, (unsigned)u + k);
            bit_clear(a->young_map, (unsigned)u + k);
            a->ndirty--;
        }
    }
    set_nfree(a, a->nfree - n);
    *unit = (unsigned)u;
    purge_if_due(pm_os_now_ms());
    return a;
}

void pm_arena_give_units(pm_arena *a, unsigned unit, unsigned n, unsigned touched) {
    for (unsigned k = 0; k < n; k++) {
        bit_set(a->free_map, unit + k);
        if (k < touched && !bit_get(a->dirty_map, unit + k)) {
            bit_set(a->dirty_map, unit + k);
            a->ndirty++;
        }
        if (k < touched)
            bit_set(a->young_map, unit + k);
    }
    set_nfree(a, a->nfree + n);
    purge_if_due(pm_os_now_ms());
}

/* ---- purging ------------------------------------------------------------------------------- */

/* Purges a's dirty units, the young ones too when `all`, and ages the young ones that stay.
 * `scored`: a tick's purge, whose units are watched for being taken again (not pm_trim's). */
static size_t arena_purge(pm_arena *a, bool all, bool scored) {
    size_t bytes = 0;
    for (unsigned w = 0; w < PM_UNITS_MAX / 64; w++) {
        uint64_t due = a->dirty_map[w] & (all ? ~(uint64_t)0 : ~a->young_map[w]);
        a->young_map[w] = 0;
        a->dirty_map[w] &= ~due;
        if (scored)
            a->purged_map[w] |= due;
        while (due) { /* each run of set bits: one madvise */
            unsigned lo = (unsigned)__builtin_ctzll(due);
            uint64_t from_lo = due >> lo;
            unsigned len = ~from_lo == 0 ? 64 - lo : (unsigned)__builtin_ctzll(~from_lo);
            due &= len + lo >= 64 ? 0 : ~(uint64_t)0 << (lo + len);
            pm_os_purge((char *)a + (size_t)(w * 64 + lo) * PM_UNIT_SIZE, (size_t)len * PM_UNIT_SIZE);
            bytes += (size_t)len * PM_UNIT_SIZE;
            a->ndirty -= len;
        }
    }
    return bytes;
}

static bool arena_has_young(const pm_arena *a) {
    uint64_t any = 0;
    for (unsigned w = 0; w < PM_UNITS_MAX / 64; w++)
        any |= a->young_map[w];
    return any != 0;
}

/* At a tick: spaces the ticks out when the last purge came back, in again when none of it did. */
static void score_last_purge(void) {
    unsigned backoff = (unsigned)atomic_load_explicit(&pm_gstats.purge_backoff, memory_order_relaxed);
    if (retaken_units >= RETAKEN_MIN && retaken_units >= purged_units / 4) {
        if (backoff < PURGE_BACKOFF_MAX)
            backoff++;
    } else if (purged_units > 0 && retaken_units == 0 && backoff > 0) {
        backoff--;
    }
    atomic_store_explicit(&pm_gstats.purge_backoff, backoff, memory_order_relaxed);
    pm_gstats.purged_taken_bytes += (uint64_t)retaken_units * PM_UNIT_SIZE;
    retaken_units = 0;
}

/* One purge tick (or, when forced, everything now). An empty arena is returned to the OS once
 * nothing in it is young, beyond the POOLMALLOC_ARENA_RETAIN empty ones kept. */
static size_t purge_locked(uint64_t now, bool force) {
    if (!force)
        score_last_purge();
    size_t bytes = 0;
    long retain = pm_opt.arena_retain;
    long empty_kept = 0;
    bool all = force || pm_opt.purge_delay_ms == 0;
    for (pm_arena *a = pm_arenas, *next; a; a = next) {
        next = a->next;
        if (arena_is_empty(a) && (all || !arena_has_young(a))) {
            size_t resident = (size_t)a->ndirty * PM_UNIT_SIZE;
            if ((empty_kept >= retain || force) && arena_destroy(a)) {
                bytes += resident; /* resident memory returned */
                continue;
            }
            empty_kept++;
        }
        if (a->ndirty)
            bytes += arena_purge(a, all, !force);
        else
            memset(a->young_map, 0, sizeof a->young_map);
    }
    if (bytes) {
        pm_gstats.purged_bytes += bytes;
        pm_gstats.purges++;
    }
    if (!force)
        purged_units = (uint32_t)(bytes / PM_UNIT_SIZE);
    __atomic_store_n(&last_purge_ms, now, __ATOMIC_RELAXED);
    return bytes;
}

/* The purge delay, spaced out by the backoff. */
static uint64_t tick_interval(void) {
    return (uint64_t)pm_opt.purge_delay_ms
           << atomic_load_explicit(&pm_gstats.purge_backoff, memory_order_relaxed);
}

/* Called on every pool release: cheap unless the delay since the last purge has passed. */
static void purge_if_due(uint64_t now) {
    if (pm_opt.purge_delay_ms < 0 || now - last_purge_ms < tick_interval())
        return;
    purge_locked(now, false);
}

bool pm_arena_purge_due(uint64_t now) {
    return pm_opt.purge_delay_ms >= 0 &&
           now - __atomic_load_n(&last_purge_ms, __ATOMIC_RELAXED) >= tick_interval();
}

size_t pm_arena_purge(bool force) {
    pm_lock(&pm_arena_lock);
    size_t bytes = purge_locked(pm_os_now_ms(), force);
    pm_unlock(&pm_arena_lock);
    return bytes;
}

/* The heaps' tick: one per interval, however many threads saw it due (a second tick right
 * after the first would score a purge that had no time to come back). */
void pm_arena_tick(void) {
    pm_lock(&pm_arena_lock);
    purge_if_due(pm_os_now_ms());
    pm_unlock(&pm_arena_lock);
}
