"""segcli eval on files: the real COCO panoptic sample, semantic folders, COCO results, and bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.synth import generate
from segcli.errors import DataError
from segcli.services.evaluate import evaluate_instance, evaluate_panoptic, evaluate_semantic

runner = CliRunner()


@pytest.fixture
def coco_sample(shared_data, tmp_path):
    source = shared_data / "coco_panoptic_sample"
    data = io.read_json(source / "panoptic_examples.json")
    data["categories"] = io.read_json(source / "panoptic_coco_categories.json")
    gt_json = tmp_path / "gt.json"
    io.write_json(gt_json, data)
    return gt_json, source / "panoptic", data


def test_coco_sample_against_itself_is_perfect(coco_sample, tmp_path):
    gt_json, gt_dir, data = coco_sample
    result = evaluate_panoptic(gt_json, gt_json, gt_dir=gt_dir, pred_dir=gt_dir)
    assert result["pq"] == 1.0 and result["sq"] == 1.0 and result["rq"] == 1.0
    present = {s["category_id"] for a in data["annotations"] for s in a["segments_info"] if not s["iscrowd"]}
    scored = {row["id"]: row for row in result["per_class"]}
    assert all(scored[c]["pq"] == 1.0 for c in present) and result["n"] == len(present)


def test_coco_sample_with_one_segment_removed(coco_sample, tmp_path):
    gt_json, gt_dir, data = coco_sample
    pred_dir = tmp_path / "pred"
    shutil.copytree(gt_dir, pred_dir)
    ann = data["annotations"][0]
    # Remove a thing segment whose category has k >= 2 non-crowd segments in the whole set.
    counts = {}
    for a in data["annotations"]:
        for s in a["segments_info"]:
            if not s["iscrowd"]:
                counts[s["category_id"]] = counts.get(s["category_id"], 0) + 1
    victim = next(s for s in ann["segments_info"] if not s["iscrowd"] and counts[s["category_id"]] >= 2)
    png = pred_dir / ann["file_name"]
    ids = io.read_panoptic_png(png)
    ids[ids == victim["id"]] = 0
    io.write_panoptic_png(png, ids)
    pred = json.loads(json.dumps(data))
    pred["annotations"][0]["segments_info"] = [s for s in ann["segments_info"] if s["id"] != victim["id"]]
    pred_json = tmp_path / "pred.json"
    io.write_json(pred_json, pred)

    result = evaluate_panoptic(gt_json, pred_json, gt_dir=gt_dir, pred_dir=pred_dir)
    k, n = counts[victim["category_id"]], len(counts)
    expected = ((n - 1) + (k - 1) / (k - 1 + 0.5)) / n  # one FN: that category's PQ is (k-1) / (k-1 + 0.5)
    assert abs(result["pq"] - expected) < 1e-12
    assert abs(result["rq"] - expected) < 1e-12 and result["sq"] == 1.0


def test_panoptic_mismatches_name_file_and_id(coco_sample, tmp_path):
    gt_json, gt_dir, data = coco_sample
    pred = json.loads(json.dumps(data))
    dropped = pred["annotations"][1]["segments_info"].pop()
    pred_json = tmp_path / "pred.json"
    io.write_json(pred_json, pred)
    with pytest.raises(DataError, match=str(dropped["id"])):
        evaluate_panoptic(gt_json, pred_json, gt_dir=gt_dir, pred_dir=gt_dir)
    with pytest.raises(DataError, match="missing panoptic PNG"):
        evaluate_panoptic(gt_json, gt_json, gt_dir=gt_dir, pred_dir=tmp_path)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("eval") / "d", n=6, size=48, seed=0)


def test_semantic_folders_perfect_and_damaged(synth, tmp_path):
    perfect = evaluate_semantic(synth / "masks", synth / "masks", num_classes=6)
    assert perfect["miou"] == 1.0 and perfect["boundary_f1"] == 1.0
    damaged = tmp_path / "pred"
    damaged.mkdir()
    for path in (synth / "masks").glob("*.png"):
        mask = io.read_label_png(path)
        mask[:, :8] = 0
        io.write_class_png(damaged / path.name, mask, [(0, 0, 0)] * 6)
    result = evaluate_semantic(synth / "masks", damaged, num_classes=6)
    assert 0 < result["miou"] < 1 and 0 < result["pixel_accuracy"] < 1


def test_semantic_mismatches(synth, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    io.write_class_png(pred / "stranger.png", np.zeros((48, 48), np.uint8), [(0, 0, 0)])
    with pytest.raises(DataError, match="no ground truth"):
        evaluate_semantic(synth / "masks", pred)
    first = sorted((synth / "masks").glob("*.png"))[0]
    (pred / "stranger.png").unlink()
    io.write_class_png(pred / first.name, np.zeros((10, 10), np.uint8), [(0, 0, 0)])
    with pytest.raises(DataError, match="no prediction"):
        evaluate_semantic(synth / "masks", pred)


def test_instance_results_matched_by_stem(synth, tmp_path):
    gt = io.read_json(synth / "annotations" / "instances_train.json")
    stems = {img["id"]: img["file_name"][:-4] for img in gt["images"]}
    results = [{"image_id": stems[a["image_id"]], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 0.9} for a in gt["annotations"]]
    pred = tmp_path / "instances.json"
    io.write_json(pred, results)
    scores = evaluate_instance(synth / "annotations" / "instances_train.json", pred)
    assert scores["ap"] == pytest.approx(1.0) and scores["ap50"] == pytest.approx(1.0)
    io.write_json(pred, [{**results[0], "image_id": "nope"}])
    with pytest.raises(DataError, match="nope"):
        evaluate_instance(synth / "annotations" / "instances_train.json", pred)


def test_cli_eval_writes_json_and_csv(synth, tmp_path):
    out_json, out_csv = tmp_path / "m.json", tmp_path / "m.csv"
    result = runner.invoke(app, ["eval", "--mode", "panoptic", "--gt", str(synth / "annotations" / "panoptic_train.json"),
                                 "--pred", str(synth / "annotations" / "panoptic_train.json"), "--json", str(out_json),
                                 "--csv", str(out_csv), "--workers", "1"])
    assert result.exit_code == 0, result.output
    metrics = io.read_json(out_json)
    assert metrics["pq"] == 1.0 and set(metrics["things"]) == {"pq", "sq", "rq", "n"}
    assert out_csv.read_text().splitlines()[0].startswith("id,name")
    bad = runner.invoke(app, ["eval", "--mode", "semantic", "--gt", str(tmp_path / "nowhere"), "--pred", str(tmp_path)])
    assert bad.exit_code == 2 and "nowhere" in bad.output
