"""What watching a run and seeing an evaluation cost.

Targets (issue #39):
- training logs (TensorBoard event files and curves.png, the default) cost at most 2% of a training step: 4 x 25
  training steps (unet width 16, 128 px, batch 8, float32; bench_train's step), each followed by its `step` event
  and every 25th by a validation's (metrics overall and per class, four pictures, curves.png), as train sends
  them with --val-every 25; the CPU time spent in the loggers against the steps' (wall beside: a shared machine's
  load swings it);
- `eval --report DIR` on 500 images of 640x480 (semantic, from files, with the images beside the labels) adds at
  most 30 s to `eval`: the two are timed in turns, the files written first and not timed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_train import _step
from benchmarks.common import check, interleaved
from segcli import io
from segcli.checkpoint import make_card
from segcli.services.evaluate import EvalConfig, evaluate
from segcli.structures import LabelSpace, Prediction, Sample
from segcli.training.loggers import make_loggers

STEP_TARGET, REPORT_TARGET_S = 0.02, 30.0
VAL_EVERY = 25
CLASSES = ["sky", "ground", "water", "circle", "square", "triangle"]
N, H, W = 500, 480, 640


def _events(steps: int) -> tuple[list[dict], dict]:
    """The step events of `steps` steps and one validation event as the Trainer sends them (128 px images)."""
    rng = np.random.default_rng(0)
    steps_info = [{"step": i + 1, "seconds": 0.3 * i, "loss": float(rng.random()), "losses": {"ce": 1.0},
                   "lr": 1e-3, "images_per_s": 30.0} for i in range(steps)]
    per_class = [{"id": i, "name": n, "iou": 0.5, "dice": 0.6, "boundary_f1": 0.4} for i, n in enumerate(CLASSES)]
    examples = [(Sample(image=rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), name=f"val{i}",
                        semantic=rng.integers(0, 6, (128, 128)).astype(np.uint8)),
                 Prediction(semantic=rng.integers(0, 6, (128, 128)).astype(np.uint8))) for i in range(4)]
    validation = {"step": steps, "seconds": 0.3 * steps, "metrics": {"miou": 0.5, "pixel_accuracy": 0.8,
                  "mean_dice": 0.6, "boundary_f1": 0.4, "per_class": per_class}, "examples": examples}
    return steps_info, validation


def logging_share(folder: Path, rounds: int = 4) -> dict[str, float]:
    """Train `rounds` x VAL_EVERY steps, sending each step's event and then a validation's to the loggers train
    creates by default (TensorBoard + curves.png); the CPU and wall seconds spent in the loggers and in the steps.
    Both are measured in the same run, so the share does not rest on the difference of two noisy runs (the
    TensorBoard writer thread's few microseconds an event fall to the steps)."""
    card = make_card("unet", {"num_classes": 6}, "semantic", LabelSpace(CLASSES))
    loggers = make_loggers("tensorboard", folder, card, {"plan": {}})
    steps, validation = _events(VAL_EVERY)
    step = _step(torch.float32)[0]
    step()  # warm-up
    spent = {"steps_cpu": 0.0, "steps_wall": 0.0, "logging_cpu": 0.0, "logging_wall": 0.0}

    def timed(kind: str, function, *args, **kwargs) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        function(*args, **kwargs)
        spent[f"{kind}_wall"] += time.perf_counter() - wall
        spent[f"{kind}_cpu"] += time.process_time() - cpu

    for logger in loggers:
        timed("logging", logger, "start", resumed_at=0)
    for round_ in range(rounds):
        offset = round_ * VAL_EVERY
        for info in steps:
            timed("steps", step)
            for logger in loggers:
                timed("logging", logger, "step", **info | {"step": info["step"] + offset})
        for logger in loggers:
            timed("logging", logger, "validation", **validation | {"step": validation["step"] + offset})
    for logger in loggers:
        timed("logging", logger.close)
    return spent


def _report_files(root: Path) -> tuple[Path, Path]:
    """500 images with class masks and predictions that differ from them (a shifted block), as PNG files."""
    rng = np.random.default_rng(0)
    for i in range(N):
        labels = np.zeros((H, W), np.uint8)
        labels[H // 2 :] = 1
        y, x = int(rng.integers(0, H - 100)), int(rng.integers(0, W - 100))
        labels[y : y + 80, x : x + 80] = int(rng.integers(2, 6))
        pred = labels.copy()
        pred[y + 10 : y + 90, x + 10 : x + 90] = int(rng.integers(2, 6))
        io.write_image(root / "images" / f"{i:04d}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        io.write_image(root / "masks" / f"{i:04d}.png", labels)
        io.write_image(root / "pred" / f"{i:04d}.png", pred)
    return root / "masks", root / "pred"


def report_cost(root: Path) -> dict[str, float]:
    gt, pred = _report_files(root)
    runs = iter(range(1000))

    def plain() -> None:
        evaluate(EvalConfig(mode="semantic", gt=gt, pred=pred, num_classes=6))

    def reported() -> None:
        evaluate(EvalConfig(mode="semantic", gt=gt, pred=pred, num_classes=6, report=root / f"report{next(runs)}"))

    return interleaved({"eval": plain, "eval --report": reported}, rounds=2, warmup=0)


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spent = logging_share(Path(tmp) / "run")
        report = report_cost(Path(tmp))
    fraction = spent["logging_cpu"] / spent["steps_cpu"]
    added = report["eval --report"] - report["eval"]
    return {"steps_cpu_s": round(spent["steps_cpu"], 2), "logging_cpu_s": round(spent["logging_cpu"], 3),
            "logging_fraction_cpu": round(fraction, 4),
            "logging_fraction_wall": round(spent["logging_wall"] / spent["steps_wall"], 4),
            "eval_seconds": round(report["eval"], 1), "eval_report_seconds": round(report["eval --report"], 1),
            "checks": [check(f"training logs (TensorBoard + curves.png, a validation every {VAL_EVERY} steps): CPU "
                             "time per training step's, unet 128 px batch 8", f"{fraction:.2%}",
                             f"<= {STEP_TARGET:.0%}", fraction <= STEP_TARGET),
                       check(f"eval --report added to eval, {N} semantic files of {W}x{H}", f"{added:.1f} s",
                             f"<= {REPORT_TARGET_S:.0f} s", added <= REPORT_TARGET_S)]}
