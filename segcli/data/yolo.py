"""`yolo`: images/ + labels/ (mirrored subfolders) with YOLO-seg polygons, one object per line:
`class x1 y1 x2 y2 ...` normalised by image width and height. Classes from data.yaml or classes.txt.
An image without a label file has no objects. Polygons are rasterised with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segcli import io
from segcli.data.classes import parse_data_yaml, with_background
from segcli.data.dataset import DatasetOptions, Record, SegDataset, class_list, select_split
from segcli.errors import DataError
from segcli.io import IMAGE_EXTENSIONS
from segcli.structures import Instance, LabelSpace, Sample


def _label_space(root: Path, options: DatasetOptions) -> LabelSpace:
    for name in ("data.yaml", "dataset.yaml"):
        if options.class_list is None and (root / name).is_file():  # --classes first, then data.yaml
            return with_background(parse_data_yaml(root / name))
    found = class_list(root, options)
    if found is not None:
        return with_background(found[0].names, found[0].category_ids)
    raise DataError(f"{root}: a YOLO dataset needs data.yaml (names: [...]) or classes.txt")


def parse_polygons(path: Path, width: int, height: int, num_classes: int) -> list[tuple[int, np.ndarray]]:
    objects = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        if len(values) < 7 or len(values) % 2 == 0:
            raise DataError(f"{path}:{number}: expected `class x1 y1 x2 y2 x3 y3 ...` (a polygon of at least 3 points)")
        cls = int(values[0])
        if not 0 <= cls < num_classes:
            raise DataError(f"{path}:{number}: class {cls} beyond the {num_classes} classes")
        points = np.array(values[1:], np.float64).reshape(-1, 2) * (width, height)
        objects.append((cls, points))
    return objects


def read(root: Path, split: str, options: DatasetOptions) -> SegDataset:
    images_root, labels_root = root / "images", root / "labels"
    if not images_root.is_dir() or not labels_root.is_dir():
        raise DataError(f"{root}: a YOLO dataset needs images/ and labels/")
    label_space = _label_space(root, options)
    records = []
    for image in sorted(p for p in images_root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        label = labels_root / image.relative_to(images_root).with_suffix(".txt")
        records.append(Record(image.stem, image, {"label": label}))

    def load(record: Record) -> Sample:
        image = io.read_image(record.image)
        h, w = image.shape[:2]
        instances = []
        if record.files["label"].is_file():
            for cls, points in parse_polygons(record.files["label"], w, h, label_space.num_classes - 1):
                mask = np.zeros((h, w), np.uint8)
                cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
                if mask.any():
                    instances.append(Instance(mask=mask.astype(bool), label=cls + 1))
        return Sample(image=image, name=record.name, instances=instances)

    return SegDataset(root, "yolo", label_space, select_split(records, root, split, options.seed), load, split)
