/*
 * pm-probe.h: helpers shared by test-options.c and test-stats.c.
 *
 * Options are read once, at start, from the environment. To see what an option really does,
 * a test re-executes its own binary with a chosen environment and PM_PROBE=<name>: a
 * constructor in the test file (PM_PROBE_MAIN) runs that probe before Criterion's main and
 * exits, and the parent reads the child's stdout, stderr and exit status.
 *
 * Each test program defines its probes with PM_PROBES({"name", function}, ...).
 */
#ifndef PM_TEST_PROBE_H
#define PM_TEST_PROBE_H

#include "config.h" /* first: it defines _GNU_SOURCE, which internal.h relies on */

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "options.h"

typedef struct probe_def {
    const char *name;
    void (*run)(void);
} probe_def;

typedef struct probe_result {
    int status;       /* as waitpid gives it */
    char out[65536];  /* the child's stdout */
    char err[65536];  /* the child's stderr */
} probe_result;

/* In the child: run the probe PM_PROBE names, then _exit(0) without reaching Criterion. */
#define PM_PROBES(...)                                                                         \
    static const probe_def probe_table[] = {__VA_ARGS__};                                      \
    __attribute__((constructor)) static void probe_dispatch(void) {                            \
        const char *want = getenv("PM_PROBE");                                                 \
        if (want == NULL)                                                                      \
            return;                                                                            \
        for (size_t i = 0; i < sizeof probe_table / sizeof probe_table[0]; i++)                \
            if (strcmp(probe_table[i].name, want) == 0) {                                      \
                probe_table[i].run();                                                          \
                fflush(NULL);                                                                  \
                _exit(0);                                                                      \
            }                                                                                  \
        fprintf(stderr, "no probe named %s\n", want);                                          \
        _exit(99);                                                                             \
    }

/* Reads both pipes until the child closes them (poll: neither may fill up and block it). */
static inline void probe_drain(int out_fd, int err_fd, probe_result *r) {
    size_t lens[2] = {0, 0};
    char *bufs[2] = {r->out, r->err};
    struct pollfd fds[2] = {{.fd = out_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(fds, 2, 20000) <= 0)
            break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char tmp[4096];
            ssize_t n = read(fds[i].fd, tmp, sizeof tmp);
            if (n <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            size_t room = sizeof r->out - 1 - lens[i];
            size_t take = (size_t)n < room ? (size_t)n : room;
            memcpy(bufs[i] + lens[i], tmp, take);
            lens[i] += take;
        }
    }
    r->out[lens[0]] = 0;
    r->err[lens[1]] = 0;
}

/* Runs this test binary as probe `name` with exactly the given environment entries (NULL
 * terminated "NAME=VALUE" strings) plus PM_PROBE: no stray POOLMALLOC_* from our own. */
static inline void run_probe(const char *name, const char *const *vars, probe_result *r) {
    char *envp[64];
    char probe_var[128];
    size_t n = 0;
    snprintf(probe_var, sizeof probe_var, "PM_PROBE=%s", name);
    envp[n++] = probe_var;
    for (; vars != NULL && *vars != NULL && n < 62; vars++)
        envp[n++] = (char *)*vars;
    envp[n] = NULL;

    int out[2], err[2];
    cr_assert(pipe(out) == 0 && pipe(err) == 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        close(out[1]);
        close(err[1]);
        char *argv[] = {(char *)"probe", NULL};
        execve("/proc/self/exe", argv, envp);
        _exit(98);
    }
    close(out[1]);
    close(err[1]);
    probe_drain(out[0], err[0], r);
    cr_assert(waitpid(pid, &r->status, 0) == pid);
}

static inline bool probe_exited_ok(const probe_result *r) {
    return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

/* The number after "key": in a JSON text (the first occurrence), or -1. */
static inline long long json_number(const char *json, const char *key) {
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = strstr(json, pattern);
    if (p == NULL)
        return -1;
    return strtoll(p + strlen(pattern), NULL, 10);
}

/* Captures what fn writes to fd 2 (pm_warn writes there directly, not through stdio). */
static inline void capture_stderr(void (*fn)(void *), void *arg, char *buf, size_t len) {
    int p[2];
    cr_assert(pipe(p) == 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(p[1], 2);
    close(p[1]);
    fn(arg);
    dup2(saved, 2);
    close(saved);
    size_t got = 0;
    ssize_t n;
    while (got + 1 < len && (n = read(p[0], buf + got, len - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = 0;
    close(p[0]);
}

static inline bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Lines in s. */
static inline int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

#endif /* PM_TEST_PROBE_H */
