/*
 * gc.h: what the collector's files (gc-mark.c, gc-collect.c, gc-finalize.c, gc-api.c)
 * share. The phases of a collection, in order:
 *   gc-mark.c      steps 1-2: count internal references, mark what is reachable
 *   gc-collect.c   step 3: sweep survivors up a generation and garbage into U; the
 *                  collection itself, its triggers and the shrinking of its tables
 *   gc-finalize.c  step 4: weak references, finalizers, resurrection, clearing
 *   gc-api.c       the public pm_gc_* functions
 */
#ifndef PM_GC_H
#define PM_GC_H

#include "object.h"
#include "gc-prefetch.h"

PM_INLINE uint8_t with_scratch(unsigned v, unsigned scr) { return (uint8_t)((v & 7u) | (scr << 3)); }
PM_INLINE size_t table_live(const pm_gc_table *t) { return t->len - t->holes; }
PM_INLINE unsigned clean_scr(void) { return pm_scr_codes(pm_gc.epoch).clean; }

/* The side byte of an object, with the map in a local (walks keep it in a register: a
 * global would be reloaded after every byte store). Every object's region has a chunk. */
PM_INLINE uint8_t *side_known(const uintptr_t *top, const pm_object *x) {
    uintptr_t a = (uintptr_t)x;
    return (uint8_t *)(top[a >> PM_SIDE_REGION_SHIFT] + (a >> PM_SIDE_SHIFT));
}

/* Appends x to a table whose room was reserved. */
PM_INLINE void move_to(unsigned state, pm_object *x) {
    pm_gc_table *t = &pm_gc.table[state];
    size_t slot = t->len++;
    t->items[slot] = x;
    pm_obj_set_place(x, state, slot);
    *pm_side_of(x) = (uint8_t)(state | clean_scr() << 3);
}

PM_INLINE const char *name_of(const pm_object *o) {
    const pm_type *t = pm_obj_type(o);
    return t->name ? t->name : "?";
}

/* gc-mark.c */
/* Steps 1 and 2 over the tables of states lo..hi (the set); on return every object of the
 * set is DONE (reachable) or TENTATIVE (unreachable); returns how many are TENTATIVE. */
PM_HIDDEN size_t pm_gc_find_reachable(unsigned lo, unsigned hi);
/* Marks DONE every object of U that an object of a type with no way to clear reaches
 * (those objects included); the rest of U is left TENTATIVE. */
PM_HIDDEN void pm_gc_mark_from_unclearable(void);

/* gc-collect.c */
/* Moves the objects of U whose scratch is `keep` to dest (room reserved), calling kept()
 * for each; the rest stay in U, packed, with a clean byte. Returns how many moved. */
PM_HIDDEN size_t pm_gc_split_unreachable(unsigned dest, unsigned keep, void (*kept)(pm_object *));
/* Moves the live objects of table `from` to the end of table `to` (room reserved). */
PM_HIDDEN void pm_gc_move_table(unsigned from, unsigned to);
/* One collection of generations 0..g. */
PM_HIDDEN pm_gc_result pm_gc_collect_now(int g);

/* gc-finalize.c */
/* Step 4 on the unreachable table U: counts into res what it frees or keeps. */
PM_HIDDEN void pm_gc_handle_unreachable(unsigned dest, pm_gc_result *res);

#endif /* PM_GC_H */
