"""One path for pretrained weights: a file the user names, or torch's hub cache. Never the network.

torchvision stores downloads as `<torch hub dir>/checkpoints/<file name of the URL>`, and the file
name carries the first hex digits of the file's SHA-256 (`fcn_resnet50_coco-1167a1af.pth`); the
cache lookup checks that prefix as torch.hub does on download. A file given with `--weights` is
the user's own (possibly fine-tuned) and is not hash-checked.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from segcli.errors import ModelError

HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX


def hub_checkpoint_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _check_hash(path: Path) -> None:
    match = HASH_IN_NAME.search(path.name)
    if not match:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise ModelError(
            f"{path}: SHA-256 {digest[:12]}... does not match the {match.group(1)} in its name; "
            "the file is corrupt or not the one torchvision publishes: delete it and fetch it again"
        )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torchvision-style .pth (tensors only: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelError(f"{path}: not a PyTorch state dict that loads without unpickling code ({error})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict (name -> tensor), found {type(state).__name__}")
    return state


def pretrained_state_dict(weights_enum, weights_file: str | Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision weights from `weights_file`, else from the hub cache; a clear error when neither exists."""
    if weights_file is not None:
        return load_state_dict(Path(weights_file))
    path = hub_checkpoint_path(weights_enum.url)
    if not path.is_file():
        raise ModelError(
            f"pretrained weights {path.name} are not on this machine. segcli never downloads at run time: "
            f"fetch {weights_enum.url} and save it as {path} (or pass --weights FILE); "
            f"`python -c \"import torchvision; torchvision.models.get_weight('{weights_enum}').get_state_dict()\"` does it where there is a network"
        )
    _check_hash(path)
    return load_state_dict(path)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a message that names the first missing and unexpected keys."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes differ: another width or class count
        first = str(error).split("\n\t")[1] if "\n\t" in str(error) else str(error)
        raise ModelError(f"{source}: weights do not fit this model ({first.strip()})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{source}: weights do not fit this model (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}); "
            "check that the file belongs to this model and class count"
        )
