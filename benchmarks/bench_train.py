"""`segcli train` against a plain PyTorch loop, and the training step against the convolution ceiling.

Targets (issue #18):
- `segcli train` (default workers, 128 px resize training, batch 8, `unet` width 16) runs at least 0.95 of the
  steps per second of a plain PyTorch loop over the same model, batch and size, both reading the same
  480x360 PNG images from disk (the plain loop: a DataLoader with as many workers, cv2 decoding, a random
  resized crop and flip, cross-entropy, AdamW; NCHW float32 as commonly written);
- the training step alone (forward, backward and AdamW on a batch in memory, channels-last as the trainer runs it)
  at least 0.55 of the same-run float32 ceiling of forward plus backward 3x3 convolutions;
- the same step in bfloat16 (`--bf16`: autocast, channels-last) at least 1.6x faster than in float32, where the
  CPU has bfloat16.

Steps per second of a whole run are counted between its `step` events after a few warm-up steps, so start-up and
the final validation are left out of both.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import check, conv_ceiling, interleaved
from segcli import io
from segcli.data.synth import render_sample
from segcli.models.facts import gflops
from segcli.models.registry import build_model
from segcli.services.train import TrainConfig, train
from segcli.training.loader import default_workers
from segcli.training.trainer import TRAINING_LAYOUT, adamw

SIZE, BATCH, WIDTH, CLASSES = 128, 8, 16, 6
IMAGES = 40
WARMUP_STEPS, STEPS, ROUNDS = 3, 15, 2
LOOP_TARGET, STEP_TARGET, BF16_TARGET = 0.95, 0.55, 1.6
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def png_folder(folder: Path, n: int) -> Path:
    """n 480x360 RGB PNGs with class-index PNG masks (images/ and masks/, as CamVid is laid out)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        sample = render_sample("shapes", 480, rng)
        io.write_image(folder / "images" / f"{i:03d}.png", sample.image[:360])
        io.write_image(folder / "masks" / f"{i:03d}.png", sample.semantic[:360].astype(np.uint8))  # grey: class indices
    return folder


class _PlainDataset(Dataset):
    def __init__(self, folder: Path) -> None:
        self.images = sorted((folder / "images").glob("*.png"))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        path = self.images[index]
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(path.parent.parent / "masks" / path.name), cv2.IMREAD_GRAYSCALE)
        h, w = mask.shape
        side = int(min(h, w) * np.sqrt(np.random.uniform(0.25, 1.0)))
        y, x = np.random.randint(0, h - side + 1), np.random.randint(0, w - side + 1)
        image = cv2.resize(image[y : y + side, x : x + side], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask[y : y + side, x : x + side], (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        if np.random.rand() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        tensor = torch.from_numpy(((image / 255.0 - MEAN) / STD).astype(np.float32).transpose(2, 0, 1).copy())
        return tensor, torch.from_numpy(mask.astype(np.int64).copy())


def _steps_per_second(times: list[float]) -> float:
    measured = times[WARMUP_STEPS:]
    return (len(measured) - 1) / (measured[-1] - measured[0])


def plain_loop(folder: Path) -> float:
    """Steps per second of the plain loop (after the warm-up steps)."""
    torch.manual_seed(0)
    model = build_model("unet", num_classes=CLASSES, width=WIDTH).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    workers = default_workers()
    loader = DataLoader(_PlainDataset(folder), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    times: list[float] = []
    while len(times) < WARMUP_STEPS + STEPS:
        for images, masks in loader:
            loss = F.cross_entropy(model(images)["semantic"], masks, ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter())
            if len(times) >= WARMUP_STEPS + STEPS:
                break
    return _steps_per_second(times)


def segcli_train(folder: Path, out: Path) -> float:
    """Steps per second of `segcli train` with its defaults (after the warm-up steps)."""
    times: list[float] = []

    def on_event(event: str, **info) -> None:
        if event == "step":
            times.append(time.perf_counter())

    config = TrainConfig(data=folder, model="unet", width=WIDTH, img_size=SIZE, batch_size=BATCH,
                         steps=WARMUP_STEPS + STEPS, val_every=0, val_limit=1, out=out, pretrained=False)
    train(config, callback=on_event)
    return _steps_per_second(times)


def _step(dtype: torch.dtype):
    """(function, GFLOP) of one training step on a batch in memory, in the trainer's layout."""
    torch.manual_seed(0)
    model = build_model("unet", num_classes=CLASSES, width=WIDTH)
    flops = 3 * gflops(model.eval(), SIZE) * BATCH  # backward: about twice the forward
    model = model.to(memory_format=TRAINING_LAYOUT).train()
    optimizer = adamw(model, TrainConfig.lr, TrainConfig.weight_decay)  # the trainer's (fused where torch has it)
    images = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=TRAINING_LAYOUT)
    targets = [{"semantic": torch.randint(0, CLASSES, (SIZE, SIZE))} for _ in range(BATCH)]

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = sum(model.compute_losses(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run, flops


def _bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _loops(folder: Path, out: Path) -> dict:
    rates: dict[str, list[float]] = {"segcli": [], "plain": []}
    for round_ in range(ROUNDS):  # in turns, so a burst of other work slows both
        rates["segcli"].append(segcli_train(folder, out / f"run{round_}"))
        rates["plain"].append(plain_loop(folder))
    segcli, plain = float(np.median(rates["segcli"])), float(np.median(rates["plain"]))
    ratio = segcli / plain
    return {"train_steps_per_s": round(segcli, 3), "plain_loop_steps_per_s": round(plain, 3),
            "train_fraction_of_plain_loop": round(ratio, 3), "workers": default_workers(),
            "check": check(f"train vs a plain loop, 480x360 PNGs from disk, {SIZE} px batch {BATCH}", f"{ratio:.2f}",
                           f">= {LOOP_TARGET}", ratio >= LOOP_TARGET)}


def _steps() -> tuple[dict, list[dict]]:
    functions, flops = {}, {}
    functions["ceiling"], flops["ceiling"] = conv_ceiling(torch.float32, backward=True)
    dtypes = {"float32": torch.float32, **({"bfloat16": torch.bfloat16} if _bf16() else {})}
    for name, dtype in dtypes.items():
        functions[name], flops[name] = _step(dtype)
    seconds = interleaved(functions, rounds=5)
    ceiling = flops["ceiling"] / seconds["ceiling"]
    fraction = flops["float32"] / seconds["float32"] / ceiling
    result = {"ceiling_train_gflops_float32": round(ceiling, 1), "step_float32_ms": round(seconds["float32"] * 1e3, 1),
              "step_float32_fraction": round(fraction, 3)}
    checks = [check(f"training step (forward + backward + AdamW), float32, {SIZE} px batch {BATCH}: fraction of the "
                    "ceiling", f"{fraction:.2f}", f">= {STEP_TARGET}", fraction >= STEP_TARGET)]
    if "bfloat16" in dtypes:
        speedup = seconds["float32"] / seconds["bfloat16"]
        result |= {"step_bfloat16_ms": round(seconds["bfloat16"] * 1e3, 1), "step_bfloat16_speedup": round(speedup, 2)}
        checks.append(check("training step in bfloat16 vs float32 (speed-up)", f"{speedup:.2f}x", f">= {BF16_TARGET}x",
                            speedup >= BF16_TARGET))
    return result, checks


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = png_folder(Path(tmp) / "pngs", IMAGES)
        loops = _loops(folder, Path(tmp))
    steps, checks = _steps()
    result = {"size": SIZE, "batch": BATCH, "images": IMAGES, **loops, **steps}
    result["checks"] = [result.pop("check"), *checks]
    return result
