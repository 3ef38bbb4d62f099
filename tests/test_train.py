"""Training: checkpoints, resume equal to an uninterrupted run, refusals, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_helpers import Interrupted, assert_same_weights, interrupt_at_checkpoint
from typer.testing import CliRunner

from segcli.checkpoint import load_checkpoint
from segcli.cli import app
from segcli.data.synth import generate
from segcli.errors import ModelError
from segcli.services.train import TrainConfig, train


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("train") / "shapes", n=12, size=48, seed=0)


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=data, model="unet", mode="semantic", out=out, epochs=2, batch_size=3, img_size=32, width=4, seed=3)
    return TrainConfig(**(base | kw))


def test_training_writes_loadable_checkpoints_with_cards(shapes, tmp_path):
    events = []
    result = train(_config(shapes, tmp_path / "run", val_every=3), callback=lambda event, **info: events.append(event))
    assert result.steps == 2 * (9 // 3) and result.train_images == 9 and result.val_images == 3
    model, card = load_checkpoint(result.best)
    assert card["model"] == "unet" and card["mode"] == "semantic" and card["data"]["fingerprint"]
    assert card["label_space"]["names"][:3] == ["sky", "ground", "water"] and "miou" in card["metrics"]
    assert events[:2] == ["plan", "start"] and events.count("validation") == 2 and events[-1] == "done"
    log = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6] and all("miou" in r and r["seconds"] >= 0 for r in log)
    spent = [r["validation_seconds"] for r in log]  # cumulative: the share of the run spent validating
    assert 0 < spent[0] <= spent[1] <= log[-1]["seconds"] + 0.05


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(shapes, tmp_path):
    straight = train(_config(shapes, tmp_path / "straight"))
    with pytest.raises(Interrupted):
        train(_config(shapes, tmp_path / "resumed"), callback=interrupt_at_checkpoint(1))
    resumed = train(_config(shapes, tmp_path / "resumed", resume=True))
    assert_same_weights(straight.last, resumed.last)


def test_resume_is_exact_whatever_file_a_kill_left_half_updated(shapes, tmp_path):
    """A kill -9 between the files of one save: last's weights a save ahead of the state (killed after writing
    last.safetensors), or the state's JSON a save behind its tensors (killed between the two state files)."""
    straight = train(_config(shapes, tmp_path / "straight", val_every=2))
    run = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train(_config(shapes, run, val_every=2), callback=interrupt_at_checkpoint(1))
    stale_json = (run / "last.state.json").read_text()
    with pytest.raises(Interrupted):
        train(_config(shapes, run, val_every=2, resume=True), callback=interrupt_at_checkpoint(1))
    (run / "last.state.json").write_text(stale_json)  # the readable copy is one save behind the tensors
    weights = load_file(str(run / "last.safetensors"))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}, str(run / "last.safetensors"))
    resumed = train(_config(shapes, run, val_every=2, resume=True))  # last's weights are not the state's
    assert_same_weights(straight.last, resumed.last)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_from_a_mid_epoch_save_replays_the_rest_of_that_epoch(shapes, tmp_path, workers):
    # 9 images in batches of 3: 3 steps per epoch; --val-every 2 saves after step 2, in the middle of epoch 1.
    options = dict(val_every=2, workers=workers)
    straight = train(_config(shapes, tmp_path / "straight", **options))
    with pytest.raises(Interrupted):
        train(_config(shapes, tmp_path / "resumed", **options), callback=interrupt_at_checkpoint(1))
    card = json.loads((tmp_path / "resumed" / "last.json").read_text())
    assert card["step"] == 2 and card["epoch"] == pytest.approx(2 / 3, abs=1e-3)
    resumed = train(_config(shapes, tmp_path / "resumed", resume=True, **options))
    assert resumed.steps == straight.steps == 6
    assert_same_weights(straight.last, resumed.last)


def test_same_seed_same_run_other_seed_differs(shapes, tmp_path):
    one = load_file(str(train(_config(shapes, tmp_path / "a", epochs=1)).last))
    two = load_file(str(train(_config(shapes, tmp_path / "b", epochs=1)).last))
    three = load_file(str(train(_config(shapes, tmp_path / "c", epochs=1, seed=4)).last))
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not all(torch.equal(one[k], three[k]) for k in one)


def test_models_that_cannot_do_the_mode_are_refused(shapes, tmp_path):
    with pytest.raises(ModelError, match="cannot do --mode panoptic"):
        train(_config(shapes, tmp_path / "x", mode="panoptic"))


def test_cli_train_and_bad_data(shapes, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(shapes), "--model", "fullres", "--steps", "2",
                                 "--batch-size", "2", "--img-size", "32", "--width", "4",
                                 "--out", str(tmp_path / "cli"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "validation" not in result.output  # --quiet: no progress, no tables
    assert (tmp_path / "cli" / "best.safetensors").is_file() and (tmp_path / "cli" / "best.json").is_file()
    missing = runner.invoke(app, ["train", "--data", str(tmp_path / "nothing"), "--model", "unet"])
    assert missing.exit_code == 2 and "nothing" in missing.output


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 2 workers on a machine torch thinks fits 1
def test_the_number_of_workers_does_not_change_the_run(shapes, tmp_path):
    # Each sample's augmentation is seeded by its place in the epoch, not by the process that loads it.
    main = load_file(str(train(_config(shapes, tmp_path / "w0", workers=0)).last))
    two = load_file(str(train(_config(shapes, tmp_path / "w2", workers=2)).last))
    assert all(torch.equal(main[k], two[k]) for k in main)

