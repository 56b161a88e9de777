/*
 * early-prog.c: a program whose first malloc runs before libc has set `environ` (issue 7,
 * case 11), run under LD_PRELOAD=libpoolmalloc.so by test-lifecycle.c.
 *
 * The mechanism: an IFUNC resolver in the program itself. The dynamic loader calls it while it
 * relocates the program, before any initialiser has run, and this program's copy of `environ`
 * (a copy relocation, which every library's references bind to) is still NULL then. The
 * program prints whether that was so, so that the test can tell a mechanism that did not
 * happen from an allocator that handled it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static int environ_was_null = -1;
static char *early_block;

static int answer_impl(void) { return 42; }

static int (*resolve_answer(void))(void) {
    environ_was_null = environ == NULL;
    early_block = malloc(100); /* the process's first allocation */
    if (early_block != NULL)
        memset(early_block, 1, 100);
    return answer_impl;
}

int early_answer(void) __attribute__((ifunc("resolve_answer")));

int main(void) {
    printf("environ-null-at-first-malloc=%d answer=%d\n", environ_was_null, early_answer());
    for (int i = 0; i < 100; i++)
        free(malloc((size_t)i * 100 + 1));
    free(early_block);
    return 0;
}
