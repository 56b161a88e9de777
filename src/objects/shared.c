/*
 * shared.c: shared domains, used by several threads at once (pm_domain_new_shared).
 *
 * Reference counts: biased counting (the idea of CPython 3.13's free-threaded build, PEP
 * 703). An object of a shared domain keeps PM_REFCNT_SHARED in its header's count, which no
 * one writes while it lives, so the inline pm_incref/pm_decref of every thread take their
 * slow path; the real counts are in a 16-byte prefix (pm_shared_rc, object.h):
 *   - the owner (the thread that created it) changes `local` with a plain load and store;
 *   - every other thread changes `shared` atomically (count << 2 | flags);
 *   - when `local` reaches 0 the owner merges: `shared` gets the MERGED flag and the owner
 *     field is cleared; from then on only `shared` counts, and whoever takes it to 0 frees;
 *   - a non-owner whose decref would take an unmerged `shared` below 0 (the owner's count
 *     holds that reference: the object may be dead) leaves the count as it is, sets QUEUED
 *     and hands the reference to the owner's queue; the owner merges queued objects (minus
 *     the queue's reference) at its next safepoint or detach. If the owner is not running
 *     (parked or detached), the non-owner merges in its place, under the domain's state
 *     lock, which the owner needs to run again.
 *
 * Library calls (pm_new, tracking, deaths, collections, weak references) lock the domain
 * ("op" lock) where a one-thread domain only records its thread: the domain's tables,
 * counters and free lists stay the one-thread code. pm_gc_enter finds the shared domain's
 * `user` word non-zero (PM_USER_SHARED_FREE when free) and comes here; nested calls (a
 * finalizer's pm_new) find their own thread there and take no lock.
 *
 * Collections stop the world: a collector sets `stopping` and waits (condition variable)
 * until every other attached thread is parked or detached; threads park at safepoints
 * (pm_gc_safepoint, the start of pm_new, attach), never inside a library call, so a parked
 * thread holds no op lock and the collector can take it. Detached threads do not count. The
 * collector first merges every queued object (the owners are all parked), so that the
 * collection sees exact counts, then runs the one-thread collector, then restarts the world.
 * A collection asked for inside a library call, or while another one is stopping the world,
 * does not run (the second caller parks and returns zeros). Automatic collections are asked
 * for by pm_new (threshold 0 passed) and run at the next safepoint of any attached thread.
 *
 * Lock order: op lock, then state lock. Nobody waits for the world to stop while holding
 * the op lock.
 */
#include "gc.h"

#include <pthread.h>

enum thread_state { T_DETACHED, T_ATTACHED, T_PARKED, T_COLLECTING };

/* One per thread that attached to the domain; kept (and reused by the next thread with the
 * same token) until the domain is freed, since objects name their owner by this address. */
typedef struct pm_shared_thread {
    struct pm_shared_thread *next;
    pm_gc_domain *domain;
    uintptr_t token;            /* &pm_thread_token of the thread attached with it */
    unsigned state;             /* enum thread_state, under the state lock */
    unsigned depth;             /* nested attaches (its own thread only) */
    pm_gc_domain *prev_domain;  /* the thread's domain before it attached */
    pm_object **queue;          /* objects to merge, each holding a reference (state lock) */
    size_t qlen, qcap;
    _Atomic(size_t) queued;     /* qlen, for safepoints that do not take the lock */
} pm_shared_thread;

typedef struct pm_shared {
    pthread_mutex_t op;             /* library calls into the domain */
    pthread_mutex_t lock;           /* thread states, queues, stopping */
    pthread_cond_t parked;          /* a thread parked or detached: the collector looks */
    pthread_cond_t resumed;         /* the world restarts */
    pm_shared_thread *threads;
    unsigned running;               /* attached threads neither parked nor collecting */
    bool stopping;                  /* a collector stops (or stopped) the world */
    _Atomic(unsigned) flags;        /* SF_*: what a safepoint must do, one relaxed load */
} pm_shared;

#define SF_STOP 1u
#define SF_WANT_GC 2u

PM_TLS struct pm_shared_thread *pm_shared_self; /* this thread's attachment, or NULL */
#define self pm_shared_self

PM_INLINE uintptr_t my_token(void) { return (uintptr_t)&pm_thread_token; }

/* ---- misuse ---------------------------------------------------------------------------------- */

static PM_COLD PM_NORETURN void not_attached(const pm_object *o, const char *fn) {
    pm_fatal("%s(): object %p belongs to a shared collector domain, but this thread is not "
             "attached to it (pm_domain_attach first; a detached thread may not touch its "
             "objects)", fn, (const void *)o);
}

static PM_COLD PM_NORETURN void count_misuse(const pm_object *o, const char *what) {
    pm_object_misuse(o, "%s: object %p (shared domain) %s", what, (const void *)o,
                     "(a missing pm_incref, or a use after free)");
}

static pm_shared_thread *self_in(pm_gc_domain *d, const char *fn) {
    pm_shared_thread *me = self;
    if (PM_UNLIKELY(me == NULL || me->domain != d))
        pm_fatal("%s(): collector domain %u is shared and this thread is not attached to it "
                 "(pm_domain_attach)", fn, d->id);
    return me;
}

/* ---- counts ---------------------------------------------------------------------------------- */

/* A `shared` word for count and flags. Counts past +-2^29 are refused (abort). */
#define RC_LIMIT ((INT64_C(1) << 29) - 1)
static int32_t rc_word(const pm_object *o, int64_t count, unsigned flags) {
    if (PM_UNLIKELY(count > RC_LIMIT || count < -RC_LIMIT))
        count_misuse(o, "reference count overflow");
    return (int32_t)((uint32_t)count << PM_RC_SHIFT | flags);
}

void pm_shared_init_object(pm_gc_domain *d, pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    pm_shared_thread *me = self_in(d, "pm_new");
    atomic_store_explicit(&h->owner, (uintptr_t)me, memory_order_relaxed);
    atomic_store_explicit(&h->local, 1u, memory_order_relaxed);
    atomic_store_explicit(&h->shared, 0, memory_order_relaxed);
    o->pm_refcnt_ = PM_REFCNT_SHARED;
}

/* Folds the owner's count (and `extra`) into `shared` and marks it merged; true when the
 * total is zero (the caller frees the object). Only by the owner, or by another thread while
 * the owner cannot run (state lock held). The merged count includes one reference of ours
 * until the owner's fields are cleared: once `shared` says merged, another thread's decref
 * could otherwise free the object under those last two stores. */
static bool merge(pm_object *o, int64_t extra) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    int64_t local = atomic_load_explicit(&h->local, memory_order_relaxed);
    int32_t old = atomic_load_explicit(&h->shared, memory_order_relaxed), new;
    do {
        int64_t total = local + pm_rc_count(old) + extra;
        if (PM_UNLIKELY(total < 0))
            count_misuse(o, "pm_decref(): reference count below zero");
        new = rc_word(o, total + 1, PM_RC_MERGED);
    } while (!atomic_compare_exchange_weak_explicit(&h->shared, &old, new, memory_order_acq_rel,
                                                    memory_order_relaxed));
    atomic_store_explicit(&h->local, 0u, memory_order_relaxed);
    atomic_store_explicit(&h->owner, (uintptr_t)0, memory_order_release);
    old = atomic_fetch_sub_explicit(&h->shared, 1 << PM_RC_SHIFT, memory_order_acq_rel);
    return pm_rc_count(old) == 1;
}

static void queue_or_merge(pm_object *o);

/* A decref by a thread that is not the owner (or of a merged object). */
static void decref_other(pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    int32_t old = atomic_load_explicit(&h->shared, memory_order_relaxed), new;
    do {
        if (old == 0) {
            new = PM_RC_QUEUED; /* the owner's count holds this reference: hand it over */
        } else {
            if (PM_UNLIKELY((old & PM_RC_MERGED) && pm_rc_count(old) <= 0))
                count_misuse(o, "pm_decref(): reference count below zero");
            new = rc_word(o, pm_rc_count(old) - 1, (unsigned)old & 3u);
        }
    } while (!atomic_compare_exchange_weak_explicit(&h->shared, &old, new, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if (old == 0)
        queue_or_merge(o);
    else if (new == PM_RC_MERGED)
        pm_object_dealloc(o);
}

void pm_shared_incref(pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    pm_shared_thread *me = self;
    if (atomic_load_explicit(&h->owner, memory_order_relaxed) == (uintptr_t)me && me != NULL) {
        uint32_t n = atomic_load_explicit(&h->local, memory_order_relaxed);
        if (PM_UNLIKELY(n == UINT32_MAX))
            count_misuse(o, "pm_incref(): reference count overflow");
        atomic_store_explicit(&h->local, n + 1, memory_order_relaxed);
        return;
    }
    if (PM_UNLIKELY(me == NULL))
        not_attached(o, "pm_incref");
    int32_t old = atomic_fetch_add_explicit(&h->shared, 1 << PM_RC_SHIFT, memory_order_relaxed);
    if (PM_UNLIKELY(((old & PM_RC_MERGED) && pm_rc_count(old) <= 0) ||
                    pm_rc_count(old) >= RC_LIMIT))
        count_misuse(o, "pm_incref(): object being destroyed, or count overflow");
}

void pm_shared_decref(pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    pm_shared_thread *me = self;
    if (atomic_load_explicit(&h->owner, memory_order_relaxed) == (uintptr_t)me && me != NULL) {
        uint32_t n = atomic_load_explicit(&h->local, memory_order_relaxed);
        if (PM_UNLIKELY(n == 0))
            count_misuse(o, "pm_decref(): reference count below zero");
        atomic_store_explicit(&h->local, n - 1, memory_order_relaxed);
        if (n > 1)
            return;
        if (merge(o, 0))
            pm_object_dealloc(o);
        return;
    }
    if (PM_UNLIKELY(me == NULL))
        not_attached(o, "pm_decref");
    decref_other(o);
}

void pm_shared_hold_for_finalizer(pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    atomic_store_explicit(&h->owner, (uintptr_t)0, memory_order_relaxed);
    atomic_store_explicit(&h->local, 0u, memory_order_relaxed);
    atomic_store_explicit(&h->shared, rc_word(o, 1, PM_RC_MERGED), memory_order_relaxed);
}

bool pm_shared_release_finalizer_ref(pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    int32_t old = atomic_fetch_sub_explicit(&h->shared, 1 << PM_RC_SHIFT, memory_order_acq_rel);
    return pm_rc_count(old) == 1;
}

/* ---- queues ---------------------------------------------------------------------------------- */

/* A queued object's reference, taken out of a queue: merged (if still owned) without it. */
static void process_queued(pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    if (atomic_load_explicit(&h->owner, memory_order_relaxed) == 0) {
        decref_other(o); /* the owner merged meanwhile: an ordinary reference now */
        return;
    }
    if (merge(o, -1))
        pm_object_dealloc(o);
}

static void queue_push(pm_shared_thread *t, pm_object *o) {
    if (t->qlen == t->qcap) {
        size_t cap = t->qcap ? t->qcap * 2 : 64;
        pm_object **q = pm_realloc(t->queue, cap * sizeof *q);
        if (q == NULL)
            pm_fatal("shared domain %u: out of memory queueing an object for its owner thread",
                     t->domain->id);
        t->queue = q;
        t->qcap = cap;
    }
    t->queue[t->qlen++] = o;
    atomic_store_explicit(&t->queued, t->qlen, memory_order_relaxed);
}

/* After decref_other set QUEUED: the owner gets the reference, or, when it cannot run, this
 * thread merges in its place. */
static void queue_or_merge(pm_object *o) {
    pm_shared_rc *h = pm_shared_rc_of(o);
    pm_shared *s = pm_gc.shared;
    pthread_mutex_lock(&s->lock);
    pm_shared_thread *owner =
        (pm_shared_thread *)atomic_load_explicit(&h->owner, memory_order_relaxed);
    if (owner == NULL) {
        pthread_mutex_unlock(&s->lock);
        decref_other(o); /* merged meanwhile (its count kept our reference) */
        return;
    }
    if (owner->state == T_ATTACHED || owner->state == T_COLLECTING) {
        queue_push(owner, o);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    bool dead = merge(o, -1); /* the owner is parked or detached */
    pthread_mutex_unlock(&s->lock);
    if (dead)
        pm_object_dealloc(o);
}

/* Takes t's queue (NULL when empty) under the state lock. */
static pm_object **queue_take(pm_shared *s, pm_shared_thread *t, size_t *n) {
    pthread_mutex_lock(&s->lock);
    pm_object **q = t->queue;
    *n = t->qlen;
    t->queue = NULL;
    t->qlen = t->qcap = 0;
    atomic_store_explicit(&t->queued, 0, memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
    return q;
}

static void process_all(pm_object **q, size_t n) {
    for (size_t i = 0; i < n; i++)
        process_queued(q[i]);
    pm_free(q);
}

static void drain_own(pm_gc_domain *d, pm_shared_thread *me) {
    size_t n;
    pm_object **q = queue_take(d->shared, me, &n);
    process_all(q, n);
}

/* While the world is stopped: every thread's queue (their owners cannot run). */
static void drain_all(pm_gc_domain *d) {
    pm_shared *s = d->shared;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        pm_shared_thread *t = s->threads;
        while (t != NULL && t->qlen == 0)
            t = t->next;
        pthread_mutex_unlock(&s->lock);
        if (t == NULL)
            return;
        size_t n;
        pm_object **q = queue_take(s, t, &n);
        process_all(q, n);
    }
}

/* ---- stopping the world ---------------------------------------------------------------------- */

/* Parks until no collector stops the world (state lock held). */
static void park_locked(pm_shared *s, pm_shared_thread *me) {
    if (!s->stopping)
        return;
    me->state = T_PARKED;
    s->running--;
    pthread_cond_broadcast(&s->parked);
    while (s->stopping)
        pthread_cond_wait(&s->resumed, &s->lock);
    me->state = T_ATTACHED;
    s->running++;
}

/* Stops every other attached thread; false when another thread was collecting (this one
 * parked until it finished). */
static bool stop_world(pm_shared *s, pm_shared_thread *me) {
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        park_locked(s, me);
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    s->stopping = true;
    atomic_fetch_or_explicit(&s->flags, SF_STOP, memory_order_relaxed);
    me->state = T_COLLECTING;
    s->running--;
    while (s->running > 0)
        pthread_cond_wait(&s->parked, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return true;
}

static void restart_world(pm_shared *s, pm_shared_thread *me) {
    pthread_mutex_lock(&s->lock);
    s->stopping = false;
    atomic_fetch_and_explicit(&s->flags, ~SF_STOP, memory_order_relaxed);
    me->state = T_ATTACHED;
    s->running++;
    pthread_cond_broadcast(&s->resumed);
    pthread_mutex_unlock(&s->lock);
}

static void op_lock(pm_gc_domain *d) {
    pthread_mutex_lock(&d->shared->op);
    atomic_store_explicit(&d->user, my_token(), memory_order_relaxed);
}

static void op_unlock(pm_gc_domain *d) {
    atomic_store_explicit(&d->user, PM_USER_SHARED_FREE, memory_order_relaxed);
    pthread_mutex_unlock(&d->shared->op);
}

/* One stopped-world collection: of `generation`, or the automatic choice when it is -1. */
static pm_gc_result collect_stopped(pm_gc_domain *d, pm_shared_thread *me, int generation) {
    pm_gc_result res = {0, 0};
    if (!stop_world(d->shared, me))
        return res;
    op_lock(d);
    if (generation < 0)
        atomic_fetch_and_explicit(&d->shared->flags, ~SF_WANT_GC, memory_order_relaxed);
    drain_all(d);
    if (!d->collecting) {
        if (generation < 0)
            pm_gc_collect_due();
        else
            res = pm_gc_collect_now(generation);
    }
    op_unlock(d);
    restart_world(d->shared, me);
    return res;
}

pm_gc_result pm_shared_collect(pm_gc_domain *d, int generation) {
    pm_shared_thread *me = self_in(d, "pm_gc_collect");
    if (atomic_load_explicit(&d->user, memory_order_relaxed) == my_token()) {
        pm_gc_result none = {0, 0}; /* inside a call: the world cannot be stopped here */
        return none;
    }
    return collect_stopped(d, me, generation);
}

void pm_shared_want_collect(pm_gc_domain *d) {
    atomic_fetch_or_explicit(&d->shared->flags, SF_WANT_GC, memory_order_relaxed);
}

static void safepoint(pm_gc_domain *d, pm_shared_thread *me) {
    pm_shared *s = d->shared;
    unsigned f = atomic_load_explicit(&s->flags, memory_order_relaxed);
    if (f & SF_STOP) {
        pthread_mutex_lock(&s->lock);
        park_locked(s, me);
        pthread_mutex_unlock(&s->lock);
    }
    if (f & SF_WANT_GC)
        (void)collect_stopped(d, me, -1);
    if (atomic_load_explicit(&me->queued, memory_order_relaxed) != 0)
        drain_own(d, me);
}

/* ---- entering a domain ---------------------------------------------------------------------- */

int pm_gc_enter_slow(pm_gc_domain *d, bool want_safepoint) {
    if (d->shared == NULL)
        pm_domain_two_threads(d);
    pm_shared_thread *me = self_in(d, "poolmalloc");
    if (want_safepoint)
        safepoint(d, me);
    op_lock(d);
    return PM_ENTERED_LOCKED;
}

void pm_gc_leave_locked(pm_gc_domain *d) { op_unlock(d); }

void pm_gc_safepoint(void) {
    pm_shared_thread *me = self;
    if (me == NULL)
        return;
    pm_gc_domain *d = me->domain;
    if (atomic_load_explicit(&d->user, memory_order_relaxed) == my_token())
        return; /* inside a library call (a finalizer): parking here could deadlock */
    safepoint(d, me);
}

/* ---- attach and detach ----------------------------------------------------------------------- */

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

/* A thread that exits attached is detached, so that it never blocks a collection. */
static void detach_at_exit(void *rec) {
    pm_shared_thread *me = rec;
    if (self != me)
        return;
    me->depth = 1;
    (void)pm_domain_detach();
}

static void make_exit_key(void) {
    if (pthread_key_create(&exit_key, detach_at_exit) != 0)
        pm_warn("pm_domain_attach(): no thread key: threads must detach before they exit");
}

/* This thread's record in s (a dead thread's with the same token is taken over: its
 * objects' owner counts become this thread's), or a new one. State lock held. */
static pm_shared_thread *record_for(pm_gc_domain *d) {
    pm_shared *s = d->shared;
    for (pm_shared_thread *t = s->threads; t != NULL; t = t->next)
        if (t->token == my_token() && t->state == T_DETACHED)
            return t;
    pm_shared_thread *t = pm_calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->domain = d;
    t->token = my_token();
    t->state = T_DETACHED;
    t->next = s->threads;
    s->threads = t;
    return t;
}

int pm_domain_attach(pm_domain *domain) {
    pm_gc_domain *d = (pm_gc_domain *)domain;
    if (d == NULL || d->shared == NULL) {
        errno = EINVAL;
        return -1;
    }
    pm_shared_thread *me = self;
    if (me != NULL) {
        if (me->domain != d) {
            errno = EBUSY; /* attached to another shared domain: detach first */
            return -1;
        }
        me->depth++;
        return 0;
    }
    if (atomic_load_explicit(&pm_cur_domain->user, memory_order_relaxed) == my_token())
        pm_fatal("pm_domain_attach(): called from inside a call of domain %u (a finalizer, "
                 "clear or callback)", pm_cur_domain->id);
    pthread_once(&exit_key_once, make_exit_key);
    pm_shared *s = d->shared;
    pthread_mutex_lock(&s->lock);
    me = record_for(d);
    if (me == NULL) {
        pthread_mutex_unlock(&s->lock);
        errno = ENOMEM;
        return -1;
    }
    while (s->stopping) /* no thread joins a stopped world */
        pthread_cond_wait(&s->resumed, &s->lock);
    me->state = T_ATTACHED;
    s->running++;
    pthread_mutex_unlock(&s->lock);
    me->depth = 1;
    me->prev_domain = pm_cur_domain;
    self = me;
    pm_cur_domain = d;
    (void)pthread_setspecific(exit_key, me);
    return 0;
}

int pm_domain_detach(void) {
    pm_shared_thread *me = self;
    if (me == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (--me->depth > 0)
        return 0;
    pm_gc_domain *d = me->domain;
    pm_shared *s = d->shared;
    if (atomic_load_explicit(&d->user, memory_order_relaxed) == my_token())
        pm_fatal("pm_domain_detach(): called from inside a call of domain %u (a finalizer, "
                 "clear or callback)", d->id);
    for (;;) {
        drain_own(d, me); /* merges may free objects: still attached */
        pthread_mutex_lock(&s->lock);
        if (me->qlen == 0) {
            me->state = T_DETACHED;
            s->running--;
            pthread_cond_broadcast(&s->parked);
            pthread_mutex_unlock(&s->lock);
            break;
        }
        pthread_mutex_unlock(&s->lock);
    }
    pm_cur_domain = me->prev_domain;
    self = NULL;
    (void)pthread_setspecific(exit_key, NULL);
    return 0;
}

/* ---- creation and destruction ---------------------------------------------------------------- */

pm_domain *pm_domain_new_shared(void) {
    pm_gc_domain *d = (pm_gc_domain *)pm_domain_new();
    if (d == NULL)
        return NULL;
    pm_shared *s = pm_calloc(1, sizeof *s);
    if (s == NULL) {
        pm_domain_destroy(d);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&s->op, NULL);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->parked, NULL);
    pthread_cond_init(&s->resumed, NULL);
    d->shared = s;
    atomic_store_explicit(&d->user, PM_USER_SHARED_FREE, memory_order_relaxed);
    return (pm_domain *)d;
}

int pm_domain_is_shared(const pm_domain *domain) {
    return domain != NULL && ((const pm_gc_domain *)domain)->shared != NULL;
}

static bool anyone_attached(pm_shared *s) {
    pthread_mutex_lock(&s->lock);
    bool busy = false;
    for (pm_shared_thread *t = s->threads; t != NULL; t = t->next)
        busy |= t->state != T_DETACHED;
    pthread_mutex_unlock(&s->lock);
    return busy;
}

int pm_shared_domain_free(pm_gc_domain *d) {
    pm_shared *s = d->shared;
    if (self != NULL || anyone_attached(s)) {
        errno = EBUSY; /* threads still attached (this one included) */
        return -1;
    }
    /* its last garbage goes now, collected by this thread attached for the purpose */
    if (pm_domain_attach((pm_domain *)d) != 0)
        return -1;
    (void)pm_shared_collect(d, 2);
    bool busy = d->live > 0 || d->garbage_len > 0;
    (void)pm_domain_detach();
    if (busy || anyone_attached(s)) {
        errno = EBUSY;
        return -1;
    }
    for (pm_shared_thread *t = s->threads, *next; t != NULL; t = next) {
        next = t->next;
        pm_free(t->queue);
        pm_free(t);
    }
    pthread_mutex_destroy(&s->op);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->parked);
    pthread_cond_destroy(&s->resumed);
    pm_free(s);
    d->shared = NULL;
    pm_domain_destroy(d);
    return 0;
}
