/*
 * test-fork.c: fork() from a process whose other threads are allocating and freeing.
 *
 * A lock that another thread holds at the moment of fork stays held forever in the child, so
 * an allocator without fork handlers deadlocks the child's first malloc now and then. Each
 * child here allocates and frees every kind of block, also from a new thread of its own, and
 * must exit 0 within a deadline; a hang fails the test (the child is killed after 10 s, and
 * Criterion's timeout covers the parent).
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "poolmalloc.h"
#include "test-util.h"

#define KiB ((size_t)1 << 10)

static _Atomic bool stop;
static _Atomic uint64_t churned;

/* Exchange slots between the churn threads, so that some frees are remote ones. */
enum { SHARED = 256 };
static void *_Atomic shared_slot[SHARED];

static size_t churn_size(uint64_t r) {
    switch (r % 64) {
    case 0: return 130 * KiB + (size_t)(r >> 20) % (900 * KiB); /* large: the large table lock */
    case 1 ... 6: return 1024 + (size_t)(r >> 20) % (100 * KiB);
    default: return (size_t)(r >> 20) % 600;
    }
}

static void *churn(void *arg) {
    uint64_t s = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *local[64] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = rng_next(&s);
        unsigned i = (unsigned)(r >> 8) % 64;
        pm_free(local[i]);
        local[i] = pm_malloc(churn_size(r));
        if (local[i] != NULL)
            memset(local[i], 0x5C, 16);
        if ((r & 7) == 0) { /* hand a block to whoever takes this slot next */
            void *mine = pm_malloc(churn_size(r >> 3));
            void *theirs = atomic_exchange(&shared_slot[(r >> 40) % SHARED], mine);
            pm_free(theirs);
        }
        if ((r & 0xfff) == 0)
            pm_trim(); /* purging takes the arena lock too */
        atomic_fetch_add_explicit(&churned, 1, memory_order_relaxed);
    }
    for (unsigned i = 0; i < 64; i++)
        pm_free(local[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        void *p = pm_malloc((size_t)(i * 37) % 3000);
        void *q = pm_malloc(200 * KiB);
        if (p == NULL || q == NULL)
            return (void *)1;
        pm_free(p);
        pm_free(q);
    }
    return NULL;
}

/* What the child does: every path of the allocator, then _exit(0). Not exit(): the child is a
 * copy of Criterion's worker, and Criterion's own exit handlers, run in a copy, report to the
 * runner as if the test had ended, which hangs it. (Exit-time destructors under fork are what
 * the preload tests exercise, in real programs.) Any failure is a distinct exit code. */
static void child_work(void) {
    void *blocks[500];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 500; i++) {
            size_t size = i % 50 == 0 ? 300 * KiB : (size_t)(i * 13 + round) % 4000;
            blocks[i] = pm_malloc(size);
            if (blocks[i] == NULL)
                _exit(2);
            memset(blocks[i], 0x11, size);
        }
        for (int i = 0; i < 500; i++)
            pm_free(blocks[i]);
    }
    /* Blocks the parent's other threads allocated (now owned by heaps whose threads do not
     * exist in the child) must free too. */
    for (unsigned i = 0; i < SHARED; i++)
        pm_free(atomic_exchange(&shared_slot[i], NULL));
    void *big = pm_realloc(NULL, 1 << 20);
    big = pm_realloc(big, 8 << 20);
    if (big == NULL)
        _exit(3);
    pm_free(big);
    pthread_t t;
    void *result = NULL;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, &result) != 0 ||
        result != NULL)
        _exit(4);
    pm_trim();
    _exit(0);
}

/* Waits up to timeout_ms for the child; kills it and reports a hang past that. */
static int wait_with_deadline(pid_t pid, int timeout_ms, bool *hung) {
    int status = 0;
    *hung = false;
    for (int waited = 0;; waited += 5) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (waited >= timeout_ms) {
            *hung = true;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return status;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

Test(fork, fork_while_other_threads_allocate, .timeout = 30) {
    enum { THREADS = 3, FORKS = 30 };
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, churn, (void *)(i + 1)), 0);
    for (int f = 0; f < FORKS; f++) {
        /* Let the threads get going so that the fork lands in the middle of their work. */
        uint64_t before = atomic_load(&churned);
        while (atomic_load(&churned) < before + 2000)
            sched_yield();
        pid_t pid = fork();
        cr_assert_neq(pid, -1, "fork failed");
        if (pid == 0)
            child_work();
        bool hung;
        int status = wait_with_deadline(pid, 10000, &hung);
        cr_assert_not(hung, "fork %d: the child hung (a lock held across fork?)", f);
        cr_assert(WIFEXITED(status), "fork %d: the child died of signal %d", f,
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        cr_assert_eq(WEXITSTATUS(status), 0, "fork %d: the child exited with %d", f,
                     WEXITSTATUS(status));
    }
    atomic_store(&stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (unsigned i = 0; i < SHARED; i++)
        pm_free(atomic_exchange(&shared_slot[i], NULL));
    /* The parent's allocator still works after all those forks. */
    void *p = pm_malloc(100);
    cr_assert(p != NULL && pm_owns(p));
    pm_free(p);
}

/* A child that forks again (a shell pipeline does): the handlers must leave the child's
 * allocator in a state that survives another fork. */
Test(fork, nested_forks, .timeout = 30) {
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, churn, (void *)99), 0);
    for (int f = 0; f < 5; f++) {
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            pthread_t ct;
            if (pthread_create(&ct, NULL, churn, (void *)7) != 0)
                _exit(5);
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            pid_t grandchild = fork();
            if (grandchild == 0)
                child_work();
            bool hung;
            int status = wait_with_deadline(grandchild, 10000, &hung);
            atomic_store(&stop, true);
            pthread_join(ct, NULL);
            _exit(hung ? 6 : WIFEXITED(status) ? WEXITSTATUS(status) : 7);
        }
        bool hung;
        int status = wait_with_deadline(pid, 20000, &hung);
        cr_assert_not(hung, "nested fork %d hung", f);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "nested fork %d: status %#x (6: grandchild hung, 7: grandchild crashed)", f,
                  status);
    }
    atomic_store(&stop, true);
    pthread_join(t, NULL);
}
