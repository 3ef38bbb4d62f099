"""The course's second approach: a CNN without downsampling, every layer at full resolution."""

from __future__ import annotations

import torch
from torch import nn

from segcli.models.base import Body
from segcli.models.blocks import ConvBNReLU
from segcli.models.bodies import register_body


# Semantic only: its receptive field (2 * depth + 1 px undilated) is too small for centres and object boundaries.
@register_body("fullres", title="full-resolution CNN", variants=("semantic",),
               description="CNN without downsampling: full-resolution 3x3 convolutions")
class FullResBody(Body):
    """[3x3 convolution (dilated) => BN => ReLU] * depth, all at full resolution.

    No pooling and no stride: every layer costs H*W*width^2*9 multiply-adds, so the cost grows with
    the pixel count, and the receptive field grows only by 2*dilation per layer.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 8,
                 dilations: list[int] | None = None) -> None:
        super().__init__()
        dilations = tuple(dilations) if dilations else (1,) * depth
        if len(dilations) != depth:
            raise ValueError(f"dilations has {len(dilations)} entries for depth {depth}")
        layers, channels = [], in_channels
        for d in dilations:
            layers.append(ConvBNReLU(channels, width, dilation=d))
            channels = width
        self.layers = nn.Sequential(*layers)
        self.out_channels, self.out_stride = width, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
