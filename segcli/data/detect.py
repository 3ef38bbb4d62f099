"""`--format auto`: recognise a dataset by its layout. Checked in this order:

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
from segcli.errors import DataError

READERS = {
    "folder": folder.read,
    "idmap": idmap.read,
    "voc": voc.read,
    "coco": coco.read,
    "coco-panoptic": coco_panoptic.read,
    "cityscapes": cityscapes.read,
    "yolo": yolo.read,
}


def detect_format(path: Path) -> str:
    path = Path(path)
    if path.is_file():
        if path.suffix != ".json":
            raise DataError(f"--data {path}: a dataset is a folder or a COCO json")
        kind = coco.json_kind(io.read_json(path))
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
        if coco.jsons_in_folder(path, fmt):
            return fmt
    raise DataError(
        f"--data {path}: no known dataset layout (folder: images/ + masks/; idmap: images/ + instances/; yolo: images/ + labels/; "
        "voc; cityscapes; or a COCO json); pass --format to say which"
    )
