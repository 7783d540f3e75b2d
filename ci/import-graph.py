#!/usr/bin/env python3
"""The import graph of module/ (the kernel module's Rust crate), checked.

Every `use crate::...`, `use super::...` and inline `crate::a::b` path of every .rs file
under module/ becomes an edge from the file's part to the part it names. A part is a
top-level module (glue, transport, conn, domain, pci, chardev, socket, uapi, proto,
params), except that transport::ivshmem, transport::vsock and the C entry points (chardev::entry,
socket::entry) are parts of their own. The script fails when

  - the parts import each other in a circle (a cycle in the graph), or
  - an edge is one of the forbidden arrows of docs/architecture.md ("Arrows"), or
  - anything imports an entry point file (they are reached from C only).

Edges inside one part (a part's files using each other, as Rust modules and their
children do) are not checked. `crate::module_parameters` (made by `module!` in the crate
root) counts as the part `params`' own. Usage: ci/import-graph.py [MODULE_DIR] [--dot].
"""

import os
import re
import sys

# part -> parts it must never import. "*" is every part not listed in the value of ALLOWED.
ALLOWED = {
    # The FFI corner imports nothing of ours but the wire protocol and uapi.
    "glue": {"proto", "uapi"},
    # The protocol files (rust/src) and the uapi mirror import nothing.
    "proto": set(),
    "uapi": set(),
    # The transport's contract knows the protocol and the glue (errnos) only.
    "transport": {"proto", "glue"},
    # The ivshmem transport: its contract, the protocol and the glue, nothing above.
    "transport::ivshmem": {"transport", "proto", "glue"},
    # The vsock transport: likewise.
    "transport::vsock": {"transport", "proto", "glue"},
    # The core: the transport's contract (never the ivshmem type), protocol, glue, uapi.
    "conn": {"transport", "proto", "glue", "uapi"},
    # The net device: the transport's contract, the protocol and the glue, nothing above.
    "net": {"transport", "proto", "glue", "uapi"},
    # Its C entry points: the net layer and the glue.
    "net::entry": {"net", "glue"},
}
# Arrows forbidden for parts not in ALLOWED (they may import anything else below them).
FORBIDDEN = {
    "domain": {"chardev", "socket", "pci", "root"},
    "params": {"domain", "conn", "chardev", "socket", "pci", "root"},
    "pci": {"chardev", "socket", "conn", "root"},
    "chardev": {"socket", "pci", "transport", "transport::ivshmem", "transport::vsock", "root"},
    "socket": {"chardev", "pci", "transport", "transport::ivshmem", "transport::vsock", "root"},
    "chardev::entry": {"socket", "pci", "transport", "transport::ivshmem", "transport::vsock", "root"},
    "socket::entry": {"chardev", "pci", "transport", "transport::ivshmem", "transport::vsock", "root"},
}
SPECIAL = {"ivshmem": "transport::ivshmem", "vsock": "transport::vsock"}
ENTRY_FILES = {"entry"}


def module_path(rel):
    """module/conn/endpoint/bulk.rs -> ['conn', 'endpoint', 'bulk']."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts == ["vmcs_drv"]:
        return []
    return parts


MODULES = set()


def part_of(path):
    """The part a module path belongs to (items of the crate root itself: `root`)."""
    if not path:
        return "root"
    if path[0] == "module_parameters":
        return "params"
    if path[0] not in MODULES:
        return "root"
    if len(path) >= 2 and path[1] in ENTRY_FILES:
        return path[0] + "::" + path[1]
    if len(path) >= 2 and path[0] == "transport" and path[1] in SPECIAL:
        return SPECIAL[path[1]]
    return path[0]


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*$", "", line) for line in text.split("\n"))


def use_trees(text):
    """Yields the path lists of every `use` declaration (brace groups expanded)."""
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        for p in expand(m.group(1).replace("\n", " ").replace(" ", "")):
            yield p


def expand(tree):
    """'crate::{a::{b,c},d}' -> [['crate','a','b'], ['crate','a','c'], ['crate','d']]."""
    i = tree.find("{")
    if i < 0:
        return [tree.split(" as ")[0].split("::")]
    prefix = tree[:i].rstrip(":")
    depth, items, start = 0, [], i + 1
    for j in range(i, len(tree)):
        c = tree[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                items.append(tree[start:j])
                break
        elif c == "," and depth == 1:
            items.append(tree[start:j])
            start = j + 1
    out = []
    for it in items:
        if not it:
            continue
        for sub in expand(it):
            out.append((prefix.split("::") if prefix else []) + sub)
    return out


def resolve(path, here):
    """An absolute module path for a `use` path seen in module `here`, or None."""
    if not path:
        return None
    if path[0] == "crate":
        return path[1:]
    if path[0] in ("super", "self"):
        cur = list(here)
        while path and path[0] in ("super", "self"):
            if path[0] == "super":
                cur = cur[:-1]
            path = path[1:]
        return cur + path
    return None


def edges_of(root):
    edges = {}
    for f in os.listdir(root):
        if f.endswith(".rs") and f != "vmcs_drv.rs":
            MODULES.add(f[:-3])
        elif os.path.isdir(os.path.join(root, f)):
            MODULES.add(f)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)
            here = module_path(rel)
            # Only the `module` file itself: a plain file `x.rs` is module `x`, whose
            # `super` is its parent. For mod.rs `here` is already the directory.
            src = part_of(here)
            text = strip_comments(open(full, encoding="utf-8").read())
            paths = [resolve(p, here) for p in use_trees(text)]
            paths += [m.group(1).split("::") for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text)]
            if not here:
                # The crate root names its child modules by relative paths.
                paths += [
                    [m.group(1)]
                    for m in re.finditer(r"(?<![\w:])(\w+)::", text)
                    if m.group(1) in MODULES
                ]
            for p in paths:
                if p is None or not p:
                    continue
                dst = part_of(p)
                if dst != src:
                    edges.setdefault(src, {}).setdefault(dst, set()).add(rel)
    return edges


def find_cycle(edges):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, {})):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if state.get(m) is None:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if state.get(n) is None:
            c = visit(n)
            if c:
                return c
    return None


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "module")
    edges = edges_of(root)
    if "--dot" in sys.argv:
        print("digraph vmcs {")
        for s in sorted(edges):
            for d in sorted(edges[s]):
                print(f'  "{s}" -> "{d}";')
        print("}")
        return 0
    bad = []
    for s in sorted(edges):
        for d in sorted(edges[s]):
            files = ", ".join(sorted(edges[s][d]))
            if d.endswith("::entry"):
                bad.append(f"{s} -> {d}: the C entry points are imported by nobody ({files})")
            elif s in ALLOWED and d not in ALLOWED[s]:
                bad.append(f"{s} -> {d}: {s} may import only {sorted(ALLOWED[s])} ({files})")
            elif d in FORBIDDEN.get(s, set()):
                bad.append(f"{s} -> {d}: forbidden arrow ({files})")
    cycle = find_cycle(edges)
    if cycle:
        bad.append("import cycle: " + " -> ".join(cycle))
    for s in sorted(edges):
        print(f"{s} -> {', '.join(sorted(edges[s]))}")
    if bad:
        for b in bad:
            print("FAIL: " + b, file=sys.stderr)
        return 1
    print("import graph: no cycle, no forbidden arrow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
