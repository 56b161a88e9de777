/*
 * remote.c: frees into pools that other heaps own, batched per destination pool.
 *
 * A free of another thread's block costs a compare-and-swap on the pool's xfree word, a cache
 * line that the owner and every other freeing thread write too. Blocks handed between threads
 * tend to come in runs from the same pool (a producer's batch of messages, a worker's buffers
 * of one size), so the freeing thread keeps, per heap, a few slots each holding a chain of
 * blocks of one pool, linked and keyed exactly as on the pool's own lists. A slot goes to its
 * pool as one chain, with one compare-and-swap (pm_pool_free_chain), when it is full, when a
 * free of another pool needs the slot, and whenever the heap flushes its cache: every purge
 * delay on the slow path, at thread exit, at pm_trim and before an allocation gives up.
 *
 * What this costs the lifecycle guarantees: a batched block is still "out" for its pool, so a
 * pool cannot be released while one of its blocks waits here. An idle thread therefore pins
 * at most PM_REMOTE_SLOTS pools of other heaps, holding at most REMOTE_BATCH_BYTES each: the
 * same kind of bound as its cache. A block waiting here carries its free key, so a second
 * free of it is reported as a double free, as for any free block (I2).
 *
 * Only the heap's thread touches its slots, like its cache; a heap orphaned by fork keeps them
 * and whoever adopts or services it (pm_trim) flushes them.
 */
#include "internal.h"

/* A slot goes to its pool once it holds this many blocks or this many bytes: enough to make
 * one compare-and-swap serve a run of frees, little enough that an idle thread holds little. */
#define REMOTE_BATCH_BLOCKS 16
#define REMOTE_BATCH_BYTES (16u << 10)

_Static_assert((PM_REMOTE_SLOTS & (PM_REMOTE_SLOTS - 1)) == 0, "slots are picked by a mask");

/* Pool descriptors are 128 bytes apart in their arena's header: bits 7.. number the pool in
 * its arena, the arena's own bits tell arenas apart. */
PM_INLINE pm_remote_slot *slot_for(pm_heap *heap, const pm_pool *pool) {
    uintptr_t a = (uintptr_t)pool;
    return &heap->remote[((a >> 7) ^ (a >> PM_ARENA_SHIFT)) & (PM_REMOTE_SLOTS - 1)];
}

/* Empties the slot first, then pushes: were the push to release the pool and the release to
 * free into this heap again, the slot would already be consistent. */
static void slot_flush(pm_remote_slot *slot) {
    pm_pool *pool = slot->pool;
    if (pool == NULL)
        return;
    pm_block *head = slot->head, *tail = slot->tail;
    uint32_t count = slot->count;
    slot->pool = NULL;
    slot->head = slot->tail = NULL;
    slot->bytes = 0;
    PM_OWN_SET(slot->count, 0);
    pm_pool_free_chain(pool, head, tail, count);
}

void pm_remote_free(pm_heap *heap, pm_pool *pool, pm_block *block) {
    pm_remote_slot *slot = slot_for(heap, pool);
    if (slot->pool != pool) {
        slot_flush(slot);
        slot->pool = pool;
        PM_OWN_SET(slot->cls, pool->cls);
    }
    block->key = pm_free_key(block); /* a second free of the block is now detectable (I2) */
    block->link = pm_link_encode(block, slot->head);
    if (slot->head == NULL)
        slot->tail = block;
    slot->head = block;
    /* Counted after the block is linked: a fork that catches this thread in between leaves
     * the child a count one short (a pool that is never released), never one too many (a
     * pool released with a block still out). */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    PM_OWN_ADD(slot->count, 1); /* statistics read it from other threads */
    slot->bytes += pool->block_size;
    if (slot->count >= REMOTE_BATCH_BLOCKS || slot->bytes >= REMOTE_BATCH_BYTES ||
        slot->count * 8u >= pool->capacity)
        slot_flush(slot);
}

void pm_remote_flush(pm_heap *heap) {
    for (unsigned i = 0; i < PM_REMOTE_SLOTS; i++)
        slot_flush(&heap->remote[i]);
}

uint32_t pm_remote_pending(const pm_heap *heap) {
    uint32_t n = 0;
    for (unsigned i = 0; i < PM_REMOTE_SLOTS; i++)
        n += __atomic_load_n(&heap->remote[i].count, __ATOMIC_RELAXED);
    return n;
}

void pm_remote_count_free(const pm_heap *heap, uint64_t *per_class) {
    for (unsigned i = 0; i < PM_REMOTE_SLOTS; i++) {
        unsigned cls = __atomic_load_n(&heap->remote[i].cls, __ATOMIC_RELAXED);
        uint32_t count = __atomic_load_n(&heap->remote[i].count, __ATOMIC_RELAXED);
        if (cls > 0 && cls < PM_NUM_CLASSES)
            per_class[cls] += count;
    }
}
