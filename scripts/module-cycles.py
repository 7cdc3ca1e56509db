#!/usr/bin/env python3
"""Import cycles among the crate's modules.

For every src/**/*.rs file, collects the `crate::` and `super::` paths it uses outside
its test code (tests may reach anywhere) and resolves each to the file of the longest
module prefix (an item a module re-exports with `pub use` resolves to where it is
defined). Then, at every level of the module tree, it looks for cycles among sibling
modules, each standing for its whole subtree: the top-level modules (`metrics` excepted:
it may be used from anywhere), the modules of `session/`, those of `session/machine/`,
and so on. A parent and its own children may use each other (a type defined in mod.rs
with its `impl`s in child files needs both ways); siblings may not, directly or through
their descendants.

Test code is the body of an inline `#[cfg(test)] mod name { ... }` and the file of a
`#[cfg(test)] mod name;` declaration; the declaration removes nothing else from its file
(the `use` lines after it count). Imports for doc links only (`#[cfg(doc)] use`) are
not edges either, nor `mod` declarations; a method an `impl` in another file adds is
invisible here.

Usage: scripts/module-cycles.py [SRC_DIR]   (exit status 1 when a cycle exists)
"""

import re
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
# Used by every layer by design; its edges would only hide the real structure.
ANYWHERE = {"metrics"}


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


# `#[cfg(test)]`, other attributes between it and the item, and `mod name` with an
# optional visibility: what opens a test module, inline (`{`) or in its own file (`;`).
TEST_MOD = re.compile(
    r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([{;])"
)


def uncomment(text: str) -> str:
    """Source without comments and string/char literals (so braces in them are gone)."""
    token = re.compile(
        r'//[^\n]*|/\*.*?\*/|b?r(#*)".*?"\1|b?"(?:\\.|[^"\\])*"'
        r"|b?'(?:\\.|[^'\\])'",
        re.S,
    )
    return token.sub(lambda m: '""' if m.group(0)[-1:] in "\"'#" else " ", text)


def strip(text: str) -> str:
    """Source without comments, literals, doc-only imports and the bodies of inline test
    modules. A
    `#[cfg(test)] mod tests;` declaration drops nothing: the code after it is the
    module's own (see `test_files` for the file it names)."""
    # Imports for doc links only (`#[cfg(doc)] use ...;`) are not in the compiled crate.
    text = re.sub(r"#\[cfg\(doc\)\]\s*(?:pub(?:\([^)]*\))?\s+)?use\s[^;]*;", " ", uncomment(text))
    out, at = [], 0
    for m in TEST_MOD.finditer(text):
        if m.start() < at or m.group(2) == ";":
            continue
        depth, end = 0, len(text)
        for i in range(m.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                break
        out.append(text[at : m.start()])
        at = end
    out.append(text[at:])
    return "".join(out)


def test_files(path: Path, text: str) -> set:
    """The files of the test modules `path` declares as `#[cfg(test)] mod name;`."""
    here = path.parent if path.name in ("mod.rs", "lib.rs") else path.with_suffix("")
    found = set()
    for m in TEST_MOD.finditer(uncomment(text)):
        if m.group(2) == ";":
            found |= {here / f"{m.group(1)}.rs", here / m.group(1) / "mod.rs"}
    return found


def use_paths(text: str):
    """Every path of `use` trees (braces expanded) and every inline `a::b` path."""
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        yield from expand(re.sub(r"\s+", "", m.group(1)))
    for m in re.finditer(r"(?<![\w:])(\w+(?:::\w+)+)", text):
        yield m.group(1)


def expand(tree: str):
    if "{" not in tree:
        yield tree.split(" as ")[0]
        return
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rfind("}")]
    depth, item = 0, ""
    for ch in inner + ",":
        if ch == "," and depth == 0:
            if item:
                for sub in expand(item):
                    yield head + sub if sub != "self" else head.rstrip(":")
            item = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        item += ch
    return


def resolve(path: str, here: tuple, modules: set, reexports: dict):
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] == "super":
        # In a/b.rs (module a::b) `super` is a; in a/mod.rs (module a) it is the root.
        base = here[:-1]
        segs = segs[1:]
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    elif segs[0] == "self":
        base, segs = here, segs[1:]
    elif here + (segs[0],) in modules:
        # A child module named from its parent (`forward::login` in session/mod.rs).
        base = here
    else:
        return None
    target = base
    for i, s in enumerate(segs):
        if target + (s,) in modules:
            target = target + (s,)
            continue
        # An item the module re-exports (`pub use context::ListenerCtx;` in
        # session/mod.rs) is an edge to where it is defined, not to the re-exporter.
        seen = set()
        while (target, s) in reexports and (target, s) not in seen:
            seen.add((target, s))
            target = reexports[(target, s)]
        break
    return target


def reexports_of(files: list, modules: set) -> dict:
    """(module, name) -> the module a `pub use` of that module takes `name` from."""
    out = {}
    for p in files:
        here = module_of(p)
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", strip(p.read_text())):
            for path in expand(re.sub(r"\s+", "", m.group(1))):
                name = path.split("::")[-1]
                if name in ("*", "self"):
                    continue
                t = resolve(path, here, modules, {})
                if t is not None and t != here:
                    out[(here, name)] = t
    return out


def cycles(graph: dict):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def name(m: tuple) -> str:
    return "::".join(m) or "crate"


def siblings(graph: dict) -> dict:
    """For every module with children, the graph among its direct children, each child
    standing for its whole subtree (an edge between two files becomes an edge between
    the children of their deepest common module that hold them). Edges between a module
    and its own descendants belong to no level: a parent and its children may use each
    other (a type defined in mod.rs with its `impl`s in child files needs both ways), so
    the parent is the hub its children meet in. At the root, `metrics` is left out. Each
    edge keeps the file edges it stands for, to show where a cycle comes from."""
    out = {}
    for f, deps in graph.items():
        for t in deps:
            k = 0
            while k < min(len(f), len(t)) and f[k] == t[k]:
                k += 1
            if k == len(f) or k == len(t):
                continue
            a, b = f[: k + 1], t[: k + 1]
            if k == 0 and {a[0], b[0]} & ANYWHERE:
                continue
            out.setdefault(f[:k], {}).setdefault(a, {}).setdefault(b, []).append((f, t))
    return out


def main() -> int:
    files = sorted(p for p in SRC.rglob("*.rs") if p.name != "main.rs")
    # Test modules in files of their own may reach anywhere, like inline ones.
    tests = set().union(*(test_files(p, p.read_text()) for p in files))
    files = [p for p in files if p not in tests]
    modules = {module_of(p) for p in files}
    reexports = reexports_of(files, modules)
    graph = {}
    for p in files:
        here = module_of(p)
        deps = set()
        for path in use_paths(strip(p.read_text())):
            t = resolve(path, here, modules, reexports)
            if t is not None and t != here and t != ():
                deps.add(t)
        graph[here] = deps
    levels = siblings(graph)

    print("top-level imports (metrics omitted):")
    top = levels.get((), {})
    for m in sorted(k for k in modules if len(k) == 1):
        print(f"  {name(m)} -> {', '.join(sorted(name(d) for d in top.get(m, {}))) or '-'}")
    bad = 0
    for level in sorted(levels, key=lambda m: (len(m), m)):
        edges = levels[level]
        for comp in cycles({a: set(bs) for a, bs in edges.items()}):
            bad = 1
            where = "top-level" if level == () else f"in {name(level)}"
            print(f"cycle {where}: {' <-> '.join(name(m) for m in comp)}")
            for a in comp:
                for b in sorted(d for d in edges.get(a, {}) if d in comp):
                    via = sorted({f"{name(f)} uses {name(t)}" for f, t in edges[a][b]})
                    print(f"    {name(a)} -> {name(b)}: {'; '.join(via)}")
    if not bad:
        print(f"no cycles among sibling modules ({len(levels)} levels, {len(files)} files)")
    return bad


if __name__ == "__main__":
    sys.exit(main())
