/*
 * test-gc.c: the cycle collector: cycles found and freed, reachable ones kept, generations
 * and promotion, thresholds and automatic collection with the long-lived heuristic, freeze,
 * statistics and callbacks, finalizers (PEP 442), uncollectable cycles, the debug modes,
 * introspection, and the POOLMALLOC_GC* environment.
 */
#include "test-gc-common.h"

#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(gc, .init = gc_test_setup);

static bool in_generation(int gen, pm_object *o) {
    pm_object *objs[4096];
    size_t n = pm_gc_get_objects(gen, objs, 4096);
    cr_assert_leq(n, 4096);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        found |= objs[i] == o;
        pm_decref(objs[i]);
    }
    return found;
}

Test(gc, cycles_of_2_to_1000_collected) {
    static const long sizes[] = {1, 2, 3, 7, 64, 999, 1000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        long n = sizes[k];
        released = 0;
        node *ring = make_ring(&node_type, n, 0);
        pm_decref(&ring->base);
        cr_assert_eq(released, 0, "a cycle is not freed by reference counting");
        pm_gc_result r = pm_gc_collect(0);
        cr_assert_eq(r.collected, (size_t)n, "ring of %ld", n);
        cr_assert_eq(r.uncollectable, 0);
        cr_assert_eq(released, n, "every object of the ring of %ld released", n);
    }
}

Test(gc, cycles_with_traverse_callbacks_collected) {
    node *ring = make_ring(&tnode_type, 100, 0);
    node *other = make_ring(&node_type, 100, 100);
    ((node *)ring)->b = &other->base; /* one structure of both kinds */
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.collected, 200);
    cr_assert_eq(released, 200);
}

Test(gc, reachable_cycle_kept) {
    node *ring = make_ring(&node_type, 50, 0);
    node *holder = (node *)pm_new(&node_type); /* untracked: its reference is external */
    holder->canary = CANARY_LIVE;
    holder->a = pm_newref(&ring->base);
    pm_decref(&ring->base);
    for (int g = 0; g <= 2; g++) {
        pm_gc_result r = pm_gc_collect(g);
        cr_assert_eq(r.collected, 0, "generation %d", g);
    }
    cr_assert_eq(released, 0);
    /* intact: the ring still goes round */
    node *x = ring;
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(x->canary, CANARY_LIVE);
        cr_assert_eq(x->id, i);
        x = (node *)x->a;
    }
    cr_assert_eq(x, ring);
    PM_CLEAR(holder->a);
    cr_assert_eq(pm_gc_collect(2).collected, 50, "collected once the outside reference goes");
    pm_decref(&holder->base);
}

Test(gc, cycle_reachable_from_tracked_object_kept) {
    node *root = new_node(-1);
    node *ring = make_ring(&node_type, 10, 0);
    root->a = &ring->base;
    list *l = (list *)pm_new(&list_type);
    list_append(l, &root->base);
    pm_track(&l->base);
    pm_decref(&root->base);
    /* l is referenced only from here (a C variable): an external reference */
    cr_assert_eq(pm_gc_collect(2).collected, 0);
    cr_assert_eq(released, 0);
    pm_decref(&l->base); /* root and the ring become garbage; root by refcounting */
    cr_assert_eq(released, 1);
    cr_assert_eq(pm_gc_collect(2).collected, 10);
}

Test(gc, promotion_between_generations) {
    node *n = new_node(1);
    cr_assert(in_generation(0, &n->base));
    pm_gc_collect(0);
    cr_assert(in_generation(1, &n->base), "a survivor of generation 0 moves to 1");
    cr_assert_not(in_generation(0, &n->base));
    pm_gc_collect(1);
    cr_assert(in_generation(2, &n->base), "and then to 2");
    pm_gc_collect(2);
    cr_assert(in_generation(2, &n->base), "generation 2 survivors stay");
    node *young = new_node(2);
    pm_gc_collect(1);
    cr_assert(in_generation(2, &young->base), "collecting 1 also collects 0, into 2");
    cr_assert(in_generation(-1, &n->base));
    pm_decref(&n->base);
    pm_decref(&young->base);
}

Test(gc, young_collection_does_not_touch_older_garbage) {
    node *old_ring = make_ring(&node_type, 5, 0);
    pm_gc_collect(0);
    pm_gc_collect(1); /* now in generation 2 */
    pm_decref(&old_ring->base);
    node *young_ring = make_ring(&node_type, 3, 10);
    pm_decref(&young_ring->base);
    cr_assert_eq(pm_gc_collect(0).collected, 3, "only the young ring");
    cr_assert_eq(pm_gc_collect(1).collected, 0);
    cr_assert_eq(pm_gc_collect(2).collected, 5);
}

Test(gc, counts_thresholds_and_enable) {
    long t[3];
    pm_gc_get_threshold(t);
    cr_assert(t[0] == 2000 && t[1] == 10 && t[2] == 10);
    cr_assert_eq(pm_gc_set_threshold(700, 5, 3), 0);
    pm_gc_get_threshold(t);
    cr_assert(t[0] == 700 && t[1] == 5 && t[2] == 3);
    errno = 0;
    cr_assert_eq(pm_gc_set_threshold(-1, 5, 3), -1);
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(pm_gc_is_enabled(), 0);
    cr_assert_eq(pm_gc_enable(), 0, "returns the previous state");
    cr_assert_eq(pm_gc_enable(), 1);
    cr_assert_eq(pm_gc_disable(), 1);
    cr_assert_eq(pm_gc_disable(), 0);
    long c[3];
    pm_gc_get_count(c);
    cr_assert_eq(c[0], 0);
    pm_gc_collect(0);
    pm_gc_get_count(c);
    cr_assert(c[0] == 0 && c[1] == 1, "a generation-0 collection counts in generation 1");
    errno = 0;
    pm_gc_result r = pm_gc_collect(3);
    cr_assert(r.collected == 0 && errno == EINVAL);
}

static int starts[3], stops[3];
static size_t stop_collected;
static void count_collections(int phase, const pm_gc_info *info, void *arg) {
    cr_assert_eq(arg, (void *)&starts);
    cr_assert(info->generation >= 0 && info->generation <= 2);
    if (phase == PM_GC_START) {
        starts[info->generation]++;
    } else {
        stops[info->generation]++;
        stop_collected += info->collected;
    }
}

Test(gc, automatic_collection_on_allocation) {
    cr_assert_eq(pm_gc_callback_add(count_collections, &starts), 0);
    pm_gc_set_threshold(100, 10, 10);
    for (int i = 0; i < 1000; i++) {
        node *x = make_ring(&node_type, 2, 0);
        pm_decref(&x->base);
    }
    cr_assert_eq(starts[0], 0, "disabled: no automatic collection");
    cr_assert_eq(pm_gc_collect(0).collected, 2000);
    pm_gc_enable();
    memset(starts, 0, sizeof starts);
    memset(stops, 0, sizeof stops);
    stop_collected = 0;
    for (int i = 0; i < 1000; i++) {
        node *x = make_ring(&node_type, 2, 0);
        pm_decref(&x->base);
    }
    cr_assert_geq(starts[0], 15, "about one generation-0 collection per 100 allocations");
    cr_assert_geq(starts[1], 1, "every 10 of generation 0, one of generation 1");
    cr_assert_eq(starts[0] + starts[1] + starts[2], stops[0] + stops[1] + stops[2]);
    cr_assert_geq(stop_collected, 1800, "the rings were collected along the way");
    pm_gc_disable();
    cr_assert_eq(pm_gc_callback_remove(count_collections, &starts), 0);
    cr_assert_eq(pm_gc_callback_remove(count_collections, &starts), -1);
    cr_assert_eq(errno, ENOENT);
}

Test(gc, threshold_zero_disables_automatic_collection) {
    pm_gc_callback_add(count_collections, &starts);
    pm_gc_enable();
    pm_gc_set_threshold(0, 10, 10);
    for (int i = 0; i < 5000; i++)
        pm_decref(&new_node(i)->base);
    cr_assert_eq(starts[0] + starts[1] + starts[2], 0);
}

/* CPython's long-lived heuristic: a full collection only when the objects promoted to the
 * oldest generation since the last full one exceed 25% of those that survived it. */
Test(gc, long_lived_heuristic_holds_full_collections_back) {
    list *keep = (list *)pm_new(&list_type);
    pm_track(&keep->base);
    for (int i = 0; i < 4000; i++) {
        node *n = new_node(i);
        list_append(keep, &n->base);
        pm_decref(&n->base);
    }
    pm_gc_collect(2); /* 4001 long-lived objects */
    pm_gc_callback_add(count_collections, &starts);
    pm_gc_set_threshold(10, 1, 1);
    pm_gc_enable();
    /* survivors reach generation 2 through generation-1 collections; until 1000 of them
     * are pending (25% of 4001), no full collection may run */
    for (int i = 0; i < 900; i++) {
        node *n = new_node(i);
        list_append(keep, &n->base);
        pm_decref(&n->base);
    }
    cr_assert_geq(starts[1], 10);
    cr_assert_eq(starts[2], 0, "held back: only ~900 of 4001 pending");
    for (int i = 0; i < 400; i++) {
        node *n = new_node(i);
        list_append(keep, &n->base);
        pm_decref(&n->base);
    }
    cr_assert_geq(starts[2], 1, "past 25%%: a full collection ran");
    pm_gc_disable();
    pm_decref(&keep->base);
}

Test(gc, freeze_and_unfreeze) {
    node *ring = make_ring(&node_type, 10, 0);
    node *live = new_node(99);
    cr_assert_eq(pm_gc_freeze(), 0);
    cr_assert_eq(pm_gc_get_freeze_count(), 11);
    cr_assert(pm_is_tracked(&live->base), "frozen objects stay tracked");
    cr_assert(in_generation(3, &live->base));
    cr_assert_not(in_generation(-1, &live->base));
    pm_decref(&ring->base);
    cr_assert_eq(pm_gc_collect(2).collected, 0, "frozen garbage is ignored");
    cr_assert_eq(released, 0);
    node *young = make_ring(&node_type, 3, 20);
    pm_decref(&young->base);
    cr_assert_eq(pm_gc_collect(2).collected, 3, "new objects are collected as usual");
    cr_assert_eq(pm_gc_unfreeze(), 0);
    cr_assert_eq(pm_gc_get_freeze_count(), 0);
    cr_assert(in_generation(2, &live->base), "unfreeze moves to the oldest generation");
    cr_assert_eq(pm_gc_collect(2).collected, 10);
    pm_decref(&live->base);
}

Test(gc, statistics) {
    pm_gc_stats before[3], after[3];
    pm_gc_get_stats(before);
    node *ring = make_ring(&node_type, 30, 0);
    pm_decref(&ring->base);
    pm_gc_collect(1);
    pm_gc_collect(1);
    pm_gc_get_stats(after);
    cr_assert_eq(after[1].collections, before[1].collections + 2);
    cr_assert_eq(after[1].collected, before[1].collected + 30);
    cr_assert_eq(after[0].collections, before[0].collections);
    cr_assert_gt(after[1].total_pause_ns, before[1].total_pause_ns);
    cr_assert_leq(after[1].max_pause_ns, after[1].total_pause_ns);
    cr_assert_gt(after[1].max_pause_ns, 0);
}

static void nop_callback(int phase, const pm_gc_info *info, void *arg) {
    (void)phase, (void)info, (void)arg;
}

Test(gc, callback_limits) {
    for (int i = 0; i < 16; i++)
        cr_assert_eq(pm_gc_callback_add(nop_callback, NULL), 0);
    errno = 0;
    cr_assert_eq(pm_gc_callback_add(nop_callback, NULL), -1);
    cr_assert_eq(errno, ENOSPC);
    cr_assert_eq(pm_gc_callback_add(NULL, NULL), -1);
    cr_assert_eq(errno, EINVAL);
}

static void collect_inside(int phase, const pm_gc_info *info, void *arg) {
    (void)info, (void)arg;
    if (phase == PM_GC_START) {
        pm_gc_result r = pm_gc_collect(2);
        cr_assert_eq(r.collected + r.uncollectable, 0, "no collection inside a collection");
        pm_decref(&new_node(5)->base); /* allocating and freeing is fine */
    }
}

Test(gc, no_collection_inside_a_collection) {
    pm_gc_callback_add(collect_inside, NULL);
    node *ring = make_ring(&node_type, 4, 0);
    pm_decref(&ring->base);
    cr_assert_eq(pm_gc_collect(2).collected, 4);
}

/* ---- finalizers: PEP 442 ---- */

Test(gc, cycles_with_finalizers_collected_and_finalized_once) {
    node *ring = make_ring(&fnode_type, 20, 0);
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.collected, 20);
    cr_assert_eq(finalized, 20);
    cr_assert_eq(released, 20);
}

static pm_object *lazarus;
static long lazarus_id = -1;
static void resurrect_one(pm_object *self) {
    if (((node *)self)->id == lazarus_id)
        lazarus = pm_newref(self);
}

Test(gc, resurrected_objects_stay_alive_and_intact) {
    on_finalize = resurrect_one;
    lazarus_id = 3;
    node *ring = make_ring(&fnode_type, 10, 0);
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(finalized, 10, "every finalizer ran");
    cr_assert_eq(r.collected, 0, "one member came back, and the whole ring with it");
    cr_assert_eq(released, 0);
    cr_assert_not_null(lazarus);
    /* intact: not cleared, the ring still closes */
    node *x = (node *)lazarus;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(x->canary, CANARY_LIVE);
        cr_assert_not_null(x->a);
        x = (node *)x->a;
    }
    cr_assert_eq(&x->base, lazarus);
    cr_assert(pm_is_finalized(lazarus));
    /* dropping it again: collected, and no finalizer runs a second time */
    lazarus_id = -1;
    pm_decref(lazarus);
    lazarus = NULL;
    r = pm_gc_collect(2);
    cr_assert_eq(r.collected, 10);
    cr_assert_eq(finalized, 10, "finalizers run at most once");
    cr_assert_eq(released, 10);
}

Test(gc, resurrected_object_keeps_what_it_refers_to) {
    on_finalize = resurrect_one;
    lazarus_id = 100;
    node *ring = make_ring(&fnode_type, 5, 0);
    node *hero = new_node_of(&fnode_type, 100);
    node *friend_ = new_node(101);
    hero->a = &friend_->base;
    hero->b = pm_newref(&ring->base); /* the ring is reachable from hero only */
    ring->b = pm_newref(&hero->base); /* and hero from the ring */
    pm_decref(&ring->base);
    pm_decref(&hero->base);
    pm_gc_collect(2);
    cr_assert_not_null(lazarus);
    cr_assert_eq(released, 0, "hero, its friend and the ring survive");
    cr_assert_eq(friend_->canary, CANARY_LIVE);
    cr_assert_eq(hero->a, &friend_->base);
    lazarus_id = -1;
    pm_decref(lazarus);
    lazarus = NULL;
    cr_assert_eq(pm_gc_collect(2).collected, 7);
    cr_assert_eq(finalized, 6, "six finalizable objects, each finalized once");
}

/* ---- uncollectable cycles and the debug modes ---- */

Test(gc, uncollectable_cycles_kept_in_garbage) {
    node *ring = make_ring(&stuck_type, 4, 0);
    node *tail = new_node(50); /* reached from the stuck ring: kept too */
    ring->b = &tail->base;
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.uncollectable, 5);
    cr_assert_eq(r.collected, 0);
    cr_assert_eq(released, 0);
    pm_object *g[8];
    cr_assert_eq(pm_gc_garbage(g, 8), 5);
    for (int i = 0; i < 5; i++)
        pm_decref(g[i]);
    cr_assert_eq(tail->canary, CANARY_LIVE, "not cleared");
    /* kept alive by the garbage list: the next collection finds nothing new */
    cr_assert_eq(pm_gc_collect(2).uncollectable, 0);
    cr_assert_eq(pm_gc_garbage_clear(), 5);
    cr_assert_eq(pm_gc_garbage(g, 8), 0);
    cr_assert_eq(pm_gc_collect(2).uncollectable, 5, "found again once dropped");
    pm_gc_garbage_clear();
}

Test(gc, saveall_keeps_garbage) {
    pm_gc_set_debug(PM_GC_DEBUG_SAVEALL);
    node *ring = make_ring(&fnode_type, 6, 0);
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.collected, 6);
    cr_assert_eq(released, 0, "kept");
    cr_assert_eq(finalized, 0, "and untouched");
    pm_object *g[8];
    size_t n = pm_gc_garbage(g, 8);
    cr_assert_eq(n, 6);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(((node *)g[i])->canary, CANARY_LIVE);
        pm_decref(g[i]);
    }
    pm_gc_set_debug(0);
    pm_gc_garbage_clear();
    cr_assert_eq(pm_gc_collect(2).collected, 6);
    cr_assert_eq(released, 6);
}

/* Runs fn in a child with stderr on a pipe; returns what it printed. */
static void capture_stderr(void (*fn)(void), char *buf, size_t size) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t k;
    while (len < size - 1 && (k = read(fds[0], buf + len, size - 1 - len)) > 0)
        len += (size_t)k;
    buf[len] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %s", buf);
}

static void debug_stats_child(void) {
    pm_gc_set_debug(PM_GC_DEBUG_STATS);
    node *ring = make_ring(&node_type, 3, 0);
    pm_decref(&ring->base);
    pm_gc_collect(1);
}

Test(gc, debug_stats_logs_collections) {
    char buf[4096];
    capture_stderr(debug_stats_child, buf, sizeof buf);
    cr_assert(strstr(buf, "collecting generation 1"), "log: %s", buf);
    cr_assert(strstr(buf, "3 unreachable, 0 uncollectable"), "log: %s", buf);
}

static void debug_leak_child(void) {
    pm_gc_set_debug(PM_GC_DEBUG_LEAK);
    node *ring = make_ring(&node_type, 2, 0);
    pm_decref(&ring->base);
    pm_gc_collect(0);
    pm_object *g[4];
    if (pm_gc_garbage(g, 4) != 2)
        _exit(1);
}

Test(gc, debug_leak_prints_and_keeps) {
    char buf[4096];
    capture_stderr(debug_leak_child, buf, sizeof buf);
    cr_assert(strstr(buf, "collectable <node"), "log: %s", buf);
}

/* ---- introspection ---- */

Test(gc, referents_and_objects) {
    node *a = new_node(1), *b = new_node(2);
    a->a = pm_newref(&b->base);
    a->b = pm_newref(&b->base);
    pm_object *refs[4];
    cr_assert_eq(pm_gc_get_referents(&a->base, refs, 4), 2);
    cr_assert(refs[0] == &b->base && refs[1] == &b->base);
    cr_assert_eq(pm_refcount(&b->base), 5, "referents come as new references");
    pm_decref(refs[0]);
    pm_decref(refs[1]);
    cr_assert_eq(pm_gc_get_referents(&a->base, refs, 1), 2, "the total, beyond max");
    pm_decref(refs[0]);
    cr_assert_eq(pm_gc_get_objects(0, NULL, 0), 2);
    cr_assert_eq(pm_gc_get_objects(-1, NULL, 0), 2);
    cr_assert(in_generation(0, &a->base) && in_generation(0, &b->base));
    leaf *l = (leaf *)pm_new(&leaf_type);
    cr_assert_eq(pm_gc_get_referents(&l->base, refs, 4), 0);
    pm_decref(&l->base);
    pm_decref(&a->base);
    pm_decref(&b->base);
    cr_assert_eq(pm_gc_get_objects(-1, NULL, 0), 0);
}

/* An object with many references from inside the set (its count overflows the side byte). */
Test(gc, many_internal_references) {
    node *hub = new_node(0);
    list *l = (list *)pm_new(&list_type);
    for (int i = 0; i < 1000; i++)
        list_append(l, &hub->base);
    pm_track(&l->base);
    hub->a = pm_newref(&l->base); /* a cycle: hub <-> list, 1000 times over */
    cr_assert_eq(pm_gc_collect(2).collected, 0, "both referenced from here");
    pm_decref(&l->base);
    cr_assert_eq(pm_gc_collect(2).collected, 0, "hub still is");
    pm_incref(&hub->base);
    pm_decref(&hub->base);
    pm_decref(&hub->base);
    cr_assert_eq(pm_gc_collect(2).collected, 2);
    cr_assert_eq(released, 1);
}

/* Big enough for the collector's chunked, timed walks (plain and prefetching chunks) and
 * long item arrays: 600 rings of 100 nodes allocated interleaved, half of them garbage and
 * half kept through a long array, which also holds 20000 lone nodes that nothing else refers
 * to (so that every item of the array must be walked). */
Test(gc, large_interleaved_graph) {
    enum { RINGS = 600, LEN = 100, LONE = 20000, KEPT = RINGS / 2 * LEN + LONE };
    static node *nodes[RINGS][LEN];
    static node *lone[LONE];
    uint64_t seed = 12345;
    int next[RINGS] = {0};
    /* allocate in a random interleaving of the rings and the lone nodes */
    for (int made = 0, lones = 0; made < RINGS * LEN || lones < LONE;) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        int r = (int)((seed >> 33) % (RINGS + 200));
        if (r >= RINGS) {
            if (lones < LONE)
                lone[lones++] = new_node(-1);
            continue;
        }
        if (next[r] == LEN)
            continue;
        nodes[r][next[r]] = new_node(r * LEN + next[r]);
        next[r]++;
        made++;
    }
    for (int r = 0; r < RINGS; r++)
        for (int i = 0; i < LEN; i++) /* the ring takes pm_new's references */
            nodes[r][i]->a = &nodes[r][(i + 1) % LEN]->base;
    vec *keep = (vec *)pm_new_var(&vec_type, KEPT);
    for (int r = 0; r < RINGS; r += 2)
        for (int i = 0; i < LEN; i++)
            keep->items[r / 2 * LEN + i] = pm_newref(&nodes[r][i]->base);
    for (int i = 0; i < LONE; i++)
        keep->items[RINGS / 2 * LEN + i] = &lone[i]->base; /* takes pm_new's reference */
    pm_track(&keep->base);
    for (int round = 0; round < 3; round++) {
        pm_gc_result res = pm_gc_collect(2);
        cr_assert_eq(res.collected, round == 0 ? (size_t)RINGS / 2 * LEN : 0);
    }
    cr_assert_eq(released, RINGS / 2 * LEN);
    for (int r = 0; r < RINGS; r += 2)
        for (int i = 0; i < LEN; i++) {
            cr_assert_eq(nodes[r][i]->canary, CANARY_LIVE);
            cr_assert_eq(nodes[r][i]->a, &nodes[r][(i + 1) % LEN]->base);
        }
    for (int i = 0; i < LONE; i++)
        cr_assert_eq(lone[i]->canary, CANARY_LIVE);
    pm_decref(&keep->base);
    cr_assert_eq(released, RINGS / 2 * LEN + LONE, "the lone nodes went with the array");
    cr_assert_eq(pm_gc_collect(2).collected, (size_t)RINGS / 2 * LEN);
    cr_assert_eq(released, RINGS * LEN + LONE);
}

/* ---- the environment (read when the collector starts: run in a fresh process) ---- */

static void env_child(void) {}

Test(gc, environment_options) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        setenv("POOLMALLOC_GC_THRESHOLD", "5,6,7", 1);
        setenv("POOLMALLOC_GC", "0", 1);
        setenv("POOLMALLOC_GC_DEBUG", "stats", 1);
        setenv("TEST_GC_ENV_CHILD", "1", 1);
        execl("/proc/self/exe", "test-gc", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[256] = {0};
    size_t len = 0;
    ssize_t k;
    while (len < sizeof buf - 1 && (k = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)k;
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_str_eq(buf, "threshold 5 6 7 enabled 0 debug 1\n");
    (void)env_child;
}

/* In the re-executed child: report what the collector read, before Criterion starts. */
__attribute__((constructor)) static void env_child_report(void) {
    if (getenv("TEST_GC_ENV_CHILD") == NULL)
        return;
    long t[3];
    pm_gc_get_threshold(t);
    printf("threshold %ld %ld %ld enabled %d debug %d\n", t[0], t[1], t[2], pm_gc_is_enabled(),
           pm_gc_get_debug() & ~PM_GC_DEBUG_CHECKS);
    fflush(stdout);
    _exit(0);
}
