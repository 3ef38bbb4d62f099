"""`segcli models`: what the zoo holds, which weights are on this machine, and fetching them ahead of time."""

from __future__ import annotations

from pathlib import Path

from segcli import hub
from segcli.checkpoint import card_label_space, read_card
from segcli.errors import ModelError
from segcli.models import hf_zoo
from segcli.models.encoders import ENCODERS
from segcli.models.pretrained import required_weights
from segcli.models.registry import get_model_entry, list_models
from segcli.services.resolve import bundled_checkpoint, bundled_names, default_model, fetch_weights
from segcli.structures import Mode


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
            rows.append({"name": checkpoint.name, "modes": list(checkpoint.modes), "description": checkpoint.description,
                         "default_for": [m for m, name in defaults.items() if name == checkpoint.name],
                         "weights": [{"file": checkpoint.repo, "url": f"https://huggingface.co/{checkpoint.repo}",
                                      "cached": cached, "size_mb": checkpoint.download_mb}]})
    for name in ENCODERS:
        if mode is None:
            rows.append({"name": name, "modes": [], "description": "ImageNet encoder (torchvision): segcli train --model "
                         "unet|fcn|deeplab[_panoptic] --encoder " + name, "default_for": [],
                         "weights": [_weights_row(hub.torchvision_weights(name))]})
    rows += [row for row in map(_bundled_row, bundled_names()) if mode is None or mode in row["modes"]]
    return rows


# The metrics `segcli models` shows for a bundled model, per mode (the card keeps every metric eval reported).
HEADLINE_METRICS = {"panoptic": ("pq",), "instance": ("ap50", "ap"), "semantic": ("miou",)}


def _bundled_row(name: str) -> dict:
    """A bundled model: modes of its architecture, its classes and the test metrics its card records."""
    path = bundled_checkpoint(name)
    card = read_card(path)
    metrics = card.get("metrics") or {}
    shown = [f"{key} {metrics[m][key]:.3f}" for m, keys in HEADLINE_METRICS.items() for key in keys
             if isinstance(metrics.get(m), dict) and isinstance(metrics[m].get(key), (int, float))]
    classes = card_label_space(card).names
    description = f"bundled: {card.get('summary', card['model'])}; classes {', '.join(classes)}"
    if shown:
        description += f"; test {', '.join(shown)}"
    return {"name": name, "modes": list(get_model_entry(card["model"]).modes), "description": description,
            "default_for": [], "architecture": card["model"], "classes": classes, "metrics": metrics,
            "weights": [{"file": path.name, "path": str(path), "cached": True,
                         "size_mb": round(path.stat().st_size / 1e6, 1)}]}


def weights_summary(row: dict) -> str:
    """'-' (trained by you), or each file's size and whether it is here."""
    if not row["weights"]:
        return "-"
    parts = []
    for w in row["weights"]:
        size = f"{w['size_mb']:.0f} MB" if w.get("size_mb") is not None else "? MB"
        parts.append(f"{size} {'here' if w['cached'] else 'not fetched'}")
    return ", ".join(parts)


def fetch_models(names: list[str], *, progress: bool = True) -> list[tuple[str, list[Path]]]:
    """Download every named model's (or ImageNet encoder's) library weights into the cache now (`segcli models --fetch`)."""
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
