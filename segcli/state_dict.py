"""Weights files as state dicts, never unpickling code: safetensors, and torchvision's .pth read with weights_only.

The one reader of tensors from a file: checkpoints (`segcli.checkpoint`), the library weights of the hub cache and
the files users name (`segcli.models.pretrained`) all come through here, so a truncated or foreign file is one clear
`ModelError` wherever it is read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segcli.errors import ModelError


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file; a truncated or foreign file is one clear error, not a SafetensorError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelError(f"{path}: not a readable safetensors file (truncated or corrupt: {error}); "
                         "copy it again or retrain") from None


def load_state_dict(path: str | Path) -> dict:
    """A state dict from .safetensors or a torchvision-style .pth (tensors only: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        return read_safetensors(path)  # a truncated file is one clear error, not a SafetensorError
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]  # torch's message spans many lines
        first = lines[0] if lines else type(error).__name__
        reason = next((line for line in lines if "Unsupported global" in line), first)
        raise ModelError(f"{path}: not a PyTorch state dict that loads without unpickling code ({reason})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state dict (name -> tensor), found {type(state).__name__}")
    return state
