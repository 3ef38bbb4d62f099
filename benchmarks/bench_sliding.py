"""Sliding window, naive vs dense, at 256x256: the same weights, the same outputs, very different cost.

Issue target: dense at least 100x faster than naive.
"""

from __future__ import annotations

import time

import torch

from segcli.models.registry import build_model

SIZE = 256
TARGET = 100.0


def _time(model, x, repeats: int) -> float:
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return best


def run() -> dict:
    torch.manual_seed(0)
    model = build_model("sliding", num_classes=3).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    model.inference = "dense"
    _time(model, x, 1)  # warm-up
    dense = _time(model, x, 5)
    with torch.inference_mode():
        dense_out = model(x)["semantic"]
    model.inference = "naive"
    naive = _time(model, x, 1)
    with torch.inference_mode():
        diff = float((model(x)["semantic"] - dense_out).abs().max()) if SIZE <= 256 else None
    speedup = naive / dense
    return {"size": SIZE, "naive_s": round(naive, 3), "dense_s": round(dense, 4), "speedup": round(speedup, 1),
            "max_abs_diff": diff, "name": f"sliding window at {SIZE} px, dense vs naive (same outputs)",
            "measured": f"{speedup:.0f}x", "target": f">= {TARGET:.0f}x", "met": speedup >= TARGET}
