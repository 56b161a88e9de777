/*
 * gc-bench-boehm.c: Boehm GC (Debian's libgc) marking the shape gc-bench.c and gc-bench.py
 * build: a root array of N pointers, allocated before the nodes or after them (root-last),
 * and N two-pointer nodes forming a doubly linked ring in allocation order or in a random
 * order. Prints the median time of a full collection (GC_gcollect: mark, and the sweep Boehm
 * does eagerly) per object.
 *
 * Interior-pointer recognition is off by default (GC_set_all_interior_pointers(0) before
 * GC_INIT): every pointer in these graphs points to the start of its object, so the
 * collector may skip the work of mapping interior addresses; "interior" turns it back on
 * (Boehm's own default), to report both.
 *
 *   gc-bench-boehm full N alloc|shuffled [reps] [root-first|root-last] [interior]
 *   gc-bench-boehm version
 * With GCBENCH_PERM=FILE, the shuffled order is read from FILE (see gc-bench perm).
 */
#include <gc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct node {
    struct node *a, *b;
} node;

static node **root; /* a root in the data segment, scanned by the collector */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "version") == 0) {
        unsigned v = GC_get_version(); /* major << 16 | minor << 8 | micro */
        printf("boehm-version %u.%u.%u\n", v >> 16, (v >> 8) & 0xff, v & 0xff);
        return 0;
    }
    if (argc < 4 || strcmp(argv[1], "full") != 0) {
        fprintf(stderr, "usage: gc-bench-boehm full N alloc|shuffled [reps] "
                        "[root-first|root-last] [interior]\n       gc-bench-boehm version\n");
        return 2;
    }
    size_t n = strtoull(argv[2], NULL, 10);
    int shuffled = strcmp(argv[3], "shuffled") == 0;
    int reps = argc >= 5 ? atoi(argv[4]) : 5;
    int root_last = argc >= 6 && strcmp(argv[5], "root-last") == 0;
    int interior = argc >= 7 && strcmp(argv[6], "interior") == 0;
    if (n == 0 || reps <= 0)
        return 2;
    GC_set_all_interior_pointers(interior);
    GC_INIT();
    GC_expand_hp(n * 32 + n * sizeof(node *) + (64u << 20));
    GC_disable();
    if (!root_last)
        root = GC_MALLOC(n * sizeof *root);
    node **nodes = malloc(n * sizeof *nodes); /* malloc: not scanned, not a root */
    size_t *perm = malloc(n * sizeof *perm);
    if (nodes == NULL || perm == NULL)
        return 1;
    for (size_t i = 0; i < n; i++) {
        nodes[i] = GC_MALLOC(sizeof(node));
        perm[i] = i;
    }
    if (root_last)
        root = GC_MALLOC(n * sizeof *root);
    if (root == NULL)
        return 1;
    const char *file = getenv("GCBENCH_PERM");
    if (shuffled && file != NULL && *file != 0) {
        /* the order gc-bench wrote: the very graph the other runs build */
        FILE *f = fopen(file, "rb");
        uint32_t v;
        for (size_t i = 0; i < n; i++) {
            if (f == NULL || fread(&v, sizeof v, 1, f) != 1 || v >= n) {
                fprintf(stderr, "%s: not a permutation of %zu\n", file, n);
                return 1;
            }
            perm[i] = v;
        }
        fclose(f);
    } else if (shuffled) {
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = (size_t)(rng() % (i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    }
    for (size_t i = 0; i < n; i++) {
        node *x = nodes[perm[i]];
        x->a = nodes[perm[(i + 1) % n]];
        x->b = nodes[perm[(i + n - 1) % n]];
        root[i] = x;
    }
    memset(nodes, 0, n * sizeof *nodes);
    free(nodes);
    free(perm);
    GC_enable();
    GC_gcollect();
    double *t = malloc((size_t)reps * sizeof *t);
    for (int k = 0; k < reps; k++) {
        double t0 = now();
        GC_gcollect();
        t[k] = (now() - t0) * 1e9 / (double)(n + 1);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double med = reps % 2 ? t[reps / 2] : (t[reps / 2 - 1] + t[reps / 2]) / 2;
    printf("result full-%s-boehm%s%s-%zu %.2f ns/object\n", shuffled ? "shuffled" : "alloc",
           interior ? "-interior" : "", root_last ? "-rootlast" : "", n, med);
    return 0;
}
