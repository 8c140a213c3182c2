"""The engine's layers (docs/ARCHITECTURE.md §5), enforced on the source.

Every import in engine/moelab counts, those inside functions too: a lazy import still ties the two
modules together, it only hides the knot until run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "moelab"

# Lowest first. A module may import its own package and the tiers below its own; packages on one
# tier are peers and import neither each other nor anything above. "moelab" is the package root
# (__init__.py: __version__ and the load_model façade over io).
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("models",),
    ("remote_code",),
    ("io",),
    ("moelab",),
    ("methods", "data", "launch"),
    ("train",),
    ("export", "analysis"),
    ("commands",),
    ("cli",),
    ("__main__",),
]
TIER = {unit: i for i, tier in enumerate(LAYERS) for unit in tier}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def unit(module: str) -> str:
    """The layer unit of a module: its top-level package (or file) under moelab."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "moelab"


def imported_modules(module: str) -> Iterator[tuple[str, int]]:
    """(moelab module imported, line) for every import statement of `module`, at any depth."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            if name == "moelab" or name.startswith("moelab."):
                yield name, node.lineno


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _ in imported_modules(m):
            assert target in MODULES, (
                f"{MODULES[m]}: imports {target}, which is not a module of engine/moelab"
            )
            if target != m:
                edges[m].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_unit_has_a_layer() -> None:
    assert {unit(m) for m in MODULES} <= set(TIER), (
        "add the new package to LAYERS and to docs/ARCHITECTURE.md"
    )


def test_no_import_against_the_layer_order() -> None:
    wrong = []
    for m in MODULES:
        for target, line in imported_modules(m):
            src, dst = unit(m), unit(target)
            if src != dst and TIER[dst] >= TIER[src]:
                wrong.append(
                    f"{MODULES[m].relative_to(ROOT.parent)}:{line}: {src} imports {target} ({dst} is "
                    f"{'a peer' if TIER[dst] == TIER[src] else 'above'})"
                )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_circle_among_modules() -> None:
    assert cycles(graph()) == []


def test_no_circle_among_packages() -> None:
    edges: dict[str, set[str]] = {unit(m): set() for m in MODULES}
    for m, targets in graph().items():
        edges[unit(m)] |= {unit(t) for t in targets} - {unit(m)}
    assert cycles(edges) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycle_finder_finds_circles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert sorted(cycles(edges)) == expected


def test_imports_inside_functions_and_relative_ones_count(tmp_path: Path) -> None:
    MODULES["moelab.models._probe"] = tmp_path / "_probe.py"
    try:
        (tmp_path / "_probe.py").write_text(
            "def f():\n    from moelab.train import trainer\n\nfrom ..io import checkpoint\n"
        )
        assert sorted(imported_modules("moelab.models._probe")) == [
            ("moelab.io.checkpoint", 4),
            ("moelab.train.trainer", 2),
        ]
    finally:
        del MODULES["moelab.models._probe"]
