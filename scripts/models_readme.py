"""Write models/README.md from the bundled models' cards (never by hand), and the same tables into docs/models.md
between its models markers: `make models-readme`.

Every column comes from a card, except size (the weights file) and latency, which this script
measures: median wall time of `predict_arrays` (image in, prediction of the card's mode out: the
forward pass and post-processing, channels-last float32, batch 1) on one image at the model's
native size, after warm-up, with the threads torch has here. Recipes that ship no weights
(`RECIPES`, e.g. membrane: its data is non-commercial) get their own table with their documented result.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import torch

from segcli.checkpoint import card_data_sources, card_label_space, card_licences, load_checkpoint, read_card
from segcli.inference import InferenceOptions, predict_arrays, prepare_model
from segcli.models.registry import get_model_entry
from segcli.services.catalog import score_table
from segcli.services.resolve import bundled_checkpoint, bundled_names

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
DOCS_PAGE = ROOT / "docs" / "models.md"
BEGIN, END = "<!-- models:begin (make models-readme) -->", "<!-- models:end -->"
INTRO_END = "They need no network."  # the last words of models/README.md's introduction; the tables follow
HEADLINE = {"panoptic": ("pq", "sq", "rq", "things_pq"), "instance": ("ap", "ap50", "ap75"),
            "semantic": ("miou", "pixel_accuracy")}
MODE_ORDER = ("panoptic", "instance", "semantic")

# Trained by `make weights-NAME` but not shipped; their result as measured by that recipe (docs/notes/).
RECIPES = {
    "membrane": {
        "mode": "semantic", "classes": "membrane, cell",
        "data": "ISBI 2012 EM membranes (isbi2012_membrane), train split: 20 images of 512 px",
        "licence": "non-commercial use only (cite Cardona et al. 2010): weights not shipped",
        "result": "test split (5 slices): mIoU 0.800 (membrane IoU 0.689, cell 0.911), boundary F1 0.984; "
                  "U-Net at native resolution, 14 min on one core of this CPU (docs/notes/2026-12-training-runs.md)",
    },
}


def sample_image(card: dict) -> np.ndarray:
    """The first test image, cut to the native size (a shapes image is already that size); noise without the data."""
    size = card.get("native_size") or card.get("img_size") or 256
    test = card.get("test") or {}
    try:
        from segcli.data import load_dataset

        image = load_dataset(test["path"], split=test.get("split", "test"))[0].image
    except Exception:  # the test data is not on this machine: time a random image of the same size
        image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = image[:size, :size]
    pad = ((0, size - image.shape[0]), (0, size - image.shape[1]), (0, 0))
    return np.pad(image, pad, mode="reflect") if any(p[1] for p in pad) else image


def latency_ms(net, card: dict, image: np.ndarray, repeats: int = 10) -> float:
    options = InferenceOptions(channels_last=True, batch_size=1)
    net = prepare_model(net, options)
    for _ in range(2):
        predict_arrays(net, card, [image], options=options)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_arrays(net, card, [image], options=options)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _metrics(card: dict) -> str:
    parts = []
    for mode in MODE_ORDER:
        values = card.get("metrics", {}).get(mode)
        if values:
            parts.append(f"{mode}: " + ", ".join(f"{k} {_three_places(values[k])}" for k in HEADLINE[mode]
                                                 if values.get(k) is not None))
    return "<br>".join(parts)


def _classes(card: dict) -> str:
    space = card["label_space"]
    things = space.get("isthing") or [False] * len(space["names"])
    return ", ".join(f"{n}{' (thing)' if t else ''}" for n, t in zip(space["names"], things))


def row(name: str, card: dict, weights: Path) -> str:
    net, _ = load_checkpoint(weights)
    size = card.get("native_size") or card.get("img_size")
    image = sample_image(card)
    ms = latency_ms(net, {**card, "mode": card["mode"]}, image)
    data = "<br>".join(f"{s['name']}; licence: {s['licence']}" for s in card_data_sources(card))
    cells = [f"`{name}`", ", ".join(get_model_entry(card["model"]).modes), _classes(card), data,
             f"`{card.get('recipe', '')}`: `{card.get('command', '')}`",
             f"{_metrics(card)}<br>({card.get('test', {}).get('data', 'test data unknown')})",
             f"{weights.stat().st_size / 1e6:.1f} MB ({card.get('storage_dtype', 'float32')})",
             f"{ms:.0f} ms at {size}x{size}"]
    return "| " + " | ".join(cells) + " |"


def scores_section(names: list[str]) -> list[str]:
    """Per bundled model, its scores per test set and kind of image (the card's `scores`, scripts/bundle_model.py)."""
    lines = ["", "## Scores per test set and kind of image", "",
             "Measured by `scripts/bundle_model.py --score-on` as `segcli eval --data DIR --split SPLIT` measures "
             "(the same reading and inference), on each whole test set and on each kind of image in it "
             "(fluorescence, brightfield, H&E). PQ counts the background too; the thing class's own PQ is "
             "beside it."]
    for name in names:
        card = read_card(bundled_checkpoint(name))
        space = card_label_space(card)
        headings, rows = score_table(card.get("scores") or [], [space.names[i] for i in space.thing_indices])
        lines += ["", f"### `{name}`", ""]
        if not rows:
            lines.append("No scores per kind of image recorded (the card's test metrics are in the table above).")
            continue
        lines += ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def _three_places(value: float) -> str:
    """Cards keep 4 decimals; rounding those half-up gives what the full value rounds to (0.66953 -> 0.6695 -> 0.670,
    where the float 0.6695 formatted with :.3f reads 0.669)."""
    return str(Decimal(str(value)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def main(out: str = str(MODELS / "README.md"), page: str = str(DOCS_PAGE)) -> None:
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    lines = [
        "# Bundled models",
        "",
        "Written by `scripts/models_readme.py` from the cards (`NAME.json`) beside the weights",
        "(`NAME.safetensors`); do not edit by hand: `make models-readme` regenerates it. `segcli models` lists the",
        "same models; use one with `--model NAME` in `predict` and `eval --data`, and fine-tune it with",
        "`segcli train --weights models/NAME.safetensors`. They need no network.",
        "",
        "| name | modes | classes | training data | trained by | test metrics | size | CPU latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total = 0
    for name in bundled_names():
        weights = bundled_checkpoint(name)
        card = read_card(bundled_checkpoint(name))
        lines.append(row(name, card, weights))
        total += weights.stat().st_size
    lines += [
        "",
        f"All weights together: {total / 1e6:.1f} MB. Latency: median of 10 `predict_arrays` calls (forward pass and "
        "post-processing of the model's own mode, float32 channels-last, batch 1) on one test image at the "
        f"native size, {torch.get_num_threads()} torch threads, {platform.machine()} CPU, torch {torch.__version__}; "
        f"load average {load:.1f} when it began ({os.cpu_count()} cores: a load near their number or above means "
        "other jobs shared the machine, and the times are upper bounds).",
        "",
        *[f"Trained on data for non-commercial use only: `{name}` ({card_licences(read_card(bundled_checkpoint(name)))}"
          "); its weights carry that licence." for name in bundled_names()
          if "-NC" in card_licences(read_card(bundled_checkpoint(name)))],
        *scores_section(bundled_names())[1:],
        "",
        "## Recipes without shipped weights",
        "",
        "| name | mode | classes | training data | licence | recipe | documented result |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, recipe in RECIPES.items():
        lines.append(f"| `{name}` | {recipe['mode']} | {recipe['classes']} | {recipe['data']} | {recipe['licence']} | "
                     f"`make weights-{name}` | {recipe['result']} |")
    notes = [(name, read_card(bundled_checkpoint(name)).get("notes")) for name in bundled_names()]
    if any(text for _, text in notes):
        lines += ["", "## Notes", ""] + [f"- `{name}`: {text}" for name, text in notes if text]
    Path(out).write_text("\n".join(lines) + "\n")
    write_docs_section(out, page)
    print(f"wrote {out} and its tables in {page}", file=sys.stderr)


def docs_section(readme_text: str) -> str:
    """models/README.md's tables and notes, as a part of the docs page (its headings one level down)."""
    body = readme_text.split(INTRO_END, 1)[1].strip()
    return "\n".join("#" + line if line.startswith("## ") else line for line in body.splitlines())


def write_docs_section(readme: str = str(MODELS / "README.md"), page: str = str(DOCS_PAGE)) -> None:
    """The docs page with models/README.md's tables between its markers (no model is run)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from docs_compare import replace_section  # a script beside this one

    replace_section(page, BEGIN, END, docs_section(Path(readme).read_text()))


if __name__ == "__main__":
    main(*sys.argv[1:])
