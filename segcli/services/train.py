"""`segcli train`: one training loop for every model family and mode.

Like minGPT's Trainer it never prints: it calls `callback(event, **info)` with events
"start", "step", "validation", "checkpoint", "stop" and "done", and the caller decides what to
show. Losses come from `model.compute_losses` as a dict and the loop minimises their sum.
Runs under torchrun use DistributedDataParallel; only rank 0 writes checkpoints and reports.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from segcli import distributed
from segcli.checkpoint import load_training_state, make_card, save_checkpoint, save_training_state
from segcli.data import check_dataset, load_dataset
from segcli.data.loader import TransformedDataset, collate
from segcli.data.transforms import build_transform
from segcli.device import resolve_device
from segcli.errors import ModelError, UsageError
from segcli.inference import predict_arrays
from segcli.models.registry import build_model, get_model_entry, models_for_mode
from segcli.services.evaluate import PRIMARY_METRIC, score_predictions
from segcli.structures import IGNORE_INDEX, Sample

Callback = Callable[..., None]


@dataclass
class TrainConfig:
    data: Path  # dataset folder or COCO json
    model: str  # zoo name
    mode: str = "semantic"  # semantic | instance | panoptic
    data_format: str = "auto"
    out: Path | None = None  # default runs/<model>-<mode>, numbered if it exists (unless resuming)
    epochs: int | None = None  # budget in passes over the training split...
    steps: int | None = None  # ...or in optimiser steps (default: 30 epochs)
    batch_size: int = 8
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    img_size: int = 256  # training crop side
    seed: int = 0
    resume: bool = False  # continue from OUT/last with optimiser, schedule and RNG state
    device: str = "auto"
    width: int | None = None  # base channel width (None: the builder's default)
    dice: float = 0.0  # weight of the Dice loss added to cross-entropy (semantic models)
    class_weights: str = "none"  # "auto": inverse square-root class frequency (semantic models)
    schedule: str = "poly"  # poly | cosine, after a linear warm-up
    warmup: int | None = None  # warm-up steps (default 5% of the run)
    clip: float = 1.0  # gradient norm clipping (0: off)
    val_every: int | None = None  # validate every N steps (None: each epoch; 0: only at the end)
    patience: int | None = None  # stop after this many validations without improvement
    bf16: bool = False  # bfloat16 autocast (CPUs with AVX-512 BF16, recent GPUs)
    amp: bool = False  # float16 autocast with gradient scaling on CUDA
    workers: int = 0  # DataLoader worker processes
    val_limit: int | None = None  # validate on at most this many images (speed)
    classes: Path | None = None
    binary: bool = False
    val: Path | None = None
    images: Path | None = None
    masks: Path | None = None
    command: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class TrainResult:
    out: Path
    best: Path
    last: Path
    metrics: dict
    steps: int
    seconds: float
    train_images: int
    val_images: int


class _LossModule(torch.nn.Module):
    """DistributedDataParallel synchronises gradients through forward(): route compute_losses through it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        return self.model.compute_losses(images, targets)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _out_dir(config: TrainConfig) -> Path:
    if config.out is not None:
        return Path(config.out)
    base = Path("runs") / f"{config.model}-{config.mode}"
    if config.resume or not base.exists():
        return base
    n = 2
    while Path(f"{base}{n}").exists():
        n += 1
    return Path(f"{base}{n}")


def _datasets(config: TrainConfig):
    options = dict(classes=config.classes, binary=config.binary, val=config.val, images=config.images,
                   masks=config.masks, seed=config.seed)
    train_set = load_dataset(config.data, config.data_format, "train", **options)
    val_set = load_dataset(config.data, train_set.format, "val", **options)
    return train_set, val_set


def _model_args(config: TrainConfig, label_space) -> dict:
    builder = get_model_entry(config.model).builder
    accepted = inspect.signature(builder).parameters
    args = {"num_classes": label_space.num_classes}
    if config.width is not None:
        args["width"] = config.width
    if "thing_classes" in accepted:
        args["thing_classes"] = label_space.thing_indices
    if config.model.startswith("tv_"):
        args["pretrained"] = False
    return {k: v for k, v in args.items() if k in accepted}


def _class_weights(dataset, num_classes: int) -> torch.Tensor:
    """Inverse square-root frequency over up to 64 training masks, normalised to mean 1."""
    counts = np.ones(num_classes)
    for i in range(0, len(dataset), max(1, len(dataset) // 64)):
        semantic = dataset[i].semantic
        values = semantic[semantic != IGNORE_INDEX]
        counts += np.bincount(values.ravel(), minlength=num_classes)[:num_classes]
    weights = 1.0 / np.sqrt(counts / counts.sum())
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def _schedule(optimizer, total: int, warmup: int, kind: str):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else (1 - progress) ** 0.9

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _validate(model, card, samples: list[Sample], mode: str, label_space, device) -> dict:
    """Each rank predicts its share; every rank scores the gathered pairs with eval's code."""
    share = samples[distributed.rank():: max(1, distributed.world_size())] if distributed.is_distributed() else samples
    predictions = predict_arrays(model, card, [s.image for s in share], device=device)
    # Ground truth travels between ranks without pixels: an (H, W, 0) image keeps only the size.
    light = [(Sample(image=np.empty((*s.image.shape[:2], 0), np.uint8), name=s.name, semantic=s.semantic, instances=s.instances, panoptic=s.panoptic,
                     segments=s.segments), p) for s, p in zip(share, predictions)]
    pairs = [pair for part in distributed.gather_objects(light) for pair in part]
    return score_predictions(pairs, mode, label_space)


def _rng_state() -> dict:
    """The global generators (augmentation draws from them); the loader's is reseeded per epoch instead."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
    }


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate(_literal(state["python"]))


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The loader generator's seed for one epoch: its sample order and worker seeds depend on (seed, epoch, rank)
    alone, so a resumed run replays any epoch without knowing how far the generator had advanced."""
    entropy = [seed % 2**32, epoch] + ([rank] if rank else [])  # single-process runs: (seed, epoch), as measured in docs
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _literal(text: str):
    import ast

    return ast.literal_eval(text)


def train(config: TrainConfig, callback: Callback | None = None) -> TrainResult:
    """Train, validate and checkpoint; returns where the checkpoints are and the best metrics."""
    notify = callback if callback is not None else (lambda *a, **k: None)
    device = distributed.setup(resolve_device(config.device))
    try:
        result = _train(config, device, notify if distributed.is_main() else (lambda *a, **k: None))
    except BaseException:
        distributed.teardown(clean=False)
        raise
    distributed.teardown()
    return result


def _train(config: TrainConfig, device: torch.device, notify: Callback) -> TrainResult:
    if config.mode not in get_model_entry(config.model).modes:
        raise ModelError(f"{config.model} cannot do --mode {config.mode}; models that can: {', '.join(models_for_mode(config.mode))}")
    if config.epochs is not None and config.steps is not None:
        raise UsageError("give --epochs or --steps, not both")
    if config.amp and device.type != "cuda":
        raise UsageError("--amp (float16 with gradient scaling) needs CUDA; on a CPU use --bf16")
    # Each rank its own augmentation stream; DistributedDataParallel copies rank 0's initial weights to all.
    seed_everything(config.seed + distributed.rank())
    train_set, val_set = _datasets(config)
    for warning in check_dataset(train_set, config.mode):
        notify("warning", message=f"{train_set.root}: {warning}")
    label_space = train_set.label_space
    model_args = _model_args(config, label_space)
    model = build_model(config.model, **model_args).to(device)
    if config.dice:
        model.dice_weight = config.dice
    if config.class_weights == "auto" and config.mode == "semantic":
        model.class_weights = _class_weights(train_set, label_space.num_classes)
    out = _out_dir(config)
    mean = getattr(model, "mean", None)
    card = make_card(config.model, model_args, config.mode, label_space, img_size=config.img_size,
                     command=config.command, data={"path": str(config.data), "format": train_set.format,
                                                   "fingerprint": train_set.fingerprint(),
                                                   "train_images": len(train_set), "val_images": len(val_set)},
                     training={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "command"})
    if mean is not None:
        card["normalization"] = {"mean": list(model.mean), "std": list(model.std)}

    transform = build_transform(config.mode, True, config.img_size, *map(tuple, card["normalization"].values()))
    dataset = TransformedDataset(train_set, transform)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = DistributedSampler(dataset, seed=config.seed, drop_last=True) if distributed.is_distributed() else \
        RandomSampler(dataset, generator=generator)
    if len(sampler) == 0:
        raise UsageError(f"{config.data}: no training images for {distributed.world_size()} processes")
    batch_size = min(config.batch_size, len(sampler))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
                        num_workers=config.workers, worker_init_fn=_seed_worker, generator=generator)
    # Not persistent_workers: fresh workers each epoch are seeded from (seed, epoch), which keeps --resume exact.
    steps_per_epoch = len(loader)
    total = config.steps or (config.epochs or 30) * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _schedule(optimizer, total, config.warmup if config.warmup is not None else max(1, total // 20), config.schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
    step, start_epoch, best, best_metrics, stale = 0, 0, None, {}, 0
    skip, rng = 0, None  # batches of start_epoch trained before a mid-epoch save; the RNG state at that save
    if config.resume:
        state = load_training_state(out / "last")
        from segcli.checkpoint import load_checkpoint

        loaded, _ = load_checkpoint(out / "last", device=device)
        model.load_state_dict(loaded.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # One RNG state per rank (a plain dict from a single-process run).
        rng = state["rng"] if isinstance(state["rng"], dict) else state["rng"][min(distributed.rank(), len(state["rng"]) - 1)]
        _restore_rng(rng)
        step, start_epoch, best, best_metrics, stale = state["step"], state["epoch"], state["best"], state["best_metrics"], state["stale"]
        skip = state.get("epoch_batches", 0)
    trainer = _LossModule(model)
    if distributed.is_distributed():
        trainer = DistributedDataParallel(trainer, device_ids=[device.index] if device.type == "cuda" else None)
    val_samples = [val_set[i] for i in range(len(val_set) if config.val_limit is None else min(config.val_limit, len(val_set)))]
    primary = PRIMARY_METRIC[config.mode]
    notify("start", out=str(out), total_steps=total, epochs=epochs, train_images=len(train_set), val_images=len(val_set),
           device=str(device), model=config.model, resumed_at=step)
    began = time.perf_counter()
    metrics: dict = {}
    stop = False

    def validate_and_save(epoch: int, batches: int) -> None:
        """After `batches` batches of epoch `epoch` (0-based): validate, then save best, last and the resume state."""
        nonlocal best, best_metrics, stale, stop, metrics
        finished = batches >= steps_per_epoch
        epoch_done = epoch + 1 if finished else round(epoch + batches / steps_per_epoch, 4)
        model.eval()
        distributed.broadcast_buffers(model)  # validate (and save) the same model on every rank
        sync = _rank_sync(model)
        metrics = _validate(model, card, val_samples, config.mode, label_space, device)
        rng_states = distributed.gather_objects(_rng_state())
        score = metrics[primary] if metrics[primary] is not None else 0.0  # None: nothing to score in the split
        improved = best is None or score > best
        if improved:
            best, best_metrics, stale = score, metrics, 0
        else:
            stale += 1
        notify("validation", step=step, epoch=epoch_done, metrics=metrics, primary=primary, best=best, improved=improved)
        if distributed.is_main():
            summary = {k: v for k, v in metrics.items() if not isinstance(v, list)}
            card.update(sync)
            if improved:
                save_checkpoint(out / "best", model, {**card, "metrics": summary, "epoch": epoch_done, "step": step})
            save_checkpoint(out / "last", model, {**card, "metrics": summary, "epoch": epoch_done, "step": step})
            save_training_state(out / "last", {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                               "rng": rng_states, "step": step, "best": best, "best_metrics": best_metrics,
                                               "stale": stale, "epoch": epoch + 1 if finished else epoch,
                                               "epoch_batches": 0 if finished else batches})
            _append_log(out / "metrics.jsonl", {"step": step, "epoch": epoch_done, "seconds": round(time.perf_counter() - began, 1),
                                                "lr": scheduler.get_last_lr()[0], "best": improved, **summary})
            notify("checkpoint", path=str(out / "last.safetensors"), best=improved, epoch=epoch_done, step=step)
        distributed.barrier()
        if config.patience is not None and stale >= config.patience:
            stop = True
            notify("stop", reason=f"no improvement in {primary} for {stale} validations")
        model.train()

    model.train()
    for epoch in range(start_epoch, epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        generator.manual_seed(_epoch_seed(config.seed, epoch, distributed.rank()))
        batches, done = iter(loader), 0
        if skip:  # resuming mid-epoch: replay this epoch's order up to the save, then its RNG state
            for _ in range(skip):
                next(batches)
            _restore_rng(rng)
            done, skip = skip, 0
        for images, targets in batches:
            if step >= total:
                break
            done += 1
            tick = time.perf_counter()
            images = images.to(device, non_blocking=True)
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=torch.float16 if config.amp else torch.bfloat16,
                                enabled=config.amp or config.bf16):
                losses = trainer(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise ModelError(f"the loss became {float(loss)} at step {step}; lower --lr (now {config.lr}) or check the labels")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            notify("step", step=step, total_steps=total, epoch=epoch + 1, epochs=epochs, steps_per_epoch=steps_per_epoch, loss=float(loss.detach()),
                   losses={k: float(v.detach()) for k, v in losses.items()}, lr=scheduler.get_last_lr()[0],
                   images_per_s=len(images) * distributed.world_size() / (time.perf_counter() - tick))
            if config.val_every and step % config.val_every == 0 and step < total:
                validate_and_save(epoch, done)
                if stop:
                    break
        if stop:
            break
        if step >= total or config.val_every is None:
            validate_and_save(epoch, done)
            if stop or step >= total:
                break
    seconds = time.perf_counter() - began
    result = TrainResult(out, out / "best.safetensors", out / "last.safetensors", best_metrics or metrics, step, seconds,
                         len(train_set), len(val_set))
    notify("done", out=str(out), best=str(result.best), metrics=result.metrics, steps=step, seconds=seconds)
    return result


def _rank_sync(model: torch.nn.Module) -> dict:
    """Under torchrun: world size and each rank's weight digest, for the card (they must all agree)."""
    if not distributed.is_distributed():
        return {}
    digests = distributed.gather_objects(distributed.weights_digest(model))
    return {"distributed": {"world_size": len(digests), "backend": torch.distributed.get_backend(), "rank_weight_sha256": digests}}


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _append_log(path: Path, record: dict) -> None:
    """One JSON line per validation, so a run can be followed (`tail -f`) and plotted; a resumed run appends."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
