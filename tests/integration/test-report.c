/*
 * test-report.c: where the exit report goes. It must reach the stats file or stderr the
 * program started with, never a file of the program's that took over a descriptor number; an
 * unopenable POOLMALLOC_STATS_FILE gets one line with the reason in words, also under
 * coreutils programs (preloaded); a stats file alone turns the report on. Also pm_strerror.
 */
#include "pm-probe.h"

#include <limits.h>

/* ---- pm_strerror: the words glibc's strerror gives, without allocating ---------------------- */

Test(report, strerror_matches_the_c_library) {
    const int errs[] = {EPERM, ENOENT, EACCES, EROFS, ENOTDIR, EISDIR, EMFILE, ENFILE, ENOSPC,
                        EEXIST, ELOOP, ENAMETOOLONG, ENOMEM, EINVAL, EBADF, EDQUOT, EFBIG};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
        cr_assert_str_eq(pm_strerror(errs[i]), strerror(errs[i]), "errno %d", errs[i]);
}

Test(report, strerror_of_an_unknown_value_names_the_number) {
    cr_assert_str_eq(pm_strerror(9999), "errno 9999");
    const char *a = pm_strerror(9998), *b = pm_strerror(9997);
    cr_assert_str_eq(a, "errno 9998", "a second unknown value does not overwrite the first");
    cr_assert_str_eq(b, "errno 9997");
}

/* ---- a program that takes over every descriptor above 2 ------------------------------------ */

static char own_file[PATH_MAX];

/* What daemons do: close every descriptor above 2 (closefrom), then open their own output.
 * Here the output file is also put on every number that was open before, as happens when a
 * low `ulimit -n` left the allocator's descriptors at 3 or 4: whatever number the report
 * would be written to now holds the program's file. */
static void probe_take_over_descriptors(void) {
    pm_free(pm_malloc(24)); /* the allocator has started: its descriptors are open */
    const char *path = getenv("OWN_FILE");
    bool was_open[1024] = {false};
    for (int fd = 3; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0) {
            was_open[fd] = true;
            close(fd);
        }
    int own = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (own != 3)
        _exit(97);
    for (int fd = 4; fd < 1024; fd++)
        if (was_open[fd])
            dup2(own, fd);
    static const char line[] = "the program's own output\n";
    if (write(own, line, sizeof line - 1) != (ssize_t)(sizeof line - 1))
        _exit(96);
    exit(0); /* exit: the report is written by a destructor */
}

/* The same, and stderr too now goes to the program's file: there is nowhere safe left to
 * write the report, so none is written. */
static void probe_take_over_stderr_too(void) {
    const char *path = getenv("OWN_FILE");
    pm_free(pm_malloc(24));
    int own = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    for (int fd = 3; fd < 1024; fd++)
        if (fd != own && fcntl(fd, F_GETFD) >= 0)
            dup2(own, fd);
    dup2(own, 2);
    static const char line[] = "the program's own output\n";
    if (write(own, line, sizeof line - 1) != (ssize_t)(sizeof line - 1))
        _exit(96);
    exit(0);
}

static void probe_underscore_exit(void) {
    pm_free(pm_malloc(24));
    _exit(0); /* no destructors: no report */
}

static void probe_exit_quietly(void) {
    pm_free(pm_malloc(24));
    exit(0);
}

PM_PROBES({"take_over_descriptors", probe_take_over_descriptors},
          {"take_over_stderr_too", probe_take_over_stderr_too},
          {"exit_quietly", probe_exit_quietly}, {"underscore_exit", probe_underscore_exit})

static void read_whole(const char *path, char *buf, size_t len) {
    buf[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, len - 1);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
}

static void temp_path(char *out, size_t len, const char *name) {
    char dir[] = "/tmp/pm-report-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    snprintf(out, len, "%s/%s", dir, name);
}

static void remove_with_dir(const char *path) {
    unlink(path);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    rmdir(dir);
}

Test(report, stderr_report_stays_out_of_the_programs_file) {
    static probe_result r;
    static char var[PATH_MAX + 16], buf[65536];
    temp_path(own_file, sizeof own_file, "own.txt");
    snprintf(var, sizeof var, "OWN_FILE=%s", own_file);
    const char *vars[] = {"POOLMALLOC_STATS=1", var, NULL};
    run_probe("take_over_descriptors", vars, &r);
    cr_assert(probe_exited_ok(&r), "status %d: %s", r.status, r.err);
    read_whole(own_file, buf, sizeof buf);
    cr_assert_str_eq(buf, "the program's own output\n", "the report got into the program's file");
    cr_assert(starts_with(r.err, "poolmalloc statistics, pid "), "report on stderr: %s", r.err);
    remove_with_dir(own_file);
}

Test(report, stats_file_report_stays_out_of_the_programs_file) {
    static probe_result r;
    static char stats[PATH_MAX], var[PATH_MAX + 16], stats_var[PATH_MAX + 32], buf[65536];
    temp_path(own_file, sizeof own_file, "own.txt");
    temp_path(stats, sizeof stats, "stats.txt");
    snprintf(var, sizeof var, "OWN_FILE=%s", own_file);
    snprintf(stats_var, sizeof stats_var, "POOLMALLOC_STATS_FILE=%s", stats);
    /* It exists at start, so the allocator holds it open: the case where the number is lost. */
    close(open(stats, O_WRONLY | O_CREAT, 0644));
    const char *vars[] = {"POOLMALLOC_STATS=1", stats_var, var, NULL};
    run_probe("take_over_descriptors", vars, &r);
    cr_assert(probe_exited_ok(&r), "status %d: %s", r.status, r.err);
    read_whole(own_file, buf, sizeof buf);
    cr_assert_str_eq(buf, "the program's own output\n", "the report got into the program's file");
    read_whole(stats, buf, sizeof buf);
    cr_assert(starts_with(buf, "poolmalloc statistics, pid "), "stats file: '%s'", buf);
    cr_assert_str_empty(r.err);
    remove_with_dir(own_file);
    remove_with_dir(stats);
}

Test(report, no_report_when_stderr_was_replaced_too) {
    static probe_result r;
    static char var[PATH_MAX + 16], buf[65536];
    temp_path(own_file, sizeof own_file, "own.txt");
    snprintf(var, sizeof var, "OWN_FILE=%s", own_file);
    const char *vars[] = {"POOLMALLOC_STATS=1", var, NULL};
    run_probe("take_over_stderr_too", vars, &r);
    cr_assert(probe_exited_ok(&r), "status %d: %s", r.status, r.err);
    read_whole(own_file, buf, sizeof buf);
    cr_assert_str_eq(buf, "the program's own output\n", "the report got into the program's file");
    remove_with_dir(own_file);
}

/* POOLMALLOC_STATS_FILE alone turns the report on (issue 9: it wrote nothing, said nothing). */
Test(report, stats_file_alone_turns_the_report_on) {
    static probe_result r;
    static char stats[PATH_MAX], stats_var[PATH_MAX + 32], buf[65536];
    temp_path(stats, sizeof stats, "alone.txt");
    snprintf(stats_var, sizeof stats_var, "POOLMALLOC_STATS_FILE=%s", stats);
    const char *vars[] = {stats_var, NULL};
    run_probe("exit_quietly", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    read_whole(stats, buf, sizeof buf);
    cr_assert(starts_with(buf, "poolmalloc statistics, pid "), "stats file: '%s'", buf);
    remove_with_dir(stats);
}

/* A process that ends without exit (killed, _exit after fork, exec of a static program)
 * writes no report, and must not leave an empty file behind either. */
Test(report, no_empty_file_from_a_process_that_writes_no_report) {
    static probe_result r;
    static char stats[PATH_MAX], stats_var[PATH_MAX + 32];
    temp_path(stats, sizeof stats, "never.txt");
    snprintf(stats_var, sizeof stats_var, "POOLMALLOC_STATS_FILE=%s", stats);
    const char *vars[] = {stats_var, NULL};
    run_probe("underscore_exit", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert_str_empty(r.err);
    cr_assert_neq(access(stats, F_OK), 0, "%s was created", stats);
    remove_with_dir(stats);
}

/* ---- unopenable files, under real programs ---------------------------------------------------- */

static bool preload_lib(char *out, size_t len) {
    const char *env = getenv("PM_PRELOAD_LIB");
    if (env != NULL && *env != 0)
        snprintf(out, len, "%s", env);
    else
        snprintf(out, len, ".libs/libpoolmalloc.so"); /* run from the build directory */
    return access(out, R_OK) == 0;
}

/* Runs `command` preloaded, with only the environment `vars` ("A=1 B=2"); stdout+stderr into
 * out. Returns the status as pclose gives it. */
static int run_preloaded(const char *vars, const char *command, char *out, size_t len) {
    char lib[PATH_MAX], cmd[3 * PATH_MAX];
    if (!preload_lib(lib, sizeof lib))
        cr_skip_test("libpoolmalloc.so not found (set PM_PRELOAD_LIB)");
    snprintf(cmd, sizeof cmd, "env -i %s LD_PRELOAD='%s' %s 2>&1", vars, lib, command);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    return pclose(p);
}

static void check_unopenable(const char *file, const char *reason, const char *command) {
    static char out[65536], want[1024], vars[PATH_MAX];
    snprintf(vars, sizeof vars, "POOLMALLOC_STATS_FILE='%s'", file);
    int status = run_preloaded(vars, command, out, sizeof out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status %d: %s", command,
              status, out);
    snprintf(want, sizeof want, "poolmalloc: cannot open POOLMALLOC_STATS_FILE='%s' (%s): "
             "statistics go to stderr\n", file, reason);
    cr_assert(strstr(out, want) != NULL, "%s: expected '%s' in: %s", command, want, out);
    char *first = strstr(out, want);
    cr_assert(strstr(first + 1, want) == NULL, "said once: %s", out);
    cr_assert(strstr(out, "poolmalloc statistics, pid ") != NULL, "%s: no report: %s", command,
              out);
}

Test(report, unopenable_stats_file_is_reported_in_words_under_coreutils) {
    check_unopenable("/nonexistent/dir/s.txt", "No such file or directory", "/bin/true");
    check_unopenable("/nonexistent/dir/s.txt", "No such file or directory", "/bin/ls /");
    check_unopenable("/tmp", "Is a directory", "/bin/ls /");
    check_unopenable("/etc/passwd/s.txt", "Not a directory", "/bin/true");
}

/* Issue 9: GC_DEBUG=99 was accepted silently. Now one line; fatal under STRICT. */
Test(report, bad_gc_debug_under_a_real_program) {
    static char out[65536];
    int status = run_preloaded("POOLMALLOC_GC_DEBUG=99", "/bin/true", out, sizeof out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %s", status, out);
    cr_assert_str_eq(out, "poolmalloc: POOLMALLOC_GC_DEBUG='99' ignored: expected a "
                          "comma-separated list of stats, saveall, leak, checks, or a number "
                          "from 0 to 15 made of their bits\n");
    status = run_preloaded("POOLMALLOC_STRICT=1 POOLMALLOC_GC_DEBUG=99", "/bin/true", out,
                           sizeof out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "STRICT exits 2: %d %s", status,
              out);
    cr_assert(starts_with(out, "poolmalloc: POOLMALLOC_GC_DEBUG='99' rejected "
                               "(POOLMALLOC_STRICT=1): expected"), "%s", out);
    cr_assert_eq(count_lines(out), 1, "one line: %s", out);
}
