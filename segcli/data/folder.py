"""`folder`: images/ + masks/ with the same stems; masks are class-index PNGs (or 0/255 with --binary).

Also accepted: `image/` and `label/` (the ISBI 2012 layout). When an `instances/` folder of
uint16 instance-id PNGs sits beside (as `segcli data synth` writes), each instance takes the class
that most of its pixels have in the semantic mask; otherwise instances are the connected
components of the thing classes.
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
    image_mask_pairs,
    instance_ids,
    instances_by_majority_class,
    select_split,
    write_split_lists,
)
from segcli.errors import DataError
from segcli.structures import IGNORE_INDEX, LabelSpace

IMAGE_DIRS = ("images", "image")
MASK_DIRS = ("masks", "label", "labels")


def find_dir(root: Path, names: tuple[str, ...], suffix: str | None = None) -> Path | None:
    for name in names:
        folder = root / name
        if folder.is_dir() and (suffix is None or any(p.suffix.lower() == suffix for p in folder.iterdir())):
            return folder
    return None


def _label_space(root: Path, options: DatasetOptions, records: list[Record]) -> LabelSpace:
    found = class_list(root, options)
    if found is not None:
        return found[0]
    if options.binary:
        return LabelSpace(["background", "foreground"], isthing=[False, True])
    # No class list: as many classes as the largest index found (a quick look at a few masks).
    largest = 0
    for record in records[:: max(1, len(records) // 16)]:
        mask = io.read_label_png(record.files["mask"])
        values = mask[mask != IGNORE_INDEX]
        largest = max(largest, int(values.max(initial=0)))
    if largest == 0:
        largest = 1
    return LabelSpace([f"class{i}" for i in range(largest + 1)], isthing=[i > 0 for i in range(largest + 1)])


def read_class_mask(path: Path, binary: bool, num_classes: int,
                    palette: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """A class-index map from a label PNG; RGB colour masks are decoded with `palette` (the classes.txt colours)."""
    mask = io.read_label_png(path)
    if mask.ndim == 3:
        if palette is None:
            raise DataError(f"{path}: an RGB colour mask without a palette; add a classes.txt (its colours, "
                            "or the default VOC colours, decode the mask) or save class indices (a palette PNG or "
                            "greyscale)")
        return colors_to_classes(mask, palette, path)
    if binary:
        return (mask > 127).astype(np.uint8)
    values = np.unique(mask)
    if 255 in values and set(values.tolist()) <= {0, 255} and num_classes < 255:
        raise DataError(f"{path}: a 0/255 binary mask; pass --binary to read 255 as class 1 (0 stays class 0)")
    valid = mask[mask != IGNORE_INDEX]
    if valid.size and int(valid.max()) >= num_classes:
        raise DataError(f"{path}: class id {int(valid.max())} beyond the {num_classes} classes of the class list")
    return mask.astype(np.uint8)


def colors_to_classes(rgb: np.ndarray, palette: list[tuple[int, int, int]], path: Path) -> np.ndarray:
    """(H, W, 3) colours -> class indices; a colour outside the palette is an error naming it."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(palette)}
    values, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in table]
    if unknown:
        v = unknown[0]
        raise DataError(f"{path}: colour ({v >> 16}, {(v >> 8) & 255}, {v & 255}) is not a class colour of the "
                        "class list; give each class its colour in classes.txt (color=r,g,b)")
    lookup = np.array([table[int(v)] for v in values], np.uint8)
    return lookup[inverse.reshape(codes.shape)]


def read(root: Path, split: str, options: DatasetOptions) -> SegDataset:
    image_dir, mask_dir = find_dir(root, IMAGE_DIRS), find_dir(root, MASK_DIRS, ".png")
    if image_dir is None or mask_dir is None:
        raise DataError(f"{root}: a folder dataset needs images/ and masks/ (or image/ and label/)")
    records = image_mask_pairs(image_dir, mask_dir)
    instance_dir = root / "instances"
    for record in records:
        if (instance_dir / f"{record.name}.png").is_file():
            record.files["instances"] = instance_dir / f"{record.name}.png"
    label_space = _label_space(root, options, records)
    palette = label_space.colors if class_list(root, options) is not None else None

    def load(record: Record):
        from segcli.structures import Sample

        image = io.read_image(record.image, channels=options.channels)
        semantic = read_class_mask(record.files["mask"], options.binary, label_space.num_classes, palette)
        check_same_size(image, semantic, record.files["mask"])
        instances = []
        if "instances" in record.files:
            ids = io.read_label_png(record.files["instances"])
            check_same_size(image, ids, record.files["instances"])
            instances = instances_by_majority_class(ids, semantic)
        return Sample(image=image, name=record.name, semantic=semantic, instances=instances)

    return SegDataset(root, "folder", label_space, select_split(records, root, split, options.seed), load, split)


def write(out: Path, space: LabelSpace, entries: list[Entry]) -> Losses:
    """images/, masks/ (class-index PNGs), instances/ (uint16 ids, when there are thing classes), classes.txt
    (names, thing flags, colours, category ids) and splits/: what `read` reads back."""
    losses = Losses("folder")
    for entry in entries:
        sample = entry.load()
        copy_image(entry.image, out / "images", entry.name)
        io.write_class_png(out / "masks" / f"{entry.name}.png", sample.semantic, space.colors)
        if space.thing_indices:
            ids = instance_ids(sample.instances, sample.semantic.shape, losses)
            io.write_instance_png(out / "instances" / f"{entry.name}.png", ids)
    with io.atomic_path(out / "classes.txt") as tmp:
        tmp.write_text(classes_txt(space), encoding="utf-8")
    write_split_lists(out, entries)
    return losses
