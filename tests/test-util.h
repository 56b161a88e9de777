/*
 * test-util.h: small helpers shared by the allocator's Criterion tests.
 */
#ifndef PM_TEST_UTIL_H
#define PM_TEST_UTIL_H

#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* The process's resident memory, from /proc/self/statm. */
static inline size_t resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f == NULL || fscanf(f, "%lu %lu", &size, &resident) != 2)
        cr_assert_fail("cannot read /proc/self/statm");
    fclose(f);
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* xorshift64*: a fast, deterministic generator for test sizes and orders. */
static inline uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

#endif /* PM_TEST_UTIL_H */
