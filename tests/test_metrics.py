"""Metrics against hand counts and the reference implementations (pycocotools, panopticapi's definition, torchmetrics)."""

from __future__ import annotations

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
    boundary_f1_per_class,
    coco_mask_ap,
    pq_image,
    pq_summary,
)

# ---------------------------------------------------------------- semantic


def test_confusion_matrix_conventions():
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
    pred = np.array([[0, 2, 1, 0], [0, 1, 1, 7]])  # 2 is predicted but absent from gt; 7 is out of range
    cm = ConfusionMatrix(num_classes=4)
    cm.update(gt, pred)
    result = cm.compute(class_names=["a", "b", "c", "d"])
    per = {row["name"]: row for row in result["per_class"]}
    # class 0: gt 3 px, pred 3 px (the 0 at (0,3) is wrong), tp 2 -> IoU 2/4
    assert per["a"]["iou"] == pytest.approx(2 / 4) and per["a"]["dice"] == pytest.approx(4 / 6)
    # class 1: gt 4, pred 2 valid (the pred 1 on the ignored pixel does not count), tp 2 -> 2/4
    assert per["b"]["iou"] == pytest.approx(2 / 4)
    assert per["c"]["iou"] == 0.0  # predicted, never in the ground truth: IoU 0, counted in the mean
    assert per["d"]["iou"] is None and per["d"]["dice"] is None  # absent from both: left out
    assert result["miou"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert result["pixel_accuracy"] == pytest.approx(4 / 7)


def test_one_matrix_for_the_dataset_not_a_mean_of_images():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
    cm.update(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]))
    # pooled: class 0 tp 3 / union 4, class 1 tp 4 / union 5
    assert cm.compute()["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_boundary_f1_perfect_shifted_and_tolerance():
    gt = np.zeros((50, 50), np.int64)
    gt[10:40, 10:40] = 1
    assert boundary_f1_per_class(gt, gt, 2, tolerance_px=0)[1] == 1.0
    shifted = np.roll(gt, 3, axis=1)
    assert boundary_f1_per_class(gt, shifted, 2, tolerance_px=3)[1] == 1.0
    assert boundary_f1_per_class(gt, shifted, 2, tolerance_px=1)[1] < 0.7
    metric = BoundaryF1(2, tolerance_px=1)
    metric.update(gt, gt)
    metric.update(gt, shifted)
    assert 0.5 < metric.compute() < 1.0


# ---------------------------------------------------------------- panoptic

CATS = {1: {"name": "thing", "isthing": 1}, 2: {"name": "other", "isthing": 1}, 3: {"name": "stuff", "isthing": 0}}


def _segments(ids: np.ndarray, spec: dict[int, tuple[int, int]]) -> dict[int, dict]:
    return {sid: {"category_id": cat, "iscrowd": crowd, "area": int((ids == sid).sum())} for sid, (cat, crowd) in spec.items()}


def test_pq_hand_built_void_crowd_category_and_boundary():
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
    assert pq_summary(stat, CATS)["pq"] == 1.0

    # Category mismatch: same pixels, wrong class -> one FN (gt) and one FP (pred).
    stat = pq_image(gt, gt_segs, pred, {10: {"category_id": 2}, 11: {"category_id": 1}, 12: {"category_id": 2}}, CATS)
    assert stat.per_cat[1].fn == 1 and stat.per_cat[2].fp == 1 and stat.per_cat[1].tp == 0


def test_pq_iou_exactly_half_does_not_match_and_void_leaves_the_union():
    gt = np.zeros((1, 8), np.int32)
    gt[0, :4] = 1
    gt_segs = _segments(gt, {1: (1, 0), 0: (3, 0)})
    gt_segs.pop(0)
    pred = np.zeros((1, 8), np.int32)
    pred[0, 2:6] = 5  # overlaps 2 of A's 4 px; 2 px on void (gt 0): union = 4 + 4 - 2 - 2 = 4 -> IoU 0.5
    stat = pq_image(gt, gt_segs, pred, {5: {"category_id": 1}}, CATS)
    assert stat.per_cat[1].tp == 0 and stat.per_cat[1].fn == 1 and stat.per_cat[1].fp == 1

    pred[0, 1] = 5  # now 3 px of overlap: union = 4 + 5 - 3 - 2 = 4 -> IoU 0.75, matched
    stat = pq_image(gt, gt_segs, pred, {5: {"category_id": 1}}, CATS)
    assert stat.per_cat[1].tp == 1 and stat.per_cat[1].iou == pytest.approx(0.75)


def test_pq_format_errors_name_the_segment():
    gt = np.ones((4, 4), np.int32)
    pred = np.full((4, 4), 9, np.int32)
    with pytest.raises(PanopticFormatError, match="9"):
        pq_image(gt, _segments(gt, {1: (1, 0)}), pred, {}, CATS, image="x.png")
    with pytest.raises(PanopticFormatError, match=r"\[4\]"):
        pq_image(gt, _segments(gt, {1: (1, 0)}), pred, {9: {"category_id": 1}, 4: {"category_id": 1}}, CATS)


def _random_panoptic(rng, h=24, w=24):
    cat = np.full((h, w), 3)
    inst = np.zeros((h, w), int)
    for k in range(int(rng.integers(1, 5))):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        hh, ww = rng.integers(3, 12, 2)
        cat[y : y + hh, x : x + ww] = rng.integers(1, 3)
        inst[y : y + hh, x : x + ww] = k + 1
    inst[cat == 3] = 0
    return cat, inst


def _to_segments(cat, inst):
    ids = np.zeros(cat.shape, np.int32)
    segs = {}
    for number, (c, i) in enumerate(sorted(set(zip(cat.ravel().tolist(), inst.ravel().tolist()))), start=1):
        ids[(cat == c) & (inst == i)] = number
        segs[number] = {"category_id": c, "iscrowd": 0, "area": int(((cat == c) & (inst == i)).sum())}
    return ids, segs


def test_pq_agrees_with_torchmetrics_without_crowd():
    from torchmetrics.detection import PanopticQuality

    rng = np.random.default_rng(0)
    for _ in range(25):
        (gc, gi), (pc, pi) = _random_panoptic(rng), _random_panoptic(rng)
        gt_ids, gt_segs = _to_segments(gc, gi)
        pred_ids, pred_segs = _to_segments(pc, pi)
        ours = pq_summary(pq_image(gt_ids, gt_segs, pred_ids, pred_segs, CATS), CATS)["pq"]
        # torchmetrics divides integer areas, which gives the default dtype: make it float64 for the comparison.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            reference = PanopticQuality(things={1, 2}, stuffs={3}).set_dtype(torch.float64)
            expected = float(reference(torch.tensor(np.stack([pc, pi], -1))[None], torch.tensor(np.stack([gc, gi], -1))[None]))
        finally:
            torch.set_default_dtype(previous)
        assert abs(ours - expected) < 1e-9


# ---------------------------------------------------------------- instance


def _random_coco(rng, n_images=3, size=32):
    images, annotations, results = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "width": size, "height": size, "file_name": f"img{image_id}.png"})
        for _ in range(int(rng.integers(1, 4))):
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size - 8, 2)
            mask[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12)] = 1
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            category = int(rng.integers(1, 3))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "segmentation": rle, "area": float(mask.sum()), "bbox": list(mask_utils.toBbox(rle)),
                                "iscrowd": 0})
            jittered = np.roll(mask, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
            prle = mask_utils.encode(np.asfortranarray(jittered))
            prle["counts"] = prle["counts"].decode()
            results.append({"image_id": image_id, "category_id": category if rng.random() < 0.8 else 3 - category,
                            "segmentation": prle, "score": float(rng.random())})
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def test_mask_ap_is_cocoeval():
    rng = np.random.default_rng(1)
    for _ in range(3):
        gt, results = _random_coco(rng)
        ours = coco_mask_ap(gt, results)
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        for key, value in zip(COCO_STATS, evaluator.stats):
            assert (ours[key] is None and value == -1) or abs(ours[key] - value) < 1e-12


def test_mask_ap_keeps_stdout_clean(capsys):
    gt, results = _random_coco(np.random.default_rng(2))
    coco_mask_ap(gt, results)
    assert capsys.readouterr().out == ""
