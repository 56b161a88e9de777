/*
 * gc.c: the generational cycle collector (CPython's algorithm and semantics; object.h has the
 * design and the side-table layout) and its public API.
 */
#include "object.h"

#include <time.h>

/* In prefetching mode a scan prefetches the referents' side bytes of the object this far
 * ahead in its table, and the object twice as far: tables give the future addresses for free,
 * which a linked list would not. Far enough for some 30 misses in flight: a random access to
 * DRAM takes 150-200 ns here, the walk needs one every 5-8 ns. */
#define PREFETCH_AHEAD 32

/* ---- the walks' context -------------------------------------------------------------------- */

typedef struct adapt {
    uint32_t step;
    bool prefetch;
    uint64_t cost[2][2]; /* [mode][last two probes]: the smaller one counts (an interrupt
                            can only make a probe slower) */
} adapt;

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

PM_INLINE uint8_t with_scratch(unsigned v, unsigned scr) { return (uint8_t)((v & 7u) | (scr << 3)); }
PM_INLINE size_t table_live(const pm_gc_table *t) { return t->len - t->holes; }
PM_INLINE unsigned clean_scr(void) { return pm_scr_codes(pm_gc.epoch).clean; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t ticks(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_ia32_rdtsc();
#else
    return now_ns();
#endif
}

/* ---- counts past the side byte: a small open-addressing table --------------------------- */

static size_t overflow_hash(const pm_object *x, size_t mask) {
    return (size_t)(((uintptr_t)x >> 5) * UINT64_C(0x9E3779B97F4A7C15) >> 20) & mask;
}

static bool overflow_grow(void) {
    struct pm_gc_overflow *ov = &pm_gc.overflow;
    size_t cap = ov->cap ? ov->cap * 2 : 64;
    const pm_object **keys = pm_calloc(cap, sizeof *keys);
    uint64_t *counts = pm_malloc(cap * sizeof *counts);
    if (keys == NULL || counts == NULL) {
        pm_free(keys);
        pm_free(counts);
        return false;
    }
    for (size_t i = 0; i < ov->cap; i++) {
        if (ov->keys[i] == NULL)
            continue;
        size_t j = overflow_hash(ov->keys[i], cap - 1);
        while (keys[j] != NULL)
            j = (j + 1) & (cap - 1);
        keys[j] = ov->keys[i];
        counts[j] = ov->counts[i];
    }
    pm_free(ov->keys);
    pm_free(ov->counts);
    ov->keys = keys;
    ov->counts = counts;
    ov->cap = cap;
    return true;
}

static uint64_t *overflow_find(const pm_object *x, bool create) {
    struct pm_gc_overflow *ov = &pm_gc.overflow;
    if (create && (ov->used + 1) * 2 > ov->cap && !overflow_grow())
        return NULL;
    if (ov->cap == 0)
        return NULL;
    size_t mask = ov->cap - 1;
    for (size_t i = overflow_hash(x, mask);; i = (i + 1) & mask) {
        if (ov->keys[i] == x)
            return &ov->counts[i];
        if (ov->keys[i] == NULL) {
            if (!create)
                return NULL;
            ov->keys[i] = x;
            ov->counts[i] = 0;
            ov->used++;
            return &ov->counts[i];
        }
    }
}

static void overflow_reset(void) {
    struct pm_gc_overflow *ov = &pm_gc.overflow;
    if (ov->used == 0)
        return;
    memset(ov->keys, 0, ov->cap * sizeof *ov->keys);
    ov->used = 0;
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
 * Prefetching. When the graph jumps across memory (references in random order, tens of
 * MiB of side table), the walk waits on cache misses and prefetching the side bytes a few
 * objects ahead halves its time; when references stay near, the prefetches are pure
 * overhead (+50%). Which case holds is measured, not guessed: the table is walked in
 * chunks, and every ADAPT_PERIOD chunks one chunk runs each way, timed; the faster way is
 * used until the next probe. Long item arrays get the same treatment of their own. */

#define CHUNK_OBJECTS 4096
#define CHUNK_ITEMS 8192
#define ADAPT_PERIOD 64
#define ITEMS_AHEAD 64

PM_INLINE bool adapt_choice(const adapt *a) {
    uint32_t p = a->step % ADAPT_PERIOD;
    return p == 0 ? false : p == 1 ? true : a->prefetch;
}

PM_INLINE uint64_t adapt_estimate(const adapt *a, int mode) {
    uint64_t x = a->cost[mode][0], y = a->cost[mode][1];
    return y != 0 && y < x ? y : x;
}

PM_INLINE void adapt_note(adapt *a, bool prefetch, uint64_t cost) {
    uint32_t p = a->step++ % ADAPT_PERIOD;
    if (p > 1)
        return;
    a->cost[prefetch][1] = a->cost[prefetch][0];
    a->cost[prefetch][0] = cost;
    if (p == 1)
        a->prefetch = adapt_estimate(a, 1) < adapt_estimate(a, 0);
}

/* The side byte of an object. Every object's region has a chunk (pm_new makes it). */
PM_INLINE uint8_t *side_known(const uintptr_t *top, const pm_object *x) {
    uintptr_t a = (uintptr_t)x;
    return (uint8_t *)(top[a >> PM_SIDE_REGION_SHIFT] + (a >> PM_SIDE_SHIFT));
}

/* Step 1, a count that does not fit the byte. */
static PM_NOINLINE void count_overflow(mark_ctx *m, pm_object *r, uint8_t *b, unsigned v) {
    unsigned s = v >> 3;
    if (s == m->sc.reachable)
        return; /* kept conservatively after an allocation failure */
    uint64_t *c = overflow_find(r, true);
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
/* Two bits per object (a Bloom filter with k = 2): about 0.4% false positives at 32 bits per
 * object, where one bit would give 3%. */
PM_INLINE uint64_t filter_hash(uintptr_t a) { return (a >> 5) * UINT64_C(0x9E3779B97F4A7C15); }
PM_INLINE bool filter_has(const uint64_t *f, unsigned fshift, uintptr_t a) {
    uint64_t h = filter_hash(a);
    size_t b1 = (size_t)(h >> fshift), b2 = (size_t)((h << 20) >> fshift);
    return ((f[b1 >> 6] >> (b1 & 63)) & (f[b2 >> 6] >> (b2 & 63)) & 1) != 0;
}
PM_INLINE void filter_add(uint64_t *f, unsigned fshift, uintptr_t a) {
    uint64_t h = filter_hash(a);
    size_t b1 = (size_t)(h >> fshift), b2 = (size_t)((h << 20) >> fshift);
    f[b1 >> 6] |= UINT64_C(1) << (b1 & 63);
    f[b2 >> 6] |= UINT64_C(1) << (b2 & 63);
}

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
    uintptr_t rd = t->pm_ready_;
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
    uintptr_t rd = t->pm_ready_;
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

static PM_COLD void refcount_too_small(const pm_object *x, int64_t internal) {
    pm_object_misuse(x, "collection: object %p (type %s) has reference count %lld but %lld "
                     "references to it come from other tracked objects: a missing pm_incref",
                     (const void *)x, pm_obj_type(x)->name ? pm_obj_type(x)->name : "?",
                     (long long)x->pm_refcnt_, (long long)internal);
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
            if (rc <= internal) {
                if (PM_UNLIKELY(rc < internal))
                    refcount_too_small(x, internal);
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
            if (internal >= 0 && x->pm_refcnt_ < internal)
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
    static struct {
        unsigned key;
        uint8_t count_next[256], mark_next[256];
    } cache = {.key = ~0u};
    unsigned key = lo | hi << 8 | pm_gc.epoch << 16;
    if (cache.key == key) {
        memcpy(m->count_next, cache.count_next, 256);
        memcpy(m->mark_next, cache.mark_next, 256);
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
    cache.key = key;
    memcpy(cache.count_next, m->count_next, 256);
    memcpy(cache.mark_next, m->mark_next, 256);
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
static size_t find_reachable(unsigned lo, unsigned hi) {
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
    overflow_reset();
    if (filter_words > 0)
        memset(d->filter, 0, filter_words * sizeof *d->filter);
    return m.tentative;
}

/* ---- step 3: sweep --------------------------------------------------------------------------- */

/* Appends x to a table whose room was reserved. */
PM_INLINE void move_to(unsigned state, pm_object *x) {
    pm_gc_table *t = &pm_gc.table[state];
    size_t slot = t->len++;
    t->items[slot] = x;
    pm_obj_set_place(x, state, slot);
    *pm_side_of(x) = (uint8_t)(state | clean_scr() << 3);
}

/* An unreachable object goes to U, which grows as needed; false if it cannot grow (the
 * object then survives this collection: keeping garbage a while longer is always safe). */
static bool move_unreachable(pm_object *x) {
    pm_gc_table *u = &pm_gc.table[PM_ST_UNREACHABLE];
    if (PM_UNLIKELY(u->len == u->cap) && !pm_table_reserve(u, u->len < 1024 ? 1024 : u->len))
        return false;
    move_to(PM_ST_UNREACHABLE, x);
    uintptr_t tb = x->pm_typebits_;
    const pm_type *t = (const pm_type *)(tb & ~PM_OF_MASK);
    if (PM_UNLIKELY(!(t->pm_ready_ & PM_TYPE_CLEARABLE)))
        pm_gc.u_flags |= PM_U_NONCLEAR;
    if (PM_UNLIKELY(tb & PM_OF_WEAKREFS))
        pm_gc.u_flags |= PM_U_WEAKREFS;
    if (t->finalize != NULL && !(tb & PM_OF_FINALIZED))
        pm_gc.u_flags |= PM_U_FINALIZE;
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

static const char *name_of(const pm_object *o) {
    const pm_type *t = pm_obj_type(o);
    return t->name ? t->name : "?";
}

/* Moves the objects of U whose scratch is `keep` to dest (room reserved), calling kept()
 * for each; the rest stay in U, packed, with a clean byte. Returns how many moved. */
static size_t split_unreachable(unsigned dest, unsigned keep, void (*kept)(pm_object *)) {
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

static void keep_in_garbage(pm_object *x) {
    if (pm_gc.debug & PM_GC_DEBUG_LEAK)
        pm_fdprintf(2, "poolmalloc gc: uncollectable <%s %p>\n", name_of(x), (void *)x);
    pm_gc_garbage_add(x);
}

/* Objects of types that cannot be cleared, and all the garbage they reach, are kept in
 * pm_gc_garbage: clearing what they refer to would leave them pointing at cleared objects
 * (CPython does the same for objects with legacy finalizers). */
static size_t keep_uncollectable(unsigned dest) {
    pm_gc_domain *d = &pm_gc;
    pm_gc_table *u = &d->table[PM_ST_UNREACHABLE];
    mark_ctx m;
    init_ctx(&m, PM_ST_UNREACHABLE, PM_ST_UNREACHABLE);
    for (size_t i = 0; i < u->len; i++)
        if (u->items[i] != NULL)
            *pm_side_of(u->items[i]) = with_scratch(PM_ST_UNREACHABLE, m.sc.tentative);
    for (size_t i = 0; i < u->len; i++) {
        pm_object *x = u->items[i];
        if (x == NULL || (pm_obj_type(x)->pm_ready_ & PM_TYPE_CLEARABLE))
            continue;
        uint8_t *b = pm_side_of(x);
        if ((*b >> 3) == m.sc.done)
            continue;
        *b = with_scratch(*b, m.sc.done);
        walk_object(WALK_MARK, x, &m, m.checks, false, m.top, m.mark_next);
        drain(&m);
    }
    rescan_pending(&m);
    return split_unreachable(dest, m.sc.done, keep_in_garbage);
}

/* After user code ran (finalizers, weak reference callbacks): the unreachable objects that
 * are referenced again from outside, and what they reach, live on, untouched. */
static void rescue_resurrected(unsigned dest) {
    if (table_live(&pm_gc.table[PM_ST_UNREACHABLE]) == 0)
        return;
    find_reachable(PM_ST_UNREACHABLE, PM_ST_UNREACHABLE);
    split_unreachable(dest, pm_scr_codes(pm_gc.epoch).done, NULL);
}

static void save_all(pm_object *x) {
    pm_gc_garbage_add(x);
}

static void handle_unreachable(unsigned dest, pm_gc_result *res) {
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
        res->collected += split_unreachable(dest, 1, save_all);
        return;
    }
    if (d->u_flags & PM_U_NONCLEAR)
        res->uncollectable += keep_uncollectable(dest);

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

static void release_scratch_memory(void) {
    pm_gc_domain *d = &pm_gc;
    pm_gc_table *u = &d->table[PM_ST_UNREACHABLE];
    /* up to 8 MiB of table is kept for the next collection; more goes back */
    if (u->cap > ((size_t)1 << 20) && u->len == 0) {
        pm_free(u->items);
        u->items = NULL;
        u->cap = 0;
    }
    if (d->stack_cap > 65536) {
        pm_free(d->stack);
        d->stack = NULL;
        d->stack_cap = 0;
    }
}

/* Steps 1-3 for generations 0..g; returns the number promoted into generation 2 from 1. */
static size_t find_and_sweep(int g, unsigned dest) {
    pm_gc_domain *d = &pm_gc;
    unsigned hi = (unsigned)g + 1;
    unsigned done = pm_scr_codes(d->epoch).done;
    size_t tentative = find_reachable(1, hi);
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

static pm_gc_result collect(int g) {
    pm_gc_domain *d = &pm_gc;
    pm_gc_result res = {0, 0};
    d->collecting = 1;
    uint64_t start = now_ns();
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
            handle_unreachable(dest, &res);
        if (g == 2) {
            d->long_lived_pending = 0;
            d->long_lived_total = table_live(&d->table[PM_ST_GEN2]);
        }
        release_scratch_memory();
    }

    uint64_t pause = now_ns() - start;
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
    pm_gc_domain *d = &pm_gc;
    if (!d->enabled || d->threshold[0] <= 0 || d->collecting ||
        d->count[0] <= d->threshold[0])
        return;
    for (int i = 2; i >= 0; i--) {
        if (d->count[i] <= d->threshold[i])
            continue;
        if (i == 2 && d->long_lived_pending < d->long_lived_total / 4)
            continue;
        collect(i);
        return;
    }
}

/* ---- public API ------------------------------------------------------------------------------ */

pm_gc_result pm_gc_collect(int generation) {
    pm_gc_result res = {0, 0};
    pm_gc_ready();
    if (generation < 0 || generation > 2) {
        errno = EINVAL;
        return res;
    }
    if (pm_gc.collecting)
        return res;
    PM_GC_ENTER();
    res = collect(generation);
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
static void move_table(unsigned from, unsigned to) {
    pm_gc_table *t = &pm_gc.table[from];
    for (size_t i = 0; i < t->len; i++)
        if (t->items[i] != NULL)
            move_to(to, t->items[i]);
    t->len = t->holes = 0;
}

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
            move_table(st, PM_ST_PERMANENT);
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
        move_table(PM_ST_PERMANENT, PM_ST_GEN2);
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
    if (o == NULL || !(pm_obj_type(o)->pm_ready_ & PM_TYPE_CONTAINER))
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
