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
/* Alignment must be a power of two (any size is accepted, as glibc does); EINVAL otherwise. */
PM_API void *pm_aligned_alloc(size_t alignment, size_t size) PM_MALLOC_ATTRS;
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
    uint32_t pool_bytes;            /* size of one pool of this class */
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
/* The effective options, one NAME=value line each, on fd. */
PM_API void pm_options_print(int fd);
/* Every option with its default, accepted values and a description, on fd. */
PM_API void pm_options_help(int fd);

/*@options-stats-api@*/

/*@object-api@*/

#ifdef __cplusplus
}
#endif
#endif /* POOLMALLOC_H */
