"""What `segcli compare` writes: results.json/csv, report.md with a verdict per claim, and the plots.

The verdicts are computed from the measured numbers; a claim that did not hold on this data is
reported as not holding, with the numbers that say so.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

from segcli import io  # noqa: E402

MIOU_MARGIN = 0.05  # what "a clear margin" means for the context claim, in mIoU
SPEEDUP_TARGET = 100.0  # dense vs naive sliding window
INTERIOR_MARGIN = 16  # px from any class boundary: half the sliding window, so the window sees one class only


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def summary_rows(results: dict) -> list[dict]:
    """One flat row per approach: the table of the terminal, the CSV and report.md."""
    rows = []
    for name, r in results["approaches"].items():
        row = {
            "approach": name,
            "params_m": round(r["params"] / 1e6, 3),
            "gflops": round(r["gflops"], 3),
            "receptive_field_px": r["receptive_field"],
            "miou": round(r["miou"], 4),
            "interior_accuracy": _round(r.get("interior_accuracy")),
            "boundary_f1": round(r["boundary_f1"], 4),
            "train_seconds": round(r["train_seconds"], 1),
        }
        for size, ms in r["latency_ms"].items():
            row[f"latency_ms@{size}"] = round(ms, 2)
        for size, mb in r["peak_memory_mb"].items():
            row[f"memory_mb@{size}"] = _round(mb, 1)
        rows.append(row)
    return rows


def terminal_tables(results: dict) -> list[tuple[str, list[dict]]]:
    """The summary split in two narrow tables (quality, cost) so that both fit an 80-column terminal."""
    quality, cost = [], []
    for name, r in results["approaches"].items():
        quality.append({"approach": name, "mIoU": round(r["miou"], 3), "inside acc": _round(r.get("interior_accuracy"), 3),
                        "boundary F1": round(r["boundary_f1"], 3), "RF px": r["receptive_field"],
                        "params M": round(r["params"] / 1e6, 2), "train s": round(r["train_seconds"], 1)})
        row = {"approach": name, "GFLOPs": round(r["gflops"], 2)}
        row.update({f"ms@{size}": round(ms, 1) for size, ms in r["latency_ms"].items()})
        largest = max(r["peak_memory_mb"], key=int, default=None)
        if largest is not None:
            row[f"MB@{largest}"] = _round(r["peak_memory_mb"][largest], 1)
        cost.append(row)
    return [("quality", quality), (f"cost per image, batch 1, {results['environment']['device']}", cost)]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _slope(sizes: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(pixel count)."""
    points = [(math.log(s * s), math.log(v)) for s, v in zip(sizes, values) if v and v > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def claims(results: dict) -> list[dict]:
    """Each course claim with `held` (True/False/None when not measurable here) and its evidence."""
    a = results["approaches"]
    found = []
    if "sliding" in a and "unet" in a:
        diff = a["unet"]["miou"] - a["sliding"]["miou"]
        interior = (a["unet"].get("interior_accuracy"), a["sliding"].get("interior_accuracy"))
        text = (
            f"U-Net mIoU {a['unet']['miou']:.3f} vs sliding window {a['sliding']['miou']:.3f} "
            f"(difference {diff:+.3f}; a clear margin is {MIOU_MARGIN:.2f})."
        )
        if None not in interior:
            text += (f" Accuracy deep inside objects (at least {INTERIOR_MARGIN} px from a class boundary, mean over classes): "
                     f"U-Net {interior[0]:.3f}, sliding window {interior[1]:.3f}.")
        found.append(
            {"claim": "A sliding window has no global context: it loses to an encoder-decoder, most of all inside large objects.",
             "held": diff >= MIOU_MARGIN, "evidence": text}
        )
    sliding = a.get("sliding", {}).get("sliding_inference")
    if sliding:
        speedup = sliding["naive_ms"] / sliding["dense_ms"]
        found.append(
            {"claim": "A naive sliding window is slow; run densely (as one convolution over the image) it is the same model, fast.",
             "held": speedup >= SPEEDUP_TARGET,
             "evidence": f"At {sliding['size']} px: naive {sliding['naive_ms']:.0f} ms, dense {sliding['dense_ms']:.1f} ms, "
             f"{speedup:.0f}x faster (target {SPEEDUP_TARGET:.0f}x); outputs differ by at most {sliding['max_abs_diff']:.1e}."}
        )
    if "fullres" in a and "unet" in a:
        found.append(_fullres_claim(results))
    if "unet" in a and "fcn" in a:
        u, f = a["unet"], a["fcn"]
        found.append(
            {"claim": "Skip connections from the early high-resolution layers recover boundaries (U-Net vs FCN's coarse upsampling).",
             "held": u["boundary_f1"] > f["boundary_f1"],
             "evidence": f"Boundary F1: U-Net {u['boundary_f1']:.3f}, FCN {f['boundary_f1']:.3f}."}
        )
    return found


def _fullres_claim(results: dict) -> dict:
    a, sizes = results["approaches"], results["sizes"]
    full, unet = a["fullres"], a["unet"]
    slope = _slope(sizes, [full["latency_ms"][str(s)] for s in sizes])
    largest = str(max(sizes))
    slower = full["latency_ms"][largest] > unet["latency_ms"][largest]
    # At least about proportional: above 1 the large maps' cache misses add to the arithmetic, which is the claim too.
    grows = slope is not None and slope >= 0.7
    return {
        "claim": "A CNN without downsampling keeps a small receptive field, and its cost grows with the pixel count "
        "until it is more expensive than an encoder-decoder on large images.",
        "held": bool(grows and slower and full["receptive_field"] < unet["receptive_field"]),
        "evidence": f"Receptive field: fullres {full['receptive_field']} px vs U-Net {unet['receptive_field']} px. "
        f"fullres latency grows with pixel count with log-log slope {slope if slope is None else round(slope, 2)} "
        f"(1 = proportional); at {largest} px fullres {full['latency_ms'][largest]:.0f} ms vs U-Net "
        f"{unet['latency_ms'][largest]:.0f} ms.",
    }


def write_report(path: Path, results: dict, rows: list[dict]) -> Path:
    env = results["environment"]
    lines = [
        "# segcli compare",
        "",
        f"Data: `{results['data']}` ({results['train_images']} training / {results['val_images']} validation images, "
        f"{results['img_size']} px); budget {results['budget']}; seed {results['seed']}.",
        f"Device {env['device']}, {env['threads']} threads, torch {env['torch']}.",
        "",
        _markdown_table(rows),
        "",
        "## The course's claims on this data",
        "",
    ]
    for claim in claims(results):
        verdict = {True: "**held**", False: "**did not hold**", None: "**not measurable**"}[claim["held"]]
        lines += [f"- {claim['claim']} {verdict}. {claim['evidence']}", ""]
    lines += ["![grid](grid.png)", "", "![scaling](scaling.png)", "", "![tradeoff](tradeoff.png)", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


def readme_section(results: dict, folder: str) -> str:
    """The README's view of a run: the two narrow tables, each claim's verdict, the three plots in `folder`."""
    env = results["environment"]
    lines = [f"{results['train_images']} training / {results['val_images']} validation images of {results['img_size']} px, "
             f"{results['budget']} per approach, seed {results['seed']}; {env['device']}, {env['threads']} threads, "
             f"torch {env['torch']}.", ""]
    for title, rows in terminal_tables(results):
        lines += [f"**{title}**", "", _markdown_table(rows), ""]
    for claim in claims(results):
        verdict = {True: "held", False: "did not hold", None: "not measurable"}[claim["held"]]
        lines += [f"- *{claim['claim']}* **{verdict}**: {claim['evidence']}"]
    lines += ["", *(f"![{name}]({folder}/{name}.png)" for name in ("grid", "scaling", "tradeoff"))]
    return "\n".join(lines)


def _markdown_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |")
    return "\n".join(out)


def plot_scaling(path: Path, results: dict) -> Path:
    """Latency and memory against image size, log-log, one line per approach."""
    sizes = results["sizes"]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, r in results["approaches"].items():
        ax_time.plot(sizes, [r["latency_ms"][str(s)] for s in sizes], marker="o", label=name)
        memory = [r["peak_memory_mb"].get(str(s)) for s in sizes]
        if all(m is not None and m > 0 for m in memory):
            ax_mem.plot(sizes, memory, marker="o", label=name)
    for ax, label in ((ax_time, "latency per image (ms)"), (ax_mem, "peak extra memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{s}" for s in sizes])
        ax.set_xlabel("image side (px), batch 1")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax_time.set_title("Inference time grows with image size")
    ax_mem.set_title("Memory grows with image size")
    return _save(fig, path)


def plot_tradeoff(path: Path, results: dict) -> Path:
    """mIoU against latency at the largest measured size, where the costs differ most: up and left is better."""
    size = str(max(results["sizes"]))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results["approaches"].items():
        ax.scatter(r["latency_ms"][size], r["miou"], s=60)
        ax.annotate(name, (r["latency_ms"][size], r["miou"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1-2-5 steps: readable over any range
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"latency per image at {size} px (ms, log scale)")
    ax.set_ylabel("validation mIoU")
    ax.set_title("Accuracy against speed")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
