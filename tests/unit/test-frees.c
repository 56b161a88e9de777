/*
 * test-frees.c: white-box tests of the frees that do not take the plain fast path (issue 10):
 * the owner's frees into its own detached pools once its cache is full, and other threads'
 * frees into a pool its owner is still allocating from. Links the core without the shim and
 * includes internal.h.
 */
#include "internal.h" /* first: it brings config.h, which defines _GNU_SOURCE */

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>

#define BLOCK 48
#define BLOCKS 200000

static uint64_t pools_released(void) {
    pm_stats_t s;
    cr_assert_eq(pm_stats_get(&s), 0);
    return s.pools_released;
}

static uint64_t pools_acquired(void) {
    pm_stats_t s;
    cr_assert_eq(pm_stats_get(&s), 0);
    return s.pools_acquired;
}

/* The owner's frees past its cache send the cache back to its pools (pm_heap_cache_overflow:
 * runs of one pool in one push onto its detached pool's atomic list), and the last block of
 * each pool releases it: a thread that frees what it built gets the memory back without
 * calling malloc again, whether it frees in the order it allocated or in any other. */
typedef struct teardown {
    void **blocks;
    bool shuffled;
} teardown;

static void *build_and_free(void *arg) {
    teardown *td = arg;
    void **blocks = td->blocks;
    for (size_t i = 0; i < BLOCKS; i++) {
        blocks[i] = pm_malloc(BLOCK);
        memset(blocks[i], 0x5a, BLOCK);
    }
    uint64_t seed = 0x2545f4914f6cdd1dull;
    for (size_t i = BLOCKS - 1; td->shuffled && i > 0; i--) { /* Fisher-Yates, xorshift */
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        size_t j = (size_t)(seed % (i + 1));
        void *tmp = blocks[i];
        blocks[i] = blocks[j];
        blocks[j] = tmp;
    }
    uint64_t before = pools_released();
    for (size_t i = 0; i < BLOCKS; i++) /* nearly every pool is detached */
        pm_free(blocks[i]);
    return (void *)(uintptr_t)(pools_released() - before);
}

static void check_teardown(bool shuffled) {
    teardown td = {calloc(BLOCKS, sizeof(void *)), shuffled};
    cr_assert_not_null(td.blocks);
    pthread_t t;
    void *released;
    /* A thread of its own: a fresh heap, so that no earlier test's pools are counted. */
    pthread_create(&t, NULL, build_and_free, &td);
    pthread_join(t, &released);
    /* 200000 x 48 B in about 590 pools of 341 blocks: all but the current pool and those the
     * cache still pins (its 32 blocks, at most one pool each) must be back in the arenas. */
    size_t per_pool = (pm_class_units[pm_size_class(BLOCK)] * PM_UNIT_SIZE) / BLOCK;
    size_t expected = BLOCKS / per_pool - 1 - 32;
    cr_assert_geq((uintptr_t)released, expected, "only %zu of about %zu pools released",
                  (size_t)(uintptr_t)released, BLOCKS / per_pool);
    free(td.blocks);
}

Test(frees, owner_frees_into_its_own_detached_pools_release_them) { check_teardown(false); }

Test(frees, owner_frees_in_random_order_release_them_too) { check_teardown(true); }

/* A thread that frees in random order, past its full cache, with no malloc between, is not
 * reusing what it frees: after PM_STALE_FREES such frees its cache goes back (drained) and
 * takes nothing more until the class's next malloc, so that it pins no pool once everything is
 * free. Then mallocs and frees: within PM_STALE_FREES frees the cache takes blocks again. */
static void *shuffled_teardown_then_reuse(void *arg) {
    teardown td = {arg, true};
    uintptr_t released = (uintptr_t)build_and_free(&td);
    pm_class_state *cs = &pm_thread_heap->cls[pm_size_class(BLOCK)];
    pm_block **end = pm_cache_end(pm_thread_heap, pm_size_class(BLOCK));
    cr_assert_eq(cs->top, end, "the stale cache should have gone back to its pools");
    cr_assert_eq(cs->full_lo, cs->empty_lo, "a drained cache takes nothing before a malloc");
    void *again[PM_STALE_FREES];
    for (int i = 0; i < PM_STALE_FREES; i++)
        again[i] = pm_malloc(BLOCK);
    for (int i = 0; i < PM_STALE_FREES; i++)
        pm_free(again[i]);
    cr_assert(cs->top < end && *cs->top == again[PM_STALE_FREES - 1],
              "after mallocs, the cache should take blocks again");
    return (void *)released;
}

Test(frees, a_stale_cache_pins_no_pool_after_a_random_order_teardown) {
    void **blocks = calloc(BLOCKS, sizeof(void *));
    cr_assert_not_null(blocks);
    pthread_t t;
    void *released;
    pthread_create(&t, NULL, shuffled_teardown_then_reuse, blocks);
    pthread_join(t, &released);
    /* Every pool but the current one and the spare (one empty pool kept per class). */
    size_t per_pool = (pm_class_units[pm_size_class(BLOCK)] * PM_UNIT_SIZE) / BLOCK;
    size_t pools = (BLOCKS + per_pool - 1) / per_pool;
    cr_assert_geq((uintptr_t)released, pools - 2, "only %zu of %zu pools released",
                  (size_t)(uintptr_t)released, pools);
    free(blocks);
}

/* The walk that sends a full cache back (after PM_RUN_FREES frees past it in one unit) follows
 * the links of blocks the program has freed: a write after free into one of them must stop it
 * (I8), not steer blocks onto a pool's list. */
Test(frees, a_cached_block_overwritten_is_caught_when_the_cache_goes_back,
     .signal = SIGABRT) {
    void *blocks[64];
    for (int i = 0; i < 64; i++)
        blocks[i] = pm_malloc(BLOCK);
    unsigned cls = pm_size_class(BLOCK);
    for (uint32_t i = 0; i < pm_class_cache_limit[cls]; i++)
        pm_free(blocks[i]); /* fills the cache */
    memset(blocks[5], 0x41, sizeof(pm_block)); /* a write after free: link and key */
    for (int i = 63; i >= 63 - PM_RUN_FREES; i--) /* past the full cache, in one unit */
        pm_free(blocks[i]); /* the last: a run, the cache goes back, its walk meets block 5 */
}

/* ---- another thread frees blocks of a pool its owner is still allocating from ------------- */

typedef struct exchange {
    void *blocks[64];
    size_t n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int turn; /* 0: the owner allocates, 1: the other thread frees, 2: done */
} exchange;

static void wait_turn(exchange *x, int turn) {
    pthread_mutex_lock(&x->lock);
    while (x->turn != turn && x->turn != 2)
        pthread_cond_wait(&x->cond, &x->lock);
    pthread_mutex_unlock(&x->lock);
}

static void give_turn(exchange *x, int turn) {
    pthread_mutex_lock(&x->lock);
    x->turn = turn;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->lock);
}

static void *remote_freer(void *arg) {
    exchange *x = arg;
    for (;;) {
        wait_turn(x, 1);
        if (x->turn == 2)
            return NULL;
        for (size_t i = 0; i < x->n; i++)
            pm_free(x->blocks[i]);
        give_turn(x, 0);
    }
}

/* A producer whose blocks another thread frees (atomic pushes onto its current pool) must get
 * them back when its local list runs dry (pm_pool_collect), not take new pools for ever: 2000
 * rounds of 64 blocks of 512 bytes (4 MB in all) fit in a handful of pools. */
Test(frees, remote_frees_into_the_current_pool_are_reused_by_its_owner) {
    exchange x = {.n = 64, .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    pthread_t t;
    pthread_create(&t, NULL, remote_freer, &x);
    pm_free(pm_malloc(512)); /* this thread's heap and a current pool of the class */
    uint64_t before = pools_acquired();
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < x.n; i++) {
            x.blocks[i] = pm_malloc(512);
            cr_assert_not_null(x.blocks[i]);
            memset(x.blocks[i], round & 0xff, 512);
        }
        give_turn(&x, 1);
        wait_turn(&x, 0);
    }
    uint64_t acquired = pools_acquired() - before;
    give_turn(&x, 2);
    pthread_join(t, NULL);
    /* 64 blocks in flight take 2 pools of 32; a few more while the frees race the owner. */
    cr_assert_leq(acquired, 8, "%llu pools acquired for 64 blocks in flight",
                  (unsigned long long)acquired);
}

/* ---- the spare: a drained pool kept for its owner, and given back --------------------------- */

#define SPARE_SIZE 512 /* 32 blocks in a one-unit pool */

typedef struct parked {
    void *blocks[64];
    size_t n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stage; /* 0 allocating, 1 allocated (parked), 2 may exit */
} parked;

static void *allocate_and_park(void *arg) {
    parked *p = arg;
    for (size_t i = 0; i < p->n; i++)
        p->blocks[i] = pm_malloc(SPARE_SIZE);
    pthread_mutex_lock(&p->lock);
    p->stage = 1;
    pthread_cond_broadcast(&p->cond);
    while (p->stage != 2)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    return NULL; /* exits with its last block still out: its current pool stays */
}

/* A thread fills one pool and takes a second (the first is detached); another thread frees
 * every block of the first. The pool stays with its owner, empty (the next pool it needs),
 * while the owner lives; the owner's exit gives it back. */
Test(frees, drained_pool_is_kept_for_its_owner_and_given_back_at_exit) {
    parked p = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    unsigned cls = pm_size_class(SPARE_SIZE);
    cr_assert_eq(pm_class_units[cls], 1, "the test assumes one-unit pools of %d bytes",
                 SPARE_SIZE);
    size_t per_pool = PM_UNIT_SIZE / SPARE_SIZE;
    p.n = per_pool + 1;
    pthread_t t;
    pthread_create(&t, NULL, allocate_and_park, &p);
    pthread_mutex_lock(&p.lock);
    while (p.stage != 1)
        pthread_cond_wait(&p.cond, &p.lock);
    pthread_mutex_unlock(&p.lock);
    pm_pool *first = pm_pool_of(p.blocks[0]);
    cr_assert_neq(first, pm_pool_of(p.blocks[per_pool]), "the blocks fill one pool exactly");
    uint64_t released = pools_released();
    for (size_t i = 0; i < per_pool; i++)
        pm_free(p.blocks[i]);
    cr_assert_eq(pools_released(), released, "the drained pool of a live owner was released");
    cr_assert_eq(pm_pool_of(p.blocks[0]), first);
    cr_assert_eq(pm_pool_blocks_in_use(first), 0);
    pthread_mutex_lock(&p.lock);
    p.stage = 2;
    pthread_cond_broadcast(&p.cond);
    pthread_mutex_unlock(&p.lock);
    pthread_join(t, NULL);
    cr_assert_geq(pools_released(), released + 1, "the owner exited and kept its empty pool");
    pm_free(p.blocks[per_pool]);
}

static void *free_all(void *arg) {
    parked *p = arg;
    for (size_t i = 0; i < p->n; i++)
        pm_free(p->blocks[i]);
    return NULL;
}

/* The same with this thread as the owner: pm_trim gives the spare back. */
Test(frees, trim_gives_back_the_spare_pool) {
    static parked p;
    static void *all[3 * (PM_UNIT_SIZE / SPARE_SIZE)];
    size_t per_pool = PM_UNIT_SIZE / SPARE_SIZE, n = 3 * per_pool;
    for (size_t i = 0; i < n; i++)
        all[i] = pm_malloc(SPARE_SIZE);
    /* A pool all of whose blocks are ours, and not the current one (the last block's). */
    pm_pool *full = NULL;
    for (size_t i = 0; i < n && full == NULL; i++) {
        pm_pool *pool = pm_pool_of(all[i]);
        size_t mine = 0;
        for (size_t j = 0; j < n; j++)
            mine += pm_pool_of(all[j]) == pool;
        if (mine == per_pool && pool != pm_pool_of(all[n - 1]))
            full = pool;
    }
    cr_assert_not_null(full, "no pool of %zu blocks among %zu", per_pool, n);
    for (size_t i = 0; i < n; i++)
        if (pm_pool_of(all[i]) == full) {
            p.blocks[p.n++] = all[i];
            all[i] = NULL;
        }
    uint64_t released = pools_released();
    pthread_t t;
    pthread_create(&t, NULL, free_all, &p); /* remote frees: the pool drains */
    pthread_join(t, NULL);
    cr_assert_eq(pools_released(), released, "the drained pool was not kept as a spare");
    pm_trim();
    cr_assert_geq(pools_released(), released + 1, "pm_trim kept the spare");
    for (size_t i = 0; i < n; i++)
        pm_free(all[i]);
}

/* ---- another thread's blocks go home --------------------------------------------------------- */

#define FOREIGN_SIZE 512

typedef struct foreign {
    void *blocks[16];
    size_t n;
    bool allocates;        /* the freeing thread allocates the class first */
    void *reused;          /* what its malloc returned after the frees */
    uint32_t in_use_after; /* blocks in use in the owner's pools right after the frees */
    uint64_t remote;       /* the freeing heap's remote-free count over the frees (PM_STATS) */
} foreign;

static uint32_t in_use_of_pools(void *const *blocks, size_t n) {
    pm_pool *seen[16];
    size_t nseen = 0;
    uint32_t used = 0;
    for (size_t i = 0; i < n; i++) {
        pm_pool *pool = pm_pool_of(blocks[i]);
        bool known = false;
        for (size_t k = 0; k < nseen; k++)
            known |= seen[k] == pool;
        if (!known) {
            seen[nseen++] = pool;
            used += pm_pool_blocks_in_use(pool);
        }
    }
    return used;
}

static void *free_foreign(void *arg) {
    foreign *f = arg;
    void *own = NULL;
    if (f->allocates)
        own = pm_malloc(FOREIGN_SIZE); /* the class is in use here: a heap, a cache */
    pm_heap *me = pm_thread_heap_get();
    uint64_t remote = atomic_load(&me->remote_frees);
    for (size_t i = 0; i < f->n; i++)
        pm_free(f->blocks[i]);
    f->remote = atomic_load(&me->remote_frees) - remote;
    f->in_use_after = in_use_of_pools(f->blocks, f->n);
    f->reused = pm_malloc(FOREIGN_SIZE);
    pm_free(f->reused);
    pm_free(own);
    return NULL;
}

static void check_foreign_frees_go_home(bool allocates) {
    foreign f = {.n = 4, .allocates = allocates};
    for (size_t i = 0; i < f.n; i++) {
        f.blocks[i] = pm_malloc(FOREIGN_SIZE);
        cr_assert_not_null(f.blocks[i]);
        memset(f.blocks[i], 0x3c, FOREIGN_SIZE);
    }
    pthread_t t;
    pthread_create(&t, NULL, free_foreign, &f);
    pthread_join(t, NULL);
    cr_assert_eq(f.in_use_after, 0, "%u blocks held by a thread that did not allocate them",
                 f.in_use_after);
    for (size_t i = 0; i < f.n; i++)
        cr_assert_neq(f.reused, f.blocks[i], "the freeing thread reused an owner's block");
    if (PM_STATS)
        cr_assert_eq(f.remote, f.n, "every free of another heap's block is a remote free");
}

/* A free of another heap's block goes back to that heap's pool at once, whether or not the
 * freeing thread allocates from the class: kept in the freeing thread's cache, a block was
 * reused there and freed by non-owners again and again, each time off the fast path (free.c). */
Test(frees, a_foreign_block_goes_home_from_a_thread_that_allocates_the_class) {
    check_foreign_frees_go_home(true);
}

Test(frees, a_foreign_block_goes_home_from_a_thread_that_only_frees) {
    check_foreign_frees_go_home(false);
}

/* ---- the cache's bounds, in every class ------------------------------------------------------ */

/* The cache is a stack of slots in the heap whose bounds are compared by their low 16 bits:
 * in every class (limits from 32 blocks down to 1), it takes exactly its limit of frees, the
 * next free goes past it to the pool, and malloc gives the cached blocks back last freed
 * first, then goes to the pool. */
static void *fill_and_empty_every_cache(void *arg) {
    (void)arg;
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        uint32_t limit = pm_class_cache_limit[c];
        void *blocks[PM_CACHE_MAX + 1];
        for (uint32_t i = 0; i <= limit; i++)
            blocks[i] = pm_malloc(pm_class_size[c]);
        pm_heap *heap = pm_thread_heap;
        pm_class_state *cs = &heap->cls[c];
        pm_block **end = pm_cache_end(heap, c);
        cr_assert_eq(cs->top, end, "class %u: the cache should start empty", c);
        for (uint32_t i = 0; i < limit; i++)
            pm_free(blocks[i]);
        cr_assert_eq((size_t)(end - cs->top), limit, "class %u: %u frees should all be cached", c,
                     limit);
        pm_pool *pool = pm_pool_of(blocks[limit]);
        uint32_t used = pool->used;
        pm_free(blocks[limit]); /* past the full cache: onto its pool */
        cr_assert_eq((size_t)(end - cs->top), limit, "class %u: the cache took a block past its limit", c);
        if (pool->state == PM_POOL_CURRENT)
            cr_assert_eq(pool->used, used - 1, "class %u: the free past the cache missed the pool", c);
        for (uint32_t i = limit; i-- > 0;)
            cr_assert_eq(pm_malloc(pm_class_size[c]), blocks[i], "class %u: not last freed first", c);
        cr_assert_eq(cs->top, end, "class %u: the cache should be empty again", c);
        void *more = pm_malloc(pm_class_size[c]); /* from the pool */
        cr_assert_not_null(more);
        pm_free(more);
        for (uint32_t i = 0; i < limit; i++)
            pm_free(blocks[i]);
    }
    return NULL;
}

Test(frees, every_class_cache_holds_its_limit_and_no_more) {
    pthread_t t; /* a thread of its own: a fresh heap, every cache empty */
    pthread_create(&t, NULL, fill_and_empty_every_cache, NULL);
    pthread_join(t, NULL);
}
