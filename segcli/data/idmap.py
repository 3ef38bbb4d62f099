"""`idmap`: images/ + instances/ with uint16 instance-id PNGs (0 = background, 1..N objects): one thing class.

Documented variant, the Kaggle DSB 2018 layout: `<id>/images/<id>.png` and `<id>/masks/*.png`
(one 0/255 PNG per object), found in the dataset folder or its `stage1_train/`. Objects are
numbered in sorted mask-file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.data.classes import classes_txt
from segcli.data.dataset import (
    DatasetOptions,
    Entry,
    Losses,
    Record,
    SegDataset,
    check_same_size,
    class_list,
    copy_image,
    count_void,
    image_mask_pairs,
    instance_ids,
    select_split,
    write_split_lists,
)
from segcli.errors import DataError, UsageError
from segcli.structures import Instance, LabelSpace, Sample


def _label_space(root: Path, options: DatasetOptions, default: str) -> LabelSpace:
    found = class_list(root, options)
    if found is not None:
        space, classes = found
        if len(space.thing_indices) != 1:
            raise DataError(f"{classes}: an idmap dataset has exactly one thing class (and background)")
        return space
    return LabelSpace(["background", default], isthing=[False, True])


def dsb_root(root: Path) -> Path | None:
    """The folder holding `<id>/images` + `<id>/masks` subfolders, if this is the DSB layout."""
    for candidate in (root / "stage1_train", root):
        if candidate.is_dir():
            subfolders = (p for p in sorted(candidate.iterdir()) if p.is_dir() and p.name not in ("splits", "images"))
            sub = next(subfolders, None)
            if sub is not None and (sub / "images").is_dir() and (sub / "masks").is_dir():
                return candidate
    return None


def _instances(ids: np.ndarray, thing: int) -> list[Instance]:
    return [Instance(mask=ids == n, label=thing) for n in np.unique(ids) if n != 0]


def read(root: Path, split: str, options: DatasetOptions) -> SegDataset:
    nested = dsb_root(root)
    if nested is not None:
        return _read_dsb(root, nested, split, options)
    if not (root / "images").is_dir() or not (root / "instances").is_dir():
        raise DataError(f"{root}: an idmap dataset needs images/ and instances/ "
                        "(or the DSB <id>/images, <id>/masks layout)")
    records = image_mask_pairs(root / "images", root / "instances")
    label_space = _label_space(root, options, "object")
    thing = label_space.thing_indices[0]

    def load(record: Record) -> Sample:
        image = io.read_image(record.image, channels=options.channels)
        ids = io.read_label_png(record.files["mask"])
        if ids.ndim != 2:
            raise DataError(f"{record.files['mask']}: instance-id PNGs are single-channel (uint8 or uint16)")
        check_same_size(image, ids, record.files["mask"])
        return Sample(image=image, name=record.name, instances=_instances(ids, thing))

    return SegDataset(root, "idmap", label_space, select_split(records, root, split, options.seed), load, split)


def _read_dsb(root: Path, folder: Path, split: str, options: DatasetOptions) -> SegDataset:
    records = []
    for item in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "images").is_dir()):
        image = item / "images" / f"{item.name}.png"
        if not image.is_file():
            raise DataError(f"{item}: expected the image {image}")
        records.append(Record(item.name, image, {"masks": item / "masks"}))
    label_space = _label_space(root, options, "nucleus")
    thing = label_space.thing_indices[0]

    def load(record: Record) -> Sample:
        image = io.read_image(record.image, channels=options.channels)
        instances = []
        for path in sorted(record.files["masks"].glob("*.png")):
            mask = io.read_label_png(path)
            check_same_size(image, mask, path)
            instances.append(Instance(mask=mask > 127, label=thing))
        return Sample(image=image, name=record.name, instances=instances)

    return SegDataset(root, "idmap", label_space, select_split(records, root, split, options.seed), load, split)


def check_can_hold(space: LabelSpace, source: str) -> None:
    """idmap holds the objects of one thing class on one background."""
    things, stuff = [space.names[i] for i in space.thing_indices], [space.names[i] for i in space.stuff_indices]
    if len(things) != 1:
        raise UsageError(f"--to idmap holds one thing class; {source} has {len(things)} "
                         f"({', '.join(things[:4]) or 'none'}); convert to coco, yolo or folder")
    if len(stuff) > 1:
        raise UsageError(f"--to idmap holds objects on one background; {source} has {len(stuff)} stuff classes "
                         f"({', '.join(stuff[:4])}); convert to folder or coco-panoptic")


def write(out: Path, space: LabelSpace, entries: list[Entry]) -> Losses:
    """images/, instances/ (uint16 ids), classes.txt (the background and the thing class) and splits/."""
    losses = Losses("idmap")
    if not space.stuff_indices:  # objects on nothing: the reader's background, named
        thing = space.thing_indices[0]
        space = LabelSpace(["background", space.names[thing]], [False, True],
                           category_ids=[0, space.category_ids[thing]])
    for entry in entries:
        sample = entry.load()
        copy_image(entry.image, out / "images", entry.name)
        count_void(sample, losses)
        ids = instance_ids(sample.instances, sample.image.shape[:2], losses)
        io.write_instance_png(out / "instances" / f"{entry.name}.png", ids)
    with io.atomic_path(out / "classes.txt") as tmp:
        tmp.write_text(classes_txt(space), encoding="utf-8")
    write_split_lists(out, entries)
    return losses
