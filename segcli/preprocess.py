"""The model input: an RGB uint8 image -> a normalised float tensor, and the ImageNet statistics that
normalise it by default (a card may record others). Inference, the training transforms and the
models that normalise inside (Mask R-CNN) read them from here.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(
    image: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised; the one preprocessing step."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return x.sub_(m).div_(s)  # in place: a 10000 px photo is 1.2 GB as float32, once is enough
