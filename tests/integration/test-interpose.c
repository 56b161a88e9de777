/*
 * test-interpose.c: this binary links libpoolmalloc.so itself, so the whole process, Criterion
 * included, runs on poolmalloc. Every entry point of the shim must reach poolmalloc (pm_owns on
 * what it returns), glibc's own allocating functions (strdup, asprintf, ...) must come back
 * with our blocks, and the library must export exactly the replaceable set and the pm_ API.
 *
 * Built with -fno-builtin so that the compiler calls malloc & co. rather than folding them.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "poolmalloc.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* C23, not declared by glibc 2.36. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t alignment, size_t size);
void cfree(void *p);

static bool aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* The file name of the shared object that defines address a. */
static const char *object_of(const void *a) {
    Dl_info info;
    if (dladdr(a, &info) == 0 || info.dli_fname == NULL)
        return "(unknown)";
    return info.dli_fname;
}

static const char *library_path(void) {
    return object_of((const void *)pm_owns);
}

/* ---- the C entry points -------------------------------------------------------------------- */

Test(interpose, c_entry_points_are_poolmalloc) {
    void *p = malloc(100);
    cr_assert(pm_owns(p), "malloc did not come from poolmalloc");
    cr_assert_geq(malloc_usable_size(p), 100);
    cr_assert_eq(malloc_usable_size(p), pm_usable_size(p));
    p = realloc(p, 5000);
    cr_assert(pm_owns(p), "realloc");
    p = reallocarray(p, 100, 100);
    cr_assert(pm_owns(p), "reallocarray");
    free(p);

    unsigned char *c = calloc(100, 3);
    cr_assert(pm_owns(c), "calloc");
    for (int i = 0; i < 300; i++)
        cr_assert_eq(c[i], 0);
    free(c);

    void *a = NULL;
    cr_assert_eq(posix_memalign(&a, 256, 1000), 0);
    cr_assert(pm_owns(a) && aligned(a, 256), "posix_memalign");
    free(a);
    a = aligned_alloc(4096, 4096);
    cr_assert(pm_owns(a) && aligned(a, 4096), "aligned_alloc");
    free_aligned_sized(a, 4096, 4096);
    a = memalign(64 * KiB, 10);
    cr_assert(pm_owns(a) && aligned(a, 64 * KiB), "memalign");
    cfree(a);
    a = valloc(10);
    cr_assert(pm_owns(a) && aligned(a, 4096), "valloc");
    free_sized(a, 10);
    a = pvalloc(10);
    cr_assert(pm_owns(a) && aligned(a, 4096) && malloc_usable_size(a) >= 4096, "pvalloc");
    free(a);

    void *big = malloc(10 * MiB);
    cr_assert(pm_owns(big), "large malloc");
    big = realloc(big, 20 * MiB);
    cr_assert(pm_owns(big), "large realloc");
    free(big);

    volatile size_t impossible = SIZE_MAX; /* volatile: gcc warns about the constant */
    errno = 0;
    cr_assert_null(malloc(impossible));
    cr_assert_eq(errno, ENOMEM);
    errno = 0;
    cr_assert_null(calloc(impossible / 2, 3));
    cr_assert_eq(errno, ENOMEM);
    cr_assert_null(realloc(malloc(1), 0), "realloc(p, 0) returns NULL, as glibc's");
    free(NULL);
}

Test(interpose, free_preserves_errno) {
    void *s = malloc(10), *l = malloc(4 * MiB);
    errno = 1234;
    free(s);
    free(l);
    free(NULL);
    cr_assert_eq(errno, 1234, "free changed errno to %d", errno);
}

Test(interpose, libc_internal_names_are_poolmalloc) {
    static const char *const names[] = {"__libc_malloc", "__libc_calloc", "__libc_memalign",
                                        "__libc_valloc", "__libc_pvalloc"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        cr_assert_not_null(sym, "%s not found", names[i]);
        cr_assert_str_eq(object_of(sym), library_path(), "%s resolves to %s", names[i],
                         object_of(sym));
    }
    void *(*libc_malloc)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "__libc_malloc");
    void *(*libc_realloc)(void *, size_t) =
        (void *(*)(void *, size_t))dlsym(RTLD_DEFAULT, "__libc_realloc");
    void (*libc_free)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "__libc_free");
    void *(*libc_memalign)(size_t, size_t) =
        (void *(*)(size_t, size_t))dlsym(RTLD_DEFAULT, "__libc_memalign");
    cr_assert(libc_malloc && libc_realloc && libc_free && libc_memalign);
    void *p = libc_malloc(77);
    cr_assert(pm_owns(p));
    p = libc_realloc(p, 7777);
    cr_assert(pm_owns(p));
    libc_free(p);
    p = libc_memalign(128, 5);
    cr_assert(pm_owns(p) && aligned(p, 128));
    libc_free(p);
}

Test(interpose, glibc_allocating_functions_return_our_blocks) {
    char *s = strdup("hello");
    cr_assert(pm_owns(s), "strdup");
    free(s);
    s = strndup("hello world", 5);
    cr_assert(pm_owns(s) && strcmp(s, "hello") == 0, "strndup");
    free(s);
    s = NULL;
    cr_assert_gt(asprintf(&s, "%d-%s", 42, "x"), 0);
    cr_assert(pm_owns(s) && strcmp(s, "42-x") == 0, "asprintf");
    free(s);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    for (int i = 0; i < 10000; i++)
        fprintf(f, "line %d\n", i);
    fclose(f);
    cr_assert(pm_owns(buf) && len > 60000, "open_memstream");
    free(buf);
    char *cwd = getcwd(NULL, 0);
    cr_assert(pm_owns(cwd), "getcwd(NULL, 0)");
    free(cwd);
    char *real = realpath(".", NULL);
    cr_assert(pm_owns(real), "realpath");
    free(real);
}

/* ---- mallopt, mallinfo, malloc_trim, malloc_stats --------------------------------------------- */

Test(interpose, mallopt_mmap_threshold) {
    pm_stats_t before, after;
    cr_assert_eq(mallopt(M_MMAP_THRESHOLD, 32 * KiB), 1);
    pm_stats_get(&before);
    void *p = malloc(64 * KiB); /* above the new threshold: its own mapping */
    pm_stats_get(&after);
    cr_assert_eq(after.large_allocs, before.large_allocs + 1,
                 "malloc(64K) after M_MMAP_THRESHOLD=32K was not a large block");
    free(p);
    cr_assert_eq(mallopt(M_MMAP_THRESHOLD, 128 * KiB), 1);
    pm_stats_get(&before);
    p = malloc(64 * KiB);
    pm_stats_get(&after);
    cr_assert_eq(after.large_allocs, before.large_allocs, "threshold back at 128K, still large");
    free(p);
    /* Values poolmalloc cannot honour are refused, as glibc refuses its own. */
    cr_assert_eq(mallopt(M_MMAP_THRESHOLD, 1 << 30), 0);
    cr_assert_eq(mallopt(M_MMAP_THRESHOLD, 100), 0);
    cr_assert_eq(mallopt(M_MMAP_THRESHOLD, -1), 0);
    /* glibc's heap knobs mean nothing here: accepted, no effect. */
    cr_assert_eq(mallopt(M_ARENA_MAX, 2), 1);
    cr_assert_eq(mallopt(M_TRIM_THRESHOLD, 1 << 20), 1);
    cr_assert_eq(mallopt(M_TOP_PAD, 0), 1);
    cr_assert_eq(mallopt(M_MXFAST, 1 << 20), 0, "glibc refuses M_MXFAST above 160");
}

Test(interpose, mallinfo2_counts_our_blocks) {
    struct mallinfo2 m0 = mallinfo2();
    enum { N = 10000 };
    static void *blocks[N];
    for (int i = 0; i < N; i++)
        blocks[i] = malloc(1000);
    void *big = malloc(5 * MiB);
    struct mallinfo2 m1 = mallinfo2();
    cr_assert_geq(m1.uordblks, m0.uordblks + (size_t)N * 1000,
                  "uordblks %zu -> %zu after %d x 1000 bytes", m0.uordblks, m1.uordblks, N);
    cr_assert_geq(m1.arena, m1.uordblks);
    cr_assert_eq(m1.hblks, m0.hblks + 1);
    cr_assert_geq(m1.hblkhd, m0.hblkhd + 5 * MiB);
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    free(big);
    struct mallinfo2 m2 = mallinfo2();
    cr_assert_leq(m2.uordblks + (size_t)N * 1000, m1.uordblks);
    cr_assert_eq(m2.hblks, m0.hblks);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
    cr_assert_eq((size_t)old.uordblks, m2.uordblks < INT32_MAX ? m2.uordblks : INT32_MAX);
}

Test(interpose, malloc_trim_releases) {
    enum { N = 64 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(1 * MiB + (size_t)i * 4096);
        memset(p[i], 1, 1 * MiB);
    }
    for (int i = 0; i < N; i++)
        free(p[i]);
    cr_assert_eq(malloc_trim(0), 1, "64 MiB freed, malloc_trim released nothing");
}

Test(interpose, malloc_stats_prints_the_report) {
    char path[] = "/tmp/pm-malloc-stats-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    errno = 77;
    malloc_stats();
    int err = errno;
    dup2(saved, 2);
    close(saved);
    char buf[8192] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    cr_assert_gt(n, 0, "malloc_stats printed nothing");
    cr_assert(strstr(buf, "poolmalloc") != NULL, "not poolmalloc's report: %s", buf);
    cr_assert_eq(err, 77, "malloc_stats changed errno");
}

/* ---- C++ operators (called through their mangled names: this test is C) ----------------- */

typedef void *(*new_fn)(size_t);
typedef void *(*new_nothrow_fn)(size_t, const void *);
typedef void *(*new_aligned_fn)(size_t, size_t);
typedef void *(*new_aligned_nothrow_fn)(size_t, size_t, const void *);

static void *sym(const char *name) {
    void *s = dlsym(RTLD_DEFAULT, name);
    cr_assert_not_null(s, "%s is not exported", name);
    cr_assert_str_eq(object_of(s), library_path(), "%s resolves to %s", name, object_of(s));
    return s;
}

Test(interpose, operator_new_and_delete_variants) {
    const char nothrow_tag = 0;
    for (int array = 0; array < 2; array++) {
        const char *n = array ? "a" : "w"; /* new[] is _Zna..., new is _Znw... */
        const char *d = array ? "a" : "l"; /* delete[] is _Zda..., delete is _Zdl... */
        char name[80];
#define NAME(fmt, x) (snprintf(name, sizeof name, fmt, x), name)
        new_fn plain = (new_fn)sym(NAME("_Zn%sm", n));
        new_nothrow_fn nothrow = (new_nothrow_fn)sym(NAME("_Zn%smRKSt9nothrow_t", n));
        new_aligned_fn al = (new_aligned_fn)sym(NAME("_Zn%smSt11align_val_t", n));
        new_aligned_nothrow_fn al_nothrow =
            (new_aligned_nothrow_fn)sym(NAME("_Zn%smSt11align_val_tRKSt9nothrow_t", n));
        void (*del)(void *) = (void (*)(void *))sym(NAME("_Zd%sPv", d));
        void (*del_sized)(void *, size_t) = (void (*)(void *, size_t))sym(NAME("_Zd%sPvm", d));
        void (*del_nothrow)(void *, const void *) =
            (void (*)(void *, const void *))sym(NAME("_Zd%sPvRKSt9nothrow_t", d));
        void (*del_al)(void *, size_t) =
            (void (*)(void *, size_t))sym(NAME("_Zd%sPvSt11align_val_t", d));
        void (*del_sized_al)(void *, size_t, size_t) =
            (void (*)(void *, size_t, size_t))sym(NAME("_Zd%sPvmSt11align_val_t", d));
        void (*del_al_nothrow)(void *, size_t, const void *) =
            (void (*)(void *, size_t, const void *))sym(NAME("_Zd%sPvSt11align_val_tRKSt9nothrow_t", d));
#undef NAME
        void *p = plain(24);
        cr_assert(pm_owns(p));
        del(p);
        p = plain(0);
        cr_assert(pm_owns(p), "new of size 0 must return a unique block");
        del_sized(p, 0);
        p = plain(1 * MiB);
        cr_assert(pm_owns(p));
        del_sized(p, 1 * MiB);
        p = nothrow(100, &nothrow_tag);
        cr_assert(pm_owns(p));
        del_nothrow(p, &nothrow_tag);
        cr_assert_null(nothrow(SIZE_MAX / 2, &nothrow_tag), "nothrow new of an impossible size");
        for (size_t a = 32; a <= 1 * MiB; a *= 8) {
            p = al(100, a);
            cr_assert(pm_owns(p) && aligned(p, a), "aligned new (%zu)", a);
            del_al(p, a);
            p = al(3 * a, a);
            cr_assert(pm_owns(p) && aligned(p, a), "aligned new (%zu)", a);
            del_sized_al(p, 3 * a, a);
            p = al_nothrow(a + 1, a, &nothrow_tag);
            cr_assert(pm_owns(p) && aligned(p, a), "aligned nothrow new (%zu)", a);
            del_al_nothrow(p, a, &nothrow_tag);
        }
        cr_assert_null(al_nothrow(SIZE_MAX / 2, 4096, &nothrow_tag));
        p = al(8, 8); /* an alignment below the default one */
        cr_assert(pm_owns(p) && aligned(p, 16));
        del_al(p, 8);
    }
}

/* With no libstdc++ in the process, a failing operator new cannot throw: it says why and
 * aborts. (A C++ program gets std::bad_alloc: see cxx-program.cc.) */
Test(interpose, operator_new_failure_without_libstdcxx_aborts, .signal = SIGABRT) {
    cr_redirect_stderr();
    new_fn plain = (new_fn)sym("_Znwm");
    void *p = plain(SIZE_MAX / 2);
    pm_free(p); /* not reached */
}

/* libstdc++ loaded only later, with dlopen (as a C++ extension module brings it into Python):
 * the weak references were bound to nothing at start-up, yet a failing operator new must find
 * and call the std::new_handler installed through the late libstdc++. The handler longjmps
 * out on its third call (no C++ frame lies between it and us). */
static jmp_buf handler_escape;
static int handler_calls;

static void counting_new_handler(void) {
    if (++handler_calls == 3)
        longjmp(handler_escape, 1);
}

Test(interpose, operator_new_finds_a_late_libstdcxx_new_handler) {
    void *cxx = dlopen("libstdc++.so.6", RTLD_NOW | RTLD_GLOBAL);
    if (cxx == NULL)
        cr_skip_test("libstdc++.so.6 cannot be loaded: %s", dlerror());
    typedef void (*handler_fn)(void);
    handler_fn (*set_new_handler)(handler_fn) =
        (handler_fn(*)(handler_fn))dlsym(cxx, "_ZSt15set_new_handlerPFvvE");
    cr_assert_not_null(set_new_handler);
    set_new_handler(counting_new_handler);
    new_fn plain = (new_fn)sym("_Znwm");
    volatile size_t impossible = SIZE_MAX / 2;
    if (setjmp(handler_escape) == 0) {
        void *p = plain(impossible);
        cr_assert_fail("operator new(%zu) returned %p", (size_t)impossible, p);
    }
    set_new_handler(NULL);
    cr_assert_eq(handler_calls, 3, "the new_handler was called %d times", handler_calls);
}

/* ---- what the library exports ------------------------------------------------------------ */

static const char *const required_exports[] = {
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_usable_size", "free_sized", "free_aligned_sized",
    "cfree", "__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc",
    "__libc_memalign", "__libc_valloc", "__libc_pvalloc", "mallopt", "malloc_trim", "mallinfo",
    "mallinfo2", "malloc_stats",
    "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t", "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm",
    "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t", "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
};
#define N_REQUIRED (sizeof required_exports / sizeof required_exports[0])

/* Symbols every shared object has, and the bounds of the option registry's section
 * (options.h), which ld lists in .dynsym although they are hidden: no one can bind to them. */
static bool is_linker_symbol(const char *s) {
    return !strcmp(s, "_init") || !strcmp(s, "_fini") || !strcmp(s, "_edata") ||
           !strcmp(s, "_end") || !strcmp(s, "__bss_start") ||
           !strcmp(s, "__start_pm_options") || !strcmp(s, "__stop_pm_options");
}

Test(interpose, exports_exactly_the_replaceable_set_and_pm_api) {
    char command[4200];
    snprintf(command, sizeof command, "nm -D --defined-only '%s'", library_path());
    FILE *nm = popen(command, "r");
    cr_assert_not_null(nm, "cannot run nm");
    bool seen[N_REQUIRED] = {false};
    char line[512], type[8], name[400], unexpected[2048] = "";
    int count = 0;
    while (fgets(line, sizeof line, nm) != NULL) {
        if (sscanf(line, "%*s %7s %399s", type, name) != 2)
            continue;
        count++;
        bool known = strncmp(name, "pm_", 3) == 0 || is_linker_symbol(name);
        for (size_t i = 0; i < N_REQUIRED; i++) {
            if (strcmp(name, required_exports[i]) == 0) {
                seen[i] = true;
                known = true;
            }
        }
        if (!known && strlen(unexpected) + strlen(name) + 2 < sizeof unexpected) {
            strcat(unexpected, " ");
            strcat(unexpected, name);
        }
    }
    int rc = pclose(nm);
    cr_assert(rc == 0 && count > 0, "nm -D failed on %s (status %d)", library_path(), rc);
    cr_assert_str_empty(unexpected, "exported but not part of the API:%s", unexpected);
    for (size_t i = 0; i < N_REQUIRED; i++)
        cr_assert(seen[i], "%s is not exported", required_exports[i]);
}
