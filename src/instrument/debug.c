/*
 * debug.c: header mode, for POOLMALLOC_DEBUG and POOLMALLOC_LEAKS.
 *
 * Every block is allocated from the core with room for a header in front (and, in DEBUG, 16
 * forbidden bytes behind):
 *
 *   raw  ...  | size serial stacks magic offset | 16 x 0xFD | user bytes ... | 16 x 0xFD |
 *             ^ header (64 bytes)                           ^ what the program gets
 *
 * The header keeps the requested size, a serial number, the ids of the allocating and freeing
 * stacks and a magic word that says alive or freed. DEBUG, as CPython's debug hooks: new
 * blocks are filled with 0xCD, freed ones with 0xDD and kept in a bounded quarantine (FIFO);
 * a block's forbidden bytes are checked when it is freed or reallocated, and its fill when it
 * leaves the quarantine, at every sweep (each SWEEP_EVERY frees) and at exit. Any damage is
 * reported in one block of text on stderr, then the process aborts. LEAKS alone uses the
 * header only to know each live block's size and stack (leaks.c reports them at exit).
 */
#include "instrument/instrument.h"
#include "options.h"

#include <stdlib.h>
#include <unistd.h>

#define HEADER 64
#define GUARD 16
#define FORBIDDEN 0xFD /* CPython's FORBIDDENBYTE */
#define MAGIC_LIVE 0x4c495645u
#define MAGIC_FREED 0x46524545u
#define QUARANTINE_SLOTS (1u << 16) /* a power of two */
#define SWEEP_EVERY (1u << 16)

typedef struct dbg_header {
    uint64_t size;         /* requested */
    uint64_t serial;       /* 1, 2, ... in allocation order */
    uint32_t alloc_stack;
    uint32_t free_stack;   /* once freed */
    uint32_t magic;
    uint32_t offset;       /* user - raw: 64, or the alignment when larger */
    uint64_t unused[2];
    uint8_t front[GUARD];  /* forbidden bytes (DEBUG) */
} dbg_header;
_Static_assert(sizeof(dbg_header) == HEADER, "the header is 64 bytes");

static _Atomic uint64_t next_serial = 1;
static size_t tail_guard; /* GUARD in DEBUG, 0 in LEAKS alone */

/* The quarantine: a ring of freed blocks (user pointers), oldest at head. */
static void **quarantine;
static uint32_t q_head, q_count;
static size_t q_bytes;
static uint32_t frees_since_sweep;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;

void pm_dbg_init(void) {
    tail_guard = pm_instr_opt.debug ? GUARD : 0;
    if (pm_instr_opt.debug) {
        quarantine = pm_os_reserve(QUARANTINE_SLOTS * sizeof(void *));
        if (quarantine == NULL)
            pm_fatal("POOLMALLOC_DEBUG: cannot map the quarantine");
    }
}

static dbg_header *header_of(const void *user) { return (dbg_header *)((char *)user - HEADER); }

/* ---- reports --------------------------------------------------------------------------- */

PM_BIG_BSS static char report_buf[8192];

static PM_NORETURN PM_COLD void report(const char *what, const char *fn, const void *p,
                                       const dbg_header *h, const char *detail) {
    pm_writer w;
    pm_writer_init(&w, report_buf, sizeof report_buf, 2);
    pm_writer_printf(&w, "poolmalloc: debug: %s detected by %s(%p)\n", what, fn, p);
    if (h != NULL)
        pm_writer_printf(&w, "  block %p of %lu bytes, serial %lu\n", p, (unsigned long)h->size,
                         (unsigned long)h->serial);
    if (detail != NULL)
        pm_writer_printf(&w, "  %s\n", detail);
    if (h != NULL && h->alloc_stack != 0) {
        pm_writer_printf(&w, "  allocated by:\n");
        pm_write_stack(&w, pm_stack_get(h->alloc_stack), "    ");
    }
    if (h != NULL && h->magic == MAGIC_FREED && h->free_stack != 0) {
        pm_writer_printf(&w, "  freed by:\n");
        pm_write_stack(&w, pm_stack_get(h->free_stack), "    ");
    }
    pm_writer_printf(&w, "poolmalloc: aborting\n");
    pm_writer_flush(&w);
    abort();
}

/* ---- finding a block's header safely ------------------------------------------------------ */

/* A pointer the program passes to free or realloc may be anything. Its header is read only
 * where that cannot fault: inside an arena (mapped; headers never start before a pool), or
 * for a large block, once the core confirms that the raw start in front of it is one. Large
 * blocks are page-aligned, so the raw start is the user pointer less the header, or less the
 * alignment for aligned ones. */
static bool header_readable(const void *p) {
    if (pm_in_arena(p))
        return true;
    uintptr_t in_page = (uintptr_t)p & (PM_PAGE_SIZE - 1);
    if (in_page != 0)
        return in_page >= HEADER && pm_large_usable((char *)p - in_page) != 0;
    for (size_t align = PM_PAGE_SIZE; align != 0 && align <= ((size_t)1 << 40); align <<= 1)
        if ((uintptr_t)p >= align && pm_large_usable((char *)p - align) != 0)
            return true;
    return false;
}

static void raw_bounds(const dbg_header *h, const void *p, char **raw, size_t *total) {
    *raw = (char *)p - h->offset;
    *total = h->offset + h->size + tail_guard;
}

/* A live block's header: its magic, and an offset that is the header's size or a larger
 * power of two (an alignment). */
static bool header_live(const dbg_header *h) {
    return h->magic == MAGIC_LIVE &&
           (h->offset == HEADER || (h->offset > HEADER && (h->offset & (h->offset - 1)) == 0));
}

/* The live header of p, or a report: invalid pointer, double free, or a wrecked header. */
static dbg_header *checked_header(const void *p, const char *fn) {
    if (((uintptr_t)p & (PM_MIN_ALIGN - 1)) != 0 || !header_readable(p))
        report("invalid pointer (never allocated, or not the start of a block)", fn, p, NULL,
               NULL);
    dbg_header *h = header_of(p);
    if (h->magic == MAGIC_FREED)
        report(pm_instr_opt.debug ? "double free (or use of a freed block)" : "double free", fn, p, h,
               NULL);
    if (!header_live(h))
        report("invalid pointer, or a buffer underflow that overwrote the block's header", fn, p,
               NULL, NULL);
    return h;
}

static size_t first_not(const uint8_t *s, size_t n, uint8_t byte) {
    size_t i = 0;
    uint64_t pattern = byte * 0x0101010101010101ull, word;
    for (; i + 8 <= n; i += 8) {
        memcpy(&word, s + i, 8);
        if (word != pattern)
            break;
    }
    for (; i < n; i++)
        if (s[i] != byte)
            return i;
    return n;
}

/* The forbidden bytes on both sides of a live block. */
static void check_guards(const void *p, const dbg_header *h, const char *fn) {
    if (!pm_instr_opt.debug)
        return;
    char detail[160];
    size_t i = first_not(h->front, GUARD, FORBIDDEN);
    if (i < GUARD) {
        pm_snprintf(detail, sizeof detail,
                    "forbidden byte %d bytes before the block was overwritten: 0x%02x, expected "
                    "0x%02x", (int)(GUARD - i), h->front[i], FORBIDDEN);
        report("buffer underflow", fn, p, h, detail);
    }
    const uint8_t *tail = (const uint8_t *)p + h->size;
    i = first_not(tail, GUARD, FORBIDDEN);
    if (i < GUARD) {
        pm_snprintf(detail, sizeof detail,
                    "forbidden byte at offset %lu (%d bytes past the end) was overwritten: "
                    "0x%02x, expected 0x%02x", (unsigned long)(h->size + i), (int)i + 1, tail[i],
                    FORBIDDEN);
        report("buffer overflow", fn, p, h, detail);
    }
}

/* A block coming out of the quarantine, or swept: still all 0xDD, guards intact? */
static void check_freed(const void *p, const char *when) {
    const dbg_header *h = header_of(p);
    char detail[200];
    if (h->magic != MAGIC_FREED)
        report("write after free (the freed block's header was overwritten)", when, p, NULL, NULL);
    size_t i = first_not(p, h->size, PM_POISON_FREED);
    if (i < h->size) {
        pm_snprintf(detail, sizeof detail,
                    "byte at offset %lu was written after the block was freed: 0x%02x, expected "
                    "0x%02x", (unsigned long)i, ((const uint8_t *)p)[i], PM_POISON_FREED);
        report("write after free", when, p, h, detail);
    }
    check_guards(p, h, when);
}

/* ---- allocation ------------------------------------------------------------------------- */

void *pm_dbg_alloc(size_t size, size_t align, bool zero, void *site, uintptr_t fp) {
    size_t offset = align > HEADER ? align : HEADER;
    if (size > PTRDIFF_MAX - offset - GUARD) {
        errno = ENOMEM;
        return NULL;
    }
    size_t total = offset + size + tail_guard;
    char *raw = align > PM_MIN_ALIGN ? pm_raw_aligned(offset, total) : pm_raw_malloc(total);
    if (raw == NULL)
        return NULL;
    char *p = raw + offset;
    dbg_header *h = header_of(p);
    h->size = size;
    h->serial = atomic_fetch_add_explicit(&next_serial, 1, memory_order_relaxed);
    h->alloc_stack = pm_stack_capture(site, fp);
    h->free_stack = 0;
    h->offset = (uint32_t)offset;
    h->magic = MAGIC_LIVE;
    if (pm_instr_opt.debug) {
        memset(h->front, FORBIDDEN, GUARD);
        memset(p + size, FORBIDDEN, GUARD);
    }
    if (zero)
        memset(p, 0, size);
    else if (pm_instr_opt.debug)
        memset(p, PM_POISON_NEW, size);
    pm_stack *s = pm_stack_get(h->alloc_stack);
    atomic_fetch_add_explicit(&s->live_blocks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->live_bytes, size, memory_order_relaxed);
    return p;
}

size_t pm_dbg_usable(const void *p) {
    if (p == NULL)
        return 0;
    return checked_header(p, "malloc_usable_size")->size;
}

/* ---- free and the quarantine ---------------------------------------------------------------- */

static void release(void *p) {
    char *raw;
    size_t total;
    raw_bounds(header_of(p), p, &raw, &total);
    pm_raw_free(raw);
}

/* Puts p in the quarantine; returns in *out (up to max) the blocks that must leave it. */
static uint32_t quarantine_push(void *p, size_t bytes, void **out, uint32_t max, bool *sweep) {
    uint32_t n = 0;
    pthread_mutex_lock(&q_lock);
    quarantine[(q_head + q_count) & (QUARANTINE_SLOTS - 1)] = p;
    q_count++;
    q_bytes += bytes;
    while (n < max && q_count > 1 && (q_count == QUARANTINE_SLOTS ||
                                      q_bytes > pm_instr_opt.debug_quarantine)) {
        void *old = quarantine[q_head];
        q_head = (q_head + 1) & (QUARANTINE_SLOTS - 1);
        q_count--;
        q_bytes -= header_of(old)->size;
        out[n++] = old;
    }
    *sweep = ++frees_since_sweep >= SWEEP_EVERY;
    if (*sweep)
        frees_since_sweep = 0;
    pthread_mutex_unlock(&q_lock);
    return n;
}

void pm_dbg_sweep(void) {
    if (!pm_instr_opt.debug)
        return;
    pthread_mutex_lock(&q_lock);
    for (uint32_t i = 0; i < q_count; i++)
        check_freed(quarantine[(q_head + i) & (QUARANTINE_SLOTS - 1)], "the quarantine sweep");
    pthread_mutex_unlock(&q_lock);
}

void pm_dbg_free(void *p, void *site, uintptr_t fp) {
    dbg_header *h = checked_header(p, "free");
    check_guards(p, h, "free");
    pm_stack *s = pm_stack_get(h->alloc_stack);
    atomic_fetch_sub_explicit(&s->live_blocks, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->live_bytes, h->size, memory_order_relaxed);
    if (!pm_instr_opt.debug) {
        h->magic = MAGIC_FREED; /* a second free finds it while the block is not reused */
        release(p);
        return;
    }
    h->free_stack = pm_stack_capture(site, fp);
    h->magic = MAGIC_FREED;
    memset(p, PM_POISON_FREED, h->size);
    void *leaving[8];
    bool sweep;
    uint32_t n = quarantine_push(p, h->size, leaving, 8, &sweep);
    for (uint32_t i = 0; i < n; i++) {
        check_freed(leaving[i], "the quarantine (block leaving it)");
        release(leaving[i]);
    }
    if (sweep)
        pm_dbg_sweep();
}

void *pm_dbg_realloc(void *p, size_t size, void *site, uintptr_t fp) {
    dbg_header *h = checked_header(p, "realloc");
    check_guards(p, h, "realloc");
    /* Always moves, as CPython's debug realloc: a stale pointer to the old block then reads
     * 0xDD and writes through it are caught in the quarantine. */
    void *q = pm_dbg_alloc(size, 0, false, site, fp);
    if (q == NULL)
        return NULL;
    memcpy(q, p, h->size < size ? h->size : size);
    pm_dbg_free(p, site, fp);
    return q;
}

void pm_dbg_fork_prepare(void) { pthread_mutex_lock(&q_lock); }
void pm_dbg_fork_parent(void) { pthread_mutex_unlock(&q_lock); }
void pm_dbg_fork_child(void) { pm_lock_reinit(&q_lock); }

int pm_dbg_owns(const void *p) {
    if (((uintptr_t)p & (PM_MIN_ALIGN - 1)) != 0 || !header_readable(p))
        return 0;
    const dbg_header *h = header_of(p);
    if (!header_live(h))
        return 0;
    /* Interior pointers can hold MAGIC_LIVE by chance: the raw block must be a live one. */
    return pm_raw_owns((const char *)p - h->offset);
}
