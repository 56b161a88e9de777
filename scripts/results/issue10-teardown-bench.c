/* The tear-down microbenchmark of scripts/results/issue10-teardown-2026-12-01.md: n blocks of one
 * size built, then freed in build order (argument 3: 0) or shuffled (1); best of 15 rounds, ns
 * per malloc and per free. Build: gcc -O2 -o tear issue10-teardown-bench.c; run with
 * LD_PRELOAD=<allocator> ./tear 1000000 32 0. */
#include <stdlib.h>
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    size_t n = strtoul(argv[1], 0, 10), size = strtoul(argv[2], 0, 10); int random = atoi(argv[3]);
    void **v = malloc(n * sizeof *v);
    size_t *ord = malloc(n * sizeof *ord);
    for (size_t i = 0; i < n; i++) ord[i] = i;
    unsigned long long s = 88172645463325252ull;
    if (random) for (size_t i = n - 1; i > 0; i--) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; size_t j = s % (i + 1), t = ord[i]; ord[i] = ord[j]; ord[j] = t; }
    double best_g = 1e9, best_t = 1e9;
    for (int r = 0; r < 15; r++) {
        double t0 = now();
        for (size_t i = 0; i < n; i++) { v[i] = malloc(size); *(char *)v[i] = 1; }
        double t1 = now();
        for (size_t i = 0; i < n; i++) free(v[ord[i]]);
        double t2 = now();
        if (t1 - t0 < best_g) best_g = t1 - t0;
        if (t2 - t1 < best_t) best_t = t2 - t1;
    }
    printf("grow %.1f ns  teardown %.1f ns\n", best_g * 1e9 / n, best_t * 1e9 / n);
    return 0;
}
