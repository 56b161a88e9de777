/*
 * test-torture.c: the torture suite of issue 7, on the core's pm_ functions.
 *
 *   fork_storm            fork-storm.h: 4 threads fork while 4 allocate across threads; every
 *                         child must allocate, free and exit within its deadline
 *   thread_churn          short threads whose pthread key destructors re-arm and allocate,
 *                         with blocks passed between threads; heaps stay bounded, nothing leaks
 *   rlimit_as             RLIMIT_AS exhaustion: malloc fails cleanly with ENOMEM, and after
 *                         freeing everything the memory is there again, round after round
 *   map_count             random allocation and frees with vm.max_map_count used up
 *   misuse                children doing random work, then one random misuse: each must die of
 *                         SIGABRT with poolmalloc's report, never a SIGSEGV, a hang or silence
 *
 * Each has a CI budget of a few seconds (PM_TORTURE_SECONDS=N for longer) and runs in a child
 * with a deadline. Each prints how much work it did.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "fork-storm.h"
#include "os-limits.h"
#include "poolmalloc.h"
#include "test-util.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static double budget;

static size_t torture_size(uint64_t r) {
    switch (r % 64) {
    case 0: return 130 * KiB + (size_t)(r >> 20) % (3 * MiB);
    case 1 ... 8: return 1024 + (size_t)(r >> 20) % (127 * KiB);
    default: return (size_t)(r >> 20) % 1024;
    }
}

/* Runs fn in a child with a deadline of the budget plus slack; prints what it printed. */
static void run_torture(void (*fn)(void *), const char *what) {
    static pm_child c;
    pm_spawn spec = {.fn = fn, .timeout_s = (unsigned)budget + 60};
    pm_test_spawn(&spec, &c);
    pm_test_report_counts(c.out);
    pm_test_expect_exit0(&c, what);
}

/* ---- fork storm (fork-storm.h) ------------------------------------------------------------ */

static void fork_storm(void *arg) {
    (void)arg;
    static const storm_alloc pm_pair = {pm_malloc, pm_free};
    storm_result r = storm_run(&pm_pair, budget, pm_test_seed());
    printf("fork storm: %ld forks (%ld hung, %ld failed), %ld allocator operations\n", r.forks,
           r.hung, r.failed, r.ops);
    if (r.hung || r.failed)
        PM_CHILD_FAIL("%ld of %ld fork children hung and %ld failed", r.hung, r.forks, r.failed);
}

Test(torture, fork_storm) {
    budget = pm_test_budget(6);
    run_torture(fork_storm, "fork storm");
}

/* ---- thread churn with late-allocating key destructors ---------------------------------- */

static _Atomic long n_ops;
enum { SLOTS = 512 };
static void *_Atomic slot[SLOTS];


static pthread_key_t churn_key;

static void churn_destructor(void *value) {
    (void)value;
    void *p = pm_malloc(40 + (size_t)(atomic_load(&n_ops) % 900));
    if (p != NULL)
        memset(p, 1, 40);
    pm_free(atomic_exchange(&slot[(uintptr_t)p % SLOTS], p)); /* late, and remote later */
    pthread_setspecific(churn_key, (void *)1);
}

static void *churn_thread(void *arg) {
    uint64_t s = (uint64_t)(uintptr_t)arg + pm_test_seed() * 7919 + 1;
    pthread_setspecific(churn_key, (void *)1);
    void *mine[32] = {0};
    for (int k = 0; k < 200; k++) {
        uint64_t r = rng_next(&s);
        unsigned i = (unsigned)(r >> 8) % 32;
        pm_free(mine[i]);
        mine[i] = pm_malloc(torture_size(r));
        if ((r & 7) == 0) {
            pm_free(atomic_exchange(&slot[(r >> 40) % SLOTS], mine[i]));
            mine[i] = NULL;
        }
        atomic_fetch_add_explicit(&n_ops, 1, memory_order_relaxed);
    }
    for (int i = 0; i < 32; i++)
        pm_free(mine[i]);
    return NULL;
}

static void thread_churn(void *arg) {
    (void)arg;
    pthread_key_create(&churn_key, churn_destructor);
    pm_stats_t before, after;
    pm_stats_get(&before);
    double end = pm_test_now() + budget;
    long threads = 0;
    while (pm_test_now() < end) {
        pthread_t t[8];
        for (int j = 0; j < 8; j++)
            pthread_create(&t[j], NULL, churn_thread, (void *)(uintptr_t)(threads + j));
        for (int j = 0; j < 8; j++)
            pthread_join(t[j], NULL);
        threads += 8;
    }
    for (int i = 0; i < SLOTS; i++)
        pm_free(atomic_exchange(&slot[i], NULL));
    pm_trim();
    pm_stats_get(&after);
    uint64_t heaps = after.heaps_created - before.heaps_created;
    printf("thread churn: %ld threads, %ld operations, %llu heaps created, %llu small blocks "
           "in use at the end (%llu before)\n", threads, atomic_load(&n_ops),
           (unsigned long long)heaps, (unsigned long long)after.small_blocks_in_use,
           (unsigned long long)before.small_blocks_in_use);
    if (heaps > 64)
        PM_CHILD_FAIL("%llu heaps created for at most 8 live threads", (unsigned long long)heaps);
    if (after.small_blocks_in_use > before.small_blocks_in_use + 64)
        PM_CHILD_FAIL("%llu small blocks still in use after every one was freed",
                   (unsigned long long)(after.small_blocks_in_use - before.small_blocks_in_use));
}

Test(torture, thread_churn_with_late_destructors) {
    budget = pm_test_budget(5);
    run_torture(thread_churn, "thread churn");
}

/* ---- RLIMIT_AS exhaustion and recovery ---------------------------------------------------- */

static void rlimit_as(void *arg) {
    (void)arg;
    enum { MAX = 1 << 20 };
    void **held = mmap(NULL, MAX * sizeof(void *), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (held == MAP_FAILED)
        PM_CHILD_FAIL("mmap");
    struct rlimit lim = {limits_address_space() + 256 * MiB, RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        PM_CHILD_FAIL("setrlimit");
    uint64_t s = 11 + pm_test_seed();
    long rounds = 0, refusals = 0, ops = 0;
    double end = pm_test_now() + budget;
    while (pm_test_now() < end || rounds < 2) {
        size_t n = 0;
        for (;;) { /* until the OS says no */
            size_t size = torture_size(rng_next(&s));
            errno = 0;
            void *p = pm_malloc(size);
            ops++;
            if (p == NULL) {
                if (errno != ENOMEM)
                    PM_CHILD_FAIL("malloc(%zu) failed with errno %d, not ENOMEM", size, errno);
                if (++refusals % 4 == 0 || n >= MAX)
                    break;
                continue;
            }
            memset(p, 7, size < 4096 ? size : 4096);
            held[n++] = p;
            if (n == MAX)
                break;
        }
        size_t before_free = n;
        while (n > 0)
            pm_free(held[--n]);
        /* recovery: what was freed must be available again, without pm_trim */
        for (size_t i = 0; i < 150; i++) {
            held[i] = pm_malloc(MiB);
            if (held[i] == NULL)
                PM_CHILD_FAIL("round %ld: malloc(1 MiB) number %zu failed after %zu blocks were "
                           "freed under RLIMIT_AS", rounds, i, before_free);
        }
        for (size_t i = 0; i < 150; i++)
            pm_free(held[i]);
        rounds++;
    }
    printf("rlimit_as: %ld rounds of exhaustion and recovery, %ld refusals, %ld operations\n",
           rounds, refusals, ops);
}

Test(torture, rlimit_as_exhaustion_and_recovery) {
    budget = pm_test_budget(5);
    run_torture(rlimit_as, "RLIMIT_AS");
}

/* ---- the map count used up ----------------------------------------------------------------- */

static void map_count(void *arg) {
    (void)arg;
    enum { N = 4096 };
    static void *held[N];
    uint64_t s = 5 + pm_test_seed();
    for (int i = 0; i < N; i++) /* live memory of all kinds before the limit */
        held[i] = pm_malloc(torture_size(rng_next(&s)));
    char *region;
    size_t region_len;
    long splits = limits_exhaust_map_count(&region, &region_len);
    if (splits < 0)
        PM_CHILD_FAIL("could not use up the map count: %s", strerror(errno));
    long ops = 0, refused = 0;
    double end = pm_test_now() + budget;
    while (pm_test_now() < end) {
        uint64_t r = rng_next(&s);
        int i = (int)((r >> 16) % N);
        pm_free(held[i]);
        held[i] = pm_malloc(torture_size(r));
        refused += held[i] == NULL;
        if (held[i] != NULL && (r & 15) == 0) {
            void *q = pm_realloc(held[i], torture_size(r >> 3) + 1);
            if (q != NULL)
                held[i] = q;
        }
        if ((r & 0xfff) == 0)
            pm_trim();
        ops++;
    }
    for (int i = 0; i < N; i++)
        pm_free(held[i]);
    pm_trim();
    munmap(region, region_len);
    void *p = pm_malloc(MiB);
    if (p == NULL)
        PM_CHILD_FAIL("malloc failed after the map count was given back");
    pm_free(p);
    printf("map count: %ld splits used it up; %ld operations at the limit, %ld refused\n",
           splits, ops, refused);
}

Test(torture, map_count_limit) {
    budget = pm_test_budget(4);
    run_torture(map_count, "map count");
}

/* ---- random misuse ---------------------------------------------------------------------- */

static void *volatile other_thread_block;
static void *alloc_elsewhere(void *arg) {
    other_thread_block = pm_malloc((size_t)(uintptr_t)arg);
    return NULL;
}

/* Random legitimate work, then misuse number `kind`. */
static void misuse_child(void *arg) {
    uintptr_t kind = (uintptr_t)arg;
    uint64_t s = (kind + pm_test_seed()) * 977 + 1;
    static void *held[256];
    for (int k = 0; k < 5000; k++) {
        unsigned i = (unsigned)(rng_next(&s) % 256);
        pm_free(held[i]);
        held[i] = pm_malloc(torture_size(rng_next(&s)));
    }
    char stack_buffer[64];
    static char static_buffer[64];
    size_t size = torture_size(rng_next(&s)) + 32;
    char *p = pm_malloc(size);
    switch (kind % 7) {
    case 0: pm_free(p); pm_free(p); break;                    /* double free */
    case 1: pm_free(p + 16); break;                           /* interior pointer */
    case 2: pm_free(stack_buffer); break;                     /* stack */
    case 3: pm_free(static_buffer + 16); break;               /* static */
    case 4: pm_free((void *)(uintptr_t)0x7e0000001000ull); break; /* wild */
    case 5: {                                                 /* remote double free */
        pthread_t t;
        pthread_create(&t, NULL, alloc_elsewhere, (void *)(uintptr_t)size);
        pthread_join(t, NULL);
        pm_free(other_thread_block);
        pm_free(other_thread_block);
        break;
    }
    case 6: pm_free(p); pm_free(pm_realloc(p, size * 2)); break; /* realloc after free */
    }
    printf("misuse %lu was accepted\n", (unsigned long)kind);
    _exit(3);
}

Test(torture, random_misuse_always_reports) {
    budget = pm_test_budget(3);
    double end = pm_test_now() + budget;
    static const char *const names[] = {"double free",    "interior pointer",
                                        "stack pointer",  "static pointer",
                                        "wild pointer",   "remote double free",
                                        "realloc after free"};
    long runs = 0;
    static pm_child c;
    for (uintptr_t kind = 0; kind < 14 || pm_test_now() < end; kind++, runs++) {
        pm_spawn spec = {.fn = misuse_child, .arg = (void *)kind, .timeout_s = 20};
        pm_test_spawn(&spec, &c);
        char what[96];
        snprintf(what, sizeof what, "misuse %lu (%s)", (unsigned long)kind, names[kind % 7]);
        pm_test_expect_abort(&c, what, (const char *[]){"poolmalloc:", NULL});
    }
    char line[96];
    snprintf(line, sizeof line, "misuse: %ld children, each aborted with a report\n", runs);
    pm_test_report_counts(line);
}
