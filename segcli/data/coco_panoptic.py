"""`coco-panoptic`: a COCO panoptic json with its PNG folder (named like the json without .json,
panopticapi's convention, unless --masks DIR). Crowd segments become crowd instances (ignored as
false positives by PQ, left out of training targets); pixels of no segment are void (255)."""

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
    check_same_size,
    copy_image,
    select_split,
)
from segcli.errors import DataError
from segcli.structures import IGNORE_INDEX, Instance, LabelSpace, Sample, Segment, mask_to_xywh


def read(path: Path, split: str, options: DatasetOptions) -> SegDataset:
    json_path, own_split = find_json(path, "panoptic", split, options)
    data = io.read_json(json_path)
    if not isinstance(data, dict) or not data.get("annotations") or "segments_info" not in data["annotations"][0]:
        raise DataError(f"{json_path}: not a COCO panoptic json (annotations need segments_info)")
    check_keys(json_path, data["annotations"], "annotations", "panoptic")
    for ann in data["annotations"]:
        check_keys(json_path, ann["segments_info"], f"segments_info of {ann['file_name']}", "segments_info")
    if "images" in data:
        check_keys(json_path, data["images"], "images")
    categories = data.get("categories") or _categories_beside(json_path)
    check_keys(json_path, categories, "categories")
    label_space = from_coco_categories(categories, panoptic=True)
    index = {cid: i for i, cid in enumerate(label_space.category_ids)}
    png_dir = Path(options.masks) if options.masks else json_path.with_suffix("")
    if not png_dir.is_dir() and (json_path.parent / "panoptic").is_dir():
        png_dir = json_path.parent / "panoptic"  # a common layout besides panopticapi's
    folder = image_dir(json_path, options)
    images = {img["id"]: img for img in data.get("images", [])}
    records = []
    for ann in data["annotations"]:
        file_name = images.get(ann["image_id"], {}).get("file_name") or Path(ann["file_name"]).with_suffix(".jpg").name
        image = safe_join(folder, file_name, json_path)
        if not image.is_file():
            image = next((p for p in image.parent.glob(image.stem + ".*")), image)
        png = safe_join(png_dir, ann["file_name"], json_path)
        records.append(Record(Path(file_name).stem, image, {"png": png, "ann": ann}))

    def load(record: Record) -> Sample:
        image = io.read_image(record.image, channels=options.channels)
        ids = io.read_panoptic_png(record.files["png"])
        check_same_size(image, ids, record.files["png"])
        listed = {info["id"] for info in record.files["ann"]["segments_info"]}
        unlisted = sorted(set(np.unique(ids).tolist()) - listed - {0})
        if unlisted:
            raise DataError(f"{record.files['png']}: segment ids {unlisted[:5]} are in the PNG but not in the "
                            f"segments_info of {json_path}; the PNG and the json disagree")
        semantic = np.full(ids.shape, IGNORE_INDEX, np.uint8)
        instances, segments = [], []
        for info in record.files["ann"]["segments_info"]:
            if info["category_id"] not in index:
                raise DataError(f"{json_path}: segment {info['id']} has unknown category_id {info['category_id']}")
            mask = ids == info["id"]
            label = index[info["category_id"]]
            semantic[mask] = label
            crowd = bool(info.get("iscrowd", 0))
            if label_space.isthing[label]:
                instances.append(Instance(mask=mask, label=label, iscrowd=crowd))
            segments.append(Segment(info["id"], label, int(info.get("area", mask.sum())), mask_to_xywh(mask), crowd))
        return Sample(image=image, name=record.name, semantic=semantic, instances=instances, panoptic=ids,
                      segments=segments)

    chosen = records if own_split or split == "all" else select_split(records, json_path.parent, split, options.seed)
    return SegDataset(json_path.parent, "coco-panoptic", label_space, chosen, load, split)


def _categories_beside(json_path: Path) -> list[dict]:
    for candidate in json_path.parent.glob("*categories*.json"):
        return io.read_json(candidate)
    raise DataError(f"{json_path}: no categories in the json and no *categories*.json beside it")


def write(out: Path, space: LabelSpace, entries: list[Entry]) -> Losses:
    """images/, and per split the panoptic json with its PNG folder named like it (panopticapi's convention)."""
    losses = Losses("coco-panoptic")
    categories = written_categories(space, list(range(space.num_classes)))
    splits = {entry.split for entry in entries}
    files: dict[Path, dict] = {}
    for entry in entries:
        sample = entry.load()
        split = entry.split if entry.split is not None or splits == {None} else "train"
        losses.unsplit += entry.split is None and split is not None
        json_path = written_json(out, "panoptic", split)
        data = files.setdefault(json_path, {"images": [], "annotations": [], "categories": categories})
        image_id = len(data["images"]) + 1
        data["images"].append(image_entry(image_id, copy_image(entry.image, out / "images", entry.name),
                                          sample.image.shape))
        io.write_panoptic_png(json_path.with_suffix("") / f"{entry.name}.png", sample.panoptic)
        infos = [{"id": int(s.id), "category_id": categories[s.label]["id"], "area": int(s.area),
                  "bbox": [float(v) for v in s.bbox], "iscrowd": int(s.iscrowd)} for s in sample.segments]
        data["annotations"].append({"image_id": image_id, "file_name": f"{entry.name}.png", "segments_info": infos})
        things = sum(s.area for s in sample.segments if space.isthing[s.label])
        losses.hidden_pixels += sum(inst.area for inst in sample.instances) - things
    for path, data in files.items():
        io.write_json(path, data)
    return losses
