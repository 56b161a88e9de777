/*
 * test-lifecycle.c: issue 7's lifecycle and OS-limit cases, each a regression test run under
 * LD_PRELOAD=libpoolmalloc.so as a user would run a program.
 *
 * The programs (lifecycle-prog, early-prog, setuid-prog, and python3 or coreutils) run in a
 * child of their own with a deadline: a hang fails its test in seconds, with what the program
 * printed, instead of hanging the suite. Case numbers are issue 7's.
 */
#include <criterion/criterion.h>

#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "test-util.h"

#define PROG "tests/integration/lifecycle-prog"

/* Runs `lifecycle-prog <args...>` preloaded, with the given POOLMALLOC_* settings. */
static void run_case(pm_child *c, const char *const *env, unsigned timeout_s,
                     const char *const *args) {
    char prog[PATH_MAX];
    pm_test_build_path(prog, sizeof prog, PROG);
    const char *argv[16] = {prog};
    for (int i = 0; args[i] != NULL && i < 14; i++)
        argv[i + 1] = args[i];
    pm_spawn spec = {.argv = argv, .env = env, .preload = true, .timeout_s = timeout_s};
    pm_test_spawn(&spec, c);
}

static void expect_case(const char *what, const char *const *env, unsigned timeout_s,
                        const char *const *args) {
    static pm_child c;
    run_case(&c, env, timeout_s, args);
    cr_log_info("%s: %s", what, c.out);
    pm_test_expect_exit0(&c, what);
}

static size_t read_whole(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        buf[0] = 0;
        return 0;
    }
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return n > 0 ? (size_t)n : 0;
}

/* ---- 1: fork ------------------------------------------------------------------------------ */

/* Another thread's cache holds every block of a pool that is not current, the large cache
 * holds a mapping and the purge delay has passed: the child's fork handler must not run a
 * purge that takes a lock still held from the prepare handler. */
Test(lifecycle, fork_with_a_cached_pool_and_a_due_purge, .timeout = 60) {
    const char *env[] = {"POOLMALLOC_PURGE_DELAY=0", NULL};
    expect_case("fork with a cached pool", env, 45, (const char *[]){"fork-cached", "10", NULL});
}

/* 4 threads forking (each child allocates and exits) while 4 allocate small and large blocks
 * across threads, with a purge delay of 1 ms. */
Test(lifecycle, fork_storm_children_never_hang) {
    const char *env[] = {"POOLMALLOC_PURGE_DELAY=1", NULL};
    char seconds[32];
    snprintf(seconds, sizeof seconds, "%g", pm_test_budget(4));
    expect_case("fork storm", env, (unsigned)pm_test_budget(4) + 40,
                (const char *[]){"fork-storm", seconds, NULL});
}

/* ---- 2: POOLMALLOC_ARENA_SIZE=1M and 2M ----------------------------------------------------- */

static void medium_sizes(const char *arena) {
    char setting[64];
    snprintf(setting, sizeof setting, "POOLMALLOC_ARENA_SIZE=%s", arena);
    const char *env[] = {setting, NULL};
    expect_case(setting, env, 60, (const char *[]){"arena-sizes", NULL});
}

Test(lifecycle, arena_size_1m_serves_every_medium_size, .timeout = 90) { medium_sizes("1M"); }
Test(lifecycle, arena_size_2m_serves_every_medium_size, .timeout = 90) { medium_sizes("2M"); }

static void python_import_json(const char *arena) {
    if (system("command -v python3 >/dev/null 2>&1") != 0)
        cr_skip_test("python3 is not installed");
    char setting[64];
    snprintf(setting, sizeof setting, "POOLMALLOC_ARENA_SIZE=%s", arena);
    const char *env[] = {setting, NULL};
    const char *argv[] = {"python3", "-c", "import json; print(json.dumps({'ok': [1, 2]}))",
                          NULL};
    static pm_child c;
    pm_spawn spec = {.argv = argv, .env = env, .preload = true, .timeout_s = 60};
    pm_test_spawn(&spec, &c);
    pm_test_expect_exit0(&c, setting);
    cr_assert_str_eq(c.out, "{\"ok\": [1, 2]}\n");
}

Test(lifecycle, arena_size_1m_python_import_json, .timeout = 90) { python_import_json("1M"); }
Test(lifecycle, arena_size_2m_python_import_json, .timeout = 90) { python_import_json("2M"); }

/* ---- 3: free() at vm.max_map_count ---------------------------------------------------------- */

Test(lifecycle, free_survives_map_count_limit, .timeout = 90) {
    expect_case("map count, default options", NULL, 60, (const char *[]){"mapcount", NULL});
}

Test(lifecycle, free_survives_map_count_limit_without_caches, .timeout = 90) {
    const char *env[] = {"POOLMALLOC_LARGE_CACHE=0", "POOLMALLOC_PURGE_DELAY=0", NULL};
    expect_case("map count, no large cache, no purge delay", env, 60,
                (const char *[]){"mapcount", NULL});
}

/* ---- 4: setuid programs ---------------------------------------------------------------------- */

/* A setuid-root copy of setuid-prog (linked with libpoolmalloc) in a root-owned directory,
 * run as `nobody` with the given settings. Skips where that cannot be arranged. */
static void run_setuid(pm_child *c, char *dir, size_t dir_len, const char *const *env) {
    if (geteuid() != 0)
        cr_skip_test("needs root to install a setuid-root program");
    if (system("command -v setpriv >/dev/null 2>&1") != 0)
        cr_skip_test("setpriv (util-linux) is not installed");
    struct passwd *nobody = getpwnam("nobody");
    if (nobody == NULL)
        cr_skip_test("no user nobody");
    pm_test_make_temp_dir(dir, dir_len, "lifecycle-setuid");
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_NOSUID)) {
        pm_test_remove_tree(dir);
        cr_skip_test("%s is on a nosuid filesystem", dir);
    }
    char src[PATH_MAX], dst[PATH_MAX + 32], command[4 * PATH_MAX + 256];
    pm_test_build_path(src, sizeof src, "tests/integration/setuid-prog");
    snprintf(dst, sizeof dst, "%s/setuid-prog", dir);
    snprintf(command, sizeof command, "cp '%s' '%s' && chown root:root '%s' && chmod 4755 '%s'",
             src, dst, dst, dst);
    cr_assert_eq(system(command), 0, "cannot install %s setuid root", dst);
    cr_assert_eq(chmod(dir, 0755), 0);
    char uid[32], gid[32];
    snprintf(uid, sizeof uid, "--reuid=%d", (int)nobody->pw_uid);
    snprintf(gid, sizeof gid, "--regid=%d", (int)nobody->pw_gid);
    const char *argv[] = {"setpriv", uid, gid, "--clear-groups", dst, NULL};
    pm_spawn spec = {.argv = argv, .env = env, .timeout_s = 30};
    pm_test_spawn(&spec, c);
    if (strstr(c->out, "secure=1") == NULL && WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0) {
        pm_test_remove_tree(dir);
        cr_skip_test("the program did not run in secure mode (AT_SECURE): %s", c->out);
    }
}

Test(lifecycle, setuid_program_ignores_stats_file, .timeout = 60) {
    char dir[PATH_MAX], target[PATH_MAX + 32], prog_dir[PATH_MAX];
    static char setting[PATH_MAX + 64];
    static pm_child c;
    pm_test_make_temp_dir(dir, sizeof dir, "lifecycle-setuid-target"); /* root-owned: nobody cannot write here */
    cr_assert_eq(chmod(dir, 0755), 0);
    snprintf(target, sizeof target, "%s/created-by-setuid", dir);
    snprintf(setting, sizeof setting, "POOLMALLOC_STATS_FILE=%s", target);
    const char *env[] = {"POOLMALLOC_STATS=1", setting, NULL};
    run_setuid(&c, prog_dir, sizeof prog_dir, env);
    bool created = access(target, F_OK) == 0;
    pm_test_remove_tree(dir);
    pm_test_remove_tree(prog_dir);
    pm_test_expect_exit0(&c, "setuid program with POOLMALLOC_STATS_FILE");
    cr_assert(!created,
              "a setuid-root program run by nobody created %s, named by POOLMALLOC_STATS_FILE",
              target);
}

Test(lifecycle, setuid_program_ignores_strict, .timeout = 60) {
    const char *env[] = {"POOLMALLOC_STRICT=1", "POOLMALLOC_ARENA_SIZE=banana", NULL};
    static pm_child c;
    char dir[PATH_MAX];
    run_setuid(&c, dir, sizeof dir, env);
    pm_test_remove_tree(dir);
    pm_test_expect_exit0(&c, "setuid program with POOLMALLOC_STRICT=1 and a bad option");
}

/* ---- 5, 6, 7: threads --------------------------------------------------------------------- */

Test(lifecycle, late_allocating_key_destructors_leak_no_heaps, .timeout = 90) {
    expect_case("2000 threads with late key destructors", NULL, 60,
                (const char *[]){"late-destructor", "2000", NULL});
}

Test(lifecycle, remote_frees_racing_thread_exit_are_not_stranded) {
    char seconds[32];
    snprintf(seconds, sizeof seconds, "%g", pm_test_budget(6));
    expect_case("remote frees racing thread exit", NULL, (unsigned)pm_test_budget(6) + 30,
                (const char *[]){"remote-exit", seconds, NULL});
}

Test(lifecycle, memory_freed_into_an_idle_threads_pools_is_returned, .timeout = 120) {
    expect_case("idle loader thread, 200 MB freed by others", NULL, 90,
                (const char *[]){"idle-thread", "200", NULL});
}

/* ---- 10: the statistics report and the program's own files ---------------------------------- */

static void low_fd_limit(void *arg) {
    (void)arg;
    struct rlimit r = {64, 64}; /* below the 500 the report's descriptor is moved to */
    setrlimit(RLIMIT_NOFILE, &r);
}

static const char program_output[] = "the program's own output\n";

/* The program closes every descriptor above 2 and opens its own output file, which gets the
 * descriptor the report was kept on: the report must not land in it, nor vanish unsaid. */
Test(lifecycle, stats_report_stays_out_of_the_programs_file, .timeout = 60) {
    char dir[PATH_MAX], out[PATH_MAX + 16], prog[PATH_MAX], content[4096];
    pm_test_make_temp_dir(dir, sizeof dir, "lifecycle-fd");
    snprintf(out, sizeof out, "%s/out.txt", dir);
    pm_test_build_path(prog, sizeof prog, PROG);
    const char *argv[] = {prog, "fd-identity", out, NULL};
    const char *env[] = {"POOLMALLOC_STATS=1", NULL};
    static pm_child c;
    pm_spawn spec = {.argv = argv, .env = env, .preload = true, .timeout_s = 30,
                     .setup = low_fd_limit};
    pm_test_spawn(&spec, &c);
    read_whole(out, content, sizeof content);
    pm_test_remove_tree(dir);
    pm_test_expect_exit0(&c, "fd-identity with POOLMALLOC_STATS=1");
    cr_expect_str_eq(content, program_output,
                     "the program's file holds more than the program wrote:\n%.1500s", content);
    cr_expect_not_null(strstr(c.err, "poolmalloc"),
                       "neither the report nor a warning on stderr: the report vanished");
}

/* Same, with POOLMALLOC_STATS_FILE naming a file of its own: the report goes there, only. */
Test(lifecycle, stats_file_report_stays_out_of_the_programs_file, .timeout = 60) {
    char dir[PATH_MAX], out[PATH_MAX + 16], stats[PATH_MAX + 16], prog[PATH_MAX];
    static char content[8192], report[8192], setting[PATH_MAX + 64];
    pm_test_make_temp_dir(dir, sizeof dir, "lifecycle-fd");
    snprintf(out, sizeof out, "%s/out.txt", dir);
    snprintf(stats, sizeof stats, "%s/stats.txt", dir);
    snprintf(setting, sizeof setting, "POOLMALLOC_STATS_FILE=%s", stats);
    pm_test_build_path(prog, sizeof prog, PROG);
    const char *argv[] = {prog, "fd-identity", out, NULL};
    const char *env[] = {"POOLMALLOC_STATS=1", setting, NULL};
    static pm_child c;
    pm_spawn spec = {.argv = argv, .env = env, .preload = true, .timeout_s = 30,
                     .setup = low_fd_limit};
    pm_test_spawn(&spec, &c);
    read_whole(out, content, sizeof content);
    read_whole(stats, report, sizeof report);
    pm_test_remove_tree(dir);
    pm_test_expect_exit0(&c, "fd-identity with POOLMALLOC_STATS_FILE");
    cr_expect_str_eq(content, program_output, "the program's file was written to:\n%.1500s",
                     content);
    cr_expect_neq(report[0], 0, "POOLMALLOC_STATS_FILE received no report; stderr:\n%.1500s",
                  c.err);
}

/* coreutils close stderr in an atexit handler; the warning about an unopenable file must
 * still appear, once. */
Test(lifecycle, unopenable_stats_file_warns_once_under_coreutils, .timeout = 60) {
    const char *env[] = {"POOLMALLOC_STATS=1", "POOLMALLOC_STATS_FILE=/nonexistent/dir/x",
                         NULL};
    const char *argv[] = {"ls", "/", NULL};
    static pm_child c;
    pm_spawn spec = {.argv = argv, .env = env, .preload = true, .timeout_s = 30};
    pm_test_spawn(&spec, &c);
    pm_test_expect_exit0(&c, "ls under an unopenable POOLMALLOC_STATS_FILE");
    int lines = 0;
    for (const char *p = c.err; (p = strstr(p, "POOLMALLOC_STATS_FILE")) != NULL; p++)
        lines++;
    cr_assert_eq(lines, 1, "expected one warning naming POOLMALLOC_STATS_FILE, got %d; "
                 "stderr:\n%.1500s", lines, c.err);
}

/* ---- 11: options when the first allocation precedes environ ------------------------------ */

static void early_option(const char *setting, const char *expected_in_stderr) {
    char prog[PATH_MAX];
    pm_test_build_path(prog, sizeof prog, "tests/integration/early-prog");
    const char *argv[] = {prog, NULL};
    const char *env[] = {setting, NULL};
    static pm_child c;
    /* first without the preload: is environ really unset at the first malloc here? */
    pm_spawn plain = {.argv = argv, .env = env, .timeout_s = 30};
    pm_test_spawn(&plain, &c);
    pm_test_expect_exit0(&c, "early-prog on the system allocator");
    if (strstr(c.out, "environ-null-at-first-malloc=1") == NULL)
        cr_skip_test("environ was already set at the IFUNC resolver here: %s", c.out);
    pm_spawn spec = {.argv = argv, .env = env, .preload = true, .timeout_s = 30};
    pm_test_spawn(&spec, &c);
    pm_test_expect_exit0(&c, "early-prog preloaded");
    cr_assert_not_null(strstr(c.err, expected_in_stderr),
                       "%s had no effect (no \"%s\" on stderr):\n%.1500s", setting,
                       expected_in_stderr, c.err);
}

Test(lifecycle, verbose_option_read_after_an_allocation_before_environ, .timeout = 60) {
    early_option("POOLMALLOC_VERBOSE=1", "POOLMALLOC_VERBOSE=1");
}

Test(lifecycle, stats_option_read_after_an_allocation_before_environ, .timeout = 60) {
    early_option("POOLMALLOC_STATS=1", "poolmalloc");
}

/* ---- 12: purge and retry under RLIMIT_AS -------------------------------------------------- */

Test(lifecycle, purge_and_retry_under_rlimit_as_small_blocks, .timeout = 90) {
    expect_case("RLIMIT_AS, 320 MB of small blocks freed", NULL, 60,
                (const char *[]){"rlimit", "0", NULL});
}

Test(lifecycle, purge_and_retry_under_rlimit_as_mixed_blocks, .timeout = 90) {
    expect_case("RLIMIT_AS, 120 MB large and 200 MB small freed", NULL, 60,
                (const char *[]){"rlimit", "120", NULL});
}

Test(lifecycle, purge_and_retry_under_rlimit_as_large_blocks, .timeout = 90) {
    expect_case("RLIMIT_AS, 320 MB of large blocks freed", NULL, 60,
                (const char *[]){"rlimit", "320", NULL});
}
