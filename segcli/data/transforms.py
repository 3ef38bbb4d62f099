"""Augmentation and tensor conversion with torchvision.transforms.v2, on image and masks together.

Two ways to train. Resize (`img_size`): random scale and crop (RandomResizedCrop) resized to the
training size, whatever the image's own scale. Crop (`crop`, `scale`): a random `crop` x `crop`
window of the image at a fixed scale (1 = its own pixels), as nnU-Net trains on patches, one window
in three centred on an object so that sparse objects are seen; the window is cut from a compact
`Packed` copy of the sample (an instance-id map, not one full-size mask per object).
Crop training can also zoom (a random factor around the scale, nnU-Net's scaling augmentation) and
turn (vertical flips and 90-degree rotations, for data without an up: microscopy, EM, aerial images).
Crop training can also jitter the stains of histology images (`stain`: Tellez et al. 2018, each of the
haematoxylin, eosin and DAB concentrations scaled and shifted at random, through scikit-image's colour
deconvolution), so that one lab's H&E serves another's.
Both: horizontal flip, colour jitter; the masks follow
the image geometry (nearest-neighbour), colour changes touch the image only. Validation: resize to
fit inside the size, keeping the aspect ratio, then pad right and bottom to exactly that size, so
batches stack (padding is 0 in the normalised image, i.e. the mean colour, and 255 = ignore in the
semantic target). Boxes are recomputed from the transformed masks, and instances that the crop
removed (fewer than MIN_PIXELS left) are dropped, so masks, boxes and labels always agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from segcli import io
from segcli.preprocess import IMAGENET_MEAN, IMAGENET_STD
from segcli.structures import IGNORE_INDEX, Instance, Sample, masks_to_boxes

MIN_PIXELS = 4
SCALE = {"semantic": (0.25, 1.0), "instance": (0.35, 1.0), "panoptic": (0.35, 1.0)}


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


def build_transform(mode: str, train: bool, img_size: int | tuple[int, int] | None,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    *, crop: int | None = None, scale: float = 1.0, zoom: float = 0.0,
                    rotate: bool = False, invert: bool = False,
                    stain: bool = False) -> Callable[[Sample], tuple[torch.Tensor, dict]]:
    """Sample -> (normalised (3, H, W) float tensor, target dict of the model contract).

    With `crop` (training only): random windows at `scale` instead of resized crops (see the module docstring),
    zoomed by a random factor between 1 / (1 + zoom) and 1 + zoom, with `rotate` turned by a random
    element of the square's symmetries, with `invert` half of them in inverted intensities (255 - x), and with
    `stain` their H&E stain concentrations jittered (`StainJitter`).
    """
    if mode not in SCALE:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(SCALE)}")
    if crop is not None:
        return _crop_transform(mode, crop, scale, mean, std, zoom=zoom, rotate=rotate, invert=invert, stain=stain)
    size = _size(img_size)
    if train:
        geometry = v2.Compose([
            v2.RandomResizedCrop(size, scale=SCALE[mode], ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(),
            IntensityJitter(),
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


class IntensityJitter(v2.Transform):
    """torchvision's ColorJitter for grey and RGB images; images of other channel counts (train --channels), which
    it refuses, get a brightness and a contrast factor drawn for each channel: separate signals (fluorescence
    channels) vary separately. Only the sample dict's "image" changes."""

    def __init__(self, brightness: float = 0.25, contrast: float = 0.25) -> None:
        super().__init__()
        self.brightness, self.contrast = brightness, contrast
        self.colour = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=0.25, hue=0.02)

    def forward(self, sample: dict) -> dict:
        image = sample["image"]
        if image.shape[-3] in (1, 3):
            return self.colour(sample)
        channels = image.shape[-3]
        brightness = torch.empty(channels, 1, 1).uniform_(1 - self.brightness, 1 + self.brightness)
        contrast = torch.empty(channels, 1, 1).uniform_(1 - self.contrast, 1 + self.contrast)
        x = image.as_subclass(torch.Tensor).float()
        mean = x.mean(dim=(-2, -1), keepdim=True)
        jittered = (((x - mean) * contrast + mean) * brightness).clamp_(0, 255).round_().to(image.dtype)
        return {**sample, "image": tv_tensors.wrap(jittered, like=image)}


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


def _target(out: dict) -> dict:
    target = {"semantic": out["semantic"].as_subclass(torch.Tensor)}
    if "masks" in out:
        masks = out["masks"].as_subclass(torch.Tensor)
        keep = masks.flatten(1).sum(1) >= MIN_PIXELS
        target["masks"] = masks[keep]
        target["labels"] = out["labels"][keep]
        target["boxes"] = masks_to_boxes(target["masks"].bool())
    return target


# ---------------------------------------------------------------- crops at a fixed scale

FOREGROUND_WINDOWS = 1 / 3  # share of windows centred on a random object (nnU-Net's foreground oversampling)


@dataclass
class Packed:
    """A training sample kept compactly: image, semantic map, and instances as one id map (0 = none)."""

    image: np.ndarray  # (H, W, 3) uint8
    semantic: np.ndarray  # (H, W) uint8 class indices, 255 = ignore
    ids: np.ndarray  # (H, W) int32: instance i + 1 where instance i is (later instances on top)
    labels: np.ndarray  # (N,) class index of each instance
    crowd: np.ndarray  # (N,) bool

    @classmethod
    def of(cls, sample: Sample) -> Packed:
        if isinstance(sample, Packed):
            return sample
        h, w = sample.image.shape[:2]
        semantic = sample.semantic if sample.semantic is not None else np.full((h, w), IGNORE_INDEX, np.uint8)
        ids = np.zeros((h, w), np.int32)
        # Larger first, so a small object lying on a larger one stays visible (the datasets' paste order).
        order = np.argsort([-inst.area for inst in sample.instances], kind="stable")
        for number in order:
            ids[sample.instances[number].mask] = number + 1
        return cls(sample.image, semantic, ids, np.array([i.label for i in sample.instances], np.int64),
                   np.array([i.iscrowd for i in sample.instances], bool))

    def window(self, side: int, foreground: float) -> tuple[int, int]:
        """Top-left corner of a random side x side window; with probability `foreground` one centred on an object."""
        h, w = self.ids.shape
        if len(self.labels) and float(torch.rand(())) < foreground:
            ys, xs = np.nonzero(self.ids)
            if len(ys):
                pick = int(torch.randint(len(ys), ()))
                return _clamp(int(ys[pick]) - side // 2, h - side), _clamp(int(xs[pick]) - side // 2, w - side)
        return int(torch.randint(max(1, h - side + 1), ())), int(torch.randint(max(1, w - side + 1), ()))

    def cut(self, y: int, x: int, side: int, size: int | None = None, turns: int = 0) -> Sample:
        """The window as a Sample, padded to side x side (image 0, semantic ignored, no instance) where it leaves the
        image, resized to size x size (the image smoothly, labels by nearest neighbour) and turned `turns` quarter
        turns counter-clockwise, with a vertical flip for turns >= 4 (the 8 symmetries of the square)."""
        image = _padded(self.image[y : y + side, x : x + side], side, 0)
        semantic = _padded(self.semantic[y : y + side, x : x + side], side, IGNORE_INDEX)
        ids = _padded(self.ids[y : y + side, x : x + side], side, 0)
        if size is not None and size != side:
            image = io.resize_image(image, (size, size))
            semantic = cv2.resize(semantic, (size, size), interpolation=cv2.INTER_NEAREST)
            ids = cv2.resize(ids, (size, size), interpolation=cv2.INTER_NEAREST)
        if turns:
            image, semantic, ids = (_turned(a, turns) for a in (image, semantic, ids))
        instances = [Instance(ids == number, int(self.labels[number - 1]), iscrowd=bool(self.crowd[number - 1]),
                              bbox=(0, 0, 0, 0))
                     for number in np.unique(ids).tolist() if number]
        return Sample(image=image, name="", semantic=semantic, instances=instances)


def _turned(array: np.ndarray, turns: int) -> np.ndarray:
    array = np.rot90(array, turns % 4)
    return np.ascontiguousarray(array[::-1] if turns >= 4 else array)


def _clamp(value: int, high: int) -> int:
    return min(max(0, value), max(0, high))


def _padded(array: np.ndarray, side: int, value: int) -> np.ndarray:
    h, w = array.shape[:2]
    if h == side and w == side:
        return np.ascontiguousarray(array)
    out = np.full((side, side, *array.shape[2:]), value, array.dtype)
    out[:h, :w] = array
    return out


def _crop_transform(mode: str, crop: int, scale: float, mean, std, zoom: float = 0.0, rotate: bool = False,
                    invert: bool = False, stain: bool = False) -> Callable:
    if crop < 8 or scale <= 0 or zoom < 0:
        raise ValueError(f"crop {crop} px at scale {scale}, zoom {zoom}: need a crop of at least 8 px, a positive "
                         "scale and a zoom of at least 0")
    # Inverted windows show bright objects on dark ground as dark on bright, and the reverse: what the model learns
    # on one kind of image (fluorescence) then serves the other (brightfield) when a dataset mixes them.
    augment = v2.Compose([v2.RandomHorizontalFlip(), *([v2.RandomInvert(0.5)] if invert else []),
                          *([StainJitter()] if stain else []), IntensityJitter()])
    finish = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    with_instances = mode != "semantic"
    log_zoom = math.log1p(zoom)

    def apply(sample: Sample | Packed) -> tuple[torch.Tensor, dict]:
        packed = Packed.of(sample)
        factor = scale * math.exp(float(torch.empty(()).uniform_(-log_zoom, log_zoom))) if zoom else scale
        side = max(1, round(crop / factor))  # the window in the image's own pixels
        turns = int(torch.randint(8, ())) if rotate else 0
        corner = packed.window(side, FOREGROUND_WINDOWS if with_instances or packed.ids.any() else 0.0)
        window = packed.cut(*corner, side, size=crop, turns=turns)
        out = augment(_as_tv_tensors(window, with_instances))
        return finish(out["image"]), _target(out)

    return apply


class StainJitter(v2.Transform):
    """Haematoxylin-eosin-DAB jitter (Tellez et al. 2018, "HED" augmentation) of a uint8 RGB image tensor.

    The image is unmixed into its three stain concentrations (scikit-image's `rgb2hed`, Ruifrok and Johnston's
    colour deconvolution), each concentration c becomes c * a + b with a ~ U(1 - alpha, 1 + alpha) and
    b ~ U(-beta, beta) drawn per image and stain, and the result is mixed back (`hed2rgb`). rgb2hed's unit is
    ln(intensity) / ln(1e-6), so beta = 0.01 moves a stain's optical density by about e^0.14 (14% of intensity);
    a nucleus's haematoxylin is about 0.05-0.2 in these units. Masks are untouched.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 0.01) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def make_params(self, flat_inputs: list) -> dict:
        scale = 1 + torch.empty(3).uniform_(-self.alpha, self.alpha)
        shift = torch.empty(3).uniform_(-self.beta, self.beta)
        return {"scale": scale.numpy(), "shift": shift.numpy()}

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        return tv_tensors.wrap(torch.from_numpy(jitter_stains(inpt.permute(1, 2, 0).numpy(), **params))
                               .permute(2, 0, 1), like=inpt)


def jitter_stains(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same image with its H, E and DAB concentrations scaled by `scale`, then shifted.

    scikit-image's stain vectors (`hed_from_rgb`, `rgb_from_hed`) in its units, without the clipping of negative
    concentrations that `rgb2hed` does (which alone shifts colours by up to 95 levels): scale 1 and shift 0 give the
    image back.
    """
    from skimage.color import hed_from_rgb, rgb_from_hed  # imported by training on stained data only

    log_unit = np.log(1e-6)  # rgb2hed's unit: concentrations of ln(intensity) / ln(1e-6)
    optical = np.log(np.maximum(image.astype(np.float32) / 255, 1e-6)) / log_unit
    hed = optical @ hed_from_rgb.astype(np.float32) * scale.astype(np.float32) + shift.astype(np.float32)
    rgb = np.exp(hed @ rgb_from_hed.astype(np.float32) * log_unit) * 255
    return np.ascontiguousarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
