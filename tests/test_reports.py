"""eval --report DIR and segcli report RUN_DIR: the files, the numbers in them, the page, and the bad inputs."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.synth import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("reports") / "shapes", n=8, size=64, seed=0)


@pytest.fixture(scope="module")
def predicted(synth, tmp_path_factory):
    """The bundled shapes model's predictions of every synthetic image, in all three modes."""
    out = tmp_path_factory.mktemp("predicted")
    for mode in ("semantic", "instance", "panoptic"):
        done = runner.invoke(app, ["predict", str(synth / "images"), "--model", "shapes", "--mode", mode,
                                   "--out", str(out / mode), "--no-overlay", "--quiet"])
        assert done.exit_code == 0, done.output
    return out


def _invoke(*args: str):
    done = runner.invoke(app, [*args])
    return done


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _page_files(report):
    """Every file report.html points at exists beside it, and it fetches nothing from the network."""
    page = (report / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all((report / s).is_file() for s in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    return page, sources


def test_semantic_data_report_holds_matrix_tables_and_worst_images(synth, tmp_path):
    report = tmp_path / "report"
    done = _invoke("eval", "--mode", "semantic", "--data", str(synth), "--model", "shapes", "--report", str(report),
                   "--worst", "1", "--json", str(tmp_path / "m.json"))
    assert done.exit_code == 0, done.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    page, sources = _page_files(report)
    assert {"confusion.png", "confusion_normalized.png"} <= set(sources)
    assert len([s for s in sources if s.startswith("worst/")]) == 1
    rows = _csv(report / "per_class.csv")
    assert [r["class"] for r in rows] == ["sky", "ground", "water", "circle", "square", "triangle"]
    assert float(rows[0]["iou"]) == pytest.approx(metrics["per_class"][0]["iou"])
    with open(report / "confusion.csv", newline="") as f:
        matrix = list(csv.reader(f))
    counts = np.array([[int(v) for v in row[1:]] for row in matrix[1:]])
    assert matrix[0][1:7] == [r["class"] for r in rows]
    assert counts.sum(1).tolist() == [int(r["gt pixels"]) for r in rows]
    assert np.trace(counts[:, :6]) / counts.sum() == pytest.approx(metrics["pixel_accuracy"])
    per_image = _csv(report / "per_image.csv")
    assert len(per_image) == metrics["images"] and float(per_image[0]["miou"]) <= float(per_image[-1]["miou"])
    assert json.loads((report / "report.json").read_text())["metrics"]["miou"] == pytest.approx(metrics["miou"])
    assert "mIoU" in page and f"{metrics['miou']:.3f}" in page


def test_instance_data_route_reports_per_class_ap_and_pr_curves(synth, tmp_path):
    report = tmp_path / "report"
    done = _invoke("eval", "--mode", "instance", "--data", str(synth), "--model", "shapes", "--report", str(report),
                   "--json", str(tmp_path / "m.json"))
    assert done.exit_code == 0, done.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    scored = {r["name"]: r for r in metrics["per_class"] if r["ap"] is not None}
    assert {"circle", "square", "triangle"} <= set(scored)  # the things: eval --data gave no per-class AP before
    assert {r["name"] for r in metrics["per_class"] if r["ap"] is None} >= {"sky"}
    _, sources = _page_files(report)
    assert "pr_curves.png" in sources
    curves = _csv(report / "pr_curves.csv")
    assert {r["class"] for r in curves} >= {"mean over classes", "circle"}
    rows = {r["class"]: r for r in _csv(report / "per_class.csv")}
    assert rows["sky"]["note"].startswith("absent") and int(rows["circle"]["gt objects"]) > 0


def test_panoptic_data_report(synth, tmp_path):
    report = tmp_path / "report"
    done = _invoke("eval", "--mode", "panoptic", "--data", str(synth), "--model", "shapes", "--report", str(report))
    assert done.exit_code == 0, done.output
    rows = _csv(report / "per_class.csv")
    assert {r["kind"] for r in rows} == {"thing", "stuff"} and all(r["pq"] for r in rows if int(r["tp"]))
    assert len(_csv(report / "per_image.csv")) == 2 and (report / "confusion.png").is_file()


@pytest.mark.parametrize("mode", ["semantic", "instance", "panoptic"])
def test_file_routes_report_with_the_images_found_beside_the_labels(synth, predicted, tmp_path, mode):
    report = tmp_path / "report"
    if mode == "semantic":
        args = ["--gt", str(synth / "masks"), "--pred", str(predicted / "semantic" / "semantic"), "--num-classes", "6"]
    elif mode == "instance":
        gt = synth / "annotations" / "instances.json"
        gt.write_text(json.dumps(_merged(synth, "instances")))
        args = ["--gt", str(gt), "--pred", str(predicted / "instance" / "instances.json")]
    else:
        gt = _merged_panoptic(synth)
        args = ["--gt", str(gt), "--pred", str(predicted / "panoptic" / "panoptic.json")]
    done = _invoke("eval", "--mode", mode, *args, "--report", str(report), "--worst", "2")
    assert done.exit_code == 0, done.output
    page, sources = _page_files(report)
    assert len([s for s in sources if s.startswith("worst/")]) == 2 and "drawn on grey" not in page
    assert _csv(report / "per_class.csv") and (report / "confusion.csv").is_file()
    picture = io.read_image(report / [s for s in sources if s.startswith("worst/")][0])
    assert picture[30:60, 10:60].std() > 5  # the image itself, not a grey canvas


def _merged(synth, kind: str) -> dict:
    train, val = (json.loads((synth / "annotations" / f"{kind}_{s}.json").read_text()) for s in ("train", "val"))
    return {**train, "images": train["images"] + val["images"],
            "annotations": train["annotations"] + val["annotations"]}


def _merged_panoptic(synth):
    """One COCO panoptic json (and PNG folder) for every image: predict scored them all."""
    merged = _merged(synth, "panoptic")
    folder = synth / "annotations" / "panoptic_all"
    folder.mkdir(exist_ok=True)
    for split in ("train", "val"):
        for png in (synth / "annotations" / f"panoptic_{split}").glob("*.png"):
            (folder / png.name).write_bytes(png.read_bytes())
    path = synth / "annotations" / "panoptic_all.json"
    path.write_text(json.dumps(merged))
    return path


def test_images_not_found_are_drawn_on_grey_and_the_page_says_so(synth, predicted, tmp_path):
    report = tmp_path / "report"
    done = _invoke("eval", "--mode", "semantic", "--gt", str(synth / "masks"), "--pred",
                   str(predicted / "semantic" / "semantic"), "--num-classes", "6", "--report", str(report),
                   "--images", str(tmp_path), "--worst", "1")
    assert done.exit_code == 0, done.output
    assert "drawn on grey" in (report / "report.html").read_text()


def test_a_class_that_never_occurs_says_so_without_dividing_by_zero(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        folder.mkdir()
    labels = np.zeros((16, 16), np.uint8)
    labels[4:12, 4:12] = 1
    wrong = labels.copy()
    wrong[0:2, 0:2] = 3  # class 3 predicted, never in the ground truth; class 2 nowhere
    io.write_image(gt / "a.png", labels)
    io.write_image(pred / "a.png", wrong)
    report = tmp_path / "report"
    done = _invoke("eval", "--mode", "semantic", "--gt", str(gt), "--pred", str(pred), "--num-classes", "4",
                   "--report", str(report))
    assert done.exit_code == 0, done.output
    rows = {r["class"]: r for r in _csv(report / "per_class.csv")}
    assert rows["class 2"]["iou"] == ""
    assert rows["class 2"]["note"].startswith("absent from ground truth and prediction")
    assert rows["class 3"]["iou"] == "0.0" and rows["class 3"]["note"].startswith("never in the ground truth")
    with open(report / "confusion_normalized.csv", newline="") as f:
        shares = {row[0]: row[1:] for row in csv.reader(f)}
    assert shares["class 2"] == [""] * 5 and "nan" not in (report / "confusion_normalized.csv").read_text()
    assert float(shares["class 0"][0]) + float(shares["class 0"][3]) == pytest.approx(1.0)


def test_two_hundred_classes_stay_legible_with_top_confusions_and_the_full_csv(tmp_path):
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        folder.mkdir()
    for i in range(3):
        labels = rng.integers(0, 200, (40, 40)).astype(np.uint8)
        noisy = np.where(rng.random((40, 40)) < 0.3, rng.integers(0, 200, (40, 40)), labels).astype(np.uint8)
        io.write_image(gt / f"{i}.png", labels)
        io.write_image(pred / f"{i}.png", noisy)
    report = tmp_path / "report"
    done = _invoke("eval", "--mode", "semantic", "--gt", str(gt), "--pred", str(pred), "--num-classes", "200",
                   "--report", str(report))
    assert done.exit_code == 0, done.output
    with open(report / "confusion.csv", newline="") as f:
        matrix = list(csv.reader(f))
    assert len(matrix) == 201 and len(matrix[1]) >= 201
    page = (report / "report.html").read_text()
    assert "classes of the largest confusions" in page and page.count("<tr>") >= 20
    picture = io.read_image(report / "confusion.png")
    assert picture.shape[0] < 2000  # at most 30 classes drawn, not 200


def test_an_existing_report_folder_is_replaced_but_other_folders_are_refused(synth, tmp_path):
    report = tmp_path / "report"
    args = ["eval", "--mode", "semantic", "--data", str(synth), "--model", "shapes", "--report", str(report)]
    assert _invoke(*args, "--worst", "2").exit_code == 0
    assert len(list((report / "worst").iterdir())) == 2
    assert _invoke(*args, "--worst", "1").exit_code == 0  # a report written before: replaced, nothing left over
    assert len(list((report / "worst").iterdir())) == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    done = _invoke("eval", "--mode", "semantic", "--data", str(synth), "--model", "shapes", "--report", str(foreign))
    assert done.exit_code == 2 and "not a segcli report" in done.output and "notes.txt" in done.output
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    assert _invoke(*args[:-1], str(tmp_path / "file")).exit_code == 2


def test_report_options_need_report(synth):
    done = _invoke("eval", "--mode", "semantic", "--data", str(synth), "--model", "shapes", "--worst", "3")
    assert done.exit_code == 2 and "--report" in done.output


def test_an_empty_validation_split_is_refused_with_its_name(synth, tmp_path):
    empty = tmp_path / "data"
    for part in ("images", "masks"):
        (empty / part).mkdir(parents=True)
        for path in (synth / part).iterdir():
            (empty / part / path.name).write_bytes(path.read_bytes())
    (empty / "classes.txt").write_text((synth / "classes.txt").read_text())
    (empty / "splits").mkdir()
    (empty / "splits" / "train.txt").write_text("\n".join(p.stem for p in (synth / "images").iterdir()))
    (empty / "splits" / "val.txt").write_text("")
    done = _invoke("eval", "--mode", "semantic", "--data", str(empty), "--model", "shapes", "--report",
                   str(tmp_path / "report"))
    assert done.exit_code in (1, 2) and "val" in done.output and "Traceback" not in done.output
    assert not (tmp_path / "report" / "report.html").exists()


# ---------------------------------------------------------------- segcli report RUN_DIR


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    done = _invoke("train", "--data", str(synth), "--model", "unet", "--steps", "4", "--val-every", "2", "--batch-size",
                   "3", "--img-size", "32", "--width", "4", "--out", str(out), "--log", "none")
    assert done.exit_code == 0, done.output
    return out


def test_run_report_shows_curves_plan_card_evaluation_and_samples(trained, tmp_path):
    done = _invoke("report", str(trained), "--out", str(tmp_path / "report"), "--worst", "1")
    assert done.exit_code == 0, done.output
    report = tmp_path / "report"
    page, sources = _page_files(report)
    assert {"curves.png", "confusion.png", "samples/01.png", "samples/02.png"} <= set(sources)
    for heading in ("Training curves", "Plan", "Checkpoint card", "Final evaluation", "Per class",
                    "Sample predictions"):
        assert f">{heading}</h2>" in page
    assert "--img-size" in page and "unet" in page
    assert json.loads((report / "report.json").read_text())["evaluated"] is True


def test_run_report_defaults_into_the_run_and_says_when_the_data_moved(trained, synth, tmp_path):
    card = json.loads((trained / "best.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("best.json", "best.safetensors", "plan.json", "metrics.jsonl", "curves.png"):
        (moved / name).write_bytes((trained / name).read_bytes())
    card["data"]["path"] = str(tmp_path / "gone")
    (moved / "best.json").write_text(json.dumps(card))
    done = _invoke("report", str(moved))
    assert done.exit_code == 0, done.output
    assert "--data PATH" in done.output and (moved / "report" / "report.html").is_file()
    done = _invoke("report", str(moved), "--data", str(synth))
    assert done.exit_code == 0 and json.loads((moved / "report" / "report.json").read_text())["evaluated"] is True


def test_run_report_of_a_run_without_validation(trained, tmp_path):
    early = tmp_path / "early"
    early.mkdir()
    (early / "plan.json").write_bytes((trained / "plan.json").read_bytes())
    done = _invoke("report", str(early))
    assert done.exit_code == 0, done.output
    page = (early / "report" / "report.html").read_text()
    assert "has not validated yet" in page and "No final evaluation" in page


def test_report_refuses_a_folder_that_is_no_run(tmp_path):
    done = _invoke("report", str(tmp_path))
    assert done.exit_code == 2 and "not a segcli training run" in done.output
