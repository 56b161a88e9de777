/*
 * domain.c: collector domains. A domain is a whole object world: its own generations,
 * thresholds, statistics, collector, weak references and free lists of dying objects, used by
 * one thread at a time (PEP 684's per-interpreter GIL, without the GIL: the program
 * serializes). A thread's calls go to its current domain (pm_domain_enter), the default
 * domain unless it chose another; every object records its domain in its collector word.
 *
 * Misuse is caught in every build without a lock: each call records its thread in the
 * domain for its duration (a load, a compare and two plain stores), and each call given an
 * object checks the object's domain against the thread's (one compare).
 */
#include "object.h"

#include <pthread.h>

PM_BIG_BSS pm_gc_domain pm_default_domain;
PM_TLS pm_gc_domain *pm_cur_domain = &pm_default_domain;
PM_TLS char pm_thread_token; /* its address identifies the thread */

static pthread_mutex_t ids_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t ids_used = 1; /* bit i: domain id i exists (0, the default, always) */

unsigned pm_domains_alive(void) {
    return (unsigned)__builtin_popcount(__atomic_load_n(&ids_used, __ATOMIC_RELAXED));
}

void pm_domain_setup(pm_gc_domain *d, unsigned id) {
    pm_gc_settings opt;
    pm_gc_settings_get(&opt);
    for (int i = 0; i < 3; i++)
        d->threshold[i] = opt.threshold[i];
    d->enabled = opt.enabled ? 1 : 0;
    d->debug = (int)opt.debug | (PM_DEBUG ? PM_GC_DEBUG_CHECKS : 0);
    pm_addrmap_init(&d->overflow, pm_objects_mem, 5);
    pm_addrmap_init(&d->weak_heads, pm_objects_mem, 5);
    d->next_cache.key = ~0u;
    d->id = id;
    d->id_bits = (uint64_t)id << PM_GCW_DOMAIN_SHIFT;
    d->trigger = d->enabled && d->threshold[0] > 0 ? d->threshold[0] : LONG_MAX;
    __atomic_store_n(&d->ready, true, __ATOMIC_RELEASE);
}

void pm_domain_two_threads(const pm_gc_domain *d) {
    pm_fatal("collector domain %u was used by two threads at once; a domain is used by one "
             "thread at a time (serialize its calls with a lock, or give each thread its own "
             "domain: pm_domain_new)", d->id);
}

void pm_domain_foreign(const pm_object *o, const char *fn) {
    const pm_type *t = pm_obj_type(o);
    pm_fatal("%s(): object %p (type %s) belongs to collector domain %u, but this thread is in "
             "domain %u (objects may not be passed between domains)", fn, (const void *)o,
             t != NULL && t->name != NULL ? t->name : "?", pm_obj_domain_id(o), pm_gc.id);
}

/* ---- API --------------------------------------------------------------------------------- */

pm_domain *pm_domain_new(void) {
    pm_gc_ready(); /* the side table and the default domain */
    pthread_mutex_lock(&ids_lock);
    unsigned id = ids_used == UINT32_MAX ? 0 : (unsigned)__builtin_ctz(~ids_used);
    if (id != 0)
        __atomic_store_n(&ids_used, ids_used | (UINT32_C(1) << id), __ATOMIC_RELAXED);
    pthread_mutex_unlock(&ids_lock);
    if (id == 0) {
        errno = EAGAIN;
        return NULL;
    }
    pm_gc_domain *d = pm_calloc(1, sizeof *d);
    if (d == NULL) {
        pthread_mutex_lock(&ids_lock);
        __atomic_store_n(&ids_used, ids_used & ~(UINT32_C(1) << id), __ATOMIC_RELAXED);
        pthread_mutex_unlock(&ids_lock);
        errno = ENOMEM;
        return NULL;
    }
    pm_domain_setup(d, id);
    return (pm_domain *)d;
}

pm_domain *pm_domain_default(void) {
    pm_gc_ready();
    return (pm_domain *)&pm_default_domain;
}

pm_domain *pm_domain_current(void) {
    pm_gc_ready();
    return (pm_domain *)pm_cur_domain;
}

pm_domain *pm_domain_enter(pm_domain *domain) {
    pm_gc_ready();
    pm_gc_domain *prev = pm_cur_domain;
    if (PM_UNLIKELY(domain != NULL && ((pm_gc_domain *)domain)->shared != NULL))
        pm_fatal("pm_domain_enter(): domain %u is shared: threads use it through "
                 "pm_domain_attach/pm_domain_detach", ((pm_gc_domain *)domain)->id);
    if (PM_UNLIKELY(atomic_load_explicit(&prev->user, memory_order_relaxed) ==
                    (uintptr_t)&pm_thread_token))
        pm_fatal("pm_domain_enter(): called from inside a call of domain %u (a finalizer, "
                 "clear or callback); switch domains between calls", prev->id);
    pm_cur_domain = domain != NULL ? (pm_gc_domain *)domain : &pm_default_domain;
    return (pm_domain *)prev;
}

static void free_tables(pm_gc_domain *d) {
    for (unsigned st = 0; st < PM_ST_COUNT; st++)
        pm_free(d->table[st].items);
    pm_free(d->stack);
    pm_free(d->filter);
    pm_free(d->garbage);
    pm_addrmap_destroy(&d->overflow);
    pm_addrmap_destroy(&d->weak_heads);
}

int pm_domain_free(pm_domain *domain) {
    pm_gc_domain *d = (pm_gc_domain *)domain;
    if (d == NULL || d == &pm_default_domain) {
        errno = EINVAL;
        return -1;
    }
    if (d->shared != NULL)
        return pm_shared_domain_free(d);
    /* its last garbage goes now, collected in the domain itself */
    pm_gc_domain *prev = pm_cur_domain;
    pm_cur_domain = d;
    (void)pm_gc_collect(2);
    size_t live = d->live;
    pm_cur_domain = prev == d ? &pm_default_domain : prev;
    if (live > 0 || d->garbage_len > 0) {
        pm_cur_domain = prev; /* the domain stays usable */
        errno = EBUSY;
        return -1;
    }
    pm_domain_destroy(d);
    return 0;
}

void pm_domain_destroy(pm_gc_domain *d) {
    free_tables(d);
    unsigned id = d->id;
    pm_free(d);
    pthread_mutex_lock(&ids_lock);
    __atomic_store_n(&ids_used, ids_used & ~(UINT32_C(1) << id), __ATOMIC_RELAXED);
    pthread_mutex_unlock(&ids_lock);
}

size_t pm_domain_live_objects(const pm_domain *domain) {
    return ((const pm_gc_domain *)domain)->live;
}
