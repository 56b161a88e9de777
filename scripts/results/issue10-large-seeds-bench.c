/*
 * issue10-large-seeds-bench.c: the `large`, `bigbuf` and largemix patterns with the seed as a
 * parameter, to judge large-block placement over many seeds rather than one (see
 * issue10-large-zone-2026-12-02.md). Build and run:
 *
 *     cc -O2 -I scripts/workloads -o /tmp/largex scripts/results/issue10-large-seeds-bench.c
 *     for s in 1 2 3 4 5 6; do SEED=$s MODE=large LD_PRELOAD=... /usr/bin/time -f %R /tmp/largex; done
 *
 * MODE=large: eight blocks of 256 KiB-64 MiB (log-uniform), the first 16 KiB written and a
 * byte in every page after; MODE=bigbuf: twenty of 5-25 MiB, written whole; MODE=mixed: as
 * large, and each step replaces the oldest of 60 generations of 8192 small blocks (64-511 B).
 */
#include "common.h"

int main(void) {
    uint64_t seed = strtoull(getenv("SEED") ? getenv("SEED") : "1", 0, 0) * 0x9E3779B97F4A7C15ull;
    const char *mode = getenv("MODE") ? getenv("MODE") : "large";
    int big = mode[0] == 'b', mixed = mode[0] == 'm';
    int live_n = big ? 20 : 8, steps = big ? 400 : 300;
    unsigned char *p[20];
    size_t sz[20];
    volatile unsigned long sum = 0;
    static void *smalls[60][8192];
    for (int s = -live_n; s < steps; s++) {
        if (mixed && s >= 0) {
            int k = s % 60;
            for (int j = 0; j < 8192; j++) {
                if (s >= 60)
                    free(smalls[k][j]);
                size_t n = 64 + wl_rand(&seed) % 448;
                smalls[k][j] = malloc(n);
                memset(smalls[k][j], 1, n);
            }
        }
        int i = s < 0 ? s + live_n : (int)(wl_rand(&seed) % (uint64_t)live_n);
        if (s >= 0) {
            for (size_t o = 16384; o < sz[i]; o += 65536)
                sum += p[i][o];
            free(p[i]);
        }
        sz[i] = big ? wl_rand_range(&seed, 5u << 20, 25u << 20)
                    : wl_rand_log(&seed, 256u << 10, 64u << 20);
        p[i] = malloc(sz[i]);
        __asm__ volatile("" ::"r"(p[i]) : "memory"); /* the stores below are not dead */
        if (big)
            memset(p[i], 0, sz[i]);
        else
            memset(p[i], 0x3c, 16384);
        for (size_t o = 16384; o < sz[i]; o += 4096)
            p[i][o] = 1;
    }
    for (int i = 0; i < live_n; i++)
        free(p[i]);
    return 0;
}
