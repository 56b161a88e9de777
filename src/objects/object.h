/*
 * object.h: internals of the object layer. The public side, and the header layout, are in
 * poolmalloc.h. The layer sits on the allocator's public API (pm_malloc, pm_free...) and the
 * few core functions core-iface.h names; it never includes the core's internal.h.
 *
 * Files:
 *   object.c       creation, reference-count slow paths, the iterative release, tracking
 *   types.c        the library's record of each (const) pm_type: checked at first pm_new
 *   tables.c       the side table and the generation tables (which shrink when mostly empty)
 *   domain.c       collector domains, the one-thread rule, foreign-object checks
 *   gc.h           what the collector's phases share; gc-prefetch.h, gc-filter.h their tools
 *   gc-mark.c      steps 1-2 below; gc-collect.c step 3 and a whole collection;
 *   gc-finalize.c  step 4; gc-api.c the public pm_gc_* functions
 *   weakref.c      weak references (a per-domain address map, src/addrmap.c)
 *   shared.c       shared domains: biased reference counting, attach/detach, safepoints and
 *                  stop-the-world collections (shared.h)
 *
 * Domains. Everything below is per domain (pm_gc_domain; pm_gc is this thread's current
 * one), except the side table, which all domains share: each object has its own byte, and
 * a domain touches only its objects' bytes. The domain's id sits in the top 5 bits of every
 * object's collector word.
 *
 * ===========================================================================================
 * Where the collector keeps its state
 * ===========================================================================================
 *  - The object header (24 bytes): type record | flag bits, the collector word, the count.
 *      collector word = domain << 59 | state << 56 | slot. state: untracked, generation 0..2, permanent
 *      (frozen), unreachable (found unreachable by the collection running now). slot: the
 *      object's index in the table of its state.
 *  - One table per state (pm_gc_table): a growable array of object pointers. Tracking appends;
 *    untracking writes NULL into the slot (a hole) or pops the tail, so the table keeps the
 *    allocation order, which is the memory order for objects allocated together, and a
 *    collection scans it front to back, prefetching a few objects ahead. Holes are squeezed
 *    out when a table fills up and by every collection of it.
 *  - The side table: one byte per 32 bytes of address space that holds a tracked object
 *    (objects are at least 32 bytes, so no two share a byte), found from the object's address
 *    alone: side[p >> 5] through a two-level map (64 MiB regions -> 2 MiB chunks). Low 3 bits:
 *    the object's state, as in its header; high 5 bits: a collection's scratch (counts and
 *    marks; a "clean" value outside collections). The reference walks ask "is the referent in
 *    the generations being collected, and what is its count or mark" of this byte only: for
 *    ten million 48-byte objects that is 15 MiB, mostly in cache, where reading the referents'
 *    headers would be a cache miss per reference. Untracked objects have byte 0.
 *
 * ===========================================================================================
 * A collection of generations 0..g (CPython's algorithm, reorganised for tables)
 * ===========================================================================================
 *  1. count: walk every object of the set Y (states 1..g+1) and add one to the scratch count
 *     of each referent in Y: after it, count(x) = references to x from inside Y. No pass
 *     first copies reference counts (CPython's update_refs): counts start from the byte's
 *     clean value, which every collection leaves behind.
 *  2. mark: scan Y oldest table first. An object already marked REACHABLE, or whose
 *     refcount exceeds its count (a reference from outside Y: a root), becomes DONE and is
 *     walked, marking its referents in Y; any other becomes TENTATIVE. A TENTATIVE object
 *     marked later is pushed on a stack and walked from there. Each object is walked once
 *     more and nothing moves; the scan reads objects in table order.
 *  3. sweep: DONE objects go to generation g+1 with a clean byte, TENTATIVE ones to the
 *     unreachable table U. A full collection switches the scratch encoding (pm_scr_codes):
 *     DONE of one encoding is "clean" in the other, so when it finds no garbage and no holes
 *     the oldest table needs no sweep at all.
 *  4. U as CPython: uncollectable objects (no way to clear them) and what they reach are
 *     kept; weak references to U are cleared, their callbacks run; finalizers run once; if any
 *     user code ran, steps 1-3 on U alone find the objects resurrected; the rest are cleared,
 *     which frees them by reference counting (freed objects leave U through untrack).
 *
 * Speed. Layout types are walked inline; each reference costs a side-table lookup and a
 * 256-entry transition table lookup. When references jump across memory the walks prefetch
 * side bytes ahead, a choice made by timing both ways on chunks of the table (gc.c). Young
 * collections add a small Bloom filter of the set's addresses, so references to old objects
 * do not touch the old objects' (cold) side bytes: their pause depends on the young objects.
 *
 * No user code runs during 1-3 except traverse callbacks, which may not change anything.
 */
#ifndef PM_OBJECT_H
#define PM_OBJECT_H

#include "core-iface.h"
#include "addrmap.h"

#include <limits.h>

/* ---- header words ---------------------------------------------------------------------- */

/* Flag bits in the low bits of pm_typebits_ (pm_type is at least 8-aligned). */
#define PM_OF_FINALIZED ((uintptr_t)1)    /* finalize ran (PEP 442: at most once) */
#define PM_OF_WEAKREFS ((uintptr_t)2)     /* weak references point here (see weakref.c) */
#define PM_OF_WAS_TRACKED ((uintptr_t)4)  /* untracked while waiting on the dealloc list */
#define PM_OF_MASK ((uintptr_t)7)

#define PM_GCW_STATE_SHIFT 56
#define PM_GCW_STATE_MASK 7u
#define PM_GCW_SLOT_MASK ((UINT64_C(1) << 48) - 1)
/* The top 5 bits: the object's domain (0 the default one), kept whatever its state. */
#define PM_GCW_DOMAIN_SHIFT 59
#define PM_GCW_DOMAIN_MASK (~UINT64_C(0) << PM_GCW_DOMAIN_SHIFT)
#define PM_MAX_DOMAINS 32

enum pm_gc_state {
    PM_ST_UNTRACKED = 0,
    PM_ST_GEN0 = 1,
    PM_ST_GEN1 = 2,
    PM_ST_GEN2 = 3,
    PM_ST_PERMANENT = 4,   /* frozen: tracked, never collected */
    PM_ST_UNREACHABLE = 5, /* found unreachable by the running collection */
    PM_ST_COUNT = 6
};

/* A freed object's reference count: incref/decref of it goes (or stays) negative. */
#define PM_REFCNT_FREED (INT64_MIN / 2)
/* The count field of every object of a shared domain, never written while the object lives:
 * the inline pm_incref/pm_decref read it, see a count <= 0 and take their slow path, which
 * finds this value and does biased reference counting in the object's prefix (shared.h). */
#define PM_REFCNT_SHARED (-(INT64_C(1) << 58))

PM_INLINE const pm_type *pm_obj_type(const pm_object *o) {
    return (const pm_type *)(o->pm_typebits_ & ~PM_OF_MASK);
}
PM_INLINE unsigned pm_obj_state(const pm_object *o) {
    return (unsigned)(o->pm_gcword_ >> PM_GCW_STATE_SHIFT) & PM_GCW_STATE_MASK;
}
PM_INLINE unsigned pm_obj_domain_id(const pm_object *o) {
    return (unsigned)(o->pm_gcword_ >> PM_GCW_DOMAIN_SHIFT);
}
PM_INLINE size_t pm_obj_slot(const pm_object *o) {
    return (size_t)(o->pm_gcword_ & PM_GCW_SLOT_MASK);
}
PM_INLINE void pm_obj_set_place(pm_object *o, unsigned state, size_t slot) {
    o->pm_gcword_ = (o->pm_gcword_ & PM_GCW_DOMAIN_MASK) | ((uint64_t)state << PM_GCW_STATE_SHIFT) |
                    (uint64_t)slot;
}

/* ---- the side table ------------------------------------------------------------------------ */
#define PM_SIDE_SHIFT 5         /* one byte per 32 bytes */
#define PM_SIDE_REGION_SHIFT 26 /* a chunk covers 64 MiB: 2 MiB of bytes */
#define PM_SIDE_CHUNK ((size_t)1 << (PM_SIDE_REGION_SHIFT - PM_SIDE_SHIFT))
#define PM_SIDE_TOP_LEN ((size_t)1 << (PM_OBJ_ADDRESS_BITS - PM_SIDE_REGION_SHIFT))

/* Scratch values (byte >> 3) during a collection, for objects of the set being collected.
 * Two encodings alternate at every full collection (pm_gc.epoch): epoch 0 counts up from
 * 0, epoch 1 counts down from 31. DONE (reachable and walked), where every survivor of a full
 * collection ends, is the clean value of the other epoch: a full collection that finds no
 * garbage and no holes leaves every byte ready for the next one without a sweep. */
#define PM_SCR_COUNT_MAX 26u /* counts 0..26 in the byte; more go to the overflow table */
typedef struct pm_scr {
    uint8_t clean;     /* outside collections (and "count 0") */
    uint8_t overflow;  /* the count is in the overflow table */
    uint8_t pending;   /* reachable, passed by the scan, not walked (no stack memory) */
    uint8_t tentative; /* passed by the scan, not (yet) found reachable */
    uint8_t reachable; /* found reachable, to be walked */
    uint8_t done;      /* reachable and walked */
    bool down;         /* counts go down from 31 */
} pm_scr;
PM_INLINE pm_scr pm_scr_codes(unsigned epoch) {
    if (epoch == 0)
        return (pm_scr){.clean = 0, .overflow = 27, .pending = 28, .tentative = 29,
                        .reachable = 30, .done = 31, .down = false};
    return (pm_scr){.clean = 31, .overflow = 4, .pending = 3, .tentative = 2, .reachable = 1,
                    .done = 0, .down = true};
}
/* The count a scratch value holds, or -1 if it holds none. */
PM_INLINE int pm_scr_count(const pm_scr *c, unsigned s) {
    if (c->down)
        return s >= 31 - PM_SCR_COUNT_MAX ? (int)(31 - s) : -1;
    return s <= PM_SCR_COUNT_MAX ? (int)s : -1;
}
PM_INLINE unsigned pm_scr_of_count(const pm_scr *c, unsigned count) {
    return c->down ? 31 - count : count;
}

/* top[p >> 26] = chunk address - ((p >> 26) << 21), so that byte = top + (p >> 5); 0 where no
 * chunk was made. Reserved lazily backed (16 MiB of address space). */
PM_HIDDEN extern uintptr_t *pm_side_top;

/* The side byte of p, or NULL when no object was ever tracked in p's region. */
PM_INLINE uint8_t *pm_side_find(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uintptr_t bias = pm_side_top[(a >> PM_SIDE_REGION_SHIFT) & (PM_SIDE_TOP_LEN - 1)];
    return bias ? (uint8_t *)(bias + (a >> PM_SIDE_SHIFT)) : NULL;
}
/* The side byte of an object known to be tracked (its chunk exists). */
PM_INLINE uint8_t *pm_side_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    return (uint8_t *)(pm_side_top[a >> PM_SIDE_REGION_SHIFT] + (a >> PM_SIDE_SHIFT));
}
/* Makes sure p's chunk exists; false when out of memory. */
PM_HIDDEN bool pm_side_ensure(const void *p);

/* The library's record of a user's type (types.c): a copy of it, checked, and the checked
 * form. Objects point to the record (so pm_obj_type gives &rt->t, never the user's type,
 * which is const and may be shared by several domains). */
typedef struct pm_type_rt {
    pm_type t; /* first: a record is also its type */
    uintptr_t ready;
    const pm_type *user;
} pm_type_rt;

PM_INLINE const pm_type_rt *pm_type_record_of(const pm_type *t) {
    return (const pm_type_rt *)(const void *)t;
}
/* The checked form of a type from pm_obj_type. */
PM_INLINE uintptr_t pm_ready(const pm_type *t) { return pm_type_record_of(t)->ready; }

/* ready: 0 when the type was refused (types.c); else these bits, and for a
 * layout whose references all lie in words 3..58 of the object, a bitmask of those words
 * (bit j = word 3 + j) above PM_READY_MASK_SHIFT: the collector walks it with no table. */
#define PM_TYPE_READY 0x1u
#define PM_TYPE_LAYOUT 0x2u    /* the collector walks ref_offsets/items itself */
#define PM_TYPE_CLEARABLE 0x4u /* clear set, or a layout the library clears */
#define PM_TYPE_ITEMS 0x8u     /* has an items array */
#define PM_TYPE_CONTAINER 0x10u /* may hold references: counted, tracked, walked */
#define PM_TYPE_MASKED 0x20u   /* the fixed references are the bitmask */
#define PM_TYPE_WEAKREF 0x40u  /* the library's weak reference type (weakref.c) */
#define PM_TYPE_AUTOTRACK 0x80u /* pm_new tracks (a container without PM_TYPE_TRACK_MANUALLY) */
#define PM_READY_MASK_SHIFT 8
#define PM_READY_FIRST_WORD 3  /* words 0..2 are the header */
#define PM_READY_MASK_WORDS 56

/* The items array of a type with PM_TYPE_ITEMS (NULL for an unset pointer). */
PM_INLINE pm_object **pm_items_of(pm_object *o, const pm_type *t) {
    char *at = (char *)o + t->items_offset;
    return (t->flags & PM_TYPE_ITEMS_POINTER) ? *(pm_object ***)at : (pm_object **)at;
}

/* Runs STMT with `r` bound to each non-NULL reference of a layout type (rd = pm_ready(t)).
 * A macro, so that the collector's passes keep their state in registers. */
#define PM_WALK_LAYOUT(x, t, rd, r, STMT)                                                      \
    do {                                                                                       \
        pm_object **pm_w_ = (pm_object **)(x);                                                 \
        if (PM_LIKELY((rd) & PM_TYPE_MASKED)) {                                                \
            uint64_t pm_m_ = (uint64_t)(rd) >> PM_READY_MASK_SHIFT;                            \
            while (pm_m_ != 0) {                                                               \
                pm_object *r = pm_w_[PM_READY_FIRST_WORD + __builtin_ctzll(pm_m_)];            \
                pm_m_ &= pm_m_ - 1;                                                            \
                if (r != NULL) {                                                               \
                    STMT;                                                                      \
                }                                                                              \
            }                                                                                  \
        } else if ((t)->ref_offsets != NULL) {                                                 \
            for (const uint16_t *pm_off_ = (t)->ref_offsets; *pm_off_ != 0; pm_off_++) {       \
                pm_object *r = *(pm_object **)((char *)(x) + *pm_off_);                        \
                if (r != NULL) {                                                               \
                    STMT;                                                                      \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        if ((rd) & PM_TYPE_ITEMS) {                                                            \
            size_t pm_n_ = *(size_t *)((char *)(x) + (t)->length_offset);                      \
            pm_object **pm_it_ = pm_items_of((x), (t));                                        \
            if (pm_it_ != NULL)                                                                \
                for (size_t pm_i_ = 0; pm_i_ < pm_n_; pm_i_++) {                               \
                    pm_object *r = pm_it_[pm_i_];                                              \
                    if (r != NULL) {                                                           \
                        STMT;                                                                  \
                    }                                                                          \
                }                                                                              \
        }                                                                                      \
        (void)pm_w_;                                                                           \
    } while (0)

/* Calls visit for each non-NULL reference of o; returns the first non-zero result. */
PM_INLINE int pm_walk(pm_object *o, const pm_type *t, pm_visit_fn visit, void *arg) {
    if (t->traverse != NULL)
        return t->traverse(o, visit, arg);
    uintptr_t rd = pm_ready(t);
    int e = 0;
    PM_WALK_LAYOUT(o, t, rd, r, if ((e = visit(r, arg)) != 0) return e);
    return 0;
}

/* ---- tables --------------------------------------------------------------------------------- */
typedef struct pm_gc_table {
    pm_object **items;
    size_t len, cap;
    size_t holes; /* NULL slots below len */
} pm_gc_table;

/* pm_gc_domain.u_flags: found while sweeping into the unreachable table, so that the steps
 * nobody needs are skipped (most garbage has no finalizer and no weak reference). */
#define PM_U_NONCLEAR 0x1u
#define PM_U_WEAKREFS 0x2u
#define PM_U_FINALIZE 0x4u
#define PM_U_WEAKREF_OBJS 0x8u /* weak references are garbage themselves */

/* ---- the collector domain --------------------------------------------------------------- */
#define PM_GC_MAX_CALLBACKS 16
#define PM_TYPE_CACHE 64

typedef struct pm_gc_domain {
    pm_gc_table table[PM_ST_COUNT]; /* by state; [0] unused */
    long threshold[3];
    long count[3];
    long trigger;     /* count[0] past this runs pm_gc_maybe_collect: threshold[0], or
                         LONG_MAX while automatic collection is off */
    size_t long_lived_total, long_lived_pending;
    size_t last_full_live; /* tracked objects left by the last full collection */
    int enabled;
    int debug;
    int collecting;   /* a collection is running: no nested ones */
    unsigned epoch;   /* the scratch encoding (pm_scr_codes), flipped by full collections */
    unsigned u_flags; /* PM_U_*: what the unreachable objects of this collection need */
    bool ready;
    /* objects whose count reached zero while another one was being released */
    pm_object *dealloc_list;
    int releasing;
    pm_gc_stats stats[3];
    const pm_type_rt *type_cache[PM_TYPE_CACHE]; /* types.c: user type -> record */
    struct {
        pm_gc_callback fn;
        void *arg;
    } callbacks[PM_GC_MAX_CALLBACKS];
    int ncallbacks;
    /* the collector's scratch, kept between collections */
    pm_object **stack;
    size_t stack_len, stack_cap;
    bool stack_failed; /* out of memory: fall back to PENDING and rescans */
    pm_addrmap overflow; /* counts past the side byte: object -> count (gc-mark.c) */
    pm_addrmap weak_heads; /* referent -> its first weak reference (weakref.c) */
    struct {               /* the last transition tables (gc-mark.c init_ctx) */
        unsigned key;
        uint8_t count_next[256], mark_next[256];
    } next_cache;
    uint64_t *filter; /* young collections: see build_filter in gc.c */
    /* strong references kept by the collector: uncollectable and SAVEALL objects */
    pm_object **garbage;
    size_t garbage_len, garbage_cap;
    /* domains (domain.c) */
    unsigned id;        /* 0: the default domain */
    uint64_t id_bits;   /* id << PM_GCW_DOMAIN_SHIFT, in every object's collector word */
    size_t live;        /* objects allocated minus freed */
    _Atomic(uintptr_t) user; /* the thread inside a call, for the one-thread rule; in a
                                shared domain PM_USER_SHARED_FREE when nobody is inside */
    struct pm_shared *shared; /* shared domains only (shared.c), else NULL */
} pm_gc_domain;

/* pm_gc_domain.user of a shared domain that no thread is inside: not 0, so that the inline
 * enter takes its slow path, which locks the domain (shared.c). */
#define PM_USER_SHARED_FREE ((uintptr_t)1)

/* The domain of this thread's calls: the default domain unless pm_domain_enter chose
 * another. Everything the object layer does goes to pm_gc, this thread's domain. */
PM_HIDDEN extern pm_gc_domain pm_default_domain;
PM_HIDDEN extern PM_TLS pm_gc_domain *pm_cur_domain;
#define pm_gc (*pm_cur_domain)

/* tables.c */
PM_HIDDEN void pm_gc_domain_init(void);
/* Memory functions for the layer's address maps (pm_calloc/pm_free). */
PM_HIDDEN extern const pm_addrmap_mem pm_objects_mem;
/* Recomputes pm_gc.trigger after enabled or threshold[0] changed. */
PM_INLINE void pm_gc_update_trigger(void) {
    pm_gc.trigger = pm_gc.enabled && pm_gc.threshold[0] > 0 ? pm_gc.threshold[0] : LONG_MAX;
}
PM_INLINE void pm_gc_ready(void) {
    if (PM_UNLIKELY(!pm_gc.ready))
        pm_gc_domain_init();
}
/* Appends o to the table of state (o untracked); false when out of memory. */
PM_HIDDEN bool pm_table_append(pm_gc_domain *d, unsigned state, pm_object *o);
/* Removes o from its table; its side byte is set to 0. */
PM_HIDDEN void pm_table_remove(pm_gc_domain *d, pm_object *o);
PM_HIDDEN void pm_table_compact(pm_gc_table *t);
PM_HIDDEN bool pm_table_reserve(pm_gc_table *t, size_t more);
/* A table at most a quarter full gives memory back (never below PM_TABLE_KEEP entries). */
#define PM_TABLE_KEEP 16384
PM_HIDDEN void pm_table_shrink(pm_gc_table *t);
/* Gives back the side table's pages that describe no tracked object (all bytes 0). */
PM_HIDDEN size_t pm_side_purge_empty(void);
/* types.c: the record of a type, made (and the type checked) at first use; NULL without
 * memory. The record's ready is 0 for a refused type. */
PM_HIDDEN pm_type_rt *pm_type_record(const pm_type *t);
PM_INLINE size_t pm_type_cache_index(const pm_type *t) {
    return ((uintptr_t)t >> 4) & (PM_TYPE_CACHE - 1);
}
/* The same through the domain's cache: one load and compare when the type was seen. */
PM_INLINE const pm_type_rt *pm_type_record_cached(const pm_type *t) {
    /* acquire (a plain load on x86 and arm64's ldar): threads of a shared domain share it */
    const pm_type_rt *rt = __atomic_load_n(&pm_gc.type_cache[pm_type_cache_index(t)],
                                           __ATOMIC_ACQUIRE);
    if (PM_LIKELY(rt != NULL && rt->user == t))
        return rt;
    return pm_type_record(t);
}
/* Drops the reference the library can see (layout, or traverse without release) and calls
 * release: the object's last steps before its memory is freed. */
PM_HIDDEN void pm_object_release_refs(pm_object *o, const pm_type *t);
/* Frees an object whose last reference is gone (finalizer, weak references, release), in
 * this thread's domain, which must be the object's. */
PM_HIDDEN void pm_object_dealloc(pm_object *o);
/* Breaks o's references for the collector: clear, or the layout cleared by the library. */
PM_HIDDEN void pm_object_clear(pm_object *o, const pm_type *t);
/* Calls visit for each reference o holds; returns the first non-zero visit result. */
PM_HIDDEN int pm_object_traverse(pm_object *o, pm_visit_fn visit, void *arg);
/* Is p, referred to by someone, a live object? Used by the debug checks. */
PM_HIDDEN void pm_object_check_ref(const pm_object *from, const pm_object *ref, const char *when);
PM_HIDDEN PM_COLD void pm_object_misuse(const pm_object *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
PM_HIDDEN void pm_gc_maybe_collect(void);
/* The automatic collection itself, when the thresholds say one is due (gc-collect.c). */
PM_HIDDEN void pm_gc_collect_due(void);

/* gc-finalize.c */
PM_HIDDEN void pm_gc_garbage_add(pm_object *o);

/* weakref.c */
/* When o dies (flag PM_OF_WEAKREFS): clears every weak reference to o, then runs the
 * callbacks of those that have one. */
PM_HIDDEN void pm_weakref_clear_all(pm_object *o);
/* The collector's form: clears every weak reference to o; weak references with a callback
 * that are not themselves unreachable are pushed (with a new reference) on *list. */
PM_HIDDEN void pm_weakref_clear_for_gc(pm_object *o, pm_object **list);
/* Detaches weak reference o (PM_TYPE_WEAKREF) from its referent: it will never call back. */
PM_HIDDEN void pm_weakref_forget_referent(pm_object *o);
/* Runs and releases the callbacks gathered by pm_weakref_clear_for_gc. */
PM_HIDDEN void pm_weakref_run_callbacks(pm_object *list);

/* The one-thread rule, checked in every build (domain.c): a call records its thread in the
 * domain for its duration; a call from another thread meanwhile aborts. Plain loads and
 * stores, not a lock: a thread-id compare on entry, a store on entry and on exit (none for
 * a nested call, which finds its own thread there). PM_GC_ENTER and PM_GC_LEAVE pair up in
 * one scope. */
PM_HIDDEN extern PM_TLS char pm_thread_token;
PM_HIDDEN PM_COLD PM_NORETURN void pm_domain_two_threads(const pm_gc_domain *d);
/* How a call entered its domain: PM_GC_LEAVE undoes exactly that. */
enum { PM_ENTERED = 0, PM_ENTERED_NESTED = 1, PM_ENTERED_LOCKED = 2 };
/* The slow entry (shared.c): a shared domain is locked (after a safepoint if asked: pm_new);
 * any other domain found in use by another thread aborts. */
PM_HIDDEN int pm_gc_enter_slow(pm_gc_domain *d, bool safepoint);
PM_HIDDEN void pm_gc_leave_locked(pm_gc_domain *d);
PM_INLINE int pm_gc_enter(pm_gc_domain *d) {
    uintptr_t me = (uintptr_t)&pm_thread_token;
    uintptr_t user = atomic_load_explicit(&d->user, memory_order_relaxed);
    if (user == me)
        return PM_ENTERED_NESTED;
    if (PM_UNLIKELY(user != 0))
        return pm_gc_enter_slow(d, false);
    atomic_store_explicit(&d->user, me, memory_order_relaxed);
    return PM_ENTERED;
}
PM_INLINE void pm_gc_leave(pm_gc_domain *d, int how) {
    if (how == PM_ENTERED)
        atomic_store_explicit(&d->user, (uintptr_t)0, memory_order_relaxed);
    else if (PM_UNLIKELY(how == PM_ENTERED_LOCKED))
        pm_gc_leave_locked(d);
}
#define PM_GC_ENTER()                                                                          \
    pm_gc_domain *const pm_entered_domain_ = pm_cur_domain;                                    \
    const int pm_entered_how_ = pm_gc_enter(pm_entered_domain_)
#define PM_GC_LEAVE() pm_gc_leave(pm_entered_domain_, pm_entered_how_)
/* An object of another domain given to this thread's domain: aborts with a message. */
PM_HIDDEN PM_COLD PM_NORETURN void pm_domain_foreign(const pm_object *o, const char *fn);
PM_INLINE void pm_check_domain(const pm_object *o, const char *fn) {
    if (PM_UNLIKELY((o->pm_gcword_ & PM_GCW_DOMAIN_MASK) != pm_gc.id_bits))
        pm_domain_foreign(o, fn);
}
/* domain.c: sets up a domain's collector state (thresholds and flags from the settings). */
PM_HIDDEN void pm_domain_setup(pm_gc_domain *d, unsigned id);
/* Frees a domain's memory and its id (no object of it left). */
PM_HIDDEN void pm_domain_destroy(pm_gc_domain *d);
/* How many domains exist (the default one included, once started). */
PM_HIDDEN unsigned pm_domains_alive(void);

/* ---- objects of shared domains (shared.c) ----------------------------------------------- */

/* Biased reference counting lives in 16 bytes before the header of a shared domain's object
 * (the header's count holds PM_REFCNT_SHARED): the owner (the creating thread) changes
 * `local` with plain loads and stores, every other thread `shared` with atomic operations. */
typedef struct pm_shared_rc {
    _Atomic(uintptr_t) owner; /* the owner's record (pm_shared_thread *), 0 once merged */
    _Atomic(uint32_t) local;  /* the owner's count: only the owner writes it while it runs */
    _Atomic(int32_t) shared;  /* the other threads' count << 2 | PM_RC_QUEUED/PM_RC_MERGED */
} pm_shared_rc;
#define PM_SHARED_PREFIX sizeof(pm_shared_rc)
#define PM_RC_QUEUED 1 /* queued for its owner to merge (the queue holds one reference) */
#define PM_RC_MERGED 2 /* the owner's count was merged in: only `shared` counts */
#define PM_RC_SHIFT 2
_Static_assert(sizeof(pm_shared_rc) == 16, "the prefix keeps objects 16-byte aligned");

PM_INLINE pm_shared_rc *pm_shared_rc_of(const pm_object *o) {
    return (pm_shared_rc *)((char *)(uintptr_t)o - PM_SHARED_PREFIX);
}
PM_INLINE int64_t pm_rc_count(int32_t v) { return (int64_t)(v >> PM_RC_SHIFT); }
/* The block pm_malloc gave for o (shared objects start after their prefix). */
PM_INLINE void *pm_obj_block(const pm_object *o) {
    return o->pm_refcnt_ == PM_REFCNT_SHARED ? (void *)pm_shared_rc_of(o) : (void *)o;
}
/* The whole count of a shared object: exact while the world is stopped or in its owner. */
PM_INLINE int64_t pm_shared_total(const pm_object *o) {
    const pm_shared_rc *h = pm_shared_rc_of(o);
    return (int64_t)atomic_load_explicit(&h->local, memory_order_relaxed) +
           pm_rc_count(atomic_load_explicit(&h->shared, memory_order_relaxed));
}
/* The object's reference count, for any object. */
PM_INLINE int64_t pm_obj_refcount(const pm_object *o) {
    int64_t rc = o->pm_refcnt_;
    return PM_UNLIKELY(rc == PM_REFCNT_SHARED) ? pm_shared_total(o) : rc;
}
/* Alive: not freed, not dying (a shared object that is not merged has an owner's count). */
PM_INLINE bool pm_obj_alive(const pm_object *o) {
    int64_t rc = o->pm_refcnt_;
    if (PM_LIKELY(rc > 0))
        return true;
    if (rc != PM_REFCNT_SHARED)
        return false;
    const pm_shared_rc *h = pm_shared_rc_of(o);
    return atomic_load_explicit(&h->owner, memory_order_relaxed) != 0 ||
           pm_rc_count(atomic_load_explicit(&h->shared, memory_order_relaxed)) > 0;
}
/* The attachment of this thread to a shared domain (shared.c), NULL when detached: the
 * owner recorded in the objects it creates. */
PM_HIDDEN extern PM_TLS struct pm_shared_thread *pm_shared_self;
/* The owner's side of biased counting, inline in the slow paths of pm_incref/pm_decref:
 * true when done (this thread owns o and the count stays above 0 and below the limit). */
PM_INLINE bool pm_shared_owner_add(pm_object *o, int delta) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    uintptr_t me = (uintptr_t)pm_shared_self;
    if (atomic_load_explicit(&h->owner, memory_order_relaxed) != me || me == 0)
        return false;
    uint32_t n = atomic_load_explicit(&h->local, memory_order_relaxed);
    if (delta > 0 ? n == UINT32_MAX : n <= 1)
        return false; /* the out-of-line path says why, or merges */
    atomic_store_explicit(&h->local, n + (uint32_t)delta, memory_order_relaxed);
    return true;
}
/* A new object of shared domain d: its prefix (owner: this thread) and count field. */
PM_HIDDEN void pm_shared_init_object(pm_gc_domain *d, pm_object *o);
PM_HIDDEN void pm_shared_incref(pm_object *o);
PM_HIDDEN void pm_shared_decref(pm_object *o);
/* Automatic collection in a shared domain: asks the next safepoint to run it. */
PM_HIDDEN void pm_shared_want_collect(pm_gc_domain *d);
/* pm_gc_collect in a shared domain: stops the world, collects, restarts it. */
PM_HIDDEN pm_gc_result pm_shared_collect(pm_gc_domain *d, int generation);
/* pm_domain_free of a shared domain. */
PM_HIDDEN int pm_shared_domain_free(pm_gc_domain *d);
/* A dying shared object's finalizer is about to run: its count becomes 1 (merged). */
PM_HIDDEN void pm_shared_hold_for_finalizer(pm_object *o);
/* Drops that reference; true when the object stays dead (no resurrection). */
PM_HIDDEN bool pm_shared_release_finalizer_ref(pm_object *o);

#endif /* PM_OBJECT_H */
