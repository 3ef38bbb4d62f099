"""`train --ema`: a moving average of the weights is what validation scores and checkpoints hold, and resume
keeps it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import Interrupted, assert_same_weights, interrupt_at_checkpoint
from typer.testing import CliRunner

from segcli.checkpoint import load_checkpoint, load_training_state
from segcli.cli import app
from segcli.data.synth import generate
from segcli.services.train import TrainConfig, train
from segcli.training.ema import ema_model, warmed_decay


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("ema") / "shapes", n=12, size=48, seed=0)


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=data, model="unet", mode="semantic", out=out, steps=6, batch_size=3, img_size=32, width=4, seed=3,
                val_every=3, ema=0.9)
    return TrainConfig(**(base | kw))


def test_the_average_moves_by_the_warmed_up_decay():
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    average = ema_model(model, decay=0.9)
    weights = []
    for value in (1.0, 3.0, 7.0):
        with torch.no_grad():
            model[0].weight.fill_(value)
        model[1].num_batches_tracked.add_(1)
        average.update_parameters(model)
        weights.append(value)
    # The first update copies; then the decay is (1 + n) / (10 + n), capped at 0.9: 2/11, then 3/12.
    expected = 1.0
    for n, value in enumerate(weights[1:], start=1):
        expected = warmed_decay(0.9, n) * expected + (1 - warmed_decay(0.9, n)) * value
    assert warmed_decay(0.9, 1) == pytest.approx(2 / 11) and warmed_decay(0.9, 10_000) == 0.9
    assert average.module[0].weight.item() == pytest.approx(expected)
    assert average.module[1].num_batches_tracked.item() == 3  # integer buffers follow the model


def test_checkpoints_hold_the_average_and_resume_is_exact(shapes, tmp_path):
    straight = train(_config(shapes, tmp_path / "straight"))
    state = load_training_state(straight.out / "last")
    saved = load_file(str(straight.last))
    _, card = load_checkpoint(straight.last)
    assert card["training"]["ema"] == 0.9
    for key, value in saved.items():  # the checkpoint is the average, not the weights the optimiser left
        assert torch.equal(value, state["ema"][f"module.{key}"]), key
    assert any(not torch.equal(value, state["model"][key]) for key, value in saved.items() if value.is_floating_point())

    with pytest.raises(Interrupted):
        train(_config(shapes, tmp_path / "resumed"), callback=interrupt_at_checkpoint(1))
    resumed = train(_config(shapes, tmp_path / "resumed", resume=True))
    assert_same_weights(straight.last, resumed.last)


@pytest.mark.parametrize("decay", ["0", "1", "1.5"])
def test_a_decay_outside_0_1_is_refused(shapes, tmp_path, decay):
    result = CliRunner().invoke(app, ["train", "--data", str(shapes), "--model", "unet", "--steps", "2",
                                      "--ema", decay, "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2 and "--ema" in result.stderr
    assert not (tmp_path / "run").exists()
