/*
 * gc-bench.c: poolmalloc's cycle collector on the shapes scripts/compare-gc measures; the
 * same shapes are built by gc-bench.py (CPython) and gc-bench-boehm.c (Boehm GC).
 *
 *   gc-bench full N alloc|shuffled [layout|traverse] [reps] [root-first|root-last]
 *       A root object holding N nodes, and N nodes with two references each, forming a
 *       doubly linked ring in a logical order: the allocation order, or a random permutation
 *       of it ("shuffled": every reference jumps across memory). Every object is tracked and
 *       live. Prints the median time of a full collection per tracked object. "traverse"
 *       gives the nodes a traverse callback instead of a layout. The root is allocated (and
 *       tracked) before the nodes, or after them ("root-last"): then a collector that walks
 *       the generation in order meets every node before it meets what keeps them alive.
 *   gc-bench cycles N [reps]
 *       N/2 unreachable two-object cycles: median full-collection time per freed object.
 *   gc-bench young N_OLD [reps]
 *       N_OLD live old objects, then 1000 young two-object cycles, each referring to a
 *       random old object: the shortest pause of REPS (default 51) generation-0 collections,
 *       in microseconds, when the young cycles are garbage, then when they are alive (held
 *       from outside).
 *   gc-bench refcount [iterations]
 *       ns per pm_incref + pm_decref pair.
 *   gc-bench perm N FILE
 *       writes the shuffled order of N nodes to FILE (uint32 values); with GCBENCH_PERM=FILE
 *       in the environment, the "shuffled" runs of all three benchmarks use it.
 * Output: lines "result <name> <value> <unit>".
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "poolmalloc.h"

typedef struct node {
    pm_object base;
    pm_object *a, *b;
} node;

typedef struct root {
    pm_object base;
    size_t n;
    pm_object *items[];
} root;

static const uint16_t node_refs[] = {offsetof(node, a), offsetof(node, b), 0};
static pm_type node_type = {.name = "node", .size = sizeof(node), .ref_offsets = node_refs};

static int node_traverse(pm_object *self, pm_visit_fn visit, void *arg) {
    node *n = (node *)self;
    int e;
    if (n->a && (e = visit(n->a, arg)) != 0)
        return e;
    if (n->b && (e = visit(n->b, arg)) != 0)
        return e;
    return 0;
}
static pm_type node_cb_type = {.name = "node-cb", .size = sizeof(node), .traverse = node_traverse};

static pm_type root_type = {.name = "root",
                            .size = sizeof(root),
                            .itemsize = sizeof(pm_object *),
                            .items_offset = offsetof(root, items),
                            .length_offset = offsetof(root, n)};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) {
        perror("malloc");
        exit(1);
    }
    return p;
}

static pm_object *xnew(pm_type *t) {
    pm_object *o = pm_new(t);
    if (o == NULL) {
        perror("pm_new");
        exit(1);
    }
    return o;
}

/* The logical order of the nodes: the identity, or a random permutation, read from the file
 * GCBENCH_PERM names (N uint32 values, written by "gc-bench perm", which scripts/compare-gc
 * shares with the CPython and Boehm runs so that all three build the very same graph), or
 * made here with the same generator as "perm". */
static size_t *make_order(size_t n, int shuffled) {
    size_t *perm = xmalloc(n * sizeof *perm);
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    if (!shuffled)
        return perm;
    const char *file = getenv("GCBENCH_PERM");
    if (file != NULL && *file != 0) {
        FILE *f = fopen(file, "rb");
        uint32_t v;
        for (size_t i = 0; f != NULL && i < n; i++) {
            if (fread(&v, sizeof v, 1, f) != 1 || v >= n) {
                fprintf(stderr, "%s: not a permutation of %zu\n", file, n);
                exit(1);
            }
            perm[i] = v;
        }
        if (f == NULL) {
            perror(file);
            exit(1);
        }
        fclose(f);
        return perm;
    }
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(rng() % (i + 1)), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    return perm;
}

static void write_perm(size_t n, const char *file) {
    size_t *perm = make_order(n, 1);
    FILE *f = fopen(file, "wb");
    if (f == NULL) {
        perror(file);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)perm[i];
        fwrite(&v, sizeof v, 1, f);
    }
    if (fclose(f) != 0) {
        perror(file);
        exit(1);
    }
    free(perm);
}

static root *new_root(size_t n) {
    root *r = (root *)pm_new_var(&root_type, n);
    if (r == NULL) {
        perror("pm_new_var");
        exit(1);
    }
    pm_track(&r->base);
    return r;
}

static void bench_full(size_t n, int shuffled, int use_traverse, int reps, int root_last) {
    pm_gc_disable();
    root *r = root_last ? NULL : new_root(n);
    pm_type *t = use_traverse ? &node_cb_type : &node_type;
    node **nodes = xmalloc(n * sizeof *nodes);
    for (size_t i = 0; i < n; i++) {
        nodes[i] = (node *)xnew(t);
        pm_track(&nodes[i]->base);
    }
    if (root_last)
        r = new_root(n);
    size_t *perm = make_order(n, shuffled);
    for (size_t i = 0; i < n; i++) {
        node *x = nodes[perm[i]];
        x->a = pm_newref(&nodes[perm[(i + 1) % n]]->base);
        x->b = pm_newref(&nodes[perm[(i + n - 1) % n]]->base);
        r->items[i] = &x->base; /* the root takes the reference pm_new gave */
    }
    free(nodes);
    free(perm);
    pm_gc_collect(2); /* everything to the oldest generation */
    double *t_ns = xmalloc((size_t)reps * sizeof *t_ns);
    for (int k = 0; k < reps; k++) {
        double t0 = now();
        pm_gc_result res = pm_gc_collect(2);
        t_ns[k] = (now() - t0) * 1e9 / (double)(n + 1);
        if (res.collected != 0) {
            fprintf(stderr, "unexpected garbage\n");
            exit(1);
        }
    }
    printf("result full-%s-%s%s-%zu %.2f ns/object\n", shuffled ? "shuffled" : "alloc",
           use_traverse ? "traverse" : "layout", root_last ? "-rootlast" : "", n,
           median(t_ns, reps));
    free(t_ns);
    /* the graph is left to the exit, as the CPython and Boehm runs leave theirs */
}

static void bench_cycles(size_t n, int reps) {
    pm_gc_disable();
    double *t_ns = xmalloc((size_t)reps * sizeof *t_ns);
    for (int k = 0; k < reps; k++) {
        for (size_t i = 0; i < n / 2; i++) {
            node *x = (node *)xnew(&node_type), *y = (node *)xnew(&node_type);
            x->a = pm_newref(&y->base);
            y->a = &x->base; /* takes pm_new's reference to x */
            pm_track(&x->base);
            pm_track(&y->base);
            pm_decref(&y->base);
        }
        double t0 = now();
        pm_gc_result res = pm_gc_collect(2);
        double dt = now() - t0;
        if (res.collected != n / 2 * 2) {
            fprintf(stderr, "collected %zu, expected %zu\n", res.collected, n / 2 * 2);
            exit(1);
        }
        t_ns[k] = dt * 1e9 / (double)res.collected;
    }
    printf("result cycles-%zu %.2f ns/freed-object\n", n, median(t_ns, reps));
    free(t_ns);
}

/* The young objects are garbage (cycles whose freeing drops their references to old
 * objects: a decref each, a cache miss on the old object, as in CPython), then alive (held
 * from a C array: the pause is the collector's own work). */
static void bench_young(size_t n_old, int reps) {
    pm_gc_disable();
    root *r = (root *)pm_new_var(&root_type, n_old);
    pm_track(&r->base);
    for (size_t i = 0; i < n_old; i++) {
        node *x = (node *)xnew(&node_type);
        pm_track(&x->base);
        r->items[i] = &x->base;
    }
    pm_gc_collect(2);
    double *t_us = xmalloc((size_t)reps * sizeof *t_us);
    node **keep = xmalloc(1000 * sizeof *keep);
    for (int live = 0; live <= 1; live++) {
        for (int k = 0; k < reps; k++) {
            for (int i = 0; i < 1000; i++) {
                node *x = (node *)xnew(&node_type), *y = (node *)xnew(&node_type);
                x->a = pm_newref(&y->base);
                y->a = &x->base;
                if (n_old > 0) /* young objects refer to old ones too */
                    y->b = pm_newref(r->items[rng() % n_old]);
                pm_track(&x->base);
                pm_track(&y->base);
                if (live)
                    keep[i] = y; /* keeps the pair */
                else
                    pm_decref(&y->base);
            }
            double t0 = now();
            pm_gc_result res = pm_gc_collect(0);
            t_us[k] = (now() - t0) * 1e6;
            if (res.collected != (live ? 0u : 2000u)) {
                fprintf(stderr, "collected %zu\n", res.collected);
                exit(1);
            }
            if (live) {
                for (int i = 0; i < 1000; i++)
                    pm_decref(&keep[i]->base); /* garbage now, in generation 1 */
                pm_gc_collect(1);
            }
        }
        /* the shortest pause: a pause of tens of microseconds is easily lengthened by
         * anything else running on the machine, never shortened */
        qsort(t_us, (size_t)reps, sizeof *t_us, cmp_double);
        printf("result young-%s-pause-old-%zu %.1f us\n", live ? "live" : "garbage", n_old,
               t_us[0]);
    }
    free(t_us);
    free(keep);
    pm_decref(&r->base);
}

static void bench_refcount(long iters) {
    node *x = (node *)xnew(&node_type);
    pm_object *volatile vo = &x->base;
    pm_object *o = vo;
    double best = 1e9;
    for (int k = 0; k < 5; k++) {
        double t0 = now();
        for (long i = 0; i < iters; i++) {
            pm_incref(o);
            __asm__ volatile("" : : "r"(o) : "memory");
            pm_decref(o);
            __asm__ volatile("" : : "r"(o) : "memory");
        }
        double dt = (now() - t0) * 1e9 / (double)iters;
        if (dt < best)
            best = dt;
    }
    printf("result incref-decref %.2f ns/pair\n", best);
    pm_decref(o);
}

static void usage(void) {
    fprintf(stderr, "usage: gc-bench full N alloc|shuffled [layout|traverse] [reps] "
                    "[root-first|root-last]\n"
                    "       gc-bench cycles N [reps] | young N_OLD [reps]\n"
                    "       gc-bench refcount [iters] | perm N FILE\n");
    exit(2);
}

static size_t parse_size(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0)
        usage();
    return (size_t)v;
}

int main(int argc, char **argv) {
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "full") && argc >= 4) {
        int shuffled = !strcmp(argv[3], "shuffled");
        if (!shuffled && strcmp(argv[3], "alloc"))
            usage();
        int trav = argc >= 5 && !strcmp(argv[4], "traverse");
        int reps = argc >= 6 ? (int)parse_size(argv[5]) : 5;
        int root_last = argc >= 7 && !strcmp(argv[6], "root-last");
        if (argc >= 7 && !root_last && strcmp(argv[6], "root-first"))
            usage();
        bench_full(parse_size(argv[2]), shuffled, trav, reps, root_last);
    } else if (!strcmp(argv[1], "cycles") && argc >= 3) {
        bench_cycles(parse_size(argv[2]), argc >= 4 ? (int)parse_size(argv[3]) : 5);
    } else if (!strcmp(argv[1], "young") && argc >= 3) {
        size_t n_old = strcmp(argv[2], "0") ? parse_size(argv[2]) : 0;
        bench_young(n_old, argc >= 4 ? (int)parse_size(argv[3]) : 51);
    } else if (!strcmp(argv[1], "perm") && argc >= 4) {
        write_perm(parse_size(argv[2]), argv[3]);
    } else if (!strcmp(argv[1], "refcount")) {
        bench_refcount(argc >= 3 ? (long)parse_size(argv[2]) : 100000000L);
    } else {
        usage();
    }
    return 0;
}
