"""Write a `make bench` run (docs/bench/results.json, a copy of benchmarks/results.json) into docs/performance.md
between its bench markers: one row per target, and the machine it ran on (`make docs-bench`). Run from the
repository root with PYTHONPATH=. : it reads the results as benchmarks/run.py does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.run import checks_of  # the lines `make bench` prints

sys.path.insert(0, str(Path(__file__).parent))
from docs_compare import replace_section  # noqa: E402  (a script beside this one)

BEGIN, END = "<!-- bench:begin (make docs-bench) -->", "<!-- bench:end -->"


def section(results: dict) -> str:
    env = results["_environment"]
    lines = [f"Measured by `make bench` on {env['date']}: {env['cpu']}, {env['cores']} cores, torch {env['torch']} "
             f"({env['cpu_capability']}, bfloat16 {'yes' if env['bfloat16'] else 'no'}), load average "
             f"{env['load_average_at_start'][0]} at the start and "
             f"{env.get('load_average_at_end', ['?'])[0]} at the end, "
             f"{env.get('total_seconds', '?')} s in all. Every figure is a ratio to a reference timed in the same run.",
             "", "| target | measured | goal | |", "|---|---|---|---|"]
    for name, result in results.items():
        if name.startswith("_"):
            continue
        for line in checks_of(result):
            lines.append(f"| {line['name']} | {line['measured']} | {line['target']} | {line['verdict']} |")
    return "\n".join(lines)


def main(results_path: str = "docs/bench/results.json", page_path: str = "docs/performance.md") -> None:
    replace_section(page_path, BEGIN, END, section(json.loads(Path(results_path).read_text())))


if __name__ == "__main__":
    main(*sys.argv[1:])
