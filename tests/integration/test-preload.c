/*
 * test-preload.c: real programs under LD_PRELOAD=libpoolmalloc.so behave exactly as they do on
 * glibc's malloc.
 *
 * Each program runs twice, plainly and preloaded, and the outputs are compared. The preloaded
 * run also proves that poolmalloc really served it: POOLMALLOC_STATS writes each process's
 * statistics (JSON, one file per process) at exit, and the test requires them to show many
 * allocations. The C++ program instead asks pm_owns (found with dlsym) about what new returns.
 *
 * The library is $PM_PRELOAD_LIB (make check sets it), else ../.libs/libpoolmalloc.so beside
 * this binary's directory.
 */
#include <criterion/criterion.h>

#include "test-util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DEADLINE_MS 50000

/* ---- paths ------------------------------------------------------------------------------- */

static char *dir_of_self(char *buf, size_t len) {
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    cr_assert_gt(n, 0);
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    *slash = 0;
    /* libtool may run us from tests/.libs/ */
    size_t l = strlen(buf);
    if (l >= 6 && strcmp(buf + l - 6, "/.libs") == 0)
        buf[l - 6] = 0;
    return buf;
}

/* An existing file: $env_var, else <this binary's dir>/<rel>. */
static void find_file(char *out, size_t len, const char *env_var, const char *env_rel,
                      const char *rel) {
    const char *env = getenv(env_var);
    char self[PATH_MAX];
    if (env != NULL && *env != 0)
        snprintf(out, len, "%s%s", env, env_rel);
    else
        snprintf(out, len, "%s/%s", dir_of_self(self, sizeof self), rel);
    cr_assert_eq(access(out, R_OK), 0, "%s not found (set %s)", out, env_var);
}

static void preload_lib(char *out, size_t len) {
    find_file(out, len, "PM_PRELOAD_LIB", "", "../.libs/libpoolmalloc.so");
}

/* ---- running a program ------------------------------------------------------------------- */

typedef struct run_spec {
    const char *const *argv;
    const char *cwd;          /* NULL: stay */
    const char *stdin_path;   /* NULL: /dev/null */
    const char *stdout_path;  /* where stdout goes */
    const char *stderr_path;  /* where stderr goes */
    const char *stats_dir;    /* non-NULL: preloaded, statistics written here */
    const char *const *env;   /* extra NAME=value settings, NULL-terminated, may be NULL */
} run_spec;

static void redirect(int fd, const char *path, int flags) {
    int f = open(path, flags, 0644);
    if (f < 0 || dup2(f, fd) < 0)
        _exit(126);
    close(f);
}

/* Runs the program to completion (or kills it at the deadline) and returns its wait status. */
static int run(const run_spec *spec) {
    char lib[PATH_MAX], stats_file[PATH_MAX + 32];
    if (spec->stats_dir != NULL) {
        preload_lib(lib, sizeof lib);
        snprintf(stats_file, sizeof stats_file, "%s/stats-%%p.json", spec->stats_dir);
    }
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        pm_test_clear_env(); /* no POOLMALLOC_* or LD_PRELOAD from the caller */
        if (spec->stats_dir != NULL) {
            setenv("LD_PRELOAD", lib, 1);
            setenv("POOLMALLOC_STATS", "1", 1);
            setenv("POOLMALLOC_STATS_FILE", stats_file, 1);
        }
        for (const char *const *e = spec->env; e != NULL && *e != NULL; e++)
            putenv((char *)*e);
        if (spec->cwd != NULL && chdir(spec->cwd) != 0)
            _exit(126);
        redirect(0, spec->stdin_path ? spec->stdin_path : "/dev/null", O_RDONLY);
        redirect(1, spec->stdout_path, O_WRONLY | O_CREAT | O_TRUNC);
        redirect(2, spec->stderr_path, O_WRONLY | O_CREAT | O_APPEND);
        execvp(spec->argv[0], (char *const *)spec->argv);
        _exit(127);
    }
    int status = 0;
    for (int waited = 0;; waited += 10) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        if (waited >= DEADLINE_MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            cr_assert_fail("%s did not finish in %d ms%s", spec->argv[0], DEADLINE_MS,
                           spec->stats_dir ? " (preloaded)" : "");
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static void expect_success(int status, const char *what, const char *stderr_path) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    char *err = read_file(stderr_path, NULL);
    size_t n = strlen(err);
    cr_assert_fail("%s: %s %d; stderr (%s, last 2000 bytes):\n%s", what,
                   WIFEXITED(status) ? "exit status" : "killed by signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), stderr_path,
                   n > 2000 ? err + n - 2000 : err);
}

static void expect_same_files(const char *a, const char *b, const char *what) {
    size_t la, lb;
    char *x = read_file(a, &la), *y = read_file(b, &lb);
    size_t i = 0;
    while (i < la && i < lb && x[i] == y[i])
        i++;
    cr_assert(la == lb && i == la,
              "%s: output differs under the preload (%zu vs %zu bytes, first difference at byte "
              "%zu); kept for inspection: %s %s",
              what, la, lb, i, a, b);
    free(x);
    free(y);
}

/* ---- proof that the preload was active ------------------------------------------------------ */

typedef struct preload_proof {
    int reports;        /* processes that wrote statistics */
    uint64_t allocs;    /* small + large allocations over all of them */
    uint64_t max_allocs; /* in the busiest process */
} preload_proof;

static uint64_t json_number(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(json, pattern);
    return at ? strtoull(at + strlen(pattern), NULL, 10) : 0;
}

static preload_proof read_proof(const char *stats_dir) {
    preload_proof proof = {0};
    DIR *d = opendir(stats_dir);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "stats-", 6) != 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", stats_dir, e->d_name);
        char *json = read_file(path, NULL);
        cr_assert(strstr(json, "\"allocator\":\"poolmalloc\"") != NULL, "%s: not a report",
                  path);
        uint64_t n = json_number(json, "small_allocs") + json_number(json, "large_allocs");
        proof.reports++;
        proof.allocs += n;
        if (n > proof.max_allocs)
            proof.max_allocs = n;
        free(json);
    }
    closedir(d);
    return proof;
}

static void expect_preload_served(const char *stats_dir, const char *what, int min_reports,
                                  uint64_t min_allocs) {
    preload_proof proof = read_proof(stats_dir);
    cr_assert_geq(proof.reports, min_reports,
                  "%s: %d poolmalloc statistics reports, expected %d: the preload was not active",
                  what, proof.reports, min_reports);
    cr_assert_geq(proof.max_allocs, min_allocs,
                  "%s: only %llu allocations went through poolmalloc (expected %llu)", what,
                  (unsigned long long)proof.max_allocs, (unsigned long long)min_allocs);
}

/* ---- the programs -------------------------------------------------------------------------- */

Test(preload, python_threads_millions_of_objects, .timeout = 120) {
    char work[PATH_MAX], script[PATH_MAX], out1[PATH_MAX + 16], out2[PATH_MAX + 16],
        err[PATH_MAX + 16], stats[PATH_MAX + 16];
    if (access("/usr/bin/python3", X_OK) != 0)
        cr_skip_test("/usr/bin/python3 is not installed");
    find_file(script, sizeof script, "PM_TOP_SRCDIR", "/tests/integration/preload-workload.py",
              "preload-workload.py");
    pm_test_make_temp_dir(work, sizeof work, "preload-python");
    snprintf(out1, sizeof out1, "%s/plain.out", work);
    snprintf(out2, sizeof out2, "%s/preload.out", work);
    snprintf(err, sizeof err, "%s/stderr", work);
    snprintf(stats, sizeof stats, "%s/stats", work);
    cr_assert_eq(mkdir(stats, 0755), 0);
    const char *argv[] = {"/usr/bin/python3", script, NULL};
    const char *env[] = {"PYTHONMALLOC=malloc", "PYTHONDONTWRITEBYTECODE=1", NULL};
    run_spec plain = {argv, work, NULL, out1, err, NULL, env};
    run_spec preloaded = {argv, work, NULL, out2, err, stats, env};
    expect_success(run(&plain), "python3 (plain)", err);
    expect_success(run(&preloaded), "python3 (preloaded)", err);
    expect_same_files(out1, out2, "python3");
    expect_preload_served(stats, "python3", 1, 1000000);
    pm_test_remove_tree(work);
}

/* A file of n pseudo-random lines: words, numbers, repeats and empty lines. */
static void generate_lines(const char *path, size_t n) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        switch (s % 10) {
        case 0: fputc('\n', f); break;
        case 1: fprintf(f, "%llu\n", (unsigned long long)(s % 1000)); break;
        default: {
            int len = 1 + (int)((s >> 8) % 60);
            for (int k = 0; k < len; k++)
                fputc('a' + (int)((s >> (k % 50)) % 26), f);
            fprintf(f, " %zu\n", i % 977);
        }
        }
    }
    fclose(f);
}

Test(preload, sort_large_file, .timeout = 120) {
    char work[PATH_MAX], in[PATH_MAX + 16], out1[PATH_MAX + 16], out2[PATH_MAX + 16],
        err[PATH_MAX + 16], stats[PATH_MAX + 16];
    pm_test_make_temp_dir(work, sizeof work, "preload-sort");
    snprintf(in, sizeof in, "%s/input", work);
    snprintf(out1, sizeof out1, "%s/plain.out", work);
    snprintf(out2, sizeof out2, "%s/preload.out", work);
    snprintf(err, sizeof err, "%s/stderr", work);
    snprintf(stats, sizeof stats, "%s/stats", work);
    cr_assert_eq(mkdir(stats, 0755), 0);
    generate_lines(in, 1000000); /* about 30 MB */
    /* Threads (--parallel), a big buffer (-S) and a key sort with a numeric tie-break. */
    const char *argv[] = {"sort", "--parallel=4", "-S", "200M", "-k2,2n", "-k1,1", in, NULL};
    const char *env[] = {"LC_ALL=C", NULL};
    run_spec plain = {argv, work, NULL, out1, err, NULL, env};
    run_spec preloaded = {argv, work, NULL, out2, err, stats, env};
    expect_success(run(&plain), "sort (plain)", err);
    expect_success(run(&preloaded), "sort (preloaded)", err);
    expect_same_files(out1, out2, "sort");
    /* sort reads into one big buffer and sorts in place: few, large allocations. */
    expect_preload_served(stats, "sort", 1, 10);
    /* sort -u through a pipe on stdin: another code path of sort. */
    const char *argv_u[] = {"sort", "-u", NULL};
    run_spec plain_u = {argv_u, work, in, out1, err, NULL, env};
    run_spec preloaded_u = {argv_u, work, in, out2, err, stats, env};
    expect_success(run(&plain_u), "sort -u (plain)", err);
    expect_success(run(&preloaded_u), "sort -u (preloaded)", err);
    expect_same_files(out1, out2, "sort -u");
    pm_test_remove_tree(work);
}

/* Writes a small source tree into dir: nested directories, text and binary files. */
static void generate_tree(const char *dir) {
    for (int d = 0; d < 10; d++) {
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/dir%d", dir, d);
        cr_assert_eq(mkdir(sub, 0755), 0);
        for (int f = 0; f < 30; f++) {
            char path[PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/file%d.%s", sub, f, f % 5 ? "txt" : "bin");
            FILE *out = fopen(path, "w");
            cr_assert_not_null(out);
            for (int line = 0; line < 50 + d * f; line++) {
                if (f % 5)
                    fprintf(out, "dir %d file %d line %d: %x\n", d, f, line, line * 2654435761u);
                else
                    fputc((line * 31 + f) & 0xff, out);
            }
            fclose(out);
        }
    }
}

/* git init/add/commit/log/fsck in repo, each command one process; their stdout concatenated
 * into out. Fixed names and dates make the commit hash a pure function of the content. */
static void git_session(const char *repo, const char *out, const char *err, const char *stats) {
    static const char *const git_env[] = {
        "GIT_AUTHOR_NAME=Pool Malloc",       "GIT_AUTHOR_EMAIL=pm@example.org",
        "GIT_COMMITTER_NAME=Pool Malloc",    "GIT_COMMITTER_EMAIL=pm@example.org",
        "GIT_AUTHOR_DATE=2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2024-01-02T03:04:05Z",
        "GIT_CONFIG_NOSYSTEM=1",             "GIT_CONFIG_GLOBAL=/dev/null",
        "LC_ALL=C",                          NULL,
    };
    const char *const commands[][12] = {
        {"git", "-c", "init.defaultBranch=main", "init", "-q", ".", NULL},
        {"git", "add", "-A", NULL},
        {"git", "-c", "user.name=Pool Malloc", "-c", "user.email=pm@example.org", "commit", "-q",
         "-m", "poolmalloc test commit", NULL},
        {"git", "log", "--format=%H %T %s", NULL},
        {"git", "ls-files", "-s", NULL},
        {"git", "fsck", "--strict", "--no-progress", NULL},
        /* one packing thread: with more, delta choices (and the pack size) vary run to run */
        {"git", "-c", "pack.threads=1", "gc", "-q", NULL},
        {"git", "count-objects", "-v", NULL},
    };
    char part[PATH_MAX + 16];
    snprintf(part, sizeof part, "%s.part", out);
    FILE *all = fopen(out, "w");
    cr_assert_not_null(all);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        run_spec spec = {commands[i], repo, NULL, part, err, stats, git_env};
        char what[256] = "";
        for (const char *const *a = commands[i]; *a != NULL; a++)
            snprintf(what + strlen(what), sizeof what - strlen(what), "%s ", *a);
        snprintf(what + strlen(what), sizeof what - strlen(what), "(%s)",
                 stats ? "preloaded" : "plain");
        expect_success(run(&spec), what, err);
        size_t n;
        char *text = read_file(part, &n);
        fwrite(text, 1, n, all);
        free(text);
    }
    fclose(all);
}

Test(preload, git_init_add_commit, .timeout = 120) {
    if (system("git --version >/dev/null 2>&1") != 0)
        cr_skip_test("git is not installed");
    char work[PATH_MAX], repo1[PATH_MAX + 16], repo2[PATH_MAX + 16], out1[PATH_MAX + 16],
        out2[PATH_MAX + 16], err[PATH_MAX + 16], stats[PATH_MAX + 16];
    pm_test_make_temp_dir(work, sizeof work, "preload-git");
    snprintf(repo1, sizeof repo1, "%s/plain", work);
    snprintf(repo2, sizeof repo2, "%s/preload", work);
    snprintf(out1, sizeof out1, "%s/plain.out", work);
    snprintf(out2, sizeof out2, "%s/preload.out", work);
    snprintf(err, sizeof err, "%s/stderr", work);
    snprintf(stats, sizeof stats, "%s/stats", work);
    cr_assert_eq(mkdir(stats, 0755), 0);
    cr_assert_eq(mkdir(repo1, 0755), 0);
    cr_assert_eq(mkdir(repo2, 0755), 0);
    generate_tree(repo1);
    generate_tree(repo2);
    git_session(repo1, out1, err, NULL);
    git_session(repo2, out2, err, stats);
    expect_same_files(out1, out2, "git");
    /* Every one of the 8 git commands (and any process it started) reported. */
    expect_preload_served(stats, "git", 8, 1000);
    pm_test_remove_tree(work);
}

Test(preload, cxx_program_new_delete_aligned_threads, .timeout = 120) {
    char work[PATH_MAX], program[PATH_MAX], out1[PATH_MAX + 16], out2[PATH_MAX + 16],
        err[PATH_MAX + 16], stats[PATH_MAX + 16];
    find_file(program, sizeof program, "PM_TOP_BUILDDIR", "/tests/integration/cxx-program", "cxx-program");
    pm_test_make_temp_dir(work, sizeof work, "preload-cxx");
    snprintf(out1, sizeof out1, "%s/plain.out", work);
    snprintf(out2, sizeof out2, "%s/preload.out", work);
    snprintf(err, sizeof err, "%s/stderr", work);
    snprintf(stats, sizeof stats, "%s/stats", work);
    cr_assert_eq(mkdir(stats, 0755), 0);
    const char *argv_plain[] = {program, NULL};
    const char *argv_preload[] = {program, "--expect-preload", NULL};
    run_spec plain = {argv_plain, work, NULL, out1, err, NULL, NULL};
    run_spec preloaded = {argv_preload, work, NULL, out2, err, stats, NULL};
    expect_success(run(&plain), "cxx-program (plain)", err);
    /* --expect-preload fails the program unless pm_owns owns what new returned. */
    expect_success(run(&preloaded), "cxx-program --expect-preload (preloaded)", err);
    expect_same_files(out1, out2, "cxx-program");
    expect_preload_served(stats, "cxx-program", 1, 100000);
    pm_test_remove_tree(work);
}

/* A shell pipeline: many short processes that fork and exec, each starting up (and calling
 * malloc from the dynamic loader and libc's start-up) on poolmalloc. */
Test(preload, trivial_programs_and_shell_pipeline, .timeout = 60) {
    char work[PATH_MAX], out1[PATH_MAX + 16], out2[PATH_MAX + 16], err[PATH_MAX + 16],
        stats[PATH_MAX + 16];
    pm_test_make_temp_dir(work, sizeof work, "preload-sh");
    snprintf(out1, sizeof out1, "%s/plain.out", work);
    snprintf(out2, sizeof out2, "%s/preload.out", work);
    snprintf(err, sizeof err, "%s/stderr", work);
    snprintf(stats, sizeof stats, "%s/stats", work);
    cr_assert_eq(mkdir(stats, 0755), 0);
    /* A shell that forks a pipeline, command substitution and a few coreutils. */
    const char *argv[] = {
        "/bin/sh", "-c",
        "seq 1 200000 | awk '{ s += $1 } END { print s }'; "
        "x=$(ls -la / | wc -l); echo dirs $((x > 0)); "
        "seq 1 50000 | tr 0-9 a-j | sort -r | uniq -c | sort -n | tail -3; "
        "env | grep -c '^LD_PRELOAD=' >/dev/null; echo done",
        NULL};
    run_spec plain = {argv, work, NULL, out1, err, NULL, NULL};
    run_spec preloaded = {argv, work, NULL, out2, err, stats, NULL};
    expect_success(run(&plain), "sh pipeline (plain)", err);
    expect_success(run(&preloaded), "sh pipeline (preloaded)", err);
    expect_same_files(out1, out2, "sh pipeline");
    expect_preload_served(stats, "sh pipeline", 8, 50);
    pm_test_remove_tree(work);
}
