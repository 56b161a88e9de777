/*
 * test-misuse.c: a pointer poolmalloc did not hand out, or one it already took back, ends the
 * process with a clear message on stderr and SIGABRT, as glibc's checks do; it is never
 * trusted.
 *
 * Each misuse runs twice: as a Criterion test that expects SIGABRT, and in a forked child whose
 * stderr goes to a pipe, so that the message itself is checked too. The test binary links only
 * the core, so plain malloc() here is glibc's and gives foreign pointers.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "poolmalloc.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* Each misuse records the pointer it is about to misuse (note), for the message check, in
 * memory shared with the parent (NULL when running as a plain Criterion test). */
typedef void *(*misuse_fn)(void);
static void *volatile *misused_pointer;

static void *note(void *p) {
    if (misused_pointer != NULL)
        *misused_pointer = p;
    return p;
}

static void *double_free_small(void) {
    void *p = pm_malloc(32);
    pm_free(p);
    pm_free(note(p));
    return p;
}

static void *double_free_medium(void) {
    void *p = pm_malloc(50 * KiB);
    pm_free(p);
    pm_free(note(p));
    return p;
}

static void *double_free_large(void) {
    void *p = pm_malloc(3 * MiB);
    pm_free(p);
    pm_free(note(p));
    return p;
}

static void *double_free_after_realloc_zero(void) {
    void *p = pm_malloc(200);
    if (pm_realloc(p, 0) != NULL) /* frees p */
        return NULL;
    pm_free(note(p));
    return p;
}

static void *remote_owner_alloc(void *arg) {
    (void)arg;
    return pm_malloc(64);
}

/* The block's pool belongs to another thread: both frees take the remote path. */
static void *double_free_remote(void) {
    pthread_t t;
    void *p = NULL;
    pthread_create(&t, NULL, remote_owner_alloc, NULL);
    pthread_join(t, &p);
    pm_free(p);
    pm_free(note(p));
    return p;
}

static void *free_stack_pointer(void) {
    static volatile char *escape;
    char local[64];
    escape = local;
    pm_free(note((void *)escape));
    return (void *)escape;
}

static void *free_glibc_small(void) {
    void *p = malloc(40); /* glibc's heap */
    pm_free(note(p));
    return p;
}

static void *free_glibc_large(void) {
    void *p = malloc(8 * MiB); /* glibc's own mmap */
    pm_free(note(p));
    return p;
}

static void *free_interior_small(void) {
    char *p = pm_malloc(100);
    pm_free(note(p + 32));
    return p + 32;
}

/* A pointer into an arena's header: inside an arena, but in a unit no pool ever covers (its
 * unit map entry is 0, the slot its own descriptor, which has no owner). */
static void *free_arena_header(void) {
    char *p = pm_malloc(32);
    char *header = (char *)((uintptr_t)p & ~(uintptr_t)(4 * MiB - 1)) + 4096;
    pm_free(note(header));
    return header;
}

static void *free_interior_large(void) {
    char *p = pm_malloc(2 * MiB);
    pm_free(note(p + 8192));
    return p + 8192;
}

static void *realloc_foreign(void) {
    void *p = malloc(24);
    if (pm_realloc(note(p), 100) != NULL)
        return NULL;
    return p;
}

static void *usable_size_foreign(void) {
    void *p = malloc(24);
    (void)pm_usable_size(note(p));
    return p;
}

static void *free_sized_too_big(void) {
    void *p = pm_malloc(100);
    pm_free_sized(note(p), 5000);
    return p;
}

/* ---- the process aborts ------------------------------------------------------------------ */

#define ABORTS(name) Test(misuse, name##_aborts, .signal = SIGABRT) { (void)name(); }

ABORTS(double_free_small)
ABORTS(double_free_medium)
ABORTS(double_free_large)
ABORTS(double_free_after_realloc_zero)
ABORTS(double_free_remote)
ABORTS(free_stack_pointer)
ABORTS(free_glibc_small)
ABORTS(free_glibc_large)
ABORTS(free_interior_small)
ABORTS(free_interior_large)
ABORTS(free_arena_header)
ABORTS(realloc_foreign)
ABORTS(usable_size_foreign)
ABORTS(free_sized_too_big)

/* ---- with a clear message ------------------------------------------------------------------- */

/* Runs fn in a child with stderr on a pipe; returns what it wrote and its wait status. The
 * child also writes the pointer fn returned, which it never reaches unless fn came back. */
static void run_in_child(misuse_fn fn, char *out, size_t cap, int *status, void **pointer) {
    void *volatile *shared = mmap(NULL, sizeof(void *), PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)shared, MAP_FAILED);
    *shared = NULL;
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        misused_pointer = shared;
        void *p = fn();
        dprintf(2, "survived misuse of %p\n", p);
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fds[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = 0;
    close(fds[0]);
    waitpid(pid, status, 0);
    *pointer = *shared;
    munmap((void *)shared, sizeof(void *));
}

static void check_message(const char *what, misuse_fn fn, const char *call, const char *words) {
    char out[4096], pointer_text[64];
    int status;
    void *pointer;
    run_in_child(fn, out, sizeof out, &status, &pointer);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "%s: the process was not aborted (status %#x); stderr: %s", what, status, out);
    cr_assert(strncmp(out, "poolmalloc: ", 12) == 0,
              "%s: the message does not start with \"poolmalloc: \": %s", what, out);
    cr_assert(strstr(out, call) != NULL, "%s: the message does not name %s: %s", what, call,
              out);
    /* words: alternatives separated by '|'; one of them must appear. */
    char alternatives[256];
    snprintf(alternatives, sizeof alternatives, "%s", words);
    bool found = false;
    for (char *save, *w = strtok_r(alternatives, "|", &save); w; w = strtok_r(NULL, "|", &save))
        found = found || strstr(out, w) != NULL;
    cr_assert(found, "%s: the message says none of \"%s\": %s", what, words, out);
    /* The exact pointer, so that a user can find it in a debugger. */
    cr_assert_not_null(pointer, "%s: the child did not record its pointer", what);
    snprintf(pointer_text, sizeof pointer_text, "%p", pointer);
    cr_assert(strstr(out, pointer_text) != NULL, "%s: the message does not show %s: %s", what,
              pointer_text, out);
    cr_assert(strchr(out, '\n') != NULL, "%s: the message is not a whole line: %s", what, out);
}

/* One test per case, so that one failing message does not hide the others. */
#define MESSAGE_TEST(name, fn, call, words)                                                    \
    Test(misuse_message, name, .timeout = 30) { check_message(#name, fn, call, words); }

MESSAGE_TEST(double_free_small, double_free_small, "free()", "double free")
MESSAGE_TEST(double_free_medium, double_free_medium, "free()", "double free")
MESSAGE_TEST(double_free_large, double_free_large, "free()", "double free")
/* The first free may have emptied the exited owner's pool and released it: then the second
 * free finds no pool at all, and "invalid pointer" is all that can be said. */
MESSAGE_TEST(double_free_remote, double_free_remote, "free()", "double free|invalid pointer")
MESSAGE_TEST(stack_pointer, free_stack_pointer, "free()", "invalid pointer")
MESSAGE_TEST(glibc_pointer, free_glibc_small, "free()", "not allocated by poolmalloc")
MESSAGE_TEST(glibc_mmapped_pointer, free_glibc_large, "free()", "not allocated by poolmalloc")
MESSAGE_TEST(interior_pointer_small, free_interior_small, "free()", "not the start of a block")
MESSAGE_TEST(interior_pointer_large, free_interior_large, "free()", "invalid pointer")
MESSAGE_TEST(arena_header_pointer, free_arena_header, "free()", "in no allocated pool")
MESSAGE_TEST(realloc_of_a_foreign_pointer, realloc_foreign, "realloc()", "invalid pointer")
MESSAGE_TEST(usable_size_of_a_foreign_pointer, usable_size_foreign, "malloc_usable_size()",
             "invalid pointer")
MESSAGE_TEST(free_sized_with_a_wrong_size, free_sized_too_big, "free_sized()", "size")
