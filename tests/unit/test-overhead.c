/*
 * test-overhead.c: what keeps poolmalloc's fixed cost in a small program down (issue 10).
 *
 *   clock   the clock is read through the vDSO, not libc's clock_gettime (whose 64 KiB of libc
 *           text a program that never reads the clock would not otherwise fault in), and it
 *           agrees with libc's clock.
 *   layout  every function that true, ls, tiny and bignum execute under LD_PRELOAD lies in the
 *           first 64 KiB of the library's text segment, the one window the kernel's
 *           fault-around maps (scripts/hot-text --check, under callgrind; skipped without
 *           valgrind). A new function on a common path fails it until scripts/hot-text has
 *           listed it in src/hot-text.ld.
 */
#include "internal.h" /* first: it brings config.h, which defines _GNU_SOURCE */

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/wait.h>
#include <time.h>

static uint64_t libc_coarse_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

Test(clock, read_through_the_vdso_when_the_kernel_maps_one) {
    if (getauxval(AT_SYSINFO_EHDR) == 0)
        cr_skip_test("no vDSO in this process (AT_SYSINFO_EHDR is 0)");
    cr_assert(pm_os_clock_is_vdso(),
              "the kernel maps a vDSO but pm_os_now_ms goes through libc's clock_gettime");
}

Test(clock, agrees_with_libc_and_advances) {
    /* Coarse clocks tick every 1-10 ms: each reading lies between two of libc's. */
    for (int i = 0; i < 50; i++) {
        uint64_t before = libc_coarse_ms();
        uint64_t ours = pm_os_now_ms();
        uint64_t after = libc_coarse_ms();
        cr_assert(before <= ours && ours <= after,
                  "pm_os_now_ms %llu outside libc's %llu..%llu", (unsigned long long)ours,
                  (unsigned long long)before, (unsigned long long)after);
    }
    uint64_t start = pm_os_now_ms();
    struct timespec pause = {0, 30 * 1000 * 1000};
    nanosleep(&pause, NULL);
    uint64_t elapsed = pm_os_now_ms() - start;
    cr_assert(elapsed >= 20 && elapsed < 5000, "30 ms of sleep read as %llu ms",
              (unsigned long long)elapsed);
}

/* scripts/hot-text --check exits 0 (all in the window), 1 (names the strays) or 3 (no
 * valgrind or no build). */
Test(layout, small_programs_run_only_the_first_64k_of_text, .timeout = 240) {
    const char *top = getenv("PM_TOP_SRCDIR");
    const char *lib = getenv("PM_PRELOAD_LIB");
    if (top == NULL || lib == NULL)
        cr_skip_test("PM_TOP_SRCDIR and PM_PRELOAD_LIB are unset (run through make check)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/scripts/hot-text' --check 2>&1", top);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    char out[8192] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int status = pclose(p);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc == 3)
        cr_skip_test("%s", out);
    cr_assert_eq(rc, 0, "scripts/hot-text --check exited %d:\n%s", rc, out);
    cr_assert(strstr(out, " 0 outside the first 64 KiB") != NULL, "unexpected report:\n%s", out);
}
