"""`segcli predict` on one 4000x4000 photo: tiled inference keeps memory bounded by the tile, not the image.

Runs the real command in a child process (a U-Net checkpoint written here, untrained: speed and memory do not
depend on the weights) and reads the child's peak resident memory. Issue #6: images far larger than a tile run in
bounded memory; the target is the whole run under 4 GB, against the 10+ GB an untiled forward pass would need.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segcli import io
from segcli.checkpoint import make_card, save_checkpoint
from segcli.models.registry import build_model
from segcli.structures import LabelSpace

SIZE = 4000
TILE = 1024
TARGET_GB = 4.0


def _checkpoint(folder: Path) -> Path:
    space = LabelSpace(["background", "cell", "membrane"])
    model = build_model("unet", num_classes=space.num_classes, width=16)
    card = make_card("unet", {"num_classes": 3, "width": 16}, "semantic", space)
    return save_checkpoint(folder / "unet", model, card)


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = _checkpoint(folder)
        image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        io.write_image(folder / "photo.png", image)
        segcli = Path(sys.executable).parent / "segcli"
        start = time.perf_counter()
        subprocess.run([str(segcli), "predict", str(folder / "photo.png"), "--weights", str(weights), "--out",
                        str(folder / "out"), "--tile", str(TILE), "--quiet"], check=True)
        seconds = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        written = io.read_label_png(folder / "out" / "semantic" / "photo.png").shape
    return {"size": f"{SIZE}x{SIZE}", "tile": TILE, "seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2),
            "output": f"{written[1]}x{written[0]}", "name": f"predict one {SIZE}x{SIZE} image, {TILE} px tiles",
            "measured": f"peak {peak_gb:.2f} GB, {seconds:.0f} s", "target": f"peak < {TARGET_GB} GB",
            "met": peak_gb < TARGET_GB}
