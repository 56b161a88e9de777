/*
 * addrmap.c: the address map (addrmap.h has the design).
 */
#include "addrmap.h"

#include <string.h>

#define ADDRMAP_FIRST_LOG2 6 /* 64 entries, 1 KiB */
#define FIBONACCI UINT64_C(0x9E3779B97F4A7C15)

void pm_addrmap_init(pm_addrmap *m, pm_addrmap_mem mem,
                                                           unsigned key_shift) {
    memset(m, 0, sizeof *m);
    m->mem = mem;
    m->key_shift = key_shift;
    m->min_cap = 0;
}

static inline size_t home_of(const pm_addrmap *m, const void *key) {
    uint64_t h = ((uint64_t)(uintptr_t)key >> m->key_shift) * FIBONACCI;
    return (size_t)(h >> (64 - m->log2cap));
}

/* Moves the entries into a table of 2^log2 slots; false (nothing changed) without memory. */
static bool rehash(pm_addrmap *m, unsigned log2) {
    size_t cap = (size_t)1 << log2;
    pm_addrmap_entry *slots = m->mem.alloc_zeroed(cap * sizeof *slots);
    if (slots == NULL)
        return false;
    pm_addrmap_entry *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = cap;
    m->log2cap = log2;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].key == NULL)
            continue;
        size_t j = home_of(m, old[i].key);
        while (slots[j].key != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = old[i];
    }
    if (old != NULL)
        m->mem.release(old, old_cap * sizeof *old);
    return true;
}

/* The slot of key, or the empty slot that ends its probe run. */
static inline size_t probe(const pm_addrmap *m, const void *key) {
    size_t mask = m->cap - 1;
    size_t i = home_of(m, key);
    while (m->slots[i].key != key && m->slots[i].key != NULL)
        i = (i + 1) & mask;
    return i;
}

uintptr_t *pm_addrmap_find(const pm_addrmap *m,
                                                                 const void *key) {
    if (m->used == 0)
        return NULL;
    size_t i = probe(m, key);
    return m->slots[i].key == key ? &m->slots[i].value : NULL;
}

uintptr_t *pm_addrmap_insert(pm_addrmap *m,
                                                                   const void *key) {
    if ((m->used + 1) * 2 > m->cap &&
        !rehash(m, m->cap == 0 ? ADDRMAP_FIRST_LOG2 : m->log2cap + 1))
        return NULL;
    size_t i = probe(m, key);
    if (m->slots[i].key == NULL) {
        m->slots[i].key = key;
        m->slots[i].value = 0;
        m->used++;
    }
    return &m->slots[i].value;
}

bool pm_addrmap_remove(pm_addrmap *m, const void *key) {
    if (m->used == 0)
        return false;
    size_t mask = m->cap - 1, i = probe(m, key);
    if (m->slots[i].key != key)
        return false;
    /* Backward shift: an entry later in the run moves into the hole unless its home lies
     * cyclically in (hole, its slot], where the hole would cut it off from its home. */
    for (size_t j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = home_of(m, m->slots[j].key);
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays)
            continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i].key = NULL;
    m->slots[i].value = 0;
    m->used--;
    return true;
}

void
pm_addrmap_iterate(const pm_addrmap *m, void (*fn)(const void *, uintptr_t *, void *),
                   void *arg) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key != NULL)
            fn(m->slots[i].key, &m->slots[i].value, arg);
}

void pm_addrmap_clear(pm_addrmap *m) {
    if (m->used == 0)
        return;
    memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->used = 0;
}

size_t pm_addrmap_shrink(pm_addrmap *m) {
    size_t before = m->cap * sizeof *m->slots;
    if (m->used == 0 && m->min_cap == 0) {
        pm_addrmap_destroy(m);
        return before;
    }
    if (m->cap <= m->min_cap || m->cap <= ((size_t)1 << ADDRMAP_FIRST_LOG2) ||
        m->used * 8 > m->cap)
        return 0;
    unsigned log2 = m->log2cap - 2 < ADDRMAP_FIRST_LOG2 ? ADDRMAP_FIRST_LOG2 : m->log2cap - 2;
    while (log2 > ADDRMAP_FIRST_LOG2 && ((size_t)1 << (log2 - 1)) >= m->min_cap &&
           m->used * 8 <= ((size_t)1 << (log2 - 1)))
        log2--;
    if (!rehash(m, log2))
        return 0;
    return before - m->cap * sizeof *m->slots;
}

void pm_addrmap_destroy(pm_addrmap *m) {
    if (m->slots != NULL)
        m->mem.release(m->slots, m->cap * sizeof *m->slots);
    m->slots = NULL;
    m->cap = m->used = 0;
    m->log2cap = 0;
}
