"""Real images at their own resolution: 16-bit and float intensities, crops, scale, plans, time budgets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from segcli import io
from segcli.checkpoint import make_card, read_card, save_checkpoint
from segcli.data.synth import synth_label_space
from segcli.models.registry import build_model
from segcli.services.predict import PredictConfig, predict


def _twelve_bit(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A 12-bit grey image (0..4095) with dark background, bright blobs and a gradient between."""
    image = np.zeros((size, size), np.float64)
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in rng.integers(8, size - 8, (6, 2)):
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
    image = image / image.max() * 4095
    return np.round(image).astype(np.uint16)


def test_a_twelve_bit_image_keeps_its_contrast_when_read(tmp_path, rng):
    raw = _twelve_bit(rng)
    cv2.imencode(".png", raw)[1].tofile(str(tmp_path / "deep.png"))
    image = io.read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert image.min() == 0 and image.max() == 255  # the whole 8-bit range, not 0..15 (the top 8 bits)
    expected = np.clip(raw.astype(np.float64) / np.percentile(raw, 99.9), 0, 1) * 255
    assert np.abs(image[..., 0] - expected).max() <= 2  # a linear stretch: order and proportions kept

    floats = (raw / 4095.0 * 0.01).astype(np.float32)  # a float image in a small range
    assert io.to_uint8(floats).max() == 255 and np.abs(io.to_uint8(floats).astype(int) - image[..., 0]).max() <= 2
    assert io.to_uint8(np.full((4, 4), 7, np.uint16)).max() == 0  # flat: nothing to stretch, no division by zero


def test_a_twelve_bit_image_keeps_its_contrast_through_predict(tmp_path, rng, monkeypatch):
    """What the model sees of a 12-bit image is what it sees of the same picture in 8 bits, not a black frame."""
    import segcli.inference

    seen = []
    forward = segcli.inference.dense_forward
    monkeypatch.setattr(segcli.inference, "dense_forward", lambda model, batch, options: seen.append(batch.clone()) or
                        forward(model, batch, options))
    space = synth_label_space("shapes")
    model = build_model("unet", num_classes=space.num_classes, width=4)
    save_checkpoint(tmp_path / "net", model, make_card("unet", {"num_classes": space.num_classes, "width": 4},
                                                       "semantic", space))
    assert read_card(tmp_path / "net")["intensity"]["low"] == 0.1  # the card says how images are scaled
    raw = _twelve_bit(rng)
    eight = np.round(np.clip(raw / np.percentile(raw, 99.9), 0, 1) * 255).astype(np.uint8)
    for name, image in (("a_eight", eight), ("b_twelve", raw)):
        cv2.imencode(".png", image)[1].tofile(str(tmp_path / f"{name}.png"))
    predict(PredictConfig(inputs=[str(tmp_path / "a_eight.png"), str(tmp_path / "b_twelve.png")], mode="semantic",
                          weights=tmp_path / "net.safetensors", out=tmp_path / "out", overlay=False, device="cpu"))
    assert len(seen) == 2
    eight_in, twelve_in = seen
    assert (eight_in - twelve_in).abs().max() < 0.05  # normalised units: within a grey level or so
    assert twelve_in.std() > 0.5 * eight_in.std() > 0
    labels = [io.read_label_png(tmp_path / "out" / "semantic" / f"{name}.png") for name in ("a_eight", "b_twelve")]
    assert (labels[0] == labels[1]).mean() > 0.99
