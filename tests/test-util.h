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

/* ---- running a risky part in a child, so that a hang or a crash fails one test fast ---- */
/* Included by the lifecycle, hardening and stress tests (issue 7): what they exercise may
 * deadlock or abort, and must never hang the test runner. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

#define PM_CHILD_OUT_MAX 16384

/* What a child did: its wait status (or a deadline), and the head of its stdout and stderr. */
typedef struct pm_child {
    int status;
    bool timed_out;
    char out[PM_CHILD_OUT_MAX];
    char err[PM_CHILD_OUT_MAX];
} pm_child;

/* How to start it: a function to call in the forked child, or a program to execute. */
typedef struct pm_spawn {
    void (*fn)(void *arg);      /* runs in the child; returning means exit status 0 */
    void *arg;
    const char *const *argv;    /* else: execvp(argv[0], argv) */
    const char *const *env;     /* NAME=value settings for the child, NULL-terminated */
    bool preload;               /* LD_PRELOAD=$PM_PRELOAD_LIB for an executed program */
    unsigned timeout_s;         /* the child is killed (with its own children) after this */
    void (*setup)(void *arg);   /* runs in the child before fn or exec (rlimits, ...) */
} pm_spawn;

/* A path under the build tree: $PM_TOP_BUILDDIR/rel, else found from this binary's place
 * (tests/<dir>/[.libs/]binary). */
static inline void pm_test_build_path(char *out, size_t len, const char *rel) {
    const char *top = getenv("PM_TOP_BUILDDIR");
    if (top != NULL && *top != 0) {
        snprintf(out, len, "%s/%s", top, rel);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    cr_assert_gt(n, 0);
    self[n] = 0;
    *strrchr(self, '/') = 0; /* the binary's name */
    size_t l = strlen(self);
    if (l >= 6 && strcmp(self + l - 6, "/.libs") == 0)
        self[l - 6] = 0;
    for (int up = 0; up < 2; up++) { /* tests/<dir> */
        char *slash = strrchr(self, '/');
        if (slash != NULL)
            *slash = 0;
    }
    snprintf(out, len, "%s/%s", self, rel);
}

/* The preload library: $PM_PRELOAD_LIB, else .libs/libpoolmalloc.so in the build tree. */
static inline void pm_test_preload_lib(char *out, size_t len) {
    const char *env = getenv("PM_PRELOAD_LIB");
    if (env != NULL && *env != 0)
        snprintf(out, len, "%s", env);
    else
        pm_test_build_path(out, len, ".libs/libpoolmalloc.so");
    cr_assert_eq(access(out, R_OK), 0, "%s not found (set PM_PRELOAD_LIB)", out);
}

static inline int pm_test_temp_fd(void) {
    const char *tmp = getenv("TMPDIR");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/pm-child-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "mkstemp(%s): %s", path, strerror(errno));
    unlink(path);
    return fd;
}

static inline void pm_test_slurp(int fd, char *buf, size_t len) {
    ssize_t n = pread(fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
}

/* In a child about to run a program: no POOLMALLOC_* and no LD_PRELOAD from ours. */
static inline void pm_test_clear_env(void) {
    for (char **e = environ; *e != NULL;) {
        if (strncmp(*e, "POOLMALLOC_", 11) == 0 || strncmp(*e, "LD_PRELOAD=", 11) == 0) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
        } else {
            e++;
        }
    }
}

/* The child's environment: ours cleared (pm_test_clear_env), then spec's. */
static inline void pm_test_child_env(const pm_spawn *spec) {
    pm_test_clear_env();
    for (const char *const *e = spec->env; e != NULL && *e != NULL; e++)
        putenv((char *)*e);
}

/* A fresh directory under $TMPDIR, named pm-<what>-XXXXXX. */
static inline void pm_test_make_temp_dir(char *out, size_t len, const char *what) {
    const char *tmp = getenv("TMPDIR");
    snprintf(out, len, "%s/pm-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", what);
    cr_assert_not_null(mkdtemp(out), "mkdtemp(%s): %s", out, strerror(errno));
}

static inline void pm_test_remove_tree(const char *dir) {
    char command[PATH_MAX + 32];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0)
        cr_log_warn("could not remove %s", dir);
}

/* Runs spec in a child of its own process group and waits for it, up to the deadline. */
static inline void pm_test_spawn(const pm_spawn *spec, pm_child *out) {
    char lib[PATH_MAX] = "";
    if (spec->preload)
        pm_test_preload_lib(lib, sizeof lib);
    int out_fd = pm_test_temp_fd(), err_fd = pm_test_temp_fd();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        if (spec->setup != NULL)
            spec->setup(spec->arg);
        if (spec->fn != NULL) {
            /* fn's settings must be in place before its first allocation */
            if (spec->env != NULL)
                for (const char *const *e = spec->env; *e != NULL; e++)
                    putenv((char *)*e);
            spec->fn(spec->arg);
            fflush(NULL);
            _exit(0);
        }
        pm_test_child_env(spec);
        if (spec->preload)
            setenv("LD_PRELOAD", lib, 1);
        execvp(spec->argv[0], (char *const *)spec->argv);
        dprintf(2, "cannot execute %s: %s\n", spec->argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    unsigned limit_ms = (spec->timeout_s ? spec->timeout_s : 30) * 1000u;
    out->timed_out = false;
    out->status = 0;
    for (unsigned waited = 0;; waited += 5) {
        pid_t r = waitpid(pid, &out->status, WNOHANG);
        if (r == pid)
            break;
        if (waited >= limit_ms) {
            out->timed_out = true;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &out->status, 0);
            break;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(-pid, SIGKILL); /* grandchildren a hung child left behind */
    pm_test_slurp(out_fd, out->out, sizeof out->out);
    pm_test_slurp(err_fd, out->err, sizeof out->err);
}

/* "exit status 3" / "killed by signal 11 (Segmentation fault)" / "hung (killed after N s)" */
static inline const char *pm_test_describe(const pm_child *c, char *buf, size_t len) {
    if (c->timed_out)
        snprintf(buf, len, "hung (killed at the deadline)");
    else if (WIFEXITED(c->status))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(c->status));
    else if (WIFSIGNALED(c->status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(c->status),
                 strsignal(WTERMSIG(c->status)));
    else
        snprintf(buf, len, "wait status %#x", c->status);
    return buf;
}

/* The child must have exited 0 in time; otherwise the test fails with what it said. */
static inline void pm_test_expect_exit0(const pm_child *c, const char *what) {
    char how[128];
    cr_assert(!c->timed_out && WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0,
              "%s: %s\n--- stdout:\n%.3000s\n--- stderr:\n%.3000s", what,
              pm_test_describe(c, how, sizeof how), c->out, c->err);
}

/* The child must have died of SIGABRT in time, with stderr containing each of the given
 * texts (NULL-terminated): a clear report, not a crash, a hang or silence. */
static inline void pm_test_expect_abort(const pm_child *c, const char *what,
                                        const char *const *texts) {
    char how[128];
    cr_assert(!c->timed_out && WIFSIGNALED(c->status) && WTERMSIG(c->status) == SIGABRT,
              "%s: expected an abort with a report, got %s\n--- stdout:\n%.2000s\n"
              "--- stderr:\n%.2000s",
              what, pm_test_describe(c, how, sizeof how), c->out, c->err);
    for (const char *const *t = texts; t != NULL && *t != NULL; t++)
        cr_assert_not_null(strstr(c->err, *t), "%s: the report lacks \"%s\"; stderr:\n%.2000s",
                           what, *t, c->err);
}

/* Seconds a stress test may run: PM_TORTURE_SECONDS, else its CI budget. */
static inline double pm_test_budget(double ci_seconds) {
    const char *s = getenv("PM_TORTURE_SECONDS");
    double v = s != NULL ? strtod(s, NULL) : 0;
    return v > 0 ? v : ci_seconds;
}

/* A seed offset for the randomized stress tests: PM_TORTURE_SEED (scripts/torture varies it
 * from round to round), else 0, so that CI runs are reproducible. */
static inline uint64_t pm_test_seed(void) {
    const char *s = getenv("PM_TORTURE_SEED");
    return s != NULL ? strtoull(s, NULL, 0) : 0;
}

/* How much work a stress test did, on stderr and appended to tests/stress/counts.log in the
 * build tree: Criterion's TAP mode (`make check`) swallows a passing test's output, and
 * scripts/torture prints that file. */
static inline void pm_test_report_counts(const char *text) {
    fprintf(stderr, "%s", text);
    const char *top = getenv("PM_TOP_BUILDDIR");
    if (top == NULL || *top == 0)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tests/stress/counts.log", top);
    FILE *f = fopen(path, "a");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static inline double pm_test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
