"""What a training run logs for a person to watch: TensorBoard event files, an MLflow run, and OUT/curves.png.

Each logger is a Trainer callback, `logger(event, **info)`, plus `close()`; the Trainer itself never writes a log.
They log every step's loss terms, learning rate and images per second, and at each validation the metrics (overall
and per class) and the first validation images with their predictions drawn beside the ground truth. The service
creates them on rank 0 only, so under torchrun one process logs.

    --log tensorboard (default)  OUT/tb/events.out.tfevents.*   (tensorboard --logdir OUT/tb)
    --log mlflow                 a run in MLFLOW_TRACKING_URI, else ./mlruns; checkpoint and card as artifacts
    --log none                   neither (metrics.jsonl and curves.png are written whatever --log says)
"""

from __future__ import annotations

import json
import math
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from segcli import draw, io
from segcli.checkpoint import card_label_space
from segcli.errors import UsageError
from segcli.outputs import prediction_labels, sample_labels
from segcli.plots import History, training_curves
from segcli.structures import LabelMap, LabelSpace, Sample

LOG_CHOICES = ("tensorboard", "mlflow", "none")
EXAMPLE_SIDE = 320  # longest side of each panel of the logged validation pictures (event files stay small)
MIN_EXAMPLE_SIDE = 160  # ...and smaller images are enlarged (whole times, nearest neighbour) to at least this
CURVES_GAP = 200  # curves.png is redrawn once at least this many times its drawing's cost has passed (<= 0.5%)
MLFLOW_STORE = Path("mlruns")  # MLflow's own default: `mlflow ui` run from the same folder finds the runs


def parse_log(text: str) -> tuple[str, ...]:
    """"tensorboard", "mlflow", "tensorboard,mlflow" or "none" -> the loggers to start."""
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [part for part in chosen if part not in LOG_CHOICES]
    if unknown or not chosen or ("none" in chosen and len(chosen) > 1):
        raise UsageError(f"--log {text!r}: choose tensorboard, mlflow, both (tensorboard,mlflow) or none")
    return () if chosen == ("none",) else chosen


def check_log(text: str) -> None:
    """Refuse --log before training starts: an unknown name, or MLflow without its package."""
    if "mlflow" in parse_log(text):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise UsageError("--log mlflow needs MLflow: pip install 'segcli[mlflow]'") from None


def make_loggers(log: str, out: Path, card: dict, plan: dict) -> list:
    """The loggers --log asks for, and the curves.png writer (always)."""
    chosen = parse_log(log)
    loggers: list = [CurvesPlot(out, card)]
    if "tensorboard" in chosen:
        loggers.append(TensorBoardLogger(out / "tb", card, plan))
    if "mlflow" in chosen:
        loggers.append(MLflowLogger(out, card, plan))
    return loggers


def example_picture(sample: Sample, prediction, mode: str, space: LabelSpace) -> np.ndarray:
    """One validation image: the prediction drawn on it beside the ground truth, with the legend of both."""
    image = draw.thumbnail(draw.display_rgb(sample.image), EXAMPLE_SIDE)  # any channel count (train --channels)
    times = -(-MIN_EXAMPLE_SIDE // max(image.shape[:2]))
    if times > 1:
        image = np.repeat(np.repeat(image, times, 0), times, 1)
    predicted = _resized(prediction_labels(prediction, mode, sample.image.shape[:2]), image.shape[:2])
    truth = _resized(sample_labels(sample, mode), image.shape[:2])
    panels = [draw.overlay_labels(image, labels, space) for labels in (predicted, truth)]
    picture = draw.side_by_side(panels, ["prediction", "ground truth"])
    rows = draw.legend_rows(predicted, space) + [r for r in draw.legend_rows(truth, space)
                                                  if r not in draw.legend_rows(predicted, space)]
    if mode == "instance" or not rows:
        return picture
    return draw.with_legend(picture, [name for name, _ in rows], [color for _, color in rows])


def _resized(labels: LabelMap, shape: tuple[int, int]) -> LabelMap:
    if labels.values.shape == shape:
        return labels
    values = cv2.resize(labels.values.astype(np.int32 if labels.values.dtype != np.uint8 else np.uint8),
                        (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return LabelMap(labels.kind, values, labels.classes, labels.scores, labels.space)


def _scalars(metrics: dict) -> dict[str, dict[str, float]]:
    """Validation metrics by group: overall ("": miou), parts ("_things": pq) and per class ("_iou": sky).
    A group is a TensorBoard section; keys never extend another key (MLflow files them as paths)."""
    groups: dict[str, dict[str, float]] = {"": {}}
    for key, value in metrics.items():
        if _number(value):
            groups[""][key] = float(value)
        elif isinstance(value, dict):
            groups[f"_{key}"] = {k: float(v) for k, v in value.items() if _number(v) and k != "n"}
    for row in metrics.get("per_class", []):
        for key, value in row.items():
            if key not in ("id", "name", "isthing") and _number(value):
                groups.setdefault(f"_{key}", {})[str(row.get("name", row["id"]))] = float(value)
    return groups


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _step_scalars(info: dict) -> dict[str, float]:
    scalars = {"loss": info["loss"], "lr": info["lr"], "images_per_s": info["images_per_s"]}
    if len(info["losses"]) > 1:  # a single term is the loss itself
        scalars |= {f"loss/{name}": value for name, value in info["losses"].items()}
    return scalars


class CurvesPlot:
    """OUT/curves.png, rewritten at each validation; a resumed run starts from the history in metrics.jsonl.
    Validations closer together than CURVES_GAP times the last drawing's cost (a --val-every of a few steps)
    leave the drawing to the next one, or to the end of the run, so that it stays under 0.5% of the run (a 0.15 s
    drawing: at most every 30 s)."""

    def __init__(self, out: Path, card: dict) -> None:
        from segcli.metrics import PRIMARY_METRIC

        self.path = out / "curves.png"
        self.log = out / "metrics.jsonl"
        self.history = History(metric=PRIMARY_METRIC[card["mode"]])
        self._drawn = (-math.inf, 0.0)  # (when the last drawing ended, what it cost), perf_counter seconds
        self._pending = False

    def __call__(self, event: str, **info) -> None:
        history = self.history
        if event == "start" and info.get("resumed_at"):
            self._earlier()
        elif event == "step":
            history.steps.append(info["step"])
            history.seconds.append(info["seconds"])
            history.losses.append(info["loss"])
            history.lrs.append(info["lr"])
        elif event == "validation":
            history.val_steps.append(info["step"])
            history.val_seconds.append(info["seconds"])
            history.val_scores.append(info["metrics"].get(history.metric))
            ended, cost = self._drawn
            self._pending = True
            if time.perf_counter() - ended >= CURVES_GAP * cost:
                self.draw()

    def draw(self) -> None:
        began = time.perf_counter()
        training_curves(self.path, self.history)
        self._drawn, self._pending = (time.perf_counter(), time.perf_counter() - began), False

    def close(self, failed: bool = False) -> None:
        if self._pending:
            self.draw()

    def _earlier(self) -> None:
        """Validations before a resume: their scores, and the mean loss between each (the steps were not kept)."""
        if not self.log.is_file():
            return
        for line in self.log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            self.history.val_steps.append(record["step"])
            self.history.val_seconds.append(record["seconds"])
            self.history.val_scores.append(record.get(self.history.metric))
            if record.get("train_loss") is not None:
                for column, value in (("steps", record["step"]), ("seconds", record["seconds"]),
                                      ("losses", record["train_loss"]), ("lrs", record["lr"])):
                    getattr(self.history, column).append(value)



class _Logger(ABC):
    """Routes trainer events to a backend's scalar, image and text writers."""

    def __init__(self, card: dict, plan: dict) -> None:
        self.card, self.plan = card, plan
        self.mode = card["mode"]
        self.space = card_label_space(card)

    def __call__(self, event: str, **info) -> None:
        if event == "start":
            self.text("plan", "```json\n" + json.dumps(self.plan, indent=2) + "\n```", info.get("resumed_at", 0))
            self.text("card", "```json\n" + json.dumps(self.card, indent=2, default=str) + "\n```",
                      info.get("resumed_at", 0))
        elif event == "step":
            self.scalars("train", _step_scalars(info), info["step"])
        elif event == "validation":
            for suffix, values in _scalars(info["metrics"]).items():
                self.scalars("val" + suffix, values, info["step"])
            for number, (sample, prediction) in enumerate(info.get("examples", [])):
                self.image(f"val_images/{number}_{sample.name}",
                           example_picture(sample, prediction, self.mode, self.space), info["step"])

    @abstractmethod
    def scalars(self, group: str, values: dict[str, float], step: int) -> None: ...

    @abstractmethod
    def image(self, tag: str, picture: np.ndarray, step: int) -> None: ...

    @abstractmethod
    def text(self, tag: str, markdown: str, step: int) -> None: ...

    @abstractmethod
    def close(self, failed: bool = False) -> None: ...


class TensorBoardLogger(_Logger):
    """Event files in `folder` (tensorboard --logdir it); a resumed run appends a new file to the same folder."""

    def __init__(self, folder: Path, card: dict, plan: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(card, plan)
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=30)

    def scalars(self, group: str, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{group}/{name}", value, step)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        # The Summary add_image builds, with the PNG from OpenCV: add_image resamples every picture (LANCZOS, at
        # scale 1) and encodes with PIL, which made the pictures a third of a validation's logging here.
        from tensorboard.compat.proto.summary_pb2 import Summary

        encoded = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1]
        encoded = encoded.tobytes()
        image = Summary.Image(height=picture.shape[0], width=picture.shape[1], colorspace=3,
                              encoded_image_string=encoded)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        self.writer.add_text(tag, markdown, step)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class MLflowLogger(_Logger):
    """One MLflow run per run folder (a resumed run continues it: OUT/mlflow.json keeps its id), in the server of
    MLFLOW_TRACKING_URI or else the local store ./mlruns, experiment MLFLOW_EXPERIMENT_NAME (default "segcli").
    Metrics are sent without waiting (MLflow's async logging); the best checkpoint, its card, the plan and
    curves.png go up as artifacts when the run ends. A client object, not mlflow's global state: the
    caller's own MLflow runs are left alone."""

    def __init__(self, out: Path, card: dict, plan: dict) -> None:
        from mlflow.tracking import MlflowClient

        super().__init__(card, plan)
        self.out = out
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 refuses its file store unless asked: the local mlruns/ folder is what was asked for here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = MLFLOW_STORE.resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        record = out / "mlflow.json"
        previous = io.read_json(record).get("run_id") if record.is_file() else None
        if previous is not None:
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
        else:
            self.run_id = self.client.create_run(self._experiment(), run_name=out.name).info.run_id
            training = card.get("training", {})
            for key, value in training.items():
                if value is not None:
                    self.client.log_param(self.run_id, key, str(value)[:500])
        io.write_json(record, {"tracking_uri": uri, "run_id": self.run_id}, indent=2)

    def _experiment(self) -> str:
        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            return os.environ["MLFLOW_EXPERIMENT_ID"]
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "segcli"
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def scalars(self, group: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{group}/{_mlflow_name(k)}", v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=False)

    def image(self, tag: str, picture: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, picture, f"{_mlflow_name(tag)}/step_{step:07d}.png")

    def text(self, tag: str, markdown: str, step: int) -> None:
        self.client.log_text(self.run_id, markdown, f"{tag}.md")

    def close(self, failed: bool = False) -> None:
        for name in ("best.safetensors", "best.json", "plan.json", "curves.png", "metrics.jsonl"):
            if (self.out / name).is_file():
                self.client.log_artifact(self.run_id, str(self.out / name))
        import mlflow

        mlflow.flush_async_logging()
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _mlflow_name(name: str) -> str:
    """MLflow keys take letters, digits and _ - . / space: class names may hold anything."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)

