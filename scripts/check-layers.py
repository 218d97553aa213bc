#!/usr/bin/env python3
"""Fails if the modules of a crate import each other in a cycle.

For every crate given (a folder with src/), each top-level module of src/ (a file `x.rs` or a
folder `x/`) is a node; a `crate::y` path anywhere in x's files (also inside `use crate::{y, z}`)
is an edge x -> y. Inside each folder module the same is done for its files, with `super::y`
paths (a file's siblings). A cycle is reported as the modules on it, with the file and line of
each edge, and the script exits 1. It also fails if the core, the FReD store or the server
depends on a crate its layer must not (see FORBIDDEN). Crate cycles cargo refuses itself.

    scripts/check-layers.py [CRATE_DIR...]    (default: every workspace crate with a src/)
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMENT = re.compile(r"//.*$")


def rust_files(path):
    if os.path.isfile(path):
        yield path
        return
    for dirpath, _, files in os.walk(path):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(dirpath, f)


def module_name(entry):
    return entry[:-3] if entry.endswith(".rs") else entry


def paths_after(prefix, line):
    """The first segment of every path that starts with `prefix::` in `line`."""
    out = []
    for m in re.finditer(r"\b" + prefix + r"::(\{|\w+)", line):
        if m.group(1) != "{":
            out.append(m.group(1))
            continue
        depth, i, cur, names = 1, m.end(), "", []
        while i < len(line) and depth:
            c = line[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            if depth == 1 and c in ",}" or depth == 0:
                names.append(cur)
                cur = ""
            elif depth == 1:
                cur += c
            i += 1
        for n in names:
            n = n.strip().split("::")[0].strip()
            if re.fullmatch(r"\w+", n or ""):
                out.append(n)
    return out


def joined_lines(path):
    """Lines, with a `use` statement that spans lines joined into its first line."""
    with open(path, encoding="utf-8") as f:
        raw = [COMMENT.sub("", l) for l in f]
    i = 0
    while i < len(raw):
        line, start = raw[i], i
        if re.match(r"\s*(pub(\([^)]*\))?\s+)?use\b", line):
            while ";" not in line and i + 1 < len(raw):
                i += 1
                line += " " + raw[i].strip()
        yield start + 1, line
        i += 1


def graph(folder, prefix, skip):
    """Edges between the modules in `folder` (files x.rs and folders x/), by `prefix::` paths."""
    nodes = {}
    for entry in sorted(os.listdir(folder)):
        full = os.path.join(folder, entry)
        if entry in skip or not (entry.endswith(".rs") or os.path.isdir(full)):
            continue
        nodes.setdefault(module_name(entry), []).append(full)
    edges = {}
    for node, fulls in nodes.items():
        for full in fulls:
            # Inside a folder module, `super::` from its mod.rs leaves the folder: only the
            # folder's files other than mod.rs look at siblings with `super::`.
            for path in rust_files(full):
                if prefix == "super" and (os.path.dirname(path) != folder):
                    continue
                for lineno, line in joined_lines(path):
                    for target in paths_after(prefix, line):
                        if target in nodes and target != node:
                            edges.setdefault((node, target), f"{os.path.relpath(path, ROOT)}:{lineno}")
    return nodes, edges


def cycles(nodes, edges):
    """Strongly connected components with more than one module (Tarjan)."""
    adj = {n: sorted(t for (s, t) in edges if s == n) for n in nodes}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def check(crate):
    src = os.path.join(crate, "src")
    problems = []
    folders = [(src, "crate", {"lib.rs", "main.rs", "bin"})]
    for dirpath, dirs, _ in os.walk(src):
        for d in dirs:
            folders.append((os.path.join(dirpath, d), "super", {"mod.rs"}))
    for folder, prefix, skip in folders:
        nodes, edges = graph(folder, prefix, skip)
        for comp in cycles(nodes, edges):
            where = [f"  {s} -> {t}  ({loc})" for (s, t), loc in sorted(edges.items())
                     if s in comp and t in comp]
            problems.append(f"{os.path.relpath(folder, ROOT)}: cycle {' <-> '.join(comp)}\n" + "\n".join(where))
    return problems


def workspace_crates():
    out = []
    for dirpath, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in ("target", ".git", "fuzz", "node_modules")]
        if "Cargo.toml" in files and os.path.isdir(os.path.join(dirpath, "src")):
            out.append(dirpath)
    return sorted(out)


# Dependencies a crate must not have: the lab's and the kit's tools stay out of the server, HTTP
# out of the core.
FORBIDDEN = {
    "host/core": ["discedge-server", "discedge-lab", "discedge-kit", "discedge-fred", "axum", "plotters", "csv", "indicatif"],
    "host/fred": ["discedge-server", "discedge-lab", "discedge-kit", "axum", "plotters", "csv", "indicatif"],
    "host/server": ["discedge-lab", "discedge-kit", "plotters", "csv", "indicatif"],
}


def forbidden_deps():
    problems = []
    for crate, names in FORBIDDEN.items():
        with open(os.path.join(ROOT, crate, "Cargo.toml"), encoding="utf-8") as f:
            deps = [l.split("=")[0].strip() for l in f if re.match(r"^[A-Za-z0-9_-]+\s*=", l)]
        for name in names:
            if name in deps:
                problems.append(f"{crate}/Cargo.toml: depends on {name}, which this layer must not")
    return problems


def main():
    crates = sys.argv[1:] or workspace_crates()
    problems = [p for c in crates for p in check(os.path.abspath(c))]
    if not sys.argv[1:]:
        problems += forbidden_deps()
    for p in problems:
        print(p)
    print(f"check-layers: {len(crates)} crates, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
