/*
 * fuzz.h: a randomized differential fuzzer for any malloc family (issue 7's torture suite).
 *
 * Every block is self-describing: word 0 holds its id, and every other byte of its full usable
 * size holds a pattern derived from that id. Before a block is freed or reallocated the whole
 * pattern is verified, so any overlap, lost write, stale usable size or block handed out twice
 * shows up as a mismatch naming the block. calloc'd memory is checked zero, alignment of
 * posix_memalign/aligned_alloc checked, usable size checked stable. Threads pass blocks to each
 * other through exchange slots (remote frees), and thread 0 may fork in the middle: the child
 * verifies and frees its copies of thread 0's blocks, then allocates, in a fresh process image
 * of the heap.
 *
 * The allocator comes in as a table, so the same fuzzer runs on pm_malloc and friends (linked
 * core) and on plain malloc (fuzz-prog, preloaded). On a mismatch it prints one line and
 * aborts: the caller runs it in a child.
 */
#ifndef PM_FUZZ_H
#define PM_FUZZ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct fuzz_alloc {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
    int (*posix_memalign)(void **, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    size_t (*usable_size)(void *);
} fuzz_alloc;

typedef struct fuzz_config {
    int threads;          /* 1..8 */
    double seconds;
    uint64_t seed;
    bool fork_midway;     /* thread 0 forks once, halfway */
    size_t live_bytes;    /* per thread, above which it frees rather than allocates */
} fuzz_config;

typedef struct fuzz_totals {
    _Atomic uint64_t ops, allocs, frees, reallocs, aligned, passed, forks;
} fuzz_totals;

#define FUZZ_SLOTS 1024
#define FUZZ_XCHG 256
#define FUZZ_MAX_SIZE ((size_t)4 << 20)

typedef struct fuzz_block {
    unsigned char *p;
    size_t usable;
} fuzz_block;

typedef struct fuzz_state {
    const fuzz_alloc *a;
    const fuzz_config *cfg;
    fuzz_totals *totals;
    _Atomic(unsigned char *) xchg[FUZZ_XCHG];
    _Atomic bool stop;
    double t_end, t_fork;
} fuzz_state;

typedef struct fuzz_thread {
    fuzz_state *st;
    int index;
    uint64_t rng, next_id;
    fuzz_block slot[FUZZ_SLOTS];
    size_t live;
    bool forked;
} fuzz_thread;

static inline uint64_t fuzz_rng(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static inline double fuzz_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define FUZZ_DIE(...)                                                                         \
    do {                                                                                      \
        fprintf(stderr, "fuzz: " __VA_ARGS__);                                                \
        fprintf(stderr, "\n");                                                                \
        abort();                                                                              \
    } while (0)

/* The pattern word at byte offset off (a multiple of 8) of block id. */
static inline uint64_t fuzz_word(uint64_t id, size_t off) {
    return (id * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)off * 0xff51afd7ed558ccdull);
}

static inline void fuzz_fill(unsigned char *p, size_t usable, uint64_t id) {
    memcpy(p, &id, 8);
    size_t off = 8;
    for (; off + 8 <= usable; off += 8) {
        uint64_t w = fuzz_word(id, off);
        memcpy(p + off, &w, 8);
    }
    uint64_t w = fuzz_word(id, off);
    memcpy(p + off, &w, usable - off);
}

/* Verifies the first `len` bytes of a block against its own id; returns the id. */
static inline uint64_t fuzz_verify(const unsigned char *p, size_t len, const char *when) {
    uint64_t id;
    memcpy(&id, p, 8);
    size_t off = 8;
    for (; off + 8 <= len; off += 8) {
        uint64_t w = fuzz_word(id, off), got;
        memcpy(&got, p + off, 8);
        if (got != w)
            FUZZ_DIE("%s: block %p (id %#llx, %zu bytes checked) differs at byte %zu: "
                     "%#llx, expected %#llx", when, (const void *)p, (unsigned long long)id, len,
                     off, (unsigned long long)got, (unsigned long long)w);
    }
    uint64_t w = fuzz_word(id, off), got = 0;
    memcpy(&got, p + off, len - off);
    uint64_t mask = len - off == 0 ? 0 : (~0ull >> (64 - 8 * (len - off)));
    if ((got & mask) != (w & mask))
        FUZZ_DIE("%s: block %p (id %#llx) differs in its last %zu bytes", when, (const void *)p,
                 (unsigned long long)id, len - off);
    return id;
}

/* Sizes 0..4 MiB, biased small. */
static inline size_t fuzz_size(uint64_t r) {
    unsigned pick = (unsigned)(r % 1000);
    r >>= 10;
    if (pick < 750) return (size_t)(r % 257);
    if (pick < 960) return 257 + (size_t)(r % 8000);
    if (pick < 997) return 8192 + (size_t)(r % (256 << 10));
    return (256 << 10) + (size_t)(r % (FUZZ_MAX_SIZE - (256 << 10) + 1));
}

static inline void fuzz_adopt(fuzz_thread *t, fuzz_block *b, unsigned char *p, size_t request,
                              const char *op) {
    size_t usable = t->st->a->usable_size(p);
    if (usable < request)
        FUZZ_DIE("%s(%zu) = %p: usable size %zu", op, request, (void *)p, usable);
    if (((uintptr_t)p & 15) != 0)
        FUZZ_DIE("%s(%zu) = %p: not 16-byte aligned", op, request, (void *)p);
    if (usable < 8) { /* too small to carry its id (some allocators' malloc(0)): done with it */
        t->st->a->free(p);
        b->p = NULL;
        return;
    }
    b->p = p;
    b->usable = usable;
    t->live += usable;
    fuzz_fill(p, usable, t->next_id++);
}

static inline void fuzz_release(fuzz_thread *t, fuzz_block *b) {
    if (b->p == NULL)
        return;
    size_t now = t->st->a->usable_size(b->p);
    if (now != b->usable)
        FUZZ_DIE("usable size of %p changed from %zu to %zu", (void *)b->p, b->usable, now);
    fuzz_verify(b->p, b->usable, "before free");
    t->st->a->free(b->p);
    t->live -= b->usable;
    b->p = NULL;
    atomic_fetch_add_explicit(&t->st->totals->frees, 1, memory_order_relaxed);
}

static inline void fuzz_alloc_into(fuzz_thread *t, fuzz_block *b, uint64_t r) {
    const fuzz_alloc *a = t->st->a;
    size_t size = fuzz_size(r >> 8);
    unsigned kind = (unsigned)(r & 15);
    unsigned char *p;
    if (kind < 9) {
        p = a->malloc(size);
        if (p == NULL)
            FUZZ_DIE("malloc(%zu) returned NULL", size);
        fuzz_adopt(t, b, p, size, "malloc");
    } else if (kind < 12) {
        size_t n = 1 + (size_t)(r >> 40) % 8, each = size / n;
        p = a->calloc(n, each);
        if (p == NULL)
            FUZZ_DIE("calloc(%zu, %zu) returned NULL", n, each);
        static const unsigned char zeros[4096];
        for (size_t i = 0; i < n * each; i += sizeof zeros) {
            size_t len = n * each - i < sizeof zeros ? n * each - i : sizeof zeros;
            if (memcmp(p + i, zeros, len) != 0)
                FUZZ_DIE("calloc(%zu, %zu) = %p: not zeroed near byte %zu", n, each, (void *)p, i);
        }
        fuzz_adopt(t, b, p, n * each, "calloc");
    } else {
        size_t align = (size_t)16 << ((r >> 50) % ((r >> 60) == 0 ? 17 : 9)); /* to 1 MiB */
        if (size > (1 << 20))
            size = (size_t)(r >> 30) % (1 << 20);
        void *q = NULL;
        if (kind < 14) {
            int rc = a->posix_memalign(&q, align, size);
            if (rc != 0)
                FUZZ_DIE("posix_memalign(%zu, %zu) failed: %d", align, size, rc);
        } else if ((q = a->aligned_alloc(align, size = (size + align - 1) & ~(align - 1))) ==
                   NULL) { /* C11 wants a multiple of the alignment; sanitizers check it */
            FUZZ_DIE("aligned_alloc(%zu, %zu) returned NULL", align, size);
        }
        if (((uintptr_t)q & (align - 1)) != 0)
            FUZZ_DIE("aligned allocation %p not aligned to %zu", q, align);
        fuzz_adopt(t, b, q, size, "aligned allocation");
        atomic_fetch_add_explicit(&t->st->totals->aligned, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&t->st->totals->allocs, 1, memory_order_relaxed);
}

static inline void fuzz_realloc(fuzz_thread *t, fuzz_block *b, uint64_t r) {
    size_t size = 1 + fuzz_size(r >> 8);
    uint64_t id = fuzz_verify(b->p, b->usable, "before realloc");
    size_t keep = b->usable < size ? b->usable : size;
    unsigned char *q = t->st->a->realloc(b->p, size);
    if (q == NULL)
        FUZZ_DIE("realloc(%p, %zu) returned NULL", (void *)b->p, size);
    /* the contents moved with it */
    if (keep >= 8 ? fuzz_verify(q, keep, "after realloc") != id : memcmp(q, &id, keep) != 0)
        FUZZ_DIE("realloc(%p, %zu) = %p lost the block's id", (void *)b->p, size, (void *)q);
    t->live -= b->usable;
    fuzz_adopt(t, b, q, size, "realloc");
    atomic_fetch_add_explicit(&t->st->totals->reallocs, 1, memory_order_relaxed);
}

/* Another thread's block in, ours out: cross-thread frees. */
static inline void fuzz_exchange(fuzz_thread *t, fuzz_block *b, uint64_t r) {
    unsigned char *give = b->p;
    if (give != NULL) {
        fuzz_verify(give, b->usable, "before handing over");
        t->live -= b->usable;
        b->p = NULL;
    }
    unsigned char *got = atomic_exchange(&t->st->xchg[(r >> 20) % FUZZ_XCHG], give);
    if (got != NULL) {
        size_t usable = t->st->a->usable_size(got);
        fuzz_verify(got, usable, "after handing over");
        t->st->a->free(got);
        atomic_fetch_add_explicit(&t->st->totals->frees, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->st->totals->passed, 1, memory_order_relaxed);
    }
}

/* In the child of a fork: every block of this thread must be intact, freeable, and the
 * allocator must work. Exits 0, or aborts with the mismatch. */
static inline void fuzz_child(fuzz_thread *t) {
    alarm(20);
    for (int i = 0; i < FUZZ_SLOTS; i++)
        fuzz_release(t, &t->slot[i]);
    for (int i = 0; i < 2000; i++)
        fuzz_alloc_into(t, &t->slot[i % FUZZ_SLOTS], fuzz_rng(&t->rng)),
            fuzz_release(t, &t->slot[i % FUZZ_SLOTS]);
    _exit(0);
}

static inline void fuzz_fork(fuzz_thread *t) {
    t->forked = true;
    pid_t pid = fork();
    if (pid < 0)
        FUZZ_DIE("fork failed");
    if (pid == 0)
        fuzz_child(t);
    int status = 0;
    for (int waited = 0; waitpid(pid, &status, WNOHANG) != pid; waited++) {
        if (waited > 8000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            FUZZ_DIE("the forked child hung (killed after 8 s)");
        }
        usleep(1000);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FUZZ_DIE("the forked child failed (wait status %#x)", status);
    atomic_fetch_add(&t->st->totals->forks, 1);
}

static inline void *fuzz_thread_main(void *arg) {
    fuzz_thread *t = arg;
    fuzz_state *st = t->st;
    uint64_t ops = 0;
    for (;;) {
        if ((ops & 255) == 0) {
            double now = fuzz_now();
            if (now >= st->t_end || atomic_load(&st->stop))
                break;
            if (t->index == 0 && st->cfg->fork_midway && !t->forked && now >= st->t_fork)
                fuzz_fork(t);
        }
        uint64_t r = fuzz_rng(&t->rng);
        fuzz_block *b = &t->slot[(r >> 32) % FUZZ_SLOTS];
        unsigned op = (unsigned)((r >> 4) % 100);
        bool full = t->live > st->cfg->live_bytes;
        if (b->p == NULL) {
            if (!full)
                fuzz_alloc_into(t, b, r);
        } else if (op < 40 || full) {
            fuzz_release(t, b);
        } else if (op < 60) {
            fuzz_realloc(t, b, r);
        } else if (op < 70) {
            if (st->a->usable_size(b->p) != b->usable)
                FUZZ_DIE("usable size of %p is not stable", (void *)b->p);
        } else if (op < 80 && st->cfg->threads > 1) {
            fuzz_exchange(t, b, r);
        } else {
            fuzz_verify(b->p, b->usable, "while live");
        }
        ops++;
    }
    for (int i = 0; i < FUZZ_SLOTS; i++)
        fuzz_release(t, &t->slot[i]);
    atomic_fetch_add(&st->totals->ops, ops);
    return NULL;
}

/* Runs the fuzzer; returns the number of operations. Aborts on the first mismatch. */
static inline uint64_t fuzz_run(const fuzz_alloc *a, const fuzz_config *cfg,
                                fuzz_totals *totals) {
    static fuzz_state st;
    memset(&st, 0, sizeof st);
    st.a = a;
    st.cfg = cfg;
    st.totals = totals;
    double start = fuzz_now();
    st.t_end = start + cfg->seconds;
    st.t_fork = start + cfg->seconds / 2;
    int n = cfg->threads < 1 ? 1 : cfg->threads > 8 ? 8 : cfg->threads;
    fuzz_thread *threads = calloc((size_t)n, sizeof *threads); /* the test's own memory */
    pthread_t tid[8];
    for (int i = 0; i < n; i++) {
        threads[i].st = &st;
        threads[i].index = i;
        threads[i].rng = cfg->seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 7919 + 1;
        threads[i].next_id = ((uint64_t)(i + 1) << 48) | 1;
        pthread_create(&tid[i], NULL, fuzz_thread_main, &threads[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(tid[i], NULL);
    for (int i = 0; i < FUZZ_XCHG; i++) {
        unsigned char *p = atomic_exchange(&st.xchg[i], NULL);
        if (p != NULL) {
            fuzz_verify(p, a->usable_size(p), "left in an exchange slot");
            a->free(p);
        }
    }
    free(threads);
    return atomic_load(&totals->ops);
}

static inline void fuzz_print(FILE *f, const char *label, const fuzz_config *cfg,
                              fuzz_totals *t) {
    fprintf(f, "fuzz %s: %d thread(s), %.1f s: %llu operations (%llu allocations, %llu frees, "
               "%llu reallocs, %llu aligned, %llu passed between threads, %llu forks)\n",
            label, cfg->threads, cfg->seconds, (unsigned long long)atomic_load(&t->ops),
            (unsigned long long)atomic_load(&t->allocs), (unsigned long long)atomic_load(&t->frees),
            (unsigned long long)atomic_load(&t->reallocs),
            (unsigned long long)atomic_load(&t->aligned),
            (unsigned long long)atomic_load(&t->passed), (unsigned long long)atomic_load(&t->forks));
}

#endif /* PM_FUZZ_H */
