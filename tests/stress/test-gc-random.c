/*
 * test-gc-random.c: random object graphs against an independent model.
 *
 * The test keeps its own copy of the graph: for each node, the references the test holds
 * (roots) and the targets of its four reference slots. Each round it creates nodes, rewires
 * random slots, drops random roots, makes weak references and collects a random generation;
 * then it marks the model from the roots, independently of the library, and checks:
 *   - every node reachable in the model is alive and intact: canary, id and all four
 *     slots exactly as the model says (nothing freed, cleared or overwritten);
 *   - nothing was released or finalized twice;
 *   - after a full collection, every node unreachable in the model was released, and
 *     finalized exactly once if its type has a finalizer; weak references answer exactly
 *     for the reachable nodes; the collector tracks exactly the reachable nodes.
 * Freed memory is poisoned (POOLMALLOC_POISON=1, set before the allocator starts), and the
 * canary of a released node is overwritten, so a use after free shows as a wrong canary.
 * The test only ever touches nodes that are reachable in the model.
 *
 * Three node types mix in every graph: a layout, traverse/clear callbacks, and a layout with
 * a finalizer. A second variant lets finalizers resurrect their object at random.
 */
#include <criterion/criterion.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "poolmalloc.h"

#define MAXN 3000
#define SLOTS 4
#define CANARY_LIVE UINT64_C(0x5eed5eed5eed5eed)
#define CANARY_DEAD UINT64_C(0xdeaddeaddeaddead)

typedef struct rnode {
    pm_object base;
    pm_object *ref[SLOTS];
    uint64_t canary;
    long id;
} rnode;

static struct model {
    rnode *obj;
    int roots;          /* references the test holds */
    int edge[SLOTS];    /* model of ref[]: node ids, -1 for NULL */
    int finalized, released;
    bool finalizable;
    pm_object *weak;    /* a weak reference the test holds, or NULL */
} M[MAXN];
static int nnodes;
static uint64_t rng_state;
static bool resurrection; /* finalizers resurrect at random */

static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static int pick(int n) { return (int)(rng() % (uint64_t)n); }

/* ---- the types ---- */

static void rnode_release(pm_object *self) {
    rnode *x = (rnode *)self;
    cr_assert_eq(x->canary, CANARY_LIVE, "release of a dead or corrupt node %p", (void *)x);
    cr_assert(x->id >= 0 && x->id < nnodes);
    for (int s = 0; s < SLOTS; s++) {
        PM_CLEAR(x->ref[s]); /* traverse type; the layout ones are NULL already */
        M[x->id].edge[s] = -1;
    }
    cr_assert_eq(M[x->id].released, 0, "node %ld released twice", x->id);
    M[x->id].released++;
    x->canary = CANARY_DEAD;
}

static void rnode_finalize(pm_object *self) {
    rnode *x = (rnode *)self;
    cr_assert_eq(x->canary, CANARY_LIVE, "finalize of a dead node");
    cr_assert_eq(M[x->id].finalized, 0, "node %ld finalized twice", x->id);
    M[x->id].finalized++;
    if (resurrection && pick(4) == 0) {
        pm_incref(self); /* the test now holds it */
        M[x->id].roots++;
    }
}

static int rnode_traverse(pm_object *self, pm_visit_fn visit, void *arg) {
    rnode *x = (rnode *)self;
    for (int s = 0; s < SLOTS; s++)
        if (x->ref[s] != NULL) {
            int e = visit(x->ref[s], arg);
            if (e != 0)
                return e;
        }
    return 0;
}

static void rnode_clear(pm_object *self) {
    rnode *x = (rnode *)self;
    for (int s = 0; s < SLOTS; s++) {
        M[x->id].edge[s] = -1;
        PM_CLEAR(x->ref[s]);
    }
}

static const uint16_t rnode_refs[] = {offsetof(rnode, ref[0]), offsetof(rnode, ref[1]),
                                      offsetof(rnode, ref[2]), offsetof(rnode, ref[3]), 0};
static pm_type layout_type = {.name = "rlayout", .size = sizeof(rnode),
                              .ref_offsets = rnode_refs, .release = rnode_release};
static pm_type callback_type = {.name = "rcallback", .size = sizeof(rnode),
                                .traverse = rnode_traverse, .clear = rnode_clear,
                                .release = rnode_release};
static pm_type final_type = {.name = "rfinal", .size = sizeof(rnode), .ref_offsets = rnode_refs,
                             .release = rnode_release, .finalize = rnode_finalize};

/* Freed blocks are filled with 0xDD: set before the allocator reads its options. */
__attribute__((constructor(101))) static void poison_freed_memory(void) {
    setenv("POOLMALLOC_POISON", "1", 0);
}

/* ---- the model ---- */

static bool reach[MAXN];
static int reach_list[MAXN], nreach;

/* Marks the model from the roots: which nodes must be alive. */
static void model_mark(void) {
    memset(reach, 0, sizeof reach);
    nreach = 0;
    static int stack[MAXN];
    int sp = 0;
    for (int i = 0; i < nnodes; i++)
        if (M[i].roots > 0 && !reach[i]) {
            reach[i] = true;
            stack[sp++] = i;
        }
    while (sp > 0) {
        int i = stack[--sp];
        reach_list[nreach++] = i;
        for (int s = 0; s < SLOTS; s++) {
            int j = M[i].edge[s];
            if (j >= 0 && !reach[j]) {
                reach[j] = true;
                stack[sp++] = j;
            }
        }
    }
}

static void create_nodes(int k) {
    for (int n = 0; n < k && nnodes < MAXN; n++) {
        int kind = pick(3);
        pm_type *t = kind == 0 ? &layout_type : kind == 1 ? &callback_type : &final_type;
        rnode *x = (rnode *)pm_new(t);
        cr_assert_not_null(x);
        x->canary = CANARY_LIVE;
        x->id = nnodes;
        struct model *m = &M[nnodes++];
        memset(m, 0, sizeof *m);
        m->obj = x;
        m->roots = 1;
        m->finalizable = t == &final_type;
        for (int s = 0; s < SLOTS; s++)
            m->edge[s] = -1;
        cr_assert_eq(pm_track(&x->base), 0);
    }
}

/* A random node still alive (not released) in ids [from, to): safe to touch even if it
 * became unreachable (linking to it brings it back, in the model as in the heap). -1 if
 * none was found. */
static int pick_alive_in(int from, int to) {
    for (int tries = 0; tries < 16 && to > from; tries++) {
        int i = from + pick(to - from);
        if (M[i].released == 0)
            return i;
    }
    return -1;
}
static int pick_alive(void) { return pick_alive_in(0, nnodes); }

/* Points a random slot of a node of [from, to) at a node of the same range (mostly), or
 * anywhere, or NULL: clusters with a few links between them. */
static void rewire_in(int from, int to) {
    int i = pick_alive_in(from, to), s = pick(SLOTS);
    int r = pick(20);
    int j = r == 0 ? -1 : r <= 18 ? pick_alive_in(from, to) : pick_alive();
    if (i < 0)
        return;
    rnode *x = M[i].obj;
    pm_object *old = x->ref[s];
    x->ref[s] = j >= 0 ? pm_newref(&M[j].obj->base) : NULL;
    M[i].edge[s] = j;
    pm_xdecref(old); /* may free a subgraph, run finalizers: the model is already right */
}
static void rewire(void) { rewire_in(0, nnodes); }

/* Drops every root the test holds in [from, to). */
static void drop_roots_in(int from, int to) {
    for (int i = from; i < to; i++)
        while (M[i].roots > 0) {
            M[i].roots--;
            pm_decref(&M[i].obj->base);
        }
}

static void drop_root(void) {
    static int held[MAXN];
    int n = 0;
    for (int i = 0; i < nnodes; i++)
        if (M[i].roots > 0)
            held[n++] = i;
    if (n == 0)
        return;
    int i = held[pick(n)];
    M[i].roots--;
    pm_decref(&M[i].obj->base);
}

static void make_weakref(void) {
    int i = pick_alive();
    if (i >= 0 && M[i].weak == NULL) {
        M[i].weak = pm_weakref_new(&M[i].obj->base, NULL, NULL);
        cr_assert_not_null(M[i].weak);
    }
}

/* Drops every reference the test holds, collecting until nothing comes back to life. */
static void drop_everything(void) {
    bool any;
    do {
        any = false;
        for (int i = 0; i < nnodes; i++)
            while (M[i].roots > 0) {
                M[i].roots--;
                pm_decref(&M[i].obj->base);
                any = true;
            }
        pm_gc_collect(2);
    } while (any);
}

/* One round of mutations: a new cluster of nodes wired mostly among themselves, some
 * links anywhere, and roots dropped: all those of an older cluster, and a few at random. */
static int cluster_start[64], nclusters;
static void mutate(void) {
    int from = nnodes, k = 1 + pick(150);
    create_nodes(k);
    if (nclusters < 64)
        cluster_start[nclusters++] = from;
    for (int e = pick(3 * k); e > 0; e--)
        rewire_in(from, nnodes);
    for (int e = pick(k / 16 + 1); e > 0; e--)
        rewire();
    if (pick(3) != 0) { /* often the new cluster itself, which little else refers to */
        int c = pick(2) ? nclusters - 1 : pick(nclusters);
        drop_roots_in(cluster_start[c], c + 1 < nclusters ? cluster_start[c + 1] : nnodes);
    }
    for (int d = pick(k); d > 0; d--)
        drop_root();
}

static void check(bool full) {
    model_mark();
    for (int k = 0; k < nreach; k++) {
        int i = reach_list[k];
        rnode *x = M[i].obj;
        cr_assert_eq(M[i].released, 0, "reachable node %d was released", i);
        cr_assert_eq(x->canary, CANARY_LIVE, "reachable node %d is corrupt (use after free?)", i);
        cr_assert_eq(x->id, i);
        cr_assert(pm_is_tracked(&x->base));
        for (int s = 0; s < SLOTS; s++) {
            pm_object *want = M[i].edge[s] >= 0 ? &M[M[i].edge[s]].obj->base : NULL;
            cr_assert_eq(x->ref[s], want, "node %d slot %d changed", i, s);
        }
        if (!resurrection)
            cr_assert_eq(M[i].finalized, 0, "reachable node %d was finalized", i);
    }
    for (int i = 0; i < nnodes; i++) {
        cr_assert_leq(M[i].released, 1);
        cr_assert_leq(M[i].finalized, 1);
        if (!full || reach[i])
            continue;
        cr_assert_eq(M[i].released, 1, "unreachable node %d survived a full collection", i);
        if (M[i].finalizable)
            cr_assert_eq(M[i].finalized, 1, "node %d died unfinalized", i);
    }
    for (int i = 0; i < nnodes; i++) {
        if (M[i].weak == NULL)
            continue;
        pm_object *o = pm_weakref_get(M[i].weak);
        if (reach[i] && resurrection)
            /* a collection clears the weak references to all the garbage before finalizers
             * run (as CPython): what a finalizer brings back keeps them cleared */
            cr_assert(o == NULL || o == &M[i].obj->base);
        else if (reach[i])
            cr_assert_eq(o, &M[i].obj->base, "weak reference to live node %d", i);
        else if (full)
            cr_assert_null(o, "weak reference to dead node %d", i);
        pm_xdecref(o);
    }
    if (full)
        cr_assert_eq(pm_gc_get_objects(-1, NULL, 0), (size_t)nreach,
                     "the collector tracks exactly the reachable nodes");
}

static void run_seed(uint64_t seed, int rounds) {
    rng_state = seed * 0x9E3779B97F4A7C15u | 1;
    nnodes = nclusters = 0;
    pm_gc_disable();
    pm_gc_collect(2);
    for (int r = 0; r < rounds; r++) {
        mutate();
        for (int w = pick(10); w > 0; w--)
            make_weakref();
        int gen = pick(4);
        bool full = gen >= 2;
        pm_gc_result res = pm_gc_collect(full ? 2 : gen);
        cr_assert_eq(res.uncollectable, 0);
        check(full);
    }
    /* the end: every reference dropped, everything goes */
    drop_everything();
    check(true);
    cr_assert_eq(nreach, 0);
    for (int i = 0; i < nnodes; i++)
        pm_xdecref(M[i].weak);
}

Test(random_graphs, collected_exactly_the_unreachable, .timeout = 120) {
    for (uint64_t seed = 1; seed <= 60; seed++)
        run_seed(seed, 30);
}

Test(random_graphs, with_resurrecting_finalizers, .timeout = 120) {
    resurrection = true;
    for (uint64_t seed = 100; seed < 140; seed++)
        run_seed(seed, 30);
}

/* Automatic collections in the middle of the mutations, at a low threshold. */
Test(random_graphs, with_automatic_collection, .timeout = 120) {
    for (uint64_t seed = 200; seed < 230; seed++) {
        pm_gc_set_threshold(50, 3, 3);
        rng_state = seed;
        nnodes = nclusters = 0;
        pm_gc_enable();
        for (int r = 0; r < 30; r++) {
            mutate();
            check(false);
        }
        pm_gc_disable();
        drop_everything();
        check(true);
        cr_assert_eq(nreach, 0);
    }
}
