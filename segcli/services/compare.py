"""`segcli compare`: train the course's approaches on the same data and measure the course's claims.

Every approach gets the same training split, step budget, seed, augmentation and optimiser;
all are scored on the same validation split with eval's metric code, and timed the same way.
The service never prints: it reports progress through `callback(event: str, **info)`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segcli import io
from segcli.device import resolve_device
from segcli.errors import UsageError
from segcli.measure import latency_ms, peak_memory_mb
from segcli.services import compare_report

Callback = Callable[..., None]

DEFAULT_APPROACHES = ("sliding", "fullres", "fcn", "unet")


@dataclass
class ComparePreset:
    """Sizes of a run; `quick` exists so tests and the demo finish in about a minute."""

    n_images: int  # synthetic images generated when no --data is given
    img_size: int  # synthetic image side and training crop
    steps: int  # optimiser steps per approach
    sizes: tuple[int, ...]  # image sides for latency / memory
    batch_size: int


PRESETS = {
    "default": ComparePreset(n_images=96, img_size=128, steps=300, sizes=(128, 256, 512, 1024), batch_size=8),
    "quick": ComparePreset(n_images=16, img_size=64, steps=20, sizes=(64, 128), batch_size=4),
}


@dataclass
class CompareConfig:
    out: Path
    approaches: tuple[str, ...] = DEFAULT_APPROACHES
    data: Path | None = None  # None: generate `segcli data synth --kind context`
    data_format: str = "auto"
    binary: bool = False  # 0/255 masks (ISBI membranes): 255 is class 1
    steps: int | None = None  # optimiser steps per approach (the shared budget)
    epochs: int | None = None  # alternative budget: epochs per approach
    sizes: tuple[int, ...] | None = None
    img_size: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    quick: bool = False
    weights: dict[str, Path] = field(default_factory=dict)  # approach -> checkpoint, skips its training
    grid_images: int = 4
    naive_size: int | None = None  # where naive sliding is timed; defaults to the smallest size


def _preset(config: CompareConfig) -> ComparePreset:
    base = PRESETS["quick" if config.quick else "default"]
    return ComparePreset(
        n_images=base.n_images,
        img_size=config.img_size or base.img_size,
        steps=config.steps or base.steps,
        sizes=tuple(config.sizes or base.sizes),
        batch_size=config.batch_size or base.batch_size,
    )


def _notify(callback: Callback | None, event: str, **info) -> None:
    if callback is not None:
        callback(event, **info)


def compare(config: CompareConfig, callback: Callback | None = None) -> dict:
    """Run the whole comparison; returns the results dict that results.json holds."""
    from segcli.models.registry import get_model_entry

    for name in config.approaches:
        if "semantic" not in get_model_entry(name).modes:
            raise UsageError(f"--approaches: {name} is not a semantic model; compare measures semantic segmentation")
    preset = _preset(config)
    device = resolve_device(config.device)
    config.out.mkdir(parents=True, exist_ok=True)
    data_path = config.data or _make_synthetic(config, preset, callback)
    results = {
        "data": str(data_path),
        "seed": config.seed,
        "img_size": preset.img_size,
        "sizes": list(preset.sizes),
        "budget": f"{config.epochs} epochs" if config.epochs else f"{preset.steps} steps of batch {preset.batch_size}",
        "environment": _environment(device),
        "approaches": {},
    }
    val_samples = None
    trained = {}
    for name in config.approaches:
        model, card, train_seconds, split_sizes = _train_or_load(name, config, preset, data_path, callback)
        if val_samples is None:
            val_samples = _validation_samples(data_path, config)
            results["train_images"], results["val_images"] = split_sizes[0], len(val_samples)
        _notify(callback, "evaluate", approach=name)
        entry, predictions = _measure(name, model, card, val_samples, preset, config, device, callback)
        entry["train_seconds"] = train_seconds
        results["approaches"][name] = entry
        trained[name] = (card, predictions)
    _write_outputs(config.out, results, trained, val_samples, config.grid_images)
    _notify(callback, "done", out=str(config.out))
    return results


def _environment(device: torch.device) -> dict:
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def _make_synthetic(config: CompareConfig, preset: ComparePreset, callback: Callback | None) -> Path:
    from segcli.data.synth import generate

    out = config.out / "data"
    _notify(callback, "data", path=str(out), kind="context", n=preset.n_images)
    return generate("context", out, n=preset.n_images, size=preset.img_size, seed=config.seed)


def _train_or_load(name, config, preset, data_path, callback):
    from segcli.checkpoint import load_checkpoint
    from segcli.services.train import TrainConfig, train

    if name in config.weights:
        model, card = load_checkpoint(config.weights[name])
        return model, card, 0.0, (card.get("data", {}).get("train_images", 0), None)
    train_config = TrainConfig(
        data=data_path,
        data_format=config.data_format,
        binary=config.binary,
        model=name,
        mode="semantic",
        steps=None if config.epochs else preset.steps,
        epochs=config.epochs,
        batch_size=preset.batch_size,
        img_size=preset.img_size,
        seed=config.seed,
        device=config.device,
        out=config.out / "runs" / name,
        val_every=0,
        command=["segcli", "compare", "(training " + name + ")"],
    )
    start = time.perf_counter()
    def relay(event: str, **info) -> None:
        _notify(callback, "train:" + event, approach=name, **info)

    result = train(train_config, callback=relay)
    seconds = time.perf_counter() - start
    model, card = load_checkpoint(result.last)
    return model, card, seconds, (result.train_images, result.val_images)


def _validation_samples(data_path: Path, config: CompareConfig) -> list:
    from segcli.data import load_dataset

    dataset = load_dataset(data_path, format=config.data_format, split="val", seed=config.seed, binary=config.binary)
    return [dataset[i] for i in range(len(dataset))]


def _measure(name, model, card, samples, preset, config, device, callback) -> dict:
    from segcli.models.facts import model_facts

    facts = model_facts(name, size=preset.img_size, model=model)
    scores, predictions = _score(model, card, samples, device)
    entry = {
        "params": facts["parameters"],
        "gflops": facts["gflops"],
        "receptive_field": facts["receptive_field"],
        "output_stride": facts["output_stride"],
        **scores,
        "latency_ms": {},
        "peak_memory_mb": {},
    }
    for size in preset.sizes:
        _notify(callback, "time", approach=name, size=size)
        entry["latency_ms"][str(size)] = latency_ms(model, size, device)
        entry["peak_memory_mb"][str(size)] = peak_memory_mb(model, size, device)
    if name == "sliding":
        entry["sliding_inference"] = _sliding_naive_vs_dense(model, config.naive_size or min(preset.sizes), device)
    return entry, predictions


def _score(model, card, samples, device) -> tuple[dict, list]:
    """mIoU, per-class IoU and boundary F1 with eval's code, plus accuracy deep inside objects."""
    from segcli.inference import predict_arrays
    from segcli.metrics import score_semantic

    label_space = _label_space(card)
    predictions = predict_arrays(model, card, [s.image for s in samples], device=device)
    summary = score_semantic([(s.semantic, p.semantic) for s, p in zip(samples, predictions)],
                             label_space.num_classes, label_space.names)
    # Per class, so that the large background does not hide the objects whose interiors need context.
    hits, totals = np.zeros(label_space.num_classes), np.zeros(label_space.num_classes)
    for sample, prediction in zip(samples, predictions):
        inside = _interior(sample.semantic, margin=compare_report.INTERIOR_MARGIN)
        truth = sample.semantic[inside]
        np.add.at(totals, truth, 1)
        np.add.at(hits, truth[prediction.semantic[inside] == truth], 1)
    present = totals > 0
    scores = {
        "miou": summary["miou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "per_class": summary["per_class"],
        "boundary_f1": summary["boundary_f1"],
        "interior_accuracy": float((hits[present] / totals[present]).mean()) if present.any() else None,
    }
    return scores, predictions


def _label_space(card: dict):
    from segcli.checkpoint import card_label_space

    return card_label_space(card)


def _interior(semantic: np.ndarray, margin: int) -> np.ndarray:
    """Pixels at least `margin` px from any class boundary: where only context can tell classes apart."""
    import cv2

    inside = np.zeros(semantic.shape, bool)
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    for label in np.unique(semantic):
        if label == 255:
            continue
        inside |= cv2.erode((semantic == label).astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    return inside


def _sliding_naive_vs_dense(model, size: int, device: torch.device) -> dict:
    """Time the same weights run naively (every window cut out) and densely, and check they agree."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    outputs, times = {}, {}
    original = model.inference
    try:
        for kind in ("dense", "naive"):
            model.inference = kind
            times[kind] = latency_ms(model, size, device, repeats=1 if kind == "naive" else 5, max_seconds=120)
            with torch.inference_mode():
                outputs[kind] = model(x)["semantic"]
    finally:
        model.inference = original
    return {
        "size": size,
        "naive_ms": times["naive"],
        "dense_ms": times["dense"],
        "speedup": times["naive"] / times["dense"],
        "max_abs_diff": float((outputs["naive"] - outputs["dense"]).abs().max()),
    }


def _write_outputs(out: Path, results: dict, trained: dict, samples: list, grid_images: int) -> None:
    rows = compare_report.summary_rows(results)
    io.write_json(out / "results.json", results, indent=2)
    compare_report.write_csv(out / "results.csv", rows)
    compare_report.write_report(out / "report.md", results, rows)
    compare_report.plot_scaling(out / "scaling.png", results)
    compare_report.plot_tradeoff(out / "tradeoff.png", results)
    _write_grid(out / "grid.png", trained, samples[:grid_images])


def _write_grid(path: Path, trained: dict, samples: list) -> Path:
    """Rows of validation images: input | ground truth | each approach's prediction, labelled."""
    from segcli import draw

    space = _label_space(next(iter(trained.values()))[0])
    colors = space.colors
    tiles, labels = [], []
    predictions = {name: preds for name, (_, preds) in trained.items()}
    for i, sample in enumerate(samples):
        tiles += [sample.image, draw.colorize(sample.semantic, colors)]
        labels += ["input", "ground truth"]
        for name in trained:
            tiles.append(draw.colorize(predictions[name][i].semantic, colors))
            labels.append(name)
    sheet = draw.grid(tiles, cols=2 + len(trained), labels=labels)
    return io.write_image(path, draw.with_legend(sheet, space.names, colors))
