"""Pretrained weights for the zoo's builders: a file the user names, or torch's hub cache. Never the network.

Builders call `pretrained_state_dict(weights_enum, weights_file)`: the user's file (not hash-checked:
it may be their own fine-tuned state dict) or the hub cache (`segcli.hub.cached_file`, hash-checked).
The services fetch first: `required_weights(model, args)` lists what a build will read from the cache.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segcli import hub
from segcli.errors import ModelError
from segcli.state_dict import load_state_dict


def hub_checkpoint_path(url: str) -> Path:
    return hub.cache_dir() / Path(url).name


def library_name(model: str) -> str | None:
    """The torchvision model behind a zoo name (`tv_maskrcnn_resnet50_fpn_v2` -> `maskrcnn_resnet50_fpn_v2`)."""
    return model[3:] if model.startswith("tv_") else None


def required_weights(model: str, args: dict) -> list:
    """The library weights that building `model` with `args` reads from the cache (what to fetch first)."""
    needed = []
    if library_name(model) and args.get("pretrained", True) and not args.get("weights"):
        needed.append(hub.torchvision_weights(library_name(model)))
    if args.get("encoder") and args.get("encoder_weights", "imagenet") == "imagenet":
        needed.append(hub.torchvision_weights(args["encoder"]))
    return needed


def pretrained_state_dict(weights_enum, weights_file: str | Path | None = None, *,
                          model: str | None = None) -> dict[str, torch.Tensor]:
    """torchvision weights from `weights_file`, else from the hub cache; a clear error when neither exists."""
    if weights_file is not None:
        return load_state_dict(Path(weights_file))
    return load_state_dict(hub.cached_file(weights_enum, model=model))


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """Strict load with a message that names the first missing and unexpected keys (`assign`: take the tensors
    themselves, for a model built on the meta device)."""
    try:
        result = model.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as error:  # shapes differ: another width or class count
        first = str(error).split("\n\t")[1] if "\n\t" in str(error) else str(error)
        raise ModelError(f"{source}: weights do not fit this model ({first.strip()})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{source}: weights do not fit this model (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}); check that the file belongs to this model and class count"
        )
