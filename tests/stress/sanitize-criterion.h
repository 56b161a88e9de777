/*
 * sanitize-criterion.h: a minimal stand-in for <criterion/criterion.h>, for ThreadSanitizer
 * builds only (scripts/sanitize puts it first on the include path as criterion/criterion.h).
 *
 * Why: Criterion's runner (boxfort) places its shared arena at random addresses it probes with
 * mincore, which ThreadSanitizer's memory layout refuses ("Could not initialize test context:
 * Invalid argument"), so no Criterion test binary starts under TSan. This header implements the
 * subset our core tests use -- Test() with .timeout/.signal/.exit_code/.init/.fini/.disabled,
 * cr_assert*, cr_expect*, cr_skip_test, cr_log_* -- with the same semantics: each test runs in
 * a forked child, a failed assertion ends it, and the output is TAP ("ok N - suite::name").
 * It defines main(), so a test binary built with it must not link libcriterion.
 */
#ifndef PM_SANITIZE_CRITERION_H
#define PM_SANITIZE_CRITERION_H

#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct pm_shim_opts {
    int timeout;
    int signal;
    int exit_code;
    bool disabled;
    void (*init)(void);
    void (*fini)(void);
    const char *description;
};

struct pm_shim_test {
    const char *suite, *name;
    void (*fn)(void);
    struct pm_shim_opts opts;
    struct pm_shim_test *next;
};

static struct pm_shim_test *pm_shim_tests, **pm_shim_tail = &pm_shim_tests;
static bool pm_shim_expect_failed;

static inline void pm_shim_register(struct pm_shim_test *t) {
    *pm_shim_tail = t;
    pm_shim_tail = &t->next;
}

#define Test(suite, name, ...)                                                                \
    static void suite##_##name##_impl(void);                                                  \
    static struct pm_shim_test suite##_##name##_desc = {                                     \
        #suite, #name, suite##_##name##_impl, {__VA_ARGS__}, NULL};                           \
    __attribute__((constructor)) static void suite##_##name##_register(void) {               \
        pm_shim_register(&suite##_##name##_desc);                                             \
    }                                                                                         \
    static void suite##_##name##_impl(void)

__attribute__((format(printf, 5, 6))) static inline void
pm_shim_report(bool fatal, const char *file, int line, const char *expr, const char *fmt, ...) {
    fprintf(stderr, "%s:%d: %s failed: %s", file, line, fatal ? "Assertion" : "Expectation",
            expr);
    if (fmt != NULL && *fmt != 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, ": ");
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "\n");
    if (fatal) {
        fflush(NULL);
        _exit(1);
    }
    pm_shim_expect_failed = true;
}

/* "" __VA_ARGS__ turns an absent message into "" and glues a literal format onto it. */
#define pm_shim_check(fatal, cond, expr, ...)                                                 \
    do {                                                                                      \
        if (!(cond))                                                                          \
            pm_shim_report(fatal, __FILE__, __LINE__, expr, "" __VA_ARGS__);                  \
    } while (0)

#define cr_assert(cond, ...) pm_shim_check(true, cond, #cond, __VA_ARGS__)
#define cr_expect(cond, ...) pm_shim_check(false, cond, #cond, __VA_ARGS__)
#define cr_assert_fail(...) pm_shim_check(true, 0, "cr_assert_fail", __VA_ARGS__)
#define cr_assert_not(c, ...) pm_shim_check(true, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_eq(a, b, ...) pm_shim_check(true, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) pm_shim_check(true, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) pm_shim_check(true, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) pm_shim_check(true, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) pm_shim_check(true, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) pm_shim_check(true, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_null(p, ...) pm_shim_check(true, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) pm_shim_check(true, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                                           \
    pm_shim_check(true, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) pm_shim_check(false, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) pm_shim_check(false, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_expect_not_null(p, ...) pm_shim_check(false, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)                                                           \
    pm_shim_check(false, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_log_info(...) (fprintf(stderr, __VA_ARGS__), fprintf(stderr, "\n"))
#define cr_log_warn(...) (fprintf(stderr, "warning: " __VA_ARGS__), fprintf(stderr, "\n"))
#define cr_skip_test(...)                                                                     \
    do {                                                                                      \
        fprintf(stderr, "SKIP: " __VA_ARGS__);                                                \
        fprintf(stderr, "\n");                                                                \
        fflush(NULL);                                                                         \
        _exit(77);                                                                            \
    } while (0)

/* Runs one test in this process: the child's half of main. */
static int pm_shim_run_single(const char *full) {
    for (struct pm_shim_test *t = pm_shim_tests; t != NULL; t = t->next) {
        char name[256];
        snprintf(name, sizeof name, "%s/%s", t->suite, t->name);
        if (strcmp(name, full) != 0)
            continue;
        /* sanitizers slow everything down: the test's own timeout, five times over */
        alarm(t->opts.timeout > 0 ? (unsigned)t->opts.timeout * 5 : 600);
        if (t->opts.init != NULL)
            t->opts.init();
        t->fn();
        if (t->opts.fini != NULL)
            t->opts.fini();
        fflush(NULL);
        return pm_shim_expect_failed ? 1 : 0;
    }
    fprintf(stderr, "no test %s\n", full);
    return 2;
}

/* True if full matches one of the comma-separated globs in list. */
static int pm_shim_match_any(const char *list, const char *full) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save, *g = strtok_r(buf, ",", &save); g; g = strtok_r(NULL, ",", &save))
        if (fnmatch(g, full, 0) == 0)
            return 1;
    return 0;
}

/* Runs every test (or those matching --filter=suite/name, minus --exclude=suite/name globs,
 * comma-separated),
 * each in a fresh process: fork, then exec of this binary for that one test. Exec rather than
 * a bare fork, so that the allocator's fork handlers never run between tests (TSan cannot
 * follow the mutexes they reinitialise, and would then report races that are not there). */
int main(int argc, char **argv) {
    const char *filter = NULL, *exclude = NULL;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--pm-shim-single=", 17) == 0)
            return pm_shim_run_single(argv[i] + 17);
        if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(argv[i], "--exclude=", 10) == 0)
            exclude = argv[i] + 10;
    } /* --tap, --jobs: TAP is all we print, and tests run one at a time */
    setvbuf(stdout, NULL, _IONBF, 0);
    int n = 0, failed = 0;
    for (struct pm_shim_test *t = pm_shim_tests; t != NULL; t = t->next) {
        char full[256], arg[300];
        snprintf(full, sizeof full, "%s/%s", t->suite, t->name);
        if ((filter != NULL && fnmatch(filter, full, 0) != 0) ||
            (exclude != NULL && pm_shim_match_any(exclude, full)) || t->opts.disabled)
            continue;
        n++;
        snprintf(arg, sizeof arg, "--pm-shim-single=%s", full);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            execl("/proc/self/exe", argv[0], arg, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        bool ok, skipped = WIFEXITED(status) && WEXITSTATUS(status) == 77;
        if (t->opts.signal != 0)
            ok = WIFSIGNALED(status) && WTERMSIG(status) == t->opts.signal;
        else
            ok = WIFEXITED(status) && WEXITSTATUS(status) == t->opts.exit_code;
        if (skipped)
            printf("ok %d - %s::%s # SKIP\n", n, t->suite, t->name);
        else if (ok)
            printf("ok %d - %s::%s\n", n, t->suite, t->name);
        else {
            failed++;
            printf("not ok %d - %s::%s (%s %d)\n", n, t->suite, t->name,
                   WIFSIGNALED(status) ? "signal" : "exit status",
                   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
    }
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}

#endif /* PM_SANITIZE_CRITERION_H */
