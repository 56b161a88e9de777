/*
 * test-hardening.c: issue 7's misuse and hardening cases (8, 9, 13 and "Hardening").
 *
 * Each misuse runs in a forked child (pm_test_spawn) with a deadline and its stderr captured:
 * the pass is a SIGABRT with poolmalloc's one-line report, or, for the forgery cases, either
 * that or an allocator that was not fooled. A SIGSEGV, a hang, or a block handed out twice or
 * at an attacker's address fails. The binary links only the core (pm_ functions), so nothing
 * else in the process allocates from poolmalloc.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <sys/mman.h>

#include "poolmalloc.h"
#include "test-util.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define ARENA ((uintptr_t)4 << 20) /* arenas are 4 MiB-aligned */

/* Exit codes a misuse child uses to say how it was fooled (0 would be "not fooled"). */
enum { FOOLED = 3, BAD_SETUP = 4 };

static void run_misuse(void (*fn)(void *), const char *const *env, pm_child *c) {
    pm_spawn spec = {.fn = fn, .env = env, .timeout_s = 20};
    pm_test_spawn(&spec, c);
}

/* The report must be one line that starts with "poolmalloc:". */
static void expect_one_line_report(const pm_child *c, const char *what) {
    const char *line = strstr(c->err, "poolmalloc:");
    cr_assert_not_null(line, "%s: no poolmalloc report on stderr:\n%.1500s", what, c->err);
    const char *nl = strchr(line, '\n');
    cr_assert(nl != NULL && strstr(nl + 1, "poolmalloc:") == NULL,
              "%s: expected one report line, got:\n%.1500s", what, c->err);
}

/* ---- 8: a block boundary the pool never carved -------------------------------------------- */

static void free_uncarved(void *arg) {
    (void)arg;
    /* 432-byte blocks: a fresh pool of 16 KiB holds 37 of them, and the first carve threads
     * only a page's worth (9). Block 30 is a block boundary inside the pool, never handed out. */
    char *p = pm_malloc(432);
    if (p == NULL || pm_usable_size(p) != 432)
        _exit(BAD_SETUP);
    char *never = p + 30 * 432;
    if (((uintptr_t)never & ~(uintptr_t)(16 * KiB - 1)) != ((uintptr_t)p & ~(uintptr_t)(16 * KiB - 1)))
        _exit(BAD_SETUP); /* not in the same 16 KiB unit: the geometry changed */
    pm_free(never);
    /* accepted: it would now be handed out, and again once carved */
    _exit(FOOLED);
}

Test(hardening, free_of_a_never_carved_block_aborts) {
    static pm_child c;
    run_misuse(free_uncarved, NULL, &c);
    pm_test_expect_abort(&c, "free of a block boundary past the carve point", NULL);
    expect_one_line_report(&c, "uncarved block");
}

/* A block the carve has keyed and malloc has not reached yet: the free finds its key, and the
 * report says it was never handed out (not a double free). */
static void free_carved_unused(void *arg) {
    (void)arg;
    char *p = pm_malloc(432); /* a fresh pool: the first block, the carved page's others unused */
    char *next = p + 432;
    if (p == NULL || (((uintptr_t)p ^ (uintptr_t)next) >> 12) != 0)
        _exit(BAD_SETUP); /* the test needs the neighbour on the same page */
    pm_free(next);
    _exit(FOOLED);
}

Test(hardening, free_of_a_carved_block_not_yet_handed_out_aborts) {
    static pm_child c;
    run_misuse(free_carved_unused, NULL, &c);
    pm_test_expect_abort(&c, "free of a carved block malloc has not handed out",
                         (const char *[]){"never handed out", NULL});
    expect_one_line_report(&c, "carved unused block");
}

/* An overflow wipes the key of the unused block after a live one, and the program frees that
 * block: free cannot tell it from a live block. malloc hands it out from the cache, and must
 * not hand it out a second time when it reaches it in the pool's unused blocks. */
static void free_unused_after_overflow(void *arg) {
    (void)arg;
    char *p = pm_malloc(432);
    uintptr_t *next = (uintptr_t *)(p + 432);
    if (p == NULL || (((uintptr_t)p ^ (uintptr_t)next) >> 12) != 0)
        _exit(BAD_SETUP);
    memset(next, 0, 16); /* the overflow: 16 bytes past p's block */
    pm_free(next);
    void *x = pm_malloc(432), *y = pm_malloc(432);
    _exit(x == y ? FOOLED : 0); /* FOOLED: the same block handed out twice */
}

Test(hardening, an_unused_block_freed_after_an_overflow_is_not_handed_out_twice) {
    static pm_child c;
    run_misuse(free_unused_after_overflow, NULL, &c);
    pm_test_expect_abort(&c, "unused block freed after an overflow",
                         (const char *[]){"heap corruption", NULL});
    expect_one_line_report(&c, "unused block after an overflow");
}

/* ---- 9: 8 bytes before the end of an arena ------------------------------------------------- */

static bool page_mapped(uintptr_t addr) {
    return msync((void *)addr, 4096, MS_ASYNC) == 0; /* ENOMEM: nothing mapped there */
}

/* An arena of this thread's that is full to its last unit, with an unmapped page after it,
 * so that reading past its end would fault: the report must come before any such read. 2 KiB
 * blocks (16 KiB pools) fill arenas one after another; an arena is full when the next one
 * starts. */
static void free_arena_end(void *arg) {
    (void)arg;
    uintptr_t base = 0, current = 0, seen[64];
    int nseen = 0;
    for (int i = 0; i < 40000 && base == 0; i++) {
        char *p = pm_malloc(2 * KiB);
        if (p == NULL)
            _exit(BAD_SETUP);
        uintptr_t b = (uintptr_t)p & ~(ARENA - 1);
        if (b != current && current != 0) {
            uintptr_t after = current + ARENA;
            bool ours = false; /* the next slot is another of our arenas */
            for (int k = 0; k < nseen; k++)
                ours = ours || seen[k] == after;
            /* This child dies at the free below: unmapping the first page of our own next
             * arena harms nothing, and makes the page after `current` fault, as the case
             * needs (arenas are often mapped back to back). */
            if (ours && page_mapped(after))
                munmap((void *)after, 4096);
            if (!page_mapped(after))
                base = current;
        }
        if (b != current && nseen < 64)
            seen[nseen++] = b;
        current = b;
    }
    if (base == 0)
        _exit(BAD_SETUP);
    if (!pm_owns((void *)(base + ARENA - 2 * KiB)))
        _exit(BAD_SETUP); /* the last unit is not in a pool: not the case under test */
    pm_free((void *)(base + ARENA - 8));
    _exit(FOOLED);
}

Test(hardening, free_8_bytes_before_arena_end_reports_not_segfaults) {
    static pm_child c;
    run_misuse(free_arena_end, NULL, &c);
    if (!c.timed_out && WIFEXITED(c.status) && WEXITSTATUS(c.status) == BAD_SETUP)
        cr_skip_test("no arena with an unmapped page after it turned up");
    pm_test_expect_abort(&c, "free(arena base + 4 MiB - 8)", NULL);
    expect_one_line_report(&c, "arena end");
}

/* ---- 13: POISON on remote frees; double free of a large block ------------------------------ */

/* POOLMALLOC_POISON is read at start-up, so these run lifecycle-prog under the preload. */
static void poison_case(const char *how) {
    char prog[PATH_MAX];
    pm_test_build_path(prog, sizeof prog, "tests/integration/lifecycle-prog");
    const char *argv[] = {prog, "poison", how, NULL};
    const char *env[] = {"POOLMALLOC_POISON=1", NULL};
    static pm_child c;
    pm_spawn spec = {.argv = argv, .env = env, .preload = true, .timeout_s = 20};
    pm_test_spawn(&spec, &c);
    pm_test_expect_exit0(&c, "POOLMALLOC_POISON=1");
}

Test(hardening, poison_fills_blocks_freed_by_another_thread) { poison_case("remote"); }

/* The control: the same on the owning thread. */
Test(hardening, poison_fills_blocks_freed_locally) { poison_case("local"); }

static void double_free_1mib(void *arg) {
    (void)arg;
    void *p = pm_malloc(MiB);
    if (p == NULL)
        _exit(BAD_SETUP);
    pm_free(p);
    pm_free(p);
    _exit(FOOLED);
}

Test(hardening, double_free_of_a_1mib_block_says_double_free) {
    static pm_child c;
    run_misuse(double_free_1mib, NULL, &c);
    pm_test_expect_abort(&c, "double free of a 1 MiB block", (const char *[]){"double free", NULL});
}

/* ---- hardening: forged free-list links ---------------------------------------------------- */

/* Where an attacker would like malloc to return: a static buffer, aligned like a block. */
static _Alignas(4096) unsigned char attacker_target[8192];

static bool is_target(const void *p) {
    return (const unsigned char *)p >= attacker_target &&
           (const unsigned char *)p < attacker_target + sizeof attacker_target;
}

/* A use after free writes 8 bytes over a freed block's first word (the free-list link): the
 * next mallocs must not return the attacker's address. Through the heap's cache. */
static void forge_cache_link(void *arg) {
    (void)arg;
    void **p = pm_malloc(64);
    if (p == NULL)
        _exit(BAD_SETUP);
    pm_free(p);
    *p = attacker_target + 64; /* the write after free */
    for (int i = 0; i < 4; i++) {
        void *q = pm_malloc(64);
        if (is_target(q)) {
            fprintf(stderr, "malloc returned the attacker's address %p\n", q);
            _exit(FOOLED);
        }
    }
    _exit(0);
}

Test(hardening, forged_link_in_the_cache_is_not_followed) {
    static pm_child c;
    run_misuse(forge_cache_link, NULL, &c);
    if (!c.timed_out && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)
        return; /* not fooled */
    pm_test_expect_abort(&c, "forged free-list link (cache)", (const char *[]){"poolmalloc", NULL});
}

/* The same through a pool's own free list: the cache of the class is filled first, so the
 * last blocks freed go back to the pool. */
static void forge_pool_link(void *arg) {
    (void)arg;
    enum { N = 120 };
    void **b[N];
    for (int i = 0; i < N; i++)
        if ((b[i] = pm_malloc(64)) == NULL)
            _exit(BAD_SETUP);
    for (int i = 0; i < N; i++)
        pm_free(b[i]);
    *b[N - 1] = attacker_target + 128; /* the last one freed heads the pool's free list */
    for (int i = 0; i < N + 8; i++) {
        void *q = pm_malloc(64);
        if (is_target(q)) {
            fprintf(stderr, "malloc returned the attacker's address %p\n", q);
            _exit(FOOLED);
        }
    }
    _exit(0);
}

Test(hardening, forged_link_in_a_pool_free_list_is_not_followed) {
    static pm_child c;
    run_misuse(forge_pool_link, NULL, &c);
    if (!c.timed_out && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)
        return;
    pm_test_expect_abort(&c, "forged free-list link (pool)", (const char *[]){"poolmalloc", NULL});
}

/* A forged link on a remote free list: another thread frees a block of ours, then writes over
 * its link before we take the list in. */
static void **volatile remote_victim;
static void *remote_free_and_forge(void *arg) {
    (void)arg;
    pm_free(remote_victim);
    *remote_victim = attacker_target + 256;
    return NULL;
}

static void forge_remote_link(void *arg) {
    (void)arg;
    enum { N = 600 };
    static void *b[N];
    remote_victim = pm_malloc(96);
    for (int i = 0; i < N; i++) /* enough that the slow path runs and takes the remote list */
        b[i] = pm_malloc(96);
    pthread_t t;
    pthread_create(&t, NULL, remote_free_and_forge, NULL);
    pthread_join(t, NULL);
    for (int i = 0; i < 2 * N; i++) {
        void *q = pm_malloc(96);
        if (is_target(q)) {
            fprintf(stderr, "malloc returned the attacker's address %p\n", q);
            _exit(FOOLED);
        }
    }
    for (int i = 0; i < N; i++)
        pm_free(b[i]);
    _exit(0);
}

Test(hardening, forged_link_on_a_remote_list_is_not_followed) {
    static pm_child c;
    run_misuse(forge_remote_link, NULL, &c);
    if (!c.timed_out && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)
        return;
    pm_test_expect_abort(&c, "forged free-list link (remote)",
                         (const char *[]){"poolmalloc", NULL});
}

/* A 1-byte overflow from a live block into its free neighbour's link: no misaligned or
 * overlapping block may come out of malloc. */
static void overflow_into_neighbour(void *arg) {
    (void)arg;
    unsigned char *a = pm_malloc(48), *b = pm_malloc(48), *c = pm_malloc(48);
    if (a == NULL || b != a + 48 || c != b + 48)
        _exit(BAD_SETUP); /* the test needs three neighbours in carve order */
    pm_free(c);
    pm_free(b); /* b's link now points at c */
    a[48] = (unsigned char)(b[0] + 8); /* one byte past a: the low byte of b's link */
    unsigned char *got[8];
    for (int i = 0; i < 8; i++) {
        got[i] = pm_malloc(48);
        if (got[i] == NULL)
            continue;
        bool aligned = ((uintptr_t)got[i] & 15) == 0;
        bool boundary = ((uintptr_t)(got[i] - a)) % 48 == 0;
        if (!aligned || !boundary || got[i] == a) {
            fprintf(stderr, "malloc returned %p: misaligned or overlapping (a = %p)\n",
                    (void *)got[i], (void *)a);
            _exit(FOOLED);
        }
        for (int j = 0; j < i; j++)
            if (got[j] == got[i])
                _exit(FOOLED);
    }
    _exit(0);
}

Test(hardening, one_byte_overflow_into_a_free_neighbour_gives_no_bad_block) {
    static pm_child c;
    run_misuse(overflow_into_neighbour, NULL, &c);
    if (!c.timed_out && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)
        return;
    pm_test_expect_abort(&c, "1-byte overflow into a free neighbour",
                         (const char *[]){"poolmalloc", NULL});
}

/* The program zeroes a freed block's second word (the free key), then frees it again. */
static void double_free_zeroed_key(void *arg) {
    (void)arg;
    uintptr_t *p = pm_malloc(64);
    if (p == NULL)
        _exit(BAD_SETUP);
    pm_free(p);
    p[1] = 0;
    pm_free(p);
    void *x = pm_malloc(64), *y = pm_malloc(64);
    fprintf(stderr, "second free accepted; then malloc gave %p and %p\n", x, y);
    _exit(FOOLED);
}

Test(hardening, double_free_detected_after_the_key_word_is_zeroed) {
    static pm_child c;
    run_misuse(double_free_zeroed_key, NULL, &c);
    pm_test_expect_abort(&c, "double free after zeroing the key",
                         (const char *[]){"double free", NULL});
}
