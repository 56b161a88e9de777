/*
 * server: a server-like mix. Each thread keeps a table of live objects (sessions, buffers,
 * cache entries) and every step replaces a random one with a new object of a random size:
 * mostly small (16 B - 1 KiB), some medium (1-32 KiB). The first bytes of each new object are
 * filled, as a request would fill its buffer.
 *
 * One replaced object in eight is not freed by its thread but handed to a shared exchange
 * table, where a random thread takes it out later and frees it: objects passed between
 * workers (a request parsed on one thread, answered on another) are freed by a thread that did
 * not allocate them. With -t 1 the same exchange happens within one thread.
 *
 * Every thread does the same number of steps, so with T threads the work is T times one
 * thread's (see common.h for the arguments and output).
 */
#include "common.h"

#include <stdatomic.h>

#define SLOTS_PER_THREAD 32768
#define EXCHANGE_SLOTS 4096
#define HANDOFF_ONE_IN 8
#define FILL_BYTES 64

typedef struct object {
    size_t size;
    uint64_t tag; /* wl_tag_of(self, size): checked by whichever thread frees it */
} object;

static _Atomic(object *) exchange[EXCHANGE_SLOTS];

typedef struct server_thread {
    uint64_t seed;
    uint64_t steps;
} server_thread;

static size_t object_size(uint64_t *seed) {
    uint64_t r = wl_rand(seed) % 100;
    if (r < 60)
        return wl_rand_range(seed, 16, 128);
    if (r < 88)
        return wl_rand_range(seed, 129, 1024);
    return wl_rand_log(seed, 1025, 32768);
}

static object *object_new(uint64_t *seed) {
    size_t size = object_size(seed);
    object *obj = wl_malloc("server", size);
    obj->size = size;
    obj->tag = wl_tag_of(obj, size);
    size_t fill = size < FILL_BYTES ? size : FILL_BYTES;
    if (fill > sizeof *obj)
        memset((char *)obj + sizeof *obj, 0x5a, fill - sizeof *obj);
    if (size > sizeof *obj)
        ((unsigned char *)obj)[size - 1] = 0xa5;
    return obj;
}

static void object_free(object *obj) {
    bool tail_ok = obj->size <= sizeof *obj || ((unsigned char *)obj)[obj->size - 1] == 0xa5;
    if (obj->tag != wl_tag_of(obj, obj->size) || !tail_ok)
        wl_die("server", "an object was overwritten: allocator bug");
    free(obj);
}

/* Puts obj into a random exchange slot and frees whatever another thread left there. */
static void hand_off(object *obj, uint64_t *seed) {
    size_t slot = (size_t)(wl_rand(seed) % EXCHANGE_SLOTS);
    object *previous = atomic_exchange_explicit(&exchange[slot], obj, memory_order_acq_rel);
    if (previous != NULL)
        object_free(previous);
}

static void *server_main(void *arg) {
    server_thread *t = arg;
    object **table = calloc(SLOTS_PER_THREAD, sizeof *table);
    if (table == NULL)
        wl_die("server", "out of memory");
    for (size_t i = 0; i < SLOTS_PER_THREAD; i++)
        table[i] = object_new(&t->seed);
    for (uint64_t step = 0; step < t->steps; step++) {
        size_t slot = (size_t)(wl_rand(&t->seed) % SLOTS_PER_THREAD);
        object *old = table[slot];
        if (wl_rand(&t->seed) % HANDOFF_ONE_IN == 0)
            hand_off(old, &t->seed);
        else
            object_free(old);
        table[slot] = object_new(&t->seed);
    }
    for (size_t i = 0; i < SLOTS_PER_THREAD; i++)
        object_free(table[i]);
    free(table);
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 2, "threads replace random objects of random sizes; "
                                                "one in eight is freed by another thread");
    server_thread threads[WL_MAX_THREADS];
    for (int i = 0; i < args.threads; i++)
        threads[i] = (server_thread){.seed = 0x5e7e7000u + (uint64_t)i,
                                     .steps = wl_scaled(5000000, args.scale)};
    wl_run_threads("server", args.threads, server_main, threads, sizeof threads[0]);
    for (size_t slot = 0; slot < EXCHANGE_SLOTS; slot++) {
        object *obj = atomic_load(&exchange[slot]);
        if (obj != NULL)
            object_free(obj);
    }
    wl_report(wl_scaled(5000000, args.scale) * (uint64_t)args.threads);
    return 0;
}
