/*
 * tiny: a small program, the kind most processes on a system are (a shell utility, a short
 * script's helper): about 1 MiB of small blocks live, a little churn, exit. Its peak RSS under
 * glibc is 2-3 MiB, so what it measures is the allocator's fixed overhead: the memory it
 * commits before and beside the program's own data (headers, per-thread and per-class
 * tables, the first arena). Run with `true` and `ls` beside it (scripts/compare --workloads
 * overhead). See common.h for the arguments.
 */
#include "common.h"

#define TINY_LIVE 4000
#define TINY_CHURN 20000

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "about 1 MiB of small blocks, then exit");
    (void)args.threads; /* one thread: a small program */
    uint64_t seed = 0x7171u;
    size_t live = TINY_LIVE; /* fixed whatever the scale: the point is a size, not work */
    static void *block[TINY_LIVE];
    static size_t size[TINY_LIVE];
    for (size_t i = 0; i < live; i++) {
        size[i] = wl_small_size(&seed);
        block[i] = wl_malloc("tiny", size[i]);
        memset(block[i], 0x11, size[i]);
        wl_tag(block[i], size[i]);
    }
    for (size_t step = 0; step < TINY_CHURN; step++) {
        size_t i = (size_t)(wl_rand(&seed) % live);
        wl_check("tiny", block[i], size[i]);
        free(block[i]);
        size[i] = wl_small_size(&seed);
        block[i] = wl_malloc("tiny", size[i]);
        memset(block[i], 0x22, size[i]);
        wl_tag(block[i], size[i]);
    }
    for (size_t i = 0; i < live; i++) {
        wl_check("tiny", block[i], size[i]);
        free(block[i]);
    }
    wl_report(live + TINY_CHURN);
    return 0;
}
