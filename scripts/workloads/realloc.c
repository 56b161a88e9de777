/*
 * realloc: buffers grown by realloc from a few bytes to many MiB, as string builders, vectors
 * and read-the-whole-file loops grow them. Each round grows four buffers side by side (so a
 * buffer cannot always grow into the space behind it) to a random final size between 4 KiB and
 * 32 MiB, log-uniform, then frees them.
 *
 * Growth is exact, one realloc per append: appends of 1-64 bytes while a buffer is below
 * 64 KiB (a string builder that never over-allocates), then appends of up to an eighth of the
 * current size (a vector growing by 1.06x on average). Each append writes its bytes, so the
 * data must survive every move; the contents are checked before the buffer is freed.
 * -t N runs N independent copies (see common.h for the arguments and output).
 */
#include "common.h"

#define BUFFERS 4
#define SMALL_GROWTH_LIMIT (64u << 10)
#define MIN_FINAL (4u << 10)
#define MAX_FINAL (32u << 20)

typedef struct growing {
    unsigned char *data;
    size_t len, final_len;
} growing;

typedef struct realloc_thread {
    uint64_t seed;
    uint64_t rounds;
    uint64_t reallocs;
} realloc_thread;

/* The byte at offset i of every buffer: cheap to compute, different for nearby offsets. */
static unsigned char byte_at(size_t i) {
    return (unsigned char)((i * 131u) >> 3);
}

static void append(growing *g, uint64_t *seed) {
    size_t add = g->len < SMALL_GROWTH_LIMIT ? wl_rand_range(seed, 1, 64)
                                             : wl_rand_range(seed, 1, g->len / 8);
    if (g->len + add > g->final_len)
        add = g->final_len - g->len;
    unsigned char *p = realloc(g->data, g->len + add);
    if (p == NULL)
        wl_die("realloc", "out of memory");
    for (size_t i = g->len; i < g->len + add; i++)
        p[i] = byte_at(i);
    g->data = p;
    g->len += add;
}

/* Checks the start, the end and a sample of every page in between, then frees. */
static void check_and_free(growing *g) {
    for (size_t i = 0; i < g->len; i += (i < 4096 ? 1 : 4093))
        if (g->data[i] != byte_at(i))
            wl_die("realloc", "a buffer lost its contents in realloc: allocator bug");
    if (g->data[g->len - 1] != byte_at(g->len - 1))
        wl_die("realloc", "a buffer lost its tail in realloc: allocator bug");
    free(g->data);
}

static void *realloc_main(void *arg) {
    realloc_thread *t = arg;
    for (uint64_t round = 0; round < t->rounds; round++) {
        growing bufs[BUFFERS];
        for (int b = 0; b < BUFFERS; b++)
            bufs[b] = (growing){NULL, 0, wl_rand_log(&t->seed, MIN_FINAL, MAX_FINAL)};
        bool growing_any = true;
        while (growing_any) {
            growing_any = false;
            for (int b = 0; b < BUFFERS; b++) {
                if (bufs[b].len < bufs[b].final_len) {
                    append(&bufs[b], &t->seed);
                    t->reallocs++;
                    growing_any = true;
                }
            }
        }
        for (int b = 0; b < BUFFERS; b++)
            check_and_free(&bufs[b]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "buffers grown by realloc from bytes to many MiB");
    realloc_thread threads[WL_MAX_THREADS];
    for (int i = 0; i < args.threads; i++)
        threads[i] = (realloc_thread){.seed = 0x7ea11000u + (uint64_t)i,
                                      .rounds = wl_scaled(60, args.scale)};
    wl_run_threads("realloc", args.threads, realloc_main, threads, sizeof threads[0]);
    uint64_t reallocs = 0;
    for (int i = 0; i < args.threads; i++)
        reallocs += threads[i].reallocs;
    wl_report(reallocs);
    return 0;
}
