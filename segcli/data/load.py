"""`load_dataset`: the one way into a dataset. It recognises the format (`--format auto`), reads
`--classes` once, and calls the format's reader (one module per format, below this one).

`--format auto` recognises a dataset by its layout. Checked in this order:

1. a .json file: `coco-panoptic` when its annotations have segments_info, else `coco`;
2. leftImg8bit/ + gtFine/: `cityscapes`;  3. JPEGImages/ + SegmentationClass/: `voc`;
4. images/ (or image/) + masks/ (or label/) with PNGs: `folder` (with instances/ when present,
   as `segcli data synth` writes);
5. images/ + instances/: `idmap`;  6. images/ + labels/ with .txt files: `yolo`;
7. <id>/images + <id>/masks subfolders (DSB 2018): `idmap`;
8. annotations/panoptic_train.json: `coco-panoptic`; annotations/instances_train.json: `coco`;
9. a COCO json lying in the folder itself (panopticapi's sample layout): panoptic before instances.

A folder that several rules fit gets the first: `segcli data synth` output (images/, masks/,
instances/ and annotations/) is read as `folder`, which gives semantic, instance and (derived)
panoptic ground truth that agree with its COCO files; pass --format to read the jsons instead.
"""

from __future__ import annotations

from pathlib import Path

from segcli import io
from segcli.data import cityscapes, coco, coco_panoptic, folder, idmap, voc, yolo
from segcli.data.classes import parse_classes_txt
from segcli.data.coco_json import find_json, json_kind, jsons_in_folder
from segcli.data.dataset import DatasetOptions, SegDataset
from segcli.errors import DataError, UsageError
from segcli.structures import LabelSpace

READERS = {
    "folder": folder.read,
    "idmap": idmap.read,
    "voc": voc.read,
    "coco": coco.read,
    "coco-panoptic": coco_panoptic.read,
    "cityscapes": cityscapes.read,
    "yolo": yolo.read,
}
# Formats whose classes are a classes.txt: --classes stands in for it (and may set thing flags and colours).
# The others name their classes in their own files: --classes renames those classes.
CLASSES_TXT_FORMATS = {"folder", "idmap", "yolo"}
# The path options only the COCO readers read (coco_json.py); any other format refuses them rather than ignore them.
PATH_OPTIONS = {"val": ("coco", "coco-panoptic"), "images": ("coco", "coco-panoptic"), "masks": ("coco-panoptic",)}


def load_dataset(path: str | Path, format: str = "auto", split: str = "train", *, images: Path | None = None,
                 masks: Path | None = None, classes: Path | None = None, binary: bool = False, val: Path | None = None,
                 seed: int = 0, channels: io.Channels = io.RGB) -> SegDataset:
    """Read a dataset in any supported format and return one split (images with `channels`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in READERS:
        raise UsageError(f"--format {format!r}: choose auto or one of {', '.join(READERS)}")
    _check_path_options(fmt, {"val": val, "images": images, "masks": masks})
    options = DatasetOptions(images=images, masks=masks, classes=classes, binary=binary, val=val, seed=seed,
                             class_list=_read_classes(classes), channels=channels)
    dataset = READERS[fmt](path, split, options)
    dataset.channels = channels
    if len(dataset) == 0:
        raise DataError(f"{path}: the {split} split of this {fmt} dataset has no images")
    if options.class_list is not None and fmt not in CLASSES_TXT_FORMATS:
        dataset.label_space = _renamed(dataset.label_space, options.class_list, classes, fmt)
    return dataset


def load_for_model(path: str | Path, card: dict, format: str = "auto", split: str = "val",
                   classes: Path | None = None) -> SegDataset:
    """A split to score a checkpoint on (`eval --data`, `tune`), read as its training read its data: the same 0/255
    reading and the same seed, so a random train/val split puts the same images in `val` (scoring training images
    would flatter the model), with the channels it was trained on; its classes must be the model's."""
    from segcli.checkpoint import card_channels

    training = card.get("training") or {}
    options = {key: training[key] for key in ("binary", "seed") if training.get(key) is not None}
    if training.get("split_seed") is not None:  # compare's repeated seeds share one hold-out
        options["seed"] = training["split_seed"]
    options["channels"] = card_channels(card)  # the image channels it was trained on
    dataset = load_dataset(path, format=format, split=split, **options, **({"classes": classes} if classes else {}))
    predicted = LabelSpace.from_dict(card["label_space"]).num_classes
    if predicted != dataset.label_space.num_classes:
        raise DataError(f"the model predicts {predicted} classes, the dataset {dataset.root} has "
                        f"{dataset.label_space.num_classes}: score a dataset with the model's classes")
    return dataset


def _check_path_options(fmt: str, given: dict[str, Path | None]) -> None:
    """--val, --images and --masks name parts of a COCO dataset: for other formats they would be ignored."""
    for name, value in given.items():
        if value is not None and fmt not in PATH_OPTIONS[name]:
            readers = " and ".join(PATH_OPTIONS[name])
            raise UsageError(f"--{name} {value}: only {readers} datasets read it, and --data is a {fmt} dataset "
                             "(README, Datasets): leave it out")


def _read_classes(classes: Path | None) -> LabelSpace | None:
    if classes is None:
        return None
    if not Path(classes).is_file():
        raise DataError(f"--classes {classes}: no such file (one class name per line, in index order)")
    return parse_classes_txt(Path(classes))


def _renamed(space: LabelSpace, names: LabelSpace, classes: Path, fmt: str) -> LabelSpace:
    """The format's classes (thing flags, colours, category ids: the reader used them) under --classes' names."""
    if names.num_classes != space.num_classes:
        raise DataError(f"--classes {classes}: {names.num_classes} names, but this {fmt} dataset has "
                        f"{space.num_classes} classes ({', '.join(space.names[:5])}, ...)")
    return LabelSpace(list(names.names), isthing=space.isthing, colors=space.colors, category_ids=space.category_ids)


def detect_format(path: Path) -> str:
    path = Path(path)
    if path.is_file():
        if path.suffix != ".json":
            raise DataError(f"--data {path}: a dataset is a folder or a COCO json")
        kind = json_kind(io.read_json(path))
        if kind is None:
            raise DataError(f"--data {path}: not a COCO json (it needs images and annotations)")
        return kind
    if (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir():
        return "cityscapes"
    if (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if folder.find_dir(path, folder.IMAGE_DIRS) and folder.find_dir(path, folder.MASK_DIRS, ".png"):
        return "folder"
    if (path / "images").is_dir() and (path / "instances").is_dir():
        return "idmap"
    if (path / "images").is_dir() and (path / "labels").is_dir() and any((path / "labels").rglob("*.txt")):
        return "yolo"
    if idmap.dsb_root(path) is not None:
        return "idmap"
    if (path / "annotations" / "panoptic_train.json").is_file():
        return "coco-panoptic"
    if (path / "annotations" / "instances_train.json").is_file():
        return "coco"
    for fmt in ("coco-panoptic", "coco"):
        if jsons_in_folder(path, fmt):
            return fmt
    raise DataError(
        f"--data {path}: no known dataset layout (folder: images/ + masks/; idmap: images/ + instances/; "
        "yolo: images/ + labels/; voc; cityscapes; or a COCO json); pass --format to say which"
    )


def stored_splits(path: str | Path, format: str = "auto", *, val: Path | None = None) -> list[str]:
    """The splits a dataset stores itself (split lists, split folders, a json per split), in order; [] when it stores
    none (its val split would be a seeded hold-out)."""
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt in CLASSES_TXT_FORMATS:
        return [s for s in ("train", "val", "test") if (path / "splits" / f"{s}.txt").is_file()]
    if fmt == "voc":
        return [s for s in ("train", "val") if (path / "ImageSets" / "Segmentation" / f"{s}.txt").is_file()]
    if fmt == "cityscapes":
        return [s for s in ("train", "val", "test") if any((path / "leftImg8bit" / s).glob("*/*_leftImg8bit.png"))]
    if fmt in ("coco", "coco-panoptic"):
        kind = "panoptic" if fmt == "coco-panoptic" else "instances"
        return ["train", "val"] if find_json(path, kind, "val", DatasetOptions(val=val))[1] else []
    return []
