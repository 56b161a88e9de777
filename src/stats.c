/*
 * stats.c: statistics, merged on demand.
 *
 * The fast paths count per thread, in their own heap (pm_class_state), with plain increments
 * and no lock. Here we merge those counters by walking the heap registry (push-only,
 * heaps are never freed, so the walk needs no lock), and we count pools and blocks in use by
 * walking the arenas' pool descriptors under pm_arena_lock. Counters another thread is updating
 * are read with relaxed loads: a report is a snapshot that may be a few operations stale, never
 * a torn or invalid one.
 *
 * Where and when the exit report is written is report.c's business.
 */
#include "options.h"

#include <unistd.h>

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

typedef struct snapshot {
    pm_stats_t total;
    pm_class_stats_t cls[PM_NUM_CLASSES]; /* index 0 unused */
    uint64_t cached[PM_NUM_CLASSES];      /* blocks in heaps' caches */
    uint64_t arena_size;
    pm_large_stats large;                 /* how large blocks were built (report only) */
    uint64_t purged_taken_bytes;          /* purged, then taken again by new pools */
    uint64_t purge_backoff;               /* doublings of the purge tick interval */
} snapshot;

/* ---- collecting --------------------------------------------------------------------------- */

static void collect_heaps(snapshot *s) {
    for (pm_heap *h = atomic_load(&pm_all_heaps); h != NULL; h = h->next_all) {
        for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
            s->cls[c].allocs += LOAD(h->cls[c].nmalloc);
            /* Bytes folded at the last expiry plus those counted down since. */
            s->cls[c].bytes_requested += LOAD(h->cls[c].requested) +
                                         (uint64_t)(LOAD(h->cls[c].armed) - LOAD(h->cls[c].countdown));
            /* Blocks in a heap's cache count as used in their pools (I1) but are free. The
             * owner moves top as we read it: an old or a new value, within the slots. */
            size_t cached = (size_t)(pm_cache_end(h, c) - LOAD(h->cls[c].top));
            if (h != PM_SENTINEL_HEAP && cached <= pm_class_cache_limit[c])
                s->cached[c] += cached;
        }
        s->total.remote_frees += atomic_load_explicit(&h->remote_frees, memory_order_relaxed);
    }
}

/* Pools and blocks in use, per class, from the pool descriptors. A pool's first unit holds
 * its descriptor; the descriptors of its other units are stale, so we skip over them. */
static void collect_arenas(snapshot *s) {
    pm_lock(&pm_arena_lock);
    for (pm_arena *a = pm_arenas; a != NULL; a = a->next) {
        s->total.arenas++;
        for (unsigned u = PM_HEADER_UNITS; u < a->nunits;) {
            const pm_pool *p = &a->pools[u];
            if (a->pools[u].unit_offset != 0 || LOAD(p->state) == PM_POOL_FREE || p->units == 0) {
                u++;
                continue;
            }
            unsigned c = p->cls;
            /* The owner may be changing the counts as we read them: stale, never absurd. */
            uint32_t used = pm_pool_blocks_in_use(p);
            if (c > 0 && c < PM_NUM_CLASSES) {
                s->cls[c].pools++;
                if ((uint32_t)p->units * PM_UNIT_SIZE > s->cls[c].pool_bytes) /* grown (pool.c) */
                    s->cls[c].pool_bytes = (uint32_t)(p->units * PM_UNIT_SIZE);
                s->cls[c].blocks_in_use += used;
                s->cls[c].blocks_free += p->capacity - used;
            }
            u += p->units;
        }
    }
    pm_unlock(&pm_arena_lock);
}

static void collect(snapshot *s) {
    pm_init(); /* class sizes and options must be known even if nothing was allocated yet */
    memset(s, 0, sizeof *s);
    s->arena_size = pm_opt.arena_size;
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        s->cls[c].block_size = pm_class_size[c];
        s->cls[c].pool_bytes = (uint32_t)(pm_class_units[c] * PM_UNIT_SIZE);
    }
    collect_heaps(s);
    collect_arenas(s);
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) { /* see pm_class_counters */
        pm_class_stats_t *k = &s->cls[c];
        uint64_t cached = s->cached[c] < k->blocks_in_use ? s->cached[c] : k->blocks_in_use;
        k->blocks_in_use -= cached;
        k->blocks_free += cached;
        k->frees = k->allocs > k->blocks_in_use ? k->allocs - k->blocks_in_use : 0;
    }

    pm_stats_t *t = &s->total;
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        const pm_class_stats_t *k = &s->cls[c];
        t->small_blocks_in_use += k->blocks_in_use;
        t->small_bytes_in_use += k->blocks_in_use * k->block_size;
        t->small_bytes_requested += k->bytes_requested;
        t->small_allocs += k->allocs;
        t->small_frees += k->frees;
        t->pools_in_use += k->pools;
    }

    pm_large_stats large;
    memset(&large, 0, sizeof large);
    pm_large_get_stats(&large);
    s->large = large;
    s->purged_taken_bytes = atomic_load(&pm_gstats.purged_taken_bytes);
    s->purge_backoff = atomic_load(&pm_gstats.purge_backoff);
    t->large_blocks_in_use = large.live_blocks;
    t->large_bytes_in_use = large.live_bytes;
    t->large_allocs = large.nalloc;
    t->large_frees = large.nfree;
    t->large_remaps = large.nremap;
    t->large_cache_hits = large.cache_hits;
    t->large_cached_bytes = large.cached_bytes;
    t->bytes_in_use = t->small_bytes_in_use + t->large_bytes_in_use;

    t->arenas_mapped = atomic_load(&pm_gstats.arenas_mapped);
    t->arenas_unmapped = atomic_load(&pm_gstats.arenas_unmapped);
    t->bytes_mapped = atomic_load(&pm_gstats.arena_bytes) + large.mapped_bytes;
    t->pools_acquired = atomic_load(&pm_gstats.pools_acquired);
    t->pools_released = atomic_load(&pm_gstats.pools_released);
    t->purges = atomic_load(&pm_gstats.purges);
    t->purged_bytes = atomic_load(&pm_gstats.purged_bytes);
    t->heaps_created = atomic_load(&pm_gstats.heaps_created);
    t->heaps_abandoned = atomic_load(&pm_gstats.heaps_abandoned);
    t->heaps_adopted = atomic_load(&pm_gstats.heaps_adopted);

    t->bytes_resident = pm_os_resident_bytes();
    uint64_t peak = pm_os_peak_resident_bytes();
    if (peak < t->bytes_resident)
        peak = t->bytes_resident;
    t->peak_resident = peak;
}

int pm_stats_get(pm_stats_t *out) {
    if (out == NULL) {
        errno = EINVAL;
        return -1;
    }
    snapshot s;
    collect(&s);
    *out = s.total;
    return 0;
}

int pm_stats_get_class(unsigned index, pm_class_stats_t *out) {
    if (out == NULL || index == 0 || index >= PM_NUM_CLASSES) {
        errno = EINVAL;
        return -1;
    }
    snapshot s;
    collect(&s);
    *out = s.cls[index];
    return 0;
}

/* ---- the text report ------------------------------------------------------------------------ */

/* 1234567 -> "1,234,567" */
static const char *grouped(char *buf, size_t len, uint64_t v) {
    char digits[32];
    int n = pm_snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 1 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0 && o + 2 < len)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

/* A "# name = value" line, CPython's format, with the value right-aligned. */
static void row(pm_writer *w, const char *name, uint64_t v) {
    char num[40];
    pm_writer_printf(w, "# %s", name);
    pm_writer_pad(w, 44);
    pm_writer_printf(w, "= %21s\n", grouped(num, sizeof num, v));
}

static void print_text(pm_writer *w, const snapshot *s) {
    const pm_stats_t *t = &s->total;
    char size_text[24];
    pm_format_size(size_text, sizeof size_text, s->arena_size);
    pm_writer_printf(w, "poolmalloc statistics, pid %d\n", (int)getpid());
    if (!PM_STATS)
        pm_writer_printf(w, "# allocation counters compiled out (--disable-stats): allocs, frees "
                            "and bytes requested read 0\n");
    pm_writer_printf(w, "class  block  pool  pools   blocks in use     free blocks"
                        "          allocs           frees    bytes requested\n");
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        const pm_class_stats_t *k = &s->cls[c];
        if (k->pools == 0 && k->allocs == 0 && k->frees == 0)
            continue;
        pm_format_size(size_text, sizeof size_text, k->pool_bytes);
        pm_writer_printf(w, "%5u %6u %5s %6llu %15llu %15llu %15llu %15llu %18llu\n", c,
                         k->block_size, size_text, (unsigned long long)k->pools,
                         (unsigned long long)k->blocks_in_use,
                         (unsigned long long)k->blocks_free, (unsigned long long)k->allocs,
                         (unsigned long long)k->frees, (unsigned long long)k->bytes_requested);
    }
    pm_writer_printf(w, "\n");
    pm_format_size(size_text, sizeof size_text, s->arena_size);
    pm_writer_printf(w, "# arena size = %s, mmap threshold = %llu bytes\n", size_text,
                     (unsigned long long)pm_opt.mmap_threshold);
    row(w, "arenas mapped now", t->arenas);
    row(w, "arenas mapped in total", t->arenas_mapped);
    row(w, "arenas returned to the OS", t->arenas_unmapped);
    row(w, "pools in use", t->pools_in_use);
    row(w, "pools acquired", t->pools_acquired);
    row(w, "pools released", t->pools_released);
    row(w, "purges", t->purges);
    row(w, "bytes purged", t->purged_bytes);
    row(w, "  ... taken again by new pools", s->purged_taken_bytes);
    row(w, "purge ticks spaced out (doublings)", s->purge_backoff);
    pm_writer_printf(w, "\n");
    row(w, "small allocations", t->small_allocs);
    row(w, "small frees", t->small_frees);
    row(w, "remote frees (other thread's block)", t->remote_frees);
    row(w, "large blocks in use", t->large_blocks_in_use);
    row(w, "large allocations", t->large_allocs);
    row(w, "large frees", t->large_frees);
    row(w, "large remaps", t->large_remaps);
    row(w, "  ... into cached pages (copied)", s->large.moved_to_cache);
    row(w, "large cache hits", t->large_cache_hits);
    row(w, "  built where cached pieces lie", s->large.in_place);
    row(w, "  ... with fresh pages beside or between", s->large.extended);
    pm_writer_printf(w, "\n");
    row(w, "bytes requested (small, all time)", t->small_bytes_requested);
    row(w, "bytes in small blocks in use", t->small_bytes_in_use);
    row(w, "bytes in large blocks in use", t->large_bytes_in_use);
    row(w, "bytes in use", t->bytes_in_use);
    row(w, "bytes in cached large mappings", t->large_cached_bytes);
    row(w, "bytes mapped", t->bytes_mapped);
    row(w, "bytes resident (process)", t->bytes_resident);
    row(w, "peak bytes resident (process)", t->peak_resident);
    pm_writer_printf(w, "\n");
    row(w, "heaps created", t->heaps_created);
    row(w, "heaps abandoned (thread exit)", t->heaps_abandoned);
    row(w, "heaps adopted (by a new thread)", t->heaps_adopted);
}

/* ---- the JSON report: one line, so that several reports in a file form JSON Lines ------ */

static void json_u64(pm_writer *w, const char *key, uint64_t v, bool comma) {
    pm_writer_printf(w, "\"%s\":%llu%s", key, (unsigned long long)v, comma ? "," : "");
}

static void print_json(pm_writer *w, const snapshot *s) {
    const pm_stats_t *t = &s->total;
    pm_writer_printf(w, "{\"allocator\":\"poolmalloc\",\"pid\":%d,\"counters\":%s,", (int)getpid(),
                     PM_STATS ? "true" : "false");
    pm_writer_printf(w, "\"options\":{");
    json_u64(w, "mmap_threshold", pm_opt.mmap_threshold, true);
    json_u64(w, "arena_size", pm_opt.arena_size, true);
    pm_writer_printf(w, "\"purge_delay_ms\":%ld,", pm_opt.purge_delay_ms);
    json_u64(w, "large_cache", pm_opt.large_cache, true);
    pm_writer_printf(w, "\"arena_retain\":%ld},", pm_opt.arena_retain);
    pm_writer_printf(w, "\"totals\":{");
    json_u64(w, "bytes_in_use", t->bytes_in_use, true);
    json_u64(w, "small_bytes_in_use", t->small_bytes_in_use, true);
    json_u64(w, "small_blocks_in_use", t->small_blocks_in_use, true);
    json_u64(w, "large_bytes_in_use", t->large_bytes_in_use, true);
    json_u64(w, "large_blocks_in_use", t->large_blocks_in_use, true);
    json_u64(w, "small_bytes_requested", t->small_bytes_requested, true);
    json_u64(w, "small_allocs", t->small_allocs, true);
    json_u64(w, "small_frees", t->small_frees, true);
    json_u64(w, "large_allocs", t->large_allocs, true);
    json_u64(w, "large_frees", t->large_frees, true);
    json_u64(w, "large_remaps", t->large_remaps, true);
    json_u64(w, "large_remaps_into_cache", s->large.moved_to_cache, true);
    json_u64(w, "large_cache_hits", t->large_cache_hits, true);
    json_u64(w, "large_in_place", s->large.in_place, true);
    json_u64(w, "large_extended", s->large.extended, true);
    json_u64(w, "large_cached_bytes", t->large_cached_bytes, true);
    json_u64(w, "bytes_mapped", t->bytes_mapped, true);
    json_u64(w, "bytes_resident", t->bytes_resident, true);
    json_u64(w, "peak_resident", t->peak_resident, true);
    json_u64(w, "arenas", t->arenas, true);
    json_u64(w, "arenas_mapped", t->arenas_mapped, true);
    json_u64(w, "arenas_unmapped", t->arenas_unmapped, true);
    json_u64(w, "pools_in_use", t->pools_in_use, true);
    json_u64(w, "pools_acquired", t->pools_acquired, true);
    json_u64(w, "pools_released", t->pools_released, true);
    json_u64(w, "purges", t->purges, true);
    json_u64(w, "purged_bytes", t->purged_bytes, true);
    json_u64(w, "purged_taken_bytes", s->purged_taken_bytes, true);
    json_u64(w, "purge_backoff", s->purge_backoff, true);
    json_u64(w, "remote_frees", t->remote_frees, true);
    json_u64(w, "heaps_created", t->heaps_created, true);
    json_u64(w, "heaps_abandoned", t->heaps_abandoned, true);
    json_u64(w, "heaps_adopted", t->heaps_adopted, false);
    pm_writer_printf(w, "},\"classes\":[");
    for (unsigned c = 1; c < PM_NUM_CLASSES; c++) {
        const pm_class_stats_t *k = &s->cls[c];
        pm_writer_printf(w, "%s{\"class\":%u,", c > 1 ? "," : "", c);
        json_u64(w, "block_size", k->block_size, true);
        json_u64(w, "pool_bytes", k->pool_bytes, true);
        json_u64(w, "pools", k->pools, true);
        json_u64(w, "blocks_in_use", k->blocks_in_use, true);
        json_u64(w, "blocks_free", k->blocks_free, true);
        json_u64(w, "allocs", k->allocs, true);
        json_u64(w, "frees", k->frees, true);
        json_u64(w, "bytes_requested", k->bytes_requested, false);
        pm_writer_printf(w, "}");
    }
    pm_writer_printf(w, "]}\n");
}

void pm_stats_print_fd(int fd, int json) {
    snapshot s;
    collect(&s);
    char buf[4096];
    pm_writer w;
    pm_writer_init(&w, buf, sizeof buf, fd);
    if (json)
        print_json(&w, &s);
    else
        print_text(&w, &s);
    pm_writer_flush(&w);
}

void pm_stats_print(void) {
    pm_stats_print_fd(2, 0);
}
