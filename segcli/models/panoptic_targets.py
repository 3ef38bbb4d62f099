"""Training targets of the bottom-up (Panoptic-DeepLab) heads, made from instance masks.

Cheng et al., "Panoptic-DeepLab", CVPR 2020, section 3.2: every thing instance is represented by
its centre of mass. The centre head regresses a heatmap with a 2-D Gaussian (standard deviation
`sigma` pixels) on each centre; the offset head regresses, for every pixel of an instance, the
vector (dy, dx) from the pixel to its instance's centre, and is trained on thing pixels only;
the semantic loss weighs pixels of small instances up, so that they are not drowned by large
regions.

Inputs follow the model contract of `segcli.models.base` ("semantic", "masks", "labels"); every
function here works on one image and returns tensors on the masks' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from segcli.structures import IGNORE_INDEX


@dataclass(frozen=True)
class TargetConfig:
    """How targets are drawn; defaults scaled to segcli's small training images."""

    sigma: float = 4.0  # Gaussian std in pixels (the paper's 8 is for 1024x2048 Cityscapes crops)
    small_instance_area: int = 32 * 32  # instances below this many pixels count as small (paper: 64 * 64)
    small_instance_weight: float = 3.0  # semantic-loss weight of their pixels (the paper's value)


def instance_centers(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) boolean masks -> (N, 2) float centres of mass as (y, x); NaN for an empty mask."""
    n, h, w = masks.shape
    m = masks.reshape(n, h * w).float()
    area = m.sum(1)
    ys = torch.arange(h, device=masks.device, dtype=torch.float32).repeat_interleave(w)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32).repeat(h)
    return torch.stack([(m * ys).sum(1) / area, (m * xs).sum(1) / area], dim=1)


def center_heatmap(centers: torch.Tensor, shape: tuple[int, int], sigma: float) -> torch.Tensor:
    """(H, W) heatmap: the pixel-wise maximum of one Gaussian per centre, peaking at 1 on the rounded centre."""
    h, w = shape
    heatmap = torch.zeros(h, w, device=centers.device)
    if len(centers) == 0:
        return heatmap
    ys = torch.arange(h, device=centers.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=centers.device, dtype=torch.float32).view(1, 1, w)
    peaks = centers.round()
    d2 = (ys - peaks[:, 0].view(-1, 1, 1)) ** 2 + (xs - peaks[:, 1].view(-1, 1, 1)) ** 2
    return torch.exp(-d2 / (2 * sigma**2)).amax(0)


def offset_map(masks: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, H, W) offsets (dy, dx) from each instance pixel to its centre, and the (H, W) instance-pixel mask.

    Where masks overlap, the later instance wins (it is drawn on top, as in the datasets' id maps).
    """
    _, h, w = masks.shape
    ys = torch.arange(h, device=masks.device, dtype=torch.float32).view(h, 1).expand(h, w)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32).view(1, w).expand(h, w)
    offsets = torch.zeros(2, h, w, device=masks.device)
    covered = torch.zeros(h, w, dtype=torch.bool, device=masks.device)
    for mask, (cy, cx) in zip(masks, centers):
        offsets[0][mask] = cy - ys[mask]
        offsets[1][mask] = cx - xs[mask]
        covered |= mask
    return offsets, covered


def panoptic_targets(target: dict, thing_classes: list[int],
                     config: TargetConfig = TargetConfig()) -> dict[str, torch.Tensor]:
    """Targets of one image from its contract dict ("semantic", "masks", "labels").

    Returns "center" (1, H, W), "center_weight" (H, W) (0 on ignored pixels), "offset" (2, H, W),
    "offset_weight" (H, W) (1 on thing-instance pixels), "semantic_weight" (H, W) (small-instance weights).
    Instances whose class is not a thing class, or whose mask is empty, are skipped.
    """
    semantic = target["semantic"]
    masks = target["masks"].to(device=semantic.device, dtype=torch.bool)
    labels = target["labels"].to(semantic.device)
    things = torch.tensor(thing_classes, device=semantic.device, dtype=labels.dtype)
    keep = torch.isin(labels, things) & masks.flatten(1).any(1)
    masks = masks[keep]
    centers = instance_centers(masks)
    offsets, covered = offset_map(masks, centers)
    valid = semantic != IGNORE_INDEX
    semantic_weight = torch.ones(semantic.shape, device=semantic.device)
    for mask in masks:
        if int(mask.sum()) < config.small_instance_area:
            semantic_weight[mask] = config.small_instance_weight
    return {
        "center": center_heatmap(centers, tuple(semantic.shape), config.sigma)[None],
        "center_weight": valid.float(),
        "offset": offsets,
        "offset_weight": covered.float(),
        "semantic_weight": semantic_weight,
    }
