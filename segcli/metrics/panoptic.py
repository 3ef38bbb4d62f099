"""Panoptic quality, exactly panopticapi's `pq_compute` (evaluation.py), on label maps in memory.

Segments match at IoU > 0.5 within a category; void pixels (id 0) of the ground truth are taken out
of the union; unmatched predicted segments lying more than half in void or in a crowd region of their
category are not false positives; ground-truth areas come from the json and predicted areas from the
PNG. PQ/SQ/RQ are averaged over the categories with at least one TP, FP or FN. Where panopticapi
divides by zero (no category of a kind) segcli reports None, and a category with no TP, FP or FN gets
None rows. Files (COCO panoptic json + PNG folders) are read in `segcli.metrics.panoptic_files`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from segcli.structures import LabelSpace, Segment

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
            raise PanopticFormatError(f"{what}: segment id {label} "
                                      f"has unknown category_id {segments[label]['category_id']}")
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
    """The keys eval reports: pq, sq, rq, n, things, stuff, per_class [{id, name, isthing, pq, sq, rq, tp, fp, fn}]."""
    overall, per_class = stat.average(categories)
    things, _ = stat.average(categories, isthing=True)
    stuff, _ = stat.average(categories, isthing=False)
    return {
        **overall,
        "things": things,
        "stuff": stuff,
        "per_class": [
            {"id": cid, "name": categories[cid].get("name", str(cid)),
             "isthing": categories[cid].get("isthing", 0) == 1, **per_class[cid]}
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
            return {s.id: {"category_id": ids[s.label], "iscrowd": int(s.iscrowd), "area": int(s.area)}
                    for s in segments}
        return {s.id: {"category_id": ids[s.label]} for s in segments}

    def update(self, gt_map: np.ndarray, gt_segments: list[Segment], pred_map: np.ndarray,
               pred_segments: list[Segment], image: str = "") -> PQStat:
        """Add one image; returns its own statistics (a report scores images one by one)."""
        stat = pq_image(np.asarray(gt_map), self._segments(gt_segments, True), np.asarray(pred_map),
                        self._segments(pred_segments, False), self.categories, image=image)
        self.stat.add(stat)
        return stat

    def merge(self, other: PanopticQuality | PQStat) -> None:
        self.stat.add(other.stat if isinstance(other, PanopticQuality) else other)

    def compute(self) -> dict:
        return pq_summary(self.stat, self.categories)


def segment_class_map(ids: np.ndarray, labels: dict[int, int], void: int = 255) -> np.ndarray:
    """A panoptic id map as a class-index map (uint8): each segment's class, `void` where no segment is listed."""
    values, inverse = np.unique(np.asarray(ids), return_inverse=True)
    table = np.array([labels.get(int(v), void) for v in values.tolist()], np.uint8)
    return table[inverse].reshape(np.shape(ids))


def pq_from_arrays(pairs: Iterable[tuple[tuple[np.ndarray, list[Segment]], tuple[np.ndarray, list[Segment]]]],
                   label_space: LabelSpace) -> dict:
    """PQ of ((gt_map, gt_segments), (pred_map, pred_segments)) pairs, as `pq_summary` reports it."""
    metric = PanopticQuality(label_space)
    for number, ((gt_map, gt_segments), (pred_map, pred_segments)) in enumerate(pairs):
        metric.update(gt_map, gt_segments, pred_map, pred_segments, image=f"image {number}")
    return metric.compute()
