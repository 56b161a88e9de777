/*
 * gc-mark.c: steps 1 and 2 of a collection (object.h has the algorithm and the side-table
 * layout): count the references from inside the set, then mark what is reachable from
 * outside it. Everything else is TENTATIVE: the garbage, which gc-collect.c sweeps.
 */
#include "gc.h"
#include "gc-filter.h"

enum walk_kind { WALK_COUNT, WALK_MARK };

typedef struct mark_ctx {
    unsigned lo, span;      /* the set: objects whose state is in lo..lo+span */
    pm_scr sc;              /* this collection's scratch encoding */
    const pm_object *from;  /* the object being walked, for the CHECKS messages */
    const uintptr_t *top;   /* pm_side_top */
    bool checks;            /* PM_GC_DEBUG_CHECKS */
    size_t tentative;       /* objects TENTATIVE now: unreachable unless marked later */
    adapt items;            /* prefetch choice for long item arrays */
    const uint64_t *filter; /* young sets: a bit per address hash of the set's objects */
    unsigned fshift;        /* hash >> fshift indexes the filter's bits */
    uint64_t excluded;      /* ticks in long arrays, left out of their object chunk's time */
    /* What a reference does to its referent's side byte, by the byte's value: the states
     * outside the set and the settled scratch values map to themselves, 0xFF (state 7 does
     * not exist) means "the slow path". One load and compare instead of decoding. */
    uint8_t count_next[256];
    uint8_t mark_next[256];
} mark_ctx;

#define NEXT_SLOW 0xFFu

/* ---- counts past the side byte: an address map (addrmap.c) --------------------------- */

static uintptr_t *overflow_find(const pm_object *x, bool create) {
    return create ? pm_addrmap_insert(&pm_gc.overflow, x) : pm_addrmap_find(&pm_gc.overflow, x);
}

/* The count of references from inside the set that scratch s of x says, or -1. */
static int64_t internal_count(const mark_ctx *m, const pm_object *x, unsigned s) {
    int c = pm_scr_count(&m->sc, s);
    if (c >= 0)
        return c;
    if (s == m->sc.overflow)
        return (int64_t)*overflow_find(x, false);
    return -1;
}

/* ---- steps 1 and 2: the reference walks ---------------------------------------------------
 * Both walks do the same thing per reference: look up the referent's side byte, map it
 * through a 256-entry table (count_next or mark_next), store the result. They keep the
 * side-table map and the table in locals: the side bytes are stored through a char
 * pointer, which may alias anything, and globals or struct fields would be reloaded after
 * every store. Layout types are walked inline; traverse types get the same edge functions
 * through a visit callback.
 *
 * Tables are walked in chunks, prefetching or not as gc-prefetch.h decides; long item
 * arrays get the same treatment of their own. */


#define CHUNK_OBJECTS 4096
#define CHUNK_ITEMS 8192
#define ITEMS_AHEAD 64

/* Step 1, a count that does not fit the byte. */
static PM_NOINLINE void count_overflow(mark_ctx *m, pm_object *r, uint8_t *b, unsigned v) {
    unsigned s = v >> 3;
    if (s == m->sc.reachable)
        return; /* kept conservatively after an allocation failure */
    uintptr_t *c = overflow_find(r, true);
    if (c == NULL) {
        /* no memory to count: treat it as referenced from outside, which is always safe */
        *b = with_scratch(v, m->sc.reachable);
        return;
    }
    if (s != m->sc.overflow) {
        *c = PM_SCR_COUNT_MAX + 1;
        *b = with_scratch(v, m->sc.overflow);
    } else {
        (*c)++;
    }
}

/* Step 2, a TENTATIVE referent: reachable after all, walked from the stack. */
static PM_NOINLINE void mark_passed(mark_ctx *m, pm_object *r, uint8_t *b, unsigned v) {
    pm_gc_domain *d = &pm_gc;
    m->tentative--;
    if (d->stack_len == d->stack_cap) {
        size_t cap = d->stack_cap ? d->stack_cap * 2 : 1024;
        pm_object **stack = pm_realloc(d->stack, cap * sizeof *stack);
        if (stack == NULL) {
            /* no memory: leave it PENDING, a rescan of the set walks it */
            *b = with_scratch(v, m->sc.pending);
            d->stack_failed = true;
            return;
        }
        d->stack = stack;
        d->stack_cap = cap;
    }
    d->stack[d->stack_len++] = r;
    *b = with_scratch(v, m->sc.reachable);
}

/* One reference. Step 1: one more reference from inside the set. Step 2: the referent is
 * reachable. The slow value sends both to their rare cases. */

PM_INLINE void edge(enum walk_kind kind, mark_ctx *m, bool filtered, const uintptr_t *top,
                    const uint8_t *next, pm_object *r) {
    if (filtered) {
        /* a young set: most references out of it go to old objects, whose side bytes are
         * cold; a clear filter bit proves the referent is not in the set, without them */
        if (!filter_has(m->filter, m->fshift, (uintptr_t)r))
            return;
    }
    uint8_t *b = side_known(top, r);
    unsigned v = *b, nv = next[v];
    if (nv == v)
        return;
    if (PM_LIKELY(nv != NEXT_SLOW))
        *b = (uint8_t)nv;
    else if (kind == WALK_COUNT)
        count_overflow(m, r, b, v);
    else
        mark_passed(m, r, b, v);
}

static void check_edge(const mark_ctx *m, const pm_object *r) {
    if (pm_side_find(r) == NULL)
        pm_object_misuse(m->from, "collection: object %p (type %s) refers to %p, which is not "
                         "an object from pm_new", (const void *)m->from,
                         pm_obj_type(m->from)->name ? pm_obj_type(m->from)->name : "?",
                         (const void *)r);
    pm_object_check_ref(m->from, r, "collection");
}

static int count_visit(pm_object *r, void *arg) {
    mark_ctx *m = arg;
    if (m->checks)
        check_edge(m, r);
    edge(WALK_COUNT, m, m->filter != NULL, m->top, m->count_next, r);
    return 0;
}

static int mark_visit(pm_object *r, void *arg) {
    mark_ctx *m = arg;
    if (m->checks)
        check_edge(m, r);
    edge(WALK_MARK, m, m->filter != NULL, m->top, m->mark_next, r);
    return 0;
}

/* Items [from, to) of an array of references. */
PM_INLINE void items_range(enum walk_kind kind, bool prefetch, bool filtered, pm_object **items,
                           size_t from, size_t to, mark_ctx *m, const uintptr_t *top,
                           const uint8_t *next) {
    for (size_t i = from; i < to; i++) {
        if (prefetch && i + ITEMS_AHEAD < to && items[i + ITEMS_AHEAD] != NULL)
            __builtin_prefetch(side_known(top, items[i + ITEMS_AHEAD]), 1, 3);
        pm_object *r = items[i];
        if (r != NULL)
            edge(kind, m, filtered, top, next, r);
    }
}

#define ITEMS_FN(name, kind, prefetch)                                                         \
    static PM_NOINLINE void name(pm_object **items, size_t from, size_t to, mark_ctx *m,       \
                                 const uintptr_t *top, const uint8_t *next) {                 \
        items_range(kind, prefetch, false, items, from, to, m, top, next);                     \
    }
ITEMS_FN(items_count_plain, WALK_COUNT, false)
ITEMS_FN(items_count_prefetch, WALK_COUNT, true)
ITEMS_FN(items_mark_plain, WALK_MARK, false)
ITEMS_FN(items_mark_prefetch, WALK_MARK, true)

/* A long array, in adaptive chunks; its time is kept out of its object's chunk. */
static PM_NOINLINE void long_items(enum walk_kind kind, pm_object **items, size_t n,
                                   mark_ctx *m) {
    const uint8_t *next = kind == WALK_COUNT ? m->count_next : m->mark_next;
    uint64_t start = ticks();
    for (size_t from = 0; from < n; from += CHUNK_ITEMS) {
        size_t to = n - from > CHUNK_ITEMS ? from + CHUNK_ITEMS : n;
        bool pf = adapt_choice(&m->items);
        uint64_t t0 = ticks();
        if (kind == WALK_COUNT)
            (pf ? items_count_prefetch : items_count_plain)(items, from, to, m, m->top, next);
        else
            (pf ? items_mark_prefetch : items_mark_plain)(items, from, to, m, m->top, next);
        if (to - from == CHUNK_ITEMS)
            adapt_note(&m->items, pf, ticks() - t0);
    }
    m->excluded += ticks() - start;
}

/* Walks object x (step 1: counts its references; step 2: x is reachable). */
PM_INLINE void walk_object(enum walk_kind kind, pm_object *x, mark_ctx *m, bool checks,
                           bool filtered, const uintptr_t *top, const uint8_t *next) {
    const pm_type *t = pm_obj_type(x);
    uintptr_t rd = pm_ready(t);
    if (checks || !(rd & PM_TYPE_LAYOUT)) {
        m->from = x;
        pm_walk(x, t, kind == WALK_COUNT ? count_visit : mark_visit, m);
        return;
    }
    pm_object **w = (pm_object **)x;
    if (PM_LIKELY(rd & PM_TYPE_MASKED)) {
        for (uint64_t mask = (uint64_t)rd >> PM_READY_MASK_SHIFT; mask != 0; mask &= mask - 1) {
            pm_object *r = w[PM_READY_FIRST_WORD + __builtin_ctzll(mask)];
            if (r != NULL)
                edge(kind, m, filtered, top, next, r);
        }
    } else {
        for (const uint16_t *off = t->ref_offsets; *off != 0; off++) {
            pm_object *r = *(pm_object **)((char *)x + *off);
            if (r != NULL)
                edge(kind, m, filtered, top, next, r);
        }
    }
    if (rd & PM_TYPE_ITEMS) {
        size_t n = *(size_t *)((char *)x + t->length_offset);
        pm_object **items = pm_items_of(x, t);
        if (items == NULL)
            return;
        if (n > CHUNK_ITEMS && !filtered)
            long_items(kind, items, n, m);
        else
            items_range(kind, false, filtered, items, 0, n, m, top, next);
    }
}

static int prefetch_visit(pm_object *r, void *top) {
    __builtin_prefetch(side_known(top, r), 1, 3);
    return 0;
}

/* Prefetches the side bytes that object y (whose memory was prefetched earlier) will touch.
 * For a traverse type that costs a call, which the timed probes weigh like the rest. */
PM_INLINE void prefetch_targets(const uintptr_t *top, pm_object *y) {
    if (y == NULL)
        return;
    const pm_type *t = pm_obj_type(y);
    uintptr_t rd = pm_ready(t);
    if (!(rd & PM_TYPE_MASKED)) {
        if (t->traverse != NULL)
            t->traverse(y, prefetch_visit, (void *)top);
        return;
    }
    pm_object **w = (pm_object **)y;
    for (uint64_t mask = (uint64_t)rd >> PM_READY_MASK_SHIFT; mask != 0; mask &= mask - 1) {
        pm_object *r = w[PM_READY_FIRST_WORD + __builtin_ctzll(mask)];
        if (r != NULL)
            __builtin_prefetch(side_known(top, r), 1, 3);
    }
}

/* Prefetches for position i of a scan: the object two strides ahead (and its side byte for
 * step 2), the referents of the object one stride ahead. */
PM_INLINE void prefetch_ahead(enum walk_kind kind, pm_object **items, size_t i, size_t to,
                              const uintptr_t *top) {
    if (i + 2 * PREFETCH_AHEAD < to) {
        pm_object *far = items[i + 2 * PREFETCH_AHEAD];
        __builtin_prefetch(far, 0, 3);
        if (kind == WALK_MARK && far != NULL)
            __builtin_prefetch(side_known(top, far), 1, 3);
    }
    if (i + PREFETCH_AHEAD < to)
        prefetch_targets(top, items[i + PREFETCH_AHEAD]);
}

static PM_COLD PM_NORETURN void refcount_too_small(const pm_object *x, int64_t internal) {
    pm_object_misuse(x, "collection: object %p (type %s) has reference count %lld but %lld "
                     "references to it come from other tracked objects: a missing pm_incref",
                     (const void *)x, pm_obj_type(x)->name ? pm_obj_type(x)->name : "?",
                     (long long)pm_obj_refcount(x), (long long)internal);
}

/* An object whose count field is below its internal references: a shared domain's object
 * (true when its real count makes it a root), else a misuse, which aborts. */
static PM_COLD bool count_below(const pm_object *x, int64_t rc, int64_t internal) {
    if (rc == PM_REFCNT_SHARED && (rc = pm_shared_total(x)) >= internal)
        return rc > internal;
    refcount_too_small(x, internal);
}

/* Step 1 over table slots [from, to). */
PM_INLINE void count_range(const pm_gc_table *tb, size_t from, size_t to, mark_ctx *m,
                           bool checks, bool prefetch, bool filtered) {
    const uintptr_t *top = m->top;
    const uint8_t *next = m->count_next;
    pm_object **items = tb->items;
    for (size_t i = from; i < to; i++) {
        if (prefetch)
            prefetch_ahead(WALK_COUNT, items, i, to, top);
        pm_object *x = items[i];
        if (x != NULL)
            walk_object(WALK_COUNT, x, m, checks, filtered, top, next);
    }
}

/* Step 2 over table slots [from, to): an object reachable, or referenced from outside the
 * set (a root), becomes DONE and is walked; any other becomes TENTATIVE. */
PM_INLINE void mark_range(const pm_gc_table *tb, size_t from, size_t to, mark_ctx *m,
                          bool checks, bool prefetch, bool filtered) {
    const uintptr_t *top = m->top;
    const uint8_t *next = m->mark_next;
    const unsigned reachable = m->sc.reachable, done = m->sc.done;
    pm_object **items = tb->items;
    for (size_t i = from; i < to; i++) {
        if (prefetch)
            prefetch_ahead(WALK_MARK, items, i, to, top);
        pm_object *x = items[i];
        if (x == NULL)
            continue;
        uint8_t *b = side_known(top, x);
        unsigned v = *b;
        if ((v >> 3) != reachable) {
            int64_t internal = internal_count(m, x, v >> 3);
            int64_t rc = x->pm_refcnt_;
            /* rc == internal, the common garbage, costs one compare; a count below it is a
             * shared domain's object (its count is in its prefix) or a misuse */
            if (rc <= internal && (PM_LIKELY(rc == internal) || !count_below(x, rc, internal))) {
                *b = with_scratch(v, m->sc.tentative);
                m->tentative++;
                continue;
            }
        }
        *b = with_scratch(v, done);
        walk_object(WALK_MARK, x, m, checks, filtered, top, next);
    }
}

#define RANGE_FN(name, fn, checks, prefetch, filtered)                                         \
    static PM_NOINLINE void name(const pm_gc_table *tb, size_t from, size_t to, mark_ctx *m) { \
        fn(tb, from, to, m, checks, prefetch, filtered);                                       \
    }
RANGE_FN(count_plain, count_range, false, false, false)
RANGE_FN(count_prefetch, count_range, false, true, false)
RANGE_FN(count_filtered, count_range, false, false, true)
RANGE_FN(count_checked, count_range, true, false, false)
RANGE_FN(mark_plain, mark_range, false, false, false)
RANGE_FN(mark_prefetch, mark_range, false, true, false)
RANGE_FN(mark_filtered, mark_range, false, false, true)
RANGE_FN(mark_checked, mark_range, true, false, false)

/* Walks the objects on the stack (reachable, passed by the scan) until it is empty. */
static void drain(mark_ctx *m) {
    pm_gc_domain *d = &pm_gc;
    const uintptr_t *top = m->top;
    const uint8_t *next = m->mark_next;
    while (d->stack_len > 0) {
        pm_object *x = d->stack[--d->stack_len];
        if (d->stack_len >= 4)
            __builtin_prefetch(d->stack[d->stack_len - 4], 0, 3);
        uint8_t *b = side_known(top, x);
        *b = with_scratch(*b, m->sc.done);
        if (m->filter != NULL)
            walk_object(WALK_MARK, x, m, m->checks, true, top, next);
        else
            walk_object(WALK_MARK, x, m, m->checks, false, top, next);
    }
}

typedef void (*range_fn)(const pm_gc_table *, size_t, size_t, mark_ctx *);

/* A whole table in chunks, each walked plain or prefetching as the probes decide. */
static void walk_table(const pm_gc_table *tb, mark_ctx *m, range_fn plain, range_fn prefetching,
                       range_fn filtered, range_fn checked, adapt *a) {
    for (size_t from = 0; from < tb->len; from += CHUNK_OBJECTS) {
        size_t to = tb->len - from > CHUNK_OBJECTS ? from + CHUNK_OBJECTS : tb->len;
        if (m->checks) {
            checked(tb, from, to, m);
            continue;
        }
        if (m->filter != NULL) {
            filtered(tb, from, to, m);
            continue;
        }
        bool pf = adapt_choice(a);
        m->excluded = 0;
        uint64_t t0 = ticks();
        (pf ? prefetching : plain)(tb, from, to, m);
        uint64_t dt = ticks() - t0;
        if (to - from == CHUNK_OBJECTS)
            adapt_note(a, pf, dt > m->excluded ? dt - m->excluded : 0);
    }
}

/* After the stack could not grow: walk the PENDING objects until none is left. */
static void rescan_pending(mark_ctx *m) {
    pm_gc_domain *d = &pm_gc;
    while (d->stack_failed) {
        d->stack_failed = false;
        for (unsigned st = m->lo; st <= m->lo + m->span; st++) {
            const pm_gc_table *t = &d->table[st];
            for (size_t i = 0; i < t->len; i++) {
                pm_object *x = t->items[i];
                if (x == NULL)
                    continue;
                uint8_t *b = pm_side_of(x);
                if ((*b >> 3) != m->sc.pending)
                    continue;
                *b = with_scratch(*b, m->sc.done);
                walk_object(WALK_MARK, x, m, m->checks, false, m->top, m->mark_next);
                drain(m);
            }
        }
    }
}

/* CHECKS: no object may have more references from the set than its count says. (Without
 * the flag this is checked only for objects the scan meets before they are marked.) */
static void check_counts(const mark_ctx *m) {
    for (unsigned st = m->lo; st <= m->lo + m->span; st++) {
        const pm_gc_table *t = &pm_gc.table[st];
        for (size_t i = 0; i < t->len; i++) {
            pm_object *x = t->items[i];
            if (x == NULL)
                continue;
            int64_t internal = internal_count(m, x, *pm_side_of(x) >> 3);
            if (internal >= 0 && pm_obj_refcount(x) < internal)
                refcount_too_small(x, internal);
        }
    }
}

static void init_ctx(mark_ctx *m, unsigned lo, unsigned hi) {
    memset(m, 0, offsetof(mark_ctx, count_next));
    m->lo = lo;
    m->span = hi - lo;
    m->sc = pm_scr_codes(pm_gc.epoch);
    m->top = pm_side_top;
    m->checks = (pm_gc.debug & PM_GC_DEBUG_CHECKS) != 0;
    /* the tables depend on (lo, hi, epoch) only: young collections reuse the last ones */
    __typeof__(pm_gc.next_cache) *cache = &pm_gc.next_cache;
    unsigned key = lo | hi << 8 | pm_gc.epoch << 16;
    if (cache->key == key) {
        memcpy(m->count_next, cache->count_next, 256);
        memcpy(m->mark_next, cache->mark_next, 256);
        return;
    }
    const pm_scr *sc = &m->sc;
    for (unsigned v = 0; v < 256; v++) {
        unsigned s = v >> 3, c = v, k = v;
        if ((v & 7u) - lo <= hi - lo) {
            int count = pm_scr_count(sc, s);
            if (count >= 0 && count < (int)PM_SCR_COUNT_MAX)
                c = with_scratch(v, pm_scr_of_count(sc, (unsigned)count + 1));
            else if (count == (int)PM_SCR_COUNT_MAX || s == sc->overflow)
                c = NEXT_SLOW;
            if (count >= 0 || s == sc->overflow)
                k = with_scratch(v, sc->reachable);
            else if (s == sc->tentative)
                k = NEXT_SLOW;
        }
        m->count_next[v] = (uint8_t)c;
        m->mark_next[v] = (uint8_t)k;
    }
    cache->key = key;
    memcpy(cache->count_next, m->count_next, 256);
    memcpy(cache->mark_next, m->mark_next, 256);
}

/* For a small set that is not everything (a young collection): a filter with bits set for
 * each object of the set, 32 bits per object, so that a reference out of the set almost
 * never looks at the side byte of its (old, cold) referent. Returns its size in words. */
#define FILTER_MAX_OBJECTS 65536
#define FILTER_BITS_PER_OBJECT 32
static size_t build_filter(mark_ctx *m) {
    pm_gc_domain *d = &pm_gc;
    unsigned lo = m->lo, hi = m->lo + m->span;
    size_t n = 0, others = 0;
    for (unsigned st = PM_ST_GEN0; st < PM_ST_COUNT; st++) {
        size_t live = table_live(&d->table[st]);
        if (st >= lo && st <= hi)
            n += live;
        else if (st != PM_ST_UNREACHABLE)
            others += live;
    }
    if (m->checks || n == 0 || n > FILTER_MAX_OBJECTS || others < n)
        return 0; /* nothing, or most of the heap: no old references to spare */
    size_t bits = 4096;
    unsigned log2 = 12;
    while (bits < n * FILTER_BITS_PER_OBJECT) {
        bits *= 2;
        log2++;
    }
    if (d->filter == NULL)
        d->filter = pm_calloc(FILTER_MAX_OBJECTS * FILTER_BITS_PER_OBJECT / 64, sizeof(uint64_t));
    if (d->filter == NULL)
        return 0;
    m->fshift = 64 - log2;
    for (unsigned st = lo; st <= hi; st++) {
        const pm_gc_table *t = &d->table[st];
        for (size_t i = 0; i < t->len; i++)
            if (t->items[i] != NULL)
                filter_add(d->filter, m->fshift, (uintptr_t)t->items[i]);
    }
    m->filter = d->filter;
    return bits / 64;
}

/* Steps 1 and 2 over the tables of states lo..hi (the set); on return every object of the
 * set is DONE (reachable) or TENTATIVE (unreachable); returns how many are TENTATIVE. */
size_t pm_gc_find_reachable(unsigned lo, unsigned hi) {
    pm_gc_domain *d = &pm_gc;
    mark_ctx m;
    init_ctx(&m, lo, hi);
    size_t filter_words = build_filter(&m);
    adapt a = {0};
    for (unsigned st = lo; st <= hi; st++)
        walk_table(&d->table[st], &m, count_plain, count_prefetch, count_filtered, count_checked,
                   &a);
    if (m.checks)
        check_counts(&m);
    /* oldest first: old objects usually refer to younger ones, which they then mark before
     * the scan reaches them, so fewer objects go TENTATIVE and onto the stack */
    memset(&a, 0, sizeof a);
    memset(&m.items, 0, sizeof m.items);
    for (unsigned st = hi; st >= lo; st--) {
        walk_table(&d->table[st], &m, mark_plain, mark_prefetch, mark_filtered, mark_checked,
                   &a);
        drain(&m);
    }
    rescan_pending(&m);
    pm_addrmap_clear(&pm_gc.overflow);
    if (filter_words > 0)
        memset(d->filter, 0, filter_words * sizeof *d->filter);
    return m.tentative;
}


void pm_gc_mark_from_unclearable(void) {
    pm_gc_table *u = &pm_gc.table[PM_ST_UNREACHABLE];
    mark_ctx m;
    init_ctx(&m, PM_ST_UNREACHABLE, PM_ST_UNREACHABLE);
    for (size_t i = 0; i < u->len; i++)
        if (u->items[i] != NULL)
            *pm_side_of(u->items[i]) = with_scratch(PM_ST_UNREACHABLE, m.sc.tentative);
    for (size_t i = 0; i < u->len; i++) {
        pm_object *x = u->items[i];
        if (x == NULL || (pm_ready(pm_obj_type(x)) & PM_TYPE_CLEARABLE))
            continue;
        uint8_t *b = pm_side_of(x);
        if ((*b >> 3) == m.sc.done)
            continue;
        *b = with_scratch(*b, m.sc.done);
        walk_object(WALK_MARK, x, &m, m.checks, false, m.top, m.mark_next);
        drain(&m);
    }
    rescan_pending(&m);
}
