"""The shared backbone family: a plain convolutional encoder that returns named feature maps.

Contract (detectron2's ShapeSpec, timm's feature_info): `forward(x)` returns a dict
{name: (B, channels, H / stride, W / stride)} and `feature_info` lists (name, channels, stride)
in the same order, from high resolution to low. Stages either halve the resolution (max-pool)
or, past `max_stride`, keep it and dilate instead, so DeepLab gets large receptive fields
without losing resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from segcli.models.blocks import DoubleConv


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    channels: int
    stride: int


class Encoder(nn.Module):
    """stem DoubleConv (stride 1) => [max-pool 2x2 => DoubleConv] * depth, channels doubling per stage up to 8x
    width."""

    # Trained from scratch: no normalisation of its own (ImageNet encoders have one).
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 4, max_stride: int | None = None,
                 max_channels: int | None = None) -> None:
        super().__init__()
        self.stem = DoubleConv(in_channels, width)
        self.stages = nn.ModuleList()
        info = [FeatureInfo("s1", width, 1)]
        channels, stride, dilation = width, 1, 1
        # Capped at 8x the base width: small enough to train on a CPU, the same cap for every approach.
        max_channels = max_channels or 8 * width
        for _ in range(depth):
            out = min(channels * 2, max_channels)
            if max_stride is None or stride < max_stride:
                stride *= 2
                stage = nn.Sequential(nn.MaxPool2d(2), DoubleConv(channels, out))
            else:
                dilation *= 2  # resolution kept: dilate to grow the receptive field as the pool would have
                stage = DoubleConv(channels, out, dilation=dilation)
            self.stages.append(stage)
            channels = out
            name = f"s{stride}" if info[-1].stride != stride else f"s{stride}d{dilation}"
            info.append(FeatureInfo(name, out, stride))
        self.feature_info = info

    @property
    def out_stride(self) -> int:
        return self.feature_info[-1].stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        x = self.stem(x)
        features[self.feature_info[0].name] = x
        for stage, info in zip(self.stages, self.feature_info[1:]):
            x = stage(x)
            features[info.name] = x
        return features
