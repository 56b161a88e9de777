/*
 * domain-bench.c: the cost of collector domains.
 *
 *   domain-bench newfree [N]
 *       ns per pm_new + pm_decref of a two-reference node (tracked by pm_new), in the
 *       default domain and then in a domain of its own: the one-thread check is in both
 *       (a thread-id compare and two stores per call, and a domain compare per object).
 *   domain-bench collect THREADS N [reps]
 *       THREADS threads, each in a domain of its own, each with a live ring of N nodes,
 *       collect at the same time: the median full-collection ns per object of each thread.
 *       With 1 and 2 threads: how well separate domains collect in parallel.
 * Output: lines "result <name> <value> <unit>". Built with -DPM_NO_DOMAINS the newfree part
 * compiles against a poolmalloc without domains, for the before/after comparison.
 */
#include <pthread.h>
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
static const uint16_t node_refs[] = {offsetof(node, a), offsetof(node, b), 0};
static pm_type node_type = {.name = "node", .size = sizeof(node), .ref_offsets = node_refs};


/* The fastest of 5 batches of n pairs: the least disturbed by other processes. */
static double newfree_ns(long n) {
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        uint64_t t0 = now_ns();
        for (long i = 0; i < n; i++) {
            pm_object *o = pm_new(&node_type);
            if (o == NULL) {
                perror("pm_new");
                exit(1);
            }
            pm_track(o);
            pm_decref(o);
        }
        double ns = (double)(now_ns() - t0) / (double)n;
        if (ns < best)
            best = ns;
    }
    return best;
}

static void bench_newfree(long n) {
    pm_gc_disable();
    printf("result newfree-default %.2f ns/pair\n", newfree_ns(n));
#ifndef PM_NO_DOMAINS
    pm_domain *d = pm_domain_new();
    pm_domain_enter(d);
    pm_gc_disable();
    printf("result newfree-domain %.2f ns/pair\n", newfree_ns(n));
    pm_domain_enter(NULL);
    pm_domain_free(d);
#endif
}

#ifndef PM_NO_DOMAINS
typedef struct collector {
    size_t n;
    int reps;
    pthread_barrier_t *start;
    double ns_per_object;
} collector;

static void *collect_in_own_domain(void *arg) {
    collector *c = arg;
    pm_domain *d = pm_domain_new();
    if (d == NULL) {
        perror("pm_domain_new");
        exit(1);
    }
    pm_domain_enter(d);
    pm_gc_disable();
    node **nodes = malloc(c->n * sizeof *nodes);
    for (size_t i = 0; i < c->n; i++)
        nodes[i] = (node *)pm_new(&node_type);
    for (size_t i = 0; i < c->n; i++) {
        nodes[i]->a = pm_newref(&nodes[(i + 1) % c->n]->base);
        nodes[i]->b = pm_newref(&nodes[(i + c->n - 1) % c->n]->base);
    }
    uint64_t *t = malloc((size_t)c->reps * sizeof *t);
    pm_gc_collect(2); /* everything in the oldest generation, as in gc-bench full */
    for (int r = 0; r < c->reps; r++) {
        pthread_barrier_wait(c->start); /* every thread collects at the same time */
        uint64_t t0 = now_ns();
        pm_gc_collect(2);
        t[r] = now_ns() - t0;
    }
    qsort(t, (size_t)c->reps, sizeof *t, cmp_u64);
    c->ns_per_object = (double)t[c->reps / 2] / (double)c->n;
    for (size_t i = 0; i < c->n; i++) {
        PM_CLEAR(nodes[i]->a);
        PM_CLEAR(nodes[i]->b);
        pm_decref(&nodes[i]->base);
    }
    free(nodes);
    free(t);
    pm_domain_enter(NULL);
    pm_domain_free(d);
    return NULL;
}

static void bench_collect(int threads, size_t n, int reps) {
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    pthread_t tid[64];
    collector c[64];
    for (int i = 0; i < threads; i++) {
        c[i] = (collector){.n = n, .reps = reps, .start = &start};
        pthread_create(&tid[i], NULL, collect_in_own_domain, &c[i]);
    }
    double sum = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        sum += c[i].ns_per_object;
    }
    printf("result collect-%d-threads-%zu %.2f ns/object\n", threads, n, sum / threads);
}
#endif

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "newfree") == 0) {
        bench_newfree(argc >= 3 ? atol(argv[2]) : 2000000);
        return 0;
    }
#ifndef PM_NO_DOMAINS
    if (argc >= 4 && strcmp(argv[1], "collect") == 0) {
        int threads = atoi(argv[2]);
        if (threads < 1 || threads > 64) {
            fprintf(stderr, "domain-bench: THREADS is %d; give 1 to 64\n", threads);
            return 2;
        }
        bench_collect(threads, (size_t)atol(argv[3]), argc >= 5 ? atoi(argv[4]) : 5);
        return 0;
    }
#endif
    fprintf(stderr, "usage: domain-bench newfree [N] | domain-bench collect THREADS N [reps]\n");
    return 2;
}
