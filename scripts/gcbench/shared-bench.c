/*
 * shared-bench.c: the costs of shared domains (pm_domain_new_shared).
 *
 *   shared-bench refcount [N]
 *       ns per pm_incref + pm_decref pair on one object, N pairs (best of 5 batches):
 *       an object of the default domain; of a shared domain by its owner thread (plain
 *       count, through the out-of-line path); by another attached thread (atomic count).
 *   shared-bench collect THREADS N [reps]
 *       a shared domain holding a live ring of N nodes (two references each, built half by
 *       each of two threads when THREADS is 2); THREADS threads attached, the others taking
 *       safepoints in a loop; the median of `reps` full collections, in ns per object,
 *       stopping and restarting the world included. Beside it the same ring in a one-thread
 *       domain.
 * Output: lines "result <name> <value> <unit>", as gc-bench.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-time.h"
#include "poolmalloc.h"

typedef struct node {
    pm_object base;
    pm_object *a, *b;
} node;
static const pm_ref_offset node_refs[] = {offsetof(node, a), offsetof(node, b), 0};
static const pm_type node_type = {.name = "node", .size = sizeof(node),
                                  .ref_offsets = PM_REFS(node_refs)};


static void check(int ok, const char *what) {
    if (!ok) {
        perror(what);
        exit(1);
    }
}

/* ---- refcount ------------------------------------------------------------------------------ */

static double pairs_ns(pm_object *o, long n) {
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        uint64_t t0 = now_ns();
        for (long i = 0; i < n; i++) {
            pm_incref(o);
            __asm__ volatile("" : : "r"(o) : "memory");
            pm_decref(o);
            __asm__ volatile("" : : "r"(o) : "memory");
        }
        double ns = (double)(now_ns() - t0) / (double)n;
        if (ns < best)
            best = ns;
    }
    return best;
}

static pm_domain *dom;
static pm_object *shared_obj;
static long pairs;
static double other_ns;

static void *other_thread_pairs(void *arg) {
    (void)arg;
    check(pm_domain_attach(dom) == 0, "pm_domain_attach");
    other_ns = pairs_ns(shared_obj, pairs);
    check(pm_domain_detach() == 0, "pm_domain_detach");
    return NULL;
}

static void bench_refcount(long n) {
    pm_object *plain = pm_new(&node_type);
    check(plain != NULL, "pm_new");
    printf("result pair-default %.2f ns/pair\n", pairs_ns(plain, n));
    pm_decref(plain);

    dom = pm_domain_new_shared();
    check(dom != NULL, "pm_domain_new_shared");
    check(pm_domain_attach(dom) == 0, "pm_domain_attach");
    shared_obj = pm_new(&node_type);
    check(shared_obj != NULL, "pm_new");
    printf("result pair-shared-owner %.2f ns/pair\n", pairs_ns(shared_obj, n));
    pairs = n;
    pthread_t th;
    pthread_create(&th, NULL, other_thread_pairs, NULL);
    pthread_join(th, NULL);
    printf("result pair-shared-other %.2f ns/pair\n", other_ns);
    pm_decref(shared_obj);
    check(pm_domain_detach() == 0, "pm_domain_detach");
    check(pm_domain_free(dom) == 0, "pm_domain_free");
}

/* ---- collect ------------------------------------------------------------------------------- */

static node **ring;
static size_t ring_n;
static atomic_int stop_helper;
static pthread_barrier_t built;

/* Nodes [from, to) of the ring, made by the calling thread (their owner). */
static void make_nodes(size_t from, size_t to) {
    for (size_t i = from; i < to; i++) {
        ring[i] = (node *)pm_new(&node_type);
        check(ring[i] != NULL, "pm_new");
    }
}

static void link_ring(void) {
    for (size_t i = 0; i < ring_n; i++) {
        ring[i]->a = pm_newref(&ring[(i + 1) % ring_n]->base);
        ring[i]->b = pm_newref(&ring[(i + ring_n - 1) % ring_n]->base);
    }
}

static void unlink_ring(void) {
    for (size_t i = 0; i < ring_n; i++) {
        PM_CLEAR(ring[i]->a);
        PM_CLEAR(ring[i]->b);
    }
}

/* The second thread: owns half of the ring, then takes safepoints until told to stop. */
static void *helper(void *arg) {
    (void)arg;
    check(pm_domain_attach(dom) == 0, "pm_domain_attach");
    make_nodes(ring_n / 2, ring_n);
    pthread_barrier_wait(&built);
    while (!atomic_load_explicit(&stop_helper, memory_order_relaxed))
        pm_gc_safepoint();
    for (size_t i = ring_n / 2; i < ring_n; i++)
        pm_decref(&ring[i]->base);
    check(pm_domain_detach() == 0, "pm_domain_detach");
    return NULL;
}

static double median_collect_ns(size_t n, int reps) {
    uint64_t *t = malloc((size_t)reps * sizeof *t);
    check(t != NULL, "malloc");
    pm_gc_collect(2); /* everything in the oldest generation */
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = now_ns();
        pm_gc_result res = pm_gc_collect(2);
        t[r] = now_ns() - t0;
        if (res.collected != 0) {
            fprintf(stderr, "shared-bench: collected %zu of a live ring\n", res.collected);
            exit(1);
        }
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_u64);
    double ns = (double)t[reps / 2] / (double)n;
    free(t);
    return ns;
}

static void bench_collect(int threads, size_t n, int reps) {
    ring_n = n;
    ring = malloc(n * sizeof *ring);
    check(ring != NULL, "malloc");

    /* the same ring in a one-thread domain, for comparison */
    pm_domain *plain = pm_domain_new();
    check(plain != NULL, "pm_domain_new");
    pm_domain_enter(plain);
    pm_gc_disable();
    make_nodes(0, n);
    link_ring();
    printf("result collect-plain-%zu %.2f ns/object\n", n, median_collect_ns(n, reps));
    unlink_ring();
    for (size_t i = 0; i < n; i++)
        pm_decref(&ring[i]->base);
    pm_domain_enter(NULL);
    check(pm_domain_free(plain) == 0, "pm_domain_free");

    dom = pm_domain_new_shared();
    check(dom != NULL, "pm_domain_new_shared");
    check(pm_domain_attach(dom) == 0, "pm_domain_attach");
    pm_gc_disable();
    pthread_t th;
    atomic_store(&stop_helper, 0);
    if (threads > 1) {
        pthread_barrier_init(&built, NULL, 2);
        pthread_create(&th, NULL, helper, NULL);
        make_nodes(0, n / 2);
        pthread_barrier_wait(&built);
    } else {
        make_nodes(0, n);
    }
    link_ring();
    printf("result collect-shared-%d-threads-%zu %.2f ns/object\n", threads, n,
           median_collect_ns(n, reps));
    unlink_ring();
    if (threads > 1) {
        atomic_store(&stop_helper, 1);
        pthread_join(th, NULL);
        for (size_t i = 0; i < n / 2; i++)
            pm_decref(&ring[i]->base);
    } else {
        for (size_t i = 0; i < n; i++)
            pm_decref(&ring[i]->base);
    }
    check(pm_domain_detach() == 0, "pm_domain_detach");
    check(pm_domain_free(dom) == 0, "pm_domain_free");
    free(ring);
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "refcount")) {
        bench_refcount(argc >= 3 ? atol(argv[2]) : 50000000L);
    } else if (argc >= 4 && !strcmp(argv[1], "collect")) {
        int threads = atoi(argv[2]);
        if (threads < 1 || threads > 2) {
            fprintf(stderr, "shared-bench: THREADS is %d; 1 or 2 accepted\n", threads);
            return 2;
        }
        bench_collect(threads, (size_t)atol(argv[3]), argc >= 5 ? atoi(argv[4]) : 7);
    } else {
        fprintf(stderr, "usage: shared-bench refcount [N] | collect THREADS N [reps]\n");
        return 2;
    }
    return 0;
}
