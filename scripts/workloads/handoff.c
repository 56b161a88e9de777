/*
 * handoff: server threads that hand their work over, as a thread-per-connection server does
 * when a worker finishes and a new one inherits its state. Each of T chains runs a series of
 * generations; a generation is a thread that owns an array of 5,000 blocks (8-1000 bytes),
 * replaces random ones for a while, then starts its successor with the array and exits. The
 * successor frees blocks its predecessor allocated: nearly every free is of memory from
 * another (often exited) thread, and every generation's thread is new to the allocator.
 * -t T chains run at once (see common.h).
 */
#include "common.h"

#define HANDOFF_SLOTS 5000
#define STEPS_PER_GENERATION 25000
#define HANDOFF_GENERATIONS 250

typedef struct handoff_chain {
    uint64_t seed;
    uint64_t generations_left;
    unsigned char *block[HANDOFF_SLOTS];
    uint16_t size[HANDOFF_SLOTS];
} handoff_chain;

static void block_fill(handoff_chain *c, size_t i) {
    size_t size = wl_rand_range(&c->seed, 8, 1000);
    c->block[i] = wl_malloc("handoff", size);
    c->size[i] = (uint16_t)size;
    wl_tag(c->block[i], size);
}

static void block_empty(handoff_chain *c, size_t i) {
    wl_check("handoff", c->block[i], c->size[i]);
    free(c->block[i]);
}

/* One generation: work on the inherited array, then pass it on to a new thread. The thread
 * is detached so that it exits while its successor runs, as a worker does. */
static void *generation_main(void *arg) {
    handoff_chain *c = arg;
    for (uint64_t step = 0; step < STEPS_PER_GENERATION; step++) {
        size_t i = (size_t)(wl_rand(&c->seed) % HANDOFF_SLOTS);
        block_empty(c, i);
        block_fill(c, i);
    }
    /* release: the last generation's blocks are visible to main once the count is zero */
    if (__atomic_sub_fetch(&c->generations_left, 1, __ATOMIC_ACQ_REL) > 0) {
        pthread_t next;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&next, &attr, generation_main, c) != 0)
            wl_die("handoff", "pthread_create failed");
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

static handoff_chain chains[WL_MAX_THREADS];

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 2, "chains of short-lived threads, each freeing "
                                                "the blocks its predecessor allocated");
    uint64_t generations = wl_scaled(HANDOFF_GENERATIONS, args.scale);
    for (int t = 0; t < args.threads; t++) {
        handoff_chain *c = &chains[t];
        c->seed = 0x1a2500u + (uint64_t)t;
        c->generations_left = generations;
        for (size_t i = 0; i < HANDOFF_SLOTS; i++)
            block_fill(c, i);
    }
    pthread_t first[WL_MAX_THREADS];
    for (int t = 0; t < args.threads; t++)
        if (pthread_create(&first[t], NULL, generation_main, &chains[t]) != 0)
            wl_die("handoff", "pthread_create failed");
    for (int t = 0; t < args.threads; t++)
        pthread_join(first[t], NULL);
    /* Later generations are detached: wait for each chain's count to reach zero. */
    for (int t = 0; t < args.threads; t++)
        while (__atomic_load_n(&chains[t].generations_left, __ATOMIC_ACQUIRE) != 0)
            usleep(1000);
    for (int t = 0; t < args.threads; t++)
        for (size_t i = 0; i < HANDOFF_SLOTS; i++)
            block_empty(&chains[t], i);
    wl_report(generations * STEPS_PER_GENERATION * (uint64_t)args.threads);
    return 0;
}
