"""FCN-8s (Long, Shelhamer, Darrell 2015): score maps at 1/32, 1/16 and 1/8 fused by learned upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcli.models.base import Body
from segcli.models.blocks import ConvBNReLU, bilinear_kernel
from segcli.models.bodies import register_body
from segcli.models.encoders import build_encoder


@register_body("fcn", title="FCN-8s", notes={"panoptic": "stride-8 features"},
               description="FCN-8s: encoder to 1/32, learned upsampling fused with 1/16, 1/8 skips")
class FCNBody(Body):
    """FCN-8s: encoder to 1/32; score maps from the 1/32, 1/16 and 1/8 features fused by learned
    x2 transposed convolutions (bilinear-initialised): 1/32 -> 1/16 (+ skip) -> 1/8 (+ skip).

    `out_channels` is the number of score maps: the classes for semantic FCN, or a feature width
    for the panoptic heads. Output stride 8: everything finer is lost, the course's point about
    coarse boundaries that skip connections from earlier layers would recover.
    """

    gives_class_scores = True  # FCN's fused maps *are* the class scores: no extra classifier after the body

    def __init__(self, in_channels: int = 3, width: int = 16, out_channels: int | None = None,
                 encoder: str | None = None, encoder_weights: str | None = "imagenet") -> None:
        super().__init__(build_encoder(encoder, in_channels=in_channels, width=width, depth=5, weights=encoder_weights))
        channels = {f.stride: f.channels for f in self.encoder.feature_info}
        out_channels = out_channels or 2 * width
        self.score32 = nn.Sequential(ConvBNReLU(channels[32], channels[32]), nn.Conv2d(channels[32], out_channels, 1))
        self.score16 = nn.Conv2d(channels[16], out_channels, 1)
        self.score8 = nn.Conv2d(channels[8], out_channels, 1)
        self.up32 = self._upsampler(out_channels)
        self.up16 = self._upsampler(out_channels)
        self.out_channels, self.out_stride = out_channels, 8

    @staticmethod
    def _upsampler(channels: int) -> nn.ConvTranspose2d:
        up = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            up.weight.copy_(bilinear_kernel(channels, 4))
        return up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        by_stride = {info.stride: f[info.name] for info in self.encoder.feature_info}
        s16 = self.score16(by_stride[16]) + _fit(self.up32(self.score32(by_stride[32])), by_stride[16])
        return self.score8(by_stride[8]) + _fit(self.up16(s16), by_stride[8])  # (B, out, H/8, W/8)


def _fit(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x resized (bilinear) to like's spatial size: after repeated halving an odd size is off by a pixel."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
