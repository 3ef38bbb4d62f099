"""segcli eval on files: the real COCO panoptic sample, semantic folders, COCO results, and bad inputs."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.checkpoint import read_card
from segcli.cli import app
from segcli.data.synth import generate
from segcli.errors import DataError
from segcli.services.evaluate import evaluate_instance, evaluate_panoptic, evaluate_semantic

runner = CliRunner()

# ---------------------------------------------------------------- panoptic: the real COCO sample


@pytest.fixture
def coco_sample(shared_data, tmp_path):
    source = shared_data / "coco_panoptic_sample"
    data = io.read_json(source / "panoptic_examples.json")
    data["categories"] = io.read_json(source / "panoptic_coco_categories.json")
    gt_json = tmp_path / "gt.json"
    io.write_json(gt_json, data)
    return gt_json, source / "panoptic", data


def _non_crowd_counts(data: dict) -> dict[int, int]:
    counts: dict[int, int] = {}
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            if not s["iscrowd"]:
                counts[s["category_id"]] = counts.get(s["category_id"], 0) + 1
    return counts


def test_coco_sample_against_itself_is_perfect(coco_sample):
    gt_json, gt_dir, data = coco_sample
    result = evaluate_panoptic(gt_json, gt_json, gt_dir=gt_dir, pred_dir=gt_dir)
    assert result["pq"] == 1.0 and result["sq"] == 1.0 and result["rq"] == 1.0 and result["images"] == 2
    present = set(_non_crowd_counts(data))
    scored = {row["id"]: row for row in result["per_class"]}
    assert all(scored[c]["pq"] == 1.0 and scored[c]["fp"] == scored[c]["fn"] == 0 for c in present)
    assert all(row["pq"] is None for c, row in scored.items() if c not in present)  # not in the average
    isthing = {c["id"]: c["isthing"] for c in data["categories"]}
    assert result["n"] == len(present)
    assert result["things"]["n"] == sum(isthing[c] for c in present) and result["stuff"]["pq"] == 1.0


def _remove_segment(data: dict, gt_dir, tmp_path, image: int, victim: dict):
    """A prediction: the ground truth with one segment painted void and dropped from the json."""
    pred_dir = tmp_path / "pred"
    shutil.copytree(gt_dir, pred_dir)
    ann = data["annotations"][image]
    png = pred_dir / ann["file_name"]
    ids = io.read_panoptic_png(png)
    ids[ids == victim["id"]] = 0
    io.write_panoptic_png(png, ids)
    pred = copy.deepcopy(data)
    pred["annotations"][image]["segments_info"] = [s for s in ann["segments_info"] if s["id"] != victim["id"]]
    pred_json = tmp_path / "pred.json"
    io.write_json(pred_json, pred)
    return pred_json, pred_dir


def test_coco_sample_with_one_segment_removed(coco_sample, tmp_path):
    gt_json, gt_dir, data = coco_sample
    counts = _non_crowd_counts(data)
    isthing = {c["id"]: c["isthing"] for c in data["categories"]}
    # A thing whose category has k >= 2 non-crowd segments over both images.
    victim = next(s for s in data["annotations"][0]["segments_info"]
                  if not s["iscrowd"] and isthing[s["category_id"]] and counts[s["category_id"]] >= 2)
    pred_json, pred_dir = _remove_segment(data, gt_dir, tmp_path, 0, victim)
    result = evaluate_panoptic(gt_json, pred_json, gt_dir=gt_dir, pred_dir=pred_dir)

    # By hand: the victim becomes one FN of its category, everything else still matches with IoU 1
    # (its pixels are void in the prediction, and predicted void only enlarges no union). So that
    # category has PQ = RQ = (k-1) / ((k-1) + 0.5 * 1) and SQ = 1; the other n-1 categories have 1.
    k, n = counts[victim["category_id"]], len(counts)
    n_things = sum(isthing[c] for c in counts)
    category_pq = (k - 1) / ((k - 1) + 0.5)
    assert abs(result["pq"] - ((n - 1) + category_pq) / n) < 1e-12
    assert abs(result["rq"] - ((n - 1) + category_pq) / n) < 1e-12 and result["sq"] == 1.0
    assert abs(result["things"]["pq"] - ((n_things - 1) + category_pq) / n_things) < 1e-12
    assert result["stuff"]["pq"] == 1.0
    row = next(r for r in result["per_class"] if r["id"] == victim["category_id"])
    assert (row["tp"], row["fp"], row["fn"]) == (k - 1, 0, 1)


def test_coco_sample_removing_a_category_s_only_segment(coco_sample, tmp_path):
    gt_json, gt_dir, data = coco_sample
    counts = _non_crowd_counts(data)
    segments = data["annotations"][1]["segments_info"]
    victim = next(s for s in segments if not s["iscrowd"] and counts[s["category_id"]] == 1)
    pred_json, pred_dir = _remove_segment(data, gt_dir, tmp_path, 1, victim)
    result = evaluate_panoptic(gt_json, pred_json, gt_dir=gt_dir, pred_dir=pred_dir)
    n = len(counts)  # that category still counts (one FN): PQ 0 / (0 + 0.5) = 0 in a mean over n
    assert abs(result["pq"] - (n - 1) / n) < 1e-12 and result["n"] == n


def test_panoptic_predictions_matched_by_file_stem(coco_sample, tmp_path):
    gt_json, gt_dir, data = coco_sample
    pred = {"annotations": [{**a, "image_id": a["file_name"][:-4]} for a in data["annotations"]]}  # predict's ids
    pred_json = tmp_path / "panoptic.json"
    io.write_json(pred_json, pred)
    assert evaluate_panoptic(gt_json, pred_json, gt_dir=gt_dir, pred_dir=gt_dir)["pq"] == 1.0


def test_panoptic_mismatches_name_file_and_id(coco_sample, tmp_path):
    gt_json, gt_dir, data = coco_sample

    def scored(pred: dict, pred_dir=gt_dir):
        pred_json = tmp_path / "pred.json"
        io.write_json(pred_json, pred)
        return evaluate_panoptic(gt_json, pred_json, gt_dir=gt_dir, pred_dir=pred_dir)

    pred = copy.deepcopy(data)
    dropped = pred["annotations"][1]["segments_info"].pop()
    with pytest.raises(DataError, match=rf"000000439180\.png.*segment id {dropped['id']} is in the PNG but not in"):
        scored(pred)
    pred = copy.deepcopy(data)
    pred["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 1})
    with pytest.raises(DataError, match=r"000000142238\.png.*\[4242\] are in the json's segments_info "
                                        r"but not in the PNG"):
        scored(pred)
    with pytest.raises(DataError, match=r"000000142238\.png: missing predicted panoptic PNG for image 142238"):
        scored(data, pred_dir=tmp_path)
    stranger = copy.deepcopy(data)
    stranger["annotations"].append({**data["annotations"][0], "image_id": 7, "file_name": "elsewhere.png"})
    with pytest.raises(DataError, match=r"prediction for image 7 \(elsewhere.png\) has no ground truth"):
        scored(stranger)
    twice = copy.deepcopy(data)
    twice["annotations"].append({**data["annotations"][0], "image_id": "000000142238"})
    with pytest.raises(DataError, match="two predictions for ground-truth image 142238"):
        scored(twice)
    with pytest.raises(DataError, match=r"no prediction for ground-truth image 439180 \(000000439180.png"):
        scored({"annotations": data["annotations"][:1]})
    small = tmp_path / "small"
    small.mkdir()
    for ann in data["annotations"]:
        io.write_panoptic_png(small / ann["file_name"], io.read_panoptic_png(gt_dir / ann["file_name"])[:100])
    with pytest.raises(DataError, match=r"prediction is 640x100 px, ground truth 640x427"):
        scored(data, pred_dir=small)
    with pytest.raises(DataError, match="--gt-dir"):
        evaluate_panoptic(gt_json, gt_json, gt_dir=tmp_path / "nowhere", pred_dir=gt_dir)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("eval") / "d", n=6, size=48, seed=0)


def test_panoptic_workers_give_the_same_numbers(synth, tmp_path):
    gt_json = synth / "annotations" / "panoptic_train.json"
    data = io.read_json(gt_json)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for ann in data["annotations"]:  # damage every prediction the same way: shift it by 3 px
        ids = io.read_panoptic_png(gt_json.with_suffix("") / ann["file_name"])
        shifted = np.roll(ids, 3, axis=1)
        io.write_panoptic_png(pred_dir / ann["file_name"], shifted)
        ann["segments_info"] = [s for s in ann["segments_info"] if (shifted == s["id"]).any()]
    pred_json = tmp_path / "pred.json"
    io.write_json(pred_json, data)
    one = evaluate_panoptic(gt_json, pred_json, pred_dir=pred_dir, workers=1)
    two = evaluate_panoptic(gt_json, pred_json, pred_dir=pred_dir, workers=2)
    assert one == two and 0 < one["pq"] < 1


# ---------------------------------------------------------------- semantic


def _write_masks(folder, masks: dict[str, np.ndarray]):
    folder.mkdir()
    for stem, mask in masks.items():
        io.write_class_png(folder / f"{stem}.png", mask.astype(np.uint8), [(0, 0, 0)] * 256)
    return folder


def test_semantic_folders_against_a_hand_count(tmp_path):
    gt = _write_masks(tmp_path / "gt", {"a": np.array([[0, 0, 1, 1], [0, 255, 1, 1]]), "b": np.array([[2, 2, 0, 0]])})
    pred = _write_masks(tmp_path / "pred", {"a": np.array([[0, 3, 1, 0], [0, 1, 1, 255]]),
                                            "b": np.array([[2, 1, 0, 0]])})
    (tmp_path / "classes.txt").write_text("bg\nbox\ndisc\nring\nstar\n")
    result = evaluate_semantic(gt, pred, classes=tmp_path / "classes.txt", boundary_px=1)
    rows = {row["name"]: row for row in result["per_class"]}
    # Pooled over both images (11 valid px). bg: gt 5, pred 5, tp 4 -> 4/6. box: gt 4, pred 3, tp 2 -> 2/5.
    # disc: gt 2, pred 1, tp 1 -> 1/2. ring: predicted once, never in gt -> 0. star: absent -> None.
    assert rows["bg"]["iou"] == pytest.approx(4 / 6) and rows["box"]["iou"] == pytest.approx(2 / 5)
    assert rows["disc"]["iou"] == pytest.approx(1 / 2) and rows["ring"]["iou"] == 0.0
    assert rows["star"]["iou"] is None and rows["star"]["boundary_f1"] is None
    assert result["miou"] == pytest.approx((4 / 6 + 2 / 5 + 1 / 2 + 0) / 4)
    assert result["pixel_accuracy"] == pytest.approx(7 / 11)  # the predicted 255 is a wrong pixel
    assert result["images"] == 2 and 0 < result["boundary_f1"] < 1
    inferred = evaluate_semantic(gt, pred, boundary_px=1)  # no --classes: 4 classes from the largest label, 3
    assert len(inferred["per_class"]) == 4 and inferred["miou"] == pytest.approx(result["miou"])


def test_semantic_folders_perfect_damaged_and_parallel(synth, tmp_path):
    perfect = evaluate_semantic(synth / "masks", synth / "masks", num_classes=6)
    assert perfect["miou"] == 1.0 and perfect["boundary_f1"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    damaged = tmp_path / "pred"
    damaged.mkdir()
    for path in (synth / "masks").glob("*.png"):
        mask = io.read_label_png(path)
        mask[:, :8] = 0
        io.write_class_png(damaged / path.name, mask, [(0, 0, 0)] * 6)
    result = evaluate_semantic(synth / "masks", damaged, num_classes=6, workers=1)
    assert 0 < result["miou"] < 1 and 0 < result["pixel_accuracy"] < 1 and 0 < result["boundary_f1"] < 1
    assert evaluate_semantic(synth / "masks", damaged, num_classes=6, workers=2) == result


def test_semantic_mismatches(synth, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    io.write_class_png(pred / "stranger.png", np.zeros((48, 48), np.uint8), [(0, 0, 0)])
    with pytest.raises(DataError, match=r"stranger\.png: a prediction with no ground truth"):
        evaluate_semantic(synth / "masks", pred)
    (pred / "stranger.png").unlink()
    first = sorted((synth / "masks").glob("*.png"))[0]
    io.write_class_png(pred / first.name, np.zeros((10, 12), np.uint8), [(0, 0, 0)])
    with pytest.raises(DataError, match="no prediction for ground truth"):
        evaluate_semantic(synth / "masks", pred)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(first, one / first.name)
    with pytest.raises(DataError, match=rf"{first.stem}\.png: prediction is 12x10 px, ground truth .* is 48x48"):
        evaluate_semantic(one, pred)
    with pytest.raises(DataError, match=rf"{first.name}: class \d but only 1 classes \(0\.\.0\); "
                                        r"pass the right --num-classes"):
        evaluate_semantic(one, one, num_classes=1)
    ids = tmp_path / "ids"
    ids.mkdir()
    io.write_instance_png(ids / first.name, np.full((48, 48), 5000))  # an instance-id PNG given as classes
    with pytest.raises(DataError, match="class 5000 but over 1023: an instance or colour mask"):
        evaluate_semantic(one, ids)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="2 names for 6 classes"):
        evaluate_semantic(one, one, num_classes=6, classes=tmp_path / "classes.txt")


# ---------------------------------------------------------------- instance


def _results_from_gt(gt: dict, image_key) -> list[dict]:
    return [{"image_id": image_key(a["image_id"]), "category_id": a["category_id"], "segmentation": a["segmentation"],
             "score": 0.9} for a in gt["annotations"]]


def test_instance_results_matched_by_stem(synth, tmp_path):
    gt_json = synth / "annotations" / "instances_train.json"
    gt = io.read_json(gt_json)
    stems = {img["id"]: img["file_name"][:-4] for img in gt["images"]}
    pred = tmp_path / "instances.json"
    io.write_json(pred, _results_from_gt(gt, stems.get))
    scores = evaluate_instance(gt_json, pred)
    assert scores["ap"] == pytest.approx(1.0) and scores["ap50"] == pytest.approx(1.0)
    present = {a["category_id"] for a in gt["annotations"]}
    assert {r["id"] for r in scores["per_class"] if r["ap"] is not None} == present
    assert all(r["ap"] == pytest.approx(1.0) for r in scores["per_class"] if r["ap"] is not None)


def test_instance_polygon_results_score_like_their_rle(tmp_path):
    gt = {"images": [{"id": 1, "width": 20, "height": 20, "file_name": "x.png"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]}],
          "categories": [{"id": 1, "name": "box"}]}  # no area, no iscrowd: filled in as COCOeval needs
    gt_json, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    io.write_json(gt_json, gt)
    io.write_json(pred, [{"image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]],
                          "score": 1.0}])
    assert evaluate_instance(gt_json, pred)["ap"] == pytest.approx(1.0)


def test_instance_mismatches_name_the_result(synth, tmp_path):
    gt_json = synth / "annotations" / "instances_train.json"
    gt = io.read_json(gt_json)
    results = _results_from_gt(gt, lambda i: i)
    pred = tmp_path / "instances.json"
    cases = [
        ({**results[0], "image_id": "nope"}, r"result 0: image_id 'nope' matches no ground-truth image"),
        ({**results[0], "category_id": 99}, r"result 0: category_id 99 is not a ground-truth category"),
        ({k: v for k, v in results[0].items() if k != "score"}, r"result 0 has no \['score'\]"),
        ({**results[0], "segmentation": {**results[0]["segmentation"], "size": [10, 20]}},
         r"result 0: mask is 20x10 px but image \d+ is 48x48"),
    ]
    for bad, message in cases:
        io.write_json(pred, [bad])
        with pytest.raises(DataError, match=message):
            evaluate_instance(gt_json, pred)
    io.write_json(pred, {"annotations": []})
    with pytest.raises(DataError, match="expected a COCO results list"):
        evaluate_instance(gt_json, pred)


# ---------------------------------------------------------------- the command


def test_cli_eval_panoptic_writes_json_and_csv(synth, tmp_path):
    out_json, out_csv = tmp_path / "m.json", tmp_path / "m.csv"
    gt = str(synth / "annotations" / "panoptic_train.json")
    result = runner.invoke(app, ["eval", "--mode", "panoptic", "--gt", gt, "--pred", gt, "--json", str(out_json),
                                 "--csv", str(out_csv), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "things" in result.stdout and result.stderr == ""  # the table is the result: on stdout
    metrics = io.read_json(out_json)
    assert metrics["pq"] == 1.0 and set(metrics["things"]) == {"pq", "sq", "rq", "n"}
    assert set(metrics) >= {"pq", "sq", "rq", "things", "stuff", "per_class"}
    assert out_csv.read_text().splitlines()[0].startswith("id,name")


def test_cli_eval_semantic_table_and_instance_json(synth, tmp_path):
    masks = str(synth / "masks")
    result = runner.invoke(app, ["eval", "--mode", "semantic", "--gt", masks, "--pred", masks,
                                 "--classes", str(synth / "classes.txt"), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in (synth / "classes.txt").read_text().splitlines()]
    summary = next(i for i, line in enumerate(lines) if line.strip("│ ").startswith("all "))
    class_rows = [i for i, line in enumerate(lines) if line.strip("│ ").split(" ")[0] in names]
    assert "miou" in lines[summary - 2] and len(class_rows) == len(names) and summary < min(class_rows)
    assert set(io.read_json(tmp_path / "s.json")) >= {"miou", "pixel_accuracy", "mean_dice", "boundary_f1", "per_class"}

    gt_json = synth / "annotations" / "instances_train.json"
    pred = tmp_path / "instances.json"
    io.write_json(pred, _results_from_gt(io.read_json(gt_json), lambda i: i))
    result = runner.invoke(app, ["eval", "--mode", "instance", "--gt", str(gt_json), "--pred", str(pred),
                                 "--json", str(tmp_path / "i.json")])
    assert result.exit_code == 0, result.output
    metrics = io.read_json(tmp_path / "i.json")
    assert set(metrics) >= {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"} and len(metrics["stats"]) == 12
    json.dumps(metrics)  # plain JSON types


def test_cli_eval_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = runner.invoke(app, ["eval", "--mode", "semantic", "--gt", str(tmp_path / "nowhere"), "--pred", str(tmp_path)])
    assert bad.exit_code == 2 and "nowhere" in bad.output and "Traceback" not in bad.output


def test_eval_data_reads_the_dataset_as_training_did(tmp_path):
    """0/255 masks and a random split: `eval --data` takes --binary and the seed from the checkpoint's card."""
    from segcli.services.evaluate import evaluate_model
    from segcli.services.train import TrainConfig, train

    rng = np.random.default_rng(0)
    for i in range(8):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 4 + i : 20 + i] = 255
        io.write_image(tmp_path / "data" / "images" / f"m{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        io.write_instance_png(tmp_path / "data" / "masks" / f"m{i}.png", mask)
    run = train(TrainConfig(data=tmp_path / "data", model="fcn", mode="semantic", binary=True, steps=2, batch_size=2,
                            img_size=32, width=4, seed=5, out=tmp_path / "run"))
    result = evaluate_model(tmp_path / "data", "semantic", weights=run.best, device="cpu")
    assert result["images"] == run.val_images and 0 <= result["miou"] <= 1
    assert result["miou"] == pytest.approx(read_card(run.best)["metrics"]["miou"], abs=1e-6)
