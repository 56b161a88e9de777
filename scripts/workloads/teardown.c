/*
 * teardown: build a structure of many small nodes, then free all of it, in the two orders
 * programs tear structures down in.
 *
 *   in order   a list freed from its head: the order it was built in (a parser's tree freed
 *              when the document closes, a request's objects at the end of the request,
 *              Python dropping a list of records). Consecutive frees land in the same pool.
 *   shuffled   a hash table or a graph freed by walking its buckets: the same nodes in an
 *              order unrelated to their addresses.
 *
 * Every round builds 400,000 nodes of mixed small sizes (16-256 B, each written as it is
 * made, checked as it is freed); rounds alternate between the two orders. Nothing is live
 * between rounds, so each round's build comes out of the pools the previous teardown left:
 * what it measures is how cheaply a thread frees into its own pools once its cache is full,
 * and how fast it gets the pools back. -t N runs N independent copies (see common.h).
 */
#include "common.h"

#define NODES 400000
#define ROUNDS 40

typedef struct node {
    struct node *next;
    uint32_t size;
} node;

typedef struct teardown_thread {
    uint64_t seed;
    uint64_t rounds;
    uint64_t ops;
} teardown_thread;

static size_t node_size(uint64_t *seed) {
    return wl_rand(seed) % 4 == 0 ? wl_rand_range(seed, 65, 256) : wl_rand_range(seed, 16, 64);
}

static void *teardown_main(void *arg) {
    teardown_thread *t = arg;
    node **order = calloc(NODES, sizeof *order);
    if (order == NULL)
        wl_die("teardown", "out of memory");
    for (uint64_t round = 0; round < t->rounds; round++) {
        node *head = NULL;
        for (size_t i = 0; i < NODES; i++) { /* built at the tail: the list runs oldest first */
            size_t size = node_size(&t->seed);
            node *n = wl_malloc("teardown", size);
            n->next = NULL;
            n->size = (uint32_t)size;
            ((unsigned char *)n)[size - 1] = (unsigned char)size;
            if (i > 0)
                order[i - 1]->next = n;
            else
                head = n;
            order[i] = n;
        }
        if (round % 2 == 1) /* shuffled: the nodes in an order unrelated to their addresses */
            for (size_t i = NODES - 1; i > 0; i--) {
                size_t j = (size_t)(wl_rand(&t->seed) % (i + 1));
                node *tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
        for (size_t i = 0; i < NODES; i++) {
            node *n = round % 2 == 1 ? order[i] : head;
            if (round % 2 == 0)
                head = n->next;
            if (((unsigned char *)n)[n->size - 1] != (unsigned char)n->size)
                wl_die("teardown", "a node was overwritten: allocator bug");
            free(n);
        }
        t->ops += NODES;
    }
    free(order);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "build 400,000 small nodes and free them all, "
                                                "in order and shuffled; -t N: N copies");
    teardown_thread threads[WL_MAX_THREADS];
    for (int i = 0; i < args.threads; i++)
        threads[i] = (teardown_thread){.seed = 0x7ea2d000u + (uint64_t)i,
                                       .rounds = wl_scaled(ROUNDS, args.scale)};
    wl_run_threads("teardown", args.threads, teardown_main, threads, sizeof threads[0]);
    uint64_t ops = 0;
    for (int i = 0; i < args.threads; i++)
        ops += threads[i].ops;
    wl_report(ops);
    return 0;
}
