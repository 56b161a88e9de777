/*
 * large: large blocks, 256 KiB to 64 MiB (log-uniform), as image buffers, decompression
 * windows and batch arrays are. Eight blocks are live; each step frees a random one and
 * allocates a new block of a new size in its place. The program writes the first 16 KiB of
 * each block and one byte in every page after that, so a block whose memory the allocator
 * reuses costs little, while a fresh mapping costs a page fault per page: what is measured is
 * how well the allocator recycles large mappings without holding on to too much memory.
 * -t N runs N independent copies (see common.h for the arguments and output).
 */
#include "common.h"

#define LIVE_BLOCKS 8
#define MIN_LARGE (256u << 10)
#define MAX_LARGE (64u << 20)
#define LARGE_STEPS 300

typedef struct large_thread {
    uint64_t seed;
    uint64_t steps;
} large_thread;

static void *large_main(void *arg) {
    large_thread *t = arg;
    wl_large live[LIVE_BLOCKS];
    for (int i = 0; i < LIVE_BLOCKS; i++)
        live[i] = wl_large_new("large", &t->seed, MIN_LARGE, MAX_LARGE);
    for (uint64_t step = 0; step < t->steps; step++) {
        size_t slot = (size_t)(wl_rand(&t->seed) % LIVE_BLOCKS);
        wl_large_free("large", live[slot]);
        live[slot] = wl_large_new("large", &t->seed, MIN_LARGE, MAX_LARGE);
    }
    for (int i = 0; i < LIVE_BLOCKS; i++)
        wl_large_free("large", live[i]);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "large blocks of 256 KiB to 64 MiB replaced at "
                                                "random, eight live");
    large_thread threads[WL_MAX_THREADS];
    for (int i = 0; i < args.threads; i++)
        threads[i] = (large_thread){.seed = 0x1a7e0000u + (uint64_t)i,
                                    .steps = wl_scaled(LARGE_STEPS, args.scale)};
    wl_run_threads("large", args.threads, large_main, threads, sizeof threads[0]);
    wl_report(wl_scaled(LARGE_STEPS, args.scale) * (uint64_t)args.threads);
    return 0;
}
