"""compare measures the models it is given: a constant model scores what a constant prediction scores and no more,
trained approaches beat it, --weights NAME=FILE skips training NAME, --budget-steps sets the steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segcli.checkpoint import make_card, read_card, save_checkpoint
from segcli.cli import app
from segcli.data import load_dataset
from segcli.data.synth import synth_label_space
from segcli.metrics import score_predictions
from segcli.models.registry import build_model
from segcli.structures import Prediction

runner = CliRunner()


def _constant_checkpoint(path, label: int):
    """An FCN whose last layer ignores its input: every pixel gets `label`."""
    space = synth_label_space("context")
    args = {"num_classes": space.num_classes, "width": 4}
    model = build_model("fcn", **args)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == space.num_classes]
    with torch.no_grad():
        for conv in last:
            conv.weight.zero_()
            if conv.bias is not None:
                conv.bias.zero_()
        last[-1].bias[label] = 10.0
    return save_checkpoint(path, model, make_card("fcn", args, "semantic", space))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-checks")
    constant = _constant_checkpoint(out / "constant" / "fcn", label=0)
    result = runner.invoke(app, ["compare", "--quick", "--approaches", "fcn,unet", "--weights", f"fcn={constant}",
                                 "--budget-steps", "30", "--sizes", "32", "--out", str(out / "run"), "--device", "cpu",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "run", json.loads((out / "run" / "results.json").read_text())


def test_a_constant_model_scores_exactly_a_constant_prediction(run):
    out, results = run
    constant = results["approaches"]["fcn"]
    assert constant["train_seconds"] == 0.0 and not (out / "runs" / "fcn").exists()  # loaded, not trained
    space = synth_label_space("context")
    val = load_dataset(out / "data", "auto", "val", seed=0)
    samples = [val[i] for i in range(len(val))]
    assert len(samples) == results["val_images"]
    predictions = [Prediction(semantic=np.zeros(s.semantic.shape, np.uint8)) for s in samples]
    expected = score_predictions(list(zip(samples, predictions)), "semantic", space)
    assert constant["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert [row["iou"] for row in constant["per_class"]] == pytest.approx([row["iou"] for row in expected["per_class"]])


def test_a_trained_approach_beats_the_constant_model(run):
    out, results = run
    unet, constant = results["approaches"]["unet"], results["approaches"]["fcn"]
    assert read_card(out / "runs" / "unet" / "last")["step"] == 30  # --budget-steps
    assert unet["miou"] > constant["miou"] + 0.05
    assert unet["boundary_f1"] > constant["boundary_f1"]


def test_weights_for_an_approach_not_compared_is_refused(tmp_path):
    constant = _constant_checkpoint(tmp_path / "fcn", label=0)
    result = runner.invoke(app, ["compare", "--quick", "--approaches", "unet", "--weights", f"fcn={constant}",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--weights fcn" in result.stderr
