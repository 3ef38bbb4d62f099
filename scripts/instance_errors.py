"""Where an instance model loses: every ground-truth object and every predicted one, sorted into kinds of error.

    python scripts/instance_errors.py DATA --weights RUN/best.safetensors [--split val] [--json FILE]

Matching is PQ's (IoU > 0.5 is a true positive). Each unmatched ground-truth object is then
- merged: one prediction covers at least half of it and at least half of another ground-truth object too,
- missed: the predictions together cover less than half of it (a foreground error),
- badly outlined: otherwise (covered, but no single prediction reaches IoU 0.5: split or sloppy edges);
and each unmatched prediction is
- merged: it covers at least half of two or more ground-truth objects,
- a fragment: at least half of it lies on one ground-truth object that another prediction also covers (a split),
- spurious: less than half of it lies on any ground-truth object (a false foreground),
- badly outlined: otherwise.
With the counts comes the PQ the model would have without each kind of error (those objects left out of the
count on both sides), which says which part of the pipeline (foreground, separation of touching objects,
outlines) to fix first.
Used for docs/training.md's nuclei analysis.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from segcli.checkpoint import load_checkpoint
from segcli.data import load_dataset
from segcli.inference import DEFAULT_TILE, InferenceOptions, predict_arrays
from segcli.structures import Mode


def _ids(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    ids = np.zeros(shape, np.int32)
    for i, mask in enumerate(masks, start=1):
        ids[mask & (ids == 0)] = i
    return ids


def classify(gt_masks: list[np.ndarray], pred_masks: list[np.ndarray], shape: tuple[int, int]) -> tuple[Counter, float]:
    """Error counts of one image and the sum of matched IoUs."""
    gt, pred = _ids(gt_masks, shape), _ids(pred_masks, shape)
    n_gt, n_pred = len(gt_masks), len(pred_masks)
    joint = np.bincount(gt.ravel() * (n_pred + 1) + pred.ravel(), minlength=(n_gt + 1) * (n_pred + 1))
    overlap = joint.reshape(n_gt + 1, n_pred + 1)  # pixels of gt i (0: background) under prediction j (0: none)
    gt_area, pred_area = overlap.sum(1), overlap.sum(0)
    union = gt_area[:, None] + pred_area[None, :] - overlap
    iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)[1:, 1:]
    matched = iou > 0.5
    counts = Counter(tp=int(matched.sum()))
    for i in np.flatnonzero(~matched.any(1)):
        row = overlap[i + 1, 1:]
        covers = row >= 0.5 * gt_area[i + 1]
        merged = any(covers[j] and (overlap[1:, j + 1] >= 0.5 * gt_area[1:]).sum() >= 2 for j in range(n_pred))
        covered = row.sum() >= 0.5 * gt_area[i + 1]
        counts["fn_merged" if merged else "fn_outlined" if covered else "fn_missed"] += 1
    for j in np.flatnonzero(~matched.any(0)):
        column = overlap[1:, j + 1]
        if (column >= 0.5 * gt_area[1:]).sum() >= 2:
            counts["fp_merged"] += 1
            continue
        on_object = column.max(initial=0) >= 0.5 * pred_area[j + 1]
        owner = int(column.argmax()) if n_gt else -1
        shared = on_object and (overlap[owner + 1, 1:] > 0).sum() >= 2
        counts["fp_fragment" if shared else "fp_outlined" if on_object else "fp_spurious"] += 1
    return counts, float(iou[matched].sum())


def pq(counts: Counter, iou_sum: float, removed: tuple[str, ...] = ()) -> float:
    """PQ from the counts; errors of the `removed` kinds are left out (as if those objects were right)."""
    fn = sum(v for k, v in counts.items() if k.startswith("fn") and k not in removed)
    fp = sum(v for k, v in counts.items() if k.startswith("fp") and k not in removed)
    tp = counts["tp"]
    return iou_sum / (tp + 0.5 * fn + 0.5 * fp) if tp + fn + fp else 0.0


def analyse(data: Path, weights: Path, split: str) -> dict:
    net, card = load_checkpoint(weights)
    dataset = load_dataset(data, split=split)
    samples = [dataset[i] for i in range(len(dataset))]
    options = InferenceOptions(tile=DEFAULT_TILE, mode=Mode.INSTANCE)
    predictions = predict_arrays(net, card, [s.image for s in samples], options=options)
    total, iou_sum = Counter(), 0.0
    for sample, prediction in zip(samples, predictions):
        counts, ious = classify([i.mask for i in sample.instances], [i.mask for i in prediction.instances],
                                sample.image.shape[:2])
        total.update(counts)
        iou_sum += ious
    result = {"images": len(samples), "objects": total["tp"] + sum(v for k, v in total.items() if k.startswith("fn")),
              "counts": dict(total), "sq": iou_sum / max(total["tp"], 1), "pq": pq(total, iou_sum)}
    for kind in ("merged", "missed", "fragment", "spurious", "outlined"):
        result[f"pq_without_{kind}"] = pq(total, iou_sum, (f"fn_{kind}", f"fp_{kind}"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = analyse(args.data, args.weights, args.split)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
