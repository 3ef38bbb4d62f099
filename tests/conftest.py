"""Shared fixtures: where the real data lives, and tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The suite runs two pytest workers on a 2-core machine: one intra-op thread each.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (it lives in ../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def hub_dir(tmp_path):
    """torch's hub cache redirected to an empty temporary folder (no real weights can leak in)."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """TORCH_HOME pointed at an empty folder (torch.hub.get_dir() then derives the cache from it); online."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("SEGCLI_OFFLINE", "0")  # restored (removed) after the test, also when --offline set it
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """An untrained 3-class U-Net of width 4 saved as a segcli checkpoint (weights + card): fast to load and run."""
    from segcli.checkpoint import make_card, save_checkpoint
    from segcli.models.registry import build_model
    from segcli.structures import LabelSpace

    args = {"num_classes": 3, "width": 4, "depth": 2}
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "ckpt" / "tiny", build_model("unet", **args),
                           make_card("unet", args, "semantic", LabelSpace(["bg", "a", "b"])))


@pytest.fixture
def random_images():
    """A function writing n random size x size RGB PNGs im00.png, im01.png, ... into a folder; returns the folder."""
    def write(folder: Path, n: int, size: int) -> Path:
        from segcli import io

        rng = np.random.default_rng(0)
        for i in range(n):
            io.write_image(folder / f"im{i:02d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        return folder

    return write


@pytest.fixture
def model_inputs(monkeypatch) -> list[tuple[torch.Tensor, object]]:
    """What inference fed the model in this test: (a copy of the batch, the InferenceOptions) of every dense_forward
    call, the one place every command's forward pass goes through."""
    import segcli.inference

    calls = []
    forward = segcli.inference.dense_forward

    def recording(model, batch, options):
        calls.append((batch.clone(), options))
        return forward(model, batch, options)

    monkeypatch.setattr(segcli.inference, "dense_forward", recording)
    return calls
