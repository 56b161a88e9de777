/* The medium-churn microbenchmark of scripts/results/issue10-probes-2026-12-03.md: T threads,
 * each keeping LIVE blocks of LO..HI bytes and replacing one at random per step (64 bytes at
 * the start and the last byte of each new block written), STEPS steps a thread. Prints ns per
 * step (wall time over all threads' steps / STEPS). Build: gcc -O2 -o medchurn
 * issue10-medium-churn-bench.c -lpthread; run with LD_PRELOAD=<allocator>
 * ./medchurn T LO HI LIVE STEPS, e.g. ./medchurn 2 16385 131072 32 400000. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t lo, hi;
static int live, steps;

static uint64_t next_random(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *run(void *arg) {
    uint64_t seed = (uintptr_t)arg * 7919 + 1;
    void **slot = calloc((size_t)live, sizeof *slot);
    if (slot == NULL)
        abort();
    for (int i = 0; i < steps; i++) {
        int k = (int)(next_random(&seed) % (uint64_t)live);
        free(slot[k]);
        size_t n = lo + next_random(&seed) % (hi - lo + 1);
        char *p = malloc(n);
        if (p == NULL)
            abort();
        memset(p, 1, 64);
        p[n - 1] = 2;
        slot[k] = p;
    }
    for (int k = 0; k < live; k++)
        free(slot[k]);
    free(slot);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: medchurn THREADS LO HI LIVE STEPS\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    lo = strtoul(argv[2], NULL, 10);
    hi = strtoul(argv[3], NULL, 10);
    live = atoi(argv[4]);
    steps = atoi(argv[5]);
    if (threads < 1 || threads > 64 || lo < 64 || hi < lo || live < 1 || steps < 1) {
        fprintf(stderr, "medchurn: bad arguments\n");
        return 2;
    }
    pthread_t th[64];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, run, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / steps;
    printf("%.0f ns/step\n", ns);
    return 0;
}
