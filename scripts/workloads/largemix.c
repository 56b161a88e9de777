/*
 * largemix: large blocks beside a churning small-object heap, as in a program that decodes
 * images or batches into big buffers while building and dropping many small records. Eight
 * blocks of 256 KiB to 64 MiB (log-uniform) are live; each step frees a random one and
 * allocates a new block of a new size in its place, writing its first 16 KiB and a byte in
 * every page after. Each step also replaces the oldest of 60 generations of 8192 small
 * records (64-511 bytes): about 140 MiB of them live, whose pools come and go as the
 * generations age. What is measured is how well the allocator reuses large blocks' pages
 * while its small-object memory is mapped and unmapped around them: each page it cannot reuse
 * is a page fault. -t N runs N independent copies (see common.h for the arguments and output).
 */
#include "common.h"

#define LIVE_BLOCKS 8
#define MIN_LARGE (256u << 10)
#define MAX_LARGE (64u << 20)
#define GENERATIONS 60
#define RECORDS 8192
#define LARGEMIX_STEPS 300

typedef struct largemix_thread {
    uint64_t seed;
    uint64_t steps;
} largemix_thread;

/* One generation of records: the old one checked and freed, a new one made. */
static void replace_generation(void **gen, uint32_t *sizes, bool old, uint64_t *seed) {
    for (int i = 0; i < RECORDS; i++) {
        if (old) {
            wl_check("largemix", gen[i], sizes[i]);
            free(gen[i]);
        }
        sizes[i] = (uint32_t)wl_rand_range(seed, 64, 511);
        gen[i] = wl_malloc("largemix", sizes[i]);
        memset(gen[i], (int)i, sizes[i]);
        wl_tag(gen[i], sizes[i]);
    }
}

static void *largemix_main(void *arg) {
    largemix_thread *t = arg;
    void *(*gens)[RECORDS] = wl_malloc("largemix", sizeof(void *[GENERATIONS][RECORDS]));
    uint32_t (*sizes)[RECORDS] = wl_malloc("largemix", sizeof(uint32_t[GENERATIONS][RECORDS]));
    wl_large live[LIVE_BLOCKS];
    for (int i = 0; i < LIVE_BLOCKS; i++)
        live[i] = wl_large_new("largemix", &t->seed, MIN_LARGE, MAX_LARGE);
    for (uint64_t step = 0; step < t->steps; step++) {
        size_t slot = (size_t)(wl_rand(&t->seed) % LIVE_BLOCKS);
        wl_large_free("largemix", live[slot]);
        live[slot] = wl_large_new("largemix", &t->seed, MIN_LARGE, MAX_LARGE);
        size_t g = (size_t)(step % GENERATIONS);
        replace_generation(gens[g], sizes[g], step >= GENERATIONS, &t->seed);
    }
    for (int i = 0; i < LIVE_BLOCKS; i++)
        wl_large_free("largemix", live[i]);
    uint64_t made = t->steps < GENERATIONS ? t->steps : GENERATIONS;
    for (uint64_t g = 0; g < made; g++)
        for (int i = 0; i < RECORDS; i++)
            free(gens[g][i]);
    free(gens);
    free(sizes);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "large blocks replaced at random beside 60 "
                                                "generations of small records");
    largemix_thread threads[WL_MAX_THREADS];
    for (int i = 0; i < args.threads; i++)
        threads[i] = (largemix_thread){.seed = 0x1a7e3100u + (uint64_t)i,
                                       .steps = wl_scaled(LARGEMIX_STEPS, args.scale)};
    wl_run_threads("largemix", args.threads, largemix_main, threads, sizeof threads[0]);
    wl_report(wl_scaled(LARGEMIX_STEPS, args.scale) * (uint64_t)args.threads);
    return 0;
}
