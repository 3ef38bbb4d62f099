"""Serving locally made weights as if torchvision published them: file:// URLs named with their hash prefix."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import torch

from segcli import hub


def serve_bytes(folder: Path, stem: str, payload: bytes, *, corrupt: bool = False) -> str:
    """Write `payload` as `<stem>-<sha256 prefix>.pth` in `folder`; its file:// URL. `corrupt`: a wrong prefix."""
    digest = hashlib.sha256(payload).hexdigest()[:8]
    if corrupt:
        digest = format((int(digest, 16) + 1) % 16**8, "08x")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{digest}.pth"
    path.write_bytes(payload)
    return path.as_uri()


def serve_state_dict(folder: Path, stem: str, state: dict) -> str:
    scratch = folder / f"{stem}.scratch"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, scratch)
    url = serve_bytes(folder, stem, scratch.read_bytes())
    scratch.unlink()
    return url


def serve_torchvision(monkeypatch, folder: Path, name: str, state: dict) -> SimpleNamespace:
    """Make torchvision's weights of model `name` point at `state`, served from `folder` (meta and transforms kept)."""
    real = hub.torchvision_weights(name)
    fake = SimpleNamespace(url=serve_state_dict(folder, name, state), meta=real.meta, transforms=real.transforms)
    original = hub.torchvision_weights
    monkeypatch.setattr(hub, "torchvision_weights", lambda n: fake if n == name else original(n))
    return fake

