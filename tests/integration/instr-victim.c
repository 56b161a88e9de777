/*
 * instr-victim.c: the program test-debug runs under LD_PRELOAD=libpoolmalloc.so with
 * POOLMALLOC_DEBUG / LEAKS / PROF. Built without poolmalloc, at -O0 with frame pointers and
 * -rdynamic (so that dladdr names site_a and site_b), it commits one memory bug, or
 * allocates in known amounts from known sites, as argv[1] says.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Volatile, so that the compiler drops neither the stores to freed memory nor a malloc
 * whose block is freed at once (make's CFLAGS may say -O2). */
volatile char *volatile victim_block;
void *volatile victim_last;

/* Not tail calls (the store comes after), so that each site has a frame of its own. */
__attribute__((noinline)) void *site_a(size_t n) {
    void *p = malloc(n);
    victim_last = p;
    return p;
}
__attribute__((noinline)) void *site_b(size_t n) {
    void *p = malloc(n);
    victim_last = p;
    return p;
}

static int overflow(size_t size, size_t at) {
    victim_block = malloc(size);
    victim_block[at] = 'x';
    free((void *)victim_block);
    return 0;
}

static int write_after_free(size_t offset, int churn) {
    victim_block = malloc(64);
    for (int i = 0; i < 64; i++)
        victim_block[i] = 1;
    free((void *)victim_block);
    victim_block[offset] = 'x';
    /* churn: push the block out of the quarantine, where it is checked on its way out */
    for (int i = 0; i < churn; i++) {
        victim_last = malloc(4096);
        free(victim_last);
    }
    return 0;
}

/* 7 blocks of 100 bytes from site_a and 3 of 1000 from site_b stay allocated; the rest is
 * freed. */
static int leaks(void) {
    for (int i = 0; i < 10; i++) {
        void *p = site_a(100);
        if (i >= 7)
            free(p);
    }
    for (int i = 0; i < 5; i++) {
        void *p = site_b(1000);
        if (i >= 3)
            free(p);
    }
    return 0;
}

/* site_a allocates three times the bytes site_b does, all kept live. */
static int profile(void) {
    for (int i = 0; i < 30000; i++) {
        site_a(192);
        site_a(192);
        site_a(192);
        site_b(192);
    }
    return 0;
}

/* Aligned blocks of several alignments, written in full, freed: no report expected. */
static int aligned(void) {
    size_t aligns[] = {32, 64, 256, 4096, 65536};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        void *p = NULL;
        if (posix_memalign(&p, aligns[i], 300000) != 0 || (size_t)p % aligns[i] != 0)
            return 2;
        memset(p, 7, 300000);
        free(p);
        p = aligned_alloc(aligns[i], aligns[i] * 2);
        memset(p, 7, aligns[i] * 2);
        p = realloc(p, 5);
        free(p);
    }
    puts("aligned ok");
    return 0;
}

/* The blocks of site_a are all freed (by this thread, or by another one when `remote`), those
 * of site_b stay: the live profile must hold site_b alone, the cumulative one both, 3 to 1. */
static void *free_all(void *arg) {
    void **blocks = arg;
    for (int i = 0; i < 90000; i++)
        free(blocks[i]);
    return NULL;
}

static int profile_freed(int remote) {
    void **blocks = malloc(90000 * sizeof *blocks);
    if (blocks == NULL)
        return 2;
    for (int i = 0; i < 30000; i++) {
        blocks[3 * i] = site_a(192);
        blocks[3 * i + 1] = site_a(192);
        blocks[3 * i + 2] = site_a(192);
        site_b(192);
    }
    pthread_t t;
    if (!remote)
        free_all(blocks);
    else if (pthread_create(&t, NULL, free_all, blocks) != 0 || pthread_join(t, NULL) != 0)
        return 3;
    free(blocks);
    return 0;
}

/* pm_owns is right for whole blocks and wrong for the rest, under any mode. */
static int owns(void) {
    int (*pm_owns)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "pm_owns");
    if (pm_owns == NULL)
        return 3;
    static const size_t sizes[] = {1, 24, 100, 1000, 5000, 40000, 300000};
    static const size_t aligns[] = {64, 256, 4096};
    int bad = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *p = malloc(sizes[i]);
        void *q = NULL;
        if (posix_memalign(&q, aligns[i % 3], sizes[i]) != 0)
            return 2;
        if (pm_owns(p) != 1 || pm_owns(q) != 1) {
            fprintf(stderr, "pm_owns(block of %zu bytes) != 1\n", sizes[i]);
            bad = 1;
        }
        if (pm_owns(p + 16) != 0) {
            fprintf(stderr, "pm_owns(inside a block of %zu bytes) != 0\n", sizes[i]);
            bad = 1;
        }
        free(p);
        free(q);
    }
    int local;
    if (pm_owns(&local) != 0 || pm_owns(&bad) != 0) {
        fprintf(stderr, "pm_owns(not a heap block) != 0\n");
        bad = 1;
    }
    puts(bad ? "owns wrong" : "owns ok");
    return bad;
}

/* A profile asked for by signal while the program allocates nothing more: it must appear
 * anyway (within 10 s), written by poolmalloc while this thread only sleeps. */
static int prof_signal_idle(void) {
    profile();
    raise(SIGUSR2);
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 1000; i++) {
        if (access("sig.heap.1.alloc.folded", F_OK) == 0) {
            nanosleep(&tick, NULL); /* written last: let its writer close it */
            return 0;
        }
        nanosleep(&tick, NULL);
    }
    return 5;
}

static int prof_dump(const char *path) {
    int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "pm_prof_dump");
    if (dump == NULL)
        return 3;
    profile();
    return dump(path) == 0 ? 0 : 4;
}

static int prof_signal(void) {
    profile();
    raise(SIGUSR2);
    profile(); /* the profile is written at the next sampled allocation */
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 1;
    const char *what = argv[1];
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;
    if (strcmp(what, "overflow") == 0)
        return overflow(24, 24);
    if (strcmp(what, "overflow-large") == 0)
        return overflow(200000, 200000 + n);
    if (strcmp(what, "underflow") == 0) {
        victim_block = malloc(40);
        victim_block[-1] = 'x';
        free((void *)victim_block);
        return 0;
    }
    if (strcmp(what, "realloc-overflow") == 0) {
        victim_block = malloc(24);
        victim_block[24] = 'x';
        victim_block = realloc((void *)victim_block, 100);
        return 0;
    }
    if (strcmp(what, "write-after-free") == 0)
        return write_after_free(n, 0);
    if (strcmp(what, "write-after-free-churn") == 0)
        return write_after_free(n, 20000);
    if (strcmp(what, "double-free") == 0) {
        victim_block = malloc(48);
        free((void *)victim_block);
        free((void *)victim_block);
        return 0;
    }
    if (strcmp(what, "leaks") == 0)
        return leaks();
    if (strcmp(what, "profile") == 0)
        return profile();
    if (strcmp(what, "aligned") == 0)
        return aligned();
    if (strcmp(what, "prof-dump") == 0 && argc > 2)
        return prof_dump(argv[2]);
    if (strcmp(what, "prof-signal") == 0)
        return prof_signal();
    if (strcmp(what, "prof-signal-idle") == 0)
        return prof_signal_idle();
    if (strcmp(what, "profile-freed") == 0)
        return profile_freed(0);
    if (strcmp(what, "profile-freed-remote") == 0)
        return profile_freed(1);
    if (strcmp(what, "owns") == 0)
        return owns();
    return 1;
}
