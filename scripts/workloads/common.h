/*
 * common.h: helpers shared by the scripts/compare workloads.
 *
 * The workloads are plain C programs that link only libc and pthreads: the allocator under test
 * arrives through LD_PRELOAD, so the same binary measures glibc, jemalloc, mimalloc, tcmalloc and
 * poolmalloc. Each one takes the same arguments:
 *
 *     workload [-t THREADS] [-s SCALE]
 *
 * SCALE multiplies the amount of work (1 = the default, sized for 1-5 s under glibc on two
 * cores; scripts/compare --quick passes a small one). Threaded workloads give every thread the
 * same amount of work, so throughput with T threads is T * ops_per_thread / time.
 *
 * On success a workload prints `key=value` lines on stdout that scripts/compare reads:
 *     ops=N           operations done (all threads), for throughput
 *     malloc_from=F   the shared object that defines the malloc this process calls, so the tool
 *                     can check that LD_PRELOAD really took effect
 * and any workload-specific figures (frag prints rss_after_free_kib=N).
 * Every block carries a tag that is checked before it is freed: an allocator that hands out the
 * same memory twice or loses data makes the workload fail (exit status 3) instead of winning.
 */
#ifndef WL_COMMON_H
#define WL_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WL_MAX_THREADS 64

typedef struct wl_args {
    int threads;  /* -t: worker threads */
    double scale; /* -s: work multiplier */
} wl_args;

static inline void wl_die(const char *name, const char *what) {
    fprintf(stderr, "%s: %s\n", name, what);
    exit(3);
}

/* Parses -t/-s; a bad value prints one line and exits with status 2. */
static inline wl_args wl_parse_args(int argc, char **argv, int default_threads, const char *what) {
    wl_args args = {default_threads, 1.0};
    int opt;
    while ((opt = getopt(argc, argv, "t:s:h")) != -1) {
        char *end = NULL;
        errno = 0;
        if (opt == 't') {
            long t = strtol(optarg, &end, 10);
            if (errno || *end || t < 1 || t > WL_MAX_THREADS) {
                fprintf(stderr, "%s: -t '%s': expected a thread count from 1 to %d\n", argv[0],
                        optarg, WL_MAX_THREADS);
                exit(2);
            }
            args.threads = (int)t;
        } else if (opt == 's') {
            double s = strtod(optarg, &end);
            if (errno || *end || !(s > 0.0 && s <= 1000.0)) {
                fprintf(stderr, "%s: -s '%s': expected a scale above 0 and at most 1000\n",
                        argv[0], optarg);
                exit(2);
            }
            args.scale = s;
        } else {
            fprintf(stderr, "usage: %s [-t THREADS] [-s SCALE]\n  %s\n", argv[0], what);
            exit(opt == 'h' ? 0 : 2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
        exit(2);
    }
    return args;
}

/* Work counts scale linearly; never below one so a tiny scale still exercises every phase. */
static inline uint64_t wl_scaled(uint64_t base, double scale) {
    double n = (double)base * scale;
    return n < 1.0 ? 1 : (uint64_t)n;
}

/* ---- random numbers: splitmix64, one state per thread, fixed seeds (same work every run) ---- */
static inline uint64_t wl_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline size_t wl_rand_range(uint64_t *state, size_t lo, size_t hi) {
    return lo + (size_t)(wl_rand(state) % (hi - lo + 1));
}

/* Roughly log-uniform in [lo, hi]: as many requests between 1 and 2 MiB as between 8 and 16. */
static inline size_t wl_rand_log(uint64_t *state, size_t lo, size_t hi) {
    unsigned lo_bits = 63u - (unsigned)__builtin_clzll(lo);
    unsigned hi_bits = 63u - (unsigned)__builtin_clzll(hi);
    unsigned bits = lo_bits + (unsigned)(wl_rand(state) % (hi_bits - lo_bits + 1));
    size_t base = (size_t)1 << bits;
    size_t n = base + (size_t)(wl_rand(state) % base);
    return n < lo ? lo : n > hi ? hi : n;
}

/* A typical mix of small requests: half up to 64 bytes, most of the rest up to 512, a few to
 * 4 KiB. */
static inline size_t wl_small_size(uint64_t *state) {
    uint64_t r = wl_rand(state) % 100;
    if (r < 50)
        return wl_rand_range(state, 8, 64);
    if (r < 85)
        return wl_rand_range(state, 65, 512);
    if (r < 97)
        return wl_rand_range(state, 513, 1024);
    return wl_rand_range(state, 1025, 4096);
}

/* ---- block tags: written after malloc, checked before free ---- */
static inline uint64_t wl_tag_of(const void *p, size_t size) {
    return ((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) ^ size;
}

/* Stamps the first word of a block of at least 8 bytes, and its last byte if that is past the
 * first word: the two ends are where an allocator's own metadata would overlap a block. */
static inline void wl_tag(void *p, size_t size) {
    uint64_t tag = wl_tag_of(p, size);
    memcpy(p, &tag, sizeof tag);
    if (size > sizeof tag)
        ((unsigned char *)p)[size - 1] = (unsigned char)size;
}

static inline void wl_check(const char *name, const void *p, size_t size) {
    uint64_t tag;
    memcpy(&tag, p, sizeof tag);
    bool tail_ok = size <= sizeof tag || ((const unsigned char *)p)[size - 1] == (unsigned char)size;
    if (tag != wl_tag_of(p, size) || !tail_ok) {
        fprintf(stderr, "%s: block %p of %zu bytes was overwritten: allocator bug\n", name, p, size);
        exit(3);
    }
}

static inline void *wl_malloc(const char *name, size_t size) {
    void *p = malloc(size);
    if (p == NULL)
        wl_die(name, "out of memory");
    return p;
}

/* ---- large blocks as `large` and `largemix` use them ---- */

/* A block of lo..hi bytes (log-uniform) whose first 16 KiB are written and then one byte in
 * every page: a block whose memory the allocator reuses costs little, a fresh mapping a page
 * fault per page. */
typedef struct wl_large {
    unsigned char *p;
    size_t size;
} wl_large;

#define WL_LARGE_HEAD (16u << 10)
#define WL_PAGE 4096u

static inline wl_large wl_large_new(const char *name, uint64_t *seed, size_t lo, size_t hi) {
    size_t size = wl_rand_log(seed, lo, hi);
    unsigned char *p = wl_malloc(name, size);
    memset(p, 0x3c, WL_LARGE_HEAD);
    for (size_t off = WL_LARGE_HEAD; off < size; off += WL_PAGE)
        p[off] = (unsigned char)(off >> 12);
    wl_tag(p, size);
    return (wl_large){p, size};
}

/* Checks the block's tag and every 16th page's byte, then frees it. */
static inline void wl_large_free(const char *name, wl_large b) {
    wl_check(name, b.p, b.size);
    for (size_t off = WL_LARGE_HEAD; off + 1 < b.size; off += 16 * WL_PAGE)
        if (b.p[off] != (unsigned char)(off >> 12))
            wl_die(name, "a large block was overwritten: allocator bug");
    free(b.p);
}

/* ---- reporting ---- */

/* Resident memory of this process in KiB (/proc/self/statm), or 0 if unreadable. */
static inline uint64_t wl_rss_kib(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long long size_pages = 0, resident_pages = 0;
    if (sscanf(buf, "%llu %llu", &size_pages, &resident_pages) != 2)
        return 0;
    return resident_pages * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

/* Prints which shared object defines the malloc this process calls, and the operation count. */
static inline void wl_report(uint64_t ops) {
    Dl_info info;
    void *(*volatile malloc_fn)(size_t) = malloc;
    const char *from = "unknown";
    if (dladdr((void *)malloc_fn, &info) && info.dli_fname != NULL)
        from = info.dli_fname;
    printf("ops=%llu\nmalloc_from=%s\n", (unsigned long long)ops, from);
    fflush(stdout);
}

/* ---- threads ---- */

/* Runs fn(0..n-1) on n threads and joins them; n == 1 runs on the calling thread. */
static inline void wl_run_threads(const char *name, int n, void *(*fn)(void *), void *args,
                                  size_t arg_size) {
    if (n == 1) {
        fn(args);
        return;
    }
    pthread_t tids[WL_MAX_THREADS];
    for (int i = 0; i < n; i++)
        if (pthread_create(&tids[i], NULL, fn, (char *)args + (size_t)i * arg_size) != 0)
            wl_die(name, "pthread_create failed");
    for (int i = 0; i < n; i++)
        pthread_join(tids[i], NULL);
}

#endif /* WL_COMMON_H */
