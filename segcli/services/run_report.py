"""`segcli report RUN_DIR`: one page for a training run, opening offline from RUN_DIR/report/.

    curves      curves.png (or, for a run that has none, drawn from metrics.jsonl) and every validation as a table
    plan        what the plan chose from the data's fingerprint, and why
    card        the checkpoint card: model, classes, data, command (the whole card folded below)
    evaluation  the best checkpoint scored on the run's validation split, as `eval --report` shows it:
                per-class table, confusion matrix, PR curves (instances), worst images
    samples     the first validation images: prediction beside ground truth, with the error map

A run that has not validated yet (no metrics.jsonl, no best checkpoint), or whose data is no longer where it was,
gets the sections it can have and a line saying what is missing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from segcli import io, plots
from segcli.errors import SegcliError, UsageError
from segcli.html_page import Page, ReportFolder, figure, fmt, gallery, paragraph, preformatted, table
from segcli.metrics import PRIMARY_METRIC, ScoreDetails
from segcli.services.eval_report import DEFAULT_WORST, Evaluation, add_evaluation

SAMPLE_IMAGES = 4


@dataclass
class RunReport:
    path: Path  # report.html
    evaluated: bool  # whether the final evaluation could run
    note: str | None  # why not


def report_run(*, run: Path, out: Path | None = None, data: Path | None = None, worst: int = DEFAULT_WORST,
               device: str = "auto") -> RunReport:
    """Write the run's report into `out` (default RUN/report); `data` overrides where the run's data is."""
    run = Path(run)
    if not run.is_dir() or not any((run / name).exists() for name in ("plan.json", "last.json", "metrics.jsonl")):
        raise UsageError(f"{run}: not a segcli training run (no plan.json, last.json or metrics.jsonl); "
                         "give the --out folder of segcli train")
    if worst < 0:
        raise UsageError(f"--worst {worst}: give how many of the worst images to draw (0 or more)")
    folder = ReportFolder(out or run / "report", "--out")
    card = _card(run)
    history = _history(run)
    folder.start()
    page = Page(title=f"segcli training run: {run.name}", subtitle=_subtitle(card, run, history))
    _curves_section(page, folder, run, card, history)
    _plan_section(page, run)
    _card_section(page, card)
    evaluated, note = _evaluation_sections(page, folder, run, card, data, worst, device)
    path = page.write(folder.file("report.html"))
    folder.finish({"run": str(run), "evaluated": evaluated, "note": note})
    return RunReport(path, evaluated, note)


def _card(run: Path) -> dict | None:
    for name in ("best.json", "last.json"):
        if (run / name).is_file():
            return io.read_json(run / name)
    return None


def _history(run: Path) -> list[dict]:
    log = run / "metrics.jsonl"
    if not log.is_file():
        return []
    records = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UsageError(f"{log}: line {number} is not JSON (was the file edited?)") from None
    return records


def _subtitle(card: dict | None, run: Path, history: list[dict]) -> str:
    if card is None:
        return f"{run}: no checkpoint yet"
    data = card.get("data", {})
    steps = history[-1]["step"] if history else card.get("step", 0)
    return (f"{card['model']} ({card['mode']}) trained on {data.get('path', '?')}: {data.get('train_images', '?')} "
            f"training and {data.get('val_images', '?')} validation images; {steps} steps, the best checkpoint "
            f"from step {card.get('step', 0)}")


def _curves_section(page: Page, folder: ReportFolder, run: Path, card: dict | None, history: list[dict]) -> None:
    blocks = page.section("curves", "Training curves")
    if not history:
        blocks.append(paragraph("This run has not validated yet (no metrics.jsonl): there are no scores to plot. "
                                "Validation runs every --val-every steps, or automatically after 10% of the run.",
                                note=True))
    metric = PRIMARY_METRIC[card["mode"]] if card else "miou"
    if (run / "curves.png").is_file():
        shutil.copyfile(run / "curves.png", folder.file("curves.png"))
    elif history:
        plots.training_curves(folder.file("curves.png"), _logged_history(history, metric))
    else:
        return
    blocks.append(figure("curves.png", "training loss, validation score and learning rate (dotted) against steps "
                                       "and wall time"))
    if history:
        page.cards.insert(0, (f"best {metric}", fmt(max(r.get(metric) or 0.0 for r in history), 3)))
        keys = [k for k in history[-1] if isinstance(history[-1][k], int | float) and k not in ("best",)]
        rows = [{k: f"{r[k]:.2e}" if k == "lr" else r.get(k) for k in keys} | {"best": "yes" if r.get("best") else ""}
                for r in history]
        blocks.append(table(rows, scroll=len(rows) > 15))


def _logged_history(history: list[dict], metric: str) -> plots.History:
    """A run written before curves.png existed: its validations, and the mean loss between them where logged."""
    drawn = plots.History(metric=metric)
    for record in history:
        drawn.val_steps.append(record["step"])
        drawn.val_seconds.append(record["seconds"])
        drawn.val_scores.append(record.get(metric))
        if record.get("train_loss") is not None:
            drawn.steps.append(record["step"])
            drawn.seconds.append(record["seconds"])
            drawn.losses.append(record["train_loss"])
            drawn.lrs.append(record.get("lr", 0.0))
    return drawn


def _plan_section(page: Page, run: Path) -> None:
    blocks = page.section("plan", "Plan")
    if not (run / "plan.json").is_file():
        blocks.append(paragraph("No plan.json in the run folder.", note=True))
        return
    record = io.read_json(run / "plan.json")
    plan, source = dict(record.get("plan", {})), record.get("plan", {}).get("source", {})
    plan.pop("source", None)
    rows = [{"setting": k, "value": json.dumps(v) if isinstance(v, dict | list) else v,
             "from": source.get(k, "the data (plan)")} for k, v in plan.items()]
    blocks.append(table(rows, text_columns=("setting", "value", "from")))
    fingerprint = record.get("fingerprint", {})
    if fingerprint:
        blocks.append(preformatted(json.dumps(fingerprint, indent=2), "the data's fingerprint the plan was made from"))


def _card_section(page: Page, card: dict | None) -> None:
    blocks = page.section("card", "Checkpoint card")
    if card is None:
        blocks.append(paragraph("No checkpoint yet (best.json / last.json): the run saves one at each validation.",
                                note=True))
        return
    facts = {"model": card.get("model"), "builder arguments": json.dumps(card.get("model_args", {})),
             "mode": card.get("mode"), "classes": ", ".join(card.get("label_space", {}).get("names", [])),
             "data": json.dumps({k: v for k, v in card.get("data", {}).items() if k != "fingerprint"}),
             "command": " ".join(card.get("command", [])), "segcli": card.get("segcli_version")}
    blocks.append(table([{"field": k, "value": v} for k, v in facts.items() if v], text_columns=("field", "value")))
    blocks.append(preformatted(json.dumps(card, indent=2, default=str), "the whole card (best.json)"))


def _evaluation_sections(page: Page, folder: ReportFolder, run: Path, card: dict | None, data: Path | None,
                         worst: int, device: str) -> tuple[bool, str | None]:
    """The final evaluation and the sample predictions, or one section saying why there are none."""
    from segcli.services.evaluate import EvalConfig, predict_and_score

    note = None
    if card is None or not (run / "best.safetensors").is_file():
        note = "no best checkpoint yet: the run has not validated"
    source = Path(data) if data is not None else _data_path(card, run) if note is None else None
    if note is None and source is None:
        note = f"the training data ({card['data'].get('path')}) is not here; point at it with --data PATH"
    if note is None:
        details = ScoreDetails()
        try:
            config = EvalConfig(mode=card["mode"], data=source, weights=run / "best",
                                data_format=card["data"].get("format", "auto"), split="val", device=device)
            scored = predict_and_score(config, details=details)
        except SegcliError as error:
            note = f"the best checkpoint could not be scored on {source}: {error}"
    if note is not None:
        page.section("evaluation", "Final evaluation").append(paragraph(f"No final evaluation: {note}.", note=True))
        return False, note
    evaluation = Evaluation(card["mode"], scored.result, details, scored.space, scored.pictures(),
                            f"best checkpoint on {source} (split val)")
    page.section("evaluation", "Final evaluation").append(paragraph(
        f"The best checkpoint (step {card.get('step')}) scored on the {scored.result['images']} validation images of "
        f"{source}, predicted whole as predict does.", note=True))
    add_evaluation(page, folder, evaluation, worst)
    _samples_section(page, folder, evaluation, scored.samples)
    return True, None


def _data_path(card: dict, run: Path) -> Path | None:
    """The run's data where the card says, else relative to the run folder's parents (a run moved with its data)."""
    recorded = Path(card.get("data", {}).get("path", ""))
    if recorded.exists() and str(recorded):
        return recorded
    for base in (run.parent, run.parent.parent):
        if (base / recorded).exists() and str(recorded):
            return base / recorded
    return None


def _samples_section(page: Page, folder: ReportFolder, evaluation: Evaluation, samples: list) -> None:
    from segcli.services.eval_report import draw_pair

    blocks = page.section("samples", "Sample predictions")
    blocks.append(paragraph(f"The first {min(SAMPLE_IMAGES, len(samples))} validation images (the same ones "
                            "TensorBoard shows during training).", note=True))
    figures = []
    for number, sample in enumerate(samples[:SAMPLE_IMAGES], start=1):
        file = f"samples/{number:02d}.png"
        draw_pair(folder.file(file), evaluation, sample.name)
        figures.append(figure(file, sample.name))
    blocks.append(gallery(figures))
