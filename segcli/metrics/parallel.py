"""Per-image metric work in worker processes, when there are enough images to pay for them."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def map_images(function: Callable, jobs: list, workers: int | None = None) -> list:
    """`function` over per-image jobs, in worker processes when there are enough images to pay for them."""
    if workers is None:
        workers = min(os.cpu_count() or 1, max(1, len(jobs) // 16))
    if workers <= 1 or len(jobs) <= 1:
        return [function(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
