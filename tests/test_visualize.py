"""`segcli visualize` on a hand-made `segcli predict --out` folder (the layout of segcli.outputs) of three tiny
images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import draw, io
from segcli.cli import app
from segcli.services.visualize import VisualizeConfig, visualize

runner = CliRunner()
H, W = 40, 48
STEMS = ("a", "b", "c")
PALETTE = [(0, 0, 0), (128, 64, 128), (0, 0, 142)]  # background (black), road, car
CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0, "color": [128, 64, 128]},
    {"id": 26, "name": "car", "isthing": 1, "color": [0, 0, 142]},
]
LEFT_CAR, RIGHT_CAR = (slice(5, 15), slice(4, 20)), (slice(5, 15), slice(20, 36))  # touching


def semantic_map() -> np.ndarray:
    labels = np.zeros((H, W), np.uint8)
    labels[20:] = 1
    labels[LEFT_CAR] = labels[RIGHT_CAR] = 2
    return labels


def instance_map() -> np.ndarray:
    ids = np.zeros((H, W), np.uint16)
    ids[LEFT_CAR], ids[RIGHT_CAR] = 1, 2
    return ids


def panoptic_map() -> np.ndarray:
    segments = np.zeros((H, W), np.int32)
    segments[20:] = 1
    segments[LEFT_CAR], segments[RIGHT_CAR] = 2, 3
    return segments


def panoptic_annotation(stem: str) -> dict:
    infos = [(1, 7, 0), (2, 26, 1), (3, 26, 1)]
    return {"image_id": stem, "file_name": f"{stem}.png",
            "segments_info": [{"id": i, "category_id": c, "area": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0}
                              for i, c, _ in infos]}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    for stem in STEMS:
        io.write_image(folder / f"{stem}.png", rng.integers(90, 170, (H, W, 3), dtype=np.uint8))
    return folder


@pytest.fixture
def pred(tmp_path: Path, images: Path) -> Path:
    """What `segcli predict --mode panoptic/instance/semantic --out pred` writes, by hand."""
    out = tmp_path / "pred"
    results = []
    for stem in STEMS:
        io.write_class_png(out / "semantic" / f"{stem}.png", semantic_map(), PALETTE)
        io.write_instance_png(out / "instance" / f"{stem}.png", instance_map())
        io.write_panoptic_png(out / "panoptic" / f"{stem}.png", panoptic_map())
        for score in (0.9, 0.6):  # id 1 is the better one (predict numbers ids by descending score)
            results.append({"image_id": stem, "file_name": f"{stem}.png", "category_id": 26, "score": score})
    io.write_json(out / "instances.json", results)
    io.write_json(out / "panoptic.json",
                  {"annotations": [panoptic_annotation(s) for s in STEMS], "categories": CATEGORIES})
    return out


@pytest.fixture
def gt(tmp_path: Path) -> Path:
    """Ground truth: the prediction's semantic map without the right car (so it is a false positive)."""
    labels = semantic_map()
    labels[RIGHT_CAR] = 0
    for stem in STEMS:
        io.write_class_png(tmp_path / "gt" / f"{stem}.png", labels, PALETTE)
    return tmp_path / "gt"


@pytest.fixture
def legend_rows(monkeypatch) -> list[list[str]]:
    """The names of every legend drawn, in order."""
    drawn: list[list[str]] = []
    real = draw.with_legend

    def spy(image, names, colors):
        drawn.append(list(names))
        return real(image, names, colors)

    monkeypatch.setattr(draw, "with_legend", spy)
    return drawn


def run(tmp_path: Path, inputs, **options):
    return visualize(VisualizeConfig(inputs=[str(i) for i in inputs], out=tmp_path / "out", **options))


# ---------------------------------------------------------------- overlays and legends


def test_semantic_pictures_have_a_legend_of_the_classes_present_without_background(tmp_path, images, pred, legend_rows):
    summary = run(tmp_path, [images], pred=pred, mode="semantic")
    assert summary.mode == "semantic" and not summary.failures
    assert [p.name for p in summary.outputs] == ["a.png", "b.png", "c.png"]
    picture = io.read_image(summary.outputs[0])
    assert picture.shape[0] >= H and picture.shape[1] > W  # the legend on the right, padded to the taller
    assert legend_rows[0] == ["class 1", "class 2"]  # the palette's black class 0 is background
    legend_pixels = {tuple(p) for p in picture[:, W:].reshape(-1, 3)}
    assert PALETTE[1] in legend_pixels and PALETTE[2] in legend_pixels


def test_classes_txt_names_the_classes(tmp_path, images, pred, legend_rows):
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n")
    run(tmp_path, [images / "a.png"], pred=pred, mode="semantic", classes=tmp_path / "classes.txt")
    assert legend_rows == [["road", "car"]]


def test_no_legend_keeps_the_image_size_and_tints_the_classes(tmp_path, images, pred):
    summary = run(tmp_path, [images / "a.png"], pred=pred, mode="semantic", legend=False, alpha=1.0)
    picture = io.read_image(summary.outputs[0])
    assert picture.shape == (H, W, 3)
    assert tuple(picture[10, 10]) == PALETTE[2] and tuple(picture[30, 10]) == PALETTE[1]
    assert (picture[:5] == io.read_image(images / "a.png")[:5]).all()  # background left clear


def test_panoptic_is_the_default_and_takes_names_and_colours_from_its_json(tmp_path, images, pred, legend_rows):
    summary = run(tmp_path, [images], pred=pred)
    assert summary.mode == "panoptic"
    assert legend_rows[0] == ["road", "car"]
    picture = io.read_image(summary.outputs[0])
    assert (0, 0, 142) in {tuple(p) for p in picture[:, W:].reshape(-1, 3)}


def test_panoptic_instances_of_one_class_get_different_shades(tmp_path, images, pred):
    summary = run(tmp_path, [images / "a.png"], pred=pred, legend=False, alpha=1.0, contours=False)
    picture = io.read_image(summary.outputs[0])
    assert tuple(picture[10, 10]) != tuple(picture[10, 30])


def test_instances_list_class_and_score_and_touching_ones_differ(tmp_path, images, pred, legend_rows):
    (tmp_path / "classes.txt").write_text("background stuff coco_id=0\nroad stuff coco_id=7\ncar thing coco_id=26\n")
    run(tmp_path, [images / "a.png"], pred=pred, mode="instance", classes=tmp_path / "classes.txt")
    assert legend_rows[0] == ["#1 car 0.90", "#2 car 0.60"]
    summary = run(tmp_path, [images / "a.png"], pred=pred, mode="instance", legend=False, alpha=1.0, contours=False)
    picture = io.read_image(summary.outputs[0])
    assert tuple(picture[10, 10]) != tuple(picture[10, 30])


def test_instances_without_classes_name_the_category_id(tmp_path, images, pred, legend_rows):
    run(tmp_path, [images / "a.png"], pred=pred, mode="instance")
    assert legend_rows[0] == ["#1 category 26 0.90", "#2 category 26 0.60"]


def test_contours_are_on_for_instances_by_default(tmp_path, images, pred):
    outlined = io.read_image(run(tmp_path, [images / "a.png"], pred=pred, mode="instance", legend=False).outputs[0])
    plain = io.read_image(run(tmp_path, [images / "a.png"], pred=pred, mode="instance", legend=False,
                              contours=False).outputs[0])
    changed = (outlined != plain).any(axis=2)
    assert changed[5, 4:36].all() and not changed[10, 10]


# ---------------------------------------------------------------- ground truth


def test_gt_draws_the_error_map_with_the_image_iou(tmp_path, images, pred, gt, legend_rows):
    summary = run(tmp_path, [images / "a.png"], pred=pred, mode="semantic", gt=gt)
    # road is right (IoU 1); car: 160 px correct of 320 predicted (IoU 0.5); background excluded
    assert summary.ious == {"a": pytest.approx(0.75)}
    picture = io.read_image(summary.outputs[0])
    corner = {tuple(p) for p in picture[2:16, 2:W].reshape(-1, 3)}
    assert (0, 0, 0) in corner and (255, 255, 255) in corner  # "mIoU 0.750" on its box
    no_gt = io.read_image(run(tmp_path, [images / "a.png"], pred=pred, mode="semantic").outputs[0])
    assert (0, 0, 0) not in {tuple(p) for p in no_gt[2:16, 2:W].reshape(-1, 3)}
    assert legend_rows[0] == [draw.ERROR_NAMES[k] for k in ("tp", "fp", "fn")]  # the error map shows no class colours
    assert tuple(picture[12, 30]) != tuple(picture[12, 10])  # false positive vs true positive


def test_gt_equal_to_the_prediction_scores_one(tmp_path, images, pred):
    summary = run(tmp_path, [images], pred=pred, mode="semantic", gt=pred / "semantic")
    assert summary.ious == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_instance_gt_scores_the_foreground(tmp_path, images, pred):
    ids = instance_map()
    ids[RIGHT_CAR] = 0
    io.write_instance_png(tmp_path / "one_car.png", ids)
    summary = run(tmp_path, [images / "a.png"], pred=pred, mode="instance", gt=tmp_path / "one_car.png")
    assert summary.ious == {"a": pytest.approx(0.5)}


def test_panoptic_gt_png_reads_its_classes_from_the_json_beside_its_folder(tmp_path, images, pred):
    annotations = tmp_path / "annotations"
    io.write_panoptic_png(annotations / "panoptic_val" / "a.png", panoptic_map())
    io.write_json(annotations / "panoptic_val.json",
                  {"annotations": [panoptic_annotation("a")], "categories": CATEGORIES})
    summary = run(tmp_path, [images / "a.png"], pred=pred, gt=annotations / "panoptic_val")
    assert summary.ious == {"a": 1.0}


def test_side_by_side_has_image_prediction_ground_truth_and_errors(tmp_path, images, pred, gt):
    with_gt = run(tmp_path, [images / "a.png"], pred=pred, mode="semantic", gt=gt, side_by_side=True, legend=False)
    assert io.read_image(with_gt.outputs[0]).shape == (H + draw.TITLE_HEIGHT, 4 * W + 3 * 4, 3)
    alone = run(tmp_path, [images / "a.png"], pred=pred, side_by_side=True, legend=False)
    assert io.read_image(alone.outputs[0]).shape == (H + draw.TITLE_HEIGHT, 2 * W + 4, 3)


# ---------------------------------------------------------------- outputs


def test_grid_writes_one_contact_sheet_of_every_picture(tmp_path, images, pred):
    summary = run(tmp_path, [images], pred=pred, grid=True, cols=2, legend=False)
    assert summary.grid == tmp_path / "out" / "grid.png"
    assert io.read_image(summary.grid).shape == (2 * (H + 4) + 4, 2 * (W + 4) + 4, 3)
    assert len(summary.outputs) == 3


def test_jpg_output(tmp_path, images, pred):
    summary = run(tmp_path, [images / "a.png"], pred=pred, ext="jpg")
    assert summary.outputs == [tmp_path / "out" / "a.jpg"] and summary.outputs[0].is_file()


def test_a_prediction_of_another_size_fails_that_image_only(tmp_path, images, pred):
    io.write_class_png(pred / "semantic" / "b.png", np.zeros((10, 10), np.uint8), PALETTE)
    summary = run(tmp_path, [images], pred=pred, mode="semantic")
    assert [p.name for p in summary.outputs] == ["a.png", "c.png"]
    assert summary.failures[0][0].endswith("b.png") and "10x10" in summary.failures[0][1]


# ---------------------------------------------------------------- --mask


def test_mask_file_draws_one_image(tmp_path, images):
    io.write_class_png(tmp_path / "mask.png", semantic_map(), PALETTE)
    summary = run(tmp_path, [images / "a.png"], mask=tmp_path / "mask.png", legend=False, alpha=1.0)
    assert tuple(io.read_image(summary.outputs[0])[10, 10]) == PALETTE[2]


def test_binary_mask_draws_its_255_pixels_as_the_object(tmp_path, images):
    mask = np.zeros((H, W), np.uint8)
    mask[LEFT_CAR] = 255
    io.write_image(tmp_path / "binary.png", mask)
    summary = run(tmp_path, [images / "a.png"], mask=tmp_path / "binary.png", legend=False)
    picture, image = io.read_image(summary.outputs[0]), io.read_image(images / "a.png")
    assert (picture[LEFT_CAR] != image[LEFT_CAR]).any() and (picture[30:] == image[30:]).all()


def test_panoptic_mask_without_json_is_drawn_as_classless_segments(tmp_path, images, legend_rows):
    io.write_panoptic_png(tmp_path / "pan.png", panoptic_map())
    run(tmp_path, [images / "a.png"], mask=tmp_path / "pan.png", mask_kind="panoptic")
    assert legend_rows[0] == ["#1", "#2", "#3"]


# ---------------------------------------------------------------- the command and its exit codes


def test_cli_writes_pictures_and_exits_0(tmp_path, images, pred, gt):
    result = runner.invoke(app, ["visualize", str(images), "--pred", str(pred), "--gt", str(gt), "--mode", "semantic",
                                 "--side-by-side", "--grid", "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png", "grid.png"]


def test_cli_missing_prediction_fails_that_image_and_exits_1(tmp_path, images, pred):
    (pred / "panoptic" / "b.png").unlink()
    result = runner.invoke(app, ["visualize", str(images), "--pred", str(pred), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1
    assert "b.png" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


@pytest.mark.parametrize("options", [
    ["--pred", "PRED", "--mask", "MASK"],  # both
    [],  # neither
    ["--mask", "MASK"],  # one mask for three images
    ["--pred", "PRED", "--mode", "semantic", "--alpha", "2"],
    ["--pred", "MISSING"],
])
def test_cli_bad_option_combinations_exit_2(tmp_path, images, pred, options):
    io.write_class_png(tmp_path / "mask.png", semantic_map(), PALETTE)
    names = {"PRED": str(pred), "MASK": str(tmp_path / "mask.png"), "MISSING": str(tmp_path / "nope")}
    result = runner.invoke(app, ["visualize", str(images), *(names.get(o, o) for o in options),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_mode_the_folder_lacks_exits_2(tmp_path, images, pred):
    import shutil

    shutil.rmtree(pred / "instance")
    result = runner.invoke(app, ["visualize", str(images), "--pred", str(pred), "--mode", "instance"])
    assert result.exit_code == 2 and "instance" in result.output


def test_cli_no_inputs_exits_2_with_one_line(tmp_path, pred):
    result = runner.invoke(app, ["visualize", "-", "--pred", str(pred), "--out", str(tmp_path / "o")], input="")
    assert result.exit_code == 2
    assert "no input images" in result.output and len(result.output.strip().splitlines()) == 1


def test_semantic_predictions_are_named_by_the_categories_predict_writes(pred, images):
    from segcli.services.visualize import _prediction, _source

    names = [{"id": 1, "name": "background", "isthing": 0}, {"id": 7, "name": "road", "isthing": 0},
              {"id": 26, "name": "car", "isthing": 1}]
    io.write_json(pred / "categories.json", {"categories": names})
    for mode in ("semantic", "instance"):
        source = _source(VisualizeConfig(inputs=[str(images)], pred=pred, mode=mode))
        labels = _prediction(source, images / "a.png", "a", None)
        assert labels.space.names == ["background", "road", "car"], mode
    source = _source(VisualizeConfig(inputs=[str(images)], pred=pred, mode="semantic"))
    semantic = _prediction(source, images / "a.png", "a", None)
    assert semantic.space.colors[:3] == PALETTE  # the colours the PNG was drawn with
