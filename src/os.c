/*
 * os.c: the only file that talks to the kernel. Everything here is a thin, non-allocating
 * wrapper: mmap and friends for memory, write(2) for output, /proc for the resident set.
 */
#include "internal.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* Linux 4.17; older kernels take the address as a hint */
#endif

/* ThreadSanitizer does not see the kernel order two threads' changes to the address space: a
 * range one thread gave up (munmap, or mremap moving its pages away, which it does not
 * intercept) and another thread's mmap or mremap then received. With no lock between the two
 * (large blocks have one a domain), it takes the new owner's first access for a race with the
 * old owner's last. So under it every change goes through one atomic, in the order the kernel
 * made them; elsewhere this is nothing. */
static void address_space_changed(void) {
    static uint64_t changes;
    if (PM_TSAN)
        __atomic_fetch_add(&changes, 1, __ATOMIC_ACQ_REL);
}

void *pm_os_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    address_space_changed();
    return p == MAP_FAILED ? NULL : p;
}

void *pm_os_reserve(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    address_space_changed();
    return p == MAP_FAILED ? NULL : p;
}

/* Maps size bytes exactly at `at` if nothing is mapped there; false otherwise. Never replaces
 * a mapping (MAP_FIXED_NOREPLACE). A kernel older than 4.17 ignores the flag and may map
 * elsewhere: that mapping is undone and the answer is false. */
bool pm_os_map_at(void *at, size_t size) {
    int saved = errno;
    void *p = mmap(at, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    address_space_changed();
    bool ok = p == at;
    if (!ok && p != MAP_FAILED)
        munmap(p, size);
    errno = saved;
    return ok;
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
    /* Trimming may fail at the map-count limit: the slack then stays mapped (and purged). */
    if (head)
        pm_os_unmap(p, head);
    if (tail)
        pm_os_unmap(aligned + size, tail);
    return aligned;
}

/* munmap can legitimately fail: at vm.max_map_count, unmapping the middle of a mapping needs
 * a new one. Then the memory is purged instead (it leaves the resident set) and the caller
 * keeps it: failing to give memory back is never fatal (issue 7.3). */
bool pm_os_unmap(void *p, size_t size) {
    int saved = errno;
    address_space_changed();
    bool ok = munmap(p, size) == 0;
    if (!ok)
        madvise(p, size, MADV_DONTNEED);
    errno = saved;
    return ok;
}

/* Moves size bytes of mapped pages from `from` to `to` (replacing what was mapped there),
 * extended to new_size bytes of the same mapping: the page-table entries move, the data is
 * neither copied nor faulted in again. */
bool pm_os_move(void *from, size_t size, void *to, size_t new_size) {
    address_space_changed();
    bool ok = mremap(from, size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED;
    address_space_changed();
    return ok;
}

void *pm_os_remap(void *p, size_t old_size, size_t new_size, bool may_move) {
    address_space_changed();
    void *q = mremap(p, old_size, new_size, may_move ? MREMAP_MAYMOVE : 0);
    address_space_changed();
    return q == MAP_FAILED ? NULL : q;
}

/* Asks for transparent huge pages (under the kernel's "madvise" policy); a kernel without THP
 * refuses, which changes nothing. */
void pm_os_hugepage(void *p, size_t size) {
    int saved = errno;
    madvise(p, size, MADV_HUGEPAGE);
    errno = saved;
}

/* Whether the page holding p is resident (mincore); false if the kernel cannot say. */
bool pm_os_page_resident(const void *p) {
    int saved = errno;
    unsigned char vec = 0;
    void *page = (void *)((uintptr_t)p & ~(uintptr_t)(PM_PAGE_SIZE - 1));
    bool resident = mincore(page, PM_PAGE_SIZE, &vec) == 0 && (vec & 1);
    errno = saved;
    return resident;
}

/* MADV_DONTNEED, not MADV_FREE: the memory leaves the resident set at once, so RSS (what users
 * and our tests measure) reflects what we hold, and a later touch gets zeroed pages. */
void pm_os_purge(void *p, size_t size) {
    int saved = errno;
    madvise(p, size, MADV_DONTNEED);
    errno = saved;
}

/* ---- the clock, straight from the vDSO ---------------------------------------------------- */
/* libc's clock_gettime only jumps to the vDSO's, but it lies in a 64 KiB stretch of libc's text
 * that a program which never reads the clock itself does not otherwise touch: calling it
 * faulted in 64 KiB more of libc for `true`, tiny and bignum (issue 10). So the vDSO's entry
 * is looked up once, in the ELF image the kernel maps (AT_SYSINFO_EHDR), and called directly;
 * without a vDSO (or under a tool that hides it) libc's function is used. */
typedef int (*pm_clock_fn)(clockid_t, struct timespec *);

/* The address of the symbol called `name` in the ELF image at `image`, or NULL. Reads only
 * the dynamic symbol table, which every vDSO has; the symbol count comes from DT_HASH, or
 * from the section header of .dynsym when there is no DT_HASH. */
static void *elf_image_symbol(const char *image, const char *name) {
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)image;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return NULL;
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(image + eh->e_phoff);
    const ElfW(Dyn) *dyn = NULL;
    uintptr_t bias = 0;
    bool have_load = false;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && !have_load) {
            bias = (uintptr_t)image + ph[i].p_offset - ph[i].p_vaddr;
            have_load = true;
        } else if (ph[i].p_type == PT_DYNAMIC) {
            dyn = (const ElfW(Dyn) *)(image + ph[i].p_offset);
        }
    }
    if (dyn == NULL || !have_load)
        return NULL;
    const ElfW(Sym) *sym = NULL;
    const char *str = NULL;
    const uint32_t *hash = NULL;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_SYMTAB)
            sym = (const ElfW(Sym) *)(bias + dyn->d_un.d_ptr);
        else if (dyn->d_tag == DT_STRTAB)
            str = (const char *)(bias + dyn->d_un.d_ptr);
        else if (dyn->d_tag == DT_HASH)
            hash = (const uint32_t *)(bias + dyn->d_un.d_ptr);
    }
    if (sym == NULL || str == NULL)
        return NULL;
    size_t count = 0;
    if (hash != NULL) {
        count = hash[1]; /* nchain: one entry per symbol */
    } else if (eh->e_shoff != 0 && eh->e_shentsize == sizeof(ElfW(Shdr))) {
        const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(image + eh->e_shoff);
        for (unsigned i = 0; i < eh->e_shnum; i++)
            if (sh[i].sh_type == SHT_DYNSYM && sh[i].sh_entsize == sizeof(ElfW(Sym)))
                count = sh[i].sh_size / sizeof(ElfW(Sym));
    }
    for (size_t i = 0; i < count; i++)
        if (sym[i].st_shndx != SHN_UNDEF && ELF64_ST_TYPE(sym[i].st_info) == STT_FUNC &&
            strcmp(str + sym[i].st_name, name) == 0)
            return (void *)(bias + sym[i].st_value);
    return NULL;
}

static pm_clock_fn vdso_clock(void) {
    /* The names each architecture gives it; in .data, as every process reads them. */
    static char x86_64_riscv[] PM_STARTUP_DATA = "__vdso_clock_gettime";
    static char arm64[] PM_STARTUP_DATA = "__kernel_clock_gettime";
    const char *image = (const char *)getauxval(AT_SYSINFO_EHDR);
    if (image == NULL)
        return NULL;
    void *f = elf_image_symbol(image, x86_64_riscv);
    if (f == NULL)
        f = elf_image_symbol(image, arm64);
    return (pm_clock_fn)f;
}

/* Resolved on first use; threads racing here all store the same value. */
static pm_clock_fn clock_fn;

static void clock_read(clockid_t id, struct timespec *ts) {
    pm_clock_fn f = __atomic_load_n(&clock_fn, __ATOMIC_RELAXED);
    if (PM_UNLIKELY(f == NULL)) {
        f = vdso_clock();
        if (f == NULL)
            f = clock_gettime;
        __atomic_store_n(&clock_fn, f, __ATOMIC_RELAXED);
    }
    if (f(id, ts) != 0 && f != clock_gettime) /* a vDSO that declines: ask libc */
        clock_gettime(id, ts);
}

bool pm_os_clock_is_vdso(void) {
    struct timespec ts;
    clock_read(CLOCK_MONOTONIC_COARSE, &ts); /* resolves it */
    return __atomic_load_n(&clock_fn, __ATOMIC_RELAXED) != clock_gettime;
}

uint64_t pm_os_now_ms(void) {
    int saved = errno;
    struct timespec ts;
    clock_read(CLOCK_MONOTONIC_COARSE, &ts);
    errno = saved;
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

/* 16 random bytes the kernel gives every process (AT_RANDOM): no system call that could fail
 * or allocate. The clock only where the kernel gave none: reading it faults in the vDSO's
 * two data pages (a fault costs about 9.5 us on our guests) in a program that never reads
 * the clock itself (true). */
uint64_t pm_os_random_seed(void) {
    uint64_t seed = 0;
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    if (r != NULL) {
        for (int i = 0; i < 16; i++)
            seed = seed * 131 + r[i];
        return seed;
    }
    struct timespec ts;
    clock_read(CLOCK_MONOTONIC, &ts);
    return ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec;
}

/* ==== options and statistics (options.c, stats.c, report.c) ================================ */

#include <sys/auxv.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* The kernel sets AT_SECURE for setuid/setgid programs and for file capabilities; ld.so and
 * glibc use it to distrust the environment. getauxval reads a table ld.so filled before any
 * code of ours could run: safe from the first malloc, allocates nothing. */
bool pm_os_secure_execution(void) {
    int saved = errno;
    bool secure = getauxval(AT_SECURE) != 0;
    errno = saved;
    return secure;
}

/* The number after "key" in a /proc file of "Key:   value" lines (0 if absent). */
static uint64_t proc_field(const char *path, const char *key) {
    int saved = errno;
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    errno = saved;
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *line = strstr(buf, key);
    if (line == NULL)
        return 0;
    uint64_t v = 0;
    for (line += strlen(key); *line == ' ' || *line == '\t'; line++)
        ;
    for (; *line >= '0' && *line <= '9'; line++)
        v = v * 10 + (uint64_t)(*line - '0');
    return v;
}

uint64_t pm_os_peak_resident_bytes(void) {
    return proc_field("/proc/self/status", "VmHWM:") * 1024;
}

bool pm_os_fd_identity(int fd, pm_file_id *out) {
    int saved = errno;
    struct stat st;
    bool ok = fd >= 0 && fstat(fd, &st) == 0;
    errno = saved;
    if (ok) {
        out->dev = st.st_dev;
        out->ino = st.st_ino;
    }
    return ok;
}

/* Descriptor 500 when the limit allows (ulimit -n is often 1024), else as high as it goes:
 * a program that opens its own files gets the lowest free numbers, far from ours. */
int pm_os_dup_high(int fd) {
    struct rlimit rl;
    long want = 500;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (long)rl.rlim_cur - 8 < want)
        want = (long)rl.rlim_cur - 8;
    int d = want > 3 ? fcntl(fd, F_DUPFD_CLOEXEC, (int)want) : -1;
    if (d < 0)
        d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    return d;
}

int pm_os_open_append(const char *path, bool create) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd < 0)
        return -1;
    int saved = errno;
    int high = pm_os_dup_high(fd); /* also moves it off 0..2 if the program closed those */
    if (high >= 0)
        close(fd);
    errno = saved;
    return high >= 0 ? high : fd;
}

int pm_os_creatable(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof dir)
        return ENAMETOOLONG;
    memcpy(dir, n ? path : ".", n ? n : 1);
    dir[n ? n : 1] = 0;
    int saved = errno;
    /* faccessat with AT_EACCESS: the effective ids, as open would use */
    int err = faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == 0 ? 0 : errno;
    errno = saved;
    return err;
}

void pm_os_close(int fd) {
    int saved = errno;
    if (fd >= 0)
        close(fd);
    errno = saved;
}
