"""Fail on import cycles in a package (imports inside functions count) and on modules over a line limit.

Usage: ``python scripts/check_imports.py [--root DIR] [--package NAME] [--max-lines N]``
(defaults: the repository root, ``hatidata_auth``, 400). Exit status 0 when the only cycles are the
allowlisted ones (printed as warnings) and every module is within the limit or allowlisted; 1 otherwise,
naming each new cycle as ``a -> b -> a`` and each oversized module with its line count.

Edges: every ``import x`` / ``from x import y`` anywhere in a module, function bodies included, relative
imports resolved; ``from a import b`` is an edge to ``a.b`` when that is a module of the package, else to
``a``. Imports under ``if TYPE_CHECKING:`` are not edges (they never run). Importing ``a.b.c`` also runs
``a/__init__`` and ``a/b/__init__``, but those implicit edges are left out: they would make every package
``__init__`` that imports a submodule a cycle, which is harmless in Python.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

# Cycles present when the check was introduced, each one a strongly connected component named by its
# sorted members. Another part of issue #12 is reshaping these modules; remove an entry once it is broken.
# The check still fails on any cycle not exactly listed here (a new module joining a known cycle counts).
KNOWN_CYCLES: dict[frozenset[str], str] = {}

# Modules over the limit that another part of issue #12 is splitting (target shape items 2 and 4).
OVERSIZED_ALLOWED: dict[str, str] = {
}


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of ``path`` (a ``.py`` file under ``root``); packages are named without ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:`` (their ``else`` does run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield stmt
                yield from _runtime_nodes(stmt)
            continue
        yield child
        yield from _runtime_nodes(child)


def imports_of(module: str, is_package: bool, tree: ast.Module, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``module`` imports at run time (top level or inside functions)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {_owning_module(name, modules) for name in found} - {module, None}  # type: ignore[misc]


def _owning_module(name: str, modules: set[str]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Edges ``module -> imported modules`` between the modules of ``package`` found under ``root``."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    modules = set(files)
    return {
        name: imports_of(name, path.name == "__init__.py", ast.parse(path.read_text(), str(path)), modules)
        for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; sorted by first member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle ``[a, b, ..., a]`` inside ``component`` (breadth-first from its first member)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if target not in parents:
                    parents[target] = node
                    nxt.append(target)
        frontier = nxt
    return component


def oversized(root: Path, package: str, max_lines: int) -> dict[str, int]:
    """``{relative path: line count}`` of the package's modules longer than ``max_lines``."""
    counts = {
        path.relative_to(root).as_posix(): len(path.read_text().splitlines())
        for path in sorted((root / package).rglob("*.py"))
    }
    return {path: n for path, n in counts.items() if n > max_lines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--package", default="hatidata_auth")
    parser.add_argument("--max-lines", type=int, default=400)
    parser.add_argument("--no-allowlist", action="store_true", help="treat every cycle and oversized module as new")
    args = parser.parse_args(argv)
    known = {} if args.no_allowlist else KNOWN_CYCLES
    allowed_big = {} if args.no_allowlist else OVERSIZED_ALLOWED

    graph = import_graph(args.root, args.package)
    failed = False
    for component in cycles(graph):
        path = " -> ".join(cycle_path(graph, component))
        reason = known.get(frozenset(component))
        if reason:
            print(f"warning: known import cycle ({reason}): {path}  [members: {', '.join(component)}]")
        else:
            failed = True
            print(f"error: import cycle: {path}  [members: {', '.join(component)}]")
    for path, count in oversized(args.root, args.package, args.max_lines).items():
        if path in allowed_big:
            print(f"warning: {path} has {count} lines > {args.max_lines} ({allowed_big[path]})")
        else:
            failed = True
            print(f"error: {path} has {count} lines > {args.max_lines}")
    for path in sorted(set(allowed_big) - set(oversized(args.root, args.package, args.max_lines))):
        print(f"note: {path} is allowlisted as oversized but no longer is: remove it from OVERSIZED_ALLOWED")
    print("import check: " + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
