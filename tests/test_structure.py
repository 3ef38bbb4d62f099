"""The code's shape: no function in segcli/ longer than a screen (60 lines), no line past 120 columns."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


# The layers of docs/architecture.md, top to bottom. A module imports from layers below its own, and from its own
# package or module (segcli.models.x from segcli.models.y); never from a layer above nor from a sibling of its layer.
LAYERS = (
    ("segcli.__main__",),
    ("segcli.cli",),
    ("segcli.services",),
    ("segcli.training",),
    ("segcli.inference", "segcli.data", "segcli.metrics", "segcli.outputs", "segcli.measure"),
    ("segcli.checkpoint",),
    ("segcli.models",),
    ("segcli.hub", "segcli.state_dict", "segcli.device", "segcli.distributed", "segcli.sources", "segcli.exports"),
    ("segcli.regions", "segcli.polygons", "segcli.tracking", "segcli.plots", "segcli.html_page"),
    ("segcli.io", "segcli.draw", "segcli.preprocess"),
    ("segcli.structures",),
    ("segcli.errors", "segcli._version"),
)
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> tuple[int, str] | None:
    """(layer index, the layer's entry the module belongs to), or None for a module no layer holds."""
    for index, units in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return index, unit
    return None


def _resolved_imports(path: Path, module: str) -> set[str]:
    """Every segcli name `path` imports (at the top or inside functions), relative imports resolved."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from segcli import io` imports the module segcli.io; `from segcli.io import x`, segcli.io
            names |= {f"segcli.{alias.name}" for alias in node.names} if base == "segcli" else {base}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name == "segcli" or name.startswith("segcli.")}


def layering_violations(root: Path = PACKAGE) -> list[str]:
    """`module -> imported (why)` for every import that climbs a layer or crosses to a sibling of its layer."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        if module == "segcli":  # the package's lazy facade (segcli.__init__) stands above every layer
            continue
        own = _unit(module)
        if own is None:
            found.append(f"{module}: in no layer of docs/architecture.md (add it to the picture and to LAYERS)")
            continue
        for imported in sorted(_resolved_imports(path, module)):
            target = _unit(imported)
            if target is None or target[1] == own[1]:
                continue  # the package facade, or the module's own package
            if target[0] < own[0]:
                found.append(f"{module} -> {imported} (climbs to a layer above)")
            elif target[0] == own[0]:
                found.append(f"{module} -> {imported} (a sibling in the same layer)")
    return found


def test_imports_only_go_down_the_layers():
    assert layering_violations() == []


def test_the_layer_check_sees_an_import_that_climbs(tmp_path):
    package = tmp_path / "segcli"
    (package / "models").mkdir(parents=True)
    (package / "models" / "bad.py").write_text("from segcli.checkpoint import load_checkpoint\n")
    (package / "io.py").write_text("def f():\n    from segcli import draw\n")  # inside a function counts too
    (package / "checkpoint.py").write_text("from .models import bad\n")
    assert layering_violations(package) == [
        "segcli.io -> segcli.draw (a sibling in the same layer)",
        "segcli.models.bad -> segcli.checkpoint (climbs to a layer above)",
    ]


def test_architecture_md_draws_the_layers_in_this_order():
    """Each layer is one line of the picture in docs/architecture.md, naming its modules, in LAYERS' order."""
    picture = ARCHITECTURE.read_text(encoding="utf-8").split("## The layers", 1)[1].split("```")[1].splitlines()
    rows = []
    for units in LAYERS:
        names = [unit.removeprefix("segcli.") + ("/" if (PACKAGE / unit.removeprefix("segcli.")).is_dir() else ".py")
                 for unit in units]
        row = next((i for i, line in enumerate(picture) if all(name in line.split() for name in names)), None)
        assert row is not None, f"no line of the picture names {', '.join(names)}"
        rows.append(row)
    assert rows == sorted(rows) and len(set(rows)) == len(rows)


def _contract() -> dict[str, ast.AST]:
    """SegModel's attributes and methods as `base.py` declares them: name -> the node that declares it."""
    tree = ast.parse((PACKAGE / "models" / "base.py").read_text(encoding="utf-8"))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SegModel").body
    found = {}
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            following = body[i + 1] if i + 1 < len(body) else None
            found[node.target.id] = following  # the attribute's docstring is the string right after it
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            found[node.name] = node
    return found


def test_every_contract_attribute_has_a_default_and_a_docstring():
    contract = _contract()
    assert {"dense", "size_multiple", "mean", "flip_outputs", "resize_outputs", "resizes_input",
            "float32_modules"} <= set(contract)
    for name, node in contract.items():
        if isinstance(node, ast.FunctionDef):
            assert ast.get_docstring(node), name
        else:
            assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and \
                isinstance(node.value.value, str), f"SegModel.{name} has no docstring"
    from segcli.models.base import SegModel

    assert all(hasattr(SegModel, name) for name in contract)  # declared with a default, not only annotated


def test_the_model_contract_is_read_as_attributes_and_documented():
    """No `getattr(model, "dense", True)` or `hasattr(model, "mean")` anywhere: the defaults live on SegModel."""
    contract = set(_contract())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or len(node.args) < 2:
                continue
            name = node.args[1].value if isinstance(node.args[1], ast.Constant) else None
            if node.func.id in ("getattr", "hasattr") and name in contract:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.func.id}(..., {name!r})")
    assert found == []
    table = ARCHITECTURE.read_text(encoding="utf-8").split("## The model contract", 1)[1].split("\n## ", 1)[0]
    assert [name for name in contract if f"`{name}" not in table] == []




def test_ruff_passes_with_lines_of_at_most_120_columns():
    """`make lint` inside `make test`, so CI holds the line length (pyproject: line-length 120, E501 not ignored)."""
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    ignored = re.search(r"^ignore = \[(.*)\]$", pyproject, re.MULTILINE)
    assert "line-length = 120" in pyproject and ignored and "E501" not in ignored.group(1)
    folders = ["segcli", "tests", "benchmarks", "scripts"]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *folders], cwd=PACKAGE.parent,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
