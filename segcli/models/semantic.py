"""The semantic approaches of the course, from the naive sliding window to DeepLabV3+.

Each approach is a *body* (image -> feature map at some stride) plus a 1x1 classifier and an
upsampling to the input size, except the sliding window, whose classifier is the whole model.
`build_body` gives the bodies to the instance and panoptic heads, so every decoder serves
semantic, instance and panoptic segmentation alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcli.models.base import SemanticModel
from segcli.models.blocks import ConvBNReLU, Up, bilinear_kernel, dense_gradient, upsample_maps
from segcli.models.encoders import build_encoder
from segcli.models.registry import register_model
from segcli.structures import IGNORE_INDEX, Mode

# ---------------------------------------------------------------- 1. sliding window


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


# ---------------------------------------------------------------- 2. full resolution, no downsampling


class FullResBody(nn.Module):
    """[3x3 convolution (dilated) => BN => ReLU] * depth, all at full resolution.

    No pooling and no stride: every layer costs H*W*width^2*9 multiply-adds, so the cost grows with
    the pixel count, and the receptive field grows only by 2*dilation per layer.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 8, dilations: tuple[int, ...] | None = None) -> None:
        super().__init__()
        dilations = tuple(dilations) if dilations else (1,) * depth
        if len(dilations) != depth:
            raise ValueError(f"dilations has {len(dilations)} entries for depth {depth}")
        layers, channels = [], in_channels
        for d in dilations:
            layers.append(ConvBNReLU(channels, width, dilation=d))
            channels = width
        self.layers = nn.Sequential(*layers)
        self.out_channels, self.out_stride = width, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# ---------------------------------------------------------------- 3. FCN-8s


class FCNBody(nn.Module):
    """FCN-8s: encoder to 1/32; score maps from the 1/32, 1/16 and 1/8 features fused by learned
    x2 transposed convolutions (bilinear-initialised): 1/32 -> 1/16 (+ skip) -> 1/8 (+ skip).

    `out_channels` is the number of score maps: the classes for semantic FCN, or a feature width
    for the panoptic heads. Output stride 8: everything finer is lost, the course's point about
    coarse boundaries that skip connections from earlier layers would recover.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, out_channels: int | None = None, encoder: str | None = None,
                 encoder_weights: str | None = "imagenet") -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, in_channels=in_channels, width=width, depth=5, weights=encoder_weights)
        channels = {f.stride: f.channels for f in self.encoder.feature_info}
        out_channels = out_channels or 2 * width
        self.score32 = nn.Sequential(ConvBNReLU(channels[32], channels[32]), nn.Conv2d(channels[32], out_channels, 1))
        self.score16 = nn.Conv2d(channels[16], out_channels, 1)
        self.score8 = nn.Conv2d(channels[8], out_channels, 1)
        self.up32 = self._upsampler(out_channels)
        self.up16 = self._upsampler(out_channels)
        self.out_channels, self.out_stride = out_channels, 8

    @staticmethod
    def _upsampler(channels: int) -> nn.ConvTranspose2d:
        up = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            up.weight.copy_(bilinear_kernel(channels, 4))
        return up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        by_stride = {info.stride: f[info.name] for info in self.encoder.feature_info}
        s16 = self.score16(by_stride[16]) + _fit(self.up32(self.score32(by_stride[32])), by_stride[16])
        return self.score8(by_stride[8]) + _fit(self.up16(s16), by_stride[8])  # (B, out, H/8, W/8)


def _fit(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x resized (bilinear) to like's spatial size: after repeated halving an odd size is off by a pixel."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- 4. U-Net


class UNetBody(nn.Module):
    """U-Net (Ronneberger et al. 2015): the encoder halves the resolution `depth` times for context,
    the decoder doubles it back and concatenates the encoder's feature map of the same resolution
    (skip connection) at every step, so boundaries come back sharp. Output: width channels at stride 1.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 4, bilinear: bool = True, encoder: str | None = None,
                 encoder_weights: str | None = "imagenet") -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, in_channels=in_channels, width=width, depth=depth, weights=encoder_weights)
        info = self.encoder.feature_info
        ups, channels = [], info[-1].channels
        for skip in reversed(info[:-1]):
            # The zoo's encoder: as many channels as the skip. An ImageNet encoder: at most 256 (2048 + 1024 in would be costly).
            out = skip.channels if encoder is None else min(skip.channels, 256)
            ups.append(Up(channels, skip.channels, out, bilinear=bilinear))
            channels = out
        self.ups = nn.ModuleList(ups)
        self.out_channels, self.out_stride = channels, info[0].stride  # stride 2 (4 for ConvNeXt) with an ImageNet encoder
        self.size_multiple = info[-1].stride  # coarsest feature: inputs are padded to a multiple of it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = list(self.encoder(x).values())
        x = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1])):
            x = up(x, skip)
        return x


# ---------------------------------------------------------------- 5. DeepLabV3+


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel 1x1 and dilated 3x3 convolutions plus a global
    image-pooling branch, concatenated and projected: context at several scales, and the whole image."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvBNReLU(cin, cout, kernel=1)] + [ConvBNReLU(cin, cout, dilation=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = ConvBNReLU(cout * (len(rates) + 2), cout, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabBody(nn.Module):
    """DeepLabV3+ (Chen et al. 2018): a dilated encoder (output stride 16, the last stage dilated
    instead of pooled), ASPP for global context, and a light decoder that upsamples x4 and fuses the
    1/4 features (the skip) for boundaries. Output: width*2 channels at stride 4."""

    def __init__(self, in_channels: int = 3, width: int = 32, output_stride: int = 16, rates: tuple[int, ...] = (6, 12, 18),
                 encoder: str | None = None, encoder_weights: str | None = "imagenet") -> None:
        super().__init__()
        self.encoder = build_encoder(encoder, in_channels=in_channels, width=width, depth=5, max_stride=output_stride,
                                     weights=encoder_weights)
        info = self.encoder.feature_info
        low = next(f for f in info if f.stride == 4)
        self.low_name = low.name
        self.aspp = ASPP(info[-1].channels, 4 * width, rates)
        self.low_project = ConvBNReLU(low.channels, width, kernel=1)
        self.fuse = nn.Sequential(ConvBNReLU(5 * width, 2 * width), ConvBNReLU(2 * width, 2 * width))
        self.out_channels, self.out_stride = 2 * width, 4
        self.size_multiple = info[-1].stride  # the output stride asked for, or 32 for an encoder torchvision cannot dilate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        context = self.aspp(list(features.values())[-1])
        low = self.low_project(features[self.low_name])
        context = dense_gradient(F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False))
        return self.fuse(torch.cat([low, context], dim=1))  # (B, 2*width, H/4, W/4)


# ---------------------------------------------------------------- bodies -> models

_BODIES = {"fullres": FullResBody, "fcn": FCNBody, "unet": UNetBody, "deeplab": DeepLabBody}


def build_body(approach: str, in_channels: int = 3, width: int = 16, **kwargs) -> nn.Module:
    """A body for the semantic, instance and panoptic heads: (B, out_channels, H/out_stride, W/out_stride)."""
    if approach not in _BODIES:
        raise ValueError(f"no body named {approach!r}; choose from {', '.join(_BODIES)}")
    return _BODIES[approach](in_channels=in_channels, width=width, **kwargs)


def copy_normalisation(model: nn.Module, body: nn.Module) -> None:
    """An ImageNet encoder's input normalisation becomes the model's (the trainer writes it into the card)."""
    encoder = getattr(body, "encoder", None)
    if hasattr(encoder, "mean"):
        model.mean, model.std = encoder.mean, encoder.std


class BodyClassifier(SemanticModel):
    """body => 1x1 classifier => bilinear upsampling to the input size (skipped at stride 1)."""

    def __init__(self, body: nn.Module, num_classes: int, classify: bool = True) -> None:
        super().__init__()
        self.body = body
        self.classifier = nn.Conv2d(body.out_channels, num_classes, 1) if classify else nn.Identity()
        self.size_multiple = getattr(body, "size_multiple", body.out_stride)
        copy_normalisation(self, body)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.classifier(self.body(images))
        if scores.shape[-2:] != images.shape[-2:]:
            scores = upsample_maps(scores, images.shape[-2:])
        return scores


@register_model("sliding", modes=(Mode.SEMANTIC,), description="sliding window: classify each pixel from the patch around it")
def sliding(num_classes: int = 2, in_channels: int = 3, width: int = 32, patch: int = 32, inference: str = "dense",
            training: str = "dense") -> SemanticModel:
    return SlidingWindow(num_classes, in_channels, width, patch=patch, inference=inference, training=training)


@register_model("fullres", modes=(Mode.SEMANTIC,), description="CNN without downsampling: full-resolution 3x3 convolutions")
def fullres(num_classes: int = 2, in_channels: int = 3, width: int = 32, depth: int = 8,
            dilations: list[int] | None = None) -> SemanticModel:
    return BodyClassifier(FullResBody(in_channels, width, depth, tuple(dilations) if dilations else None), num_classes)


@register_model("fcn", modes=(Mode.SEMANTIC,), description="FCN-8s: encoder to 1/32, learned upsampling fused with 1/16, 1/8 skips")
def fcn(num_classes: int = 2, in_channels: int = 3, width: int = 16, encoder: str | None = None, encoder_weights: str | None = "imagenet") -> SemanticModel:
    # FCN's fused maps *are* the class scores: no extra classifier after the body.
    body = FCNBody(in_channels, width, out_channels=num_classes, encoder=encoder, encoder_weights=encoder_weights)
    return BodyClassifier(body, num_classes, classify=False)


@register_model("unet", modes=(Mode.SEMANTIC,), description="U-Net: encoder-decoder with skip connections (recommended)")
def unet(num_classes: int = 2, in_channels: int = 3, width: int = 16, depth: int = 4, bilinear: bool = True,
         encoder: str | None = None, encoder_weights: str | None = "imagenet") -> SemanticModel:
    """`encoder`: the zoo's small encoder (None) or an ImageNet one (segcli.models.encoders.ENCODERS), whose
    `encoder_weights` are "imagenet" (torch hub's cache), a file, or "none" (random)."""
    return BodyClassifier(UNetBody(in_channels, width, depth, bilinear, encoder, encoder_weights), num_classes)


@register_model("deeplab", modes=(Mode.SEMANTIC,), description="DeepLabV3+: dilated encoder, ASPP global context, 1/4 skip decoder")
def deeplab(num_classes: int = 2, in_channels: int = 3, width: int = 16, output_stride: int = 16,
            encoder: str | None = None, encoder_weights: str | None = "imagenet") -> SemanticModel:
    body = DeepLabBody(in_channels, width, output_stride, encoder=encoder, encoder_weights=encoder_weights)
    return BodyClassifier(body, num_classes)
