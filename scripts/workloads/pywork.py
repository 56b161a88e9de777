"""pywork: a Python workload for scripts/compare, our own code.

Run as `PYTHONMALLOC=malloc python3 pywork.py [--scale S]` every Python object goes through
malloc, so the preloaded allocator serves them all; without PYTHONMALLOC Python uses its own
pymalloc for objects up to 512 bytes (the reference poolmalloc must match).

What it does, in rounds, with a fixed seed so every run does the same work:
  records   builds dicts of mixed values (str, int, float, nested lists and dicts)
  json      serialises them with json.dumps and parses them back, checking the round trip
  index     groups records into dicts of lists by key, sorts, sets of tags
  strings   splits, joins, formats and slices text into many short-lived strings
  tree      a temporary tree of small objects that is built and thrown away whole
Each round drops most of its objects and keeps a few, so the heap churns and grows slowly, as
a long-running service's does. Prints ops=N (records processed) at the end.
"""

import argparse
import json
import random
import sys

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
         "zulu").split()


def make_record(rng, i):
    name = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    return {
        "id": i,
        "name": name,
        "score": rng.random() * 1000.0,
        "tags": [rng.choice(WORDS) for _ in range(rng.randint(0, 6))],
        "counts": {w: rng.randint(0, 99) for w in rng.sample(WORDS, rng.randint(1, 5))},
        "history": [(rng.randint(0, 10**6), rng.choice(WORDS)) for _ in range(rng.randint(0, 4))],
        "note": "x" * rng.randint(0, 200),
    }


def json_round_trip(records):
    text = json.dumps(records)
    back = json.loads(text)
    if len(back) != len(records) or back[-1]["id"] != records[-1]["id"]:
        sys.exit("pywork: JSON round trip lost data")
    return len(text)


def build_index(records):
    by_tag = {}
    for r in records:
        for t in r["tags"]:
            by_tag.setdefault(t, []).append(r["id"])
    ordered = sorted(records, key=lambda r: (r["name"], -r["score"]))
    tag_sets = [frozenset(r["tags"]) for r in records]
    common = set().union(*tag_sets[:200]) if tag_sets else set()
    return len(by_tag) + len(ordered) + len(common)


def churn_strings(rng, records):
    total = 0
    for r in records:
        line = "{id}:{name}:{score:.3f}:{tags}".format(id=r["id"], name=r["name"],
                                                        score=r["score"],
                                                        tags=",".join(r["tags"]))
        parts = line.split(":")
        total += len(parts[1].upper()) + len(line[3:-3]) + len(parts[-1].replace(",", ";"))
        if rng.random() < 0.1:
            total += len("".join(reversed(parts)))
    return total


class Node:
    __slots__ = ("value", "children")

    def __init__(self, value):
        self.value = value
        self.children = []


def build_tree(rng, size):
    root = Node(0)
    nodes = [root]
    for i in range(1, size):
        node = Node(i)
        rng.choice(nodes).children.append(node)
        nodes.append(node)
    count, stack = 0, [root]
    while stack:
        n = stack.pop()
        count += 1
        stack.extend(n.children)
    if count != size:
        sys.exit("pywork: the tree lost nodes")
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the amount of work (default 1)")
    args = parser.parse_args()
    if not 0 < args.scale <= 1000:
        parser.error("--scale must be above 0 and at most 1000")
    rng = random.Random(20261121)
    rounds = max(1, int(30 * args.scale))
    kept = []
    ops = 0
    for rnd in range(rounds):
        records = [make_record(rng, rnd * 10000 + i) for i in range(3000)]
        json_round_trip(records)
        build_index(records)
        churn_strings(rng, records)
        build_tree(rng, 20000)
        kept.extend(records[::50])  # a few records outlive their round
        ops += len(records)
    if len(kept) != rounds * 60:
        sys.exit("pywork: kept records went missing")
    print("ops=%d" % ops)


if __name__ == "__main__":
    main()
