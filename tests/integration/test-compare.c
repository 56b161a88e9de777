/*
 * test-compare: a smoke test of scripts/compare, the comparison tool. It runs the tool on the
 * built tree with tiny inputs (--quick, one run, glibc and poolmalloc) and checks what it
 * writes: the CSV and JSON hold a sane measurement for each allocator, the runs under
 * poolmalloc really were served by libpoolmalloc.so, the report has the tables, and bad input
 * or a failing command is reported as such. No timing is asserted: speed is for benchmarks.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define OUTPUT_MAX (1 << 20)

static const char *top_srcdir(void) {
    const char *dir = getenv("PM_TOP_SRCDIR");
    return dir != NULL ? dir : ".";
}

/* A fresh results folder for one test (each test runs in its own process). */
static void make_outdir(char *out, size_t size, const char *name) {
    snprintf(out, size, "/tmp/pm-test-compare-%s-%ld", name, (long)getpid());
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    cr_assert_eq(system(cmd), 0);
}

static void remove_outdir(const char *out) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    system(cmd);
}

/* Runs scripts/<tool> with fixed flags then args (shell fragments); returns its exit status
 * and its stdout and stderr together in output. */
static int run_tool(const char *tool, const char *fixed, const char *args, char *output,
                    size_t size) {
    /* scripts/compare would install python3 itself (apt-get): not something a test does. */
    if (system("command -v python3 >/dev/null 2>&1") != 0)
        cr_skip_test("python3 is not installed (scripts/bootstrap installs it)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/scripts/%s' %s %s </dev/null 2>&1", top_srcdir(), tool, fixed,
             args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen: %s", strerror(errno));
    size_t n = fread(output, 1, size - 1, p);
    output[n] = 0;
    int status = pclose(p);
    cr_assert(WIFEXITED(status), "scripts/%s did not exit normally: %s", tool, output);
    return WEXITSTATUS(status);
}

/* scripts/compare on what is built, installing nothing. */
static int run_compare(const char *args, char *output, size_t size) {
    return run_tool("compare", "--no-build --no-install --timeout 60", args, output, size);
}

static char *read_file(const char *dir, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s was not written", path);
    char *text = calloc(1, OUTPUT_MAX);
    cr_assert_not_null(text);
    size_t n = fread(text, 1, OUTPUT_MAX - 1, f);
    text[n] = 0;
    fclose(f);
    return text;
}

/* ---- a minimal CSV reader: the tool's rows have no quoted commas unless a run failed ---- */

/* Splits a line at commas in place, keeping empty fields (strtok would skip them). */
static int split_csv_line(char *line, char **fields, int max) {
    int n = 0;
    char *field;
    while ((field = strsep(&line, ",")) != NULL && n < max)
        fields[n++] = field;
    return n;
}

static int column(char **header, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(header[i], name) == 0)
            return i;
    cr_assert_fail("column %s missing from results.csv", name);
    return -1;
}

typedef struct csv_row {
    char allocator[32], workload[32];
    double wall, cpu, maxrss;
    int ok_runs;
} csv_row;

/* Reads results.csv into rows; returns how many. */
static int read_results(const char *dir, csv_row *rows, int max) {
    char *text = read_file(dir, "results.csv");
    char *save = NULL;
    char *line = strtok_r(text, "\r\n", &save);
    cr_assert_not_null(line, "results.csv is empty");
    char header_copy[2048];
    snprintf(header_copy, sizeof header_copy, "%s", line);
    char *header[64];
    int ncols = split_csv_line(header_copy, header, 64);
    int c_alloc = column(header, ncols, "allocator"), c_wl = column(header, ncols, "workload");
    int c_wall = column(header, ncols, "wall_median_s"), c_cpu = column(header, ncols, "cpu_median_s");
    int c_rss = column(header, ncols, "maxrss_median_kib"), c_ok = column(header, ncols, "ok_runs");
    int n = 0;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL && n < max) {
        char *f[64];
        int got = split_csv_line(line, f, 64);
        cr_assert_geq(got, c_rss + 1, "short row in results.csv: %s", line);
        snprintf(rows[n].allocator, sizeof rows[n].allocator, "%s", f[c_alloc]);
        snprintf(rows[n].workload, sizeof rows[n].workload, "%s", f[c_wl]);
        rows[n].wall = strtod(f[c_wall], NULL);
        rows[n].cpu = strtod(f[c_cpu], NULL);
        rows[n].maxrss = strtod(f[c_rss], NULL);
        rows[n].ok_runs = atoi(f[c_ok]);
        n++;
    }
    free(text);
    return n;
}

Test(compare, quick_churn_writes_sane_csv_json_and_report, .timeout = 120) {
    char out[PATH_MAX], args[PATH_MAX + 256];
    make_outdir(out, sizeof out, "churn");
    snprintf(args, sizeof args, "--quick --runs 1 --allocators glibc,poolmalloc --workloads churn "
             "--out '%s'", out);
    char *output = malloc(OUTPUT_MAX);
    int status = run_compare(args, output, OUTPUT_MAX);
    cr_assert_eq(status, 0, "scripts/compare failed:\n%s", output);

    char expect[PATH_MAX + 16];
    snprintf(expect, sizeof expect, "results: %s", out);
    cr_assert_not_null(strstr(output, expect), "the results folder is not printed:\n%s", output);

    csv_row rows[8];
    int n = read_results(out, rows, 8);
    cr_assert_eq(n, 2, "expected a row for glibc and one for poolmalloc, got %d", n);
    bool seen_glibc = false, seen_pool = false;
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(rows[i].workload, "churn");
        cr_assert_eq(rows[i].ok_runs, 1, "%s: the run failed:\n%s", rows[i].allocator, output);
        cr_assert(rows[i].wall > 0.0 && rows[i].wall < 60.0, "%s: wall %f s", rows[i].allocator,
                  rows[i].wall);
        cr_assert(rows[i].cpu > 0.0 && rows[i].cpu < 120.0, "%s: cpu %f s", rows[i].allocator,
                  rows[i].cpu);
        /* a process that ran at all has resident memory, and churn's working set is small */
        cr_assert(rows[i].maxrss > 500.0 && rows[i].maxrss < 1024.0 * 1024.0,
                  "%s: peak RSS %f KiB", rows[i].allocator, rows[i].maxrss);
        seen_glibc |= strcmp(rows[i].allocator, "glibc") == 0;
        seen_pool |= strcmp(rows[i].allocator, "poolmalloc") == 0;
    }
    cr_assert(seen_glibc && seen_pool);

    /* The JSON records who served malloc in each run: poolmalloc's runs must name it. */
    char *json = read_file(out, "results.json");
    cr_assert_not_null(strstr(json, "\"malloc_from\": \"/"), "no malloc_from in results.json");
    cr_assert_not_null(strstr(json, "libpoolmalloc.so"), "poolmalloc was not preloaded");
    cr_assert_not_null(strstr(json, "\"wall_s_vs_glibc\": 1.0"), "no ratio to glibc");
    free(json);

    char *report = read_file(out, "report.md");
    cr_assert_not_null(strstr(report, "## churn"), "no churn table in the report");
    cr_assert_not_null(strstr(report, "| poolmalloc "), "no poolmalloc row in the report");
    free(report);

    char *runs = read_file(out, "runs.csv");
    cr_assert_not_null(strstr(runs, "churn,,glibc,1,0,"), "runs.csv lacks the glibc run:\n%s",
                       runs);
    free(runs);

    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        char *png = read_file(out, "chart.png");
        cr_assert_eq(memcmp(png, "\x89PNG", 4), 0, "chart.png is not a PNG");
        free(png);
        /* every bar carries its value, and the title says how noisy the runs were */
        char *gp = read_file(out, "chart.gp");
        cr_assert_not_null(strstr(gp, "with labels"), "no value labels:\n%s", gp);
        cr_assert_not_null(strstr(gp, "Noise: one run per cell"), "no noise note:\n%s", gp);
        free(gp);
    }
    free(output);
    remove_outdir(out);
}

Test(compare, user_command_is_measured_per_run, .timeout = 60) {
    char out[PATH_MAX], args[PATH_MAX + 256];
    make_outdir(out, sizeof out, "user");
    snprintf(args, sizeof args, "--runs 2 --allocators glibc,poolmalloc --no-chart --out '%s' "
             "-- /bin/sh -c 'echo hello'", out);
    char *output = malloc(OUTPUT_MAX);
    int status = run_compare(args, output, OUTPUT_MAX);
    cr_assert_eq(status, 0, "scripts/compare failed:\n%s", output);
    csv_row rows[8];
    int n = read_results(out, rows, 8);
    cr_assert_eq(n, 2);
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(rows[i].workload, "sh");
        cr_assert_eq(rows[i].ok_runs, 2, "%s: %d of 2 runs succeeded", rows[i].allocator,
                     rows[i].ok_runs);
    }
    /* the user's results, without the project's own targets */
    char *report = read_file(out, "report.md");
    cr_assert_not_null(strstr(report, "## sh: your command"), "%s", report);
    cr_assert_null(strstr(report, "target"), "a user's report lists project targets:\n%s", report);
    cr_assert_null(strstr(report, "issue"), "%s", report);
    free(report);
    free(output);
    remove_outdir(out);
}

Test(compare, failing_command_is_reported, .timeout = 60) {
    char out[PATH_MAX], args[PATH_MAX + 256];
    make_outdir(out, sizeof out, "fail");
    snprintf(args, sizeof args, "--runs 1 --allocators glibc --no-chart --out '%s' -- "
             "/bin/sh -c 'echo broken >&2; exit 7'", out);
    char *output = malloc(OUTPUT_MAX);
    int status = run_compare(args, output, OUTPUT_MAX);
    cr_assert_eq(status, 1, "a failing command must make the tool fail:\n%s", output);
    cr_assert_not_null(strstr(output, "exit status 7: broken"), "no reason given:\n%s", output);
    free(output);
    remove_outdir(out);
}

Test(compare, unknown_names_are_refused, .timeout = 60) {
    char *output = malloc(OUTPUT_MAX);
    int status = run_compare("--allocators glibc,nosuchmalloc --out /tmp/pm-test-compare-never",
                             output, OUTPUT_MAX);
    cr_assert_eq(status, 2);
    cr_assert_not_null(strstr(output, "unknown allocator 'nosuchmalloc'"), "%s", output);
    status = run_compare("--workloads churn,nosuchwork --out /tmp/pm-test-compare-never", output,
                         OUTPUT_MAX);
    cr_assert_eq(status, 2);
    cr_assert_not_null(strstr(output, "unknown workload 'nosuchwork'"), "%s", output);
    status = run_compare("--runs 0", output, OUTPUT_MAX);
    cr_assert_eq(status, 2);
    cr_assert_not_null(strstr(output, "--runs must be from 1 to 100"), "%s", output);
    struct stat st;
    cr_assert_neq(stat("/tmp/pm-test-compare-never", &st), 0, "a refused run wrote results");
    free(output);
}

Test(compare, instructions_per_pair_are_counted, .timeout = 120) {
    if (system("command -v valgrind >/dev/null 2>&1") != 0)
        cr_skip_test("valgrind is not installed");
    char out[PATH_MAX], args[PATH_MAX + 256];
    make_outdir(out, sizeof out, "instr");
    snprintf(args, sizeof args, "--instructions --quick --allocators glibc,poolmalloc --out '%s'",
             out);
    char *output = malloc(OUTPUT_MAX);
    int status = run_compare(args, output, OUTPUT_MAX);
    cr_assert_eq(status, 0, "scripts/compare --instructions failed:\n%s", output);
    char *csv = read_file(out, "instructions.csv");
    int seen = 0;
    char *save = NULL;
    for (char *line = strtok_r(csv, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        char *f[16];
        int n = split_csv_line(line, f, 16);
        if (n < 7 || strcmp(f[0], "allocator") == 0)
            continue;
        double per_pair = strtod(f[6], NULL);
        /* a malloc+free pair costs some instructions, and no sane allocator needs thousands */
        cr_assert(per_pair > 2.0 && per_pair < 1000.0, "%s: %f instructions per pair", f[0],
                  per_pair);
        seen++;
    }
    cr_assert_eq(seen, 2, "expected counts for glibc and poolmalloc:\n%s", output);
    free(csv);
    free(output);
    remove_outdir(out);
}

Test(compare, bad_out_is_refused_before_building, .timeout = 60) {
    char *output = malloc(OUTPUT_MAX);
    char file[PATH_MAX];
    snprintf(file, sizeof file, "/tmp/pm-test-compare-file-%ld", (long)getpid());
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    char args[PATH_MAX + 64];
    snprintf(args, sizeof args, "--workloads churn --out '%s'", file);
    /* no --no-build: the check must come before the build starts */
    int status = run_tool("compare", "--no-install", args, output, OUTPUT_MAX);
    unlink(file);
    cr_assert_eq(status, 2, "%s", output);
    cr_assert_not_null(strstr(output, "exists and is not a folder"), "%s", output);
    cr_assert_null(strstr(output, "building"), "built before checking --out:\n%s", output);
    cr_assert_null(strstr(output, "Traceback"), "%s", output);
    status = run_tool("compare", "--no-install", "--workloads churn --out /dev/null/sub", output,
                      OUTPUT_MAX);
    cr_assert_eq(status, 2, "%s", output);
    cr_assert_not_null(strstr(output, "cannot create the folder: Not a directory"), "%s", output);
    cr_assert_null(strstr(output, "building"), "%s", output);
    free(output);
}

Test(compare, static_command_gets_a_warning_and_no_table, .timeout = 60) {
    char out[PATH_MAX], args[PATH_MAX * 3];
    make_outdir(out, sizeof out, "static");
    char *output = malloc(OUTPUT_MAX);
    char prog[PATH_MAX + 16];
    snprintf(prog, sizeof prog, "%s.bin", out);
    char cmd[PATH_MAX * 2];
    snprintf(cmd, sizeof cmd, "printf 'int main(void){return 0;}\\n' | ${CC:-cc} -static -x c - "
             "-o '%s' 2>/dev/null", prog);
    if (system(cmd) != 0)
        cr_skip_test("cannot link a static program here (no libc.a?)");
    snprintf(args, sizeof args, "--runs 1 --allocators glibc,poolmalloc --out '%s' -- '%s'", out,
             prog);
    int status = run_compare(args, output, OUTPUT_MAX);
    unlink(prog);
    cr_assert_eq(status, 1, "%s", output);
    cr_assert_not_null(strstr(output, "warning:"), "%s", output);
    cr_assert_not_null(strstr(output, "is statically linked"), "%s", output);
    cr_assert_null(strstr(output, "| glibc"), "a table of noise was printed:\n%s", output);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/results.csv", out);
    cr_assert_neq(access(path, F_OK), 0, "results were written for a static program");
    free(output);
    remove_outdir(out);
}

Test(compare, instructions_without_valgrind_fail, .timeout = 60) {
    /* A PATH that holds python3 and nothing else: valgrind cannot be found. (The interpreter
     * itself, not a launcher script such as pyenv's, which needs more of PATH.) */
    char dir[PATH_MAX], cmd[PATH_MAX * 3];
    make_outdir(dir, sizeof dir, "novalgrind");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && ln -s \"$(python3 -c 'import sys; print(sys.executable)')\" "
             "'%s/python3'", dir,
             dir);
    cr_assert_eq(system(cmd), 0);
    char *output = malloc(OUTPUT_MAX);
    snprintf(cmd, sizeof cmd, "PATH='%s' '%s/scripts/compare' --no-build --no-install --instructions "
             "--quick --out '%s/out' </dev/null 2>&1", dir, top_srcdir(), dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(output, 1, OUTPUT_MAX - 1, p);
    output[n] = 0;
    int status = pclose(p);
    remove_outdir(dir);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d:\n%s", status, output);
    cr_assert_not_null(strstr(output, "--instructions needs valgrind"), "%s", output);
    free(output);
}

/* ---- scripts/compare-gc ---- */

Test(compare_gc, runs_are_validated, .timeout = 60) {
    char *output = malloc(OUTPUT_MAX);
    const char *bad[] = {"0", "-1", "x", "101"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char args[64];
        snprintf(args, sizeof args, "--runs %s", bad[i]);
        int status = run_tool("compare-gc", "--no-install", args, output, OUTPUT_MAX);
        cr_assert_eq(status, 2, "--runs %s accepted:\n%s", bad[i], output);
        cr_assert_not_null(strstr(output, "expected a whole number from 1 to 100"), "%s", output);
    }
    free(output);
}

/* True if some line of text contains both a and b. */
static bool has_line_with(const char *text, const char *a, const char *b) {
    for (const char *line = text; line != NULL && *line; line = strchr(line, '\n')) {
        line += *line == '\n';
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *x = strstr(line, a), *y = strstr(line, b);
        if (x && y && (size_t)(x - line) < len && (size_t)(y - line) < len)
            return true;
    }
    return false;
}

/* A tiny run: the header names the CPython version that was measured (asked of that very
 * interpreter), and the table has both graph shapes for every graph. */
Test(compare_gc, reports_measured_versions_and_both_shapes, .timeout = 180) {
    const char *build = getenv("PM_TOP_BUILDDIR");
    if (build == NULL || strcmp(build, top_srcdir()) != 0)
        cr_skip_test("compare-gc runs the benchmarks built in the source tree");
    if (access("/usr/bin/python3", X_OK) != 0)
        cr_skip_test("/usr/bin/python3 is not installed");
    char out[PATH_MAX], args[PATH_MAX + 128];
    make_outdir(out, sizeof out, "gc");
    char *output = malloc(OUTPUT_MAX);
    snprintf(args, sizeof args, "--objects 20000 --runs 1 --no-boehm --out '%s'", out);
    int status = run_tool("compare-gc", "--no-install", args, output, OUTPUT_MAX);
    cr_assert_eq(status, 0, "%s", output);
    FILE *p = popen("/usr/bin/python3 -c 'import platform; print(platform.python_version())'",
                    "r");
    char version[64] = "";
    cr_assert_not_null(fgets(version, sizeof version, p));
    pclose(p);
    version[strcspn(version, "\n")] = 0;
    char want[128];
    snprintf(want, sizeof want, "vs CPython %s (/usr/bin/python3)", version);
    cr_assert_not_null(strstr(output, want), "expected '%s':\n%s", want, output);
    cr_assert_not_null(strstr(output, "Boehm GC skipped"), "%s", output);
    const char *orders[] = {"allocation order", "shuffled"}, *shapes[] = {" first ", " last "};
    for (size_t i = 0; i < 4; i++)
        cr_assert(has_line_with(output, orders[i / 2], shapes[i % 2]), "no row '%s' '%s':\n%s",
                  orders[i / 2], shapes[i % 2], output);
    free(output);
    remove_outdir(out);
}

/* ---- scripts/scaling: the thread-count curve (a device with more cores runs the real one) ---- */

static int run_scaling(const char *args, char *output, size_t size) {
    return run_tool("scaling", "--no-build --no-install --timeout 60", args, output, size);
}

/* Two thread counts, two allocators, one round: a row per (allocator, thread count) with a
 * measurement, and a report with the three tables per workload. */
Test(scaling, curve_has_a_row_per_allocator_and_thread_count, .timeout = 180) {
    char out[PATH_MAX], args[PATH_MAX + 256];
    make_outdir(out, sizeof out, "scaling");
    snprintf(args, sizeof args, "--threads 2,1 --runs 1 --scale 0.01 --allocators glibc,poolmalloc "
             "--workloads server --out '%s'", out);
    char *output = malloc(OUTPUT_MAX);
    int status = run_scaling(args, output, OUTPUT_MAX);
    cr_assert_eq(status, 0, "scripts/scaling failed:\n%s", output);
    char *csv = read_file(out, "curve.csv");
    const char *header = "workload,allocator,threads,rounds,ok_rounds,wall_median_s,";
    cr_assert(strncmp(csv, header, strlen(header)) == 0, "curve.csv header: %s", csv);
    const char *want[] = {"server,glibc,1,1,1,", "server,glibc,2,1,1,", "server,poolmalloc,1,1,1,",
                          "server,poolmalloc,2,1,1,"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *row = strstr(csv, want[i]);
        cr_assert_not_null(row, "no row %s in curve.csv:\n%s", want[i], csv);
        double wall = strtod(row + strlen(want[i]), NULL);
        cr_assert(wall > 0 && wall < 60, "row %s: wall %g", want[i], wall);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)strcspn(row, "\n"), row);
        const char *ops = strrchr(line, ',');
        cr_assert(ops != NULL && strtod(ops + 1, NULL) > 0, "row %s has no throughput", line);
    }
    free(csv);
    char *md = read_file(out, "curve.md");
    cr_assert_not_null(strstr(md, "## server"), "%s", md);
    cr_assert_not_null(strstr(md, "| allocator | 1 thr | 2 thr |"), "threads not sorted:\n%s", md);
    cr_assert_not_null(strstr(md, "Throughput over the same allocator's on 1 thread"), "%s", md);
    free(md);
    /* each round's compare output is kept, and it checked who served malloc */
    char *json = read_file(out, "round1-t2/results.json");
    cr_assert_not_null(strstr(json, "libpoolmalloc.so"), "poolmalloc's runs not checked");
    free(json);
    remove_outdir(out);
    free(output);
}

Test(scaling, bad_arguments_are_refused, .timeout = 60) {
    char *output = malloc(OUTPUT_MAX);
    const char *bad[][2] = {{"--threads 0,2", "--threads"}, {"--threads 2,2", "--threads"},
                            {"--threads x", "--threads"}, {"--runs 0", "--runs"},
                            {"--scale 0", "--scale"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int status = run_scaling(bad[i][0], output, OUTPUT_MAX);
        cr_assert_eq(status, 2, "'%s' accepted:\n%s", bad[i][0], output);
        cr_assert_not_null(strstr(output, bad[i][1]), "'%s': no message naming %s:\n%s",
                           bad[i][0], bad[i][1], output);
    }
    free(output);
}

/* --pack copies the peers' libraries; compare --libdir then finds them there first. */
Test(scaling, packed_libraries_are_found_by_compare_libdir, .timeout = 60) {
    struct stat st;
    if (stat("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", &st) != 0)
        cr_skip_test("jemalloc is not installed (scripts/compare installs it)");
    char dir[PATH_MAX], args[PATH_MAX + 64];
    make_outdir(dir, sizeof dir, "pack");
    char *output = malloc(OUTPUT_MAX);
    snprintf(args, sizeof args, "--pack '%s'", dir);
    cr_assert_eq(run_tool("scaling", "", args, output, OUTPUT_MAX), 0, "%s", output);
    char lib[PATH_MAX + 32];
    snprintf(lib, sizeof lib, "%s/libjemalloc.so.2", dir);
    cr_assert_eq(stat(lib, &st), 0, "%s not packed:\n%s", lib, output);
    snprintf(args, sizeof args, "--list --libdir '%s'", dir);
    cr_assert_eq(run_compare(args, output, OUTPUT_MAX), 0, "%s", output);
    cr_assert(has_line_with(output, "jemalloc", lib), "compare did not look in --libdir:\n%s",
              output);
    cr_assert_eq(run_compare("--list --libdir /nonexistent-pm-dir", output, OUTPUT_MAX), 2);
    cr_assert_not_null(strstr(output, "--libdir '/nonexistent-pm-dir': no such folder"), "%s",
                       output);
    remove_outdir(dir);
    free(output);
}
