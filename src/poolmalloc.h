/*
 * poolmalloc.h: the public API of poolmalloc.
 *
 * poolmalloc is a pymalloc-style pool allocator for every C program. Small requests come from
 * per-thread size-class pools carved out of 4 MiB arenas; large requests get their own mapping.
 * Linked or preloaded as libpoolmalloc.so it also replaces malloc, free and the rest of glibc's
 * replaceable set; the pm_ functions below are the same allocator under its own names.
 *
 * All pm_ functions are thread-safe and preserve errno except where they report an error
 * through it, as their C counterparts do.
 */
#ifndef POOLMALLOC_H
#define POOLMALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PM_API __attribute__((visibility("default")))
#define PM_MALLOC_ATTRS __attribute__((malloc, warn_unused_result))
#else
#define PM_API
#define PM_MALLOC_ATTRS
#endif

/* ------------------------------------------------------------------------------------------ */
/* Allocation: the semantics are glibc's.                                                     */
/* ------------------------------------------------------------------------------------------ */

/* malloc(0) returns a unique pointer that can be freed. A size no allocator could satisfy
 * returns NULL with errno ENOMEM. Every block is at least 16-byte aligned. */
PM_API void *pm_malloc(size_t size) PM_MALLOC_ATTRS;
/* Zeroed memory; n * size overflowing gives NULL and ENOMEM. */
PM_API void *pm_calloc(size_t n, size_t size) PM_MALLOC_ATTRS;
/* realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and returns NULL (glibc's choice).
 * Large blocks grow in place or move with mremap, without copying. */
PM_API void *pm_realloc(void *p, size_t size) PM_MALLOC_ATTRS;
/* realloc(p, n * size) with an overflow check. */
PM_API void *pm_reallocarray(void *p, size_t n, size_t size) PM_MALLOC_ATTRS;
/* free(NULL) does nothing. A pointer poolmalloc never handed out, or one freed twice, is
 * reported on stderr and the process aborts: it is never trusted. */
PM_API void pm_free(void *p);
/* free with the size the caller asked for (C23 free_sized); the size is checked. */
PM_API void pm_free_sized(void *p, size_t size);
/* Alignment must be a power of two and a multiple of sizeof(void *); EINVAL otherwise. */
PM_API int pm_posix_memalign(void **out, size_t alignment, size_t size);
/* Alignment must be a power of two (any size is accepted, as glibc does); EINVAL otherwise.
 * Alignments up to 16 KiB come from pools, larger ones from their own mapping. */
PM_API void *pm_aligned_alloc(size_t alignment, size_t size) PM_MALLOC_ATTRS;
/* As glibc: an alignment that is not a power of two is rounded up to the next one. */
PM_API void *pm_memalign(size_t alignment, size_t size) PM_MALLOC_ATTRS;
/* Page-aligned allocation; pvalloc rounds the size up to whole pages. */
PM_API void *pm_valloc(size_t size) PM_MALLOC_ATTRS;
PM_API void *pm_pvalloc(size_t size) PM_MALLOC_ATTRS;
/* Bytes usable in the block, at least the size asked for, stable for the block's lifetime and
 * all writable. 0 for NULL. */
PM_API size_t pm_usable_size(const void *p);
/* 1 if p points into memory poolmalloc manages (a pool block or a large block), else 0. */
PM_API int pm_owns(const void *p);
/* Returns free memory to the operating system now, rather than after the purge delay.
 * Returns 1 if any memory was released. */
PM_API int pm_trim(void);

/* ------------------------------------------------------------------------------------------ */
/* Options and statistics. Options are POOLMALLOC_* environment variables read once at start; */
/* `poolmalloc --help` (or POOLMALLOC_HELP=1) lists them with defaults and ranges.            */
/* ------------------------------------------------------------------------------------------ */

/* Process-wide totals, merged from per-thread counters when asked (the fast paths take no lock
 * for them). Fields marked (counted) stay 0 in a library configured with --disable-stats. */
typedef struct pm_stats {
    uint64_t bytes_in_use;          /* small + large blocks handed out and not yet freed */
    uint64_t small_bytes_in_use;    /* block sizes, not requested sizes */
    uint64_t small_blocks_in_use;
    uint64_t large_bytes_in_use;    /* page-rounded mapping sizes */
    uint64_t large_blocks_in_use;
    uint64_t small_bytes_requested; /* (counted) sizes asked for, summed over every call */
    uint64_t small_allocs, small_frees; /* (counted) */
    uint64_t large_allocs, large_frees, large_remaps, large_cache_hits;
    uint64_t large_cached_bytes;    /* freed large mappings kept for reuse */
    uint64_t bytes_mapped;          /* arenas + large mappings (the cache included) */
    uint64_t bytes_resident;        /* the whole process's resident set now */
    uint64_t peak_resident;         /* the process's peak resident set (VmHWM) */
    uint64_t arenas;                /* mapped now */
    uint64_t arenas_mapped, arenas_unmapped; /* ever mapped, returned to the OS */
    uint64_t pools_in_use;
    uint64_t pools_acquired, pools_released;
    uint64_t purges, purged_bytes;  /* free pool memory given back with madvise */
    uint64_t remote_frees;          /* (counted) frees of blocks another thread owns */
    uint64_t heaps_created, heaps_abandoned, heaps_adopted;
} pm_stats_t;

/* One size class. */
typedef struct pm_class_stats_info {
    uint32_t block_size;
    uint32_t pool_bytes;            /* size of the class's largest pool in use (of its first
                                       pools when none is: a thread that takes many pools of
                                       a class gets larger ones) */
    uint64_t pools;                 /* pools in use */
    uint64_t blocks_in_use;
    uint64_t blocks_free;           /* free blocks in those pools */
    uint64_t allocs, frees;         /* (counted) */
    uint64_t bytes_requested;       /* (counted) */
} pm_class_stats_t;

/* Fills *out; returns 0, or -1 with errno EINVAL if out is NULL. */
PM_API int pm_stats_get(pm_stats_t *out);
/* Size class index (1, 2, ...: block sizes ascending) into *out; returns 0, or -1 with errno
 * EINVAL past the last class, so `for (c = 1; pm_stats_get_class(c, &s) == 0; c++)` walks
 * them all. */
PM_API int pm_stats_get_class(unsigned index, pm_class_stats_t *out);
/* The statistics report (a table like CPython's sys._debugmallocstats()) on stderr. */
PM_API void pm_stats_print(void);
/* The same report on fd: as text, or as one line of JSON if json is nonzero. */
PM_API void pm_stats_print_fd(int fd, int json);
/* POOLMALLOC_PROF: writes the sampled heap profile now, to path (pprof's legacy heap text
 * format) and path.live.folded / path.alloc.folded (folded stacks). Returns 0, ENOSYS if
 * POOLMALLOC_PROF is off, EINVAL for an empty path, or the errno of a failed open. */
PM_API int pm_prof_dump(const char *path);
/* The effective options, one NAME=value line each, on fd. */
PM_API void pm_options_print(int fd);
/* Every option with its default, accepted values and a description, on fd. */
PM_API void pm_options_help(int fd);

/*@options-stats-api@*/

/* ------------------------------------------------------------------------------------------ */
/* Objects: reference counting and a generational cycle collector, with CPython's semantics.   */
/* ------------------------------------------------------------------------------------------ */
/*
 * An object is a pool-heap block that starts with a pm_object header. A type is a pm_type
 * descriptor; an instance struct embeds the header as its first member:
 *
 *     typedef struct pair { pm_object base; pm_object *first, *second; } pair;
 *     static const pm_ref_offset pair_refs[] = {offsetof(pair, first), offsetof(pair, second), 0};
 *     static const pm_type pair_type = {.name = "pair", .size = sizeof(pair),
 *                                       .ref_offsets = PM_REFS(pair_refs)};
 *
 *     pair *p = PM_NEW(pair, &pair_type);     // reference count 1, fields zeroed, tracked
 *     p->first = PM_NEWREF(x);                // store a new reference (x: any object struct)
 *     PM_DECREF(p);                           // the last reference: freed at once
 *
 * The PM_ macros (PM_INCREF, PM_DECREF, PM_NEWREF, PM_CLEAR, PM_VISIT...) take a pm_object *
 * or a pointer to any struct whose first member is `pm_object base`, checked at compile time;
 * the pm_ functions take pm_object *.
 *
 * Life cycle. pm_new returns a reference the caller owns. Dropping the last reference runs, at
 * once: the type's finalize (at most once in the object's life, PEP 442; it may resurrect the
 * object by storing a new reference somewhere), the callbacks of weak references to it, the
 * release of its references and its release hook, then frees the memory. This is iterative: a
 * chain of ten million objects is freed in constant stack space (dying objects found while
 * another one is being released wait on a list; CPython's "trashcan" done in the core).
 *
 * The header is 24 bytes (CPython's is 32 for a collected object: 16 of links, 16 of head):
 *   offset  0  the type pointer, with three flag bits in its low bits (finalized, has weak
 *              references, was tracked)
 *   offset  8  the collector word: state (untracked, generation 0-2, frozen, unreachable) and
 *              the object's slot in its generation's table
 *   offset 16  the reference count, signed 64-bit
 * The allocator keeps its free-list link in the first 16 bytes of a freed block; the reference
 * count sits after them and is set to a large negative value when the object is freed, so
 * pm_incref/pm_decref of a freed object, or a decref below zero, aborts with a message (until
 * the block is reused). Generations are tables of object pointers, not linked lists, and the
 * collector keeps one byte per tracked object in a side table (1 byte per 32 bytes of address
 * space holding objects) for its marks and counts: a collection reads objects in table order
 * and touches only that compact table for the objects they refer to.
 *
 * Tracking. Only tracked objects are seen by the collector. pm_new tracks every object of a
 * type that can hold references (traverse, ref_offsets or items): its fields are zeroed, so
 * the collector can walk it at once, and a forgotten pm_track can no longer silently turn
 * cycle collection off (if the generation table cannot grow, pm_new fails with ENOMEM). A type
 * whose traverse needs the object constructed first sets PM_TYPE_TRACK_MANUALLY and calls
 * pm_track once every reference it reports is valid; debug builds, and PM_GC_DEBUG_CHECKS at
 * run time (POOLMALLOC_GC_DEBUG=checks), walk the references at pm_track and abort on one to a
 * freed object. Every reference an object reports must be to an object made by pm_new.
 * Objects of PM_TYPE_NO_REFS types are never tracked (pm_track ignores them).
 *
 * Collection. Three generations, as CPython 3.13: a new tracked object enters generation 0;
 * an allocation that takes the count of container objects allocated minus freed past
 * threshold 0 (2000) collects generation 0; generation 1 is collected instead when the count
 * of generation-0 collections since its last one exceeds threshold 1 (10), that is every 11th
 * time, as in CPython; all three likewise every 11th collection of generation 1, but only
 * when the objects moved to generation 2 since the last full collection exceed 25% of those
 * that survived it (the long-lived heuristic, which keeps the total work linear). Survivors
 * move one generation up. Unreachable objects are handled as CPython does: weak references to
 * them are cleared (before any clear runs), then the callbacks of those weak references that
 * are not garbage themselves run; finalizers run once; objects that a finalizer made
 * reachable again stay alive, intact, with everything they refer to; the rest are cleared,
 * which breaks the cycles, and freed by reference counting.
 * POOLMALLOC_GC_THRESHOLD=a,b,c sets the thresholds, POOLMALLOC_GC=0 disables automatic
 * collection, POOLMALLOC_GC_DEBUG sets the PM_GC_DEBUG_* flags below (the names stats,
 * saveall, leak, checks, or a number).
 *
 * Threads and domains. Objects live in a collector domain: its own generations, thresholds,
 * statistics, collector and weak references, used by one thread at a time (CPython's model:
 * one interpreter, one GIL; PEP 684's per-interpreter GIL for several). A thread's calls go
 * to its current domain: the default domain, unless pm_domain_enter chose another, so a
 * program that never creates a domain sees one process-wide domain. Two libraries in one
 * process each create their own and enter it in their entry points; each thread may also
 * work in a domain of its own, all in parallel. Within a domain, a program that uses it from
 * several threads serializes every object operation (pm_new, pm_incref/pm_decref, pm_track,
 * collections, weak references) with its own lock; handing a domain between threads through
 * that lock is fine, and object memory may be freed by any thread. Objects, and references
 * between objects, may not cross domains. Every build checks the rule at each library call
 * (not in the inline pm_incref/pm_decref): a call records its thread in the domain while it
 * runs, and a call from a second thread meanwhile aborts with a message; a call given an
 * object of another domain aborts with a message. The check is a thread-id compare, no lock
 * or atomic read-modify-write, so an overlap is caught when the calls meet, not always.
 * Objects that several threads use at once live in a shared domain (pm_domain_new_shared,
 * below).
 */
typedef struct pm_object_fields_ {
    uintptr_t pm_typebits_;
    uint64_t pm_gcword_;
    int64_t pm_refcnt_;
} pm_object_fields_;
typedef struct pm_object {
    union {
        struct {
            uintptr_t pm_typebits_;  /* private: use pm_type_of() */
            uint64_t pm_gcword_;     /* private: the collector's */
            int64_t pm_refcnt_;      /* private: use pm_refcount(); changed by pm_incref/pm_decref */
        };
        /* The same words under the name your structs give their header: lets the PM_ macros
         * take a pm_object * exactly as they take a pointer to your struct. */
        pm_object_fields_ base;
    };
} pm_object;

/* A traverse callback calls visit(ref, arg) for each non-NULL reference the object holds and
 * returns the first non-zero result of visit (which stops the traversal early), else 0. */
typedef int (*pm_visit_fn)(pm_object *ref, void *arg);

/* pm_type.flags */
#define PM_TYPE_NO_REFS 0x1u       /* instances hold no references: never tracked or walked */
#define PM_TYPE_ITEMS_POINTER 0x2u /* items_offset holds a pointer to the items, not the items */
#define PM_TYPE_TRACK_MANUALLY 0x4u /* pm_new does not track: call pm_track when constructed */

/* An entry of ref_offsets: the offset of a pm_object * field (0 ends the list). */
typedef uint16_t pm_ref_offset;
/* Use for .ref_offsets: PM_REFS(array) compiles only for an array of pm_ref_offset, so a
 * size_t[] (which the collector would misread) is a compile error, not a warning. */
#define PM_REFS(array) _Generic(&(array)[0], const pm_ref_offset *: (array), \
                                pm_ref_offset *: (array))

/*
 * A type: declare it const. It must live as long as its instances, and stay unchanged: the
 * library checks it at its first pm_new and keeps its own copy of the checked form (a type
 * whose parts contradict each other is rejected then, with a message, and every pm_new of it
 * fails with EINVAL).
 *
 * References are described either by a traverse callback or by a layout the collector walks
 * itself, with no indirect call (faster): ref_offsets lists the offsets of pm_object * fields
 * (0-terminated: offset 0 is the header), and items_offset/length_offset describe an array
 * of pm_object * whose length is the size_t at length_offset: inline at items_offset (a
 * flexible array member, filled by pm_new_var), or pointed to by the field at items_offset
 * with PM_TYPE_ITEMS_POINTER (a growable list). traverse, if set, is used instead.
 */
typedef struct pm_type {
    const char *name;
    size_t size;     /* bytes of an instance, header included: sizeof(your struct) */
    size_t itemsize; /* pm_new_var(type, n) allocates size + n * itemsize */
    unsigned flags;  /* PM_TYPE_* */
    int (*traverse)(pm_object *self, pm_visit_fn visit, void *arg);
    /* Drops the references (setting fields to NULL): the collector's way to break a cycle;
     * the object must stay valid. NULL: the library clears the layout's references itself;
     * a traverse-only type without clear cannot be cleared, so its unreachable cycles are
     * uncollectable (counted as such and kept in pm_gc_garbage). */
    void (*clear)(pm_object *self);
    /* Runs at most once, before the object dies, with the object fully valid (PEP 442). It
     * may store a new reference to the object somewhere: the object then lives on. */
    void (*finalize)(pm_object *self);
    /* Runs once when the object dies, after the library dropped the layout's references (or,
     * for a type with traverse and no release, every reference traverse reports): drop any
     * other reference and free owned buffers. The library frees the object itself. */
    void (*release)(pm_object *self);
    const pm_ref_offset *ref_offsets; /* use PM_REFS(array) */
    uint16_t items_offset, length_offset;
} pm_type;

/* A new object: refcount 1, everything after the header zeroed, tracked if its type can hold
 * references (unless PM_TYPE_TRACK_MANUALLY). NULL with errno ENOMEM when out of memory,
 * EINVAL for a malformed type (with a message on stderr at the first try). May run an
 * automatic collection first. */
PM_API pm_object *pm_new(const pm_type *type);
/* Variable size: type->size + n * type->itemsize bytes; stores n at length_offset if the type
 * has inline items. NULL with ENOMEM when the size overflows. */
PM_API pm_object *pm_new_var(const pm_type *type, size_t n);
/* The same, typed: PM_NEW(pair, &pair_type) is a pair *. */
#define PM_NEW(ctype, type) ((ctype *)pm_new(type))
#define PM_NEW_VAR(ctype, type, n) ((ctype *)pm_new_var((type), (n)))

/* Out-of-line parts of pm_incref/pm_decref: the last reference dropped, an object of a
 * shared domain (biased counting), or a misuse (which aborts with a message). */
PM_API void pm__object_incref_slow(pm_object *o);
PM_API void pm__object_decref_slow(pm_object *o);
PM_API int64_t pm__object_refcount_slow(const pm_object *o);

/* A load, a compare, a branch and a store: the count is written only when it is positive
 * (incref) or above 1 (decref), so an object whose count field is not positive (freed,
 * dying, or of a shared domain) takes the slow path without the field being written. */
static inline void pm_incref(pm_object *o) {
    int64_t rc = o->pm_refcnt_;
    if (__builtin_expect(rc <= 0, 0))
        pm__object_incref_slow(o);
    else
        o->pm_refcnt_ = rc + 1;
}
static inline void pm_decref(pm_object *o) {
    int64_t rc = o->pm_refcnt_;
    if (__builtin_expect(rc <= 1, 0))
        pm__object_decref_slow(o); /* frees it, shared counting, or a misuse */
    else
        o->pm_refcnt_ = rc - 1;
}
static inline void pm_xincref(pm_object *o) { if (o != NULL) pm_incref(o); }
static inline void pm_xdecref(pm_object *o) { if (o != NULL) pm_decref(o); }
/* pm_incref that returns its argument (CPython's Py_NewRef / Py_XNewRef). */
static inline pm_object *pm_newref(pm_object *o) { pm_incref(o); return o; }
static inline pm_object *pm_xnewref(pm_object *o) { pm_xincref(o); return o; }
/* The reference count. For an object of a shared domain, exact in its owner thread or while
 * the world is stopped (a collection's callbacks); a snapshot elsewhere. */
static inline int64_t pm_refcount(const pm_object *o) {
    int64_t rc = o->pm_refcnt_;
    return rc > 0 ? rc : pm__object_refcount_slow(o);
}
/* The type given to pm_new. */
PM_API const pm_type *pm_type_of(const pm_object *o);
#define PM_OBJ(p) ((pm_object *)(p))

#ifndef __cplusplus
/* p as a pm_object *, for p a pm_object * or a pointer to a struct whose first member is
 * `pm_object base`; anything else (void *, a struct without the header first) does not
 * compile. p is evaluated once; NULL stays NULL. */
#define PM_AS_OBJECT(p) ((void)PM_CHECK_HEADER_(p), (pm_object *)(void *)(p))
#define PM_CHECK_HEADER_(p)                                                                   \
    sizeof(struct {                                                                           \
        int pm_unused_;                                                                       \
        _Static_assert(_Generic(&(p)->base, pm_object *: 1, const pm_object *: 1,             \
                                pm_object_fields_ *: 1, const pm_object_fields_ *: 1,         \
                                default: 0),                                                  \
                       "not an object: its first member must be `pm_object base`");           \
        _Static_assert(offsetof(__typeof__(*(p)), base) == 0,                                \
                       "the pm_object header must be the first member");                     \
    })
#else
#define PM_AS_OBJECT(p) (reinterpret_cast<pm_object *>(p))
#endif
#define PM_INCREF(p) pm_incref(PM_AS_OBJECT(p))
#define PM_DECREF(p) pm_decref(PM_AS_OBJECT(p))
#define PM_XINCREF(p) pm_xincref(PM_AS_OBJECT(p))
#define PM_XDECREF(p) pm_xdecref(PM_AS_OBJECT(p))
/* A new reference, of p's own type (Py_NewRef). */
#define PM_NEWREF(p) ((__typeof__(p))pm_newref(PM_AS_OBJECT(p)))
#define PM_XNEWREF(p) ((__typeof__(p))pm_xnewref(PM_AS_OBJECT(p)))
/* Py_VISIT, for traverse callbacks whose parameters are named visit and arg: visits a
 * non-NULL field (any object pointer) and returns from traverse on a non-zero result. */
#define PM_VISIT(field)                                                                       \
    do {                                                                                      \
        if ((field) != NULL) {                                                                \
            int pm_visit_rc_ = visit(PM_AS_OBJECT(field), arg);                               \
            if (pm_visit_rc_ != 0)                                                            \
                return pm_visit_rc_;                                                          \
        }                                                                                     \
    } while (0)

/* Py_CLEAR: set the field (any pointer to an object struct) to NULL, then drop the reference
 * it held; in that order, so that code the decref runs never sees a dangling field. */
#define PM_CLEAR(field)                                                                       \
    do {                                                                                      \
        __typeof__(field) *pm_clear_p_ = &(field);                                            \
        __typeof__(field) pm_clear_old_ = *pm_clear_p_;                                       \
        if (pm_clear_old_ != NULL) {                                                          \
            *pm_clear_p_ = NULL;                                                              \
            pm_decref(PM_AS_OBJECT(pm_clear_old_));                                           \
        }                                                                                     \
    } while (0)
/* Py_SETREF / Py_XSETREF: store a new value (a reference the caller gives away), then drop
 * the old one. */
#define PM_SETREF(field, value)                                                               \
    do {                                                                                      \
        __typeof__(field) *pm_set_p_ = &(field);                                              \
        __typeof__(field) pm_set_old_ = *pm_set_p_;                                           \
        *pm_set_p_ = (value);                                                                 \
        pm_decref(PM_AS_OBJECT(pm_set_old_));                                                 \
    } while (0)
#define PM_XSETREF(field, value)                                                              \
    do {                                                                                      \
        __typeof__(field) *pm_set_p_ = &(field);                                              \
        __typeof__(field) pm_set_old_ = *pm_set_p_;                                           \
        *pm_set_p_ = (value);                                                                 \
        PM_XDECREF(pm_set_old_);                                                              \
    } while (0)

/* Tracking (no-ops for objects that hold no references, and for tracked ones: pm_new tracks).
 * pm_track returns 0, or -1 with errno ENOMEM when its generation's table cannot grow (the
 * object then stays untracked: safe, but its cycles are not collected). */
PM_API int pm_track(pm_object *o);
PM_API void pm_untrack(pm_object *o);
PM_API int pm_is_tracked(const pm_object *o);
/* 1 once the object's finalizer ran (or was due and the object had none), else 0. */
PM_API int pm_is_finalized(const pm_object *o);

/* ---- the collector ---- */
typedef struct pm_gc_result {
    size_t collected;     /* unreachable objects found and freed (or saved, with SAVEALL) */
    size_t uncollectable; /* unreachable objects that could not be cleared (pm_gc_garbage) */
} pm_gc_result;
/* Collects generations 0..generation (0, 1 or 2) now, even when automatic collection is
 * disabled. During a collection (from a finalizer or callback) returns zeros at once. A bad
 * generation gives zeros and errno EINVAL. */
PM_API pm_gc_result pm_gc_collect(int generation);
/* Automatic collection on/off; each returns the previous state (1 enabled, 0 disabled). */
PM_API int pm_gc_enable(void);
PM_API int pm_gc_disable(void);
PM_API int pm_gc_is_enabled(void);
/* Thresholds, as gc.set_threshold: 0 for threshold 0 disables automatic collection.
 * Negative values give -1 and EINVAL. */
PM_API int pm_gc_set_threshold(long threshold0, long threshold1, long threshold2);
PM_API void pm_gc_get_threshold(long out[3]);
/* count[0]: containers allocated minus freed since the last collection; count[1], count[2]:
 * collections of the younger generation since this one was collected (gc.get_count). */
PM_API void pm_gc_get_count(long out[3]);
/* Moves every tracked object to a permanent generation the collector ignores (gc.freeze), for
 * fork-heavy servers: children then never write to those objects' pages for the collector.
 * unfreeze moves them back to the oldest generation. 0, or -1 and ENOMEM. */
PM_API int pm_gc_freeze(void);
PM_API int pm_gc_unfreeze(void);
PM_API size_t pm_gc_get_freeze_count(void);

typedef struct pm_gc_stats {
    uint64_t collections;
    uint64_t collected;
    uint64_t uncollectable;
    uint64_t total_pause_ns; /* summed wall time of this generation's collections */
    uint64_t max_pause_ns;   /* the longest one */
} pm_gc_stats;
/* Per-generation statistics: out[0..2]. */
PM_API void pm_gc_get_stats(pm_gc_stats out[3]);

/* Callbacks at the start and stop of every collection (gc.callbacks). info->generation is
 * set for both; collected/uncollectable at stop. A callback may not collect (pm_gc_collect
 * returns zeros) but may allocate, free and inspect. At most 16; returns 0, or -1 and ENOSPC. */
enum { PM_GC_START = 0, PM_GC_STOP = 1 };
typedef struct pm_gc_info {
    int generation;
    size_t collected, uncollectable;
} pm_gc_info;
typedef void (*pm_gc_callback)(int phase, const pm_gc_info *info, void *arg);
PM_API int pm_gc_callback_add(pm_gc_callback callback, void *arg);
/* Removes one registration of (callback, arg); returns 0, or -1 and ENOENT. */
PM_API int pm_gc_callback_remove(pm_gc_callback callback, void *arg);

/* Debug flags (gc.set_debug): STATS logs each collection on stderr; SAVEALL keeps every
 * unreachable object in pm_gc_garbage instead of freeing it (leak hunting); LEAK also prints
 * each unreachable object found (and implies SAVEALL); CHECKS validates every reference the
 * collector walks and every pm_track (on by default in debug builds). */
#define PM_GC_DEBUG_STATS 0x1
#define PM_GC_DEBUG_SAVEALL 0x2
#define PM_GC_DEBUG_LEAK 0x4
#define PM_GC_DEBUG_CHECKS 0x8
PM_API void pm_gc_set_debug(int flags);
PM_API int pm_gc_get_debug(void);

/* Introspection. Each fills out[0..max) with new references (the caller decrefs them) and
 * returns how many there are in all, which may exceed max. */
/* The references o reports (gc.get_referents). */
PM_API size_t pm_gc_get_referents(pm_object *o, pm_object **out, size_t max);
/* The tracked objects of generation 0, 1 or 2, 3 for the frozen ones, -1 for 0-2 (gc.get_objects). */
PM_API size_t pm_gc_get_objects(int generation, pm_object **out, size_t max);
/* Objects the collector kept: uncollectable ones, and everything with SAVEALL (gc.garbage). */
PM_API size_t pm_gc_garbage(pm_object **out, size_t max);
/* Drops the collector's references to the kept objects (gc.garbage.clear()); returns how many. */
PM_API size_t pm_gc_garbage_clear(void);

/* ---- domains ---- */
typedef struct pm_domain pm_domain;
/* A new domain (up to 31 besides the default one), with the thresholds and flags the
 * environment sets. NULL with ENOMEM, or EAGAIN when 31 exist. */
PM_API pm_domain *pm_domain_new(void);
/* Frees a domain: runs a full collection in it first; -1 and EBUSY if objects of it are
 * still alive (it then stays usable), EINVAL for NULL or the default domain. */
PM_API int pm_domain_free(pm_domain *domain);
/* Makes domain (NULL: the default one) this thread's current domain, for every later call
 * on this thread; returns the previous one, to enter it again when done (as
 * PyThreadState_Swap). Not from inside a library call (a finalizer or callback). */
PM_API pm_domain *pm_domain_enter(pm_domain *domain);
PM_API pm_domain *pm_domain_current(void);
PM_API pm_domain *pm_domain_default(void);
/* Objects of the domain allocated and not yet freed. */
PM_API size_t pm_domain_live_objects(const pm_domain *domain);

/* ---- shared domains: objects that several threads use at once ----
 *
 * pm_domain_new_shared() makes a domain that threads use at the same time, each between
 * pm_domain_attach(domain) and pm_domain_detach() (as CPython's PyThreadState attach and
 * detach); while attached, the domain is the thread's current one.
 *
 * Reference counts are biased (as CPython 3.13's free-threaded build): the thread that
 * created an object counts its references with a plain load and store, other threads with
 * an atomic operation on a second field; when the creator's count reaches zero the two are
 * merged and the object is freed when the merged count is zero. pm_incref/pm_decref work on
 * every object; a shared domain's object takes their out-of-line path (a call: see
 * docs/objects.md for the costs measured). Each object has a 16-byte prefix for its counts.
 *
 * Library calls into a shared domain (pm_new, pm_track, deaths, weak references, the
 * collector) take the domain's lock; finalizers, clear and release callbacks run with it
 * held and must not wait for other threads. Cycle collection stops the world: the
 * collecting thread waits until every other attached thread is parked at a safepoint or
 * detached, collects, and restarts them. Safepoints are pm_gc_safepoint() and the start of
 * pm_new; an attached thread must reach one regularly, and detach around anything that
 * blocks (a lock another attached thread may hold while it waits for a collection, I/O,
 * joining a thread). A detached thread never delays a collection and may not touch the
 * domain's objects. Automatic collections run at the next safepoint of any attached thread.
 * The pm_gc_* settings functions (thresholds, enable, debug, callbacks) are for set-up, not
 * for use while other threads run in the domain.
 */
/* A new shared domain (up to 31 domains besides the default one); NULL and ENOMEM or
 * EAGAIN. pm_domain_free frees it once no thread is attached (EBUSY otherwise). */
PM_API pm_domain *pm_domain_new_shared(void);
PM_API int pm_domain_is_shared(const pm_domain *domain);
/* Attaches this thread to a shared domain, which becomes its current domain; waits while a
 * collection has the world stopped. Nests (each attach needs a detach). Returns 0, or -1
 * with errno EINVAL (not a shared domain), EBUSY (attached to another shared domain) or
 * ENOMEM. A thread that exits attached is detached. */
PM_API int pm_domain_attach(pm_domain *domain);
/* Detaches (the outermost call): merges what other threads queued for this thread, and the
 * thread's previous domain becomes current again. -1 and EINVAL when not attached. */
PM_API int pm_domain_detach(void);
/* Parks here while another thread collects a shared domain this thread is attached to,
 * runs an automatic collection that is due, merges queued objects. Does nothing outside a
 * shared domain, or inside a library call (a finalizer). */
PM_API void pm_gc_safepoint(void);

/* ---- weak references ---- */
/* Called when the referent of weakref dies, with the weak reference (alive for the call) and
 * the data given at creation (may be NULL). Callbacks run only for weak references that are
 * not garbage themselves. */
typedef void (*pm_weakref_callback)(pm_object *weakref, void *data);
/* A new weak reference to target (which must be alive), with an optional callback and its
 * data, any pointer the library does not look at. NULL and ENOMEM on failure. */
PM_API pm_object *pm_weakref_new(pm_object *target, pm_weakref_callback callback, void *data);
/* The same with an object as data: the weak reference holds a strong reference to it (and
 * the collector sees that reference), so the data lives as long as the weak reference. */
PM_API pm_object *pm_weakref_new_object_data(pm_object *target, pm_weakref_callback callback,
                                             pm_object *data);
/* A new strong reference to the referent, or NULL once it died. */
PM_API pm_object *pm_weakref_get(pm_object *weakref);
PM_API int pm_is_weakref(const pm_object *o);
/* Number of weak references to o. */
PM_API size_t pm_weakref_count(const pm_object *o);

/*@object-api@*/

#ifdef __cplusplus
}
#endif
#endif /* POOLMALLOC_H */
