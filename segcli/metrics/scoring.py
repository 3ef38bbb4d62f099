"""Scoring predictions against samples in memory: training validation, compare and `eval --data`.

`score_predictions(pairs, mode, label_space)` gives the metrics of one mode for (Sample, Prediction)
pairs, and `PRIMARY_METRIC[mode]` the one that picks the best checkpoint.
"""

from __future__ import annotations

from segcli.errors import DataError
from segcli.metrics.boundary import BoundaryF1
from segcli.metrics.details import ScoreDetails
from segcli.metrics.instance import coco_mask_ap
from segcli.metrics.panoptic import PanopticQuality, segment_class_map
from segcli.metrics.semantic import ConfusionMatrix
from segcli.structures import IGNORE_INDEX, Mode, Prediction, Sample, coco_result, mask_to_rle

PRIMARY_METRIC = {Mode.SEMANTIC: "miou", Mode.INSTANCE: "ap", Mode.PANOPTIC: "pq"}


def semantic_result(matrix: ConfusionMatrix, boundary: BoundaryF1, names: list[str] | None) -> dict:
    result = matrix.compute(names)
    for row, score in zip(result["per_class"], boundary.per_class(matrix.num_classes)):
        row["boundary_f1"] = score
    return {**result, "boundary_f1": boundary.compute()}


def score_semantic(pairs, num_classes: int, names: list[str] | None = None, ignore_index: int = IGNORE_INDEX,
                   boundary_px: float | None = None, details: ScoreDetails | None = None) -> dict:
    """In-memory semantic scores for (ground truth, prediction) class maps; training and compare use it too.
    With `details`: each image's mIoU (over the classes in its ground truth or prediction) and the matrix."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    boundary = BoundaryF1(num_classes, boundary_px, ignore_index)
    for number, (gt, pred) in enumerate(pairs):
        counted = matrix if details is None else ConfusionMatrix(num_classes, ignore_index)
        try:
            counted.update(gt, pred)
        except ValueError as error:
            raise DataError(f"image {number}: {error}") from None
        if details is not None:
            matrix.merge(counted)
            details.per_image.append(image_miou(counted))
        boundary.update(gt, pred)
    if details is not None:
        details.confusion = matrix.matrix
    return semantic_result(matrix, boundary, names)


def image_miou(matrix: ConfusionMatrix) -> float | None:
    """One image's mIoU from its own matrix (None when it has no labelled pixel)."""
    return matrix.compute()["miou"] if matrix.matrix.any() else None


def score_panoptic(pairs: list[tuple[Sample, Prediction]], label_space, details: ScoreDetails | None = None) -> dict:
    """In-memory PQ for training validation and `eval --data`: ground-truth samples vs predictions.
    With `details`: each image's PQ and the pixel confusion of the segments' classes (void: no class)."""
    metric = PanopticQuality(label_space)
    matrix = ConfusionMatrix(label_space.num_classes)
    for sample, prediction in pairs:
        stat = metric.update(sample.panoptic, sample.segments, prediction.panoptic, prediction.segments,
                             image=sample.name)
        if details is not None:
            details.per_image.append(stat.average(metric.categories)[0]["pq"])
            matrix.update(segment_class_map(sample.panoptic, {s.id: s.label for s in sample.segments}),
                          segment_class_map(prediction.panoptic, {s.id: s.label for s in prediction.segments}))
    if details is not None:
        details.confusion = matrix.matrix
    return metric.compute()


def score_instances_in_memory(pairs: list[tuple[Sample, Prediction]], label_space,
                              details: ScoreDetails | None = None) -> dict:
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
    return coco_mask_ap(gt, results, details=details)


def score_predictions(pairs: list[tuple[Sample, Prediction]], mode: str, label_space, boundary_px: float | None = None,
                      details: ScoreDetails | None = None) -> dict:
    """The metrics of `mode` for (ground truth, prediction) pairs: training validation, compare, eval --data.
    `details` (for a report) receives each image's score by the mode's primary metric and a confusion matrix."""
    if details is not None:
        details.images = [sample.name for sample, _ in pairs]
    if mode == "semantic":
        return score_semantic([(s.semantic, p.semantic) for s, p in pairs], label_space.num_classes, label_space.names,
                              boundary_px=boundary_px, details=details)
    if mode == "panoptic":
        return score_panoptic(pairs, label_space, details)
    return score_instances_in_memory(pairs, label_space, details)
