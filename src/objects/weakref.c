/*
 * weakref.c: weak references.
 *
 * A weak reference is an object of the built-in type "weakref": a borrowed pointer to its
 * referent, a callback and its data (an opaque pointer, or an object the weak reference holds
 * a strong reference to). The weak
 * references to one object form a doubly linked list, found through a hash table keyed by
 * the referent (the header has no room for a list head; the PM_OF_WEAKREFS bit says when to
 * look). A weak reference with a callback or data is tracked, so that the collector can tell
 * when it is garbage itself: CPython then skips its callback, and so do we.
 */
#include "object.h"

typedef struct weakref {
    pm_object base;
    pm_object *data_object;   /* strong, or NULL: data when it is an object */
    pm_object *target;        /* borrowed; NULL once the referent died */
    void *data;               /* the callback's argument */
    pm_weakref_callback callback;
    struct weakref *next, *prev;
} weakref;

static void weakref_release(pm_object *self);

static const pm_ref_offset weakref_refs[] = {offsetof(weakref, data_object), 0};
static const pm_type weakref_type = {
    .name = "weakref",
    .size = sizeof(weakref),
    .flags = PM_TYPE_TRACK_MANUALLY, /* tracked only with a callback or data (see below) */
    .ref_offsets = PM_REFS(weakref_refs),
    .release = weakref_release,
};

/* The collector finds weak references among the garbage by a bit of their type's record. */
static bool weakref_type_marked;
static void mark_weakref_type(void) {
    pm_type_rt *rt = pm_type_record(&weakref_type);
    if (rt != NULL && rt->ready != 0) {
        __atomic_fetch_or(&rt->ready, PM_TYPE_WEAKREF, __ATOMIC_RELAXED); /* any domain */
        __atomic_store_n(&weakref_type_marked, true, __ATOMIC_RELEASE); /* threads race here */
    }
}

/* ---- referent -> list head: an address map (addrmap.c) ---------------------------------- */

#define heads (pm_gc.weak_heads) /* referent -> its first weakref, per domain */

/* The first weak reference to o, or NULL. */
static weakref *head_get(const pm_object *o) {
    uintptr_t *v = pm_addrmap_find(&heads, o);
    return v != NULL ? (weakref *)*v : NULL;
}

/* Makes w the first weak reference to o; false when the map cannot grow. */
static bool head_set(const pm_object *o, weakref *w) {
    uintptr_t *v = pm_addrmap_insert(&heads, o);
    if (v == NULL)
        return false;
    *v = (uintptr_t)w;
    return true;
}

static void head_remove(const pm_object *o) {
    pm_addrmap_remove(&heads, o);
    /* a program that once had many weak references gets the table's memory back */
    if (heads.used * 8 <= heads.cap)
        pm_addrmap_shrink(&heads);
}

static void unlink_weakref(weakref *w) {
    pm_object *target = w->target;
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        if (w->next != NULL) {
            (void)head_set(target, w->next); /* the key exists: this cannot grow the map */
        } else {
            head_remove(target);
            target->pm_typebits_ &= ~PM_OF_WEAKREFS;
        }
    }
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
    w->target = NULL;
}

void pm_weakref_forget_referent(pm_object *o) {
    weakref *w = (weakref *)o;
    if (w->target != NULL)
        unlink_weakref(w);
}

static void weakref_release(pm_object *self) { pm_weakref_forget_referent(self); }

/* ---- API ------------------------------------------------------------------------------------- */

static pm_object *weakref_new(pm_object *target, pm_weakref_callback callback, void *data,
                              pm_object *data_object) {
    if (target == NULL || !pm_obj_alive(target))
        pm_object_misuse(target, "pm_weakref_new(): referent %p is NULL, freed or being "
                         "destroyed", (void *)target);
    if (PM_UNLIKELY(!__atomic_load_n(&weakref_type_marked, __ATOMIC_ACQUIRE)))
        mark_weakref_type();
    weakref *w = (weakref *)pm_new(&weakref_type);
    if (w == NULL)
        return NULL;
    PM_GC_ENTER();
    pm_check_domain(target, "pm_weakref_new"); /* entered: a shared domain's word is stable */
    weakref *first = head_get(target);
    if (!head_set(target, w)) {
        PM_GC_LEAVE();
        pm_decref(&w->base);
        errno = ENOMEM;
        return NULL;
    }
    w->target = target;
    w->callback = callback;
    w->data = data;
    w->data_object = pm_xnewref(data_object);
    w->next = first;
    if (first != NULL)
        first->prev = w;
    target->pm_typebits_ |= PM_OF_WEAKREFS;
    /* tracked, the collector can tell when it is garbage itself; untracked on failure: its
     * callback then always runs */
    int saved_errno = errno;
    if ((callback != NULL || data_object != NULL) && pm_track(&w->base) != 0)
        errno = saved_errno;
    PM_GC_LEAVE();
    return &w->base;
}

pm_object *pm_weakref_new(pm_object *target, pm_weakref_callback callback, void *data) {
    return weakref_new(target, callback, data, NULL);
}

pm_object *pm_weakref_new_object_data(pm_object *target, pm_weakref_callback callback,
                                      pm_object *data) {
    return weakref_new(target, callback, data, data);
}

int pm_is_weakref(const pm_object *o) {
    return o != NULL && (pm_ready(pm_obj_type(o)) & PM_TYPE_WEAKREF) != 0;
}

static weakref *as_weakref(pm_object *o, const char *fn) {
    if (!pm_is_weakref(o))
        pm_object_misuse(o, "%s(): %p is not a weak reference", fn, (void *)o);
    return (weakref *)o;
}

pm_object *pm_weakref_get(pm_object *ref) {
    weakref *w = as_weakref(ref, "pm_weakref_get");
    PM_GC_ENTER(); /* in a shared domain: no death completes meanwhile */
    pm_object *t = w->target;
    if (t == NULL || !pm_obj_alive(t))
        t = NULL;
    else
        pm_incref(t);
    PM_GC_LEAVE();
    return t;
}

size_t pm_weakref_count(const pm_object *o) {
    if (o == NULL || !(o->pm_typebits_ & PM_OF_WEAKREFS))
        return 0;
    size_t n = 0;
    for (weakref *w = head_get(o); w != NULL; w = w->next)
        n++;
    return n;
}

/* ---- clearing ------------------------------------------------------------------------------ */

/* Detaches every weak reference to o; those with a callback are returned as a list through
 * `next`, each with a new reference, for their callbacks. */
static weakref *detach_all(pm_object *o) {
    weakref *w = head_get(o), *callbacks = NULL;
    head_remove(o);
    o->pm_typebits_ &= ~PM_OF_WEAKREFS;
    while (w != NULL) {
        weakref *next = w->next;
        w->target = NULL;
        w->next = w->prev = NULL;
        /* (a weak reference that is garbage itself was detached before: see
         * pm_weakref_forget_referent) */
        if (w->callback != NULL) {
            pm_incref(&w->base);
            w->next = callbacks;
            callbacks = w;
        }
        w = next;
    }
    return callbacks;
}

void pm_weakref_run_callbacks(pm_object *list) {
    weakref *w = (weakref *)list;
    while (w != NULL) {
        weakref *next = w->next;
        w->next = NULL;
        w->callback(&w->base, w->data);
        pm_decref(&w->base);
        w = next;
    }
}

void pm_weakref_clear_all(pm_object *o) {
    pm_weakref_run_callbacks((pm_object *)detach_all(o));
}

void pm_weakref_clear_for_gc(pm_object *o, pm_object **list) {
    weakref *found = detach_all(o);
    /* append the list already gathered behind ours */
    if (found == NULL)
        return;
    weakref *tail = found;
    while (tail->next != NULL)
        tail = tail->next;
    tail->next = (weakref *)*list;
    *list = &found->base;
}
