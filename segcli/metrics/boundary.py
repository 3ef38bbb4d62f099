"""Boundary F1 (Csurka et al., BMVC 2013): how well predicted class outlines follow the true ones.

Per image and class: precision and recall of boundary pixels within a tolerance (default 2% of the
image diagonal); an image's score is the mean over the classes present in its ground truth or
prediction; a dataset's is the mean over images.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from segcli.metrics.semantic import as_numpy
from segcli.structures import IGNORE_INDEX


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
    gt, pred = as_numpy(gt), as_numpy(pred)
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
