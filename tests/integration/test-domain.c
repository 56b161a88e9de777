/*
 * test-domain.c: collector domains. Each has its own generations, thresholds, statistics and
 * collector; threads work in their own domains in parallel; a domain with live objects
 * cannot be freed; and the misuse the rule forbids (two threads in one domain at once, an
 * object of one domain given to another) aborts with a message in every build.
 */
#include "test-gc-common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

TestSuite(domain, .init = gc_test_setup);

static size_t tracked(void) { return pm_gc_get_objects(-1, NULL, 0); }

Test(domain, own_generations_thresholds_and_stats) {
    node *outside = new_node(0); /* in the default domain */
    pm_domain *d = pm_domain_new();
    cr_assert_not_null(d);
    pm_domain *prev = pm_domain_enter(d);
    cr_assert_eq(prev, pm_domain_default());
    cr_assert_eq(pm_domain_current(), d);
    cr_assert_eq(tracked(), 0, "a new domain has no objects");
    cr_assert_eq(pm_gc_set_threshold(5, 3, 2), 0);
    pm_gc_disable();
    node *ring = make_ring(&node_type, 10, 1);
    cr_assert_eq(tracked(), 10);
    pm_decref(&ring->base);
    cr_assert_eq(pm_gc_collect(2).collected, 10, "the domain's collector frees its cycle");
    pm_gc_stats st[3];
    pm_gc_get_stats(st);
    cr_assert_eq(st[2].collections, 1);
    cr_assert_eq(st[2].collected, 10);
    cr_assert_eq(pm_domain_live_objects(d), 0);
    pm_domain_enter(prev);
    long th[3];
    pm_gc_get_threshold(th);
    cr_assert_eq(th[0], 2000, "the default domain kept its thresholds");
    cr_assert_eq(tracked(), 1, "and its objects");
    pm_gc_get_stats(st);
    cr_assert_eq(st[2].collected, 0, "and its statistics");
    cr_assert_eq(pm_domain_free(d), 0);
    pm_decref(&outside->base);
}

Test(domain, free_refuses_a_domain_with_live_objects) {
    pm_domain *d = pm_domain_new();
    pm_domain *prev = pm_domain_enter(d);
    node *n = new_node(1);
    pm_domain_enter(prev);
    errno = 0;
    cr_assert_eq(pm_domain_free(d), -1);
    cr_assert_eq(errno, EBUSY);
    pm_domain_enter(d);
    pm_decref(&n->base);
    pm_domain_enter(prev);
    cr_assert_eq(pm_domain_free(d), 0);
    cr_assert_eq(pm_domain_free(NULL), -1);
    cr_assert_eq(pm_domain_free(pm_domain_default()), -1, "the default domain stays");
}

/* Threads, each in its own domain, build and drop cycles with automatic collection on, in
 * parallel: no shared state between domains may be corrupted. */
#define WORKERS 4
#define ROUNDS 3000
typedef struct work {
    long collected, released;
} work;
static __thread long thread_released; /* node_release's counter is shared: not for threads */
static void wnode_release(pm_object *self) {
    node *n = (node *)self;
    cr_assert_eq(n->canary, CANARY_LIVE, "release of a node twice, or of a corrupt one");
    n->canary = CANARY_DEAD;
    thread_released++;
}
static pm_type wnode_type = {.name = "wnode", .size = sizeof(node), .ref_offsets = node_refs,
                             .release = wnode_release};
static void *worker(void *arg) {
    work *w = arg;
    pm_domain *d = pm_domain_new();
    if (d == NULL)
        return (void *)1;
    pm_domain_enter(d);
    pm_gc_enable();
    for (int i = 0; i < ROUNDS; i++) {
        node *ring = make_ring(&wnode_type, 1 + i % 7, i);
        pm_decref(&ring->base);
    }
    pm_gc_collect(2);
    pm_gc_stats st[3];
    pm_gc_get_stats(st);
    w->collected = (long)(st[0].collected + st[1].collected + st[2].collected);
    w->released = thread_released;
    bool empty = pm_domain_live_objects(d) == 0;
    pm_domain_enter(NULL);
    return (void *)(uintptr_t)(!empty || pm_domain_free(d) != 0);
}

Test(domain, threads_in_their_own_domains_run_in_parallel, .timeout = 60) {
    pthread_t t[WORKERS];
    work w[WORKERS];
    long expect = 0;
    for (int i = 0; i < ROUNDS; i++)
        expect += 1 + i % 7;
    for (int i = 0; i < WORKERS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    for (int i = 0; i < WORKERS; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        cr_assert_null(rc, "worker %d: its domain was not empty or could not be freed", i);
        cr_assert_eq(w[i].collected, expect, "worker %d collected %ld of %ld", i,
                     w[i].collected, expect);
        cr_assert_eq(w[i].released, expect, "worker %d: every node released exactly once", i);
    }
}

/* ---- misuse ---- */

static pm_domain *shared;
static atomic_int inside;
static void wait_forever(pm_object *self) {
    (void)self;
    atomic_store(&inside, 1);
    for (;;)
        pause(); /* the other thread's abort ends the process */
}
static pm_type waiting_type = {.name = "waiting", .size = sizeof(node),
                               .ref_offsets = node_refs, .finalize = wait_forever};
static void *collect_and_wait(void *arg) {
    (void)arg;
    pm_domain_enter(shared);
    node *n = new_node_of(&waiting_type, 1);
    n->a = pm_newref(&n->base);
    pm_decref(&n->base);
    pm_gc_collect(2); /* runs wait_forever, inside the domain */
    return NULL;
}

Test(domain, two_threads_in_one_domain_abort, .signal = SIGABRT, .timeout = 20) {
    shared = pm_domain_new();
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, collect_and_wait, NULL), 0);
    while (!atomic_load(&inside))
        sched_yield();
    pm_domain_enter(shared);
    (void)pm_new(&node_type); /* the other thread is inside the domain: abort */
}

Test(domain, object_of_another_domain_aborts, .signal = SIGABRT) {
    pm_domain *d = pm_domain_new();
    pm_domain *prev = pm_domain_enter(d);
    node *n = new_node(1);
    pm_domain_enter(prev);
    pm_decref(&n->base); /* its last reference, dropped from the default domain: abort */
}

Test(domain, tracking_an_object_of_another_domain_aborts, .signal = SIGABRT) {
    pm_domain *d = pm_domain_new();
    node *n = (node *)pm_new(&mnode_type); /* default domain */
    pm_domain_enter(d);
    pm_track(&n->base);
}
