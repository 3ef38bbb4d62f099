"""Training a person can watch: TensorBoard event files by default, --log none and --log mlflow, curves.png."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from segcli.cli import app
from segcli.data.synth import generate
from segcli.services.train import TrainConfig, train
from segcli.training import loggers
from segcli.training.loggers import CurvesPlot


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("logs") / "shapes", n=12, size=48, seed=0)


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=data, model="unet", mode="semantic", out=out, steps=6, val_every=3, batch_size=3, img_size=32,
                width=4, seed=3)
    return TrainConfig(**(base | kw))


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_logs_every_step_each_validation_its_images_and_the_plan(shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "CURVES_GAP", 0)  # validations 3 steps apart: redraw curves.png at each
    seen_curves = []

    def watch(event, **info):  # curves.png is rewritten at each validation, before the checkpoint is reported
        if event == "checkpoint":
            seen_curves.append((tmp_path / "run" / "curves.png").stat().st_mtime_ns)

    result = train(_config(shapes, tmp_path / "run"), callback=watch)
    events = _events(result.out / "tb")
    tags = events.Tags()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert {"train/lr", "train/images_per_s", "val/miou", "val/boundary_f1", "val_iou/sky", "val_dice/triangle"} \
        <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("val/miou")] == [3, 6]
    card = json.loads((result.out / "best.json").read_text())
    assert events.Scalars("val/miou")[-1].value == pytest.approx(json.loads(
        (result.out / "last.json").read_text())["metrics"]["miou"], abs=1e-6)
    assert len(tags["images"]) == 3  # the three validation images, each with prediction and ground truth
    picture = events.Images(tags["images"][0])
    assert [p.step for p in picture] == [3, 6] and picture[0].width >= 2 * 160
    assert {"plan/text_summary", "card/text_summary"} <= set(tags["tensors"])
    assert card["model"] == "unet"
    assert len(seen_curves) == 2 and seen_curves[0] < seen_curves[1]
    curves = cv2.imread(str(result.out / "curves.png"))
    assert curves is not None and curves.shape[1] > 800 and curves.std() > 10
    log = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_loss"] > 0 for r in log)


def test_log_none_writes_no_event_files_but_the_curves(shapes, tmp_path):
    out = tmp_path / "run"
    done = CliRunner().invoke(app, ["train", "--data", str(shapes), "--model", "unet", "--steps", "3", "--batch-size",
                                    "3", "--img-size", "32", "--width", "4", "--log", "none", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert not (out / "tb").exists() and (out / "curves.png").is_file()


def test_an_unknown_log_is_refused_before_training(shapes, tmp_path):
    done = CliRunner().invoke(app, ["train", "--data", str(shapes), "--model", "unet", "--log", "wandb",
                                    "--out", str(tmp_path / "run")])
    assert done.exit_code == 2 and "--log 'wandb'" in done.output
    assert not (tmp_path / "run").exists()


def test_mlflow_logs_to_the_tracking_uri_with_checkpoint_and_card(shapes, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'segcli[mlflow]')")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "server").as_uri())
    result = train(_config(shapes, tmp_path / "run", log="mlflow"))
    record = json.loads((result.out / "mlflow.json").read_text())
    client = mlflow.tracking.MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["model"] == "unet"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert "val_iou/sky" in run.data.metrics and "val_boundary_f1/sky" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best.safetensors", "best.json", "curves.png", "plan.md", "card.md"} <= artifacts
    assert not (result.out / "tb").exists()


def test_mlflow_defaults_to_a_local_mlruns_store(shapes, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'segcli[mlflow]')")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = train(_config(shapes, tmp_path / "run", log="tensorboard,mlflow", steps=3))
    record = json.loads((result.out / "mlflow.json").read_text())
    assert record["tracking_uri"] == (tmp_path / "mlruns").as_uri()
    assert any((tmp_path / "mlruns").rglob("best.safetensors")) and (result.out / "tb").is_dir()


def test_resumed_curves_start_from_the_earlier_validations(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 3, "seconds": 2.0, "lr": 1e-3, "train_loss": 1.5, "miou": 0.2},
        {"step": 6, "seconds": 4.0, "lr": 5e-4, "train_loss": 1.1, "miou": 0.4}]) + "\n")
    curves = CurvesPlot(tmp_path, {"mode": "semantic"})
    curves("start", resumed_at=6)
    curves("step", step=7, seconds=5.0, loss=0.9, lr=4e-4)
    curves("validation", step=7, seconds=5.5, metrics={"miou": 0.5})
    history = curves.history
    assert history.val_steps == [3, 6, 7] and history.val_scores == [0.2, 0.4, 0.5]
    assert history.steps == [3, 6, 7] and history.losses == [1.5, 1.1, 0.9]
    assert cv2.imread(str(tmp_path / "curves.png")) is not None


def test_a_validation_without_a_score_leaves_a_gap_not_a_crash(tmp_path):
    curves = CurvesPlot(tmp_path, {"mode": "instance"})
    curves("step", step=1, seconds=0.5, loss=2.0, lr=1e-3)
    curves("validation", step=1, seconds=1.0, metrics={"ap": None})
    image = cv2.imread(str(tmp_path / "curves.png"))
    assert image is not None and np.asarray(image).std() > 5


def test_curves_close_together_are_drawn_at_the_next_chance_or_at_the_end(tmp_path):
    curves = CurvesPlot(tmp_path, {"mode": "semantic"})
    curves("step", step=1, seconds=0.5, loss=2.0, lr=1e-3)
    curves("validation", step=1, seconds=1.0, metrics={"miou": 0.1})
    first = (tmp_path / "curves.png").stat().st_mtime_ns
    curves("validation", step=2, seconds=1.1, metrics={"miou": 0.2})  # well within 200x the drawing's cost
    assert (tmp_path / "curves.png").stat().st_mtime_ns == first and curves._pending
    curves.close()
    assert (tmp_path / "curves.png").stat().st_mtime_ns > first and not curves._pending
