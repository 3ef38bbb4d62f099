"""The training loop, one `Trainer` for every model family and mode (minGPT's Trainer is the model).

    build (loader, optimiser, schedule) -> resume (optional) -> step ... -> validate and save -> ... -> done

Its progress lives in one `TrainState`; it never prints but sends events to its callbacks,
`callback(event, **info)`: "start", "step", "validation", "checkpoint", "stop" and "done". Loggers
(TensorBoard, MLflow, curves.png: `segcli.training.loggers`) are callbacks like any other.
Losses come from `model.compute_losses` as a dict and the loop minimises their sum. Under torchrun
the loss goes through DistributedDataParallel; only rank 0 writes checkpoints.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from segcli import distributed
from segcli.checkpoint import card_scaling, load_checkpoint, load_training_state, save_checkpoint, save_training_state
from segcli.data.transforms import Packed, build_transform
from segcli.errors import ModelError, UsageError
from segcli.inference import DEFAULT_TILE, InferenceOptions, predict_arrays
from segcli.metrics import PRIMARY_METRIC, score_predictions
from segcli.preprocess import on_dark_ground
from segcli.structures import Sample
from segcli.training.config import TrainConfig
from segcli.training.ema import ema_model
from segcli.training.loader import (
    SeededSampler,
    TransformedDataset,
    cache_budget,
    collate,
    default_workers,
    quiet_when_orphaned,
)
from segcli.training.seeding import epoch_seed, restore_rng, rng_state

Callback = Callable[..., None]


@dataclass
class TrainState:
    """Where a run is; saved with `last` (all but `metrics` and `stop`) so that --resume continues it exactly."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # the epoch in progress (0-based)
    epoch_batches: int = 0  # batches of `epoch` trained so far
    best: float | None = None  # best primary metric so far
    best_metrics: dict = field(default_factory=dict)
    stale: int = 0  # validations since the best one
    metrics: dict = field(default_factory=dict)  # the latest validation's
    stop: bool = False  # early stopping (--patience) asked to end the run
    seconds: float = 0.0  # wall time of the run before this process (a resumed --time run counts it)


# Dense models train channels-last (NHWC), float32 and bfloat16 alike: oneDNN's convolutions, forward and backward,
# are faster in it on this CPU (a unet training step at 128 px, batch 8: width 16 1.13x in float32, 1.33x in
# bfloat16; width 32 1.17x and 1.21x; benchmarks/bench_train.py measures the step).
TRAINING_LAYOUT = torch.channels_last


class _LossModule(torch.nn.Module):
    """DistributedDataParallel synchronises gradients through forward(): route compute_losses through it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        return self.model.compute_losses(images, targets)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel wherever torch has one (CPU and CUDA, floating-point weights): one pass over
    each tensor instead of a dozen (measured here: 2.9 -> 1.1 ms a step for the default unet's 1.2 M weights,
    63 -> 22 ms for a resnet34 encoder's 24.5 M)."""
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """optimizer.load_state_dict, with each moment given its parameter's memory layout back. Saved state is
    contiguous (NCHW) while dense models train channels-last, and the fused kernel pairs a moment with its
    parameter element by element in memory: a moment in the other layout would update the wrong weights."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for param in group["params"]:
            moments = optimizer.state.get(param, {})
            for key, value in moments.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    moments[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def lr_schedule(optimizer, total: int, warmup: int, kind: str, clock: Callable[[], float] | None = None):
    """Linear warm-up over `warmup` steps, then poly (power 0.9) or cosine decay to zero at `total`.

    With `clock` (a time budget) the run's progress is clock(), the share of the time spent, instead of
    step / total: the warm-up is `warmup` steps if given, else the first 5% of the time, and the decay
    reaches zero when the time is up.
    """

    def decay(progress: float) -> float:
        progress = min(1.0, max(0.0, progress))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else (1 - progress) ** 0.9

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay((step - warmup) / max(1, total - warmup))

    def timed(step: int) -> float:
        share = clock()
        if warmup:
            return (step + 1) / warmup if step < warmup else decay(share)
        lead = 0.05
        return max(1e-3, share / lead) if share < lead else decay((share - lead) / (1 - lead))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor if clock is None else timed)


VALIDATION_SHARE = 0.1  # automatic cadence: validation takes at most this share of the wall time
FIRST_VALIDATION = 0.1  # ...and the first comes after this share of the run (its cost is not known before)
MIN_GAP = 0.02  # ...and validations are at least this share of the run apart
VALIDATION_COST = 1 / 30  # ...and one validation is expected to cost at most this share (else a subset is used)
INFERENCE_SPEEDUP = 2.5  # a forward pass costs about 1 / 2.5 of a training step's (forward + backward) per pixel
MIN_VALIDATION_IMAGES = 4
EXAMPLE_IMAGES = 4  # the first validation images (of rank 0's share) go with each "validation" event, predicted


class Trainer:
    """Trains `model` on `train_set`, validating on `val_samples` and saving into `out`.

    `card` is the checkpoint card written with every save; its "normalization" is the one the
    training transform applies. `config` gives the budget, optimiser and precision options.
    """

    def __init__(self, config: TrainConfig, model: torch.nn.Module, card: dict, train_set, val_samples: list[Sample],
                 *, out: Path, device: torch.device, callbacks: list[Callback] | None = None) -> None:
        self.config, self.model, self.card, self.out, self.device = config, model, card, out, device
        self.val_samples = val_samples
        self.label_space = train_set.label_space
        self.primary = PRIMARY_METRIC[config.mode]
        self.callbacks = list(callbacks or [])
        self.state = TrainState()
        self.began: float | None = None
        self._validation = (0.0, 0.0)  # (when the last validation ended, how long it took), perf_counter seconds
        self.validation_seconds = 0.0  # spent validating since this process started (metrics.jsonl: its share)
        self._trained = [0.0, 0]  # seconds spent in training steps, pixels trained (to predict validation's cost)
        self._losses = [0.0, 0]  # sum and count of the step losses since the last validation (metrics.jsonl)
        self.examples: list = []  # the last validation's (Sample, Prediction) pairs of the first images
        self.dense = model.dense  # the service converted a dense model to TRAINING_LAYOUT
        self._build_loader(train_set)
        self._build_optimizer()
        # --ema: the average is what validation scores and checkpoints hold; the optimiser trains `model`.
        self.ema = ema_model(model, config.ema) if config.ema else None

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validated and saved: the moving average with --ema, else the model trained."""
        return self.model if self.ema is None else self.ema.module

    def add_callback(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def emit(self, event: str, **info) -> None:
        for callback in self.callbacks:
            callback(event, **info)

    # ------------------------------------------------------------------ build

    def _build_loader(self, train_set) -> None:
        config = self.config
        mean, std = (tuple(self.card["normalization"][key]) for key in ("mean", "std"))
        transform = build_transform(config.mode, True, config.img_size, mean, std,
                                    crop=config.crop, scale=config.scale or 1.0,
                                    zoom=config.zoom or 0.0, rotate=bool(config.rotate),
                                    invert=bool(config.invert), stain=bool(config.stain))
        self.workers = default_workers() if config.workers is None else config.workers
        # Decoded samples kept across epochs (within the memory budget): crops as compact Packed copies.
        keep = functools.partial(_kept_sample, packed=config.crop is not None,
                                 dark_ground=card_scaling(self.card).dark_ground)
        dataset = TransformedDataset(train_set, transform, cache=keep, budget=cache_budget(self.workers))
        self.generator = torch.Generator().manual_seed(config.seed)  # the sample order: reseeded every epoch
        order = DistributedSampler(dataset, seed=config.seed, drop_last=True) if distributed.is_distributed() \
            else RandomSampler(dataset, generator=self.generator)
        if len(order) == 0:
            raise UsageError(f"{config.data}: no training images for {distributed.world_size()} processes")
        self.sampler = SeededSampler(order, config.seed, distributed.rank())
        self.batch_size = min(config.batch_size, len(order))
        # Workers persist (and keep their decoded samples): augmentation is seeded per sample, not per worker.
        # The loader's own generator only seeds the workers' base seed, which nothing draws from.
        self.loader = DataLoader(dataset, batch_size=self.batch_size, sampler=self.sampler, collate_fn=collate,
                                 drop_last=True, num_workers=self.workers, persistent_workers=self.workers > 0,
                                 worker_init_fn=quiet_when_orphaned,
                                 generator=torch.Generator().manual_seed(config.seed))
        self.steps_per_epoch = len(self.loader)
        if config.time is not None and config.time <= 0:
            raise UsageError(f"--time {config.time:g} s: give a positive duration, e.g. --time 20m")
        timed_only = config.time is not None and config.steps is None and config.epochs is None
        # A time budget alone: steps are unbounded and the clock ends the run (`finished`).
        self.total = 1 << 40 if timed_only else config.steps or (config.epochs or 30) * self.steps_per_epoch
        self.epochs = math.ceil(self.total / self.steps_per_epoch)
        self.budget_steps = None if timed_only else self.total  # what progress displays can show
        self.budget_epochs = None if timed_only else self.epochs

    def _build_optimizer(self) -> None:
        config = self.config
        self.optimizer = adamw(self.model, config.lr, config.weight_decay)
        if config.time is None:
            warmup = config.warmup if config.warmup is not None else max(1, self.total // 20)
            self.scheduler = lr_schedule(self.optimizer, self.total, warmup, config.schedule)
        else:
            self.scheduler = lr_schedule(self.optimizer, self.total, config.warmup or 0, config.schedule,
                                         clock=self.progress)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)

    # ------------------------------------------------------------------ resume

    def resume(self) -> None:
        """Continue from `out/last`: weights, optimiser, schedule, RNG and progress."""
        saved = load_training_state(self.out / "last")
        if "model" in saved:
            self.model.load_state_dict(saved["model"])
        else:  # a state written before the weights were part of it
            self.model.load_state_dict(load_checkpoint(self.out / "last", device=self.device)[0].state_dict())
        load_optimizer_state(self.optimizer, saved["optimizer"])
        if self.ema is not None and "ema" in saved:  # else (--ema added on resume) the average starts here
            self.ema.load_state_dict(saved["ema"])
        self.scheduler.load_state_dict(saved["scheduler"])
        # One RNG state per rank (a plain dict from a single-process run).
        rng = saved["rng"]
        restore_rng(rng if isinstance(rng, dict) else rng[min(distributed.rank(), len(rng) - 1)])
        self.state = TrainState(step=saved["step"], epoch=saved["epoch"], epoch_batches=saved.get("epoch_batches", 0),
                                best=saved["best"], best_metrics=saved["best_metrics"], stale=saved["stale"],
                                seconds=saved.get("seconds", 0.0))

    # ------------------------------------------------------------------ loop

    def run(self) -> TrainState:
        """Train until the step budget is spent or early stopping ends the run; returns the final state."""
        state = self.state
        self.loss_module = _LossModule(self.model)
        if distributed.is_distributed():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=device_ids)
        data = self.card["data"]  # the run's record of its data: image counts of both splits
        self.emit("start", out=str(self.out), total_steps=self.budget_steps, epochs=self.budget_epochs,
                  time=self.config.time, train_images=data["train_images"], val_images=data["val_images"],
                  device=str(self.device), model=self.config.model, resumed_at=state.step)
        self.began = time.perf_counter() - state.seconds
        self._validation = (time.perf_counter(), 0.0)
        self.model.train()
        for epoch in range(state.epoch, self.epochs):
            self._run_epoch(epoch)
            if state.stop or self.finished():
                break
        self.seconds = time.perf_counter() - self.began
        return state

    def elapsed(self) -> float:
        return 0.0 if self.began is None else time.perf_counter() - self.began

    def progress(self) -> float:
        """The share of the budget spent, in [0, 1]: steps, or time (keeping the last validation's length in
        reserve for the final one), whichever is further."""
        shares = [] if self.budget_steps is None else [self.state.step / self.total]
        if self.config.time is not None:
            shares.append(self.elapsed() / max(1e-9, self.config.time - self._validation[1]))
        return min(1.0, max(shares))

    def finished(self) -> bool:
        return self.progress() >= 1.0

    def _validation_due(self) -> bool:
        """--val-every N: every N steps. Default: when the training time since the last validation is 9x what it
        took (so validation is at most 10% of the run), at least 2% of the run apart, the first after 10%."""
        every = self.config.val_every
        if every is not None:
            return bool(every) and self.state.step % every == 0
        ended, took = self._validation
        if took == 0.0:
            return self.progress() >= FIRST_VALIDATION
        since = time.perf_counter() - ended
        return since >= took * (1 - VALIDATION_SHARE) / VALIDATION_SHARE and since >= MIN_GAP * self._run_seconds()

    def _run_seconds(self) -> float:
        """The run's expected length in seconds: the time budget, or extrapolated from the steps so far."""
        if self.config.time is not None:
            return self.config.time
        done = max(1, self.state.step) / max(1, self.total)
        return self.elapsed() / done

    def _epoch_batches(self, epoch: int):
        """This epoch's batches; resuming mid-epoch, from the first batch not yet trained (no replay: each sample's
        augmentation depends on its position alone, and the global generators were restored by `resume`)."""
        state = self.state
        if isinstance(self.sampler.sampler, DistributedSampler):
            self.sampler.sampler.set_epoch(epoch)
        self.generator.manual_seed(epoch_seed(self.config.seed, epoch, distributed.rank()))
        skip = state.epoch_batches if epoch == state.epoch else 0
        self.sampler.start(epoch, skip * self.batch_size)
        state.epoch, state.epoch_batches = epoch, skip
        return iter(self.loader)

    def _run_epoch(self, epoch: int) -> None:
        state = self.state
        for images, targets in self._epoch_batches(epoch):
            if self.finished():
                break
            state.epoch_batches += 1
            self._step(images, targets, epoch)
            if self._validation_due() and not self.finished():
                self.validate_and_save()
                if state.stop:
                    return
        if self.finished():
            self.validate_and_save()

    def _step(self, images: torch.Tensor, targets: list[dict], epoch: int) -> None:
        """One optimiser step on one batch."""
        config, state, device = self.config, self.state, self.device
        tick = time.perf_counter()
        images = images.to(device, non_blocking=True)
        if self.dense:
            images = images.contiguous(memory_format=TRAINING_LAYOUT)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=torch.float16 if config.amp else torch.bfloat16,
                            enabled=config.amp or config.bf16):
            losses = self.loss_module(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise ModelError(f"the loss became {float(loss)} at step {state.step}; "
                             f"lower --lr (now {config.lr}) or check the labels")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if config.clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        state.step += 1
        self._trained[0] += time.perf_counter() - tick
        self._trained[1] += images.shape[0] * images.shape[-2] * images.shape[-1]
        loss_value = float(loss.detach())
        self._losses[0] += loss_value
        self._losses[1] += 1
        self.emit("step", step=state.step, total_steps=self.budget_steps, epoch=epoch + 1, epochs=self.budget_epochs,
                  seconds=self.elapsed(), progress=self.progress(),
                  steps_per_epoch=self.steps_per_epoch, loss=loss_value,
                  losses={k: float(v.detach()) for k, v in losses.items()}, lr=self.scheduler.get_last_lr()[0],
                  images_per_s=len(images) * distributed.world_size() / (time.perf_counter() - tick))

    # ------------------------------------------------------------------ validate and save

    def validate_and_save(self) -> None:
        """Validate the model as it is now, keep the best score, save best, last and the resume state."""
        state = self.state
        began = time.perf_counter()
        # Validate (and save, and resume) the same weights on every rank; the same order on every rank too.
        for model in (self.model,) if self.ema is None else (self.model, self.ema.module):
            model.eval()
            distributed.broadcast_buffers(model)
        sync = _rank_sync(self.evaluated)
        state.metrics = self._validate()
        self.validation_seconds += time.perf_counter() - began
        rng_states = distributed.gather_objects(rng_state())
        score = state.metrics[self.primary]
        score = score if score is not None else 0.0  # None: nothing to score in the split
        improved = state.best is None or score > state.best
        if improved:
            state.best, state.best_metrics, state.stale = score, state.metrics, 0
        else:
            state.stale += 1
        self.emit("validation", step=state.step, epoch=self._epochs_done(), metrics=state.metrics, primary=self.primary,
                  best=state.best, improved=improved, seconds=self.elapsed(), examples=self.examples)
        if distributed.is_main():
            self.card.update(sync)
            self._save(improved, rng_states)
        distributed.barrier()
        if self.config.patience is not None and state.stale >= self.config.patience:
            state.stop = True
            self.emit("stop", reason=f"no improvement in {self.primary} for {state.stale} validations")
        self.model.train()
        self._validation = (time.perf_counter(), time.perf_counter() - began)

    def _affordable_validation(self) -> None:
        """Default cadence, first validation: if the whole split would cost more than VALIDATION_COST of the run
        (predicted from the training steps' speed per pixel), keep the largest prefix that does not (at least
        MIN_VALIDATION_IMAGES), the same images for every validation, and say so."""
        if self.config.val_every is not None or self.config.val_limit is not None or self._validation[1] \
                or not self._trained[1] or distributed.is_distributed():  # ranks would time it differently
            return
        per_pixel = self._trained[0] / self._trained[1] / INFERENCE_SPEEDUP
        whole = per_pixel * sum(s.image.shape[0] * s.image.shape[1] for s in self.val_samples)
        allowed, spent, keep = VALIDATION_COST * self._run_seconds(), 0.0, 0
        for sample in self.val_samples:
            spent += per_pixel * sample.image.shape[0] * sample.image.shape[1]
            if spent > allowed and keep >= MIN_VALIDATION_IMAGES:
                break
            keep += 1
        if keep < len(self.val_samples):
            self.emit("warning", message=f"validating on {keep} of {len(self.val_samples)} images (about "
                      f"{whole:.0f} s each time for all) to keep validation under {VALIDATION_SHARE:.0%} of the run; "
                      "--val-limit or --val-every choose otherwise, and eval --data scores every image")
            self.val_samples = self.val_samples[:keep]
            self.card["data"]["validated_images"] = keep

    def _validate(self) -> dict:
        """Each rank predicts its share; every rank scores the gathered pairs with eval's code."""
        self._affordable_validation()
        samples = self.val_samples
        if distributed.is_distributed():
            samples = samples[distributed.rank():: max(1, distributed.world_size())]
        # Whole images at the card's scale, tiled where large, as predict runs them (a prepared copy); in the
        # training's precision.
        options = InferenceOptions(tile=DEFAULT_TILE, dtype=torch.bfloat16 if self.config.bf16 else torch.float32)
        predictions = predict_arrays(self.evaluated, self.card, [s.image for s in samples], device=self.device,
                                     options=options)
        self.examples = list(zip(samples[:EXAMPLE_IMAGES], predictions[:EXAMPLE_IMAGES]))
        # Ground truth travels between ranks without pixels: an (H, W, 0) image keeps only the size.
        light = [(Sample(image=np.empty((*s.image.shape[:2], 0), np.uint8), name=s.name, semantic=s.semantic,
                         instances=s.instances, panoptic=s.panoptic, segments=s.segments), p)
                 for s, p in zip(samples, predictions)]
        pairs = [pair for part in distributed.gather_objects(light) for pair in part]
        return score_predictions(pairs, self.config.mode, self.label_space)

    def _epochs_done(self) -> float:
        """Epochs trained, fractional after a mid-epoch validation."""
        state = self.state
        if state.epoch_batches >= self.steps_per_epoch:
            return state.epoch + 1
        return round(state.epoch + state.epoch_batches / self.steps_per_epoch, 4)

    def _save(self, improved: bool, rng_states: list) -> None:
        """best (if improved), last, the resume state beside last, and one line of metrics.jsonl."""
        state, out = self.state, self.out
        finished = state.epoch_batches >= self.steps_per_epoch
        epoch_done = self._epochs_done()
        summary = {k: v for k, v in state.metrics.items() if not isinstance(v, list)}
        card = {**self.card, "metrics": summary, "epoch": epoch_done, "step": state.step}
        train_loss = self._losses[0] / self._losses[1] if self._losses[1] else None
        self._losses = [0.0, 0]
        if improved:
            save_checkpoint(out / "best", self.evaluated, card)
        save_checkpoint(out / "last", self.evaluated, card)
        # The weights go into the state too: resuming from the state alone is exact even when a kill came between
        # writing last.safetensors and the state (last's weights would then be a validation ahead of the state).
        weights = {k: v.detach().clone() for k, v in getattr(self.model, "module", self.model).state_dict().items()}
        ema = {} if self.ema is None else {"ema": {k: v.detach().clone() for k, v in self.ema.state_dict().items()}}
        save_training_state(out / "last", {
            **ema, "model": weights, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_states,
            "step": state.step, "seconds": self.elapsed(), "best": state.best, "best_metrics": state.best_metrics,
            "stale": state.stale, "epoch": state.epoch + 1 if finished else state.epoch,
            "epoch_batches": 0 if finished else state.epoch_batches})
        _append_log(out / "metrics.jsonl", {"step": state.step, "epoch": epoch_done,
                                            "seconds": round(time.perf_counter() - self.began, 1),
                                            "validation_seconds": round(self.validation_seconds, 3),
                                            "lr": self.scheduler.get_last_lr()[0], "train_loss": train_loss,
                                            "best": improved, **summary})
        self.emit("checkpoint", path=str(out / "last.safetensors"), best=improved, epoch=epoch_done, step=state.step)


def _kept_sample(sample: Sample, packed: bool, dark_ground: bool) -> Sample | Packed:
    """A training sample as the loader keeps it: the whole image turned to dark ground first when the card says so
    (the image's median decides, not a window's), then packed for crop training."""
    if dark_ground:
        sample = replace(sample, image=on_dark_ground(sample.image))
    return Packed.of(sample) if packed else sample


def _rank_sync(model: torch.nn.Module) -> dict:
    """Under torchrun: world size and each rank's weight digest, for the card (they must all agree)."""
    if not distributed.is_distributed():
        return {}
    digests = distributed.gather_objects(distributed.weights_digest(model))
    return {"distributed": {"world_size": len(digests), "backend": torch.distributed.get_backend(),
                            "rank_weight_sha256": digests}}


def _append_log(path: Path, record: dict) -> None:
    """One JSON line per validation, so a run can be followed (`tail -f`) and plotted; a resumed run appends."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
