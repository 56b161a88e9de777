/*
 * test-fuzz.c: the randomized differential fuzzer (fuzz.h) on the core's pm_ functions, with
 * 1, 2, 4 and 8 threads and a fork in the middle, and once on plain malloc under
 * LD_PRELOAD=libpoolmalloc.so (fuzz-prog).
 *
 * Each run has a CI budget of a few seconds; PM_TORTURE_SECONDS=N runs each for N seconds
 * (scripts/torture), and PM_TORTURE_SEED varies the seeds. A run happens in a child with a deadline, so a hang or a crash fails its
 * test with the fuzzer's one-line diagnosis; the operation count is printed on success.
 */
#include <criterion/criterion.h>

#include "fuzz.h"
#include "poolmalloc.h"
#include "test-util.h"

static size_t pm_usable(void *p) { return pm_usable_size(p); }
static const fuzz_alloc pm_family = {pm_malloc, pm_calloc, pm_realloc, pm_free,
                                     pm_posix_memalign, pm_aligned_alloc, pm_usable};

static fuzz_config config;

static void fuzz_child_main(void *arg) {
    (void)arg;
    static fuzz_totals totals;
    fuzz_run(&pm_family, &config, &totals);
    fuzz_print(stdout, "(pm_malloc)", &config, &totals);
}

static void fuzz_core(int threads, double ci_seconds, uint64_t seed, bool fork_midway) {
    config = (fuzz_config){.threads = threads, .seconds = pm_test_budget(ci_seconds),
                           .seed = seed + pm_test_seed() * 16, .fork_midway = fork_midway,
                           .live_bytes = (size_t)(64 / threads) << 20};
    if (getenv("PM_SANITIZER") != NULL) {
        /* scripts/sanitize runs each test in a fresh process already; a fork here would run
         * the allocator's fork handlers, whose re-made mutexes ThreadSanitizer cannot follow */
        fuzz_child_main(NULL);
        return;
    }
    static pm_child c;
    pm_spawn spec = {.fn = fuzz_child_main, .timeout_s = (unsigned)config.seconds + 60};
    pm_test_spawn(&spec, &c);
    pm_test_report_counts(c.out);
    pm_test_expect_exit0(&c, "fuzzer");
    cr_assert_not_null(strstr(c.out, " operations "), "the fuzzer printed no count");
}

Test(fuzz, one_thread_with_fork) { fuzz_core(1, 8, 1, true); }
Test(fuzz, two_threads) { fuzz_core(2, 6, 2, false); }
Test(fuzz, four_threads_with_fork) { fuzz_core(4, 8, 3, true); }
Test(fuzz, eight_threads) { fuzz_core(8, 6, 4, false); }

Test(fuzz, preloaded_malloc_four_threads_with_fork) {
    if (getenv("PM_SANITIZER") != NULL) /* a sanitized library cannot be preloaded */
        cr_skip_test("not under %s (scripts/sanitize)", getenv("PM_SANITIZER"));
    char prog[PATH_MAX], seconds[32];
    pm_test_build_path(prog, sizeof prog, "tests/stress/fuzz-prog");
    double s = pm_test_budget(6);
    snprintf(seconds, sizeof seconds, "%g", s);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)(5 + pm_test_seed() * 16));
    const char *argv[] = {prog, "4", seconds, seed, "fork", NULL};
    static pm_child c;
    pm_spawn spec = {.argv = argv, .preload = true, .timeout_s = (unsigned)s + 60};
    pm_test_spawn(&spec, &c);
    pm_test_report_counts(c.out);
    pm_test_expect_exit0(&c, "fuzz-prog under LD_PRELOAD");
    cr_assert_not_null(strstr(c.out, " operations "), "the fuzzer printed no count");
}
