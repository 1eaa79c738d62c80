"""DESIGN.md's import arrows: ingest ← realtime ← vod ← control, never backwards.

`ingest` imports none of the others; `realtime` may import `ingest`; `vod` may
import `ingest` and `realtime` (data types); nothing but `control` imports
`control`. Checked on the source with `ast`, imports inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "ingest": {"realtime", "vod", "control"},
    "realtime": {"vod", "control"},
    "vod": {"control"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports: at the top, inside
    functions and under TYPE_CHECKING alike (`from a import b` names the module
    ``a.b`` when there is one, else ``a``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", ["ingest", "realtime", "vod", "control"])
def test_no_import_cycles_inside_a_package(package: str) -> None:
    paths = sorted((ROOT / package).rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _targets(p, modules) for p in paths}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_domain_does_not_reach_aiohttp() -> None:
    """control/domain/ is HTTP-free: neither it nor any project module it imports
    (directly or through others, function-local imports included) imports aiohttp."""
    paths = sorted(
        p for pkg in ("ingest", "realtime", "vod", "control") for p in (ROOT / pkg).rglob("*.py")
    )
    by_name = {_module_name(p): p for p in paths}
    modules = set(by_name)
    seen: dict[str, list[str]] = {}
    todo = [(m, [m]) for m in modules if m.startswith("control.domain")]
    offenders = []
    while todo:
        name, chain = todo.pop()
        if name in seen:
            continue
        seen[name] = chain
        path = by_name[name]
        if "aiohttp" in _imports(path):
            offenders.append(" -> ".join(chain))
        # a module also runs its packages' __init__ when imported
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        for target in sorted(_targets(path, modules) | {p for p in parents if p in modules}):
            todo.append((target, [*chain, target]))
    assert not offenders, "aiohttp reached from the domain:\n" + "\n".join(offenders)
