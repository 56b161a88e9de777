/*
 * test-object.c: objects without the collector: reference counting, creation, types,
 * tracking, the iterative release of long chains, finalizers on refcount death, and misuse
 * (each misuse ends the process with SIGABRT and a message, in the default build).
 */
#include "test-gc-common.h"
#include "test-util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

TestSuite(object, .init = gc_test_setup);

Test(object, refcount_life_cycle) {
    node *n = (node *)pm_new(&fnode_type);
    cr_assert_not_null(n);
    n->canary = CANARY_LIVE;
    cr_assert_eq(pm_refcount(&n->base), 1);
    cr_assert_eq(pm_type_of(&n->base), &fnode_type);
    cr_assert(pm_is_tracked(&n->base), "pm_new tracks a type that can hold references");
    pm_incref(&n->base);
    pm_incref(&n->base);
    cr_assert_eq(pm_refcount(&n->base), 3);
    pm_decref(&n->base);
    pm_decref(&n->base);
    cr_assert_eq(pm_refcount(&n->base), 1);
    cr_assert_eq(finalized, 0);
    cr_assert_eq(released, 0);
    pm_decref(&n->base);
    cr_assert_eq(finalized, 1, "the finalizer runs at refcount death");
    cr_assert_eq(released, 1, "and the object is released at once");
}

Test(object, new_zeroes_and_counts) {
    node *n = (node *)pm_new(&node_type);
    cr_assert_null(n->a);
    cr_assert_null(n->b);
    cr_assert_eq(n->canary, 0);
    cr_assert_eq(n->id, 0);
    long before[3], after[3];
    pm_gc_get_count(before);
    node *m = (node *)pm_new(&node_type);
    pm_gc_get_count(after);
    cr_assert_eq(after[0], before[0] + 1, "a container allocation counts");
    leaf *l = (leaf *)pm_new(&leaf_type);
    long after2[3];
    pm_gc_get_count(after2);
    cr_assert_eq(after2[0], after[0], "an object without references does not");
    n->canary = m->canary = CANARY_LIVE;
    pm_decref(&n->base);
    pm_decref(&m->base);
    pm_decref(&l->base);
    pm_gc_get_count(after);
    cr_assert_eq(after[0], before[0] - 1, "frees count down");
}

Test(object, references_released_with_the_object) {
    node *parent = new_node(1), *child = new_node(2);
    parent->a = pm_newref(&child->base);
    parent->b = &child->base; /* gives away pm_new's reference */
    cr_assert_eq(pm_refcount(&child->base), 2);
    pm_decref(&parent->base);
    cr_assert_eq(released, 2, "dropping the parent drops both of its references");
}

Test(object, clear_and_setref_helpers) {
    node *n = new_node(1), *x = new_node(2), *y = new_node(3);
    n->a = pm_newref(&x->base);
    PM_SETREF(n->a, pm_newref(&y->base));
    cr_assert_eq(n->a, &y->base);
    cr_assert_eq(pm_refcount(&x->base), 1);
    PM_XSETREF(n->b, pm_newref(&x->base));
    cr_assert_eq(pm_refcount(&x->base), 2);
    PM_CLEAR(n->b);
    cr_assert_null(n->b);
    PM_CLEAR(n->b); /* NULL: nothing */
    cr_assert_eq(pm_refcount(&x->base), 1);
    pm_xincref(NULL);
    pm_xdecref(NULL);
    cr_assert_null(pm_xnewref(NULL));
    pm_decref(&x->base);
    pm_decref(&y->base);
    cr_assert_eq(released, 1);
    pm_decref(&n->base);
    cr_assert_eq(released, 3);
}

Test(object, tracking) {
    node *n = (node *)pm_new(&mnode_type);
    n->canary = CANARY_LIVE;
    cr_assert_not(pm_is_tracked(&n->base), "PM_TYPE_TRACK_MANUALLY: pm_new does not track");
    cr_assert_eq(pm_track(&n->base), 0);
    cr_assert(pm_is_tracked(&n->base));
    pm_untrack(&n->base);
    cr_assert_not(pm_is_tracked(&n->base));
    pm_untrack(&n->base); /* untracking an untracked object is fine */
    pm_track(&n->base);
    pm_decref(&n->base); /* a tracked object untracks itself when it dies */
    cr_assert_eq(released, 1);
    leaf *l = (leaf *)pm_new(&leaf_type);
    cr_assert_eq(pm_track(&l->base), 0);
    cr_assert_not(pm_is_tracked(&l->base), "objects without references are never tracked");
    pm_decref(&l->base);
}

Test(object, variable_size) {
    vec *v = (vec *)pm_new_var(&vec_type, 100);
    cr_assert_not_null(v);
    cr_assert_eq(v->n, 100, "pm_new_var stores the length");
    for (size_t i = 0; i < 100; i++)
        cr_assert_null(v->items[i]);
    for (size_t i = 0; i < 100; i++)
        v->items[i] = &new_node(i)->base;
    pm_track(&v->base);
    pm_decref(&v->base);
    cr_assert_eq(released, 100);
    errno = 0;
    cr_assert_null(pm_new_var(&vec_type, SIZE_MAX / 4));
    cr_assert_eq(errno, ENOMEM, "an overflowing size gives ENOMEM");
}

Test(object, list_with_items_pointer) {
    list *l = (list *)pm_new(&list_type);
    for (int i = 0; i < 50; i++) {
        node *n = new_node(i);
        list_append(l, &n->base);
        pm_decref(&n->base);
    }
    pm_track(&l->base);
    pm_object *refs[64];
    cr_assert_eq(pm_gc_get_referents(&l->base, refs, 64), 50);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(refs[i], l->items[i]);
        pm_decref(refs[i]);
    }
    pm_decref(&l->base);
    cr_assert_eq(released, 50);
}

Test(object, malformed_types_rejected) {
    static pm_type tiny = {.name = "tiny", .size = 8};
    static const uint16_t bad_offsets[] = {4, 0};
    static pm_type misaligned = {.name = "misaligned", .size = 64, .ref_offsets = bad_offsets};
    static const uint16_t outside[] = {64, 0};
    static pm_type beyond = {.name = "beyond", .size = 64, .ref_offsets = outside};
    static pm_type contradiction = {.name = "contradiction", .size = sizeof(node),
                                    .flags = PM_TYPE_NO_REFS, .traverse = tnode_traverse};
    pm_type *types[] = {&tiny, &misaligned, &beyond, &contradiction};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        errno = 0;
        cr_assert_null(pm_new(types[i]), "type %s", types[i]->name);
        cr_assert_eq(errno, EINVAL);
    }
}

/* ---- resurrection by a finalizer at refcount death ---- */

static pm_object *saved;
static void save_self(pm_object *self) { saved = pm_newref(self); }

Test(object, finalizer_resurrects_once) {
    on_finalize = save_self;
    node *n = new_node_of(&fnode_type, 7);
    node *child = new_node(8);
    n->a = &child->base;
    pm_decref(&n->base);
    cr_assert_eq(finalized, 1);
    cr_assert_eq(released, 0, "resurrected: not released");
    cr_assert_eq(saved, &n->base);
    cr_assert_eq(n->canary, CANARY_LIVE);
    cr_assert_eq(n->a, &child->base, "and intact");
    cr_assert(pm_is_finalized(&n->base));
    cr_assert(pm_is_tracked(&n->base), "a tracked object stays tracked");
    on_finalize = NULL;
    saved = NULL;
    pm_decref(&n->base);
    cr_assert_eq(finalized, 1, "the finalizer never runs twice");
    cr_assert_eq(released, 2);
}

/* ---- long chains are released iteratively ---- */

#define CHAIN_LENGTH 10000000L

static void *free_chain(void *arg) {
    pm_type *t = arg;
    node *head = new_node_of(t, 0), *cur = head;
    for (long i = 1; i < CHAIN_LENGTH; i++) {
        node *n = new_node_of(t, i);
        cur->a = &n->base;
        cur = n;
    }
    released = 0;
    pm_decref(&head->base);
    return (void *)released;
}

static void chain_on_small_stack(pm_type *t) {
    pthread_attr_t attr;
    pthread_t th;
    void *result;
    cr_assert_eq(pthread_attr_init(&attr), 0);
    cr_assert_eq(pthread_attr_setstacksize(&attr, 64 << 10), 0);
    cr_assert_eq(pthread_create(&th, &attr, free_chain, t), 0);
    cr_assert_eq(pthread_join(th, &result), 0);
    cr_assert_eq((long)result, CHAIN_LENGTH, "every link released");
}

Test(object, ten_million_chain_on_64k_stack, .timeout = 60) {
    chain_on_small_stack(&node_type);
}

Test(object, ten_million_chain_traverse_type_on_64k_stack, .timeout = 60) {
    /* released through the type's own release hook, which decrefs the next link */
    chain_on_small_stack(&tnode_type);
}

/* A type with traverse and no release: the library drops what traverse reports. */
static pm_type bare_type = {.name = "bare", .size = sizeof(node), .traverse = tnode_traverse,
                            .clear = tnode_clear};
Test(object, traverse_without_release_drops_references) {
    node *p = new_node_of(&bare_type, 1), *c = new_node(2);
    p->a = &c->base;
    pm_decref(&p->base);
    cr_assert_eq(released, 1, "the child was dropped through traverse");
}

/* ---- misuse: reported and fatal ---- */

Test(object, decref_below_zero, .signal = SIGABRT) {
    node *n = new_node(1);
    pm_decref(&n->base);
    pm_decref(&n->base); /* already freed: the count goes below zero */
}

Test(object, incref_after_free, .signal = SIGABRT) {
    node *n = new_node(1);
    pm_decref(&n->base);
    pm_incref(&n->base);
}

Test(object, track_after_free, .signal = SIGABRT) {
    node *n = new_node(1);
    pm_decref(&n->base);
    pm_track(&n->base);
}

Test(object, track_twice_is_harmless) {
    node *n = new_node(1); /* pm_new tracked it, new_node tracked it again */
    cr_assert_eq(pm_track(&n->base), 0);
    cr_assert(pm_is_tracked(&n->base));
    cr_assert_eq(pm_gc_get_objects(-1, NULL, 0), 1, "tracked once, whatever the calls");
    pm_decref(&n->base);
    cr_assert_eq(pm_gc_get_objects(-1, NULL, 0), 0);
}

/* Types whose callbacks and layout contradict each other are refused at their first pm_new,
 * with a message naming the type and the reason; every later pm_new fails the same way. */
static int trav_none(pm_object *self, pm_visit_fn visit, void *arg) {
    (void)self, (void)visit, (void)arg;
    return 0;
}
static void clear_none(pm_object *self) { (void)self; }
static void expect_refused(const pm_type *t) {
    errno = 0;
    cr_assert_null(pm_new(t), "type %s must be refused", t->name);
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_null(pm_new(t), "and refused again");
    cr_assert_eq(errno, EINVAL);
}
Test(object, contradictory_types_are_refused) {
    static const pm_type traverse_and_layout = {.name = "traverse+ref_offsets",
        .size = sizeof(node), .traverse = trav_none, .ref_offsets = PM_REFS(node_refs)};
    static const pm_type clear_without_refs = {.name = "clear-without-refs",
        .size = sizeof(node), .clear = clear_none};
    static const pm_type no_refs_with_clear = {.name = "no-refs+clear", .size = sizeof(node),
        .flags = PM_TYPE_NO_REFS, .clear = clear_none};
    expect_refused(&traverse_and_layout);
    expect_refused(&clear_without_refs);
    expect_refused(&no_refs_with_clear);
}

/* A const type works, and the library's record of it does not change what pm_type_of says. */
Test(object, const_type) {
    static const pm_type cnode_type = {.name = "cnode", .size = sizeof(node),
                                       .ref_offsets = PM_REFS(node_refs),
                                       .release = node_release};
    node *n = PM_NEW(node, &cnode_type);
    cr_assert_not_null(n);
    n->canary = CANARY_LIVE;
    cr_assert_eq(pm_type_of(&n->base), &cnode_type);
    cr_assert(pm_is_tracked(&n->base));
    n->a = &PM_NEWREF(n)->base; /* a cycle of one */
    PM_DECREF(n);
    cr_assert_eq(pm_gc_collect(0).collected, 1);
    cr_assert_eq(released, 1);
}

/* In debug mode (PM_GC_DEBUG_CHECKS, the default of debug builds) a collection that meets a
 * reference to a freed object reports it. */
Test(object, collector_finds_use_of_freed_object, .signal = SIGABRT) {
    pm_gc_set_debug(PM_GC_DEBUG_CHECKS);
    node *holder = new_node(1), *victim = new_node(2);
    holder->a = &victim->base; /* ... then dropped without clearing the field: */
    pm_decref(&victim->base);
    pm_gc_collect(0);
}

Test(object, track_with_stale_field_in_debug_mode, .signal = SIGABRT) {
    pm_gc_set_debug(PM_GC_DEBUG_CHECKS);
    node *victim = new_node(2);
    node *n = (node *)pm_new(&mnode_type);
    n->a = &victim->base;
    pm_decref(&victim->base);
    pm_track(&n->base); /* fields must be valid before tracking */
}

/* A missing incref shows when the collector counts: always in debug mode, and without it
 * when the scan meets the object before anything marked it reachable (here: the target is
 * older than its holder). */
static void missing_incref(void) {
    node *target = new_node(2), *holder = new_node(1);
    holder->a = &target->base;
    holder->b = &target->base; /* two references, one counted */
    pm_gc_collect(0);
}
Test(object, collector_finds_missing_incref, .signal = SIGABRT) { missing_incref(); }
Test(object, collector_finds_missing_incref_in_debug_mode, .signal = SIGABRT) {
    pm_gc_set_debug(PM_GC_DEBUG_CHECKS);
    node *holder = new_node(1), *target = new_node(2);
    holder->a = &target->base;
    holder->b = &target->base;
    pm_gc_collect(0);
}

/* The message names the misuse: run it in a child with stderr on a pipe. */
Test(object, misuse_message) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* no Criterion assertion may run here: it would report into the parent's channel */
        dup2(fds[1], 2);
        close(fds[0]);
        leaf *n = (leaf *)pm_new(&leaf_type);
        pm_decref(&n->base);
        pm_decref(&n->base);
        _exit(0);
    }
    close(fds[1]);
    char buf[1024] = {0};
    size_t len = 0;
    ssize_t k;
    while (len < sizeof buf - 1 && (k = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)k;
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    cr_assert(strstr(buf, "pm_decref") && strstr(buf, "freed"), "message: %s", buf);
}

/* ---- the one-thread rule, checked in every build ---- */

static pthread_barrier_t hammer_start;
static _Atomic int hammer_stop;

/* Both threads start together and keep calling until the check fires (the process aborts) or
 * 30 s pass: on a loaded machine two threads may take a while to be inside the library at
 * the same moment, but they will be. */
static void *hammer(void *arg) {
    (void)arg;
    pthread_barrier_wait(&hammer_start);
    while (!atomic_load(&hammer_stop)) {
        node *n = (node *)pm_new(&node_type);
        n->canary = CANARY_LIVE;
        pm_decref(&n->base);
    }
    return NULL;
}

/* The pair of hammering threads, in a child process: exit status NO_OVERLAP if they never
 * overlapped inside the library in 30 s. */
enum { NO_OVERLAP = 5 };
static void hammer_pair(void *arg) {
    (void)arg;
    pthread_t a, b;
    pthread_barrier_init(&hammer_start, NULL, 2);
    pthread_create(&a, NULL, hammer, NULL);
    pthread_create(&b, NULL, hammer, NULL);
    for (int i = 0; i < 300; i++)
        usleep(100 * 1000);
    atomic_store(&hammer_stop, 1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    _exit(NO_OVERLAP);
}

/* The one-thread rule is checked in every build, by a thread-id compare per call: plain loads
 * and stores, not a lock. Two calls that enter at the same instant both pass it, and what they
 * then do to the domain together can crash the process before a later call catches the
 * overlap (a SIGSEGV, or the allocator's report of the damage, in about 1 run in 60 on two
 * cores). So the pair runs in a child, up to five times: the domain's report must come in one
 * of them, and a crash does not count as a report. */
Test(object, two_threads_at_once_detected, .timeout = 240) {
    static pm_child c;
    char how[128];
    for (int attempt = 0; attempt < 5; attempt++) {
        pm_spawn spec = {.fn = hammer_pair, .timeout_s = 45};
        pm_test_spawn(&spec, &c);
        if (!c.timed_out && WIFSIGNALED(c.status) && WTERMSIG(c.status) == SIGABRT &&
            strstr(c.err, "used by two threads at once") != NULL)
            return;
        if (!c.timed_out && WIFEXITED(c.status) && WEXITSTATUS(c.status) == NO_OVERLAP)
            cr_skip_test("the two threads never overlapped inside the library");
    }
    cr_assert_fail("five runs and no report of two threads in one domain; the last one: %s\n"
                   "--- stderr:\n%.2000s", pm_test_describe(&c, how, sizeof how), c.err);
}
