"""CPU latency per image of the zoo's three Mask2Former Swin-T checkpoints, float32 and bfloat16, and how far
the two precisions agree (issue #19: is a real panoptic model practical on a CPU, and may bfloat16 be its default?).

Each checkpoint runs on one photo-sized image (640x480) through segcli's own inference path, as
`segcli predict` runs it (`prepare_model`, then `predict_arrays`: the checkpoint's processor resizes
the image to its native 384x384, the network, the processor's post-processing for the mode, segcli's
conversion), in float32 and under bfloat16 autocast (`--bf16`). The median of a few runs after a
warm-up counts.

A checkpoint in the Hugging Face cache (`segcli models --fetch NAME`) is measured as published.
Otherwise (this machine has no network) a model of the same architecture is built from its config
with random weights: Swin-T backbone (embed_dim 96, depths 2-2-6-2, heads 3-6-12-24, window 7),
transformers' Mask2Former defaults for the rest (100 queries, 6 pixel-decoder and 10 transformer-
decoder layers, width 256), 133 / 80 / 150 classes, and the published processor settings (384x384,
ImageNet mean and std). It costs the same time; its parameter count is checked against the published
file size. Random weights say nothing about quality, and only a little about precision: agreement
of bfloat16 with float32 ("same_class_pixels": the share of pixels given the same class; panoptic:
the same segment category, instance: the class of the best instance covering the pixel) is measured
where nothing is confident: random weights predict no segment at all (panoptic, instance) or one class
everywhere (semantic), so it holds trivially ("float32_classes_predicted" says so). "same_mask_decisions" compares
the raw query masks instead (mask logit > 0), which random weights do vary: still only indicative. "weights" in each
result says which weights it was.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segcli.models import hf_zoo
from segcli.services.resolve import resolve_model

RUNS = 3
SHAPE = (480, 640)  # a photo; the processor resizes it to 384x384
NATIVE = 384  # the published checkpoints' preprocessor_config.json: size {"height": 384, "width": 384}
AGREEMENT = 0.99  # bfloat16 may be a default only where at least this share of pixels keeps its class
CHECKPOINTS = (  # (zoo name, the mode measured, number of classes)
    ("hf:facebook/mask2former-swin-tiny-coco-panoptic", "panoptic", 133),
    ("hf:facebook/mask2former-swin-tiny-coco-instance", "instance", 80),
    ("hf:facebook/mask2former-swin-tiny-ade-semantic", "semantic", 150),
)


def _class_names(count: int) -> list[str]:
    """COCO panoptic's names in the published order (things, then stuff, by COCO id); COCO's 80 things; else
    placeholders (ADE20K's names change no timing)."""
    from segcli.models.hf_coco import coco_panoptic_ids

    coco = list(coco_panoptic_ids())  # the 80 things come first
    if count in (80, len(coco)):
        return coco[:count]
    return [f"class {i}" for i in range(count)]


def random_swin_tiny(folder: Path, count: int) -> None:
    """The published architecture with random weights and `count` classes, saved with the published processor."""
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    names = _class_names(count)
    backbone = SwinConfig(image_size=224, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                          drop_path_rate=0.3, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, id2label=dict(enumerate(names)),
                               label2id={n: i for i, n in enumerate(names)}, use_pretrained_backbone=False)
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": NATIVE, "width": NATIVE}, size_divisor=32,
                              num_labels=count).save_pretrained(folder)


def _median_seconds(model, card, image: np.ndarray, mode: str, dtype: torch.dtype):
    from segcli.inference import InferenceOptions, predict_arrays, prepare_model

    options = InferenceOptions(dtype=dtype, batch_size=1, mode=mode)
    net = prepare_model(model, options)
    prediction = predict_arrays(net, card, [image], "cpu", options)[0]  # warm-up
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        predict_arrays(net, card, [image], "cpu", options)
        times.append(time.perf_counter() - start)
    return statistics.median(times), prediction


def class_map(prediction, mode: str, shape: tuple[int, int]) -> np.ndarray:
    """Each pixel's class (-1: none): semantic as is, panoptic by segment, instance by its best instance."""
    if mode == "semantic":
        return prediction.semantic.astype(np.int64)
    labels = np.full(shape, -1, np.int64)
    if mode == "panoptic":
        for segment in prediction.segments:
            labels[prediction.panoptic == segment.id] = segment.label
        return labels
    for instance in sorted(prediction.instances, key=lambda i: i.score):  # the best one is painted last
        labels[instance.mask] = instance.label
    return labels


def mask_agreement(model, image: np.ndarray) -> float:
    """Share of the queries' mask decisions (mask logit > 0, at the network's 1/4 resolution) that bfloat16 keeps:
    something to compare even when random weights, whose class scores are flat, predict no segment."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        fp32 = model(x)["masks_queries_logits"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x)["masks_queries_logits"].float()
    return float(((fp32 > 0) == (bf16 > 0)).float().mean())


def _measure(name: str, mode: str, count: int, tmp: Path) -> dict:
    real = hf_zoo.is_cached(name)
    if real:
        source = name
    else:
        folder = tmp / name.rsplit("/", 1)[-1]  # named like the repository: hf_zoo reads the modes from the name
        random_swin_tiny(folder, count)
        source = f"hf:{folder}"
    model, card = resolve_model(mode, source)
    image = np.random.default_rng(0).integers(0, 255, (*SHAPE, 3), dtype=np.uint8)
    fp32, p32 = _median_seconds(model, card, image, mode, torch.float32)
    bf16, p16 = _median_seconds(model, card, image, mode, torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    labels32, labels16 = class_map(p32, mode, SHAPE), class_map(p16, mode, SHAPE)
    agreement = float((labels32 == labels16).mean())
    # Random weights are unsure of everything: no query may pass the score threshold, or one class may cover the
    # image. Agreement then holds trivially and says nothing about bfloat16.
    predicted = sorted(set(np.unique(labels32).tolist()) - {-1})
    return {
        "weights": "published" if real else "random (same architecture; published checkpoint not cached)",
        "mode": mode,
        "parameters_m": round(parameters / 1e6, 1),
        "float32_mb": round(parameters * 4 / 1e6),  # the published files: 190 MB each
        "float32_s": round(fp32, 2),
        "bfloat16_s": round(bf16, 2),
        "speedup": round(fp32 / bf16, 2),
        "same_class_pixels": round(agreement, 4),
        "float32_classes_predicted": len(predicted),
        "same_mask_decisions": round(mask_agreement(model, image), 4),
        "bfloat16_could_be_default": bool(fp32 > bf16 and agreement >= AGREEMENT and len(predicted) > 1),
    }


def run() -> dict:
    if not hf_zoo.available():
        return {"skipped": f"transformers/scipy not installed ({hf_zoo.INSTALL_HINT})"}
    result = {"image": f"{SHAPE[1]}x{SHAPE[0]} (network input {NATIVE}x{NATIVE})", "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mode, count in CHECKPOINTS:
            result[name.rsplit("/", 1)[-1]] = _measure(name, mode, count, Path(tmp))
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
