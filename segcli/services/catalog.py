"""`segcli models`: what the zoo holds, which weights are on this machine, and fetching them ahead of time."""

from __future__ import annotations

from pathlib import Path

from segcli import hub
from segcli.checkpoint import (
    card_data_sources,
    card_label_space,
    card_licences,
    card_object_diameter,
    card_pixel_size,
    load_checkpoint,
    read_card,
)
from segcli.errors import ModelError
from segcli.models import hf_zoo
from segcli.models.bodies import VARIANTS, list_bodies
from segcli.models.encoders import ENCODERS
from segcli.models.pretrained import required_weights
from segcli.models.registry import get_model_entry, list_models
from segcli.services.resolve import bundled_checkpoint, bundled_names, default_model, fetch_weights
from segcli.structures import Mode


def encoder_models() -> str:
    """The models that take --encoder, from the registry, compressed: `deeplab|fcn|unet[_contour|_panoptic]`."""
    bodies = [body for body in list_bodies() if body.takes_encoder]
    suffixes = sorted({VARIANTS[key].suffix for body in bodies for key in body.variants} - {""})
    return "|".join(body.name for body in bodies) + (f"[{'|'.join(suffixes)}]" if suffixes else "")


def cache_folder() -> Path:
    return hub.cache_dir()


def _weights_row(weights) -> dict:
    path = hub.cache_path(weights)
    cached = path.is_file()
    return {"file": path.name, "url": weights.url, "path": str(path), "cached": cached,
            "size_mb": round(path.stat().st_size / 1e6, 1) if cached else hub.size_mb(weights)}


def list_catalog(mode: str | None = None) -> list[dict]:
    """One row per zoo model: name, modes, description, whether it is a mode's default, and its library weights
    (file, url, path in the cache, cached or not, size in MB) or its bundled checkpoint."""
    defaults = {m: default_model(m) for m in Mode}
    rows = []
    for entry in list_models(mode):
        rows.append({"name": entry.name, "modes": list(entry.modes), "description": entry.description,
                     "default_for": [m for m, name in defaults.items() if name == entry.name],
                     "weights": [_weights_row(w) for w in required_weights(entry.name, {})]})
    for checkpoint in hf_zoo.ZOO.values():  # --model hf:ORG/NAME also opens any other compatible checkpoint
        if mode is None or mode in checkpoint.modes:
            cached = hf_zoo.available() and hf_zoo.is_cached(checkpoint.name)
            weights = {"file": checkpoint.repo, "url": f"https://huggingface.co/{checkpoint.repo}",
                       "cached": cached, "size_mb": checkpoint.download_mb}
            rows.append({"name": checkpoint.name, "modes": list(checkpoint.modes),
                         "description": checkpoint.description,
                         "default_for": [m for m, name in defaults.items() if name == checkpoint.name],
                         "weights": [weights]})
    for name in ENCODERS:
        if mode is None:
            usage = f"segcli train --model {encoder_models()} --encoder {name}"
            rows.append({"name": name, "modes": [], "description": f"ImageNet encoder (torchvision): {usage}",
                         "default_for": [], "weights": [_weights_row(hub.torchvision_weights(name))]})
    rows += [row for row in map(_bundled_row, bundled_names()) if mode is None or mode in row["modes"]]
    return rows


# A bundled model's headline: for a model with thing classes the quality of its objects (the PQ of the thing
# classes and COCO mask AP50), not the mean over a background every model gets right (nuclei: PQ 0.820 was
# background 0.971 and nucleus 0.668); for a model of stuff only, its mIoU. (label, mode, key) in the card's metrics.
THING_HEADLINE = (("things PQ", "panoptic", "things_pq"), ("mask AP50", "instance", "ap50"))
STUFF_HEADLINE = (("mIoU", "semantic", "miou"),)


def headline(metrics: dict, has_things: bool) -> str:
    """'things PQ 0.668, mask AP50 0.763': the test metrics a model is judged by, labelled ('' if none recorded)."""
    labelled = THING_HEADLINE if has_things else STUFF_HEADLINE
    shown = [f"{label} {metrics[mode][key]:.3f}" for label, mode, key in labelled
             if isinstance(metrics.get(mode), dict) and isinstance(metrics[mode].get(key), (int, float))]
    return ", ".join(shown)


def _bundled_row(name: str) -> dict:
    """A bundled model: modes of its architecture, its classes, the test metrics its card records and the licences
    of its training data (a model trained on non-commercial data must say so wherever it is listed)."""
    path = bundled_checkpoint(name)
    card = read_card(path)
    metrics = card.get("metrics") or {}
    space = card_label_space(card)
    scores = headline(metrics, bool(space.thing_indices))
    description = f"bundled: {card.get('summary', card['model'])}; classes {', '.join(space.names)}"
    if scores:
        description += f"; test {scores}"
    description += f"; training data licence: {card_licences(card)}"
    return {"name": name, "modes": list(get_model_entry(card["model"]).modes), "description": description,
            "default_for": [], "architecture": card["model"], "classes": space.names, "metrics": metrics,
            "headline": scores, "licence": card_licences(card), "training_data": card_data_sources(card),
            "scores": card.get("scores") or [], "weights": [{"file": path.name, "path": str(path), "cached": True,
                                                              "size_mb": round(path.stat().st_size / 1e6, 1)}]}


def model_info(name: str, size: int = 512) -> dict:
    """What `segcli models --info NAME` shows. A zoo model: its architecture's facts (parameters, GFLOPs at `size`,
    receptive field). A bundled model: what its card says a user needs (summary, classes, training data and their
    licences, the scale it was trained at, its post-processing, its scores per test set and kind of image, how to
    retrain it), then its architecture's facts."""
    from segcli.models.facts import model_facts

    path = bundled_checkpoint(name)
    if path is None:
        return model_facts(name, size=size)
    net, card = load_checkpoint(path)
    facts = model_facts(card["model"], size=size, model=net)
    return {"name": name, "bundled": True, "summary": card.get("summary"), "architecture": card["model"],
            "modes": facts["modes"], "classes": card_label_space(card).names,
            "thing_classes": [card_label_space(card).names[i] for i in card_label_space(card).thing_indices],
            "training_data": card_data_sources(card), "licence": card_licences(card),
            "pixel_size_um": card_pixel_size(card), "object_diameter": card_object_diameter(card),
            "postprocess": card.get("postprocess"), "postprocess_by_mode": card.get("postprocess_by_mode"),
            "scores": card.get("scores") or [], "recipe": card.get("recipe"), "command": card.get("command"),
            **{k: facts[k] for k in ("parameters", "gflops", "gflops_at", "receptive_field", "size_multiple")}}


# The columns of a scores table: (row key, heading); a one-thing-class model's things_pq is "<thing> PQ".
SCORE_COLUMNS = (("ap50", "mask AP50"), ("ap", "mask AP"), ("things_pq", "object PQ"), ("pq", "PQ"), ("miou", "mIoU"))


def score_table(scores: list[dict], things: list[str]) -> tuple[list[str], list[list[str]]]:
    """The headings and rows of a model's scores per test set and kind of image (the metrics its rows hold);
    `things` names its thing classes."""
    names = {"things_pq": f"{things[0]} PQ" if len(things) == 1 else "object PQ"}
    columns = [(key, names.get(key, heading)) for key, heading in SCORE_COLUMNS if any(key in row for row in scores)]
    headings = ["test set", "kind", "images", "objects", *(heading for _, heading in columns)]
    rows = [[row["test_set"], row["kind"], str(row["n_images"]), str(row.get("n_objects", "-")),
             *(f"{row[key]:.3f}" if isinstance(row.get(key), (int, float)) else "-" for key, _ in columns)]
            for row in scores]
    return headings, rows


def weights_summary(row: dict) -> str:
    """'-' (trained with segcli train), or each file's size, with 'here' when it is on this machine."""
    if not row["weights"]:
        return "-"
    parts = []
    for w in row["weights"]:
        size = f"{w['size_mb']:.0f} MB" if w.get("size_mb") is not None else "? MB"
        parts.append(f"{size} here" if w["cached"] else size)
    return ", ".join(parts)


def fetch_models(names: list[str], *, progress: bool = True) -> list[tuple[str, list[Path]]]:
    """Download every named model's (or ImageNet encoder's) library weights into the cache now
    (`segcli models --fetch`)."""
    fetched = []
    for name in names:
        if bundled_checkpoint(name) is not None:
            fetched.append((name, [bundled_checkpoint(name)]))
            continue
        if hf_zoo.is_hf_name(name):
            fetched.append((name, [hf_zoo.fetch(name, progress=progress)]))
            continue
        if name in ENCODERS:
            fetched.append((name, [hub.fetch(hub.torchvision_weights(name), model=name, progress=progress)]))
            continue
        try:
            get_model_entry(name)
        except ModelError as error:
            raise ModelError(f"{error}; ImageNet encoders: {', '.join(ENCODERS)}; Hugging Face: hf:ORG/NAME") from None
        if not required_weights(name, {}):
            raise ModelError(f"{name} has no pretrained weights to fetch: it is trained with segcli train")
        fetched.append((name, fetch_weights(name, progress=progress)))
    return fetched
