"""Bottom-up panoptic segmentation: Panoptic-DeepLab-style heads on any body of the zoo.

Cheng et al., "Panoptic-DeepLab", CVPR 2020. One body (`segcli.models.bodies`: `unet_panoptic`, ...)
computes a feature map once; three light heads read it:

    body (B, F, H/s, W/s) ─┬─ semantic head => (B, C, H, W) class logits
                           ├─ centre head   => (B, 1, H, W) instance-centre heatmap
                           └─ offset head   => (B, 2, H, W) (dy, dx) from each pixel to its centre

Every head is 3x3 convolution => BN => ReLU => 1x1 convolution, upsampled bilinearly to the input
size. The same model serves the three modes: semantic uses only the first head; instance and
panoptic group thing pixels around the centres (`segcli.models.postprocess`). Losses follow the
paper: cross-entropy with small instances weighted up, MSE on the heatmap (weight 200) and L1 on
offsets over thing pixels (weight 0.01).
"""

from __future__ import annotations

import torch
from torch import nn

from segcli.errors import ModelError
from segcli.models.base import Body, SegModel
from segcli.models.blocks import ConvBNReLU, upsample_maps
from segcli.models.losses import dense_losses
from segcli.models.panoptic_targets import TargetConfig, panoptic_targets
from segcli.models.postprocess import bottom_up_prediction
from segcli.structures import Mode, Prediction


def resolve_thing_classes(thing_classes: list[int] | None, num_classes: int) -> list[int]:
    """The builders' `thing_classes` option: default every class but 0 (the usual background); checked."""
    things = list(range(1, num_classes)) if thing_classes is None else sorted({int(c) for c in thing_classes})
    wrong = [c for c in things if not 0 <= c < num_classes]
    if wrong:
        raise ModelError(f"thing_classes {wrong} are not class indices 0..{num_classes - 1}; "
                         "list the indices of the thing classes")
    return things


class Head(nn.Sequential):
    """3x3 convolution => BN => ReLU => 1x1 convolution to `out_channels` maps."""

    def __init__(self, cin: int, hidden: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(cin, hidden), nn.Conv2d(hidden, out_channels, 1))


class PanopticDeepLab(SegModel):
    """Semantic, centre and offset heads on one shared body (see the module docstring)."""

    modes = tuple(Mode)
    class_loss = True
    scalar_maps = False  # offsets are (dy, dx) vectors: test-time augmentation mirrors, never turns
    center_loss_weight = 200.0
    offset_loss_weight = 0.01

    def __init__(self, body: Body, num_classes: int, thing_classes: list[int], head_channels: int = 32,
                 targets: TargetConfig = TargetConfig()) -> None:
        super().__init__()
        self.body = body
        self.num_classes = num_classes
        self.thing_classes = list(thing_classes)
        self.target_config = targets
        self.size_multiple, self.mean, self.std = body.size_multiple, body.mean, body.std
        self.semantic_head = Head(body.out_channels, head_channels, num_classes)
        self.center_head = Head(body.out_channels, head_channels, 1)
        self.offset_head = Head(body.out_channels, head_channels, 2)

    # Instances are read at the centre heatmap's local maxima. In bfloat16 its top values round into plateaus and one
    # object gets several centres (things PQ 0.75 -> 0.55 on synthetic shapes, the bundled `shapes` model), so the
    # centre head runs in float32 whatever the rest runs in; `inference.prepare_model` keeps its weights float32.
    float32_modules = ("center_head",)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(images)  # (B, F, H/s, W/s), computed once for the three heads
        with torch.autocast(features.device.type, enabled=False):
            # float32 at least (float64 when the whole model is: `models --info` measures its receptive field so)
            center = self.center_head(features.to(torch.promote_types(features.dtype, torch.float32)))
        outputs = {"semantic": self.semantic_head(features), "center": center, "offset": self.offset_head(features)}
        if features.shape[-2:] != images.shape[-2:]:
            size = images.shape[-2:]
            outputs = {k: upsample_maps(v, size) for k, v in outputs.items()}
        return outputs

    @staticmethod
    def flip_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Undo a horizontal flip of the input (test-time augmentation): mirror every map, and negate dx,
        since an offset that pointed left in the mirrored image points right in the original."""
        flipped = {k: v.flip(-1) for k, v in outputs.items()}
        flipped["offset"] = flipped["offset"] * flipped["offset"].new_tensor([1.0, -1.0]).view(1, 2, 1, 1)
        return flipped

    @staticmethod
    def resize_outputs(outputs: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Maps predicted at another scale -> `size`; offsets are distances in pixels, so they scale with the image."""
        h, w = outputs["offset"].shape[-2:]
        resized = {k: upsample_maps(v, size) for k, v in outputs.items()}
        scale = resized["offset"].new_tensor([size[0] / h, size[1] / w]).view(1, 2, 1, 1)  # (dy, dx) factors
        resized["offset"] = resized["offset"] * scale
        return resized

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """"semantic" always; "center" and "offset" when the targets carry instance "masks" and "labels"."""
        outputs = self(images)
        device = outputs["semantic"].device
        semantic = torch.stack([t["semantic"] for t in targets]).long().to(device)
        if not all("masks" in t and "labels" in t for t in targets):
            # Zero gradients rather than none for the unused heads: DistributedDataParallel expects
            # every parameter to take part in every step.
            untouched = 0.0 * (outputs["center"].sum() + outputs["offset"].sum())
            losses = self._semantic_losses(outputs["semantic"], semantic, 1.0)
            losses["semantic"] = losses["semantic"] + untouched
            return losses
        per_image = [panoptic_targets({**t, "semantic": s}, self.thing_classes, self.target_config)
                     for t, s in zip(targets, semantic)]
        built = {k: torch.stack([p[k] for p in per_image]) for k in per_image[0]}
        return {
            **self._semantic_losses(outputs["semantic"], semantic, built["semantic_weight"]),
            "center": self.center_loss_weight * _weighted_mean(
                (outputs["center"] - built["center"]) ** 2, built["center_weight"][:, None]),
            "offset": self.offset_loss_weight * _weighted_mean(
                (outputs["offset"] - built["offset"]).abs(), built["offset_weight"][:, None]),
        }

    def _semantic_losses(self, logits: torch.Tensor, target: torch.Tensor,
                         pixel_weight: torch.Tensor | float) -> dict[str, torch.Tensor]:
        return dense_losses(logits, target, name="semantic", class_weights=self.class_weights,
                            pixel_weight=pixel_weight, dice_weight=self.dice_weight)

    def postprocess(self, outputs: dict[str, torch.Tensor], *, mode: Mode = Mode.PANOPTIC,
                    center_threshold: float = 0.1, nms_kernel: int = 7, top_k: int = 200,
                    stuff_area: int = 64) -> list[Prediction]:
        """One `Prediction` per image: semantic map, instances (by score) and panoptic map, as far as `mode` needs.

        Thresholds as in `segcli.models.postprocess.bottom_up_prediction`.
        """
        with torch.inference_mode():
            return [
                bottom_up_prediction(logits, center, offset, self.thing_classes, center_threshold=center_threshold,
                                     nms_kernel=nms_kernel, top_k=top_k, stuff_area=stuff_area, mode=mode)
                for logits, center, offset in zip(outputs["semantic"], outputs["center"], outputs["offset"])
            ]


def _weighted_mean(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(loss * weight) / sum(weight over the broadcast shape); zero (with a gradient) when every weight is 0."""
    weight = weight.expand_as(loss)
    return (loss * weight).sum() / weight.sum().clamp(min=1.0)
