"""panopticapi's `pq_compute` on files: a COCO panoptic json and its PNG folder on each side.

Predictions are matched to ground-truth images (every image of either side needs exactly one
partner), each pair is scored by `segcli.metrics.panoptic.pq_image`, in worker processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli import io
from segcli.errors import DataError
from segcli.metrics.details import ScoreDetails
from segcli.metrics.matching import ImageIndex
from segcli.metrics.panoptic import PanopticFormatError, PQStat, pq_image, pq_summary, segment_class_map
from segcli.metrics.parallel import map_images
from segcli.metrics.semantic import label_counts


def _annotations(data: object, source: Path) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{source}: not a COCO panoptic json (no 'annotations' list)")
    for ann in data["annotations"]:
        missing = {"image_id", "file_name", "segments_info"} - set(ann)
        if missing:
            image = ann.get("image_id", ann.get("file_name", "?"))
            raise DataError(f"{source}: annotation {image!r} has no {sorted(missing)}")
        if any(not isinstance(s, dict) or "id" not in s for s in ann["segments_info"]):
            raise DataError(f"{source}: image {ann['image_id']!r} has a segments_info entry without an 'id'")
    return data["annotations"]


def match_panoptic(gt_data: dict, pred_data: dict, gt_json: Path, pred_json: Path) -> list[tuple[dict, dict]]:
    """(ground truth, prediction) annotation pairs; every image of either side must have exactly one partner."""
    gt_anns = {ann["image_id"]: ann for ann in _annotations(gt_data, gt_json)}
    index = ImageIndex((k, a["file_name"]) for k, a in gt_anns.items())
    matched: dict[object, dict] = {}
    for pred_ann in _annotations(pred_data, pred_json):
        key = index.find(pred_ann["image_id"], pred_ann["file_name"])
        if key is None:
            raise DataError(f"{pred_json}: prediction for image {pred_ann['image_id']!r} ({pred_ann['file_name']}) "
                            f"has no ground truth in {gt_json}")
        if key in matched:
            raise DataError(f"{pred_json}: two predictions for ground-truth image {key!r} "
                            f"({matched[key]['file_name']} and {pred_ann['file_name']})")
        matched[key] = pred_ann
    unscored = [k for k in gt_anns if k not in matched]
    if unscored:
        raise DataError(f"{pred_json}: no prediction for ground-truth image {unscored[0]!r} "
                        f"({gt_anns[unscored[0]]['file_name']}; {len(unscored)} in all)")
    return [(gt_anns[k], matched[k]) for k in gt_anns]


def _panoptic_png(folder: Path, ann: dict, what: str) -> Path:
    path = folder / Path(ann["file_name"]).with_suffix(".png")
    if not path.is_file():
        raise DataError(f"{path}: missing {what} panoptic PNG for image {ann['image_id']!r}")
    return path


def _pq_job(job: tuple) -> tuple[PQStat, object]:
    """One image's PQ statistics and, for a report, the pixel counts of (ground-truth class, predicted class)
    as class indices in `categories` order (void: 255), else None."""
    gt_png, gt_ann, pred_png, pred_ann, categories, counted = job
    gt_ids, pred_ids = io.read_panoptic_png(gt_png), io.read_panoptic_png(pred_png)
    try:
        stat = pq_image(gt_ids, {s["id"]: s for s in gt_ann["segments_info"]}, pred_ids,
                        {s["id"]: s for s in pred_ann["segments_info"]}, categories,
                        image=str(pred_png), gt_image=str(gt_png))
    except PanopticFormatError as error:
        raise DataError(f"{error} (image {gt_ann['image_id']!r})") from None
    if not counted:
        return stat, None
    index = {category_id: number for number, category_id in enumerate(categories)}
    gt_map, pred_map = (segment_class_map(ids, {s["id"]: index[s["category_id"]] for s in ann["segments_info"]
                                                if s["category_id"] in index})
                        for ids, ann in ((gt_ids, gt_ann), (pred_ids, pred_ann)))
    return stat, label_counts(gt_map, pred_map)


def pq_compute(gt_json: Path, pred_json: Path, gt_dir: Path | None = None, pred_dir: Path | None = None,
               workers: int | None = None, details: ScoreDetails | None = None) -> dict:
    """panopticapi's pq_compute on files: PNG folders default to the json path without .json; images in parallel.
    With `details`: each image's PQ (images named by their ground-truth PNG) and the classes' pixel confusion."""
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_dir, pred_dir = Path(gt_dir or gt_json.with_suffix("")), Path(pred_dir or pred_json.with_suffix(""))
    for folder, option in ((gt_dir, "--gt-dir"), (pred_dir, "--pred-dir")):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder of panoptic PNGs (give it with {option})")
    gt_data, pred_data = io.read_json(gt_json), io.read_json(pred_json)
    pairs = match_panoptic(gt_data, pred_data, gt_json, pred_json)
    categories = {c["id"]: c for c in (gt_data.get("categories") or pred_data.get("categories") or [])}
    if not categories:
        raise DataError(f"{gt_json}: no 'categories' (nor in {pred_json}): PQ needs each category's isthing flag")
    jobs = [(_panoptic_png(gt_dir, g, "ground-truth"), g, _panoptic_png(pred_dir, p, "predicted"), p, categories,
             details is not None) for g, p in pairs]
    total = PQStat()
    confusion = np.zeros((len(categories), len(categories) + 1), np.int64)
    for job, (stat, counts) in zip(jobs, map_images(_pq_job, jobs, workers)):
        total.add(stat)
        if details is not None:
            details.images.append(job[0].stem)
            details.per_image.append(stat.average(categories)[0]["pq"])
            _add_class_counts(confusion, counts)
    if details is not None:
        details.confusion = confusion
    return pq_summary(total, categories) | {"images": len(jobs)}


def _add_class_counts(confusion: np.ndarray, counts: np.ndarray) -> None:
    """Ground-truth void rows (255) are left out; predicted void or unknown columns go to the last column."""
    classes = confusion.shape[0]
    rows = counts[:classes]
    confusion[: rows.shape[0], : min(classes, rows.shape[1])] += rows[:, :classes]
    confusion[: rows.shape[0], classes] += rows[:, classes:].sum(1)
