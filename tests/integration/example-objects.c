/*
 * example-objects.c: a tiny object system on poolmalloc's object API: strings, lists and
 * maps of objects. It builds a social graph full of cycles, drops it, lets the cycle
 * collector reclaim it, and prints what the collector did.
 *
 *   cc -Wall -Werror example-objects.c -lpoolmalloc && ./a.out
 *
 * Types are const; every struct starts with `pm_object base`, so the PM_ macros take the
 * typed pointers (PM_DECREF(l), PM_VISIT(m->keys[i])) and reject anything else at compile time.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "poolmalloc.h"

/* ---- str: holds no references, so it is never tracked ---- */
typedef struct str {
    pm_object base;
    size_t len;
    char text[];
} str;
static const pm_type str_type = {.name = "str", .size = sizeof(str), .itemsize = 1,
                                 .flags = PM_TYPE_NO_REFS};

static str *str_new(const char *s) {
    size_t n = strlen(s);
    str *o = PM_NEW_VAR(str, &str_type, n + 1);
    o->len = n;
    memcpy(o->text, s, n + 1);
    return o;
}

/* ---- list: a growable array of references, described by a layout (no callbacks) ---- */
typedef struct list {
    pm_object base;
    size_t len, cap;
    pm_object **items;
} list;
static void list_release(pm_object *self) { free(((list *)self)->items); }
static const pm_type list_type = {.name = "list", .size = sizeof(list),
                                  .flags = PM_TYPE_ITEMS_POINTER,
                                  .items_offset = offsetof(list, items),
                                  .length_offset = offsetof(list, len), .release = list_release};

/* pm_new tracks it: its fields are zero, a valid (empty) state for the collector */
static list *list_new(void) { return PM_NEW(list, &list_type); }
static void list_append(list *l, pm_object *item) {
    if (l->len == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4;
        l->items = realloc(l->items, l->cap * sizeof *l->items);
    }
    l->items[l->len++] = PM_NEWREF(item);
}

/* ---- map: string keys to objects, with traverse/clear callbacks ---- */
typedef struct map {
    pm_object base;
    size_t len, cap;
    str **keys;
    pm_object **values;
} map;

static int map_traverse(pm_object *self, pm_visit_fn visit, void *arg) {
    map *m = (map *)self;
    for (size_t i = 0; i < m->len; i++) {
        PM_VISIT(m->keys[i]);
        PM_VISIT(m->values[i]);
    }
    return 0;
}
static void map_clear(pm_object *self) {
    map *m = (map *)self;
    size_t n = m->len;
    m->len = 0; /* first: code run by the decrefs sees an empty map */
    for (size_t i = 0; i < n; i++) {
        PM_CLEAR(m->keys[i]);
        PM_CLEAR(m->values[i]);
    }
}
static void map_release(pm_object *self) {
    map_clear(self);
    free(((map *)self)->keys);
    free(((map *)self)->values);
}
static const pm_type map_type = {.name = "map", .size = sizeof(map), .traverse = map_traverse,
                                 .clear = map_clear, .release = map_release};

static map *map_new(void) { return PM_NEW(map, &map_type); }
static void map_set(map *m, const char *key, pm_object *value) {
    for (size_t i = 0; i < m->len; i++)
        if (strcmp(m->keys[i]->text, key) == 0) {
            PM_SETREF(m->values[i], PM_NEWREF(value));
            return;
        }
    if (m->len == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 4;
        m->keys = realloc(m->keys, m->cap * sizeof *m->keys);
        m->values = realloc(m->values, m->cap * sizeof *m->values);
    }
    m->keys[m->len] = str_new(key);
    m->values[m->len++] = PM_NEWREF(value);
}
static pm_object *map_get(map *m, const char *key) {
    for (size_t i = 0; i < m->len; i++)
        if (strcmp(m->keys[i]->text, key) == 0)
            return m->values[i]; /* borrowed */
    return NULL;
}

/* ---- a person: a map with a name and a list of friends; friends are mutual: cycles ---- */
static map *person_new(const char *name) {
    map *p = map_new();
    str *s = str_new(name);
    list *friends = list_new();
    map_set(p, "name", &s->base);
    map_set(p, "friends", &friends->base);
    PM_DECREF(s);
    PM_DECREF(friends);
    return p;
}
static void befriend(map *a, map *b) {
    list_append((list *)map_get(a, "friends"), &b->base);
    list_append((list *)map_get(b, "friends"), &a->base);
}

static int farewells;
static void farewell(pm_object *weakref, void *data) {
    (void)weakref;
    farewells++;
    if (farewells == 1)
        printf("weak reference callback: %s is gone\n", ((str *)data)->text);
}

/* Is the weak reference's referent alive? (get gives a new reference: drop it) */
static const char *status(pm_object *weakref) {
    pm_object *o = pm_weakref_get(weakref);
    pm_xdecref(o);
    return o != NULL ? "alive" : "cleared";
}

static void print_stats(void) {
    pm_gc_stats st[3];
    pm_gc_get_stats(st);
    for (int g = 0; g < 3; g++)
        printf("generation %d: %llu collections, %llu collected, %llu uncollectable, "
               "pause total %llu us, longest %llu us\n", g,
               (unsigned long long)st[g].collections, (unsigned long long)st[g].collected,
               (unsigned long long)st[g].uncollectable,
               (unsigned long long)(st[g].total_pause_ns / 1000),
               (unsigned long long)(st[g].max_pause_ns / 1000));
}

int main(void) {
    enum { PEOPLE = 1000 };
    pm_gc_disable(); /* collect by hand first, to show each step */

    list *town = list_new();
    for (int i = 0; i < PEOPLE; i++) {
        char name[32];
        snprintf(name, sizeof name, "person-%d", i);
        map *p = person_new(name);
        list_append(town, &p->base);
        PM_DECREF(p);
    }
    for (int i = 0; i < PEOPLE; i++) /* everyone knows the next two: a web of cycles */
        for (int k = 1; k <= 2; k++)
            befriend((map *)town->items[i], (map *)town->items[(i + k) % PEOPLE]);

    /* a weak reference to the first person, with a callback; its data, a str object, is
     * kept alive by the weak reference */
    pm_object *first = town->items[0];
    str *label = str_new("person-0");
    pm_object *watch = pm_weakref_new_object_data(first, farewell, &label->base);
    PM_DECREF(label);

    long count[3];
    pm_gc_get_count(count);
    printf("built %d people: %zu tracked objects, allocation count %ld\n", PEOPLE,
           pm_gc_get_objects(-1, NULL, 0), count[0]);
    pm_gc_result r = pm_gc_collect(2);
    printf("while the town is referenced: collected %zu\n", r.collected);

    PM_DECREF(town); /* the town list goes at once; the people keep each other alive */
    printf("after dropping the town: %zu tracked objects remain, weakref %s\n",
           pm_gc_get_objects(-1, NULL, 0), status(watch));
    r = pm_gc_collect(2);
    printf("full collection: collected %zu objects (maps and lists; their strings went by "
           "refcounting), %zu uncollectable\n", r.collected, r.uncollectable);
    printf("weakref now %s, %d callback(s)\n", status(watch), farewells);
    pm_decref(watch);

    /* automatic collection: the same churn with the collector on */
    pm_gc_enable();
    for (int round = 0; round < 5000; round++) {
        map *a = person_new("a"), *b = person_new("b");
        befriend(a, b);
        PM_DECREF(a);
        PM_DECREF(b);
    }
    pm_gc_collect(2);
    printf("after 5000 rounds of two friends dropped: %zu tracked objects remain\n",
           pm_gc_get_objects(-1, NULL, 0));
    print_stats();
    return 0;
}
