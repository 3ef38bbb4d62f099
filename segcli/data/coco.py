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
from segcli.data.coco_json import (
    check_keys,
    find_json,
    image_dir,
    image_entry,
    safe_join,
    written_categories,
    written_json,
)
from segcli.data.dataset import (
    DatasetOptions,
    Entry,
    Losses,
    Record,
    SegDataset,
    copy_image,
    count_void,
    select_split,
    semantic_from_instances,
)
from segcli.errors import DataError
from segcli.structures import IGNORE_INDEX, Instance, LabelSpace, Sample, mask_to_rle, mask_to_xywh, rle_error


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
        image = io.read_image(record.image, channels=options.channels)
        h, w = image.shape[:2]
        info = record.files["info"]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise DataError(f"{record.image}: image is {w}x{h} px, "
                            f"{json_path} says {info.get('width')}x{info.get('height')}")
        instances, stuff = [], []
        for ann in record.files["anns"]:
            if ann["category_id"] not in index:
                raise DataError(f"{json_path}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
            what = f"{json_path}: annotation {ann.get('id')} ({record.image.name})"
            mask = decode_segmentation(ann["segmentation"], h, w, what)
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


def write(out: Path, space: LabelSpace, entries: list[Entry]) -> Losses:
    """images/ and the COCO json of each split (written_json): every thing object as an RLE annotation, and each
    stuff class's region of an image as one `isthing: 0` annotation (COCO-Stuff style), except a stuff class
    named background: that is what no annotation covers."""
    losses = Losses("coco")
    kept = [i for i in range(space.num_classes) if space.isthing[i] or space.names[i].lower() != "background"]
    categories = written_categories(space, kept)
    category = {i: c["id"] for i, c in zip(kept, categories)}
    splits = {entry.split for entry in entries}
    files: dict[Path, dict] = {}
    for entry in entries:
        sample = entry.load()
        split = entry.split if entry.split is not None or splits == {None} else "train"
        losses.unsplit += entry.split is None and split is not None
        data = files.setdefault(written_json(out, "instances", split),
                                {"images": [], "annotations": [], "categories": categories})
        image_id = len(data["images"]) + 1
        data["images"].append(image_entry(image_id, copy_image(entry.image, out / "images", entry.name),
                                          sample.image.shape))
        count_void(sample, losses)
        for mask, label, crowd in _regions(sample, space, kept):
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": image_id,
                                        "category_id": category[label], "segmentation": mask_to_rle(mask),
                                        "area": int(mask.sum()), "bbox": list(mask_to_xywh(mask)),
                                        "iscrowd": int(crowd)})
    for path, data in files.items():
        io.write_json(path, data)
    return losses


def _regions(sample: Sample, space: LabelSpace, kept: list[int]):
    """(mask, class, crowd) of every thing object, then of each kept stuff class present."""
    for inst in sample.instances:
        yield inst.mask, inst.label, inst.iscrowd
    for label in kept:
        if not space.isthing[label] and (region := sample.semantic == label).any():
            yield region, label, False
