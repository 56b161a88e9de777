/*
 * fastpath: N malloc+free pairs of one small size on one thread, the allocator's fast path and
 * nothing else. scripts/compare --instructions runs it under valgrind --tool=callgrind with two
 * values of N and reports (Ir(N2) - Ir(N1)) / (N2 - N1): the instructions one pair costs, with
 * start-up and exit cancelled out.
 *
 *     fastpath PAIRS [SIZE]    SIZE defaults to 32 bytes
 *     fastpath --loop PAIRS    the same loop without malloc and free, to show its own cost
 *
 * The pointer goes through an empty asm statement so the compiler can neither drop the pair
 * (gcc removes a malloc whose result is only freed) nor keep the block in a register.
 */
#include "common.h"

static void *opaque(void *p) {
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

/* Two separate loops, so the measured one carries no test of the mode. */
static void run_pairs(unsigned long long pairs, size_t size) {
    for (unsigned long long i = 0; i < pairs; i++) {
        void *p = opaque(malloc(size));
        if (p == NULL)
            wl_die("fastpath", "out of memory");
        free(p);
    }
}

static void run_loop_only(unsigned long long pairs) {
    static char dummy[64];
    for (unsigned long long i = 0; i < pairs; i++) {
        void *p = opaque(dummy);
        if (p == NULL)
            wl_die("fastpath", "impossible");
    }
}

static unsigned long long parse_count(const char *arg, const char *what, unsigned long long max) {
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(arg, &end, 10);
    if (errno || *end || arg[0] == '-' || n < 1 || n > max) {
        fprintf(stderr, "fastpath: %s '%s': expected a number from 1 to %llu\n", what, arg, max);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv) {
    bool loop_only = argc > 1 && strcmp(argv[1], "--loop") == 0;
    int first = loop_only ? 2 : 1;
    if (argc - first < 1 || argc - first > 2) {
        fprintf(stderr, "usage: fastpath PAIRS [SIZE] | fastpath --loop PAIRS\n");
        return 2;
    }
    unsigned long long pairs = parse_count(argv[first], "PAIRS", 1ull << 40);
    size_t size = argc - first == 2 ? (size_t)parse_count(argv[first + 1], "SIZE", 1u << 20) : 32;
    if (loop_only)
        run_loop_only(pairs);
    else
        run_pairs(pairs, size);
    wl_report(pairs);
    return 0;
}
