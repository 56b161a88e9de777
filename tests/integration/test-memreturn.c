/*
 * test-memreturn.c: memory that a program frees goes back to the OS.
 *
 * Each test builds a 512 MiB working set of small, medium and large blocks, touches all of it,
 * frees it in random order, and reads the resident set size from /proc/self/statm: once right
 * after pm_trim(), once with no call at all (the purge delay passes and the allocator's own
 * slow paths give the memory back), and once for blocks that an exited thread allocated.
 *
 * What may stay resident: each size class's current pool (up to 1 MiB for the biggest
 * classes, about 8 MiB over all classes), and the page tables and such of the process. The
 * bounds below leave room for that and nothing like the working set.
 */
#include "config.h" /* first: internal.h needs its _GNU_SOURCE before any libc header */

#include <criterion/criterion.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h" /* pm_opt.purge_delay_ms */
#include "poolmalloc.h"
#include "test-util.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* Left resident after everything was freed, beyond what the process had before. */
#define ALLOWED_RESIDUE (32 * MiB)

typedef struct working_set {
    void **blocks;
    size_t count, cap, bytes;
    size_t failed_size;
    bool ok;
} working_set;

/* False (and the failing size in *failed_size) if an allocation failed. No Criterion assert
 * here: this also runs on a thread of our own, where an assert cannot stop the test. */
static bool add_blocks(working_set *ws, uint64_t *seed, size_t budget, size_t min, size_t max) {
    for (size_t got = 0; got < budget;) {
        size_t size = min + (size_t)(rng_next(seed) % (max - min + 1));
        void *p = ws->count < ws->cap ? pm_malloc(size) : NULL;
        if (p == NULL) {
            ws->failed_size = size;
            return false;
        }
        memset(p, 0x77, size); /* resident for real */
        ws->blocks[ws->count++] = p;
        got += size;
        ws->bytes += size;
    }
    return true;
}

/* 256 MiB of small blocks, 128 MiB of medium ones and 128 MiB of large ones. Pointers are kept
 * in a glibc-allocated array (this test does not replace malloc), outside poolmalloc's count. */
static working_set build_working_set(uint64_t seed) {
    working_set ws = {0};
    ws.cap = 1200000;
    ws.blocks = malloc(ws.cap * sizeof *ws.blocks);
    ws.ok = ws.blocks != NULL && add_blocks(&ws, &seed, 256 * MiB, 16, 1024) &&
            add_blocks(&ws, &seed, 128 * MiB, 1025, 128 * KiB) &&
            add_blocks(&ws, &seed, 128 * MiB, 256 * KiB, 4 * MiB);
    return ws;
}

static void check_built(const working_set *ws) {
    cr_assert(ws->ok, "building the working set failed (pm_malloc(%zu), %zu blocks so far)",
              ws->failed_size, ws->count);
}

static void free_in_random_order(working_set *ws, uint64_t seed) {
    for (size_t i = ws->count; i > 1; i--) {
        size_t j = (size_t)(rng_next(&seed) % i);
        void *t = ws->blocks[i - 1];
        ws->blocks[i - 1] = ws->blocks[j];
        ws->blocks[j] = t;
    }
    for (size_t i = 0; i < ws->count; i++)
        pm_free(ws->blocks[i]);
    free(ws->blocks);
    ws->blocks = NULL;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A little allocation activity of the kind a running program has: enough to leave the fast
 * paths (new pools acquired and released, a large block freed), which is where the
 * allocator checks whether the purge delay has passed. */
static void a_little_activity(void) {
    void *medium[64];
    for (int i = 0; i < 64; i++)
        medium[i] = pm_malloc(100 * KiB);
    for (int i = 0; i < 64; i++)
        pm_free(medium[i]);
    void *small[2000];
    for (int i = 0; i < 2000; i++)
        small[i] = pm_malloc(48);
    for (int i = 0; i < 2000; i++)
        pm_free(small[i]);
    pm_free(pm_malloc(1 * MiB));
}

static void check_grew(size_t before, size_t peak) {
    cr_assert_geq(peak, before + 400 * MiB,
                  "the working set did not become resident (%zu -> %zu bytes): test is void",
                  before, peak);
}

Test(memreturn, trim_returns_freed_memory, .timeout = 60) {
    size_t before = resident_bytes();
    working_set ws = build_working_set(1);
    check_built(&ws);
    size_t peak = resident_bytes();
    check_grew(before, peak);
    free_in_random_order(&ws, 2);
    int released = pm_trim();
    size_t after = resident_bytes();
    cr_assert_eq(released, 1, "pm_trim() released nothing after 512 MiB were freed");
    cr_assert_leq(after, before + ALLOWED_RESIDUE,
                  "resident: %zu MiB before, %zu MiB with the working set, %zu MiB after free and "
                  "pm_trim()",
                  before / MiB, peak / MiB, after / MiB);
}

Test(memreturn, freed_memory_returns_after_purge_delay_without_trim, .timeout = 60) {
    long delay = pm_opt.purge_delay_ms;
    if (delay < 0)
        cr_skip_test("POOLMALLOC_PURGE_DELAY is negative: purging without pm_trim is off");
    size_t before = resident_bytes();
    working_set ws = build_working_set(3);
    check_built(&ws);
    size_t peak = resident_bytes();
    check_grew(before, peak);
    free_in_random_order(&ws, 4);
    /* Poll for up to 80 purge delays (at least 4 s): the memory must come back on its own.
     * Cached large mappings expire after 4 purge delays (large.c); the rest is slack for a
     * loaded machine. */
    size_t after = resident_bytes();
    long waited = 0, limit = delay * 80 < 4000 ? 4000 : delay * 80;
    while (after > before + ALLOWED_RESIDUE && waited < limit) {
        sleep_ms(delay + 10);
        waited += delay + 10;
        a_little_activity();
        after = resident_bytes();
    }
    cr_assert_leq(after, before + ALLOWED_RESIDUE,
                  "resident: %zu MiB before, %zu MiB with the working set, still %zu MiB %ld ms "
                  "after freeing it (purge delay %ld ms), without pm_trim()",
                  before / MiB, peak / MiB, after / MiB, waited, delay);
}

/* A worker builds the data and exits; the main thread frees it all later (a common shape:
 * a loader thread, a request handler). Its heap was handed over with no thread to drain the
 * blocks freed into it, yet the memory must still come back. */
static void *build_and_exit(void *arg) {
    working_set *ws = arg;
    *ws = build_working_set(5);
    return NULL;
}

Test(memreturn, blocks_of_an_exited_thread_return_after_free, .timeout = 60) {
    size_t before = resident_bytes();
    working_set ws;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, build_and_exit, &ws), 0);
    pthread_join(t, NULL);
    check_built(&ws);
    size_t peak = resident_bytes();
    check_grew(before, peak);
    free_in_random_order(&ws, 6);
    pm_trim();
    size_t after = resident_bytes();
    cr_assert_leq(after, before + ALLOWED_RESIDUE,
                  "resident: %zu MiB before, %zu MiB with the exited thread's working set, %zu MiB "
                  "after the main thread freed it and called pm_trim()",
                  before / MiB, peak / MiB, after / MiB);
}
