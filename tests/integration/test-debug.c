/*
 * test-debug.c: POOLMALLOC_DEBUG, POOLMALLOC_LEAKS and POOLMALLOC_PROF on unmodified programs.
 *
 * tests/integration/instr-victim runs under LD_PRELOAD=libpoolmalloc.so ($PM_PRELOAD_LIB) and
 * commits one bug, or allocates known amounts from known sites; the tests check the report
 * it produces (stderr or files). Then python3 and gcc run under each mode and must print
 * exactly what they print without poolmalloc.
 */
#include <criterion/criterion.h>

#include "test-util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- paths and files --------------------------------------------------------------------- */

static void self_dir(char *buf, size_t len) {
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    cr_assert_gt(n, 0);
    buf[n] = 0;
    *strrchr(buf, '/') = 0;
    size_t l = strlen(buf);
    if (l >= 6 && strcmp(buf + l - 6, "/.libs") == 0) /* libtool's wrapper */
        buf[l - 6] = 0;
}

static void preload_lib(char *out, size_t len) {
    const char *env = getenv("PM_PRELOAD_LIB");
    char dir[PATH_MAX];
    self_dir(dir, sizeof dir);
    if (env != NULL && *env)
        snprintf(out, len, "%s", env);
    else
        snprintf(out, len, "%s/../../.libs/libpoolmalloc.so", dir);
    cr_assert_eq(access(out, R_OK), 0, "%s not found (set PM_PRELOAD_LIB)", out);
}

static void victim_path(char *out, size_t len) {
    char dir[PATH_MAX];
    self_dir(dir, sizeof dir);
    snprintf(out, len, "%s/instr-victim", dir);
    cr_assert_eq(access(out, X_OK), 0, "%s not built", out);
}

static char temp_dir[PATH_MAX];

static void make_temp_dir(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(temp_dir, sizeof temp_dir, "%s/pm-debug-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(temp_dir));
}

static void remove_temp_dir(void) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", temp_dir);
    if (temp_dir[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", temp_dir);
}

/* The whole file, NUL-terminated (malloc'd), or NULL. */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

/* ---- running a program ------------------------------------------------------------------- */

/* Runs argv with the settings in env (NAME=value, NULL-terminated), stdout and stderr to the
 * given files, preloaded unless lib is NULL; returns the wait status. */
static int run(const char *const *argv, const char *const *env, const char *lib,
               const char *out_path, const char *err_path) {
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        pm_test_clear_env(); /* no POOLMALLOC_* or LD_PRELOAD from the caller */
        for (const char *const *e = env; e && *e; e++)
            putenv((char *)*e);
        if (lib != NULL)
            setenv("LD_PRELOAD", lib, 1);
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int r = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int in = open("/dev/null", O_RDONLY);
        if (o < 0 || r < 0 || in < 0 || dup2(o, 1) < 0 || dup2(r, 2) < 0 || dup2(in, 0) < 0)
            _exit(126);
        if (chdir(temp_dir) != 0)
            _exit(126);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* Runs the victim preloaded; returns its status, *err its stderr (malloc'd). */
static int run_victim(const char *what, const char *arg, const char *const *env, char **err) {
    char lib[PATH_MAX], victim[PATH_MAX], out[PATH_MAX + 16], errp[PATH_MAX + 16];
    preload_lib(lib, sizeof lib);
    victim_path(victim, sizeof victim);
    snprintf(out, sizeof out, "%s/stdout", temp_dir);
    snprintf(errp, sizeof errp, "%s/stderr", temp_dir);
    const char *argv[] = {victim, what, arg, NULL};
    int status = run(argv, env, lib, out, errp);
    *err = slurp(errp);
    cr_assert_not_null(*err);
    return status;
}

static void assert_aborted(int status, const char *err) {
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "expected an abort, got status %#x; stderr:\n%s", status, err);
    cr_assert_not_null(strstr(err, "poolmalloc: aborting"), "stderr:\n%s", err);
}

static void assert_has(const char *text, const char *needle) {
    cr_assert_not_null(strstr(text, needle), "no \"%s\" in:\n%s", needle, text);
}

TestSuite(debug, .init = make_temp_dir, .fini = remove_temp_dir, .timeout = 120);

/* ---- POOLMALLOC_DEBUG ---------------------------------------------------------------------- */

static const char *const debug_env[] = {"POOLMALLOC_DEBUG=1", NULL};

Test(debug, overflow_by_one_reported_at_free) {
    char *err;
    int status = run_victim("overflow", NULL, debug_env, &err);
    assert_aborted(status, err);
    assert_has(err, "buffer overflow detected by free(");
    assert_has(err, "of 24 bytes, serial ");
    assert_has(err, "forbidden byte at offset 24 (1 bytes past the end) was overwritten: 0x78");
    assert_has(err, "allocated by:\n    #0 0x");
    assert_has(err, " main+0x"); /* the caller, symbolised by dladdr */
    free(err);
}

Test(debug, overflow_of_large_block) {
    char *err;
    int status = run_victim("overflow-large", "3", debug_env, &err);
    assert_aborted(status, err);
    assert_has(err, "of 200000 bytes");
    assert_has(err, "at offset 200003 (4 bytes past the end)");
    free(err);
}

Test(debug, underflow_reported_at_free) {
    char *err;
    int status = run_victim("underflow", NULL, debug_env, &err);
    assert_aborted(status, err);
    assert_has(err, "buffer underflow detected by free(");
    assert_has(err, "forbidden byte 1 bytes before the block was overwritten: 0x78");
    free(err);
}

Test(debug, overflow_reported_at_realloc) {
    char *err;
    int status = run_victim("realloc-overflow", NULL, debug_env, &err);
    assert_aborted(status, err);
    assert_has(err, "buffer overflow detected by realloc(");
    free(err);
}

Test(debug, write_after_free_at_several_offsets) {
    static const char *const offsets[] = {"0", "8", "17", "63"};
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        for (int churn = 0; churn < 2; churn++) {
            char *err, expect[96];
            int status = run_victim(churn ? "write-after-free-churn" : "write-after-free",
                                    offsets[i], debug_env, &err);
            assert_aborted(status, err);
            /* without churn the exit sweep finds it, with churn the block leaving quarantine */
            assert_has(err, churn ? "write after free detected by the quarantine (block leaving"
                                  : "write after free detected by the quarantine sweep");
            snprintf(expect, sizeof expect, "byte at offset %s was written after the block was "
                     "freed: 0x78, expected 0xdd", offsets[i]);
            assert_has(err, expect);
            assert_has(err, "freed by:\n    #0 0x");
            free(err);
        }
    }
}

Test(debug, double_free) {
    char *err;
    int status = run_victim("double-free", NULL, debug_env, &err);
    assert_aborted(status, err);
    assert_has(err, "double free (or use of a freed block) detected by free(");
    assert_has(err, "of 48 bytes");
    assert_has(err, "freed by:");
    free(err);
}

Test(debug, aligned_blocks_pass_clean) {
    char *err;
    int status = run_victim("aligned", NULL, debug_env, &err);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x; stderr:\n%s", status,
              err);
    cr_assert_eq(err[0], 0, "unexpected report:\n%s", err);
    free(err);
}

/* ---- POOLMALLOC_LEAKS ------------------------------------------------------------------------ */

/* The text report's line for a site: "<bytes> bytes in <n> blocks allocated from:" followed,
 * within the stack, by "site_x+". */
static void assert_leak(const char *report, const char *site, const char *line) {
    const char *at = strstr(report, line);
    cr_assert_not_null(at, "no \"%s\" in:\n%s", line, report);
    const char *next = strstr(strchr(at, '\n'), " blocks allocated from:");
    const char *s = strstr(at, site);
    cr_assert(s != NULL && (next == NULL || s < next), "\"%s\" not under \"%s\" in:\n%s", site,
              line, report);
}

Test(debug, leaks_of_known_sites) {
    static const char *const env[] = {"POOLMALLOC_LEAKS=1", NULL};
    char *err;
    int status = run_victim("leaks", NULL, env, &err);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "stderr:\n%s", err);
    assert_has(err, "poolmalloc: leak report: ");
    assert_leak(err, "site_b+", "3000 bytes in 3 blocks allocated from:");
    assert_leak(err, "site_a+", "700 bytes in 7 blocks allocated from:");
    /* largest first */
    cr_assert_lt(strstr(err, "3000 bytes in 3"), strstr(err, "700 bytes in 7"));
    free(err);
}

Test(debug, leaks_as_json) {
    char file_env[PATH_MAX + 32], path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/leaks.json", temp_dir);
    snprintf(file_env, sizeof file_env, "POOLMALLOC_LEAKS_FILE=%s", path);
    const char *const env[] = {"POOLMALLOC_LEAKS=1", file_env, NULL};
    char *err;
    int status = run_victim("leaks", NULL, env, &err);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "stderr:\n%s", err);
    char *json = slurp(path);
    cr_assert_not_null(json, "%s not written", path);
    assert_has(json, "{\"pid\":");
    assert_has(json, "{\"bytes\":3000,\"blocks\":3,\"frames\":[{\"pc\":\"0x");
    assert_has(json, "{\"bytes\":700,\"blocks\":7,\"frames\":[{\"pc\":\"0x");
    assert_has(json, "\"function\":\"site_a\"");
    cr_assert_eq(json[strlen(json) - 2], '}', "not closed: %s", json);
    free(json);
    free(err);
}

/* ---- POOLMALLOC_PROF ----------------------------------------------------------------------- */

/* Sum of the values of the folded lines whose leaf frame is site. */
static double folded_bytes(const char *folded, const char *site) {
    double sum = 0;
    char pattern[64];
    snprintf(pattern, sizeof pattern, ";%s ", site);
    for (const char *s = strstr(folded, pattern); s; s = strstr(s + 1, pattern))
        sum += strtod(s + strlen(pattern), NULL);
    return sum;
}

static void assert_profile_ratio(const char *heap_path) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s.live.folded", heap_path);
    char *folded = slurp(path);
    cr_assert_not_null(folded, "%s not written", path);
    double a = folded_bytes(folded, "site_a"), b = folded_bytes(folded, "site_b");
    cr_assert_gt(b, 0, "no site_b in:\n%s", folded);
    cr_assert(a / b > 2.7 && a / b < 3.3, "site_a/site_b = %.3f, expected 3 within 10%%:\n%s",
              a / b, folded);
    /* 90000 blocks of 192 bytes live at site_a: the estimate within 10% */
    cr_assert(a > 0.9 * 90000 * 192 && a < 1.1 * 90000 * 192, "site_a %.0f bytes", a);
    free(folded);
    char *heap = slurp(heap_path);
    cr_assert_not_null(heap);
    cr_assert_eq(strncmp(heap, "heap profile: ", 14), 0, "%.200s", heap);
    assert_has(heap, "] @ heap_v2/2048\n");
    assert_has(heap, "\nMAPPED_LIBRARIES:\n");
    free(heap);
    snprintf(path, sizeof path, "%s.alloc.folded", heap_path);
    char *alloc = slurp(path);
    cr_assert_not_null(alloc);
    cr_assert_gt(folded_bytes(alloc, "site_a"), 0);
    free(alloc);
}

/* Runs the victim's `what` under POOLMALLOC_PROF (a sample per 2 KiB), its exit profile in
 * temp_dir/name; the profile's path goes to path. */
static void run_profiled(const char *what, const char *name, char *path, size_t len) {
    char file_env[PATH_MAX + 64];
    snprintf(path, len, "%s/%s", temp_dir, name);
    snprintf(file_env, sizeof file_env, "POOLMALLOC_PROF_FILE=%s", path);
    const char *const env[] = {"POOLMALLOC_PROF=1", "POOLMALLOC_PROF_SAMPLE=2048", file_env,
                               NULL};
    char *err;
    int status = run_victim(what, NULL, env, &err);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status %#x, stderr:\n%s",
              what, status, err);
    free(err);
}

Test(debug, profile_shows_known_ratio) {
    char path[PATH_MAX + 32];
    run_profiled("profile", "prof.heap", path, sizeof path);
    assert_profile_ratio(path);
}

Test(debug, profile_by_pm_prof_dump) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/dumped.heap", temp_dir);
    const char *const env[] = {"POOLMALLOC_PROF=1", "POOLMALLOC_PROF_SAMPLE=2048",
                               "POOLMALLOC_PROF_FILE=exit.heap", NULL};
    char *err;
    int status = run_victim("prof-dump", path, env, &err);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x, stderr:\n%s", status,
              err);
    assert_profile_ratio(path);
    free(err);
}

Test(debug, profile_on_signal) {
    const char *const env[] = {"POOLMALLOC_PROF=1", "POOLMALLOC_PROF_SAMPLE=2048",
                               "POOLMALLOC_PROF_FILE=sig.heap", "POOLMALLOC_PROF_SIGNAL=12",
                               NULL};
    char *err;
    int status = run_victim("prof-signal", NULL, env, &err);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x, stderr:\n%s", status,
              err);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/sig.heap.1", temp_dir);
    assert_profile_ratio(path); /* the first profile() only: written at the signal */
    free(err);
}

Test(debug, profile_on_signal_while_idle) {
    const char *const env[] = {"POOLMALLOC_PROF=1", "POOLMALLOC_PROF_SAMPLE=2048",
                               "POOLMALLOC_PROF_FILE=sig.heap", "POOLMALLOC_PROF_SIGNAL=12",
                               NULL};
    char *err;
    int status = run_victim("prof-signal-idle", NULL, env, &err);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "status %#x (5: no profile within 10 s of the signal), stderr:\n%s", status, err);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/sig.heap.1", temp_dir);
    assert_profile_ratio(path);
    free(err);
}

/* Freed sampled blocks leave the live profile, whichever thread frees them. */
static void assert_freed_leave_live_profile(const char *what) {
    char path[PATH_MAX + 32];
    run_profiled(what, "freed.heap", path, sizeof path);
    snprintf(path, sizeof path, "%s/freed.heap.live.folded", temp_dir);
    char *live = slurp(path);
    cr_assert_not_null(live, "%s not written", path);
    double live_a = folded_bytes(live, "site_a"), live_b = folded_bytes(live, "site_b");
    /* 30000 blocks of 192 bytes live at site_b: the estimate within 10% */
    cr_assert(live_b > 0.9 * 30000 * 192 && live_b < 1.1 * 30000 * 192, "site_b %.0f:\n%s",
              live_b, live);
    cr_assert(live_a == 0, "freed blocks of site_a still live (%.0f bytes):\n%s", live_a, live);
    free(live);
    snprintf(path, sizeof path, "%s/freed.heap.alloc.folded", temp_dir);
    char *alloc = slurp(path);
    cr_assert_not_null(alloc);
    double a = folded_bytes(alloc, "site_a"), b = folded_bytes(alloc, "site_b");
    cr_assert(b > 0 && a / b > 2.7 && a / b < 3.3, "allocated site_a/site_b = %.3f:\n%s", a / b,
              alloc);
    free(alloc);
}

Test(debug, profile_forgets_freed_blocks) { assert_freed_leave_live_profile("profile-freed"); }

Test(debug, profile_forgets_blocks_freed_by_another_thread) {
    assert_freed_leave_live_profile("profile-freed-remote");
}

/* pm_owns: 1 for a block's start, 0 inside it or outside the heap, in every mode (the header
 * modes hand out pointers past a header). */
Test(debug, pm_owns_in_every_mode) {
    static const char *const modes[][3] = {
        {"POOLMALLOC_DEBUG=1", NULL},
        {"POOLMALLOC_LEAKS=1", "POOLMALLOC_LEAKS_FILE=leaks.txt", NULL},
        {"POOLMALLOC_PROF=1", "POOLMALLOC_PROF_SAMPLE=64", NULL},
        {"POOLMALLOC_DEBUG=1", "POOLMALLOC_PROF=1", NULL},
    };
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        char *err;
        int status = run_victim("owns", NULL, modes[m], &err);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "under %s: status %#x\n%s",
                  modes[m][0], status, err);
        free(err);
    }
}

/* ---- flame graphs ------------------------------------------------------------------------------ */

static bool on_path(const char *tool);

/* scripts/heapprof-flamegraph draws the profile as an SVG that an XML parser reads, with a
 * frame for each site and widths in their ratio. */
Test(debug, flamegraph_svg_well_formed) {
    if (!on_path("python3"))
        cr_skip_test("python3 is not installed");
    char path[PATH_MAX + 32], svg[PATH_MAX + 32], cmd[4 * PATH_MAX];
    run_profiled("profile", "fg.heap", path, sizeof path);
    char dir[PATH_MAX];
    self_dir(dir, sizeof dir);
    snprintf(svg, sizeof svg, "%s/fg.svg", temp_dir);
    snprintf(cmd, sizeof cmd, "'%s/../../scripts/heapprof-flamegraph' '%s' '%s' >/dev/null",
             dir, path, svg);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
    /* Parsed as XML; the widths of site_a's and site_b's frames in the ratio 3. */
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import sys, xml.etree.ElementTree as E\n"
             "ns = \"{http://www.w3.org/2000/svg}\"\n"
             "root = E.parse(sys.argv[1]).getroot()\n"
             "assert root.tag == ns + \"svg\", root.tag\n"
             "w = {}\n"
             "for g in root.iter(ns + \"g\"):\n"
             "    t, r = g.find(ns + \"title\"), g.find(ns + \"rect\")\n"
             "    name = t.text.split(\" (\")[0] if t is not None else \"\"\n"
             "    if r is not None and name in (\"site_a\", \"site_b\"):\n"
             "        w[name] = w.get(name, 0) + float(r.get(\"width\"))\n"
             "ratio = w[\"site_a\"] / w[\"site_b\"]\n"
             "assert 2.7 < ratio < 3.3, (w, ratio)\n"
             "' '%s'", svg);
    cr_assert_eq(system(cmd), 0, "the SVG does not parse, or lacks the frames: %s", svg);
}

/* ---- real programs ---------------------------------------------------------------------------- */

static bool on_path(const char *tool) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

/* argv runs plainly, then preloaded under each mode: same exit status, same stdout. */
static void same_output_in_every_mode(const char *const *argv) {
    char lib[PATH_MAX], plain[PATH_MAX + 16], out[PATH_MAX + 16], err[PATH_MAX + 16];
    preload_lib(lib, sizeof lib);
    snprintf(plain, sizeof plain, "%s/plain.out", temp_dir);
    snprintf(out, sizeof out, "%s/mode.out", temp_dir);
    snprintf(err, sizeof err, "%s/mode.err", temp_dir);
    int plain_status = run(argv, NULL, NULL, plain, err);
    cr_assert(WIFEXITED(plain_status) && WEXITSTATUS(plain_status) == 0);
    char *expected = slurp(plain);
    static const char *const modes[][4] = {
        {"POOLMALLOC_DEBUG=1", NULL},
        {"POOLMALLOC_LEAKS=1", "POOLMALLOC_LEAKS_FILE=leaks.%p.txt", NULL},
        {"POOLMALLOC_PROF=1", "POOLMALLOC_PROF_FILE=prof.%p.heap", NULL},
        {"POOLMALLOC_DEBUG=1", "POOLMALLOC_LEAKS=1", "POOLMALLOC_PROF=1", NULL},
    };
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        int status = run(argv, modes[m], lib, out, err);
        char *got = slurp(out), *errors = slurp(err);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s under %s: status %#x\n%s",
                  argv[0], modes[m][0], status, errors);
        cr_assert_str_eq(got, expected, "%s under %s changed its output", argv[0], modes[m][0]);
        free(got);
        free(errors);
    }
    free(expected);
}

Test(debug, python3_unchanged) {
    if (!on_path("python3"))
        cr_skip_test("python3 is not installed");
    const char *const argv[] = {"python3", "-c",
                                "import json, collections\n"
                                "d = collections.Counter(str(i % 97) for i in range(200000))\n"
                                "print(json.dumps(sorted(d.items())[:20]))\n"
                                "print(sum(len(repr([i] * 20)) for i in range(20000)))\n",
                                NULL};
    same_output_in_every_mode(argv);
}

Test(debug, gcc_unchanged) {
    if (!on_path("gcc"))
        cr_skip_test("gcc is not installed");
    char src[PATH_MAX + 16];
    snprintf(src, sizeof src, "%s/tiny.c", temp_dir);
    FILE *f = fopen(src, "w");
    cr_assert_not_null(f);
    fputs("#include <stdio.h>\nstruct s { int a[40]; };\n"
          "int f(struct s *x) { int t = 0; for (int i = 0; i < 40; i++) t += x->a[i]; return t; }\n"
          "int main(void) { struct s x = {{1}}; printf(\"%d\\n\", f(&x)); return 0; }\n", f);
    fclose(f);
    /* the assembly on stdout: gcc, cc1 and their allocations all preloaded */
    const char *const argv[] = {"gcc", "-O2", "-S", "-o", "-", src, NULL};
    same_output_in_every_mode(argv);
}
