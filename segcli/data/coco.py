"""`coco`: COCO instances json (polygons or RLE, decoded by pycocotools).

Images are looked up in --images DIR, else `images/` beside the json, else beside the json.
`--data` names the training json (or a folder with annotations/instances_train.json); the val
split is --val, else the json named with `val` instead of `train`, else a seeded 10% hold-out.
"""

from __future__ import annotations

from pathlib import Path

from segcli import io
from segcli.data.classes import from_coco_categories
from segcli.data.dataset import DatasetOptions, Record, SegDataset, select_split
from segcli.errors import DataError
from segcli.structures import Instance, Sample


def find_json(path: Path, kind: str, split: str, options: DatasetOptions) -> tuple[Path, bool]:
    """The json for a split, and whether it is a split of its own (True) or needs a hold-out (False)."""
    if path.is_dir():
        path = path / "annotations" / f"{kind}_train.json"
        if not path.is_file():
            raise DataError(f"{path.parent.parent}: no annotations/{kind}_train.json; pass the json itself")
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


def read(path: Path, split: str, options: DatasetOptions) -> SegDataset:
    from pycocotools import mask as mask_utils

    json_path, own_split = find_json(path, "instances", split, options)
    data = io.read_json(json_path)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise DataError(f"{json_path}: not a COCO instances json (needs images, annotations, categories)")
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
        instances = []
        for ann in record.files["anns"]:
            if ann["category_id"] not in index:
                raise DataError(f"{json_path}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
            segmentation = ann["segmentation"]
            rles = mask_utils.frPyObjects(segmentation, h, w) if isinstance(segmentation, list) or \
                isinstance(segmentation.get("counts"), list) else segmentation
            mask = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles).astype(bool)
            instances.append(Instance(mask=mask, label=index[ann["category_id"]], iscrowd=bool(ann.get("iscrowd", 0))))
        return Sample(image=image, name=record.name, instances=instances)

    chosen = records if own_split or split == "all" else select_split(records, json_path.parent, split, options.seed)
    return SegDataset(json_path.parent, "coco", label_space, chosen, load, split)
