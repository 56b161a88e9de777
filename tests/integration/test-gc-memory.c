/*
 * test-gc-memory.c: the collector gives its memory back. After a 1M-object random graph is
 * built, dropped, collected and pm_trim'd, resident memory returns to within 25% of where it
 * began plus GC_FIXED_BYTES: the generation tables, the unreachable table, the mark stack
 * and the overflow counts shrink when mostly empty, and side-table pages that describe no
 * tracked object are given back.
 */
#include "test-gc-common.h"
#include "test-util.h"

/* What may stay: the Bloom filter of young collections (256 KiB), the tables' floor, the
 * side table's first pages and the allocator's own bookkeeping. */
#define GC_FIXED_BYTES ((size_t)2 << 20)
#define GRAPH_NODES 1000000

TestSuite(gc_memory, .init = gc_test_setup);

static void build_and_drop_random_graph(size_t n, uint64_t seed) {
    node **all = malloc(n * sizeof *all);
    cr_assert_not_null(all);
    for (size_t i = 0; i < n; i++)
        all[i] = new_node(i);
    for (size_t i = 0; i < n; i++) {
        all[i]->a = pm_newref(&all[rng_next(&seed) % n]->base);
        all[i]->b = pm_newref(&all[rng_next(&seed) % n]->base);
    }
    for (size_t i = 0; i < n; i++)
        pm_decref(&all[i]->base);
    free(all);
}

static void one_round(bool automatic) {
    /* a first small round: the collector's fixed state (side table chunk, filter) exists */
    build_and_drop_random_graph(1000, 1);
    pm_gc_collect(2);
    pm_trim();
    size_t before = resident_bytes();
    if (automatic)
        pm_gc_enable(); /* young collections and promotions along the way, as in a program */
    build_and_drop_random_graph(GRAPH_NODES, 42);
    size_t peak = resident_bytes();
    pm_gc_result r = pm_gc_collect(2);
    pm_gc_disable();
    cr_assert_geq(r.collected + released, GRAPH_NODES, "the whole graph was garbage");
    pm_trim();
    size_t after = resident_bytes();
    cr_log_info("resident: %zu KiB before, %zu KiB with the graph, %zu KiB after", before >> 10,
                peak >> 10, after >> 10);
    cr_assert_leq(after, before + before / 4 + GC_FIXED_BYTES,
                  "resident memory after the round: %zu KiB, began at %zu KiB (allowed: +25%% "
                  "+ %zu KiB)", after >> 10, before >> 10, GC_FIXED_BYTES >> 10);
}

Test(gc_memory, tables_shrink_after_a_big_graph_dies, .timeout = 120) { one_round(false); }

Test(gc_memory, with_automatic_collection, .timeout = 120) { one_round(true); }
