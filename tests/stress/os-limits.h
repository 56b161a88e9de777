/*
 * os-limits.h: driving a process to the OS's limits, for issue 7's tests (lifecycle-prog on
 * plain malloc, test-torture on pm_malloc).
 */
#ifndef PM_OS_LIMITS_H
#define PM_OS_LIMITS_H

#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* In a child that runs a scenario: one line "FAIL: ..." on stdout, then exit status 1 (no
 * Criterion assertion may run there). */
#define PM_CHILD_FAIL(...)                                                                    \
    do {                                                                                      \
        printf("FAIL: " __VA_ARGS__);                                                         \
        printf("\n");                                                                         \
        fflush(stdout);                                                                       \
        _exit(1);                                                                             \
    } while (0)

/* The process's address space now (VmSize), in bytes; 0 if unknown. */
static inline size_t limits_address_space(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kb * 1024;
}

/* A reservation that uses up vm.max_map_count: every other page of a PROT_NONE mapping made
 * readable, each one a map entry of its own, until mprotect fails. Afterwards any munmap or
 * mprotect that must split a mapping fails with ENOMEM. Returns the mprotect calls that
 * succeeded, or -1 (errno set) if the reservation failed or mprotect stopped for another
 * reason. munmap(*region, *len) gives it all back. */
static inline long limits_exhaust_map_count(char **region, size_t *len) {
    long max = 65530;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &max) != 1)
            max = 65530;
        fclose(f);
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = (size_t)max * 2 + 16;
    *len = pages * page;
    *region = mmap(NULL, *len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (*region == MAP_FAILED)
        return -1;
    long splits = 0;
    for (size_t i = 1; i < pages; i += 2, splits++)
        if (mprotect(*region + i * page, page, PROT_READ) != 0)
            break;
    return errno == ENOMEM ? splits : -1;
}

#endif /* PM_OS_LIMITS_H */
