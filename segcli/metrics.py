"""The one implementation of every metric segcli reports: eval, training validation and compare use it.

Conventions (stated in SPEC.md, tested against the references in tests/test_metrics.py):
- Semantic: one confusion matrix over the whole dataset, filled with one `np.bincount` per image
  (torchvision references' `ConfusionMatrix` does the same). Pixels whose ground truth is
  `ignore_index` are skipped; a predicted label outside 0..C-1 (255 included) is simply wrong.
  A class absent from both ground truth and prediction is left out of the means (reported as
  None); a class predicted but absent from the ground truth gets IoU 0 and counts.
- Boundary F1: Csurka et al. (BMVC 2013): per image and class, precision and recall of boundary
  pixels within a tolerance (default 2% of the image diagonal); an image's score is the mean over
  the classes present in its ground truth or prediction; the dataset's is the mean over images.
- Panoptic: exactly panopticapi's `pq_compute` (evaluation.py): segments match at IoU > 0.5 within a
  category, void pixels (id 0) of the ground truth are taken out of the union, unmatched predicted
  segments lying more than half in void or in a crowd region of their category are not false
  positives, ground-truth areas come from the json and predicted areas from the PNG; PQ/SQ/RQ are
  averaged over the categories with at least one TP, FP or FN. Where panopticapi divides by zero
  (no category of a kind) segcli reports None, and a category with no TP, FP or FN gets None rows.
- Instance: mask AP is pycocotools' COCOeval with iouType="segm", unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segcli import io
from segcli.errors import DataError
from segcli.structures import IGNORE_INDEX, LabelSpace, Segment

# ---------------------------------------------------------------- semantic


class ConfusionMatrix:
    """Rows are ground-truth classes, columns predicted classes plus one column for predictions outside 0..C-1."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, gt, pred) -> None:
        """Count one image (numpy arrays or tensors of class indices, same shape)."""
        gt, pred = _numpy(gt), _numpy(pred)
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth is {gt.shape}, prediction {pred.shape}")
        keep = gt != self.ignore_index
        gt, pred = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_classes):
            bad = int(gt.max()) if gt.max() >= self.num_classes else int(gt.min())
            raise ValueError(f"ground-truth class {bad} is outside 0..{self.num_classes - 1}")
        pred[(pred < 0) | (pred >= self.num_classes)] = self.num_classes  # wrong, whatever it is
        width = self.num_classes + 1
        self.matrix += np.bincount(gt * width + pred, minlength=self.num_classes * width).reshape(self.num_classes, width)

    def add_counts(self, counts: np.ndarray) -> None:
        """Add a (G, P) matrix of pixel counts (row: ground-truth label, column: predicted label), e.g. `label_counts`'s."""
        n = self.num_classes
        if counts.shape[0] > n and counts[n:].any():
            bad = n + int(np.flatnonzero(counts[n:].any(1))[-1])
            raise ValueError(f"ground-truth class {bad} is outside 0..{n - 1}")
        rows = counts[:n]
        self.matrix[: rows.shape[0], : min(n, rows.shape[1])] += rows[:, :n]
        self.matrix[: rows.shape[0], n] += rows[:, n:].sum(1)

    def merge(self, other: ConfusionMatrix | np.ndarray) -> None:
        """Add another worker's or rank's counts (a ConfusionMatrix or its `.matrix`, e.g. after an all-reduce)."""
        self.matrix += other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other, dtype=np.int64)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """miou, pixel_accuracy, mean_dice and per_class [{id, name, iou, dice}] (None for absent classes)."""
        m = self.matrix
        tp = np.diag(m[:, : self.num_classes]).astype(np.float64)
        gt_total = m.sum(1).astype(np.float64)
        pred_total = m[:, : self.num_classes].sum(0).astype(np.float64)
        union = gt_total + pred_total - tp
        present = union > 0
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
        dice = np.divide(2 * tp, gt_total + pred_total, out=np.zeros_like(tp), where=present)
        names = class_names or [str(i) for i in range(self.num_classes)]
        per_class = [
            {"id": i, "name": names[i], "iou": float(iou[i]) if present[i] else None,
             "dice": float(dice[i]) if present[i] else None}
            for i in range(self.num_classes)
        ]
        total = m.sum()
        return {
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
            "mean_dice": float(dice[present].mean()) if present.any() else 0.0,
            "per_class": per_class,
        }


def label_counts(gt: np.ndarray, pred: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """One image's (G, P) pixel counts for non-negative label maps, before the number of classes is known.

    G and P are one more than the largest ground-truth (non-ignored) and predicted label, so a
    dataset can be scored without --num-classes and the images in parallel.
    """
    keep = gt != ignore_index
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    rows, cols = int(g.max(initial=-1)) + 1, int(p.max(initial=-1)) + 1
    return np.bincount(g * cols + p, minlength=rows * cols).reshape(rows, cols)


def _numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (the image border does not count as outside)."""
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _distance_to(boundary: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest pixel of `boundary` (which must not be empty)."""
    return cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _crop_around(masks: tuple[np.ndarray, ...], margin: int) -> tuple[slice, slice]:
    """The box around every True pixel of the masks, grown by `margin` (boundaries and their distances fit in it)."""
    ys, xs = np.nonzero(np.logical_or.reduce(masks))
    h, w = masks[0].shape
    return (slice(max(0, ys.min() - margin), min(h, ys.max() + margin + 1)),
            slice(max(0, xs.min() - margin), min(w, xs.max() + margin + 1)))


def _class_boundary_f1(gt_mask: np.ndarray, pred_mask: np.ndarray, valid: np.ndarray, tolerance_px: float) -> float:
    """Csurka et al.'s BF of one class in one image: the F1 of boundary precision and recall within the tolerance.

    Ground-truth boundaries include edges against ignored pixels (VOC draws every object's outline
    as an ignored band, so its boundaries are nowhere else). Predicted boundary pixels on ignored
    ground truth cannot be judged: they count for recall but not for precision.
    """
    box = _crop_around((gt_mask, pred_mask), int(math.ceil(tolerance_px)) + 2)
    gt_mask, pred_mask, valid = gt_mask[box], pred_mask[box], valid[box]
    gt_b, pred_b = _boundary(gt_mask), _boundary(pred_mask)
    if not gt_b.any() or not pred_b.any():
        # No boundary on one side: right only if neither has one and both cover the class (it fills the image).
        return float(not gt_b.any() and not pred_b.any() and gt_mask.any() and (pred_mask & valid).any())
    judged = pred_b & valid
    precision = float((_distance_to(gt_b)[judged] <= tolerance_px).mean()) if judged.any() else 1.0
    recall = float((_distance_to(pred_b)[gt_b] <= tolerance_px).mean())
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def boundary_f1_per_class(gt, pred, num_classes: int | None = None, tolerance_px: float | None = None,
                          ignore_index: int = IGNORE_INDEX) -> dict[int, float]:
    """BF score of one image for every class present (not ignored) in its ground truth or prediction.

    A predicted boundary pixel is correct when a ground-truth boundary pixel of the same class lies
    within `tolerance_px` (default 2% of the image diagonal), and vice versa for recall. Classes
    are taken where the ground truth is not `ignore_index`; a predicted `ignore_index` is no class.
    """
    gt, pred = _numpy(gt), _numpy(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth is {gt.shape}, prediction {pred.shape}")
    if tolerance_px is None:
        tolerance_px = 0.02 * float(np.hypot(*gt.shape))
    valid = gt != ignore_index
    classes = set(np.unique(gt[valid]).tolist()) | set(np.unique(pred[valid]).tolist())
    classes.discard(ignore_index)
    if num_classes is not None:
        classes = {c for c in classes if 0 <= c < num_classes}
    return {c: _class_boundary_f1(gt == c, pred == c, valid, tolerance_px) for c in sorted(classes)}


def boundary_f1(gt, pred, tolerance_px: float | None = None, ignore_index: int = IGNORE_INDEX,
                num_classes: int | None = None) -> float | None:
    """One image's BF score: the mean over its classes (None when every pixel is ignored)."""
    scores = boundary_f1_per_class(gt, pred, num_classes, tolerance_px, ignore_index)
    return float(np.mean(list(scores.values()))) if scores else None


class BoundaryF1:
    """Boundary F1 over a dataset (Csurka et al.): the mean over images of each image's mean over its classes.

    `per_class()` gives each class's mean over the images where it appears. The state is plain
    numbers, so workers can return it and `merge` adds it up.
    """

    def __init__(self, num_classes: int | None = None, tolerance_px: float | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.tolerance_px, self.ignore_index = num_classes, tolerance_px, ignore_index
        self.class_sums: dict[int, float] = {}
        self.class_counts: dict[int, int] = {}
        self.image_sum, self.images = 0.0, 0

    def update(self, gt, pred) -> None:
        """Score one image."""
        self.add(boundary_f1_per_class(gt, pred, self.num_classes, self.tolerance_px, self.ignore_index))

    def add(self, scores: dict[int, float]) -> None:
        """Add one image's per-class scores (from `boundary_f1_per_class`); classes beyond num_classes are dropped."""
        if self.num_classes is not None:
            scores = {c: s for c, s in scores.items() if 0 <= c < self.num_classes}
        if not scores:
            return
        for c, score in scores.items():
            self.class_sums[c] = self.class_sums.get(c, 0.0) + score
            self.class_counts[c] = self.class_counts.get(c, 0) + 1
        self.image_sum += sum(scores.values()) / len(scores)
        self.images += 1

    def merge(self, other: BoundaryF1) -> None:
        for c, total in other.class_sums.items():
            self.class_sums[c] = self.class_sums.get(c, 0.0) + total
            self.class_counts[c] = self.class_counts.get(c, 0) + other.class_counts[c]
        self.image_sum += other.image_sum
        self.images += other.images

    def per_class(self, num_classes: int | None = None) -> list[float | None]:
        n = num_classes or self.num_classes or (max(self.class_counts, default=-1) + 1)
        return [self.class_sums[c] / self.class_counts[c] if c in self.class_counts else None for c in range(n)]

    def compute(self) -> float:
        return self.image_sum / self.images if self.images else 0.0


# ---------------------------------------------------------------- panoptic

OFFSET = 256 * 256 * 256  # panopticapi's: larger than any segment id
VOID = 0


@dataclass
class PQStatCat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: PQStatCat) -> None:
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn


@dataclass
class PQStat:
    """Per-category TP/FP/FN counts and matched-IoU sums, mergeable across images, workers and ranks."""

    per_cat: dict[int, PQStatCat] = field(default_factory=dict)

    def cat(self, category_id: int) -> PQStatCat:
        return self.per_cat.setdefault(category_id, PQStatCat())

    def add(self, other: PQStat) -> PQStat:
        for category_id, stat in other.per_cat.items():
            self.cat(category_id).add(stat)
        return self

    def average(self, categories: dict[int, dict], isthing: bool | None = None) -> tuple[dict, dict]:
        """panopticapi's pq_average: means over the categories with tp + fp + fn > 0 (None if there is none)."""
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for category_id, info in categories.items():
            if isthing is not None and (info.get("isthing", 0) == 1) != isthing:
                continue
            s = self.per_cat.get(category_id, PQStatCat())
            if s.tp + s.fp + s.fn == 0:
                per_class[category_id] = {"pq": None, "sq": None, "rq": None, "tp": 0, "fp": 0, "fn": 0}
                continue
            n += 1
            denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
            scores = {"pq": s.iou / denominator, "sq": s.iou / s.tp if s.tp != 0 else 0.0, "rq": s.tp / denominator}
            per_class[category_id] = {**scores, "tp": s.tp, "fp": s.fp, "fn": s.fn}
            pq, sq, rq = pq + scores["pq"], sq + scores["sq"], rq + scores["rq"]
        if n == 0:
            return {"pq": None, "sq": None, "rq": None, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


class PanopticFormatError(ValueError):
    """A panoptic map whose PNG and segments_info disagree (panopticapi raises KeyError)."""


def _overlaps(gt_ids: np.ndarray, pred_ids: np.ndarray) -> dict[tuple[int, int], int]:
    """Pixel count of every (ground-truth id, predicted id) pair in one image: one np.unique over the joint ids."""
    joint = gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64)
    pairs, counts = np.unique(joint, return_counts=True)
    return dict(zip(zip((pairs // OFFSET).tolist(), (pairs % OFFSET).tolist()), counts.tolist()))


def _areas(overlap: dict[tuple[int, int], int], side: int) -> dict[int, int]:
    areas: dict[int, int] = {}
    for pair, count in overlap.items():
        areas[pair[side]] = areas.get(pair[side], 0) + count
    return areas


def _check_segments(areas: dict[int, int], segments: dict[int, dict], categories: dict | None, what: str) -> None:
    """The checks of panopticapi's pq_compute_single_core (in its order), for predictions and ground truth alike."""
    for label, info in segments.items():
        if "category_id" not in info:
            raise PanopticFormatError(f"{what}: segment id {label} has no category_id")
    for label in sorted(areas):
        if label == VOID:
            continue
        if label not in segments:
            raise PanopticFormatError(f"{what}: segment id {label} is in the PNG but not in the json's segments_info")
        if categories is not None and segments[label]["category_id"] not in categories:
            raise PanopticFormatError(f"{what}: segment id {label} has unknown category_id {segments[label]['category_id']}")
    unseen = sorted(set(segments) - set(areas))
    if unseen:
        raise PanopticFormatError(f"{what}: segment ids {unseen} are in the json's segments_info but not in the PNG")


def pq_image(gt_ids: np.ndarray, gt_segments: dict[int, dict], pred_ids: np.ndarray, pred_segments: dict[int, dict],
             categories: dict[int, dict] | None = None, image: str = "", gt_image: str | None = None) -> PQStat:
    """One image's PQ statistics, exactly as panopticapi's pq_compute_single_core.

    Segment dicts map id -> {"category_id", "iscrowd" (gt), "area" (gt: as its json gives it, else
    counted)}. Predicted areas are counted from the PNG, as panopticapi does. Unlike panopticapi,
    the ground truth is checked too: its PNG and json must list the same segments.
    """
    if gt_ids.shape != pred_ids.shape:
        raise PanopticFormatError(f"{image}: prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]} px, "
                                  f"ground truth {gt_ids.shape[1]}x{gt_ids.shape[0]}")
    overlap = _overlaps(gt_ids, pred_ids)
    pred_area, gt_area = _areas(overlap, 1), _areas(overlap, 0)
    _check_segments(pred_area, pred_segments, categories, f"{image} (prediction)")
    _check_segments(gt_area, gt_segments, None, f"{gt_image or image} (ground truth)")
    gt_segments = {k: {"iscrowd": 0, "area": gt_area[k], **v} for k, v in gt_segments.items()}

    stat = PQStat()
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in overlap.items():
        gt_info, pred_info = gt_segments.get(gt_label), pred_segments.get(pred_label)
        if gt_info is None or pred_info is None or gt_info["iscrowd"] == 1:
            continue
        if gt_info["category_id"] != pred_info["category_id"]:
            continue
        union = pred_area[pred_label] + gt_info["area"] - intersection - overlap.get((VOID, pred_label), 0)
        if union <= 0:
            raise PanopticFormatError(f"{gt_image or image} (ground truth): segment id {gt_label} has area "
                                      f"{gt_info['area']} in the json but {gt_area[gt_label]} px in the PNG")
        iou = intersection / union
        if iou > 0.5:
            s = stat.cat(gt_info["category_id"])
            s.tp += 1
            s.iou += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)

    crowd_by_category = {}
    for gt_label, gt_info in gt_segments.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            crowd_by_category[gt_info["category_id"]] = gt_label  # panopticapi keeps the last crowd of a category
            continue
        stat.cat(gt_info["category_id"]).fn += 1

    for pred_label, pred_info in pred_segments.items():
        if pred_label in pred_matched:
            continue
        ignored = overlap.get((VOID, pred_label), 0)
        if pred_info["category_id"] in crowd_by_category:
            ignored += overlap.get((crowd_by_category[pred_info["category_id"]], pred_label), 0)
        if ignored / pred_area[pred_label] > 0.5:
            continue
        stat.cat(pred_info["category_id"]).fp += 1
    return stat


def pq_summary(stat: PQStat, categories: dict[int, dict]) -> dict:
    """The SPEC.md keys: pq, sq, rq, n, things, stuff, per_class [{id, name, isthing, pq, sq, rq, tp, fp, fn}]."""
    overall, per_class = stat.average(categories)
    things, _ = stat.average(categories, isthing=True)
    stuff, _ = stat.average(categories, isthing=False)
    return {
        **overall,
        "things": things,
        "stuff": stuff,
        "per_class": [
            {"id": cid, "name": categories[cid].get("name", str(cid)), "isthing": categories[cid].get("isthing", 0) == 1,
             **per_class[cid]}
            for cid in categories
        ],
    }


class PanopticQuality:
    """PQ accumulated over in-memory images (training validation, `eval --data`): maps plus `Segment` lists."""

    def __init__(self, label_space: LabelSpace) -> None:
        self.label_space = label_space
        self.categories = {c["id"]: c for c in label_space.coco_categories()}
        self.stat = PQStat()

    def _segments(self, segments: list[Segment], gt: bool) -> dict[int, dict]:
        ids = self.label_space.category_ids
        if gt:
            return {s.id: {"category_id": ids[s.label], "iscrowd": int(s.iscrowd), "area": int(s.area)} for s in segments}
        return {s.id: {"category_id": ids[s.label]} for s in segments}

    def update(self, gt_map: np.ndarray, gt_segments: list[Segment], pred_map: np.ndarray,
               pred_segments: list[Segment], image: str = "") -> None:
        self.stat.add(pq_image(np.asarray(gt_map), self._segments(gt_segments, True), np.asarray(pred_map),
                               self._segments(pred_segments, False), self.categories, image=image))

    def merge(self, other: PanopticQuality | PQStat) -> None:
        self.stat.add(other.stat if isinstance(other, PanopticQuality) else other)

    def compute(self) -> dict:
        return pq_summary(self.stat, self.categories)


def pq_from_arrays(pairs: Iterable[tuple[tuple[np.ndarray, list[Segment]], tuple[np.ndarray, list[Segment]]]],
                   label_space: LabelSpace) -> dict:
    """PQ of ((gt_map, gt_segments), (pred_map, pred_segments)) pairs, as `pq_summary` reports it."""
    metric = PanopticQuality(label_space)
    for number, ((gt_map, gt_segments), (pred_map, pred_segments)) in enumerate(pairs):
        metric.update(gt_map, gt_segments, pred_map, pred_segments, image=f"image {number}")
    return metric.compute()


# ---------------------------------------------------------------- panoptic files (panopticapi's pq_compute)


class ImageIndex:
    """Finds the ground-truth image a prediction is for: by image_id, else by file stem (predict's image_id is the stem)."""

    def __init__(self, entries: Iterable[tuple[object, str]]) -> None:
        self.ids: set = set()
        self.stems: dict[str, object] = {}
        for image_id, file_name in entries:
            self.ids.add(image_id)
            self.stems.setdefault(Path(str(file_name)).stem, image_id)

    def find(self, image_id: object, file_name: str | None = None) -> object | None:
        if image_id in self.ids:
            return image_id
        if str(image_id) in self.stems:
            return self.stems[str(image_id)]
        return self.stems.get(Path(file_name).stem) if file_name else None


def _annotations(data: object, source: Path) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{source}: not a COCO panoptic json (no 'annotations' list)")
    for ann in data["annotations"]:
        missing = {"image_id", "file_name", "segments_info"} - set(ann)
        if missing:
            raise DataError(f"{source}: annotation {ann.get('image_id', ann.get('file_name', '?'))!r} has no {sorted(missing)}")
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


def _pq_job(job: tuple) -> PQStat:
    gt_png, gt_ann, pred_png, pred_ann, categories = job
    gt_ids, pred_ids = io.read_panoptic_png(gt_png), io.read_panoptic_png(pred_png)
    try:
        return pq_image(gt_ids, {s["id"]: s for s in gt_ann["segments_info"]}, pred_ids,
                        {s["id"]: s for s in pred_ann["segments_info"]}, categories,
                        image=str(pred_png), gt_image=str(gt_png))
    except PanopticFormatError as error:
        raise DataError(f"{error} (image {gt_ann['image_id']!r})") from None


def pq_compute(gt_json: Path, pred_json: Path, gt_dir: Path | None = None, pred_dir: Path | None = None,
               workers: int | None = None) -> dict:
    """panopticapi's pq_compute on files: PNG folders default to the json path without .json; images in parallel."""
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
    jobs = [(_panoptic_png(gt_dir, g, "ground-truth"), g, _panoptic_png(pred_dir, p, "predicted"), p, categories)
            for g, p in pairs]
    total = PQStat()
    for stat in map_images(_pq_job, jobs, workers):
        total.add(stat)
    return pq_summary(total, categories) | {"images": len(jobs)}


def map_images(function: Callable, jobs: list, workers: int | None = None) -> list:
    """`function` over per-image jobs, in worker processes when there are enough images to pay for them."""
    if workers is None:
        workers = min(os.cpu_count() or 1, max(1, len(jobs) // 16))
    if workers <= 1 or len(jobs) <= 1:
        return [function(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


# ---------------------------------------------------------------- instance (COCO mask AP)

COCO_STATS = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]
_AREAS = {"ap": 0, "ap_small": 1, "ap_medium": 2, "ap_large": 3}  # COCOeval's areaRng order


def coco_mask_ap(gt: dict, results: list[dict]) -> dict:
    """COCOeval(iouType="segm") of a results list against a ground-truth dict.

    Returns the 12 stats by name (-1, COCOeval's "no ground truth in this area range", as None),
    the raw `stats`, and `per_class` AP rows read from the same evaluation's precision array (as
    detectron2 does). Neither argument is modified. Result boxes are dropped first, as detectron2
    does: given a box, COCOeval would take the box's area as the mask's for small/medium/large.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(gt)  # COCOeval writes RLEs and ignore flags into the annotations it evaluates
    with contextlib.redirect_stdout(_Silent()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in copy.deepcopy(results)])
        else:  # loadRes cannot take an empty list; an empty result set is still a result (AP 0 where there is GT)
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]), "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) for s in evaluator.stats]
    scores = {key: (None if value < 0 else value) for key, value in zip(COCO_STATS, stats)}
    return scores | {"stats": stats, "per_class": _per_class_ap(evaluator, gt["categories"])}


def _per_class_ap(evaluator, categories: list[dict]) -> list[dict]:
    """AP, AP50, AP75 and AP by area of each category from COCOeval's precision[T, R, K, A, M] (maxDets 100)."""
    precision = evaluator.eval["precision"]
    names = {c["id"]: c.get("name", str(c["id"])) for c in categories}
    iou_thresholds = evaluator.params.iouThrs
    rows = []
    for k, category_id in enumerate(int(c) for c in evaluator.params.catIds):  # COCOeval made them numpy ints
        row = {"id": category_id, "name": names.get(category_id, str(category_id))}
        for key, area in _AREAS.items():
            row[key] = _mean_defined(precision[:, :, k, area, -1])
        for key, threshold in (("ap50", 0.5), ("ap75", 0.75)):
            row[key] = _mean_defined(precision[np.isclose(iou_thresholds, threshold), :, k, 0, -1])
        rows.append(row)
    return rows


def _mean_defined(values: np.ndarray) -> float | None:
    """COCOeval's average: over the entries that are not -1 (None when none is)."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


class _Silent:
    """pycocotools prints its progress and summary to stdout, which segcli keeps for machine output."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None
