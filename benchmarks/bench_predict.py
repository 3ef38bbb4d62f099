"""`segcli predict` end to end: one 512 px image from a fresh process, and a folder of 512 px images.

Targets (issue #18):
- one image: `segcli predict` in a new process takes under 1.5 s more than `python -c "import torch"`;
- a folder: the images per second of `predict` (decoding, pre- and post-processing, semantic PNGs,
  overlays and parts written) at least 0.90 of the forward-only throughput of the same prepared model
  on the same images already in memory as tensors.

The model is the default `unet` (width 16), untrained, with a classifier scaled up so that its
argmax varies over the image as a trained model's does (several classes, several segments each):
speed does not depend on what the weights learned, but the writers' work depends on the labels.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import check, interleaved
from segcli import io
from segcli.checkpoint import make_card, save_checkpoint
from segcli.data.synth import render_sample, synth_label_space
from segcli.inference import InferenceOptions, dense_forward, prepare_model
from segcli.models.registry import build_model
from segcli.preprocess import image_to_tensor
from segcli.services.predict import PredictConfig, predict

SIZE = 512
IMAGES = 48  # as the issue measured: fixed costs (loading the checkpoint, the first batch) weigh 4x more on 12
STARTUP_TARGET_S = 1.5
THROUGHPUT_TARGET = 0.90


def checkpoint(folder: Path) -> Path:
    space = synth_label_space("shapes")
    torch.manual_seed(0)
    model = build_model("unet", num_classes=space.num_classes, width=16)
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)  # a varied argmax, like a trained model's
    return save_checkpoint(folder / "unet", model, make_card("unet", {"num_classes": space.num_classes, "width": 16},
                                                             "semantic", space))


def images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(io.write_image(folder / f"img{i:03d}.jpg", render_sample("shapes", SIZE, rng).image, quality=90))
    return paths


def _startup(folder: Path, weights: Path, image: Path) -> dict:
    segcli = Path(sys.executable).parent / "segcli"
    runs = iter(range(100))

    def one_image() -> None:
        subprocess.run([str(segcli), "predict", str(image), "--weights", str(weights), "--out",
                        str(folder / f"one{next(runs)}"), "--quiet"], check=True)

    def import_torch() -> None:
        subprocess.run([sys.executable, "-c", "import torch"], check=True)

    seconds = interleaved({"predict": one_image, "torch": import_torch}, rounds=3, warmup=1)
    extra = seconds["predict"] - seconds["torch"]
    return {"predict_one_s": round(seconds["predict"], 2), "import_torch_s": round(seconds["torch"], 2),
            "check": check("predict of one 512 px image, beyond `import torch` (fresh process)", f"{extra:.2f} s",
                           f"< {STARTUP_TARGET_S} s", extra < STARTUP_TARGET_S)}


def _throughput(folder: Path, weights: Path, paths: list[Path], precision: str) -> dict:
    from segcli.checkpoint import load_checkpoint

    model, card = load_checkpoint(weights)
    dtype = getattr(torch, precision)
    options = InferenceOptions(dtype=dtype, channels_last=True)
    prepared = prepare_model(model, options)
    tensors = [image_to_tensor(io.read_image(p))[None] for p in paths]
    runs = iter(range(100))

    def forward_only() -> None:
        for x in tensors:
            prepared.postprocess(dense_forward(prepared, x, options))

    def predict_folder() -> None:
        predict(PredictConfig(inputs=[str(folder / "images")], weights=weights,
                              out=folder / f"out-{precision}-{next(runs)}",
                              precision=precision))

    seconds = interleaved({"forward": forward_only, "predict": predict_folder}, rounds=5, warmup=1)
    ratio = seconds["forward"] / seconds["predict"]
    return {f"forward_{precision}_ms_per_image": round(seconds["forward"] / len(paths) * 1e3, 1),
            f"predict_{precision}_ms_per_image": round(seconds["predict"] / len(paths) * 1e3, 1),
            f"predict_{precision}_fraction_of_forward": round(ratio, 3),
            "check": check(f"predict a folder of 512 px images with overlays ({precision}), fraction of forward-only",
                           f"{ratio:.2f}", f">= {THROUGHPUT_TARGET}", ratio >= THROUGHPUT_TARGET)}


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = checkpoint(folder)
        paths = images(folder / "images", IMAGES)
        result: dict = {"images": IMAGES, "size": SIZE}
        checks = []
        for part in (_startup(folder, weights, paths[0]), _throughput(folder, weights, paths, "float32"),
                     _throughput(folder, weights, paths, "bfloat16")):
            checks.append(part.pop("check"))
            result.update(part)
    result["checks"] = checks
    return result
