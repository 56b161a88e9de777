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

/* Finds the mapping holding sp in /proc/self/maps ("lo-hi perms ..." per line). Lines are
 * parsed from a small buffer; one cut at the buffer's end is carried to the next read. */
static bool find_mapping(uintptr_t sp, uintptr_t *lo, uintptr_t *hi) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        maps_unreadable = true;
        return false;
    }
    char buf[4096 + 1];
    size_t have = 0;
    bool found = false;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *line = buf, *nl;
        while ((nl = memchr(line, '\n', have - (size_t)(line - buf))) != NULL) {
            const char *s = line;
            uintptr_t a = parse_hex(&s);
            s++; /* '-' */
            uintptr_t b = parse_hex(&s);
            if (a <= sp && sp < b) {
                *lo = a, *hi = b;
                found = true;
                break;
            }
            line = nl + 1;
        }
        if (found)
            break;
        have -= (size_t)(line - buf);
        memmove(buf, line, have);
        if (have == sizeof buf - 1) /* a line longer than the buffer: skip it */
            have = 0;
    }
    close(fd);
    return found;
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

static uint32_t walk(void *site, uintptr_t fp, uintptr_t *pc) {
    uint32_t n = 0;
    pc[n++] = (uintptr_t)site;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    if (!stack_bounds_hold(sp))
        return n;
    uintptr_t lo = sp, hi = stack_hi;
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

void pm_stack_fork_prepare(void) { pthread_mutex_lock(&stack_lock); }
void pm_stack_fork_parent(void) { pthread_mutex_unlock(&stack_lock); }
void pm_stack_fork_child(void) { pm_lock_reinit(&stack_lock); }
