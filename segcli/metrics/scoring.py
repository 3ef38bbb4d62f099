"""Scoring predictions against samples in memory: training validation, compare and `eval --data`.

`score_predictions(pairs, mode, label_space)` gives the metrics of one mode for (Sample, Prediction)
pairs, and `PRIMARY_METRIC[mode]` the one that picks the best checkpoint.
"""

from __future__ import annotations

from segcli.errors import DataError
from segcli.metrics.boundary import BoundaryF1
from segcli.metrics.instance import coco_mask_ap
from segcli.metrics.panoptic import PanopticQuality
from segcli.metrics.semantic import ConfusionMatrix
from segcli.structures import IGNORE_INDEX, Mode, Prediction, Sample, coco_result, mask_to_rle

PRIMARY_METRIC = {Mode.SEMANTIC: "miou", Mode.INSTANCE: "ap", Mode.PANOPTIC: "pq"}


def semantic_result(matrix: ConfusionMatrix, boundary: BoundaryF1, names: list[str] | None) -> dict:
    result = matrix.compute(names)
    for row, score in zip(result["per_class"], boundary.per_class(matrix.num_classes)):
        row["boundary_f1"] = score
    return {**result, "boundary_f1": boundary.compute()}


def score_semantic(pairs, num_classes: int, names: list[str] | None = None, ignore_index: int = IGNORE_INDEX,
                   boundary_px: float | None = None) -> dict:
    """In-memory semantic scores for (ground truth, prediction) class maps; training and compare use it too."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    boundary = BoundaryF1(num_classes, boundary_px, ignore_index)
    for number, (gt, pred) in enumerate(pairs):
        try:
            matrix.update(gt, pred)
        except ValueError as error:
            raise DataError(f"image {number}: {error}") from None
        boundary.update(gt, pred)
    return semantic_result(matrix, boundary, names)


def score_panoptic(pairs: list[tuple[Sample, Prediction]], label_space) -> dict:
    """In-memory PQ for training validation and `eval --data`: ground-truth samples vs predictions."""
    metric = PanopticQuality(label_space)
    for sample, prediction in pairs:
        metric.update(sample.panoptic, sample.segments, prediction.panoptic, prediction.segments, image=sample.name)
    return metric.compute()


def score_instances_in_memory(pairs: list[tuple[Sample, Prediction]], label_space) -> dict:
    """COCO mask AP of in-memory predictions against in-memory ground truth."""
    images, annotations, results = [], [], []
    for image_id, (sample, prediction) in enumerate(pairs, start=1):
        h, w = sample.image.shape[:2]
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{sample.name}.png"})
        for inst in sample.instances:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": int(inst.iscrowd),
                                "category_id": label_space.category_ids[inst.label], "area": float(inst.area),
                                "bbox": list(inst.bbox), "segmentation": mask_to_rle(inst.mask)})
        results.extend(coco_result(inst, image_id, label_space) for inst in prediction.instances)
    gt = {"images": images, "annotations": annotations, "categories": label_space.coco_categories()}
    return coco_mask_ap(gt, results)


def score_predictions(pairs: list[tuple[Sample, Prediction]], mode: str, label_space, boundary_px: float | None = None) -> dict:
    """The metrics of `mode` for (ground truth, prediction) pairs: training validation, compare, eval --data."""
    if mode == "semantic":
        return score_semantic([(s.semantic, p.semantic) for s, p in pairs], label_space.num_classes, label_space.names,
                              boundary_px=boundary_px)
    if mode == "panoptic":
        return score_panoptic(pairs, label_space)
    result = score_instances_in_memory(pairs, label_space)
    result["per_class"] = []
    return result
