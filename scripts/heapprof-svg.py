#!/usr/bin/env python3
"""heapprof-svg.py: folded stacks ("outer;...;leaf BYTES" lines) drawn as an SVG flame graph.

    scripts/heapprof-svg.py [--title TITLE] [--countname bytes] FOLDED > OUT.svg

Written for scripts/heapprof-flamegraph, with the standard library only: Debian packages no
flame graph tool. Each frame is a box whose width is its share of the bytes; callers below,
callees above, siblings in name order, so that two profiles of one program line up. Hovering
a box shows its title (name, bytes, share); the SVG needs no script to read.
"""
import argparse
import hashlib
import sys
from xml.sax.saxutils import escape, quoteattr

WIDTH = 1200          # pixels of the drawing area
FRAME_HEIGHT = 16
PAD_TOP, PAD_BOTTOM, PAD_SIDE = 32, 8, 10
MIN_WIDTH = 0.1       # boxes narrower than this are left out (invisible anyway)
CHAR_WIDTH = 7.0      # of the 12px monospace text, to decide how much of a name fits


class Frame:
    __slots__ = ("name", "bytes", "children")

    def __init__(self, name):
        self.name, self.bytes, self.children = name, 0, {}

    def child(self, name):
        if name not in self.children:
            self.children[name] = Frame(name)
        return self.children[name]


def read_folded(lines):
    """The tree of frames: each line adds its bytes to every frame of its stack."""
    root = Frame("all")
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        try:
            value = int(count)
        except ValueError:
            sys.exit(f"heapprof-svg: line {number}: no byte count at its end: {line[:80]!r}")
        root.bytes += value
        node = root
        for name in stack.split(";") if stack else []:
            node = node.child(name)
            node.bytes += value
    return root


def colour(name):
    """A stable colour per name, in greens and blues (memory, as flame graph tools draw it)."""
    h = hashlib.md5(name.encode()).digest()
    return f"rgb({h[0] % 60},{150 + h[1] % 90},{100 + h[2] % 120})"


def fitted(name, width):
    chars = int((width - 6) / CHAR_WIDTH)
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[: chars - 2] + ".."


def boxes(root, scale):
    """(x, depth, width, frame) for every box wide enough to draw, the root at depth 0;
    children start at their parent's left edge, side by side in name order."""
    out, todo = [], [(root, 0, PAD_SIDE)]
    while todo:
        node, depth, x = todo.pop()
        width = node.bytes * scale
        if width < MIN_WIDTH:
            continue
        out.append((x, depth, width, node))
        for name in sorted(node.children):
            kid = node.children[name]
            todo.append((kid, depth + 1, x))
            x += kid.bytes * scale
    return out


def render(root, title, countname):
    scale = WIDTH / root.bytes if root.bytes else 0
    drawn = boxes(root, scale) if root.bytes else []
    depth = max((d for _, d, _, _ in drawn), default=0) + 1
    height = PAD_TOP + depth * FRAME_HEIGHT + PAD_BOTTOM
    total_width = WIDTH + 2 * PAD_SIDE
    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{total_width}" '
        f'height="{height}" viewBox="0 0 {total_width} {height}">',
        f'<rect x="0" y="0" width="{total_width}" height="{height}" fill="#f8f8f8"/>',
        f'<text x="{total_width / 2:.1f}" y="20" text-anchor="middle" font-family="monospace" '
        f'font-size="15">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(f'<text x="{PAD_SIDE}" y="{PAD_TOP + 12}" font-family="monospace" '
                     f'font-size="12">no samples</text>')
    for x, d, width, node in sorted(drawn, key=lambda b: (b[1], b[0])):
        y = height - PAD_BOTTOM - (d + 1) * FRAME_HEIGHT
        share = 100.0 * node.bytes / root.bytes
        tip = f"{node.name} ({node.bytes:,} {countname}, {share:.2f}%)"
        parts.append(
            f'<g><title>{escape(tip)}</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{width:.2f}" height="{FRAME_HEIGHT - 1}" '
            f'fill={quoteattr(colour(node.name))} rx="2"/>'
            f'<text x="{x + 3:.2f}" y="{y + 11}" font-family="monospace" font-size="12">'
            f'{escape(fitted(node.name, width))}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--title", default="heap profile")
    parser.add_argument("--countname", default="bytes")
    parser.add_argument("folded", help="a folded-stack file (POOLMALLOC_PROF's *.folded)")
    args = parser.parse_args()
    with open(args.folded, encoding="utf-8", errors="replace") as f:
        root = read_folded(f)
    sys.stdout.write(render(root, args.title, args.countname))


if __name__ == "__main__":
    main()
