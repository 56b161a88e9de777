/*
 * test-core.c: white-box tests of the allocator core's internals (size classes, the
 * divisibility test, arena geometry, pool detach/release, the thread lifecycle). Links the
 * core without the shim and includes internal.h.
 */
#include "internal.h" /* first: it brings config.h, which defines _GNU_SOURCE */

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

Test(sizeclass, every_size_gets_the_smallest_class_that_fits) {
    pm_free(pm_malloc(1)); /* initialise */
    for (size_t n = 1; n <= PM_MAX_CLASS_SIZE; n++) {
        unsigned c = pm_size_class(n);
        cr_assert(c >= 1 && c < PM_NUM_CLASSES, "size %zu: class %u", n, c);
        cr_assert_geq(pm_class_size[c], n, "size %zu: class %u holds %u", n, c, pm_class_size[c]);
        if (c > 1)
            cr_assert_lt(pm_class_size[c - 1], n, "size %zu fits class %u already", n, c - 1);
    }
}

Test(sizeclass, pools_hold_eight_blocks_and_waste_a_sixteenth_at_most) {
    pm_free(pm_malloc(1));
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        size_t bytes = (size_t)pm_class_units[c] * PM_UNIT_SIZE;
        cr_assert_geq(bytes / pm_class_size[c], 4, "class %u", c);
        cr_assert_leq((bytes % pm_class_size[c]) * 16, bytes, "class %u wastes too much", c);
        cr_assert_leq(pm_class_units[c], PM_POOL_MAX_UNITS);
    }
}

/* Both lookup tables and the clz formula above them give, for every size, the smallest class
 * that holds it. */
Test(sizeclass, every_size_maps_to_the_smallest_class_that_holds_it) {
    pm_free(pm_malloc(1));
    unsigned expected = 1;
    for (size_t n = 1; n <= PM_MAX_CLASS_SIZE; n++) {
        while (pm_class_size[expected] < n)
            expected++;
        cr_assert_eq(pm_size_class(n), expected, "size %zu", n);
        uint16_t line = n <= PM_SMALL_LOOKUP_MAX ? pm_line_of_small[n]
                                                 : pm_line_of_medium[(n + 127) >> 7];
        cr_assert_eq(line, pm_class_line(expected), "size %zu: the malloc table's line", n);
    }
}

/* I3: the multiply-and-compare test agrees with % for every offset of a real pool, including
 * the tail in front of start (negative offsets). */
Test(pool, divisibility_test_agrees_with_modulo) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        size_t size = pm_class_size[c] ? pm_class_size[c] : 16u * c;
        void *p = pm_malloc(size);
        pm_pool *pool = pm_pool_of(p);
        size_t span = (size_t)(pool->end - pool->start);
        size_t tail = (size_t)(pool->start - ((char *)pool->arena + (size_t)pool->first_unit * PM_UNIT_SIZE));
        for (size_t off = 0; off < span; off += 16)
            cr_assert_eq(pm_pool_is_block(pool, pool->start + off), off % pool->block_size == 0,
                         "class %u offset %zu", c, off);
        for (size_t k = 16; k <= tail; k += 16)
            cr_assert(!pm_pool_is_block(pool, pool->start - k), "class %u tail -%zu", c, k);
        pm_free(p);
    }
}

/* I3 in one compare: a pointer passes pm_pool_is_carved_block exactly when it is a block
 * boundary below the carve point, for every class (powers of two included, whose step is the
 * block size), at every carve point from none to all, and never for the tail in front. */
/* Pool growth (pool.c): a heap that takes many new pools of a class gets pools twice the size
 * if they hold fewer than 16 blocks; classes whose pools hold 16 blocks or more never grow. */
Test(pool, the_next_pool_doubles_after_64_pools_taken_if_it_holds_under_16_blocks) {
    pm_free(pm_malloc(1));
    pm_heap *heap = pm_thread_heap_get();
    unsigned big = pm_size_class(2048), small = pm_size_class(32);
    cr_assert_eq(pm_class_units[big], 1, "2 KiB blocks: 16 KiB pools of 8 blocks to begin with");
    const struct { uint16_t taken; unsigned units; } steps[] = {
        {0, 1}, {63, 1}, {64, 2}, {60000, 2}};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        heap->pools_taken[big] = steps[i].taken;
        cr_assert_eq(pm_pool_units_next(heap, big), steps[i].units, "%u pools taken",
                     steps[i].taken);
        heap->pools_taken[small] = steps[i].taken;
        cr_assert_eq(pm_pool_units_next(heap, small), 1, "32-byte blocks grew (%u taken)",
                     steps[i].taken);
    }
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) { /* never past an arena's largest pool */
        heap->pools_taken[c] = 60000;
        unsigned units = pm_pool_units_next(heap, c);
        cr_assert_leq(units, pm_pool_max_units, "class %u", c);
        cr_assert_geq(units, pm_class_units[c], "class %u", c);
        size_t blocks = (size_t)pm_class_units[c] * PM_UNIT_SIZE / pm_class_size[c];
        unsigned base = pm_class_units[c];
        unsigned expected = blocks < 16 && base * 2 <= pm_pool_max_units ? base * 2 : base;
        cr_assert_eq(units, expected, "class %u (%zu blocks a pool): %u units", c, blocks, units);
        heap->pools_taken[c] = 0;
    }
}

Test(pool, the_counts_that_grow_pools_halve_every_second) {
    pm_free(pm_malloc(1));
    pm_heap *heap = pm_thread_heap_get();
    unsigned c = pm_size_class(2048);
    heap->pools_taken[c] = 200;
    heap->pools_taken_halved_ms = 10000;
    pm_pool_growth_tick(heap, 10999);
    cr_assert_eq(heap->pools_taken[c], 200, "halved before a second went by");
    pm_pool_growth_tick(heap, 11000);
    cr_assert_eq(heap->pools_taken[c], 100);
    pm_pool_growth_tick(heap, 11500);
    cr_assert_eq(heap->pools_taken[c], 100);
    pm_pool_growth_tick(heap, 12000);
    cr_assert_eq(heap->pools_taken[c], 50);
    cr_assert_eq(pm_pool_units_next(heap, c), 1, "50 pools taken is not enough to grow");
}

/* End to end: the blocks a thread keeps taking come from larger pools in time, and every
 * block of them is a block (freed, reported nothing). */
Test(pool, a_thread_that_takes_many_pools_gets_larger_ones) {
    enum { N = 8192 };
    void **blocks = calloc(N, sizeof *blocks);
    unsigned c = pm_size_class(2048), largest = 0, n;
    for (n = 0; n < N && largest < 2; n++) {
        blocks[n] = pm_malloc(2048);
        cr_assert_not_null(blocks[n]);
        memset(blocks[n], 0x5a, 2048);
        pm_pool *pool = pm_pool_of(blocks[n]);
        cr_assert_eq(pool->cls, c);
        if (pool->units > largest)
            largest = pool->units;
    }
    cr_assert_eq(largest, 2, "2 KiB pools never grew to 2 units in %u blocks", n);
    pm_class_stats_t st;
    cr_assert_eq(pm_stats_get_class(c, &st), 0);
    cr_assert_eq(st.pool_bytes, 2 * PM_UNIT_SIZE, "the statistics give the largest pool");
    for (unsigned i = 0; i < n; i++)
        pm_free(blocks[i]);
    free(blocks);
}

Test(pool, the_carved_test_agrees_with_modulo_and_the_carve_point) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        void *p = pm_malloc(pm_class_size[c]);
        pm_pool *pool = pm_pool_of(p);
        pm_pool copy = *pool; /* a private copy: its carve point is ours to move */
        size_t span = (size_t)(copy.end - copy.start), d = copy.block_size;
        size_t tail = (size_t)(copy.start - ((char *)copy.arena + (size_t)copy.first_unit * PM_UNIT_SIZE));
        uint32_t points[] = {0, 1, 2, copy.capacity / 2, copy.capacity - 1, copy.capacity};
        for (size_t i = 0; i < sizeof points / sizeof points[0]; i++) {
            copy.carved_limit = pm_pool_carved_limit(&copy, points[i] * copy.block_size);
            for (size_t off = 0; off < span; off += 16)
                cr_assert_eq(pm_pool_is_carved_block(&copy, copy.start + off),
                             off % d == 0 && off / d < points[i],
                             "class %u, %u carved, offset %zu", c, points[i], off);
            for (size_t k = 16; k <= tail; k += 16)
                cr_assert(!pm_pool_is_carved_block(&copy, copy.start - k), "class %u tail -%zu", c, k);
        }
        pm_free(p);
    }
}

Test(arena, every_class_served_and_arena_slots_aligned) {
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        void *p = pm_malloc(pm_class_size[c] ? pm_class_size[c] : 16);
        cr_assert_not_null(p);
        pm_pool *pool = pm_pool_of(p);
        unsigned first = pool->first_unit, n = pool->units;
        cr_assert_geq(first, PM_HEADER_UNITS, "a pool overlaps the header");
        cr_assert_leq(first + n, pool->arena->nunits, "a pool runs past the arena's units");
        cr_assert_eq(first % n, 0, "pools are aligned to their size");
        cr_assert_eq((uintptr_t)pool->arena % PM_ARENA_ALIGN, 0);
        pm_free(p);
    }
}

/* The unit map is relative (internal.h, unit_offset): a unit no pool covers, in the header,
 * never used or given back, reads 0 and maps to its own slot, whose owner is NULL, so that
 * free rejects any pointer into it; a new arena's map needs no writing for that. */
static void *alloc_and_exit(void *arg) {
    return pm_malloc((size_t)(uintptr_t)arg);
}

static bool unit_is_free(const pm_arena *a, unsigned u) {
    return u >= PM_HEADER_UNITS && u < a->nunits && (a->free_map[u / 64] >> (u % 64) & 1);
}

/* Every unit of a: free ones map to their own ownerless slot, the others to their pool. */
static void check_unit_map(pm_arena *a, unsigned *uncovered, unsigned *covered) {
    for (unsigned u = 0; u < PM_UNITS_MAX; u++) {
        const pm_pool *pool = pm_pool_of((char *)a + (size_t)u * PM_UNIT_SIZE + 64);
        if (u < PM_HEADER_UNITS || u >= a->nunits || unit_is_free(a, u)) {
            cr_assert_eq(pool, &a->pools[u], "unit %u: not its own slot", u);
            cr_assert_null(pm_pool_owner(pool), "unit %u: a free unit with an owner", u);
            ++*uncovered;
        } else {
            cr_assert(u >= pool->first_unit && u < pool->first_unit + pool->units,
                      "unit %u maps to a pool that does not cover it", u);
            cr_assert_not_null(pm_pool_owner(pool), "unit %u: a pool in use with no owner", u);
            ++*covered;
        }
    }
}

Test(arena, units_no_pool_covers_map_to_a_descriptor_without_owner) {
    void *keep[8];
    for (int i = 0; i < 8; i++) /* pools of 1, 2, 4 and 8 units: some multi-unit */
        keep[i] = pm_malloc((size_t)16 << (i + 6));
    /* A pool of 32 units given back: a thread's only block of its class, freed after the
     * thread left (its pools detached), releases it; its 31 other units must read 0 again. */
    pthread_t t;
    void *gone = NULL;
    pthread_create(&t, NULL, alloc_and_exit, (void *)(uintptr_t)(40 << 10));
    pthread_join(t, &gone);
    pm_pool *released = pm_pool_of(gone);
    pm_arena *ra = released->arena;
    unsigned first = released->first_unit;
    cr_assert_geq(released->units, 2, "the test wants a multi-unit pool");
    pm_free(gone);
    unsigned uncovered = 0, covered = 0;
    pm_lock(&pm_arena_lock);
    cr_assert(unit_is_free(ra, first + 1), "the released pool's units should be free");
    check_unit_map(ra, &uncovered, &covered);
    if (pm_arena_of(keep[0]) != ra)
        check_unit_map(pm_arena_of(keep[0]), &uncovered, &covered);
    pm_unlock(&pm_arena_lock);
    cr_assert_gt(uncovered, PM_HEADER_UNITS + 30);
    cr_assert_gt(covered, 8);
    for (int i = 0; i < 8; i++)
        pm_free(keep[i]);
}

/* The run finder searches the free map a word at a time: each pool size must get the first
 * run of its size aligned to its size, in the fullest arena that has one, and nothing that
 * straddles a taken unit or the header. */
static unsigned take(pm_arena *expected, unsigned n) {
    unsigned u = 0;
    pm_arena *a = pm_arena_take_units(n, &u);
    cr_assert_eq(a, expected, "a run of %u units came from another arena", n);
    return u;
}

static void give(pm_arena *a, unsigned first, unsigned n) {
    for (unsigned u = first; u < first + n; u++)
        pm_arena_give_units(a, u, 1, 0);
}

Test(arena, free_runs_are_the_first_aligned_fit) {
    pm_free(pm_malloc(1)); /* initialise: one arena, its first pool at unit 4 */
    pm_lock(&pm_arena_lock);
    pm_arena *full = pm_arenas, *other = NULL;
    unsigned u = 0;
    for (;;) { /* fill the first arena unit by unit, in address order */
        pm_arena *a = pm_arena_take_units(1, &u);
        cr_assert_not_null(a);
        if (a != full) {
            other = a; /* a new arena: the first one is full */
            break;
        }
    }
    cr_assert_eq(u, PM_HEADER_UNITS, "the new arena's first unit follows its header");
    give(full, 9, 1);
    give(full, 12, 2);   /* an aligned pair */
    give(full, 17, 7);   /* 17..23: an aligned four at 20, pairs at 18 and 20 */
    give(full, 64, 64);  /* a whole aligned 64 */
    give(full, 130, 4);  /* four free units, but not aligned to 4 */
    cr_assert_eq(take(full, 1), 9);
    cr_assert_eq(take(full, 2), 12);
    cr_assert_eq(take(full, 4), 20);
    cr_assert_eq(take(full, 64), 64);
    cr_assert_eq(take(full, 2), 18);
    cr_assert_eq(take(full, 2), 130);
    cr_assert_eq(take(full, 1), 17);
    /* No aligned 8 or 4 left in the full arena (132, 133 are a pair): the other one serves. */
    cr_assert_eq(take(other, 8), 8);
    cr_assert_eq(take(other, 4), 16); /* 4..7 holds unit 4, 8..15 was just taken */
    cr_assert_eq(take(other, 32), 32);
    cr_assert_eq(take(full, 2), 132);
    pm_unlock(&pm_arena_lock);
}

/* The placement search reads arena.c's packed index, not the arenas' headers: whatever units
 * are taken and given back, and after empty arenas went back to the OS (the index loses an
 * entry in the middle), a single unit must come from an arena with the fewest free units, as
 * a walk of the arena list finds it. */
static uint32_t fewest_free(void) {
    uint32_t fewest = UINT32_MAX;
    for (pm_arena *a = pm_arenas; a; a = a->next)
        if (a->nfree >= 1 && a->nfree < fewest)
            fewest = a->nfree;
    return fewest;
}

static void take_one_from_the_fullest(void) {
    uint32_t expected = fewest_free();
    unsigned u = 0;
    pm_arena *a = pm_arena_take_units(1, &u);
    cr_assert_not_null(a);
    if (expected == UINT32_MAX) /* no room anywhere: a new arena */
        expected = a->nunits - PM_HEADER_UNITS;
    cr_assert_eq(a->nfree + 1, expected, "a unit from an arena with %u free, not %u",
                 a->nfree + 1, expected);
}

Test(arena, units_come_from_the_fullest_arena_also_after_arenas_went_back) {
    pm_free(pm_malloc(1));
    pm_lock(&pm_arena_lock);
    pm_arena *seen[8] = {pm_arenas};
    unsigned nseen = 1, units[8][4], nunits[8] = {0};
    while (nseen < 5) { /* four more arenas, filled with 64-unit runs */
        unsigned u = 0;
        pm_arena *a = pm_arena_take_units(64, &u);
        cr_assert_not_null(a);
        unsigned k = 0;
        while (k < nseen && seen[k] != a)
            k++;
        if (k == nseen)
            seen[nseen++] = a;
        if (nunits[k] < 4)
            units[k][nunits[k]++] = u;
    }
    /* Fullness against the order of creation: the older an arena, the more it gets back (the
     * first new one 3 runs, the next 2, then 1; the last stays full). */
    for (unsigned k = 0; k < 4; k++)
        for (unsigned j = 0; j < nunits[k] && j + k < 4; j++)
            give(seen[k], units[k][j], 64);
    for (int i = 0; i < 60; i++) /* from the third new arena, the fullest with room */
        take_one_from_the_fullest();
    pm_arena_check_index();
    /* The second new arena empties and goes back to the OS: the index loses an entry in its
     * middle and its last one moves there; that arena then changes. */
    for (unsigned j = 0; j < nunits[2]; j++)
        if (!(seen[2]->free_map[units[2][j] / 64] >> (units[2][j] % 64) & 1))
            give(seen[2], units[2][j], 64);
    pm_arena *gone = seen[2];
    cr_assert_eq(gone->nfree, gone->nunits - PM_HEADER_UNITS, "the arena should be empty now");
    pm_unlock(&pm_arena_lock);
    pm_arena_purge(true);
    pm_lock(&pm_arena_lock);
    for (pm_arena *a = pm_arenas; a; a = a->next)
        cr_assert_neq(a, gone, "an empty arena should have gone back to the OS");
    pm_arena_check_index();
    give(seen[4], units[4][0], 64); /* the newest arena: its entry moved */
    pm_arena_check_index();
    for (int i = 0; i < 300; i++)
        take_one_from_the_fullest();
    pm_arena_check_index();
    pm_unlock(&pm_arena_lock);
}

/* A released unit stays resident for one to two purge ticks, whatever else its arena holds: a
 * tick ages the units freed since the one before and purges only those already aged. (Timing
 * the whole arena from its oldest dirty unit purged units freed a moment before, and a program
 * that rebuilt what it had just freed paid a page fault per page, round after round.) */
static bool unit_resident(pm_arena *a, unsigned u) {
    unsigned char vec[PM_UNIT_SIZE / 4096];
    cr_assert_eq(mincore((char *)a + (size_t)u * PM_UNIT_SIZE, PM_UNIT_SIZE, vec), 0);
    return vec[0] & 1;
}

static unsigned take_touched(pm_arena **a) {
    unsigned u = 0;
    pm_lock(&pm_arena_lock);
    *a = pm_arena_take_units(1, &u);
    pm_unlock(&pm_arena_lock);
    cr_assert_not_null(*a);
    memset((char *)*a + (size_t)u * PM_UNIT_SIZE, 0x5a, PM_UNIT_SIZE);
    return u;
}

static void give_touched(pm_arena *a, unsigned u) {
    pm_lock(&pm_arena_lock);
    pm_arena_give_units(a, u, 1, 1);
    pm_unlock(&pm_arena_lock);
}

Test(arena, a_released_unit_survives_the_next_purge_tick) {
    pm_free(pm_malloc(1));
    pm_opt.purge_delay_ms = 3600 * 1000; /* only the test's own ticks */
    pm_arena_purge(false);
    pm_arena *a, *b;
    unsigned old = take_touched(&a), young = take_touched(&b);
    cr_assert_eq(a, b, "both units from the one arena");
    give_touched(a, old);
    pm_arena_purge(false); /* tick 1: `old` is aged, not purged */
    cr_assert(unit_resident(a, old), "a unit released just before a tick was purged by it");
    give_touched(a, young);
    pm_arena_purge(false); /* tick 2: `old` goes, `young` (released after tick 1) stays */
    cr_assert(!unit_resident(a, old), "a unit free for a whole tick should be purged");
    cr_assert(unit_resident(a, young), "the arena's older dirty unit took the young one along");
    cr_assert_eq(a->ndirty, 1);
    unsigned again = take_touched(&b); /* reuse: taken clean of its dirty and young marks */
    give_touched(b, again);
    pm_arena_purge(false); /* tick 3: `young` goes; `again` was released after tick 2 */
    cr_assert(!unit_resident(a, young));
    cr_assert(unit_resident(b, again), "a unit taken and released again is young again");
    pm_arena_purge(true); /* pm_trim's forced purge takes the young ones too */
    cr_assert(!unit_resident(b, again));
    cr_assert_eq(a->ndirty, 0);
}

/* Purge backoff (arena.c): when what a tick purged is taken again by new pools, the ticks
 * space out (the purge delay doubled); after a purge that nothing came back to, they close in
 * again. The test drives the ticks itself. */
#define BACKOFF_UNITS 80 /* more than the 64 units (1 MiB) below which nothing backs off */

static uint64_t backoff(void) { return atomic_load(&pm_gstats.purge_backoff); }

static void take_all(pm_arena **a, unsigned *u) {
    for (int i = 0; i < BACKOFF_UNITS; i++)
        u[i] = take_touched(&a[i]);
}

static void give_all(pm_arena **a, const unsigned *u) {
    for (int i = 0; i < BACKOFF_UNITS; i++)
        give_touched(a[i], u[i]);
}

Test(arena, purge_ticks_space_out_while_purged_memory_comes_back) {
    pm_free(pm_malloc(1));
    pm_opt.purge_delay_ms = 3600 * 1000; /* only the test's own ticks */
    pm_arena_purge(false);
    cr_assert_eq(backoff(), 0);
    pm_arena *a[BACKOFF_UNITS];
    unsigned u[BACKOFF_UNITS];
    take_all(a, u);
    give_all(a, u);
    pm_arena_purge(false); /* ages them */
    pm_arena_purge(false); /* purges them */
    cr_assert(!unit_resident(a[0], u[0]));
    take_all(a, u); /* the program wanted them after all: the purge was lost */
    pm_arena_purge(false);
    cr_assert_eq(backoff(), 1, "a purge taken back whole should space the ticks out");
    cr_assert_geq(atomic_load(&pm_gstats.purged_taken_bytes), BACKOFF_UNITS * PM_UNIT_SIZE);

    give_all(a, u);
    pm_arena_purge(false); /* ages them (no purge since the last score) */
    pm_arena_purge(false); /* purges them */
    cr_assert_eq(backoff(), 1, "ticks without a purge to score change nothing");
    pm_arena_purge(false); /* nothing of that purge came back */
    cr_assert_eq(backoff(), 0, "a purge nobody took back should close the ticks in again");
}

/* ---- detach and release: the last free releases a pool, whoever makes it ---------------- */

typedef struct handoff {
    void **blocks;
    size_t n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stage; /* 0 allocating, 1 allocated (owner parks), 2 released (owner may exit) */
} handoff;

static void *idle_owner(void *arg) {
    handoff *h = arg;
    for (size_t i = 0; i < h->n; i++)
        h->blocks[i] = pm_malloc(48);
    pthread_mutex_lock(&h->lock);
    h->stage = 1;
    pthread_cond_broadcast(&h->cond);
    while (h->stage != 2) /* parked: never calls malloc again while the others free */
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

Test(pool, blocks_freed_into_an_idle_threads_pools_release_them) {
    handoff h = {.n = 200000, .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    h.blocks = calloc(h.n, sizeof *h.blocks);
    pthread_t t;
    pthread_create(&t, NULL, idle_owner, &h);
    pthread_mutex_lock(&h.lock);
    while (h.stage != 1)
        pthread_cond_wait(&h.cond, &h.lock);
    pthread_mutex_unlock(&h.lock);
    pm_stats_t before, after;
    pm_stats_get(&before);
    for (size_t i = 0; i < h.n; i++)
        pm_free(h.blocks[i]);
    pm_stats_get(&after);
    /* 200000 x 48 B = 9.2 MB in about 590 pools of 341 blocks: all but the owner's current one
     * must be back in the arenas though the owner never ran. */
    cr_assert_geq(after.pools_released - before.pools_released, 550,
                  "only %llu pools released", (unsigned long long)(after.pools_released - before.pools_released));
    pthread_mutex_lock(&h.lock);
    h.stage = 2;
    pthread_cond_broadcast(&h.cond);
    pthread_mutex_unlock(&h.lock);
    pthread_join(t, NULL);
    free(h.blocks);
}

/* ---- the thread lifecycle: late destructors never leave heaps behind ----------------------- */

static pthread_key_t late_key;
static void late_destructor(void *v) {
    pm_free(v);
    static __thread int rounds;
    if (++rounds < 4) /* re-arm and allocate on every destructor round glibc runs */
        pthread_setspecific(late_key, pm_malloc(100));
}
static void *late_thread(void *arg) {
    pthread_setspecific(late_key, pm_malloc(64));
    pm_free(pm_malloc(32));
    return arg;
}

Test(lifecycle, late_allocating_destructors_leave_no_heaps) {
    pthread_key_create(&late_key, late_destructor);
    pm_stats_t before, after;
    pm_stats_get(&before);
    for (int i = 0; i < 500; i++) {
        pthread_t t;
        pthread_create(&t, NULL, late_thread, NULL);
        pthread_join(t, NULL);
    }
    pm_stats_get(&after);
    cr_assert_leq(after.heaps_created - before.heaps_created, 4,
                  "%llu heaps created for 500 sequential threads",
                  (unsigned long long)(after.heaps_created - before.heaps_created));
}

/* ---- locks ---------------------------------------------------------------------------------- */

/* A thread that takes a lock it already holds (malloc from a signal handler that interrupted
 * malloc) gets the re-entry report after pm_lock's spin, not a hang. */
Test(locks, a_lock_taken_twice_by_one_thread_is_reported, .signal = SIGABRT) {
    pthread_mutex_t m = PM_LOCK_INITIALIZER;
    pm_lock(&m);
    pm_lock(&m);
}

static pthread_mutex_t handed_lock = PM_LOCK_INITIALIZER;

static void *hold_briefly(void *arg) {
    pm_lock(&handed_lock);
    atomic_store((_Atomic int *)arg, 1);
    for (volatile int i = 0; i < 200000; i++) {
    }
    pm_unlock(&handed_lock);
    return NULL;
}

/* A lock another thread holds is taken once that thread lets go (spinning, then sleeping). */
Test(locks, a_lock_held_by_another_thread_is_taken_after_it_lets_go) {
    _Atomic int held = 0;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, hold_briefly, &held), 0);
    while (!atomic_load(&held)) {
    }
    pm_lock(&handed_lock);
    pm_unlock(&handed_lock);
    pthread_join(t, NULL);
}
