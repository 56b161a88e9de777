/*
 * randslot: a table of 300,000 live small blocks (1 to 1024 bytes, uniform) where every step
 * frees the block in a random slot and allocates one of a new random size in its place. With
 * that many blocks spread over every size class, almost every free touches a block (and the
 * allocator's metadata for it) that has not been used for a long time: the cost of a cold free
 * and of reusing scattered free space shows, not the cost of a hot per-thread cache.
 * -t N gives each of N threads its own table (nothing shared), so 1 and 2 threads show
 * whether the cold paths scale (see common.h).
 */
#include "common.h"

#define SLOTS 300000
#define RANDSLOT_STEPS 3000000

typedef struct slot {
    unsigned char *p;
    uint32_t size;
} slot;

typedef struct randslot_thread {
    uint64_t seed;
    uint64_t steps;
} randslot_thread;

static slot slot_fill(uint64_t *seed) {
    uint32_t size = (uint32_t)wl_rand_range(seed, 1, 1024);
    unsigned char *p = wl_malloc("randslot", size);
    if (size >= 8)
        wl_tag(p, size);
    else
        p[0] = (unsigned char)size;
    return (slot){p, size};
}

static void slot_empty(slot s) {
    if (s.size >= 8)
        wl_check("randslot", s.p, s.size);
    else if (s.p[0] != (unsigned char)s.size)
        wl_die("randslot", "a block was overwritten: allocator bug");
    free(s.p);
}

static void *randslot_main(void *arg) {
    randslot_thread *t = arg;
    slot *table = malloc(SLOTS * sizeof *table);
    if (table == NULL)
        wl_die("randslot", "out of memory");
    for (size_t i = 0; i < SLOTS; i++)
        table[i] = slot_fill(&t->seed);
    for (uint64_t step = 0; step < t->steps; step++) {
        size_t i = (size_t)(wl_rand(&t->seed) % SLOTS);
        slot_empty(table[i]);
        table[i] = slot_fill(&t->seed);
    }
    for (size_t i = 0; i < SLOTS; i++)
        slot_empty(table[i]);
    free(table);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 2, "300,000 small blocks (1-1024 B) replaced in "
                                                "random order, a table per thread");
    randslot_thread threads[WL_MAX_THREADS];
    uint64_t steps = wl_scaled(RANDSLOT_STEPS, args.scale);
    for (int i = 0; i < args.threads; i++)
        threads[i] = (randslot_thread){.seed = 0x5107000u + (uint64_t)i, .steps = steps};
    wl_run_threads("randslot", args.threads, randslot_main, threads, sizeof threads[0]);
    wl_report(steps * (uint64_t)args.threads);
    return 0;
}
