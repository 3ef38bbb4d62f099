"""Multi-page TIFFs (z or time stacks), through the CLI: refused in one line naming the page count unless --page N
picks one or --stack predicts every plane into multi-page label TIFFs; --stitch links instances of consecutive
planes into 3D objects with one id on every page; a TIFF without pages is one line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from media_helpers import moving_shapes
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app

runner = CliRunner()


def _predict(*args):
    return runner.invoke(app, ["predict", *map(str, args), "--device", "cpu", "--quiet"])


def _planes(count: int = 5, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((count, size, size)) * 4000 + np.arange(count)[:, None, None] * 500).astype(np.uint16)


def test_a_stack_is_refused_in_one_line_unless_a_page_is_chosen(tiny_checkpoint, tmp_path):
    planes = _planes()
    tifffile.imwrite(tmp_path / "zstack.tif", planes)
    refused = _predict(tmp_path / "zstack.tif", "--weights", tiny_checkpoint, "--out", tmp_path / "a")
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "zstack.tif: a stack of 5 pages (z or time); predict one with --page N (0-4) or every one with --stack" \
        in line
    picked = _predict(tmp_path / "zstack.tif", "--weights", tiny_checkpoint, "--out", tmp_path / "b", "--page", "2")
    assert picked.exit_code == 0, picked.output
    tifffile.imwrite(tmp_path / "plane2.tif", planes[2])
    alone = _predict(tmp_path / "plane2.tif", "--weights", tiny_checkpoint, "--out", tmp_path / "c")
    assert alone.exit_code == 0
    assert np.array_equal(io.read_label_png(tmp_path / "b" / "semantic" / "zstack.png"),
                          io.read_label_png(tmp_path / "c" / "semantic" / "plane2.png"))
    beyond = _predict(tmp_path / "zstack.tif", "--weights", tiny_checkpoint, "--out", tmp_path / "d", "--page", "7")
    assert beyond.exit_code == 1 and "has 5 pages (0-4); --page 7 is not one of them" in beyond.stderr


def test_stack_predicts_every_plane_into_multi_page_tiffs(tiny_checkpoint, tmp_path):
    planes = _planes()
    tifffile.imwrite(tmp_path / "zstack.tif", planes, imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "out"
    result = _predict(tmp_path / "zstack.tif", "--weights", tiny_checkpoint, "--out", out, "--stack", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["planes"] == 5 and {s["plane"] for s in record["segments"]} <= set(range(5))
    labels = tifffile.imread(out / "semantic" / "zstack.tif")
    assert labels.shape == (5, 40, 40) and labels.dtype == np.uint8
    overlays = tifffile.imread(out / "overlays" / "zstack.tif")
    assert overlays.shape == (5, 40, 40, 3)
    for index in (0, 4):  # each page is what predicting that plane alone gives
        tifffile.imwrite(tmp_path / f"p{index}.tif", planes[index])
        assert _predict(tmp_path / f"p{index}.tif", "--weights", tiny_checkpoint, "--out", tmp_path / f"o{index}",
                        "--no-overlay").exit_code == 0
        assert np.array_equal(labels[index], io.read_label_png(tmp_path / f"o{index}" / "semantic" / f"p{index}.png"))
    again = _predict(tmp_path / "zstack.tif", "--weights", tiny_checkpoint, "--out", out, "--stack", "--json",
                     "--skip-existing")
    assert json.loads(again.stdout).get("skipped")


def _ids_at_objects(labels: np.ndarray, objects, step: int = 2) -> list[list[int]]:
    tracks = []
    for obj in objects:
        ys, xs = np.nonzero(obj.mask)
        y, x = int(np.median(ys)), int(np.median(xs))
        if obj.mask[y, x] and step * len(labels) <= min(y, x) and max(y, x) < 96:
            tracks.append([int(labels[i, y - step * i, x - step * i]) for i in range(len(labels))])
    return tracks


@pytest.mark.parametrize("mode", ["instance", "panoptic"])
def test_stitch_gives_an_object_one_id_on_every_page(mode, tmp_path):
    planes, objects = moving_shapes(4)  # an object drifts 2 px a plane, as through a z stack
    tifffile.imwrite(tmp_path / "scene.tif", np.stack(planes), photometric="rgb")
    result = _predict(tmp_path / "scene.tif", "--model", "shapes", "--mode", mode, "--stack", "--stitch", "0.25",
                      "--out", tmp_path / "stitched", "--json")
    assert result.exit_code == 0, result.output
    plain = _predict(tmp_path / "scene.tif", "--model", "shapes", "--mode", mode, "--stack", "--out",
                     tmp_path / "plain")
    assert plain.exit_code == 0
    stitched = tifffile.imread(tmp_path / "stitched" / mode / "scene.tif")
    tracks = _ids_at_objects(stitched, objects)
    assert len([t for t in tracks if t[0] and len(set(t)) == 1]) >= 2, tracks
    segments = json.loads(result.stdout)["segments"]
    for plane in range(4):  # the json's ids per plane are the page's
        assert {s["id"] for s in segments if s["plane"] == plane} == set(np.unique(stitched[plane]).tolist()) - {0}
    if mode == "instance":  # without --stitch each page numbers its objects 1..N
        pages = tifffile.imread(tmp_path / "plain" / mode / "scene.tif")
        assert all(set(np.unique(page).tolist()) - {0} == set(range(1, page.max() + 1)) for page in pages)
        assert stitched.max() > pages.max()  # 3D ids count every object of the stack


def test_a_tiff_without_pages_is_one_line(tiny_checkpoint, tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"II*\x00" + struct.pack("<I", 0))
    io.write_image(tmp_path / "good.png", np.zeros((20, 20, 3), np.uint8))
    result = _predict(tmp_path / "empty.tif", tmp_path / "good.png", "--weights", tiny_checkpoint, "--out",
                      tmp_path / "out")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "empty.tif: a TIFF with no pages (no image in it)" in line
    assert (tmp_path / "out" / "semantic" / "good.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--stitch", "0.3"], "--stitch links the planes of a stack; add --stack"),
    (["--stack", "--page", "1"], "choose one"),
    (["--stack", "--stitch", "0.3"], "--stitch links instances"),
    (["--stack", "--stitch", "1.5", "--mode", "instance"], "a mask IoU in (0, 1]"),
    (["--stack", "--track", "--mode", "instance"], "use --stitch IOU"),
])
def test_stack_options_that_cannot_work_are_one_line(tiny_checkpoint, tmp_path, args, message):
    tifffile.imwrite(tmp_path / "zstack.tif", _planes(2))
    result = _predict(tmp_path / "zstack.tif", "--weights", tiny_checkpoint, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not Path(tmp_path / "out").exists()
