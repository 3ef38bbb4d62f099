"""torchvision's pretrained semantic models as zoo entries (COCO-trained on the 21 VOC classes).

Weights come from `weights=FILE` or torch's hub cache (`segcli.models.pretrained`); class names and
normalisation come from torchvision's weight metadata, so checkpoint cards record them. With another
class count (fine-tuning, torchvision's reference recipe) the pretrained network is loaded first, then
its last classifier layer and that of the auxiliary head are replaced; the auxiliary head adds
0.5 x its cross-entropy to the training loss, as in torchvision's references/segmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcli import hub
from segcli.models.base import SemanticModel
from segcli.models.pretrained import load_into, pretrained_state_dict
from segcli.models.registry import register_model
from segcli.structures import IGNORE_INDEX, Mode

AUX_WEIGHT = 0.5  # torchvision references/segmentation/train.py


class TorchvisionSemantic(SemanticModel):
    """A torchvision segmentation network behind segcli's contract; logits are its "out" map."""

    def __init__(self, net: torch.nn.Module, weights_enum, class_names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.class_names = class_names
        preset = weights_enum.transforms()
        self.mean, self.std = tuple(preset.mean), tuple(preset.std)
        self.size_multiple = 8  # FCN and DeepLabV3 see 1/8 of the image: inputs padded to a multiple of 8
        self._aux: torch.Tensor | None = None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.net(images)
        # Training keeps the auxiliary head's logits for compute_losses (forward skips that head otherwise).
        self._aux = outputs.get("aux") if self.training else None
        return outputs["out"]

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        losses = super().compute_losses(images, targets)
        if self._aux is not None:
            target = torch.stack([t["semantic"] for t in targets]).long().to(self._aux.device)
            losses["aux"] = AUX_WEIGHT * F.cross_entropy(self._aux, target, ignore_index=IGNORE_INDEX)
            self._aux = None
        return losses

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training or getattr(self.net, "aux_classifier", None) is None:
            return super().forward(images)
        aux, self.net.aux_classifier = self.net.aux_classifier, None  # prediction: skip the auxiliary head's cost
        try:
            return super().forward(images)
        finally:
            self.net.aux_classifier = aux


def _replace_last_conv(head: nn.Sequential, num_classes: int) -> None:
    """The 1x1 classifier at the end of torchvision's FCNHead / DeepLabHead, for `num_classes` outputs."""
    last = head[-1]
    head[-1] = nn.Conv2d(last.in_channels, num_classes, kernel_size=1)


def _build(name: str, num_classes: int | None, pretrained: bool, weights: str | None) -> TorchvisionSemantic:
    # torchvision on first use: importing it loads torch._dynamo, a second or more before any image
    from torchvision.models import segmentation as tvseg

    builder = getattr(tvseg, name)
    weights_enum = hub.torchvision_weights(name)
    categories = list(weights_enum.meta["categories"])
    num_classes = num_classes or len(categories)
    has_aux = name != "lraspp_mobilenet_v3_large"
    # torchvision's published files carry the auxiliary head: it is always built, so every checkpoint has one layout.
    aux_loss = {"aux_loss": True} if has_aux else {}
    net = builder(weights=None, weights_backbone=None, num_classes=len(categories), **aux_loss)
    if pretrained or weights:
        state = pretrained_state_dict(weights_enum, weights, model=f"tv_{name}")
        load_into(net, state, str(weights or weights_enum.url))
    if num_classes == len(categories):
        return TorchvisionSemantic(net, weights_enum, categories)
    if has_aux:
        _replace_last_conv(net.classifier, num_classes)
        _replace_last_conv(net.aux_classifier, num_classes)
    else:  # LR-ASPP: a low- and a high-resolution classifier
        net.classifier.low_classifier = nn.Conv2d(net.classifier.low_classifier.in_channels, num_classes, 1)
        net.classifier.high_classifier = nn.Conv2d(net.classifier.high_classifier.in_channels, num_classes, 1)
    return TorchvisionSemantic(net, weights_enum, [f"class{i}" for i in range(num_classes)])


def _entry(name: str, description: str) -> None:
    """Register torchvision.models.segmentation's `name` as tv_`name`."""

    @register_model(f"tv_{name}", modes=(Mode.SEMANTIC,), description=description)
    def build(num_classes: int | None = None, pretrained: bool = True,
              weights: str | None = None) -> TorchvisionSemantic:
        return _build(name, num_classes, pretrained, weights)

    build.__name__ = f"tv_{name}"


_entry("fcn_resnet50", "torchvision FCN ResNet-50, COCO-trained on the 21 VOC classes")
_entry("deeplabv3_resnet50", "torchvision DeepLabV3 ResNet-50, 21 VOC classes (default for --mode semantic)")
_entry("deeplabv3_mobilenet_v3_large", "torchvision DeepLabV3 MobileNetV3-Large, 21 VOC classes")
_entry("lraspp_mobilenet_v3_large", "torchvision LR-ASPP MobileNetV3-Large, 21 VOC classes (fast)")
