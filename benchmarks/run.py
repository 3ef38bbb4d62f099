"""`make bench`: run every benchmarks/bench_*.py module's `run()` and print what each measured.

Each benchmark returns a flat dict of numbers and, where the issue sets one, a `target` and a
boolean `met`. Results are also written to benchmarks/results.json for the README.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import torch

import benchmarks


def main(selected: list[str]) -> int:
    results: dict[str, dict] = {
        "_environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        }
    }
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    failed = 0
    for name in names:
        if selected and not any(s in name for s in selected):
            continue
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", flush=True)
        result = module.run()
        result["wall_seconds"] = round(time.perf_counter() - start, 2)
        results[name] = result
        for key, value in result.items():
            print(f"   {key}: {value}")
        if result.get("met") is False:
            failed += 1
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}; {failed} target(s) missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
