"""Start-up: `segcli --version` and `segcli --help` against `python -c "import torch"`.

Issue #16: both commands answer in under 0.5 s because they import neither torch nor the services.
Each command runs in a fresh interpreter (as a user's shell starts it) several times; the median counts.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5
RUNS = 5
ROOT = Path(__file__).resolve().parent.parent  # `python -m segcli` from here imports this checkout's segcli


def _median_seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run() -> dict:
    version = _median_seconds(["-m", "segcli", "--version"], RUNS)
    help_ = _median_seconds(["-m", "segcli", "--help"], RUNS)
    torch = _median_seconds(["-c", "import torch"], 3)
    met = max(version, help_) < TARGET_S
    return {"version_s": round(version, 3), "help_s": round(help_, 3), "import_torch_s": round(torch, 3),
            "name": "segcli start-up",
            "measured": f"--version {version:.2f} s, --help {help_:.2f} s (import torch {torch:.2f} s)",
            "target": f"--version and --help < {TARGET_S} s", "met": met, "verdict": "PASS" if met else "FAIL"}
