"""Star-convex polygons (StarDist: Schmidt, Weigert, Broaddus, Myers, MICCAI 2018) on the contour model.

    body (B, F, H, W) => 1x1 convolution => (B, C + 1 + 1 + R, H, W)
        C classes + "boundary of a thing" ("semantic", "contour": as `unet_contour`)
        + object probability ("distance": each object pixel's distance to its edge over the object's largest)
        + R ray lengths ("rays": from each object pixel, how far its object goes in R directions, px)

Every object pixel describes the whole of its object as a star-convex polygon. At inference the most probable
pixels (the objects' middles) propose polygons and non-maximum suppression keeps one per object
(`segcli.models.postprocess.star_prediction`). Two touching nuclei then stay two wherever their middles are
apart, even where the seam between them is too faint for a boundary class to be predicted: that seam is where
contour models merge them. Losses: the contour model's classes, StarDist's binary cross-entropy on the object
probability and its L1 on the rays weighted by that probability (pixels near an object's middle count most).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from segcli.models.blocks import upsample_maps
from segcli.models.contour import ContourModel, DistanceModel, instance_ids
from segcli.models.postprocess import ray_angles, star_prediction
from segcli.structures import Mode

RAY_LOSS_WEIGHT = 0.2  # StarDist's train_loss_weights (1, 0.2): BCE of the probability, L1 (px) of the rays
RAY_STRIDE = 2  # ray targets and their loss on every second pixel each way (StarDist's grid (2, 2)): a quarter the cost


def ray_lengths(ids: np.ndarray, n_rays: int, stride: int = 1) -> np.ndarray:
    """(B, H, W) instance ids (0: none) -> (B, n_rays, H', W') float32 at the pixels [::stride, ::stride]: how many
    steps of one pixel each object pixel can go along each ray and stay in its object (a neighbour, the background
    or the image border ends it), so the polygon through the rays' ends passes through the object's last pixels;
    0 off objects. StarDist's targets, marched a step at a time from every pixel at once."""
    b, h, w = ids.shape
    ids = ids.astype(np.int16 if ids.max() < 2**15 else np.int32)  # half the bytes to compare at every step
    own = ids[:, ::stride, ::stride]
    steps = np.zeros((b, n_rays, *own.shape[1:]), np.int16)
    if not own.any():
        return steps.astype(np.float32)
    rows, cols = np.nonzero(ids.any(0))
    reach = int(np.hypot(np.ptp(rows), np.ptp(cols))) + 2  # no ray stays inside further than the objects span
    padded = np.pad(ids, ((0, 0), (reach, reach), (reach, reach)))  # 0 beyond the border: rays end there
    own = np.ascontiguousarray(own)
    same = np.empty(own.shape, bool)
    for r, angle in enumerate(ray_angles(n_rays)):
        inside, count = own > 0, steps[:, r]
        for k in range(1, reach):
            dy, dx = int(round(k * np.sin(angle))), int(round(k * np.cos(angle)))
            ahead = padded[:, reach + dy : reach + dy + h : stride, reach + dx : reach + dx + w : stride]
            inside &= np.equal(ahead, own, out=same)
            if k % 4 == 0 and not inside.any():
                break
            count += inside
    return steps.astype(np.float32)


class StarModel(DistanceModel):
    """A distance model (classes, boundary, object probability) with R more outputs, "rays": the lengths of the
    star-convex polygon of each pixel's object (see the module docstring)."""

    scalar_maps = False  # rays point in directions: test-time augmentation mirrors (`flip_outputs`), never turns

    def __init__(self, *args, n_rays: int = 32, **kwargs) -> None:
        self.n_rays = n_rays
        self.extra_channels = 1 + n_rays
        super().__init__(*args, **kwargs)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = ContourModel.forward(self, images)
        extra = outputs["contour"]  # the boundary, the object probability and the rays, split below
        return outputs | {"contour": extra[:, :1], "distance": extra[:, 1:2], "rays": extra[:, 2:]}

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        outputs = self(images)
        losses, target, pixel_weight = self._class_losses(outputs, targets)
        depth = torch.stack([self._distance(t, target.shape[-2:]) for t in targets]).to(target.device)
        losses["distance"] = F.binary_cross_entropy_with_logits(outputs["distance"][:, 0].float(), depth)
        wanted = torch.from_numpy(ray_lengths(self._ids(targets, target.shape[-2:]), self.n_rays, RAY_STRIDE))
        predicted = outputs["rays"][:, :, ::RAY_STRIDE, ::RAY_STRIDE].float()
        weight = depth[:, None, ::RAY_STRIDE, ::RAY_STRIDE]  # StarDist: the L1 weighted by the object probability
        error = (predicted - wanted.to(predicted.device)).abs() * weight
        # Averaged over the weighted object pixels, not all pixels as StarDist's: a mean over the whole window makes
        # the rays' gradient some 15x smaller than the classes' (nuclei cover 12% of DSB's pixels), too slow to learn
        # in the half hour of a CPU run (measured: ray errors of a quarter of their length after 28 minutes).
        losses["rays"] = RAY_LOSS_WEIGHT * error.sum() / (weight.sum() * self.n_rays).clamp(min=1.0)
        return losses

    def _ids(self, targets: list[dict], size: torch.Size) -> np.ndarray:
        """(B, H, W) int32: each target's thing instances numbered 1..N (later masks on top), 0 elsewhere."""
        ids = np.zeros((len(targets), *size), np.int32)
        for i, target in enumerate(targets):
            masks = self._thing_masks(target)
            if masks is not None and masks.shape[0]:
                ids[i] = instance_ids(masks.cpu()).to(torch.int32).numpy()
        return ids

    def flip_outputs(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Undo a horizontal flip (test-time augmentation): mirror every map, and take each ray from its mirror
        image's (angle a -> pi - a), since the object a ray of the mirrored image saw lies the other way."""
        flipped = {k: v.flip(-1) for k, v in outputs.items()}
        mirror = [(self.n_rays // 2 - r) % self.n_rays for r in range(self.n_rays)]
        flipped["rays"] = flipped["rays"][:, mirror]
        return flipped

    @staticmethod
    def resize_outputs(outputs: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Maps predicted at another scale -> `size`; rays are lengths in pixels, so they scale with the image."""
        h, w = outputs["rays"].shape[-2:]
        resized = {k: upsample_maps(v, size) for k, v in outputs.items()}
        resized["rays"] = resized["rays"] * ((size[0] / h + size[1] / w) / 2)
        return resized

    def postprocess(self, outputs: dict[str, torch.Tensor], *, mode: Mode = Mode.PANOPTIC, prob_threshold: float = 0.5,
                    nms_threshold: float = 0.4, min_area: int = 10, stuff_area: int = 64) -> list:
        """One `Prediction` per image; thresholds as in `segcli.models.postprocess.star_prediction`."""
        with torch.inference_mode():
            probabilities = torch.cat([outputs["semantic"], outputs["contour"]], dim=1).float().softmax(1)
            objects = outputs["distance"][:, 0].float().sigmoid()
            return [star_prediction(p, self.thing_classes, object_probability=o, rays=r, prob_threshold=prob_threshold,
                                    nms_threshold=nms_threshold, min_area=min_area, stuff_area=stuff_area, mode=mode)
                    for p, o, r in zip(probabilities, objects, outputs["rays"].float())]
