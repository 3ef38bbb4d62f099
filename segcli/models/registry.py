"""One registry for the zoo: a dict of builder functions (like timm's `create_model`).

    @register_model("unet", modes=("semantic",), description="classic U-Net")
    def unet(num_classes: int = 2, in_channels: int = 3, width: int = 32) -> nn.Module: ...

    model = build_model("unet", num_classes=4)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from segcli.errors import ModelError
from segcli.structures import Mode


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    modes: tuple[Mode, ...]
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, modes: tuple[Mode, ...], description: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a builder to the zoo under `name`; duplicate names are a bug."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, builder, tuple(Mode(m) for m in modes), description)
        return builder

    return wrap


def _ensure_zoo_loaded() -> None:
    # Importing the package runs every @register_model in it.
    import segcli.models  # noqa: F401


def close_names(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """The names most like `name` (a misspelling, or a part of a longer name), best first: the one that differs only
    in case or - for _ alone, else the best spellings (within 0.1 of the best ratio), then names containing it."""
    def key(text: str) -> str:
        return text.lower().replace("-", "_")

    by_key = {key(known): known for known in names}
    wanted = key(name)
    if wanted in by_key:
        return [by_key[wanted]]
    ratios = {k: difflib.SequenceMatcher(None, wanted, k).ratio() for k in by_key}
    best = max(ratios.values(), default=0.0)
    spelled = sorted((k for k, r in ratios.items() if r >= max(0.6, best - 0.1)), key=lambda k: -ratios[k])
    containing = [k for k in by_key if len(wanted) >= 4 and wanted in k and k not in spelled]
    return [by_key[k] for k in [*spelled, *containing][:n]]


def get_model_entry(name: str) -> ModelEntry:
    _ensure_zoo_loaded()
    if name not in _MODELS:
        known = ", ".join(sorted(_MODELS)) or "(none)"
        close = close_names(name, _MODELS)
        guess = f"did you mean {' or '.join(close)}? " if close else ""
        raise ModelError(f"unknown model {name!r}; {guess}available models: {known}")
    return _MODELS[name]


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a zoo model by name. Options left as None keep the builder's own defaults."""
    entry = get_model_entry(name)
    options = {k: v for k, v in kwargs.items() if v is not None}
    model = entry.builder(**options)
    if "in_channels" in options:  # the builders pass it to their first layer; the model says it (SegModel.in_channels)
        model.in_channels = int(options["in_channels"])
    return model


def list_models(mode: str | None = None) -> list[ModelEntry]:
    """Every registered model, sorted by name, optionally only those that support `mode`."""
    _ensure_zoo_loaded()
    entries = sorted(_MODELS.values(), key=lambda e: e.name)
    return [e for e in entries if mode is None or mode in e.modes]


def models_for_mode(mode: str) -> list[str]:
    return [e.name for e in list_models(mode)]


def models_taking(option: str) -> list[str]:
    """The models whose builder takes `option` (e.g. "encoder"), sorted: what error messages list."""
    return [e.name for e in list_models() if option in inspect.signature(e.builder).parameters]
