"""Choose a run's post-processing thresholds on its validation split, and record them in its best checkpoint's card.

    python scripts/choose_thresholds.py RUN DATA --mode panoptic --grid interior_threshold=0.3,0.4,0.5,0.6 \
        --grid min_area=5,10,20

One threshold at a time, in the order given (coordinate search): each value is scored by `segcli eval --data` on
the validation split with the others at their best so far, and the best is kept when it beats the card's value by
more than 0.002 of the mode's primary metric (ties keep the value training validated with). For the card's own mode
the card's `postprocess` then holds the chosen values, which predict and eval start from; for another mode (instance
thresholds of a panoptic model, chosen by AP) they go to `postprocess_by_mode[MODE]`, which predict and eval use in
that mode. `postprocess_search[MODE]` records every value tried with its score. The test split is never looked at.
Used by scripts/weights.sh.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from segcli import io
from segcli.checkpoint import checkpoint_paths, read_card
from segcli.metrics import PRIMARY_METRIC
from segcli.services.evaluate import evaluate_model


def _parse_grid(items: list[str]) -> dict[str, list[float]]:
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        grid[name] = [float(v) if "." in v else int(v) for v in values.split(",")]
    return grid


def choose(run: Path, data: Path, mode: str, grid: dict[str, list[float]], split: str = "val") -> dict:
    weights, card_path = checkpoint_paths(run / "best")
    card = read_card(weights)
    own_mode = mode == card.get("mode")
    by_mode = dict(card.get("postprocess_by_mode") or {})
    chosen = {**(card.get("postprocess") or {}), **(by_mode.get(mode) or {})}
    metric = PRIMARY_METRIC[mode]

    def score(values: dict) -> float:
        result = evaluate_model(data=data, mode=mode, weights=weights, split=split, thresholds=values)
        return float(result[metric])

    best = score(chosen)
    tried = [{**chosen, metric: round(best, 4)}]
    for name, values in grid.items():
        for value in values:
            candidate = {**chosen, name: value}
            if any(all(t[k] == v for k, v in candidate.items()) for t in tried):  # scored already (the start, say)
                continue
            result = score(candidate)
            tried.append({**candidate, metric: round(result, 4)})
            if result > best + 0.002:
                best, chosen = result, candidate
    if own_mode:
        card["postprocess"] = chosen
        by_mode.pop(mode, None)
    else:
        by_mode[mode] = chosen
    card["postprocess_by_mode"] = by_mode
    if not by_mode:
        del card["postprocess_by_mode"]
    search = {"split": split, "metric": metric, "best": round(best, 4), "tried": tried}
    searches = card.get("postprocess_search") or {}
    if "metric" in searches:  # one search, recorded before searches were kept by mode
        searches = {card.get("mode"): searches}
    card["postprocess_search"] = {**searches, mode: search}
    io.write_json(card_path, card, indent=2)
    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="training run folder (its best checkpoint's card is updated)")
    parser.add_argument("data", type=Path, help="the dataset the run trained on (its validation split is used)")
    parser.add_argument("--mode", required=True, choices=sorted(PRIMARY_METRIC))
    parser.add_argument("--grid", action="append", default=[], help="NAME=V1,V2,...: values of one threshold")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    search = choose(args.run, args.data, args.mode, _parse_grid(args.grid), args.split)
    print(json.dumps(search))


if __name__ == "__main__":
    main()
