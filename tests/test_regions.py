"""Per-object measurements: predict --measure, segcli measure, and the table's values against scikit-image."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.measure import regionprops_table
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.load import load_dataset
from segcli.data.synth import generate
from segcli.regions import Objects, components, measure, parquet_available
from segcli.structures import LabelSpace

runner = CliRunner()
NUCLEUS = LabelSpace(["background", "nucleus"], isthing=[False, True])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate("shapes", tmp_path_factory.mktemp("regions") / "shapes", n=4, size=64, seed=3)


def _invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _ids(instances, shape) -> np.ndarray:
    ids = np.zeros(shape, np.int32)
    for number, inst in enumerate(instances, 1):
        ids[inst.mask] = number
    return ids


def _check_against_skimage(ids: np.ndarray, intensities: np.ndarray, rows: list[dict]) -> None:
    reference = regionprops_table(ids, intensities, properties=(
        "label", "area", "centroid", "bbox", "perimeter", "equivalent_diameter_area", "axis_major_length",
        "axis_minor_length", "eccentricity", "solidity", "orientation", "intensity_mean", "intensity_std",
        "intensity_min", "intensity_max"))
    assert [row["id"] for row in rows] == reference["label"].tolist()
    same = {"area": "area", "perimeter": "perimeter", "equivalent_diameter": "equivalent_diameter_area",
            "major_axis": "axis_major_length", "minor_axis": "axis_minor_length", "eccentricity": "eccentricity",
            "solidity": "solidity", "orientation": "orientation"}
    for column, prop in same.items():
        assert [row[column] for row in rows] == pytest.approx(reference[prop].tolist()), column
    # Positions in pixel-edge coordinates: scikit-image's pixel-centre indices plus half a pixel.
    assert [row["centroid_x"] for row in rows] == pytest.approx((reference["centroid-1"] + 0.5).tolist())
    assert [row["centroid_y"] for row in rows] == pytest.approx((reference["centroid-0"] + 0.5).tolist())
    boxes = [(row["bbox_x"], row["bbox_y"], row["bbox_x"] + row["bbox_w"], row["bbox_y"] + row["bbox_h"])
             for row in rows]
    assert boxes == list(zip(*(reference[f"bbox-{k}"].tolist() for k in (1, 0, 3, 2))))
    channels = intensities.shape[2] if intensities.ndim == 3 else 1
    for channel in range(channels):
        suffix = f"-{channel}" if channels > 1 else ""
        for statistic in ("mean", "std", "min", "max"):
            assert [row[f"ch{channel}_{statistic}"] for row in rows] == pytest.approx(
                reference[f"intensity_{statistic}{suffix}"].tolist())
        sums = [float(intensities[ids == row["id"]][..., channel].sum() if channels > 1
                      else intensities[ids == row["id"]].sum())
                for row in rows]
        assert [row[f"ch{channel}_integrated"] for row in rows] == pytest.approx(sums)


def test_measurements_equal_scikit_images_on_ground_truth(shared_data):
    """DSB 2018 test images: every nucleus of the ground truth, on the images' own (RGBA-stored) values."""
    dataset = load_dataset(shared_data / "dsb2018_nuclei", split="test")
    for index in range(3):
        sample, record = dataset[index], dataset.records[index]
        ids = _ids(sample.instances, sample.image.shape[:2])
        intensities = io.read_intensities(record.image)
        rows = measure(Objects(ids, {n: 1 for n in range(1, len(sample.instances) + 1)}), NUCLEUS, record.name,
                       intensities)
        assert len(rows) == len(sample.instances) and {row["class"] for row in rows} == {"nucleus"}
        _check_against_skimage(ids, intensities, rows)


def test_measurements_on_synthetic_objects_with_holes_borders_and_single_pixels(rng):
    ids = np.zeros((40, 50), np.int32)
    ids[5:20, 5:20] = 1
    ids[9:14, 9:14] = 0  # a hole, with object 2 inside it
    ids[11, 11] = 2
    ids[30:40, 40:50] = 3  # on the border
    ids[0, 49] = 4  # one pixel in the corner
    intensities = rng.integers(0, 4096, (40, 50, 2)).astype(np.uint16)
    rows = measure(Objects(ids, {i: 1 for i in range(1, 5)}, {1: 0.5}), NUCLEUS, "a", intensities)
    _check_against_skimage(ids, intensities, rows)
    assert rows[0]["score"] == 0.5 and rows[1]["score"] is None
    assert rows[3]["area"] == 1 and (rows[3]["centroid_x"], rows[3]["centroid_y"]) == (49.5, 0.5)


def test_intensities_of_a_16_bit_image_are_its_own_counts(tmp_path):
    """12-bit counts in a 16-bit PNG: the table has them, not the 0..255 the model saw."""
    counts = np.full((32, 32), 100, np.uint16)
    counts[8:16, 8:16] = 3000
    counts[10, 10] = 4095
    io.write_instance_png(tmp_path / "image.png", counts)  # a 16-bit grey PNG
    intensities = io.read_intensities(tmp_path / "image.png")
    assert intensities.dtype == np.uint16 and intensities.ndim == 2
    ids = np.zeros((32, 32), np.int32)
    ids[8:16, 8:16] = 1
    row = measure(Objects(ids, {1: 1}), NUCLEUS, "image", intensities)[0]
    assert (row["ch0_min"], row["ch0_max"]) == (3000, 4095) and "ch1_mean" not in row
    assert row["ch0_mean"] == pytest.approx((63 * 3000 + 4095) / 64)
    assert row["ch0_integrated"] == 63 * 3000 + 4095
    # Float images keep their values too; alpha is no channel.
    tifffile.imwrite(tmp_path / "float.tif", np.full((32, 32), 0.25, np.float32))
    float_intensities = io.read_intensities(tmp_path / "float.tif")
    assert measure(Objects(ids, {1: 1}), NUCLEUS, "f", float_intensities)[0]["ch0_mean"] == 0.25
    Image.fromarray(np.full((32, 32, 4), 7, np.uint8), "RGBA").save(tmp_path / "alpha.png")
    assert io.read_intensities(tmp_path / "alpha.png").shape == (32, 32, 3)


def test_pixel_size_gives_microns_and_semantic_objects_are_connected_regions():
    classes = np.zeros((20, 20), np.uint8)
    classes[2:6, 2:6] = 1
    classes[10:12, 10:18] = 1
    classes[15:19, 0:3] = 2  # a stuff class: no object
    space = LabelSpace(["background", "nucleus", "membrane"], isthing=[False, True, False])
    objects = components(classes, space)
    rows = measure(objects, space, "s", pixel_size=0.5)
    assert [row["area"] for row in rows] == [16, 16] and [row["area_um2"] for row in rows] == [4.0, 4.0]
    assert rows[1]["major_axis_um"] == pytest.approx(rows[1]["major_axis"] * 0.5)
    assert rows[0]["perimeter_um"] == pytest.approx(rows[0]["perimeter"] * 0.5)


# ---------------------------------------------------------------- predict --measure through the CLI


def test_predict_measure_writes_the_table_and_counts(shapes, tmp_path):
    out = tmp_path / "out"
    result = _invoke("predict", shapes / "images", "--model", "shapes", "--mode", "instance", "--out", out, "--json",
                     "--no-overlay", "--measure", "--pixel-size", "0.25", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    rows = _rows(out / "objects.csv")
    assert rows, "the shapes model finds objects in its own kind of images"
    for line in lines:
        stem = Path(line["input"]).stem
        mine = [row for row in rows if row["image"] == stem]
        assert [int(row["id"]) for row in mine] == [s["id"] for s in line["segments"]]
        assert [int(row["area"]) for row in mine] == [s["area"] for s in line["segments"]]
        counted = {}
        for row in mine:
            counted[row["class"]] = counted.get(row["class"], 0) + 1
        assert line["objects"] == counted
        # The table's rows are the instance PNG's objects, measured on the image.
        ids = io.read_label_png(out / "instance" / f"{stem}.png")
        for row in mine:
            assert int(row["area"]) == int((ids == int(row["id"])).sum())
    assert float(rows[0]["area_um2"]) == pytest.approx(int(rows[0]["area"]) * 0.0625)
    assert {"ch0_mean", "ch2_integrated", "score", "solidity"} <= set(rows[0])
    if parquet_available():
        import pyarrow.parquet as pq

        table = pq.read_table(out / "objects.parquet")
        assert table.num_rows == len(rows) and table.column_names == list(rows[0])
        assert table.column("area").to_pylist() == [int(row["area"]) for row in rows]


def test_skip_existing_keeps_the_table_whole(shapes, tmp_path):
    """A resumed run: objects.csv covers every image, each once. The folder's runs all measure or none do."""
    out, images = tmp_path / "out", sorted((shapes / "images").glob("*.png"))
    common = ["--model", "shapes", "--mode", "panoptic", "--no-overlay", "--device", "cpu"]
    assert _invoke("predict", *images[:2], *common, "--out", out, "--measure").exit_code == 0  # the run "killed"
    resumed = _invoke("predict", shapes / "images", *common, "--out", out, "--measure", "--skip-existing", "--json")
    assert resumed.exit_code == 0, resumed.output
    skipped = [json.loads(line)["input"] for line in resumed.stdout.splitlines() if json.loads(line).get("skipped")]
    assert skipped == [str(image) for image in images[:2]]
    rows = _rows(out / "objects.csv")
    fresh = tmp_path / "fresh"
    assert _invoke("predict", shapes / "images", *common, "--out", fresh, "--measure").exit_code == 0
    key = [(row["image"], row["id"], row["area"], row["class"]) for row in rows]
    assert key == [(row["image"], row["id"], row["area"], row["class"]) for row in _rows(fresh / "objects.csv")]
    assert {row["is_thing"] for row in rows} == {"True", "False"}  # panoptic: stuff segments too
    unmeasured = _invoke("predict", shapes / "images", *common, "--out", out, "--skip-existing")
    assert unmeasured.exit_code == 2 and "--measure on; this run has --measure off" in unmeasured.stderr


def test_predict_measures_16_bit_and_alpha_images_on_their_own_values(shapes, tmp_path):
    """The model sees 8-bit RGB; the table sees the 16-bit grey counts and the RGBA image's three colours."""
    source = io.read_image(sorted((shapes / "images").glob("*.png"))[0])
    folder = tmp_path / "in"
    grey = source.mean(axis=2).astype(np.uint16) * 16 + 7  # 12-bit counts
    io.write_instance_png(folder / "deep.png", grey)
    Image.fromarray(np.dstack([source, np.full(source.shape[:2], 128, np.uint8)]), "RGBA").save(folder / "alpha.png")
    out = tmp_path / "out"
    result = _invoke("predict", folder, "--model", "shapes", "--mode", "panoptic", "--out", out, "--measure",
                     "--no-overlay", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = _rows(out / "objects.csv")
    deep = [row for row in rows if row["image"] == "deep"]
    alpha = [row for row in rows if row["image"] == "alpha"]
    assert deep and alpha
    assert max(int(row["ch0_max"]) for row in deep) > 255 and all(row["ch1_mean"] == "" for row in deep)
    ids = io.read_panoptic_png(out / "panoptic" / "deep.png")
    first = deep[0]
    assert int(first["ch0_integrated"]) == int(grey[ids == int(first["id"])].astype(np.int64).sum())
    assert all(row["ch2_mean"] != "" for row in alpha) and "ch3_mean" not in rows[0]


@pytest.mark.parametrize("args, message", [
    (["--pixel-size", "0", "--measure"], "--pixel-size 0.0: must be above 0 (the side of a pixel"),
    (["--pixel-size", "-1", "--measure"], "--pixel-size -1.0: must be above 0 (the side of a pixel"),
    (["--pixel-size", "0.5"], "card records no pixel size for its training data; give --object-size PX"),
])
def test_bad_pixel_sizes_are_refused_in_one_line(args, message, shapes, tmp_path):
    result = _invoke("predict", shapes / "images", "--model", "shapes", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_names_with_spaces_and_non_ascii(shapes, tmp_path):
    folder = tmp_path / "mes images"
    folder.mkdir()
    source = sorted((shapes / "images").glob("*.png"))[0]
    (folder / "noyau été 1.png").write_bytes(source.read_bytes())
    out = tmp_path / "sortie à"
    result = _invoke("predict", folder, "--model", "shapes", "--mode", "instance", "--out", out, "--measure",
                     "--export", "geojson,imagej,yolo", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert {row["image"] for row in _rows(out / "objects.csv")} == {"noyau été 1"}
    assert (out / "export" / "imagej" / "noyau été 1.zip").is_file()
    assert (out / "export" / "yolo" / "labels" / "noyau été 1.txt").is_file()


# ---------------------------------------------------------------- segcli measure


def test_measure_reads_predicts_folder_and_ground_truth(shapes, tmp_path):
    out = tmp_path / "pred"
    assert _invoke("predict", shapes / "images", "--model", "shapes", "--mode", "instance", "--out", out,
                   "--measure", "--no-overlay", "--device", "cpu").exit_code == 0
    table = tmp_path / "again.csv"
    result = _invoke("measure", out / "instance", "--images", shapes / "images", "--out", table)
    assert result.exit_code == 0, result.output
    assert _rows(table) == _rows(out / "objects.csv")  # classes and scores from predict's json, same values
    # Ground truth: the dataset's instance-id PNGs (no classes: "object") and its class PNGs (palette: semantic).
    gt = _invoke("measure", shapes / "instances", "--images", shapes / "images", "--out", "-")
    assert gt.exit_code == 0, gt.output
    rows = list(csv.DictReader(gt.stdout.splitlines()))
    assert {row["class"] for row in rows} == {"object"} and all(row["ch0_mean"] for row in rows)
    semantic = _invoke("measure", shapes / "masks", "--classes", shapes / "classes.txt", "--out", tmp_path / "s.csv")
    assert semantic.exit_code == 0, semantic.output
    assert {row["class"] for row in _rows(tmp_path / "s.csv")} <= {"circle", "square", "triangle"}


def test_measure_tiff_labels_and_bad_inputs(tmp_path):
    ids = np.zeros((16, 16), np.int32)
    ids[2:6, 2:6] = 70000  # beyond 16 bits, as StarDist's int32 TIFFs may hold
    tifffile.imwrite(tmp_path / "cells.tif", ids)
    io.write_image(tmp_path / "img" / "cells.png", np.full((16, 16, 3), 9, np.uint8))
    result = _invoke("measure", tmp_path / "cells.tif", "--images", tmp_path / "img", "--out", tmp_path / "t.parquet"
                     if parquet_available() else tmp_path / "t.csv", "--pixel-size", "2")
    assert result.exit_code == 0, result.output
    io.write_image(tmp_path / "img2" / "cells.png", np.zeros((8, 8, 3), np.uint8))
    wrong = _invoke("measure", tmp_path / "cells.tif", "--images", tmp_path / "img2", "--out", tmp_path / "u.csv")
    assert wrong.exit_code == 1 and "cells.tif: 16x16 px, but its image" in wrong.stderr
    missing = _invoke("measure", tmp_path / "cells.tif", "--images", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "--images" in missing.stderr
    zero = _invoke("measure", tmp_path / "cells.tif", "--pixel-size", "0")
    assert zero.exit_code == 2 and "--pixel-size 0.0" in zero.stderr
    classes = _invoke("measure", tmp_path / "cells.tif", "--classes", tmp_path / "none.txt")
    assert classes.exit_code == 2 and classes.stderr.startswith("error: --classes")


def test_solidity_equals_scikit_images_on_ragged_objects_in_several_parts(rng):
    """hull_solidity finds the hull with OpenCV: on objects of scattered pixels, several parts and holes, the
    value is scikit-image's to the last bit."""
    ids = np.zeros((64, 64), np.int32)
    for number in range(1, 40):
        y, x = rng.integers(0, 60, 2)
        height, width = rng.integers(1, 16, 2)
        scattered = rng.random((height, width)) < rng.uniform(0.2, 1.0)
        window = ids[y:y + height, x:x + width]
        window[scattered[:window.shape[0], :window.shape[1]]] = number
    reference = regionprops_table(ids, properties=("label", "solidity"))
    rows = measure(Objects(ids, {int(n): 1 for n in reference["label"]}), NUCLEUS, "ragged")
    assert len(rows) > 20
    assert [row["solidity"] for row in rows] == reference["solidity"].tolist()
