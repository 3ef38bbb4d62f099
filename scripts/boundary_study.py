"""The boundary study: U-Net against FCN-8s in boundary F1 across budgets and tolerances, from compare runs.

Usage: python scripts/boundary_study.py OUT.md PLOT.png RUN_DIR... (each RUN_DIR holds a compare results.json
with a `unet` and an `fcn` approach). Rewrites the part of OUT.md between its study markers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from segcli.services.compare_report import NOT_JUDGED, judge, not_judged, tolerance_label  # noqa: E402
from segcli.services.compare_results import CompareResults, load  # noqa: E402

BEGIN, END = "<!-- study:begin (make compare-boundary) -->", "<!-- study:end -->"


def _steps(results: CompareResults) -> int:
    return int(results.budget.split()[0])


def _dataset(results: CompareResults) -> str:
    name = Path(results.data).name
    return "context (synthetic)" if name == "data" else name  # compare generates its synthetic data in OUT/data


def rows(runs: list[CompareResults]) -> list[dict]:
    found = []
    for results in sorted(runs, key=lambda r: (_dataset(r), _steps(r))):
        reason = not_judged(results, ["unet", "fcn"])  # --quick, one seed, a collapsed model: no verdict
        for key in results.approaches["unet"].runs[0].images.boundary_f1:
            metric = "boundary_f1" if key == "default" else f"boundary_f1@{key}px"
            verdict = judge(results, "unet", "fcn", metric)
            found.append({"data": _dataset(results), "steps": _steps(results), "seeds": len(results.seeds),
                          "tolerance": tolerance_label(key),
                          "unet": verdict.better, "fcn": verdict.worse, "margin": verdict.margin,
                          "interval": verdict.interval, "verdict": NOT_JUDGED if reason else verdict.verdict,
                          "miou": (results.approaches["unet"].miou, results.approaches["fcn"].miou)})
    return found


def _cell(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(found: list[dict]) -> str:
    lines = ["| data | steps | seeds | tolerance | U-Net boundary F1 | FCN-8s boundary F1 | margin "
             "| 90% interval (images) | verdict | mIoU U-Net / FCN |", "|" + "---|" * 10]
    for r in found:
        lines.append(f"| {r['data']} | {r['steps']} | {r['seeds']} | {r['tolerance']} | {_cell(r['unet'])} | "
                     f"{_cell(r['fcn'])} | {r['margin']:+.3f} | [{r['interval'][0]:+.3f}, {r['interval'][1]:+.3f}] | "
                     f"{r['verdict']} | {r['miou'][0]:.3f} / {r['miou'][1]:.3f} |")
    return "\n".join(lines)


def plot(found: list[dict], path: Path) -> None:
    datasets = sorted({r["data"] for r in found})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        for tolerance, style in (("1 px", ":"), ("2 px", "--"), ("2% diagonal", "-")):
            points = sorted((r["steps"], r) for r in found if r["data"] == data and r["tolerance"] == tolerance)
            if not points:
                continue
            steps = [s for s, _ in points]
            for key, colour in (("unet", "tab:blue"), ("fcn", "tab:orange")):
                means = [sum(r[key]) / len(r[key]) for _, r in points]
                low = [m - min(r[key]) for m, (_, r) in zip(means, points)]
                high = [max(r[key]) - m for m, (_, r) in zip(means, points)]
                ax.errorbar(steps, means, yerr=[low, high], linestyle=style, color=colour, marker="o", capsize=3,
                            label=f"{'U-Net' if key == 'unet' else 'FCN-8s'}, {tolerance}")
        ax.set_xscale("log")
        ax.set_xlabel("training steps (log)")
        ax.set_ylabel("boundary F1 (mean, bars: min-max over seeds)")
        ax.set_title(data)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(out: str, plot_path: str, *run_dirs: str) -> None:
    runs = [load(Path(d) / "results.json") for d in run_dirs]
    found = rows(runs)
    plot(found, Path(plot_path))
    doc = Path(out)
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{out}: the markers {BEGIN} and {END} are missing")
    section = table(found) + f"\n\n![boundary F1 against budget]({Path(plot_path).name})"
    between_markers = re.escape(BEGIN) + ".*?" + re.escape(END)
    doc.write_text(re.sub(between_markers, lambda _: f"{BEGIN}\n{section}\n{END}", text, flags=re.S))


if __name__ == "__main__":
    main(*sys.argv[1:])
