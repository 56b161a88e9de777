/*
 * test-large.c: white-box tests of src/large.c, the blocks above the mmap threshold.
 *
 * The cache of freed large mappings: best fit over whole runs with a split, pieces of one mapping
 * merging again, a piece extended in place and adjacent pieces of separate mappings serving one
 * block where they lie, few page faults under random replacement, pieces lying apart never moved
 * together, a block of two mappings resized, a growing block moved into cached pages with room to
 * grow, holes between cached pieces filled with fresh pages to build a block (and left alone when
 * something else is mapped there), the zone where fresh blocks are placed (side by side, holes
 * reused, giving way to mappings not its own), the resident budget (cache <= 5/4 peak live -
 * live), its decay.
 * The limits: an unmap the kernel refuses is survived (purged, retried later), a request mmap
 * refuses under RLIMIT_AS succeeds once the cache was given back, a growth whose room does not
 * fit under the limit gets what it asked for, and a second free of a large block is reported
 * as a double free.
 *
 * Each Criterion test runs in its own process, so large.c's state starts empty in each; the
 * tests call pm_large_* directly and set pm_opt (no pm_init, which would reread it).
 */
#define _GNU_SOURCE /* internal.h needs the GNU pthread initializers */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "instrument/instrument.h"
#include "internal.h"
#include "poolmalloc.h"

#define MiB ((size_t)1 << 20)

static pm_large_stats large_stats(void) {
    pm_large_stats s;
    pm_large_get_stats(&s);
    return s;
}

/* Deterministic settings: no expiry by age, a cache cap far above what the tests use. */
static void settle_options(void) {
    pm_opt.purge_delay_ms = -1;
    pm_opt.large_cache = (size_t)1 << 30;
}

static char *alloc_filled(size_t size, int byte) {
    char *p = pm_large_alloc(size, 0, false);
    cr_assert_not_null(p, "pm_large_alloc(%zu) failed", size);
    memset(p, byte, size);
    return p;
}

static bool all_bytes(const char *p, size_t n, int byte) {
    for (size_t i = 0; i < n; i += 512)
        if ((unsigned char)p[i] != (unsigned char)byte)
            return false;
    return (unsigned char)p[n - 1] == (unsigned char)byte;
}

/* Pages of [p, p+n) that are resident; -1 if part of the range is not mapped. */
static long resident_pages(void *p, size_t n) {
    size_t pages = n / 4096;
    unsigned char vec[4096];
    cr_assert_leq(pages, sizeof vec);
    if (mincore(p, n, vec) != 0)
        return -1;
    long count = 0;
    for (size_t i = 0; i < pages; i++)
        count += vec[i] & 1;
    return count;
}

Test(large, best_fit_splits_and_the_pieces_merge_again) {
    settle_options();
    char *a = alloc_filled(8 * MiB, 0x11);
    cr_assert(pm_large_free(a));
    cr_assert_eq(large_stats().cached_bytes, 8 * MiB);

    char *head = pm_large_alloc(2 * MiB, 0, false); /* the head of the cached 8 MiB */
    cr_assert_eq(head, a, "best fit should reuse the freed mapping: %p, not %p", head, a);
    cr_assert_eq(pm_large_usable(head), 2 * MiB, "a split hands out only what was asked");
    cr_assert_eq(large_stats().cached_bytes, 6 * MiB, "the rest of the split stays cached");
    char *tail = pm_large_alloc(6 * MiB, 0, false);
    cr_assert_eq(tail, a + 2 * MiB, "the cached rest should serve the next request");
    cr_assert(all_bytes(tail, 6 * MiB, 0x11), "reused pages keep their contents (no fault)");

    cr_assert(pm_large_free(tail));
    cr_assert(pm_large_free(head)); /* merges with the piece right above it */
    cr_assert_eq(large_stats().cached_pieces, 1, "the two pieces of one mapping should merge");
    uint64_t remaps = large_stats().nremap, in_place = large_stats().in_place;
    char *whole = pm_large_alloc(8 * MiB, 0, false);
    cr_assert_eq(whole, a, "the two pieces of one mapping should have merged back");
    cr_assert_eq(large_stats().in_place, in_place + 1, "a merged piece serves in place");
    cr_assert_eq(large_stats().nremap, remaps);
    cr_assert_eq(large_stats().cached_bytes, 0);
    cr_assert(pm_large_free(whole));

    head = pm_large_alloc(2 * MiB, 0, false); /* split again, freed in the other order */
    tail = pm_large_alloc(6 * MiB, 0, false);
    cr_assert(head == a && tail == a + 2 * MiB);
    cr_assert(pm_large_free(head));
    cr_assert(pm_large_free(tail)); /* merges with the piece right below it */
    cr_assert_eq(large_stats().cached_pieces, 1, "the two pieces of one mapping should merge");
    cr_assert(pm_large_consistent());
}

/* Best fit is over whole runs of adjacent pieces, from the run's start: a request that one
 * piece in the middle of a long run would fit exactly goes to a smaller run elsewhere, and the
 * long run stays whole for a request only it can serve (cutting the middle out left slivers on
 * both sides that no later request fit: `large` faulted 16% more pages). */
Test(large, best_fit_keeps_long_runs_whole) {
    settle_options();
    char *p1 = alloc_filled(1 * MiB, 1), *p2 = alloc_filled(4 * MiB, 2);
    char *p3 = alloc_filled(3 * MiB, 3), *guard = alloc_filled(1 * MiB, 4);
    char *q = alloc_filled(6 * MiB, 5), *guard2 = alloc_filled(1 * MiB, 6);
    cr_assert(p2 == p1 + 1 * MiB && p3 == p2 + 4 * MiB && guard == p3 + 3 * MiB,
              "fresh blocks should lie side by side in the zone");
    cr_assert(q == guard + 1 * MiB && guard2 == q + 6 * MiB);
    cr_assert(pm_large_free(p1) && pm_large_free(p2) && pm_large_free(p3) && pm_large_free(q));
    cr_assert_eq(large_stats().cached_bytes, 14 * MiB);

    char *four = pm_large_alloc(4 * MiB, 0, false);
    cr_assert_eq(four, q, "4 MiB should come from the start of the smallest run that holds it "
                          "(q, 6 MiB), not out of the 8 MiB run: %p, q %p, p2 %p",
                 (void *)four, (void *)q, (void *)p2);
    cr_assert(all_bytes(four, 4 * MiB, 5), "served where it lies, its pages kept");
    char *eight = pm_large_alloc(8 * MiB, 0, false);
    cr_assert_eq(eight, p1, "the 8 MiB run should still be whole: %p, not %p", (void *)eight,
                 (void *)p1);
    cr_assert(all_bytes(eight, 1 * MiB, 1) && all_bytes(eight + 1 * MiB, 4 * MiB, 2) &&
              all_bytes(eight + 5 * MiB, 3 * MiB, 3));
    cr_assert_eq(large_stats().cached_bytes, 2 * MiB, "q's last 2 MiB stay cached");
    cr_assert(pm_large_free(four) && pm_large_free(eight) && pm_large_free(guard) &&
              pm_large_free(guard2));
}

/* Makes sure something is mapped at `at`: a page of ours (PROT_NONE; true), or what was
 * there already (false). */
static bool occupy_page(char *at) {
    void *p = mmap(at, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    cr_assert(p == at || (p == MAP_FAILED && errno == EEXIST), "cannot occupy %p", (void *)at);
    return p == at;
}

/* Caches two 4 MiB pieces (0xaa, 0xbb) of separate mappings, a live block between them, with
 * no free address space on either side of either (so neither can be extended in place). */
static char *cache_two_separate_pieces(void) {
    char *a = alloc_filled(4 * MiB, 0xaa);
    occupy_page(a - 4096); /* before b is made, so that b cannot lie next to a */
    occupy_page(a + 4 * MiB);
    char *guard = alloc_filled(1 * MiB, 0x00);
    char *b = alloc_filled(4 * MiB, 0xbb);
    occupy_page(b - 4096);
    occupy_page(b + 4 * MiB);
    cr_assert(pm_large_free(a));
    cr_assert(pm_large_free(b));
    cr_assert_eq(large_stats().cached_bytes, 8 * MiB);
    return guard;
}

/* A cached piece with nothing mapped below it grows there: fresh pages are mapped right before
 * it (MAP_FIXED_NOREPLACE) and the block is the two together, its old pages used where they
 * lie (their contents still there: not faulted anew). Freed, the two pieces (separate
 * mappings) form a run that serves a request of their joint size in place. */
Test(large, a_piece_is_extended_in_place_and_adjacent_pieces_serve_in_place) {
    settle_options();
    char *c = alloc_filled(4 * MiB, 0x41);
    bool ours = occupy_page(c + 4 * MiB); /* it can only grow downwards */
    cr_assert(pm_large_free(c));
    uint64_t extended = large_stats().extended;
    char *p = pm_large_alloc(6 * MiB, 0, false);
    cr_assert_eq(p, c - 2 * MiB, "the block should end where the cached piece does");
    cr_assert_eq(large_stats().extended, extended + 1);
    cr_assert(all_bytes(p, 2 * MiB, 0), "the fresh part is zero");
    cr_assert(all_bytes(p + 2 * MiB, 4 * MiB, 0x41), "the cached part keeps its pages");
    memset(p, 0x42, 6 * MiB);
    cr_assert(pm_large_free(p));

    uint64_t in_place = large_stats().in_place;
    char *z = pm_large_alloc(6 * MiB, 0, true);
    cr_assert_eq(z, p, "the two adjacent pieces should serve the request where they lie");
    cr_assert_eq(large_stats().in_place, in_place + 1);
    cr_assert_eq(large_stats().cached_bytes, 0);
    cr_assert(all_bytes(z, 6 * MiB, 0), "a zeroed block built in place must be zero");
    /* a block of two mappings grows in place when the pages after it are free */
    if (ours)
        cr_assert_eq(munmap(c + 4 * MiB, 4096), 0);
    char *g = pm_large_realloc(z, 7 * MiB);
    cr_assert_not_null(g);
    if (ours)
        cr_assert_eq(g, z, "the pages after the block were free: it should grow there");
    cr_assert_geq(pm_large_usable(g), 7 * MiB);
    cr_assert(all_bytes(g, 6 * MiB, 0));
    cr_assert(pm_large_free(g));
}

/* Three 4 MiB blocks side by side, in either order (the zone places them upwards, the kernel
 * top-down); the middle one is unmapped when freed (no cache then), the outer two are cached
 * around the hole it leaves, the lower one filled with 0xcc, the upper with 0xaa. A triple
 * that does not lie side by side stays live, and the next one is tried. */
static bool cache_pieces_around_a_hole(char **lo, char **hi) {
    char *a, *b, *c;
    int tries = 0;
    for (;;) {
        if (++tries > 4)
            return false;
        a = alloc_filled(4 * MiB, 0xcc);
        b = alloc_filled(4 * MiB, 0xbb);
        c = alloc_filled(4 * MiB, 0xcc);
        if (a + 4 * MiB == b && b + 4 * MiB == c)
            break;
        if (c + 4 * MiB == b && b + 4 * MiB == a) {
            char *t = a;
            a = c;
            c = t;
            break;
        }
    }
    memset(c, 0xaa, 4 * MiB); /* a is the lower, c the upper */
    pm_opt.large_cache = 0;
    cr_assert(pm_large_free(b));
    pm_opt.large_cache = (size_t)1 << 30;
    cr_assert(pm_large_free(a));
    cr_assert(pm_large_free(c));
    cr_assert_eq(large_stats().cached_bytes, 8 * MiB);
    *lo = a;
    *hi = c;
    return true;
}

/* No run of cached pieces holds 11 MiB, but two pieces with a 4 MiB hole between them do:
 * the hole gets fresh pages and the block is built there, the pieces keeping their pages. */
Test(large, a_hole_between_cached_pieces_is_filled_to_build_a_block) {
    settle_options();
    char *lo, *hi;
    if (!cache_pieces_around_a_hole(&lo, &hi))
        cr_skip_test("the kernel did not place three mappings side by side");
    uint64_t extended = large_stats().extended;
    char *p = pm_large_alloc(11 * MiB, 0, false);
    cr_assert_eq(p, lo, "the block should start at the lower piece");
    cr_assert_eq(large_stats().extended, extended + 1);
    cr_assert(all_bytes(p, 4 * MiB, 0xcc), "the lower piece keeps its pages");
    cr_assert(all_bytes(p + 4 * MiB, 4 * MiB, 0), "the hole is fresh, zero pages");
    cr_assert(all_bytes(p + 8 * MiB, 3 * MiB, 0xaa), "the upper piece keeps its pages");
    cr_assert_eq(large_stats().cached_bytes, 1 * MiB, "the upper piece's tail stays cached");
    memset(p, 0x11, 11 * MiB);
    cr_assert(pm_large_free(p));
    cr_assert_eq(large_stats().cached_bytes, 12 * MiB);
}

/* The same hole, taken by a mapping that is not ours: it is left alone, and the block is
 * made elsewhere, off the hole. */
Test(large, a_hole_someone_else_mapped_is_left_alone) {
    settle_options();
    char *lo, *hi;
    if (!cache_pieces_around_a_hole(&lo, &hi))
        cr_skip_test("the kernel did not place three mappings side by side");
    char *theirs = mmap(lo + 4 * MiB + 64 * 4096, 4096, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    cr_assert_eq(theirs, lo + 4 * MiB + 64 * 4096, "the hole should be free");
    theirs[0] = 0x5a;
    char *p = pm_large_alloc(11 * MiB, 0, false);
    cr_assert_not_null(p);
    /* (a piece may still be extended outwards, into free space below or above it) */
    cr_assert(p + 11 * MiB <= lo + 4 * MiB || p >= hi, "the block spans the hole");
    cr_assert_eq(theirs[0], 0x5a, "the mapping in the hole was replaced");
    memset(p, 0x22, 11 * MiB);
    cr_assert_eq(theirs[0], 0x5a);
    cr_assert(pm_large_free(p));
    cr_assert_eq(munmap(theirs, 4096), 0);
}

/* ---- the zone ---- */

/* Three fresh blocks (nothing cached): one after the other, upwards, in the zone far below the
 * libraries, not where the kernel places mappings (just below the libraries). */
Test(large, fresh_blocks_lie_side_by_side_in_the_zone_far_from_other_mappings) {
    settle_options();
    char *a = alloc_filled(4 * MiB, 1);
    char *b = alloc_filled(3 * MiB, 2);
    char *c = alloc_filled(5 * MiB, 3);
    cr_assert_eq(b, a + 4 * MiB, "the second block should follow the first");
    cr_assert_eq(c, b + 3 * MiB, "the third block should follow the second");
    char *theirs = mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(theirs, MAP_FAILED);
    uintptr_t apart = (uintptr_t)theirs > (uintptr_t)a ? (uintptr_t)theirs - (uintptr_t)a
                                                        : (uintptr_t)a - (uintptr_t)theirs;
    cr_assert_gt(apart, (uintptr_t)1 << 32, "the zone lies %#lx bytes from the kernel's mapping",
                 (unsigned long)apart);
    cr_assert(all_bytes(a, 4 * MiB, 1) && all_bytes(b, 3 * MiB, 2) && all_bytes(c, 5 * MiB, 3));
    cr_assert_eq(munmap(theirs, 4 * MiB), 0);
    cr_assert(pm_large_free(a) && pm_large_free(b) && pm_large_free(c));
}

/* A block unmapped in the middle of the zone leaves a hole: fresh blocks go there first, the
 * smallest hole that holds them, and only then to the top. Fresh pages: zero. */
Test(large, a_hole_in_the_zone_takes_the_next_fresh_blocks) {
    settle_options();
    char *a = alloc_filled(4 * MiB, 1);
    char *b = alloc_filled(4 * MiB, 2);
    char *c = alloc_filled(2 * MiB, 3);
    char *d = alloc_filled(4 * MiB, 4);
    cr_assert(b == a + 4 * MiB && c == b + 4 * MiB && d == c + 2 * MiB);
    pm_opt.large_cache = 0; /* every free unmaps: holes, and nothing cached */
    cr_assert(pm_large_free(b));
    cr_assert(pm_large_free(c)); /* merges with b's hole: 6 MiB */
    char *e = pm_large_alloc(1 * MiB, 0, true);
    cr_assert_eq(e, b, "a fresh block should take the hole");
    cr_assert(all_bytes(e, 1 * MiB, 0));
    char *f = pm_large_alloc(5 * MiB, 0, false);
    cr_assert_eq(f, b + 1 * MiB, "the rest of the hole holds 5 MiB exactly");
    char *g = pm_large_alloc(1 * MiB, 0, false);
    cr_assert_eq(g, d + 4 * MiB, "the hole is full: the top");
    cr_assert(pm_large_free(g)); /* the top comes down */
    char *h = pm_large_alloc(2 * MiB, 0, false);
    cr_assert_eq(h, d + 4 * MiB, "the top should have come down when its last block went");
    cr_assert(pm_large_free(a) && pm_large_free(d) && pm_large_free(e) && pm_large_free(f) &&
              pm_large_free(h));
}

/* A hole someone else has mapped into is dropped, their mapping untouched; a mapping at the
 * zone's top turns the zone off, and the kernel places blocks from then on. */
Test(large, the_zone_gives_way_to_mappings_not_its_own) {
    settle_options();
    char *a = alloc_filled(4 * MiB, 1);
    char *b = alloc_filled(4 * MiB, 2);
    char *c = alloc_filled(4 * MiB, 3);
    cr_assert(b == a + 4 * MiB && c == b + 4 * MiB);
    pm_opt.large_cache = 0;
    cr_assert(pm_large_free(b));
    pm_opt.large_cache = (size_t)1 << 30;
    char *theirs = mmap(b + MiB, 4096, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    cr_assert_eq(theirs, b + MiB, "the hole should be free");
    theirs[0] = 0x5a;
    char *d = alloc_filled(2 * MiB, 4); /* the hole would fit it, but is taken */
    cr_assert(d + 2 * MiB <= b || d >= b + 4 * MiB, "the block overlaps the hole");
    cr_assert_eq(theirs[0], 0x5a, "their mapping was replaced");
    char *top = d == c + 4 * MiB ? d + 2 * MiB : c + 4 * MiB;
    char *stop = mmap(top, 4096, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    cr_assert_eq(stop, top, "the top should be free");
    stop[0] = 0x6b;
    char *e = alloc_filled(4 * MiB, 5);
    cr_assert(e + 4 * MiB <= stop || e > stop, "the block overlaps the mapping at the top");
    cr_assert(stop[0] == 0x6b && theirs[0] == 0x5a);
    cr_assert(all_bytes(a, 4 * MiB, 1) && all_bytes(c, 4 * MiB, 3) && all_bytes(d, 2 * MiB, 4));
    cr_assert_eq(munmap(theirs, 4096), 0);
    cr_assert_eq(munmap(stop, 4096), 0);
    cr_assert(pm_large_free(a) && pm_large_free(c) && pm_large_free(d) && pm_large_free(e));
}

/* Buffers of 1-6 MiB replaced at random, each filled whole (bigbuf's pattern): after the first
 * round, the cache's pieces serve most requests where they lie, so the program faults few
 * pages in. Stitching or fresh mappings would fault (or move) most of them. */
Test(large, random_replacement_faults_few_pages_in) {
    settle_options();
    uint64_t seed = 0x2545f4914f6cdd1dull;
    char *live[12];
    size_t size[12], pages = 0;
    for (int i = 0; i < 12; i++) {
        size[i] = (size_t)(1 + i % 6) * MiB;
        live[i] = alloc_filled(size[i], i);
    }
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    for (int step = 0; step < 300; step++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)((seed >> 33) % 12);
        cr_assert(pm_large_free(live[slot]));
        size[slot] = MiB + (size_t)((seed >> 40) % (5 * 256)) * 4096;
        live[slot] = alloc_filled(size[slot], step);
        pages += size[slot] / 4096;
    }
    getrusage(RUSAGE_SELF, &after);
    long faults = after.ru_minflt - before.ru_minflt;
    pm_large_stats s = large_stats();
    cr_assert_lt((size_t)faults * 5, pages,
                 "%ld page faults for %zu pages (in place %llu, extended %llu)", faults, pages,
                 (unsigned long long)s.in_place, (unsigned long long)s.extended);
    for (int i = 0; i < 12; i++)
        cr_assert(pm_large_free(live[i]));
}

/* Huge pages (large.c): blocks of 4 MiB and more are whole huge pages (2 MiB-aligned, sizes
 * rounded up to 2 MiB) while the program fills its large blocks; a block freed with most of it
 * never touched turns that off, and a filled one on again. */
Test(large, huge_pages_follow_how_the_program_fills_its_blocks) {
    settle_options();
    pm_opt.huge_pages = true; /* POOLMALLOC_HUGE_PAGES=1 */
    char *a = alloc_filled(5 * MiB, 0x21);
    cr_assert_eq((uintptr_t)a % (2 * MiB), 0, "a block of 5 MiB should start a huge page");
    cr_assert_eq(pm_large_usable(a), 6 * MiB, "and be rounded to whole huge pages");
    char *sparse = pm_large_alloc(16 * MiB, 0, false);
    cr_assert_not_null(sparse);
    sparse[0] = 1; /* one page of 16 MiB touched */
    cr_assert(pm_large_free(sparse));
    char *b = pm_large_alloc(5 * MiB, 0, false);
    cr_assert_not_null(b);
    cr_assert_eq(pm_large_usable(b), 5 * MiB, "after a sparse block, no rounding to huge pages");
    cr_assert(pm_large_free(a)); /* filled: huge pages again */
    char *c = pm_large_alloc(7 * MiB, 0, false);
    cr_assert_not_null(c);
    cr_assert_eq(pm_large_usable(c), 8 * MiB);
    pm_opt.huge_pages = false; /* POOLMALLOC_HUGE_PAGES=0 */
    char *d = pm_large_alloc(7 * MiB, 0, false);
    cr_assert_not_null(d);
    cr_assert_eq(pm_large_usable(d), 7 * MiB, "POOLMALLOC_HUGE_PAGES=0 should keep 4 KiB pages");
    cr_assert(pm_large_free(b));
    cr_assert(pm_large_free(c));
    cr_assert(pm_large_free(d));
}

/* Pieces that lie apart, neither extensible, never serve a larger request by moving their pages
 * (stitching was slower than fresh pages on the guests we measure on): the block is a fresh
 * mapping, zero, and the pieces stay cached within the budget, their contents intact. */
Test(large, separate_pieces_are_not_moved_together) {
    settle_options();
    char *guard = cache_two_separate_pieces();
    pm_large_stats before = large_stats();
    char *p = pm_large_alloc(8 * MiB, 0, false);
    cr_assert_not_null(p);
    pm_large_stats after = large_stats();
    cr_assert_eq(after.in_place, before.in_place);
    cr_assert_eq(after.extended, before.extended);
    cr_assert_eq(after.cache_hits, before.cache_hits);
    cr_assert(all_bytes(p, 8 * MiB, 0), "a fresh mapping is zero: no cached page was moved in");
    cr_assert_leq(after.cached_bytes, after.budget);
    cr_assert_eq(after.cached_bytes, after.budget, "the budget (%llu) keeps what it can",
                 (unsigned long long)after.budget);
    memset(p, 0x5c, 8 * MiB);
    cr_assert(pm_large_free(p));
    cr_assert(pm_large_free(guard));
}

/* A block of two kernel mappings (a cached piece extended below by fresh pages) shrinks, takes
 * its cached rest back, and grows past the cache, its data intact each time. */
Test(large, a_block_of_two_mappings_shrinks_and_grows) {
    settle_options();
    char *c = alloc_filled(4 * MiB, 0x41);
    occupy_page(c + 4 * MiB); /* it can only grow downwards */
    cr_assert(pm_large_free(c));
    char *p = pm_large_alloc(8 * MiB, 0, false);
    cr_assert_eq(p, c - 4 * MiB, "the cached piece should have been extended below");
    memset(p, 0x77, 8 * MiB);
    char *q = pm_large_realloc(p, 2 * MiB);
    cr_assert_eq(q, p, "a shrink stays in place");
    cr_assert_eq(pm_large_usable(q), 2 * MiB);
    cr_assert(all_bytes(q, 2 * MiB, 0x77));
    char *r = pm_large_realloc(q, 6 * MiB); /* takes back the pieces that follow it */
    cr_assert_eq(r, q, "the cached rest right behind the block should be absorbed");
    cr_assert_geq(pm_large_usable(r), 6 * MiB);
    cr_assert(all_bytes(r, 6 * MiB, 0x77));
    /* growing past the cache: into cached pages, fresh pages after it, or moved, each time */
    size_t size = 6 * MiB;
    for (int i = 0; i < 10; i++) {
        memset(r, 0x30 + i, size);
        size += MiB + (size_t)i * 4096;
        r = pm_large_realloc(r, size);
        cr_assert_not_null(r, "growth %d of a block of two mappings failed", i);
        cr_assert_geq(pm_large_usable(r), size);
        cr_assert(all_bytes(r, size - MiB - (size_t)i * 4096, 0x30 + i), "growth %d lost data", i);
    }
    cr_assert(pm_large_free(r));
}

/* A block that must move to grow goes into resident cached pages, its bytes copied, with half
 * as much room again: the cached pages are not faulted anew, and the next reallocs within the
 * room stay where they are. The old pages go to the cache. */
Test(large, a_growing_block_moves_into_cached_pages_with_room) {
    settle_options();
    char *c = alloc_filled(16 * MiB, 0x5c); /* faulted in, then cached */
    occupy_page(c - 4096);                   /* x must not lie right below c: it would absorb it */
    char *x = alloc_filled(4 * MiB, 0x17);
    occupy_page(x + 4 * MiB); /* x cannot grow where it lies */
    cr_assert(pm_large_free(c));
    pm_large_stats before = large_stats();
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    char *g = pm_large_realloc(x, 6 * MiB);
    cr_assert_not_null(g);
    cr_assert(g >= c && g + 6 * MiB <= c + 16 * MiB, "the block should move into the cached piece");
    cr_assert_eq(pm_large_usable(g), 9 * MiB, "half as much room again");
    cr_assert(all_bytes(g, 4 * MiB, 0x17), "the block's bytes are copied");
    cr_assert(all_bytes(g + 4 * MiB, 5 * MiB, 0x5c), "the room is the cached pages, as they were");
    getrusage(RUSAGE_SELF, &r1);
    cr_assert_lt(r1.ru_minflt - r0.ru_minflt, 256, "%ld faults: the cached pages were not reused",
                 r1.ru_minflt - r0.ru_minflt);
    pm_large_stats after = large_stats();
    cr_assert_eq(after.moved_to_cache, before.moved_to_cache + 1);
    cr_assert_eq(after.live_bytes, 9 * MiB);
    cr_assert_eq(after.cached_bytes, 16 * MiB - 9 * MiB + 4 * MiB, "the old pages are cached");
    cr_assert_eq(pm_large_realloc(g, 8 * MiB), g, "growth within the room stays in place");
    cr_assert(pm_large_was_freed(x), "a free of the old address is a double free");
    cr_assert(pm_large_free(g));
}

/* Cached bytes never exceed what the program gave up and a quarter of its peak more:
 * live + cached <= peak * 5/4. */
Test(large, the_cache_stays_within_the_resident_budget) {
    settle_options();
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    char *live[12] = {0};
    for (int step = 0; step < 400; step++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)((seed >> 33) % 12);
        if (live[slot] != NULL) {
            cr_assert(pm_large_free(live[slot]));
            live[slot] = NULL;
        } else {
            size_t size = (size_t)(1 + (seed >> 40) % 6) * MiB + (size_t)((seed >> 20) % 4096) * 64;
            live[slot] = pm_large_alloc(size, 0, false);
            cr_assert_not_null(live[slot]);
            memset(live[slot], step & 0xff, size);
        }
        pm_large_stats s = large_stats();
        cr_assert_leq(s.live_bytes + s.cached_bytes, s.peak_live + s.peak_live / 4,
                      "step %d: live %llu + cached %llu > 5/4 of the peak %llu", step,
                      (unsigned long long)s.live_bytes, (unsigned long long)s.cached_bytes,
                      (unsigned long long)s.peak_live);
        cr_assert_leq(s.cached_bytes, s.budget);
    }
    for (int i = 0; i < 12; i++)
        if (live[i] != NULL)
            cr_assert(pm_large_free(live[i]));

    /* the option caps the budget; a cap that is no whole number of pages still trims whole
     * pages (a cut inside a page once left unaligned pieces that were handed out unmapped) */
    pm_opt.large_cache = 3 * MiB + 1000;
    char *big = alloc_filled(8 * MiB, 1);
    cr_assert(pm_large_free(big));
    cr_assert_leq(large_stats().cached_bytes, 3 * MiB);
    cr_assert_eq(large_stats().cached_bytes % 4096, 0);
    char *again = alloc_filled(3 * MiB, 2); /* all of the cache, writable */
    cr_assert_eq((uintptr_t)again % 4096, 0);
    cr_assert(pm_large_free(again));
    cr_assert_eq(resident_pages(big + 3 * MiB, 5 * MiB), -1, "what exceeds the cap is unmapped");
}

Test(large, cached_memory_expires_and_the_budget_decays) {
    settle_options();
    char *p = alloc_filled(6 * MiB, 3);
    cr_assert(pm_large_free(p));
    cr_assert_eq(large_stats().cached_bytes, 6 * MiB);
    pm_opt.purge_delay_ms = 0; /* everything is old now */
    pm_large_expire(pm_os_now_ms() + 1);
    pm_large_stats s = large_stats();
    cr_assert_eq(s.cached_bytes, 0);
    cr_assert_eq(s.peak_live, 0, "the peak should decay to what is still held");
    cr_assert_eq(resident_pages(p, 6 * MiB), -1, "an expired piece is unmapped");
}

/* munmap refused (as at vm.max_map_count): no abort; the pages are purged and kept on a retry
 * list, and a later release unmaps them. */
Test(large, an_unmap_failure_is_survived_and_retried) {
    settle_options();
    pm_opt.large_cache = 0; /* every free unmaps at once */
    char *p = alloc_filled(4 * MiB, 0x42);
    cr_assert_gt(resident_pages(p, 4 * MiB), 0);
    pm_large_fail_unmaps = 1;
    cr_assert(pm_large_free(p));
    pm_large_stats s = large_stats();
    cr_assert_eq(s.unmap_failures, 1);
    cr_assert_eq(s.pending_bytes, 4 * MiB);
    cr_assert_eq(resident_pages(p, 4 * MiB), 0, "the kept range should have been purged");

    char *q = alloc_filled(4 * MiB, 0x43); /* the allocator goes on */
    cr_assert(pm_large_free(q));

    cr_assert_geq(pm_large_release_cache(), 4 * MiB);
    cr_assert_eq(large_stats().pending_bytes, 0);
    cr_assert_eq(resident_pages(p, 4 * MiB), -1, "the retry should have unmapped the range");
}

/* The process's address-space size, from /proc/self/statm. */
static size_t mapped_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    cr_assert(f != NULL && fscanf(f, "%lu", &pages) == 1);
    fclose(f);
    return pages * 4096;
}

/* In a child under RLIMIT_AS: 256 MiB of freed blocks sit in the cache, and a 200 MiB request
 * fits only once they are given back. Exit status 0 when it succeeds, else a code. */
static int enomem_child(void) {
    char *blocks[8];
    for (int i = 0; i < 8; i++) { /* a page between them: no run of pieces fits 200 MiB */
        if ((blocks[i] = pm_large_alloc(32 * MiB, 0, false)) == NULL)
            return 10;
        mmap(blocks[i] - 4096, 4096, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        mmap(blocks[i] + 32 * MiB, 4096, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    }
    for (int i = 0; i < 8; i++)
        memset(blocks[i], i, 32 * MiB);
    for (int i = 0; i < 8; i++)
        pm_large_free(blocks[i]);
    if (large_stats().cached_bytes != 256 * MiB)
        return 11;
    struct rlimit lim = {mapped_bytes() + 64 * MiB, RLIM_INFINITY};
    lim.rlim_max = lim.rlim_cur;
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        return 12;
    void *probe = mmap(NULL, 200 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe != MAP_FAILED)
        return 13; /* the limit does not bite: the test would prove nothing */
    char *p = pm_large_alloc(200 * MiB, 0, false);
    if (p == NULL)
        return 14;
    memset(p, 1, 200 * MiB);
    if (large_stats().cached_bytes != 0)
        return 15;
    /* growth that must move: the room (1.5x: 250 MiB more) exceeds the limit, the request
     * alone (100 MiB more) fits, and is what realloc then gets */
    mmap(p + 200 * MiB, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    char *q = pm_large_realloc(p, 300 * MiB);
    if (q == NULL)
        return 16;
    if (q[0] != 1 || q[200 * MiB - 1] != 1 || pm_large_usable(q) < 300 * MiB)
        return 17;
    memset(q + 200 * MiB, 2, 100 * MiB);
    return 0;
}

Test(large, a_refused_mapping_is_retried_after_the_cache_is_given_back) {
    settle_options();
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(enomem_child());
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child died (status %#x)", status);
    cr_assert_eq(WEXITSTATUS(status), 0,
                 "child step failed with code %d (10-12 setup, 13 limit ineffective, 14 the "
                 "allocation failed, 15 the cache was not released)",
                 WEXITSTATUS(status));
}

Test(large, a_recently_freed_block_is_known_as_freed) {
    settle_options();
    char *p = pm_large_alloc(1 * MiB, 0, false);
    cr_assert_not(pm_large_was_freed(p), "a live block is not freed");
    cr_assert(pm_large_free(p));
    cr_assert(pm_large_was_freed(p));
    cr_assert_not(pm_large_free(p), "a second free must not succeed");
    char *foreign = mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_not(pm_large_was_freed(foreign), "a pointer never handed out is not 'freed'");
    munmap(foreign, 1 * MiB);
    char *again = pm_large_alloc(1 * MiB, 0, false); /* the cached mapping, same address */
    cr_assert_eq(again, p);
    cr_assert_not(pm_large_was_freed(again), "a block handed out again is live");
    cr_assert(pm_large_free(again));
}

/* The public free: a second free of a 1 MiB block ends the process with the double-free line.
 * The child's stderr goes to a file, read once the child is gone. */
Test(large, a_double_free_of_a_large_block_says_so) {
    char path[] = "/tmp/test-large-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fd, 2);
        void *p = pm_malloc(1 * MiB);
        pm_free(p);
        pm_free(p);
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    char out[1024] = {0};
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    close(fd);
    cr_assert_gt(n, 0, "the child wrote nothing on stderr");
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "the second free did not abort (status %#x): %s", status, out);
    /* Under POOLMALLOC_DEBUG=1 the debug layer sees the second free first and reports it in
     * its own words, with the block's stacks (the child initialised the options; the parent
     * reads the same environment). */
    pm_init();
    const char *said = pm_instr_opt.debug
                           ? "debug: double free (or use of a freed block) detected by free(0x"
                           : "free(): double free of large block 0x";
    cr_assert(strstr(out, said) != NULL, "the message does not say \"%s\": %s", said, out);
}

/* Many blocks at a steady count, freed and made again at random (the table and the cache's
 * bookkeeping): every live block is found at its address with its size after every step, no
 * freed one is, and the cache stays in address order. Deletion from the table moves entries
 * back (no tombstones), so a step that broke a probe chain would lose a live block here. */
Test(large, every_live_block_is_found_through_many_frees_and_allocations) {
    settle_options();
    enum { LIVE = 150, STEPS = 3000 };
    static char *live[LIVE];
    static size_t size[LIVE];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < LIVE; i++) {
        size[i] = (size_t)(33 + i % 97) * 4096;
        live[i] = pm_large_alloc(size[i], 0, false);
        cr_assert_not_null(live[i]);
    }
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)((seed >> 33) % LIVE);
        char *old = live[slot];
        cr_assert(pm_large_free(old));
        size[slot] = (size_t)(33 + (seed >> 45) % 200) * 4096;
        live[slot] = pm_large_alloc(size[slot], 0, false);
        cr_assert_not_null(live[slot]);
        if (old != live[slot])
            cr_assert_eq(pm_large_usable(old), 0, "step %d: freed block %p still found", step,
                         (void *)old);
        if (step % 50 == 0 || step == STEPS - 1) {
            cr_assert(pm_large_consistent(), "step %d: table or cache inconsistent", step);
            for (int i = 0; i < LIVE; i++)
                cr_assert_geq(pm_large_usable(live[i]), size[i], "step %d: block %d lost", step, i);
        }
    }
    cr_assert_eq(large_stats().live_blocks, LIVE);
    for (int i = 0; i < LIVE; i++)
        cr_assert(pm_large_free(live[i]));
    cr_assert(pm_large_consistent());
    cr_assert_eq(large_stats().live_blocks, 0);
}

/* Domains (large.c): each thread allocates from its own domain (its own lock, table and
 * cache), so a block one thread freed is not where another thread's next block comes from;
 * and a block is still found, resized and freed by any thread, whichever domain holds it. */
typedef struct domain_job {
    char *live[4];
    char *freed;
} domain_job;

static void *make_blocks_elsewhere(void *arg) {
    domain_job *job = arg;
    for (int i = 0; i < 4; i++)
        job->live[i] = alloc_filled((size_t)(i + 1) * MiB, 0x40 + i);
    job->freed = pm_large_alloc(3 * MiB, 0, false);
    cr_assert(pm_large_free(job->freed)); /* cached in this thread's domain */
    return NULL;
}

Test(large, another_threads_blocks_are_found_resized_and_freed) {
    settle_options();
    char *mine = pm_large_alloc(1 * MiB, 0, false); /* this thread's domain, chosen now */
    cr_assert_not_null(mine);
    domain_job job = {.freed = NULL};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, make_blocks_elsewhere, &job), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    char *here = pm_large_alloc(3 * MiB, 0, false);
    cr_assert_neq(here, job.freed, "the other thread's cached block came from its own domain");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pm_large_usable(job.live[i]), (size_t)(i + 1) * MiB);
    char *grown = pm_large_realloc(job.live[1], 5 * MiB);
    cr_assert_not_null(grown);
    cr_assert(all_bytes(grown, 2 * MiB, 0x41), "a resized block keeps its contents");
    job.live[1] = grown;
    cr_assert(pm_large_consistent());
    for (int i = 0; i < 4; i++) {
        cr_assert(pm_large_free(job.live[i]), "block %d of the other thread not freed", i);
        cr_assert(pm_large_was_freed(job.live[i]));
    }
    cr_assert_not(pm_large_free(job.live[0]), "a second free must not succeed");
    cr_assert(pm_large_free(here));
    cr_assert(pm_large_free(mine));
    cr_assert_eq(large_stats().live_blocks, 0);
    cr_assert(pm_large_consistent());
}
