"""Metrics against hand counts and the reference implementations (pycocotools, panopticapi's definition,
torchmetrics)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segcli.metrics import (
    COCO_STATS,
    BoundaryF1,
    ConfusionMatrix,
    PanopticFormatError,
    PanopticQuality,
    PQStat,
    boundary_f1,
    boundary_f1_per_class,
    coco_mask_ap,
    label_counts,
    pq_from_arrays,
    pq_image,
    pq_summary,
)
from segcli.structures import LabelSpace, Segment

# ---------------------------------------------------------------- semantic


def test_confusion_matrix_conventions():
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
    pred = np.array([[0, 2, 1, 0], [0, 1, 1, 7]])  # 2 is predicted but absent from gt; 7 is out of range
    cm = ConfusionMatrix(num_classes=4)
    cm.update(gt, pred)
    result = cm.compute(class_names=["a", "b", "c", "d"])
    per = {row["name"]: row for row in result["per_class"]}
    # class 0: gt 3 px, pred 3 px (the 0 at (0,3) is wrong), tp 2 -> IoU 2/4, Dice 4/6
    assert per["a"]["iou"] == pytest.approx(2 / 4) and per["a"]["dice"] == pytest.approx(4 / 6)
    # class 1: gt 4, pred 2 valid (the pred 1 on the ignored pixel does not count), tp 2 -> 2/4
    assert per["b"]["iou"] == pytest.approx(2 / 4)
    assert per["c"]["iou"] == 0.0 and per["c"]["dice"] == 0.0  # predicted, never in the ground truth: 0, counted
    assert per["d"]["iou"] is None and per["d"]["dice"] is None  # absent from both: left out
    assert result["miou"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert result["mean_dice"] == pytest.approx((4 / 6 + 4 / 6 + 0.0) / 3)
    assert result["pixel_accuracy"] == pytest.approx(4 / 7)


def test_one_matrix_for_the_dataset_not_a_mean_of_images():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
    cm.update(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]))
    # pooled: class 0 tp 3 / union 4, class 1 tp 4 / union 5
    assert cm.compute()["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def _hand_iou(gt: np.ndarray, pred: np.ndarray, c: int, ignore: int = 255) -> float | None:
    valid = gt != ignore
    inter = int(((gt == c) & (pred == c) & valid).sum())
    union = int((((gt == c) | (pred == c)) & valid).sum())
    return inter / union if union else None


def test_confusion_matrix_matches_a_hand_count_on_random_maps(rng):
    cm, merged = ConfusionMatrix(5), ConfusionMatrix(5)
    halves = [ConfusionMatrix(5), ConfusionMatrix(5)]
    gts, preds = [], []
    for i in range(6):
        gt = rng.integers(0, 4, (9, 11))  # class 4 never in the ground truth
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = rng.integers(0, 6, (9, 11))  # 5 is out of range: always wrong
        gts.append(gt)
        preds.append(pred)
        cm.update(torch.from_numpy(gt), torch.from_numpy(pred))  # tensors are accepted
        halves[i % 2].update(gt, pred)
    for half in halves:
        merged.merge(half.matrix)  # what an all-reduce hands back
    gt, pred = np.concatenate(gts), np.concatenate(preds)
    for c, row in enumerate(cm.compute()["per_class"]):
        assert row["iou"] == pytest.approx(_hand_iou(gt, pred, c), abs=1e-12)
    valid = gt != 255
    assert cm.compute()["pixel_accuracy"] == pytest.approx(((gt == pred) & valid).sum() / valid.sum())
    assert (merged.matrix == cm.matrix).all()
    folded = ConfusionMatrix(5)
    for g, p in zip(gts, preds):
        folded.add_counts(label_counts(g, p))
    assert (folded.matrix == cm.matrix).all()


def test_confusion_matrix_rejects_ground_truth_beyond_its_classes():
    with pytest.raises(ValueError, match="ground-truth class 3"):
        ConfusionMatrix(3).update(np.array([0, 3]), np.array([0, 0]))
    with pytest.raises(ValueError, match="ground-truth class 3"):
        ConfusionMatrix(3).add_counts(label_counts(np.array([0, 3]), np.array([0, 0])))


# ---------------------------------------------------------------- boundary F1


def _brute_boundary(mask: np.ndarray) -> list[tuple[int, int]]:
    h, w = mask.shape
    points = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and any(0 <= y + dy < h and 0 <= x + dx < w and not mask[y + dy, x + dx]
                                  for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))):
                points.append((y, x))
    return points


def _brute_bf(gt: np.ndarray, pred: np.ndarray, c: int, tolerance: float) -> float:
    """Csurka et al.'s BF for one class, with explicit loops over boundary pixels."""
    gt_b, pred_b = _brute_boundary(gt == c), _brute_boundary(pred == c)
    if not gt_b or not pred_b:
        return float(not gt_b and not pred_b)

    def hits(points, targets):
        return sum(min(np.hypot(y - ty, x - tx) for ty, tx in targets) <= tolerance for y, x in points) / len(points)

    precision, recall = hits(pred_b, gt_b), hits(gt_b, pred_b)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def test_boundary_f1_equals_a_brute_force_count(rng):
    for _ in range(8):
        gt = np.zeros((20, 24), np.int64)
        pred = np.zeros((20, 24), np.int64)
        for _ in range(3):
            y, x, c = rng.integers(0, 14), rng.integers(0, 18), rng.integers(1, 4)
            gt[y : y + 6, x : x + 6] = c
            dy, dx = rng.integers(-2, 3, 2)
            pred[max(0, y + dy) : y + dy + 6, max(0, x + dx) : x + dx + 6] = c
        tolerance = float(rng.choice([0.0, 1.0, 1.5, 2.0]))
        scores = boundary_f1_per_class(gt, pred, tolerance_px=tolerance)
        classes = set(np.unique(gt)) | set(np.unique(pred))
        assert set(scores) == classes
        for c in classes:
            assert scores[c] == pytest.approx(_brute_bf(gt, pred, c, tolerance), abs=1e-12)


def test_boundary_f1_perfect_shifted_and_tolerance():
    gt = np.zeros((50, 50), np.int64)
    gt[10:40, 10:40] = 1
    assert boundary_f1_per_class(gt, gt, 2, tolerance_px=0)[1] == 1.0
    shifted = np.roll(gt, 3, axis=1)
    assert boundary_f1_per_class(gt, shifted, 2, tolerance_px=3)[1] == 1.0
    assert boundary_f1_per_class(gt, shifted, 2, tolerance_px=1)[1] < 0.7
    # default tolerance: 2% of the diagonal = 1.41 px here, so a 3 px shift is not within it
    assert boundary_f1(gt, shifted) < 1.0 and boundary_f1(gt, np.roll(gt, 1, axis=1)) == 1.0


def test_boundary_f1_edge_cases():
    full, other = np.ones((8, 8), np.int64), np.full((8, 8), 2)
    assert boundary_f1_per_class(full, full) == {1: 1.0}  # the class fills the image in both: nothing to miss
    assert boundary_f1_per_class(full, other) == {1: 0.0, 2: 0.0}  # no boundary, but the wrong class
    gt = np.zeros((8, 8), np.int64)
    gt[:, 4:] = 255  # an ignored half: class 0's edge against it (column 3) is a boundary
    pred = np.zeros((8, 8), np.int64)
    pred[:, 6:] = 3  # class 3 only on ignored pixels: not scored; class 0's predicted edge is column 5
    assert boundary_f1_per_class(gt, pred, tolerance_px=1) == {0: 0.0}  # 2 px away: missed
    # within 2 px it is found (recall 1); an edge on ignored pixels is not judged for precision
    assert boundary_f1_per_class(gt, pred, tolerance_px=2) == {0: 1.0}
    assert boundary_f1(np.full((4, 4), 255), pred[:4, :4]) is None


def test_boundary_f1_on_voc_style_ignore_bands():
    """VOC outlines every object with a band of 255: a prediction whose edge lies in the band is right."""
    gt = np.zeros((30, 30), np.int64)
    gt[8:22, 8:22] = 255
    gt[10:20, 10:20] = 1
    pred = np.zeros((30, 30), np.int64)
    pred[9:21, 9:21] = 1  # the edge runs through the middle of the band
    assert boundary_f1_per_class(gt, pred, tolerance_px=2) == {0: 1.0, 1: 1.0}
    assert boundary_f1_per_class(gt, np.zeros_like(pred), tolerance_px=2)[1] == 0.0  # the object is missed


def test_boundary_f1_dataset_is_the_mean_of_image_means():
    a = np.zeros((10, 10), np.int64)
    a[:, 5:] = 1
    b = a.copy()
    b[:, 5] = 0  # both classes' boundaries move by 1 px
    c = np.full((10, 10), 2)  # class 2 everywhere in the prediction, never in the ground truth
    metric = BoundaryF1(tolerance_px=0)
    metric.update(a, a)  # image 1: classes 0, 1 -> 1.0
    metric.update(a, b)  # image 2: classes 0, 1 -> 0.0
    metric.update(a, c)  # image 3: classes 0, 1, 2 -> 0.0
    assert metric.compute() == pytest.approx(1 / 3)
    assert metric.per_class() == [pytest.approx(1 / 3), pytest.approx(1 / 3), 0.0]
    limited = BoundaryF1(num_classes=2, tolerance_px=0)
    limited.update(a, c)  # class 2 is beyond num_classes: dropped
    assert limited.per_class() == [0.0, 0.0] and limited.images == 1
    other = BoundaryF1(tolerance_px=0)
    other.update(a, a)
    other.merge(limited)
    assert other.compute() == pytest.approx(0.5) and other.images == 2


# ---------------------------------------------------------------- panoptic: hand-built cases

CATS = {1: {"name": "thing", "isthing": 1}, 2: {"name": "other", "isthing": 1}, 3: {"name": "stuff", "isthing": 0}}


def _segments(ids: np.ndarray, spec: dict[int, tuple[int, int]]) -> dict[int, dict]:
    return {sid: {"category_id": cat, "iscrowd": crowd, "area": int((ids == sid).sum())}
            for sid, (cat, crowd) in spec.items()}


def test_pq_hand_built_void_crowd_and_category_mismatch():
    gt = np.zeros((10, 10), np.int32)
    gt[:, :4] = 1  # thing A, 40 px
    gt[:, 4:8] = 2  # crowd of category 1, 40 px
    gt[:, 8:] = 0  # void, 20 px
    gt_segs = _segments(gt, {1: (1, 0), 2: (1, 1)})

    pred = np.zeros((10, 10), np.int32)
    pred[:, :4] = 10  # matches A exactly: TP, IoU 1
    pred[:, 4:8] = 11  # lies on the crowd region of its category: ignored, not FP
    pred[:, 8:] = 12  # lies in void: ignored, not FP
    pred_segs = {10: {"category_id": 1}, 11: {"category_id": 1}, 12: {"category_id": 2}}
    stat = pq_image(gt, gt_segs, pred, pred_segs, CATS)
    assert (stat.per_cat[1].tp, stat.per_cat[1].fp, stat.per_cat[1].fn) == (1, 0, 0)
    assert 2 not in stat.per_cat or stat.per_cat[2].fp == 0
    summary = pq_summary(stat, CATS)
    assert summary["pq"] == 1.0 and summary["n"] == 1 and summary["stuff"]["pq"] is None
    assert {r["id"]: r["pq"] for r in summary["per_class"]} == {1: 1.0, 2: None, 3: None}

    # A crowd region only protects predictions of its own category: category 2 on it is a false positive.
    stat = pq_image(gt, gt_segs, pred, {10: {"category_id": 1}, 11: {"category_id": 2}, 12: {"category_id": 2}}, CATS)
    assert stat.per_cat[2].fp == 1

    # Category mismatch: same pixels, wrong class -> one FN (gt) and one FP (pred).
    stat = pq_image(gt, gt_segs, pred, {10: {"category_id": 2}, 11: {"category_id": 1}, 12: {"category_id": 2}}, CATS)
    assert stat.per_cat[1].fn == 1 and stat.per_cat[2].fp == 1 and stat.per_cat[1].tp == 0
    summary = pq_summary(stat, CATS)  # category 1: 0 / (0 + 0.5), category 2: 0 / (0 + 0.5) -> PQ 0 over n = 2
    assert summary["pq"] == 0.0 and summary["n"] == 2 and summary["things"]["n"] == 2


def test_pq_iou_exactly_half_does_not_match_and_void_leaves_the_union():
    gt = np.zeros((1, 8), np.int32)
    gt[0, :4] = 1
    gt_segs = _segments(gt, {1: (1, 0)})
    pred = np.zeros((1, 8), np.int32)
    pred[0, 2:6] = 5  # overlaps 2 of A's 4 px; 2 px on void (gt 0): union = 4 + 4 - 2 - 2 = 4 -> IoU 0.5
    stat = pq_image(gt, gt_segs, pred, {5: {"category_id": 1}}, CATS)
    # not matched; and exactly half of it on void is not "more than half": a false positive
    assert stat.per_cat[1].tp == 0 and stat.per_cat[1].fn == 1 and stat.per_cat[1].fp == 1

    pred[0, 1] = 5  # now 3 px of overlap: union = 4 + 5 - 3 - 2 = 4 -> IoU 0.75, matched
    stat = pq_image(gt, gt_segs, pred, {5: {"category_id": 1}}, CATS)
    assert stat.per_cat[1].tp == 1 and stat.per_cat[1].iou == pytest.approx(0.75)
    summary = pq_summary(stat, CATS)
    assert (summary["pq"], summary["sq"], summary["rq"]) == (pytest.approx(0.75), pytest.approx(0.75), 1.0)


def test_pq_stuff_and_things_average_separately():
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3], [3, 3, 3, 3]], np.int32)
    gt_segs = _segments(gt, {1: (1, 0), 2: (2, 0), 3: (3, 0)})
    pred = np.array([[7, 7, 7, 8], [7, 7, 7, 8], [9, 9, 9, 9], [9, 9, 9, 9]], np.int32)
    pred_segs = {7: {"category_id": 1}, 8: {"category_id": 2}, 9: {"category_id": 3}}
    summary = pq_summary(pq_image(gt, gt_segs, pred, pred_segs, CATS), CATS)
    # cat 1: IoU 4/6 -> TP; cat 2: IoU 2/4 = 0.5 -> FN + FP; cat 3: IoU 1
    assert summary["things"] == {"pq": pytest.approx((4 / 6 + 0) / 2), "sq": pytest.approx((4 / 6 + 0) / 2),
                                 "rq": pytest.approx(0.5), "n": 2}
    assert summary["stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert summary["pq"] == pytest.approx((4 / 6 + 0 + 1) / 3)


def test_pq_format_errors_name_the_segment():
    gt = np.ones((4, 4), np.int32)
    pred = np.full((4, 4), 9, np.int32)
    with pytest.raises(PanopticFormatError, match="x.png.*9"):
        pq_image(gt, _segments(gt, {1: (1, 0)}), pred, {}, CATS, image="x.png")
    with pytest.raises(PanopticFormatError, match=r"\[4\]"):
        pq_image(gt, _segments(gt, {1: (1, 0)}), pred, {9: {"category_id": 1}, 4: {"category_id": 1}}, CATS)
    with pytest.raises(PanopticFormatError, match="unknown category_id 77"):
        pq_image(gt, _segments(gt, {1: (1, 0)}), pred, {9: {"category_id": 77}}, CATS)
    with pytest.raises(PanopticFormatError, match=r"ground truth.*\[5\]"):
        pq_image(gt, {**_segments(gt, {1: (1, 0)}), 5: {"category_id": 1}}, pred, {9: {"category_id": 1}}, CATS)
    with pytest.raises(PanopticFormatError, match="4x3 px"):
        pq_image(gt, _segments(gt, {1: (1, 0)}), pred[:3], {9: {"category_id": 1}}, CATS)


# ---------------------------------------------------------------- panoptic: random cases vs the references

THINGS, STUFFS = (1, 2), (3, 4)
RANDOM_CATS = {c: {"name": f"c{c}", "isthing": int(c in THINGS)} for c in THINGS + STUFFS}


def _random_pair(rng, size=(24, 28), void=True, crowd=True, pred_void=True):
    """A ground-truth panoptic map and a perturbed prediction (things jittered, relabelled, dropped, invented)."""
    h, w = size
    gt, pred = np.zeros(size, np.int32), np.zeros(size, np.int32)
    gt_segs, pred_segs = {}, {}
    split = int(rng.integers(h // 3, 2 * h // 3))
    gt[:split], gt[split:] = 1, 2  # two stuff segments
    gt_segs.update({1: {"category_id": 3, "iscrowd": 0}, 2: {"category_id": 4, "iscrowd": 0}})
    shift = int(rng.integers(-3, 4))
    pred[: split + shift], pred[split + shift :] = 1, 2
    swapped = rng.random() < 0.3  # stuff predicted as the other stuff class (still one segment per category)
    pred_segs.update({1: {"category_id": 4 if swapped else 3}, 2: {"category_id": 3 if swapped else 4}})
    crowded = set()
    for k in range(3, 3 + int(rng.integers(2, 7))):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        hh, ww = int(rng.integers(3, 10)), int(rng.integers(3, 10))
        category = int(rng.choice(THINGS))
        is_crowd = int(crowd and category not in crowded and rng.random() < 0.25)
        crowded |= {category} if is_crowd else set()
        gt[y : y + hh, x : x + ww] = k
        gt_segs[k] = {"category_id": category, "iscrowd": is_crowd}
        if rng.random() < 0.15:
            continue  # missed
        dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
        pred[max(0, y + dy) : y + dy + hh, max(0, x + dx) : x + dx + ww] = k
        pred_segs[k] = {"category_id": category if rng.random() < 0.8 else 3 - category}
    if rng.random() < 0.5:  # an invented object
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        pred[y : y + 5, x : x + 5] = 50
        pred_segs[50] = {"category_id": int(rng.choice(THINGS))}
    if void:
        y, x = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
        gt[y : y + int(rng.integers(2, 8)), x : x + int(rng.integers(2, 8))] = 0
    if pred_void:
        pred[rng.random(size) < 0.05] = 0
    gt_segs = {k: {**v, "area": int((gt == k).sum())} for k, v in gt_segs.items() if (gt == k).any()}
    pred_segs = {k: v for k, v in pred_segs.items() if (pred == k).any()}
    return gt, gt_segs, pred, pred_segs


def _reference_stats(gt, gt_segs, pred, pred_segs) -> dict[int, list]:
    """panopticapi's definition restated with one boolean mask per segment (slow, independent of pq_image)."""
    stats = {c: [0.0, 0, 0, 0] for c in RANDOM_CATS}  # iou sum, tp, fp, fn
    void = gt == 0
    matched_gt, matched_pred = set(), set()
    for g, g_info in gt_segs.items():
        for p, p_info in pred_segs.items():
            if g_info["iscrowd"] or g_info["category_id"] != p_info["category_id"]:
                continue
            g_mask, p_mask = gt == g, pred == p
            union = int((g_mask | p_mask).sum()) - int((p_mask & void).sum())
            iou = int((g_mask & p_mask).sum()) / union
            if iou > 0.5:
                stats[g_info["category_id"]][0] += iou
                stats[g_info["category_id"]][1] += 1
                matched_gt.add(g)
                matched_pred.add(p)
    for g, g_info in gt_segs.items():
        if g not in matched_gt and not g_info["iscrowd"]:
            stats[g_info["category_id"]][3] += 1
    for p, p_info in pred_segs.items():
        if p in matched_pred:
            continue
        crowd = np.isin(gt, [g for g, i in gt_segs.items()
                             if i["iscrowd"] and i["category_id"] == p_info["category_id"]])
        p_mask = pred == p
        if ((void | crowd) & p_mask).sum() / p_mask.sum() <= 0.5:
            stats[p_info["category_id"]][2] += 1
    return stats


def _reference_average(stats: dict[int, list], categories: list[int]) -> dict:
    scores = []
    for c in categories:
        iou, tp, fp, fn = stats[c]
        if tp + fp + fn:
            scores.append((iou / (tp + fp / 2 + fn / 2), iou / tp if tp else 0.0, tp / (tp + fp / 2 + fn / 2)))
    return dict(zip(("pq", "sq", "rq"), np.mean(scores, axis=0).tolist())) | {"n": len(scores)} if scores else None


def test_pq_equals_panopticapi_definition_on_random_cases_with_void_and_crowd():
    rng = np.random.default_rng(7)
    for _ in range(60):
        total, reference = PQStat(), {c: [0.0, 0, 0, 0] for c in RANDOM_CATS}
        for _image in range(3):
            gt, gt_segs, pred, pred_segs = _random_pair(rng)
            total.add(pq_image(gt, gt_segs, pred, pred_segs, RANDOM_CATS))
            for c, values in _reference_stats(gt, gt_segs, pred, pred_segs).items():
                reference[c] = [a + b for a, b in zip(reference[c], values)]
        for c, (iou, tp, fp, fn) in reference.items():
            ours = total.per_cat.get(c)
            assert (ours.tp, ours.fp, ours.fn) == (tp, fp, fn) if ours else tp + fp + fn == 0
            assert abs((ours.iou if ours else 0.0) - iou) < 1e-12
        summary = pq_summary(total, RANDOM_CATS)
        for part, categories in ((summary, list(RANDOM_CATS)), (summary["things"], THINGS), (summary["stuff"], STUFFS)):
            expected = _reference_average(reference, categories)
            assert expected is not None
            assert part["n"] == expected["n"]
            for key in ("pq", "sq", "rq"):
                assert abs(part[key] - expected[key]) < 1e-12


def _category_instance_map(ids: np.ndarray, segments: dict[int, dict]) -> np.ndarray:
    """torchmetrics' input: (category, instance) per pixel; void as category 0, which torchmetrics treats as void."""
    out = np.zeros(ids.shape + (2,), np.int64)
    for k, info in segments.items():
        out[ids == k, 0] = info["category_id"]
        out[ids == k, 1] = k if info["category_id"] in THINGS else 0
    return out


def test_pq_agrees_with_torchmetrics_without_crowd():
    """torchmetrics' PanopticQuality follows panopticapi except for void in the *prediction*.

    It also subtracts predicted-void pixels of a ground-truth segment from the union and does not
    count a ground-truth segment lying mostly on predicted void as a false negative; panopticapi
    does neither. So the cases here have void in the ground truth only, and no crowd (torchmetrics
    has no crowd). Stuff needs one segment per category and image in both, as in COCO panoptic.
    """
    from torchmetrics.detection import PanopticQuality as TorchmetricsPQ

    rng = np.random.default_rng(3)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torchmetrics divides integer areas in the default dtype
    try:
        for _ in range(10):
            batch = [_random_pair(rng, crowd=False, pred_void=False) for _ in range(4)]
            total = PQStat()
            for gt, gt_segs, pred, pred_segs in batch:
                total.add(pq_image(gt, gt_segs, pred, pred_segs, RANDOM_CATS))
            ours = pq_summary(total, RANDOM_CATS)
            preds = torch.tensor(np.stack([_category_instance_map(p, ps) for _, _, p, ps in batch]))
            target = torch.tensor(np.stack([_category_instance_map(g, gs) for g, gs, _, _ in batch]))
            averages = TorchmetricsPQ(things=set(THINGS), stuffs=set(STUFFS), return_sq_and_rq=True)(preds, target)
            per_class = TorchmetricsPQ(things=set(THINGS), stuffs=set(STUFFS), return_sq_and_rq=True,
                                       return_per_class=True)(preds, target)
            assert abs(ours["pq"] - float(averages[0])) < 1e-9
            assert abs(ours["sq"] - float(averages[1])) < 1e-9
            assert abs(ours["rq"] - float(averages[2])) < 1e-9
            # torchmetrics orders its classes things first, then stuffs, each sorted; absent ones are 0 there, None here
            for row, reference in zip(sorted(ours["per_class"], key=lambda r: (not r["isthing"], r["id"])), per_class):
                if row["pq"] is not None:
                    assert abs(row["pq"] - float(reference[0])) < 1e-9 and abs(row["sq"] - float(reference[1])) < 1e-9
    finally:
        torch.set_default_dtype(previous)


def test_in_memory_pq_with_segments_and_label_space(rng):
    space = LabelSpace(["a", "b", "sky", "grass"], isthing=[True, True, False, False], category_ids=[1, 2, 3, 4])
    pairs, total = [], PQStat()
    for _ in range(4):
        gt, gt_segs, pred, pred_segs = _random_pair(rng)
        total.add(pq_image(gt, gt_segs, pred, pred_segs, RANDOM_CATS))

        def as_segments(segs, gt_side):
            return [Segment(k, space.index_of_category(v["category_id"]), v.get("area", 0), (0, 0, 1, 1),
                            bool(v.get("iscrowd", 0)) and gt_side) for k, v in segs.items()]

        pairs.append(((gt, as_segments(gt_segs, True)), (pred, as_segments(pred_segs, False))))
    expected = pq_summary(total, RANDOM_CATS)
    ours = pq_from_arrays(pairs, space)
    assert ours["pq"] == pytest.approx(expected["pq"], abs=1e-12) and ours["things"] == expected["things"]
    halves = PanopticQuality(space), PanopticQuality(space)
    for i, ((g, gs), (p, ps)) in enumerate(pairs):
        halves[i % 2].update(g, gs, p, ps)
    halves[0].merge(halves[1])
    assert halves[0].compute()["pq"] == pytest.approx(expected["pq"], abs=1e-12)


# ---------------------------------------------------------------- instance


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def _random_coco(rng, n_images=3, size=48, with_boxes=False):
    images, annotations, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "width": size, "height": size, "file_name": f"img{image_id}.png"})
        for _ in range(int(rng.integers(1, 5))):
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size - 30, 2)
            mask[y : y + rng.integers(4, 30), x : x + rng.integers(4, 30)] = 1  # small and medium objects
            rle = _rle(mask)
            category = int(rng.integers(1, 3))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "segmentation": rle, "area": float(mask.sum()), "bbox": list(mask_utils.toBbox(rle)),
                                "iscrowd": int(rng.random() < 0.1)})
            for _ in range(int(rng.integers(0, 3))):
                jittered = np.roll(mask, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
                result = {"image_id": image_id, "category_id": category if rng.random() < 0.8 else 3 - category,
                          "segmentation": _rle(jittered), "score": float(rng.random())}
                if with_boxes:
                    result["bbox"] = [0.0, 0.0, float(size), float(size)]  # a box whose area is not the mask's
                results.append(result)
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _cocoeval(gt: dict, results: list[dict], category: int | None = None) -> COCOeval:
    gt, results = copy.deepcopy(gt), copy.deepcopy(results)
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    evaluator = COCOeval(coco, coco.loadRes(results), iouType="segm")
    if category is not None:
        evaluator.params.catIds = [category]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def test_mask_ap_is_cocoeval_on_random_cases():
    rng = np.random.default_rng(1)
    for _ in range(4):
        gt, results = _random_coco(rng)
        ours = coco_mask_ap(gt, results)
        json.dumps(ours)  # plain JSON types only
        reference = _cocoeval(gt, results)
        assert ours["stats"] == [float(s) for s in reference.stats]
        for key, value in zip(COCO_STATS, reference.stats):
            assert (ours[key] is None and value == -1) or abs(ours[key] - value) < 1e-12
        for row in ours["per_class"]:  # each category's AP: COCOeval restricted to that category
            alone = _cocoeval(gt, results, category=row["id"]).stats
            for key, index in (("ap", 0), ("ap50", 1), ("ap75", 2), ("ap_small", 3), ("ap_medium", 4), ("ap_large", 5)):
                assert (row[key] is None and alone[index] == -1) or abs(row[key] - alone[index]) < 1e-12


def test_mask_ap_uses_mask_areas_not_result_boxes():
    gt, results = _random_coco(np.random.default_rng(4), with_boxes=True)
    ours = coco_mask_ap(gt, results)
    without_boxes = _cocoeval(gt, [{k: v for k, v in r.items() if k != "bbox"} for r in results])
    assert ours["stats"] == [float(s) for s in without_boxes.stats]


def test_mask_ap_without_results_and_inputs_untouched(capsys):
    gt, results = _random_coco(np.random.default_rng(2))
    before_gt, before_results = copy.deepcopy(gt), copy.deepcopy(results)
    assert coco_mask_ap(gt, results)["ap"] is not None
    assert gt == before_gt and results == before_results  # COCOeval would write RLEs and ignore flags into them
    assert capsys.readouterr().out == ""  # pycocotools' printing stays off stdout
    empty = coco_mask_ap(gt, [])
    assert empty["ap"] == 0.0 and empty["ar100"] == 0.0 and empty["ap_large"] is None  # no large ground truth
    assert [row["ap"] for row in empty["per_class"]] == [0.0, 0.0]


def test_mask_ap_keeps_every_object_of_dense_images():
    """COCOeval keeps 100 detections an image; an image of 150 perfectly found objects still scores AP 1."""
    from segcli.metrics.instance import dense_max_dets

    masks = [np.zeros((60, 100), np.uint8) for _ in range(150)]
    for k, mask in enumerate(masks):
        y, x = divmod(k, 15)
        mask[y * 6 : y * 6 + 4, x * 6 : x * 6 + 4] = 1
    gt = {"images": [{"id": 1, "height": 60, "width": 100}], "categories": [{"id": 1, "name": "nucleus"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16,
                           "bbox": [0, 0, 4, 4], "segmentation": _rle(m)} for k, m in enumerate(masks)]}
    results = [{"image_id": 1, "category_id": 1, "score": 1 - k / 1000, "segmentation": _rle(m)}
               for k, m in enumerate(masks)]
    assert dense_max_dets(gt) == 150
    dense = coco_mask_ap(gt, results)
    assert dense["max_dets"] == 150 and dense["ap"] == pytest.approx(1.0) and dense["ap50"] == pytest.approx(1.0)
    capped = coco_mask_ap(gt, results, max_dets=100)  # COCO's own setting: recall stops at 100 of 150
    assert capped["ap50"] < 0.7 and capped["ar100"] == pytest.approx(100 / 150, abs=0.01)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode()}
def test_per_image_ap_is_cocoeval_on_that_image_alone():
    from segcli.metrics import ScoreDetails

    rng = np.random.default_rng(5)
    gt, results = _random_coco(rng, n_images=4)
    details = ScoreDetails()
    coco_mask_ap(gt, results, details=details)
    assert details.images == ["img1", "img2", "img3", "img4"]
    for image, ours in zip(gt["images"], details.per_image):
        alone = {**gt, "images": [image], "annotations": [a for a in gt["annotations"] if a["image_id"] == image["id"]]}
        mine = [r for r in results if r["image_id"] == image["id"]]
        reference = _cocoeval(alone, mine).stats[0] if mine else 0.0
        assert ours == pytest.approx(reference, abs=1e-12) if reference >= 0 else ours in (0.0, None)


def test_object_confusion_counts_class_swaps_misses_and_extras():
    from segcli.metrics import ScoreDetails

    square = np.zeros((32, 32), np.uint8)
    square[2:12, 2:12] = 1
    other = np.zeros((32, 32), np.uint8)
    other[20:30, 20:30] = 1
    far = np.zeros((32, 32), np.uint8)
    far[2:8, 22:30] = 1
    gt = {"images": [{"id": 1, "width": 32, "height": 32, "file_name": "a.png"}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rle(square), "area": 100.0,
                           "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 2, "segmentation": _rle(other), "area": 100.0,
                           "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 2, "segmentation": _rle(square), "score": 0.9},  # a seen as b
               {"image_id": 1, "category_id": 1, "segmentation": _rle(far), "score": 0.8},  # nothing there
               {"image_id": 1, "category_id": 1, "segmentation": _rle(other), "score": 0.1}]  # below 0.25: left out
    details = ScoreDetails()
    coco_mask_ap(gt, results, details=details)
    assert details.confusion.tolist() == [[0, 1, 0],   # a: detected as b
                                          [0, 0, 1],   # b: missed
                                          [1, 0, 0]]   # one false detection of a
