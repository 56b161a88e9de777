/*
 * prodcons: producer/consumer across threads. The threads form a ring: each one produces
 * batches of messages (16 B - 2 KiB; the first 64 payload bytes are filled and checksummed, as a
 * header would be) and sends them to the next thread, which checks and frees them. Every
 * message is therefore freed by a thread other than the one that allocated it: the pattern of
 * a pipeline, a work queue or a logger thread, and the one where allocators that keep freed
 * memory per thread either hand it back efficiently or grow without bound.
 *
 * A thread waits (draining its own inbox meanwhile) while the next one has more than
 * MAX_PENDING batches queued, so memory stays bounded whoever is faster. With -t 1 the thread
 * sends to itself: the same work without the cross-thread frees. Every thread produces the same
 * number of messages (see common.h for the arguments and output).
 */
#include "common.h"

#include <sched.h>
#include <stdatomic.h>

#define BATCH_MESSAGES 64
#define MAX_PENDING 32
#define PAYLOAD_TOUCHED 64 /* bytes of each payload written and checked, as a header would be */

typedef struct message {
    struct message *next;
    uint32_t size;
    uint32_t checksum; /* of the payload after the header */
} message;

typedef struct batch {
    struct batch *next;
    message *first;
} batch;

typedef struct prodcons_thread {
    _Alignas(64) _Atomic(batch *) inbox; /* a lock-free stack: push with CAS, take all at once */
    _Atomic int pending;                 /* batches in inbox, for back-pressure */
    struct prodcons_thread *next;        /* where this thread sends */
    uint64_t seed;
    uint64_t batches_to_send, batches_to_receive;
    uint64_t received;
} prodcons_thread;

static uint32_t payload_checksum(const message *m) {
    const unsigned char *payload = (const unsigned char *)(m + 1);
    size_t n = m->size - sizeof *m;
    if (n > PAYLOAD_TOUCHED)
        n = PAYLOAD_TOUCHED;
    uint32_t sum = m->size;
    for (size_t i = 0; i < n; i++)
        sum = sum * 31u + payload[i];
    return sum;
}

static message *message_new(uint64_t *seed) {
    size_t size = wl_rand_log(seed, 16, 2048);
    if (size < sizeof(message))
        size = sizeof(message);
    message *m = wl_malloc("prodcons", size);
    m->size = (uint32_t)size;
    unsigned char *payload = (unsigned char *)(m + 1);
    size_t n = size - sizeof *m;
    if (n > PAYLOAD_TOUCHED)
        n = PAYLOAD_TOUCHED;
    memset(payload, (int)(wl_rand(seed) & 0xff), n);
    m->checksum = payload_checksum(m);
    return m;
}

static void message_free(message *m) {
    if (m->checksum != payload_checksum(m))
        wl_die("prodcons", "a message was overwritten: allocator bug");
    free(m);
}

static void send_batch(prodcons_thread *t) {
    batch *b = wl_malloc("prodcons", sizeof *b);
    b->first = NULL;
    for (int i = 0; i < BATCH_MESSAGES; i++) {
        message *m = message_new(&t->seed);
        m->next = b->first;
        b->first = m;
    }
    prodcons_thread *to = t->next;
    b->next = atomic_load_explicit(&to->inbox, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&to->inbox, &b->next, b, memory_order_release,
                                                  memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&to->pending, 1, memory_order_relaxed);
    t->batches_to_send--;
}

/* Frees everything in our inbox; returns the number of batches taken. */
static int drain_inbox(prodcons_thread *t) {
    batch *b = atomic_exchange_explicit(&t->inbox, NULL, memory_order_acquire);
    int taken = 0;
    while (b != NULL) {
        batch *next_batch = b->next;
        for (message *m = b->first; m != NULL;) {
            message *next = m->next;
            message_free(m);
            m = next;
        }
        free(b);
        b = next_batch;
        taken++;
    }
    atomic_fetch_sub_explicit(&t->pending, taken, memory_order_relaxed);
    t->received += (uint64_t)taken;
    return taken;
}

static void *prodcons_main(void *arg) {
    prodcons_thread *t = arg;
    while (t->batches_to_send > 0 || t->received < t->batches_to_receive) {
        bool sent = false;
        if (t->batches_to_send > 0 &&
            atomic_load_explicit(&t->next->pending, memory_order_relaxed) < MAX_PENDING) {
            send_batch(t);
            sent = true;
        }
        if (drain_inbox(t) == 0 && !sent)
            sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv) {
    wl_args args = wl_parse_args(argc, argv, 2, "a ring of threads; each sends batches of "
                                                "messages to the next, which frees them");
    static prodcons_thread threads[WL_MAX_THREADS];
    uint64_t batches = wl_scaled(120000, args.scale);
    for (int i = 0; i < args.threads; i++) {
        threads[i].next = &threads[(i + 1) % args.threads];
        threads[i].seed = 0x9c0000u + (uint64_t)i;
        threads[i].batches_to_send = batches;
        threads[i].batches_to_receive = batches;
    }
    wl_run_threads("prodcons", args.threads, prodcons_main, threads, sizeof threads[0]);
    wl_report(batches * BATCH_MESSAGES * (uint64_t)args.threads);
    return 0;
}
