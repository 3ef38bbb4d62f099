"""Small building blocks shared by every approach in the zoo."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """convolution (k x k, dilation d, stride s) => BN => ReLU; "same" padding unless padding=0."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 padding: int | None = None) -> None:
        if padding is None:
            padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """(convolution 3x3 => BN => ReLU) * 2, the unit of U-Net and of the shared encoder."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(ConvBNReLU(cin, cout, dilation=dilation), ConvBNReLU(cout, cout, dilation=dilation))


class Up(nn.Module):
    """upsample x2 (bilinear, or learned transposed convolution) => concat skip => DoubleConv."""

    def __init__(self, cin: int, cskip: int, cout: int, bilinear: bool = True) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_channels = cin
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
            up_channels = cin // 2
        self.conv = DoubleConv(up_channels + cskip, cout)
        self.skip_channels = cskip  # where inference may split the first convolution (models.fusion.FusedUp)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # odd input sizes: align to the skip's grid
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, dense_gradient(x)], dim=1))


# Below this many channels, score maps are upsampled as float32 NCHW. 2 cores, 64 -> 512 px, 3 channels: channels-last
# bfloat16 4.7 ms, channels-last float32 3.1 ms, float32 NCHW 0.74 ms (PyTorch's channels-last bilinear kernel
# vectorises over channels, so few channels leave it idle). From 16 channels on, channels-last is the faster one.
FEW_CHANNELS = 8


def upsample_maps(maps: torch.Tensor, size) -> torch.Tensor:
    """(B, C, h, w) output maps (class scores, centres, offsets) -> (B, C, *size), bilinear; maps of few channels come
    back in float32 (what post-processing and the losses take), whatever dtype and layout the network computed in."""
    if maps.shape[1] < FEW_CHANNELS:
        maps = maps.float().contiguous()
    return nn.functional.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def dense_gradient(x: torch.Tensor) -> torch.Tensor:
    """x, whose gradient will arrive in x's own memory layout: for an upsampled tensor about to be concatenated,
    so that the upsampling's backward gets a dense gradient rather than the concatenation's channel slice."""
    return _DenseGrad.apply(x) if x.requires_grad else x


class _DenseGrad(torch.autograd.Function):
    """Identity whose gradient is copied into the layout of its input before it flows on.

    The gradient of a concatenation's part is a channel slice of the whole: in channels-last, a tensor with gaps
    between its pixels, which the upsampling's backward handles on its slow path (copied to NCHW). Copied back to
    channels-last first, the backward of the default U-Net's four upsampling steps took 2.4 ms a training step
    instead of 21-23 ms (torch.profiler, 2 cores, batch 8 of 128 px, float32 and bfloat16), and the whole step
    about 3% less (`make bench`'s training step, two A/B runs); in DeepLabV3+'s decoder (batch 8 of 256 px) the
    upsampling backward went from 16.3 to 8.7 ms a step. The gradients are the same, bit for bit."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.layout = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=ctx.layout)


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Weights that make a transposed convolution start as bilinear upsampling (FCN's initialisation)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt = (1 - (og - center).abs() / factor).clamp(min=0)
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight
