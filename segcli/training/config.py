"""`TrainConfig`: every option of a training run, with a reason beside each field (saved in the card)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    data: Path  # dataset folder or COCO json
    model: str  # zoo name
    mode: str = "semantic"  # semantic | instance | panoptic
    data_format: str = "auto"
    out: Path | None = None  # default runs/<model>-<mode>, numbered if it exists (unless resuming)
    epochs: int | None = None  # budget in passes over the training split...
    steps: int | None = None  # ...or in optimiser steps (default: 30 epochs)
    time: float | None = None  # ...or in seconds of wall time, validation included (the schedule ends with it)
    batch_size: int | None = None  # images per step (None: the plan's; 8 with --img-size)
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    img_size: int | None = None  # resize training: random crops resized to this side (the image's scale is lost)
    crop: int | None = None  # crop training: random windows of this side at `scale` (validation: whole images)
    scale: float | None = None  # crop training: the images' scale (1 = their own pixels); recorded in the card
    # No size option at all (img_size, crop, scale): crop training with the plan's scale and crop (training/plan.py).
    # crop training: windows zoomed by a random factor in [1/(1+zoom), 1+zoom] (None: the plan's)
    zoom: float | None = None
    # crop training: vertical flips and quarter turns too (None: the plan's, data without an up)
    rotate: bool | None = None
    invert: bool | None = None  # crop training: half the windows' intensities inverted (None: the plan's, off)
    stain: bool | None = None  # crop training: H&E stain jitter (None: the plan's, on for stained histology)
    dark_ground: bool | None = None  # images on bright ground inverted, in training and at inference (None: the plan's)
    # µm per pixel of the training images (the card's pixel_size_um, which predict --pixel-size scales inputs to)
    pixel_size: float | None = None
    seed: int = 0
    split_seed: int | None = None  # seed of the 10% validation hold-out when the data has no splits/ (None: seed)
    resume: bool = False  # continue from OUT/last with optimiser, schedule and RNG state
    device: str = "auto"
    width: int | None = None  # base channel width (None: the builder's default)
    dice: float = 0.0  # weight of the Dice loss added to cross-entropy (semantic models)
    class_weights: str | None = None  # "auto": inverse square-root class frequency (semantic models); None: the plan's
    center_sigma: float | None = None  # Panoptic-DeepLab centre Gaussian, px (None: the plan's, from the object size)
    boundary_width: int | None = None  # contour models' object boundary, px (None: the plan's)
    contact_weight: float | None = None  # contour models' loss weight where objects touch (None: the plan's)
    schedule: str = "poly"  # poly | cosine, after a linear warm-up
    warmup: int | None = None  # warm-up steps (default 5% of the run)
    clip: float = 1.0  # gradient norm clipping (0: off)
    ema: float | None = None  # decay of an exponential moving average of the weights, which is validated and saved
    # validate every N steps (None: auto, validation <= 10% of the time; 0: only at the end)
    val_every: int | None = None
    patience: int | None = None  # stop after this many validations without improvement
    bf16: bool = False  # bfloat16 autocast (CPUs with AVX-512 BF16, recent GPUs)
    amp: bool = False  # float16 autocast with gradient scaling on CUDA
    workers: int | None = None  # DataLoader worker processes (None: training.loader.default_workers(), 1 on 2 cores)
    val_limit: int | None = None  # validate on at most this many images (speed)
    channels: str | None = None  # "2,0": these image channels, in order; "all": every one (the count from the data)
    classes: Path | None = None
    binary: bool = False
    val: Path | None = None
    images: Path | None = None
    masks: Path | None = None
    pretrained: bool = True  # start from the library's weights (tv_* COCO, --encoder ImageNet), fetched on first use
    # starting weights: a segcli checkpoint with its card, or for tv_* a torchvision state dict
    weights: Path | None = None
    init: Path | None = None  # the segcli checkpoint training starts from (a bundled --model, or --weights with a card)
    encoder: str | None = None  # ImageNet encoder under a model that takes one (segcli models), e.g. resnet34
    log: str = "tensorboard"  # where to log for watching: tensorboard, mlflow, both (comma-separated) or none
    command: list[str] = field(default_factory=lambda: list(sys.argv))
