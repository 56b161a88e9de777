/*
 * churn: single-thread churn of many small sizes, in the two orders programs free in.
 *
 *   LIFO    bursts of 1..256 blocks of mixed small sizes, freed newest first, as a parser's or
 *           a request handler's temporaries are. This is the fast path: a good allocator
 *           answers from a per-thread cache and touches nothing else.
 *   random  a working set of 64K blocks where every step frees the block in a random slot and
 *           puts a new one of a random size there: frees arrive in no order, pools fill and
 *           drain unevenly, and the cost of finding a block's metadata shows.
 *
 * -t N runs N independent copies on N threads (nothing shared), so the scaling of purely
 * thread-local work can be checked too. See common.h for the arguments and output.
 */
#include "common.h"

#define BURST_MAX 256
#define RANDOM_SLOTS 65536

typedef struct churn_thread {
    uint64_t seed;
    uint64_t lifo_pairs, random_steps;
    uint64_t ops;
} churn_thread;

static void churn_lifo(churn_thread *t) {
    void *blocks[BURST_MAX];
    size_t sizes[BURST_MAX];
    uint64_t done = 0;
    while (done < t->lifo_pairs) {
        size_t burst = wl_rand_range(&t->seed, 1, BURST_MAX);
        for (size_t i = 0; i < burst; i++) {
            sizes[i] = wl_small_size(&t->seed);
            blocks[i] = wl_malloc("churn", sizes[i]);
            wl_tag(blocks[i], sizes[i]);
        }
        for (size_t i = burst; i-- > 0;) {
            wl_check("churn", blocks[i], sizes[i]);
            free(blocks[i]);
        }
        done += burst;
    }
    t->ops += done;
}

static void churn_random(churn_thread *t) {
    void **blocks = calloc(RANDOM_SLOTS, sizeof *blocks);
    uint32_t *sizes = calloc(RANDOM_SLOTS, sizeof *sizes);
    if (blocks == NULL || sizes == NULL)
        wl_die("churn", "out of memory");
    for (uint64_t step = 0; step < t->random_steps; step++) {
        size_t slot = (size_t)(wl_rand(&t->seed) % RANDOM_SLOTS);
        if (blocks[slot] != NULL) {
            wl_check("churn", blocks[slot], sizes[slot]);
            free(blocks[slot]);
        }
        size_t size = wl_small_size(&t->seed);
        blocks[slot] = wl_malloc("churn", size);
        sizes[slot] = (uint32_t)size;
        wl_tag(blocks[slot], size);
    }
    for (size_t slot = 0; slot < RANDOM_SLOTS; slot++) {
        if (blocks[slot] != NULL) {
            wl_check("churn", blocks[slot], sizes[slot]);
            free(blocks[slot]);
        }
    }
    free(blocks);
    free(sizes);
    t->ops += t->random_steps;
}

static void *churn_main(void *arg) {
    churn_thread *t = arg;
    churn_lifo(t);
    churn_random(t);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "single-thread churn of small blocks, LIFO and "
                                                "random order; -t N runs N independent copies");
    churn_thread threads[WL_MAX_THREADS];
    for (int i = 0; i < args.threads; i++) {
        threads[i] = (churn_thread){
            .seed = 0x5eed0000u + (uint64_t)i,
            .lifo_pairs = wl_scaled(24000000, args.scale),
            .random_steps = wl_scaled(10000000, args.scale),
        };
    }
    wl_run_threads("churn", args.threads, churn_main, threads, sizeof threads[0]);
    uint64_t ops = 0;
    for (int i = 0; i < args.threads; i++)
        ops += threads[i].ops;
    wl_report(ops);
    return 0;
}
