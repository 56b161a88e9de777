/*
 * preload.c: the interposition shim. Linked into libpoolmalloc.so (and only there), it gives
 * every program that loads the library, by LD_PRELOAD or by linking it, poolmalloc in place of
 * glibc's malloc.
 *
 * What it exports, and why each group is here (see interposer-notes.md in the team's notes):
 *   - the C replaceable set: malloc, free, calloc, realloc, reallocarray, posix_memalign,
 *     aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, free_sized,
 *     free_aligned_sized and the obsolete cfree;
 *   - glibc's __libc_* entry points, because glibc itself allocates through them in places:
 *     left to glibc, their blocks would later reach our free() as foreign pointers;
 *   - mallopt, malloc_trim, mallinfo, mallinfo2 and malloc_stats, which would otherwise act on
 *     glibc's idle heap and report nonsense;
 *   - every C++ replaceable operator new/delete, written in C under their Itanium-mangled
 *     names, so the library needs no libstdc++ and C++ programs skip one call layer.
 * Nothing else leaves the library but the pm_ API (-fvisibility=hidden elsewhere).
 *
 * The shim adds no state of its own: start-up before our constructor, the recursion guard,
 * fork handlers and thread exit are the core's business (alloc.c, heap.c). Every entry point
 * here works on first use because the core's paths do.
 *
 * errno: every entry point preserves it except where it reports an error through it, as glibc
 * does. free() in particular never changes it (POSIX 2024 requires it; programs rely on it).
 */
#include "internal.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>

#define PM_EXPORT __attribute__((visibility("default")))

/* pm_malloc_inline's slow path (pm_malloc_slow) sets ENOMEM when it fails, so malloc is the
 * inline fast path and nothing more, exactly as pm_malloc in alloc.c. */
PM_INLINE void *shim_malloc(size_t size) {
    return pm_malloc_inline(size);
}

/* ============================================================================================
 * The C replaceable set
 * ========================================================================================== */

PM_EXPORT void *malloc(size_t size) {
    return shim_malloc(size);
}

PM_EXPORT void free(void *p) {
    pm_free_inline(p);
}

/* Obsolete (SunOS); glibc dropped its declaration but old binaries still call it. */
PM_EXPORT void cfree(void *p);
PM_EXPORT void cfree(void *p) {
    pm_free_inline(p);
}

PM_EXPORT void *calloc(size_t n, size_t size) {
    return pm_calloc(n, size);
}

PM_EXPORT void *realloc(void *p, size_t size) {
    return pm_realloc(p, size);
}

PM_EXPORT void *reallocarray(void *p, size_t n, size_t size) {
    return pm_reallocarray(p, n, size);
}

PM_EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
    return pm_posix_memalign(out, alignment, size);
}

PM_EXPORT void *aligned_alloc(size_t alignment, size_t size) {
    return pm_aligned_alloc(alignment, size);
}

PM_EXPORT void *memalign(size_t alignment, size_t size) {
    return pm_memalign(alignment, size);
}

PM_EXPORT void *valloc(size_t size) {
    return pm_valloc(size);
}

PM_EXPORT void *pvalloc(size_t size) {
    return pm_pvalloc(size);
}

PM_EXPORT size_t malloc_usable_size(void *p) {
    return pm_usable_size(p);
}

/* C23. glibc 2.36 does not declare them yet; programs built against newer headers call them. */
PM_EXPORT void free_sized(void *p, size_t size);
PM_EXPORT void free_aligned_sized(void *p, size_t alignment, size_t size);

PM_EXPORT void free_sized(void *p, size_t size) {
    pm_free_sized(p, size);
}

/* An aligned block is found by its address like any other; the alignment adds nothing that
 * the size check of pm_free_sized needs. */
PM_EXPORT void free_aligned_sized(void *p, size_t alignment, size_t size) {
    (void)alignment;
    pm_free_sized(p, size);
}

/* ============================================================================================
 * glibc's internal names. Aliases, not wrappers: same code, one less call.
 * ========================================================================================== */

/* copy(): the alias gets the target's attributes (malloc, alloc_size, nothrow...) as declared
 * by glibc's headers; gcc warns about an alias with fewer. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9
#define PM_ALIAS(target) __attribute__((alias(#target), copy(target), visibility("default")))
#else
#define PM_ALIAS(target) __attribute__((alias(#target), visibility("default")))
#endif

void *__libc_malloc(size_t size) PM_ALIAS(malloc);
void __libc_free(void *p) PM_ALIAS(free);
void *__libc_calloc(size_t n, size_t size) PM_ALIAS(calloc);
void *__libc_realloc(void *p, size_t size) PM_ALIAS(realloc);
void *__libc_memalign(size_t alignment, size_t size) PM_ALIAS(memalign);
void *__libc_valloc(size_t size) PM_ALIAS(valloc);
void *__libc_pvalloc(size_t size) PM_ALIAS(pvalloc);

/* ============================================================================================
 * Tuning and statistics, with glibc's signatures and poolmalloc's meaning
 * ========================================================================================== */

/* glibc's M_MXFAST limit (80 * sizeof(size_t) / 4): values it would reject, we reject too. */
#define GLIBC_MAX_FAST_SIZE (80 * sizeof(size_t) / 4)
#define PM_MMAP_THRESHOLD_MIN ((size_t)1 << 10)

/* Returns 1 if the parameter was accepted, 0 if its value was rejected, as glibc does.
 * Only M_MMAP_THRESHOLD changes poolmalloc's behaviour: requests above it go to their own
 * mapping. poolmalloc's pools end at 128 KiB, so the value must lie in 1 KiB..128 KiB (glibc
 * takes up to 32 MiB; a larger value cannot be honoured here and is refused). The other
 * parameters tune glibc's heap structure (trim and top pad, arenas, mmap count, fastbins,
 * checking) which has no counterpart here: they are accepted and have no effect, so a program
 * that sets them keeps running as before. */
PM_EXPORT int mallopt(int param, int value) {
    pm_init(); /* options are read at initialisation: a value set before would be overwritten */
    switch (param) {
    case M_MMAP_THRESHOLD:
        if (value < 0 || (size_t)value < PM_MMAP_THRESHOLD_MIN ||
            (size_t)value > PM_MAX_CLASS_SIZE)
            return 0;
        pm_opt.mmap_threshold = (size_t)value;
        return 1;
    case M_MXFAST:
        return value >= 0 && (size_t)value <= GLIBC_MAX_FAST_SIZE;
    default:
        return 1;
    }
}

/* glibc returns 1 if memory was released; so does pm_trim. The pad has no meaning here: a
 * thread's current pools always stay. */
PM_EXPORT int malloc_trim(size_t pad) {
    (void)pad;
    return pm_trim();
}

/* Field meanings follow glibc's manual, mapped onto poolmalloc's statistics (pm_stats_get):
 *   arena     bytes mapped for arenas (glibc: non-mmapped space from the OS)
 *   uordblks  bytes in pool blocks handed out (block sizes) (glibc: in use outside mmap)
 *   fordblks  the rest of the arenas: free blocks, free pools, arena headers
 *   hblks     large blocks in use, each its own mapping (glibc: mmapped chunks)
 *   hblkhd    bytes in them, page-rounded
 *   keepcost  freed large mappings kept for reuse: what malloc_trim gives back at once
 * As in glibc, the bytes a program has in use are uordblks + hblkhd. The counts of free
 * chunks (ordblks, smblks) and usmblks/fsmblks have no counterpart and stay 0. */
PM_EXPORT struct mallinfo2 mallinfo2(void) {
    int saved = errno;
    pm_stats_t st;
    pm_stats_get(&st);
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    mi.arena = (size_t)(st.arenas * pm_opt.arena_size);
    mi.uordblks = (size_t)st.small_bytes_in_use;
    mi.fordblks = mi.arena > mi.uordblks ? mi.arena - mi.uordblks : 0;
    mi.hblks = (size_t)st.large_blocks_in_use;
    mi.hblkhd = (size_t)st.large_bytes_in_use;
    mi.keepcost = (size_t)st.large_cached_bytes;
    errno = saved;
    return mi;
}

/* The old interface has int fields; glibc truncates, we saturate so a large heap does not
 * read as a negative or tiny one. */
static int shim_clamp_int(size_t v) {
    return v > (size_t)__INT_MAX__ ? __INT_MAX__ : (int)v;
}

PM_EXPORT struct mallinfo mallinfo(void) {
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo mi;
    memset(&mi, 0, sizeof mi);
    mi.arena = shim_clamp_int(m2.arena);
    mi.ordblks = shim_clamp_int(m2.ordblks);
    mi.smblks = shim_clamp_int(m2.smblks);
    mi.hblks = shim_clamp_int(m2.hblks);
    mi.hblkhd = shim_clamp_int(m2.hblkhd);
    mi.usmblks = shim_clamp_int(m2.usmblks);
    mi.fsmblks = shim_clamp_int(m2.fsmblks);
    mi.uordblks = shim_clamp_int(m2.uordblks);
    mi.fordblks = shim_clamp_int(m2.fordblks);
    mi.keepcost = shim_clamp_int(m2.keepcost);
    return mi;
}

/* glibc prints its statistics on stderr; so do we: poolmalloc's full report, written
 * without allocating. */
PM_EXPORT void malloc_stats(void) {
    int saved = errno;
    pm_stats_print();
    errno = saved;
}

/* ============================================================================================
 * C++ operator new and delete, in C
 *
 * A failing operator new calls the installed std::new_handler and retries, until the handler
 * is gone; then it throws std::bad_alloc. Both come from libstdc++, which this library does not
 * link: weak references find it when the program was linked with it, and dlsym finds it when
 * it came later with dlopen (a C++ extension loaded into Python, say). dlsym may allocate, but
 * this is a failure path outside the allocator, with no lock held. A process with no
 * libstdc++ at all cannot have installed a handler or a catch block, so aborting with a
 * message is all that is left.
 * The exception unwinds through this C frame: gcc emits unwind tables for C on the targets we
 * support (x86-64, arm64), and the frame needs no cleanup.
 *
 * The nothrow forms return NULL without consulting the handler: a handler may throw, and C
 * code cannot catch an exception to turn it back into NULL as libstdc++'s nothrow new does.
 * ========================================================================================== */

typedef void (*shim_new_handler)(void);
typedef shim_new_handler (*shim_get_new_handler_fn)(void);
typedef void (*shim_throw_fn)(void);
extern shim_new_handler _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void _ZSt17__throw_bad_allocv(void) __attribute__((weak, noreturn));
/* Weak too: in libc from glibc 2.34, in libdl (maybe not loaded) before. */
extern void *dlsym(void *handle, const char *name) __attribute__((weak));

/* A libstdc++ function: the weak reference if it was bound at load time, else a lookup. */
static void *shim_cxx_function(void *weak_ref, const char *name) {
    if (weak_ref != NULL)
        return weak_ref;
    return dlsym != NULL ? dlsym(RTLD_DEFAULT, name) : NULL;
}

static PM_NORETURN PM_COLD void shim_bad_alloc(size_t size, size_t alignment) {
    shim_throw_fn throw_bad_alloc = (shim_throw_fn)shim_cxx_function(
        (void *)_ZSt17__throw_bad_allocv, "_ZSt17__throw_bad_allocv");
    if (throw_bad_alloc != NULL)
        throw_bad_alloc();
    pm_fatal("operator new(%zu, alignment %zu) failed and std::bad_alloc cannot be thrown "
             "(libstdc++ is not loaded)",
             size, alignment);
}

static shim_new_handler shim_current_new_handler(void) {
    shim_get_new_handler_fn get = (shim_get_new_handler_fn)shim_cxx_function(
        (void *)_ZSt15get_new_handlerv, "_ZSt15get_new_handlerv");
    return get != NULL ? get() : NULL;
}

/* Cold path of the throwing forms: the first attempt failed. */
static PM_COLD void *shim_new_retry(size_t size, size_t alignment) {
    for (;;) {
        shim_new_handler handler = shim_current_new_handler();
        if (handler == NULL)
            shim_bad_alloc(size, alignment);
        handler(); /* frees memory, throws, or ends the program */
        void *p = alignment <= PM_MIN_ALIGN ? pm_malloc_inline(size)
                                            : pm_aligned_alloc(alignment, size);
        if (p != NULL)
            return p;
    }
}

PM_INLINE void *shim_new(size_t size) {
    void *p = pm_malloc_inline(size);
    return PM_LIKELY(p != NULL) ? p : shim_new_retry(size, PM_MIN_ALIGN);
}

PM_INLINE void *shim_new_nothrow(size_t size) {
    return shim_malloc(size);
}

/* The alignment is std::align_val_t, a power of two by the language's rules; anything else
 * makes pm_aligned_alloc fail, which ends in bad_alloc rather than a misaligned block. */
PM_INLINE void *shim_new_aligned(size_t size, size_t alignment) {
    if (alignment <= PM_MIN_ALIGN)
        return shim_new(size);
    int saved = errno;
    void *p = pm_aligned_alloc(alignment, size);
    errno = saved;
    return PM_LIKELY(p != NULL) ? p : shim_new_retry(size, alignment);
}

PM_INLINE void *shim_new_aligned_nothrow(size_t size, size_t alignment) {
    if (alignment <= PM_MIN_ALIGN)
        return shim_malloc(size);
    return pm_aligned_alloc(alignment, size);
}

/* Sizes and alignments given to delete are hints we do not need: the block knows its own. */
#define SHIM_NOTHROW const void * /* const std::nothrow_t &, never read */

/* Prototypes (the names are C++'s, the calling convention is the same). */
PM_EXPORT void *_Znwm(size_t size);
PM_EXPORT void *_Znam(size_t size);
PM_EXPORT void *_ZnwmRKSt9nothrow_t(size_t size, SHIM_NOTHROW nt);
PM_EXPORT void *_ZnamRKSt9nothrow_t(size_t size, SHIM_NOTHROW nt);
PM_EXPORT void *_ZnwmSt11align_val_t(size_t size, size_t alignment);
PM_EXPORT void *_ZnamSt11align_val_t(size_t size, size_t alignment);
PM_EXPORT void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, SHIM_NOTHROW nt);
PM_EXPORT void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, SHIM_NOTHROW nt);
PM_EXPORT void _ZdlPv(void *p);
PM_EXPORT void _ZdaPv(void *p);
PM_EXPORT void _ZdlPvm(void *p, size_t size);
PM_EXPORT void _ZdaPvm(void *p, size_t size);
PM_EXPORT void _ZdlPvRKSt9nothrow_t(void *p, SHIM_NOTHROW nt);
PM_EXPORT void _ZdaPvRKSt9nothrow_t(void *p, SHIM_NOTHROW nt);
PM_EXPORT void _ZdlPvSt11align_val_t(void *p, size_t alignment);
PM_EXPORT void _ZdaPvSt11align_val_t(void *p, size_t alignment);
PM_EXPORT void _ZdlPvmSt11align_val_t(void *p, size_t size, size_t alignment);
PM_EXPORT void _ZdaPvmSt11align_val_t(void *p, size_t size, size_t alignment);
PM_EXPORT void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t alignment, SHIM_NOTHROW nt);
PM_EXPORT void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t alignment, SHIM_NOTHROW nt);

/* operator new(size_t) and new[] */
PM_EXPORT void *_Znwm(size_t size) { return shim_new(size); }
PM_EXPORT void *_Znam(size_t size) { return shim_new(size); }
/* operator new(size_t, const std::nothrow_t &) and new[] */
PM_EXPORT void *_ZnwmRKSt9nothrow_t(size_t size, SHIM_NOTHROW nt) {
    (void)nt;
    return shim_new_nothrow(size);
}
PM_EXPORT void *_ZnamRKSt9nothrow_t(size_t size, SHIM_NOTHROW nt) {
    (void)nt;
    return shim_new_nothrow(size);
}
/* operator new(size_t, std::align_val_t) and new[] */
PM_EXPORT void *_ZnwmSt11align_val_t(size_t size, size_t alignment) {
    return shim_new_aligned(size, alignment);
}
PM_EXPORT void *_ZnamSt11align_val_t(size_t size, size_t alignment) {
    return shim_new_aligned(size, alignment);
}
/* operator new(size_t, std::align_val_t, const std::nothrow_t &) and new[] */
PM_EXPORT void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment,
                                                   SHIM_NOTHROW nt) {
    (void)nt;
    return shim_new_aligned_nothrow(size, alignment);
}
PM_EXPORT void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment,
                                                   SHIM_NOTHROW nt) {
    (void)nt;
    return shim_new_aligned_nothrow(size, alignment);
}

/* operator delete(void *) and delete[] */
PM_EXPORT void _ZdlPv(void *p) { pm_free_inline(p); }
PM_EXPORT void _ZdaPv(void *p) { pm_free_inline(p); }
/* operator delete(void *, size_t) and delete[] (C++14 sized deallocation) */
PM_EXPORT void _ZdlPvm(void *p, size_t size) {
    (void)size;
    pm_free_inline(p);
}
PM_EXPORT void _ZdaPvm(void *p, size_t size) {
    (void)size;
    pm_free_inline(p);
}
/* operator delete(void *, const std::nothrow_t &) and delete[] */
PM_EXPORT void _ZdlPvRKSt9nothrow_t(void *p, SHIM_NOTHROW nt) {
    (void)nt;
    pm_free_inline(p);
}
PM_EXPORT void _ZdaPvRKSt9nothrow_t(void *p, SHIM_NOTHROW nt) {
    (void)nt;
    pm_free_inline(p);
}
/* operator delete(void *, std::align_val_t) and delete[] */
PM_EXPORT void _ZdlPvSt11align_val_t(void *p, size_t alignment) {
    (void)alignment;
    pm_free_inline(p);
}
PM_EXPORT void _ZdaPvSt11align_val_t(void *p, size_t alignment) {
    (void)alignment;
    pm_free_inline(p);
}
/* operator delete(void *, size_t, std::align_val_t) and delete[] */
PM_EXPORT void _ZdlPvmSt11align_val_t(void *p, size_t size, size_t alignment) {
    (void)size, (void)alignment;
    pm_free_inline(p);
}
PM_EXPORT void _ZdaPvmSt11align_val_t(void *p, size_t size, size_t alignment) {
    (void)size, (void)alignment;
    pm_free_inline(p);
}
/* operator delete(void *, std::align_val_t, const std::nothrow_t &) and delete[] */
PM_EXPORT void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t alignment, SHIM_NOTHROW nt) {
    (void)alignment, (void)nt;
    pm_free_inline(p);
}
PM_EXPORT void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t alignment, SHIM_NOTHROW nt) {
    (void)alignment, (void)nt;
    pm_free_inline(p);
}
