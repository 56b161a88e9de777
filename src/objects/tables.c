/*
 * tables.c: the object layer's start, the side table (one byte per 32 bytes of object
 * address space, shared by every domain) and the generation tables (object.h has the layout).
 */
#include "object.h"

#include <pthread.h>
#include <sys/mman.h>

uintptr_t *pm_side_top;

static void *zeroed(size_t bytes) { return pm_calloc(1, bytes); }
static void release(void *p, size_t bytes) {
    (void)bytes;
    pm_free(p);
}

const pm_addrmap_mem pm_objects_mem = {zeroed, release};

/* ---- domain ------------------------------------------------------------------------------ */

static pthread_once_t domain_once = PTHREAD_ONCE_INIT;

static void domain_init_once(void) {
    pm_side_top = pm_os_reserve(PM_SIDE_TOP_LEN * sizeof(uintptr_t));
    if (pm_side_top == NULL)
        pm_fatal("cannot reserve %zu bytes of address space for the collector's side table",
                 PM_SIDE_TOP_LEN * sizeof(uintptr_t));
    pm_domain_setup(&pm_default_domain, 0);
}

/* The side table and the default domain, once (other domains start in pm_domain_new). */
void pm_gc_domain_init(void) { pthread_once(&domain_once, domain_init_once); }

/* ---- side table --------------------------------------------------------------------------- */

/* The chunks made, for pm_side_purge_empty (the first 1024: 64 GiB of object addresses). */
#define SIDE_CHUNKS_LISTED 1024
#define SIDE_PAGE 4096
PM_BIG_BSS static uint8_t *side_chunks[SIDE_CHUNKS_LISTED];
static size_t side_nchunks;
static pthread_mutex_t side_lock = PTHREAD_MUTEX_INITIALIZER; /* making chunks: any domain */

static bool side_make_chunk(size_t i);

bool pm_side_ensure(const void *p) {
    uintptr_t a = (uintptr_t)p;
    size_t i = a >> PM_SIDE_REGION_SHIFT;
    if (PM_UNLIKELY(i >= PM_SIDE_TOP_LEN))
        pm_fatal("object %p lies beyond the %d-bit address space the collector maps", p,
                 PM_OBJ_ADDRESS_BITS);
    if (PM_LIKELY(__atomic_load_n(&pm_side_top[i], __ATOMIC_ACQUIRE) != 0))
        return true;
    pthread_mutex_lock(&side_lock);
    bool ok = pm_side_top[i] != 0 || side_make_chunk(i);
    pthread_mutex_unlock(&side_lock);
    return ok;
}

/* Maps the chunk of region i (side_lock held). */
static bool side_make_chunk(size_t i) {
    uintptr_t shift = (uintptr_t)i << (PM_SIDE_REGION_SHIFT - PM_SIDE_SHIFT);
    void *chunk = pm_os_map_aligned(PM_SIDE_CHUNK, PM_SIDE_CHUNK);
    if (chunk != NULL && (uintptr_t)chunk == shift) {
        /* the bias would be 0, which means "no chunk": take another mapping */
        void *other = pm_os_map_aligned(PM_SIDE_CHUNK, PM_SIDE_CHUNK);
        pm_os_unmap(chunk, PM_SIDE_CHUNK);
        chunk = other;
    }
    if (chunk == NULL)
        return false;
#ifdef MADV_HUGEPAGE
    /* One TLB entry for the whole chunk: the collector reads these bytes in random order
     * when the graph is shuffled, and with 4 KiB pages every access is a page walk (a 10M
     * object shuffled collection takes a third longer). Not for the first chunk: a small
     * program would pay 2 MiB of memory for a few bytes; a second chunk means the objects
     * span more than 64 MiB of address space. */
    static bool first_chunk_made;
    if (first_chunk_made)
        madvise(chunk, PM_SIDE_CHUNK, MADV_HUGEPAGE);
    first_chunk_made = true;
#endif
    __atomic_store_n(&pm_side_top[i], (uintptr_t)chunk - shift, __ATOMIC_RELEASE);
    if (side_nchunks < SIDE_CHUNKS_LISTED)
        side_chunks[side_nchunks++] = chunk;
    return true;
}

/* A page is empty when every byte is 0 (no tracked object in its 128 KiB of addresses). */
static bool page_is_empty(const uint8_t *p) {
    const uint64_t *w = (const uint64_t *)p;
    uint64_t any = 0;
    for (size_t i = 0; i < SIDE_PAGE / sizeof *w; i++)
        any |= w[i];
    return any == 0;
}

size_t pm_side_purge_empty(void) {
    size_t purged = 0;
    /* Other domains' threads may be writing bytes in these pages: a purge would lose them.
     * With the default domain alone, every byte is this thread's to write. */
    if (pm_domains_alive() > 1)
        return 0;
    for (size_t c = 0; c < side_nchunks; c++) {
        uint8_t *chunk = side_chunks[c];
        size_t run = 0; /* empty pages just before page p */
        for (size_t p = 0; p <= PM_SIDE_CHUNK; p += SIDE_PAGE) {
            if (p < PM_SIDE_CHUNK && page_is_empty(chunk + p)) {
                run += SIDE_PAGE;
                continue;
            }
            if (run > 0)
                pm_os_purge(chunk + p - run, run); /* reads back as zeros: still empty */
            purged += run;
            run = 0;
        }
    }
    return purged;
}

/* ---- generation tables -------------------------------------------------------------------- */

void pm_table_compact(pm_gc_table *t) {
    size_t w = 0;
    for (size_t r = 0; r < t->len; r++) {
        pm_object *x = t->items[r];
        if (x == NULL)
            continue;
        if (w != r) {
            t->items[w] = x;
            pm_obj_set_place(x, pm_obj_state(x), w);
        }
        w++;
    }
    t->len = w;
    t->holes = 0;
}

/* Capacity for `more` appends past len. */
bool pm_table_reserve(pm_gc_table *t, size_t more) {
    if (t->cap - t->len >= more)
        return true;
    size_t need = t->len + more;
    if (need < t->len)
        return false;
    size_t cap = t->cap < 256 ? 256 : t->cap;
    while (cap < need)
        cap *= 2;
    pm_object **items = pm_realloc(t->items, cap * sizeof *items);
    if (items == NULL)
        return false;
    t->items = items;
    t->cap = cap;
    return true;
}

void pm_table_shrink(pm_gc_table *t) {
    if (t->cap <= PM_TABLE_KEEP || (t->len - t->holes) * 4 > t->cap)
        return;
    if (t->holes > 0)
        pm_table_compact(t);
    size_t cap = PM_TABLE_KEEP;
    while (cap < 2 * t->len)
        cap *= 2;
    pm_object **items = pm_realloc(t->items, cap * sizeof *items);
    if (items == NULL)
        return; /* keeping the memory is always safe */
    t->items = items;
    t->cap = cap;
}

static PM_NOINLINE bool table_make_room(pm_gc_table *t) {
    /* Squeezing holes out costs one pass over the table; doing it only when they are a
     * quarter of it keeps appends amortised O(1) and the table from growing with churn. */
    if (t->holes > 0 && t->holes >= t->len / 4) {
        pm_table_compact(t);
        if (t->len < t->cap)
            return true;
    }
    return pm_table_reserve(t, 1);
}

bool pm_table_append(pm_gc_domain *d, unsigned state, pm_object *o) {
    pm_gc_table *t = &d->table[state];
    if (PM_UNLIKELY(t->len == t->cap) && !table_make_room(t))
        return false;
    size_t slot = t->len++;
    t->items[slot] = o;
    pm_obj_set_place(o, state, slot);
    *pm_side_of(o) = (uint8_t)(state | (unsigned)pm_scr_codes(d->epoch).clean << 3);
    return true;
}

void pm_table_remove(pm_gc_domain *d, pm_object *o) {
    pm_gc_table *t = &d->table[pm_obj_state(o)];
    size_t slot = pm_obj_slot(o);
    t->items[slot] = NULL;
    if (slot + 1 == t->len)
        t->len--;
    else
        t->holes++;
    *pm_side_of(o) = 0;
    o->pm_gcword_ &= PM_GCW_DOMAIN_MASK;
}

