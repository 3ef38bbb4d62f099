"""The contract every zoo model follows, whatever its family.

    images: Tensor (B, 3, H, W) float32, normalised with the card's mean/std (segcli.preprocess.image_to_tensor)
    targets: list of dicts, one per image (torchvision's detection convention):
        "semantic": (H, W) int64 class indices, 255 = ignore
        "masks":    (N, H, W) uint8/bool instance masks
        "labels":   (N,) int64 class indices of the instances
        "boxes":    (N, 4) float32 xyxy boxes of the instances

    model(images) -> dict[str, Tensor]           raw outputs; dense models return maps at
                                                 input resolution ("semantic": (B, C, H, W) logits)
    model.compute_losses(images, targets) -> dict[str, Tensor]
                                                 the trainer minimises sum(losses.values())
    model.postprocess(outputs, **thresholds) -> list[Prediction]
                                                 one typed result per image (segcli.structures)

What else inference, training, export and fusion read from a model is declared on `SegModel` below, each with its
default and what it means: `dense`, `size_multiple`, `mean`/`std`, `flip_outputs`, `resize_outputs`, ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from segcli.models.blocks import upsample_maps
from segcli.models.losses import dense_losses
from segcli.models.postprocess import class_argmax
from segcli.structures import Instance, Mode, Prediction


class SegModel(nn.Module, ABC):
    """Base of every zoo model and of every adapter of a library's model (torchvision, transformers).

    Inference, training, export and fusion read a model through the attributes and methods below and through
    nothing else: a subclass overrides what differs from the default, and code outside `segcli.models` reads
    `model.size_multiple`, never `getattr(model, "size_multiple", 1)`.
    """

    modes: tuple[Mode, ...] = (Mode.SEMANTIC,)
    """The modes `postprocess` can build (the registry's entry says the same for its builder)."""
    dense: bool = True
    """Every output is a per-pixel map at input resolution: tiled and blended, mirrored for --tta, exportable to ONNX,
    trained channels-last. False (Mask R-CNN, hf:): detections, run per tile and fused by `assemble`."""
    in_channels: int = 3
    """Image channels the model takes (`build_model(..., in_channels=N)`, train --channels)."""
    size_multiple: int = 1
    """Input sides are padded to a multiple of this: the stride of the coarsest feature map."""
    mean: tuple[float, ...] | None = None
    """Input normalisation the weights were trained with (an ImageNet encoder's, a library's); None: the card's."""
    std: tuple[float, ...] | None = None
    """The standard deviations that go with `mean`."""
    class_names: list[str] | None = None
    """Class names that come with library weights (torchvision's metadata); None: the card's label space."""
    resizes_input: bool = False
    """The model resizes every image to its own input size (hf:): predict does not tile it unless --tile asks."""
    float32_modules: tuple[str, ...] = ()
    """Submodules kept in float32 when the model runs in bfloat16: heads whose outputs bfloat16 cannot resolve."""
    scalar_maps: bool = True
    """Every output map holds one value per pixel, no x/y vectors or directions: turning the image turns the maps, so
    test-time augmentation may average the 8 turns and mirrors of a model trained turned (`--rotate`)."""
    class_loss: bool = False
    """`compute_losses` has a per-pixel class cross-entropy that `dice_weight` and `class_weights` act on."""
    dice_weight: float = 0.0
    """Weight of the soft Dice term added to the class cross-entropy (train --dice)."""
    class_weights: torch.Tensor | None = None
    """Per-class weights of the class cross-entropy (train --class-weights auto); None: unweighted."""
    prepared: bool = False
    """True on the copies `inference.prepare_model` makes (BatchNorm folded, convolutions fused): inference only."""

    @abstractmethod
    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Training losses by name; the trainer minimises their sum."""

    @abstractmethod
    def postprocess(self, outputs: dict[str, torch.Tensor], **kwargs) -> list[Prediction]:
        """Raw outputs of `forward` -> one `Prediction` per image."""

    def flip_outputs(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs of the mirrored image -> those of the image (test-time augmentation): every map mirrored back.
        Models whose maps hold x-vectors (offsets, rays) also turn the vectors round."""
        return {k: v.flip(-1) for k, v in outputs.items()}

    def resize_outputs(self, outputs: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Dense outputs predicted at the card's scale -> `size` (bilinear). Models whose maps hold distances in
        pixels also scale the distances."""
        return {k: upsample_maps(v, size) for k, v in outputs.items()}

    def assemble(self, semantic_scores: torch.Tensor, instances: list[Instance], **thresholds) -> Prediction:
        """A sparse model's tiled image: the blended (C, H, W) class scores and the tiles' merged instances -> one
        `Prediction`. Dense models are post-processed whole and never assembled."""
        raise TypeError(f"{type(self).__name__} is dense: its tiles are blended, not assembled")


class SemanticModel(SegModel):
    """Family of models whose forward gives per-pixel class logits.

    Subclasses implement `logits(images) -> (B, C, H, W)` at input resolution.
    """

    modes = (Mode.SEMANTIC,)
    class_loss = True

    @abstractmethod
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H, W) class logits at input resolution."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"semantic": self.logits(images)}

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        logits = self(images)["semantic"]
        target = torch.stack([t["semantic"] for t in targets]).long().to(logits.device)
        return dense_losses(logits, target, name="ce", class_weights=self.class_weights, dice_weight=self.dice_weight)

    def postprocess(self, outputs: dict[str, torch.Tensor], **kwargs) -> list[Prediction]:
        # argmax of the logits is that of the softmax: no (C, H, W) probability copy of a large image.
        labels = class_argmax(outputs["semantic"], 1).to(torch.uint8).cpu().numpy()
        return [Prediction(semantic=label) for label in labels]


class Body(nn.Module):
    """Base of the zoo's bodies: image -> one feature map, the input of every head (semantic, panoptic, contour).

        body(images: (B, in_channels, H, W)) -> (B, out_channels, ~H / out_stride, ~W / out_stride)

    A body's constructor takes `in_channels`, `width` and its own options with their defaults; `encoder` and
    `encoder_weights` too when an ImageNet encoder can replace the zoo's (`segcli.models.encoders.build_encoder`).
    `segcli.models.bodies.register_body` makes its models from that signature.
    """

    out_channels: int
    """Channels of the feature map."""
    out_stride: int
    """The feature map's resolution: 1 / out_stride of the input's."""
    gives_class_scores: bool = False
    """The body's last layer gives the class scores itself (FCN-8s's fused score maps): its semantic model builds it
    with `out_channels` = the classes and adds no classifier."""

    def __init__(self, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        # An ImageNet encoder's input normalisation becomes the model's (the trainer writes it into the card).
        self.mean, self.std = (encoder.mean, encoder.std) if encoder is not None else (None, None)

    @property
    def size_multiple(self) -> int:
        """Input sides are padded to a multiple of this: the output stride, or a coarser feature's stride."""
        return self.out_stride
