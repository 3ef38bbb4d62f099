"""segcli export: a dense checkpoint -> one ONNX graph, the card in its metadata.

    input   "images": (N, 3, H, W) float32 RGB, (pixel / 255 - mean) / std   (mean/std: metadata)
    outputs the forward dict's keys in sorted order, e.g. "semantic": (N, C, H, W) logits;
            panoptic models give "center", "offset", "semantic"
    metadata_props  "segcli_card" (the card as json), "mean", "std", "label_space"

N, H and W are dynamic. H and W must be multiples of the model's size_multiple (`models --info`), as the
tracing size is: shape checks in forward are frozen by tracing (see `_check_size`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from segcli import io
from segcli.checkpoint import checkpoint_paths, load_checkpoint
from segcli.errors import ModelError, UsageError

INSTALL_HINT = "pip install 'segcli[onnx]'"
SIZE_MULTIPLE = 32  # a multiple of every zoo model's size_multiple (the largest is 32)


class _NamedOutputs(nn.Module):
    """model(images) -> dict  =>  a tuple in `names` order: ONNX graphs have positional outputs."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        return tuple(outputs[name] for name in self.names)


def export_onnx(weights: Path, out: Path | None = None, opset: int = 17, size: int = 256) -> Path:
    """Export a segcli checkpoint to ONNX (TorchScript exporter, traced at size x size); returns the file written."""
    _check_size(size)
    model, card = load_checkpoint(weights, device="cpu")  # the graph is device-independent; trace on the CPU
    if not model.dense:
        raise ModelError(f"{weights}: {card['model']} is a sparse (Mask R-CNN-style) model; its post-processing cannot "
                         "be exported as one ONNX graph. Export a semantic or panoptic model instead")
    try:
        # torch's TorchScript exporter (dynamo=False) imports onnx to finish the file in torch 2.14, and we
        # need it for the metadata anyway; onnxscript (the dynamo exporter) is not needed.
        import onnx
    except ImportError:
        raise UsageError(f"export --format onnx needs the onnx package: {INSTALL_HINT}") from None
    example = torch.zeros(1, model.in_channels, size, size)
    with torch.no_grad():
        names = sorted(model(example))
    # eval() on the wrapper: the exporter restores the wrapper's mode recursively afterwards, and a new
    # module is in training mode, which would leave BatchNorm of `model` training.
    wrapper = _NamedOutputs(model, names).eval()
    dims = {0: "batch", 2: "height", 3: "width"}
    out = Path(out) if out is not None else checkpoint_paths(weights)[0].with_suffix(".onnx")
    with io.atomic_path(out) as tmp, warnings.catch_warnings():
        # The exporter warns that it is deprecated and that shape checks in forward become constants
        # (see the module doc).
        warnings.simplefilter("ignore")
        _export(wrapper, example, tmp, opset, names, dims)
        graph = onnx.load(str(tmp))
        norm = card.get("normalization", {})
        metadata = {"segcli_card": card, "mean": norm.get("mean"), "std": norm.get("std"),
                    "label_space": card["label_space"]}
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=json.dumps(value))
        onnx.save(graph, str(tmp))
    return out


def _export(wrapper: nn.Module, example: torch.Tensor, path: Path, opset: int, names: list[str], dims: dict) -> None:
    try:
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=names, dynamic_axes={name: dims for name in ["images", *names]})
    except (torch.onnx.OnnxExporterError, RuntimeError) as error:
        # An opset torch does not know is a RuntimeError, one too old for an operator an OnnxExporterError.
        if not isinstance(error, torch.onnx.OnnxExporterError) and "opset" not in str(error):
            raise
        first = str(error).strip().splitlines()[0]
        raise UsageError(f"--opset {opset}: torch cannot export this model at that opset ({first}); "
                         "the default, 17, works") from None


def _check_size(size: int) -> None:
    # Tracing freezes forward's `if x.shape != skip.shape` branches; at a multiple of every stride they take the
    # common path, so the graph serves every input whose sides are multiples of the model's stride.
    if size <= 0 or size % SIZE_MULTIPLE:
        raise UsageError(f"--size {size}: the tracing size must be a positive multiple of {SIZE_MULTIPLE}")
