"""DeepLabV3+ (Chen et al. 2018): a dilated encoder, atrous spatial pyramid pooling, a light decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcli.models.base import Body
from segcli.models.blocks import ConvBNReLU, dense_gradient
from segcli.models.bodies import register_body
from segcli.models.encoders import build_encoder


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel 1x1 and dilated 3x3 convolutions plus a global
    image-pooling branch, concatenated and projected: context at several scales, and the whole image."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        dilated = [ConvBNReLU(cin, cout, dilation=r) for r in rates]
        self.branches = nn.ModuleList([ConvBNReLU(cin, cout, kernel=1), *dilated])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = ConvBNReLU(cout * (len(rates) + 2), cout, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


@register_body("deeplab", title="DeepLabV3+", notes={"panoptic": "the paper's design"},
               description="DeepLabV3+: dilated encoder, ASPP global context, 1/4 skip decoder")
class DeepLabBody(Body):
    """DeepLabV3+: a dilated encoder (output stride 16, the last stage dilated instead of pooled), ASPP for global
    context, and a light decoder that upsamples x4 and fuses the 1/4 features (the skip) for boundaries.
    Output: width*2 channels at stride 4."""

    def __init__(self, in_channels: int = 3, width: int = 16, output_stride: int = 16, encoder: str | None = None,
                 encoder_weights: str | None = "imagenet") -> None:
        super().__init__(build_encoder(encoder, in_channels=in_channels, width=width, depth=5, max_stride=output_stride,
                                       weights=encoder_weights))
        info = self.encoder.feature_info
        low = next(f for f in info if f.stride == 4)
        self.low_name = low.name
        self.aspp = ASPP(info[-1].channels, 4 * width)
        self.low_project = ConvBNReLU(low.channels, width, kernel=1)
        self.fuse = nn.Sequential(ConvBNReLU(5 * width, 2 * width), ConvBNReLU(2 * width, 2 * width))
        self.out_channels, self.out_stride = 2 * width, 4

    @property
    def size_multiple(self) -> int:
        # The output stride asked for, or 32 for an encoder torchvision cannot dilate.
        return self.encoder.feature_info[-1].stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        context = self.aspp(list(features.values())[-1])
        low = self.low_project(features[self.low_name])
        context = dense_gradient(F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False))
        return self.fuse(torch.cat([low, context], dim=1))  # (B, 2*width, H/4, W/4)
