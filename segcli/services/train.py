"""`segcli train`: build the data and the model a `TrainConfig` asks for, then run the `Trainer`.

The loop itself (steps, validation, checkpoints, resume) is `segcli.training.trainer.Trainer`; this
service chooses the run folder, reads the datasets, builds the model and its card, and reports
through `callback(event, **info)` (the Trainer's events plus "warning" and "done"). Runs under
torchrun use DistributedDataParallel; only rank 0 reports.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from segcli import distributed, io
from segcli.checkpoint import (
    card_scaling,
    checkpoint_paths,
    circle_diameter,
    make_card,
    read_card,
    read_safetensors,
    training_state_paths,
)
from segcli.data import check_dataset, load_dataset
from segcli.device import resolve_device
from segcli.errors import ModelError, UsageError, check_minimums
from segcli.inference import postprocess_defaults
from segcli.io import write_json
from segcli.models.pretrained import load_into
from segcli.models.registry import build_model, get_model_entry, models_for_mode, models_taking
from segcli.preprocess import IMAGENET_MEAN, IMAGENET_STD
from segcli.services.resolve import bundled_checkpoint, check_model_name, fetch_weights
from segcli.structures import IGNORE_INDEX
from segcli.training.config import TrainConfig
from segcli.training.loggers import check_log, make_loggers
from segcli.training.plan import Fingerprint, Plan, batch_for_crop, fingerprint, make_plan, plan_record
from segcli.training.seeding import seed_everything
from segcli.training.trainer import TRAINING_LAYOUT, Trainer

Callback = Callable[..., None]
# Builder settings that are also train options (--center-sigma, ...) and that the plan may choose.
MODEL_OPTIONS = ("center_sigma", "boundary_width", "contact_weight")
MIN_SIDE = 32  # smallest training image side: the zoo's largest output stride (fcn fails below it)

__all__ = ["TrainConfig", "TrainResult", "plan_run", "train"]


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
                   masks=config.masks, seed=config.seed if config.split_seed is None else config.split_seed,
                   channels=_channels(config))
    train_set = load_dataset(config.data, config.data_format, "train", **options)
    if options["channels"].count is None:  # --channels all: as many as the first image has, then every image the same
        options["channels"] = io.Channels(None, train_set[0].image.shape[2])
        train_set = load_dataset(config.data, train_set.format, "train", **options)
    val_set = load_dataset(config.data, train_set.format, "val", **options)
    return train_set, val_set


def _channels(config: TrainConfig) -> io.Channels:
    """--channels: none, the images' colours (grey as three equal channels); "all", every channel of the images;
    "2,0", those, in that order."""
    if config.channels is None:
        return io.RGB
    if config.channels.strip().lower() == "all":
        return io.Channels(None, None)
    picked = io.parse_channels(config.channels)
    return io.Channels(picked, len(picked))


def _fine_tuning(config: TrainConfig) -> TrainConfig:
    """`--model NAME` of a bundled model, or `--weights FILE` with its card: start from that checkpoint. Its card gives
    the architecture and width; the data's classes replace the class heads where their count differs."""
    bundled = bundled_checkpoint(config.model)
    if bundled is None:
        check_model_name(config.model)
    has_card = config.weights is not None and checkpoint_paths(config.weights)[1].is_file()
    if bundled is None and not has_card:
        return config
    if bundled is not None and has_card:
        raise UsageError(f"--model {config.model} is a bundled checkpoint already; leave --weights out")
    start = bundled or Path(config.weights)
    card = read_card(start)
    if has_card and config.model != card["model"]:
        raise UsageError(f"--weights {start} is a {card['model']} checkpoint (its card says so), "
                         f"not --model {config.model}")
    width = card["model_args"].get("width") if config.width is None else config.width
    return replace(config, model=card["model"], weights=None, init=start, width=width)


def _load_start(model: torch.nn.Module, start: Path) -> list[str]:
    """The starting checkpoint's tensors that fit `model`; returns the names left at their new initialisation."""
    state = read_safetensors(start)
    own = model.state_dict()
    fitting = {k: v.to(own[k].dtype) for k, v in state.items() if k in own and own[k].shape == v.shape}
    load_into(model, {**own, **fitting}, str(start))
    return sorted(k for k in own if k not in fitting)


def _model_args(config: TrainConfig, label_space, channels: int = 3) -> dict:
    builder = get_model_entry(config.model).builder
    accepted = inspect.signature(builder).parameters
    args = {"num_classes": label_space.num_classes}
    if channels != 3:
        if "in_channels" not in accepted or config.encoder is not None:
            raise UsageError(f"--channels: {config.encoder or config.model} takes RGB images (3 channels), not "
                             f"{channels}; choose 3 channels, or a model that takes them: "
                             f"{', '.join(models_taking('in_channels'))}")
        args["in_channels"] = channels
    if config.width is not None:
        if "width" not in accepted:
            raise UsageError(f"--width: {config.model} has a fixed architecture with no width to set; "
                             "leave --width out")
        args["width"] = config.width
    for name in MODEL_OPTIONS:
        if getattr(config, name) is not None:
            if name not in accepted:
                raise UsageError(f"--{name.replace('_', '-')}: {config.model} has no such setting")
            args[name] = getattr(config, name)
    if "thing_classes" in accepted:
        args["thing_classes"] = label_space.thing_indices
    if "pretrained" in accepted:
        args["pretrained"] = config.pretrained
    if config.weights is not None:
        if "weights" not in accepted or (Path(config.weights).with_suffix(".json")).is_file():
            raise UsageError(f"train --weights {config.weights}: starting weights are a torchvision state dict for a "
                             "--model tv_* (to continue a segcli run use --out RUN --resume)")
        args["weights"] = str(config.weights)
    if config.encoder is not None:
        if "encoder" not in accepted:
            raise UsageError(f"--encoder: {config.model} has a fixed encoder; models that take one: "
                             f"{', '.join(models_taking('encoder'))}")
        args["encoder"] = config.encoder
        args["encoder_weights"] = "imagenet" if config.pretrained else "none"
    return {k: v for k, v in args.items() if k in accepted}


def _pretrained_record(config: TrainConfig, model_args: dict) -> dict:
    """Exactly what the weights started from, for the card: nothing (random initialisation), an ImageNet encoder
    (which), a whole library model, or a segcli checkpoint (which file, its SHA-256)."""
    from segcli import hub
    from segcli.models.pretrained import library_name, required_weights

    if config.init is not None:
        return {"from": "segcli checkpoint", "file": str(config.init), "sha256": io.file_sha256(config.init)[:16]}
    if model_args.get("weights"):
        return {"from": "library model", "model": config.model, "file": str(model_args["weights"]),
                "sha256": io.file_sha256(model_args["weights"])[:16]}
    for weights in required_weights(config.model, model_args):
        if library_name(config.model):
            return {"from": "library model", "model": config.model, "file": hub.file_name(weights)}
        return {"from": "ImageNet encoder", "encoder": model_args["encoder"], "file": hub.file_name(weights)}
    return {"from": "nothing"}


def _class_weights(dataset, num_classes: int) -> torch.Tensor:
    """Inverse square-root frequency over up to 64 training masks, normalised to mean 1."""
    counts = np.ones(num_classes)
    for i in range(0, len(dataset), max(1, len(dataset) // 64)):
        semantic = dataset[i].semantic
        values = semantic[semantic != IGNORE_INDEX]
        counts += np.bincount(values.ravel(), minlength=num_classes)[:num_classes]
    weights = 1.0 / np.sqrt(counts / counts.sum())
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


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


def _check_config(config: TrainConfig, device: torch.device) -> None:
    if config.mode not in get_model_entry(config.model).modes:
        capable = ", ".join(models_for_mode(config.mode))
        raise ModelError(f"{config.model} cannot do --mode {config.mode}; models that can: {capable}")
    if config.epochs is not None and config.steps is not None:
        raise UsageError("give --epochs or --steps, not both")
    if config.img_size is not None and (config.crop is not None or config.scale is not None):
        raise UsageError("--img-size (resize training) or --crop/--scale (windows at a fixed scale): choose one")
    if config.img_size is not None and (config.zoom or config.rotate or config.invert or config.stain):
        raise UsageError("--zoom, --rotate, --invert and --stain augment crop training; --img-size training has "
                         "its own augmentation (leave them out)")
    if config.scale is not None and not 0.05 <= config.scale <= 8:
        raise UsageError(f"--scale {config.scale}: a factor between 0.05 and 8 (1 = the images' own pixels)")
    if config.amp and device.type != "cuda":
        raise UsageError("--amp (float16 with gradient scaling) needs CUDA; on a CPU use --bf16")
    _check_numbers(config)
    check_log(config.log)
    if config.resume:  # refused before the plan is written into a folder with nothing to resume
        training_state_paths(_out_dir(config) / "last")


def _check_numbers(config: TrainConfig) -> None:
    """Counts, sizes and weights outside their range are refused before any file is written (--steps -3 trained
    nothing and exited 0; --batch-size 0 or --workers -1 crashed after the plan was written)."""
    check_minimums(("--epochs", config.epochs, 1), ("--steps", config.steps, 1),
                   ("--batch-size", config.batch_size, 1), ("--img-size", config.img_size, MIN_SIDE),
                   ("--crop", config.crop, MIN_SIDE), ("--width", config.width, 1), ("--warmup", config.warmup, 0),
                   ("--val-every", config.val_every, 0), ("--patience", config.patience, 1),
                   ("--workers", config.workers, 0), ("--val-limit", config.val_limit, 1),
                   ("--boundary-width", config.boundary_width, 1), ("--dice", config.dice, 0),
                   ("--clip", config.clip, 0),
                   ("--lr", config.lr, 0),  # --lr 0 is allowed: a frozen model (the patience test uses it)
                   ("--zoom", config.zoom, 0))
    check_minimums(("--center-sigma", config.center_sigma, 0), ("--contact-weight", config.contact_weight, 0),
                   ("--pixel-size", config.pixel_size, 0), above=True)
    if config.ema is not None and not 0 < config.ema < 1:
        raise UsageError(f"--ema {config.ema}: the decay per step lies between 0 and 1, e.g. 0.999 "
                         "(leave it out: no average)")


def _model(config: TrainConfig, train_set, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The zoo model with the loss options of the config, and the builder arguments that rebuild it."""
    label_space = train_set.label_space
    model_args = _model_args(config, label_space, train_set.channels.count)
    # Pretrained weights into the library's cache first: builders never download.
    fetch_weights(config.model, model_args)
    model = build_model(config.model, **model_args).to(device)
    if model.dense:
        model = model.to(memory_format=TRAINING_LAYOUT)  # the Trainer's batches follow
    _set_loss_options(model, config, train_set)
    return model, model_args


def _set_loss_options(model: torch.nn.Module, config: TrainConfig, train_set) -> None:
    """--dice and --class-weights act on the class cross-entropy of semantic and panoptic models; a model
    without one (Mask R-CNN) refuses them rather than record options it would not use."""
    for option, wanted in (("--dice", bool(config.dice)), ("--class-weights auto", config.class_weights == "auto")):
        if wanted and not model.class_loss:
            raise UsageError(f"{option}: {config.model} has no per-pixel class loss to weight; "
                             f"leave {option.split()[0]} out")
    if config.dice:
        model.dice_weight = config.dice
    if config.class_weights == "auto":
        model.class_weights = _class_weights(train_set, train_set.label_space.num_classes)


def _card(config: TrainConfig, model: torch.nn.Module, model_args: dict, train_set, val_set) -> dict:
    """The checkpoint card: how to rebuild the model, its classes and normalisation, the command and the data."""
    data = {"path": str(config.data), "format": train_set.format, "fingerprint": train_set.fingerprint(),
            "train_images": len(train_set), "val_images": len(val_set)}
    training = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "command"}
    card = make_card(config.model, model_args, config.mode, train_set.label_space, img_size=config.img_size,
                     command=config.command, data=data, training=training)
    if model.mean is not None:
        card["normalization"] = {"mean": list(model.mean), "std": list(model.std)}
    channels = train_set.channels
    if channels.count != 3:  # not RGB: ImageNet's grey level (the mean of its channels) for each channel, as timm does
        card["normalization"] = {"mean": [round(float(np.mean(IMAGENET_MEAN)), 4)] * channels.count,
                                 "std": [round(float(np.mean(IMAGENET_STD)), 4)] * channels.count}
    card["channels"] = {"count": channels.count, "names": [],  # names: from the plan's fingerprint (_train)
                        "picked": list(channels.pick) if channels.pick is not None else None}
    card["intensity"] = replace(card_scaling(card), dark_ground=bool(config.dark_ground)).to_dict()
    # The post-processing thresholds validation uses; predict and eval start from them (their options override).
    card["postprocess"] = postprocess_defaults(model)
    if config.crop is not None:
        # Predict, eval and validation resize every image by the card's scale, then predict it whole (tiled).
        card["scale"], card["crop"] = config.scale or 1.0, config.crop
        if card["scale"] != 1.0 and not model.dense:
            raise UsageError(f"--scale: {config.model} detects instances; train it at --scale 1")
    return card


def plan_run(config: TrainConfig, train_set=None) -> tuple[TrainConfig, Plan, Fingerprint]:
    """The run's settings: the plan from the data's fingerprint, each choice replaced by its option where one is
    given. Returns the config with every planned setting filled in, the plan (with each setting's source) and the
    fingerprint."""
    if train_set is None:
        train_set = _datasets(config)[0]
    print_ = fingerprint(train_set)
    plan = make_plan(print_, get_model_entry(config.model).builder, config.mode)
    sized = {"--img-size": config.img_size, "--crop": config.crop, "--scale": config.scale}
    given = [option for option, value in sized.items() if value is not None]
    if given:  # a size option: the plan chooses no size
        plan.scale, plan.crop = config.scale or 1.0, config.crop or plan.crop
        plan.source.update({"scale": ", ".join(given), "crop": ", ".join(given)})
        if config.crop is not None:  # the pixels a step stay the plan's: --crop 256 takes 3 windows, not 8
            plan.batch_size, plan.source["batch_size"] = batch_for_crop(config.crop), "--crop"
        if config.img_size is not None:  # resize training: its historic batch, its own scale augmentation
            plan.crop, plan.batch_size, plan.source["batch_size"] = config.img_size, 8, "--img-size"
            plan.zoom, plan.rotate, plan.invert, plan.stain = 0.0, False, False, False
            plan.source.update({name: "--img-size" for name in ("zoom", "rotate", "invert", "stain")})
    if config.channels is not None:
        plan.source["channels"] = f"--channels {config.channels}"
    for name, option in (("batch_size", "--batch-size"), ("class_weights", "--class-weights"), ("zoom", "--zoom"),
                         ("rotate", "--rotate"), ("invert", "--invert"), ("stain", "--stain"),
                         ("dark_ground", "--dark-ground")):
        if getattr(config, name) is not None:
            setattr(plan, name, getattr(config, name))
            plan.source[name] = option
    if config.dark_ground is None and config.init is not None:  # fine-tuning: the input the weights learnt on
        plan.dark_ground = card_scaling(read_card(config.init)).dark_ground
        plan.source["dark_ground"] = "--model/--weights"
    for name in MODEL_OPTIONS:
        if getattr(config, name) is not None:
            plan.model_args[name] = getattr(config, name)
            plan.source[name] = f"--{name.replace('_', '-')}"
    resolved = replace(config, batch_size=plan.batch_size, class_weights=plan.class_weights, zoom=plan.zoom,
                       rotate=plan.rotate, invert=plan.invert, stain=plan.stain, dark_ground=plan.dark_ground,
                       **{name: plan.model_args.get(name) for name in MODEL_OPTIONS})
    if config.img_size is None:
        resolved = replace(resolved, crop=plan.crop, scale=plan.scale)
    return resolved, plan, print_


def _train(config: TrainConfig, device: torch.device, notify: Callback) -> TrainResult:
    config = _fine_tuning(config)
    _check_config(config, device)
    # Each rank its own augmentation stream; DistributedDataParallel copies rank 0's initial weights to all.
    seed_everything(config.seed + distributed.rank())
    train_set, val_set = _datasets(config)
    for split in (train_set, val_set):  # both before the first step: a bad validation label must not wait an epoch
        for warning in check_dataset(split, config.mode):
            notify("warning", message=f"{split.root} ({split.split}): {warning}")
    given = config  # the card's "training" is the config as given (a rerun matches it); the plan holds what it chose
    config, plan, print_ = plan_run(config, train_set)
    if plan.stain and train_set.channels.count != 3:
        raise UsageError(f"--stain jitters the colours of stained RGB images; these have {train_set.channels.count} "
                         "channels: leave --stain out")
    notify("plan", rows=plan.rows(), fingerprint=asdict(print_))
    model, model_args = _model(config, train_set, device)
    if config.init is not None:
        fresh = _load_start(model, config.init)
        notify("warning", message=f"fine-tuning from {config.init}" + (f"; new initialisation for {len(fresh)} tensors "
               f"whose shape differs (class heads: {', '.join(fresh[:4])})" if fresh else ""))
    out = io.prepare_out_dir(_out_dir(config))
    card = _card(config, model, model_args, train_set, val_set)
    card["plan"] = plan_record(plan, print_)
    # The scale of the training data, which predict and eval resample inputs to (--pixel-size / --object-size).
    side = print_.median_diameter()
    card["pixel_size_um"] = config.pixel_size
    card["object_diameter"] = round(circle_diameter(side**2), 1) if side else None
    card["channels"]["names"] = print_.channel_names
    if config.init is not None:
        card["init"] = str(config.init)
    card["pretrained"] = _pretrained_record(config, model_args)
    card["training"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(given).items() if k != "command"}
    if distributed.is_main():
        write_json(out / "plan.json", card["plan"], indent=2)
    limit = len(val_set) if config.val_limit is None else min(config.val_limit, len(val_set))
    # Under torchrun rank 0 alone logs (the others' event files would repeat its numbers).
    loggers = make_loggers(config.log, out, card, card["plan"]) if distributed.is_main() else []
    trainer = Trainer(config, model, card, train_set, [val_set[i] for i in range(limit)], out=out, device=device,
                      callbacks=[notify, *loggers])
    if config.resume:
        trainer.resume()
    try:
        state = trainer.run()
    except BaseException:
        for logger in loggers:
            logger.close(failed=True)
        raise
    for logger in loggers:
        logger.close()
    result = TrainResult(out, out / "best.safetensors", out / "last.safetensors", state.best_metrics or state.metrics,
                         state.step, trainer.seconds, len(train_set), len(val_set))
    notify("done", out=str(out), best=str(result.best), metrics=result.metrics, steps=state.step,
           seconds=trainer.seconds)
    return result
