"""Top-down instance and panoptic segmentation: torchvision's Mask R-CNN, Panoptic FPN style.

Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019 (detectron2's
`modeling/meta_arch/panoptic_fpn.py`): the FPN features are computed once and feed both
torchvision's Mask R-CNN heads (RPN, box and mask heads) and a light semantic head; the panoptic
map is the heuristic fusion of the two (`segcli.models.postprocess.combine_semantic_and_instances`).
Panoptic from Mask R-CNN and a *separate* semantic model is the same fusion: replace
`outputs["semantic"]` with that model's logits before `postprocess`, or call the fusion directly.

Models:
- `maskrcnn_small`: the zoo's own encoder (`segcli.models.backbones.Encoder`) with an FPN, narrow
  heads and small anchors, trainable on a CPU on small images.
- `tv_maskrcnn_resnet50_fpn` / `_v2`: torchvision's COCO models, weights from `weights=FILE` or the
  torch hub cache (`segcli.models.pretrained`), built as torchvision builds its pretrained models
  (frozen batch norm with eps 0 for v1; with pretrained weights the stem and layer1 are frozen,
  torchvision's `trainable_backbone_layers=3`), so outputs equal torchvision's. With other thing
  classes the box and mask predictors are replaced after loading (torchvision's fine-tuning tutorial).

The semantic head is used only once segcli has trained it (`semantic_trained`, saved with the
weights): with COCO weights alone, panoptic output is COCO's things and void (0) everywhere else,
the same on every run; trained on a panoptic dataset, its stuff classes fill the rest.

Class indices: torchvision numbers the classes of its heads 1..K with 0 = background. The thing
classes (`thing_classes`, segcli class indices) map to 1..K in order, and back in the outputs.
Images arrive normalised (`image_to_tensor`), so torchvision's own normalisation is the identity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segcli import hub
from segcli.errors import ModelError
from segcli.models.backbones import Encoder
from segcli.models.base import SegModel
from segcli.models.blocks import ConvBNReLU
from segcli.models.losses import weighted_cross_entropy
from segcli.models.panoptic_deeplab import resolve_thing_classes
from segcli.models.postprocess import class_argmax, combine_semantic_and_instances
from segcli.models.pretrained import load_into, pretrained_state_dict
from segcli.models.registry import register_model
from segcli.preprocess import IMAGENET_MEAN, IMAGENET_STD
from segcli.structures import IGNORE_INDEX, Instance, Mode, Prediction, masks_to_boxes

if TYPE_CHECKING:  # torchvision is imported where a model is built: it costs a second or more at start-up
    from torchvision.models import detection as tvdet

MODES = (Mode.INSTANCE, Mode.PANOPTIC)  # no semantic model of its own: its semantic head serves the fusion
FPN_LEVELS = ("0", "1", "2", "3")  # strides 4..32: the names torchvision's RoI pooling reads


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch, slimmed: every FPN level (strides 4-32) => 3x3 conv => BN => ReLU,
    upsampled to stride 4 and summed => 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 64) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvBNReLU(in_channels, channels) for _ in FPN_LEVELS)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        size = features[FPN_LEVELS[0]].shape[-2:]
        fused = sum(F.interpolate(conv(features[level]), size=size, mode="bilinear", align_corners=False)
                    for conv, level in zip(self.convs, FPN_LEVELS))
        return self.classifier(fused)  # (B, C, H/4, W/4) of the padded batch


class EncoderFPN(nn.Module):
    """The zoo's encoder (strides 1..32) => FPN over strides 4..32 (+ a max-pooled stride-64 level)."""

    def __init__(self, in_channels: int = 3, width: int = 16, fpn_channels: int = 64) -> None:
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        super().__init__()
        self.encoder = Encoder(in_channels, width, depth=5)
        self.levels = [info for info in self.encoder.feature_info if info.stride >= 4]
        self.fpn = FeaturePyramidNetwork([info.channels for info in self.levels], fpn_channels, LastLevelMaxPool())
        self.out_channels = fpn_channels  # torchvision's MaskRCNN reads this

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.encoder(x)
        return self.fpn(OrderedDict((name, features[info.name]) for name, info in zip(FPN_LEVELS, self.levels)))


@contextmanager
def _loss_mode(*modules: nn.Module) -> Iterator[None]:
    """Switch only these modules' own `training` flags on (not their children's), so torchvision's RPN and
    RoI heads return losses while batch-norm layers keep their mode: validation losses in eval mode."""
    before = [m.training for m in modules]
    for m in modules:
        m.training = True
    try:
        yield
    finally:
        for m, flag in zip(modules, before):
            m.training = flag


class MaskRCNNModel(SegModel):
    """torchvision's Mask R-CNN plus a semantic FPN head behind segcli's model contract.

    forward (eval mode) -> {"semantic" (B, C, H, W) logits, "boxes" (N, 4) xyxy, "scores" (N,),
    "labels" (N,) class indices, "masks" (N, H, W) probabilities, "batch_index" (N,) image of each
    detection}, all at input resolution.
    """

    modes = MODES
    dense = False

    def __init__(self, net: tvdet.MaskRCNN, num_classes: int, thing_classes: list[int],
                 class_names: list[str] | None = None) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.thing_classes = list(thing_classes)
        self.class_names = class_names or [f"class{i}" for i in range(num_classes)]
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.semantic_head = SemanticFPNHead(net.backbone.out_channels, num_classes)
        to_torchvision = torch.zeros(num_classes, dtype=torch.int64)
        to_torchvision[self.thing_classes] = torch.arange(1, len(self.thing_classes) + 1)
        self.register_buffer("to_torchvision", to_torchvision, persistent=False)
        self.register_buffer("to_class", torch.tensor([-1, *self.thing_classes]), persistent=False)
        # Set by the first training step with semantic targets; saved in checkpoints.
        self.register_buffer("semantic_trained", torch.tensor(False))
        self._register_load_state_dict_pre_hook(_default_semantic_trained)

    def train(self, mode: bool = True):
        """Frozen layers stay frozen: batch norm whose parameters do not train keeps its statistics too."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def _features(self, images: torch.Tensor, targets: list[dict] | None = None):
        image_list, targets = self.net.transform(list(images), targets)  # resize to min_size, pad to /32
        return image_list, targets, self.net.backbone(image_list.tensors)  # FPN features, computed once

    def _semantic(self, features: dict[str, torch.Tensor], image_list, size: tuple[int, int]) -> torch.Tensor:
        """Semantic logits at input resolution: undo the padding, then the resize."""
        logits = F.interpolate(self.semantic_head(features), size=image_list.tensors.shape[-2:], mode="bilinear",
                               align_corners=False)
        h, w = image_list.image_sizes[0]
        return F.interpolate(logits[..., :h, :w], size=size, mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            raise RuntimeError("Mask R-CNN detects in eval mode: call model.eval() first "
                               "(training uses compute_losses)")
        size = tuple(images.shape[-2:])
        image_list, _, features = self._features(images)
        proposals, _ = self.net.rpn(image_list, features)
        detections, _ = self.net.roi_heads(features, proposals, image_list.image_sizes)
        detections = self.net.transform.postprocess(detections, image_list.image_sizes, [size] * len(images))
        if self.semantic_trained:
            semantic = self._semantic(features, image_list, size)
        else:  # no stuff to predict: a zero view, no memory, no random head
            semantic = images.new_zeros(()).expand(len(images), self.num_classes, *size)
        return {
            "semantic": semantic,  # the one dense map: first, for `segcli models --info`
            "boxes": torch.cat([d["boxes"] for d in detections]),
            "scores": torch.cat([d["scores"] for d in detections]),
            "labels": self.to_class[torch.cat([d["labels"] for d in detections])],
            "masks": torch.cat([d["masks"][:, 0] for d in detections]),
            "batch_index": torch.cat([torch.full((len(d["boxes"]),), i, device=images.device)
                                      for i, d in enumerate(detections)]),
        }

    def _to_torchvision(self, target: dict) -> dict[str, torch.Tensor]:
        """Contract target -> torchvision's: thing instances only, labels 1..K, no empty or degenerate boxes."""
        if "masks" not in target or "labels" not in target:
            raise ModelError("Mask R-CNN trains on instance masks: the dataset gives no instances (use --mode semantic "
                             "with a semantic model, or a dataset format with instances)")
        masks = target["masks"].to(torch.bool)
        labels = self.to_torchvision[target["labels"].long().to(self.to_torchvision.device)]
        boxes = target.get("boxes")
        if boxes is None:
            boxes = masks_to_boxes(masks)
        boxes = boxes.float().to(labels.device)
        has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        keep = (labels > 0) & has_area & masks.flatten(1).any(1).to(labels.device)
        return {"boxes": boxes[keep], "labels": labels[keep],
                "masks": masks[keep].to(device=labels.device, dtype=torch.uint8)}

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """torchvision's five Mask R-CNN losses, plus "loss_semantic" when the targets carry "semantic" maps."""
        tv_targets = [self._to_torchvision(t) for t in targets]
        with _loss_mode(self.net.rpn, self.net.roi_heads):
            image_list, tv_targets, features = self._features(images, tv_targets)
            proposals, losses = self.net.rpn(image_list, features, tv_targets)
            _, roi_losses = self.net.roi_heads(features, proposals, image_list.image_sizes, tv_targets)
        losses = {**losses, **roi_losses}
        if all("semantic" in t for t in targets):
            logits = self._semantic(features, image_list, tuple(images.shape[-2:]))
            semantic = torch.stack([t["semantic"] for t in targets]).long().to(logits.device)
            losses["loss_semantic"] = weighted_cross_entropy(logits, semantic, 1.0)
            if self.training:
                self.semantic_trained.fill_(True)
        return losses

    def postprocess(self, outputs: dict[str, torch.Tensor], *, mode: Mode = Mode.PANOPTIC,
                    score_threshold: float = 0.05, mask_threshold: float = 0.5, overlap_threshold: float = 0.5,
                    stuff_area: int = 64, fusion_score_threshold: float = 0.5) -> list[Prediction]:
        """One `Prediction` per image: instances scoring at least `score_threshold` (masks cut at
        `mask_threshold`), and for `mode` panoptic the semantic head's argmax and their fusion (`assemble`)."""
        keep = outputs["scores"] >= score_threshold
        detections = {k: v[keep].detach().cpu() for k, v in outputs.items() if k != "semantic"}
        return [
            self.assemble(logits, _instances(detections, b, mask_threshold), mode=mode,
                          overlap_threshold=overlap_threshold, stuff_area=stuff_area,
                          fusion_score_threshold=fusion_score_threshold)
            for b, logits in enumerate(outputs["semantic"])
        ]

    def assemble(self, semantic_logits: torch.Tensor, instances: list[Instance], *, mode: Mode = Mode.PANOPTIC,
                 overlap_threshold: float = 0.5, stuff_area: int = 64, fusion_score_threshold: float = 0.5,
                 **detection_thresholds) -> Prediction:
        """One image's semantic logits (C, H, W) and instances -> `Prediction`, fused by
        `combine_semantic_and_instances` (for `mode` instance: the instances alone). Tiled inference calls it
        once for the whole image, with the thresholds it gave `postprocess`; the detection ones were already
        applied per tile."""
        if mode == Mode.INSTANCE:
            return Prediction(instances=instances)
        if self.semantic_trained:
            semantic_map = class_argmax(semantic_logits, 0).to(torch.uint8).cpu().numpy()
        else:
            semantic_map = _paint(instances, semantic_logits.shape[-2:])
        isthing = [c in self.thing_classes for c in range(self.num_classes)]
        panoptic, segments = combine_semantic_and_instances(
            semantic_map, instances, isthing, overlap_threshold=overlap_threshold, stuff_area=stuff_area,
            score_threshold=fusion_score_threshold)
        return Prediction(semantic=semantic_map, instances=instances, panoptic=panoptic, segments=segments)


def _paint(instances: list[Instance], size) -> np.ndarray:
    """A semantic map from instances alone: each one's class where its mask is (best score on top), void elsewhere."""
    semantic = np.full(tuple(size), IGNORE_INDEX, dtype=np.uint8)
    for inst in sorted(instances, key=lambda inst: inst.score):
        semantic[inst.mask] = inst.label
    return semantic


def _default_semantic_trained(state_dict, prefix, *args) -> None:
    """Checkpoints written before the flag existed were trained by segcli: their semantic head was trained."""
    state_dict.setdefault(prefix + "semantic_trained", torch.tensor(True))


def _instances(detections: dict[str, torch.Tensor], image: int, mask_threshold: float) -> list[Instance]:
    """The detections of one image as `Instance`s by descending score; the box is the detector's, as xywh."""
    rows = (detections["batch_index"] == image).nonzero()[:, 0]
    rows = rows[detections["scores"][rows].argsort(descending=True)]
    instances = []
    for i in rows.tolist():
        mask = (detections["masks"][i] > mask_threshold).numpy()
        if not mask.any():
            continue
        x0, y0, x1, y1 = detections["boxes"][i].tolist()
        instances.append(Instance(mask=mask, label=int(detections["labels"][i]), score=float(detections["scores"][i]),
                                  bbox=(x0, y0, x1 - x0, y1 - y0)))
    return instances


# ---------------------------------------------------------------- builders


def _identity_normalisation(in_channels: int = 3) -> dict:
    return {"image_mean": [0.0] * in_channels, "image_std": [1.0] * in_channels}


@register_model("maskrcnn_small", modes=MODES,
                description="Mask R-CNN on the zoo encoder + FPN, narrow heads: trains on a CPU")
def maskrcnn_small(num_classes: int = 2, in_channels: int = 3, width: int = 16, thing_classes: list[int] | None = None,
                   fpn_channels: int = 64, min_size: int = 128, max_size: int = 512) -> MaskRCNNModel:
    """Images are resized so their short side is `min_size` (long side at most `max_size`); anchors
    of 8-128 px suit objects of a few to a hundred pixels at that scale."""
    from torchvision.models import detection as tvdet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead

    things = resolve_thing_classes(thing_classes, num_classes)
    k = len(things) + 1
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,), (128,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    net = tvdet.MaskRCNN(
        EncoderFPN(in_channels, width, fpn_channels), num_classes=None, min_size=min_size, max_size=max_size,
        **_identity_normalisation(in_channels),
        rpn_anchor_generator=anchors, rpn_head=RPNHead(fpn_channels, 3),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, k),
        box_batch_size_per_image=128, box_detections_per_img=50,
        mask_head=MaskRCNNHeads(fpn_channels, [fpn_channels] * 2, 1),
        mask_predictor=MaskRCNNPredictor(fpn_channels, fpn_channels, k),
    )
    return MaskRCNNModel(net, num_classes, things)


def _freeze_batchnorm(module: nn.Module, eps: float) -> None:
    """Replace every BatchNorm2d under `module` by FrozenBatchNorm2d (how torchvision builds pretrained v1
    backbones)."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=eps))
        else:
            _freeze_batchnorm(child, eps)


def _tv_maskrcnn(name: str, builder, frozen_bn_eps: float | None, num_classes: int | None,
                 thing_classes: list[int] | None, pretrained: bool, weights: str | None, min_size: int,
                 max_size: int) -> MaskRCNNModel:
    """torchvision's architecture as its pretrained builder makes it; COCO weights loaded when `pretrained` (or
    `weights` names a file), then new box and mask predictors when the thing classes are not COCO's (fine-tuning)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    weights_enum = hub.torchvision_weights(name)
    categories = list(weights_enum.meta["categories"])  # 91 names, index 0 = "__background__"
    num_classes = num_classes or len(categories)
    things = resolve_thing_classes(thing_classes, num_classes)
    net = builder(weights=None, weights_backbone=None, num_classes=len(categories), min_size=min_size,
                  max_size=max_size, **_identity_normalisation())
    if frozen_bn_eps is not None:
        _freeze_batchnorm(net.backbone.body, frozen_bn_eps)
    if pretrained or weights:
        state = pretrained_state_dict(weights_enum, weights, model=f"tv_{name}")
        load_into(net, state, str(weights or weights_enum.url))
        # Only pretrained layers are frozen: stem and layer1 (torchvision's trainable_backbone_layers=3).
        for param_name, parameter in net.backbone.body.named_parameters():
            parameter.requires_grad_(param_name.startswith(("layer2", "layer3", "layer4")))
    if len(things) + 1 != len(categories):
        heads = net.roi_heads
        heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, len(things) + 1)
        mask_channels = heads.mask_predictor.conv5_mask.in_channels
        heads.mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, len(things) + 1)
    names = categories if num_classes == len(categories) else None
    return MaskRCNNModel(net, num_classes, things, class_names=names)


@register_model("tv_maskrcnn_resnet50_fpn", modes=MODES,
                description="torchvision Mask R-CNN ResNet-50 FPN, COCO (80 thing classes)")
def tv_maskrcnn_resnet50_fpn(num_classes: int | None = None, thing_classes: list[int] | None = None,
                             pretrained: bool = True, weights: str | None = None, min_size: int = 800,
                             max_size: int = 1333) -> MaskRCNNModel:
    from torchvision.models import detection as tvdet

    # COCO_V1 was trained with frozen batch norm of eps 0 (torchvision's overwrite_eps).
    return _tv_maskrcnn("maskrcnn_resnet50_fpn", tvdet.maskrcnn_resnet50_fpn, 0.0,
                        num_classes, thing_classes, pretrained, weights, min_size, max_size)


@register_model("tv_maskrcnn_resnet50_fpn_v2", modes=MODES,
                description="torchvision Mask R-CNN ResNet-50 FPN v2, COCO (default for --mode instance and panoptic)")
def tv_maskrcnn_resnet50_fpn_v2(num_classes: int | None = None, thing_classes: list[int] | None = None,
                                pretrained: bool = True, weights: str | None = None, min_size: int = 800,
                                max_size: int = 1333) -> MaskRCNNModel:
    from torchvision.models import detection as tvdet

    return _tv_maskrcnn("maskrcnn_resnet50_fpn_v2", tvdet.maskrcnn_resnet50_fpn_v2, None,
                        num_classes, thing_classes, pretrained, weights, min_size, max_size)
