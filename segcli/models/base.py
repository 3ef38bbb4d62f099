"""The contract every zoo model follows, whatever its family.

    images: Tensor (B, 3, H, W) float32, normalised with the card's mean/std (segcli.preprocess.image_to_tensor)
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

import torch
from torch import nn

from segcli.models.losses import dense_losses
from segcli.models.postprocess import class_argmax
from segcli.structures import Mode, Prediction


class SegModel(nn.Module, ABC):
    """Base of every zoo model: declares its modes and the three methods above."""

    modes: tuple[Mode, ...] = (Mode.SEMANTIC,)
    dense: bool = True
    in_channels: int = 3  # image channels the model takes (`build_model(..., in_channels=N)`, train --channels)

    @abstractmethod
    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Training losses by name; the trainer minimises their sum."""

    @abstractmethod
    def postprocess(self, outputs: dict[str, torch.Tensor], **kwargs) -> list[Prediction]:
        """Raw outputs of `forward` -> one `Prediction` per image."""


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
        return dense_losses(logits, target, name="ce", class_weights=self.class_weights, dice_weight=self.dice_weight)

    def postprocess(self, outputs: dict[str, torch.Tensor], **kwargs) -> list[Prediction]:
        # argmax of the logits is that of the softmax: no (C, H, W) probability copy of a large image.
        labels = class_argmax(outputs["semantic"], 1).to(torch.uint8).cpu().numpy()
        return [Prediction(semantic=label) for label in labels]
