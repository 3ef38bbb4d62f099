"""The code's shape: no function in segcli/ longer than a screen (60 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import segcli

MAX_LINES = 60
PACKAGE = Path(segcli.__file__).parent


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    """`file:line name (N lines)` for every function or method of more than `limit` lines, decorators excluded."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_a_screen():
    assert long_functions() == []


def test_the_check_sees_a_long_function(tmp_path):
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * 70)
    assert long_functions(tmp_path) == [f"{tmp_path.name}/long.py:1 f (71 lines)"]


def _imports(path: Path) -> set[str]:
    """The segcli modules a file imports (at the top or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name.startswith("segcli")}


def test_dataset_readers_sit_below_the_entry_point():
    """data/load.py imports the readers; no reader (nor a shared helper) imports it back, or another reader."""
    data = PACKAGE / "data"
    readers = {"cityscapes", "coco", "coco_panoptic", "folder", "idmap", "voc", "yolo"}
    for path in sorted(data.glob("*.py")):
        if path.stem in ("load", "__init__"):
            continue
        imported = _imports(path)
        assert "segcli.data.load" not in imported, path.name
        assert not {f"segcli.data.{r}" for r in readers - {path.stem}} & imported, path.name


def test_predict_folder_names_live_in_outputs():
    """The predict folder's names are typed in segcli/outputs.py only."""
    for path in sorted((PACKAGE / "services").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name in ('".parts"', '"categories.json"', '"instances.json"', '"panoptic.json"', '"overlays"'):
            assert name not in text, f"{path.name} types {name}"
