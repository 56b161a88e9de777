/*
 * test-stats.c: statistics move as known allocations say they must; the text and JSON reports;
 * the POOLMALLOC_STATS exit report and POOLMALLOC_STATS_FILE (probes, see pm-probe.h).
 */
#include "pm-probe.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>

/* ---- helpers ----------------------------------------------------------------------------- */

static pm_stats_t stats_now(void) {
    pm_stats_t s;
    cr_assert_eq(pm_stats_get(&s), 0);
    return s;
}

/* The index of the class that serves `size`: the first whose block size holds it. */
static unsigned class_for(size_t size) {
    pm_class_stats_t c;
    for (unsigned i = 1; pm_stats_get_class(i, &c) == 0; i++)
        if (c.block_size >= size)
            return i;
    cr_assert_fail("no class for %zu bytes", size);
    return 0;
}

static pm_class_stats_t class_now(unsigned index) {
    pm_class_stats_t c;
    cr_assert_eq(pm_stats_get_class(index, &c), 0);
    return c;
}

/* ---- the getters --------------------------------------------------------------------------- */

Test(stats, getters_reject_bad_arguments) {
    pm_class_stats_t c;
    errno = 0;
    cr_assert_eq(pm_stats_get(NULL), -1);
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_eq(pm_stats_get_class(0, &c), -1);
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(pm_stats_get_class(1, NULL), -1);
}

Test(stats, classes_ascend_from_16_to_128k) {
    pm_class_stats_t c;
    unsigned n = 0;
    uint32_t last = 0;
    for (unsigned i = 1; pm_stats_get_class(i, &c) == 0; i++, n++) {
        cr_assert_gt(c.block_size, last, "class %u", i);
        cr_assert_eq(c.block_size % 16, 0);
        cr_assert_geq(c.pool_bytes / c.block_size, 8, "a pool holds at least 8 blocks");
        last = c.block_size;
    }
    cr_assert_eq(n, 64);
    cr_assert_eq(class_now(1).block_size, 16);
    cr_assert_eq(last, 128 * 1024);
}

Test(stats, small_allocations_move_the_counters) {
    enum { N = 1000, SIZE = 100 };
    static void *blocks[N];
    unsigned cls = class_for(SIZE);
    pm_class_stats_t c0 = class_now(cls);
    pm_stats_t s0 = stats_now();
    for (int i = 0; i < N; i++)
        blocks[i] = pm_malloc(SIZE);

    pm_class_stats_t c1 = class_now(cls);
    pm_stats_t s1 = stats_now();
    cr_assert_eq(c1.blocks_in_use - c0.blocks_in_use, N);
    cr_assert_geq(c1.pools * (c1.pool_bytes / c1.block_size), c1.blocks_in_use);
    cr_assert_eq(c1.blocks_in_use + c1.blocks_free, c1.pools * (c1.pool_bytes / c1.block_size));
    cr_assert_eq(s1.small_blocks_in_use - s0.small_blocks_in_use, N);
    cr_assert_eq(s1.small_bytes_in_use - s0.small_bytes_in_use, (uint64_t)N * c1.block_size);
    cr_assert_eq(s1.bytes_in_use - s0.bytes_in_use, (uint64_t)N * c1.block_size);
    cr_assert_geq(s1.arenas, 1);
    cr_assert_geq(s1.bytes_mapped, s1.arenas * (4u << 20) - 0);
    if (PM_STATS) {
        cr_assert_eq(c1.allocs - c0.allocs, N);
        cr_assert_eq(c1.bytes_requested - c0.bytes_requested, (uint64_t)N * SIZE);
        cr_assert_eq(s1.small_allocs - s0.small_allocs, N);
        cr_assert_eq(s1.small_bytes_requested - s0.small_bytes_requested, (uint64_t)N * SIZE);
    }

    for (int i = 0; i < N; i++)
        pm_free(blocks[i]);
    pm_class_stats_t c2 = class_now(cls);
    pm_stats_t s2 = stats_now();
    cr_assert_eq(c2.blocks_in_use, c0.blocks_in_use);
    cr_assert_eq(s2.small_bytes_in_use, s0.small_bytes_in_use);
    if (PM_STATS) {
        cr_assert_eq(c2.frees - c1.frees, N);
        cr_assert_eq(s2.small_frees - s1.small_frees, N);
    }
}

Test(stats, large_allocations_move_the_counters) {
    pm_stats_t s0 = stats_now();
    void *p = pm_malloc(3 << 20);
    memset(p, 1, 3 << 20);
    pm_stats_t s1 = stats_now();
    cr_assert_eq(s1.large_blocks_in_use - s0.large_blocks_in_use, 1);
    cr_assert_geq(s1.large_bytes_in_use - s0.large_bytes_in_use, 3u << 20);
    cr_assert_eq(s1.large_allocs - s0.large_allocs, 1);
    cr_assert_geq(s1.bytes_mapped - s0.bytes_mapped, 3u << 20);
    cr_assert_geq(s1.bytes_resident, 3u << 20, "we touched 3 MiB");
    cr_assert_geq(s1.peak_resident, s1.bytes_resident);
    pm_free(p);
    pm_stats_t s2 = stats_now();
    cr_assert_eq(s2.large_blocks_in_use, s0.large_blocks_in_use);
    cr_assert_eq(s2.large_frees - s1.large_frees, 1);
    cr_assert_geq(s2.peak_resident, s1.bytes_resident, "the peak remembers");
}

/* ---- threads: remote frees and heap hand-over ----------------------------------------------- */

enum { THREAD_BLOCKS = 200 };
static void *thread_blocks[THREAD_BLOCKS];

static void *allocate_blocks(void *arg) {
    for (int i = 0; i < THREAD_BLOCKS; i++)
        thread_blocks[i] = pm_malloc(48);
    return NULL;
}

static void *allocate_one(void *arg) {
    pm_free(pm_malloc(32));
    return NULL;
}

Test(stats, threads_count_remote_frees_and_heap_handover) {
    pm_free(pm_malloc(16)); /* the main thread has its heap */
    pm_stats_t s0 = stats_now();
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, allocate_blocks, NULL), 0);
    pthread_join(t, NULL);
    for (int i = 0; i < THREAD_BLOCKS; i++)
        pm_free(thread_blocks[i]); /* blocks of another heap: remote frees */
    pm_stats_t s1 = stats_now();
    cr_assert_eq(s1.heaps_abandoned - s0.heaps_abandoned, 1, "the exited thread gave up its heap");
    cr_assert_eq(s1.heaps_created + s1.heaps_adopted - s0.heaps_created - s0.heaps_adopted, 1);
    if (PM_STATS)
        cr_assert_eq(s1.remote_frees - s0.remote_frees, THREAD_BLOCKS);

    cr_assert_eq(pthread_create(&t, NULL, allocate_one, NULL), 0);
    pthread_join(t, NULL);
    pm_stats_t s2 = stats_now();
    cr_assert_eq(s2.heaps_adopted - s1.heaps_adopted, 1, "a new thread adopts the abandoned heap");
    cr_assert_eq(s2.heaps_created, s1.heaps_created);
}

/* ---- the reports ----------------------------------------------------------------------------- */

static void call_print(void *arg) {
    pm_stats_print();
}

Test(stats, text_report_is_a_table) {
    void *p = pm_malloc(1000); /* class 1024 */
    char out[32768];
    capture_stderr(call_print, NULL, out, sizeof out);
    pm_free(p);
    char want[64];
    snprintf(want, sizeof want, "poolmalloc statistics, pid %d\n", (int)getpid());
    cr_assert(starts_with(out, want), "%s", out);
    cr_assert(strstr(out, "class  block  pool  pools   blocks in use") != NULL, "%s", out);
    unsigned cls = class_for(1000);
    snprintf(want, sizeof want, "\n%5u   1024   16K      1               1 ", cls);
    cr_assert(strstr(out, want) != NULL, "no row '%s' in:\n%s", want + 1, out);
    cr_assert(strstr(out, "# arenas mapped now") != NULL);
    cr_assert(strstr(out, "# peak bytes resident (process)") != NULL);
    cr_assert(strstr(out, "# heaps adopted (by a new thread)") != NULL);
}

static bool have_python(void) {
    return system("python3 -c 'import json' >/dev/null 2>&1") == 0;
}

Test(stats, json_report_parses_and_matches_the_getter) {
    if (!have_python())
        cr_skip_test("python3 is not installed");
    void *keep[10];
    for (int i = 0; i < 10; i++)
        keep[i] = pm_malloc(200);
    char path[] = "/tmp/pm-stats-json-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    pm_stats_t s = stats_now();
    pm_stats_print_fd(fd, 1);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import json,sys; lines=open(sys.argv[1]).read().splitlines(); "
             "assert len(lines) == 1; d=json.loads(lines[0]); t=d[\"totals\"]; "
             "assert len(d[\"classes\"]) == 64; "
             "assert sum(c[\"blocks_in_use\"] for c in d[\"classes\"]) == t[\"small_blocks_in_use\"]; "
             "print(t[\"small_blocks_in_use\"], t[\"arenas\"], d[\"pid\"])' %s",
             path);
    FILE *py = popen(cmd, "r");
    unsigned long long blocks = 0, arenas = 0;
    int pid = 0;
    int got = fscanf(py, "%llu %llu %d", &blocks, &arenas, &pid);
    int rc = pclose(py);
    unlink(path);
    cr_assert_eq(rc, 0, "python rejected the JSON");
    cr_assert_eq(got, 3);
    cr_assert_eq(blocks, s.small_blocks_in_use);
    cr_assert_eq(arenas, s.arenas);
    cr_assert_eq(pid, getpid());
    for (int i = 0; i < 10; i++)
        pm_free(keep[i]);
}

/* ---- the exit report (probes) --------------------------------------------------------------- */

void *exit_probe_blocks[100]; /* global: still referenced, so still in use at exit */

static void probe_exit(void) {
    void **keep = exit_probe_blocks;
    for (int i = 0; i < 100; i++)
        keep[i] = pm_malloc(24);
    exit(0); /* exit, not _exit: the report is printed by a destructor */
}

static void probe_close_stderr_then_exit(void) {
    pm_free(pm_malloc(24));
    close(2); /* as coreutils programs do before they exit */
    exit(0);
}

PM_PROBES({"exit", probe_exit}, {"close_stderr_then_exit", probe_close_stderr_then_exit})

Test(stats_exit, no_report_by_default) {
    static probe_result r;
    run_probe("exit", NULL, &r);
    cr_assert(probe_exited_ok(&r));
    cr_assert_str_empty(r.err);
}

Test(stats_exit, report_on_stderr) {
    static probe_result r;
    const char *vars[] = {"POOLMALLOC_STATS=1", NULL};
    run_probe("exit", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert(starts_with(r.err, "poolmalloc statistics, pid "), "%s", r.err);
    cr_assert(strstr(r.err, "# bytes in use") != NULL, "%s", r.err);
    /* 100 blocks of 24 bytes (class 32) are still in use at exit */
    cr_assert(strstr(r.err, "\n    2     32   16K      1             100 ") != NULL, "%s", r.err);
}

Test(stats_exit, report_survives_a_closed_stderr) {
    static probe_result r;
    const char *vars[] = {"POOLMALLOC_STATS=1", NULL};
    run_probe("close_stderr_then_exit", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert(strstr(r.err, "poolmalloc statistics, pid ") != NULL, "%s", r.err);
}

static void read_file(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s was not written", path);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
}

Test(stats_exit, report_goes_to_stats_file) {
    static probe_result r;
    char dir[] = "/tmp/pm-stats-XXXXXX", file[128], var[160], buf[65536];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/report.txt", dir);
    snprintf(var, sizeof var, "POOLMALLOC_STATS_FILE=%s", file);
    const char *vars[] = {"POOLMALLOC_STATS=1", var, NULL};
    run_probe("exit", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert_str_empty(r.err, "nothing on stderr: %s", r.err);
    read_file(file, buf, sizeof buf);
    cr_assert(starts_with(buf, "poolmalloc statistics, pid "), "%s", buf);
    /* a second run appends */
    run_probe("exit", vars, &r);
    read_file(file, buf, sizeof buf);
    cr_assert(strstr(strstr(buf, "statistics") + 1, "poolmalloc statistics, pid ") != NULL);
    unlink(file);
    rmdir(dir);
}

Test(stats_exit, json_report_with_pid_in_the_file_name) {
    if (!have_python())
        cr_skip_test("python3 is not installed");
    static probe_result r;
    char dir[] = "/tmp/pm-stats-XXXXXX", var[160];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(var, sizeof var, "POOLMALLOC_STATS_FILE=%s/stats-%%p.json", dir);
    const char *vars[] = {"POOLMALLOC_STATS=json", var, NULL};
    run_probe("exit", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert_str_empty(r.err, "%s", r.err);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "cd %s && python3 -c 'import json,glob; [f]=glob.glob(\"stats-*.json\"); "
             "d=json.loads(open(f).read()); assert f == \"stats-%%d.json\" %% d[\"pid\"], f; "
             "c=[c for c in d[\"classes\"] if c[\"block_size\"] == 32][0]; "
             "assert c[\"blocks_in_use\"] == 100, c' && rm -f stats-*.json",
             dir);
    cr_assert_eq(system(cmd), 0, "the JSON report is missing or wrong");
    rmdir(dir);
}

Test(stats_exit, unwritable_stats_file_falls_back_to_stderr) {
    static probe_result r;
    const char *vars[] = {"POOLMALLOC_STATS=1", "POOLMALLOC_STATS_FILE=/nonexistent/dir/s.txt",
                          NULL};
    run_probe("exit", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert(starts_with(r.err, "poolmalloc: cannot open POOLMALLOC_STATS_FILE="
                                 "'/nonexistent/dir/s.txt' (No such file or directory): "
                                 "statistics go to stderr\n"), "%s", r.err);
    cr_assert(strstr(r.err, "\npoolmalloc statistics, pid ") != NULL, "%s", r.err);
}
