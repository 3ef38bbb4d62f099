"""A plain U-Net (Ronneberger et al. 2015, as milesial/Pytorch-UNet writes it, bilinear variant), the
reference segcli's own U-Net is measured against: nothing but eager PyTorch modules.

    (conv 3x3 => BN => ReLU) * 2 per level; max-pool down; bilinear up, concat skip, (conv => BN => ReLU) * 2.
"""

from __future__ import annotations

import torch
from torch import nn


def _double(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    mid = mid or cout
    return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = _double(cin, cout, cin // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class PlainUNet(nn.Module):
    """base, 2 base, ..., 16 base / 2 channels down; back up to base; a 1x1 classifier."""

    def __init__(self, num_classes: int = 3, base: int = 32) -> None:
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base, 8 * base]  # the bottom halved: the bilinear variant
        self.inc = _double(3, base)
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), _double(a, b)) for a, b in zip(widths, widths[1:]))
        self.ups = nn.ModuleList(
            [Up(16 * base, 4 * base), Up(8 * base, 2 * base), Up(4 * base, base), Up(2 * base, base)])
        self.outc = nn.Conv2d(base, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)
