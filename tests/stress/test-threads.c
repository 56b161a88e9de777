/*
 * test-threads.c: blocks crossing threads, thousands of short-lived threads, frees that come
 * after a thread's heap has been handed over, and large blocks grown by realloc in threads
 * that share large.c's cache.
 *
 * Linked with the core only; pm_stats_get's heap counters show whether exited threads' heaps
 * are adopted rather than new ones created for every thread.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "poolmalloc.h"
#include "test-util.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond))                                                                           \
            cr_assert_fail(__VA_ARGS__);                                                       \
    } while (0)

/* Mostly small, some medium, a few large: every kind of block crosses threads. */
static size_t random_size(uint64_t *s) {
    uint64_t r = rng_next(s);
    switch (r & 1023) {
    case 0: return 200 * KiB + (size_t)(r >> 20) % MiB;
    case 1 ... 40: return 1100 + (size_t)(r >> 20) % (120 * KiB);
    default: return (size_t)(r >> 20) % 1024;
    }
}

/* A block carries its size and a serial number at both ends, so the consumer can tell that
 * nothing wrote over it while it travelled. */
typedef struct stamp {
    size_t size;
    uint64_t serial;
} stamp;

static void *make_stamped(size_t size, uint64_t serial) {
    if (size < 2 * sizeof(stamp))
        size = 2 * sizeof(stamp);
    unsigned char *p = pm_malloc(size);
    if (p == NULL)
        return NULL;
    stamp st = {size, serial};
    memcpy(p, &st, sizeof st);
    memcpy(p + size - sizeof st, &st, sizeof st);
    return p;
}

static bool stamp_ok(const void *block, uint64_t serial) {
    const unsigned char *p = block;
    stamp head, tail;
    memcpy(&head, p, sizeof head);
    if (head.serial != serial || head.size < 2 * sizeof(stamp))
        return false;
    memcpy(&tail, p + head.size - sizeof tail, sizeof tail);
    return tail.size == head.size && tail.serial == serial;
}

/* ---- producer/consumer: every block is freed by a thread that did not allocate it ---------- */

enum { RING = 1024, PAIRS = 2, PER_PRODUCER = 400000 };

typedef struct ring {
    void *_Atomic slot[RING];
    _Atomic size_t head; /* next slot the producer writes */
    _Atomic size_t tail; /* next slot the consumer reads */
    uint64_t seed;
    _Atomic bool failed;
} ring;

static void *producer(void *arg) {
    ring *r = arg;
    uint64_t s = r->seed;
    for (uint64_t serial = 0; serial < PER_PRODUCER; serial++) {
        void *p = make_stamped(random_size(&s), serial);
        if (p == NULL) {
            atomic_store(&r->failed, true);
            p = make_stamped(0, serial); /* keep the consumer's count right */
        }
        size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
        while (head - atomic_load_explicit(&r->tail, memory_order_acquire) == RING)
            sched_yield();
        atomic_store_explicit(&r->slot[head % RING], p, memory_order_relaxed);
        atomic_store_explicit(&r->head, head + 1, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg) {
    ring *r = arg;
    for (uint64_t serial = 0; serial < PER_PRODUCER; serial++) {
        size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        while (atomic_load_explicit(&r->head, memory_order_acquire) == tail)
            sched_yield();
        void *p = atomic_load_explicit(&r->slot[tail % RING], memory_order_relaxed);
        atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
        if (!stamp_ok(p, serial))
            atomic_store(&r->failed, true);
        pm_free(p);
    }
    return NULL;
}

static void run_pairs(void) {
    static ring rings[PAIRS];
    pthread_t threads[2 * PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        memset(&rings[i], 0, sizeof rings[i]);
        rings[i].seed = 0x1234567ull * (uint64_t)(i + 1);
        cr_assert_eq(pthread_create(&threads[2 * i], NULL, producer, &rings[i]), 0);
        cr_assert_eq(pthread_create(&threads[2 * i + 1], NULL, consumer, &rings[i]), 0);
    }
    for (int i = 0; i < 2 * PAIRS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < PAIRS; i++)
        cr_assert_not(atomic_load(&rings[i].failed),
                      "pair %d: a block was lost, corrupted or not allocated", i);
}

Test(threads, producer_consumer_remote_frees, .timeout = 60) {
    run_pairs();
    size_t after_first = resident_bytes();
    run_pairs();
    run_pairs();
    size_t after_third = resident_bytes();
    /* Remotely freed blocks are reused: three rounds need no more than one, give or take. */
    cr_assert_leq(after_third, after_first + 64 * MiB,
                  "resident memory grew from %zu to %zu bytes over rounds of remote frees",
                  after_first, after_third);
}

/* Threads in a ring trading batches: each frees the blocks the previous one allocated while it
 * allocates for the next (with two, each frees the other's): every free is a remote one. */
enum { TRADE_MAX_THREADS = 3, TRADE_BATCH = 500, TRADE_ROUNDS = 400 };

typedef struct trade {
    pthread_barrier_t barrier;
    int threads;
    bool pool_blocks_only; /* no large blocks: the caller counts pools */
    void *batch[TRADE_MAX_THREADS][TRADE_BATCH];
    _Atomic bool failed;
} trade;

static trade the_trade;

static void *trader(void *arg) {
    int me = (int)(intptr_t)arg, from = (me + the_trade.threads - 1) % the_trade.threads;
    uint64_t s = 77 + (uint64_t)me;
    for (int round = 0; round < TRADE_ROUNDS; round++) {
        for (int i = 0; i < TRADE_BATCH; i++) {
            size_t size = random_size(&s);
            if (the_trade.pool_blocks_only && size > 32 * KiB)
                size = 16 + size % 2048;
            the_trade.batch[me][i] = make_stamped(size, (uint64_t)(round * TRADE_BATCH + i));
        }
        pthread_barrier_wait(&the_trade.barrier);
        for (int i = 0; i < TRADE_BATCH; i++) {
            void *p = the_trade.batch[from][i];
            if (p == NULL || !stamp_ok(p, (uint64_t)(round * TRADE_BATCH + i)))
                atomic_store(&the_trade.failed, true);
            pm_free(p);
        }
        pthread_barrier_wait(&the_trade.barrier);
    }
    return NULL;
}

static void run_trade(int threads, bool pool_blocks_only) {
    the_trade.threads = threads;
    the_trade.pool_blocks_only = pool_blocks_only;
    pthread_barrier_init(&the_trade.barrier, NULL, (unsigned)threads);
    pthread_t t[TRADE_MAX_THREADS];
    for (int i = 0; i < threads; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, trader, (void *)(intptr_t)i), 0);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&the_trade.barrier);
    cr_assert_not(atomic_load(&the_trade.failed), "a traded block was corrupted");
}

Test(threads, two_threads_trade_batches, .timeout = 60) { run_trade(2, false); }

/* Once every thread of the ring has exited, every block must be back in its pool and every
 * pool released: a block lost or counted twice on its way round shows here. */
Test(threads, a_ring_of_threads_gives_every_block_and_pool_back, .timeout = 60) {
    run_trade(3, true);
    pm_stats_t st;
    cr_assert_eq(pm_stats_get(&st), 0);
    cr_assert_eq(st.small_blocks_in_use, 0, "%llu blocks still counted in use",
                 (unsigned long long)st.small_blocks_in_use);
    cr_assert_eq(st.pools_in_use, 0, "%llu pools still in use after every thread exited",
                 (unsigned long long)st.pools_in_use);
}

/* ---- thousands of short-lived threads ------------------------------------------------------- */

enum { GENERATIONS = 20, PER_GENERATION = 100, LEFT_BEHIND = 8 };

typedef struct worker {
    uint64_t seed;
    void *left[LEFT_BEHIND]; /* blocks the main thread frees after the thread has exited */
    bool failed;
} worker;

static void *short_lived(void *arg) {
    worker *w = arg;
    void *mine[64];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 64; i++) {
            mine[i] = make_stamped(random_size(&w->seed), (uint64_t)i);
            if (mine[i] == NULL)
                w->failed = true;
        }
        for (int i = 0; i < 64; i++) {
            if (mine[i] != NULL && !stamp_ok(mine[i], (uint64_t)i))
                w->failed = true;
            pm_free(mine[i]);
        }
    }
    for (int i = 0; i < LEFT_BEHIND; i++)
        w->left[i] = make_stamped(16 + 40 * (size_t)i + (i == 0 ? 300 * KiB : 0),
                                  (uint64_t)(1000 + i));
    return NULL;
}

static void run_generation(worker *workers, uint64_t gen) {
    pthread_t t[PER_GENERATION];
    for (int i = 0; i < PER_GENERATION; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].seed = gen * 1000003u + (uint64_t)i + 1;
        CHECK(pthread_create(&t[i], NULL, short_lived, &workers[i]) == 0,
              "pthread_create failed in generation %llu", (unsigned long long)gen);
    }
    for (int i = 0; i < PER_GENERATION; i++)
        pthread_join(t[i], NULL);
    /* The threads are gone: their heaps were handed over. Their blocks must still free. */
    for (int i = 0; i < PER_GENERATION; i++) {
        CHECK(!workers[i].failed, "generation %llu, thread %d: allocation failed or corrupted",
              (unsigned long long)gen, i);
        for (int j = 0; j < LEFT_BEHIND; j++) {
            CHECK(workers[i].left[j] != NULL && stamp_ok(workers[i].left[j], (uint64_t)(1000 + j)),
                  "a block left by an exited thread is corrupted");
            pm_free(workers[i].left[j]);
        }
    }
}

Test(threads, two_thousand_threads_heaps_adopted, .timeout = 60) {
    static worker workers[PER_GENERATION];
    run_generation(workers, 0);
    run_generation(workers, 1);
    /* Trim before each measure: free memory waits the purge delay before going back, and what
     * this test looks for is memory that never comes back (a heap or pool leaked per thread),
     * not memory that has not been purged yet. */
    pm_trim();
    size_t rss_early = resident_bytes();
    for (uint64_t gen = 2; gen < GENERATIONS; gen++)
        run_generation(workers, gen);
    pm_trim();
    size_t rss_late = resident_bytes();
    pm_stats_t st;
    cr_assert_eq(pm_stats_get(&st), 0);
    uint64_t created = st.heaps_created, adopted = st.heaps_adopted;
    uint64_t threads = (uint64_t)GENERATIONS * PER_GENERATION;
    /* At most PER_GENERATION threads live at once, so no more heaps than that (and the main
     * thread's) are ever needed: every other thread adopts one an exited thread left. */
    cr_assert_leq(created, (uint64_t)PER_GENERATION + 16,
                  "%llu heaps created for %llu threads, at most %d alive at a time",
                  (unsigned long long)created, (unsigned long long)threads, PER_GENERATION);
    cr_assert_geq(created + adopted, threads,
                  "%llu heaps created + %llu adopted < %llu threads", (unsigned long long)created,
                  (unsigned long long)adopted, (unsigned long long)threads);
    cr_assert_leq(rss_late, rss_early + 32 * MiB,
                  "resident memory grew from %zu to %zu over %d thread generations", rss_early,
                  rss_late, GENERATIONS - 2);
}

/* ---- frees and allocations from thread-exit destructors --------------------------------------
 * Other libraries' pthread_key destructors run in an order nobody controls, possibly after
 * ours has handed the heap over. Re-arming the key makes glibc call ours again in a later
 * round, so some of these calls surely come after the heap is gone. */

static pthread_key_t late_key;

static void late_destructor(void *value) {
    void **block = value;
    uintptr_t rounds = (uintptr_t)block[1];
    pm_free(block[0]);
    void *fresh = pm_malloc(100 + 50 * rounds); /* allocating after the heap went, too */
    void *big = pm_malloc(300 * KiB);
    memset(fresh, 0x33, 100);
    memset(big, 0x44, 1000);
    pm_free(big);
    if (rounds < 3) {
        block[0] = fresh;
        block[1] = (void *)(rounds + 1);
        pthread_setspecific(late_key, block);
    } else {
        pm_free(fresh);
        pm_free(block);
    }
}

static void *thread_with_late_frees(void *arg) {
    (void)arg;
    void **block = pm_malloc(2 * sizeof(void *));
    block[0] = pm_malloc(64);
    block[1] = (void *)0;
    pthread_setspecific(late_key, block);
    void *junk[100];
    for (int i = 0; i < 100; i++)
        junk[i] = pm_malloc((size_t)i * 8);
    for (int i = 0; i < 100; i++)
        pm_free(junk[i]);
    return NULL;
}

Test(threads, destructors_free_and_allocate_after_thread_exit, .timeout = 60) {
    cr_assert_eq(pthread_key_create(&late_key, late_destructor), 0);
    for (int round = 0; round < 50; round++) {
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
            cr_assert_eq(pthread_create(&t[i], NULL, thread_with_late_frees, NULL), 0);
        for (int i = 0; i < 8; i++)
            pthread_join(t[i], NULL);
    }
    /* Still a working allocator in the main thread. */
    void *p = pm_malloc(123);
    cr_assert(p != NULL && pm_owns(p));
    pm_free(p);
}

/* ---- large blocks grown by realloc while other threads churn large blocks ------------------ */

/* A growing large block may move into cached pages, its bytes copied outside large.c's lock
 * while other threads free, allocate and trim: each thread grows buffers to 1-6 MiB, a step at
 * a time, checking a pattern that depends on the offset and the thread after every realloc,
 * and frees them; the cache is what the others freed. ThreadSanitizer runs this too. */
enum { GROWERS = 4, GROWER_ROUNDS = 40 };

static unsigned char grown_byte(size_t i, uintptr_t who) { return (unsigned char)((i >> 12) ^ who); }

static bool grown_ok(const unsigned char *p, size_t len, uintptr_t who) {
    for (size_t i = 0; i < len; i += 4096)
        if (p[i] != grown_byte(i, who))
            return false;
    return len == 0 || p[len - 1] == grown_byte(len - 1, who);
}

static void *grower(void *arg) {
    uintptr_t who = (uintptr_t)arg;
    uint64_t seed = 0x51a7e + who;
    for (int round = 0; round < GROWER_ROUNDS; round++) {
        size_t final = MiB + (size_t)(rng_next(&seed) % (5 * MiB)), len = 0;
        unsigned char *p = NULL;
        while (len < final) {
            size_t add = 200 * KiB + (size_t)(rng_next(&seed) % (300 * KiB));
            if (len + add > final)
                add = final - len;
            unsigned char *q = pm_realloc(p, len + add);
            if (q == NULL || !grown_ok(q, len, who))
                return (void *)1;
            for (size_t i = (len + 4095) & ~(size_t)4095; i < len + add; i += 4096)
                q[i] = grown_byte(i, who);
            q[len + add - 1] = grown_byte(len + add - 1, who);
            p = q;
            len += add;
        }
        pm_free(p);
    }
    return NULL;
}

Test(threads, large_blocks_grow_by_realloc_while_others_free_them, .timeout = 120) {
    pthread_t t[GROWERS];
    for (uintptr_t i = 0; i < GROWERS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, grower, (void *)(i + 1)), 0);
    for (int i = 0; i < GROWERS; i++) {
        void *failed = (void *)2;
        pthread_join(t[i], &failed);
        cr_assert_null(failed, "thread %d: a realloc failed or lost its contents", i);
    }
}
