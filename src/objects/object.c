/*
 * object.c: objects on the pool heap: creation, types, reference-count slow paths, the
 * iterative release of dying objects, tracking. The tables are in tables.c, the collector in
 * gc-*.c (gc.h), weak references in weakref.c; object.h has the design.
 */
#include "object.h"

_Static_assert(sizeof(pm_object) == 24, "the object header is documented as 24 bytes");
_Static_assert(offsetof(pm_object, pm_refcnt_) >= 2 * sizeof(void *),
               "the reference count must sit past the allocator's free-list words");

/* ---- misuse --------------------------------------------------------------------------------- */

/* A count this negative is a freed object (PM_REFCNT_FREED, or POOLMALLOC_POISON's 0xDD..). */
static bool refcnt_says_freed(int64_t rc) { return rc < -((int64_t)1 << 60); }

void pm_object_misuse(const pm_object *o, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    pm_vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)o;
    pm_fatal("%s", msg);
}

/* The type name of an object that may be dying but is not freed (its type word is intact). */
static const char *type_name(const pm_object *o) {
    const pm_type *t = pm_obj_type(o);
    return t != NULL && t->name != NULL ? t->name : "?";
}

static void check_not_freed(const pm_object *o, const char *fn) {
    if (PM_UNLIKELY(o == NULL))
        pm_object_misuse(o, "%s(): NULL object", fn);
    if (PM_UNLIKELY(refcnt_says_freed(o->pm_refcnt_)))
        pm_object_misuse(o, "%s(): object %p was freed (use after free)", fn, (const void *)o);
}

static void check_alive(const pm_object *o, const char *fn) {
    check_not_freed(o, fn);
    if (PM_UNLIKELY(!pm_obj_alive(o)))
        pm_object_misuse(o, "%s(): object %p (type %s) is being destroyed (reference count %lld)",
                         fn, (const void *)o, type_name(o), (long long)pm_obj_refcount(o));
}

void pm_object_check_ref(const pm_object *from, const pm_object *ref, const char *when) {
    if (PM_UNLIKELY(refcnt_says_freed(ref->pm_refcnt_) || !pm_obj_alive(ref)))
        pm_object_misuse(from, "%s: object %p (type %s) refers to %p, which was freed "
                         "(a missing pm_incref, or a stale field)",
                         when, (const void *)from, type_name(from), (const void *)ref);
    if (PM_UNLIKELY((ref->pm_gcword_ ^ from->pm_gcword_) & PM_GCW_DOMAIN_MASK))
        pm_object_misuse(from, "%s: object %p (type %s, domain %u) refers to %p (type %s) of "
                         "domain %u: references between domains are not allowed", when,
                         (const void *)from, type_name(from), pm_obj_domain_id(from),
                         (const void *)ref, type_name(ref), pm_obj_domain_id(ref));
}

/* ---- reference walks ------------------------------------------------------------------------ */

int pm_object_traverse(pm_object *o, pm_visit_fn visit, void *arg) {
    return pm_walk(o, pm_obj_type(o), visit, arg);
}

/* Drops the layout's references, fields set to NULL first (Py_CLEAR order). */
static void clear_layout(pm_object *o, const pm_type *t) {
    char *base = (char *)o;
    uintptr_t rd = pm_ready(t);
    if (rd & PM_TYPE_MASKED) {
        pm_object **w = (pm_object **)o;
        for (uint64_t m = (uint64_t)rd >> PM_READY_MASK_SHIFT; m != 0; m &= m - 1)
            PM_CLEAR(w[PM_READY_FIRST_WORD + __builtin_ctzll(m)]);
    } else if (t->ref_offsets != NULL) {
        for (const uint16_t *off = t->ref_offsets; *off != 0; off++)
            PM_CLEAR(*(pm_object **)(base + *off));
    }
    if (pm_ready(t) & PM_TYPE_ITEMS) {
        size_t n = *(size_t *)(base + t->length_offset);
        pm_object **items = pm_items_of(o, t);
        if (items != NULL)
            for (size_t i = 0; i < n; i++)
                PM_CLEAR(items[i]);
    }
}

static int decref_visit(pm_object *ref, void *arg) {
    (void)arg;
    pm_decref(ref);
    return 0;
}

/* inline in destroy, the path of every death */
PM_INLINE void release_refs(pm_object *o, const pm_type *t) {
    if (pm_ready(t) & PM_TYPE_LAYOUT)
        clear_layout(o, t);
    else if (t->traverse != NULL && t->release == NULL)
        t->traverse(o, decref_visit, NULL);
    if (t->release != NULL)
        t->release(o);
}

void pm_object_release_refs(pm_object *o, const pm_type *t) { release_refs(o, t); }

void pm_object_clear(pm_object *o, const pm_type *t) {
    if (t->clear != NULL)
        t->clear(o);
    else if (pm_ready(t) & PM_TYPE_LAYOUT)
        clear_layout(o, t);
}

/* ---- creation -------------------------------------------------------------------------------- */

/* Gives back an object that could not be completed (out of memory). */
static pm_object *new_failed(pm_gc_domain *d, void *block, uintptr_t ready) {
    pm_free(block);
    if ((ready & PM_TYPE_CONTAINER) && d->count[0] > 0)
        d->count[0]--;
    errno = ENOMEM;
    return NULL;
}

/* The rest of a creation once the block is allocated: the object starts `prefix` bytes in
 * (a shared domain's biased counts come first). */
PM_INLINE pm_object *finish_object(pm_gc_domain *d, const pm_type *t, uintptr_t ready,
                                   size_t size, char *block, size_t prefix) {
    pm_object *o = (pm_object *)(void *)(block + prefix);
    /* Every object's region gets its side-table chunk now, tracked or not: the collector
     * then looks up any referent's byte with no check. */
    if (PM_UNLIKELY(block == NULL) ||
        (PM_UNLIKELY(pm_side_top[(uintptr_t)o >> PM_SIDE_REGION_SHIFT] == 0) &&
         !pm_side_ensure(o)))
        return new_failed(d, block, ready);
    o->pm_typebits_ = (uintptr_t)t;
    o->pm_gcword_ = d->id_bits;
    o->pm_refcnt_ = 1;
    if (prefix != 0)
        pm_shared_init_object(d, o);
    d->live++;
    memset(o + 1, 0, size - sizeof(pm_object));
    /* zeroed fields are valid references (none): the object can be walked at once */
    if ((ready & PM_TYPE_AUTOTRACK) && PM_UNLIKELY(!pm_table_append(d, PM_ST_GEN0, o))) {
        d->live--;
        return new_failed(d, block, ready);
    }
    return o;
}

static PM_NOINLINE pm_object *new_shared_object(pm_gc_domain *d, const pm_type *t,
                                                uintptr_t ready, size_t size) {
    return finish_object(d, t, ready, size, pm_malloc(size + PM_SHARED_PREFIX),
                         PM_SHARED_PREFIX);
}

static pm_object *new_object(pm_gc_domain *d, const pm_type *t, uintptr_t ready, size_t size) {
    if (ready & PM_TYPE_CONTAINER) {
        /* CPython counts container allocations, not trackings: an object allocated and
         * dropped without ever being tracked still moves the collector forward. */
        if (PM_UNLIKELY(++d->count[0] > d->trigger))
            pm_gc_maybe_collect();
    }
    if (PM_UNLIKELY(d->shared != NULL))
        return new_shared_object(d, t, ready, size);
    return finish_object(d, t, ready, size, pm_malloc(size), 0);
}

/* pm_new in a domain another thread is inside (a misuse that aborts) or in a shared domain
 * (a safepoint, then its lock): out of line, so that pm_new's own path keeps its registers. */
static PM_NOINLINE pm_object *new_object_slow(pm_gc_domain *d, const pm_type_rt *rt,
                                              size_t size) {
    int how = pm_gc_enter_slow(d, true);
    pm_object *o = new_object(d, &rt->t, rt->ready, size);
    pm_gc_leave(d, how);
    return o;
}

/* PM_GC_ENTER + new_object + PM_GC_LEAVE, with the unusual entries (and a shared domain's
 * safepoint) out of line. */
PM_INLINE pm_object *create(const pm_type_rt *rt, size_t size) {
    pm_gc_domain *d = pm_cur_domain;
    uintptr_t me = (uintptr_t)&pm_thread_token;
    uintptr_t user = atomic_load_explicit(&d->user, memory_order_relaxed);
    if (user == me)
        return new_object(d, &rt->t, rt->ready, size); /* nested (a finalizer's pm_new) */
    if (PM_UNLIKELY(user != 0))
        return new_object_slow(d, rt, size);
    atomic_store_explicit(&d->user, me, memory_order_relaxed);
    pm_object *o = new_object(d, &rt->t, rt->ready, size);
    atomic_store_explicit(&d->user, (uintptr_t)0, memory_order_relaxed);
    return o;
}

/* The library's record of a type (checked at its first use), or NULL with errno set. */
static const pm_type_rt *type_ready(const pm_type *t) {
    const pm_type_rt *rt = pm_type_record_cached(t);
    if (PM_UNLIKELY(rt == NULL)) {
        errno = ENOMEM;
        return NULL;
    }
    if (PM_UNLIKELY(rt->ready == 0)) {
        errno = EINVAL;
        return NULL;
    }
    return rt;
}

pm_object *pm_new(const pm_type *type) {
    const pm_type_rt *rt = type_ready(type);
    if (PM_UNLIKELY(rt == NULL))
        return NULL;
    return create(rt, rt->t.size);
}

pm_object *pm_new_var(const pm_type *type, size_t n) {
    const pm_type_rt *rt = type_ready(type);
    if (PM_UNLIKELY(rt == NULL))
        return NULL;
    size_t extra;
    if (__builtin_mul_overflow(n, rt->t.itemsize, &extra) ||
        __builtin_add_overflow(extra, rt->t.size, &extra)) {
        errno = ENOMEM;
        return NULL;
    }
    pm_object *o = create(rt, extra);
    /* after the domain is left: no other thread sees o before this thread's next call (in
     * a shared domain, no collection runs before this thread reaches a safepoint) */
    if (o != NULL && (rt->ready & PM_TYPE_ITEMS) && !(rt->t.flags & PM_TYPE_ITEMS_POINTER))
        *(size_t *)((char *)o + rt->t.length_offset) = n;
    return o;
}

/* ---- death -------------------------------------------------------------------------------- */

/* PEP 442 from refcounting: the object gets one reference back for the call; anything more
 * after it is a resurrection, and the object lives on (finalize never runs again). */
static bool finalize_dying(pm_object *o, const pm_type *t) {
    o->pm_typebits_ |= PM_OF_FINALIZED;
    bool shared = o->pm_refcnt_ == PM_REFCNT_SHARED;
    if (shared)
        pm_shared_hold_for_finalizer(o);
    else
        o->pm_refcnt_ = 1;
    if (o->pm_typebits_ & PM_OF_WAS_TRACKED) {
        /* it waited on the dealloc list untracked; as CPython, a finalizer sees it tracked */
        o->pm_typebits_ &= ~PM_OF_WAS_TRACKED;
        if (pm_side_ensure(o))
            (void)pm_table_append(&pm_gc, PM_ST_GEN0, o);
    }
    t->finalize(o);
    if (shared)
        return pm_shared_release_finalizer_ref(o);
    int64_t rc = --o->pm_refcnt_;
    if (PM_LIKELY(rc == 0))
        return true;
    if (rc < 0)
        pm_object_misuse(o, "finalize of %p (type %s) dropped a reference it did not own",
                         (const void *)o, type_name(o));
    return false;
}

PM_INLINE void destroy(pm_gc_domain *d, pm_object *o) {
    const pm_type *t = pm_obj_type(o);
    if (t->finalize != NULL && !(o->pm_typebits_ & PM_OF_FINALIZED) && !finalize_dying(o, t))
        return; /* resurrected */
    if (pm_obj_state(o) != PM_ST_UNTRACKED)
        pm_table_remove(d, o);
    o->pm_typebits_ &= ~PM_OF_WAS_TRACKED;
    /* untracked first: a weak reference callback may collect, and must not find o */
    if (o->pm_typebits_ & PM_OF_WEAKREFS)
        pm_weakref_clear_all(o);
    if ((pm_ready(t) & PM_TYPE_CONTAINER) && d->count[0] > 0)
        d->count[0]--;
    d->live--;
    release_refs(o, t);
    void *block = pm_obj_block(o);
    o->pm_refcnt_ = PM_REFCNT_FREED;
    pm_free(block);
}

/* The trashcan, in the core: a death found while another object is being released waits on
 * a list (linked through its collector word, after untracking) and the outermost call frees
 * the list. Nothing recurses, whatever the shape of the graph. */
PM_INLINE void dealloc(pm_gc_domain *d, pm_object *o) {
    if (d->releasing) {
        if (pm_obj_state(o) != PM_ST_UNTRACKED) {
            pm_table_remove(d, o);
            o->pm_typebits_ |= PM_OF_WAS_TRACKED;
        }
        o->pm_gcword_ = (uint64_t)(uintptr_t)d->dealloc_list; /* state 0: untracked */
        d->dealloc_list = o;
        return;
    }
    d->releasing = 1;
    for (;;) {
        destroy(d, o);
        o = d->dealloc_list;
        if (o == NULL)
            break;
        d->dealloc_list = (pm_object *)(uintptr_t)o->pm_gcword_;
        o->pm_gcword_ = d->id_bits;
    }
    d->releasing = 0;
}

/* The last reference of an object of a thread's own domain, or of a shared domain's
 * object whose merged count reached zero. */
PM_INLINE void dealloc_here(pm_object *o) {
    PM_GC_ENTER();
    pm_gc_domain *d = pm_entered_domain_;
    if (PM_UNLIKELY((o->pm_gcword_ & PM_GCW_DOMAIN_MASK) != d->id_bits))
        pm_domain_foreign(o, "pm_decref");
    dealloc(d, o);
    PM_GC_LEAVE();
}

void pm_object_dealloc(pm_object *o) { dealloc_here(o); }

/* Its own function, reached by a tail call: pm__object_decref_slow then saves no registers,
 * which the shared domain's reference counting (also through it) would pay for. */
static PM_NOINLINE void last_reference(pm_object *o) {
    o->pm_refcnt_ = 0;
    dealloc_here(o);
}

void pm__object_decref_slow(pm_object *o) {
    int64_t rc = o->pm_refcnt_;
    if (PM_LIKELY(rc == 1)) {
        last_reference(o);
        return;
    }
    if (rc == PM_REFCNT_SHARED) {
        if (!pm_shared_owner_add(o, -1))
            pm_shared_decref(o);
        return;
    }
    if (refcnt_says_freed(rc))
        pm_object_misuse(o, "pm_decref(): object %p was already freed (use after free: its "
                         "reference count went below zero)", (const void *)o);
    pm_object_misuse(o, "pm_decref(): the reference count of %p (type %s) went below zero",
                     (const void *)o, type_name(o));
}

void pm__object_incref_slow(pm_object *o) {
    int64_t rc = o->pm_refcnt_;
    if (PM_LIKELY(rc == PM_REFCNT_SHARED)) {
        if (!pm_shared_owner_add(o, 1))
            pm_shared_incref(o);
        return;
    }
    if (refcnt_says_freed(rc))
        pm_object_misuse(o, "pm_incref(): object %p was freed (use after free)", (const void *)o);
    pm_object_misuse(o, "pm_incref(): object %p (type %s) is being destroyed (reference count "
                     "%lld)", (const void *)o, type_name(o), (long long)rc);
}

int64_t pm__object_refcount_slow(const pm_object *o) { return pm_obj_refcount(o); }

/* ---- tracking --------------------------------------------------------------------------------- */

static int check_ref_visit(pm_object *ref, void *arg) {
    pm_object_check_ref((const pm_object *)arg, ref, "pm_track()");
    return 0;
}

/* Tracks o (a container, domain checked) with the domain entered; 0 or -1 and ENOMEM. */
static int track_entered(pm_object *o, const pm_type *t) {
    if (pm_gc.debug & PM_GC_DEBUG_CHECKS)
        pm_walk(o, t, check_ref_visit, o);
    if (!pm_side_ensure(o) || !pm_table_append(&pm_gc, PM_ST_GEN0, o)) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* A count field not above 0: a misuse (NULL, freed, dying: aborts), or a shared domain's
 * object, whose collector word may change under another thread's call (tables are
 * compacted), so that everything is looked at with the domain locked. */
static PM_NOINLINE int track_unusual(pm_object *o) {
    check_alive(o, "pm_track");
    PM_GC_ENTER();
    pm_check_domain(o, "pm_track");
    const pm_type *t = pm_obj_type(o);
    int rc = 0;
    if ((pm_ready(t) & PM_TYPE_CONTAINER) && pm_obj_state(o) == PM_ST_UNTRACKED)
        rc = track_entered(o, t);
    PM_GC_LEAVE();
    return rc;
}

int pm_track(pm_object *o) {
    if (PM_UNLIKELY(o == NULL || o->pm_refcnt_ <= 0))
        return track_unusual(o);
    pm_check_domain(o, "pm_track");
    const pm_type *t = pm_obj_type(o);
    if (!(pm_ready(t) & PM_TYPE_CONTAINER))
        return 0; /* holds no references: never tracked */
    if (pm_obj_state(o) != PM_ST_UNTRACKED)
        return 0; /* pm_new tracked it, or a second call: tracking is idempotent */
    PM_GC_ENTER();
    int rc = track_entered(o, t);
    PM_GC_LEAVE();
    return rc;
}

void pm_untrack(pm_object *o) {
    check_not_freed(o, "pm_untrack");
    bool shared = o->pm_refcnt_ == PM_REFCNT_SHARED;
    if (!shared) {
        pm_check_domain(o, "pm_untrack");
        if (pm_obj_state(o) == PM_ST_UNTRACKED)
            return;
    }
    PM_GC_ENTER();
    if (shared)
        pm_check_domain(o, "pm_untrack");
    if (pm_obj_state(o) != PM_ST_UNTRACKED)
        pm_table_remove(pm_entered_domain_, o);
    PM_GC_LEAVE();
}

int pm_is_tracked(const pm_object *o) {
    check_not_freed(o, "pm_is_tracked");
    if (PM_LIKELY(o->pm_refcnt_ != PM_REFCNT_SHARED))
        return pm_obj_state(o) != PM_ST_UNTRACKED;
    PM_GC_ENTER(); /* a shared domain's collector word may be changing */
    int tracked = pm_obj_state(o) != PM_ST_UNTRACKED;
    PM_GC_LEAVE();
    return tracked;
}

int pm_is_finalized(const pm_object *o) {
    check_not_freed(o, "pm_is_finalized");
    return (o->pm_typebits_ & PM_OF_FINALIZED) != 0;
}
