"""CPU latency of the default panoptic model (Mask2Former Swin-T, COCO panoptic) per image, float32 and bfloat16.

Issue #19: is a real panoptic model practical on a CPU? One photo-sized image (640x480) goes through
segcli's own inference path (`predict_arrays`: the checkpoint's processor resizes it to its native
384x384, the network, the processor's panoptic post-processing, segcli's conversion), in float32 and
under bfloat16 autocast; the median of a few runs after a warm-up counts.

With the published checkpoint in the Hugging Face cache (`segcli models --fetch
hf:facebook/mask2former-swin-tiny-coco-panoptic`) it is measured; otherwise a model of the same
architecture (Swin-T backbone, 100 queries, 133 classes) with random weights, which costs the same
time but says nothing about quality: "checkpoint" in the result says which. Agreement of the two
precisions is reported as the share of pixels whose panoptic category is the same; it only means
something for the real checkpoint, so bfloat16 stays opt-in (`--bf16`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segcli.models import hf_zoo

RUNS = 3
SHAPE = (480, 640)


def _random_swin_tiny(folder: Path) -> str:
    """The published architecture (transformers' Mask2Former defaults are its decoder; Swin-T backbone) with
    random weights and the COCO panoptic class names, saved as a checkpoint folder."""
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    from segcli.models.hf_coco import coco_panoptic_ids

    names = list(coco_panoptic_ids())  # things (by COCO id), then stuff: the checkpoint's class order
    backbone = SwinConfig(image_size=224, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, id2label=dict(enumerate(names)),
                               label2id={n: i for i, n in enumerate(names)}, use_pretrained_backbone=False)
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)
    return f"hf:{folder}"


def _median_seconds(model, card, image: np.ndarray, dtype: torch.dtype):
    from segcli.inference import InferenceOptions, predict_arrays

    options = InferenceOptions(dtype=dtype, batch_size=1)
    prediction = predict_arrays(model, card, [image], "cpu", options)[0]  # warm-up
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        predict_arrays(model, card, [image], "cpu", options)
        times.append(time.perf_counter() - start)
    return statistics.median(times), prediction


def _categories(prediction) -> np.ndarray:
    labels = np.full(prediction.panoptic.shape, -1, np.int64)
    for segment in prediction.segments:
        labels[prediction.panoptic == segment.id] = segment.label
    return labels


def run() -> dict:
    if not hf_zoo.available():
        return {"skipped": f"transformers/scipy not installed ({hf_zoo.INSTALL_HINT})"}
    name = hf_zoo.DEFAULT_PANOPTIC
    with tempfile.TemporaryDirectory() as tmp:
        real = hf_zoo.is_cached(name)
        source = name if real else _random_swin_tiny(Path(tmp))
        model, card = hf_zoo.load(source, "panoptic")
        image = np.random.default_rng(0).integers(0, 255, (*SHAPE, 3), dtype=np.uint8)
        fp32, p32 = _median_seconds(model, card, image, torch.float32)
        bf16, p16 = _median_seconds(model, card, image, torch.bfloat16)
    return {
        "checkpoint": name if real else "random weights, Swin-T Mask2Former architecture (published checkpoint not cached)",
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "image": f"{SHAPE[1]}x{SHAPE[0]} (network input 384x384)",
        "float32_s": round(fp32, 2),
        "bfloat16_s": round(bf16, 2),
        "speedup": round(fp32 / bf16, 2),
        "same_category_pixels": round(float((_categories(p32) == _categories(p16)).mean()), 3),
        "threads": torch.get_num_threads(),
    }
