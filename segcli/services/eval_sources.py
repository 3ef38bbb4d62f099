"""Where `eval --report` finds the pictures of files it scored: labels from the files, images beside them.

Images are looked up by name in --images DIR, else where segcli's dataset layouts keep them: `images/` beside
the ground-truth folder or json (or its parent), or beside the json itself. An image not found is drawn on grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.data.classes import from_coco_categories
from segcli.metrics import ScoreDetails, match_panoptic
from segcli.structures import LabelMap, LabelSpace, default_palette

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def find_image(folders: list[Path], name: str) -> np.ndarray | None:
    """The image called `name` (a file name, or a stem with any image suffix) in the first folder holding it."""
    for folder in folders:
        candidates = [folder / name] + [folder / (Path(name).stem + suffix) for suffix in IMAGE_SUFFIXES]
        for path in candidates:
            if path.is_file():
                return io.read_image(path)
    return None


def _folders(images: Path | None, labels: Path) -> list[Path]:
    labels = Path(labels)
    base = labels if labels.is_dir() else labels.parent
    around = [base.parent / "images", base / "images", base.parent.parent / "images"]
    return [Path(images)] if images is not None else [f for f in around if f.is_dir()] + [base]


def file_pictures(mode: str, gt: Path, pred: Path, gt_dir: Path | None, pred_dir: Path | None, classes: Path | None,
                  images: Path | None, details: ScoreDetails):
    """(label space, name -> (image or None, prediction, ground truth)) for the files one route scored."""
    if mode == "semantic":
        return _semantic(gt, pred, classes, images, details)
    if mode == "instance":
        return _instance(gt, images, details)
    return _panoptic(gt, pred, gt_dir, pred_dir, images)


def _semantic(gt: Path, pred: Path, classes: Path | None, images: Path | None, details: ScoreDetails):
    from segcli.data.classes import parse_classes_txt

    count = details.confusion.shape[0]
    space = parse_classes_txt(Path(classes)) if classes else None
    if space is None:
        palette = io.read_palette(next(Path(gt).glob("*.png"))) or default_palette(count)
        space = LabelSpace([f"class {i}" for i in range(count)], colors=(palette + default_palette(count))[:count])
    folders = _folders(images, gt)

    def picture(name: str):
        truth = io.read_label_png(Path(gt) / f"{name}.png")
        predicted = io.read_label_png(Path(pred) / f"{name}.png")
        return find_image(folders, name), LabelMap("semantic", predicted), LabelMap("semantic", truth)

    return space, picture


def _instance(gt: Path, images: Path | None, details: ScoreDetails):
    """Objects from the evaluation itself (COCOeval holds both sides with image ids already matched)."""
    evaluator = details.coco
    gt_coco, dt_coco = evaluator.cocoGt, evaluator.cocoDt
    space = from_coco_categories(list(gt_coco.dataset["categories"]), panoptic=False)
    ids = dict(zip(details.images, evaluator.params.imgIds))
    folders = _folders(images, gt)

    def id_map(coco, image_id, shape, ranked: bool) -> LabelMap:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        if ranked:
            anns = sorted(anns, key=lambda a: -a.get("score", 0.0))
        values = np.zeros(shape, np.int32)
        for number, ann in enumerate(anns, start=1):
            values[(coco.annToMask(ann) > 0) & (values == 0)] = number
        return LabelMap("instance", values)

    def picture(name: str):
        image_id = ids[name]
        info = gt_coco.imgs[image_id]
        shape = (int(info["height"]), int(info["width"]))
        image = find_image(folders, info.get("file_name", name))
        return image, id_map(dt_coco, image_id, shape, True), id_map(gt_coco, image_id, shape, False)

    return space, picture


def _panoptic(gt: Path, pred: Path, gt_dir: Path | None, pred_dir: Path | None, images: Path | None):
    gt_data, pred_data = io.read_json(gt), io.read_json(pred)
    categories = gt_data.get("categories") or pred_data.get("categories")
    space = from_coco_categories(categories, panoptic=True)
    index = {c["id"]: number for number, c in enumerate(categories)}
    gt_dir, pred_dir = Path(gt_dir or Path(gt).with_suffix("")), Path(pred_dir or Path(pred).with_suffix(""))
    pairs = {Path(g["file_name"]).stem: (g, p) for g, p in match_panoptic(gt_data, pred_data, Path(gt), Path(pred))}
    by_id = {img["id"]: img for img in gt_data.get("images", [])}
    folders = _folders(images, gt)

    def labels(folder: Path, ann: dict) -> LabelMap:
        values = io.read_panoptic_png(folder / Path(ann["file_name"]).with_suffix(".png"))
        return LabelMap("panoptic", values, classes={s["id"]: index[s["category_id"]] for s in ann["segments_info"]
                                                     if s["category_id"] in index})

    def picture(name: str):
        gt_ann, pred_ann = pairs[name]
        file_name = by_id.get(gt_ann["image_id"], {}).get("file_name", name)
        return find_image(folders, file_name), labels(pred_dir, pred_ann), labels(gt_dir, gt_ann)

    return space, picture
