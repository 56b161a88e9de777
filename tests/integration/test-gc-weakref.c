/*
 * test-gc-weakref.c: weak references: get while alive, NULL after; callbacks on refcount
 * death and on collection; weak references to garbage cleared before any clear runs;
 * no callback for a weak reference that is garbage itself (even when its referent dies
 * during the clearing, bpo-38006); callbacks that allocate, free,
 * create weak references and try to collect.
 */
#include "test-gc-common.h"

#include <errno.h>
#include <signal.h>

TestSuite(weakref, .init = gc_test_setup);

static int calls;
static pm_object *last_weakref;
static void *last_data;

static void note_callback(pm_object *wr, void *data) {
    calls++;
    last_weakref = wr;
    last_data = data;
    cr_assert(pm_is_weakref(wr));
    cr_assert_null(pm_weakref_get(wr), "the referent is gone when the callback runs");
    cr_assert_gt(pm_refcount(wr), 0, "the weak reference is alive for the call");
}

Test(weakref, get_while_alive_then_null) {
    node *n = new_node(1);
    pm_object *wr = pm_weakref_new(&n->base, NULL, NULL);
    cr_assert_not_null(wr);
    cr_assert(pm_is_weakref(wr));
    cr_assert_not(pm_is_weakref(&n->base));
    cr_assert_eq(pm_weakref_count(&n->base), 1);
    cr_assert_eq(pm_refcount(&n->base), 1, "a weak reference does not count");
    pm_object *strong = pm_weakref_get(wr);
    cr_assert_eq(strong, &n->base);
    cr_assert_eq(pm_refcount(&n->base), 2, "get returns a new strong reference");
    pm_decref(strong);
    pm_decref(&n->base);
    cr_assert_eq(released, 1);
    cr_assert_null(pm_weakref_get(wr));
    pm_decref(wr);
}

Test(weakref, callback_on_refcount_death) {
    node *n = new_node(1);
    node *data = new_node(2);
    pm_object *wr1 = pm_weakref_new_object_data(&n->base, note_callback, &data->base);
    pm_object *wr2 = pm_weakref_new(&n->base, NULL, NULL);
    cr_assert_eq(pm_weakref_count(&n->base), 2);
    cr_assert_eq(pm_refcount(&data->base), 2, "the weak reference holds its data");
    pm_decref(&n->base);
    cr_assert_eq(calls, 1);
    cr_assert_eq(last_weakref, wr1);
    cr_assert_eq(last_data, &data->base);
    cr_assert_null(pm_weakref_get(wr2));
    pm_decref(wr1);
    pm_decref(wr2);
    pm_decref(&data->base);
    cr_assert_eq(released, 2);
}

Test(weakref, dropping_the_weakref_first) {
    node *n = new_node(1);
    pm_object *wr = pm_weakref_new(&n->base, note_callback, NULL);
    pm_decref(wr);
    cr_assert_eq(pm_weakref_count(&n->base), 0);
    pm_decref(&n->base);
    cr_assert_eq(calls, 0, "a dead weak reference has no callback");
}

Test(weakref, many_referents) {
    enum { N = 5000 };
    static node *nodes[N];
    static pm_object *wrs[N];
    for (int i = 0; i < N; i++) {
        nodes[i] = new_node(i);
        wrs[i] = pm_weakref_new(&nodes[i]->base, i % 2 ? note_callback : NULL, NULL);
    }
    for (int i = 0; i < N; i += 3)
        pm_decref(&nodes[i]->base);
    for (int i = 0; i < N; i++) {
        pm_object *o = pm_weakref_get(wrs[i]);
        cr_assert_eq(o != NULL, i % 3 != 0, "weakref %d", i);
        pm_xdecref(o);
    }
    for (int i = 0; i < N; i++) {
        if (i % 3 != 0)
            pm_decref(&nodes[i]->base);
        pm_decref(wrs[i]);
    }
    cr_assert_eq(calls, N / 2, "one callback per referent with one");
}

/* ---- with the collector ---- */

static pm_object *watch; /* a weak reference to another member of the garbage */
static int clears, clears_seeing_referent;

static void watching_clear(pm_object *self) {
    clears++;
    pm_object *o = pm_weakref_get(watch);
    if (o != NULL) {
        clears_seeing_referent++;
        pm_decref(o);
    }
    tnode_clear(self);
}
static pm_type watching_type = {.name = "watching", .size = sizeof(node),
                                .traverse = tnode_traverse, .clear = watching_clear,
                                .release = tnode_release};

Test(weakref, cleared_before_any_clear_runs) {
    node *ring = make_ring(&watching_type, 8, 0);
    node *third = (node *)((node *)((node *)ring->a)->a);
    watch = pm_weakref_new(&third->base, note_callback, NULL);
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.collected, 8);
    cr_assert_gt(clears, 0);
    cr_assert_eq(clears_seeing_referent, 0, "no clear could reach garbage through a weakref");
    cr_assert_eq(calls, 1, "the callback of a live weak reference runs");
    cr_assert_eq(last_weakref, watch);
    cr_assert_null(pm_weakref_get(watch));
    pm_decref(watch);
}

Test(weakref, garbage_weakref_gets_no_callback) {
    node *ring = make_ring(&node_type, 3, 0);
    /* the weak reference is part of the garbage: held only by a ring member */
    pm_object *wr = pm_weakref_new(&ring->base, note_callback, NULL);
    ring->b = wr;
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.collected, 4, "the ring and the weak reference");
    cr_assert_eq(calls, 0, "a weak reference that is garbage itself: no callback");
}

/* bpo-38006: the weak reference is garbage, its referent is not in the garbage (untracked,
 * or in an older generation) and dies only when clearing the garbage drops its last
 * reference. CPython makes no call: the weak reference was cleared before any clear ran. */
static void referent_outside_garbage(bool referent_tracked_old) {
    node *referent = (node *)pm_new(&node_type);
    cr_assert_not_null(referent);
    referent->canary = CANARY_LIVE;
    if (referent_tracked_old)
        pm_gc_collect(1); /* moves it to generation 2, out of the young set below */
    else
        pm_untrack(&referent->base);
    node *a = new_node(1), *b = new_node(2);
    node *data = new_node(3); /* the callback's data, garbage too */
    pm_object *wr = pm_weakref_new_object_data(&referent->base, note_callback, &data->base);
    cr_assert_not_null(wr);
    /* a -> referent (first: cleared before the weak reference), a -> wr; a <-> b via b */
    a->a = &referent->base;
    a->b = wr;
    b->a = pm_newref(&a->base);
    data->a = &b->base;
    pm_decref(&a->base);
    pm_decref(&data->base);
    pm_gc_result r = pm_gc_collect(referent_tracked_old ? 1 : 2);
    cr_assert_eq(r.collected, 4, "a, b, data and the weak reference");
    cr_assert_eq(calls, 0, "a weak reference in the garbage never calls back, even when its "
                 "referent dies during the clearing");
    cr_assert_eq(released, 4, "the referent died too, with a, b and data");
}

Test(weakref, garbage_weakref_untracked_referent_gets_no_callback) {
    referent_outside_garbage(false);
}

Test(weakref, garbage_weakref_older_referent_gets_no_callback) {
    referent_outside_garbage(true);
}

Test(weakref, opaque_callback_data) {
    static int cookie;
    node *n = new_node(1);
    pm_object *wr = pm_weakref_new(&n->base, note_callback, &cookie);
    cr_assert_not_null(wr);
    pm_decref(&n->base);
    cr_assert_eq(calls, 1);
    cr_assert_eq(last_data, &cookie, "the callback gets the pointer given, untouched");
    pm_decref(wr);
}

static int busy_calls;
static void busy_callback(pm_object *wr, void *data) {
    (void)wr;
    busy_calls++;
    /* a callback may allocate, free, make weak references, and try to collect */
    node *tmp = new_node(1000);
    pm_object *w = pm_weakref_new(&tmp->base, NULL, NULL);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.collected + r.uncollectable, 0, "no collection inside a collection");
    pm_decref(&tmp->base);
    cr_assert_null(pm_weakref_get(w));
    pm_decref(w);
    cr_assert_eq(((node *)data)->canary, CANARY_LIVE, "its data object is intact");
}

Test(weakref, callbacks_run_safely) {
    node *data = new_node(7);
    pm_object *wrs[10];
    node *ring = make_ring(&fnode_type, 10, 0);
    node *x = ring;
    for (int i = 0; i < 10; i++, x = (node *)x->a)
        wrs[i] = pm_weakref_new_object_data(&x->base, busy_callback, &data->base);
    pm_decref(&ring->base);
    pm_gc_result r = pm_gc_collect(2);
    cr_assert_eq(r.collected, 10);
    cr_assert_eq(busy_calls, 10);
    cr_assert_eq(finalized, 10);
    for (int i = 0; i < 10; i++) {
        cr_assert_null(pm_weakref_get(wrs[i]));
        pm_decref(wrs[i]);
    }
    cr_assert_eq(pm_refcount(&data->base), 1);
    pm_decref(&data->base);
}

/* A callback sees only its data object, which its (live) weak reference keeps alive, and
 * so everything the data refers to is alive too: nothing a callback can reach was cleared. */
static pm_object *rescued;
static void rescuing_callback(pm_object *wr, void *data) {
    (void)wr;
    cr_assert_eq(((node *)data)->canary, CANARY_LIVE);
    rescued = pm_newref((pm_object *)data);
}

Test(weakref, callback_data_keeps_what_it_refers_to) {
    node *ring = make_ring(&node_type, 4, 0);
    node *data = new_node(9);
    data->a = pm_newref(&ring->base); /* data refers into the ring */
    pm_object *wr = pm_weakref_new_object_data(&ring->base, rescuing_callback, &data->base);
    pm_decref(&data->base); /* now held by the weak reference only */
    pm_decref(&ring->base);
    cr_assert_eq(pm_gc_collect(2).collected, 0, "data, held by a live weakref, keeps the ring");
    cr_assert_null(rescued);
    PM_CLEAR(data->a); /* the ring becomes garbage */
    cr_assert_eq(pm_gc_collect(2).collected, 4);
    cr_assert_eq(rescued, &data->base, "the callback got its data, alive");
    pm_decref(rescued);
    pm_decref(wr);
    cr_assert_eq(released, 5);
}

Test(weakref, to_dead_object_is_misuse, .signal = SIGABRT) {
    node *n = new_node(1);
    pm_decref(&n->base);
    pm_weakref_new(&n->base, NULL, NULL);
}
