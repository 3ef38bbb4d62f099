"""The readers on the real datasets in ../shared/data (skipped when absent): every image loads, and the
ground truth agrees with the files and with the numbers the datasets' READMEs and metadata.csv state."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from segcli import io
from segcli.data import check_dataset, load_dataset
from segcli.data.load import detect_format
from segcli.data.yolo import parse_polygons
from segcli.errors import DataError


def _metadata(root: Path) -> dict[str, dict]:
    with open(root / "metadata.csv", newline="") as f:
        return {row["image_id"]: row for row in csv.DictReader(f)}


def _split_names(root: Path, split: str) -> list[str]:
    return (root / "splits" / f"{split}.txt").read_text().split()


def test_dsb2018_every_image_and_nucleus(shared_data):
    root = shared_data / "dsb2018_nuclei"
    assert detect_format(root) == "idmap"
    splits = {split: load_dataset(root, split=split) for split in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 104, "val": 24, "test": 21}
    assert all(d.names() == _split_names(root, s) for s, d in splits.items())
    ds = load_dataset(root, split="all")
    assert sorted(ds.names()) == sorted(n for d in splits.values() for n in d.names())
    assert ds.label_space.names == ["background", "nucleus"] and ds.label_space.isthing == [False, True]
    metadata, total = _metadata(root), 0
    for index in range(len(ds)):
        sample, row = ds[index], metadata[ds.names()[index]]
        mask_files = sorted((root / "stage1_train" / sample.name / "masks").glob("*.png"))
        assert sample.image.shape == (int(row["height"]), int(row["width"]), 3)  # RGBA read as RGB
        assert len(sample.instances) == len(mask_files) == int(row["n_instances"])
        # Nuclei never overlap here: their areas add up to the semantic foreground, one segment each.
        assert sum(inst.area for inst in sample.instances) == int((sample.semantic == 1).sum())
        assert len(sample.segments) == len(mask_files) + 1
        total += len(mask_files)
        if index % 30 == 0:  # a few images: each instance is exactly its file
            for path, inst in zip(mask_files, sample.instances):
                assert (inst.mask == (io.read_label_png(path) == 255)).all()
            union = np.logical_or.reduce([io.read_label_png(p) > 0 for p in mask_files])
            assert (union == (sample.semantic == 1)).all()
    assert total == 6221


def test_isbi2012_binary_membrane(shared_data):
    root = shared_data / "isbi2012_membrane"
    assert detect_format(root) == "folder"
    with pytest.raises(DataError, match="--binary"):
        check_dataset(load_dataset(root, split="train"), "semantic")
    sizes = {split: len(load_dataset(root, split=split, binary=True)) for split in ("train", "val", "test")}
    assert sizes == {"train": 20, "val": 5, "test": 5}
    ds = load_dataset(root, split="all", binary=True)
    assert ds.label_space.num_classes == 2 and ds.label_space.isthing == [False, True]
    assert load_dataset(root, split="val", binary=True).names() == ["20", "21", "22", "23", "24"]
    for index in range(len(ds)):
        sample = ds[index]
        label = io.read_label_png(root / "label" / f"{sample.name}.png")
        # Class 1 is the cell interior (255 in the files), class 0 the membrane (0).
        assert (sample.semantic == (label == 255)).all()
        assert 0.7 < sample.semantic.mean() < 0.86  # 73-83 % cell pixels (the README says 78-83 %)
        assert 80 <= len(sample.instances) <= 140  # 4-connected cell regions, 88-137 per slice
        assert sample.image.shape == (512, 512, 3)
    assert check_dataset(load_dataset(root, split="val", binary=True), "panoptic") == []


def test_coco128_yolo_polygons(shared_data):
    root = shared_data / "coco128_seg"
    assert detect_format(root) == "yolo"
    assert [len(load_dataset(root, split=s)) for s in ("train", "val")] == [100, 28]
    ds = load_dataset(root, split="all")
    names = ds.label_space.names
    assert len(names) == 81 and names[:2] == ["background", "person"] and ds.label_space.category_ids[:3] == [0, 1, 2]
    metadata, ratios, per_class = _metadata(root), [], {}
    for index in range(len(ds)):
        sample, row = ds[index], metadata[ds.names()[index]]
        assert sample.image.shape[:2] == (int(row["height"]), int(row["width"]))
        assert len(sample.instances) == int(row["n_instances"])
        assert " ".join(sorted({names[inst.label] for inst in sample.instances})) == row["classes"]
        for inst in sample.instances:
            per_class[inst.label] = per_class.get(inst.label, 0) + 1
        covered = np.zeros(sample.semantic.shape, bool)
        for inst in sample.instances:
            covered |= inst.mask
        assert (sample.semantic[~covered] == 0).all() and (sample.semantic[covered] > 0).all()  # background = no object
        label = root / "labels" / "train2017" / f"{sample.name}.txt"
        if label.is_file():
            h, w = sample.image.shape[:2]
            for (_, points), inst in zip(parse_polygons(label, w, h, 80), sample.instances):
                x, y = points[:, 0], points[:, 1]
                shoelace = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
                if shoelace > 50:
                    ratios.append(inst.area / shoelace)
    assert sum(per_class.values()) == 929 and len(per_class) == 71 and per_class[1] == 254
    ratios = np.array(ratios)
    # Filled by pixel centre, rasterised areas match the polygons' own areas (median 1.000; a small polygon
    # may lose or gain 8%; self-touching bridged polygons have a smaller signed area, hence the loose upper tail).
    assert ratios.min() > 0.9 and 0.99 < np.median(ratios) < 1.01 and np.percentile(ratios, 90) < 1.5


@pytest.mark.parametrize("target", ["folder", "json"])
def test_coco_panoptic_sample(shared_data, target):
    root = shared_data / "coco_panoptic_sample"
    path = root if target == "folder" else root / "panoptic_examples.json"
    assert detect_format(path) == "coco-panoptic"
    ds = load_dataset(path, split="all")
    assert ds.label_space.num_classes == 133 and len(ds.label_space.thing_indices) == 80
    data = json.loads((root / "panoptic_examples.json").read_text())
    expected = {Path(a["file_name"]).stem: a["segments_info"] for a in data["annotations"]}
    things = {"000000142238": 15, "000000439180": 28}
    for sample in ds:
        infos = {info["id"]: info for info in expected[sample.name]}
        ids = io.read_panoptic_png(root / "panoptic" / f"{sample.name}.png")
        assert (sample.panoptic == ids).all()
        assert {s.id for s in sample.segments} == set(infos) == set(np.unique(ids).tolist()) - {0}
        for segment in sample.segments:
            info = infos[segment.id]
            assert segment.area == info["area"] == int((ids == segment.id).sum())
            assert ds.label_space.category_ids[segment.label] == info["category_id"]
        assert len(sample.instances) == things[sample.name]
        assert ((sample.semantic == 255) == (ids == 0)).all()
