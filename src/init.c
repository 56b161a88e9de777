/*
 * init.c: start-up, the per-process secrets, fork, and the thread lifecycle.
 *
 * Start-up runs once, on the first allocation from any thread (possibly before our
 * constructor, from the dynamic loader or another library's constructor). Nothing here may
 * allocate.
 *
 * The thread lifecycle is one small state machine per thread (pm_thread_state):
 *
 *     NEW --first malloc--> LIVE --thread exit (key destructor)--> EXITED
 *
 *   NEW     no heap yet; the fast paths see the sentinel heap and fall to the slow paths.
 *   LIVE    a heap is installed and the exit hook armed (pthread key): its destructor hands
 *           the heap over (pm_heap_abandon) exactly once.
 *   EXITED  the heap is gone. Other key destructors may still run and allocate (glibc runs up
 *           to four rounds, and a destructor may re-arm its key each round): each such
 *           allocation borrows an abandoned heap and hands it back at once, and frees go the
 *           way of any thread's free into a pool it does not own. So a late allocation can
 *           never leave behind a heap nobody hands over (issue 7.5: 2000 threads once left
 *           2001 heaps), and the exit hook is never armed twice.
 */
#include "internal.h"
#include "instrument/instrument.h"

#include <sched.h>
#include <sys/auxv.h>

_Atomic int pm_initialized; /* 0 not yet, 1 running, 2 done */
static PM_TLS bool initialising;
PM_TLS uint8_t pm_thread_state;
pm_secrets pm_secret;
static pthread_key_t exit_key;

/* ---- secrets ---------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) { /* a bijective scrambler (splitmix64's finaliser) */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Drawn before any block exists, never changed after: every link and key depends on them. The
 * key secret's low 4 bits are set so that no 16-aligned block can have key == 0 == "in use". */
static void secrets_init(void) {
    uint64_t seed = pm_os_random_seed() ^ (uint64_t)(uintptr_t)&exit_key;
    pm_secret.link = (uintptr_t)mix64(seed);
    pm_secret.key = (uintptr_t)mix64(seed + 0x9e3779b97f4a7c15ull) | 15u;
}

/* ---- fork -------------------------------------------------------------------------------- */

/* Locks are taken in the allocator's one lock order (I7): heap_lock, every heap's xlock,
 * pm_arena_lock, then the large lock. The child reinitialises every lock before anything
 * else and then does no work that could take one or call the OS. */
static void fork_prepare(void) {
    pm_heap_fork_prepare();
    pm_large_fork_prepare();
}
static void fork_parent(void) {
    pm_large_fork_parent();
    pm_heap_fork_parent();
}
static void fork_child(void) {
    pm_large_fork_child();
    pm_heap_fork_child();
}

/* ---- the thread lifecycle ----------------------------------------------------------------- */

static void on_thread_exit(void *arg) {
    pm_heap *heap = arg;
    if (heap == NULL || heap != pm_thread_heap)
        return;
    pm_thread_state = PM_THREAD_EXITED;
    pm_heap_install(NULL);
    pm_heap_abandon(heap);
}

pm_heap *pm_thread_heap_get(void) {
    pm_heap *h = pm_thread_heap;
    if (PM_LIKELY(h != NULL) || pm_thread_state == PM_THREAD_EXITED)
        return h;
    pm_options_refresh(); /* a new thread: a moment to apply an environment set late */
    h = pm_heap_take();
    if (h != NULL) {
        pm_heap_install(h);
        pm_thread_state = PM_THREAD_LIVE;
        /* After the heap is installed: pthread_setspecific may allocate, and must find it. */
        pthread_setspecific(exit_key, h);
    }
    return h;
}

/* ---- start-up ------------------------------------------------------------------------------ */

void pm_init(void) {
    if (PM_LIKELY(atomic_load_explicit(&pm_initialized, memory_order_acquire) == 2))
        return;
    int expected = 0;
    if (atomic_compare_exchange_strong(&pm_initialized, &expected, 1)) {
        initialising = true;
        secrets_init();
        pm_sizeclass_init();
        pm_options_init();
        pm_inline_max_update();
        pm_instr_init(); /* before any heap is installed: it decides the fast heap */
        pm_arena_init();
        if (pthread_key_create(&exit_key, on_thread_exit) != 0)
            pm_fatal("pthread_key_create failed: cannot track thread exit");
        /* Registered before any other thread of ours can exist to race with a fork. */
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        pm_stats_init();
        atomic_store_explicit(&pm_initialized, 2, memory_order_release);
        initialising = false;
        return;
    }
    if (initialising)
        pm_fatal("allocator re-entered during its own initialisation (recursion)");
    while (atomic_load_explicit(&pm_initialized, memory_order_acquire) != 2)
        sched_yield();
}

/* Also the moment the environment is surely there, if the first malloc came before libc set
 * environ (options.c keeps such options pending). */
__attribute__((constructor)) static void pm_constructor(void) {
    pm_init();
    pm_options_refresh();
}
