/*
 * frag: does freed memory go back to the system? The program runs five phases. Each builds a
 * large working set of mixed sizes (600K blocks, about 280 MiB: mostly 16-128 B, some up to
 * 1 KiB, a few up to 16 KiB), then frees 90% of it in random order, keeping the last 5% it
 * allocated and a random 5% scattered through the rest (long-lived objects among temporaries),
 * and then works a little (300K small malloc/free pairs, which lets allocators that return
 * memory lazily do so). Survivors of earlier phases stay live, so later phases must reuse the
 * holes around them. At the end it reports:
 *
 *     rss_peak_kib=N        the highest resident memory seen with a working set live
 *     rss_after_free_kib=N  resident memory after the last phase's frees and work
 *     live_kib=N            bytes the program still holds, for scale
 *
 * A perfect allocator would end near live_kib; one that never returns memory stays at peak.
 * -t is accepted for uniformity but must be 1 (see common.h for the arguments and output).
 */
#include "common.h"

#define BLOCKS 600000
#define SETTLE_PAIRS 300000
#define SETTLE_SLOTS 1024
#define PHASES 5

typedef struct slot {
    void *p;
    uint32_t size;
    bool survives;
} slot;

static size_t mixed_size(uint64_t *seed) {
    uint64_t r = wl_rand(seed) % 100;
    if (r < 70)
        return wl_rand_range(seed, 16, 128);
    if (r < 95)
        return wl_rand_range(seed, 129, 1024);
    return wl_rand_log(seed, 1025, 16384);
}

static void shuffle(size_t *order, size_t n, uint64_t *seed) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(wl_rand(seed) % i);
        size_t tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
}

/* A program that goes on working after the big free: small blocks in random order. */
static void settle(uint64_t pairs, uint64_t *seed) {
    void *blocks[SETTLE_SLOTS] = {0};
    size_t sizes[SETTLE_SLOTS] = {0};
    for (uint64_t i = 0; i < pairs; i++) {
        size_t k = (size_t)(wl_rand(seed) % SETTLE_SLOTS);
        if (blocks[k] != NULL) {
            wl_check("frag", blocks[k], sizes[k]);
            free(blocks[k]);
        }
        sizes[k] = wl_small_size(seed);
        blocks[k] = wl_malloc("frag", sizes[k]);
        wl_tag(blocks[k], sizes[k]);
    }
    for (size_t k = 0; k < SETTLE_SLOTS; k++) {
        if (blocks[k] != NULL) {
            wl_check("frag", blocks[k], sizes[k]);
            free(blocks[k]);
        }
    }
}

/* Builds one phase's working set in slots[0..n), frees 90% of it in random order and works a
 * little; returns the bytes still held. */
static uint64_t phase(slot *slots, size_t *order, size_t n, uint64_t *seed, uint64_t *rss_peak) {
    for (size_t i = 0; i < n; i++) {
        size_t size = mixed_size(seed);
        slots[i] = (slot){wl_malloc("frag", size), (uint32_t)size,
                          i >= n - n / 20 || wl_rand(seed) % 20 == 0};
        wl_tag(slots[i].p, size);
    }
    uint64_t rss = wl_rss_kib();
    if (rss > *rss_peak)
        *rss_peak = rss;

    for (size_t i = 0; i < n; i++)
        order[i] = i;
    shuffle(order, n, seed);
    uint64_t live_bytes = 0;
    for (size_t k = 0; k < n; k++) {
        slot *s = &slots[order[k]];
        wl_check("frag", s->p, s->size);
        if (s->survives) {
            live_bytes += s->size;
            continue;
        }
        free(s->p);
        s->p = NULL;
    }
    return live_bytes;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 1, "build a big working set, free 90%, report "
                                                "the resident memory left; five phases");
    if (args.threads != 1) {
        fprintf(stderr, "frag: -t must be 1 (it measures one heap's memory)\n");
        return 2;
    }
    uint64_t seed = 0xf7a90000u;
    size_t n = (size_t)wl_scaled(BLOCKS, args.scale);
    slot *slots = calloc((size_t)PHASES * n, sizeof *slots);
    size_t *order = calloc(n, sizeof *order);
    if (slots == NULL || order == NULL)
        wl_die("frag", "out of memory");

    uint64_t rss_peak = 0, live_bytes = 0;
    for (int p = 0; p < PHASES; p++) {
        live_bytes += phase(slots + (size_t)p * n, order, n, &seed, &rss_peak);
        settle(wl_scaled(SETTLE_PAIRS, args.scale), &seed);
    }
    uint64_t rss_after = wl_rss_kib();

    for (size_t i = 0; i < (size_t)PHASES * n; i++)
        free(slots[i].p);
    free(slots);
    free(order);
    printf("rss_peak_kib=%llu\nrss_after_free_kib=%llu\nlive_kib=%llu\n",
           (unsigned long long)rss_peak, (unsigned long long)rss_after,
           (unsigned long long)(live_bytes / 1024));
    wl_report((uint64_t)PHASES * (n + wl_scaled(SETTLE_PAIRS, args.scale)));
    return 0;
}
