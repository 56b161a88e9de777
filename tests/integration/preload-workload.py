"""A threaded Python workload for test-preload: run under PYTHONMALLOC=malloc, every object it
makes and drops is a malloc/free pair, so a few seconds of it put millions of blocks (and
frees from threads that did not allocate them) through the preloaded allocator.

It prints only results that are the same on every run, so that test-preload can compare the
output of a plain run with a run under LD_PRELOAD.
"""
import hashlib
import queue
import sys
import threading

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
WORKERS = 4


def build(seed, n):
    """Dicts, lists, tuples, strings and ints in a tree, dropped by the caller."""
    records = []
    for i in range(n):
        key = "k%d-%d" % (seed, i)
        records.append({
            "key": key,
            "values": [i * j for j in range(i % 7)],
            "pair": (key, i),
            "text": key * (1 + i % 5),
        })
    return records


def digest(records):
    h = hashlib.sha256()
    for r in records:
        h.update(r["text"].encode())
        h.update(repr(r["values"]).encode())
    return h.hexdigest()[:16]


def worker(index, out, handoff):
    for rnd in range(ROUNDS):
        records = build(index * 1000 + rnd, 20000)
        out.append((index, rnd, digest(records), len(records)))
        # Another thread drops half of the objects this one made.
        handoff.put(records[: len(records) // 2])
        del records


def dropper(handoff, dropped):
    while True:
        item = handoff.get()
        if item is None:
            return
        dropped.append(sum(len(r["values"]) for r in item))
        del item


def main():
    out, dropped = [], []
    handoff = queue.Queue(maxsize=8)
    drop_thread = threading.Thread(target=dropper, args=(handoff, dropped))
    drop_thread.start()
    threads = [threading.Thread(target=worker, args=(i, out, handoff)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handoff.put(None)
    drop_thread.join()

    # A cyclic structure the collector has to find, and a big string/bytes churn.
    class Node:
        __slots__ = ("next", "payload")

    for _ in range(50):
        nodes = [Node() for _ in range(2000)]
        for a, b in zip(nodes, nodes[1:] + nodes[:1]):
            a.next = b
            a.payload = [b]
        del nodes
    blob = b"".join(bytes([i % 251]) * 1000 for i in range(2000))

    for index, rnd, dig, n in sorted(out):
        print(index, rnd, dig, n)
    print("dropped", sum(dropped))
    print("blob", hashlib.sha256(blob).hexdigest()[:16])


if __name__ == "__main__":
    main()
