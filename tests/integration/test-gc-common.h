/*
 * test-gc-common.h: object types shared by the object and collector tests.
 *
 *   node   two references (a, b) described by a layout; counts finalize/release calls and
 *          checks a canary on release, so that a double release or a stray write shows.
 *   mnode  the same, PM_TYPE_TRACK_MANUALLY: pm_new leaves it untracked.
 *   tnode  the same fields with traverse and clear callbacks (no layout).
 *   stuck  traverse but no clear: its unreachable cycles are uncollectable.
 *   vec    a variable-size array of references (inline items).
 *   list   a growable list (items pointer).
 *   leaf   no references (never tracked).
 */
#ifndef TEST_GC_COMMON_H
#define TEST_GC_COMMON_H

#include <criterion/criterion.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "poolmalloc.h"

/* not every test file uses every helper */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"

#define CANARY_LIVE UINT64_C(0x11ce0b1ec7a11ce5)
#define CANARY_DEAD UINT64_C(0xdeadbeefdeadbeef)

typedef struct node {
    pm_object base;
    pm_object *a, *b;
    uint64_t canary;
    long id;
} node;

static long finalized, released;
static void (*on_finalize)(pm_object *self); /* optional extra finalizer behaviour */

static void node_finalize(pm_object *self) {
    cr_assert_eq(((node *)self)->canary, CANARY_LIVE, "finalize of a dead node");
    finalized++;
    if (on_finalize)
        on_finalize(self);
}

static void node_release(pm_object *self) {
    node *n = (node *)self;
    cr_assert_eq(n->canary, CANARY_LIVE, "release of a node twice, or of a corrupt one");
    /* the library dropped the layout's references before calling us */
    cr_assert_null(n->a);
    cr_assert_null(n->b);
    n->canary = CANARY_DEAD;
    released++;
}

static const uint16_t node_refs[] = {offsetof(node, a), offsetof(node, b), 0};
static pm_type node_type = {.name = "node", .size = sizeof(node), .ref_offsets = node_refs,
                            .release = node_release};
static pm_type mnode_type = {.name = "mnode", .size = sizeof(node), .ref_offsets = node_refs,
                             .flags = PM_TYPE_TRACK_MANUALLY, .release = node_release};
static pm_type fnode_type = {.name = "fnode", .size = sizeof(node), .ref_offsets = node_refs,
                             .release = node_release, .finalize = node_finalize};

static int tnode_traverse(pm_object *self, pm_visit_fn visit, void *arg) {
    node *n = (node *)self;
    int e;
    if (n->a != NULL && (e = visit(n->a, arg)) != 0)
        return e;
    if (n->b != NULL && (e = visit(n->b, arg)) != 0)
        return e;
    return 0;
}
static void tnode_clear(pm_object *self) {
    node *n = (node *)self;
    PM_CLEAR(n->a);
    PM_CLEAR(n->b);
}
static void tnode_release(pm_object *self) {
    tnode_clear(self);
    node_release(self);
}
static pm_type tnode_type = {.name = "tnode", .size = sizeof(node), .traverse = tnode_traverse,
                             .clear = tnode_clear, .release = tnode_release};
static pm_type stuck_type = {.name = "stuck", .size = sizeof(node), .traverse = tnode_traverse,
                             .release = tnode_release};

typedef struct vec {
    pm_object base;
    size_t n;
    pm_object *items[];
} vec;
static pm_type vec_type = {.name = "vec", .size = sizeof(vec), .itemsize = sizeof(pm_object *),
                           .items_offset = offsetof(vec, items), .length_offset = offsetof(vec, n)};

typedef struct list {
    pm_object base;
    size_t n, cap;
    pm_object **items;
} list;
static void list_release(pm_object *self) {
    list *l = (list *)self;
    free(l->items);
    l->items = NULL;
}
static pm_type list_type = {.name = "list", .size = sizeof(list), .flags = PM_TYPE_ITEMS_POINTER,
                            .items_offset = offsetof(list, items),
                            .length_offset = offsetof(list, n), .release = list_release};

typedef struct leaf {
    pm_object base;
    long value;
} leaf;
static pm_type leaf_type = {.name = "leaf", .size = sizeof(leaf), .flags = PM_TYPE_NO_REFS};

static node *new_node_of(pm_type *t, long id) {
    node *n = (node *)pm_new(t);
    cr_assert_not_null(n);
    n->canary = CANARY_LIVE;
    n->id = id;
    cr_assert_eq(pm_track(&n->base), 0);
    return n;
}
static node *new_node(long id) { return new_node_of(&node_type, id); }

/* Appends a new reference to o. */
static void list_append(list *l, pm_object *o) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4;
        l->items = realloc(l->items, l->cap * sizeof *l->items);
        cr_assert_not_null(l->items);
    }
    l->items[l->n++] = pm_newref(o);
}

/* A ring of n objects of type t (each refers to the next by a), all tracked; returns the
 * first, with the only external reference (the caller's). */
static node *make_ring(pm_type *t, long n, long first_id) {
    node *first = new_node_of(t, first_id), *prev = first;
    for (long i = 1; i < n; i++) {
        node *x = new_node_of(t, first_id + i);
        prev->a = &x->base; /* takes pm_new's reference */
        prev = x;
    }
    prev->a = pm_newref(&first->base);
    return first;
}

/* Tests start from a known collector state, whatever the environment says. */
static void gc_test_setup(void) {
    pm_gc_disable();
    pm_gc_set_threshold(2000, 10, 10);
    pm_gc_set_debug(0);
    pm_gc_collect(2);
    finalized = released = 0;
    on_finalize = NULL;
}

#endif /* TEST_GC_COMMON_H */
