/*
 * types.c: type descriptors. A pm_type is the user's, const; at its first pm_new the library
 * checks it and keeps its own record (pm_type_rt: a copy of the type and its checked form),
 * which objects point to. A small cache in the domain maps a type to its record with one
 * compare; the registry behind it is shared by every thread, under a lock.
 */
#include "object.h"

#include <pthread.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pm_addrmap registry; /* const pm_type * -> pm_type_rt * */

/* ---- types ----------------------------------------------------------------------------------- */

/* Callbacks and layout that contradict each other: each would leave objects silently
 * uncollectable or walked wrongly, so the type is refused with the reason. */
static bool contradictions_ok(const pm_type *t, const char *name, bool layout) {
    if ((t->flags & PM_TYPE_NO_REFS) && (t->traverse != NULL || layout || t->clear != NULL)) {
        pm_warn("type '%s': PM_TYPE_NO_REFS with traverse, clear or a reference layout "
                "(ref_offsets, items_offset); a type either holds references or not", name);
        return false;
    }
    if (t->traverse != NULL && layout) {
        pm_warn("type '%s': both traverse and a reference layout (ref_offsets, items_offset) "
                "describe its references; give one: the collector would use traverse only, "
                "and without clear its cycles could never be collected", name);
        return false;
    }
    if (t->clear != NULL && t->traverse == NULL && !layout) {
        pm_warn("type '%s': clear without traverse or ref_offsets/items_offset: the collector "
                "never sees its references, so clear would never run", name);
        return false;
    }
    return true;
}

static bool field_ok(const pm_type *t, size_t off, const char *what) {
    if (off < sizeof(pm_object) || off % sizeof(void *) != 0 || off + sizeof(void *) > t->size) {
        pm_warn("type '%s': %s %zu is not an aligned pointer-sized field after the header "
                "and inside size %zu", t->name ? t->name : "?", what, off, t->size);
        return false;
    }
    return true;
}

/* The checked form of t (PM_TYPE_* bits), or 0 with a message when t is malformed. */
static uintptr_t check_type(const pm_type *t) {
    const char *name = t->name ? t->name : "?";
    if (t->size < sizeof(pm_object)) {
        pm_warn("type '%s': size %zu is smaller than the %zu-byte object header", name, t->size,
                sizeof(pm_object));
        return 0;
    }
    bool layout = false, items = false, masked = true;
    uint64_t mask = 0;
    if (t->ref_offsets != NULL) {
        size_t n = 0;
        for (const pm_ref_offset *off = t->ref_offsets; *off != 0; off++, n++) {
            if (n >= 4096 || !field_ok(t, *off, "ref_offsets entry"))
                return 0;
            size_t word = *off / sizeof(void *) - PM_READY_FIRST_WORD;
            if (word >= PM_READY_MASK_WORDS) {
                masked = false;
                continue;
            }
            if (mask & (UINT64_C(1) << word)) {
                pm_warn("type '%s': offset %u appears twice in ref_offsets", name, *off);
                return 0;
            }
            mask |= UINT64_C(1) << word;
        }
        layout = n > 0;
    }
    if (t->items_offset != 0) {
        if (!field_ok(t, t->length_offset, "length_offset"))
            return 0;
        if (t->flags & PM_TYPE_ITEMS_POINTER) {
            if (!field_ok(t, t->items_offset, "items_offset"))
                return 0;
        } else if (t->items_offset < sizeof(pm_object) || t->items_offset > t->size ||
                   t->items_offset % sizeof(void *) != 0 || t->itemsize != sizeof(void *)) {
            pm_warn("type '%s': inline items need items_offset <= size (aligned) and itemsize "
                    "== sizeof(pm_object *)", name);
            return 0;
        }
        layout = items = true;
    }
    bool refs = t->traverse != NULL || layout;
    if (!contradictions_ok(t, name, layout))
        return 0;
    uintptr_t ready = PM_TYPE_READY;
    if (refs) {
        ready |= PM_TYPE_CONTAINER;
        if (t->traverse == NULL)
            ready |= PM_TYPE_LAYOUT;
        if (t->traverse == NULL && masked)
            ready |= PM_TYPE_MASKED | (uintptr_t)mask << PM_READY_MASK_SHIFT;
        if (t->clear != NULL || t->traverse == NULL)
            ready |= PM_TYPE_CLEARABLE;
        if (items)
            ready |= PM_TYPE_ITEMS;
        if (!(t->flags & PM_TYPE_TRACK_MANUALLY))
            ready |= PM_TYPE_AUTOTRACK;
    }
    return ready;
}

pm_type_rt *pm_type_record(const pm_type *t) {
    pm_gc_ready();
    pthread_mutex_lock(&registry_lock);
    if (registry.mem.alloc_zeroed == NULL)
        pm_addrmap_init(&registry, pm_objects_mem, 3);
    pm_type_rt *rt = NULL;
    uintptr_t *v = pm_addrmap_find(&registry, t);
    if (v != NULL) {
        rt = (pm_type_rt *)*v;
    } else if ((rt = pm_calloc(1, sizeof *rt)) != NULL) {
        rt->t = *t;
        rt->user = t;
        rt->ready = check_type(&rt->t); /* 0: refused, and said so once */
        v = pm_addrmap_insert(&registry, t);
        if (v != NULL) {
            *v = (uintptr_t)rt;
        } else {
            pm_free(rt);
            rt = NULL;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (rt != NULL)
        __atomic_store_n(&pm_gc.type_cache[pm_type_cache_index(t)], rt, __ATOMIC_RELEASE);
    return rt;
}

const pm_type *pm_type_of(const pm_object *o) { return pm_type_record_of(pm_obj_type(o))->user; }
