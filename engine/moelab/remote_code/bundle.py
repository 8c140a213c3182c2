"""modeling_moelab.py: the engine's model sources and the Hugging Face wrapper as ONE file.

transformers copies a checkpoint's remote code on its own, so the file may import only torch,
transformers and the standard library. It is generated, never hand-written: the modules
`remote_code/hf_wrapper.py` needs (transitively, within moelab) are concatenated in dependency
order with their moelab imports removed (every bundled module then sees the others' names as
globals). Writers of `moelab` checkpoints call `write_remote_code(out)`; config.json's `auto_map`
(ModelConfig.to_hf_dict) points at the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

from moelab.models.config import REMOTE_CODE_FILE

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # engine/moelab
_ENTRY = "moelab.remote_code.hf_wrapper"


def _path_of(module: str) -> Path:
    return _PACKAGE_ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _moelab_imports(tree: ast.Module) -> list[ast.ImportFrom]:
    """Every `from moelab.x import ...`, function-local ones included (model.py imports the LoRA
    experts lazily)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "moelab" for a in node.names):
            raise ValueError(
                f"line {node.lineno}: `import moelab...` cannot be bundled; use `from moelab... import`"
            )
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "moelab"
        ):
            found.append(node)
    return found


def _order(entry: str) -> list[str]:
    """The modules `entry` needs, each after the modules it imports."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            raise ValueError(f"{module}: import cycle, cannot bundle")
        visiting.add(module)
        tree = ast.parse(_path_of(module).read_text())
        for node in _moelab_imports(tree):
            assert node.module is not None
            visit(node.module)
        visiting.discard(module)
        done.append(module)

    visit(entry)
    return done


def _strip(module: str, source: str) -> tuple[str, set[str]]:
    """The source without its moelab imports and its `from __future__` line; plus its top-level names."""
    tree = ast.parse(source)
    drop: set[int] = set()
    for node in [
        *_moelab_imports(tree),
        *(n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"),
    ]:
        assert node.end_lineno is not None
        drop.update(range(node.lineno, node.end_lineno + 1))
    lines = [line for i, line in enumerate(source.splitlines(), start=1) if i not in drop]
    return "\n".join(lines).strip("\n") + "\n", _defined_names(tree)


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def bundle() -> str:
    """The text of modeling_moelab.py for the current sources."""
    parts = [
        '"""MoE Lab model for transformers (trust_remote_code). GENERATED from the moelab engine\'s\n'
        'sources by moelab.remote_code.bundle: do not edit; rewrite it with a newer MoE Lab instead."""\n\n'
        "from __future__ import annotations\n"
    ]
    owner: dict[str, str] = {}
    for module in _order(_ENTRY):
        text, names = _strip(module, _path_of(module).read_text())
        for name in names:
            if name in owner:
                raise ValueError(
                    f"{name!r} is defined in both {owner[name]} and {module}: rename one to bundle them"
                )
            owner[name] = module
        parts.append(f"\n# ---- {module} {'-' * max(0, 90 - len(module))}\n\n{text}")
    return "".join(parts)


def write_remote_code(out: Path) -> None:
    """modeling_moelab.py into the checkpoint directory `out` (config.json's auto_map names it)."""
    (Path(out) / REMOTE_CODE_FILE).write_text(bundle())
