/*
 * iobuf: buffers of 128 KiB to 1 MiB (log-uniform), the size programs pick for I/O, compression
 * and scratch buffers, replaced at random, sixteen live per thread. Each new buffer is filled
 * only as far as a read would fill it (4-32 KiB), so the allocator's own cost per buffer shows:
 * its search for a place and its locks, and whether it reuses pages already faulted in, rather
 * than the cost of touching every page (`large` and `bigbuf` measure that). -t N runs N threads,
 * each with its own buffers, all through the same allocator (see common.h for the arguments
 * and output).
 */
#include "common.h"

#define LIVE_BUFFERS 16
#define MIN_BUFFER (128u << 10)
#define MAX_BUFFER (1u << 20)
#define MIN_FILL (4u << 10)
#define MAX_FILL (32u << 10)
#define IOBUF_STEPS 400000

typedef struct iobuf_thread {
    uint64_t seed;
    uint64_t steps;
} iobuf_thread;

typedef struct buffer {
    unsigned char *p;
    size_t size, filled;
} buffer;

static buffer buffer_new(uint64_t *seed) {
    buffer b;
    b.size = wl_rand_log(seed, MIN_BUFFER, MAX_BUFFER);
    b.filled = wl_rand_range(seed, MIN_FILL, MAX_FILL);
    b.p = wl_malloc("iobuf", b.size);
    memset(b.p, (int)(b.filled & 0xff), b.filled);
    b.p[b.size - 1] = 0x5a; /* the last byte: the whole size must be usable */
    return b;
}

static void buffer_free(buffer b) {
    if (b.p[0] != (unsigned char)(b.filled & 0xff) ||
        b.p[b.filled - 1] != (unsigned char)(b.filled & 0xff) || b.p[b.size - 1] != 0x5a)
        wl_die("iobuf", "a buffer was overwritten: allocator bug");
    free(b.p);
}

static void *iobuf_main(void *arg) {
    iobuf_thread *t = arg;
    buffer live[LIVE_BUFFERS];
    for (int i = 0; i < LIVE_BUFFERS; i++)
        live[i] = buffer_new(&t->seed);
    for (uint64_t step = 0; step < t->steps; step++) {
        size_t slot = (size_t)(wl_rand(&t->seed) % LIVE_BUFFERS);
        buffer_free(live[slot]);
        live[slot] = buffer_new(&t->seed);
    }
    for (int i = 0; i < LIVE_BUFFERS; i++)
        buffer_free(live[i]);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 2, "buffers of 128 KiB-1 MiB replaced at random, "
                                                "4-32 KiB of each filled");
    iobuf_thread threads[WL_MAX_THREADS];
    for (int i = 0; i < args.threads; i++)
        threads[i] = (iobuf_thread){.seed = 0x10bf0000u + (uint64_t)i,
                                    .steps = wl_scaled(IOBUF_STEPS, args.scale)};
    wl_run_threads("iobuf", args.threads, iobuf_main, threads, sizeof threads[0]);
    wl_report(wl_scaled(IOBUF_STEPS, args.scale) * (uint64_t)args.threads);
    return 0;
}
