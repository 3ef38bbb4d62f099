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
