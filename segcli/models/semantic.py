"""The semantic head on any body of the zoo: a 1x1 classifier and bilinear upsampling to the input size.

The bodies (`fullres.py`, `fcn.py`, `unet.py`, `deeplab.py`) compute a feature map at some stride; `BodyClassifier`
turns it into per-pixel class logits. The same bodies serve the panoptic and contour heads (`segcli.models.bodies`).
"""

from __future__ import annotations

import torch
from torch import nn

from segcli.models.base import Body, SemanticModel
from segcli.models.blocks import upsample_maps


class BodyClassifier(SemanticModel):
    """body => 1x1 classifier => bilinear upsampling to the input size (skipped at stride 1)."""

    def __init__(self, body: Body, num_classes: int, classify: bool = True) -> None:
        super().__init__()
        self.body = body
        self.classifier = nn.Conv2d(body.out_channels, num_classes, 1) if classify else nn.Identity()
        self.size_multiple, self.mean, self.std = body.size_multiple, body.mean, body.std

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.classifier(self.body(images))
        if scores.shape[-2:] != images.shape[-2:]:
            scores = upsample_maps(scores, images.shape[-2:])
        return scores
