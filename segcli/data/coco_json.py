"""COCO json files as both COCO readers (`coco`, `coco-panoptic`) find and check them.

`--data` names the training json, or a folder with annotations/<kind>_train.json or a single json of
its kind; the val split is --val, else the json named with `val` instead of `train`, else a seeded
hold-out. Images are looked up in --images DIR, else `images/` beside the json, else beside it.
"""

from __future__ import annotations

from pathlib import Path

from segcli import io
from segcli.data.dataset import DatasetOptions
from segcli.errors import DataError


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


# ---------------------------------------------------------------- writing (segcli data convert)


def written_json(out: Path, kind: str, split: str | None) -> Path:
    """Where a converted dataset's json goes: <out>/<kind>.json for a dataset without splits (found as the single
    json of the folder), else <out>/annotations/<kind>_<split>.json (found by the split's name); images in
    <out>/images."""
    return Path(out) / f"{kind}.json" if split is None else Path(out) / "annotations" / f"{kind}_{split}.json"


def written_categories(space, indices: list[int]) -> list[dict]:
    """COCO categories of the classes `indices`: their category ids when those are unique and above 0 (COCO keeps
    0 for "no category"), else 1..K in order."""
    ids = [space.category_ids[i] for i in indices]
    if len(set(ids)) != len(ids) or min(ids, default=1) < 1:
        ids = list(range(1, len(indices) + 1))
    return [{"id": int(cid), "name": space.names[i], "isthing": int(space.isthing[i]), "color": list(space.colors[i]),
             "supercategory": space.names[i]} for cid, i in zip(ids, indices)]


def image_entry(image_id: int, file_name: str, shape: tuple[int, ...]) -> dict:
    return {"id": image_id, "file_name": file_name, "height": int(shape[0]), "width": int(shape[1])}
