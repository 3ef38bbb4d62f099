"""`segcli tune`: choose a checkpoint's post-processing thresholds on a validation split and write them into its card.

As StarDist's `optimize_thresholds` and nnU-Net's post-processing search: the network runs once over the split (a
dense model's raw outputs are kept; a detector runs again for each setting), then each setting is post-processed
and scored by the mode's primary metric (`PRIMARY_METRIC`: PQ, mask AP, mIoU).

The search goes one threshold at a time, in the order of the grid (coordinate search): each value is scored with the
others at their best so far, and kept when it beats the best by more than `TIE` (0.002); a tie keeps the setting
scored first, the card's own values first of all. For the card's own mode the chosen values become the card's
`postprocess`, which predict and eval start from; for another mode (instance thresholds of a panoptic model, chosen
by AP) they go to `postprocess_by_mode[MODE]`, which predict and eval use in that mode. `postprocess_search[MODE]`
records every setting scored. A bundled model's card is part of the installation: its tuned copy goes to `out`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segcli import io
from segcli.checkpoint import checkpoint_paths, read_card
from segcli.errors import ModelError, UsageError
from segcli.structures import Mode, parse_mode

TIE = 0.002  # a setting must beat the best by more than this to replace it
# The values searched when no grid is given, for each threshold a model's post-processing takes, in search order:
# what seeds or proposes an object first, then what suppresses duplicates, then the smallest object kept.
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "interior_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),  # contour models
    "distance_threshold": (0.2, 0.3, 0.4, 0.5, 0.6),  # unet_distance
    "prob_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),  # star-convex (StarDist) models
    "center_threshold": (0.05, 0.1, 0.2, 0.3),  # Panoptic-DeepLab heads
    "score_threshold": (0.05, 0.1, 0.3, 0.5),  # Mask R-CNN
    "nms_threshold": (0.2, 0.3, 0.4, 0.5),
    "nms_kernel": (3, 5, 7, 9, 11),
    "min_area": (5, 10, 20, 40),  # px
}

Callback = Callable[..., None]


@dataclass
class TuneResult:
    card: Path  # the card written
    mode: str
    metric: str  # the mode's primary metric, which chose
    split: str
    start: dict  # the thresholds before
    chosen: dict  # the thresholds after
    best: float  # the chosen setting's score
    tried: list[dict] = field(default_factory=list)  # every setting scored: its thresholds and `metric`


def search_thresholds(score: Callable[[dict], float], start: dict, grid: dict[str, list], metric: str,
                      notify: Callback | None = None) -> tuple[dict, float, list[dict]]:
    """Coordinate search from `start` over `grid` (see the module docstring): (chosen, its score, every setting
    scored with its score under `metric`). `score` maps a full setting to the metric; `notify("setting", values=...,
    score=...)` hears of each setting of the grid, with score None for one scored already."""
    chosen, best = dict(start), score(start)
    tried = [{**chosen, metric: round(best, 4)}]
    if notify:
        notify("setting", values=chosen, score=best)
    for name, values in grid.items():
        for value in values:
            candidate = {**chosen, name: value}
            if any(all(t[k] == v for k, v in candidate.items()) for t in tried):  # scored already (the start, say)
                if notify:
                    notify("setting", values=candidate, score=None)
                continue
            result = score(candidate)
            tried.append({**candidate, metric: round(result, 4)})
            if notify:
                notify("setting", values=candidate, score=result)
            if result > best + TIE:
                best, chosen = result, candidate
    return chosen, best, tried


def record_choice(card: dict, mode: str, chosen: dict, search: dict) -> dict:
    """The card with `chosen` as the thresholds of `mode` (its `postprocess`, or `postprocess_by_mode[mode]` for a
    mode other than the card's) and `search` under `postprocess_search[mode]`."""
    card = dict(card)
    by_mode = dict(card.get("postprocess_by_mode") or {})
    if mode == card.get("mode"):
        card["postprocess"] = dict(chosen)
        by_mode.pop(mode, None)
    else:
        by_mode[mode] = dict(chosen)
    card["postprocess_by_mode"] = by_mode
    if not by_mode:
        del card["postprocess_by_mode"]
    searches = card.get("postprocess_search") or {}
    if "metric" in searches:  # one search, recorded before searches were kept by mode
        searches = {card.get("mode"): searches}
    card["postprocess_search"] = {**searches, mode: search}
    return card


@dataclass
class TuneConfig:
    """`segcli tune`'s options: which checkpoint, which data, where the tuned card goes."""

    data: Path  # a dataset with the model's classes: its `split` is scored
    weights: Path | None = None  # the checkpoint to tune: its card is rewritten (or a copy written at `out`)
    model: str | None = None  # or a bundled model to tune: its tuned copy goes to `out`
    mode: str | None = None  # the mode to tune for, by its primary metric (None: the card's)
    grid: dict[str, list[float]] | None = None  # threshold -> values, searched in this order (None: DEFAULT_GRIDS)
    split: str = "val"  # the split to choose on (keep test for the final score)
    out: Path | None = None  # write the tuned checkpoint here (weights copied) instead of rewriting the card
    data_format: str = "auto"  # the dataset's format
    device: str = "auto"


def tune(config: TuneConfig, *, callback: Callback | None = None) -> TuneResult:
    """Search the post-processing thresholds of a checkpoint (`weights`, or a bundled `model`) on a split of `data`
    and write the choice into its card, or into a copy at `out` (which a bundled model needs)."""
    from segcli.data.load import load_for_model
    from segcli.device import resolve_device
    from segcli.metrics import PRIMARY_METRIC
    from segcli.services.resolve import resolve_model

    notify = callback if callback is not None else (lambda *a, **k: None)
    data, split, out = config.data, config.split, config.out
    source = _source(config.weights, config.model, out)
    mode = parse_mode(config.mode or read_card(source)["mode"]).value  # default: the card's own mode
    net, card = resolve_model(mode, weights=source, device=resolve_device(config.device))
    metric = PRIMARY_METRIC[Mode(mode)]
    start, grid = _start_and_grid(net, card, mode, config.grid)
    dataset = load_for_model(data, card, format=config.data_format, split=split)
    samples = [dataset[i] for i in range(len(dataset))]
    notify("start", images=len(samples), settings=1 + sum(len(v) for v in grid.values()), metric=metric, split=split)
    score = _scorer(net, card, samples, mode, dataset.label_space, metric)
    chosen, best, tried = search_thresholds(score, start, grid, metric, notify)
    search = {"data": str(data), "split": split, "metric": metric, "best": round(best, 4), "tried": tried}
    written = _write(source, out, record_choice(card, mode, chosen, search))
    return TuneResult(card=written, mode=mode, metric=metric, split=split, start=start, chosen=chosen, best=best,
                      tried=tried)


def _source(weights: Path | None, model: str | None, out: Path | None) -> Path:
    """The checkpoint to tune: --weights FILE with its card, or a bundled model (whose card stays as shipped)."""
    from segcli.checkpoint import check_weights_path
    from segcli.services.resolve import bundled_checkpoint

    if (weights is None) == (model is None):
        raise UsageError("tune needs --weights FILE (a checkpoint from segcli train) or --model NAME (a bundled model)")
    if weights is not None:
        check_weights_path(weights)
        if not checkpoint_paths(weights)[1].is_file():
            raise ModelError(f"--weights {weights}: no card beside it ({checkpoint_paths(weights)[1].name}) to write "
                             "thresholds into; tune a segcli checkpoint")
        return Path(weights)
    bundled = bundled_checkpoint(model)
    if bundled is None:
        raise UsageError(f"--model {model}: not a bundled model; library weights have no card to write thresholds "
                         "into (tune a checkpoint of yours with --weights FILE)")
    if out is None or checkpoint_paths(out)[0].resolve() == bundled.resolve():
        raise UsageError(f"--model {model}: a bundled model's card is part of the installation; give --out "
                         f"FILE.safetensors for a tuned copy (then predict --weights FILE)")
    return bundled


def _start_and_grid(net, card: dict, mode: str, grid: dict[str, list[float]] | None) -> tuple[dict, dict]:
    """The thresholds predict uses in `mode` now (every one the model takes) and the grid to search, its values
    typed as the thresholds' defaults (whole numbers for areas and kernels)."""
    from segcli.inference import postprocess_defaults, postprocess_options

    defaults = postprocess_defaults(net)
    name = card.get("name") or card["model"]
    if not defaults:
        raise UsageError(f"{name}'s post-processing takes no thresholds: there is nothing to tune")
    start = {**defaults, **postprocess_options(net, card, None, mode)}
    if grid is None:
        grid = {k: list(v) for k, v in DEFAULT_GRIDS.items() if k in defaults}
        if not grid:
            raise UsageError(f"no default grid for {name}'s thresholds ({', '.join(defaults)}); "
                             "give --grid NAME=V1,V2,...")
    typed = {}
    for key, values in grid.items():
        if key not in defaults:
            raise UsageError(f"--grid {key}: {name}'s post-processing takes {', '.join(defaults)}")
        if not values:
            raise UsageError(f"--grid {key}=: give the values to try, e.g. --grid {key}=0.3,0.5")
        whole = isinstance(defaults[key], int) and not isinstance(defaults[key], bool)
        if whole and any(float(v) != int(v) for v in values):
            raise UsageError(f"--grid {key}: {key} takes whole numbers")
        typed[key] = [int(v) if whole else float(v) for v in values]
    return start, typed


def _scorer(net, card: dict, samples: list, mode: str, label_space, metric: str) -> Callable[[dict], float]:
    """setting -> the metric on the samples. A dense model runs once: its outputs are post-processed per setting."""
    from segcli.inference import (
        DEFAULT_TILE,
        InferenceOptions,
        dense_outputs,
        finish_outputs,
        postprocess_call,
        predict_arrays,
    )
    from segcli.metrics import score_predictions

    options = InferenceOptions(tile=DEFAULT_TILE, mode=Mode(mode))
    images = [s.image for s in samples]
    if net.dense:
        prepared, batches = dense_outputs(net, card, images, options=options)

        def predict(values: dict) -> list:
            thresholds = postprocess_call(prepared, card, values, mode)
            return [p for outputs, sizes in batches for p in finish_outputs(prepared, outputs, sizes, thresholds)]
    else:
        def predict(values: dict) -> list:
            return predict_arrays(net, card, images, options=options, **values)

    return lambda values: float(score_predictions(list(zip(samples, predict(values))), mode, label_space)[metric])


def _write(source: Path, out: Path | None, card: dict) -> Path:
    """The card written beside the weights it was read with, or a copy of both at `out`; returns the card's path."""
    weights, card_path = checkpoint_paths(source)
    if out is not None:
        target_weights, card_path = checkpoint_paths(out)
        if target_weights.resolve() != weights.resolve():
            target_weights.parent.mkdir(parents=True, exist_ok=True)
            with io.atomic_path(target_weights) as tmp:
                shutil.copyfile(weights, tmp)
    io.write_json(card_path, card, indent=2)
    return card_path
