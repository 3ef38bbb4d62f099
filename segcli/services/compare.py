"""`segcli compare`: train the course's approaches on the same data and measure the course's claims.

Every approach gets the same training split, step budget, seeds, augmentation and optimiser;
all are scored on the same validation split with eval's metric code, and timed the same way.
Each approach is trained once per seed (`--seeds N`: seed, seed+1, ...); the validation split
stays the same for every seed, and each image's counts are kept so that compare_report can
judge every claim against the spread between seeds and over images.
The service never prints: it reports progress through `callback(event: str, **info)`.
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segcli import io
from segcli.checkpoint import read_card
from segcli.device import resolve_device
from segcli.errors import UsageError, check_minimums
from segcli.measure import latency_ms, peak_memory_mb
from segcli.services import compare_report
from segcli.services.compare_results import Approach, CompareResults, Environment, ImageCounts, Run, SlidingInference

Callback = Callable[..., None]

DEFAULT_APPROACHES = ("sliding", "fullres", "fcn", "unet")
BOUNDARY_TOLERANCES_PX = (1, 2, 4)  # besides eval's default (2% of the image diagonal), for the boundary study


@dataclass
class ComparePreset:
    """Sizes of a run; `quick` exists so tests and the demo finish in about a minute (and is never judged)."""

    n_images: int  # synthetic images generated when no --data is given
    img_size: int  # synthetic image side and training crop
    steps: int  # optimiser steps per approach and seed
    sizes: tuple[int, ...]  # image sides for latency / memory
    batch_size: int
    seeds: int  # training runs per approach


PRESETS = {
    # 3 seeds: the fewest that give a min-max spread worth the name. 80 steps and sizes up to 512 px: 3 seeds x 4
    # approaches take about 6.5 idle minutes on 2 cores (training seconds per seed: docs/comparing.md), under 15.
    "default": ComparePreset(n_images=96, img_size=128, steps=80, sizes=(128, 256, 512), batch_size=8, seeds=3),
    "quick": ComparePreset(n_images=16, img_size=64, steps=20, sizes=(64, 128), batch_size=4, seeds=1),
}


@dataclass
class CompareConfig:
    out: Path
    approaches: tuple[str, ...] = DEFAULT_APPROACHES  # zoo names, or LABEL=NAME to run one model under another label
    data: Path | None = None  # None: generate `segcli data synth --kind context`
    data_format: str = "auto"
    binary: bool = False  # 0/255 masks (ISBI membranes): 255 is class 1
    steps: int | None = None  # optimiser steps per approach and seed (the shared budget)
    epochs: int | None = None  # alternative budget: epochs per approach and seed
    sizes: tuple[int, ...] | None = None
    img_size: int | None = None
    batch_size: int | None = None
    seed: int = 0  # first seed; also the seed of the synthetic data and of a random validation hold-out
    seeds: int | None = None  # training runs per approach (None: the preset's)
    device: str = "auto"
    quick: bool = False
    weights: dict[str, Path] = field(default_factory=dict)  # approach -> checkpoint, skips its training
    grid_images: int = 4
    naive_size: int | None = None  # where naive sliding is timed; defaults to the smallest size
    command: list[str] = field(default_factory=lambda: ["segcli", *sys.argv[1:]])  # recorded in results and report


def _preset(config: CompareConfig) -> ComparePreset:
    base = PRESETS["quick" if config.quick else "default"]
    # 0 would fall back to the preset (`or`) without a word, and a size below the zoo's stride crashes after training
    check_minimums(("--seeds", config.seeds, 1), ("--budget-steps", config.steps, 1), ("--epochs", config.epochs, 1),
                   ("--img-size", config.img_size, 32), ("--batch-size", config.batch_size, 1),
                   *(("--sizes", size, 32) for size in config.sizes or ()))
    return ComparePreset(
        n_images=base.n_images,
        img_size=config.img_size or base.img_size,
        steps=config.steps or base.steps,
        sizes=tuple(config.sizes or base.sizes),
        batch_size=config.batch_size or base.batch_size,
        seeds=config.seeds or base.seeds,
    )


def parse_approaches(specs: tuple[str, ...]) -> dict[str, str]:
    """`NAME[:ENCODER]` or `LABEL=NAME[:ENCODER]` -> {label: NAME[:ENCODER]}, checked against the zoo before any work.

    `unet:resnet34` is U-Net with torchvision's ImageNet ResNet-34 encoder (downloaded on first use)."""
    from segcli.models.encoders import ENCODERS
    from segcli.models.registry import get_model_entry, models_for_mode, models_taking

    approaches: dict[str, str] = {}
    for spec in specs:
        label, _, name = spec.partition("=") if "=" in spec else (spec, "", spec)
        label, name = label.strip(), name.strip()
        if not label or not name:
            raise UsageError(f"--approaches: {spec!r} is neither NAME nor LABEL=NAME")
        if label in approaches:
            raise UsageError(f"--approaches: {label} is given twice; give the second one a label, e.g. {label}2={name}")
        base, _, encoder = name.partition(":")
        entry = get_model_entry(base)
        if "semantic" not in entry.modes:
            raise UsageError(f"--approaches: {base} is not a semantic model; compare measures semantic segmentation")
        if encoder and base not in models_taking("encoder"):
            takes = sorted(set(models_taking("encoder")) & set(models_for_mode("semantic")))
            raise UsageError(f"--approaches {name}: {base} has a fixed encoder; give an encoder to {', '.join(takes)}")
        if encoder and encoder not in ENCODERS:
            raise UsageError(f"--approaches {name}: unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        approaches[label] = name
    return approaches


def _notify(callback: Callback | None, event: str, **info) -> None:
    if callback is not None:
        callback(event, **info)


def compare(config: CompareConfig, callback: Callback | None = None) -> CompareResults:
    """Run the whole comparison; returns its records (results.json holds `to_dict()`)."""
    approaches = parse_approaches(tuple(config.approaches))
    if not approaches:
        raise UsageError("--approaches: name at least one model, e.g. --approaches unet,fcn")
    for path in config.weights.values():
        read_card(path)  # a missing or foreign checkpoint is named before the data is made
    unknown = sorted(set(config.weights) - set(approaches))
    if unknown:
        raise UsageError(f"--weights {unknown[0]}=...: {unknown[0]} is not one of --approaches "
                         f"({', '.join(approaches)})")
    preset = _preset(config)
    device = resolve_device(config.device)
    io.prepare_out_dir(config.out)
    data_path = config.data or _make_synthetic(config, preset, callback)
    seeds = _seeds(config, preset)
    results = CompareResults(
        command=shlex.join(config.command), data=str(data_path), seed=config.seed, seeds=seeds, quick=config.quick,
        img_size=preset.img_size, sizes=list(preset.sizes),
        budget=f"{config.epochs} epochs" if config.epochs else f"{preset.steps} steps of batch {preset.batch_size}",
        boundary_tolerances_px=list(BOUNDARY_TOLERANCES_PX), environment=_environment(device))
    began = time.perf_counter()
    val_samples = None
    trained, timed = {}, {}
    for label, name in approaches.items():
        runs = []
        for seed in ([None] if label in config.weights else seeds):
            model, card, train_seconds, split_sizes, reused = _train_or_load(
                label, name, seed, config, preset, data_path, callback)
            if val_samples is None:
                val_samples = _validation_samples(data_path, config)
                results.train_images, results.val_images = split_sizes[0], len(val_samples)
                results.classes = _label_space(card).names
                results.interior_pixels = _interior_pixels(val_samples, len(results.classes))
            _notify(callback, "evaluate", approach=label, seed=seed)
            scores, predictions = _score(model, card, val_samples, device)
            runs.append(Run(seed=seed, train_seconds=train_seconds, reused=reused, **scores))
            if len(runs) == 1:
                first = (model, card, predictions)
        model, card, predictions = first
        measured = _measure(label, name, model, preset, config, device, callback)
        results.approaches[label] = Approach(**measured, **compare_report.seed_summary(runs), runs=runs)
        trained[label] = (card, predictions)
        timed[label] = model
    _time_interleaved(timed, results.approaches, preset.sizes, device, callback)
    results.wall_seconds = time.perf_counter() - began
    _write_outputs(config.out, results, trained, val_samples, config.grid_images)
    _notify(callback, "done", out=str(config.out))
    return results


def _environment(device: torch.device) -> Environment:
    return Environment(device=str(device), threads=torch.get_num_threads(), torch=torch.__version__,
                       python=platform.python_version(), machine=platform.machine(),
                       processor=platform.processor() or platform.machine())


def _make_synthetic(config: CompareConfig, preset: ComparePreset, callback: Callback | None) -> Path:
    from segcli.data.synth import generate

    out = config.out / "data"
    _notify(callback, "data", path=str(out), kind="context", n=preset.n_images)
    return generate("context", out, n=preset.n_images, size=preset.img_size, seed=config.seed)


def _train_or_load(label, name, seed, config, preset, data_path, callback):
    from segcli.checkpoint import load_checkpoint
    from segcli.services.train import TrainConfig, train

    if seed is None:
        model, card = load_checkpoint(config.weights[label])
        return model, card, 0.0, (card.get("data", {}).get("train_images", 0), None), False
    train_config = TrainConfig(
        data=data_path,
        data_format=config.data_format,
        binary=config.binary,
        model=name.partition(":")[0],
        encoder=name.partition(":")[2] or None,  # NAME:ENCODER, an ImageNet encoder (pretrained) under NAME's decoder
        mode="semantic",
        steps=None if config.epochs else preset.steps,
        epochs=config.epochs,
        batch_size=preset.batch_size,
        # Windows at the images' own scale, as validation predicts them: resized crops would train ISBI's 512 px
        # images at a quarter to a half of the scale they are scored at, and thin membranes would not survive it.
        crop=preset.img_size,
        scale=1.0,
        seed=seed,
        split_seed=config.seed,  # every seed validates on the same images
        device=config.device,
        out=config.out / "runs" / (label if len(_seeds(config, preset)) == 1 else f"{label}-seed{seed}"),
        val_every=0,
        val_limit=1,  # compare scores every model itself: the trainer's closing validation would repeat it
        command=["segcli", "compare", f"(training {label}, seed {seed})"],
    )
    reused = finished_run(train_config)
    if reused is not None:  # an interrupted or split-up compare: this approach and seed are trained already
        _notify(callback, "reuse", approach=label, seed=seed, path=str(reused[0]))
        model, card = load_checkpoint(reused[0])
        return model, card, reused[1], (card["data"]["train_images"], card["data"]["val_images"]), True
    start = time.perf_counter()

    def relay(event: str, **info) -> None:
        _notify(callback, "train:" + event, approach=label, seed=seed, **info)

    result = train(train_config, callback=relay)
    seconds = time.perf_counter() - start
    model, card = load_checkpoint(result.last)
    return model, card, seconds, (result.train_images, result.val_images), False


def finished_run(train_config) -> tuple[Path, float] | None:
    """OUT/runs/<label>[-seed<s>]/last.safetensors and its training seconds, if that run finished with this very
    configuration (the card records it), so that rerunning compare in the same OUT trains only what is missing."""
    import json
    from dataclasses import asdict

    from segcli.checkpoint import checkpoint_paths

    weights, card_path = checkpoint_paths(Path(train_config.out) / "last")
    log = Path(train_config.out) / "metrics.jsonl"
    if not (weights.is_file() and card_path.is_file() and log.is_file()):
        return None
    card = json.loads(card_path.read_text(encoding="utf-8"))
    wanted = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(train_config).items() if k != "command"}
    if card.get("training") != wanted or (train_config.steps is not None and card.get("step") != train_config.steps):
        return None
    return weights, float(json.loads(log.read_text(encoding="utf-8").splitlines()[-1])["seconds"])


def _seeds(config: CompareConfig, preset: ComparePreset) -> list[int]:
    return [config.seed + i for i in range(preset.seeds)]


def _validation_samples(data_path: Path, config: CompareConfig) -> list:
    from segcli.data import load_dataset

    dataset = load_dataset(data_path, format=config.data_format, split="val", seed=config.seed, binary=config.binary)
    return [dataset[i] for i in range(len(dataset))]


def _measure(label, name, model, preset, config, device, callback) -> dict:
    """What does not depend on the seed (`Approach`'s cost fields): size, receptive field and memory (of the first
    seed's model); latency is timed later, every approach in turn."""
    from segcli.models.facts import model_facts

    facts = model_facts(name.partition(":")[0], size=preset.img_size, model=model)
    entry = {
        "model": name,
        "params": facts["parameters"],
        "gflops": facts["gflops"],
        "receptive_field": facts["receptive_field"],
        "size_multiple": facts["size_multiple"],
        "latency_ms": {},
        "peak_memory_mb": {},
    }
    for size in preset.sizes:
        entry["peak_memory_mb"][str(size)] = peak_memory_mb(model, size, device)
    if name == "sliding":
        entry["sliding_inference"] = _sliding_naive_vs_dense(model, config.naive_size or min(preset.sizes), device)
    return entry


def _time_interleaved(models: dict, entries: dict[str, Approach], sizes: tuple[int, ...], device, callback,
                      repeats: int = 5) -> None:
    """Median batch-1 latency of every approach at every size, the approaches taken in turn within each repeat:
    on a shared CPU the load changes over minutes, and timing one approach after another would put the change
    into their ratios (the claims compare ratios)."""
    for size in sizes:
        _notify(callback, "time", approach=", ".join(models), size=size)
        times: dict[str, list[float]] = {label: [] for label in models}
        for repeat in range(repeats):
            for label, model in models.items():
                times[label].append(latency_ms(model, size, device, repeats=1, warmup=1 if repeat == 0 else 0))
        for label in models:
            entries[label].latency_ms[str(size)] = float(np.median(times[label]))


def _score(model, card, samples, device) -> tuple[dict, list]:
    """One trained model on the validation split: eval's metrics, summed from per-image counts that are kept.

    Per image: the confusion matrix, per-class hits and totals deep inside objects, and boundary F1
    at eval's default tolerance and at BOUNDARY_TOLERANCES_PX; when the classes are several things and stuff,
    also of the objects' outlines alone (thing vs stuff), which a cow taken for a goat does not move. The
    dataset's mIoU is the summed matrix's (as eval computes it), its boundary F1 the mean over images
    (Csurka et al., as eval).
    """
    from segcli.inference import predict_arrays
    from segcli.metrics import ConfusionMatrix, boundary_f1

    space = _label_space(card)
    num_classes = space.num_classes
    things = np.array([space.isthing[i] if i < num_classes else False for i in range(256)])
    # Two thing classes or more, and stuff: the outlines of objects too. With one thing class (nuclei, ISBI's
    # foreground) the outlines are the class boundaries, already scored.
    object_boundaries = 2 <= things[:num_classes].sum() < num_classes
    predictions = predict_arrays(model, card, [s.image for s in samples], device=device)
    confusion, hits, totals = [], [], []
    tolerances = ["default", *map(str, BOUNDARY_TOLERANCES_PX)]
    boundary = {key: [] for key in tolerances + ([f"objects-{t}" for t in tolerances] if object_boundaries else [])}
    for sample, prediction in zip(samples, predictions):
        matrix = ConfusionMatrix(num_classes)
        matrix.update(sample.semantic, prediction.semantic)
        confusion.append(matrix.matrix.tolist())
        inside = _interior(sample.semantic, margin=compare_report.INTERIOR_MARGIN)
        truth = sample.semantic[inside]
        truth_ok = truth[truth < num_classes]
        right = truth_ok[prediction.semantic[inside][truth < num_classes] == truth_ok]
        totals.append(np.bincount(truth_ok, minlength=num_classes)[:num_classes].tolist())
        hits.append(np.bincount(right, minlength=num_classes)[:num_classes].tolist())
        for key in boundary:
            tolerance = key.removeprefix("objects-")
            tolerance = None if tolerance == "default" else float(tolerance)
            gt, pred = sample.semantic, prediction.semantic
            if key.startswith("objects-"):  # thing vs stuff only: where objects end, whichever thing class they are
                gt, pred = np.where(gt == 255, 255, things[gt]).astype(np.uint8), things[pred].astype(np.uint8)
            boundary[key].append(boundary_f1(gt, pred, tolerance, num_classes=num_classes))
    images = ImageCounts(confusion=confusion, interior_hits=hits, interior_totals=totals, boundary_f1=boundary)
    summed = ConfusionMatrix(num_classes)
    summed.merge(np.asarray(confusion, np.int64).sum(0))
    scores = {**compare_report.image_metrics(images), "per_class": summed.compute(space.names)["per_class"],
              **compare_report.majority(images, space.names), "images": images}
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


def _interior_pixels(samples: list, num_classes: int) -> list[int]:
    """Per class, the validation pixels deep inside objects: what the context claim's interior accuracy rests on."""
    counts = np.zeros(num_classes, np.int64)
    for sample in samples:
        truth = sample.semantic[_interior(sample.semantic, margin=compare_report.INTERIOR_MARGIN)]
        counts += np.bincount(truth[truth < num_classes], minlength=num_classes)[:num_classes]
    return counts.tolist()


def _sliding_naive_vs_dense(model, size: int, device: torch.device) -> SlidingInference:
    """Time the same weights run naively (every window cut out) and densely, and check they agree."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    outputs, times = {}, {}
    original = model.inference
    try:
        for kind in ("dense", "naive"):
            model.inference = kind
            # One naive pass takes seconds: no warm-up pass is needed to time it, and it would double the cost.
            naive = kind == "naive"
            times[kind] = latency_ms(model, size, device, repeats=1 if naive else 5, warmup=0 if naive else 1,
                                     max_seconds=120)
            with torch.inference_mode():
                outputs[kind] = model(x)["semantic"]
    finally:
        model.inference = original
    return SlidingInference(size=size, naive_ms=times["naive"], dense_ms=times["dense"],
                            speedup=times["naive"] / times["dense"],
                            max_abs_diff=float((outputs["naive"] - outputs["dense"]).abs().max()))


def _write_outputs(out: Path, results: CompareResults, trained: dict, samples: list, grid_images: int) -> None:
    rows = compare_report.summary_rows(results)
    results.save(out / "results.json")
    compare_report.write_csv(out / "results.csv", rows)
    compare_report.write_report(out / "report.md", results, rows)
    compare_report.plot_scaling(out / "scaling.png", results)
    compare_report.plot_tradeoff(out / "tradeoff.png", results)
    _write_grid(out / "grid.png", trained, samples[:grid_images])
    compare_report.write_html_report(out / "report.html", results)  # last: it shows the plots beside it


def _write_grid(path: Path, trained: dict, samples: list) -> Path:
    """Rows of validation images: input | ground truth | each approach's prediction, labelled."""
    from segcli import draw

    space = _label_space(next(iter(trained.values()))[0])  # the first seed's predictions of each approach
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
