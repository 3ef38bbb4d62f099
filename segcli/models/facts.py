"""Facts about a model that explain its design: parameters, GFLOPs, receptive field, the multiple its input sizes
are padded to.

The *theoretical* receptive field is computed from the layers, whatever their wiring (skips,
concatenations, upsampling): a float64 copy of the model gets strictly positive averaging
weights, zero biases, identity BatchNorm and average- instead of max-pooling, so no path can
cancel another; the input pixels with a non-zero gradient for the centre output pixel are then
exactly the pixels some path of layers connects to it. The *empirical* receptive field measures
the same gradient with the model's real weights: how far influence actually reaches.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segcli.models import hf_zoo
from segcli.models.registry import build_model, get_model_entry

MAX_RF_INPUT = 1024  # beyond this the receptive field is reported as at least this size


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, size: int, in_channels: int = 3) -> float:
    """Floating-point operations (a multiply-add counts as two) of one size x size forward pass, in billions."""
    model = model.eval()
    x = torch.zeros(1, in_channels, size, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def _first_output(outputs) -> torch.Tensor:
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def _positive_copy(model: nn.Module) -> nn.Module:
    """The model with weights that let every connection through and cancel nothing."""
    probe = copy.deepcopy(model).double().eval()
    for name, module in list(probe.named_modules()):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                module.weight.fill_(1.0 / max(1, module.weight[0].numel()))
                if module.bias is not None:
                    module.bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()
            module.reset_running_stats()
        elif isinstance(module, nn.MaxPool2d):
            _replace(probe, name, nn.AvgPool2d(module.kernel_size, module.stride, module.padding,
                                               ceil_mode=module.ceil_mode))
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            _replace(probe, name, nn.AdaptiveAvgPool2d(module.output_size))
    return probe


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _influence_extent(model: nn.Module, size: int, in_channels: int, threshold: float,
                      dtype: torch.dtype) -> tuple[int, bool]:
    """Side of the box of input pixels whose gradient for the centre output exceeds threshold * max,
    and whether that box touches the input border (then the true field may be larger)."""
    x = torch.ones(1, in_channels, size, size, dtype=dtype) if dtype == torch.float64 else \
        torch.randn(1, in_channels, size, size, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    out = _first_output(model(x))
    if not out.requires_grad:  # a detector's first output is post-processed (boxes, pasted masks): no gradient path
        return 0, False
    c = size // 2
    cy, cx = c * out.shape[-2] // size, c * out.shape[-1] // size
    out[0, :, cy, cx].abs().sum().backward()
    grad = x.grad.abs().sum(dim=(0, 1))
    hits = (grad > threshold * grad.max()).nonzero()
    y0, x0 = hits.min(0).values.tolist()
    y1, x1 = hits.max(0).values.tolist()
    touches = y0 == 0 or x0 == 0 or y1 == size - 1 or x1 == size - 1
    return max(y1 - y0, x1 - x0) + 1, touches


def receptive_field(model: nn.Module, in_channels: int = 3, start: int = 128) -> int | str:
    """Theoretical receptive field in pixels; "global" when a pooling branch sees the whole image."""
    if _has_global_pooling(model):
        return "global"
    probe = _positive_copy(model)
    size = start
    while True:
        extent, touches = _influence_extent(probe, size, in_channels, threshold=0.0, dtype=torch.float64)
        if extent == 0:
            return "n/a (post-processed output)"
        if not touches:
            return extent
        if size >= MAX_RF_INPUT:
            return f">={size}"
        size *= 2


def _has_global_pooling(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and m.output_size in (1, (1, 1))
               for m in model.modules())


def empirical_receptive_field(model: nn.Module, size: int, in_channels: int = 3, threshold: float = 1e-6) -> int:
    """Side of the region whose pixels measurably move the centre output with the model's real weights."""
    model = _calibrated_copy(model, size, in_channels)
    extent, _ = _influence_extent(model, size, in_channels, threshold=threshold, dtype=torch.float32)
    return extent


def _calibrated_copy(model: nn.Module, size: int, in_channels: int) -> nn.Module:
    """A copy whose BatchNorm statistics come from one random image (untrained running statistics would
    let activations explode or die), then frozen: batch statistics would couple every pixel to every other."""
    model = copy.deepcopy(model).float()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one pass sets the statistics to that pass's
    if norms:
        model.train()
        with torch.no_grad():
            model(torch.randn(1, in_channels, size, size, generator=torch.Generator().manual_seed(1)))
    return model.eval()


def model_facts(name: str, size: int = 512, model: nn.Module | None = None, **build_kwargs) -> dict:
    """Everything `segcli models --info` prints and `compare` records."""
    if hf_zoo.is_hf_name(name):
        return hf_zoo.facts(name)
    entry = get_model_entry(name)
    if model is None:
        if name.startswith("tv_"):
            build_kwargs.setdefault("pretrained", False)  # facts need the architecture, not the weights
        if "min_size" in inspect.signature(entry.builder).parameters:
            # Detectors resize every input to their own min_size first: without this, any --size costs the same.
            build_kwargs.setdefault("min_size", size)
            build_kwargs.setdefault("max_size", size)
        model = build_model(name, **build_kwargs)
    in_channels = _in_channels(model)
    return {
        "name": name,
        "modes": [str(mode) for mode in entry.modes],  # "semantic", not <Mode.SEMANTIC: ...> in the printed table
        "description": entry.description,
        "parameters": count_parameters(model),
        "gflops": round(gflops(model, size, in_channels), 3),
        "gflops_at": size,
        "receptive_field": receptive_field(model, in_channels),
        "size_multiple": model.size_multiple,  # input sides are padded to a multiple of it
    }


def _in_channels(model: nn.Module) -> int:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first.in_channels
