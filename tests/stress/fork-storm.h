/*
 * fork-storm.h: a fork storm for any malloc/free pair (issue 7, case 1): 4 threads fork while
 * 4 allocate small and large blocks and pass them between each other; each child allocates and
 * frees small and large blocks and must exit 0 before its deadline, else it counts as hung.
 *
 * Used on pm_malloc by test-torture and on plain malloc (preloaded) by lifecycle-prog.
 */
#ifndef PM_FORK_STORM_H
#define PM_FORK_STORM_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct storm_alloc {
    void *(*malloc)(size_t);
    void (*free)(void *);
} storm_alloc;

typedef struct storm_result {
    long forks, hung, failed, ops;
} storm_result;

enum { STORM_SLOTS = 512, STORM_CHILD_MS = 5000 };

static const storm_alloc *storm_a;
static _Atomic bool storm_stop;
static _Atomic long storm_forks, storm_hung, storm_failed, storm_ops;
static void *_Atomic storm_slot[STORM_SLOTS];
static uint64_t storm_seed;

static inline uint64_t storm_rng(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static inline size_t storm_size(uint64_t r) {
    switch (r % 32) {
    case 0: return (130 << 10) + (size_t)(r >> 20) % (2u << 20);   /* large */
    case 1 ... 4: return 1024 + (size_t)(r >> 20) % (120 << 10);   /* medium */
    default: return (size_t)(r >> 20) % 700;                       /* small */
    }
}

/* Forks; the child allocates and frees small and large blocks. 0: the child exited 0 in
 * time; 1: it hung (killed at the deadline); 2: it failed otherwise; -1: fork failed. */
static inline int storm_fork_one(const storm_alloc *a, long timeout_ms) {
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        alarm((unsigned)(timeout_ms / 1000) + 2); /* never outlive the parent's patience */
        for (int i = 0; i < 50; i++) {
            void *p = a->malloc(16 + (size_t)i * 40), *q = a->malloc(300 << 10);
            if (p == NULL || q == NULL)
                _exit(3);
            memset(p, 2, 16);
            memset(q, 2, 4096);
            a->free(p);
            a->free(q);
        }
        _exit(0);
    }
    int status;
    struct timespec ms = {0, 1000000};
    for (long waited = 0; waited < timeout_ms; waited++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 2;
        nanosleep(&ms, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return 1;
}

static inline void *storm_allocator(void *arg) {
    uint64_t s = ((uint64_t)(uintptr_t)arg + storm_seed) * 0x9e3779b97f4a7c15ull + 7;
    void *mine[128] = {0};
    while (!atomic_load_explicit(&storm_stop, memory_order_relaxed)) {
        uint64_t r = storm_rng(&s);
        unsigned i = (unsigned)(r >> 8) % 128;
        storm_a->free(mine[i]);
        mine[i] = storm_a->malloc(storm_size(r));
        if (mine[i] != NULL)
            memset(mine[i], 0x5A, 16);
        if ((r & 3) == 0) { /* cross-thread: whoever takes the slot frees it */
            void *p = storm_a->malloc(storm_size(r >> 5));
            storm_a->free(atomic_exchange(&storm_slot[(r >> 40) % STORM_SLOTS], p));
        }
        atomic_fetch_add_explicit(&storm_ops, 1, memory_order_relaxed);
    }
    for (int i = 0; i < 128; i++)
        storm_a->free(mine[i]);
    return NULL;
}

static inline void *storm_forker(void *arg) {
    (void)arg;
    while (!atomic_load_explicit(&storm_stop, memory_order_relaxed)) {
        int r = storm_fork_one(storm_a, STORM_CHILD_MS);
        atomic_fetch_add(&storm_forks, 1);
        if (r == 1)
            atomic_fetch_add(&storm_hung, 1);
        else if (r != 0)
            atomic_fetch_add(&storm_failed, 1);
    }
    return NULL;
}

/* Runs the storm for `seconds` (and until the children then running are done). */
static inline storm_result storm_run(const storm_alloc *a, double seconds, uint64_t seed) {
    storm_a = a;
    storm_seed = seed;
    pthread_t alloc[4], forker[4];
    for (uintptr_t i = 0; i < 4; i++)
        pthread_create(&alloc[i], NULL, storm_allocator, (void *)(i + 1));
    for (int i = 0; i < 4; i++)
        pthread_create(&forker[i], NULL, storm_forker, NULL);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&storm_stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(alloc[i], NULL);
        pthread_join(forker[i], NULL);
    }
    for (int i = 0; i < STORM_SLOTS; i++)
        a->free(atomic_exchange(&storm_slot[i], NULL));
    return (storm_result){atomic_load(&storm_forks), atomic_load(&storm_hung),
                          atomic_load(&storm_failed), atomic_load(&storm_ops)};
}

#endif /* PM_FORK_STORM_H */
