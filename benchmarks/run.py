"""`make bench`: run every benchmarks/bench_*.py module's `run()`, then print each target as PASS or FAIL.

A benchmark returns a flat dict of what it measured plus either a list of `checks` (see
`benchmarks.common.check`) or one `target` with a boolean `met`. Everything, with the environment
it ran in, goes to benchmarks/results.json; `scripts/docs_bench.py` puts its table in docs/performance.md.

    python -m benchmarks.run                 # all of them
    python -m benchmarks.run inference train # the modules whose names contain these words
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

import torch

import benchmarks

RESULTS = Path(__file__).with_name("results.json")


def environment() -> dict:
    model_names = (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name"))
    cpu = next(model_names, platform.processor())
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),  # segcli's default unless the environment set one
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bfloat16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "machine": platform.machine(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def checks_of(result: dict) -> list[dict]:
    """The PASS/FAIL lines of one benchmark's result."""
    if "checks" in result:
        return result["checks"]
    if "met" in result:
        return [{"name": result.get("name", ""), "measured": result.get("measured", ""),
                 "target": result.get("target", ""), "met": bool(result["met"]),
                 "verdict": "PASS" if result["met"] else "FAIL"}]
    return []


def main(selected: list[str]) -> int:
    began = time.perf_counter()
    results: dict[str, dict] = {"_environment": environment()}
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    table: list[tuple[str, dict]] = []
    for name in names:
        if selected and not any(s in name for s in selected):
            continue
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", flush=True)
        try:
            result = module.run()
        except Exception as error:  # one broken benchmark fails its line; the others still run and are written
            result = {"error": f"{type(error).__name__}: {error}", "met": False, "name": name, "measured": "error",
                      "target": "runs"}
        result["wall_seconds"] = round(time.perf_counter() - start, 2)
        results[name] = result
        for key, value in result.items():
            if key != "checks":
                print(f"   {key}: {value}")
        for line in checks_of(result):
            line.setdefault("name", name)
            table.append((name, line))
            print(f"   {line['verdict']}  {line['name']}: {line['measured']} (target {line['target']})", flush=True)
    results["_environment"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["_environment"]["total_seconds"] = round(time.perf_counter() - began, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    failed = sum(not line["met"] for _, line in table)
    print(f"\n{'verdict':7}  {'target':<75} measured")
    for _name, line in table:
        print(f"{line['verdict']:7}  {(line['name'] + ' ' + line['target'])[:75]:<75} {line['measured']}")
    total_seconds = results["_environment"]["total_seconds"]
    print(f"\nwrote {RESULTS} in {total_seconds} s; {failed} of {len(table)} target(s) missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
