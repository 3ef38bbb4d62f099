"""`coco`: COCO instances json (polygons or RLE, decoded by pycocotools).

Images are looked up in --images DIR, else `images/` beside the json, else beside the json.
`--data` names the training json (or a folder with annotations/instances_train.json); the val
split is --val, else the json named with `val` instead of `train`, else a seeded 10% hold-out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.data.classes import from_coco_categories
from segcli.data.dataset import DatasetOptions, Record, SegDataset, select_split, semantic_from_instances
from segcli.errors import DataError
from segcli.structures import IGNORE_INDEX, Instance, Sample, rle_error


def json_kind(data: object) -> str | None:
    """"coco-panoptic", "coco" or None (not a COCO annotation file) for a parsed json."""
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) or "images" not in data:
        return None
    anns = data["annotations"]
    return "coco-panoptic" if anns and isinstance(anns[0], dict) and "segments_info" in anns[0] else "coco"


def jsons_in_folder(folder: Path, fmt: str) -> list[Path]:
    """COCO jsons of format `fmt` lying directly in `folder` (as panopticapi's sample data has them)."""
    return [p for p in sorted(Path(folder).glob("*.json")) if json_kind(io.read_json(p)) == fmt]


def _folder_json(folder: Path, kind: str) -> Path:
    standard = folder / "annotations" / f"{kind}_train.json"
    if standard.is_file():
        return standard
    found = jsons_in_folder(folder, "coco-panoptic" if kind == "panoptic" else "coco")
    if len(found) > 1:
        found = [p for p in found if "train" in p.name] or found
    if len(found) != 1:
        listed = f" (found {', '.join(p.name for p in found)})" if found else ""
        raise DataError(f"{folder}: no annotations/{kind}_train.json and no single {kind} json in the folder{listed}; "
                        "pass the json itself")
    return found[0]


def find_json(path: Path, kind: str, split: str, options: DatasetOptions) -> tuple[Path, bool]:
    """The json for a split, and whether it is a split of its own (True) or needs a hold-out (False)."""
    if path.is_dir():
        path = _folder_json(path, kind)
    if split in ("train", "all"):
        return path, (split == "train") and _val_json(path, options) is not None
    if split == "val":
        val = _val_json(path, options)
        return (val, True) if val else (path, False)
    raise DataError(f"{path}: COCO data has train and val splits (no test split)")


def _val_json(train: Path, options: DatasetOptions) -> Path | None:
    if options.val:
        return Path(options.val)
    if "train" in train.name:
        candidate = train.with_name(train.name.replace("train", "val"))
        return candidate if candidate.is_file() else None
    return None


def image_dir(json_path: Path, options: DatasetOptions) -> Path:
    if options.images:
        return Path(options.images)
    for candidate in (json_path.parent / "images", json_path.parent.parent / "images", json_path.parent):
        if candidate.is_dir():
            return candidate
    return json_path.parent


def safe_join(folder: Path, file_name: str, source: Path) -> Path:
    """A file inside folder; names that climb out of it (../, absolute paths) are refused."""
    path = (folder / file_name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise DataError(f"{source}: file_name {file_name!r} points outside the dataset folder {folder}; refused")
    return path


REQUIRED_KEYS = {
    "images": ("id", "file_name"),
    "categories": ("id", "name"),
    "annotations": ("image_id", "category_id", "segmentation"),  # COCO instances
    "panoptic": ("image_id", "file_name", "segments_info"),  # COCO panoptic annotations
    "segments_info": ("id", "category_id"),
}


def check_keys(json_path: Path, items: object, section: str, kind: str | None = None) -> None:
    """Every entry of a COCO json section is an object with the keys segcli reads; else the entry is named."""
    if not isinstance(items, list):
        raise DataError(f"{json_path}: '{section}' should be a list")
    for number, item in enumerate(items):
        missing = [k for k in REQUIRED_KEYS[kind or section] if not isinstance(item, dict) or k not in item]
        if missing:
            raise DataError(f"{json_path}: {section}[{number}] has no {', '.join(repr(k) for k in missing)}")


def decode_segmentation(segmentation: object, h: int, w: int, what: str) -> np.ndarray:
    """A COCO segmentation (polygons, or RLE with counts as a list or a string) -> (h, w) bool mask, checked first."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not all(isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                   and all(isinstance(v, (int, float)) for v in poly) for poly in segmentation):
            raise DataError(f"{what}: polygons must be lists of at least three x, y pairs")
        rles = mask_utils.frPyObjects(segmentation, h, w)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if not isinstance(segmentation, dict):
        raise DataError(f"{what}: segmentation is neither polygons nor an RLE")
    problem = rle_error(segmentation, h, w)
    if problem:
        raise DataError(f"{what}: {problem}")
    rle = mask_utils.frPyObjects(segmentation, h, w) if isinstance(segmentation["counts"], list) else segmentation
    return mask_utils.decode(rle).astype(bool)


def read(path: Path, split: str, options: DatasetOptions) -> SegDataset:
    json_path, own_split = find_json(path, "instances", split, options)
    data = io.read_json(json_path)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise DataError(f"{json_path}: not a COCO instances json (needs images, annotations, categories)")
    for section in ("images", "annotations", "categories"):
        check_keys(json_path, data.get(section), section)
    label_space = from_coco_categories(data["categories"], panoptic=False)
    folder = image_dir(json_path, options)
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = [
        Record(Path(img["file_name"]).stem, safe_join(folder, img["file_name"], json_path),
               {"info": img, "anns": by_image.get(img["id"], [])})
        for img in data["images"]
    ]
    for record in records:
        if not record.image.is_file():
            raise DataError(f"{json_path}: image {record.image} is missing (use --images DIR)")
    index = {cid: i for i, cid in enumerate(label_space.category_ids)}

    def load(record: Record) -> Sample:
        image = io.read_image(record.image)
        h, w = image.shape[:2]
        info = record.files["info"]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise DataError(f"{record.image}: image is {w}x{h} px, {json_path} says {info.get('width')}x{info.get('height')}")
        instances, stuff = [], []
        for ann in record.files["anns"]:
            if ann["category_id"] not in index:
                raise DataError(f"{json_path}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
            mask = decode_segmentation(ann["segmentation"], h, w, f"{json_path}: annotation {ann.get('id')} ({record.image.name})")
            label = index[ann["category_id"]]
            target = instances if label_space.isthing[label] else stuff
            target.append(Instance(mask=mask, label=label, iscrowd=bool(ann.get("iscrowd", 0))))
        return Sample(image=image, name=record.name, semantic=_semantic(stuff, instances, (h, w)) if stuff else None,
                      instances=instances)

    chosen = records if own_split or split == "all" else select_split(records, json_path.parent, split, options.seed)
    return SegDataset(json_path.parent, "coco", label_space, chosen, load, split)


def _semantic(stuff: list[Instance], things: list[Instance], shape: tuple[int, int]) -> np.ndarray:
    """Stuff regions (COCO-Stuff style annotations) on the background, things on top of them."""
    semantic = semantic_from_instances(shape, stuff, 0)
    painted = semantic_from_instances(shape, things, IGNORE_INDEX)
    return np.where(painted != IGNORE_INDEX, painted, semantic)
