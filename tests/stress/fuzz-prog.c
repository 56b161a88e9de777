/*
 * fuzz-prog.c: the fuzzer of fuzz.h on plain malloc and friends, linked without poolmalloc:
 * test-fuzz runs it under LD_PRELOAD=libpoolmalloc.so (and it runs on any allocator).
 *
 *     fuzz-prog THREADS SECONDS [SEED] [fork]
 */
#include <malloc.h>

#include "fuzz.h"

static size_t usable(void *p) { return malloc_usable_size(p); }

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s THREADS SECONDS [SEED] [fork]\n", argv[0]);
        return 2;
    }
    static const fuzz_alloc libc = {malloc, calloc, realloc, free, posix_memalign, aligned_alloc,
                                    usable};
    fuzz_config cfg = {.threads = atoi(argv[1]), .seconds = atof(argv[2]),
                       .seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 1,
                       .fork_midway = argc > 4 && strcmp(argv[4], "fork") == 0,
                       .live_bytes = 48u << 20};
    static fuzz_totals totals;
    fuzz_run(&libc, &cfg, &totals);
    fuzz_print(stdout, "(malloc)", &cfg, &totals);
    return 0;
}
