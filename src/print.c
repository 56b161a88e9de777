/*
 * print.c: a small printf that never allocates, for messages from inside the allocator
 * (stdio may call malloc, which would recurse into us), a buffered writer for the longer
 * reports built on it, and errno values in words.
 */
#include "print.h"

#include <stdlib.h>
#include <unistd.h>

typedef struct out {
    char *buf;
    size_t size, len; /* len counts every character, written or not (snprintf semantics) */
} out;

static void put(out *o, char c) {
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void put_str(out *o, const char *s, int width, bool left) {
    if (s == NULL)
        s = "(null)";
    int n = (int)strlen(s);
    if (!left)
        for (int i = n; i < width; i++)
            put(o, ' ');
    while (*s)
        put(o, *s++);
    if (left)
        for (int i = n; i < width; i++)
            put(o, ' ');
}

static void put_uint(out *o, unsigned long long v, unsigned base, bool neg, int width,
                     char pad, bool left) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        digits[n++] = '-';
    char tmp[26];
    for (int i = 0; i < n; i++)
        tmp[i] = digits[n - 1 - i];
    tmp[n] = 0;
    if (pad == '0' && neg && !left) { /* sign before the zeros */
        put(o, '-');
        for (int i = n; i < width; i++)
            put(o, '0');
        put_str(o, tmp + 1, 0, false);
        return;
    }
    if (pad == '0' && !left) {
        for (int i = n; i < width; i++)
            put(o, '0');
        put_str(o, tmp, 0, false);
        return;
    }
    put_str(o, tmp, width, left);
}

int pm_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    out o = {buf, size, 0};
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            put(&o, *f);
            continue;
        }
        f++;
        bool left = false;
        char pad = ' ';
        if (*f == '-') {
            left = true;
            f++;
        }
        if (*f == '0') {
            pad = '0';
            f++;
        }
        int width = 0;
        while (*f >= '0' && *f <= '9')
            width = width * 10 + (*f++ - '0');
        int longs = 0;
        bool sz = false;
        for (;; f++) {
            if (*f == 'l')
                longs++;
            else if (*f == 'z')
                sz = true;
            else
                break;
        }
        switch (*f) {
        case 'd':
        case 'i': {
            long long v = sz ? (long long)va_arg(ap, ssize_t)
                          : longs ? va_arg(ap, long long) /* long == long long on LP64 */
                                  : va_arg(ap, int);
            unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            put_uint(&o, mag, 10, v < 0, width, pad, left);
            break;
        }
        case 'u':
        case 'x': {
            unsigned long long v = sz ? va_arg(ap, size_t)
                                   : longs ? va_arg(ap, unsigned long long)
                                           : va_arg(ap, unsigned);
            put_uint(&o, v, *f == 'u' ? 10 : 16, false, width, pad, left);
            break;
        }
        case 'p':
            put(&o, '0');
            put(&o, 'x');
            put_uint(&o, (uintptr_t)va_arg(ap, void *), 16, false, width, pad, left);
            break;
        case 's':
            put_str(&o, va_arg(ap, const char *), width, left);
            break;
        case 'c':
            put(&o, (char)va_arg(ap, int));
            break;
        case '%':
            put(&o, '%');
            break;
        case 0:
            f--;
            break;
        default:
            put(&o, '%');
            put(&o, *f);
        }
    }
    if (size > 0)
        buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}

int pm_snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = pm_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

static void vprint_fd(int fd, const char *prefix, const char *fmt, va_list ap) {
    char line[1024];
    size_t p = strlen(prefix);
    memcpy(line, prefix, p);
    int n = pm_vsnprintf(line + p, sizeof line - p - 1, fmt, ap);
    size_t len = p + (n < 0 ? 0 : (size_t)n);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    if (*prefix) /* pm_warn/pm_fatal print whole lines */
        line[len++] = '\n';
    pm_os_write(fd, line, len);
}

void pm_fdprintf(int fd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint_fd(fd, "", fmt, ap);
    va_end(ap);
}

void pm_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint_fd(2, "poolmalloc: ", fmt, ap);
    va_end(ap);
}

void pm_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint_fd(2, "poolmalloc: ", fmt, ap);
    va_end(ap);
    abort();
}

void pm_lock_failed(int rc) {
    if (rc == EDEADLK)
        pm_fatal("the allocator was re-entered while it held its lock (malloc or free called "
                 "from a signal handler that interrupted them?)");
    pm_fatal("pthread_mutex_lock failed: %s", pm_strerror(rc));
}

/* ---- errno in words ------------------------------------------------------------------------ */

/* The errors that opening, writing or mapping can give, in glibc's C-locale wording. */
static const struct {
    int err;
    const char *text;
} errno_texts[] = {
    {EPERM, "Operation not permitted"},
    {ENOENT, "No such file or directory"},
    {EINTR, "Interrupted system call"},
    {EIO, "Input/output error"},
    {EBADF, "Bad file descriptor"},
    {EAGAIN, "Resource temporarily unavailable"},
    {ENOMEM, "Cannot allocate memory"},
    {EACCES, "Permission denied"},
    {EFAULT, "Bad address"},
    {EBUSY, "Device or resource busy"},
    {EEXIST, "File exists"},
    {EXDEV, "Invalid cross-device link"},
    {ENODEV, "No such device"},
    {ENOTDIR, "Not a directory"},
    {EISDIR, "Is a directory"},
    {EINVAL, "Invalid argument"},
    {ENFILE, "Too many open files in system"},
    {EMFILE, "Too many open files"},
    {ETXTBSY, "Text file busy"},
    {EFBIG, "File too large"},
    {ENOSPC, "No space left on device"},
    {ESPIPE, "Illegal seek"},
    {EROFS, "Read-only file system"},
    {EPIPE, "Broken pipe"},
    {ENAMETOOLONG, "File name too long"},
    {ENOSYS, "Function not implemented"},
    {ELOOP, "Too many levels of symbolic links"},
    {EOVERFLOW, "Value too large for defined data type"},
    {EDQUOT, "Disk quota exceeded"},
    {ENXIO, "No such device or address"},
};

const char *pm_strerror(int err) {
    for (size_t i = 0; i < sizeof errno_texts / sizeof errno_texts[0]; i++)
        if (errno_texts[i].err == err)
            return errno_texts[i].text;
    /* Rotating buffers: a message may name two unknown errors in one call. */
    static char unknown[4][24];
    static _Atomic unsigned next;
    char *buf = unknown[atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % 4];
    pm_snprintf(buf, sizeof unknown[0], "errno %d", err);
    return buf;
}

/* ---- sizes --------------------------------------------------------------------------------- */

void pm_format_size(char *buf, size_t len, uint64_t size) {
    static const struct {
        uint64_t unit;
        char suffix;
    } units[] = {{1ull << 30, 'G'}, {1ull << 20, 'M'}, {1ull << 10, 'K'}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (size != 0 && size % units[i].unit == 0) {
            pm_snprintf(buf, len, "%llu%c", (unsigned long long)(size / units[i].unit),
                        units[i].suffix);
            return;
        }
    pm_snprintf(buf, len, "%llu", (unsigned long long)size);
}

/* ---- the buffered writer ------------------------------------------------------------------ */

void pm_writer_init(pm_writer *w, char *buf, size_t cap, int fd) {
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->fd = fd;
    w->column = 0;
    w->truncated = false;
    if (cap > 0)
        buf[0] = 0;
}

void pm_writer_flush(pm_writer *w) {
    if (w->fd >= 0 && w->len > 0)
        pm_os_write(w->fd, w->buf, w->len);
    if (w->fd >= 0)
        w->len = 0;
}

static void track_column(pm_writer *w, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        w->column = s[i] == '\n' ? 0 : w->column + 1;
}

void pm_writer_printf(pm_writer *w, const char *fmt, ...) {
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = w->cap - w->len;
        va_list ap;
        va_start(ap, fmt);
        int n = pm_vsnprintf(w->buf + w->len, room, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            track_column(w, w->buf + w->len, (size_t)n);
            w->len += (size_t)n;
            return;
        }
        if (w->fd < 0 || attempt == 1 || w->len == 0) {
            /* keep what fitted: a too-long item is cut rather than lost */
            size_t kept = room > 0 ? room - 1 : 0;
            track_column(w, w->buf + w->len, kept);
            w->len += kept;
            w->truncated = true;
            if (w->fd >= 0)
                pm_writer_flush(w);
            return;
        }
        pm_writer_flush(w);
    }
}

void pm_writer_pad(pm_writer *w, size_t column) {
    pm_writer_printf(w, " ");
    while (w->column < column && !(w->fd < 0 && w->truncated))
        pm_writer_printf(w, " ");
}

/* Reported by the fast paths and pool.c when a decoded link is no block it could be (I8). */
void pm_heap_corrupt(const void *block, const char *where) {
    pm_fatal("heap corruption detected in %s at block %p: a free block's link or key was "
             "changed (a double free, a write after free or an overflow)", where, block);
}

void *pm_heap_corrupt_jump(const void *block, const char *where) { pm_heap_corrupt(block, where); }

/* A lock another thread holds. Ours are held for short stretches (a pool linked onto a pending
 * list, units taken from an arena), so the holder, running on another core, usually lets go
 * within a microsecond: a short spin takes the lock then, where sleeping costs two futex calls
 * and a wake-up (prodcons on 2 threads made 16,177 futex calls in a one-second run, on the
 * heaps' xlocks, before this spin; about 200 after). A holder that does not let go
 * (preempted, or a system call under the arena lock) sends us to sleep after about 130
 * pauses. A thread that holds the lock itself spins too, then gets EDEADLK from the blocking
 * lock: the re-entry report is unchanged. */
void pm_lock_contended(pthread_mutex_t *m) {
    for (unsigned spin = 1; spin <= 64; spin *= 2) {
        for (unsigned i = 0; i < spin; i++)
            pm_cpu_relax();
        if (pthread_mutex_trylock(m) == 0)
            return;
    }
    pm_lock_blocking(m);
}

/* In a fork child: the lock the parent's prepare handler took is held by a thread id that no
 * longer exists, so it is made anew rather than unlocked. pthread_mutex_init (not a copy of
 * an initialiser) so that tools that track locks, ThreadSanitizer among them, see a new lock. */
void pm_lock_reinit(pthread_mutex_t *m) {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
}
