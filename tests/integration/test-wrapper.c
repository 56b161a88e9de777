/*
 * test-wrapper: the face of poolmalloc a newcomer meets: scripts/poolmalloc (the wrapper), its
 * man pages, and the README's object example. The wrapper must never let a command run silently without poolmalloc: a bad --set,
 * a missing command, a static or setuid program each get one line and a non-zero exit. It
 * must also find its library wherever the tree was installed (DESTDIR, or moved afterwards).
 * test-options covers the wrapper's basic flags; this file covers the failure cases and the
 * installed tree.
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define OUT_MAX 65536

static const char *builddir(void) {
    const char *top = getenv("PM_TOP_BUILDDIR");
    if (top == NULL)
        cr_skip_test("PM_TOP_BUILDDIR is not set (run through make check)");
    return top;
}

static const char *wrapper(void) {
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/scripts/poolmalloc", builddir());
    if (access(path, X_OK) != 0)
        cr_skip_test("%s is not built", path);
    return path;
}

/* Runs a shell command with stdout and stderr together in out; returns its exit code (-1 when
 * it did not exit normally). The user's own POOLMALLOC_* settings are not ours to test. */
static int shell(char *out, const char *fmt, ...) {
    char cmd[4 * PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[sizeof cmd + 64];
    snprintf(full, sizeof full, "( %s ) </dev/null 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, OUT_MAX - 1, p);
    out[n] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int count_lines(const char *text) {
    int n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

static void make_tmpdir(char *dir, size_t size, const char *name) {
    snprintf(dir, size, "/tmp/pm-test-wrapper-%s-%ld", name, (long)getpid());
    char out[OUT_MAX];
    cr_assert_eq(shell(out, "rm -rf '%s' && mkdir -p '%s'", dir, dir), 0, "%s", out);
}

static void remove_tmpdir(const char *dir) {
    char out[OUT_MAX];
    shell(out, "rm -rf '%s'", dir);
}

Test(wrapper_failures, unknown_option_name_exits_2) {
    static char out[OUT_MAX];
    int rc = shell(out, "'%s' --set FOO=1 sh -c 'echo command-ran'", wrapper());
    cr_assert_eq(rc, 2, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "POOLMALLOC_FOO") != NULL, "names the option: %s", out);
    cr_assert(strstr(out, "command-ran") == NULL, "the command must not run: %s", out);
}

Test(wrapper_failures, bad_value_exits_2_naming_what_is_accepted) {
    static char out[OUT_MAX];
    int rc = shell(out, "'%s' --set mmap_threshold=12Q sh -c 'echo command-ran'", wrapper());
    cr_assert_eq(rc, 2, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "POOLMALLOC_MMAP_THRESHOLD='12Q'") != NULL, "%s", out);
    cr_assert(strstr(out, "1K to 128K") != NULL, "says what is accepted: %s", out);
    cr_assert(strstr(out, "command-ran") == NULL, "%s", out);
}

Test(wrapper_failures, lenient_warns_and_runs) {
    static char out[OUT_MAX];
    int rc = shell(out, "'%s' --lenient --set mmap_threshold=12Q sh -c 'echo command-ran'",
                   wrapper());
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "command-ran") != NULL, "%s", out);
    cr_assert(strstr(out, "12Q") != NULL, "the library still warns: %s", out);
}

Test(wrapper_failures, good_settings_pass_the_check_without_a_stray_report) {
    static char out[OUT_MAX];
    int rc = shell(out, "'%s' --stats --set mmap_threshold=64K bash -c 'echo command-ran'",
                   wrapper());
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "command-ran") != NULL, "%s", out);
    const char *first = strstr(out, "poolmalloc statistics, pid ");
    cr_assert_not_null(first, "%s", out);
    cr_assert_null(strstr(first + 1, "poolmalloc statistics, pid "),
                   "one report (the check run's goes nowhere): %s", out);
}

Test(wrapper_failures, missing_command_gets_one_line_and_127) {
    static char out[OUT_MAX];
    int rc = shell(out, "'%s' pm-no-such-command-here arg", wrapper());
    cr_assert_eq(rc, 127, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "pm-no-such-command-here: command not found") != NULL, "%s", out);
    cr_assert_eq(count_lines(out), 1, "one line: %s", out);
}

/* The wrapper refuses dir/program with exit 126 and one line containing why; removes dir. */
static void expect_refused(const char *dir, const char *program, const char *why) {
    static char out[OUT_MAX];
    int rc = shell(out, "'%s' '%s/%s'", wrapper(), dir, program);
    remove_tmpdir(dir);
    cr_assert_eq(rc, 126, "exit %d: %s", rc, out);
    cr_assert(strstr(out, why) != NULL, "%s", out);
    cr_assert_eq(count_lines(out), 1, "one line: %s", out);
}

Test(wrapper_failures, static_program_is_refused) {
    static char out[OUT_MAX];
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir, "static");
    if (shell(out, "cd '%s' && printf 'int main(void){return 0;}\\n' >s.c && "
                   "${CC:-cc} -static s.c -o s-static", dir) != 0) {
        remove_tmpdir(dir);
        cr_skip_test("cannot link a static program here (no libc.a?): %s", out);
    }
    expect_refused(dir, "s-static", "statically linked");
}

Test(wrapper_failures, setuid_program_is_refused) {
    static char out[OUT_MAX];
    char dir[PATH_MAX];
    if (geteuid() != 0)
        cr_skip_test("needs root to make a set-user-ID copy of true owned by someone else");
    make_tmpdir(dir, sizeof dir, "setuid");
    cr_assert_eq(shell(out, "cp /bin/true '%s/suid-true' && chown 65534 "
                            "'%s/suid-true' && chmod 4755 '%s/suid-true'", dir, dir, dir), 0,
                 "%s", out);
    expect_refused(dir, "suid-true", "set-user-ID");
}

Test(wrapper_failures, help_works_without_a_library) {
    static char out[OUT_MAX];
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir, "nolib");
    cr_assert_eq(shell(out, "cp '%s' '%s/poolmalloc'", wrapper(), dir), 0, "%s", out);
    int rc = shell(out, "'%s/poolmalloc' --help", dir);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "usage: poolmalloc ") != NULL, "%s", out);
    /* Running a command without a library is an error that says what to do. */
    rc = shell(out, "'%s/poolmalloc' --lib '%s/none.so' true", dir, dir);
    remove_tmpdir(dir);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "no such file") != NULL, "%s", out);
}

/* The wrapper of an installed tree at root/bin runs commands on root/lib's library, lists the
 * library's options in --help, and the man pages are there and list the same options. */
static void check_installed_tree(const char *root) {
    static char out[OUT_MAX];
    int rc = shell(out, "'%s/bin/poolmalloc' --stats bash -c 'echo \"preload=$LD_PRELOAD\"'",
                   root);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "preload=%s/bin/../lib", root);
    cr_assert(strstr(out, want) != NULL, "the installed library under %s: %s", root, out);
    cr_assert(strstr(out, "poolmalloc statistics, pid ") != NULL, "%s", out);
    rc = shell(out, "'%s/bin/poolmalloc' --help", root);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "POOLMALLOC_MMAP_THRESHOLD") != NULL, "%s", out);
    rc = shell(out, "grep -c POOLMALLOC_MMAP_THRESHOLD '%s/share/man/man1/poolmalloc.1' "
                    "'%s/share/man/man3/poolmalloc.3'", root, root);
    cr_assert_eq(rc, 0, "both man pages list the options: %s", out);
}

Test(wrapper_install, destdir_and_moved_installs_find_their_library, .timeout = 300) {
    static char out[OUT_MAX];
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir, "install");
    /* A make of its own: not the jobserver of the `make check` that runs this test. */
    int rc = shell(out, "cd '%s' && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install "
                        "prefix=/opt/pm DESTDIR='%s/stage' >/dev/null", builddir(), dir);
    cr_assert_eq(rc, 0, "make install failed: %s", out);
    char root[PATH_MAX + 32];
    snprintf(root, sizeof root, "%s/stage/opt/pm", dir);
    check_installed_tree(root);
    cr_assert_eq(shell(out, "mv '%s' '%s/moved'", root, dir), 0, "%s", out);
    snprintf(root, sizeof root, "%s/moved", dir);
    check_installed_tree(root);
    remove_tmpdir(dir);
}

/* The README's C example (its only ```c block) compiles with -Wall -Wextra -Werror against the
 * built library and prints what its comment promises. */
Test(readme, object_example_compiles_cleanly_and_runs, .timeout = 120) {
    static char out[OUT_MAX];
    const char *src = getenv("PM_TOP_SRCDIR");
    if (src == NULL)
        cr_skip_test("PM_TOP_SRCDIR is not set (run through make check)");
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir, "readme");
    int rc = shell(out, "awk '/^```c$/ {on = 1; next} /^```$/ {on = 0} on' '%s/README.md' "
                        "> '%s/example.c' && test -s '%s/example.c' && "
                        "${CC:-cc} -Wall -Wextra -Werror -I'%s/src' '%s/example.c' "
                        "-L'%s/.libs' -lpoolmalloc -o '%s/example' && "
                        "LD_LIBRARY_PATH='%s/.libs' '%s/example'",
                   src, dir, dir, src, dir, builddir(), dir, builddir(), dir);
    remove_tmpdir(dir);
    cr_assert_eq(rc, 0, "the README example failed: %s", out);
    cr_assert_str_eq(out, "collected 2 objects\n");
}
