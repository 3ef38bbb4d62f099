"""ImageNet encoders from torchvision under the zoo's own decoders, as segmentation_models_pytorch does.

Contract (the same as `segcli.models.backbones.Encoder`, detectron2's ShapeSpec, timm's
feature_info): `forward(x)` returns a dict {name: (B, channels, ceil(H / stride), ceil(W / stride))}
in the order of `feature_info`, from high resolution to low, one map per stride ("s2", "s4", ...,
"s32"); each is the output of the last block of the classifier's trunk at that stride.

    resnet18/34      s2 64, s4 64, s8 128, s16 256, s32 512
    resnet50         s2 64, s4 256, s8 512, s16 1024, s32 2048
    mobilenet_v3_large  s2 16, s4 24, s8 40, s16 112, s32 960
    efficientnet_b0  s2 16, s4 24, s8 40, s16 112, s32 1280
    convnext_tiny    s4 96, s8 192, s16 384, s32 768 (its stem is a 4x4 patchify: no s2 map)

`max_stride=16` (DeepLab) dilates the last stage instead of striding it where torchvision can
(ResNets: layer4 unstrided and its 3x3 convolutions dilated by 2, as DeepLab does, also for the
BasicBlock ResNets torchvision will not dilate; MobileNetV3: torchvision's `dilated=True`); the others keep stride 32
and say so in `feature_info`. The classifier head (fc / classifier) is dropped after loading, so a
torchvision ImageNet state dict loads as published. Its normalisation (`mean`, `std`) comes from
the weights' `transforms()`, and the checkpoint card records it.
"""

from __future__ import annotations

import torch
from torch import nn

from segcli import hub
from segcli.errors import ModelError
from segcli.models.backbones import Encoder, FeatureInfo
from segcli.models.pretrained import load_into, pretrained_state_dict

ENCODERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "convnext_tiny", "efficientnet_b0")
_DILATABLE = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large")
_PROBE = 64  # side of the dummy input that measures each block's stride and channels once


class TorchvisionEncoder(nn.Module):
    """A torchvision ImageNet classifier's trunk as a sequence of blocks, tapped at the last block of each stride."""

    def __init__(self, name: str, weights: str | None = "imagenet", max_stride: int | None = None) -> None:
        super().__init__()
        if name not in ENCODERS:
            raise ModelError(f"unknown encoder {name!r}; available: {', '.join(ENCODERS)}")
        dilate = max_stride is not None and max_stride < 32 and name in _DILATABLE
        load = weights not in (None, "none")
        # torchvision on first use: importing it loads torch._dynamo, a second or more before any image
        import torchvision.models as tvm

        dilated = {"dilated": True} if dilate and name.startswith("mobilenet") else {}
        # Weights to load: build on the meta device (no random initialisation to pay for), then assign the tensors.
        with torch.device("meta" if load else "cpu"):
            net = getattr(tvm, name)(weights=None, **dilated)
        if dilate and name.startswith("resnet"):
            _dilate(net.layer4)
        weights_enum = hub.torchvision_weights(name)
        if load:
            source = None if weights == "imagenet" else weights
            state = pretrained_state_dict(weights_enum, source, model=name)
            load_into(net, state, str(source or weights_enum.url), assign=True)
        preset = weights_enum.transforms()
        self.mean, self.std = tuple(preset.mean), tuple(preset.std)
        if name.startswith("resnet"):
            blocks = [nn.Sequential(net.conv1, net.bn1, net.relu), net.maxpool,
                      net.layer1, net.layer2, net.layer3, net.layer4]
        else:
            blocks = list(net.features)
        self.blocks = nn.ModuleList(blocks)
        self.taps, self.feature_info = self._probe()

    @torch.no_grad()
    def _probe(self) -> tuple[list[int], list[FeatureInfo]]:
        """Run a small dummy image once: the stride and channels after every block, then one tap per stride."""
        training = self.training
        self.eval()
        x = torch.zeros(1, 3, _PROBE, _PROBE)
        shapes = []
        for block in self.blocks:
            x = block(x)
            shapes.append((_PROBE // x.shape[-1], x.shape[1]))
        self.train(training)
        taps, info = [], []
        for i, (stride, channels) in enumerate(shapes):
            last_of_stride = i + 1 == len(shapes) or shapes[i + 1][0] != stride
            if last_of_stride and stride > 1:
                taps.append(i)
                info.append(FeatureInfo(f"s{stride}", channels, stride))
        return taps, info

    @property
    def out_stride(self) -> int:
        return self.feature_info[-1].stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features, taps = {}, iter(zip(self.taps, self.feature_info))
        tap, info = next(taps)
        for i, block in enumerate(self.blocks[: self.taps[-1] + 1]):
            x = block(x)
            if i == tap:
                features[info.name] = x
                tap, info = next(taps, (None, None))
        return features


def _dilate(stage: nn.Module) -> None:
    """A ResNet stage at its input's resolution: strides 1, every 3x3 convolution dilated by 2 (same weights)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (2, 2), (2, 2)


def build_encoder(encoder: str | None, *, in_channels: int = 3, width: int = 16, depth: int = 4,
                  max_stride: int | None = None, weights: str | None = "imagenet") -> nn.Module:
    """The zoo's small encoder (`encoder=None`, the default), or a torchvision ImageNet one by name."""
    if encoder is None:
        return Encoder(in_channels, width, depth=depth, max_stride=max_stride)
    if in_channels != 3:
        raise ModelError(f"encoder {encoder} takes RGB images (in_channels=3), not {in_channels} channels")
    return TorchvisionEncoder(encoder, weights=weights, max_stride=max_stride)
