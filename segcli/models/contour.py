"""Instances as seeds grown back over the mask: a semantic head that also predicts object boundaries.

The recipe of the DSB 2018 nucleus winners (U-Net + watershed-like grouping) in its plainest form:

    body (B, F, H, W) => 1x1 convolution => (B, C + 1, H, W) logits
                                             C classes ("semantic") + "boundary of a thing" ("contour")

Training is one cross-entropy over C + 1 classes: the pixels within `boundary_width` of an instance's
edge (where it meets the background or another instance) are labelled "boundary" instead of their
class. Where two instances come within `boundary_width + 1` px of each other, the loss of every pixel
(boundary, interior or the background gap) counts `contact_weight` times: the U-Net paper's border
weight map in its plainest form, because merged touching objects are where this model loses most.
At inference the interiors, which the boundaries separate where objects touch, seed one instance
each and grow back over the thing pixels (`segcli.models.postprocess.contour_prediction`).
No centres or offsets: blob-like objects of a dozen pixels, touching by the hundred, are what it is for.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segcli.models.base import Body, SegModel
from segcli.models.blocks import upsample_maps
from segcli.models.losses import dense_losses
from segcli.models.postprocess import contour_prediction
from segcli.structures import IGNORE_INDEX, Mode, Prediction


def instance_ids(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) instance masks -> (H, W) float32 ids 1..N (0: none; where masks overlap, the later one)."""
    numbers = torch.arange(1, masks.shape[0] + 1, device=masks.device, dtype=torch.float32).view(-1, 1, 1)
    return (masks.float() * numbers).amax(0)


def boundary_map(masks: torch.Tensor, width: int = 1) -> torch.Tensor:
    """(N, H, W) instance masks -> (H, W) bool: instance pixels within `width` px of another id (background or a
    neighbour), later instances on top. The image border is not a boundary: an object cut by a crop goes on."""
    if masks.shape[0] == 0:
        return torch.zeros(masks.shape[-2:], dtype=torch.bool, device=masks.device)
    ids = instance_ids(masks)[None, None]  # (1, 1, H, W)
    k = 2 * width + 1
    high = F.max_pool2d(ids, k, stride=1, padding=width)
    low = -F.max_pool2d(-ids, k, stride=1, padding=width)
    return ((ids > 0) & ((high != ids) | (low != ids)))[0, 0]


def contact_map(masks: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(N, H, W) instance masks -> (H, W) bool: pixels (of any class) with two or more different instances
    within `radius` px (a square window), i.e. the seams and narrow gaps between touching objects."""
    if masks.shape[0] < 2:
        return torch.zeros(masks.shape[-2:], dtype=torch.bool, device=masks.device)
    ids = instance_ids(masks)[None, None]
    empty = float(masks.shape[0] + 1)  # background counts as no instance for the smallest id
    k = 2 * radius + 1
    high = F.max_pool2d(ids, k, stride=1, padding=radius)
    low = -F.max_pool2d(-torch.where(ids > 0, ids, torch.full_like(ids, empty)), k, stride=1, padding=radius)
    return ((high > 0) & (low < empty) & (high != low))[0, 0]


class ContourModel(SegModel):
    """body => 1x1 classifier to C classes + "boundary" (see the module docstring)."""

    modes = tuple(Mode)
    class_loss = True  # --class-weights auto gives C values; "boundary" gets the largest
    extra_channels = 0  # outputs of subclasses' heads after the C + 1 classes (their forward splits them off "contour")

    def __init__(self, body: Body, num_classes: int, thing_classes: list[int], boundary_width: int = 1,
                 contact_weight: float = 1.0) -> None:
        super().__init__()
        self.body = body
        self.num_classes = num_classes
        self.thing_classes = list(thing_classes)
        self.boundary_width = boundary_width
        self.contact_weight = contact_weight
        self.classifier = nn.Conv2d(body.out_channels, num_classes + 1 + self.extra_channels, 1)
        self.size_multiple, self.mean, self.std = body.size_multiple, body.mean, body.std

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.classifier(self.body(images))
        if scores.shape[-2:] != images.shape[-2:]:
            scores = upsample_maps(scores, images.shape[-2:])
        return {"semantic": scores[:, : self.num_classes], "contour": scores[:, self.num_classes :]}

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        return self._class_losses(self(images), targets)[0]

    def _class_losses(self, outputs: dict[str, torch.Tensor], targets: list[dict]):
        """The loss of the C + 1 classes, with the (B, H, W) class target and pixel weights it used."""
        logits = torch.cat([outputs["semantic"], outputs["contour"]], dim=1)
        target = torch.stack([self._target(t) for t in targets]).to(logits.device)
        weights = None
        if self.class_weights is not None:
            weights = torch.cat([self.class_weights, self.class_weights.max().view(1)])
        pixel_weight = self._pixel_weight(targets, target.shape[-2:], logits.device)
        losses = dense_losses(logits, target, name="semantic", class_weights=weights, pixel_weight=pixel_weight,
                              dice_weight=self.dice_weight)
        return losses, target, pixel_weight

    def _pixel_weight(self, targets: list[dict], size: torch.Size, device: torch.device) -> torch.Tensor | float:
        """(B, H, W) loss weights: contact_weight where thing instances touch, 1 elsewhere (1.0 when no weight)."""
        if self.contact_weight == 1.0:
            return 1.0
        contact = torch.stack([self._contact(t, size) for t in targets]).to(device)
        return 1.0 + (self.contact_weight - 1.0) * contact.float()

    def _thing_masks(self, target: dict) -> torch.Tensor | None:
        """(N, H, W) bool masks of the target's thing instances (None: the target has no instances)."""
        if "masks" not in target or "labels" not in target:
            return None
        masks, labels = target["masks"], target["labels"]
        keep = torch.isin(labels, torch.tensor(self.thing_classes, device=labels.device, dtype=labels.dtype))
        return masks[keep].bool()

    def _target(self, target: dict) -> torch.Tensor:
        """The semantic target with thing-instance boundaries relabelled as class C."""
        semantic = target["semantic"].long().clone()
        masks = self._thing_masks(target)
        if masks is None:
            return semantic
        edge = boundary_map(masks.to(semantic.device), self.boundary_width)
        semantic[edge & (semantic != IGNORE_INDEX)] = self.num_classes
        return semantic

    def _contact(self, target: dict, size: torch.Size) -> torch.Tensor:
        """(H, W) bool: where thing instances of this target come within boundary_width + 1 px of each other."""
        masks = self._thing_masks(target)
        return torch.zeros(size, dtype=torch.bool) if masks is None else contact_map(masks, self.boundary_width + 1)

    def postprocess(self, outputs: dict[str, torch.Tensor], *, mode: Mode = Mode.PANOPTIC,
                    interior_threshold: float = 0.5, min_area: int = 10, stuff_area: int = 64) -> list[Prediction]:
        """One `Prediction` per image; thresholds as in `segcli.models.postprocess.contour_prediction`."""
        with torch.inference_mode():
            probabilities = torch.cat([outputs["semantic"], outputs["contour"]], dim=1).float().softmax(1)
            return [contour_prediction(p, self.thing_classes, interior_threshold=interior_threshold, min_area=min_area,
                                       stuff_area=stuff_area, mode=mode) for p in probabilities]


def distance_map(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) instance masks -> (H, W) float: each instance pixel's Euclidean distance to its instance's edge
    (`boundary_map`'s pixels: where it meets the background or another instance; the image border is no edge),
    plus 1, divided by the instance's largest, so 1 at its deepest pixel, about 1/r at its edge and 0 elsewhere."""
    if masks.shape[0] == 0:
        return torch.zeros(masks.shape[-2:], dtype=torch.float32)
    masks = masks.bool().cpu()
    ids = instance_ids(masks).long().numpy()
    inside = (ids > 0) & ~boundary_map(masks, 1).numpy()
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) + 1.0
    deepest = np.zeros(masks.shape[0] + 1, np.float32)
    np.maximum.at(deepest, ids, depth)
    deepest[0] = 1.0
    return torch.from_numpy(np.where(ids > 0, depth / deepest[ids], 0.0).astype(np.float32))


class DistanceModel(ContourModel):
    """A contour model with one more output, "distance": each pixel's predicted `distance_map` value (a logit).

    Seeds are then the interior pixels whose distance is above `distance_threshold`: the cores of the objects. Two
    touching nuclei whose shared edge the boundary class misses still have a saddle of low distance between their
    cores, wide in pixels where the boundary line is one pixel thin (the distance or "energy" maps of StarDist and
    of the DSB 2018 winners). Its loss is a binary cross-entropy against the map, weighted like the classes'."""

    extra_channels = 1

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = super().forward(images)
        contour = outputs["contour"]  # the boundary and the distance channels, split below
        return outputs | {"contour": contour[:, :1], "distance": contour[:, 1:]}

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        outputs = self(images)
        losses, target, pixel_weight = self._class_losses(outputs, targets)
        depth = torch.stack([self._distance(t, target.shape[-2:]) for t in targets]).to(target.device)
        error = F.binary_cross_entropy_with_logits(outputs["distance"][:, 0].float(), depth, reduction="none")
        valid = (target != IGNORE_INDEX).float()
        losses["distance"] = (error * pixel_weight * valid).sum() / valid.sum().clamp(min=1.0)
        return losses

    def _distance(self, target: dict, size: torch.Size) -> torch.Tensor:
        masks = self._thing_masks(target)
        return torch.zeros(size) if masks is None else distance_map(masks)

    def postprocess(self, outputs: dict[str, torch.Tensor], *, mode: Mode = Mode.PANOPTIC,
                    interior_threshold: float = 0.5, distance_threshold: float = 0.4, min_area: int = 10,
                    stuff_area: int = 64) -> list[Prediction]:
        """As ContourModel's, seeds narrowed to the pixels whose predicted distance exceeds `distance_threshold`."""
        with torch.inference_mode():
            probabilities = torch.cat([outputs["semantic"], outputs["contour"]], dim=1).float().softmax(1)
            distances = outputs["distance"][:, 0].float().sigmoid()
            return [contour_prediction(p, self.thing_classes, interior_threshold=interior_threshold, min_area=min_area,
                                       stuff_area=stuff_area, mode=mode, distance=d,
                                       distance_threshold=distance_threshold)
                    for p, d in zip(probabilities, distances)]
