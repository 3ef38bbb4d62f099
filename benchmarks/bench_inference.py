"""Inference at 512 px, batch 1, as `segcli predict` runs it, against a same-run 3x3 convolution ceiling.

A model's fraction of the ceiling is (its GFLOP / its seconds) / (the ceiling's GFLOP/s), each dtype
against the ceiling of that dtype. Targets (issue #18): default `unet`, `fcn`, `deeplab` >= 0.70 in
float32 and in bfloat16; `unet` width 32 in bfloat16 >= the plain reference U-Net's fraction (eager
PyTorch: channels-last, autocast, inference mode, as a practitioner would run it).

With onnxruntime installed, the three default models' float32 fractions under `predict --backend onnxruntime`
(the exported graph in an ONNX Runtime session) are measured beside them, for the record (no target).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import torch

from benchmarks.common import autocast, channels_last, check, conv_ceiling, interleaved
from benchmarks.reference_unet import PlainUNet
from segcli.checkpoint import make_card, save_checkpoint
from segcli.inference import InferenceOptions, dense_forward, prepare_model
from segcli.models.facts import gflops
from segcli.models.registry import build_model
from segcli.services.onnx_runtime import onnxruntime_model
from segcli.structures import LabelSpace

SIZE = 512
TARGET = 0.70
MODELS = {"unet": {}, "fcn": {}, "deeplab": {}, "unet_w32": {"width": 32}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _segcli(name: str, kwargs: dict, dtype: torch.dtype, x: torch.Tensor):
    model = build_model(name.split("_w")[0], num_classes=3, **kwargs).eval()
    options = InferenceOptions(dtype=dtype, channels_last=True)
    prepared = prepare_model(model, options)
    return (lambda: dense_forward(prepared, x, options)), gflops(model, SIZE)


def _plain(dtype: torch.dtype, x: torch.Tensor):
    model = PlainUNet(num_classes=3, base=32).eval()
    flops = gflops(model, SIZE)
    model = model.to(memory_format=torch.channels_last)
    x = channels_last(x)

    def run():
        with torch.inference_mode(), autocast(dtype):
            return model(x)

    return run, flops


def _onnxruntime(name: str, x: torch.Tensor, folder: Path):
    """(function, GFLOP) of the model's exported graph in the session `--backend onnxruntime` makes."""
    model = build_model(name, num_classes=3).eval()
    weights = save_checkpoint(folder / name, model, make_card(name, {"num_classes": 3}, "semantic",
                                                              LabelSpace(["a", "b", "c"])))
    session = onnxruntime_model(model, weights, torch.device("cpu"), torch.float32)
    return (lambda: dense_forward(session, x, InferenceOptions())), gflops(model, SIZE)


def bf16_supported() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def run(rounds: int = 5) -> dict:
    torch.manual_seed(0)
    x = torch.randn(1, 3, SIZE, SIZE)
    dtypes = DTYPES if bf16_supported() else {"float32": torch.float32}
    functions, flops = {}, {}
    for dname, dtype in dtypes.items():
        functions[f"ceiling {dname}"], flops[f"ceiling {dname}"] = conv_ceiling(dtype)
        for name, kwargs in MODELS.items():
            functions[f"{name} {dname}"], flops[f"{name} {dname}"] = _segcli(name, kwargs, dtype, x)
        functions[f"plain_unet_w32 {dname}"], flops[f"plain_unet_w32 {dname}"] = _plain(dtype, x)
    onnx = importlib.util.find_spec("onnxruntime") is not None
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("unet", "fcn", "deeplab") if onnx else ():
            key = f"{name}_onnxruntime float32"
            functions[key], flops[key] = _onnxruntime(name, x, Path(tmp))
    seconds = interleaved(functions, rounds=rounds)
    rate = {key: flops[key] / seconds[key] for key in functions}
    result: dict = {"size": SIZE, "rounds": rounds}
    fraction = {}
    for dname in dtypes:
        ceiling = rate[f"ceiling {dname}"]
        result[f"ceiling_gflops_{dname}"] = round(ceiling, 1)
        for name in [*MODELS, "plain_unet_w32", *(("unet_onnxruntime", "fcn_onnxruntime", "deeplab_onnxruntime")
                                                  if onnx and dname == "float32" else ())]:
            key = f"{name} {dname}"
            fraction[key] = rate[key] / ceiling
            result[f"{name}_{dname}_ms"] = round(seconds[key] * 1e3, 1)
            result[f"{name}_{dname}_fraction"] = round(fraction[key], 3)
    checks = []
    for dname in dtypes:
        for name in ("unet", "fcn", "deeplab"):
            value = fraction[f"{name} {dname}"]
            checks.append(check(f"{name} (width 16) {dname}, 512 px: fraction of the conv ceiling",
                                f"{value:.2f}", f">= {TARGET}", value >= TARGET))
    if "bfloat16" in dtypes:
        ours, plain = fraction["unet_w32 bfloat16"], fraction["plain_unet_w32 bfloat16"]
        checks.append(check("unet width 32 bfloat16 vs the plain reference U-Net (fraction of the ceiling)",
                            f"{ours:.2f} vs {plain:.2f}", ">= the plain U-Net's", ours >= plain))
    result["checks"] = checks
    return result
