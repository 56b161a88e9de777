/*
 * test-gc-example.c: runs the README's example program (tests/integration/example-objects) and checks
 * what it reports: the cycles survive refcounting, the collector frees them all, the weak
 * reference callback runs once, and automatic collection keeps up with the churn.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char output[16384];

static void run_example(void) {
    const char *dir = getenv("PM_TOP_BUILDDIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s/tests/integration/example-objects", dir ? dir : ".");
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t n = fread(output, 1, sizeof output - 1, p);
    output[n] = 0;
    int status = pclose(p);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed:\n%s", cmd, output);
}

static void expect(const char *line) {
    cr_assert(strstr(output, line) != NULL, "missing \"%s\" in:\n%s", line, output);
}

Test(example, reports_the_collection) {
    run_example();
    expect("built 1000 people: 2002 tracked objects"); /* people, friend lists, town, weakref */
    expect("while the town is referenced: collected 0\n");
    expect("after dropping the town: 2001 tracked objects remain, weakref alive\n");
    expect("full collection: collected 2000 objects");
    expect("0 uncollectable\n");
    expect("weak reference callback: person-0 is gone\n");
    expect("weakref now cleared, 1 callback(s)\n");
    expect("after 5000 rounds of two friends dropped: 0 tracked objects remain\n");
    const char *g0 = strstr(output, "generation 0: ");
    cr_assert_not_null(g0);
    cr_assert_gt(atoi(g0 + strlen("generation 0: ")), 0, "automatic collections ran");
}
