#!/usr/bin/env python3
"""Heap by allocation site from a massif snapshot, per connection.

    benches/massif_sites.py SNAPSHOT CONNECTIONS [BASELINE_SNAPSHOT]

SNAPSHOT is a `vgdb ... detailed_snapshot FILE` (or massif.out) of a
server holding CONNECTIONS idle connections; BASELINE_SNAPSHOT, if given,
is the same server before the connections, subtracted site by site. Each
top-level site of the heap tree is printed with its bytes per connection
and the frames that say what it is (the first frames outside the standard
library's allocation code, generics cut short). Written for
benches/hub_memory_massif.sh.
"""
import re
import sys


def parse(path):
    text = open(path).read()
    # The last detailed snapshot in the file.
    tree = text.rsplit("heap_tree=detailed\n", 1)[1]
    root, stack = None, []
    for line in tree.splitlines():
        m = re.match(r"^( *)n(\d+): (\d+) (.*)$", line)
        if not m:
            if line.startswith("#"):
                break
            continue
        node = {"d": len(m.group(1)), "b": int(m.group(3)), "t": m.group(4), "c": []}
        if root is None:
            root = node
            stack = [node]
            continue
        while stack[-1]["d"] >= node["d"]:
            stack.pop()
        stack[-1]["c"].append(node)
        stack.append(node)
    return root


def short(frame):
    m = re.search(r"0x[0-9A-F]+: (.*) \((.*)\)$", frame)
    if not m:
        return frame
    name, where = m.group(1), m.group(2)
    # Cut generic arguments: a<b<c>> -> a<..>
    out, depth = [], 0
    for ch in name:
        if ch == "<":
            if depth == 0:
                out.append("<..>")
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out) + " (" + where.split("/")[-1] + ")"


BORING = re.compile(
    r"library/(alloc|core|std)/|alloc/src/|UnknownInlinedFun|sys/alloc|box_new_uninit|"
    r"raw_vec|alloc_impl|allocate|do_reserve|grow_|finish_grow|reserve_for_push|try_allocate|"
    r"hashbrown|do_alloc|bytes_mut\.rs|reserve_inner|btree/|collections/|"
    r"runtime/task/(core|raw|mod|list)\.rs|scheduler/|task/spawn\.rs|(^|: )new<\.\.>"
)


def heaviest_path(node):
    out = []
    while True:
        out.append(node["t"])
        if not node["c"]:
            return out
        node = max(node["c"], key=lambda c: c["b"])


def key(node):
    """The site's identity: its first few frames outside the allocator
    and the containers; for a tokio task, the future it runs."""
    path = heaviest_path(node)[1:]
    for frame in path:
        m = re.search(r"tokio::runtime::task::core::Cell<([^,]*)", frame)
        if m:
            return ("tokio task of " + m.group(1)[:120],)
    frames = [f for f in path if not BORING.search(f)]
    return tuple(short(f) for f in frames[:4])


def sites(root):
    out = {}
    for child in root["c"]:
        if child["t"].startswith("in ") or "below massif's threshold" in child["t"]:
            k = ("(below the threshold)",)
        else:
            k = key(child)
        out[k] = out.get(k, 0) + child["b"]
    return out


def main():
    snapshot, n = sys.argv[1], int(sys.argv[2])
    now = sites(parse(snapshot))
    base = sites(parse(sys.argv[3])) if len(sys.argv) > 3 else {}
    rows = []
    for k in set(now) | set(base):
        delta = now.get(k, 0) - base.get(k, 0)
        if abs(delta) / n >= 1.0:
            rows.append((delta, k))
    rows.sort(key=lambda r: -r[0])
    total = sum(d for d, _ in rows)
    print(f"heap: {total / n:.0f} bytes per connection over {n} connections (sites of 1 byte or more)")
    for delta, k in rows:
        print(f"{delta / n:8.0f}  {k[0]}")
        for frame in k[1:]:
            print(f"          {frame}")


if __name__ == "__main__":
    main()
