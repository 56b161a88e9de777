/*
 * prof.c: POOLMALLOC_PROF, the sampled heap profile.
 *
 * Sampling as tcmalloc and jemalloc do it: each thread counts down the bytes it allocates;
 * when the count passes zero the allocation that did it is sampled and a new count is drawn
 * from an exponential distribution of mean POOLMALLOC_PROF_SAMPLE (512 KiB). An allocation of
 * n bytes is thus sampled with probability 1 - exp(-n / mean), whatever the allocations
 * around it, and a sample of n bytes stands for n / (1 - exp(-n / mean)) bytes.
 *
 * Who counts down: PROF alone, on a core that has a sampling countdown (PM_PROF_BY_CORE),
 * the core does, per size class on its malloc fast path (a subtraction and a branch it pays
 * anyway for its statistics) and for large blocks on their slow path, and calls core_hook
 * below when a countdown expires; nothing else of the layer runs. With a header mode, or on a
 * core without the countdown, every call reaches the layer's hooks, and the layer counts
 * down itself (pm_prof_after_alloc).
 *
 * Knowing at free time that a block was sampled, without making any other free pay: the core
 * hands out a sampled block from its inline fast path, and the owner's free of a pool block
 * is the inline fast path too, which the layer never sees. So the hook moves every sampled
 * block to a pool no thread's fast path frees into (a per-thread "prof heap", below), as
 * tcmalloc gives each sampled object a span of its own: every free of it then reaches
 * pm_free_slow, whose first step (PM_PROF_SLOW_FREE) looks at the counting filter. Frees on
 * the fast path are untouched; frees that reach the slow path anyway (another thread's, large
 * blocks) pay the filter's byte load. The cost of a sample: the stack, the table, one pop from
 * the prof heap and one push of the popped block back to the thread's cache.
 *
 * Sampled blocks go into a table keyed by address (open addressing under prof_lock), with
 * their size and stack id; the stack's counters hold the sums. A free that may concern one
 * first looks at a counting filter (a byte per hash bucket, 64 KiB): zero, the common case,
 * means "not sampled", and costs one load.
 *
 * Dumps (at exit, after POOLMALLOC_PROF_SIGNAL, or pm_prof_dump(path)) write three files:
 *   path               pprof's legacy heap profile (text; `pprof -inuse_space|-alloc_space`),
 *                      raw sampled counts with the rate in its header (heap_v2/N): pprof
 *                      scales them back up itself, and symbolises the addresses using the
 *                      MAPPED_LIBRARIES section (a copy of /proc/self/maps);
 *   path.live.folded   Brendan Gregg's folded stacks of the estimated live bytes,
 *   path.alloc.folded  the same for all bytes allocated since start (cumulative);
 * the folded ones feed scripts/heapprof-flamegraph (an SVG flame graph).
 *
 * A dump asked for by signal: the handler only raises a flag and posts a semaphore (both
 * async-signal-safe; writing a profile takes locks and calls dladdr). A thread of the layer,
 * started by a constructor (outside any allocator call, where pthread_create may allocate),
 * waits on the semaphore and writes the profile at once, even if the program is idle. The
 * flag is also checked at every hook of the layer (safe points: no lock of ours is held),
 * which serves a fork child, whose copy of the process has no such thread.
 */
#include "instrument/instrument.h"
#include "options.h"

#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#define RECORDS (1u << 18) /* sampled blocks live at once; more are counted as dropped */

typedef struct prof_record {
    uintptr_t ptr; /* 0: empty slot */
    uint64_t size;
    uint64_t est;  /* estimated bytes this sample stands for */
    uint32_t stack;
} prof_record;

PM_TLS int64_t pm_prof_countdown;
PM_BIG_BSS uint8_t pm_prof_filter[1u << PM_PROF_FILTER_BITS];
static PM_TLS uint64_t rng_state;
static prof_record *records;
static uint32_t records_used;
static uint64_t dropped;
static pthread_mutex_t prof_lock = PTHREAD_MUTEX_INITIALIZER;
volatile int pm_prof_dump_pending;
static _Atomic uint32_t signal_dumps;
static _Atomic uint64_t seed_counter;

/* ---- numbers: no libm in the allocator ----------------------------------------------------- */

static uint64_t rng_next(void) {
    if (PM_UNLIKELY(rng_state == 0)) {
        uint64_t c = atomic_fetch_add(&seed_counter, 1) + 1;
        rng_state = (pm_os_now_ms() ^ (uintptr_t)&rng_state ^ (c * 0x9E3779B97F4A7C15ull)) | 1;
    }
    rng_state ^= rng_state >> 12; /* xorshift64* */
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Natural logarithm of x > 0: x = m * 2^e with m in [1, 2), ln m = 2 atanh((m-1)/(m+1)). */
static double ln(double x) {
    uint64_t bits;
    memcpy(&bits, &x, 8);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & ((1ull << 52) - 1)) | (1023ull << 52);
    double m;
    memcpy(&m, &bits, 8);
    double s = (m - 1) / (m + 1), s2 = s * s; /* |s| < 1/3: the series converges fast */
    double series = s * (2 + s2 * (2.0 / 3 + s2 * (2.0 / 5 + s2 * (2.0 / 7 + s2 * (2.0 / 9)))));
    return series + e * 0.6931471805599453;
}

/* exp(-x) for x >= 0: exp(-x) = 2^-k exp(-r) with r in [0, ln 2). */
static double exp_neg(double x) {
    if (x > 700)
        return 0;
    int k = (int)(x / 0.6931471805599453);
    double r = x - k * 0.6931471805599453, term = 1, sum = 1;
    for (int i = 1; i <= 12; i++) {
        term *= -r / i;
        sum += term;
    }
    while (k-- > 0)
        sum *= 0.5;
    return sum;
}

/* Bytes until the next sample: exponential with mean pm_instr_opt.prof_sample, at least 1. */
static int64_t next_interval(void) {
    double u = (double)((rng_next() >> 11) + 1) * (1.0 / 9007199254740992.0); /* (0, 1] */
    double bytes = -ln(u) * (double)pm_instr_opt.prof_sample;
    return bytes < 1 ? 1 : bytes > 9e18 ? INT64_MAX : (int64_t)bytes;
}

/* What a sample of size bytes stands for: size / P(sampled). */
static uint64_t estimate(uint64_t size) {
    double x = (double)size / (double)pm_instr_opt.prof_sample;
    if (x > 30)
        return size;
    double p = x < 1e-6 ? x : 1 - exp_neg(x);
    return (uint64_t)((double)size / p + 0.5);
}

/* ---- the table of sampled blocks (under prof_lock) -------------------------------------------- */

static uint32_t record_slot(uintptr_t p) {
    return (uint32_t)(((p >> 4) * 0x9E3779B97F4A7C15ull) >> 40) & (RECORDS - 1);
}

static void account(const prof_record *r, int sign) {
    pm_stack *s = pm_stack_get(r->stack);
    s->prof_live_n += (uint64_t)sign;
    s->prof_live_bytes += (uint64_t)sign * r->size;
    s->prof_live_est += (uint64_t)sign * r->est;
}

/* Backward-shift deletion keeps linear probing free of tombstones. */
static void remove_at(uint32_t i) {
    account(&records[i], -1);
    uint8_t *f = &pm_prof_filter[pm_prof_filter_slot((void *)records[i].ptr)];
    if (*f != 255) /* a saturated count stays: the filter only errs towards "maybe" */
        __atomic_store_n(f, (uint8_t)(*f - 1), __ATOMIC_RELAXED);
    records_used--;
    for (uint32_t j = i;;) {
        records[i].ptr = 0;
        for (;;) {
            j = (j + 1) & (RECORDS - 1);
            if (records[j].ptr == 0)
                return;
            uint32_t home = record_slot(records[j].ptr);
            /* records[j] may move to i if its home is not in (i, j] cyclically */
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        records[i] = records[j];
        i = j;
    }
}

static uint32_t find(uintptr_t p) {
    for (uint32_t i = record_slot(p);; i = (i + 1) & (RECORDS - 1)) {
        if (records[i].ptr == p)
            return i;
        if (records[i].ptr == 0)
            return UINT32_MAX;
    }
}

static void insert(uintptr_t p, uint64_t size, uint64_t est, uint32_t stack) {
    uint32_t old = find(p);
    if (old != UINT32_MAX) /* a record left by a realloc race: the block is new */
        remove_at(old);
    if (records_used >= RECORDS / 2) {
        dropped++;
        return;
    }
    uint32_t i = record_slot(p);
    while (records[i].ptr != 0)
        i = (i + 1) & (RECORDS - 1);
    records[i] = (prof_record){.ptr = p, .size = size, .est = est, .stack = stack};
    records_used++;
    account(&records[i], 1);
    pm_stack *s = pm_stack_get(stack);
    s->prof_total_n++;
    s->prof_total_bytes += size;
    s->prof_total_est += est;
    uint8_t *f = &pm_prof_filter[pm_prof_filter_slot((void *)p)];
    if (*f != 255)
        __atomic_store_n(f, (uint8_t)(*f + 1), __ATOMIC_RELAXED);
}

/* ---- hooks ------------------------------------------------------------------------------------ */

static void record(void *p, size_t size, uint32_t stack) {
    pthread_mutex_lock(&prof_lock);
    insert((uintptr_t)p, size, estimate(size), stack);
    pthread_mutex_unlock(&prof_lock);
}

void pm_prof_sample(void *p, size_t size, void *site, uintptr_t fp) {
    static PM_TLS bool started;
    int64_t interval = next_interval();
    if (PM_UNLIKELY(!started)) { /* a thread's first allocation: its first draw */
        started = true;
        pm_prof_countdown += interval;
        if (pm_prof_countdown > 0)
            return;
        interval = next_interval();
    }
    pm_prof_countdown = interval;
    int saved = errno;
    record(p, size, pm_stack_capture(site, fp));
    errno = saved;
}

/* ---- sampling on the core's countdown ----------------------------------------------------------- */

bool pm_prof_watch_frees;

#if PM_PROF_BY_CORE
/* ---- sampled blocks live in pools of their own ------------------------------------------------
 * Each thread that samples gets a heap of its own for sampled blocks (a prof heap), which is no
 * thread's fast heap: the fast free path, which takes only blocks of pools the freeing thread
 * owns, never takes one of its blocks, so every free of a sampled block reaches pm_free_slow,
 * where PM_PROF_SLOW_FREE finds it in the counting filter. The block the program gets is of
 * the same size class as the one the core popped (so the same size and alignment: a class
 * serves an aligned request only if its size is a multiple of the alignment), and that one
 * goes back to the thread's cache. A prof heap is used by its thread alone (as any heap), so no
 * lock is held while the core works on it; at thread exit it goes to a list of spares for the
 * next thread, never to the core's abandoned heaps (a thread adopting one would free its
 * sampled blocks on the fast path). */

static PM_TLS pm_heap *prof_heap;
static PM_TLS bool in_hook; /* the hook allocating (it should not): no sampling inside */
static pm_heap *spare_heaps[64];
static uint32_t spare_count;
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER; /* a leaf: nothing taken inside */
static pthread_key_t heap_key;
static bool heap_key_made;

/* The key's destructor, in the exiting thread: a later sample there (another key's destructor
 * allocating) must take a heap anew, not share this one with the thread that gets it next. */
static void give_back_heap(void *heap) {
    prof_heap = NULL;
    pthread_mutex_lock(&spare_lock);
    if (spare_count < sizeof spare_heaps / sizeof spare_heaps[0])
        spare_heaps[spare_count++] = heap;
    /* else (64 threads' worth spare): kept by nobody; its pools still take frees */
    pthread_mutex_unlock(&spare_lock);
}

static pm_heap *my_prof_heap(void) {
    if (PM_LIKELY(prof_heap != NULL))
        return prof_heap;
    pthread_mutex_lock(&spare_lock);
    pm_heap *h = spare_count > 0 ? spare_heaps[--spare_count] : NULL;
    pthread_mutex_unlock(&spare_lock);
    if (h == NULL)
        h = pm_heap_take();
    if (h != NULL && heap_key_made)
        pthread_setspecific(heap_key, h); /* its destructor gives h back at thread exit */
    prof_heap = h;
    return h;
}

/* The sampled block moves to the thread's prof heap; the block the core popped goes back. */
static void *move_to_prof_heap(void *block) {
    if (!pm_in_arena(block)) /* a large block: its free reaches pm_free_slow anyway */
        return block;
    pm_heap *h = my_prof_heap();
    void *moved = h != NULL ? pm_heap_alloc(h, pm_pool_of(block)->cls) : NULL;
    if (PM_UNLIKELY(moved == NULL)) /* out of memory: sampled, but its free may go unseen */
        return block;
    pm_raw_free(block);
    return moved;
}

/* pm_sample_hook: called by the core with a block whose countdown expired (NULL when it only
 * arms a countdown, or the allocation failed) and the return address of the core's function
 * that called it (the program's call site when malloc tail-called it); returns the next
 * countdown. pm_stack_capture_scan finds the program's frames above the core's. */
static PM_NOINLINE int64_t core_hook(void **block, size_t size, void *caller) {
    if (*block != NULL && !in_hook) {
        int saved = errno;
        uintptr_t fp = PM_CALLER_FP();
        in_hook = true;
        void *p = move_to_prof_heap(*block);
        *block = p;
        record(p, size, pm_stack_capture_scan((uintptr_t)__builtin_frame_address(0), fp,
                                              (uintptr_t)caller));
        in_hook = false;
        PM_PROF_SAFE_POINT();
        errno = saved;
    }
    return next_interval();
}
#endif

void pm_prof_forget(void *p) {
    pthread_mutex_lock(&prof_lock);
    uint32_t i = find((uintptr_t)p);
    if (i != UINT32_MAX)
        remove_at(i);
    pthread_mutex_unlock(&prof_lock);
}

/* ---- dumps ------------------------------------------------------------------------------------ */

typedef struct prof_row {
    uint32_t stack;
    uint64_t live_n, live_bytes, live_est, total_n, total_bytes, total_est;
} prof_row;

/* A copy of the counters of every sampled stack, taken under the lock so that the slow part
 * (symbolising, writing) runs without it. */
static prof_row *snapshot(uint32_t *n_out, size_t *map_len) {
    uint32_t count = pm_stack_count();
    *map_len = ((size_t)count + 1) * sizeof(prof_row);
    prof_row *rows = pm_os_map(*map_len);
    if (rows == NULL)
        return NULL;
    uint32_t n = 0;
    pthread_mutex_lock(&prof_lock);
    for (uint32_t id = 1; id <= count; id++) {
        const pm_stack *s = pm_stack_get(id);
        if (s->prof_total_n == 0)
            continue;
        rows[n++] = (prof_row){id, s->prof_live_n, s->prof_live_bytes, s->prof_live_est,
                               s->prof_total_n, s->prof_total_bytes, s->prof_total_est};
    }
    pthread_mutex_unlock(&prof_lock);
    *n_out = n;
    return rows;
}

static void copy_file(pm_writer *w, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[4096];
    ssize_t n;
    pm_writer_flush(w);
    while ((n = read(fd, buf, sizeof buf)) > 0)
        pm_os_write(w->fd, buf, (size_t)n);
    close(fd);
}

static void write_pprof(int fd, const prof_row *rows, uint32_t n) {
    PM_BIG_BSS static char buf[16384];
    pm_writer w;
    pm_writer_init(&w, buf, sizeof buf, fd);
    uint64_t ln_ = 0, lb = 0, tn = 0, tb = 0;
    for (uint32_t i = 0; i < n; i++) {
        ln_ += rows[i].live_n, lb += rows[i].live_bytes;
        tn += rows[i].total_n, tb += rows[i].total_bytes;
    }
    pm_writer_printf(&w, "heap profile: %lu: %lu [%lu: %lu] @ heap_v2/%lu\n", (unsigned long)ln_,
                     (unsigned long)lb, (unsigned long)tn, (unsigned long)tb,
                     (unsigned long)pm_instr_opt.prof_sample);
    for (uint32_t i = 0; i < n; i++) {
        const pm_stack *s = pm_stack_get(rows[i].stack);
        pm_writer_printf(&w, "%lu: %lu [%lu: %lu] @", (unsigned long)rows[i].live_n,
                         (unsigned long)rows[i].live_bytes, (unsigned long)rows[i].total_n,
                         (unsigned long)rows[i].total_bytes);
        for (uint32_t k = 0; k < s->depth; k++)
            pm_writer_printf(&w, " 0x%lx", (unsigned long)s->pc[k]);
        pm_writer_printf(&w, "\n");
    }
    pm_writer_printf(&w, "\nMAPPED_LIBRARIES:\n");
    copy_file(&w, "/proc/self/maps");
    pm_writer_flush(&w);
}

static void write_folded(int fd, const prof_row *rows, uint32_t n, bool live) {
    PM_BIG_BSS static char buf[16384];
    pm_writer w;
    pm_writer_init(&w, buf, sizeof buf, fd);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t bytes = live ? rows[i].live_est : rows[i].total_est;
        if (bytes == 0)
            continue;
        const pm_stack *s = pm_stack_get(rows[i].stack);
        for (uint32_t k = s->depth; k-- > 0;) { /* outermost caller first */
            pm_write_frame_name(&w, s->pc[k]);
            pm_writer_printf(&w, "%s", k ? ";" : "");
        }
        if (s->depth == 0)
            pm_writer_printf(&w, "[stack table full]");
        pm_writer_printf(&w, " %lu\n", (unsigned long)bytes);
    }
    pm_writer_flush(&w);
}

static pthread_mutex_t dump_lock = PTHREAD_MUTEX_INITIALIZER; /* one dump at a time */

static int write_one(const char *path, const prof_row *rows, uint32_t n, int kind) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    if (kind == 0)
        write_pprof(fd, rows, n);
    else
        write_folded(fd, rows, n, kind == 1);
    close(fd);
    return 0;
}

static int dump(const char *path) {
    if (!pm_instr_opt.prof || !pm_instr_active)
        return ENOSYS;
    uint32_t n = 0;
    size_t map_len = 0;
    prof_row *rows = snapshot(&n, &map_len);
    if (rows == NULL)
        return ENOMEM;
    char name[600];
    pthread_mutex_lock(&dump_lock);
    pm_symbol_cache_reset();
    int rc = write_one(path, rows, n, 0);
    pm_snprintf(name, sizeof name, "%s.live.folded", path);
    if (rc == 0)
        rc = write_one(name, rows, n, 1);
    pm_snprintf(name, sizeof name, "%s.alloc.folded", path);
    if (rc == 0)
        rc = write_one(name, rows, n, 2);
    pthread_mutex_unlock(&dump_lock);
    pm_os_unmap(rows, map_len);
    return rc;
}

int pm_prof_dump(const char *path) {
    if (path == NULL || path[0] == 0)
        return EINVAL;
    int saved = errno;
    int rc = dump(path);
    errno = saved;
    return rc;
}

static void dump_numbered(const char *suffix) {
    char path[512];
    pm_instr_expand_path(path, sizeof path, pm_instr_opt.prof_file, suffix);
    int rc = dump(path);
    if (rc != 0)
        pm_warn("POOLMALLOC_PROF: cannot write %s (errno %d)", path, rc);
}

/* ---- dumps asked for by signal ------------------------------------------------------------------ */

static sem_t dump_sem;
static volatile int dump_thread_up; /* the semaphore has a waiter: set once, cleared in a child */

void pm_prof_dump_requested(void) {
    if (!__atomic_exchange_n(&pm_prof_dump_pending, 0, __ATOMIC_ACQ_REL))
        return; /* another thread took this request */
    int saved = errno;
    char suffix[32];
    pm_snprintf(suffix, sizeof suffix, ".%u", atomic_fetch_add(&signal_dumps, 1) + 1);
    dump_numbered(suffix);
    errno = saved;
}

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    __atomic_store_n(&pm_prof_dump_pending, 1, __ATOMIC_RELEASE);
    if (dump_thread_up)
        sem_post(&dump_sem);
    errno = saved;
}

static void *dump_thread(void *arg) {
    (void)arg;
    for (;;) {
        while (sem_wait(&dump_sem) != 0) /* EINTR: the thread blocks every signal, but still */
            ;
        pm_prof_dump_requested();
    }
    return NULL;
}

/* Started by a constructor, not at pm_init: pthread_create allocates, and pm_init runs inside
 * the program's first malloc. Every signal is blocked in the thread, so that none of the
 * program's is delivered to it. Without the thread (it could not be made), the dump waits
 * for the next safe point. */
__attribute__((constructor)) static void start_dump_thread(void) {
    pm_init();
    if (!pm_instr_opt.prof || pm_instr_opt.prof_signal == 0 || !pm_instr_active)
        return;
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t t;
    if (sem_init(&dump_sem, 0, 0) != 0 || pthread_attr_init(&attr) != 0)
        return;
    pthread_attr_setstacksize(&attr, 256 << 10);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t, &attr, dump_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        dump_thread_up = 1;
    else
        pm_warn("POOLMALLOC_PROF_SIGNAL: no thread to write profiles (error %d): each is "
                "written at the next allocation that reaches poolmalloc's slow paths", rc);
}

void pm_prof_exit_dump(void) {
    if (dropped != 0)
        pm_warn("POOLMALLOC_PROF: %lu samples dropped (more than %u sampled blocks live)",
                (unsigned long)dropped, RECORDS / 2);
    dump_numbered("");
}

void pm_prof_init(bool by_core) {
    records = pm_os_reserve(RECORDS * sizeof(prof_record));
    if (records == NULL)
        pm_fatal("POOLMALLOC_PROF: cannot map the sample table");
#if PM_PROF_BY_CORE
    if (by_core) {
        heap_key_made = pthread_key_create(&heap_key, give_back_heap) == 0;
        pm_prof_watch_frees = true;
        __atomic_store_n(&pm_sample_hook, core_hook, __ATOMIC_RELEASE);
        pm_sample_rearm_all();
    }
#else
    (void)by_core;
#endif
    if (pm_instr_opt.prof_signal != 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction((int)pm_instr_opt.prof_signal, &sa, NULL) != 0)
            pm_warn("POOLMALLOC_PROF_SIGNAL=%ld: cannot install a handler (errno %d)",
                    pm_instr_opt.prof_signal, errno);
    }
}

#if !PM_PROF_BY_CORE
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
#endif

void pm_prof_fork_prepare(void) {
    pthread_mutex_lock(&dump_lock);
    pthread_mutex_lock(&prof_lock);
    pthread_mutex_lock(&spare_lock);
}
void pm_prof_fork_parent(void) {
    pthread_mutex_unlock(&spare_lock);
    pthread_mutex_unlock(&prof_lock);
    pthread_mutex_unlock(&dump_lock);
}
void pm_prof_fork_child(void) {
    pm_lock_reinit(&spare_lock);
    dump_thread_up = 0; /* threads do not survive fork: safe points serve the child */
    pm_lock_reinit(&prof_lock);
    pm_lock_reinit(&dump_lock);
}
