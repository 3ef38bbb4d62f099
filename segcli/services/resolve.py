"""Which model answers a request (docs/models.md), in this order:

1. `--weights FILE`: a segcli checkpoint (FILE beside its card), or, with `--model tv_*`, a
   torchvision-format state dict with no card (.pth read with weights_only=True, or .safetensors);
2. `--model NAME` naming a bundled model (`NAME.safetensors` + card in the bundled folders);
3. `--model NAME` naming a library model (`tv_*`; `hf:*`): weights fetched into the library's cache
   on first use (`segcli.hub`), refused offline with the file and where to put it;
4. neither: the mode's default model (`default_model`), resolved as in 2-3.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from segcli import hub, io
from segcli.checkpoint import check_weights_path, checkpoint_paths, load_checkpoint, make_card
from segcli.errors import ModelError, UsageError
from segcli.models import hf_zoo
from segcli.models.pretrained import library_name, required_weights
from segcli.models.registry import build_model, close_names, get_model_entry, list_models, models_for_mode
from segcli.structures import LabelSpace, Mode

# The bundled models: the repository's models/ folder (a checkout, an editable install), which a wheel
# installs as the package segcli.bundled (pyproject.toml).
REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "models"
INSTALLED_WEIGHTS = Path(__file__).resolve().parents[1] / "bundled"

# torchvision's COCO models: what `segcli predict photo.jpg --mode M` uses with no --model/--weights.
DEFAULT_MODELS = {
    Mode.SEMANTIC: "tv_deeplabv3_resnet50",
    Mode.INSTANCE: "tv_maskrcnn_resnet50_fpn_v2",
    Mode.PANOPTIC: "tv_maskrcnn_resnet50_fpn_v2",  # COCO things, void stuff, until a better panoptic model is added
}


def weights_dirs() -> list[Path]:
    """Where bundled checkpoints are looked for: $SEGCLI_WEIGHTS, then the installed package's, then the
    repository's."""
    dirs = [Path(p) for p in os.environ.get("SEGCLI_WEIGHTS", "").split(os.pathsep) if p]
    return dirs + [INSTALLED_WEIGHTS, REPO_WEIGHTS]


def bundled_checkpoint(name: str) -> Path | None:
    """The bundled model called `name` (`NAME.safetensors` beside `NAME.json`), if one ships."""
    for folder in weights_dirs():
        weights, card = checkpoint_paths(folder / name)
        if weights.is_file() and card.is_file():
            return weights
    return None


def bundled_names() -> list[str]:
    """Every bundled model name (listed by `segcli models`, usable offline)."""
    names = {p.stem for folder in weights_dirs() if folder.is_dir() for p in folder.glob("*.safetensors")
             if checkpoint_paths(p)[1].is_file()}
    return sorted(names)


def unknown_model(name: str) -> ModelError:
    """An unknown --model, with the closest of every name --model takes: bundled, zoo and Hugging Face models."""
    bundled, zoo = bundled_names(), [entry.name for entry in list_models()]
    close = close_names(name, [*bundled, *zoo, *hf_zoo.ZOO])
    guess = f"did you mean {' or '.join(close)}? " if close else ""
    return ModelError(f"unknown model {name!r}; {guess}bundled: {', '.join(bundled) or '(none)'}; "
                      f"zoo: {', '.join(zoo)}; "
                      "or hf:ORG/NAME, a Hugging Face checkpoint (segcli models lists them all)")


def check_model_name(name: str) -> None:
    """Refuse a --model that names nothing segcli knows (before any data is read or weights fetched)."""
    if not (hf_zoo.is_hf_name(name) or bundled_checkpoint(name) is not None
            or name in {entry.name for entry in list_models()}):
        raise unknown_model(name)


def default_model(mode: str) -> str:
    """The documented default model of a mode (panoptic: COCO Mask2Former when the [hf] extra is installed)."""
    if mode == Mode.PANOPTIC and hf_zoo.available():
        return hf_zoo.DEFAULT_PANOPTIC
    return DEFAULT_MODELS[mode]


def _check_mode(name: str, mode: str) -> None:
    if mode not in get_model_entry(name).modes:
        raise ModelError(f"{name} cannot do --mode {mode}; models that can: {', '.join(models_for_mode(mode))}")


def fetch_weights(model: str, args: dict | None = None, *, progress: bool = True) -> list[Path]:
    """Download (or find in the cache) every library file that building `model` with `args` reads."""
    return [hub.fetch(w, model=model, progress=progress) for w in required_weights(model, args or {})]


def offline_choices(mode: str) -> str:
    """What can answer `mode` on this machine without a network, as one clause."""
    cached = [name for name in models_for_mode(mode) if library_name(name) and _is_cached(name)]
    if hf_zoo.available():
        cached += [name for name, c in hf_zoo.ZOO.items() if mode in c.modes and hf_zoo.is_cached(name)]
    bundled = bundled_names()
    return (f"usable offline here: bundled {', '.join(bundled) or '(none)'}; cached {', '.join(cached) or '(none)'}; "
            "or --weights FILE (a checkpoint from segcli train)")


def _is_cached(model: str) -> bool:
    return all(hub.cache_path(w).is_file() for w in required_weights(model, {}))


def resolve_model(mode: str, model: str | None = None, weights: Path | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on `device`, its card) for a predict or eval request."""
    if weights is not None:
        return _from_file(mode, model, Path(weights), device)
    if model is None:
        better = (f"; for photos, {hf_zoo.INSTALL_HINT} makes a COCO panoptic Mask2Former the default"
                  if mode == "panoptic" and not hf_zoo.available() else "")
        try:
            net, card = resolve_model(mode, default_model(mode), device=device)
        except ModelError as error:
            if not (hub.is_offline() or isinstance(error, hub.OfflineError)):  # no network is offline too
                raise ModelError(f"{error}{better}") from None
            raise hub.OfflineError(f"{str(error).rstrip('.')}. No --model or --weights given for --mode {mode}; "
                                   f"{offline_choices(mode)}{better}") from None
        if better:  # said once per run by predict (the card's note): the default without the extra has no stuff
            card["note"] = f"--mode panoptic with {card['model']}: COCO things only, every other pixel void{better}"
        return net, card
    bundled = bundled_checkpoint(model)
    if bundled is not None:
        net, card = load_checkpoint(bundled, device=device)
        _check_mode(card["model"], mode)
        return net, card
    if hf_zoo.is_hf_name(model):
        return _hf_model(mode, model, device)
    check_model_name(model)
    return _library_model(mode, model, device)


def weights_identity(model: str | None, weights: Path | None, card: dict) -> str:
    """What distinguishes these weights from others of the same model: a file's SHA-256 (a checkpoint, a bundled
    model, a state dict), else the library's weights files (their names carry their hash) or checkpoint name."""
    path = Path(weights) if weights is not None else bundled_checkpoint(model) if model else None
    if path is not None:
        tensors = checkpoint_paths(path)[0]
        return "sha256:" + io.file_sha256(tensors if tensors.is_file() else path)[:16]
    source = card.get("source") or {}
    if source.get("checkpoint"):
        return f"{source.get('library', 'library')}:{source['checkpoint']}"
    files = [Path(f.strip()).name for f in str(card.get("weights") or "").split(",") if f.strip()]
    return ", ".join(files) or card["model"]


def _hf_model(mode: str, model: str, device) -> tuple[torch.nn.Module, dict]:
    net = hf_zoo.load(model, mode, device)
    card = make_card(model, {}, mode, net.label_space, normalization={"mean": list(net.mean), "std": list(net.std)},
                     source={"library": "transformers", "checkpoint": model[len(hf_zoo.PREFIX):]})
    return net, card


def _from_file(mode: str, model: str | None, weights: Path, device) -> tuple[torch.nn.Module, dict]:
    check_weights_path(weights)
    _, card_path = checkpoint_paths(weights)
    if card_path.is_file():
        net, card = load_checkpoint(weights, device=device)
        if model is not None and model != card["model"]:
            raise UsageError(f"--weights {weights} is a {card['model']} checkpoint (its card says so), "
                             f"not --model {model}")
        _check_mode(card["model"], mode)
        return net, card
    if model is None or not library_name(model):
        raise ModelError(f"{card_path}: checkpoint card missing; a segcli checkpoint is NAME.safetensors beside "
                         "NAME.json, and a torchvision state dict (.pth/.safetensors) needs --model tv_* "
                         "to say what it is")
    _check_mode(model, mode)
    net = build_model(model, weights=str(weights)).to(device).eval()
    return net, _library_card(model, net, mode, source=str(weights))


def _library_model(mode: str, model: str, device) -> tuple[torch.nn.Module, dict]:
    _check_mode(model, mode)
    if not library_name(model):
        raise ModelError(f"{model} has no pretrained weights of its own: train it (segcli train --model {model} ...) "
                         "and pass --weights runs/.../best.safetensors")
    files = fetch_weights(model)
    net = build_model(model).to(device).eval()
    return net, _library_card(model, net, mode, source=", ".join(str(f) for f in files))


def _library_card(name: str, net, mode: str, source: str) -> dict:
    names = list(net.class_names)
    things = [i > 0 and not n.startswith("__") for i, n in enumerate(names)]
    space = LabelSpace(names, isthing=things, category_ids=list(range(len(names))))
    card = make_card(name, {}, mode, space, weights=source)
    card["normalization"] = {"mean": list(net.mean), "std": list(net.std)}
    return card
