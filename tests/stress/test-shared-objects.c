/*
 * test-shared-objects.c: shared domains (pm_domain_new_shared): biased reference counting
 * between threads, owner queues and merges, attach/detach, safepoints and stop-the-world
 * collections.
 *
 * The model test: four threads attached to one shared domain share a graph. Each thread owns
 * root slots; a mutex-guarded exchange area carries references between threads. At random
 * they create nodes (pm_new: a safepoint), drop roots, follow edges into other threads'
 * nodes, add and remove edges (a node's edges are guarded by a striped test lock), publish
 * and take references through the exchange, take safepoints, detach and re-attach, and
 * collect. After every full collection, while the world is still stopped (a PM_GC_STOP
 * callback, run by the collecting thread), an oracle computes what is reachable from every
 * thread's roots and the exchange by walking the graph itself, and checks that the domain's
 * live objects are exactly those, and that each one's reference count is exactly the number
 * of root slots, exchange slots and edges of live nodes that point to it. Seeds are fixed;
 * the threads' interleaving is not, so each run checks a different history.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "poolmalloc.h"

#define EDGES 4
typedef struct gnode {
    pm_object base;
    pm_object *edge[EDGES];
} gnode;
static const pm_ref_offset gnode_refs[] = {offsetof(gnode, edge[0]), offsetof(gnode, edge[1]),
                                           offsetof(gnode, edge[2]), offsetof(gnode, edge[3]),
                                           0};
static const pm_type gnode_type = {.name = "gnode", .size = sizeof(gnode),
                                   .ref_offsets = PM_REFS(gnode_refs)};

/* ---- the model's state ------------------------------------------------------------------------ */

#define THREADS 4
#define ROOTS 48
#define EXCHANGE 16
#define STRIPES 64

static pm_domain *dom;
static pm_object *roots[THREADS][ROOTS]; /* written by their thread only */
static pm_object *exchange[EXCHANGE];    /* under exchange_lock */
static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stripes[STRIPES];

static pthread_mutex_t *stripe_of(const void *p) {
    return &stripes[((uintptr_t)p >> 5) % STRIPES];
}

/* ---- the oracle (runs with the world stopped) -------------------------------------------------- */

/* Visited nodes: open addressing on the address, with the count of references seen. */
#define SET_BITS 16
#define SET_SIZE ((size_t)1 << SET_BITS)
static struct slot {
    pm_object *o;
    long refs;
} *set;
static pm_object **work;

static atomic_long checks_run, checks_failed, max_live;
static char failure[512];

static struct slot *set_find(pm_object *o, bool *fresh) {
    size_t i = ((uintptr_t)o >> 4) * 0x9e3779b97f4a7c15ull >> (64 - SET_BITS);
    for (;; i = (i + 1) & (SET_SIZE - 1)) {
        if (set[i].o == o) {
            *fresh = false;
            return &set[i];
        }
        if (set[i].o == NULL) {
            set[i].o = o;
            *fresh = true;
            return &set[i];
        }
    }
}

static void fail(const char *fmt, long a, long b) {
    if (atomic_fetch_add(&checks_failed, 1) == 0)
        snprintf(failure, sizeof failure, fmt, a, b);
}

/* One reference to o (from a root, the exchange or an edge of a reachable node). */
static size_t reach(pm_object *o, size_t top) {
    bool fresh;
    struct slot *s = set_find(o, &fresh);
    s->refs++;
    if (fresh)
        work[top++] = o;
    return top;
}

static void oracle(int phase, const pm_gc_info *info, void *arg) {
    (void)arg;
    if (phase != PM_GC_STOP || info->generation != 2)
        return;
    memset(set, 0, SET_SIZE * sizeof *set);
    size_t top = 0, nodes = 0;
    for (int t = 0; t < THREADS; t++)
        for (int r = 0; r < ROOTS; r++)
            if (roots[t][r] != NULL)
                top = reach(roots[t][r], top);
    for (int x = 0; x < EXCHANGE; x++)
        if (exchange[x] != NULL)
            top = reach(exchange[x], top);
    while (top > 0) {
        gnode *n = (gnode *)work[--top];
        nodes++;
        for (int k = 0; k < EDGES; k++)
            if (n->edge[k] != NULL)
                top = reach(n->edge[k], top);
    }
    atomic_fetch_add(&checks_run, 1);
    if ((long)nodes > atomic_load(&max_live))
        atomic_store(&max_live, (long)nodes);
    if (pm_domain_live_objects(dom) != nodes)
        fail("after a full collection %ld objects live, %ld reachable from the roots",
             (long)pm_domain_live_objects(dom), (long)nodes);
    for (size_t i = 0; i < SET_SIZE; i++)
        if (set[i].o != NULL && pm_refcount(set[i].o) != set[i].refs)
            fail("an object's reference count is %ld, %ld references point to it",
                 (long)pm_refcount(set[i].o), set[i].refs);
}

/* ---- the threads -------------------------------------------------------------------------------- */

typedef struct worker {
    int id;
    uint64_t rng;
    long ops;
    long collections, detaches;
} worker;

static uint64_t next_rand(worker *w) {
    /* xorshift64*: deterministic per thread */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 0x2545f4914f6cdd1dull;
}

static unsigned pick(worker *w, unsigned n) { return (unsigned)(next_rand(w) % n); }

/* Stores a reference the caller owns in one of this thread's roots, dropping the old one
 * after the store (so that the roots never name a freed object). */
static void set_root(worker *w, unsigned r, pm_object *o) {
    pm_object *old = roots[w->id][r];
    roots[w->id][r] = o;
    pm_xdecref(old);
}

static void set_edge(gnode *n, unsigned k, pm_object *target) {
    pthread_mutex_t *l = stripe_of(n);
    pthread_mutex_lock(l);
    pm_object *old = n->edge[k];
    n->edge[k] = pm_xnewref(target);
    pthread_mutex_unlock(l);
    pm_xdecref(old);
}

static pm_object *get_edge(gnode *n, unsigned k) {
    pthread_mutex_t *l = stripe_of(n);
    pthread_mutex_lock(l);
    pm_object *o = pm_xnewref(n->edge[k]);
    pthread_mutex_unlock(l);
    return o;
}

static void one_step(worker *w) {
    unsigned r = pick(w, ROOTS), k = pick(w, EDGES), x = pick(w, EXCHANGE);
    pm_object *mine = roots[w->id][r];
    pm_object *other = roots[w->id][pick(w, ROOTS)];
    switch (pick(w, 20)) {
    case 0: case 1: case 2: { /* a new node (pm_new is a safepoint) */
        pm_object *o = pm_new(&gnode_type);
        cr_assert_not_null(o);
        set_root(w, r, o);
        break;
    }
    case 3: /* drop a root */
        set_root(w, r, NULL);
        break;
    case 4: case 5: case 6: /* follow an edge: often into another thread's nodes */
        if (mine != NULL)
            set_root(w, pick(w, ROOTS), get_edge((gnode *)mine, k));
        break;
    case 7: case 8: case 9: /* add an edge (cycles included) */
        if (mine != NULL)
            set_edge((gnode *)mine, k, other != NULL ? other : mine);
        break;
    case 10: case 11: /* remove an edge */
        if (mine != NULL)
            set_edge((gnode *)mine, k, NULL);
        break;
    case 12: case 13: { /* publish a root in the exchange */
        pthread_mutex_lock(&exchange_lock);
        pm_object *old = exchange[x];
        exchange[x] = pm_xnewref(mine);
        pthread_mutex_unlock(&exchange_lock);
        pm_xdecref(old);
        break;
    }
    case 14: case 15: { /* take a reference from the exchange */
        pthread_mutex_lock(&exchange_lock);
        pm_object *o = pm_xnewref(exchange[x]);
        pthread_mutex_unlock(&exchange_lock);
        set_root(w, r, o);
        break;
    }
    case 16: case 17: /* incref + decref pairs on a shared node (owner or not) */
        if (other != NULL) {
            pm_incref(other);
            pm_incref(other);
            pm_decref(other);
            pm_decref(other);
        }
        break;
    case 18:
        pm_gc_safepoint();
        break;
    case 19:
        if (pick(w, 16) == 0) {
            pm_gc_collect(2);
            w->collections++;
        } else if (pick(w, 64) == 0) {
            /* detached: other threads' decrefs of this thread's nodes merge in its place */
            cr_assert_eq(pm_domain_detach(), 0);
            w->detaches++;
            sched_yield();
            cr_assert_eq(pm_domain_attach(dom), 0);
        }
        break;
    }
    w->ops++;
}

static long steps_per_thread;
static pthread_barrier_t start;

static void *worker_main(void *arg) {
    worker *w = arg;
    cr_assert_eq(pm_domain_attach(dom), 0);
    pthread_barrier_wait(&start); /* all attached: they run together */
    for (long i = 0; i < steps_per_thread; i++)
        one_step(w);
    for (unsigned r = 0; r < ROOTS; r++)
        set_root(w, r, NULL);
    cr_assert_eq(pm_domain_detach(), 0);
    return NULL;
}

static void run_model(uint64_t seed, long steps, long threshold0) {
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&stripes[i], NULL);
    set = calloc(SET_SIZE, sizeof *set);
    work = calloc(SET_SIZE, sizeof *work);
    cr_assert(set != NULL && work != NULL);
    dom = pm_domain_new_shared();
    cr_assert_not_null(dom);
    cr_assert(pm_domain_is_shared(dom));
    /* the settings are made before the threads start, by a thread attached for it */
    cr_assert_eq(pm_domain_attach(dom), 0);
    cr_assert_eq(pm_gc_callback_add(oracle, NULL), 0);
    cr_assert_eq(pm_gc_set_threshold(threshold0, 5, 5), 0);
    pm_gc_enable();
    cr_assert_eq(pm_domain_detach(), 0);

    steps_per_thread = steps;
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t th[THREADS];
    worker ws[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ws[t] = (worker){.id = t, .rng = seed * 1000003u + (uint64_t)t * 7919u + 1u};
        cr_assert_eq(pthread_create(&th[t], NULL, worker_main, &ws[t]), 0);
    }
    long collections = 0, detaches = 0;
    for (int t = 0; t < THREADS; t++) {
        cr_assert_eq(pthread_join(th[t], NULL), 0);
        collections += ws[t].collections;
        detaches += ws[t].detaches;
    }
    /* the last references are the exchange's; then everything must go */
    cr_assert_eq(pm_domain_attach(dom), 0);
    for (int x = 0; x < EXCHANGE; x++) {
        pm_xdecref(exchange[x]);
        exchange[x] = NULL;
    }
    pm_gc_collect(2);
    cr_assert_eq(atomic_load(&checks_failed), 0, "%ld failures in %ld full-collection checks; first: %s",
                 atomic_load(&checks_failed), atomic_load(&checks_run), failure);
    cr_assert_eq(pm_domain_live_objects(dom), 0, "%zu objects left after the last collection",
                 pm_domain_live_objects(dom));
    cr_assert_eq(pm_gc_callback_remove(oracle, NULL), 0);
    cr_assert_eq(pm_domain_detach(), 0);
    cr_assert_gt(atomic_load(&checks_run), collections / 2,
                 "the oracle ran after %ld full collections of %ld asked for",
                 atomic_load(&checks_run), collections);
    cr_assert_gt(detaches, 0);
    cr_log_info("seed %llu: %ld full collections checked (%ld asked for), %ld detaches, "
                "%ld objects at most", (unsigned long long)seed, atomic_load(&checks_run),
                collections, detaches, atomic_load(&max_live));
    cr_assert_eq(pm_domain_free(dom), 0, "errno %d", errno);
    free(set);
    free(work);
}

/* Steps per thread: fewer under a sanitizer (5-15 times slower), more with
 * PM_SHARED_STEPS for a long run. */
static long model_steps(void) {
    const char *env = getenv("PM_SHARED_STEPS");
    if (env != NULL && atol(env) > 0)
        return atol(env);
    return getenv("PM_SANITIZER") != NULL ? 50000 : 150000;
}

Test(shared, model_seed_1, .timeout = 120) { run_model(1, model_steps(), 200); }
Test(shared, model_seed_2_no_automatic_collection, .timeout = 120) { run_model(2, model_steps(), 0); }

/* ---- single behaviours ---------------------------------------------------------------------- */

static pm_object *handed;
static pthread_barrier_t step;

static void *drop_handed(void *arg) {
    (void)arg;
    cr_assert_eq(pm_domain_attach(dom), 0);
    pthread_barrier_wait(&step); /* 1: the owner handed a reference over */
    pm_decref(handed);           /* not the owner: its count goes below zero, queued */
    cr_assert_eq(pm_domain_detach(), 0);
    pthread_barrier_wait(&step); /* 2 */
    return NULL;
}

Test(shared, a_reference_given_away_is_merged_by_the_owner) {
    dom = pm_domain_new_shared();
    cr_assert_not_null(dom);
    cr_assert_eq(pm_domain_attach(dom), 0);
    pthread_barrier_init(&step, NULL, 2);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drop_handed, NULL), 0);
    handed = pm_new(&gnode_type); /* this thread owns it: its count is the owner's */
    cr_assert_eq(pm_refcount(handed), 1);
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    /* the other thread's decref queued it for this thread: it lives until a safepoint */
    cr_assert_eq(pm_domain_live_objects(dom), 1);
    pm_gc_safepoint();
    cr_assert_eq(pm_domain_live_objects(dom), 0, "the owner merged the queued object, freed");
    pthread_join(th, NULL);
    cr_assert_eq(pm_domain_detach(), 0);
    cr_assert_eq(pm_domain_free(dom), 0);
}

static void *drop_while_owner_detached(void *arg) {
    (void)arg;
    cr_assert_eq(pm_domain_attach(dom), 0);
    pthread_barrier_wait(&step); /* 1: the owner detached */
    pm_decref(handed);           /* the owner cannot run: this thread merges, and frees */
    cr_assert_eq(pm_domain_live_objects(dom), 0);
    cr_assert_eq(pm_domain_detach(), 0);
    return NULL;
}

Test(shared, a_detached_owner_is_merged_for) {
    dom = pm_domain_new_shared();
    cr_assert_eq(pm_domain_attach(dom), 0);
    handed = pm_new(&gnode_type);
    pm_incref(handed);
    pm_decref(handed);
    cr_assert_eq(pm_refcount(handed), 1);
    cr_assert_eq(pm_domain_detach(), 0);
    pthread_barrier_init(&step, NULL, 2);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drop_while_owner_detached, NULL), 0);
    pthread_barrier_wait(&step);
    pthread_join(th, NULL);
    cr_assert_eq(pm_domain_live_objects(dom), 0);
    cr_assert_eq(pm_domain_free(dom), 0);
}

static atomic_int stop_spinning, parked_ok;

static void *take_safepoints(void *arg) {
    (void)arg;
    cr_assert_eq(pm_domain_attach(dom), 0);
    while (!atomic_load(&stop_spinning))
        pm_gc_safepoint();
    atomic_store(&parked_ok, 1);
    cr_assert_eq(pm_domain_detach(), 0);
    return NULL;
}

static void *attach_and_detach(void *arg) {
    (void)arg;
    cr_assert_eq(pm_domain_attach(dom), 0);
    cr_assert_eq(pm_domain_detach(), 0);
    return NULL;
}

Test(shared, collections_stop_the_world_and_skip_detached_threads) {
    dom = pm_domain_new_shared();
    cr_assert_eq(pm_domain_attach(dom), 0);
    /* a thread that attached once and detached (and one that exited) never blocks */
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, attach_and_detach, NULL), 0);
    pthread_join(th, NULL);
    /* a ring of four, shared with a thread that takes safepoints all along */
    gnode *n[4];
    for (int i = 0; i < 4; i++)
        n[i] = (gnode *)pm_new(&gnode_type);
    for (int i = 0; i < 4; i++)
        n[i]->edge[0] = pm_newref(&n[(i + 1) % 4]->base);
    cr_assert_eq(pthread_create(&th, NULL, take_safepoints, NULL), 0);
    for (int i = 0; i < 4; i++)
        pm_decref(&n[i]->base);
    pm_gc_result res = pm_gc_collect(2);
    cr_assert_eq(res.collected, 4, "the cycle is collected with the other thread parked");
    cr_assert_eq(pm_domain_live_objects(dom), 0);
    atomic_store(&stop_spinning, 1);
    pthread_join(th, NULL);
    cr_assert(atomic_load(&parked_ok));
    cr_assert_eq(pm_domain_detach(), 0);
    cr_assert_eq(pm_domain_free(dom), 0);
}

Test(shared, api_refuses_bad_input) {
    errno = 0;
    cr_assert_eq(pm_domain_attach(NULL), -1);
    cr_assert_eq(errno, EINVAL);
    pm_domain *plain = pm_domain_new();
    cr_assert_eq(pm_domain_attach(plain), -1, "a one-thread domain is entered, not attached");
    cr_assert_eq(errno, EINVAL);
    cr_assert_not(pm_domain_is_shared(plain));
    cr_assert_eq(pm_domain_detach(), -1, "not attached");
    cr_assert_eq(errno, EINVAL);
    dom = pm_domain_new_shared();
    pm_domain *other = pm_domain_new_shared();
    cr_assert_eq(pm_domain_attach(dom), 0);
    cr_assert_eq(pm_domain_attach(dom), 0, "attaching nests");
    cr_assert_eq(pm_domain_attach(other), -1);
    cr_assert_eq(errno, EBUSY);
    cr_assert_eq(pm_domain_free(dom), -1, "a thread is attached");
    cr_assert_eq(errno, EBUSY);
    cr_assert_eq(pm_domain_detach(), 0);
    cr_assert_eq(pm_domain_current(), dom, "still attached once");
    cr_assert_eq(pm_domain_detach(), 0);
    cr_assert_eq(pm_domain_current(), pm_domain_default());
    cr_assert_eq(pm_domain_free(dom), 0);
    cr_assert_eq(pm_domain_free(other), 0);
    cr_assert_eq(pm_domain_free(plain), 0);
}

static atomic_int finalized;
static void count_finalize(pm_object *self) {
    (void)self;
    atomic_fetch_add(&finalized, 1);
}
static const pm_type fnode_type = {.name = "fnode", .size = sizeof(gnode),
                                   .ref_offsets = PM_REFS(gnode_refs),
                                   .finalize = count_finalize};

static void *drop_handed_attached(void *arg) {
    (void)arg;
    cr_assert_eq(pm_domain_attach(dom), 0);
    pm_decref(handed); /* the owner's reference, given away: queued for the owner */
    cr_assert_eq(pm_domain_detach(), 0);
    return NULL;
}

Test(shared, finalizers_and_weak_references) {
    dom = pm_domain_new_shared();
    cr_assert_eq(pm_domain_attach(dom), 0);
    handed = pm_new(&fnode_type);
    pm_object *w = pm_weakref_new(handed, NULL, NULL);
    cr_assert_not_null(w);
    pm_object *got = pm_weakref_get(w);
    cr_assert_eq(got, handed);
    pm_decref(got);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drop_handed_attached, NULL), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&finalized), 0, "queued, not yet merged");
    pm_gc_safepoint(); /* the owner merges: the count is 0, the object dies here */
    cr_assert_eq(atomic_load(&finalized), 1);
    cr_assert_null(pm_weakref_get(w), "the weak reference was cleared");
    pm_decref(w);
    /* a cycle of objects with finalizers, collected with the world stopped */
    gnode *a = (gnode *)pm_new(&fnode_type), *b = (gnode *)pm_new(&fnode_type);
    a->edge[0] = pm_newref(&b->base);
    b->edge[0] = pm_newref(&a->base);
    pm_decref(&a->base);
    pm_decref(&b->base);
    cr_assert_eq(pm_gc_collect(2).collected, 2);
    cr_assert_eq(atomic_load(&finalized), 3);
    cr_assert_eq(pm_domain_live_objects(dom), 0);
    cr_assert_eq(pm_domain_detach(), 0);
    cr_assert_eq(pm_domain_free(dom), 0);
}

static void *incref_unattached(void *arg) {
    pm_incref(arg); /* this thread never attached: aborts with a message */
    return NULL;
}

Test(shared, an_unattached_thread_touching_a_shared_object_aborts, .signal = SIGABRT) {
    dom = pm_domain_new_shared();
    cr_assert_eq(pm_domain_attach(dom), 0);
    pm_object *o = pm_new(&gnode_type);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, incref_unattached, o), 0);
    pthread_join(th, NULL);
}
