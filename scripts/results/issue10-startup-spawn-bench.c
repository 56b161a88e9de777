/* The start-up benchmark of scripts/results/issue10-startup-2026-12-03.md: starts /bin/true
 * N times under each allocator in turn (posix_spawn, interleaved, "-" for none), and prints
 * the median and quartiles of the time from the spawn to the child's exit, in microseconds.
 * Build: gcc -O2 -o spawn issue10-startup-spawn-bench.c; run:
 * ./spawn 800 - .libs/libpoolmalloc.so /usr/lib/x86_64-linux-gnu/libmimalloc.so.2 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: spawn N LIB|- [LIB|-]...\n");
        return 2;
    }
    int n = atoi(argv[1]), k = argc - 2;
    double *t = calloc((size_t)n * k, sizeof *t);
    if (n < 1 || t == NULL)
        return 2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            char preload[4096];
            snprintf(preload, sizeof preload, "LD_PRELOAD=%s",
                     strcmp(argv[2 + j], "-") ? argv[2 + j] : "");
            char *env[] = {preload, NULL}, *args[] = {"/bin/true", NULL};
            pid_t pid;
            int status;
            double start = now_us();
            if (posix_spawn(&pid, "/bin/true", NULL, NULL, args, env) != 0 ||
                waitpid(pid, &status, 0) != pid)
                return 1;
            t[(size_t)j * n + i] = now_us() - start;
        }
    for (int j = 0; j < k; j++) {
        double *v = t + (size_t)j * n;
        qsort(v, n, sizeof *v, by_value);
        printf("%-60s median %.0f us  p25 %.0f  p75 %.0f\n", argv[2 + j], v[n / 2], v[n / 4],
               v[3 * n / 4]);
    }
    return 0;
}
