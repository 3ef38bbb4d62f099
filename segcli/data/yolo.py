"""`yolo`: images/ + labels/ (mirrored subfolders) with YOLO-seg polygons, one object per line:
`class x1 y1 x2 y2 ...` normalised by image width and height. Classes from data.yaml or classes.txt.
An image without a label file has no objects. A polygon covers the pixels whose centres lie inside
it (segcli.polygons, the rasteriser every polygon of segcli goes through)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.data.classes import parse_data_yaml, with_background
from segcli.data.dataset import (
    DatasetOptions,
    Entry,
    Losses,
    Record,
    SegDataset,
    class_list,
    copy_image,
    count_void,
    select_split,
    write_split_lists,
)
from segcli.errors import DataError, UsageError
from segcli.io import IMAGE_EXTENSIONS
from segcli.polygons import fill_rings, mask_polygons
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
        image = io.read_image(record.image, channels=options.channels)
        h, w = image.shape[:2]
        instances = []
        if record.files["label"].is_file():
            for cls, points in parse_polygons(record.files["label"], w, h, label_space.num_classes - 1):
                mask = fill_rings([points], (h, w))
                if mask.any():
                    instances.append(Instance(mask=mask, label=cls + 1))
        return Sample(image=image, name=record.name, instances=instances)

    return SegDataset(root, "yolo", label_space, select_split(records, root, split, options.seed), load, split)


def check_can_hold(space: LabelSpace, source: str) -> None:
    """YOLO holds thing objects on one background: no other stuff class has a place."""
    stuff = [space.names[i] for i in space.stuff_indices]
    if not space.thing_indices:
        raise UsageError(f"--to yolo holds objects; {source} has no thing class; convert to folder or coco-panoptic")
    if len(stuff) > 1:
        raise UsageError(f"--to yolo holds objects only; {source} has {len(stuff)} stuff classes "
                         f"({', '.join(stuff[:4])}) with no place there; convert to folder or coco-panoptic")


def write(out: Path, space: LabelSpace, entries: list[Entry]) -> Losses:
    """images/, labels/<name>.txt (one normalised polygon per thing object), data.yaml (the thing classes) and
    splits/."""
    from segcli.exports import yolo_data_yaml, yolo_line

    losses = Losses("yolo")
    number = {label: n for n, label in enumerate(space.thing_indices)}
    for entry in entries:
        sample = entry.load()
        copy_image(entry.image, out / "images", entry.name)
        count_void(sample, losses)
        losses.crowd += sum(inst.iscrowd for inst in sample.instances)
        shape = sample.image.shape[:2]
        lines = [yolo_line(number[inst.label], mask_polygons(inst.mask), shape) for inst in sample.instances]
        with io.atomic_path(out / "labels" / f"{entry.name}.txt") as tmp:
            tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    with io.atomic_path(out / "data.yaml") as tmp:
        tmp.write_text(yolo_data_yaml(space), encoding="utf-8")
    write_split_lists(out, entries)
    return losses
