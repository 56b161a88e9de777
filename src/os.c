/*
 * os.c: the only file that talks to the kernel. Everything here is a thin, non-allocating
 * wrapper: mmap and friends for memory, write(2) for output, /proc for the resident set.
 */
#include "internal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

void *pm_os_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void *pm_os_reserve(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Maps size bytes aligned to align (a power of two >= the page size) by over-mapping and
 * trimming: the kernel has no aligned mmap. First try a plain mapping, which is often aligned
 * already when mappings are made in aligned sizes. */
void *pm_os_map_aligned(size_t size, size_t align) {
    char *p = pm_os_map(size);
    if (p == NULL || ((uintptr_t)p & (align - 1)) == 0)
        return p;
    pm_os_unmap(p, size);
    if (size + align < size)
        return NULL;
    p = pm_os_map(size + align);
    if (p == NULL)
        return NULL;
    char *aligned = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
    size_t head = (size_t)(aligned - p), tail = align - head;
    if (head)
        pm_os_unmap(p, head);
    if (tail)
        pm_os_unmap(aligned + size, tail);
    return aligned;
}

/* munmap legitimately fails with ENOMEM when it must split a mapping and the process is at
 * vm.max_map_count: never fatal, the caller keeps (or purges) the memory and goes on. */
bool pm_os_unmap(void *p, size_t size) { return munmap(p, size) == 0; }

/* Moves size bytes of mapped pages from `from` to `to` (replacing what was mapped there),
 * extended to new_size bytes of the same mapping: the page-table entries move, the data is
 * neither copied nor faulted in again. */
bool pm_os_move(void *from, size_t size, void *to, size_t new_size) {
    return mremap(from, size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED;
}

void *pm_os_remap(void *p, size_t old_size, size_t new_size, bool may_move) {
    void *q = mremap(p, old_size, new_size, may_move ? MREMAP_MAYMOVE : 0);
    return q == MAP_FAILED ? NULL : q;
}

/* MADV_DONTNEED, not MADV_FREE: the memory leaves the resident set at once, so RSS (what users
 * and our tests measure) reflects what we hold, and a later touch gets zeroed pages. */
void pm_os_purge(void *p, size_t size) {
    int saved = errno;
    madvise(p, size, MADV_DONTNEED);
    errno = saved;
}

uint64_t pm_os_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Resident bytes from /proc/self/statm, read with open/read: no stdio. 0 if unavailable. */
size_t pm_os_resident_bytes(void) {
    int saved = errno;
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = saved;
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    errno = saved;
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *s = buf;
    while (*s && *s != ' ')
        s++; /* skip total size */
    size_t pages = 0;
    while (*s == ' ')
        s++;
    while (*s >= '0' && *s <= '9')
        pages = pages * 10 + (size_t)(*s++ - '0');
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

void pm_os_write(int fd, const char *s, size_t n) {
    int saved = errno;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        s += w;
        n -= (size_t)w;
    }
    errno = saved;
}
