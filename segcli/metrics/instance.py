"""Instance segmentation: mask AP exactly as pycocotools' COCOeval (iouType="segm") computes it."""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from segcli.metrics.details import ScoreDetails

COCO_STATS = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]
_AREAS = {"ap": 0, "ap_small": 1, "ap_medium": 2, "ap_large": 3}  # COCOeval's areaRng order
COCO_MAX_DETS = 100  # COCOeval's detections kept per image for AP (its maxDets [1, 10, 100])


def dense_max_dets(gt: dict) -> int:
    """COCOeval's 100 detections per image, or the most ground-truth objects one image holds when that is more.

    COCO images hold at most about 90 objects, so there this is COCO's own setting. A histology tile holds hundreds
    of nuclei: keeping 100 detections caps recall at 100 / N (MoNuSeg's 390 nuclei a tile: AP50 at most ~0.26
    however good the model), so the limit grows to the largest count, as LVIS raised it to 300.
    """
    counts: dict = {}
    for annotation in gt.get("annotations", []):
        if not annotation.get("iscrowd", 0):
            counts[annotation["image_id"]] = counts.get(annotation["image_id"], 0) + 1
    return max(COCO_MAX_DETS, *counts.values()) if counts else COCO_MAX_DETS


def coco_mask_ap(gt: dict, results: list[dict], max_dets: int | None = None,
                 details: ScoreDetails | None = None) -> dict:
    """COCOeval(iouType="segm") of a results list against a ground-truth dict.

    Returns the 12 stats by name (-1, COCOeval's "no ground truth in this area range", as None),
    the raw `stats`, `max_dets` (COCOeval's maxDets [1, 10, max_dets]: AP, ar100 and the area stats use the last;
    None: `dense_max_dets`), and `per_class` AP rows read from the same evaluation's precision array (as
    detectron2 does). Neither argument is modified. Result boxes are dropped first, as detectron2
    does: given a box, COCOeval would take the box's area as the mask's for small/medium/large.
    With `details`, also each image's AP, the object confusion matrix and the evaluator itself.
    """
    max_dets = dense_max_dets(gt) if max_dets is None else max_dets
    evaluator = coco_evaluate(gt, results, max_dets)
    stats = [float(s) for s in evaluator.stats]
    # summarize() takes stats[0] (AP) at 100 detections whatever maxDets says (-1 when 100 is not among them); the
    # others at maxDets[2]. The same mean at the last maxDets: equal to COCOeval's own at max_dets 100.
    overall = _mean_defined(evaluator.eval["precision"][:, :, :, 0, -1])
    stats[0] = -1.0 if overall is None else overall
    scores = {key: (None if value < 0 else value) for key, value in zip(COCO_STATS, stats)}
    if details is not None:
        details.coco = evaluator
        details.images = [_image_name(evaluator.cocoGt.imgs[i], i) for i in evaluator.params.imgIds]
        details.per_image = per_image_ap(evaluator)
        details.confusion = object_confusion(evaluator)
    return scores | {"stats": stats, "max_dets": max_dets, "per_class": _per_class_ap(evaluator, gt["categories"])}


def _image_name(image: dict, image_id) -> str:
    return image["file_name"].rsplit("/", 1)[-1].rsplit(".", 1)[0] if image.get("file_name") else str(image_id)


def coco_evaluate(gt: dict, results: list[dict], max_dets: int):
    """The evaluated, accumulated and summarised COCOeval of `results` against `gt` (copies of both), keeping
    up to `max_dets` detections per image."""
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
            coco_dt.dataset = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def per_image_ap(evaluator) -> list[float | None]:
    """Each image's mask AP (IoU 0.50:0.95, all areas, 100 detections), in params.imgIds order, from the
    evaluation already run: COCOeval.accumulate over that image's evalImgs alone (accumulate(p) with fewer
    imgIds would read the wrong entries). An image without ground truth scores 0 if it has detections
    (every one is false) and None if it has none."""
    full_evals, full_params, params = evaluator.evalImgs, evaluator._paramsEval, evaluator.params
    images, areas = len(full_params.imgIds), len(full_params.areaRng)
    categories = len(full_params.catIds) if full_params.useCats else 1
    saved = evaluator.eval
    scores = []
    try:
        with contextlib.redirect_stdout(_Silent()):
            for i, image_id in enumerate(full_params.imgIds):
                evaluator.evalImgs = [full_evals[(k * areas + a) * images + i]
                                      for k in range(categories) for a in range(areas)]
                evaluator._paramsEval = copy.copy(full_params)
                evaluator._paramsEval.imgIds = [image_id]
                one = copy.copy(params)
                one.imgIds = [image_id]
                evaluator.accumulate(one)
                precision = evaluator.eval["precision"][:, :, :, 0, -1]
                defined = precision[precision > -1]
                if defined.size:
                    scores.append(float(defined.mean()))
                else:
                    scores.append(0.0 if evaluator.cocoDt.getAnnIds(imgIds=[image_id]) else None)
    finally:
        evaluator.evalImgs, evaluator._paramsEval, evaluator.eval = full_evals, full_params, saved
    return scores


CONFUSION_IOU = 0.5  # an object and a detection are the same thing at this mask IoU (whatever their classes)
CONFUSION_SCORE = 0.25  # detections below this confidence are left out of the confusion matrix (Ultralytics' default)


def object_confusion(evaluator) -> np.ndarray:
    """(K + 1, K + 1) object counts: rows ground-truth categories, columns detected ones (params.catIds order), the
    last row and column "background": a detection matching no object (extra) and an object no detection matched
    (missed). Matching ignores classes, greedily by IoU >= CONFUSION_IOU, as Ultralytics' ConfusionMatrix does."""
    from pycocotools import mask as mask_utils

    index = {int(c): k for k, c in enumerate(evaluator.params.catIds)}
    size = len(index) + 1
    counts = np.zeros((size, size), np.int64)
    gt_coco, dt_coco = evaluator.cocoGt, evaluator.cocoDt
    for image_id in evaluator.params.imgIds:
        gts = [a for a in gt_coco.loadAnns(gt_coco.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd")]
        dts = [a for a in dt_coco.loadAnns(dt_coco.getAnnIds(imgIds=[image_id]))
               if a.get("score", 1) >= CONFUSION_SCORE]
        ious = None
        if gts and dts:  # (detections, objects)
            ious = np.asarray(mask_utils.iou([dt_coco.annToRLE(d) for d in dts], [gt_coco.annToRLE(g) for g in gts],
                                             [0] * len(gts)))
        matched_gt, matched_dt = set(), set()
        if ious is not None:
            for flat in np.argsort(-ious, axis=None):
                d, g = np.unravel_index(flat, ious.shape)
                if ious[d, g] < CONFUSION_IOU:
                    break
                if d in matched_dt or g in matched_gt:
                    continue
                matched_dt.add(d)
                matched_gt.add(g)
                counts[index[gts[g]["category_id"]], index[dts[d]["category_id"]]] += 1
        for g, ann in enumerate(gts):
            if g not in matched_gt:
                counts[index[ann["category_id"]], -1] += 1
        for d, ann in enumerate(dts):
            if d not in matched_dt:
                counts[-1, index[ann["category_id"]]] += 1
    return counts


def _per_class_ap(evaluator, categories: list[dict]) -> list[dict]:
    """AP, AP50, AP75 and AP by area of each category from COCOeval's precision[T, R, K, A, M] (the last maxDets)."""
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
