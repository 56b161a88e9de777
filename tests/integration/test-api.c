/*
 * test-api.c: the semantics of the pm_ allocation API, which are glibc's.
 *
 * Linked with the core only (no interposition): the test's own malloc, and Criterion's, stay
 * glibc's, which also gives us foreign pointers to ask pm_owns about.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "poolmalloc.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define PAGE ((size_t)4096)

/* cr_assert formats its message on every call; the sweeps check millions of things, so they
 * test first and only call Criterion to fail. */
#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond))                                                                           \
            cr_assert_fail(__VA_ARGS__);                                                       \
    } while (0)

static bool is_aligned(const void *p, size_t align) {
    return ((uintptr_t)p & (align - 1)) == 0;
}

/* True when all n bytes at p equal byte (memcmp against itself shifted by one). */
static bool all_bytes(const void *p, size_t n, unsigned char byte) {
    const unsigned char *c = p;
    return n == 0 || (c[0] == byte && memcmp(c, c + 1, n - 1) == 0);
}

/* A byte that depends on the position, so a shifted or truncated copy shows. */
static unsigned char pattern_at(size_t i, unsigned seed) {
    return (unsigned char)((i * 131u) ^ (i >> 9) ^ (i >> 17) ^ seed);
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_at(i, seed);
}

static size_t pattern_mismatch(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_at(i, seed))
            return i;
    return SIZE_MAX;
}

/* Deterministic pseudo-random numbers (xorshift64*): reproducible failures. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* ---- live blocks: alignment, usable size, writability, no overlap ------------------------- */

typedef struct live_block {
    unsigned char *p;
    size_t size, usable;
    unsigned char fill;
} live_block;

static int by_address(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const live_block *)a)->p, y = (uintptr_t)((const live_block *)b)->p;
    return x < y ? -1 : x > y;
}

/* Allocates size, checks what malloc promises, and fills the whole usable size. */
static live_block take(size_t size, unsigned char fill) {
    live_block b = {pm_malloc(size), size, 0, fill};
    CHECK(b.p != NULL, "pm_malloc(%zu) returned NULL", size);
    CHECK(is_aligned(b.p, 16), "pm_malloc(%zu) = %p is not 16-byte aligned", size, (void *)b.p);
    CHECK(pm_owns(b.p), "pm_owns(pm_malloc(%zu)) is 0", size);
    b.usable = pm_usable_size(b.p);
    CHECK(b.usable >= size, "pm_usable_size = %zu < requested %zu", b.usable, size);
    memset(b.p, fill, b.usable);
    return b;
}

/* Every block still holds its own fill (nobody wrote over it), and no two blocks' usable
 * ranges intersect. Then frees them. */
static void check_and_free(live_block *blocks, size_t n) {
    for (size_t i = 0; i < n; i++) {
        live_block *b = &blocks[i];
        CHECK(pm_usable_size(b->p) == b->usable, "usable size of a %zu-byte block changed",
              b->size);
        CHECK(all_bytes(b->p, b->usable, b->fill),
              "%zu-byte block %p was overwritten (overlap with another live block?)", b->size,
              (void *)b->p);
    }
    qsort(blocks, n, sizeof *blocks, by_address);
    for (size_t i = 1; i < n; i++) {
        live_block *a = &blocks[i - 1], *b = &blocks[i];
        CHECK(a->p != b->p, "the same block %p was handed out twice", (void *)a->p);
        CHECK(a->p + a->usable <= b->p, "blocks overlap: [%p, +%zu) and [%p, +%zu)",
              (void *)a->p, a->usable, (void *)b->p, b->usable);
    }
    for (size_t i = 0; i < n; i++)
        pm_free(blocks[i].p);
}

#define BATCH 256

Test(api, every_size_to_64k_aligned_writable_disjoint) {
    static live_block blocks[BATCH];
    size_t n = 0;
    for (size_t size = 0; size <= 64 * KiB; size++) {
        blocks[n] = take(size, (unsigned char)(size * 7 + 1));
        if (++n == BATCH) {
            check_and_free(blocks, n);
            n = 0;
        }
    }
    check_and_free(blocks, n);
}

Test(api, mixed_sizes_live_together_disjoint) {
    /* Small, medium and large blocks alive at once, in random order. */
    static live_block blocks[2000];
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < 2000; i++) {
            uint64_t r = rng();
            size_t size = (r & 7) == 0 ? (size_t)(r >> 8) % (2 * MiB)
                          : (r & 7) < 3 ? (size_t)(r >> 8) % (128 * KiB)
                                        : (size_t)(r >> 8) % 1100;
            blocks[i] = take(size, (unsigned char)(i + round));
        }
        check_and_free(blocks, 2000);
    }
}

Test(api, sampled_sizes_to_64m) {
    static live_block blocks[8];
    size_t n = 0;
    /* Around every power of two and its midpoint from 64 KiB to 64 MiB ... */
    for (unsigned k = 16; k <= 26; k++) {
        size_t base = (size_t)1 << k;
        size_t sizes[] = {base - 1, base, base + 1, base + base / 2, base + PAGE + 1};
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            if (sizes[j] > 64 * MiB)
                continue;
            blocks[n] = take(sizes[j], (unsigned char)(k + j));
            if (++n == 8) {
                check_and_free(blocks, n);
                n = 0;
            }
        }
    }
    /* ... and log-uniform random sizes in between. */
    for (int i = 0; i < 150; i++) {
        unsigned k = 16 + (unsigned)(rng() % 10);
        size_t size = ((size_t)1 << k) + (size_t)(rng() % ((size_t)1 << k));
        blocks[n] = take(size, (unsigned char)i);
        if (++n == 8) {
            check_and_free(blocks, n);
            n = 0;
        }
    }
    check_and_free(blocks, n);
}

/* ---- calloc ---------------------------------------------------------------------------------- */

static const size_t interesting_sizes[] = {
    1,        15,        16,         17,          100,      511,      512,     513,
    1000,     1024,      1025,       2048,        4095,     4096,     10000,   16384,
    65536,    100000,    128 * KiB,  128 * KiB + 1, 200000, MiB,      4 * MiB, 4 * MiB + 17,
};
#define N_INTERESTING (sizeof interesting_sizes / sizeof interesting_sizes[0])

Test(api, calloc_zeroes_recycled_blocks) {
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < N_INTERESTING; i++) {
            size_t size = interesting_sizes[i];
            /* Dirty a block of the same size and free it: calloc likely gets it back. */
            unsigned char *dirty = pm_malloc(size);
            cr_assert_not_null(dirty);
            memset(dirty, 0xAB, pm_usable_size(dirty));
            pm_free(dirty);
            unsigned char *z = round == 1 ? pm_calloc(size, 1) : pm_calloc(1, size);
            cr_assert_not_null(z, "pm_calloc(%zu) failed", size);
            CHECK(all_bytes(z, size, 0), "pm_calloc(%zu) (recycled %s) is not zeroed", size,
                  z == dirty ? "same block" : "other block");
            pm_free(z);
        }
    }
}

Test(api, calloc_zeroes_a_dirty_batch) {
    /* Many dirty blocks freed at once, then calloc'ed back: every one must be zero. */
    enum { N = 3000 };
    static unsigned char *p[N];
    for (size_t i = 0; i < N; i++) {
        p[i] = pm_malloc(48 + (i % 7) * 16);
        cr_assert_not_null(p[i]);
        memset(p[i], 0x5A, pm_usable_size(p[i]));
    }
    for (size_t i = 0; i < N; i++)
        pm_free(p[i]);
    for (size_t i = 0; i < N; i++) {
        size_t size = 48 + (i % 7) * 16;
        p[i] = pm_calloc(size / 16, 16);
        CHECK(p[i] != NULL && all_bytes(p[i], size, 0), "calloc block %zu not zeroed", i);
    }
    for (size_t i = 0; i < N; i++)
        pm_free(p[i]);
}

Test(api, calloc_overflow_gives_enomem) {
    const size_t cases[][2] = {
        {SIZE_MAX, 2}, {2, SIZE_MAX}, {SIZE_MAX / 2 + 1, 2}, {(size_t)1 << 32, (size_t)1 << 32},
        {SIZE_MAX, SIZE_MAX}, {(SIZE_MAX / 16) + 1, 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        void *p = pm_calloc(cases[i][0], cases[i][1]);
        cr_assert_null(p, "pm_calloc(%zu, %zu) did not fail", cases[i][0], cases[i][1]);
        cr_assert_eq(errno, ENOMEM, "pm_calloc(%zu, %zu): errno %d", cases[i][0], cases[i][1],
                     errno);
    }
    /* calloc(0, n) and calloc(n, 0) are malloc(0): unique, freeable. */
    void *a = pm_calloc(0, 100), *b = pm_calloc(100, 0);
    cr_assert(a != NULL && b != NULL && a != b);
    pm_free(a);
    pm_free(b);
}

Test(api, reallocarray_overflow_keeps_block) {
    unsigned char *p = pm_reallocarray(NULL, 10, 10);
    cr_assert_not_null(p);
    fill_pattern(p, 100, 3);
    errno = 0;
    cr_assert_null(pm_reallocarray(p, SIZE_MAX / 2, 3));
    cr_assert_eq(errno, ENOMEM);
    errno = 0;
    cr_assert_null(pm_reallocarray(p, (size_t)1 << 33, (size_t)1 << 33));
    cr_assert_eq(errno, ENOMEM);
    cr_assert_eq(pattern_mismatch(p, 100, 3), SIZE_MAX, "failed reallocarray changed the block");
    p = pm_reallocarray(p, 1000, 10);
    cr_assert_not_null(p);
    cr_assert_eq(pattern_mismatch(p, 100, 3), SIZE_MAX, "reallocarray lost the data");
    pm_free(p);
}

/* ---- realloc ---------------------------------------------------------------------------------- */

/* Walks one block through a list of sizes, checking the data survives each move. */
static void realloc_walk(const size_t *sizes, size_t n, unsigned seed) {
    unsigned char *p = NULL;
    size_t have = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = sizes[i];
        unsigned char *q = pm_realloc(p, size);
        cr_assert_not_null(q, "pm_realloc(%zu -> %zu) failed", have, size);
        CHECK(is_aligned(q, 16), "realloc result %p misaligned", (void *)q);
        CHECK(pm_usable_size(q) >= size, "realloc to %zu: usable %zu", size, pm_usable_size(q));
        size_t keep = have < size ? have : size;
        size_t bad = pattern_mismatch(q, keep, seed);
        CHECK(bad == SIZE_MAX, "pm_realloc(%zu -> %zu) lost byte %zu", have, size, bad);
        fill_pattern(q, size, seed);
        p = q;
        have = size;
    }
    pm_free(p);
}

Test(api, realloc_across_classes_and_to_large_keeps_data) {
    static const size_t up[] = {
        1,      8,      16,     17,         31,          32,       33,         100,
        511,    512,    513,    640,        641,         1023,     1024,       1025,
        2000,   4096,   5000,   16384,      65536,       98305,    128 * KiB,  128 * KiB + 1,
        200000, MiB,    MiB + 1, 3 * MiB + 5, 16 * MiB,  64 * MiB,
    };
    size_t n = sizeof up / sizeof up[0];
    realloc_walk(up, n, 1);
    static size_t down[sizeof up / sizeof up[0]];
    for (size_t i = 0; i < n; i++)
        down[i] = up[n - 1 - i];
    realloc_walk(down, n, 2);
    /* Back and forth across the small/large boundary. */
    static const size_t zigzag[] = {100,     300 * KiB, 40,   2 * MiB, 1024,     129 * KiB,
                                    128 * KiB, 129 * KiB, 5 * MiB, 16, 6 * MiB, 7};
    realloc_walk(zigzag, sizeof zigzag / sizeof zigzag[0], 3);
}

Test(api, realloc_random_slots_keep_data) {
    enum { SLOTS = 64 };
    unsigned char *p[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    for (int step = 0; step < 6000; step++) {
        unsigned i = (unsigned)(rng() % SLOTS);
        uint64_t r = rng();
        size_t n = (r & 15) == 0 ? (size_t)(r >> 8) % (1 * MiB) : (size_t)(r >> 8) % 3000;
        unsigned char *q = pm_realloc(p[i], n);
        if (n == 0 && p[i] != NULL) { /* glibc's realloc(p, 0): frees, returns NULL */
            cr_assert_null(q);
        } else {
            cr_assert_not_null(q);
            size_t keep = size[i] < n ? size[i] : n;
            size_t bad = pattern_mismatch(q, keep, i);
            CHECK(bad == SIZE_MAX, "slot %u: realloc %zu -> %zu lost byte %zu", i, size[i], n,
                  bad);
            fill_pattern(q, n, i);
        }
        p[i] = q;
        size[i] = q ? n : 0;
    }
    for (unsigned i = 0; i < SLOTS; i++)
        pm_free(p[i]);
}

Test(api, realloc_zero_frees_and_returns_null) {
    unsigned char *p = pm_malloc(40);
    cr_assert_not_null(p);
    cr_assert_null(pm_realloc(p, 0), "pm_realloc(p, 0) must free p and return NULL (glibc)");
    /* The block went back to this thread's pool: the next malloc of its class reuses it. */
    unsigned char *q = pm_malloc(40);
    cr_assert_eq(q, p, "the block given to realloc(p, 0) was not freed");
    pm_free(q);
    unsigned char *big = pm_malloc(3 * MiB);
    cr_assert_not_null(big);
    cr_assert_null(pm_realloc(big, 0));
    /* realloc(NULL, 0) is malloc(0). */
    void *z = pm_realloc(NULL, 0);
    cr_assert_not_null(z);
    pm_free(z);
}

/* ---- alignment ------------------------------------------------------------------------------ */

typedef void *(*align_fn)(size_t alignment, size_t size);

static void *via_posix_memalign(size_t alignment, size_t size) {
    void *p = NULL;
    int rc = pm_posix_memalign(&p, alignment, size);
    CHECK(rc == 0, "pm_posix_memalign(%zu, %zu) = %d", alignment, size, rc);
    return p;
}

static void check_aligned_allocations(const char *name, align_fn fn, size_t max_align) {
    static live_block blocks[8];
    for (size_t align = sizeof(void *); align <= max_align; align *= 2) {
        size_t sizes[] = {0, 1, 100, align - 1, align, align + 1, 3 * align + 5, 2 * PAGE};
        size_t n = 0;
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            live_block *b = &blocks[n++];
            b->p = fn(align, sizes[j]);
            CHECK(b->p != NULL, "%s(%zu, %zu) returned NULL", name, align, sizes[j]);
            CHECK(is_aligned(b->p, align), "%s(%zu, %zu) = %p is misaligned", name, align,
                  sizes[j], (void *)b->p);
            CHECK(is_aligned(b->p, 16), "%s result below 16-byte alignment", name);
            CHECK(pm_owns(b->p), "%s result not owned", name);
            b->size = sizes[j];
            b->usable = pm_usable_size(b->p);
            CHECK(b->usable >= sizes[j], "%s(%zu, %zu): usable %zu", name, align, sizes[j],
                  b->usable);
            b->fill = (unsigned char)(j + align);
            memset(b->p, b->fill, b->usable);
        }
        check_and_free(blocks, n);
    }
}

Test(api, posix_memalign_honours_alignment_to_1m) {
    check_aligned_allocations("pm_posix_memalign", via_posix_memalign, MiB);
}

Test(api, aligned_alloc_honours_alignment_to_1m) {
    check_aligned_allocations("pm_aligned_alloc", pm_aligned_alloc, MiB);
}

Test(api, memalign_honours_alignment_to_1m) {
    check_aligned_allocations("pm_memalign", pm_memalign, MiB);
}

Test(api, alignment_beyond_1m_like_glibc) {
    /* The contract says at least 1 MiB; glibc takes any power of two. Up to 64 MiB here. */
    for (size_t align = 2 * MiB; align <= 64 * MiB; align *= 2) {
        unsigned char *p = pm_aligned_alloc(align, 1000);
        cr_assert_not_null(p, "aligned_alloc(%zu, 1000) failed (errno %d)", align, errno);
        cr_assert(is_aligned(p, align), "aligned_alloc(%zu) = %p", align, (void *)p);
        cr_assert_geq(pm_usable_size(p), 1000);
        memset(p, 1, pm_usable_size(p));
        void *q = NULL;
        cr_assert_eq(pm_posix_memalign(&q, align, 3 * align), 0);
        cr_assert(is_aligned(q, align));
        pm_free(p);
        pm_free(q);
    }
}

Test(api, posix_memalign_rejects_bad_alignment) {
    /* Not a power of two, or not a multiple of sizeof(void *): EINVAL, returned not set. */
    const size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 100, 4097, (size_t)3 << 20, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = (void *)0x1;
        int rc = pm_posix_memalign(&p, bad[i], 64);
        cr_assert_eq(rc, EINVAL, "pm_posix_memalign(alignment %zu) = %d, want EINVAL", bad[i],
                     rc);
    }
    void *p = NULL;
    cr_assert_eq(pm_posix_memalign(&p, 64, SIZE_MAX), ENOMEM);
    cr_assert_eq(pm_posix_memalign(&p, MiB, (size_t)PTRDIFF_MAX), ENOMEM);
    cr_assert_eq(pm_posix_memalign(&p, 8, SIZE_MAX - 100), ENOMEM);
}

Test(api, aligned_alloc_and_memalign_error_codes) {
    const size_t bad[] = {0, 3, 12, 24, 48, 100, 4097, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        cr_assert_null(pm_aligned_alloc(bad[i], 64), "aligned_alloc(%zu) succeeded", bad[i]);
        cr_assert_eq(errno, EINVAL, "aligned_alloc(%zu): errno %d, want EINVAL", bad[i], errno);
    }
    errno = 0;
    cr_assert_null(pm_aligned_alloc(64, SIZE_MAX));
    cr_assert_eq(errno, ENOMEM);
    errno = 0;
    cr_assert_null(pm_memalign(4096, SIZE_MAX - PAGE));
    cr_assert_eq(errno, ENOMEM);
    /* An alignment no address space can offer fails too, never returns a misaligned block. */
    errno = 0;
    cr_assert_null(pm_aligned_alloc(SIZE_MAX / 2 + 1, 16));
    cr_assert(errno == ENOMEM || errno == EINVAL, "errno %d", errno);
    errno = 0;
    cr_assert_null(pm_memalign(SIZE_MAX / 2 + 2, 16));
    cr_assert(errno == ENOMEM || errno == EINVAL, "errno %d", errno);
}

Test(api, memalign_rounds_odd_alignments_up_as_glibc) {
    /* glibc's memalign takes any alignment and rounds it up to a power of two. */
    const size_t odd[][2] = {{0, 16}, {3, 16}, {24, 32}, {48, 64}, {100, 128}, {4097, 8192},
                             {(size_t)3 << 20, (size_t)4 << 20}};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        unsigned char *p = pm_memalign(odd[i][0], 100);
        cr_assert_not_null(p, "memalign(%zu, 100) failed", odd[i][0]);
        cr_assert(is_aligned(p, odd[i][1]), "memalign(%zu) = %p, not %zu-aligned", odd[i][0],
                  (void *)p, odd[i][1]);
        memset(p, 1, 100);
        pm_free(p);
    }
}

Test(api, valloc_and_pvalloc_are_page_aligned) {
    const size_t sizes[] = {0, 1, 100, PAGE - 1, PAGE, PAGE + 1, 100000, 3 * MiB + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *v = pm_valloc(sizes[i]);
        cr_assert_not_null(v);
        cr_assert(is_aligned(v, PAGE), "valloc(%zu) = %p", sizes[i], (void *)v);
        cr_assert_geq(pm_usable_size(v), sizes[i]);
        memset(v, 1, pm_usable_size(v));
        unsigned char *pv = pm_pvalloc(sizes[i]);
        cr_assert_not_null(pv);
        cr_assert(is_aligned(pv, PAGE), "pvalloc(%zu) = %p", sizes[i], (void *)pv);
        size_t pages = sizes[i] == 0 ? PAGE : (sizes[i] + PAGE - 1) & ~(PAGE - 1);
        cr_assert_geq(pm_usable_size(pv), pages, "pvalloc(%zu) must round up to whole pages",
                      sizes[i]);
        memset(pv, 2, pm_usable_size(pv));
        pm_free(v);
        pm_free(pv);
    }
    errno = 0;
    cr_assert_null(pm_valloc(SIZE_MAX));
    cr_assert_eq(errno, ENOMEM);
    errno = 0; /* rounding SIZE_MAX - 100 up to pages overflows: must not wrap to a tiny block */
    cr_assert_null(pm_pvalloc(SIZE_MAX - 100));
    cr_assert_eq(errno, ENOMEM);
}

/* ---- impossible sizes, zero, NULL, errno ------------------------------------------------------ */

Test(api, impossible_sizes_give_null_and_enomem) {
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX - 15, SIZE_MAX - PAGE, (size_t)PTRDIFF_MAX + 1,
                            (size_t)PTRDIFF_MAX, (size_t)PTRDIFF_MAX - MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        cr_assert_null(pm_malloc(sizes[i]), "pm_malloc(%zu) succeeded", sizes[i]);
        cr_assert_eq(errno, ENOMEM, "pm_malloc(%zu): errno %d", sizes[i], errno);
        errno = 0;
        cr_assert_null(pm_calloc(1, sizes[i]));
        cr_assert_eq(errno, ENOMEM);
        errno = 0;
        cr_assert_null(pm_realloc(NULL, sizes[i]));
        cr_assert_eq(errno, ENOMEM);
    }
    /* A failed realloc leaves the block as it was. */
    const size_t olds[] = {100, 300 * KiB};
    for (size_t i = 0; i < 2; i++) {
        unsigned char *p = pm_malloc(olds[i]);
        cr_assert_not_null(p);
        fill_pattern(p, olds[i], 9);
        errno = 0;
        cr_assert_null(pm_realloc(p, SIZE_MAX));
        cr_assert_eq(errno, ENOMEM);
        errno = 0;
        cr_assert_null(pm_realloc(p, (size_t)PTRDIFF_MAX + 1));
        cr_assert_eq(errno, ENOMEM);
        cr_assert_eq(pattern_mismatch(p, olds[i], 9), SIZE_MAX, "failed realloc changed data");
        pm_free(p);
    }
}

Test(api, malloc_zero_is_unique_and_freeable) {
    enum { N = 1000 };
    static live_block blocks[N];
    for (size_t i = 0; i < N; i++)
        blocks[i] = take(0, (unsigned char)i);
    check_and_free(blocks, N); /* distinct: disjoint as [p, p + max(usable, 1)) */
    void *a = pm_malloc(0), *b = pm_malloc(0);
    cr_assert(a != NULL && b != NULL && a != b, "malloc(0) twice gave %p and %p", a, b);
    pm_free(a);
    pm_free(b);
}

Test(api, free_null_and_usable_size_null) {
    pm_free(NULL);
    pm_free_sized(NULL, 0);
    cr_assert_eq(pm_usable_size(NULL), 0);
}

Test(api, free_sized_accepts_the_requested_size) {
    const size_t sizes[] = {0, 1, 24, 512, 1000, 70000, 128 * KiB + 1, 5 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = pm_malloc(sizes[i]);
        cr_assert_not_null(p);
        pm_free_sized(p, sizes[i]);
        void *c = pm_calloc(3, sizes[i]);
        cr_assert_not_null(c);
        pm_free_sized(c, 3 * sizes[i]);
    }
}

Test(api, successful_calls_and_free_preserve_errno) {
    const size_t sizes[] = {0, 8, 100, 1024, 5000, 128 * KiB, 128 * KiB + 1, 3 * MiB};
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            errno = 4242;
            void *p = pm_malloc(sizes[i]);
            void *c = pm_calloc(1, sizes[i]);
            void *a = pm_aligned_alloc(4096, sizes[i]);
            p = pm_realloc(p, sizes[i] * 2 + 1);
            cr_assert(p != NULL && c != NULL && a != NULL);
            cr_assert_eq(errno, 4242, "a successful allocation of %zu changed errno to %d",
                         sizes[i], errno);
            pm_free(p);
            pm_free(c);
            pm_free(a);
            pm_free(NULL);
            cr_assert_eq(errno, 4242, "pm_free of a %zu-byte block changed errno to %d",
                         sizes[i], errno);
        }
        pm_trim(); /* then the next round's frees may unmap and purge */
        cr_assert_eq(errno, 4242, "pm_trim changed errno to %d", errno);
    }
}

static int static_object;

Test(api, owns_only_what_it_handed_out) {
    void *small = pm_malloc(24), *medium = pm_malloc(40000), *large = pm_malloc(2 * MiB);
    void *aligned = pm_aligned_alloc(64 * KiB, 100);
    cr_assert(pm_owns(small) && pm_owns(medium) && pm_owns(large) && pm_owns(aligned));
    int on_stack = 0;
    void *glibc_small = malloc(24), *glibc_large = malloc(4 * MiB); /* glibc: not linked in */
    cr_assert_not_null(glibc_small);
    cr_assert_not_null(glibc_large);
    cr_assert_not(pm_owns(NULL));
    cr_assert_not(pm_owns(&on_stack), "a stack address is owned");
    cr_assert_not(pm_owns(&static_object), "a static object is owned");
    cr_assert_not(pm_owns(glibc_small), "a glibc heap block is owned");
    cr_assert_not(pm_owns(glibc_large), "a glibc mmapped block is owned");
    cr_assert_not(pm_owns((void *)(uintptr_t)0x10), "address 0x10 is owned");
    cr_assert_not(pm_owns((void *)UINTPTR_MAX), "the top address is owned");
    free(glibc_small);
    free(glibc_large);
    pm_free(small);
    pm_free(medium);
    pm_free(large);
    pm_free(aligned);
}
