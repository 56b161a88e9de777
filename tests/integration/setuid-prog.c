/*
 * setuid-prog.c: a program linked with -lpoolmalloc, installed setuid root by test-lifecycle.c
 * (issue 7, case 4). It allocates a little and prints whether the kernel ran it in secure
 * execution mode (AT_SECURE), so that a run on a nosuid filesystem is told apart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

int main(void) {
    for (int i = 0; i < 200; i++) {
        char *p = malloc((size_t)i * 37 + 1);
        if (p == NULL)
            return 3;
        memset(p, 1, (size_t)i * 37 + 1);
        free(p);
    }
    printf("secure=%lu euid=%d uid=%d\n", getauxval(AT_SECURE), (int)geteuid(), (int)getuid());
    return 0;
}
