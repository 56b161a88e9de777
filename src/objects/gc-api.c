/*
 * gc-api.c: the collector's public API (poolmalloc.h): collections on demand, switches,
 * thresholds, freezing, statistics, callbacks, debug flags and introspection.
 */
#include "gc.h"

/* ---- public API ------------------------------------------------------------------------------ */

pm_gc_result pm_gc_collect(int generation) {
    pm_gc_result res = {0, 0};
    pm_gc_ready();
    if (generation < 0 || generation > 2) {
        errno = EINVAL;
        return res;
    }
    if (pm_gc.shared != NULL)
        return pm_shared_collect(&pm_gc, generation);
    if (pm_gc.collecting)
        return res;
    PM_GC_ENTER();
    res = pm_gc_collect_now(generation);
    PM_GC_LEAVE();
    return res;
}

int pm_gc_enable(void) {
    pm_gc_ready();
    int was = pm_gc.enabled;
    pm_gc.enabled = 1;
    pm_gc_update_trigger();
    return was;
}

int pm_gc_disable(void) {
    pm_gc_ready();
    int was = pm_gc.enabled;
    pm_gc.enabled = 0;
    pm_gc_update_trigger();
    return was;
}

int pm_gc_is_enabled(void) {
    pm_gc_ready();
    return pm_gc.enabled;
}

int pm_gc_set_threshold(long threshold0, long threshold1, long threshold2) {
    pm_gc_ready();
    if (threshold0 < 0 || threshold1 < 0 || threshold2 < 0) {
        errno = EINVAL;
        return -1;
    }
    pm_gc.threshold[0] = threshold0;
    pm_gc.threshold[1] = threshold1;
    pm_gc.threshold[2] = threshold2;
    pm_gc_update_trigger();
    return 0;
}

void pm_gc_get_threshold(long out[3]) {
    pm_gc_ready();
    memcpy(out, pm_gc.threshold, sizeof pm_gc.threshold);
}

void pm_gc_get_count(long out[3]) {
    pm_gc_ready();
    memcpy(out, pm_gc.count, sizeof pm_gc.count);
}

/* Moves the live objects of table `from` to the end of table `to` (room reserved). */
int pm_gc_freeze(void) {
    pm_gc_ready();
    pm_gc_domain *d = &pm_gc;
    if (d->collecting)
        return 0;
    size_t n = table_live(&d->table[1]) + table_live(&d->table[2]) + table_live(&d->table[3]);
    PM_GC_ENTER();
    int rc = 0;
    if (!pm_table_reserve(&d->table[PM_ST_PERMANENT], n)) {
        errno = ENOMEM;
        rc = -1;
    } else {
        for (unsigned st = PM_ST_GEN2; st >= PM_ST_GEN0; st--)
            pm_gc_move_table(st, PM_ST_PERMANENT);
        for (int i = 0; i < 3; i++)
            d->count[i] = 0;
        d->long_lived_total = d->long_lived_pending = 0;
    }
    PM_GC_LEAVE();
    return rc;
}

int pm_gc_unfreeze(void) {
    pm_gc_ready();
    pm_gc_domain *d = &pm_gc;
    if (d->collecting)
        return 0;
    PM_GC_ENTER();
    int rc = 0;
    if (!pm_table_reserve(&d->table[PM_ST_GEN2], table_live(&d->table[PM_ST_PERMANENT]))) {
        errno = ENOMEM;
        rc = -1;
    } else {
        pm_gc_move_table(PM_ST_PERMANENT, PM_ST_GEN2);
    }
    PM_GC_LEAVE();
    return rc;
}

size_t pm_gc_get_freeze_count(void) {
    pm_gc_ready();
    return table_live(&pm_gc.table[PM_ST_PERMANENT]);
}

void pm_gc_get_stats(pm_gc_stats out[3]) {
    pm_gc_ready();
    memcpy(out, pm_gc.stats, sizeof pm_gc.stats);
}

int pm_gc_callback_add(pm_gc_callback callback, void *arg) {
    pm_gc_ready();
    pm_gc_domain *d = &pm_gc;
    if (callback == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (d->ncallbacks == PM_GC_MAX_CALLBACKS) {
        errno = ENOSPC;
        return -1;
    }
    d->callbacks[d->ncallbacks].fn = callback;
    d->callbacks[d->ncallbacks].arg = arg;
    d->ncallbacks++;
    return 0;
}

int pm_gc_callback_remove(pm_gc_callback callback, void *arg) {
    pm_gc_ready();
    pm_gc_domain *d = &pm_gc;
    for (int i = 0; i < d->ncallbacks; i++) {
        if (d->callbacks[i].fn != callback || d->callbacks[i].arg != arg)
            continue;
        memmove(&d->callbacks[i], &d->callbacks[i + 1],
                (size_t)(d->ncallbacks - i - 1) * sizeof d->callbacks[0]);
        d->ncallbacks--;
        return 0;
    }
    errno = ENOENT;
    return -1;
}

void pm_gc_set_debug(int flags) {
    pm_gc_ready();
    pm_gc.debug = flags;
}

int pm_gc_get_debug(void) {
    pm_gc_ready();
    return pm_gc.debug;
}

typedef struct collect_refs {
    pm_object **out;
    size_t max, n;
} collect_refs;

static void give(collect_refs *c, pm_object *o) {
    if (c->n < c->max)
        c->out[c->n] = pm_newref(o);
    c->n++;
}

static int referent_visit(pm_object *ref, void *arg) {
    give(arg, ref);
    return 0;
}

size_t pm_gc_get_referents(pm_object *o, pm_object **out, size_t max) {
    pm_gc_ready();
    collect_refs c = {out, max, 0};
    if (o == NULL || !(pm_ready(pm_obj_type(o)) & PM_TYPE_CONTAINER))
        return 0;
    PM_GC_ENTER();
    pm_object_traverse(o, referent_visit, &c);
    PM_GC_LEAVE();
    return c.n;
}

size_t pm_gc_get_objects(int generation, pm_object **out, size_t max) {
    pm_gc_ready();
    unsigned lo, hi;
    if (generation == -1) {
        lo = PM_ST_GEN0;
        hi = PM_ST_GEN2;
    } else if (generation >= 0 && generation <= 3) {
        lo = hi = (unsigned)generation + 1;
    } else {
        errno = EINVAL;
        return 0;
    }
    collect_refs c = {out, max, 0};
    PM_GC_ENTER();
    for (unsigned st = lo; st <= hi; st++) {
        const pm_gc_table *t = &pm_gc.table[st];
        for (size_t i = 0; i < t->len; i++)
            if (t->items[i] != NULL)
                give(&c, t->items[i]);
    }
    PM_GC_LEAVE();
    return c.n;
}

size_t pm_gc_garbage(pm_object **out, size_t max) {
    pm_gc_ready();
    collect_refs c = {out, max, 0};
    for (size_t i = 0; i < pm_gc.garbage_len; i++)
        give(&c, pm_gc.garbage[i]);
    return c.n;
}

size_t pm_gc_garbage_clear(void) {
    pm_gc_ready();
    pm_gc_domain *d = &pm_gc;
    PM_GC_ENTER();
    /* detach first: a decref may run code that inspects or extends the list */
    pm_object **g = d->garbage;
    size_t n = d->garbage_len;
    d->garbage = NULL;
    d->garbage_len = d->garbage_cap = 0;
    for (size_t i = 0; i < n; i++)
        pm_decref(g[i]);
    pm_free(g);
    PM_GC_LEAVE();
    return n;
}
