"""The user's scale: train --pixel-size in the card, predict/eval --pixel-size / --object-size resampling the input to
the model's scale and the outputs back (ids kept), the refusals, and the note when objects look the wrong size."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.checkpoint import read_card
from segcli.cli import app
from segcli.data.synth import generate
from segcli.inference import resample_prediction
from segcli.services.resolve import bundled_checkpoint
from segcli.structures import Instance, Mode, Prediction, paste_segments

runner = CliRunner()
SIZE = 96


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate("shapes", tmp_path_factory.mktemp("scale") / "shapes", n=4, size=SIZE, seed=3)


def shapes_copy(folder: Path, **card_fields) -> Path:
    """The bundled shapes model under another name, its card changed by `card_fields`."""
    weights = bundled_checkpoint("shapes")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, folder / "model.safetensors")
    io.write_json(folder / "model.json", read_card(weights) | card_fields)
    return folder / "model.safetensors"


def _invoke(*args):
    return runner.invoke(app, [*map(str, args), "--device", "cpu"])


# ---------------------------------------------------------------- resampling keeps ids


def _prediction(size: tuple[int, int]) -> Prediction:
    rng = np.random.default_rng(0)
    semantic = np.zeros(size, np.uint8)
    instances = []
    for number in range(5):
        mask = np.zeros(size, bool)
        y, x = rng.integers(0, size[0] - 12), rng.integers(0, size[1] - 12)
        mask[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12)] = True
        semantic[mask] = 1
        instances.append(Instance(mask, 1, score=1.0 - number / 10))
    panoptic, segments = paste_segments(semantic, instances, [False, True])
    return Prediction(semantic=semantic, instances=instances, panoptic=panoptic, segments=segments)


def test_resampling_up_and_back_gives_the_same_labels_and_ids():
    small = _prediction((50, 70))
    large = resample_prediction(small, (100, 140))
    back = resample_prediction(large, (50, 70))
    assert large.panoptic.shape == (100, 140) and large.semantic.shape == (100, 140)
    assert np.array_equal(back.semantic, small.semantic) and np.array_equal(back.panoptic, small.panoptic)
    assert [s.id for s in large.segments] == [s.id for s in small.segments]  # ids as post-processing made them
    for before, grown in zip(small.segments, large.segments):
        assert grown.area == 4 * before.area == int((large.panoptic == grown.id).sum())
        assert grown.bbox == tuple(2 * v for v in before.bbox)
    assert [i.score for i in back.instances] == [i.score for i in small.instances]
    for a, b in zip(back.instances, small.instances):
        assert np.array_equal(a.mask, b.mask) and a.bbox == b.bbox


def test_objects_smaller_than_a_pixel_of_the_new_grid_are_dropped():
    mask = np.zeros((40, 40), bool)
    mask[0, 0] = True  # no target pixel centre falls on it at a quarter of the size
    big = np.zeros((40, 40), bool)
    big[8:24, 8:24] = True
    shrunk = resample_prediction(Prediction(instances=[Instance(big, 1, 0.9), Instance(mask, 1, 0.5)]), (10, 10))
    assert len(shrunk.instances) == 1 and shrunk.instances[0].area == 16


# ---------------------------------------------------------------- predict and eval


def test_pixel_size_resamples_the_input_and_brings_ids_back(shapes, tmp_path, model_inputs):
    weights = shapes_copy(tmp_path / "m", pixel_size_um=0.5)
    results = {}
    for name, extra in (("native", []), ("fine", ["--pixel-size", "0.25"]), ("coarse", ["--pixel-size", "1.0"])):
        model_inputs.clear()
        out = tmp_path / name
        result = _invoke("predict", shapes / "images", "--weights", weights, "--mode", "panoptic", "--out", out, *extra)
        assert result.exit_code == 0, result.output
        results[name] = (out, sorted({tuple(batch.shape[-2:]) for batch, _ in model_inputs}))
    # The model sees the input at its training pixel size: 0.25 µm pixels shrunk to half, 1 µm pixels doubled.
    assert results["native"][1] == [(SIZE, SIZE)]
    assert results["fine"][1] == [(SIZE // 2, SIZE // 2)]
    assert results["coarse"][1] == [(2 * SIZE, 2 * SIZE)]
    for out, _ in results.values():
        annotations = {a["file_name"]: a for a in io.read_json(out / "panoptic.json")["annotations"]}
        for png in sorted((out / "panoptic").glob("*.png")):
            ids = io.read_panoptic_png(png)
            assert ids.shape == (SIZE, SIZE)  # the input's size
            infos = annotations[png.name]["segments_info"]
            assert infos, png
            assert sorted(np.unique(ids[ids > 0]).tolist()) == sorted(s["id"] for s in infos)
            for info in infos:  # every id of the json is a region of the PNG with the json's area
                assert int((ids == info["id"]).sum()) == info["area"]


def test_object_size_resamples_by_the_cards_object_diameter(shapes, tmp_path, model_inputs):
    weights = shapes_copy(tmp_path / "m", object_diameter=30.0)
    result = _invoke("predict", shapes / "images", "--weights", weights, "--mode", "instance", "--out", tmp_path / "o",
                     "--object-size", "60")
    assert result.exit_code == 0, result.output
    sizes = {tuple(batch.shape[-2:]) for batch, _ in model_inputs}
    assert sizes == {(SIZE // 2, SIZE // 2)}  # objects twice the model's: the images halved
    for png in (tmp_path / "o" / "instance").glob("*.png"):
        ids = io.read_label_png(png)
        assert ids.shape == (SIZE, SIZE)
        assert sorted(np.unique(ids[ids > 0]).tolist()) == list(range(1, int(ids.max()) + 1))  # ids 1..N


def test_eval_with_object_size_scores_the_resampled_predictions(shapes, tmp_path):
    weights = shapes_copy(tmp_path / "m", object_diameter=30.0)
    scores = {}
    for size in (None, "30", "15"):
        extra = ["--object-size", size] if size else []
        result = _invoke("eval", "--data", shapes, "--split", "all", "--weights", weights, "--mode", "instance", *extra,
                         "--json", "-")
        assert result.exit_code == 0, result.output
        scores[size] = json.loads(result.stdout.splitlines()[-1])["ap"]
    assert scores["30"] == scores[None]  # the card's own object size: the images as they are
    assert scores["15"] != scores["30"]  # objects half that size: the model sees the images doubled


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize("args, message", [
    (["--pixel-size", "0"], "--pixel-size 0.0: must be above 0"),
    (["--pixel-size", "-0.5"], "--pixel-size -0.5: must be above 0"),
    (["--object-size", "0"], "--object-size 0.0: must be above 0"),
    (["--pixel-size", "0.5", "--object-size", "20"], "--pixel-size and --object-size: give one"),
    (["--object-size", "0.1"], "resampled 300x"),
])
def test_bad_scales_are_refused_in_one_line(command, args, message, shapes, tmp_path):
    weights = shapes_copy(tmp_path / "m", pixel_size_um=0.5, object_diameter=30.0)
    where = [shapes / "images", "--out", tmp_path / "out"] if command == "predict" else ["--data", shapes]
    result = _invoke(command, *where, "--weights", weights, "--mode", "instance", *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_pixel_size_needs_a_card_with_one(shapes, tmp_path):
    result = _invoke("predict", shapes / "images", "--model", "shapes", "--mode", "instance", "--out", tmp_path / "o",
                     "--pixel-size", "0.5")
    assert result.exit_code == 2
    assert "records no pixel size" in result.output and "--object-size" in result.output


def test_objects_of_another_size_are_noted_once_with_the_object_size_to_give(shapes, tmp_path):
    weights = shapes_copy(tmp_path / "m", object_diameter=200.0)  # the training objects were huge
    result = _invoke("predict", shapes / "images", "--weights", weights, "--mode", "instance", "--out", tmp_path / "a")
    assert result.exit_code == 0
    notes = [line for line in result.stderr.splitlines() if "--object-size" in line]
    assert len(notes) == 1
    found = re.search(r"--object-size (\d+)", notes[0]).group(1)
    # The model's own object size: nothing to say; and none when the user gave the scale.
    weights = shapes_copy(tmp_path / "n", object_diameter=float(found))
    quiet = _invoke("predict", shapes / "images", "--weights", weights, "--mode", "instance", "--out", tmp_path / "b")
    assert "--object-size" not in quiet.stderr
    given = _invoke("eval", "--data", shapes, "--split", "all",
                    "--weights", shapes_copy(tmp_path / "o", object_diameter=200.0),
                    "--mode", "instance", "--object-size", "200", "--json", "-")
    assert given.exit_code == 0 and "--object-size" not in given.stderr
    noted = _invoke("eval", "--data", shapes, "--split", "all",
                    "--weights", shapes_copy(tmp_path / "p", object_diameter=200.0),
                    "--mode", "instance", "--json", "-")
    assert noted.exit_code == 0 and "rerun with --object-size" in noted.stderr


# ---------------------------------------------------------------- the card


def test_train_records_the_pixel_size_and_the_object_diameter(shapes, tmp_path):
    out = tmp_path / "run"
    result = _invoke("train", "--data", shapes, "--model", "unet_panoptic", "--mode", "panoptic", "--steps", "1",
                     "--batch-size", "2", "--width", "4", "--val-every", "0", "--out", out, "--pixel-size", "0.25",
                     "-q")
    assert result.exit_code == 0, result.output
    card = read_card(out / "best.safetensors")
    assert card["pixel_size_um"] == 0.25
    sides = card["plan"]["fingerprint"]["object_diameter"].values()
    assert card["object_diameter"] == pytest.approx(2 * float(np.median(list(sides))) / np.sqrt(np.pi), abs=0.1)
    refused = _invoke("train", "--data", shapes, "--model", "unet", "--out", tmp_path / "r", "--pixel-size", "0")
    assert refused.exit_code == 2 and "--pixel-size" in refused.output


def test_modes_without_objects_give_no_note(shapes, tmp_path):
    weights = shapes_copy(tmp_path / "m", object_diameter=200.0)
    result = _invoke("predict", shapes / "images", "--weights", weights, "--mode", Mode.SEMANTIC.value,
                     "--out", tmp_path / "a")
    assert result.exit_code == 0 and "--object-size" not in result.stderr
