"""The model input: an RGB uint8 image -> a normalised float tensor, and the ImageNet statistics that
normalise it by default (a card may record others). Inference, the training transforms and the
models that normalise inside (Mask R-CNN) read them from here; and `on_dark_ground`, the polarity
step of models trained with `--dark-ground`.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(
    image: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised, (x / 255 - mean) / std; the one preprocessing step.

    The values stay in the image's (H, W, 3) memory, so the (3, H, W) result is a channels-last view, the layout
    inference runs in; normalising is one multiply-add in place (a 10000 px photo is 1.2 GB as float32: once is
    enough), 2x faster than subtracting and dividing in turn."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float()
    scale = torch.tensor([1.0 / (255.0 * s) for s in std])
    shift = torch.tensor([-m / s for m, s in zip(mean, std)])
    return torch.addcmul(shift, x, scale, out=x).permute(2, 0, 1)


BRIGHT_GROUND = 127.5  # median grey level above which an image is taken to show its objects on bright ground
_MEDIAN_SAMPLE = 1 << 16  # the median of a larger image comes from an even subsample of this many pixels


def median_grey(image: np.ndarray) -> float:
    """The median grey level (mean of the channels) of an (H, W, 3) uint8 image, from at most _MEDIAN_SAMPLE pixels."""
    step = max(1, image.shape[0] * image.shape[1] // _MEDIAN_SAMPLE)
    return float(np.median(image.reshape(-1, image.shape[-1])[::step].mean(axis=1)))


STAIN_HUES = (240.0, 15.0)  # degrees: haematoxylin's purple to eosin's pink, across red (hue 0)
STAIN_SATURATION = 0.08  # pixels less saturated than this are glass or grey, not stain
STAINED_PIXELS = 0.6  # share of the coloured pixels in STAIN_HUES above which an image looks stained


def is_stained(image: np.ndarray) -> bool:
    """Whether an (H, W, 3) uint8 RGB image looks like stained histology (H&E): most of its coloured pixels are
    purple to pink. Measured on every image of the H&E sets in the shared data (MoNuSeg 0.97-1.0 of the coloured
    pixels, TNBC 0.70-1.0); fluorescence is grey, and the coco128 photos read 0.01-0.67."""
    if image.ndim != 3 or image.shape[2] < 3:
        return False
    step = max(1, image.shape[0] * image.shape[1] // _MEDIAN_SAMPLE)
    pixels = image.reshape(-1, image.shape[-1])[::step, :3]
    hsv = cv2.cvtColor(pixels[None], cv2.COLOR_RGB2HSV_FULL)[0].astype(np.float32)  # hue 0-255 over the circle
    coloured = hsv[:, 1] >= STAIN_SATURATION * 255
    if coloured.mean() < 0.01:
        return False
    hue = hsv[coloured, 0] * (360 / 256)
    return float(((hue >= STAIN_HUES[0]) | (hue <= STAIN_HUES[1])).mean()) >= STAINED_PIXELS


def on_dark_ground(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same image if its median grey level is at most mid-grey, else inverted (255 - x).

    Microscopy mixes polarities: fluorescence shows bright nuclei on dark ground, brightfield and H&E stains dark
    nuclei on bright ground. Turning every image to dark ground lets what a model learns on one kind serve the
    other, at no cost in what it has to learn (unlike inverting windows at random, `--invert`). Inverting an image
    leaves its median at most mid-grey, so the step is idempotent."""
    return np.subtract(255, image, dtype=np.uint8) if median_grey(image) > BRIGHT_GROUND else image
