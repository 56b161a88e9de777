/*
 * stack.c: cheap stack capture (a frame-pointer walk) and the table of distinct stacks.
 *
 * The walk follows the chain of saved frame pointers ([fp] = caller's fp, [fp + 8] = return
 * address, on x86-64 and arm64 alike). It must never fault, even in code built without frame
 * pointers, where the register holds anything: every frame must lie inside the calling
 * thread's stack, above the last one, and be aligned; the depth is bounded. The stack's
 * bounds come from /proc/self/maps (the mapping that holds the stack pointer), read once per
 * thread with open/read, no allocation, and again only if the thread moves to another stack.
 *
 * Stacks are interned: a hash table maps the frames to an id, so a block's header carries a
 * 4-byte id, and reports group by id. Entries are never removed. Lookups take no lock (a
 * slot is published after its entry is written); inserts take stack_lock.
 */
#include "instrument/instrument.h"

#include <fcntl.h>
#include <unistd.h>

#define STACKS_MAX (1u << 16)       /* distinct stacks; more all count as id 1 */
#define SLOTS (STACKS_MAX * 2)      /* hash slots: at most half full */

static pm_stack *stacks;            /* [0] unused, [1] "table full", then by id */
static _Atomic uint32_t *slots;     /* hash -> id, 0 empty */
static _Atomic uint32_t stack_count = 1;
static pthread_mutex_t stack_lock = PTHREAD_MUTEX_INITIALIZER;

static PM_TLS uintptr_t stack_lo, stack_hi; /* this thread's stack mapping */
static bool maps_unreadable;                /* no /proc: stacks are the call site alone */

void pm_stack_init(void) {
    stacks = pm_os_reserve(sizeof(pm_stack) * (STACKS_MAX + 1));
    slots = pm_os_reserve(sizeof(uint32_t) * SLOTS);
    if (stacks == NULL || slots == NULL)
        pm_fatal("instrumentation: cannot map the stack table (%zu bytes)",
                 sizeof(pm_stack) * (STACKS_MAX + 1));
}

/* ---- the thread's stack bounds ----------------------------------------------------------- */

static uintptr_t parse_hex(const char **s) {
    uintptr_t v = 0;
    for (;; (*s)++) {
        char c = **s;
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) : 16u;
        if (d == 16)
            return v;
        v = v * 16 + d;
    }
}

/* Calls each(lo, hi, perms, ctx) for every line of /proc/self/maps ("lo-hi perms ...") until
 * it returns true. Lines are parsed from a small buffer; one cut at the buffer's end is carried
 * to the next read. false if the file cannot be read. */
typedef bool (*maps_fn)(uintptr_t lo, uintptr_t hi, const char *perms, void *ctx);
static bool maps_each(maps_fn each, void *ctx) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[4096 + 1];
    size_t have = 0;
    bool done = false;
    while (!done) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *line = buf, *nl;
        while (!done && (nl = memchr(line, '\n', have - (size_t)(line - buf))) != NULL) {
            const char *s = line;
            uintptr_t a = parse_hex(&s);
            s++; /* '-' */
            uintptr_t b = parse_hex(&s);
            done = each(a, b, s + 1, ctx);
            line = nl + 1;
        }
        have -= (size_t)(line - buf);
        memmove(buf, line, have);
        if (have == sizeof buf - 1) /* a line longer than the buffer: skip it */
            have = 0;
    }
    close(fd);
    return true;
}

typedef struct { uintptr_t sp, lo, hi; bool found; } holder;
static bool holds_sp(uintptr_t lo, uintptr_t hi, const char *perms, void *ctx) {
    (void)perms;
    holder *h = ctx;
    if (lo <= h->sp && h->sp < hi)
        h->lo = lo, h->hi = hi, h->found = true;
    return h->found;
}

/* Finds the mapping holding sp in /proc/self/maps. */
static bool find_mapping(uintptr_t sp, uintptr_t *lo, uintptr_t *hi) {
    holder h = {.sp = sp};
    if (!maps_each(holds_sp, &h)) {
        maps_unreadable = true;
        return false;
    }
    *lo = h.lo, *hi = h.hi;
    return h.found;
}

static bool stack_bounds_hold(uintptr_t sp) {
    if (PM_LIKELY(stack_lo <= sp && sp < stack_hi))
        return true;
    if (maps_unreadable)
        return false;
    int saved = errno;
    uintptr_t lo = 0, hi = 0;
    bool ok = find_mapping(sp, &lo, &hi);
    errno = saved;
    stack_lo = lo, stack_hi = hi;
    return ok;
}

/* ---- the walk ------------------------------------------------------------------------------ */

/* Appends to pc[n..] the return addresses of the frame-pointer chain from fp, each frame record
 * inside the thread's stack, above lo and the last; returns the new depth. */
static uint32_t walk_chain(uintptr_t fp, uintptr_t lo, uintptr_t *pc, uint32_t n) {
    uintptr_t hi = stack_hi;
    while (n < PM_STACK_DEPTH) {
        /* the frame record (two words) inside the stack, above the last, word-aligned */
        if (fp < lo || fp > hi - 2 * sizeof(uintptr_t) || (fp & (sizeof(uintptr_t) - 1)))
            break;
        const uintptr_t *frame = (const uintptr_t *)fp;
        uintptr_t ret = frame[1];
        if (ret < 4096) /* no code lives at page 0: the chain's end, or not a frame */
            break;
        pc[n++] = ret;
        lo = fp + 2 * sizeof(uintptr_t);
        fp = frame[0];
    }
    return n;
}

static uint32_t walk(void *site, uintptr_t fp, uintptr_t *pc) {
    uint32_t n = 0;
    pc[n++] = (uintptr_t)site;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (!stack_bounds_hold(sp))
        return n;
    return walk_chain(fp, sp, pc, n);
}

static uint32_t intern(const uintptr_t *pc, uint32_t n);

/* ---- finding the call site by scanning the stack ------------------------------------------
 * The sampling hook is called by the core with no call site and through frames that may not
 * keep frame pointers. Above the hook's frame lie those frames (their saved registers and
 * return addresses into this library), then the return address into the program that called
 * malloc. A word is taken for it when it points into an executable mapping outside this
 * library, just after a call instruction: a saved register rarely looks like that. */

#define EXEC_MAX 256
#define SCAN_WORDS 256 /* 2 KiB above the hook: the core's frames are far smaller */
#define FRAME_WORDS 32 /* where the program's frame record may lie above its call */

typedef struct exec_range { uintptr_t lo, hi; } exec_range;
PM_BIG_BSS static exec_range exec_ranges[EXEC_MAX]; /* under exec_lock */
static uint32_t exec_count;
static exec_range self_text;             /* the mapping that holds this code */
static pthread_mutex_t exec_lock = PTHREAD_MUTEX_INITIALIZER;

static bool note_exec(uintptr_t lo, uintptr_t hi, const char *perms, void *ctx) {
    (void)ctx;
    if (perms[2] != 'x')
        return false;
    if (lo <= (uintptr_t)&pm_stack_capture_scan && (uintptr_t)&pm_stack_capture_scan < hi)
        self_text = (exec_range){lo, hi};
    if (exec_count < EXEC_MAX)
        exec_ranges[exec_count++] = (exec_range){lo, hi};
    return false;
}

/* Re-reads the executable mappings: at the first scan, and when one finds no site (a library
 * loaded since then), at most once per 256 scans. Sorted by address, for in_exec. */
static void exec_refresh(void) {
    exec_count = 0;
    maps_each(note_exec, NULL);
    for (uint32_t i = 1; i < exec_count; i++) { /* /proc lists them in order: rarely moves */
        exec_range r = exec_ranges[i];
        uint32_t j = i;
        for (; j > 0 && exec_ranges[j - 1].lo > r.lo; j--)
            exec_ranges[j] = exec_ranges[j - 1];
        exec_ranges[j] = r;
    }
}

/* Whether w points into an executable mapping, at least 8 bytes past its start (so that the
 * bytes of a call before it can be read). A binary search: called for many stack words. */
static bool in_exec(uintptr_t w) {
    uint32_t lo = 0, hi = exec_count;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (w < exec_ranges[mid].lo)
            hi = mid;
        else if (w >= exec_ranges[mid].hi)
            lo = mid + 1;
        else
            return w >= exec_ranges[mid].lo + 8;
    }
    return false;
}

/* Whether the instruction before w is a call (w in an executable mapping, 8 bytes after its
 * start, so the bytes read are mapped). */
static bool after_call(uintptr_t w) {
#if defined(__x86_64__) || defined(__i386__)
    const uint8_t *c = (const uint8_t *)w;
    if (c[-5] == 0xE8)                                             /* call rel32 */
        return true;
    if (c[-2] == 0xFF && ((c[-1] & 0xF8) == 0xD0 || (c[-1] & 0xF8) == 0x10)) /* call *%r, (%r) */
        return true;
    if (c[-3] == 0xFF && ((c[-2] & 0xF8) == 0x50 || c[-2] == 0x14)) /* disp8(%r), (%r,%r) */
        return true;
    if (c[-4] == 0xFF && c[-3] == 0x54)                            /* disp8(%r,%r) */
        return true;
    if (c[-6] == 0xFF && (c[-5] == 0x15 || (c[-5] & 0xF8) == 0x90)) /* *x(%rip), disp32(%r) */
        return true;
    return c[-7] == 0xFF && c[-6] == 0x94;                         /* disp32(%r,%r) */
#elif defined(__aarch64__)
    uint32_t insn;
    memcpy(&insn, (const void *)(w - 4), 4);
    return (insn & 0xFC000000u) == 0x94000000u || (insn & 0xFFFFFC1Fu) == 0xD63F0000u; /* bl, blr */
#else
    (void)w;
    return true;
#endif
}

static bool is_return_address(uintptr_t v) { return in_exec(v) && after_call(v); }

static uintptr_t scan_for_site(uintptr_t from, uintptr_t *slot) {
    const uintptr_t *w = (const uintptr_t *)from;
    uintptr_t end = from + SCAN_WORDS * sizeof(uintptr_t);
    if (end > stack_hi)
        end = stack_hi;
    for (; (uintptr_t)(w + 1) <= end; w++) {
        uintptr_t v = *w;
        if (self_text.lo <= v && v < self_text.hi)
            continue;
        if (is_return_address(v)) {
            *slot = (uintptr_t)w;
            return v;
        }
    }
    return 0;
}

/* Whether a frame record (saved frame pointer, return address) lies at fp, inside [lo, hi).
 * The cheap test (the saved frame pointer points higher up the stack, or is the chain's
 * end) comes first: the caller tries many words. */
static inline bool frame_record_at(uintptr_t fp, uintptr_t lo, uintptr_t hi) {
    if (fp < lo || fp > hi - 2 * sizeof(uintptr_t) || (fp & (sizeof(uintptr_t) - 1)))
        return false;
    const uintptr_t *frame = (const uintptr_t *)fp;
    uintptr_t ret = frame[1];
    return (frame[0] == 0 || (frame[0] > fp && frame[0] < hi)) && ret >= 4096 &&
           (ret < stack_lo || ret >= hi) && is_return_address(ret); /* code is not stack */
}

/* The program's frame record above its call into malloc (lo: just above the return address):
 * the core's frames may use the frame-pointer register for data (and save the program's value
 * somewhere below lo), so fp, the register's value at the hook, is taken only if it leads to
 * a frame record; else the first frame record in the FRAME_WORDS above lo is (0: none, as in
 * code built without frame pointers). */
static uintptr_t program_frame(uintptr_t fp, uintptr_t lo) {
    uintptr_t hi = stack_hi;
    if (frame_record_at(fp, lo, hi))
        return fp;
    uintptr_t end = lo + FRAME_WORDS * sizeof(uintptr_t);
    if (end > hi - 2 * sizeof(uintptr_t))
        end = hi - 2 * sizeof(uintptr_t);
    for (uintptr_t a = (lo + 7) & ~(uintptr_t)7; a <= end; a += 8)
        if (frame_record_at(a, lo, hi))
            return a;
    return 0;
}

/* The slot of the return address `site` above from: the first word that holds it. */
static uintptr_t slot_of(uintptr_t from, uintptr_t site) {
    const uintptr_t *w = (const uintptr_t *)from;
    uintptr_t end = from + SCAN_WORDS * sizeof(uintptr_t);
    for (; (uintptr_t)(w + 1) <= end && (uintptr_t)(w + 1) <= stack_hi; w++)
        if (*w == site)
            return (uintptr_t)w;
    return 0;
}

uint32_t pm_stack_capture_scan(uintptr_t from, uintptr_t fp, uintptr_t caller) {
    static uint32_t scans_since_refresh;
    uintptr_t pc[PM_STACK_DEPTH];
    if (!stack_bounds_hold(from))
        return intern(pc, 0);
    uintptr_t slot = 0, site = 0;
    pthread_mutex_lock(&exec_lock);
    if (exec_count == 0)
        exec_refresh();
    if (caller != 0 && !(self_text.lo <= caller && caller < self_text.hi)) {
        site = caller; /* the core's caller is the program: no guess */
        slot = slot_of(from, site);
    } else {
        site = scan_for_site(from, &slot);
        if (site == 0 && ++scans_since_refresh >= 256) {
            scans_since_refresh = 0;
            exec_refresh();
            site = scan_for_site(from, &slot);
        }
    }
    uint32_t n = 0;
    uintptr_t lo = slot != 0 ? slot + sizeof(uintptr_t) : from;
    if (site != 0)
        pc[n++] = site;
    fp = program_frame(fp, lo); /* else no site seen (this library linked into the program) */
    pthread_mutex_unlock(&exec_lock);
    return intern(pc, walk_chain(fp, lo, pc, n));
}

/* ---- interning ----------------------------------------------------------------------------- */

static uint64_t hash_frames(const uintptr_t *pc, uint32_t n) {
    uint64_t h = 0x84222325cbf29ce4ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h ^= pc[i];
        h *= 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
    }
    return h;
}

static bool same_stack(const pm_stack *s, uint64_t h, const uintptr_t *pc, uint32_t n) {
    return s->hash == h && s->depth == n && memcmp(s->pc, pc, n * sizeof *pc) == 0;
}

/* The id of the stack in slot chain of h, or 0; *slot_out is where it would go. */
static uint32_t lookup(uint64_t h, const uintptr_t *pc, uint32_t n, uint32_t *slot_out) {
    uint32_t i = (uint32_t)h & (SLOTS - 1);
    for (;; i = (i + 1) & (SLOTS - 1)) {
        uint32_t id = atomic_load_explicit(&slots[i], memory_order_acquire);
        if (id == 0) {
            *slot_out = i;
            return 0;
        }
        if (same_stack(&stacks[id], h, pc, n))
            return id;
    }
}

static uint32_t intern(const uintptr_t *pc, uint32_t n) {
    uint64_t h = hash_frames(pc, n);
    uint32_t slot;
    uint32_t id = lookup(h, pc, n, &slot);
    if (PM_LIKELY(id != 0))
        return id;
    pthread_mutex_lock(&stack_lock);
    id = lookup(h, pc, n, &slot); /* another thread may have added it meanwhile */
    if (id == 0) {
        uint32_t next = atomic_load_explicit(&stack_count, memory_order_relaxed) + 1;
        if (next > STACKS_MAX) {
            id = 1; /* full: counted, without a stack */
        } else {
            pm_stack *s = &stacks[next];
            s->hash = h;
            s->depth = n;
            memcpy(s->pc, pc, n * sizeof *pc);
            atomic_store_explicit(&stack_count, next, memory_order_release);
            atomic_store_explicit(&slots[slot], next, memory_order_release);
            id = next;
        }
    }
    pthread_mutex_unlock(&stack_lock);
    return id;
}

uint32_t pm_stack_capture(void *site, uintptr_t fp) {
    uintptr_t pc[PM_STACK_DEPTH];
    uint32_t n = walk(site, fp, pc);
    return intern(pc, n);
}

pm_stack *pm_stack_get(uint32_t id) { return &stacks[id]; }

uint32_t pm_stack_count(void) { return atomic_load_explicit(&stack_count, memory_order_acquire); }

void pm_stack_fork_prepare(void) {
    pthread_mutex_lock(&stack_lock);
    pthread_mutex_lock(&exec_lock);
}
void pm_stack_fork_parent(void) {
    pthread_mutex_unlock(&exec_lock);
    pthread_mutex_unlock(&stack_lock);
}
void pm_stack_fork_child(void) {
    pm_lock_reinit(&exec_lock);
    pm_lock_reinit(&stack_lock);
}
