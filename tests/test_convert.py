"""segcli data convert: every pair of formats that can hold the data reads back to the same masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.load import load_dataset, stored_splits
from segcli.data.synth import generate
from segcli.services.convert import convert_dataset

runner = CliRunner()
TARGETS = ("coco", "coco-panoptic", "yolo", "idmap", "folder")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One small dataset per source format: stuff and three thing classes (synth: folder, coco, coco-panoptic), one
    thing class (idmap: holes, an object in a hole, borders, one-pixel objects), two thing classes (yolo)."""
    root = tmp_path_factory.mktemp("sources")
    synth = generate("shapes", root / "synth", n=4, size=48, seed=2)
    return {"folder": synth, "coco": synth / "annotations" / "instances_train.json",
            "coco-panoptic": synth / "annotations" / "panoptic_train.json",
            "idmap": _idmap(root / "idmap"), "yolo": _yolo(root / "yolo")}


def _idmap(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for index in range(3):
        ids = np.zeros((24, 32), np.uint16)
        ids[2:12, 2:12] = 1
        ids[5:8, 5:8] = 0
        ids[6, 6] = 2
        ids[16:24, 24:32] = 3
        ids[0, 31] = 4
        ids[20, index] = 5
        io.write_instance_png(root / "instances" / f"cell {index}é.png", ids)
        io.write_image(root / "images" / f"cell {index}é.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    (root / "classes.txt").write_text("background\nnucleus\n", encoding="utf-8")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("cell 0é\ncell 1é\n", encoding="utf-8")
    (root / "splits" / "val.txt").write_text("cell 2é\n", encoding="utf-8")
    return root


def _yolo(root: Path) -> Path:
    for index in range(2):
        io.write_image(root / "images" / f"p{index}.jpg", np.full((40, 80, 3), 90 + index, np.uint8))
    (root / "labels").mkdir()
    (root / "labels" / "p0.txt").write_text("0 0.0 0.0 0.5 0.0 0.0 1.0\n1 0.6 0.1 0.9 0.1 0.9 0.4 0.6 0.4\n")
    (root / "labels" / "p1.txt").write_text("1 0.1 0.5 0.3 0.5 0.2 0.9\n")
    (root / "data.yaml").write_text("names:\n  0: person\n  1: ball\n")
    return root


def _read(path: Path) -> dict[str, tuple[list, np.ndarray]]:
    """Per image name: its instances as (class name, mask) and its semantic map as class names, over all splits."""
    found = {}
    for split in stored_splits(path) or ["all"]:
        dataset = load_dataset(path, split=split)
        names = np.array([*dataset.label_space.names, *["void"] * (256 - dataset.label_space.num_classes)], object)
        for index in range(len(dataset)):
            sample = dataset[index]
            instances = sorted((names[inst.label], inst.mask.tobytes()) for inst in sample.instances)
            found[dataset.names()[index]] = (instances, names[sample.semantic])
    return found


HOLDS = [(source, target) for source in ("folder", "coco", "coco-panoptic")
         for target in ("coco", "coco-panoptic", "folder")]
HOLDS += [("idmap", target) for target in TARGETS] + [("yolo", t) for t in ("coco", "coco-panoptic", "yolo", "folder")]


@pytest.mark.parametrize("source, target", HOLDS)
def test_converted_datasets_read_back_to_the_same_masks(source, target, sources, tmp_path):
    out = tmp_path / target
    summary = convert_dataset(source=sources[source], to=target, out=out)
    assert summary.warnings == []
    before, after = _read(sources[source]), _read(out)
    assert sorted(after) == sorted(before)
    for name, (instances, semantic) in before.items():
        assert after[name][0] == instances, name  # instances survive to every format
        # Classes survive where the target holds them; pixels no object covers are background in instance formats.
        assert (after[name][1] == semantic).all(), name
    assert stored_splits(out) == stored_splits(sources[source])


@pytest.mark.parametrize("source, target, message", [
    ("folder", "yolo", "--to yolo holds objects only; {src} (folder) has 3 stuff classes (sky, ground, water) with no "
                       "place there; convert to folder or coco-panoptic"),
    ("coco-panoptic", "idmap", "--to idmap holds one thing class; {src} (coco-panoptic) has 3 "
                               "(circle, square, triangle); convert to coco, yolo or folder"),
    ("yolo", "idmap", "--to idmap holds one thing class; {src} (yolo) has 2 (person, ball); "
                      "convert to coco, yolo or folder"),
])
def test_a_target_that_cannot_hold_the_data_is_refused_in_one_line(source, target, message, sources, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "convert", str(sources[source]), "--to", target, "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.strip() == "error: " + message.format(src=sources[source])


def test_what_a_target_loses_is_reported(sources, tmp_path):
    """Overlapping objects into one-id-per-pixel formats: written, and said."""
    root = _yolo(tmp_path / "overlap")
    (root / "labels" / "p1.txt").write_text("1 0.1 0.5 0.3 0.5 0.2 0.9\n1 0.1 0.5 0.3 0.5 0.3 0.9 0.1 0.9\n")
    result = runner.invoke(app, ["data", "convert", str(root), "--to", "folder", "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "pixels of overlapping objects went to the smaller one" in result.stderr
    busy = runner.invoke(app, ["data", "convert", str(root), "--to", "coco", "--out", str(tmp_path / "f")])
    assert busy.exit_code == 2 and "not empty" in busy.stderr
