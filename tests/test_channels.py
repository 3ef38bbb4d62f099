"""Images with their channels, through the CLI: TIFF and OME-TIFF read through tifffile, --channels picks and orders
them for predict, train --channels trains an N-channel model whose card records them; more channels than a model
takes are refused in one line naming the count, a channel the image lacks too; grey into RGB stays as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app

runner = CliRunner()
NAMES = ["DAPI", "GFP", "RFP", "Cy5"]


def _ome(path: Path, channels: np.ndarray) -> Path:
    """(C, H, W) uint16 as an OME-TIFF with channel names."""
    tifffile.imwrite(path, channels, ome=True, metadata={"axes": "CYX", "Channel": {"Name": NAMES[: len(channels)]}})
    return path


def _cells(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Four 16-bit channels of very different brightness, and the mask of the squares channel 1 shows."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for y, x in rng.integers(8, size - 8, (3, 2)):
        mask[y - 5 : y + 5, x - 5 : x + 5] = 1
    channels = rng.normal(1000, 40, (4, size, size))
    channels[0] *= 10  # a bright channel beside dim ones: each is scaled from its own percentiles
    channels[1] += 3000.0 * mask
    channels[3] += 400.0 * (1 - mask)
    return channels.astype(np.uint16), mask


def _predict(*args):
    return runner.invoke(app, ["predict", *map(str, args), "--device", "cpu", "--quiet"])


def test_tiff_channels_are_read_picked_in_order_and_each_scaled_on_its_own(tmp_path):
    channels, _ = _cells(0)
    path = _ome(tmp_path / "cells.ome.tif", channels)
    picked = io.read_image(path, channels=io.Channels((2, 0, 1), 3))
    assert picked.shape == (48, 48, 3)
    for position, index in enumerate((2, 0, 1)):
        assert np.array_equal(picked[:, :, position], io.to_uint8(channels[index]))
    assert io.read_image(path, channels=io.Channels((3,), 1)).shape == (48, 48, 1)
    assert io.read_image(path, channels=io.Channels(None, None)).shape == (48, 48, 4)
    assert io.channel_names(path, io.Channels((3, 1), 2)) == ["Cy5", "GFP"]
    grey = io.read_image(path, channels=io.Channels((1,), 3))  # one channel into an RGB model: three equal ones
    assert np.array_equal(grey[:, :, 0], grey[:, :, 2]) and np.array_equal(grey[:, :, 0], picked[:, :, 2])


def test_more_channels_than_the_model_takes_are_refused_unless_picked(tiny_checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _ome(folder / "cells.ome.tif", _cells(0)[0])
    io.write_image(folder / "photo.png", np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    refused = _predict(folder, "--weights", tiny_checkpoint, "--out", tmp_path / "a")
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "cells.ome.tif: 4 channels, the model takes 3; choose them with --channels" in line
    assert (tmp_path / "a" / "semantic" / "photo.png").is_file()  # the rest of the run is written
    for picks in ("2,0,1", "1"):  # three channels in that order; one, grey into the RGB model
        chosen = _predict(folder / "cells.ome.tif", "--weights", tiny_checkpoint, "--out", tmp_path / picks,
                          "--channels", picks)
        assert chosen.exit_code == 0, chosen.output
        assert io.read_label_png(tmp_path / picks / "semantic" / "cells.ome.png").shape == (48, 48)
    lacking = _predict(folder / "cells.ome.tif", "--weights", tiny_checkpoint, "--out", tmp_path / "b", "--channels",
                       "0,5,1")
    assert lacking.exit_code == 1
    assert "has 4 channels (0-3); --channels 0,5,1 names channel 5, which it lacks" in lacking.stderr


@pytest.mark.parametrize("picks, message", [("0,1", "2 channels for unet, which takes 3"),
                                            ("a,b", "write channel numbers"), ("1,1,2", "named twice")])
def test_channels_the_model_cannot_take_are_a_usage_error(tiny_checkpoint, tmp_path, picks, message):
    _ome(tmp_path / "cells.ome.tif", _cells(0)[0])
    result = _predict(tmp_path / "cells.ome.tif", "--weights", tiny_checkpoint, "--out", tmp_path / "out",
                      "--channels", picks)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """A folder dataset of four-channel OME-TIFFs (16-bit) and class masks."""
    root = tmp_path_factory.mktemp("cells") / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(6):
        channels, mask = _cells(i)
        _ome(root / "images" / f"c{i}.tif", channels)
        io.write_class_png(root / "masks" / f"c{i}.png", mask, [(0, 0, 0), (255, 0, 0)])
    return root


def _train(data: Path, out: Path, *args):
    return runner.invoke(app, ["train", "--data", str(data), "--model", "unet", "--width", "4", "--steps", "3",
                               "--val-every", "0", "--out", str(out), "--device", "cpu", "--quiet", *args])


def test_train_channels_makes_a_model_of_that_many_whose_card_names_them(cells, tmp_path):
    result = _train(cells, tmp_path / "run", "--channels", "1,3")
    assert result.exit_code == 0, result.output
    card = io.read_json(tmp_path / "run" / "best.json")
    assert card["channels"] == {"count": 2, "names": ["GFP", "Cy5"], "picked": [1, 3]}
    assert card["model_args"]["in_channels"] == 2 and len(card["normalization"]["mean"]) == 2
    plan = io.read_json(tmp_path / "run" / "plan.json")
    assert plan["plan"]["channels"] == 2 and plan["fingerprint"]["channel_names"] == ["GFP", "Cy5"]
    # predict reads the channels the model was trained on; --channels may say them again, in another order too
    weights = tmp_path / "run" / "best.safetensors"
    predicted = _predict(cells / "images" / "c0.tif", "--weights", weights, "--out", tmp_path / "p", "--json")
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)["ok"]
    photo = tmp_path / "photo.png"
    io.write_image(photo, np.zeros((48, 48, 3), np.uint8))
    refused = _predict(photo, "--weights", weights, "--out", tmp_path / "q")
    assert refused.exit_code == 1 and "--channels 1,3 names channel 3, which it lacks" in refused.stderr


def test_train_channels_all_counts_them_in_the_data_and_without_it_they_are_refused(cells, tmp_path):
    planned = runner.invoke(app, ["train", "--data", str(cells), "--model", "unet", "--channels", "all", "--plan-only",
                                  "--device", "cpu"])
    assert planned.exit_code == 0, planned.output
    assert "4 (DAPI, GFP, RFP, Cy5)" in planned.stderr
    refused = _train(cells, tmp_path / "run")
    assert refused.exit_code == 2
    assert "4 channels, the model takes 3; choose them with --channels" in refused.stderr
    wrong = _train(cells, tmp_path / "run2", "--channels", "1,3", "--encoder", "resnet18", "--no-pretrained")
    assert wrong.exit_code == 2 and "takes RGB images (3 channels), not 2" in wrong.stderr
