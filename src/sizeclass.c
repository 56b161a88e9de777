/*
 * sizeclass.c: the size-class table and each class's pool geometry (see internal.h).
 */
#include "internal.h"

uint8_t pm_class_of_small[PM_SMALL_LOOKUP_MAX / 16 + 1];
uint8_t pm_class_of_medium[PM_MEDIUM_LOOKUP_MAX / 128 + 1];
uint16_t pm_line_of_small[PM_SMALL_LOOKUP_MAX + 1];
uint16_t pm_line_of_medium[PM_MAX_CLASS_SIZE / 128 + 1];
uint32_t pm_class_size[PM_NUM_CLASSES];
uint8_t pm_class_units[PM_NUM_CLASSES];
uint32_t pm_class_cache_limit[PM_NUM_CLASSES];

/* A heap caches up to 32 freed blocks of a class, and at most about 64 KiB of them (one block
 * at least): enough to serve the alloc/free bursts of a loop warm, too little to keep pools
 * from emptying. */
static uint32_t class_cache_limit(uint32_t block) {
    uint32_t n = (64u << 10) / block;
    return n < 1 ? 1 : n > PM_CACHE_MAX ? PM_CACHE_MAX : n;
}

/* Class i's block size: 16 * i up to 512, then four steps per power of two. */
static uint32_t class_block_size(unsigned i) {
    if (i <= 32)
        return 16u * i;
    unsigned j = i - 33, k = 9 + j / PM_CLASSES_PER_DOUBLING;
    unsigned step = j % PM_CLASSES_PER_DOUBLING + 1;
    return (1u << k) + step * ((1u << k) / PM_CLASSES_PER_DOUBLING);
}

/* The smallest power-of-two number of units that holds at least 8 blocks and loses at most
 * 1/16 of the pool to the tail: a pool must amortise its acquisition over several blocks, and
 * the tail is memory no block can use. */
static uint8_t class_pool_units(uint32_t block) {
    for (unsigned units = 1; units <= 64; units *= 2) {
        size_t bytes = units * PM_UNIT_SIZE;
        if (bytes / block >= 8 && (bytes % block) * 16 <= bytes)
            return (uint8_t)units;
    }
    return 64;
}

/* lines[(n + step - 1) >> shift] = pm_class_line of the smallest class that holds n, for n
 * up to max; exact because every class boundary up to max is a multiple of the step
 * (2^shift). Class by class, each its run of entries: every process runs this at start-up,
 * and the search for each entry's class that it replaced was 35,000 instructions, 18% of all
 * that `true` ran (callgrind, 2026-12-03). */
static void fill_lines(uint16_t *lines, size_t max, unsigned shift) {
    size_t entries = (max >> shift) + 1, i = 0;
    for (unsigned cls = 1; i < entries; cls++) {
        /* entries up to here hold sizes <= this class's size: n = i << shift, n == 0 too */
        size_t end = ((size_t)pm_class_size[cls] >> shift) + 1;
        for (; i < end && i < entries; i++)
            lines[i] = (uint16_t)pm_class_line(cls);
    }
}

/* The class number tables, read off the line tables. Not filled class by class like those: a
 * byte table filled so becomes calls to memset, and with that call tiny had another 64 KiB
 * window of libc's text resident in two runs of three (48 KiB more peak RSS, 2026-12-03),
 * though it calls memset itself. Any libc call start-up adds can cost a program a window. */
static uint8_t class_of_line(uint16_t line) {
    return (uint8_t)((line - pm_class_line(0)) / sizeof(pm_class_state));
}

void pm_sizeclass_init(void) {
    for (unsigned i = 1; i < PM_NUM_CLASSES; i++) {
        pm_class_size[i] = class_block_size(i);
        pm_class_units[i] = class_pool_units(pm_class_size[i]);
        pm_class_cache_limit[i] = class_cache_limit(pm_class_size[i]);
    }
    fill_lines(pm_line_of_small, PM_SMALL_LOOKUP_MAX, 0);
    fill_lines(pm_line_of_medium, PM_MAX_CLASS_SIZE, 7);
    for (size_t i = 0; i <= PM_SMALL_LOOKUP_MAX / 16; i++) /* n = 16 i */
        pm_class_of_small[i] = class_of_line(pm_line_of_small[i * 16]);
    for (size_t i = 0; i <= PM_MEDIUM_LOOKUP_MAX / 128; i++) /* n = 128 i, the same step */
        pm_class_of_medium[i] = class_of_line(pm_line_of_medium[i]);
    if (PM_DEBUG) /* the computed and the tabled mappings must agree at every size */
        for (size_t n = 1; n <= PM_MAX_CLASS_SIZE; n++) {
            unsigned c = pm_size_class(n);
            uint16_t line = n <= PM_SMALL_LOOKUP_MAX ? pm_line_of_small[n]
                                                     : pm_line_of_medium[(n + 127) >> 7];
            if (pm_class_size[c] < n || (c > 1 && pm_class_size[c - 1] >= n) ||
                line != pm_class_line(c))
                pm_fatal("size class table broken at %zu", n);
        }
}
