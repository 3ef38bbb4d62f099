"""Training options that change a run, each seen to act: --patience, --schedule, --clip, --bf16, --amp,
--val-limit; and export --opset."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from segcli.cli import app
from segcli.data.synth import generate
from segcli.services.train import TrainConfig, train

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("train-options") / "shapes", n=10, size=32, seed=0)


def _run(shapes, out, **options):
    """Train a width-4 U-Net; returns (result, step events, validation events)."""
    events: dict[str, list] = {"step": [], "validation": [], "stop": []}
    base = dict(data=shapes, model="unet", mode="semantic", batch_size=2, img_size=32, width=4, seed=0, out=out)
    result = train(TrainConfig(**(base | options)),
                   callback=lambda event, **info: events[event].append(info) if event in events else None)
    return result, events


def test_patience_stops_after_that_many_validations_without_improvement(shapes, tmp_path):
    # lr 0: the model never changes, so no validation after the first improves on it.
    result, events = _run(shapes, tmp_path / "run", steps=50, val_every=1, lr=0.0, patience=2)
    assert result.steps == 3 and len(events["validation"]) == 3 and len(events["stop"]) == 1
    unlimited, _ = _run(shapes, tmp_path / "run2", steps=6, val_every=1, lr=0.0)
    assert unlimited.steps == 6


@pytest.mark.parametrize("schedule", ["poly", "cosine"])
def test_schedule_shapes_the_learning_rate(shapes, tmp_path, schedule):
    _, events = _run(shapes, tmp_path / schedule, steps=11, val_every=0, lr=1.0, warmup=1, schedule=schedule)
    rates = [e["lr"] for e in events["step"]]  # after step k (1-based): the factor of step k
    progress = [(k - 1) / 10 for k in range(1, 12)]
    expected = [0.5 * (1 + math.cos(math.pi * p)) if schedule == "cosine" else (1 - p) ** 0.9 for p in progress]
    assert rates[1:] == pytest.approx(expected[1:], abs=1e-9)
    assert rates[5] == pytest.approx(0.5 if schedule == "cosine" else 0.5**0.9)


def _change(result, shapes, tmp_path) -> float:
    """How far the weights moved from the initial ones (the same seed builds the same initial model)."""
    torch.manual_seed(0)
    from segcli.models.registry import build_model

    start = build_model("unet", num_classes=6, width=4).state_dict()
    end = load_file(str(result.last))
    return sum(float((end[k].float() - start[k].float()).abs().sum()) for k in start if start[k].is_floating_point()
               and "running" not in k)


def test_clip_bounds_the_update(shapes, tmp_path):
    free, _ = _run(shapes, tmp_path / "free", steps=2, val_every=0, clip=0.0, warmup=0, lr=1e-2)
    clipped, _ = _run(shapes, tmp_path / "clipped", steps=2, val_every=0, clip=1e-12, warmup=0, lr=1e-2)
    # A gradient norm of 1e-12 is far below AdamW's eps: the clipped steps barely move the weights.
    assert _change(clipped, shapes, tmp_path) < 0.1 * _change(free, shapes, tmp_path)


def test_bf16_trains_in_bfloat16_and_amp_needs_cuda(shapes, tmp_path):
    _, plain = _run(shapes, tmp_path / "fp32", steps=1, val_every=0)
    _, bf16 = _run(shapes, tmp_path / "bf16", steps=1, val_every=0, bf16=True)
    a, b = plain["step"][0]["loss"], bf16["step"][0]["loss"]
    assert math.isfinite(b) and a != b and b == pytest.approx(a, rel=0.05)  # the same step, rounded to bfloat16
    amp = runner.invoke(app, ["train", "--data", str(shapes), "--model", "unet", "--amp", "--device", "cpu",
                              "--steps", "1", "--out", str(tmp_path / "amp")])
    assert amp.exit_code == 2 and "--amp" in amp.stderr


def test_val_limit_validates_on_that_many_images(shapes, tmp_path, monkeypatch):
    from segcli.training import trainer

    seen = []
    real = trainer.predict_arrays
    monkeypatch.setattr(trainer, "predict_arrays", lambda model, card, images, **kw: seen.append(len(images))
                        or real(model, card, images, **kw))
    _run(shapes, tmp_path / "all", steps=1, val_every=0)
    _run(shapes, tmp_path / "one", steps=1, val_every=0, val_limit=1)
    assert seen[0] > 1 and seen[1] == 1


def test_export_opset_is_the_graphs_opset(tmp_path):
    onnx = pytest.importorskip("onnx")
    from segcli.checkpoint import make_card, save_checkpoint
    from segcli.models.registry import build_model
    from segcli.structures import LabelSpace

    card = make_card("unet", {"num_classes": 2, "width": 4, "depth": 2}, "semantic", LabelSpace(["a", "b"]))
    weights = save_checkpoint(tmp_path / "unet", build_model("unet", num_classes=2, width=4, depth=2), card)
    for opset in (17, 18):
        out = tmp_path / f"m{opset}.onnx"
        result = runner.invoke(app, ["export", "--weights", str(weights), "--format", "onnx", "--opset", str(opset),
                                     "--size", "32", "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        versions = {o.domain: o.version for o in onnx.load(str(out)).opset_import}
        assert versions.get("", versions.get("ai.onnx")) == opset
