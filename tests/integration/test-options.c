/*
 * test-options.c: the POOLMALLOC_* option parser (good, bad, boundary and unknown values), its
 * one-line messages, POOLMALLOC_STRICT, and that each option really changes what the allocator
 * does (probes: this binary re-executed with a chosen environment, see pm-probe.h).
 */
#include "pm-probe.h"

#include "gc-options.h"

#include <signal.h>

/* ---- helpers ----------------------------------------------------------------------------- */

static pm_options defaults(void) {
    pm_options o;
    pm_options_defaults(&o);
    return o;
}

/* Parses NAME=VALUE into a copy of the defaults; asserts the result code. */
static pm_options parse_ok(const char *name, const char *value) {
    pm_options o = defaults();
    char err[1024];
    int r = pm_option_parse(name, value, &o, err, sizeof err);
    cr_assert_eq(r, PM_OPTION_OK, "%s='%s' should be accepted, got %d: %s", name, value, r, err);
    return o;
}

/* The collector's options live in their own storage (gc-options.c), not in pm_options: each
 * parse starts from their defaults, and this gives what it left there. */
static const pm_gc_options_t gc_defaults = {{2000, 10, 10}, true, 0};
static pm_gc_options_t gc_parse_ok(const char *name, const char *value) {
    pm_gc_options = gc_defaults;
    parse_ok(name, value);
    return pm_gc_options;
}

static void parse_bad(const char *name, const char *value) {
    pm_options o = defaults(), before = o;
    pm_gc_options = gc_defaults;
    char err[1024];
    int r = pm_option_parse(name, value, &o, err, sizeof err);
    cr_assert_eq(r, PM_OPTION_BAD_VALUE, "%s='%s' should be rejected, got %d", name, value, r);
    cr_assert(memcmp(&o, &before, sizeof o) == 0, "%s='%s': a rejected value changed the options",
              name, value);
    cr_assert(memcmp(&pm_gc_options, &gc_defaults, sizeof gc_defaults) == 0,
              "%s='%s': a rejected value changed the collector's options", name, value);
    cr_assert(strstr(err, "ignored: expected") != NULL, "message: %s", err);
    cr_assert(strchr(err, '\n') == NULL, "one line: %s", err);
}

/* ---- defaults -------------------------------------------------------------------------------- */

Test(options, documented_defaults) {
    pm_options o = defaults();
    cr_assert_eq(o.mmap_threshold, 128 * 1024);
    cr_assert_eq(o.arena_size, 4 * 1024 * 1024);
    cr_assert_eq(o.purge_delay_ms, 250);
    cr_assert_eq(o.large_cache, (size_t)1 << 30);
    cr_assert_eq(o.arena_retain, 1);
    cr_assert(!o.huge_pages);
    cr_assert(!o.stats && !o.verbose && !o.poison && !o.strict);
    cr_assert_str_empty(o.stats_file);
    cr_assert(memcmp(&pm_gc_options, &gc_defaults, sizeof gc_defaults) == 0,
              "the collector's options start at 2000,10,10, on, no debug flags");
}

/* The DEFAULT column of `poolmalloc --help` comes from the table's default strings: each must
 * parse, and to the very value the built-in defaults hold. */
Test(options, table_defaults_match_builtin_defaults) {
    size_t n = pm_options_count();
    cr_assert_geq(n, 14, "every core option and the collector's three");
    for (size_t i = 0; i < n; i++) {
        const char *def;
        const char *name = pm_options_name(i, &def);
        pm_options o = defaults();
        /* Start from values unlike any default, so that a parse must really set the field. */
        o.mmap_threshold = 4096, o.arena_size = 1 << 20, o.purge_delay_ms = 7;
        o.large_cache = 12345, o.arena_retain = 99, o.stats = o.verbose = o.poison = true;
        o.huge_pages = true;
        o.strict = true;
        pm_gc_options = (pm_gc_options_t){{3, 3, 3}, false, 15};
        pm_options want = defaults();
        char err[1024];
        cr_assert_eq(pm_option_parse(name, def, &o, err, sizeof err), PM_OPTION_OK, "%s: %s",
                     name, err);
        if (strcmp(name, "MMAP_THRESHOLD") == 0) cr_assert_eq(o.mmap_threshold, want.mmap_threshold);
        if (strcmp(name, "ARENA_SIZE") == 0) cr_assert_eq(o.arena_size, want.arena_size);
        if (strcmp(name, "PURGE_DELAY") == 0) cr_assert_eq(o.purge_delay_ms, want.purge_delay_ms);
        if (strcmp(name, "LARGE_CACHE") == 0) cr_assert_eq(o.large_cache, want.large_cache);
        if (strcmp(name, "ARENA_RETAIN") == 0) cr_assert_eq(o.arena_retain, want.arena_retain);
        if (strcmp(name, "HUGE_PAGES") == 0) cr_assert_eq(o.huge_pages, want.huge_pages);
        if (strcmp(name, "STATS") == 0) cr_assert_eq(o.stats, want.stats);
        if (strcmp(name, "VERBOSE") == 0) cr_assert_eq(o.verbose, want.verbose);
        if (strcmp(name, "POISON") == 0) cr_assert_eq(o.poison, want.poison);
        if (strcmp(name, "STRICT") == 0) cr_assert_eq(o.strict, want.strict);
        if (strcmp(name, "GC") == 0) cr_assert_eq(pm_gc_options.enabled, gc_defaults.enabled);
        if (strcmp(name, "GC_DEBUG") == 0) cr_assert_eq(pm_gc_options.debug, gc_defaults.debug);
        if (strcmp(name, "GC_THRESHOLD") == 0)
            cr_assert(memcmp(pm_gc_options.threshold, gc_defaults.threshold,
                             sizeof gc_defaults.threshold) == 0);
    }
}

/* ---- sizes ------------------------------------------------------------------------------------ */

Test(options, sizes_take_suffixes) {
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "4096").mmap_threshold, 4096);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "4K").mmap_threshold, 4096);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "4k").mmap_threshold, 4096);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "4KB").mmap_threshold, 4096);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "4KiB").mmap_threshold, 4096);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", " 8K ").mmap_threshold, 8192);
    cr_assert_eq(parse_ok("POOLMALLOC_LARGE_CACHE", "3M").large_cache, (size_t)3 << 20);
    cr_assert_eq(parse_ok("POOLMALLOC_LARGE_CACHE", "2G").large_cache, (size_t)2 << 30);
    cr_assert_eq(parse_ok("POOLMALLOC_LARGE_CACHE", "2g").large_cache, (size_t)2 << 30);
    cr_assert_eq(parse_ok("POOLMALLOC_LARGE_CACHE", "100B").large_cache, 100);
}

Test(options, size_boundaries) {
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "1K").mmap_threshold, 1024);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "1024").mmap_threshold, 1024);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "128K").mmap_threshold, 131072);
    cr_assert_eq(parse_ok("POOLMALLOC_MMAP_THRESHOLD", "131072").mmap_threshold, 131072);
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "1023");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "131073");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "129K");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "1M");
    cr_assert_eq(parse_ok("POOLMALLOC_LARGE_CACHE", "0").large_cache, 0);
    cr_assert_eq(parse_ok("POOLMALLOC_LARGE_CACHE", "4G").large_cache, (size_t)4 << 30);
    parse_bad("POOLMALLOC_LARGE_CACHE", "4097M");
    parse_bad("POOLMALLOC_LARGE_CACHE", "5G");
}

Test(options, sizes_reject_garbage) {
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "12Q");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "-1");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "1.5K");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "K");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "4 K");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "4Kx");
    parse_bad("POOLMALLOC_MMAP_THRESHOLD", "0x1000");
    parse_bad("POOLMALLOC_LARGE_CACHE", "99999999999999999999999");  /* overflows 64 bits */
    parse_bad("POOLMALLOC_LARGE_CACHE", "18014398509481984K");       /* 2^54 K overflows */
}

Test(options, arena_size_is_one_of_three) {
    cr_assert_eq(parse_ok("POOLMALLOC_ARENA_SIZE", "1M").arena_size, 1 << 20);
    cr_assert_eq(parse_ok("POOLMALLOC_ARENA_SIZE", "2M").arena_size, 2 << 20);
    cr_assert_eq(parse_ok("POOLMALLOC_ARENA_SIZE", "4M").arena_size, 4 << 20);
    cr_assert_eq(parse_ok("POOLMALLOC_ARENA_SIZE", "1048576").arena_size, 1 << 20);
    cr_assert_eq(parse_ok("POOLMALLOC_ARENA_SIZE", "2048K").arena_size, 2 << 20);
    parse_bad("POOLMALLOC_ARENA_SIZE", "3M");
    parse_bad("POOLMALLOC_ARENA_SIZE", "8M");
    parse_bad("POOLMALLOC_ARENA_SIZE", "512K");
    parse_bad("POOLMALLOC_ARENA_SIZE", "1048577");
}

/* ---- numbers ---------------------------------------------------------------------------------- */

Test(options, purge_delay) {
    cr_assert_eq(parse_ok("POOLMALLOC_PURGE_DELAY", "-1").purge_delay_ms, -1);
    cr_assert_eq(parse_ok("POOLMALLOC_PURGE_DELAY", "never").purge_delay_ms, -1);
    cr_assert_eq(parse_ok("POOLMALLOC_PURGE_DELAY", "0").purge_delay_ms, 0);
    cr_assert_eq(parse_ok("POOLMALLOC_PURGE_DELAY", "10ms").purge_delay_ms, 10);
    cr_assert_eq(parse_ok("POOLMALLOC_PURGE_DELAY", "2s").purge_delay_ms, 2000);
    cr_assert_eq(parse_ok("POOLMALLOC_PURGE_DELAY", "3600000").purge_delay_ms, 3600000);
    cr_assert_eq(parse_ok("POOLMALLOC_PURGE_DELAY", "3600s").purge_delay_ms, 3600000);
    parse_bad("POOLMALLOC_PURGE_DELAY", "3600001");
    parse_bad("POOLMALLOC_PURGE_DELAY", "3601s");
    parse_bad("POOLMALLOC_PURGE_DELAY", "-2");
    parse_bad("POOLMALLOC_PURGE_DELAY", "5m");
    parse_bad("POOLMALLOC_PURGE_DELAY", "soon");
}

Test(options, arena_retain) {
    cr_assert_eq(parse_ok("POOLMALLOC_ARENA_RETAIN", "0").arena_retain, 0);
    cr_assert_eq(parse_ok("POOLMALLOC_ARENA_RETAIN", "1024").arena_retain, 1024);
    parse_bad("POOLMALLOC_ARENA_RETAIN", "1025");
    parse_bad("POOLMALLOC_ARENA_RETAIN", "-1");
    parse_bad("POOLMALLOC_ARENA_RETAIN", "1K");
    parse_bad("POOLMALLOC_ARENA_RETAIN", "two");
}

Test(options, gc_threshold) {
    pm_gc_options_t o = gc_parse_ok("POOLMALLOC_GC_THRESHOLD", "700,5,3");
    cr_assert(o.threshold[0] == 700 && o.threshold[1] == 5 && o.threshold[2] == 3);
    o = gc_parse_ok("POOLMALLOC_GC_THRESHOLD", " 1 , 2 ,3 ");
    cr_assert(o.threshold[0] == 1 && o.threshold[1] == 2 && o.threshold[2] == 3);
    o = gc_parse_ok("POOLMALLOC_GC_THRESHOLD", "0,0,0");
    cr_assert(o.threshold[0] == 0 && o.threshold[2] == 0);
    parse_bad("POOLMALLOC_GC_THRESHOLD", "1,2");
    parse_bad("POOLMALLOC_GC_THRESHOLD", "1,2,3,4");
    parse_bad("POOLMALLOC_GC_THRESHOLD", "1,,3");
    parse_bad("POOLMALLOC_GC_THRESHOLD", "1,2,3,");
    parse_bad("POOLMALLOC_GC_THRESHOLD", "-1,2,3");
    parse_bad("POOLMALLOC_GC_THRESHOLD", "1,2,x");
    parse_bad("POOLMALLOC_GC_THRESHOLD", "99999999999,1,1");
}

Test(options, gc_debug_names_and_numbers) {
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "stats").debug, 1);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "saveall").debug, 2);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "leak").debug, 4);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "stats,leak").debug, 5);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "STATS, saveall").debug, 3);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "checks").debug, 8);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "saveall,8").debug, 10);
    cr_assert_eq(PM_GC_DEBUG_STATS | PM_GC_DEBUG_SAVEALL | PM_GC_DEBUG_LEAK | PM_GC_DEBUG_CHECKS,
                 gc_parse_ok("POOLMALLOC_GC_DEBUG", "stats,saveall,leak,checks").debug);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "7").debug, 7);
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "0").debug, 0);
    parse_bad("POOLMALLOC_GC_DEBUG", "verbose-ish");
    parse_bad("POOLMALLOC_GC_DEBUG", "stats,,leak");
    parse_bad("POOLMALLOC_GC_DEBUG", "stats,");
    parse_bad("POOLMALLOC_GC_DEBUG", "-1");
    /* Numbers are checked against the bits that exist (issue 9: 99 was accepted silently). */
    parse_bad("POOLMALLOC_GC_DEBUG", "99");
    parse_bad("POOLMALLOC_GC_DEBUG", "16");
    parse_bad("POOLMALLOC_GC_DEBUG", "stats,32");
    cr_assert_eq(gc_parse_ok("POOLMALLOC_GC_DEBUG", "15").debug, 15);
}

Test(options, gc_debug_message_names_the_accepted_bits) {
    pm_options o = defaults();
    char err[1024];
    cr_assert_eq(pm_option_parse("POOLMALLOC_GC_DEBUG", "99", &o, err, sizeof err),
                 PM_OPTION_BAD_VALUE);
    cr_assert_str_eq(err, "POOLMALLOC_GC_DEBUG='99' ignored: expected a comma-separated list of "
                          "stats, saveall, leak, checks, or a number from 0 to 15 made of their "
                          "bits");
}

/* ---- booleans, strings ------------------------------------------------------------------------ */

Test(options, booleans) {
    const char *yes[] = {"1", "yes", "on", "true", "YES", "On", "TRUE", "y"};
    const char *no[] = {"0", "no", "off", "false", "NO", "Off", "FALSE", "n"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        cr_assert(parse_ok("POOLMALLOC_POISON", yes[i]).poison, "%s", yes[i]);
        cr_assert(parse_ok("POOLMALLOC_VERBOSE", yes[i]).verbose, "%s", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert(!gc_parse_ok("POOLMALLOC_GC", no[i]).enabled, "%s", no[i]);
    parse_bad("POOLMALLOC_POISON", "2");
    parse_bad("POOLMALLOC_POISON", "maybe");
    parse_bad("POOLMALLOC_POISON", "yess");
    parse_bad("POOLMALLOC_POISON", "-1");
}

Test(options, stats_bool_or_json) {
    pm_options o = parse_ok("POOLMALLOC_STATS", "json");
    cr_assert(o.stats);
    cr_assert_eq(pm_opt_stats_format, PM_STATS_FORMAT_JSON);
    o = parse_ok("POOLMALLOC_STATS", "1");
    cr_assert(o.stats);
    cr_assert_eq(pm_opt_stats_format, PM_STATS_FORMAT_TEXT);
    cr_assert(!parse_ok("POOLMALLOC_STATS", "off").stats);
    parse_bad("POOLMALLOC_STATS", "xml");
}

Test(options, stats_file_length_limit) {
    char path[300];
    memset(path, 'a', sizeof path);
    path[0] = '/';
    path[255] = 0;
    cr_assert_eq(strlen(parse_ok("POOLMALLOC_STATS_FILE", path).stats_file), 255);
    path[255] = 'a';
    path[256] = 0;
    parse_bad("POOLMALLOC_STATS_FILE", path);
    cr_assert_str_eq(parse_ok("POOLMALLOC_STATS_FILE", "/tmp/with space").stats_file,
                     "/tmp/with space");
}

Test(options, empty_value_counts_as_unset) {
    pm_options o = defaults();
    cr_assert_eq(pm_option_parse("POOLMALLOC_MMAP_THRESHOLD", "", &o, NULL, 0), PM_OPTION_OK);
    pm_gc_options = gc_defaults;
    cr_assert_eq(pm_option_parse("POOLMALLOC_GC_THRESHOLD", "  ", &o, NULL, 0), PM_OPTION_OK);
    pm_options d = defaults();
    cr_assert(memcmp(&o, &d, sizeof o) == 0);
    cr_assert(memcmp(&pm_gc_options, &gc_defaults, sizeof gc_defaults) == 0);
}

Test(options, short_names_work_too) {
    cr_assert_eq(parse_ok("MMAP_THRESHOLD", "2K").mmap_threshold, 2048);
}

/* ---- messages ---------------------------------------------------------------------------------- */

Test(options, bad_value_message_text) {
    pm_options o = defaults();
    char err[512];
    cr_assert_eq(pm_option_parse("POOLMALLOC_MMAP_THRESHOLD", "12Q", &o, err, sizeof err),
                 PM_OPTION_BAD_VALUE);
    cr_assert_str_eq(err, "POOLMALLOC_MMAP_THRESHOLD='12Q' ignored: expected a size from 1K to 128K");
    pm_option_parse("POOLMALLOC_ARENA_SIZE", "3M", &o, err, sizeof err);
    cr_assert_str_eq(err, "POOLMALLOC_ARENA_SIZE='3M' ignored: expected 1M, 2M or 4M");
    pm_option_parse("POOLMALLOC_ARENA_RETAIN", "x", &o, err, sizeof err);
    cr_assert_str_eq(err, "POOLMALLOC_ARENA_RETAIN='x' ignored: expected an integer from 0 to 1024");
}

Test(options, long_or_binary_values_are_shortened_in_messages) {
    char value[200];
    memset(value, 'x', sizeof value - 1);
    value[sizeof value - 1] = 0;
    value[3] = '\n';
    pm_options o = defaults();
    char err[512];
    pm_option_parse("POOLMALLOC_POISON", value, &o, err, sizeof err);
    cr_assert(strstr(err, "='xxx?xxx") != NULL, "%s", err);
    cr_assert(strstr(err, "...'") != NULL, "%s", err);
    cr_assert(strchr(err, '\n') == NULL);
    cr_assert_lt(strlen(err), 200);
}

Test(options, unknown_name) {
    pm_options o = defaults(), before = o;
    char err[1024];
    cr_assert_eq(pm_option_parse("POOLMALLOC_FOO", "1", &o, err, sizeof err), PM_OPTION_UNKNOWN);
    cr_assert(memcmp(&o, &before, sizeof o) == 0);
    cr_assert(starts_with(err, "unknown option POOLMALLOC_FOO='1' ignored"), "%s", err);
    cr_assert(strstr(err, "known: MMAP_THRESHOLD, ARENA_SIZE") != NULL, "%s", err);
    cr_assert(strstr(err, "did you mean") == NULL, "no near name for FOO: %s", err);
    cr_assert(strchr(err, '\n') == NULL);
}

Test(options, unknown_name_suggests_near_miss) {
    pm_options o = defaults();
    char err[1024];
    cr_assert_eq(pm_option_parse("POOLMALLOC_STAT", "1", &o, err, sizeof err), PM_OPTION_UNKNOWN);
    cr_assert(strstr(err, "(did you mean POOLMALLOC_STATS?)") != NULL, "%s", err);
    pm_option_parse("POOLMALLOC_MMAP_TRESHOLD", "4K", &o, err, sizeof err);
    cr_assert(strstr(err, "(did you mean POOLMALLOC_MMAP_THRESHOLD?)") != NULL, "%s", err);
    pm_option_parse("POOLMALLOC_poison", "1", &o, err, sizeof err);
    cr_assert(strstr(err, "(did you mean POOLMALLOC_POISON?)") != NULL, "%s", err);
}

Test(options, tiny_error_buffer_is_safe) {
    pm_options o = defaults();
    char err[8];
    cr_assert_eq(pm_option_parse("POOLMALLOC_FOO", "1", &o, err, sizeof err), PM_OPTION_UNKNOWN);
    cr_assert_eq(strlen(err), 7);
    cr_assert_eq(pm_option_parse("POOLMALLOC_POISON", "2", &o, NULL, 0), PM_OPTION_BAD_VALUE);
}

/* ---- the environment ------------------------------------------------------------------------ */

struct env_call {
    char *const *env;
    pm_options *into;
    int bad;
};
static void call_apply_env(void *arg) {
    struct env_call *c = arg;
    c->bad = pm_options_apply_env(c->env, c->into);
}

Test(options, environment_bad_value_is_one_line_and_default_stays) {
    char *env[] = {"HOME=/x", "POOLMALLOC_MMAP_THRESHOLD=12Q", "POOLMALLOC_ARENA_SIZE=2M",
                   "OTHER_POOLMALLOC_X=1", NULL};
    pm_options o = defaults();
    struct env_call c = {env, &o, 0};
    char out[4096];
    capture_stderr(call_apply_env, &c, out, sizeof out);
    cr_assert_str_eq(out, "poolmalloc: POOLMALLOC_MMAP_THRESHOLD='12Q' ignored: expected a size "
                          "from 1K to 128K\n");
    cr_assert_eq(c.bad, 1);
    cr_assert_eq(o.mmap_threshold, 128 * 1024, "the default stays");
    cr_assert_eq(o.arena_size, 2 << 20, "the good variable still applies");
}

Test(options, environment_unknown_name_is_one_line) {
    char *env[] = {"POOLMALLOC_FOO=bar", "POOLMALLOC_POISON=1", NULL};
    pm_options o = defaults();
    struct env_call c = {env, &o, 0};
    char out[4096];
    capture_stderr(call_apply_env, &c, out, sizeof out);
    cr_assert(starts_with(out, "poolmalloc: unknown option POOLMALLOC_FOO='bar' ignored;"),
              "%s", out);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    cr_assert(o.poison);
}

Test(options, environment_good_values_are_silent) {
    char *env[] = {"POOLMALLOC_MMAP_THRESHOLD=64K", "POOLMALLOC_PURGE_DELAY=never",
                   "POOLMALLOC_GC_THRESHOLD=100,2,2", "POOLMALLOC_STATS_FILE=/tmp/s.txt", NULL};
    pm_options o = defaults();
    struct env_call c = {env, &o, 0};
    char out[4096];
    capture_stderr(call_apply_env, &c, out, sizeof out);
    cr_assert_str_empty(out);
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(o.mmap_threshold, 64 * 1024);
    cr_assert_eq(o.purge_delay_ms, -1);
    cr_assert_eq(pm_gc_options.threshold[0], 100);
    cr_assert_str_eq(o.stats_file, "/tmp/s.txt");
}

/* STRICT applies whatever its position in the environment: here it comes after the bad one. */
Test(options, strict_makes_bad_value_fatal, .exit_code = 2) {
    char *env[] = {"POOLMALLOC_MMAP_THRESHOLD=12Q", "POOLMALLOC_STRICT=1", NULL};
    pm_options o = defaults();
    pm_options_apply_env(env, &o);
}

Test(options, strict_makes_unknown_name_fatal, .exit_code = 2) {
    char *env[] = {"POOLMALLOC_STRICT=yes", "POOLMALLOC_TYPO=1", NULL};
    pm_options o = defaults();
    pm_options_apply_env(env, &o);
}

/* ---- options declared by another layer (options.h: PM_OPTION_GROUP) ------------------------- */

/* As the object system does in gc-options.c: a table and one macro, no field in pm_options. */
static long test_knob = 7;
static const pm_option_desc test_option_table[] = {
    {"TEST_KNOB", PM_KIND_INT, PM_OPT_LATE_OK, &test_knob, 1, 9, "7",
     "an option this test program declares for itself (ignored under setuid)", NULL},
};
PM_OPTION_GROUP(test_option_group, test_option_table);

Test(options_registry, a_layer_declares_options_with_one_macro) {
    bool listed = false;
    for (size_t i = 0; i < pm_options_count(); i++)
        listed = listed || strcmp(pm_option_at(i)->name, "TEST_KNOB") == 0;
    cr_assert(listed, "the registry section holds the test's group");
    cr_assert_null(pm_option_at(pm_options_count()));
    parse_ok("POOLMALLOC_TEST_KNOB", "3");
    cr_assert_eq(test_knob, 3, "parsed into the layer's own storage");
    char err[256];
    pm_options o = defaults();
    cr_assert_eq(pm_option_parse("POOLMALLOC_TEST_KNOB", "10", &o, err, sizeof err),
                 PM_OPTION_BAD_VALUE);
    cr_assert_str_eq(err, "POOLMALLOC_TEST_KNOB='10' ignored: expected an integer from 1 to 9");
    cr_assert_eq(test_knob, 3, "a bad value changes nothing");
    cr_assert_eq(pm_option_parse("POOLMALLOC_TEST_KNBO", "1", &o, err, sizeof err),
                 PM_OPTION_UNKNOWN);
    cr_assert(strstr(err, "(did you mean POOLMALLOC_TEST_KNOB?)") != NULL, "%s", err);
}

static void call_help(void *arg) {
    (void)arg;
    pm_options_help(2);
}

Test(options_registry, help_lists_a_layers_option) {
    static char out[16384];
    capture_stderr(call_help, NULL, out, sizeof out);
    cr_assert(strstr(out, "\nPOOLMALLOC_TEST_KNOB ") != NULL, "%s", out);
    cr_assert(strstr(out, "an option this test program declares for itself (ignored under "
                          "setuid)\n") != NULL, "%s", out);
    cr_assert(strstr(out, "\nPOOLMALLOC_GC_DEBUG ") != NULL, "the collector's too: %s", out);
}

/* ---- secure execution (setuid, setgid, capabilities) ----------------------------------------- */

struct secure_call {
    char *const *env;
    pm_options *into;
};
static void call_apply_env_secure(void *arg) {
    struct secure_call *c = arg;
    pm_options_apply_env_secure(c->env, c->into, true);
}

/* Whoever runs a privileged program must not make it write a file, print, or abort: those
 * options are ignored, silently; harmless tuning still applies. */
Test(options_secure, only_harmless_tuning_applies_and_nothing_is_said) {
    char *env[] = {"POOLMALLOC_STRICT=1", "POOLMALLOC_STATS_FILE=/tmp/owned-by-root",
                   "POOLMALLOC_STATS=1", "POOLMALLOC_VERBOSE=1", "POOLMALLOC_HELP=1",
                   "POOLMALLOC_ARENA_SIZE=2M", "POOLMALLOC_GC_DEBUG=stats",
                   "POOLMALLOC_MMAP_THRESHOLD=64K", "POOLMALLOC_PURGE_DELAY=0",
                   "POOLMALLOC_GC_THRESHOLD=100,2,2", "POOLMALLOC_POISON=1",
                   "POOLMALLOC_MMAP_THRESHOLD=12Q", "POOLMALLOC_TYPO=1", NULL};
    pm_options o = defaults();
    pm_gc_options = gc_defaults;
    struct secure_call c = {env, &o};
    char out[4096];
    capture_stderr(call_apply_env_secure, &c, out, sizeof out);
    cr_assert_str_empty(out, "a privileged program says nothing: %s", out);
    cr_assert(!o.strict && !o.stats && !o.verbose, "output and abort options ignored");
    cr_assert_str_empty(o.stats_file, "no file named by the user");
    cr_assert_eq(o.arena_size, 4 << 20, "geometry is not the user's to choose");
    cr_assert_eq(pm_gc_options.debug, 0);
    cr_assert_eq(o.mmap_threshold, 64 * 1024, "tuning applies (the bad value after it does not)");
    cr_assert_eq(o.purge_delay_ms, 0);
    cr_assert(o.poison);
    cr_assert_eq(pm_gc_options.threshold[0], 100);
}

/* STRICT under secure execution: a bad value must not end the program (the test would exit 2). */
Test(options_secure, strict_cannot_abort_a_privileged_program) {
    char *env[] = {"POOLMALLOC_STRICT=1", "POOLMALLOC_ARENA_SIZE=3M", "POOLMALLOC_FOO=1", NULL};
    pm_options o = defaults();
    cr_assert_eq(pm_options_apply_env_secure(env, &o, true), 0);
    cr_assert(!o.strict);
}

Test(options_secure, the_same_environment_unprivileged_is_obeyed) {
    char *env[] = {"POOLMALLOC_STATS_FILE=/tmp/x", "POOLMALLOC_ARENA_SIZE=2M", NULL};
    pm_options o = defaults();
    cr_assert_eq(pm_options_apply_env_secure(env, &o, false), 0);
    cr_assert_str_eq(o.stats_file, "/tmp/x");
    cr_assert_eq(o.arena_size, 2 << 20);
}

/* Every option's description says whether it is ignored under setuid. */
Test(options_secure, the_table_documents_the_secure_rule) {
    for (size_t i = 0; i < pm_options_count(); i++) {
        const pm_option_desc *d = pm_option_at(i);
        bool says = strstr(d->help, "ignored under setuid") != NULL;
        cr_assert_eq(says, !(d->flags & PM_OPT_SECURE_OK), "%s: '%s'", d->name, d->help);
    }
}

/* ---- the late environment (first malloc before libc set environ) ---------------------------- */

static void call_refresh(void *arg) {
    (void)arg;
    pm_options_refresh();
}

Test(options_late, no_environment_yet_defers_and_refresh_applies_it) {
    pm_init();
    pm_options_defaults(&pm_opt);
    setenv("POOLMALLOC_MMAP_THRESHOLD", "64K", 1);
    setenv("POOLMALLOC_ARENA_SIZE", "2M", 1);
    setenv("POOLMALLOC_PURGE_DELAY", "never", 1);
    cr_assert(pm_options_init_from(NULL), "environ == NULL: deferred");
    cr_assert(pm_options_pending());
    cr_assert_eq(pm_opt.mmap_threshold, 128 * 1024, "nothing applied yet");
    char out[4096];
    capture_stderr(call_refresh, NULL, out, sizeof out);
    cr_assert(!pm_options_pending());
    cr_assert_eq(pm_opt.mmap_threshold, 64 * 1024, "late-safe options apply");
    cr_assert_eq(pm_opt.purge_delay_ms, -1);
    cr_assert_eq(pm_opt.arena_size, 4 << 20, "the arena size cannot change once memory is in use");
    cr_assert_str_eq(out, "poolmalloc: POOLMALLOC_ARENA_SIZE='2M' not applied: the environment "
                          "became readable only after memory was in use, so it keeps 4M\n");
    capture_stderr(call_refresh, NULL, out, sizeof out);
    cr_assert_str_empty(out, "applied once: %s", out);
}

Test(options_late, an_empty_environment_also_defers) {
    char *empty[] = {NULL};
    cr_assert(pm_options_init_from(empty));
    char *some[] = {"HOME=/", NULL};
    pm_options_refresh(); /* environ is set in this process: the pending read happens now */
    cr_assert(!pm_options_pending());
    cr_assert(!pm_options_init_from(some), "a real environment is read at once");
    cr_assert(!pm_options_pending());
}

/* ---- probes: this binary re-executed with a chosen environment ---------------------------- */

static void print_stats_json(void) {
    fflush(stdout);
    pm_stats_print_fd(1, 1);
}

static void probe_alloc_8k(void) {
    void *p = pm_malloc(8192);
    print_stats_json();
    pm_free(p);
}

/* The same after the allocator has started (the first probe tests the very first malloc). */
static void probe_alloc_8k_later(void) {
    pm_free(pm_malloc(16));
    probe_alloc_8k();
}

static void probe_alloc_small(void) {
    void *p = pm_malloc(64);
    print_stats_json();
    pm_free(p);
}

/* Fills many pools of 1000-byte blocks (about n_mib MiB), then frees them all. */
static void churn(size_t n_mib) {
    size_t n = n_mib * 1024 * 1024 / 1000;
    void **blocks = calloc(n, sizeof *blocks); /* libc's calloc: this is the test program */
    for (size_t i = 0; i < n; i++) {
        blocks[i] = pm_malloc(1000);
        memset(blocks[i], 1, 1000); /* touch it: purging then has resident memory to return */
    }
    for (size_t i = 0; i < n; i++)
        pm_free(blocks[i]);
    free(blocks);
    print_stats_json();
}
static void probe_churn_4m(void) { churn(4); }
static void probe_churn_14m(void) { churn(14); }

static void probe_large_reuse(void) {
    for (int i = 0; i < 4; i++) {
        void *p = pm_malloc(1 << 20);
        memset(p, 1, 4096);
        pm_free(p);
    }
    print_stats_json();
}

static void probe_poison(void) {
    unsigned char *p = pm_malloc(64);
    printf("new=%02x,%02x\n", p[0], p[63]);
    pm_free(p);
    printf("freed=%02x,%02x\n", p[16], p[63]); /* the first 16 bytes hold the free-list link */
}

static void probe_nothing(void) {
    pm_free(pm_malloc(1));
}

PM_PROBES({"alloc_8k", probe_alloc_8k}, {"alloc_8k_later", probe_alloc_8k_later},
          {"alloc_small", probe_alloc_small},
          {"churn_4m", probe_churn_4m}, {"churn_14m", probe_churn_14m},
          {"large_reuse", probe_large_reuse}, {"poison", probe_poison},
          {"nothing", probe_nothing})

static long long probe_number(const char *probe, const char *const *vars, const char *key) {
    static probe_result r;
    run_probe(probe, vars, &r);
    cr_assert(probe_exited_ok(&r), "probe %s failed (status %d): %s", probe, r.status, r.err);
    cr_assert_str_empty(r.err, "probe %s warned: %s", probe, r.err);
    long long v = json_number(r.out, key);
    cr_assert_geq(v, 0, "probe %s printed no %s: %s", probe, key, r.out);
    return v;
}

Test(options_behaviour, mmap_threshold_sends_requests_to_mmap) {
    const char *low[] = {"POOLMALLOC_MMAP_THRESHOLD=4K", NULL};
    cr_assert_eq(probe_number("alloc_8k", NULL, "large_blocks_in_use"), 0,
                 "8 KiB is a pool block by default");
    cr_assert_eq(probe_number("alloc_8k_later", low, "large_blocks_in_use"), 1,
                 "8 KiB goes to its own mapping above a 4K threshold");
}

/* The options must already hold for the first malloc of a process (it reads them). */
Test(options_behaviour, mmap_threshold_holds_for_the_first_malloc) {
    const char *low[] = {"POOLMALLOC_MMAP_THRESHOLD=4K", NULL};
    cr_assert_eq(probe_number("alloc_8k", low, "large_blocks_in_use"), 1,
                 "the first malloc, 8 KiB, must go to its own mapping above a 4K threshold");
}

Test(options_behaviour, arena_size_sets_the_mapping_size) {
    const char *one[] = {"POOLMALLOC_ARENA_SIZE=1M", NULL};
    const char *two[] = {"POOLMALLOC_ARENA_SIZE=2M", NULL};
    cr_assert_eq(probe_number("alloc_small", NULL, "bytes_mapped"), 4 << 20);
    cr_assert_eq(probe_number("alloc_small", one, "bytes_mapped"), 1 << 20);
    cr_assert_eq(probe_number("alloc_small", two, "bytes_mapped"), 2 << 20);
}

Test(options_behaviour, purge_delay_zero_purges_at_once_and_never_does_not) {
    const char *now[] = {"POOLMALLOC_PURGE_DELAY=0", NULL};
    const char *never[] = {"POOLMALLOC_PURGE_DELAY=-1", NULL};
    cr_assert_gt(probe_number("churn_4m", now, "purged_bytes"), 0);
    cr_assert_eq(probe_number("churn_4m", never, "purged_bytes"), 0);
}

Test(options_behaviour, arena_retain_keeps_empty_arenas) {
    const char *keep_none[] = {"POOLMALLOC_PURGE_DELAY=0", "POOLMALLOC_ARENA_RETAIN=0", NULL};
    const char *keep_all[] = {"POOLMALLOC_PURGE_DELAY=0", "POOLMALLOC_ARENA_RETAIN=1024", NULL};
    cr_assert_gt(probe_number("churn_14m", keep_none, "arenas_unmapped"), 0);
    cr_assert_eq(probe_number("churn_14m", keep_all, "arenas_unmapped"), 0);
    cr_assert_geq(probe_number("churn_14m", keep_all, "arenas"), 3);
}

Test(options_behaviour, large_cache_zero_disables_reuse) {
    const char *off[] = {"POOLMALLOC_LARGE_CACHE=0", NULL};
    cr_assert_gt(probe_number("large_reuse", NULL, "large_cache_hits"), 0);
    cr_assert_eq(probe_number("large_reuse", off, "large_cache_hits"), 0);
    cr_assert_eq(probe_number("large_reuse", off, "large_cached_bytes"), 0);
}

Test(options_behaviour, poison_fills_new_and_freed_blocks) {
    static probe_result r;
    const char *on[] = {"POOLMALLOC_POISON=1", NULL};
    run_probe("poison", on, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert_str_eq(r.out, "new=cd,cd\nfreed=dd,dd\n");
    run_probe("poison", NULL, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert(strstr(r.out, "new=cd,cd") == NULL, "no poison by default: %s", r.out);
}

Test(options_behaviour, verbose_prints_one_line_per_option) {
    static probe_result r;
    const char *vars[] = {"POOLMALLOC_VERBOSE=1", "POOLMALLOC_MMAP_THRESHOLD=4K", NULL};
    run_probe("nothing", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert(strstr(r.err, "poolmalloc: POOLMALLOC_MMAP_THRESHOLD=4K  (default 128K)\n") != NULL,
              "%s", r.err);
    cr_assert(strstr(r.err, "poolmalloc: POOLMALLOC_ARENA_SIZE=4M\n") != NULL, "%s", r.err);
    cr_assert_eq(count_lines(r.err), (int)pm_options_count() - 1, "all but HELP: %s", r.err);
    run_probe("nothing", NULL, &r);
    cr_assert_str_empty(r.err, "quiet by default: %s", r.err);
}

Test(options_behaviour, help_lists_every_option) {
    static probe_result r;
    const char *vars[] = {"POOLMALLOC_HELP=1", NULL};
    run_probe("nothing", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    for (size_t i = 0; i < pm_options_count(); i++) {
        const char *def;
        char want[128];
        snprintf(want, sizeof want, "\nPOOLMALLOC_%s ", pm_options_name(i, &def));
        cr_assert(strstr(r.err, want) != NULL, "help lacks %s: %s", want, r.err);
    }
    cr_assert(strstr(r.err, "1K..128K") != NULL, "%s", r.err);
}

Test(options_behaviour, bad_environment_warns_once_and_runs) {
    static probe_result r;
    const char *vars[] = {"POOLMALLOC_MMAP_THRESHOLD=12Q", NULL};
    run_probe("alloc_8k", vars, &r);
    cr_assert(probe_exited_ok(&r), "%s", r.err);
    cr_assert_str_eq(r.err, "poolmalloc: POOLMALLOC_MMAP_THRESHOLD='12Q' ignored: expected a "
                            "size from 1K to 128K\n");
    cr_assert_eq(json_number(r.out, "mmap_threshold"), 128 * 1024);
}

Test(options_behaviour, strict_environment_exits_2) {
    static probe_result r;
    const char *vars[] = {"POOLMALLOC_ARENA_SIZE=3M", "POOLMALLOC_STRICT=1", NULL};
    run_probe("nothing", vars, &r);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 2, "status %d", r.status);
    cr_assert_str_eq(r.err, "poolmalloc: POOLMALLOC_ARENA_SIZE='3M' rejected (POOLMALLOC_STRICT=1): "
                            "expected 1M, 2M or 4M\n");
}

/* ---- the wrapper script (scripts/poolmalloc, generated by configure) --------------------- */

/* Runs a shell command, returning its exit status and output (stdout and stderr). */
static int shell(const char *cmd, char *out, size_t len) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    return pclose(p);
}

static const char *wrapper(void) {
    static char path[1024];
    const char *top = getenv("PM_TOP_BUILDDIR");
    if (top == NULL)
        cr_skip_test("PM_TOP_BUILDDIR is not set (run through make check)");
    snprintf(path, sizeof path, "%s/scripts/poolmalloc", top);
    if (access(path, X_OK) != 0)
        cr_skip_test("%s is not built", path);
    return path;
}

Test(wrapper, help_lists_every_option_with_its_default) {
    static char out[65536];
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "env POOLMALLOC_FOO=1 %s --help 2>&1", wrapper());
    cr_assert_eq(shell(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(starts_with(out, "usage: poolmalloc "), "%s", out);
    cr_assert(strstr(out, "unknown option") == NULL, "the user's variables stay out: %s", out);
    for (size_t i = 0; i < pm_options_count(); i++) {
        const char *def;
        const char *name = pm_options_name(i, &def);
        if (strcmp(name, "TEST_KNOB") == 0)
            continue; /* this test program's own option, not the library's */
        char want[128];
        snprintf(want, sizeof want, "\nPOOLMALLOC_%s ", name);
        const char *line = strstr(out, want);
        cr_assert_not_null(line, "--help lacks %s", name);
        if (def[0] != 0) {
            snprintf(want, sizeof want, " %s ", def);
            const char *eol = strchr(line + 1, '\n');
            const char *hit = strstr(line, want);
            cr_assert(hit != NULL && (eol == NULL || hit < eol), "%s: no default %s", name, def);
        }
    }
}

Test(wrapper, sets_options_and_preloads_the_library) {
    static char out[65536];
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "%s --verbose --set MMAP_THRESHOLD=4K --set=poolmalloc_purge_delay=0 -- "
             "sh -c 'echo \"preload=$LD_PRELOAD\"' 2>&1", wrapper());
    cr_assert_eq(shell(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "poolmalloc: POOLMALLOC_MMAP_THRESHOLD=4K  (default 128K)\n") != NULL,
              "%s", out);
    cr_assert(strstr(out, "poolmalloc: POOLMALLOC_PURGE_DELAY=0  (default 250)\n") != NULL,
              "%s", out);
    cr_assert(strstr(out, "libpoolmalloc.so") != NULL, "%s", out);
}

Test(wrapper, stats_flags) {
    static char out[65536];
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s --stats -- bash -c 'exit 3' 2>&1", wrapper());
    int status = shell(cmd, out, sizeof out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 3, "the command's status comes back");
    cr_assert(strstr(out, "poolmalloc statistics, pid ") != NULL, "%s", out);
    snprintf(cmd, sizeof cmd, "%s --stats=json true 2>&1", wrapper());
    cr_assert_eq(shell(cmd, out, sizeof out), 0);
    cr_assert(starts_with(out, "{\"allocator\":\"poolmalloc\""), "%s", out);
}

Test(wrapper, rejects_bad_usage) {
    static char out[4096];
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s --set MMAP_THRESHOLD true 2>&1", wrapper());
    int status = shell(cmd, out, sizeof out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "%s", out);
    cr_assert(strstr(out, "expected NAME=VALUE") != NULL, "%s", out);
    snprintf(cmd, sizeof cmd, "%s --frobnicate true 2>&1", wrapper());
    status = shell(cmd, out, sizeof out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "%s", out);
    snprintf(cmd, sizeof cmd, "%s 2>&1", wrapper());
    status = shell(cmd, out, sizeof out);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "no command: %s", out);
}
