/*
 * weakref.c: weak references.
 *
 * A weak reference is an object of the built-in type "weakref": a borrowed pointer to its
 * referent, a callback and a strong reference to the callback's data object. The weak
 * references to one object form a doubly linked list, found through a hash table keyed by
 * the referent (the header has no room for a list head; the PM_OF_WEAKREFS bit says when to
 * look). A weak reference with a callback or data is tracked, so that the collector can tell
 * when it is garbage itself: CPython then skips its callback, and so do we.
 */
#include "object.h"

typedef struct weakref {
    pm_object base;
    pm_object *data;          /* strong: the callback's argument */
    pm_object *target;        /* borrowed; NULL once the referent died */
    pm_weakref_callback callback;
    struct weakref *next, *prev;
} weakref;

static void weakref_release(pm_object *self);

static const uint16_t weakref_refs[] = {offsetof(weakref, data), 0};
static pm_type weakref_type = {
    .name = "weakref",
    .size = sizeof(weakref),
    .ref_offsets = weakref_refs,
    .release = weakref_release,
};

/* ---- referent -> list head ------------------------------------------------------------ */

static struct {
    const pm_object **keys;
    weakref **heads;
    size_t cap, used;
} table;

static size_t slot_hash(const pm_object *o, size_t mask) {
    return (size_t)(((uintptr_t)o >> 5) * UINT64_C(0x9E3779B97F4A7C15) >> 24) & mask;
}

static bool table_grow(void) {
    size_t cap = table.cap ? table.cap * 2 : 64;
    const pm_object **keys = pm_calloc(cap, sizeof *keys);
    weakref **heads = pm_calloc(cap, sizeof *heads);
    if (keys == NULL || heads == NULL) {
        pm_free(keys);
        pm_free(heads);
        return false;
    }
    for (size_t i = 0; i < table.cap; i++) {
        if (table.keys[i] == NULL)
            continue;
        size_t j = slot_hash(table.keys[i], cap - 1);
        while (keys[j] != NULL)
            j = (j + 1) & (cap - 1);
        keys[j] = table.keys[i];
        heads[j] = table.heads[i];
    }
    pm_free(table.keys);
    pm_free(table.heads);
    table.keys = keys;
    table.heads = heads;
    table.cap = cap;
    return true;
}

/* The list head slot of o; with create, made (NULL head) if missing. NULL when absent. */
static weakref **head_slot(const pm_object *o, bool create) {
    if (create && (table.used + 1) * 2 > table.cap && !table_grow())
        return NULL;
    if (table.cap == 0)
        return NULL;
    size_t mask = table.cap - 1;
    for (size_t i = slot_hash(o, mask);; i = (i + 1) & mask) {
        if (table.keys[i] == o)
            return &table.heads[i];
        if (table.keys[i] == NULL) {
            if (!create)
                return NULL;
            table.keys[i] = o;
            table.heads[i] = NULL;
            table.used++;
            return &table.heads[i];
        }
    }
}

/* Removes o's entry (linear probing: later entries of the cluster shift back). */
static void head_remove(const pm_object *o) {
    if (table.cap == 0)
        return;
    size_t mask = table.cap - 1, i = slot_hash(o, mask);
    while (table.keys[i] != o) {
        if (table.keys[i] == NULL)
            return;
        i = (i + 1) & mask;
    }
    for (size_t j = (i + 1) & mask; table.keys[j] != NULL; j = (j + 1) & mask) {
        size_t home = slot_hash(table.keys[j], mask);
        /* j's entry may move to the hole at i if its home is not in (i, j] (cyclically) */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays)
            continue;
        table.keys[i] = table.keys[j];
        table.heads[i] = table.heads[j];
        i = j;
    }
    table.keys[i] = NULL;
    table.heads[i] = NULL;
    table.used--;
}

static void unlink_weakref(weakref *w) {
    pm_object *target = w->target;
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        weakref **head = head_slot(target, false);
        if (head != NULL)
            *head = w->next;
        if (w->next == NULL) {
            head_remove(target);
            target->pm_typebits_ &= ~PM_OF_WEAKREFS;
        }
    }
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
    w->target = NULL;
}

static void weakref_release(pm_object *self) {
    weakref *w = (weakref *)self;
    if (w->target != NULL)
        unlink_weakref(w);
}

/* ---- API ------------------------------------------------------------------------------------- */

pm_object *pm_weakref_new(pm_object *target, pm_weakref_callback callback, pm_object *data) {
    if (target == NULL || target->pm_refcnt_ <= 0)
        pm_object_misuse(target, "pm_weakref_new(): referent %p is NULL, freed or being "
                         "destroyed", (void *)target);
    weakref *w = (weakref *)pm_new(&weakref_type);
    if (w == NULL)
        return NULL;
    PM_GC_ENTER();
    weakref **head = head_slot(target, true);
    if (head == NULL) {
        PM_GC_LEAVE();
        pm_decref(&w->base);
        errno = ENOMEM;
        return NULL;
    }
    w->target = target;
    w->callback = callback;
    w->data = pm_xnewref(data);
    w->next = *head;
    if (w->next != NULL)
        w->next->prev = w;
    *head = w;
    target->pm_typebits_ |= PM_OF_WEAKREFS;
    if (callback != NULL || data != NULL)
        (void)pm_track(&w->base); /* untracked on failure: its callback then always runs */
    PM_GC_LEAVE();
    return &w->base;
}

int pm_is_weakref(const pm_object *o) { return o != NULL && pm_obj_type(o) == &weakref_type; }

static weakref *as_weakref(pm_object *o, const char *fn) {
    if (!pm_is_weakref(o))
        pm_object_misuse(o, "%s(): %p is not a weak reference", fn, (void *)o);
    return (weakref *)o;
}

pm_object *pm_weakref_get(pm_object *ref) {
    weakref *w = as_weakref(ref, "pm_weakref_get");
    pm_object *t = w->target;
    if (t == NULL || t->pm_refcnt_ <= 0)
        return NULL;
    return pm_newref(t);
}

size_t pm_weakref_count(const pm_object *o) {
    if (o == NULL || !(o->pm_typebits_ & PM_OF_WEAKREFS))
        return 0;
    weakref **head = head_slot(o, false);
    size_t n = 0;
    for (weakref *w = head ? *head : NULL; w != NULL; w = w->next)
        n++;
    return n;
}

/* ---- clearing ------------------------------------------------------------------------------ */

/* Detaches every weak reference to o; those for which keep() says so are returned as a list
 * through `next`, each with a new reference, for their callbacks. */
static weakref *detach_all(pm_object *o, bool for_gc) {
    weakref **head = head_slot(o, false);
    weakref *w = head ? *head : NULL, *callbacks = NULL;
    head_remove(o);
    o->pm_typebits_ &= ~PM_OF_WEAKREFS;
    while (w != NULL) {
        weakref *next = w->next;
        w->target = NULL;
        w->next = w->prev = NULL;
        /* CPython: no callback for a weak reference that is garbage itself, as its callback
         * and data may be garbage too */
        bool call = w->callback != NULL &&
                    !(for_gc && pm_obj_state(&w->base) == PM_ST_UNREACHABLE);
        if (call) {
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
    pm_weakref_run_callbacks((pm_object *)detach_all(o, false));
}

void pm_weakref_clear_for_gc(pm_object *o, pm_object **list) {
    weakref *found = detach_all(o, true);
    /* append the list already gathered behind ours */
    if (found == NULL)
        return;
    weakref *tail = found;
    while (tail->next != NULL)
        tail = tail->next;
    tail->next = (weakref *)*list;
    *list = &found->base;
}
