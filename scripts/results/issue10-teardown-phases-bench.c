/* The phase microbenchmark of scripts/results/issue10-purge-and-stale-cache-2026-12-01.md:
 * the teardown workload's rounds (400,000 nodes of 16-256 bytes built as a list, then freed in
 * build order or shuffled), timed phase by phase: the build (malloc), a walk of the nodes in
 * the order they will be freed (the program's own loads alone: it shows the layout the
 * allocator gave), and the frees. Mode "in": every round in build order; "sh": every round
 * shuffled; "alt": alternating, as the workload does. ns per node, mean over the rounds after
 * the first two. Build: gcc -O2 -o phases issue10-teardown-phases-bench.c; run with
 * LD_PRELOAD=<allocator> ./phases alt 16. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NODES 400000

typedef struct node {
    struct node *next;
    uint32_t size;
} node;

static uint64_t next_random(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "alt";
    int rounds = argc > 2 ? atoi(argv[2]) : 20;
    uint64_t seed = 12345;
    node **order = calloc(NODES, sizeof *order);
    double build[2] = {0}, walk[2] = {0}, release[2] = {0};
    int counted[2] = {0};
    unsigned long sum = 0;
    for (int r = 0; r < rounds; r++) {
        int shuffled = strcmp(mode, "alt") == 0 ? r % 2 : strcmp(mode, "sh") == 0;
        double t0 = now_ns();
        node *head = NULL;
        for (size_t i = 0; i < NODES; i++) {
            size_t size = next_random(&seed) % 4 == 0 ? 65 + next_random(&seed) % 192
                                                      : 16 + next_random(&seed) % 49;
            node *n = malloc(size);
            n->next = NULL;
            n->size = (uint32_t)size;
            ((unsigned char *)n)[size - 1] = (unsigned char)size;
            if (i > 0)
                order[i - 1]->next = n;
            else
                head = n;
            order[i] = n;
        }
        double t1 = now_ns();
        if (shuffled)
            for (size_t i = NODES - 1; i > 0; i--) {
                size_t j = next_random(&seed) % (i + 1);
                node *tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
        double t2 = now_ns();
        if (shuffled)
            for (size_t i = 0; i < NODES; i++)
                sum += ((unsigned char *)order[i])[order[i]->size - 1];
        else
            for (node *n = head; n != NULL; n = n->next)
                sum += ((unsigned char *)n)[n->size - 1];
        double t3 = now_ns();
        for (size_t i = 0; i < NODES; i++) {
            node *n = shuffled ? order[i] : head;
            if (!shuffled)
                head = n->next;
            if (((unsigned char *)n)[n->size - 1] != (unsigned char)n->size)
                abort();
            free(n);
        }
        double t4 = now_ns();
        if (r >= 2) {
            build[shuffled] += t1 - t0;
            walk[shuffled] += t3 - t2;
            release[shuffled] += t4 - t3;
            counted[shuffled]++;
        }
    }
    for (int s = 0; s < 2; s++)
        if (counted[s])
            printf("%s: build %.1f walk %.1f free %.1f ns/node\n", s ? "shuffled" : "in-order",
                   build[s] / counted[s] / NODES, walk[s] / counted[s] / NODES,
                   release[s] / counted[s] / NODES);
    return sum == 1; /* keeps the walks */
}
