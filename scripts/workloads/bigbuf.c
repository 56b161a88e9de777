/*
 * bigbuf: large buffers of 5-25 MiB that a program value-initialises (a std::vector<char>(n),
 * an image or a matrix cleared before use): every byte of each buffer is written by memset,
 * then read back once. About twenty buffers are live; each step frees a random one and
 * allocates a buffer of a new random size in its place.
 *
 * What this measures is whether the allocator reuses the memory of freed buffers without new
 * page faults. An allocator that unmaps each buffer on free (or maps a fresh one for each
 * request) pays a fault and a zeroed page for every 4 KiB the program clears; one that keeps
 * freed memory resident and hands it out again pays only the memset. Peak RSS shows what that
 * reuse costs in memory. -t N runs N independent copies (see common.h).
 */
#include "common.h"

#define LIVE_BUFFERS 20
#define MIN_BUFFER (5u << 20)
#define MAX_BUFFER (25u << 20)
#define BIGBUF_STEPS 400
#define PAGE 4096u

typedef struct buffer {
    unsigned char *p;
    size_t size;
} buffer;

typedef struct bigbuf_thread {
    uint64_t seed;
    uint64_t steps;
    uint64_t checksum;
} bigbuf_thread;

/* Value-initialises a new buffer, then writes one byte per page as a first use would. */
static buffer buffer_new(uint64_t *seed) {
    size_t size = wl_rand_range(seed, MIN_BUFFER, MAX_BUFFER);
    unsigned char *p = wl_malloc("bigbuf", size);
    memset(p, 0, size);
    for (size_t off = PAGE; off < size; off += PAGE)
        p[off] = (unsigned char)(off >> 12);
    wl_tag(p, size);
    return (buffer){p, size};
}

/* Reads the buffer back (a sum over one word per cache line) before freeing it, so the work
 * done on the memory is the same under every allocator and a lost page shows. */
static uint64_t buffer_free(buffer b) {
    wl_check("bigbuf", b.p, b.size);
    uint64_t sum = 0;
    for (size_t off = PAGE; off + 8 < b.size; off += PAGE) {
        if (b.p[off] != (unsigned char)(off >> 12) || b.p[off + 1] != 0)
            wl_die("bigbuf", "a buffer was overwritten: allocator bug");
        sum += b.p[off];
    }
    free(b.p);
    return sum;
}

static void *bigbuf_main(void *arg) {
    bigbuf_thread *t = arg;
    buffer live[LIVE_BUFFERS];
    for (int i = 0; i < LIVE_BUFFERS; i++)
        live[i] = buffer_new(&t->seed);
    for (uint64_t step = 0; step < t->steps; step++) {
        size_t slot = (size_t)(wl_rand(&t->seed) % LIVE_BUFFERS);
        t->checksum += buffer_free(live[slot]);
        live[slot] = buffer_new(&t->seed);
    }
    for (int i = 0; i < LIVE_BUFFERS; i++)
        t->checksum += buffer_free(live[i]);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "value-initialised buffers of 5-25 MiB replaced "
                                                "at random, twenty live");
    bigbuf_thread threads[WL_MAX_THREADS];
    uint64_t steps = wl_scaled(BIGBUF_STEPS, args.scale);
    for (int i = 0; i < args.threads; i++)
        threads[i] = (bigbuf_thread){.seed = 0xb16b0f00u + (uint64_t)i, .steps = steps};
    wl_run_threads("bigbuf", args.threads, bigbuf_main, threads, sizeof threads[0]);
    uint64_t checksum = 0;
    for (int i = 0; i < args.threads; i++)
        checksum += threads[i].checksum;
    printf("checksum=%llu\n", (unsigned long long)checksum);
    wl_report(steps * (uint64_t)args.threads);
    return 0;
}
