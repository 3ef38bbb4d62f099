"""Inference-time rewrites of a model: BatchNorm folded into the convolution before it,
convolution => ReLU run as one oneDNN primitive on a CPU, U-Net decoder convolutions that read
their two inputs without concatenating them, and 2x2 max-pooling as elementwise maxima.

In eval mode a BatchNorm is a per-channel affine map, so the convolution before it can absorb it
(torch's `fuse_conv_bn_eval`: W' = W * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta).
The outputs are the same up to float rounding (1e-6 relative) and one pass over every activation
map is gone. A ReLU right after a convolution is then applied by oneDNN while it writes the
convolution's output (`torch.ops.mkldnn._convolution_pointwise`, the kernel torch.compile's CPU
backend emits for the same pattern), which saves another pass.

Only convolutions and norms whose order of computation is known are rewritten: consecutive children
of an `nn.Sequential` (the order of the children is the order of the computation), and the named
pairs of torchvision's ResNet blocks. Any other module whose `forward` wires its children by hand is
left as it is, and `fold_batchnorm` says so (`FusionWarning`). Each function returns a
rewritten copy and leaves its argument untouched (`inplace=True` rewrites the argument itself:
`prepare_model` copies once, not once per rewrite, 25 ms each for the default U-Net); the result
is for inference only (the fused kernel has no backward).
"""

from __future__ import annotations

import copy
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from segcli.models.blocks import Up


class FusionWarning(UserWarning):
    """A rewrite left part of a model as it was: it runs correctly, only without that speed-up."""


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of `model` (in eval mode) with every BatchNorm2d that follows a Conv2d folded into it: the consecutive
    children of an nn.Sequential (or of torchvision's IntermediateLayerGetter, which runs its children in order), and
    the named pairs of torchvision's ResNet blocks (conv1 => bn1, ...). Warns (`FusionWarning`) naming the
    BatchNorms it could not fold, e.g. in a block whose `forward` wires its children by hand."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode: a training BatchNorm uses batch statistics")
    model = model if inplace else copy.deepcopy(model)
    for sequence in _sequentials(model):
        i = 0
        while i + 1 < len(sequence):
            conv, norm = sequence[i], sequence[i + 1]
            if _foldable(conv, norm):
                sequence[i] = fuse_conv_bn_eval(conv, norm)
                del sequence[i + 1]
            i += 1
    for module in list(model.modules()):
        for conv_name, norm_name in _wired_pairs(module):
            conv, norm = module.get_submodule(conv_name), module.get_submodule(norm_name)
            if _foldable(conv, norm):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
    left = unfolded_batchnorms(model)
    if left:
        warnings.warn(f"{len(left)} BatchNorm2d not folded into a convolution (not right after one in an "
                      f"nn.Sequential): {', '.join(left[:3])}{', ...' if len(left) > 3 else ''}", FusionWarning,
                      stacklevel=2)
    return model


def unfolded_batchnorms(model: nn.Module) -> list[str]:
    """The names of the BatchNorms in `model`: after `fold_batchnorm`, those it could not fold."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats \
        and conv.out_channels == norm.num_features


def _wired_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(convolution, norm) child names that `module`'s forward runs one after the other, outside an nn.Sequential."""
    resnet = sys.modules.get("torchvision.models.resnet")  # not imported: no such blocks exist
    if resnet is not None and isinstance(module, (resnet.BasicBlock, resnet.Bottleneck, resnet.ResNet)):
        return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(module, f"bn{i}")]  # ResNet's stem: conv1, bn1
    getter = sys.modules.get("torchvision.models._utils")
    if getter is not None and isinstance(module, getter.IntermediateLayerGetter):
        names = list(module.keys())
        return list(zip(names, names[1:]))
    return []


class ConvReLU(nn.Module):
    """convolution => ReLU in one oneDNN primitive (CPU); elsewhere, or when the input's dtype is not the
    weights' (autocast), the two ops one after the other."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.device.type != "cpu" or x.dtype != c.weight.dtype or torch.is_grad_enabled():
            return F.relu(c(x))
        return torch.ops.mkldnn._convolution_pointwise(x, c.weight, c.bias, c.padding, c.stride, c.dilation,
                                                       c.groups, "relu", [], "")


def can_fuse_relu() -> bool:
    """oneDNN's fused kernels exist in this build of torch."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def fuse_conv_relu(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of `model` with every Conv2d directly followed by a ReLU (in an nn.Sequential) made one `ConvReLU`."""
    model = model if inplace else copy.deepcopy(model)
    if not can_fuse_relu():
        return model
    for sequence in _sequentials(model):
        i = 0
        while i + 1 < len(sequence):
            conv, relu = sequence[i], sequence[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(relu, nn.ReLU) and _plain(conv):
                sequence[i] = ConvReLU(conv)
                del sequence[i + 1]
            i += 1
    return model


def _plain(conv: nn.Conv2d) -> bool:
    """Zero padding given as numbers: what the oneDNN kernel implements."""
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _sequentials(model: nn.Module) -> list[nn.Sequential]:
    return [m for m in model.modules() if isinstance(m, nn.Sequential)]


class ConcatConvReLU(nn.Module):
    """relu(conv(cat([a, b]))) without building the concatenation: the convolution is linear in its input
    channels, so it is conv_b(b) + conv_a(a) with the weight split at a's channels; oneDNN adds the first
    result and applies the ReLU while it writes the second (binary "add" and ReLU post-ops). In channels-last memory a
    concatenation interleaves every pixel's channels, a pass that cost 14% of the default U-Net's forward.
    Elsewhere (GPU, autocast, autograd) the concatenation and the plain convolution are used."""

    def __init__(self, conv: nn.Conv2d, split: int) -> None:
        super().__init__()
        self.conv = conv
        self.split = split
        self.weight_a = nn.Parameter(conv.weight.detach()[:, :split].clone(), requires_grad=False)
        self.weight_b = nn.Parameter(conv.weight.detach()[:, split:].clone(), requires_grad=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if a.device.type != "cpu" or a.dtype != c.weight.dtype or b.dtype != a.dtype or torch.is_grad_enabled():
            return F.relu(c(torch.cat([a, b], dim=1)))
        geometry = (c.padding, c.stride, c.dilation, c.groups)
        partial = torch.ops.mkldnn._convolution_pointwise(b, self.weight_b, None, *geometry, "none", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(a, partial, self.weight_a, c.bias, *geometry, "add", None,
                                                              "relu", [], "")


class FusedUp(nn.Module):
    """A U-Net decoder step (`blocks.Up`, BatchNorm folded and ReLUs fused) whose first convolution reads the skip
    and the upsampled map without concatenating them (`ConcatConvReLU`)."""

    def __init__(self, up: Up, first: ConvReLU, rest: nn.Module, skip_channels: int) -> None:
        super().__init__()
        self.up = up.up
        self.first = ConcatConvReLU(first.conv, skip_channels)
        self.rest = rest

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # odd input sizes: align to the skip's grid (as Up does)
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.rest(self.first(skip, x))


def fuse_concat_conv(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of `model` with every U-Net decoder step whose first unit is a fused `ConvReLU` (after
    `fold_batchnorm` and `fuse_conv_relu`) made a `FusedUp`."""
    model = model if inplace else copy.deepcopy(model)
    if not can_fuse_relu():
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            first = _first_conv_relu(child) if isinstance(child, Up) else None
            if first is not None:
                rest = nn.Sequential(*list(child.conv)[1:])
                setattr(parent, name, FusedUp(child, first, rest, child.skip_channels))
    return model


def _first_conv_relu(up: Up) -> ConvReLU | None:
    unit = up.conv[0]
    lone_conv_relu = isinstance(unit, nn.Sequential) and len(unit) == 1 and isinstance(unit[0], ConvReLU)
    if lone_conv_relu and unit[0].conv.groups == 1:
        return unit[0]
    return None



class PairwiseMaxPool(nn.Module):
    """2x2 max-pooling with stride 2 as two elementwise maxima of strided views (rows, then columns): 1.5 to 3x
    faster than torch's CPU max-pool kernel at a U-Net's first stage (channels-last, 16 channels, 512 px), which
    also computes the argmax positions; the same values, and odd sides lose their last row or column as before.
    Under autograd the plain max-pool is used (its gradient goes to one pixel of a tie, as training always had)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return F.max_pool2d(x, 2)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def fast_max_pool(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of `model` with every plain `nn.MaxPool2d(2)` (kernel and stride 2, no padding) a `PairwiseMaxPool`."""
    model = model if inplace else copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d) and _pair(child.kernel_size) == _pair(child.stride) == (2, 2) \
                    and _pair(child.padding) == (0, 0) and _pair(child.dilation) == (1, 1) and not child.ceil_mode \
                    and not child.return_indices:
                setattr(parent, name, PairwiseMaxPool())
    return model


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
