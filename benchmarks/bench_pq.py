"""Panoptic quality over 500 images of 640x480 from files, as `segcli eval --mode panoptic` runs it.

Issue target: under 60 s on this machine (the files are written first and not timed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from segcli import io
from segcli.services.evaluate import evaluate_panoptic

N, H, W = 500, 480, 640
TARGET_S = 60.0
CATEGORIES = [{"id": c, "name": f"c{c}", "isthing": int(c <= 5)} for c in range(1, 9)]


def _panoptic(rng: np.random.Generator, jitter: int) -> tuple[np.ndarray, list[dict]]:
    ids = np.zeros((H, W), np.int32)
    ids[: H // 2] = 1
    ids[H // 2 :] = 2
    segments = {1: 6, 2: 7}
    for k in range(3, 3 + int(rng.integers(5, 20))):
        y, x = int(rng.integers(0, H - 60)), int(rng.integers(0, W - 60))
        h, w = int(rng.integers(20, 120)), int(rng.integers(20, 120))
        ids[y + jitter : y + h, x : x + w] = k
        segments[k] = int(rng.integers(1, 6))
    present = set(np.unique(ids).tolist())
    return ids, [{"id": k, "category_id": c, "iscrowd": 0, "area": int((ids == k).sum()), "bbox": [0, 0, 1, 1]}
                 for k, c in segments.items() if k in present]


def _write(root: Path, name: str, jitter: int) -> Path:
    rng = np.random.default_rng(0)
    annotations = []
    for i in range(N):
        ids, segments = _panoptic(rng, jitter)
        io.write_panoptic_png(root / name / f"{i:05d}.png", ids)
        annotations.append({"image_id": i, "file_name": f"{i:05d}.png", "segments_info": segments})
    return io.write_json(root / f"{name}.json", {"annotations": annotations, "categories": CATEGORIES,
                                                  "images": [{"id": i, "file_name": f"{i:05d}.png"} for i in range(N)]})


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt, pred = _write(root, "gt", 0), _write(root, "pred", 3)
        start = time.perf_counter()
        result = evaluate_panoptic(gt, pred)
        seconds = time.perf_counter() - start
    return {"images": N, "size": f"{W}x{H}", "seconds": round(seconds, 2), "pq": round(result["pq"], 4),
            "name": f"eval --mode panoptic, {N} files of {W}x{H}", "measured": f"{seconds:.1f} s",
            "target": f"< {TARGET_S:.0f} s", "met": seconds < TARGET_S}
