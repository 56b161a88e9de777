/*
 * measure: runs a command and reports its wall time, CPU time and peak resident memory.
 *
 *     measure RESULT_FILE [-e NAME=VALUE]... COMMAND [ARGS...]
 *
 * scripts/compare starts every run through this small program rather than directly from
 * Python, because Linux carries a process's peak RSS across exec: a child forked from the
 * 25 MiB Python interpreter would report at least 25 MiB whatever it ran. A child forked from
 * this program starts from about a megabyte. The command inherits the environment plus the -e
 * settings, which are made in the child only: LD_PRELOAD is passed that way, so the allocator
 * under test is not loaded into this program. stdin, stdout and stderr are the command's.
 *
 * RESULT_FILE receives key=value lines: wall_s, user_s, sys_s, maxrss_kib (the largest of the
 * command and the children it waited for, as getrusage reports), and exit (the exit status, or
 * 128 + the signal number). The program's own exit status is the command's; 127 if it could not
 * be started.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds(struct timeval tv) {
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int cmd = 2;
    while (cmd + 1 < argc && strcmp(argv[cmd], "-e") == 0) {
        if (strchr(argv[cmd + 1], '=') == NULL) {
            fprintf(stderr, "measure: -e '%s': expected NAME=VALUE\n", argv[cmd + 1]);
            return 2;
        }
        cmd += 2;
    }
    if (cmd >= argc) {
        fprintf(stderr, "usage: measure RESULT_FILE [-e NAME=VALUE]... COMMAND [ARGS...]\n");
        return 2;
    }
    FILE *result = fopen(argv[1], "w");
    if (result == NULL) {
        fprintf(stderr, "measure: cannot write %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    double start = now();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "measure: fork: %s\n", strerror(errno));
        return 2;
    }
    if (pid == 0) {
        for (int i = 3; i < cmd; i += 2)
            putenv(argv[i]);
        execvp(argv[cmd], argv + cmd);
        fprintf(stderr, "measure: cannot run %s: %s\n", argv[cmd], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage usage;
    while (wait4(pid, &status, 0, &usage) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "measure: wait4: %s\n", strerror(errno));
            return 2;
        }
    }
    double wall = now() - start;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    fprintf(result, "wall_s=%.6f\nuser_s=%.6f\nsys_s=%.6f\nmaxrss_kib=%ld\nexit=%d\n", wall,
            seconds(usage.ru_utime), seconds(usage.ru_stime), usage.ru_maxrss, code);
    if (fclose(result) != 0) {
        fprintf(stderr, "measure: cannot write %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    return code;
}
