"""The contract every zoo model follows, whatever its family.

    images: Tensor (B, 3, H, W) float32, normalised with the card's mean/std (`image_to_tensor`)
    targets: list of dicts, one per image (torchvision's detection convention):
        "semantic": (H, W) int64 class indices, 255 = ignore
        "masks":    (N, H, W) uint8/bool instance masks
        "labels":   (N,) int64 class indices of the instances
        "boxes":    (N, 4) float32 xyxy boxes of the instances

    model(images) -> dict[str, Tensor]           raw outputs; dense models return maps at
                                                 input resolution ("semantic": (B, C, H, W) logits)
    model.compute_losses(images, targets) -> dict[str, Tensor]
                                                 the trainer minimises sum(losses.values())
    model.postprocess(outputs, **thresholds) -> list[Prediction]
                                                 one typed result per image (segcli.structures)

`dense = True` means every output is a per-pixel map that can be tiled and blended
(predict's large-image path); Mask R-CNN-style models set it to False.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segcli.structures import IGNORE_INDEX, Mode, Prediction

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(
    image: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised; the one preprocessing step."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return x.sub_(m).div_(s)  # in place: a 10000 px photo is 1.2 GB as float32, once is enough


class SegModel(nn.Module, ABC):
    """Base of every zoo model: declares its modes and the three methods above."""

    modes: tuple[Mode, ...] = (Mode.SEMANTIC,)
    dense: bool = True

    @abstractmethod
    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Training losses by name; the trainer minimises their sum."""

    @abstractmethod
    def postprocess(self, outputs: dict[str, torch.Tensor], **kwargs) -> list[Prediction]:
        """Raw outputs of `forward` -> one `Prediction` per image."""


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


class SemanticModel(SegModel):
    """Family of models whose forward gives per-pixel class logits.

    Subclasses implement `logits(images) -> (B, C, H, W)` at input resolution.
    """

    modes = (Mode.SEMANTIC,)
    dense = True
    dice_weight: float = 0.0
    class_weights: torch.Tensor | None = None

    @abstractmethod
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H, W) class logits at input resolution."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"semantic": self.logits(images)}

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        logits = self(images)["semantic"]
        target = torch.stack([t["semantic"] for t in targets]).long().to(logits.device)
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        losses = {"ce": F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)}
        if self.dice_weight > 0:
            losses["dice"] = self.dice_weight * dice_loss(logits, target)
        return losses

    def postprocess(self, outputs: dict[str, torch.Tensor], **kwargs) -> list[Prediction]:
        # argmax of the logits is that of the softmax: no (C, H, W) probability copy of a large image.
        labels = outputs["semantic"].argmax(1).to(torch.uint8).cpu().numpy()
        return [Prediction(semantic=label) for label in labels]
