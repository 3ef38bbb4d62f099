"""Augmentation and tensor conversion with torchvision.transforms.v2, on image and masks together.

Training: random scale and crop (RandomResizedCrop), horizontal flip, colour jitter; the masks follow
the image geometry (nearest-neighbour), colour changes touch the image only. Validation: resize to
fit inside the size, keeping the aspect ratio, then pad right and bottom to exactly that size, so
batches stack (padding is 0 in the normalised image, i.e. the mean colour, and 255 = ignore in the
semantic target). Boxes are recomputed from the transformed masks, and instances that the crop
removed (fewer than MIN_PIXELS left) are dropped, so masks, boxes and labels always agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from segcli.models.base import IMAGENET_MEAN, IMAGENET_STD
from segcli.structures import IGNORE_INDEX, Sample

MIN_PIXELS = 4
SCALE = {"semantic": (0.25, 1.0), "instance": (0.35, 1.0), "panoptic": (0.35, 1.0)}


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


def build_transform(mode: str, train: bool, img_size: int | tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD
                    ) -> Callable[[Sample], tuple[torch.Tensor, dict]]:
    """Sample -> (normalised (3, H, W) float tensor, target dict of the model contract)."""
    size = _size(img_size)
    if mode not in SCALE:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(SCALE)}")
    if train:
        geometry = v2.Compose([
            v2.RandomResizedCrop(size, scale=SCALE[mode], ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.02),
        ])
    else:
        def geometry(inputs: dict) -> dict:
            return v2.Resize(_fit(inputs["image"].shape[-2:], size), antialias=True)(inputs)
    finish = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    with_instances = mode != "semantic"

    def apply(sample: Sample) -> tuple[torch.Tensor, dict]:
        inputs = _as_tv_tensors(sample, with_instances)
        out = geometry(inputs)
        image, target = finish(out["image"]), _target(out)
        return (image, target) if train else _pad_to(image, target, size)

    return apply


def _fit(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The largest (h, w) with the image's aspect ratio that fits inside size."""
    h, w = int(shape[0]), int(shape[1])
    scale = min(size[0] / h, size[1] / w)
    return min(size[0], max(1, round(h * scale))), min(size[1], max(1, round(w * scale)))


def _pad_to(image: torch.Tensor, target: dict, size: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """Pad right and bottom to `size`: boxes keep their coordinates, padded pixels are ignored."""
    pad = (0, size[1] - image.shape[-1], 0, size[0] - image.shape[-2])
    target = dict(target, semantic=torch.nn.functional.pad(target["semantic"], pad, value=IGNORE_INDEX))
    if "masks" in target:
        target["masks"] = torch.nn.functional.pad(target["masks"], pad, value=0)
    return torch.nn.functional.pad(image, pad, value=0.0), target


def _as_tv_tensors(sample: Sample, with_instances: bool) -> dict:
    h, w = sample.image.shape[:2]
    semantic = sample.semantic if sample.semantic is not None else np.full((h, w), IGNORE_INDEX, np.uint8)
    tensors = {
        "image": tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1)),
        "semantic": tv_tensors.Mask(torch.from_numpy(semantic.astype(np.int64))),
    }
    if with_instances:
        kept = [inst for inst in sample.instances if not inst.iscrowd]  # crowd regions are no training targets
        masks = np.stack([inst.mask for inst in kept]) if kept else np.zeros((0, h, w), bool)
        tensors["masks"] = tv_tensors.Mask(torch.from_numpy(masks.astype(np.uint8)))
        tensors["labels"] = torch.tensor([inst.label for inst in kept], dtype=torch.int64)
    return tensors


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 4) xyxy with exclusive right/bottom edges, as torchvision's detection models expect."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    rows, cols = masks.any(2), masks.any(1)
    y0 = rows.float().argmax(1)
    y1 = masks.shape[1] - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = masks.shape[2] - cols.flip(1).float().argmax(1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def _target(out: dict) -> dict:
    target = {"semantic": out["semantic"].as_subclass(torch.Tensor)}
    if "masks" in out:
        masks = out["masks"].as_subclass(torch.Tensor)
        keep = masks.flatten(1).sum(1) >= MIN_PIXELS
        target["masks"] = masks[keep]
        target["labels"] = out["labels"][keep]
        target["boxes"] = masks_to_boxes(target["masks"].bool())
    return target
