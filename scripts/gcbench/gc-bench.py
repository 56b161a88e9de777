#!/usr/bin/env python3
"""gc-bench.py: CPython's cycle collector on the shapes gc-bench.c builds for poolmalloc.

  gc-bench.py full N alloc|shuffled [reps] [root-first|root-last]
      A root list of N slots (allocated before the nodes, or after them) and N nodes (a class with __slots__ a, b:
      two references, like gc-bench.c's node) forming a doubly linked ring, in allocation
      order or in a random order ($GCBENCH_PERM, if set, names a file with that order, as
      written by "gc-bench perm"). Median time of gc.collect() per tracked object (N + 1),
      less the time of gc.collect() on the interpreter's own objects measured before.
  gc-bench.py cycles N [reps]
      N/2 unreachable two-node cycles: median gc.collect() time per freed object.
  gc-bench.py young N_OLD [reps]
      N_OLD live old nodes, then 1000 young two-node cycles that also refer to old nodes:
      the shortest pause of REPS (51) gc.collect(0), in microseconds, when they are garbage,
      then alive.
Output: lines "result <name> <value> <unit>", as gc-bench.c.
"""
import array
import gc
import os
import random
import statistics
import sys
import time


class Node:
    __slots__ = ("a", "b")


def timed_collect(generation=2):
    t0 = time.perf_counter()
    n = gc.collect(generation)
    return time.perf_counter() - t0, n


def baseline(reps):
    gc.collect()
    return statistics.median(timed_collect()[0] for _ in range(reps))


def shuffled_order(n):
    """The order gc-bench wrote to $GCBENCH_PERM (so that all three build the same graph), or
    a fresh random one."""
    path = os.environ.get("GCBENCH_PERM")
    if path:
        perm = array.array("I")
        with open(path, "rb") as f:
            perm.fromfile(f, n)
        return perm
    order = list(range(n))
    random.Random(1).shuffle(order)
    return order


def full(n, shuffled, reps, root_last=False):
    gc.disable()
    base = baseline(reps)
    root = None if root_last else [None] * n
    nodes = [Node() for _ in range(n)]
    if root_last:
        root = [None] * n
    order = shuffled_order(n) if shuffled else range(n)
    for i in range(n):
        x = nodes[order[i]]
        x.a = nodes[order[(i + 1) % n]]
        x.b = nodes[order[i - 1]]
        root[i] = x
    del nodes, order, x
    gc.collect()
    times = []
    for _ in range(reps):
        dt, found = timed_collect()
        if found:
            sys.exit("unexpected garbage")
        times.append(max(dt - base, 0.0) * 1e9 / (n + 1))
    kind = "shuffled" if shuffled else "alloc"
    shape = "-rootlast" if root_last else ""
    print(f"result full-{kind}-cpython{shape}-{n} {statistics.median(times):.2f} ns/object")


def cycles(n, reps):
    gc.disable()
    gc.collect()
    times = []
    for _ in range(reps):
        for _ in range(n // 2):
            x, y = Node(), Node()
            x.a, y.a = y, x
        del x, y
        dt, found = timed_collect()
        if found < n // 2 * 2:
            sys.exit(f"collected {found}, expected {n // 2 * 2}")
        times.append(dt * 1e9 / found)
    print(f"result cycles-cpython-{n} {statistics.median(times):.2f} ns/freed-object")


def young(n_old, reps):
    gc.disable()
    gc.collect()
    old = [Node() for _ in range(n_old)]
    gc.collect()
    rnd = random.Random(2)
    keep = []
    for live in (False, True):
        times = []
        for _ in range(reps):
            for _ in range(1000):
                x, y = Node(), Node()
                x.a, y.a = y, x
                if n_old:
                    y.b = old[rnd.randrange(n_old)]
                if live:
                    keep.append(y)
            del x, y
            dt, found = timed_collect(0)
            if not live and found < 2000:
                sys.exit(f"collected {found}")
            times.append(dt * 1e6)
            keep.clear()  # garbage now, in generation 1
            gc.collect(1)
        kind = "live" if live else "garbage"
        # the shortest pause, as gc-bench.c: noise only ever lengthens one
        print(f"result young-{kind}-pause-cpython-old-{n_old} {min(times):.1f} us")


def main(argv):
    if len(argv) >= 3 and argv[0] == "full":
        full(int(argv[1]), argv[2] == "shuffled", int(argv[3]) if len(argv) > 3 else 5,
             len(argv) > 4 and argv[4] == "root-last")
    elif len(argv) >= 2 and argv[0] == "cycles":
        cycles(int(argv[1]), int(argv[2]) if len(argv) > 2 else 5)
    elif len(argv) >= 2 and argv[0] == "young":
        young(int(argv[1]), int(argv[2]) if len(argv) > 2 else 51)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
    # skip the interpreter's teardown: freeing ten million nodes one by one takes longer
    # than the benchmark
    sys.stdout.flush()
    os._exit(0)
