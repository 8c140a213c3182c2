"""Functions a reader can hold in mind (issue 18 §4): none in engine/moelab is longer than
MAX_LINES, counted from its `def` line to its last line, docstring and comments included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "moelab"
MAX_LINES = 100


def long_functions(root: Path, limit: int) -> list[str]:
    """'path:line name (N lines)' for every function or method in `root` longer than `limit`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_is_longer_than_the_limit():
    too_long = long_functions(ROOT, MAX_LINES)
    assert not too_long, f"split these into named steps of at most {MAX_LINES} lines: " + "; ".join(too_long)


def test_the_check_names_a_long_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))  # def line + MAX_LINES = one too many
    (pkg / "m.py").write_text(f"class C:\n    def fine(self):\n        pass\n\n\ndef big():\n{body}\n")
    assert long_functions(pkg, MAX_LINES) == [f"pkg/m.py:6 big ({MAX_LINES + 1} lines)"]
    assert long_functions(pkg, MAX_LINES + 1) == []
