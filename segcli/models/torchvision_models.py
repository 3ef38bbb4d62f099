"""torchvision's pretrained semantic models as zoo entries (21 VOC classes, ImageNet normalisation).

Weights come from `weights=FILE` or torch's hub cache (segcli.models.pretrained); class names and
normalisation come from torchvision's weight metadata, so checkpoint cards record them.
"""

from __future__ import annotations

import torch
from torchvision.models import segmentation as tvseg

from segcli.models.base import SemanticModel
from segcli.models.pretrained import load_into, pretrained_state_dict
from segcli.models.registry import register_model


class TorchvisionSemantic(SemanticModel):
    """A torchvision segmentation network behind segcli's contract; logits are its "out" map."""

    def __init__(self, net: torch.nn.Module, weights_enum, class_names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.class_names = class_names
        preset = weights_enum.transforms()
        self.mean, self.std = tuple(preset.mean), tuple(preset.std)
        self.output_stride = 8

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)["out"]


def _build(builder, weights_enum, num_classes: int | None, pretrained: bool, weights: str | None) -> TorchvisionSemantic:
    categories = list(weights_enum.meta["categories"])
    if pretrained:
        if num_classes not in (None, len(categories)):
            raise ValueError(f"pretrained weights predict {len(categories)} classes; train from scratch for {num_classes}")
        # aux_loss=True: torchvision's published files carry the auxiliary head; it is loaded, then unused.
        extra = {"aux_loss": True} if _has_aux(builder) else {}
        net = builder(weights=None, weights_backbone=None, num_classes=len(categories), **extra)
        load_into(net, pretrained_state_dict(weights_enum, weights), weights or weights_enum.url)
        return TorchvisionSemantic(net, weights_enum, categories)
    net = builder(weights=None, weights_backbone=None, num_classes=num_classes or len(categories))
    names = categories if (num_classes or len(categories)) == len(categories) else [f"class{i}" for i in range(num_classes)]
    return TorchvisionSemantic(net, weights_enum, names)


def _has_aux(builder) -> bool:
    return builder is not tvseg.lraspp_mobilenet_v3_large


def _entry(name: str, builder, weights_enum, description: str) -> None:
    @register_model(name, modes=("semantic",), description=description)
    def build(num_classes: int | None = None, pretrained: bool = True, weights: str | None = None) -> TorchvisionSemantic:
        return _build(builder, weights_enum, num_classes, pretrained, weights)

    build.__name__ = name


_entry("tv_fcn_resnet50", tvseg.fcn_resnet50, tvseg.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
       "torchvision FCN ResNet-50, COCO-trained on the 21 VOC classes")
_entry("tv_deeplabv3_resnet50", tvseg.deeplabv3_resnet50, tvseg.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
       "torchvision DeepLabV3 ResNet-50, 21 VOC classes")
_entry("tv_deeplabv3_mobilenet_v3_large", tvseg.deeplabv3_mobilenet_v3_large,
       tvseg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1, "torchvision DeepLabV3 MobileNetV3-Large, 21 VOC classes")
_entry("tv_lraspp_mobilenet_v3_large", tvseg.lraspp_mobilenet_v3_large,
       tvseg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1, "torchvision LR-ASPP MobileNetV3-Large, 21 VOC classes (fast)")
