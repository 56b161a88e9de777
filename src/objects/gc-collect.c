/*
 * gc-collect.c: step 3 of a collection (sweep the set: survivors up a generation, garbage to
 * the unreachable table U), one whole collection with its callbacks and statistics, the
 * automatic trigger, and giving the tables' memory back when they are mostly empty.
 */
#include "gc.h"

/* ---- step 3: sweep --------------------------------------------------------------------------- */

/* An unreachable object goes to U, which grows as needed; false if it cannot grow (the
 * object then survives this collection: keeping garbage a while longer is always safe). */
static bool move_unreachable(pm_object *x) {
    pm_gc_table *u = &pm_gc.table[PM_ST_UNREACHABLE];
    if (PM_UNLIKELY(u->len == u->cap) && !pm_table_reserve(u, u->len < 1024 ? 1024 : u->len))
        return false;
    move_to(PM_ST_UNREACHABLE, x);
    uintptr_t tb = x->pm_typebits_;
    const pm_type *t = (const pm_type *)(tb & ~PM_OF_MASK);
    if (PM_UNLIKELY(!(pm_ready(t) & PM_TYPE_CLEARABLE)))
        pm_gc.u_flags |= PM_U_NONCLEAR;
    if (PM_UNLIKELY(tb & PM_OF_WEAKREFS))
        pm_gc.u_flags |= PM_U_WEAKREFS;
    if (t->finalize != NULL && !(tb & PM_OF_FINALIZED))
        pm_gc.u_flags |= PM_U_FINALIZE;
    if (PM_UNLIKELY(pm_ready(t) & PM_TYPE_WEAKREF))
        pm_gc.u_flags |= PM_U_WEAKREF_OBJS;
    return true;
}

/* Empties table st: reachable (DONE) objects to dest (room reserved), the rest to U.
 * Returns the number moved to dest. */
static size_t sweep_table(unsigned st, unsigned dest, unsigned done) {
    pm_gc_table *t = &pm_gc.table[st];
    size_t kept = 0;
    for (size_t i = 0; i < t->len; i++) {
        pm_object *x = t->items[i];
        if (x == NULL)
            continue;
        if ((*pm_side_of(x) >> 3) == done || !move_unreachable(x)) {
            move_to(dest, x);
            kept++;
        }
    }
    t->len = 0;
    t->holes = 0;
    return kept;
}

/* Table st keeps its reachable (DONE) objects, packed in order, with the clean scratch;
 * the others go to U. */
static void sweep_in_place(unsigned st, unsigned done) {
    pm_gc_table *t = &pm_gc.table[st];
    const uintptr_t *top = pm_side_top;
    uint8_t clean = (uint8_t)(st | clean_scr() << 3);
    size_t w = 0;
    for (size_t r = 0; r < t->len; r++) {
        pm_object *x = t->items[r];
        if (x == NULL)
            continue;
        uint8_t *b = side_known(top, x);
        if ((*b >> 3) != done && move_unreachable(x))
            continue;
        if (*b != clean)
            *b = clean;
        if (w != r) {
            t->items[w] = x;
            pm_obj_set_place(x, st, w);
        }
        w++;
    }
    t->len = w;
    t->holes = 0;
}


size_t pm_gc_split_unreachable(unsigned dest, unsigned keep, void (*kept)(pm_object *)) {
    pm_gc_table *u = &pm_gc.table[PM_ST_UNREACHABLE];
    uint8_t clean = (uint8_t)(PM_ST_UNREACHABLE | clean_scr() << 3);
    size_t moved = 0, w = 0;
    for (size_t r = 0; r < u->len; r++) {
        pm_object *x = u->items[r];
        if (x == NULL)
            continue;
        uint8_t *b = pm_side_of(x);
        if ((*b >> 3) == keep) {
            move_to(dest, x);
            if (kept != NULL)
                kept(x);
            moved++;
            continue;
        }
        *b = clean;
        if (w != r) {
            u->items[w] = x;
            pm_obj_set_place(x, PM_ST_UNREACHABLE, w);
        }
        w++;
    }
    u->len = w;
    u->holes = 0;
    return moved;
}


void pm_gc_move_table(unsigned from, unsigned to) {
    pm_gc_table *t = &pm_gc.table[from];
    for (size_t i = 0; i < t->len; i++)
        if (t->items[i] != NULL)
            move_to(to, t->items[i]);
    t->len = t->holes = 0;
}

/* ---- one collection ---------------------------------------------------------------------- */

static void run_callbacks(int phase, int generation, const pm_gc_result *res) {
    pm_gc_domain *d = &pm_gc;
    if (d->ncallbacks == 0)
        return;
    /* a copy: callbacks may register or remove callbacks */
    __typeof__(d->callbacks) cbs;
    int n = d->ncallbacks;
    memcpy(cbs, d->callbacks, sizeof cbs);
    pm_gc_info info = {.generation = generation,
                       .collected = res ? res->collected : 0,
                       .uncollectable = res ? res->uncollectable : 0};
    for (int i = 0; i < n; i++)
        cbs[i].fn(phase, &info, cbs[i].arg);
}

/* Scratch kept from one collection to the next: 32 KiB of unreachable table and of stack
 * cover the common young collection; more goes back at once. */
#define SCRATCH_KEEP 4096
/* A full collection that saw this many tracked objects die scans the side table for pages
 * that describe no tracked object any more. */
#define SIDE_PURGE_MIN_DEATHS 65536

/* After a collection: the tables it emptied or thinned give their memory back, so that a
 * program's peak does not stay resident (the Bloom filter, 256 KiB, stays). */
static void give_memory_back(int g, const pm_gc_result *res, size_t live_before) {
    pm_gc_domain *d = &pm_gc;
    pm_gc_table *u = &d->table[PM_ST_UNREACHABLE];
    if (u->cap > SCRATCH_KEEP && u->len == 0) {
        pm_free(u->items);
        u->items = NULL;
        u->cap = 0;
    }
    if (d->stack_cap > SCRATCH_KEEP) {
        pm_free(d->stack);
        d->stack = NULL;
        d->stack_cap = 0;
    }
    pm_addrmap_shrink(&d->overflow);
    for (unsigned st = PM_ST_GEN0; st <= PM_ST_GEN2; st++)
        pm_table_shrink(&d->table[st]);
    if (g != 2)
        return;
    /* deaths: the garbage found now, and what refcounting freed since the last full one */
    size_t live = table_live(&d->table[PM_ST_GEN2]);
    size_t died = res->collected + (d->last_full_live > live_before
                                    ? d->last_full_live - live_before : 0);
    d->last_full_live = live;
    if (died >= SIDE_PURGE_MIN_DEATHS && died > live)
        pm_side_purge_empty();
}

/* Steps 1-3 for generations 0..g; returns the number promoted into generation 2 from 1. */
static size_t find_and_sweep(int g, unsigned dest) {
    pm_gc_domain *d = &pm_gc;
    unsigned hi = (unsigned)g + 1;
    unsigned done = pm_scr_codes(d->epoch).done;
    size_t tentative = pm_gc_find_reachable(1, hi);
    if (g == 2) {
        /* every survivor is DONE, the clean value of the other encoding: switch to it, and
         * the oldest table needs no sweep unless it has garbage or holes */
        d->epoch ^= 1;
        pm_gc_table *old = &d->table[PM_ST_GEN2];
        size_t young_tentative = tentative;
        if (young_tentative > 0 || old->holes > 0)
            sweep_in_place(PM_ST_GEN2, done);
    }
    size_t promoted = 0;
    for (unsigned st = dest == hi ? hi - 1 : hi; st >= 1; st--)
        promoted += sweep_table(st, dest, done);
    return promoted;
}

pm_gc_result pm_gc_collect_now(int g) {
    pm_gc_domain *d = &pm_gc;
    pm_gc_result res = {0, 0};
    d->collecting = 1;
    uint64_t start = pm_gc_now_ns();
    run_callbacks(PM_GC_START, g, NULL);
    if (d->debug & PM_GC_DEBUG_STATS)
        pm_fdprintf(2, "poolmalloc gc: collecting generation %d (objects per generation: %zu "
                    "%zu %zu, frozen %zu)\n", g, table_live(&d->table[1]),
                    table_live(&d->table[2]), table_live(&d->table[3]),
                    table_live(&d->table[4]));

    d->u_flags = 0;
    /* CPython resets the counts first: allocations by finalizers count for the next one */
    if (g < 2)
        d->count[g + 1]++;
    for (int i = 0; i <= g; i++)
        d->count[i] = 0;

    unsigned hi = (unsigned)g + 1, dest = g < 2 ? hi + 1 : PM_ST_GEN2;
    size_t ysize = 0;
    for (unsigned st = 1; st <= hi; st++)
        ysize += table_live(&d->table[st]);
    /* Room in dest for every object of the set (survivors, and the unreachable that come
     * back), so that nothing below can fail half-way. */
    size_t need = g == 2 ? ysize - table_live(&d->table[PM_ST_GEN2]) : ysize;
    if (ysize > 0 && pm_table_reserve(&d->table[dest], need)) {
        size_t promoted = find_and_sweep(g, dest);
        if (g == 1)
            d->long_lived_pending += promoted;
        if (table_live(&d->table[PM_ST_UNREACHABLE]) > 0)
            pm_gc_handle_unreachable(dest, &res);
        if (g == 2) {
            d->long_lived_pending = 0;
            d->long_lived_total = table_live(&d->table[PM_ST_GEN2]);
        }
    }
    give_memory_back(g, &res, ysize);

    uint64_t pause = pm_gc_now_ns() - start;
    pm_gc_stats *st = &d->stats[g];
    st->collections++;
    st->collected += res.collected;
    st->uncollectable += res.uncollectable;
    st->total_pause_ns += pause;
    if (pause > st->max_pause_ns)
        st->max_pause_ns = pause;
    if (d->debug & PM_GC_DEBUG_STATS)
        pm_fdprintf(2, "poolmalloc gc: done, %zu unreachable, %zu uncollectable, %llu us "
                    "elapsed\n", res.collected + res.uncollectable, res.uncollectable,
                    (unsigned long long)(pause / 1000));
    run_callbacks(PM_GC_STOP, g, &res);
    d->collecting = 0;
    return res;
}

/* CPython's collect_generations: the oldest generation over its threshold, with the
 * long-lived heuristic holding full collections back until enough has been promoted. */
void pm_gc_maybe_collect(void) {
    if (PM_UNLIKELY(pm_gc.shared != NULL)) {
        pm_shared_want_collect(&pm_gc); /* at the next safepoint, with the world stopped */
        return;
    }
    pm_gc_collect_due();
}

void pm_gc_collect_due(void) {
    pm_gc_domain *d = &pm_gc;
    if (!d->enabled || d->threshold[0] <= 0 || d->collecting ||
        d->count[0] <= d->threshold[0])
        return;
    for (int i = 2; i >= 0; i--) {
        if (d->count[i] <= d->threshold[i])
            continue;
        if (i == 2 && d->long_lived_pending < d->long_lived_total / 4)
            continue;
        pm_gc_collect_now(i);
        return;
    }
}

