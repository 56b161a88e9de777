/*
 * core-iface.h: everything the object layer takes from the allocator core beyond the public
 * allocator API of poolmalloc.h (pm_malloc, pm_calloc, pm_realloc, pm_free).
 *
 * The object layer includes this header and never src/internal.h. The core keeps these
 * functions (os.c, print.c, alloc.c); src/objects-iface.c, the one file that sees both
 * headers, lets the compiler check that the declarations below match the core's and reads
 * the collector's options for the layer.
 */
#ifndef PM_OBJECTS_CORE_IFACE_H
#define PM_OBJECTS_CORE_IFACE_H

#include "poolmalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef PM_DEBUG
#define PM_DEBUG 0
#endif
#ifndef PM_HIDDEN
#define PM_HIDDEN __attribute__((visibility("hidden")))
#endif
#ifndef PM_LIKELY
#define PM_LIKELY(x) __builtin_expect(!!(x), 1)
#define PM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#endif
#ifndef PM_NOINLINE
#define PM_NOINLINE __attribute__((noinline))
#define PM_COLD __attribute__((cold, noinline))
#define PM_INLINE static inline __attribute__((always_inline))
#define PM_TLS __thread __attribute__((tls_model("initial-exec")))
#define PM_NORETURN __attribute__((noreturn))
#endif
#ifndef PM_BIG_BSS /* big zero-initialised arrays after the small variables: see src/internal.h */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__clang__)
#define PM_BIG_BSS __attribute__((section(".lbss")))
#else
#define PM_BIG_BSS
#endif
#endif

/* Object addresses fit in this many bits (user space on x86-64 and arm64, 4-level paging). */
#define PM_OBJ_ADDRESS_BITS 47

/* Start-up of the core (idempotent, never allocates). */
PM_HIDDEN void pm_init(void);

/* Memory straight from the system, for the side table. */
PM_HIDDEN void *pm_os_map_aligned(size_t size, size_t align); /* NULL on failure */
PM_HIDDEN void *pm_os_reserve(size_t size);                   /* NORESERVE, lazily backed */
PM_HIDDEN bool pm_os_unmap(void *p, size_t size);         /* false: kept (purged) */
PM_HIDDEN void pm_os_purge(void *p, size_t size); /* contents discarded (read back as 0) */

/* Messages without allocating (print.c). */
PM_HIDDEN int pm_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
PM_HIDDEN void pm_fdprintf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
PM_HIDDEN void pm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
PM_HIDDEN PM_NORETURN void pm_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The collector's settings from the environment (POOLMALLOC_GC_THRESHOLD, POOLMALLOC_GC,
 * POOLMALLOC_GC_DEBUG), read once at the domain's start (objects-iface.c). */
typedef struct pm_gc_settings {
    long threshold[3];
    bool enabled;
    long debug;
} pm_gc_settings;
PM_HIDDEN void pm_gc_settings_get(pm_gc_settings *out);

#endif /* PM_OBJECTS_CORE_IFACE_H */
