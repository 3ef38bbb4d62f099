"""U-Net (Ronneberger et al. 2015) and the models on it: semantic, panoptic, contour, distance and StarDist."""

from __future__ import annotations

import torch

from segcli.models.base import Body
from segcli.models.blocks import Up
from segcli.models.bodies import register_body
from segcli.models.contour import DistanceModel
from segcli.models.encoders import build_encoder
from segcli.models.panoptic_deeplab import resolve_thing_classes
from segcli.models.registry import register_model
from segcli.models.star import StarModel
from segcli.structures import Mode


@register_body("unet", title="U-Net", description="U-Net: encoder-decoder with skip connections (recommended)",
               notes={"panoptic": "CPU default", "contour": "many small touching objects: nuclei"})
class UNetBody(Body):
    """U-Net: the encoder halves the resolution `depth` times for context, the decoder doubles it back and
    concatenates the encoder's feature map of the same resolution (skip connection) at every step, so boundaries
    come back sharp. Output: width channels at stride 1 (2, or 4 for ConvNeXt, with an ImageNet `encoder`, one of
    segcli.models.encoders.ENCODERS, whose `encoder_weights` are "imagenet" (torch hub's cache), a file, or "none").
    """

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 4, bilinear: bool = True,
                 encoder: str | None = None, encoder_weights: str | None = "imagenet") -> None:
        super().__init__(build_encoder(encoder, in_channels=in_channels, width=width, depth=depth,
                                       weights=encoder_weights))
        info = self.encoder.feature_info
        ups, channels = [], info[-1].channels
        for skip in reversed(info[:-1]):
            # The zoo's encoder: as many channels as the skip. An ImageNet encoder: at most 256 (2048 + 1024 in
            # would be costly).
            out = skip.channels if encoder is None else min(skip.channels, 256)
            ups.append(Up(channels, skip.channels, out, bilinear=bilinear))
            channels = out
        self.ups = torch.nn.ModuleList(ups)
        self.out_channels, self.out_stride = channels, info[0].stride

    @property
    def size_multiple(self) -> int:
        return self.encoder.feature_info[-1].stride  # the coarsest feature: inputs are padded to a multiple of it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = list(self.encoder(x).values())
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1])):
            x = up(x, skip)
        return x


@register_model("unet_distance", modes=tuple(Mode), description="unet_contour plus each pixel's distance to its "
                "object's edge; instances grow from the deep cores (touching blobs whose shared edge is faint: nuclei)")
def unet_distance(num_classes: int = 2, in_channels: int = 3, width: int = 16, depth: int = 4,
                  thing_classes: list[int] | None = None, boundary_width: int = 1,
                  contact_weight: float = 1.0) -> DistanceModel:
    things = resolve_thing_classes(thing_classes, num_classes)
    return DistanceModel(UNetBody(in_channels, width, depth), num_classes, things, boundary_width, contact_weight)


@register_model("unet_stardist", modes=tuple(Mode), description="unet_contour plus StarDist's object probability and "
                "star-convex polygons; instances by polygon suppression (touching blobs with faint seams: nuclei)")
def unet_stardist(num_classes: int = 2, in_channels: int = 3, width: int = 16, depth: int = 4,
                  thing_classes: list[int] | None = None, boundary_width: int = 1, contact_weight: float = 1.0,
                  n_rays: int = 32) -> StarModel:
    things = resolve_thing_classes(thing_classes, num_classes)
    return StarModel(UNetBody(in_channels, width, depth), num_classes, things, boundary_width, contact_weight,
                     n_rays=n_rays)
