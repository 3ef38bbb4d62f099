"""Hugging Face Mask2Former (and MaskFormer) checkpoints behind segcli's model contract: a thin adapter.

The checkpoint's own image processor does what the model was trained with: `forward` hands it the
(B, 3, H, W) batch in [0, 1] (the card's normalisation is the identity; the processor resizes,
normalises and pads), and `postprocess` calls its `post_process_panoptic_segmentation`,
`post_process_instance_segmentation` or `post_process_semantic_segmentation` for the adapter's
`task`, then converts the result once into segcli's `Prediction`.

Two things segcli does on top, each for a stated reason:
- Stuff segments of one class are fused by segcli, not by `label_ids_to_fuse`: transformers 5.24's
  `compute_segments` returns to an earlier id when it fuses and then counts on from there, so a
  later segment can receive an id already in use. The processor runs unfused (every id unique);
  segcli merges same-class stuff segments into one segment afterwards, as COCO panoptic expects.
- Post-processing memory is bounded: the processor upsamples one map per class (semantic) or per
  query (instance, panoptic) to the target size, 150 x 12 Mpx x 4 bytes = 7 GB for a phone photo.
  Images larger than `POSTPROCESS_BYTES` allows are post-processed at a reduced size and the label
  maps enlarged (nearest). The network sees 384 x 384 px and its masks are 96 x 96: nothing the
  reduced size drops was predicted.

Tiling (`predict --tile N`) goes through segcli's sparse path: each tile is predicted and
post-processed on its own; `forward`'s "semantic" scores (the processor's class-score maps at its
own resolution) are blended over the image, and `assemble` fuses them with the tiles' instances.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from segcli.errors import ModelError
from segcli.models.base import SegModel
from segcli.models.postprocess import class_argmax, combine_semantic_and_instances
from segcli.structures import IGNORE_INDEX, Instance, LabelSpace, Prediction, Segment, mask_to_xywh

POSTPROCESS_BYTES = 512 * 2**20  # the largest (maps, h, w) float32 stack post-processing may allocate
# Mask2Former's own inference thresholds (detectron2 config MODEL.MASK_FORMER.TEST): object mask 0.8,
# overlap 0.8; instance results keep a query when its score reaches 0.5 (transformers' default).
PANOPTIC_SCORE = 0.8
INSTANCE_SCORE = 0.5


class HFMask2Former(SegModel):
    """A transformers universal-segmentation model and its image processor, for one `task` (mode)."""

    dense = False
    resizes_input = True  # the processor resizes every image: predict does not tile it unless --tile asks

    def __init__(self, net: torch.nn.Module, processor, task: str, label_space: LabelSpace,
                 modes: tuple[str, ...]) -> None:
        super().__init__()
        if task not in modes:
            raise ModelError(f"this checkpoint cannot do --mode {task}; it does {', '.join(modes)}")
        if task == "semantic" and label_space.num_classes > IGNORE_INDEX:
            raise ModelError(f"{label_space.num_classes} classes do not fit segcli's uint8 semantic maps (at most 255)")
        self.net, self.processor, self.task, self.label_space = net, processor, task, label_space
        self.modes = tuple(modes)
        self.class_names = list(label_space.names)
        self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # images arrive in [0, 1]; the processor normalises

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) RGB in [0, 1] -> the processor's input, the network, its raw outputs."""
        inputs = self.processor(images=list(images.float()), do_rescale=False, return_tensors="pt")
        outputs = self.net(pixel_values=inputs["pixel_values"].to(images.device),
                           pixel_mask=inputs["pixel_mask"].to(images.device))
        raw = {"class_queries_logits": outputs.class_queries_logits,
               "masks_queries_logits": outputs.masks_queries_logits}
        # The processor's class scores (B, C, h, w) at its own resolution: what tiling blends (inference.py).
        scores = self.processor.post_process_semantic_segmentation(_namespace(raw), return_segmentation_scores=True)
        size = torch.tensor([list(images.shape[-2:])] * len(images), device=images.device)
        return {"semantic": torch.stack([s.segmentation_scores for s in scores]), **raw, "image_size": size}

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        raise ModelError("segcli does not fine-tune Hugging Face checkpoints; fine-tune with transformers' Trainer "
                         "and open the result with --model hf:DIR")

    def postprocess(self, outputs: dict[str, torch.Tensor], *, score_threshold: float | None = None,
                    mask_threshold: float = 0.5, overlap_threshold: float = 0.8, **_other) -> list[Prediction]:
        """One `Prediction` per image through the processor's post-processing for `task`.

        Thresholds of other model families (e.g. Mask R-CNN's stuff_area) do not apply and are ignored."""
        results = []
        for i, (h, w) in enumerate(outputs["image_size"].tolist()):
            raw = _namespace({k: outputs[k][i : i + 1].float()
                              for k in ("class_queries_logits", "masks_queries_logits")})
            size = _postprocess_size((h, w), max(raw.class_queries_logits.shape[1:]))
            if self.task == "semantic":
                labels = self.processor.post_process_semantic_segmentation(raw, target_sizes=[size])[0]
                results.append(Prediction(semantic=_enlarge(labels.to(torch.uint8).cpu().numpy(), (h, w))))
                continue
            threshold = score_threshold if score_threshold is not None else (
                PANOPTIC_SCORE if self.task == "panoptic" else INSTANCE_SCORE)
            options = {"threshold": threshold, "mask_threshold": mask_threshold,
                       "overlap_mask_area_threshold": overlap_threshold, "target_sizes": [size]}
            if self.task == "instance":
                result = self.processor.post_process_instance_segmentation(raw, return_binary_maps=True, **options)[0]
                results.append(Prediction(instances=self._instances(result, (h, w))))
            else:
                result = self.processor.post_process_panoptic_segmentation(raw, label_ids_to_fuse=set(), **options)[0]
                results.append(self._panoptic(result, (h, w)))
        return results

    def assemble(self, semantic_scores: torch.Tensor, instances: list[Instance], *, overlap_threshold: float = 0.8,
                 **_thresholds) -> Prediction:
        """A tiled image: blended class scores (C, H, W) and the tiles' instances -> one `Prediction`."""
        semantic = class_argmax(semantic_scores, 0).to(torch.uint8).cpu().numpy()
        if self.task == "semantic":
            return Prediction(semantic=semantic)
        if self.task == "instance":
            return Prediction(instances=instances)
        # Score thresholds were applied per tile; stuff fills what no instance claims (segcli's fusion).
        panoptic, segments = combine_semantic_and_instances(semantic, instances, self.label_space.isthing,
                                                            overlap_threshold=1 - overlap_threshold,
                                                            score_threshold=0.0)
        return Prediction(semantic=semantic, instances=instances, panoptic=panoptic, segments=segments)

    def _instances(self, result: dict, shape: tuple[int, int]) -> list[Instance]:
        """The processor's binary maps (N, h, w) and segments_info -> thing `Instance`s at full size."""
        infos = result["segments_info"]
        if not infos:
            return []
        maps = result["segmentation"].bool().cpu().numpy()
        things = self.label_space.isthing
        instances = []
        for mask, info in zip(maps, infos):
            if not things[info["label_id"]]:
                continue  # a panoptic checkpoint's stuff queries are not objects
            full = _enlarge(mask, shape)
            if full.any():
                instances.append(Instance(mask=full, label=int(info["label_id"]), score=float(info["score"])))
        return instances

    def _panoptic(self, result: dict, shape: tuple[int, int]) -> Prediction:
        """The processor's unfused segment map -> segcli's: stuff of one class fused, ids 1..K, void 0."""
        ids = result["segmentation"].to(torch.int64).cpu().numpy()  # -1 (nothing found) or 0 = void, 1..K
        infos = result["segments_info"]
        lookup = np.zeros(max([0, *(s["id"] for s in infos)]) + 1, np.int32)
        labels, scores, stuff_id = [], [], {}
        for info in infos:
            label = int(info["label_id"])
            if not self.label_space.isthing[label] and label in stuff_id:
                lookup[info["id"]] = stuff_id[label]
                scores[stuff_id[label] - 1] = max(scores[stuff_id[label] - 1], float(info["score"]))
                continue
            labels.append(label)
            scores.append(float(info["score"]))
            lookup[info["id"]] = len(labels)
            if not self.label_space.isthing[label]:
                stuff_id[label] = len(labels)
        panoptic = _enlarge(lookup[np.clip(ids, 0, None)], shape)
        segments, instances = [], []
        for number, (label, score) in enumerate(zip(labels, scores), 1):
            mask = panoptic == number
            area = int(mask.sum())
            if area == 0:
                continue  # lost to the enlargement's sampling: tiny, and no pixel carries its id
            thing = self.label_space.isthing[label]
            # Scores belong to things, as in segcli's own panoptic outputs (stuff regions are not detections).
            segments.append(Segment(number, label, area, mask_to_xywh(mask), score=score if thing else None))
            if thing:
                instances.append(Instance(mask=mask, label=label, score=score))
        return Prediction(panoptic=panoptic, segments=segments, instances=instances)


def _namespace(raw: dict[str, torch.Tensor]) -> SimpleNamespace:
    """What the processor's post-processing reads: an object with the two logits attributes."""
    return SimpleNamespace(**raw)


def _postprocess_size(shape: tuple[int, int], maps: int) -> tuple[int, int]:
    """The image's size, or a smaller one of the same aspect so that `maps` float32 maps fit POSTPROCESS_BYTES."""
    h, w = shape
    scale = min(1.0, (POSTPROCESS_BYTES / (4 * maps * h * w)) ** 0.5)
    return (h, w) if scale >= 1.0 else (max(1, int(h * scale)), max(1, int(w * scale)))


def _enlarge(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map (h, w) at (H, W) by nearest neighbour (the identity when the sizes agree)."""
    h, w = labels.shape[-2:]
    if (h, w) == tuple(shape):
        return labels
    rows = np.arange(shape[0]) * h // shape[0]
    cols = np.arange(shape[1]) * w // shape[1]
    return labels[rows[:, None], cols[None, :]]
