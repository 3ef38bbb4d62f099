"""Semantic segmentation: one confusion matrix over a whole dataset (mIoU, pixel accuracy, Dice).

The matrix is filled with one `np.bincount` per image (torchvision references' `ConfusionMatrix` does
the same). Pixels whose ground truth is `ignore_index` are skipped; a predicted label outside 0..C-1
(255 included) is simply wrong. A class absent from both ground truth and prediction is left out of
the means (reported as None); a class predicted but absent from the ground truth gets IoU 0 and counts.
"""

from __future__ import annotations

import numpy as np

from segcli.structures import IGNORE_INDEX


class ConfusionMatrix:
    """Rows are ground-truth classes, columns predicted classes plus one column for predictions outside 0..C-1."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, gt, pred) -> None:
        """Count one image (numpy arrays or tensors of class indices, same shape)."""
        gt, pred = as_numpy(gt), as_numpy(pred)
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth is {gt.shape}, prediction {pred.shape}")
        keep = gt != self.ignore_index
        gt, pred = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_classes):
            bad = int(gt.max()) if gt.max() >= self.num_classes else int(gt.min())
            raise ValueError(f"ground-truth class {bad} is outside 0..{self.num_classes - 1}")
        pred[(pred < 0) | (pred >= self.num_classes)] = self.num_classes  # wrong, whatever it is
        width = self.num_classes + 1
        counts = np.bincount(gt * width + pred, minlength=self.num_classes * width)
        self.matrix += counts.reshape(self.num_classes, width)

    def add_counts(self, counts: np.ndarray) -> None:
        """Add a (G, P) matrix of pixel counts (row: ground-truth label, column: predicted label),
        e.g. `label_counts`'s."""
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


def as_numpy(array) -> np.ndarray:
    """A label map as numpy, whether it came as an array or a tensor."""
    if hasattr(array, "detach"):
        return array.detach().cpu().numpy()
    return np.asarray(array)
