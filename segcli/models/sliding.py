"""The course's first approach: classify each pixel from the window around it, naively or densely."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcli.models.base import SemanticModel
from segcli.models.blocks import ConvBNReLU
from segcli.models.registry import register_model
from segcli.structures import IGNORE_INDEX, Mode


class SlidingWindow(SemanticModel):
    """Classify the centre pixel of a `patch` x `patch` window, for every pixel.

    The course's first idea, and why it is abandoned: run naively it cuts out and classifies one
    window per pixel, recomputing the same convolutions up to patch^2 times, and it can never see
    anything outside its window (fur alone cannot tell a cow from a goat). The classifier uses only
    stride-1, unpadded convolutions (dilated to cover the window, OverFeat's dense trick), so the
    very same weights also run *densely* as one fully convolutional pass over the padded image with
    identical outputs: `inference="naive"` or `"dense"`.
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 3, width: int = 32, patch: int = 32,
                 inference: str = "dense", batch_size: int = 1024, windows_per_image: int = 256,
                 training: str = "dense") -> None:
        super().__init__()
        if patch < 4:
            raise ValueError("patch must be at least 4 pixels")
        if training not in ("dense", "windows"):
            raise ValueError(f"training must be 'dense' or 'windows', not {training!r}")
        self.training_mode = training
        self.patch, self.inference, self.batch_size = patch, inference, batch_size
        self.windows_per_image = windows_per_image
        layers, channels, reach, dilation = [], in_channels, 1, 1
        # Dilations 1, 2, 4, ... until the next 3x3 layer would overshoot the window...
        while reach + 2 * dilation <= patch:
            layers.append(ConvBNReLU(channels, width, kernel=3, dilation=dilation, padding=0))
            channels, reach, dilation = width, reach + 2 * dilation, dilation * 2
        # ...then one layer with the kernel that makes the receptive field exactly `patch`.
        if reach < patch:
            layers.append(ConvBNReLU(channels, width, kernel=patch - reach + 1, padding=0))
            channels = width
        layers += [ConvBNReLU(width, 2 * width, kernel=1, padding=0), nn.Conv2d(2 * width, num_classes, 1)]
        self.classifier = nn.Sequential(*layers)
        self.size_multiple = 1  # full resolution throughout: any input size

    @property
    def _pads(self) -> tuple[int, int, int, int]:
        before = self.patch // 2  # the "centre" of an even window is the pixel just right/below the middle
        after = self.patch - 1 - before
        return (before, after, before, after)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.inference == "naive":
            return self._naive(images)
        if self.inference != "dense":
            raise ValueError(f"inference must be 'dense' or 'naive', not {self.inference!r}")
        return self.classifier(F.pad(images, self._pads))

    def _naive(self, images: torch.Tensor) -> torch.Tensor:
        """One window per pixel, cut out with unfold and classified in batches (memory bounded by batch_size)."""
        b, c, h, w = images.shape
        padded = F.pad(images, self._pads)
        out = []
        for image in padded:
            windows = F.unfold(image[None], self.patch)[0].T  # (H*W, C*P*P): one row per output pixel
            scores = [
                self.classifier(chunk.reshape(-1, c, self.patch, self.patch)).flatten(1)
                for chunk in windows.split(self.batch_size)
            ]
            out.append(torch.cat(scores).T.reshape(-1, h, w))
        return torch.stack(out)

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Every window of the image labelled by its centre pixel, computed densely (`training="dense"`), or a
        random sample of windows cut out one by one (`"windows"`, the approach done naively: about patch^2/4
        times the arithmetic per labelled pixel for the same function)."""
        if self.training_mode == "dense":
            return self._dense_losses(images, targets)
        labels = torch.stack([t["semantic"] for t in targets]).long().to(images.device)
        padded = F.pad(images, self._pads)
        b, _, h, w = images.shape
        valid = labels != IGNORE_INDEX
        windows, centre_labels = [], []
        for i in range(b):
            candidates = valid[i].flatten().nonzero()[:, 0]
            if len(candidates) == 0:
                continue
            pick = candidates[torch.randint(len(candidates), (self.windows_per_image,), device=images.device)]
            ys, xs = pick // w, pick % w
            for y, x in zip(ys.tolist(), xs.tolist()):
                windows.append(padded[i, :, y : y + self.patch, x : x + self.patch])
            centre_labels.append(labels[i].flatten()[pick])
        if not windows:
            return {"ce": images.sum() * 0.0}
        scores = self.classifier(torch.stack(windows)).flatten(1)
        weight = self.class_weights.to(images.device) if self.class_weights is not None else None
        return {"ce": F.cross_entropy(scores, torch.cat(centre_labels), weight=weight)}

    def _dense_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        inference, self.inference = self.inference, "dense"  # naive inference would give the same scores, slowly
        try:
            return super().compute_losses(images, targets)
        finally:
            self.inference = inference


@register_model("sliding", modes=(Mode.SEMANTIC,),
                description="sliding window: classify each pixel from the patch around it")
def sliding(num_classes: int = 2, in_channels: int = 3, width: int = 32, patch: int = 32, inference: str = "dense",
            training: str = "dense") -> SemanticModel:
    return SlidingWindow(num_classes, in_channels, width, patch=patch, inference=inference, training=training)
