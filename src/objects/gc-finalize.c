/*
 * gc-finalize.c: step 4 of a collection, the unreachable objects (CPython's semantics):
 * uncollectable ones kept, weak references cleared, callbacks and finalizers run (PEP 442),
 * resurrected objects rescued, the rest cleared so that reference counting frees them.
 */
#include "gc.h"

/* ---- step 4: the unreachable objects ----------------------------------------------------- */

void pm_gc_garbage_add(pm_object *o) {
    pm_gc_domain *d = &pm_gc;
    if (d->garbage_len == d->garbage_cap) {
        size_t cap = d->garbage_cap ? d->garbage_cap * 2 : 64;
        pm_object **g = pm_realloc(d->garbage, cap * sizeof *g);
        if (g == NULL)
            return; /* not kept: it stays alive through its cycle and is found again */
        d->garbage = g;
        d->garbage_cap = cap;
    }
    pm_incref(o);
    d->garbage[d->garbage_len++] = o;
}

static void keep_in_garbage(pm_object *x) {
    if (pm_gc.debug & PM_GC_DEBUG_LEAK)
        pm_fdprintf(2, "poolmalloc gc: uncollectable <%s %p>\n", name_of(x), (void *)x);
    pm_gc_garbage_add(x);
}

/* Objects of types that cannot be cleared, and all the garbage they reach, are kept in
 * pm_gc_garbage: clearing what they refer to would leave them pointing at cleared objects
 * (CPython does the same for objects with legacy finalizers). */
static size_t keep_uncollectable(unsigned dest) {
    pm_gc_mark_from_unclearable();
    return pm_gc_split_unreachable(dest, pm_scr_codes(pm_gc.epoch).done, keep_in_garbage);
}

/* After user code ran (finalizers, weak reference callbacks): the unreachable objects that
 * are referenced again from outside, and what they reach, live on, untouched. */
static void rescue_resurrected(unsigned dest) {
    if (table_live(&pm_gc.table[PM_ST_UNREACHABLE]) == 0)
        return;
    pm_gc_find_reachable(PM_ST_UNREACHABLE, PM_ST_UNREACHABLE);
    pm_gc_split_unreachable(dest, pm_scr_codes(pm_gc.epoch).done, NULL);
}

static void save_all(pm_object *x) {
    pm_gc_garbage_add(x);
}

void pm_gc_handle_unreachable(unsigned dest, pm_gc_result *res) {
    pm_gc_domain *d = &pm_gc;
    pm_gc_table *u = &d->table[PM_ST_UNREACHABLE];
    if (d->debug & PM_GC_DEBUG_LEAK)
        for (size_t i = 0; i < u->len; i++)
            if (u->items[i] != NULL)
                pm_fdprintf(2, "poolmalloc gc: collectable <%s %p>\n", name_of(u->items[i]),
                            (void *)u->items[i]);
    if (d->debug & (PM_GC_DEBUG_SAVEALL | PM_GC_DEBUG_LEAK)) {
        /* leak hunting: keep everything, cleared of nothing */
        for (size_t i = 0; i < u->len; i++)
            if (u->items[i] != NULL)
                *pm_side_of(u->items[i]) = with_scratch(PM_ST_UNREACHABLE, 1);
        res->collected += pm_gc_split_unreachable(dest, 1, save_all);
        return;
    }
    if (d->u_flags & PM_U_NONCLEAR)
        res->uncollectable += keep_uncollectable(dest);

    /* Weak references that are garbage themselves are detached first, before any user code
     * runs: whatever dies later (their referent may be outside the garbage and die when the
     * garbage is cleared), they never call back (CPython, bpo-38006), since their callback
     * and data may be garbage already cleared. */
    for (size_t i = 0; i < u->len && (d->u_flags & PM_U_WEAKREF_OBJS); i++) {
        pm_object *x = u->items[i];
        if (x != NULL && (pm_ready(pm_obj_type(x)) & PM_TYPE_WEAKREF))
            pm_weakref_forget_referent(x);
    }
    /* Weak references to the garbage are cleared, all of them, before any user code runs:
     * no callback or finalizer can reach a garbage object through one. */
    bool user_code = false;
    pm_object *callbacks = NULL;
    for (size_t i = 0; i < u->len && (d->u_flags & PM_U_WEAKREFS); i++) {
        pm_object *x = u->items[i];
        if (x != NULL && (x->pm_typebits_ & PM_OF_WEAKREFS))
            pm_weakref_clear_for_gc(x, &callbacks);
    }
    if (callbacks != NULL) {
        user_code = true;
        pm_weakref_run_callbacks(callbacks);
    }

    /* PEP 442: finalizers run once, with every garbage object still intact. Objects they
     * free by refcounting leave the table through untrack (their slot becomes NULL). */
    for (size_t i = 0; i < u->len && (d->u_flags & PM_U_FINALIZE); i++) {
        pm_object *x = u->items[i];
        if (x == NULL)
            continue;
        const pm_type *t = pm_obj_type(x);
        if (t->finalize == NULL || (x->pm_typebits_ & PM_OF_FINALIZED))
            continue;
        x->pm_typebits_ |= PM_OF_FINALIZED;
        user_code = true;
        pm_incref(x);
        t->finalize(x);
        pm_decref(x);
    }
    if (user_code)
        rescue_resurrected(dest);

    res->collected += table_live(u);
    /* Clearing breaks the cycles; reference counting frees the objects. */
    for (size_t i = 0; i < u->len; i++) {
        pm_object *x = u->items[i];
        if (x == NULL)
            continue;
        pm_incref(x);
        pm_object_clear(x, pm_obj_type(x));
        pm_decref(x);
    }
    /* Whatever clearing did not free lives on in the next generation, as in CPython. */
    for (size_t i = 0; i < u->len && table_live(u) > 0; i++)
        if (u->items[i] != NULL)
            move_to(dest, u->items[i]);
    u->len = u->holes = 0;
}

