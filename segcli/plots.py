"""Charts as PNG files (matplotlib): training curves, confusion matrices, precision-recall curves.

Figures are made with `matplotlib.figure.Figure`, not pyplot: no global state, no display, safe in a training
run's callbacks. Every file is written atomically, so a viewer refreshing curves.png never sees half a picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from segcli import io

LOSS_COLOR, METRIC_COLOR, LR_COLOR = "#1f77b4", "#d62728", "#7f7f7f"
MAX_ANNOTATED_CLASSES = 12  # a matrix this small has each cell's value written in it
MAX_PR_PANELS = 24  # per-class precision-recall panels; the CSV holds every class
LR_HEADROOM = 1.05  # the highest learning rate sits this far below the top of its panel
MAX_CURVE_POINTS = 4000  # longer runs are drawn every n-th step (the smoothed loss is computed over all of them)


def save(fig: Figure, path: Path, dpi: int = 100, tight: bool = True) -> Path:
    """Write the figure as PNG; `tight` fits the margins to the labels (it draws the figure once more)."""
    if tight:
        fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)


# ---------------------------------------------------------------- training curves


@dataclass
class History:
    """What a training run has logged so far: step losses and validation scores, each with its wall time."""

    metric: str  # the primary validation metric (miou, ap, pq)
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_seconds: list[float] = field(default_factory=list)
    val_scores: list[float | None] = field(default_factory=list)


def smoothed(values: list[float], window: int) -> np.ndarray:
    """A trailing mean over `window` values (shorter at the start), so a noisy loss shows its trend."""
    values = np.asarray(values, np.float64)
    if window <= 1 or values.size == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, values.size + 1), window)
    return (sums[1:] - sums[np.maximum(0, np.arange(1, values.size + 1) - window)]) / counts


def training_curves(path: Path, history: History) -> Path:
    """nnU-Net's progress.png, segcli's way: training loss (raw and smoothed) and the primary validation metric
    against steps (left) and against wall time (right), the learning rate dotted (its own scale, no ticks).
    Training redraws it at every validation, so it is drawn cheaply: fixed margins, 90 dpi, two ticked axes per
    panel (tight_layout, 100 dpi and learning-rate panels of their own took three times as long)."""
    fig = Figure(figsize=(11, 4.4))
    fig.subplots_adjust(left=0.07, right=0.93, top=0.92, bottom=0.12, wspace=0.38)
    window = max(1, len(history.losses) // 50)
    stride = max(1, len(history.losses) // MAX_CURVE_POINTS)
    smooth = smoothed(history.losses, window)[::stride]
    unit, per = time_unit(max(history.seconds + history.val_seconds, default=0.0))
    for column, (x, val_x, label) in enumerate(((history.steps, history.val_steps, "step"),
                                                ([s / per for s in history.seconds],
                                                 [s / per for s in history.val_seconds], unit))):
        ax = fig.add_subplot(1, 2, column + 1)
        x = x[::stride]
        if history.losses:
            ax.plot(x, history.losses[::stride], color=LOSS_COLOR, alpha=0.25, linewidth=0.8)
            ax.plot(x, smooth, color=LOSS_COLOR, linewidth=1.6,
                    label="training loss" + (f" (mean of {window})" if window > 1 else ""))
        ax.set_ylabel("training loss", color=LOSS_COLOR)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
        if column == 0:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if history.lrs and max(history.lrs) > 0:
            # On its own scale without an axis of its own (a twin axis was a fifth of the drawing's cost): x in
            # steps or time, y as a fraction of the panel's height, 0 at the bottom and the highest rate near the top.
            heights = np.asarray(history.lrs[::stride]) / (max(history.lrs) * LR_HEADROOM)
            ax.plot(x, heights, transform=ax.get_xaxis_transform(), color=LR_COLOR, linewidth=1.0, linestyle=":",
                    label="learning rate")
        right = ax.twinx()
        scored = [(v, s) for v, s in zip(val_x, history.val_scores) if s is not None]
        if scored:
            right.plot(*zip(*scored), color=METRIC_COLOR, marker="o", markersize=4, linewidth=1.6,
                       label=f"validation {history.metric}")
            best = max(scored, key=lambda p: p[1])
            right.annotate(f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(-10, 8), fontsize=8,
                           color=METRIC_COLOR)
        right.set_ylabel(f"validation {history.metric}", color=METRIC_COLOR)
        right.set_ylim(0, 1)
        lines = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
        if lines:
            ax.legend(lines, [line.get_label() for line in lines], loc="upper center", fontsize=8, framealpha=0.8)
        ax.set_title(f"against {'steps' if column == 0 else 'wall time'}")
    return save(fig, path, dpi=90, tight=False)


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit a time axis reads best in: seconds under 2 minutes, minutes under 2 hours, else hours."""
    if seconds < 120:
        return "seconds", 1.0
    return ("minutes", 60.0) if seconds < 7200 else ("hours", 3600.0)


# ---------------------------------------------------------------- confusion matrices


def confusion_matrix(path: Path, counts: np.ndarray, row_names: list[str], column_names: list[str], title: str,
                     normalized: bool, row_totals: np.ndarray | None = None) -> Path:
    """A heat map of counts (rows: ground truth, columns: prediction) or of each row's shares (of `row_totals`
    when only part of each row is shown); class names on the axes, values in the cells when the matrix is
    small. Rows with nothing in them stay blank."""
    counts = np.asarray(counts, np.float64)
    totals = counts.sum(1, keepdims=True) if row_totals is None else np.asarray(row_totals, np.float64).reshape(-1, 1)
    shown = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0) if normalized else counts
    side = max(4.5, 0.32 * max(counts.shape) + 2.5)
    # Margins from the longest names (about 0.06 inch a character at 8 pt) rather than tight_layout, which draws
    # the figure an extra time: half of a report's plotting time.
    left, bottom = (0.75 + 0.06 * max(map(len, names), default=1) for names in (row_names, column_names))
    width, height = side + 0.95 + left, side + bottom
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - 0.95 / width, bottom=bottom / height, top=1 - 0.45 / height)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="white")
    if normalized:
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                          aspect="auto")
    else:  # counts spanning decades are coloured by their logarithm; empty cells are white
        norm = LogNorm(vmin=1, vmax=shown.max()) if shown.max() >= 100 else None
        image = ax.imshow(np.ma.masked_less_equal(shown, 0), cmap=cmap, interpolation="nearest", aspect="auto",
                          norm=norm, vmin=None if norm else 0, vmax=None if norm else max(1.0, shown.max()))
    colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    colorbar.set_label("share of the ground-truth row" if normalized else
                       "count (log scale)" if shown.max() >= 100 else "count")
    if not normalized:
        colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_count(v)))
    # the colour's strength on its scale, 0..1: dark cells get white text
    strength = shown if normalized else np.log10(1 + shown) / np.log10(1 + shown.max()) if shown.max() >= 100 \
        else shown / max(1.0, shown.max())
    ax.set_xticks(range(len(column_names)), column_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_names)), row_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if max(counts.shape) <= MAX_ANNOTATED_CLASSES:
        _annotate(ax, shown, strength, normalized)
    return save(fig, path, tight=False)


def _annotate(ax, shown: np.ndarray, strength: np.ndarray, normalized: bool) -> None:
    for (row, column), value in np.ndenumerate(shown):
        if np.isnan(value) or (not normalized and value == 0):
            continue
        text = f"{value:.2f}" if normalized else _short_count(value)
        ax.text(column, row, text, ha="center", va="center", fontsize=7,
                color="white" if strength[row, column] > 0.5 else "black")


def _short_count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


# ---------------------------------------------------------------- precision-recall


def precision_recall(path: Path, recall: np.ndarray, curves: dict[str, dict[str, np.ndarray]], title: str) -> Path:
    """One panel per class (at most MAX_PR_PANELS, in the order given) plus the mean over classes first; each
    panel holds the curves it is given by label (e.g. IoU 0.50, IoU 0.75). NaN precision is left out."""
    names = list(curves)[: MAX_PR_PANELS + 1]
    columns = min(5, len(names))
    rows = -(-len(names) // columns)
    fig = Figure(figsize=(2.6 * columns + 0.4, 2.4 * rows + 0.6))
    for number, name in enumerate(names):
        ax = fig.add_subplot(rows, columns, number + 1)
        for label, precision in curves[name].items():
            ax.plot(recall, precision, linewidth=1.4, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if number % columns == 0:
            ax.set_ylabel("precision", fontsize=8)
        if number >= len(names) - columns:
            ax.set_xlabel("recall", fontsize=8)
        if number == 0:
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=11)
    return save(fig, path)
