/*
 * lifecycle-prog.c: the programs of issue 7's lifecycle cases, run under
 * LD_PRELOAD=libpoolmalloc.so by test-lifecycle.c (one subcommand per case).
 *
 * Built WITHOUT poolmalloc: malloc, free and malloc_trim are whatever the process was given,
 * as in a user's program. poolmalloc's statistics are found with dlsym, so a run that was not
 * preloaded says so instead of passing. Each subcommand exits 0 when the case behaved, else
 * prints one "FAIL: ..." line and exits 1; a hang is the test's deadline to catch.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "poolmalloc.h" /* the statistics' types only: the functions come from dlsym */
#include "stress/fork-storm.h"
#include "stress/os-limits.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static uint64_t rng(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t resident(void) {
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld", &pages, &res) != 2)
        PM_CHILD_FAIL("cannot read /proc/self/statm");
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* ---- poolmalloc's own API, when preloaded ------------------------------------------------- */

static int (*stats_get)(pm_stats_t *);
static int (*class_stats_get)(unsigned, pm_class_stats_t *);

static void need_poolmalloc(void) {
    stats_get = (int (*)(pm_stats_t *))dlsym(RTLD_DEFAULT, "pm_stats_get");
    class_stats_get = (int (*)(unsigned, pm_class_stats_t *))dlsym(RTLD_DEFAULT,
                                                                   "pm_stats_get_class");
    if (stats_get == NULL || class_stats_get == NULL)
        PM_CHILD_FAIL("not running on poolmalloc (pm_stats_get not found): run under LD_PRELOAD");
}

/* The size class that holds `size`, by its index for pm_stats_get_class. */
static unsigned class_index_for(size_t size) {
    pm_class_stats_t c;
    for (unsigned i = 1; class_stats_get(i, &c) == 0; i++)
        if (c.block_size >= size)
            return i;
    PM_CHILD_FAIL("no size class holds %zu bytes", size);
}

static uint64_t class_blocks_in_use(unsigned index) {
    pm_class_stats_t c;
    if (class_stats_get(index, &c) != 0)
        PM_CHILD_FAIL("pm_stats_get_class(%u) failed", index);
    return c.blocks_in_use;
}

/* ---- case 1: fork while another thread's cache holds a whole non-current pool ------------- */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_ready, gate_release;

static void gate_signal(int *flag) {
    pthread_mutex_lock(&gate_lock);
    *flag = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static void gate_wait(int *flag) {
    pthread_mutex_lock(&gate_lock);
    while (!*flag)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

/* 500-byte requests use 512-byte blocks, 32 to a 16 KiB pool, and a heap caches up to 32 of
 * them: allocating 40 fills the first pool and makes a second one current; freeing the first
 * 32 puts them all in this thread's cache. A freed 1 MiB block fills the large cache. */
static void *cache_holder(void *arg) {
    (void)arg;
    void *blocks[40];
    for (int i = 0; i < 40; i++) {
        blocks[i] = malloc(500);
        memset(blocks[i], 0x11, 500);
    }
    for (int i = 0; i < 32; i++)
        free(blocks[i]);
    void *big = malloc(MiB);
    memset(big, 1, 4096);
    free(big);
    gate_signal(&gate_ready);
    gate_wait(&gate_release); /* stay alive: the cache stays full */
    for (int i = 32; i < 40; i++)
        free(blocks[i]);
    return NULL;
}

static const storm_alloc libc_pair = {malloc, free};

/* Forks; the child must allocate, free and exit in time (see fork-storm.h). */
static int fork_one(long timeout_ms) {
    int r = storm_fork_one(&libc_pair, timeout_ms);
    if (r < 0)
        PM_CHILD_FAIL("fork: %s", strerror(errno));
    return r;
}

static int cmd_fork_cached(int argc, char **argv) {
    int forks = argc > 0 ? atoi(argv[0]) : 10;
    pthread_t t;
    pthread_create(&t, NULL, cache_holder, NULL);
    gate_wait(&gate_ready);
    sleep_ms(5); /* the purge delay (POOLMALLOC_PURGE_DELAY=0 or 1) has passed */
    int hung = 0, failed = 0;
    for (int i = 0; i < forks; i++) {
        int r = fork_one(3000);
        hung += r == 1;
        failed += r == 2;
    }
    gate_signal(&gate_release);
    pthread_join(t, NULL);
    printf("fork-cached: %d forks, %d children hung, %d failed\n", forks, hung, failed);
    if (hung || failed)
        PM_CHILD_FAIL("%d of %d children hung and %d failed after fork", hung, forks, failed);
    return 0;
}

/* ---- case 1: fork storm ------------------------------------------------------------------- */

static int cmd_fork_storm(int argc, char **argv) {
    double seconds = argc > 0 ? atof(argv[0]) : 5;
    storm_result r = storm_run(&libc_pair, seconds, 0);
    printf("fork-storm: %ld forks, %ld hung, %ld failed, %ld allocator operations\n", r.forks,
           r.hung, r.failed, r.ops);
    if (r.hung || r.failed)
        PM_CHILD_FAIL("%ld of %ld children hung, %ld failed", r.hung, r.forks, r.failed);
    return 0;
}

/* ---- case 2: every medium size and large blocks interleaved, whatever the arena size ------ */

typedef struct held { unsigned char *p; size_t n; unsigned char tag; } held;

static void held_fill(held *h, size_t n, unsigned char tag) {
    errno = 0;
    h->p = malloc(n);
    if (h->p == NULL)
        PM_CHILD_FAIL("malloc(%zu) returned NULL (errno %d)", n, errno);
    if (malloc_usable_size(h->p) < n)
        PM_CHILD_FAIL("malloc_usable_size %zu < %zu", malloc_usable_size(h->p), n);
    h->n = n;
    h->tag = tag;
    memset(h->p, tag, n);
}

static void held_check_free(held *h) {
    for (size_t i = 0; i < h->n; i += 997)
        if (h->p[i] != h->tag)
            PM_CHILD_FAIL("block %p of %zu bytes overwritten at %zu", (void *)h->p, h->n, i);
    if (h->p[h->n - 1] != h->tag)
        PM_CHILD_FAIL("block %p of %zu bytes overwritten at its end", (void *)h->p, h->n);
    free(h->p);
    h->p = NULL;
}

static int cmd_arena_sizes(void) {
    enum { MAX = 4096 };
    static held h[MAX];
    for (int round = 0; round < 2; round++) {
        int n = 0;
        unsigned k = 0;
        for (size_t size = 66049; size <= 131072 && n < MAX - 1; size += 257, k++) {
            held_fill(&h[n++], size, (unsigned char)(k + 1));
            if (k % 8 == 0) /* a large block between them, to be placed wherever it fits */
                held_fill(&h[n++], 200 * KiB + (k % 37) * 31 * KiB, (unsigned char)(k + 3));
        }
        held_fill(&h[n++], 131072, 0x77);
        uint64_t s = 99 + (uint64_t)round;
        for (int i = n - 1; i > 0; i--) { /* free in random order */
            int j = (int)(rng(&s) % (uint64_t)(i + 1));
            held t = h[i];
            h[i] = h[j];
            h[j] = t;
        }
        for (int i = 0; i < n; i++)
            held_check_free(&h[i]);
        printf("arena-sizes: round %d: %d blocks of 66049..131072 bytes and large ones\n",
               round, n);
    }
    return 0;
}

/* ---- case 3: frees at vm.max_map_count ------------------------------------------------------ */

static int cmd_mapcount(void) {
    enum { NLARGE = 96, NSMALL = 20000 };
    static unsigned char *large[NLARGE], *small[NSMALL];
    /* Large blocks back to back, so the kernel merges their mappings: unmapping one of them
     * then splits a mapping, which needs a new map entry. */
    for (int i = 0; i < NLARGE; i++) {
        large[i] = malloc(256 * KiB + (size_t)(i % 5) * 64 * KiB);
        if (large[i] == NULL)
            PM_CHILD_FAIL("large malloc failed before the limit");
        memset(large[i], 3, 256 * KiB);
    }
    for (int i = 0; i < NSMALL; i++) { /* a few arenas of small blocks */
        small[i] = malloc(1000);
        if (small[i] == NULL)
            PM_CHILD_FAIL("small malloc failed before the limit");
        memset(small[i], 4, 1000);
    }
    char *region;
    size_t region_len;
    long splits = limits_exhaust_map_count(&region, &region_len);
    if (splits < 0)
        PM_CHILD_FAIL("could not use up the map count: %s", strerror(errno));
    /* Now every munmap that splits a mapping fails with ENOMEM. None of this may abort. */
    for (int i = 1; i < NLARGE; i += 2) { /* holes in the merged large mappings */
        free(large[i]);
        large[i] = NULL;
    }
    for (int i = 0; i < NLARGE; i += 4) { /* shrinking in place unmaps a tail */
        unsigned char *q = realloc(large[i], 140 * KiB);
        if (q != NULL)
            large[i] = q;
        if (large[i][0] != 3)
            PM_CHILD_FAIL("a shrunk large block lost its contents");
    }
    for (int i = 0; i < NSMALL; i++)
        free(small[i]);
    malloc_trim(0); /* arenas back to the OS: more unmapping */
    for (int i = 0; i < NLARGE; i++)
        free(large[i]);
    malloc_trim(0);
    for (int i = 0; i < 1000; i++) /* allocating may fail at the limit, but never crash */
        free(malloc((size_t)(i % 7) * 50000 + 16));
    munmap(region, region_len);
    for (int i = 0; i < 100; i++) {
        void *p = malloc(300 * KiB), *q = malloc(100);
        if (p == NULL || q == NULL)
            PM_CHILD_FAIL("malloc failed after the map count was given back");
        free(p);
        free(q);
    }
    printf("mapcount: the map count was exhausted after %ld splits; frees survived\n", splits);
    return 0;
}

/* ---- case 5: key destructors that re-arm and allocate on every round ----------------------- */

static pthread_key_t late_key;
static _Atomic long late_rounds;

static void late_destructor(void *value) {
    (void)value;
    atomic_fetch_add(&late_rounds, 1);
    char *p = malloc(100);
    if (p != NULL) {
        memset(p, 7, 100);
        free(p);
    }
    pthread_setspecific(late_key, (void *)1); /* re-armed: runs again next round */
}

static void *late_thread(void *arg) {
    pthread_setspecific(late_key, (void *)1);
    free(malloc(64 + (size_t)(uintptr_t)arg % 300));
    return NULL;
}

static int cmd_late_destructor(int argc, char **argv) {
    need_poolmalloc();
    int threads = argc > 0 ? atoi(argv[0]) : 2000;
    pthread_key_create(&late_key, late_destructor);
    pm_stats_t before, after;
    stats_get(&before);
    size_t rss0 = resident();
    for (int i = 0; i < threads; i += 8) {
        pthread_t t[8];
        for (int j = 0; j < 8; j++)
            pthread_create(&t[j], NULL, late_thread, (void *)(uintptr_t)(i + j));
        for (int j = 0; j < 8; j++)
            pthread_join(t[j], NULL);
    }
    stats_get(&after);
    size_t rss1 = resident();
    uint64_t heaps = after.heaps_created - before.heaps_created;
    long grown_mb = ((long)rss1 - (long)rss0) / (long)MiB;
    printf("late-destructor: %d threads, %ld destructor rounds, %llu heaps created, resident "
           "+%ld MB\n", threads, atomic_load(&late_rounds), (unsigned long long)heaps, grown_mb);
    if (heaps > 64)
        PM_CHILD_FAIL("%llu heaps created for %d threads (at most 64 expected)", (unsigned long long)heaps,
             threads);
    if (grown_mb > 32)
        PM_CHILD_FAIL("resident memory grew by %ld MB over %d threads", grown_mb, threads);
    return 0;
}

/* ---- case 6: remote frees racing their owner's exit ----------------------------------------- */

enum { RACE_BLOCKS = 48, RACE_SIZE = 2900, RACE_BATCH = 16 };
static void *_Atomic race_published[RACE_BATCH];

static void *race_owner(void *arg) {
    uintptr_t slot = (uintptr_t)arg;
    void **blocks = malloc(RACE_BLOCKS * sizeof(void *)); /* another class: not counted */
    for (int i = 0; i < RACE_BLOCKS; i++) {
        blocks[i] = malloc(RACE_SIZE);
        memset(blocks[i], 9, 64);
    }
    atomic_store(&race_published[slot], (void *)blocks);
    return NULL; /* exits while the main thread frees the blocks */
}

/* Batches of threads each hand their blocks to the main thread as they exit; after each batch
 * is joined, and before any new thread could adopt their heaps, every block must be free.
 * (Reading the statistics is slow, so a batch amortises it.) */
static int cmd_remote_exit(int argc, char **argv) {
    need_poolmalloc();
    double seconds = argc > 0 ? atof(argv[0]) : 5;
    long max_episodes = argc > 1 ? atol(argv[1]) : 100000;
    unsigned cls = class_index_for(RACE_SIZE);
    uint64_t baseline = class_blocks_in_use(cls);
    double end = now_s() + seconds;
    long episodes = 0;
    while (episodes < max_episodes && now_s() < end) {
        pthread_t t[RACE_BATCH];
        for (uintptr_t k = 0; k < RACE_BATCH; k++) {
            atomic_store(&race_published[k], NULL);
            pthread_create(&t[k], NULL, race_owner, (void *)k);
        }
        for (int k = 0; k < RACE_BATCH; k++) {
            void **blocks;
            while ((blocks = atomic_load(&race_published[k])) == NULL)
                ;
            for (int i = 0; i < RACE_BLOCKS; i++)
                free(blocks[i]);
            free(blocks);
        }
        for (int k = 0; k < RACE_BATCH; k++)
            pthread_join(t[k], NULL);
        episodes += RACE_BATCH;
        uint64_t now = class_blocks_in_use(cls); /* no thread created since the joins */
        if (now != baseline)
            PM_CHILD_FAIL("after %ld thread exits: %lld blocks of %d bytes stranded on exited threads' "
                 "heaps (in use %llu, baseline %llu)", episodes, (long long)(now - baseline),
                 RACE_SIZE, (unsigned long long)now, (unsigned long long)baseline);
    }
    printf("remote-exit: %ld thread exits raced by %d remote frees each; none stranded\n",
           episodes, RACE_BLOCKS);
    return 0;
}

/* ---- case 7: memory freed into an idle thread's pools -------------------------------------- */

static size_t idle_bytes;
static void **idle_blocks;
static size_t idle_count;

static size_t idle_size(uint64_t r) {
    return 16 + (size_t)(r % 16 == 0 ? r % 1000 : r % 240);
}

static void idle_allocate_all(uint64_t seed) {
    size_t total = 0;
    idle_count = 0;
    while (total < idle_bytes) {
        size_t n = idle_size(rng(&seed));
        void *p = malloc(n);
        if (p == NULL)
            PM_CHILD_FAIL("malloc(%zu) failed after %zu bytes", n, total);
        memset(p, 0x2B, n);
        idle_blocks[idle_count++] = p;
        total += n;
    }
}

static void *idle_loader(void *arg) {
    (void)arg;
    idle_allocate_all(5);
    gate_signal(&gate_ready);
    gate_wait(&gate_release); /* parked, outside the allocator, until the program ends */
    return NULL;
}

static void *idle_freer(void *arg) {
    size_t half = (size_t)(uintptr_t)arg;
    size_t from = half == 0 ? 0 : idle_count / 2, to = half == 0 ? idle_count / 2 : idle_count;
    for (size_t i = from; i < to; i++)
        free(idle_blocks[i]);
    malloc_trim(0);
    return NULL;
}

static void *idle_reallocate(void *arg) {
    (void)arg;
    idle_allocate_all(6);
    return NULL;
}

static int cmd_idle_thread(int argc, char **argv) {
    size_t mb = argc > 0 ? (size_t)atol(argv[0]) : 200;
    idle_bytes = mb * MiB;
    size_t max_blocks = idle_bytes / 16 + 1;
    idle_blocks = mmap(NULL, max_blocks * sizeof(void *), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (idle_blocks == MAP_FAILED)
        PM_CHILD_FAIL("mmap of the pointer array");
    size_t base = resident();
    pthread_t loader, f[2];
    pthread_create(&loader, NULL, idle_loader, NULL);
    gate_wait(&gate_ready);
    size_t loaded = resident();
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&f[i], NULL, idle_freer, (void *)i);
    for (int i = 0; i < 2; i++)
        pthread_join(f[i], NULL);
    malloc_trim(0);
    size_t trimmed = resident();
    pthread_t again;
    pthread_create(&again, NULL, idle_reallocate, NULL);
    pthread_join(again, NULL);
    size_t reloaded = resident();
    long mb_loaded = (long)(loaded - base) / (long)MiB;
    long mb_trimmed = ((long)trimmed - (long)base) / (long)MiB;
    long mb_reloaded = ((long)reloaded - (long)base) / (long)MiB;
    printf("idle-thread: %zu MB in %zu blocks; resident above the start: %ld MB loaded, %ld MB "
           "after the frees and malloc_trim(0), %ld MB after allocating it all again\n", mb,
           idle_count, mb_loaded, mb_trimmed, mb_reloaded);
    if (mb_trimmed > 60)
        PM_CHILD_FAIL("%ld MB stay resident after every block was freed and trimmed (limit 60)",
             mb_trimmed);
    if (mb_reloaded > mb_loaded + mb_loaded / 2)
        PM_CHILD_FAIL("allocating the same again reached %ld MB (first time %ld MB): the freed memory "
             "was not reused", mb_reloaded, mb_loaded);
    for (size_t i = 0; i < idle_count; i++)
        free(idle_blocks[i]);
    return 0; /* the loader is still parked: exit does not wait for it */
}

/* ---- case 13: POOLMALLOC_POISON=1 on blocks freed by another thread ------------------------- */

static unsigned char *volatile poison_block;

static bool poisoned(const unsigned char *p, size_t n) {
    for (size_t i = 16; i < n; i++)
        if (p[i] != 0xDD)
            return false;
    return true;
}

static void *poison_remote_free(void *arg) {
    (void)arg;
    free(poison_block);
    return NULL;
}

/* The block's pool belongs to the main thread; another thread (or the main thread, with
 * "local") frees it. Blocks on either side keep the pool in use, so its memory can still be
 * read after the free. Poisoned by the time free returns, or at the latest once the owner
 * ran malloc_trim (which takes its remote frees in). */
static int cmd_poison(int argc, char **argv) {
    bool remote = argc > 0 && strcmp(argv[0], "remote") == 0;
    void *keep = malloc(256);
    unsigned char *p = malloc(256);
    void *keep2 = malloc(256);
    memset(p, 0x41, 256);
    poison_block = p;
    if (remote) {
        pthread_t t;
        pthread_create(&t, NULL, poison_remote_free, NULL);
        pthread_join(t, NULL);
    } else {
        free(p);
    }
    bool at_free = poisoned(p, 256);
    malloc_trim(0);
    bool after_trim = poisoned(p, 256);
    printf("poison (%s free): poisoned when free returned: %d, after malloc_trim: %d\n",
           remote ? "remote" : "local", at_free, after_trim);
    if (!at_free && !after_trim)
        PM_CHILD_FAIL("a block freed by %s was not filled with 0xDD (byte 16 is %#x)",
             remote ? "another thread" : "its owner", p[16]);
    free(keep);
    free(keep2);
    return 0;
}

/* ---- case 10: the stats report and the program's own descriptors ---------------------------- */

static int cmd_fd_identity(int argc, char **argv) {
    if (argc < 1)
        PM_CHILD_FAIL("usage: fd-identity OUTPUT");
    for (int fd = 3; fd < 65536; fd++) /* as daemons do (closefrom) */
        close(fd);
    int out = open(argv[0], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0)
        PM_CHILD_FAIL("cannot open %s: %s", argv[0], strerror(errno));
    for (int i = 0; i < 1000; i++)
        free(malloc((size_t)i * 13 % 5000 + 1));
    const char line[] = "the program's own output\n";
    if (write(out, line, sizeof line - 1) != (ssize_t)(sizeof line - 1))
        PM_CHILD_FAIL("write: %s", strerror(errno));
    return 0; /* the file stays open through exit, as a program's log would */
}

/* ---- case 12: purge and retry when the OS refuses memory ------------------------------------ */

static size_t address_space(void) {
    size_t bytes = limits_address_space();
    if (bytes == 0)
        PM_CHILD_FAIL("no VmSize in /proc/self/status");
    return bytes;
}

/* Allocates large_mb in 4 MB blocks and small_mb in 1000-byte ones, 320 MB in all. */
static int cmd_rlimit(int argc, char **argv) {
    int nlarge = argc > 0 ? atoi(argv[0]) / 4 : 50;
    int nsmall = (320 - nlarge * 4) * 1024;
    /* Room for 330 MB more than now: 320 MB fit, and after freeing them 200 MB must fit. */
    struct rlimit lim = {address_space() + 330 * MiB, RLIM_INFINITY};
    lim.rlim_max = lim.rlim_cur;
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        PM_CHILD_FAIL("setrlimit(RLIMIT_AS): %s", strerror(errno));
    static void *large[80], *small[320 * 1024];
    if (nlarge < 0 || nlarge > 80)
        PM_CHILD_FAIL("rlimit: the large part must be 0..320 MB");
    for (int i = 0; i < nlarge; i++) { /* in large blocks */
        large[i] = malloc(4 * MiB);
        if (large[i] == NULL)
            PM_CHILD_FAIL("large block %d of 4 MB refused under the limit", i);
        memset(large[i], 1, 4096);
    }
    for (int i = 0; i < nsmall; i++) { /* the rest in small blocks */
        small[i] = malloc(1000);
        if (small[i] == NULL)
            PM_CHILD_FAIL("small block %d refused under the limit", i);
        memset(small[i], 2, 16);
    }
    for (int i = 0; i < nlarge; i++)
        free(large[i]);
    for (int i = 0; i < nsmall; i++)
        free(small[i]);
    errno = 0;
    char *big = malloc(200 * MiB); /* no malloc_trim: the allocator must give back and retry */
    if (big == NULL)
        PM_CHILD_FAIL("malloc(200 MB) returned NULL (errno %d) after 320 MB were freed under "
             "RLIMIT_AS", errno);
    memset(big, 5, 200 * MiB);
    free(big);
    printf("rlimit: malloc(200 MB) succeeded after freeing %d MB of large and %d MB of small "
           "blocks under RLIMIT_AS\n", nlarge * 4, nsmall / 1024);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s fork-cached|fork-storm|arena-sizes|mapcount|"
                        "late-destructor|remote-exit|idle-thread|fd-identity|rlimit|poison [args]\n",
                argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *cmd = argv[1];
    int n = argc - 2;
    char **args = argv + 2;
    if (strcmp(cmd, "fork-cached") == 0) return cmd_fork_cached(n, args);
    if (strcmp(cmd, "fork-storm") == 0) return cmd_fork_storm(n, args);
    if (strcmp(cmd, "arena-sizes") == 0) return cmd_arena_sizes();
    if (strcmp(cmd, "mapcount") == 0) return cmd_mapcount();
    if (strcmp(cmd, "late-destructor") == 0) return cmd_late_destructor(n, args);
    if (strcmp(cmd, "remote-exit") == 0) return cmd_remote_exit(n, args);
    if (strcmp(cmd, "idle-thread") == 0) return cmd_idle_thread(n, args);
    if (strcmp(cmd, "fd-identity") == 0) return cmd_fd_identity(n, args);
    if (strcmp(cmd, "rlimit") == 0) return cmd_rlimit(n, args);
    if (strcmp(cmd, "poison") == 0) return cmd_poison(n, args);
    fprintf(stderr, "%s: unknown case %s\n", argv[0], cmd);
    return 2;
}
