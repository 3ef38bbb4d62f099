"""Training losses of the dense heads: cross-entropy (plain, or with per-pixel weights) and soft Dice.

Every model's `compute_losses` returns a dict of these; the trainer minimises the sum of its values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcli.structures import IGNORE_INDEX


def dense_losses(logits: torch.Tensor, target: torch.Tensor, *, name: str, class_weights: torch.Tensor | None = None,
                 pixel_weight: torch.Tensor | float | None = None, dice_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Cross-entropy of (B, C, H, W) logits against (B, H, W) class indices under `name`, plus "dice" (times
    dice_weight, the trainer's --dice) when dice_weight > 0. Without pixel_weight it is torch's mean (class
    weights normalise by their sum); with it, weighted_cross_entropy."""
    if pixel_weight is None:
        weight = class_weights.to(logits.device) if class_weights is not None else None
        losses = {name: F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)}
    else:
        losses = {name: weighted_cross_entropy(logits, target, pixel_weight, class_weights)}
    if dice_weight > 0:
        losses["dice"] = dice_weight * dice_loss(logits, target)
    return losses


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | float,
                           class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy (optionally class-weighted) times per-pixel weights, averaged over the
    non-ignored pixels (zero, not NaN, when every pixel is ignored)."""
    if class_weights is not None:
        class_weights = class_weights.to(logits.device)
    loss = F.cross_entropy(logits, target, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).float()
    return (loss * weight * valid).sum() / valid.sum().clamp(min=1.0)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Soft multi-class Dice loss averaged over classes, ignoring `ignore_index` pixels."""
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0)).mean()
