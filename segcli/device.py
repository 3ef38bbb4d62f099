"""Device and thread choice, resolved in one place for every command."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from segcli.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
_DEVICE_NAME = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def check_device_name(name: str) -> str:
    """`--device` as written: auto, cpu, cuda, cuda:N or mps (lower-cased); anything else is a usage error.

    Checked by every command before any work, also by those that run on the CPU whatever is asked."""
    name = (name or "auto").lower()
    if not _DEVICE_NAME.fullmatch(name):
        raise UsageError(f"--device {name!r}: choose one of {', '.join(DEVICES)} (or cuda:N)")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """Turn `auto|cpu|cuda|mps` (or `cuda:1`) into a torch.device that exists here."""
    import torch

    name = check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible here; use --device cpu or auto")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def configure_threads(threads: int | None = None) -> int:
    """Use every core for intra-op work unless the user (or OMP_NUM_THREADS) says otherwise."""
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()
