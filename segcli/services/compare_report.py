"""What `segcli compare` writes: results.json/csv, report.md with a verdict per claim, and the plots, all read from
the run's records (`segcli.services.compare_results`).

Verdicts are computed from the measured numbers, and each one weighs a margin against its noise:
- "held": the favoured approach's worst seed beats the other's best seed, and the paired bootstrap
  interval over validation images (INTERVAL, seed means) of the margin lies above zero;
- "did not hold": the same the other way round;
- "not decided": neither (the margin is within the spread at this budget); the numbers are given;
- "not judged": the run cannot support a verdict (`--quick`, too few validation images or interior
  pixels, a model that collapsed to one class, an approach trained with one seed, timings at sizes the
  claim is not about); the reason is given.
Timing claims have no seeds (the weights do not change the cost): their margins must exceed
TIMING_TOLERANCE, the run-to-run noise of one latency on a shared CPU.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

from segcli import io  # noqa: E402
from segcli.services.compare_results import Approach, CompareResults, ImageCounts, Run, SlidingInference  # noqa: E402

HELD, NOT_HELD, UNDECIDED, NOT_JUDGED = "held", "did not hold", "not decided", "not judged"
SPEEDUP_TARGET = 100.0  # dense vs naive sliding window
INTERIOR_MARGIN = 16  # px from any class boundary: half the sliding window, so the window sees one class only
TIMING_TOLERANCE = 1.25  # a latency ratio must clear its threshold by this factor (timing noise, shared CPU)
MIN_INTERIOR_PIXELS = 500  # per class over the validation split, for the "inside large objects" claim
MIN_INTERIOR_CLASSES = 2  # inside accuracy over one class is not a comparison of context
MIN_VAL_IMAGES = 3
MIN_SEEDS = 2  # per trained approach: one seed has no spread to weigh a margin against
COLLAPSE_SHARE = 0.99  # a model predicting one class on this share of pixels (while the truth has several) collapsed
MIN_NAIVE_SIZE = 128  # below it the image is barely larger than the 32 px window: fixed costs hide the windows'
MIN_LARGE_SIZE = 512  # "large images" for the full-resolution cost claim
QUICK_REASON = "--quick is a smoke test (tiny images, a few steps): its numbers are noise"
BOOTSTRAP_SAMPLES = 1000
INTERVAL = 0.90
SEED_METRICS = ("miou", "pixel_accuracy", "class_accuracy", "interior_accuracy", "boundary_f1")
METRIC_NAMES = {"miou": "mIoU", "class_accuracy": "class-balanced accuracy", "interior_accuracy": "inside accuracy",
                "interior_gain": "inside minus overall accuracy", "boundary_f1": "boundary F1"}

# ---------------------------------------------------------------- numbers from per-image counts


def _arrays(images: ImageCounts) -> dict:
    return {"confusion": np.asarray(images.confusion, np.float64),
            "hits": np.asarray(images.interior_hits, np.float64),
            "totals": np.asarray(images.interior_totals, np.float64),
            "boundary": {k: np.array([np.nan if v is None else v for v in vals], np.float64)
                         for k, vals in images.boundary_f1.items()}}


def _class_mean(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Mean over the last axis of numerator / denominator where the denominator is positive (NaN if nowhere)."""
    present = denominator > 0
    ratio = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=present)
    count = present.sum(-1)
    return np.where(count > 0, ratio.sum(-1) / np.maximum(count, 1), np.nan)


def _metric(name: str, a: dict, weights: np.ndarray) -> np.ndarray:
    """One metric for each row of image weights (R, I): 1 everywhere is the run's value, multinomial rows resample."""
    if name.startswith("boundary_f1"):
        key = name.partition("@")[2].removesuffix("px") or "default"
        values = a["boundary"][key]
        known = ~np.isnan(values)
        return (weights[:, known] @ values[known]) / np.maximum(weights[:, known].sum(1), 1e-12)
    if name == "interior_gain":
        return _metric("interior_accuracy", a, weights) - _metric("class_accuracy", a, weights)
    if name == "interior_accuracy":
        return _class_mean(weights @ a["hits"], weights @ a["totals"])
    m = np.einsum("ri,icd->rcd", weights, a["confusion"])  # (R, C, C+1)
    classes = m.shape[1]
    tp = np.diagonal(m[:, :, :classes], axis1=1, axis2=2)
    gt, pred = m.sum(2), m[:, :, :classes].sum(1)
    if name == "miou":
        return _class_mean(tp, gt + pred - tp)
    if name == "class_accuracy":
        return _class_mean(tp, gt)
    if name == "pixel_accuracy":
        return tp.sum(1) / np.maximum(m.sum((1, 2)), 1)
    raise KeyError(name)


def image_metrics(images: ImageCounts) -> dict:
    """A run's dataset-level numbers from its per-image counts (eval's definitions): `Run`'s metric fields."""
    a = _arrays(images)
    ones = np.ones((1, a["confusion"].shape[0]))
    out = {name: _nan_to_none(_metric(name, a, ones)[0]) for name in SEED_METRICS}
    tolerances = [k for k in a["boundary"] if k != "default"]
    out["boundary_f1_px"] = {k: _nan_to_none(_metric(f"boundary_f1@{k}px", a, ones)[0]) for k in tolerances}
    return out


def majority(images: ImageCounts, names: list[str]) -> dict:
    """The most predicted class and its share; `collapsed` when it is nearly all a model predicts but not all
    the truth."""
    m = np.asarray(images.confusion, np.float64).sum(0)
    classes = m.shape[0]
    predicted, truth = m[:, :classes].sum(0), m.sum(1)
    share = predicted / max(predicted.sum(), 1)
    k = int(share.argmax())
    varied_truth = int((truth / max(truth.sum(), 1) >= 1 - COLLAPSE_SHARE).sum()) >= 2
    return {"majority_class": names[k], "majority_share": float(share[k]),
            "collapsed": bool(share[k] >= COLLAPSE_SHARE and varied_truth)}


def _nan_to_none(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or np.isnan(value):
        return None
    return float(value)


def seed_summary(runs: list[Run]) -> dict:
    """An approach's numbers over its seeds (`Approach`'s fields): the mean (the table's number) and the min-max
    spread."""
    out: dict = {"spread": {}}
    keys = list(SEED_METRICS) + [f"boundary_f1@{k}px" for k in runs[0].boundary_f1_px]
    for key in keys:
        values = [run.value(key) for run in runs]
        values = [v for v in values if v is not None]
        mean = float(np.mean(values)) if values else None
        if key.startswith("boundary_f1@"):
            out.setdefault("boundary_f1_px", {})[key.partition("@")[2].removesuffix("px")] = mean
        else:
            out[key] = mean
        out["spread"][key] = [min(values), max(values)] if values else None
    out["per_class"] = runs[0].per_class  # the first seed's
    out["train_seconds"] = float(np.mean([run.train_seconds for run in runs]))
    out["collapsed"] = any(run.collapsed for run in runs)
    return out


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Judgement:
    """`better` against `worse` on one metric: the verdict, the mean margin, its bootstrap interval over images."""

    verdict: str  # HELD, NOT_HELD or UNDECIDED
    margin: float  # mean over seeds of better minus mean of worse
    interval: list[float]  # INTERVAL bootstrap interval of the margin over validation images
    better: list[float]  # the metric of each seed of `better`
    worse: list[float]
    text: str  # the numbers in one sentence


@dataclass(frozen=True)
class Claim:
    """One of the course's claims (or a ranking) judged on a run: what the report, the CLI and the README show."""

    claim: str
    verdict: str  # HELD, NOT_HELD, UNDECIDED or NOT_JUDGED
    evidence: str
    reason: str | None = None  # why NOT_JUDGED


def judge(results: CompareResults, better: str, worse: str, metric: str) -> Judgement:
    """Is `better` above `worse` on `metric`, beyond the spread over seeds and over validation images?"""
    runs_a, runs_b = results.approaches[better].runs, results.approaches[worse].runs
    arrays_a, arrays_b = [_arrays(r.images) for r in runs_a], [_arrays(r.images) for r in runs_b]
    n = arrays_a[0]["confusion"].shape[0]
    ones = np.ones((1, n))
    values_a = np.array([_metric(metric, a, ones)[0] for a in arrays_a])
    values_b = np.array([_metric(metric, b, ones)[0] for b in arrays_b])
    weights = np.random.default_rng(0).multinomial(n, np.full(n, 1 / n), size=BOOTSTRAP_SAMPLES).astype(np.float64)
    diff = (np.mean([_metric(metric, a, weights) for a in arrays_a], 0)
            - np.mean([_metric(metric, b, weights) for b in arrays_b], 0))
    tail = 100 * (1 - INTERVAL) / 2
    low, high = (float(v) for v in np.nanpercentile(diff, [tail, 100 - tail]))
    margin = float(np.mean(values_a) - np.mean(values_b))
    if values_a.min() > values_b.max() and low > 0:
        verdict = HELD
    elif values_a.max() < values_b.min() and high < 0:
        verdict = NOT_HELD
    else:
        verdict = UNDECIDED
    text = (f"{METRIC_NAMES.get(metric, metric)} {better} {_mean_range(values_a)} vs {worse} {_mean_range(values_b)}: "
            f"margin {margin:+.3f}, {INTERVAL:.0%} interval over {n} images [{low:+.3f}, {high:+.3f}]")
    if len(values_a) == 1 and len(values_b) == 1:
        text += " (one seed: the spread between seeds is not measured)"
    return Judgement(verdict, margin, [low, high], values_a.tolist(), values_b.tolist(), text)


def _mean_range(values: np.ndarray) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f} over {len(values)} seeds)"


def _combine(verdicts: list[str]) -> str:
    """A claim of several parts holds when every part holds, fails when any part fails."""
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if all(v == HELD for v in verdicts) else UNDECIDED


def not_judged(results: CompareResults, labels: list[str]) -> str | None:
    """Why this run cannot judge a claim about these approaches' accuracy, or None."""
    if results.quick:
        return QUICK_REASON
    if results.val_images < MIN_VAL_IMAGES:
        return f"only {results.val_images} validation images (at least {MIN_VAL_IMAGES} needed)"
    for label in labels:
        for run in results.approaches[label].runs:
            if run.collapsed:
                seed = "" if run.seed is None else f" (seed {run.seed})"
                return (f"{label}{seed} predicts {run.majority_class} on {run.majority_share:.1%} of the validation "
                        f"pixels: it collapsed to one class; give it a larger budget")
    for label in labels:
        runs = results.approaches[label].runs
        # A model given by --weights (seed None) is one model, not a sample of a training's outcomes.
        if len(runs) < MIN_SEEDS and runs[0].seed is not None:
            return (f"{label} was trained with {len(runs)} seed: the spread between seeds is not measured, and one "
                    f"seed's luck can pass for a margin; give --seeds {MIN_SEEDS} or more")
    return None


def _by_model(results: CompareResults) -> dict[str, str]:
    """The first approach label of each zoo model: the course's claims are about architectures."""
    found: dict[str, str] = {}
    for label, entry in results.approaches.items():
        found.setdefault(entry.model or label, label)
    return found


def claims(results: CompareResults) -> list[Claim]:
    """Each course claim the run's approaches allow: `verdict` (HELD, NOT_HELD, UNDECIDED, NOT_JUDGED), `evidence`."""
    m = _by_model(results)
    found = []
    if "sliding" in m and "unet" in m:
        found.append(_context_claim(results, m["unet"], m["sliding"]))
    sliding = results.approaches[m["sliding"]].sliding_inference if "sliding" in m else None
    if sliding:
        found.append(_speed_claim(results, sliding))
    if "fullres" in m and "unet" in m:
        found.append(_fullres_claim(results, m["fullres"], m["unet"]))
    if "unet" in m and "fcn" in m:
        found.append(_boundary_claim(results, m["unet"], m["fcn"]))
    return found


def _shown(verdict: str, reason: str | None) -> str:
    """A part's verdict in the evidence, unless the claim is not judged (then no part may say held or did not hold)."""
    return "" if reason else f" ({verdict})"


def _claim(text: str, verdict: str, evidence: str, reason: str | None = None) -> Claim:
    if reason:
        return Claim(text, NOT_JUDGED, evidence, reason)
    return Claim(text, verdict, evidence)


def _context_claim(results: CompareResults, unet: str, sliding: str) -> Claim:
    parts = [judge(results, unet, sliding, metric) for metric in ("miou", "interior_accuracy", "interior_gain")]
    counts = dict(zip(results.classes, results.interior_pixels))
    enough = [name for name, count in counts.items() if count >= MIN_INTERIOR_PIXELS]
    reason = not_judged(results, [unet, sliding])
    if reason is None and len(enough) < MIN_INTERIOR_CLASSES:
        reason = (f"the validation images have too few pixels at least {INTERIOR_MARGIN} px from a class boundary "
                  f"({', '.join(f'{k} {v}' for k, v in counts.items())}; {MIN_INTERIOR_PIXELS} per class in at least "
                  f"{MIN_INTERIOR_CLASSES} classes needed): the claim is about the inside of large objects")
    shown = [_shown(p.verdict, reason) for p in parts]
    evidence = (f"Overall: {parts[0].text}{shown[0]}. Inside objects (at least {INTERIOR_MARGIN} px "
                f"from a class boundary, class-balanced): {parts[1].text}{shown[1]}. Most of all inside "
                f"(the lead inside minus the lead in class-balanced accuracy over all pixels): {parts[2].text}"
                f"{shown[2]}.")
    return _claim("A sliding window has no global context: it loses to an encoder-decoder, "
                  "most of all inside large objects.",
                  _combine([p.verdict for p in parts]), evidence, reason)


def _timing_verdict(ratio: float, threshold: float) -> str:
    if ratio >= threshold * TIMING_TOLERANCE:
        return HELD
    return NOT_HELD if ratio <= threshold / TIMING_TOLERANCE else UNDECIDED


def _speed_claim(results: CompareResults, sliding: SlidingInference) -> Claim:
    speedup = sliding.naive_ms / sliding.dense_ms
    same = sliding.max_abs_diff <= 1e-4
    verdict = _timing_verdict(speedup, SPEEDUP_TARGET) if same else NOT_HELD
    reason = QUICK_REASON if results.quick else None
    if reason is None and sliding.size < MIN_NAIVE_SIZE:
        reason = (f"timed at {sliding.size} px, barely larger than the 32 px window, where fixed per-call costs hide "
                  f"the cost of the windows; the claim is about images of {MIN_NAIVE_SIZE} px or more")
    return _claim(
        "A naive sliding window is slow; run densely (as one convolution over the image) it is the same model, fast.",
        verdict,
        f"At {sliding.size} px: naive {sliding.naive_ms:.0f} ms, dense {sliding.dense_ms:.1f} ms, "
        f"{speedup:.0f}x faster (target {SPEEDUP_TARGET:.0f}x, decided beyond a factor {TIMING_TOLERANCE} of timing "
        f"noise); outputs differ by at most {sliding.max_abs_diff:.1e} "
        f"({'the same model' if same else 'NOT the same model'}).",
        reason)


def _slope(sizes: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(pixel count)."""
    points = [(math.log(s * s), math.log(v)) for s, v in zip(sizes, values) if v and v > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def _fullres_claim(results: CompareResults, fullres: str, unet: str) -> Claim:
    a, sizes = results.approaches, results.sizes
    full, enc = a[fullres], a[unet]
    slope = _slope(sizes, [full.latency_ms[str(s)] for s in sizes])
    largest = str(max(sizes))
    ratio = full.latency_ms[largest] / enc.latency_ms[largest]
    parts = [
        HELD if full.receptive_field < enc.receptive_field else NOT_HELD,
        # About proportional to the pixel count (1 = proportional): held from 0.7 (room for fixed costs),
        # failed below 0.45.
        UNDECIDED if slope is None else _timing_verdict(slope, 0.7 / TIMING_TOLERANCE),
        _timing_verdict(ratio, 1.0),
    ]
    reason = QUICK_REASON if results.quick else None
    if reason is None and (max(sizes) < MIN_LARGE_SIZE or max(sizes) < 4 * min(sizes)):
        reason = (f"latency measured at {', '.join(map(str, sizes))} px: the claim is about growth up to large images "
                  f"(at least {MIN_LARGE_SIZE} px and 16x the smallest size's pixels)")
    return _claim(
        "A CNN without downsampling keeps a small receptive field, and its cost grows with the pixel count "
        "until it is more expensive than an encoder-decoder on large images.",
        _combine(parts),
        f"Receptive field: {fullres} {full.receptive_field} px vs {unet} {enc.receptive_field} px"
        f"{_shown(parts[0], reason)}. {fullres} latency grows with pixel count with log-log slope "
        f"{'-' if slope is None else f'{slope:.2f}'} (1 = proportional; at least 0.7 needed)"
        f"{_shown(parts[1], reason)}; "
        f"at {largest} px {fullres} {full.latency_ms[largest]:.0f} ms vs {unet} {enc.latency_ms[largest]:.0f} ms, "
        f"{ratio:.2f}x{_shown(parts[2], reason)}, decided beyond a factor {TIMING_TOLERANCE} of timing noise.",
        reason)


def _boundary_claim(results: CompareResults, unet: str, fcn: str) -> Claim:
    main = judge(results, unet, fcn, "boundary_f1")
    reason = not_judged(results, [unet, fcn])
    others = [f"{k} px: {_fmt_pair(results, unet, fcn, f'boundary_f1@{k}px', reason)}"
              for k in results.boundary_tolerances_px]
    evidence = f"{main.text} (eval's tolerance, 2% of the image diagonal)."
    if others:
        evidence += " At fixed tolerances: " + "; ".join(others) + "."
    return _claim("Skip connections from the early high-resolution layers recover boundaries "
                  "(U-Net vs FCN's coarse upsampling).",
                  main.verdict, evidence, reason)


def _fmt_pair(results: CompareResults, a: str, b: str, metric: str, reason: str | None) -> str:
    verdict = judge(results, a, b, metric)
    return (f"{a} {_mean_range(np.array(verdict.better))} vs {b} {_mean_range(np.array(verdict.worse))}"
            f"{_shown(verdict.verdict, reason)}")


def ranking(results: CompareResults) -> list[Claim]:
    """The approach with the best mean mIoU against each other one: is it better beyond the spread?"""
    labels = sorted(results.approaches, key=lambda k: -(results.approaches[k].miou or 0))
    found = []
    for other in labels[1:]:
        verdict = judge(results, labels[0], other, "miou")
        reason = not_judged(results, [labels[0], other])
        found.append(_claim(f"{labels[0]} is more accurate than {other} (mIoU).", verdict.verdict, verdict.text + ".",
                            reason))
    return found


def seed_stability(results: CompareResults) -> str | None:
    """Each verdict again with each seed left out, as a markdown table: does a verdict rest on one seed?"""
    rows = seed_stability_rows(results)
    return None if rows is None else _markdown_table(rows)


def seed_stability_rows(results: CompareResults) -> list[dict] | None:
    """The rows of seed_stability: each claim, its verdict with every seed and with each seed left out."""
    seeds = results.seeds
    if len(seeds) <= MIN_SEEDS or results.quick:  # leaving one out would leave too few to judge
        return None
    judged = [claims(results) + ranking(results)] + [claims(results.without_seed(s)) + ranking(results.without_seed(s))
                                                      for s in seeds]
    rows = []
    for i, item in enumerate(judged[0]):
        row = {"claim": item.claim.split(":")[0].split(",")[0].split(";")[0].removesuffix("."),
               f"all {len(seeds)} seeds": item.verdict}
        row.update({f"without seed {s}": found[i].verdict for s, found in zip(seeds, judged[1:])})
        rows.append(row)
    return rows


# ---------------------------------------------------------------- tables and files


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with io.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def summary_rows(results: CompareResults) -> list[dict]:
    """One flat row per approach (means over seeds, with min and max): the CSV and report.md."""
    rows = []
    for name, r in results.approaches.items():
        row = {"approach": name, "model": r.model or name, "seeds": len(r.runs),
               "params_m": round(r.params / 1e6, 3), "gflops": round(r.gflops, 3),
               "receptive_field_px": r.receptive_field}
        for key in ("miou", "interior_accuracy", "boundary_f1"):
            row[key] = _round(r.value(key))
            spread = r.spread.get(key) or [None, None]
            row[f"{key}_min"], row[f"{key}_max"] = _round(spread[0]), _round(spread[1])
        for tolerance, value in r.boundary_f1_px.items():
            row[f"boundary_f1@{tolerance}px"] = _round(value)
        row["train_seconds"] = round(r.train_seconds, 1)
        for size, ms in r.latency_ms.items():
            row[f"latency_ms@{size}"] = round(ms, 2)
        for size, mb in r.peak_memory_mb.items():
            row[f"memory_mb@{size}"] = _round(mb, 1)
        rows.append(row)
    return rows


def _with_spread(r: Approach, key: str) -> str | None:
    value, spread = r.value(key), r.spread.get(key)
    if value is None:
        return None
    if len(r.runs) == 1 or spread is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({spread[0]:.3f}-{spread[1]:.3f})"


def terminal_tables(results: CompareResults) -> list[tuple[str, list[dict]]]:
    """The summary split in two narrow tables (quality, cost) so that both fit a terminal."""
    quality, cost = [], []
    for name, r in results.approaches.items():
        quality.append({"approach": name, "mIoU": _with_spread(r, "miou"),
                        "inside acc": _with_spread(r, "interior_accuracy"),
                        "boundary F1": _with_spread(r, "boundary_f1"), "RF px": r.receptive_field,
                        "params M": round(r.params / 1e6, 2), "train s/seed": round(r.train_seconds, 1)})
        row = {"approach": name, "GFLOPs": round(r.gflops, 2)}
        row.update({f"ms@{size}": round(ms, 1) for size, ms in r.latency_ms.items()})
        largest = max(r.peak_memory_mb, key=int, default=None)
        if largest is not None:
            row[f"MB@{largest}"] = _round(r.peak_memory_mb[largest], 1)
        cost.append(row)
    seeds = len(results.seeds or [results.seed])
    title = "quality: mean (min-max) over seeds" if seeds > 1 else "quality (one seed)"
    return [(title, quality), (f"cost per image, batch 1, {results.environment.device}", cost)]


def tolerance_label(key: str) -> str:
    """'default' -> '2% diagonal', '1' -> '1 px', 'objects-2' -> 'objects, 2 px' (thing vs stuff outlines)."""
    tolerance = key.removeprefix("objects-")
    text = "2% diagonal" if tolerance == "default" else f"{tolerance} px"
    return f"objects, {text}" if key.startswith("objects-") else text


def boundary_table(results: CompareResults) -> list[dict]:
    """Boundary F1 of each approach at each tolerance: the numbers the boundary study rests on."""
    rows = []
    for name, r in results.approaches.items():
        row = {"approach": name, "2% diagonal": _with_spread(r, "boundary_f1")}
        for key in r.boundary_f1_px:
            row[tolerance_label(key)] = _with_spread(r, f"boundary_f1@{key}px")
        rows.append(row)
    return rows


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _header(results: CompareResults) -> str:
    env, seeds = results.environment, results.seeds or [results.seed]
    wall = f"; wall time {results.wall_seconds / 60:.1f} min" if results.wall_seconds else ""
    runs = [run for r in results.approaches.values() for run in r.runs]
    reused = [run for run in runs if run.reused]
    if wall and reused:
        wall += (f" ({len(reused)} of {len(runs)} trainings reused from OUT/runs, which took "
                 f"{sum(run.train_seconds for run in reused) / 60:.1f} min of training)")
    return (f"`{results.data}`: {results.train_images} training / {results.val_images} validation images, "
            f"training crops of {results.img_size} px, {results.budget} per approach and seed, "
            f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}); {env.device}, "
            f"{env.threads} threads, torch {env.torch}{wall}.")


RULE = (f"A claim **held** when the favoured approach's worst seed beats the other's best seed *and* the paired "
        f"bootstrap {INTERVAL:.0%} interval over validation images of the mean margin lies above zero; "
        f"**did not hold** the other way round; **not decided** otherwise; **not judged** when the run cannot "
        f"support a verdict.")


def _verdict_lines(items: list[Claim], markdown: bool) -> list[str]:
    lines = []
    for item in items:
        why = f" ({item.reason})" if item.reason else ""
        lines.append(f"- *{item.claim}* **{item.verdict}**{why}: {item.evidence}" if markdown
                     else f"{item.verdict}{why}: {item.claim}\n  {item.evidence}")
    return lines


def write_report(path: Path, results: CompareResults, rows: list[dict]) -> Path:
    lines = ["# segcli compare", "", f"`{results.command or 'segcli compare'}`", "", _header(results), "",
             _markdown_table(rows), "",
             "## The course's claims on this data", "", RULE, "", *_verdict_lines(claims(results), True), "",
             "## Which approach is most accurate here", "", *_verdict_lines(ranking(results), True), "",
             *_stability_lines(results),
             "## Boundary F1 at several tolerances", "", _markdown_table(boundary_table(results)), "",
             "![grid](grid.png)", "", "![scaling](scaling.png)", "", "![tradeoff](tradeoff.png)", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


VERDICT_KINDS = {HELD: "good", NOT_HELD: "bad", UNDECIDED: "open", NOT_JUDGED: ""}
PLOTS = (("grid.png", "validation images: input, ground truth, then each approach's prediction"),
         ("scaling.png", "inference time and memory against image size"),
         ("tradeoff.png", "accuracy against speed at the largest size"))


def write_html_report(path: Path, results: CompareResults) -> Path:
    """report.md's content as one page that opens offline (html_page): the tables, each verdict with its evidence,
    the seed check, boundary F1 at every tolerance, and the three plots beside it."""
    from segcli.html_page import Page, figure, heading, items, paragraph, table

    page = Page(title="segcli compare", subtitle=_header(results).replace("`", ""))
    page.cards = [(f"{name} mIoU", "–" if r.miou is None else f"{r.miou:.3f}")
                  for name, r in results.approaches.items()]
    blocks = page.section("results", "Results")
    blocks.append(paragraph(f"Command: {results.command or 'segcli compare'}", note=True))
    for title, rows in terminal_tables(results):
        blocks += [heading(title), table(rows, text_columns=("approach",))]
    rule = RULE.replace("**", "").replace("*", "")
    for anchor, title, found in (("claims", "The course's claims on this data", claims(results)),
                                 ("ranking", "Which approach is most accurate here", ranking(results))):
        blocks = page.section(anchor, title)
        if anchor == "claims":
            blocks.append(paragraph(rule, note=True))
        blocks.append(items([_verdict_item(item) for item in found]))
    stability = seed_stability_rows(results)
    if stability is not None:
        page.section("seeds", "Do the verdicts rest on one seed?").append(
            table(stability, text_columns=tuple(stability[0])))
    page.section("boundary", "Boundary F1 at several tolerances").append(
        table(boundary_table(results), text_columns=("approach",)))
    pictures = page.section("plots", "Pictures")
    for name, caption in PLOTS:
        if (Path(path).parent / name).is_file():
            pictures.append(figure(name, caption))
    return page.write(path, footer="The numbers are in results.json and results.csv beside this page; report.md "
                                   "holds the same as Markdown.")


def _verdict_item(item: Claim) -> str:
    """A claim as one HTML list item: its verdict as a badge, the claim, why it was not judged, the evidence."""
    from segcli.html_page import badge

    why = f" ({_escaped(item.reason)})" if item.reason else ""
    return (f"{badge(item.verdict, VERDICT_KINDS.get(item.verdict, ''))} <em>{_escaped(item.claim)}</em>{why}"
            f"<br>{_escaped(item.evidence)}")


def _escaped(text: str) -> str:
    import html

    return html.escape(text.replace("**", "").replace("`", ""))


def _stability_lines(results: CompareResults, heading: str = "## {}") -> list[str]:
    table = seed_stability(results)
    if table is None:
        return []
    return [heading.format("Do the verdicts rest on one seed?"), "",
            "Each verdict judged again with one seed left out:", "", table, ""]


def readme_section(results: CompareResults, folder: str) -> str:
    """The docs' view of a run (docs/comparing.md): the two narrow tables, each claim's verdict, the three plots
    in `folder`."""
    lines = [_header(results), ""]
    for title, rows in terminal_tables(results):
        lines += [f"**{title}**", "", _markdown_table(rows), ""]
    lines += [RULE, "", *_verdict_lines(claims(results), True), ""]
    lines += _stability_lines(results, heading="**{}**")
    lines += ["", *(f"![{name}]({folder}/{name}.png)" for name in ("grid", "scaling", "tradeoff"))]
    return "\n".join(lines)


def _markdown_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |")
    return "\n".join(out)


def plot_scaling(path: Path, results: CompareResults) -> Path:
    """Latency and memory against image size, log-log, one line per approach."""
    sizes = results.sizes
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, r in results.approaches.items():
        ax_time.plot(sizes, [r.latency_ms[str(s)] for s in sizes], marker="o", label=name)
        memory = [r.peak_memory_mb.get(str(s)) for s in sizes]
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


def plot_tradeoff(path: Path, results: CompareResults) -> Path:
    """mIoU against latency at the largest measured size, where the costs differ most: up and left is better."""
    size = str(max(results.sizes))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results.approaches.items():
        low, high = r.spread["miou"]
        ax.errorbar(r.latency_ms[size], r.miou, yerr=[[r.miou - low], [high - r.miou]], fmt="o", ms=7, capsize=4)
        ax.annotate(name, (r.latency_ms[size], r.miou), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1-2-5 steps: readable over any range
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"latency per image at {size} px (ms, log scale)")
    ax.set_ylabel("validation mIoU (mean, bars: min-max over seeds)")
    ax.set_title("Accuracy against speed")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
