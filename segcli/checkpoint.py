"""Checkpoints: `NAME.safetensors` (weights only) beside `NAME.json` (the card).

The card says how to rebuild the model (`model`, `model_args`), what it predicts (`mode`,
`label_space`), how to feed it (`normalization`, `intensity`, `scale`, `img_size`) and where it came from (`command`,
`data`, `metrics`, `segcli_version`). Loading never unpickles anything.

Training state for `--resume` follows the same rule: tensors (weights, optimizer moments, RNG states) in
`NAME.state.safetensors`, everything else (steps, scheduler, optimizer hyper-parameters) in that file's metadata
and, readable, in `NAME.state.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from segcli import io
from segcli._version import __version__
from segcli.errors import ModelError
from segcli.state_dict import read_safetensors
from segcli.structures import LabelSpace

STATE_METADATA = "segcli_training_state"  # the metadata key of a training state's plain values


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, card) for a stem, a .safetensors path or a .json path."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def make_card(model_name: str, model_args: dict, mode: str, label_space: LabelSpace, **extra) -> dict:
    """A card with the required keys; `extra` adds normalization, img_size, command, data, metrics, ..."""
    from segcli.preprocess import IMAGENET_MEAN, IMAGENET_STD

    card = {
        "segcli_version": __version__,
        "model": model_name,
        "model_args": model_args,
        "mode": mode,
        "label_space": label_space.to_dict(),
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "intensity": io.DEFAULT_SCALING.to_dict(),  # how 16-bit and float images were scaled to 0..255
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    card.update(extra)
    return card


def save_checkpoint(stem: str | Path, model: nn.Module, card: dict) -> Path:
    """Write weights then card, each atomically; returns the weights path."""
    weights, card_path = checkpoint_paths(stem)
    model = getattr(model, "module", model)  # DistributedDataParallel wraps the real model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with io.atomic_path(weights) as tmp:
        save_file(_unshare(state), str(tmp), metadata={"model": card["model"], "segcli_version": __version__})
    io.write_json(card_path, card, indent=2)
    return weights


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; tied weights are stored twice."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        out[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


def check_weights_path(path: str | Path) -> None:
    """A --weights that names a folder, or nothing at all, said as such (not as "NAME.json: card missing")."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.safetensors") if not p.name.endswith(".state.safetensors"))
        raise ModelError(f"{path}: a folder, not a checkpoint; name the .safetensors file in it"
                         + (f" (it holds {', '.join(found[:3])})" if found else ""))
    if not path.exists() and not any(p.exists() for p in checkpoint_paths(path)):
        raise ModelError(f"{path}: no such file")


def read_card(path: str | Path) -> dict:
    check_weights_path(path)
    _, card_path = checkpoint_paths(path)
    if not card_path.is_file():
        raise ModelError(f"{card_path}: checkpoint card missing; "
                         "a segcli checkpoint is NAME.safetensors beside NAME.json")
    card = io.read_json(card_path)
    for key in ("model", "model_args", "mode", "label_space"):
        if not isinstance(card, dict) or key not in card:
            raise ModelError(f"{card_path}: not a segcli checkpoint card (no {key!r})")
    try:
        names = LabelSpace.from_dict(card["label_space"]).names
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"{card_path}: the card's label_space is not readable ({error!r})") from None
    declared = card["model_args"].get("num_classes") if isinstance(card["model_args"], dict) else None
    if declared is not None and declared != len(names):
        raise ModelError(f"{card_path}: the card names {len(names)} classes but its model_args build {declared}; "
                         "the card does not belong to these weights")
    return card


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from its card and load its weights strictly."""
    from segcli.models.registry import build_model

    weights, _ = checkpoint_paths(path)
    card = read_card(path)
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file missing beside its card")
    try:
        model = build_model(card["model"], **_builder_args(card))
    except (TypeError, ValueError) as error:  # model_args the builder does not take, or cannot build
        raise ModelError(f"{checkpoint_paths(path)[1]}: the card's model_args {card['model_args']} do not build "
                         f"{card['model']} ({error})") from None
    state = read_safetensors(weights)
    from segcli.models.pretrained import load_into

    load_into(model, state, f"{weights} ({card['model']} {card['model_args']})")
    return model.to(device).eval(), card


def _builder_args(card: dict) -> dict:
    """The card's builder arguments, minus every source of starting weights: the checkpoint carries them."""
    args = {k: v for k, v in card["model_args"].items() if k != "weights"}
    if "pretrained" in args or card["model"].startswith("tv_"):
        args["pretrained"] = False
    if args.get("encoder"):
        args["encoder_weights"] = "none"  # (None would be dropped by build_model and mean the default)
    return args


def card_channels(card: dict | None) -> io.Channels:
    """The image channels a checkpoint takes: those training picked (train --channels), and how many."""
    channels = (card or {}).get("channels") or {}
    picked = channels.get("picked")
    return io.Channels(tuple(picked) if picked is not None else None, int(channels.get("count", 3)))


def card_scaling(card: dict | None) -> io.IntensityScaling:
    """The intensity scaling a checkpoint was trained with (cards without one: the default)."""
    return io.IntensityScaling.from_dict((card or {}).get("intensity"))


def card_turned(card: dict | None) -> bool:
    """Whether the model was trained on turned and mirrored windows (`--rotate`): its outputs do not depend on the
    image's orientation, so test-time augmentation may average over all eight symmetries of the square."""
    plan = ((card or {}).get("plan") or {}).get("plan") or {}
    return bool(plan.get("rotate"))


def card_label_space(card: dict) -> LabelSpace:
    return LabelSpace.from_dict(card["label_space"])


def card_data_sources(card: dict | None) -> list[dict]:
    """The training data's sources, each {name, licence, url}: the card's `data.sources` (a model trained on several
    datasets), else its `data` itself. A source with no stated licence says "unknown"."""
    data = (card or {}).get("data") or {}
    sources = data.get("sources") or ([data] if data.get("name") or data.get("licence") else [])
    return [{"name": s.get("name") or s.get("path") or "?", "licence": s.get("licence") or "unknown",
             "url": s.get("url")} for s in sources]


def card_licences(card: dict | None) -> str:
    """The training data's licences in one line: "CC0", or "DSB 2018: CC0; MoNuSeg 2018: CC BY-NC-SA 4.0"."""
    sources = card_data_sources(card)
    if len({s["licence"] for s in sources}) <= 1:
        return sources[0]["licence"] if sources else "unknown"
    return "; ".join(f"{s['name']}: {s['licence']}" for s in sources)


def card_pixel_size(card: dict | None) -> float | None:
    """The training data's pixel size in µm (`train --pixel-size`), when the card records one."""
    value = (card or {}).get("pixel_size_um")
    return float(value) if value else None


def circle_diameter(area: float) -> float:
    """The diameter of the circle of this area, px: what a ruler across a round object reads (Cellpose's --diameter)."""
    return 2.0 * math.sqrt(area / math.pi)


def card_object_diameter(card: dict | None) -> float | None:
    """The training objects' median diameter in the training data's pixels, when the card records one. Cards
    written before `object_diameter` existed give it from their plan's fingerprint (median sqrt(area) per class)."""
    value = (card or {}).get("object_diameter")
    if value:
        return float(value)
    fingerprint = ((card or {}).get("plan") or {}).get("fingerprint") or {}
    sides = [v for v in (fingerprint.get("object_diameter") or {}).values() if v]
    return round(circle_diameter(statistics.median(sides) ** 2), 1) if sides else None


# ---------------------------------------------------------------- training state for --resume


def _flatten(prefix: str, value, tensors: dict, plain: dict) -> None:
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous()
    elif isinstance(value, dict):
        plain[prefix] = {"__dict__": [str(k) for k in value], "__int_keys__": all(isinstance(k, int) for k in value)}
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, tensors, plain)
    elif isinstance(value, (list, tuple)):
        plain[prefix] = {"__list__": len(value)}
        for i, v in enumerate(value):
            _flatten(f"{prefix}/{i}", v, tensors, plain)
    else:
        plain[prefix] = value


def _unflatten(prefix: str, tensors: dict, plain: dict):
    if prefix in tensors:
        return tensors[prefix]
    value = plain[prefix]
    if isinstance(value, dict) and "__dict__" in value:
        keys = [int(k) for k in value["__dict__"]] if value["__int_keys__"] else value["__dict__"]
        return {k: _unflatten(f"{prefix}/{k}", tensors, plain) for k in keys}
    if isinstance(value, dict) and "__list__" in value:
        return [_unflatten(f"{prefix}/{i}", tensors, plain) for i in range(value["__list__"])]
    return value


def save_training_state(stem: str | Path, state: dict) -> None:
    """Nested dicts/lists of tensors and plain values, without pickle. The plain values go into the safetensors
    file's metadata as well, so that one atomic file holds the whole state: a kill between the two writes cannot
    pair tensors of one step with the progress of another. NAME.state.json is the readable copy."""
    tensors, plain = {}, {}
    _flatten("state", state, tensors, plain)
    stem = Path(stem)
    with io.atomic_path(stem.with_name(stem.name + ".state.safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={STATE_METADATA: json.dumps(plain)})
    io.write_json(stem.with_name(stem.name + ".state.json"), plain)


def training_state_paths(stem: str | Path) -> tuple[Path, Path]:
    """(tensors, plain values) of a training state, checked to exist: --resume without them is one clear line."""
    stem = Path(stem)
    tensor_path = stem.with_name(stem.name + ".state.safetensors")
    plain_path = stem.with_name(stem.name + ".state.json")
    if not tensor_path.is_file() or not plain_path.is_file():
        raise ModelError(f"{stem}: no training state to resume from ({tensor_path.name} / {plain_path.name} missing)")
    return tensor_path, plain_path


def load_training_state(stem: str | Path) -> dict:
    tensor_path, plain_path = training_state_paths(stem)
    tensors = read_safetensors(tensor_path)
    with safe_open(str(tensor_path), framework="pt") as f:
        embedded = (f.metadata() or {}).get(STATE_METADATA)
    plain = json.loads(embedded) if embedded is not None else io.read_json(plain_path)  # earlier runs: the JSON file
    return _unflatten("state", tensors, plain)
