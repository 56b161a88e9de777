/*
 * leaks.c: POOLMALLOC_LEAKS, the report at exit of blocks still allocated, grouped by the
 * stack that allocated them, largest first.
 *
 * Every live block is counted against its allocation stack (debug.c keeps the counts as
 * blocks come and go), so the report reads the stack table and nothing else. It lists what
 * was never freed, reachable or not: unlike LeakSanitizer, nothing scans memory for pointers.
 * Text goes to stderr or POOLMALLOC_LEAKS_FILE; a file name ending in .json gets JSON.
 */
#include "instrument/instrument.h"
#include "options.h"

#include <unistd.h>

#define TEXT_STACKS_MAX 50 /* the text report lists the largest; JSON lists all */

/* Ids sorted by live bytes, largest first (shell sort: no qsort inside the allocator). */
static void sort_by_bytes(uint32_t *ids, uint32_t n) {
    static const uint32_t gaps[] = {1750, 701, 301, 132, 57, 23, 10, 4, 1};
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
        uint32_t gap = gaps[g];
        for (uint32_t i = gap; i < n; i++) {
            uint32_t id = ids[i];
            uint64_t b = atomic_load(&pm_stack_get(id)->live_bytes);
            uint32_t j = i;
            for (; j >= gap && atomic_load(&pm_stack_get(ids[j - gap])->live_bytes) < b; j -= gap)
                ids[j] = ids[j - gap];
            ids[j] = id;
        }
    }
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static void write_text(pm_writer *w, const uint32_t *ids, uint32_t n, uint64_t bytes,
                       uint64_t blocks) {
    if (n == 0) {
        pm_writer_printf(w, "poolmalloc: leak report: no blocks allocated at exit\n");
        return;
    }
    pm_writer_printf(w, "poolmalloc: leak report: %lu bytes in %lu blocks allocated at exit, "
                     "from %u stacks\n", (unsigned long)bytes, (unsigned long)blocks, n);
    for (uint32_t i = 0; i < n && i < TEXT_STACKS_MAX; i++) {
        pm_stack *s = pm_stack_get(ids[i]);
        pm_writer_printf(w, "%lu bytes in %lu blocks allocated from:\n",
                         (unsigned long)atomic_load(&s->live_bytes),
                         (unsigned long)atomic_load(&s->live_blocks));
        pm_write_stack(w, s, "    ");
    }
    if (n > TEXT_STACKS_MAX)
        pm_writer_printf(w, "... and %u smaller stacks (POOLMALLOC_LEAKS_FILE=x.json lists all)\n",
                         n - TEXT_STACKS_MAX);
}

static void write_json(pm_writer *w, const uint32_t *ids, uint32_t n, uint64_t bytes,
                       uint64_t blocks) {
    pm_writer_printf(w, "{\"pid\":%d,\"leaked_bytes\":%lu,\"leaked_blocks\":%lu,\"stacks\":[",
                     (int)getpid(), (unsigned long)bytes, (unsigned long)blocks);
    for (uint32_t i = 0; i < n; i++) {
        pm_stack *s = pm_stack_get(ids[i]);
        pm_writer_printf(w, "%s\n{\"bytes\":%lu,\"blocks\":%lu,\"frames\":", i ? "," : "",
                         (unsigned long)atomic_load(&s->live_bytes),
                         (unsigned long)atomic_load(&s->live_blocks));
        pm_write_stack_json(w, s);
        pm_writer_printf(w, "}");
    }
    pm_writer_printf(w, "]}\n");
}

void pm_leaks_report(void) {
    uint32_t count = pm_stack_count();
    size_t map_len = ((size_t)count + 1) * sizeof(uint32_t);
    uint32_t *ids = pm_os_map(map_len);
    if (ids == NULL)
        return;
    uint32_t n = 0;
    uint64_t bytes = 0, blocks = 0;
    for (uint32_t id = 1; id <= count; id++) {
        pm_stack *s = pm_stack_get(id);
        if (atomic_load(&s->live_blocks) == 0)
            continue;
        ids[n++] = id;
        bytes += atomic_load(&s->live_bytes);
        blocks += atomic_load(&s->live_blocks);
    }
    sort_by_bytes(ids, n);
    char path[512];
    pm_instr_expand_path(path, sizeof path, pm_instr_opt.leaks_file, "");
    int fd = pm_instr_open(path);
    if (fd >= 0) {
        PM_BIG_BSS static char buf[16384];
        pm_writer w;
        pm_writer_init(&w, buf, sizeof buf, fd);
        if (ends_with(path, ".json"))
            write_json(&w, ids, n, bytes, blocks);
        else
            write_text(&w, ids, n, bytes, blocks);
        pm_writer_flush(&w);
        if (fd != 2)
            close(fd);
    }
    pm_os_unmap(ids, map_len);
}
