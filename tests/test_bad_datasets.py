"""Malformed datasets are refused before the first training step, with one line naming the file (exit 2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.synth import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("bad-data") / "shapes", n=6, size=32, seed=0)


@pytest.fixture
def data(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "shapes")


def _edit_json(path, edit):
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def _train(data_path, mode, model, out, *extra):
    return runner.invoke(app, ["train", "--data", str(data_path), "--mode", mode, "--model", model, "--steps", "1",
                               "--batch-size", "2", "--img-size", "32", "--width", "4", "--out", str(out), "--quiet",
                               "--device", "cpu", *extra])


def _refused(result, out, *names):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    assert not (out / "last.safetensors").exists() and not (out / "metrics.jsonl").exists()  # no step was taken


def test_the_pristine_dataset_trains(data, tmp_path):
    result = _train(data, "semantic", "unet", tmp_path / "run", "--format", "folder")
    assert result.exit_code == 0, result.output


def test_a_mask_of_the_wrong_size(data, tmp_path):
    val = (data / "splits" / "val.txt").read_text().split()[0]  # in the validation split: checked before training too
    mask = data / "masks" / f"{val}.png"
    io.write_class_png(mask, np.zeros((16, 24), np.uint8), [(0, 0, 0)])
    _refused(_train(data, "semantic", "unet", tmp_path / "run", "--format", "folder"), tmp_path / "run", mask, "24x16")


def test_class_ids_out_of_range(data, tmp_path):
    mask = sorted((data / "masks").iterdir())[1]
    labels = io.read_label_png(mask)
    labels[0, 0] = 40
    io.write_class_png(mask, labels, [(0, 0, 0)])
    _refused(_train(data, "semantic", "unet", tmp_path / "run", "--format", "folder"), tmp_path / "run", mask, "40")


@pytest.mark.parametrize("section, key", [("annotations", "segmentation"), ("annotations", "category_id"),
                                          ("images", "file_name"), ("categories", "name")])
def test_coco_json_with_missing_keys(data, tmp_path, section, key):
    coco = data / "annotations" / "instances_train.json"
    _edit_json(coco, lambda c: c[section][0].pop(key))
    _refused(_train(coco, "instance", "maskrcnn_small", tmp_path / "run"), tmp_path / "run", coco, repr(key))


@pytest.mark.parametrize("counts", ["wrong-sum", "negative", "garbage-string", "short-string"])
def test_rle_with_wrong_counts(data, tmp_path, counts):
    coco = data / "annotations" / "instances_train.json"

    def edit(content):
        ann = content["annotations"][0]
        image = next(i for i in content["images"] if i["id"] == ann["image_id"])
        h, w = image["height"], image["width"]
        ann["segmentation"] = {"size": [h, w], "counts": {
            "wrong-sum": [10, 20, h * w],  # runs beyond the image: pycocotools would write past the mask
            "negative": [h * w + 5, -5],
            "garbage-string": "not an RLE at all",
            "short-string": "0", }[counts]}

    _edit_json(coco, edit)
    _refused(_train(coco, "instance", "maskrcnn_small", tmp_path / "run"), tmp_path / "run", coco, "RLE")


def test_panoptic_png_ids_missing_from_the_json(data, tmp_path):
    panoptic = data / "annotations" / "panoptic_train.json"
    content = json.loads(panoptic.read_text())
    ann = next(a for a in content["annotations"] if len(a["segments_info"]) > 1)
    dropped = ann["segments_info"].pop()
    panoptic.write_text(json.dumps(content))
    png = data / "annotations" / "panoptic_train" / ann["file_name"]
    _refused(_train(panoptic, "panoptic", "unet_panoptic", tmp_path / "run"), tmp_path / "run", png, dropped["id"])


@pytest.mark.parametrize("kind", ["instances", "panoptic"])
def test_a_file_name_escaping_the_dataset_root(data, tmp_path, kind):
    coco = data / "annotations" / f"{kind}_train.json"
    secret = tmp_path / "secret.png"
    io.write_image(secret, np.zeros((32, 32, 3), np.uint8))
    _edit_json(coco, lambda c: c["images"][0].update(file_name="../../secret.png"))
    mode, model = ("instance", "maskrcnn_small") if kind == "instances" else ("panoptic", "unet_panoptic")
    _refused(_train(coco, mode, model, tmp_path / "run"), tmp_path / "run", coco, "../../secret.png")
