#!/usr/bin/env python3
"""Import cycles among the crate's modules.

For every src/**/*.rs file, collects the `crate::` and `super::` paths it uses outside
its `#[cfg(test)] mod tests` (tests may reach anywhere), resolves each to the file of the
longest module prefix, and reports cycles in the file graph and in the graph between
top-level modules (`metrics` excepted: it may be used from anywhere). `mod` declarations
are not edges, and a method an `impl` in another file adds is invisible here.

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


def strip(text: str) -> str:
    """Source without comments, string/char literals and the test module."""
    token = re.compile(
        r'//[^\n]*|/\*.*?\*/|b?r(#*)".*?"\1|b?"(?:\\.|[^"\\])*"'
        r"|b?'(?:\\.|[^'\\])'",
        re.S,
    )
    text = token.sub(lambda m: '""' if m.group(0)[-1:] in "\"'#" else " ", text)
    return re.split(r"#\[cfg\(test\)\]\s*mod\s+tests", text)[0]


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


def resolve(path: str, here: tuple, modules: set):
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
    for s in segs:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target


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


def main() -> int:
    files = sorted(p for p in SRC.rglob("*.rs") if p.name != "main.rs")
    modules = {module_of(p) for p in files}
    graph, top = {}, {}
    for p in files:
        here = module_of(p)
        deps = set()
        for path in use_paths(strip(p.read_text())):
            t = resolve(path, here, modules)
            if t is not None and t != here and t != ():
                deps.add(t)
        graph[here] = deps
        if here:
            for d in deps:
                if d[0] != here[0] and not {d[0], here[0]} & ANYWHERE:
                    top.setdefault(here[0], set()).add(d[0])
            top.setdefault(here[0], set())

    print("top-level imports (metrics omitted):")
    for m in sorted(top):
        print(f"  {m} -> {', '.join(sorted(top[m])) or '-'}")
    bad = 0
    for label, g in (("top-level", {(k,): {(d,) for d in v} for k, v in top.items()}),
                     ("file", graph)):
        found = cycles(g)
        if found:
            bad = 1
            for comp in found:
                print(f"{label} cycle: {' <-> '.join(name(m) for m in comp)}")
                for m in comp:
                    inner = sorted(name(d) for d in g.get(m, ()) if d in comp)
                    print(f"    {name(m)} uses {', '.join(inner)}")
        else:
            print(f"no {label} cycles")
    return bad


if __name__ == "__main__":
    sys.exit(main())
